/*
 * misbehave.c - test module whose hooks break the rules, for the
 * black-box tests of the core.  Option mode= picks the misbehaviour,
 * phase= (connect, helo, mail, rcpt, data, eom) the hook that does it
 * where a mode says "the hook":
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
 *	pending_forever	the hook (default mail) returns FMX_PENDING and never
 *			resumes
 *	resume_abort	the hook (default mail) returns FMX_PENDING; on_abort
 *			(the client went away or reset) then calls resume():
 *			too late, the core must ignore it (-1)
 *	resume_double	on_mail returns FMX_PENDING and a timer resumes twice,
 *			CONTINUE then REJECT; on_rcpt resumes twice inside the
 *			hook, then returns FMX_PENDING.  The first answer counts,
 *			the second is refused (-1)
 *	resume_late	the first on_mail of the process keeps its ctx and
 *			returns FMX_PENDING forever; every later hook call (in
 *			any session) first resumes that stale ctx, which the
 *			core must refuse (-1); later on_mail calls continue
 *	resume_thread	the hook (default mail) returns FMX_PENDING and starts
 *			a thread that waits for on_close, then resumes the
 *			closed session's ctx: refused (-1), never a crash
 *	resume_thread_live  the same thread resumes at once, while the
 *			session still waits: a call from a foreign thread,
 *			refused (-1); the filter then times out
 *	error_init	init returns -1
 *	sleep		the hook (default eom) sleeps seconds=N (default 30)
 *			so the core's timeout fires, then uses the api (get,
 *			add_header, log) as a module that does not know it
 *			was given up on would.  Only in misbehave_blocking.so
 *			(this file built with FMX_FLAG_BLOCKING): misbehave.so
 *			refuses it at init, since it would stall the event
 *			loop rather than test the timeout.
 *
 * Every api call whose result a test checks is logged through api->log
 * ("misbehave ..."), or with a NULL ctx when the ctx is stale.
 */
#define _POSIX_C_SOURCE	200809L	/* nanosleep(), pthreads under -std=c99 */
#include <pthread.h>
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
	MODE_RESUME_ABORT,
	MODE_RESUME_DOUBLE,
	MODE_RESUME_LATE,
	MODE_RESUME_THREAD,
	MODE_RESUME_THREAD_LIVE,
	MODE_COUNT		/* must be last */
};

static const char *const misbehave_modes[MODE_COUNT] = {
	"bogus_verdict", "crlf_header", "bogus_reply", "sleep",
	"pending_forever", "error_init", "resume_abort", "resume_double",
	"resume_late", "resume_thread", "resume_thread_live",
};

enum misbehave_phase {
	PH_CONNECT = 0,
	PH_HELO,
	PH_MAIL,
	PH_RCPT,
	PH_DATA,
	PH_EOM,
	PH_COUNT		/* must be last */
};

static const char *const misbehave_phases[PH_COUNT] = {
	"connect", "helo", "mail", "rcpt", "data", "eom",
};

struct misbehave {
	const struct fmx_api	*api;
	enum misbehave_mode	 mode;
	enum misbehave_phase	 phase;
	unsigned		 seconds;
	pthread_mutex_t		 lock;
	struct fmx_ctx		*stale;		/* resume_late: a ctx kept past its session */
	int			 stale_used;
};

/* resume_thread*: one waiting thread per pending call. */
struct misbehave_waiter {
	struct misbehave	*m;
	struct fmx_ctx		*ctx;
	int			 closed;
	int			 live;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
};

static void
misbehave_sleep(unsigned secs, long nsec)
{
	struct timespec ts;

	ts.tv_sec = (time_t)secs;
	ts.tv_nsec = nsec;
	while (nanosleep(&ts, &ts) == -1)
		;	/* EINTR: sleep the rest */
}

