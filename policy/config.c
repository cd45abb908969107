/*
 * config.c - frontmx configuration loader: the core
 *
 * NAME
 *	config_load, config_ref, config_unref - read the frontmx
 *	configuration
 *
 * SYNOPSIS
 *	#include "config.h"
 *
 *	struct config *config_load(const char *file, char *err, size_t errlen);
 *	void config_ref(struct config *c);
 *	void config_unref(struct config *c);
 *
 * DESCRIPTION
 *	config_load() reads a libconfig file (see conf/frontmx.conf for every
 *	key, its meaning and its default) into a freshly allocated, immutable
 *	struct config with a reference count of 1.  The whole file is
 *	checked before anything is returned: an unknown key at any level, a
 *	value of the wrong type, a value out of range or a malformed address,
 *	domain, network or action is an error.  Nothing is half-applied.
 *
 *	config_ref() and config_unref() count references atomically, so any
 *	thread may drop the last one; the last config_unref() frees the
 *	configuration and every string in it.  Taking a reference from a
 *	shared pointer that another thread may swap concurrently is the
 *	caller's problem (swap and ref under the same lock, or on one thread).
 *
 *	The loader is cut in three by what a reader comes for (config_int.h
 *	holds what they share): this file reads the file, reports errors,
 *	gives typed access to settings, loads the small sections (hostname,
 *	limits, timeouts, spool, quarantine, authserv_id, tag) and frees;
 *	config_net.c loads everything that is an address (listen, upstream,
 *	dns, relay) and answers relay questions; config_filters.c loads the
 *	filter chain and the policy groups and names the actions.
 *	authserv_id (default hostname) must be an RFC 2045 token, tag.header
 *	a field name and tag.subject_prefix free of control characters: all
 *	three end up in header fields.
 *
 * DIAGNOSTICS
 *	config_load() returns NULL and writes one line into err:
 *	"FILE: cannot open: REASON" when the file can't be read, otherwise
 *	"FILE:LINE: MESSAGE".  Only the first error is reported.  A message
 *	longer than errlen is cut short; that loses words, never safety.
 *
 * BUGS
 *	libconfig 1.5 silently wraps an integer literal above 2^31-1 that has
 *	no L suffix.  config_int_literal_check() re-reads the literal from the
 *	file and turns the wrap into an error that asks for the suffix.
 *
 *	@include paths are relative to the working directory, as libconfig
 *	1.5 resolves them; setting its include_dir would break absolute ones.
 */

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_int.h"
#include "log.h"
#include "refcount.h"
#include "strutil.h"

/* How much source text config_int_literal_check() looks at. */
#define CONFIG_SCAN_MAX		4096
#define CONFIG_WORKERS_MAX	64
/* tag.header: RFC 5322 sets no limit; 64 keeps the field on one line. */
#define CONFIG_HEADER_NAME_MAX	64
/*
 * limits.pipeline_backlog: the session must hold its longest line whole.
 * A text line is 1000 octets with CRLF (RFC 5321 4.5.3.1.6), and one more
 * octet shows that a line is too long; an AUTH line is 12288 plus CRLF
 * (RFC 4954 4).  The same numbers as SMTP_TEXT_LINE_MAX + 1 and
 * SMTP_AUTH_LINE_MAX in proxy/.
 */
#define CONFIG_BACKLOG_MIN	1001
#define CONFIG_BACKLOG_MIN_AUTH	12290
/* tag.subject_prefix: a prefix, not a subject. */
#define CONFIG_SUBJECT_PREFIX_MAX 128
#define CONFIG_TAG_HEADER	"X-Frontmx-Tag"

static const char *const config_keys_root[] = {
	"hostname", "workers", "listen", "upstream", "dns", "limits",
	"timeouts", "relay", "spool", "policy", "filters", "quarantine",
	"authserv_id", "tag", "milter", "redis", "metrics", NULL
};
static const char *const config_keys_spool[] = { "directory", NULL };
static const char *const config_keys_quarantine[] = { "directory", NULL };
static const char *const config_keys_tag[] = { "header", "subject_prefix", NULL };

static void	 config_free(struct config *);

/* limits.* : one row per key, so defaults, ranges and the key check agree. */
struct config_limit_row {
	const char	*name;		/* first: config_check_keys() reads it */
	size_t		 offset;	/* into struct config_limits */
	long long	 min;
	size_t		 dflt;
	long long	 max;		/* 0: what size_t holds */
};

