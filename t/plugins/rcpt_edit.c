/*
 * rcpt_edit.c - test module that edits the envelope at end of message:
 * options addN=ADDR and delN=ADDR (add, add2, del1, ...) call api->add_rcpt()
 * and api->del_rcpt() from on_eom, so the core must send the envelope
 * again (RSET, MAIL, every final RCPT) before DATA.
 */
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

#define RCPT_EDIT_MAX	8

struct rcpt_edit {
	const struct fmx_api	*api;
	const char		*add[RCPT_EDIT_MAX];
	size_t			 nadd;
	const char		*del[RCPT_EDIT_MAX];
	size_t			 ndel;
};

static int
rcpt_edit_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct rcpt_edit *e;
	size_t i;

	if ((e = calloc(1, sizeof *e)) == NULL)
		return -1;
	e->api = api;
	for (i = 0; i < noptions; i++) {
		/* The options live as long as the instance (the configuration). */
		const char *v = strchr(options[i], '=');

		if (v != NULL && strncmp(options[i], "add", 3) == 0 &&
		    e->nadd < RCPT_EDIT_MAX)
			e->add[e->nadd++] = v + 1;
		else if (v != NULL && strncmp(options[i], "del", 3) == 0 &&
		    e->ndel < RCPT_EDIT_MAX)
			e->del[e->ndel++] = v + 1;
		else {
			free(e);
			return -1;
		}
	}
	*instance = e;
	return 0;
}

static void
rcpt_edit_fini(void *inst)
{
	free(inst);
}

static enum fmx_verdict
rcpt_edit_eom(void *inst, struct fmx_ctx *ctx)
{
	struct rcpt_edit *e = inst;
	size_t i;

	for (i = 0; i < e->ndel; i++)
		if (e->api->del_rcpt(ctx, e->del[i]) == -1)
			return FMX_TEMPFAIL;
	for (i = 0; i < e->nadd; i++)
		if (e->api->add_rcpt(ctx, e->add[i]) == -1)
			return FMX_TEMPFAIL;
	return FMX_CONTINUE;
}

static const struct fmx_filter rcpt_edit = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "rcpt_edit",
	.init = rcpt_edit_init,
	.fini = rcpt_edit_fini,
	.on_eom = rcpt_edit_eom,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &rcpt_edit;
}
