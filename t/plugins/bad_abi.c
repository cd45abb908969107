/*
 * bad_abi.c - test module built for the next major filter ABI: the loader
 * must refuse it ("built for filter ABI 2.0 ...") without calling init.
 */
#include <stdlib.h>

#include "frontmx_filter.h"

static int
bad_abi_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	(void)api; (void)options; (void)noptions; (void)instance;
	abort();		/* a refused module is never called */
}

static const struct fmx_filter bad_abi = {
	.abi_major = FMX_ABI_MAJOR + 1,
	.abi_minor = 0,
	.struct_size = sizeof(struct fmx_filter),
	.name = "bad_abi",
	.init = bad_abi_init,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &bad_abi;
}
