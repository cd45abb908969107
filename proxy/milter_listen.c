/*
 * milter_listen.c - frontmx's filter chain and policy served as a milter
 *
 * DESCRIPTION
 *	A front end of the filter chain, like the SMTP session: an MTA
 *	(Postfix's smtpd_milters) connects to milter.listen, libmilter speaks
 *	the protocol, and each connection runs the configured chain and
 *	policy with the facts the MTA's macros give (client address and
 *	name, HELO, AUTH identity, TLS, queue id).  The answers go back as
 *	milter replies: reject and tempfail with the policy's SMTP reply
 *	(smfi_setreply), discard, quarantine (smfi_quarantine: Postfix's hold
 *	queue), and at end of message the chain's edits: our
 *	Authentication-Results, the tag, DKIM-Signature, Received-SPF and
 *	every filter's header, recipient and body edit, forged
 *	Authentication-Results removed (smfi_chgheader).
 *
 * THREADS
 *	libmilter calls us on its own threads, one per MTA connection, one
 *	callback at a time.  Filters run on event loops only (their DNS, timers
 *	and resume() live there), so a callback never runs one: it posts a
 *	request to the milter loop (mlisten.base, its own thread, made
 *	active with event_active(), thread-safe since evthread_use_pthreads())
 *	and waits on the connection's condition variable for the answer.
 *	The loop never blocks: it starts the chain's phase and answers when
 *	the chain calls back.  The wait is bounded by milter.timeout; what
 *	bounds the chain are the filters' own timeouts.  During end of
 *	message the waiting thread sends SMFIR_PROGRESS every
 *	MLISTEN_PROGRESS seconds so the MTA's content timeout does not fire
 *	while the chain is within its own.
 *
 *	The message itself (header fields rebuilt as the client wrote them,
 *	the body) goes into a spool by the libmilter thread between
 *	requests, while the loop holds nothing of the connection; at end of
 *	message the loop replays it to the chain exactly as the SMTP session
 *	does (smtp_eom.c): header by header, end of header, 64 KiB body
 *	chunks, eom, and api->msg_read() reads the raw bytes (DKIM).  The
 *	edits are computed on the loop into a list of operations and applied
 *	by the libmilter thread, the only one allowed to call smfi_* edits.
 *
 *	Ownership: a connection is freed on the loop, by the CLOSE request
 *	libmilter's close callback posts, or by the answer of a request that
 *	was still running when the MTA went away (closing).  A callback whose
 *	wait ran out leaves its request with the loop (busy stays set) and
 *	every later callback of that connection answers tempfail at once.
 *
 * SIGNALS
 *	smfi_main() starts a thread that sigwait()s for SIGHUP, SIGTERM and
 *	SIGINT and stops the milter on any of them.  In frontmx the main
 *	thread takes those signals (main.c: reload, drain), and Linux hands
 *	a signal to whichever thread waits for it, so libmilter's thread
 *	would steal a SIGHUP and stop serving.  sigwait() below is ours:
 *	the main thread gets the real one (sigwaitinfo), any other caller -
 *	only libmilter's signal thread calls it - is parked for the life of
 *	the process.  SIGTERM stops libmilter with smfi_stop() instead.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <event2/event.h>
#include <libmilter/mfapi.h>

#include "config.h"
#include "dns.h"
#include "filter_chain.h"
#include "log.h"
#include "milter_listen.h"
#include "policy.h"
#include "runtime.h"
#include "smtp_parse.h"
#include "spool.h"
#include "strutil.h"
#include "worker.h"

#define MLISTEN_NAME		"frontmx"
#define MLISTEN_PROGRESS	10	/* seconds between SMFIR_PROGRESS at eom */
#define MLISTEN_BODY_CHUNK	65536	/* body bytes per on_body call (API promise) */
#define MLISTEN_REPLACE_CHUNK	65535	/* libmilter's largest SMFIR_REPLBODY */
#define MLISTEN_ARG_MAX		1024	/* HELO name or address a request carries */
#define MLISTEN_HEADERS_MAX	10000	/* header fields per message */
#define MLISTEN_AR_MAX		8192	/* our Authentication-Results field */
/* The tempfail texts the MTA relays when the chain cannot answer (one copy each). */
#define MLISTEN_REPLY_UNAVAILABLE "451 4.3.0 Error: filter unavailable, try again later"
#define MLISTEN_REPLY_LOCAL	"451 4.3.0 Error: local error, try again later"

enum mlisten_req {
	MLISTEN_REQ_NONE = 0,
	MLISTEN_REQ_CONNECT,
	MLISTEN_REQ_HELO,
	MLISTEN_REQ_MAIL,
	MLISTEN_REQ_RCPT,
	MLISTEN_REQ_DATA,
	MLISTEN_REQ_EOM,
	MLISTEN_REQ_ABORT,
	MLISTEN_REQ_CLOSE,
	MLISTEN_REQ_COUNT	/* must be last */
};

/* One edit for the MTA: computed on the loop, applied in xxfi_eom. */
enum mlisten_op_kind {
	MLISTEN_OP_ADDHDR = 0,
	MLISTEN_OP_INSHDR,
	MLISTEN_OP_CHGHDR,	/* value NULL deletes */
	MLISTEN_OP_ADDRCPT,
	MLISTEN_OP_DELRCPT,
	MLISTEN_OP_BODY,
	MLISTEN_OP_QUARANTINE,
	MLISTEN_OP_KIND_COUNT	/* must be last */
};

struct mlisten_op {
	enum mlisten_op_kind	 kind;
	int			 index;
	char			*name;		/* header name, address, reason */
	char			*value;		/* header value as sent, or the body */
	size_t			 len;		/* body length */
};

/* One header field of the spooled message. */
struct mlisten_hdr {
	size_t	off;
	size_t	len;		/* with folds and the final CRLF */
};

struct mlisten_conn {
	/* Shared by the libmilter thread and the loop: under lock. */
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	enum mlisten_req	 req;
	int			 busy;		/* req is with the loop */
	int			 closing;	/* libmilter is done: free when idle */
	int			 broken;	/* a wait ran out: tempfail from now on */
	char			 arg[MLISTEN_ARG_MAX];
	sfsistat		 status;	/* the answer */
	char			 reply[FILTER_REPLY_MAX];	/* "" libmilter's default */
	struct mlisten_op	*ops;		/* eom edits, for the libmilter thread */
	size_t			 nops;
	TAILQ_ENTRY(mlisten_conn) entry;	/* mlisten.conns, under mlisten.lock */

	/* Set by the libmilter thread before a request, read by the loop. */
	int			 leadspc;	/* SMFIP_HDR_LEADSPC negotiated */
	char			 addr[INET6_ADDRSTRLEN];
	unsigned		 port;
	char			 name[256];
	char			 helo[256];
	char			 tls[160];
	char			 auth[256];
	char			 qid[64];

	/* The loop's. */
	unsigned long long	 id;
	struct event		*ev;
	struct runtime		*rt;
	struct config		*cfg;
	struct filter_session	*fs;
	struct filter_facts	 facts;
	const char		*what;		/* the phase running, for default replies */
	unsigned long		 messages;
	/* The transaction. */
	int			 in_tx;
	int			 data_done;	/* the DATA phase ran */
	char			*mail_from;
	char			**rcpts;
	size_t			 nrcpts;
	const struct config_policy *policy;
	/* The message: the libmilter thread writes it between requests. */
	struct spool		 spool;
	struct mlisten_hdr	*hdrs;
	size_t			 nhdrs;
	size_t			 hdrcap;
	size_t			 eoh_off;
	int			 eoh_seen;
	size_t			 header_bytes;
	int			 too_big;	/* 1 header, 2 message */
	/* Replay to the chain at eom. */
	enum filter_phase	 running;	/* the phase with the chain */
	const struct config_policy *pending_policy;	/* of the RCPT running */
	size_t			 replay_i;
	size_t			 replay_off;
	int			 replay_eoh;
	int			 in_replay;
	int			 replay_again;
	char			*replay_buf;
};

static struct {
	pthread_mutex_t			 lock;
	TAILQ_HEAD(, mlisten_conn)	 conns;
	size_t				 nconns;
	struct event_base		*base;
	pthread_t			 loop_thread;
	pthread_t			 main_thread;	/* smfi_main() */
	int				 started;
	char				*listen;	/* as configured at start */
	struct sockaddr_storage		 poke;		/* the listen address, to wake libmilter */
	socklen_t			 pokelen;
	unsigned			 timeout;
	atomic_int			 stopping;
} mlisten = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.conns = TAILQ_HEAD_INITIALIZER(mlisten.conns),
};

