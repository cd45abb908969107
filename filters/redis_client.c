/*
 * redis_client.c - one asynchronous Redis connection per worker loop
 * (hiredis and its libevent adapter); see redis_client.h for the contract
 *
 * DESCRIPTION
 *	Each worker thread has its own struct redis_client (thread-local:
 *	a session and every callback about it run on that thread, so
 *	nothing here takes a lock).  It is made on the first command and
 *	freed by redis_client_release() when the worker drains.
 *
 *	Ownership of a command (struct redis_req): hiredis calls the reply
 *	callback of every command it took exactly once - with the reply,
 *	or with NULL when the connection is freed - so that callback frees
 *	the request, always.  The per-command timer and the failure paths
 *	only mark it finished (the filter's callback has had its one call);
 *	the timer then frees the connection, which makes hiredis call back
 *	every request still on it with NULL.  Nothing else frees a request,
 *	and no request outlives its connection.
 *
 *	A connection's callbacks (connect, disconnect, AUTH/SELECT replies)
 *	find the client through ac->data and act only when ac is still the
 *	client's current connection: one that was dropped (timeout, new
 *	configuration, failed AUTH) is already forgotten.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

/* hiredis's adapter is static functions in a header, not written for -Wcast-qual. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <hiredis/adapters/libevent.h>
#pragma GCC diagnostic pop

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redis_client.h"

#define REDIS_BACKOFF_FIRST_MS	100
#define REDIS_BACKOFF_MAX_MS	2000

struct redis_client {
	struct event_base	*base;
	redisAsyncContext	*ac;		/* NULL: not connected */
	struct config_redis	 cfg;		/* copy of the section in use */
	unsigned long		 chain_serial;	/* of the configuration it came from */
	struct event		*retry_ev;	/* end of the backoff */
	unsigned		 backoff_ms;	/* the next wait; 0 before a failure */
	int			 backing_off;	/* commands fail at once until retry_ev */
};

struct redis_req {
	struct redis_client	*rc;
	redisAsyncContext	*ac;		/* the connection it was sent on */
	struct filter_call	 call;
	struct redis_script	*script;
	redis_client_fn		 fn;
	void			*arg;
	struct event		*timer;
	int			 finished;	/* fn has had its one call (or never will) */
	int			 retried;	/* NOSCRIPT: sent again as EVAL */
	int			 argc;
	const char		**argv;		/* EVALSHA sha nkeys args..., one allocation */
	size_t			*argvlen;
};

static _Thread_local struct redis_client *redis_client_self;
static pthread_mutex_t redis_script_lock = PTHREAD_MUTEX_INITIALIZER;

static void	redis_client_drop(struct redis_client *, const char *why);

void
redis_script_init(struct redis_script *s)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;

	/* Written once under the lock, read by workers only after a chain exists. */
	pthread_mutex_lock(&redis_script_lock);
	if (s->sha[0] == '\0') {
		if (EVP_Digest(s->text, strlen(s->text), md, &mdlen, EVP_sha1(),
		    NULL) != 1 || mdlen != 20)
			fatalx("redis: SHA-1 of script %s", s->name);
		for (i = 0; i < mdlen; i++)
			snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
	}
	pthread_mutex_unlock(&redis_script_lock);
}

/*
 * Every failure of a command: one count (frontmx_redis_errors_total) and
 * one log line, naming the session when there is one.
 */
__attribute__((format(printf, 2, 3)))
static void
redis_client_error(const struct filter_call *call, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	metrics_inc(METRIC_REDIS_ERRORS);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (call != NULL)
		log_warn("%016llx redis: %s", call->session_id, msg);
	else
		log_warn("redis: %s", msg);
}

/* ---- the connection ------------------------------------------------------ */

static void
redis_client_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_client *rc = arg;

	(void)fd;
	(void)what;
	rc->backing_off = 0;	/* the next command connects */
}

