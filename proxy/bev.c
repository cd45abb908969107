/*
 * bev.c - immediate writes and plain reads on socket bufferevents (bev.h)
 */
#include <sys/types.h>

#include <errno.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "bev.h"

int
bev_direct(struct bufferevent *bev)
{
	/* Implicit TLS is a socket bufferevent too: its bytes must be encrypted. */
	return bufferevent_get_underlying(bev) == NULL &&
	    bufferevent_openssl_get_ssl(bev) == NULL &&
	    bufferevent_getfd(bev) != -1;
}

void
bev_flush(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	int n;

	if (evbuffer_get_length(out) == 0)
		return;
	if (!bev_direct(bev)) {
		bufferevent_enable(bev, EV_WRITE);
		return;
	}
	/*
	 * A bufferevent keeps the front of its output frozen so that only
	 * libevent drains it; we drain it here the way its write callback
	 * does, then hand back whatever is left.
	 */
	evbuffer_unfreeze(out, 1);
	n = evbuffer_write(out, bufferevent_getfd(bev));
	evbuffer_freeze(out, 1);
	/* Errors and leftovers: libevent's path reports or finishes them. */
	if (n < 0 || evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE);
}

/* What libevent's own read callback does on an end: stop, then report. */
static void
bev_read_end(struct bufferevent *bev, short what)
{
	bufferevent_disable(bev, EV_READ);
	bufferevent_trigger_event(bev, what, 0);
}

/*
 * libevent's bufferevent_readcb (bufferevent_sock.c), minus the FIONREAD:
 * one bounded read, appended to the input buffer, then the read callback
 * with watermark semantics (bufferevent_trigger), deferred like every
 * callback of the bufferevent (BEV_OPT_DEFER_CALLBACKS).  The high
 * watermark's suspension is the input buffer's own callback, which
 * libevent installed with the watermark and which runs on our append.
 *
 * Read into the stack and copied, not into evbuffer_reserve_space():
 * reserving the most a read may bring gave every 6-byte command a 16 KiB
 * chain of its own, kept while a partial line waits, and the allocator
 * trimmed and refaulted those pages (0.15 madvise per message); the copy
 * makes chains the size of the data, as libevent's own read does, and
 * cost no measurable CPU (1 worker, 5 alternating rounds of 3000 x 10 KiB:
 * 217 against 220 us per message, medians).
 */
static void
bev_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct bufferevent *bev = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char buf[16384];
	size_t low, high, len, want;
	ev_ssize_t max;
	ssize_t got;
	int n;

	/* Only a bare EV_TIMEOUT is one: with EV_READ, data came in time. */
	if (what == EV_TIMEOUT) {
		bev_read_end(bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
		return;
	}
	max = bufferevent_get_max_single_read(bev);
	want = max > 0 ? (size_t)max : 16384;
	if (bufferevent_getwatermark(bev, EV_READ, &low, &high) == 0 && high > 0) {
		len = evbuffer_get_length(in);
		if (len >= high)
			return;		/* the watermark callback suspends us */
		if (high - len < want)
			want = high - len;
	}
	if (want > sizeof buf)
		want = sizeof buf;
	got = read(fd, buf, want);
	/* A bufferevent's input is frozen at the end for everyone but itself. */
	if (got > 0) {
		evbuffer_unfreeze(in, 0);
		n = evbuffer_add(in, buf, (size_t)got);
		evbuffer_freeze(in, 0);
		if (n == -1) {
			bev_read_end(bev, BEV_EVENT_READING | BEV_EVENT_ERROR);
			return;
		}
	}
	if (got > 0)
		bufferevent_trigger(bev, EV_READ, 0);
	else if (got == 0)
		bev_read_end(bev, BEV_EVENT_READING | BEV_EVENT_EOF);
	else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
		bev_read_end(bev, BEV_EVENT_READING | BEV_EVENT_ERROR);
}

void
bev_read_own(struct bufferevent *bev)
{
	evutil_socket_t fd = bufferevent_getfd(bev);
	short on;

	if (!bev_direct(bev) || fd == -1)
		return;
	/*
	 * struct bufferevent is public (bufferevent_struct.h) but libevent
	 * asks to be careful with it: we only re-assign the read event the way
	 * bufferevent_setfd() does (same fd, flags and argument), with the
	 * event not pending, and let libevent add and delete it as before.
	 */
	on = bufferevent_get_enabled(bev) & EV_READ;
	if (on)
		bufferevent_disable(bev, EV_READ);
	event_assign(&bev->ev_read, bufferevent_get_base(bev), fd,
	    EV_READ | EV_PERSIST | EV_FINALIZE, bev_readcb, bev);
	if (on)
		bufferevent_enable(bev, EV_READ);
}
