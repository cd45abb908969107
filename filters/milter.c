/*
 * milter.c - an external milter as one more filter of the chain (the MTA
 * side of the milter protocol)
 *
 * DESCRIPTION
 *	libmilter implements only the filter side of the protocol; the MTA
 *	side - what Postfix's milter8.c does - is written here by hand, with
 *	the packet checks in milter_proto.c.  A `filters` entry with
 *	milter = ADDRESS becomes this built-in filter: one milter connection
 *	per SMTP session, opened at connect on the session's event loop
 *	(a bufferevent), every read and write there, each reply awaited under
 *	a timer (timeouts.connect, .command before DATA, .content from DATA
 *	on; a progress reply re-arms it).  Each hook sends the stage's macros
 *	(D) and its event and returns FMX_PENDING; the reply resumes the
 *	chain with the verdict, the result named for the policy ("reject",
 *	"tempfail", "discard", "quarantine", "continue", "accept") and the
 *	milter's own SMTP reply.
 *
 *	The message content goes at end of message, as Postfix's cleanup
 *	does: every header field, end of headers, the body in chunks of at
 *	most 65535 octets, then end of body, from the message as the filters
 *	before this one left it (their header edits and replacement body
 *	applied: milter_view_*), so the next milter sees this one's edits.
 *	Edits the milter answers with are validated and translated into the
 *	chain's edits (struct filter_edit: positions in the client's header)
 *	only when its final answer lets the message go on.
 *
 *	Anything malformed or out of order - a bad packet, an unknown or
 *	misplaced reply, a timeout, a closed connection - is a failure: the
 *	connection is closed, the chain applies the filter's on_error now and
 *	at every later phase of the session (c->failed), never a silent
 *	accept.  Failures count for the milter's circuit breaker (struct
 *	milter_inst, shared by every session and worker thread of the
 *	configuration): after breaker.failures in a row the milter is not
 *	tried for breaker.open seconds (on_error at once), then one session
 *	tries it again; every change of state is logged.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "filter_int.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "milter_proto.h"
#include "strutil.h"

/* Edits one milter may answer with at end of message. */
#define MILTER_EDITS_MAX	(FILTER_EDITS_MAX + 2 * FILTER_RCPT_EDITS_MAX + 2)
/* Output queued before the content stream waits for the socket to drain. */
#define MILTER_OUT_HIGH		(256 * 1024)
/* Longest envelope address an edit may carry (without its brackets). */
#define MILTER_ADDR_MAX		256

/* Postfix's default macro lists (mail_params.h), plus the client's address. */
static const char *const milter_default_macros[MILTER_ST_COUNT] = {
	[MILTER_ST_CONNECT] = "j {daemon_name} {daemon_addr} v _ {client_addr} "
	    "{client_name} {client_port}",
	[MILTER_ST_HELO] = "{tls_version} {cipher} {cipher_bits} {cert_subject} "
	    "{cert_issuer}",
	[MILTER_ST_MAIL] = "i {auth_type} {auth_authen} {auth_ssf} {auth_author} "
	    "{mail_addr} {mail_host} {mail_mailer}",
	[MILTER_ST_RCPT] = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
	[MILTER_ST_DATA] = "i",
	[MILTER_ST_EOM] = "i",
	[MILTER_ST_EOH] = "i",
};

/* The command octet of the D packet for each stage. */
static const char milter_stage_cmd[MILTER_ST_COUNT] = {
	[MILTER_ST_CONNECT] = SMFIC_CONNECT, [MILTER_ST_HELO] = SMFIC_HELO,
	[MILTER_ST_MAIL] = SMFIC_MAIL, [MILTER_ST_RCPT] = SMFIC_RCPT,
	[MILTER_ST_DATA] = SMFIC_DATA, [MILTER_ST_EOM] = SMFIC_BODYEOB,
	[MILTER_ST_EOH] = SMFIC_EOH,
};

/* One configured milter: its circuit breaker, shared by all sessions. */
struct milter_inst {
	const struct config_filter	*cf;
	atomic_uint			 failures;	/* in a row */
	atomic_llong			 open_until;	/* monotonic s; 0 closed */
	atomic_int			 trial;		/* a session tries it (half open) */
};

enum milter_state {
	MS_CONNECTING = 0,	/* TCP/UNIX connect in progress */
	MS_NEGOTIATING,		/* OPTNEG sent */
	MS_IDLE,		/* nothing awaited */
	MS_WAIT,		/* the reply to an event */
	MS_DEAD			/* failed or closed: never used again */
};

/* One edit a milter answered with, kept until its final answer. */
struct milter_edit {
	char		 cmd;		/* SMFIR_* */
	uint32_t	 index;
	char		*a;		/* header name or address */
	char		*b;		/* header value (folded with CRLF) or ESMTP args */
};

/* One header field of the message as this milter sees it. */
struct milter_field {
	char		*name;
	char		*value;		/* after the colon, CRLF folds kept */
	long		 orig;		/* index in the client's header, -1 if added */
	long		 edit;		/* index in fs->edits that made or changed it, -1 */
};

/* The message as the filters before this one left it (end of message). */
struct milter_view {
	char			*raw;		/* the client's header block */
	size_t			 rawlen;
	struct milter_field	*orig;		/* the client's fields */
	size_t			 norig;
	struct milter_field	*f;		/* as shown: edits applied */
	size_t			 n, cap;
	size_t			 body_off;	/* where the body starts in the message */
	size_t			 hdr_i;		/* next field to send */
	size_t			 body_pos;	/* body octets sent */
};

struct milter_conn {
	struct milter_inst	*mi;
	struct fmx_ctx		*h;		/* the handle the api takes */
	struct fmx_ctx		*c;		/* the core's ctx (base, failed) */
	struct bufferevent	*bev;
	struct event		*timer;
	enum milter_state	 state;
	enum filter_phase	 phase;		/* of the pending hook */
	int			 pending;	/* a hook returned FMX_PENDING */
	int			 trial;		/* this session is the breaker's trial */
	int			 ok;		/* no failure this session */
	unsigned		 tmo;		/* seconds, the current reply timeout */
	uint32_t		 version, actions, flags;	/* negotiated */
	int			 has_list[MILTER_ST_COUNT];
	char			 list[MILTER_ST_COUNT][MILTER_SYMLIST_MAX];
	char			 awaiting;	/* the event whose reply is awaited */
	int			 conn_done;	/* accepted/refused for the connection */
	int			 msg_done;	/* final answer for this message */
	int			 msg_started;	/* events of a message sent: ABORT before the next */
	int			 skip_body;	/* SMFIR_SKIP: no more body chunks */
	int			 quarantine;
	char			 qreason[FILTER_REASON_MAX];
	/* The answer given to the pending hook. */
	enum fmx_verdict	 verdict;
	/* End of message. */
	struct milter_view	 view;
	enum { EOM_HDRS, EOM_EOH, EOM_BODY, EOM_EOB, EOM_WAIT } eom;
	struct milter_edit	 edits[MILTER_EDITS_MAX];
	size_t			 nedits;
	unsigned char		*body;		/* SMFIR_REPLBODY chunks */
	size_t			 bodylen;
	int			 replbody;
};

static const struct fmx_api	*milter_api = &filter_api;

void	milter_inst_free(void *);

static void	milter_eom_stream(struct milter_conn *);
static void	milter_read_cb(struct bufferevent *, void *);

/* ---- the circuit breaker ------------------------------------------------- */

static long long
milter_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

/* May this session use the milter?  Open: no, but one trial after breaker.open. */
static int
milter_breaker_allow(struct milter_conn *mc)
{
	struct milter_inst *mi = mc->mi;
	long long until = atomic_load(&mi->open_until);
	int zero = 0;

	if (mi->cf->breaker_failures == 0 || until == 0)
		return 1;
	if (milter_now() < until)
		return 0;
	if (!atomic_compare_exchange_strong(&mi->trial, &zero, 1))
		return 0;	/* another session is the trial */
	mc->trial = 1;
	log_info("filter=%s milter %s circuit breaker half-open: one session "
	    "tries it", mi->cf->name, mi->cf->milter);
	return 1;
}

