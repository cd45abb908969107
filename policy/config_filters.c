/*
 * config_filters.c - frontmx configuration loader: filters and policy
 *
 * NAME
 *	config_action_name, config_action_parse, config_policy_find - the
 *	filter chain, the policy groups and the action words they use
 *
 * SYNOPSIS
 *	#include "config.h"
 *
 *	const char *config_action_name(enum config_action a);
 *	int config_action_parse(const char *s, enum config_action *a);
 *	const struct config_policy *config_policy_find(const struct config *c,
 *	    const char *domain);
 *
 * DESCRIPTION
 *	Part of config_load() (config.c), cut out because it is the part
 *	that grows with every filter: the `filters` list and the `policy`
 *	groups that map each filter's results to actions.
 *
 *	The filters list names the chain: an entry without module must name
 *	a built-in filter (config_builtin_results[]), names are unique, and
 *	options are kept as "key=value" strings in file order for the
 *	module's init().  It is loaded before policy: a policy group must
 *	name a filter in the chain, and a built-in's group may only map the
 *	results that filter gives (a typo gets did-you-mean).
 *
 *	config_policy_find() is the exact-domain probe behind policy.c's
 *	policy_lookup(), which walks the parents.  The index lives here, not
 *	in policy.c, so that the loader never calls up into the code that
 *	reads the configuration (t/meta/layers.t).
 *
 *	config_action_name() and config_action_parse() convert between
 *	enum config_action and its one spelling ("accept", "tag",
 *	"quarantine", "tempfail", "reject", "discard").
 */

#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>

#include <libconfig.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "strutil.h"

/* filters[].timeout: one hook call; an hour is already a stuck filter. */
#define CONFIG_FILTER_TIMEOUT_MAX 3600
#define CONFIG_FILTER_TIMEOUT	30

static const char *const config_keys_policy[] = { "default", "domains", NULL };
static const char *const config_keys_filter[] = {
	"name", "module", "milter", "timeout", "timeouts", "breaker", "on_error",
	"dry_run", "delay_reject", "options", NULL
};
static const char *const config_keys_milter_timeouts[] = {
	"connect", "command", "content", NULL
};
static const char *const config_keys_breaker[] = { "failures", "open", NULL };

/* Postfix's milter timeouts (milter_connect/command/content_timeout). */
#define CONFIG_MILTER_CONNECT	30
#define CONFIG_MILTER_COMMAND	30
#define CONFIG_MILTER_CONTENT	300
/* The circuit breaker: 5 failures in a row keep the milter off for a minute. */
#define CONFIG_BREAKER_FAILURES	5
#define CONFIG_BREAKER_OPEN	60
#define CONFIG_BREAKER_OPEN_MAX	86400

/*
 * Filters built into the daemon (config_builtin_results[] below): a
 * `filters` entry without `module` must name one of these.  Adding a
 * built-in filter means adding its row there (and its code in filters/);
 * nothing else in the loader changes.
 *
 * The result names each built-in filter gives api->set_result(), the keys
 * its policy group may map to actions ("on_error" is the core's, valid for
 * every filter).  Keep in step with the filter: content.c content_actions[]
 * and "mime_limit"; spf.c spf_result_names[]; dkim.c dkim_res_msg[] and
 * "sign_error"; dmarc.c's set_result() calls; dnsbl.c's "listed";
 * greylist.c and ratelimit.c RESULTS.  A module's results are not
 * knowable here (it may name any), so its groups take any valid name.
 */
