/*
 * test_spf.c - unit tests for filters/spf.c, spf_record.c, spf_dns.c
 *
 * NAME
 *	test_spf - the SPF filter against an in-test DNS zone
 *
 * SYNOPSIS
 *	build/unit/test_spf		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	spf_record.c, spf_dns.c and spf.c are included whole, so the record
 *	parser and DNS answer parser
 *	are tested directly, and the filter runs against a stub struct
 *	fmx_api defined here.  The stub's dns_query() answers from a zone
 *	table with real DNS packets built here (header, question, answer
 *	section with CNAMEs, TXT split in 255-byte strings), either at once
 *	(inside dns_query, as a resolver cache would), later (queued, served
 *	in FIFO or LIFO order so the filter never relies on an order), or
 *	not at all (dns_query refused: -1, as before the core has a
 *	resolver).  A zone value "SERVFAIL", "TIMEOUT" (rcode -1) or
 *	"GARBAGE"/"TRUNC"/"WRONGQ" (broken packets) makes every query of
 *	that name fail that way.
 *
 *	test_run() plays the core for one message: on_mail, the resume()
 *	that must follow FMX_PENDING exactly once, on_eom, end of message.
 *	It records result, reason, reply, facts, header fields, the
 *	Authentication-Results entry and every query asked.
 */
#include <arpa/nameser.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spf_record.c"
#include "spf_dns.c"
#include "spf.c"
#include "filter_opt.h"
#include "tap.h"

#define TEST_QUEUE_MAX	512
#define TEST_LINE	2048

/* One record of the test zone: owner, type, value. */
struct test_rr {
	const char	*name;
	const char	*type;		/* A AAAA MX PTR TXT CNAME, or ERR */
	const char	*value;		/* MX: "10 host"; TXT: strings separated by '|' */
};

struct test_q {
	fmx_dns_fn	 fn;
	void		*arg;
	int		 rcode;
	unsigned char	 pkt[4096];
	size_t		 len;
};

enum test_mode {
	TEST_SYNC = 0,		/* answer inside dns_query() */
	TEST_FIFO,		/* answer later, in order */
	TEST_LIFO,		/* answer later, newest first */
	TEST_REFUSE		/* dns_query() returns -1 */
};

struct fmx_ctx {
	const struct test_rr	*zone;
	enum test_mode		 mode;
	const char		*client;
	const char		*helo;

	void			*data;
	fmx_free_fn		 data_free;

	char			 result[64];
	char			 reason[TEST_LINE];
	char			 reply[TEST_LINE];
	char			 received[TEST_LINE];
	int			 nreceived;
	char			 ar_result[64];
	char			 ar_props[TEST_LINE];
	char			 fact_result[64];
	char			 fact_domain[300];
	char			 log[TEST_LINE * 4];
	int			 resumes;
	enum fmx_verdict	 resume_verdict;
	int			 in_hook;
	int			 bad_call;	/* an api call the contract forbids */

	struct test_q		 q[TEST_QUEUE_MAX];
	size_t			 nq;
	unsigned		 queries;
	char			 asked[TEST_LINE * 8];	/* "name/type " ... */
};

static struct fmx_ctx test_initlog;

/* ------------------------------------------------------------------ */
/* DNS packets */

static size_t
test_name(unsigned char *p, size_t cap, const char *name)
{
	size_t i = 0;

	if (ns_name_pton(name, p, cap) == -1)
		return 0;
	while (i < cap && p[i] != 0)	/* wire form: labels up to the root */
		i += (size_t)p[i] + 1;
	return i < cap ? i + 1 : 0;
}

static int
test_type(const char *t)
{
	if (strcmp(t, "A") == 0)
		return ns_t_a;
	if (strcmp(t, "AAAA") == 0)
		return ns_t_aaaa;
	if (strcmp(t, "MX") == 0)
		return ns_t_mx;
	if (strcmp(t, "PTR") == 0)
		return ns_t_ptr;
	if (strcmp(t, "TXT") == 0)
		return ns_t_txt;
	if (strcmp(t, "CNAME") == 0)
		return ns_t_cname;
	return -1;
}

struct test_pkt {
	unsigned char	*p;
	size_t		 cap, len;
	int		 over;
};

