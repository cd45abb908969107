/*
 * filter_chain.h - the core's side of the filter chain
 *
 * SYNOPSIS
 *	chain = filter_chain_new(cfg, err, errlen);	once per configuration
 *	fs = filter_session_new(chain, base, &facts, &host);	once per SMTP session
 *	filter_session_run(fs, phase, &args, done, arg);
 *	filter_session_msg_end(fs, aborted);
 *	filter_session_free(fs);
 *
 * DESCRIPTION
 *	A chain is the configured filters of one configuration (built-in
 *	filters and dlopen'd modules, each initialised with its options); it
 *	holds a reference to that configuration, so sessions that started
 *	before a SIGHUP keep running on their own chain.
 *
 *	filter_session_run() runs every filter's hook for one phase, in
 *	order, and calls done() with the combined result.  done() may run
 *	before filter_session_run() returns (all hooks answered at once) or
 *	later from the event loop (a hook returned FMX_PENDING, or a blocking
 *	filter ran on the thread pool).  The SMTP session never assumes either
 *	order.  A hook that fails - bad verdict, timeout, refused module call
 *	- gets its filter's on_error action, never a crash and never a silent
 *	accept.  The chain never touches sockets: it sees the session through
 *	struct filter_facts and reads the message through struct filter_host.
 *
 *	Results a filter names with api->set_result() are mapped to actions
 *	by the transaction's policy (policy_decide()), dry-run turns a
 *	refusing action into a tag, and message-level outcomes (tag,
 *	quarantine, discard, Authentication-Results, header and recipient
 *	edits) accumulate until the session asks for them at end of message.
 *	Answers of the connect, helo and mail phases are held instead (no
 *	recipient, so no policy, is known yet): filter_session_held() reads
 *	them at each RCPT with that recipient's policy, and the DATA phase
 *	once more with the transaction's for the message's outcome.
 *
 *	filter_chain.c runs the chain, filter_api.c implements the struct
 *	fmx_api modules call (and filter_resolver_set()), filter_pool.c the
 *	thread pool; filter_int.h holds what the three share.
 */
#ifndef FRONTMX_FILTER_CHAIN_H
#define FRONTMX_FILTER_CHAIN_H

#include <stddef.h>
#include <sys/socket.h>

#include "frontmx_filter.h"

#define FILTER_REPLY_MAX	1024
#define FILTER_EDITS_MAX	64	/* header edits per message per filter chain */

struct config;
struct config_policy;
struct event_base;
struct filter_chain;
struct filter_session;

enum filter_phase {
	FILTER_PH_CONNECT = 0,
	FILTER_PH_HELO,
	FILTER_PH_MAIL,
	FILTER_PH_RCPT,
	FILTER_PH_DATA,
	FILTER_PH_HEADER,
	FILTER_PH_EOH,
	FILTER_PH_BODY,
	FILTER_PH_EOM,
	FILTER_PH_COUNT		/* must be last */
};

/*
 * Read-only view of the SMTP session; the session owns every string and
 * keeps the pointers current as the dialogue goes on.
 */
struct filter_facts {
	unsigned long long	 session_id;
	const char		*client_addr;	/* numeric */
	unsigned		 client_port;
	const char		*client_name;	/* verified reverse name, or "unknown" */
	const char		*helo;		/* NULL before HELO/EHLO */
	const char		*tls;		/* "TLSv1.3 CIPHER", NULL in plaintext */
	const char		*auth;		/* authenticated identity, NULL if none */
	const char		*mail_from;	/* NULL before MAIL; "" = null sender */
	const char *const	*rcpts;		/* accepted recipients */
	size_t			 nrcpts;
	const char		*queue_id;	/* message id, NULL outside a message */
	const char		*mail_args;	/* MAIL's ESMTP parameters "K=V K", NULL none */
	const char		*rcpt_args;	/* the RCPT being checked's, NULL none */
	const char		*auth_type;	/* SASL mechanism, NULL if not authenticated */
	const char		*daemon_addr;	/* our address the client reached */
	unsigned		 daemon_port;
	const struct config_policy *policy;	/* the transaction's, NULL = default */
};

/* How the chain reads the message being filtered. */
struct filter_host {
	long	(*msg_read)(void *arg, size_t off, void *buf, size_t len);
	void	*arg;
};

/* Per-phase input. */
struct filter_args {
	const char		*str;		/* helo / mail from / rcpt / header name */
	const char		*str2;		/* header value */
	const unsigned char	*data;		/* body chunk */
	size_t			 len;
};

struct filter_result {
	enum fmx_verdict	verdict;	/* CONTINUE, REJECT, TEMPFAIL; message verdicts wait for eom */
	char			reply[FILTER_REPLY_MAX];	/* validated reply, "" = default */
	char			filter[64];	/* who decided, for the log */
};

typedef void (*filter_done_fn)(void *arg, const struct filter_result *);

