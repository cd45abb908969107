/*
 * smtp_relay.c - the session's side of delivery (deliver.h)
 *
 * DESCRIPTION
 *	Everything that talks to where the mail goes, through one struct
 *	deliver handle (s->dl) whatever the backend: an SMTP or LMTP
 *	upstream, a dir: Maildir, or `frontmx check`'s report.  The backend
 *	is picked when a transaction opens the handle (deliver_choose:
 *	upstream.address, or the host's override for check) and nothing
 *	here asks which one it is; its flags say what the session must do
 *	(one recipient per transaction for LMTP, the envelope again after
 *	recipient edits, discard and quarantine reported by check).
 *
 *	The backend's capabilities decide what the client is offered
 *	(smtp_relay_offer_flags, smtp_relay_size_limit).  MAIL opens (or
 *	reuses, after RSET when owed) the handle and is relayed with the
 *	parameters it allows (smtp_relay_mail_line); RCPT follows; the
 *	message goes from the spool with the header block built at eom, and
 *	the backend's reply to it is the client's.  Recipient edits make the
 *	envelope go again (RSET, MAIL, every RCPT) where RCPTs were already
 *	given; on LMTP (one reply per recipient) they make one transaction
 *	per recipient instead, the client's own first and its reply the
 *	client's, the filters' after its 2xx with their replies only logged
 *	(smtp_relay_lmtp_*).  The quarantine is a Maildir
 *	(deliver_maildir_quarantine).
 *
 *	Every delivery failure becomes a 4xx to the client and closes the
 *	handle (smtp_relay_failed): nothing is lost.
 *
 *	Pipelining to the upstream (RFC 2920; smtp_relay_pipe_*).  When a
 *	MAIL or RCPT has passed its filters, the handle takes queued
 *	commands (deliver_can_queue: an SMTP upstream offering PIPELINING,
 *	idle) and the client's input already holds a complete next line
 *	that is a RCPT, the command is queued instead of sent and the
 *	session goes on with that RCPT; each RCPT that passes its filters
 *	is queued too while the group is open.  The group is written (one
 *	write) as soon as the next line is anything else or not there yet,
 *	a reply to a later command was decided here (a RCPT refused by
 *	relay control, a filter, its syntax: held, see below), or the group
 *	is full (SMTP_PIPE_MAX); then the session waits for every reply
 *	before it reads another command.  The upstream's replies come in
 *	order, and each makes the client's reply to its command, so the
 *	client hears 250 to a MAIL or RCPT only after the upstream's 250 to
 *	it.  A reply decided here for a command read after queued ones waits
 *	behind them (smtp_chat_out: struct smtp_piped's after): replies stay
 *	in command order.  A refused MAIL ends the transaction (the filters
 *	hear on_abort: their RCPT hooks ran for it) and each RCPT queued
 *	behind it gets what it would have got alone, "503 5.5.1 Error: need
 *	MAIL command", whatever the upstream said.  Any error (timeout, EOF,
 *	a malformed or unexpected reply, one more or fewer than owed, one
 *	before the group was written) kills the connection: every command
 *	still owed gets the 4xx of smtp_relay_failed, nothing is relayed,
 *	the connection is never reused.  Not queued: a MAIL on a connection
 *	kept from an earlier transaction (it may meet a connection the MTA
 *	just closed, which is retried once on a fresh one, alone), LMTP (one
 *	recipient per transaction), recipient edits' envelope and the
 *	pool's RSET.  Queued RCPTs count as accepted for the recipient
 *	limit and the one-policy rule until their replies come, and the
 *	filters of a RCPT may run for a transaction the upstream then
 *	refuses at MAIL, or before an earlier RCPT of the group is accepted
 *	(their view of the recipients has only those already accepted).
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "deliver.h"
#include "filter_chain.h"
#include "log.h"
#include "runtime.h"
#include "smtp_int.h"
#include "smtp_session.h"
#include "spool.h"
#include "strutil.h"
#include "upstream.h"

static const char *smtp_relay_mail_line(struct smtp_session *);
static int	smtp_relay_pipe_queue(struct smtp_session *, const char *rcpt,
		    const char *dsn);
static void	smtp_relay_pipe_fail(struct smtp_session *, enum upstream_err);
static void	smtp_relay_pipe_reply(void *, enum upstream_err,
		    const struct smtp_reply *);
static const char *smtp_relay_action(struct smtp_session *);
static struct spool *smtp_relay_spool(struct smtp_session *, size_t *);
static void	smtp_relay_envelope_next(struct smtp_session *);
static void	smtp_relay_rcpt_line(const struct smtp_session *, size_t,
		    char *, size_t);

/*
 * Drop the upstream connection (none is fine): the next MAIL opens a
 * fresh one.
 */
void
smtp_relay_close(struct smtp_session *s)
{
	/* A group in flight dies with it: its commands hear 4xx. */
	if (s->npiped > 0)
		smtp_relay_pipe_fail(s, UPSTREAM_ERR_LOCAL);
	deliver_close(s->dl);
	s->dl = NULL;
}

