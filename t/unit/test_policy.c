/*
 * test_policy.c - unit tests for policy/policy.c
 *
 * NAME
 *	test_policy - policy lookup, action mapping, dry run,
 *	Authentication-Results rendering and forged-field detection
 *
 * SYNOPSIS
 *	build/unit/test_policy		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	Tables of cases against t/unit/conf/policy.conf (loaded, so the hash
 *	index is in play) and against the same configuration with the index
 *	removed (the linear fallback must agree), 5000 generated domains,
 *	hand-built policies for every dry-run precedence level, exact
 *	renderings of Authentication-Results fields, injection attempts and
 *	a seeded random run whose every output must keep the field's shape.
 */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "policy.h"
#include "tap.h"

#define TEST_AR_ID	"mx.example.net"

/* Write text to a temp file and load it; NULL with err set on failure. */
static struct config *
test_policy_load_text(const char *text, char *err, size_t errlen)
{
	struct config	*c;
	const char	*dir;
	char		 path[PATH_MAX];
	size_t		 len = strlen(text);
	int		 fd;

	if ((dir = getenv("TMPDIR")) == NULL || dir[0] == '\0')
		dir = "/tmp";
	snprintf(path, sizeof path, "%s/test_policy.XXXXXX", dir);
	if ((fd = mkstemp(path)) == -1) {
		snprintf(err, errlen, "mkstemp failed");
		return NULL;
	}
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(path);
		snprintf(err, errlen, "write failed");
		return NULL;
	}
	close(fd);
	c = config_load(path, err, errlen);
	unlink(path);
	return c;
}

/*
 * Lookup.
 */

static const struct {
	const char	*domain;
	const char	*policy;	/* name of the policy expected */
} test_policy_lookup_cases[] = {
	{ "example.com",		"example.com" },	/* exact */
	{ "EXAMPLE.Com",		"example.com" },	/* case */
	{ "example.com.",		"example.com" },	/* trailing dot */
	{ "www.example.com",		"example.com" },	/* parent */
	{ "x.y.z.example.com",		"example.com" },	/* grandparent */
	{ "b.example.com",		"b.example.com" },	/* nearer entry wins */
	{ "a.b.example.com",		"b.example.com" },
	{ "A.B.EXAMPLE.COM.",		"b.example.com" },
	{ "deep.a.b.example.com",	"deep.a.b.example.com" },
	{ "x.deep.a.b.example.com",	"deep.a.b.example.com" },
	{ "eep.a.b.example.com",	"b.example.com" },	/* not a label match */
	{ "other.example",		"b.example.com" },	/* second domain of an entry */
	{ "sub.other.example",		"b.example.com" },
	{ "mx.example.net",		"net" },		/* TLD entry */
	{ "net",			"net" },
	{ "notexample.com",		"default" },		/* suffix, not a parent */
	{ "example.com.evil",		"default" },
	{ "example.org",		"default" },
	{ "com",			"default" },
	{ "",				"default" },
	{ ".",				"default" },
	{ ".example.com",		"default" },		/* malformed: empty label */
	{ "a..example.com",		"default" },
	{ "example.com..",		"default" },
	{ "[192.0.2.1]",		"default" },		/* address literal */
};

static void
test_policy_lookup(void)
{
	const struct config_policy	*p, *q;
	struct config			*c, hand;
	char				 err[CONFIG_ERR_MAX], longname[300];
	size_t				 i;

	c = config_load("t/unit/conf/policy.conf", err, sizeof err);
	if (!ok(c != NULL, "policy.conf loads: %s", err))
		exit(1);
	ok(c->policy_index != NULL && c->npolicies == 4, "index built, 4 policies");
	/* Same policies, no index: the linear scan must give the same answers. */
	hand = *c;
	hand.policy_index = NULL;
	for (i = 0; i < sizeof test_policy_lookup_cases /
	    sizeof test_policy_lookup_cases[0]; i++) {
		p = policy_lookup(c, test_policy_lookup_cases[i].domain);
		q = policy_lookup(&hand, test_policy_lookup_cases[i].domain);
		ok(p != NULL && strcmp(p->name, test_policy_lookup_cases[i].policy) == 0,
		    "lookup '%s' -> %s (%s)", test_policy_lookup_cases[i].domain,
		    test_policy_lookup_cases[i].policy, p ? p->name : "NULL");
		ok(q != NULL && strcmp(q->name, test_policy_lookup_cases[i].policy) == 0,
		    "lookup '%s' -> %s without the index",
		    test_policy_lookup_cases[i].domain, test_policy_lookup_cases[i].policy);
	}
	ok(policy_lookup(c, NULL) == &c->policy_default, "NULL domain -> default");
	ok(policy_lookup(c, "") == &c->policy_default, "\"\" -> default (same pointer)");
	ok(policy_lookup(NULL, "example.com") == NULL, "NULL config -> NULL");

	/* 253 characters is the limit (RFC 1035); 254 plus a dot still fits. */
	memset(longname, 'a', sizeof longname);
	for (i = 63; i < 250; i += 64)
		longname[i] = '.';
	memcpy(longname + 241, ".example.com", 13);		/* 253 characters */
	ok(strlen(longname) == 253 &&
	    strcmp(policy_lookup(c, longname)->name, "example.com") == 0,
	    "253-character name finds its parent");
	memcpy(longname + 241, ".example.com.", 14);		/* 254 with the root dot */
	ok(strcmp(policy_lookup(c, longname)->name, "example.com") == 0,
	    "253 characters plus trailing dot still fits");
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	memcpy(longname + sizeof longname - 13, ".example.com", 13);
	ok(policy_lookup(c, longname) == &c->policy_default,
	    "over-long name -> default, no overflow");
	config_unref(c);
}

