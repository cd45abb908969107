/*
 * smtp_session.c - SMTP server session: lifecycle, input, state, verbs
 *
 * DESCRIPTION
 *	The client side of the proxy, one session per connection.  Read the
 *	smtp_* files in this order to follow one message:
 *
 *	smtp_session.c	start, the state funnel (smtp_enter_state), reading
 *			and framing commands, the verb table (smtp_verbs:
 *			preconditions, syntax, filter phase), the completion
 *			funnel for filter verdicts (smtp_filter_done), end
 *			and free
 *	smtp_peer.c	who the client is: PROXY header, forward-confirmed rDNS,
 *			HELO/EHLO, STARTTLS
 *	smtp_chat.c	replies to the client and the output side
 *	smtp_auth.c	AUTH, relayed to the upstream
 *	smtp_tx.c	struct smtp_tx: one transaction, made at MAIL
 *	smtp_mail.c	MAIL and RCPT with their parameters
 *	smtp_data.c	DATA and BDAT: the message into the spool
 *	smtp_eom.c	end of message: filter replay, decision, header edits
 *	smtp_relay.c	everything that talks to the delivery side
 *	smtp_int.h	struct smtp_session, struct smtp_tx, the verb and step
 *			structs, the family's shared prototypes
 *
 *	Commands are framed strictly (CRLF only, bounded, no NUL); each verb
 *	runs check (its row's preconditions, then its own) -> filter phase
 *	(struct smtp_step) -> proceed.  The session never calls its owner:
 *	the worker (or `frontmx check`) hands it a struct smtp_host.  The proxy answers everything
 *	but MAIL, RCPT, AUTH and the message itself (greeting, EHLO, 354,
 *	RSET, NOOP, ...).  Replies leave in command order because the session
 *	handles one command at a time and does not read the next one while an
 *	upstream reply or a filter verdict is outstanding (RFC 2920
 *	pipelining only needs the order to hold, not concurrency).  The one
 *	exception is smtp_relay.c's pipelined group to the upstream: MAIL and
 *	RCPTs queued while the next buffered line is a RCPT, their replies
 *	owed in order, any reply decided meanwhile held behind them
 *	(smtp_chat_out), and no other command read until the group's replies
 *	are in (smtp_relay_pipe_gate).
 *
 *	Nothing the client wrote is forwarded as raw bytes: the upstream sees
 *	command lines rebuilt from parsed addresses and parameters, and a
 *	message re-serialised from the spool with the proxy's own dot-stuffing
 *	and terminator.  A bare CR or LF, or a NUL, in a command or a message
 *	line is an error, never a line end, so "\n.\n" and friends can never
 *	end a message here (SMTP smuggling, SECURITY.md 1).
 *
 *	Nothing is lost: the client sees 250 for a message only when the
 *	upstream said 2xx for it (or the dir: upstream fsync'd it).  Any
 *	upstream failure is a 4xx to the client, and the next MAIL opens a
 *	fresh upstream connection.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>

#include "bev.h"
#include "config.h"
#include "dns.h"
#include "filter_chain.h"
#include "limit.h"
#include "log.h"
#include "metrics.h"
#include "netaddr.h"
#include "runtime.h"
#include "smtp_frame.h"
#include "smtp_int.h"
#include "smtp_parse.h"
#include "smtp_session.h"
#include "spool.h"
#include "strutil.h"
#include "tls.h"

static atomic_ullong smtp_session_seq;

static const char *const smtp_state_names[SMTP_STATE_COUNT] = {
	[SMTP_STATE_PROXY] = "proxy",
	[SMTP_STATE_CONNECT] = "connect",
	[SMTP_STATE_COMMAND] = "command",
	[SMTP_STATE_WAIT] = "wait",
	[SMTP_STATE_DATA] = "data",
	[SMTP_STATE_BDAT] = "bdat",
	[SMTP_STATE_AUTH] = "auth",
	[SMTP_STATE_RELAY] = "relay",
	[SMTP_STATE_QUIT] = "quit",
};

static void	smtp_process_once(struct smtp_session *s);
static void	smtp_timed_out(struct smtp_session *s);
static void	smtp_cancel_async(struct smtp_session *s);

/*
 * Timeouts bound a whole wait, not the gap between two bytes: a peer that
 * trickles one byte at a time must not hold its slot for ever.  One timer
 * per session bounds the wait for one command or SASL line
 * (timeouts.command), for the PROXY header, and for the message being
 * received as a whole (timeouts.data: from DATA's 354 or the first BDAT
 * chunk to the end of the data, the commands between BDAT chunks
 * included).  Within the message, RFC 5321 4.5.3.2's data block timeout
 * stays the bufferevent's read timeout, restarted by every chunk.  While
 * the session waits for a filter or the upstream, their own timeouts
 * bound the wait.
 */
static void
smtp_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtp_timed_out(arg);
}

