/*
 * test_smtp_reply.c - reply parser limits, enhanced codes, rendering and
 * EHLO capability parsing (TAP).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "smtp_reply.h"
#include "tap.h"

#define N(a)	(sizeof(a) / sizeof((a)[0]))

/* Feed '\n'-separated lines; stop at the first status that is not MORE. */
static enum smtp_reply_status
feed_all(struct smtp_reply *r, const char *lines)
{
	enum smtp_reply_status st = SMTP_REPLY_MORE;
	const char *nl;

	smtp_reply_init(r);
	for (;;) {
		nl = strchr(lines, '\n');
		st = smtp_reply_feed(r, lines, nl ? (size_t)(nl - lines) : strlen(lines));
		if (st != SMTP_REPLY_MORE || nl == NULL)
			return st;
		lines = nl + 1;
	}
}

struct feed_case {
	const char		*name;
	const char		*lines;
	enum smtp_reply_status	 st;
	int			 code;		/* checked unless ERROR */
	const char		*text;
	size_t			 nlines;
	const char		*error;		/* checked when ERROR */
};

#define MORE	SMTP_REPLY_MORE
#define DONE	SMTP_REPLY_DONE
#define ERR	SMTP_REPLY_ERROR

static const struct feed_case feed_cases[] = {
	{ "single line",		"250 Ok",		DONE, 250, "Ok", 1, 0 },
	{ "multi-line",			"250-a\n250 b",		DONE, 250, "a\nb", 2, 0 },
	{ "three lines",		"220-a\n220-b\n220 c",	DONE, 220, "a\nb\nc", 3, 0 },
	{ "bare code",			"250",			DONE, 250, "", 1, 0 },
	{ "code and SP only",		"250 ",			DONE, 250, "", 1, 0 },
	{ "empty continuation text",	"250-\n250 x",		DONE, 250, "\nx", 2, 0 },
	{ "bare code ends multi-line",	"250-a\n250",		DONE, 250, "a\n", 2, 0 },
	{ "continuation only",		"250-a",		MORE, 250, "a", 1, 0 },
	{ "4xx with enhanced code",	"421 4.3.2 Shutting down", DONE, 421, "4.3.2 Shutting down", 1, 0 },
	{ "5xx",			"554 5.7.1 No",		DONE, 554, "5.7.1 No", 1, 0 },
	{ "354",			"354 Go ahead",		DONE, 354, "Go ahead", 1, 0 },
	{ "text keeps inner spaces",	"250 a  b ",		DONE, 250, "a  b ", 1, 0 },
	{ "code mismatch",		"250-a\n251 b",		ERR, 0, 0, 0, "code changed inside multi-line reply" },
	{ "class change mid-reply",	"250-a\n550 b",		ERR, 0, 0, 0, "code changed inside multi-line reply" },
	{ "letter after code 250x",	"250x",			ERR, 0, 0, 0, "bad reply code" },
	{ "TAB after code",		"250\tOk",		ERR, 0, 0, 0, "bad reply code" },
	{ "first digit 6",		"600 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "first digit 1",		"199 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "1xx letters",		"1xx",			ERR, 0, 0, 0, "bad reply code" },
	{ "second digit 6",		"260 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "letter in second place",	"2a0 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "letter in third place",	"25a x",		ERR, 0, 0, 0, "bad reply code" },
	{ "two digits",			"25",			ERR, 0, 0, 0, "bad reply code" },
	{ "empty line",			"",			ERR, 0, 0, 0, "bad reply code" },
	{ "leading space",		" 250 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "four digits",		"2500 x",		ERR, 0, 0, 0, "bad reply code" },
	{ "bad second line",		"250-a\nxyz",		ERR, 0, 0, 0, "bad reply code" },
};

struct esc_case {
	const char	*text;
	int		 code;
	const char	*want;		/* "" = none */
};

static const struct esc_case esc_cases[] = {
	{ "2.1.0 Ok",		250, "2.1.0" },
	{ "2.1.0",		250, "2.1.0" },
	{ "5.7.1 Denied",	550, "5.7.1" },
	{ "4.7.1 Try later",	451, "4.7.1" },
	{ "2.123.456 x",	250, "2.123.456" },
	{ "5.7.1 x",		450, "" },
	{ "4.7.1 x",		550, "" },
	{ "2.0.0 x",		550, "" },
	{ "3.0.0 x",		354, "" },
	{ "2.0.0x",		250, "" },
	{ "2.0.0\tx",		250, "" },
	{ "2.0.0000",		250, "" },
	{ "2.1234.0 x",		250, "" },
	{ "2.0 x",		250, "" },
	{ "2..0 x",		250, "" },
	{ "2.0. x",		250, "" },
	{ ".2.0.0 x",		250, "" },
	{ "12.0.0 x",		250, "" },
	{ "Ok",			250, "" },
	{ "",			250, "" },
	{ "2.0.0 x",		0,   "" },
	{ "2.0.0 x",		700, "" },
};

struct render_case {
	const char	*name;
	const char	*lines;
	int		 override;
	const char	*dflt;
	const char	*want;		/* "" = expect 0 */
};

static const struct render_case render_cases[] = {
	{ "single line gets default code", "250 Ok", 0, "2.0.0", "250 2.0.0 Ok\r\n" },
	{ "multi-line gets code on every line", "250-a\n250 b", 0, "2.0.0",
	  "250-2.0.0 a\r\n250 2.0.0 b\r\n" },
	{ "existing code kept", "250 2.1.0 Sender ok", 0, "2.0.0", "250 2.1.0 Sender ok\r\n" },
	{ "existing code, end of text", "250 2.1.5", 0, "2.0.0", "250 2.1.5\r\n" },
	{ "mixed lines", "250-2.1.0 a\n250 b", 0, "2.0.0", "250-2.1.0 a\r\n250 2.0.0 b\r\n" },
	{ "bare code", "250", 0, "2.0.0", "250 2.0.0\r\n" },
	{ "empty continuation", "250-\n250 x", 0, "2.0.0", "250-2.0.0\r\n250 2.0.0 x\r\n" },
	{ "greeting", "220-mx ESMTP\n220 ready", 0, "2.0.0",
	  "220-2.0.0 mx ESMTP\r\n220 2.0.0 ready\r\n" },
	{ "inner spaces kept", "250 2.0.0  two", 0, "2.0.0", "250 2.0.0  two\r\n" },
	{ "override 421 with 451, same class", "421 4.3.2 Shutting down", 451, "4.0.0",
	  "451 4.3.2 Shutting down\r\n" },
	{ "override 421 with 451, no code", "421 Service not available", 451, "4.0.0",
	  "451 4.0.0 Service not available\r\n" },
	{ "override 550 with 451 fixes class", "550 5.1.1 No such user", 451, "4.0.0",
	  "451 4.1.1 No such user\r\n" },
	{ "override fixes class on every line", "550-5.7.1 a\n550 5.7.2 b", 450, "4.7.1",
	  "450-4.7.1 a\r\n450 4.7.2 b\r\n" },
	{ "override 250 with 554", "250 2.0.0 Ok", 554, "5.0.0", "554 5.0.0 Ok\r\n" },
	{ "upstream class mismatch fixed", "250 4.1.1 weird", 0, "2.0.0", "250 2.1.1 weird\r\n" },
	{ "dflt class mismatch fixed", "250 Ok", 550, "2.0.0", "550 5.0.0 Ok\r\n" },
	{ "dflt NULL", "250 Ok", 0, NULL, "250 2.0.0 Ok\r\n" },
	{ "dflt garbage", "451 later", 0, "garbage", "451 4.0.0 later\r\n" },
	{ "dflt with trailing text", "451 later", 0, "4.7.1 x", "451 4.0.0 later\r\n" },
	{ "dflt 4.7.1", "451 later", 0, "4.7.1", "451 4.7.1 later\r\n" },
	{ "354 untouched", "354 End data with <CR><LF>.<CR><LF>", 0, "2.0.0",
	  "354 End data with <CR><LF>.<CR><LF>\r\n" },
	{ "334 challenge untouched", "334 VXNlcm5hbWU6", 0, "2.0.0", "334 VXNlcm5hbWU6\r\n" },
	{ "bare 354", "354", 0, "2.0.0", "354\r\n" },
	{ "override to 600 refused", "250 Ok", 600, "2.0.0", "" },
	{ "override to 199 refused", "250 Ok", 199, "2.0.0", "" },
	{ "override to 260 refused", "250 Ok", 260, "2.0.0", "" },
};

static const char postfix_ehlo[] =
    "250-mx\n"
    "250-PIPELINING\n"
    "250-SIZE 10240000\n"
    "250-VRFY\n"
    "250-ETRN\n"
    "250-STARTTLS\n"
    "250-ENHANCEDSTATUSCODES\n"
    "250-8BITMIME\n"
    "250-DSN\n"
    "250-SMTPUTF8\n"
    "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\n"
    "250 CHUNKING";

struct caps_case {
	const char	*name;
	const char	*lines;
	unsigned	 flags;
	size_t		 size;
	const char	*xclient;
	const char	*xforward;
	const char	*auth;
};

static const struct caps_case caps_cases[] = {
	{ "Postfix EHLO", postfix_ehlo,
	  SMTP_EHLO_PIPELINING | SMTP_EHLO_SIZE | SMTP_EHLO_STARTTLS |
	  SMTP_EHLO_ENHANCEDSTATUSCODES | SMTP_EHLO_8BITMIME | SMTP_EHLO_DSN |
	  SMTP_EHLO_SMTPUTF8 | SMTP_EHLO_XCLIENT | SMTP_EHLO_CHUNKING,
	  10240000, "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT", "", "" },
	{ "lower-case keywords and args",
	  "250-mx\n250-pipelining\n250-size 1000\n250 auth plain login",
	  SMTP_EHLO_PIPELINING | SMTP_EHLO_SIZE | SMTP_EHLO_AUTH, 1000, "", "", "PLAIN LOGIN" },
	{ "first line is not a keyword", "250-PIPELINING\n250 DSN", SMTP_EHLO_DSN, 0, "", "", "" },
	{ "single-line EHLO reply", "250 mx", 0, 0, "", "", "" },
	{ "non-250 reply ignored", "550-mx\n550 PIPELINING", 0, 0, "", "", "" },
	{ "SIZE without argument", "250-mx\n250 SIZE", SMTP_EHLO_SIZE, 0, "", "", "" },
	{ "SIZE overflow saturates", "250-mx\n250 SIZE 999999999999999999999999999",
	  SMTP_EHLO_SIZE, SIZE_MAX, "", "", "" },
	{ "SIZE garbage ignored", "250-mx\n250 SIZE 10k", SMTP_EHLO_SIZE, 0, "", "", "" },
	{ "keyword prefix does not match", "250-mx\n250-PIPELININGX\n250 DSNX", 0, 0, "", "", "" },
	{ "XFORWARD list", "250-mx\n250 XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT",
	  SMTP_EHLO_XFORWARD, 0, "", "NAME ADDR PROTO HELO SOURCE PORT IDENT", "" },
	{ "old AUTH= form", "250-mx\n250 AUTH=PLAIN LOGIN", SMTP_EHLO_AUTH, 0, "", "", "PLAIN LOGIN" },
	{ "BINARYMIME", "250-mx\n250 BINARYMIME", SMTP_EHLO_BINARYMIME, 0, "", "", "" },
	{ "extra spaces collapsed", "250-mx\n250 XCLIENT  name   addr ",
	  SMTP_EHLO_XCLIENT, 0, "NAME ADDR", "", "" },
	{ "control char token dropped", "250-mx\n250 XCLIENT NAME\x01X ADDR",
	  SMTP_EHLO_XCLIENT, 0, "ADDR", "", "" },
	{ "8-bit token dropped", "250-mx\n250 AUTH PL\xc3\xa4IN LOGIN",
	  SMTP_EHLO_AUTH, 0, "", "", "LOGIN" },
};

static void
test_feed_limits(void)
{
	struct smtp_reply r;
	char line[SMTP_REPLY_LINE_MAX + 8];
	size_t i;
	enum smtp_reply_status st = MORE;

	/* 64 lines are fine, the 65th is refused. */
	smtp_reply_init(&r);
	for (i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++)
		st = smtp_reply_feed(&r, "250-x", 5);
	ok(st == MORE && smtp_reply_feed(&r, "250 x", 5) == DONE &&
	    r.nlines == SMTP_REPLY_LINES_MAX, "exactly 64 lines accepted");
	smtp_reply_init(&r);
	for (i = 0; i < SMTP_REPLY_LINES_MAX; i++)
		st = smtp_reply_feed(&r, "250-x", 5);
	st = smtp_reply_feed(&r, "250 x", 5);
	ok(st == ERR && strcmp(r.error, "too many lines") == 0, "65 lines refused");

	/* Total text: 8 full lines of 996 + 7 separators + 1 + t = 8192. */
	memcpy(line, "250-", 4);
	memset(line + 4, 't', sizeof(line) - 4);
	smtp_reply_init(&r);
	for (i = 0; i < 8; i++)
		st = smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX);
	line[3] = ' ';
	ok(st == MORE && smtp_reply_feed(&r, line, 4 + 216) == DONE &&
	    r.textlen == SMTP_REPLY_TEXT_MAX && strlen(r.text) == SMTP_REPLY_TEXT_MAX,
	    "text of exactly 8192 accepted");
	line[3] = '-';
	smtp_reply_init(&r);
	for (i = 0; i < 8; i++)
		st = smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX);
	line[3] = ' ';
	st = smtp_reply_feed(&r, line, 4 + 217);
	ok(st == ERR && strcmp(r.error, "reply too long") == 0 &&
	    r.textlen <= SMTP_REPLY_TEXT_MAX, "text of 8193 refused");

	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX) == DONE,
	    "line of exactly SMTP_REPLY_LINE_MAX accepted");
	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, line, SMTP_REPLY_LINE_MAX + 1) == ERR,
	    "line over SMTP_REPLY_LINE_MAX refused");

	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, "250 a\0b", 7) == ERR, "embedded NUL refused");
	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, "250 a\rb", 7) == ERR, "embedded CR refused");
	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, "250 a\nb", 7) == ERR, "embedded LF refused");
	smtp_reply_init(&r);
	ok(smtp_reply_feed(&r, "250 Ok and more", 6) == DONE && strcmp(r.text, "Ok") == 0,
	    "len is honoured, bytes past it ignored");

	smtp_reply_init(&r);
	smtp_reply_feed(&r, "250-a", 5);
	smtp_reply_feed(&r, "550 b", 5);
	ok(smtp_reply_feed(&r, "250 c", 5) == ERR && r.error != NULL,
	    "error is sticky until init");
	smtp_reply_init(&r);
	ok(r.error == NULL && r.nlines == 0 && smtp_reply_feed(&r, "250 c", 5) == DONE,
	    "init clears the error");
}

