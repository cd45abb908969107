/*
 * test_xtext.c - RFC 3461 xtext encode/valid/decode cases (TAP).
 */
#include <string.h>

#include "tap.h"
#include "xtext.h"

#define BAD	((size_t)-1)

struct enc_case {
	const char	*name;
	const char	*in;
	const char	*want;		/* expected xtext */
};

static const struct enc_case enc_cases[] = {
	{ "empty string",		"",		"" },
	{ "plain ascii unchanged",	"mx.example.com", "mx.example.com" },
	{ "plus is encoded",		"a+b",		"a+2Bb" },
	{ "equals is encoded",		"a=b",		"a+3Db" },
	{ "space is encoded",		"a b",		"a+20b" },
	{ "CR is encoded",		"a\rb",		"a+0Db" },
	{ "LF is encoded",		"a\nb",		"a+0Ab" },
	{ "TAB is encoded",		"\t",		"+09" },
	{ "control 0x01 is encoded",	"\x01",		"+01" },
	{ "DEL is encoded",		"\x7f",		"+7F" },
	{ "high byte 0x80 is encoded",	"\x80",		"+80" },
	{ "high byte 0xff is encoded",	"\xff",		"+FF" },
	{ "utf-8 bytes are encoded",	"\xc3\xa9",	"+C3+A9" },
	{ "'!' and '~' are xchars",	"!~",		"!~" },
	{ "XCLIENT injection attempt",	"x ADDR=127.0.0.1", "x+20ADDR+3D127.0.0.1" },
	{ "ipv6 address unchanged",	"IPv6:2001:db8::1", "IPv6:2001:db8::1" },
};

struct valid_case {
	const char	*name;
	const char	*s;
	int		 want;
};

static const struct valid_case valid_cases[] = {
	{ "empty is valid",			"",		1 },
	{ "plain chars valid",			"abc.DEF",	1 },
	{ "hexchar valid",			"a+20b",	1 },
	{ "hexchar for xchar valid",		"+41",		1 },
	{ "hexchar at end valid",		"ab+2B",	1 },
	{ "lone '+' invalid",			"+",		0 },
	{ "'+2' truncated invalid",		"+2",		0 },
	{ "'a+2' truncated invalid",		"a+2",		0 },
	{ "'+zz' invalid",			"+zz",		0 },
	{ "lower-case hex invalid",		"+2b",		0 },
	{ "'+G0' invalid",			"+G0",		0 },
	{ "'=' invalid",			"a=b",		0 },
	{ "space invalid",			"a b",		0 },
	{ "CR invalid",				"a\rb",		0 },
	{ "DEL invalid",			"\x7f",		0 },
	{ "high byte invalid",			"\xc3\xa9",	0 },
};

struct dec_case {
	const char	*name;
	const char	*in;
	const char	*want;		/* NULL: expect (size_t)-1 */
	size_t		 wantlen;
};

static const struct dec_case dec_cases[] = {
	{ "decode plain",		"abc",		"abc",		3 },
	{ "decode empty",		"",		"",		0 },
	{ "decode +2B",			"a+2Bb",	"a+b",		3 },
	{ "decode +3D",			"a+3Db",	"a=b",		3 },
	{ "decode +20",			"+20",		" ",		1 },
	{ "decode +0D+0A",		"+0D+0A",	"\r\n",		2 },
	{ "decode +FF",			"+FF",		"\xff",		1 },
	{ "decode +41 to A",		"+41",		"A",		1 },
	{ "reject +2",			"+2",		NULL,		0 },
	{ "reject lone +",		"a+",		NULL,		0 },
	{ "reject +zz",			"+zz",		NULL,		0 },
	{ "reject lower-case hex",	"+2b",		NULL,		0 },
	{ "reject a=b",			"a=b",		NULL,		0 },
	{ "reject space",		"a b",		NULL,		0 },
	{ "reject raw high byte",	"\xe9",		NULL,		0 },
	{ "reject +00 (embedded NUL)",	"a+00b",	NULL,		0 },
};