static int
misbehave_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct misbehave *m;
	size_t i;
	int mode = -1, phase = -1, p;

	for (i = 0; i < noptions; i++) {
		if (strncmp(options[i], "mode=", 5) == 0) {
			for (mode = 0; mode < MODE_COUNT; mode++)
				if (strcmp(options[i] + 5, misbehave_modes[mode]) == 0)
					break;
			if (mode == MODE_COUNT)
				return -1;
		} else if (strncmp(options[i], "phase=", 6) == 0) {
			for (p = 0; p < PH_COUNT; p++)
				if (strcmp(options[i] + 6, misbehave_phases[p]) == 0)
					break;
			if (p == PH_COUNT)
				return -1;
			phase = p;
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
	m->phase = phase >= 0 ? (enum misbehave_phase)phase :
	    mode == MODE_SLEEP ? PH_EOM : PH_MAIL;
	m->seconds = 30;
	pthread_mutex_init(&m->lock, NULL);
	for (i = 0; i < noptions; i++)
		if (strncmp(options[i], "seconds=", 8) == 0)
			m->seconds = (unsigned)strtoul(options[i] + 8, NULL, 10);
	*instance = m;
	return 0;
}

static void
misbehave_fini(void *inst)
{
	struct misbehave *m = inst;

	pthread_mutex_destroy(&m->lock);
	free(m);
}

/* resume_late: resume the ctx of a session that is long gone. */
static void
misbehave_late(struct misbehave *m, struct fmx_ctx *ctx)
{
	struct fmx_ctx *stale;
	int r;

	pthread_mutex_lock(&m->lock);
	stale = m->stale != ctx ? m->stale : NULL;
	pthread_mutex_unlock(&m->lock);
	if (stale == NULL)
		return;
	r = m->api->resume(stale, FMX_CONTINUE);
	m->api->log(ctx, FMX_LOG_INFO, "misbehave late resume=%d", r);
}

static void *
misbehave_thread(void *arg)
{
	struct misbehave_waiter *w = arg;
	int r;

	pthread_mutex_lock(&w->lock);
	while (!w->live && !w->closed)
		pthread_cond_wait(&w->cond, &w->lock);
	pthread_mutex_unlock(&w->lock);
	if (!w->live)
		misbehave_sleep(0, 20 * 1000 * 1000);	/* well after the close */
	r = w->m->api->resume(w->ctx, FMX_CONTINUE);
	/* A NULL ctx: the line must not depend on the session either. */
	w->m->api->log(NULL, FMX_LOG_INFO, "misbehave thread resume=%d (%s)", r,
	    w->live ? "live" : "after close");
	/* Live, or handed over by the core's free function: ours to free. */
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	return NULL;
}

static void
misbehave_waiter_free(void *arg)
{
	struct misbehave_waiter *w = arg;

	/* The session is closing: wake the thread, which frees w. */
	pthread_mutex_lock(&w->lock);
	w->closed = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static enum fmx_verdict
misbehave_start_thread(struct misbehave *m, struct fmx_ctx *ctx, int live)
{
	struct misbehave_waiter *w;
	pthread_t t;

	if ((w = calloc(1, sizeof *w)) == NULL)
		return FMX_TEMPFAIL;
	w->m = m;
	w->ctx = ctx;
	w->live = live;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	/* Freed (handed to the thread) when the core ends the session. */
	if (!live)
		m->api->set_conn_data(ctx, w, misbehave_waiter_free);
	if (pthread_create(&t, NULL, misbehave_thread, w) != 0) {
		if (!live)
			m->api->set_conn_data(ctx, NULL, NULL);
		free(w);
		return FMX_TEMPFAIL;
	}
	pthread_detach(t);
	return FMX_PENDING;
}

static void
misbehave_double_cb(struct fmx_ctx *ctx, void *arg)
{
	struct misbehave *m = arg;
	int r1, r2;

	r1 = m->api->resume(ctx, FMX_CONTINUE);
	r2 = m->api->resume(ctx, FMX_REJECT);
	/* The ctx lives on (the session goes on with the first answer). */
	m->api->log(ctx, FMX_LOG_INFO, "misbehave timer resume=%d again=%d", r1, r2);
}

/* The pending-style modes, for whichever hook phase= names. */
static enum fmx_verdict
misbehave_pending(struct misbehave *m, struct fmx_ctx *ctx,
    enum misbehave_phase phase, const char *arg)
{
	int r1, r2;

	if (m->mode == MODE_RESUME_LATE) {
		misbehave_late(m, ctx);
		if (phase != PH_MAIL)
			return FMX_CONTINUE;
		pthread_mutex_lock(&m->lock);
		if (m->stale_used) {
			pthread_mutex_unlock(&m->lock);
			return FMX_CONTINUE;
		}
		m->stale = ctx;
		m->stale_used = 1;
		pthread_mutex_unlock(&m->lock);
		return FMX_PENDING;
	}
	if (m->mode == MODE_RESUME_DOUBLE) {
		if (phase == PH_MAIL) {
			if (m->api->timer(ctx, 10, misbehave_double_cb, m) == -1)
				return FMX_TEMPFAIL;
			return FMX_PENDING;
		}
		if (phase == PH_RCPT) {
			r1 = m->api->resume(ctx, FMX_CONTINUE);
			r2 = m->api->resume(ctx, FMX_REJECT);
			m->api->log(ctx, FMX_LOG_INFO,
			    "misbehave in-hook resume=%d again=%d", r1, r2);
			return FMX_PENDING;
		}
		return FMX_CONTINUE;
	}
	if (phase != m->phase)
		return FMX_CONTINUE;
	if (m->mode != MODE_SLEEP)	/* a test waits for this line */
		m->api->log(ctx, FMX_LOG_INFO, "misbehave pending phase=%s",
		    misbehave_phases[phase]);
	switch (m->mode) {
	case MODE_PENDING_FOREVER:
	case MODE_RESUME_ABORT:
		return FMX_PENDING;
	case MODE_RESUME_THREAD:
		return misbehave_start_thread(m, ctx, 0);
	case MODE_RESUME_THREAD_LIVE:
		return misbehave_start_thread(m, ctx, 1);
	case MODE_SLEEP:
		m->api->log(ctx, FMX_LOG_INFO, "misbehave sleeping phase=%s",
		    misbehave_phases[phase]);
		misbehave_sleep(m->seconds, 0);
		/* Given up on by now: these must be refused or harmless. */
		r1 = m->api->add_header(ctx, "X-Misbehave", "after timeout");
		m->api->log(ctx, FMX_LOG_INFO, "misbehave woke arg=%s helo=%s "
		    "from=%s add_header=%d", arg ? arg : "-",
		    m->api->get(ctx, "helo") ? m->api->get(ctx, "helo") : "-",
		    m->api->get(ctx, "mail.from") ? m->api->get(ctx, "mail.from") : "-",
		    r1);
		return FMX_CONTINUE;
	default:
		return FMX_CONTINUE;
	}
}

static enum fmx_verdict
misbehave_connect(void *inst, struct fmx_ctx *ctx)
{
	return misbehave_pending(inst, ctx, PH_CONNECT, NULL);
}

static enum fmx_verdict
misbehave_helo(void *inst, struct fmx_ctx *ctx, const char *helo)
{
	return misbehave_pending(inst, ctx, PH_HELO, helo);
}

static enum fmx_verdict
misbehave_mail(void *inst, struct fmx_ctx *ctx, const char *from)
{
	struct misbehave *m = inst;

	if (m->mode == MODE_BOGUS_VERDICT)
		return (enum fmx_verdict)99;
	return misbehave_pending(m, ctx, PH_MAIL, from);
}

static enum fmx_verdict
misbehave_rcpt(void *inst, struct fmx_ctx *ctx, const char *rcpt)
{
	struct misbehave *m = inst;
	int r1, r2;

	if (m->mode != MODE_BOGUS_REPLY)
		return misbehave_pending(m, ctx, PH_RCPT, rcpt);
	r1 = m->api->set_reply(ctx, "250 ok");
	r2 = m->api->set_reply(ctx, "550 5.7.1 a\r\nMAIL FROM:<x>");
	m->api->log(ctx, FMX_LOG_INFO, "misbehave set_reply 2xx=%d crlf=%d", r1, r2);
	return FMX_REJECT;
}

static enum fmx_verdict
misbehave_data(void *inst, struct fmx_ctx *ctx)
{
	return misbehave_pending(inst, ctx, PH_DATA, NULL);
}

static enum fmx_verdict
misbehave_eom(void *inst, struct fmx_ctx *ctx)
{
	struct misbehave *m = inst;
	int r;

	if (m->mode == MODE_CRLF_HEADER) {
		r = m->api->add_header(ctx, "X-Evil", "x\r\nBcc: evil@x");
		m->api->add_header(ctx, "X-Misbehave", r == -1 ? "refused" : "accepted");
		return FMX_CONTINUE;
	}
	return misbehave_pending(m, ctx, PH_EOM, NULL);
}

static void
misbehave_abort(void *inst, struct fmx_ctx *ctx)
{
	struct misbehave *m = inst;
	int r;

	if (m->mode != MODE_RESUME_ABORT)
		return;
	r = m->api->resume(ctx, FMX_CONTINUE);
	m->api->log(ctx, FMX_LOG_INFO, "misbehave abort resume=%d", r);
}

static const struct fmx_filter misbehave = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = MISBEHAVE_NAME,
	.flags = MISBEHAVE_FLAGS,
	.init = misbehave_init,
	.fini = misbehave_fini,
	.on_connect = misbehave_connect,
	.on_helo = misbehave_helo,
	.on_mail = misbehave_mail,
	.on_rcpt = misbehave_rcpt,
	.on_data = misbehave_data,
	.on_eom = misbehave_eom,
	.on_abort = misbehave_abort,
};

__attribute__((visibility("default")))
const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

const struct fmx_filter *
fmx_filter_entry(const struct fmx_api *api)
{
	(void)api;
	return &misbehave;
}
