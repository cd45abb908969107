/*
 * test_smtp_parse.c - verb lookup, MAIL/RCPT paths and ESMTP parameters,
 * HELO and domain syntax (TAP).
 */
#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"
#include "tap.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))

/* RFC 3461 4.1 NOTIFY values, expected results written by hand. */
struct notify_case {
	const char	*value;
	int		 want;		/* 0 accepted, -1 refused */
};

static const struct notify_case notify_cases[] = {
	{ "NEVER",			0 },
	{ "never",			0 },
	{ "SUCCESS",			0 },
	{ "FAILURE",			0 },
	{ "DELAY",			0 },
	{ "SUCCESS,FAILURE",		0 },
	{ "success,Failure,DELAY",	0 },
	{ "DELAY,SUCCESS",		0 },
	{ "SUCCESS,,FAILURE",		-1 },
	{ "SUCCESS,",			-1 },
	{ ",SUCCESS",			-1 },
	{ ",",				-1 },
	{ "",				-1 },
	{ "SUCCESS,SUCCESS",		-1 },
	{ "NEVER,NEVER",		-1 },
	{ "NEVER,SUCCESS",		-1 },
	{ "FAILURE,NEVER",		-1 },
	{ "SUCCESS FAILURE",		-1 },
	{ "SUCCES",			-1 },
	{ "SUCCESSX",			-1 },
	{ "NEVERS",			-1 },
	{ "SUCCESS;FAILURE",		-1 },
};

struct verb_case {
	const char	*line;
	enum smtp_cmd	 cmd;
	const char	*args;		/* expected *args */
};

static const struct verb_case verb_cases[] = {
	{ "HELO mx.example.com",	SMTP_CMD_HELO,		"mx.example.com" },
	{ "EHLO mx.example.com",	SMTP_CMD_EHLO,		"mx.example.com" },
	{ "MAIL FROM:<a@b>",		SMTP_CMD_MAIL,		"FROM:<a@b>" },
	{ "RCPT TO:<a@b>",		SMTP_CMD_RCPT,		"TO:<a@b>" },
	{ "DATA",			SMTP_CMD_DATA,		"" },
	{ "RSET",			SMTP_CMD_RSET,		"" },
	{ "NOOP",			SMTP_CMD_NOOP,		"" },
	{ "QUIT",			SMTP_CMD_QUIT,		"" },
	{ "VRFY postmaster",		SMTP_CMD_VRFY,		"postmaster" },
	{ "EXPN list",			SMTP_CMD_EXPN,		"list" },
	{ "HELP",			SMTP_CMD_HELP,		"" },
	{ "STARTTLS",			SMTP_CMD_STARTTLS,	"" },
	{ "AUTH PLAIN AGFAAGI=",	SMTP_CMD_AUTH,		"PLAIN AGFAAGI=" },
	{ "BDAT 100 LAST",		SMTP_CMD_BDAT,		"100 LAST" },
	{ "XCLIENT ADDR=192.0.2.1",	SMTP_CMD_XCLIENT,	"ADDR=192.0.2.1" },
	{ "XFORWARD NAME=x",		SMTP_CMD_XFORWARD,	"NAME=x" },
	/* case-insensitivity */
	{ "helo x",			SMTP_CMD_HELO,		"x" },
	{ "ehlo x",			SMTP_CMD_EHLO,		"x" },
	{ "mail FROM:<>",		SMTP_CMD_MAIL,		"FROM:<>" },
	{ "rCpT TO:<a@b>",		SMTP_CMD_RCPT,		"TO:<a@b>" },
	{ "data",			SMTP_CMD_DATA,		"" },
	{ "Rset",			SMTP_CMD_RSET,		"" },
	{ "nOOp",			SMTP_CMD_NOOP,		"" },
	{ "quit",			SMTP_CMD_QUIT,		"" },
	{ "vrfy x",			SMTP_CMD_VRFY,		"x" },
	{ "expn x",			SMTP_CMD_EXPN,		"x" },
	{ "help",			SMTP_CMD_HELP,		"" },
	{ "StartTls",			SMTP_CMD_STARTTLS,	"" },
	{ "auth LOGIN",			SMTP_CMD_AUTH,		"LOGIN" },
	{ "bdat 0 last",		SMTP_CMD_BDAT,		"0 last" },
	{ "xclient NAME=x",		SMTP_CMD_XCLIENT,	"NAME=x" },
	{ "xforward NAME=x",		SMTP_CMD_XFORWARD,	"NAME=x" },
	/* args: exactly one SP is skipped */
	{ "QUIT ",			SMTP_CMD_QUIT,		"" },
	{ "NOOP  x",			SMTP_CMD_NOOP,		" x" },
	{ "MAIL",			SMTP_CMD_MAIL,		"" },
	/* trailing junk / not a verb */
	{ "MAILX FROM:<a@b>",		SMTP_CMD_UNKNOWN,	"" },
	{ "QUITNOW",			SMTP_CMD_UNKNOWN,	"" },
	{ "STARTTLSX",			SMTP_CMD_UNKNOWN,	"" },
	{ "DATA:",			SMTP_CMD_UNKNOWN,	"" },
	{ "EHLO1",			SMTP_CMD_UNKNOWN,	"" },
	{ "HEL x",			SMTP_CMD_UNKNOWN,	"" },
	{ "MAIL\tFROM:<a@b>",		SMTP_CMD_UNKNOWN,	"" },
	{ " MAIL FROM:<a@b>",		SMTP_CMD_UNKNOWN,	"" },
	{ "",				SMTP_CMD_UNKNOWN,	"" },
	{ "GET / HTTP/1.1",		SMTP_CMD_UNKNOWN,	"" },
	{ "M\xc3\x81IL FROM:<a@b>",	SMTP_CMD_UNKNOWN,	"" },
	{ "UNKNOWN",			SMTP_CMD_UNKNOWN,	"" },
};

