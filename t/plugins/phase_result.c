/*
 * phase_result.c - test module that answers in one early phase, for the
 * tests of per-domain policy on what connect, helo and mail find.
 * Options:
 *
 *	phase=connect|helo|mail	the hook that answers (the others continue)
 *	result=NAME		names this result (api->set_result), if set
 *	verdict=continue|tag|reject|tempfail|accept	what the hook returns
 *	reply=TEXT		a reply for the refusal (api->set_reply), if set
 *	helo=NAME		answer only when the HELO is NAME (helo phase)
 */
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

struct phase_result {
	const struct fmx_api	*api;
	char			 phase[16];
	char			 result[64];
	char			 reply[256];
	char			 helo[256];
	enum fmx_verdict	 verdict;
};

static const struct {
	const char		*name;
	enum fmx_verdict	 v;
} phase_verdicts[] = {
	{ "continue", FMX_CONTINUE }, { "tag", FMX_TAG }, { "reject", FMX_REJECT },
	{ "tempfail", FMX_TEMPFAIL }, { "accept", FMX_ACCEPT },
};

static int
phase_opt(const char *opt, const char *key, char *dst, size_t dstlen)
{
	size_t klen = strlen(key);

	if (strncmp(opt, key, klen) != 0 || opt[klen] != '=' ||
	    strlen(opt + klen + 1) >= dstlen)
		return 0;
	strcpy(dst, opt + klen + 1);
	return 1;
}

static int
phase_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct phase_result *p;
	char verdict[16] = "continue";
	size_t i;

	if ((p = calloc(1, sizeof *p)) == NULL)
		return -1;
	p->api = api;
	for (i = 0; i < noptions; i++)
		if (!phase_opt(options[i], "phase", p->phase, sizeof p->phase) &&
		    !phase_opt(options[i], "result", p->result, sizeof p->result) &&
		    !phase_opt(options[i], "reply", p->reply, sizeof p->reply) &&
		    !phase_opt(options[i], "helo", p->helo, sizeof p->helo) &&
		    !phase_opt(options[i], "verdict", verdict, sizeof verdict)) {
			free(p);
			return -1;
		}
	for (i = 0; i < sizeof phase_verdicts / sizeof phase_verdicts[0]; i++)
		if (strcmp(verdict, phase_verdicts[i].name) == 0)
			break;
	if (i == sizeof phase_verdicts / sizeof phase_verdicts[0]) {
		free(p);
		return -1;
	}
	p->verdict = phase_verdicts[i].v;
	*instance = p;
	return 0;
}

static void
phase_fini(void *instance)
{
	free(instance);
}

static enum fmx_verdict
phase_answer(struct phase_result *p, struct fmx_ctx *ctx, const char *phase)
{
	if (strcmp(p->phase, phase) != 0)
		return FMX_CONTINUE;
	if (p->result[0] != '\0')
		p->api->set_result(ctx, p->result, "phase_result test module");
	if (p->reply[0] != '\0')
		p->api->set_reply(ctx, p->reply);
	return p->verdict;
}

static enum fmx_verdict
phase_connect(void *inst, struct fmx_ctx *ctx)
{
	return phase_answer(inst, ctx, "connect");
}

static enum fmx_verdict
phase_helo(void *inst, struct fmx_ctx *ctx, const char *helo)
{
	struct phase_result *p = inst;

	if (p->helo[0] != '\0' && strcmp(p->helo, helo) != 0)
		return FMX_CONTINUE;
	return phase_answer(inst, ctx, "helo");
}

static enum fmx_verdict
phase_mail(void *inst, struct fmx_ctx *ctx, const char *from)
{
	(void)from;
	return phase_answer(inst, ctx, "mail");
}

static const struct fmx_filter phase_filter = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "phase_result",
	.init = phase_init,
	.fini = phase_fini,
	.on_connect = phase_connect,
	.on_helo = phase_helo,
	.on_mail = phase_mail,
};

FMX_EXPORT const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &phase_filter;
}
