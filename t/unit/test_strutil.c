/*
 * test_strutil.c - common/strutil.c: ASCII case and comparison, MIME
 * tokens, the boolean spelling set, bounded decimals, FNV-1a 64,
 * "key=value" option split (TAP).
 */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "strutil.h"
#include "tap.h"

#define N(a)	(sizeof (a) / sizeof (a)[0])

struct cmp_case {
	const char	*a, *b;
	size_t		 n;		/* for str_ncasecmp */
	int		 sign;		/* of str_ncasecmp(a, b, n) */
	int		 fullsign;	/* of str_casecmp(a, b) */
};

static const struct cmp_case cmp_cases[] = {
	{ "", "", 5, 0, 0 },
	{ "abc", "ABC", 3, 0, 0 },
	{ "From", "fROM", 4, 0, 0 },
	{ "abc", "abd", 3, -1, -1 },
	{ "abd", "ABC", 3, 1, 1 },
	{ "ab", "abc", 3, -1, -1 },		/* shorter sorts first */
	{ "abc", "ab", 3, 1, 1 },
	{ "abcX", "ABCy", 3, 0, -1 },		/* n stops before the difference */
	{ "abcX", "ABCy", 4, -1, -1 },		/* one past: it counts */
	{ "x", "y", 0, 0, -1 },			/* n = 0: equal */
	{ "[", "{", 1, -1, -1 },		/* '[' is not a letter: no folding */
	{ "@", "`", 1, -1, -1 },		/* around 'A' and 'a' */
	{ "\xc4", "\xe4", 1, -1, -1 },	/* Latin-1 letters are bytes */
	{ "a\x80", "A\x7f", 2, 1, 1 },	/* unsigned bytes */
};

struct token_case {
	const char	*s;
	size_t		 max;
	int		 want;
};

static const struct token_case token_cases[] = {
	{ "mx.example.net", 255, 1 },
	{ "a", 1, 1 },
	{ "ab", 1, 0 },				/* one past max */
	{ "abc", 3, 1 },
	{ "abcd", 3, 0 },
	{ "", 255, 0 },
	{ "a b", 255, 0 },
	{ "a\tb", 255, 0 },
	{ "a\x7f", 255, 0 },
	{ "a\x80", 255, 0 },
	{ "!#$%&'*+-.^_`{|}~", 255, 1 },
	{ "a(", 255, 0 }, { "a)", 255, 0 }, { "a<", 255, 0 }, { "a>", 255, 0 },
	{ "a@", 255, 0 }, { "a,", 255, 0 }, { "a;", 255, 0 }, { "a:", 255, 0 },
	{ "a\\", 255, 0 }, { "a\"", 255, 0 }, { "a/", 255, 0 }, { "a[", 255, 0 },
	{ "a]", 255, 0 }, { "a?", 255, 0 }, { "a=", 255, 0 },
};

struct bool_case {
	const char	*in;
	int		 rc;		/* 0 or -1 */
	int		 want;		/* when rc == 0 */
};

static const struct bool_case bool_cases[] = {
	/* Every spelling of the one set, in three cases. */
	{ "yes", 0, 1 }, { "YES", 0, 1 }, { "Yes", 0, 1 },
	{ "no", 0, 0 }, { "NO", 0, 0 }, { "nO", 0, 0 },
	{ "true", 0, 1 }, { "TRUE", 0, 1 }, { "True", 0, 1 },
	{ "false", 0, 0 }, { "FALSE", 0, 0 }, { "False", 0, 0 },
	{ "on", 0, 1 }, { "ON", 0, 1 }, { "On", 0, 1 },
	{ "off", 0, 0 }, { "OFF", 0, 0 }, { "Off", 0, 0 },
	{ "1", 0, 1 }, { "0", 0, 0 },
	/* Everything else. */
	{ "", -1, 0 }, { " yes", -1, 0 }, { "yes ", -1, 0 }, { "y", -1, 0 },
	{ "n", -1, 0 }, { "ye", -1, 0 }, { "yess", -1, 0 }, { "tru", -1, 0 },
	{ "truee", -1, 0 }, { "of", -1, 0 }, { "offf", -1, 0 }, { "01", -1, 0 },
	{ "10", -1, 0 }, { "2", -1, 0 }, { "-1", -1, 0 }, { "enable", -1, 0 },
	{ "t", -1, 0 }, { "f", -1, 0 }, { "yes\t", -1, 0 },
	/* Locale-looking bytes are not letters. */
	{ "\xd9" "es", -1, 0 }, { "y\xc5s", -1, 0 },
};

