/*
 * worker.h - worker threads: one event_base and one SO_REUSEPORT listener
 * set each; the sessions they accepted (struct smtp_host); the current
 * configuration.  Connection counts are limit.h.
 */
#ifndef FRONTMX_WORKER_H
#define FRONTMX_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include "smtp_session.h"

struct config;
struct event;
struct filter_chain;
struct runtime;
struct event_base;
struct evconnlistener;
struct smtp_session;

/*
 * One listening socket of a worker.  It is known by its address, not by
 * its place in the configuration: after a reload each connection takes
 * the settings of the current configuration's listener with the same
 * address (issue 8 item 11), and the worker closes sockets whose address
 * left the configuration and binds the new ones.
 */
struct worker_listener {
	struct worker		*worker;
	struct evconnlistener	*lev;
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	char			*address;	/* as configured, for the log */
};

struct worker {
	unsigned		 id;
	pthread_t		 thread;
	struct event_base	*base;
	struct worker_listener	**listeners;
	size_t			 nlisteners;
	struct event		*drain_ev;	/* main thread -> worker: stop accepting */
	struct event		*grace_ev;	/* end of the drain grace period */
	struct event		*reload_ev;	/* main thread -> worker: match the listen list */
	struct event		*pause_ev;	/* accepting again after running out of fds */
	int			 reserve_fd;	/* given up to refuse one client at the fd limit */
	time_t			 accept_log_at;	/* last "accept:" warning */
	unsigned long		 accept_failed;	/* accept errors since then */
	int			 draining;
	struct smtp_host	 host;		/* its sessions; they call back through it */
};

/*
 * The current runtime (configuration, filter chain, TLS contexts:
 * runtime.h), with a reference the caller must drop.  worker_config_get()
 * is the same for callers that only need the configuration.
 */
struct runtime	*worker_runtime_get(void);
struct config	*worker_config_get(void);
/* Install a new runtime (the old one lives on in its sessions); takes the reference. */
void		 worker_runtime_set(struct runtime *);

int		 worker_start(struct worker *, unsigned id, const struct config *);
void		 worker_drain(struct worker *);
/* After worker_runtime_set() on SIGHUP: bind new listen addresses, close gone ones. */
void		 worker_reload(struct worker *);
void		 worker_join(struct worker *);

/*
 * Probe the upstream's capabilities now (any thread); the prober runs on
 * worker 0 from worker_start() on.
 */
void		 worker_probe_kick(void);

#endif