static const struct config_limit_row config_limit_rows[] = {
	{ "message_size",	offsetof(struct config_limits, message_size),	1024, 26214400, 0 },
	{ "header_size",	offsetof(struct config_limits, header_size),	1, 102400, 0 },
	{ "recipients",		offsetof(struct config_limits, recipients),	1, 1000, 0 },
	{ "connections_per_ip",	offsetof(struct config_limits, connections_per_ip), 0, 50, 0 },
	{ "connections",	offsetof(struct config_limits, connections),	1, 10000, 0 },
	{ "errors",		offsetof(struct config_limits, errors),		1, 20, 0 },
	{ "spool_memory",	offsetof(struct config_limits, spool_memory),	1, 1048576, 0 },
	{ "pipeline_backlog",	offsetof(struct config_limits, pipeline_backlog), 1, 65536, 0 },
	/*
	 * RFC 5321 4.5.3.1.6 by default; an admin may let longer lines
	 * through (the upstream then decides), up to 1 MiB, which bounds
	 * the line buffers of the session and of the filters.
	 */
	{ "line_length",	offsetof(struct config_limits, line_length),	1000, 1000,
	    CONFIG_LINE_LENGTH_MAX },
	{ NULL, 0, 0, 0, 0 }
};

/* timeouts.* in seconds; RFC 5321 4.5.3.2 gives the SMTP ones. */
struct config_timeout_row {
	const char	*name;
	size_t		 offset;	/* into struct config_timeouts */
	unsigned	 dflt;
};

static const struct config_timeout_row config_timeout_rows[] = {
	{ "command",		offsetof(struct config_timeouts, command),		300 },
	{ "data_block",		offsetof(struct config_timeouts, data_block),		180 },
	{ "data",		offsetof(struct config_timeouts, data),			3600 },
	{ "upstream_connect",	offsetof(struct config_timeouts, upstream_connect),	30 },
	{ "upstream_command",	offsetof(struct config_timeouts, upstream_command),	300 },
	{ "upstream_data_end",	offsetof(struct config_timeouts, upstream_data_end),	600 },
	{ "shutdown_grace",	offsetof(struct config_timeouts, shutdown_grace),	30 },
	{ "dns",		offsetof(struct config_timeouts, dns),			5 },
	{ NULL, 0, 0 }
};

/*
 * Memory.  Running out while loading configuration is not something we
 * can report usefully to the peer; the style rule is that x*alloc aborts.
 */

__attribute__((noreturn))
static void
config_oom(void)
{
	fatalx("config: out of memory");	/* after the lines loop threads hold */
}

void *
config_xcalloc(size_t n, size_t size)
{
	void	*p;

	/* calloc(0) may return NULL; callers index nothing, so ask for one. */
	if ((p = calloc(n ? n : 1, size ? size : 1)) == NULL)
		config_oom();
	return p;
}

char *
config_xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		config_oom();
	return p;
}

/*
 * The string set.
 */

struct config_strset *
config_strset_new(void)
{
	struct config_strset	*set;

	set = config_xcalloc(1, sizeof *set);
	set->slots = config_xcalloc(16, sizeof *set->slots);
	set->mask = 15;
	return set;
}

void
config_strset_free(struct config_strset *set)
{
	if (set == NULL)
		return;
	free(set->slots);
	free(set);
}

const struct config_strset_slot *
config_strset_find(const struct config_strset *set, const char *key)
{
	size_t	i;

	/* Never full (load <= 1/2), so the probe always meets an empty slot. */
	for (i = (size_t)str_hash(key) & set->mask; set->slots[i].key != NULL;
	    i = (i + 1) & set->mask)
		if (strcmp(set->slots[i].key, key) == 0)
			return &set->slots[i];
	return NULL;
}

static void
config_strset_grow(struct config_strset *set)
{
	struct config_strset_slot	*old = set->slots;
	size_t				 oldcap = set->mask + 1, i, j;

	if (oldcap > SIZE_MAX / 2 / sizeof *old)
		config_oom();
	set->slots = config_xcalloc(oldcap * 2, sizeof *old);
	set->mask = oldcap * 2 - 1;
	for (i = 0; i < oldcap; i++) {
		if (old[i].key == NULL)
			continue;
		for (j = (size_t)str_hash(old[i].key) & set->mask;
		    set->slots[j].key != NULL; j = (j + 1) & set->mask)
			;
		set->slots[j] = old[i];
	}
	free(old);
}

/* Insert key (not copied); returns NULL, or the slot that already had it. */
const struct config_strset_slot *
config_strset_add(struct config_strset *set, const char *key, unsigned value)
{
	const struct config_strset_slot	*dup;
	size_t				 i;

	if ((dup = config_strset_find(set, key)) != NULL)
		return dup;
	if ((set->count + 1) * 2 > set->mask + 1)
		config_strset_grow(set);
	for (i = (size_t)str_hash(key) & set->mask; set->slots[i].key != NULL;
	    i = (i + 1) & set->mask)
		;
	set->slots[i].key = key;
	set->slots[i].value = value;
	set->count++;
	return NULL;
}

