/*
 * dmarc.c - built-in DMARC filter (placeholder: no hooks yet, every phase continues)
 */
#include "dmarc.h"

static const struct fmx_filter dmarc_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "dmarc",
};

const struct fmx_filter *
dmarc_filter(void)
{
	return &dmarc_table;
}
