/*
 * test_log.c - common/log.c's held lines (TAP): stderr is one end of a
 * SOCK_SEQPACKET pair, so every write(2) arrives as one record and the
 * test counts writes and sees their boundaries.  A thread that holds writes
 * nothing until log_flush() or log_hold_end(), then its lines in one
 * write; a batch never passes PIPE_BUF and never splits a line; a line
 * over the line limit is cut and keeps its newline; concurrent threads'
 * lines arrive whole and in each thread's order; fatalx() and exit()
 * write every thread's held lines first.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"

#define REC_MAX		(1 << 16)
#define THREADS		4
#define THREAD_LINES	500

static int peer = -1;		/* the reading end; fd 2 is the other */

struct recs {
	char	 data[1 << 20];	/* every record, concatenated */
	size_t	 len;
	int	 n;		/* records (writes) */
	int	 bad;		/* a record not ending in a newline, or over PIPE_BUF */
};

static struct recs R;

/* Read the records that are there (wait up to ms for the first one). */
static void
collect(struct recs *r, int wait_ms)
{
	char buf[REC_MAX];
	ssize_t n;
	int flags = MSG_DONTWAIT;

	r->len = 0;
	r->n = r->bad = 0;
	for (;;) {
		if (wait_ms > 0 && r->n == 0) {
			struct timeval tv = { wait_ms / 1000, (wait_ms % 1000) * 1000 };

			setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
			flags = 0;
		} else
			flags = MSG_DONTWAIT;
		n = recv(peer, buf, sizeof buf, flags);
		if (n <= 0)
			break;
		if (buf[n - 1] != '\n' || n > PIPE_BUF)
			r->bad++;
		if (r->len + (size_t)n < sizeof r->data) {
			memcpy(r->data + r->len, buf, (size_t)n);
			r->len += (size_t)n;
		}
		r->n++;
	}
	r->data[r->len] = '\0';
}

/* Lines in r that contain s. */
static int
count(const struct recs *r, const char *s)
{
	const char *p = r->data;
	int n = 0;

	while ((p = strstr(p, s)) != NULL) {
		n++;
		p += strlen(s);
	}
	return n;
}

static void
test_direct_and_held(void)
{
	int i;

	log_info("direct line");
	collect(&R, 0);
	ok(R.n == 1 && count(&R, " info: direct line\n") == 1,
	    "a thread that does not hold writes each line at once");
	log_hold_begin();
	log_info("held one");
	log_warn("held two");
	log_info("held three");
	collect(&R, 0);
	ok(R.n == 0, "held lines wait for log_flush");
	log_flush();
	collect(&R, 0);
	ok(R.n == 1 && R.bad == 0, "log_flush writes them in one write (%d)", R.n);
	ok(strstr(R.data, " info: held one\n") != NULL &&
	    strstr(R.data, " warning: held two\n") > strstr(R.data, "held one") &&
	    strstr(R.data, " info: held three\n") > strstr(R.data, "held two"),
	    "the three lines, in order, whole");
	log_flush();
	collect(&R, 0);
	ok(R.n == 0, "an empty buffer writes nothing");
	/* more than PIPE_BUF: batches of whole lines, none over PIPE_BUF */
	for (i = 0; i < 100; i++)
		log_info("batch line %03d %0100d", i, 0);
	collect(&R, 0);
	ok(R.n >= 1 && R.bad == 0,
	    "a full buffer is written before the next line (%d writes so far)", R.n);
	{
		struct recs before = R;

		log_flush();
		collect(&R, 0);
		ok(before.n + R.n >= 100 * 150 / PIPE_BUF && R.bad == 0 &&
		    count(&before, "batch line") + count(&R, "batch line") == 100,
		    "100 lines of ~150 bytes in %d writes, each at most PIPE_BUF, lines whole",
		    before.n + R.n);
	}
	/* a line longer than the line limit (and half the buffer) */
	{
		char big[6000];

		memset(big, 'x', sizeof big - 1);
		big[sizeof big - 1] = '\0';
		log_info("before the long line");
		log_info("long %s", big);
		log_info("after the long line");
		log_flush();
		collect(&R, 0);
		ok(R.bad == 0 && count(&R, "before the long line\n") == 1 &&
		    count(&R, "after the long line\n") == 1,
		    "a line over the limit: the lines around it whole");
		{
			const char *l = strstr(R.data, " info: long ");
			const char *e = l ? strchr(l, '\n') : NULL;
			const char *s = l;

			while (s != NULL && s > R.data && s[-1] != '\n')
				s--;
			ok(l != NULL && e != NULL && e - s + 1 == 2047 &&
			    strstr(R.data, "before the long") < l &&
			    strstr(R.data, "after the long") > e,
			    "it is cut to 2047 bytes with its newline (a 2048-byte buffer with its NUL), in its place (%ld)",
			    l && e ? (long)(e - s + 1) : -1L);
		}
	}
	log_info("held at the end");
	log_hold_end();
	collect(&R, 0);
	ok(R.n == 1 && count(&R, "held at the end\n") == 1, "log_hold_end writes what is held");
	log_info("after the end");
	collect(&R, 0);
	ok(R.n == 1 && count(&R, "after the end\n") == 1, "and the thread writes at once again");
}