struct path_case {
	const char		*name;
	enum smtp_cmd		 cmd;
	const char		*args;
	enum smtp_parse_err	 err;
	const char		*mailbox;	/* checked when err == OK */
	const char		*local;
	const char		*domain;
	size_t			 nparams;
};

#define OK_	SMTP_PARSE_OK
#define SYN	SMTP_PARSE_SYNTAX
#define LONG	SMTP_PARSE_PATH_TOO_LONG
#define ROUTE	SMTP_PARSE_ROUTED
#define PSYN	SMTP_PARSE_PARAM_SYNTAX
#define MANY	SMTP_PARSE_TOO_MANY_PARAMS
#define EIGHT	SMTP_PARSE_8BIT
#define DUP	SMTP_PARSE_PARAM_DUP
#define MAIL	SMTP_CMD_MAIL
#define RCPT	SMTP_CMD_RCPT

static const struct path_case path_cases[] = {
	{ "MAIL simple", MAIL, "FROM:<user@example.com>", OK_, "user@example.com", "user", "example.com", 0 },
	{ "RCPT simple", RCPT, "TO:<user@example.com>", OK_, "user@example.com", "user", "example.com", 0 },
	{ "from: lower case, domain lower-cased", MAIL, "from:<User@Example.COM>", OK_, "User@example.com", "User", "example.com", 0 },
	{ "To: mixed case", RCPT, "To:<a@b.c>", OK_, "a@b.c", "a", "b.c", 0 },
	{ "one space after colon", MAIL, "FROM: <a@b.c>", OK_, "a@b.c", "a", "b.c", 0 },
	{ "two spaces after colon", RCPT, "TO:  <a@b.c>", OK_, "a@b.c", "a", "b.c", 0 },
	{ "dotted local part", MAIL, "FROM:<first.last@b.c>", OK_, "first.last@b.c", "first.last", "b.c", 0 },
	{ "atext specials", MAIL, "FROM:<a+tag#$&'*/=?^_`{|}~-@b.c>", OK_, "a+tag#$&'*/=?^_`{|}~-@b.c", "a+tag#$&'*/=?^_`{|}~-", "b.c", 0 },
	{ "single-label domain", RCPT, "TO:<a@localhost>", OK_, "a@localhost", "a", "localhost", 0 },
	{ "quoted local with space", RCPT, "TO:<\"a b\"@x.org>", OK_, "\"a b\"@x.org", "\"a b\"", "x.org", 0 },
	{ "quoted local with escaped quote", RCPT, "TO:<\"a\\\"b\"@x.org>", OK_, "\"a\\\"b\"@x.org", "\"a\\\"b\"", "x.org", 0 },
	{ "quoted local with '>' inside", RCPT, "TO:<\"a>b\"@x.org>", OK_, "\"a>b\"@x.org", "\"a>b\"", "x.org", 0 },
	{ "empty quoted local", RCPT, "TO:<\"\"@x.org>", OK_, "\"\"@x.org", "\"\"", "x.org", 0 },
	{ "address literal ipv4", RCPT, "TO:<a@[192.0.2.1]>", OK_, "a@[192.0.2.1]", "a", "[192.0.2.1]", 0 },
	{ "address literal ipv6", RCPT, "TO:<a@[IPv6:2001:DB8::1]>", OK_, "a@[ipv6:2001:db8::1]", "a", "[ipv6:2001:db8::1]", 0 },
	{ "null reverse-path", MAIL, "FROM:<>", OK_, "", "", "", 0 },
	{ "null reverse-path with params", MAIL, "FROM:<> SIZE=10", OK_, "", "", "", 1 },
	{ "<postmaster>", RCPT, "TO:<postmaster>", OK_, "postmaster", "postmaster", "", 0 },
	{ "<PostMaster> any case", RCPT, "TO:<PostMaster>", OK_, "PostMaster", "PostMaster", "", 0 },
	{ "<postmaster@domain> is a normal path", RCPT, "TO:<postmaster@Example.com>", OK_, "postmaster@example.com", "postmaster", "example.com", 0 },

	{ "RCPT <> refused", RCPT, "TO:<>", SYN, 0, 0, 0, 0 },
	{ "MAIL <postmaster> refused", MAIL, "FROM:<postmaster>", SYN, 0, 0, 0, 0 },
	{ "RCPT <postmasterx> refused", RCPT, "TO:<postmasterx>", SYN, 0, 0, 0, 0 },
	{ "MAIL with TO:", MAIL, "TO:<a@b>", SYN, 0, 0, 0, 0 },
	{ "RCPT with FROM:", RCPT, "FROM:<a@b>", SYN, 0, 0, 0, 0 },
	{ "wrong command", SMTP_CMD_HELO, "FROM:<a@b>", SYN, 0, 0, 0, 0 },
	{ "missing colon", MAIL, "FROM<a@b>", SYN, 0, 0, 0, 0 },
	{ "space before colon", MAIL, "FROM :<a@b>", SYN, 0, 0, 0, 0 },
	{ "leading space", MAIL, " FROM:<a@b>", SYN, 0, 0, 0, 0 },
	{ "missing brackets", MAIL, "FROM:a@b", SYN, 0, 0, 0, 0 },
	{ "missing closing bracket", MAIL, "FROM:<a@b", SYN, 0, 0, 0, 0 },
	{ "missing opening bracket", MAIL, "FROM:a@b>", SYN, 0, 0, 0, 0 },
	{ "empty after colon", MAIL, "FROM:", SYN, 0, 0, 0, 0 },
	{ "space inside brackets (front)", MAIL, "FROM:< a@b>", SYN, 0, 0, 0, 0 },
	{ "space inside brackets (back)", MAIL, "FROM:<a@b >", SYN, 0, 0, 0, 0 },
	{ "space in local part", MAIL, "FROM:<a b@c>", SYN, 0, 0, 0, 0 },
	{ "leading dot", MAIL, "FROM:<.a@b>", SYN, 0, 0, 0, 0 },
	{ "trailing dot in local", MAIL, "FROM:<a.@b>", SYN, 0, 0, 0, 0 },
	{ "double dot in local", MAIL, "FROM:<a..b@c>", SYN, 0, 0, 0, 0 },
	{ "no domain", MAIL, "FROM:<a>", SYN, 0, 0, 0, 0 },
	{ "empty domain", MAIL, "FROM:<a@>", SYN, 0, 0, 0, 0 },
	{ "empty local", MAIL, "FROM:<@b>", SYN, 0, 0, 0, 0 },
	{ "two @", MAIL, "FROM:<a@b@c>", SYN, 0, 0, 0, 0 },
	{ "unterminated quoted local", MAIL, "FROM:<\"a@b>", SYN, 0, 0, 0, 0 },
	{ "control char in quoted local", MAIL, "FROM:<\"a\tb\"@c>", SYN, 0, 0, 0, 0 },
	{ "domain leading hyphen", MAIL, "FROM:<a@-b.com>", SYN, 0, 0, 0, 0 },
	{ "domain trailing hyphen", MAIL, "FROM:<a@b-.com>", SYN, 0, 0, 0, 0 },
	{ "domain underscore", MAIL, "FROM:<a@b_c.com>", SYN, 0, 0, 0, 0 },
	{ "domain trailing dot", MAIL, "FROM:<a@b.com.>", SYN, 0, 0, 0, 0 },
	{ "domain empty label", MAIL, "FROM:<a@b..com>", SYN, 0, 0, 0, 0 },
	{ "bad ipv4 literal", RCPT, "TO:<a@[300.0.0.1]>", SYN, 0, 0, 0, 0 },
	{ "ipv6 literal without tag", RCPT, "TO:<a@[2001:db8::1]>", SYN, 0, 0, 0, 0 },
	{ "general address literal", RCPT, "TO:<a@[x400:foo]>", SYN, 0, 0, 0, 0 },
	{ "unterminated literal", RCPT, "TO:<a@[192.0.2.1>", SYN, 0, 0, 0, 0 },
	{ "junk after '>'", MAIL, "FROM:<a@b>x", PSYN, 0, 0, 0, 0 },
	{ "malformed source route", RCPT, "TO:<@a,u@b>", SYN, 0, 0, 0, 0 },
	{ "source route without mailbox", RCPT, "TO:<@a:>", SYN, 0, 0, 0, 0 },

	{ "source route <@a:u@b>", RCPT, "TO:<@a:u@b>", ROUTE, 0, 0, 0, 0 },
	{ "source route <@a,@b:u@c>", RCPT, "TO:<@a,@b:u@c>", ROUTE, 0, 0, 0, 0 },
	{ "source route in MAIL", MAIL, "FROM:<@a:u@b>", ROUTE, 0, 0, 0, 0 },
	{ "percent hack u%b@c", RCPT, "TO:<u%b@c>", ROUTE, 0, 0, 0, 0 },
	{ "bang path b!u@c", RCPT, "TO:<b!u@c>", ROUTE, 0, 0, 0, 0 },
	{ "percent inside quotes", RCPT, "TO:<\"u%b\"@c>", ROUTE, 0, 0, 0, 0 },
	{ "at inside quotes", RCPT, "TO:<\"u@b\"@c>", ROUTE, 0, 0, 0, 0 },
	{ "escaped bang inside quotes", RCPT, "TO:<\"b\\!u\"@c>", ROUTE, 0, 0, 0, 0 },

	{ "8-bit local part", RCPT, "TO:<j\xc3\xb6rg@example.com>", EIGHT, 0, 0, 0, 0 },
	{ "8-bit domain", RCPT, "TO:<a@b\xc3\xa9.com>", EIGHT, 0, 0, 0, 0 },
	{ "8-bit in quoted local", RCPT, "TO:<\"\xe9\"@b.com>", EIGHT, 0, 0, 0, 0 },
	{ "8-bit in param value", MAIL, "FROM:<a@b> ENVID=\xff", EIGHT, 0, 0, 0, 0 },

	{ "params SIZE and BODY", MAIL, "FROM:<a@b> SIZE=10 BODY=8BITMIME", OK_, "a@b", "a", "b", 2 },
	{ "param without value", MAIL, "FROM:<a@b> SMTPUTF8", OK_, "a@b", "a", "b", 1 },
	{ "RCPT DSN params", RCPT, "TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b", OK_, "a@b", "a", "b", 2 },
	{ "keyword with hyphen and digit", MAIL, "FROM:<a@b> X-FOO1=bar", OK_, "a@b", "a", "b", 1 },
	{ "repeated spaces between params", MAIL, "FROM:<a@b>  SIZE=1   BODY=7BIT", OK_, "a@b", "a", "b", 2 },
	{ "trailing space", MAIL, "FROM:<a@b> ", OK_, "a@b", "a", "b", 0 },
	{ "empty value", MAIL, "FROM:<a@b> SIZE=", PSYN, 0, 0, 0, 0 },
	{ "'=' in value", MAIL, "FROM:<a@b> SIZE=1=2", PSYN, 0, 0, 0, 0 },
	{ "keyword starts with hyphen", MAIL, "FROM:<a@b> -SIZE=1", PSYN, 0, 0, 0, 0 },
	{ "underscore in keyword", MAIL, "FROM:<a@b> SI_ZE=1", PSYN, 0, 0, 0, 0 },
	{ "bare '='", MAIL, "FROM:<a@b> =1", PSYN, 0, 0, 0, 0 },
	{ "TAB in value", MAIL, "FROM:<a@b> SIZE=1\t2", PSYN, 0, 0, 0, 0 },
	{ "DEL in value", MAIL, "FROM:<a@b> SIZE=1\x7f", PSYN, 0, 0, 0, 0 },
	{ "param glued to '>'", MAIL, "FROM:<a@b>SIZE=10", PSYN, 0, 0, 0, 0 },
	/* RFC 5321 4.1.2: each esmtp-keyword once (issue 8 item 12). */
	{ "BODY twice", MAIL, "FROM:<a@b> BODY=7BIT BODY=8BITMIME", DUP, 0, 0, 0, 0 },
	{ "BODY twice, same value", MAIL, "FROM:<a@b> BODY=7BIT BODY=7BIT", DUP, 0, 0, 0, 0 },
	{ "ENVID twice", MAIL, "FROM:<a@b> ENVID=x ENVID=y", DUP, 0, 0, 0, 0 },
	{ "SIZE twice, other case", MAIL, "FROM:<a@b> size=1 SIZE=2", DUP, 0, 0, 0, 0 },
	{ "RET twice apart", MAIL, "FROM:<a@b> RET=FULL SIZE=1 Ret=HDRS", DUP, 0, 0, 0, 0 },
	{ "SMTPUTF8 twice", MAIL, "FROM:<a@b> SMTPUTF8 SMTPUTF8", DUP, 0, 0, 0, 0 },
	{ "keyword with and without value", MAIL, "FROM:<a@b> SMTPUTF8 SMTPUTF8=x", DUP, 0, 0, 0, 0 },
	{ "unknown keyword twice", MAIL, "FROM:<a@b> X-A=1 X-A=1", DUP, 0, 0, 0, 0 },
	{ "NOTIFY twice", RCPT, "TO:<a@b> NOTIFY=NEVER NOTIFY=SUCCESS", DUP, 0, 0, 0, 0 },
	{ "ORCPT twice", RCPT, "TO:<a@b> ORCPT=rfc822;a ORCPT=rfc822;b", DUP, 0, 0, 0, 0 },
	{ "duplicate after a syntax error", MAIL, "FROM:<a@b> SIZE=1 SIZE=", PSYN, 0, 0, 0, 0 },
	{ "prefix of another keyword", MAIL, "FROM:<a@b> X-A=1 X-AB=1 X=1", OK_, "a@b", "a", "b", 3 },
};

