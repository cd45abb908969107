/*
 * config_int.h - private to the config_*.c family: the loader's shared
 * limits, context and helpers
 *
 * DESCRIPTION
 *	config_load() is one loader in three files, cut by what a reader
 *	comes for: config.c holds the core (reading the file, FILE:LINE
 *	errors, typed access, the small sections, freeing), config_net.c
 *	the sections about addresses (listen, upstream, dns, relay) and
 *	config_filters.c the filter chain and the policy groups.  This
 *	header is what the three share; nothing outside policy/config*.c
 *	includes it, and nothing in it is API.
 */
#ifndef FRONTMX_CONFIG_INT_H
#define FRONTMX_CONFIG_INT_H

#include <stddef.h>

#include <libconfig.h>

#include "config.h"

/* RFC 1035 2.3.4: 255 octets on the wire is 253 characters in text. */
#define CONFIG_DOMAIN_MAX	253
#define CONFIG_LABEL_MAX	63
/* Room for a leading ".", a trailing "." and the NUL. */
#define CONFIG_DOMAIN_BUF	(CONFIG_DOMAIN_MAX + 3)
/* Dotted key paths in messages: "policy.domains[12].spf". */
#define CONFIG_PATH_MAX		128
/* Filter and result names; also bounds the edit-distance rows. */
#define CONFIG_NAME_MAX		32
#define CONFIG_TIMEOUT_MAX	86400

/*
 * relay.domains can hold thousands of names and is consulted for every
 * RCPT, so it gets a hash set: open addressing, linear probing, a
 * power-of-two table kept at most half full, FNV-1a.  Not hsearch_r(3):
 * its ENTRY key is a non-const char * (a cast under -Wcast-qual), FIND
 * takes a non-const table so many worker threads reading it at once would
 * lean on an unwritten promise, the size is fixed at creation, and it is
 * a GNU extension.  This one is short, const-correct and read-only after
 * config_load(), so every worker can query it without a lock.  The keys
 * are chosen by the admin, not the peer, so probe lengths can't be
 * steered by an attacker.
 */
struct config_strset_slot {
	const char	*key;		/* NULL = empty; owned by the caller */
	unsigned	 value;		/* caller's tag: a line number */
};

struct config_strset {
	struct config_strset_slot	*slots;
	size_t				 mask;	/* capacity - 1 */
	size_t				 count;
};

/* Where errors go while one file is being loaded. */
struct config_ctx {
	const char	*file;
	char		*err;
	size_t		 errlen;
};

/* Memory: x*alloc abort, there is no one to report to (config.c). */
void		*config_xcalloc(size_t n, size_t size);
char		*config_xstrdup(const char *s);

/* The string set; add returns NULL, or the slot that had key (config.c). */
struct config_strset *config_strset_new(void);
void		 config_strset_free(struct config_strset *set);
const struct config_strset_slot *config_strset_find(
		    const struct config_strset *set, const char *key);
const struct config_strset_slot *config_strset_add(struct config_strset *set,
		    const char *key, unsigned value);

/* Domain syntax (config.c). */
int		 config_domain_valid(const char *s);
int		 config_domain_normalize(const char *s, char *buf, size_t size,
		    int lead_dot);

/* Errors, key paths, did-you-mean (config.c). */
int		 config_fail(struct config_ctx *ctx, const config_setting_t *s,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
char		*config_where(struct config_ctx *ctx,
		    const config_setting_t *g, const char *name);
const char	*config_path(char *buf, size_t size, const char *parent,
		    const char *name);
const char	*config_path_index(char *buf, size_t size, const char *parent,
		    int i);
size_t		 config_edit_distance(const char *a, const char *b);
int		 config_suggest(const char *name, const void *rows,
		    size_t stride, const char **best);
int		 config_check_keys(struct config_ctx *ctx,
		    const config_setting_t *group, const char *path,
		    const void *rows, size_t stride);
int		 config_int_literal_check(struct config_ctx *ctx,
		    const config_setting_t *s, const char *path);

/*
 * Typed access (config.c): 1 with the value stored when name is there and
 * valid, 0 when absent (out untouched: the caller's default stands), -1
 * with err set.
 */
int		 config_want_string(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, const char **out);
int		 config_bool_value(struct config_ctx *ctx,
		    const config_setting_t *s, const char *path, int *out);
int		 config_want_bool(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, int *out);
int		 config_want_int(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, long long min, long long max,
		    long long *out);
int		 config_want_group(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, const config_setting_t **out);
int		 config_want_group_list(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, const config_setting_t **out);
int		 config_want_strings(struct config_ctx *ctx,
		    const config_setting_t *group, const char *parent,
		    const char *name, const config_setting_t **out);

/* Sections about addresses (config_net.c); 0 ok, -1 err set. */
int		 config_load_listen(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
int		 config_load_upstream(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
int		 config_load_dns(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
int		 config_load_relay(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
int		 config_load_milter(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
/* After config_load_filters(): greylist and ratelimit need it. */
int		 config_load_redis(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
void		 config_free_redis(struct config_redis *r);
int		 config_load_metrics(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);

/* The filter chain and policy groups (config_filters.c); 0 ok, -1. */
int		 config_load_filters(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
int		 config_load_policy(struct config_ctx *ctx,
		    const config_setting_t *root, struct config *c);
void		 config_free_policy(struct config_policy *p);

#endif
