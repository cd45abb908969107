/*
 * dnsbl.c - the built-in DNSBL/DNSWL filter: score the client's address
 * against DNS block and allow lists
 *
 * NAME
 *	dnsbl_filter - look the client up in DNS lists, in parallel, and
 *	refuse it when the weighted score reaches a threshold
 *
 * SYNOPSIS
 *	filters = ( { name = "dnsbl";
 *	              options = { zones = [ "zen.example.net=127.0.0.[2..11]*2",
 *	                  "list.dnswl.example.net=127.0.[0..255].[2..3]*-2" ];
 *	                  threshold = 2; when = "connect"; }; } );
 *	policy = { default = { dnsbl = { listed = "reject"; on_error = "accept"; }; }; };
 *
 * DESCRIPTION
 *	Each zones entry is written as Postfix's postscreen_dnsbl_sites
 *	writes one: DOMAIN[=FILTER][*WEIGHT].
 *
 *	DOMAIN	the list's zone; the client's address is looked up as an A
 *		record under it: IPv4 with its octets reversed
 *		(192.0.2.1 -> 1.2.0.192.DOMAIN), IPv6 as 32 reversed nibbles
 *		(RFC 5782 2.4), an IPv4-mapped IPv6 address as the IPv4
 *		address it is.  At most DNSBL_DOMAIN_MAX characters, so the
 *		longest query fits a DNS name.
 *	FILTER	d.d.d.d, each d a number 0..255 or a bracketed list of
 *		numbers and ranges separated by ';' ([2..11], [1;3;5..7]):
 *		only answers matching it count.  Without FILTER any answer
 *		in 127.0.0.0/8 counts except 127.255.255.0/24, which lists
 *		use for "query refused" (Spamhaus answers 127.255.255.254 to
 *		queries from public resolvers); postscreen counts any answer,
 *		which would list every client in that case.
 *	WEIGHT	an integer from -1000 to 1000 (default 1) added to the score
 *		once when any answer of the entry matches, however many do.
 *		A negative weight makes the entry an allow list (DNSWL).
 *
 *	Several entries may name one domain (with different filters): it
 *	is looked up once.  All lookups start together, through the core's
 *	resolver (api->dns_query), and their answers are kept in a cache
 *	shared by all sessions of the configuration (below).  The score is
 *	the sum of the weights of the matching entries; the client is
 *	listed when it reaches `threshold`.
 *
 *	A lookup that fails (timeout, SERVFAIL, a malformed answer) is an
 *	error only when its entry could change the outcome: when the
 *	weights of all failed entries, added or left out, could carry the
 *	score to either side of the threshold, the filter says "error" and
 *	the core applies the filter's on_error (default tempfail); else the
 *	verdict the answered lookups give stands.  NXDOMAIN and NODATA mean
 *	"not listed".
 *
 *	The client's address is looked up whatever it is: lists describe
 *	addresses, not relay rights, so relay.networks clients are not
 *	skipped (no public list names a private or loopback address other
 *	than its test entries).  With when = "rcpt", authenticated clients
 *	are skipped (Postfix's permit_sasl_authenticated before
 *	reject_rbl_client): that is the setting for a listener that also
 *	takes submission.
 *
 * OPTIONS
 *	zones		the entries above (a list, or several zones keys);
 *			1 to DNSBL_ZONES_MAX.  Required.
 *	threshold	score from which the client is listed (default 1).
 *	when		"connect" (default): the lookups run before the
 *			greeting, and a listed client gets the 554 as its
 *			greeting and is disconnected.  "rcpt": the lookups
 *			start at connect but the verdict is given to each
 *			RCPT (the client, sender and recipient are logged
 *			with it, and authenticated clients pass).  The
 *			filters entry's delay_reject = true also moves a
 *			connect verdict to RCPT, read with each recipient's
 *			policy; for this filter it defaults to false.
 *	cache_size	answers kept (default 4096, at most 100000; 0: no
 *			cache).  The cache is per configuration, shared by
 *			the workers, and bounded: a full set evicts the
 *			answer that expires first.
 *	cache_ttl	seconds an answer is kept at most (default 300, at
 *			most 86400).  A listing is kept for its record's TTL
 *			if shorter; NXDOMAIN and NODATA for cache_ttl.
 *			Failures are never cached.
 *
 * RESULTS
 *	listed	score >= threshold: verdict reject with
 *		"554 5.7.1 Service unavailable; client [ADDR] blocked
 *		using ZONE[, ZONE...]" naming the positive-weight zones that
 *		matched.  A policy mapping (listed = "tempfail", "tag"...)
 *		replaces the verdict.
 *	error	the lookups could not decide (see above): on_error.
 *	Not listed: no result, the session continues.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dnsbl.h"
#include "dnsmsg.h"
#include "filter_opt.h"
#include "metrics.h"
#include "strutil.h"

#define DNSBL_ZONES_MAX		32	/* entries in zones */
/* 253 characters of name, less the 64 of 32 nibble labels and a dot. */
#define DNSBL_DOMAIN_MAX	188
#define DNSBL_QNAME_MAX		253
#define DNSBL_REV_MAX		64	/* "f.e.d.c....0." of an IPv6 address */
#define DNSBL_WEIGHT_MAX	1000
#define DNSBL_CACHE_DEFAULT	4096
#define DNSBL_CACHE_MAX		100000
#define DNSBL_CACHE_WAYS	4	/* entries one name may land in */
#define DNSBL_TTL_DEFAULT	300
#define DNSBL_TTL_MAX		86400
#define DNSBL_REPLY_MAX		480	/* under the 512 of a reply line */
#define DNSBL_REASON_MAX	400