static atomic_ullong mlisten_seq;

static void	mlisten_replay_step(struct mlisten_conn *c);
static void	mlisten_dispatch(evutil_socket_t fd, short what, void *arg);

/* ---- signals: see SIGNALS above ---------------------------------------- */

int
sigwait(const sigset_t *set, int *sig)
{
	siginfo_t info;
	int r;

	if (gettid() != getpid()) {
		/* libmilter's signal thread: never a signal for it. */
		for (;;)
			pause();
	}
	while ((r = sigwaitinfo(set, &info)) == -1 && errno == EINTR)
		;
	if (r == -1)
		return errno;
	*sig = r;
	return 0;
}

/* ---- the libmilter side: post a request, wait for its answer ------------ */

/*
 * A reply the chain validated ("550 5.7.1 text", lines separated by
 * '\n') as libmilter wants it: code, enhanced code, text lines, each
 * '%' doubled (the MTA formats the text).  -1 if it does not parse.
 */
static int
mlisten_setreply(SMFICTX *ctx, const char *reply)
{
	char code[4], xcode[32], lines[32][520], *l[32];
	const char *p = reply, *nl, *t;
	size_t n = 0, len, i, o;

	if (filter_reply_valid(reply, 0) == -1)
		return -1;
	memcpy(code, reply, 3);
	code[3] = '\0';
	xcode[0] = '\0';
	memset(l, 0, sizeof l);
	while (n < 32) {
		nl = strchr(p, '\n');
		len = nl ? (size_t)(nl - p) : strlen(p);
		t = p + (len > 3 ? 4 : 3);
		/* The enhanced code of the first line, if it has one, for all. */
		if (n == 0 && t < p + len && t[0] >= '2' && t[0] <= '5' &&
		    t[1] == '.') {
			size_t x = strcspn(t, " \n");

			if (x < sizeof xcode && t + x <= p + len) {
				memcpy(xcode, t, x);
				xcode[x] = '\0';
			}
		}
		if (xcode[0] != '\0' && strncmp(t, xcode, strlen(xcode)) == 0) {
			t += strlen(xcode);
			while (*t == ' ')
				t++;
		}
		for (i = 0, o = 0; t + i < p + len && o + 2 < sizeof lines[n]; i++) {
			if (t[i] == '%')
				lines[n][o++] = '%';
			lines[n][o++] = t[i];
		}
		lines[n][o] = '\0';
		l[n] = lines[n];
		n++;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	if (n == 1)
		return smfi_setreply(ctx, code, xcode[0] ? xcode : NULL,
		    lines[0]) == MI_SUCCESS ? 0 : -1;
	/* smfi_setmlreply takes at most 32 lines, NULL-terminated. */
	return smfi_setmlreply(ctx, code, xcode[0] ? xcode : NULL, l[0], l[1],
	    l[2], l[3], l[4], l[5], l[6], l[7], l[8], l[9], l[10], l[11], l[12],
	    l[13], l[14], l[15], l[16], l[17], l[18], l[19], l[20], l[21], l[22],
	    l[23], l[24], l[25], l[26], l[27], l[28], l[29], l[30],
	    (char *)NULL) == MI_SUCCESS ? 0 : -1;
}

static sfsistat
mlisten_tempfail(SMFICTX *ctx, const char *why)
{
	mlisten_setreply(ctx, why);
	return SMFIS_TEMPFAIL;
}

static void
mlisten_ops_free(struct mlisten_op *ops, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(ops[i].name);
		free(ops[i].value);
	}
	free(ops);
}

/*
 * Hand req to the loop and wait for its answer, at most milter.timeout
 * seconds.  The caller set the request's facts under no lock: the loop
 * reads them only after event_active(), which orders the two.
 */
static sfsistat
mlisten_call(SMFICTX *ctx, struct mlisten_conn *c, enum mlisten_req req)
{
	struct timespec now, deadline, tick;
	sfsistat st;
	char reply[FILTER_REPLY_MAX];

	pthread_mutex_lock(&c->lock);
	if (c->busy || c->broken || atomic_load(&mlisten.stopping) > 1) {
		pthread_mutex_unlock(&c->lock);
		return mlisten_tempfail(ctx, MLISTEN_REPLY_UNAVAILABLE);
	}
	c->req = req;
	c->busy = 1;
	c->status = SMFIS_TEMPFAIL;
	c->reply[0] = '\0';
	event_active(c->ev, EV_READ, 0);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += mlisten.timeout;
	while (c->busy) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec &&
		    now.tv_nsec >= deadline.tv_nsec)) {
			/* The loop keeps the request; it frees what it made. */
			c->broken = 1;
			pthread_mutex_unlock(&c->lock);
			log_warn("%016llx milter no answer from the filters in %us",
			    c->id, mlisten.timeout);
			return mlisten_tempfail(ctx, "451 4.3.0 Error: filter "
			    "timeout, try again later");
		}
		tick = now;
		tick.tv_sec += MLISTEN_PROGRESS;
		if (tick.tv_sec > deadline.tv_sec)
			tick = deadline;
		if (pthread_cond_timedwait(&c->cond, &c->lock, &tick) ==
		    ETIMEDOUT && c->busy && req == MLISTEN_REQ_EOM) {
			/* Not under the lock: it writes to the MTA. */
			pthread_mutex_unlock(&c->lock);
			smfi_progress(ctx);
			pthread_mutex_lock(&c->lock);
		}
	}
	st = c->status;
	snprintf(reply, sizeof reply, "%s", c->reply);
	pthread_mutex_unlock(&c->lock);
	if (reply[0] != '\0' && mlisten_setreply(ctx, reply) == -1)
		log_warn("%016llx milter reply not taken by libmilter", c->id);
	return st;
}

/* The connection of ctx, made at its first callback (negotiate or connect). */
static struct mlisten_conn *
mlisten_conn_get(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);
	pthread_condattr_t ca;

	if (c != NULL)
		return c;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return NULL;
	c->id = atomic_fetch_add(&mlisten_seq, 1) + 1 +
	    ((unsigned long long)time(NULL) << 24);
	if ((c->ev = event_new(mlisten.base, -1, 0, mlisten_dispatch, c)) == NULL) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	/* Empty and without a file until CONNECT sizes it: freeing it closes nothing. */
	spool_init(&c->spool, 0, NULL);
	snprintf(c->name, sizeof c->name, "unknown");
	snprintf(c->addr, sizeof c->addr, "0.0.0.0");
	pthread_mutex_lock(&mlisten.lock);
	TAILQ_INSERT_TAIL(&mlisten.conns, c, entry);
	mlisten.nconns++;
	pthread_mutex_unlock(&mlisten.lock);
	smfi_setpriv(ctx, c);
	return c;
}

/* A macro of the MTA's, bounded and printable, into buf ("" if none). */
static void
mlisten_macro(SMFICTX *ctx, const char *name, char *buf, size_t len)
{
	char n[64];
	const char *v;
	size_t i;

	snprintf(n, sizeof n, "%s", name);
	if ((v = smfi_getsymval(ctx, n)) == NULL)
		return;
	for (i = 0; v[i] != '\0' && i + 1 < len; i++)
		buf[i] = (v[i] < 0x20 || v[i] == 0x7f) ? '?' : v[i];
	buf[i] = '\0';
}

/* The queue id, once the MTA has one (Postfix: from the first RCPT). */
static void
mlisten_macro_qid(SMFICTX *ctx, struct mlisten_conn *c)
{
	char q[sizeof c->qid] = "";

	mlisten_macro(ctx, "i", q, sizeof q);
	if (q[0] != '\0')
		snprintf(c->qid, sizeof c->qid, "%s", q);
}

static void
mlisten_arg(struct mlisten_conn *c, const char *s)
{
	snprintf(c->arg, sizeof c->arg, "%s", s ? s : "");
}

/* ---- libmilter's callbacks ---------------------------------------------- */

/*
 * No request of c is with the loop (busy clear, none abandoned): the
 * libmilter thread may write the request's fields (arg, helo, qid, ...)
 * and the message spool, which the loop reads only during a request.
 */