static void
milter_breaker_success(struct milter_conn *mc)
{
	struct milter_inst *mi = mc->mi;
	long long until = atomic_load(&mi->open_until);

	atomic_store(&mi->failures, 0);
	if (until != 0 && atomic_compare_exchange_strong(&mi->open_until, &until, 0)) {
		log_info("filter=%s milter %s circuit breaker closed: it answers "
		    "again", mi->cf->name, mi->cf->milter);
		atomic_store(&mi->trial, 0);
	}
	mc->trial = 0;
}

static void
milter_breaker_failure(struct milter_conn *mc)
{
	struct milter_inst *mi = mc->mi;
	unsigned n = atomic_fetch_add(&mi->failures, 1) + 1;
	long long zero = 0, until;

	if (mi->cf->breaker_failures == 0)
		return;
	if (mc->trial) {
		mc->trial = 0;
		atomic_store(&mi->open_until, milter_now() + mi->cf->breaker_open);
		atomic_store(&mi->trial, 0);
		log_warn("filter=%s milter %s circuit breaker open again for %us: "
		    "the trial failed", mi->cf->name, mi->cf->milter,
		    mi->cf->breaker_open);
		return;
	}
	until = milter_now() + mi->cf->breaker_open;
	if (n >= mi->cf->breaker_failures &&
	    atomic_compare_exchange_strong(&mi->open_until, &zero, until))
		log_warn("filter=%s milter %s circuit breaker open for %us after "
		    "%u failures in a row: on_error applies at once",
		    mi->cf->name, mi->cf->milter, mi->cf->breaker_open, n);
}

/* ---- connection ---------------------------------------------------------- */

static void
milter_close(struct milter_conn *mc)
{
	if (mc->timer != NULL)
		evtimer_del(mc->timer);
	if (mc->bev != NULL) {
		bufferevent_free(mc->bev);
		mc->bev = NULL;
	}
	mc->state = MS_DEAD;
}

/* Answer the pending hook (from a callback, never inside the hook). */
static void
milter_resume(struct milter_conn *mc, enum fmx_verdict v)
{
	if (!mc->pending)
		return;
	mc->pending = 0;
	if (mc->c->failed && v != FMX_TEMPFAIL)
		return;		/* the chain gave up on this call */
	milter_api->resume(mc->h, v);
}

/*
 * A failure: close (Postfix's "poison"), count it for the breaker, and
 * let the chain apply on_error now and at every later phase.
 */
static void
milter_fail_kind(struct milter_conn *mc, const char *kind, const char *why)
{
	if (mc->state == MS_DEAD)
		return;
	metrics_inc(METRIC_FILTER_ERRORS, mc->mi->cf->name, kind);
	log_warn("%016llx filter=%s milter %s: %s", mc->c->fs->session_id,
	    mc->mi->cf->name, mc->mi->cf->milter, why);
	milter_close(mc);
	mc->ok = 0;
	/*
	 * Only a pending call fails now; an answer already given stands
	 * (rspamd's y then r) and the next hook finds the connection dead.
	 */
	if (mc->pending)
		mc->c->failed = 1;
	milter_breaker_failure(mc);
	milter_resume(mc, FMX_TEMPFAIL);
}

static void
milter_fail(struct milter_conn *mc, const char *why)
{
	milter_fail_kind(mc, "error", why);
}

static void
milter_timer_arm(struct milter_conn *mc, unsigned secs)
{
	struct timeval tv = { (time_t)secs, 0 };

	mc->tmo = secs;
	evtimer_add(mc->timer, &tv);
}

static void
milter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct milter_conn *mc = arg;
	char why[96];

	(void)fd;
	(void)what;
	snprintf(why, sizeof why, "no answer within %us", mc->tmo);
	milter_fail_kind(mc, "timeout", why);
}

static void
milter_send(struct milter_conn *mc, char cmd, const void *data, size_t len)
{
	struct evbuffer *out = bufferevent_get_output(mc->bev);
	unsigned char head[5];

	milter_pkt_head(head, cmd, len);
	evbuffer_add(out, head, sizeof head);
	if (len > 0)
		evbuffer_add(out, data, len);
}

static void
milter_send_optneg(struct milter_conn *mc)
{
	unsigned char d[12];
	uint32_t v[3] = { MILTER_VERSION, SMFIF_ALL, MILTER_OFFER_FLAGS };
	int i;

	for (i = 0; i < 3; i++) {
		d[i * 4] = (unsigned char)(v[i] >> 24);
		d[i * 4 + 1] = (unsigned char)(v[i] >> 16);
		d[i * 4 + 2] = (unsigned char)(v[i] >> 8);
		d[i * 4 + 3] = (unsigned char)v[i];
	}
	milter_send(mc, SMFIC_OPTNEG, d, sizeof d);
	mc->state = MS_NEGOTIATING;
	milter_timer_arm(mc, mc->mi->cf->milter_command);
}

static void
milter_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct milter_conn *mc = arg;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		evtimer_del(mc->timer);
		milter_send_optneg(mc);
		return;
	}
	if (what & BEV_EVENT_EOF)
		milter_fail(mc, "connection closed by the milter");
	else if (what & BEV_EVENT_ERROR)
		milter_fail(mc, mc->state == MS_CONNECTING ?
		    "cannot connect" : "connection error");
}

/* Output drained: the content stream goes on. */
static void
milter_write_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *mc = arg;

	(void)bev;
	if (mc->state == MS_IDLE && mc->pending && mc->phase == FILTER_PH_EOM &&
	    mc->eom != EOM_WAIT)
		milter_eom_stream(mc);
}

static int
milter_connect(struct milter_conn *mc, struct event_base *base)
{
	const struct config_filter *cf = mc->mi->cf;

	if ((mc->timer = evtimer_new(base, milter_timeout_cb, mc)) == NULL ||
	    (mc->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) == NULL)
		return -1;
	bufferevent_setcb(mc->bev, milter_read_cb, milter_write_cb,
	    milter_event_cb, mc);
	bufferevent_enable(mc->bev, EV_READ | EV_WRITE);
	mc->state = MS_CONNECTING;
	milter_timer_arm(mc, cf->milter_connect);
	if (bufferevent_socket_connect(mc->bev, (const struct sockaddr *)&cf->milter_sa,
	    (int)cf->milter_salen) == -1)
		return -1;
	return 0;
}

/* ---- macros ---------------------------------------------------------------- */

static const char *
milter_domain(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;

	return at ? at + 1 : "";
}

/* A macro's value for this session (name with or without braces), NULL unknown. */
static const char *
milter_macro(struct milter_conn *mc, const char *name, const char *arg,
    char *buf, size_t buflen)
{
	const struct filter_facts *f = mc->c->fs->facts;
	const char *tls = f->tls, *sp;
	char n[64];
	size_t len = strlen(name);

	if (len >= 2 && name[0] == '{' && name[len - 1] == '}')
		snprintf(n, sizeof n, "%.*s", (int)(len - 2), name + 1);
	else
		snprintf(n, sizeof n, "%s", name);
	if (strcmp(n, "j") == 0 || strcmp(n, "daemon_name") == 0)
		return mc->c->fs->chain->cfg->hostname;
	if (strcmp(n, "daemon_addr") == 0)
		return f->daemon_addr;
	if (strcmp(n, "daemon_port") == 0) {
		snprintf(buf, buflen, "%u", f->daemon_port);
		return buf;
	}
	if (strcmp(n, "v") == 0)
		return "frontmx";
	if (strcmp(n, "_") == 0) {
		snprintf(buf, buflen, "%s [%s]", f->client_name, f->client_addr);
		return buf;
	}
	if (strcmp(n, "client_addr") == 0)
		return f->client_addr;
	if (strcmp(n, "client_name") == 0 || strcmp(n, "client_ptr") == 0)
		return f->client_name;
	if (strcmp(n, "client_port") == 0) {
		snprintf(buf, buflen, "%u", f->client_port);
		return buf;
	}
	if (tls != NULL && (sp = strchr(tls, ' ')) != NULL) {
		if (strcmp(n, "tls_version") == 0) {
			snprintf(buf, buflen, "%.*s", (int)(sp - tls), tls);
			return buf;
		}
		if (strcmp(n, "cipher") == 0)
			return sp + 1;
	}
	if (strcmp(n, "i") == 0)
		return f->queue_id;
	if (strcmp(n, "auth_type") == 0)
		return f->auth_type;
	if (strcmp(n, "auth_authen") == 0)
		return f->auth;
	if (f->mail_from != NULL) {
		if (strcmp(n, "mail_addr") == 0)
			return f->mail_from;
		if (strcmp(n, "mail_host") == 0)
			return milter_domain(f->mail_from);
		if (strcmp(n, "mail_mailer") == 0)
			return "smtp";
	}
	if (arg != NULL && mc->phase == FILTER_PH_RCPT) {
		if (strcmp(n, "rcpt_addr") == 0)
			return arg;
		if (strcmp(n, "rcpt_host") == 0)
			return milter_domain(arg);
		if (strcmp(n, "rcpt_mailer") == 0)
			return "smtp";
	}
	return NULL;
}

