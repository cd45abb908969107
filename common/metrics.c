/*
 * metrics.c - the metric table, the series registry, per-thread shards
 * and the Prometheus text rendering (see metrics.h)
 *
 * Memory is fixed at build time: METRICS_SERIES_MAX series and
 * METRICS_SLOTS_MAX values per shard.  metrics_setup() checks that the
 * table's per-metric maxima (plus each one's "other" series) fit, so
 * the global bounds are never what refuses a series: only a metric's
 * own maximum is, and that one is documented (metrics.h).
 *
 * A series is written once, under metrics_lock, before it is published
 * to the lock-free index with a release store; readers load the index
 * with acquire and then only read the series.  A shard's values are
 * written by its thread alone (relaxed load + store, no read-modify-
 * write) and read by a scrape with relaxed loads: a scrape may miss the
 * event counted a nanosecond before, never count one twice.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "strutil.h"

#define METRICS_SERIES_MAX	2048
#define METRICS_INDEX_SIZE	4096	/* power of two, twice the series */
#define METRICS_SLOTS_MAX	4096	/* values per shard: 32 KiB */
#define METRICS_BUCKETS_MAX	16	/* finite bounds of one histogram */
#define METRICS_OTHER		"other"	/* every label of a metric past its max */

enum metrics_kind {
	METRICS_COUNTER = 0,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
	METRICS_INFO,		/* rendered from metrics_init's values */
	METRICS_KIND_COUNT	/* must be last */
};

struct metrics_family {
	const char		*name;
	const char		*help;
	enum metrics_kind	 kind;
	unsigned		 nlabels;
	const char		*labels[METRICS_LABELS_MAX];
	unsigned		 max;		/* series, "other" aside */
	const char *const	*buckets;	/* upper bounds as rendered, NULL-ended */
	unsigned		 scale;		/* histogram sum: units per 1 */
	const char *const	*known;		/* label values made at init, NULL-ended */
};

static const char *const metrics_seconds[] = { "0.001", "0.0025", "0.005",
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    "30", "60", NULL };
static const char *const metrics_bytes[] = { "1024", "4096", "16384",
    "65536", "262144", "1048576", "4194304", "16777216", "67108864", NULL };
static const char *const metrics_known_messages[] = { "relayed", "rejected",
    "tempfailed", "quarantined", "discarded", NULL };
static const char *const metrics_known_upstream[] = { "refused", "reset",
    "timeout", "malformed", NULL };
static const char *const metrics_known_reloads[] = { "ok", "failed", NULL };

