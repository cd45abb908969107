/*
 * test_content.c - unit tests for filters/content.c
 *
 * NAME
 *	test_content - rule file parsing and the content filter's verdicts
 *
 * SYNOPSIS
 *	build/unit/test_content		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	The filter runs against a stub of struct fmx_api defined here: log
 *	lines are collected per context, set_result/set_reply are recorded
 *	(set_reply validates like the core: 4xx/5xx, no CR/LF), msg_read
 *	serves the message from memory in short reads, and the per-message
 *	data is freed at "end of message" as the core does after eom or
 *	abort.  struct fmx_ctx, opaque to modules, is ours to define.
 *
 *	test_feed() plays the core's part for one message: each header field
 *	(name, raw value with folds) to on_header, the body in chunks of a
 *	given size to on_body, then on_eom.  It keeps calling hooks after a
 *	verdict and returns the first one that is not CONTINUE, so the test
 *	also proves the filter decides only once per message.
 *
 *	Rules come from the .rules files in t/unit/content/; a rule's line number is
 *	looked up by a marker it contains, so the fixture can change.  Bad
 *	rule files are written to temporary files from a table.
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontmx_filter.h"
#include <glib.h>

#include "content.h"
#include "tap.h"

#define TEST_RULES	"t/unit/content/test.rules"
#define TEST_DEEP	"t/unit/content/deep.rules"
#define TEST_LIMIT	"t/unit/content/limit.rules"
#define TEST_FIXTURES	"t/unit/content/"
#define TEST_LOG_MAX	64
#define TEST_LINE_MAX	512
#define TEST_MSG_MAX	(1024 * 1024)

/* The core's side of one (session, filter) pair, as the stub sees it. */
struct fmx_ctx {
	const char	*msg;		/* the message as received, CRLF */
	size_t		 msglen;
	size_t		 readmax;	/* bytes per msg_read call, to split reads */
	int		 read_fail;

	void		*data;
	fmx_free_fn	 data_free;
	int		 data_sets;	/* set_msg_data calls this message */

	char		 result[64];
	char		 reason[TEST_LINE_MAX];
	int		 nresult;
	char		 reply[TEST_LINE_MAX];
	int		 nreply;

	char		 log[TEST_LOG_MAX][TEST_LINE_MAX];
	size_t		 nlog;		/* lines logged, including those not kept */
};

/* init() logs without a context. */
static struct fmx_ctx test_initlog;

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
		if (getenv("TEST_VERBOSE") != NULL)
			fprintf(stderr, "# log: %s\n", ctx->log[ctx->nlog]);
	}
	ctx->nlog++;
}

static void *
test_msg_data(struct fmx_ctx *ctx)
{
	return ctx->data;
}

static void
test_set_msg_data(struct fmx_ctx *ctx, void *data, fmx_free_fn fn)
{
	/* Replacing is unspecified in the API: count it, a test checks for 1. */
	if (ctx->data != NULL && ctx->data_free != NULL)
		ctx->data_free(ctx->data);
	ctx->data = data;
	ctx->data_free = fn;
	ctx->data_sets++;
}

/* The core's check, in short: one line, 4xx/5xx, no CR/LF/NUL. */
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
	if (strpbrk(reason, "\r\n") != NULL)
		return -1;
	snprintf(ctx->result, sizeof ctx->result, "%s", result);
	snprintf(ctx->reason, sizeof ctx->reason, "%s", reason);
	ctx->nresult++;
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

/* Only what the content filter may call; any other call crashes the test. */
static const struct fmx_api test_api = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_api),
	.log = test_log,
	.msg_data = test_msg_data,
	.set_msg_data = test_set_msg_data,
	.set_reply = test_set_reply,
	.set_result = test_set_result,
	.msg_read = test_msg_read,
};

static int
test_logged(const struct fmx_ctx *ctx, const char *needle)
{
	size_t i;

	for (i = 0; i < ctx->nlog && i < TEST_LOG_MAX; i++)
		if (strstr(ctx->log[i], needle) != NULL)
			return 1;
	return 0;
}

/* What the core does after eom or abort. */
static void
test_end_message(struct fmx_ctx *ctx)
{
	if (ctx->data != NULL && ctx->data_free != NULL)
		ctx->data_free(ctx->data);
	ctx->data = NULL;
	ctx->data_free = NULL;
	ctx->data_sets = 0;
}

