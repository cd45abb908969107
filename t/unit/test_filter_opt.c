/*
 * test_filter_opt.c - the typed option getters of filter ABI 1.2
 * (filters/filter_opt.c): spellings, bounds, lists, unknown keys, and
 * the error recorded between filter_opt_begin() and filter_opt_end().
 */
#include <stdlib.h>
#include <string.h>

#include "filter_opt.h"
#include "tap.h"

#define N(a)	(sizeof (a) / sizeof (a)[0])

static void
test_bool(void)
{
	static const struct {
		const char	*opt;
		int		 r, want;
	} cases[] = {
		{ "flag=yes", 1, 1 }, { "flag=no", 1, 0 }, { "flag=TRUE", 1, 1 },
		{ "flag=False", 1, 0 }, { "flag=On", 1, 1 }, { "flag=off", 1, 0 },
		{ "flag=1", 1, 1 }, { "flag=0", 1, 0 }, { "flag=maybe", -1, 7 },
		{ "flag=", -1, 7 }, { "flag=yes ", -1, 7 }, { "other=yes", 0, 7 },
	};
	size_t i;
	int v, r;

	for (i = 0; i < N(cases); i++) {
		const char *const opts[] = { cases[i].opt };

		v = 7;
		r = filter_opt_bool(opts, 1, "flag", &v);
		ok(r == cases[i].r && v == cases[i].want, "bool \"%s\": %d, %d",
		    cases[i].opt, r, v);
	}
}

static void
test_uint(void)
{
	static const struct {
		const char		*opt;
		int			 r;
		unsigned long long	 want;
	} cases[] = {
		{ "n=1", 1, 1 }, { "n=10", 1, 10 }, { "n=0", -1, 99 },
		{ "n=11", -1, 99 }, { "n=-1", -1, 99 }, { "n=+2", -1, 99 },
		{ "n=2x", -1, 99 }, { "n=", -1, 99 },
		{ "n=99999999999999999999999", -1, 99 },
	};
	const char *const none[] = { "m=3" };
	unsigned long long v;
	size_t i;
	int r;

	for (i = 0; i < N(cases); i++) {
		const char *const opts[] = { cases[i].opt };

		v = 99;
		r = filter_opt_uint(opts, 1, "n", 1, 10, &v);
		ok(r == cases[i].r && v == cases[i].want, "uint \"%s\" in 1..10: %d, %llu",
		    cases[i].opt, r, v);
	}
	v = 99;
	ok(filter_opt_uint(none, 1, "n", 1, 10, &v) == 0 && v == 99,
	    "uint not set: 0, default kept");
}

static void
test_string_and_twice(void)
{
	const char *const opts[] = { "name=a b", "x=1", "x=2", "empty=" };
	const char *v = "default";
	char msg[FILTER_OPT_ERR_MAX];

	ok(filter_opt_string(opts, N(opts), "name", &v) == 1 && strcmp(v, "a b") == 0,
	    "string: the value as written");
	v = "default";
	ok(filter_opt_string(opts, N(opts), "nope", &v) == 0 && strcmp(v, "default") == 0,
	    "string not set: 0, default kept");
	ok(filter_opt_string(opts, N(opts), "empty", &v) == 1 && strcmp(v, "") == 0,
	    "string set to \"\"");
	filter_opt_begin();
	ok(filter_opt_string(opts, N(opts), "x", &v) == -1, "a key given twice: -1");
	ok(filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option x: given more than once") == 0, "recorded: %s", msg);
}

static void
test_list(void)
{
	const char *const opts[] = {
		"items= a@b.example ,, c , ", "other=z", "items=d,e",
		"blank=", "spaces= , ",
	};
	char **l = NULL;
	size_t n = 99;

	ok(filter_opt_list(opts, N(opts), "items", &l, &n) == 1 && n == 4 &&
	    l != NULL && strcmp(l[0], "a@b.example") == 0 && strcmp(l[1], "c") == 0 &&
	    strcmp(l[2], "d") == 0 && strcmp(l[3], "e") == 0 && l[4] == NULL,
	    "list: commas and a repeated key, blanks and empty items dropped");
	free(l);		/* one block */
	l = (char **)&l;
	ok(filter_opt_list(opts, N(opts), "blank", &l, &n) == 1 && n == 0 &&
	    l != NULL && l[0] == NULL, "list set to \"\": 1, empty array");
	free(l);
	ok(filter_opt_list(opts, N(opts), "spaces", &l, NULL) == 1 && l != NULL &&
	    l[0] == NULL, "list of blanks: empty array, count may be NULL");
	free(l);
	ok(filter_opt_list(opts, N(opts), "nope", &l, &n) == 0 && l == NULL && n == 0,
	    "list not set: 0, NULL");
}

static void
test_check_and_record(void)
{
	static const char *const known[] = { "a", "b", NULL };
	const char *const good[] = { "a=1", "b=2", "a=3" };
	const char *const unknown[] = { "a=1", "c=3", "d=4" };
	const char *const novalue[] = { "novalue" };
	const char *const badbool[] = { "a=x\ny" };
	const char *const badnum[] = { "a=12" };
	char msg[FILTER_OPT_ERR_MAX];
	unsigned long long n;
	int b;

	ok(filter_opt_check(good, N(good), known) == 0, "check: known keys pass");
	filter_opt_begin();
	ok(filter_opt_check(unknown, N(unknown), known) == -1, "check: unknown key -1");
	ok(filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option c: unknown option (known: a, b)") == 0,
	    "recorded, first only: %s", msg);
	filter_opt_begin();
	ok(filter_opt_check(novalue, N(novalue), known) == -1 &&
	    filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option novalue: not key=value") == 0, "not key=value: %s", msg);
	filter_opt_begin();
	ok(filter_opt_bool(badbool, 1, "a", &b) == -1 &&
	    filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option a: \"x?y\" is not a boolean (yes/no, true/false, "
	    "on/off, 1/0)") == 0, "bad boolean, control character shown as ?: %s", msg);
	filter_opt_begin();
	ok(filter_opt_uint(badnum, 1, "a", 1, 10, &n) == -1 &&
	    filter_opt_end(msg, sizeof msg) == -1 &&
	    strcmp(msg, "option a: \"12\" is not a number from 1 to 10") == 0,
	    "bad number: %s", msg);
	filter_opt_begin();
	ok(filter_opt_check(good, N(good), known) == 0 &&
	    filter_opt_end(msg, sizeof msg) == 0, "nothing wrong: end says 0");
	ok(filter_opt_uint(badnum, 1, "a", 1, 10, &n) == -1, "outside begin/end: -1 still");
	filter_opt_begin();
	ok(filter_opt_end(msg, sizeof msg) == 0, "and nothing was recorded for the next init");
}

int
main(void)
{
	plan(12 + 10 + 5 + 4 + 9);
	test_bool();
	test_uint();
	test_string_and_twice();
	test_list();
	test_check_and_record();
	return done_testing();
}