/* Time out secs from now (0: not at all), or when the message's time is up. */
static void
smtp_deadline(struct smtp_session *s, unsigned secs)
{
	struct timeval tv = { .tv_sec = secs, .tv_usec = 0 };
	struct timespec now;
	long long left;

	if (s->data_by.tv_sec != 0) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = ((long long)s->data_by.tv_sec - now.tv_sec) * 1000000 +
		    (s->data_by.tv_nsec - now.tv_nsec) / 1000;
		if (left < 0)
			left = 0;
		if (secs == 0 || left < (long long)secs * 1000000) {
			tv.tv_sec = left / 1000000;
			tv.tv_usec = left % 1000000;
		}
	} else if (secs == 0) {
		evtimer_del(s->deadline);
		return;
	}
	if (evtimer_add(s->deadline, &tv) == -1)
		fatalx("smtp: cannot set a timeout");
}

/* The session waits for a client line: time the whole wait, once. */
static void
smtp_line_wait(struct smtp_session *s)
{
	if (s->flags & SMTP_F_LINE_TIMED)
		return;
	smtp_deadline(s, s->cfg->timeouts.command);
	s->flags |= SMTP_F_LINE_TIMED;
}

/* The message's data ended (or never will): its time bound is over. */
void
smtp_data_clock_stop(struct smtp_session *s)
{
	s->data_by.tv_sec = 0;
	s->data_by.tv_nsec = 0;
}

/*
 * Read from the client again, unless it already shut its side: libevent
 * stopped reading at its end of file, and reading again would only report
 * that end once more.
 */
void
smtp_read_on(struct smtp_session *s)
{
	if (!(s->flags & SMTP_F_EOF))
		bufferevent_enable(s->bev, EV_READ);
}

void
smtp_enter_state(struct smtp_session *s, enum smtp_state state)
{
	struct timeval tv = { 0 };

	if (state >= SMTP_STATE_COUNT)
		fatalx("smtp: bad state %d", state);
	log_debug("%016llx smtp %s -> %s", s->id, smtp_state_names[s->state],
	    smtp_state_names[state]);
	s->state = state;
	switch (state) {
	case SMTP_STATE_PROXY:
		bufferevent_set_timeouts(s->bev, NULL, NULL);
		smtp_deadline(s, SMTP_PROXY_TIMEOUT);
		break;
	case SMTP_STATE_COMMAND:
	case SMTP_STATE_AUTH:
		/* Reading: the deadline.  Writing: the client must keep up. */
		tv.tv_sec = s->cfg->timeouts.command;
		bufferevent_set_timeouts(s->bev, NULL, &tv);
		s->flags &= ~SMTP_F_LINE_TIMED;
		smtp_line_wait(s);
		if (state == SMTP_STATE_AUTH || !(s->flags & SMTP_F_OUTPUT_FULL))
			smtp_read_on(s);
		break;
	case SMTP_STATE_DATA:
	case SMTP_STATE_BDAT:
		tv.tv_sec = s->cfg->timeouts.data_block;
		bufferevent_set_timeouts(s->bev, &tv, &tv);
		/* The first chunk starts the clock (a refused chunk has its own). */
		if (s->data_by.tv_sec == 0) {
			clock_gettime(CLOCK_MONOTONIC, &s->data_by);
			s->data_by.tv_sec += s->cfg->timeouts.data;
		}
		smtp_deadline(s, 0);
		smtp_read_on(s);
		break;
	case SMTP_STATE_CONNECT:
	case SMTP_STATE_WAIT:
	case SMTP_STATE_RELAY:
		/*
		 * The client is waiting for us, not the other way round.  Keep
		 * reading (pipelined input is buffered up to the watermark and
		 * a vanished client is noticed at once, so nothing half-done is
		 * relayed for it), but stretch its read timeout past the
		 * upstream's own, which is what bounds this wait.  Toggling
		 * EV_READ instead would cost two epoll_ctl calls per command.
		 */
		tv.tv_sec = s->cfg->timeouts.command +
		    s->cfg->timeouts.upstream_data_end +
		    s->cfg->timeouts.upstream_connect;
		bufferevent_set_timeouts(s->bev, &tv, NULL);
		evtimer_del(s->deadline);
		break;
	case SMTP_STATE_QUIT:
		smtp_cancel_async(s);
		evtimer_del(s->deadline);
		bufferevent_disable(s->bev, EV_READ);
		/*
		 * Free only once every byte of the last reply is gone: libevent
		 * writes it and calls smtp_chat_writecb.  With nothing left to write
		 * that callback never comes, so a zero timer frees instead.
		 */
		bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
		tv.tv_sec = SMTP_QUIT_TIMEOUT;
		bufferevent_set_timeouts(s->bev, NULL, &tv);
		/* Plain: write the last reply now, EV_WRITE only for a rest (bev.h). */
		if (bev_direct(s->bev))
			bev_flush(s->bev);
		else
			bufferevent_enable(s->bev, EV_WRITE);
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
		    smtp_chat_quit_later(s) == -1)
			fatalx("smtp: cannot schedule the close");
		break;
	default:
		fatalx("smtp: bad state %d", state);
	}
}