/*
 * Small parsers shared by the loader and the public helpers.
 */

/* RFC 1035 host name syntax: letters, digits, inner hyphens, 63/253. */
int
config_domain_valid(const char *s)
{
	size_t	len = 0, label = 0;

	for (; *s != '\0'; s++, len++) {
		if (*s == '.') {
			if (label == 0 || s[-1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-'))
			return 0;
		if (*s == '-' && label == 0)
			return 0;
		if (++label > CONFIG_LABEL_MAX)
			return 0;
	}
	return len > 0 && len <= CONFIG_DOMAIN_MAX && label > 0 &&
	    s[-1] != '-';
}

/*
 * Lower-case s into buf, drop one trailing dot (the root, which lookups
 * ignore too) and check the syntax.  With lead_dot a leading "." is kept:
 * it is relay.domains' "and subdomains" marker.  0 ok, -1 bad.
 */
int
config_domain_normalize(const char *s, char *buf, size_t size, int lead_dot)
{
	size_t	len;

	len = strlen(s);
	if (len == 0 || len >= size)
		return -1;
	memcpy(buf, s, len + 1);
	str_lower(buf);
	if (buf[len - 1] == '.')
		buf[--len] = '\0';
	if (lead_dot && buf[0] == '.')
		return config_domain_valid(buf + 1) ? 0 : -1;
	return config_domain_valid(buf) ? 0 : -1;
}

/*
 * Public helpers.
 */

void
config_ref(struct config *c)
{
	if (c != NULL)
		refcount_hold(&c->refcount);
}

void
config_unref(struct config *c)
{
	if (c != NULL && refcount_drop(&c->refcount))
		config_free(c);
}

/*
 * Error reporting and key paths.
 */

static void
config_errf(struct config_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
config_errf(struct config_ctx *ctx, const char *fmt, ...)
{
	va_list	ap;

	if (ctx->err == NULL || ctx->errlen == 0)
		return;
	va_start(ap, fmt);
	/* Truncation only shortens the message; the NUL is always there. */
	(void)vsnprintf(ctx->err, ctx->errlen, fmt, ap);
	va_end(ap);
}

/* The file and line of setting s (NULL or the root: line 1). */
static const char *
config_source(struct config_ctx *ctx, const config_setting_t *s,
    unsigned *line)
{
	const char	*file = ctx->file;

	*line = 0;
	if (s != NULL) {
		if (config_setting_source_file(s) != NULL)
			file = config_setting_source_file(s);
		*line = config_setting_source_line(s);
	}
	/*
	 * The root setting has no line.  Callers grep for "file:line:", and
	 * the top of the file is where a missing top-level key belongs.
	 */
	if (*line == 0)
		*line = 1;
	return file;
}

/* "FILE:LINE: message" for setting s. */
int
config_fail(struct config_ctx *ctx, const config_setting_t *s,
    const char *fmt, ...)
{
	char		 msg[CONFIG_ERR_MAX], *p;
	const char	*file;
	unsigned	 line;
	va_list		 ap;

	file = config_source(ctx, s, &line);
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/*
	 * msg quotes values of the file, where "\n" is a newline: the
	 * error must stay one line for -t and the log.
	 */
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p == 0x7f)
			*p = '?';
	config_errf(ctx, "%s:%u: %s", file, line, msg);
	return -1;
}

/*
 * "FILE:LINE" of member name of g (of g itself when it has none), kept
 * for errors found after parsing: a certificate or module that cannot be
 * loaded is reported at the line that names it.
 */
char *
config_where(struct config_ctx *ctx, const config_setting_t *g,
    const char *name)
{
	const config_setting_t	*m = NULL;
	const char		*file;
	unsigned		 line;
	char			 buf[PATH_MAX + 16];

	/* g is NULL for a group left out: its defaults belong to line 1. */
	if (name != NULL && g != NULL)
		m = config_setting_get_member(g, name);
	file = config_source(ctx, m != NULL ? m : g, &line);
	(void)snprintf(buf, sizeof buf, "%s:%u", file, line);
	return config_xstrdup(buf);
}

/* parent + "." + name into buf; a path too long for buf ends in "...". */
const char *
config_path(char *buf, size_t size, const char *parent, const char *name)
{
	int	n;

	if (parent[0] == '\0')
		n = snprintf(buf, size, "%s", name);
	else
		n = snprintf(buf, size, "%s.%s", parent, name);
	if (n < 0 || (size_t)n >= size)
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

const char *
config_path_index(char *buf, size_t size, const char *parent, int i)
{
	int	n;

	n = snprintf(buf, size, "%s[%d]", parent, i);
	if (n < 0 || (size_t)n >= size)
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

/* Levenshtein distance, capped: only used to suggest a close key. */
size_t
config_edit_distance(const char *a, const char *b)
{
	size_t	row[2][CONFIG_NAME_MAX + 1], la, lb, i, j, cost, v;

	la = strlen(a);
	lb = strlen(b);
	if (la > CONFIG_NAME_MAX || lb > CONFIG_NAME_MAX)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[0][j] = j;
	for (i = 1; i <= la; i++) {
		row[i % 2][0] = i;
		for (j = 1; j <= lb; j++) {
			cost = a[i - 1] == b[j - 1] ? 0 : 1;
			v = row[(i - 1) % 2][j - 1] + cost;
			if (row[(i - 1) % 2][j] + 1 < v)
				v = row[(i - 1) % 2][j] + 1;
			if (row[i % 2][j - 1] + 1 < v)
				v = row[i % 2][j - 1] + 1;
			row[i % 2][j] = v;
		}
	}
	return row[la % 2][lb];
}

/*
 * Look name up in rows, an array of structs (or of plain strings) whose
 * first member is the const char * name, ending with a NULL name; stride
 * is the row size.  1 if found; else 0 and *best the closest name within
 * two edits, or NULL.  This lets the limits table serve as its own list
 * of keys.
 */
int
config_suggest(const char *name, const void *rows, size_t stride,
    const char **best)
{
	const char	*key;
	size_t		 d, bestd, j;

	*best = NULL;
	bestd = 3;	/* suggest only within two edits */
	for (j = 0;; j++) {
		memcpy(&key, (const char *)rows + j * stride, sizeof key);
		if (key == NULL)
			return 0;
		if (strcmp(key, name) == 0)
			return 1;
		if ((d = config_edit_distance(name, key)) < bestd) {
			bestd = d;
			*best = key;
		}
	}
}

/* Reject every member of group whose name is not in rows (config_suggest). */
int
config_check_keys(struct config_ctx *ctx, const config_setting_t *group,
    const char *path, const void *rows, size_t stride)
{
	const config_setting_t	*m;
	const char		*name, *best;
	int			 i, n;

	n = config_setting_length(group);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(group, (unsigned)i);
		if ((name = config_setting_name(m)) == NULL)
			continue;
		if (config_suggest(name, rows, stride, &best))
			continue;
		return config_fail(ctx, m, "unknown key '%s' %s%s%s%s%s%s", name,
		    path[0] ? "in '" : "at top level", path, path[0] ? "'" : "",
		    best ? " (did you mean '" : "", best ? best : "",
		    best ? "'?)" : "");
	}
	return 0;
}

/*
 * libconfig 1.5 keeps an integer literal without the L suffix in 32 bits
 * and wraps it without a word: "message_size = 5000000000;" reads back as
 * 705032704.  Re-read the source from the setting's line, find
 * "name = literal" (skipping strings and comments) and compare.  If the
 * literal can't be found (an odd layout, a file replaced since libconfig
 * read it), trust libconfig rather than invent an error.  A file edited
 * in that instant can fail one reload; the next one reads it whole.
 */
int
config_int_literal_check(struct config_ctx *ctx, const config_setting_t *s,
    const char *path)
{
	char		 buf[CONFIG_SCAN_MAX];
	const char	*file, *name, *p, *id;
	char		*end;
	unsigned	 line, l = 1;
	unsigned long long u;
	long long	 lit;
	size_t		 n, namelen;
	FILE		*fp;
	int		 c, neg;

	if ((name = config_setting_name(s)) == NULL ||
	    (line = config_setting_source_line(s)) == 0)
		return 0;
	file = config_setting_source_file(s) ? config_setting_source_file(s) :
	    ctx->file;
	if ((fp = fopen(file, "r")) == NULL)
		return 0;
	while (l < line && (c = getc(fp)) != EOF)
		if (c == '\n')
			l++;
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	namelen = strlen(name);

	for (p = buf; *p != '\0';) {
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
			if (*p == '"')
				p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			if ((p = strstr(p + 2, "*/")) == NULL)
				return 0;
			p += 2;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    *p == '*') {
			for (id = p; (*p >= 'a' && *p <= 'z') ||
			    (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			    *p == '_' || *p == '-' || *p == '*'; p++)
				;
			if ((size_t)(p - id) != namelen ||
			    memcmp(id, name, namelen) != 0)
				continue;
			p += strspn(p, " \t\r\n");
			if (*p != '=' && *p != ':')
				continue;
			p += 1 + strspn(p + 1, " \t\r\n");
			neg = *p == '-';
			if (*p == '-' || *p == '+')
				p++;
			errno = 0;
			if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
				u = strtoull(p + 2, &end, 16);
				if (end == p + 2)
					return 0;
				if (errno == ERANGE || u > (unsigned long long)LLONG_MAX)
					goto range;
				lit = (long long)u;
			} else {
				lit = strtoll(p, &end, 10);
				if (end == p)
					return 0;
				if (errno == ERANGE)
					goto range;
			}
			if (neg)
				lit = -lit;
			if (lit == config_setting_get_int64(s))
				return 0;
 range:
			return config_fail(ctx, s, "'%s' is too large for a "
			    "plain integer; write it with an L suffix "
			    "(e.g. 5000000000L)", path);
		} else if (*p >= '0' && *p <= '9') {
			/* Skip a whole number so "0x1f" is not read as "x1f". */
			while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			    (*p >= 'A' && *p <= 'Z') || *p == '.')
				p++;
		} else
			p++;
	}
	return 0;
}

/*
 * Typed access.  Each config_want_*() looks up name in group and returns
 * 1 with the value stored when it is there and valid, 0 when it is absent
 * (out untouched: the caller's default stands) and -1 with err set.
 */

static int
config_want_setting(const config_setting_t *group, const char *name,
    const config_setting_t **out)
{
	return (*out = config_setting_get_member(group, name)) != NULL;
}

int
config_want_string(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const char **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return config_fail(ctx, s, "'%s' must be a string", path);
	if (config_setting_get_string(s)[0] == '\0')
		return config_fail(ctx, s, "'%s' must not be empty", path);
	*out = config_setting_get_string(s);
	return 1;
}

int
config_bool_value(struct config_ctx *ctx, const config_setting_t *s,
    const char *path, int *out)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return config_fail(ctx, s, "'%s' must be a boolean "
		    "(true or false)", path);
	*out = config_setting_get_bool(s) ? 1 : 0;
	return 1;
}

int
config_want_bool(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, int *out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	return config_bool_value(ctx, s,
	    config_path(path, sizeof path, parent, name), out);
}

int
config_want_int(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, long long min, long long max,
    long long *out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];
	long long		 v;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return config_fail(ctx, s, "'%s' must be an integer", path);
	if (config_setting_type(s) == CONFIG_TYPE_INT &&
	    config_int_literal_check(ctx, s, path) == -1)
		return -1;
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		if (max == LLONG_MAX)
			return config_fail(ctx, s, "'%s' must be at least %lld",
			    path, min);
		return config_fail(ctx, s, "'%s' must be between %lld and %lld",
		    path, min, max);
	}
	*out = v;
	return 1;
}