static void
test_put(struct test_pkt *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		b->over = 1;
		return;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void
test_u16(struct test_pkt *b, unsigned v)
{
	unsigned char x[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	test_put(b, x, 2);
}

static void
test_putname(struct test_pkt *b, const char *name)
{
	unsigned char w[NS_MAXCDNAME];
	size_t n = test_name(w, sizeof w, name);

	if (n == 0)
		b->over = 1;
	else
		test_put(b, w, n);
}

/* One answer RR; 0 ok. */
static void
test_answer_rr(struct test_pkt *b, const char *owner, int type, const char *value)
{
	unsigned char	 rd[2048];
	struct test_pkt	 r = { rd, sizeof rd, 0, 0 };
	const char	*s, *bar;
	unsigned char	 len;

	switch (type) {
	case ns_t_a:
		if (inet_pton(AF_INET, value, rd) != 1)
			return;
		r.len = 4;
		break;
	case ns_t_aaaa:
		if (inet_pton(AF_INET6, value, rd) != 1)
			return;
		r.len = 16;
		break;
	case ns_t_mx:
		test_u16(&r, (unsigned)atoi(value));
		test_putname(&r, strchr(value, ' ') + 1);
		break;
	case ns_t_ptr:
	case ns_t_cname:
		test_putname(&r, value);
		break;
	case ns_t_txt:
		/* strings separated by '|'; each longer than 255 split again */
		for (s = value; ; s = bar + 1) {
			size_t n;

			bar = strchr(s, '|');
			n = bar ? (size_t)(bar - s) : strlen(s);
			do {
				len = (unsigned char)(n > 255 ? 255 : n);
				test_put(&r, &len, 1);
				test_put(&r, s, len);
				s += len;
				n -= len;
			} while (n > 0);
			if (bar == NULL)
				break;
		}
		break;
	}
	test_putname(b, owner);
	test_u16(b, (unsigned)type);
	test_u16(b, ns_c_in);
	test_u16(b, 0);
	test_u16(b, 300);
	test_u16(b, (unsigned)r.len);
	test_put(b, rd, r.len);
}

static int
test_zone_has(const struct test_rr *z, const char *name)
{
	for (; z->name != NULL; z++)
		if (strcasecmp(z->name, name) == 0)
			return 1;
	return 0;
}

static const char *
test_zone_err(const struct test_rr *z, const char *name)
{
	for (; z->name != NULL; z++)
		if (strcasecmp(z->name, name) == 0 && strcmp(z->type, "ERR") == 0)
			return z->value;
	return NULL;
}

/* Build the answer to (name, type); returns the rcode (-1: no answer). */
static int
test_resolve(const struct test_rr *zone, const char *name, int type,
    unsigned char *pkt, size_t cap, size_t *len)
{
	struct test_pkt	 b = { pkt, cap, 0, 0 };
	const struct test_rr *z;
	const char	*err = test_zone_err(zone, name), *target = NULL;
	unsigned	 an = 0;
	int		 rcode = 0;

	*len = 0;
	if (err != NULL && strcmp(err, "TIMEOUT") == 0)
		return -1;
	if (err != NULL && strcmp(err, "SERVFAIL") == 0)
		rcode = 2;
	else if (!test_zone_has(zone, name))
		rcode = 3;
	/* header: id, QR RD RA + rcode, counts patched below */
	test_u16(&b, 0x1234);
	test_u16(&b, 0x8180 | (unsigned)(rcode > 0 ? rcode : 0));
	test_u16(&b, 1);
	test_u16(&b, 0);
	test_u16(&b, 0);
	test_u16(&b, 0);
	test_putname(&b, err != NULL && strcmp(err, "WRONGQ") == 0 ? "other.example" : name);
	test_u16(&b, (unsigned)type);
	test_u16(&b, ns_c_in);
	if (rcode == 0) {
		for (z = zone; z->name != NULL; z++)
			if (strcasecmp(z->name, name) == 0 && test_type(z->type) == ns_t_cname)
				target = z->value;
		if (target != NULL && type != ns_t_cname) {
			test_answer_rr(&b, name, ns_t_cname, target);
			an++;
		}
		for (z = zone; z->name != NULL; z++)
			if (strcasecmp(z->name, target ? target : name) == 0 &&
			    test_type(z->type) == type) {
				test_answer_rr(&b, z->name, type, z->value);
				an++;
			}
	}
	pkt[6] = (unsigned char)(an >> 8);
	pkt[7] = (unsigned char)an;
	if (b.over)
		return -1;
	*len = b.len;
	if (err != NULL && strcmp(err, "GARBAGE") == 0) {
		memset(pkt + 12, 0xff, b.len - 12);
		pkt[7] = 5;
	}
	if (err != NULL && strcmp(err, "TRUNC") == 0)
		pkt[2] |= 0x02;		/* TC */
	return rcode;
}

/* ------------------------------------------------------------------ */
/* The stub api */

__attribute__((format(printf, 3, 4)))
static void
test_log(struct fmx_ctx *ctx, enum fmx_log_level level, const char *fmt, ...)
{
	char	line[TEST_LINE];
	va_list	ap;
	size_t	used;

	(void)level;
	if (ctx == NULL)
		ctx = &test_initlog;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	used = strlen(ctx->log);
	snprintf(ctx->log + used, sizeof ctx->log - used, "%s\n", line);
}

static const char *
test_get(struct fmx_ctx *ctx, const char *key)
{
	if (strcmp(key, "client.addr") == 0)
		return ctx->client;
	if (strcmp(key, "helo") == 0)
		return ctx->helo;
	if (strcmp(key, "hostname") == 0)
		return "mx.test.example";
	return NULL;
}

static void *
test_msg_data(struct fmx_ctx *ctx)
{
	return ctx->data;
}

static void
test_set_msg_data(struct fmx_ctx *ctx, void *p, fmx_free_fn fn)
{
	if (ctx->data != NULL && ctx->data_free != NULL && ctx->data != p)
		ctx->data_free(ctx->data);
	ctx->data = p;
	ctx->data_free = fn;
}

static int
test_valid_line(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

static int
test_set_reply(struct fmx_ctx *ctx, const char *reply)
{
	if (strlen(reply) > 510 || !test_valid_line(reply) ||
	    (reply[0] != '4' && reply[0] != '5')) {
		ctx->bad_call++;
		return -1;
	}
	snprintf(ctx->reply, sizeof ctx->reply, "%s", reply);
	return 0;
}

static int
test_set_result(struct fmx_ctx *ctx, const char *result, const char *reason)
{
	snprintf(ctx->result, sizeof ctx->result, "%s", result);
	snprintf(ctx->reason, sizeof ctx->reason, "%s", reason ? reason : "");
	return 0;
}

static int
test_add_auth_result(struct fmx_ctx *ctx, const char *method, const char *result,
    const char *props)
{
	if (strcmp(method, "spf") != 0 || (props != NULL && strlen(props) >= 256)) {
		ctx->bad_call++;
		return -1;
	}
	snprintf(ctx->ar_result, sizeof ctx->ar_result, "%s", result);
	snprintf(ctx->ar_props, sizeof ctx->ar_props, "%s", props ? props : "");
	return 0;
}

static int
test_insert_header(struct fmx_ctx *ctx, size_t index, const char *name,
    const char *value)
{
	if (index != 0 || strcmp(name, "Received-SPF") != 0 || strlen(value) > 900 ||
	    !test_valid_line(value)) {
		ctx->bad_call++;
		return -1;
	}
	ctx->nreceived++;
	snprintf(ctx->received, sizeof ctx->received, "%s", value);
	return 0;
}

static int
test_set_fact(struct fmx_ctx *ctx, const char *key, const char *value)
{
	if (!test_valid_line(value) || strlen(value) > 512) {
		ctx->bad_call++;
		return -1;
	}
	if (strcmp(key, "spf.result") == 0)
		snprintf(ctx->fact_result, sizeof ctx->fact_result, "%s", value);
	else if (strcmp(key, "spf.domain") == 0)
		snprintf(ctx->fact_domain, sizeof ctx->fact_domain, "%s", value);
	else
		ctx->bad_call++;
	return 0;
}

static int
test_resume(struct fmx_ctx *ctx, enum fmx_verdict v)
{
	if (ctx->in_hook)
		ctx->bad_call++;	/* the filter must return the verdict instead */
	ctx->resumes++;
	ctx->resume_verdict = v;
	return 0;
}

static int
test_dns_query(struct fmx_ctx *ctx, const char *name, int type, fmx_dns_fn fn,
    void *arg)
{
	struct test_q	 q;
	size_t		 used = strlen(ctx->asked);

	ctx->queries++;
	snprintf(ctx->asked + used, sizeof ctx->asked - used, "%s/%d ", name, type);
	if (ctx->mode == TEST_REFUSE)
		return -1;
	if (strlen(name) > 253)
		return -1;
	q.fn = fn;
	q.arg = arg;
	q.rcode = test_resolve(ctx->zone, name, type, q.pkt, sizeof q.pkt, &q.len);
	if (ctx->mode == TEST_SYNC) {
		fn(ctx, arg, q.rcode, q.rcode == -1 ? NULL : q.pkt, q.rcode == -1 ? 0 : q.len);
		return 0;
	}
	if (ctx->nq >= TEST_QUEUE_MAX)
		return -1;
	ctx->q[ctx->nq++] = q;
	return 0;
}

static const struct fmx_api test_api = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_api),
	.log = test_log,
	.get = test_get,
	.msg_data = test_msg_data,
	.set_msg_data = test_set_msg_data,
	.set_reply = test_set_reply,
	.set_result = test_set_result,
	.add_auth_result = test_add_auth_result,
	.insert_header = test_insert_header,
	.resume = test_resume,
	.dns_query = test_dns_query,
	.set_fact = test_set_fact,
	/* API 1.2: the core's own option getters (filters/filter_opt.c). */
	.option_string = filter_opt_string,
	.option_bool = filter_opt_bool,
	.option_uint = filter_opt_uint,
	.option_list = filter_opt_list,
	.option_check = filter_opt_check,
};

/* ------------------------------------------------------------------ */
/* Running the filter */

static void *
test_instance(const char *const *opts, size_t n)
{
	void *inst = NULL;

	if (spf_filter()->init(&test_api, opts, n, &inst) != 0)
		return NULL;
	return inst;
}

/* One message; the returned ctx is static and valid until the next call. */
static struct fmx_ctx *
test_run_inst(void *inst, const struct test_rr *zone, enum test_mode mode,
    const char *client, const char *helo, const char *from)
{
	static struct fmx_ctx ctx;
	const struct fmx_filter *f = spf_filter();
	enum fmx_verdict v;
	struct test_q q;

	memset(&ctx, 0, sizeof ctx);
	ctx.zone = zone;
	ctx.mode = mode;
	ctx.client = client;
	ctx.helo = helo;
	ctx.in_hook = 1;
	v = f->on_mail(inst, &ctx, from);
	ctx.in_hook = 0;
	if (v == FMX_PENDING) {
		while (ctx.nq > 0 && ctx.resumes == 0) {
			if (mode == TEST_LIFO)
				q = ctx.q[--ctx.nq];
			else {
				q = ctx.q[0];
				memmove(ctx.q, ctx.q + 1, --ctx.nq * sizeof ctx.q[0]);
			}
			q.fn(&ctx, q.arg, q.rcode, q.rcode == -1 ? NULL : q.pkt,
			    q.rcode == -1 ? 0 : q.len);
		}
		if (ctx.resumes != 1 || ctx.nq != 0)
			ctx.bad_call++;
		v = ctx.resume_verdict;
	} else if (ctx.nq != 0 || ctx.resumes != 0)
		ctx.bad_call++;
	if (v != FMX_CONTINUE)
		ctx.bad_call++;
	ctx.in_hook = 1;
	if (f->on_eom(inst, &ctx) != FMX_CONTINUE)
		ctx.bad_call++;
	ctx.in_hook = 0;
	/* end of message: the core frees the data */
	if (ctx.data != NULL && ctx.data_free != NULL)
		ctx.data_free(ctx.data);
	ctx.data = NULL;
	return &ctx;
}

static void *test_default_inst;

static struct fmx_ctx *
test_run(const struct test_rr *zone, enum test_mode mode, const char *client,
    const char *helo, const char *from)
{
	return test_run_inst(test_default_inst, zone, mode, client, helo, from);
}

/* result is what the test expects; prints diagnostics when it is not. */
static int
test_is(struct fmx_ctx *c, const char *want, const char *name)
{
	int r = ok(strcmp(c->result, want) == 0 && c->bad_call == 0 &&
	    strcmp(c->fact_result, want) == 0 && strcmp(c->ar_result, want) == 0,
	    "%s: %s", name, want);

	if (!r)
		printf("# got result=%s fact=%s ar=%s bad_calls=%d reason=%s\n"
		    "# reply=%s\n# asked=%s\n# log=%s", c->result, c->fact_result,
		    c->ar_result, c->bad_call, c->reason, c->reply, c->asked, c->log);
	return r;
}

/* The same check in every resolver mode gives the same result. */
static void
test_modes(const struct test_rr *zone, const char *client, const char *helo,
    const char *from, const char *want, const char *name)
{
	static const char *const names[] = { "sync", "fifo", "lifo" };
	enum test_mode mode;
	char label[256];

	for (mode = TEST_SYNC; mode <= TEST_LIFO; mode++) {
		snprintf(label, sizeof label, "%s (%s)", name, names[mode]);
		test_is(test_run(zone, mode, client, helo, from), want, label);
	}
}

static int
test_contains(const char *hay, const char *needle, const char *name)
{
	int r = ok(strstr(hay, needle) != NULL, "%s", name);

	if (!r)
		printf("# \"%s\" not in \"%s\"\n", needle, hay);
	return r;
}

/* ------------------------------------------------------------------ */
/* Zones */

#define NOHELO	{ "mail.example.net", "A", "192.0.2.99" }
#define END	{ NULL, NULL, NULL }

static const struct test_rr zone_basic[] = {
	{ "example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all" },
	{ "soft.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 ~all" },
	{ "neutral.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 ?all" },
	{ "default.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24" },
	{ "nospf.example.com", "TXT", "google-site-verification=abc" },
	{ "nospf.example.com", "TXT", "v=spf10 -all" },
	{ "nodata.example.com", "A", "192.0.2.1" },
	{ "split.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24| -all" },
	{ "upper.example.com", "TXT", "V=SpF1 IP4:192.0.2.0/24 -ALL" },
	{ "two.example.com", "TXT", "v=spf1 -all" },
	{ "two.example.com", "TXT", "v=spf1 +all" },
	{ "servfail.example.com", "ERR", "SERVFAIL" },
	{ "timeout.example.com", "ERR", "TIMEOUT" },
	{ "garbage.example.com", "ERR", "GARBAGE" },
	{ "trunc.example.com", "ERR", "TRUNC" },
	{ "wrongq.example.com", "ERR", "WRONGQ" },
	{ "alias.example.com", "CNAME", "example.com" },
	{ "loop.example.com", "TXT", "v=spf1 -all" },
	{ "loopback.example.com", "TXT", "v=spf1 -all" },
	{ "exp.example.com", "TXT", "v=spf1 -all exp=explain.example.com" },
	{ "explain.example.com", "TXT", "You are not welcome, %{i}" },
	NOHELO,
	END
};

static const struct test_rr zone_include[] = {
	{ "example.com", "TXT", "v=spf1 include:_spf.example.net -all" },
	{ "_spf.example.net", "TXT", "v=spf1 ip4:192.0.2.0/24 ~all" },
	{ "redir.example.com", "TXT", "v=spf1 redirect=_spf.example.net" },
	{ "redirfirst.example.com", "TXT", "v=spf1 redirect=deny.example.net ip4:192.0.2.10" },
	{ "redirall.example.com", "TXT", "v=spf1 ?all redirect=deny.example.net" },
	{ "deny.example.net", "TXT", "v=spf1 -all" },
	{ "incnone.example.com", "TXT", "v=spf1 include:nothing.example.net -all" },
	{ "nothing.example.net", "A", "192.0.2.1" },
	{ "inctemp.example.com", "TXT", "v=spf1 include:broken.example.net -all" },
	{ "broken.example.net", "ERR", "SERVFAIL" },
	{ "incbad.example.com", "TXT", "v=spf1 include:bad.example.net -all" },
	{ "bad.example.net", "TXT", "v=spf1 ip4:300.1.1.1 -all" },
	{ "redirnone.example.com", "TXT", "v=spf1 redirect=nothing.example.net" },
	{ "deep1.example.com", "TXT", "v=spf1 include:deep2.example.com -all" },
	{ "deep2.example.com", "TXT", "v=spf1 include:deep3.example.com -all" },
	{ "deep3.example.com", "TXT", "v=spf1 include:deep4.example.com -all" },
	{ "deep4.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all" },
	{ "self.example.com", "TXT", "v=spf1 include:self.example.com -all" },
	NOHELO,
	END
};

/* LIBRARIES.md 1: five includes of six a: each, 35 lookups; libspf2 says pass. */
static const struct test_rr zone_limit[] = {
	{ "example.com", "TXT", "v=spf1 include:i1.example.com include:i2.example.com "
	    "include:i3.example.com include:i4.example.com include:i5.example.com -all" },
	{ "i1.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com "
	    "a:h4.example.com a:h5.example.com a:h6.example.com" },
	{ "i2.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com "
	    "a:h4.example.com a:h5.example.com a:h6.example.com" },
	{ "i3.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com "
	    "a:h4.example.com a:h5.example.com a:h6.example.com" },
	{ "i4.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com "
	    "a:h4.example.com a:h5.example.com a:h6.example.com" },
	{ "i5.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com "
	    "a:h4.example.com a:h5.example.com a:h6.example.com ip4:192.0.2.0/24" },
	{ "h1.example.com", "A", "198.51.100.1" },
	{ "h2.example.com", "A", "198.51.100.2" },
	{ "h3.example.com", "A", "198.51.100.3" },
	{ "h4.example.com", "A", "198.51.100.4" },
	{ "h5.example.com", "A", "198.51.100.5" },
	{ "h6.example.com", "A", "198.51.100.6" },
	/* exactly ten terms: 2 includes of 3 a:, plus 2 a: */
	{ "ten.example.com", "TXT", "v=spf1 include:t1.example.com include:t2.example.com "
	    "a:h1.example.com a:h2.example.com ip4:192.0.2.10 -all" },
	{ "t1.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com" },
	{ "t2.example.com", "TXT", "v=spf1 a:h1.example.com a:h2.example.com a:h3.example.com" },
	/* eleven: one more a: before the ip4 */
	{ "eleven.example.com", "TXT", "v=spf1 include:t1.example.com include:t2.example.com "
	    "a:h1.example.com a:h2.example.com a:h3.example.com ip4:192.0.2.10 -all" },
	/* the same terms, but the ip4 first: the limit is never reached */
	{ "early.example.com", "TXT", "v=spf1 ip4:192.0.2.10 include:t1.example.com "
	    "include:t2.example.com a:h1.example.com a:h2.example.com a:h3.example.com -all" },
	/* redirect chain of eleven */
	{ "r0.example.com", "TXT", "v=spf1 redirect=r1.example.com" },
	{ "r1.example.com", "TXT", "v=spf1 redirect=r2.example.com" },
	{ "r2.example.com", "TXT", "v=spf1 redirect=r3.example.com" },
	{ "r3.example.com", "TXT", "v=spf1 redirect=r4.example.com" },
	{ "r4.example.com", "TXT", "v=spf1 redirect=r5.example.com" },
	{ "r5.example.com", "TXT", "v=spf1 redirect=r6.example.com" },
	{ "r6.example.com", "TXT", "v=spf1 redirect=r7.example.com" },
	{ "r7.example.com", "TXT", "v=spf1 redirect=r8.example.com" },
	{ "r8.example.com", "TXT", "v=spf1 redirect=r9.example.com" },
	{ "r9.example.com", "TXT", "v=spf1 redirect=r10.example.com" },
	{ "r10.example.com", "TXT", "v=spf1 redirect=r11.example.com" },
	{ "r11.example.com", "TXT", "v=spf1 +all" },
	/* void lookups */
	{ "void2.example.com", "TXT", "v=spf1 a:nx1.example.com mx:nx2.example.com ?all" },
	{ "void3.example.com", "TXT", "v=spf1 a:nx1.example.com a:nx2.example.com "
	    "exists:nx3.example.com ?all" },
	{ "voidnodata.example.com", "TXT", "v=spf1 a:h1.example.com a:nx1.example.com "
	    "aaaa.example.com a:nodata1.example.com a:nodata2.example.com ?all" },
	{ "nodata1.example.com", "TXT", "hello" },
	{ "nodata2.example.com", "TXT", "hello" },
	NOHELO,
	END
};

static const struct test_rr zone_mech[] = {
	{ "a.example.com", "TXT", "v=spf1 a -all" },
	{ "a.example.com", "A", "192.0.2.7" },
	{ "a.example.com", "AAAA", "2001:db8::7" },
	{ "acidr.example.com", "TXT", "v=spf1 a:a.example.com/24//64 -all" },
	{ "azero.example.com", "TXT", "v=spf1 a/0 -all" },
	{ "azero.example.com", "A", "203.0.113.1" },
	{ "azero6.example.com", "TXT", "v=spf1 a//0 -all" },
	{ "azero6.example.com", "A", "203.0.113.1" },
	{ "azeronx.example.com", "TXT", "v=spf1 a:nx.example.com/0 -all" },
	{ "ip4zero.example.com", "TXT", "v=spf1 -ip4:0.0.0.0/0 +all" },
	{ "mx.example.com", "TXT", "v=spf1 mx -all" },
	{ "mx.example.com", "MX", "10 mx1.example.com" },
	{ "mx.example.com", "MX", "20 mx2.example.com" },
	{ "mx.example.com", "MX", "30 mx3.example.com" },
	{ "mx1.example.com", "A", "198.51.100.1" },
	{ "mx2.example.com", "A", "198.51.100.2" },
	{ "mx3.example.com", "A", "192.0.2.20" },
	{ "mx3.example.com", "AAAA", "2001:db8::20" },
	{ "mxzero.example.com", "TXT", "v=spf1 mx:mx.example.com/0 -all" },
	{ "mx11.example.com", "TXT", "v=spf1 mx -all" },
	{ "mx11.example.com", "MX", "1 m1.example.com" },
	{ "mx11.example.com", "MX", "2 m2.example.com" },
	{ "mx11.example.com", "MX", "3 m3.example.com" },
	{ "mx11.example.com", "MX", "4 m4.example.com" },
	{ "mx11.example.com", "MX", "5 m5.example.com" },
	{ "mx11.example.com", "MX", "6 m6.example.com" },
	{ "mx11.example.com", "MX", "7 m7.example.com" },
	{ "mx11.example.com", "MX", "8 m8.example.com" },
	{ "mx11.example.com", "MX", "9 m9.example.com" },
	{ "mx11.example.com", "MX", "10 m10.example.com" },
	{ "mx11.example.com", "MX", "11 mx3.example.com" },
	{ "ptr.example.com", "TXT", "v=spf1 ptr -all" },
	{ "10.2.0.192.in-addr.arpa", "PTR", "host.ptr.example.com" },
	{ "host.ptr.example.com", "A", "192.0.2.10" },
	{ "11.2.0.192.in-addr.arpa", "PTR", "liar.ptr.example.com" },
	{ "liar.ptr.example.com", "A", "198.51.100.1" },
	{ "ptr11.example.com", "TXT", "v=spf1 ptr -all" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p1.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p2.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p3.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p4.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p5.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p6.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p7.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p8.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p9.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p10.other.example" },
	{ "12.2.0.192.in-addr.arpa", "PTR", "p11.ptr11.example.com" },
	{ "p11.ptr11.example.com", "A", "192.0.2.12" },
	{ "ptrerr.example.com", "TXT", "v=spf1 ptr -all" },
	{ "13.2.0.192.in-addr.arpa", "PTR", "broken.ptrerr.example.com" },
	{ "13.2.0.192.in-addr.arpa", "PTR", "good.ptrerr.example.com" },
	{ "broken.ptrerr.example.com", "ERR", "SERVFAIL" },
	{ "good.ptrerr.example.com", "A", "192.0.2.13" },
	{ "exists.example.com", "TXT", "v=spf1 exists:%{ir}.list.example.com -all" },
	{ "10.2.0.192.list.example.com", "A", "127.0.0.2" },
	{ "pmacro.example.com", "TXT", "v=spf1 exists:%{p}.ok.example.com -all" },
	{ "host.ptr.example.com.ok.example.com", "A", "127.0.0.2" },
	{ "lmacro.example.com", "TXT", "v=spf1 exists:%{l}.users.example.com -all" },
	{ "alice.users.example.com", "A", "127.0.0.2" },
	{ "hmacro.example.com", "TXT", "v=spf1 a:%{h} -all" },
	{ "mail.example.net", "A", "192.0.2.99" },
	{ "ip6.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:1::/48 -all" },
	END
};

static const struct test_rr zone_helo[] = {
	{ "example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all" },
	{ "mail.example.org", "TXT", "v=spf1 a -all" },
	{ "mail.example.org", "A", "192.0.2.5" },
	{ "liar.example.org", "TXT", "v=spf1 -all" },
	{ "neutral.example.org", "TXT", "v=spf1 ?all" },
	END
};

/* ------------------------------------------------------------------ */
/* Tests */

static void
test_parser(void)
{
	static const struct { const char *in, *out; } good[] = {
		{ "v=spf1", "v=spf1" },
		{ "v=spf1 ", "v=spf1" },
		{ "v=spf1  -all  ", "v=spf1 -all" },
		{ "V=SPF1 +A -ALL", "v=spf1 a -all" },
		{ "v=spf1 redirect=r.example ip4:192.0.2.1", "v=spf1 ip4:192.0.2.1 redirect=r.example" },
		{ "v=spf1 ?all redirect=r.example", "v=spf1 ?all" },
		{ "v=spf1 -all exp=e.example foo=bar x.y-z_w=%{d}", "v=spf1 -all" },
		{ "v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24", "v=spf1 ip4:192.0.2.0/24" },
		{ "v=spf1 ip4:0.0.0.0/0", "v=spf1 all" },
		{ "v=spf1 -ip4:192.0.2.1/32", "v=spf1 -ip4:192.0.2.1/32" },
		{ "v=spf1 a/24//64 mx:%{d}/28", "v=spf1 a/24 mx:%{d}/28" },
		{ "v=spf1 a//64", "v=spf1 a" },
		{ "v=spf1 a/0", "v=spf1 a:%{d}.x-0123456789abcdef.invalid" },
		{ "v=spf1 mx:m.example/0", "v=spf1 mx:m.example.x-0123456789abcdef.invalid" },
		{ "v=spf1 exists:%{ir}.%{v}._spf.%{d2}", "v=spf1 exists:%{ir}.%{v}._spf.%{d2}" },
		{ "v=spf1 exists:%{d0000000000000000000000000007R-.}.x.example",
		  "v=spf1 exists:%{d7r-.}.x.example" },
		{ "v=spf1 exists:%{d999}.example.com", "v=spf1 exists:%{d128}.example.com" },
		{ "v=spf1 a:foo:bar.example.com", "v=spf1 a:foo:bar.example.com" },
		{ "v=spf1 a:a.example.xn--zckzah", "v=spf1 a:a.example.xn--zckzah" },
		{ "v=spf1 a:a.example.com.", "v=spf1 a:a.example.com." },
		{ "v=spf1 include:%{l}", "v=spf1 include:%{l}" },
		{ "v=spf1 ptr ptr:example.com", "v=spf1 ptr ptr:example.com" },
		{ "v=spf1 default=- ?all", "v=spf1 ?all" },
	};
	static const char *const bad[] = {
		"v=spf1 a:foo", "v=spf1 a:foo.", "v=spf1 a:", "v=spf1 a:1.2.3.4",
		"v=spf1 a:foo.-bar", "v=spf1 a:foo.bar-", "v=spf1 -all foo",
		"v=spf1 all.", "v=spf1 all:x", "v=spf1 all/8",
		"v=spf1 ip4:1.2.3.4/33", "v=spf1 ip4:1.2.3.4/032", "v=spf1 ip4",
		"v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.04", "v=spf1 ip4:1.2.3.4:25",
		"v=spf1 ip4:1.2.3.4/24//64", "v=spf1 ip6:::1/129", "v=spf1 ip6:1.2.3.4",
		"v=spf1 ip6", "v=spf1 a//129", "v=spf1 a/33", "v=spf1 a/24/64",
		"v=spf1 ptr/0", "v=spf1 ptr:", "v=spf1 include", "v=spf1 include:",
		"v=spf1 include:e.example/24", "v=spf1 exists", "v=spf1 exists:e.example/24",
		"v=spf1 %{z}", "v=spf1 a:%{z}.example.com", "v=spf1 a:%{d0}.example.com",
		"v=spf1 a:%{c}.example.com", "v=spf1 a:%{t}.example.com",
		"v=spf1 a:%{r}.example.com", "v=spf1 exists:%", "v=spf1 exists:%x.example.com",
		"v=spf1 exists:%{d", "v=spf1 exists:%{d|}.example.com",
		"v=spf1 redirect=a.example redirect=b.example",
		"v=spf1 exp=a.example exp=b.example", "v=spf1 exp=", "v=spf1 redirect=",
		"v=spf1 -redirect=a.example", "v=spf1 =foo", "v=spf1 foo=%{",
		"v=spf1 foo=%{x}", "v=spf1 \001", "v=spf1 a:\303\251.example.com",
		"v=spf1 a:foo.example.com\tptr", "v=spf1 redirect:a.example.com",
		"v=spf1 frobnicate", "v=spf1 +", "v=spf1 -", "v=spf1 mx:%{d}.",
		"v=spf2.0/pra -all", "v=spf1x", "v=spf1 +al", "v=spf1 al", "v=spf1 ~",
	};
	char	 out[SPF_CANON_MAX], big[SPF_RECORD_MAX + 64], label[128];
	const char *why;
	size_t	 i;
	int	 r;

	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		r = spf_record_canon(good[i].in, strlen(good[i].in), AF_INET,
		    "0123456789abcdef", out, sizeof out, &why);
		if (!ok(r == 0 && strcmp(out, good[i].out) == 0, "parse \"%s\"", good[i].in))
			printf("# r=%d why=%s out=\"%s\" want \"%s\"\n", r, why ? why : "",
			    out, good[i].out);
	}
	r = spf_record_canon("v=spf1 ip4:192.0.2.0/24 ip6:::/0 a//0 a/8",
	    strlen("v=spf1 ip4:192.0.2.0/24 ip6:::/0 a//0 a/8"), AF_INET6,
	    "0123456789abcdef", out, sizeof out, &why);
	ok(r == 0 && strcmp(out, "v=spf1 all a:%{d}.x-0123456789abcdef.invalid a") == 0,
	    "IPv6 client: ip4 dropped, ip6:::/0 is all, a//0 is any address (%s)", out);
	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		r = spf_record_canon(bad[i], strlen(bad[i]), AF_INET, "0123456789abcdef",
		    out, sizeof out, &why);
		if (!ok(r == -1 && why != NULL, "permerror: \"%s\" (%s)", bad[i],
		    why ? why : "?"))
			printf("# accepted as \"%s\"\n", out);
	}
	/*
	 * The parser reads rec[0..len) and nothing after: the same verdicts
	 * from an exact-size heap copy, where ASan sees any byte past len
	 * (the fuzzer found "+al" read past it).
	 */
	for (i = 0; i < sizeof good / sizeof good[0] + sizeof bad / sizeof bad[0]; i++) {
		const char *in = i < sizeof good / sizeof good[0] ? good[i].in :
		    bad[i - sizeof good / sizeof good[0]];
		size_t len = strlen(in);
		char *copy, want[SPF_CANON_MAX];
		int rw;

		rw = spf_record_canon(in, len, AF_INET, "0123456789abcdef", want,
		    sizeof want, &why);
		if ((copy = malloc(len)) == NULL)
			abort();
		memcpy(copy, in, len);
		r = spf_record_canon(copy, len, AF_INET, "0123456789abcdef", out,
		    sizeof out, &why);
		free(copy);
		ok(r == rw && (r == -1 || strcmp(out, want) == 0),
		    "unterminated \"%s\": same verdict", in);
	}
	/* libspf2 compiles "%{d}." x 40 (about 480 bytes) but not x 60. */
	strcpy(big, "v=spf1 a:");
	for (i = 0; i < 30; i++)
		strcat(big, "%{d}.");
	strcat(big, "com");
	ok(spf_record_canon(big, strlen(big), AF_INET, "n", out, sizeof out, &why) == 0,
	    "30 macros in one domain-spec is fine");
	strcpy(big, "v=spf1 a:");
	for (i = 0; i < 60; i++)
		strcat(big, "%{d}.");
	strcat(big, "com");
	r = spf_record_canon(big, strlen(big), AF_INET, "n", out, sizeof out, &why);
	ok(r == -1, "60 macros in one domain-spec: permerror before libspf2 (%s)",
	    why ? why : "?");
	memset(big, 'a', sizeof big);
	memcpy(big, "v=spf1 a:", 9);
	big[SPF_RECORD_MAX + 10] = '\0';
	ok(spf_record_canon(big, strlen(big), AF_INET, "n", out, sizeof out, &why) == -1,
	    "a record over %d bytes: permerror", SPF_RECORD_MAX);
	/* 256 terms pass, 257 do not */
	strcpy(big, "v=spf1");
	for (i = 0; i < 257; i++)
		strcat(big, " ?all");
	ok(spf_record_canon(big, strlen(big), AF_INET, "n", out, sizeof out, &why) == -1,
	    "more than %d terms: permerror", SPF_TERMS_PER_RECORD);
	snprintf(label, sizeof label, "domain names: valid and not");
	ok(spf_domain_ok("example.com") && spf_domain_ok("example.com.") &&
	    spf_domain_ok("a.b") && !spf_domain_ok("example") && !spf_domain_ok("") &&
	    !spf_domain_ok("[1.2.3.4]") && !spf_domain_ok("a..b") &&
	    !spf_domain_ok(".a.b") && !spf_domain_ok("a b.c") &&
	    spf_domain_ok("a123456789012345678901234567890123456789012345678901234567890ab.c") &&
	    !spf_domain_ok("a123456789012345678901234567890123456789012345678901234567890abc.c"),
	    "%s", label);
}

