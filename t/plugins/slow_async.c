/*
 * slow_async.c - test module whose asynchronous work outlives the
 * command that started it, for t/smtp/72-async-after-gone.t.
 *
 *	on_mail	 allocates the message's state (api->set_msg_data, freed by
 *		 the core at the end of the message: logs "slow_async freed
 *		 tag=N") and starts one lookup without waiting for it
 *		 (FMX_CONTINUE): mode=dns queries the TXT record of the
 *		 sender's domain, mode=timer (ms=N, default 300) waits.  The
 *		 answer means REJECT if it contains "reject" (the TXT record;
 *		 for the timer, the sender address), else CONTINUE.
 *	on_rcpt	 the answer if it came, else FMX_PENDING: the callback then
 *		 resumes with it (double=1: and resumes a second time, with
 *		 the opposite verdict, which the core must refuse).
 *	eom=1	 on_eom too starts a timer (ms=) and pends; the timer
 *		 resumes with REJECT if the sender contains "eomfail", else
 *		 CONTINUE.
 *
 * The callbacks get the message state as their argument: the API says
 * they never run after the end of that message, so a callback that ran
 * late would read freed memory (an ASan report) and could answer for the
 * next message.  Every step is logged ("slow_async ... tag=N", N counts
 * the on_mail calls of the process) so that the test waits on log lines.
 */
#define _POSIX_C_SOURCE	200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontmx_filter.h"

enum slow_async_mode {
	SLOW_DNS = 0,
	SLOW_TIMER
};

struct slow_async {
	const struct fmx_api	*api;
	enum slow_async_mode	 mode;
	unsigned		 ms;
	int			 twice;
	int			 eom;
	unsigned		 tags;		/* on_mail calls so far (atomic) */
};

struct slow_async_msg {
	struct slow_async	*sa;
	unsigned		 tag;
	int			 answered;
	int			 waiting;
	enum fmx_verdict	 verdict;
	char			 from[256];
};

static int
slow_async_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct slow_async *sa;
	size_t i;

	if ((sa = calloc(1, sizeof *sa)) == NULL)
		return -1;
	sa->api = api;
	sa->ms = 300;
	for (i = 0; i < noptions; i++) {
		if (strcmp(options[i], "mode=dns") == 0)
			sa->mode = SLOW_DNS;
		else if (strcmp(options[i], "mode=timer") == 0)
			sa->mode = SLOW_TIMER;
		else if (strncmp(options[i], "ms=", 3) == 0)
			sa->ms = (unsigned)strtoul(options[i] + 3, NULL, 10);
		else if (strcmp(options[i], "double=1") == 0)
			sa->twice = 1;
		else if (strcmp(options[i], "eom=1") == 0)
			sa->eom = 1;
		else {
			free(sa);
			return -1;
		}
	}
	*instance = sa;
	return 0;
}

static void
slow_async_fini(void *inst)
{
	free(inst);
}

static const char *
slow_async_verdict_name(enum fmx_verdict v)
{
	return v == FMX_REJECT ? "reject" : "continue";
}

static void
slow_async_msg_free(void *arg)
{
	struct slow_async_msg *m = arg;

	m->sa->api->log(NULL, FMX_LOG_INFO, "slow_async freed tag=%u", m->tag);
	free(m);
}

/*
 * The answer for the message m: keep it, or hand it to the waiting RCPT.
 * The session goes on only after this callback returned (the API says
 * so), even with an RSET pipelined behind the RCPT: m is still the
 * message's after resume(), and is read (and logged) from there, which
 * ASan would report if the RSET freed it inside resume().
 */
static void
slow_async_answer(struct fmx_ctx *ctx, struct slow_async_msg *m,
    enum fmx_verdict v)
{
	const struct fmx_api *api = m->sa->api;
	int r1 = 0, r2 = 0;

	api->log(ctx, FMX_LOG_INFO, "slow_async answer tag=%u from=%s "
	    "verdict=%s", m->tag, m->from, slow_async_verdict_name(v));
	m->answered = 1;
	m->verdict = v;
	if (!m->waiting)
		return;
	m->waiting = 0;
	r1 = api->resume(ctx, v);
	if (m->sa->twice)
		r2 = api->resume(ctx, v == FMX_REJECT ? FMX_CONTINUE : FMX_REJECT);
	/* m after resume(): still this message's (msg_data agrees). */
	api->log(ctx, FMX_LOG_INFO, "slow_async resumed tag=%u resume=%d again=%d "
	    "from=%s same=%d", m->tag, r1, r2, m->from, api->msg_data(ctx) == m);
}