/* Refresh the chain's view of the session before a phase runs. */
void
smtp_facts(struct smtp_session *s)
{
	struct filter_facts *f = &s->facts;

	f->session_id = s->id;
	f->client_addr = s->addr;
	f->client_port = s->port;
	f->client_name = s->name;
	f->helo = s->helo[0] ? s->helo : NULL;
	f->tls = s->tls == SMTP_TLS_ACTIVE ? s->tls_desc : NULL;
	f->auth = s->auth_id;
	f->mail_from = s->tx ? s->tx->mail_from : NULL;
	f->rcpts = s->tx ? (const char *const *)s->tx->rcpts : NULL;
	f->nrcpts = s->tx ? s->tx->nrcpts : 0;
	f->queue_id = s->tx && s->tx->queue_id[0] ? s->tx->queue_id : NULL;
	f->policy = s->tx ? s->tx->policy : NULL;
	f->mail_args = s->tx ? s->tx->mail_args : NULL;
	f->rcpt_args = s->pending_dsn[0] == ' ' ? s->pending_dsn + 1 :
	    s->pending_dsn[0] ? s->pending_dsn : NULL;
	f->auth_type = s->auth_id != NULL ? s->auth_mech : NULL;
	f->daemon_addr = s->daemon_addr;
	f->daemon_port = s->daemon_port;
}

/*
 * Filter verdicts other than continue/accept end the command here.  The
 * reply a filter supplies was validated by the chain; the defaults name the
 * phase so an admin can tell which check refused.
 */
int
smtp_filter_refused(struct smtp_session *s, const struct filter_result *res,
    const char *what)
{
	char reply[FILTER_REPLY_MAX];

	if (smtp_filter_reply(res, what, reply, sizeof reply) == NULL)
		return 0;	/* message verdicts wait for the end of the message */
	smtp_reply(s, "%s", reply);
	/* The reply the client got, as Postfix logs a reject: its first line. */
	log_info("%016llx smtp refused=%s client=%s filter=%s verdict=%s "
	    "reply=\"%.*s\"", s->id, what, s->addr, res->filter,
	    res->verdict == FMX_REJECT ? "reject" : "tempfail",
	    (int)strcspn(reply, "\n"), reply);
	/*
	 * RFC 5321 3.8: a 421 says the channel is closing, and it is (a
	 * milter's SMFIR_SHUTDOWN, a module's or milter's own "421 ..."):
	 * no command behind it is answered, nothing of the transaction it
	 * ended is relayed.  The step's refused callback still runs, for
	 * its logging and cleanup; its resume finds the session quitting.
	 */
	if (strncmp(reply, "421", 3) == 0 && s->state != SMTP_STATE_QUIT) {
		log_info("%016llx smtp closing reason=filter-421 filter=%s "
		    "client=%s", s->id, res->filter, s->addr);
		smtp_relay_close(s);
		smtp_enter_state(s, SMTP_STATE_QUIT);
	}
	return 1;
}

/*
 * The reply a filter's refusal gives the client: the one the filter set
 * (validated by the chain), or a default naming the phase so an admin
 * can tell which check refused.  NULL when the verdict refuses nothing.
 */
const char *
smtp_filter_reply(const struct filter_result *res, const char *what,
    char *buf, size_t len)
{
	int connect;

	switch (res->verdict) {
	case FMX_REJECT:
	case FMX_TEMPFAIL:
		/*
		 * A refused connection gets its reply as the greeting and is
		 * closed: RFC 5321 3.1 and 4.2.5 give 554 and 421 for that.
		 */
		connect = strcmp(what, "connection") == 0;
		if (res->reply[0])
			snprintf(buf, len, "%s", res->reply);
		else if (res->verdict == FMX_REJECT)
			snprintf(buf, len, "%s 5.7.1 %s rejected by policy",
			    connect ? "554" : "550", what);
		else
			snprintf(buf, len, "%s 4.7.1 %s deferred by policy%s",
			    connect ? "421" : "451", what,
			    connect ? ", try again later" : "");
		return buf;
	default:
		return NULL;
	}
}

/* Resume the command loop after an asynchronous step finished. */
void
smtp_resume(struct smtp_session *s, enum smtp_state state)
{
	if (s->state != SMTP_STATE_QUIT)
		smtp_enter_state(s, state);
	if (!(s->flags & SMTP_F_PROCESSING))
		smtp_process(s);
}

/*
 * The completion funnel: every filter phase's verdict comes back here
 * (struct smtp_step).  The phase running is s->step: one at a time, and
 * a session that stops cancels it first (smtp_cancel_async).  A module's
 * api->resume() lands here from the event loop, never inside resume()
 * (filter_chain_call_resumed): what the module holds outlives its callback.
 */
static void
smtp_filter_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;
	const struct smtp_step *st = s->step;

	if (st->what != NULL && smtp_filter_refused(s, res, st->what)) {
		if (st->refused != NULL)
			st->refused(s, res);
		else
			smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	st->proceed(s, res);
}

/* Run st's phase with a; the caller refreshed s->facts (smtp_facts). */
void
smtp_filter_run(struct smtp_session *s, const struct smtp_step *st,
    const struct filter_args *a)
{
	s->step = st;
	filter_session_run(s->fs, st->phase, a, smtp_filter_done, s);
}

/* Run st's phase with str as its argument. */
void
smtp_filter(struct smtp_session *s, const struct smtp_step *st,
    const char *str)
{
	struct filter_args a;

	memset(&a, 0, sizeof a);
	a.str = str;
	smtp_facts(s);
	smtp_filter_run(s, st, &a);
}