struct domain_case {
	const char	*name;
	const char	*d;
	int		 domain;	/* smtp_parse_domain() */
	int		 helo;		/* smtp_parse_helo() */
};

static const struct domain_case domain_cases[] = {
	{ "fqdn",			"mx.example.com",	0,  0 },
	{ "single label localhost",	"localhost",		0,  0 },
	{ "digits and hyphens",		"1-2.a-b.c0",		0,  0 },
	{ "upper case",			"MX.Example.COM",	0,  0 },
	{ "ipv4 literal",		"[192.0.2.1]",		-1, 0 },
	{ "ipv6 literal",		"[IPv6:2001:db8::1]",	-1, 0 },
	{ "ipv6 literal lower tag",	"[ipv6:::1]",		-1, 0 },
	{ "ipv4-mapped ipv6 literal",	"[IPv6:::ffff:192.0.2.1]", -1, 0 },
	{ "ipv4 literal out of range",	"[300.1.1.1]",		-1, -1 },
	{ "ipv4 literal three parts",	"[1.2.3]",		-1, -1 },
	{ "ipv6 without tag",		"[2001:db8::1]",	-1, -1 },
	{ "ipv6 tag with ipv4",		"[IPv6:1.2.3.4]",	-1, -1 },
	{ "empty literal",		"[]",			-1, -1 },
	{ "unterminated literal",	"[1.2.3.4",		-1, -1 },
	{ "junk after literal",		"[1.2.3.4]x",		-1, -1 },
	{ "empty",			"",			-1, -1 },
	{ "leading hyphen",		"-a.com",		-1, -1 },
	{ "trailing hyphen",		"a-.com",		-1, -1 },
	{ "underscore",			"host_name.com",	-1, -1 },
	{ "leading dot",		".a.com",		-1, -1 },
	{ "trailing dot",		"a.com.",		-1, -1 },
	{ "empty label",		"a..com",		-1, -1 },
	{ "space",			"a com",		-1, -1 },
	{ "XCLIENT injection",		"x ADDR=127.0.0.1",	-1, -1 },
	{ "8-bit",			"b\xc3\xa9.com",	-1, -1 },
	{ "quote",			"a\"b",			-1, -1 },
};

