/*
 * deliver_maildir.c - the "dir:PATH" backend, and the quarantine
 *
 * DESCRIPTION
 *	Wraps maildir.c: MAIL and RCPT are taken at once (the recipients
 *	reach maildir_deliver() with the message), the data operation writes
 *	one fsync'd file per recipient and answers 250 only once every copy
 *	is on disk, else 451 with nothing left behind.  The writes are
 *	blocking (maildir.h says why that is acceptable); the reply still
 *	comes through the loop (deliver_reply_later), as deliver.h promises
 *	for every backend.
 *
 *	The envelope operations and what the client is offered are
 *	deliver.c's deliver_local_* (shared with check): 8BITMIME and
 *	SMTPUTF8, no DSN (a Maildir sends no notices), no AUTH.
 *
 *	deliver_maildir_quarantine() writes the quarantine's one copy for
 *	the session, whatever the backend.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "deliver.h"
#include "log.h"
#include "maildir.h"

/* One file per recipient (single: one listing them all) into dir.  0 ok, -1 logged. */
static int
deliver_maildir_write(const struct config *cfg, unsigned long long sid,
    const char *dir, const struct deliver_msg *msg, int single,
    const char *note)
{
	struct maildir_request req;
	char err[512];

	memset(&req, 0, sizeof req);
	req.dir = dir;
	req.hostname = cfg->hostname;
	req.mail_from = msg->mail_from;
	req.rcpts = msg->rcpts;
	req.nrcpts = msg->nrcpts;
	req.prepend = msg->head;
	req.prependlen = msg->headlen;
	req.spool = msg->spool;
	req.spool_off = msg->spool_off;
	req.single = single;
	req.note = note;
	if (maildir_deliver(&req, err, sizeof err) == -1) {
		log_warn("%016llx maildir dir=%s error=\"%s\"", sid, dir, err);
		return -1;
	}
	return 0;
}

static void
deliver_maildir_data(struct deliver *d, const struct deliver_msg *msg)
{
	if (deliver_maildir_write(d->cfg, d->sid, d->cfg->upstream_dir, msg, 0,
	    NULL) == -1)
		deliver_reply_later(d, 451, "4.3.0 Error: local delivery failed, "
		    "try again later");
	else
		deliver_reply_later(d, 250, "2.0.0 Ok: queued as %s",
		    msg->queue_id);
}

int
deliver_maildir_quarantine(const struct config *cfg, unsigned long long sid,
    const char *dir, const struct deliver_msg *msg, const char *note)
{
	return deliver_maildir_write(cfg, sid, dir, msg, 1, note);
}

const struct deliver_ops deliver_maildir_ops = {
	.name = "dir",
	.result = "delivered",
	.flags = 0,
	.caps = deliver_local_caps,
	.open = deliver_local_open,
	.mail = deliver_local_mail,
	.rcpt = deliver_local_rcpt,
	.data = deliver_maildir_data,
	.rset = deliver_local_rset,
	.auth = NULL,
	.idle = deliver_local_idle,
	.in_tx = deliver_local_in_tx,
	.close = deliver_local_close,
};