static void
test_query_names(void)
{
	char out[SPF_NAME_BUF];

	ok(spf_record_query_name("Foo.Example.COM.", out, sizeof out) == 0 &&
	    strcmp(out, "foo.example.com") == 0, "query name: lower case, no final dot");
	ok(spf_record_query_name("a\"b c.example.com", out, sizeof out) == 0 &&
	    strcmp(out, "a\\034b\\032c.example.com") == 0,
	    "query name: specials escaped (%s)", out);
	ok(spf_record_query_name("a..b", out, sizeof out) == -1 &&
	    spf_record_query_name("", out, sizeof out) == -1 &&
	    spf_record_query_name(".", out, sizeof out) == -1, "query name: empty labels refused");
	ok(spf_record_query_name("x123456789012345678901234567890123456789012345678901234567890123.b",
	    out, sizeof out) == -1, "query name: a 64-octet label refused");
	{
		char longname[400];
		size_t i;

		longname[0] = '\0';
		for (i = 0; i < 30; i++)
			strcat(longname, "abcdefghi.");
		strcat(longname, "example.com");
		ok(spf_record_query_name(longname, out, sizeof out) == 0 && strlen(out) <= 253 &&
		    strcmp(out + strlen(out) - 11, "example.com") == 0,
		    "query name: over 253, the left labels go (4.8): %zu", strlen(out));
	}
}