static const struct metrics_family metrics_families[METRIC_COUNT] = {
	[METRIC_CONNECTIONS] = { "frontmx_connections_total",
	    "SMTP connections accepted, by listen address.",
	    METRICS_COUNTER, 1, { "listener" }, 64, NULL, 0, NULL },
	[METRIC_CONNECTIONS_ACTIVE] = { "frontmx_connections_active",
	    "SMTP sessions open now.",
	    METRICS_GAUGE, 0, { NULL }, 1, NULL, 0, NULL },
	[METRIC_CONNECTIONS_REFUSED] = { "frontmx_connections_refused_total",
	    "SMTP connections refused before the session, by reason.",
	    METRICS_COUNTER, 1, { "reason" }, 32, NULL, 0, NULL },
	[METRIC_SMTP_REPLIES] = { "frontmx_smtp_replies_total",
	    "Replies sent to SMTP clients, by stage and reply code.",
	    METRICS_COUNTER, 2, { "stage", "code" }, 256, NULL, 0, NULL },
	[METRIC_MESSAGES] = { "frontmx_messages_total",
	    "Messages received to the end of data, by outcome.",
	    METRICS_COUNTER, 1, { "result" }, 16, NULL, 0,
	    metrics_known_messages },
	[METRIC_MESSAGE_SIZE] = { "frontmx_message_size_bytes",
	    "Size of the messages received, in bytes.",
	    METRICS_HISTOGRAM, 0, { NULL }, 1, metrics_bytes, 1, NULL },
	[METRIC_FILTER_RESULTS] = { "frontmx_filter_results_total",
	    "Filter verdicts, by filter and result.",
	    METRICS_COUNTER, 2, { "filter", "result" }, 256, NULL, 0, NULL },
	[METRIC_FILTER_DURATION] = { "frontmx_filter_duration_seconds",
	    "Time from a filter call to its answer, in seconds.",
	    METRICS_HISTOGRAM, 1, { "filter" }, 64, metrics_seconds, 1000000,
	    NULL },
	[METRIC_FILTER_ERRORS] = { "frontmx_filter_errors_total",
	    "Filter failures (timeout, error, circuit-open), by filter.",
	    METRICS_COUNTER, 2, { "filter", "kind" }, 128, NULL, 0, NULL },
	[METRIC_UPSTREAM_ERRORS] = { "frontmx_upstream_errors_total",
	    "Failures talking to the upstream MTA, by kind.",
	    METRICS_COUNTER, 1, { "kind" }, 16, NULL, 0,
	    metrics_known_upstream },
	[METRIC_UPSTREAM_REPLY] = { "frontmx_upstream_reply_seconds",
	    "Time the upstream MTA took to answer a command, in seconds.",
	    METRICS_HISTOGRAM, 0, { NULL }, 1, metrics_seconds, 1000000,
	    NULL },
	[METRIC_TLS_HANDSHAKES] = { "frontmx_tls_handshakes_total",
	    "TLS handshakes completed, by side (server, client) and version.",
	    METRICS_COUNTER, 2, { "side", "version" }, 16, NULL, 0, NULL },
	[METRIC_AUTH] = { "frontmx_auth_total",
	    "SMTP AUTH attempts, by result.",
	    METRICS_COUNTER, 1, { "result" }, 16, NULL, 0, NULL },
	[METRIC_GREYLIST] = { "frontmx_greylist_total",
	    "Greylisting decisions, by result.",
	    METRICS_COUNTER, 1, { "result" }, 16, NULL, 0, NULL },
	[METRIC_RATELIMIT] = { "frontmx_ratelimit_total",
	    "Rate limit checks, by key and result.",
	    METRICS_COUNTER, 2, { "key", "result" }, 64, NULL, 0, NULL },
	[METRIC_DNSBL_HITS] = { "frontmx_dnsbl_hits_total",
	    "DNSBL/DNSWL zones that listed a client, by zone.",
	    METRICS_COUNTER, 1, { "zone" }, 64, NULL, 0, NULL },
	[METRIC_REDIS_ERRORS] = { "frontmx_redis_errors_total",
	    "Redis commands that failed or timed out.",
	    METRICS_COUNTER, 0, { NULL }, 1, NULL, 0, NULL },
	[METRIC_CONFIG_RELOADS] = { "frontmx_config_reloads_total",
	    "Configuration reloads (SIGHUP), by result.",
	    METRICS_COUNTER, 1, { "result" }, 8, NULL, 0,
	    metrics_known_reloads },
	[METRIC_BUILD_INFO] = { "frontmx_build_info",
	    "The frontmx release running; always 1.",
	    METRICS_INFO, 1, { "version" }, 0, NULL, 0, NULL },
	[METRIC_PROCESS_START] = { "process_start_time_seconds",
	    "Start time of the process since the Unix epoch, in seconds.",
	    METRICS_INFO, 0, { NULL }, 0, NULL, 0, NULL },
};