#define DNS_TYPE_A		1
#define DNS_RCODE_NOERROR	0
#define DNS_RCODE_NXDOMAIN	3

/* One zones entry. */
struct dnsbl_zone {
	char		 domain[DNSBL_DOMAIN_MAX + 1];	/* lower case */
	int		 filtered;	/* =FILTER given */
	uint8_t		 match[4][32];	/* per octet: a bitmap of 256 values */
	int		 weight;
	size_t		 lookup;	/* index in dnsbl_inst.domains */
};

/*
 * One answer, as the cache keeps it: which zones entries it lists (read
 * against every A record of the reply, however many, in whatever order
 * the resolver gives them) and, for the log, the first address that
 * matched each.  Only entries of the looked-up domain can be set.
 */
_Static_assert(DNSBL_ZONES_MAX <= 32, "dnsbl_answer.match has a bit per zone");
struct dnsbl_answer {
	uint32_t	 match;				/* bit i: zones[i] */
	uint8_t		 first[DNSBL_ZONES_MAX][4];
};

struct dnsbl_cache_entry {
	char			name[DNSBL_QNAME_MAX + 1];
	time_t			expires;	/* CLOCK_MONOTONIC seconds; 0 free */
	struct dnsbl_answer	answer;
};

struct dnsbl_inst {
	const struct fmx_api	*api;
	struct dnsbl_zone	 zones[DNSBL_ZONES_MAX];
	size_t			 nzones;
	/* Distinct domains: one lookup each. */
	char			 domains[DNSBL_ZONES_MAX][DNSBL_DOMAIN_MAX + 1];
	size_t			 ndomains;
	unsigned long long	 threshold;
	int			 at_rcpt;	/* when = "rcpt" */
	unsigned		 cache_ttl;
	/* Shared by every worker's sessions of this configuration. */
	pthread_mutex_t		 lock;
	struct dnsbl_cache_entry *cache;
	size_t			 cache_sets;	/* cache has sets * WAYS entries */
};

enum dnsbl_state {
	DNSBL_PENDING = 0,
	DNSBL_ANSWERED,
	DNSBL_FAILED
};

struct dnsbl_conn;

/* One lookup of one session. */
struct dnsbl_lookup {
	struct dnsbl_conn	*dc;
	size_t			 idx;		/* in dnsbl_inst.domains */
	enum dnsbl_state	 state;
	struct dnsbl_answer	 answer;
};

struct dnsbl_conn {
	struct dnsbl_inst	*di;
	char			 addr[64];		/* as the client is named */
	char			 rev[DNSBL_REV_MAX + 1];/* "1.2.0.192" */
	size_t			 outstanding;		/* lookups not answered */
	int			 starting;	/* inside dnsbl_start(): no resume */
	int			 waiting;	/* a hook returned FMX_PENDING */
	int			 counted;	/* hits counted (once a session) */
	/* One per distinct domain (di->ndomains): a session costs what it asks. */
	struct dnsbl_lookup	 l[];
};

/* ---- zones ------------------------------------------------------------- */

/* Bitmap helpers: value v of octet i allowed by zone z. */
static void
dnsbl_bit_set(uint8_t *map, unsigned v)
{
	map[v / 8] |= (uint8_t)(1u << (v % 8));
}