static void
test_results(void)
{
	struct fmx_ctx *c;

	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "alice@example.com",
	    "pass", "ip4 match");
	c = test_run(zone_basic, TEST_SYNC, "192.0.2.10", "mail.example.net",
	    "alice@example.com");
	test_contains(c->received, "pass (mx.test.example: domain of alice@example.com "
	    "designates 192.0.2.10 as permitted sender)", "Received-SPF comment");
	test_contains(c->received, " client-ip=192.0.2.10; envelope-from=\"alice@example.com\"; "
	    "helo=mail.example.net; receiver=mx.test.example; identity=mailfrom;",
	    "Received-SPF key-value list");
	ok(c->nreceived == 1, "one Received-SPF");
	ok(strcmp(c->ar_props, "smtp.mailfrom=alice@example.com") == 0,
	    "Authentication-Results: %s", c->ar_props);
	ok(strcmp(c->fact_domain, "example.com") == 0, "fact spf.domain=%s", c->fact_domain);
	ok(c->reply[0] == '\0', "no reply for pass");
	ok(strstr(c->log, "result=pass") != NULL, "logged");

	test_modes(zone_basic, "2001:db8::1", "mail.example.net", "alice@example.com",
	    "pass", "ip6 match");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "alice@example.com",
	    "fail", "-all");
	c = test_run(zone_basic, TEST_SYNC, "198.51.100.1", "mail.example.net",
	    "alice@example.com");
	ok(strcmp(c->reply, "550 5.7.23 SPF validation failed for example.com: "
	    "198.51.100.1 is not a permitted sender") == 0, "fail reply: %s", c->reply);
	test_contains(c->received, "fail (mx.test.example: domain of alice@example.com does "
	    "not designate 198.51.100.1 as permitted sender)", "fail comment");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@soft.example.com",
	    "softfail", "~all");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@neutral.example.com",
	    "neutral", "?all");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@default.example.com",
	    "neutral", "no match and no all: neutral (4.7)");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@nospf.example.com",
	    "none", "TXT records but no v=spf1 record");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@nodata.example.com",
	    "none", "no TXT records");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@nxdomain.example.com",
	    "none", "NXDOMAIN");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@split.example.com",
	    "pass", "TXT strings joined (3.3)");
	test_modes(zone_basic, "198.51.100.1", "mail.example.net", "bob@split.example.com",
	    "fail", "TXT strings joined, no space added");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@upper.example.com",
	    "pass", "case-insensitive record");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@two.example.com",
	    "permerror", "two SPF records (4.5)");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@alias.example.com",
	    "pass", "CNAME followed");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@servfail.example.com",
	    "temperror", "SERVFAIL on the first lookup");
	c = test_run(zone_basic, TEST_FIFO, "192.0.2.10", "mail.example.net",
	    "bob@servfail.example.com");
	ok(strncmp(c->reply, "451 4.7.24 SPF temporary error for servfail.example.com: ",
	    57) == 0, "temperror reply: %s", c->reply);
	test_contains(c->received, "problem=", "temperror Received-SPF has problem=");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@timeout.example.com",
	    "temperror", "no answer (timeout)");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@garbage.example.com",
	    "temperror", "undecodable packet");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@trunc.example.com",
	    "temperror", "truncated packet");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "bob@wrongq.example.com",
	    "temperror", "answer to another question");
	c = test_run(zone_basic, TEST_REFUSE, "192.0.2.10", "mail.example.net",
	    "alice@example.com");
	test_is(c, "temperror", "dns_query() refused (no resolver)");
	test_modes(zone_basic, "127.0.0.1", "mail.example.net", "bob@loopback.example.com",
	    "fail", "a loopback client gets no free pass");
	test_modes(zone_basic, "::ffff:192.0.2.10", "mail.example.net", "alice@example.com",
	    "pass", "IPv4-mapped IPv6 is IPv4");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "<alice@example.com>",
	    "pass", "angle brackets stripped");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "@example.com",
	    "pass", "no local part: postmaster (4.3)");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "\"\"@example.com",
	    "pass", "empty quoted local part: postmaster (4.3)");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "alice@[192.0.2.10]",
	    "none", "domain literal (4.3)");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "alice",
	    "none", "no domain at all");
	test_modes(zone_basic, "192.0.2.10", "mail.example.net", "alice@example",
	    "none", "single-label domain (4.3)");
	c = test_run(zone_basic, TEST_SYNC, "unix:/tmp/sock", "mail.example.net",
	    "alice@example.com");
	test_is(c, "none", "no client IP address");
	c = test_run(zone_basic, TEST_SYNC, "198.51.100.1", "mail.example.net",
	    "bob@exp.example.com");
	test_is(c, "fail", "exp= record");
	ok(strstr(c->asked, "explain") == NULL, "exp= is never fetched: %s", c->asked);
}

