/*
 * test_dnsbl.c - unit tests for filters/dnsbl.c
 *
 * NAME
 *	test_dnsbl - zone syntax, address reversal, replies (hostile ones
 *	included), the score with failed lookups, and the cache's bound
 *
 * SYNOPSIS
 *	build/unit/test_dnsbl		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	dnsbl.c is included, so its static parsers are tested from tables.
 *	Replies are real DNS packets built here, then cut, stretched and
 *	corrupted: a reply from a list is input from the network, so every
 *	malformed one must end as a failed lookup (on_error), never as a
 *	listing or a read past the packet (ASan watches).
 */

#include "dnsbl.c"

#include "tap.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- zones */

static const struct {
	const char	*text;
	int		 ok;
	const char	*domain;
	int		 weight;
	int		 filtered;
	const char	*listed;	/* an address the filter takes, or NULL */
	const char	*unlisted;	/* one it does not */
} zone_cases[] = {
	{ "zen.example.net", 1, "zen.example.net", 1, 0, "127.0.0.2", "127.255.255.254" },
	{ "Zen.Example.NET*2", 1, "zen.example.net", 2, 0, "127.0.0.4", "10.0.0.1" },
	{ "zen.example.net*-2", 1, "zen.example.net", -2, 0, NULL, NULL },
	{ "zen.example.net*+3", 1, "zen.example.net", 3, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[2..11]*2", 1, "zen.example.net", 2, 1, "127.0.0.11", "127.0.0.12" },
	{ "wl.example.net=127.0.[0..255].[2..3]*-2", 1, "wl.example.net", -2, 1, "127.0.200.3", "127.0.200.4" },
	{ "b.example.net=127.0.0.[1;3;5..7]", 1, "b.example.net", 1, 1, "127.0.0.6", "127.0.0.4" },
	{ "b.example.net=127.0.0.2", 1, "b.example.net", 1, 1, "127.0.0.2", "127.0.0.3" },
	{ "b.example.net=[0..255].[0..255].[0..255].[0..255]", 1, "b.example.net", 1, 1, "1.2.3.4", NULL },
	{ "under_score.example.net", 1, "under_score.example.net", 1, 0, NULL, NULL },
	{ "", 0, NULL, 0, 0, NULL, NULL },
	{ "*2", 0, NULL, 0, 0, NULL, NULL },
	{ "=127.0.0.2", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*2x", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*-", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*1001", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*-1001", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net*99999999999999999999", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.2.", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.256", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.0002", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[]", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[3..2]", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[2..]", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[2;]", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.[2", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net=127.0.0.-1", 0, NULL, 0, 0, NULL, NULL },
	{ "zen..example.net", 0, NULL, 0, 0, NULL, NULL },
	{ ".zen.example.net", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.example.net.", 0, NULL, 0, 0, NULL, NULL },
	{ "zen example.net", 0, NULL, 0, 0, NULL, NULL },
	{ "zen.exa\001mple.net", 0, NULL, 0, 0, NULL, NULL },
};

static int
addr4(const char *s, uint8_t *out)
{
	return inet_pton(AF_INET, s, out) == 1 ? 0 : -1;
}

static void
test_zones(void)
{
	struct dnsbl_zone z;
	uint8_t a[4];
	char long_label[80], long_domain[DNSBL_DOMAIN_MAX + 16];
	size_t i;
	int good;

	for (i = 0; i < N(zone_cases); i++) {
		const char *why = dnsbl_zone_parse(zone_cases[i].text, &z);

		good = (why == NULL) == zone_cases[i].ok;
		if (good && why == NULL)
			good = strcmp(z.domain, zone_cases[i].domain) == 0 &&
			    z.weight == zone_cases[i].weight &&
			    z.filtered == zone_cases[i].filtered &&
			    (zone_cases[i].listed == NULL ||
			    (addr4(zone_cases[i].listed, a) == 0 &&
			    dnsbl_zone_matches(&z, a))) &&
			    (zone_cases[i].unlisted == NULL ||
			    (addr4(zone_cases[i].unlisted, a) == 0 &&
			    !dnsbl_zone_matches(&z, a)));
		ok(good, "zone '%s': %s", zone_cases[i].text,
		    why ? why : "parsed");
	}
	/* Labels of 63 and 64, a domain of DNSBL_DOMAIN_MAX and one more. */
	memset(long_label, 'a', 63);
	strcpy(long_label + 63, ".example");
	ok(dnsbl_zone_parse(long_label, &z) == NULL, "a 63-octet label");
	memset(long_label, 'a', 64);
	strcpy(long_label + 64, ".example");
	ok(dnsbl_zone_parse(long_label, &z) != NULL, "a 64-octet label refused");
	memset(long_domain, 0, sizeof long_domain);
	for (i = 0; i < DNSBL_DOMAIN_MAX; i++)
		long_domain[i] = (i % 50 == 49) ? '.' : 'b';
	ok(dnsbl_zone_parse(long_domain, &z) == NULL, "a domain of %d", DNSBL_DOMAIN_MAX);
	long_domain[DNSBL_DOMAIN_MAX] = 'b';
	ok(dnsbl_zone_parse(long_domain, &z) != NULL, "a domain of %d refused",
	    DNSBL_DOMAIN_MAX + 1);
}

/* ---------------------------------------------------------------- reversal */

static const struct {
	const char	*addr;
	const char	*rev;	/* NULL: not looked up */
} rev_cases[] = {
	{ "192.0.2.1", "1.2.0.192" },
	{ "127.0.0.2", "2.0.0.127" },
	{ "255.255.255.255", "255.255.255.255" },
	{ "::ffff:192.0.2.10", "10.2.0.192" },
	{ "2001:db8::25", "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2" },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	  "f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f" },
	{ "unknown", NULL },
	{ "", NULL },
	{ "192.0.2.1.5", NULL },
	{ "192.0.2.1 ", NULL },
};

static void
test_reverse(void)
{
	char out[DNSBL_REV_MAX + 1];
	size_t i;
	int r;

	for (i = 0; i < N(rev_cases); i++) {
		r = dnsbl_reverse(rev_cases[i].addr, out, sizeof out);
		ok(rev_cases[i].rev == NULL ? r == -1 :
		    r == 0 && strcmp(out, rev_cases[i].rev) == 0,
		    "reverse '%s' -> %s", rev_cases[i].addr,
		    rev_cases[i].rev ? rev_cases[i].rev : "(none)");
	}
	ok(DNSBL_REV_MAX + 1 + DNSBL_DOMAIN_MAX <= DNSBL_QNAME_MAX,
	    "the longest query name fits a DNS name");
}

/* ---------------------------------------------------------------- replies */

struct pkt {
	unsigned char	b[4096];
	size_t		len;
};

static void
put(struct pkt *p, const void *d, size_t n)
{
	if (p->len + n <= sizeof p->b) {
		memcpy(p->b + p->len, d, n);
		p->len += n;
	}
}

static void
put16(struct pkt *p, unsigned v)
{
	unsigned char b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	put(p, b, 2);
}

/* Header and the question "q.example." A IN. */
static void
pkt_start(struct pkt *p, unsigned rcode, unsigned ancount)
{
	static const unsigned char qname[] = "\001q\007example";

	p->len = 0;
	put16(p, 0x1234);
	put16(p, 0x8180 | rcode);
	put16(p, 1);
	put16(p, ancount);
	put16(p, 0);
	put16(p, 0);
	put(p, qname, sizeof qname);	/* with its root label */
	put16(p, 1);
	put16(p, 1);
}

/* An answer RR named by a pointer to the question. */
static void
pkt_rr(struct pkt *p, unsigned type, unsigned class, uint32_t ttl,
    const void *rdata, unsigned rdlen)
{
	put16(p, 0xc00c);
	put16(p, type);
	put16(p, class);
	put16(p, ttl >> 16);
	put16(p, ttl & 0xffff);
	put16(p, rdlen);
	put(p, rdata, rdlen);
}

static void
pkt_a(struct pkt *p, const char *addr, uint32_t ttl)
{
	uint8_t a[4];

	(void)addr4(addr, a);
	pkt_rr(p, DNS_TYPE_A, DNSMSG_IN, ttl, a, 4);
}

/* An instance with zones parsed as the configuration would. */
static void
inst_zones(struct dnsbl_inst *di, const char *const *zones, size_t n)
{
	char buf[DNSBL_ZONES_MAX][128], *copy[DNSBL_ZONES_MAX];
	size_t i;

	memset(di, 0, sizeof *di);
	di->threshold = 1;
	di->cache_ttl = 300;
	for (i = 0; i < n; i++) {
		snprintf(buf[i], sizeof buf[i], "%s", zones[i]);
		copy[i] = buf[i];
	}
	if (dnsbl_zones_load(di, copy, n) == -1)
		abort();
}

static void
test_replies(void)
{
	static const char *const zones[] = {
		"zen.example.net=127.0.0.[2..11]*2",
		"zen.example.net=127.0.0.[10;11]*5",
		"other.example.net",
	};
	struct dnsbl_inst di;
	struct dnsbl_answer a;
	struct pkt p, cut;
	uint32_t ttl;
	size_t i;
	int r;

	inst_zones(&di, zones, N(zones));
	ok(di.ndomains == 2 && di.zones[0].lookup == di.zones[1].lookup,
	    "two entries of one domain: one lookup");

	pkt_start(&p, 0, 2);
	pkt_a(&p, "127.0.0.10", 600);
	pkt_a(&p, "127.0.0.3", 120);
	r = dnsbl_parse(&di, 0, 0, p.b, p.len, &a, &ttl);
	ok(r == 0 && a.match == 3 && ttl == 120 && a.first[1][3] == 10,
	    "both entries of the domain listed; the least TTL");

	/* The listing record last of many (a resolver's order is any). */
	pkt_start(&p, 0, 200);
	for (i = 0; i < 199; i++)
		pkt_a(&p, "127.0.1.1", 60);
	pkt_a(&p, "127.0.0.2", 60);
	r = dnsbl_parse(&di, 0, 0, p.b, p.len, &a, &ttl);
	ok(r == 0 && a.match == 1, "a listing after 199 other records counts");

	/* Not our type, class or size: skipped, not listed. */
	pkt_start(&p, 0, 4);
	pkt_rr(&p, 5, DNSMSG_IN, 60, "\001x\000", 3);		/* CNAME */
	pkt_rr(&p, DNS_TYPE_A, 3, 60, "\177\000\000\002", 4);	/* class CH */
	pkt_rr(&p, DNS_TYPE_A, DNSMSG_IN, 60, "\177\000\000\002\000", 5);
	pkt_rr(&p, 28, DNSMSG_IN, 60, "\177\000\000\002\000\000\000\000\000\000\000\000\000\000\000\000", 16);
	r = dnsbl_parse(&di, 0, 0, p.b, p.len, &a, &ttl);
	ok(r == 0 && a.match == 0, "CNAME, class CH, a 5-octet A, an AAAA: none lists");

	/* Another domain's answer cannot list this domain's entries. */
	pkt_start(&p, 0, 1);
	pkt_a(&p, "127.0.0.2", 60);
	r = dnsbl_parse(&di, 1, 0, p.b, p.len, &a, &ttl);
	ok(r == 0 && a.match == 4, "an answer lists the entries of its own domain only");

	r = dnsbl_parse(&di, 0, DNS_RCODE_NXDOMAIN, NULL, 0, &a, &ttl);
	ok(r == 0 && a.match == 0 && ttl == 300, "NXDOMAIN: not listed, kept cache_ttl");
	pkt_start(&p, 0, 0);
	r = dnsbl_parse(&di, 0, 0, p.b, p.len, &a, &ttl);
	ok(r == 0 && a.match == 0, "NODATA: not listed");
	ok(dnsbl_parse(&di, 0, 2, NULL, 0, &a, &ttl) == -1, "SERVFAIL: failed");
	ok(dnsbl_parse(&di, 0, -1, NULL, 0, &a, &ttl) == -1, "no answer: failed");
	ok(dnsbl_parse(&di, 0, 0, NULL, 0, &a, &ttl) == -1, "NOERROR without a packet: failed");

	/* Every truncation of a listing reply fails; none lists. */
	pkt_start(&p, 0, 2);
	pkt_a(&p, "127.0.1.1", 60);
	pkt_a(&p, "127.0.0.2", 60);
	for (i = 0, r = 1; i < p.len; i++) {
		/* A copy of exactly i bytes: ASan sees any read past it. */
		unsigned char *b = malloc(i ? i : 1);

		memcpy(b, p.b, i);
		if (dnsbl_parse(&di, 0, 0, b, i, &a, &ttl) != -1 || a.match != 0)
			r = 0;
		free(b);
	}
	ok(r, "each of the %zu truncations of a reply fails, none lists", p.len);

	/* More answers announced than there are. */
	cut = p;
	cut.b[7] = 3;
	ok(dnsbl_parse(&di, 0, 0, cut.b, cut.len, &a, &ttl) == -1,
	    "ancount past the records: failed");
	/* An rdlength past the end. */
	cut = p;
	cut.b[cut.len - 5] = 0x40;
	ok(dnsbl_parse(&di, 0, 0, cut.b, cut.len, &a, &ttl) == -1,
	    "rdlength past the packet: failed");
	/* A name pointer to itself (a loop) in the answer. */
	cut = p;
	{
		size_t rr = 12 + 11 + 4;	/* header, question name, type/class */

		cut.b[rr] = 0xc0;
		cut.b[rr + 1] = (unsigned char)rr;
	}
	ok(dnsbl_parse(&di, 0, 0, cut.b, cut.len, &a, &ttl) != 0 || a.match <= 1,
	    "a self-pointing name: no loop, no read past the packet");
	/* Random corruption of every byte: no crash, never more than the truth. */
	for (i = 0, r = 1; i < p.len; i++) {
		unsigned v;

		for (v = 0; v < 256; v += 51) {
			cut = p;
			cut.b[i] = (unsigned char)v;
			(void)dnsbl_parse(&di, 0, 0, cut.b, cut.len, &a, &ttl);
			if (a.match & ~3u)
				r = 0;
		}
	}
	ok(r, "every byte of a reply corrupted: no crash, only this domain's entries");
}

/* ---------------------------------------------------------------- score */

static const char *
verdict_name(enum fmx_verdict v)
{
	return v == FMX_CONTINUE ? "continue" : v == FMX_REJECT ? "reject" :
	    v == FMX_TEMPFAIL ? "tempfail" : "other";
}

static const char *test_result;
static char test_reply[600];

static int
stub_set_result(struct fmx_ctx *c, const char *result, const char *reason)
{
	(void)c;
	(void)reason;
	test_result = result;
	return 0;
}

static int
stub_set_reply(struct fmx_ctx *c, const char *reply)
{
	(void)c;
	snprintf(test_reply, sizeof test_reply, "%s", reply);
	return 0;
}

static void
test_score(void)
{
	static const char *const zones[] = {
		"bl.example.net*2",		/* lookup 0 */
		"wl.example.net*-2",		/* lookup 1 */
		"small.example.net*1",		/* lookup 2 */
	};
	static const struct {
		enum dnsbl_state st[3];
		uint32_t	 match;		/* zones listing the client */
		enum fmx_verdict v;
		const char	*result;
		const char	*what;
	} cases[] = {
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_ANSWERED }, 1, FMX_REJECT, "listed", "bl alone: 2" },
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_ANSWERED }, 3, FMX_CONTINUE, NULL, "bl and wl: 0" },
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_ANSWERED }, 4, FMX_CONTINUE, NULL, "small alone: 1" },
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_ANSWERED }, 7, FMX_CONTINUE, NULL, "all: 1" },
		{ { DNSBL_FAILED, DNSBL_ANSWERED, DNSBL_ANSWERED }, 0, FMX_TEMPFAIL, "error", "bl failed: 0..2" },
		{ { DNSBL_ANSWERED, DNSBL_FAILED, DNSBL_ANSWERED }, 1, FMX_TEMPFAIL, "error", "bl, wl failed: 0..2" },
		{ { DNSBL_ANSWERED, DNSBL_FAILED, DNSBL_ANSWERED }, 0, FMX_CONTINUE, NULL, "wl failed, nothing else: -2..0" },
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_FAILED }, 1, FMX_REJECT, "listed", "small failed, bl: 2..3" },
		{ { DNSBL_ANSWERED, DNSBL_ANSWERED, DNSBL_FAILED }, 0, FMX_CONTINUE, NULL, "small failed alone: 0..1" },
		{ { DNSBL_FAILED, DNSBL_FAILED, DNSBL_FAILED }, 0, FMX_TEMPFAIL, "error", "all failed" },
	};
	struct fmx_api api;
	struct dnsbl_inst di;
	struct dnsbl_conn *dcp;
	enum fmx_verdict v;
	size_t i, k;

	memset(&api, 0, sizeof api);
	api.set_result = stub_set_result;
	api.set_reply = stub_set_reply;
	inst_zones(&di, zones, N(zones));
	di.api = &api;
	di.threshold = 2;
	if ((dcp = calloc(1, sizeof *dcp + 3 * sizeof dcp->l[0])) == NULL)
		abort();