/* The current verb's phase (its row's step): the client waits for it. */
void
smtp_verb_filter(struct smtp_session *s, const char *str)
{
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_filter(s, s->verb->step, str);
}

/* A refused name is forgotten: the client must say HELO/EHLO again. */
/* The HELO/EHLO reply, EHLO's with what the proxy itself honours. */
static int
smtp_cmd_rset(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_tx_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
	return SMTP_VERB_OK;
}

static int
smtp_cmd_noop(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "250 2.0.0 Ok");
	return SMTP_VERB_OK;
}

static int
smtp_cmd_quit(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "221 2.0.0 Bye");
	smtp_enter_state(s, SMTP_STATE_QUIT);
	return SMTP_VERB_OK;
}

static int
smtp_cmd_vrfy(struct smtp_session *s, const char *args)
{
	(void)args;
	/* RFC 5321 3.5.3: 252 when we won't verify but will accept mail. */
	smtp_reply(s, "252 2.0.0 Send some mail, I'll try my best");
	return SMTP_VERB_OK;
}

static int
smtp_cmd_help(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
	return SMTP_VERB_OK;
}

static int
smtp_cmd_not_implemented(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_error(s, "502 5.5.1 Error: command not implemented");
	return SMTP_VERB_OK;
}

/*
 * The verbs and what each needs before it runs (SMTP_VERB_* in smtp_int.h).
 * PRE_TLS: allowed before STARTTLS on a listener that requires TLS (RFC
 * 3207 4: NOOP, EHLO, STARTTLS and QUIT; the rest get 530).  IN_BDAT:
 * allowed between a BDAT transaction's chunks (RFC 3030 2: BDAT, RSET,
 * NOOP, QUIT; the rest get 503 until BDAT LAST).  BDAT reads its chunk
 * before its preconditions are checked (CHUNK).  GROUP_END: the verbs after
 * which a pipelining client must wait for the reply (RFC 2920 3.1: EHLO,
 * DATA, VRFY, EXPN, TURN, QUIT, NOOP; and, as Postfix does, HELO,
 * STARTTLS and AUTH, whose replies change what may follow): their replies
 * are written at once, never held with a group (smtp_chat_hold).
 */
#define GROUP_END	SMTP_VERB_GROUP_END
#define PRE_TLS		SMTP_VERB_PRE_TLS
#define NEED_MAIL	SMTP_VERB_NEED_MAIL
#define IN_BDAT		SMTP_VERB_IN_BDAT
static const struct smtp_verb smtp_verbs[] = {
	/* verb, its syntax for 501, preconditions, filter phase, function */
	{ SMTP_CMD_HELO, "HELO hostname", SMTP_VERB_ARGS | GROUP_END,
	    &smtp_peer_step_helo, smtp_peer_cmd_helo },
	{ SMTP_CMD_EHLO, "EHLO hostname", SMTP_VERB_ARGS | PRE_TLS | GROUP_END,
	    &smtp_peer_step_helo, smtp_peer_cmd_ehlo },
	{ SMTP_CMD_MAIL, NULL, SMTP_VERB_NEED_HELO,
	    &smtp_mail_step_mail, smtp_mail_cmd_mail },
	{ SMTP_CMD_RCPT, NULL, NEED_MAIL,
	    &smtp_mail_step_rcpt, smtp_mail_cmd_rcpt },
	{ SMTP_CMD_DATA, "DATA", SMTP_VERB_NO_ARGS | NEED_MAIL | SMTP_VERB_NEED_RCPT | GROUP_END,
	    &smtp_data_step_data, smtp_data_cmd_data },
	{ SMTP_CMD_BDAT, NULL, SMTP_VERB_CHUNK | NEED_MAIL | SMTP_VERB_NEED_RCPT |
	    IN_BDAT, &smtp_data_step_bdat, smtp_data_cmd_bdat },
	{ SMTP_CMD_RSET, "RSET", SMTP_VERB_NO_ARGS | IN_BDAT, NULL,
	    smtp_cmd_rset },
	{ SMTP_CMD_NOOP, NULL, PRE_TLS | IN_BDAT | GROUP_END, NULL, smtp_cmd_noop },
	{ SMTP_CMD_QUIT, NULL, PRE_TLS | IN_BDAT | GROUP_END, NULL, smtp_cmd_quit },
	{ SMTP_CMD_VRFY, "VRFY address", SMTP_VERB_ARGS | GROUP_END, NULL, smtp_cmd_vrfy },
	{ SMTP_CMD_HELP, NULL, 0, NULL, smtp_cmd_help },
	{ SMTP_CMD_STARTTLS, "STARTTLS", SMTP_VERB_NO_ARGS | PRE_TLS | GROUP_END, NULL,
	    smtp_peer_cmd_starttls },
	/* After STARTTLS the client must EHLO again (RFC 3207 4.2). */
	{ SMTP_CMD_AUTH, "AUTH mechanism [initial-response]",
	    SMTP_VERB_NEED_HELO | GROUP_END, NULL, smtp_auth_cmd },
	/* Never taken from a client: they would make us lie to the upstream. */
	{ SMTP_CMD_EXPN, NULL, GROUP_END, NULL, smtp_cmd_not_implemented },
	{ SMTP_CMD_XCLIENT, NULL, 0, NULL, smtp_cmd_not_implemented },
	{ SMTP_CMD_XFORWARD, NULL, 0, NULL, smtp_cmd_not_implemented },
};
#undef PRE_TLS
#undef NEED_MAIL
#undef IN_BDAT

