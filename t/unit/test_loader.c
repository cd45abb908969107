/*
 * test_loader.c - filter module loader and the example module (TAP).
 *
 * Needs the modules built first (make modules): build/plugins/NAME.so from
 * t/plugins/NAME.c and filters/examples/rcpt_allow.so.  Run from the top of
 * the tree.  The fmx_api below is a stub that records what modules do.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filter_loader.h"
#include "filter_opt.h"
#include "tap.h"

#define PLUGINS		"build/plugins/"
#define FMX_STR(x)	#x
#define FMX_XSTR(x)	FMX_STR(x)
#define RCPT_ALLOW	"filters/examples/rcpt_allow.so"

/* The stub core: one session, one message. */
struct fmx_ctx {
	void		*msg_data;
	fmx_free_fn	 msg_free;
	char		 reply[512];
	int		 replies_refused;
	char		 result[64];
	char		 reason[128];
	char		 hdr_name[64];
	char		 hdr_value[256];
	int		 headers;
	int		 headers_refused;
	char		 log[256];
};

__attribute__((format(printf, 3, 4)))
static void
stub_log(struct fmx_ctx *ctx, enum fmx_log_level level, const char *fmt, ...)
{
	static char init_log[256];	/* ctx is NULL in init and fini */
	va_list ap;

	(void)level;
	va_start(ap, fmt);
	vsnprintf(ctx != NULL ? ctx->log : init_log,
	    ctx != NULL ? sizeof ctx->log : sizeof init_log, fmt, ap);
	va_end(ap);
}

static void *
stub_msg_data(struct fmx_ctx *ctx)
{
	return ctx->msg_data;
}

static void
stub_set_msg_data(struct fmx_ctx *ctx, void *data, fmx_free_fn fn)
{
	if (ctx->msg_free != NULL)
		ctx->msg_free(ctx->msg_data);
	ctx->msg_data = data;
	ctx->msg_free = fn;
}

/* The checks the core promises in frontmx_filter.h, roughly. */
static int
stub_set_reply(struct fmx_ctx *ctx, const char *reply)
{
	if ((reply[0] != '4' && reply[0] != '5') || strpbrk(reply, "\r\n") != NULL) {
		ctx->replies_refused++;
		return -1;
	}
	snprintf(ctx->reply, sizeof ctx->reply, "%s", reply);
	return 0;
}

static int
stub_set_result(struct fmx_ctx *ctx, const char *result, const char *reason)
{
	snprintf(ctx->result, sizeof ctx->result, "%s", result);
	snprintf(ctx->reason, sizeof ctx->reason, "%s", reason);
	return 0;
}

static int
stub_add_header(struct fmx_ctx *ctx, const char *name, const char *value)
{
	if (strchr(name, ':') != NULL || strpbrk(value, "\r\n") != NULL) {
		ctx->headers_refused++;
		return -1;
	}
	snprintf(ctx->hdr_name, sizeof ctx->hdr_name, "%s", name);
	snprintf(ctx->hdr_value, sizeof ctx->hdr_value, "%s", value);
	ctx->headers++;
	return 0;
}

static int stub_decodes;

/* Not GMime: the unit test of content_header_decode() checks the decoding. */
static long
stub_header_decode(struct fmx_ctx *ctx, const char *value, char *buf,
    size_t buflen)
{
	(void)ctx;
	stub_decodes++;
	snprintf(buf, buflen, "decoded %s", value);
	return (long)strlen(value) + 8;
}

/* The old string keys still answer (t/plugins/abi-prev/prev_minor.c). */
static const char *
stub_get(struct fmx_ctx *ctx, const char *key)
{
	(void)ctx;
	return strcmp(key, FMX_GET_CLIENT_ADDR) == 0 ? "192.0.2.1" : NULL;
}

static const struct fmx_api stub_api = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_api),
	.log = stub_log,
	.get = stub_get,
	.msg_data = stub_msg_data,
	.set_msg_data = stub_set_msg_data,
	.set_reply = stub_set_reply,
	.set_result = stub_set_result,
	.add_header = stub_add_header,
	.header_decode = stub_header_decode,
	/* The core's own getters: pure, and what modules of 1.2 call in init. */
	.option_string = filter_opt_string,
	.option_bool = filter_opt_bool,
	.option_uint = filter_opt_uint,
	.option_list = filter_opt_list,
	.option_check = filter_opt_check,
};