#define dc (*dcp)
	for (i = 0; i < N(cases); i++) {
		memset(dcp, 0, sizeof *dcp + 3 * sizeof dcp->l[0]);
		dc.di = &di;
		dc.counted = 1;
		snprintf(dc.addr, sizeof dc.addr, "192.0.2.1");
		for (k = 0; k < 3; k++) {
			dc.l[k].state = cases[i].st[k];
			if (cases[i].match & (1u << k))
				dc.l[k].answer.match = 1u << k;
		}
		test_result = NULL;
		test_reply[0] = '\0';
		v = dnsbl_decide(&dc, NULL);
		ok(v == cases[i].v && (cases[i].result == NULL ? test_result == NULL :
		    test_result != NULL && strcmp(test_result, cases[i].result) == 0),
		    "score: %s -> %s", cases[i].what, verdict_name(v));
	}
	/* The reply of a listing names the zone and the client, one line. */
	memset(dcp, 0, sizeof *dcp + 3 * sizeof dcp->l[0]);
	dc.di = &di;
	dc.counted = 1;
	snprintf(dc.addr, sizeof dc.addr, "192.0.2.1");
	for (k = 0; k < 3; k++)
		dc.l[k].state = DNSBL_ANSWERED;
	dc.l[0].answer.match = 1;
	(void)dnsbl_decide(&dc, NULL);
	ok(strcmp(test_reply, "554 5.7.1 Service unavailable; client [192.0.2.1] "
	    "blocked using bl.example.net") == 0, "the reply: %s", test_reply);