int
config_want_group(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	if (!config_setting_is_group(s))
		return config_fail(ctx, s, "'%s' must be a group { ... }",
		    config_path(path, sizeof path, parent, name));
	*out = s;
	return 1;
}

/* A list ( ... ) whose elements are all groups. */
int
config_want_group_list(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_list(s))
		return config_fail(ctx, s, "'%s' must be a list of groups "
		    "( { ... }, { ... } )", path);
	n = config_setting_length(s);
	for (i = 0; i < n; i++)
		if (!config_setting_is_group(config_setting_get_elem(s,
		    (unsigned)i)))
			return config_fail(ctx, config_setting_get_elem(s,
			    (unsigned)i), "'%s' must be a list of groups "
			    "( { ... }, { ... } )", path);
	*out = s;
	return 1;
}

/* [ "a", "b" ] or ( "a", "b" ): non-empty strings. */
int
config_want_strings(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s, *e;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_array(s) && !config_setting_is_list(s))
		return config_fail(ctx, s, "'%s' must be an array of strings "
		    "[ \"...\", \"...\" ]", path);
	n = config_setting_length(s);
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return config_fail(ctx, e, "'%s' must be an array of "
			    "strings [ \"...\", \"...\" ]", path);
		if (config_setting_get_string(e)[0] == '\0')
			return config_fail(ctx, e, "'%s' holds an empty string",
			    path);
	}
	*out = s;
	return 1;
}

