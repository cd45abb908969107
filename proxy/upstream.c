/*
 * upstream.c - SMTP (and LMTP) client towards the upstream MTA
 *
 * A bufferevent state machine.  The upstream is an MTA we trust to deliver,
 * not to be well-formed: every reply line is framed strictly (CRLF only,
 * bounded length, no NUL) and fed to the bounded reply parser, and any
 * deviation kills the connection with UPSTREAM_ERR_PROTOCOL.  Nothing the
 * upstream sends is ever copied to the client unparsed.
 *
 * The dialogue is held in step: every line we write is owed exactly one
 * reply (up->expect), and bytes that arrive when nothing is owed (after
 * 354 before our final dot, behind the last owed reply, on an idle
 * connection) were sent before the upstream was asked: the stream is out
 * of step and the connection is dropped rather than guessing which reply
 * answers what.  Each reply's code must be one its command may get
 * (RFC 5321 4.3.2); 421 means the upstream is closing, whatever the
 * command.  The upstream's transaction state (MAIL open or not) is
 * tracked from the replies themselves, so the session can RSET exactly
 * when the upstream still holds one.
 *
 * Pipelining (RFC 2920), when the upstream offers it: MAIL and RCPTs
 * (and the XFORWARD before MAIL) can be queued (upstream_queue) instead
 * of written, then written together (upstream_flush, one write) and
 * answered in order (UP_STATE_PIPELINE).  Each queued command is owed
 * one reply, checked against what that command may get (a 2xx to RCPT
 * only inside a transaction the upstream accepted), reported to its own
 * done in order.  Until the flush nothing is owed, so any byte read is
 * out of step; a connection that dies while commands are queued reports
 * only after the flush, from the loop, so the session hears of it when it
 * waits for the group and never in the middle of a filter phase.  Any
 * error kills the connection and is reported once, to the first command
 * still owed; the caller owns the rest (smtp_relay.c answers each 4xx).
 *
 * With CHUNKING (RFC 3030) offered and upstream.chunking on, a message
 * goes as one "BDAT <n> LAST" and its n octets in the same write, no
 * DATA, no 354 round trip, no dot-stuffing: n is known before the first
 * octet (the header block, the spool's size, and the CRLF the DATA path
 * would add to a message not ending in one), so the spool still streams.
 * Its one reply is owed only once the last octet is queued: one before
 * is out of step like a reply behind a 354 (upstream_unsolicited), and
 * never taken for the verdict.
 *
 * The same machine speaks LMTP (RFC 2033) for deliver_lmtp.c: LHLO for
 * EHLO, a unix socket for "lmtp:unix:PATH", and after the final dot one
 * reply owed per RCPT the server accepted in the transaction (tx_rcpts),
 * so an extra or a missing one is out of step like any other.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bev.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "spool.h"
#include "tls.h"
#include "upstream.h"
#include "xtext.h"

#define UPSTREAM_CMD_MAX	2048	/* XCLIENT with a long HELO, xtext-encoded */
#define UPSTREAM_CHUNK		65536
#define UPSTREAM_WBUF_LOW	65536	/* refill the socket below this */
#define UPSTREAM_WBUF_HIGH	(4 * UPSTREAM_CHUNK)
#define UPSTREAM_QUIT_TIMEOUT	10
#define UPSTREAM_PIPE_MAX	72	/* queued commands: XFORWARD, MAIL, RCPTs */

/* The command a reply in UP_STATE_COMMAND answers: what it may return. */
enum upstream_cmd {
	UP_CMD_OTHER = 0,
	UP_CMD_MAIL,
	UP_CMD_RCPT,
	UP_CMD_RSET,
	UP_CMD_NOOP,
	UP_CMD_AUTH,		/* AUTH and each SASL response */
	UP_CMD_AUTH_CANCEL,	/* "*": RFC 4954 4, the server must refuse */
	UP_CMD_XFORWARD,	/* queued before a MAIL (UP_STATE_PIPELINE) */
};

/* A command queued in a pipelined group, and who hears its reply. */
struct upstream_op {
	enum upstream_cmd	 cmd;
	upstream_done_fn	 done;		/* NULL: ours (XFORWARD) */
	void			*arg;
};

enum upstream_state {
	UP_STATE_CONNECTING = 0,
	UP_STATE_GREETING,
	UP_STATE_EHLO,
	UP_STATE_STARTTLS,	/* STARTTLS sent, waiting for 220 */
	UP_STATE_TLS,		/* handshake running */
	UP_STATE_XCLIENT,
	UP_STATE_EHLO_AGAIN,	/* EHLO after XCLIENT's new greeting */
	UP_STATE_XFORWARD,	/* before each MAIL: Postfix resets XFORWARD per transaction */
	UP_STATE_READY,
	UP_STATE_COMMAND,
	UP_STATE_DATA_CMD,	/* DATA sent, waiting for 354 */
	UP_STATE_DATA_SEND,	/* streaming the message */
	UP_STATE_DATA_END,	/* final dot sent, waiting for the verdict */
	UP_STATE_PIPELINE,	/* a group queued (up->queuing) or written, replies owed */
	UP_STATE_QUIT,
	UP_STATE_DEAD,
	UP_STATE_COUNT		/* must be last */
};

struct upstream {
	struct bufferevent	*bev;
	struct event_base	*base;
	char			 pending[UPSTREAM_CMD_MAX];	/* MAIL waiting for XFORWARD's 250 */
	const struct config	*cfg;
	SSL_CTX			*tls_ctx;	/* the runtime's; NULL: no STARTTLS */
	unsigned long long	 sid;
	enum upstream_state	 state;
	struct smtp_reply	 reply;
	struct smtp_ehlo_caps	 caps;

	upstream_done_fn	 done;
	void			*done_arg;

	/* Client facts for XCLIENT/XFORWARD, copied: the session may change. */
	char			 client_addr[64];
	int			 client_ipv6;
	unsigned		 client_port;
	char			 client_helo[256];
	char			 client_name[256];
	int			 client_esmtp;
	int			 require_tls;	/* the client used TLS and the config says so */
	int			 tls;		/* this connection is encrypted */
	char			 tls_desc[96];

	/* Message being sent. */
	struct spool		*spool;
	const char		*prepend;
	size_t			 prependlen;
	off_t			 spool_off;
	int			 at_bol;	/* next byte starts a line: stuff a leading dot */
	int			 bdat;		/* this message goes as BDAT ... LAST: no stuffing */
	long long		 bdat_left;	/* octets of its chunk not queued yet; < 0 past it */
	int			 starting;	/* inside upstream_send_message: report from the loop */

	enum upstream_cmd	 cmd;		/* in UP_STATE_COMMAND */
	unsigned		 expect;	/* replies owed for what we wrote */
	int			 in_tx;		/* the upstream accepted a MAIL not yet ended */
	unsigned		 tx_rcpts;	/* RCPTs it accepted in that transaction */
	int			 lmtp;		/* RFC 2033: LHLO, a reply per recipient after the dot */
	struct smtp_reply	*lmtp_kept;	/* the verdict so far, when several are owed */
	int			 in_sasl;	/* it sent a 334: a SASL response is due */

	int			 in_callback;	/* depth; defer the free */
	struct event		*deadline;	/* the whole wait for one reply */
	unsigned		 wait_secs;	/* ... and its length */
	struct timespec		 wait_start;	/* ... and when it began (the reply's time) */
	int			 secret;	/* the next line is a credential: don't log it */
	int			 unproven;	/* connect() in progress, nothing read yet (upstream_connect_addr) */
	int			 probe;		/* a capability probe: no client facts */
	int			 ready;		/* got to READY once: caps are final */
	int			 closing;
	/* Kept from the pool (upstream_pool.c) only when none of these is set. */
	int			 xclient_sent;	/* the connection carries one client */
	int			 auth_used;	/* AUTH was relayed: it is that user's */
	int			 tainted;	/* a refused RSET/NOOP: state unknown */

	/* The pipelined group (UP_STATE_PIPELINE): a ring, replies in order. */
	struct upstream_op	 ops[UPSTREAM_PIPE_MAX];
	unsigned		 op_head;
	unsigned		 nops;
	int			 queuing;	/* queued, not yet written */
	enum upstream_err	 dead_err;	/* why it died while queuing or starting (told from the loop) */
};

static pthread_mutex_t upstream_caps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct smtp_ehlo_caps upstream_caps_shared;
static int upstream_caps_known;
static void (*upstream_unreachable_fn)(void);

