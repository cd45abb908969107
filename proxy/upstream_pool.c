/*
 * upstream_pool.c - idle upstream connections kept for the next client
 *
 * DESCRIPTION
 *	Each worker thread keeps at most upstream.pool.size idle upstream
 *	connections, each for at most upstream.pool.idle seconds, so that a
 *	client session can skip the connect, greeting, EHLO and STARTTLS of
 *	its own.  Only a connection without an identity of its own goes in
 *	(upstream_poolable): XCLIENT binds a connection to one client
 *	(Postfix refuses a second XCLIENT), AUTH to one user; XFORWARD, sent
 *	before every MAIL, carries each client's own facts.  Anything that
 *	leaves a connection's state in doubt (any error, a refused RSET, an
 *	open transaction, a SASL exchange) keeps it out.
 *
 *	Taking one (upstream_pool_take) gives the caller a connection it
 *	must prove with RSET before use (upstream_reuse); a connection that
 *	fails that is dropped and the caller opens a new one
 *	(deliver_smtp.c), so a message is never lost to a stale connection.
 *	While pooled, a connection that dies (the MTA's own idle timeout,
 *	EOF, a stray 421) leaves the pool at once (upstream_park).
 *
 *	The pool is per thread (__thread): a connection's events belong to
 *	its worker's event_base.  A reload flushes it (the address, TLS or
 *	anything else may have changed), and take only hands out connections
 *	made under the caller's own configuration (each connection holds a
 *	reference to its own, so the pointer cannot be reused).  At drain
 *	the pool closes everything and takes nothing more, so the worker's
 *	loop can end.
 */
#include <stdlib.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "upstream.h"
#include "upstream_pool.h"

struct upool_conn {
	TAILQ_ENTRY(upool_conn)	 entry;
	struct upstream		*up;
	const struct config	*cfg;	/* the one it was made under (the connection holds it) */
	struct event		*idle;
	unsigned long long	 sid;	/* the session that used it last: logs */
};

TAILQ_HEAD(upool_list, upool_conn);

static __thread struct upool_list upool;
static __thread int upool_ready;	/* TAILQ_INIT: no static initializer for a __thread head */
static __thread unsigned upool_n;
static __thread int upool_draining;

static void
upool_init(void)
{
	if (!upool_ready) {
		TAILQ_INIT(&upool);
		upool_ready = 1;
	}
}

/* Out of the pool; the caller has the connection (or closes it). */
static struct upstream *
upool_remove(struct upool_conn *e)
{
	struct upstream *up = e->up;

	TAILQ_REMOVE(&upool, e, entry);
	upool_n--;
	event_free(e->idle);
	free(e);
	upstream_park(up, 0, NULL, NULL);
	return up;
}

/* Close politely (QUIT; the connection frees itself). */
static void
upool_drop(struct upool_conn *e, const char *why)
{
	unsigned long long sid = e->sid;

	log_debug("%016llx upstream pooled connection dropped: %s", sid, why);
	upstream_close(upool_remove(e));
}

static void
upool_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	upool_drop(arg, "idle time over");
}

/* The pooled connection died (EOF, reset, an unsolicited reply). */
static void
upool_dead_cb(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct upool_conn *e = arg;

	(void)r;
	log_info("%016llx upstream pooled connection lost: %s", e->sid,
	    upstream_strerror(err));
	upstream_close(upool_remove(e));
}

int
upstream_pool_put(struct upstream *up, const struct config *cfg,
    struct event_base *base, unsigned long long sid)
{
	struct timeval tv = { .tv_sec = cfg->upstream_pool_idle };
	struct upool_conn *e;

	upool_init();
	if (upool_draining || cfg->upstream_pool_size == 0 ||
	    upool_n >= cfg->upstream_pool_size || !upstream_poolable(up))
		return 0;
	if ((e = calloc(1, sizeof *e)) == NULL)
		return 0;
	if ((e->idle = evtimer_new(base, upool_idle_cb, e)) == NULL ||
	    evtimer_add(e->idle, &tv) == -1) {
		if (e->idle != NULL)
			event_free(e->idle);
		free(e);
		return 0;
	}
	e->up = up;
	e->cfg = cfg;
	e->sid = sid;
	/* Newest first: take reuses the warmest one, the oldest time out. */
	TAILQ_INSERT_HEAD(&upool, e, entry);
	upool_n++;
	upstream_park(up, sid, upool_dead_cb, e);
	log_debug("%016llx upstream connection pooled (%u idle)", sid, upool_n);
	return 1;
}

struct upstream *
upstream_pool_take(const struct config *cfg,
    const struct upstream_client *client)
{
	struct upool_conn *e, *next;

	upool_init();
	if (cfg->upstream_pool_size == 0 || client->probe)
		return NULL;
	for (e = TAILQ_FIRST(&upool); e != NULL; e = next) {
		next = TAILQ_NEXT(e, entry);
		if (e->cfg != cfg) {
			upool_drop(e, "configuration changed");
			continue;
		}
		/* A client whose mail must stay encrypted gets a TLS one only. */
		if (client->require_tls && !upstream_tls_active(e->up))
			continue;
		return upool_remove(e);
	}
	return NULL;
}

void
upstream_pool_flush(int draining)
{
	upool_init();
	if (draining)
		upool_draining = 1;
	while (!TAILQ_EMPTY(&upool))
		upool_drop(TAILQ_FIRST(&upool), draining ? "draining" :
		    "configuration reloaded");
}