static void
test_reset(struct fmx_ctx *ctx)
{
	test_end_message(ctx);
	memset(ctx, 0, sizeof *ctx);
	ctx->readmax = 7;	/* odd and tiny: the parser's reads get split */
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

/* ---------------------------------------------------------------- */
/* Messages */

/* LF text to CRLF, malloc'd; the fixtures are kept with LF in git. */
static char *
test_crlf(const char *in, size_t len, size_t *outlen)
{
	char *out;
	size_t i, n = 0;

	if ((out = malloc(len * 2 + 1)) == NULL)
		abort();
	for (i = 0; i < len; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			out[n++] = '\r';
		out[n++] = in[i];
	}
	out[n] = '\0';
	*outlen = n;
	return out;
}

static char *
test_fixture(const char *name, size_t *len)
{
	char path[256], *raw, *msg;
	size_t n;
	FILE *fp;

	snprintf(path, sizeof path, "%s%s", TEST_FIXTURES, name);
	if ((fp = fopen(path, "r")) == NULL || (raw = malloc(TEST_MSG_MAX)) == NULL) {
		printf("Bail out! cannot read %s\n", path);
		exit(1);
	}
	n = fread(raw, 1, TEST_MSG_MAX, fp);
	fclose(fp);
	msg = test_crlf(raw, n, len);
	free(raw);
	return msg;
}

/* A plain message: a fixed header, then extra fields, then the body. */
static char *
test_simple(const char *fields, const char *body, size_t *len)
{
	char *lf, *msg;
	size_t n;

	n = strlen(fields) + strlen(body) + 256;
	if ((lf = malloc(n)) == NULL)
		abort();
	snprintf(lf, n, "From: alice@example.org\nTo: bob@example.com\n"
	    "Subject: lunch\n%s\n%s", fields, body);
	msg = test_crlf(lf, strlen(lf), len);
	free(lf);
	return msg;
}

/* k multipart levels inside each other; the innermost text part is at depth k. */
static char *
test_nested(unsigned k, size_t *len)
{
	size_t cap = 256 + (size_t)k * 160, n = 0;
	char *m;
	unsigned i;

	if ((m = malloc(cap)) == NULL)
		abort();
	n += (size_t)snprintf(m + n, cap - n, "From: a@example.org\r\n"
	    "Subject: nested\r\nMIME-Version: 1.0\r\n");
	for (i = 1; i <= k; i++)
		n += (size_t)snprintf(m + n, cap - n, "Content-Type: multipart/mixed; "
		    "boundary=\"b%u\"\r\n\r\n--b%u\r\n", i, i);
	n += (size_t)snprintf(m + n, cap - n, "Content-Type: text/plain\r\n\r\nhi\r\n");
	for (i = k; i >= 1; i--)
		n += (size_t)snprintf(m + n, cap - n, "--b%u--\r\n", i);
	*len = n;
	return m;
}

/* One multipart with n text parts: n + 1 entities. */
static char *
test_parts(unsigned nparts, size_t *len)
{
	size_t cap = 256 + (size_t)nparts * 64, n = 0;
	char *m;
	unsigned i;

	if ((m = malloc(cap)) == NULL)
		abort();
	n += (size_t)snprintf(m + n, cap - n, "From: a@example.org\r\n"
	    "Subject: parts\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n");
	for (i = 0; i < nparts; i++)
		n += (size_t)snprintf(m + n, cap - n,
		    "--p\r\nContent-Type: text/plain\r\n\r\npart %u\r\n", i);
	n += (size_t)snprintf(m + n, cap - n, "--p--\r\n");
	*len = n;
	return m;
}

/*
 * The core's part for one message.  Header fields are cut out of the
 * message the way the core hands them over: name, then the raw value
 * after the colon, folds kept as CRLF + WSP, no final CRLF.
 */
static enum fmx_verdict
test_feed(const struct fmx_filter *f, void *inst, struct fmx_ctx *ctx,
    const char *msg, size_t len, size_t chunk)
{
	enum fmx_verdict v, first = FMX_CONTINUE;
	const char *p = msg, *end = msg + len, *eol, *fend, *colon;
	char name[128], *value;
	size_t off;

	ctx->msg = msg;
	ctx->msglen = len;
	while (p < end) {
		if ((eol = strstr(p, "\r\n")) == NULL)
			break;
		if (eol == p) {		/* the empty line */
			p += 2;
			break;
		}
		fend = eol;
		while (fend + 2 < end && (fend[2] == ' ' || fend[2] == '\t'))
			if ((fend = strstr(fend + 2, "\r\n")) == NULL)
				abort();
		colon = memchr(p, ':', (size_t)(fend - p));
		if (colon == NULL || (size_t)(colon - p) >= sizeof name)
			abort();
		memcpy(name, p, (size_t)(colon - p));
		name[colon - p] = '\0';
		if ((value = strndup(colon + 1, (size_t)(fend - colon - 1))) == NULL)
			abort();
		v = f->on_header(inst, ctx, name, value);
		free(value);
		if (first == FMX_CONTINUE)
			first = v;
		p = fend + 2;
	}
	for (off = (size_t)(p - msg); off < len; off += chunk) {
		v = f->on_body(inst, ctx, (const unsigned char *)msg + off,
		    len - off < chunk ? len - off : chunk);
		if (first == FMX_CONTINUE)
			first = v;
	}
	v = f->on_eom(inst, ctx);
	if (first == FMX_CONTINUE)
		first = v;
	test_end_message(ctx);
	return first;
}

/* Line number of the first line of path containing marker, 0 if none. */
static unsigned
test_rule_line(const char *path, const char *marker)
{
	char line[1024];
	unsigned n = 0;
	FILE *fp;

	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof line, fp) != NULL) {
		n++;
		if (strstr(line, marker) != NULL) {
			fclose(fp);
			return n;
		}
	}
	fclose(fp);
	return 0;
}

static int
test_reason_is(const struct fmx_ctx *ctx, const char *path, const char *marker)
{
	char want[TEST_LINE_MAX];

	snprintf(want, sizeof want, "rule %s:%u matched", path,
	    test_rule_line(path, marker));
	return strcmp(ctx->reason, want) == 0;
}

/* ---------------------------------------------------------------- */
/* Rule files */

struct test_rules_case {
	const char	*name;
	const char	*text;		/* written to a temporary file */
	const char	*expect;	/* NULL: loads; else err after "PATH" */
};

/* Line 1 is a comment and line 2 blank in every case, so errors are on 3+. */
#define TEST_HEAD "# comment\n\n"