/* 5000 domains: every one found through its subdomain, misses miss. */
static void
test_policy_many(void)
{
	const struct config_policy	*p;
	struct config			*c;
	char				*text, err[CONFIG_ERR_MAX], name[64];
	size_t				 size = 1 << 20, len, i;
	int				 n, found = 0, exact = 0;

	if ((text = malloc(size)) == NULL) {
		ok(0, "malloc");
		return;
	}
	len = (size_t)snprintf(text, size,
	    "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	    "upstream = { address = \"127.0.0.1:25\"; };\n"
	    "filters = ( { name = \"spf\"; } );\n"
	    "policy = { domains = (\n");
	for (i = 0; i < 5000; i++) {
		n = snprintf(text + len, size - len,
		    "%s{ domain = \"d%zu.example\"; spf = { fail = \"%s\"; }; }\n",
		    i ? "," : "", i, i % 2 ? "tag" : "reject");
		if (n < 0 || (size_t)n >= size - len)
			break;
		len += (size_t)n;
	}
	snprintf(text + len, size - len, "); };\n");
	c = test_policy_load_text(text, err, sizeof err);
	free(text);
	if (!ok(c != NULL && c->npolicies == 5000, "5000 policies load: %s", err)) {
		config_unref(c);
		return;
	}
	for (i = 0; i < 5000; i++) {
		snprintf(name, sizeof name, "MX.Sub.d%zu.example.", i);
		p = policy_lookup(c, name);
		found += p == &c->policies[i];
		snprintf(name, sizeof name, "d%zu.example", i);
		exact += policy_lookup(c, name) == &c->policies[i];
	}
	ok(found == 5000, "all 5000 found through a subdomain (%d)", found);
	ok(exact == 5000, "all 5000 found exactly (%d)", exact);
	ok(policy_lookup(c, "d5000.example") == &c->policy_default &&
	    policy_lookup(c, "d1.example.org") == &c->policy_default &&
	    policy_lookup(c, "example") == &c->policy_default, "near misses -> default");
	config_unref(c);
}

/*
 * Actions.
 */

static void
test_policy_actions(void)
{
	static const struct {
		const char	*domain;
		const char	*filter;
		const char	*result;
		int		 action;	/* -1: no mapping */
	} cases[] = {
		{ "example.com",	"spf",	"fail",		CONFIG_ACTION_TAG },	  /* override */
		{ "example.com",	"spf",	"softfail",	CONFIG_ACTION_TAG },	  /* from default */
		{ "example.com",	"spf",	"temperror",	CONFIG_ACTION_TEMPFAIL },
		{ "example.com",	"dkim",	"fail",		CONFIG_ACTION_TAG },	  /* group only in default */
		{ "example.com",	"spf",	"pass",		-1 },
		{ "example.com",	"dmarc", "reject",	-1 },
		{ "a.b.example.com",	"dkim",	"fail",		CONFIG_ACTION_REJECT },
		{ "a.b.example.com",	"spf",	"fail",		CONFIG_ACTION_REJECT },	  /* not example.com's */
		{ "deep.a.b.example.com", "spf", "pass",	CONFIG_ACTION_ACCEPT },
		{ "deep.a.b.example.com", "spf", "fail",	CONFIG_ACTION_REJECT },
		{ "mx.example.net",	"dmarc", "reject",	CONFIG_ACTION_DISCARD },
		{ "example.org",	"spf",	"fail",		CONFIG_ACTION_REJECT },	  /* default */
		{ "example.org",	"content", "tag",	CONFIG_ACTION_QUARANTINE },
		{ "example.org",	"content", "ham",	-1 },
		{ "example.org",	"nosuch", "fail",	-1 },
		{ "example.org",	"SPF",	"fail",		-1 },	/* names are exact */
	};
	const struct config_policy	*p;
	struct config			*c;
	enum config_action		 a;
	char				 err[CONFIG_ERR_MAX];
	size_t				 i;
	int				 r;

	c = config_load("t/unit/conf/policy.conf", err, sizeof err);
	if (!ok(c != NULL, "policy.conf loads: %s", err))
		return;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		p = policy_lookup(c, cases[i].domain);
		a = CONFIG_ACTION_COUNT;
		r = policy_action(c, p, cases[i].filter, cases[i].result, &a);
		if (cases[i].action == -1)
			ok(r == 0 && a == CONFIG_ACTION_COUNT, "%s %s=%s: no mapping",
			    cases[i].domain, cases[i].filter, cases[i].result);
		else
			ok(r == 1 && (int)a == cases[i].action, "%s %s=%s -> %s (%s)",
			    cases[i].domain, cases[i].filter, cases[i].result,
			    config_action_name((enum config_action)cases[i].action),
			    r ? config_action_name(a) : "none");
	}
	ok(policy_action(c, NULL, "spf", "fail", &a) == 1 && a == CONFIG_ACTION_REJECT,
	    "NULL policy means the default");
	ok(policy_action(c, &c->policy_default, "spf", "softfail", &a) == 1 &&
	    a == CONFIG_ACTION_TAG, "default policy passed explicitly");
	p = policy_lookup(c, "example.com");
	ok(policy_action(NULL, p, "spf", "fail", &a) == 1 && a == CONFIG_ACTION_TAG &&
	    policy_action(NULL, p, "spf", "softfail", &a) == 0,
	    "no config: only the policy given");
	ok(policy_action(c, p, NULL, "fail", &a) == 0 &&
	    policy_action(c, p, "spf", NULL, &a) == 0 &&
	    policy_action(c, p, "spf", "fail", NULL) == 0, "NULL arguments: no mapping");
	config_unref(c);
}

