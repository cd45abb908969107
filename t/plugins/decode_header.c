/*
 * decode_header.c - test module for api->header_decode (ABI 1.1): at
 * on_header it decodes the value of the header field named by option
 * header= (default Subject) into a buffer of buflen= bytes (default 256),
 * and at eom adds "X-Decoded: VALUE" and "X-Decoded-Length: N" (what
 * header_decode returned).  Against a core older than 1.1 it does what a
 * module must do, check api->abi_minor, and adds "X-Decoded: unavailable".
 * Option out= renames X-Decoded (two instances in one chain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "frontmx_filter.h"

#define DECODE_BUF_MAX	1024

struct decode_inst {
	const struct fmx_api	*api;
	char			 header[64];
	char			 out[64];
	size_t			 buflen;
};

struct decode_msg {
	char	value[DECODE_BUF_MAX];
	long	len;
	int	seen;
};

static int
decode_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct decode_inst *d;
	size_t i;

	if ((d = calloc(1, sizeof *d)) == NULL)
		return -1;
	d->api = api;
	strcpy(d->header, "Subject");
	strcpy(d->out, "X-Decoded");
	d->buflen = 256;
	for (i = 0; i < noptions; i++) {
		const char *o = options[i];

		if (strncmp(o, "header=", 7) == 0 && strlen(o + 7) < sizeof d->header)
			strcpy(d->header, o + 7);
		else if (strncmp(o, "out=", 4) == 0 && strlen(o + 4) < sizeof d->out)
			strcpy(d->out, o + 4);
		else if (strncmp(o, "buflen=", 7) == 0 && atoi(o + 7) > 0 &&
		    atoi(o + 7) <= DECODE_BUF_MAX)
			d->buflen = (size_t)atoi(o + 7);
		else {
			free(d);
			return -1;
		}
	}
	*instance = d;
	return 0;
}

static void
decode_fini(void *instance)
{
	free(instance);
}

/* The version check every module makes before calling a 1.1 function. */
static int
decode_available(const struct fmx_api *api)
{
	return api->abi_minor >= 1 &&
	    api->struct_size >= offsetof(struct fmx_api, header_decode) +
	    sizeof api->header_decode && api->header_decode != NULL;
}

static enum fmx_verdict
decode_header(void *instance, struct fmx_ctx *ctx, const char *name,
    const char *value)
{
	struct decode_inst *d = instance;
	struct decode_msg *m;

	if (strcasecmp(name, d->header) != 0)
		return FMX_CONTINUE;
	if ((m = d->api->msg_data(ctx)) == NULL) {
		if ((m = calloc(1, sizeof *m)) == NULL)
			return FMX_TEMPFAIL;
		d->api->set_msg_data(ctx, m, free);
	}
	m->seen = 1;
	if (decode_available(d->api))
		m->len = d->api->header_decode(ctx, value, m->value, d->buflen);
	else {
		m->len = -2;
		strcpy(m->value, "unavailable");
	}
	return FMX_CONTINUE;
}

static enum fmx_verdict
decode_eom(void *instance, struct fmx_ctx *ctx)
{
	struct decode_inst *d = instance;
	struct decode_msg *m = d->api->msg_data(ctx);
	char n[32], name[80];

	if (m == NULL || !m->seen)
		return FMX_CONTINUE;
	d->api->add_header(ctx, d->out, m->value);
	snprintf(n, sizeof n, "%ld", m->len);
	snprintf(name, sizeof name, "%s-Length", d->out);
	d->api->add_header(ctx, name, n);
	return FMX_CONTINUE;
}

static const struct fmx_filter decode_filter = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "decode_header",
	.init = decode_init,
	.fini = decode_fini,
	.on_header = decode_header,
	.on_eom = decode_eom,
};

FMX_EXPORT const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &decode_filter;
}