static int
mlisten_idle(struct mlisten_conn *c)
{
	int idle;

	pthread_mutex_lock(&c->lock);
	idle = !c->busy && !c->broken;
	pthread_mutex_unlock(&c->lock);
	return idle;
}

static sfsistat
mlisten_busy(SMFICTX *ctx)
{
	return mlisten_tempfail(ctx, MLISTEN_REPLY_UNAVAILABLE);
}

static sfsistat
mlisten_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1,
    unsigned long f2, unsigned long f3, unsigned long *pf0,
    unsigned long *pf1, unsigned long *pf2, unsigned long *pf3)
{
	static const struct {
		int	 stage;
		char	 list[96];
	} macros[] = {
		{ SMFIM_CONNECT, "j {daemon_name} {client_addr} {client_port} {client_name}" },
		{ SMFIM_HELO, "{tls_version} {cipher} {cert_subject}" },
		{ SMFIM_ENVFROM, "i {auth_type} {auth_authen}" },
		{ SMFIM_ENVRCPT, "i" },
		{ SMFIM_DATA, "i" },
		{ SMFIM_EOM, "i" },
	};
	struct mlisten_conn *c;
	char list[96];
	size_t i;

	(void)f2;
	(void)f3;
	if ((c = mlisten_conn_get(ctx)) == NULL)
		return SMFIS_REJECT;
	*pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY |
	    SMFIF_ADDRCPT | SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_SETSYMLIST);
	/* Header values as the client wrote them, leading space included. */
	*pf1 = f1 & SMFIP_HDR_LEADSPC;
	*pf2 = 0;
	*pf3 = 0;
	c->leadspc = (*pf1 & SMFIP_HDR_LEADSPC) != 0;
	if (*pf0 & SMFIF_SETSYMLIST)
		for (i = 0; i < sizeof macros / sizeof macros[0]; i++) {
			snprintf(list, sizeof list, "%s", macros[i].list);
			if (smfi_setsymlist(ctx, macros[i].stage, list) != MI_SUCCESS)
				log_warn("%016llx milter setsymlist refused", c->id);
		}
	return SMFIS_CONTINUE;
}

static sfsistat
mlisten_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *sa)
{
	struct mlisten_conn *c;
	char port[16] = "";

	if ((c = mlisten_conn_get(ctx)) == NULL)
		return mlisten_tempfail(ctx, "451 4.3.0 Error: out of memory");
	/* Draining (SIGTERM): finish what runs, take nothing new. */
	if (atomic_load(&mlisten.stopping) > 0)
		return mlisten_tempfail(ctx, "421 4.3.2 Service shutting down");
	if (sa != NULL && sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(void *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, c->addr, sizeof c->addr);
		c->port = ntohs(s4->sin_port);
	} else if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(void *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, c->addr, sizeof c->addr);
		c->port = ntohs(s6->sin6_port);
	} else {
		/* A local (unix) client: the MTA may still say who it is. */
		mlisten_macro(ctx, "{client_addr}", c->addr, sizeof c->addr);
		mlisten_macro(ctx, "{client_port}", port, sizeof port);
		c->port = (unsigned)strtoul(port, NULL, 10) & 0xffff;
	}
	/* Postfix and Sendmail send "[addr]" for a client without a verified name. */
	if (hostname != NULL && hostname[0] != '\0' && hostname[0] != '[')
		snprintf(c->name, sizeof c->name, "%s", hostname);
	log_info("%016llx milter connect client=%s port=%u name=%s", c->id,
	    c->addr, c->port, c->name);
	return mlisten_call(ctx, c, MLISTEN_REQ_CONNECT);
}

static sfsistat
mlisten_helo(SMFICTX *ctx, char *helo)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);
	char version[64] = "", cipher[96] = "";

	if (c == NULL)
		return SMFIS_TEMPFAIL;
	if (!mlisten_idle(c))
		return mlisten_busy(ctx);
	snprintf(c->helo, sizeof c->helo, "%s", helo ? helo : "");
	mlisten_macro(ctx, "{tls_version}", version, sizeof version);
	mlisten_macro(ctx, "{cipher}", cipher, sizeof cipher);
	/* The session's form: "TLSv1.3 TLS_AES_256_GCM_SHA384". */
	if (version[0] != '\0')
		snprintf(c->tls, sizeof c->tls, "%s%s%s", version,
		    cipher[0] ? " " : "", cipher);
	else
		c->tls[0] = '\0';
	mlisten_arg(c, helo);
	return mlisten_call(ctx, c, MLISTEN_REQ_HELO);
}

/* "<a@b>" or "a@b" as the MTA gave it: the address without its brackets. */
static void
mlisten_path(struct mlisten_conn *c, const char *a)
{
	size_t n;

	if (a == NULL)
		a = "";
	if (a[0] == '<')
		a++;
	n = strcspn(a, ">");
	if (n >= sizeof c->arg)
		n = sizeof c->arg - 1;
	memcpy(c->arg, a, n);
	c->arg[n] = '\0';
}

static sfsistat
mlisten_envfrom(SMFICTX *ctx, char **argv)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_TEMPFAIL;
	if (!mlisten_idle(c))
		return mlisten_busy(ctx);
	c->auth[0] = '\0';
	mlisten_macro(ctx, "{auth_authen}", c->auth, sizeof c->auth);
	c->qid[0] = '\0';
	mlisten_macro_qid(ctx, c);
	mlisten_path(c, argv != NULL ? argv[0] : NULL);
	return mlisten_call(ctx, c, MLISTEN_REQ_MAIL);
}

static sfsistat
mlisten_envrcpt(SMFICTX *ctx, char **argv)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_TEMPFAIL;
	if (!mlisten_idle(c))
		return mlisten_busy(ctx);
	mlisten_macro_qid(ctx, c);
	mlisten_path(c, argv != NULL ? argv[0] : NULL);
	return mlisten_call(ctx, c, MLISTEN_REQ_RCPT);
}

static sfsistat
mlisten_data(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_TEMPFAIL;
	if (!mlisten_idle(c))
		return mlisten_busy(ctx);
	mlisten_macro_qid(ctx, c);
	return mlisten_call(ctx, c, MLISTEN_REQ_DATA);
}


static sfsistat
mlisten_too_big(SMFICTX *ctx, struct mlisten_conn *c, int what)
{
	c->too_big = what;
	log_info("%016llx milter refused=message reason=%s", c->id,
	    what == 1 ? "header-size" : "message-size");
	mlisten_setreply(ctx, what == 1 ?
	    "552 5.3.4 Error: message header too large" :
	    "552 5.3.4 Error: message too large");
	return SMFIS_REJECT;
}

/*
 * Append to the spool what the client wrote, bare LF (the MTA's folds)
 * as CRLF: the chain and DKIM see the field as it was on the wire.
 */
static int
mlisten_spool_crlf(struct mlisten_conn *c, const char *p, size_t len)
{
	size_t i, start = 0;

	for (i = 0; i < len; i++)
		if (p[i] == '\n' && (i == 0 || p[i - 1] != '\r')) {
			if (spool_append(&c->spool, p + start, i - start) == -1 ||
			    spool_append(&c->spool, "\r\n", 2) == -1)
				return -1;
			start = i + 1;
		}
	return spool_append(&c->spool, p + start, len - start);
}

