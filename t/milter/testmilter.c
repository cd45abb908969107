/*
 * testmilter - a libmilter milter whose behaviour the command line chooses,
 * for the fault and hostile-milter tests of frontmx's milter client
 * (t/smtp/78-milter-faults.t, t/smtp/79-milter-edits.t) and the milter line
 * of `make bench` (pass-through, no options).
 *
 * It is built with Debian's libmilter (the library every packaged milter
 * but rspamd uses), so what it sends is what a real milter sends: libmilter
 * frames the replies and negotiates.  What libmilter refuses to send (a 2xx
 * custom reply, CR/LF in a reply text, edits before end of body, a higher
 * protocol version) is the raw scripted milter's job (t/lib/fmx_milter.py).
 *
 * usage: testmilter -p CONN [options]
 *   -p CONN          libmilter socket: inet:PORT@127.0.0.1 or unix:PATH
 *   -l FILE          append one line per event (stage and arguments) to FILE
 *   -H STAGE[:SECS]  sleep SECS (default 3600) in that stage's callback, then
 *                    go on as usual (a short SECS gives a late reply)
 *   -X STAGE         _exit(0) in that stage's callback: the kernel closes
 *                    the connection (at "body": mid-body)
 *   -r STAGE:ACTION  answer ACTION at STAGE: reject, tempfail, discard,
 *                    accept, continue, skip (body only)
 *   -R "CODE XCODE TEXT"  smfi_setreply() before a reject/tempfail; a reply
 *                    libmilter refuses is reported on stderr and the log
 *   -Q REASON        smfi_quarantine() at end of message
 *   -a N             add N headers "X-Test-Add-<i>: <i>" at end of message
 *   -A NAME:VALUE    add that header (the value as given: CR/LF included)
 *   -C NAME:IDX:VALUE  change header NAME's IDX-th occurrence (empty: delete)
 *   -I IDX:NAME:VALUE  insert a header at IDX
 *   -f "ADDR [ARGS]" change the envelope sender
 *   -t "ADDR [ARGS]" add a recipient (with ESMTP args: smfi_addrcpt_par)
 *   -d ADDR          delete a recipient
 *   -b BODY          replace the body with BODY (as given)
 *   -N               no reply to headers (protocol flag SMFIP_NR_HDR)
 *
 * STAGE is one of connect helo mail rcpt data header eoh body eom.  Several
 * edits may be combined; they are all made at end of message, in the order
 * above, before the -r action of stage eom.  Prints "ready" on stdout once
 * its socket listens.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

enum stage { ST_NONE = -1, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_DATA, ST_HEADER,
	     ST_EOH, ST_BODY, ST_EOM, ST_COUNT };
static const char *const stage_names[ST_COUNT] = {
	"connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom",
};

#define MAX_EDITS 16

static struct {
	char *conn;
	FILE *log;
	enum stage hang_stage;
	unsigned hang_secs;
	enum stage exit_stage;
	enum stage action_stage;
	sfsistat action;
	char *reply_code, *reply_xcode, *reply_text;
	char *quarantine;
	unsigned long add_count;
	const char *add[MAX_EDITS];
	size_t nadd;
	const char *chg[MAX_EDITS];
	size_t nchg;
	const char *ins[MAX_EDITS];
	size_t nins;
	const char *chgfrom;
	const char *addrcpt[MAX_EDITS];
	size_t naddrcpt;
	char *delrcpt[MAX_EDITS];
	size_t ndelrcpt;
	char *body;
	bool nr_hdr;
} opt = { .hang_stage = ST_NONE, .exit_stage = ST_NONE, .action_stage = ST_NONE,
	  .hang_secs = 3600 };

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void usage(void)
{
	fprintf(stderr, "usage: testmilter -p CONN [-l FILE] [-H STAGE[:SECS]] [-X STAGE]\n"
		"  [-r STAGE:ACTION] [-R 'CODE XCODE TEXT'] [-Q REASON] [-a N] [-A NAME:VALUE]\n"
		"  [-C NAME:IDX:VALUE] [-I IDX:NAME:VALUE] [-f ADDR] [-t ADDR] [-d ADDR]\n"
		"  [-b BODY] [-N]    (see the comment at the top of t/milter/testmilter.c)\n");
	exit(2);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("testmilter: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

/* One line per event; control bytes shown as \xNN so a test reads what
 * arrived, CR/LF included, on one line. */