/*
 * The refusal for the first precondition in flags (a row's) that the
 * session does not meet, or NULL: TLS first where the listener requires
 * it, then an open BDAT transaction, then the NEED_* ones.  BDAT uses it too, after its chunk.
 */
const char *
smtp_verb_unmet(const struct smtp_session *s, unsigned flags)
{
	if (!(flags & SMTP_VERB_PRE_TLS) && s->listener != NULL &&
	    s->listener->tls == CONFIG_TLS_REQUIRED &&
	    s->tls != SMTP_TLS_ACTIVE)
		return "530 5.7.0 Must issue a STARTTLS command first";
	if (!(flags & SMTP_VERB_IN_BDAT) && s->tx != NULL &&
	    (s->tx->flags & SMTP_TX_BDAT))
		return "503 5.5.1 Error: BDAT transaction in progress";
	if ((flags & SMTP_VERB_NEED_HELO) && s->helo[0] == '\0')
		return "503 5.5.1 Error: send HELO/EHLO first";
	if ((flags & SMTP_VERB_NEED_MAIL) && s->tx == NULL)
		return "503 5.5.1 Error: need MAIL command";
	if ((flags & SMTP_VERB_NEED_RCPT) && s->tx->nrcpts == 0)
		return s->tx->rcpt_attempts ? "554 5.5.1 Error: no valid recipients" :
		    "503 5.5.1 Error: need RCPT command";
	return NULL;
}

/*
 * One command line: find the verb, check its preconditions in the
 * order the table's flags list them, run it.  The 501, 503 and 530
 * replies for those are written here only (BDAT's after its chunk).
 */
static void
smtp_command(struct smtp_session *s, const char *line)
{
	const struct smtp_verb *v = NULL;
	enum smtp_cmd cmd;
	const char *args, *unmet;
	size_t i;

	cmd = smtp_parse_verb(line, &args);
	smtp_chat_command(s, cmd);
	for (i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++)
		if (smtp_verbs[i].cmd == cmd)
			v = &smtp_verbs[i];
	if (v == NULL) {
		/* RFC 5321 4.2.4: 500 unrecognized (502 is known, not done). */
		smtp_error(s, "500 5.5.2 Error: command not recognized");
		return;
	}
	/* A CHUNK verb (BDAT) reads its chunk first, then checks. */
	if (!(v->flags & SMTP_VERB_CHUNK) &&
	    (((v->flags & SMTP_VERB_NO_ARGS) && *args != '\0') ||
	    ((v->flags & SMTP_VERB_ARGS) && *args == '\0'))) {
		smtp_error(s, "501 5.5.4 Syntax: %s", v->syntax);
		return;
	}
	if (!(v->flags & SMTP_VERB_CHUNK) &&
	    (unmet = smtp_verb_unmet(s, v->flags)) != NULL) {
		smtp_error(s, "%s", unmet);
		return;
	}
	/* The command before ended a group: its reply is in the output. */
	if (s->verb != NULL && (s->verb->flags & SMTP_VERB_GROUP_END))
		s->flags |= SMTP_F_GROUP_END;
	s->verb = v;
	if (v->fn(s, args) == SMTP_VERB_SYNTAX)
		smtp_error(s, "501 5.5.4 Syntax: %s", v->syntax);
}

/*
 * Handle what the client sent, then write all the replies at once (a
 * pipelined group gets one write), unless the group goes on: a pipelined
 * command waits for a filter or the upstream, and its reply will join
 * the others (smtp_chat_hold).  When the client was not reading them
 * (output_full) and the write made room, carry on.
 */
void
smtp_process(struct smtp_session *s)
{
	struct evbuffer *out;

	for (;;) {
		smtp_process_once(s);
		if (s->state == SMTP_STATE_QUIT || (s->flags & SMTP_F_PROCESSING))
			return;
		if (smtp_chat_hold(s))
			return;
		out = bufferevent_get_output(s->bev);
		bev_flush(s->bev);
		s->flags &= ~SMTP_F_GROUP_END;
		if (!(s->flags & SMTP_F_OUTPUT_FULL) ||
		    evbuffer_get_length(out) > SMTP_OUTPUT_HIGH / 2)
			return;
		s->flags &= ~SMTP_F_OUTPUT_FULL;
		smtp_read_on(s);
	}
}

/*
 * The client shut its side and everything it sent has been handled: a
 * command, message or SASL response it left unfinished will never
 * complete.  Let the replies go out, then close (smtp_eventcb).
 */
static void
smtp_input_ended(struct smtp_session *s)
{
	if (s->tx != NULL)
		smtp_chat_log_message(s, "aborted", "client disconnected");
	log_info("%016llx smtp closing reason=eof state=%s client=%s "
	    "messages=%lu", s->id, smtp_state_names[s->state], s->addr,
	    s->messages);
	smtp_enter_state(s, SMTP_STATE_QUIT);
}