struct metrics_series {
	enum metric	 m;
	uint32_t	 off;		/* first value slot */
	uint64_t	 hash;
	char		 values[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
};

struct metrics_shard {
	struct metrics_shard	*next;
	_Atomic uint64_t	 v[METRICS_SLOTS_MAX];
};

static pthread_once_t	 metrics_once = PTHREAD_ONCE_INIT;
static pthread_key_t	 metrics_key;
/* Adds series and shards; a scrape holds it while it sums.  Never on the hot path. */
static pthread_mutex_t	 metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_series metrics_series[METRICS_SERIES_MAX];
static _Atomic uint32_t	 metrics_nseries;
static _Atomic uint32_t	 metrics_index[METRICS_INDEX_SIZE];	/* series + 1; 0 free */
static unsigned		 metrics_family_n[METRIC_COUNT];	/* under metrics_lock */
static uint32_t		 metrics_nslots;			/* under metrics_lock */
static double		 metrics_bounds[METRIC_COUNT][METRICS_BUCKETS_MAX];
static unsigned		 metrics_nbounds[METRIC_COUNT];
static struct metrics_shard *metrics_shards;			/* live threads */
/*
 * The values of threads that ended, and of a thread that could not get
 * a shard (out of memory): updated with atomic adds, since several
 * threads may write it.
 */
static struct metrics_shard metrics_retired;
static _Thread_local struct metrics_shard *metrics_mine;
static char		 metrics_version[METRICS_VALUE_MAX + 1] = "unknown";
static struct timespec	 metrics_start;

static void	metrics_thread_end(void *);

/* Value slots one series of m takes. */
static unsigned
metrics_width(enum metric m)
{
	if (metrics_families[m].kind == METRICS_HISTOGRAM)
		return metrics_nbounds[m] + 2;	/* buckets, +Inf, sum */
	return 1;
}

/*
 * Parse the bucket bounds and check that every metric's maximum fits
 * the fixed arrays: a table that does not is a bug of this file, found
 * by the first test that counts anything.
 */
static void
metrics_setup(void)
{
	unsigned long	 series = 0, slots = 0, per;
	unsigned	 m, i;

	for (m = 0; m < METRIC_COUNT; m++) {
		const struct metrics_family *f = &metrics_families[m];

		if (f->kind == METRICS_INFO)
			continue;
		for (i = 0; f->buckets != NULL && f->buckets[i] != NULL; i++) {
			if (i == METRICS_BUCKETS_MAX) {
				fprintf(stderr, "metrics: %s: too many buckets\n",
				    f->name);
				abort();
			}
			metrics_bounds[m][i] = strtod(f->buckets[i], NULL);
		}
		metrics_nbounds[m] = i;
		per = f->nlabels == 0 ? 1 : f->max + 1;
		series += per;
		slots += per * metrics_width(m);
	}
	if (series > METRICS_SERIES_MAX || slots > METRICS_SLOTS_MAX ||
	    METRICS_INDEX_SIZE < 2 * METRICS_SERIES_MAX ||
	    pthread_key_create(&metrics_key, metrics_thread_end) != 0) {
		fprintf(stderr, "metrics: table needs %lu series, %lu slots\n",
		    series, slots);
		abort();
	}
}

/*
 * A label value as it is stored: at most METRICS_VALUE_MAX bytes, bytes
 * outside printable ASCII (but LF, which the format escapes) as '?', so
 * the scrape is always valid UTF-8.  NULL (a missing value) is "".
 */
static void
metrics_value_copy(char *dst, const char *src)
{
	size_t	i;

	for (i = 0; src != NULL && src[i] != '\0' && i < METRICS_VALUE_MAX;
	    i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = (c >= 0x20 && c < 0x7f) || c == '\n' ? (char)c : '?';
	}
	dst[i] = '\0';
}

/*
 * The label values after the metric, up to the NULL the macros add.  A
 * caller that gave too few gets "" for the rest (a NULL value ends the
 * list early); one that gave too many has the extra ones ignored.
 * -1 when m is not a metric of that kind (the call changes nothing).
 */
static int
metrics_args(enum metric m, enum metrics_kind kind, va_list ap,
    char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1])
{
	const char	*s = "";
	unsigned	 i;

	pthread_once(&metrics_once, metrics_setup);
	if ((unsigned)m >= METRIC_COUNT || metrics_families[m].kind != kind)
		return -1;

	for (i = 0; i < METRICS_LABELS_MAX; i++) {
		if (s != NULL && i < metrics_families[m].nlabels)
			s = va_arg(ap, const char *);
		else
			s = NULL;
		metrics_value_copy(v[i], s);
	}
	return 0;
}

static uint64_t
metrics_hash(enum metric m, char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1])
{
	char		 key[METRICS_LABELS_MAX * (METRICS_VALUE_MAX + 1) + 4];
	size_t		 len = 0, n;
	unsigned	 i;

	key[len++] = (char)m;
	for (i = 0; i < metrics_families[m].nlabels; i++) {
		n = strlen(v[i]);
		memcpy(key + len, v[i], n + 1);	/* the NUL separates */
		len += n + 1;
	}
	return str_hash_mem(key, len);
}

static int
metrics_same(const struct metrics_series *s, enum metric m, uint64_t h,
    char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1])
{
	unsigned	i;

	if (s->hash != h || s->m != m)
		return 0;
	for (i = 0; i < metrics_families[m].nlabels; i++)
		if (strcmp(s->values[i], v[i]) != 0)
			return 0;
	return 1;
}

