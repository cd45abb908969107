/*
 * rcpt_allow.c - example frontmx filter module: a recipient allow-list
 *
 * Options (at least one):
 *	allow         = "alice@example.com,bob@example.com"	addresses
 *	allow_domains = "example.org,.example.net"	domains (".d": subdomains)
 * Other recipients get "550 5.1.1" and the result "reject"; postmaster is
 * always allowed (RFC 5321 4.5.1).  Each message gets the header
 * "X-Rcpt-Allow: checked N recipients".  Comparisons ignore case.  The
 * options are read with the typed getters of filter ABI 1.2, which also
 * report a misspelt option or a bad value as a configuration error.
 *
 * cc -shared -fPIC -fvisibility=hidden -I filters -o rcpt_allow.so \
 *     filters/examples/rcpt_allow.c
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

struct allow {
	const struct fmx_api	*api;
	char			**addrs;	/* NULL-terminated, from api->option_list() */
	char			**domains;
};

/* Is s[0..n), in any case, entry, or one of the entries of list? */
static int
same(const char *entry, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n && tolower((unsigned char)entry[i]) ==
	    tolower((unsigned char)s[i]); i++)
		;
	return i == n && entry[n] == '\0';
}

static int
in_list(char *const *list, const char *s, size_t n)
{
	for (; list != NULL && *list != NULL; list++)
		if (same(*list, s, n))
			return 1;
	return 0;
}

static void
allow_fini(void *inst)
{
	struct allow *a = inst;

	free(a->addrs);		/* option_list(): one block each */
	free(a->domains);
	free(a);
}

static int
allow_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	static const char *const known[] = { "allow", "allow_domains", NULL };
	struct allow *a;

	if ((a = calloc(1, sizeof *a)) == NULL)
		return -1;
	a->api = api;
	/* A misspelt option must stop the start, not the mail: option_check. */
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_list(options, noptions, "allow", &a->addrs, NULL) == -1 ||
	    api->option_list(options, noptions, "allow_domains", &a->domains,
	    NULL) == -1)
		goto fail;
	if ((a->addrs == NULL || a->addrs[0] == NULL) &&
	    (a->domains == NULL || a->domains[0] == NULL)) {
		api->log(NULL, FMX_LOG_WARN, "rcpt_allow: set allow or "
		    "allow_domains: an empty list would refuse every recipient");
		goto fail;
	}
	*instance = a;
	return 0;
fail:
	allow_fini(a);
	return -1;
}

static enum fmx_verdict
allow_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	struct allow *a = inst;
	const struct fmx_api *api = a->api;
	const char *at = strrchr(rcpt, '@'), *d;
	size_t n = strlen(rcpt), local = at != NULL ? (size_t)(at - rcpt) : n;
	unsigned long *count;
	char reply[600];

	/* Per-message data: the core frees it (with free()) after eom or abort. */
	if ((count = api->msg_data(ctx)) == NULL) {
		if ((count = calloc(1, sizeof *count)) == NULL)
			return FMX_TEMPFAIL;
		api->set_msg_data(ctx, count, free);
	}
	(*count)++;

	if (same("postmaster", rcpt, local) || in_list(a->addrs, rcpt, n))
		return FMX_CONTINUE;
	/* "x@a.b.c" tries a.b.c, then .b.c and .c (entries that start with a dot) */
	for (d = at != NULL ? at + 1 : NULL; d != NULL && *d != '\0';
	    d = strchr(d + 1, '.'))
		if (in_list(a->domains, d, strlen(d)))
			return FMX_CONTINUE;

	snprintf(reply, sizeof reply,
	    "550 5.1.1 <%s>: recipient not allowed here", rcpt);
	api->set_reply(ctx, reply);
	api->set_result(ctx, "reject", "not on allow-list");
	return FMX_REJECT;
}

static enum fmx_verdict
allow_eom(void *inst, struct fmx_ctx *ctx)
{
	const struct fmx_api *api = ((struct allow *)inst)->api;
	unsigned long *count = api->msg_data(ctx);
	char value[64];

	snprintf(value, sizeof value, "checked %lu recipients",
	    count != NULL ? *count : 0UL);
	api->add_header(ctx, "X-Rcpt-Allow", value);
	return FMX_CONTINUE;
}

static const struct fmx_filter rcpt_allow = {
	.abi_major = FMX_ABI_MAJOR, .abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "rcpt_allow",
	.init = allow_init, .fini = allow_fini,
	.on_rcpt = allow_rcpt, .on_eom = allow_eom,
};

/*
 * The one exported symbol.  Declining an api of another major, or one
 * older than 1.2 (no option_*), keeps us safe.
 */
__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	return api->abi_major == FMX_ABI_MAJOR && api->abi_minor >= 2 ?
	    &rcpt_allow : NULL;
}