/*
 * No command is read now: the client does not read its replies
 * (backpressure: stop reading it until it drains, smtp_chat_writecb; its
 * input is capped by the read watermark meanwhile), or a drain closes an
 * idle session.  1 when held.
 */
static int
smtp_command_held(struct smtp_session *s)
{
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) >
	    SMTP_OUTPUT_HIGH) {
		s->flags |= SMTP_F_OUTPUT_FULL;
		bufferevent_disable(s->bev, EV_READ);
		smtp_line_wait(s);
		return 1;
	}
	if ((s->flags & SMTP_F_DRAINING) && s->tx == NULL &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) == 0) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return 1;
	}
	return 0;
}

/* One framed command line (len with its CRLF), or why it is none. */
static void
smtp_command_line(struct smtp_session *s, enum smtp_line kind, char *line,
    size_t len)
{
	if (kind != SMTP_LINE_OK)
		smtp_chat_command(s, SMTP_CMD_UNKNOWN);
	switch (kind) {
	case SMTP_LINE_TOO_LONG:
		smtp_error(s, "500 5.5.2 Error: line too long");
		break;
	case SMTP_LINE_BARE_EOL:
		smtp_error(s, "500 5.5.2 Error: bare CR or LF in command");
		break;
	case SMTP_LINE_NUL:
		smtp_error(s, "500 5.5.2 Error: NUL character in command");
		break;
	case SMTP_LINE_OK:
		line[len - 2] = '\0';
		/* Never log credentials (an AUTH initial response). */
		if (str_ncasecmp(line, "AUTH ", 5) == 0)
			log_debug("%016llx smtp <<< AUTH (credentials not logged)",
			    s->id);
		else
			log_debug("%016llx smtp <<< %s", s->id, line);
		smtp_command(s, line);
		break;
	default:
		fatalx("smtp_command_line: bad kind %d", kind);
	}
}

static void
smtp_process_once(struct smtp_session *s)
{
	char line[SMTP_CMD_LINE_MAX + 1];
	enum smtp_line kind;
	size_t len;

	s->flags |= SMTP_F_PROCESSING;
	for (;;) {
		if (s->state == SMTP_STATE_DATA) {
			if (!smtp_data_input(s))
				goto more;
			continue;
		}
		if (s->state == SMTP_STATE_BDAT) {
			if (!smtp_data_bdat_input(s))
				goto more;
			continue;
		}
		if (s->state == SMTP_STATE_AUTH) {
			if (!smtp_auth_input(s))
				goto more;
			continue;
		}
		/* A group queued to the upstream goes on only with a RCPT. */
		if (s->state != SMTP_STATE_COMMAND || smtp_relay_pipe_gate(s) ||
		    smtp_command_held(s))
			break;
		kind = smtp_frame_line(bufferevent_get_input(s->bev),
		    &s->skipping, line, SMTP_CMD_LINE_MAX, &len);
		if (kind == SMTP_LINE_NONE)
			goto more;
		s->flags &= ~SMTP_F_LINE_TIMED;	/* the next line is a new wait */
		smtp_command_line(s, kind, line, len);
	}
	s->flags &= ~SMTP_F_PROCESSING;
	return;
more:
	/* Waiting for client input that will never come? */
	if (s->flags & SMTP_F_EOF)
		smtp_input_ended(s);
	else if (s->state == SMTP_STATE_COMMAND || s->state == SMTP_STATE_AUTH)
		smtp_line_wait(s);
	s->flags &= ~SMTP_F_PROCESSING;
}

void
smtp_readcb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	(void)bev;
	if (s->state == SMTP_STATE_PROXY)
		smtp_peer_proxy_input(s);
	else if (s->state == SMTP_STATE_COMMAND || s->state == SMTP_STATE_DATA ||
	    s->state == SMTP_STATE_BDAT || s->state == SMTP_STATE_AUTH)
		smtp_process(s);
}

