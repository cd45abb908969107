/*
 * smtp_chat.c - replies to the client and the session's output side
 *
 * DESCRIPTION
 *	smtp_reply() writes one complete reply (several lines when the text
 *	holds '\n'), smtp_error() one that counts against the client's
 *	error budget (limits.errors, then 421 and close), and
 *	smtp_chat_upstream() relays an upstream reply with an enhanced status
 *	code on every line.  smtp_chat_log_message() is the one log line per
 *	message, whatever ended it.
 *
 *	The output side of the bufferevent lives here too: watermarks and
 *	callbacks (smtp_chat_setup, also for the TLS layer smtp_peer.c puts
 *	over the socket), and the orderly close: in
 *	SMTP_STATE_QUIT the session is freed only once the last reply has
 *	left, followed over TLS by our close_notify, the TLS layer's
 *	encrypted bytes underneath included.
 *
 *	smtp_reply() and smtp_error() keep the family's short names: every
 *	smtp_* file calls them.
 *
 *	Every reply the client gets passes here, so this is where they are
 *	counted (frontmx_smtp_replies_total{stage,code}: s->stage is set
 *	when a command is read, smtp_chat_command), and so is every message's
 *	end (frontmx_messages_total, frontmx_message_size_bytes), next to
 *	its log line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "bev.h"
#include "log.h"
#include "metrics.h"
#include "smtp_int.h"
#include "smtp_reply.h"
#include "tls.h"

static const char *const smtp_chat_stat_names[SMTP_STAT_COUNT] = {
	[SMTP_STAT_HELO] = "helo",
	[SMTP_STAT_EHLO] = "ehlo",
	[SMTP_STAT_XCLIENT] = "xclient",
	[SMTP_STAT_XFORWARD] = "xforward",
	[SMTP_STAT_STARTTLS] = "starttls",
	[SMTP_STAT_AUTH] = "auth",
	[SMTP_STAT_MAIL] = "mail",
	[SMTP_STAT_RCPT] = "rcpt",
	[SMTP_STAT_DATA] = "data",
	[SMTP_STAT_BDAT] = "bdat",
	[SMTP_STAT_RSET] = "rset",
	[SMTP_STAT_NOOP] = "noop",
	[SMTP_STAT_VRFY] = "vrfy",
	[SMTP_STAT_EXPN] = "expn",
	[SMTP_STAT_HELP] = "help",
	[SMTP_STAT_QUIT] = "quit",
	[SMTP_STAT_UNKNOWN] = "unknown",
};

/*
 * A command line was read: it is counted when its final reply goes out
 * (smtp_chat_count).  A line that is no command (unrecognised, too long,
 * bare LF) counts as "unknown", as in Postfix.
 */
void
smtp_chat_command(struct smtp_session *s, enum smtp_cmd cmd)
{
	static const enum smtp_stat map[SMTP_CMD_COUNT] = {
		[SMTP_CMD_UNKNOWN] = SMTP_STAT_UNKNOWN,
		[SMTP_CMD_HELO] = SMTP_STAT_HELO,
		[SMTP_CMD_EHLO] = SMTP_STAT_EHLO,
		[SMTP_CMD_MAIL] = SMTP_STAT_MAIL,
		[SMTP_CMD_RCPT] = SMTP_STAT_RCPT,
		[SMTP_CMD_DATA] = SMTP_STAT_DATA,
		[SMTP_CMD_RSET] = SMTP_STAT_RSET,
		[SMTP_CMD_NOOP] = SMTP_STAT_NOOP,
		[SMTP_CMD_QUIT] = SMTP_STAT_QUIT,
		[SMTP_CMD_VRFY] = SMTP_STAT_VRFY,
		[SMTP_CMD_EXPN] = SMTP_STAT_EXPN,
		[SMTP_CMD_HELP] = SMTP_STAT_HELP,
		[SMTP_CMD_STARTTLS] = SMTP_STAT_STARTTLS,
		[SMTP_CMD_AUTH] = SMTP_STAT_AUTH,
		[SMTP_CMD_BDAT] = SMTP_STAT_BDAT,
		[SMTP_CMD_XCLIENT] = SMTP_STAT_XCLIENT,
		[SMTP_CMD_XFORWARD] = SMTP_STAT_XFORWARD,
	};

	/* frontmx_smtp_replies_total's stage: the transaction's steps, else the verb. */
	static const char *const stages[SMTP_CMD_COUNT] = {
		[SMTP_CMD_UNKNOWN] = "unknown",
		[SMTP_CMD_HELO] = "helo",
		[SMTP_CMD_EHLO] = "helo",
		[SMTP_CMD_MAIL] = "mail",
		[SMTP_CMD_RCPT] = "rcpt",
		[SMTP_CMD_DATA] = "data",
		[SMTP_CMD_RSET] = "rset",
		[SMTP_CMD_NOOP] = "noop",
		[SMTP_CMD_QUIT] = "quit",
		[SMTP_CMD_VRFY] = "vrfy",
		[SMTP_CMD_EXPN] = "expn",
		[SMTP_CMD_HELP] = "help",
		[SMTP_CMD_STARTTLS] = "starttls",
		[SMTP_CMD_AUTH] = "auth",
		[SMTP_CMD_BDAT] = "data",
		[SMTP_CMD_XCLIENT] = "xclient",
		[SMTP_CMD_XFORWARD] = "xforward",
	};

	s->stat_open = (unsigned)cmd < SMTP_CMD_COUNT ? (int)map[cmd] :
	    SMTP_STAT_UNKNOWN;
	s->stage = (unsigned)cmd < SMTP_CMD_COUNT && stages[cmd] != NULL ?
	    stages[cmd] : "unknown";
}