static const char *const upstream_err_names[UPSTREAM_ERR_COUNT] = {
	[UPSTREAM_OK] = "ok",
	[UPSTREAM_ERR_CONNECT] = "connect failed",
	[UPSTREAM_ERR_TIMEOUT] = "timeout",
	[UPSTREAM_ERR_CLOSED] = "connection lost",
	[UPSTREAM_ERR_PROTOCOL] = "malformed reply",
	[UPSTREAM_ERR_REJECTED] = "session refused",
	[UPSTREAM_ERR_LOCAL] = "local error",
};

static const char *const upstream_state_names[UP_STATE_COUNT] = {
	[UP_STATE_CONNECTING] = "connecting",
	[UP_STATE_GREETING] = "greeting",
	[UP_STATE_EHLO] = "ehlo",
	[UP_STATE_STARTTLS] = "starttls",
	[UP_STATE_TLS] = "tls-handshake",
	[UP_STATE_XCLIENT] = "xclient",
	[UP_STATE_EHLO_AGAIN] = "ehlo-again",
	[UP_STATE_XFORWARD] = "xforward",
	[UP_STATE_READY] = "ready",
	[UP_STATE_COMMAND] = "command",
	[UP_STATE_DATA_CMD] = "data",
	[UP_STATE_DATA_SEND] = "data-send",
	[UP_STATE_DATA_END] = "data-end",
	[UP_STATE_PIPELINE] = "pipeline",
	[UP_STATE_QUIT] = "quit",
	[UP_STATE_DEAD] = "dead",
};

static void	upstream_readcb(struct bufferevent *, void *);
static void	upstream_after_ehlo(struct upstream *);
static int	upstream_starttls(struct upstream *);
static void	upstream_start_tls(struct upstream *);
static void	upstream_send_ehlo(struct upstream *, enum upstream_state);
static void	upstream_write_ehlo(struct upstream *);
static void	upstream_writecb(struct bufferevent *, void *);
static void	upstream_send_body(struct upstream *);
static void	upstream_connected(struct upstream *);
static int	upstream_connect_addr(struct upstream *, const struct sockaddr *,
		    socklen_t);
static void	upstream_eventcb(struct bufferevent *, short, void *);
static void	upstream_pipe_take(struct upstream *);
static void	upstream_report_dead(struct upstream *);

const char *
upstream_strerror(enum upstream_err err)
{
	if (err >= UPSTREAM_ERR_COUNT)
		return "unknown";
	return upstream_err_names[err];
}

void
upstream_caps_get(struct smtp_ehlo_caps *caps, int *known)
{
	pthread_mutex_lock(&upstream_caps_lock);
	*caps = upstream_caps_shared;
	*known = upstream_caps_known;
	pthread_mutex_unlock(&upstream_caps_lock);
}

/*
 * Publish what the upstream just said in the EHLO a connection ends
 * with.  A change (or the first answer) is logged: the EHLO our clients
 * get changes with it.
 */
void
upstream_caps_set(const struct smtp_ehlo_caps *caps)
{
	char list[256];
	int changed;

	pthread_mutex_lock(&upstream_caps_lock);
	changed = !upstream_caps_known ||
	    upstream_caps_shared.flags != caps->flags ||
	    upstream_caps_shared.size != caps->size ||
	    strcmp(upstream_caps_shared.auth, caps->auth) != 0;
	upstream_caps_shared = *caps;
	upstream_caps_known = 1;
	pthread_mutex_unlock(&upstream_caps_lock);
	if (changed) {
		smtp_ehlo_caps_format(caps, list, sizeof list);
		log_info("upstream capabilities: %s", list);
	}
}

void
upstream_on_unreachable(void (*fn)(void))
{
	upstream_unreachable_fn = fn;
}

int
upstream_idle(const struct upstream *up)
{
	return up->state == UP_STATE_READY;
}

int
upstream_in_tx(const struct upstream *up)
{
	return up->in_tx;
}

const struct smtp_ehlo_caps *
upstream_caps(const struct upstream *up)
{
	return up->ready ? &up->caps : NULL;
}

static void
upstream_enter_state(struct upstream *up, enum upstream_state state)
{
	if (state >= UP_STATE_COUNT)
		fatalx("upstream: bad state %d", state);
	log_debug("%016llx upstream %s -> %s", up->sid,
	    upstream_state_names[up->state], upstream_state_names[state]);
	up->state = state;
}

/*
 * A reply must be complete within secs (0: none owed), however slowly its
 * bytes come: a read timeout would restart with every byte, and an
 * upstream dribbling its reply would be waited for without end.  Writes
 * only need to progress (the message streams out under the write timeout).
 */
static void
upstream_set_timeout(struct upstream *up, unsigned secs)
{
	struct timeval tv = { .tv_sec = secs, .tv_usec = 0 };
	struct timeval wtv = { .tv_sec = up->cfg->timeouts.upstream_command };

	bufferevent_set_timeouts(up->bev, NULL, &wtv);
	if (secs != 0 && up->wait_secs == 0)
		clock_gettime(CLOCK_MONOTONIC, &up->wait_start);
	up->wait_secs = secs;
	if (secs == 0)
		evtimer_del(up->deadline);
	else if (evtimer_add(up->deadline, &tv) == -1)
		fatalx("upstream: cannot set a timeout");
}

static void
upstream_free(struct upstream *up)
{
	if (up->bev != NULL)
		bufferevent_free(up->bev);
	if (up->deadline != NULL)
		event_free(up->deadline);
	config_unref((struct config *)(uintptr_t)up->cfg);
	free(up->lmtp_kept);
	free(up);
}

/*
 * QUIT was answered: the orderly close.  Over TLS our close_notify goes
 * first (RFC 8446 6.1; Exim logs "non-properly terminated" without it),
 * and the connection is freed right after this, so the alert, which
 * SSL_shutdown() put in the socket bufferevent under TLS, is written
 * now: a few octets on an idle socket.  Never on an error path.
 */
static void
upstream_close_notify(struct upstream *up)
{
	struct bufferevent *under;

	if (up->bev == NULL || (under = bufferevent_get_underlying(up->bev)) == NULL)
		return;
	tls_close_notify(bufferevent_openssl_get_ssl(up->bev));
	bev_flush(under);
}

/* Report the outcome of the current operation; the callback may start the next. */
static void
upstream_finish(struct upstream *up, enum upstream_err err,
    const struct smtp_reply *reply)
{
	upstream_done_fn done = up->done;
	void *arg = up->done_arg;

	up->done = NULL;
	up->done_arg = NULL;
	if (done == NULL)
		return;
	up->in_callback++;
	done(arg, err, reply);
	up->in_callback--;
}

/* The connection is unusable: tell the waiting session, close the socket. */
static void
upstream_fail(struct upstream *up, enum upstream_err err, const char *why)
{
	/* frontmx_upstream_errors_total{kind}; the prober's own are not the sessions'. */
	static const char *const kinds[UPSTREAM_ERR_COUNT] = {
		[UPSTREAM_ERR_CONNECT] = "refused",
		[UPSTREAM_ERR_TIMEOUT] = "timeout",
		[UPSTREAM_ERR_CLOSED] = "reset",
		[UPSTREAM_ERR_PROTOCOL] = "malformed",
		[UPSTREAM_ERR_REJECTED] = "rejected",
		[UPSTREAM_ERR_LOCAL] = "local",
	};

	if (!up->probe && err > UPSTREAM_OK && err < UPSTREAM_ERR_COUNT)
		metrics_inc(METRIC_UPSTREAM_ERRORS, kinds[err]);
	/* why may be a multi-line reply's text: one log line, its first. */
	log_info("%016llx upstream error=\"%s\" state=%s detail=\"%.*s\"",
	    up->sid, upstream_strerror(err), upstream_state_names[up->state],
	    (int)strcspn(why, "\n"), why);
	/*
	 * A session found the MTA gone: what it advertises may change when
	 * it comes back, so let the prober look (worker.c).
	 */
	if (err == UPSTREAM_ERR_CONNECT && !up->probe &&
	    upstream_unreachable_fn != NULL)
		upstream_unreachable_fn();
	upstream_enter_state(up, UP_STATE_DEAD);
	evtimer_del(up->deadline);
	if (up->bev != NULL) {
		bufferevent_free(up->bev);
		up->bev = NULL;
	}
	if (up->queuing) {
		/* Nothing was asked yet: told at upstream_flush(). */
		up->dead_err = err;
		return;
	}
	if (up->nops > 0)
		upstream_pipe_take(up);
	if (up->starting) {
		/* done never runs inside the call that started the operation. */
		up->dead_err = err;
		upstream_report_dead(up);
		return;
	}
	upstream_finish(up, err, NULL);
}

/* A connect() of upstream_connect_addr that never completed (no peer). */
static int
upstream_never_connected(struct upstream *up)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;

	return up->bev != NULL &&
	    getpeername(bufferevent_getfd(up->bev), (struct sockaddr *)&ss,
	    &len) == -1 && errno == ENOTCONN;
}

