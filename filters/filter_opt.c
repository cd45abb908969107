/*
 * filter_opt.c - typed filter options (api->option_*, ABI 1.2)
 *
 * Pure functions over the "key=value" strings init() gets, plus a
 * per-thread record of the first bad value, which the chain turns into a
 * "FILE:LINE: filter NAME: option KEY: ..." configuration error.  The
 * record is per thread because init() runs on whichever thread loads a
 * configuration (start-up, SIGHUP, frontmx -t), and a module calls the
 * getters without any handle that could name the load it belongs to.
 * filter_opt.h has the contract.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_opt.h"
#include "strutil.h"

static _Thread_local struct {
	int	active;		/* between filter_opt_begin() and _end() */
	int	failed;
	char	msg[FILTER_OPT_ERR_MAX];
} filter_opt_rec;

void
filter_opt_begin(void)
{
	filter_opt_rec.active = 1;
	filter_opt_rec.failed = 0;
	filter_opt_rec.msg[0] = '\0';
}

int
filter_opt_end(char *msg, size_t msglen)
{
	filter_opt_rec.active = 0;
	if (!filter_opt_rec.failed)
		return 0;
	if (msglen > 0)
		snprintf(msg, msglen, "%s", filter_opt_rec.msg);
	return -1;
}

/* Record the first failure of this init() as "option KEY: ..."; -1. */
int
filter_opt_fail(const char *key, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!filter_opt_rec.active || filter_opt_rec.failed)
		return -1;
	filter_opt_rec.failed = 1;
	n = snprintf(filter_opt_rec.msg, sizeof filter_opt_rec.msg, "option %s: ",
	    key);
	if (n > 0 && (size_t)n < sizeof filter_opt_rec.msg) {
		va_start(ap, fmt);
		vsnprintf(filter_opt_rec.msg + n, sizeof filter_opt_rec.msg - (size_t)n,
		    fmt, ap);
		va_end(ap);
	}
	return -1;
}

/*
 * A value as an error message shows it: the value is the admin's, but a
 * libconfig string may hold escapes (\n) that must not split the line.
 */
