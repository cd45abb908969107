/*
 * bev.c - immediate writes on plain socket bufferevents (see bev.h)
 */
#include <errno.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
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