/*
 * The session stops (closing, or freed next): an upstream operation in
 * flight drops its connection, so a message the client will hear nothing
 * about is not relayed on.  An idle connection stays for smtp_relay_close.
 */
void
smtp_relay_cancel(struct smtp_session *s)
{
	if (s->dl != NULL && !deliver_idle(s->dl))
		smtp_relay_close(s);
}

/* The client's 4xx for a command the upstream failed on. */
static void
smtp_relay_failed_reply(struct smtp_session *s, enum upstream_err err)
{
	switch (err) {
	case UPSTREAM_ERR_CONNECT:
	case UPSTREAM_ERR_REJECTED:
		smtp_reply(s, "451 4.4.1 Error: upstream not available, try again later");
		break;
	case UPSTREAM_ERR_PROTOCOL:
		smtp_reply(s, "451 4.3.0 Error: malformed upstream reply, try again later");
		break;
	case UPSTREAM_ERR_LOCAL:
		smtp_reply(s, "451 4.3.0 Error: local error, try again later");
		break;
	case UPSTREAM_ERR_TIMEOUT:
	case UPSTREAM_ERR_CLOSED:
	default:
		smtp_reply(s, "451 4.4.2 Error: upstream %s, try again later",
		    upstream_strerror(err));
		break;
	}
}

void
smtp_relay_failed(struct smtp_session *s, enum upstream_err err)
{
	smtp_relay_close(s);
	smtp_relay_failed_reply(s, err);
	smtp_tx_reset(s);
}

/*
 * The backend: the open handle's, else the one a transaction would get
 * now (the configured upstream, or the host's override for check).
 */
static const struct deliver_ops *
smtp_relay_ops(const struct smtp_session *s)
{
	if (s->dl != NULL)
		return deliver_backend(s->dl);
	return deliver_choose(s->cfg, s->host->deliver);
}

/*
 * The backend's extensions (deliver_caps): an upstream connection's own
 * once it is open, else what the upstream last told anyone, else those
 * assumed (README "Capabilities"); a Maildir's fixed set.  1 when known,
 * 0 assumed.
 */
static int
smtp_relay_caps(const struct smtp_session *s, struct smtp_ehlo_caps *caps)
{
	return deliver_caps(smtp_relay_ops(s), s->dl, caps);
}

int
smtp_relay_has(const struct smtp_session *s, unsigned flag)
{
	struct smtp_ehlo_caps caps;

	smtp_relay_caps(s, &caps);
	return (caps.flags & flag) != 0;
}

/*
 * The pass-through extensions to advertise: 8BITMIME, SMTPUTF8 and DSN
 * as far as the backend has them (a dir: upstream stores 8-bit content
 * as is and sends no DSN).
 */
unsigned
smtp_relay_offer_flags(const struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;

	smtp_relay_caps(s, &caps);
	return caps.flags & (SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8 |
	    SMTP_EHLO_DSN);
}

/*
 * The AUTH mechanisms to offer: what the upstream said, never what it is
 * assumed to have; "" when it offers none (LMTP, Maildir, check).
 */
void
smtp_relay_auth_mechs(const struct smtp_session *s, char *out, size_t outlen)
{
	struct smtp_ehlo_caps caps;

	out[0] = '\0';
	if (deliver_caps(smtp_relay_ops(s), NULL, &caps) &&
	    (caps.flags & SMTP_EHLO_AUTH))
		snprintf(out, outlen, "%s", caps.auth);
}

/* An AUTH line or SASL response to the upstream; -1 the backend has none. */
int
smtp_relay_auth(struct smtp_session *s, const char *line, deliver_done_fn done)
{
	if (s->dl == NULL)
		return -1;
	return deliver_auth(s->dl, line, done, s);
}

/*
 * LMTP answers the final dot once per recipient and the client hears one
 * reply: with one recipient per transaction that reply is the
 * recipient's own, so nothing is lost or delivered twice (deliver.h).
 * 1 when this RCPT must wait for a transaction of its own.
 */
int
smtp_relay_rcpt_full(const struct smtp_session *s)
{
	return s->tx->nrcpts > 0 &&
	    (deliver_flags(smtp_relay_ops(s)) & DELIVER_F_ONE_RCPT);
}

/*
 * The largest message taken: limits.message_size, or the upstream's SIZE
 * when smaller (RFC 1870: 0 or none is no limit), so that a message the
 * upstream would refuse at its end is refused here at MAIL or cut off
 * while it arrives, not read in full first.
 */
size_t
smtp_relay_size_limit(const struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;
	size_t lim = s->cfg->limits.message_size;

	smtp_relay_caps(s, &caps);
	if ((caps.flags & SMTP_EHLO_SIZE) && caps.size > 0 && caps.size < lim)
		lim = caps.size;
	return lim;
}

/*
 * The upstream refused the sender or a recipient: its reason (first
 * line), for the admin who reads our log only, as Postfix logs an
 * upstream's NOQUEUE reject.
 */