/*
 * Sections.
 */

static int
config_load_hostname(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	char		 buf[256];
	const char	*name = NULL;
	int		 r;

	if ((r = config_want_string(ctx, root, "", "hostname", &name)) == -1)
		return -1;
	if (r == 1) {
		if (!config_domain_valid(name))
			return config_fail(ctx, config_setting_get_member(root,
			    "hostname"), "'hostname' must be a valid domain "
			    "name, not '%s'", name);
		c->hostname = config_xstrdup(name);
		return 0;
	}
	/* gethostname() may truncate without a NUL; provide one. */
	if (gethostname(buf, sizeof buf - 1) == -1)
		return config_fail(ctx, root, "'hostname' is not set and "
		    "gethostname failed: %s", strerror(errno));
	buf[sizeof buf - 1] = '\0';
	if (!config_domain_valid(buf))
		return config_fail(ctx, root, "'hostname' is not set and the "
		    "system name '%s' is not a valid domain name", buf);
	c->hostname = config_xstrdup(buf);
	return 0;
}

/*
 * limits.pipeline_backlog caps the unread client input, and the session
 * frames each line whole: a backlog shorter than the longest line a
 * listener must read would stall every session that sends one.  The
 * listeners are loaded first.
 */
static int
config_check_backlog(struct config_ctx *ctx, const config_setting_t *g,
    const struct config *c)
{
	size_t	min = CONFIG_BACKLOG_MIN, i;

	for (i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].auth)
			min = CONFIG_BACKLOG_MIN_AUTH;
	if (c->limits.pipeline_backlog >= min)
		return 0;
	return config_fail(ctx, config_setting_get_member(g, "pipeline_backlog"),
	    "'limits.pipeline_backlog' must be at least %zu%s, not %zu", min,
	    min == CONFIG_BACKLOG_MIN_AUTH ? " with a listener that has auth "
	    "(one RFC 4954 AUTH line)" : " (one RFC 5321 text line)",
	    c->limits.pipeline_backlog);
}

