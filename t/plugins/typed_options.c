/*
 * typed_options.c - test module for the typed option getters of filter
 * ABI 1.2: its options are read with api->option_check() (known keys:
 * flag, count, name, items), option_bool(flag), option_uint(count, 1 to
 * 10), option_string(name) and option_list(items); a bad one fails
 * init() and the core's error names it.  At eom it adds what it read:
 *	X-Typed-Options: flag=F count=N name=S items=A|B|C (K) client=ADDR
 *	    helo=NAME option.name=S
 * with the defaults flag=0 count=5 name=- and no items; the last three
 * come from api->get() with the FMX_GET_* names of 1.2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

struct typed {
	const struct fmx_api	*api;
	int			 flag;
	unsigned long long	 count;
	const char		*name;		/* valid in init only: copied */
	char			 namebuf[64];
	char			**items;
	size_t			 nitems;
};

static void
typed_fini(void *inst)
{
	struct typed *t = inst;

	free(t->items);
	free(t);
}

static int
typed_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	static const char *const known[] = { "flag", "count", "name", "items", NULL };
	struct typed *t;

	if ((t = calloc(1, sizeof *t)) == NULL)
		return -1;
	t->api = api;
	t->count = 5;
	t->name = "-";
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_bool(options, noptions, "flag", &t->flag) == -1 ||
	    api->option_uint(options, noptions, "count", 1, 10, &t->count) == -1 ||
	    api->option_string(options, noptions, "name", &t->name) == -1 ||
	    api->option_list(options, noptions, "items", &t->items, &t->nitems) == -1) {
		typed_fini(t);
		return -1;
	}
	snprintf(t->namebuf, sizeof t->namebuf, "%s", t->name);
	t->name = NULL;
	*instance = t;
	return 0;
}

static enum fmx_verdict
typed_eom(void *inst, struct fmx_ctx *ctx)
{
	struct typed *t = inst;
	const char *addr = t->api->get(ctx, FMX_GET_CLIENT_ADDR);
	const char *helo = t->api->get(ctx, FMX_GET_HELO);
	const char *name = t->api->get(ctx, FMX_GET_OPTION("name"));
	char v[512], items[256] = "";
	size_t i, used = 0;

	for (i = 0; i < t->nitems && used < sizeof items; i++)
		used += (size_t)snprintf(items + used, sizeof items - used, "%s%s",
		    i > 0 ? "|" : "", t->items[i]);
	snprintf(v, sizeof v, "flag=%d count=%llu name=%s items=%s (%zu) client=%s "
	    "helo=%s option.name=%s", t->flag, t->count, t->namebuf, items,
	    t->nitems, addr != NULL ? addr : "-", helo != NULL ? helo : "-",
	    name != NULL ? name : "-");
	t->api->add_header(ctx, "X-Typed-Options", v);
	return FMX_CONTINUE;
}

static const struct fmx_filter typed_options = {
	.abi_major = FMX_ABI_MAJOR, .abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "typed_options",
	.init = typed_init, .fini = typed_fini,
	.on_eom = typed_eom,
};

FMX_EXPORT const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	/* The getters are new in 1.2: decline an older core. */
	return api->abi_major == FMX_ABI_MAJOR && api->abi_minor >= 2 ?
	    &typed_options : NULL;
}
