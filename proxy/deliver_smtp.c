/*
 * deliver_smtp.c - the SMTP backend: relay over upstream.c
 *
 * DESCRIPTION
 *	One upstream connection per handle, kept between transactions: the
 *	greeting, EHLO, STARTTLS and XCLIENT (or XFORWARD before each MAIL)
 *	as upstream.c does them, then each operation as one command.  What
 *	the client may be offered is this connection's EHLO once it is open,
 *	else what the upstream last told anyone (upstream_caps_set); before
 *	it ever answered, 8BITMIME, SMTPUTF8 and DSN are assumed (README
 *	"Capabilities"): not offering them would make senders downgrade
 *	8-bit bodies (breaking DKIM) or bounce SMTPUTF8 mail, while a
 *	transaction that needs one the upstream then lacks only gets a 451.
 *
 *	deliver_lmtp.c shares these functions: LMTP is this dialogue with
 *	LHLO and a reply per recipient, both inside upstream.c.  Only SMTP
 *	takes pipelined groups (deliver_smtp_can_queue): LMTP keeps one
 *	recipient per transaction.
 */
#include <string.h>

#include "config.h"
#include "deliver.h"
#include "deliver_smtp.h"
#include "log.h"
#include "spool.h"
#include "upstream.h"
#include "upstream_pool.h"

/* upstream.c's done: the handle's operation is over. */
static void
deliver_smtp_done(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	deliver_finish(arg, err, r);
}

int
deliver_smtp_caps(const struct deliver *d, struct smtp_ehlo_caps *caps)
{
	const struct smtp_ehlo_caps *c;
	int known;

	if (d != NULL && d->up != NULL && (c = upstream_caps(d->up)) != NULL) {
		*caps = *c;
		return 1;
	}
	upstream_caps_get(caps, &known);
	if (!known) {
		memset(caps, 0, sizeof *caps);
		caps->flags = SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8 |
		    SMTP_EHLO_DSN;
	}
	return known;
}

static void deliver_smtp_reused(void *, enum upstream_err,
		    const struct smtp_reply *);

/*
 * A pooled connection (upstream_pool.c) when one suits, proven by RSET
 * first (deliver_smtp_reused), else a new one.  The client's facts are
 * kept in the handle's connection either way: a connection that fails
 * its RSET gives way to a new one for the same client.
 */
static int
deliver_smtp_connect(struct deliver *d, const struct upstream_client *cl)
{
	if ((d->up = upstream_pool_take(d->cfg, cl)) != NULL) {
		log_debug("%016llx upstream reusing a pooled connection", d->sid);
		upstream_reuse(d->up, cl, d->sid, deliver_smtp_reused, d);
		return 0;
	}
	d->up = upstream_open(d->base, d->cfg, d->tls_ctx, cl, d->sid,
	    deliver_smtp_done, d);
	return d->up == NULL ? -1 : 0;
}

/*
 * The health check's RSET: 250 and the connection is this client's.
 * Anything else (a refusal, garbage, EOF, a timeout) and it is dropped,
 * never used, and the next pooled or a new connection takes over: the
 * client hears of none of this.
 */
static void
deliver_smtp_reused(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct deliver *d = arg;
	struct upstream_client cl;

	if (err == UPSTREAM_OK && r->code == 250) {
		deliver_finish(d, UPSTREAM_OK, r);
		return;
	}
	log_info("%016llx upstream pooled connection failed its RSET (%s%s%d), "
	    "dropped", d->sid, upstream_strerror(err), err == UPSTREAM_OK ?
	    " " : "", err == UPSTREAM_OK ? r->code : 0);
	upstream_close(d->up);
	d->up = NULL;
	cl = d->client;
	if (deliver_smtp_connect(d, &cl) == -1)
		deliver_finish(d, UPSTREAM_ERR_LOCAL, NULL);
}

/* The dialect was chosen by deliver.c: ops says which. */
int
deliver_smtp_open(struct deliver *d, const struct upstream_client *client)
{
	d->client = *client;
	d->client.lmtp = d->ops == &deliver_lmtp_ops;
	return deliver_smtp_connect(d, &d->client);
}

void
deliver_smtp_command(struct deliver *d, const char *line)
{
	upstream_command(d->up, line, deliver_smtp_done, d);
}

void
deliver_smtp_data(struct deliver *d, const struct deliver_msg *msg)
{
	upstream_send_message(d->up, msg->head, msg->headlen, msg->spool,
	    msg->spool_off, deliver_smtp_done, d);
}

void
deliver_smtp_rset(struct deliver *d)
{
	upstream_command(d->up, "RSET", deliver_smtp_done, d);
}

void
deliver_smtp_auth(struct deliver *d, const char *line)
{
	upstream_command_secret(d->up, line, deliver_smtp_done, d);
}

int
deliver_smtp_idle(const struct deliver *d)
{
	return d->up != NULL && upstream_idle(d->up);
}

int
deliver_smtp_in_tx(const struct deliver *d)
{
	return d->up != NULL && upstream_in_tx(d->up);
}

static int
deliver_smtp_can_queue(const struct deliver *d)
{
	return d->up != NULL && upstream_can_queue(d->up);
}

static void
deliver_smtp_queue(struct deliver *d, const char *line, deliver_done_fn done,
    void *arg)
{
	upstream_queue(d->up, line, done, arg);
}

static void
deliver_smtp_flush(struct deliver *d)
{
	upstream_flush(d->up);
}

/* An idle connection in step goes to the pool, when it takes it. */
void
deliver_smtp_close(struct deliver *d)
{
	if (d->up != NULL && d->dead == 0 &&
	    upstream_pool_put(d->up, d->cfg, d->base, d->sid))
		d->up = NULL;
	upstream_close(d->up);
	d->up = NULL;
}

const struct deliver_ops deliver_smtp_ops = {
	.name = "smtp",
	.result = "relayed",
	.flags = DELIVER_F_ENVELOPE,
	.caps = deliver_smtp_caps,
	.open = deliver_smtp_open,
	.mail = deliver_smtp_command,
	.rcpt = deliver_smtp_command,
	.data = deliver_smtp_data,
	.rset = deliver_smtp_rset,
	.auth = deliver_smtp_auth,
	.idle = deliver_smtp_idle,
	.in_tx = deliver_smtp_in_tx,
	.can_queue = deliver_smtp_can_queue,
	.queue = deliver_smtp_queue,
	.flush = deliver_smtp_flush,
	.close = deliver_smtp_close,
};
