/*
 * smtp_session.c - SMTP server session: the client side of the proxy
 *
 * DESCRIPTION
 *	Reads commands framed strictly (CRLF only, bounded, no NUL), runs each
 *	verb through check -> filter phase -> proceed, and relays MAIL, RCPT
 *	and the message to the upstream, returning the upstream's replies.
 *	The proxy answers everything else itself (greeting, EHLO, 354, RSET,
 *	NOOP, ...).  Replies leave in command order because the session handles
 *	one command at a time and does not read the next one while an upstream
 *	reply or a filter verdict is outstanding (RFC 2920 pipelining only
 *	needs the order to hold, not concurrency).
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
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <resolv.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
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
#include <openssl/evp.h>

#include "bev.h"
#include "config.h"
#include "dns.h"
#include "filter_chain.h"
#include "haproxy.h"
#include "log.h"
#include "maildir.h"
#include "policy.h"
#include "smtp_frame.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "spool.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"
#include "xtext.h"

#define SMTP_REPLY_BUF		(SMTP_REPLY_TEXT_MAX + 2048)
/*
 * The longest Received field: "from" HELO (255), "(" PTR name (255),
 * "[" address (46) "])", the TLS comment (96), "by" hostname (255),
 * "(frontmx) with UTF8SMTPSA id" and the id (40), "for <" path (256) ">;",
 * the date (64), every separator a 3-octet fold, and room to spare.
 */
#define SMTP_RECEIVED_MAX	2048
#define SMTP_HELO_MAX		SMTP_DOMAIN_MAX
#define SMTP_QUIT_TIMEOUT	10	/* seconds to flush the last reply */
#define SMTP_BODY_CHUNK		65536	/* body bytes per on_body call (API promise) */
#define SMTP_HEADER_LINE_MAX	998	/* RFC 5322 2.1.1, without the CRLF */
#define SMTP_EXTRA_HEADERS	8192	/* room for Received, A-R, tag and edits */
#define SMTP_OUTPUT_HIGH	65536	/* replies a client leaves unread before we stop reading it */
#define SMTP_PROXY_TIMEOUT	10	/* seconds for a load balancer's PROXY header */
#define SMTP_AUTH_LINE_MAX	12290	/* RFC 4954 4: 12288 octets plus CRLF */

enum smtp_state {
	SMTP_STATE_PROXY = 0,	/* waiting for the PROXY protocol header */
	SMTP_STATE_CONNECT,	/* connect filters, then the greeting */
	SMTP_STATE_COMMAND,	/* reading commands */
	SMTP_STATE_WAIT,	/* a filter or the upstream owes us an answer */
	SMTP_STATE_DATA,	/* reading message lines */
	SMTP_STATE_BDAT,	/* reading a BDAT chunk (RFC 3030) */
	SMTP_STATE_AUTH,	/* reading a SASL response line (RFC 4954) */
	SMTP_STATE_RELAY,	/* message going upstream; input paused */
	SMTP_STATE_QUIT,	/* flushing the last reply, then close */
	SMTP_STATE_COUNT	/* must be last */
};

/* Why a message is refused once its final dot arrives. */
enum smtp_data_err {
	SMTP_DATA_OK = 0,
	SMTP_DATA_BARE_EOL,	/* bare CR or LF */
	SMTP_DATA_NUL,
	SMTP_DATA_LINE_TOO_LONG,
	SMTP_DATA_TOO_BIG,
	SMTP_DATA_HEADER_TOO_BIG,
	SMTP_DATA_SPOOL,	/* our disk */
	SMTP_DATA_ERR_COUNT	/* must be last */
};

enum smtp_rdns {
	SMTP_RDNS_OK = 0,	/* PTR name whose addresses include the client's */
	SMTP_RDNS_NONE,		/* no PTR, or the name does not point back */
	SMTP_RDNS_TEMP,		/* DNS failed: try again later */
	SMTP_RDNS_PTR,		/* looking up the PTR */
	SMTP_RDNS_FORWARD	/* looking up the name's addresses */
};

enum smtp_tls {
	SMTP_TLS_NONE = 0,
	SMTP_TLS_HANDSHAKE,	/* STARTTLS answered or implicit TLS: handshake running */
	SMTP_TLS_ACTIVE
};

/* The MAIL parameters relayed, kept in the order the client gave them. */
enum smtp_mail_param {
	SMTP_MAIL_SIZE = 0,
	SMTP_MAIL_SMTPUTF8,
	SMTP_MAIL_RET,
	SMTP_MAIL_ENVID,
	SMTP_MAIL_BODY,
	SMTP_MAIL_PARAM_COUNT	/* must be last */
};

/* One header field of the spooled message. */
struct smtp_hdr {
	size_t	off;		/* in the spool */
	size_t	len;		/* including folds and the final CRLF */
};

struct smtp_session {
	unsigned long long	 id;
	struct worker		*worker;
	struct filter_chain	*chain;		/* holds cfg */
	struct config		*cfg;
	struct filter_session	*fs;
	struct filter_facts	 facts;
	const struct config_listener *listener;	/* NULL for `frontmx check` */
	enum smtp_tls		 tls;
	char			 tls_desc[96];	/* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	struct bufferevent	*bev;
	enum smtp_state		 state;
	TAILQ_ENTRY(smtp_session) entry;

	struct sockaddr_storage	 sa;
	char			 addr[INET6_ADDRSTRLEN];
	unsigned		 port;
	/* The client's name: verified both ways, or why not (RFC 1912 2.1). */
	char			 name[SMTP_DOMAIN_MAX + 1];	/* "unknown" when none */
	enum smtp_rdns		 rdns;
	unsigned long long	 rdns_id;
	int			 rdns_waiting;
	char			 helo[SMTP_HELO_MAX + 1];
	int			 esmtp;
	unsigned		 offer;		/* SMTP_EHLO_* pass-through extensions our EHLO offered */
	size_t			 errors;
	int			 skipping;	/* discarding an over-long line */
	int			 draining;	/* SIGTERM: close when idle */
	int			 processing;	/* inside smtp_process(): don't recurse */
	int			 output_full;	/* client not reading its replies: paused */
	int			 eof;		/* client shut its side: answer what it sent, close */
	struct event		*quit_timer;	/* waiting for TLS bytes to leave */
	struct event		*deadline;	/* the whole wait: smtp_deadline() */
	int			 line_timed;	/* deadline set for the line awaited */
	struct timespec		 data_by;	/* the message must be in by then; 0: none */
	int			 quit_polls;

	/* Transaction. */
	char			*mail_from;	/* NULL: no MAIL yet */
	int			 tx_utf8;	/* MAIL had SMTPUTF8 (RFC 6531) */
	/* MAIL parameters as validated; the upstream line is made at send. */
	int			 tx_body;	/* 0, 7 (BODY=7BIT) or 8 (BODY=8BITMIME) */
	int			 tx_ret;	/* 0, 1 RET=FULL, 2 RET=HDRS */
	int			 tx_has_size;
	unsigned long long	 tx_size;
	char			 tx_envid[101];	/* RFC 3461 4.4: xtext, 100 at most */
	enum smtp_mail_param	 tx_order[SMTP_MAIL_PARAM_COUNT];	/* as the client gave them */
	size_t			 tx_nparams;
	size_t			 tx_size_limit;	/* smtp_size_limit() at the data's start; 0 before */
	int			 bdat;		/* this transaction's message comes in BDAT chunks */
	unsigned long long	 bdat_left;	/* bytes of the current chunk still to read */
	unsigned long long	 bdat_total;	/* octets of this message's chunks so far */
	int			 bdat_last;
	const char		*bdat_refuse;	/* consume the chunk, then this reply */
	char			 bdat_reply[FILTER_REPLY_MAX];	/* a filter's refusal, kept */
	char			*text_line;	/* smtp_text_line(): one DATA line, or a BDAT line across chunks */
	size_t			 bdat_linelen;
	int			 bdat_long;	/* current line over the limit: skipping */
	char			**rcpts;
	char			**rcpt_params;	/* " NOTIFY=.. ORCPT=.." each, or NULL */
	size_t			 nrcpts;
	size_t			 rcpt_attempts;
	struct spool		 spool;
	enum smtp_data_err	 data_err;
	int			 in_header;
	size_t			 header_bytes;
	size_t			 msg_bytes;
	struct timespec		 tx_start;
	char			 received[SMTP_RECEIVED_MAX];
	size_t			 receivedlen;
	const struct config_policy *policy;	/* of the first accepted recipient */
	struct smtp_hdr		*hdrs;
	size_t			 nhdrs;
	size_t			 hdrcap;
	size_t			 eoh_off;	/* spool offset where the body part starts */
	int			 eoh_blank;	/* ... with the empty line that ends the header */
	char			 queue_id[40];
	char			*head;		/* header block as relayed */
	size_t			 headlen;
	size_t			 head_prefix;	/* fields we put before the client's */
	size_t			 head_added;	/* start of the fields appended after them */
	int			 head_overflow;	/* smtp_head_add() ran out of room */
	struct spool		 newbody;	/* a filter's replacement body */
	int			 use_newbody;
	size_t			 replay_i;	/* header/body replay to the filters */
	int			 in_replay;	/* inside smtp_replay_next(): loop, don't recurse */
	int			 replay_again;
	size_t			 replay_off;
	char			*replay_buf;

	/* Upstream. */
	struct upstream		*up;
	int			 up_reused;	/* this MAIL went over a kept connection */
	int			 mail_retried;
	char			 pending[SMTP_CMD_LINE_MAX + SMTP_PARAMS_MAX * 8];	/* command to relay */
	char			 pending_rcpt[SMTP_PATH_MAX + 1];
	char			 pending_dsn[SMTP_PARAM_VALUE_MAX * 2 + 32];	/* its DSN parameters */
	upstream_done_fn	 pending_cb;	/* who gets the reply to pending */
	char			*auth_id;	/* authenticated identity (RFC 4954), set on 235 only */
	char			*auth_claim;	/* the name in the exchange, until the upstream says 235 */
	char			 auth_mech[24];
	int			 auth_step;	/* SASL responses relayed so far */
	unsigned long		 messages;
};

struct smtp_verb {
	enum smtp_cmd	 cmd;
	void		(*fn)(struct smtp_session *, const char *args);
};

static atomic_ullong smtp_session_seq;
static smtp_check_fn smtp_check_cb;
static void *smtp_check_arg;

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

static void	smtp_process(struct smtp_session *);
static void	smtp_process_once(struct smtp_session *);
static void	smtp_proxy_input(struct smtp_session *);
static void	smtp_quit_flushed(struct smtp_session *);
static int	smtp_quit_later(struct smtp_session *);
static void	smtp_quit_poll(evutil_socket_t, short, void *);
static void	smtp_upstream_mail_start(struct smtp_session *);
static const char *smtp_mail_line(struct smtp_session *);
static void	smtp_session_free(struct smtp_session *);
static void	smtp_cancel_async(struct smtp_session *);
static void	smtp_timed_out(struct smtp_session *);

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
	if (s->line_timed)
		return;
	smtp_deadline(s, s->cfg->timeouts.command);
	s->line_timed = 1;
}

/* The message's data ended (or never will): its time bound is over. */
static void
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
static void
smtp_read_on(struct smtp_session *s)
{
	if (!s->eof)
		bufferevent_enable(s->bev, EV_READ);
}

static void
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
		s->line_timed = 0;
		smtp_line_wait(s);
		if (state == SMTP_STATE_AUTH || !s->output_full)
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
		 * writes it and calls smtp_writecb.  With nothing left to write
		 * that callback never comes, so a zero timer frees instead.
		 */
		bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
		tv.tv_sec = SMTP_QUIT_TIMEOUT;
		bufferevent_set_timeouts(s->bev, NULL, &tv);
		bufferevent_enable(s->bev, EV_WRITE);
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0 &&
		    smtp_quit_later(s) == -1)
			fatalx("smtp: cannot schedule the close");
		break;
	default:
		fatalx("smtp: bad state %d", state);
	}
}

/* Send one complete reply; text may hold several lines separated by '\n'. */
__attribute__((format(printf, 2, 3)))
static void
smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
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
static void
smtp_error(struct smtp_session *s, const char *fmt, ...)
{
	char buf[SMTP_REPLY_BUF];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	smtp_reply(s, "%s", buf);
	if (++s->errors >= s->cfg->limits.errors) {
		log_info("%016llx smtp disconnect reason=too-many-errors client=%s",
		    s->id, s->addr);
		smtp_reply(s, "421 4.7.0 %s Error: too many errors",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
	}
}

/* Relay an upstream reply, each line carrying an enhanced status code. */
static void
smtp_relay_reply(struct smtp_session *s, const struct smtp_reply *r,
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
	evbuffer_add(bufferevent_get_output(s->bev), buf, n);
}

static void
smtp_tx_reset(struct smtp_session *s)
{
	size_t i;

	/* A message the chain saw but that did not complete: on_abort. */
	if (s->fs != NULL)
		filter_session_msg_end(s->fs, s->mail_from != NULL);
	s->policy = NULL;
	s->nhdrs = 0;
	s->eoh_off = 0;
	free(s->head);
	s->head = NULL;
	s->headlen = 0;
	free(s->replay_buf);
	s->replay_buf = NULL;
	if (s->use_newbody)
		spool_reset(&s->newbody);
	s->use_newbody = 0;
	s->queue_id[0] = '\0';
	free(s->mail_from);
	s->mail_from = NULL;
	s->tx_utf8 = 0;
	s->tx_size_limit = 0;
	s->bdat = 0;
	s->bdat_total = 0;
	s->bdat_linelen = 0;
	s->bdat_long = 0;
	for (i = 0; i < s->nrcpts; i++) {
		free(s->rcpts[i]);
		free(s->rcpt_params[i]);
	}
	free(s->rcpts);
	free(s->rcpt_params);
	s->rcpts = NULL;
	s->rcpt_params = NULL;
	s->nrcpts = 0;
	s->rcpt_attempts = 0;
	spool_reset(&s->spool);
	s->data_err = SMTP_DATA_OK;
	smtp_data_clock_stop(s);
}

/* Refresh the chain's view of the session before a phase runs. */
static void
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
	f->mail_from = s->mail_from;
	f->rcpts = (const char *const *)s->rcpts;
	f->nrcpts = s->nrcpts;
	f->queue_id = s->queue_id[0] ? s->queue_id : NULL;
	f->policy = s->policy;
}