/* D packet of a stage: the milter's list (SETSYMLIST) or the default one. */
static void
milter_send_macros(struct milter_conn *mc, enum milter_stage st, const char *arg)
{
	struct evbuffer *b = evbuffer_new();
	const char *list = mc->has_list[st] ? mc->list[st] : milter_default_macros[st];
	const char *p = list, *v;
	char name[64], val[256], cmd = milter_stage_cmd[st];
	size_t len;

	if (b == NULL)
		return;
	evbuffer_add(b, &cmd, 1);
	while (*p != '\0') {
		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		len = strcspn(p, " ,\t");
		if (len == 0)
			break;
		if (len < sizeof name) {
			memcpy(name, p, len);
			name[len] = '\0';
			if ((v = milter_macro(mc, name, arg, val, sizeof val)) != NULL) {
				evbuffer_add(b, name, len + 1);
				evbuffer_add(b, v, strlen(v) + 1);
			}
		}
		p += len;
	}
	milter_send(mc, SMFIC_MACRO, evbuffer_pullup(b, -1), evbuffer_get_length(b));
	evbuffer_free(b);
}

/* ---- events ---------------------------------------------------------------- */

/* The NO* flag that drops an event, and the NR_* one that silences its reply. */
static void
milter_event_flags(char cmd, uint32_t *no, uint32_t *nr)
{
	switch (cmd) {
	case SMFIC_CONNECT: *no = SMFIP_NOCONNECT; *nr = SMFIP_NR_CONN; break;
	case SMFIC_HELO: *no = SMFIP_NOHELO; *nr = SMFIP_NR_HELO; break;
	case SMFIC_MAIL: *no = SMFIP_NOMAIL; *nr = SMFIP_NR_MAIL; break;
	case SMFIC_RCPT: *no = SMFIP_NORCPT; *nr = SMFIP_NR_RCPT; break;
	case SMFIC_DATA: *no = SMFIP_NODATA; *nr = SMFIP_NR_DATA; break;
	case SMFIC_HEADER: *no = SMFIP_NOHDRS; *nr = SMFIP_NR_HDR; break;
	case SMFIC_EOH: *no = SMFIP_NOEOH; *nr = SMFIP_NR_EOH; break;
	case SMFIC_BODY: *no = SMFIP_NOBODY; *nr = SMFIP_NR_BODY; break;
	default: *no = 0; *nr = 0; break;
	}
}

/*
 * Send an event (after its stage's macros, which go even when the milter
 * opted out of the event).  1: a reply is awaited; 0: none will come.
 */
static int
milter_event(struct milter_conn *mc, int stage, const char *arg, char cmd,
    const void *data, size_t len)
{
	uint32_t no, nr;

	milter_event_flags(cmd, &no, &nr);
	/* Version 2 and 3 milters know no DATA event (Postfix's np_mask). */
	if (cmd == SMFIC_DATA && mc->version < 4)
		return 0;
	if (stage >= 0)
		milter_send_macros(mc, (enum milter_stage)stage, arg);
	if (mc->flags & no)
		return 0;
	milter_send(mc, cmd, data, len);
	if (mc->flags & nr)
		return 0;
	mc->awaiting = cmd;
	mc->state = MS_WAIT;
	milter_timer_arm(mc, mc->phase >= FILTER_PH_DATA ?
	    mc->mi->cf->milter_content : mc->mi->cf->milter_command);
	return 1;
}

static void
milter_send_connect(struct milter_conn *mc)
{
	const struct filter_facts *f = mc->c->fs->facts;
	struct evbuffer *b = evbuffer_new();
	char host[300], fam = strchr(f->client_addr, ':') ? '6' : '4';
	unsigned char port[2] = { (unsigned char)(f->client_port >> 8),
	    (unsigned char)f->client_port };

	if (b == NULL) {
		milter_fail(mc, "out of memory");
		return;
	}
	/* An unverified client name is sent as [addr] (milter8_conn_event). */
	if (f->client_name == NULL || strcmp(f->client_name, "unknown") == 0)
		snprintf(host, sizeof host, "[%s]", f->client_addr);
	else
		snprintf(host, sizeof host, "%s", f->client_name);
	evbuffer_add(b, host, strlen(host) + 1);
	evbuffer_add(b, &fam, 1);
	evbuffer_add(b, port, 2);
	evbuffer_add(b, f->client_addr, strlen(f->client_addr) + 1);
	mc->phase = FILTER_PH_CONNECT;
	if (!milter_event(mc, MILTER_ST_CONNECT, NULL, SMFIC_CONNECT,
	    evbuffer_pullup(b, -1), evbuffer_get_length(b))) {
		mc->state = MS_IDLE;
		milter_resume(mc, FMX_CONTINUE);
	}
	evbuffer_free(b);
}

/* "<addr>" then each ESMTP argument, NUL-terminated (MAIL and RCPT events). */
static void
milter_send_path(struct milter_conn *mc, int stage, char cmd, const char *addr,
    const char *args, int *awaited)
{
	struct evbuffer *b = evbuffer_new();
	const char *p = args;
	size_t len;

	*awaited = 0;
	if (b == NULL)
		return;
	evbuffer_add_printf(b, "<%s>", addr);
	evbuffer_add(b, "", 1);
	while (p != NULL && *p != '\0') {
		while (*p == ' ')
			p++;
		if ((len = strcspn(p, " ")) == 0)
			break;
		evbuffer_add(b, p, len);
		evbuffer_add(b, "", 1);
		p += len;
	}
	*awaited = milter_event(mc, stage, addr, cmd, evbuffer_pullup(b, -1),
	    evbuffer_get_length(b));
	evbuffer_free(b);
}

/* ---- replies ---------------------------------------------------------------- */

static void
milter_set(struct milter_conn *mc, const char *result, const char *reply)
{
	milter_api->set_result(mc->h, result, NULL);
	if (reply != NULL)
		milter_api->set_reply(mc->h, reply);
}

/*
 * A final answer to an event other than end of body: the verdict for the
 * chain.  At connect and HELO, accept and refusals hold for the connection.
 */
static void
milter_final(struct milter_conn *mc, enum fmx_verdict v, const char *result,
    const char *reply)
{
	int conn = mc->phase <= FILTER_PH_HELO;

	if (v != FMX_CONTINUE || strcmp(result, "accept") == 0) {
		if (conn)
			mc->conn_done = 1;
		else if (mc->phase != FILTER_PH_RCPT || v == FMX_ACCEPT ||
		    strcmp(result, "accept") == 0)
			mc->msg_done = 1;
	}
	/* A pass is named only as "accept", and only where nothing is held. */
	if (v != FMX_CONTINUE || (mc->phase > FILTER_PH_MAIL &&
	    strcmp(result, "accept") == 0))
		milter_set(mc, result, reply);
	mc->verdict = v;
	milter_resume(mc, v);
}

/* A data-less reply must come without data. */
static int
milter_empty(struct milter_conn *mc, const struct milter_pkt *p)
{
	if (p->len == 0)
		return 1;
	milter_fail(mc, "reply with unexpected data");
	return 0;
}

static int	milter_addr(const char *, char *, size_t);
static int	milter_args_valid(const char *);

