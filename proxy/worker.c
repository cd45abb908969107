/*
 * worker.c - worker threads, listeners, drain
 *
 * DESCRIPTION
 *	Each worker owns one event_base and its own SO_REUSEPORT socket per
 *	configured listener, so the kernel spreads connections over the
 *	workers and no lock is taken on the accept path.  A session never
 *	leaves the worker that accepted it.
 *
 *	Listening sockets are known by address.  On SIGHUP each worker
 *	closes the sockets whose address left the listen list and binds the
 *	new ones, and every connection takes the settings of the current
 *	configuration's entry for its socket's address, so a reordered list
 *	never gives one port another's TLS or PROXY settings.  A session
 *	keeps the configuration it started with to its end.
 *
 *	The worker counts each connection it accepts (limit.c) and hands it
 *	to smtp_session_start() with its struct smtp_host: the event base,
 *	the session list, and the callback by which a freed session lets a
 *	drain finish.  The worker calls the session, never the reverse.
 *
 *	At the fd limit accept() fails with the client still queued; the
 *	worker answers that client 421 with a reserve descriptor, pauses its
 *	listeners briefly and warns once per interval instead of spinning.
 *
 *	Drain (SIGTERM): the main thread activates drain_ev; the worker closes
 *	its listeners, tells idle sessions 421, and lets busy ones finish for
 *	timeouts.shutdown_grace seconds before forcing them.  The loop then
 *	ends by itself once the last session and the last upstream QUIT are
 *	gone.
 *
 *	The prober (worker 0's loop) keeps the upstream's capabilities,
 *	which every EHLO reply is built from, current: after the start-up
 *	probe it connects every upstream.probe_interval seconds (EHLO,
 *	QUIT), retries after 1, 2, 4 ... up to 30 seconds while the upstream
 *	is unreachable, and looks at once when a session finds it gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
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
#include "deliver.h"
#include "dns.h"
#include "filter_chain.h"
#include "limit.h"
#include "log.h"
#include "netaddr.h"
#include "metrics.h"
#include "redis_client.h"
#include "runtime.h"
#include "smtp_session.h"
#include "upstream.h"
#include "upstream_pool.h"
#include "worker.h"

#define WORKER_BACKLOG		511
#define WORKER_ACCEPT_PAUSE_US	100000	/* no accepts for 0.1 s after running out of fds */
#define WORKER_ACCEPT_LOG	10	/* seconds between "accept:" warnings */
#define WORKER_PROBE_RETRY_MAX	30	/* seconds between probes of an unreachable upstream */


static pthread_mutex_t worker_rt_lock = PTHREAD_MUTEX_INITIALIZER;
static struct runtime *worker_rt;

/*
 * The capability prober.  Its timer and probe live on worker 0's loop;
 * other threads only activate the timer, under worker_probe_lock, which
 * also orders the kick against worker 0's stop: once stopped is set, no
 * thread touches the timer or worker 0's base again.
 */
static pthread_mutex_t worker_probe_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	struct event_base	*base;
	struct event		*ev;
	struct upstream		*up;		/* the probe in flight */
	struct runtime		*rt;		/* held while it runs */
	unsigned		 retry;		/* next back-off, seconds */
	atomic_int		 failing;	/* the last probe failed */
	atomic_int		 kicked;	/* a wake-up is pending */
	atomic_int		 stopped;
} worker_probe;


struct runtime *
worker_runtime_get(void)
{
	struct runtime *rt;

	pthread_mutex_lock(&worker_rt_lock);
	rt = worker_rt;
	runtime_ref(rt);
	pthread_mutex_unlock(&worker_rt_lock);
	return rt;
}

struct config *
worker_config_get(void)
{
	struct runtime *rt = worker_runtime_get();
	struct config *cfg = runtime_config(rt);

	config_ref(cfg);
	runtime_unref(rt);
	return cfg;
}

void
worker_runtime_set(struct runtime *rt)
{
	struct runtime *old;

	pthread_mutex_lock(&worker_rt_lock);
	old = worker_rt;
	worker_rt = rt;
	pthread_mutex_unlock(&worker_rt_lock);
	runtime_unref(old);
}

static void
worker_probe_after(unsigned secs)
{
	struct timeval tv = { .tv_sec = secs };

	if (!atomic_load(&worker_probe.stopped))
		evtimer_add(worker_probe.ev, &tv);
}

