/*
 * log.h - one line per event, to stderr (foreground) or syslog (-s)
 *
 * Lines are key=value where it helps grep: callers pass the session id
 * first ("%016llx smtp ...") so every line of one session can be found.
 */
#ifndef FRONTMX_LOG_H
#define FRONTMX_LOG_H

#include <stdarg.h>

void	log_init(int use_syslog, int verbose);
void	log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void	log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * Event-loop threads: log_hold_begin() holds this thread's stderr lines in
 * a bounded buffer (PIPE_BUF) until log_flush(), which the loop calls after
 * each iteration, before it blocks; log_hold_end() flushes and stops.
 * log_flush_all() writes every thread's held lines (fatal paths; fatalx and
 * exit() do it themselves).  No-ops with syslog.
 */
void	log_hold_begin(void);
void	log_hold_end(void);
void	log_flush(void);
void	log_flush_all(void);
/* Broken invariant: log and abort.  Never for peer or plugin errors. */
void	fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