static const struct test_rules_case test_rules_cases[] = {
	{ "good minimal", TEST_HEAD "header /x/ REJECT\n", NULL },
	{ "empty file", "", NULL },
	{ "lower-case action, DEFER alias, CRLF file", TEST_HEAD
	  "body /x/ reject\r\nheader /y/ Defer\r\n", NULL },
	{ "escaped slash and backslash", TEST_HEAD
	  "header /a\\/b\\\\/ TAG\n", NULL },
	{ "indented comment", TEST_HEAD "   # indented\nmime /x/ WARN\n", NULL },
	{ "unknown scope", TEST_HEAD "bodyy /x/ REJECT\n",
	  ":3: unknown scope \"bodyy\" (expected header, body, mime or filename)" },
	{ "missing pattern", TEST_HEAD "header\n", ":3: missing /pattern/" },
	{ "bad delimiter", TEST_HEAD "header |x| REJECT\n",
	  ":3: pattern must be delimited by '/', found '|'" },
	{ "negation", TEST_HEAD "header !/^Date:/ REJECT\n",
	  ":3: negated patterns (!/.../) are not supported" },
	{ "unterminated pattern", TEST_HEAD "header /abc REJECT\n",
	  ":3: unterminated pattern" },
	{ "escaped closing slash", TEST_HEAD "header /abc\\/ REJECT\n",
	  ":3: unterminated pattern" },
	{ "empty pattern", TEST_HEAD "\n\nheader // REJECT\n", ":5: empty pattern" },
	{ "bad flag", TEST_HEAD "header /x/iq REJECT\n",
	  ":3: unknown flag 'q' (expected i, m, s or x)" },
	{ "PCRE2 compile error", TEST_HEAD "header /a(b/ REJECT\n",
	  ":3: regex error at offset 3: missing closing parenthesis" },
	{ "missing action", TEST_HEAD "header /x/i\n",
	  ":3: missing action after /pattern/" },
	{ "unknown action", TEST_HEAD "header /x/ BOUNCE now\n",
	  ":3: unknown action \"BOUNCE\"" },
	{ "control character in text", TEST_HEAD "header /x/ REJECT bad\001text\n",
	  ":3: text contains a control or non-ASCII byte 0x01 at column 22" },
	{ "tab in text", TEST_HEAD "header /x/ REJECT a\tb\n",
	  ":3: text contains a control or non-ASCII byte 0x09" },
	{ "8-bit text", TEST_HEAD "header /x/ REJECT caf\303\251\n",
	  ":3: text contains a control or non-ASCII byte 0xc3" },
	{ "enhanced code of the wrong class", TEST_HEAD
	  "header /x/ REJECT 4.7.1 nope\n",
	  ":3: enhanced status code 4.7.1 does not match REJECT (expected 5.X.X)" },
	{ "enhanced code of the wrong class, tempfail", TEST_HEAD
	  "header /x/ TEMPFAIL 5.7.1 nope\n",
	  ":3: enhanced status code 5.7.1 does not match TEMPFAIL (expected 4.X.X)" },
	{ "NUL byte", TEST_HEAD "header /x\0y/ REJECT\n", ":3: NUL byte in line" },
	/* Words echoed from the file never carry a raw control byte. */
	{ "CR inside the scope word", TEST_HEAD "head\rer /x/ REJECT\n",
	  ":3: unknown scope \"head?er\" (expected header, body, mime or filename)" },
	{ "escape and 8-bit bytes in the action", TEST_HEAD
	  "header /x/ BO\033U\303\251NCE\n", ":3: unknown action \"BO?U??NCE\"" },
	{ "error after good rules", TEST_HEAD "header /a/ TAG\nbody /b/ TAG\n"
	  "mime /c/ TAG\nfilename /d/ nope\n", ":6: unknown action \"nope\"" },
};

/*
 * Writes text (len bytes: cases may hold a NUL) to a temporary file;
 * returns its path in path.
 */
static void
test_write_temp(char *path, size_t pathlen, const char *text, size_t len)
{
	const char *dir = getenv("TMPDIR");
	int fd;

	snprintf(path, pathlen, "%s/test_content.XXXXXX", dir ? dir : "/tmp");
	if ((fd = mkstemp(path)) == -1 || write(fd, text, len) != (ssize_t)len) {
		printf("Bail out! cannot write %s\n", path);
		exit(1);
	}
	close(fd);
}

static size_t
test_case_len(const struct test_rules_case *c)
{
	/* The NUL case: the text runs on after its embedded NUL. */
	if (strstr(c->name, "NUL") != NULL)
		return strlen(c->text) + 1 + strlen(c->text + strlen(c->text) + 1);
	return strlen(c->text);
}

static void
test_rules_table(void)
{
	char path[256], err[CONTENT_ERR_MAX], want[CONTENT_ERR_MAX + 256];
	const struct test_rules_case *c;
	struct content_rules *rules;
	size_t i;
	int rc;

	for (i = 0; i < sizeof test_rules_cases / sizeof test_rules_cases[0]; i++) {
		c = &test_rules_cases[i];
		test_write_temp(path, sizeof path, c->text, test_case_len(c));
		rc = content_rules_load(path, &rules, err, sizeof err);
		if (c->expect == NULL) {
			ok(rc == 0 && rules != NULL, "rules: %s loads%s%s", c->name,
			    rc ? ": " : "", rc ? err : "");
		} else {
			/* The exact "PATH:LINE: " prefix, then the message. */
			snprintf(want, sizeof want, "%s%s", path, c->expect);
			ok(rc == -1 && rules == NULL &&
			    strncmp(err, want, strlen(want)) == 0,
			    "rules: %s -> \"%s\" (got \"%s\")", c->name, c->expect, err);
		}
		content_rules_free(rules);
		unlink(path);
	}
}

static void
test_rules_files(void)
{
	char err[CONTENT_ERR_MAX], path[256], *big;
	struct content_rules *rules;
	int rc;

	rc = content_rules_load(TEST_RULES, &rules, err, sizeof err);
	ok(rc == 0 && content_rules_count(rules) == 25,
	    "rules: fixture loads with 25 rules (%zu)%s", content_rules_count(rules),
	    rc ? err : "");
	content_rules_free(rules);

	rc = content_rules_load("conf/content.rules", &rules, err, sizeof err);
	ok(rc == 0 && content_rules_count(rules) > 0,
	    "rules: shipped conf/content.rules loads%s%s", rc ? ": " : "", rc ? err : "");
	content_rules_free(rules);

	rc = content_rules_load("t/unit/content/does-not-exist.rules", &rules, err, sizeof err);
	ok(rc == -1 && strcmp(err, "t/unit/content/does-not-exist.rules: cannot open: "
	    "No such file or directory") == 0, "rules: missing file (%s)", err);

	rc = content_rules_load("t/unit/content", &rules, err, sizeof err);
	ok(rc == -1 && strcmp(err, "t/unit/content: cannot open: Is a directory") == 0,
	    "rules: directory (%s)", err);

	/* One line over the limit, followed by a good one. */
	if ((big = malloc(5000 + 64)) == NULL)
		abort();
	memcpy(big, "header /", 8);
	memset(big + 8, 'a', 5000);
	memcpy(big + 5008, "/ TAG\nheader /x/ TAG\n", 22);
	test_write_temp(path, sizeof path, big, strlen(big));
	rc = content_rules_load(path, &rules, err, sizeof err);
	ok(rc == -1 && strstr(err, ":1: line longer than 4096 bytes") != NULL,
	    "rules: over-long line (%s)", err);
	unlink(path);

	/* Text of 401 characters. */
	memcpy(big, "header /x/ REJECT ", 18);
	memset(big + 18, 't', 401);
	memcpy(big + 419, "\n", 2);
	test_write_temp(path, sizeof path, big, strlen(big));
	rc = content_rules_load(path, &rules, err, sizeof err);
	ok(rc == -1 && strstr(err, ":1: text longer than 400 characters") != NULL,
	    "rules: over-long text (%s)", err);
	unlink(path);
	free(big);
}

