/*
 * deliver_lmtp.c - the LMTP backend (RFC 2033): "lmtp:HOST:PORT" and
 * "lmtp:unix:PATH", Dovecot's LMTP listener the usual peer
 *
 * DESCRIPTION
 *	LMTP is SMTP's dialogue with LHLO for EHLO and, after the final dot,
 *	one reply per accepted recipient instead of one for the message.
 *	That is a mode of upstream.c (upstream_client.lmtp), not a second
 *	client: the strict framing, the reply-in-step checks, the timeouts,
 *	STARTTLS and XCLIENT/XFORWARD (only when the server offers them, as
 *	for SMTP) stay one code path.  This file only picks those operations
 *	and states what the session must do for LMTP:
 *
 *	DELIVER_F_ONE_RCPT: the client gets one reply to its final dot, so
 *	nothing is lost or delivered twice only if that reply stands for
 *	exactly one per-recipient reply.  The session answers a second RCPT
 *	"452 4.5.3" and the client sends it in a new transaction, as it does
 *	for the per-domain policy split.  upstream.c owes exactly as many
 *	replies after the dot as RCPTs it saw accepted; an extra, missing,
 *	early or malformed one is a protocol error (451, connection closed),
 *	never a 250.  Recipients a filter adds keep the rule: the session
 *	(smtp_relay.c, smtp_relay_lmtp_*) delivers the client's recipient
 *	alone first, its reply the client's, then each added one in a
 *	transaction of its own only after that 2xx, their replies logged.
 *
 *	No AUTH: LMTP defines none, and frontmx relays AUTH only to an SMTP
 *	upstream that offers it.
 */
#include "deliver.h"
#include "deliver_smtp.h"

const struct deliver_ops deliver_lmtp_ops = {
	.name = "lmtp",
	.result = "relayed",
	.flags = DELIVER_F_ONE_RCPT | DELIVER_F_ENVELOPE,
	.caps = deliver_smtp_caps,
	.open = deliver_smtp_open,
	.mail = deliver_smtp_command,
	.rcpt = deliver_smtp_command,
	.data = deliver_smtp_data,
	.rset = deliver_smtp_rset,
	.auth = NULL,
	.idle = deliver_smtp_idle,
	.in_tx = deliver_smtp_in_tx,
	.close = deliver_smtp_close,
};