static void
smtp_relay_log_refused(const struct smtp_session *s, const char *what,
    const char *addr, const struct smtp_reply *r)
{
	log_info("%016llx upstream refused %s=<%s> client=%s reply=\"%d %.*s\"",
	    s->id, what, addr != NULL ? addr : "", s->addr, r->code,
	    (int)strcspn(r->text, "\n"), r->text);
}

static void
smtp_relay_mail_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	/*
	 * A kept connection the MTA closed just before our MAIL (its idle
	 * timeout racing us): retry once on a fresh one, as an MTA's
	 * connection cache would.
	 */
	if (err == UPSTREAM_ERR_CLOSED && (s->flags & SMTP_F_UP_REUSED) &&
	    !(s->tx->flags & SMTP_TX_MAIL_RETRIED)) {
		s->tx->flags |= SMTP_TX_MAIL_RETRIED;
		smtp_relay_close(s);
		smtp_relay_mail_start(s);
		return;
	}
	if (err != UPSTREAM_OK) {
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_chat_upstream(s, r, "2.1.0");
	if (r->code / 100 != 2) {
		smtp_relay_log_refused(s, "from", s->tx->mail_from, r);
		smtp_tx_free(s);
	}
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_relay_rset_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK || r->code != 250) {
		/* Out of step with the upstream: start over with a new connection. */
		smtp_relay_close(s);
	}
	smtp_relay_mail_start(s);
}

/*
 * The command that opened (or reuses) the connection: AUTH as it came,
 * MAIL made now for this connection's extensions (smtp_relay_mail_line).
 */