static const char *const config_results_content[] = {
	"accept", "tag", "quarantine", "tempfail", "reject", "discard",
	"warn", "mime_limit", "on_error", NULL
};
static const char *const config_results_spf[] = {
	"none", "neutral", "pass", "fail", "softfail", "temperror",
	"permerror", "on_error", NULL
};
static const char *const config_results_dkim[] = {
	"none", "permerror", "fail", "neutral", "temperror", "pass",
	"sign_error", "on_error", NULL
};
static const char *const config_results_dmarc[] = {
	"none", "pass", "fail", "reject", "quarantine", "temperror",
	"permerror", "on_error", NULL
};
/* What a milter's answer is named for the policy (filters/milter.c). */
static const char *const config_results_milter[] = {
	"continue", "accept", "reject", "tempfail", "discard", "quarantine",
	"on_error", NULL
};
static const char *const config_results_greylist[] = {
	"greylisted", "pass", "on_error", NULL
};
static const char *const config_results_ratelimit[] = {
	"exceeded", "on_error", NULL
};
static const char *const config_results_dnsbl[] = {
	"listed", "on_error", NULL
};
/*
 * delay_reject is the default of filters[].delay_reject for the filter:
 * the dnsbl filter's answer is about the connection (its `when` option
 * says at connect or at RCPT), so by default it acts when it comes.
 */
static const struct config_builtin_results {
	const char		*name;	/* first: config_suggest() reads it */
	const char *const	*results;
	int			 delay_reject;
} config_builtin_results[] = {
	{ "content", config_results_content, 1 },
	{ "spf", config_results_spf, 1 },
	{ "dkim", config_results_dkim, 1 },
	{ "dmarc", config_results_dmarc, 1 },
	{ "dnsbl", config_results_dnsbl, 0 },
	{ "greylist", config_results_greylist, 1 },
	{ "ratelimit", config_results_ratelimit, 1 },
	{ NULL, NULL, 0 }
};

static const char *const config_action_names[CONFIG_ACTION_COUNT] = {
	[CONFIG_ACTION_ACCEPT]		= "accept",
	[CONFIG_ACTION_TAG]		= "tag",
	[CONFIG_ACTION_QUARANTINE]	= "quarantine",
	[CONFIG_ACTION_TEMPFAIL]	= "tempfail",
	[CONFIG_ACTION_REJECT]		= "reject",
	[CONFIG_ACTION_DISCARD]		= "discard",
};

#define CONFIG_ACTIONS_EXPECTED \
	"accept, tag, quarantine, tempfail, reject or discard"

