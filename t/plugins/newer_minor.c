/*
 * newer_minor.c - test module built against a later minor of the ABI:
 * its table has a member this frontmx does not know, which the loader
 * must ignore (and not copy) while loading the module.
 */
#include "frontmx_filter.h"

static enum fmx_verdict
newer_mail(void *inst, struct fmx_ctx *ctx, const char *from)
{
	(void)inst; (void)ctx; (void)from;
	return FMX_TEMPFAIL;
}

static void
newer_future(void)
{
}

/* What a 1.(N+1) struct fmx_filter could look like: one appended hook. */
static const struct {
	struct fmx_filter	 v1;
	void			(*on_future)(void);
} newer_minor = {
	.v1 = {
		.abi_major = FMX_ABI_MAJOR,
		.abi_minor = FMX_ABI_MINOR + 1,
		.struct_size = sizeof newer_minor,
		.name = "newer_minor",
		.on_mail = newer_mail,
	},
	.on_future = newer_future,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &newer_minor.v1;
}