static int
dnsbl_bit(const uint8_t *map, unsigned v)
{
	return (map[v / 8] >> (v % 8)) & 1;
}

/* A number 0..255 at *p (digits only, at most 3); -1 if none. */
static int
dnsbl_octet_num(const char **p)
{
	const char *s = *p;
	int v = 0, n = 0;

	while (*s >= '0' && *s <= '9' && n < 4) {
		v = v * 10 + (*s++ - '0');
		n++;
	}
	if (n == 0 || n > 3 || v > 255)
		return -1;
	*p = s;
	return v;
}

/*
 * One octet of a FILTER: "127" or "[2..11]" or "[1;3;5..7]".  Sets its
 * bitmap; 0 with *p past it, -1 bad.
 */
static int
dnsbl_octet_parse(const char **p, uint8_t *map)
{
	const char *s = *p;
	int lo, hi, v;

	if (*s != '[') {
		if ((v = dnsbl_octet_num(&s)) == -1)
			return -1;
		dnsbl_bit_set(map, (unsigned)v);
		*p = s;
		return 0;
	}
	s++;
	for (;;) {
		if ((lo = dnsbl_octet_num(&s)) == -1)
			return -1;
		hi = lo;
		if (s[0] == '.' && s[1] == '.') {
			s += 2;
			if ((hi = dnsbl_octet_num(&s)) == -1 || hi < lo)
				return -1;
		}
		for (v = lo; v <= hi; v++)
			dnsbl_bit_set(map, (unsigned)v);
		if (*s == ';') {
			s++;
			continue;
		}
		if (*s != ']')
			return -1;
		*p = s + 1;
		return 0;
	}
}

/* FILTER = d.d.d.d, the whole string. */
static int
dnsbl_filter_parse(const char *s, struct dnsbl_zone *z)
{
	int i;

	for (i = 0; i < 4; i++) {
		if (i > 0 && *s++ != '.')
			return -1;
		if (dnsbl_octet_parse(&s, z->match[i]) == -1)
			return -1;
	}
	return *s == '\0' ? 0 : -1;
}

