/*
 * filter_chain.h - the core's side of the filter chain
 *
 * SYNOPSIS
 *	filter_chain_run(phase, facts, done, arg);
 *
 * DESCRIPTION
 *	The SMTP session calls the chain at each phase (connect, helo, mail,
 *	rcpt, data, eom) and continues only from the done() callback, which
 *	may run before filter_chain_run() returns (every built-in hook today)
 *	or later from the event loop (asynchronous filters).  The session
 *	therefore never assumes either order.  The chain never touches
 *	sockets; it reads the session through struct filter_facts.
 */
#ifndef FRONTMX_FILTER_CHAIN_H
#define FRONTMX_FILTER_CHAIN_H

#include <stddef.h>
#include <sys/socket.h>

#define FILTER_REPLY_MAX	512

enum filter_phase {
	FILTER_PH_CONNECT = 0,
	FILTER_PH_HELO,
	FILTER_PH_MAIL,
	FILTER_PH_RCPT,
	FILTER_PH_DATA,
	FILTER_PH_EOM,
	FILTER_PH_COUNT		/* must be last */
};

enum filter_verdict {
	FILTER_CONTINUE = 0,
	FILTER_ACCEPT,		/* skip the rest of the chain */
	FILTER_REJECT,		/* 5xx */
	FILTER_TEMPFAIL,	/* 4xx */
	FILTER_DISCARD,
	FILTER_QUARANTINE,
	FILTER_VERDICT_COUNT	/* must be last */
};

/* Read-only view of the session handed to the chain. */
struct filter_facts {
	unsigned long long	 session_id;
	const struct sockaddr	*client_sa;
	const char		*client_addr;	/* numeric */
	const char		*helo;		/* NULL before HELO/EHLO */
	const char		*mail_from;	/* NULL before MAIL; "" = null sender */
	const char		*rcpt;		/* the recipient at FILTER_PH_RCPT */
};

struct filter_result {
	enum filter_verdict	verdict;
	char			reply[FILTER_REPLY_MAX];	/* "550 5.7.1 text" for reject/tempfail; "" = default */
};

typedef void (*filter_done_fn)(void *arg, const struct filter_result *);

void		 filter_chain_run(enum filter_phase, const struct filter_facts *,
		    filter_done_fn done, void *arg);
const char	*filter_phase_name(enum filter_phase);

#endif
