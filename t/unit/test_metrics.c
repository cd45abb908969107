/*
 * test_metrics.c - common/metrics.c: series and labels, shards summed
 * over live and ended threads, gauges, histogram buckets, escaping, the
 * per-metric bound ("other"), the rendered text.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tap.h"

#define THREADS		4
#define PER_THREAD	100000

static pthread_barrier_t counted, release;

/* The whole scrape, as a string the caller frees. */
static char *
scrape(void)
{
	char	*buf = NULL;
	size_t	 len = 0;
	FILE	*fp = open_memstream(&buf, &len);

	if (fp == NULL || metrics_render(fp) != 0)
		abort();
	fclose(fp);
	return buf;
}

/* 1 if the scrape has this exact line. */
static int
has_line(const char *text, const char *line)
{
	size_t		 n = strlen(line);
	const char	*p;

	for (p = text; (p = strstr(p, line)) != NULL; p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return 1;
	return 0;
}

static int
count_prefix(const char *text, const char *prefix)
{
	const char	*p;
	int		 n = 0;

	for (p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			n++;
	return n;
}

static void *
worker(void *arg)
{
	int	i;

	(void)arg;
	for (i = 0; i < PER_THREAD; i++)
		metrics_inc(METRIC_SMTP_REPLIES, "data", "354");
	metrics_gauge_add(+1, METRIC_CONNECTIONS_ACTIVE);
	pthread_barrier_wait(&counted);
	pthread_barrier_wait(&release);
	return NULL;
}

int
main(void)
{
	pthread_t	 th[THREADS];
	char		 big[200], *text;
	int		 i, ok_all;

	plan(25);
	metrics_init("1.2.3-test");

	text = scrape();
	ok(has_line(text, "frontmx_messages_total{result=\"relayed\"} 0") &&
	    has_line(text, "frontmx_messages_total{result=\"discarded\"} 0") &&
	    has_line(text, "frontmx_upstream_errors_total{kind=\"malformed\"} 0") &&
	    has_line(text, "frontmx_config_reloads_total{result=\"failed\"} 0") &&
	    has_line(text, "frontmx_redis_errors_total 0") &&
	    has_line(text, "frontmx_connections_active 0"),
	    "known series are there at 0 before any event");
	ok(has_line(text, "frontmx_build_info{version=\"1.2.3-test\"} 1"),
	    "build_info carries the version");
	ok(count_prefix(text, "process_start_time_seconds ") == 1 &&
	    has_line(text, "# TYPE process_start_time_seconds gauge"),
	    "process_start_time_seconds is a gauge");
	ok(count_prefix(text, "# TYPE ") == METRIC_COUNT &&
	    count_prefix(text, "# HELP ") == METRIC_COUNT,
	    "one HELP and one TYPE line per metric (%d)", METRIC_COUNT);
	ok(!has_line(text, "frontmx_greylist_total{result=\"other\"} 0") &&
	    has_line(text, "# TYPE frontmx_greylist_total counter") &&
	    has_line(text, "# TYPE frontmx_dnsbl_hits_total counter") &&
	    has_line(text, "# TYPE frontmx_ratelimit_total counter"),
	    "the other helpers' metrics are registered, without series yet");
	free(text);

	metrics_inc(METRIC_MESSAGES, "relayed");
	metrics_inc(METRIC_MESSAGES, "relayed");
	metrics_add(3, METRIC_MESSAGES, "relayed");
	ok(metrics_value(METRIC_MESSAGES, "relayed") == 5, "inc, inc, add 3: 5");
	metrics_inc(METRIC_SMTP_REPLIES, "rcpt", "250");
	metrics_inc(METRIC_SMTP_REPLIES, "rcpt", "250");
	metrics_inc(METRIC_SMTP_REPLIES, "rcpt", "550");
	ok(metrics_value(METRIC_SMTP_REPLIES, "rcpt", "250") == 2 &&
	    metrics_value(METRIC_SMTP_REPLIES, "rcpt", "550") == 1 &&
	    metrics_value(METRIC_SMTP_REPLIES, "mail", "250") == 0,
	    "two labels make distinct series");
	text = scrape();
	ok(has_line(text, "frontmx_smtp_replies_total{stage=\"rcpt\",code=\"250\"} 2"),
	    "rendered: stage and code in the metric's label order");
	ok(has_line(text, "frontmx_messages_total{result=\"relayed\"} 5"),
	    "rendered: the counter's total");
	free(text);

	/* Four threads, each its own shard: summed while they live... */
	pthread_barrier_init(&counted, NULL, THREADS + 1);
	pthread_barrier_init(&release, NULL, THREADS + 1);
	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	pthread_barrier_wait(&counted);
	ok(metrics_value(METRIC_SMTP_REPLIES, "data", "354") ==
	    THREADS * PER_THREAD, "live threads' shards summed: %d",
	    THREADS * PER_THREAD);
	ok(metrics_value(METRIC_CONNECTIONS_ACTIVE) == THREADS,
	    "gauge summed over threads");
	pthread_barrier_wait(&release);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	/* ...and still counted once they ended. */
	ok(metrics_value(METRIC_SMTP_REPLIES, "data", "354") ==
	    THREADS * PER_THREAD, "ended threads' values kept");
	metrics_gauge_add(-1, METRIC_CONNECTIONS_ACTIVE);
	metrics_gauge_add(-1 * (THREADS + 2), METRIC_CONNECTIONS_ACTIVE);
	ok(metrics_value(METRIC_CONNECTIONS_ACTIVE) == -3,
	    "gauge goes down across threads, below 0 too");
	text = scrape();
	ok(has_line(text, "frontmx_connections_active -3"), "negative gauge rendered");
	free(text);
	metrics_gauge_add(+3, METRIC_CONNECTIONS_ACTIVE);

	metrics_observe(0.003, METRIC_FILTER_DURATION, "spf");
	metrics_observe(0.5, METRIC_FILTER_DURATION, "spf");
	metrics_observe(100, METRIC_FILTER_DURATION, "spf");
	metrics_observe(0.001, METRIC_FILTER_DURATION, "dkim");
	metrics_observe(10240, METRIC_MESSAGE_SIZE);
	text = scrape();
	ok(has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"spf\",le=\"0.0025\"} 0") &&
	    has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"spf\",le=\"0.005\"} 1") &&
	    has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"spf\",le=\"0.5\"} 2") &&
	    has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"spf\",le=\"60\"} 2") &&
	    has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"spf\",le=\"+Inf\"} 3"),
	    "histogram buckets are cumulative, le <= bound, +Inf last");
	ok(has_line(text, "frontmx_filter_duration_seconds_sum{filter=\"spf\"} 100.503000") &&
	    has_line(text, "frontmx_filter_duration_seconds_count{filter=\"spf\"} 3"),
	    "histogram sum (exact microseconds) and count");
	ok(has_line(text, "frontmx_filter_duration_seconds_bucket{filter=\"dkim\",le=\"0.001\"} 1"),
	    "a value equal to a bound falls in that bucket");
	ok(has_line(text, "frontmx_message_size_bytes_bucket{le=\"4096\"} 0") &&
	    has_line(text, "frontmx_message_size_bytes_bucket{le=\"16384\"} 1") &&
	    has_line(text, "frontmx_message_size_bytes_sum 10240") &&
	    has_line(text, "frontmx_message_size_bytes_count 1"),
	    "unlabelled histogram: le alone, byte sum");
	free(text);

	metrics_inc(METRIC_DNSBL_HITS, "a\"b\\c\nd");
	metrics_inc(METRIC_DNSBL_HITS, "x\001y\303\251z");
	memset(big, 'z', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	metrics_inc(METRIC_DNSBL_HITS, big);
	big[METRICS_VALUE_MAX] = '\0';
	text = scrape();
	ok(has_line(text, "frontmx_dnsbl_hits_total{zone=\"a\\\"b\\\\c\\nd\"} 1"),
	    "label value escaped: quote, backslash, newline");
	ok(has_line(text, "frontmx_dnsbl_hits_total{zone=\"x?y??z\"} 1"),
	    "control and non-ASCII bytes become '?'");
	free(text);
	ok(metrics_value(METRIC_DNSBL_HITS, big) == 1,
	    "a long value is cut at %d bytes", METRICS_VALUE_MAX);

	/* The bound: ratelimit keeps 64 series, the rest count as "other". */
	for (i = 0; i < 70; i++) {
		char key[16];

		snprintf(key, sizeof key, "k%d", i);
		metrics_inc(METRIC_RATELIMIT, key, "ok");
		metrics_inc(METRIC_RATELIMIT, key, "ok");
	}
	text = scrape();
	ok(count_prefix(text, "frontmx_ratelimit_total{") == 65 &&
	    has_line(text, "frontmx_ratelimit_total{key=\"other\",result=\"other\"} 12"),
	    "past its 64 series a metric counts into key=other,result=other");
	ok(metrics_value(METRIC_RATELIMIT, "k63", "ok") == 2 &&
	    metrics_value(METRIC_RATELIMIT, "k64", "ok") == 0,
	    "series made before the bound keep counting");
	free(text);

	metrics_inc(METRIC_AUTH);
	metrics_inc(METRIC_MESSAGE_SIZE);		/* not a counter: ignored */
	metrics_observe(1, METRIC_MESSAGES, "relayed");	/* not a histogram */
	ok(metrics_value(METRIC_AUTH, "") == 1 &&
	    metrics_value(METRIC_MESSAGES, "relayed") == 5 &&
	    metrics_value(METRIC_MESSAGE_SIZE) == 1,
	    "missing label is \"\"; a call of the wrong kind changes nothing");

	text = scrape();
	ok_all = text[strlen(text) - 1] == '\n' && strstr(text, "\n\n") == NULL;
	ok(ok_all, "every line ends in LF, no empty line");
	free(text);
	return done_testing();
}