/*
 * A reply with this code went out.  Every reply counts in
 * frontmx_smtp_replies_total{stage,code}.  For the disconnect line the
 * final one of the open command counts it, a success when 2xx (354 and
 * 334 are steps on the way); replies to no command (the greeting, a
 * timeout's 421) count nothing there.
 */
static void
smtp_chat_count(struct smtp_session *s, int code)
{
	char	digits[4];

	if (code >= 100 && code <= 599) {
		snprintf(digits, sizeof digits, "%d", code);
		s->last_code = code;
		metrics_inc(METRIC_SMTP_REPLIES, s->stage != NULL ? s->stage :
		    "connect", digits);
	}
	if (s->stat_open < 0 || code / 100 == 3)
		return;
	s->stat_all[s->stat_open]++;
	if (code / 100 == 2)
		s->stat_ok[s->stat_open]++;
	s->stat_open = -1;
}

/*
 * The one line per session a Postfix admin greps for, written when the
 * session ends, however it ends:
 *	disconnect from NAME[ADDR] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6
 * Each command used is named with its successes, "/total" when some
 * failed; a command cut short by the end of the session is a failure.
 */
void
smtp_chat_log_disconnect(struct smtp_session *s)
{
	char buf[SMTP_STAT_COUNT * 32 + 64];
	unsigned ok = 0, all = 0;
	size_t i, used = 0;
	int n;

	if (s->stat_open >= 0) {
		s->stat_all[s->stat_open]++;
		s->stat_open = -1;
	}
	buf[0] = '\0';
	for (i = 0; i < SMTP_STAT_COUNT; i++) {
		if (s->stat_all[i] == 0)
			continue;
		ok += s->stat_ok[i];
		all += s->stat_all[i];
		n = s->stat_ok[i] == s->stat_all[i] ?
		    snprintf(buf + used, sizeof buf - used, " %s=%u",
		    smtp_chat_stat_names[i], s->stat_ok[i]) :
		    snprintf(buf + used, sizeof buf - used, " %s=%u/%u",
		    smtp_chat_stat_names[i], s->stat_ok[i], s->stat_all[i]);
		if (n < 0 || (size_t)n >= sizeof buf - used)
			fatalx("smtp_chat_log_disconnect: line over limit");
		used += (size_t)n;
	}
	if (ok == all)
		log_info("%016llx smtp disconnect from %s[%s]%s commands=%u",
		    s->id, s->name, s->addr, buf, ok);
	else
		log_info("%016llx smtp disconnect from %s[%s]%s commands=%u/%u",
		    s->id, s->name, s->addr, buf, ok, all);
}

/*
 * Where a reply goes: the output, or while MAIL/RCPTs queued to the
 * upstream still owe their replies (smtp_relay.c's pipelined group),
 * behind the last of them (its after buffer), so that it leaves after
 * theirs: replies stay in command order.  A queued command's own reply
 * (SMTP_F_PIPE_REPLY) is the oldest owed and goes out.
 */
struct evbuffer *
smtp_chat_out(struct smtp_session *s)
{
	struct smtp_piped *p;

	if (s->npiped == 0 || (s->flags & SMTP_F_PIPE_REPLY))
		return bufferevent_get_output(s->bev);
	p = &s->piped[(s->piped_head + s->npiped - 1) % SMTP_PIPE_MAX];
	if (p->after == NULL && (p->after = evbuffer_new()) == NULL)
		fatalx("out of memory");
	return p->after;
}