/*
 * policy_decide(): the one call the filter chain makes per answer.  Each
 * row names where its action and dry run come from in decide.conf.
 */
static void
test_policy_decide(void)
{
	static const struct {
		const char	*domain;
		const char	*filter;
		const char	*result;
		int		 failed;
		int		 mapped;
		int		 action;	/* CONFIG_ACTION_COUNT: none */
		int		 dry_run;
		const char	*why;
	} cases[] = {
		{ "example.net", "spf", "fail", 0, 1, CONFIG_ACTION_REJECT, 0,
		  "default's rule" },
		{ "example.com", "spf", "fail", 0, 1, CONFIG_ACTION_TAG, 1,
		  "domain's rule, domain's dry_run" },
		{ "example.com", "spf", "pass", 0, 0, CONFIG_ACTION_COUNT, 1,
		  "no rule: the filter's verdict stands, dry run still said" },
		{ "example.com", "spf", "", 1, 1, CONFIG_ACTION_DISCARD, 1,
		  "failure: domain's on_error rule" },
		{ "example.com", "spf", "fail", 1, 1, CONFIG_ACTION_DISCARD, 1,
		  "failure: the result is not looked up" },
		{ "example.net", "spf", NULL, 1, 1, CONFIG_ACTION_TAG, 0,
		  "failure: default's on_error rule beats the filters entry" },
		{ "example.org", "content", "x", 1, 1, CONFIG_ACTION_QUARANTINE, 0,
		  "failure: domain's on_error rule beats the filters entry" },
		{ "example.net", "content", "", 1, 1, CONFIG_ACTION_REJECT, 0,
		  "failure: the filters entry's on_error" },
		{ "example.net", "dmarc", "", 1, 1, CONFIG_ACTION_TEMPFAIL, 0,
		  "failure, on_error set nowhere: tempfail" },
		{ "example.net", "nosuch", "fail", 1, 1, CONFIG_ACTION_TEMPFAIL, 0,
		  "failure of a filter not in the chain: tempfail" },
		{ "example.net", "dkim", "fail", 0, 1, CONFIG_ACTION_QUARANTINE, 1,
		  "rule, dry_run from the filters entry" },
		{ "example.net", "dkim", "", 0, 0, CONFIG_ACTION_COUNT, 1,
		  "no result named: nothing mapped" },
		{ "example.net", "dkim", NULL, 0, 0, CONFIG_ACTION_COUNT, 1,
		  "NULL result: nothing mapped" },
	};
	struct policy_decision	 d;
	struct config		*c;
	char			 err[CONFIG_ERR_MAX];
	size_t			 i;

	c = config_load("t/unit/conf/decide.conf", err, sizeof err);
	if (!ok(c != NULL, "decide.conf loads: %s", err))
		return;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		d = policy_decide(c, policy_lookup(c, cases[i].domain),
		    cases[i].filter, cases[i].result, cases[i].failed);
		ok(d.mapped == cases[i].mapped && (int)d.action == cases[i].action &&
		    d.dry_run == cases[i].dry_run, "decide %s %s=%s%s: %s (%d %s %d)",
		    cases[i].domain, cases[i].filter,
		    cases[i].result ? cases[i].result : "NULL",
		    cases[i].failed ? " failed" : "", cases[i].why, d.mapped,
		    config_action_name(d.action), d.dry_run);
	}
	d = policy_decide(c, NULL, NULL, "fail", 1);
	ok(d.mapped == 0 && d.action == CONFIG_ACTION_COUNT && d.dry_run == 0,
	    "decide: NULL filter, nothing");
	d = policy_decide(NULL, NULL, "spf", "fail", 1);
	ok(d.mapped == 1 && d.action == CONFIG_ACTION_TEMPFAIL && d.dry_run == 0,
	    "decide: no configuration, a failure is still tempfail");
	config_unref(c);
}

/*
 * Dry run: one hand-built configuration per row, so each level can be
 * set or unset on its own.
 */

struct test_policy_dry {
	int	pf, p, df, d, f;	/* -1 unset, 0, 1 */
	int	expect;
	const char *why;
};