/* No complete reply within the bound (upstream_set_timeout). */
static void
upstream_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;
	char why[64];

	(void)fd;
	(void)what;
	up->in_callback++;
	if (up->state == UP_STATE_QUIT) {
		upstream_enter_state(up, UP_STATE_DEAD);
		up->closing = 1;
	} else if (up->state != UP_STATE_DEAD && up->unproven &&
	    upstream_never_connected(up)) {
		snprintf(why, sizeof why, "connect timed out after %u s",
		    up->wait_secs);
		upstream_fail(up, UPSTREAM_ERR_CONNECT, why);
	} else if (up->state != UP_STATE_DEAD) {
		/* The log names the bound that ran out: tests and admins see which. */
		snprintf(why, sizeof why, "no complete reply within %u s",
		    up->wait_secs);
		upstream_fail(up, UPSTREAM_ERR_TIMEOUT, why);
	}
	up->in_callback--;
	if (up->closing && up->in_callback == 0)
		upstream_free(up);
}

/* One command line into the output, not yet written. */
static void
upstream_add_line(struct upstream *up, const char *line)
{
	struct evbuffer *out = bufferevent_get_output(up->bev);

	if (up->secret)
		log_debug("%016llx upstream >>> (SASL data, %zu bytes)", up->sid,
		    strlen(line));
	else
		log_debug("%016llx upstream >>> %s", up->sid, line);
	up->secret = 0;
	evbuffer_add(out, line, strlen(line));
	evbuffer_add(out, "\r\n", 2);
}

static void
upstream_write_line(struct upstream *up, const char *line)
{
	upstream_add_line(up, line);
	up->expect++;
	smtp_reply_init(&up->reply);
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	bev_flush(up->bev);
}

static void
upstream_send_ehlo(struct upstream *up, enum upstream_state next)
{
	char line[300];

	if (next == UP_STATE_EHLO_AGAIN) {
		upstream_enter_state(up, next);
		upstream_write_ehlo(up);
		return;
	}
	snprintf(line, sizeof line, "%s %s", up->lmtp ? "LHLO" : "EHLO",
	    up->cfg->upstream_helo);
	upstream_enter_state(up, next);
	upstream_write_line(up, line);
}

/* The EHLO after XCLIENT. */
static void
upstream_write_ehlo(struct upstream *up)
{
	char line[300];

	/*
	 * After XCLIENT the MTA takes the next EHLO's argument as the
	 * client's HELO name (Postfix does), so repeat the client's own.
	 */
	snprintf(line, sizeof line, "%s %s", up->lmtp ? "LHLO" : "EHLO",
	    up->client_helo[0] ? up->client_helo : up->cfg->upstream_helo);
	upstream_write_line(up, line);
}

/* Append " KEY=xtext(value)" when the upstream advertised KEY. */
static int
upstream_attr(char *line, size_t linelen, const char *advertised,
    const char *key, const char *value)
{
	char enc[UPSTREAM_CMD_MAX];
	const char *p;
	size_t klen = strlen(key), used = strlen(line);
	int n;

	for (p = advertised; (p = strstr(p, key)) != NULL; p += klen)
		if ((p == advertised || p[-1] == ' ') &&
		    (p[klen] == ' ' || p[klen] == '\0'))
			break;
	if (p == NULL)
		return 0;
	if (xtext_encode(value, enc, sizeof enc) == (size_t)-1)
		return -1;
	n = snprintf(line + used, linelen - used, " %s=%s", key, enc);
	if (n < 0 || (size_t)n >= linelen - used)
		return -1;
	return 0;
}

/*
 * XCLIENT (preferred: the MTA applies its policy to the real client) once
 * per connection, or XFORWARD, which Postfix forgets after each
 * transaction, before every MAIL (upstream_command, upstream_queue).
 * The line into line (UPSTREAM_CMD_MAX), *xclient which one: 1 made, 0
 * nothing to send, -1 on overflow.
 */
static int
upstream_client_facts(struct upstream *up, int xforward_now, char *line,
    int *xclient)
{
	char addr[80], port[16];
	const char *adv;

	if (!up->cfg->upstream_xclient || up->probe)
		return 0;
	if (up->caps.flags & SMTP_EHLO_XCLIENT) {
		if (xforward_now)
			return 0;
		*xclient = 1;
		adv = up->caps.xclient;
		snprintf(line, UPSTREAM_CMD_MAX, "XCLIENT");
	} else if ((up->caps.flags & SMTP_EHLO_XFORWARD) && xforward_now) {
		*xclient = 0;
		adv = up->caps.xforward;
		snprintf(line, UPSTREAM_CMD_MAX, "XFORWARD");
	} else
		return 0;
	/* Postfix wants IPv6 client addresses tagged (XCLIENT_README). */
	snprintf(addr, sizeof addr, "%s%s", up->client_ipv6 ? "IPV6:" : "",
	    up->client_addr);
	snprintf(port, sizeof port, "%u", up->client_port);
	/*
	 * The verified name, or Postfix's "[UNAVAILABLE]" / "[TEMPUNAVAIL]"
	 * (XCLIENT_README): never left out, or the MTA would keep ours.
	 * PROTO is the base name only: Postfix's smtpd takes "SMTP" or
	 * "ESMTP" and answers 501 to anything else (ESMTPSA, UTF8SMTP...);
	 * its own Received names its own hop from its own session.
	 */
	if (upstream_attr(line, UPSTREAM_CMD_MAX, adv, "NAME", up->client_name) ||
	    upstream_attr(line, UPSTREAM_CMD_MAX, adv, "ADDR", addr) ||
	    upstream_attr(line, UPSTREAM_CMD_MAX, adv, "PORT", port) ||
	    upstream_attr(line, UPSTREAM_CMD_MAX, adv, "PROTO",
	    smtp_proto_name(up->client_esmtp ? SMTP_PROTO_ESMTP : 0)) ||
	    upstream_attr(line, UPSTREAM_CMD_MAX, adv, "HELO", up->client_helo))
		return -1;
	return 1;
}

/* The same, sent on its own: 1 sent, 0 nothing to send, -1 overflow. */
static int
upstream_send_client_facts(struct upstream *up, int xforward_now)
{
	char line[UPSTREAM_CMD_MAX];
	int xclient = 0, r;

	if ((r = upstream_client_facts(up, xforward_now, line, &xclient)) != 1)
		return r;
	upstream_enter_state(up, xclient ? UP_STATE_XCLIENT : UP_STATE_XFORWARD);
	up->xclient_sent |= xclient;
	/*
	 * XCLIENT ends a command group whatever PIPELINING says: the MTA
	 * restarts its session and greets again, and Postfix counts bytes
	 * that arrive before that greeting as improper pipelining (and with
	 * smtpd_forbid_unauth_pipelining drops the connection).  The EHLO
	 * that must follow goes only after the reply (UP_STATE_XCLIENT).
	 */
	upstream_write_line(up, line);
	return 1;
}

static void
upstream_ready(struct upstream *up)
{
	/*
	 * The last EHLO (after STARTTLS and XCLIENT) is what the
	 * connection works with: publish that one, not the ones before.
	 */
	up->ready = 1;
	upstream_caps_set(&up->caps);
	upstream_enter_state(up, UP_STATE_READY);
	upstream_set_timeout(up, 0);
	upstream_finish(up, UPSTREAM_OK, &up->reply);
}

static int
upstream_tls_required(const struct upstream *up)
{
	return up->require_tls || up->cfg->upstream_tls == CONFIG_TLS_REQUIRED ||
	    up->cfg->upstream_tls == CONFIG_TLS_VERIFY;
}

/*
 * After the EHLO (over TLS when it was set up): XCLIENT or XFORWARD, or
 * ready at once.
 */
static void
upstream_after_ehlo(struct upstream *up)
{
	int r;

	if ((r = upstream_send_client_facts(up, 0)) == -1) {
		upstream_fail(up, UPSTREAM_ERR_LOCAL, "XCLIENT/XFORWARD line too long");
		return;
	}
	if (r == 0)
		upstream_ready(up);
}

/* 1 STARTTLS sent, 0 go on without TLS, -1 TLS required but not offered. */
static int
upstream_starttls(struct upstream *up)
{
	if (up->tls != 0 || up->cfg->upstream_tls == CONFIG_TLS_NONE ||
	    up->tls_ctx == NULL)
		return up->require_tls ? -1 : 0;
	if (!(up->caps.flags & SMTP_EHLO_STARTTLS))
		return upstream_tls_required(up) ? -1 : 0;
	upstream_enter_state(up, UP_STATE_STARTTLS);
	upstream_write_line(up, "STARTTLS");
	return 1;
}

