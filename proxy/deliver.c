/*
 * deliver.c - picks the delivery backend and runs its operations
 *
 * DESCRIPTION
 *	The one place that looks at the kind of upstream.address (SMTP,
 *	LMTP, "dir:") and turns it into a struct deliver_ops; `frontmx check`
 *	passes its own backend instead (struct deliver_override).  Every
 *	operation goes through here so that the contract of deliver.h holds
 *	for every backend alike: one operation at a time, done() exactly once
 *	and from the loop.  A synchronous backend (Maildir, check) gives its
 *	reply with deliver_reply_later(), which an event of the handle's own
 *	delivers on the next loop turn; closing the handle cancels it, so a
 *	reply never reaches a session that is gone.
 *
 *	main.c and worker.c ask deliver_upstream(), deliver_prepare()
 *	and deliver_probe() instead of testing the kind themselves.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "deliver.h"
#include "log.h"
#include "maildir.h"
#include "upstream.h"

const struct deliver_ops *
deliver_choose(const struct config *cfg, const struct deliver_override *o)
{
	if (o != NULL && o->ops != NULL)
		return o->ops;
	switch (cfg->upstream_kind) {
	case CONFIG_UPSTREAM_SMTP:
		return &deliver_smtp_ops;
	case CONFIG_UPSTREAM_LMTP:
		return &deliver_lmtp_ops;
	case CONFIG_UPSTREAM_DIR:
		return &deliver_maildir_ops;
	default:
		fatalx("deliver: bad upstream kind %d", cfg->upstream_kind);
	}
}

int
deliver_upstream(const struct config *cfg, int *lmtp)
{
	if (lmtp != NULL)
		*lmtp = cfg->upstream_kind == CONFIG_UPSTREAM_LMTP;
	return cfg->upstream_kind == CONFIG_UPSTREAM_SMTP ||
	    cfg->upstream_kind == CONFIG_UPSTREAM_LMTP;
}

int
deliver_prepare(const struct config *cfg, char *err, size_t errlen)
{
	char why[CONFIG_ERR_MAX / 2];	/* room left for "FILE:LINE: upstream " */

	if (cfg->upstream_kind == CONFIG_UPSTREAM_DIR &&
	    maildir_prepare(cfg->upstream_dir, why, sizeof why) == -1) {
		snprintf(err, errlen, "%s: upstream %s", cfg->upstream_dir_where,
		    why);
		return -1;
	}
	return 0;
}

int
deliver_probe(const struct config *cfg, struct ssl_ctx_st *tls_ctx)
{
	int lmtp;

	if (!deliver_upstream(cfg, &lmtp))
		return 0;
	return upstream_probe(cfg, tls_ctx, lmtp);
}

int
deliver_caps(const struct deliver_ops *ops, const struct deliver *d,
    struct smtp_ehlo_caps *caps)
{
	return ops->caps(d, caps);
}

unsigned
deliver_flags(const struct deliver_ops *ops)
{
	return ops->flags;
}

const struct deliver_ops *
deliver_backend(const struct deliver *d)
{
	return d->ops;
}

const char *
deliver_result(const struct deliver_ops *ops, const char *action)
{
	return ops->result != NULL ? ops->result : action;
}

/* The synchronous backends' reply, one loop turn later. */
static void
deliver_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct deliver *d = arg;

	(void)fd;
	(void)what;
	deliver_finish(d, UPSTREAM_OK, d->reply);
}

struct deliver *
deliver_open(struct event_base *base, const struct config *cfg,
    struct ssl_ctx_st *tls_ctx, unsigned long long sid, const struct deliver_ops *ops,
    const struct deliver_override *o, const struct upstream_client *client,
    deliver_done_fn done, void *arg)
{
	struct deliver *d;

	if ((d = calloc(1, sizeof *d)) == NULL)
		return NULL;
	d->ops = ops;
	d->arg = o != NULL ? o->arg : NULL;
	d->base = base;
	d->cfg = cfg;
	d->tls_ctx = tls_ctx;
	d->sid = sid;
	deliver_begin(d, done, arg);
	if (ops->open(d, client) == -1) {
		deliver_close(d);
		return NULL;
	}
	return d;
}

void
deliver_begin(struct deliver *d, deliver_done_fn done, void *arg)
{
	if (d->done != NULL)
		fatalx("deliver: %s operation while one is in flight",
		    d->ops->name);
	d->done = done;
	d->done_arg = arg;
}

