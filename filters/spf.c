/*
 * spf.c - built-in SPF filter (placeholder: no hooks yet, every phase continues)
 */
#include "spf.h"

static const struct fmx_filter spf_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "spf",
};

const struct fmx_filter *
spf_filter(void)
{
	return &spf_table;
}