/* A zone domain: LDH (and '_') labels of 1..63, no empty label. */
static int
dnsbl_domain_valid(const char *s, size_t len)
{
	size_t i, label = 0;

	if (len == 0 || len > DNSBL_DOMAIN_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0;
}

/*
 * DOMAIN[=FILTER][*WEIGHT], as postscreen reads it: the weight after the
 * last '*', the filter after the first '='.  Returns NULL, or what is
 * wrong.
 */
static const char *
dnsbl_zone_parse(const char *text, struct dnsbl_zone *z)
{
	const char *star, *eq, *end, *w;
	char filter[128], *ep;
	long weight = 1;
	size_t dlen;

	memset(z, 0, sizeof *z);
	end = text + strlen(text);
	if ((star = strrchr(text, '*')) != NULL) {
		w = star + 1;
		if (*w == '\0')
			return "no weight after '*'";
		if (!((*w >= '0' && *w <= '9') ||
		    ((*w == '-' || *w == '+') && w[1] >= '0' && w[1] <= '9')))
			return "the weight is not an integer";
		weight = strtol(w, &ep, 10);
		if (*ep != '\0')
			return "the weight is not an integer";
		if (weight < -DNSBL_WEIGHT_MAX || weight > DNSBL_WEIGHT_MAX)
			return "the weight is out of range (-1000 to 1000)";
		end = star;
	}
	z->weight = (int)weight;
	eq = memchr(text, '=', (size_t)(end - text));
	dlen = (size_t)((eq != NULL ? eq : end) - text);
	if (!dnsbl_domain_valid(text, dlen))
		return dlen > DNSBL_DOMAIN_MAX ? "the domain is too long" :
		    "the domain is not a domain name";
	memcpy(z->domain, text, dlen);
	z->domain[dlen] = '\0';
	str_lower(z->domain);
	if (eq == NULL)
		return NULL;
	if ((size_t)(end - eq - 1) >= sizeof filter)
		return "the answer filter is too long";
	memcpy(filter, eq + 1, (size_t)(end - eq - 1));
	filter[end - eq - 1] = '\0';
	if (filter[0] == '\0')
		return "no answer filter after '='";
	if (dnsbl_filter_parse(filter, z) == -1)
		return "the answer filter is not d.d.d.d (each d 0..255, "
		    "[a..b] or [a;b;c..d])";
	z->filtered = 1;
	return NULL;
}

/* Does the A record addr count for zone z? */
static int
dnsbl_zone_matches(const struct dnsbl_zone *z, const uint8_t *addr)
{
	unsigned k;

	if (!z->filtered)
		return addr[0] == 127 && !(addr[1] == 255 && addr[2] == 255);
	for (k = 0; k < 4 && dnsbl_bit(z->match[k], addr[k]); k++)
		;
	return k == 4;
}

/* ---- the cache --------------------------------------------------------- */

static time_t
dnsbl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static struct dnsbl_cache_entry *
dnsbl_cache_set(struct dnsbl_inst *di, const char *name)
{
	return &di->cache[(str_hash(name) % di->cache_sets) * DNSBL_CACHE_WAYS];
}

/* 1 and *a when name has a live answer. */
static int
dnsbl_cache_get(struct dnsbl_inst *di, const char *name, struct dnsbl_answer *a)
{
	struct dnsbl_cache_entry *set;
	time_t now = dnsbl_now();
	size_t i;
	int found = 0;

	if (di->cache == NULL)
		return 0;
	pthread_mutex_lock(&di->lock);
	set = dnsbl_cache_set(di, name);
	for (i = 0; i < DNSBL_CACHE_WAYS && !found; i++)
		if (set[i].expires > now && strcmp(set[i].name, name) == 0) {
			*a = set[i].answer;
			found = 1;
		}
	pthread_mutex_unlock(&di->lock);
	return found;
}

/* Keep an answer for ttl seconds, in its own or the soonest-expiring way. */
static void
dnsbl_cache_put(struct dnsbl_inst *di, const char *name,
    const struct dnsbl_answer *a, uint32_t ttl)
{
	struct dnsbl_cache_entry *set, *e = NULL;
	time_t now = dnsbl_now();
	size_t i;

	if (di->cache == NULL || ttl == 0)
		return;
	pthread_mutex_lock(&di->lock);
	set = dnsbl_cache_set(di, name);
	for (i = 0; i < DNSBL_CACHE_WAYS && e == NULL; i++)
		if (strcmp(set[i].name, name) == 0 || set[i].expires <= now)
			e = &set[i];
	if (e == NULL) {
		/* A full set: the answer that would expire first goes. */
		e = &set[0];
		for (i = 1; i < DNSBL_CACHE_WAYS; i++)
			if (set[i].expires < e->expires)
				e = &set[i];
	}
	snprintf(e->name, sizeof e->name, "%s", name);
	e->answer = *a;
	e->expires = now + (time_t)ttl;
	pthread_mutex_unlock(&di->lock);
}

/* ---- lookups ----------------------------------------------------------- */

/*
 * The reversed address, "1.2.0.192" or 32 nibbles; -1 if addr is no IP
 * address (a client on a UNIX socket, "unknown").
 */
static int
dnsbl_reverse(const char *addr, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	struct in6_addr a6;
	struct in_addr a4;
	const uint8_t *b;
	size_t i, o = 0;

	if (inet_pton(AF_INET, addr, &a4) == 1)
		b = (const uint8_t *)&a4;
	else if (inet_pton(AF_INET6, addr, &a6) == 1) {
		b = a6.s6_addr;
		if (!IN6_IS_ADDR_V4MAPPED(&a6)) {
			if (outlen < DNSBL_REV_MAX)
				return -1;
			for (i = 16; i-- > 0; ) {
				out[o++] = hex[b[i] & 0xf];
				out[o++] = '.';
				out[o++] = hex[b[i] >> 4];
				out[o++] = '.';
			}
			out[o - 1] = '\0';
			return 0;
		}
		b += 12;
	} else
		return -1;
	return snprintf(out, outlen, "%u.%u.%u.%u", b[3], b[2], b[1], b[0]) <
	    (int)outlen ? 0 : -1;
}

static void
dnsbl_qname(const struct dnsbl_conn *dc, size_t idx, char *out, size_t outlen)
{
	(void)snprintf(out, outlen, "%s.%s", dc->rev, dc->di->domains[idx]);
}

/*
 * Read a reply for lookup idx into *a: the zones entries of that domain
 * each A record lists, and the TTL to keep it (the least of theirs).
 * 0 ok (NXDOMAIN and NODATA: nothing listed), -1 failed.
 */
static int
dnsbl_parse(const struct dnsbl_inst *di, size_t idx, int rcode,
    const unsigned char *pkt, size_t len, struct dnsbl_answer *a,
    uint32_t *ttl)
{
	struct dnsmsg m;
	struct dnsmsg_rr rr;
	size_t i;
	int r;

	memset(a, 0, sizeof *a);
	*ttl = di->cache_ttl;
	if (rcode == DNS_RCODE_NXDOMAIN)
		return 0;
	if (rcode != DNS_RCODE_NOERROR || pkt == NULL ||
	    dnsmsg_open(&m, pkt, len) == -1)
		return -1;
	while ((r = dnsmsg_next(&m, &rr)) == 1) {
		if (rr.type != DNS_TYPE_A || rr.class != DNSMSG_IN ||
		    rr.rdlen != 4)
			continue;	/* a CNAME on the way, say */
		if (rr.ttl < *ttl)
			*ttl = rr.ttl;
		for (i = 0; i < di->nzones; i++)
			if (di->zones[i].lookup == idx &&
			    !(a->match & (1u << i)) &&
			    dnsbl_zone_matches(&di->zones[i], rr.rdata)) {
				a->match |= 1u << i;
				memcpy(a->first[i], rr.rdata, 4);
			}
	}
	return r == -1 ? -1 : 0;
}

/*
 * Where the score lands: the verdict, with the result and the reply set.
 * Failed lookups are an error only if their weights could move the score
 * across the threshold (see DESCRIPTION).
 */
static enum fmx_verdict
dnsbl_decide(struct dnsbl_conn *dc, struct fmx_ctx *ctx)
{
	const struct dnsbl_inst *di = dc->di;
	const struct fmx_api *api = di->api;
	const struct dnsbl_zone *z;
	const struct dnsbl_lookup *l;
	char reply[DNSBL_REPLY_MAX + 1], reason[DNSBL_REASON_MAX + 1];
	size_t i, rlen, slen;
	long long score = 0, up = 0, down = 0;
	long long thr = (long long)di->threshold;
	int n, named = 0, failed = 0;

	for (i = 0; i < di->nzones; i++) {
		z = &di->zones[i];
		l = &dc->l[z->lookup];
		if (l->state == DNSBL_FAILED) {
			failed = 1;
			if (z->weight > 0)
				up += z->weight;
			else
				down += z->weight;
		} else if (l->answer.match & (1u << i))
			score += z->weight;
	}
	/* frontmx_dnsbl_hits_total{zone}: once a session, allow lists too. */
	for (i = 0; i < di->nzones && !dc->counted; i++) {
		z = &di->zones[i];
		l = &dc->l[z->lookup];
		if (l->state == DNSBL_ANSWERED && (l->answer.match & (1u << i)))
			metrics_inc(METRIC_DNSBL_HITS, z->domain);
	}
	dc->counted = 1;
	if (failed && score + down < thr && score + up >= thr) {
		slen = (size_t)snprintf(reason, sizeof reason,
		    "client [%s] lookup failed:", dc->addr);
		for (i = 0; i < di->ndomains && slen < sizeof reason; i++)
			if (dc->l[i].state == DNSBL_FAILED)
				slen += (size_t)snprintf(reason + slen,
				    sizeof reason - slen, " %s", di->domains[i]);
		(void)api->set_result(ctx, FMX_RESULT_ERROR, reason);
		return FMX_TEMPFAIL;
	}
	if (score < thr)
		return FMX_CONTINUE;

	rlen = (size_t)snprintf(reply, sizeof reply, "554 5.7.1 Service "
	    "unavailable; client [%s] blocked using", dc->addr);
	slen = (size_t)snprintf(reason, sizeof reason, "client [%s] score=%lld",
	    dc->addr, score);
	for (i = 0; i < di->nzones; i++) {
		z = &di->zones[i];
		l = &dc->l[z->lookup];
		if (l->state != DNSBL_ANSWERED || z->weight <= 0 ||
		    !(l->answer.match & (1u << i)))
			continue;
		/* Name each zone once, as long as the reply line has room. */
		if (strstr(reply, z->domain) == NULL && rlen < sizeof reply) {
			n = snprintf(reply + rlen, sizeof reply - rlen, "%s %s",
			    named ? "," : "", z->domain);
			if (n > 0 && rlen + (size_t)n < sizeof reply)
				rlen += (size_t)n;
			else
				reply[rlen] = '\0';	/* left out, not cut */
			named++;
		}
		if (slen < sizeof reason)
			slen += (size_t)snprintf(reason + slen, sizeof reason - slen,
			    " %s=%u.%u.%u.%u*%d", z->domain, l->answer.first[i][0],
			    l->answer.first[i][1], l->answer.first[i][2],
			    l->answer.first[i][3],
			    z->weight);
	}
	(void)api->set_reply(ctx, reply);
	(void)api->set_result(ctx, "listed", reason);
	return FMX_REJECT;
}

/* A lookup is answered; when it is the last one a hook waits for, resume. */
static void
dnsbl_answer_cb(struct fmx_ctx *ctx, void *arg, int rcode,
    const unsigned char *pkt, size_t len)
{
	struct dnsbl_lookup *l = arg;
	struct dnsbl_conn *dc = l->dc;
	struct dnsbl_inst *di = dc->di;
	char qname[DNSBL_QNAME_MAX + 1];
	uint32_t ttl;

	if (l->state != DNSBL_PENDING)
		return;
	if (dnsbl_parse(di, l->idx, rcode, pkt, len, &l->answer, &ttl) == 0) {
		l->state = DNSBL_ANSWERED;
		dnsbl_qname(dc, l->idx, qname, sizeof qname);
		dnsbl_cache_put(di, qname, &l->answer, ttl);
	} else {
		l->state = DNSBL_FAILED;
		di->api->log(ctx, FMX_LOG_INFO, "dnsbl: %s: lookup failed "
		    "(rcode %d)", di->domains[l->idx], rcode);
	}
	dc->outstanding--;
	if (dc->outstanding == 0 && !dc->starting && dc->waiting) {
		dc->waiting = 0;
		(void)di->api->resume(ctx, dnsbl_decide(dc, ctx));
	}
}

/*
 * Start every lookup the cache cannot answer.  The core may answer one
 * from its own cache inside dns_query(): starting keeps that callback
 * from resuming a hook that has not returned yet.
 */
static struct dnsbl_conn *
dnsbl_start(struct dnsbl_inst *di, struct fmx_ctx *ctx)
{
	const struct fmx_api *api = di->api;
	struct dnsbl_conn *dc;
	struct dnsbl_lookup *l;
	const char *addr;
	char qname[DNSBL_QNAME_MAX + 1];
	size_t i;

	addr = api->get(ctx, FMX_GET_CLIENT_ADDR);
	if ((dc = calloc(1, sizeof *dc + di->ndomains * sizeof dc->l[0])) == NULL)
		return NULL;
	dc->di = di;
	if (addr == NULL || strlen(addr) >= sizeof dc->addr ||
	    dnsbl_reverse(addr, dc->rev, sizeof dc->rev) == -1) {
		free(dc);
		return NULL;	/* not an IP client: nothing to look up */
	}
	memcpy(dc->addr, addr, strlen(addr) + 1);
	api->set_conn_data(ctx, dc, free);
	dc->starting = 1;
	for (i = 0; i < di->ndomains; i++) {
		l = &dc->l[i];
		l->dc = dc;
		l->idx = i;
		dnsbl_qname(dc, i, qname, sizeof qname);
		if (dnsbl_cache_get(di, qname, &l->answer)) {
			l->state = DNSBL_ANSWERED;
			continue;
		}
		dc->outstanding++;
		if (api->dns_query(ctx, qname, DNS_TYPE_A, dnsbl_answer_cb,
		    l) == -1) {
			l->state = DNSBL_FAILED;
			dc->outstanding--;
		}
	}
	dc->starting = 0;
	return dc;
}

/* The verdict now, or FMX_PENDING until the last lookup is answered. */
static enum fmx_verdict
dnsbl_verdict(struct dnsbl_conn *dc, struct fmx_ctx *ctx)
{
	if (dc->outstanding > 0) {
		dc->waiting = 1;
		return FMX_PENDING;
	}
	return dnsbl_decide(dc, ctx);
}

static enum fmx_verdict
dnsbl_connect(void *inst, struct fmx_ctx *ctx)
{
	struct dnsbl_inst *di = inst;
	struct dnsbl_conn *dc;

	if ((dc = dnsbl_start(di, ctx)) == NULL)
		return FMX_CONTINUE;
	return di->at_rcpt ? FMX_CONTINUE : dnsbl_verdict(dc, ctx);
}

static enum fmx_verdict
dnsbl_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	struct dnsbl_inst *di = inst;
	struct dnsbl_conn *dc;

	(void)rcpt;
	if (!di->at_rcpt || (dc = di->api->conn_data(ctx)) == NULL ||
	    di->api->get(ctx, FMX_GET_AUTH) != NULL)
		return FMX_CONTINUE;
	return dnsbl_verdict(dc, ctx);
}