static void
worker_probe_done(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct runtime *rt = worker_probe.rt;
	const struct config *cfg = runtime_config(rt);
	unsigned next, cap;

	(void)arg;
	(void)r;
	/* A QUIT when it answered; gone at once when it did not. */
	upstream_close(worker_probe.up);
	worker_probe.up = NULL;
	worker_probe.rt = NULL;
	next = cfg->upstream_probe_interval;
	if (err == UPSTREAM_OK) {
		/* upstream_ready() published the capabilities. */
		if (atomic_exchange(&worker_probe.failing, 0))
			log_info("upstream %s reachable again",
			    cfg->upstream_address);
		worker_probe.retry = 0;
	} else {
		cap = next < WORKER_PROBE_RETRY_MAX ? next : WORKER_PROBE_RETRY_MAX;
		worker_probe.retry = worker_probe.retry == 0 ? 1 :
		    worker_probe.retry * 2 > cap ? cap : worker_probe.retry * 2;
		/* One line an outage, not one a retry. */
		if (!atomic_exchange(&worker_probe.failing, 1))
			log_info("upstream probe failed: %s; retrying every "
			    "%u s at most", upstream_strerror(err), cap);
		else
			log_debug("upstream probe failed: %s; next in %u s",
			    upstream_strerror(err), worker_probe.retry);
		next = worker_probe.retry;
	}
	runtime_unref(rt);
	worker_probe_after(next);
}

static void
worker_probe_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_client cl = UPSTREAM_CLIENT_PROBE;
	const struct config *cfg;
	struct runtime *rt;

	(void)fd;
	(void)what;
	(void)arg;
	atomic_store(&worker_probe.kicked, 0);
	if (atomic_load(&worker_probe.stopped) || worker_probe.up != NULL)
		return;		/* the probe in flight reschedules */
	rt = worker_runtime_get();
	cfg = runtime_config(rt);
	/* SIGHUP may have changed the upstream to dir: (or back). */
	if (!deliver_upstream(cfg, &cl.lmtp)) {
		worker_probe_after(cfg->upstream_probe_interval);
		runtime_unref(rt);
		return;
	}
	worker_probe.rt = rt;
	worker_probe.up = upstream_open(worker_probe.base, cfg,
	    runtime_client_ctx(rt), &cl, 0, worker_probe_done, NULL);
	if (worker_probe.up == NULL) {
		worker_probe.rt = NULL;
		worker_probe_after(cfg->upstream_probe_interval);
		runtime_unref(rt);
	}
}

/*
 * Probe now (any thread): a session could not reach the upstream, or the
 * configuration was reloaded.  While probes fail, their back-off stands.
 */
void
worker_probe_kick(void)
{
	pthread_mutex_lock(&worker_probe_lock);
	if (worker_probe.ev != NULL && !atomic_load(&worker_probe.stopped) &&
	    !atomic_load(&worker_probe.failing) &&
	    !atomic_exchange(&worker_probe.kicked, 1))
		event_active(worker_probe.ev, EV_TIMEOUT, 1);
	pthread_mutex_unlock(&worker_probe_lock);
}

static int
worker_probe_start(struct event_base *base, const struct config *cfg)
{
	struct smtp_ehlo_caps caps;
	int known;

	worker_probe.base = base;
	if ((worker_probe.ev = evtimer_new(base, worker_probe_cb, NULL)) == NULL)
		return -1;
	upstream_on_unreachable(worker_probe_kick);
	upstream_caps_get(&caps, &known);
	/* Not reached at start: look again at once, then back off. */
	atomic_store(&worker_probe.failing, !known);
	worker_probe.retry = 0;
	worker_probe_after(known ? cfg->upstream_probe_interval : 0);
	return 0;
}

/* On worker 0's thread, at drain: the loop must be free to end. */
static void
worker_probe_stop(void)
{
	pthread_mutex_lock(&worker_probe_lock);
	atomic_store(&worker_probe.stopped, 1);
	pthread_mutex_unlock(&worker_probe_lock);
	evtimer_del(worker_probe.ev);
	if (worker_probe.up != NULL) {
		upstream_close(worker_probe.up);
		worker_probe.up = NULL;
		runtime_unref(worker_probe.rt);
		worker_probe.rt = NULL;
	}
}

/* Same address and port (what a listen entry is matched by on reload). */
static int
worker_sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;

		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
	}
	return 0;
}