/* Connecting failed or the connection broke: wait before the next try. */
static void
redis_client_backoff(struct redis_client *rc)
{
	unsigned ms = rc->backoff_ms ? rc->backoff_ms : REDIS_BACKOFF_FIRST_MS;
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	rc->backing_off = 1;
	rc->backoff_ms = ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS : ms * 2;
	evtimer_add(rc->retry_ev, &tv);
}

static void
redis_client_connect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_client *rc = ac->data;

	if (rc == NULL || ac != rc->ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac after this and fails what was queued on it. */
		rc->ac = NULL;
		log_warn("redis %s: cannot connect: %s", rc->cfg.address,
		    ac->errstr ? ac->errstr : "error");
		redis_client_backoff(rc);
		return;
	}
	log_info("redis %s: connected", rc->cfg.address);
}

static void
redis_client_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct redis_client *rc = ac->data;

	if (rc == NULL || ac != rc->ac)
		return;
	rc->ac = NULL;
	log_warn("redis %s: connection lost%s%s", rc->cfg.address,
	    status != REDIS_OK ? ": " : "",
	    status != REDIS_OK && ac->errstr ? ac->errstr : "");
	/*
	 * A connection that worked and was closed by the server (its idle
	 * timeout, CLIENT KILL, a firewall) is opened again by the next
	 * command at once: backing off would fail that command for nothing.
	 * backoff_ms is 0 only after a command succeeded, so a server that
	 * closes every connection still gets the growing waits.
	 */
	if (ac->err == REDIS_ERR_EOF && rc->backoff_ms == 0) {
		rc->backoff_ms = REDIS_BACKOFF_FIRST_MS;
		return;
	}
	redis_client_backoff(rc);
}

/* AUTH or SELECT answered: an error makes the connection useless. */
static void
redis_client_setup_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_client *rc = ac->data;
	const redisReply *reply = r;
	const char *what = priv;

	if (reply == NULL || rc == NULL || ac != rc->ac)
		return;
	if (reply->type == REDIS_REPLY_ERROR) {
		/* The reply, never the password. */
		log_warn("redis %s: %s refused: %.200s", rc->cfg.address, what,
		    reply->str);
		redis_client_drop(rc, NULL);
		redis_client_backoff(rc);
	}
}

/*
 * Forget the connection and free it: hiredis calls every command still
 * on it back with NULL (each fails), now or, inside one of its
 * callbacks, as soon as that returns.
 */
static void
redis_client_drop(struct redis_client *rc, const char *why)
{
	redisAsyncContext *ac = rc->ac;

	if (ac == NULL)
		return;
	rc->ac = NULL;
	if (why != NULL)
		log_warn("redis %s: closing the connection: %s", rc->cfg.address, why);
	redisAsyncFree(ac);
}

