/*
 * test_dkim.c - unit tests for filters/dkim.c, dkim_sign.c, dkim_dns.c
 *
 * NAME
 *	test_dkim - DKIM verification and signing against a stub core
 *
 * SYNOPSIS
 *	build/unit/test_dkim		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	filters/dkim.c, dkim_sign.c and dkim_dns.c are compiled into this
 *	file (their helpers are static)
 *	and driven through its struct fmx_filter like the core drives it:
 *	test_feed() splits a message the way smtp_eom.c does (header
 *	fields with the one space after the colon dropped, the body in
 *	chunks), calls on_header, on_eoh, on_body, on_eom, and frees the
 *	per-message data afterwards.
 *
 *	The stub struct fmx_api answers dns_query() from a table (TXT
 *	records, NXDOMAIN, NODATA, SERVFAIL, timeout, refused), either
 *	inside the call (like a cache hit) or later (test_dns_flush(), in
 *	order or reversed), and checks that on_eoh's FMX_PENDING ends with
 *	exactly one resume().  msg_read() serves the message in short reads.
 *
 *	The independent peer is dkimpy: /usr/bin/python3 t/lib/dkim_tool.py
 *	signs the test messages (rsa-sha256, ed25519-sha256, rsa-sha1, l=,
 *	simple canonicalization) and verifies ours.  Keys and their TXT
 *	records are the fixtures in t/smtp/data/dkim/.
 */
#include "dkim_sign.c"
#include "dkim_dns.c"
#include "dkim.c"

#include <sys/wait.h>

#include "filter_opt.h"
#include "tap.h"

#define TEST_DATA	"t/smtp/data/dkim/"
#define TEST_TOOL	"/usr/bin/python3 t/lib/dkim_tool.py"
#define TEST_LOG_MAX	64
#define TEST_LINE_MAX	1024
#define TEST_AR_MAX	32
#define TEST_FACTS_MAX	16
#define TEST_HDRS_MAX	8
#define TEST_PEND_MAX	64
#define TEST_ZONE_MAX	32
#define TEST_PKT_MAX	4096

enum test_zkind {
	Z_TXT = 0,	/* txt (and txt2 if set: two records) */
	Z_NXDOMAIN,
	Z_NODATA,
	Z_SERVFAIL,
	Z_TIMEOUT,	/* rcode -1, no packet */
	Z_REFUSE,	/* dns_query() returns -1 */
	Z_MALFORMED	/* a truncated packet */
};

struct test_zone {
	char		 name[256];
	enum test_zkind	 kind;
	char		 txt[2048];
	char		 txt2[2048];
};

static struct test_zone test_zone[TEST_ZONE_MAX];
static size_t test_nzone;

struct test_pending {
	fmx_dns_fn	 fn;
	void		*arg;
	int		 rcode;
	unsigned char	 pkt[TEST_PKT_MAX];
	size_t		 len;
};

/* The core's side of one (session, filter) pair, as the stub sees it. */
struct fmx_ctx {
	const char	*client_addr;
	const char	*auth;
	const char	*msg;		/* as received: CRLF, un-stuffed */
	size_t		 msglen;
	size_t		 readmax;
	int		 read_fail;
	int		 insert_fail;

	void		*data;
	fmx_free_fn	 data_free;

	char		 result[64];
	char		 reason[TEST_LINE_MAX];
	int		 nresult;
	char		 reply[TEST_LINE_MAX];

	struct { char method[32], result[32], props[256]; } ar[TEST_AR_MAX];
	size_t		 nar;
	struct { char key[64], value[512]; } facts[TEST_FACTS_MAX];
	size_t		 nfacts;
	struct { char name[64], value[1024]; size_t index; } hdrs[TEST_HDRS_MAX];
	size_t		 nhdrs;

	int		 in_hook;
	int		 nresume;
	int		 resume_in_hook;
	enum fmx_verdict resume_v;

	int		 dns_defer;
	int		 nqueries;
	int		 bad_query;	/* a query for something other than TXT */
	struct test_pending pend[TEST_PEND_MAX];
	size_t		 npend;

	char		 log[TEST_LOG_MAX][TEST_LINE_MAX];
	size_t		 nlog;
};

static struct fmx_ctx test_initlog;

__attribute__((format(printf, 1, 2)))
static void
diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* ---------------------------------------------------------------- */
/* The stub api */

__attribute__((format(printf, 3, 4)))
static void
test_log(struct fmx_ctx *ctx, enum fmx_log_level level, const char *fmt, ...)
{
	va_list ap;

	(void)level;
	if (ctx == NULL)
		ctx = &test_initlog;
	if (ctx->nlog < TEST_LOG_MAX) {
		va_start(ap, fmt);
		vsnprintf(ctx->log[ctx->nlog], TEST_LINE_MAX, fmt, ap);
		va_end(ap);
	}
	ctx->nlog++;
	if (getenv("TEST_DKIM_VERBOSE") != NULL && ctx->nlog <= TEST_LOG_MAX)
		printf("# log: %s\n", ctx->log[ctx->nlog - 1]);
}

static const char *
test_get(struct fmx_ctx *ctx, const char *key)
{
	if (strcmp(key, "client.addr") == 0)
		return ctx->client_addr;
	if (strcmp(key, "auth") == 0)
		return ctx->auth;
	if (strcmp(key, "queue.id") == 0)
		return "TESTQID";
	if (strcmp(key, "session.id") == 0)
		return "00000000000000aa";
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
test_set_reply(struct fmx_ctx *ctx, const char *reply)
{
	if (reply == NULL || strpbrk(reply, "\r\n") != NULL ||
	    (reply[0] != '4' && reply[0] != '5'))
		return -1;
	snprintf(ctx->reply, sizeof ctx->reply, "%s", reply);
	return 0;
}

static int
test_set_result(struct fmx_ctx *ctx, const char *result, const char *reason)
{
	size_t i;

	for (i = 0; result[i] != '\0'; i++)
		if (!islower((unsigned char)result[i]) && result[i] != '_')
			return -1;
	if (reason != NULL && strpbrk(reason, "\r\n") != NULL)
		return -1;
	snprintf(ctx->result, sizeof ctx->result, "%s", result);
	snprintf(ctx->reason, sizeof ctx->reason, "%s", reason ? reason : "");
	ctx->nresult++;
	return 0;
}

static int
test_add_auth_result(struct fmx_ctx *ctx, const char *method, const char *result,
    const char *props)
{
	/* The core's limits: 32-octet method/result, 256-octet props, 16 entries. */
	if (ctx->nar >= 16 || strlen(method) >= 32 || strlen(result) >= 32 ||
	    (props != NULL && strlen(props) >= 256))
		return -1;
	snprintf(ctx->ar[ctx->nar].method, 32, "%s", method);
	snprintf(ctx->ar[ctx->nar].result, 32, "%s", result);
	snprintf(ctx->ar[ctx->nar].props, 256, "%s", props ? props : "");
	ctx->nar++;
	return 0;
}

static int
test_set_fact(struct fmx_ctx *ctx, const char *key, const char *value)
{
	size_t i;

	for (i = 0; value[i] != '\0'; i++)
		if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
			return -1;
	for (i = 0; i < ctx->nfacts; i++)
		if (strcmp(ctx->facts[i].key, key) == 0)
			break;
	if (i == TEST_FACTS_MAX)
		return -1;
	snprintf(ctx->facts[i].key, sizeof ctx->facts[i].key, "%s", key);
	snprintf(ctx->facts[i].value, sizeof ctx->facts[i].value, "%s", value);
	if (i == ctx->nfacts)
		ctx->nfacts++;
	return 0;
}

static const char *
test_fact(struct fmx_ctx *ctx, const char *key)
{
	size_t i;

	for (i = 0; i < ctx->nfacts; i++)
		if (strcmp(ctx->facts[i].key, key) == 0)
			return ctx->facts[i].value;
	return NULL;
}

/* Validated like filter_chain.c: no CR/LF, at most 900 octets. */
static int
test_insert_header(struct fmx_ctx *ctx, size_t index, const char *name,
    const char *value)
{
	if (ctx->insert_fail || ctx->nhdrs == TEST_HDRS_MAX || value == NULL ||
	    strlen(value) > 900 || strpbrk(value, "\r\n") != NULL ||
	    strchr(name, ':') != NULL)
		return -1;
	snprintf(ctx->hdrs[ctx->nhdrs].name, 64, "%s", name);
	snprintf(ctx->hdrs[ctx->nhdrs].value, 1024, "%s", value);
	ctx->hdrs[ctx->nhdrs].index = index;
	ctx->nhdrs++;
	return 0;
}

static long
test_msg_read(struct fmx_ctx *ctx, size_t off, void *buf, size_t len)
{
	if (ctx->read_fail)
		return -1;
	if (off >= ctx->msglen)
		return 0;
	if (len > ctx->msglen - off)
		len = ctx->msglen - off;
	if (ctx->readmax > 0 && len > ctx->readmax)
		len = ctx->readmax;
	memcpy(buf, ctx->msg + off, len);
	return (long)len;
}

static int
test_resume(struct fmx_ctx *ctx, enum fmx_verdict v)
{
	if (ctx->in_hook)
		ctx->resume_in_hook++;
	ctx->nresume++;
	ctx->resume_v = v;
	return 0;
}

/* ---------------------------------------------------------------- */
/* DNS */

static void
test_zone_reset(void)
{
	test_nzone = 0;
}

static void
test_zone_add(const char *name, enum test_zkind kind, const char *txt,
    const char *txt2)
{
	struct test_zone *z = &test_zone[test_nzone++];

	snprintf(z->name, sizeof z->name, "%s", name);
	z->kind = kind;
	snprintf(z->txt, sizeof z->txt, "%s", txt ? txt : "");
	snprintf(z->txt2, sizeof z->txt2, "%s", txt2 ? txt2 : "");
}

static char *
test_slurp(const char *path, size_t *lenp)
{
	FILE *fp;
	char *buf = NULL;
	long n;

	if ((fp = fopen(path, "rb")) == NULL)
		return NULL;
	if (fseek(fp, 0, SEEK_END) == 0 && (n = ftell(fp)) >= 0 &&
	    fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
			if (lenp != NULL)
				*lenp = (size_t)n;
		}
	}
	fclose(fp);
	return buf;
}

