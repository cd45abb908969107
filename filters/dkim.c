/*
 * dkim.c - built-in DKIM filter (placeholder: no hooks yet, every phase continues)
 */
#include "dkim.h"

static const struct fmx_filter dkim_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "dkim",
};

const struct fmx_filter *
dkim_filter(void)
{
	return &dkim_table;
}
