/*
 * test_netaddr.c - common/netaddr.c: CIDR parse (the cases that were
 * test_config.c's config_netmask cases, plus host bits and the text
 * matcher) (TAP).
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <string.h>

#include "netaddr.h"
#include "tap.h"

#define N(a)	(sizeof (a) / sizeof (a)[0])

struct netaddr_case {
	const char	*mask;
	const char	*addr;
	int		 match;
};

static const struct netaddr_case netaddr_cases[] = {
	{ "10.0.0.0/8",			"10.1.2.3",		1 },
	{ "10.0.0.0/8",			"11.0.0.1",		0 },
	{ "192.0.2.7",			"192.0.2.7",		1 },	/* bare = /32 */
	{ "192.0.2.7/32",		"192.0.2.8",		0 },
	{ "192.168.0.0/23",		"192.168.1.255",	1 },	/* not on a byte */
	{ "192.168.0.0/23",		"192.168.2.0",		0 },
	{ "0.0.0.0/0",			"203.0.113.9",		1 },
	{ "0.0.0.0/0",			"2001:db8::1",		0 },
	{ "::/0",			"2001:db8::1",		1 },
	{ "::/0",			"127.0.0.1",		0 },
	{ "2001:db8::/32",		"2001:db8:ffff::1",	1 },
	{ "2001:db8::/32",		"2001:db9::1",		0 },
	{ "::1/128",			"::1",			1 },
	{ "::1/128",			"::2",			0 },
	{ "127.0.0.0/8",		"::ffff:127.0.0.1",	1 },	/* v4-mapped */
	{ "127.0.0.0/8",		"::ffff:128.0.0.1",	0 },
	{ "192.0.2.7",			"::ffff:192.0.2.7",	1 },
	{ "::ffff:192.0.2.0/120",	"192.0.2.55",		1 },
	{ "::ffff:192.0.2.0/120",	"::ffff:192.0.2.55",	1 },
	{ "::ffff:192.0.2.0/120",	"192.0.3.55",		0 },
};

static void
test_netaddr_sockaddr(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	memset(ss, 0, sizeof *ss);
	memset(&sin, 0, sizeof sin);
	memset(&sin6, 0, sizeof sin6);
	if (inet_pton(AF_INET, s, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		memcpy(ss, &sin, sizeof sin);
	} else if (inet_pton(AF_INET6, s, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		memcpy(ss, &sin6, sizeof sin6);
	}
}

static void
test_netaddr_mask(void)
{
	static const char *const bad[] = {
		"", "10.0.0.0/", "10.0.0.0/x", "/8", "10.0.0.0/ 8", "10.0.0.0/+8",
		"10.0.0.0/33", "::/129", "1.2.3.4.5", "10.0.0.0/8/8", "127.1",
		"10.0.0.0/0008",
	};
	const struct netaddr_case		*tc;
	struct netaddr_mask			 m, all[2];
	struct sockaddr_storage			 ss;
	size_t					 i;

	for (i = 0; i < sizeof netaddr_cases / sizeof netaddr_cases[0]; i++) {
		tc = &netaddr_cases[i];
		if (netaddr_mask_parse(tc->mask, &m, NULL) == -1) {
			ok(0, "netmask %s parses", tc->mask);
			continue;
		}
		test_netaddr_sockaddr(tc->addr, &ss);
		ok(netaddr_mask_match(&m, 1, (struct sockaddr *)&ss) == tc->match,
		    "%s %s %s", tc->addr, tc->match ? "in" : "not in", tc->mask);
	}
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ok(netaddr_mask_parse(bad[i], &m, NULL) == -1, "netmask '%s' refused", bad[i]);
	ok(netaddr_mask_parse("10.1.2.3/8", &m, NULL) == 0 && m.family == AF_INET &&
	    m.prefix == 8 && m.addr[0] == 10 && m.addr[1] == 0 && m.addr[3] == 0,
	    "public parser clears host bits");
	ok(netaddr_mask_parse("192.0.2.1", &all[0], NULL) == 0 &&
	    netaddr_mask_parse("2001:db8::/48", &all[1], NULL) == 0, "two masks");
	test_netaddr_sockaddr("2001:db8:1::", &ss);
	ok(netaddr_mask_match(all, 2, (struct sockaddr *)&ss) == 0,
	    "2001:db8:1:: in neither");
	test_netaddr_sockaddr("2001:db8::99", &ss);
	ok(netaddr_mask_match(all, 2, (struct sockaddr *)&ss) == 1,
	    "second mask of two matches");
	ok(netaddr_mask_match(all, 0, (struct sockaddr *)&ss) == 0, "no masks, no match");
	memset(&ss, 0, sizeof ss);
	ss.ss_family = AF_UNIX;
	ok(netaddr_mask_match(all, 2, (struct sockaddr *)&ss) == 0, "AF_UNIX never matches");
}


struct hostbits_case {
	const char	*mask;
	int		 hostbits;
	unsigned	 prefix;
};

static const struct hostbits_case hostbits_cases[] = {
	{ "10.0.0.0/8",		0, 8 },
	{ "10.1.2.3/8",		1, 8 },
	{ "10.0.0.1/31",	1, 31 },	/* one past: the last host bit */
	{ "10.0.0.2/31",	0, 31 },
	{ "10.0.0.1/32",	0, 32 },
	{ "0.0.0.0/0",		0, 0 },
	{ "0.0.0.1/0",		1, 0 },
	{ "2001:db8::/32",	0, 32 },
	{ "2001:db8::1/32",	1, 32 },
	{ "2001:db8::1/128",	0, 128 },
	{ "::ffff:192.0.2.1/120", 1, 24 },	/* mapped: stored as IPv4 */
	{ "192.0.2.1",		0, 32 },
};

static void
test_netaddr_hostbits(void)
{
	struct netaddr_mask	m;
	size_t			i;
	int			hb;

	for (i = 0; i < N(hostbits_cases); i++) {
		const struct hostbits_case *t = &hostbits_cases[i];

		hb = -1;
		ok(netaddr_mask_parse(t->mask, &m, &hb) == 0 &&
		    hb == t->hostbits && m.prefix == t->prefix,
		    "%s: hostbits %d, prefix %u", t->mask, hb, m.prefix);
	}
	ok(netaddr_mask_parse("10.0.0.0/999", &m, &hb) == -1 &&
	    netaddr_mask_parse("10.0.0.0/32", &m, &hb) == 0 &&
	    netaddr_mask_parse("10.0.0.0/33", &m, &hb) == -1 &&
	    netaddr_mask_parse("::/128", &m, &hb) == 0 &&
	    netaddr_mask_parse("::/129", &m, &hb) == -1,
	    "prefix limits: 32 and 128 ok, one past refused");
	ok(netaddr_mask_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128",
	    &m, NULL) == 0, "longest IPv6 text (45 characters) fits");
	ok(netaddr_mask_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.2555/128",
	    &m, NULL) == -1, "one past the longest IPv6 text is refused");
}

