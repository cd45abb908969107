/*
 * facts_header.c - test module that shows at end of message what the
 * core told it, as header fields the test reads back: X-Facts (client
 * address, port and name, HELO, TLS, AUTH identity, sender, recipient
 * count, policy; each as api->get() returned it) and X-Queue-Id.  With
 * option edit=1 it also inserts X-Inserted below the first field and
 * changes the first X-Change field to "changed" (header edit indexes),
 * and replaces the body with "replaced body" when the sender's address
 * contains "replacebody".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

struct facts_header {
	const struct fmx_api	*api;
	int			 edit;
};

static int
facts_header_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct facts_header *f;
	size_t i;

	if ((f = calloc(1, sizeof *f)) == NULL)
		return -1;
	f->api = api;
	for (i = 0; i < noptions; i++)
		if (strcmp(options[i], "edit=1") == 0)
			f->edit = 1;
	*instance = f;
	return 0;
}

static void
facts_header_fini(void *inst)
{
	free(inst);
}

static enum fmx_verdict
facts_header_eom(void *inst, struct fmx_ctx *ctx)
{
	static const struct {
		const char	*label;
		const char	*key;
	} keys[] = {
		{ "addr", FMX_GET_CLIENT_ADDR }, { "port", FMX_GET_CLIENT_PORT },
		{ "name", FMX_GET_CLIENT_NAME }, { "helo", FMX_GET_HELO },
		{ "tls", FMX_GET_TLS }, { "auth", FMX_GET_AUTH },
		{ "from", FMX_GET_MAIL_FROM }, { "rcpts", FMX_GET_RCPT_COUNT },
		{ "policy", FMX_GET_POLICY },
	};
	struct facts_header *f = inst;
	const char *q;
	char v[900];
	size_t i, used = 0;

	/* "label=value" each; TLS in brackets, its value has a space. */
	for (i = 0; i < sizeof keys / sizeof keys[0] && used < sizeof v; i++) {
		const char *x = f->api->get(ctx, keys[i].key);
		int tls = strcmp(keys[i].label, "tls") == 0;
		int n = snprintf(v + used, sizeof v - used, "%s%s=%s%s%s",
		    i ? " " : "", keys[i].label, tls ? "[" : "",
		    x != NULL ? x : "-", tls ? "]" : "");

		if (n < 0)
			return FMX_TEMPFAIL;
		used += (size_t)n;
	}
	q = f->api->get(ctx, FMX_GET_QUEUE_ID);
	if (f->api->add_header(ctx, "X-Facts", v) == -1 ||
	    f->api->add_header(ctx, "X-Queue-Id", q != NULL ? q : "-") == -1)
		return FMX_TEMPFAIL;
	if (f->edit && (f->api->insert_header(ctx, 1, "X-Inserted", "yes") == -1 ||
	    f->api->change_header(ctx, "X-Change", 1, "changed") == -1))
		return FMX_TEMPFAIL;
	q = f->api->get(ctx, FMX_GET_MAIL_FROM);
	if (f->edit && q != NULL && strstr(q, "replacebody") != NULL &&
	    f->api->replace_body(ctx, "replaced body\r\n", 15) == -1)
		return FMX_TEMPFAIL;
	return FMX_CONTINUE;
}

static const struct fmx_filter facts_header = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "facts_header",
	.init = facts_header_init,
	.fini = facts_header_fini,
	.on_eom = facts_header_eom,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &facts_header;
}
