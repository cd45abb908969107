/*
 * worker.c - worker threads, listeners, drain, connection limits
 *
 * DESCRIPTION
 *	Each worker owns one event_base and its own SO_REUSEPORT socket per
 *	configured listener, so the kernel spreads connections over the
 *	workers and no lock is taken on the accept path.  A session never
 *	leaves the worker that accepted it.
 *
 *	Drain (SIGTERM): the main thread activates drain_ev; the worker closes
 *	its listeners, tells idle sessions 421, and lets busy ones finish for
 *	timeouts.shutdown_grace seconds before forcing them.  The loop then
 *	ends by itself once the last session and the last upstream QUIT are
 *	gone.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "config.h"
#include "dns.h"
#include "filter_chain.h"
#include "log.h"
#include "smtp_session.h"
#include "worker.h"

#define WORKER_BACKLOG		511
#define WORKER_CONN_BUCKETS	4096

/* Per-client-address connection count, shared by all workers. */
struct worker_conn {
	struct worker_conn	*next;
	int			 family;
	uint8_t			 addr[16];
	size_t			 count;
};

static pthread_mutex_t worker_chain_lock = PTHREAD_MUTEX_INITIALIZER;
static struct filter_chain *worker_chain;

static pthread_mutex_t worker_conn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct worker_conn *worker_conn_table[WORKER_CONN_BUCKETS];
static size_t worker_conn_total;

struct filter_chain *
worker_chain_get(void)
{
	struct filter_chain *ch;

	pthread_mutex_lock(&worker_chain_lock);
	ch = worker_chain;
	filter_chain_ref(ch);
	pthread_mutex_unlock(&worker_chain_lock);
	return ch;
}

struct config *
worker_config_get(void)
{
	struct filter_chain *ch = worker_chain_get();
	struct config *cfg = filter_chain_config(ch);

	config_ref(cfg);
	filter_chain_unref(ch);
	return cfg;
}

void
worker_chain_set(struct filter_chain *ch)
{
	struct filter_chain *old;

	pthread_mutex_lock(&worker_chain_lock);
	old = worker_chain;
	worker_chain = ch;
	pthread_mutex_unlock(&worker_chain_lock);
	filter_chain_unref(old);
}

/* The address bytes that identify a client; v4-mapped v6 counts as v4. */
static int
worker_conn_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(key, &a->s6_addr[12], 4);
			return AF_INET;
		}
		memcpy(key, a, 16);
		return AF_INET6;
	}
	return AF_UNSPEC;
}

static size_t
worker_conn_hash(int family, const uint8_t key[16])
{
	uint32_t h = 2166136261u;	/* FNV-1a */
	size_t i;

	for (i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return (h ^ (uint32_t)family) % WORKER_CONN_BUCKETS;
}

void
worker_conn_force(const struct sockaddr *sa)
{
	static const struct config unlimited = {
		.limits = { .connections = SIZE_MAX, .connections_per_ip = 0 },
	};

	if (worker_conn_acquire(sa, &unlimited) == -1)
		fatalx("worker_conn_force: out of memory");
}

int
worker_conn_acquire(const struct sockaddr *sa, const struct config *cfg)
{
	struct worker_conn *c;
	uint8_t key[16];
	int family = worker_conn_key(sa, key);
	size_t b = worker_conn_hash(family, key);
	int rc = 0;

	pthread_mutex_lock(&worker_conn_lock);
	for (c = worker_conn_table[b]; c != NULL; c = c->next)
		if (c->family == family && memcmp(c->addr, key, 16) == 0)
			break;
	if (worker_conn_total >= cfg->limits.connections ||
	    (c != NULL && cfg->limits.connections_per_ip != 0 &&
	    c->count >= cfg->limits.connections_per_ip)) {
		rc = -1;
		goto out;
	}
	if (c == NULL) {
		if ((c = calloc(1, sizeof *c)) == NULL) {
			rc = -1;
			goto out;
		}
		c->family = family;
		memcpy(c->addr, key, 16);
		c->next = worker_conn_table[b];
		worker_conn_table[b] = c;
	}
	c->count++;
	worker_conn_total++;
out:
	pthread_mutex_unlock(&worker_conn_lock);
	return rc;
}

void
worker_conn_release(const struct sockaddr *sa)
{
	struct worker_conn *c, **pp;
	uint8_t key[16];
	int family = worker_conn_key(sa, key);
	size_t b = worker_conn_hash(family, key);

	pthread_mutex_lock(&worker_conn_lock);
	for (pp = &worker_conn_table[b]; (c = *pp) != NULL; pp = &c->next)
		if (c->family == family && memcmp(c->addr, key, 16) == 0)
			break;
	if (c == NULL)
		fatalx("worker_conn_release: unknown client");
	worker_conn_total--;
	if (--c->count == 0) {
		*pp = c->next;
		free(c);
	}
	pthread_mutex_unlock(&worker_conn_lock);
}

static void
worker_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	static const char busy[] = "421 4.7.0 Error: too many connections\r\n";
	struct worker_listener *wl = arg;
	struct worker *w = wl->worker;
	struct filter_chain *ch;

	(void)l;
	ch = worker_chain_get();
	if (worker_conn_acquire(sa, filter_chain_config(ch)) == -1) {
		/* Best effort: the socket is fresh, a short write is harmless. */
		if (write(fd, busy, sizeof busy - 1) < 0)
			log_debug("worker: 421 write: %s", strerror(errno));
		log_info("connection refused reason=limit");
		close(fd);
		filter_chain_unref(ch);
		return;
	}
	smtp_session_start(w, fd, sa, (socklen_t)salen, ch, wl->index);
}