static int
config_load_limits(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const struct config_limit_row	*row;
	const config_setting_t		*g = NULL;
	long long			 v, max;
	size_t				 sv;
	int				 r;

	/* size_t may be narrower than long long on 32-bit hosts. */
	max = (unsigned long long)SIZE_MAX < (unsigned long long)LLONG_MAX ?
	    (long long)SIZE_MAX : LLONG_MAX;
	if ((r = config_want_group(ctx, root, "", "limits", &g)) == -1)
		return -1;
	if (r == 1 && config_check_keys(ctx, g, "limits", config_limit_rows,
	    sizeof config_limit_rows[0]) == -1)
		return -1;
	for (row = config_limit_rows; row->name != NULL; row++) {
		sv = row->dflt;
		if (g != NULL) {
			r = config_want_int(ctx, g, "limits", row->name,
			    row->min, row->max ? row->max : max, &v);
			if (r == -1)
				return -1;
			if (r == 1)
				sv = (size_t)v;
		}
		memcpy((char *)&c->limits + row->offset, &sv, sizeof sv);
	}
	return config_check_backlog(ctx, g, c);
}

static int
config_load_timeouts(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const struct config_timeout_row	*row;
	const config_setting_t		*g = NULL;
	long long			 v;
	unsigned			 uv;
	int				 r;

	if ((r = config_want_group(ctx, root, "", "timeouts", &g)) == -1)
		return -1;
	if (r == 1 && config_check_keys(ctx, g, "timeouts",
	    config_timeout_rows, sizeof config_timeout_rows[0]) == -1)
		return -1;
	for (row = config_timeout_rows; row->name != NULL; row++) {
		uv = row->dflt;
		if (g != NULL) {
			r = config_want_int(ctx, g, "timeouts", row->name, 1,
			    CONFIG_TIMEOUT_MAX, &v);
			if (r == -1)
				return -1;
			if (r == 1)
				uv = (unsigned)v;
		}
		memcpy((char *)&c->timeouts + row->offset, &uv, sizeof uv);
	}
	return 0;
}

static int
config_load_spool(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*dir = "/tmp";
	int			 r;

	if ((r = config_want_group(ctx, root, "", "spool", &g)) == -1)
		return -1;
	if (r == 1) {
		if (config_check_keys(ctx, g, "spool", config_keys_spool,
		    sizeof config_keys_spool[0]) == -1)
			return -1;
		if (config_want_string(ctx, g, "spool", "directory", &dir) == -1)
			return -1;
	}
	c->spool_dir = config_xstrdup(dir);
	c->spool_where = config_where(ctx, g, "directory");
	return 0;
}

static int
config_load_quarantine(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*dir = NULL;
	int			 r;

	/* Absent: no quarantine, and the quarantine action tempfails. */
	if ((r = config_want_group(ctx, root, "", "quarantine", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "quarantine", config_keys_quarantine,
	    sizeof config_keys_quarantine[0]) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, "quarantine", "directory",
	    &dir)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'quarantine' is missing "
		    "'directory'");
	c->quarantine_dir = config_xstrdup(dir);
	c->quarantine_where = config_where(ctx, g, "directory");
	return 0;
}