/* A 1.0 core: no header_decode, a smaller table. */
static const struct fmx_api stub_api_1_0 = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = 0,
	.struct_size = offsetof(struct fmx_api, header_decode),
	.log = stub_log,
	.msg_data = stub_msg_data,
	.set_msg_data = stub_set_msg_data,
	.set_reply = stub_set_reply,
	.set_result = stub_set_result,
	.add_header = stub_add_header,
};

/* End of message: the core frees the per-message data. */
static void
ctx_reset(struct fmx_ctx *ctx)
{
	if (ctx->msg_free != NULL)
		ctx->msg_free(ctx->msg_data);
	memset(ctx, 0, sizeof *ctx);
}

static int
has(const char *s, const char *sub)
{
	return strstr(s, sub) != NULL;
}

static int
count(const char *s, const char *sub)
{
	int n = 0;

	while ((s = strstr(s, sub)) != NULL) {
		n++;
		s += strlen(sub);
	}
	return n;
}

/* Modules the loader must refuse, and what the message must say. */
struct refuse_case {
	const char	*path;
	const char	*reason[3];
};

static const struct refuse_case refuse_cases[] = {
	{ PLUGINS "bad_abi.so",
	  { "built for filter ABI 2.0", "frontmx provides 1." FMX_XSTR(FMX_ABI_MINOR),
	    "rebuild the module" } },
	{ PLUGINS "no_entry.so",
	  { "no fmx_filter_entry symbol", "not a frontmx filter module", NULL } },
	{ PLUGINS "null_entry.so",
	  { "fmx_filter_entry() returned NULL", NULL, NULL } },
	{ PLUGINS "small_struct.so",
	  { "is smaller than struct fmx_filter of ABI 1.0", "rebuild the module", NULL } },
	{ PLUGINS "bad_name.so",
	  { "invalid filter name \"Bad Name\"", NULL, NULL } },
	{ PLUGINS "does_not_exist.so",
	  { "No such file", NULL, NULL } },
	{ "t/unit/tap.h",		/* not an ELF object */
	  { "invalid ELF header", NULL, NULL } },
	/* No '/': must not be found in the system library path. */
	{ "libc.so.6",
	  { "No such file", NULL, NULL } },
};

static void
test_refusals(void)
{
	const struct refuse_case *c;
	struct filter_module *m;
	char err[512];
	size_t i, j;
	int r;

	for (i = 0; i < sizeof refuse_cases / sizeof refuse_cases[0]; i++) {
		c = &refuse_cases[i];
		m = (struct filter_module *)&m;		/* must be reset */
		err[0] = '\0';
		r = filter_loader_open(c->path, &stub_api, &m, err, sizeof err);
		ok(r == -1 && m == NULL, "%s refused", c->path);
		ok(strncmp(err, c->path, strlen(c->path)) == 0 &&
		    err[strlen(c->path)] == ':' && count(err, c->path) == 1,
		    "%s: message names the file once: %s", c->path, err);
		for (j = 0; j < 3 && c->reason[j] != NULL; j++)
			ok(has(err, c->reason[j]), "%s: message says \"%s\"",
			    c->path, c->reason[j]);
	}
}

static void
test_entry_declines(void)
{
	struct fmx_api api2 = stub_api;
	struct filter_module *m;
	char err[256];

	/* rcpt_allow's entry declines an api of another major. */
	api2.abi_major = FMX_ABI_MAJOR + 1;
	ok(filter_loader_open(RCPT_ALLOW, &api2, &m, err, sizeof err) == -1 &&
	    has(err, RCPT_ALLOW ": fmx_filter_entry() returned NULL"),
	    "entry point may decline an api: %s", err);
}

static void
test_newer_minor(void)
{
	const struct fmx_filter *f;
	struct filter_module *m = NULL;
	char err[256] = "";

	ok(filter_loader_open(PLUGINS "newer_minor.so", &stub_api, &m, err,
	    sizeof err) == 0 && m != NULL, "newer minor with a larger table loads %s", err);
	if (m == NULL)
		return;
	f = filter_loader_table(m);
	ok(strcmp(f->name, "newer_minor") == 0 && f->abi_minor == FMX_ABI_MINOR + 1 &&
	    f->struct_size > sizeof *f, "table keeps the module's name, minor and size");
	ok(f->on_mail != NULL && f->on_mail(NULL, NULL, "") == FMX_TEMPFAIL &&
	    f->on_rcpt == NULL && f->init == NULL, "its hooks are there, absent ones NULL");
	filter_loader_close(m);
}