static void
upstream_start_tls(struct upstream *up)
{
	struct evbuffer *in = bufferevent_get_input(up->bev);
	struct bufferevent *tls;
	SSL *ssl;

	/*
	 * Response injection (SECURITY.md 2): anything the server sent after
	 * its 220 came in the clear and must not be read as a TLS-time reply.
	 */
	if (evbuffer_get_length(in) > 0) {
		log_warn("%016llx upstream sent %zu bytes after its STARTTLS 220; "
		    "discarded", up->sid, evbuffer_get_length(in));
		evbuffer_drain(in, evbuffer_get_length(in));
	}
	if ((ssl = tls_client_ssl(up->tls_ctx, up->cfg)) == NULL) {
		upstream_fail(up, UPSTREAM_ERR_LOCAL, "TLS setup failed");
		return;
	}
	tls = bufferevent_openssl_filter_new(up->base, up->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tls == NULL) {
		SSL_free(ssl);
		upstream_fail(up, UPSTREAM_ERR_LOCAL, "TLS setup failed");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
	up->bev = tls;
	bufferevent_setcb(up->bev, upstream_readcb, upstream_writecb,
	    upstream_eventcb, up);
	bufferevent_setwatermark(up->bev, EV_WRITE, UPSTREAM_WBUF_LOW, 0);
	bufferevent_enable(up->bev, EV_READ | EV_WRITE);
	upstream_enter_state(up, UP_STATE_TLS);
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
}

/*
 * 1 if code is a reply the command being answered may get (RFC 5321
 * 4.3.2, RFC 4954 for AUTH, XCLIENT_README), 0 if it makes no sense
 * there: a 2xx or 3xx that is not the command's own success is never
 * taken for one.  Any 4xx or 5xx is a refusal the session handles.
 */
static int
upstream_code_ok(const struct upstream *up, const struct smtp_reply *r)
{
	int code = r->code;

	if (code / 100 == 4 || code / 100 == 5)
		return 1;
	switch (up->state) {
	case UP_STATE_GREETING:
	case UP_STATE_STARTTLS:
		return code == 220;
	case UP_STATE_EHLO:
	case UP_STATE_EHLO_AGAIN:
	case UP_STATE_XFORWARD:
	case UP_STATE_DATA_END:
		return code == 250;
	case UP_STATE_XCLIENT:
		/* Postfix answers with a new greeting; a plain 250 is harmless. */
		return code == 220 || code == 250;
	case UP_STATE_DATA_CMD:
		return code == 354;
	case UP_STATE_QUIT:
		return 1;
	case UP_STATE_PIPELINE:
		switch (up->ops[up->op_head].cmd) {
		case UP_CMD_RCPT:
			/* Only inside the transaction its MAIL opened. */
			return (code == 250 || code == 251) && up->in_tx;
		default:
			return code == 250;	/* MAIL, XFORWARD */
		}
	case UP_STATE_COMMAND:
		switch (up->cmd) {
		case UP_CMD_MAIL:
		case UP_CMD_RSET:
		case UP_CMD_NOOP:
			return code == 250;
		case UP_CMD_RCPT:
			return code == 250 || code == 251;
		case UP_CMD_AUTH:
			/*
			 * A challenge is relayed to the client, so it must
			 * be exactly one line: a second line would reach the
			 * client looking like a reply of its own.
			 */
			return code == 235 || (code == 334 && r->nlines == 1);
		case UP_CMD_AUTH_CANCEL:
			/* Authenticated, or still asking, after "*": never. */
			return 0;
		case UP_CMD_OTHER:
			return code / 100 == 2;
		case UP_CMD_XFORWARD:
			return 0;	/* only ever queued */
		}
		return 0;
	default:
		return 0;
	}
}

/* A reply to the greeting, EHLO/LHLO, STARTTLS, XCLIENT or XFORWARD. */
static void
upstream_reply_setup(struct upstream *up, int code)
{
	int r;

	switch (up->state) {
	case UP_STATE_GREETING:
		if (code / 100 != 2) {
			upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
			return;
		}
		upstream_send_ehlo(up, UP_STATE_EHLO);
		break;
	case UP_STATE_EHLO:
	case UP_STATE_EHLO_AGAIN:
		if (code != 250) {
			upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
			return;
		}
		smtp_reply_ehlo_caps(&up->reply, &up->caps);
		if (up->state == UP_STATE_EHLO && !up->tls &&
		    (r = upstream_starttls(up)) != 0) {
			if (r == -1)
				upstream_fail(up, UPSTREAM_ERR_REJECTED,
				    "TLS required but the upstream does not offer STARTTLS");
			return;
		}
		if (up->state == UP_STATE_EHLO_AGAIN) {
			upstream_ready(up);
			return;
		}
		upstream_after_ehlo(up);
		break;
	case UP_STATE_STARTTLS:
		if (code != 220) {
			if (upstream_tls_required(up)) {
				upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
				return;
			}
			/* Opportunistic: STARTTLS refused, carry on in the clear. */
			log_info("%016llx upstream STARTTLS refused, continuing "
			    "without TLS", up->sid);
			upstream_enter_state(up, UP_STATE_EHLO);
			up->tls = -1;	/* tried */
			upstream_after_ehlo(up);
			return;
		}
		upstream_start_tls(up);
		break;
	case UP_STATE_XCLIENT:
		/* XCLIENT answers with a new greeting (220); then EHLO again. */
		if (code / 100 != 2) {
			upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
			return;
		}
		upstream_send_ehlo(up, UP_STATE_EHLO_AGAIN);
		break;
	case UP_STATE_XFORWARD:
		if (code != 250) {
			upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
			return;
		}
		/* Now the MAIL it was sent for. */
		upstream_enter_state(up, UP_STATE_COMMAND);
		upstream_write_line(up, up->pending);
		break;
	default:
		fatalx("upstream_reply_setup: bad state %d", up->state);
	}
}

/* The operation is over: back to idle, its reply to the session. */
static void
upstream_reply_done(struct upstream *up, const struct smtp_reply *r)
{
	upstream_enter_state(up, UP_STATE_READY);
	upstream_set_timeout(up, 0);
	upstream_finish(up, UPSTREAM_OK, r);
}

/*
 * LMTP (RFC 2033 4.2): one reply per accepted recipient after the final
 * dot, in RCPT order.  The session sends one recipient per transaction,
 * filter-added recipients included (smtp_relay.c), so there is one.
 * Should a caller ever send more, the one reported is the least final:
 * a 4xx if any, else a 5xx if any, else the first 2xx.  Each is logged.
 * 1 while more are owed.
 */
static int
upstream_lmtp_rcpt_reply(struct upstream *up)
{
	const struct smtp_reply *r = &up->reply;
	int rank = r->code / 100 == 4 ? 3 : r->code / 100 == 5 ? 2 : 1;
	int kept = up->lmtp_kept == NULL ? 0 :
	    up->lmtp_kept->code / 100 == 4 ? 3 : up->lmtp_kept->code / 100 == 5 ? 2 : 1;

	log_info("%016llx upstream lmtp rcpt=%u/%u reply=\"%d %.*s\"", up->sid,
	    up->tx_rcpts - up->expect, up->tx_rcpts, r->code,
	    (int)strcspn(r->text, "\n"), r->text);
	if (up->expect == 0 && up->lmtp_kept == NULL)
		return 0;	/* the only one: it is the verdict */
	if (up->lmtp_kept == NULL &&
	    (up->lmtp_kept = malloc(sizeof *up->lmtp_kept)) == NULL)
		fatalx("out of memory");
	if (rank > kept)
		*up->lmtp_kept = *r;
	if (up->expect > 0) {
		smtp_reply_init(&up->reply);
		return 1;
	}
	up->reply = *up->lmtp_kept;
	free(up->lmtp_kept);
	up->lmtp_kept = NULL;
	return 0;
}

/* A reply to MAIL, RCPT, RSET, AUTH..., to DATA, or to the final dot. */
static void
upstream_reply_tx(struct upstream *up, int code)
{
	switch (up->state) {
	case UP_STATE_COMMAND:
		up->in_sasl = up->cmd == UP_CMD_AUTH && code == 334;
		/* A refused RSET or NOOP leaves us not knowing its state. */
		if ((up->cmd == UP_CMD_RSET || up->cmd == UP_CMD_NOOP ||
		    up->cmd == UP_CMD_OTHER) && code / 100 != 2)
			up->tainted = 1;
		if ((up->cmd == UP_CMD_MAIL || up->cmd == UP_CMD_RSET) &&
		    code == 250) {
			up->in_tx = up->cmd == UP_CMD_MAIL;
			up->tx_rcpts = 0;
		} else if (up->cmd == UP_CMD_RCPT && code / 100 == 2)
			up->tx_rcpts++;
		upstream_reply_done(up, &up->reply);
		break;
	case UP_STATE_DATA_CMD:
		if (code != 354) {
			/*
			 * DATA itself refused (Postfix's smtpd_data_restrictions):
			 * the MAIL transaction stays open until RSET.
			 */
			upstream_reply_done(up, &up->reply);
			return;
		}
		if (up->lmtp && up->tx_rcpts == 0) {
			/* RFC 2033 4.2: no reply would be owed after the dot. */
			upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
			    "354 to DATA without an accepted recipient");
			return;
		}
		upstream_enter_state(up, UP_STATE_DATA_SEND);
		smtp_reply_init(&up->reply);
		/* Sending the message, as before its 354, has upstream_command. */
		upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
		upstream_send_body(up);
		break;
	case UP_STATE_DATA_END:
		if (up->lmtp && upstream_lmtp_rcpt_reply(up))
			return;
		/*
		 * Whatever the verdict on the final dot, the transaction is
		 * over (RFC 5321 4.1.1.4).  RFC 3030 says less after a
		 * refused BDAT: the MTA may still hold the MAIL, so it stays
		 * open here and the next MAIL goes after an RSET.
		 */
		up->in_tx = up->bdat && code != 250;
		up->tx_rcpts = up->in_tx ? up->tx_rcpts : 0;
		upstream_reply_done(up, &up->reply);
		break;
	default:
		fatalx("upstream_reply_tx: bad state %d", up->state);
	}
}