static const struct test_policy_dry test_policy_dry_cases[] = {
	{ -1, -1, -1, -1, -1, 0, "nothing set: off" },
	{ -1, -1, -1, -1,  1, 1, "filters entry alone" },
	{ -1, -1, -1,  1,  0, 1, "default policy beats filters entry" },
	{ -1, -1,  0,  1,  1, 0, "default's filter group beats default policy" },
	{ -1,  0,  1,  1,  1, 0, "domain policy beats default's group" },
	{  1,  0,  0,  0,  0, 1, "domain's filter group beats everything" },
	{  0,  1,  1,  1,  1, 0, "domain's filter group off beats all on" },
	{ -1,  1, -1, -1,  0, 1, "domain policy on, filters entry off" },
	{ -1, -1,  1, -1, -1, 1, "default's group alone" },
	{ -1, -1, -1,  0,  1, 0, "default policy off beats filters entry on" },
};

/* The rule policy_dry_run() promises, as a reference. */
static int
test_policy_dry_expect(const struct test_policy_dry *t)
{
	const int	order[5] = { t->pf, t->p, t->df, t->d, t->f };
	size_t		i;

	for (i = 0; i < 5; i++)
		if (order[i] >= 0)
			return order[i];
	return 0;
}

static int
test_policy_dry_one(const struct test_policy_dry *t, int as_default)
{
	struct config_policy_filter	dgroups[2], pgroups[2];
	struct config_policy		pol;
	struct config_filter		filts[2];
	struct config			c;
	char				name[] = "spf", oname[] = "dkim";

	memset(&c, 0, sizeof c);
	memset(&pol, 0, sizeof pol);
	memset(dgroups, 0, sizeof dgroups);
	memset(pgroups, 0, sizeof pgroups);
	memset(filts, 0, sizeof filts);
	/* Another filter's entries come first, all on: they must not count. */
	dgroups[0].name = pgroups[0].name = filts[0].name = oname;
	dgroups[0].dry_run = pgroups[0].dry_run = filts[0].dry_run = 1;
	dgroups[1].name = pgroups[1].name = filts[1].name = name;
	dgroups[1].dry_run = t->df;
	pgroups[1].dry_run = t->pf;
	filts[1].dry_run = t->f;
	pol.name = name;
	pol.dry_run = t->p;
	pol.filters = pgroups;
	pol.nfilters = 2;
	c.policy_default.name = name;
	c.policy_default.dry_run = t->d;
	c.policy_default.filters = dgroups;
	c.policy_default.nfilters = 2;
	c.filters = filts;
	c.nfilters = 2;
	return policy_dry_run(&c, as_default ? &c.policy_default : &pol, "spf");
}

static void
test_policy_dry_run(void)
{
	const struct config_policy	*p;
	struct test_policy_dry		 t;
	struct config			*c;
	char				 err[CONFIG_ERR_MAX];
	size_t				 i;
	int				 all = 1, v[5], k;

	for (i = 0; i < sizeof test_policy_dry_cases / sizeof test_policy_dry_cases[0]; i++)
		ok(test_policy_dry_one(&test_policy_dry_cases[i], 0) ==
		    test_policy_dry_cases[i].expect, "dry_run: %s",
		    test_policy_dry_cases[i].why);
	/* Every combination of the five levels against the reference rule. */
	for (k = 0; k < 243; k++) {
		int	x = k;
		size_t	j;

		for (j = 0; j < 5; j++, x /= 3)
			v[j] = x % 3 - 1;
		t.pf = v[0]; t.p = v[1]; t.df = v[2]; t.d = v[3]; t.f = v[4];
		if (test_policy_dry_one(&t, 0) != test_policy_dry_expect(&t))
			all = 0;
	}
	ok(all, "dry_run: all 243 combinations follow the precedence");
	/* With the default as the policy, its levels count once, then filters. */
	t.pf = 1; t.p = 1; t.df = -1; t.d = -1; t.f = 0;
	ok(test_policy_dry_one(&t, 1) == 0, "dry_run: default policy given, domain levels ignored");
	t.df = 1;
	ok(test_policy_dry_one(&t, 1) == 1, "dry_run: default policy given, its group counts");

	c = config_load("t/unit/conf/policy.conf", err, sizeof err);
	if (!ok(c != NULL, "policy.conf loads: %s", err))
		return;
	p = policy_lookup(c, "example.com");
	ok(policy_dry_run(c, p, "spf") == 0, "conf: spf nowhere set -> 0");
	ok(policy_dry_run(c, p, "dkim") == 1, "conf: dkim from the filters entry -> 1");
	ok(policy_dry_run(c, p, "content") == 1,
	    "conf: content from default's group beats filters entry false");
	p = policy_lookup(c, "x.b.example.com");
	ok(policy_dry_run(c, p, "dkim") == 0, "conf: b.example.com dkim group false");
	ok(policy_dry_run(c, p, "spf") == 1, "conf: b.example.com policy dry_run true");
	ok(policy_dry_run(c, NULL, "content") == 1 && policy_dry_run(c, NULL, "spf") == 0,
	    "conf: NULL policy is the default");
	ok(policy_dry_run(c, p, NULL) == 0 && policy_dry_run(NULL, NULL, "spf") == 0,
	    "dry_run: NULL arguments -> 0");
	config_unref(c);
}

/*
 * Authentication-Results rendering.
 */

struct test_policy_ar_case {
	const char			*why;
	struct policy_ar_result		 r[3];
	size_t				 n;
	const char			*expect;
};