int
main(void)
{
	char buf[256], back[256];
	size_t i, n, want;

	plan(77);
	for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
		const struct enc_case *c = &enc_cases[i];

		memset(buf, 'Z', sizeof(buf));
		n = xtext_encode(c->in, buf, sizeof(buf));
		ok(n == strlen(c->want) && strcmp(buf, c->want) == 0,
		    "encode: %s", c->name);
	}
	for (i = 0; i < sizeof(enc_cases) / sizeof(enc_cases[0]); i++) {
		const struct enc_case *c = &enc_cases[i];

		n = xtext_encode(c->in, buf, sizeof(buf));
		ok(n != BAD && xtext_valid(buf) == 1 &&
		    xtext_decode(buf, back, sizeof(back)) == strlen(c->in) &&
		    strcmp(back, c->in) == 0, "round trip: %s", c->name);
	}

	/* Every byte 1..255 survives a round trip. */
	{
		char all[256];

		for (i = 0; i < 255; i++)
			all[i] = (char)(i + 1);
		all[255] = '\0';
		char big[3 * 256 + 1];
		n = xtext_encode(all, big, sizeof(big));
		ok(n != BAD && xtext_valid(big) &&
		    xtext_decode(big, back, sizeof(back)) == 255 &&
		    memcmp(back, all, 256) == 0, "round trip: all bytes 1..255");
	}

	/* Short buffers: exact fit works, one less fails and leaves "". */
	want = strlen("a+20b");
	ok(xtext_encode("a b", buf, want + 1) == want && strcmp(buf, "a+20b") == 0,
	    "encode: exact-size buffer");
	memset(buf, 'Z', sizeof(buf));
	ok(xtext_encode("a b", buf, want) == BAD && buf[0] == '\0',
	    "encode: buffer one byte short returns -1 and empty string");
	memset(buf, 'Z', sizeof(buf));
	ok(xtext_encode("ab ", buf, 5) == BAD && buf[0] == '\0',
	    "encode: hexchar not split at buffer end");
	ok(xtext_encode("abc", buf, 3) == BAD && buf[0] == '\0',
	    "encode: no room for NUL returns -1");
	ok(xtext_encode("", buf, 1) == 0 && buf[0] == '\0',
	    "encode: empty into 1-byte buffer");
	ok(xtext_encode("a", buf, 0) == BAD, "encode: zero-length buffer");
	ok(xtext_encode(NULL, buf, sizeof(buf)) == BAD && buf[0] == '\0',
	    "encode: NULL input");

	for (i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
		const struct valid_case *c = &valid_cases[i];

		ok(xtext_valid(c->s) == c->want, "valid: %s", c->name);
	}
	ok(xtext_valid(NULL) == 0, "valid: NULL is not valid");

	for (i = 0; i < sizeof(dec_cases) / sizeof(dec_cases[0]); i++) {
		const struct dec_case *c = &dec_cases[i];

		memset(buf, 'Z', sizeof(buf));
		n = xtext_decode(c->in, buf, sizeof(buf));
		if (c->want == NULL)
			ok(n == BAD && buf[0] == '\0', "decode: %s", c->name);
		else
			ok(n == c->wantlen && memcmp(buf, c->want, n + 1) == 0,
			    "decode: %s", c->name);
	}
	ok(xtext_decode("a+20b", buf, 4) == 3 && strcmp(buf, "a b") == 0,
	    "decode: exact-size buffer");
	memset(buf, 'Z', sizeof(buf));
	ok(xtext_decode("a+20b", buf, 3) == BAD && buf[0] == '\0',
	    "decode: buffer one byte short returns -1");
	ok(xtext_decode("a", buf, 0) == BAD, "decode: zero-length buffer");
	ok(xtext_decode(NULL, buf, sizeof(buf)) == BAD, "decode: NULL input");

	return done_testing();
}