/*
 * The series' place in metrics_index: the one that holds it (*sn = its
 * number + 1), or the free one where it would go (*sn = 0).  Lock-free.
 */
static uint32_t
metrics_probe(enum metric m, uint64_t h,
    char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1], uint32_t *sn)
{
	uint32_t	i, s;

	for (i = (uint32_t)h & (METRICS_INDEX_SIZE - 1);;
	    i = (i + 1) & (METRICS_INDEX_SIZE - 1)) {
		s = atomic_load_explicit(&metrics_index[i], memory_order_acquire);
		if (s == 0 || metrics_same(&metrics_series[s - 1], m, h, v)) {
			*sn = s;
			return i;
		}
	}
}

/* Under metrics_lock: make the series at free index place i. */
static uint32_t
metrics_create(enum metric m, uint64_t h,
    char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1], uint32_t i)
{
	uint32_t		 n = atomic_load_explicit(&metrics_nseries,
				    memory_order_relaxed);
	struct metrics_series	*s = &metrics_series[n];

	s->m = m;
	s->hash = h;
	s->off = metrics_nslots;
	memcpy(s->values, v, sizeof s->values);
	metrics_nslots += metrics_width(m);
	metrics_family_n[m]++;
	atomic_store_explicit(&metrics_index[i], n + 1, memory_order_release);
	atomic_store_explicit(&metrics_nseries, n + 1, memory_order_release);
	return s->off;
}

/*
 * The first value slot of the series (m, v), made on its first event.
 * Past the metric's maximum, the labels become all "other" (v is
 * rewritten) and that series is used.
 */
static uint32_t
metrics_slot(enum metric m, char v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1])
{
	uint64_t	h = metrics_hash(m, v);
	uint32_t	i, off, sn;
	unsigned	k;

	(void)metrics_probe(m, h, v, &sn);
	if (sn != 0)
		return metrics_series[sn - 1].off;
	pthread_mutex_lock(&metrics_lock);
	/* Another thread may have made it since; series only come here. */
	i = metrics_probe(m, h, v, &sn);
	if (sn == 0 && metrics_family_n[m] >= metrics_families[m].max) {
		for (k = 0; k < metrics_families[m].nlabels; k++)
			strcpy(v[k], METRICS_OTHER);
		h = metrics_hash(m, v);
		i = metrics_probe(m, h, v, &sn);
	}
	if (sn != 0)
		off = metrics_series[sn - 1].off;
	else
		off = metrics_create(m, h, v, i);
	pthread_mutex_unlock(&metrics_lock);
	return off;
}

/* This thread's shard, made on its first event. */
static struct metrics_shard *
metrics_shard(void)
{
	struct metrics_shard	*sh = metrics_mine;

	if (sh != NULL)
		return sh;
	if ((sh = calloc(1, sizeof *sh)) == NULL)
		return &metrics_retired;	/* counted, with atomic adds */
	pthread_mutex_lock(&metrics_lock);
	sh->next = metrics_shards;
	metrics_shards = sh;
	pthread_mutex_unlock(&metrics_lock);
	pthread_setspecific(metrics_key, sh);
	metrics_mine = sh;
	return sh;
}

/* Thread exit: its values move to metrics_retired, so no total drops. */
static void
metrics_thread_end(void *arg)
{
	struct metrics_shard	*sh = arg, **pp;
	uint32_t		 i;

	pthread_mutex_lock(&metrics_lock);
	for (pp = &metrics_shards; *pp != NULL; pp = &(*pp)->next)
		if (*pp == sh) {
			*pp = sh->next;
			break;
		}
	for (i = 0; i < metrics_nslots; i++)
		atomic_fetch_add_explicit(&metrics_retired.v[i],
		    atomic_load_explicit(&sh->v[i], memory_order_relaxed),
		    memory_order_relaxed);
	pthread_mutex_unlock(&metrics_lock);
	metrics_mine = NULL;
	free(sh);
}

static void
metrics_bump(uint32_t slot, uint64_t n)
{
	struct metrics_shard	*sh = metrics_shard();
	uint64_t		 x;

	if (sh == &metrics_retired) {
		atomic_fetch_add_explicit(&sh->v[slot], n, memory_order_relaxed);
		return;
	}
	/* Only this thread writes here: no read-modify-write needed. */
	x = atomic_load_explicit(&sh->v[slot], memory_order_relaxed);
	atomic_store_explicit(&sh->v[slot], x + n, memory_order_relaxed);
}