/*
 * A copy of s safe to quote in an error message: control characters
 * become '?', so a value holding CR/LF can't split the one-line error
 * (or the log line it ends up in).
 */
static const char *
config_printable(const char *s, char *buf, size_t size)
{
	size_t	i;

	for (i = 0; s[i] != '\0' && i + 1 < size; i++)
		buf[i] = (unsigned char)s[i] < ' ' || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static int
config_load_authserv_id(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const char	*id = NULL;
	char		 shown[CONFIG_PATH_MAX];
	int		 r;

	if ((r = config_want_string(ctx, root, "", "authserv_id", &id)) == -1)
		return -1;
	if (r == 0) {
		/* RFC 8601 2.5: the host name is the usual authserv-id. */
		c->authserv_id = config_xstrdup(c->hostname);
		return 0;
	}
	/*
	 * RFC 8601 2.2: authserv-id = value (RFC 2045 token or quoted
	 * string).  We write the token form only, and the forged-field
	 * check compares against it, so a space or ';' would make our own
	 * field unparseable and let forgeries through.
	 */
	if (!str_mime_token(id, CONFIG_AUTHSERV_MAX))
		return config_fail(ctx, config_setting_get_member(root,
		    "authserv_id"), "'authserv_id' must be an RFC 8601 "
		    "authserv-id: printable ASCII without spaces or "
		    "()<>@,;:\\\"/[]?= (at most %d characters), not '%s'",
		    CONFIG_AUTHSERV_MAX, config_printable(id, shown,
		    sizeof shown));
	c->authserv_id = config_xstrdup(id);
	return 0;
}

/* RFC 5322 3.6.8 field-name: printable US-ASCII except ':'. */
static int
config_header_name_valid(const char *s)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 ||
		    s[i] == ':')
			return 0;
	return i > 0 && i <= CONFIG_HEADER_NAME_MAX;
}

static int
config_load_tag(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*header = CONFIG_TAG_HEADER, *prefix = NULL;
	char			 shown[CONFIG_PATH_MAX];
	size_t			 i;
	int			 r;

	if ((r = config_want_group(ctx, root, "", "tag", &g)) == -1)
		return -1;
	if (r == 1) {
		if (config_check_keys(ctx, g, "tag", config_keys_tag,
		    sizeof config_keys_tag[0]) == -1)
			return -1;
		if ((r = config_want_string(ctx, g, "tag", "header",
		    &header)) == -1)
			return -1;
		if (r == 1 && !config_header_name_valid(header))
			return config_fail(ctx, config_setting_get_member(g,
			    "header"), "'tag.header' must be a header field "
			    "name (printable ASCII without spaces or ':', at "
			    "most %d characters), not '%s'",
			    CONFIG_HEADER_NAME_MAX, config_printable(header,
			    shown, sizeof shown));
		if (config_want_string(ctx, g, "tag", "subject_prefix",
		    &prefix) == -1)
			return -1;
	}
	if (prefix != NULL) {
		/*
		 * It goes into the Subject: field verbatim; a CR or LF would
		 * start a new header field, other controls have no business
		 * in a header either.
		 */
		for (i = 0; prefix[i] != '\0'; i++)
			if ((unsigned char)prefix[i] < ' ' || prefix[i] == 0x7f)
				return config_fail(ctx,
				    config_setting_get_member(g,
				    "subject_prefix"), "'tag.subject_prefix' "
				    "must not contain control characters "
				    "(CR, LF, TAB, ...)");
		if (i > CONFIG_SUBJECT_PREFIX_MAX)
			return config_fail(ctx, config_setting_get_member(g,
			    "subject_prefix"), "'tag.subject_prefix' must be "
			    "at most %d characters", CONFIG_SUBJECT_PREFIX_MAX);
		c->tag_subject_prefix = config_xstrdup(prefix);
	}
	c->tag_header = config_xstrdup(header);
	return 0;
}

