/*
 * smtp_relay.c - the delivery side: upstream SMTP, dir:, check
 *
 * DESCRIPTION
 *	Everything that talks to where the mail goes.  The upstream's
 *	capabilities decide what the client is offered
 *	(smtp_relay_offer_flags, smtp_relay_size_limit).  MAIL opens (or
 *	reuses, after RSET when owed) the upstream connection and is relayed
 *	with the parameters this connection allows (smtp_relay_mail_line);
 *	RCPT follows; the message is sent from the spool with the header
 *	block built at eom.  Recipient edits make the envelope go again
 *	(RSET, MAIL, every RCPT).  A dir: upstream writes the message into a
 *	Maildir instead, and `frontmx check` reports instead of delivering.
 *
 *	Every upstream failure becomes a 4xx to the client and closes the
 *	upstream connection (smtp_relay_failed): nothing is lost.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "filter_chain.h"
#include "log.h"
#include "maildir.h"
#include "smtp_int.h"
#include "smtp_session.h"
#include "spool.h"
#include "upstream.h"

static smtp_check_fn smtp_check_cb;
static void *smtp_check_arg;

static const char *smtp_relay_mail_line(struct smtp_session *);
static void	smtp_relay_envelope_next(struct smtp_session *);

/*
 * Drop the upstream connection (none is fine): the next MAIL opens a
 * fresh one.
 */
void
smtp_relay_close(struct smtp_session *s)
{
	upstream_close(s->up);
	s->up = NULL;
}

/*
 * The session stops (closing, or freed next): an upstream operation in
 * flight drops its connection, so a message the client will hear nothing
 * about is not relayed on.  An idle connection stays for smtp_relay_close.
 */
void
smtp_relay_cancel(struct smtp_session *s)
{
	if (s->up != NULL && !upstream_idle(s->up))
		smtp_relay_close(s);
}

void
smtp_relay_failed(struct smtp_session *s, enum upstream_err err)
{
	smtp_relay_close(s);
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
	smtp_tx_reset(s);
}

/*
 * The upstream's extensions: the connection's own once it is open, else
 * the last the upstream told anyone (upstream_caps_set).  Before it ever
 * answered, 8BITMIME, SMTPUTF8 and DSN are assumed (README
 * "Capabilities"): not offering them would make senders downgrade 8-bit
 * bodies (breaking DKIM) or bounce SMTPUTF8 mail, while a transaction that
 * needs one the upstream then lacks only gets a 451 (smtp_relay_mail_line).
 */
static void
smtp_relay_caps(const struct smtp_session *s, struct smtp_ehlo_caps *caps)
{
	const struct smtp_ehlo_caps *c;
	int known;

	if (s->up != NULL && (c = upstream_caps(s->up)) != NULL) {
		*caps = *c;
		return;
	}
	upstream_caps_get(caps, &known);
	if (!known) {
		memset(caps, 0, sizeof *caps);
		caps->flags = SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8 |
		    SMTP_EHLO_DSN;
	}
}

int
smtp_relay_has(const struct smtp_session *s, unsigned flag)
{
	struct smtp_ehlo_caps caps;

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return 0;
	smtp_relay_caps(s, &caps);
	return (caps.flags & flag) != 0;
}

/*
 * The pass-through extensions to advertise: 8BITMIME and SMTPUTF8 when
 * the upstream has them (a dir: upstream stores 8-bit content as is),
 * DSN only with the upstream's own support (a Maildir sends none).
 */