/* Keep one end-of-body edit, validated; 0 ok, -1 refused (failure). */
static int
milter_edit_keep(struct milter_conn *mc, const struct milter_pkt *p)
{
	const char *s[3];
	struct milter_edit *e;
	char value[MILTER_HDR_VALUE_MAX], addr[MILTER_ADDR_MAX];
	uint32_t index = 0, need = 0;
	const unsigned char *d = p->data;
	size_t len = p->len;
	int n;

	switch (p->cmd) {
	case SMFIR_ADDHEADER: need = SMFIF_ADDHDRS; break;
	case SMFIR_INSHEADER: need = SMFIF_ADDHDRS; break;
	case SMFIR_CHGHEADER: need = SMFIF_CHGHDRS; break;
	case SMFIR_ADDRCPT: need = SMFIF_ADDRCPT; break;
	case SMFIR_ADDRCPT_PAR: need = SMFIF_ADDRCPT_PAR; break;
	case SMFIR_DELRCPT: need = SMFIF_DELRCPT; break;
	case SMFIR_CHGFROM: need = SMFIF_CHGFROM; break;
	default: break;
	}
	if (!(mc->actions & need)) {
		milter_fail(mc, "edit it did not negotiate");
		return -1;
	}
	if (mc->nedits >= MILTER_EDITS_MAX) {
		milter_fail(mc, "too many edits");
		return -1;
	}
	if (p->cmd == SMFIR_INSHEADER || p->cmd == SMFIR_CHGHEADER) {
		if (len < 4) {
			milter_fail(mc, "truncated header edit");
			return -1;
		}
		index = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 |
		    (uint32_t)d[2] << 8 | d[3];
		d += 4;
		len -= 4;
	}
	if (p->cmd == SMFIR_ADDRCPT || p->cmd == SMFIR_DELRCPT)
		n = milter_strings(d, len, s, 1, 1);
	else if (p->cmd == SMFIR_ADDRCPT_PAR || p->cmd == SMFIR_CHGFROM)
		n = milter_strings(d, len, s, 1, 2);
	else
		n = milter_strings(d, len, s, 2, 2);
	if (n < 0) {
		milter_fail(mc, "malformed edit");
		return -1;
	}
	e = &mc->edits[mc->nedits];
	memset(e, 0, sizeof *e);
	e->cmd = p->cmd;
	e->index = index;
	if (p->cmd == SMFIR_ADDHEADER || p->cmd == SMFIR_INSHEADER ||
	    p->cmd == SMFIR_CHGHEADER) {
		const char *v = s[1];

		/* The one space after the colon is the milter's with HDR_LEADSPC. */
		if ((mc->flags & SMFIP_HDR_LEADSPC) && *v == ' ')
			v++;
		if (milter_hdr_name_valid(s[0]) == -1 ||
		    milter_hdr_value(v, value, sizeof value) < 0) {
			milter_fail(mc, "header edit with an invalid name or value "
			    "(CR, LF or control octets, or too long)");
			return -1;
		}
		e->a = strdup(s[0]);
		e->b = strdup(value);
	} else {
		/*
		 * Envelope edits are checked here, on arrival, like header
		 * edits: milter_apply() writes each edit into the session as it
		 * goes, so one refused there would leave the edits before it
		 * applied, and on_error = accept would relay a half-edited
		 * message.
		 */
		if ((p->cmd != SMFIR_DELRCPT && milter_args_valid(n > 1 ? s[1] : NULL) == -1) ||
		    (!(p->cmd == SMFIR_CHGFROM && strcmp(s[0], "<>") == 0) &&
		    milter_addr(s[0], addr, sizeof addr) == -1)) {
			milter_fail(mc, "envelope edit with an invalid address or "
			    "ESMTP arguments");
			return -1;
		}
		e->a = strdup(s[0]);
		e->b = n > 1 ? strdup(s[1]) : NULL;
	}
	if (e->a == NULL || (e->b == NULL && (n > 1 || p->cmd == SMFIR_ADDHEADER))) {
		free(e->a);
		free(e->b);
		milter_fail(mc, "out of memory");
		return -1;
	}
	mc->nedits++;
	return 0;
}

static void
milter_edits_free(struct milter_conn *mc)
{
	size_t i;

	for (i = 0; i < mc->nedits; i++) {
		free(mc->edits[i].a);
		free(mc->edits[i].b);
	}
	mc->nedits = 0;
	free(mc->body);
	mc->body = NULL;
	mc->bodylen = 0;
	mc->replbody = 0;
}

static void	milter_view_free(struct milter_view *);
static int	milter_apply(struct milter_conn *, const char **why);

/* The final answer at end of body: edits apply only if the message goes on. */
static void
milter_eom_final(struct milter_conn *mc, enum fmx_verdict v, const char *result,
    const char *reply)
{
	const char *why = NULL;

	mc->msg_done = 1;
	if ((v == FMX_CONTINUE || v == FMX_ACCEPT) && milter_apply(mc, &why) == -1) {
		milter_edits_free(mc);
		milter_view_free(&mc->view);
		milter_fail(mc, why);
		return;
	}
	milter_edits_free(mc);
	milter_view_free(&mc->view);
	if ((v == FMX_CONTINUE || v == FMX_ACCEPT) && mc->quarantine) {
		v = FMX_QUARANTINE;
		result = "quarantine";
	}
	milter_breaker_success(mc);
	/* The message's answer is always named: a policy may map a pass too. */
	milter_set(mc, result, reply);
	if (mc->quarantine)
		log_info("%016llx filter=%s milter quarantine: %s",
		    mc->c->fs->session_id, mc->mi->cf->name, mc->qreason);
	mc->verdict = v == FMX_ACCEPT ? FMX_CONTINUE : v;
	milter_resume(mc, mc->verdict);
}

/* One reply packet while an event's answer is awaited. */
static void
milter_reply(struct milter_conn *mc, const struct milter_pkt *p)
{
	int eob = mc->awaiting == SMFIC_BODYEOB;
	int conn = mc->phase <= FILTER_PH_HELO;
	char text[MILTER_REPLY_MAX];
	const char *s[1];

	/* Edits only after end of body (milter8_event). */
	switch (p->cmd) {
	case SMFIR_ADDHEADER: case SMFIR_INSHEADER: case SMFIR_CHGHEADER:
	case SMFIR_ADDRCPT: case SMFIR_ADDRCPT_PAR: case SMFIR_DELRCPT:
	case SMFIR_CHGFROM: case SMFIR_REPLBODY:
		if (!eob) {
			milter_fail(mc, "message edit before end of body");
			return;
		}
		if (p->cmd == SMFIR_REPLBODY) {
			if (!(mc->actions & SMFIF_CHGBODY)) {
				milter_fail(mc, "body replacement it did not negotiate");
				return;
			}
			if (mc->bodylen + p->len > mc->c->fs->chain->cfg->limits.message_size) {
				milter_fail(mc, "replacement body over limits.message_size");
				return;
			}
			unsigned char *nb = realloc(mc->body, mc->bodylen + p->len + 1);

			if (nb == NULL) {
				milter_fail(mc, "out of memory");
				return;
			}
			mc->body = nb;
			if (p->len > 0)
				memcpy(mc->body + mc->bodylen, p->data, p->len);
			mc->bodylen += p->len;
			mc->replbody = 1;
		} else if (milter_edit_keep(mc, p) == -1)
			return;
		/* Postfix refuses a body replacement mixed with other edits. */
		if (mc->replbody && mc->nedits > 0) {
			milter_fail(mc, "body replacement mixed with other edits");
			return;
		}
		return;
	case SMFIR_PROGRESS:
		if (milter_empty(mc, p))
			milter_timer_arm(mc, mc->tmo);
		return;
	case SMFIR_QUARANTINE:
		if (!(mc->actions & SMFIF_QUARANTINE) ||
		    milter_strings(p->data, p->len, s, 1, 1) != 1) {
			milter_fail(mc, "malformed or unnegotiated quarantine");
			return;
		}
		/* Not final: the answer to the event still comes. */
		mc->quarantine = 1;
		snprintf(mc->qreason, sizeof mc->qreason, "%s", s[0]);
		for (char *q = mc->qreason; *q; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q > 0x7e)
				*q = ' ';
		return;
	default:
		break;
	}
	/* A final answer. */
	evtimer_del(mc->timer);
	mc->state = MS_IDLE;
	switch (p->cmd) {
	case SMFIR_CONTINUE:
	case SMFIR_ACCEPT:
		if (!milter_empty(mc, p))
			return;
		if (mc->awaiting == SMFIC_HEADER || mc->awaiting == SMFIC_BODY ||
		    mc->awaiting == SMFIC_EOH) {
			if (p->cmd == SMFIR_ACCEPT)
				milter_eom_final(mc, FMX_ACCEPT, "accept", NULL);
			else
				milter_eom_stream(mc);
			return;
		}
		if (eob)
			milter_eom_final(mc, p->cmd == SMFIR_ACCEPT ? FMX_ACCEPT :
			    FMX_CONTINUE, p->cmd == SMFIR_ACCEPT ? "accept" : "continue",
			    NULL);
		else
			milter_final(mc, FMX_CONTINUE, p->cmd == SMFIR_ACCEPT ?
			    "accept" : "continue", NULL);
		return;
	case SMFIR_SKIP:
		if (!milter_empty(mc, p))
			return;
		if (mc->awaiting != SMFIC_BODY) {
			milter_fail(mc, "skip outside the body");
			return;
		}
		mc->skip_body = 1;
		milter_eom_stream(mc);
		return;
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_SHUTDOWN:
	case SMFIR_DISCARD:
	case SMFIR_REPLYCODE: {
		enum fmx_verdict v;
		const char *result, *reply;

		if (p->cmd == SMFIR_REPLYCODE) {
			if (milter_reply_text(p->data, p->len, text, sizeof text) == -1) {
				milter_fail(mc, "invalid custom reply (4xx/5xx, "
				    "multi-line syntax, enhanced code class)");
				return;
			}
			v = text[0] == '5' ? FMX_REJECT : FMX_TEMPFAIL;
			result = text[0] == '5' ? "reject" : "tempfail";
			reply = text;
		} else {
			if (!milter_empty(mc, p))
				return;
			if (p->cmd == SMFIR_DISCARD && conn) {
				milter_fail(mc, "discard at connect or HELO");
				return;
			}
			v = p->cmd == SMFIR_REJECT ? FMX_REJECT :
			    p->cmd == SMFIR_DISCARD ? FMX_DISCARD : FMX_TEMPFAIL;
			result = p->cmd == SMFIR_REJECT ? "reject" :
			    p->cmd == SMFIR_DISCARD ? "discard" : "tempfail";
			reply = p->cmd == SMFIR_REJECT ? "550 5.7.1 Command rejected" :
			    p->cmd == SMFIR_TEMPFAIL ?
			    "451 4.7.1 Service unavailable - try again later" :
			    p->cmd == SMFIR_SHUTDOWN ?
			    "421 4.7.0 Server closing connection" : NULL;
		}
		if (mc->phase == FILTER_PH_EOM)
			milter_eom_final(mc, v, result, reply);
		else
			milter_final(mc, v, result, reply);
		return;
	}
	default: {
		char why[64];

		snprintf(why, sizeof why, "unknown reply code 0x%02x",
		    (unsigned char)p->cmd);
		milter_fail(mc, why);
		return;
	}
	}
}