/* The index of cfg's listener with this address, or SIZE_MAX. */
static size_t
worker_listener_index(const struct config *cfg, const struct sockaddr_storage *sa)
{
	size_t i;

	for (i = 0; i < cfg->nlisteners; i++)
		if (worker_sa_equal(&cfg->listeners[i].sa, sa))
			return i;
	return SIZE_MAX;
}

/* The client's address for a log line, before any session names it. */
static const char *
worker_addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a = sa->sa_family == AF_INET6 ?
	    (const void *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr :
	    (const void *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;

	if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
	    inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "unknown");
	return buf;
}

static void
worker_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	char addr[INET6_ADDRSTRLEN];
	const struct config_listener *lst;
	struct config *cfg;
	static const char busy[] = "421 4.7.0 Error: too many connections\r\n";
	static const char gone[] = "421 4.3.2 Error: no longer listening here\r\n";
	struct worker_listener *wl = arg;
	struct worker *w = wl->worker;
	struct runtime *rt;
	size_t index;

	(void)l;
	rt = worker_runtime_get();
	/*
	 * The settings are those of the current configuration's entry for
	 * this socket's address, never of whatever sits at the same place
	 * in the list.  A socket whose address was just removed (this
	 * worker has not closed it yet) takes no more connections.
	 */
	index = worker_listener_index(runtime_config(rt), &wl->sa);
	if (index == SIZE_MAX) {
		if (write(fd, gone, sizeof gone - 1) < 0)
			log_debug("worker: 421 write: %s", strerror(errno));
		close(fd);
		runtime_unref(rt);
		return;
	}
	cfg = runtime_config(rt);
	lst = &cfg->listeners[index];
	if (limit_conn_acquire_per_ip(sa, cfg, !(lst->proxy_protocol &&
	    netaddr_mask_match(lst->proxy_from, lst->nproxy_from, sa))) == -1) {
		/* Best effort: the socket is fresh, a short write is harmless. */
		if (write(fd, busy, sizeof busy - 1) < 0)
			log_debug("worker: 421 write: %s", strerror(errno));
		log_info("connection refused reason=limit client=%s",
		    worker_addr_text(sa, addr, sizeof addr));
		metrics_inc(METRIC_CONNECTIONS_REFUSED, "limit");
		close(fd);
		runtime_unref(rt);
		return;
	}
	smtp_session_start(&w->host, fd, sa, (socklen_t)salen, rt, index);
}

static void
worker_listeners_enable(struct worker *w, int on)
{
	size_t i;

	for (i = 0; i < w->nlisteners; i++)
		if (on)
			evconnlistener_enable(w->listeners[i]->lev);
		else
			evconnlistener_disable(w->listeners[i]->lev);
}

static void
worker_pause_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	/* Another thread may have taken the descriptor we gave up. */
	if (w->reserve_fd == -1)
		w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!w->draining)
		worker_listeners_enable(w, 1);
}

/*
 * accept() failed.  Out of descriptors (EMFILE, ENFILE) the pending
 * connection stays queued and the listener fires again at once: left
 * alone the loop spins and logs without end.  So: give up the reserve
 * descriptor to take the client at the head of the queue and tell it 421
 * (it will retry; better than a silent wait), stop accepting for
 * WORKER_ACCEPT_PAUSE, and warn at most once per WORKER_ACCEPT_LOG
 * seconds with the count of failures in between.
 */