static void
slow_async_dns_cb(struct fmx_ctx *ctx, void *arg, int rcode,
    const unsigned char *answer, size_t len)
{
	static const char word[] = "reject";
	enum fmx_verdict v = FMX_CONTINUE;
	size_t i;

	(void)rcode;
	for (i = 0; answer != NULL && i + sizeof word - 1 <= len; i++)
		if (memcmp(answer + i, word, sizeof word - 1) == 0) {
			v = FMX_REJECT;
			break;
		}
	slow_async_answer(ctx, arg, v);
}

static void
slow_async_timer_cb(struct fmx_ctx *ctx, void *arg)
{
	struct slow_async_msg *m = arg;

	slow_async_answer(ctx, m, strstr(m->from, "reject") != NULL ?
	    FMX_REJECT : FMX_CONTINUE);
}

static enum fmx_verdict
slow_async_mail(void *inst, struct fmx_ctx *ctx, const char *from)
{
	struct slow_async *sa = inst;
	struct slow_async_msg *m;
	const char *at;
	int r;

	if ((m = calloc(1, sizeof *m)) == NULL)
		return FMX_TEMPFAIL;
	m->sa = sa;
	m->tag = __atomic_add_fetch(&sa->tags, 1, __ATOMIC_RELAXED);
	snprintf(m->from, sizeof m->from, "%s", from);
	sa->api->set_msg_data(ctx, m, slow_async_msg_free);
	if (sa->mode == SLOW_DNS) {
		at = strrchr(from, '@');
		r = sa->api->dns_query(ctx, at != NULL ? at + 1 : "null.invalid",
		    16, slow_async_dns_cb, m);
	} else
		r = sa->api->timer(ctx, sa->ms, slow_async_timer_cb, m);
	sa->api->log(ctx, FMX_LOG_INFO, "slow_async start tag=%u from=%s r=%d",
	    m->tag, m->from, r);
	return r == 0 ? FMX_CONTINUE : FMX_TEMPFAIL;
}

static enum fmx_verdict
slow_async_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	struct slow_async *sa = inst;
	struct slow_async_msg *m = sa->api->msg_data(ctx);

	if (m == NULL)
		return FMX_CONTINUE;
	if (m->answered) {
		sa->api->log(ctx, FMX_LOG_INFO, "slow_async rcpt tag=%u to=%s "
		    "answered verdict=%s", m->tag, rcpt,
		    slow_async_verdict_name(m->verdict));
		return m->verdict;
	}
	m->waiting = 1;
	sa->api->log(ctx, FMX_LOG_INFO, "slow_async rcpt tag=%u to=%s pending",
	    m->tag, rcpt);
	return FMX_PENDING;
}

static void
slow_async_eom_cb(struct fmx_ctx *ctx, void *arg)
{
	struct slow_async_msg *m = arg;
	const struct fmx_api *api = m->sa->api;
	enum fmx_verdict v;
	int r;

	v = strstr(m->from, "eomfail") != NULL ? FMX_REJECT : FMX_CONTINUE;
	api->log(ctx, FMX_LOG_INFO, "slow_async eom answer tag=%u verdict=%s",
	    m->tag, slow_async_verdict_name(v));
	/* Ends the message, but only once this callback returned: m lives. */
	r = api->resume(ctx, v);
	api->log(ctx, FMX_LOG_INFO, "slow_async eom resumed tag=%u resume=%d "
	    "from=%s", m->tag, r, m->from);
}

static enum fmx_verdict
slow_async_eom(void *inst, struct fmx_ctx *ctx)
{
	struct slow_async *sa = inst;
	struct slow_async_msg *m = sa->api->msg_data(ctx);

	if (!sa->eom || m == NULL)
		return FMX_CONTINUE;
	if (sa->api->timer(ctx, sa->ms, slow_async_eom_cb, m) == -1)
		return FMX_TEMPFAIL;
	sa->api->log(ctx, FMX_LOG_INFO, "slow_async eom pending tag=%u", m->tag);
	return FMX_PENDING;
}

static const struct fmx_filter slow_async = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "slow_async",
	.init = slow_async_init,
	.fini = slow_async_fini,
	.on_mail = slow_async_mail,
	.on_rcpt = slow_async_rcpt,
	.on_eom = slow_async_eom,
};

FMX_EXPORT const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &slow_async;
}