static void
milter_optneg_reply(struct milter_conn *mc, const struct milter_pkt *p)
{
	struct milter_optneg o;
	const char *why = NULL;
	char msg[128];
	int i;

	evtimer_del(mc->timer);
	if (p->cmd != SMFIC_OPTNEG) {
		milter_fail(mc, "no OPTNEG answer");
		return;
	}
	if (milter_optneg_parse(p->data, p->len, &o, &why) == -1) {
		snprintf(msg, sizeof msg, "negotiation refused: %s", why);
		milter_fail(mc, msg);
		return;
	}
	mc->version = o.version;
	mc->actions = o.actions;
	/* Every NO and NR flag it sets counts, offered or not (rspamd, libmilter). */
	mc->flags = o.flags;
	for (i = 0; i < MILTER_ST_COUNT; i++) {
		mc->has_list[i] = o.has_list[i] && (o.actions & SMFIF_SETSYMLIST);
		if (mc->has_list[i])
			memcpy(mc->list[i], o.list[i], sizeof mc->list[i]);
	}
	mc->state = MS_IDLE;
	milter_send_connect(mc);
}

static void
milter_read_cb(struct bufferevent *bev, void *arg)
{
	struct milter_conn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct milter_pkt p;
	unsigned char *buf;
	size_t used, avail;
	int r;

	while (mc->state != MS_DEAD && (avail = evbuffer_get_length(in)) > 0) {
		buf = evbuffer_pullup(in, avail < 4 ? -1 : 4);
		if (buf == NULL)
			return;
		if (avail >= 4) {
			uint32_t n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
			    (uint32_t)buf[2] << 8 | buf[3];

			if (n == 0 || n > MILTER_PKT_MAX) {
				milter_fail(mc, "packet length 0 or over the bound");
				return;
			}
			if (avail < 4 + (size_t)n)
				return;
			buf = evbuffer_pullup(in, 4 + (ssize_t)n);
		}
		if ((r = milter_pkt_parse(buf, avail, &p, &used)) <= 0) {
			if (r < 0)
				milter_fail(mc, "malformed packet");
			return;
		}
		if (mc->state == MS_NEGOTIATING)
			milter_optneg_reply(mc, &p);
		else if (mc->state == MS_WAIT)
			milter_reply(mc, &p);
		else {
			milter_fail(mc, "reply nobody asked for");
			return;
		}
		if (mc->state != MS_DEAD)
			evbuffer_drain(in, used);
	}
}

/* ---- end of message: the message as the filters before left it ----------- */

static void
milter_fields_free(struct milter_field *f, size_t n, int own)
{
	size_t i;

	for (i = 0; own && i < n; i++) {
		free(f[i].name);
		free(f[i].value);
	}
	free(f);
}

static void
milter_view_free(struct milter_view *v)
{
	size_t i;

	milter_fields_free(v->orig, v->norig, 1);
	for (i = 0; i < v->n; i++) {
		free(v->f[i].name);
		free(v->f[i].value);
	}
	free(v->f);
	free(v->raw);
	memset(v, 0, sizeof *v);
}

/* Same test as the session's (smtp_data.c): "Name:" with blanks before ':'. */
static int
milter_header_start(const char *line, size_t len)
{
	size_t i, name = 0;

	for (i = 0; i < len; i++) {
		if (line[i] == ':')
			return name > 0;
		if (line[i] == ' ' || line[i] == '\t')
			continue;
		if ((unsigned char)line[i] < 33 || (unsigned char)line[i] > 126 ||
		    i > name)
			return 0;
		name++;
	}
	return 0;
}

static int
milter_view_add(struct milter_view *v, const char *name, const char *value,
    long orig, long edit)
{
	struct milter_field *nf;

	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 32;

		if ((nf = reallocarray(v->f, cap, sizeof *nf)) == NULL)
			return -1;
		v->f = nf;
		v->cap = cap;
	}
	nf = &v->f[v->n];
	nf->name = strdup(name);
	nf->value = strdup(value);
	if (nf->name == NULL || nf->value == NULL) {
		free(nf->name);
		free(nf->value);
		return -1;
	}
	nf->orig = orig;
	nf->edit = edit;
	v->n++;
	return 0;
}

/* " value" for a field an edit made (the session writes "Name: value"). */
static int
milter_view_add_edit(struct milter_view *v, const struct filter_edit *e,
    long orig, long edit)
{
	char *val;
	int r;

	if (asprintf(&val, " %s", e->value) == -1)
		return -1;
	r = milter_view_add(v, e->name, val, orig, edit);
	free(val);
	return r;
}

