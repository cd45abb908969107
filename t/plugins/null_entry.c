/*
 * null_entry.c - test module whose entry point declines to load (as a
 * module does when api->abi_major is not the one it was built for).
 */
#include "frontmx_filter.h"

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return 0;
}