/*
 * The group's commands are owed no more replies (an error): the first
 * one with a listener hears it, through up->done; the rest are the
 * caller's to answer.
 */
static void
upstream_pipe_take(struct upstream *up)
{
	struct upstream_op *op;

	for (; up->nops > 0; up->nops--) {
		op = &up->ops[up->op_head];
		up->op_head = (up->op_head + 1) % UPSTREAM_PIPE_MAX;
		if (op->done != NULL && up->done == NULL) {
			up->done = op->done;
			up->done_arg = op->arg;
		}
	}
	up->queuing = 0;
}

/*
 * The reply to the group's first command still owed: its transaction
 * state, then its listener (XFORWARD's is ours: anything but 250 kills
 * the connection, as outside a group).  The last one makes the
 * connection idle again before it is reported.
 */
static void
upstream_reply_pipe(struct upstream *up, int code)
{
	struct upstream_op op = up->ops[up->op_head];

	up->op_head = (up->op_head + 1) % UPSTREAM_PIPE_MAX;
	up->nops--;
	switch (op.cmd) {
	case UP_CMD_XFORWARD:
		if (code != 250) {
			upstream_fail(up, UPSTREAM_ERR_REJECTED, up->reply.text);
			return;
		}
		break;
	case UP_CMD_MAIL:
		if (code == 250) {
			up->in_tx = 1;
			up->tx_rcpts = 0;
		}
		break;
	case UP_CMD_RCPT:
		if (code / 100 == 2)
			up->tx_rcpts++;
		break;
	default:
		fatalx("upstream_reply_pipe: bad command %d", op.cmd);
	}
	if (up->nops == 0) {
		upstream_enter_state(up, UP_STATE_READY);
		upstream_set_timeout(up, 0);
	}
	if (op.done != NULL) {
		up->done = op.done;
		up->done_arg = op.arg;
		upstream_finish(up, UPSTREAM_OK, &up->reply);
	}
	smtp_reply_init(&up->reply);
}

/* A complete, well-formed reply arrived. */
static void
upstream_reply(struct upstream *up)
{
	int code = up->reply.code;
	char why[128];
	struct timespec now;

	/* From the command (or the reply before, when pipelined) to this reply. */
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!up->probe && up->wait_start.tv_sec != 0)
		metrics_observe((double)(now.tv_sec - up->wait_start.tv_sec) +
		    (double)(now.tv_nsec - up->wait_start.tv_nsec) / 1e9,
		    METRIC_UPSTREAM_REPLY);
	up->wait_start = now;

	if (!upstream_code_ok(up, &up->reply)) {
		snprintf(why, sizeof why, "reply %d%s makes no sense in state %s",
		    code, up->reply.nlines > 1 ? " (multi-line)" : "",
		    upstream_state_names[up->state]);
		upstream_fail(up, UPSTREAM_ERR_PROTOCOL, why);
		return;
	}
	if (code == 421 && up->state != UP_STATE_QUIT) {
		/* RFC 5321 3.8: the upstream is closing; nothing more comes. */
		upstream_fail(up, UPSTREAM_ERR_CLOSED, up->reply.text);
		return;
	}
	switch (up->state) {
	case UP_STATE_GREETING:
	case UP_STATE_EHLO:
	case UP_STATE_EHLO_AGAIN:
	case UP_STATE_STARTTLS:
	case UP_STATE_XCLIENT:
	case UP_STATE_XFORWARD:
		upstream_reply_setup(up, code);
		break;
	case UP_STATE_COMMAND:
	case UP_STATE_DATA_CMD:
	case UP_STATE_DATA_END:
		upstream_reply_tx(up, code);
		break;
	case UP_STATE_PIPELINE:
		upstream_reply_pipe(up, code);
		break;
	case UP_STATE_QUIT:
		upstream_close_notify(up);
		upstream_enter_state(up, UP_STATE_DEAD);
		up->closing = 1;
		break;
	default:
		/* Nothing is owed in any other state (readcb checks). */
		upstream_fail(up, UPSTREAM_ERR_PROTOCOL, "reply in a state that owes none");
		break;
	}
}

/*
 * Bytes the upstream sent before it was asked: nothing is owed, or the
 * final dot is still in our output buffer.  In an idle connection that is
 * usually "421 idle timeout" before the MTA hangs up; anywhere else the
 * stream is out of step (a 250 right behind 354, say, must never be taken
 * for the verdict on a message it has not seen).
 */
static int
upstream_unsolicited(struct upstream *up, struct evbuffer *in)
{
	if (evbuffer_get_length(in) == 0)
		return 0;
	if (up->expect > 0 && !(up->state == UP_STATE_DATA_END &&
	    evbuffer_get_length(bufferevent_get_output(up->bev)) > 0))
		return 0;
	if (up->state == UP_STATE_READY)
		upstream_fail(up, UPSTREAM_ERR_CLOSED,
		    "unsolicited reply on an idle connection");
	else
		upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
		    "reply before it was asked for");
	return 1;
}

static void
upstream_readcb(struct bufferevent *bev, void *arg)
{
	struct upstream *up = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char line[SMTP_REPLY_LINE_MAX + 2];
	struct evbuffer_ptr eol;
	size_t eol_len, len, i;

	up->in_callback++;
	up->unproven = 0;	/* bytes came: connected */
	while (up->bev != NULL && up->state != UP_STATE_DEAD) {
		if (up->state != UP_STATE_CONNECTING &&
		    upstream_unsolicited(up, in))
			break;
		eol = evbuffer_search_eol(in, NULL, &eol_len,
		    EVBUFFER_EOL_CRLF_STRICT);
		if (eol.pos < 0) {
			if (evbuffer_get_length(in) > SMTP_REPLY_LINE_MAX)
				upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
				    "reply line too long");
			break;
		}
		len = (size_t)eol.pos;
		if (len > SMTP_REPLY_LINE_MAX) {
			upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
			    "reply line too long");
			break;
		}
		evbuffer_remove(in, line, len + 2);
		line[len] = '\0';
		for (i = 0; i < len; i++)
			if (line[i] == '\0' || line[i] == '\r' ||
			    line[i] == '\n')
				break;
		if (i < len) {
			upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
			    "bare CR, LF or NUL in reply");
			break;
		}
		log_debug("%016llx upstream <<< %s", up->sid, line);
		if (up->state == UP_STATE_CONNECTING) {
			upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
			    "data before connect");
			break;
		}
		switch (smtp_reply_feed(&up->reply, line, len)) {
		case SMTP_REPLY_MORE:
			continue;
		case SMTP_REPLY_ERROR:
			upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
			    up->reply.error ? up->reply.error : "bad reply");
			break;
		case SMTP_REPLY_DONE:
			/*
			 * More behind the last owed reply came before we asked
			 * anything: don't act on this reply, the stream is out
			 * of step.  (Behind the 220 to STARTTLS it is discarded
			 * unread, upstream_start_tls.)
			 */
			/* A pipelined reply still owed gets its own time. */
			if (up->expect > 1)
				upstream_set_timeout(up, up->wait_secs);
			if (--up->expect == 0 && up->state != UP_STATE_QUIT &&
			    !(up->state == UP_STATE_STARTTLS &&
			    up->reply.code == 220) &&
			    evbuffer_get_length(in) > 0) {
				upstream_fail(up, UPSTREAM_ERR_PROTOCOL,
				    "more after the reply than was asked for");
				break;
			}
			upstream_reply(up);
			if (up->closing)
				break;
			continue;
		}
		break;
	}
	up->in_callback--;
	if (up->closing && up->in_callback == 0)
		upstream_free(up);
}