static void
test_include(void)
{
	struct fmx_ctx *c;

	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@example.com", "pass",
	    "include: pass");
	test_modes(zone_include, "198.51.100.1", "mail.example.net", "a@example.com", "fail",
	    "include: softfail inside is no match");
	test_modes(zone_include, "198.51.100.1", "mail.example.net", "a@redir.example.com",
	    "softfail", "redirect");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@redirfirst.example.com",
	    "pass", "redirect written first still comes last (6.1)");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@redirall.example.com",
	    "neutral", "redirect ignored next to all (6.1)");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@incnone.example.com",
	    "permerror", "include of a domain without SPF (5.2)");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@inctemp.example.com",
	    "temperror", "include of a failing name (5.2)");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@incbad.example.com",
	    "permerror", "include of a malformed record");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@redirnone.example.com",
	    "permerror", "redirect to a domain without SPF (6.1)");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@deep1.example.com",
	    "pass", "three levels of include");
	test_modes(zone_include, "192.0.2.10", "mail.example.net", "a@self.example.com",
	    "permerror", "include loop");
	c = test_run(zone_include, TEST_FIFO, "192.0.2.10", "mail.example.net",
	    "a@deep1.example.com");
	if (!ok(strstr(c->log, "passes=5 ") != NULL, "one pass per include level"))
		printf("# %s", c->log);
	{
		static const char *const opts[] = { "max_passes=3" };
		void *inst = test_instance(opts, 1);

		ok(inst != NULL, "max_passes=3 accepted");
		c = test_run_inst(inst, zone_include, TEST_FIFO, "192.0.2.10",
		    "mail.example.net", "a@deep1.example.com");
		test_is(c, "temperror", "max_passes=3 is too few for three includes");
		ok(strstr(c->reason, "round trips") != NULL, "reason: %s", c->reason);
		spf_filter()->fini(inst);
	}
}