/* ---- configuration ----------------------------------------------------- */

static void
dnsbl_fini(void *inst)
{
	struct dnsbl_inst *di = inst;

	if (di == NULL)
		return;
	pthread_mutex_destroy(&di->lock);
	free(di->cache);
	free(di);
}

/* The zones option into di: each entry parsed, domains made distinct. */
static int
dnsbl_zones_load(struct dnsbl_inst *di, char **zones, size_t nzones)
{
	struct dnsbl_zone *z;
	const char *why;
	size_t i, j;

	if (nzones == 0)
		return filter_opt_fail("zones", "at least one zone is needed");
	if (nzones > DNSBL_ZONES_MAX)
		return filter_opt_fail("zones", "%zu zones, at most %d", nzones,
		    DNSBL_ZONES_MAX);
	for (i = 0; i < nzones; i++) {
		z = &di->zones[i];
		if ((why = dnsbl_zone_parse(zones[i], z)) != NULL)
			return filter_opt_fail("zones", "'%.*s': %s",
			    DNSBL_DOMAIN_MAX, zones[i], why);
		for (j = 0; j < di->ndomains; j++)
			if (strcmp(di->domains[j], z->domain) == 0)
				break;
		if (j == di->ndomains)
			memcpy(di->domains[di->ndomains++], z->domain,
			    sizeof z->domain);
		z->lookup = j;
	}
	di->nzones = nzones;
	return 0;
}

