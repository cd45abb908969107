/*
 * filter_int.h - what filter_chain.c, filter_api.c and filter_pool.c share
 *
 * DESCRIPTION
 *	Private to the three files that implement filter_chain.h; nothing
 *	else includes it.  They split the work so that each reads on its own:
 *
 *	filter_chain.c	builds a chain from a configuration (struct
 *			filter_chain, one struct filter_instance per filter),
 *			runs a phase through the filters (struct filter_session),
 *			maps each answer to an action with policy_decide(), and
 *			keeps the per-message outcome.
 *	filter_api.c	the struct fmx_api modules call: handles instead of
 *			pointers, every argument validated, the DNS queries and
 *			timers modules start.
 *	filter_pool.c	the thread pool FMX_FLAG_BLOCKING hooks run on (struct
 *			filter_job).
 *
 * LOCKING
 *	A session lives on one event-loop thread; only a blocking hook runs
 *	elsewhere, on a pool thread, and its api calls take fs->lock
 *	(recursive) like every api call (filter_api_enter()).  What a pool
 *	thread may see changes under that lock only: c->gen and c->waiting
 *	(filter_chain.c's filter_call_end()) and fs->dead.
 */
#ifndef FRONTMX_FILTER_INT_H
#define FRONTMX_FILTER_INT_H

#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stdint.h>

#include <event2/event.h>

#include "config.h"
#include "filter_chain.h"

#define FILTER_AR_MAX		16
#define FILTER_RCPT_EDITS_MAX	32
#define FILTER_HEADER_VALUE_MAX	900	/* one line of 998 with the name */
#define FILTER_RESULT_MAX	64
#define FILTER_REASON_MAX	200
#define FILTER_FACTS_MAX	32
#define FILTER_FACT_VALUE_MAX	512

/* One configured filter, initialised once per configuration. */
struct filter_instance {
	const struct config_filter	*cf;
	const struct fmx_filter		*ops;
	struct filter_module		*module;	/* NULL for a built-in */
	void				*inst;
	int				 initialised;
};

struct filter_chain {
	struct config			*cfg;
	struct filter_instance		*inst;
	size_t				 ninst;
	unsigned			 wants;		/* 1u << FILTER_PH_* */
	int				 daemon_addr;	/* a milter asks for {daemon_addr} */
	int				 refcount;	/* refcount.h */
	unsigned long			 serial;	/* filter_chain_new() order (filter_builtin.h) */
};

struct fmx_ctx {
	struct filter_session	*fs;
	size_t			 idx;
	uint64_t		 handle;	/* what modules hold (filter_ctx_get) */
	char			 getbuf[64];	/* api->get() of numbers */
	void			*conn_data;
	fmx_free_fn		 conn_free;
	void			*msg_data;
	fmx_free_fn		 msg_free;
	char			 reply[FILTER_REPLY_MAX];
	char			 result[FILTER_RESULT_MAX];
	char			 reason[FILTER_REASON_MAX];
	unsigned		 gen;		/* current call; late answers carry an older one */
	unsigned		 calls;		/* hook calls so far (struct filter_call) */
	int			 in_hook;	/* a hook of this filter is executing */
	int			 waiting;	/* FMX_PENDING or on the pool */
	int			 resumed;	/* resume() came during the hook itself */
	enum fmx_verdict	 resume_verdict;
	int			 failed;	/* timed out: no more calls this session */
	int			 on_pool;	/* a pool thread still runs a hook */
	struct timespec		 call_start;	/* the current call's, for its duration metric */
	struct event		*timer;		/* api->timer() */
	fmx_timer_fn		 timer_fn;
	void			*timer_arg;
	int			 timer_msg;	/* armed during a message: ends with it */
};

/*
 * What a connect, helo or mail hook answered, kept until the recipients'
 * policies are known (delay_reject, Postfix's smtpd_delay_reject): read at
 * each RCPT with that recipient's policy, and for the message at DATA
 * with the transaction's.  Connect answers live as long as the session,
 * helo answers until the next HELO, mail answers until the message ends.
 */
struct filter_held {
	struct filter_held	*next;		/* chain order: phase, then filter */
	enum filter_phase	 phase;
	size_t			 idx;
	enum fmx_verdict	 verdict;
	int			 failed;	/* error, timeout, bad verdict: on_error */
	char			 result[FILTER_RESULT_MAX];
	char			 reason[FILTER_REASON_MAX];
	char			*reply;		/* NULL: the default reply */
	/*
	 * A connect or helo answer already decided at once (delay_reject
	 * off) whose effect is on messages (tag, quarantine, discard, a dry
	 * run's tag): verdict and dry are decided, and each message's
	 * commit marks them, since the message outcome is reset between
	 * messages.
	 */
	int			 mark_only;
	enum fmx_verdict	 dry;
};