static sfsistat
mlisten_header(SMFICTX *ctx, char *name, char *value)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);
	struct mlisten_hdr *h;
	const char *v = value != NULL ? value : "";
	size_t off;

	if (c == NULL || c->cfg == NULL || !mlisten_idle(c))
		return mlisten_tempfail(ctx, MLISTEN_REPLY_UNAVAILABLE);
	if (c->too_big)
		return SMFIS_REJECT;
	if (name == NULL || name[0] == '\0' || strpbrk(name, ": \t\r\n") != NULL)
		return mlisten_tempfail(ctx, "451 4.3.0 Error: malformed "
		    "header field from the MTA");
	/*
	 * A fold is LF (or CRLF) and white space; a CR alone is no line end
	 * here either (SECURITY.md 1), and would reach the MTA again in an
	 * edited field (the tagged Subject).
	 */
	for (size_t i = 0; v[i] != '\0'; i++)
		if ((v[i] == '\r' && v[i + 1] != '\n') ||
		    (v[i] == '\n' && v[i + 1] != ' ' && v[i + 1] != '\t')) {
			log_info("%016llx milter refused=message reason=bare-eol "
			    "header=%.64s", c->id, name);
			mlisten_setreply(ctx, "550 5.5.2 Error: bare CR or LF in "
			    "a header field");
			return SMFIS_REJECT;
		}
	c->header_bytes += strlen(name) + strlen(v) + 4;
	if (c->header_bytes > c->cfg->limits.header_size ||
	    c->nhdrs >= MLISTEN_HEADERS_MAX)
		return mlisten_too_big(ctx, c, 1);
	if (c->nhdrs == c->hdrcap) {
		size_t cap = c->hdrcap ? c->hdrcap * 2 : 32;

		if ((h = reallocarray(c->hdrs, cap, sizeof *h)) == NULL)
			return mlisten_tempfail(ctx, "451 4.3.0 Error: out of memory");
		c->hdrs = h;
		c->hdrcap = cap;
	}
	off = c->spool.size;
	/* Without SMFIP_HDR_LEADSPC the MTA took one space after the colon. */
	if (spool_append(&c->spool, name, strlen(name)) == -1 ||
	    spool_append(&c->spool, c->leadspc ? ":" : ": ", c->leadspc ? 1 : 2) == -1 ||
	    mlisten_spool_crlf(c, v, strlen(v)) == -1 ||
	    spool_append(&c->spool, "\r\n", 2) == -1)
		return mlisten_tempfail(ctx, MLISTEN_REPLY_LOCAL);
	c->hdrs[c->nhdrs].off = off;
	c->hdrs[c->nhdrs].len = c->spool.size - off;
	c->nhdrs++;
	return SMFIS_CONTINUE;
}

static sfsistat
mlisten_eoh(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL || !mlisten_idle(c))
		return SMFIS_TEMPFAIL;
	if (c->eoh_seen)
		return SMFIS_CONTINUE;
	c->eoh_seen = 1;
	c->eoh_off = c->spool.size;
	if (spool_append(&c->spool, "\r\n", 2) == -1)
		return mlisten_tempfail(ctx, MLISTEN_REPLY_LOCAL);
	return SMFIS_CONTINUE;
}

static sfsistat
mlisten_body(SMFICTX *ctx, unsigned char *p, size_t len)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL || c->cfg == NULL || !mlisten_idle(c))
		return SMFIS_TEMPFAIL;
	if (c->too_big)
		return SMFIS_REJECT;
	if (!c->eoh_seen && mlisten_eoh(ctx) != SMFIS_CONTINUE)
		return SMFIS_TEMPFAIL;
	if (c->spool.size + len > c->cfg->limits.message_size)
		return mlisten_too_big(ctx, c, 2);
	if (spool_append(&c->spool, p, len) == -1)
		return mlisten_tempfail(ctx, MLISTEN_REPLY_LOCAL);
	return SMFIS_CONTINUE;
}

/* The chain's edits, in the order the loop listed them (mlisten_decide). */
static sfsistat
mlisten_apply(SMFICTX *ctx, struct mlisten_conn *c, sfsistat st)
{
	struct mlisten_op *ops = c->ops;
	size_t n = c->nops, i, off, chunk;
	int r = MI_SUCCESS;

	c->ops = NULL;
	c->nops = 0;
	for (i = 0; i < n && r == MI_SUCCESS; i++) {
		struct mlisten_op *o = &ops[i];

		switch (o->kind) {
		case MLISTEN_OP_ADDHDR:
			r = smfi_addheader(ctx, o->name, o->value);
			break;
		case MLISTEN_OP_INSHDR:
			r = smfi_insheader(ctx, o->index, o->name, o->value);
			break;
		case MLISTEN_OP_CHGHDR:
			r = smfi_chgheader(ctx, o->name, o->index, o->value);
			break;
		case MLISTEN_OP_ADDRCPT:
			r = smfi_addrcpt(ctx, o->name);
			break;
		case MLISTEN_OP_DELRCPT:
			r = smfi_delrcpt(ctx, o->name);
			break;
		case MLISTEN_OP_BODY:
			for (off = 0; r == MI_SUCCESS && (off < o->len || off == 0);
			    off += chunk) {
				chunk = o->len - off > MLISTEN_REPLACE_CHUNK ?
				    MLISTEN_REPLACE_CHUNK : o->len - off;
				r = smfi_replacebody(ctx, (unsigned char *)o->value + off,
				    (int)chunk);
				if (chunk == 0)
					break;
			}
			break;
		case MLISTEN_OP_QUARANTINE:
			r = smfi_quarantine(ctx, o->name);
			break;
		default:
			fatalx("mlisten_apply: bad op %d", o->kind);
		}
		if (r != MI_SUCCESS)
			log_warn("%016llx milter the MTA refused an edit (op %d %s): "
			    "was the action negotiated?", c->id, o->kind,
			    o->name ? o->name : "");
	}
	mlisten_ops_free(ops, n);
	/* An edit left out would relay what the chain did not decide. */
	if (r != MI_SUCCESS)
		return mlisten_tempfail(ctx, "451 4.3.0 Error: the MTA refused "
		    "a filter's edit, try again later");
	return st;
}

static sfsistat
mlisten_eom(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);
	sfsistat st;

	if (c == NULL || !mlisten_idle(c))
		return SMFIS_TEMPFAIL;
	if (c->too_big)
		return SMFIS_REJECT;
	if (!c->eoh_seen && mlisten_eoh(ctx) != SMFIS_CONTINUE)
		return SMFIS_TEMPFAIL;
	if (spool_flush(&c->spool) == -1)
		return mlisten_tempfail(ctx, MLISTEN_REPLY_LOCAL);
	mlisten_macro_qid(ctx, c);
	st = mlisten_call(ctx, c, MLISTEN_REQ_EOM);
	/* ops are ours once the loop answered (busy clear), none if it did not. */
	pthread_mutex_lock(&c->lock);
	if (c->busy) {
		pthread_mutex_unlock(&c->lock);
		return st;
	}
	pthread_mutex_unlock(&c->lock);
	return mlisten_apply(ctx, c, st);
}

static sfsistat
mlisten_abort(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	(void)mlisten_call(ctx, c, MLISTEN_REQ_ABORT);
	return SMFIS_CONTINUE;
}

/* The MTA is gone: the loop frees the connection once it holds no request. */
static sfsistat
mlisten_close(SMFICTX *ctx)
{
	struct mlisten_conn *c = smfi_getpriv(ctx);

	if (c == NULL)
		return SMFIS_CONTINUE;
	smfi_setpriv(ctx, NULL);
	pthread_mutex_lock(&c->lock);
	c->closing = 1;
	/* After a forced stop the loop is gone: the shell stays listed, reachable. */
	if (!c->busy && atomic_load(&mlisten.stopping) < 2) {
		c->req = MLISTEN_REQ_CLOSE;
		c->busy = 1;
		event_active(c->ev, EV_READ, 0);
	}
	pthread_mutex_unlock(&c->lock);
	return SMFIS_CONTINUE;
}

/* ---- the loop side -------------------------------------------------------- */

