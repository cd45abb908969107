/*
 * smtp_session.h - the client side: one SMTP server session
 *
 * smtp_session_start() takes ownership of fd and of a filter chain
 * reference (the chain holds the session's configuration).  The session frees itself when the dialogue ends; it links
 * itself into its worker's list so the worker can drain it.
 */
#ifndef FRONTMX_SMTP_SESSION_H
#define FRONTMX_SMTP_SESSION_H

#include <sys/socket.h>

struct filter_chain;
struct smtp_session;
struct worker;

void	smtp_session_start(struct worker *, int fd, const struct sockaddr *,
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
 * SIGTERM, for every session of the worker: an idle one is told 421 and
 * closed, a busy one finishes first unless force is set.
 */
void	smtp_session_drain_all(struct worker *, int force);
/* Free every session at once, without a reply (the worker's loop has ended). */
void	smtp_session_free_all(struct worker *);

#endif