/* The TXT record of key fixture NAME, without the final newline. */
static void
test_record(const char *key, char *out, size_t outlen)
{
	char path[256], *s;
	size_t n;

	snprintf(path, sizeof path, TEST_DATA "%s.txt", key);
	out[0] = '\0';
	if ((s = test_slurp(path, NULL)) == NULL)
		return;
	n = strcspn(s, "\r\n");
	s[n] = '\0';
	snprintf(out, outlen, "%s", s);
	free(s);
}

static void
test_zone_key(const char *sel, const char *domain, const char *key)
{
	char name[256], rec[2048];

	snprintf(name, sizeof name, "%s._domainkey.%s", sel, domain);
	test_record(key, rec, sizeof rec);
	test_zone_add(name, Z_TXT, rec, NULL);
}

static size_t
test_put_name(unsigned char *p, const char *name)
{
	size_t n = 0, l;

	while (*name != '\0') {
		l = strcspn(name, ".");
		p[n++] = (unsigned char)l;
		memcpy(p + n, name, l);
		n += l;
		name += l;
		if (*name == '.')
			name++;
	}
	p[n++] = 0;
	return n;
}

static size_t
test_put_txt(unsigned char *p, const char *txt)
{
	size_t n = 10, l, len = strlen(txt), rd = 0;

	p[0] = 0xc0;
	p[1] = 0x0c;
	p[2] = 0;
	p[3] = 16;
	p[4] = 0;
	p[5] = 1;
	p[6] = p[7] = p[8] = 0;
	p[9] = 60;
	n = 12;
	/* character-strings of at most 255 octets (a 2048-bit key needs two) */
	do {
		l = len > 255 ? 255 : len;
		p[n++] = (unsigned char)l;
		memcpy(p + n, txt, l);
		n += l;
		rd += l + 1;
		txt += l;
		len -= l;
	} while (len > 0);
	p[10] = (unsigned char)(rd >> 8);
	p[11] = (unsigned char)rd;
	return n;
}

static size_t
test_packet(unsigned char *p, const char *qname, int rcode, const char *txt,
    const char *txt2)
{
	size_t n = 12;
	int an = (txt != NULL) + (txt2 != NULL);

	memset(p, 0, 12);
	p[0] = 0x12;
	p[1] = 0x34;
	p[2] = 0x81;
	p[3] = (unsigned char)(0x80 | rcode);
	p[5] = 1;
	p[7] = (unsigned char)an;
	n += test_put_name(p + n, qname);
	p[n++] = 0;
	p[n++] = 16;
	p[n++] = 0;
	p[n++] = 1;
	if (txt != NULL)
		n += test_put_txt(p + n, txt);
	if (txt2 != NULL)
		n += test_put_txt(p + n, txt2);
	return n;
}

static int
test_dns_query(struct fmx_ctx *ctx, const char *name, int type, fmx_dns_fn fn,
    void *arg)
{
	struct test_pending pd;
	const struct test_zone *z = NULL;
	size_t i;

	ctx->nqueries++;
	if (type != 16)
		ctx->bad_query++;
	for (i = 0; i < test_nzone; i++)
		if (strcasecmp(test_zone[i].name, name) == 0)
			z = &test_zone[i];
	memset(&pd, 0, sizeof pd);
	pd.fn = fn;
	pd.arg = arg;
	if (z == NULL) {
		pd.rcode = 3;
		pd.len = test_packet(pd.pkt, name, 3, NULL, NULL);
	} else
		switch (z->kind) {
		case Z_REFUSE:
			return -1;
		case Z_TIMEOUT:
			pd.rcode = -1;
			break;
		case Z_SERVFAIL:
			pd.rcode = 2;
			pd.len = test_packet(pd.pkt, name, 2, NULL, NULL);
			break;
		case Z_NXDOMAIN:
			pd.rcode = 3;
			pd.len = test_packet(pd.pkt, name, 3, NULL, NULL);
			break;
		case Z_NODATA:
			pd.len = test_packet(pd.pkt, name, 0, NULL, NULL);
			break;
		case Z_MALFORMED:
			pd.len = test_packet(pd.pkt, name, 0, z->txt, NULL) - 20;
			break;
		case Z_TXT:
			pd.len = test_packet(pd.pkt, name, 0, z->txt,
			    z->txt2[0] ? z->txt2 : NULL);
			break;
		}
	if (ctx->dns_defer) {
		if (ctx->npend == TEST_PEND_MAX)
			return -1;
		ctx->pend[ctx->npend++] = pd;
		return 0;
	}
	/* Answered before dns_query() returns, like the resolver's cache. */
	fn(ctx, arg, pd.rcode, pd.rcode >= 0 ? pd.pkt : NULL, pd.rcode >= 0 ? pd.len : 0);
	return 0;
}