unsigned
smtp_relay_offer_flags(const struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8;
	smtp_relay_caps(s, &caps);
	return caps.flags & (SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8 |
	    SMTP_EHLO_DSN);
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

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return lim;
	smtp_relay_caps(s, &caps);
	if ((caps.flags & SMTP_EHLO_SIZE) && caps.size > 0 && caps.size < lim)
		lim = caps.size;
	return lim;
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
	if (err == UPSTREAM_ERR_CLOSED && s->up_reused && !s->mail_retried) {
		s->mail_retried = 1;
		upstream_close(s->up);
		s->up = NULL;
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
		free(s->mail_from);
		s->mail_from = NULL;
	}
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_relay_rset_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK || r->code != 250) {
		/* Out of step with the upstream: start over with a new connection. */
		upstream_close(s->up);
		s->up = NULL;
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
		upstream_command_secret(s->up, s->pending, s->pending_cb, s);
		return;
	}
	if ((missing = smtp_relay_mail_line(s)) != NULL) {
		/* Offered at EHLO, gone now: the client tries again later. */
		log_info("%016llx upstream lacks %s offered to the client",
		    s->id, missing);
		smtp_reply(s, "451 4.3.0 Error: the upstream no longer offers "
		    "%s, try again later", missing);
		free(s->mail_from);
		s->mail_from = NULL;
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	upstream_command(s->up, s->pending, s->pending_cb, s);
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

/* Open (or reuse, after RSET if owed) the upstream, then relay MAIL. */
void
smtp_relay_mail_start(struct smtp_session *s)
{
	struct upstream_client cl;
	struct event_base *base;

	/* The MTA closed an idle connection (its own timeout): just reopen. */
	if (s->up != NULL && !upstream_idle(s->up)) {
		upstream_close(s->up);
		s->up = NULL;
	}
	/*
	 * The upstream's own record of its transaction, not ours: a refused
	 * DATA, a message our filters stopped, a client RSET or EHLO all
	 * leave its MAIL open, and only RSET (or a new connection) ends it.
	 */
	if (s->up != NULL && upstream_in_tx(s->up)) {
		upstream_command(s->up, "RSET", smtp_relay_rset_reply, s);
		return;
	}
	if (s->up != NULL) {
		s->up_reused = 1;
		smtp_relay_send_pending(s);
		return;
	}
	s->up_reused = 0;
	memset(&cl, 0, sizeof cl);
	cl.addr = s->addr;
	cl.ipv6 = s->sa.ss_family == AF_INET6;
	cl.port = s->port;
	cl.helo = s->helo;
	cl.esmtp = s->esmtp;
	cl.require_tls = s->tls == SMTP_TLS_ACTIVE &&
	    s->cfg->upstream_tls_if_client_tls;
	cl.name = s->rdns == SMTP_RDNS_OK ? s->name :
	    s->rdns == SMTP_RDNS_TEMP ? "[TEMPUNAVAIL]" : "[UNAVAILABLE]";
	base = bufferevent_get_base(s->bev);
	s->up = upstream_open(base, s->cfg, &cl, s->id, smtp_relay_opened, s);
	if (s->up == NULL) {
		smtp_relay_failed(s, UPSTREAM_ERR_LOCAL);
		smtp_resume(s, SMTP_STATE_COMMAND);
	}
}

/*
 * MAIL passed the filters: relay it (opening the upstream), or, for a
 * dir: or check upstream that takes nothing before the message, 250.
 */
void
smtp_relay_mail(struct smtp_session *s)
{
	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP) {
		smtp_reply(s, "250 2.1.0 Ok");
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
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
	if (s->tx_utf8 && !(caps.flags & SMTP_EHLO_SMTPUTF8))
		return "SMTPUTF8";
	if (s->tx_body == 8 && !(caps.flags & SMTP_EHLO_8BITMIME))
		return "8BITMIME";
	if ((s->tx_ret || s->tx_envid[0]) && !(caps.flags & SMTP_EHLO_DSN))
		return "DSN";
	n = snprintf(line, linelen, "MAIL FROM:<%s>", s->mail_from);
	if (n < 0 || (size_t)n >= linelen)
		fatalx("smtp_relay_mail_line: path over limit");
	used = (size_t)n;
	for (i = 0; i < s->tx_nparams; i++) {
		switch (s->tx_order[i]) {
		case SMTP_MAIL_SIZE:
			if (!(caps.flags & SMTP_EHLO_SIZE))
				continue;
			n = snprintf(line + used, linelen - used, " SIZE=%llu",
			    s->tx_size);
			break;
		case SMTP_MAIL_SMTPUTF8:
			n = snprintf(line + used, linelen - used, " SMTPUTF8");
			break;
		case SMTP_MAIL_RET:
			n = snprintf(line + used, linelen - used, " RET=%s",
			    s->tx_ret == 1 ? "FULL" : "HDRS");
			break;
		case SMTP_MAIL_ENVID:
			n = snprintf(line + used, linelen - used, " ENVID=%s",
			    s->tx_envid);
			break;
		case SMTP_MAIL_BODY:
			if (s->tx_body == 7 && !(caps.flags & SMTP_EHLO_8BITMIME))
				continue;
			n = snprintf(line + used, linelen - used, " BODY=%s",
			    s->tx_body == 8 ? "8BITMIME" : "7BIT");
			break;
		default:
			fatalx("smtp_relay_mail_line: bad parameter %d", s->tx_order[i]);
		}
		if (n < 0 || (size_t)n >= linelen - used)
			fatalx("smtp_relay_mail_line: line over limit");
		used += (size_t)n;
	}
	return NULL;
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
	smtp_chat_upstream(s, r, "2.1.5");
	if (r->code / 100 == 2)
		smtp_mail_rcpt_accepted(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

/* RCPT passed the filters: relay s->pending, or accept it here. */
void
smtp_relay_rcpt(struct smtp_session *s)
{
	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP) {
		smtp_reply(s, "250 2.1.5 Ok");
		smtp_mail_rcpt_accepted(s);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	upstream_command(s->up, s->pending, smtp_relay_rcpt_reply, s);
}

static void
smtp_relay_message_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	char first[128];

	if (err != UPSTREAM_OK) {
		smtp_chat_log_message(s, "tempfail", upstream_strerror(err));
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	snprintf(first, sizeof first, "%d %.*s", r->code,
	    (int)strcspn(r->text, "\n"), r->text);
	smtp_chat_log_message(s, r->code / 100 == 2 ? "relayed" :
	    r->code / 100 == 4 ? "tempfail" : "rejected", first);
	smtp_chat_upstream(s, r, "2.0.0");
	smtp_tx_done(s);
}

static struct spool *
smtp_relay_spool(struct smtp_session *s, size_t *off)
{
	if (s->use_newbody) {
		*off = 0;
		return &s->newbody;
	}
	*off = s->eoh_off;
	return &s->spool;
}

/*
 * Write the message into a Maildir-style directory: the dir: upstream
 * (one copy per recipient) or the quarantine (one copy, every recipient
 * listed).  0 ok, -1 logged.
 */
int
smtp_relay_write_dir(struct smtp_session *s, const char *dir, int single,
    const char *note)
{
	struct maildir_request req;
	char err[512];

	memset(&req, 0, sizeof req);
	req.dir = dir;
	req.hostname = s->cfg->hostname;
	req.mail_from = s->mail_from;
	req.rcpts = (const char *const *)s->rcpts;
	req.nrcpts = s->nrcpts;
	req.prepend = s->head;
	req.prependlen = s->headlen;
	req.spool = smtp_relay_spool(s, &req.spool_off);
	req.single = single;
	req.note = note;
	if (maildir_deliver(&req, err, sizeof err) == -1) {
		log_warn("%016llx maildir dir=%s error=\"%s\"", s->id, dir, err);
		return -1;
	}
	return 0;
}

void
smtp_session_set_check(smtp_check_fn fn, void *arg)
{
	smtp_check_cb = fn;
	smtp_check_arg = arg;
}

/* `frontmx check`: report instead of delivering; the client sees 250. */
static void
smtp_relay_check_deliver(struct smtp_session *s, const char *action)
{
	struct smtp_check_report r;
	char *added;
	size_t n;

	n = s->head_prefix + (s->headlen - s->head_added);
	if ((added = malloc(n + 1)) == NULL)
		fatalx("out of memory");
	memcpy(added, s->head, s->head_prefix);
	memcpy(added + s->head_prefix, s->head + s->head_added,
	    s->headlen - s->head_added);
	added[n] = '\0';
	r.action = action;
	r.added = added;
	r.addedlen = n;
	if (smtp_check_cb != NULL)
		smtp_check_cb(smtp_check_arg, &r);
	free(added);
	smtp_chat_log_message(s, action, "check");
	smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
	smtp_tx_done(s);
}

static void
smtp_relay_message(struct smtp_session *s)
{
	struct spool *sp;
	size_t off;

	if (s->cfg->upstream_kind == CONFIG_UPSTREAM_CHECK) {
		smtp_relay_check_deliver(s, filter_session_outcome(s->fs)->verdict ==
		    FMX_TAG ? "tag" : "accept");
		return;
	}

	if (s->cfg->upstream_kind == CONFIG_UPSTREAM_DIR) {
		if (smtp_relay_write_dir(s, s->cfg->upstream_dir, 0, NULL) == -1) {
			smtp_chat_log_message(s, "tempfail", "local delivery failed");
			smtp_reply(s, "451 4.3.0 Error: local delivery failed, try again later");
		} else {
			smtp_chat_log_message(s, "delivered", "250 maildir");
			smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		}
		smtp_tx_done(s);
		return;
	}
	smtp_enter_state(s, SMTP_STATE_RELAY);
	sp = smtp_relay_spool(s, &off);
	upstream_send_message(s->up, s->head, s->headlen, sp, off,
	    smtp_relay_message_reply, s);
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
	size_t step = s->replay_i++;

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
		    s->rcpts[step - 2], r->code);
	else if (step >= 2)
		s->replay_off++;	/* accepted recipients */
	smtp_relay_envelope_next(s);
}

/*
 * The envelope again, with the parameters the transaction had: SIZE,
 * BODY, SMTPUTF8, RET, ENVID on MAIL, each recipient's NOTIFY and ORCPT
 * (a UTF-8 address must not go out without SMTPUTF8, nor a DSN request
 * be lost).
 */
static void
smtp_relay_envelope_next(struct smtp_session *s)
{
	char line[sizeof s->pending];

	if (s->replay_i == 0) {
		upstream_command(s->up, "RSET", smtp_relay_envelope_reply, s);
		return;
	}
	if (s->replay_i == 1) {
		/* The same connection as the first MAIL: the same line. */
		if (smtp_relay_mail_line(s) != NULL) {
			smtp_chat_log_message(s, "tempfail", "upstream extensions changed");
			smtp_reply(s, "451 4.3.0 Error: the upstream's extensions "
			    "changed, try again later");
			smtp_tx_done(s);
			return;
		}
		upstream_command(s->up, s->pending, smtp_relay_envelope_reply, s);
		return;
	}
	if (s->replay_i - 2 < s->nrcpts) {
		snprintf(line, sizeof line, "RCPT TO:<%s>%s", s->rcpts[s->replay_i - 2],
		    s->rcpt_params[s->replay_i - 2] ? s->rcpt_params[s->replay_i - 2] : "");
		upstream_command(s->up, line, smtp_relay_envelope_reply, s);
		return;
	}
	if (s->replay_off == 0) {
		smtp_chat_log_message(s, "tempfail", "no recipient left after edits");
		smtp_reply(s, "451 4.3.0 Error: no recipient accepted, try again later");
		smtp_tx_done(s);
		return;
	}
	smtp_relay_message(s);
}

/*
 * `frontmx check` reports a discard or a quarantine instead of doing it:
 * 1 when it did (the transaction is over), 0 for the caller to act.
 */
int
smtp_relay_reported(struct smtp_session *s, enum fmx_verdict verdict)
{
	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_CHECK ||
	    (verdict != FMX_DISCARD && verdict != FMX_QUARANTINE))
		return 0;
	smtp_relay_check_deliver(s, verdict == FMX_DISCARD ? "discard" :
	    "quarantine");
	return 1;
}

/*
 * The message is to go on, with its header block built: recipient edits
 * on an SMTP upstream send the envelope again first.
 */
void
smtp_relay_deliver(struct smtp_session *s, int rcpts_changed)
{
	if (rcpts_changed && s->cfg->upstream_kind == CONFIG_UPSTREAM_SMTP) {
		s->replay_i = 0;
		s->replay_off = 0;
		smtp_enter_state(s, SMTP_STATE_WAIT);
		smtp_relay_envelope_next(s);
		return;
	}
	smtp_relay_message(s);
}