struct uint_case {
	const char		*in;
	unsigned long long	 max;
	int			 rc;
	unsigned long long	 want;
};

static const struct uint_case uint_cases[] = {
	{ "0", 0, 0, 0 },
	{ "1", 0, -1, 0 },		/* one past max 0 */
	{ "9", 9, 0, 9 },
	{ "10", 9, -1, 0 },		/* one past max 9 */
	{ "100", 100, 0, 100 },
	{ "101", 100, -1, 0 },
	{ "65535", 65535, 0, 65535 },
	{ "65536", 65535, -1, 0 },
	{ "007", 10, 0, 7 },		/* leading zeros are decimal, not octal */
	{ "4294967295", UINT32_MAX, 0, UINT32_MAX },
	{ "4294967296", UINT32_MAX, -1, 0 },
	{ "18446744073709551615", ULLONG_MAX, 0, ULLONG_MAX },
	{ "18446744073709551616", ULLONG_MAX, -1, 0 },	/* overflow */
	{ "99999999999999999999999", ULLONG_MAX, -1, 0 },
	{ "", 100, -1, 0 },
	{ "+1", 100, -1, 0 },
	{ "-1", 100, -1, 0 },
	{ "-0", 100, -1, 0 },
	{ " 1", 100, -1, 0 },
	{ "1 ", 100, -1, 0 },
	{ "1x", 100, -1, 0 },
	{ "0x10", 100, -1, 0 },
	{ "1.0", 100, -1, 0 },
	{ "1e2", 1000, -1, 0 },
};

struct hash_case {
	const char	*in;
	uint64_t	 want;
};

/* Published FNV-1a 64 test vectors. */
static const struct hash_case hash_cases[] = {
	{ "", 0xcbf29ce484222325ULL },
	{ "a", 0xaf63dc4c8601ec8cULL },
	{ "foobar", 0x85944171f73967e8ULL },
};

struct opt_case {
	const char	*in;
	size_t		 keylen;
	int		 rc;
	const char	*key;
	const char	*value;
};

static const struct opt_case opt_cases[] = {
	{ "helo=yes", 16, 0, "helo", "yes" },
	{ "k=", 16, 0, "k", "" },
	{ "k==v", 16, 0, "k", "=v" },		/* first '=' splits */
	{ "k=a=b", 16, 0, "k", "a=b" },
	{ " k \t= v ", 16, 0, "k", "v " },	/* blanks around key, before value */
	{ "path=/a b", 16, 0, "path", "/a b" },
	{ "novalue", 16, -1, NULL, NULL },
	{ "", 16, -1, NULL, NULL },
	{ "=v", 16, -1, NULL, NULL },		/* empty key */
	{ "  =v", 16, -1, NULL, NULL },
	{ "abc=1", 4, 0, "abc", "1" },		/* 3 + NUL fits in 4 */
	{ "abcd=1", 4, -1, NULL, NULL },	/* one past */
	{ "a=1", 1, -1, NULL, NULL },
	{ "a=1", 0, -1, NULL, NULL },
};

static void
test_lower(void)
{
	char	s[] = "MiXeD-Case.EXAMPLE@[1.2.3.4]\xc4\xd6";
	int	c, bad = 0;

	for (c = -1; c < 256; c++) {
		int want = (c >= 'A' && c <= 'Z') ? c + 32 : c;

		if (str_ascii_lower(c) != want)
			bad++;
	}
	ok(bad == 0, "str_ascii_lower: A-Z folded, -1..255 otherwise unchanged");
	str_lower(s);
	ok(strcmp(s, "mixed-case.example@[1.2.3.4]\xc4\xd6") == 0,
	    "str_lower: ASCII letters only, high bytes untouched");
	s[0] = '\0';
	str_lower(s);
	ok(s[0] == '\0', "str_lower: empty string");
}