/* A header edit recorded at eom, applied by the session when relaying. */
enum filter_edit_kind {
	FILTER_EDIT_ADD = 0,		/* append to the header block */
	FILTER_EDIT_INSERT,		/* before the index-th field (0 = top) */
	FILTER_EDIT_CHANGE,		/* index-th field of that name; value NULL deletes */
	FILTER_EDIT_KIND_COUNT		/* must be last */
};

struct filter_edit {
	enum filter_edit_kind	 kind;
	char			*name;
	char			*value;		/* NULL: delete */
	size_t			 index;
};

/* What the chain decided for the whole message, read at end of message. */
struct filter_outcome {
	enum fmx_verdict		 verdict;	/* CONTINUE (relay), TAG, QUARANTINE, DISCARD */
	char				 reason[256];	/* for quarantine / discard logs */
	char				 tags[512];	/* "filter=result, ..." for the tag header */
	const struct filter_edit	*edits;
	size_t				 nedits;
	const unsigned char		*body;		/* replacement body or NULL */
	size_t				 bodylen;
	char *const			*add_rcpts;
	char *const			*add_rcpt_args;	/* each one's ESMTP parameters, or NULL */
	size_t				 nadd_rcpts;
	const char			*mail_from;	/* a milter's new sender, NULL: unchanged */
	const char			*mail_from_args;
	char *const			*del_rcpts;
	size_t				 ndel_rcpts;
};

struct filter_chain	*filter_chain_new(struct config *, char *err, size_t errlen);
void			 filter_chain_ref(struct filter_chain *);
void			 filter_chain_unref(struct filter_chain *);
struct config		*filter_chain_config(const struct filter_chain *);
/* Does any filter have a hook for this phase (skip the replay if not)? */
int			 filter_chain_wants(const struct filter_chain *, enum filter_phase);
/*
 * Does any filter read facts->daemon_addr/daemon_port (a milter's
 * {daemon_addr} macro)?  They cost the session a getsockname(2), so the
 * session fills them only then.
 */
int			 filter_chain_wants_daemon_addr(const struct filter_chain *);

struct filter_session	*filter_session_new(struct filter_chain *, struct event_base *,
			    const struct filter_facts *, const struct filter_host *);
void			 filter_session_run(struct filter_session *, enum filter_phase,
			    const struct filter_args *, filter_done_fn, void *arg);
/* The outcome is valid until filter_session_msg_end(). */
const struct filter_outcome *filter_session_outcome(struct filter_session *);
/* Authentication-Results field (CRLF-terminated) for the message; 0 if none was added. */
size_t			 filter_session_auth_results(struct filter_session *, char *out,
			    size_t outlen);
/*
 * Give up the phase in progress (the client went away, the session is
 * closing): its done is never called, a late resume() is refused.
 */
void			 filter_session_cancel(struct filter_session *);
/*
 * What the connect, helo and mail phases held for the recipients (filters
 * with delay_reject, the default), read with one recipient's policy pol:
 * REJECT or TEMPFAIL with res->reply for the RCPT reply, else CONTINUE.
 * Call it before that recipient's rcpt phase; a held ACCEPT makes the
 * chain skip its rcpt hooks.  The DATA phase reads them once more with
 * the transaction's policy (facts->policy) for the message's outcome.
 */
enum fmx_verdict	 filter_session_held(struct filter_session *,
			    const struct config_policy *, struct filter_result *);
/* End of a message: aborted (RSET, error, disconnect) calls on_abort hooks. */
void			 filter_session_msg_end(struct filter_session *, int aborted);
/* Calls on_close hooks; safe with a hook still running on the pool. */
void			 filter_session_free(struct filter_session *);

const char		*filter_phase_name(enum filter_phase);
const char		*filter_verdict_name(enum fmx_verdict);

/*
 * Validate a reply a module or rule supplies: 4xx/5xx, RFC 5321 multi-line
 * syntax with '\n' between lines, same code on every line, printable
 * ASCII only.  want_class is 4 or 5, or 0 for either.  0 ok, -1 bad.
 */
int			 filter_reply_valid(const char *reply, int want_class);

/*
 * The DNS resolver the core lends to filters (proxy/dns.c installs it:
 * filters never depend on the proxy).  query() starts an asynchronous
 * lookup on the event loop of base and returns an id for cancel(), or 0
 * when it could not start; done runs later on that loop with the raw
 * answer (rcode -1 and no packet on timeout or error).
 */
typedef void (*filter_dns_done)(void *arg, int rcode, const unsigned char *pkt,
    size_t len);
struct filter_resolver {
	unsigned long long	(*query)(struct event_base *, const char *name,
				    int type, filter_dns_done, void *arg);
	void			(*cancel)(struct event_base *, unsigned long long id);
};
void			 filter_resolver_set(const struct filter_resolver *);

/* Start/stop the thread pool for FMX_FLAG_BLOCKING filters (filter_pool.c). */
int			 filter_pool_start(unsigned threads, unsigned queue_max);
void			 filter_pool_stop(void);

#endif