/* The answer to the request the loop holds; the libmilter thread wakes. */
static void
mlisten_answer(struct mlisten_conn *c, sfsistat st, const char *reply)
{
	pthread_mutex_lock(&c->lock);
	c->status = st;
	snprintf(c->reply, sizeof c->reply, "%s", reply != NULL ? reply : "");
	c->busy = 0;
	/*
	 * libmilter let go of it while we worked (a wait ran out, then the
	 * MTA closed): free it from the loop, never from inside a chain
	 * callback (the chain still holds its session here).
	 */
	if (c->closing) {
		c->req = MLISTEN_REQ_CLOSE;
		c->busy = 1;
		event_active(c->ev, EV_READ, 0);
	}
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

static long
mlisten_msg_read(void *arg, size_t off, void *buf, size_t len)
{
	struct mlisten_conn *c = arg;

	return (long)spool_read(&c->spool, (off_t)off, buf, len);
}

static void
mlisten_facts(struct mlisten_conn *c)
{
	struct filter_facts *f = &c->facts;

	f->session_id = c->id;
	f->client_addr = c->addr;
	f->client_port = c->port;
	f->client_name = c->name;
	f->helo = c->helo[0] ? c->helo : NULL;
	f->tls = c->tls[0] ? c->tls : NULL;
	f->auth = c->auth[0] ? c->auth : NULL;
	f->mail_from = c->in_tx ? c->mail_from : NULL;
	f->rcpts = c->in_tx ? (const char *const *)c->rcpts : NULL;
	f->nrcpts = c->in_tx ? c->nrcpts : 0;
	f->queue_id = c->in_tx && c->qid[0] ? c->qid : NULL;
	f->policy = c->in_tx ? c->policy : NULL;
}

static void	mlisten_done(void *arg, const struct filter_result *res);

static void
mlisten_run(struct mlisten_conn *c, enum filter_phase ph, const char *what,
    const struct filter_args *a)
{
	static const struct filter_args none;

	c->running = ph;
	c->what = what;
	filter_session_run(c->fs, ph, a != NULL ? a : &none, mlisten_done, c);
}

/* One log line per message, whatever ended it (smtp_chat_log_message's form). */
static void
mlisten_log_message(struct mlisten_conn *c, const char *result,
    const char *why)
{
	char rcpts[1024];
	size_t i, used = 0;
	int n;

	rcpts[0] = '\0';
	for (i = 0; i < c->nrcpts && used < sizeof rcpts; i++) {
		n = snprintf(rcpts + used, sizeof rcpts - used, "%s<%s>",
		    i ? "," : "", c->rcpts[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	log_info("%016llx milter message id=%s client=%s from=<%s> to=%s "
	    "size=%zu result=%s%s%s", c->id, c->qid, c->addr,
	    c->mail_from ? c->mail_from : "", rcpts, c->spool.size, result,
	    why != NULL && why[0] ? " reason=" : "", why ? why : "");
}

/* The transaction is over: filters told (on_abort if aborted), state reset. */
static void
mlisten_tx_end(struct mlisten_conn *c, int aborted)
{
	size_t i;

	if (c->fs != NULL)
		filter_session_msg_end(c->fs, aborted && c->in_tx);
	if (c->in_tx)
		c->messages++;
	for (i = 0; i < c->nrcpts; i++)
		free(c->rcpts[i]);
	free(c->rcpts);
	c->rcpts = NULL;
	c->nrcpts = 0;
	free(c->mail_from);
	c->mail_from = NULL;
	c->in_tx = 0;
	c->data_done = 0;
	c->policy = NULL;
	spool_reset(&c->spool);
	c->nhdrs = 0;
	c->eoh_off = 0;
	c->eoh_seen = 0;
	c->header_bytes = 0;
	c->too_big = 0;
	free(c->replay_buf);
	c->replay_buf = NULL;
	c->replay_i = 0;
	c->replay_off = 0;
	c->replay_eoh = 0;
}

static void
mlisten_op(struct mlisten_conn *c, enum mlisten_op_kind kind, int index,
    const char *name, char *value, size_t len)
{
	struct mlisten_op *o;

	if ((o = reallocarray(c->ops, c->nops + 1, sizeof *o)) == NULL)
		fatalx("out of memory");
	c->ops = o;
	o = &c->ops[c->nops++];
	o->kind = kind;
	o->index = index;
	o->value = value;	/* taken */
	o->len = len;
	if ((o->name = strdup(name)) == NULL)
		fatalx("out of memory");
}

/*
 * A header value as the MTA takes it: the leading space when
 * SMFIP_HDR_LEADSPC was negotiated (else the MTA adds it), folds as bare
 * LF (Postfix and Sendmail store them so; CRLF would double the CR).
 */
static char *
mlisten_value(const struct mlisten_conn *c, const char *v, size_t len)
{
	char *out;
	size_t i, o = 0;

	if ((out = malloc(len + 2)) == NULL)
		fatalx("out of memory");
	if (c->leadspc)
		out[o++] = ' ';
	for (i = 0; i < len; i++)
		if (!(v[i] == '\r' && i + 1 < len && v[i + 1] == '\n'))
			out[o++] = v[i];
	out[o] = '\0';
	return out;
}

static void
mlisten_op_header(struct mlisten_conn *c, enum mlisten_op_kind kind,
    int index, const char *name, const char *value)
{
	mlisten_op(c, kind, index, name, value != NULL ?
	    mlisten_value(c, value, strlen(value)) : NULL, 0);
}

/* Client field i as "Name: value" (no final CRLF), malloc'd; NULL on error. */
static char *
mlisten_hdr_read(struct mlisten_conn *c, size_t i)
{
	const struct mlisten_hdr *h = &c->hdrs[i];
	char *f;

	if ((f = malloc(h->len + 1)) == NULL)
		fatalx("out of memory");
	if (spool_read(&c->spool, (off_t)h->off, f, h->len) != (ssize_t)h->len) {
		free(f);
		return NULL;
	}
	f[h->len - 2] = '\0';
	return f;
}

/*
 * What frontmx's session would write at the top: our
 * Authentication-Results, the tag, the fields filters insert at 0;
 * inserted at index 0 in reverse so they end up in this order.
 */
static void
mlisten_plan_top(struct mlisten_conn *c, const struct filter_outcome *o)
{
	char ar[MLISTEN_AR_MAX];
	const char *v;
	size_t n, e, i, k = 0;
	struct { const char *name; const char *value; size_t len; } top[FILTER_EDITS_MAX + 2];

	n = filter_session_auth_results(c->fs, ar, sizeof ar);
	if (n > 2 && (v = memchr(ar, ':', n)) != NULL) {
		v++;
		while (*v == ' ')
			v++;
		top[k].name = "Authentication-Results";
		top[k].value = v;
		top[k].len = (size_t)(ar + n - 2 - v);
		k++;
	}
	if (o->tags[0] != '\0') {
		top[k].name = c->cfg->tag_header;
		top[k].value = o->tags;
		top[k].len = strlen(o->tags);
		k++;
	}
	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_INSERT && o->edits[e].index == 0) {
			top[k].name = o->edits[e].name;
			top[k].value = o->edits[e].value;
			top[k].len = strlen(o->edits[e].value);
			k++;
		}
	for (i = k; i-- > 0;)
		mlisten_op(c, MLISTEN_OP_INSHDR, 0, top[i].name,
		    mlisten_value(c, top[i].value, top[i].len), 0);
}

/*
 * The client's header as the chain edited it: the filters' changes,
 * forged Authentication-Results gone (RFC 8601 5; from the last up, so
 * every index means the same field under either counting), the tagged
 * Subject, then the fields inserted below the top (the highest index
 * first, so earlier inserts do not move later ones).
 */
static int
mlisten_plan_client(struct mlisten_conn *c, const struct filter_outcome *o)
{
	size_t e, i, nar = 0, forged[64], nforged = 0, idx;
	char *f, *colon, *nv;
	int subject_done = 0;

	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_CHANGE)
			mlisten_op_header(c, MLISTEN_OP_CHGHDR,
			    (int)o->edits[e].index, o->edits[e].name,
			    o->edits[e].value);
	for (i = 0; i < c->nhdrs; i++) {
		if ((f = mlisten_hdr_read(c, i)) == NULL)
			return -1;
		colon = strchr(f, ':');
		if (policy_header_is(f, (size_t)(colon - f), "Authentication-Results")) {
			nar++;
			if (policy_ar_is_ours(colon + 1, strlen(colon + 1),
			    c->cfg->authserv_id) && nforged < 64) {
				log_info("%016llx milter removed forged "
				    "Authentication-Results", c->id);
				forged[nforged++] = nar;
			}
		} else if (!subject_done && o->verdict == FMX_TAG &&
		    c->cfg->tag_subject_prefix != NULL &&
		    policy_header_is(f, (size_t)(colon - f), "Subject")) {
			const char *v = colon + 1;
			size_t plen = strlen(c->cfg->tag_subject_prefix);

			subject_done = 1;
			while (*v == ' ' || *v == '\t')
				v++;
			if ((nv = malloc(plen + strlen(v) + 1)) == NULL)
				fatalx("out of memory");
			memcpy(nv, c->cfg->tag_subject_prefix, plen);
			memcpy(nv + plen, v, strlen(v) + 1);
			mlisten_op_header(c, MLISTEN_OP_CHGHDR, 1, "Subject", nv);
			free(nv);
		}
		free(f);
	}
	while (nforged > 0)
		mlisten_op(c, MLISTEN_OP_CHGHDR, (int)forged[--nforged],
		    "Authentication-Results", NULL, 0);
	for (idx = c->nhdrs + 1; idx-- > 1;)
		for (e = 0; e < o->nedits; e++)
			if (o->edits[e].kind == FILTER_EDIT_INSERT &&
			    o->edits[e].index == idx)
				mlisten_op_header(c, MLISTEN_OP_INSHDR, (int)idx,
				    o->edits[e].name, o->edits[e].value);
	return 0;
}

/* Recipient edits, checked like a client's RCPT; 0, or -1 when none is left. */
static int
mlisten_plan_rcpts(struct mlisten_conn *c, const struct filter_outcome *o)
{
	struct smtp_path p;
	char line[SMTP_PATH_MAX + 16];
	size_t i, j, left = c->nrcpts;

	for (i = 0; i < o->ndel_rcpts; i++)
		for (j = 0; j < c->nrcpts; j++)
			if (str_casecmp(c->rcpts[j], o->del_rcpts[i]) == 0) {
				log_info("%016llx filter removed rcpt=<%s>", c->id,
				    c->rcpts[j]);
				snprintf(line, sizeof line, "<%s>", c->rcpts[j]);
				mlisten_op(c, MLISTEN_OP_DELRCPT, 0, line, NULL, 0);
				left--;
				break;
			}
	for (i = 0; i < o->nadd_rcpts; i++) {
		snprintf(line, sizeof line, "TO:<%s>", o->add_rcpts[i]);
		if (smtp_parse_path(line, SMTP_CMD_RCPT, &p) != SMTP_PARSE_OK) {
			log_warn("%016llx filter added invalid rcpt ignored", c->id);
			continue;
		}
		log_info("%016llx filter added rcpt=<%s>", c->id, p.mailbox);
		snprintf(line, sizeof line, "<%s>", p.mailbox);
		mlisten_op(c, MLISTEN_OP_ADDRCPT, 0, line, NULL, 0);
		left++;
	}
	return left > 0 ? 0 : -1;
}

/* Every filter had its say on the message: the verdict and the edits. */
static void
mlisten_decide(struct mlisten_conn *c)
{
	const struct filter_outcome *o = filter_session_outcome(c->fs);
	sfsistat st = SMFIS_CONTINUE;
	const char *result = o->verdict == FMX_TAG ? "tagged" : "accepted";
	char *body;
	size_t e;

	if (o->verdict == FMX_DISCARD) {
		mlisten_log_message(c, "discarded", o->reason);
		mlisten_tx_end(c, 0);
		mlisten_answer(c, SMFIS_DISCARD, NULL);
		return;
	}
	if (mlisten_plan_rcpts(c, o) == -1) {
		mlisten_ops_free(c->ops, c->nops);
		c->ops = NULL;
		c->nops = 0;
		mlisten_log_message(c, "discarded", "filters removed every recipient");
		mlisten_tx_end(c, 0);
		mlisten_answer(c, SMFIS_DISCARD, NULL);
		return;
	}
	if (mlisten_plan_client(c, o) == -1) {
		mlisten_ops_free(c->ops, c->nops);
		c->ops = NULL;
		c->nops = 0;
		mlisten_log_message(c, "tempfail", "spool read error");
		mlisten_tx_end(c, 0);
		mlisten_answer(c, SMFIS_TEMPFAIL,
		    MLISTEN_REPLY_LOCAL);
		return;
	}
	mlisten_plan_top(c, o);
	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_ADD)
			mlisten_op_header(c, MLISTEN_OP_ADDHDR, 0, o->edits[e].name,
			    o->edits[e].value);
	if (o->body != NULL) {
		if ((body = malloc(o->bodylen + 1)) == NULL)
			fatalx("out of memory");
		memcpy(body, o->body, o->bodylen);
		mlisten_op(c, MLISTEN_OP_BODY, 0, "body", body, o->bodylen);
	}
	if (o->verdict == FMX_QUARANTINE) {
		/* The MTA's hold queue is the quarantine here. */
		mlisten_op(c, MLISTEN_OP_QUARANTINE, 0, o->reason[0] ? o->reason :
		    "frontmx", NULL, 0);
		result = "quarantined";
	}
	mlisten_log_message(c, result, o->verdict == FMX_QUARANTINE ?
	    o->reason : NULL);
	mlisten_tx_end(c, 0);
	mlisten_answer(c, st, NULL);
}

/* End of message: the spooled message to the chain, as smtp_eom.c does. */
static void
mlisten_replay_next(struct mlisten_conn *c)
{
	do {
		c->replay_again = 0;
		c->in_replay = 1;
		mlisten_replay_step(c);
		c->in_replay = 0;
	} while (c->replay_again);
}

static void
mlisten_replay_failed(struct mlisten_conn *c)
{
	mlisten_log_message(c, "tempfail", "spool read error");
	mlisten_tx_end(c, 0);
	mlisten_answer(c, SMFIS_TEMPFAIL,
	    MLISTEN_REPLY_LOCAL);
}

static void
mlisten_replay_step(struct mlisten_conn *c)
{
	struct filter_chain *ch = runtime_chain(c->rt);
	struct filter_args a;
	char *colon;
	size_t len;
	ssize_t n;

	memset(&a, 0, sizeof a);
	mlisten_facts(c);
	if (c->replay_i < c->nhdrs && filter_chain_wants(ch, FILTER_PH_HEADER)) {
		free(c->replay_buf);
		if ((c->replay_buf = mlisten_hdr_read(c, c->replay_i++)) == NULL) {
			mlisten_replay_failed(c);
			return;
		}
		colon = strchr(c->replay_buf, ':');
		*colon = '\0';
		for (len = (size_t)(colon - c->replay_buf); len > 0 &&
		    (c->replay_buf[len - 1] == ' ' || c->replay_buf[len - 1] == '\t'); len--)
			c->replay_buf[len - 1] = '\0';
		a.str = c->replay_buf;
		a.str2 = colon + 1;
		/* milter convention: drop the one space after the colon */
		if (*a.str2 == ' ')
			a.str2++;
		mlisten_run(c, FILTER_PH_HEADER, "message", &a);
		return;
	}
	if (!c->replay_eoh) {
		c->replay_eoh = 1;
		if (filter_chain_wants(ch, FILTER_PH_EOH)) {
			mlisten_run(c, FILTER_PH_EOH, "message", &a);
			return;
		}
	}
	if (c->replay_off == 0)
		c->replay_off = c->eoh_off + 2;
	if (filter_chain_wants(ch, FILTER_PH_BODY) && c->replay_off < c->spool.size) {
		free(c->replay_buf);
		if ((c->replay_buf = malloc(MLISTEN_BODY_CHUNK)) == NULL)
			fatalx("out of memory");
		n = spool_read(&c->spool, (off_t)c->replay_off, c->replay_buf,
		    MLISTEN_BODY_CHUNK);
		if (n <= 0) {
			mlisten_replay_failed(c);
			return;
		}
		c->replay_off += (size_t)n;
		a.data = (const unsigned char *)c->replay_buf;
		a.len = (size_t)n;
		mlisten_run(c, FILTER_PH_BODY, "message", &a);
		return;
	}
	free(c->replay_buf);
	c->replay_buf = NULL;
	mlisten_run(c, FILTER_PH_EOM, "message", &a);
}

static void
mlisten_rcpt_add(struct mlisten_conn *c)
{
	char **v;

	if ((v = reallocarray(c->rcpts, c->nrcpts + 1, sizeof *v)) == NULL ||
	    (v[c->nrcpts] = strdup(c->arg)) == NULL)
		fatalx("out of memory");
	c->rcpts = v;
	if (c->nrcpts++ == 0)
		c->policy = c->pending_policy;
}

/* A refusal: the filter's reply, or one naming what was refused. */
static void
mlisten_refused(struct mlisten_conn *c, const struct filter_result *res)
{
	char reply[FILTER_REPLY_MAX];
	int reject = res->verdict == FMX_REJECT;

	if (res->reply[0] != '\0')
		snprintf(reply, sizeof reply, "%s", res->reply);
	else
		snprintf(reply, sizeof reply, "%s %s %s %s by policy",
		    reject ? "550" : "451", reject ? "5.7.1" : "4.7.1", c->what,
		    reject ? "rejected" : "deferred");
	log_info("%016llx milter refused=%s filter=%s verdict=%s", c->id,
	    c->what, res->filter, reject ? "reject" : "tempfail");
	switch (c->req) {
	case MLISTEN_REQ_MAIL:
		/* A refused sender opens no transaction. */
		free(c->mail_from);
		c->mail_from = NULL;
		c->in_tx = 0;
		break;
	case MLISTEN_REQ_EOM:
		mlisten_log_message(c, "refused", reply);
		mlisten_tx_end(c, 0);
		break;
	default:
		break;
	}
	mlisten_answer(c, reject ? SMFIS_REJECT : SMFIS_TEMPFAIL, reply);
}

/* The chain's answer to the phase mlisten_run() started. */
static void
mlisten_done(void *arg, const struct filter_result *res)
{
	struct mlisten_conn *c = arg;

	if (res->verdict == FMX_REJECT || res->verdict == FMX_TEMPFAIL) {
		mlisten_refused(c, res);
		return;
	}
	switch (c->req) {
	case MLISTEN_REQ_RCPT:
		mlisten_rcpt_add(c);
		break;
	case MLISTEN_REQ_DATA:
		c->data_done = 1;
		break;
	case MLISTEN_REQ_EOM:
		if (c->running == FILTER_PH_EOM) {
			mlisten_decide(c);
			return;
		}
		if (c->running == FILTER_PH_DATA)
			c->data_done = 1;
		/* Filters usually answer at once: iterate, do not recurse. */
		if (c->in_replay)
			c->replay_again = 1;
		else
			mlisten_replay_next(c);
		return;
	default:
		break;
	}
	mlisten_answer(c, SMFIS_CONTINUE, NULL);
}

static void
mlisten_conn_free(struct mlisten_conn *c)
{
	pthread_mutex_lock(&mlisten.lock);
	TAILQ_REMOVE(&mlisten.conns, c, entry);
	mlisten.nconns--;
	pthread_mutex_unlock(&mlisten.lock);
	if (c->fs != NULL)
		filter_session_cancel(c->fs);
	mlisten_tx_end(c, 1);
	filter_session_free(c->fs);
	spool_free(&c->spool);
	free(c->hdrs);
	mlisten_ops_free(c->ops, c->nops);
	event_free(c->ev);
	if (c->rt != NULL)
		runtime_unref(c->rt);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	log_info("%016llx milter disconnect client=%s messages=%lu", c->id,
	    c->addr, c->messages);
	free(c);
}

static void
mlisten_req_connect(struct mlisten_conn *c)
{
	struct filter_host host;

	/* The runtime of the moment: after SIGHUP new connections take the new one. */
	if ((c->rt = worker_runtime_get()) == NULL) {
		mlisten_answer(c, SMFIS_TEMPFAIL, "451 4.3.0 Error: not ready");
		return;
	}
	c->cfg = runtime_config(c->rt);
	spool_init(&c->spool, c->cfg->limits.spool_memory, c->cfg->spool_dir);
	host.msg_read = mlisten_msg_read;
	host.arg = c;
	mlisten_facts(c);
	if ((c->fs = filter_session_new(runtime_chain(c->rt), mlisten.base,
	    &c->facts, &host)) == NULL) {
		mlisten_answer(c, SMFIS_TEMPFAIL,
		    "451 4.3.0 Error: out of resources, try again later");
		return;
	}
	mlisten_run(c, FILTER_PH_CONNECT, "connection", NULL);
}

static void
mlisten_req_mail(struct mlisten_conn *c)
{
	struct filter_args a;

	if (c->in_tx)		/* a new MAIL without ABORT: the old one is over */
		mlisten_tx_end(c, 1);
	if ((c->mail_from = strdup(c->arg)) == NULL)
		fatalx("out of memory");
	c->in_tx = 1;
	/* Until the MTA names its queue id (Postfix: after the first RCPT). */
	if (c->qid[0] == '\0')
		snprintf(c->qid, sizeof c->qid, "%016llx.%lu", c->id, c->messages);
	memset(&a, 0, sizeof a);
	a.str = c->mail_from;
	mlisten_facts(c);
	mlisten_run(c, FILTER_PH_MAIL, "sender", &a);
}

/*
 * As the session's RCPT: what connect, helo and mail held is read with
 * this recipient's policy; one policy per transaction (452 sends the
 * recipient to a transaction of its own); then the rcpt phase.  Relay
 * control stays the MTA's: it asked us about a recipient it accepted.
 */
static void
mlisten_req_rcpt(struct mlisten_conn *c)
{
	const char *at = strrchr(c->arg, '@');
	const struct config_policy *pol;
	struct filter_result held;
	struct filter_args a;

	if (!c->in_tx) {
		mlisten_answer(c, SMFIS_TEMPFAIL, "451 4.5.0 Error: RCPT without MAIL");
		return;
	}
	if (c->nrcpts >= c->cfg->limits.recipients) {
		mlisten_answer(c, SMFIS_TEMPFAIL, "452 4.5.3 Error: too many recipients");
		return;
	}
	pol = policy_lookup(c->cfg, at != NULL ? at + 1 : NULL);
	c->what = "recipient";
	if (filter_session_held(c->fs, pol, &held) != FMX_CONTINUE) {
		mlisten_refused(c, &held);
		return;
	}
	if (c->nrcpts > 0 && c->policy != pol) {
		mlisten_answer(c, SMFIS_TEMPFAIL, "452 4.5.3 Error: recipient has a "
		    "different policy, send it in a separate transaction");
		return;
	}
	c->pending_policy = pol;
	memset(&a, 0, sizeof a);
	a.str = c->arg;
	mlisten_facts(c);
	c->facts.policy = pol;
	mlisten_run(c, FILTER_PH_RCPT, "recipient", &a);
}

/* A request from libmilter's thread (mlisten_call, mlisten_close). */
static void
mlisten_dispatch(evutil_socket_t fd, short what, void *arg)
{
	struct mlisten_conn *c = arg;
	struct filter_args a;
	enum mlisten_req req;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&c->lock);
	req = c->req;
	pthread_mutex_unlock(&c->lock);
	memset(&a, 0, sizeof a);
	if (c->fs == NULL && req != MLISTEN_REQ_CONNECT && req != MLISTEN_REQ_CLOSE) {
		mlisten_answer(c, SMFIS_TEMPFAIL, "451 4.3.0 Error: no filter session");
		return;
	}
	switch (req) {
	case MLISTEN_REQ_CONNECT:
		mlisten_req_connect(c);
		break;
	case MLISTEN_REQ_HELO:
		a.str = c->helo;
		mlisten_facts(c);
		mlisten_run(c, FILTER_PH_HELO, "HELO", &a);
		break;
	case MLISTEN_REQ_MAIL:
		mlisten_req_mail(c);
		break;
	case MLISTEN_REQ_RCPT:
		mlisten_req_rcpt(c);
		break;
	case MLISTEN_REQ_DATA:
		if (!c->in_tx) {
			mlisten_answer(c, SMFIS_TEMPFAIL, "451 4.5.0 Error: DATA without MAIL");
			break;
		}
		mlisten_facts(c);
		mlisten_run(c, FILTER_PH_DATA, "message", NULL);
		break;
	case MLISTEN_REQ_EOM:
		if (!c->in_tx) {
			mlisten_answer(c, SMFIS_TEMPFAIL, "451 4.5.0 Error: message without MAIL");
			break;
		}
		c->replay_i = 0;
		c->replay_off = 0;
		c->replay_eoh = 0;
		/* An MTA that sends no DATA event: the phase runs here. */
		if (!c->data_done) {
			mlisten_facts(c);
			mlisten_run(c, FILTER_PH_DATA, "message", NULL);
		} else
			mlisten_replay_next(c);
		break;
	case MLISTEN_REQ_ABORT:
		if (c->in_tx)
			mlisten_log_message(c, "aborted", "the MTA aborted it");
		mlisten_tx_end(c, 1);
		mlisten_answer(c, SMFIS_CONTINUE, NULL);
		break;
	case MLISTEN_REQ_CLOSE:
		mlisten_conn_free(c);
		break;
	default:
		fatalx("mlisten_dispatch: bad request %d", req);
	}
}