static void
test_limits(void)
{
	struct fmx_ctx *c;

	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@example.com",
	    "permerror", "5 includes x 6 a: (35 lookups)");
	c = test_run(zone_limit, TEST_FIFO, "192.0.2.10", "mail.example.net",
	    "a@example.com");
	ok(strstr(c->reason, "more than 10") != NULL, "reason: %s", c->reason);
	ok(c->queries <= 12, "stopped at the limit: %u queries (%s)", c->queries, c->asked);
	ok(strncmp(c->reply, "550 5.7.24 SPF validation error for example.com: more than 10",
	    strlen("550 5.7.24 SPF validation error for example.com: more than 10")) == 0,
	    "permerror reply: %s", c->reply);
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@ten.example.com",
	    "pass", "exactly 10 terms");
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@eleven.example.com",
	    "permerror", "11 terms");
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@early.example.com",
	    "pass", "the limit counts evaluated terms only");
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@r0.example.com",
	    "permerror", "11 redirects");
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@void2.example.com",
	    "neutral", "two void lookups");
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@void3.example.com",
	    "permerror", "three void lookups");
	c = test_run(zone_limit, TEST_SYNC, "192.0.2.10", "mail.example.net",
	    "a@void3.example.com");
	ok(strstr(c->reason, "void") != NULL, "reason: %s", c->reason);
	test_modes(zone_limit, "192.0.2.10", "mail.example.net", "a@voidnodata.example.com",
	    "permerror", "NODATA counts as void too");
}