static void
test_render_limits(void)
{
	struct smtp_reply r;
	char out[64];
	const char *want = "250-2.0.0 a\r\n250 2.0.0 b\r\n";
	size_t n = strlen(want);

	feed_all(&r, "250-a\n250 b");
	ok(smtp_reply_render(&r, 0, "2.0.0", out, n + 1) == n && strcmp(out, want) == 0,
	    "render into exact-size buffer");
	ok(smtp_reply_render(&r, 0, "2.0.0", out, n) == 0,
	    "render into buffer without room for NUL fails");
	ok(smtp_reply_render(&r, 0, "2.0.0", out, 10) == 0,
	    "render into tiny buffer fails");
	ok(smtp_reply_render(&r, 0, "2.0.0", out, 0) == 0, "render into zero buffer fails");

	smtp_reply_init(&r);
	ok(smtp_reply_render(&r, 0, "2.0.0", out, sizeof(out)) == 0,
	    "render of an empty reply fails");

	/* A hand-made reply must not smuggle a bare CR to the client. */
	smtp_reply_init(&r);
	r.code = 250;
	r.nlines = 1;
	strcpy(r.text, "a\rb");
	r.textlen = 3;
	ok(smtp_reply_render(&r, 0, "2.0.0", out, sizeof(out)) == 0,
	    "render refuses CR in text");

	/* textlen larger than the buffer is clamped, not trusted. */
	smtp_reply_init(&r);
	r.code = 250;
	r.nlines = 1;
	strcpy(r.text, "Ok");
	r.textlen = SMTP_REPLY_TEXT_MAX + 1000;
	ok(smtp_reply_render(&r, 0, "2.0.0", out, sizeof(out)) == 14 &&
	    strcmp(out, "250 2.0.0 Ok\r\n") == 0, "render clamps a bogus textlen");

	/* Largest possible reply renders into a buffer sized for it. */
	{
		static char big[SMTP_REPLY_LINES_MAX * (SMTP_REPLY_LINE_MAX + 16)];
		char line[SMTP_REPLY_LINE_MAX];
		size_t i;

		memcpy(line, "250-", 4);
		memset(line + 4, 'x', 100);
		smtp_reply_init(&r);
		for (i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++)
			smtp_reply_feed(&r, line, 104);
		line[3] = ' ';
		ok(smtp_reply_feed(&r, line, 104) == DONE &&
		    smtp_reply_render(&r, 421, "4.0.0", big, sizeof(big)) ==
		    SMTP_REPLY_LINES_MAX * (4 + 6 + 100 + 2),
		    "64-line reply renders with a code on every line");
	}
}