/* ---- start, reload, stop -------------------------------------------------- */

static void *
mlisten_loop_main(void *arg)
{
	(void)arg;
	event_base_loop(mlisten.base, EVLOOP_NO_EXIT_ON_EMPTY);
	dns_release(mlisten.base);
	return NULL;
}

static void *
mlisten_smfi_main(void *arg)
{
	(void)arg;
	if (smfi_main() != MI_SUCCESS)
		log_warn("milter listener on %s stopped with an error", mlisten.listen);
	return NULL;
}

/* Where milter_listen_stop() connects to wake libmilter's listener. */
static void
mlisten_poke_addr(const char *listen)
{
	struct sockaddr_un sun;

	mlisten.pokelen = 0;
	if (strncmp(listen, "unix:", 5) == 0) {
		memset(&sun, 0, sizeof sun);
		sun.sun_family = AF_UNIX;
		snprintf(sun.sun_path, sizeof sun.sun_path, "%s", listen + 5);
		memcpy(&mlisten.poke, &sun, sizeof sun);
		mlisten.pokelen = sizeof sun;
	} else if (strncmp(listen, "inet:", 5) == 0 &&
	    config_sockaddr_parse(listen + 5, &mlisten.poke, &mlisten.pokelen) == -1)
		mlisten.pokelen = 0;
}

