/*
 * test_dmarc.c - unit tests for filters/dmarc.c
 *
 * NAME
 *	test_dmarc - From parsing, record parsing, organizational domains,
 *	alignment, policy and pct, and the filter's hooks against a stub core
 *
 * SYNOPSIS
 *	build/unit/test_dmarc		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	dmarc.c is included, so its static parsers are tested directly
 *	from tables as well as through the hooks.
 *
 *	The hooks run against a stub of struct fmx_api defined here: get()
 *	returns the SPF/DKIM facts a case sets, set_result, set_reply and
 *	add_auth_result are recorded, resume() is counted, and dns_query()
 *	answers from test_zone with real DNS packets (built here, TXT split
 *	into character-strings, optional CNAME in front, rcodes, a "no
 *	answer" timeout, a truncated packet).  It answers either inside the
 *	call (a resolver cache hit: test_mode SYNC) or later, when
 *	test_message() plays the event loop (DEFERRED); every case runs in
 *	both modes.  In SYNC mode the filter must never return FMX_PENDING
 *	nor call resume(); in DEFERRED mode it must return FMX_PENDING and
 *	resume() exactly once.  The list of names asked is checked too, so
 *	the organizational-domain fallback (RFC 7489 6.6.3) is visible.
 */

#include "dmarc.c"

#include "filter_opt.h"
#include "tap.h"

#define TEST_LINE_MAX	512
#define TEST_QUERIES_MAX 8
#define TEST_PKT_MAX	8192

/* ---------------------------------------------------------------- */
/* The zone */

#define TEST_TIMEOUT	(-1)	/* the resolver gives up: rcode -1, no packet */

struct test_zone {
	const char	*name;		/* the _dmarc name asked */
	int		 rcode;		/* 0, 2 SERVFAIL, 3 NXDOMAIN, TEST_TIMEOUT */
	int		 malformed;	/* answer cut short */
	const char	*cname;		/* a CNAME RR in front of the TXT RRs */
	const char	*txt[3];	/* TXT RRs; '|' separates character-strings */
};

static char test_longtxt[6000];

