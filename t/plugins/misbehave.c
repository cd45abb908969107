/*
 * misbehave.c - test module whose hooks break the rules, for the
 * black-box tests of the core.  Option mode= picks the misbehaviour:
 *
 *	bogus_verdict	on_mail returns (enum fmx_verdict)99
 *	crlf_header	on_eom adds a header whose value smuggles "Bcc:" after
 *			a CRLF; the core must refuse it (-1).  The module then
 *			adds "X-Misbehave: refused" (or "accepted" if the core
 *			took it) and returns FMX_CONTINUE
 *	bogus_reply	on_rcpt sets "250 ok", then a reply with an embedded
 *			CRLF + "MAIL FROM:<x>"; both must be refused (logged
 *			through api->log) and the core must use its default
 *			reply for the FMX_REJECT returned
 *	pending_forever	on_mail returns FMX_PENDING and never resumes
 *	error_init	init returns -1
 *	sleep		on_eom sleeps seconds=N (default 30) so the core's
 *			timeout fires.  Only in misbehave_blocking.so (this
 *			file built with FMX_FLAG_BLOCKING): misbehave.so
 *			refuses it at init, since it would stall the event
 *			loop rather than test the timeout.
 */
#define _POSIX_C_SOURCE	200809L	/* nanosleep() under -std=c99 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "frontmx_filter.h"

#ifndef MISBEHAVE_NAME
#define MISBEHAVE_NAME	"misbehave"
#define MISBEHAVE_FLAGS	0
#endif

enum misbehave_mode {
	MODE_BOGUS_VERDICT = 0,
	MODE_CRLF_HEADER,
	MODE_BOGUS_REPLY,
	MODE_SLEEP,
	MODE_PENDING_FOREVER,
	MODE_ERROR_INIT,
	MODE_COUNT		/* must be last */
};

static const char *const misbehave_modes[MODE_COUNT] = {
	"bogus_verdict", "crlf_header", "bogus_reply", "sleep",
	"pending_forever", "error_init",
};

struct misbehave {
	const struct fmx_api	*api;
	enum misbehave_mode	 mode;
	unsigned		 seconds;
};

static int
misbehave_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct misbehave *m;
	size_t i;
	int mode = -1;

	for (i = 0; i < noptions; i++) {
		if (strncmp(options[i], "mode=", 5) == 0) {
			for (mode = 0; mode < MODE_COUNT; mode++)
				if (strcmp(options[i] + 5, misbehave_modes[mode]) == 0)
					break;
			if (mode == MODE_COUNT)
				return -1;
		} else if (strncmp(options[i], "seconds=", 8) != 0)
			return -1;
	}
	if (mode == -1 || mode == MODE_ERROR_INIT)
		return -1;
	if (mode == MODE_SLEEP && !(MISBEHAVE_FLAGS & FMX_FLAG_BLOCKING))
		return -1;
	if ((m = calloc(1, sizeof *m)) == NULL)
		return -1;
	m->api = api;
	m->mode = (enum misbehave_mode)mode;
	m->seconds = 30;
	for (i = 0; i < noptions; i++)
		if (strncmp(options[i], "seconds=", 8) == 0)
			m->seconds = (unsigned)strtoul(options[i] + 8, NULL, 10);
	*instance = m;
	return 0;
}

static void
misbehave_fini(void *inst)
{
	free(inst);
}

static enum fmx_verdict
misbehave_mail(void *inst, struct fmx_ctx *ctx, const char *from)
{
	struct misbehave *m = inst;

	(void)ctx; (void)from;
	if (m->mode == MODE_BOGUS_VERDICT)
		return (enum fmx_verdict)99;
	if (m->mode == MODE_PENDING_FOREVER)
		return FMX_PENDING;
	return FMX_CONTINUE;
}

static enum fmx_verdict
misbehave_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	struct misbehave *m = inst;
	int r1, r2;

	(void)rcpt;
	if (m->mode != MODE_BOGUS_REPLY)
		return FMX_CONTINUE;
	r1 = m->api->set_reply(ctx, "250 ok");
	r2 = m->api->set_reply(ctx, "550 5.7.1 a\r\nMAIL FROM:<x>");
	m->api->log(ctx, FMX_LOG_INFO, "misbehave set_reply 2xx=%d crlf=%d", r1, r2);
	return FMX_REJECT;
}

static enum fmx_verdict
misbehave_eom(void *inst, struct fmx_ctx *ctx)
{
	struct misbehave *m = inst;
	struct timespec ts;
	int r;

	switch (m->mode) {
	case MODE_CRLF_HEADER:
		r = m->api->add_header(ctx, "X-Evil", "x\r\nBcc: evil@x");
		m->api->add_header(ctx, "X-Misbehave", r == -1 ? "refused" : "accepted");
		break;
	case MODE_SLEEP:
		ts.tv_sec = (time_t)m->seconds;
		ts.tv_nsec = 0;
		while (nanosleep(&ts, &ts) == -1)
			;	/* EINTR: sleep the rest */
		break;
	default:
		break;
	}
	return FMX_CONTINUE;
}

static const struct fmx_filter misbehave = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = MISBEHAVE_NAME,
	.flags = MISBEHAVE_FLAGS,
	.init = misbehave_init,
	.fini = misbehave_fini,
	.on_mail = misbehave_mail,
	.on_rcpt = misbehave_rcpt,
	.on_eom = misbehave_eom,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &misbehave;
}