/* ABI 1.1 appended api->header_decode: 1.0 modules load, 1.1 ones check. */
static void
test_minor_1_1(void)
{
	const struct fmx_filter *f;
	struct filter_module *m = NULL;
	struct fmx_ctx ctx;
	void *inst = NULL;
	char err[256] = "";
	static const char *const opts[] = { "buflen=64" };

	ok(FMX_ABI_MINOR >= 1 && offsetof(struct fmx_api, header_decode) >=
	    offsetof(struct fmx_api, set_fact) + sizeof stub_api.set_fact,
	    "header_decode is appended after every 1.0 member");
	ok(filter_loader_open(PLUGINS "older_minor.so", &stub_api, &m, err,
	    sizeof err) == 0 && m != NULL, "a module built against 1.0 loads %s", err);
	if (m != NULL) {
		f = filter_loader_table(m);
		memset(&ctx, 0, sizeof ctx);
		ok(f->abi_minor == 0 && f->on_eom(NULL, &ctx) == FMX_CONTINUE &&
		    strcmp(ctx.hdr_value, "api 1." FMX_XSTR(FMX_ABI_MINOR)) == 0,
		    "and runs against this core: %s", ctx.hdr_value);
		filter_loader_close(m);
	}

	m = NULL;
	ok(filter_loader_open(PLUGINS "decode_header.so", &stub_api, &m, err,
	    sizeof err) == 0 && m != NULL, "a 1.1 module loads %s", err);
	if (m == NULL)
		return;
	f = filter_loader_table(m);
	ok(f->init(&stub_api, opts, 1, &inst) == 0, "decode_header init");
	memset(&ctx, 0, sizeof ctx);
	stub_decodes = 0;
	ok(f->on_header(inst, &ctx, "Subject", "=?utf-8?q?x?=") == FMX_CONTINUE &&
	    f->on_eom(inst, &ctx) == FMX_CONTINUE && stub_decodes == 1 &&
	    ctx.headers == 2 && strcmp(ctx.hdr_value, "21") == 0,
	    "on a 1.1 core it calls header_decode (length %s)", ctx.hdr_value);
	ctx_reset(&ctx);
	f->fini(inst);
	ok(f->init(&stub_api_1_0, opts, 1, &inst) == 0, "decode_header init on a 1.0 core");
	stub_decodes = 0;
	ok(f->on_header(inst, &ctx, "Subject", "=?utf-8?q?x?=") == FMX_CONTINUE &&
	    f->on_eom(inst, &ctx) == FMX_CONTINUE && stub_decodes == 0 &&
	    ctx.headers == 2 && strcmp(ctx.hdr_value, "-2") == 0,
	    "on a 1.0 core it does not call past the table (%s)", ctx.hdr_value);
	ctx_reset(&ctx);
	f->fini(inst);
	filter_loader_close(m);
}

/*
 * ABI 1.2 appended the typed option getters: a module built against the
 * 1.1 header (t/plugins/abi-prev/) loads and runs; rcpt_allow, which
 * needs them, declines a 1.1 core and reports a misspelt option through
 * them.
 */
static void
test_minor_1_2(void)
{
	static const char *const bad_opts[] = { "alow=alice@example.com" };
	struct fmx_api api_1_1 = stub_api;
	const struct fmx_filter *f;
	struct filter_module *m = NULL;
	struct fmx_ctx ctx;
	void *inst = NULL;
	char err[256] = "", msg[FILTER_OPT_ERR_MAX] = "";

	ok(FMX_ABI_MINOR >= 2 && offsetof(struct fmx_api, option_string) >=
	    offsetof(struct fmx_api, header_decode) + sizeof stub_api.header_decode,
	    "the option getters are appended after every 1.1 member");
	ok(filter_loader_open(PLUGINS "abi-prev/prev_minor.so", &stub_api, &m, err,
	    sizeof err) == 0 && m != NULL, "a module built against the 1.1 header "
	    "loads %s", err);
	if (m != NULL) {
		f = filter_loader_table(m);
		memset(&ctx, 0, sizeof ctx);
		ok(f->abi_minor == 1 && f->init(&stub_api, NULL, 0, &inst) == 0 &&
		    f->on_eom(inst, &ctx) == FMX_CONTINUE && ctx.headers == 1 &&
		    strncmp(ctx.hdr_value, "built 1.1 core 1." FMX_XSTR(FMX_ABI_MINOR),
		    17) == 0, "and runs against this core: %s", ctx.hdr_value);
		f->fini(inst);
		filter_loader_close(m);
	}

	api_1_1.abi_minor = 1;
	api_1_1.struct_size = offsetof(struct fmx_api, option_string);
	m = NULL;
	ok(filter_loader_open(RCPT_ALLOW, &api_1_1, &m, err, sizeof err) == -1 &&
	    has(err, "returned NULL"), "rcpt_allow declines a 1.1 core: %s", err);

	err[0] = '\0';
	ok(filter_loader_open(RCPT_ALLOW, &stub_api, &m, err, sizeof err) == 0,
	    "rcpt_allow loads on this core %s", err);
	if (m == NULL)
		return;
	f = filter_loader_table(m);
	filter_opt_begin();
	ok(f->init(&stub_api, bad_opts, 1, &inst) == -1 &&
	    filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option alow: unknown option (known: allow, "
	    "allow_domains)") == 0, "a misspelt option is named: %s", msg);
	filter_loader_close(m);
}