/* ---------------------------------------------------------------- */
/* init() */

static void
test_init(const struct fmx_filter *f)
{
	const char *o_none[] = { "max_depth=3" };
	const char *o_depth[] = { ("rules=" TEST_RULES), "max_depth=0" };
	const char *o_parts[] = { ("rules=" TEST_RULES), "max_parts=12x" };
	const char *o_unknown[] = { ("rules=" TEST_RULES), "maxdepth=3" };
	const char *o_noeq[] = { "rules" };
	const char *o_spaces[] = { (" rules = " TEST_RULES), "max_parts = 40 " };
	const char *o_jit_on[] = { ("rules=" TEST_RULES), "jit=on" };
	const char *o_jit_off[] = { ("rules=" TEST_RULES), "jit=False" };
	const char *o_jit_bad[] = { ("rules=" TEST_RULES), "jit=maybe" };
	char path[256], want[300];
	const char *o_bad[1];
	void *inst;

	ok(f->abi_major == FMX_ABI_MAJOR && f->struct_size == sizeof(struct fmx_filter) &&
	    strcmp(f->name, "content") == 0 && f->init != NULL && f->fini != NULL,
	    "init: table is an ABI %u filter named content", f->abi_major);

	memset(&test_initlog, 0, sizeof test_initlog);
	ok(f->init(&test_api, o_none, 1, &inst) == -1 && inst == NULL &&
	    test_logged(&test_initlog, "option rules=PATH is required"),
	    "init: rules is required");
	ok(f->init(&test_api, o_depth, 2, &inst) == -1 &&
	    test_logged(&test_initlog, "max_depth \"0\" is not a number from 1 to 1000"),
	    "init: max_depth 0 refused");
	ok(f->init(&test_api, o_parts, 2, &inst) == -1 &&
	    test_logged(&test_initlog, "max_parts \"12x\""), "init: max_parts 12x refused");
	ok(f->init(&test_api, o_unknown, 2, &inst) == -1 &&
	    test_logged(&test_initlog, "unknown option \"maxdepth\""),
	    "init: unknown option refused");
	ok(f->init(&test_api, o_noeq, 1, &inst) == -1 &&
	    test_logged(&test_initlog, "bad option \"rules\""), "init: option without '='");

	/* A bad rule file: init fails and logs "PATH:LINE: message". */
	test_write_temp(path, sizeof path, "header /ok/ TAG\nheader /x/ NOPE\n", 32);
	snprintf(want, sizeof want, "rules=%s", path);
	o_bad[0] = want;
	memset(&test_initlog, 0, sizeof test_initlog);
	ok(f->init(&test_api, o_bad, 1, &inst) == -1 && inst == NULL,
	    "init: bad rule file fails");
	snprintf(want, sizeof want, "%s:2: unknown action \"NOPE\"", path);
	ok(test_initlog.nlog == 1 && strncmp(test_initlog.log[0], want, strlen(want)) == 0,
	    "init: logs \"%s\"", want);
	unlink(path);

	ok(f->init(&test_api, o_spaces, 2, &inst) == 0 && inst != NULL,
	    "init: spaces around key and value");
	f->fini(inst);

	/* jit takes the one spelling set (str_bool): it took yes/no only. */
	ok(f->init(&test_api, o_jit_on, 2, &inst) == 0 && inst != NULL,
	    "init: jit=on accepted");
	f->fini(inst);
	ok(f->init(&test_api, o_jit_off, 2, &inst) == 0 && inst != NULL,
	    "init: jit=False accepted");
	f->fini(inst);
	ok(f->init(&test_api, o_jit_bad, 2, &inst) == -1 &&
	    test_logged(&test_initlog, "jit \"maybe\" is not a boolean"),
	    "init: jit=maybe refused");
}

/* ---------------------------------------------------------------- */
/* Verdicts */

struct test_msg_case {
	const char	*name;
	const char	*fixture;	/* t/unit/content/NAME, or: */
	const char	*fields;	/* extra header fields (LF) */
	const char	*body;
	enum fmx_verdict verdict;
	const char	*result;	/* NULL: set_result must not be called */
	const char	*marker;	/* of the rule expected in the reason */
	const char	*reply;		/* NULL: set_reply must not be called */
};

