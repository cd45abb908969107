/*
 * metrics.h - Prometheus counters, gauges and histograms any layer counts
 * into, summed over threads only when /metrics is scraped
 *
 * SYNOPSIS
 *	One line per event, where it happens; label values follow the
 *	metric in the order of its labels (the table below), as strings:
 *
 *	metrics_inc(METRIC_CONNECTIONS, listener_address);
 *	metrics_gauge_add(+1, METRIC_CONNECTIONS_ACTIVE);	(and -1 at close)
 *	metrics_inc(METRIC_CONNECTIONS_REFUSED, "limit");
 *	metrics_inc(METRIC_SMTP_REPLIES, "rcpt", "250");
 *	metrics_inc(METRIC_MESSAGES, "relayed");
 *	metrics_observe(bytes, METRIC_MESSAGE_SIZE);
 *	metrics_inc(METRIC_FILTER_RESULTS, "spf", "pass");
 *	metrics_observe(seconds, METRIC_FILTER_DURATION, "spf");
 *	metrics_inc(METRIC_FILTER_ERRORS, "greylist", "timeout");	(error, circuit-open)
 *	metrics_inc(METRIC_UPSTREAM_ERRORS, "reset");	(refused, timeout, malformed)
 *	metrics_observe(seconds, METRIC_UPSTREAM_REPLY);
 *	metrics_inc(METRIC_TLS_HANDSHAKES, "server", "TLSv1.3");
 *	metrics_inc(METRIC_AUTH, "success");
 *	metrics_inc(METRIC_GREYLIST, "greylisted");
 *	metrics_inc(METRIC_RATELIMIT, "client_address", "exceeded");
 *	metrics_inc(METRIC_DNSBL_HITS, "zen.example.net");
 *	metrics_inc(METRIC_REDIS_ERRORS);
 *	metrics_inc(METRIC_CONFIG_RELOADS, "ok");	(or "failed")
 *	metrics_add(n, METRIC_..., labels...);		(a counter by n)
 *
 *	Label values are copied; pass them as they are (escaping is done at
 *	scrape time).  A missing value counts as "" (a NULL ends the list).
 *
 * DESCRIPTION
 *	Each thread that counts gets its own array of values (a shard), so
 *	the hot path is a plain load and store on memory no other thread
 *	writes: no lock, no atomic read-modify-write.  A scrape
 *	(metrics_render) sums the shards.  A thread that ends folds its
 *	values into a shared shard first, so counters never go back.
 *
 *	A (metric, label values) pair is a series.  Finding a series that
 *	exists is lock-free; the first event of a new label set takes one
 *	mutex once, to add it.  Label values that come from configuration
 *	or peers (filter names, zones, listeners, reply codes) are bounded:
 *	each metric has a maximum number of series (its `max` in metrics.c),
 *	and once it is reached every new label set is counted in the one
 *	series whose labels are all "other" instead, so a scrape stays
 *	bounded and nothing is lost from the totals.  Values longer than
 *	METRICS_VALUE_MAX bytes are cut there; bytes outside printable
 *	ASCII become '?' (the exposition format wants UTF-8).
 *
 *	Histograms have fixed buckets per metric (metrics.c); their sum is
 *	kept in integer units (bytes, microseconds), so shards add exactly.
 *
 *	Thread-safe from any thread, signal-unsafe.  No allocation on the
 *	hot path but a thread's first event (its shard).
 */
#ifndef FRONTMX_METRICS_H
#define FRONTMX_METRICS_H

#include <stdint.h>
#include <stdio.h>

#define METRICS_VALUE_MAX	64	/* bytes of one label value, more is cut */
#define METRICS_LABELS_MAX	2	/* labels of one metric (le aside) */

/* Every metric frontmx exposes; names and labels in metrics.c's table. */
enum metric {
	METRIC_CONNECTIONS = 0,		/* {listener} */
	METRIC_CONNECTIONS_ACTIVE,	/* gauge */
	METRIC_CONNECTIONS_REFUSED,	/* {reason} limit, proxy-not-allowed, dnsbl, ... */
	METRIC_SMTP_REPLIES,		/* {stage,code} */
	METRIC_MESSAGES,		/* {result} relayed, rejected, tempfailed, quarantined, discarded */
	METRIC_MESSAGE_SIZE,		/* histogram, bytes */
	METRIC_FILTER_RESULTS,		/* {filter,result} */
	METRIC_FILTER_DURATION,		/* {filter} histogram, seconds */
	METRIC_FILTER_ERRORS,		/* {filter,kind} timeout, error, circuit-open */
	METRIC_UPSTREAM_ERRORS,		/* {kind} refused, reset, timeout, malformed */
	METRIC_UPSTREAM_REPLY,		/* histogram, seconds */
	METRIC_TLS_HANDSHAKES,		/* {side,version} */
	METRIC_AUTH,			/* {result} */
	METRIC_GREYLIST,		/* {result} */
	METRIC_RATELIMIT,		/* {key,result} */
	METRIC_DNSBL_HITS,		/* {zone} */
	METRIC_REDIS_ERRORS,		/* no label */
	METRIC_CONFIG_RELOADS,		/* {result} ok, failed */
	METRIC_BUILD_INFO,		/* {version}, always 1 (metrics_init) */
	METRIC_PROCESS_START,		/* process_start_time_seconds (metrics_init) */
	METRIC_COUNT			/* must be last */
};

/*
 * Once at start-up, before the threads (calls before it still count):
 * the release for frontmx_build_info, the start time, and the series
 * of the known label values (messages by result, upstream errors by
 * kind, reloads), so they show as 0 before their first event.
 */
void	metrics_init(const char *version);

/* The entry points the macros below call; use the macros. */
void	metrics_add_(uint64_t n, enum metric, ...);
void	metrics_gauge_add_(int64_t delta, enum metric, ...);
void	metrics_observe_(double v, enum metric, ...);

#define metrics_inc(...)	metrics_add_(1, __VA_ARGS__, (const char *)0)
#define metrics_add(n, ...)	metrics_add_((n), __VA_ARGS__, (const char *)0)
#define metrics_gauge_add(d, ...) \
	metrics_gauge_add_((d), __VA_ARGS__, (const char *)0)
#define metrics_observe(v, ...) \
	metrics_observe_((double)(v), __VA_ARGS__, (const char *)0)

/*
 * The Prometheus text format (0.0.4) of every metric, summed over the
 * threads, to fp.  Returns 0, or -1 on a write error of fp.
 */
int	metrics_render(FILE *fp);

/*
 * One series' current total (summed over threads), for tests: a counter
 * or gauge's value, a histogram's count.  0 for a series never counted.
 *	metrics_value(METRIC_SMTP_REPLIES, "rcpt", "250")
 */
int64_t	metrics_value_(enum metric, ...);
#define metrics_value(...)	metrics_value_(__VA_ARGS__, (const char *)0)

#endif