static enum fmx_verdict
rcpt(const struct fmx_filter *f, void *inst, struct fmx_ctx *ctx, const char *addr)
{
	ctx->reply[0] = ctx->result[0] = '\0';
	return f->on_rcpt(inst, ctx, addr);
}

struct rcpt_case {
	const char		*rcpt;
	enum fmx_verdict	 want;
};

static const struct rcpt_case rcpt_cases[] = {
	{ "alice@example.com",		FMX_CONTINUE },
	{ "Bob@Example.COM",		FMX_CONTINUE },
	{ "carol@example.com",		FMX_REJECT },
	{ "alice@example.com.evil",	FMX_REJECT },
	{ "alice",			FMX_REJECT },
	{ "anyone@example.org",		FMX_CONTINUE },
	{ "x@sub.example.org",		FMX_REJECT },	/* "example.org": exact */
	{ "x@deep.sub.example.net",	FMX_CONTINUE },	/* ".example.net": subdomains */
	{ "x@example.net",		FMX_REJECT },
	{ "x@notexample.org",		FMX_REJECT },
	{ "PostMaster@elsewhere.test",	FMX_CONTINUE },
	{ "postmaster",			FMX_CONTINUE },
	{ "x@",				FMX_REJECT },
};

static void
test_rcpt_allow(void)
{
	static const char *const opts[] = {
		"allow=alice@example.com, bob@example.com",
		"allow_domains=example.org,.example.net",
	};
	static const char *const bad_opts[] = { "alow=alice@example.com" };
	const struct fmx_filter *f;
	struct filter_module *m = NULL, *m2 = NULL;
	struct fmx_ctx ctx;
	void *inst = NULL, *inst2 = (void *)&inst2;
	char err[256] = "";
	size_t i, n = sizeof rcpt_cases / sizeof rcpt_cases[0];
	enum fmx_verdict v;

	ok(filter_loader_open(RCPT_ALLOW, &stub_api, &m, err, sizeof err) == 0 &&
	    m != NULL, "rcpt_allow.so loads %s", err);
	if (m == NULL)
		return;
	f = filter_loader_table(m);
	ok(strcmp(f->name, "rcpt_allow") == 0, "its name is rcpt_allow");
	ok(f->flags == 0 && f->init != NULL && f->fini != NULL &&
	    f->on_rcpt != NULL && f->on_eom != NULL && f->on_mail == NULL,
	    "not blocking; init, fini, on_rcpt and on_eom only");

	ok(f->init(&stub_api, bad_opts, 1, &inst2) == -1 && inst2 == (void *)&inst2,
	    "init refuses an unknown option");
	ok(f->init(&stub_api, NULL, 0, &inst2) == -1, "init refuses an empty allow-list");
	ok(f->init(&stub_api, opts, 2, &inst) == 0 && inst != NULL, "init with both options");

	memset(&ctx, 0, sizeof ctx);
	for (i = 0; i < n; i++) {
		v = rcpt(f, inst, &ctx, rcpt_cases[i].rcpt);
		if (rcpt_cases[i].want == FMX_CONTINUE)
			ok(v == FMX_CONTINUE && ctx.reply[0] == '\0' && ctx.result[0] == '\0',
			    "%s allowed", rcpt_cases[i].rcpt);
		else
			ok(v == FMX_REJECT && ctx.reply[0] == '5' &&
			    strcmp(ctx.result, "reject") == 0,
			    "%s rejected (%s)", rcpt_cases[i].rcpt, ctx.reply);
	}
	rcpt(f, inst, &ctx, "carol@example.com");
	ok(strcmp(ctx.reply, "550 5.1.1 <carol@example.com>: recipient not allowed here") == 0,
	    "reject reply text");
	ok(strcmp(ctx.reason, "not on allow-list") == 0, "result reason");
	ok(ctx.msg_data != NULL && ctx.msg_free != NULL, "count kept in per-message data");

	ok(f->on_eom(inst, &ctx) == FMX_CONTINUE && ctx.headers == 1 &&
	    strcmp(ctx.hdr_name, "X-Rcpt-Allow") == 0, "eom adds X-Rcpt-Allow");
	snprintf(err, sizeof err, "checked %zu recipients", n + 1);
	ok(strcmp(ctx.hdr_value, err) == 0, "header value: %s", ctx.hdr_value);

	ctx_reset(&ctx);	/* next message starts from zero */
	rcpt(f, inst, &ctx, "alice@example.com");
	f->on_eom(inst, &ctx);
	ok(strcmp(ctx.hdr_value, "checked 1 recipients") == 0,
	    "count is per message: %s", ctx.hdr_value);
	ctx_reset(&ctx);

	/* A second instance of the same module with its own options. */
	ok(filter_loader_open(RCPT_ALLOW, &stub_api, &m2, err, sizeof err) == 0 &&
	    f->init(&stub_api, opts + 1, 1, &inst2) == 0,
	    "second load and instance (domains only)");
	ok(rcpt(f, inst2, &ctx, "alice@example.com") == FMX_REJECT &&
	    rcpt(f, inst, &ctx, "alice@example.com") == FMX_CONTINUE,
	    "instances keep their own lists");
	ctx_reset(&ctx);
	f->fini(inst2);
	filter_loader_close(m2);
	f->fini(inst);
	filter_loader_close(m);
}