void
smtp_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	unsigned long tls_err;
	char err[256];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake done (STARTTLS or implicit). */
		s->tls = SMTP_TLS_ACTIVE;
		tls_handshake_done(bufferevent_openssl_get_ssl(s->bev), s->tls_desc,
		    sizeof s->tls_desc);
		log_info("%016llx smtp tls=\"%s\" client=%s", s->id, s->tls_desc,
		    s->addr);
		return;
	}
	/* bufferevent_get_openssl_error() pops: call it once. */
	if ((what & BEV_EVENT_ERROR) && s->tls != SMTP_TLS_NONE &&
	    (tls_err = bufferevent_get_openssl_error(s->bev)) != 0) {
		ERR_error_string_n(tls_err, err, sizeof err);
		log_info("%016llx smtp tls error=\"%s\" client=%s", s->id, err,
		    s->addr);
	}
	if ((what & BEV_EVENT_TIMEOUT) && s->state != SMTP_STATE_QUIT) {
		smtp_timed_out(s);
		return;
	}
	/*
	 * End of file: the client may only have shut its sending side after
	 * pipelining its last commands (Exim does after the final dot or
	 * BDAT LAST and QUIT).  Every reply it is owed still goes out, so
	 * stop reading, finish what is buffered, and close when the input
	 * runs dry (smtp_input_ended).  Half-done work is never relayed: an
	 * unfinished message is dropped there.  A client that closed both
	 * sides makes a later write fail, which ends the session below.
	 */
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    !(s->flags & SMTP_F_EOF) &&
	    s->state != SMTP_STATE_PROXY && s->state != SMTP_STATE_CONNECT &&
	    s->state != SMTP_STATE_QUIT) {
		s->flags |= SMTP_F_EOF;
		log_info("%016llx smtp eof state=%s client=%s: answering what "
		    "it sent", s->id, smtp_state_names[s->state], s->addr);
		if (s->state != SMTP_STATE_WAIT && s->state != SMTP_STATE_RELAY &&
		    !(s->flags & SMTP_F_PROCESSING))
			smtp_process(s);
		return;
	}
	if (s->tx != NULL && s->state != SMTP_STATE_QUIT)
		smtp_chat_log_message(s, "aborted", "client disconnected");
	if (s->state != SMTP_STATE_QUIT)
		log_info("%016llx smtp closing reason=%s client=%s messages=%lu",
		    s->id, (what & BEV_EVENT_EOF) ? "eof" :
		    (what & BEV_EVENT_TIMEOUT) ? "timeout" : "error", s->addr,
		    s->messages);
	/*
	 * A failed TLS handshake leaves its alert in the plain bufferevent
	 * under the TLS layer: let it go out, so the client learns why.
	 */
	if ((what & BEV_EVENT_ERROR) && bufferevent_get_underlying(s->bev) != NULL) {
		/* Closing, like QUIT: nothing the session waits for goes on. */
		smtp_cancel_async(s);
		s->state = SMTP_STATE_QUIT;
		bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		smtp_chat_quit_flushed(s);
		return;
	}
	smtp_session_free(s);
}

/* A wait for the client ran out (smtp_deadline, or a bufferevent timeout). */
static void
smtp_timed_out(struct smtp_session *s)
{
	if (s->state == SMTP_STATE_QUIT)
		return;
	log_info("%016llx smtp closing reason=timeout state=%s client=%s",
	    s->id, smtp_state_names[s->state], s->addr);
	if (s->tx != NULL)
		smtp_chat_log_message(s, "aborted", "client timeout");
	smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
	/* Drop the upstream mid-transaction: nothing half-done is relayed. */
	smtp_relay_close(s);
	smtp_enter_state(s, SMTP_STATE_QUIT);
}

/* A refused connection gets the filter's reply and is closed. */
static void
smtp_connect_refused(struct smtp_session *s, const struct filter_result *res)
{
	/* The reason is the filter that refused: "dnsbl", a module's name. */
	metrics_inc(METRIC_CONNECTIONS_REFUSED, res->filter[0] != '\0' ?
	    res->filter : "filter");
	if (s->state != SMTP_STATE_QUIT)	/* a 421 is already closing it */
		smtp_enter_state(s, SMTP_STATE_QUIT);
}

