/*
 * filter_builtin.h - what a built-in filter may ask of the core beyond
 * the module API: the pending call it answers, and a declared failure
 *
 * SYNOPSIS
 *	#include "filter_builtin.h"
 *
 *	struct filter_call call;
 *	if (filter_call_get(h, &call) == -1)	in a hook, on the loop thread
 *		return FILTER_VERDICT_ERROR;
 *	start work on call.base ...; return FMX_PENDING;
 *	...
 *	later, on the same loop:
 *	if ((h = filter_call_live(&call)) == NULL)
 *		return;		the call ended: timeout, RSET, session gone
 *	api->resume(h, verdict);
 *
 * DESCRIPTION
 *	The greylist and ratelimit filters keep their state in Redis through
 *	a connection per worker loop (redis_client.c), which the module API
 *	has no call for.  They need the loop and configuration of the
 *	session they run in, and a way to tell a reply that is still wanted
 *	from one that comes after the hook call it belongs to was given up:
 *	struct filter_call is that token, taken in the hook and checked when
 *	the reply comes.  It names the call by the ctx's handle (never a
 *	pointer: the session may be freed meanwhile) and by the number of
 *	the hook call, so a reply can only answer the very call that asked.
 *
 *	FILTER_VERDICT_ERROR, returned by a hook or passed to resume(), is
 *	the filter saying "I failed" (its store is down or too slow): the
 *	chain applies the filter's on_error action like for a timeout,
 *	without the "invalid verdict" warning a module's bad value gets.
 */
#ifndef FRONTMX_FILTER_BUILTIN_H
#define FRONTMX_FILTER_BUILTIN_H

#include <stdint.h>

#include "frontmx_filter.h"

struct config;
struct event_base;

#define FILTER_VERDICT_ERROR	((enum fmx_verdict)FMX_VERDICT_COUNT)

struct filter_call {
	uint64_t		 handle;	/* the ctx's handle */
	unsigned		 serial;	/* which hook call of that ctx */
	unsigned long long	 session_id;	/* for log lines */
	struct event_base	*base;		/* the session's loop */
	const struct config	*cfg;		/* the session's configuration */
	unsigned long		 chain_serial;	/* newer configurations: higher */
};

/* The call h is in (a hook running on its loop thread): 0, or -1. */
int		 filter_call_get(struct fmx_ctx *h, struct filter_call *out);
/*
 * The ctx handle to resume() when the call still waits for its answer
 * (on the session's loop thread); NULL when it ended or the session is
 * gone: the answer must then be dropped without touching anything the
 * call owned.
 */
struct fmx_ctx	*filter_call_live(const struct filter_call *);

#endif