static void
test_misbehave(void)
{
	static const char *const o_error[] = { "mode=error_init" };
	static const char *const o_sleep[] = { "mode=sleep", "seconds=1" };
	static const char *const o_unknown[] = { "mode=nonsense" };
	static const char *const o_verdict[] = { "mode=bogus_verdict" };
	static const char *const o_pending[] = { "mode=pending_forever" };
	static const char *const o_crlf[] = { "mode=crlf_header" };
	static const char *const o_reply[] = { "mode=bogus_reply" };
	const struct fmx_filter *f, *fb;
	struct filter_module *m = NULL, *mb = NULL;
	struct fmx_ctx ctx;
	void *inst = NULL;
	char err[256] = "";

	ok(filter_loader_open(PLUGINS "misbehave.so", &stub_api, &m, err, sizeof err) == 0 &&
	    filter_loader_open(PLUGINS "misbehave_blocking.so", &stub_api, &mb, err,
	    sizeof err) == 0, "misbehave modules load %s", err);
	if (m == NULL || mb == NULL) {
		filter_loader_close(m);
		return;
	}
	f = filter_loader_table(m);
	fb = filter_loader_table(mb);
	ok(f->flags == 0 && fb->flags == FMX_FLAG_BLOCKING &&
	    strcmp(fb->name, "misbehave_blocking") == 0, "misbehave_blocking has FMX_FLAG_BLOCKING");
	ok(f->init(&stub_api, o_error, 1, &inst) == -1, "mode=error_init fails init");
	ok(f->init(&stub_api, o_unknown, 1, &inst) == -1, "unknown mode fails init");
	ok(f->init(&stub_api, o_sleep, 2, &inst) == -1, "mode=sleep needs the blocking build");
	ok(fb->init(&stub_api, o_sleep, 2, &inst) == 0, "mode=sleep in misbehave_blocking");
	fb->fini(inst);

	memset(&ctx, 0, sizeof ctx);
	f->init(&stub_api, o_verdict, 1, &inst);
	ok((int)f->on_mail(inst, &ctx, "a@b") == 99, "bogus_verdict returns 99");
	f->fini(inst);
	f->init(&stub_api, o_pending, 1, &inst);
	ok(f->on_mail(inst, &ctx, "a@b") == FMX_PENDING, "pending_forever returns PENDING");
	f->fini(inst);
	f->init(&stub_api, o_crlf, 1, &inst);
	ok(f->on_eom(inst, &ctx) == FMX_CONTINUE && ctx.headers_refused == 1 &&
	    strcmp(ctx.hdr_name, "X-Misbehave") == 0 && strcmp(ctx.hdr_value, "refused") == 0,
	    "crlf_header records the refusal");
	f->fini(inst);
	f->init(&stub_api, o_reply, 1, &inst);
	ok(f->on_rcpt(inst, &ctx, "a@b") == FMX_REJECT && ctx.replies_refused == 2 &&
	    ctx.reply[0] == '\0' && has(ctx.log, "2xx=-1 crlf=-1"),
	    "bogus_reply: both replies refused, %s", ctx.log);
	f->fini(inst);
	filter_loader_close(mb);
	filter_loader_close(m);
}