static const struct test_policy_ar_case test_policy_ar_cases[] = {
	{ "no results", { { NULL, NULL, NULL, NULL } }, 0,
	  "Authentication-Results: mx.example.net; none\r\n" },
	{ "one result, one property",
	  { { "spf", "pass", NULL, "smtp.mailfrom=a@b.example" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tspf=pass smtp.mailfrom=a@b.example\r\n" },
	{ "two results, reason",
	  { { "spf", "pass", "reason", "smtp.mailfrom=a@b.example" },
	    { "dkim", "pass", NULL, "header.d=example.com" } }, 2,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tspf=pass (reason) smtp.mailfrom=a@b.example;\r\n"
	  "\tdkim=pass header.d=example.com\r\n" },
	{ "three results, no props",
	  { { "spf", "none", NULL, NULL }, { "dkim", "none", NULL, NULL },
	    { "dmarc", "none", NULL, NULL } }, 3,
	  "Authentication-Results: mx.example.net;\r\n\tspf=none;\r\n\tdkim=none;\r\n"
	  "\tdmarc=none\r\n" },
	{ "reason with parentheses and backslash",
	  { { "spf", "fail", "a (b) c\\d", NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=fail (a \\(b\\) c\\\\d)\r\n" },
	{ "reason closing the comment early",
	  { { "spf", "fail", "x) smtp.mailfrom=forged@example.com (", NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tspf=fail (x\\) smtp.mailfrom=forged@example.com \\()\r\n" },
	{ "reason with CR LF injection",
	  { { "spf", "pass", "ok\r\nX-Evil: yes\r\n\r\nbody", NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=pass (okX-Evil: yesbody)\r\n" },
	{ "reason with bare LF, TAB, DEL and 8-bit",
	  { { "spf", "pass", "a\nb\tc\x7f" "d\xc3\xa9", NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=pass (abcd?\?)\r\n" },
	{ "reason of control characters only",
	  { { "spf", "pass", "\r\n\t", NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=pass\r\n" },
	{ "props with CR LF injection",
	  { { "spf", "pass", NULL, "smtp.mailfrom=a@b.example\r\nX-Evil: 1" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tspf=pass smtp.mailfrom=a@b.example\r\n" },
	{ "several props",
	  { { "dkim", "pass", NULL, "header.d=example.com  header.s=sel1\theader.i=@example.com" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tdkim=pass header.d=example.com header.s=sel1 header.i=@example.com\r\n" },
	{ "non-token values quoted",
	  { { "x-test", "pass", NULL, "policy.a=a;b policy.b=\"a b\" policy.c=x\"y policy.d=" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tx-test=pass policy.a=\"a;b\" policy.b=\"a b\" policy.c=\"x\\\"y\" policy.d=\"\"\r\n" },
	{ "quoted value keeps escapes, drops CR LF",
	  { { "spf", "pass", NULL, "policy.x=\"a\\\"b\\\\c\r\nd\"" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=pass policy.x=\"a\\\"b\\\\cd\"\r\n" },
	{ "quoted local part is a valid address",
	  { { "spf", "fail", NULL, "smtp.mailfrom=\"john doe\"@example.com" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tspf=fail smtp.mailfrom=\"john doe\"@example.com\r\n" },
	{ "malformed props dropped",
	  { { "spf", "pass", NULL, "nodot=1 a.b noequals .x=1 x.=1 -a.b=1 a.b-=1 ok.x=1" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tspf=pass ok.x=1\r\n" },
	{ "method version",
	  { { "dkim/1", "pass", NULL, NULL } }, 1,
	  "Authentication-Results: mx.example.net;\r\n\tdkim/1=pass\r\n" },
	{ "bad method skipped",
	  { { "sp f", "pass", NULL, NULL }, { "dkim", "pass", NULL, NULL } }, 2,
	  "Authentication-Results: mx.example.net;\r\n\tdkim=pass\r\n" },
	{ "injection in method and result skipped, none left",
	  { { "spf\r\nX-Evil", "pass", NULL, NULL }, { "spf", "pass;\r\nX: y", NULL, NULL },
	    { NULL, "pass", NULL, NULL } }, 3,
	  "Authentication-Results: mx.example.net; none\r\n" },
	{ "long props fold",
	  { { "dkim", "pass", "good signature",
	      "header.d=a-rather-long-domain-name.example.com header.s=selector-2026-with-a-long-name" } }, 1,
	  "Authentication-Results: mx.example.net;\r\n"
	  "\tdkim=pass (good signature) header.d=a-rather-long-domain-name.example.com\r\n"
	  "\theader.s=selector-2026-with-a-long-name\r\n" },
};

/*
 * The field's shape, whatever the input: the header name, CRLF only as
 * "CRLF TAB" folds and the final CRLF, no other control character, no
 * line over 998 (RFC 5322 2.1.1), balanced unescaped parentheses.
 */
static int
test_policy_ar_shape(const char *s, size_t len, const char **why)
{
	size_t	i, col = 0;
	int	depth = 0, inq = 0;

	*why = "prefix";
	if (len < 26 || strncmp(s, "Authentication-Results: ", 24) != 0)
		return 0;
	*why = "final CRLF";
	if (strlen(s) != len || s[len - 2] != '\r' || s[len - 1] != '\n')
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\r') {
			*why = "bare CR or CRLF without a TAB";
			if (s[i + 1] != '\n' || (i + 2 != len && s[i + 2] != '\t'))
				return 0;
			i++;
			col = 0;
			continue;
		}
		*why = "control character";
		if ((c < ' ' && !(c == '\t' && col == 0)) || c == 0x7f)
			return 0;
		*why = "line over 998";
		if (++col > 998)
			return 0;
		if (c == '\\' && (depth > 0 || inq)) {
			i++;
			col++;
			continue;
		}
		if (inq) {
			if (c == '"')
				inq = 0;
		} else if (c == '"' && depth == 0)
			inq = 1;
		else if (c == '(')
			depth++;
		else if (c == ')' && --depth < 0)
			break;
	}
	*why = "unbalanced comment or quote";
	return depth == 0 && !inq;
}

static void
test_policy_ar_render(void)
{
	const struct test_policy_ar_case	*tc;
	struct policy_ar_result			 r[4];
	char					 buf[POLICY_AR_MAX], small[64];
	char					 reason[2000], props[2000];
	const char				*why = "not rendered";
	size_t					 i, j, n, len;
	unsigned				 seed = 12345;
	int					 good = 1, nonzero = 0, shape;

	for (i = 0; i < sizeof test_policy_ar_cases / sizeof test_policy_ar_cases[0]; i++) {
		tc = &test_policy_ar_cases[i];
		n = policy_ar_render(buf, sizeof buf, TEST_AR_ID, tc->r, tc->n);
		ok(n == strlen(tc->expect) && strcmp(buf, tc->expect) == 0,
		    "render: %s", tc->why);
		if (strcmp(buf, tc->expect) != 0)
			printf("# got:  %s# want: %s", buf, tc->expect);
		shape = test_policy_ar_shape(buf, n, &why);
		ok(shape, "render: %s: shape%s%s", tc->why, shape ? "" : ": ",
		    shape ? "" : why);
	}

	/* Buffer sizes: exactly enough, one short, zero, one. */
	tc = &test_policy_ar_cases[2];
	len = strlen(tc->expect);
	ok(policy_ar_render(buf, len + 1, TEST_AR_ID, tc->r, tc->n) == len &&
	    strcmp(buf, tc->expect) == 0, "render: buffer of exactly len + 1");
	memset(buf, 'x', sizeof buf);
	ok(policy_ar_render(buf, len, TEST_AR_ID, tc->r, tc->n) == 0 && buf[0] == '\0' &&
	    buf[len] == 'x', "render: one byte short -> 0, empty, nothing past the end");
	ok(policy_ar_render(small, sizeof small, TEST_AR_ID, tc->r, tc->n) == 0 &&
	    small[0] == '\0', "render: small buffer -> 0");
	buf[0] = 'x';
	ok(policy_ar_render(buf, 0, TEST_AR_ID, tc->r, tc->n) == 0 && buf[0] == 'x',
	    "render: outlen 0 writes nothing");
	ok(policy_ar_render(buf, 1, TEST_AR_ID, tc->r, 0) == 0 && buf[0] == '\0',
	    "render: outlen 1 -> 0, empty");
	ok(policy_ar_render(NULL, 100, TEST_AR_ID, tc->r, 0) == 0, "render: NULL out -> 0");

	/* authserv-id: must be a token. */
	ok(policy_ar_render(buf, sizeof buf, "mx example", tc->r, 0) == 0 &&
	    policy_ar_render(buf, sizeof buf, "mx;spf=pass", tc->r, 0) == 0 &&
	    policy_ar_render(buf, sizeof buf, "mx\r\nX-Evil: 1", tc->r, 0) == 0 &&
	    policy_ar_render(buf, sizeof buf, "", tc->r, 0) == 0 &&
	    policy_ar_render(buf, sizeof buf, NULL, tc->r, 0) == 0,
	    "render: bad authserv-id refused");
	ok(policy_ar_render(buf, sizeof buf, TEST_AR_ID, NULL, 1) == 0,
	    "render: NULL results with n > 0 refused");

	/* A huge reason is cut, a huge value dropped; lines stay bounded. */
	memset(reason, '(', sizeof reason - 1);
	reason[sizeof reason - 1] = '\0';
	memset(props, 'v', sizeof props - 1);
	memcpy(props, "policy.big=", 11);
	props[sizeof props - 1] = '\0';
	memset(r, 0, sizeof r);
	r[0].method = "spf";
	r[0].result = "fail";
	r[0].reason = reason;
	r[0].props = props;
	n = policy_ar_render(buf, sizeof buf, TEST_AR_ID, r, 1);
	shape = n > 0 && test_policy_ar_shape(buf, n, &why);
	ok(shape, "render: huge reason: shape%s%s", shape ? "" : ": ", shape ? "" : why);
	ok(n > 0 && strstr(buf, "policy.big") == NULL, "render: over-long value left out");
	ok(n > 0 && strlen(strchr(buf, '(')) - strlen(strrchr(buf, ')')) + 1 ==
	    POLICY_AR_REASON_MAX + 2, "render: reason cut at POLICY_AR_REASON_MAX");

	/* Round trip: our own field is recognised as ours. */
	tc = &test_policy_ar_cases[2];
	n = policy_ar_render(buf, sizeof buf, TEST_AR_ID, tc->r, tc->n);
	ok(n > 24 && policy_ar_is_ours(buf + 23, n - 23, TEST_AR_ID) == 1 &&
	    policy_ar_is_ours(buf + 23, n - 23, "other.example") == 0,
	    "rendered field is ours, not someone else's");

	/* Random bytes everywhere: the output keeps its shape or is refused. */
	for (i = 0; i < 3000; i++) {
		char	*fields[4][4];
		char	 store[4][4][64];
		size_t	 k, m;

		for (k = 0; k < 4; k++)
			for (m = 0; m < 4; m++) {
				size_t	l;

				seed = seed * 1103515245u + 12345u;
				l = (seed >> 16) % 63;
				for (j = 0; j < l; j++) {
					seed = seed * 1103515245u + 12345u;
					/* Mostly printable, with CR, LF, NUL, quotes, parens. */
					switch ((seed >> 16) % 8) {
					case 0: store[k][m][j] = "\r\n\t\"()\\;="[(seed >> 20) % 10]; break;
					case 1: store[k][m][j] = (char)((seed >> 17) & 0xff); break;
					case 2: store[k][m][j] = j % 7 == 3 ? '.' : ' '; break;
					default: store[k][m][j] = (char)('a' + (seed >> 18) % 26); break;
					}
				}
				store[k][m][l] = '\0';
				fields[k][m] = store[k][m];
			}
		for (k = 0; k < 4; k++) {
			r[k].method = i % 3 ? "spf" : fields[k][0];
			r[k].result = i % 5 ? "pass" : fields[k][1];
			r[k].reason = fields[k][2];
			r[k].props = fields[k][3];
		}
		n = policy_ar_render(buf, sizeof buf, TEST_AR_ID, r, 4);
		nonzero += n > 0;
		if (n > 0 && !test_policy_ar_shape(buf, n, &why)) {
			if (good)
				printf("# bad shape (%s): %s", why, buf);
			good = 0;
		}
	}
	ok(good && nonzero == 3000, "render: 3000 random inputs keep the shape (%d rendered)",
	    nonzero);
}

/*
 * Forged-field detection.
 */

/* s with CR, LF, TAB and NUL written as escapes: one TAP line per test. */
static const char *
test_policy_show(const char *s, char *buf, size_t size)
{
	size_t	n = 0;

	for (; *s != '\0' && n + 3 < size; s++) {
		if (*s == '\r' || *s == '\n' || *s == '\t') {
			buf[n++] = '\\';
			buf[n++] = *s == '\r' ? 'r' : *s == '\n' ? 'n' : 't';
		} else
			buf[n++] = *s;
	}
	buf[n] = '\0';
	return buf;
}

static void
test_policy_ar_ours(void)
{
	static const struct {
		const char	*value;
		int		 ours;
	} cases[] = {
		{ "mx.example.net; spf=pass", 1 },
		{ " mx.example.net; spf=pass", 1 },
		{ "MX.Example.NET; spf=pass", 1 },
		{ "mx.example.net;spf=pass", 1 },
		{ "mx.example.net", 1 },
		{ "mx.example.net; none", 1 },
		{ "\r\n\tmx.example.net;\r\n\tspf=pass", 1 },
		{ "\r\n mx.example.net\r\n ;\r\n dkim=pass", 1 },
		{ "\n\tmx.example.net; spf=pass", 1 },			/* bare LF fold */
		{ "(comment) mx.example.net; spf=pass", 1 },
		{ " (a (nested) comment) \t(two)mx.example.net;", 1 },
		{ "(escaped \\) paren) mx.example.net;", 1 },
		{ "(escaped \\( paren) mx.example.net;", 1 },
		{ "mx.example.net 1; spf=pass", 1 },			/* version */
		{ "mx.example.net\r\n\t(c) 1 ;\r\n\tspf=pass", 1 },
		{ "mx.example.net(comment); spf=pass", 1 },
		{ "mx.example.net.; spf=pass", 1 },			/* root dot */
		{ "\"mx.example.net\"; spf=pass", 1 },		/* quoted-string */
		{ "\"MX.example.net\" 1; spf=pass", 1 },
		{ "\"mx.exa\\mple.net\"; spf=pass", 1 },		/* quoted-pair */
		{ "\"mx.example.\r\n net\"; spf=pass", 0 },		/* fold keeps the space */
		{ "mx.example.net/junk; spf=pass", 1 },		/* errs towards removal */
		{ "mx.example.net.evil; spf=pass", 0 },
		{ "mx.example.net.evil.", 0 },
		{ "evil.mx.example.net; spf=pass", 0 },
		{ "mx.example.ne; spf=pass", 0 },
		{ "mx.example.netx; spf=pass", 0 },
		{ "mx-example.net; spf=pass", 0 },
		{ "other.example; spf=pass", 0 },
		{ "(mx.example.net) other.example; spf=pass", 0 },
		{ "other.example; (mx.example.net) spf=pass", 0 },
		{ "\"mx.example.net.evil\"; spf=pass", 0 },
		{ "; spf=pass", 0 },
		{ "", 0 },
		{ " \r\n\t ", 0 },
		{ "(unterminated mx.example.net; spf=pass", 0 },
		{ "((mx.example.net) mx.example.net; spf=pass", 0 },	/* still inside */
	};
	char	deep[20000], show[128];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ok(policy_ar_is_ours(cases[i].value, strlen(cases[i].value),
		    TEST_AR_ID) == cases[i].ours, "is_ours \"%s\" -> %d",
		    test_policy_show(cases[i].value, show, sizeof show), cases[i].ours);
	ok(policy_ar_is_ours("mx.example.net.evil; spf=pass", 14, TEST_AR_ID) == 1,
	    "is_ours reads only len bytes");
	ok(policy_ar_is_ours("mx.example.net", 13, TEST_AR_ID) == 0,
	    "is_ours: one byte short is another id");
	ok(policy_ar_is_ours("mx.example.net; spf=pass", 24, "MX.EXAMPLE.NET.") == 1,
	    "is_ours: configured id with case and root dot");
	ok(policy_ar_is_ours("mx.example.net\0evil", 19, TEST_AR_ID) == 1,
	    "is_ours: NUL ends the token, removal wins");
	ok(policy_ar_is_ours("mx.example.net;", 15, NULL) == 0 &&
	    policy_ar_is_ours(NULL, 0, TEST_AR_ID) == 0 &&
	    policy_ar_is_ours("mx example;", 11, "mx example") == 0,
	    "is_ours: NULL or invalid arguments -> 0");
	memset(deep, '(', sizeof deep);
	memcpy(deep + sizeof deep - 16, "mx.example.net;", 16);
	ok(policy_ar_is_ours(deep, sizeof deep - 1, TEST_AR_ID) == 0,
	    "is_ours: 20000 open parentheses, no recursion, no match");
}

static void
test_policy_header_is(void)
{
	static const struct {
		const char	*name;
		int		 is;
	} cases[] = {
		{ "Authentication-Results", 1 },
		{ "authentication-results", 1 },
		{ "AUTHENTICATION-RESULTS", 1 },
		{ "Authentication-Results ", 1 },	/* obs-optional "Name :" */
		{ "Authentication-Results\t \t", 1 },
		{ "Authentication-Result", 0 },
		{ "Authentication-Resultss", 0 },
		{ "X-Authentication-Results", 0 },
		{ " Authentication-Results", 0 },
		{ "", 0 },
		{ "  ", 0 },
	};
	char	show[128];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		ok(policy_header_is(cases[i].name, strlen(cases[i].name),
		    "Authentication-Results") == cases[i].is, "header_is \"%s\" -> %d",
		    test_policy_show(cases[i].name, show, sizeof show), cases[i].is);
	ok(policy_header_is("Authentication-Results-X", 22, "Authentication-Results") == 1,
	    "header_is reads only len bytes");
	ok(policy_header_is(NULL, 0, "X") == 0 && policy_header_is("X", 1, NULL) == 0,
	    "header_is: NULL -> 0");
}

static void
test_policy_syntax(void)
{
	static const struct {
		const char	*s;
		int		 method, result, authserv;
	} cases[] = {
		{ "spf",		1, 1, 1 },
		{ "dkim/1",		1, 0, 0 },	/* '/' is a tspecial */
		{ "x-content",		1, 1, 1 },
		{ "iprev",		1, 1, 1 },
		{ "mx.example.net",	0, 0, 1 },
		{ "MX1.Example.NET.",	0, 0, 1 },
		{ "dkim/",		0, 0, 0 },
		{ "dkim/x",		0, 0, 0 },
		{ "/1",			0, 0, 0 },
		{ "-spf",		0, 0, 1 },
		{ "spf-",		0, 0, 1 },
		{ "s_pf",		0, 0, 1 },
		{ "sp f",		0, 0, 0 },
		{ "spf;",		0, 0, 0 },
		{ "a@b",		0, 0, 0 },
		{ "caf\xc3\xa9",	0, 0, 0 },
		{ "",			0, 0, 0 },
	};
	char	longid[300];
	size_t	i;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ok(policy_ar_keyword_valid(cases[i].s, 1) == cases[i].method &&
		    policy_ar_keyword_valid(cases[i].s, 0) == cases[i].result &&
		    policy_authserv_id_valid(cases[i].s) == cases[i].authserv,
		    "syntax \"%s\": method %d result %d authserv-id %d", cases[i].s,
		    cases[i].method, cases[i].result, cases[i].authserv);
	}
	memset(longid, 'a', sizeof longid);
	longid[255] = '\0';
	ok(policy_authserv_id_valid(longid) == 1, "authserv-id of 255 accepted");
	longid[255] = 'a';
	longid[256] = '\0';
	ok(policy_authserv_id_valid(longid) == 0, "authserv-id of 256 refused");
	ok(policy_ar_keyword_valid(NULL, 1) == 0 && policy_authserv_id_valid(NULL) == 0,
	    "syntax: NULL refused");
}

int
main(void)
{
	plan(231 + 16);	/* + test_policy_decide */
	if (access("t/unit/conf/policy.conf", R_OK) == -1) {
		printf("Bail out! run from the repository root\n");
		return 1;
	}
	test_policy_lookup();
	test_policy_many();
	test_policy_actions();
	test_policy_decide();
	test_policy_dry_run();
	test_policy_ar_render();
	test_policy_ar_ours();
	test_policy_header_is();
	test_policy_syntax();
	return done_testing();
}