static const struct test_msg_case test_msg_cases[] = {
	/* No match. */
	{ "plain message matches nothing", NULL, "", "Hello Bob,\nlunch at noon?\n",
	  FMX_CONTINUE, NULL, NULL, NULL },
	{ "clean multipart with a PDF", "clean-pdf.eml", NULL, NULL,
	  FMX_CONTINUE, NULL, NULL, NULL },
	{ "header rules are anchored to their field", NULL, "X-Subject-Like: viagra\n",
	  "Subject line in the body: viagra\n", FMX_CONTINUE, NULL, NULL, NULL },

	/* Header scope, raw and decoded. */
	{ "header raw", NULL, "Subject: buy VIAGRA now\n", "x\n",
	  FMX_REJECT, "reject", "viagra", "550 5.7.1 Spam not accepted" },
	{ "header with space before the colon (obsolete syntax)", NULL,
	  "Subject : buy VIAGRA now\n", "x\n",
	  FMX_REJECT, "reject", "viagra", "550 5.7.1 Spam not accepted" },
	{ "header RFC 2047 B", NULL,
	  "Subject: =?UTF-8?B?Q2hlYXAgVklBR1JBIGhlcmU=?=\n", "x\n",
	  FMX_REJECT, "reject", "viagra", "550 5.7.1 Spam not accepted" },
	{ "header RFC 2047 Q, folded", NULL,
	  "Subject: =?UTF-8?Q?hello?=\n =?UTF-8?Q?_viagra?=\n", "x\n",
	  FMX_REJECT, "reject", "viagra", "550 5.7.1 Spam not accepted" },
	{ "folded header unfolds with its white space", NULL,
	  "X-Multi: first\n\tsecond\n", "x\n", FMX_TAG, "tag", "X-Multi", NULL },
	{ "escaped slash in pattern", NULL, "X-Slash: a/b\n", "x\n",
	  FMX_QUARANTINE, "quarantine", "X-Slash", NULL },
	{ "x flag", NULL, "X-Extended: 12 apples\n", "x\n",
	  FMX_DISCARD, "discard", "X-Extended", NULL },

	/* Every action. */
	{ "TAG", NULL, "X-Tag-Me: yes\n", "x\n", FMX_TAG, "tag", "X-Tag-Me", NULL },
	{ "QUARANTINE", NULL, "X-Quarantine-Me: 1\n", "x\n",
	  FMX_QUARANTINE, "quarantine", "X-Quarantine-Me", NULL },
	{ "DISCARD", NULL, "X-Discard-Me: 1\n", "x\n",
	  FMX_DISCARD, "discard", "X-Discard-Me", NULL },
	{ "DEFER with an enhanced code", NULL, "X-Defer-Me: 1\n", "x\n",
	  FMX_TEMPFAIL, "tempfail", "X-Defer-Me", "451 4.7.0 Come back later" },
	{ "TEMPFAIL without text", NULL, "X-Tempfail-Plain: 1\n", "x\n",
	  FMX_TEMPFAIL, "tempfail", "X-Tempfail-Plain",
	  "451 4.7.1 Message content deferred, try again later" },
	{ "REJECT without text", NULL, "X-Reject-Plain: 1\n", "x\n",
	  FMX_REJECT, "reject", "X-Reject-Plain", "550 5.7.1 Message content rejected" },
	{ "ACCEPT", NULL, "x-accept-me: ok\n", "x\n",
	  FMX_ACCEPT, "accept", "X-Accept-Me", NULL },
	{ "WARN continues", NULL, "X-Warn-Me: 1\n", "x\n",
	  FMX_CONTINUE, NULL, NULL, NULL },
	{ "WARN on the decoded form, a later rule on the raw form", NULL,
	  "X-Enc: =?UTF-8?Q?decoded-warn?=\n", "x\n", FMX_TAG, "tag", "raw form after", NULL },
	{ "WARN, then a later rule decides", NULL, "X-Warn-Me: 1\nX-Tag-Me: yes\n", "x\n",
	  FMX_TAG, "tag", "X-Tag-Me", NULL },

	/* First match wins. */
	{ "first of two rules on one field", NULL, "X-Both: 1\n", "x\n",
	  FMX_TAG, "tag", "TAG first of two", NULL },
	{ "first field in arrival order", NULL,
	  "X-Discard-Me: 1\nSubject: viagra\n", "x\n",
	  FMX_DISCARD, "discard", "X-Discard-Me", NULL },
	{ "header before body", NULL, "X-Tag-Me: yes\n", "casino bonus\n",
	  FMX_TAG, "tag", "X-Tag-Me", NULL },
	{ "body before MIME", "body-and-exe.eml", NULL, NULL,
	  FMX_TAG, "tag", "casino bonus", NULL },

	/* Body scope. */
	{ "body line", NULL, "", "Hi,\nget your casino bonus today\nbye\n",
	  FMX_TAG, "tag", "casino bonus", NULL },
	{ "body anchors see the line without CRLF", NULL, "",
	  "a\nsplit-me-exactly\nb\n", FMX_REJECT, "reject", "split-me-exactly",
	  "550 5.7.0 Split line caught" },
	{ "body warn only", NULL, "", "x body-warn-marker y\n",
	  FMX_CONTINUE, NULL, NULL, NULL },

	/* MIME and file names. */
	{ "filename=\"x.exe\"", "attach-plain.eml", NULL, NULL,
	  FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "RFC 2231 filename*=UTF-8''evil%2Eexe", "attach-2231.eml", NULL, NULL,
	  FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "RFC 2231 continuation filename*0/1", "attach-2231-cont.eml", NULL, NULL,
	  FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "RFC 2047 name=\"=?UTF-8?Q?evil=2Eexe?=\"", "attach-2047.eml", NULL, NULL,
	  FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "Content-Type name checked when filename differs", "attach-two-names.eml",
	  NULL, NULL, FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "mime Content-Type rule", "msdownload.eml", NULL, NULL,
	  FMX_REJECT, "reject", "x-msdownload", "550 5.7.1 Executables not accepted" },
	{ "mime rule on a decoded ISO-8859-1 value", "description-2047.eml", NULL, NULL,
	  FMX_TAG, "tag", "Content-Description", NULL },
	{ "attachment inside an attached message", "nested-rfc822.eml", NULL, NULL,
	  FMX_REJECT, "reject", "filename", "550 5.7.1 Dangerous attachment" },
	{ "header of an attached message, decoded", "nested-subject.eml", NULL, NULL,
	  FMX_QUARANTINE, "quarantine", "inner-forbidden", NULL },
};

static void
test_messages(const struct fmx_filter *f, void *inst)
{
	static const size_t chunks[] = { 65536, 1, 2, 3 };
	const struct test_msg_case *c;
	struct fmx_ctx ctx;
	enum fmx_verdict v;
	size_t i, k, len;
	char *msg;
	int good;

	memset(&ctx, 0, sizeof ctx);
	for (i = 0; i < sizeof test_msg_cases / sizeof test_msg_cases[0]; i++) {
		c = &test_msg_cases[i];
		msg = c->fixture ? test_fixture(c->fixture, &len) :
		    test_simple(c->fields, c->body, &len);
		/* Every case under big chunks, 1-byte chunks and two odd sizes. */
		good = 1;
		for (k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
			test_reset(&ctx);
			v = test_feed(f, inst, &ctx, msg, len, chunks[k]);
			if (v != c->verdict ||
			    (c->result == NULL ? ctx.nresult != 0 :
			    ctx.nresult != 1 || strcmp(ctx.result, c->result) != 0 ||
			    !test_reason_is(&ctx, TEST_RULES, c->marker)) ||
			    (c->reply == NULL ? ctx.nreply != 0 :
			    ctx.nreply != 1 || strcmp(ctx.reply, c->reply) != 0)) {
				good = 0;
				printf("# chunk %zu: verdict %s result %s (%d) reason \"%s\" "
				    "reply \"%s\" (%d)\n", chunks[k], test_verdict_name(v),
				    ctx.result, ctx.nresult, ctx.reason, ctx.reply, ctx.nreply);
				break;
			}
		}
		ok(good, "%s -> %s%s%s", c->name, test_verdict_name(c->verdict),
		    c->reply ? " " : "", c->reply ? c->reply : "");
		free(msg);
	}
	test_reset(&ctx);
}

