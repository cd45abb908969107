/*
 * test_milter_proto.c - the milter client's packet and answer checks (TAP):
 * packet framing and its bounds, NUL-terminated string lists, the OPTNEG
 * answer (versions, actions, SETSYMLIST trailer), SMFIR_REPLYCODE
 * validation and %% unescaping, header names, and header values refolded
 * with CRLF or refused when they carry a bare CR or LF.
 */
#include <string.h>

#include "milter_proto.h"
#include "tap.h"

struct reply_case {
	const char	*name;
	const char	*in;
	const char	*want;		/* NULL: refused */
};

static const struct reply_case reply_cases[] = {
	{ "plain 550", "550 5.7.1 no", "550 5.7.1 no" },
	{ "plain 451", "451 4.7.1 later", "451 4.7.1 later" },
	{ "%% unescaped", "554 5.7.1 100%% spam", "554 5.7.1 100% spam" },
	{ "code only", "550", "550" },
	{ "multi-line", "550-5.7.1 a\r\n550 5.7.1 b", "550-5.7.1 a\n550 5.7.1 b" },
	{ "2xx refused", "250 2.0.0 ok", NULL },
	{ "3xx refused", "354 go", NULL },
	{ "class mismatch", "550 4.7.1 no", NULL },
	{ "mixed codes", "550-5.7.1 a\r\n551 5.7.1 b", NULL },
	{ "last line with dash", "550-5.7.1 a", NULL },
	{ "middle line with space", "550 5.7.1 a\r\n550 5.7.1 b", NULL },
	{ "bare LF", "550 5.7.1 a\nX-Evil: 1", NULL },
	{ "bare CR", "550 5.7.1 a\rb", NULL },
	{ "short", "55", NULL },
	{ "letters", "5x0 no", NULL },
	{ "high octet", "550 5.7.1 caf\xc3\xa9", NULL },
	{ "empty line in the middle", "550-a\r\n\r\n550 b", NULL },
};

struct value_case {
	const char	*name;
	const char	*in;
	const char	*want;		/* NULL: refused */
};

static const struct value_case value_cases[] = {
	{ "plain", "v=1; a=rsa", "v=1; a=rsa" },
	{ "bare LF fold (OpenDKIM)", "v=1;\n\tb=abc", "v=1;\r\n\tb=abc" },
	{ "CRLF fold kept", "v=1;\r\n b=abc", "v=1;\r\n b=abc" },
	{ "LF not before a blank", "v\nX-Evil: 1", NULL },
	{ "CRLF not before a blank", "v\r\nX-Evil: 1", NULL },
	{ "bare CR", "v\rX", NULL },
	{ "trailing LF", "v\n", NULL },
	{ "NUL-free control", "v\x01", NULL },
	{ "DEL", "v\x7f", NULL },
	{ "tab kept", "a\tb", "a\tb" },
	{ "empty", "", "" },
};

