/*
 * upstream.h - the SMTP client side: one connection to the upstream MTA
 *
 * SYNOPSIS
 *	up = upstream_open(base, cfg, &client, sid, done, arg);
 *	upstream_command(up, "MAIL FROM:<a@b>", done, arg);
 *	upstream_send_message(up, prepend, len, spool, done, arg);
 *	upstream_close(up);
 *
 * DESCRIPTION
 *	One operation at a time (a pipelined group, below, is the one
 *	exception); done(arg, err, reply) fires exactly once per
 *	operation, always from the event loop (never inside the call that
 *	started it).  err is UPSTREAM_OK when a complete, well-formed reply
 *	arrived (whatever its code); otherwise reply is NULL and the
 *	connection is dead: the session tells its client 4xx and opens a new
 *	upstream at the next MAIL.
 *
 *	upstream_open() connects (TCP, or a unix socket for
 *	"lmtp:unix:PATH"), reads the greeting, sends EHLO, then XCLIENT
 *	(when offered, followed by a new EHLO as Postfix requires) or
 *	XFORWARD, and reports UPSTREAM_OK with the last EHLO reply.
 *	upstream_send_message() sends DATA, and on 354 the prepended header
 *	fields plus the spool, dot-stuffed, then the proxy's own final dot;
 *	the reply reported is the one to the final dot (or the non-354 reply
 *	to DATA).  When the upstream offers CHUNKING and upstream.chunking
 *	is on (not for LMTP), it sends "BDAT <n> LAST" and the same octets
 *	unstuffed instead (RFC 3030), n counted before the first octet, and
 *	reports the reply to that; a reply before the last octet is written
 *	is UPSTREAM_ERR_PROTOCOL.  Every reply is parsed strictly and
 *	bounded (smtp_reply.h).
 *
 *	With client->lmtp the dialogue is LMTP (RFC 2033): LHLO instead of
 *	EHLO, and after the final dot one reply per RCPT the server accepted
 *	in the transaction, each logged; the one reported is the only one,
 *	or with several the least final (any 4xx, else any 5xx, else the
 *	first 2xx).  One more or one less than owed is a protocol error.
 *	deliver_lmtp.c keeps transactions to one recipient.
 *
 *	upstream_close() sends QUIT when the connection is idle and frees it
 *	in the background; with an operation in flight it closes at once, so
 *	a message whose final dot was not yet sent is never delivered.
 */
#ifndef FRONTMX_UPSTREAM_H
#define FRONTMX_UPSTREAM_H

#include <stddef.h>

#include "smtp_reply.h"

struct ssl_ctx_st;
struct event_base;
struct config;
struct spool;
struct upstream;

enum upstream_err {
	UPSTREAM_OK = 0,
	UPSTREAM_ERR_CONNECT,		/* refused, unreachable, connect timeout */
	UPSTREAM_ERR_TIMEOUT,		/* no reply in time */
	UPSTREAM_ERR_CLOSED,		/* reset or EOF in the middle of the dialogue */
	UPSTREAM_ERR_PROTOCOL,		/* malformed or unexpected reply */
	UPSTREAM_ERR_REJECTED,		/* greeting, EHLO or XCLIENT refused */
	UPSTREAM_ERR_LOCAL,		/* our side: spool read error, out of memory */
	UPSTREAM_ERR_COUNT		/* must be last */
};

/* What XCLIENT/XFORWARD tell the upstream about the real client. */
struct upstream_client {
	const char	*addr;		/* numeric */
	int		 ipv6;
	unsigned	 port;
	const char	*helo;
	int		 esmtp;		/* EHLO (1) or HELO (0) */
	int		 require_tls;	/* never relay this client's mail in the clear */
	const char	*name;		/* verified name, "[UNAVAILABLE]", "[TEMPUNAVAIL]" */
	int		 probe;		/* a capability probe: no XCLIENT/XFORWARD */
	int		 lmtp;		/* speak LMTP (RFC 2033): deliver.c decides */
};

