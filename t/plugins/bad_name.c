/*
 * bad_name.c - test module with a name the configuration could not refer
 * to (upper case and a blank): the loader must refuse it.
 */
#include "frontmx_filter.h"

static const struct fmx_filter bad_name = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "Bad Name",
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &bad_name;
}
