/*
 * worker.h - worker threads: one event_base and one SO_REUSEPORT listener
 * set each; the sessions they accepted; process-wide connection counts;
 * the current configuration.
 */
#ifndef FRONTMX_WORKER_H
#define FRONTMX_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>

struct config;
struct event;
struct filter_chain;
struct event_base;
struct evconnlistener;
struct smtp_session;

/* What a listener's accept callback needs: its worker and its config index. */
struct worker_listener {
	struct worker		*worker;
	size_t			 index;
};

struct worker {
	unsigned		 id;
	pthread_t		 thread;
	struct event_base	*base;
	struct evconnlistener	**listeners;
	struct worker_listener	*largs;
	size_t			 nlisteners;
	struct event		*drain_ev;	/* main thread -> worker: stop accepting */
	struct event		*grace_ev;	/* end of the drain grace period */
	int			 draining;
	size_t			 nsessions;
	TAILQ_HEAD(, smtp_session) sessions;
};

/*
 * The current filter chain (which holds its configuration), with a
 * reference the caller must drop.  worker_config_get() is the same for
 * callers that only need the configuration.
 */
struct filter_chain *worker_chain_get(void);
struct config	*worker_config_get(void);
/* Install a new chain (the old one lives on in its sessions); takes the reference. */
void		 worker_chain_set(struct filter_chain *);

int		 worker_start(struct worker *, unsigned id, const struct config *);
void		 worker_drain(struct worker *);
void		 worker_join(struct worker *);
/* Called by a session as it ends: the worker may finish its drain. */
void		 worker_session_gone(struct worker *);

/* Process-wide concurrency limits; 0 admitted, -1 over a limit. */
int		 worker_conn_acquire(const struct sockaddr *, const struct config *);
void		 worker_conn_release(const struct sockaddr *);
/* Count a connection even over the limits (it is about to be refused). */
void		 worker_conn_force(const struct sockaddr *);

#endif