void
metrics_add_(uint64_t n, enum metric m, ...)
{
	char	v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
	va_list	ap;
	int	r;

	va_start(ap, m);
	r = metrics_args(m, METRICS_COUNTER, ap, v);
	va_end(ap);
	if (r == 0)
		metrics_bump(metrics_slot(m, v), n);
}

void
metrics_gauge_add_(int64_t delta, enum metric m, ...)
{
	char	v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
	va_list	ap;
	int	r;

	va_start(ap, m);
	r = metrics_args(m, METRICS_GAUGE, ap, v);
	va_end(ap);
	/* Two's complement: the sum over shards wraps back to the signed total. */
	if (r == 0)
		metrics_bump(metrics_slot(m, v), (uint64_t)delta);
}

void
metrics_observe_(double x, enum metric m, ...)
{
	char		 v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
	va_list		 ap;
	uint32_t	 off;
	unsigned	 b, nb;
	double		 units;
	int		 r;

	va_start(ap, m);
	r = metrics_args(m, METRICS_HISTOGRAM, ap, v);
	va_end(ap);
	if (r == -1)
		return;
	if (!(x >= 0))
		x = 0;		/* NaN and a clock that stepped back */
	nb = metrics_nbounds[m];
	for (b = 0; b < nb && x > metrics_bounds[m][b]; b++)
		;
	off = metrics_slot(m, v);
	metrics_bump(off + b, 1);	/* b == nb: the +Inf bucket */
	units = x * metrics_families[m].scale + 0.5;
	metrics_bump(off + nb + 1, units < 1e18 ? (uint64_t)units : 0);
}

void
metrics_init(const char *version)
{
	char		 v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
	unsigned	 m, i;

	pthread_once(&metrics_once, metrics_setup);
	metrics_value_copy(metrics_version, version);
	clock_gettime(CLOCK_REALTIME, &metrics_start);
	memset(v, 0, sizeof v);
	for (m = 0; m < METRIC_COUNT; m++) {
		const struct metrics_family *f = &metrics_families[m];

		if (f->kind == METRICS_INFO)
			continue;
		if (f->nlabels == 0)
			metrics_slot(m, v);
		for (i = 0; f->known != NULL && f->known[i] != NULL; i++) {
			metrics_value_copy(v[0], f->known[i]);
			metrics_slot(m, v);
		}
	}
}

/*
 * Every value slot summed over the shards, and how many series there
 * were when it was taken (series past it may have slots past nslots).
 */
static uint64_t *
metrics_snapshot(uint32_t *nseries)
{
	struct metrics_shard	*sh;
	uint64_t		*sum;
	uint32_t		 i;

	if ((sum = calloc(METRICS_SLOTS_MAX, sizeof *sum)) == NULL)
		return NULL;
	pthread_mutex_lock(&metrics_lock);
	*nseries = atomic_load_explicit(&metrics_nseries, memory_order_acquire);
	for (i = 0; i < metrics_nslots; i++)
		sum[i] = atomic_load_explicit(&metrics_retired.v[i],
		    memory_order_relaxed);
	for (sh = metrics_shards; sh != NULL; sh = sh->next)
		for (i = 0; i < metrics_nslots; i++)
			sum[i] += atomic_load_explicit(&sh->v[i],
			    memory_order_relaxed);
	pthread_mutex_unlock(&metrics_lock);
	return sum;
}

int64_t
metrics_value_(enum metric m, ...)
{
	char		 v[METRICS_LABELS_MAX][METRICS_VALUE_MAX + 1];
	va_list		 ap;
	uint64_t	*sum, total = 0;
	uint32_t	 n, off, sn;
	unsigned	 b;
	int		 r;

	/* Any kind but the info ones, which have no series. */
	va_start(ap, m);
	r = metrics_args(m, (unsigned)m < METRIC_COUNT ?
	    metrics_families[m].kind : METRICS_COUNTER, ap, v);
	va_end(ap);
	if (r == -1 || metrics_families[m].kind == METRICS_INFO)
		return 0;
	(void)metrics_probe(m, metrics_hash(m, v), v, &sn);
	if (sn == 0 || (sum = metrics_snapshot(&n)) == NULL)
		return 0;
	off = metrics_series[sn - 1].off;
	if (metrics_families[m].kind == METRICS_HISTOGRAM)
		for (b = 0; b <= metrics_nbounds[m]; b++)
			total += sum[off + b];
	else
		total = sum[off];
	free(sum);
	return (int64_t)total;
}