static void *
test_thread(void *arg)
{
	int t = (int)(long)arg, i;

	log_hold_begin();
	for (i = 0; i < THREAD_LINES; i++) {
		log_info("thread %d line %04d %s", t, i, "padding padding padding");
		if (i % 7 == 6)
			log_flush();
	}
	log_hold_end();
	return NULL;
}

static void
test_threads(void)
{
	pthread_t th[THREADS];
	char *all, buf[REC_MAX];
	size_t len = 0, cap = 1 << 22;
	int i, t, lines = 0, bad = 0, order = 1, next[THREADS] = { 0 };
	struct timeval tv = { 10, 0 };
	ssize_t n;

	all = malloc(cap);
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, test_thread, (void *)(long)i);
	/* drain while they write: the socket buffer is smaller than their lines */
	setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	while (lines < THREADS * THREAD_LINES &&
	    (n = recv(peer, buf, sizeof buf, 0)) > 0) {
		if (buf[n - 1] != '\n' || n > PIPE_BUF)
			bad++;
		for (i = 0; i < n; i++)
			lines += buf[i] == '\n';
		if (len + (size_t)n < cap) {
			memcpy(all + len, buf, (size_t)n);
			len += (size_t)n;
		}
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	all[len] = '\0';
	ok(lines == THREADS * THREAD_LINES && bad == 0,
	    "%d threads: %d lines, every write ends a line (%d lines, %d bad)",
	    THREADS, THREADS * THREAD_LINES, lines, bad);
	/* each line whole and each thread's in order */
	{
		char *p = all, *e;
		int whole = 0;

		while ((e = strchr(p, '\n')) != NULL) {
			*e = '\0';
			if (sscanf(strstr(p, " info: ") ? strstr(p, " info: ") : "",
			    " info: thread %d line %d", &t, &i) == 2 &&
			    t >= 0 && t < THREADS &&
			    strstr(p, " padding padding padding") == p + strlen(p) - 24 &&
			    strncmp(p, "20", 2) == 0) {
				whole++;
				if (i != next[t])
					order = 0;
				next[t] = i + 1;
			}
			p = e + 1;
		}
		ok(whole == THREADS * THREAD_LINES, "every line whole: %d of %d",
		    whole, THREADS * THREAD_LINES);
		ok(order, "each thread's lines in its order");
	}
	free(all);
}

static pthread_mutex_t held_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t held_cv = PTHREAD_COND_INITIALIZER;
static int held_ready;

static void *
holder_thread(void *arg)
{
	(void)arg;
	log_hold_begin();
	log_info("other thread held");
	pthread_mutex_lock(&held_mu);
	held_ready = 1;
	pthread_cond_signal(&held_cv);
	pthread_mutex_unlock(&held_mu);
	for (;;)
		pause();
	return NULL;
}

/* In a child: lines held by two threads, then fatalx (how = 0) or exit (1). */
static void
child_end(int how)
{
	pthread_t th;

	pthread_create(&th, NULL, holder_thread, NULL);
	pthread_mutex_lock(&held_mu);
	while (!held_ready)
		pthread_cond_wait(&held_cv, &held_mu);
	pthread_mutex_unlock(&held_mu);
	log_hold_begin();
	log_info("main thread held");
	if (how == 0)
		fatalx("boom %d", 7);
	exit(3);
}

static void
test_ending(int how)
{
	const char *what = how == 0 ? "fatalx" : "exit";
	int status = 0;
	pid_t pid;

	fflush(stdout);
	if ((pid = fork()) == 0)
		child_end(how);
	waitpid(pid, &status, 0);
	collect(&R, 1000);
	if (how == 0)
		ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		    "fatalx: the child aborted");
	else
		ok(WIFEXITED(status) && WEXITSTATUS(status) == 3, "exit: the child exited 3");
	ok(count(&R, " info: other thread held\n") == 1 &&
	    count(&R, " info: main thread held\n") == 1 && R.bad == 0,
	    "%s: both threads' held lines written (%d writes)", what, R.n);
	if (how == 0)
		ok(R.len > 0 && strstr(R.data, " fatal: boom 7\n") != NULL &&
		    strcmp(strstr(R.data, " fatal: boom 7\n"), " fatal: boom 7\n") == 0,
		    "fatalx: its own line comes last");
}

int
main(void)
{
	int sv[2];

	plan(19);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == -1 ||
	    dup2(sv[0], STDERR_FILENO) == -1) {
		printf("# socketpair: %s\n", strerror(errno));
		return 1;
	}
	close(sv[0]);
	peer = sv[1];
	log_init(0, 0);
	test_direct_and_held();
	test_threads();
	test_ending(0);
	test_ending(1);
	return done_testing();
}