/*
 * Append len bytes of message content, doubling a dot that starts a line;
 * in a BDAT chunk as they are (RFC 3030 2), counted against the chunk.
 */
static void
upstream_stuff(struct upstream *up, struct evbuffer *out, const char *p,
    size_t len)
{
	const char *nl;
	size_t n;

	if (up->bdat) {
		if (len == 0)
			return;
		evbuffer_add(out, p, len);
		up->at_bol = p[len - 1] == '\n';
		/* Past the count goes negative: upstream_writecb refuses it. */
		up->bdat_left -= (long long)len;
		return;
	}
	while (len > 0) {
		if (up->at_bol && *p == '.')
			evbuffer_add(out, ".", 1);
		nl = memchr(p, '\n', len);
		n = nl ? (size_t)(nl - p) + 1 : len;
		evbuffer_add(out, p, n);
		up->at_bol = nl != NULL;
		p += n;
		len -= n;
	}
}

static void
upstream_writecb(struct bufferevent *bev, void *arg)
{
	struct upstream *up = arg;
	struct evbuffer *out = bufferevent_get_output(bev);
	char buf[UPSTREAM_CHUNK];
	ssize_t n;

	if (up->state != UP_STATE_DATA_SEND) {
		/* The message is out: back to direct writes. */
		if (bev_direct(bev) && evbuffer_get_length(out) == 0)
			bufferevent_disable(bev, EV_WRITE);
		return;
	}
	while (evbuffer_get_length(out) < UPSTREAM_WBUF_HIGH) {
		if (up->prependlen > 0) {
			upstream_stuff(up, out, up->prepend, up->prependlen);
			up->prependlen = 0;
			continue;
		}
		n = spool_read(up->spool, up->spool_off, buf, sizeof buf);
		if (n < 0) {
			upstream_fail(up, UPSTREAM_ERR_LOCAL, "spool read error");
			return;
		}
		if (n == 0) {
			/*
			 * Every spooled line ends in CRLF, so the dot below is
			 * always on a line of its own: our terminator, never
			 * one the client wrote.
			 */
			if (!up->at_bol)
				upstream_stuff(up, out, "\r\n", 2);
			if (up->bdat && up->bdat_left != 0) {
				/* The count announced must be what went. */
				upstream_fail(up, UPSTREAM_ERR_LOCAL,
				    "spool size changed under BDAT");
				return;
			}
			if (!up->bdat)
				evbuffer_add(out, ".\r\n", 3);
			up->expect += up->lmtp ? up->tx_rcpts : 1;
			upstream_enter_state(up, UP_STATE_DATA_END);
			upstream_set_timeout(up,
			    up->cfg->timeouts.upstream_data_end);
			return;
		}
		if (up->bdat && (long long)n > up->bdat_left) {
			upstream_fail(up, UPSTREAM_ERR_LOCAL,
			    "spool size changed under BDAT");
			return;
		}
		upstream_stuff(up, out, buf, (size_t)n);
		up->spool_off += n;
	}
}

/*
 * The message after the 354.  Over TLS libevent writes it and the write
 * callback refills.  On a plain socket the loop would add EPOLLOUT, wait
 * for it, write, and delete it again for a message the socket takes at
 * once: fill and write directly instead (bev_flush), as long as the
 * kernel takes all of it; what it does not take goes libevent's way, the
 * write callback refilling as before.
 */
static void
upstream_send_body(struct upstream *up)
{
	if (!bev_direct(up->bev)) {
		bufferevent_enable(up->bev, EV_WRITE);
		upstream_writecb(up->bev, up);
		return;
	}
	for (;;) {
		upstream_writecb(up->bev, up);
		/* Failed (the connection is gone) or not sending any more. */
		if (up->state != UP_STATE_DATA_SEND && up->state != UP_STATE_DATA_END)
			return;
		bev_flush(up->bev);
		if (up->state != UP_STATE_DATA_SEND ||
		    evbuffer_get_length(bufferevent_get_output(up->bev)) > 0)
			return;
	}
}

/* Connected (or, upstream_connect_addr, connecting): wait for the greeting. */
static void
upstream_connected(struct upstream *up)
{
	upstream_enter_state(up, UP_STATE_GREETING);
	up->expect = 1;		/* the greeting */
	smtp_reply_init(&up->reply);
	/* timeouts.upstream_connect covers the connection and its greeting. */
	upstream_set_timeout(up, up->cfg->timeouts.upstream_connect);
	/* Commands are written directly (bev.h); EV_WRITE only for DATA. */
	bufferevent_disable(up->bev, EV_WRITE);
	bev_read_own(up->bev);	/* the fd is known now; no FIONREAD per read */
	bufferevent_enable(up->bev, EV_READ);
}

static void
upstream_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream *up = arg;
	enum upstream_err err;
	char why[128];

	(void)bev;
	if ((what & BEV_EVENT_CONNECTED) && up->state == UP_STATE_TLS) {
		up->tls = 1;
		tls_handshake_done(bufferevent_openssl_get_ssl(up->bev), up->tls_desc,
		    sizeof up->tls_desc);
		log_info("%016llx upstream tls=\"%s\"", up->sid, up->tls_desc);
		/* RFC 3207 4.2: everything learnt before TLS is void. */
		memset(&up->caps, 0, sizeof up->caps);
		upstream_send_ehlo(up, UP_STATE_EHLO);
		return;
	}
	if (what & BEV_EVENT_CONNECTED) {
		upstream_connected(up);
		return;
	}
	up->in_callback++;
	if (up->state == UP_STATE_QUIT) {
		upstream_enter_state(up, UP_STATE_DEAD);
		up->closing = 1;
	} else {
		/* A connect() still unproven fails as a connect (refused, reset). */
		if (up->state == UP_STATE_CONNECTING ||
		    (up->unproven && (what & BEV_EVENT_ERROR)))
			err = UPSTREAM_ERR_CONNECT;
		else if (what & BEV_EVENT_TIMEOUT)
			err = UPSTREAM_ERR_TIMEOUT;
		else
			err = UPSTREAM_ERR_CLOSED;
		snprintf(why, sizeof why, "%s%s",
		    (what & BEV_EVENT_TIMEOUT) ? "timeout" :
		    (what & BEV_EVENT_EOF) ? "eof" : "socket error: ",
		    (what & BEV_EVENT_ERROR) ?
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) : "");
		if (up->state == UP_STATE_TLS) {
			/* The handshake failed: bad certificate, name, protocol. */
			unsigned long e = bufferevent_get_openssl_error(up->bev);

			if (e != 0)
				ERR_error_string_n(e, why, sizeof why);
			err = UPSTREAM_ERR_REJECTED;
		}
		upstream_fail(up, err, why);
	}
	up->in_callback--;
	if (up->closing && up->in_callback == 0)
		upstream_free(up);
}

/*
 * Connect to an IP address without waiting for the socket to turn
 * writable.  libevent's bufferevent_socket_connect adds EPOLLOUT, waits
 * for it, asks SO_ERROR, then we switch to EPOLLIN for the greeting:
 * three epoll_ctl and a getsockopt per connection.  An SMTP server
 * speaks first, so the greeting proves the connection as well: start
 * reading at once (upstream_connected).  A refused or reset connect then
 * shows as a read error before any byte (up->unproven: classed as a
 * connect failure, as before); a connect that never completes runs into
 * the same timeouts.upstream_connect bound (upstream_deadline_cb tells it
 * from a silent server).  -1 when it failed at once (errno kept).
 */
static int
upstream_connect_addr(struct upstream *up, const struct sockaddr *sa,
    socklen_t salen)
{
	int fd, e;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (connect(fd, sa, salen) == -1 && errno != EINPROGRESS) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	/* No EV_WRITE interest (enabled by default) when the fd goes in. */
	bufferevent_disable(up->bev, EV_WRITE);
	if (bufferevent_setfd(up->bev, fd) == -1) {
		close(fd);
		return -1;
	}
	up->unproven = 1;
	upstream_connected(up);
	return 0;
}

/*
 * Start connecting to the configured address: a unix socket (LMTP's
 * "lmtp:unix:PATH"), else host and port.  -1 when it failed at once.
 */