/* Filter and result names: [a-z][a-z0-9_]*, short. */
static int
config_name_valid(const char *s)
{
	size_t	i;

	if (!(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return i < CONFIG_NAME_MAX;
}

/*
 * Filter names: [a-z][a-z0-9_-]*, short.  The hyphen is allowed (unlike
 * in result names) because instance names like "rcpt-allow" are common
 * and libconfig accepts them as setting names in policy groups too.
 */
static int
config_filter_name_valid(const char *s)
{
	size_t	i;

	if (!(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return 0;
	return i < CONFIG_NAME_MAX;
}

/* The built-in filter's row, NULL when name is none. */
static const struct config_builtin_results *
config_filter_builtin(const char *name)
{
	size_t	i;

	for (i = 0; config_builtin_results[i].name != NULL; i++)
		if (strcmp(config_builtin_results[i].name, name) == 0)
			return &config_builtin_results[i];
	return NULL;
}

const char *
config_action_name(enum config_action a)
{
	/*
	 * A bad value is a broken invariant, but this runs in log paths; a
	 * visible "invalid" in a log line beats taking the daemon down.
	 */
	if ((unsigned)a >= CONFIG_ACTION_COUNT)
		return "invalid";
	return config_action_names[a];
}

int
config_action_parse(const char *s, enum config_action *a)
{
	unsigned	i;

	/* Exact lower case: the same word must mean the same thing everywhere. */
	for (i = 0; i < CONFIG_ACTION_COUNT; i++)
		if (strcmp(s, config_action_names[i]) == 0) {
			*a = (enum config_action)i;
			return 0;
		}
	return -1;
}

/*
 * One filter group: spf = { fail = "reject"; dry_run = true; }.  The
 * filter must be in the chain (c->filters, loaded first): a group for
 * one that never runs is a typo or a forgotten filters entry.  A
 * built-in's result names are checked against config_builtin_results[].
 */
static int
config_load_filter(struct config_ctx *ctx, const struct config *c,
    const config_setting_t *g, const char *parent,
    struct config_policy_filter *f)
{
	const config_setting_t	*m;
	struct config_policy_rule *rule;
	const struct config_filter *cf = NULL;
	const char *const	*results = NULL;
	const char		*name, *s, *best;
	char			 path[CONFIG_PATH_MAX], mpath[CONFIG_PATH_MAX];
	size_t			 k, d, bestd = 3;
	int			 i, n;

	name = config_setting_name(g);
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_group(g))
		return config_fail(ctx, g, "'%s' must be a group of "
		    "result = \"action\" settings", path);
	best = NULL;
	for (k = 0; k < c->nfilters && cf == NULL; k++) {
		if (strcmp(c->filters[k].name, name) == 0)
			cf = &c->filters[k];
		else if ((d = config_edit_distance(name,
		    c->filters[k].name)) < bestd) {
			bestd = d;
			best = c->filters[k].name;
		}
	}
	if (cf == NULL)
		return config_fail(ctx, g, "'%s': no filter '%s' in the "
		    "'filters' chain%s%s%s", path, name,
		    best ? " (did you mean '" : "", best ? best : "",
		    best ? "'?)" : "");
	if (cf->milter != NULL)
		results = config_results_milter;
	else if (cf->module == NULL)
		for (k = 0; config_builtin_results[k].name != NULL; k++)
			if (strcmp(config_builtin_results[k].name, name) == 0)
				results = config_builtin_results[k].results;
	f->name = config_xstrdup(name);
	f->dry_run = -1;
	n = config_setting_length(g);
	f->rules = config_xcalloc((size_t)n, sizeof *f->rules);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, name);
		if (strcmp(name, "dry_run") == 0) {
			if (config_bool_value(ctx, m, mpath, &f->dry_run) == -1)
				return -1;
			continue;
		}
		if (!config_name_valid(name))
			return config_fail(ctx, m, "unknown key '%s' in '%s' "
			    "(result names are [a-z][a-z0-9_]*)", name, path);
		if (results != NULL && !config_suggest(name, results,
		    sizeof results[0], &best))
			return config_fail(ctx, m, "unknown result '%s' in '%s': "
			    "filter '%s' never gives it%s%s%s", name, path,
			    f->name, best ? " (did you mean '" : "",
			    best ? best : "", best ? "'?)" : "");
		if (config_setting_type(m) != CONFIG_TYPE_STRING)
			return config_fail(ctx, m, "'%s' must be a string "
			    "(" CONFIG_ACTIONS_EXPECTED ")", mpath);
		s = config_setting_get_string(m);
		rule = &f->rules[f->nrules];
		if (config_action_parse(s, &rule->action) == -1)
			return config_fail(ctx, m, "unknown action '%s' "
			    "(expected " CONFIG_ACTIONS_EXPECTED ")", s);
		rule->result = config_xstrdup(name);
		f->nrules++;
	}
	return 0;
}

/* Add one policy domain, refusing one already claimed by any policy. */
static int
config_policy_add_domain(struct config_ctx *ctx, const config_setting_t *e,
    const char *path, struct config_policy *p, struct config_strset *seen)
{
	const struct config_strset_slot	*dup;
	const char			*s;
	char				 buf[CONFIG_DOMAIN_BUF];
	char				*d;

	s = config_setting_get_string(e);
	if (config_domain_normalize(s, buf, sizeof buf, 0) == -1)
		return config_fail(ctx, e, "'%s' entry '%s' is not a valid "
		    "domain name", path, s);
	d = config_xstrdup(buf);
	p->domains[p->ndomains++] = d;
	if ((dup = config_strset_add(seen, d,
	    config_setting_source_line(e))) != NULL)
		return config_fail(ctx, e, "duplicate policy domain '%s' "
		    "(already at line %u)", d, dup->value);
	return 0;
}

/*
 * A policy group: policy.default, or one policy.domains entry (entry = 1,
 * which also takes domain/domains).  Every other name that looks like a
 * filter name is a filter group, so third-party filters get policy
 * without changes here.
 */
static int
config_load_policy_group(struct config_ctx *ctx, const struct config *c,
    const config_setting_t *g, const char *path, int entry,
    struct config_policy *p, struct config_strset *seen)
{
	const config_setting_t	*m, *list = NULL;
	const char		*name;
	char			 mpath[CONFIG_PATH_MAX];
	size_t			 nd = 0, nf = 0;
	int			 i, j, n;

	p->dry_run = -1;
	n = config_setting_length(g);
	/* First pass: sizes, so arrays are allocated once. */
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		if (entry && strcmp(name, "domain") == 0)
			nd++;
		else if (entry && strcmp(name, "domains") == 0 &&
		    config_setting_is_aggregate(m))
			nd += (size_t)config_setting_length(m);
		else if (strcmp(name, "dry_run") != 0 &&
		    strcmp(name, "domain") != 0 && strcmp(name, "domains") != 0)
			nf++;
	}
	p->domains = config_xcalloc(nd, sizeof *p->domains);
	p->filters = config_xcalloc(nf, sizeof *p->filters);

	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, name);
		if (strcmp(name, "dry_run") == 0) {
			if (config_bool_value(ctx, m, mpath, &p->dry_run) == -1)
				return -1;
		} else if (entry && strcmp(name, "domain") == 0) {
			if (config_setting_type(m) != CONFIG_TYPE_STRING)
				return config_fail(ctx, m, "'%s' must be a "
				    "string", mpath);
			if (config_policy_add_domain(ctx, m, mpath, p,
			    seen) == -1)
				return -1;
		} else if (entry && strcmp(name, "domains") == 0) {
			if (config_want_strings(ctx, g, path, name, &list) == -1)
				return -1;
			for (j = 0; j < config_setting_length(list); j++)
				if (config_policy_add_domain(ctx,
				    config_setting_get_elem(list, (unsigned)j),
				    mpath, p, seen) == -1)
					return -1;
		} else if (strcmp(name, "domain") != 0 &&
		    strcmp(name, "domains") != 0 &&
		    config_filter_name_valid(name)) {
			if (config_load_filter(ctx, c, m, path,
			    &p->filters[p->nfilters++]) == -1)
				return -1;
		} else
			return config_fail(ctx, m, "unknown key '%s' in '%s'%s",
			    name, path, strcmp(name, "domain") == 0 ||
			    strcmp(name, "domains") == 0 ? " (domains belong "
			    "in policy.domains entries)" : "");
	}
	if (entry) {
		if (p->ndomains == 0)
			return config_fail(ctx, g, "'%s' needs 'domain' or "
			    "'domains'", path);
		p->name = config_xstrdup(p->domains[0]);
	}
	return 0;
}

