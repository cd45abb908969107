/*
 * metrics_http.c - the /metrics listener (see metrics_http.h)
 *
 * DESCRIPTION
 *	One thread, one event_base, one evhttp.  The workers never touch
 *	it: they count into common/metrics.c's per-thread shards, and a
 *	scrape here sums them (a mutex held for the sum only, which the
 *	workers take only to add a series they never counted before).
 *
 *	evhttp 2.1 has no limit on connections and no hook when it frees
 *	one, so the limit is kept here, with public calls only: evhttp
 *	asks our bevcb for each accepted connection's bufferevent, we keep
 *	a reference to it in a slot, and on the same loop pass (before the
 *	socket can be read) read back the evhttp_connection evhttp made its
 *	callback argument (bufferevent_getcb) to register a close callback.
 *	A bufferevent whose callbacks were cleared (bufferevent_free) is a
 *	connection evhttp already freed: a once-a-second sweep releases
 *	those too, and frees connections past their deadline.  At the
 *	limit the listener is disabled; it is enabled again when a slot
 *	frees.
 *
 *	Configuration moves from the main thread (SIGHUP) to the loop
 *	under mh_lock and an event_active(), so evhttp is only ever used on
 *	its own thread.  The new socket is bound on the main thread, so a
 *	reload can say at once that the address is taken.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"

#define MH_BACKLOG	16	/* connections the kernel holds past the limit */
#define MH_HEADERS_MAX	8192	/* request line and headers */
#define MH_BODY_MAX	1024	/* a GET has none; a POST's is refused unread past this */
#define MH_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

struct mh_conn {
	struct bufferevent		*bev;	/* our reference; NULL: free slot */
	struct evhttp_connection	*evcon;	/* NULL until adopted */
	time_t				 deadline;	/* CLOCK_MONOTONIC seconds */
};

/* What the main thread hands the loop (under mh_lock). */
struct mh_pending {
	int			 set;		/* something to apply */
	int			 swap;		/* close the bound socket, bind lev (may be NULL) */
	struct evconnlistener	*lev;
	unsigned		 max;
	unsigned		 timeout;
};

static pthread_mutex_t	 mh_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mh_pending mh_pending;

/* The loop's own (after start, only its thread touches these). */
static struct {
	struct event_base		*base;
	struct evhttp			*http;
	struct evhttp_bound_socket	*bound;
	struct evconnlistener		*lev;
	struct event			*apply_ev;
	struct event			*adopt_ev;
	struct event			*sweep_ev;
	struct mh_conn			 conns[CONFIG_METRICS_CONNECTIONS_MAX];
	int				 paused;	/* accept() failed: off until the next check */
	unsigned			 active;
	unsigned			 max;
	unsigned			 timeout;
} mh;

/* The main thread's own. */
static struct {
	pthread_t		 thread;
	int			 running;
	struct sockaddr_storage	 sa;		/* bound now; salen 0: none */
	socklen_t		 salen;
} mh_main;

static time_t
mh_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Accept again once below the limit (and a socket is bound, and not paused). */
static void
mh_listen_update(void)
{
	if (mh.lev == NULL)
		return;
	if (mh.active < mh.max && !mh.paused)
		evconnlistener_enable(mh.lev);
	else
		evconnlistener_disable(mh.lev);
}

static void
mh_release(struct mh_conn *c)
{
	if (c->bev == NULL)
		return;
	/* evhttp still holds its own reference while it frees the connection. */
	bufferevent_decref(c->bev);
	c->bev = NULL;
	c->evcon = NULL;
	mh.active--;
	mh_listen_update();
}

static void
mh_closecb(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	mh_release(arg);
}

/* 1 if evhttp freed this connection already (bufferevent_free cleared it). */
static int
mh_gone(struct mh_conn *c, void **evcon)
{
	bufferevent_event_cb	eventcb = NULL;
	void			*arg = NULL;

	bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &arg);
	if (evcon != NULL)
		*evcon = arg;
	return eventcb == NULL || arg == NULL;
}

/*
 * evhttp asks for each accepted connection's bufferevent here; the
 * listener is disabled at the limit, so a free slot is there.
 */
static struct bufferevent *
mh_bevcb(struct event_base *base, void *arg)
{
	struct bufferevent	*bev;
	unsigned		 i;

	(void)arg;
	for (i = 0; i < CONFIG_METRICS_CONNECTIONS_MAX; i++)
		if (mh.conns[i].bev == NULL)
			break;
	if (i == CONFIG_METRICS_CONNECTIONS_MAX ||
	    (bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE)) ==
	    NULL)
		return NULL;	/* evhttp makes its own: unreachable in practice */
	bufferevent_incref(bev);
	mh.conns[i].bev = bev;
	mh.conns[i].evcon = NULL;
	mh.conns[i].deadline = mh_now() + (time_t)mh.timeout;
	mh.active++;
	mh_listen_update();
	event_active(mh.adopt_ev, EV_READ, 1);	/* EV_READ: not the timer */
	return bev;
}