static void
test_caps_truncation(void)
{
	struct smtp_reply r;
	struct smtp_ehlo_caps caps;
	char lines[600];
	const char *full;
	size_t len;

	/* 20 x "ATTRIBUTE_NN" = 259 bytes, more than xclient[128] holds. */
	full = "ATTRIBUTE_01 ATTRIBUTE_02 ATTRIBUTE_03 ATTRIBUTE_04 ATTRIBUTE_05 "
	    "ATTRIBUTE_06 ATTRIBUTE_07 ATTRIBUTE_08 ATTRIBUTE_09 ATTRIBUTE_10 "
	    "ATTRIBUTE_11 ATTRIBUTE_12 ATTRIBUTE_13 ATTRIBUTE_14 ATTRIBUTE_15 "
	    "ATTRIBUTE_16 ATTRIBUTE_17 ATTRIBUTE_18 ATTRIBUTE_19 ATTRIBUTE_20";
	snprintf(lines, sizeof(lines), "250-mx\n250 XCLIENT %s", full);
	ok(feed_all(&r, lines) == DONE, "long XCLIENT line parses");
	smtp_reply_ehlo_caps(&r, &caps);
	len = strlen(caps.xclient);
	ok(len < sizeof(caps.xclient) && len > 0 &&
	    strncmp(caps.xclient, full, len) == 0 && full[len] == ' ',
	    "long XCLIENT list truncated at a token boundary (%zu bytes)", len);
	ok(len == 9 * 13 - 1, "truncated list keeps as many whole tokens as fit");

	/* One token longer than the buffer: dropped, not cut. */
	snprintf(lines, sizeof(lines), "250-mx\n250 AUTH %0200d PLAIN", 0);
	feed_all(&r, lines);
	smtp_reply_ehlo_caps(&r, &caps);
	ok(caps.auth[0] == '\0' && (caps.flags & SMTP_EHLO_AUTH),
	    "oversize token not partially copied");
}