/* What a capability probe tells upstream_open(): it is no client. */
#define UPSTREAM_CLIENT_PROBE	{ .addr = "127.0.0.1", .helo = "probe", \
	.esmtp = 1, .probe = 1 }

typedef void (*upstream_done_fn)(void *arg, enum upstream_err,
    const struct smtp_reply *);

/* tls_ctx: the runtime's client context (runtime.h); NULL: no STARTTLS. */
struct upstream	*upstream_open(struct event_base *, const struct config *,
		    struct ssl_ctx_st *tls_ctx, const struct upstream_client *,
		    unsigned long long sid, upstream_done_fn, void *arg);
void		 upstream_command(struct upstream *, const char *line,
		    upstream_done_fn, void *arg);
/* The same for AUTH lines and SASL responses: the line is never logged. */
void		 upstream_command_secret(struct upstream *, const char *line,
		    upstream_done_fn, void *arg);
/* Sends prepend, then the spool from offset spool_off on. */
void		 upstream_send_message(struct upstream *, const char *prepend,
		    size_t prependlen, struct spool *, size_t spool_off,
		    upstream_done_fn, void *arg);
/*
 * Pipelining (RFC 2920): upstream_queue() puts a MAIL or RCPT line in
 * the output without writing it, when upstream_can_queue() says the
 * connection takes one (PIPELINING offered, not LMTP, idle or a group
 * still being queued, room left); upstream_flush() writes the group in
 * one write.  Each queued command's done fires once, in order, with its
 * own reply; an error fires once, for the first command still owed, and
 * the connection is dead.  Nothing fires before the flush.
 */
int		 upstream_can_queue(const struct upstream *);
void		 upstream_queue(struct upstream *, const char *line,
		    upstream_done_fn, void *arg);
void		 upstream_flush(struct upstream *);
void		 upstream_close(struct upstream *);
/* 1 if the connection is open and idle, ready for the next command. */
int		 upstream_idle(const struct upstream *);
/*
 * 1 if the upstream holds an open MAIL transaction (its 250 to MAIL, no
 * final-dot reply or RSET 250 since), as its replies said: RSET first.
 */
int		 upstream_in_tx(const struct upstream *);
/* The extensions of this connection's last EHLO; NULL before it is ready. */
const struct smtp_ehlo_caps *upstream_caps(const struct upstream *);
const char	*upstream_strerror(enum upstream_err);

/*
 * Process-wide knowledge of what the upstream supports: set by the
 * start-up probe, the prober (worker.c) and the final EHLO of every
 * upstream connection; a change is logged ("upstream capabilities: ...").
 * known stays 0 until the upstream answered once.
 */
void		 upstream_caps_get(struct smtp_ehlo_caps *, int *known);
void		 upstream_caps_set(const struct smtp_ehlo_caps *);
/*
 * fn runs (on the thread of the session that saw it) whenever a
 * session's connection to the upstream fails to open.
 */
void		 upstream_on_unreachable(void (*fn)(void));
/*
 * The idle pool's hooks (upstream_pool.c).  upstream_poolable(): 1 when
 * the connection may serve another client.  upstream_park(): fn hears
 * of its death while it waits.  upstream_reuse(): new client facts, then
 * RSET as the health check; done gets its reply.
 */
int		 upstream_poolable(const struct upstream *);
int		 upstream_tls_active(const struct upstream *);
void		 upstream_park(struct upstream *, unsigned long long sid,
		    upstream_done_fn, void *arg);
void		 upstream_reuse(struct upstream *, const struct upstream_client *,
		    unsigned long long sid, upstream_done_fn, void *arg);
/* Blocking start-up probe (own event_base); 0 ok, -1 unreachable. */
int		 upstream_probe(const struct config *, struct ssl_ctx_st *tls_ctx,
		    int lmtp);

#endif