static void
smtp_relay_send_pending(struct smtp_session *s)
{
	const char *missing;

	if (s->pending_cb != smtp_relay_mail_reply) {
		if (smtp_relay_auth(s, s->pending, s->pending_cb) == -1) {
			smtp_reply(s, "502 5.5.1 Error: command not implemented");
			smtp_resume(s, SMTP_STATE_COMMAND);
		}
		return;
	}
	if ((missing = smtp_relay_mail_line(s)) != NULL) {
		/* Offered at EHLO, gone now: the client tries again later. */
		log_info("%016llx upstream lacks %s offered to the client",
		    s->id, missing);
		smtp_reply(s, "451 4.3.0 Error: the upstream no longer offers "
		    "%s, try again later", missing);
		smtp_tx_free(s);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	/* Not on a kept connection: its MAIL may need its retry. */
	if (!(s->flags & SMTP_F_UP_REUSED) && smtp_relay_pipe_queue(s, NULL, NULL))
		return;
	deliver_mail(s->dl, s->pending, s->pending_cb, s);
}

static void
smtp_relay_opened(void *arg, enum upstream_err err,
    const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	(void)r;
	/* Closed before the session was even set up: the MTA is not available. */
	if (err == UPSTREAM_ERR_CLOSED)
		err = UPSTREAM_ERR_CONNECT;
	if (err != UPSTREAM_OK) {
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_relay_send_pending(s);
}

/*
 * Open (or reuse, after RSET if owed) the delivery handle, then relay
 * MAIL (or AUTH).  A new handle gets its backend here, once.
 */
void
smtp_relay_mail_start(struct smtp_session *s)
{
	struct upstream_client cl;
	struct event_base *base;

	/* The MTA closed an idle connection (its own timeout): just reopen. */
	if (s->dl != NULL && !deliver_idle(s->dl))
		smtp_relay_close(s);
	/*
	 * The upstream's own record of its transaction, not ours: a refused
	 * DATA, a message our filters stopped, a client RSET or EHLO all
	 * leave its MAIL open, and only RSET (or a new connection) ends it.
	 */
	if (s->dl != NULL && deliver_in_tx(s->dl)) {
		deliver_rset(s->dl, smtp_relay_rset_reply, s);
		return;
	}
	if (s->dl != NULL) {
		s->flags |= SMTP_F_UP_REUSED;
		smtp_relay_send_pending(s);
		return;
	}
	s->flags &= ~SMTP_F_UP_REUSED;
	memset(&cl, 0, sizeof cl);
	cl.addr = s->addr;
	cl.ipv6 = s->sa.ss_family == AF_INET6;
	cl.port = s->port;
	cl.helo = s->helo;
	cl.esmtp = (s->flags & SMTP_F_ESMTP) != 0;
	cl.require_tls = s->tls == SMTP_TLS_ACTIVE &&
	    s->cfg->upstream_tls_if_client_tls;
	cl.name = s->rdns == SMTP_RDNS_OK ? s->name :
	    s->rdns == SMTP_RDNS_TEMP ? "[TEMPUNAVAIL]" : "[UNAVAILABLE]";
	base = bufferevent_get_base(s->bev);
	s->dl = deliver_open(base, s->cfg, runtime_client_ctx(s->rt), s->id,
	    deliver_choose(s->cfg, s->host->deliver), s->host->deliver, &cl,
	    smtp_relay_opened, s);
	if (s->dl == NULL) {
		smtp_relay_failed(s, UPSTREAM_ERR_LOCAL);
		smtp_resume(s, SMTP_STATE_COMMAND);
	}
}

/* MAIL passed the filters: relay it, opening the handle when needed. */
void
smtp_relay_mail(struct smtp_session *s)
{
	s->pending_cb = smtp_relay_mail_reply;
	smtp_relay_mail_start(s);
}

/*
 * The MAIL line for this upstream connection, into s->pending: the kept
 * parameters its EHLO allows.  SIZE and BODY=7BIT are information and
 * are left out for an upstream without SIZE or 8BITMIME; SMTPUTF8,
 * BODY=8BITMIME and DSN's RET/ENVID change what it must do, so one it
 * lacks (it changed since the client's EHLO, or was not yet known) is
 * returned and the MAIL is not sent.  NULL when the line is ready.
 */
static const char *
smtp_relay_mail_line(struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;
	char *line = s->pending;
	size_t linelen = sizeof s->pending, used, i;
	int n;

	smtp_relay_caps(s, &caps);
	if ((s->tx->flags & SMTP_TX_UTF8) && !(caps.flags & SMTP_EHLO_SMTPUTF8))
		return "SMTPUTF8";
	if (s->tx->body == 8 && !(caps.flags & SMTP_EHLO_8BITMIME))
		return "8BITMIME";
	if ((s->tx->ret || s->tx->envid[0]) && !(caps.flags & SMTP_EHLO_DSN))
		return "DSN";
	n = snprintf(line, linelen, "MAIL FROM:<%s>", s->tx->mail_from);
	if (n < 0 || (size_t)n >= linelen)
		fatalx("smtp_relay_mail_line: path over limit");
	used = (size_t)n;
	for (i = 0; i < s->tx->nparams; i++) {
		switch (s->tx->order[i]) {
		case SMTP_MAIL_SIZE:
			if (!(caps.flags & SMTP_EHLO_SIZE))
				continue;
			n = snprintf(line + used, linelen - used, " SIZE=%llu",
			    s->tx->size);
			break;
		case SMTP_MAIL_SMTPUTF8:
			n = snprintf(line + used, linelen - used, " SMTPUTF8");
			break;
		case SMTP_MAIL_RET:
			n = snprintf(line + used, linelen - used, " RET=%s",
			    s->tx->ret == 1 ? "FULL" : "HDRS");
			break;
		case SMTP_MAIL_ENVID:
			n = snprintf(line + used, linelen - used, " ENVID=%s",
			    s->tx->envid);
			break;
		case SMTP_MAIL_BODY:
			if (s->tx->body == 7 && !(caps.flags & SMTP_EHLO_8BITMIME))
				continue;
			n = snprintf(line + used, linelen - used, " BODY=%s",
			    s->tx->body == 8 ? "8BITMIME" : "7BIT");
			break;
		default:
			fatalx("smtp_relay_mail_line: bad parameter %d", s->tx->order[i]);
		}
		if (n < 0 || (size_t)n >= linelen - used)
			fatalx("smtp_relay_mail_line: line over limit");
		used += (size_t)n;
	}
	return NULL;
}

/*
 * The upstream's reply to a RCPT, relayed or queued in a group: the
 * client's reply, and the recipient taken or the refusal logged.
 */
static void
smtp_relay_rcpt_result(struct smtp_session *s, const struct smtp_reply *r,
    const char *rcpt, const char *dsn)
{
	smtp_chat_upstream(s, r, "2.1.5");
	if (r->code / 100 == 2)
		smtp_mail_rcpt_accepted(s, rcpt, dsn);
	else
		smtp_relay_log_refused(s, "rcpt", rcpt, r);
}

static void
smtp_relay_rcpt_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK) {
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_relay_rcpt_result(s, r, s->pending_rcpt, s->pending_dsn);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

/* RCPT passed the filters: relay s->pending, or queue it in a group. */
void
smtp_relay_rcpt(struct smtp_session *s)
{
	if (smtp_relay_pipe_queue(s, s->pending_rcpt, s->pending_dsn))
		return;
	deliver_rcpt(s->dl, s->pending, smtp_relay_rcpt_reply, s);
}

/* ---- pipelining to the upstream (see the top of the file) ---------- */

/* 1 when the client's input holds a complete next command line: a RCPT. */
static int
smtp_relay_next_rcpt(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr eol;
	char verb[5];
	size_t eol_len;

	if (s->skipping || evbuffer_copyout(in, verb, sizeof verb) !=
	    (ev_ssize_t)sizeof verb || str_ncasecmp(verb, "RCPT ", 5) != 0)
		return 0;
	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
	return eol.pos >= 0 && (size_t)eol.pos + 2 <= SMTP_CMD_LINE_MAX;
}

/*
 * Queue s->pending (a MAIL when rcpt is NULL, else a RCPT) in the group
 * when the rules allow: a group is open, or one can start (the handle
 * takes queued commands and a RCPT follows).  1 queued (the session goes
 * on with the next command), 0 the caller sends it alone.
 */
static int
smtp_relay_pipe_queue(struct smtp_session *s, const char *rcpt,
    const char *dsn)
{
	struct smtp_piped *p;

	if (s->pipe != SMTP_PIPE_OPEN &&
	    (s->npiped > 0 || !deliver_can_queue(s->dl) ||
	    !smtp_relay_next_rcpt(s)))
		return 0;
	if (s->npiped >= SMTP_PIPE_MAX)
		fatalx("smtp_relay_pipe_queue: group over %d", SMTP_PIPE_MAX);
	if (s->piped == NULL &&
	    (s->piped = calloc(SMTP_PIPE_MAX, sizeof *s->piped)) == NULL)
		fatalx("out of memory");
	p = &s->piped[(s->piped_head + s->npiped) % SMTP_PIPE_MAX];
	memset(p, 0, sizeof *p);
	/* Its reply is counted when it comes, not as the next command's. */
	p->stat = s->stat_open;
	p->stage = s->stage;
	s->stat_open = -1;
	if (rcpt != NULL) {
		if ((p->rcpt = strdup(rcpt)) == NULL ||
		    (p->dsn = strdup(dsn != NULL ? dsn : "")) == NULL)
			fatalx("out of memory");
		/* The first one fixes the policy the others must share. */
		if (s->tx->nrcpts + s->piped_rcpts == 0)
			s->tx->policy = smtp_mail_rcpt_policy(s, rcpt);
		s->piped_rcpts++;
	}
	s->npiped++;
	s->pipe = SMTP_PIPE_OPEN;
	deliver_queue(s->dl, s->pending, smtp_relay_pipe_reply, s);
	smtp_resume(s, SMTP_STATE_COMMAND);
	return 1;
}

/*
 * Before the session reads a command with a group open: go on when the
 * next line is a RCPT the group can take and nothing is held, else
 * write the group and wait for its replies.  1 when the session waits.
 */
int
smtp_relay_pipe_gate(struct smtp_session *s)
{
	const struct smtp_piped *tail;

	if (s->pipe != SMTP_PIPE_OPEN)
		return s->pipe == SMTP_PIPE_SENT;
	tail = &s->piped[(s->piped_head + s->npiped - 1) % SMTP_PIPE_MAX];
	if (s->npiped < SMTP_PIPE_MAX && tail->after == NULL &&
	    deliver_can_queue(s->dl) && smtp_relay_next_rcpt(s))
		return 0;
	s->pipe = SMTP_PIPE_SENT;
	smtp_enter_state(s, SMTP_STATE_WAIT);
	deliver_flush(s->dl);
	return 1;
}

/*
 * Take the oldest queued command off the group, with its counters and
 * its stage put back for its reply (written to the output:
 * SMTP_F_PIPE_REPLY), into *p; smtp_relay_pipe_done() after the reply.
 */
static void
smtp_relay_pipe_pop(struct smtp_session *s, struct smtp_piped *p, int *stat,
    const char **stage)
{
	*p = s->piped[s->piped_head];
	s->piped_head = (s->piped_head + 1) % SMTP_PIPE_MAX;
	s->npiped--;
	if (p->rcpt != NULL)
		s->piped_rcpts--;
	*stat = s->stat_open;
	*stage = s->stage;
	s->stat_open = p->stat;
	s->stage = p->stage;
	s->flags |= SMTP_F_PIPE_REPLY;
}

/*
 * Its reply is out: the replies held behind it follow at once, ahead of
 * any later queued command's (the group ends when one is held, so only
 * the last holds any).
 */
static void
smtp_relay_pipe_done(struct smtp_session *s, struct smtp_piped *p, int stat,
    const char *stage)
{
	s->flags &= ~SMTP_F_PIPE_REPLY;
	s->stat_open = stat;
	s->stage = stage;
	if (p->after != NULL) {
		evbuffer_add_buffer(bufferevent_get_output(s->bev), p->after);
		evbuffer_free(p->after);
	}
	free(p->rcpt);
	free(p->dsn);
	if (s->npiped == 0) {
		s->pipe = SMTP_PIPE_NONE;
		s->pipe_nomail = 0;
	}
}

/* Every command still owed gets err's 4xx, in order. */
static void
smtp_relay_pipe_fail(struct smtp_session *s, enum upstream_err err)
{
	struct smtp_piped p;
	const char *stage;
	int stat;

	while (s->npiped > 0) {
		smtp_relay_pipe_pop(s, &p, &stat, &stage);
		smtp_relay_failed_reply(s, err);
		smtp_relay_pipe_done(s, &p, stat, stage);
	}
}

/* The upstream's reply to the oldest queued command, or the group's error. */
static void
smtp_relay_pipe_reply(void *arg, enum upstream_err err,
    const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	struct smtp_piped p;
	const char *stage;
	int stat;

	if (err != UPSTREAM_OK) {
		smtp_relay_pipe_fail(s, err);
		smtp_relay_close(s);
		smtp_tx_reset(s);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_relay_pipe_pop(s, &p, &stat, &stage);
	if (p.rcpt == NULL) {
		smtp_chat_upstream(s, r, "2.1.0");
		if (r->code / 100 != 2) {
			smtp_relay_log_refused(s, "from", s->tx->mail_from, r);
			/* The filters saw RCPTs of it: on_abort. */
			smtp_tx_reset(s);
			s->pipe_nomail = 1;
		}
	} else if (s->pipe_nomail || s->tx == NULL) {
		/* What the RCPT alone would have heard after the refused MAIL. */
		const char *unmet = smtp_verb_unmet(s, SMTP_VERB_NEED_MAIL);

		smtp_reply(s, "%s", unmet != NULL ? unmet :
		    "503 5.5.1 Error: need MAIL command");
	} else
		smtp_relay_rcpt_result(s, r, p.rcpt, p.dsn);
	smtp_relay_pipe_done(s, &p, stat, stage);
	if (s->npiped == 0)
		smtp_resume(s, SMTP_STATE_COMMAND);
}

/*
 * The log's words for a backend's reply to a message: its result
 * (relayed, delivered, the action for a 2xx; tempfail; rejected) and
 * "code first-line" into first.
 */
static const char *
smtp_relay_result(struct smtp_session *s, const struct smtp_reply *r,
    char *first, size_t firstlen)
{
	snprintf(first, firstlen, "%d %.*s", r->code,
	    (int)strcspn(r->text, "\n"), r->text);
	return r->code / 100 == 2 ?
	    deliver_result(deliver_backend(s->dl), smtp_relay_action(s)) :
	    r->code / 100 == 4 ? "tempfail" : "rejected";
}

static void
smtp_relay_message_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	char first[128];
	const char *result;

	if (err != UPSTREAM_OK) {
		smtp_chat_log_message(s, "tempfail", upstream_strerror(err));
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	result = smtp_relay_result(s, r, first, sizeof first);
	smtp_chat_log_message(s, result, first);
	smtp_chat_upstream(s, r, "2.0.0");
	smtp_tx_done(s);
}

/* What the filters decided, as check reports it and the log names it. */
static const char *
smtp_relay_action(struct smtp_session *s)
{
	switch (filter_session_outcome(s->fs)->verdict) {
	case FMX_TAG:
		return "tag";
	case FMX_DISCARD:
		return "discard";
	case FMX_QUARANTINE:
		return "quarantine";
	default:
		return "accept";
	}
}

static struct spool *
smtp_relay_spool(struct smtp_session *s, size_t *off)
{
	if (s->tx->flags & SMTP_TX_NEWBODY) {
		*off = 0;
		return &s->newbody;
	}
	*off = s->tx->eoh_off;
	return &s->spool;
}

/* The message as a backend takes it: envelope, header block, spool. */
static void
smtp_relay_msg(struct smtp_session *s, struct deliver_msg *m)
{
	memset(m, 0, sizeof *m);
	m->queue_id = s->tx->queue_id;
	m->mail_from = s->tx->mail_from;
	m->rcpts = (const char *const *)s->tx->rcpts;
	m->nrcpts = s->tx->nrcpts;
	m->head = s->tx->head;
	m->headlen = s->tx->headlen;
	m->head_prefix = s->tx->head_prefix;
	m->head_added = s->tx->head_added;
	m->spool = smtp_relay_spool(s, &m->spool_off);
	m->action = smtp_relay_action(s);
}

/*
 * Into the quarantine directory: one copy listing every recipient, the
 * reason in its first header field.  0 ok, -1 logged.
 */
int
smtp_relay_quarantine(struct smtp_session *s, const char *note)
{
	struct deliver_msg m;

	smtp_relay_msg(s, &m);
	return deliver_maildir_quarantine(s->cfg, s->id, s->cfg->quarantine_dir,
	    &m, note);
}

/* The message goes to the backend; its reply is the client's. */
static void
smtp_relay_message(struct smtp_session *s)
{
	struct deliver_msg m;

	smtp_enter_state(s, SMTP_STATE_RELAY);
	smtp_relay_msg(s, &m);
	deliver_data(s->dl, &m, smtp_relay_message_reply, s);
}

/*
 * Recipient edits on an SMTP upstream: the upstream already accepted the
 * original RCPTs and SMTP cannot take one back, so the envelope is sent
 * again (RSET, MAIL, every final RCPT) before DATA.
 */

static void
smtp_relay_envelope_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	size_t step = s->tx->replay_i++;

	if (err != UPSTREAM_OK) {
		smtp_chat_log_message(s, "tempfail", upstream_strerror(err));
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (r->code / 100 != 2 && step < 2) {
		/* RSET or MAIL refused: give the client a temporary failure. */
		smtp_chat_log_message(s, "tempfail", "upstream refused new envelope");
		smtp_reply(s, "451 4.3.0 Error: upstream refused the envelope, try again later");
		smtp_tx_done(s);
		return;
	}
	if (r->code / 100 != 2)
		log_info("%016llx upstream refused rcpt=<%s> after edit: %d", s->id,
		    s->tx->rcpts[step - 2], r->code);
	else if (step >= 2)
		s->tx->replay_off++;	/* accepted recipients */
	smtp_relay_envelope_next(s);
}

/*
 * The envelope again, with the parameters the transaction had: SIZE,
 * BODY, SMTPUTF8, RET, ENVID on MAIL, each recipient's NOTIFY and ORCPT
 * (a UTF-8 address must not go out without SMTPUTF8, nor a DSN request
 * be lost).
 */
/*
 * The RCPT line of the transaction's recipient k, as the envelope resend
 * and the LMTP one-recipient transactions send it again: the address and
 * the ESMTP parameters the client gave (or a filter set).
 */
static void
smtp_relay_rcpt_line(const struct smtp_session *s, size_t k, char *line,
    size_t len)
{
	snprintf(line, len, "RCPT TO:<%s>%s", s->tx->rcpts[k],
	    s->tx->rcpt_params[k] != NULL ? s->tx->rcpt_params[k] : "");
}

static void
smtp_relay_envelope_next(struct smtp_session *s)
{
	char line[sizeof s->pending];

	if (s->tx->replay_i == 0) {
		deliver_rset(s->dl, smtp_relay_envelope_reply, s);
		return;
	}
	if (s->tx->replay_i == 1) {
		/* The same connection as the first MAIL: the same line. */
		if (smtp_relay_mail_line(s) != NULL) {
			smtp_chat_log_message(s, "tempfail", "upstream extensions changed");
			smtp_reply(s, "451 4.3.0 Error: the upstream's extensions "
			    "changed, try again later");
			smtp_tx_done(s);
			return;
		}
		deliver_mail(s->dl, s->pending, smtp_relay_envelope_reply, s);
		return;
	}
	if (s->tx->replay_i - 2 < s->tx->nrcpts) {
		smtp_relay_rcpt_line(s, s->tx->replay_i - 2, line, sizeof line);
		deliver_rcpt(s->dl, line, smtp_relay_envelope_reply, s);
		return;
	}
	if (s->tx->replay_off == 0) {
		smtp_chat_log_message(s, "tempfail", "no recipient left after edits");
		smtp_reply(s, "451 4.3.0 Error: no recipient accepted, try again later");
		smtp_tx_done(s);
		return;
	}
	smtp_relay_message(s);
}

/*
 * Recipient edits on an LMTP upstream (DELIVER_F_ONE_RCPT).  The client
 * hears one reply to its final dot and LMTP gives one per recipient, so
 * no single reply can speak for a client's recipient and a filter's
 * together: a 4xx for the filter's would make the client resend a
 * message its own recipient already has, a 5xx bounce a delivered one.
 * So the client's reply is always the reply for one recipient, the
 * first (the client's own: edits delete before they add, so it stays
 * first; when a filter removed it, the first the filters added stands in
 * for it), delivered alone in a transaction of its own.  Only after its
 * 2xx, already written to the client, does each other recipient go in a
 * transaction of its own on the same connection, its reply logged with
 * its address ("message added rcpt=<...> result=... reply=..."), never
 * the client's: like Postfix's always_bcc, the copy is the filter's, and
 * there is no queue here to retry it.  When the first one failed nothing
 * else is delivered, so the client's retry (which runs the filters
 * again) gives no one a second copy.  A recipient equal to an earlier one
 * is skipped: one copy each.
 *
 * The loop's place: tx->replay_off is the recipient, tx->replay_i its step.
 */
enum {
	SMTP_RELAY_LMTP_RSET,
	SMTP_RELAY_LMTP_MAIL,
	SMTP_RELAY_LMTP_RCPT,
	SMTP_RELAY_LMTP_DATA
};

static void	smtp_relay_lmtp_next(struct smtp_session *);

/* 1 when recipient k repeats an earlier one (addresses compare in any case). */
static int
smtp_relay_lmtp_repeat(const struct smtp_session *s, size_t k)
{
	size_t j;

	for (j = 0; j < k; j++)
		if (str_casecmp(s->tx->rcpts[j], s->tx->rcpts[k]) == 0)
			return 1;
	return 0;
}

/* The next recipient's turn, or the end of the message's delivery. */
static void
smtp_relay_lmtp_advance(struct smtp_session *s)
{
	s->tx->replay_i = SMTP_RELAY_LMTP_RSET;
	for (s->tx->replay_off++; s->tx->replay_off < s->tx->nrcpts &&
	    smtp_relay_lmtp_repeat(s, s->tx->replay_off); s->tx->replay_off++)
		log_info("%016llx message added rcpt=<%s> result=skipped "
		    "reply=\"a copy went to it already\"", s->id,
		    s->tx->rcpts[s->tx->replay_off]);
	if (s->tx->replay_off < s->tx->nrcpts)
		smtp_relay_lmtp_next(s);
	else
		smtp_tx_done(s);
}

/*
 * A recipient's outcome: r the server's reply for it, or (r NULL) why it
 * was not delivered.  The first one's is the client's reply (a 451 for
 * why), and only its 2xx lets the others go; a later one's is logged and
 * the client's reply stands, and a broken connection ends the loop with
 * the ones left logged undelivered.
 */
static void
smtp_relay_lmtp_outcome(struct smtp_session *s, enum upstream_err err,
    const struct smtp_reply *r, const char *why)
{
	char first[128];
	const char *result = NULL;
	size_t k;

	if (err != UPSTREAM_OK)
		why = upstream_strerror(err);
	else if (r != NULL)
		result = smtp_relay_result(s, r, first, sizeof first);
	if (s->tx->replay_off == 0) {
		smtp_chat_log_message(s, result ? result : "tempfail",
		    result ? first : why);
		if (err != UPSTREAM_OK) {
			smtp_relay_failed(s, err);
			smtp_resume(s, SMTP_STATE_COMMAND);
			return;
		}
		if (r == NULL)
			smtp_reply(s, "451 4.3.0 Error: %s, try again later", why);
		else
			smtp_chat_upstream(s, r, "2.0.0");
		if (r == NULL || r->code / 100 != 2)
			smtp_tx_done(s);
		else
			smtp_relay_lmtp_advance(s);
		return;
	}
	if (result != NULL) {
		log_info("%016llx message added rcpt=<%s> result=%s reply=\"%s\"",
		    s->id, s->tx->rcpts[s->tx->replay_off], result, first);
		smtp_relay_lmtp_advance(s);
		return;
	}
	if (err != UPSTREAM_OK)
		smtp_relay_close(s);
	for (k = s->tx->replay_off; k < s->tx->nrcpts; k++)
		log_info("%016llx message added rcpt=<%s> result=tempfail "
		    "reply=\"%s\"", s->id, s->tx->rcpts[k], why);
	smtp_tx_done(s);
}

static void
smtp_relay_lmtp_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	size_t step = s->tx->replay_i++;
	const char *why = NULL;

	if (err == UPSTREAM_OK && r->code / 100 == 2 && step < SMTP_RELAY_LMTP_DATA) {
		smtp_relay_lmtp_next(s);
		return;
	}
	/* RSET or MAIL refused says nothing of the recipient: try again later. */
	if (err == UPSTREAM_OK && step < SMTP_RELAY_LMTP_RCPT) {
		why = "upstream refused the envelope";
		r = NULL;
	}
	smtp_relay_lmtp_outcome(s, err, r, why);
}

/* The current recipient's next step: RSET if owed, MAIL, its RCPT, DATA. */
static void
smtp_relay_lmtp_next(struct smtp_session *s)
{
	char line[sizeof s->pending];
	struct deliver_msg m;
	size_t k = s->tx->replay_off;

	smtp_enter_state(s, SMTP_STATE_WAIT);
	switch (s->tx->replay_i) {
	case SMTP_RELAY_LMTP_RSET:
		if (deliver_in_tx(s->dl)) {
			deliver_rset(s->dl, smtp_relay_lmtp_reply, s);
			return;
		}
		s->tx->replay_i = SMTP_RELAY_LMTP_MAIL;
		/* FALLTHROUGH */
	case SMTP_RELAY_LMTP_MAIL:
		/* The same connection as the first MAIL: the same line. */
		if (smtp_relay_mail_line(s) != NULL) {
			smtp_relay_lmtp_outcome(s, UPSTREAM_OK, NULL,
			    "the upstream's extensions changed");
			return;
		}
		deliver_mail(s->dl, s->pending, smtp_relay_lmtp_reply, s);
		return;
	case SMTP_RELAY_LMTP_RCPT:
		smtp_relay_rcpt_line(s, k, line, sizeof line);
		deliver_rcpt(s->dl, line, smtp_relay_lmtp_reply, s);
		return;
	case SMTP_RELAY_LMTP_DATA:
		smtp_enter_state(s, SMTP_STATE_RELAY);
		smtp_relay_msg(s, &m);
		m.rcpts = (const char *const *)&s->tx->rcpts[k];
		m.nrcpts = 1;
		deliver_data(s->dl, &m, smtp_relay_lmtp_reply, s);
		return;
	default:
		fatalx("smtp_relay_lmtp_next: bad step %zu", s->tx->replay_i);
	}
}

/*
 * A DELIVER_F_REPORT backend (`frontmx check`) is given a discard or a
 * quarantine as a message, to report instead of doing it: 1 when it
 * was (the reply comes from the backend), 0 for the caller to act.
 */
int
smtp_relay_reported(struct smtp_session *s, enum fmx_verdict verdict)
{
	if (!(deliver_flags(deliver_backend(s->dl)) & DELIVER_F_REPORT) ||
	    (verdict != FMX_DISCARD && verdict != FMX_QUARANTINE))
		return 0;
	smtp_relay_message(s);
	return 1;
}

/*
 * The message is to go on, with its header block built: recipient edits
 * on a backend that already has the RCPTs (SMTP, LMTP) send the
 * envelope again first.
 */
void
smtp_relay_deliver(struct smtp_session *s, int rcpts_changed)
{
	unsigned flags = deliver_flags(deliver_backend(s->dl));

	if (rcpts_changed && (flags & DELIVER_F_ENVELOPE)) {
		s->tx->replay_i = 0;
		s->tx->replay_off = 0;
		smtp_enter_state(s, SMTP_STATE_WAIT);
		if (flags & DELIVER_F_ONE_RCPT)
			smtp_relay_lmtp_next(s);
		else
			smtp_relay_envelope_next(s);
		return;
	}
	smtp_relay_message(s);
}
