/*
 * test_refcount.c - unit tests for common/refcount.h, the reference count
 * of struct config, struct runtime and struct filter_chain
 */
#include <pthread.h>

#include "refcount.h"
#include "tap.h"

#define RC_THREADS	4
#define RC_ROUNDS	100000

static int shared_rc = 1;

/* Each thread takes and gives back references while the owner holds one. */
static void *
rc_worker(void *arg)
{
	int i, last = 0;

	(void)arg;
	for (i = 0; i < RC_ROUNDS; i++) {
		refcount_hold(&shared_rc);
		last += refcount_drop(&shared_rc);
	}
	return (void *)(long)last;
}

int
main(void)
{
	pthread_t t[RC_THREADS];
	int rc = 1, i, started = 0, lasts = 0;
	void *r;

	plan(6);
	refcount_hold(&rc);
	ok(rc == 2, "hold: one more (%d)", rc);
	ok(refcount_drop(&rc) == 0 && rc == 1, "drop to 1: not the last");
	ok(refcount_drop(&rc) == 1 && rc == 0, "drop to 0: the last, free it");

	for (i = 0; i < RC_THREADS; i++)
		if (pthread_create(&t[i], NULL, rc_worker, NULL) == 0)
			started++;
	ok(started == RC_THREADS, "%d threads started", started);
	for (i = 0; i < started; i++) {
		pthread_join(t[i], &r);
		lasts += (int)(long)r;
	}
	ok(lasts == 0 && shared_rc == 1,
	    "%d threads x %d hold/drop: no drop was the last, count back to 1 "
	    "(%d)", started, RC_ROUNDS, shared_rc);
	ok(refcount_drop(&shared_rc) == 1, "the owner's drop is the last");
	return done_testing();
}