static struct test_zone test_zone[] = {
	{ "_dmarc.example.com", 0, 0, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.strict.example", 0, 0, NULL, { "v=DMARC1; p=reject; aspf=s; adkim=s" } },
	{ "_dmarc.quar.example", 0, 0, NULL, { "v=DMARC1; p=quarantine" } },
	{ "_dmarc.none.example", 0, 0, NULL, { "v=DMARC1; p=none; rua=mailto:d@none.example" } },
	{ "_dmarc.pct0.example", 0, 0, NULL, { "v=DMARC1; p=reject; pct=0" } },
	{ "_dmarc.pct0q.example", 0, 0, NULL, { "v=DMARC1; p=quarantine; pct=0" } },
	{ "_dmarc.pct100.example", 0, 0, NULL, { "v=DMARC1; p=reject; pct=100" } },
	{ "_dmarc.pct50.example", 0, 0, NULL, { "v=DMARC1; p=reject; pct=50" } },
	{ "_dmarc.sp.example", 0, 0, NULL, { "v=DMARC1; p=reject; sp=quarantine" } },
	{ "_dmarc.own.sp.example", 0, 0, NULL, { "v=DMARC1; p=none" } },
	{ "_dmarc.nodata.sp.example", 0, 0, NULL, { NULL } },
	{ "_dmarc.spf.sp.example", 0, 0, NULL, { "v=spf1 -all" } },
	{ "_dmarc.spnone.example", 0, 0, NULL, { "v=DMARC1; p=reject; sp=none" } },
	{ "_dmarc.nosp.example", 0, 0, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.example.co.uk", 0, 0, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.co.uk", 0, 0, NULL, { "v=DMARC1; p=none" } },	/* a trap */
	{ "_dmarc.b.x.kawasaki.jp", 0, 0, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.kawasaki.jp", 0, 0, NULL, { "v=DMARC1; p=none" } },	/* a trap */
	{ "_dmarc.x.kawasaki.jp", 0, 0, NULL, { "v=DMARC1; p=none" } },	/* a trap */
	{ "_dmarc.city.kawasaki.jp", 0, 0, NULL, { "v=DMARC1; p=quarantine" } },
	{ "_dmarc.servfail.example", 2, 0, NULL, { NULL } },
	{ "_dmarc.timeout.example", TEST_TIMEOUT, 0, NULL, { NULL } },
	{ "_dmarc.orgfail.example", 2, 0, NULL, { NULL } },
	{ "_dmarc.badp.example", 0, 0, NULL, { "v=DMARC1; p=bogus" } },
	{ "_dmarc.badprua.example", 0, 0, NULL, { "v=DMARC1; p=bogus; rua=mailto:r@badprua.example" } },
	{ "_dmarc.nop.example", 0, 0, NULL, { "v=DMARC1; rua=mailto:r@nop.example" } },
	{ "_dmarc.nopnorua.example", 0, 0, NULL, { "v=DMARC1; adkim=s" } },
	{ "_dmarc.nopbadrua.example", 0, 0, NULL, { "v=DMARC1; rua=not a uri" } },
	{ "_dmarc.badsp.example", 0, 0, NULL, { "v=DMARC1; p=reject; sp=bogus" } },
	{ "_dmarc.nosemi.example", 0, 0, NULL, { "v=DMARC1 p=reject" } },
	{ "_dmarc.lower.example", 0, 0, NULL, { "v=dmarc1; p=reject" } },
	{ "_dmarc.notfirst.example", 0, 0, NULL, { "p=reject; v=DMARC1" } },
	{ "_dmarc.case.example", 0, 0, NULL, { " V = DMARC1 ;P = Reject ; " } },
	{ "_dmarc.multi.example", 0, 0, NULL, { "v=DMARC1; p=reject", "v=DMARC1; p=none" } },
	{ "_dmarc.mixed.example", 0, 0, NULL, { "v=spf1 -all", "v=DMARC1; p=reject" } },
	{ "_dmarc.split.example", 0, 0, NULL, { "v=DMARC1; p=|reject" } },
	{ "_dmarc.badpct.example", 0, 0, NULL, { "v=DMARC1; p=reject; pct=abc" } },
	{ "_dmarc.cname.example", 0, 0, "_dmarc.target.example", { "v=DMARC1; p=quarantine" } },
	{ "_dmarc.malformed.example", 0, 1, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.long.example", 0, 0, NULL, { test_longtxt } },
	{ "_dmarc.b.com", 0, 0, NULL, { "v=DMARC1; p=reject" } },
	{ "_dmarc.x.com", 0, 0, NULL, { "v=DMARC1; p=none" } },
	{ NULL, 0, 0, NULL, { NULL } }
};

static const struct test_zone *
test_zone_find(const char *name)
{
	size_t i;

	for (i = 0; test_zone[i].name != NULL; i++)
		if (strcasecmp(test_zone[i].name, name) == 0)
			return &test_zone[i];
	return NULL;
}

static size_t
test_put16(unsigned char *p, size_t n, unsigned v)
{
	p[n] = (unsigned char)(v >> 8);
	p[n + 1] = (unsigned char)v;
	return n + 2;
}

/* A name in wire format (no compression). */
static size_t
test_put_name(unsigned char *p, size_t n, const char *name)
{
	const char *s = name, *dot;
	size_t l;

	while (*s != '\0') {
		dot = strchr(s, '.');
		l = dot != NULL ? (size_t)(dot - s) : strlen(s);
		p[n++] = (unsigned char)l;
		memcpy(p + n, s, l);
		n += l;
		s += l;
		if (*s == '.')
			s++;
	}
	p[n++] = 0;
	return n;
}

/* One TXT RR owned by the name at offset owner (a compression pointer). */
static size_t
test_put_txt(unsigned char *p, size_t n, unsigned owner, const char *txt)
{
	size_t rdlen_at, start, l;
	const char *s = txt, *bar;

	n = test_put16(p, n, 0xc000 | owner);
	n = test_put16(p, n, 16);
	n = test_put16(p, n, 1);
	n = test_put16(p, n, 0);
	n = test_put16(p, n, 60);
	rdlen_at = n;
	n += 2;
	start = n;
	for (;;) {
		bar = strchr(s, '|');
		l = bar != NULL ? (size_t)(bar - s) : strlen(s);
		/* a long piece becomes several character-strings of 255 */
		do {
			size_t k = l > 255 ? 255 : l;

			p[n++] = (unsigned char)k;
			memcpy(p + n, s, k);
			n += k;
			s += k;
			l -= k;
		} while (l > 0);
		if (bar == NULL)
			break;
		s = bar + 1;
	}
	test_put16(p, rdlen_at, (unsigned)(n - start));
	return n;
}

/* The answer packet for name; its length, 0 for "no answer". */
static size_t
test_packet(unsigned char *p, const char *name, int *rcode)
{
	const struct test_zone *z = test_zone_find(name);
	size_t n = 0, an_at, rdlen_at, start;
	unsigned owner = 12, an = 0, i;

	*rcode = z == NULL ? 3 : z->rcode;
	if (*rcode == TEST_TIMEOUT)
		return 0;
	memset(p, 0, 12);
	n = test_put16(p, n, 0x1234);
	n = test_put16(p, n, 0x8180 | (unsigned)*rcode);
	n = test_put16(p, n, 1);
	an_at = n;
	n = test_put16(p, n, 0);
	n = test_put16(p, n, 0);
	n = test_put16(p, n, 0);
	n = test_put_name(p, n, name);
	n = test_put16(p, n, 16);
	n = test_put16(p, n, 1);
	if (z != NULL && z->rcode == 0) {
		if (z->cname != NULL) {
			n = test_put16(p, n, 0xc000 | owner);
			n = test_put16(p, n, 5);
			n = test_put16(p, n, 1);
			n = test_put16(p, n, 0);
			n = test_put16(p, n, 60);
			rdlen_at = n;
			n += 2;
			start = n;
			owner = (unsigned)n;
			n = test_put_name(p, n, z->cname);
			test_put16(p, rdlen_at, (unsigned)(n - start));
			an++;
		}
		for (i = 0; i < 3 && z->txt[i] != NULL; i++, an++)
			n = test_put_txt(p, n, owner, z->txt[i]);
		if (z->malformed)
			n -= 5;
	}
	test_put16(p, an_at, an);
	return n;
}

/* ---------------------------------------------------------------- */
/* The stub core */

enum test_mode { TEST_SYNC = 0, TEST_DEFERRED };

struct test_pending {
	fmx_dns_fn	 fn;
	void		*arg;
	char		 name[300];
};

struct fmx_ctx {
	enum test_mode	 mode;
	void		*data;
	fmx_free_fn	 data_free;

	const char	*spf_result, *spf_domain, *dkim_pass;

	char		 result[64];
	char		 reason[TEST_LINE_MAX];
	int		 nresult;
	char		 reply[TEST_LINE_MAX];
	int		 nreply;
	char		 ar[TEST_LINE_MAX];	/* "result props" of the dmarc entry */
	int		 nar;

	char		 queries[TEST_LINE_MAX];	/* names asked, comma-separated */
	int		 nqueries;
	struct test_pending pend[TEST_QUERIES_MAX];
	int		 npend;
	int		 in_hook;
	int		 nresume;
	int		 resume_in_hook;
	enum fmx_verdict resumed;
	int		 refuse_dns;
};

static struct fmx_ctx test_initlog;
static char test_lastlog[TEST_LINE_MAX];

__attribute__((format(printf, 3, 4)))
static void
test_log(struct fmx_ctx *ctx, enum fmx_log_level level, const char *fmt, ...)
{
	va_list ap;

	(void)ctx;
	(void)level;
	va_start(ap, fmt);
	vsnprintf(test_lastlog, sizeof test_lastlog, fmt, ap);
	va_end(ap);
	if (getenv("TEST_VERBOSE") != NULL)
		fprintf(stderr, "# log: %s\n", test_lastlog);
}

static const char *
test_get(struct fmx_ctx *ctx, const char *key)
{
	if (strcmp(key, "fact.spf.result") == 0)
		return ctx->spf_result;
	if (strcmp(key, "fact.spf.domain") == 0)
		return ctx->spf_domain;
	if (strcmp(key, "fact.dkim.pass") == 0)
		return ctx->dkim_pass;
	if (strcmp(key, "queue.id") == 0)
		return "4QX2";
	return NULL;
}

static void *
test_msg_data(struct fmx_ctx *ctx)
{
	return ctx->data;
}

static void
test_set_msg_data(struct fmx_ctx *ctx, void *data, fmx_free_fn fn)
{
	if (ctx->data != NULL && ctx->data_free != NULL && ctx->data != data)
		ctx->data_free(ctx->data);
	ctx->data = data;
	ctx->data_free = fn;
}

static int
test_set_reply(struct fmx_ctx *ctx, const char *reply)
{
	if ((reply[0] != '4' && reply[0] != '5') || strlen(reply) < 4 ||
	    reply[3] != ' ' || strpbrk(reply, "\r\n") != NULL ||
	    strlen(reply) >= TEST_LINE_MAX)
		return -1;
	snprintf(ctx->reply, sizeof ctx->reply, "%s", reply);
	ctx->nreply++;
	return 0;
}

static int
test_set_result(struct fmx_ctx *ctx, const char *result, const char *reason)
{
	if (reason != NULL && strpbrk(reason, "\r\n") != NULL)
		return -1;
	snprintf(ctx->result, sizeof ctx->result, "%s", result);
	snprintf(ctx->reason, sizeof ctx->reason, "%s", reason ? reason : "");
	ctx->nresult++;
	return 0;
}

static int
test_add_auth_result(struct fmx_ctx *ctx, const char *method,
    const char *result, const char *props)
{
	if (strcmp(method, "dmarc") != 0)
		return -1;
	snprintf(ctx->ar, sizeof ctx->ar, "%s%s%s", result, props ? " " : "",
	    props ? props : "");
	ctx->nar++;
	return 0;
}

static int
test_resume(struct fmx_ctx *ctx, enum fmx_verdict v)
{
	ctx->nresume++;
	ctx->resume_in_hook += ctx->in_hook;
	ctx->resumed = v;
	return 0;
}

static void
test_answer(struct fmx_ctx *ctx, const char *name, fmx_dns_fn fn, void *arg)
{
	static unsigned char pkt[TEST_PKT_MAX];
	int rcode;
	size_t len = test_packet(pkt, name, &rcode);

	if (rcode == TEST_TIMEOUT)
		fn(ctx, arg, -1, NULL, 0);
	else
		fn(ctx, arg, rcode, pkt, len);
}

static int
test_dns_query(struct fmx_ctx *ctx, const char *name, int type, fmx_dns_fn fn,
    void *arg)
{
	struct test_pending *q;

	if (type != 16 || ctx->refuse_dns)
		return -1;
	snprintf(ctx->queries + strlen(ctx->queries),
	    sizeof ctx->queries - strlen(ctx->queries), "%s%s",
	    ctx->nqueries++ ? "," : "", name);
	if (ctx->mode == TEST_SYNC) {
		test_answer(ctx, name, fn, arg);
		return 0;
	}
	if (ctx->npend == TEST_QUERIES_MAX)
		return -1;
	q = &ctx->pend[ctx->npend++];
	q->fn = fn;
	q->arg = arg;
	snprintf(q->name, sizeof q->name, "%s", name);
	return 0;
}

/* Only what the DMARC filter may call; any other call crashes the test. */
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
	.resume = test_resume,
	.dns_query = test_dns_query,
	/* API 1.2: the core's own option getters (filters/filter_opt.c). */
	.option_string = filter_opt_string,
	.option_bool = filter_opt_bool,
	.option_uint = filter_opt_uint,
	.option_list = filter_opt_list,
	.option_check = filter_opt_check,
};

/* What the core does after eom or abort. */
static void
test_end_message(struct fmx_ctx *ctx)
{
	if (ctx->data != NULL && ctx->data_free != NULL)
		ctx->data_free(ctx->data);
	ctx->data = NULL;
	ctx->data_free = NULL;
}

static void
test_reset(struct fmx_ctx *ctx, enum test_mode mode)
{
	test_end_message(ctx);
	memset(ctx, 0, sizeof *ctx);
	ctx->mode = mode;
}

static const char *
test_verdict_name(enum fmx_verdict v)
{
	static const char *const names[FMX_VERDICT_COUNT] = {
		"continue", "accept", "reject", "tempfail", "discard",
		"quarantine", "tag", "pending",
	};

	return (unsigned)v < FMX_VERDICT_COUNT ? names[v] : "bad";
}

/*
 * One message: header fields (name, value pairs, NULL-terminated), then
 * eom; in DEFERRED mode the loop answers queries one by one until the
 * filter resumes.  Returns the final verdict; protocol slips (PENDING in
 * SYNC mode, resume from inside a hook, two resumes, a query left
 * unanswered) are counted in *bad.
 */
static enum fmx_verdict
test_message(const struct fmx_filter *f, void *inst, struct fmx_ctx *ctx,
    const char *const *fields, int *bad)
{
	enum fmx_verdict v;
	struct test_pending q;
	size_t i;

	*bad = 0;
	for (i = 0; fields[i] != NULL; i += 2) {
		ctx->in_hook = 1;
		v = f->on_header(inst, ctx, fields[i], fields[i + 1]);
		ctx->in_hook = 0;
		if (v != FMX_CONTINUE)
			return v;
	}
	ctx->in_hook = 1;
	v = f->on_eom(inst, ctx);
	ctx->in_hook = 0;
	if (v == FMX_PENDING) {
		if (ctx->mode == TEST_SYNC)
			(*bad)++;
		while (ctx->npend > 0 && ctx->nresume == 0) {
			q = ctx->pend[0];
			memmove(ctx->pend, ctx->pend + 1,
			    (size_t)(--ctx->npend) * sizeof ctx->pend[0]);
			test_answer(ctx, q.name, q.fn, q.arg);
		}
		if (ctx->nresume != 1)
			(*bad)++;
		v = ctx->resumed;
	} else if (ctx->nresume != 0)
		(*bad)++;
	if (ctx->resume_in_hook || ctx->npend != 0)
		(*bad)++;
	return v;
}

/* ---------------------------------------------------------------- */
/* Tables */

/* s for a TAP line: control bytes as \r, \n, \xNN. */
static void
test_visible(char *out, size_t outlen, const char *s)
{
	size_t n = 0;

	for (; *s != '\0' && n + 5 < outlen; s++) {
		if (*s == '\r')
			n += (size_t)snprintf(out + n, outlen - n, "\\r");
		else if (*s == '\n')
			n += (size_t)snprintf(out + n, outlen - n, "\\n");
		else if (*s == '#')
			n += (size_t)snprintf(out + n, outlen - n, "\\#");
		else if ((unsigned char)*s < 0x20 || *s == 0x7f)
			n += (size_t)snprintf(out + n, outlen - n, "\\x%02x",
			    (unsigned char)*s);
		else
			out[n++] = *s;
	}
	out[n] = '\0';
}

static void
test_from_table(void)
{
	static const struct {
		const char	*value;
		const char	*domain;	/* NULL: an error */
		const char	*err;		/* part of the error, or NULL */
	} t[] = {
		{ "alice@example.com", "example.com", NULL },
		{ "Alice <alice@example.com>", "example.com", NULL },
		{ "<alice@Example.COM>", "example.com", NULL },
		{ "\"Alice Liddell\" <alice@example.com>", "example.com", NULL },
		{ "\"evil@x.com\" <a@b.com>", "b.com", NULL },
		{ "\"a@b.com\" <c@x.com>", "x.com", NULL },
		{ "evil@x.com <a@b.com>", NULL, "unexpected text" },
		{ "a@b.com <evil@x.com>", NULL, NULL },
		{ "<a@b.com> evil@x.com", NULL, "unexpected text" },
		{ "Alice (evil@x.com) <a@b.com>", "b.com", NULL },
		{ "a@b.com (evil@x.com)", "b.com", NULL },
		{ "(comment (nested (deeper))) a@b.com", "b.com", NULL },
		{ "Alice\r\n <alice@EXAMPLE.com>", "example.com", NULL },
		{ "Alice\r\n\t<alice\r\n @example.com>", "example.com", NULL },
		{ "\"quoted \\\" <x@y.z>\" <a@b.com>", "b.com", NULL },
		{ "\"john smith\"@example.com", "example.com", NULL },
		{ "john smith@example.com", NULL, NULL },
		{ "first.last@sub.example.com", "sub.example.com", NULL },
		{ "a@b.com, c@B.com", "b.com", NULL },
		{ "a@b.com, c@d.com", NULL, "different domains" },
		{ "Alice <a@b.com>, Eve <e@evil.example>", NULL, "different domains" },
		{ "a@b.com,, ,c@b.com", "b.com", NULL },
		{ "friends: a@b.com, Carol <c@b.com>;", "b.com", NULL },
		{ "friends: a@b.com, c@d.com;", NULL, "different domains" },
		{ "undisclosed-recipients:;", NULL, "no address" },
		{ "friends: a@b.com", NULL, "unterminated group" },
		{ "g1: g2: a@b.com;;", NULL, NULL },
		{ "<@relay.example,@r2.example:a@b.com>", "b.com", NULL },
		{ "<@relay.example:a@b.com>", "b.com", NULL },
		{ "<>", NULL, "empty address" },
		{ "", NULL, "no address" },
		{ "   ", NULL, "no address" },
		{ "(only a comment)", NULL, "no address" },
		{ "alice", NULL, NULL },
		{ "alice@", NULL, NULL },
		{ "@example.com", NULL, NULL },
		{ "a@[192.0.2.1]", NULL, "address literal" },
		{ "a@example.com.", "example.com", NULL },
		{ "a@example..com", NULL, NULL },
		{ "a@.example.com", NULL, NULL },
		{ "a@exa mple.com", NULL, NULL },
		{ "a@b.com; c@d.com", NULL, NULL },
		{ "a@b.com>", NULL, NULL },
		{ "<a@b.com", NULL, "unterminated angle" },
		{ "Alice (unterminated <a@b.com>", NULL, "unterminated comment" },
		{ "\"unterminated <a@b.com>", NULL, "unterminated quoted" },
		{ "a@b.com)", NULL, "invalid character" },
		{ "a@b.com\\", NULL, "invalid character" },
		{ "a@b\x01.com", NULL, "invalid character" },
		{ "=?utf-8?q?evil@x.com?= <a@b.com>", NULL, NULL },
		{ "=?utf-8?q?Alice?= <a@b.com>", "b.com", NULL },
		{ "a@ex!mple.com", NULL, "invalid From domain" },
		{ "a@b\xc3\xa9.com", NULL, "non-ASCII" },
		{ "\xc3\x89lise <a@b.com>", "b.com", NULL },
		{ "a@\"b.com\"", NULL, NULL },
		{ "a@b.com, <>", NULL, "empty address" },
	};
	char domain[DMARC_DOMAIN_MAX + 1], big[1200], shown[256];
	const char *err;
	size_t i;
	int r;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		err = NULL;
		strcpy(domain, "?");
		r = dmarc_from_parse(t[i].value, domain, sizeof domain, &err);
		test_visible(shown, sizeof shown, t[i].value);
		if (t[i].domain != NULL)
			ok(r == 0 && strcmp(domain, t[i].domain) == 0,
			    "From %s: domain %s (got %s, err %s)", shown,
			    t[i].domain, r == 0 ? domain : "-", err ? err : "-");
		else
			ok(r == -1 && err != NULL && (t[i].err == NULL ||
			    strstr(err, t[i].err) != NULL),
			    "From %s: error%s%s (got %s)", shown,
			    t[i].err ? " " : "", t[i].err ? t[i].err : "",
			    r == 0 ? domain : err);
	}