/* Deliver the deferred answers, as the event loop would (no hook running). */
static void
test_dns_flush(struct fmx_ctx *ctx, int reverse)
{
	size_t i, n = ctx->npend;
	struct test_pending *pd;

	ctx->npend = 0;
	for (i = 0; i < n; i++) {
		pd = &ctx->pend[reverse ? n - 1 - i : i];
		pd->fn(ctx, pd->arg, pd->rcode, pd->rcode >= 0 ? pd->pkt : NULL,
		    pd->rcode >= 0 ? pd->len : 0);
	}
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
	.msg_read = test_msg_read,
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

/* ---------------------------------------------------------------- */
/* Driving the filter like the core */

static void *
test_inst(const char *const *opts)
{
	const struct fmx_filter *f = dkim_filter();
	void *inst = NULL;
	size_t n = 0;

	while (opts != NULL && opts[n] != NULL)
		n++;
	test_initlog.nlog = 0;
	if (f->init(&test_api, opts, n, &inst) == -1)
		return NULL;
	return inst;
}

static void
test_ctx_init(struct fmx_ctx *ctx)
{
	memset(ctx, 0, sizeof *ctx);
	ctx->client_addr = "192.0.2.10";
	ctx->readmax = 777;	/* short reads: lines split across them */
}

static void
test_ctx_end(struct fmx_ctx *ctx)
{
	if (ctx->data != NULL && ctx->data_free != NULL)
		ctx->data_free(ctx->data);
	ctx->data = NULL;
	ctx->data_free = NULL;
}

/* Same rule as smtp_data_header_start(): name, blanks, ':'. */
static int
test_field_start(const char *line, size_t len)
{
	return dkim_field_start(line, len);
}

/*
 * One message through the hooks, as smtp_eom_replay_step() does; returns the
 * eom verdict (or the first verdict that is not CONTINUE).  With
 * ctx->dns_defer, a PENDING on_eoh is answered by test_dns_flush().
 */
static enum fmx_verdict
test_feed(void *inst, struct fmx_ctx *ctx, const char *msg, size_t len,
    size_t chunk, int reverse)
{
	const struct fmx_filter *f = dkim_filter();
	size_t off = 0, line, fstart = 0, flen = 0, body;
	enum fmx_verdict v;
	int in_field = 0;
	char *field;

	ctx->msg = msg;
	ctx->msglen = len;
	body = len;
	/* header fields */
	while (off < len) {
		const char *nl = memchr(msg + off, '\n', len - off);

		line = nl ? (size_t)(nl - (msg + off)) + 1 : len - off;
		if (line == 2 && msg[off] == '\r') {
			body = off + 2;
			break;
		}
		if (msg[off] == ' ' || msg[off] == '\t') {
			if (!in_field) {
				body = off;
				break;
			}
			flen += line;
		} else if (test_field_start(msg + off, line)) {
			if (in_field) {
				field = strndup(msg + fstart, flen - 2);
				char *colon = strchr(field, ':');
				*colon = '\0';
				ctx->in_hook = 1;
				v = f->on_header(inst, ctx, field,
				    colon[1] == ' ' ? colon + 2 : colon + 1);
				ctx->in_hook = 0;
				free(field);
				if (v != FMX_CONTINUE)
					return v;
			}
			in_field = 1;
			fstart = off;
			flen = line;
		} else {
			body = off;
			break;
		}
		off += line;
	}
	if (off >= len)
		body = len;
	if (in_field) {
		field = strndup(msg + fstart, flen - 2);
		char *colon = strchr(field, ':');
		*colon = '\0';
		ctx->in_hook = 1;
		v = f->on_header(inst, ctx, field, colon[1] == ' ' ? colon + 2 : colon + 1);
		ctx->in_hook = 0;
		free(field);
		if (v != FMX_CONTINUE)
			return v;
	}
	ctx->in_hook = 1;
	v = f->on_eoh(inst, ctx);
	ctx->in_hook = 0;
	if (v == FMX_PENDING) {
		if (ctx->npend == 0)
			return FMX_VERDICT_COUNT;	/* pending with nothing to wait for */
		ctx->nresume = 0;
		test_dns_flush(ctx, reverse);
		if (ctx->nresume != 1)
			return FMX_VERDICT_COUNT;
		v = ctx->resume_v;
	}
	if (v != FMX_CONTINUE)
		return v;
	for (off = body; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;

		ctx->in_hook = 1;
		v = f->on_body(inst, ctx, (const unsigned char *)msg + off, n);
		ctx->in_hook = 0;
		if (v != FMX_CONTINUE)
			return v;
	}
	ctx->in_hook = 1;
	v = f->on_eom(inst, ctx);
	ctx->in_hook = 0;
	return v;
}

/* Feed a message and free the per-message data (the core's msg end). */
static enum fmx_verdict
test_run(void *inst, struct fmx_ctx *ctx, const char *msg)
{
	enum fmx_verdict v = test_feed(inst, ctx, msg, strlen(msg), 65536, 0);

	test_ctx_end(ctx);
	return v;
}

static int
test_ar_has(struct fmx_ctx *ctx, const char *result, const char *props_sub)
{
	size_t i;

	for (i = 0; i < ctx->nar; i++)
		if (strcmp(ctx->ar[i].method, "dkim") == 0 &&
		    strcmp(ctx->ar[i].result, result) == 0 &&
		    (props_sub == NULL || strstr(ctx->ar[i].props, props_sub) != NULL))
			return 1;
	return 0;
}

static int
test_log_has(struct fmx_ctx *ctx, const char *sub)
{
	size_t i;

	for (i = 0; i < ctx->nlog && i < TEST_LOG_MAX; i++)
		if (strstr(ctx->log[i], sub) != NULL)
			return 1;
	return 0;
}

/* ---------------------------------------------------------------- */
/* dkimpy */

static char *
test_tmpfile(const char *data, size_t len)
{
	char tmpl[] = "/tmp/test_dkim.XXXXXX";
	int fd = mkstemp(tmpl);

	if (fd == -1)
		return NULL;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		unlink(tmpl);
		return NULL;
	}
	close(fd);
	return strdup(tmpl);
}

/* Run cmd with stdin from data; its stdout (malloc'd) and exit status. */
static char *
test_run_tool(const char *cmd, const char *data, int *status)
{
	char *in, *out = NULL, full[2048], outpath[] = "/tmp/test_dkim_out.XXXXXX";
	int fd, st;

	*status = -1;
	if ((in = test_tmpfile(data, strlen(data))) == NULL)
		return NULL;
	if ((fd = mkstemp(outpath)) == -1) {
		unlink(in);
		free(in);
		return NULL;
	}
	close(fd);
	snprintf(full, sizeof full, "%s < %s > %s", cmd, in, outpath);
	st = system(full);
	if (st != -1 && WIFEXITED(st))
		*status = WEXITSTATUS(st);
	out = test_slurp(outpath, NULL);
	unlink(in);
	unlink(outpath);
	free(in);
	return out;
}

/* msg signed by dkimpy with fixture key KEY as d=DOMAIN s=SEL; NULL on error. */
static char *
test_dkimpy_sign(const char *msg, const char *key, const char *domain,
    const char *sel, const char *extra)
{
	char cmd[1024];
	int st;
	char *out;

	snprintf(cmd, sizeof cmd, TEST_TOOL " sign " TEST_DATA "%s.pem %s %s %s",
	    key, domain, sel, extra ? extra : "");
	out = test_run_tool(cmd, msg, &st);
	/* A signer that fails is a failed test, never a case table skipped. */
	if (!ok(st == 0 && out != NULL && strncmp(out, "DKIM-Signature:", 15) == 0,
	    "dkimpy signs with %s d=%s s=%s %s", key, domain, sel, extra ? extra : "")) {
		diag("dkimpy sign failed (status %d)", st);
		free(out);
		return NULL;
	}
	return out;
}

static void
diag_out(const char *s)
{
	const char *p = s;

	while (p != NULL && *p != '\0') {
		size_t n = strcspn(p, "\n");

		printf("#   %.*s\n", (int)n, p);
		p += n + (p[n] == '\n');
	}
}

/* dkimpy's verdict on every DKIM-Signature of msg; keys "sel._domainkey.d=key ..." */
static int
test_dkimpy_verify(const char *msg, const char *keys, char **outp)
{
	char cmd[1024];
	int st;
	char *out;

	snprintf(cmd, sizeof cmd, TEST_TOOL " verify %s", keys);
	out = test_run_tool(cmd, msg, &st);
	if (outp != NULL)
		*outp = out;
	else
		free(out);
	return st;
}

/* ---------------------------------------------------------------- */
/* Messages */

static const char MSG[] =
    "From: Alice Example <alice@example.com>\r\n"
    "To: Bob <bob@example.org>\r\n"
    "Subject: quarterly report\r\n"
    "Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    "Message-ID: <unit-1@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "Hello Bob,\r\n"
    "  the numbers   are in,\t with  blanks \r\n"
    "\r\n"
    ".a line that was dot-stuffed on the wire\r\n"
    "Regards\r\n"
    "\r\n"
    "\r\n";

/* A copy of s with the first occurrence of from replaced by to. */
static char *
test_replace(const char *s, const char *from, const char *to)
{
	const char *p = strstr(s, from);
	size_t fl = strlen(from), tl = strlen(to), sl = strlen(s);
	char *r;

	if (p == NULL || (r = malloc(sl - fl + tl + 1)) == NULL)
		return NULL;
	memcpy(r, s, (size_t)(p - s));
	memcpy(r + (p - s), to, tl);
	memcpy(r + (p - s) + tl, p + fl, sl - (size_t)(p - s) - fl + 1);
	return r;
}

