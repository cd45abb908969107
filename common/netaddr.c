/*
 * netaddr.c - CIDR networks: parse, match an address against a list
 *
 * Was config_netmask_* in policy/config.c, with a second copy in the DKIM
 * filter's trusted networks; one copy here so that every list of
 * networks an admin writes accepts the same spellings.  Addresses are
 * compared as bytes in network order, prefix bits at a time.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "netaddr.h"

/* The 12-byte prefix of an IPv4-mapped IPv6 address, ::ffff:0:0/96. */
static const uint8_t netaddr_v4mapped[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

/* Compare the first prefix bits of a and b. */
static int
netaddr_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned	bytes = prefix / 8, bits = prefix % 8;
	uint8_t		mask;

	if (memcmp(a, b, bytes) != 0)
		return 0;
	if (bits == 0)
		return 1;
	mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

/* "/8": 1 to 3 digits only (strtoul would take " 8", "+8" and "0x8"). */
static int
netaddr_prefix_parse(const char *s, unsigned max, unsigned *prefix)
{
	size_t	i;

	if (s[0] == '\0' || strlen(s) > 3)
		return -1;
	for (*prefix = 0, i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*prefix = *prefix * 10 + (unsigned)(s[i] - '0');
	}
	return *prefix > max ? -1 : 0;
}

int
netaddr_mask_parse(const char *s, struct netaddr_mask *m, int *hostbits)
{
	char		 buf[INET6_ADDRSTRLEN];
	const char	*slash;
	uint8_t		 orig[16];
	unsigned	 prefix, max, i;
	size_t		 n;

	memset(m, 0, sizeof *m);
	slash = strchr(s, '/');
	n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, m->addr) == 1) {
		m->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, m->addr) == 1) {
		m->family = AF_INET6;
		max = 128;
	} else
		return -1;
	prefix = max;
	if (slash != NULL && netaddr_prefix_parse(slash + 1, max, &prefix) == -1)
		return -1;
	memcpy(orig, m->addr, sizeof orig);
	for (i = prefix; i < max; i++)
		m->addr[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
	if (hostbits != NULL)
		*hostbits = memcmp(orig, m->addr, max / 8) != 0;
	/*
	 * "::ffff:192.0.2.0/120" is an IPv4 network written the IPv6 way;
	 * store it as IPv4 so it matches plain AF_INET peers as well.
	 */
	if (m->family == AF_INET6 && prefix >= 96 &&
	    memcmp(m->addr, netaddr_v4mapped, sizeof netaddr_v4mapped) == 0) {
		memmove(m->addr, m->addr + 12, 4);
		memset(m->addr + 4, 0, 12);
		m->family = AF_INET;
		prefix -= 96;
	}
	m->prefix = prefix;
	return 0;
}

/* a4 (if has4) and a6 (if has6) against the list. */
static int
netaddr_mask_match_bytes(const struct netaddr_mask *m, size_t n,
    const uint8_t *a4, int has4, const uint8_t *a6, int has6)
{
	size_t	i;

	for (i = 0; i < n; i++) {
		if (m[i].family == AF_INET && has4 &&
		    netaddr_prefix_equal(m[i].addr, a4, m[i].prefix))
			return 1;
		if (m[i].family == AF_INET6 && has6 &&
		    netaddr_prefix_equal(m[i].addr, a6, m[i].prefix))
			return 1;
	}
	return 0;
}

int
netaddr_mask_match(const struct netaddr_mask *m, size_t n,
    const struct sockaddr *sa)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;
	uint8_t			a4[4], a6[16];
	int			has4 = 0, has6 = 0;

	if (sa == NULL)
		return 0;
	/* memcpy, not a cast: sa may point into any byte buffer. */
	switch (sa->sa_family) {
	case AF_INET:
		memcpy(&sin, sa, sizeof sin);
		memcpy(a4, &sin.sin_addr, 4);
		has4 = 1;
		break;
	case AF_INET6:
		memcpy(&sin6, sa, sizeof sin6);
		memcpy(a6, &sin6.sin6_addr, 16);
		has6 = 1;
		/* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d. */
		if (memcmp(a6, netaddr_v4mapped, sizeof netaddr_v4mapped) == 0) {
			memcpy(a4, a6 + 12, 4);
			has4 = 1;
		}
		break;
	default:
		return 0;
	}
	return netaddr_mask_match_bytes(m, n, a4, has4, a6, has6);
}

int
netaddr_mask_match_text(const struct netaddr_mask *m, size_t n,
    const char *addr)
{
	uint8_t	a4[4], a6[16];

	if (addr == NULL)
		return 0;
	if (inet_pton(AF_INET, addr, a4) == 1)
		return netaddr_mask_match_bytes(m, n, a4, 1, a6, 0);
	if (inet_pton(AF_INET6, addr, a6) != 1)
		return 0;
	if (memcmp(a6, netaddr_v4mapped, sizeof netaddr_v4mapped) == 0)
		return netaddr_mask_match_bytes(m, n, a6 + 12, 1, a6, 1);
	return netaddr_mask_match_bytes(m, n, a4, 0, a6, 1);
}

/* Clear the bits of addr (len bytes) past prefix. */
static void
netaddr_clear_host(uint8_t *addr, size_t len, unsigned prefix)
{
	size_t	i;

	for (i = 0; i < len; i++) {
		if (prefix >= 8) {
			prefix -= 8;
			continue;
		}
		addr[i] &= (uint8_t)(0xff << (8 - prefix));
		prefix = 0;
	}
}

int
netaddr_network_text(const char *addr, unsigned v4prefix, unsigned v6prefix,
    char *buf, size_t len)
{
	uint8_t	a[16];
	char	text[INET6_ADDRSTRLEN];
	int	n;

	if (addr == NULL || v4prefix > 32 || v6prefix > 128)
		return -1;
	if (inet_pton(AF_INET6, addr, a) == 1 &&
	    memcmp(a, netaddr_v4mapped, sizeof netaddr_v4mapped) != 0) {
		netaddr_clear_host(a, 16, v6prefix);
		if (inet_ntop(AF_INET6, a, text, sizeof text) == NULL)
			return -1;
		n = snprintf(buf, len, "%s/%u", text, v6prefix);
	} else {
		/* IPv4, or the IPv4 peer of a dual-stack socket (mapped). */
		if (inet_pton(AF_INET, addr, a) != 1) {
			if (inet_pton(AF_INET6, addr, a) != 1)
				return -1;
			memmove(a, a + 12, 4);
		}
		netaddr_clear_host(a, 4, v4prefix);
		if (inet_ntop(AF_INET, a, text, sizeof text) == NULL)
			return -1;
		n = snprintf(buf, len, "%s/%u", text, v4prefix);
	}
	return n < 0 || (size_t)n >= len ? -1 : 0;
}
