/*
 * no_entry.c - test module without the entry symbol: a misspelt entry
 * point.  (The other classic mistake, the right name left hidden by
 * -fvisibility=hidden, cannot happen: frontmx_filter.h declares
 * fmx_filter_entry with default visibility.)  The loader must say "no
 * fmx_filter_entry symbol".
 */
#include "frontmx_filter.h"

static const struct fmx_filter no_entry = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "no_entry",
};

/* Exported, but under the wrong name. */
__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_init(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_init(const struct fmx_api *api)
{
	(void)api;
	return &no_entry;
}
