/*
 * smtp_session.h - the client side: one SMTP server session
 *
 * SYNOPSIS
 *	smtp_session_start() takes ownership of fd, of one count of the
 *	client's address in limit.h (released when the session ends), and of
 *	a runtime reference (runtime.h: its configuration, filter chain and
 *	TLS contexts).  The session runs on host->base, links itself into
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

struct deliver_override;
struct event_base;
struct runtime;
struct smtp_session;

/* What a session needs from whoever runs it. */
struct smtp_host {
	struct event_base	*base;		/* the loop its sessions run on */
	void			(*gone)(void *arg);	/* a session was freed; or NULL */
	void			*arg;
	size_t			 nsessions;
	TAILQ_HEAD(, smtp_session) sessions;
	/* The delivery backend when not upstream.address's (check.c); or NULL. */
	const struct deliver_override *deliver;
};

void	smtp_session_start(struct smtp_host *, int fd, const struct sockaddr *,
	    socklen_t, struct runtime *, size_t listener);
/*
 * SIGTERM, for every session of the host: an idle one is told 421 and
 * closed, a busy one finishes first unless force is set.
 */
void	smtp_session_drain_all(struct smtp_host *, int force);
/* Free every session at once, without a reply (the host's loop has ended). */
void	smtp_session_free_all(struct smtp_host *);

#endif