/* Body lines: CRLF split between chunks, over-long lines. */
static void
test_body_lines(const struct fmx_filter *f, void *inst)
{
	struct fmx_ctx ctx;
	enum fmx_verdict v;
	size_t len, n, split;
	char *body, *big, *msg;
	int good;

	memset(&ctx, 0, sizeof ctx);

	/* The line's CR and LF in different chunks, at every split point. */
	msg = test_simple("", "first line\nsplit-me-exactly\nlast\n", &len);
	n = strstr(msg, "split-me-exactly\r\n") - msg;
	good = 1;
	for (split = n; split <= n + 18; split++) {
		test_reset(&ctx);
		ctx.msg = msg;
		ctx.msglen = len;
		/* Everything before the body in one go through test_feed's parser
		 * would not let us pick the split, so drive on_body directly. */
		v = f->on_body(inst, &ctx, (const unsigned char *)strstr(msg, "\r\n\r\n") + 4,
		    split - (size_t)(strstr(msg, "\r\n\r\n") + 4 - msg));
		if (v == FMX_CONTINUE)
			v = f->on_body(inst, &ctx, (const unsigned char *)msg + split, len - split);
		if (v != FMX_REJECT || strcmp(ctx.reply, "550 5.7.0 Split line caught") != 0)
			good = 0;
		test_end_message(&ctx);
	}
	ok(good, "body: line found wherever the chunk boundary falls (CR|LF too)");
	free(msg);

	if ((body = malloc(4096)) == NULL)
		abort();

	/*
	 * Lines are matched whole (the core bounds them by its
	 * limits.line_length): text past byte 1000 cannot hide from a rule.
	 */
	memset(body, 'B', 1500);
	strcpy(body + 1500, "LONGLINE-TAIL\nend\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 1);
	ok(v == FMX_REJECT && strcmp(ctx.reply, "550 5.7.1 Long line tail") == 0,
	    "body: a 1513-byte line is matched whole, its tail too (%s)",
	    test_verdict_name(v));
	free(msg);

	memset(body, 'B', 987);
	strcpy(body + 987, "LONGLINE-TAIL\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 3);
	ok(v == FMX_REJECT && strcmp(ctx.reply, "550 5.7.1 Long line tail") == 0,
	    "body: a 1000-byte line is matched whole (%s)", test_verdict_name(v));
	free(msg);

	memset(body, 'B', 988);
	strcpy(body + 988, "LONGLINE-TAIL\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 3);
	ok(v == FMX_REJECT && strcmp(ctx.reply, "550 5.7.1 Long line tail") == 0,
	    "body: a 1001-byte line is matched whole (%s)", test_verdict_name(v));
	free(msg);

	/* Past 1 MiB (more than the core lets through) a line is cut. */
	if ((big = malloc(1048576 + 64)) == NULL)
		abort();
	memset(big, 'B', 1048576);
	strcpy(big + 1048576, "LONGLINE-TAIL\n");
	msg = test_simple("", big, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 65536);
	ok(v == FMX_CONTINUE && ctx.nresult == 0,
	    "body: a line over 1 MiB is matched cut (%s)", test_verdict_name(v));
	free(msg);
	free(big);

	/* Exactly 1000 'B's and CRLF: the CR must not count as content. */
	memset(body, 'B', 1000);
	strcpy(body + 1000, "\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 1000);
	ok(v == FMX_DISCARD, "body: a 1000-byte line fits exactly (%s)", test_verdict_name(v));
	free(msg);

	/* The next line after an over-long one starts clean. */
	memset(body, 'x', 3000);
	strcpy(body + 3000, "\nsplit-me-exactly\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 4096);
	ok(v == FMX_REJECT && test_reason_is(&ctx, TEST_RULES, "split-me-exactly"),
	    "body: the line after an over-long one is whole (%s)", test_verdict_name(v));
	free(msg);

	/* WARN on every line: logged, but not a line per body line. */
	n = 0;
	for (split = 0; split < 100; split++)
		n += (size_t)snprintf(body + n, 4096 - n, "body-warn-marker %zu\n", split);
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 512);
	ok(v == FMX_CONTINUE && ctx.nlog == 16 && test_logged(&ctx, "action=warn") &&
	    test_logged(&ctx, "text=\"body warning\""),
	    "body: 100 WARN matches log 16 lines (%zu)", ctx.nlog);
	free(msg);
	free(body);
	test_reset(&ctx);
}

/* The filter decides once, and each message starts afresh. */
static void
test_state(const struct fmx_filter *f, void *inst)
{
	struct fmx_ctx a, b;
	enum fmx_verdict va, vb;
	char *ma, *mb;
	size_t la, lb, ba, bb;

	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	test_reset(&a);
	test_reset(&b);

	/* A TAG header, then a REJECT body line: only the TAG counts. */
	ma = test_simple("X-Tag-Me: yes\n", "casino bonus\nsplit-me-exactly\n", &la);
	va = test_feed(f, inst, &a, ma, la, 5);
	ok(va == FMX_TAG && a.nresult == 1 && a.nreply == 0,
	    "state: decided once per message (%d results, %d replies)", a.nresult, a.nreply);
	ok(a.data == NULL && a.data_sets == 0, "state: message data released at the end");
	free(ma);

	/* Two sessions interleaved chunk by chunk keep separate line buffers. */
	test_reset(&a);
	test_reset(&b);
	ma = test_simple("", "xx casino bo", &la);
	mb = test_simple("", "harmless bo", &lb);
	ba = (size_t)(strstr(ma, "\r\n\r\n") + 4 - ma);
	bb = (size_t)(strstr(mb, "\r\n\r\n") + 4 - mb);
	va = f->on_body(inst, &a, (const unsigned char *)ma + ba, la - ba);
	vb = f->on_body(inst, &b, (const unsigned char *)mb + bb, lb - bb);
	va = va != FMX_CONTINUE ? va : f->on_body(inst, &a, (const unsigned char *)"nus\r\n", 5);
	vb = vb != FMX_CONTINUE ? vb : f->on_body(inst, &b, (const unsigned char *)"ok\r\n", 4);
	ok(va == FMX_TAG && vb == FMX_CONTINUE && a.data_sets == 1 && b.data_sets == 1,
	    "state: interleaved sessions (a %s, b %s)", test_verdict_name(va),
	    test_verdict_name(vb));
	free(ma);
	free(mb);

	/* Abort (RSET) mid-line: the core frees the state, the next message is new. */
	test_reset(&a);
	va = f->on_body(inst, &a, (const unsigned char *)"split-me-", 9);
	test_end_message(&a);		/* abort: the filter has no on_abort */
	ok(f->on_abort == NULL && va == FMX_CONTINUE, "state: abort mid-line");
	va = f->on_body(inst, &a, (const unsigned char *)"exactly\r\n", 9);
	ok(va == FMX_CONTINUE && a.nresult == 0,
	    "state: after abort the half line is gone (%s)", test_verdict_name(va));
	test_reset(&a);
	test_reset(&b);
}

/* Structure limits and failure paths. */
static void
test_limits(const struct fmx_filter *f, void *inst_default)
{
	const char *o_small[] = { ("rules=" TEST_DEEP), "max_depth=5", "max_parts=10" };
	const char *o_limit[] = { ("rules=" TEST_LIMIT) };
	struct fmx_ctx ctx;
	enum fmx_verdict v;
	void *inst, *linst;
	char *msg, *body;
	size_t len, i;

	memset(&ctx, 0, sizeof ctx);
	if (f->init(&test_api, o_small, 3, &inst) != 0) {
		printf("Bail out! cannot init with %s\n", TEST_DEEP);
		exit(1);
	}

	msg = test_nested(5, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 65536);
	ok(v == FMX_CONTINUE && ctx.nresult == 0, "limits: depth 5 of 5 passes (%s)",
	    test_verdict_name(v));
	free(msg);

	msg = test_nested(6, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 65536);
	ok(v == FMX_REJECT && strcmp(ctx.result, "mime_limit") == 0 &&
	    strcmp(ctx.reply, "554 5.6.0 Error: message structure too complex") == 0,
	    "limits: depth 6 of 5 is mime_limit (%s %s %s)", test_verdict_name(v),
	    ctx.result, ctx.reply);
	free(msg);

	msg = test_parts(9, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 65536);
	ok(v == FMX_CONTINUE, "limits: 10 entities of 10 pass (%s)", test_verdict_name(v));
	free(msg);

	msg = test_parts(10, &len);
	test_reset(&ctx);
	v = test_feed(f, inst, &ctx, msg, len, 65536);
	ok(v == FMX_REJECT && strcmp(ctx.result, "mime_limit") == 0,
	    "limits: 11 entities of 10 are mime_limit (%s)", test_verdict_name(v));
	free(msg);
	test_reset(&ctx);
	f->fini(inst);

	/* Default limits: 21 levels, and far past GMime's own 1024. */
	msg = test_nested(21, &len);
	test_reset(&ctx);
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_REJECT && strcmp(ctx.result, "mime_limit") == 0,
	    "limits: default max_depth 20 (%s)", test_verdict_name(v));
	free(msg);

	msg = test_nested(20, &len);
	test_reset(&ctx);
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_CONTINUE, "limits: 20 levels pass by default (%s)", test_verdict_name(v));
	free(msg);

	msg = test_nested(1500, &len);
	test_reset(&ctx);
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_REJECT && strcmp(ctx.result, "mime_limit") == 0,
	    "limits: 1500 levels (beyond GMime's 1024) (%s)", test_verdict_name(v));
	free(msg);

	msg = test_parts(501, &len);
	test_reset(&ctx);
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_REJECT && strcmp(ctx.result, "mime_limit") == 0,
	    "limits: default max_parts 500 (%s)", test_verdict_name(v));
	free(msg);

	/* msg_read failing at eom: tempfail, never a silent pass. */
	msg = test_fixture("clean-pdf.eml", &len);
	test_reset(&ctx);
	ctx.read_fail = 1;
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_TEMPFAIL && test_logged(&ctx, "cannot read the message"),
	    "limits: msg_read error is tempfail (%s)", test_verdict_name(v));
	free(msg);

	/* A message that is not MIME at all still gets its header rules. */
	msg = test_simple("", "no MIME here\n", &len);
	test_reset(&ctx);
	ctx.readmax = 0;
	v = test_feed(f, inst_default, &ctx, msg, len, 65536);
	ok(v == FMX_CONTINUE && ctx.nresult == 0, "limits: non-MIME message passes");
	free(msg);

	/* A PCRE2 match limit is no match, logged; the next rule still runs. */
	if (f->init(&test_api, o_limit, 1, &linst) != 0) {
		printf("Bail out! cannot init with %s\n", TEST_LIMIT);
		exit(1);
	}
	if ((body = malloc(256)) == NULL)
		abort();
	for (i = 0; i < 40; i++)
		body[i] = 'a';
	strcpy(body + 40, "!\nafter-limit\n");
	msg = test_simple("", body, &len);
	test_reset(&ctx);
	v = test_feed(f, linst, &ctx, msg, len, 65536);
	ok(v == FMX_TAG && test_logged(&ctx, "result=nomatch") &&
	    test_reason_is(&ctx, TEST_LIMIT, "after-limit"),
	    "limits: catastrophic backtracking stops at the match limit (%s)",
	    test_verdict_name(v));
	free(msg);
	free(body);
	test_reset(&ctx);
	f->fini(linst);
}