/* Parse the client's header block out of the message (as smtp_data.c does). */
static int
milter_view_parse(struct milter_conn *mc)
{
	struct milter_view *v = &mc->view;
	size_t cap = 0, off = 0, end, nf = 0, fcap = 0, *starts = NULL, *ns, from;
	size_t i, stop, nl;
	const char *line, *colon;
	long n;
	char *nb;

	/* Read until the end of the header block (bounded by the message). */
	for (;;) {
		if (v->rawlen + 65536 + 1 > cap) {
			cap = v->rawlen + 65536 + 1;
			if ((nb = realloc(v->raw, cap)) == NULL)
				return -1;
			v->raw = nb;
		}
		n = milter_api->msg_read(mc->h, v->rawlen, v->raw + v->rawlen, 65536);
		if (n < 0)
			return -1;
		/* Only the new octets (and the 3 before) can complete the blank line. */
		from = v->rawlen > 3 ? v->rawlen - 3 : 0;
		v->rawlen += (size_t)n;
		v->raw[v->rawlen] = '\0';
		if (n == 0 || memmem(v->raw + from, v->rawlen - from, "\r\n\r\n", 4) != NULL ||
		    (v->rawlen >= 2 && memcmp(v->raw, "\r\n", 2) == 0))
			break;
	}
	while (off < v->rawlen) {
		line = v->raw + off;
		for (end = off; end + 1 < v->rawlen &&
		    !(v->raw[end] == '\r' && v->raw[end + 1] == '\n'); end++)
			;
		if (end + 1 >= v->rawlen)
			break;		/* no CRLF: not a header line */
		if (end == off) {
			off = end + 2;	/* the blank line: the body follows */
			break;
		}
		if (line[0] == ' ' || line[0] == '\t') {
			if (nf == 0)
				break;
			off = end + 2;
			continue;	/* folded into the field before */
		}
		if (!milter_header_start(line, end - off))
			break;
		if (nf == fcap) {
			fcap = fcap ? fcap * 2 : 32;
			if ((ns = reallocarray(starts, fcap, sizeof *ns)) == NULL) {
				free(starts);
				return -1;
			}
			starts = ns;
		}
		starts[nf++] = off;
		off = end + 2;
	}
	v->body_off = off;
	if (nf > 0 && (v->orig = calloc(nf, sizeof *v->orig)) == NULL) {
		free(starts);
		return -1;
	}
	v->norig = nf;
	/* Each field from its start to the next one's (or the end of headers). */
	for (i = 0; i < nf; i++) {
		stop = i + 1 < nf ? starts[i + 1] : v->body_off;
		while (stop > starts[i] && (v->raw[stop - 1] == '\n' ||
		    v->raw[stop - 1] == '\r'))
			stop--;
		colon = memchr(v->raw + starts[i], ':', stop - starts[i]);
		for (nl = (size_t)(colon - (v->raw + starts[i])); nl > 0 &&
		    (v->raw[starts[i] + nl - 1] == ' ' ||
		    v->raw[starts[i] + nl - 1] == '\t'); nl--)
			;
		v->orig[i].orig = (long)i;
		v->orig[i].edit = -1;
		v->orig[i].name = strndup(v->raw + starts[i], nl);
		v->orig[i].value = strndup(colon + 1, (size_t)(v->raw + stop - colon - 1));
		if (v->orig[i].name == NULL || v->orig[i].value == NULL) {
			free(starts);
			return -1;
		}
	}
	free(starts);
	return 0;
}

/* The occurrence (1-based) of the client's field k among those named like it. */
static size_t
milter_occurrence(const struct milter_view *v, size_t k, const char *name)
{
	size_t j, occ = 0;

	for (j = 0; j <= k; j++)
		if (str_casecmp(v->orig[j].name, name) == 0)
			occ++;
	return occ;
}

/*
 * The fields as the session would write them (smtp_eom_build_head: the
 * inserts before each client field, the changes, the added fields at
 * the end), without our Received, Authentication-Results and tag.
 */
static int
milter_view_build(struct milter_conn *mc)
{
	struct filter_session *fs = mc->c->fs;
	struct milter_view *v = &mc->view;
	size_t k, e;
	long changed;

	for (e = 0; e < v->n; e++) {
		free(v->f[e].name);
		free(v->f[e].value);
	}
	v->n = 0;
	for (k = 0; k <= v->norig; k++) {
		for (e = 0; e < fs->nedits; e++)
			if (fs->edits[e].kind == FILTER_EDIT_INSERT && fs->edits[e].index == k &&
			    milter_view_add_edit(v, &fs->edits[e], -1, (long)e) == -1)
				return -1;
		if (k == v->norig)
			break;
		changed = -1;
		for (e = 0; e < fs->nedits && changed < 0; e++)
			if (fs->edits[e].kind == FILTER_EDIT_CHANGE &&
			    str_casecmp(fs->edits[e].name, v->orig[k].name) == 0 &&
			    milter_occurrence(v, k, fs->edits[e].name) == fs->edits[e].index)
				changed = (long)e;
		if (changed < 0) {
			if (milter_view_add(v, v->orig[k].name, v->orig[k].value,
			    (long)k, -1) == -1)
				return -1;
		} else if (fs->edits[changed].value != NULL &&
		    milter_view_add_edit(v, &fs->edits[changed], (long)k, changed) == -1)
			return -1;
	}
	for (e = 0; e < fs->nedits; e++)
		if (fs->edits[e].kind == FILTER_EDIT_ADD &&
		    milter_view_add_edit(v, &fs->edits[e], -1, (long)e) == -1)
			return -1;
	return 0;
}

/* Make room at position at of fs->edits (the order the session writes them). */
static struct filter_edit *
milter_edit_slot(struct filter_session *fs, size_t at)
{
	if (fs->nedits >= FILTER_EDITS_MAX)
		return NULL;
	memmove(&fs->edits[at + 1], &fs->edits[at],
	    (fs->nedits - at) * sizeof fs->edits[0]);
	fs->nedits++;
	memset(&fs->edits[at], 0, sizeof fs->edits[at]);
	return &fs->edits[at];
}

static int
milter_edit_new(struct filter_session *fs, size_t at, enum filter_edit_kind kind,
    const char *name, const char *value, size_t index)
{
	struct filter_edit *e;
	char *n = strdup(name), *val = value ? strdup(value) : NULL;

	if (n == NULL || (value != NULL && val == NULL) ||
	    (e = milter_edit_slot(fs, at)) == NULL) {
		free(n);
		free(val);
		return -1;
	}
	e->kind = kind;
	e->name = n;
	e->value = val;
	e->index = index;
	return 0;
}

/* One header edit of this milter, on the view it saw, as the chain's edits. */
static int
milter_apply_header(struct milter_conn *mc, const struct milter_edit *me,
    const char **why)
{
	struct filter_session *fs = mc->c->fs;
	struct milter_view *v = &mc->view;
	const struct milter_field *t;
	size_t i, want, seen = 0;
	int r = 0;

	*why = "too many header edits";
	if (me->cmd == SMFIR_ADDHEADER)
		r = milter_edit_new(fs, fs->nedits, FILTER_EDIT_ADD, me->a, me->b, 0);
	else if (me->cmd == SMFIR_INSHEADER) {
		/* Index 0 is the top; past the end is an add. */
		if (me->index >= v->n)
			return milter_edit_new(fs, fs->nedits, FILTER_EDIT_ADD, me->a,
			    me->b, 0) == -1 ? -1 : milter_view_build(mc);
		t = &v->f[me->index];
		if (t->orig >= 0 && (t->edit < 0 ||
		    fs->edits[t->edit].kind == FILTER_EDIT_CHANGE))
			r = milter_edit_new(fs, fs->nedits, FILTER_EDIT_INSERT, me->a,
			    me->b, (size_t)t->orig);
		else
			r = milter_edit_new(fs, (size_t)t->edit, fs->edits[t->edit].kind,
			    me->a, me->b, fs->edits[t->edit].index);
	} else {
		/* CHGHEADER: index 0 means 1; an empty value deletes. */
		want = me->index == 0 ? 1 : me->index;
		for (i = 0, t = NULL; i < v->n && t == NULL; i++)
			if (str_casecmp(v->f[i].name, me->a) == 0 && ++seen == want)
				t = &v->f[i];
		if (t == NULL)
			/* No such field: sendmail adds it, an empty value does nothing. */
			r = me->b[0] == '\0' ? 0 : milter_edit_new(fs, fs->nedits,
			    FILTER_EDIT_ADD, me->a, me->b, 0);
		else if (t->edit >= 0) {
			struct filter_edit *e = &fs->edits[t->edit];

			if (me->b[0] == '\0' && e->kind != FILTER_EDIT_CHANGE) {
				/* A field an edit added: the edit goes. */
				free(e->name);
				free(e->value);
				memmove(e, e + 1, (fs->nedits - (size_t)t->edit - 1) *
				    sizeof *e);
				fs->nedits--;
			} else {
				char *nv = me->b[0] ? strdup(me->b) : NULL;

				if (me->b[0] && nv == NULL)
					return -1;
				free(e->value);
				e->value = nv;
			}
		} else
			r = milter_edit_new(fs, fs->nedits, FILTER_EDIT_CHANGE,
			    v->orig[t->orig].name, me->b[0] ? me->b : NULL,
			    milter_occurrence(v, (size_t)t->orig, v->orig[t->orig].name));
	}
	if (r == -1)
		return -1;
	return milter_view_build(mc);
}