static void
smtp_filter(struct smtp_session *s, enum filter_phase phase, const char *str,
    filter_done_fn done)
{
	struct filter_args a;

	memset(&a, 0, sizeof a);
	a.str = str;
	smtp_facts(s);
	filter_session_run(s->fs, phase, &a, done, s);
}

/*
 * Filter verdicts other than continue/accept end the command here.  The
 * reply a filter supplies was validated by the chain; the defaults name the
 * phase so an admin can tell which check refused.
 */
static int
smtp_filter_refused(struct smtp_session *s, const struct filter_result *res,
    const char *what)
{
	switch (res->verdict) {
	case FMX_REJECT:
		if (res->reply[0])
			smtp_reply(s, "%s", res->reply);
		else
			smtp_reply(s, "550 5.7.1 %s rejected by policy", what);
		log_info("%016llx smtp refused=%s filter=%s verdict=reject", s->id,
		    what, res->filter);
		return 1;
	case FMX_TEMPFAIL:
		if (res->reply[0])
			smtp_reply(s, "%s", res->reply);
		else
			smtp_reply(s, "451 4.7.1 %s deferred by policy", what);
		log_info("%016llx smtp refused=%s filter=%s verdict=tempfail",
		    s->id, what, res->filter);
		return 1;
	default:
		/* continue; message verdicts wait for the end of the message */
		return 0;
	}
}

/* Resume the command loop after an asynchronous step finished. */
static void
smtp_resume(struct smtp_session *s, enum smtp_state state)
{
	if (s->state != SMTP_STATE_QUIT)
		smtp_enter_state(s, state);
	if (!s->processing)
		smtp_process(s);
}

/* ---- upstream failures ------------------------------------------------- */

static void
smtp_upstream_failed(struct smtp_session *s, enum upstream_err err)
{
	upstream_close(s->up);
	s->up = NULL;
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

/* ---- HELO / EHLO ------------------------------------------------------- */

/*
 * The upstream's extensions: the connection's own once it is open, else
 * the last the upstream told anyone (upstream_caps_set).  Before it ever
 * answered, 8BITMIME, SMTPUTF8 and DSN are assumed (README
 * "Capabilities"): not offering them would make senders downgrade 8-bit
 * bodies (breaking DKIM) or bounce SMTPUTF8 mail, while a transaction that
 * needs one the upstream then lacks only gets a 451 (smtp_mail_line).
 */
static void
smtp_upstream_caps(const struct smtp_session *s, struct smtp_ehlo_caps *caps)
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

static int
smtp_upstream_has(const struct smtp_session *s, unsigned flag)
{
	struct smtp_ehlo_caps caps;

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return 0;
	smtp_upstream_caps(s, &caps);
	return (caps.flags & flag) != 0;
}

/*
 * The pass-through extensions to advertise: 8BITMIME and SMTPUTF8 when
 * the upstream has them (a dir: upstream stores 8-bit content as is),
 * DSN only with the upstream's own support (a Maildir sends none).
 */
static unsigned
smtp_offer_flags(const struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8;
	smtp_upstream_caps(s, &caps);
	return caps.flags & (SMTP_EHLO_8BITMIME | SMTP_EHLO_SMTPUTF8 |
	    SMTP_EHLO_DSN);
}

/*
 * What the client was offered (at its last EHLO) is what it may use:
 * the upstream changing in between must not turn it into a 555.
 */
static int
smtp_offer_8bitmime(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_8BITMIME) != 0;
}

static int
smtp_offer_smtputf8(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_SMTPUTF8) != 0;
}

static int
smtp_offer_dsn(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_DSN) != 0;
}

/*
 * The largest message taken: limits.message_size, or the upstream's SIZE
 * when smaller (RFC 1870: 0 or none is no limit), so that a message the
 * upstream would refuse at its end is refused here at MAIL or cut off
 * while it arrives, not read in full first.
 */
static size_t
smtp_size_limit(const struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;
	size_t lim = s->cfg->limits.message_size;

	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP)
		return lim;
	smtp_upstream_caps(s, &caps);
	if ((caps.flags & SMTP_EHLO_SIZE) && caps.size > 0 && caps.size < lim)
		lim = caps.size;
	return lim;
}

/*
 * AUTH: on submission listeners, after TLS only (credentials never cross
 * in the clear), with the mechanisms the upstream offers: it decides.
 */
static void
smtp_auth_offer(const struct smtp_session *s, char *out, size_t outlen)
{
	struct smtp_ehlo_caps caps;
	int known;

	out[0] = '\0';
	if (s->listener == NULL || !s->listener->auth ||
	    s->tls != SMTP_TLS_ACTIVE || s->auth_id != NULL)
		return;
	upstream_caps_get(&caps, &known);
	if (known && (caps.flags & SMTP_EHLO_AUTH) && caps.auth[0] != '\0')
		snprintf(out, outlen, "250-AUTH %.100s\n", caps.auth);
}

static int
smtp_auth_offered(const struct smtp_session *s)
{
	return s->listener != NULL && s->listener->auth &&
	    s->tls == SMTP_TLS_ACTIVE;
}

static int
smtp_starttls_offered(const struct smtp_session *s)
{
	return s->listener != NULL && s->tls == SMTP_TLS_NONE &&
	    (s->listener->tls == CONFIG_TLS_STARTTLS ||
	    s->listener->tls == CONFIG_TLS_REQUIRED);
}

static void
smtp_helo_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;
	char auth[160];

	if (smtp_filter_refused(s, res, "HELO")) {
		s->helo[0] = '\0';
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	s->offer = smtp_offer_flags(s);
	if (!s->esmtp) {
		smtp_reply(s, "250 %s", s->cfg->hostname);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	/* Advertise only what the proxy itself honours (smtp_offer_flags). */
	smtp_auth_offer(s, auth, sizeof auth);
	smtp_reply(s, "250-%s\n250-PIPELINING\n250-SIZE %zu\n%s%s%s%s%s250-CHUNKING\n"
	    "250 ENHANCEDSTATUSCODES",
	    s->cfg->hostname, smtp_size_limit(s), auth,
	    smtp_offer_8bitmime(s) ? "250-8BITMIME\n" : "",
	    smtp_offer_smtputf8(s) ? "250-SMTPUTF8\n" : "",
	    smtp_offer_dsn(s) ? "250-DSN\n" : "",
	    smtp_starttls_offered(s) ? "250-STARTTLS\n" : "");
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_cmd_helo_common(struct smtp_session *s, const char *args, int esmtp)
{
	if (*args == '\0' || smtp_parse_helo(args) == -1 ||
	    strlen(args) > SMTP_HELO_MAX) {
		smtp_error(s, "501 5.5.4 Syntax: %s hostname",
		    esmtp ? "EHLO" : "HELO");
		return;
	}
	/* RFC 5321 4.1.4: EHLO/HELO resets the transaction like RSET. */
	smtp_tx_reset(s);
	/*
	 * The upstream connection was told the old name (XCLIENT HELO=,
	 * XFORWARD HELO=): a new name needs a new connection, unless that
	 * one carries the client's AUTH.
	 */
	if (s->up != NULL && s->auth_id == NULL &&
	    (strcmp(s->helo, args) != 0 || s->esmtp != esmtp)) {
		upstream_close(s->up);
		s->up = NULL;
	}
	snprintf(s->helo, sizeof s->helo, "%s", args);
	s->esmtp = esmtp;
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_filter(s, FILTER_PH_HELO, s->helo, smtp_helo_done);
}

static void
smtp_cmd_ehlo(struct smtp_session *s, const char *args)
{
	smtp_cmd_helo_common(s, args, 1);
}

static void
smtp_cmd_helo(struct smtp_session *s, const char *args)
{
	smtp_cmd_helo_common(s, args, 0);
}

/* ---- MAIL -------------------------------------------------------------- */

static void
smtp_mail_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
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
		smtp_upstream_mail_start(s);
		return;
	}
	if (err != UPSTREAM_OK) {
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_relay_reply(s, r, "2.1.0");
	if (r->code / 100 != 2) {
		free(s->mail_from);
		s->mail_from = NULL;
	}
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_rset_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK || r->code != 250) {
		/* Out of step with the upstream: start over with a new connection. */
		upstream_close(s->up);
		s->up = NULL;
	}
	smtp_upstream_mail_start(s);
}

/*
 * The command that opened (or reuses) the connection: AUTH as it came,
 * MAIL made now for this connection's extensions (smtp_mail_line).
 */