#undef dc
	free(dcp);
}

/* ---------------------------------------------------------------- cache */

static void
test_cache(void)
{
	struct dnsbl_inst di;
	struct dnsbl_answer a, got;
	char names[64][40];
	size_t i, same = 0, found = 0;
	struct dnsbl_cache_entry *set0;

	memset(&di, 0, sizeof di);
	pthread_mutex_init(&di.lock, NULL);
	di.cache_sets = 2;
	di.cache = calloc(di.cache_sets * DNSBL_CACHE_WAYS, sizeof *di.cache);
	memset(&a, 0, sizeof a);
	a.match = 1;
	/* Names that all land in set 0. */
	set0 = &di.cache[0];
	for (i = 0; same < DNSBL_CACHE_WAYS + 1 && i < 1000; i++) {
		char n[40];

		snprintf(n, sizeof n, "%zu.bl.example.net", i);
		if (dnsbl_cache_set(&di, n) == set0)
			snprintf(names[same++], sizeof names[0], "%s", n);
	}
	ok(same == DNSBL_CACHE_WAYS + 1, "found %zu names of one set", same);
	/* The first expires soonest, so the fifth evicts it. */
	for (i = 0; i < same; i++)
		dnsbl_cache_put(&di, names[i], &a, (uint32_t)(100 + i));
	ok(!dnsbl_cache_get(&di, names[0], &got), "a full set evicts the answer that expires first");
	for (i = 1; i < same; i++)
		found += (size_t)dnsbl_cache_get(&di, names[i], &got);
	ok(found == DNSBL_CACHE_WAYS && got.match == 1, "the others stay");
	/* A name put again replaces its own entry, not another. */
	dnsbl_cache_put(&di, names[1], &a, 500);
	for (i = 1, found = 0; i < same; i++)
		found += (size_t)dnsbl_cache_get(&di, names[i], &got);
	ok(found == DNSBL_CACHE_WAYS, "an answer put again replaces its own entry");
	/* TTL 0 is not kept; a cache of size 0 keeps nothing. */
	dnsbl_cache_put(&di, "zero.bl.example.net", &a, 0);
	ok(!dnsbl_cache_get(&di, "zero.bl.example.net", &got), "TTL 0: not kept");
	free(di.cache);
	di.cache = NULL;
	dnsbl_cache_put(&di, names[0], &a, 100);
	ok(!dnsbl_cache_get(&di, names[0], &got), "no cache: nothing kept");
	pthread_mutex_destroy(&di.lock);
}

int
main(void)
{
	plan((int)N(zone_cases) + 4 + (int)N(rev_cases) + 1 + 15 + 10 + 1 + 6);
	test_zones();
	test_reverse();
	test_replies();
	test_score();
	test_cache();
	return done_testing();
}
