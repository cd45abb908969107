/*
 * prev_minor.c - test module built against the previous minor of the
 * filter ABI: t/plugins/abi-prev/frontmx_filter.h is frontmx_filter.h as
 * it was at 1.1, before the typed option getters and the FMX_GET_* names
 * of 1.2, and the Makefile builds this file against that copy only.  It
 * uses what 1.1 offers, string keys included, and must keep loading and
 * working on a newer core:
 *
 *	RCPT TO:<refuse@...>	550 5.7.1 with its own reply text
 *	eom			X-Prev-Minor: built 1.1 core 1.N client ADDR
 *				tag TAG subject SUBJECT
 * where TAG is its option "tag" read with get("filter.option.tag") and
 * SUBJECT the Subject it saw, decoded with the 1.1 header_decode().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

static const struct fmx_api *prev_api;

static void
prev_fini(void *inst)
{
	(void)inst;
}

static int
prev_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	(void)options;
	(void)noptions;
	*instance = (void *)&prev_api;
	/* Built against 1.1: header_decode is the newest call it makes. */
	return api->abi_minor >= 1 ? 0 : -1;
}

static enum fmx_verdict
prev_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	(void)inst;
	if (strncmp(rcpt, "refuse@", 7) != 0)
		return FMX_CONTINUE;
	prev_api->set_reply(ctx, "550 5.7.1 refused by a module built for 1.1");
	return FMX_REJECT;
}

static enum fmx_verdict
prev_header(void *inst, struct fmx_ctx *ctx, const char *name,
    const char *value)
{
	char *subject;

	(void)inst;
	if (strcmp(name, "Subject") != 0 || prev_api->msg_data(ctx) != NULL)
		return FMX_CONTINUE;
	if ((subject = malloc(64)) == NULL)
		return FMX_TEMPFAIL;
	if (prev_api->header_decode(ctx, value, subject, 64) < 0)
		snprintf(subject, 64, "?");
	prev_api->set_msg_data(ctx, subject, free);
	return FMX_CONTINUE;
}

static enum fmx_verdict
prev_eom(void *inst, struct fmx_ctx *ctx)
{
	const char *addr = prev_api->get(ctx, "client.addr");
	const char *tag = prev_api->get(ctx, "filter.option.tag");
	const char *subject = prev_api->msg_data(ctx);
	char v[256];

	(void)inst;
	snprintf(v, sizeof v, "built 1.%u core %u.%u client %s tag %s subject %s",
	    (unsigned)FMX_ABI_MINOR, (unsigned)prev_api->abi_major,
	    (unsigned)prev_api->abi_minor, addr != NULL ? addr : "-",
	    tag != NULL ? tag : "-", subject != NULL ? subject : "-");
	prev_api->add_header(ctx, "X-Prev-Minor", v);
	return FMX_CONTINUE;
}

static const struct fmx_filter prev_minor = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,		/* 1: this header's */
	.struct_size = sizeof(struct fmx_filter),
	.name = "prev_minor",
	.init = prev_init,
	.fini = prev_fini,
	.on_rcpt = prev_rcpt,
	.on_header = prev_header,
	.on_eom = prev_eom,
};

FMX_EXPORT const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	prev_api = api;
	return api->abi_major == FMX_ABI_MAJOR ? &prev_minor : NULL;
}