static void logf_event(const char *fmt, ...)
{
	char buf[8192], out[4 * sizeof buf];
	size_t o = 0;
	va_list ap;

	if (opt.log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	for (const unsigned char *p = (const unsigned char *)buf; *p != '\0' && o + 5 < sizeof out; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
		else
			out[o++] = (char)*p;
	}
	out[o] = '\0';
	pthread_mutex_lock(&log_lock);
	fprintf(opt.log, "%s\n", out);
	fflush(opt.log);
	pthread_mutex_unlock(&log_lock);
}

static enum stage stage_of(const char *name, size_t len)
{
	for (int i = 0; i < ST_COUNT; i++)
		if (strlen(stage_names[i]) == len && strncmp(stage_names[i], name, len) == 0)
			return (enum stage)i;
	die("unknown stage '%.*s'", (int)len, name);
	return ST_NONE;
}

static sfsistat action_of(const char *name)
{
	static const struct { const char *name; sfsistat st; } actions[] = {
		{ "reject", SMFIS_REJECT }, { "tempfail", SMFIS_TEMPFAIL },
		{ "discard", SMFIS_DISCARD }, { "accept", SMFIS_ACCEPT },
		{ "continue", SMFIS_CONTINUE }, { "skip", SMFIS_SKIP },
	};
	for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
		if (strcmp(actions[i].name, name) == 0)
			return actions[i].st;
	die("unknown action '%s'", name);
	return SMFIS_CONTINUE;
}

static unsigned long number(const char *s, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v > max)
		die("bad number '%s'", s);
	return v;
}

/* "CODE XCODE TEXT" or "CODE TEXT" (an XCODE starts with a digit and has a dot). */
static void parse_reply(char *s)
{
	char *sp = strchr(s, ' ');

	opt.reply_code = s;
	if (sp == NULL)
		return;
	*sp = '\0';
	s = sp + 1;
	sp = strchr(s, ' ');
	if (s[0] >= '0' && s[0] <= '9' && strchr(s, '.') != NULL && (sp == NULL || strchr(s, '.') < sp)) {
		opt.reply_xcode = s;
		if (sp == NULL)
			return;
		*sp = '\0';
		s = sp + 1;
	}
	opt.reply_text = s;
}

/* The stage's configured behaviour: hang, exit, or an action.  Returns the
 * status the callback answers. */
static sfsistat at_stage(SMFICTX *ctx, enum stage st, sfsistat usual)
{
	if (opt.hang_stage == st) {
		logf_event("hang %s %u", stage_names[st], opt.hang_secs);
		/* sleep() can return early on a signal: sleep the rest */
		for (unsigned left = opt.hang_secs; left > 0;)
			left = sleep(left);
		logf_event("woke %s", stage_names[st]);
	}
	if (opt.exit_stage == st) {
		logf_event("exit %s", stage_names[st]);
		_exit(0);
	}
	if (opt.action_stage != st)
		return usual;
	if (opt.reply_code != NULL && (opt.action == SMFIS_REJECT || opt.action == SMFIS_TEMPFAIL)) {
		if (smfi_setreply(ctx, opt.reply_code, opt.reply_xcode, opt.reply_text) != MI_SUCCESS) {
			logf_event("setreply refused %s", stage_names[st]);
			fprintf(stderr, "testmilter: libmilter refused the reply\n");
		}
	}
	logf_event("action %s %d", stage_names[st], (int)opt.action);
	return opt.action;
}

static sfsistat tm_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
			     unsigned long f3, unsigned long *pf0, unsigned long *pf1,
			     unsigned long *pf2, unsigned long *pf3)
{
	unsigned long want = 0;

	(void)ctx;
	(void)f2;
	(void)f3;
	if (opt.add_count > 0 || opt.nadd > 0 || opt.nins > 0)
		want |= SMFIF_ADDHDRS;
	if (opt.nchg > 0)
		want |= SMFIF_CHGHDRS;
	if (opt.quarantine != NULL)
		want |= SMFIF_QUARANTINE;
	if (opt.chgfrom != NULL)
		want |= SMFIF_CHGFROM;
	if (opt.naddrcpt > 0)
		want |= SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR;
	if (opt.ndelrcpt > 0)
		want |= SMFIF_DELRCPT;
	if (opt.body != NULL)
		want |= SMFIF_CHGBODY;
	logf_event("negotiate actions=0x%lx steps=0x%lx want=0x%lx", f0, f1, want);
	*pf0 = want;
	/* every event, the skip reply, and no reply to headers if asked */
	*pf1 = (f1 & SMFIP_SKIP) | (opt.nr_hdr ? SMFIP_NR_HDR : 0);
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

static sfsistat tm_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
	(void)addr;
	logf_event("connect %s j=%s", host, smfi_getsymval(ctx, "j") ? smfi_getsymval(ctx, "j") : "");
	return at_stage(ctx, ST_CONNECT, SMFIS_CONTINUE);
}