void
deliver_finish(struct deliver *d, enum upstream_err err,
    const struct smtp_reply *r)
{
	deliver_done_fn done = d->done;
	void *arg = d->done_arg;

	d->done = NULL;
	d->done_arg = NULL;
	if (err != UPSTREAM_OK)
		d->dead = 1;
	if (done != NULL)
		done(arg, err, r);
}

void
deliver_reply_later(struct deliver *d, int code, const char *fmt, ...)
{
	static const struct timeval now = { 0, 0 };
	va_list ap;

	if (d->later == NULL &&
	    (d->later = evtimer_new(d->base, deliver_later_cb, d)) == NULL)
		fatalx("deliver: cannot make an event");
	if (d->reply == NULL && (d->reply = malloc(sizeof *d->reply)) == NULL)
		fatalx("out of memory");
	smtp_reply_init(d->reply);
	d->reply->code = code;
	va_start(ap, fmt);
	vsnprintf(d->reply->text, sizeof d->reply->text, fmt, ap);
	va_end(ap);
	d->reply->textlen = strlen(d->reply->text);
	d->reply->nlines = 1;
	if (evtimer_add(d->later, &now) == -1)
		fatalx("deliver: cannot schedule a reply");
}

void
deliver_mail(struct deliver *d, const char *line, deliver_done_fn done,
    void *arg)
{
	deliver_begin(d, done, arg);
	d->ops->mail(d, line);
}

void
deliver_rcpt(struct deliver *d, const char *line, deliver_done_fn done,
    void *arg)
{
	deliver_begin(d, done, arg);
	d->ops->rcpt(d, line);
}

void
deliver_data(struct deliver *d, const struct deliver_msg *msg,
    deliver_done_fn done, void *arg)
{
	deliver_begin(d, done, arg);
	d->ops->data(d, msg);
}

void
deliver_rset(struct deliver *d, deliver_done_fn done, void *arg)
{
	deliver_begin(d, done, arg);
	d->ops->rset(d);
}

int
deliver_auth(struct deliver *d, const char *line, deliver_done_fn done,
    void *arg)
{
	if (d->ops->auth == NULL)
		return -1;
	deliver_begin(d, done, arg);
	d->ops->auth(d, line);
	return 0;
}

int
deliver_idle(const struct deliver *d)
{
	return !d->dead && d->done == NULL && d->ops->idle(d);
}

int
deliver_in_tx(const struct deliver *d)
{
	return d->ops->in_tx(d);
}

int
deliver_can_queue(const struct deliver *d)
{
	return !d->dead && d->done == NULL && d->ops->can_queue != NULL &&
	    d->ops->can_queue(d);
}

/* Its done is its own: the handle's one-operation slot stays free. */
void
deliver_queue(struct deliver *d, const char *line, deliver_done_fn done,
    void *arg)
{
	d->ops->queue(d, line, done, arg);
}

void
deliver_flush(struct deliver *d)
{
	d->ops->flush(d);
}

void
deliver_close(struct deliver *d)
{
	if (d == NULL)
		return;
	d->done = NULL;
	d->done_arg = NULL;
	d->ops->close(d);
	if (d->later != NULL)
		event_free(d->later);
	free(d->reply);
	free(d);
}

/*
 * The envelope operations of the backends that take the envelope locally
 * (Maildir, check): every one succeeds, through the loop; what they
 * offer is 8BITMIME and SMTPUTF8 (8-bit content is kept as it came), no
 * DSN, no SIZE beyond limits.message_size, no AUTH.
 */
int
deliver_local_caps(const struct deliver *d, struct smtp_ehlo_caps *caps)
{
	(void)d;
	memset(caps, 0, sizeof *caps);
	caps->flags = SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8;
	return 1;
}

int
deliver_local_open(struct deliver *d, const struct upstream_client *client)
{
	(void)client;
	deliver_reply_later(d, 220, "%s ready", d->cfg->hostname);
	return 0;
}

void
deliver_local_mail(struct deliver *d, const char *line)
{
	(void)line;
	deliver_reply_later(d, 250, "2.1.0 Ok");
}

void
deliver_local_rcpt(struct deliver *d, const char *line)
{
	(void)line;
	deliver_reply_later(d, 250, "2.1.5 Ok");
}

void
deliver_local_rset(struct deliver *d)
{
	deliver_reply_later(d, 250, "2.0.0 Ok");
}

int
deliver_local_idle(const struct deliver *d)
{
	(void)d;
	return 1;
}

int
deliver_local_in_tx(const struct deliver *d)
{
	(void)d;
	return 0;
}

void
deliver_local_close(struct deliver *d)
{
	(void)d;
}