static redisAsyncContext *
redis_client_connect(struct redis_client *rc, const struct filter_call *call)
{
	redisAsyncContext *ac;

	if (rc->ac != NULL)
		return rc->ac;
	if (rc->backing_off) {
		redis_client_error(call, "%s unavailable, retrying shortly",
		    rc->cfg.address);
		return NULL;
	}
	ac = rc->cfg.unix_path != NULL ? redisAsyncConnectUnix(rc->cfg.unix_path) :
	    redisAsyncConnect(rc->cfg.host, (int)rc->cfg.port);
	if (ac == NULL || ac->err) {
		redis_client_error(call, "%s: cannot connect: %s", rc->cfg.address,
		    ac != NULL && ac->errstr ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		redis_client_backoff(rc);
		return NULL;
	}
	ac->data = rc;
	if (redisLibeventAttach(ac, rc->base) != REDIS_OK) {
		redis_client_error(call, "%s: cannot attach to the loop",
		    rc->cfg.address);
		redisAsyncFree(ac);
		return NULL;
	}
	redisAsyncSetConnectCallback(ac, redis_client_connect_cb);
	redisAsyncSetDisconnectCallback(ac, redis_client_disconnect_cb);
	rc->ac = ac;
	/* Queued first: every command on this connection comes after them. */
	if (rc->cfg.password != NULL)
		redisAsyncCommand(ac, redis_client_setup_cb, (void *)(uintptr_t)"AUTH",
		    "AUTH %s", rc->cfg.password);
	if (rc->cfg.db != 0)
		redisAsyncCommand(ac, redis_client_setup_cb, (void *)(uintptr_t)"SELECT",
		    "SELECT %u", rc->cfg.db);
	return ac;
}

static void
redis_client_cfg_free(struct config_redis *c)
{
	free(c->address);
	free(c->host);
	free(c->unix_path);
	free(c->password);
	memset(c, 0, sizeof *c);
}

static void
redis_client_cfg_copy(struct config_redis *dst, const struct config_redis *src)
{
	redis_client_cfg_free(dst);
	memset(dst, 0, sizeof *dst);
	dst->address = src->address ? strdup(src->address) : NULL;
	dst->host = src->host ? strdup(src->host) : NULL;
	dst->unix_path = src->unix_path ? strdup(src->unix_path) : NULL;
	dst->password = src->password ? strdup(src->password) : NULL;
	dst->port = src->port;
	dst->db = src->db;
	dst->timeout = src->timeout;
	if (dst->address == NULL || (src->host && dst->host == NULL) ||
	    (src->unix_path && dst->unix_path == NULL) ||
	    (src->password && dst->password == NULL))
		fatalx("redis: out of memory");
}

/* This thread's client, following the newest configuration it has seen. */
static struct redis_client *
redis_client_get(const struct filter_call *call)
{
	struct redis_client *rc = redis_client_self;
	const struct config_redis *cfg = &call->cfg->redis;

	if (rc == NULL) {
		if ((rc = calloc(1, sizeof *rc)) == NULL ||
		    (rc->retry_ev = evtimer_new(call->base, redis_client_retry_cb,
		    rc)) == NULL) {
			free(rc);
			return NULL;
		}
		rc->base = call->base;
		redis_client_self = rc;
	}
	if (rc->base != call->base)
		fatalx("redis: a session of another loop on this thread");
	/*
	 * SIGHUP: the first session of a newer configuration moves the
	 * connection; sessions of older ones never move it back.
	 */
	if (rc->cfg.address == NULL || call->chain_serial > rc->chain_serial) {
		if (rc->cfg.address != NULL && !config_redis_same(&rc->cfg, cfg)) {
			redis_client_drop(rc, "the configuration changed");
			rc->backing_off = 0;
			rc->backoff_ms = 0;
			evtimer_del(rc->retry_ev);
		}
		redis_client_cfg_copy(&rc->cfg, cfg);
		rc->chain_serial = call->chain_serial;
	}
	return rc;
}

void
redis_client_release(void)
{
	struct redis_client *rc = redis_client_self;

	if (rc == NULL)
		return;
	redis_client_drop(rc, NULL);
	event_free(rc->retry_ev);
	redis_client_cfg_free(&rc->cfg);
	free(rc);
	redis_client_self = NULL;
}

/* ---- commands ------------------------------------------------------------ */

static void
redis_req_free(struct redis_req *req)
{
	if (req->timer != NULL)
		event_free(req->timer);
	free(req->argv);
	free(req);
}

/* The filter's one call: the reply, or NULL for a failure. */
static void
redis_req_finish(struct redis_req *req, const redisReply *reply)
{
	struct fmx_ctx *h;

	req->finished = 1;
	evtimer_del(req->timer);
	if ((h = filter_call_live(&req->call)) != NULL)
		req->fn(h, req->arg, reply);
}

static void
redis_req_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct redis_req *req = priv;
	const redisReply *reply = r;

	if (req->finished) {
		redis_req_free(req);
		return;
	}
	/* Not cached (Redis restarted, SCRIPT FLUSH): once more with the text. */
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !req->retried &&
	    strncmp(reply->str, "NOSCRIPT", 8) == 0 && ac == req->rc->ac) {
		req->retried = 1;
		req->argv[0] = "EVAL";
		req->argvlen[0] = 4;
		req->argv[1] = req->script->text;
		req->argvlen[1] = strlen(req->script->text);
		if (redisAsyncCommandArgv(ac, redis_req_reply_cb, req, req->argc,
		    req->argv, req->argvlen) == REDIS_OK)
			return;
	}
	if (reply == NULL)
		redis_client_error(&req->call, "%s: connection lost before the "
		    "answer", req->script->name);
	else if (reply->type == REDIS_REPLY_ERROR)
		redis_client_error(&req->call, "%s: %.200s", req->script->name,
		    reply->str);
	else
		req->rc->backoff_ms = 0;	/* it works: the next failure waits briefly */
	redis_req_finish(req, reply == NULL || reply->type == REDIS_REPLY_ERROR ?
	    NULL : reply);
	redis_req_free(req);
}

