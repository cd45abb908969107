/*
 * older_minor.c - test module as built against ABI 1.0, before
 * api->header_decode was appended in 1.1: its table says minor 0, and it
 * knows only the 1.0 api.  It must keep loading and working: at eom it
 * adds "X-Older-Minor: api 1.N" naming the core's minor it was given.
 */
#include <stdio.h>

#include "frontmx_filter.h"

static const struct fmx_api *older_api;

static enum fmx_verdict
older_eom(void *inst, struct fmx_ctx *ctx)
{
	char v[32];

	(void)inst;
	snprintf(v, sizeof v, "api %u.%u", (unsigned)older_api->abi_major,
	    (unsigned)older_api->abi_minor);
	older_api->add_header(ctx, "X-Older-Minor", v);
	return FMX_CONTINUE;
}

static const struct fmx_filter older_minor = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = 0,		/* built against 1.0 */
	.struct_size = sizeof(struct fmx_filter),	/* unchanged since 1.0 */
	.name = "older_minor",
	.on_eom = older_eom,
};

FMX_EXPORT const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	older_api = api;
	return &older_minor;
}