struct filter_ar {
	char	method[32];
	char	result[32];
	char	props[256];
};

/* A DNS query a filter has outstanding; cancelled if the session ends first. */
struct filter_dnsq {
	struct filter_dnsq	*next;
	struct fmx_ctx		*c;
	unsigned long long	 id;
	fmx_dns_fn		 fn;
	void			*arg;
	int			 in_query;	/* inside resolver->query() */
	int			 finished;
	int			 msg;		/* started during a message: ends with it */
};

struct filter_session {
	unsigned long long		 session_id;	/* facts may be gone: a copy */
	struct filter_chain		*chain;
	struct event_base		*base;
	const struct filter_facts	*facts;
	struct filter_host		 host;
	struct fmx_ctx			*ctx;
	size_t				 n;
	pthread_mutex_t			 lock;		/* recursive: every api call holds it */
	int				 refs;		/* 1 + pool jobs in flight */
	int				 dead;

	/* The phase being run. */
	enum filter_phase		 phase;
	struct filter_args		 args;
	size_t				 next;
	int				 running;
	filter_done_fn			 done;
	void				*done_arg;
	struct event			*timeout;
	/*
	 * A module's resume() is taken, not acted on: the chain and the
	 * session go on from the loop (filter_resumed_cb), after the
	 * module's callback returned.  NULL: none waiting.
	 */
	struct event			*resumed_ev;
	struct fmx_ctx			*resumed;
	enum fmx_verdict		 resumed_v;

	/* Message state, reset by filter_session_msg_end(). */
	int				 msg_open;
	int				 msg_accepted;	/* a filter said ACCEPT */
	int				 held_accepted;	/* a held ACCEPT, for this recipient */
	struct filter_held		*held;		/* connect/helo/mail answers */
	int				 held_oom;	/* one could not be kept */
	struct filter_outcome		 outcome;
	struct filter_edit		 edits[FILTER_EDITS_MAX];
	size_t				 nedits;
	unsigned char			*body;
	size_t				 bodylen;
	char				*add_rcpts[FILTER_RCPT_EDITS_MAX];
	char				*add_rcpt_args[FILTER_RCPT_EDITS_MAX];	/* ESMTP, or NULL */
	size_t				 nadd_rcpts;
	char				*chg_from;	/* new envelope sender, NULL: unchanged */
	char				*chg_from_args;
	char				*del_rcpts[FILTER_RCPT_EDITS_MAX];
	size_t				 ndel_rcpts;
	struct filter_ar		 ar[FILTER_AR_MAX];
	size_t				 nar;
	char				*fact_key[FILTER_FACTS_MAX];
	char				*fact_value[FILTER_FACTS_MAX];
	size_t				 nfacts;
	struct filter_dnsq		*dnsq;
};

/* A blocking hook's call, run by a pool thread. */
struct filter_job {
	struct filter_job	*next;
	struct filter_session	*fs;
	struct fmx_ctx		*c;
	uint64_t		 handle;
	unsigned		 gen;		/* c->gen when submitted: stale once it moved */
	enum filter_phase	 phase;
	struct filter_args	 args;		/* copies: the session may end meanwhile */
	char			*str, *str2;
	unsigned char		*data;
	char			*copies[32];	/* api->get()/rcpt() results on the pool */
	size_t			 ncopies;
	enum fmx_verdict	 verdict;
	struct event		*keepalive;	/* holds the session's loop open */
};

/* filter_api.c */
extern const struct fmx_api filter_api;
/* The ctx a handle names on this thread, NULL if stale (for built-ins). */
struct fmx_ctx	*filter_api_ctx(struct fmx_ctx *h);
int		 filter_api_handle_new(struct fmx_ctx *);
void		 filter_api_handle_free(struct fmx_ctx *);
/* End the DNS queries (and timers) modules started during the message. */
void		 filter_api_msg_end(struct filter_session *);
/* End every DNS query modules started: the session is going. */
void		 filter_api_session_end(struct filter_session *);

/* filter_chain.c */
enum fmx_verdict filter_chain_call_hook(struct filter_session *, struct fmx_ctx *,
		    enum filter_phase, const struct filter_args *);
void		 filter_chain_call_done(struct filter_session *, struct fmx_ctx *,
		    enum fmx_verdict);
void		 filter_chain_call_resumed(struct filter_session *,
		    struct fmx_ctx *, enum fmx_verdict);
void		 filter_chain_session_release(struct filter_session *);

/* filter_pool.c */
int		 filter_pool_submit(struct filter_session *, struct fmx_ctx *);
/* The blocking call this pool thread runs; NULL on any other thread. */
struct filter_job *filter_pool_job(void);

/* The instance name of c's filter, for logs. */
static inline const char *
filter_ctx_name(const struct fmx_ctx *c)
{
	return c->fs->chain->inst[c->idx].cf->name;
}

#endif