static int
config_load_policy_domains(struct config_ctx *ctx,
    const config_setting_t *root, struct config *c)
{
	const config_setting_t	*g = NULL, *d = NULL, *list = NULL;
	struct config_strset	*seen;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n, r;

	c->policy_default.name = config_xstrdup("default");
	c->policy_default.dry_run = -1;
	if ((r = config_want_group(ctx, root, "", "policy", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "policy", config_keys_policy,
	    sizeof config_keys_policy[0]) == -1)
		return -1;
	if ((r = config_want_group(ctx, g, "policy", "default", &d)) == -1)
		return -1;
	if (r == 1 && config_load_policy_group(ctx, c, d, "policy.default", 0,
	    &c->policy_default, NULL) == -1)
		return -1;

	if ((r = config_want_group_list(ctx, g, "policy", "domains",
	    &list)) != 1)
		return r;
	n = config_setting_length(list);
	c->policies = config_xcalloc((size_t)n, sizeof *c->policies);
	/* The domain strings live in c->policies; seen only points at them. */
	seen = config_strset_new();
	for (r = 0, i = 0; i < n && r == 0; i++) {
		c->npolicies++;
		config_path_index(path, sizeof path, "policy.domains", i);
		r = config_load_policy_group(ctx, c, config_setting_get_elem(list,
		    (unsigned)i), path, 1, &c->policies[i], seen);
	}
	config_strset_free(seen);
	return r;
}

/*
 * The hash behind config_policy_find(): every policy domain to its
 * entry's index, built once before the configuration is published (the
 * same string set as relay.domains, so lookups need no lock).  Built even
 * with no domains, so a loaded configuration always has one.
 */
static void
config_policy_index(struct config *c)
{
	size_t	i, j;

	c->policy_index = config_strset_new();
	for (i = 0; i < c->npolicies; i++)
		for (j = 0; j < c->policies[i].ndomains; j++)
			/* config_load() refuses repeats; the first one stays. */
			(void)config_strset_add(c->policy_index,
			    c->policies[i].domains[j], (unsigned)i);
}

int
config_load_policy(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	if (config_load_policy_domains(ctx, root, c) == -1)
		return -1;
	config_policy_index(c);
	return 0;
}

const struct config_policy *
config_policy_find(const struct config *c, const char *domain)
{
	const struct config_strset_slot	*slot;
	size_t				 i, j;

	if (c->policy_index != NULL) {
		slot = config_strset_find(c->policy_index, domain);
		return slot != NULL ? &c->policies[slot->value] : NULL;
	}
	/* A struct config built by hand (tests): scan, any case. */
	for (i = 0; i < c->npolicies; i++)
		for (j = 0; j < c->policies[i].ndomains; j++)
			if (str_casecmp(c->policies[i].domains[j], domain) == 0)
				return &c->policies[i];
	return NULL;
}

/* "key=value" for one filters[].options member; the module parses it. */
static char *
config_option_join(const char *key, const char *value)
{
	size_t	klen = strlen(key), vlen = strlen(value);
	char	*s;

	s = config_xcalloc(klen + vlen + 2, 1);
	memcpy(s, key, klen);
	s[klen] = '=';
	memcpy(s + klen + 1, value, vlen + 1);
	return s;
}

/* One scalar option value as the text init() gets; -1 (reported) if none. */
static int
config_option_scalar(struct config_ctx *ctx, const config_setting_t *m,
    const char *mpath, const char *key, struct config_filter *f)
{
	char	num[32];

	switch (config_setting_type(m)) {
	case CONFIG_TYPE_STRING:
		f->options[f->noptions++] = config_option_join(key,
		    config_setting_get_string(m));
		return 0;
	case CONFIG_TYPE_INT:
		if (config_int_literal_check(ctx, m, mpath) == -1)
			return -1;
		/* FALLTHROUGH */
	case CONFIG_TYPE_INT64:
		(void)snprintf(num, sizeof num, "%lld",
		    (long long)config_setting_get_int64(m));
		f->options[f->noptions++] = config_option_join(key, num);
		return 0;
	case CONFIG_TYPE_BOOL:
		f->options[f->noptions++] = config_option_join(key,
		    config_setting_get_bool(m) ? "true" : "false");
		return 0;
	default:
		return config_fail(ctx, m, "'%s' must be a string, an integer, "
		    "a boolean or a list of them", mpath);
	}
}

/*
 * filters[].options: a flat group whose values are strings, integers or
 * booleans, handed to the module's init() as "key=value" in file order
 * (the order the admin wrote is the only order a module can rely on).
 * A list or array of such values, zones = [ "a", "b" ], becomes one
 * "key=value" per item in order: what api->option_list() reads as a key
 * given several times (the dnsbl filter's zones).
 */
static int
config_load_filter_options(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, struct config_filter *f)
{
	const config_setting_t	*m;
	const char		*key;
	char			 mpath[CONFIG_PATH_MAX];
	size_t			 total = 0;
	int			 i, j, n;

	n = config_setting_length(g);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		total += config_setting_is_aggregate(m) ?
		    (size_t)config_setting_length(m) : 1;
	}
	f->options = config_xcalloc(total, sizeof *f->options);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		key = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, key);
		if (config_setting_type(m) == CONFIG_TYPE_GROUP)
			return config_fail(ctx, m, "'%s' must be a string, an "
			    "integer, a boolean or a list of them", mpath);
		if (!config_setting_is_aggregate(m)) {
			if (config_option_scalar(ctx, m, mpath, key, f) == -1)
				return -1;
			continue;
		}
		for (j = 0; j < config_setting_length(m); j++) {
			const config_setting_t *e = config_setting_get_elem(m,
			    (unsigned)j);

			if (config_setting_is_aggregate(e))
				return config_fail(ctx, e, "'%s' must be a "
				    "list of strings, integers or booleans",
				    mpath);
			if (config_option_scalar(ctx, e, mpath, key, f) == -1)
				return -1;
		}
	}
	return 0;
}

