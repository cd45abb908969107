/*
 * metrics_http.h - GET /metrics (Prometheus text format) on its own
 * thread and event loop, so a scrape never waits on, or delays, SMTP
 *
 * SYNOPSIS
 *	metrics_http_start(cfg, err, errlen)	at start-up, after the workers
 *	metrics_http_reload(cfg)		after a good SIGHUP reload
 *	metrics_http_stop()			at exit
 *
 * DESCRIPTION
 *	Serves metrics.listen when the configuration has it (nothing when
 *	it has not).  The values are common/metrics.c's, summed at each
 *	scrape.  Only GET and HEAD of /metrics: another path is 404,
 *	another method 501 (evhttp's answer).
 *
 *	Bounds: a request's line and headers 8 KiB, its body 1 KiB; at most
 *	metrics.connections connections at once (the listener stops
 *	accepting at the limit, the kernel's backlog of 16 holds the next
 *	ones); each connection lives metrics.timeout seconds at most,
 *	whatever it does (a client trickling a request byte by byte
 *	included), and idles metrics.timeout seconds at most.  Out of
 *	descriptors, accepting pauses a second at a time (one log line
 *	each) instead of spinning on the queued client.
 *
 *	SIGHUP: a new metrics.listen is bound by the reload itself (an
 *	address that cannot be bound is logged and the old one kept); the
 *	old socket is closed, scrapes in flight finish.  metrics.listen
 *	removed stops serving; added starts it.  connections and timeout
 *	apply to connections accepted after the reload.
 */
#ifndef FRONTMX_METRICS_HTTP_H
#define FRONTMX_METRICS_HTTP_H

#include <stddef.h>

struct config;

/* 0, or -1 with "FILE:LINE: metrics.listen ADDR: why" in err. */
int	metrics_http_start(const struct config *, char *err, size_t errlen);
void	metrics_http_reload(const struct config *);
void	metrics_http_stop(void);

#endif