/*
 * Sessions on different worker threads share the instance: each thread
 * runs whole messages on its own context, as the core would.
 */
struct test_thread {
	const struct fmx_filter	*f;
	void			*inst;
	int			 bad;
};

#define TEST_THREADS	4
#define TEST_THREAD_ROUNDS 50

static void *
test_thread_main(void *arg)
{
	static const struct {
		const char		*fixture;
		enum fmx_verdict	 verdict;
	} msgs[] = {
		{ "attach-2231-cont.eml", FMX_REJECT },
		{ "clean-pdf.eml", FMX_CONTINUE },
		{ "nested-subject.eml", FMX_QUARANTINE },
		{ "body-and-exe.eml", FMX_TAG },
	};
	struct test_thread *t = arg;
	struct fmx_ctx *ctx;
	char *m[4];
	size_t len[4], i, r;

	/* Too big for a thread's stack comfort: the log lines. */
	if ((ctx = calloc(1, sizeof *ctx)) == NULL)
		abort();
	for (i = 0; i < 4; i++)
		m[i] = test_fixture(msgs[i].fixture, &len[i]);
	for (r = 0; r < TEST_THREAD_ROUNDS; r++)
		for (i = 0; i < 4; i++) {
			test_reset(ctx);
			if (test_feed(t->f, t->inst, ctx, m[i], len[i], 1 + r % 9) !=
			    msgs[i].verdict)
				t->bad++;
		}
	test_reset(ctx);
	for (i = 0; i < 4; i++)
		free(m[i]);
	free(ctx);
	return NULL;
}