int
main(void)
{
	struct smtp_reply r;
	struct smtp_ehlo_caps caps;
	char out[256];
	size_t i, n;

	plan(143);
	for (i = 0; i < N(feed_cases); i++) {
		const struct feed_case *c = &feed_cases[i];
		enum smtp_reply_status st = feed_all(&r, c->lines);
		int good = st == c->st;

		if (good && st == ERR)
			good = r.error != NULL && strcmp(r.error, c->error) == 0;
		else if (good)
			good = r.code == c->code && strcmp(r.text, c->text) == 0 &&
			    r.textlen == strlen(c->text) && r.nlines == c->nlines &&
			    r.error == NULL;
		ok(good, "feed: %s", c->name);
	}
	test_feed_limits();

	for (i = 0; i < N(esc_cases); i++) {
		const struct esc_case *c = &esc_cases[i];

		memset(out, 'Z', 16);
		n = smtp_reply_enhanced(c->text, c->code, out, 16);
		ok(n == strlen(c->want) && (n == 0 || strcmp(out, c->want) == 0),
		    "enhanced: \"%s\" with %d -> \"%s\"", c->text, c->code, c->want);
	}
	ok(smtp_reply_enhanced("2.1.0 Ok", 250, out, 5) == 0,
	    "enhanced: out too small returns 0");
	ok(smtp_reply_enhanced("2.1.0 Ok", 250, out, 6) == 5 && strcmp(out, "2.1.0") == 0,
	    "enhanced: out of exactly len + 1");
	ok(smtp_reply_enhanced("2.1.0 Ok", 250, NULL, 0) == 5,
	    "enhanced: NULL out just measures");

	for (i = 0; i < N(render_cases); i++) {
		const struct render_case *c = &render_cases[i];

		ok(feed_all(&r, c->lines) == DONE, "render setup: %s", c->name);
		memset(out, 'Z', sizeof(out));
		n = smtp_reply_render(&r, c->override, c->dflt, out, sizeof(out));
		if (*c->want == '\0')
			ok(n == 0, "render: %s", c->name);
		else {
			if (n != strlen(c->want) || strcmp(out, c->want) != 0)
				printf("# got %zu \"%.*s\"\n", n, (int)n, out);
			ok(n == strlen(c->want) && strcmp(out, c->want) == 0,
			    "render: %s", c->name);
		}
	}
	test_render_limits();

	for (i = 0; i < N(caps_cases); i++) {
		const struct caps_case *c = &caps_cases[i];

		feed_all(&r, c->lines);
		memset(&caps, 0xa5, sizeof(caps));
		smtp_reply_ehlo_caps(&r, &caps);
		if (caps.flags != c->flags)
			printf("# flags 0x%x want 0x%x\n", caps.flags, c->flags);
		ok(caps.flags == c->flags && caps.size == c->size &&
		    strcmp(caps.xclient, c->xclient) == 0 &&
		    strcmp(caps.xforward, c->xforward) == 0 &&
		    strcmp(caps.auth, c->auth) == 0, "caps: %s", c->name);
	}
	test_caps_truncation();

	return done_testing();
}