int
main(void)
{
	unsigned char buf[64], head[5];
	struct milter_pkt p;
	struct milter_optneg o;
	const char *s[4], *why;
	char out[1024];
	size_t used, i;
	long n;
	int bad;

	plan(27 + (int)(sizeof reply_cases / sizeof reply_cases[0]) +
	    (int)(sizeof value_cases / sizeof value_cases[0]));

	milter_pkt_head(head, 'c', 0);
	ok(memcmp(head, "\0\0\0\1c", 5) == 0, "head: length counts the command");
	ok(milter_pkt_parse(head, 4, &p, &used) == 0, "parse: a partial packet needs more");
	ok(milter_pkt_parse(head, 5, &p, &used) == 1 && p.cmd == 'c' && p.len == 0 &&
	    used == 5, "parse: a whole empty packet");
	memcpy(buf, "\0\0\0\0", 4);
	ok(milter_pkt_parse(buf, 4, &p, &used) == -1, "parse: length 0 refused");
	memcpy(buf, "\x7f\xff\xff\xff", 4);
	ok(milter_pkt_parse(buf, 4, &p, &used) == -1, "parse: length over the bound refused at once");
	memcpy(buf, "\0\0\0\4habc", 8);
	ok(milter_pkt_parse(buf, 7, &p, &used) == 0, "parse: truncated data waits");
	ok(milter_pkt_parse(buf, 8, &p, &used) == 1 && p.len == 3 && used == 8,
	    "parse: data length");

	ok(milter_strings((const unsigned char *)"a\0b\0", 4, s, 2, 2) == 2 &&
	    strcmp(s[1], "b") == 0, "strings: two");
	ok(milter_strings((const unsigned char *)"a\0b", 3, s, 1, 2) == -1,
	    "strings: last not terminated");
	ok(milter_strings((const unsigned char *)"a\0b\0c\0", 6, s, 1, 2) == -1,
	    "strings: too many");
	ok(milter_strings((const unsigned char *)"a\0", 2, s, 2, 2) == -1,
	    "strings: too few");
	ok(milter_strings((const unsigned char *)"", 0, s, 1, 1) == -1,
	    "strings: empty when one needed");

	/* OPTNEG answers */
	memcpy(buf, "\0\0\0\6\0\0\1\xff\0\0\0\0", 12);
	ok(milter_optneg_parse(buf, 12, &o, &why) == 0 && o.version == 6 &&
	    o.actions == 0x1ff, "optneg: version 6, every action");
	memcpy(buf, "\0\0\0\2\0\0\0\1\0\0\0\2", 12);
	ok(milter_optneg_parse(buf, 12, &o, &why) == 0 && o.version == 2 &&
	    o.flags == 2, "optneg: an older version");
	memcpy(buf, "\0\0\0\7\0\0\0\1\0\0\0\0", 12);
	ok(milter_optneg_parse(buf, 12, &o, &why) == -1, "optneg: a higher version refused");
	memcpy(buf, "\0\0\0\6\0\0\2\0\0\0\0\0", 12);
	ok(milter_optneg_parse(buf, 12, &o, &why) == -1, "optneg: an unoffered action refused");
	ok(milter_optneg_parse(buf, 11, &o, &why) == -1, "optneg: short answer refused");
	memcpy(buf, "\0\0\0\6\0\0\1\0\0\0\0\0" "\0\0\0\2" "i {mail_addr}\0"
	    "\0\0\0\5" "i\0", 12 + 4 + 14 + 4 + 2);
	ok(milter_optneg_parse(buf, 36, &o, &why) == 0 && o.has_list[2] &&
	    strcmp(o.list[2], "i {mail_addr}") == 0 && o.has_list[5] &&
	    strcmp(o.list[5], "i") == 0 && !o.has_list[0], "optneg: SETSYMLIST trailer");
	ok(milter_optneg_parse(buf, 35, &o, &why) == -1, "optneg: list without its NUL refused");
	ok(milter_optneg_parse(buf, 14, &o, &why) == -1, "optneg: truncated stage refused");
	buf[15] = 9;
	ok(milter_optneg_parse(buf, 36, &o, &why) == -1, "optneg: unknown stage refused");
	buf[15] = 5;
	ok(milter_optneg_parse(buf, 36, &o, &why) == -1, "optneg: a stage given twice refused");

	for (i = 0; i < sizeof reply_cases / sizeof reply_cases[0]; i++) {
		const struct reply_case *c = &reply_cases[i];
		int r = milter_reply_text((const unsigned char *)c->in, strlen(c->in) + 1,
		    out, sizeof out);

		ok(c->want == NULL ? r == -1 : r == 0 && strcmp(out, c->want) == 0,
		    "reply: %s", c->name);
	}
	ok(milter_reply_text((const unsigned char *)"550 x", 5, out, sizeof out) == -1,
	    "reply: not NUL-terminated refused");
	ok(milter_reply_text((const unsigned char *)"550 x\0y\0", 8, out, sizeof out) == -1,
	    "reply: data after the NUL refused");

	ok(milter_hdr_name_valid("DKIM-Signature") == 0, "name: plain");
	bad = milter_hdr_name_valid("X:A") == -1 && milter_hdr_name_valid("") == -1 &&
	    milter_hdr_name_valid("X A") == -1 && milter_hdr_name_valid("X\nA") == -1;
	ok(bad, "name: colon, empty, blank, LF refused");

	for (i = 0; i < sizeof value_cases / sizeof value_cases[0]; i++) {
		const struct value_case *c = &value_cases[i];

		n = milter_hdr_value(c->in, out, sizeof out);
		ok(c->want == NULL ? n == -1 : n >= 0 && strcmp(out, c->want) == 0,
		    "value: %s", c->name);
	}
	memset(out, 'a', 1000);
	out[1000] = '\0';
	{
		char big[1100];

		ok(milter_hdr_value(out, big, sizeof big) == -1, "value: a line over 998 refused");
	}
	return done_testing();
}
