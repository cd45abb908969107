/*
 * log.c - logging to stderr or syslog
 *
 * stderr lines carry a UTC timestamp and the level; syslog adds its own.
 * Each line is formatted into one bounded buffer and written with a single
 * write(2), so lines from different worker threads never interleave.
 * It lives in common/ because every layer logs: filters/ reaching up into
 * proxy/ for it was an arrow against proxy -> filters -> policy -> common.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX	2048

static int log_syslog;
static int log_verbose;
static long log_pid;		/* getpid() once, not a syscall per line */

void
log_init(int use_syslog, int verbose)
{
	log_syslog = use_syslog;
	log_verbose = verbose;
	log_pid = (long)getpid();
	if (use_syslog)
		openlog("frontmx", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static void
log_vemit(int prio, const char *level, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	if (log_syslog) {
		vsyslog(prio, fmt, ap);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, sizeof line - n, ".%03ldZ frontmx[%ld] %s: ",
	    ts.tv_nsec / 1000000, log_pid ? log_pid : (long)getpid(), level);
	if (r > 0 && (size_t)r < sizeof line - n)
		n += (size_t)r;
	r = vsnprintf(line + n, sizeof line - n, fmt, ap);
	if (r < 0)
		return;
	n += (size_t)r;
	if (n >= sizeof line - 1)	/* truncated: keep the newline */
		n = sizeof line - 2;
	line[n++] = '\n';
	/* One write per line; a short write to stderr is not worth retrying. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_INFO, "info", fmt, ap);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_WARNING, "warning", fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_verbose)
		return;
	va_start(ap, fmt);
	log_vemit(LOG_DEBUG, "debug", fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_CRIT, "fatal", fmt, ap);
	va_end(ap);
	abort();
}