/* Fill buf with a syntactically valid domain of exactly n chars (n >= 1). */
static void
make_domain(char *buf, size_t n)
{
	size_t i, label = 0;

	for (i = 0; i < n; i++) {
		/* a dot after every 50 chars, never last: labels stay <= 63 */
		if (label == 50 && i + 1 < n) {
			buf[i] = '.';
			label = 0;
		} else {
			buf[i] = 'a';
			label++;
		}
	}
	buf[n] = '\0';
}

static void
make_local(char *buf, size_t n)
{
	memset(buf, 'u', n);
	buf[n] = '\0';
}

/* Printable form of a test input for the TAP line (no TAB, no 8-bit). */
static const char *
shown(const char *s)
{
	static char buf[256];
	size_t i, n = 0;

	for (i = 0; s[i] != '\0' && n + 5 < sizeof(buf); i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 32 && c < 127 && c != '\\')
			buf[n++] = (char)c;
		else
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\\x%02x", c);
	}
	buf[n] = '\0';
	return buf;
}

static void
test_path_lengths(void)
{
	struct smtp_path p;
	char local[128], dom[300], args[600];

	make_local(local, 64);
	snprintf(args, sizeof(args), "FROM:<%s@b.c>", local);
	ok(smtp_parse_path(args, MAIL, &p) == OK_ && strlen(p.local) == 64,
	    "local part of exactly 64 accepted");
	make_local(local, 65);
	snprintf(args, sizeof(args), "FROM:<%s@b.c>", local);
	ok(smtp_parse_path(args, MAIL, &p) == LONG, "local part of 65 refused");

	make_local(local, 62);
	snprintf(args, sizeof(args), "TO:<\"%s\"@b.c>", local);
	ok(smtp_parse_path(args, RCPT, &p) == OK_ && strlen(p.local) == 64,
	    "quoted local part of 64 with quotes accepted");
	make_local(local, 63);
	snprintf(args, sizeof(args), "TO:<\"%s\"@b.c>", local);
	ok(smtp_parse_path(args, RCPT, &p) == LONG,
	    "quoted local part of 65 with quotes refused");

	/* "<" + 1 + "@" + 252 + ">" = 256: the path limit bites first. */
	make_domain(dom, 252);
	snprintf(args, sizeof(args), "TO:<u@%s>", dom);
	ok(smtp_parse_path(args, RCPT, &p) == OK_ && strlen(p.domain) == 252 &&
	    strlen(p.mailbox) == 254, "path of exactly 256 accepted");
	make_domain(dom, 253);
	snprintf(args, sizeof(args), "TO:<u@%s>", dom);
	ok(smtp_parse_path(args, RCPT, &p) == LONG, "path of 257 refused");

	make_local(local, 64);
	make_domain(dom, 189);
	snprintf(args, sizeof(args), "TO:<%s@%s>", local, dom);
	ok(smtp_parse_path(args, RCPT, &p) == OK_,
	    "path of 256 with 64-char local part accepted");
	make_domain(dom, 190);
	snprintf(args, sizeof(args), "TO:<%s@%s>", local, dom);
	ok(smtp_parse_path(args, RCPT, &p) == LONG,
	    "path of 257 with 64-char local part refused");

	make_domain(dom, 255);
	snprintf(args, sizeof(args), "TO:<u@%s>", dom);
	ok(smtp_parse_path(args, RCPT, &p) == LONG,
	    "255-char domain in a path refused (path over 256)");
	make_domain(dom, 256);
	snprintf(args, sizeof(args), "TO:<u@%s>", dom);
	ok(smtp_parse_path(args, RCPT, &p) == LONG, "256-char domain in a path refused");

	snprintf(args, sizeof(args), "TO:<u@%.64s.com>", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	ok(smtp_parse_path(args, RCPT, &p) == SYN, "64-char label in a path refused");
}

static void
test_params(void)
{
	struct smtp_path p;
	char args[600];
	size_t i, n;
	int pos;

	ok(smtp_parse_path("FROM:<a@b> SIZE=10 BODY=8BITMIME", MAIL, &p) == OK_ &&
	    p.nparams == 2 &&
	    strcmp(p.params[0].key, "SIZE") == 0 && strcmp(p.params[0].value, "10") == 0 &&
	    p.params[0].has_value == 1 &&
	    strcmp(p.params[1].key, "BODY") == 0 &&
	    strcmp(p.params[1].value, "8BITMIME") == 0 && p.params[1].has_value == 1,
	    "SIZE=10 BODY=8BITMIME: keys and values");
	ok(smtp_parse_path("FROM:<a@b> size=10 body=7bit", MAIL, &p) == OK_ &&
	    strcmp(p.params[0].key, "SIZE") == 0 && strcmp(p.params[1].key, "BODY") == 0 &&
	    strcmp(p.params[1].value, "7bit") == 0,
	    "keyword upper-cased, value kept as given");
	ok(smtp_parse_path("FROM:<a@b> SMTPUTF8", MAIL, &p) == OK_ &&
	    p.nparams == 1 && strcmp(p.params[0].key, "SMTPUTF8") == 0 &&
	    p.params[0].has_value == 0 && p.params[0].value[0] == '\0',
	    "KEY with no value: has_value 0");
	ok(smtp_parse_path("TO:<a@b> ORCPT=rfc822;a+40b", RCPT, &p) == OK_ &&
	    strcmp(p.params[0].value, "rfc822;a+40b") == 0,
	    "ORCPT xtext value kept verbatim");

	/* 16 params fit, the 17th is refused. */
	for (n = 16; n <= 17; n++) {
		pos = snprintf(args, sizeof(args), "FROM:<a@b>");
		for (i = 0; i < n; i++)
			pos += snprintf(args + pos, sizeof(args) - (size_t)pos,
			    " X%zu=%zu", i, i);
		if (n == 16)
			ok(smtp_parse_path(args, MAIL, &p) == OK_ && p.nparams == 16 &&
			    strcmp(p.params[15].key, "X15") == 0,
			    "16 params accepted");
		else
			ok(smtp_parse_path(args, MAIL, &p) == MANY, "17 params refused");
	}

	snprintf(args, sizeof(args), "FROM:<a@b> %.32s=1",
	    "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK");
	ok(smtp_parse_path(args, MAIL, &p) == OK_ && strlen(p.params[0].key) == 32,
	    "32-char keyword accepted");
	snprintf(args, sizeof(args), "FROM:<a@b> %.33s=1",
	    "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK");
	ok(smtp_parse_path(args, MAIL, &p) == PSYN, "33-char keyword refused");

	pos = snprintf(args, sizeof(args), "FROM:<a@b> ENVID=");
	memset(args + pos, 'v', 500);
	args[pos + 500] = '\0';
	ok(smtp_parse_path(args, MAIL, &p) == OK_ && strlen(p.params[0].value) == 500,
	    "500-char value accepted");
	args[pos + 500] = 'v';
	args[pos + 501] = '\0';
	ok(smtp_parse_path(args, MAIL, &p) == PSYN, "501-char value refused");

	ok(smtp_parse_path("FROM:<a@b> SIZE=", MAIL, &p) == PSYN &&
	    p.mailbox[0] == '\0' && p.nparams == 0,
	    "output zeroed after an error");
}

/* What the names and texts are, written out, not read back from the code. */
struct cmd_name {
	enum smtp_cmd	 cmd;
	const char	*name;
};

static const struct cmd_name cmd_names[] = {
	{ SMTP_CMD_UNKNOWN,	"UNKNOWN" },
	{ SMTP_CMD_HELO,	"HELO" },
	{ SMTP_CMD_EHLO,	"EHLO" },
	{ SMTP_CMD_MAIL,	"MAIL" },
	{ SMTP_CMD_RCPT,	"RCPT" },
	{ SMTP_CMD_DATA,	"DATA" },
	{ SMTP_CMD_RSET,	"RSET" },
	{ SMTP_CMD_NOOP,	"NOOP" },
	{ SMTP_CMD_QUIT,	"QUIT" },
	{ SMTP_CMD_VRFY,	"VRFY" },
	{ SMTP_CMD_EXPN,	"EXPN" },
	{ SMTP_CMD_HELP,	"HELP" },
	{ SMTP_CMD_STARTTLS,	"STARTTLS" },
	{ SMTP_CMD_AUTH,	"AUTH" },
	{ SMTP_CMD_BDAT,	"BDAT" },
	{ SMTP_CMD_XCLIENT,	"XCLIENT" },
	{ SMTP_CMD_XFORWARD,	"XFORWARD" },
};

struct err_name {
	enum smtp_parse_err	 err;
	const char		*text;
};

static const struct err_name err_names[] = {
	{ SMTP_PARSE_OK,		"ok" },
	{ SMTP_PARSE_SYNTAX,		"syntax error in path" },
	{ SMTP_PARSE_PATH_TOO_LONG,	"path too long" },
	{ SMTP_PARSE_ROUTED,		"source-routed address" },
	{ SMTP_PARSE_PARAM_SYNTAX,	"bad ESMTP parameter" },
	{ SMTP_PARSE_TOO_MANY_PARAMS,	"too many ESMTP parameters" },
	{ SMTP_PARSE_8BIT,		"8-bit character in address" },
	{ SMTP_PARSE_PARAM_DUP,		"duplicate ESMTP parameter" },
};

int
main(void)
{
	struct smtp_path p;
	const char *args;
	char dom[300];
	size_t i;

	plan(276);
	for (i = 0; i < N(verb_cases); i++) {
		const struct verb_case *c = &verb_cases[i];
		enum smtp_cmd cmd;

		args = NULL;
		cmd = smtp_parse_verb(c->line, &args);
		ok(cmd == c->cmd && args != NULL && strcmp(args, c->args) == 0,
		    "verb \"%s\" -> %s args \"%s\"", shown(c->line),
		    smtp_cmd_name(c->cmd), c->args);
	}
	ok(smtp_parse_verb("QUIT", NULL) == SMTP_CMD_QUIT, "verb: args may be NULL");

	ok(N(cmd_names) == SMTP_CMD_COUNT, "a name below for each of the %d commands",
	    SMTP_CMD_COUNT);
	for (i = 0; i < N(cmd_names); i++) {
		const struct cmd_name *c = &cmd_names[i];
		char line[64];

		snprintf(line, sizeof(line), "%s x", c->name);
		ok(strcmp(smtp_cmd_name(c->cmd), c->name) == 0 &&
		    smtp_parse_verb(line, &args) == c->cmd,
		    "smtp_cmd_name(%d) is %s, and \"%s\" parses back to it",
		    (int)c->cmd, c->name, line);
	}
	ok(strcmp(smtp_cmd_name(SMTP_CMD_STARTTLS), "STARTTLS") == 0,
	    "smtp_cmd_name is upper case");
	ok(strcmp(smtp_cmd_name(SMTP_CMD_COUNT), "UNKNOWN") == 0,
	    "smtp_cmd_name out of range");

	for (i = 0; i < N(path_cases); i++) {
		const struct path_case *c = &path_cases[i];
		enum smtp_parse_err err = smtp_parse_path(c->args, c->cmd, &p);
		int good = err == c->err;

		if (good && c->err == OK_)
			good = strcmp(p.mailbox, c->mailbox) == 0 &&
			    strcmp(p.local, c->local) == 0 &&
			    strcmp(p.domain, c->domain) == 0 &&
			    p.nparams == c->nparams;
		if (!good)
			printf("# got %s mailbox \"%s\" local \"%s\" domain \"%s\" nparams %zu\n",
			    smtp_parse_strerror(err), p.mailbox, p.local, p.domain, p.nparams);
		ok(good, "path: %s -> %s", c->name, smtp_parse_strerror(c->err));
	}
	ok(smtp_parse_path(NULL, MAIL, &p) == SYN, "path: NULL args");

	test_path_lengths();
	test_params();

	for (i = 0; i < N(notify_cases); i++)
		ok(smtp_parse_notify(notify_cases[i].value) == notify_cases[i].want,
		    "notify: \"%s\" %s", notify_cases[i].value,
		    notify_cases[i].want == 0 ? "accepted" : "refused");
	ok(smtp_parse_notify(NULL) == -1, "notify: NULL refused");

	for (i = 0; i < N(domain_cases); i++) {
		const struct domain_case *c = &domain_cases[i];

		ok(smtp_parse_domain(c->d) == c->domain, "domain: %s", c->name);
		ok(smtp_parse_helo(c->d) == c->helo, "helo: %s", c->name);
	}
	make_domain(dom, 255);
	ok(smtp_parse_domain(dom) == 0, "domain: exactly 255 accepted");
	ok(smtp_parse_helo(dom) == 0, "helo: 255-char domain accepted");
	make_domain(dom, 256);
	ok(smtp_parse_domain(dom) == -1, "domain: 256 refused");
	memset(dom, 'a', 63);
	strcpy(dom + 63, ".com");
	ok(smtp_parse_domain(dom) == 0, "domain: 63-char label accepted");
	memset(dom, 'a', 64);
	strcpy(dom + 64, ".com");
	ok(smtp_parse_domain(dom) == -1, "domain: 64-char label refused");
	ok(smtp_parse_domain(NULL) == -1 && smtp_parse_helo(NULL) == -1,
	    "domain/helo: NULL refused");

	ok(N(err_names) == SMTP_PARSE_ERR_COUNT, "a text below for each of the %d errors",
	    SMTP_PARSE_ERR_COUNT);
	for (i = 0; i < N(err_names); i++)
		ok(strcmp(smtp_parse_strerror(err_names[i].err), err_names[i].text) == 0,
		    "strerror(%d) = \"%s\"", (int)err_names[i].err, err_names[i].text);

	return done_testing();
}
