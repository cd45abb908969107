/*
 * filter_pool.c - the thread pool that runs FMX_FLAG_BLOCKING hooks
 *
 * DESCRIPTION
 *	A filter that may block (a synchronous library, a socket to a local
 *	daemon) must never run on an event-loop thread, where it would stall
 *	thousands of sessions.  filter_pool_submit() queues its call as a
 *	struct filter_job holding copies of the phase's arguments (the
 *	session may end while the hook runs); a pool thread runs it and
 *	posts the verdict back to the session's own loop with
 *	event_base_once(), where filter_pool_complete() hands it to the
 *	chain unless the call was given up on meanwhile (timeout, end of
 *	session: the generation moved on).
 *
 *	The queue is bounded (queue_max, filters.pool in the configuration):
 *	a full queue is a failed call, which the chain turns into the
 *	filter's on_error action, never an unbounded backlog.  A job keeps
 *	its session's loop alive with a timer (filter_pool_keepalive), so a
 *	SIGTERM drain cannot free the loop under a completion in flight.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "filter_int.h"
#include "log.h"

static _Thread_local struct filter_job *filter_job_running;	/* this pool thread's */

static struct {
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	pthread_t		*threads;
	unsigned		 nthreads;
	unsigned		 queued;
	unsigned		 queue_max;
	struct filter_job	*head, *tail;
	int			 stopping;
} filter_pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static void
filter_pool_job_free(struct filter_job *job)
{
	size_t i;

	for (i = 0; i < job->ncopies; i++)
		free(job->copies[i]);
	free(job->str);
	free(job->str2);
	free(job->data);
	free(job);
}

static void
filter_pool_complete(evutil_socket_t fd, short what, void *arg)
{
	struct filter_job *job = arg;
	struct filter_session *fs = job->fs;
	struct fmx_ctx *c = job->c;

	(void)fd;
	(void)what;
	c->on_pool = 0;
	event_free(job->keepalive);
	if (!fs->dead && c->waiting && c->gen == job->gen)
		filter_chain_call_done(fs, c, job->verdict);
	filter_pool_job_free(job);
	filter_chain_session_release(fs);
}

/* Is the job still wanted?  Checked under the lock the loop thread gives it up with. */
static int
filter_pool_job_current(const struct filter_job *job)
{
	int current;

	pthread_mutex_lock(&job->fs->lock);
	current = !job->fs->dead && job->c->gen == job->gen;
	pthread_mutex_unlock(&job->fs->lock);
	return current;
}

static void *
filter_pool_main(void *arg)
{
	struct filter_job *job;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&filter_pool.lock);
		while (filter_pool.head == NULL && !filter_pool.stopping)
			pthread_cond_wait(&filter_pool.cond, &filter_pool.lock);
		if (filter_pool.head == NULL) {
			pthread_mutex_unlock(&filter_pool.lock);
			return NULL;
		}
		job = filter_pool.head;
		filter_pool.head = job->next;
		if (filter_pool.head == NULL)
			filter_pool.tail = NULL;
		filter_pool.queued--;
		pthread_mutex_unlock(&filter_pool.lock);

		/*
		 * A job that waited in the queue past its timeout or its
		 * session is not run at all.  One that runs gets its own
		 * copies of the arguments, and its api calls are checked
		 * against the job (filter_api_enter): the session may end
		 * while the hook still runs.
		 */
		if (filter_pool_job_current(job)) {
			filter_job_running = job;
			job->verdict = filter_chain_call_hook(job->fs, job->c, job->phase,
			    &job->args);
			filter_job_running = NULL;
		}
		/* Back to the session's own loop thread; event_base_once is thread-safe. */
		if (event_base_once(job->fs->base, -1, EV_TIMEOUT,
		    filter_pool_complete, job, NULL) == -1)
			fatalx("filter pool: cannot post completion");
	}
}

int
filter_pool_start(unsigned threads, unsigned queue_max)
{
	unsigned i;

	if ((filter_pool.threads = calloc(threads, sizeof *filter_pool.threads)) == NULL)
		return -1;
	filter_pool.queue_max = queue_max;
	for (i = 0; i < threads; i++) {
		if (pthread_create(&filter_pool.threads[i], NULL, filter_pool_main,
		    NULL) != 0)
			return -1;
		filter_pool.nthreads++;
	}
	return 0;
}

void
filter_pool_stop(void)
{
	unsigned i;

	pthread_mutex_lock(&filter_pool.lock);
	filter_pool.stopping = 1;
	pthread_cond_broadcast(&filter_pool.cond);
	pthread_mutex_unlock(&filter_pool.lock);
	for (i = 0; i < filter_pool.nthreads; i++)
		pthread_join(filter_pool.threads[i], NULL);
	free(filter_pool.threads);
	filter_pool.threads = NULL;
	filter_pool.nthreads = 0;
}

static void
filter_pool_keepalive(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* 0 queued; -1 the pool is absent or full (the caller applies on_error). */
int
filter_pool_submit(struct filter_session *fs, struct fmx_ctx *c)
{
	struct filter_job *job;

	struct timeval day = { .tv_sec = 86400 };

	if ((job = calloc(1, sizeof *job)) == NULL)
		return -1;
	/*
	 * The completion is posted to this loop, so the loop must not end
	 * (SIGTERM drain) while the hook runs, even if the session is gone.
	 */
	if ((job->keepalive = evtimer_new(fs->base, filter_pool_keepalive, NULL)) == NULL ||
	    evtimer_add(job->keepalive, &day) == -1) {
		if (job->keepalive != NULL)
			event_free(job->keepalive);
		free(job);
		return -1;
	}
	job->fs = fs;
	job->c = c;
	job->handle = c->handle;
	job->gen = c->gen;
	job->phase = fs->phase;
	job->args = fs->args;
	if ((fs->args.str != NULL && (job->args.str = job->str = strdup(fs->args.str)) == NULL) ||
	    (fs->args.str2 != NULL && (job->args.str2 = job->str2 = strdup(fs->args.str2)) == NULL) ||
	    (fs->args.len > 0 && (job->data = malloc(fs->args.len)) == NULL)) {
		event_free(job->keepalive);
		filter_pool_job_free(job);
		return -1;
	}
	if (job->data != NULL) {
		memcpy(job->data, fs->args.data, fs->args.len);
		job->args.data = job->data;
	}
	pthread_mutex_lock(&filter_pool.lock);
	if (filter_pool.nthreads == 0 || filter_pool.queued >= filter_pool.queue_max ||
	    filter_pool.stopping) {
		pthread_mutex_unlock(&filter_pool.lock);
		event_free(job->keepalive);
		filter_pool_job_free(job);
		return -1;
	}
	if (filter_pool.tail != NULL)
		filter_pool.tail->next = job;
	else
		filter_pool.head = job;
	filter_pool.tail = job;
	filter_pool.queued++;
	fs->refs++;	/* only touched on the loop thread; the job holds it */
	c->on_pool = 1;
	pthread_cond_signal(&filter_pool.cond);
	pthread_mutex_unlock(&filter_pool.lock);
	return 0;
}

struct filter_job *
filter_pool_job(void)
{
	return filter_job_running;
}