static int
config_load_root(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	long long	v = 0;

	if (config_check_keys(ctx, root, "", config_keys_root,
	    sizeof config_keys_root[0]) == -1)
		return -1;
	/* hostname first: upstream.helo defaults to it. */
	if (config_load_hostname(ctx, root, c) == -1)
		return -1;
	if (config_want_int(ctx, root, "", "workers", 0, CONFIG_WORKERS_MAX,
	    &v) == -1)
		return -1;
	c->workers = (unsigned)v;
	if (config_load_listen(ctx, root, c) == -1 ||
	    config_load_upstream(ctx, root, c) == -1 ||
	    config_load_dns(ctx, root, c) == -1 ||
	    config_load_limits(ctx, root, c) == -1 ||
	    config_load_timeouts(ctx, root, c) == -1 ||
	    config_load_relay(ctx, root, c) == -1 ||
	    config_load_spool(ctx, root, c) == -1 ||
	    /* Filters first: a policy group must name a filter in the chain. */
	    config_load_filters(ctx, root, c) == -1 ||
	    config_load_redis(ctx, root, c) == -1 ||
	    config_load_policy(ctx, root, c) == -1 ||
	    config_load_quarantine(ctx, root, c) == -1 ||
	    config_load_authserv_id(ctx, root, c) == -1 ||
	    config_load_tag(ctx, root, c) == -1 ||
	    config_load_milter(ctx, root, c) == -1 ||
	    config_load_metrics(ctx, root, c) == -1)
		return -1;
	return 0;
}

/* Frees a whole or a half-built configuration: counts track what exists. */
static void
config_free(struct config *c)
{
	size_t	i, j;

	free(c->file);
	free(c->hostname);
	for (i = 0; i < c->nlisteners; i++) {
		free(c->listeners[i].address);
		free(c->listeners[i].cert);
		free(c->listeners[i].key);
		free(c->listeners[i].cert_where);
		free(c->listeners[i].key_where);
		free(c->listeners[i].proxy_from);
	}
	free(c->listeners);
	free(c->upstream_tls_name);
	free(c->upstream_tls_ca);
	free(c->upstream_where);
	free(c->upstream_address);
	free(c->upstream_host);
	free(c->upstream_port);
	free(c->upstream_dir);
	free(c->upstream_unix);
	free(c->upstream_helo);
	for (i = 0; i < c->ndns_forward; i++)
		free(c->dns_forward[i]);
	free(c->dns_forward);
	for (i = 0; i < c->nrelay_domains; i++)
		free(c->relay_domains[i]);
	free(c->relay_domains);
	config_strset_free(c->relay_index);
	free(c->relay_networks);
	config_free_redis(&c->redis);
	free(c->spool_dir);
	free(c->spool_where);
	free(c->upstream_dir_where);
	free(c->quarantine_where);
	config_free_policy(&c->policy_default);
	for (i = 0; i < c->npolicies; i++)
		config_free_policy(&c->policies[i]);
	free(c->policies);
	config_strset_free(c->policy_index);
	for (i = 0; i < c->nfilters; i++) {
		free(c->filters[i].name);
		free(c->filters[i].module);
		free(c->filters[i].milter);
		free(c->filters[i].where);
		for (j = 0; j < c->filters[i].noptions; j++)
			free(c->filters[i].options[j]);
		free(c->filters[i].options);
	}
	free(c->filters);
	free(c->quarantine_dir);
	free(c->authserv_id);
	free(c->tag_header);
	free(c->tag_subject_prefix);
	free(c->milter_listen);
	free(c->milter_listen_conn);
	free(c->milter_where);
	free(c->metrics_listen);
	free(c->metrics_where);
	free(c);
}

struct config *
config_load(const char *file, char *err, size_t errlen)
{
	struct config_ctx	 ctx = { file, err, errlen };
	struct config		*c;
	struct stat		 st;
	config_t		 lc;
	FILE			*fp;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	/*
	 * Open it ourselves: libconfig says only "file I/O error", and the
	 * admin wants to know whether it is ENOENT or EACCES.
	 */
	if ((fp = fopen(file, "r")) == NULL) {
		config_errf(&ctx, "%s: cannot open: %s", file, strerror(errno));
		return NULL;
	}
	/* fopen(3) happily opens a directory; libconfig would then say "syntax error". */
	memset(&st, 0, sizeof st);
	if (fstat(fileno(fp), &st) == -1 || !S_ISREG(st.st_mode)) {
		config_errf(&ctx, "%s: cannot open: %s", file,
		    S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
		fclose(fp);
		return NULL;
	}
	config_init(&lc);
	if (config_read(&lc, fp) == CONFIG_FALSE) {
		config_errf(&ctx, "%s:%d: %s", config_error_file(&lc) ?
		    config_error_file(&lc) : file, config_error_line(&lc),
		    config_error_text(&lc));
		fclose(fp);
		config_destroy(&lc);
		return NULL;
	}
	fclose(fp);

	c = config_xcalloc(1, sizeof *c);
	c->refcount = 1;
	c->file = config_xstrdup(file);
	if (config_load_root(&ctx, config_root_setting(&lc), c) == -1) {
		config_free(c);
		c = NULL;
	}
	config_destroy(&lc);
	return c;
}