/*
 * milter = "unix:/path" | "inet:HOST:PORT" | "inet:[IPv6]:PORT", as in
 * Postfix's smtpd_milters.  HOST may be a name: it is resolved here, at
 * load (start, SIGHUP, -t), never on an event loop.  0 ok, -1 with why.
 */
static int
config_milter_addr(const char *a, struct config_filter *f, const char **why)
{
	struct sockaddr_un	*sun = (struct sockaddr_un *)&f->milter_sa;
	struct addrinfo		 hints, *res = NULL;
	char			 host[256];
	const char		*p, *port;
	size_t			 hlen;
	unsigned long long	 v;

	memset(&f->milter_sa, 0, sizeof f->milter_sa);
	if (strncmp(a, "unix:", 5) == 0 || strncmp(a, "local:", 6) == 0) {
		p = strchr(a, ':') + 1;
		if (*p != '/') {
			*why = "a UNIX socket path must be absolute";
			return -1;
		}
		if (strlen(p) >= sizeof sun->sun_path) {
			*why = "UNIX socket path too long";
			return -1;
		}
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, p, strlen(p) + 1);
		f->milter_salen = sizeof *sun;
		return 0;
	}
	if (strncmp(a, "inet:", 5) != 0 && strncmp(a, "inet6:", 6) != 0) {
		*why = "expected unix:PATH, inet:HOST:PORT or inet:[IPv6]:PORT";
		return -1;
	}
	p = strchr(a, ':') + 1;
	if (*p == '[') {
		if ((port = strchr(p, ']')) == NULL || port[1] != ':') {
			*why = "expected inet:[IPv6]:PORT";
			return -1;
		}
		hlen = (size_t)(port - p - 1);
		p++;
		port += 2;
	} else {
		if ((port = strrchr(p, ':')) == NULL) {
			*why = "no :PORT";
			return -1;
		}
		hlen = (size_t)(port - p);
		port++;
	}
	if (hlen == 0 || hlen >= sizeof host || str_uint(port, 65535, &v) == -1 || v == 0) {
		*why = "bad host or port (1-65535)";
		return -1;
	}
	memcpy(host, p, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL) {
		*why = "host does not resolve";
		return -1;
	}
	memcpy(&f->milter_sa, res->ai_addr, res->ai_addrlen);
	f->milter_salen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* timeouts = { connect; command; content; } and breaker = { failures; open; } */