	/* Deep comment nesting: counted, not recursed. */
	memset(big, 0, sizeof big);
	memset(big, '(', 500);
	memset(big + 500, ')', 500);
	strcat(big, " a@b.com");
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == 0 && strcmp(domain, "b.com") == 0, "From: 500 nested comments parse");
	big[999] = ' ';
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == -1, "From: one ')' short is an unterminated comment");

	/* Domain length limits: _dmarc. + domain must fit in 253. */
	snprintf(big, sizeof big, "a@%s.%s.%s.%.50s.com",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
	    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
	    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == 0 && strlen(domain) == DMARC_AUTHOR_MAX,
	    "From: a %zu-byte domain is accepted", DMARC_AUTHOR_MAX);
	snprintf(big, sizeof big, "a@x%s.%s.%s.%.48s.com",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
	    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
	    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == -1, "From: a 64-byte label is refused");
	snprintf(big, sizeof big, "a@%s.%s.%s.%.51s.com",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
	    "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
	    "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd");
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == -1, "From: a %zu-byte domain is refused (_dmarc. would not fit)",
	    DMARC_AUTHOR_MAX + 1);
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	memcpy(big, "x@", 2);
	for (i = 3; i < sizeof big - 1; i += 40)
		big[i] = '.';
	r = dmarc_from_parse(big, domain, sizeof domain, &err);
	ok(r == -1, "From: a 1200-byte domain is refused, no overflow");
}

