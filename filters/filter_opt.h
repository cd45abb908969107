/*
 * filter_opt.h - typed filter options: the api->option_*() calls (ABI 1.2)
 *
 * SYNOPSIS
 *	#include "filter_opt.h"
 *
 *	filter_opt_begin();
 *	r = f->init(api, options, noptions, &inst);	(calls filter_opt_*)
 *	if (filter_opt_end(msg, sizeof msg) == -1)
 *		error "FILE:LINE: filter NAME: " + msg;
 *
 *	int helo = 1;
 *	unsigned long long n = 10;
 *	if (filter_opt_check(options, noptions, known) == -1 ||
 *	    filter_opt_bool(options, noptions, "helo", &helo) == -1 ||
 *	    filter_opt_uint(options, noptions, "max", 1, 100, &n) == -1)
 *		return -1;
 *
 * DESCRIPTION
 *	A filter's options reach init() as "key=value" strings (policy/
 *	config.c turns the options group into them, in file order).  These
 *	functions read them with the one parser of each type in common/
 *	strutil.c (str_bool, str_uint, str_option_split), so a built-in
 *	filter and a module accept the same spellings.  struct fmx_api hands
 *	them to modules unchanged (filter_api.c); built-in filters may call
 *	them directly or through the api they get in init().
 *
 *	filter_opt_string(), _bool(), _uint() return 1 with *out set when
 *	key is set once, 0 when it is not (out untouched: it holds the
 *	default), -1 when the value is bad or the key is given twice.
 *	filter_opt_list() splits every value of key at commas, drops blanks
 *	around items and empty items, and returns the items in one
 *	allocation (a NULL-terminated array followed by the strings) that
 *	the caller free()s; *out NULL and 0 when key is not set.
 *	filter_opt_check() returns -1 for an option that is not "key=value"
 *	or whose key is not in known[] (NULL-terminated).
 *
 * DIAGNOSTICS
 *	Between filter_opt_begin() and filter_opt_end() on one thread, the
 *	first failure is recorded as "option KEY: what is wrong" (the value
 *	quoted, at most FILTER_OPT_VALUE_SHOWN bytes, control characters as
 *	'?'); filter_opt_end() copies it into msg and returns -1, or returns
 *	0 when every call succeeded.  The chain prefixes the filter's
 *	"FILE:LINE: filter NAME: " and refuses the configuration, whatever
 *	init() returned: a bad option never reaches the mail.  Outside that
 *	window nothing is recorded (the return value still says it).
 */
#ifndef FRONTMX_FILTER_OPT_H
#define FRONTMX_FILTER_OPT_H

#include <stddef.h>

#define FILTER_OPT_KEY_MAX	64	/* longest option name, NUL included */
#define FILTER_OPT_VALUE_SHOWN	64	/* bytes of a bad value quoted in the error */
#define FILTER_OPT_ERR_MAX	256

int	filter_opt_string(const char *const *options, size_t noptions,
	    const char *key, const char **out);
int	filter_opt_bool(const char *const *options, size_t noptions,
	    const char *key, int *out);
int	filter_opt_uint(const char *const *options, size_t noptions,
	    const char *key, unsigned long long min, unsigned long long max,
	    unsigned long long *out);
int	filter_opt_list(const char *const *options, size_t noptions,
	    const char *key, char ***out, size_t *count);
int	filter_opt_check(const char *const *options, size_t noptions,
	    const char *const *known);

/*
 * A value a getter read but that the filter finds wrong (a dnsbl zone
 * that does not parse): recorded like the getters' own failures, so the
 * configuration is refused with FILE:LINE.  Returns -1.
 */
int	filter_opt_fail(const char *key, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

void	filter_opt_begin(void);
int	filter_opt_end(char *msg, size_t msglen);

#endif