static char *
test_concat(const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b);
	char *r = malloc(al + bl + 1);

	if (r != NULL) {
		memcpy(r, a, al);
		memcpy(r + al, b, bl + 1);
	}
	return r;
}

/* The message as relayed: our DKIM-Signature fields on top (insert index 0). */
static char *
test_relayed(struct fmx_ctx *ctx, const char *msg)
{
	size_t i, n = strlen(msg) + 1;
	char *r, *p;

	for (i = 0; i < ctx->nhdrs; i++)
		n += strlen(ctx->hdrs[i].name) + strlen(ctx->hdrs[i].value) + 4;
	if ((r = malloc(n)) == NULL)
		return NULL;
	p = r;
	for (i = 0; i < ctx->nhdrs; i++)
		p += sprintf(p, "%s: %s\r\n", ctx->hdrs[i].name, ctx->hdrs[i].value);
	strcpy(p, msg);
	return r;
}

/* ---------------------------------------------------------------- */
/* Tests */

static void
test_from_parser(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "alice@example.com", "example.com" },
		{ "Alice <alice@Example.COM>", "example.com" },
		{ "\"Doe, John\" <j@x.example>", "x.example" },
		{ "(comment) a@b.example (another (nested))", "b.example" },
		{ "\"a@evil.example\"@good.example", "good.example" },
		{ "=?utf-8?q?Gr=C3=BC=C3=9Fe?= <a@b.example>", "b.example" },
		{ "Alice <alice@example.com> (work)", "example.com" },
		{ "Alice\r\n <alice@example.com>", "example.com" },
		{ "a@b.example, c@d.example", NULL },
		{ "Doe, John <j@x.example>", NULL },
		{ "undisclosed-recipients:;", NULL },
		{ "<a@[192.0.2.1]>", NULL },
		{ "", NULL },
		{ "no at sign", NULL },
		{ "<a@b.example", NULL },
		{ "\"unterminated <a@b.example>", NULL },
		{ "a@exa mple.com", NULL },
		{ "a@-.", NULL },
	};
	char out[DKIM_NAME_MAX + 1], name[128];
	size_t i, k;
	int r;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		/* the name on one TAP line: CR/LF shown as \r \n, '#' as \# */
		for (k = 0, name[0] = '\0'; cases[i].in[k] != '\0' && strlen(name) < 100; k++)
			snprintf(name + strlen(name), sizeof name - strlen(name), "%s",
			    cases[i].in[k] == '\r' ? "\\r" : cases[i].in[k] == '\n' ? "\\n" :
			    cases[i].in[k] == '#' ? "\\#" : (char[]){ cases[i].in[k], 0 });
		r = dkim_sign_from_domain(cases[i].in, out, sizeof out);
		if (cases[i].want == NULL)
			ok(r == -1, "From \"%s\": not signable", name);
		else
			ok(r == 0 && strcmp(out, cases[i].want) == 0,
			    "From \"%s\": domain %s", name, cases[i].want);
	}
}

static void
test_body_length(void)
{
	static const struct {
		const char *body;
		uint64_t simple, relaxed;
	} cases[] = {
		{ "", 2, 0 },
		{ "\r\n", 2, 0 },
		{ "a\r\n", 3, 3 },
		{ "a\r\n\r\n\r\n", 3, 3 },
		{ "a  b \t\r\n", 8, 5 },
		{ " a\r\n", 4, 4 },
		{ "a\r\n \t \r\n", 8, 3 },
		{ "a\r\n\r\nb\r\n\r\n", 8, 8 },
	};
	struct dkim_blen b[2];
	size_t i, k;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(b, 0, sizeof b);
		/* byte by byte: chunks end anywhere */
		for (k = 0; cases[i].body[k] != '\0'; k++) {
			dkim_blen_feed(&b[0], 0, (const unsigned char *)cases[i].body + k, 1);
			dkim_blen_feed(&b[1], 1, (const unsigned char *)cases[i].body + k, 1);
		}
		ok(dkim_blen_total(&b[0], 0) == cases[i].simple &&
		    dkim_blen_total(&b[1], 1) == cases[i].relaxed,
		    "canonical body length %zu: simple %llu, relaxed %llu", i,
		    (unsigned long long)cases[i].simple,
		    (unsigned long long)cases[i].relaxed);
	}
}