/* Send one complete reply; text may hold several lines separated by '\n'. */
__attribute__((format(printf, 2, 3)))
void
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	struct evbuffer *out = smtp_chat_out(s);
	char buf[SMTP_REPLY_BUF];
	const char *p, *nl;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof buf)
		fatalx("smtp_reply: reply too long");
	log_debug("%016llx smtp >>> %s", s->id, buf);
	if (n >= 3)
		smtp_chat_count(s, (buf[0] - '0') * 100 + (buf[1] - '0') * 10 +
		    (buf[2] - '0'));
	/* Lines of a multi-line reply are written '\n'-separated: CRLF on the wire. */
	for (p = buf; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		evbuffer_add(out, p, (size_t)(nl - p));
		evbuffer_add(out, "\r\n", 2);
	}
	evbuffer_add(out, p, strlen(p));
	evbuffer_add(out, "\r\n", 2);
}

/* A reply to client misbehaviour; too many of them end the session. */
__attribute__((format(printf, 2, 3)))
void
smtp_error(struct smtp_session *s, const char *fmt, ...)
{
	char buf[SMTP_REPLY_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	smtp_reply(s, "%s", buf);
	if (++s->errors >= s->cfg->limits.errors) {
		log_info("%016llx smtp closing reason=too-many-errors client=%s",
		    s->id, s->addr);
		smtp_reply(s, "421 4.7.0 %s Error: too many errors",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
	}
}

/* Relay an upstream reply, each line carrying an enhanced status code. */
void
smtp_chat_upstream(struct smtp_session *s, const struct smtp_reply *r,
    const char *dflt_ok)
{
	char buf[SMTP_REPLY_BUF];
	char dflt[8];
	size_t n;

	if (r->code / 100 == 2)
		snprintf(dflt, sizeof dflt, "%s", dflt_ok);
	else
		snprintf(dflt, sizeof dflt, "%c.0.0", r->code / 100 == 4 ? '4' : '5');
	n = smtp_reply_render(r, 0, dflt, buf, sizeof buf);
	if (n == 0) {
		smtp_reply(s, "451 4.3.0 Error: upstream reply too long");
		return;
	}
	log_debug("%016llx smtp >>> %.*s", s->id, (int)n, buf);
	smtp_chat_count(s, r->code);
	evbuffer_add(smtp_chat_out(s), buf, n);
}

static double
smtp_chat_elapsed(const struct smtp_session *s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - s->tx->start.tv_sec) +
	    (double)(now.tv_nsec - s->tx->start.tv_nsec) / 1e9;
}

/*
 * The log's result word as frontmx_messages_total's: a refusal by its
 * reply code (the reply given, or else the last one the client got),
 * every 2xx outcome but discard and quarantine as relayed.
 */
static const char *
smtp_chat_result(const struct smtp_session *s, const char *result,
    const char *reply)
{
	int	code = reply[0] >= '2' && reply[0] <= '5' ?
		    (reply[0] - '0') * 100 : s->last_code;

	if (strcmp(result, "tempfail") == 0)
		return "tempfailed";
	if (strcmp(result, "rejected") == 0)
		return "rejected";
	if (strcmp(result, "refused") == 0)
		return code / 100 == 4 ? "tempfailed" : "rejected";
	if (strcmp(result, "discarded") == 0 ||
	    strcmp(result, "quarantined") == 0 ||
	    strcmp(result, "aborted") == 0)
		return result;
	return "relayed";	/* relayed, delivered (Maildir), tag, dry-run */
}

void
smtp_chat_log_message(struct smtp_session *s, const char *result, const char *reply)
{
	char rcpts[1024];
	size_t i, used = 0;
	int n;

	rcpts[0] = '\0';
	for (i = 0; i < s->tx->nrcpts && used < sizeof rcpts; i++) {
		n = snprintf(rcpts + used, sizeof rcpts - used, "%s<%s>",
		    i ? "," : "", s->tx->rcpts[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	log_info("%016llx message client=%s from=<%s> rcpts=%zu to=%s size=%zu "
	    "result=%s reply=\"%s\" duration=%.3f", s->id, s->addr,
	    s->tx->mail_from ? s->tx->mail_from : "", s->tx->nrcpts, rcpts, s->tx->msg_bytes,
	    result, reply, smtp_chat_elapsed(s));
	result = smtp_chat_result(s, result, reply);
	metrics_inc(METRIC_MESSAGES, result);
	/* The size of what was received: not of a message cut short. */
	if (strcmp(result, "aborted") != 0)
		metrics_observe(s->tx->msg_bytes, METRIC_MESSAGE_SIZE);
}

/*
 * Unread client input kept: limits.pipeline_backlog, but never less than
 * one whole text line (limits.line_length, plus the octet that shows it
 * is too long), which the framer must see in one piece: an admin who
 * raised line_length past the backlog would otherwise stall every long
 * line.  Still bounded: both are bounded configuration values.
 */
static size_t
smtp_chat_backlog(const struct config *cfg)
{
	return cfg->limits.pipeline_backlog > cfg->limits.line_length + 1 ?
	    cfg->limits.pipeline_backlog : cfg->limits.line_length + 1;
}

/* Callbacks, watermarks: the same on the plain and on the TLS bufferevent. */
void
smtp_chat_setup(struct smtp_session *s)
{
	bufferevent_setcb(s->bev, smtp_readcb, smtp_chat_writecb, smtp_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, smtp_chat_backlog(s->cfg));
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTP_OUTPUT_HIGH / 2, 0);
	/* Plain sockets are written directly (bev.h); TLS goes through libevent. */
	if (bev_direct(s->bev))
		bufferevent_disable(s->bev, EV_WRITE);
	else
		bufferevent_enable(s->bev, EV_WRITE);
	smtp_read_on(s);
}

/*
 * RFC 2920 reply groups, Postfix's rule: replies are held while the
 * client's pipelined group goes on, and written together when it ends.
 * smtp_process() writes whenever it runs out of input to handle, so a
 * client that waits for each reply gets each at once, and a group split
 * across reads gets the replies of its complete part.  What it holds:
 * the session waits for a filter or the upstream on a command, and the
 * output holds the replies to the commands before it, which the client
 * sent without waiting for them (a reply is never left behind when
 * input runs out).  Its reply comes (each wait is bounded by its own
 * timeout) and leaves with them in one write.  Never held: a
 * group-ending command's reply (SMTP_VERB_GROUP_END: flagged when the
 * next command starts, so DATA's own wait still holds the replies before
 * it, which leave with its 354), or more than half of what a client may
 * leave unread.  "250 only after the upstream's 250"
 * is untouched: holding only delays replies already decided.
 */
int
smtp_chat_hold(const struct smtp_session *s)
{
	return (s->state == SMTP_STATE_WAIT || s->state == SMTP_STATE_RELAY) &&
	    !(s->flags & SMTP_F_GROUP_END) &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) <
	    SMTP_OUTPUT_HIGH / 2;
}

/* Put a TLS server layer over the plain bufferevent (STARTTLS, PROXY+465). */
/*
 * The last reply left our bufferevent.  Over STARTTLS that only means it
 * reached the TLS filter: the encrypted bytes still wait in the plain
 * bufferevent underneath, which the filter owns (and frees with us).  So
 * wait, briefly, until that one is empty too.
 */
static void
smtp_chat_quit_poll(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)fd;
	(void)what;
	smtp_chat_quit_flushed(s);
}

/* Look at the close again in usec microseconds (smtp_chat_quit_poll). */
static int
smtp_chat_quit_timer(struct smtp_session *s, long usec)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = usec };

	if (s->quit_timer == NULL &&
	    (s->quit_timer = evtimer_new(bufferevent_get_base(s->bev),
	    smtp_chat_quit_poll, s)) == NULL)
		return -1;
	return evtimer_add(s->quit_timer, &tv);
}