static void
worker_accept_error(struct evconnlistener *l, void *arg)
{
	static const char busy[] = "421 4.3.2 Error: out of resources, try again later\r\n";
	struct worker_listener *wl = arg;
	struct worker *w = wl->worker;
	struct timeval tv = { 0, WORKER_ACCEPT_PAUSE_US };
	time_t now = time(NULL);
	int err = errno, fd;

	w->accept_failed++;
	if (now - w->accept_log_at >= WORKER_ACCEPT_LOG) {
		log_warn("worker %u accept: %s (%lu times since the last "
		    "warning)%s", w->id, strerror(err), w->accept_failed,
		    err == EMFILE || err == ENFILE ? "; pausing accepts" : "");
		w->accept_log_at = now;
		w->accept_failed = 0;
	}
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return;
	if (w->reserve_fd != -1) {
		close(w->reserve_fd);
		if ((fd = accept(evconnlistener_get_fd(l), NULL, NULL)) != -1) {
			if (write(fd, busy, sizeof busy - 1) < 0)
				log_debug("worker: 421 write: %s", strerror(errno));
			close(fd);
			metrics_inc(METRIC_CONNECTIONS_REFUSED, "fd-limit");
		}
		w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (!w->draining) {
		worker_listeners_enable(w, 0);
		evtimer_add(w->pause_ev, &tv);
	}
}

static void
worker_listener_free(struct worker_listener *wl)
{
	if (wl == NULL)
		return;
	if (wl->lev != NULL)
		evconnlistener_free(wl->lev);
	free(wl->address);
	free(wl);
}

static void
worker_free_listeners(struct worker *w)
{
	size_t i;

	for (i = 0; i < w->nlisteners; i++)
		worker_listener_free(w->listeners[i]);
	free(w->listeners);
	w->listeners = NULL;
	w->nlisteners = 0;
}

/* Bind one more socket for li; NULL (logged) on failure. */
static struct worker_listener *
worker_listener_new(struct worker *w, const struct config_listener *li)
{
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	    LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC;
	struct worker_listener *wl;
	unsigned f = flags;

	if ((wl = calloc(1, sizeof *wl)) == NULL ||
	    (wl->address = strdup(li->address)) == NULL) {
		log_warn("listen %s: out of memory", li->address);
		if (wl != NULL)
			free(wl);
		return NULL;
	}
	wl->worker = w;
	memcpy(&wl->sa, &li->sa, sizeof wl->sa);
	wl->salen = li->salen;
	/* [::]:25 and 0.0.0.0:25 may both be configured. */
	if (li->sa.ss_family == AF_INET6)
		f |= LEV_OPT_BIND_IPV6ONLY;
	wl->lev = evconnlistener_new_bind(w->base, worker_accept, wl, f,
	    WORKER_BACKLOG, (const struct sockaddr *)&li->sa, (int)li->salen);
	if (wl->lev == NULL) {
		log_warn("listen %s: %s", li->address, strerror(errno));
		worker_listener_free(wl);
		return NULL;
	}
	evconnlistener_set_error_cb(wl->lev, worker_accept_error);
	return wl;
}

/*
 * Make this worker's sockets match cfg's listen list, by address: keep
 * the ones still listed, close the others (their sessions go on), bind
 * the new ones.  -1 if a new one could not be bound (logged).
 */
static int
worker_listeners_sync(struct worker *w, const struct config *cfg)
{
	struct worker_listener **keep, *wl;
	size_t i, j, n = 0;
	int rc = 0;

	if ((keep = calloc(cfg->nlisteners ? cfg->nlisteners : 1,
	    sizeof *keep)) == NULL) {
		log_warn("worker %u: listeners: out of memory", w->id);
		return -1;
	}
	for (i = 0; i < cfg->nlisteners; i++) {
		for (j = 0; j < w->nlisteners; j++)
			if (w->listeners[j] != NULL &&
			    worker_sa_equal(&w->listeners[j]->sa, &cfg->listeners[i].sa))
				break;
		if (j < w->nlisteners) {
			wl = w->listeners[j];
			w->listeners[j] = NULL;
		} else if ((wl = worker_listener_new(w, &cfg->listeners[i])) == NULL) {
			rc = -1;
			continue;
		} else if (w->id == 0)
			log_info("listening on %s", cfg->listeners[i].address);
		keep[n++] = wl;
	}
	for (j = 0; j < w->nlisteners; j++)
		if (w->listeners[j] != NULL) {
			if (w->id == 0)
				log_info("no longer listening on %s",
				    w->listeners[j]->address);
			worker_listener_free(w->listeners[j]);
		}
	free(w->listeners);
	w->listeners = keep;
	w->nlisteners = n;
	/* A pause for lack of fds ends with its timer, not here. */
	if (evtimer_pending(w->pause_ev, NULL))
		worker_listeners_enable(w, 0);
	return rc;
}

static void
worker_reload_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct config *cfg;

	(void)fd;
	(void)what;
	if (w->draining)
		return;
	/* Pooled upstream connections were made under the old configuration. */
	upstream_pool_flush(0);
	cfg = worker_config_get();
	(void)worker_listeners_sync(w, cfg);
	config_unref(cfg);
}

static void
worker_grace_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	log_info("worker %u grace period over, closing %zu sessions", w->id,
	    w->host.nsessions);
	smtp_session_drain_all(&w->host, 1);
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
	evtimer_del(w->pause_ev);
	if (w->id == 0)
		worker_probe_stop();
	worker_free_listeners(w);
	upstream_pool_flush(1);		/* their QUITs end, then the loop can */
	smtp_session_drain_all(&w->host, 0);
	if (w->host.nsessions == 0) {
		dns_release(w->base);
		redis_client_release();
	}
	if (w->host.nsessions > 0) {
		cfg = worker_config_get();
		tv.tv_sec = cfg->timeouts.shutdown_grace;
		config_unref(cfg);
		evtimer_add(w->grace_ev, &tv);
	}
}