/*
 * No answer in time: fail the command, and drop the connection, whose
 * later commands would wait behind this one.  Dropping it calls every
 * request on it back (redis_req_reply_cb), this one included: freed there.
 */
static void
redis_req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct redis_req *req = arg;
	struct redis_client *rc = req->rc;
	int current = req->ac == rc->ac;

	(void)fd;
	(void)what;
	redis_client_error(&req->call, "%s: no answer within %us",
	    req->script->name, rc->cfg.timeout);
	redis_req_finish(req, NULL);
	if (current) {
		redis_client_drop(rc, "a command timed out");
		redis_client_backoff(rc);
	}
}

int
redis_client_eval(const struct filter_call *call, struct redis_script *script,
    int nkeys, int argc, const char *const *argv, redis_client_fn fn, void *arg)
{
	struct timeval tv = { 0 };
	struct redis_client *rc;
	struct redis_req *req;
	redisAsyncContext *ac;
	char nk[16], *p;
	size_t total, len;
	int i, n = argc + 3;

	if (call->cfg->redis.address == NULL || fn == NULL || nkeys < 0 ||
	    nkeys > argc || argc < 0 || n > REDIS_ARGS_MAX || script->sha[0] == '\0') {
		redis_client_error(call, "%s: refused (no redis section or bad "
		    "arguments)", script->name);
		return -1;
	}
	if ((rc = redis_client_get(call)) == NULL) {
		redis_client_error(call, "out of memory");
		return -1;
	}
	if ((ac = redis_client_connect(rc, call)) == NULL)
		return -1;
	snprintf(nk, sizeof nk, "%d", nkeys);
	total = sizeof nk;
	for (i = 0; i < argc; i++)
		total += strlen(argv[i]) + 1;
	/* One allocation: the pointers, the lengths, then the strings. */
	if ((req = calloc(1, sizeof *req)) == NULL ||
	    (req->argv = malloc((size_t)n * (sizeof *req->argv +
	    sizeof *req->argvlen) + total)) == NULL) {
		free(req);
		redis_client_error(call, "out of memory");
		return -1;
	}
	req->argvlen = (size_t *)(req->argv + n);
	p = (char *)(req->argvlen + n);
	req->argv[0] = "EVALSHA";
	req->argv[1] = script->sha;
	req->argv[2] = p;
	memcpy(p, nk, strlen(nk) + 1);
	p += strlen(nk) + 1;
	for (i = 0; i < argc; i++) {
		len = strlen(argv[i]);
		memcpy(p, argv[i], len + 1);
		req->argv[i + 3] = p;
		p += len + 1;
	}
	for (i = 0; i < n; i++)
		req->argvlen[i] = strlen(req->argv[i]);
	req->argc = n;
	req->rc = rc;
	req->ac = ac;
	req->call = *call;
	req->script = script;
	req->fn = fn;
	req->arg = arg;
	tv.tv_sec = rc->cfg.timeout;
	if ((req->timer = evtimer_new(rc->base, redis_req_timeout_cb, req)) == NULL ||
	    evtimer_add(req->timer, &tv) == -1 ||
	    redisAsyncCommandArgv(ac, redis_req_reply_cb, req, n, req->argv,
	    req->argvlen) != REDIS_OK) {
		redis_client_error(call, "%s: cannot send the command",
		    script->name);
		redis_req_free(req);
		return -1;
	}
	return 0;
}