static int
config_load_filter_milter(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, const char *addr, struct config_filter *f)
{
	const config_setting_t	*t = NULL;
	const char		*why = NULL;
	char			 tpath[CONFIG_PATH_MAX];
	long long		 v;
	int			 r;

	f->milter_connect = CONFIG_MILTER_CONNECT;
	f->milter_command = CONFIG_MILTER_COMMAND;
	f->milter_content = CONFIG_MILTER_CONTENT;
	f->breaker_failures = CONFIG_BREAKER_FAILURES;
	f->breaker_open = CONFIG_BREAKER_OPEN;
	if (addr == NULL) {
		if (config_setting_get_member(g, "timeouts") != NULL ||
		    config_setting_get_member(g, "breaker") != NULL)
			return config_fail(ctx, g, "'%s': timeouts and breaker "
			    "are for a milter (set milter = ADDRESS)", path);
		return 0;
	}
	if (config_milter_addr(addr, f, &why) == -1)
		return config_fail(ctx, config_setting_get_member(g, "milter"),
		    "'%s.milter': '%s': %s", path, addr, why);
	f->milter = config_xstrdup(addr);
	if ((r = config_want_group(ctx, g, path, "timeouts", &t)) == -1)
		return -1;
	config_path(tpath, sizeof tpath, path, "timeouts");
	if (r == 1 && config_check_keys(ctx, t, tpath, config_keys_milter_timeouts,
	    sizeof config_keys_milter_timeouts[0]) == -1)
		return -1;
	if (r == 1) {
		if ((r = config_want_int(ctx, t, tpath, "connect", 1,
		    CONFIG_FILTER_TIMEOUT_MAX, &v)) == -1)
			return -1;
		f->milter_connect = r ? (unsigned)v : f->milter_connect;
		if ((r = config_want_int(ctx, t, tpath, "command", 1,
		    CONFIG_FILTER_TIMEOUT_MAX, &v)) == -1)
			return -1;
		f->milter_command = r ? (unsigned)v : f->milter_command;
		if ((r = config_want_int(ctx, t, tpath, "content", 1,
		    CONFIG_FILTER_TIMEOUT_MAX, &v)) == -1)
			return -1;
		f->milter_content = r ? (unsigned)v : f->milter_content;
	}
	t = NULL;
	if ((r = config_want_group(ctx, g, path, "breaker", &t)) == -1)
		return -1;
	config_path(tpath, sizeof tpath, path, "breaker");
	if (r == 1) {
		if (config_check_keys(ctx, t, tpath, config_keys_breaker,
		    sizeof config_keys_breaker[0]) == -1)
			return -1;
		/* failures = 0 turns the breaker off. */
		if ((r = config_want_int(ctx, t, tpath, "failures", 0, 1000,
		    &v)) == -1)
			return -1;
		f->breaker_failures = r ? (unsigned)v : f->breaker_failures;
		if ((r = config_want_int(ctx, t, tpath, "open", 1,
		    CONFIG_BREAKER_OPEN_MAX, &v)) == -1)
			return -1;
		f->breaker_open = r ? (unsigned)v : f->breaker_open;
	}
	return 0;
}