static sfsistat tm_helo(SMFICTX *ctx, char *helo)
{
	logf_event("helo %s", helo);
	return at_stage(ctx, ST_HELO, SMFIS_CONTINUE);
}

static sfsistat tm_envfrom(SMFICTX *ctx, char **argv)
{
	char *i = smfi_getsymval(ctx, "i");

	logf_event("mail %s i=%s", argv[0], i ? i : "");
	return at_stage(ctx, ST_MAIL, SMFIS_CONTINUE);
}

static sfsistat tm_envrcpt(SMFICTX *ctx, char **argv)
{
	logf_event("rcpt %s", argv[0]);
	return at_stage(ctx, ST_RCPT, SMFIS_CONTINUE);
}

static sfsistat tm_data(SMFICTX *ctx)
{
	logf_event("data");
	return at_stage(ctx, ST_DATA, SMFIS_CONTINUE);
}

static sfsistat tm_header(SMFICTX *ctx, char *name, char *value)
{
	logf_event("header %s: %s", name, value);
	return at_stage(ctx, ST_HEADER, opt.nr_hdr ? SMFIS_NOREPLY : SMFIS_CONTINUE);
}

static sfsistat tm_eoh(SMFICTX *ctx)
{
	logf_event("eoh");
	return at_stage(ctx, ST_EOH, SMFIS_CONTINUE);
}

static sfsistat tm_body(SMFICTX *ctx, unsigned char *buf, size_t len)
{
	(void)buf;
	logf_event("body %zu", len);
	return at_stage(ctx, ST_BODY, SMFIS_CONTINUE);
}

/* "A:B" split at the first colon into two strings (a copy). */
static char *split_colon(const char *s, char **rest)
{
	char *copy = strdup(s), *c;

	if (copy == NULL)
		die("out of memory");
	c = strchr(copy, ':');
	if (c == NULL)
		die("'%s': expected NAME:VALUE", s);
	*c = '\0';
	*rest = c + 1;
	return copy;
}

/* "ADDR ARGS" split at the first space (a copy); *args NULL without one. */
static char *split_args(const char *s, char **args)
{
	char *copy = strdup(s), *sp;

	if (copy == NULL)
		die("out of memory");
	sp = strchr(copy, ' ');
	*args = NULL;
	if (sp != NULL) {
		*sp = '\0';
		*args = sp + 1;
	}
	return copy;
}

static void edit_result(int rc, const char *what)
{
	if (rc != MI_SUCCESS)
		logf_event("edit refused %s", what);
}

static sfsistat tm_eom(SMFICTX *ctx)
{
	char name[64], value[64], *rest, *n, *v, *args;

	logf_event("eom");
	if (opt.hang_stage == ST_EOM || opt.exit_stage == ST_EOM)
		return at_stage(ctx, ST_EOM, SMFIS_CONTINUE);
	for (unsigned long i = 1; i <= opt.add_count; i++) {
		snprintf(name, sizeof name, "X-Test-Add-%lu", i);
		snprintf(value, sizeof value, "%lu", i);
		if (smfi_addheader(ctx, name, value) != MI_SUCCESS) {
			logf_event("edit refused addheader %lu", i);
			break;
		}
	}
	for (size_t i = 0; i < opt.nadd; i++) {
		n = split_colon(opt.add[i], &rest);
		edit_result(smfi_addheader(ctx, n, rest), "addheader");
		free(n);
	}
	for (size_t i = 0; i < opt.nchg; i++) {
		n = split_colon(opt.chg[i], &rest);
		v = strchr(rest, ':');
		if (v == NULL)
			die("-C %s: expected NAME:IDX:VALUE", opt.chg[i]);
		*v++ = '\0';
		edit_result(smfi_chgheader(ctx, n, (int)number(rest, INT_MAX), *v ? v : NULL),
			    "chgheader");
		free(n);
	}
	for (size_t i = 0; i < opt.nins; i++) {
		char *idx = split_colon(opt.ins[i], &rest);
		v = strchr(rest, ':');
		if (v == NULL)
			die("-I %s: expected IDX:NAME:VALUE", opt.ins[i]);
		*v++ = '\0';
		edit_result(smfi_insheader(ctx, (int)number(idx, INT_MAX), rest, v), "insheader");
		free(idx);
	}
	if (opt.chgfrom != NULL) {
		n = split_args(opt.chgfrom, &args);
		edit_result(smfi_chgfrom(ctx, n, args), "chgfrom");
		free(n);
	}
	for (size_t i = 0; i < opt.naddrcpt; i++) {
		n = split_args(opt.addrcpt[i], &args);
		edit_result(args ? smfi_addrcpt_par(ctx, n, args) : smfi_addrcpt(ctx, n), "addrcpt");
		free(n);
	}
	for (size_t i = 0; i < opt.ndelrcpt; i++)
		edit_result(smfi_delrcpt(ctx, opt.delrcpt[i]), "delrcpt");
	if (opt.body != NULL)
		edit_result(smfi_replacebody(ctx, (unsigned char *)opt.body, (int)strlen(opt.body)),
			    "replacebody");
	if (opt.quarantine != NULL)
		edit_result(smfi_quarantine(ctx, opt.quarantine), "quarantine");
	logf_event("edits done");
	return at_stage(ctx, ST_EOM, SMFIS_CONTINUE);
}