/*
 * accept() failed (out of descriptors: the client stays queued and the
 * listener would fire again at once, a busy loop): stop accepting until
 * the next once-a-second check, one log line each time.
 */
static void
mh_accept_error(struct evconnlistener *lev, void *arg)
{
	(void)arg;
	log_warn("metrics: cannot accept (%s), pausing 1 s",
	    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	mh.paused = 1;
	evconnlistener_disable(lev);
}

/*
 * Each slot: a connection evhttp freed is released, a new one adopted
 * (its close callback set), one past its deadline freed.  Runs on the
 * loop pass of an accept (adopt_ev: evhttp has set its callbacks by
 * then, and the socket cannot have been read yet) and once a second.
 */
static void
mh_check(evutil_socket_t fd, short what, void *arg)
{
	void		*evcon;
	time_t		 now = mh_now();
	unsigned	 i;

	(void)fd;
	(void)arg;
	if (mh.paused && (what & EV_TIMEOUT)) {	/* mh_accept_error: try again */
		mh.paused = 0;
		mh_listen_update();
	}
	for (i = 0; i < CONFIG_METRICS_CONNECTIONS_MAX; i++) {
		struct mh_conn *c = &mh.conns[i];

		if (c->bev == NULL)
			continue;
		if (mh_gone(c, &evcon)) {
			mh_release(c);
		} else if (c->evcon == NULL) {
			c->evcon = evcon;
			evhttp_connection_set_closecb(c->evcon, mh_closecb, c);
		} else if (now >= c->deadline) {
			evhttp_connection_free(c->evcon);	/* calls mh_closecb */
			mh_release(c);
		}
	}
}

static void
mh_text_free(const void *data, size_t len, void *text)
{
	(void)data;
	(void)len;
	free(text);
}

static void
mh_metrics(struct evhttp_request *req, void *arg)
{
	struct evbuffer	*out;
	char		*text = NULL;
	size_t		 len = 0;
	FILE		*fp;
	int		 r;

	(void)arg;
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", MH_CONTENT_TYPE);
	/* evhttp 2.1 would send a HEAD reply's body: send none. */
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		evhttp_send_reply(req, HTTP_OK, "OK", NULL);
		return;
	}
	if ((fp = open_memstream(&text, &len)) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	r = metrics_render(fp);
	if (fclose(fp) != 0 || r == -1 || (out = evbuffer_new()) == NULL) {
		free(text);
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (evbuffer_add_reference(out, text, len, mh_text_free, text) == -1)
		free(text);
	evhttp_send_reply(req, HTTP_OK, "OK", out);
	evbuffer_free(out);
}

static void
mh_notfound(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, HTTP_NOTFOUND, NULL);
}

/* On the loop: what the main thread decided (start-up or SIGHUP). */
static void
mh_apply(evutil_socket_t fd, short what, void *arg)
{
	struct mh_pending	p;

	(void)fd;
	(void)what;
	(void)arg;
	pthread_mutex_lock(&mh_lock);
	p = mh_pending;
	memset(&mh_pending, 0, sizeof mh_pending);
	pthread_mutex_unlock(&mh_lock);
	if (!p.set)
		return;
	mh.max = p.max;
	mh.timeout = p.timeout;
	evhttp_set_timeout(mh.http, (int)p.timeout);
	if (p.swap) {
		/* Closes the old socket; its connections finish on their own. */
		if (mh.bound != NULL)
			evhttp_del_accept_socket(mh.http, mh.bound);
		mh.bound = NULL;
		mh.lev = NULL;
		if (p.lev != NULL) {
			if ((mh.bound = evhttp_bind_listener(mh.http, p.lev)) ==
			    NULL) {
				evconnlistener_free(p.lev);
			} else {
				mh.lev = p.lev;
				evconnlistener_set_error_cb(mh.lev, mh_accept_error);
			}
		}
	}
	mh_listen_update();
}

/* Hand the loop new settings (and a listener, or none, when swap). */
static void
mh_post(int swap, struct evconnlistener *lev, const struct config *cfg)
{
	pthread_mutex_lock(&mh_lock);
	if (mh_pending.swap && mh_pending.lev != NULL)
		evconnlistener_free(mh_pending.lev);	/* two HUPs before the loop ran */
	mh_pending.set = 1;
	mh_pending.swap = swap;
	mh_pending.lev = lev;
	mh_pending.max = cfg->metrics_connections;
	mh_pending.timeout = cfg->metrics_timeout;
	pthread_mutex_unlock(&mh_lock);
	event_active(mh.apply_ev, EV_TIMEOUT, 1);
}

/* Bind cfg's metrics.listen (disabled until the loop takes it). */
static struct evconnlistener *
mh_bind(const struct config *cfg, char *err, size_t errlen)
{
	struct evconnlistener	*lev;
	unsigned		 flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
				    LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED;

	if (cfg->metrics_sa.ss_family == AF_INET6)
		flags |= LEV_OPT_BIND_IPV6ONLY;
	lev = evconnlistener_new_bind(mh.base, NULL, NULL, flags, MH_BACKLOG,
	    (const struct sockaddr *)&cfg->metrics_sa, (int)cfg->metrics_salen);
	if (lev == NULL) {
		snprintf(err, errlen, "%s: metrics.listen %s: %s",
		    cfg->metrics_where, cfg->metrics_listen, strerror(errno));
		return NULL;
	}
	memcpy(&mh_main.sa, &cfg->metrics_sa, sizeof mh_main.sa);
	mh_main.salen = cfg->metrics_salen;
	return lev;
}

static void *
mh_thread(void *arg)
{
	(void)arg;
	event_base_dispatch(mh.base);
	return NULL;
}

static int
mh_boot(char *err, size_t errlen)
{
	const struct timeval	 sec = { 1, 0 };

	if ((mh.base = event_base_new()) == NULL ||
	    (mh.http = evhttp_new(mh.base)) == NULL ||
	    (mh.apply_ev = event_new(mh.base, -1, 0, mh_apply, NULL)) == NULL ||
	    (mh.adopt_ev = event_new(mh.base, -1, 0, mh_check, NULL)) == NULL ||
	    (mh.sweep_ev = event_new(mh.base, -1, EV_PERSIST, mh_check,
	    NULL)) == NULL) {
		snprintf(err, errlen, "metrics: out of memory");
		return -1;
	}
	evhttp_set_max_headers_size(mh.http, MH_HEADERS_MAX);
	evhttp_set_max_body_size(mh.http, MH_BODY_MAX);
	evhttp_set_allowed_methods(mh.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_bevcb(mh.http, mh_bevcb, NULL);
	evhttp_set_cb(mh.http, "/metrics", mh_metrics, NULL);
	evhttp_set_gencb(mh.http, mh_notfound, NULL);
	event_add(mh.sweep_ev, &sec);
	return 0;
}

int
metrics_http_start(const struct config *cfg, char *err, size_t errlen)
{
	struct evconnlistener	*lev;

	if (cfg->metrics_listen == NULL || mh_main.running)
		return 0;
	if (mh.base == NULL && mh_boot(err, errlen) == -1)
		return -1;
	if ((lev = mh_bind(cfg, err, errlen)) == NULL)
		return -1;
	mh_post(1, lev, cfg);
	if (pthread_create(&mh_main.thread, NULL, mh_thread, NULL) != 0) {
		snprintf(err, errlen, "metrics: cannot start its thread");
		return -1;
	}
	mh_main.running = 1;
	log_info("metrics on http://%s/metrics", cfg->metrics_listen);
	return 0;
}

void
metrics_http_reload(const struct config *cfg)
{
	struct evconnlistener	*lev;
	char			 err[CONFIG_ERR_MAX];

	if (!mh_main.running) {
		if (metrics_http_start(cfg, err, sizeof err) == -1)
			log_warn("%s", err);
		return;
	}
	if (cfg->metrics_listen == NULL) {
		if (mh_main.salen != 0)
			log_info("metrics: no longer listening");
		mh_main.salen = 0;
		mh_post(1, NULL, cfg);
		return;
	}
	if (mh_main.salen == cfg->metrics_salen &&
	    memcmp(&mh_main.sa, &cfg->metrics_sa, cfg->metrics_salen) == 0) {
		mh_post(0, NULL, cfg);
		return;
	}
	if ((lev = mh_bind(cfg, err, sizeof err)) == NULL) {
		log_warn("%s; metrics stay where they were", err);
		mh_post(0, NULL, cfg);
		return;
	}
	mh_post(1, lev, cfg);
	log_info("metrics on http://%s/metrics", cfg->metrics_listen);
}

void
metrics_http_stop(void)
{
	unsigned	i;

	if (mh.base == NULL)
		return;
	if (mh_main.running) {
		event_base_loopexit(mh.base, NULL);
		pthread_join(mh_main.thread, NULL);
		mh_main.running = 0;
	}
	/* The loop is gone: this thread owns everything now. */
	pthread_mutex_lock(&mh_lock);
	if (mh_pending.swap && mh_pending.lev != NULL)
		evconnlistener_free(mh_pending.lev);
	memset(&mh_pending, 0, sizeof mh_pending);
	pthread_mutex_unlock(&mh_lock);
	mh.lev = NULL;			/* evhttp_free closes it */
	evhttp_free(mh.http);		/* frees its connections: mh_closecb */
	for (i = 0; i < CONFIG_METRICS_CONNECTIONS_MAX; i++)
		mh_release(&mh.conns[i]);
	event_free(mh.apply_ev);
	event_free(mh.adopt_ev);
	event_free(mh.sweep_ev);
	event_base_free(mh.base);
	memset(&mh, 0, sizeof mh);
}
