/*
 * netaddr.h - IP networks in CIDR form: parse once, match many times
 *
 * The one netmask parser and matcher, for every list of networks an
 * admin writes: relay.networks and listen[].proxy_from (policy/), a
 * filter's trusted clients (filters/).  Pure: no allocation, no DNS,
 * safe from any thread.
 */
#ifndef FRONTMX_NETADDR_H
#define FRONTMX_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One network: address bytes (network order, host bits cleared), prefix. */
struct netaddr_mask {
	int	 family;		/* AF_INET or AF_INET6 */
	uint8_t	 addr[16];		/* network order, masked */
	unsigned prefix;		/* 0..32 or 0..128 */
};

/*
 * "192.0.2.0/24", "2001:db8::/32" or a bare address (a /32 or /128).
 * The prefix is 1 to 3 digits, nothing else; the address is what
 * inet_pton(3) takes ("127.1" is not an address).  An IPv4-mapped IPv6
 * network with a prefix of 96 or more ("::ffff:192.0.2.0/120") is stored
 * as the IPv4 network it is.  Host bits past the prefix are cleared; when
 * hostbits is not NULL, *hostbits says whether there were any (a caller
 * may call "10.1.2.3/8" a typo).  0 ok, -1 bad.
 */
int	netaddr_mask_parse(const char *s, struct netaddr_mask *m, int *hostbits);
/*
 * 1 if the address is inside one of the n networks, else 0.  An
 * IPv4-mapped IPv6 address (a dual-stack listener's IPv4 peer) matches
 * IPv4 networks too.  sa may be NULL or of another family (0); it is
 * read with memcpy, so it may point into any byte buffer.
 */
int	netaddr_mask_match(const struct netaddr_mask *m, size_t n,
	    const struct sockaddr *sa);
/* The same for an address in text ("192.0.2.1", "2001:db8::1"); 0 if bad. */
int	netaddr_mask_match_text(const struct netaddr_mask *m, size_t n,
	    const char *addr);

/*
 * The network of an address in text with prefix v4prefix (IPv4, and the
 * IPv4 peer of a dual-stack socket, "::ffff:192.0.2.1") or v6prefix, as
 * text: "192.0.2.0/24", "2001:db8::/64".  0 ok, -1 bad address or buf
 * too small (INET6_ADDRSTRLEN + 4 is always enough).
 */
int	netaddr_network_text(const char *addr, unsigned v4prefix,
	    unsigned v6prefix, char *buf, size_t len);

#endif
