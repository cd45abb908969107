/*
 * smtp_session.h - the client side: one SMTP server session
 *
 * SYNOPSIS
 *	smtp_session_start() takes ownership of fd, of one count of the
 *	client's address in limit.h (released when the session ends), and of
 *	a filter chain reference (the chain holds the session's
 *	configuration).  The session runs on host->base, links itself into
 *	host->sessions, and frees itself when the dialogue ends; after each
 *	free it calls host->gone(host->arg) when set, so its owner (the
 *	worker, or `frontmx check`) can finish a drain.  The session never
 *	calls its owner otherwise.
 */
#ifndef FRONTMX_SMTP_SESSION_H
#define FRONTMX_SMTP_SESSION_H

#include <sys/queue.h>
#include <sys/socket.h>
#include <stddef.h>

struct event_base;
struct filter_chain;
struct smtp_session;

/* What a session needs from whoever runs it. */
struct smtp_host {
	struct event_base	*base;		/* the loop its sessions run on */
	void			(*gone)(void *arg);	/* a session was freed; or NULL */
	void			*arg;
	size_t			 nsessions;
	TAILQ_HEAD(, smtp_session) sessions;
};

void	smtp_session_start(struct smtp_host *, int fd, const struct sockaddr *,
	    socklen_t, struct filter_chain *, size_t listener);
/*
 * `frontmx check`: with upstream kind CONFIG_UPSTREAM_CHECK the session
 * delivers nothing and reports, for each message that would be relayed,
 * quarantined or discarded, the action and the header fields the proxy
 * adds.  Process-wide; only the check command sets it.
 */
struct smtp_check_report {
	const char	*action;	/* accept, tag, quarantine, discard */
	const char	*added;		/* header fields, CRLF lines */
	size_t		 addedlen;
};
typedef void (*smtp_check_fn)(void *arg, const struct smtp_check_report *);
void	smtp_session_set_check(smtp_check_fn, void *arg);

/*
 * SIGTERM, for every session of the host: an idle one is told 421 and
 * closed, a busy one finishes first unless force is set.
 */
void	smtp_session_drain_all(struct smtp_host *, int force);
/* Free every session at once, without a reply (the host's loop has ended). */
void	smtp_session_free_all(struct smtp_host *);

#endif