static void
test_txt_parser(void)
{
	unsigned char pkt[TEST_PKT_MAX];
	char out[DKIM_KEYREC_MAX + 1], big[1100];
	size_t len, cut;
	int bad = 0;

	len = test_packet(pkt, "s._domainkey.example.com", 0, "v=DKIM1; p=abc", NULL);
	ok(dkim_dns_txt_pick(pkt, len, out, sizeof out) == 1 &&
	    strcmp(out, "v=DKIM1; p=abc") == 0, "TXT: one record");
	len = test_packet(pkt, "s._domainkey.example.com", 0, "v=spf1 -all",
	    "v=DKIM1; p=xyz");
	ok(dkim_dns_txt_pick(pkt, len, out, sizeof out) == 1 &&
	    strcmp(out, "v=DKIM1; p=xyz") == 0, "TXT: the v=DKIM1 record of two");
	len = test_packet(pkt, "s._domainkey.example.com", 0, NULL, NULL);
	ok(dkim_dns_txt_pick(pkt, len, out, sizeof out) == 0, "TXT: NODATA");
	memset(big, 'A', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	len = test_packet(pkt, "s._domainkey.example.com", 0, big, NULL);
	ok(dkim_dns_txt_pick(pkt, len, out, sizeof out) == -2,
	    "TXT: a record over libopendkim's 1024-octet buffer is refused");
	/* every truncation of a valid packet: -1 or a clean answer, never a crash */
	len = test_packet(pkt, "s._domainkey.example.com", 0, "v=DKIM1; p=abc",
	    "v=DKIM1; p=def");
	for (cut = 0; cut < len; cut++) {
		unsigned char *copy = malloc(cut ? cut : 1);	/* exact size: ASan sees overreads */

		memcpy(copy, pkt, cut);
		if (dkim_dns_txt_pick(copy, cut, out, sizeof out) == 1 &&
		    strncmp(out, "v=DKIM1", 7) != 0)
			bad++;
		free(copy);
	}
	ok(bad == 0, "TXT: %zu truncated packets parsed safely", len);
	/* a compression pointer loop and a label over 63 */
	memset(pkt, 0, 12);
	pkt[5] = 1;
	pkt[12] = 0xc0;
	pkt[13] = 12;
	ok(dkim_dns_txt_pick(pkt, 18, out, sizeof out) == 0 ||
	    dkim_dns_txt_pick(pkt, 18, out, sizeof out) == -1,
	    "TXT: a pointer loop in the question ends");
	pkt[12] = 0x40;
	ok(dkim_dns_txt_pick(pkt, 18, out, sizeof out) == -1, "TXT: bad label type");
}

static void
test_init_options(void)
{
	void *inst;
	char opt[512];

	ok((inst = test_inst(NULL)) != NULL, "init: no options (verify only)");
	dkim_filter()->fini(inst);

	{
		const char *o[] = { "colour=blue", NULL };
		ok(test_inst(o) == NULL && test_log_has(&test_initlog, "unknown option"),
		    "init: unknown option refused");
	}
	{
		const char *o[] = { "max_signatures=0", NULL };
		ok(test_inst(o) == NULL, "init: max_signatures=0 refused");
	}
	{
		const char *o[] = { "max_signatures=51", NULL };
		ok(test_inst(o) == NULL, "init: max_signatures=51 refused");
	}
	{
		const char *o[] = { "min_key_bits=512", NULL };
		ok(test_inst(o) == NULL, "init: min_key_bits below 1024 refused (RFC 8301)");
	}
	{
		const char *o[] = { "canon=simple/simple", NULL };
		ok(test_inst(o) == NULL && test_log_has(&test_initlog, "refolded"),
		    "init: simple header canonicalization refused for signing");
	}
	{
		const char *o[] = { "trusted=10.1.2.3/8", NULL };
		ok(test_inst(o) == NULL, "init: trusted network with host bits refused");
	}
	{
		const char *o[] = { "trusted=banana", NULL };
		ok(test_inst(o) == NULL, "init: trusted garbage refused");
	}
	{
		const char *o[] = { "sign_headers=to:subject", NULL };
		ok(test_inst(o) == NULL && test_log_has(&test_initlog, "must include from"),
		    "init: sign_headers without from refused");
	}
	{
		const char *o[] = { "sign_headers=from:x(y)", NULL };
		ok(test_inst(o) == NULL, "init: sign_headers with regex characters refused");
	}
	{
		const char *o[] = { "verify=false", NULL };
		ok(test_inst(o) == NULL, "init: verify=false without keys refused");
	}
	{
		/* Through the core's getters (API 1.2): the core names it. */
		const char *o[] = { "max_signatures=0", NULL };
		char msg[FILTER_OPT_ERR_MAX] = "";

		filter_opt_begin();
		ok(test_inst(o) == NULL && filter_opt_end(msg, sizeof msg) == -1 &&
		    strcmp(msg, "option max_signatures: \"0\" is not a number from 1 "
		    "to 50") == 0, "init: max_signatures=0 named by the core: %s", msg);
	}
	{
		/* The one spelling set (str_bool): "on" was refused before. */
		const char *o[] = { "verify=on", "sign_authenticated=OFF", NULL };
		void *on = test_inst(o);

		ok(on != NULL, "init: verify=on, sign_authenticated=OFF accepted");
		if (on != NULL)
			dkim_filter()->fini(on);
	}
	{
		const char *o[] = { "sign=example.com:sel", NULL };
		ok(test_inst(o) == NULL, "init: sign entry without a path refused");
	}
	{
		const char *o[] = { "sign=example.com:sel:/nonexistent/key.pem", NULL };
		ok(test_inst(o) == NULL && test_log_has(&test_initlog, "/nonexistent/key.pem"),
		    "init: missing key file refused, named");
	}
	{
		const char *o[] = { "sign=example.com:sel:" TEST_DATA "rsa2048.txt", NULL };
		ok(test_inst(o) == NULL, "init: a file that is no private key refused");
	}
	{
		const char *o[] = { "sign=exa mple.com:sel:" TEST_DATA "rsa2048.pem", NULL };
		ok(test_inst(o) == NULL, "init: bad signing domain refused");
	}
	{
		const char *o[] = { "sign=example.com:sel:" TEST_DATA "rsa4096.pem", NULL };
		ok(test_inst(o) == NULL && test_log_has(&test_initlog, "over the 900"),
		    "init: 4096-bit key refused: its signature exceeds the core's 900 octets");
	}
	{
		const char *o[] = { "sign=example.com:sel:" TEST_DATA "rsa4096.pem",
		    "sign_headers=from:to:subject", NULL };
		ok((inst = test_inst(o)) != NULL,
		    "init: 4096-bit key fits with a short sign_headers");
		if (inst != NULL)
			dkim_filter()->fini(inst);
	}
	{
		const char *o[] = { "sign=example.com:sel:" TEST_DATA "rsa512.pem", NULL };
		ok(test_inst(o) == NULL, "init: 512-bit signing key refused");
	}
	snprintf(opt, sizeof opt, "sign=example.com:rsa:" TEST_DATA "rsa2048.pem, "
	    "Example.COM:ed:" TEST_DATA "ed25519.pem, example.org:p1:" TEST_DATA
	    "rsa2048-pkcs1.pem");
	{
		const char *o[] = { opt, "trusted=127.0.0.0/8, ::1, 2001:db8::/32",
		    "max_signatures=3", "canon=relaxed/simple", NULL };
		struct dkim_inst *di = test_inst(o);

		ok(di != NULL && di->nkeys == 3 && di->nnets == 3 &&
		    di->keys[0].alg == DKIM_SIGN_RSASHA256 && di->keys[0].bits == 2048 &&
		    di->keys[1].alg == DKIM_SIGN_ED25519SHA256 &&
		    strcmp(di->keys[1].domain, "example.com") == 0 &&
		    di->keys[2].alg == DKIM_SIGN_RSASHA256 && di->keys[2].bits == 2048 &&
		    di->max_sigs == 3 && di->bcanon == DKIM_CANON_SIMPLE,
		    "init: RSA PKCS#8, Ed25519 and RSA PKCS#1 keys told apart");
		if (di != NULL)
			dkim_filter()->fini(di);
	}
}

/* Verify msg (already signed) with the zone as set; returns the eom verdict. */
static enum fmx_verdict
test_verify(void *inst, struct fmx_ctx *ctx, const char *msg)
{
	test_ctx_init(ctx);
	return test_run(inst, ctx, msg);
}

static void
test_verify_dkimpy(void *inst)
{
	struct fmx_ctx ctx;
	char *s, *t, *u;
	enum fmx_verdict v;

	test_zone_reset();
	test_zone_key("rsa", "example.com", "rsa2048");
	test_zone_key("ed", "example.com", "ed25519");
	test_zone_key("k1024", "example.com", "rsa1024");
	test_zone_key("k512", "example.com", "rsa512");
	test_zone_key("p1", "example.net", "rsa2048-pkcs1");

	/* rsa-sha256 relaxed/relaxed */
	s = test_dkimpy_sign(MSG, "rsa2048", "example.com", "rsa", NULL);
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(v == FMX_CONTINUE && strcmp(ctx.result, "pass") == 0,
		    "dkimpy rsa-sha256: result pass (%s: %s)", ctx.result, ctx.reason);
		ok(ctx.nar == 1 && test_ar_has(&ctx, "pass",
		    "header.d=example.com header.s=rsa header.a=rsa-sha256 header.b="),
		    "dkimpy rsa-sha256: dkim=pass header.d header.s header.a header.b (%s)",
		    ctx.nar ? ctx.ar[0].props : "");
		ok(test_fact(&ctx, "dkim.pass") != NULL &&
		    strcmp(test_fact(&ctx, "dkim.pass"), "example.com") == 0 &&
		    strcmp(test_fact(&ctx, "dkim.result"), "pass") == 0,
		    "fact dkim.pass=example.com for DMARC");
		ok(ctx.nqueries == 1 && ctx.bad_query == 0, "one TXT query");
		{
			/* header.b is the first 8 characters of b= */
			const char *b = strstr(s, " b=");
			char want[32];

			ok(b != NULL && (snprintf(want, sizeof want, "header.b=%.8s", b + 3), 1) &&
			    strstr(ctx.ar[0].props, want) != NULL,
			    "%s: the first 8 characters of b= (RFC 6008)", want);
		}

		/* changed body */
		t = test_replace(s, "Regards", "regards");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "fail") == 0 && test_ar_has(&ctx, "fail",
		    "header.d=example.com") && strstr(ctx.reason, "body hash") != NULL,
		    "changed body: fail (%s)", ctx.reason);
		ok(test_fact(&ctx, "dkim.pass") == NULL, "changed body: no dkim.pass fact");
		free(t);

		/* changed signed header */
		t = test_replace(s, "quarterly report", "quarterly rep0rt");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "fail") == 0 && strstr(ctx.reason, "signature mismatch"),
		    "changed Subject: fail (%s)", ctx.reason);
		free(t);

		/* added unsigned header: still pass */
		t = test_concat("X-Added: later\r\n", s);
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "pass") == 0, "an added unsigned field: still pass");
		free(t);

		/* relaxed: refolding and blank changes in the header survive */
		t = test_replace(s, "Subject: quarterly report", "Subject:   quarterly\r\n\treport");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "pass") == 0, "relaxed: refolded Subject still passes");
		free(t);

		/* deferred DNS, answers in reverse order */
		test_ctx_init(&ctx);
		ctx.dns_defer = 1;
		v = test_feed(inst, &ctx, s, strlen(s), 100, 1);
		ok(v == FMX_CONTINUE && strcmp(ctx.result, "pass") == 0 &&
		    ctx.nresume == 1 && ctx.resume_in_hook == 0,
		    "deferred DNS: PENDING at eoh, one resume, pass");
		test_ctx_end(&ctx);

		/* missing key */
		t = test_replace(s, "s=rsa", "s=gone");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "permerror") == 0 && test_ar_has(&ctx, "permerror",
		    "header.s=gone") && strstr(ctx.reason, "no key") != NULL,
		    "NXDOMAIN for the key: permerror, no key (%s)", ctx.reason);
		free(t);
		free(s);
	}

	/* ed25519-sha256 (RFC 8463) */
	s = test_dkimpy_sign(MSG, "ed25519", "example.com", "ed", "--alg ed25519-sha256");
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0 && test_ar_has(&ctx, "pass",
		    "header.a=ed25519-sha256"), "dkimpy ed25519-sha256: pass");
		t = test_replace(s, "Hello Bob", "Hello Eve");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "fail") == 0, "ed25519, changed body: fail");
		free(t);

		/* both: rsa on top of ed25519 */
		t = test_dkimpy_sign(s, "rsa2048", "example.com", "rsa", NULL);
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "pass") == 0 && ctx.nar == 2 &&
		    test_ar_has(&ctx, "pass", "header.s=rsa") &&
		    test_ar_has(&ctx, "pass", "header.s=ed") &&
		    strcmp(test_fact(&ctx, "dkim.pass"), "example.com") == 0,
		    "rsa + ed25519 signatures: two dkim=pass, example.com once in dkim.pass");
		free(t);
		free(s);
	}

	/* simple/simple, and the exact re-check */
	s = test_dkimpy_sign(MSG, "rsa2048", "example.com", "rsa", "--canon simple/simple");
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0, "dkimpy simple/simple: pass");
		free(s);
	}
	t = test_replace(MSG, "Subject: quarterly report", "Subject:quarterly report");
	s = test_dkimpy_sign(t, "rsa2048", "example.com", "rsa", "--canon simple/simple");
	free(t);
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0,
		    "simple/simple with \"Subject:value\" (no space): pass via the "
		    "exact re-check from the spool");
		test_ctx_init(&ctx);
		ctx.read_fail = 1;
		v = test_run(inst, &ctx, s);
		ok(strcmp(ctx.result, "fail") == 0 && test_log_has(&ctx, "first pass stands"),
		    "... and fail when the spool cannot be read (first pass stands)");
		t = test_replace(s, "Subject:quarterly", "Subject: quarterly");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "fail") == 0,
		    "simple/simple: a space added after the colon fails");
		free(t);
		free(s);
	}

	/* l= */
	s = test_dkimpy_sign(MSG, "rsa2048", "example.com", "rsa", "--length");
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0, "l= covering the whole body: pass");
		t = test_concat(s, "Appended by someone else: click here\r\n");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "neutral") == 0 && test_ar_has(&ctx, "policy",
		    "header.d=example.com") && test_fact(&ctx, "dkim.pass") == NULL,
		    "l= with text appended: dkim=policy, result neutral, no dkim.pass");
		free(t);
		t = test_replace(s, "Regards\r\n", "");
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "fail") == 0, "l= longer than the body: fail");
		free(t);
		free(s);
	}

	/* RFC 8301 */
	s = test_dkimpy_sign(MSG, "rsa2048", "example.com", "rsa", "--alg rsa-sha1");
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "fail") == 0 && test_ar_has(&ctx, "fail",
		    "header.a=rsa-sha1") && ctx.nqueries == 0,
		    "rsa-sha1: fail, without a key lookup (%s)", ctx.reason);
		t = test_dkimpy_sign(s, "rsa2048", "example.com", "rsa", NULL);
		v = test_verify(inst, &ctx, t);
		ok(strcmp(ctx.result, "pass") == 0 && ctx.nar == 2 &&
		    test_ar_has(&ctx, "fail", "header.a=rsa-sha1"),
		    "rsa-sha1 next to rsa-sha256: pass, the sha1 one reported fail");
		free(t);
		free(s);
	}
	s = test_dkimpy_sign(MSG, "rsa512", "example.com", "k512", NULL);
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "fail") == 0 && strstr(ctx.reason, "min_key_bits"),
		    "512-bit RSA key: fail (%s)", ctx.reason);
		free(s);
	}
	s = test_dkimpy_sign(MSG, "rsa1024", "example.com", "k1024", NULL);
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0, "1024-bit RSA key: pass");
		free(s);
	}
	s = test_dkimpy_sign(MSG, "rsa2048-pkcs1", "example.net", "p1", NULL);
	if (s != NULL) {
		v = test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0 &&
		    strcmp(test_fact(&ctx, "dkim.pass"), "example.net") == 0,
		    "a signature for another domain than From's: pass, d= in dkim.pass");
		free(s);
	}

	/* a long message, in 64 KiB chunks like the core */
	{
		size_t i, n = 0;
		char *big = malloc(200000), *sig;

		n += (size_t)sprintf(big, "From: alice@example.com\r\nSubject: big\r\n\r\n");
		for (i = 0; n < 190000; i++)
			n += (size_t)sprintf(big + n, "line %zu of a long body, with  some\tblanks \r\n", i);
		sig = test_dkimpy_sign(big, "ed25519", "example.com", "ed", "--alg ed25519-sha256");
		if (sig != NULL) {
			test_ctx_init(&ctx);
			v = test_feed(inst, &ctx, sig, strlen(sig), 65536, 0);
			ok(strcmp(ctx.result, "pass") == 0, "190 KB body in 64 KiB chunks: pass");
			test_ctx_end(&ctx);
			test_ctx_init(&ctx);
			v = test_feed(inst, &ctx, sig, strlen(sig), 1, 0);
			ok(strcmp(ctx.result, "pass") == 0, "... and in 1-octet chunks");
			test_ctx_end(&ctx);
		}
		free(sig);
		free(big);
	}
	(void)v;
	(void)u;
}