/* A label value in the exposition format: \ " and LF escaped. */
static void
metrics_put_value(FILE *fp, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			fputs("\\\\", fp);
		else if (*s == '"')
			fputs("\\\"", fp);
		else if (*s == '\n')
			fputs("\\n", fp);
		else
			fputc(*s, fp);
	}
}

/* {a="x",b="y"} of the series, with le="..." last when le != NULL. */
static void
metrics_put_labels(FILE *fp, const struct metrics_family *f,
    const struct metrics_series *s, const char *le)
{
	unsigned	i;

	if (f->nlabels == 0 && le == NULL)
		return;
	fputc('{', fp);
	for (i = 0; i < f->nlabels; i++) {
		fprintf(fp, "%s%s=\"", i ? "," : "", f->labels[i]);
		metrics_put_value(fp, s->values[i]);
		fputc('"', fp);
	}
	if (le != NULL)
		fprintf(fp, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	fputc('}', fp);
}

static void
metrics_put_histogram(FILE *fp, enum metric m, const struct metrics_series *s,
    const uint64_t *v)
{
	const struct metrics_family	*f = &metrics_families[m];
	uint64_t			 cum = 0, sum = v[metrics_nbounds[m] + 1];
	unsigned			 b;

	for (b = 0; b <= metrics_nbounds[m]; b++) {
		cum += v[b];
		fprintf(fp, "%s_bucket", f->name);
		metrics_put_labels(fp, f, s, b < metrics_nbounds[m] ?
		    f->buckets[b] : "+Inf");
		fprintf(fp, " %llu\n", (unsigned long long)cum);
	}
	fprintf(fp, "%s_sum", f->name);
	metrics_put_labels(fp, f, s, NULL);
	if (f->scale == 1)
		fprintf(fp, " %llu\n", (unsigned long long)sum);
	else	/* the scale is 10^6: microseconds as seconds, exactly */
		fprintf(fp, " %llu.%06llu\n",
		    (unsigned long long)(sum / f->scale),
		    (unsigned long long)(sum % f->scale));
	fprintf(fp, "%s_count", f->name);
	metrics_put_labels(fp, f, s, NULL);
	fprintf(fp, " %llu\n", (unsigned long long)cum);
}

static void
metrics_put_family(FILE *fp, enum metric m, const uint64_t *sum,
    uint32_t nseries)
{
	static const char *const types[METRICS_KIND_COUNT] = { "counter",
	    "gauge", "histogram", "gauge" };
	const struct metrics_family	*f = &metrics_families[m];
	const struct metrics_series	*s;
	uint32_t			 i;

	fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
	    types[f->kind]);
	if (m == METRIC_BUILD_INFO) {
		fprintf(fp, "%s{version=\"", f->name);
		metrics_put_value(fp, metrics_version);
		fputs("\"} 1\n", fp);
		return;
	}
	if (m == METRIC_PROCESS_START) {
		fprintf(fp, "%s %lld.%03ld\n", f->name,
		    (long long)metrics_start.tv_sec,
		    metrics_start.tv_nsec / 1000000);
		return;
	}
	for (i = 0; i < nseries; i++) {
		s = &metrics_series[i];
		if (s->m != m)
			continue;
		if (f->kind == METRICS_HISTOGRAM) {
			metrics_put_histogram(fp, m, s, sum + s->off);
			continue;
		}
		fputs(f->name, fp);
		metrics_put_labels(fp, f, s, NULL);
		if (f->kind == METRICS_GAUGE)
			fprintf(fp, " %lld\n", (long long)(int64_t)sum[s->off]);
		else
			fprintf(fp, " %llu\n", (unsigned long long)sum[s->off]);
	}
}

int
metrics_render(FILE *fp)
{
	uint64_t	*sum;
	uint32_t	 n;
	unsigned	 m;

	pthread_once(&metrics_once, metrics_setup);
	if ((sum = metrics_snapshot(&n)) == NULL)
		return -1;
	for (m = 0; m < METRIC_COUNT; m++)
		metrics_put_family(fp, m, sum, n);
	free(sum);
	return ferror(fp) ? -1 : 0;
}