/* "<a@b>" or "a@b": the address, checked like the filter API's. */
static int
milter_addr(const char *in, char *out, size_t outlen)
{
	size_t len = strlen(in), i;

	if (len >= 2 && in[0] == '<' && in[len - 1] == '>') {
		in++;
		len -= 2;
	}
	if (len == 0 || len >= outlen || memchr(in, '@', len) == NULL)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)in[i] <= 0x20 || (unsigned char)in[i] >= 0x7f ||
		    in[i] == '<' || in[i] == '>')
			return -1;
	memcpy(out, in, len);
	out[len] = '\0';
	return 0;
}

/* ESMTP arguments: printable, no CR/LF, bounded; the session re-parses them. */
static int
milter_args_valid(const char *a)
{
	size_t i, len = a ? strlen(a) : 0;

	if (len > 512)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)a[i] < 0x20 || (unsigned char)a[i] > 0x7e)
			return -1;
	return 0;
}

/*
 * Whether this milter's edits fit in what the session still takes (header
 * edits, added and deleted recipients), counted before any is applied:
 * milter_apply() writes them into the session one by one, so running out
 * halfway would leave a half-edited message under on_error = accept.  Each
 * header edit counts as a new one (a change of a field an edit made reuses
 * that edit): at the limit this refuses a little early, never late.
 */
static int
milter_edits_fit(const struct milter_conn *mc)
{
	const struct filter_session *fs = mc->c->fs;
	size_t i, hdr = 0, add = 0, del = 0;

	for (i = 0; i < mc->nedits; i++) {
		switch (mc->edits[i].cmd) {
		case SMFIR_ADDHEADER: case SMFIR_INSHEADER: case SMFIR_CHGHEADER:
			hdr++;
			break;
		case SMFIR_ADDRCPT: case SMFIR_ADDRCPT_PAR:
			add++;
			break;
		case SMFIR_DELRCPT:
			del++;
			break;
		default:
			break;
		}
	}
	return fs->nedits + hdr <= FILTER_EDITS_MAX &&
	    fs->nadd_rcpts + add <= FILTER_RCPT_EDITS_MAX &&
	    fs->ndel_rcpts + del <= FILTER_RCPT_EDITS_MAX ? 0 : -1;
}

/* Apply this milter's edits in the order it sent them. */
static int
milter_apply(struct milter_conn *mc, const char **why)
{
	struct filter_session *fs = mc->c->fs;
	char addr[MILTER_ADDR_MAX];
	size_t i;

	if (milter_edits_fit(mc) == -1) {
		*why = "more header or recipient edits than a message takes";
		return -1;
	}
	if (mc->replbody) {
		if (milter_api->replace_body(mc->h, mc->body, mc->bodylen) == -1) {
			*why = "replacement body refused (bare CR or LF, NUL, "
			    "over-long line)";
			return -1;
		}
		return 0;
	}
	for (i = 0; i < mc->nedits; i++) {
		const struct milter_edit *me = &mc->edits[i];

		switch (me->cmd) {
		case SMFIR_ADDHEADER:
		case SMFIR_INSHEADER:
		case SMFIR_CHGHEADER:
			if (milter_apply_header(mc, me, why) == -1)
				return -1;
			break;
		case SMFIR_ADDRCPT:
		case SMFIR_ADDRCPT_PAR:
			*why = "invalid or too many added recipients";
			if (milter_addr(me->a, addr, sizeof addr) == -1 ||
			    milter_args_valid(me->b) == -1 ||
			    fs->nadd_rcpts >= FILTER_RCPT_EDITS_MAX)
				return -1;
			if ((fs->add_rcpts[fs->nadd_rcpts] = strdup(addr)) == NULL)
				return -1;
			fs->add_rcpt_args[fs->nadd_rcpts] = me->b && me->b[0] ?
			    strdup(me->b) : NULL;
			fs->nadd_rcpts++;
			break;
		case SMFIR_DELRCPT:
			*why = "invalid recipient deletion";
			if (milter_addr(me->a, addr, sizeof addr) == -1 ||
			    milter_api->del_rcpt(mc->h, addr) == -1)
				return -1;
			break;
		case SMFIR_CHGFROM:
			*why = "invalid sender change";
			if ((strcmp(me->a, "<>") != 0 &&
			    milter_addr(me->a, addr, sizeof addr) == -1) ||
			    milter_args_valid(me->b) == -1)
				return -1;
			if (strcmp(me->a, "<>") == 0)
				addr[0] = '\0';
			free(fs->chg_from);
			free(fs->chg_from_args);
			fs->chg_from = strdup(addr);
			fs->chg_from_args = me->b && me->b[0] ? strdup(me->b) : NULL;
			if (fs->chg_from == NULL)
				return -1;
			break;
		default:
			break;
		}
	}
	return 0;
}

/*
 * Stream the content: header fields, end of headers, body chunks, end of
 * body.  Runs again after each awaited reply and when the output drains.
 */
static void
milter_eom_stream(struct milter_conn *mc)
{
	struct milter_view *v = &mc->view;
	struct filter_session *fs = mc->c->fs;
	struct evbuffer *b;
	unsigned char chunk[MILTER_CHUNK];
	long n;
	size_t len;

	while (mc->state == MS_IDLE) {
		if (evbuffer_get_length(bufferevent_get_output(mc->bev)) > MILTER_OUT_HIGH) {
			/* milter_write_cb goes on; a milter that stops reading times out. */
			milter_timer_arm(mc, mc->mi->cf->milter_content);
			return;
		}
		switch (mc->eom) {
		case EOM_HDRS:
			if (v->hdr_i >= v->n || (mc->flags & SMFIP_NOHDRS)) {
				mc->eom = EOM_EOH;
				break;
			}
			{
				const struct milter_field *f = &v->f[v->hdr_i++];
				const char *val = f->value;
				size_t i;

				if (!(mc->flags & SMFIP_HDR_LEADSPC) && *val == ' ')
					val++;
				if ((b = evbuffer_new()) == NULL) {
					milter_fail(mc, "out of memory");
					return;
				}
				evbuffer_add(b, f->name, strlen(f->name) + 1);
				/* Multi-line fields are joined with LF (milter8_header). */
				for (i = 0; val[i] != '\0'; i++)
					if (!(val[i] == '\r' && val[i + 1] == '\n'))
						evbuffer_add(b, &val[i], 1);
				evbuffer_add(b, "", 1);
				milter_event(mc, -1, NULL, SMFIC_HEADER,
				    evbuffer_pullup(b, -1), evbuffer_get_length(b));
				evbuffer_free(b);
			}
			break;
		case EOM_EOH:
			mc->eom = EOM_BODY;
			milter_event(mc, MILTER_ST_EOH, NULL, SMFIC_EOH, NULL, 0);
			break;
		case EOM_BODY:
			if (mc->skip_body || (mc->flags & SMFIP_NOBODY)) {
				mc->eom = EOM_EOB;
				break;
			}
			if (fs->body != NULL) {
				len = fs->bodylen - v->body_pos < MILTER_CHUNK ?
				    fs->bodylen - v->body_pos : MILTER_CHUNK;
				memcpy(chunk, fs->body + v->body_pos, len);
			} else {
				n = milter_api->msg_read(mc->h, v->body_off + v->body_pos,
				    chunk, MILTER_CHUNK);
				if (n < 0) {
					milter_fail(mc, "cannot read the message");
					return;
				}
				len = (size_t)n;
			}
			if (len == 0) {
				mc->eom = EOM_EOB;
				break;
			}
			v->body_pos += len;
			milter_event(mc, -1, NULL, SMFIC_BODY, chunk, len);
			break;
		case EOM_EOB:
			/* The last chunk went as its own BODY; EOB is empty (PMilter). */
			mc->eom = EOM_WAIT;
			milter_send_macros(mc, MILTER_ST_EOM, NULL);
			milter_send(mc, SMFIC_BODYEOB, NULL, 0);
			mc->awaiting = SMFIC_BODYEOB;
			mc->state = MS_WAIT;
			milter_timer_arm(mc, mc->mi->cf->milter_content);
			return;
		case EOM_WAIT:
			return;
		}
	}
}