/* A session was freed (struct smtp_host): a drain may be complete. */
static void
worker_session_gone(void *arg)
{
	struct worker *w = arg;

	if (w->draining && w->host.nsessions == 0) {
		evtimer_del(w->grace_ev);
		dns_release(w->base);
		redis_client_release();	/* this thread's: the loop may end */
	}
}

/*
 * event_base_dispatch() one iteration at a time, so that the lines the
 * iteration logged leave in one write(2) before the loop blocks again
 * (log_hold_begin): libevent 2.1 has no hook that runs before the poll.
 * EVLOOP_ONCE returns once the active callbacks ran; the loop ends as
 * dispatch's does, when no event is left (1), on error (-1) or when
 * event_base_loopexit/loopbreak ended this iteration.
 */
static void
worker_loop(struct event_base *base)
{
	int r;

	log_hold_begin();
	do {
		r = event_base_loop(base, EVLOOP_ONCE);
		log_flush();
	} while (r == 0 && !event_base_got_exit(base) && !event_base_got_break(base));
	log_hold_end();
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	worker_loop(w->base);
	/* Forced exit with sessions left (should not happen): free them. */
	smtp_session_free_all(&w->host);
	redis_client_release();
	return NULL;
}

int
worker_start(struct worker *w, unsigned id, const struct config *cfg)
{
	char name[16];		/* a thread name's limit, NUL included */

	memset(w, 0, sizeof *w);
	w->id = id;
	w->reserve_fd = -1;
	TAILQ_INIT(&w->host.sessions);
	w->host.gone = worker_session_gone;
	w->host.arg = w;
	/*
	 * No epoll changelist (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST): it
	 * postpones every epoll_ctl to the next dispatch, so the delete for a
	 * connection freed in a callback reached the kernel after
	 * bufferevent_free had closed its fd, and failed (EBADF, once per
	 * connection, for the client and the upstream).  What it used to fold,
	 * EPOLLOUT toggled around each write, is gone at the source: plain
	 * sockets are written directly (bev.h).  Measured with strace on
	 * 1000 relayed messages: 5.8 epoll_ctl per message with the changelist,
	 * one of them failing; 6.0 without, none failing.
	 */
	w->base = event_base_new();
	if (w->base == NULL)
		return -1;
	w->host.base = w->base;
	w->drain_ev = event_new(w->base, -1, 0, worker_drain_cb, w);
	w->grace_ev = evtimer_new(w->base, worker_grace_cb, w);
	w->reload_ev = event_new(w->base, -1, 0, worker_reload_cb, w);
	w->pause_ev = evtimer_new(w->base, worker_pause_cb, w);
	if (w->drain_ev == NULL || w->grace_ev == NULL || w->reload_ev == NULL ||
	    w->pause_ev == NULL)
		return -1;
	/* Given up at the fd limit to answer one client 421 (worker_accept_error). */
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (worker_listeners_sync(w, cfg) == -1)
		return -1;
	if (id == 0 && worker_probe_start(w->base, cfg) == -1)
		return -1;
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
		return -1;
	/*
	 * Named for ps -L and top -H, and for the tests: a thread so named
	 * blocked in epoll_wait has written every line it held (log.h).
	 */
	snprintf(name, sizeof name, "fmx-worker-%u", id);
	pthread_setname_np(w->thread, name);
	return 0;
}

void
worker_drain(struct worker *w)
{
	event_active(w->drain_ev, 0, 0);
}

void
worker_reload(struct worker *w)
{
	event_active(w->reload_ev, 0, 0);
}

void
worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
	if (w->id == 0 && worker_probe.ev != NULL) {
		pthread_mutex_lock(&worker_probe_lock);
		event_free(worker_probe.ev);
		worker_probe.ev = NULL;
		pthread_mutex_unlock(&worker_probe_lock);
	}
	worker_free_listeners(w);
	event_free(w->drain_ev);
	event_free(w->grace_ev);
	event_free(w->reload_ev);
	event_free(w->pause_ev);
	if (w->reserve_fd != -1)
		close(w->reserve_fd);
	event_base_free(w->base);
}
