/*
 * milter_listen.h - frontmx's filter chain and policy served as a milter
 *
 * SYNOPSIS
 *	milter_listen_start(cfg);	after the workers, when cfg->milter_listen
 *	milter_listen_reload(cfg);	SIGHUP: new connections take the new runtime
 *	milter_listen_stop(grace);	SIGTERM: stop accepting, drain, join
 *
 * DESCRIPTION
 *	`milter = { listen = "inet:127.0.0.1:8892"; }` makes the daemon also
 *	answer an MTA's milter connections (Postfix smtpd_milters, Sendmail
 *	INPUT_MAIL_FILTER) through libmilter: every connection runs the
 *	configured filter chain and policy as an SMTP session would, and the
 *	verdicts and edits go back to the MTA.  libmilter is process-global
 *	(smfi_register/smfi_main once), so the listen address is fixed at
 *	start: a reload that changes it is logged and needs a restart.
 *
 *	milter_listen_start() returns -1 (logged) when the socket cannot be
 *	opened; milter_listen_stop() is a no-op when it was never started.
 */
#ifndef FRONTMX_MILTER_LISTEN_H
#define FRONTMX_MILTER_LISTEN_H

struct config;

int	milter_listen_start(const struct config *);
void	milter_listen_reload(const struct config *);
void	milter_listen_stop(unsigned grace);

#endif
