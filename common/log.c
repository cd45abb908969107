/*
 * log.c - logging to stderr or syslog
 *
 * stderr lines carry a UTC timestamp and the level; syslog adds its own.
 * Each line is formatted into one bounded buffer and leaves in a single
 * write(2), so lines from different worker threads never interleave.
 * It lives in common/ because every layer logs: filters/ reaching up into
 * proxy/ for it was an arrow against proxy -> filters -> policy -> common.
 *
 * Held lines (log_hold_begin): an event-loop thread's stderr lines wait in
 * that thread's buffer and leave together in one write(2) when the loop
 * iteration ends (log_flush, worker_loop in proxy/worker.c), before the
 * loop blocks again: a session logs three lines or more per message, and
 * a write(2) each was three syscalls per message.  The buffer is PIPE_BUF
 * long: a write of at most PIPE_BUF to a pipe is atomic (POSIX), so a held
 * batch never interleaves with another thread's or process's lines on a
 * pipe either, as single lines did not.  A line that does not fit sends
 * the batch first.  fatalx() writes every thread's held lines before its
 * own, and exit() does (atexit), so no line is lost on those paths.
 * Threads that never called log_hold_begin() (filter pool, metrics, the
 * milter listener, main) write each line at once, as before; syslog is
 * never held.
 */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX	2048
#define LOG_HOLD_MAX	PIPE_BUF	/* one atomic write to a pipe */

struct log_hold {
	pthread_mutex_t	 mu;		/* the owner appends, fatalx flushes */
	size_t		 len;
	struct log_hold	*next;		/* log_holds */
	char		 buf[LOG_HOLD_MAX];
};

static int log_syslog;
static int log_verbose;
static long log_pid;		/* getpid() once, not a syscall per line */

static __thread struct log_hold *log_held;	/* this thread's, or NULL */
static struct log_hold *log_holds;		/* every thread's, for fatalx */
static pthread_mutex_t log_holds_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t log_atexit_once = PTHREAD_ONCE_INIT;

void
log_init(int use_syslog, int verbose)
{
	log_syslog = use_syslog;
	log_verbose = verbose;
	log_pid = (long)getpid();
	if (use_syslog)
		openlog("frontmx", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* One write; a short write to stderr is not worth retrying. */
static void
log_write(const char *p, size_t n)
{
	if (n > 0 && write(STDERR_FILENO, p, n) < 0)
		return;
}

/* Write h's lines (h->mu held). */
static void
log_hold_write(struct log_hold *h)
{
	log_write(h->buf, h->len);
	h->len = 0;
}

/* The stderr line: timestamp, pid, level, text, newline; its length. */
__attribute__((format(printf, 4, 0)))
static size_t
log_format(char *line, size_t size, const char *level, const char *fmt,
    va_list ap)
{
	struct timespec ts;
	struct tm tm;
	size_t n;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, size, "%Y-%m-%dT%H:%M:%S", &tm);
	r = snprintf(line + n, size - n, ".%03ldZ frontmx[%ld] %s: ",
	    ts.tv_nsec / 1000000, log_pid ? log_pid : (long)getpid(), level);
	if (r > 0 && (size_t)r < size - n)
		n += (size_t)r;
	r = vsnprintf(line + n, size - n, fmt, ap);
	if (r < 0)
		return 0;
	n += (size_t)r;
	if (n >= size - 1)	/* truncated: keep the newline */
		n = size - 2;
	line[n++] = '\n';
	return n;
}

__attribute__((format(printf, 3, 0)))
static void
log_vemit(int prio, const char *level, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	struct log_hold *h = log_held;
	size_t n;

	if (log_syslog) {
		vsyslog(prio, fmt, ap);
		return;
	}
	if ((n = log_format(line, sizeof line, level, fmt, ap)) == 0)
		return;
	if (h == NULL) {
		log_write(line, n);
		return;
	}
	pthread_mutex_lock(&h->mu);
	if (h->len + n > sizeof h->buf)
		log_hold_write(h);
	memcpy(h->buf + h->len, line, n);
	h->len += n;
	pthread_mutex_unlock(&h->mu);
}

void
log_flush(void)
{
	struct log_hold *h = log_held;

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	log_hold_write(h);
	pthread_mutex_unlock(&h->mu);
}

/*
 * Every thread's held lines, on the way out (fatalx, exit, a sanitizer's
 * report).  This thread's own buffer is skipped if its lock is taken: the
 * thread died inside log_vemit and the batch is half-copied.
 */
void
log_flush_all(void)
{
	struct log_hold *h;

	pthread_mutex_lock(&log_holds_mu);
	for (h = log_holds; h != NULL; h = h->next) {
		if (h == log_held) {
			if (pthread_mutex_trylock(&h->mu) != 0)
				continue;
		} else
			pthread_mutex_lock(&h->mu);
		log_hold_write(h);
		pthread_mutex_unlock(&h->mu);
	}
	pthread_mutex_unlock(&log_holds_mu);
}

static void
log_atexit(void)
{
	atexit(log_flush_all);
}

void
log_hold_begin(void)
{
	struct log_hold *h;

	if (log_syslog || log_held != NULL)
		return;
	/* Without memory the thread writes each line, as it always could. */
	if ((h = calloc(1, sizeof *h)) == NULL)
		return;
	pthread_once(&log_atexit_once, log_atexit);
	pthread_mutex_init(&h->mu, NULL);
	pthread_mutex_lock(&log_holds_mu);
	h->next = log_holds;
	log_holds = h;
	pthread_mutex_unlock(&log_holds_mu);
	log_held = h;
}

void
log_hold_end(void)
{
	struct log_hold *h = log_held, **pp;

	if (h == NULL)
		return;
	pthread_mutex_lock(&log_holds_mu);
	for (pp = &log_holds; *pp != NULL; pp = &(*pp)->next)
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	pthread_mutex_unlock(&log_holds_mu);
	log_held = NULL;
	log_hold_write(h);
	pthread_mutex_destroy(&h->mu);
	free(h);
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

/* The held lines of every thread go first: they led up to this. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	log_flush_all();
	log_held = NULL;	/* the fatal line itself goes at once */
	va_start(ap, fmt);
	log_vemit(LOG_CRIT, "fatal", fmt, ap);
	va_end(ap);
	abort();
}