static int
dnsbl_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	static const char *const known[] = {
		"zones", "threshold", "when", "cache_size", "cache_ttl", NULL
	};
	struct dnsbl_inst *di;
	const char *when = "connect";
	char **zones = NULL;
	size_t nzones = 0;
	unsigned long long cache_size = DNSBL_CACHE_DEFAULT;
	unsigned long long ttl = DNSBL_TTL_DEFAULT;
	int r = -1;

	if ((di = calloc(1, sizeof *di)) == NULL)
		return -1;
	di->api = api;
	di->threshold = 1;
	pthread_mutex_init(&di->lock, NULL);
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_list(options, noptions, "zones", &zones, &nzones) == -1 ||
	    api->option_uint(options, noptions, "threshold", 1,
	    (unsigned long long)DNSBL_WEIGHT_MAX * DNSBL_ZONES_MAX,
	    &di->threshold) == -1 ||
	    api->option_string(options, noptions, "when", &when) == -1 ||
	    api->option_uint(options, noptions, "cache_size", 0,
	    DNSBL_CACHE_MAX, &cache_size) == -1 ||
	    api->option_uint(options, noptions, "cache_ttl", 1,
	    DNSBL_TTL_MAX, &ttl) == -1)
		goto out;
	if (strcmp(when, "connect") == 0)
		di->at_rcpt = 0;
	else if (strcmp(when, "rcpt") == 0)
		di->at_rcpt = 1;
	else {
		(void)filter_opt_fail("when", "'%.32s': expected \"connect\" "
		    "or \"rcpt\"", when);
		goto out;
	}
	if (dnsbl_zones_load(di, zones, nzones) == -1)
		goto out;
	di->cache_ttl = (unsigned)ttl;
	if (cache_size > 0) {
		di->cache_sets = (size_t)(cache_size + DNSBL_CACHE_WAYS - 1) /
		    DNSBL_CACHE_WAYS;
		if ((di->cache = calloc(di->cache_sets * DNSBL_CACHE_WAYS,
		    sizeof *di->cache)) == NULL)
			goto out;
	}
	r = 0;
out:
	free(zones);
	if (r == -1)
		dnsbl_fini(di);
	else
		*instance = di;
	return r;
}

static const struct fmx_filter dnsbl_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "dnsbl",
	.init = dnsbl_init,
	.fini = dnsbl_fini,
	.on_connect = dnsbl_connect,
	.on_rcpt = dnsbl_rcpt,
};

const struct fmx_filter *
dnsbl_filter(void)
{
	return &dnsbl_table;
}