static void
test_netaddr_text(void)
{
	struct netaddr_mask	m[2];
	size_t			i;

	for (i = 0; i < N(netaddr_cases); i++) {
		const struct netaddr_case *tc = &netaddr_cases[i];

		ok(netaddr_mask_parse(tc->mask, &m[0], NULL) == 0 &&
		    netaddr_mask_match_text(m, 1, tc->addr) == tc->match,
		    "text: %s %s %s", tc->addr, tc->match ? "in" : "not in",
		    tc->mask);
	}
	ok(netaddr_mask_parse("10.0.0.0/8", &m[0], NULL) == 0 &&
	    netaddr_mask_parse("2001:db8::/32", &m[1], NULL) == 0 &&
	    netaddr_mask_match_text(m, 2, "2001:db8::5") == 1 &&
	    netaddr_mask_match_text(m, 2, "10.9.9.9") == 1 &&
	    netaddr_mask_match_text(m, 1, "2001:db8::5") == 0,
	    "text: two masks, n bounds the list");
	ok(netaddr_mask_match_text(m, 2, NULL) == 0 &&
	    netaddr_mask_match_text(m, 2, "") == 0 &&
	    netaddr_mask_match_text(m, 2, "10.1") == 0 &&
	    netaddr_mask_match_text(m, 2, "10.0.0.1/8") == 0 &&
	    netaddr_mask_match_text(m, 2, "example.com") == 0,
	    "text: not an address never matches");
}

/* netaddr_network_text(): the greylist and ratelimit filters' network keys. */
static const struct {
	const char	*addr;
	unsigned	 v4, v6;
	const char	*want;		/* NULL: refused */
} network_cases[] = {
	{ "192.0.2.77",			24, 64,	"192.0.2.0/24" },
	{ "192.0.2.77",			32, 64,	"192.0.2.77/32" },
	{ "192.0.2.77",			23, 64,	"192.0.2.0/23" },
	{ "192.0.3.77",			23, 64,	"192.0.2.0/23" },	/* not on a byte */
	{ "::ffff:192.0.2.77",		24, 64,	"192.0.2.0/24" },	/* dual-stack peer */
	{ "2001:db8:1:2:3:4:5:6",	24, 64,	"2001:db8:1:2::/64" },
	{ "2001:db8:1:2:3:4:5:6",	24, 48,	"2001:db8:1::/48" },
	{ "2001:db8:1:2:3:4:5:6",	24, 128, "2001:db8:1:2:3:4:5:6/128" },
	{ "10.1",			24, 64,	NULL },
	{ "example.com",		24, 64,	NULL },
	{ "",				24, 64,	NULL },
	{ "192.0.2.1",			33, 64,	NULL },
};

static void
test_netaddr_network(void)
{
	char buf[64];
	size_t i;

	for (i = 0; i < N(network_cases); i++) {
		int r = netaddr_network_text(network_cases[i].addr,
		    network_cases[i].v4, network_cases[i].v6, buf, sizeof buf);

		if (network_cases[i].want == NULL)
			ok(r == -1, "network of \"%s\": refused", network_cases[i].addr);
		else
			ok(r == 0 && strcmp(buf, network_cases[i].want) == 0,
			    "network of %s /%u /%u: %s (got %s)", network_cases[i].addr,
			    network_cases[i].v4, network_cases[i].v6,
			    network_cases[i].want, r == 0 ? buf : "error");
	}
	ok(netaddr_network_text("192.0.2.1", 24, 64, buf, 12) == -1,
	    "network: a buffer one byte short is refused (\"192.0.2.0/24\" needs 13)");
	ok(netaddr_network_text(NULL, 24, 64, buf, sizeof buf) == -1,
	    "network: NULL address refused");
}

int
main(void)
{
	plan((int)N(netaddr_cases) + 12 + 6 + (int)N(hostbits_cases) + 3 +
	    (int)N(netaddr_cases) + 2 + (int)N(network_cases) + 2);
	test_netaddr_mask();
	test_netaddr_hostbits();
	test_netaddr_text();
	test_netaddr_network();
	return done_testing();
}
