/*
 * small_struct.c - test module whose table is smaller than struct
 * fmx_filter of ABI 1.0 (as if built against a header without
 * reserved[]): the loader must refuse it before reading past its end.
 */
#include <stddef.h>
#include <stdlib.h>

#include "frontmx_filter.h"

static int
small_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	(void)api; (void)options; (void)noptions; (void)instance;
	abort();		/* a refused module is never called */
}

static const struct fmx_filter small_struct = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = offsetof(struct fmx_filter, reserved),
	.name = "small_struct",
	.init = small_init,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &small_struct;
}