static int
upstream_connect(struct upstream *up)
{
	const struct config *cfg = up->cfg;
	struct sockaddr_storage ss;
	struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
	socklen_t sslen = sizeof ss;
	char hostport[600];

	if (cfg->upstream_unix != NULL) {
		memset(sun, 0, sizeof *sun);
		sun->sun_family = AF_UNIX;
		/* config.c bounds the path below sizeof sun_path. */
		if (strlen(cfg->upstream_unix) >= sizeof sun->sun_path)
			return -1;
		memcpy(sun->sun_path, cfg->upstream_unix,
		    strlen(cfg->upstream_unix) + 1);
		return bufferevent_socket_connect(up->bev,
		    (struct sockaddr *)sun, (int)sizeof *sun);
	}
	if (strchr(cfg->upstream_host, ':') != NULL)
		snprintf(hostport, sizeof hostport, "[%s]:%s",
		    cfg->upstream_host, cfg->upstream_port);
	else
		snprintf(hostport, sizeof hostport, "%s:%s",
		    cfg->upstream_host, cfg->upstream_port);
	if (evutil_parse_sockaddr_port(hostport, (struct sockaddr *)&ss,
	    (int *)&sslen) == 0)
		return upstream_connect_addr(up, (struct sockaddr *)&ss, sslen);
	/*
	 * XXX a host name: with no evdns base libevent resolves it with a
	 * blocking getaddrinfo().  Numeric addresses (the usual upstream, on
	 * loopback or a LAN) never block.
	 */
	return bufferevent_socket_connect_hostname(up->bev, NULL, AF_UNSPEC,
	    cfg->upstream_host, atoi(cfg->upstream_port));
}

/* The client facts XCLIENT/XFORWARD send, copied: the session may change. */
static void
upstream_set_client(struct upstream *up, const struct upstream_client *client)
{
	snprintf(up->client_addr, sizeof up->client_addr, "%s", client->addr);
	up->client_ipv6 = client->ipv6;
	up->client_port = client->port;
	snprintf(up->client_helo, sizeof up->client_helo, "%s",
	    client->helo ? client->helo : "");
	up->client_esmtp = client->esmtp;
	up->require_tls = client->require_tls;
	snprintf(up->client_name, sizeof up->client_name, "%s",
	    client->name ? client->name : "[UNAVAILABLE]");
}

struct upstream *
upstream_open(struct event_base *base, const struct config *cfg,
    SSL_CTX *tls_ctx, const struct upstream_client *client,
    unsigned long long sid, upstream_done_fn done, void *arg)
{
	struct upstream *up;
	struct timeval ctv = { .tv_sec = cfg->timeouts.upstream_connect };
	int r;

	if ((up = calloc(1, sizeof *up)) == NULL)
		return NULL;
	if ((up->deadline = evtimer_new(base, upstream_deadline_cb, up)) == NULL) {
		free(up);
		return NULL;
	}
	/*
	 * Held for the connection's life, which can outlast its session's
	 * (the QUIT of upstream_close, a pooled connection after a reload):
	 * only the count is written.
	 */
	up->cfg = cfg;
	config_ref((struct config *)(uintptr_t)cfg);
	up->tls_ctx = tls_ctx;
	up->base = base;
	up->sid = sid;
	up->done = done;
	up->done_arg = arg;
	up->state = UP_STATE_CONNECTING;
	upstream_set_client(up, client);
	up->probe = client->probe;
	up->lmtp = client->lmtp;
	up->bev = bufferevent_socket_new(base, -1,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (up->bev == NULL) {
		upstream_free(up);
		return NULL;
	}
	bufferevent_setcb(up->bev, upstream_readcb, upstream_writecb,
	    upstream_eventcb, up);
	bufferevent_setwatermark(up->bev, EV_WRITE, UPSTREAM_WBUF_LOW, 0);
	/* libevent times a pending connect with the write timeout. */
	bufferevent_set_timeouts(up->bev, NULL, &ctv);
	r = upstream_connect(up);
	if (r == -1) {
		/* Report from the loop, as promised, not from inside this call. */
		bufferevent_trigger_event(up->bev, BEV_EVENT_ERROR,
		    BEV_TRIG_DEFER_CALLBACKS);
	}
	return up;
}

/*
 * The connection died while idle (the MTA's own timeout, a reset), or
 * failed inside the call that started an operation: upstream_report_dead.
 */
static void
upstream_dead_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream *up = arg;

	(void)fd;
	(void)what;
	up->in_callback--;
	if (!up->closing)
		upstream_finish(up, up->dead_err != UPSTREAM_OK ? up->dead_err :
		    UPSTREAM_ERR_CLOSED, NULL);
	if (up->closing && up->in_callback == 0)
		upstream_free(up);
}

/* Report the dead connection (dead_err, else closed) from the loop. */
static void
upstream_report_dead(struct upstream *up)
{
	/* Keep up alive until the deferred report ran (see upstream_close). */
	up->in_callback++;
	if (event_base_once(up->base, -1, EV_TIMEOUT, upstream_dead_cb, up,
	    NULL) == -1)
		fatalx("upstream: event_base_once");
}

/* 1 if the operation can start; else its failure is reported from the loop. */
static int
upstream_usable(struct upstream *up, upstream_done_fn done, void *arg)
{
	up->done = done;
	up->done_arg = arg;
	if (up->state == UP_STATE_READY)
		return 1;
	if (up->state != UP_STATE_DEAD)
		fatalx("upstream: operation in state %s",
		    upstream_state_names[up->state]);
	upstream_report_dead(up);
	return 0;
}

/* What a command line of ours may be answered with (upstream_code_ok). */
static enum upstream_cmd
upstream_cmd_of(const char *line)
{
	return strncmp(line, "MAIL ", 5) == 0 ? UP_CMD_MAIL :
	    strncmp(line, "RCPT ", 5) == 0 ? UP_CMD_RCPT :
	    strcmp(line, "RSET") == 0 ? UP_CMD_RSET :
	    strcmp(line, "NOOP") == 0 ? UP_CMD_NOOP : UP_CMD_OTHER;
}

void
upstream_command(struct upstream *up, const char *line, upstream_done_fn done,
    void *arg)
{
	int r;

	if (!upstream_usable(up, done, arg))
		return;
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	up->cmd = upstream_cmd_of(line);
	if (up->cmd == UP_CMD_MAIL) {
		snprintf(up->pending, sizeof up->pending, "%s", line);
		if ((r = upstream_send_client_facts(up, 1)) == 1)
			return;		/* MAIL follows XFORWARD's 250 */
		if (r == -1) {
			upstream_fail(up, UPSTREAM_ERR_LOCAL,
			    "XFORWARD line too long");
			return;
		}
	}
	upstream_enter_state(up, UP_STATE_COMMAND);
	upstream_write_line(up, line);
}

/*
 * 1 when a MAIL or RCPT may be queued now: the upstream offers
 * PIPELINING (RFC 2920), it is SMTP (LMTP keeps one recipient per
 * transaction, deliver_lmtp.c), and the connection is idle or holds a
 * group not yet written, with room for the command (and an XFORWARD).
 */
int
upstream_can_queue(const struct upstream *up)
{
	if (up->lmtp || up->nops + 2 > UPSTREAM_PIPE_MAX)
		return 0;
	if (up->queuing)
		return 1;	/* even DEAD: upstream_flush reports it */
	return up->state == UP_STATE_READY && up->done == NULL &&
	    up->expect == 0 && (up->caps.flags & SMTP_EHLO_PIPELINING);
}

static void
upstream_push(struct upstream *up, enum upstream_cmd cmd, upstream_done_fn done,
    void *arg)
{
	struct upstream_op *op;

	if (up->nops >= UPSTREAM_PIPE_MAX)
		fatalx("upstream: pipelined group over %d", UPSTREAM_PIPE_MAX);
	op = &up->ops[(up->op_head + up->nops) % UPSTREAM_PIPE_MAX];
	op->cmd = cmd;
	op->done = done;
	op->arg = arg;
	up->nops++;
}

/*
 * Queue a MAIL or RCPT line (upstream_can_queue said yes): into the
 * output, not written, its reply owed to done once the group is written
 * (upstream_flush).  A MAIL takes its XFORWARD along when one is due.
 */
void
upstream_queue(struct upstream *up, const char *line, upstream_done_fn done,
    void *arg)
{
	char facts[UPSTREAM_CMD_MAX];
	enum upstream_cmd cmd = upstream_cmd_of(line);
	int xclient = 0, r;

	if ((cmd != UP_CMD_MAIL && cmd != UP_CMD_RCPT) || !upstream_can_queue(up))
		fatalx("upstream: cannot queue in state %s",
		    upstream_state_names[up->state]);
	if (!up->queuing) {
		up->queuing = 1;
		up->dead_err = UPSTREAM_OK;
		upstream_enter_state(up, UP_STATE_PIPELINE);
	}
	if (up->state == UP_STATE_DEAD) {
		upstream_push(up, cmd, done, arg);
		return;
	}
	if (cmd == UP_CMD_MAIL &&
	    (r = upstream_client_facts(up, 1, facts, &xclient)) != 0) {
		if (r == -1) {
			upstream_push(up, cmd, done, arg);
			upstream_fail(up, UPSTREAM_ERR_LOCAL,
			    "XFORWARD line too long");
			return;
		}
		upstream_push(up, UP_CMD_XFORWARD, NULL, NULL);
		upstream_add_line(up, facts);
	}
	upstream_push(up, cmd, done, arg);
	upstream_add_line(up, line);
}