int
smtp_chat_quit_later(struct smtp_session *s)
{
	/* Nothing left to write: the orderly close starts now. */
	tls_close_notify(bufferevent_openssl_get_ssl(s->bev));
	return smtp_chat_quit_timer(s, 0);
}

void
smtp_chat_quit_flushed(struct smtp_session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);

	if (under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0 &&
	    s->quit_polls++ < SMTP_QUIT_TIMEOUT * 50 &&
	    smtp_chat_quit_timer(s, 20000) == 0)
		return;
	smtp_session_free(s);
}

void
smtp_chat_writecb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	(void)bev;
	if (s->state == SMTP_STATE_QUIT) {
		/*
		 * The last reply is encrypted: our close_notify follows it
		 * (only here and in smtp_chat_quit_later, never after the
		 * connection failed: smtp_eventcb).
		 */
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
			tls_close_notify(bufferevent_openssl_get_ssl(s->bev));
			smtp_chat_quit_flushed(s);
		}
		return;
	}
	if (s->flags & SMTP_F_OUTPUT_FULL) {
		s->flags &= ~SMTP_F_OUTPUT_FULL;
		if (s->state == SMTP_STATE_COMMAND) {
			smtp_read_on(s);
			smtp_process(s);
		}
	}
	/* Drained: back to direct writes, no EPOLLOUT interest left behind. */
	if (bev_direct(s->bev) && s->state != SMTP_STATE_QUIT &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		bufferevent_disable(s->bev, EV_WRITE);
}