static void
test_check(void)
{
	static const struct fmx_filter good = {
		.abi_major = FMX_ABI_MAJOR, .abi_minor = FMX_ABI_MINOR,
		.struct_size = sizeof(struct fmx_filter), .name = "spf",
	};
	struct fmx_filter f;
	char err[256], tiny[8];

	ok(FMX_FILTER_V1_0_SIZE == sizeof(struct fmx_filter), "v1.0 size is today's size");
	ok(filter_loader_check(&good, "built-in spf", err, sizeof err) == 0, "built-in table passes");

	f = good;
	f.name = NULL;
	ok(filter_loader_check(&f, "built-in x", err, sizeof err) == -1 &&
	    strcmp(err, "built-in x: the filter has no name") == 0, "NULL name: %s", err);
	f.name = "";
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1, "empty name refused");
	f.name = "a";
	ok(filter_loader_check(&f, "o", err, sizeof err) == 0, "one-letter name");
	f.name = "abcdefghijklmnopqrstuvwxyz-_0123";
	ok(filter_loader_check(&f, "o", err, sizeof err) == 0, "32-character name");
	f.name = "abcdefghijklmnopqrstuvwxyz-_01234";
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "\"abcdefghijklmnopqrstuvwxyz-_0123\""), "33 characters refused: %s", err);
	f.name = "9lives";
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1, "leading digit refused");
	f.name = "dkim.v2";
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1, "dot refused");
	f.name = "a\033[2Jb";
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "\"a?[2Jb\""), "control characters not echoed: %s", err);

	f = good;
	f.flags = FMX_FLAG_BLOCKING;
	ok(filter_loader_check(&f, "o", err, sizeof err) == 0, "FMX_FLAG_BLOCKING accepted");
	f.flags = 0x8002;
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "unknown flags 0x8002"), "unknown flags refused: %s", err);

	f = good;
	f.reserved[3] = &f;
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "reserved[3]"), "reserved[] must be NULL: %s", err);
	f.abi_minor = FMX_ABI_MINOR + 1;
	ok(filter_loader_check(&f, "o", err, sizeof err) == 0,
	    "reserved[] of a newer minor is ignored");

	f = good;
	f.struct_size = sizeof f + 8;
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "larger than"), "same minor, larger struct refused: %s", err);
	f.abi_minor = FMX_ABI_MINOR + 1;
	ok(filter_loader_check(&f, "o", err, sizeof err) == 0, "newer minor, larger struct accepted");
	f.struct_size = FMX_FILTER_V1_0_SIZE - 1;
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1, "newer minor, too small refused");

	f = good;
	f.abi_major = 0;
	f.abi_minor = 0;
	ok(filter_loader_check(&f, "o", err, sizeof err) == -1 &&
	    has(err, "built for filter ABI 0.0"), "older major refused: %s", err);
	ok(filter_loader_check(NULL, "o", err, sizeof err) == -1, "NULL table refused");

	memset(tiny, 'x', sizeof tiny);
	ok(filter_loader_check(&f, "origin", tiny, sizeof tiny) == -1 &&
	    strcmp(tiny, "origin:") == 0, "message truncated to errlen: \"%s\"", tiny);
	ok(filter_loader_check(&f, "origin", NULL, 0) == -1, "no message buffer");
	filter_loader_close(NULL);
}

int
main(void)
{
	plan(90 + 8 + 6);	/* + test_minor_1_1, test_minor_1_2 */
	if (access(PLUGINS "bad_abi.so", R_OK) == -1 || access(RCPT_ALLOW, R_OK) == -1) {
		printf("Bail out! modules not built: run `make modules` from the top of the tree\n");
		return 1;
	}
	test_check();
	test_refusals();
	test_entry_declines();
	test_newer_minor();
	test_minor_1_1();
	test_minor_1_2();
	test_rcpt_allow();
	test_misbehave();
	return done_testing();
}