/*
 * libmilter's listener sleeps in select() with its mutex held for up to
 * MI_CHK_TIME (5 s) between looks at smfi_stop()'s flag, and smfi_stop()
 * waits for that mutex: a connection to the listening socket wakes it.
 */
static void
mlisten_poke(void)
{
	int fd;

	if (mlisten.pokelen == 0 ||
	    (fd = socket(mlisten.poke.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	(void)connect(fd, (const struct sockaddr *)&mlisten.poke, mlisten.pokelen);
	close(fd);
}

static void *
mlisten_stopper(void *arg)
{
	(void)arg;
	smfi_stop();
	return NULL;
}

int
milter_listen_start(const struct config *cfg)
{
	static char name[] = MLISTEN_NAME;
	static char conn[CONFIG_ERR_MAX];
	struct smfiDesc desc = {
		.xxfi_name = name,
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY |
		    SMFIF_ADDRCPT | SMFIF_DELRCPT | SMFIF_QUARANTINE |
		    SMFIF_SETSYMLIST,
		.xxfi_connect = mlisten_connect,
		.xxfi_helo = mlisten_helo,
		.xxfi_envfrom = mlisten_envfrom,
		.xxfi_envrcpt = mlisten_envrcpt,
		.xxfi_header = mlisten_header,
		.xxfi_eoh = mlisten_eoh,
		.xxfi_body = mlisten_body,
		.xxfi_eom = mlisten_eom,
		.xxfi_abort = mlisten_abort,
		.xxfi_close = mlisten_close,
		.xxfi_data = mlisten_data,
		.xxfi_negotiate = mlisten_negotiate,
	};

	if (cfg->milter_listen == NULL)
		return 0;
	mlisten.timeout = cfg->milter_timeout ? cfg->milter_timeout : 300;
	if ((mlisten.listen = strdup(cfg->milter_listen)) == NULL ||
	    (mlisten.base = event_base_new()) == NULL)
		fatalx("out of memory");
	snprintf(conn, sizeof conn, "%s", cfg->milter_listen_conn);
	mlisten_poke_addr(cfg->milter_listen);
	/*
	 * libmilter's own read timeout: the MTA may sit between commands as
	 * long as its client does (Postfix's smtpd_timeout, 300 s), so an
	 * hour, not our chain's bound; libmilter's default is two hours.
	 */
	if (smfi_register(desc) != MI_SUCCESS || smfi_setconn(conn) != MI_SUCCESS ||
	    smfi_settimeout(3600) != MI_SUCCESS || smfi_opensocket(1) != MI_SUCCESS) {
		log_warn("milter: cannot listen on %s (%s)", cfg->milter_listen,
		    cfg->milter_where ? cfg->milter_where : "milter.listen");
		return -1;
	}
	if (pthread_create(&mlisten.loop_thread, NULL, mlisten_loop_main, NULL) != 0)
		return -1;
	if (pthread_create(&mlisten.main_thread, NULL, mlisten_smfi_main, NULL) != 0) {
		event_base_loopexit(mlisten.base, NULL);
		pthread_join(mlisten.loop_thread, NULL);
		return -1;
	}
	mlisten.started = 1;
	log_info("milter listening on %s timeout=%u", cfg->milter_listen,
	    mlisten.timeout);
	return 0;
}

void
milter_listen_reload(const struct config *cfg)
{
	const char *now = mlisten.started ? mlisten.listen : NULL;
	const char *want = cfg->milter_listen;

	if ((now == NULL && want == NULL) || (now != NULL && want != NULL &&
	    strcmp(now, want) == 0)) {
		if (now != NULL)
			log_info("milter on %s: new connections take the reloaded "
			    "filters and policy", now);
		return;
	}
	/* libmilter listens once per process (smfi_main): say so, keep serving. */
	log_warn("milter.listen changed from %s to %s: a restart is needed to "
	    "move the milter listener (libmilter listens once per process); "
	    "still %s", now ? now : "none", want ? want : "none",
	    now ? "serving on the old address with the reloaded filters" :
	    "no milter listener");
}

/* Join t within the next tenths tenths of a second, poking the listener; 1 if joined. */
static int
mlisten_join(pthread_t t, int tenths)
{
	struct timespec until;
	int i;

	for (i = 0; i < tenths; i++) {
		mlisten_poke();
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(t, NULL, &until) == 0)
			return 1;
	}
	return 0;
}

/*
 * SIGTERM.  New MTA connections get 421 (mlisten_connect) while the open
 * ones finish, within shutdown_grace; only then smfi_stop(): Debian's
 * libmilter runs its sessions on a worker pool whose controller stops
 * serving them once smfi_main() ends, so stopping first would strand
 * the messages in flight.
 */
void
milter_listen_stop(unsigned grace)
{
	struct timespec t = { 0, 100 * 1000 * 1000 };
	struct mlisten_conn *c;
	pthread_t stopper;
	unsigned long waited = 0;
	size_t left;
	int joined;

	if (!mlisten.started)
		return;
	atomic_store(&mlisten.stopping, 1);
	for (;;) {
		pthread_mutex_lock(&mlisten.lock);
		left = mlisten.nconns;
		pthread_mutex_unlock(&mlisten.lock);
		if (left == 0 || waited >= (unsigned long)grace * 10)
			break;
		nanosleep(&t, NULL);
		waited++;
	}
	/*
	 * An MTA that keeps its connections open past the grace (Postfix
	 * holds one per SMTP session): their callbacks answer tempfail from
	 * now on without the loop, which ends with whatever it still ran.
	 * Their state stays allocated and listed until the process exits:
	 * libmilter's threads may still hold it.
	 */
	if (left > 0)
		log_warn("milter: %zu connection%s still open after %us: "
		    "answering tempfail", left, left == 1 ? "" : "s", grace);
	atomic_store(&mlisten.stopping, 2);
	/* mlisten_call and mlisten_close test stopping under each conn's lock. */
	pthread_mutex_lock(&mlisten.lock);
	TAILQ_FOREACH(c, &mlisten.conns, entry) {
		pthread_mutex_lock(&c->lock);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&mlisten.lock);
	/*
	 * smfi_stop() on its own thread: it waits for the listener's mutex,
	 * which the listener holds in select() for up to 5 s unless a
	 * connection wakes it (mlisten_poke).  Bounded: a libmilter that
	 * does not stop is left to the process's exit.
	 */
	if (pthread_create(&stopper, NULL, mlisten_stopper, NULL) != 0)
		fatalx("milter: cannot start the stopper thread");
	joined = mlisten_join(mlisten.main_thread, 30);
	if (!mlisten_join(stopper, joined ? 10 : 1))
		pthread_detach(stopper);
	if (!joined) {
		pthread_detach(mlisten.main_thread);
		log_warn("milter: libmilter's listener did not stop in 3 s");
	}
	event_base_loopexit(mlisten.base, NULL);
	pthread_join(mlisten.loop_thread, NULL);
	mlisten.started = 0;
	if (left > 0 || !joined)
		return;		/* libmilter's threads may still call us */
	event_base_free(mlisten.base);
	mlisten.base = NULL;
	free(mlisten.listen);
	mlisten.listen = NULL;
	log_info("milter listener stopped");
}