static void
smtp_upstream_send_pending(struct smtp_session *s)
{
	const char *missing;

	if (s->pending_cb != smtp_mail_reply) {
		upstream_command_secret(s->up, s->pending, s->pending_cb, s);
		return;
	}
	if ((missing = smtp_mail_line(s)) != NULL) {
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
smtp_upstream_opened(void *arg, enum upstream_err err,
    const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	(void)r;
	/* Closed before the session was even set up: the MTA is not available. */
	if (err == UPSTREAM_ERR_CLOSED)
		err = UPSTREAM_ERR_CONNECT;
	if (err != UPSTREAM_OK) {
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_upstream_send_pending(s);
}

/* Open (or reuse, after RSET if owed) the upstream, then relay MAIL. */
static void
smtp_upstream_mail_start(struct smtp_session *s)
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
		upstream_command(s->up, "RSET", smtp_rset_reply, s);
		return;
	}
	if (s->up != NULL) {
		s->up_reused = 1;
		smtp_upstream_send_pending(s);
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
	s->up = upstream_open(base, s->cfg, &cl, s->id, smtp_upstream_opened, s);
	if (s->up == NULL) {
		smtp_upstream_failed(s, UPSTREAM_ERR_LOCAL);
		smtp_resume(s, SMTP_STATE_COMMAND);
	}
}

static void
smtp_mail_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (smtp_filter_refused(s, res, "sender")) {
		free(s->mail_from);
		s->mail_from = NULL;
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP) {
		smtp_reply(s, "250 2.1.0 Ok");
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	s->pending_cb = smtp_mail_reply;
	smtp_upstream_mail_start(s);
}

static int
smtp_is_ascii(const char *p)
{
	for (; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			return 0;
	return 1;
}

/* Remember that the client gave this parameter, in its order (once each). */
static void
smtp_mail_param_keep(struct smtp_session *s, enum smtp_mail_param kind)
{
	size_t i;

	for (i = 0; i < s->tx_nparams; i++)
		if (s->tx_order[i] == kind)
			return;
	if (s->tx_nparams >= SMTP_MAIL_PARAM_COUNT)
		fatalx("smtp_mail_param_keep: %zu parameters", s->tx_nparams);
	s->tx_order[s->tx_nparams++] = kind;
}

/*
 * Validate the MAIL parameters against what this session was offered and
 * keep them (smtp_mail_line makes the upstream's line from them).
 * Returns 0, or -1 after replying to the client.
 */
static int
smtp_mail_params(struct smtp_session *s, const struct smtp_path *p)
{
	unsigned long long size;
	char *end;
	size_t i;

	s->tx_utf8 = 0;
	s->tx_body = 0;
	s->tx_ret = 0;
	s->tx_has_size = 0;
	s->tx_envid[0] = '\0';
	s->tx_nparams = 0;
	for (i = 0; i < p->nparams; i++) {
		const struct smtp_param *pa = &p->params[i];

		if (strcmp(pa->key, "SIZE") == 0) {
			errno = 0;
			size = strtoull(pa->value, &end, 10);
			if (!pa->has_value || *end != '\0' || errno ||
			    pa->value[0] < '0' || pa->value[0] > '9') {
				smtp_error(s, "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (size > smtp_size_limit(s)) {
				smtp_error(s, "552 5.3.4 Message size exceeds fixed limit");
				return -1;
			}
			s->tx_has_size = 1;
			s->tx_size = size;
			smtp_mail_param_keep(s, SMTP_MAIL_SIZE);
		} else if (strcmp(pa->key, "SMTPUTF8") == 0 && !pa->has_value &&
		    smtp_offer_smtputf8(s)) {
			s->tx_utf8 = 1;
			smtp_mail_param_keep(s, SMTP_MAIL_SMTPUTF8);
		} else if (strcmp(pa->key, "RET") == 0 && smtp_offer_dsn(s) &&
		    pa->has_value && (strcasecmp(pa->value, "FULL") == 0 ||
		    strcasecmp(pa->value, "HDRS") == 0)) {
			s->tx_ret = strcasecmp(pa->value, "FULL") == 0 ? 1 : 2;
			smtp_mail_param_keep(s, SMTP_MAIL_RET);
		} else if (strcmp(pa->key, "ENVID") == 0 && smtp_offer_dsn(s)) {
			/* RFC 3461 4.4: xtext, at most 100 characters. */
			if (!pa->has_value ||
			    strlen(pa->value) >= sizeof s->tx_envid ||
			    !xtext_valid(pa->value)) {
				smtp_error(s, "501 5.5.4 Bad ENVID parameter");
				return -1;
			}
			snprintf(s->tx_envid, sizeof s->tx_envid, "%s", pa->value);
			smtp_mail_param_keep(s, SMTP_MAIL_ENVID);
		} else if (strcmp(pa->key, "AUTH") == 0 && smtp_auth_offered(s)) {
			/*
			 * RFC 4954 5: parse and discard.  The upstream gets no
			 * AUTH= from us: it only trusts what it authenticated.
			 */
			if (!pa->has_value || (strcmp(pa->value, "<>") != 0 &&
			    !xtext_valid(pa->value))) {
				smtp_error(s, "501 5.5.4 Bad AUTH parameter");
				return -1;
			}
		} else if (strcmp(pa->key, "BODY") == 0 && pa->has_value &&
		    (strcasecmp(pa->value, "7BIT") == 0 ||
		    strcasecmp(pa->value, "8BITMIME") == 0)) {
			int eight = strcasecmp(pa->value, "8BITMIME") == 0;

			if (eight && !smtp_offer_8bitmime(s)) {
				smtp_error(s, "555 5.5.4 Unsupported parameter BODY=8BITMIME");
				return -1;
			}
			s->tx_body = eight ? 8 : 7;
			smtp_mail_param_keep(s, SMTP_MAIL_BODY);
		} else {
			smtp_error(s, "555 5.5.4 Unsupported parameter %s",
			    pa->key);
			return -1;
		}
	}
	return 0;
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
smtp_mail_line(struct smtp_session *s)
{
	struct smtp_ehlo_caps caps;
	char *line = s->pending;
	size_t linelen = sizeof s->pending, used, i;
	int n;

	smtp_upstream_caps(s, &caps);
	if (s->tx_utf8 && !(caps.flags & SMTP_EHLO_SMTPUTF8))
		return "SMTPUTF8";
	if (s->tx_body == 8 && !(caps.flags & SMTP_EHLO_8BITMIME))
		return "8BITMIME";
	if ((s->tx_ret || s->tx_envid[0]) && !(caps.flags & SMTP_EHLO_DSN))
		return "DSN";
	n = snprintf(line, linelen, "MAIL FROM:<%s>", s->mail_from);
	if (n < 0 || (size_t)n >= linelen)
		fatalx("smtp_mail_line: path over limit");
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
			fatalx("smtp_mail_line: bad parameter %d", s->tx_order[i]);
		}
		if (n < 0 || (size_t)n >= linelen - used)
			fatalx("smtp_mail_line: line over limit");
		used += (size_t)n;
	}
	return NULL;
}

/*
 * The reply for a MAIL or RCPT path the parser refused (RFC 3463: 5.1.7
 * bad sender, 5.1.3 bad recipient).  1 if refused, 0 for SMTP_PARSE_OK.
 */
static int
smtp_path_refused(struct smtp_session *s, enum smtp_parse_err e,
    enum smtp_cmd cmd)
{
	const char *esc = cmd == SMTP_CMD_MAIL ? "5.1.7" : "5.1.3";

	switch (e) {
	case SMTP_PARSE_OK:
		return 0;
	case SMTP_PARSE_PATH_TOO_LONG:
		smtp_error(s, "501 %s Error: path too long", esc);
		return 1;
	case SMTP_PARSE_ROUTED:
		if (cmd == SMTP_CMD_RCPT) {
			/* Sender-specified routing is how open relays are abused. */
			smtp_error(s, "554 5.7.1 Error: source routing and %%/! "
			    "addresses are not allowed");
			return 1;
		}
		break;
	case SMTP_PARSE_PARAM_SYNTAX:
	case SMTP_PARSE_TOO_MANY_PARAMS:
		smtp_error(s, "501 5.5.4 Error: bad parameters");
		return 1;
	case SMTP_PARSE_PARAM_DUP:
		smtp_error(s, "501 5.5.4 Error: duplicate parameter");
		return 1;
	case SMTP_PARSE_8BIT:
		smtp_error(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
		return 1;
	default:
		break;
	}
	smtp_error(s, "501 %s Bad %s address syntax", esc,
	    cmd == SMTP_CMD_MAIL ? "sender" : "recipient");
	return 1;
}

static void
smtp_cmd_mail(struct smtp_session *s, const char *args)
{
	struct smtp_path p;
	enum smtp_parse_err e;

	if (s->helo[0] == '\0') {
		smtp_error(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->mail_from != NULL) {
		smtp_error(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (s->listener != NULL && s->listener->tls == CONFIG_TLS_REQUIRED &&
	    s->tls != SMTP_TLS_ACTIVE) {
		smtp_error(s, "530 5.7.0 Must issue a STARTTLS command first");
		return;
	}
	if (s->draining) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return;
	}
	e = smtp_parse_path(args, SMTP_CMD_MAIL, &p);
	if (e == SMTP_PARSE_8BIT && smtp_offer_smtputf8(s))
		e = smtp_parse_path_utf8(args, SMTP_CMD_MAIL, &p);
	if (smtp_path_refused(s, e, SMTP_CMD_MAIL))
		return;
	if (smtp_mail_params(s, &p) == -1)
		return;
	/* RFC 6531 3.4: a UTF-8 address needs SMTPUTF8 on this MAIL. */
	if (!s->tx_utf8 && !smtp_is_ascii(p.mailbox)) {
		smtp_error(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
		return;
	}
	if ((s->mail_from = strdup(p.mailbox)) == NULL)
		fatalx("out of memory");
	/* What is logged for the message counts from here, whatever ends it. */
	clock_gettime(CLOCK_MONOTONIC, &s->tx_start);
	s->msg_bytes = 0;
	snprintf(s->queue_id, sizeof s->queue_id, "%016llx.%lu", s->id,
	    s->messages);
	s->mail_retried = 0;
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_filter(s, FILTER_PH_MAIL, s->mail_from, smtp_mail_done);
}

/* ---- RCPT -------------------------------------------------------------- */

/* A recipient with its RCPT parameters as relayed (NULL or "": none). */
static void
smtp_rcpt_add(struct smtp_session *s, const char *rcpt, const char *params)
{
	char **v;

	if ((v = reallocarray(s->rcpts, s->nrcpts + 1, sizeof *v)) == NULL)
		fatalx("out of memory");
	s->rcpts = v;
	if ((v = reallocarray(s->rcpt_params, s->nrcpts + 1, sizeof *v)) == NULL)
		fatalx("out of memory");
	s->rcpt_params = v;
	if ((s->rcpts[s->nrcpts] = strdup(rcpt)) == NULL ||
	    (params != NULL && params[0] != '\0' &&
	    (s->rcpt_params[s->nrcpts] = strdup(params)) == NULL))
		fatalx("out of memory");
	if (params == NULL || params[0] == '\0')
		s->rcpt_params[s->nrcpts] = NULL;
	s->nrcpts++;
}

/* The first accepted recipient fixes the transaction's policy. */
static void
smtp_rcpt_accepted(struct smtp_session *s)
{
	const char *at = strrchr(s->pending_rcpt, '@');

	if (s->nrcpts == 0)
		s->policy = policy_lookup(s->cfg, at ? at + 1 : NULL);
	smtp_rcpt_add(s, s->pending_rcpt, s->pending_dsn);
}

static void
smtp_rcpt_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK) {
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_relay_reply(s, r, "2.1.5");
	if (r->code / 100 == 2)
		smtp_rcpt_accepted(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_rcpt_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (smtp_filter_refused(s, res, "recipient")) {
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (s->cfg->upstream_kind != CONFIG_UPSTREAM_SMTP) {
		smtp_reply(s, "250 2.1.5 Ok");
		smtp_rcpt_accepted(s);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	upstream_command(s->up, s->pending, smtp_rcpt_reply, s);
}

/*
 * RCPT parameters: DSN's NOTIFY and ORCPT (RFC 3461 4.1, 4.2) when the
 * upstream takes DSN, re-serialised from what was validated, so nothing
 * the client wrote goes through verbatim.  0 ok, -1 after replying.
 */
static int
smtp_rcpt_params(struct smtp_session *s, const struct smtp_path *p, char *out,
    size_t outlen)
{
	size_t i, used = 0;
	int n;

	out[0] = '\0';
	for (i = 0; i < p->nparams; i++) {
		const struct smtp_param *pa = &p->params[i];
		const char *semi;

		if (!smtp_offer_dsn(s)) {
			smtp_error(s, "555 5.5.4 Unsupported parameter %s", pa->key);
			return -1;
		}
		if (!smtp_upstream_has(s, SMTP_EHLO_DSN)) {
			/* Offered at EHLO, gone now (smtp_mail_line). */
			smtp_reply(s, "451 4.3.0 Error: the upstream no longer "
			    "offers DSN, try again later");
			return -1;
		}
		if (strcmp(pa->key, "NOTIFY") == 0 && pa->has_value) {
			if (smtp_parse_notify(pa->value) == -1)
				goto bad;
			n = snprintf(out + used, outlen - used, " NOTIFY=%s", pa->value);
		} else if (strcmp(pa->key, "ORCPT") == 0 && pa->has_value &&
		    (semi = strchr(pa->value, ';')) != NULL && semi > pa->value &&
		    xtext_valid(semi + 1) && strlen(pa->value) <= 500) {
			/* addr-type ";" xtext: the type is an atom */
			for (const char *c = pa->value; c < semi; c++)
				if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
				    (*c >= '0' && *c <= '9') || *c == '-'))
					goto bad;
			n = snprintf(out + used, outlen - used, " ORCPT=%s", pa->value);
		} else
			goto bad;
		if (n < 0 || (size_t)n >= outlen - used)
			goto bad;
		used += (size_t)n;
	}
	return 0;
bad:
	smtp_error(s, "501 5.5.4 Bad DSN parameter");
	return -1;
}

/* Relay control: the upstream trusts us, so we must not be an open relay. */
static int
smtp_rcpt_allowed(struct smtp_session *s, const struct smtp_path *p)
{
	if (p->domain[0] == '\0')	/* <postmaster>: always ours (RFC 5321 4.5.1) */
		return 1;
	if (config_relay_domain(s->cfg, p->domain))
		return 1;
	if (s->auth_id != NULL)		/* RFC 4954: our own authenticated users */
		return 1;
	return netaddr_mask_match(s->cfg->relay_networks,
	    s->cfg->nrelay_networks, (const struct sockaddr *)&s->sa);
}

static void
smtp_cmd_rcpt(struct smtp_session *s, const char *args)
{
	struct smtp_path p;
	enum smtp_parse_err e;
	const struct config_policy *pol;
	struct filter_result held;
	char dsn[SMTP_PARAM_VALUE_MAX * 2 + 32];
	int n;

	if (s->mail_from == NULL) {
		smtp_error(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	e = s->tx_utf8 ? smtp_parse_path_utf8(args, SMTP_CMD_RCPT, &p) :
	    smtp_parse_path(args, SMTP_CMD_RCPT, &p);
	if (smtp_path_refused(s, e, SMTP_CMD_RCPT))
		return;
	if (smtp_rcpt_params(s, &p, dsn, sizeof dsn) == -1)
		return;
	if (s->nrcpts >= s->cfg->limits.recipients) {
		/* RFC 5321 4.5.3.1.10: 452, so the client retries the rest later. */
		smtp_reply(s, "452 4.5.3 Error: too many recipients");
		return;
	}
	if (!smtp_rcpt_allowed(s, &p)) {
		log_info("%016llx smtp reject=relay client=%s rcpt=<%s>", s->id,
		    s->addr, p.mailbox);
		smtp_error(s, "554 5.7.1 <%s>: Relay access denied", p.mailbox);
		return;
	}
	pol = policy_lookup(s->cfg, p.domain[0] ? p.domain : NULL);
	/*
	 * What connect, helo and mail found waited for this: acted on with
	 * the recipient's own policy (Postfix's smtpd_delay_reject), before
	 * the policy split, so a recipient refused anyway is told so now.
	 */
	if (filter_session_held(s->fs, pol, &held) != FMX_CONTINUE) {
		s->rcpt_attempts++;
		smtp_filter_refused(s, &held, "recipient");
		return;
	}
	/*
	 * One message, one policy: a recipient whose domain has another
	 * policy than the first accepted one must come in its own
	 * transaction; 452 makes the client retry it later (DESIGN.md).
	 */
	if (s->nrcpts > 0 && s->policy != pol) {
		smtp_reply(s, "452 4.5.3 Error: recipient has a different policy, "
		    "send it in a separate transaction");
		return;
	}
	s->rcpt_attempts++;
	snprintf(s->pending_rcpt, sizeof s->pending_rcpt, "%s", p.mailbox);
	snprintf(s->pending_dsn, sizeof s->pending_dsn, "%s", dsn);
	n = snprintf(s->pending, sizeof s->pending, "RCPT TO:<%s>%s", p.mailbox,
	    dsn);
	if (n < 0 || (size_t)n >= sizeof s->pending)
		fatalx("smtp_cmd_rcpt: path over limit");
	smtp_enter_state(s, SMTP_STATE_WAIT);
	/* The recipient's own policy applies while its rcpt hooks run. */
	smtp_facts(s);
	s->facts.policy = pol;
	{
		struct filter_args a = { .str = s->pending_rcpt };

		filter_session_run(s->fs, FILTER_PH_RCPT, &a, smtp_rcpt_done, s);
	}
}

/* ---- DATA -------------------------------------------------------------- */

/* A new message is about to be read (DATA or the first BDAT chunk). */
static void
smtp_message_init(struct smtp_session *s)
{
	spool_reset(&s->spool);
	s->nhdrs = 0;
	s->eoh_off = 0;
	s->eoh_blank = 0;
	s->data_err = SMTP_DATA_OK;
	s->in_header = 1;
	s->header_bytes = 0;
	s->msg_bytes = 0;
}

static void
smtp_data_start_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (smtp_filter_refused(s, res, "message")) {
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	smtp_message_init(s);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	smtp_resume(s, SMTP_STATE_DATA);
}

static void
smtp_cmd_data(struct smtp_session *s, const char *args)
{
	if (*args != '\0') {
		smtp_error(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (s->mail_from == NULL) {
		smtp_error(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->bdat) {
		/* RFC 3030 3: DATA and BDAT never mix in one transaction. */
		smtp_error(s, "503 5.5.1 Error: BDAT transaction in progress");
		return;
	}
	if (s->nrcpts == 0) {
		smtp_error(s, s->rcpt_attempts ?
		    "554 5.5.1 Error: no valid recipients" :
		    "503 5.5.1 Error: need RCPT command");
		return;
	}
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_filter(s, FILTER_PH_DATA, NULL, smtp_data_start_done);
}

/*
 * RFC 5321 4.4 trace field; every part comes from validated input.  The
 * client controls most of it (a 255-octet HELO, a 253-octet PTR name it
 * owns, a 256-octet path), so it is written word by word and folded
 * (RFC 5322 2.2.3) wherever a line would pass 78 octets: no word is
 * longer than a domain plus a few octets, so no line can pass 998.
 * SMTP_RECEIVED_MAX holds the longest possible field; -1 (logged) if
 * that sum were ever wrong, never a truncated field.
 */
static int
smtp_received(struct smtp_session *s)
{
	struct policy_buf b = { s->received, sizeof s->received, 0, 0, 0 };
	char date[64], word[SMTP_PATH_MAX + 8];
	const char *proto;
	struct tm tm;
	time_t now = time(NULL);
	int n;

	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	policy_puts(&b, "Received: from");
	policy_part(&b, s->helo, strlen(s->helo));
	n = snprintf(word, sizeof word, "(%s", s->name);
	policy_part(&b, word, (size_t)n);
	n = snprintf(word, sizeof word, "[%s])", s->addr);
	policy_part(&b, word, (size_t)n);
	/* The TLS details in a comment, as Postfix does. */
	if (s->tls == SMTP_TLS_ACTIVE) {
		policy_fold(&b);
		policy_puts(&b, "(using ");
		policy_puts(&b, s->tls_desc);
		policy_puts(&b, ")");
	}
	policy_fold(&b);
	policy_puts(&b, "by");
	policy_part(&b, s->cfg->hostname, strlen(s->cfg->hostname));
	policy_part(&b, "(frontmx) with", 14);
	proto = smtp_proto_name((s->esmtp ? SMTP_PROTO_ESMTP : 0) |
	    (s->tls == SMTP_TLS_ACTIVE ? SMTP_PROTO_TLS : 0) |
	    (s->auth_id != NULL ? SMTP_PROTO_AUTH : 0) |
	    (s->tx_utf8 ? SMTP_PROTO_UTF8 : 0));
	policy_part(&b, proto, strlen(proto));
	n = snprintf(word, sizeof word, "id %016llx.%lu%s", s->id, s->messages,
	    s->nrcpts == 1 ? "" : ";");
	policy_part(&b, word, (size_t)n);
	if (s->nrcpts == 1) {
		policy_fold(&b);
		policy_puts(&b, "for");
		n = snprintf(word, sizeof word, "<%s>;", s->rcpts[0]);
		policy_part(&b, word, (size_t)n);
	}
	policy_fold(&b);
	policy_puts(&b, date);
	policy_put(&b, "\r\n", 2);
	if (b.overflow) {
		log_warn("%016llx smtp Received field over %zu octets", s->id,
		    sizeof s->received);
		return -1;
	}
	s->receivedlen = b.len;
	return 0;
}

static double
smtp_elapsed(const struct smtp_session *s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - s->tx_start.tv_sec) +
	    (double)(now.tv_nsec - s->tx_start.tv_nsec) / 1e9;
}

static void
smtp_log_message(struct smtp_session *s, const char *result, const char *reply)
{
	char rcpts[1024];
	size_t i, used = 0;
	int n;

	rcpts[0] = '\0';
	for (i = 0; i < s->nrcpts && used < sizeof rcpts; i++) {
		n = snprintf(rcpts + used, sizeof rcpts - used, "%s<%s>",
		    i ? "," : "", s->rcpts[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	log_info("%016llx message client=%s from=<%s> rcpts=%zu to=%s size=%zu "
	    "result=%s reply=\"%s\" duration=%.3f", s->id, s->addr,
	    s->mail_from ? s->mail_from : "", s->nrcpts, rcpts, s->msg_bytes,
	    result, reply, smtp_elapsed(s));
}

static void	smtp_message_done(struct smtp_session *);

static void
smtp_message_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	char first[128];

	if (err != UPSTREAM_OK) {
		smtp_log_message(s, "tempfail", upstream_strerror(err));
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	snprintf(first, sizeof first, "%d %.*s", r->code,
	    (int)strcspn(r->text, "\n"), r->text);
	smtp_log_message(s, r->code / 100 == 2 ? "relayed" :
	    r->code / 100 == 4 ? "tempfail" : "rejected", first);
	smtp_relay_reply(s, r, "2.0.0");
	smtp_message_done(s);
}

/* The transaction is over (whatever the outcome): back to commands. */
static void
smtp_message_done(struct smtp_session *s)
{
	s->messages++;
	if (s->fs != NULL)
		filter_session_msg_end(s->fs, 0);
	free(s->mail_from);
	s->mail_from = NULL;	/* so smtp_tx_reset() does not call on_abort */
	smtp_tx_reset(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
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
static int
smtp_write_dir(struct smtp_session *s, const char *dir, int single,
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

/* Append to the relayed header block (smtp_build_head() checks head_overflow). */
static void
smtp_head_add(struct smtp_session *s, size_t cap, const char *p, size_t len)
{
	/* Sized for the worst case; should that sum be wrong, 451, not a crash. */
	if (s->head_overflow || s->headlen + len > cap) {
		s->head_overflow = 1;
		return;
	}
	memcpy(s->head + s->headlen, p, len);
	s->headlen += len;
}

/* Field name match, any case, old-style blanks before the colon allowed. */
static int
smtp_field_is(const char *field, size_t len, const char *name)
{
	const char *colon = memchr(field, ':', len);

	return colon != NULL &&
	    policy_header_is(field, (size_t)(colon - field), name);
}

static void
smtp_head_field(struct smtp_session *s, size_t cap, const char *name,
    const char *value)
{
	smtp_head_add(s, cap, name, strlen(name));
	smtp_head_add(s, cap, ": ", 2);
	smtp_head_add(s, cap, value, strlen(value));
	smtp_head_add(s, cap, "\r\n", 2);
}

/* Edits for position pos (0 = before the first original field). */
static void
smtp_head_inserts(struct smtp_session *s, size_t cap,
    const struct filter_outcome *o, size_t pos)
{
	size_t e;

	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_INSERT && o->edits[e].index == pos)
			smtp_head_field(s, cap, o->edits[e].name, o->edits[e].value);
}

/*
 * Build the header block the upstream will see: our Received, our
 * Authentication-Results, the tag, then the client's fields minus any
 * Authentication-Results that claims our authserv-id (RFC 8601 5), with
 * the filters' edits applied.  Everything added was validated (no CR/LF
 * inside a value), so the only line ends are the ones written here.
 */
static int
smtp_build_head(struct smtp_session *s, const struct filter_outcome *o)
{
	char *src = NULL;
	size_t cap, i, e, k, occ, vlen, extra = 0;
	const char *f, *value;
	int subject_done = 0, changed;

	for (e = 0; e < o->nedits; e++)
		extra += strlen(o->edits[e].name) + 4 +
		    (o->edits[e].value ? strlen(o->edits[e].value) : 0);
	cap = s->eoh_off + s->receivedlen + SMTP_EXTRA_HEADERS + extra +
	    (s->cfg->tag_subject_prefix ? strlen(s->cfg->tag_subject_prefix) + 3 : 0) + 2;
	if ((s->head = malloc(cap)) == NULL)
		return -1;
	s->headlen = 0;
	s->head_overflow = 0;
	if (s->eoh_off > 0) {
		if ((src = malloc(s->eoh_off)) == NULL ||
		    spool_read(&s->spool, 0, src, s->eoh_off) != (ssize_t)s->eoh_off) {
			free(src);
			return -1;
		}
	}
	smtp_head_add(s, cap, s->received, s->receivedlen);
	s->headlen += filter_session_auth_results(s->fs, s->head + s->headlen,
	    SMTP_EXTRA_HEADERS / 2);
	if (o->tags[0] != '\0')
		smtp_head_field(s, cap, s->cfg->tag_header, o->tags);
	smtp_head_inserts(s, cap, o, 0);
	s->head_prefix = s->headlen;
	for (i = 0; i < s->nhdrs; i++) {
		f = src + s->hdrs[i].off;
		vlen = s->hdrs[i].len;
		value = memchr(f, ':', vlen);
		value = value ? value + 1 : f + vlen;
		if (smtp_field_is(f, vlen, "Authentication-Results") &&
		    policy_ar_is_ours(value, (size_t)(f + vlen - value),
		    s->cfg->authserv_id)) {
			log_info("%016llx smtp removed forged Authentication-Results",
			    s->id);
			smtp_head_inserts(s, cap, o, i + 1);
			continue;
		}
		/* change_header(name, n, value): the n-th field of that name. */
		changed = 0;
		for (e = 0; e < o->nedits && !changed; e++) {
			const struct filter_edit *ed = &o->edits[e];

			if (ed->kind != FILTER_EDIT_CHANGE ||
			    !smtp_field_is(f, vlen, ed->name))
				continue;
			for (k = 0, occ = 0; k <= i; k++)
				if (smtp_field_is(src + s->hdrs[k].off, s->hdrs[k].len,
				    ed->name))
					occ++;
			if (occ != ed->index)
				continue;
			changed = 1;
			if (ed->value != NULL)
				smtp_head_field(s, cap, ed->name, ed->value);
		}
		if (changed) {
			smtp_head_inserts(s, cap, o, i + 1);
			continue;
		}
		if (!subject_done && o->verdict == FMX_TAG &&
		    s->cfg->tag_subject_prefix != NULL &&
		    smtp_field_is(f, vlen, "Subject")) {
			const char *prefix = s->cfg->tag_subject_prefix;
			const char *eol;
			size_t plen = strlen(prefix);

			subject_done = 1;
			while (value < f + vlen && (*value == ' ' || *value == '\t'))
				value++;
			eol = memchr(value, '\r', (size_t)(f + vlen - value));
			smtp_head_add(s, cap, "Subject: ", 9);
			if (eol != NULL && 9 + plen + (size_t)(eol - value) >
			    SMTP_HEADER_LINE_MAX) {
				/*
				 * The client's first line was already near the
				 * 998-octet limit (RFC 5322 2.1.1): fold between
				 * the prefix and the old subject instead.
				 */
				while (plen > 0 && (prefix[plen - 1] == ' ' ||
				    prefix[plen - 1] == '\t'))
					plen--;
				smtp_head_add(s, cap, prefix, plen);
				smtp_head_add(s, cap, "\r\n ", 3);
			} else
				smtp_head_add(s, cap, prefix, plen);
			smtp_head_add(s, cap, value, (size_t)(f + vlen - value));
		} else
			smtp_head_add(s, cap, f, vlen);
		smtp_head_inserts(s, cap, o, i + 1);
	}
	s->head_added = s->headlen;
	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_ADD)
			smtp_head_field(s, cap, o->edits[e].name, o->edits[e].value);
	/* Header fields the client sent after a non-header line stay in the body. */
	free(src);
	if (o->body != NULL) {
		/* The new body replaces everything after the header block. */
		smtp_head_add(s, cap, "\r\n", 2);
		s->use_newbody = 1;
		if (spool_append(&s->newbody, o->body, o->bodylen) == -1 ||
		    spool_flush(&s->newbody) == -1)
			return -1;
	}
	if (s->head_overflow) {
		log_warn("%016llx smtp header block over its %zu-octet bound",
		    s->id, cap);
		return -1;
	}
	return 0;
}

/* Recipient edits from the filters: 0 ok, -1 nothing left to deliver to. */
static int
smtp_apply_rcpt_edits(struct smtp_session *s, const struct filter_outcome *o,
    int *changed)
{
	struct smtp_path p;
	char line[SMTP_PATH_MAX + 16];
	size_t i, j;

	*changed = 0;
	for (i = 0; i < o->ndel_rcpts; i++)
		for (j = 0; j < s->nrcpts; j++)
			if (strcasecmp(s->rcpts[j], o->del_rcpts[i]) == 0) {
				log_info("%016llx filter removed rcpt=<%s>", s->id,
				    s->rcpts[j]);
				free(s->rcpts[j]);
				free(s->rcpt_params[j]);
				s->nrcpts--;
				s->rcpts[j] = s->rcpts[s->nrcpts];
				s->rcpt_params[j] = s->rcpt_params[s->nrcpts];
				*changed = 1;
				break;
			}
	for (i = 0; i < o->nadd_rcpts; i++) {
		/* Re-parse exactly like a client's RCPT: no smuggling via modules. */
		snprintf(line, sizeof line, "TO:<%s>", o->add_rcpts[i]);
		if (smtp_parse_path(line, SMTP_CMD_RCPT, &p) != SMTP_PARSE_OK) {
			log_warn("%016llx filter added invalid rcpt ignored", s->id);
			continue;
		}
		log_info("%016llx filter added rcpt=<%s>", s->id, p.mailbox);
		/* The api gives an added recipient no DSN parameters. */
		smtp_rcpt_add(s, p.mailbox, NULL);
		*changed = 1;
	}
	return s->nrcpts > 0 ? 0 : -1;
}

void
smtp_session_set_check(smtp_check_fn fn, void *arg)
{
	smtp_check_cb = fn;
	smtp_check_arg = arg;
}

/* `frontmx check`: report instead of delivering; the client sees 250. */
static void
smtp_check_deliver(struct smtp_session *s, const char *action)
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
	smtp_log_message(s, action, "check");
	smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
	smtp_message_done(s);
}

static void
smtp_relay_message(struct smtp_session *s)
{
	struct spool *sp;
	size_t off;

	if (s->cfg->upstream_kind == CONFIG_UPSTREAM_CHECK) {
		smtp_check_deliver(s, filter_session_outcome(s->fs)->verdict ==
		    FMX_TAG ? "tag" : "accept");
		return;
	}

	if (s->cfg->upstream_kind == CONFIG_UPSTREAM_DIR) {
		if (smtp_write_dir(s, s->cfg->upstream_dir, 0, NULL) == -1) {
			smtp_log_message(s, "tempfail", "local delivery failed");
			smtp_reply(s, "451 4.3.0 Error: local delivery failed, try again later");
		} else {
			smtp_log_message(s, "delivered", "250 maildir");
			smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		}
		smtp_message_done(s);
		return;
	}
	smtp_enter_state(s, SMTP_STATE_RELAY);
	sp = smtp_relay_spool(s, &off);
	upstream_send_message(s->up, s->head, s->headlen, sp, off,
	    smtp_message_reply, s);
}

/*
 * Recipient edits on an SMTP upstream: the upstream already accepted the
 * original RCPTs and SMTP cannot take one back, so the envelope is sent
 * again (RSET, MAIL, every final RCPT) before DATA.
 */
static void	smtp_envelope_next(struct smtp_session *);

static void
smtp_envelope_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;
	size_t step = s->replay_i++;

	if (err != UPSTREAM_OK) {
		smtp_log_message(s, "tempfail", upstream_strerror(err));
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (r->code / 100 != 2 && step < 2) {
		/* RSET or MAIL refused: give the client a temporary failure. */
		smtp_log_message(s, "tempfail", "upstream refused new envelope");
		smtp_reply(s, "451 4.3.0 Error: upstream refused the envelope, try again later");
		smtp_message_done(s);
		return;
	}
	if (r->code / 100 != 2)
		log_info("%016llx upstream refused rcpt=<%s> after edit: %d", s->id,
		    s->rcpts[step - 2], r->code);
	else if (step >= 2)
		s->replay_off++;	/* accepted recipients */
	smtp_envelope_next(s);
}

/*
 * The envelope again, with the parameters the transaction had: SIZE,
 * BODY, SMTPUTF8, RET, ENVID on MAIL, each recipient's NOTIFY and ORCPT
 * (a UTF-8 address must not go out without SMTPUTF8, nor a DSN request
 * be lost).
 */
static void
smtp_envelope_next(struct smtp_session *s)
{
	char line[sizeof s->pending];

	if (s->replay_i == 0) {
		upstream_command(s->up, "RSET", smtp_envelope_reply, s);
		return;
	}
	if (s->replay_i == 1) {
		/* The same connection as the first MAIL: the same line. */
		if (smtp_mail_line(s) != NULL) {
			smtp_log_message(s, "tempfail", "upstream extensions changed");
			smtp_reply(s, "451 4.3.0 Error: the upstream's extensions "
			    "changed, try again later");
			smtp_message_done(s);
			return;
		}
		upstream_command(s->up, s->pending, smtp_envelope_reply, s);
		return;
	}
	if (s->replay_i - 2 < s->nrcpts) {
		snprintf(line, sizeof line, "RCPT TO:<%s>%s", s->rcpts[s->replay_i - 2],
		    s->rcpt_params[s->replay_i - 2] ? s->rcpt_params[s->replay_i - 2] : "");
		upstream_command(s->up, line, smtp_envelope_reply, s);
		return;
	}
	if (s->replay_off == 0) {
		smtp_log_message(s, "tempfail", "no recipient left after edits");
		smtp_reply(s, "451 4.3.0 Error: no recipient accepted, try again later");
		smtp_message_done(s);
		return;
	}
	smtp_relay_message(s);
}

static void
smtp_eom_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;
	const struct filter_outcome *o;
	int rcpts_changed;

	if (smtp_filter_refused(s, res, "message")) {
		smtp_log_message(s, "refused", res->filter);
		smtp_message_done(s);
		return;
	}
	o = filter_session_outcome(s->fs);
	if (smtp_apply_rcpt_edits(s, o, &rcpts_changed) == -1) {
		smtp_log_message(s, "discarded", "filters removed every recipient");
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		smtp_message_done(s);
		return;
	}
	if (smtp_received(s) == -1 || smtp_build_head(s, o) == -1) {
		smtp_log_message(s, "tempfail", "out of memory or spool error");
		smtp_reply(s, "451 4.3.0 Error: local error, try again later");
		smtp_message_done(s);
		return;
	}
	if (s->cfg->upstream_kind == CONFIG_UPSTREAM_CHECK &&
	    (o->verdict == FMX_DISCARD || o->verdict == FMX_QUARANTINE)) {
		smtp_check_deliver(s, o->verdict == FMX_DISCARD ? "discard" :
		    "quarantine");
		return;
	}
	switch (o->verdict) {
	case FMX_DISCARD:
		/* The client keeps no responsibility: logging the decision is the record. */
		smtp_log_message(s, "discarded", o->reason);
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		smtp_message_done(s);
		return;
	case FMX_QUARANTINE:
		if (s->cfg->quarantine_dir == NULL ||
		    smtp_write_dir(s, s->cfg->quarantine_dir, 1, o->reason) == -1) {
			/* Nowhere safe to keep it: the client keeps it. */
			smtp_log_message(s, "tempfail", "quarantine unavailable");
			smtp_reply(s, "451 4.3.0 Error: quarantine unavailable, try again later");
		} else {
			smtp_log_message(s, "quarantined", o->reason);
			smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->queue_id);
		}
		smtp_message_done(s);
		return;
	default:
		break;
	}
	if (rcpts_changed && s->cfg->upstream_kind == CONFIG_UPSTREAM_SMTP) {
		s->replay_i = 0;
		s->replay_off = 0;
		smtp_enter_state(s, SMTP_STATE_WAIT);
		smtp_envelope_next(s);
		return;
	}
	smtp_relay_message(s);
}

/* ---- replay of the spooled message to header/eoh/body hooks ------------ */

static void	smtp_replay_next(struct smtp_session *);

static void
smtp_replay_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (smtp_filter_refused(s, res, "message")) {
		smtp_log_message(s, "refused", res->filter);
		smtp_message_done(s);
		return;
	}
	/* Filters usually answer at once: iterate there instead of recursing per header. */
	if (s->in_replay)
		s->replay_again = 1;
	else
		smtp_replay_next(s);
}

static long
smtp_msg_read(void *arg, size_t off, void *buf, size_t len)
{
	struct smtp_session *s = arg;

	return (long)spool_read(&s->spool, (off_t)off, buf, len);
}

/*
 * Feed the spooled message to the filters: each header field, end of
 * headers, the body in chunks, then eom.  Nothing was relayed yet, so
 * replaying at end of data gives the filters the same view milter
 * streaming would, with one spool and no second copy.  replay_i walks the
 * header fields, replay_off the body.
 */
static void	smtp_replay_step(struct smtp_session *);

static void
smtp_replay_next(struct smtp_session *s)
{
	do {
		s->replay_again = 0;
		s->in_replay = 1;
		smtp_replay_step(s);
		s->in_replay = 0;
	} while (s->replay_again);
}

/* Our own disk failed under the message: the client keeps it (451). */
static void
smtp_replay_failed(struct smtp_session *s)
{
	free(s->replay_buf);
	s->replay_buf = NULL;
	s->replay_i = 0;
	s->replay_off = 0;
	smtp_log_message(s, "tempfail", "spool read error");
	smtp_reply(s, "451 4.3.0 Error: local error, try again later");
	smtp_message_done(s);
}

static void
smtp_replay_step(struct smtp_session *s)
{
	struct filter_args a;
	size_t body_start = s->eoh_off, len;
	ssize_t n;
	char *colon;

	memset(&a, 0, sizeof a);
	smtp_facts(s);
	if (s->replay_i < s->nhdrs && filter_chain_wants(s->chain, FILTER_PH_HEADER)) {
		const struct smtp_hdr *h = &s->hdrs[s->replay_i++];

		free(s->replay_buf);
		if ((s->replay_buf = malloc(h->len + 1)) == NULL)
			fatalx("out of memory");
		if (spool_read(&s->spool, (off_t)h->off, s->replay_buf, h->len) !=
		    (ssize_t)h->len) {
			smtp_replay_failed(s);
			return;
		}
		len = h->len - 2;	/* without the final CRLF */
		s->replay_buf[len] = '\0';
		colon = strchr(s->replay_buf, ':');
		*colon = '\0';
		/* obsolete "Name :" syntax: the name is without the blanks */
		for (len = (size_t)(colon - s->replay_buf); len > 0 &&
		    (s->replay_buf[len - 1] == ' ' || s->replay_buf[len - 1] == '\t'); len--)
			s->replay_buf[len - 1] = '\0';
		a.str = s->replay_buf;
		a.str2 = colon + 1;
		/* milter convention: drop the one space after the colon */
		if (*a.str2 == ' ')
			a.str2++;
		filter_session_run(s->fs, FILTER_PH_HEADER, &a, smtp_replay_done, s);
		return;
	}
	if (s->replay_i == s->nhdrs || !filter_chain_wants(s->chain, FILTER_PH_HEADER)) {
		s->replay_i = s->nhdrs + 1;
		if (filter_chain_wants(s->chain, FILTER_PH_EOH)) {
			filter_session_run(s->fs, FILTER_PH_EOH, &a, smtp_replay_done, s);
			return;
		}
	}
	/* The body proper starts after the empty line that ends the header. */
	if (s->replay_off == 0)
		s->replay_off = body_start + (s->eoh_blank ? 2 : 0);
	if (filter_chain_wants(s->chain, FILTER_PH_BODY) &&
	    s->replay_off < s->spool.size) {
		free(s->replay_buf);
		if ((s->replay_buf = malloc(SMTP_BODY_CHUNK)) == NULL)
			fatalx("out of memory");
		n = spool_read(&s->spool, (off_t)s->replay_off, s->replay_buf,
		    SMTP_BODY_CHUNK);
		if (n <= 0) {
			smtp_replay_failed(s);
			return;
		}
		s->replay_off += (size_t)n;
		a.data = (const unsigned char *)s->replay_buf;
		a.len = (size_t)n;
		filter_session_run(s->fs, FILTER_PH_BODY, &a, smtp_replay_done, s);
		return;
	}
	free(s->replay_buf);
	s->replay_buf = NULL;
	s->replay_i = 0;
	s->replay_off = 0;
	filter_session_run(s->fs, FILTER_PH_EOM, &a, smtp_eom_done, s);
}

/* The client's final dot arrived: refuse a bad message, else run the filters. */
static void
smtp_data_end(struct smtp_session *s)
{
	const char *reply = NULL;

	smtp_data_clock_stop(s);
	if (s->data_err == SMTP_DATA_OK && spool_flush(&s->spool) == -1)
		s->data_err = SMTP_DATA_SPOOL;
	if (s->in_header)
		s->eoh_off = s->spool.size;	/* header only, no body */
	switch (s->data_err) {
	case SMTP_DATA_OK:
		break;
	case SMTP_DATA_BARE_EOL:
		reply = "550 5.5.2 Error: bare CR or LF in message";
		break;
	case SMTP_DATA_NUL:
		reply = "550 5.6.0 Error: NUL character in message";
		break;
	case SMTP_DATA_LINE_TOO_LONG:
		reply = "500 5.5.2 Error: line too long";
		break;
	case SMTP_DATA_TOO_BIG:
		reply = "552 5.3.4 Error: message too large";
		break;
	case SMTP_DATA_HEADER_TOO_BIG:
		reply = "552 5.3.4 Error: message header too large";
		break;
	case SMTP_DATA_SPOOL:
		reply = "451 4.3.0 Error: local spool error, try again later";
		break;
	default:
		fatalx("smtp_data_end: bad error %d", s->data_err);
	}
	if (reply != NULL) {
		smtp_log_message(s, "refused", reply);
		smtp_tx_reset(s);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		if (s->data_err == SMTP_DATA_SPOOL)
			smtp_reply(s, "%s", reply);
		else
			smtp_error(s, "%s", reply);
		return;
	}
	smtp_enter_state(s, SMTP_STATE_WAIT);
	s->replay_i = 0;
	s->replay_off = 0;
	smtp_replay_next(s);
}

/*
 * RFC 5322 2.2: field-name = 1*ftext followed by ':'; the obsolete
 * syntax (4.5.5) allows blanks before the colon, and readers honour it,
 * so such a line is a header field too (else "Subject :" would escape
 * header rules and a forged "Authentication-Results :" its removal).
 */
static int
smtp_header_start(const char *line, size_t len)
{
	size_t i, name = 0;

	for (i = 0; i < len; i++) {
		if (line[i] == ':')
			return name > 0;
		if (line[i] == ' ' || line[i] == '\t') {
			if (name == 0)
				return 0;
			continue;
		}
		if ((unsigned char)line[i] < 33 || (unsigned char)line[i] > 126 ||
		    i > name)	/* a blank inside the name */
			return 0;
		name++;
	}
	return 0;
}

/* Track header fields as they are spooled (offsets, folds, end of header). */
static void
smtp_track_header(struct smtp_session *s, const char *line, size_t len,
    size_t content)
{
	struct smtp_hdr *h;
	size_t cap;

	if (content == 0) {
		s->in_header = 0;
		s->eoh_off = s->spool.size;
		s->eoh_blank = 1;
	} else if (line[0] == ' ' || line[0] == '\t') {
		if (s->nhdrs > 0)
			s->hdrs[s->nhdrs - 1].len += len;
		else {
			s->in_header = 0;	/* a fold with nothing to fold */
			s->eoh_off = s->spool.size;
		}
	} else if (smtp_header_start(line, content)) {
		if (s->nhdrs == s->hdrcap) {
			cap = s->hdrcap ? s->hdrcap * 2 : 32;
			if ((h = realloc(s->hdrs, cap * sizeof *h)) == NULL)
				fatalx("out of memory");
			s->hdrs = h;
			s->hdrcap = cap;
		}
		s->hdrs[s->nhdrs].off = s->spool.size;
		s->hdrs[s->nhdrs].len = len;
		s->nhdrs++;
	} else {
		/* Not a header field: like Postfix, the body starts here. */
		s->in_header = 0;
		s->eoh_off = s->spool.size;
	}
}

/* One message line, CRLF included in len (content is len - 2 bytes). */
static void
smtp_data_line(struct smtp_session *s, const char *line, size_t len,
    enum smtp_line kind)
{
	size_t content = len - 2;

	switch (kind) {
	case SMTP_LINE_OK:
		break;
	case SMTP_LINE_BARE_EOL:
		if (s->data_err == SMTP_DATA_OK)
			s->data_err = SMTP_DATA_BARE_EOL;
		break;
	case SMTP_LINE_NUL:
		if (s->data_err == SMTP_DATA_OK)
			s->data_err = SMTP_DATA_NUL;
		break;
	case SMTP_LINE_TOO_LONG:
		if (s->data_err == SMTP_DATA_OK)
			s->data_err = SMTP_DATA_LINE_TOO_LONG;
		return;
	default:
		fatalx("smtp_data_line: bad kind %d", kind);
	}
	/*
	 * Un-stuff (RFC 5321 4.5.2); the writer re-stuffs its own output.
	 * BDAT content is not stuffed (RFC 3030 2).
	 */
	if (!s->bdat) {
		smtp_frame_unstuff(&line, &len);
		content = len - 2;
	}
	/*
	 * 4.5.3.1.6: 1000 octets with CRLF, the stuffing dot not counted,
	 * unless the admin raised limits.line_length.
	 */
	if (len > s->cfg->limits.line_length && s->data_err == SMTP_DATA_OK)
		s->data_err = SMTP_DATA_LINE_TOO_LONG;
	s->msg_bytes += len;
	if (s->in_header && content > 0 &&
	    (s->header_bytes += len) > s->cfg->limits.header_size &&
	    s->data_err == SMTP_DATA_OK)
		s->data_err = SMTP_DATA_HEADER_TOO_BIG;
	/* Fixed when the data starts: the upstream connection is open. */
	if (s->tx_size_limit == 0)
		s->tx_size_limit = smtp_size_limit(s);
	if (s->msg_bytes > s->tx_size_limit &&
	    s->data_err == SMTP_DATA_OK)
		s->data_err = SMTP_DATA_TOO_BIG;
	if (s->data_err != SMTP_DATA_OK)
		return;		/* keep reading to the dot, store nothing */
	if (s->in_header)
		smtp_track_header(s, line, len, content);
	if (spool_append(&s->spool, line, len) == -1)
		s->data_err = SMTP_DATA_SPOOL;
}

/* ---- AUTH (RFC 4954), relayed to the upstream ----------------------------- */

/*
 * Who logged in, for policy, filters and DKIM signing: the authcid of
 * PLAIN (RFC 4616), the user of LOGIN, the name of CRAM-MD5.  The upstream
 * checked the password; we only read the name.
 */
static void
smtp_auth_learn(struct smtp_session *s, const char *b64)
{
	unsigned char dec[1024];
	const unsigned char *id = dec, *nul;
	size_t len = strlen(b64);
	int n;

	if (len == 0 || len > 4 * (sizeof dec / 3) - 4 || strcmp(b64, "=") == 0)
		return;
	if ((n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)len)) < 0)
		return;
	while (len > 0 && b64[len - 1] == '=') {	/* padding decodes to NULs */
		n--;
		len--;
	}
	if (n <= 0)
		return;
	if (strcasecmp(s->auth_mech, "PLAIN") == 0) {
		if ((nul = memchr(dec, '\0', (size_t)n)) == NULL)
			return;
		id = nul + 1;
		if ((nul = memchr(id, '\0', (size_t)(dec + n - id))) == NULL)
			return;
		n = (int)(nul - id);
	} else if (strcasecmp(s->auth_mech, "CRAM-MD5") == 0) {
		if ((nul = memchr(dec, ' ', (size_t)n)) == NULL)
			return;
		n = (int)(nul - dec);
	} else if (strcasecmp(s->auth_mech, "LOGIN") != 0)
		return;
	/* An identity goes into logs and headers: printable, no CR/LF. */
	for (int i = 0; i < n; i++)
		if (id[i] < 0x21 || id[i] > 0x7e)
			return;
	/* Only a claim: it becomes the identity when the upstream says 235. */
	free(s->auth_claim);
	if ((s->auth_claim = strndup((const char *)id, (size_t)n)) == NULL)
		fatalx("out of memory");
}

/* Forget a claim that did not end in 235 (failure, cancel, error). */
static void
smtp_auth_forget(struct smtp_session *s)
{
	free(s->auth_claim);
	s->auth_claim = NULL;
}

static void
smtp_auth_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK) {
		smtp_auth_forget(s);
		smtp_upstream_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (r->code == 334) {
		/* A challenge: base64 text, relayed as is (no enhanced code on 3xx). */
		smtp_reply(s, "334 %.1000s", r->text);
		smtp_resume(s, SMTP_STATE_AUTH);
		return;
	}
	if (r->code == 235) {
		s->auth_id = s->auth_claim != NULL ? s->auth_claim : strdup("unknown");
		s->auth_claim = NULL;
		if (s->auth_id == NULL)
			fatalx("out of memory");
		log_info("%016llx smtp auth=ok mech=%s user=%s client=%s", s->id,
		    s->auth_mech, s->auth_id, s->addr);
	} else {
		smtp_auth_forget(s);
		log_info("%016llx smtp auth=failed mech=%s code=%d client=%s",
		    s->id, s->auth_mech, r->code, s->addr);
		s->errors++;
	}
	smtp_relay_reply(s, r, "2.7.0");
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_cmd_auth(struct smtp_session *s, const char *args)
{
	char offer[160];
	const char *sp;
	int n;

	smtp_auth_offer(s, offer, sizeof offer);
	if (offer[0] == '\0' && s->auth_id == NULL) {
		smtp_error(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->auth_id != NULL) {
		smtp_error(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->mail_from != NULL) {
		smtp_error(s, "503 5.5.1 Error: AUTH not allowed in a mail transaction");
		return;
	}
	sp = strchr(args, ' ');
	n = sp ? (int)(sp - args) : (int)strlen(args);
	if (n == 0 || n >= (int)sizeof s->auth_mech) {
		smtp_error(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
		return;
	}
	snprintf(s->auth_mech, sizeof s->auth_mech, "%.*s", n, args);
	s->auth_step = 0;
	if (sp != NULL)
		smtp_auth_learn(s, sp + 1);
	snprintf(s->pending, sizeof s->pending, "AUTH %s", args);
	s->pending_cb = smtp_auth_reply;
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_upstream_mail_start(s);
}

/*
 * The upstream's answer to our "*": the client already has its 501.  A
 * 235 or 334 to "*" is a protocol error (upstream.c), the connection gone.
 */
static void
smtp_auth_cancelled(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	(void)r;
	if (err != UPSTREAM_OK) {
		upstream_close(s->up);
		s->up = NULL;
	}
	smtp_resume(s, SMTP_STATE_COMMAND);
}

/* One SASL response line from the client (up to RFC 4954's 12288 octets). */
static int
smtp_auth_input(struct smtp_session *s)
{
	char *line;
	size_t len;
	enum smtp_line kind;

	if ((line = malloc(SMTP_AUTH_LINE_MAX + 1)) == NULL)
		fatalx("out of memory");
	kind = smtp_frame_line(bufferevent_get_input(s->bev), &s->skipping, line,
	    SMTP_AUTH_LINE_MAX, &len);
	if (kind == SMTP_LINE_NONE) {
		free(line);
		return 0;
	}
	if (kind != SMTP_LINE_OK || s->up == NULL) {
		free(line);
		smtp_auth_forget(s);
		smtp_error(s, "501 5.5.2 Error: bad SASL response");
		if (s->state == SMTP_STATE_QUIT)
			return 1;
		/*
		 * Cancel the exchange upstream with "*" (RFC 4954 4) rather
		 * than hanging up mid-exchange: a QUIT there would be taken
		 * as a (wrong) password and counted against our address.
		 */
		if (s->up == NULL) {
			smtp_enter_state(s, SMTP_STATE_COMMAND);
			return 1;
		}
		smtp_enter_state(s, SMTP_STATE_WAIT);
		upstream_command_secret(s->up, "*", smtp_auth_cancelled, s);
		return 1;
	}
	line[len - 2] = '\0';
	if (s->auth_step++ == 0 && strcasecmp(s->auth_mech, "LOGIN") == 0)
		smtp_auth_learn(s, line);
	else if (s->auth_step == 1 && strcasecmp(s->auth_mech, "LOGIN") != 0)
		smtp_auth_learn(s, line);
	smtp_enter_state(s, SMTP_STATE_WAIT);
	upstream_command_secret(s->up, line, smtp_auth_reply, s);
	free(line);
	return 1;
}

/* ---- BDAT (RFC 3030) ---------------------------------------------------- */

/*
 * The buffer one message line is framed into, for DATA and BDAT alike
 * (a transaction uses one of them): limits.line_length plus a stuffing
 * dot and a spare octet, so up to 1 MiB when the admin raised it.  Made
 * at the session's first message, kept to its end: idle sessions have
 * none, and s->cfg does not change under a session.
 */
static char *
smtp_text_line(struct smtp_session *s)
{
	if (s->text_line == NULL &&
	    (s->text_line = malloc(s->cfg->limits.line_length + 2)) == NULL)
		fatalx("out of memory");
	return s->text_line;
}

static void	smtp_data_line(struct smtp_session *, const char *, size_t,
		    enum smtp_line);

/* Frame chunk bytes into lines, like DATA but with no stuffing and no dot. */
static void
smtp_bdat_bytes(struct smtp_session *s, const char *p, size_t n)
{
	char *line = smtp_text_line(s);
	const char *nl;
	size_t take, len, i;
	enum smtp_line kind;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		take = nl ? (size_t)(nl - p) + 1 : n;
		if (s->bdat_long ||
		    s->bdat_linelen + take > s->cfg->limits.line_length + 2) {
			/* Over 1000 octets: account for it, keep nothing. */
			if (!s->bdat_long && s->data_err == SMTP_DATA_OK)
				smtp_data_line(s, line, 2, SMTP_LINE_TOO_LONG);
			s->bdat_long = nl == NULL;
			s->bdat_linelen = 0;
			s->msg_bytes += take;
			p += take;
			n -= take;
			continue;
		}
		memcpy(line + s->bdat_linelen, p, take);
		s->bdat_linelen += take;
		p += take;
		n -= take;
		if (nl == NULL)
			break;
		len = s->bdat_linelen;
		s->bdat_linelen = 0;
		kind = SMTP_LINE_OK;
		if (len < 2 || line[len - 2] != '\r')
			kind = SMTP_LINE_BARE_EOL;	/* LF without CR */
		for (i = 0; kind == SMTP_LINE_OK && i + 2 < len; i++) {
			if (line[i] == '\r' || line[i] == '\n')
				kind = SMTP_LINE_BARE_EOL;
			else if (line[i] == '\0')
				kind = SMTP_LINE_NUL;
		}
		if (kind == SMTP_LINE_BARE_EOL && len < 2) {
			/* a lone LF: account 2 octets so the line helper can cope */
			line[1] = '\n';
			len = 2;
		}
		smtp_data_line(s, line, len, kind);
	}
}

/* Consume the current chunk; 1 when it is complete (and answered). */
static int
smtp_bdat_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	char buf[16384];
	size_t have, take;
	const char *refuse;

	while (s->bdat_left > 0 && (have = evbuffer_get_length(in)) > 0) {
		take = have < sizeof buf ? have : sizeof buf;
		if (take > s->bdat_left)
			take = (size_t)s->bdat_left;
		evbuffer_remove(in, buf, take);
		s->bdat_left -= take;
		/* A refused chunk is consumed, not counted: it is no message's. */
		if (s->bdat_refuse == NULL) {
			s->bdat_total += take;
			smtp_bdat_bytes(s, buf, take);
		}
	}
	if (s->bdat_left > 0)
		return 0;
	if ((refuse = s->bdat_refuse) != NULL) {
		/* The octets are gone, the client is in step: now say no. */
		s->bdat_refuse = NULL;
		smtp_data_clock_stop(s);
		if (s->mail_from != NULL)
			smtp_tx_reset(s);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_error(s, "%s", refuse);
		return 1;
	}
	if (!s->bdat_last) {
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_reply(s, "250 2.0.0 %llu octets received", s->bdat_total);
		return 1;
	}
	if (s->bdat_linelen > 0 || s->bdat_long)
		/* A last line without CRLF: the message still ends in one. */
		smtp_bdat_bytes(s, "\r\n", 2);
	smtp_data_end(s);
	return 1;
}

static void
smtp_bdat_start_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (res->verdict == FMX_REJECT || res->verdict == FMX_TEMPFAIL) {
		s->bdat_refuse = res->reply[0] ? res->reply :
		    res->verdict == FMX_REJECT ? "550 5.7.1 message rejected by policy" :
		    "451 4.7.1 message deferred by policy";
		/* res->reply lives in the chain only until the next phase: copy */
		snprintf(s->bdat_reply, sizeof s->bdat_reply, "%s", s->bdat_refuse);
		s->bdat_refuse = s->bdat_reply;
	} else {
		smtp_message_init(s);
		s->bdat = 1;
	}
	smtp_resume(s, SMTP_STATE_BDAT);
}

static void
smtp_cmd_bdat(struct smtp_session *s, const char *args)
{
	unsigned long long size;
	const char *p = args;
	char *end;

	/*
	 * Without a size we cannot know where the chunk ends, and its octets
	 * would be read as commands: end the session instead (RFC 3030 3).
	 */
	errno = 0;
	size = strtoull(p, &end, 10);
	if (p[0] < '0' || p[0] > '9' || errno != 0 || end - p > 20 ||
	    (*end != '\0' && strcasecmp(end, " LAST") != 0)) {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		smtp_reply(s, "421 4.5.0 %s Error: cannot find the end of the chunk",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return;
	}
	s->bdat_left = size;
	s->bdat_last = *end != '\0';
	s->bdat_refuse = NULL;
	if (s->mail_from == NULL)
		s->bdat_refuse = "503 5.5.1 Error: need MAIL command";
	else if (s->nrcpts == 0)
		s->bdat_refuse = s->rcpt_attempts ?
		    "554 5.5.1 Error: no valid recipients" :
		    "503 5.5.1 Error: need RCPT command";
	if (s->bdat_refuse != NULL || s->bdat) {
		smtp_enter_state(s, SMTP_STATE_BDAT);
		return;
	}
	/* First chunk of the message: the data phase filters run first. */
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_filter(s, FILTER_PH_DATA, NULL, smtp_bdat_start_done);
}

/* ---- other verbs ------------------------------------------------------- */

static void
smtp_cmd_rset(struct smtp_session *s, const char *args)
{
	if (*args != '\0') {
		smtp_error(s, "501 5.5.4 Syntax: RSET");
		return;
	}
	smtp_tx_reset(s);
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_noop(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "250 2.0.0 Ok");
}

static void
smtp_cmd_quit(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "221 2.0.0 Bye");
	smtp_enter_state(s, SMTP_STATE_QUIT);
}

static void
smtp_cmd_vrfy(struct smtp_session *s, const char *args)
{
	if (*args == '\0') {
		smtp_error(s, "501 5.5.4 Syntax: VRFY address");
		return;
	}
	/* RFC 5321 3.5.3: 252 when we won't verify but will accept mail. */
	smtp_reply(s, "252 2.0.0 Send some mail, I'll try my best");
}

static void
smtp_cmd_help(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_reply(s, "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}

static void	smtp_readcb(struct bufferevent *, void *);
static void	smtp_writecb(struct bufferevent *, void *);
static void	smtp_eventcb(struct bufferevent *, short, void *);

/*
 * Unread client input kept: limits.pipeline_backlog, but never less than
 * one whole text line (limits.line_length, plus the octet that shows it
 * is too long), which the framer must see in one piece: an admin who
 * raised line_length past the backlog would otherwise stall every long
 * line.  Still bounded: both are bounded configuration values.
 */
static size_t
smtp_backlog(const struct config *cfg)
{
	return cfg->limits.pipeline_backlog > cfg->limits.line_length + 1 ?
	    cfg->limits.pipeline_backlog : cfg->limits.line_length + 1;
}

/* Callbacks, watermarks: the same on the plain and on the TLS bufferevent. */
static void
smtp_bev_setup(struct smtp_session *s)
{
	bufferevent_setcb(s->bev, smtp_readcb, smtp_writecb, smtp_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, smtp_backlog(s->cfg));
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTP_OUTPUT_HIGH / 2, 0);
	/* Plain sockets are written directly (bev.h); TLS goes through libevent. */
	if (bev_direct(s->bev))
		bufferevent_disable(s->bev, EV_WRITE);
	else
		bufferevent_enable(s->bev, EV_WRITE);
	smtp_read_on(s);
}

/* Put a TLS server layer over the plain bufferevent (STARTTLS, PROXY+465). */
static int
smtp_tls_wrap(struct smtp_session *s)
{
	struct bufferevent *tls;
	SSL *ssl;

	if ((ssl = tls_server_ssl(s->listener)) == NULL)
		return -1;
	tls = bufferevent_openssl_filter_new(bufferevent_get_base(s->bev), s->bev,
	    ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	s->bev = tls;
	smtp_bev_setup(s);
	s->tls = SMTP_TLS_HANDSHAKE;
	return 0;
}

static void
smtp_cmd_starttls(struct smtp_session *s, const char *args)
{
	struct evbuffer *in;

	if (*args != '\0') {
		smtp_error(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->tls != SMTP_TLS_NONE) {
		smtp_error(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!smtp_starttls_offered(s)) {
		smtp_error(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	if (s->listener->tls_ctx == NULL) {
		smtp_reply(s, "454 4.7.0 TLS not available due to temporary reason");
		return;
	}
	smtp_reply(s, "220 2.0.0 Ready to start TLS");
	/*
	 * CVE-2011-0411: whatever the client pipelined after STARTTLS was
	 * sent in the clear and must not run inside the TLS session.
	 */
	in = bufferevent_get_input(s->bev);
	if (evbuffer_get_length(in) > 0) {
		log_info("%016llx smtp discarded %zu bytes pipelined after STARTTLS",
		    s->id, evbuffer_get_length(in));
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	/* The 220 still sits in the plain bufferevent's output: it goes first. */
	if (smtp_tls_wrap(s) == -1) {
		smtp_reply(s, "421 4.7.0 %s TLS setup failed", s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return;
	}
	/* RFC 3207 4.2: forget everything learnt before TLS; EHLO again. */
	smtp_tx_reset(s);
	free(s->auth_id);
	s->auth_id = NULL;
	s->helo[0] = '\0';
	s->esmtp = 0;
	upstream_close(s->up);
	s->up = NULL;
	s->tls = SMTP_TLS_HANDSHAKE;
	smtp_enter_state(s, SMTP_STATE_COMMAND);
}

static void
smtp_cmd_not_implemented(struct smtp_session *s, const char *args)
{
	(void)args;
	smtp_error(s, "502 5.5.1 Error: command not implemented");
}

static const struct smtp_verb smtp_verbs[] = {
	{ SMTP_CMD_HELO,	smtp_cmd_helo },
	{ SMTP_CMD_EHLO,	smtp_cmd_ehlo },
	{ SMTP_CMD_MAIL,	smtp_cmd_mail },
	{ SMTP_CMD_RCPT,	smtp_cmd_rcpt },
	{ SMTP_CMD_DATA,	smtp_cmd_data },
	{ SMTP_CMD_RSET,	smtp_cmd_rset },
	{ SMTP_CMD_NOOP,	smtp_cmd_noop },
	{ SMTP_CMD_QUIT,	smtp_cmd_quit },
	{ SMTP_CMD_VRFY,	smtp_cmd_vrfy },
	{ SMTP_CMD_HELP,	smtp_cmd_help },
	/* Never relayed: a client's XCLIENT/AUTH/BDAT would desynchronise us. */
	{ SMTP_CMD_EXPN,	smtp_cmd_not_implemented },
	{ SMTP_CMD_STARTTLS,	smtp_cmd_starttls },
	{ SMTP_CMD_AUTH,	smtp_cmd_auth },
	{ SMTP_CMD_BDAT,	smtp_cmd_bdat },
	{ SMTP_CMD_XCLIENT,	smtp_cmd_not_implemented },
	{ SMTP_CMD_XFORWARD,	smtp_cmd_not_implemented },
};

static void
smtp_command(struct smtp_session *s, const char *line)
{
	enum smtp_cmd cmd;
	const char *args;
	size_t i;

	cmd = smtp_parse_verb(line, &args);
	for (i = 0; i < sizeof smtp_verbs / sizeof smtp_verbs[0]; i++)
		if (smtp_verbs[i].cmd == cmd) {
			smtp_verbs[i].fn(s, args);
			return;
		}
	smtp_error(s, "502 5.5.2 Error: command not recognized");
}

/* ---- framing ----------------------------------------------------------- */

/* Consume buffered message lines; 1 if the final dot was seen. */
static int
smtp_data_input(struct smtp_session *s)
{
	char *line = smtp_text_line(s);
	enum smtp_line kind;
	size_t len;

	for (;;) {
		/* One more octet than the limit: room for a stuffing dot. */
		kind = smtp_frame_line(bufferevent_get_input(s->bev),
		    &s->skipping, line, s->cfg->limits.line_length + 1, &len);
		if (kind == SMTP_LINE_NONE)
			return 0;
		if (kind == SMTP_LINE_OK && len == 3 && line[0] == '.') {
			smtp_data_end(s);
			return 1;
		}
		if (kind == SMTP_LINE_TOO_LONG) {
			smtp_data_line(s, line, 2, kind);
			continue;
		}
		smtp_data_line(s, line, len, kind);
	}
}

/*
 * Handle what the client sent, then write all the replies at once (a
 * pipelined group gets one write).  When the client was not reading them
 * (output_full) and the write made room, carry on.
 */
static void
smtp_process(struct smtp_session *s)
{
	struct evbuffer *out;

	for (;;) {
		smtp_process_once(s);
		if (s->state == SMTP_STATE_QUIT || s->processing)
			return;
		out = bufferevent_get_output(s->bev);
		bev_flush(s->bev);
		if (!s->output_full || evbuffer_get_length(out) > SMTP_OUTPUT_HIGH / 2)
			return;
		s->output_full = 0;
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
	if (s->mail_from != NULL)
		smtp_log_message(s, "aborted", "client disconnected");
	log_info("%016llx smtp disconnect reason=eof state=%s client=%s "
	    "messages=%lu", s->id, smtp_state_names[s->state], s->addr,
	    s->messages);
	smtp_enter_state(s, SMTP_STATE_QUIT);
}

static void
smtp_process_once(struct smtp_session *s)
{
	char line[SMTP_CMD_LINE_MAX + 1];
	enum smtp_line kind;
	size_t len;

	s->processing = 1;
	for (;;) {
		if (s->state == SMTP_STATE_DATA) {
			if (!smtp_data_input(s))
				goto more;
			continue;
		}
		if (s->state == SMTP_STATE_BDAT) {
			if (!smtp_bdat_input(s))
				goto more;
			continue;
		}
		if (s->state == SMTP_STATE_AUTH) {
			if (!smtp_auth_input(s))
				goto more;
			continue;
		}
		if (s->state != SMTP_STATE_COMMAND)
			break;
		/*
		 * Backpressure: a client that pipelines without reading its
		 * replies would make us queue them forever.  Stop reading it
		 * until it drains (smtp_writecb); its input is capped by the
		 * read watermark meanwhile.
		 */
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) >
		    SMTP_OUTPUT_HIGH) {
			s->output_full = 1;
			bufferevent_disable(s->bev, EV_READ);
			smtp_line_wait(s);
			break;
		}
		if (s->draining && s->mail_from == NULL &&
		    evbuffer_get_length(bufferevent_get_input(s->bev)) == 0) {
			smtp_reply(s, "421 4.3.2 %s Service shutting down",
			    s->cfg->hostname);
			smtp_enter_state(s, SMTP_STATE_QUIT);
			break;
		}
		kind = smtp_frame_line(bufferevent_get_input(s->bev),
		    &s->skipping, line, SMTP_CMD_LINE_MAX, &len);
		if (kind != SMTP_LINE_NONE)
			s->line_timed = 0;	/* the next line is a new wait */
		switch (kind) {
		case SMTP_LINE_NONE:
			goto more;
		case SMTP_LINE_TOO_LONG:
			smtp_error(s, "500 5.5.2 Error: line too long");
			continue;
		case SMTP_LINE_BARE_EOL:
			smtp_error(s, "500 5.5.2 Error: bare CR or LF in command");
			continue;
		case SMTP_LINE_NUL:
			smtp_error(s, "500 5.5.2 Error: NUL character in command");
			continue;
		case SMTP_LINE_OK:
			line[len - 2] = '\0';
			/* Never log credentials (an AUTH initial response). */
			if (strncasecmp(line, "AUTH ", 5) == 0)
				log_debug("%016llx smtp <<< AUTH (credentials not logged)",
				    s->id);
			else
				log_debug("%016llx smtp <<< %s", s->id, line);
			smtp_command(s, line);
			continue;
		}
	}
	s->processing = 0;
	return;
more:
	/* Waiting for client input that will never come? */
	if (s->eof)
		smtp_input_ended(s);
	else if (s->state == SMTP_STATE_COMMAND || s->state == SMTP_STATE_AUTH)
		smtp_line_wait(s);
	s->processing = 0;
}

/* ---- events ------------------------------------------------------------ */

static void
smtp_readcb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	(void)bev;
	if (s->state == SMTP_STATE_PROXY)
		smtp_proxy_input(s);
	else if (s->state == SMTP_STATE_COMMAND || s->state == SMTP_STATE_DATA ||
	    s->state == SMTP_STATE_BDAT || s->state == SMTP_STATE_AUTH)
		smtp_process(s);
}

/*
 * The last reply left our bufferevent.  Over STARTTLS that only means it
 * reached the TLS filter: the encrypted bytes still wait in the plain
 * bufferevent underneath, which the filter owns (and frees with us).  So
 * wait, briefly, until that one is empty too.
 */
static void
smtp_quit_poll(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;

	(void)fd;
	(void)what;
	smtp_quit_flushed(s);
}

/* Look at the close again in usec microseconds (smtp_quit_poll). */
static int
smtp_quit_timer(struct smtp_session *s, long usec)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = usec };

	if (s->quit_timer == NULL &&
	    (s->quit_timer = evtimer_new(bufferevent_get_base(s->bev),
	    smtp_quit_poll, s)) == NULL)
		return -1;
	return evtimer_add(s->quit_timer, &tv);
}

static int
smtp_quit_later(struct smtp_session *s)
{
	return smtp_quit_timer(s, 0);
}

static void
smtp_quit_flushed(struct smtp_session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);

	if (under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0 &&
	    s->quit_polls++ < SMTP_QUIT_TIMEOUT * 50 &&
	    smtp_quit_timer(s, 20000) == 0)
		return;
	smtp_session_free(s);
}

static void
smtp_writecb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	(void)bev;
	if (s->state == SMTP_STATE_QUIT) {
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
			smtp_quit_flushed(s);
		return;
	}
	if (s->output_full) {
		s->output_full = 0;
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

static void
smtp_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	unsigned long tls_err;
	char err[256];

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		/* TLS handshake done (STARTTLS or implicit). */
		s->tls = SMTP_TLS_ACTIVE;
		tls_describe(bufferevent_openssl_get_ssl(s->bev), s->tls_desc,
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
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !s->eof &&
	    s->state != SMTP_STATE_PROXY && s->state != SMTP_STATE_CONNECT &&
	    s->state != SMTP_STATE_QUIT) {
		s->eof = 1;
		log_info("%016llx smtp eof state=%s client=%s: answering what "
		    "it sent", s->id, smtp_state_names[s->state], s->addr);
		if (s->state != SMTP_STATE_WAIT && s->state != SMTP_STATE_RELAY &&
		    !s->processing)
			smtp_process(s);
		return;
	}
	if (s->mail_from != NULL && s->state != SMTP_STATE_QUIT)
		smtp_log_message(s, "aborted", "client disconnected");
	if (s->state != SMTP_STATE_QUIT)
		log_info("%016llx smtp disconnect reason=%s client=%s messages=%lu",
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
		smtp_quit_flushed(s);
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
	log_info("%016llx smtp disconnect reason=timeout state=%s client=%s",
	    s->id, smtp_state_names[s->state], s->addr);
	if (s->mail_from != NULL)
		smtp_log_message(s, "aborted", "client timeout");
	smtp_reply(s, "421 4.4.2 %s Error: timeout exceeded", s->cfg->hostname);
	/* Drop the upstream mid-transaction: nothing half-done is relayed. */
	upstream_close(s->up);
	s->up = NULL;
	smtp_enter_state(s, SMTP_STATE_QUIT);
}

static void	smtp_connect_done(void *, const struct filter_result *);
static void	smtp_connect_filters(struct smtp_session *);

/* ---- the client's name (FCrDNS) ------------------------------------------ */

static void	smtp_rdns_answer(void *, int, const unsigned char *, size_t);

static int
smtp_rdns_start(struct smtp_session *s, const char *qname, int type)
{
	unsigned long long id;

	s->rdns_waiting = 1;
	id = dns_lookup(bufferevent_get_base(s->bev), qname, type,
	    smtp_rdns_answer, s);
	if (id == 0) {
		s->rdns_waiting = 0;
		return -1;
	}
	if (s->rdns_waiting)		/* not answered from the cache already */
		s->rdns_id = id;
	return 0;
}

/* Done: name the client, then the connect phase of the filters. */
static void
smtp_rdns_done(struct smtp_session *s, enum smtp_rdns result)
{
	s->rdns = result;
	if (result != SMTP_RDNS_OK)
		snprintf(s->name, sizeof s->name, "unknown");
	log_debug("%016llx smtp client=%s name=%s", s->id, s->addr, s->name);
	smtp_connect_filters(s);
}

/*
 * One answer: the PTR (then ask for the name's addresses), or those
 * addresses (then the name counts only if the client's is among them:
 * a PTR alone is whatever the address owner wants it to be).
 */
static void
smtp_rdns_answer(void *arg, int rcode, const unsigned char *pkt, size_t len)
{
	struct smtp_session *s = arg;
	char name[NS_MAXDNAME];
	unsigned char want[16];
	ns_msg msg;
	ns_rr rr;
	int i, n, family = s->sa.ss_family, found = 0;

	s->rdns_waiting = 0;
	s->rdns_id = 0;
	if (rcode < 0 || rcode == ns_r_servfail) {
		smtp_rdns_done(s, SMTP_RDNS_TEMP);
		return;
	}
	if (rcode != ns_r_noerror || ns_initparse(pkt, (int)len, &msg) == -1) {
		smtp_rdns_done(s, SMTP_RDNS_NONE);
		return;
	}
	n = ns_msg_count(msg, ns_s_an);
	if (s->rdns == SMTP_RDNS_PTR) {
		for (i = 0; i < n && !found; i++)
			if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 &&
			    ns_rr_type(rr) == ns_t_ptr &&
			    dn_expand(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr),
			    name, sizeof name) > 0 && strlen(name) <= SMTP_DOMAIN_MAX &&
			    smtp_parse_domain(name) == 0)
				found = 1;
		if (!found) {
			smtp_rdns_done(s, SMTP_RDNS_NONE);
			return;
		}
		for (i = 0; name[i] != '\0'; i++)
			name[i] = (char)tolower((unsigned char)name[i]);
		snprintf(s->name, sizeof s->name, "%.255s", name);	/* <= 255: checked */
		s->rdns = SMTP_RDNS_FORWARD;
		if (smtp_rdns_start(s, s->name, family == AF_INET6 ? ns_t_aaaa :
		    ns_t_a) == -1)
			smtp_rdns_done(s, SMTP_RDNS_TEMP);
		return;
	}
	if (family == AF_INET6)
		memcpy(want, &((struct sockaddr_in6 *)&s->sa)->sin6_addr, 16);
	else
		memcpy(want, &((struct sockaddr_in *)&s->sa)->sin_addr, 4);
	for (i = 0; i < n && !found; i++)
		if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 &&
		    ((family == AF_INET && ns_rr_type(rr) == ns_t_a &&
		    ns_rr_rdlen(rr) == 4) ||
		    (family == AF_INET6 && ns_rr_type(rr) == ns_t_aaaa &&
		    ns_rr_rdlen(rr) == 16)) &&
		    memcmp(ns_rr_rdata(rr), want, ns_rr_rdlen(rr)) == 0)
			found = 1;
	smtp_rdns_done(s, found ? SMTP_RDNS_OK : SMTP_RDNS_NONE);
}

/*
 * Who is this client?  Loopback is "localhost" without asking; with
 * dns.reverse off, or without a resolver, nobody is named.
 */
static void
smtp_rdns(struct smtp_session *s)
{
	char q[80];
	const unsigned char *a;
	int i, n;

	snprintf(s->name, sizeof s->name, "unknown");
	if (s->sa.ss_family == AF_INET) {
		a = (const unsigned char *)&((struct sockaddr_in *)&s->sa)->sin_addr;
		if (a[0] == 127) {
			snprintf(s->name, sizeof s->name, "localhost");
			smtp_rdns_done(s, SMTP_RDNS_OK);
			return;
		}
		snprintf(q, sizeof q, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1],
		    a[0]);
	} else {
		a = ((struct sockaddr_in6 *)&s->sa)->sin6_addr.s6_addr;
		if (IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)a)) {
			snprintf(s->name, sizeof s->name, "localhost");
			smtp_rdns_done(s, SMTP_RDNS_OK);
			return;
		}
		for (i = 15, n = 0; i >= 0; i--)
			n += snprintf(q + n, sizeof q - (size_t)n, "%x.%x.",
			    a[i] & 0x0f, a[i] >> 4);
		snprintf(q + n, sizeof q - (size_t)n, "ip6.arpa");
	}
	if (!s->cfg->dns_reverse || s->listener == NULL) {
		smtp_rdns_done(s, SMTP_RDNS_NONE);
		return;
	}
	s->rdns = SMTP_RDNS_PTR;
	if (smtp_rdns_start(s, q, ns_t_ptr) == -1)
		smtp_rdns_done(s, SMTP_RDNS_TEMP);
}

/* The peer address (TCP, or from the PROXY header) as text and port. */
static void
smtp_set_client(struct smtp_session *s, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		memcpy(&s->sa, s6, sizeof *s6);
		inet_ntop(AF_INET6, &s6->sin6_addr, s->addr, sizeof s->addr);
		s->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		memcpy(&s->sa, s4, sizeof *s4);
		inet_ntop(AF_INET, &s4->sin_addr, s->addr, sizeof s->addr);
		s->port = ntohs(s4->sin_port);
	}
}

/*
 * PROXY protocol (haproxy's proxy-protocol.txt), before our greeting: the
 * client says nothing until it sees 220, so everything in the buffer now
 * is the balancer's.  A bad or missing header closes the connection: it
 * was never an SMTP client we could answer.
 */
static void
smtp_proxy_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct sockaddr_storage real;
	unsigned char h[HAPROXY_MAX];
	size_t have = evbuffer_get_length(in), used;
	ev_ssize_t n;
	enum haproxy_status r;

	if (have == 0)
		return;
	n = evbuffer_copyout(in, h, have < sizeof h ? have : sizeof h);
	if (n <= 0)
		return;
	r = haproxy_parse(h, (size_t)n, &used, &real);
	if (r == HAPROXY_MORE)
		return;
	if (r == HAPROXY_BAD)
		goto bad;
	evbuffer_drain(in, used);
	if (r == HAPROXY_ADDR) {
		char was[INET6_ADDRSTRLEN];

		snprintf(was, sizeof was, "%s", s->addr);
		worker_conn_release((const struct sockaddr *)&s->sa);
		smtp_set_client(s, (const struct sockaddr *)&real);
		log_info("%016llx smtp proxy client=%s port=%u via=%s", s->id,
		    s->addr, s->port, was);
		if (worker_conn_acquire((const struct sockaddr *)&s->sa, s->cfg) == -1) {
			/* Count it anyway so that smtp_session_free can release it. */
			worker_conn_force((const struct sockaddr *)&s->sa);
			smtp_reply(s, "421 4.7.0 Error: too many connections");
			smtp_enter_state(s, SMTP_STATE_QUIT);
			return;
		}
	}
	/* haproxy in front of port 465: the header is in clear, TLS follows. */
	if (s->listener->tls == CONFIG_TLS_IMPLICIT && smtp_tls_wrap(s) == -1)
		goto bad;
	smtp_enter_state(s, SMTP_STATE_CONNECT);
	smtp_rdns(s);
	return;
bad:
	log_info("%016llx smtp disconnect reason=bad-proxy-header client=%s",
	    s->id, s->addr);
	smtp_session_free(s);
}

static void
smtp_connect_done(void *arg, const struct filter_result *res)
{
	struct smtp_session *s = arg;

	if (smtp_filter_refused(s, res, "connection")) {
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return;
	}
	smtp_reply(s, "220 %s ESMTP frontmx", s->cfg->hostname);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

void
smtp_session_start(struct worker *w, int fd, const struct sockaddr *sa,
    socklen_t salen, struct filter_chain *chain, size_t listener)
{
	struct smtp_session *s;
	struct event_base *base = w->base;
	struct config *cfg = filter_chain_config(chain);
	struct filter_host host;

	if ((s = calloc(1, sizeof *s)) == NULL) {
		close(fd);
		worker_conn_release(sa);
		filter_chain_unref(chain);
		return;
	}
	s->id = atomic_fetch_add(&smtp_session_seq, 1) + 1 +
	    ((unsigned long long)time(NULL) << 24);
	s->worker = w;
	s->chain = chain;
	s->cfg = cfg;
	(void)salen;
	smtp_set_client(s, sa);
	spool_init(&s->spool, cfg->limits.spool_memory, cfg->spool_dir);
	spool_init(&s->newbody, cfg->limits.spool_memory, cfg->spool_dir);
	s->listener = listener < cfg->nlisteners ? &cfg->listeners[listener] : NULL;
	if (s->listener != NULL && s->listener->tls == CONFIG_TLS_IMPLICIT &&
	    !s->listener->proxy_protocol) {
		SSL *ssl = tls_server_ssl(s->listener);

		s->bev = ssl == NULL ? NULL : bufferevent_openssl_socket_new(base, fd,
		    ssl, BUFFEREVENT_SSL_ACCEPTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (s->bev != NULL)
			bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
		s->tls = SMTP_TLS_HANDSHAKE;
	} else
		s->bev = bufferevent_socket_new(base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	host.msg_read = smtp_msg_read;
	host.arg = s;
	smtp_facts(s);
	s->fs = filter_session_new(chain, base, &s->facts, &host);
	s->deadline = evtimer_new(base, smtp_deadline_cb, s);
	if (s->bev == NULL || s->fs == NULL || s->deadline == NULL) {
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (s->deadline != NULL)
			event_free(s->deadline);
		filter_session_free(s->fs);
		worker_conn_release(sa);
		filter_chain_unref(chain);
		free(s);
		return;
	}
	/* Bound what a client can make us buffer ahead of our replies. */
	smtp_bev_setup(s);
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	w->nsessions++;
	log_info("%016llx smtp connect client=%s port=%u", s->id, s->addr,
	    s->port);
	if (s->listener != NULL && s->listener->proxy_protocol) {
		/* Only the configured balancers may say who the client is. */
		if (!netaddr_mask_match(s->listener->proxy_from,
		    s->listener->nproxy_from, sa)) {
			log_info("%016llx smtp disconnect reason=proxy-not-allowed "
			    "client=%s", s->id, s->addr);
			smtp_session_free(s);
			return;
		}
		s->state = SMTP_STATE_PROXY;
		smtp_enter_state(s, SMTP_STATE_PROXY);
		return;
	}
	s->state = SMTP_STATE_CONNECT;
	smtp_enter_state(s, SMTP_STATE_CONNECT);
	smtp_rdns(s);
}

/* After the name is known (or not): the connect phase, then the greeting. */
static void
smtp_connect_filters(struct smtp_session *s)
{
	s->processing = 1;
	smtp_filter(s, FILTER_PH_CONNECT, NULL, smtp_connect_done);
	s->processing = 0;
	if (s->state == SMTP_STATE_COMMAND)
		smtp_process(s);
}

static void
smtp_session_drain(struct smtp_session *s, int force)
{
	s->draining = 1;
	if (s->state == SMTP_STATE_QUIT)
		return;
	if (force || (s->state == SMTP_STATE_COMMAND && s->mail_from == NULL)) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down",
		    s->cfg->hostname);
		if (force) {
			upstream_close(s->up);
			s->up = NULL;
		}
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
	if (s->rdns_waiting && s->rdns_id > 1)
		dns_cancel(bufferevent_get_base(s->bev), s->rdns_id);
	s->rdns_waiting = 0;
	s->rdns_id = 0;
	if (s->up != NULL && !upstream_idle(s->up)) {
		upstream_close(s->up);
		s->up = NULL;
	}
}

static void
smtp_session_free(struct smtp_session *s)
{
	struct worker *w = s->worker;

	/* Before on_abort runs (smtp_tx_reset): it may call resume(). */
	smtp_cancel_async(s);
	upstream_close(s->up);
	smtp_tx_reset(s);
	filter_session_free(s->fs);
	free(s->auth_id);
	free(s->auth_claim);
	if (s->quit_timer != NULL)
		event_free(s->quit_timer);
	event_free(s->deadline);
	spool_free(&s->spool);
	spool_free(&s->newbody);
	free(s->hdrs);
	free(s->text_line);
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	worker_conn_release((const struct sockaddr *)&s->sa);
	TAILQ_REMOVE(&w->sessions, s, entry);
	w->nsessions--;
	filter_chain_unref(s->chain);
	free(s);
	worker_session_gone(w);
}

void
smtp_session_drain_all(struct worker *w, int force)
{
	struct smtp_session *s, *next;

	/* Draining never frees synchronously, but be safe against it. */
	for (s = TAILQ_FIRST(&w->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		smtp_session_drain(s, force);
	}
}

void
smtp_session_free_all(struct worker *w)
{
	struct smtp_session *s;

	while ((s = TAILQ_FIRST(&w->sessions)) != NULL)
		smtp_session_free(s);
}