static const char *
filter_opt_quote(const char *v, char *buf, size_t len)
{
	size_t i;

	for (i = 0; v[i] != '\0' && i + 1 < len && i < FILTER_OPT_VALUE_SHOWN; i++)
		buf[i] = ((unsigned char)v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
	buf[i] = '\0';
	return buf;
}

/* Does options[i] set key?  *value then points at its value. */
static int
filter_opt_is(const char *opt, const char *key, const char **value)
{
	char k[FILTER_OPT_KEY_MAX];

	return opt != NULL && str_option_split(opt, k, sizeof k, value) == 0 &&
	    strcmp(k, key) == 0;
}

/* The one value of key: 1 (*value set), 0 not set, -1 given twice. */
static int
filter_opt_find(const char *const *options, size_t noptions, const char *key,
    const char **value)
{
	const char *v;
	size_t i;
	int found = 0;

	for (i = 0; i < noptions; i++) {
		if (!filter_opt_is(options[i], key, &v))
			continue;
		if (found)
			return filter_opt_fail(key, "given more than once");
		*value = v;
		found = 1;
	}
	return found;
}

/* filter_opt_find() for a getter, whose out must not be NULL. */
static int
filter_opt_get(const char *const *options, size_t noptions, const char *key,
    const void *out, const char **value)
{
	if (key == NULL || out == NULL)
		return -1;
	return filter_opt_find(options, noptions, key, value);
}

int
filter_opt_string(const char *const *options, size_t noptions,
    const char *key, const char **out)
{
	const char *v;
	int r;

	if ((r = filter_opt_get(options, noptions, key, out, &v)) == 1)
		*out = v;
	return r;
}

int
filter_opt_bool(const char *const *options, size_t noptions, const char *key,
    int *out)
{
	char q[FILTER_OPT_VALUE_SHOWN + 1];
	const char *v;
	int r;

	if ((r = filter_opt_get(options, noptions, key, out, &v)) != 1)
		return r;
	if (str_bool(v, out) == -1)
		return filter_opt_fail(key, "\"%s\" is not a boolean (yes/no, "
		    "true/false, on/off, 1/0)", filter_opt_quote(v, q, sizeof q));
	return 1;
}

int
filter_opt_uint(const char *const *options, size_t noptions, const char *key,
    unsigned long long min, unsigned long long max, unsigned long long *out)
{
	char q[FILTER_OPT_VALUE_SHOWN + 1];
	unsigned long long n;
	const char *v;
	int r;

	if ((r = filter_opt_get(options, noptions, key, out, &v)) != 1)
		return r;
	if (str_uint(v, max, &n) == -1 || n < min)
		return filter_opt_fail(key, "\"%s\" is not a number from %llu "
		    "to %llu", filter_opt_quote(v, q, sizeof q), min, max);
	*out = n;
	return 1;
}

/* Blanks around a list item are the admin's layout, not part of it. */
static int
filter_opt_blank(char c)
{
	return c == ' ' || c == '\t';
}

/*
 * Walk the items of every value of key: fn(arg, item, len) per non-empty
 * item, in order.  Returns the number of values of key found.
 */
static size_t
filter_opt_items(const char *const *options, size_t noptions, const char *key,
    void (*fn)(void *, const char *, size_t), void *arg)
{
	const char *v, *p, *a, *b;
	size_t i, found = 0;

	for (i = 0; i < noptions; i++) {
		if (!filter_opt_is(options[i], key, &v))
			continue;
		found++;
		for (p = v;; p++) {
			a = p;
			p += strcspn(p, ",");
			for (b = p; a < b && filter_opt_blank(*a); a++)
				;
			while (b > a && filter_opt_blank(b[-1]))
				b--;
			if (b > a)
				fn(arg, a, (size_t)(b - a));
			if (*p == '\0')
				break;
		}
	}
	return found;
}

struct filter_opt_list {
	size_t	  n;		/* items */
	size_t	  bytes;	/* their strings with NULs */
	char	**items;	/* second pass: where to store */
	char	 *next;		/* second pass: next string */
};

static void
filter_opt_count(void *arg, const char *item, size_t len)
{
	struct filter_opt_list *l = arg;

	(void)item;
	l->n++;
	l->bytes += len + 1;
}

static void
filter_opt_store(void *arg, const char *item, size_t len)
{
	struct filter_opt_list *l = arg;

	memcpy(l->next, item, len);
	l->next[len] = '\0';
	l->items[l->n++] = l->next;
	l->next += len + 1;
}

int
filter_opt_list(const char *const *options, size_t noptions, const char *key,
    char ***out, size_t *count)
{
	struct filter_opt_list l = { 0 };
	size_t size;

	if (key == NULL || out == NULL)
		return -1;
	if (filter_opt_items(options, noptions, key, filter_opt_count, &l) == 0) {
		*out = NULL;
		if (count != NULL)
			*count = 0;
		return 0;
	}
	/* One block: the caller (a module) frees it with one free(). */
	size = (l.n + 1) * sizeof *l.items + l.bytes;
	if ((l.items = malloc(size)) == NULL)
		return filter_opt_fail(key, "out of memory");
	l.next = (char *)(l.items + l.n + 1);
	l.n = 0;
	filter_opt_items(options, noptions, key, filter_opt_store, &l);
	l.items[l.n] = NULL;
	*out = l.items;
	if (count != NULL)
		*count = l.n;
	return 1;
}

int
filter_opt_check(const char *const *options, size_t noptions,
    const char *const *known)
{
	char k[FILTER_OPT_KEY_MAX], q[FILTER_OPT_VALUE_SHOWN + 1], list[160];
	const char *v;
	size_t i, j, used;

	for (i = 0; i < noptions; i++) {
		if (options[i] == NULL ||
		    str_option_split(options[i], k, sizeof k, &v) == -1)
			return filter_opt_fail(options[i] != NULL ?
			    filter_opt_quote(options[i], q, sizeof q) : "(null)",
			    "not key=value");
		for (j = 0; known != NULL && known[j] != NULL; j++)
			if (strcmp(known[j], k) == 0)
				break;
		if (known != NULL && known[j] != NULL)
			continue;
		list[0] = '\0';
		for (j = 0, used = 0; known != NULL && known[j] != NULL &&
		    used < sizeof list; j++)
			used += (size_t)snprintf(list + used, sizeof list - used,
			    "%s%s", j > 0 ? ", " : "", known[j]);
		return filter_opt_fail(k, "unknown option (known: %s)",
		    list[0] != '\0' ? list : "none");
	}
	return 0;
}