/*
 * Write the queued group in one write; the replies are read in order.
 * A connection that died meanwhile tells the first command's listener,
 * from the loop.
 */
void
upstream_flush(struct upstream *up)
{
	if (!up->queuing)
		fatalx("upstream: nothing queued to flush");
	if (up->state == UP_STATE_DEAD) {
		upstream_pipe_take(up);
		upstream_report_dead(up);
		return;
	}
	up->queuing = 0;
	up->expect += up->nops;
	smtp_reply_init(&up->reply);
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	bev_flush(up->bev);
}

/* AUTH and SASL responses: relayed like commands, never logged. */
void
upstream_command_secret(struct upstream *up, const char *line,
    upstream_done_fn done, void *arg)
{
	if (!upstream_usable(up, done, arg))
		return;
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	upstream_enter_state(up, UP_STATE_COMMAND);
	up->cmd = strcmp(line, "*") == 0 ? UP_CMD_AUTH_CANCEL : UP_CMD_AUTH;
	up->secret = 1;
	up->auth_used = 1;
	upstream_write_line(up, line);
}

/*
 * "BDAT <n> LAST" for the message upstream_send_message just set up, n
 * being what the DATA path would deliver: the header block, the spool
 * from spool_off, and a CRLF when that does not end in LF (the writer
 * adds one before its dot).  The command waits in the output buffer for
 * the chunk: both leave in one write.
 */
static void
upstream_send_bdat(struct upstream *up)
{
	struct evbuffer *out = bufferevent_get_output(up->bev);
	size_t body = up->spool->size > (size_t)up->spool_off ?
	    up->spool->size - (size_t)up->spool_off : 0;
	long long n = (long long)(up->prependlen + body);
	int last;

	last = body > 0 ? spool_last(up->spool) : up->prependlen > 0 ?
	    (unsigned char)up->prepend[up->prependlen - 1] : '\n';
	if (last != '\n')
		n += 2;
	up->bdat = 1;
	up->bdat_left = n;
	upstream_enter_state(up, UP_STATE_DATA_SEND);
	log_debug("%016llx upstream >>> BDAT %lld LAST", up->sid, n);
	evbuffer_add_printf(out, "BDAT %lld LAST\r\n", n);
	smtp_reply_init(&up->reply);
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	/*
	 * At once, not from the loop: another turn would cost an epoll_wait
	 * of its own.  A spool read error in here is reported from the loop
	 * all the same (upstream_fail sees starting).
	 */
	up->starting = 1;
	upstream_send_body(up);
	up->starting = 0;
}

void
upstream_send_message(struct upstream *up, const char *prepend,
    size_t prependlen, struct spool *sp, size_t spool_off,
    upstream_done_fn done, void *arg)
{
	if (!upstream_usable(up, done, arg))
		return;
	up->spool = sp;
	up->spool_off = (off_t)spool_off;
	up->prepend = prepend;
	up->prependlen = prependlen;
	up->at_bol = 1;
	/* LMTP keeps DATA: its per-recipient replies are tested there only. */
	up->bdat = 0;
	if (up->cfg->upstream_chunking && !up->lmtp &&
	    (up->caps.flags & SMTP_EHLO_CHUNKING)) {
		upstream_send_bdat(up);
		return;
	}
	upstream_enter_state(up, UP_STATE_DATA_CMD);
	upstream_set_timeout(up, up->cfg->timeouts.upstream_command);
	upstream_write_line(up, "DATA");
}

void
upstream_close(struct upstream *up)
{
	if (up == NULL)
		return;
	up->done = NULL;
	up->done_arg = NULL;
	/*
	 * In the middle of a SASL exchange a QUIT would be read as the
	 * response (a wrong password counted against us): just hang up.
	 */
	if (up->state == UP_STATE_READY && up->bev != NULL && !up->in_sasl) {
		/* Polite QUIT; the connection frees itself on reply, EOF or timeout. */
		upstream_enter_state(up, UP_STATE_QUIT);
		upstream_write_line(up, "QUIT");
		/*
		 * On a plain socket whose QUIT the kernel took, the reply is
		 * not waited for, as Postfix's smtp client does
		 * (smtp_skip_quit_response = yes): nothing it can say changes
		 * anything, and waiting cost a read(2) and a loop pass per
		 * connection.  Over TLS our close_notify follows the reply
		 * (upstream_close_notify).
		 */
		if (bev_direct(up->bev) &&
		    evbuffer_get_length(bufferevent_get_output(up->bev)) == 0) {
			upstream_enter_state(up, UP_STATE_DEAD);
			up->closing = 1;
			if (up->in_callback == 0)
				upstream_free(up);
			return;
		}
		upstream_set_timeout(up, UPSTREAM_QUIT_TIMEOUT);
		return;
	}
	up->closing = 1;
	if (up->in_callback == 0)
		upstream_free(up);
}

/* ---- hooks for the idle pool (upstream_pool.c) ------------------------- */

/*
 * 1 when the connection may serve another client: idle, in step, outside
 * a transaction, with no identity of its own (no XCLIENT, no AUTH) and
 * nothing refused that leaves its state in doubt.  Any error already
 * made it DEAD.
 */
int
upstream_poolable(const struct upstream *up)
{
	return up->state == UP_STATE_READY && up->bev != NULL &&
	    up->done == NULL && !up->closing && !up->in_tx && !up->in_sasl &&
	    !up->xclient_sent && !up->auth_used && !up->tainted && !up->probe &&
	    up->expect == 0 &&
	    evbuffer_get_length(bufferevent_get_input(up->bev)) == 0 &&
	    evbuffer_get_length(bufferevent_get_output(up->bev)) == 0;
}

int
upstream_tls_active(const struct upstream *up)
{
	return up->tls;
}

/*
 * While pooled: fn hears of the connection's death (EOF, reset, an
 * unsolicited 421 or bytes), reported as an error like any other.
 */
void
upstream_park(struct upstream *up, unsigned long long sid, upstream_done_fn fn,
    void *arg)
{
	up->sid = sid;
	up->done = fn;
	up->done_arg = arg;
}

/*
 * Take a pooled connection for a new client: its facts replace the old
 * client's (XFORWARD before the next MAIL sends them), then RSET proves
 * the connection answers in step; done gets RSET's reply.
 */
void
upstream_reuse(struct upstream *up, const struct upstream_client *client,
    unsigned long long sid, upstream_done_fn done, void *arg)
{
	up->done = NULL;
	up->done_arg = NULL;
	up->sid = sid;
	upstream_set_client(up, client);
	upstream_command(up, "RSET", done, arg);
	/*
	 * It stands in for a connect: a connection that does not answer is
	 * given up after timeouts.upstream_connect, not upstream_command,
	 * and the client gets a new one.
	 */
	if (up->state == UP_STATE_COMMAND)
		upstream_set_timeout(up, up->cfg->timeouts.upstream_connect);
}

/* ---- start-up probe ---------------------------------------------------- */

struct upstream_probe_state {
	struct event_base	*base;
	struct upstream		*up;
	int			 ok;
};

static void
upstream_probe_done(void *arg, enum upstream_err err,
    const struct smtp_reply *r)
{
	struct upstream_probe_state *ps = arg;

	(void)r;
	ps->ok = err == UPSTREAM_OK;
	if (!ps->ok)
		ps->up = NULL;	/* dead; freed below by upstream_close's path */
	event_base_loopexit(ps->base, NULL);
}

int
upstream_probe(const struct config *cfg, SSL_CTX *tls_ctx, int lmtp)
{
	struct upstream_probe_state ps = { 0 };
	struct upstream_client cl = UPSTREAM_CLIENT_PROBE;
	struct upstream *up;

	cl.lmtp = lmtp;
	if ((ps.base = event_base_new()) == NULL)
		return -1;
	up = upstream_open(ps.base, cfg, tls_ctx, &cl, 0, upstream_probe_done,
	    &ps);
	if (up == NULL) {
		event_base_free(ps.base);
		return -1;
	}
	event_base_dispatch(ps.base);
	if (ps.ok) {
		upstream_close(up);	/* sends QUIT */
		event_base_dispatch(ps.base);
	} else
		upstream_close(up);
	event_base_free(ps.base);
	return ps.ok ? 0 : -1;
}