static void
test_threads(const struct fmx_filter *f, void *inst)
{
	struct test_thread t[TEST_THREADS];
	pthread_t tid[TEST_THREADS];
	int i, bad = 0, started = 0;

	for (i = 0; i < TEST_THREADS; i++) {
		t[i].f = f;
		t[i].inst = inst;
		t[i].bad = 0;
		if (pthread_create(&tid[i], NULL, test_thread_main, &t[i]) == 0)
			started++;
		else
			break;
	}
	for (i = 0; i < started; i++) {
		pthread_join(tid[i], NULL);
		bad += t[i].bad;
	}
	ok(started == TEST_THREADS && bad == 0,
	    "threads: %d sessions x %d messages in parallel (%d wrong)",
	    started, TEST_THREAD_ROUNDS * 4, bad);
}

/* api->header_decode (content_header_decode): GMime's RFC 2047 decoding. */
static void
test_header_decode(void)
{
	static const struct {
		const char	*value;
		size_t		 buflen;
		const char	*want;		/* NULL: only valid UTF-8 asked */
		long		 wantlen;	/* -3: any length >= 0 */
	} cases[] = {
		{ "plain ascii", 64, "plain ascii", 11 },
		{ "=?UTF-8?B?R3LDvMOfZQ==?=", 64, "Gr\xc3\xbc\xc3\x9f" "e", 7 },
		{ "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", 64, "Gr\xc3\xbc\xc3\x9f" "e", 7 },
		/* adjacent encoded words across a fold: the space between goes (RFC 2047 6.2) */
		{ "=?ISO-8859-1?Q?Caf=E9?=\r\n =?ISO-8859-1?Q?_au_lait?=", 64,
		  "Caf\xc3\xa9 au lait", 13 },
		{ "folded\r\n\tplain", 64, "folded\tplain", 12 },
		{ "x =?UTF-8?B?w6k=?= y", 64, "x \xc3\xa9 y", 6 },
		/* CR, LF and NUL carried by an encoded word become spaces */
		{ "=?UTF-8?Q?a=0D=0ABcc:_x?=", 64, "a  Bcc: x", 9 },
		{ "=?UTF-8?Q?a=00b?=", 64, NULL, -3 },
		/* cut short: on a character boundary, the whole length returned */
		{ "=?UTF-8?B?R3LDvMOfZQ==?=", 4, "Gr", 7 },
		{ "=?UTF-8?B?R3LDvMOfZQ==?=", 5, "Gr\xc3\xbc", 7 },
		{ "=?UTF-8?B?R3LDvMOfZQ==?=", 1, "", 7 },
		/* not UTF-8 in, UTF-8 out */
		{ "raw caf\xe9 \xff\xfe", 64, NULL, -3 },
		{ "=?UTF-8?B?////?=", 64, NULL, -3 },
		{ "=?no-such-charset?Q?abc?=", 64, NULL, -3 },
		{ "", 64, "", 0 },
	};
	char buf[64];
	size_t i, j;
	long n;
	int clean;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(buf, 'Z', sizeof buf);
		n = content_header_decode(cases[i].value, buf, cases[i].buflen);
		for (clean = 1, j = 0; j < strlen(buf); j++)
			if ((unsigned char)buf[j] < 0x20 && buf[j] != '\t')
				clean = 0;
		ok(n >= 0 && memchr(buf, '\0', cases[i].buflen) != NULL &&
		    strlen(buf) < cases[i].buflen && g_utf8_validate(buf, -1, NULL) &&
		    clean && (cases[i].wantlen == -3 || n == cases[i].wantlen) &&
		    (cases[i].want == NULL || strcmp(buf, cases[i].want) == 0),
		    "header_decode case %zu: %ld \"%s\"", i, n, buf);
	}
	memset(buf, 'Z', sizeof buf);
	ok(content_header_decode("=?UTF-8?B?R3LDvMOfZQ==?=", buf, 0) == 7 &&
	    buf[0] == 'Z', "header_decode with buflen 0: length only, buf untouched");
	ok(content_header_decode(NULL, buf, sizeof buf) == -1, "header_decode(NULL): -1");
}

int
main(void)
{
	const struct fmx_filter *f = content_filter();
	const char *opts[] = { ("rules=" TEST_RULES) };
	void *inst;
	int round;

	plan(104 + 17);	/* + test_header_decode */
	test_rules_table();
	test_rules_files();
	test_init(f);
	test_header_decode();

	if (f->init(&test_api, opts, 1, &inst) != 0) {
		printf("Bail out! cannot init with %s: %s\n", TEST_RULES,
		    test_initlog.log[0]);
		return 1;
	}
	test_messages(f, inst);
	test_body_lines(f, inst);
	test_state(f, inst);
	test_limits(f, inst);
	test_threads(f, inst);
	f->fini(inst);

	/* Load and free again: ASan's leak check then sees any per-init leak. */
	for (round = 0; round < 3; round++) {
		if (f->init(&test_api, opts, 1, &inst) == 0)
			f->fini(inst);
	}
	return done_testing();
}