static void
test_record_table(void)
{
	static const struct {
		const char		*txt;
		int			 is_dmarc;
		enum dmarc_policy	 p, sp;
		unsigned		 pct;
		int			 adkim_s, aspf_s, rua;
	} t[] = {
		{ "v=DMARC1; p=reject", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1;p=none", 1, DMARC_P_NONE, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=quarantine; sp=reject; pct=20; adkim=s; aspf=s", 1,
		    DMARC_P_QUARANTINE, DMARC_P_REJECT, 20, 1, 1, 0 },
		{ "v=DMARC1; p=reject; adkim=r; aspf=R", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; adkim=x; aspf=strict", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=REJECT; SP=None", 1, DMARC_P_REJECT, DMARC_P_NONE, 100, 0, 0, 0 },
		{ "v = DMARC1 ; p = reject ;", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=bogus", 1, DMARC_P_INVALID, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1;", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; rua=mailto:a@example.com", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 1 },
		{ "v=DMARC1; rua=mailto:a@example.com!10m, https://r.example/x", 1,
		    DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 1 },
		{ "v=DMARC1; rua=a@example.com", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; rua=", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; rua=:x", 1, DMARC_P_UNSET, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=0", 1, DMARC_P_REJECT, DMARC_P_UNSET, 0, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=101", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=-1", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=0050", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=050", 1, DMARC_P_REJECT, DMARC_P_UNSET, 50, 0, 0, 0 },
		{ "v=DMARC1; p=reject; pct=", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; p=none", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1; p=reject; garbage; x=y; fo=1", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
		{ "v=DMARC1 p=reject", 0, 0, 0, 0, 0, 0, 0 },
		{ "v=dmarc1; p=reject", 0, 0, 0, 0, 0, 0, 0 },
		{ "v=DMARC10; p=reject", 0, 0, 0, 0, 0, 0, 0 },
		{ "p=reject; v=DMARC1", 0, 0, 0, 0, 0, 0, 0 },
		{ "; v=DMARC1; p=reject", 0, 0, 0, 0, 0, 0, 0 },
		{ "v=spf1 -all", 0, 0, 0, 0, 0, 0, 0 },
		{ "", 0, 0, 0, 0, 0, 0, 0 },
		{ "V=DMARC1; p=reject", 1, DMARC_P_REJECT, DMARC_P_UNSET, 100, 0, 0, 0 },
	};
	struct dmarc_record rec;
	size_t i;
	int r;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		r = dmarc_record_parse(t[i].txt, strlen(t[i].txt), &rec);
		if (!t[i].is_dmarc) {
			ok(r == 0, "record \"%s\": not a DMARC record", t[i].txt);
			continue;
		}
		ok(r == 1 && rec.p == t[i].p && rec.sp == t[i].sp &&
		    rec.pct == t[i].pct && rec.adkim_strict == t[i].adkim_s &&
		    rec.aspf_strict == t[i].aspf_s && rec.has_rua == t[i].rua,
		    "record \"%s\": p=%s sp=%s pct=%u adkim=%c aspf=%c rua=%d "
		    "(got %d p=%s sp=%s pct=%u adkim=%c aspf=%c rua=%d)", t[i].txt,
		    dmarc_policy_names[t[i].p], dmarc_policy_names[t[i].sp], t[i].pct,
		    t[i].adkim_s ? 's' : 'r', t[i].aspf_s ? 's' : 'r', t[i].rua, r,
		    dmarc_policy_names[rec.p], dmarc_policy_names[rec.sp], rec.pct,
		    rec.adkim_strict ? 's' : 'r', rec.aspf_strict ? 's' : 'r',
		    rec.has_rua);
	}
	/* A NUL inside the record is just a byte. */
	r = dmarc_record_parse("v=DMARC1; p=reject\0; p=none", 27, &rec);
	ok(r == 1 && rec.p == DMARC_P_INVALID, "record with a NUL byte: read by length");
}

static void
test_psl_table(const struct dmarc_inst *di)
{
	static const struct {
		const char	*name, *org;
	} t[] = {
		{ "example.com", "example.com" },
		{ "mail.example.com", "example.com" },
		{ "a.b.c.example.com", "example.com" },
		{ "mail.example.co.uk", "example.co.uk" },
		{ "example.co.uk", "example.co.uk" },
		{ "co.uk", "co.uk" },
		{ "com", "com" },
		/* *.kawasaki.jp is a wildcard rule, city.kawasaki.jp an exception */
		{ "x.kawasaki.jp", "x.kawasaki.jp" },
		{ "b.x.kawasaki.jp", "b.x.kawasaki.jp" },
		{ "a.b.x.kawasaki.jp", "b.x.kawasaki.jp" },
		{ "city.kawasaki.jp", "city.kawasaki.jp" },
		{ "mail.city.kawasaki.jp", "city.kawasaki.jp" },
		{ "user.github.io", "user.github.io" },
		{ "mail.reject.example", "reject.example" },
	};
	static const struct {
		const char	*id, *author;
		int		 strict, want;
	} a[] = {
		{ "example.com", "example.com", 1, 1 },
		{ "EXAMPLE.Com.", "example.com", 1, 1 },
		{ "bounce.example.com", "example.com", 1, 0 },	/* libopendmarc 1.4.2 says 1 */
		{ "bounce.example.com", "example.com", 0, 1 },
		{ "example.com", "mail.example.com", 1, 0 },
		{ "example.com", "mail.example.com", 0, 1 },
		{ "a.example.com", "b.example.com", 0, 1 },
		{ "example.net", "example.com", 0, 0 },
		{ "evilexample.com", "example.com", 0, 0 },
		{ "other.co.uk", "example.co.uk", 0, 0 },
		{ "bounce.example.co.uk", "example.co.uk", 0, 1 },
		{ "co.uk", "example.co.uk", 0, 0 },
		{ "c.x.kawasaki.jp", "b.x.kawasaki.jp", 0, 0 },	/* libopendmarc says 1 */
		{ "m.b.x.kawasaki.jp", "b.x.kawasaki.jp", 0, 1 },
		{ "kawasaki.jp", "b.x.kawasaki.jp", 0, 0 },
		{ "x.city.kawasaki.jp", "y.city.kawasaki.jp", 0, 1 },
		{ "a.github.io", "b.github.io", 0, 0 },
		{ "bad domain", "example.com", 0, 0 },
		{ "", "example.com", 0, 0 },
	};
	char org[DMARC_DOMAIN_MAX + 1];
	size_t i;

	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		dmarc_org_domain(di, t[i].name, org, sizeof org);
		ok(strcmp(org, t[i].org) == 0, "organizational domain of %s: %s (got %s)",
		    t[i].name, t[i].org, org);
	}
	for (i = 0; i < sizeof a / sizeof a[0]; i++)
		ok(dmarc_aligned(di, a[i].id, strlen(a[i].id), a[i].author,
		    a[i].strict) == a[i].want, "%s %s %s under %s alignment",
		    a[i].id, a[i].want ? "aligns with" : "does not align with",
		    a[i].author, a[i].strict ? "strict" : "relaxed");
}

static void
test_packet_table(void)
{
	unsigned char p[TEST_PKT_MAX];
	struct dmarc_record rec;
	size_t len, cut;
	int rcode, bad = 0;

	len = test_packet(p, "_dmarc.example.com", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 1 && rec.p == DMARC_P_REJECT,
	    "packet: one TXT record found");
	for (cut = 0; cut < len; cut++)
		if (dmarc_dns_scan(p, cut, &rec) == 1)
			bad++;
	ok(bad == 0, "packet: every truncation is malformed or empty, never a record");
	ok(dmarc_dns_scan(NULL, 0, &rec) == -1, "packet: none at all is malformed");
	len = test_packet(p, "_dmarc.multi.example", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 2, "packet: two DMARC records counted");
	len = test_packet(p, "_dmarc.mixed.example", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 1 && rec.p == DMARC_P_REJECT,
	    "packet: the SPF record beside it is discarded");
	len = test_packet(p, "_dmarc.cname.example", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 1 && rec.p == DMARC_P_QUARANTINE,
	    "packet: CNAME in front is skipped");
	len = test_packet(p, "_dmarc.split.example", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 1 && rec.p == DMARC_P_REJECT,
	    "packet: character-strings are joined");
	len = test_packet(p, "_dmarc.long.example", &rcode);
	ok(dmarc_dns_scan(p, len, &rec) == 1 && rec.too_long,
	    "packet: a record over %d bytes is flagged", DMARC_RECORD_MAX);
	/* A label length with the reserved 01/10 bits set. */
	len = test_packet(p, "_dmarc.example.com", &rcode);
	p[12] = 0x47;
	ok(dmarc_dns_scan(p, len, &rec) == -1, "packet: reserved label type is malformed");
	/* A question count far beyond the packet. */
	len = test_packet(p, "_dmarc.example.com", &rcode);
	p[5] = 200;
	ok(dmarc_dns_scan(p, len, &rec) == -1, "packet: qdcount past the end is malformed");
	len = test_packet(p, "_dmarc.example.com", &rcode);
	p[7] = 9;
	ok(dmarc_dns_scan(p, len, &rec) == -1, "packet: ancount past the end is malformed");
}

/* ---------------------------------------------------------------- */
/* Messages through the hooks */

struct test_case {
	const char		*name;
	const char		*from;		/* NULL: no From field */
	const char		*from2;		/* a second From field */
	const char		*spf_result, *spf_domain, *dkim;
	enum fmx_verdict	 verdict;
	const char		*result;
	const char		*ar;		/* "fail header.from=x" */
	const char		*queries;
	const char		*reply;		/* NULL: none expected */
};

#define AR(r, d)	r " header.from=" d
#define Q(d)		"_dmarc." d
#define REJ(d)		"550 5.7.1 Email rejected per DMARC policy for " d

static const struct test_case test_cases[] = {
	/* pass */
	{ "pass via SPF", "Alice <alice@example.com>", NULL, "pass", "example.com", NULL,
	    FMX_CONTINUE, "pass", AR("pass", "example.com"), Q("example.com"), NULL },
	{ "pass via relaxed SPF (bounce subdomain)", "alice@example.com", NULL, "pass",
	    "bounce.example.com", NULL, FMX_CONTINUE, "pass", AR("pass", "example.com"),
	    Q("example.com"), NULL },
	{ "pass via DKIM", "alice@example.com", NULL, NULL, NULL, "other.example example.com",
	    FMX_CONTINUE, "pass", AR("pass", "example.com"), Q("example.com"), NULL },
	{ "pass via relaxed DKIM (d= subdomain)", "alice@example.com", NULL, "fail",
	    "evil.example", "news.example.com", FMX_CONTINUE, "pass", AR("pass", "example.com"),
	    Q("example.com"), NULL },
	{ "pass via DKIM, From subdomain, d= parent", "alice@mail.example.com", NULL,
	    NULL, NULL, "example.com", FMX_CONTINUE, "pass", AR("pass", "mail.example.com"),
	    Q("mail.example.com") "," Q("example.com"), NULL },
	/* fail */
	{ "SPF pass for an unrelated domain: p=reject", "alice@example.com", NULL, "pass",
	    "evil.example", "evil.example", FMX_REJECT, "reject", AR("fail", "example.com"),
	    Q("example.com"), REJ("example.com") },
	{ "SPF fail for the domain itself: p=reject", "alice@example.com", NULL, "fail",
	    "example.com", NULL, FMX_REJECT, "reject", AR("fail", "example.com"),
	    Q("example.com"), REJ("example.com") },
	{ "SPF softfail is no pass", "alice@example.com", NULL, "softfail",
	    "example.com", NULL, FMX_REJECT, "reject", AR("fail", "example.com"),
	    Q("example.com"), REJ("example.com") },
	{ "no SPF or DKIM facts at all: p=reject", "alice@example.com", NULL, NULL, NULL,
	    NULL, FMX_REJECT, "reject", AR("fail", "example.com"), Q("example.com"),
	    REJ("example.com") },
	{ "look-alike evilexample.com does not align", "alice@example.com", NULL, "pass",
	    "evilexample.com", "evilexample.com", FMX_REJECT, "reject",
	    AR("fail", "example.com"), Q("example.com"), REJ("example.com") },
	{ "p=quarantine", "a@quar.example", NULL, NULL, NULL, NULL, FMX_QUARANTINE,
	    "quarantine", AR("fail", "quar.example"), Q("quar.example"), NULL },
	{ "p=none: fail, relayed", "a@none.example", NULL, NULL, NULL, NULL, FMX_CONTINUE,
	    "fail", AR("fail", "none.example"), Q("none.example"), NULL },
	/* strict */
	{ "aspf=s: bounce.strict.example does not align with strict.example",
	    "a@strict.example", NULL, "pass", "bounce.strict.example", NULL, FMX_REJECT,
	    "reject", AR("fail", "strict.example"), Q("strict.example"), REJ("strict.example") },
	{ "aspf=s: the same domain aligns", "a@strict.example", NULL, "pass",
	    "STRICT.example", NULL, FMX_CONTINUE, "pass", AR("pass", "strict.example"),
	    Q("strict.example"), NULL },
	{ "adkim=s: d=mail.strict.example does not align", "a@strict.example", NULL, NULL,
	    NULL, "mail.strict.example", FMX_REJECT, "reject", AR("fail", "strict.example"),
	    Q("strict.example"), REJ("strict.example") },
	{ "adkim=s: d=strict.example aligns", "a@strict.example", NULL, NULL, NULL,
	    "mail.strict.example strict.example", FMX_CONTINUE, "pass",
	    AR("pass", "strict.example"), Q("strict.example"), NULL },
	/* pct */
	{ "pct=0, p=reject: downgraded to quarantine", "a@pct0.example", NULL, NULL, NULL,
	    NULL, FMX_QUARANTINE, "quarantine", AR("fail", "pct0.example"), Q("pct0.example"),
	    NULL },
	{ "pct=0, p=quarantine: downgraded to none", "a@pct0q.example", NULL, NULL, NULL,
	    NULL, FMX_CONTINUE, "fail", AR("fail", "pct0q.example"), Q("pct0q.example"), NULL },
	{ "pct=0 does not touch a pass", "a@pct0.example", NULL, "pass", "pct0.example",
	    NULL, FMX_CONTINUE, "pass", AR("pass", "pct0.example"), Q("pct0.example"), NULL },
	{ "pct=100, p=reject: rejected", "a@pct100.example", NULL, NULL, NULL, NULL,
	    FMX_REJECT, "reject", AR("fail", "pct100.example"), Q("pct100.example"),
	    REJ("pct100.example") },
	{ "pct=abc: default 100", "a@badpct.example", NULL, NULL, NULL, NULL, FMX_REJECT,
	    "reject", AR("fail", "badpct.example"), Q("badpct.example"), REJ("badpct.example") },
	/* subdomains and the organizational domain */
	{ "sp=quarantine for mail.sp.example via _dmarc.sp.example", "a@mail.sp.example",
	    NULL, NULL, NULL, NULL, FMX_QUARANTINE, "quarantine", AR("fail", "mail.sp.example"),
	    Q("mail.sp.example") "," Q("sp.example"), NULL },
	{ "sp= not used for the organizational domain itself", "a@sp.example", NULL, NULL,
	    NULL, NULL, FMX_REJECT, "reject", AR("fail", "sp.example"), Q("sp.example"),
	    REJ("sp.example") },
	{ "a subdomain's own record wins: p=none", "a@own.sp.example", NULL, NULL, NULL,
	    NULL, FMX_CONTINUE, "fail", AR("fail", "own.sp.example"), Q("own.sp.example"),
	    NULL },
	{ "NODATA at the subdomain: fallback", "a@nodata.sp.example", NULL, NULL, NULL,
	    NULL, FMX_QUARANTINE, "quarantine", AR("fail", "nodata.sp.example"),
	    Q("nodata.sp.example") "," Q("sp.example"), NULL },
	{ "only a non-DMARC TXT at the subdomain: fallback", "a@spf.sp.example", NULL,
	    NULL, NULL, NULL, FMX_QUARANTINE, "quarantine", AR("fail", "spf.sp.example"),
	    Q("spf.sp.example") "," Q("sp.example"), NULL },
	{ "deep subdomain falls back to the organizational domain, not the parent",
	    "a@x.y.sp.example", NULL, NULL, NULL, NULL, FMX_QUARANTINE, "quarantine",
	    AR("fail", "x.y.sp.example"), Q("x.y.sp.example") "," Q("sp.example"), NULL },
	{ "sp=none for a subdomain", "a@m.spnone.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "fail", AR("fail", "m.spnone.example"),
	    Q("m.spnone.example") "," Q("spnone.example"), NULL },
	{ "no sp=: p=reject applies to subdomains", "a@sub.nosp.example", NULL, NULL, NULL,
	    NULL, FMX_REJECT, "reject", AR("fail", "sub.nosp.example"),
	    Q("sub.nosp.example") "," Q("nosp.example"), REJ("sub.nosp.example") },
	{ "subdomain passes via SPF of a sibling (relaxed)", "a@sub.nosp.example", NULL,
	    "pass", "bounce.nosp.example", NULL, FMX_CONTINUE, "pass",
	    AR("pass", "sub.nosp.example"), Q("sub.nosp.example") "," Q("nosp.example"), NULL },
	{ "no record anywhere: none", "a@example.org", NULL, NULL, NULL, NULL, FMX_CONTINUE,
	    "none", AR("none", "example.org"), Q("example.org"), NULL },
	{ "no record at subdomain or organizational domain: none", "a@mail.example.org",
	    NULL, NULL, NULL, NULL, FMX_CONTINUE, "none", AR("none", "mail.example.org"),
	    Q("mail.example.org") "," Q("example.org"), NULL },
	{ "no record but aligned: still none", "a@example.org", NULL, "pass",
	    "example.org", NULL, FMX_CONTINUE, "none", AR("none", "example.org"),
	    Q("example.org"), NULL },
	/* Public Suffix List */
	{ "co.uk: mail.example.co.uk -> _dmarc.example.co.uk", "a@mail.example.co.uk",
	    NULL, "pass", "other.co.uk", NULL, FMX_REJECT, "reject",
	    AR("fail", "mail.example.co.uk"), Q("mail.example.co.uk") "," Q("example.co.uk"),
	    REJ("mail.example.co.uk") },
	{ "co.uk: bounce.example.co.uk aligns with mail.example.co.uk", "a@mail.example.co.uk",
	    NULL, "pass", "bounce.example.co.uk", NULL, FMX_CONTINUE, "pass",
	    AR("pass", "mail.example.co.uk"), Q("mail.example.co.uk") "," Q("example.co.uk"),
	    NULL },
	{ "wildcard: a.b.x.kawasaki.jp -> _dmarc.b.x.kawasaki.jp", "a@a.b.x.kawasaki.jp",
	    NULL, "pass", "c.x.kawasaki.jp", NULL, FMX_REJECT, "reject",
	    AR("fail", "a.b.x.kawasaki.jp"), Q("a.b.x.kawasaki.jp") "," Q("b.x.kawasaki.jp"),
	    REJ("a.b.x.kawasaki.jp") },
	{ "wildcard: x.kawasaki.jp is a public suffix, no fallback", "a@x.kawasaki.jp", NULL,
	    NULL, NULL, NULL, FMX_CONTINUE, "fail", AR("fail", "x.kawasaki.jp"),
	    Q("x.kawasaki.jp"), NULL },
	{ "wildcard: y.kawasaki.jp, no record: no fallback to kawasaki.jp", "a@y.kawasaki.jp",
	    NULL, NULL, NULL, NULL, FMX_CONTINUE, "none", AR("none", "y.kawasaki.jp"),
	    Q("y.kawasaki.jp"), NULL },
	{ "co.uk as From domain: no fallback", "a@co.uk", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "fail", AR("fail", "co.uk"), Q("co.uk"), NULL },
	{ "wildcard exception: mail.city.kawasaki.jp -> _dmarc.city.kawasaki.jp",
	    "a@mail.city.kawasaki.jp", NULL, NULL, NULL, NULL, FMX_QUARANTINE, "quarantine",
	    AR("fail", "mail.city.kawasaki.jp"),
	    Q("mail.city.kawasaki.jp") "," Q("city.kawasaki.jp"), NULL },
	/* From problems: permerror, no DNS */
	{ "two From fields", "a@example.com", "b@evil.example", NULL, NULL, NULL, FMX_REJECT,
	    "permerror", "permerror", "", "550 5.7.1 Email rejected: multiple From header fields" },
	{ "two identical From fields", "a@example.com", "a@example.com", "pass", "example.com",
	    NULL, FMX_REJECT, "permerror", "permerror", "",
	    "550 5.7.1 Email rejected: multiple From header fields" },
	{ "no From field", NULL, NULL, "pass", "example.com", NULL, FMX_REJECT, "permerror",
	    "permerror", "", "550 5.7.1 Email rejected: no From header field" },
	{ "From with mailboxes in two domains", "a@example.com, b@evil.example", NULL,
	    NULL, NULL, NULL, FMX_REJECT, "permerror", "permerror", "",
	    "550 5.7.1 Email rejected: From has mailboxes in different domains" },
	{ "From with two mailboxes in one domain", "a@example.com, b@EXAMPLE.com", NULL,
	    "pass", "example.com", NULL, FMX_CONTINUE, "pass", AR("pass", "example.com"),
	    Q("example.com"), NULL },
	{ "empty From", "", NULL, NULL, NULL, NULL, FMX_REJECT, "permerror", "permerror",
	    "", "550 5.7.1 Email rejected: no address in From" },
	{ "unparseable From", "evil@x.com <a@b.com>", NULL, NULL, NULL, NULL, FMX_REJECT,
	    "permerror", "permerror", "", NULL },
	{ "display name that looks like an address", "\"evil@x.com\" <a@b.com>", NULL,
	    "pass", "x.com", "x.com", FMX_REJECT, "reject", AR("fail", "b.com"), Q("b.com"),
	    REJ("b.com") },
	{ "address in a comment", "a@b.com (a@x.com)", NULL, "pass", "x.com", NULL,
	    FMX_REJECT, "reject", AR("fail", "b.com"), Q("b.com"), REJ("b.com") },
	{ "group syntax", "team: a@b.com;", NULL, NULL, NULL, "b.com", FMX_CONTINUE, "pass",
	    AR("pass", "b.com"), Q("b.com"), NULL },
	{ "address literal", "a@[192.0.2.1]", NULL, NULL, NULL, NULL, FMX_REJECT,
	    "permerror", "permerror", "", "550 5.7.1 Email rejected: address literal as From domain" },
	/* DNS errors */
	{ "SERVFAIL: temperror", "a@servfail.example", NULL, NULL, NULL, NULL, FMX_CONTINUE,
	    "temperror", AR("temperror", "servfail.example"), Q("servfail.example"), NULL },
	{ "timeout: temperror", "a@timeout.example", NULL, NULL, NULL, NULL, FMX_CONTINUE,
	    "temperror", AR("temperror", "timeout.example"), Q("timeout.example"), NULL },
	{ "SERVFAIL at the organizational domain: temperror", "a@sub.orgfail.example", NULL,
	    NULL, NULL, NULL, FMX_CONTINUE, "temperror", AR("temperror", "sub.orgfail.example"),
	    Q("sub.orgfail.example") "," Q("orgfail.example"), NULL },
	{ "malformed answer: temperror", "a@malformed.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "temperror", AR("temperror", "malformed.example"),
	    Q("malformed.example"), NULL },
	/* records */
	{ "invalid p=, no rua: ignored", "a@badp.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "badp.example"), Q("badp.example"), NULL },
	{ "invalid p= with rua: p=none", "a@badprua.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "fail", AR("fail", "badprua.example"), Q("badprua.example"), NULL },
	{ "invalid p= with rua, aligned: pass", "a@badprua.example", NULL, "pass",
	    "badprua.example", NULL, FMX_CONTINUE, "pass", AR("pass", "badprua.example"),
	    Q("badprua.example"), NULL },
	{ "no p= with rua: p=none", "a@nop.example", NULL, NULL, NULL, NULL, FMX_CONTINUE,
	    "fail", AR("fail", "nop.example"), Q("nop.example"), NULL },
	{ "no p=, no rua: ignored", "a@nopnorua.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "nopnorua.example"), Q("nopnorua.example"), NULL },
	{ "no p=, invalid rua: ignored", "a@nopbadrua.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "nopbadrua.example"), Q("nopbadrua.example"), NULL },
	{ "invalid sp=, no rua: ignored", "a@badsp.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "badsp.example"), Q("badsp.example"), NULL },
	{ "\"v=DMARC1 p=reject\" (no ';') is no DMARC record", "a@nosemi.example", NULL,
	    NULL, NULL, NULL, FMX_CONTINUE, "none", AR("none", "nosemi.example"),
	    Q("nosemi.example"), NULL },
	{ "v=dmarc1 is no DMARC record", "a@lower.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "lower.example"), Q("lower.example"), NULL },
	{ "v= not first: no DMARC record", "a@notfirst.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "notfirst.example"), Q("notfirst.example"), NULL },
	{ "blanks and case in tags and values", "a@case.example", NULL, NULL, NULL, NULL,
	    FMX_REJECT, "reject", AR("fail", "case.example"), Q("case.example"),
	    REJ("case.example") },
	{ "two DMARC records: no policy", "a@multi.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "multi.example"), Q("multi.example"), NULL },
	{ "SPF record beside the DMARC record", "a@mixed.example", NULL, NULL, NULL, NULL,
	    FMX_REJECT, "reject", AR("fail", "mixed.example"), Q("mixed.example"),
	    REJ("mixed.example") },
	{ "record split into character-strings", "a@split.example", NULL, NULL, NULL, NULL,
	    FMX_REJECT, "reject", AR("fail", "split.example"), Q("split.example"),
	    REJ("split.example") },
	{ "record behind a CNAME", "a@cname.example", NULL, NULL, NULL, NULL,
	    FMX_QUARANTINE, "quarantine", AR("fail", "cname.example"), Q("cname.example"),
	    NULL },
	{ "over-long record: ignored", "a@long.example", NULL, NULL, NULL, NULL,
	    FMX_CONTINUE, "none", AR("none", "long.example"), Q("long.example"), NULL },
};

static void
test_one(const struct fmx_filter *f, void *inst, const struct test_case *tc,
    enum test_mode mode)
{
	const char *fields[8];
	const char *m = mode == TEST_SYNC ? "sync" : "deferred";
	struct fmx_ctx ctx;
	enum fmx_verdict v;
	size_t n = 0;
	int bad;

	memset(&ctx, 0, sizeof ctx);
	test_reset(&ctx, mode);
	ctx.spf_result = tc->spf_result;
	ctx.spf_domain = tc->spf_domain;
	ctx.dkim_pass = tc->dkim;
	fields[n++] = "Subject";
	fields[n++] = "test";
	if (tc->from != NULL) {
		fields[n++] = "From";
		fields[n++] = tc->from;
	}
	if (tc->from2 != NULL) {
		fields[n++] = "FROM";
		fields[n++] = tc->from2;
	}
	fields[n] = NULL;
	v = test_message(f, inst, &ctx, fields, &bad);
	ok(v == tc->verdict && bad == 0 && strcmp(ctx.result, tc->result) == 0 &&
	    ctx.nresult == 1, "%s (%s): %s, result %s (got %s, %s, reason \"%s\"%s)",
	    tc->name, m, test_verdict_name(tc->verdict), tc->result,
	    test_verdict_name(v), ctx.result, ctx.reason,
	    bad ? ", async protocol broken" : "");
	ok(ctx.nar == 1 && strcmp(ctx.ar, tc->ar) == 0 && strcmp(ctx.queries, tc->queries) == 0,
	    "%s (%s): dmarc=%s, asked [%s] (got dmarc=%s, asked [%s])", tc->name, m,
	    tc->ar, tc->queries, ctx.ar, ctx.queries);
	if (tc->reply != NULL)
		ok(ctx.nreply == 1 && strcmp(ctx.reply, tc->reply) == 0,
		    "%s (%s): reply \"%s\" (got \"%s\")", tc->name, m, tc->reply, ctx.reply);
	else if (v != FMX_REJECT)
		ok(ctx.nreply == 0, "%s (%s): no reply set", tc->name, m);
	test_end_message(&ctx);
}

/* A message with given Message-ID from pct50.example, failing. */
static enum fmx_verdict
test_pct_message(const struct fmx_filter *f, void *inst, const char *msgid,
    enum test_mode mode, char *result, size_t rlen)
{
	const char *fields[] = { "From", "a@pct50.example", "Message-ID", msgid, NULL };
	struct fmx_ctx ctx;
	enum fmx_verdict v;
	int bad;

	memset(&ctx, 0, sizeof ctx);
	test_reset(&ctx, mode);
	v = test_message(f, inst, &ctx, fields, &bad);
	snprintf(result, rlen, "%s", ctx.result);
	test_end_message(&ctx);
	return bad ? FMX_VERDICT_COUNT : v;
}

/* The sample dmarc_pct_sample() takes for a message with this id. */
static unsigned
test_sample(const struct dmarc_inst *di, const char *msgid)
{
	struct dmarc_msg st;

	memset(&st, 0, sizeof st);
	dmarc_copy_msgid(st.msgid, msgid);
	return dmarc_pct_sample(di, &st);
}

static void
test_pct(const struct fmx_filter *f)
{
	const char *seeded[] = { "pct_seed=unit-test" };
	const char *off[] = { "honor_pct=no" };
	void *inst, *inst2;
	char id[64], low[64] = "", high[64] = "", result[64];
	unsigned s, below = 0, i, again = 1;
	enum fmx_verdict v;
	int m;

	if (f->init(&test_api, seeded, 1, &inst) != 0) {
		ok(0, "init with pct_seed");
		return;
	}
	for (i = 0; i < 2000; i++) {
		snprintf(id, sizeof id, "<m%u@pct50.example>", i);
		s = test_sample(inst, id);
		again &= s == test_sample(inst, id);
		if (s < 50) {
			below++;
			if (low[0] == '\0')
				snprintf(low, sizeof low, "%s", id);
		} else if (high[0] == '\0')
			snprintf(high, sizeof high, "%s", id);
	}
	ok(again, "pct_seed: the sample is a function of the Message-ID");
	ok(below > 850 && below < 1150, "pct_seed: about half of 2000 ids below 50 (%u)",
	    below);
	ok(test_sample(inst, "<m1@x>") == test_sample(inst, " <m1@x>\r\n "),
	    "pct_seed: blanks and folds around the Message-ID do not count");
	for (m = TEST_SYNC; m <= TEST_DEFERRED; m++) {
		v = test_pct_message(f, inst, low, (enum test_mode)m, result, sizeof result);
		ok(v == FMX_REJECT && strcmp(result, "reject") == 0,
		    "pct=50, sampled in (%s): reject (got %s)", m ? "deferred" : "sync",
		    result);
		v = test_pct_message(f, inst, high, (enum test_mode)m, result, sizeof result);
		ok(v == FMX_QUARANTINE && strcmp(result, "quarantine") == 0,
		    "pct=50, sampled out (%s): quarantine (got %s)", m ? "deferred" : "sync",
		    result);
	}
	f->fini(inst);

	/* Without a seed: random, in range. */
	if (f->init(&test_api, NULL, 0, &inst) != 0) {
		ok(0, "init without options");
		return;
	}
	for (i = 0, again = 1; i < 1000; i++)
		again &= test_sample(inst, "<same@x>") < 100;
	ok(again, "no pct_seed: random samples are 0..99");
	f->fini(inst);

	/* honor_pct=no: pct=0 is ignored, the policy is enforced. */
	if (f->init(&test_api, off, 1, &inst2) != 0) {
		ok(0, "init with honor_pct=no");
		return;
	}
	for (m = TEST_SYNC; m <= TEST_DEFERRED; m++) {
		const char *fields[] = { "From", "a@pct0.example", NULL };
		struct fmx_ctx ctx;
		int bad;

		memset(&ctx, 0, sizeof ctx);
		test_reset(&ctx, (enum test_mode)m);
		v = test_message(f, inst2, &ctx, fields, &bad);
		ok(v == FMX_REJECT && bad == 0 && strcmp(ctx.result, "reject") == 0,
		    "honor_pct=no, pct=0 (%s): reject", m ? "deferred" : "sync");
		test_end_message(&ctx);
	}
	f->fini(inst2);
}

/* Late, duplicate and refused DNS. */
static void
test_async_edges(const struct fmx_filter *f, void *inst)
{
	const char *fields[] = { "From", "a@example.com", NULL };
	struct fmx_ctx ctx;
	struct test_pending q;
	enum fmx_verdict v;

	/* The message ends (abort, timeout) while the query is out. */
	memset(&ctx, 0, sizeof ctx);
	test_reset(&ctx, TEST_DEFERRED);
	(void)f->on_header(inst, &ctx, fields[0], fields[1]);
	v = f->on_eom(inst, &ctx);
	ok(v == FMX_PENDING && ctx.npend == 1, "deferred: eom is pending on one query");
	q = ctx.pend[0];
	ctx.npend = 0;
	test_end_message(&ctx);
	test_answer(&ctx, q.name, q.fn, q.arg);
	ok(ctx.nresume == 0 && ctx.nresult == 0,
	    "an answer after the message ended is ignored");

	/* A second answer for the same question. */
	test_reset(&ctx, TEST_DEFERRED);
	(void)f->on_header(inst, &ctx, fields[0], fields[1]);
	v = f->on_eom(inst, &ctx);
	q = ctx.pend[0];
	ctx.npend = 0;
	test_answer(&ctx, q.name, q.fn, q.arg);
	test_answer(&ctx, q.name, q.fn, q.arg);
	ok(v == FMX_PENDING && ctx.nresume == 1 && ctx.resumed == FMX_REJECT,
	    "a duplicate answer does not resume twice");
	test_end_message(&ctx);

	/* The core refuses the query. */
	test_reset(&ctx, TEST_DEFERRED);
	ctx.refuse_dns = 1;
	(void)f->on_header(inst, &ctx, fields[0], fields[1]);
	v = f->on_eom(inst, &ctx);
	ok(v == FMX_CONTINUE && strcmp(ctx.result, "temperror") == 0 && ctx.nresume == 0,
	    "dns_query refused: temperror, no pending");
	test_end_message(&ctx);

	/* eom without any header at all */
	test_reset(&ctx, TEST_SYNC);
	v = f->on_eom(inst, &ctx);
	ok(v == FMX_REJECT && strcmp(ctx.result, "permerror") == 0,
	    "eom with no header fields: permerror");
	test_end_message(&ctx);

	/* Message-ID and unrelated fields never matter for the verdict. */
	test_reset(&ctx, TEST_SYNC);
	(void)f->on_header(inst, &ctx, "Message-ID", "<x@y>");
	(void)f->on_header(inst, &ctx, "Sender", "s@evil.example");
	(void)f->on_header(inst, &ctx, "from", "a@example.com");
	(void)f->on_header(inst, &ctx, "Reply-To", "r@evil.example");
	ctx.spf_result = "pass";
	ctx.spf_domain = "example.com";
	v = f->on_eom(inst, &ctx);
	ok(v == FMX_CONTINUE && strcmp(ctx.result, "pass") == 0,
	    "lower-case \"from\" is the From field; Sender and Reply-To are not");
	test_end_message(&ctx);

	/* Facts that are too long are not cut into something else. */
	test_reset(&ctx, TEST_SYNC);
	(void)f->on_header(inst, &ctx, "From", "a@example.com");
	ctx.spf_result = "pass";
	ctx.spf_domain = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example.com.evil.example";
	v = f->on_eom(inst, &ctx);
	ok(v == FMX_REJECT, "an over-long spf.domain is not cut down to an aligned name");
	test_end_message(&ctx);
}

static void
test_init(const struct fmx_filter *f)
{
	static const struct {
		const char	*opt;
		int		 want;
	} t[] = {
		{ "psl=" DMARC_PSL_DEFAULT, 0 },
		{ "psl=/usr/share/publicsuffix/public_suffix_list.dafsa", 0 },
		{ "psl=/nonexistent/psl.dat", -1 },
		{ "psl=", -1 },
		{ "honor_pct=yes", 0 },
		{ "honor_pct=false", 0 },
		{ "honor_pct=maybe", -1 },
		{ "honor_pct=on", 0 },		/* the one spelling set (str_bool) */
		{ "honor_pct=OFF", 0 },
		{ "pct_seed=42", 0 },
		{ "bogus=1", -1 },
		{ "noequals", -1 },
	};
	void *inst;
	size_t i;
	int r;

	ok(f->abi_major == FMX_ABI_MAJOR && f->struct_size == sizeof(struct fmx_filter) &&
	    strcmp(f->name, "dmarc") == 0 && f->on_header != NULL && f->on_eom != NULL &&
	    (f->flags & FMX_FLAG_BLOCKING) == 0, "filter table: dmarc, header and eom hooks, "
	    "not blocking");
	for (i = 0; i < sizeof t / sizeof t[0]; i++) {
		inst = (void *)&inst;
		r = f->init(&test_api, &t[i].opt, 1, &inst);
		ok(r == t[i].want && (r == 0) == (inst != NULL), "option %s: %s", t[i].opt,
		    t[i].want == 0 ? "accepted" : "refused");
		if (r == 0)
			f->fini(inst);
	}

	/* Through the core's getters (API 1.2): the core names a bad value. */
	{
		const char *bad = "honor_pct=maybe";
		char msg[FILTER_OPT_ERR_MAX] = "";

		filter_opt_begin();
		r = f->init(&test_api, &bad, 1, &inst);
		ok(r == -1 && filter_opt_end(msg, sizeof msg) == -1 &&
		    strcmp(msg, "option honor_pct: \"maybe\" is not a boolean "
		    "(yes/no, true/false, on/off, 1/0)") == 0,
		    "honor_pct=maybe named by the core: %s", msg);
	}
}

int
main(void)
{
	const struct fmx_filter *f = dmarc_filter();
	const char *opts[] = { "psl=" DMARC_PSL_DEFAULT };
	void *inst;
	size_t i;
	int m;

	plan(593);
	(void)test_initlog;
	/* An 5000-byte DMARC record, for the length limit. */
	snprintf(test_longtxt, sizeof test_longtxt, "v=DMARC1; p=reject; rua=mailto:");
	memset(test_longtxt + strlen(test_longtxt), 'r', 5000);
	test_longtxt[sizeof test_longtxt - 1] = '\0';

	test_from_table();
	test_record_table();
	test_packet_table();
	test_init(f);
	if (f->init(&test_api, opts, 1, &inst) != 0) {
		printf("Bail out! cannot init: %s\n", test_lastlog);
		return 1;
	}
	test_psl_table(inst);
	for (m = TEST_SYNC; m <= TEST_DEFERRED; m++)
		for (i = 0; i < sizeof test_cases / sizeof test_cases[0]; i++)
			test_one(f, inst, &test_cases[i], (enum test_mode)m);
	test_async_edges(f, inst);
	f->fini(inst);
	test_pct(f);
	return done_testing();
}