static void
smtp_connect_proceed(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	smtp_reply(s, "220 %s ESMTP frontmx", s->cfg->hostname);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static const struct smtp_step smtp_connect_step = {
	FILTER_PH_CONNECT, "connection", smtp_connect_refused,
	smtp_connect_proceed
};

/* The client's bufferevent: TLS from the first byte on a port-465 listener. */
static void
smtp_session_bev(struct smtp_session *s, struct event_base *base, int fd)
{
	if (s->listener != NULL && s->listener->tls == CONFIG_TLS_IMPLICIT &&
	    !s->listener->proxy_protocol) {
		SSL *ssl = tls_server_ssl(s->tls_ctx);

		s->bev = ssl == NULL ? NULL : bufferevent_openssl_socket_new(base, fd,
		    ssl, BUFFEREVENT_SSL_ACCEPTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (s->bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
		s->tls = SMTP_TLS_HANDSHAKE;
	} else {
		s->bev = bufferevent_socket_new(base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (s->bev != NULL)
			bev_read_own(s->bev);	/* no FIONREAD per read (bev.h) */
	}
}

void
smtp_session_start(struct smtp_host *h, int fd, const struct sockaddr *sa,
    socklen_t salen, struct runtime *rt, size_t listener)
{
	struct smtp_session *s;
	struct event_base *base = h->base;
	struct config *cfg = runtime_config(rt);
	struct filter_host host;

	if ((s = calloc(1, sizeof *s)) == NULL) {
		close(fd);
		limit_conn_release(sa);
		runtime_unref(rt);
		return;
	}
	s->id = atomic_fetch_add(&smtp_session_seq, 1) + 1 +
	    ((unsigned long long)time(NULL) << 24);
	s->host = h;
	s->stat_open = -1;
	s->stage = "connect";
	s->rt = rt;
	s->chain = runtime_chain(rt);
	s->cfg = cfg;
	s->tls_ctx = runtime_server_ctx(rt, listener);
	(void)salen;
	smtp_peer_set(s, sa);
	if (filter_chain_wants_daemon_addr(s->chain))
		smtp_peer_local(s, fd);
	spool_init(&s->spool, cfg->limits.spool_memory, cfg->spool_dir);
	spool_init(&s->newbody, cfg->limits.spool_memory, cfg->spool_dir);
	s->listener = listener < cfg->nlisteners ? &cfg->listeners[listener] : NULL;
	smtp_session_bev(s, base, fd);
	host.msg_read = smtp_eom_msg_read;
	host.arg = s;
	smtp_facts(s);
	s->fs = filter_session_new(s->chain, base, &s->facts, &host);
	s->deadline = evtimer_new(base, smtp_deadline_cb, s);
	if (s->bev == NULL || s->fs == NULL || s->deadline == NULL) {
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (s->deadline != NULL)
			event_free(s->deadline);
		filter_session_free(s->fs);
		limit_conn_release(sa);
		runtime_unref(rt);
		free(s);
		return;
	}
	/* Bound what a client can make us buffer ahead of our replies. */
	smtp_chat_setup(s);
	TAILQ_INSERT_TAIL(&h->sessions, s, entry);
	h->nsessions++;
	metrics_inc(METRIC_CONNECTIONS, s->listener != NULL ?
	    s->listener->address : "check");
	metrics_gauge_add(+1, METRIC_CONNECTIONS_ACTIVE);
	log_info("%016llx smtp connect client=%s port=%u", s->id, s->addr,
	    s->port);
	if (s->listener != NULL && s->listener->proxy_protocol) {
		/* Only the configured balancers may say who the client is. */
		if (!netaddr_mask_match(s->listener->proxy_from,
		    s->listener->nproxy_from, sa)) {
			log_info("%016llx smtp refused reason=proxy-not-allowed "
			    "client=%s", s->id, s->addr);
			metrics_inc(METRIC_CONNECTIONS_REFUSED,
			    "proxy-not-allowed");
			smtp_session_free(s);
			return;
		}
		s->state = SMTP_STATE_PROXY;
		smtp_enter_state(s, SMTP_STATE_PROXY);
		return;
	}
	s->state = SMTP_STATE_CONNECT;
	smtp_enter_state(s, SMTP_STATE_CONNECT);
	smtp_peer_lookup(s);
}

/* After the name is known (or not): the connect phase, then the greeting. */
void
smtp_connect_filters(struct smtp_session *s)
{
	s->flags |= SMTP_F_PROCESSING;
	smtp_filter(s, &smtp_connect_step, NULL);
	s->flags &= ~SMTP_F_PROCESSING;
	if (s->state == SMTP_STATE_COMMAND)
		smtp_process(s);
}

static void
smtp_session_drain(struct smtp_session *s, int force)
{
	s->flags |= SMTP_F_DRAINING;
	if (s->state == SMTP_STATE_QUIT)
		return;
	if (force || (s->state == SMTP_STATE_COMMAND && s->tx == NULL)) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down",
		    s->cfg->hostname);
		if (force)
			smtp_relay_close(s);
		smtp_enter_state(s, SMTP_STATE_QUIT);
	}
}

/*
 * The session will not go on (closing, or freed next): nothing it waits
 * for may call it back.  The filters' phase is given up (a late resume()
 * is refused), the reverse lookup cancelled, and an upstream operation
 * in flight drops its connection, so a message the client will hear
 * nothing about is not relayed on.
 */
static void
smtp_cancel_async(struct smtp_session *s)
{
	filter_session_cancel(s->fs);
	if ((s->flags & SMTP_F_RDNS_WAITING) && s->rdns_id > 1)
		dns_cancel(bufferevent_get_base(s->bev), s->rdns_id);
	s->flags &= ~SMTP_F_RDNS_WAITING;
	s->rdns_id = 0;
	smtp_relay_cancel(s);
}

void
smtp_session_free(struct smtp_session *s)
{
	struct smtp_host *h = s->host;

	/* Before on_abort runs (smtp_tx_reset): it may call resume(). */
	smtp_cancel_async(s);
	/* After it: commands it ended (a pipelined group's) are counted. */
	smtp_chat_log_disconnect(s);
	smtp_relay_close(s);
	smtp_tx_reset(s);
	filter_session_free(s->fs);
	free(s->piped);		/* smtp_relay_close emptied it */
	free(s->auth_id);
	free(s->auth_claim);
	if (s->quit_timer != NULL)
		event_free(s->quit_timer);
	event_free(s->deadline);
	spool_free(&s->spool);
	spool_free(&s->newbody);
	free(s->text_line);
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	limit_conn_release((const struct sockaddr *)&s->sa);
	TAILQ_REMOVE(&h->sessions, s, entry);
	h->nsessions--;
	metrics_gauge_add(-1, METRIC_CONNECTIONS_ACTIVE);
	runtime_unref(s->rt);
	free(s);
	if (h->gone != NULL)
		h->gone(h->arg);
}

void
smtp_session_drain_all(struct smtp_host *h, int force)
{
	struct smtp_session *s, *next;

	/* Draining never frees synchronously, but be safe against it. */
	for (s = TAILQ_FIRST(&h->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		smtp_session_drain(s, force);
	}
}

void
smtp_session_free_all(struct smtp_host *h)
{
	struct smtp_session *s;

	while ((s = TAILQ_FIRST(&h->sessions)) != NULL)
		smtp_session_free(s);
}