static int
sign(int v)
{
	return v < 0 ? -1 : v > 0;
}

static void
test_casecmp(void)
{
	size_t	i;

	for (i = 0; i < N(cmp_cases); i++) {
		const struct cmp_case *t = &cmp_cases[i];

		ok(sign(str_ncasecmp(t->a, t->b, t->n)) == t->sign &&
		    sign(str_ncasecmp(t->b, t->a, t->n)) == -t->sign &&
		    sign(str_casecmp(t->a, t->b)) == t->fullsign,
		    "str_ncasecmp/str_casecmp case %zu", i);
	}
}

static void
test_token(void)
{
	size_t	i;
	int	c, n = 0;

	for (i = 0; i < N(token_cases); i++)
		ok(str_mime_token(token_cases[i].s, token_cases[i].max) ==
		    token_cases[i].want, "str_mime_token case %zu (max %zu)", i,
		    token_cases[i].max);
	for (c = -1; c < 256; c++)
		n += str_mime_tokenc(c);
	/* 94 printable ASCII characters, 15 tspecials (RFC 2045 5.1). */
	ok(n == 94 - 15, "str_mime_tokenc: %d token characters", n);
}

static void
test_bool(void)
{
	size_t	i;
	int	out;

	for (i = 0; i < N(bool_cases); i++) {
		const struct bool_case *t = &bool_cases[i];
		int rc;

		out = 42;
		rc = str_bool(t->in, &out);
		ok(rc == t->rc && (rc == 0 ? out == t->want : out == 42),
		    "str_bool(\"%s\") = %d, %d", t->in, rc, out);
	}
	out = 42;
	ok(str_bool(NULL, &out) == -1 && out == 42, "str_bool(NULL) = -1");
}

static void
test_uint(void)
{
	size_t			i;
	unsigned long long	out;

	for (i = 0; i < N(uint_cases); i++) {
		const struct uint_case *t = &uint_cases[i];
		int rc;

		out = 42;
		rc = str_uint(t->in, t->max, &out);
		ok(rc == t->rc && (rc == 0 ? out == t->want : out == 42),
		    "str_uint(\"%s\", %llu) = %d, %llu", t->in, t->max, rc, out);
	}
	ok(str_uint(NULL, 10, &out) == -1, "str_uint(NULL) = -1");
}

static void
test_hash(void)
{
	static const uint8_t	bytes[3] = { 'a', 0, 'b' };
	size_t			i;

	for (i = 0; i < N(hash_cases); i++)
		ok(str_hash(hash_cases[i].in) == hash_cases[i].want,
		    "str_hash(\"%s\") is FNV-1a 64", hash_cases[i].in);
	ok(str_hash_mem("foobar", 6) == str_hash("foobar"),
	    "str_hash_mem agrees with str_hash");
	ok(str_hash_mem(bytes, 3) != str_hash_mem(bytes, 1),
	    "str_hash_mem hashes past a NUL");
}

static void
test_option(void)
{
	size_t		 i;
	char		 key[16];
	const char	*value;

	for (i = 0; i < N(opt_cases); i++) {
		const struct opt_case *t = &opt_cases[i];
		int rc;

		value = NULL;
		rc = str_option_split(t->in, key, t->keylen, &value);
		ok(rc == t->rc && (rc != 0 || (strcmp(key, t->key) == 0 &&
		    value != NULL && strcmp(value, t->value) == 0)),
		    "str_option_split(\"%s\", %zu) = %d", t->in, t->keylen, rc);
	}
	ok(str_option_split(NULL, key, sizeof key, &value) == -1,
	    "str_option_split(NULL) = -1");
}

int
main(void)
{
	plan((int)N(cmp_cases) + (int)N(token_cases) + 1 + 3 + (int)N(bool_cases) + 1 + (int)N(uint_cases) + 1 +
	    (int)N(hash_cases) + 2 + (int)N(opt_cases) + 1);
	test_lower();
	test_casecmp();
	test_token();
	test_bool();
	test_uint();
	test_hash();
	test_option();
	return done_testing();
}