static sfsistat tm_abort(SMFICTX *ctx)
{
	(void)ctx;
	logf_event("abort");
	return SMFIS_CONTINUE;
}

static sfsistat tm_close(SMFICTX *ctx)
{
	(void)ctx;
	logf_event("close");
	return SMFIS_CONTINUE;
}

static void push(const char **list, size_t *n, const char *v)
{
	if (*n >= MAX_EDITS)
		die("too many edits of one kind (%d)", MAX_EDITS);
	list[(*n)++] = v;
}

int main(int argc, char **argv)
{
	struct smfiDesc desc = {
		.xxfi_name = "testmilter",
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = SMFIF_NONE,    /* the negotiate callback asks */
		.xxfi_connect = tm_connect,
		.xxfi_helo = tm_helo,
		.xxfi_envfrom = tm_envfrom,
		.xxfi_envrcpt = tm_envrcpt,
		.xxfi_header = tm_header,
		.xxfi_eoh = tm_eoh,
		.xxfi_body = tm_body,
		.xxfi_eom = tm_eom,
		.xxfi_abort = tm_abort,
		.xxfi_close = tm_close,
		.xxfi_data = tm_data,
		.xxfi_negotiate = tm_negotiate,
	};
	char *c;
	int ch;

	while ((ch = getopt(argc, argv, "p:l:H:X:r:R:Q:a:A:C:I:f:t:d:b:N")) != -1) {
		switch (ch) {
		case 'p': opt.conn = optarg; break;
		case 'l':
			opt.log = fopen(optarg, "a");
			if (opt.log == NULL)
				die("%s: %s", optarg, strerror(errno));
			break;
		case 'H':
			c = strchr(optarg, ':');
			opt.hang_stage = stage_of(optarg, c ? (size_t)(c - optarg) : strlen(optarg));
			if (c != NULL)
				opt.hang_secs = (unsigned)number(c + 1, 86400);
			break;
		case 'X': opt.exit_stage = stage_of(optarg, strlen(optarg)); break;
		case 'r':
			c = strchr(optarg, ':');
			if (c == NULL)
				usage();
			opt.action_stage = stage_of(optarg, (size_t)(c - optarg));
			opt.action = action_of(c + 1);
			break;
		case 'R': parse_reply(optarg); break;
		case 'Q': opt.quarantine = optarg; break;
		case 'a': opt.add_count = number(optarg, 1000000); break;
		case 'A': push(opt.add, &opt.nadd, optarg); break;
		case 'C': push(opt.chg, &opt.nchg, optarg); break;
		case 'I': push(opt.ins, &opt.nins, optarg); break;
		case 'f': opt.chgfrom = optarg; break;
		case 't': push(opt.addrcpt, &opt.naddrcpt, optarg); break;
		case 'd':
			if (opt.ndelrcpt >= MAX_EDITS)
				die("too many -d");
			opt.delrcpt[opt.ndelrcpt++] = optarg;
			break;
		case 'b': opt.body = optarg; break;
		case 'N': opt.nr_hdr = true; break;
		default: usage();
		}
	}
	if (opt.conn == NULL || optind != argc)
		usage();
	/* an MTA that closes while a callback writes must not kill us */
	signal(SIGPIPE, SIG_IGN);
	if (smfi_setconn(opt.conn) != MI_SUCCESS)
		die("smfi_setconn %s failed", opt.conn);
	if (smfi_register(desc) != MI_SUCCESS)
		die("smfi_register failed");
	smfi_setbacklog(1024);
	/* listen now, so "ready" means a connection will be accepted */
	if (smfi_opensocket(true) != MI_SUCCESS)
		die("cannot listen on %s", opt.conn);
	printf("ready\n");
	fflush(stdout);
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