static void
worker_accept_error(struct evconnlistener *l, void *arg)
{
	struct worker *w = ((struct worker_listener *)arg)->worker;

	(void)l;
	/* EMFILE and friends: keep running, the next accept may succeed. */
	log_warn("worker %u accept: %s", w->id, strerror(errno));
}

static void
worker_free_listeners(struct worker *w)
{
	size_t i;

	for (i = 0; i < w->nlisteners; i++)
		if (w->listeners[i] != NULL)
			evconnlistener_free(w->listeners[i]);
	free(w->listeners);
	w->listeners = NULL;
	free(w->largs);
	w->largs = NULL;
	w->nlisteners = 0;
}

static void
worker_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	log_info("worker %u grace period over, closing %zu sessions", w->id,
	    w->nsessions);
	smtp_session_drain_all(w, 1);
}

static void
worker_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct config *cfg;
	struct timeval tv = { 0 };

	(void)fd;
	(void)what;
	w->draining = 1;
	worker_free_listeners(w);
	smtp_session_drain_all(w, 0);
	if (w->nsessions == 0)
		dns_release(w->base);
	if (w->nsessions > 0) {
		cfg = worker_config_get();
		tv.tv_sec = cfg->timeouts.shutdown_grace;
		config_unref(cfg);
		evtimer_add(w->grace_ev, &tv);
	}
}

void
worker_session_gone(struct worker *w)
{
	if (w->draining && w->nsessions == 0) {
		evtimer_del(w->grace_ev);
		dns_release(w->base);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	event_base_dispatch(w->base);
	/* Forced exit with sessions left (should not happen): free them. */
	smtp_session_free_all(w);
	return NULL;
}

int
worker_start(struct worker *w, unsigned id, const struct config *cfg)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	    LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC;
	struct event_config *ecfg;
	size_t i;

	memset(w, 0, sizeof *w);
	w->id = id;
	TAILQ_INIT(&w->sessions);
	/*
	 * The epoll changelist folds the add/delete pairs a bufferevent makes
	 * within one loop iteration into one epoll_ctl (or none).
	 */
	if ((ecfg = event_config_new()) == NULL)
		return -1;
	event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = event_base_new_with_config(ecfg);
	event_config_free(ecfg);
	if (w->base == NULL)
		return -1;
	w->drain_ev = event_new(w->base, -1, 0, worker_drain_cb, w);
	w->grace_ev = evtimer_new(w->base, worker_grace_cb, w);
	w->listeners = calloc(cfg->nlisteners, sizeof *w->listeners);
	w->largs = calloc(cfg->nlisteners, sizeof *w->largs);
	if (w->drain_ev == NULL || w->grace_ev == NULL || w->listeners == NULL ||
	    w->largs == NULL)
		return -1;
	w->nlisteners = cfg->nlisteners;
	for (i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *li = &cfg->listeners[i];
		unsigned f = flags;

		/* [::]:25 and 0.0.0.0:25 may both be configured. */
		if (li->sa.ss_family == AF_INET6)
			f |= LEV_OPT_BIND_IPV6ONLY;
		w->largs[i].worker = w;
		w->largs[i].index = i;
		w->listeners[i] = evconnlistener_new_bind(w->base, worker_accept,
		    &w->largs[i], f, WORKER_BACKLOG, (const struct sockaddr *)&li->sa,
		    (int)li->salen);
		if (w->listeners[i] == NULL) {
			log_warn("listen %s: %s", li->address, strerror(errno));
			return -1;
		}
		evconnlistener_set_error_cb(w->listeners[i], worker_accept_error);
	}
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return -1;
	return 0;
}

void
worker_drain(struct worker *w)
{
	event_active(w->drain_ev, 0, 0);
}

void
worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	worker_free_listeners(w);
	event_free(w->drain_ev);
	event_free(w->grace_ev);
	event_base_free(w->base);
}