/* One filters entry: { name = "spf"; } or { name = "x"; module = "x.so"; }. */
static int
config_load_filter_entry(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, struct config_filter *f, struct config_strset *seen)
{
	const struct config_strset_slot	*dup;
	const struct config_builtin_results *bi;
	const config_setting_t		*s, *opts = NULL;
	const char			*name = NULL, *module = NULL, *act = NULL;
	const char			*milter = NULL;
	char				 mpath[CONFIG_PATH_MAX];
	long long			 v;
	int				 r;

	f->timeout = CONFIG_FILTER_TIMEOUT;
	f->on_error = CONFIG_ACTION_TEMPFAIL;
	f->dry_run = -1;
	f->delay_reject = 1;
	if (config_check_keys(ctx, g, path, config_keys_filter,
	    sizeof config_keys_filter[0]) == -1)
		return -1;

	if ((r = config_want_string(ctx, g, path, "name", &name)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'%s' is missing 'name'", path);
	s = config_setting_get_member(g, "name");
	if (!config_filter_name_valid(name))
		return config_fail(ctx, s, "'%s.name' must be [a-z][a-z0-9_-]* "
		    "(at most %d characters), not '%s'", path,
		    CONFIG_NAME_MAX - 1, name);
	f->name = config_xstrdup(name);
	/* The name keys policy groups and logs: two filters can't share one. */
	if ((dup = config_strset_add(seen, f->name,
	    config_setting_source_line(s))) != NULL)
		return config_fail(ctx, s, "duplicate filter name '%s' "
		    "(already at line %u)", name, dup->value);

	if ((r = config_want_string(ctx, g, path, "milter", &milter)) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, path, "module", &module)) == -1)
		return -1;
	f->where = config_where(ctx, g, r == 1 ? "module" : milter ? "milter" : NULL);
	if (r == 1 && milter != NULL)
		return config_fail(ctx, config_setting_get_member(g, "milter"),
		    "'%s': module and milter exclude each other", path);
	if (r == 1)
		f->module = config_xstrdup(module);
	else if (milter == NULL && (bi = config_filter_builtin(name)) == NULL)
		return config_fail(ctx, s, "unknown built-in filter '%s' (set "
		    "module = path for a third-party module, or milter = "
		    "ADDRESS for a milter)", name);
	else if (milter == NULL)
		f->delay_reject = bi->delay_reject;
	if (config_load_filter_milter(ctx, g, path, milter, f) == -1)
		return -1;

	if ((r = config_want_int(ctx, g, path, "timeout", 1,
	    CONFIG_FILTER_TIMEOUT_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		f->timeout = (unsigned)v;
	else if (milter != NULL)
		f->timeout = 0;		/* timeouts = { ... } bound each reply */

	if ((r = config_want_string(ctx, g, path, "on_error", &act)) == -1)
		return -1;
	if (r == 1 && config_action_parse(act, &f->on_error) == -1)
		return config_fail(ctx, config_setting_get_member(g, "on_error"),
		    "'%s.on_error': unknown action '%s' (expected "
		    CONFIG_ACTIONS_EXPECTED ")", path, act);

	if (config_want_bool(ctx, g, path, "dry_run", &f->dry_run) == -1)
		return -1;
	if (config_want_bool(ctx, g, path, "delay_reject", &f->delay_reject) == -1)
		return -1;

	if ((r = config_want_group(ctx, g, path, "options", &opts)) == -1)
		return -1;
	if (r == 1 && config_load_filter_options(ctx, opts,
	    config_path(mpath, sizeof mpath, path, "options"), f) == -1)
		return -1;
	return 0;
}

int
config_load_filters(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*list = NULL;
	struct config_strset	*seen;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n, r;

	if ((r = config_want_group_list(ctx, root, "", "filters", &list)) != 1)
		return r;
	n = config_setting_length(list);
	c->filters = config_xcalloc((size_t)n, sizeof *c->filters);
	/* The names live in c->filters; seen only points at them. */
	seen = config_strset_new();
	for (r = 0, i = 0; i < n && r == 0; i++) {
		/* Count first: config_free() releases a half-built entry too. */
		c->nfilters++;
		config_path_index(path, sizeof path, "filters", i);
		r = config_load_filter_entry(ctx, config_setting_get_elem(list,
		    (unsigned)i), path, &c->filters[i], seen);
	}
	config_strset_free(seen);
	return r;
}

void
config_free_policy(struct config_policy *p)
{
	size_t	i, j;

	free(p->name);
	for (i = 0; i < p->ndomains; i++)
		free(p->domains[i]);
	free(p->domains);
	for (i = 0; i < p->nfilters; i++) {
		free(p->filters[i].name);
		for (j = 0; j < p->filters[i].nrules; j++)
			free(p->filters[i].rules[j].result);
		free(p->filters[i].rules);
	}
	free(p->filters);
}