static void
test_verify_dns(void *inst)
{
	struct fmx_ctx ctx;
	char *s, *t, rec[2048];
	enum fmx_verdict v;
	static const struct {
		enum test_zkind kind;
		const char *txt, *result, *why, *name;
	} cases[] = {
		{ Z_NXDOMAIN, NULL, "permerror", "no key", "NXDOMAIN" },
		{ Z_NODATA, NULL, "permerror", "no key", "no TXT record (NODATA)" },
		{ Z_SERVFAIL, NULL, "temperror", "key lookup failed", "SERVFAIL" },
		{ Z_TIMEOUT, NULL, "temperror", "key lookup failed", "timeout (rcode -1)" },
		{ Z_REFUSE, NULL, "temperror", "key lookup failed", "dns_query refused (no resolver)" },
		{ Z_MALFORMED, "v=DKIM1; k=rsa; p=MIIB", "temperror", "key lookup failed", "truncated answer" },
		{ Z_TXT, "v=DKIM1; k=rsa; p=", "permerror", "revoked", "revoked key (empty p=)" },
		{ Z_TXT, "v=DKIM1; k=rsa; p=!!!notbase64!!!", "permerror", NULL, "garbage p=" },
		{ Z_TXT, "v=DKIM1; k=ed25519; p=AAAA", "permerror", NULL, "wrong key type" },
		{ Z_TXT, "v=spf1 -all", "permerror", NULL, "an SPF record where the key should be" },
	};
	size_t i;

	s = test_dkimpy_sign(MSG, "rsa2048", "example.com", "rsa", NULL);
	if (s == NULL)
		return;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int defer;

		for (defer = 0; defer < 2; defer++) {
			test_zone_reset();
			test_zone_add("rsa._domainkey.example.com", cases[i].kind,
			    cases[i].txt, NULL);
			test_ctx_init(&ctx);
			ctx.dns_defer = defer && cases[i].kind != Z_REFUSE;
			v = test_feed(inst, &ctx, s, strlen(s), 65536, 0);
			ok(v == FMX_CONTINUE && strcmp(ctx.result, cases[i].result) == 0 &&
			    test_ar_has(&ctx, cases[i].result, "header.d=example.com") &&
			    (cases[i].why == NULL || strstr(ctx.reason, cases[i].why) != NULL),
			    "%s%s: %s (%s)", cases[i].name, defer ? ", deferred" : "",
			    cases[i].result, ctx.reason);
			test_ctx_end(&ctx);
		}
	}

	/* the key record in two TXT records, and split in character-strings */
	test_zone_reset();
	test_record("rsa2048", rec, sizeof rec);
	test_zone_add("rsa._domainkey.example.com", Z_TXT, "v=spf1 -all", rec);
	v = test_verify(inst, &ctx, s);
	ok(strcmp(ctx.result, "pass") == 0, "two TXT records: the v=DKIM1 one is used");

	/* an invalid s= never reaches the resolver */
	t = test_replace(s, "s=rsa", "s=r/sa");
	v = test_verify(inst, &ctx, t);
	ok(ctx.nqueries == 0 && strcmp(ctx.result, "permerror") == 0,
	    "s=r/sa: permerror without a query (%s)", ctx.reason);
	free(t);

	/* malformed DKIM-Signature fields */
	t = test_concat("DKIM-Signature: v=1; a=rsa-sha256; this is not a tag list\r\n", MSG);
	v = test_verify(inst, &ctx, t);
	ok(strcmp(ctx.result, "permerror") == 0 && ctx.nar == 1,
	    "garbage DKIM-Signature: permerror, not none (%s)", ctx.reason);
	free(t);
	t = test_concat("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa; "
	    "h=from; bh=AAAA; b=AAAA\r\n", MSG);
	test_zone_reset();
	test_zone_key("rsa", "example.com", "rsa2048");
	v = test_verify(inst, &ctx, t);
	ok(strcmp(ctx.result, "fail") == 0 || strcmp(ctx.result, "permerror") == 0,
	    "well-formed but bogus signature: %s", ctx.result);
	free(t);
	t = test_concat("DKIM-Signature: v=1; a=hmac-md5; d=example.com; s=rsa; "
	    "h=from; bh=AAAA; b=AAAA\r\n", MSG);
	v = test_verify(inst, &ctx, t);
	ok(strcmp(ctx.result, "permerror") == 0 && ctx.nqueries == 0,
	    "unknown a=: permerror, no lookup");
	free(t);

	/* hostile tag values (SECURITY.md 4: bound l= and bh=, Exim CVE-2020-28025) */
	{
		static const char *const hostile[] = {
			"bh=@; b=AAAA",				/* a 3000-octet bh= */
			"bh=====; b====",			/* padding only */
			"bh=AAAA; b=AAAA; l=99999999999999999999999",	/* l= overflow */
			"bh=AAAA; b=AAAA; l=-1",
			"bh=AAAA; b=AAAA; l=18446744073709551615",
			"bh=AAAA; b=@",				/* a 3000-octet b= */
			"bh=\x01\x02; b=\x7f",
		};
		char *blob = malloc(3001), *field = malloc(8192), *msg, *tags;
		size_t k;
		int good = 1;

		memset(blob, 'A', 3000);
		blob[3000] = '\0';
		for (k = 0; k < sizeof hostile / sizeof hostile[0]; k++) {
			tags = strchr(hostile[k], '@') != NULL ?
			    test_replace(hostile[k], "@", blob) : strdup(hostile[k]);
			snprintf(field, 8192, "DKIM-Signature: v=1; a=rsa-sha256; "
			    "c=relaxed/relaxed; d=example.com; s=rsa; h=from:subject; %s\r\n",
			    tags);
			free(tags);
			msg = test_concat(field, MSG);
			test_verify(inst, &ctx, msg);
			if (strcmp(ctx.result, "fail") != 0 && strcmp(ctx.result, "permerror") != 0) {
				diag("hostile %zu: %s (%s)", k, ctx.result, ctx.reason);
				good = 0;
			}
			free(msg);
		}
		ok(good, "crafted bh=, b= and l= values: fail or permerror, no crash");
		free(blob);
		free(field);
	}

	/* a flood of signatures: bounded work and bounded reports */
	{
		char *flood = strdup(MSG), *next;
		int k;

		for (k = 0; k < 200; k++) {
			next = test_concat("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; "
			    "s=rsa; h=from; bh=AAAA; b=AAAA\r\n", flood);
			free(flood);
			flood = next;
		}
		test_verify(inst, &ctx, flood);
		ok(ctx.nqueries <= 1 && ctx.nar == 5 && strcmp(ctx.result, "fail") == 0,
		    "200 signatures: at most one key lookup (one key), 5 entries, fail "
		    "(queries %d, entries %zu, %s)", ctx.nqueries, ctx.nar, ctx.result);
		free(flood);
	}

	/* unsigned */
	v = test_verify(inst, &ctx, MSG);
	ok(strcmp(ctx.result, "none") == 0 && ctx.nar == 1 &&
	    test_ar_has(&ctx, "none", "") && ctx.nqueries == 0,
	    "unsigned message: none, dkim=none");
	free(s);
	(void)v;
}

