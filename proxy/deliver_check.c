/*
 * deliver_check.c - the `frontmx check` backend: deliver nothing, report
 *
 * DESCRIPTION
 *	check.c runs one message through the daemon's own session code and
 *	hands the session this backend (struct deliver_override, arg a
 *	struct deliver_check) instead of the configured upstream.  Every
 *	operation succeeds at once (through the loop, deliver.h); the data
 *	operation tells check.c the action the message got and the header
 *	fields the proxy added (the ones it put before the client's and the
 *	ones it appended), then answers 250 as a delivery would.
 *	DELIVER_F_REPORT makes the session bring discard and quarantine here
 *	too, so that check reports them instead of doing them.
 *
 *	Its envelope operations and offer are deliver.c's deliver_local_*,
 *	as for the Maildir backend: 8BITMIME and SMTPUTF8.
 */
#include <stdlib.h>
#include <string.h>

#include "deliver.h"
#include "log.h"

static void
deliver_check_data(struct deliver *d, const struct deliver_msg *msg)
{
	const struct deliver_check *dc = d->arg;
	struct deliver_check_report r;
	char *added;
	size_t n;

	n = msg->head_prefix + (msg->headlen - msg->head_added);
	if ((added = malloc(n + 1)) == NULL)
		fatalx("out of memory");
	memcpy(added, msg->head, msg->head_prefix);
	memcpy(added + msg->head_prefix, msg->head + msg->head_added,
	    msg->headlen - msg->head_added);
	added[n] = '\0';
	r.action = msg->action;
	r.added = added;
	r.addedlen = n;
	if (dc != NULL && dc->fn != NULL)
		dc->fn(dc->arg, &r);
	free(added);
	deliver_reply_later(d, 250, "2.0.0 Ok: queued as %s", msg->queue_id);
}

const struct deliver_ops deliver_check_ops = {
	.name = "check",
	.result = NULL,
	.flags = DELIVER_F_REPORT,
	.caps = deliver_local_caps,
	.open = deliver_local_open,
	.mail = deliver_local_mail,
	.rcpt = deliver_local_rcpt,
	.data = deliver_check_data,
	.rset = deliver_local_rset,
	.auth = NULL,
	.idle = deliver_local_idle,
	.in_tx = deliver_local_in_tx,
	.close = deliver_local_close,
};