static void
test_mechanisms(void)
{
	struct fmx_ctx *c;

	test_modes(zone_mech, "192.0.2.7", "mail.example.net", "a@a.example.com", "pass", "a");
	test_modes(zone_mech, "2001:db8::7", "mail.example.net", "a@a.example.com", "pass",
	    "a, IPv6 (AAAA)");
	test_modes(zone_mech, "192.0.2.8", "mail.example.net", "a@a.example.com", "fail",
	    "a, no match");
	test_modes(zone_mech, "192.0.2.200", "mail.example.net", "a@acidr.example.com", "pass",
	    "a/24");
	test_modes(zone_mech, "2001:db8::ffff", "mail.example.net", "a@acidr.example.com",
	    "pass", "a//64");
	test_modes(zone_mech, "192.0.2.1", "mail.example.net", "a@azero.example.com", "pass",
	    "a/0 matches any A record");
	test_modes(zone_mech, "2001:db8::1", "mail.example.net", "a@azero.example.com", "fail",
	    "a/0, IPv6 client, no AAAA");
	test_modes(zone_mech, "192.0.2.1", "mail.example.net", "a@azero6.example.com", "fail",
	    "a//0, IPv4 client: /32");
	test_modes(zone_mech, "192.0.2.1", "mail.example.net", "a@azeronx.example.com", "fail",
	    "a/0 and no address: no match");
	test_modes(zone_mech, "192.0.2.1", "mail.example.net", "a@ip4zero.example.com", "fail",
	    "-ip4:0.0.0.0/0");
	test_modes(zone_mech, "192.0.2.20", "mail.example.net", "a@mx.example.com", "pass",
	    "mx, third name");
	test_modes(zone_mech, "2001:db8::20", "mail.example.net", "a@mx.example.com", "pass",
	    "mx, IPv6");
	test_modes(zone_mech, "192.0.2.21", "mail.example.net", "a@mx.example.com", "fail",
	    "mx, no match");
	c = test_run(zone_mech, TEST_FIFO, "192.0.2.20", "mail.example.net", "a@mx.example.com");
	if (!ok(strstr(c->log, "passes=3 ") != NULL,
	    "MX names' addresses fetched with the MX answer"))
		printf("# %s", c->log);
	test_modes(zone_mech, "203.0.113.50", "mail.example.net", "a@mxzero.example.com", "pass",
	    "mx/0 matches when an MX has an address");
	test_modes(zone_mech, "192.0.2.20", "mail.example.net", "a@mx11.example.com",
	    "permerror", "11 MX names (4.6.4)");
	test_modes(zone_mech, "192.0.2.10", "mail.example.net", "a@ptr.example.com", "pass",
	    "ptr");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "a@ptr.example.com", "fail",
	    "ptr name without the client's address");
	test_modes(zone_mech, "192.0.2.12", "mail.example.net", "a@ptr11.example.com", "fail",
	    "ptr: names after the tenth ignored (4.6.4)");
	test_modes(zone_mech, "192.0.2.13", "mail.example.net", "a@ptrerr.example.com", "pass",
	    "ptr: a name whose lookup fails is skipped (5.5)");
	test_modes(zone_mech, "192.0.2.10", "mail.example.net", "a@exists.example.com", "pass",
	    "exists with %{ir}");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "a@exists.example.com", "fail",
	    "exists, no A");
	test_modes(zone_mech, "192.0.2.10", "mail.example.net", "a@pmacro.example.com", "pass",
	    "p macro, validated name");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "a@pmacro.example.com", "fail",
	    "p macro, no validated name");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "alice@lmacro.example.com",
	    "pass", "l macro");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "\"al ice\"@lmacro.example.com",
	    "fail", "l macro with a quoted local part");
	test_modes(zone_mech, "192.0.2.11", "mail.example.net", "\"alice\"@lmacro.example.com",
	    "pass", "l macro: a quoted local part stands for its value");
	test_modes(zone_mech, "192.0.2.99", "mail.example.net", "a@hmacro.example.com", "pass",
	    "h macro");
	test_modes(zone_mech, "2001:db8:1::5", "mail.example.net", "a@ip6.example.com", "pass",
	    "ip6");
	test_modes(zone_mech, "2001:db8:2::5", "mail.example.net", "a@ip6.example.com", "fail",
	    "ip6, no match");
}

static void
test_helo(void)
{
	struct fmx_ctx *c;
	static const char *const no[] = { "helo=no" };
	void *inst;

	test_modes(zone_helo, "192.0.2.5", "mail.example.org", "", "pass",
	    "null sender: postmaster@HELO");
	c = test_run(zone_helo, TEST_FIFO, "192.0.2.5", "mail.example.org", "");
	ok(strcmp(c->ar_props, "smtp.helo=mail.example.org") == 0, "A-R: %s", c->ar_props);
	test_contains(c->received, "identity=helo;", "Received-SPF identity=helo");
	test_contains(c->received, "envelope-from=\"<>\";", "Received-SPF null envelope-from");
	ok(strcmp(c->fact_domain, "mail.example.org") == 0, "spf.domain=%s", c->fact_domain);
	test_modes(zone_helo, "192.0.2.6", "mail.example.org", "", "fail",
	    "null sender, HELO not permitted");
	test_modes(zone_helo, "192.0.2.6", "[192.0.2.6]", "", "none",
	    "null sender, HELO address literal (4.3)");
	test_modes(zone_helo, "192.0.2.6", "OEMCOMPUTER", "", "none",
	    "null sender, single-label HELO (4.3)");
	test_modes(zone_helo, "192.0.2.10", "liar.example.org", "a@example.com", "fail",
	    "HELO fail is conclusive (2.3)");
	c = test_run(zone_helo, TEST_SYNC, "192.0.2.10", "liar.example.org", "a@example.com");
	ok(strncmp(c->reply, "550 5.7.23 SPF validation failed for HELO liar.example.org",
	    58) == 0, "HELO fail reply: %s", c->reply);
	ok(strstr(c->asked, "example.com/16") == NULL,
	    "MAIL FROM not looked up after a HELO fail: %s", c->asked);
	test_modes(zone_helo, "192.0.2.10", "neutral.example.org", "a@example.com", "pass",
	    "HELO neutral: the MAIL FROM result counts");
	inst = test_instance(no, 1);
	c = test_run_inst(inst, zone_helo, TEST_SYNC, "192.0.2.10", "liar.example.org",
	    "a@example.com");
	test_is(c, "pass", "helo=no: only MAIL FROM");
	ok(strstr(c->asked, "liar") == NULL, "helo=no: HELO not looked up");
	spf_filter()->fini(inst);
}