static void
test_verify_cap(void)
{
	const char *o[] = { "max_signatures=2", NULL };
	void *inst = test_inst(o);
	struct fmx_ctx ctx;
	char *s, *t, sel[16];
	int i;

	ok(inst != NULL, "instance with max_signatures=2");
	if (inst == NULL)
		return;
	test_zone_reset();
	s = strdup(MSG);
	for (i = 1; i <= 4 && s != NULL; i++) {
		snprintf(sel, sizeof sel, "s%d", i);
		test_zone_key(sel, "example.com", "rsa2048");
		t = test_dkimpy_sign(s, "rsa2048", "example.com", sel, NULL);
		free(s);
		s = t;
	}
	if (s != NULL) {
		test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "pass") == 0 && ctx.nqueries == 2 && ctx.nar == 2,
		    "4 signatures, max_signatures=2: 2 lookups, 2 entries, pass "
		    "(queries %d, entries %zu)", ctx.nqueries, ctx.nar);
		/* the first two (topmost: s4, s3) are broken: the others are not tried */
		test_zone_reset();
		test_zone_key("s1", "example.com", "rsa2048");
		test_zone_key("s2", "example.com", "rsa2048");
		test_verify(inst, &ctx, s);
		ok(strcmp(ctx.result, "permerror") == 0 && ctx.nqueries == 2,
		    "over the cap, later good signatures are ignored (%s)", ctx.result);
	}
	free(s);
	dkim_filter()->fini(inst);
}