/* ---- hooks ------------------------------------------------------------------ */

/* The session's milter connection, or why the hook answers at once. */
static struct milter_conn *
milter_conn_get(struct fmx_ctx *h, enum fmx_verdict *v)
{
	struct milter_conn *mc = milter_api->conn_data(h);

	*v = FMX_CONTINUE;
	if (mc == NULL || mc->state == MS_DEAD) {
		/* Failed earlier: on_error (the chain sees c->failed). */
		struct fmx_ctx *c = filter_api_ctx(h);

		if (c != NULL && (mc == NULL || !mc->ok))
			c->failed = 1;
		*v = FMX_TEMPFAIL;
		return NULL;
	}
	if (mc->conn_done)
		return NULL;
	if (mc->state != MS_IDLE) {
		/* A reply still owed: the stream is out of step. */
		milter_fail(mc, "event while a reply is still owed");
		mc->c->failed = 1;
		*v = FMX_TEMPFAIL;
		return NULL;
	}
	return mc;
}

static enum fmx_verdict
milter_pending(struct milter_conn *mc, enum filter_phase phase, int awaited)
{
	mc->phase = phase;
	if (!awaited)
		return FMX_CONTINUE;
	mc->pending = 1;
	return FMX_PENDING;
}

static void
milter_conn_free(void *arg)
{
	struct milter_conn *mc = arg;
	unsigned char quit[5];

	if (mc->state != MS_DEAD && mc->bev != NULL &&
	    evbuffer_get_length(bufferevent_get_output(mc->bev)) == 0 &&
	    mc->state != MS_CONNECTING && mc->state != MS_NEGOTIATING) {
		/* QUIT at the end of the session: 5 octets, never waited for. */
		milter_pkt_head(quit, SMFIC_QUIT, 0);
		(void)send(bufferevent_getfd(mc->bev), quit, sizeof quit,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	if (mc->ok && mc->state != MS_DEAD && mc->state != MS_CONNECTING &&
	    mc->state != MS_NEGOTIATING)
		milter_breaker_success(mc);
	else if (mc->trial)
		atomic_store(&mc->mi->trial, 0);	/* never judged: let another try */
	milter_edits_free(mc);
	milter_view_free(&mc->view);
	milter_close(mc);
	if (mc->timer != NULL)
		event_free(mc->timer);
	free(mc);
}

static enum fmx_verdict
milter_on_connect(void *inst, struct fmx_ctx *h)
{
	struct milter_conn *mc;
	struct fmx_ctx *c = filter_api_ctx(h);

	if (c == NULL || (mc = calloc(1, sizeof *mc)) == NULL)
		return FMX_TEMPFAIL;
	mc->mi = inst;
	mc->h = h;
	mc->c = c;
	mc->ok = 1;
	mc->state = MS_DEAD;
	milter_api->set_conn_data(h, mc, milter_conn_free);
	if (!milter_breaker_allow(mc)) {
		mc->ok = 0;
		c->failed = 1;
		metrics_inc(METRIC_FILTER_ERRORS, mc->mi->cf->name, "circuit-open");
		log_info("%016llx filter=%s milter %s skipped: circuit breaker open",
		    c->fs->session_id, mc->mi->cf->name, mc->mi->cf->milter);
		return FMX_TEMPFAIL;
	}
	mc->phase = FILTER_PH_CONNECT;
	mc->pending = 1;
	if (milter_connect(mc, c->fs->base) == -1) {
		mc->pending = 0;
		mc->state = MS_CONNECTING;
		milter_fail(mc, "cannot connect");
		c->failed = 1;
		return FMX_TEMPFAIL;
	}
	return FMX_PENDING;
}

static enum fmx_verdict
milter_on_helo(void *inst, struct fmx_ctx *h, const char *helo)
{
	struct milter_conn *mc;
	enum fmx_verdict v;

	(void)inst;
	if ((mc = milter_conn_get(h, &v)) == NULL)
		return v;
	mc->phase = FILTER_PH_HELO;
	return milter_pending(mc, FILTER_PH_HELO, milter_event(mc, MILTER_ST_HELO,
	    NULL, SMFIC_HELO, helo, strlen(helo) + 1));
}

static enum fmx_verdict
milter_on_mail(void *inst, struct fmx_ctx *h, const char *from)
{
	struct milter_conn *mc;
	enum fmx_verdict v;
	int awaited;

	(void)inst;
	if ((mc = milter_conn_get(h, &v)) == NULL)
		return v;
	/* ABORT between messages (Postfix sends it after every message). */
	if (mc->msg_started)
		milter_send(mc, SMFIC_ABORT, NULL, 0);
	mc->msg_started = 1;
	mc->msg_done = 0;
	mc->skip_body = 0;
	mc->quarantine = 0;
	mc->phase = FILTER_PH_MAIL;
	milter_send_path(mc, MILTER_ST_MAIL, SMFIC_MAIL, from,
	    mc->c->fs->facts->mail_args, &awaited);
	return milter_pending(mc, FILTER_PH_MAIL, awaited);
}

static enum fmx_verdict
milter_on_rcpt(void *inst, struct fmx_ctx *h, const char *rcpt)
{
	struct milter_conn *mc;
	enum fmx_verdict v;
	int awaited;

	(void)inst;
	if ((mc = milter_conn_get(h, &v)) == NULL || mc->msg_done)
		return mc ? FMX_CONTINUE : v;
	mc->phase = FILTER_PH_RCPT;
	milter_send_path(mc, MILTER_ST_RCPT, SMFIC_RCPT, rcpt,
	    mc->c->fs->facts->rcpt_args, &awaited);
	return milter_pending(mc, FILTER_PH_RCPT, awaited);
}

static enum fmx_verdict
milter_on_data(void *inst, struct fmx_ctx *h)
{
	struct milter_conn *mc;
	enum fmx_verdict v;

	(void)inst;
	if ((mc = milter_conn_get(h, &v)) == NULL || mc->msg_done)
		return mc ? FMX_CONTINUE : v;
	mc->phase = FILTER_PH_DATA;
	return milter_pending(mc, FILTER_PH_DATA, milter_event(mc, MILTER_ST_DATA,
	    NULL, SMFIC_DATA, NULL, 0));
}

static enum fmx_verdict
milter_on_eom(void *inst, struct fmx_ctx *h)
{
	struct milter_conn *mc;
	enum fmx_verdict v;

	(void)inst;
	if ((mc = milter_conn_get(h, &v)) == NULL)
		return v;
	if (mc->msg_done)
		return mc->quarantine ? FMX_QUARANTINE : FMX_CONTINUE;
	mc->phase = FILTER_PH_EOM;
	milter_view_free(&mc->view);
	if (milter_view_parse(mc) == -1 || milter_view_build(mc) == -1) {
		milter_view_free(&mc->view);
		milter_fail(mc, "cannot read the message");
		mc->c->failed = 1;
		return FMX_TEMPFAIL;
	}
	mc->eom = EOM_HDRS;
	mc->pending = 1;
	milter_eom_stream(mc);
	if (mc->state == MS_DEAD) {
		/* Failed inside the hook (its resume was taken as the answer). */
		return FMX_PENDING;
	}
	return FMX_PENDING;
}

static void
milter_on_abort(void *inst, struct fmx_ctx *h)
{
	struct milter_conn *mc = milter_api->conn_data(h);

	(void)inst;
	if (mc == NULL || mc->state != MS_IDLE || !mc->msg_started)
		return;
	milter_send(mc, SMFIC_ABORT, NULL, 0);
	mc->msg_started = 0;
	mc->msg_done = 0;
}

static const struct fmx_filter milter_ops = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "milter",
	.on_connect = milter_on_connect,
	.on_helo = milter_on_helo,
	.on_mail = milter_on_mail,
	.on_rcpt = milter_on_rcpt,
	.on_data = milter_on_data,
	.on_eom = milter_on_eom,
	.on_abort = milter_on_abort,
	.fini = milter_inst_free,
};

const struct fmx_filter *
milter_filter(void)
{
	return &milter_ops;
}

void *
milter_inst_new(const struct config_filter *cf)
{
	struct milter_inst *mi = calloc(1, sizeof *mi);

	if (mi != NULL)
		mi->cf = cf;
	return mi;
}

void
milter_inst_free(void *inst)
{
	free(inst);
}
