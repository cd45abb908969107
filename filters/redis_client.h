/*
 * redis_client.h - the Redis connection of each worker loop, for the
 * built-in filters that share state between workers and instances
 *
 * SYNOPSIS
 *	#include "redis_client.h"
 *
 *	static struct redis_script script = REDIS_SCRIPT("greylist", "...lua...");
 *	redis_script_init(&script);			in init(), once
 *
 *	in a hook (struct filter_call from filter_builtin.h):
 *	if (redis_client_eval(&call, &script, nkeys, argc, argv, done, arg) == -1)
 *		return FILTER_VERDICT_ERROR;		Redis unavailable
 *	return FMX_PENDING;
 *
 *	static void done(struct fmx_ctx *h, void *arg, const redisReply *r)
 *	{ r == NULL: failed (logged and counted); else the script's answer;
 *	  api->resume(h, ...); }
 *
 *	redis_client_release();		on the worker thread, at drain
 *
 * DESCRIPTION
 *	One hiredis asynchronous connection per worker thread, driven by
 *	that worker's event_base through hiredis's libevent adapter and
 *	opened on first use with the `redis` section of the configuration of
 *	the session asking (AUTH and SELECT are sent first, so they precede
 *	every command on the connection).  Scripts go as EVALSHA, and as
 *	EVAL when Redis answers NOSCRIPT (a restarted or flushed server), so
 *	each script is computed atomically by Redis itself.
 *
 *	Every command is bounded by redis.timeout: a timer per command that
 *	fails it and drops the connection, since a server that does not
 *	answer one command will not answer those queued behind it.  A lost
 *	connection fails its commands at once; the next attempt waits 100 ms,
 *	doubling to 2 s while connecting fails, and meanwhile commands fail
 *	at once instead of queueing: Redis down or slow is a filter error
 *	(the filter's on_error), never a wait longer than the timeout.
 *
 *	The callback runs on the session's loop, once, only while the hook
 *	call that sent the command still waits for it (filter_call_live());
 *	after a timeout, an RSET or the end of the session it never runs,
 *	so it may take arg to be the filter's message or connection data.
 *	It gets NULL for every failure - timeout, lost connection, an error
 *	reply (the script's or Redis's: NOAUTH, OOM...) - each logged and
 *	counted in frontmx_redis_errors_total.  It must not send another
 *	command itself.
 *
 *	After SIGHUP the first command of a newer configuration whose redis
 *	section differs closes the connection and opens one to the new
 *	place; sessions of the older configuration then use the new one.
 */
#ifndef FRONTMX_REDIS_CLIENT_H
#define FRONTMX_REDIS_CLIENT_H

#include <hiredis/hiredis.h>

#include "filter_builtin.h"

#define REDIS_ARGS_MAX		2048	/* arguments of one script call */

struct redis_script {
	const char	*name;		/* for log lines */
	const char	*text;		/* Lua */
	char		 sha[41];	/* SHA-1 of text, hex: redis_script_init() */
};

#define REDIS_SCRIPT(name, text)	{ (name), (text), "" }

typedef void (*redis_client_fn)(struct fmx_ctx *h, void *arg,
    const redisReply *reply);

/* Compute the script's SHA-1 (idempotent; from init(), any thread). */
void	redis_script_init(struct redis_script *);
/*
 * Run script with nkeys keys then the other arguments (argv[0..argc),
 * the keys first) on the session's worker connection.  0: sent, fn runs
 * later (or never, see above); -1: not sent (no redis section, Redis
 * down or backing off, bad arguments), logged and counted.
 */
int	redis_client_eval(const struct filter_call *call, struct redis_script *script,
	    int nkeys, int argc, const char *const *argv, redis_client_fn fn,
	    void *arg);
/* Close this thread's connection (worker drain, end of `frontmx check`). */
void	redis_client_release(void);

#endif
