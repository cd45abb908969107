/*
 * smtp_session.h - the client side: one SMTP server session
 *
 * smtp_session_start() takes ownership of fd and of a configuration
 * reference.  The session frees itself when the dialogue ends; it links
 * itself into its worker's list so the worker can drain it.
 */
#ifndef FRONTMX_SMTP_SESSION_H
#define FRONTMX_SMTP_SESSION_H

#include <sys/socket.h>

struct config;
struct smtp_session;
struct worker;

void	smtp_session_start(struct worker *, int fd, const struct sockaddr *,
	    socklen_t, struct config *);
/*
 * SIGTERM, for every session of the worker: an idle one is told 421 and
 * closed, a busy one finishes first unless force is set.
 */
void	smtp_session_drain_all(struct worker *, int force);
/* Free every session at once, without a reply (the worker's loop has ended). */
void	smtp_session_free_all(struct worker *);

#endif