static void
test_sign(void)
{
	char opt[512];
	const char *o[] = { opt, "trusted=127.0.0.0/8, ::1", NULL };
	struct fmx_ctx ctx;
	void *inst;
	char *relayed, *out = NULL, *m2, *h;
	enum fmx_verdict v;
	int st;
	size_t i;

	snprintf(opt, sizeof opt, "sign=example.com:rsa:" TEST_DATA "rsa2048.pem, "
	    "example.com:ed:" TEST_DATA "ed25519.pem, example.net:p1:" TEST_DATA
	    "rsa2048-pkcs1.pem");
	inst = test_inst(o);
	ok(inst != NULL, "signing instance");
	if (inst == NULL)
		return;
	test_zone_reset();

	/* trusted client, From example.com: signed twice, not verified */
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	v = test_feed(inst, &ctx, MSG, strlen(MSG), 65536, 0);
	ok(v == FMX_CONTINUE && ctx.nhdrs == 2 &&
	    strcmp(ctx.hdrs[0].name, "DKIM-Signature") == 0 && ctx.hdrs[0].index == 0 &&
	    ctx.nqueries == 0 && ctx.nresult == 0 && ctx.nar == 0,
	    "trusted client: two DKIM-Signature fields inserted at the top, no verification");
	ok(test_fact(&ctx, "dkim.signed") != NULL &&
	    strcmp(test_fact(&ctx, "dkim.signed"), "example.com") == 0,
	    "fact dkim.signed=example.com");
	for (i = 0; i < ctx.nhdrs; i++) {
		h = strstr(ctx.hdrs[i].value, "; h=");
		h = h != NULL ? h + 2 : NULL;
		ok(strpbrk(ctx.hdrs[i].value, "\r\n") == NULL &&
		    strlen(ctx.hdrs[i].value) <= 900 &&
		    strstr(ctx.hdrs[i].value, "c=relaxed/relaxed") != NULL &&
		    strstr(ctx.hdrs[i].value, "d=example.com") != NULL,
		    "signature %zu: one line, relaxed/relaxed, d=example.com (%zu octets)",
		    i + 1, strlen(ctx.hdrs[i].value));
		ok(h != NULL && strncasecmp(h, "h=From:", 7) == 0 &&
		    strstr(h, ":from;") != NULL,
		    "signature %zu: From oversigned (%.40s...)", i + 1, h ? h : "");
	}
	ok(strstr(ctx.hdrs[0].value, "a=rsa-sha256") != NULL &&
	    strstr(ctx.hdrs[1].value, "a=ed25519-sha256") != NULL,
	    "rsa-sha256 and ed25519-sha256");
	relayed = test_relayed(&ctx, MSG);
	test_ctx_end(&ctx);
	st = test_dkimpy_verify(relayed, "--key rsa._domainkey.example.com=rsa2048 "
	    "--key ed._domainkey.example.com=ed25519", &out);
	ok(st == 0 && out != NULL && strstr(out, "pass d=example.com s=rsa a=rsa-sha256") &&
	    strstr(out, "pass d=example.com s=ed a=ed25519-sha256"),
	    "dkimpy verifies both our signatures");
	if (st != 0)
		diag_out(out);
	free(out);

	/* our own verifier on our signatures */
	{
		void *vi = test_inst(NULL);

		test_zone_key("rsa", "example.com", "rsa2048");
		test_zone_key("ed", "example.com", "ed25519");
		test_verify(vi, &ctx, relayed);
		ok(strcmp(ctx.result, "pass") == 0 && ctx.nar == 2 &&
		    test_ar_has(&ctx, "pass", "header.s=rsa") &&
		    test_ar_has(&ctx, "pass", "header.s=ed"),
		    "frontmx verifies its own signatures");
		/* the relay path after us: a header refolded, still valid */
		m2 = test_replace(relayed, "To: Bob <bob@example.org>", "To: Bob\r\n <bob@example.org>");
		test_verify(vi, &ctx, m2);
		ok(strcmp(ctx.result, "pass") == 0, "... and after a To: field is refolded");
		free(m2);
		dkim_filter()->fini(vi);
	}
	free(relayed);

	/* IPv6 loopback, a v4-mapped address, an authenticated session */
	{
		static const char *const addrs[] = { "::1", "::ffff:127.0.0.9" };

		for (i = 0; i < 2; i++) {
			test_ctx_init(&ctx);
			ctx.client_addr = addrs[i];
			test_run(inst, &ctx, MSG);
			ok(ctx.nhdrs == 2, "trusted client %s: signed", addrs[i]);
		}
		test_ctx_init(&ctx);
		ctx.auth = "alice";
		test_run(inst, &ctx, MSG);
		ok(ctx.nhdrs == 2, "authenticated session from outside: signed");
	}

	/* untrusted client: verified, not signed */
	test_ctx_init(&ctx);
	ctx.client_addr = "192.0.2.77";
	v = test_run(inst, &ctx, MSG);
	ok(ctx.nhdrs == 0 && strcmp(ctx.result, "none") == 0,
	    "untrusted client: not signed, verified (none)");

	/* From domain not ours / two mailboxes / two From fields */
	m2 = test_replace(MSG, "alice@example.com", "alice@example.org");
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_run(inst, &ctx, m2);
	ok(ctx.nhdrs == 0 && strcmp(ctx.result, "none") == 0,
	    "From example.org (no key): not signed, verified instead");
	free(m2);
	m2 = test_replace(MSG, "<alice@example.com>", "<alice@example.com>, carol@example.com");
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_run(inst, &ctx, m2);
	ok(ctx.nhdrs == 0, "From with two mailboxes: not signed");
	free(m2);
	m2 = test_concat("From: alice@example.com\r\n", MSG);
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_run(inst, &ctx, m2);
	ok(ctx.nhdrs == 0, "two From fields: not signed");
	free(m2);

	/*
	 * obsolete "From :" syntax (RFC 5322 4.5.8): dkimpy and OpenDKIM do
	 * not take it for a From field, so it is not signed
	 */
	m2 = test_replace(MSG, "From: Alice", "From : Alice");
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_run(inst, &ctx, m2);
	ok(ctx.nhdrs == 0, "\"From : ...\" (blank before the colon): not signed");
	free(m2);

	/* PKCS#1 key, From in upper case */
	m2 = test_replace(MSG, "alice@example.com", "ALICE@EXAMPLE.NET");
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_feed(inst, &ctx, m2, strlen(m2), 65536, 0);
	ok(ctx.nhdrs == 1 && strstr(ctx.hdrs[0].value, "d=example.net") &&
	    strstr(ctx.hdrs[0].value, "s=p1"),
	    "From ALICE@EXAMPLE.NET: signed d=example.net with the PKCS#1 key");
	relayed = test_relayed(&ctx, m2);
	test_ctx_end(&ctx);
	st = test_dkimpy_verify(relayed, "--key p1._domainkey.example.net=rsa2048-pkcs1", &out);
	ok(st == 0, "dkimpy verifies the PKCS#1-key signature");
	if (st != 0)
		diag_out(out);
	free(out);
	free(relayed);
	free(m2);

	/* a header-only message, and one with "Subject:" without the space */
	m2 = strdup("From: alice@example.com\r\nSubject:no space\r\nTo:\r\n bob@example.org\r\n");
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	test_feed(inst, &ctx, m2, strlen(m2), 65536, 0);
	relayed = test_relayed(&ctx, m2);
	test_ctx_end(&ctx);
	st = test_dkimpy_verify(relayed, "--key rsa._domainkey.example.com=rsa2048 "
	    "--key ed._domainkey.example.com=ed25519", &out);
	ok(st == 0, "header-only message with odd spacing and folds: dkimpy verifies");
	if (st != 0)
		diag_out(out);
	free(out);
	free(relayed);
	free(m2);

	/* the core refuses the field: sign_error, tempfail */
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	ctx.insert_fail = 1;
	v = test_run(inst, &ctx, MSG);
	ok(v == FMX_TEMPFAIL && strcmp(ctx.result, "sign_error") == 0 &&
	    strncmp(ctx.reply, "451 4.7.0", 9) == 0,
	    "signing refused by the core: result sign_error, 451");
	/* the spool cannot be read */
	test_ctx_init(&ctx);
	ctx.client_addr = "127.0.0.1";
	ctx.read_fail = 1;
	v = test_run(inst, &ctx, MSG);
	ok(v == FMX_TEMPFAIL && strcmp(ctx.result, "sign_error") == 0,
	    "spool unreadable while signing: sign_error, tempfail");
	dkim_filter()->fini(inst);

	/* relaxed/simple signing */
	snprintf(opt, sizeof opt, "sign=example.com:rsa:" TEST_DATA "rsa2048.pem");
	{
		const char *o2[] = { opt, "trusted=127.0.0.1", "canon=relaxed/simple",
		    "sign_headers=from:to:subject:subject:date", NULL };

		inst = test_inst(o2);
		ok(inst != NULL, "instance: relaxed/simple, Subject oversigned too");
		if (inst != NULL) {
			test_ctx_init(&ctx);
			ctx.client_addr = "127.0.0.1";
			test_feed(inst, &ctx, MSG, strlen(MSG), 65536, 0);
			ok(ctx.nhdrs == 1 && strstr(ctx.hdrs[0].value, "c=relaxed/simple") &&
			    strstr(ctx.hdrs[0].value, "; h=From:To:Subject:Date:subject;"),
			    "c=relaxed/simple, h=From:To:Subject:Date:subject (%.50s)",
			    ctx.nhdrs ? strstr(ctx.hdrs[0].value, "; h=") : "");
			relayed = test_relayed(&ctx, MSG);
			test_ctx_end(&ctx);
			st = test_dkimpy_verify(relayed,
			    "--key rsa._domainkey.example.com=rsa2048", &out);
			ok(st == 0, "dkimpy verifies the relaxed/simple signature");
			if (st != 0)
				diag_out(out);
			free(out);
			m2 = test_concat("Subject: second subject\r\n", relayed);
			st = test_dkimpy_verify(m2, "--key rsa._domainkey.example.com=rsa2048", NULL);
			ok(st == 1, "an added second Subject breaks it (oversigned)");
			free(m2);
			free(relayed);
			dkim_filter()->fini(inst);
		}
	}
}

int
main(void)
{
	void *inst;

	plan(160);
	if (access(TEST_DATA "rsa2048.pem", R_OK) != 0) {
		printf("Bail out! run from the repository root (%s missing)\n",
		    TEST_DATA "rsa2048.pem");
		return 1;
	}
	test_from_parser();
	test_body_length();
	test_txt_parser();
	test_init_options();
	inst = test_inst(NULL);
	ok(inst != NULL, "verifying instance");
	if (inst != NULL) {
		test_verify_dkimpy(inst);
		test_verify_dns(inst);
		dkim_filter()->fini(inst);
	}
	test_verify_cap();
	test_sign();
	return done_testing();
}