/*
 * Options go through the core's getters (API 1.2): a bad value is
 * recorded for the core's "FILE:LINE: filter spf: option KEY: ..." line.
 */
static void
test_options_core(void)
{
	static const char *const bad[] = { "helo=maybe" };
	static const char *const unknown[] = { "colour=blue" };
	char msg[FILTER_OPT_ERR_MAX] = "";
	void *inst;

	filter_opt_begin();
	inst = test_instance(bad, 1);
	ok(inst == NULL && filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option helo: \"maybe\" is not a boolean (yes/no, "
	    "true/false, on/off, 1/0)") == 0, "bad helo named by the core: %s", msg);
	filter_opt_begin();
	inst = test_instance(unknown, 1);
	ok(inst == NULL && filter_opt_end(msg, sizeof msg) == -1 &&
	    strncmp(msg, "option colour: unknown option (known: helo, max_passes, "
	    "explanation)", 70) == 0, "unknown option named by the core: %s", msg);
}

static void
test_options(void)
{
	static const char *const bad[] = {
		"helo=maybe", "max_passes=0", "max_passes=1001", "max_passes=-1",
		"max_passes=", "max_passes=3x", "colour=blue", "helo",
		"explanation=a\tb",
	};
	static const char *const good[] = {
		"helo=true", "helo=false", "helo=1", "helo=off", "max_passes=1000",
		"helo=on", "helo=NO",		/* the one spelling set (str_bool) */
		"explanation=see https://mx.example/spf.html",
	};
	static const char *const expl[] = { "explanation=see https://mx.example/spf" };
	char		 longexp[300];
	const char	*opt[1];
	size_t		 i;
	void		*inst;
	struct fmx_ctx	*c;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		opt[0] = bad[i];
		inst = test_instance(opt, 1);
		ok(inst == NULL, "option refused: %s", bad[i]);
		if (inst != NULL)
			spf_filter()->fini(inst);
	}
	snprintf(longexp, sizeof longexp, "explanation=%0151d", 0);
	opt[0] = longexp;
	ok(test_instance(opt, 1) == NULL, "explanation over 150 characters refused");
	for (i = 0; i < sizeof good / sizeof good[0]; i++) {
		opt[0] = good[i];
		inst = test_instance(opt, 1);
		ok(inst != NULL, "option accepted: %s", good[i]);
		if (inst != NULL)
			spf_filter()->fini(inst);
	}
	inst = test_instance(expl, 1);
	c = test_run_inst(inst, zone_basic, TEST_SYNC, "198.51.100.1", "mail.example.net",
	    "alice@example.com");
	ok(strcmp(c->reply, "550 5.7.23 SPF validation failed for example.com: 198.51.100.1 "
	    "is not a permitted sender; see https://mx.example/spf") == 0,
	    "explanation in the reply: %s", c->reply);
	spf_filter()->fini(inst);
}

static void
test_hostile(void)
{
	static struct test_rr zone[] = {
		{ "x.example.com", "TXT", NULL },
		{ "mail.example.net", "A", "192.0.2.99" },
		END
	};
	static const char *const records[] = {
		"v=spf1 a:%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}."
		    "%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}."
		    "%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}."
		    "%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.%{d}.com",
		"v=spf1 a/24/24", "v=spf1 a:%{l1r+-=_.,/}.%{s}.%{o}.%{i}.%{v}.%{h} -all",
		"v=spf1 exists:%{d99999999999999999999999999}.example.com",
		"v=spf1 include:%{l}%{l}%{l}%{l}%{l}%{l}%{l}%{l}%{l}%{l}",
		"v=spf1 redirect=%{d}", "v=spf1 %{d}", "v=spf1 exp=%{c}.example.com -all",
		"v=spf1 ip6:::ffff:1.2.3.4/200", "v=spf1 ip4:255.255.255.255/32 a:.example.com",
		"v=spf1 a:%{d}.%-.%_.%%.example.com -all", "v=spf1 mx:%{ir}",
	};
	char		 label[128];
	size_t		 i;
	struct fmx_ctx	*c;

	for (i = 0; i < sizeof records / sizeof records[0]; i++) {
		zone[0].value = records[i];
		c = test_run(zone, TEST_LIFO, "192.0.2.1", "mail.example.net",
		    "\"we(ird)\\\"\"@x.example.com");
		snprintf(label, sizeof label, "hostile record %zu: a result, no crash", i);
		ok(c->result[0] != '\0' && c->bad_call == 0, "%s (%s: %s)", label, c->result,
		    c->reason);
	}
	{
		char sender[300];

		memset(sender, 'a', 240);
		strcpy(sender + 240, "@x.example.com");
		zone[0].value = "v=spf1 -all";
		c = test_run(zone, TEST_SYNC, "192.0.2.1", "mail.example.net", sender);
		test_is(c, "fail", "a 254-character sender");
		ok(strcmp(c->ar_props, "smtp.mailfrom=x.example.com") == 0,
		    "too long for the A-R entry: the domain only (%s)", c->ar_props);
		ok(strlen(c->received) <= 900, "Received-SPF at most 900 bytes (%zu)",
		    strlen(c->received));
		c = test_run(zone, TEST_SYNC, "192.0.2.1", "mail.example.net",
		    "\"a b\\\"c\"@x.example.com");
		test_contains(c->received, "envelope-from=\"\\\"a b\\\\\\\"c\\\"@x.example.com\";",
		    "quoted envelope-from");
		test_contains(c->ar_props, "smtp.mailfrom=\"", "quoted smtp.mailfrom");
	}
}

/*
 * Cases of the RFC 7208 suite (t/smtp/30-spf-suite.t) that frontmx's SMTP
 * session refuses before any filter runs (501: the MAIL FROM domain or the
 * EHLO argument breaks RFC 5321 syntax).  The filter itself, given them
 * through the API, still gives the suite's result.
 */
static const struct test_rr zone_suite[] = {
	{ "example.net", "TXT", "v=spf1 -all exp=exp.example.net" },
	{ "exp.example.net", "TXT", "%{l}" },
	{ "t12.example.com", "TXT", "v=spf1 a:%{H}.bar -all" },
	{ "e9.example.com", "TXT", "v=spf1 a:%{H} -all" },
	{ "e8.example.com", "TXT", "v=spf1 -all exp=exp4.example.com" },
	{ "exp4.example.com", "TXT", "%{l} in implementation" },
	{ "mail.example.net", "A", "1.2.3.4" },
	{ "mail.example.com", "A", "1.2.3.4" },
	END
};

static void
test_suite_cases(void)
{
	test_modes(zone_suite, "1.2.3.5", "mail.example.net", "lyme.eater@A123456789012345678"
	    "901234567890123456789012345678901234567890123456789012345.example.com", "none",
	    "suite toolonglabel");
	test_modes(zone_suite, "1.2.3.5", "mail.example.net", "lyme.eater@A...example.com",
	    "none", "suite emptylabel");
	test_modes(zone_suite, "1.2.3.4", "mail.example.net", "@example.net", "fail",
	    "suite nolocalpart");
	test_modes(zone_suite, "1.2.3.4", "%%%%%%%%%%%%%%%%%%%%%%", "foo@t12.example.com",
	    "fail", "suite invalid-domain-long-via-macro");
	test_modes(zone_suite, "1.2.3.4", "mail.example.com", "Macro Error@e8.example.com",
	    "fail", "suite dorky-sentinel");
	test_modes(zone_suite, "192.168.218.40", "JUMPIN' JUPITER", "test@e9.example.com",
	    "fail", "suite invalid-hello-macro");
}

int
main(void)
{
	plan(511);
	test_default_inst = test_instance(NULL, 0);
	ok(test_default_inst != NULL, "instance with no options");
	test_parser();
	test_query_names();
	test_results();
	test_include();
	test_limits();
	test_mechanisms();
	test_helo();
	test_options();
	test_options_core();
	test_hostile();
	test_suite_cases();
	spf_filter()->fini(test_default_inst);
	return done_testing();
}
