/*
 * filter_chain.c - runs the configured filters, implements struct fmx_api
 *
 * DESCRIPTION
 *	One filter_session per SMTP session holds one struct fmx_ctx per
 *	configured filter (the filter's view of the session: private data,
 *	the reply and result it set, whether it is waiting).  A phase runs the
 *	filters in configuration order through filter_run(), a loop that
 *	stops when a hook is pending (FMX_PENDING, or a blocking filter on the
 *	pool) and is re-entered from resume(), the pool's completion event or
 *	the per-call timeout.  Exactly one of those ends each call: a
 *	generation number on the context makes late answers harmless.
 *
 *	Every module call is untrusted: verdicts are range-checked, replies
 *	and edits validated (no CR/LF/NUL smuggled into the upstream stream),
 *	and any failure becomes the filter's on_error action (default
 *	tempfail, like Postfix's milter_default_action).  A filter that timed
 *	out is not called again in that session.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "content.h"
#include "dkim.h"
#include "dmarc.h"
#include "filter_chain.h"
#include "filter_loader.h"
#include "filter_opt.h"
#include "log.h"
#include "policy.h"
#include "spf.h"

#define FILTER_AR_MAX		16
#define FILTER_RCPT_EDITS_MAX	32
#define FILTER_HEADER_VALUE_MAX	900	/* one line of 998 with the name */
#define FILTER_RESULT_MAX	64
#define FILTER_REASON_MAX	200
#define FILTER_FACTS_MAX	32
#define FILTER_FACT_VALUE_MAX	512

/* One configured filter, initialised once per configuration. */
struct filter_instance {
	const struct config_filter	*cf;
	const struct fmx_filter		*ops;
	struct filter_module		*module;	/* NULL for a built-in */
	void				*inst;
	int				 initialised;
};

struct filter_chain {
	struct config			*cfg;
	struct filter_instance		*inst;
	size_t				 ninst;
	unsigned			 wants;		/* 1u << FILTER_PH_* */
	atomic_int			 refcount;
};

struct fmx_ctx {
	struct filter_session	*fs;
	size_t			 idx;
	uint64_t		 handle;	/* what modules hold (filter_ctx_get) */
	char			 getbuf[64];	/* api->get() of numbers */
	void			*conn_data;
	fmx_free_fn		 conn_free;
	void			*msg_data;
	fmx_free_fn		 msg_free;
	char			 reply[FILTER_REPLY_MAX];
	char			 result[FILTER_RESULT_MAX];
	char			 reason[FILTER_REASON_MAX];
	unsigned		 gen;		/* current call; late answers carry an older one */
	int			 in_hook;	/* a hook of this filter is executing */
	int			 waiting;	/* FMX_PENDING or on the pool */
	int			 resumed;	/* resume() came during the hook itself */
	enum fmx_verdict	 resume_verdict;
	int			 failed;	/* timed out: no more calls this session */
	int			 on_pool;	/* a pool thread still runs a hook */
	struct event		*timer;		/* api->timer() */
	fmx_timer_fn		 timer_fn;
	void			*timer_arg;
	int			 timer_msg;	/* armed during a message: ends with it */
};

/*
 * What a connect, helo or mail hook answered, kept until the recipients'
 * policies are known (delay_reject, Postfix's smtpd_delay_reject): read at
 * each RCPT with that recipient's policy, and for the message at DATA
 * with the transaction's.  Connect answers live as long as the session,
 * helo answers until the next HELO, mail answers until the message ends.
 */
struct filter_held {
	struct filter_held	*next;		/* chain order: phase, then filter */
	enum filter_phase	 phase;
	size_t			 idx;
	enum fmx_verdict	 verdict;
	int			 failed;	/* error, timeout, bad verdict: on_error */
	char			 result[FILTER_RESULT_MAX];
	char			 reason[FILTER_REASON_MAX];
	char			*reply;		/* NULL: the default reply */
};

struct filter_ar {
	char	method[32];
	char	result[32];
	char	props[256];
};

/* A DNS query a filter has outstanding; cancelled if the session ends first. */
struct filter_dnsq {
	struct filter_dnsq	*next;
	struct fmx_ctx		*c;
	unsigned long long	 id;
	fmx_dns_fn		 fn;
	void			*arg;
	int			 in_query;	/* inside resolver->query() */
	int			 finished;
	int			 msg;		/* started during a message: ends with it */
};

static const struct filter_resolver *filter_resolver;

struct filter_session {
	unsigned long long		 session_id;	/* facts may be gone: a copy */
	struct filter_chain		*chain;
	struct event_base		*base;
	const struct filter_facts	*facts;
	struct filter_host		 host;
	struct fmx_ctx			*ctx;
	size_t				 n;
	pthread_mutex_t			 lock;		/* recursive: every api call holds it */
	int				 refs;		/* 1 + pool jobs in flight */
	int				 dead;

	/* The phase being run. */
	enum filter_phase		 phase;
	struct filter_args		 args;
	size_t				 next;
	int				 running;
	filter_done_fn			 done;
	void				*done_arg;
	struct event			*timeout;

	/* Message state, reset by filter_session_msg_end(). */
	int				 msg_open;
	int				 msg_accepted;	/* a filter said ACCEPT */
	int				 held_accepted;	/* a held ACCEPT, for this recipient */
	struct filter_held		*held;		/* connect/helo/mail answers */
	int				 held_oom;	/* one could not be kept */
	struct filter_outcome		 outcome;
	struct filter_edit		 edits[FILTER_EDITS_MAX];
	size_t				 nedits;
	unsigned char			*body;
	size_t				 bodylen;
	char				*add_rcpts[FILTER_RCPT_EDITS_MAX];
	size_t				 nadd_rcpts;
	char				*del_rcpts[FILTER_RCPT_EDITS_MAX];
	size_t				 ndel_rcpts;
	struct filter_ar		 ar[FILTER_AR_MAX];
	size_t				 nar;
	char				*fact_key[FILTER_FACTS_MAX];
	char				*fact_value[FILTER_FACTS_MAX];
	size_t				 nfacts;
	struct filter_dnsq		*dnsq;
};

static const char *const filter_phase_names[FILTER_PH_COUNT] = {
	[FILTER_PH_CONNECT] = "connect",
	[FILTER_PH_HELO] = "helo",
	[FILTER_PH_MAIL] = "mail",
	[FILTER_PH_RCPT] = "rcpt",
	[FILTER_PH_DATA] = "data",
	[FILTER_PH_HEADER] = "header",
	[FILTER_PH_EOH] = "eoh",
	[FILTER_PH_BODY] = "body",
	[FILTER_PH_EOM] = "eom",
};

static const char *const filter_verdict_names[FMX_VERDICT_COUNT] = {
	[FMX_CONTINUE] = "continue",
	[FMX_ACCEPT] = "accept",
	[FMX_REJECT] = "reject",
	[FMX_TEMPFAIL] = "tempfail",
	[FMX_DISCARD] = "discard",
	[FMX_QUARANTINE] = "quarantine",
	[FMX_TAG] = "tag",
	[FMX_PENDING] = "pending",
};

/* Built-in filters use the module API; they are just linked in. */
static const struct {
	const char			*name;
	const struct fmx_filter		*(*table)(void);
} filter_builtins[] = {
	{ "content", content_filter },
	{ "spf", spf_filter },
	{ "dkim", dkim_filter },
	{ "dmarc", dmarc_filter },
};

static void	filter_run(struct filter_session *);
static const struct fmx_api filter_api;

const char *
filter_phase_name(enum filter_phase phase)
{
	return phase < FILTER_PH_COUNT ? filter_phase_names[phase] : "unknown";
}

const char *
filter_verdict_name(enum fmx_verdict v)
{
	return v < FMX_VERDICT_COUNT ? filter_verdict_names[v] : "invalid";
}

/* ---- validation of what modules hand us -------------------------------- */

int
filter_reply_valid(const char *reply, int want_class)
{
	const char *p = reply, *nl;
	char code[4] = "";
	size_t len, lines = 0;

	if (reply == NULL || *reply == '\0')
		return -1;
	for (;;) {
		nl = strchr(p, '\n');
		len = nl ? (size_t)(nl - p) : strlen(p);
		if (len < 3 || len > 510 || ++lines > 32)
			return -1;
		if (!isdigit((unsigned char)p[0]) || !isdigit((unsigned char)p[1]) ||
		    !isdigit((unsigned char)p[2]) || p[1] > '5')
			return -1;
		if (p[0] != '4' && p[0] != '5')
			return -1;
		if (want_class && p[0] - '0' != want_class)
			return -1;
		if (code[0] == '\0')
			memcpy(code, p, 3);
		else if (memcmp(code, p, 3) != 0)
			return -1;
		/* RFC 5321 4.2.1: '-' on every line but the last. */
		if (len > 3 && p[3] != (nl ? '-' : ' '))
			return -1;
		if (len == 3 && nl)
			return -1;
		for (size_t i = 3; i < len; i++)
			if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
				return -1;
		if (nl == NULL)
			return 0;
		p = nl + 1;
	}
}

static int
filter_header_name_valid(const char *name)
{
	size_t i, len;

	if (name == NULL || (len = strlen(name)) == 0 || len > 76)
		return -1;
	for (i = 0; i < len; i++)	/* RFC 5322 2.2: printable, no colon */
		if ((unsigned char)name[i] < 33 || (unsigned char)name[i] > 126 ||
		    name[i] == ':')
			return -1;
	return 0;
}

static int
filter_header_value_valid(const char *value)
{
	size_t i, len;

	if (value == NULL || (len = strlen(value)) > FILTER_HEADER_VALUE_MAX)
		return -1;
	for (i = 0; i < len; i++)
		if (value[i] == '\r' || value[i] == '\n' ||
		    ((unsigned char)value[i] < 0x20 && value[i] != '\t') ||
		    value[i] == 0x7f)
			return -1;
	return 0;
}

/* Printable, no space, one '@', bounded: the session re-parses it fully. */
static int
filter_addr_valid(const char *addr)
{
	size_t i, len;

	if (addr == NULL || (len = strlen(addr)) == 0 || len > 254 ||
	    strchr(addr, '@') == NULL)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)addr[i] <= 0x20 || (unsigned char)addr[i] >= 0x7f ||
		    addr[i] == '<' || addr[i] == '>')
			return -1;
	return 0;
}

/* A result or reason goes into logs and header comments: keep it tame. */
static void
filter_copy_clean(char *dst, size_t dstlen, const char *src)
{
	size_t i, j = 0;

	for (i = 0; src != NULL && src[i] != '\0' && j + 1 < dstlen; i++)
		dst[j++] = ((unsigned char)src[i] < 0x20 ||
		    (unsigned char)src[i] > 0x7e) ? ' ' : src[i];
	dst[j] = '\0';
}

/* ---- handles: what a module holds instead of a pointer ------------------ */

/*
 * A module may keep the struct fmx_ctx * it was given and call the api with
 * it at any time, from any thread: after the timeout, after its session
 * ended, from on_abort, from a thread of its own.  So what it holds is not a
 * pointer but a handle, looked up on every call:
 *
 *	bits 63..52	the event-loop thread that owns the session (1..4095)
 *	bits 51..32	a slot in that thread's table
 *	bits 31..0	the slot's generation, bumped when the session ends
 *
 * Only the owning thread resolves its own handles (so a lookup never races
 * the free, which happens on that thread too), and a pool thread resolves
 * only the handle of the blocking call it runs.  Anything else - another
 * thread, a handle whose session ended - is refused and logged, never
 * dereferenced.
 */
#define FILTER_H_TID_BITS	12
#define FILTER_H_IDX_BITS	20
#define FILTER_H_TID_MAX	((1u << FILTER_H_TID_BITS) - 1)
#define FILTER_H_IDX_MAX	((1u << FILTER_H_IDX_BITS) - 1)

_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t),
    "a module's ctx handle must fit in a pointer");

struct filter_slot {
	struct fmx_ctx	*c;		/* NULL when free */
	uint32_t	 gen;
	uint32_t	 next_free;	/* index + 1 of the next free slot, 0 = none */
};

struct filter_table {
	unsigned		 tid;
	struct filter_slot	*slots;
	uint32_t		 n, cap;
	uint32_t		 free_head;	/* index + 1, 0 = none */
};

/* A blocking hook's call, run by a pool thread. */
struct filter_job {
	struct filter_job	*next;
	struct filter_session	*fs;
	struct fmx_ctx		*c;
	uint64_t		 handle;
	unsigned		 gen;		/* c->gen when submitted: stale once it moved */
	enum filter_phase	 phase;
	struct filter_args	 args;		/* copies: the session may end meanwhile */
	char			*str, *str2;
	unsigned char		*data;
	char			*copies[32];	/* api->get()/rcpt() results on the pool */
	size_t			 ncopies;
	enum fmx_verdict	 verdict;
	struct event		*keepalive;	/* holds the session's loop open */
};

static _Thread_local struct filter_table *filter_table;	/* this loop thread's */
static _Thread_local struct filter_job *filter_job_running;	/* this pool thread's */
static atomic_uint filter_tid_seq;
static pthread_key_t filter_table_key;
static pthread_once_t filter_table_once = PTHREAD_ONCE_INIT;

static void
filter_table_free(void *arg)
{
	struct filter_table *t = arg;

	free(t->slots);
	free(t);
}

static void
filter_table_key_init(void)
{
	if (pthread_key_create(&filter_table_key, filter_table_free) != 0)
		fatalx("filter: pthread_key_create");
}

/* Give c a handle on this thread's table; -1 if the table is full. */
static int
filter_handle_new(struct fmx_ctx *c)
{
	struct filter_table *t = filter_table;
	struct filter_slot *slots;
	uint32_t i, cap;
	unsigned tid;

	if (t == NULL) {
		pthread_once(&filter_table_once, filter_table_key_init);
		if ((tid = atomic_fetch_add(&filter_tid_seq, 1) + 1) > FILTER_H_TID_MAX ||
		    (t = calloc(1, sizeof *t)) == NULL)
			return -1;
		t->tid = tid;
		pthread_setspecific(filter_table_key, t);	/* freed at thread exit */
		filter_table = t;
	}
	if (t->free_head != 0) {
		i = t->free_head - 1;
		t->free_head = t->slots[i].next_free;
	} else {
		if (t->n == t->cap) {
			cap = t->cap ? t->cap * 2 : 256;
			if (cap > FILTER_H_IDX_MAX + 1 ||
			    (slots = reallocarray(t->slots, cap, sizeof *slots)) == NULL)
				return -1;
			t->slots = slots;
			t->cap = cap;
		}
		i = t->n++;
		t->slots[i].gen = 0;
	}
	if (++t->slots[i].gen == 0)
		t->slots[i].gen = 1;
	t->slots[i].c = c;
	t->slots[i].next_free = 0;
	c->handle = ((uint64_t)t->tid << (32 + FILTER_H_IDX_BITS)) |
	    ((uint64_t)i << 32) | t->slots[i].gen;
	return 0;
}

/* The session ended: its handles resolve to nothing from now on. */
static void
filter_handle_free(struct fmx_ctx *c)
{
	struct filter_table *t = filter_table;
	uint32_t i = (uint32_t)(c->handle >> 32) & FILTER_H_IDX_MAX;

	if (c->handle == 0)
		return;
	if (t == NULL || (unsigned)(c->handle >> (32 + FILTER_H_IDX_BITS)) != t->tid)
		fatalx("filter: session freed off its own thread");
	if (++t->slots[i].gen == 0)
		t->slots[i].gen = 1;
	t->slots[i].c = NULL;
	t->slots[i].next_free = t->free_head;
	t->free_head = i + 1;
	c->handle = 0;
}

/* The ctx a handle names, if this thread may act on it now; else NULL. */
static struct fmx_ctx *
filter_ctx_get(struct fmx_ctx *h)
{
	uint64_t v = (uint64_t)(uintptr_t)h;
	struct filter_table *t = filter_table;
	struct filter_job *job = filter_job_running;
	uint32_t i = (uint32_t)(v >> 32) & FILTER_H_IDX_MAX;

	if (job != NULL)		/* a pool thread: its own call's ctx only */
		return job->handle == v && v != 0 ? job->c : NULL;
	if (t == NULL || (unsigned)(v >> (32 + FILTER_H_IDX_BITS)) != t->tid ||
	    i >= t->n || t->slots[i].c == NULL || t->slots[i].gen != (uint32_t)v)
		return NULL;
	return t->slots[i].c;
}

/*
 * Every api call goes through here: resolve the handle and take the
 * session's lock (a blocking hook calls the api from a pool thread while
 * the loop thread may time it out or end the session).  A pool thread's
 * call counts only while its job is current.  NULL: refused and logged.
 */
static struct fmx_ctx *
filter_api_enter(struct fmx_ctx *h, const char *call)
{
	struct fmx_ctx *c = filter_ctx_get(h);
	struct filter_job *job = filter_job_running;

	if (c == NULL) {
		log_warn("filter api %s: stale context or foreign thread, call "
		    "ignored", call);
		return NULL;
	}
	pthread_mutex_lock(&c->fs->lock);
	if (job != NULL && (job->fs->dead || c->gen != job->gen)) {
		pthread_mutex_unlock(&c->fs->lock);
		log_warn("%016llx filter=%s api %s from a blocking hook that was "
		    "given up on, call ignored", job->fs->session_id,
		    c->fs->chain->inst[c->idx].cf->name, call);
		return NULL;
	}
	return c;
}

static void
filter_api_leave(struct fmx_ctx *c)
{
	pthread_mutex_unlock(&c->fs->lock);
}

/*
 * A string for a blocking hook: the session may end while the hook still
 * runs, so it gets a copy that lives until the hook returns.
 */
static const char *
filter_api_str(const char *v)
{
	struct filter_job *job = filter_job_running;
	char *copy;

	if (job == NULL || v == NULL)
		return v;
	if (job->ncopies == sizeof job->copies / sizeof job->copies[0] ||
	    (copy = strdup(v)) == NULL)
		return NULL;
	job->copies[job->ncopies++] = copy;
	return copy;
}

/* ---- the api modules call ---------------------------------------------- */

static const char *
filter_ctx_name(const struct fmx_ctx *c)
{
	return c->fs->chain->inst[c->idx].cf->name;
}

/* One log line for a module; stale: the ctx it named is gone (c is NULL). */
static void
filter_vlog(struct fmx_ctx *c, enum fmx_log_level level, int stale,
    const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof buf, fmt, ap);
	filter_copy_clean(buf, sizeof buf, buf);
	if (stale) {
		/* Said about a session that ended: keep the words, name no one. */
		log_warn("filter (stale context) %s", buf);
		return;
	}
	if (c == NULL) {
		/* init/fini: no session yet */
		if (level == FMX_LOG_WARN)
			log_warn("filter %s", buf);
		else if (level == FMX_LOG_INFO)
			log_info("filter %s", buf);
		else
			log_debug("filter %s", buf);
		return;
	}
	if (level == FMX_LOG_WARN)
		log_warn("%016llx filter=%s %s", c->fs->session_id,
		    filter_ctx_name(c), buf);
	else if (level == FMX_LOG_INFO)
		log_info("%016llx filter=%s %s", c->fs->session_id,
		    filter_ctx_name(c), buf);
	else
		log_debug("%016llx filter=%s %s", c->fs->session_id,
		    filter_ctx_name(c), buf);
}

__attribute__((format(printf, 3, 4)))
static void
filter_log(struct fmx_ctx *c, enum fmx_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	filter_vlog(c, level, 0, fmt, ap);
	va_end(ap);
}

static const char *
filter_get(struct fmx_ctx *c, const char *key)
{
	struct filter_session *fs = c->fs;
	const struct filter_facts *f = fs->facts;
	const struct config_filter *cf = fs->chain->inst[c->idx].cf;
	size_t i, klen;

	if (key == NULL)
		return NULL;
	if (strcmp(key, FMX_GET_CLIENT_ADDR) == 0)
		return f->client_addr;
	if (strcmp(key, FMX_GET_CLIENT_PORT) == 0) {
		snprintf(c->getbuf, sizeof c->getbuf, "%u", f->client_port);
		return c->getbuf;
	}
	if (strcmp(key, FMX_GET_CLIENT_NAME) == 0)
		return f->client_name ? f->client_name : "unknown";
	if (strcmp(key, FMX_GET_HELO) == 0)
		return f->helo;
	if (strcmp(key, FMX_GET_HOSTNAME) == 0)
		return fs->chain->cfg->hostname;
	if (strcmp(key, FMX_GET_TLS) == 0)
		return f->tls ? f->tls : "no";
	if (strcmp(key, FMX_GET_AUTH) == 0)
		return f->auth;
	if (strcmp(key, FMX_GET_SESSION_ID) == 0) {
		snprintf(c->getbuf, sizeof c->getbuf, "%016llx", f->session_id);
		return c->getbuf;
	}
	if (strcmp(key, FMX_GET_MAIL_FROM) == 0)
		return f->mail_from;
	if (strcmp(key, FMX_GET_QUEUE_ID) == 0)
		return f->queue_id;
	if (strcmp(key, FMX_GET_RCPT_COUNT) == 0) {
		snprintf(c->getbuf, sizeof c->getbuf, "%zu", f->nrcpts);
		return c->getbuf;
	}
	if (strcmp(key, FMX_GET_POLICY) == 0)
		return f->policy ? f->policy->name : "default";
	if (strncmp(key, FMX_GET_FACT_PREFIX, sizeof FMX_GET_FACT_PREFIX - 1) == 0) {
		key += sizeof FMX_GET_FACT_PREFIX - 1;
		for (i = 0; i < fs->nfacts; i++)
			if (strcmp(fs->fact_key[i], key) == 0)
				return fs->fact_value[i];
		return NULL;
	}
	if (strncmp(key, FMX_GET_OPTION_PREFIX, sizeof FMX_GET_OPTION_PREFIX - 1) == 0) {
		key += sizeof FMX_GET_OPTION_PREFIX - 1;
		klen = strlen(key);
		for (i = 0; i < cf->noptions; i++)
			if (strncmp(cf->options[i], key, klen) == 0 &&
			    cf->options[i][klen] == '=')
				return cf->options[i] + klen + 1;
	}
	return NULL;
}

static const char *
filter_rcpt(struct fmx_ctx *c, size_t i)
{
	const struct filter_facts *f = c->fs->facts;

	return i < f->nrcpts ? f->rcpts[i] : NULL;
}

static void *
filter_conn_data(struct fmx_ctx *c)
{
	return c->conn_data;
}

static void
filter_set_conn_data(struct fmx_ctx *c, void *p, fmx_free_fn fn)
{
	if (c->conn_data != NULL && c->conn_free != NULL && c->conn_data != p)
		c->conn_free(c->conn_data);
	c->conn_data = p;
	c->conn_free = fn;
}

static void *
filter_msg_data(struct fmx_ctx *c)
{
	return c->msg_data;
}

static void
filter_set_msg_data(struct fmx_ctx *c, void *p, fmx_free_fn fn)
{
	if (c->msg_data != NULL && c->msg_free != NULL && c->msg_data != p)
		c->msg_free(c->msg_data);
	c->msg_data = p;
	c->msg_free = fn;
}

static int
filter_set_reply(struct fmx_ctx *c, const char *reply)
{
	if (filter_reply_valid(reply, 0) == -1 ||
	    strlen(reply) >= sizeof c->reply) {
		filter_log(c, FMX_LOG_WARN, "refused invalid reply from module");
		return -1;
	}
	snprintf(c->reply, sizeof c->reply, "%s", reply);
	return 0;
}

static int
filter_set_result(struct fmx_ctx *c, const char *result, const char *reason)
{
	size_t i;

	if (result == NULL || *result == '\0' || strlen(result) >= sizeof c->result)
		return -1;
	for (i = 0; result[i] != '\0'; i++)
		if (!islower((unsigned char)result[i]) &&
		    !isdigit((unsigned char)result[i]) && result[i] != '_' &&
		    result[i] != '-')
			return -1;
	snprintf(c->result, sizeof c->result, "%s", result);
	filter_copy_clean(c->reason, sizeof c->reason, reason ? reason : "");
	return 0;
}

static int
filter_add_auth_result(struct fmx_ctx *c, const char *method,
    const char *result, const char *props)
{
	struct filter_session *fs = c->fs;
	struct filter_ar *ar;

	if (method == NULL || result == NULL || strlen(method) >= sizeof ar->method ||
	    strlen(result) >= sizeof ar->result ||
	    (props != NULL && strlen(props) >= sizeof ar->props))
		return -1;
	pthread_mutex_lock(&fs->lock);
	if (fs->nar >= FILTER_AR_MAX) {
		pthread_mutex_unlock(&fs->lock);
		return -1;
	}
	ar = &fs->ar[fs->nar++];
	filter_copy_clean(ar->method, sizeof ar->method, method);
	filter_copy_clean(ar->result, sizeof ar->result, result);
	filter_copy_clean(ar->props, sizeof ar->props, props ? props : "");
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

/* Edits are only meaningful at end of message, from a live call. */
static int
filter_edit_allowed(struct fmx_ctx *c)
{
	if (c->fs->phase != FILTER_PH_EOM || c->failed) {
		filter_log(c, FMX_LOG_WARN, "message edit outside eom refused");
		return 0;
	}
	return 1;
}

static int
filter_add_edit(struct fmx_ctx *c, enum filter_edit_kind kind,
    const char *name, const char *value, size_t index)
{
	struct filter_session *fs = c->fs;
	struct filter_edit *e;

	if (!filter_edit_allowed(c) || filter_header_name_valid(name) == -1 ||
	    (value != NULL && filter_header_value_valid(value) == -1) ||
	    (value == NULL && kind != FILTER_EDIT_CHANGE)) {
		filter_log(c, FMX_LOG_WARN, "refused invalid header edit");
		return -1;
	}
	pthread_mutex_lock(&fs->lock);
	if (fs->nedits >= FILTER_EDITS_MAX) {
		pthread_mutex_unlock(&fs->lock);
		return -1;
	}
	e = &fs->edits[fs->nedits];
	e->kind = kind;
	e->index = index;
	e->name = strdup(name);
	e->value = value ? strdup(value) : NULL;
	if (e->name == NULL || (value != NULL && e->value == NULL)) {
		free(e->name);
		free(e->value);
		pthread_mutex_unlock(&fs->lock);
		return -1;
	}
	fs->nedits++;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

static int
filter_add_header(struct fmx_ctx *c, const char *name, const char *value)
{
	return filter_add_edit(c, FILTER_EDIT_ADD, name, value, 0);
}

static int
filter_insert_header(struct fmx_ctx *c, size_t index, const char *name,
    const char *value)
{
	return filter_add_edit(c, FILTER_EDIT_INSERT, name, value, index);
}

static int
filter_change_header(struct fmx_ctx *c, const char *name, size_t index,
    const char *value)
{
	if (index == 0)
		return -1;
	return filter_add_edit(c, FILTER_EDIT_CHANGE, name, value, index);
}

/* A new body must be what a client could have sent: CRLF lines, no NUL. */
static int
filter_replace_body(struct fmx_ctx *c, const void *body, size_t len)
{
	struct filter_session *fs = c->fs;
	const unsigned char *p = body;
	size_t i, linelen = 0;
	unsigned char *copy;

	if (!filter_edit_allowed(c) || (len > 0 && body == NULL) ||
	    len > fs->chain->cfg->limits.message_size)
		return -1;
	for (i = 0; i < len; i++) {
		if (p[i] == '\0' || (p[i] == '\r' && (i + 1 >= len || p[i + 1] != '\n')) ||
		    (p[i] == '\n' && (i == 0 || p[i - 1] != '\r'))) {
			filter_log(c, FMX_LOG_WARN, "refused body with bare CR/LF or NUL");
			return -1;
		}
		/* No line the core itself would refuse (limits.line_length). */
		linelen = p[i] == '\n' ? 0 : linelen + 1;
		if (linelen + 1 > fs->chain->cfg->limits.line_length)
			return -1;
	}
	if (len > 0 && p[len - 1] != '\n')
		return -1;
	if ((copy = malloc(len ? len : 1)) == NULL)
		return -1;
	if (len > 0)
		memcpy(copy, body, len);
	pthread_mutex_lock(&fs->lock);
	free(fs->body);
	fs->body = copy;
	fs->bodylen = len;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

static int
filter_rcpt_edit(struct fmx_ctx *c, const char *addr, char **list, size_t *n)
{
	struct filter_session *fs = c->fs;
	char *copy;

	if (!filter_edit_allowed(c) || filter_addr_valid(addr) == -1) {
		filter_log(c, FMX_LOG_WARN, "refused invalid recipient edit");
		return -1;
	}
	if ((copy = strdup(addr)) == NULL)
		return -1;
	pthread_mutex_lock(&fs->lock);
	if (*n >= FILTER_RCPT_EDITS_MAX) {
		pthread_mutex_unlock(&fs->lock);
		free(copy);
		return -1;
	}
	list[(*n)++] = copy;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

static int
filter_add_rcpt(struct fmx_ctx *c, const char *addr)
{
	return filter_rcpt_edit(c, addr, c->fs->add_rcpts, &c->fs->nadd_rcpts);
}

static int
filter_del_rcpt(struct fmx_ctx *c, const char *addr)
{
	return filter_rcpt_edit(c, addr, c->fs->del_rcpts, &c->fs->ndel_rcpts);
}

static long
filter_msg_read(struct fmx_ctx *c, size_t off, void *buf, size_t len)
{
	struct filter_session *fs = c->fs;

	if (fs->phase != FILTER_PH_EOM || fs->host.msg_read == NULL)
		return -1;
	return fs->host.msg_read(fs->host.arg, off, buf, len);
}

static void	filter_call_done(struct filter_session *, struct fmx_ctx *,
		    enum fmx_verdict);

/*
 * The one answer to a pending call.  Anything else - a second answer, an
 * answer from on_abort or after the timeout, from a blocking hook - is
 * refused and logged; the first answer stands.  1: the pending call ends.
 */
static int
filter_resume(struct fmx_ctx *c, enum fmx_verdict v)
{
	if (c->on_pool) {
		filter_log(c, FMX_LOG_WARN, "resume from a blocking hook ignored");
		return -1;
	}
	if (c->in_hook) {
		if (c->resumed) {
			filter_log(c, FMX_LOG_WARN, "second resume ignored");
			return -1;
		}
		/* Answered before the hook even returned PENDING. */
		c->resumed = 1;
		c->resume_verdict = v;
		return 0;
	}
	if (!c->waiting) {
		filter_log(c, FMX_LOG_WARN, "resume without a pending call ignored");
		return -1;
	}
	return 1;	/* the caller ends the call, outside the lock */
}

void
filter_resolver_set(const struct filter_resolver *r)
{
	filter_resolver = r;
}

static void
filter_dns_unlink(struct filter_session *fs, struct filter_dnsq *q)
{
	struct filter_dnsq **pp;

	for (pp = &fs->dnsq; *pp != NULL; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			return;
		}
}

static void
filter_dns_done_cb(void *arg, int rcode, const unsigned char *pkt, size_t len)
{
	struct filter_dnsq *q = arg;
	struct fmx_ctx *c = q->c;

	filter_dns_unlink(c->fs, q);
	if (!c->failed)
		q->fn((struct fmx_ctx *)(uintptr_t)c->handle, q->arg, rcode, pkt, len);
	if (q->in_query)
		q->finished = 1;	/* answered from cache inside query(): freed there */
	else
		free(q);
}

static int
filter_dns_query(struct fmx_ctx *c, const char *name, int type,
    fmx_dns_fn fn, void *arg)
{
	struct filter_session *fs = c->fs;
	struct filter_dnsq *q;

	if (filter_resolver == NULL || c->on_pool || fn == NULL || name == NULL ||
	    strlen(name) > 253 || type <= 0 || type > 65535) {
		filter_log(c, FMX_LOG_WARN, "dns_query refused");
		return -1;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return -1;
	q->c = c;
	q->fn = fn;
	q->arg = arg;
	q->msg = fs->msg_open;
	q->next = fs->dnsq;
	fs->dnsq = q;
	q->in_query = 1;
	q->id = filter_resolver->query(fs->base, name, type, filter_dns_done_cb, q);
	q->in_query = 0;
	if (q->finished) {
		free(q);
		return 0;
	}
	if (q->id == 0) {
		filter_dns_unlink(fs, q);
		free(q);
		return -1;
	}
	return 0;
}

static int
filter_set_fact(struct fmx_ctx *c, const char *key, const char *value)
{
	struct filter_session *fs = c->fs;
	size_t i;
	char *v;

	if (key == NULL || value == NULL || *key == '\0' || strlen(key) > 64 ||
	    strlen(value) > FILTER_FACT_VALUE_MAX)
		return -1;
	for (i = 0; key[i] != '\0'; i++)
		if (!islower((unsigned char)key[i]) && !isdigit((unsigned char)key[i]) &&
		    key[i] != '.' && key[i] != '_' && key[i] != '-')
			return -1;
	for (i = 0; value[i] != '\0'; i++)
		if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] > 0x7e)
			return -1;
	if ((v = strdup(value)) == NULL)
		return -1;
	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < fs->nfacts; i++)
		if (strcmp(fs->fact_key[i], key) == 0) {
			free(fs->fact_value[i]);
			fs->fact_value[i] = v;
			pthread_mutex_unlock(&fs->lock);
			return 0;
		}
	if (fs->nfacts == FILTER_FACTS_MAX ||
	    (fs->fact_key[fs->nfacts] = strdup(key)) == NULL) {
		pthread_mutex_unlock(&fs->lock);
		free(v);
		return -1;
	}
	fs->fact_value[fs->nfacts++] = v;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

static void
filter_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fmx_ctx *c = arg;
	fmx_timer_fn fn = c->timer_fn;

	(void)fd;
	(void)what;
	c->timer_fn = NULL;
	if (fn != NULL && !c->failed)
		fn((struct fmx_ctx *)(uintptr_t)c->handle, c->timer_arg);
}

static int
filter_timer(struct fmx_ctx *c, unsigned msec, fmx_timer_fn fn, void *arg)
{
	struct timeval tv = { .tv_sec = msec / 1000, .tv_usec = (msec % 1000) * 1000 };

	if (fn == NULL || c->on_pool)
		return -1;
	if (c->timer == NULL &&
	    (c->timer = evtimer_new(c->fs->base, filter_timer_cb, c)) == NULL)
		return -1;
	c->timer_fn = fn;
	c->timer_arg = arg;
	c->timer_msg = c->fs->msg_open;
	return evtimer_add(c->timer, &tv);
}

/* The api as modules see it: handles in, every call checked (filter_api_enter). */

static void
filter_api_log(struct fmx_ctx *h, enum fmx_log_level level, const char *fmt, ...)
{
	struct fmx_ctx *c = NULL;
	va_list ap;

	if (h != NULL && (c = filter_api_enter(h, "log")) == NULL) {
		va_start(ap, fmt);
		filter_vlog(NULL, level, 1, fmt, ap);
		va_end(ap);
		return;
	}
	va_start(ap, fmt);
	filter_vlog(c, level, 0, fmt, ap);
	va_end(ap);
	if (c != NULL)
		filter_api_leave(c);
}

static const char *
filter_api_get(struct fmx_ctx *h, const char *key)
{
	struct fmx_ctx *c;
	const char *v;

	if ((c = filter_api_enter(h, "get")) == NULL)
		return NULL;
	v = filter_api_str(filter_get(c, key));
	filter_api_leave(c);
	return v;
}

static const char *
filter_api_rcpt(struct fmx_ctx *h, size_t i)
{
	struct fmx_ctx *c;
	const char *v;

	if ((c = filter_api_enter(h, "rcpt")) == NULL)
		return NULL;
	v = filter_api_str(filter_rcpt(c, i));
	filter_api_leave(c);
	return v;
}

static void *
filter_api_conn_data(struct fmx_ctx *h)
{
	struct fmx_ctx *c;
	void *v;

	if ((c = filter_api_enter(h, "conn_data")) == NULL)
		return NULL;
	v = filter_conn_data(c);
	filter_api_leave(c);
	return v;
}

static void
filter_api_set_conn_data(struct fmx_ctx *h, void *p, fmx_free_fn fn)
{
	struct fmx_ctx *c;

	if ((c = filter_api_enter(h, "set_conn_data")) == NULL)
		return;
	filter_set_conn_data(c, p, fn);
	filter_api_leave(c);
}

static void *
filter_api_msg_data(struct fmx_ctx *h)
{
	struct fmx_ctx *c;
	void *v;

	if ((c = filter_api_enter(h, "msg_data")) == NULL)
		return NULL;
	v = filter_msg_data(c);
	filter_api_leave(c);
	return v;
}

static void
filter_api_set_msg_data(struct fmx_ctx *h, void *p, fmx_free_fn fn)
{
	struct fmx_ctx *c;

	if ((c = filter_api_enter(h, "set_msg_data")) == NULL)
		return;
	filter_set_msg_data(c, p, fn);
	filter_api_leave(c);
}

/* The int-returning calls: -1 when refused. */
#define FILTER_API_INT(name, params, args)				\
static int								\
filter_api_##name params						\
{									\
	struct fmx_ctx *c;						\
	int r;								\
									\
	if ((c = filter_api_enter(h, #name)) == NULL)			\
		return -1;						\
	r = filter_##name args;						\
	filter_api_leave(c);						\
	return r;							\
}

FILTER_API_INT(set_reply, (struct fmx_ctx *h, const char *reply), (c, reply))
FILTER_API_INT(set_result, (struct fmx_ctx *h, const char *result,
    const char *reason), (c, result, reason))
FILTER_API_INT(add_auth_result, (struct fmx_ctx *h, const char *method,
    const char *result, const char *props), (c, method, result, props))
FILTER_API_INT(add_header, (struct fmx_ctx *h, const char *name,
    const char *value), (c, name, value))
FILTER_API_INT(insert_header, (struct fmx_ctx *h, size_t index,
    const char *name, const char *value), (c, index, name, value))
FILTER_API_INT(change_header, (struct fmx_ctx *h, const char *name,
    size_t index, const char *value), (c, name, index, value))
FILTER_API_INT(replace_body, (struct fmx_ctx *h, const void *body, size_t len),
    (c, body, len))
FILTER_API_INT(add_rcpt, (struct fmx_ctx *h, const char *addr), (c, addr))
FILTER_API_INT(del_rcpt, (struct fmx_ctx *h, const char *addr), (c, addr))
FILTER_API_INT(dns_query, (struct fmx_ctx *h, const char *name, int type,
    fmx_dns_fn fn, void *arg), (c, name, type, fn, arg))
FILTER_API_INT(timer, (struct fmx_ctx *h, unsigned msec, fmx_timer_fn fn,
    void *arg), (c, msec, fn, arg))
FILTER_API_INT(set_fact, (struct fmx_ctx *h, const char *key,
    const char *value), (c, key, value))

/* Not under the lock: the answer runs the session on (filter_call_done). */
static int
filter_api_resume(struct fmx_ctx *h, enum fmx_verdict v)
{
	struct fmx_ctx *c;
	int r;

	if ((c = filter_api_enter(h, "resume")) == NULL)
		return -1;
	r = filter_resume(c, v);
	filter_api_leave(c);
	if (r == 1) {
		filter_call_done(c->fs, c, v);
		r = 0;
	}
	return r;
}

static long
filter_api_msg_read(struct fmx_ctx *h, size_t off, void *buf, size_t len)
{
	struct fmx_ctx *c;
	long r;

	if ((c = filter_api_enter(h, "msg_read")) == NULL)
		return -1;
	r = filter_msg_read(c, off, buf, len);
	filter_api_leave(c);
	return r;
}

static long
filter_api_header_decode(struct fmx_ctx *h, const char *value, char *buf,
    size_t buflen)
{
	struct fmx_ctx *c;

	/* A pure function, but a stale or foreign handle is refused like anywhere. */
	if ((c = filter_api_enter(h, "header_decode")) == NULL)
		return -1;
	filter_api_leave(c);
	return content_header_decode(value, buf, buflen);
}

static const struct fmx_api filter_api = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_api),
	.log = filter_api_log,
	.get = filter_api_get,
	.rcpt = filter_api_rcpt,
	.conn_data = filter_api_conn_data,
	.set_conn_data = filter_api_set_conn_data,
	.msg_data = filter_api_msg_data,
	.set_msg_data = filter_api_set_msg_data,
	.set_reply = filter_api_set_reply,
	.set_result = filter_api_set_result,
	.add_auth_result = filter_api_add_auth_result,
	.add_header = filter_api_add_header,
	.insert_header = filter_api_insert_header,
	.change_header = filter_api_change_header,
	.replace_body = filter_api_replace_body,
	.add_rcpt = filter_api_add_rcpt,
	.del_rcpt = filter_api_del_rcpt,
	.msg_read = filter_api_msg_read,
	.resume = filter_api_resume,
	.dns_query = filter_api_dns_query,
	.timer = filter_api_timer,
	.set_fact = filter_api_set_fact,
	.header_decode = filter_api_header_decode,
	/* Pure, no handle: built-in filters may call filter_opt_* directly. */
	.option_string = filter_opt_string,
	.option_bool = filter_opt_bool,
	.option_uint = filter_opt_uint,
	.option_list = filter_opt_list,
	.option_check = filter_opt_check,
};

/* ---- the chain --------------------------------------------------------- */

static unsigned
filter_ops_phases(const struct fmx_filter *f)
{
	unsigned m = 0;

	m |= f->on_connect ? 1u << FILTER_PH_CONNECT : 0;
	m |= f->on_helo ? 1u << FILTER_PH_HELO : 0;
	m |= f->on_mail ? 1u << FILTER_PH_MAIL : 0;
	m |= f->on_rcpt ? 1u << FILTER_PH_RCPT : 0;
	m |= f->on_data ? 1u << FILTER_PH_DATA : 0;
	m |= f->on_header ? 1u << FILTER_PH_HEADER : 0;
	m |= f->on_eoh ? 1u << FILTER_PH_EOH : 0;
	m |= f->on_body ? 1u << FILTER_PH_BODY : 0;
	m |= f->on_eom ? 1u << FILTER_PH_EOM : 0;
	return m;
}

static void
filter_chain_free(struct filter_chain *ch)
{
	size_t i;

	for (i = 0; i < ch->ninst; i++) {
		struct filter_instance *fi = &ch->inst[i];

		if (fi->initialised && fi->ops->fini != NULL)
			fi->ops->fini(fi->inst);
		if (fi->module != NULL)
			filter_loader_close(fi->module);
	}
	free(ch->inst);
	config_unref(ch->cfg);
	free(ch);
}

/* Prefix err with the "FILE:LINE" of the filter's entry (config.h). */
static void
filter_chain_err_where(const struct config_filter *cf, char *err, size_t errlen)
{
	char msg[512];

	if (cf->where == NULL || errlen == 0)
		return;
	snprintf(msg, sizeof msg, "%s", err);
	snprintf(err, errlen, "%s: %s", cf->where, msg);
}

/*
 * init() one instance.  A bad value an option getter saw is the
 * configuration's fault, not the module's: it fails the load with the
 * option named even if init() went on and returned 0.
 */
static int
filter_chain_init(struct filter_instance *fi, char *err, size_t errlen)
{
	const struct config_filter *cf = fi->cf;
	char msg[FILTER_OPT_ERR_MAX];
	int r = 0;

	filter_opt_begin();
	if (fi->ops->init != NULL)
		r = fi->ops->init(&filter_api, (const char *const *)cf->options,
		    cf->noptions, &fi->inst);
	if (filter_opt_end(msg, sizeof msg) == -1) {
		snprintf(err, errlen, "%s%sfilter %s: %s", cf->where ? cf->where : "",
		    cf->where ? ": " : "", cf->name, msg);
		if (r == 0 && fi->ops->fini != NULL)
			fi->ops->fini(fi->inst);
		return -1;
	}
	if (r != 0) {
		snprintf(err, errlen, "%s: filter %s%s%s: initialisation "
		    "failed (see the log above)", cf->where ? cf->where : "",
		    cf->name, cf->module ? " " : "",
		    cf->module ? cf->module : "");
		return -1;
	}
	fi->initialised = 1;
	return 0;
}

struct filter_chain *
filter_chain_new(struct config *cfg, char *err, size_t errlen)
{
	struct filter_chain *ch;
	size_t i, j;

	if ((ch = calloc(1, sizeof *ch)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	config_ref(cfg);
	ch->cfg = cfg;
	atomic_init(&ch->refcount, 1);
	if (cfg->nfilters > 0 &&
	    (ch->inst = calloc(cfg->nfilters, sizeof *ch->inst)) == NULL) {
		snprintf(err, errlen, "out of memory");
		filter_chain_free(ch);
		return NULL;
	}
	for (i = 0; i < cfg->nfilters; i++) {
		const struct config_filter *cf = &cfg->filters[i];
		struct filter_instance *fi = &ch->inst[i];

		fi->cf = cf;
		ch->ninst = i + 1;
		if (cf->module != NULL) {
			if (filter_loader_open(cf->module, &filter_api, &fi->module,
			    err, errlen) == -1) {
				filter_chain_err_where(cf, err, errlen);
				filter_chain_free(ch);
				return NULL;
			}
			fi->ops = filter_loader_table(fi->module);
		} else {
			for (j = 0; j < sizeof filter_builtins / sizeof filter_builtins[0]; j++)
				if (strcmp(filter_builtins[j].name, cf->name) == 0)
					fi->ops = filter_builtins[j].table();
			if (fi->ops == NULL) {
				snprintf(err, errlen, "filter %s: not a built-in filter "
				    "(set module = PATH)", cf->name);
				filter_chain_free(ch);
				return NULL;
			}
			if (filter_loader_check(fi->ops, cf->name, err, errlen) == -1) {
				filter_chain_free(ch);
				return NULL;
			}
		}
		if (filter_chain_init(fi, err, errlen) == -1) {
			filter_chain_free(ch);
			return NULL;
		}
		ch->wants |= filter_ops_phases(fi->ops);
	}
	return ch;
}

void
filter_chain_ref(struct filter_chain *ch)
{
	atomic_fetch_add(&ch->refcount, 1);
}

void
filter_chain_unref(struct filter_chain *ch)
{
	if (ch != NULL && atomic_fetch_sub(&ch->refcount, 1) == 1)
		filter_chain_free(ch);
}

struct config *
filter_chain_config(const struct filter_chain *ch)
{
	return ch->cfg;
}

int
filter_chain_wants(const struct filter_chain *ch, enum filter_phase phase)
{
	return (ch->wants & (1u << phase)) != 0;
}

/* ---- the thread pool for FMX_FLAG_BLOCKING filters ----------------------- */

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

static enum fmx_verdict	filter_call_hook(struct filter_session *, struct fmx_ctx *,
			    enum filter_phase, const struct filter_args *);
static void		filter_session_release(struct filter_session *);

static void
filter_job_free(struct filter_job *job)
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
		filter_call_done(fs, c, job->verdict);
	filter_job_free(job);
	filter_session_release(fs);
}

/* Is the job still wanted?  Checked under the lock the loop thread gives it up with. */
static int
filter_job_current(const struct filter_job *job)
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
		if (filter_job_current(job)) {
			filter_job_running = job;
			job->verdict = filter_call_hook(job->fs, job->c, job->phase,
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
static int
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
		filter_job_free(job);
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
		filter_job_free(job);
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

/* ---- running a phase ----------------------------------------------------- */

/*
 * One hook call, on the loop thread or a pool thread: it sees the phase
 * and arguments it is given (a pool job's own copies), and the module gets
 * the ctx's handle, never the pointer.
 */
static enum fmx_verdict
filter_call_hook(struct filter_session *fs, struct fmx_ctx *c,
    enum filter_phase phase, const struct filter_args *a)
{
	const struct fmx_filter *f = fs->chain->inst[c->idx].ops;
	void *inst = fs->chain->inst[c->idx].inst;
	struct fmx_ctx *h = (struct fmx_ctx *)(uintptr_t)c->handle;
	enum fmx_verdict v = FMX_CONTINUE;

	switch (phase) {
	case FILTER_PH_CONNECT:
		v = f->on_connect(inst, h);
		break;
	case FILTER_PH_HELO:
		v = f->on_helo(inst, h, a->str);
		break;
	case FILTER_PH_MAIL:
		v = f->on_mail(inst, h, a->str);
		break;
	case FILTER_PH_RCPT:
		v = f->on_rcpt(inst, h, a->str);
		break;
	case FILTER_PH_DATA:
		v = f->on_data(inst, h);
		break;
	case FILTER_PH_HEADER:
		v = f->on_header(inst, h, a->str, a->str2);
		break;
	case FILTER_PH_EOH:
		v = f->on_eoh(inst, h);
		break;
	case FILTER_PH_BODY:
		v = f->on_body(inst, h, a->data, a->len);
		break;
	case FILTER_PH_EOM:
		v = f->on_eom(inst, h);
		break;
	default:
		fatalx("filter_call_hook: bad phase %d", phase);
	}
	return v;
}

static int
filter_has_hook(const struct fmx_filter *f, enum filter_phase phase)
{
	return (filter_ops_phases(f) & (1u << phase)) != 0;
}

static enum fmx_verdict
filter_action_verdict(enum config_action a)
{
	switch (a) {
	case CONFIG_ACTION_ACCEPT:
		return FMX_CONTINUE;
	case CONFIG_ACTION_TAG:
		return FMX_TAG;
	case CONFIG_ACTION_QUARANTINE:
		return FMX_QUARANTINE;
	case CONFIG_ACTION_REJECT:
		return FMX_REJECT;
	case CONFIG_ACTION_DISCARD:
		return FMX_DISCARD;
	case CONFIG_ACTION_TEMPFAIL:
	default:
		return FMX_TEMPFAIL;
	}
}

/* How strongly a message-level verdict binds: the strongest one wins. */
static int
filter_verdict_rank(enum fmx_verdict v)
{
	switch (v) {
	case FMX_QUARANTINE:
		return 3;
	case FMX_DISCARD:
		return 2;
	case FMX_TAG:
		return 1;
	default:
		return 0;
	}
}

/*
 * The tag header lists filter=result for each filter that tagged the
 * message (the result is what an admin wants to see, the action is in the
 * policy); "tag" when the filter named no result.  A dry-run entry says
 * what would have happened: "spf=fail (dry-run: would reject)".
 */
static void
filter_tag(struct filter_session *fs, const char *name, const char *result,
    enum fmx_verdict dry)
{
	size_t used = strlen(fs->outcome.tags);

	if (dry != FMX_CONTINUE)
		snprintf(fs->outcome.tags + used, sizeof fs->outcome.tags - used,
		    "%s%s=%s (dry-run: would %s)", used ? ", " : "", name,
		    result[0] ? result : "dry-run", filter_verdict_name(dry));
	else
		snprintf(fs->outcome.tags + used, sizeof fs->outcome.tags - used,
		    "%s%s=%s", used ? ", " : "", name, result[0] ? result : "tag");
}

static void
filter_finish(struct filter_session *fs, enum fmx_verdict v,
    const struct fmx_ctx *c)
{
	struct filter_result res;
	filter_done_fn done = fs->done;

	memset(&res, 0, sizeof res);
	res.verdict = v;
	if (c != NULL) {
		snprintf(res.filter, sizeof res.filter, "%s", filter_ctx_name(c));
		/* A module's reply must match the class of the final verdict. */
		if (c->reply[0] != '\0' &&
		    filter_reply_valid(c->reply, v == FMX_REJECT ? 5 : 4) == 0)
			snprintf(res.reply, sizeof res.reply, "%s", c->reply);
	}
	fs->done = NULL;
	fs->next = fs->n;
	if (done != NULL)
		done(fs->done_arg, &res);
}

/* What one hook answered, before the policy reads it. */
struct filter_answer {
	enum fmx_verdict	 verdict;
	int			 failed;	/* error, timeout, bad verdict: on_error */
	const char		*result;	/* api->set_result(), "" none */
	const char		*reason;
	const char		*reply;		/* api->set_reply(), "" default */
};

/*
 * What an answer means under policy pol: on_error (the policy's, else the
 * filter's), the policy's mapping of the named result, dry run.  *dry is
 * the refusing verdict dry run turned into a relay, FMX_CONTINUE if none.
 * quiet logs only refusals (the per-recipient reading of held answers).
 */
static enum fmx_verdict
filter_decide(struct filter_session *fs, size_t idx,
    const struct config_policy *pol, enum filter_phase phase,
    const struct filter_answer *a, enum fmx_verdict *dry, int quiet)
{
	const struct config *cfg = fs->chain->cfg;
	const struct config_filter *cf = fs->chain->inst[idx].cf;
	enum config_action action;
	enum fmx_verdict v = a->verdict;
	const char *name = cf->name;

	*dry = FMX_CONTINUE;
	if (a->failed) {
		/* A policy may override the filter's on_error per domain. */
		if (!policy_action(cfg, pol, name, "on_error", &action))
			action = cf->on_error;
		v = filter_action_verdict(action);
		if (!quiet || v == FMX_REJECT || v == FMX_TEMPFAIL)
			log_warn("%016llx filter=%s phase=%s failed, on_error=%s",
			    fs->session_id, name, filter_phase_name(phase),
			    config_action_name(action));
	} else if (a->result[0] != '\0' &&
	    policy_action(cfg, pol, name, a->result, &action))
		v = filter_action_verdict(action);
	if (a->result[0] != '\0' &&
	    (!quiet || v == FMX_REJECT || v == FMX_TEMPFAIL))
		log_info("%016llx filter=%s phase=%s result=%s policy=%s "
		    "verdict=%s%s%s", fs->session_id, name,
		    filter_phase_name(phase), a->result,
		    pol != NULL ? pol->name : "default", filter_verdict_name(v),
		    a->reason[0] ? " reason=" : "", a->reason);
	if (v != FMX_CONTINUE && v != FMX_ACCEPT && v != FMX_TAG &&
	    policy_dry_run(cfg, pol, name)) {
		if (!quiet)
			log_info("%016llx filter=%s dry-run: would %s, relaying",
			    fs->session_id, name, filter_verdict_name(v));
		*dry = v;
		v = FMX_CONTINUE;
	}
	return v;
}

/* Message-level bookkeeping of a decided verdict: tags, quarantine, discard. */
static void
filter_mark(struct filter_session *fs, size_t idx, enum fmx_verdict v,
    const char *result, enum fmx_verdict dry)
{
	const char *name = fs->chain->inst[idx].cf->name;

	if (dry != FMX_CONTINUE)
		filter_tag(fs, name, result, dry);
	if (v != FMX_TAG && v != FMX_QUARANTINE && v != FMX_DISCARD)
		return;
	if (v == FMX_TAG)
		filter_tag(fs, name, result, FMX_CONTINUE);
	if (filter_verdict_rank(v) > filter_verdict_rank(fs->outcome.verdict)) {
		fs->outcome.verdict = v;
		snprintf(fs->outcome.reason, sizeof fs->outcome.reason,
		    "filter %s", name);
	}
}

/* Forget held answers of phase and the phases after it (up to mail). */
static void
filter_held_clear(struct filter_session *fs, enum filter_phase phase)
{
	struct filter_held **hp = &fs->held, *h;

	while ((h = *hp) != NULL) {
		if (h->phase >= phase) {
			*hp = h->next;
			free(h->reply);
			free(h);
		} else
			hp = &h->next;
	}
}

/*
 * Keep a connect, helo or mail answer until the recipients are known.
 * Out of memory cannot drop it silently: it then stands as a failure,
 * whose on_error every recipient gets.
 */
static void
filter_hold(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v,
    int failed)
{
	struct filter_held *h, **tail;

	if ((h = calloc(1, sizeof *h)) == NULL) {
		/* Never a silent accept: every recipient gets a 4xx. */
		log_warn("%016llx filter=%s out of memory holding its verdict",
		    fs->session_id, filter_ctx_name(c));
		fs->held_oom = 1;
		return;
	}
	h->phase = fs->phase;
	h->idx = c->idx;
	h->verdict = v;
	h->failed = failed;
	snprintf(h->result, sizeof h->result, "%s", c->result);
	snprintf(h->reason, sizeof h->reason, "%s", c->reason);
	if (c->reply[0] != '\0')
		h->reply = strdup(c->reply);	/* NULL: the default reply */
	for (tail = &fs->held; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = h;
	log_debug("%016llx filter=%s phase=%s result=%s verdict=%s held for the "
	    "recipients' policy", fs->session_id, filter_ctx_name(c),
	    filter_phase_name(fs->phase), c->result[0] ? c->result : "-",
	    failed ? "error" : filter_verdict_name(v));
}

/*
 * Read the held answers in chain order with policy pol, as the chain
 * would have read them live: the first refusal or accept ends it.
 * commit records the message-level outcome (once, at DATA).
 */
static enum fmx_verdict
filter_held_apply(struct filter_session *fs, const struct config_policy *pol,
    int commit, struct filter_result *res)
{
	const struct filter_held *h;
	struct filter_answer a;
	enum fmx_verdict v, dry;
	static const char *const what[] = {
		[FILTER_PH_CONNECT] = "connection",
		[FILTER_PH_HELO] = "HELO",
		[FILTER_PH_MAIL] = "sender",
	};

	memset(res, 0, sizeof *res);
	res->verdict = FMX_CONTINUE;
	if (fs->held_oom) {
		res->verdict = FMX_TEMPFAIL;
		snprintf(res->reply, sizeof res->reply,
		    "451 4.3.0 Error: out of memory, try again later");
		return res->verdict;
	}
	for (h = fs->held; h != NULL; h = h->next) {
		a.verdict = h->verdict;
		a.failed = h->failed;
		a.result = h->result;
		a.reason = h->reason;
		a.reply = h->reply != NULL ? h->reply : "";
		v = filter_decide(fs, h->idx, pol, h->phase, &a, &dry, !commit);
		if (commit)
			filter_mark(fs, h->idx, v, h->result, dry);
		if (v != FMX_ACCEPT && v != FMX_REJECT && v != FMX_TEMPFAIL)
			continue;
		res->verdict = v;
		if (v == FMX_ACCEPT)
			return v;
		snprintf(res->filter, sizeof res->filter, "%s",
		    fs->chain->inst[h->idx].cf->name);
		/* The filter's own reply if it fits the verdict, else say who refused. */
		if (!h->failed && a.reply[0] != '\0' &&
		    filter_reply_valid(a.reply, v == FMX_REJECT ? 5 : 4) == 0)
			snprintf(res->reply, sizeof res->reply, "%s", a.reply);
		else
			snprintf(res->reply, sizeof res->reply, "%s %s %s %s by policy",
			    v == FMX_REJECT ? "550" : "451",
			    v == FMX_REJECT ? "5.7.1" : "4.7.1", what[h->phase],
			    v == FMX_REJECT ? "rejected" : "deferred");
		return v;
	}
	return FMX_CONTINUE;
}

enum fmx_verdict
filter_session_held(struct filter_session *fs, const struct config_policy *pol,
    struct filter_result *res)
{
	enum fmx_verdict v = filter_held_apply(fs, pol, 0, res);

	fs->held_accepted = v == FMX_ACCEPT;
	if (v == FMX_ACCEPT)
		res->verdict = FMX_CONTINUE;
	return res->verdict;
}

/*
 * Turn what a hook returned into what happens: policy mapping of its
 * result, dry-run, message-level bookkeeping.  Returns 1 to go on with the
 * next filter, 0 when the phase ended (done was called).  A connect, helo
 * or mail answer of a delay_reject filter is held for the recipients'
 * policies instead (smtpd_delay_reject); only a plain continue, or an
 * accept that names no result (the same under every policy), acts now.
 */
static int
filter_apply(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v,
    int failed)
{
	const struct config_filter *cf = fs->chain->inst[c->idx].cf;
	struct filter_answer a;
	enum fmx_verdict dry;

	if (!failed && ((unsigned)v >= FMX_VERDICT_COUNT || v == FMX_PENDING)) {
		log_warn("%016llx filter=%s phase=%s returned invalid verdict %d",
		    fs->session_id, cf->name, filter_phase_name(fs->phase),
		    (int)v);
		failed = 1;
	}
	if (failed) {
		c->reply[0] = '\0';
		snprintf(c->result, sizeof c->result, "error");
	}
	if (fs->phase <= FILTER_PH_MAIL && cf->delay_reject &&
	    (failed || c->result[0] != '\0' ||
	    (v != FMX_CONTINUE && v != FMX_ACCEPT))) {
		filter_hold(fs, c, v, failed);
		c->result[0] = '\0';
		c->reason[0] = '\0';
		return 1;
	}
	a.verdict = v;
	a.failed = failed;
	a.result = c->result;
	a.reason = c->reason;
	a.reply = c->reply;
	v = filter_decide(fs, c->idx, fs->facts->policy, fs->phase, &a, &dry, 0);
	filter_mark(fs, c->idx, v, c->result, dry);
	c->result[0] = '\0';
	c->reason[0] = '\0';
	switch (v) {
	case FMX_CONTINUE:
	case FMX_TAG:
	case FMX_QUARANTINE:
	case FMX_DISCARD:
		return 1;
	case FMX_ACCEPT:
		fs->msg_accepted = 1;
		filter_finish(fs, FMX_CONTINUE, c);
		return 0;
	case FMX_REJECT:
	case FMX_TEMPFAIL:
		filter_finish(fs, v, c);
		return 0;
	default:
		fatalx("filter_apply: bad verdict %d", v);
	}
}

/*
 * The pending call of c is over (answered, timed out, given up): later
 * answers carry an older generation.  Under the lock, so that a pool
 * thread's api call sees either the live call or none (filter_api_enter).
 */
static void
filter_call_end(struct filter_session *fs, struct fmx_ctx *c)
{
	pthread_mutex_lock(&fs->lock);
	c->waiting = 0;
	c->gen++;
	pthread_mutex_unlock(&fs->lock);
}

static void
filter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct filter_session *fs = arg;
	struct fmx_ctx *c;

	(void)fd;
	(void)what;
	if (fs->next >= fs->n)
		return;
	c = &fs->ctx[fs->next];
	if (!c->waiting)
		return;
	log_warn("%016llx filter=%s phase=%s timed out after %us",
	    fs->session_id, filter_ctx_name(c), filter_phase_name(fs->phase),
	    fs->chain->inst[c->idx].cf->timeout);
	filter_call_end(fs, c);	/* a late answer is now stale */
	c->failed = 1;		/* never called again in this session */
	if (filter_apply(fs, c, FMX_TEMPFAIL, 1))
		fs->next++;
	filter_run(fs);
}

static void
filter_call_done(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v)
{
	filter_call_end(fs, c);
	evtimer_del(fs->timeout);
	if (filter_apply(fs, c, v, 0))
		fs->next++;
	filter_run(fs);
}

static void
filter_run(struct filter_session *fs)
{
	struct timeval tv = { 0 };
	struct fmx_ctx *c;
	const struct filter_instance *fi;
	enum fmx_verdict v;

	if (fs->running || fs->done == NULL)
		return;
	fs->running = 1;
	while (fs->next < fs->n && fs->done != NULL) {
		c = &fs->ctx[fs->next];
		fi = &fs->chain->inst[c->idx];
		if (!filter_has_hook(fi->ops, fs->phase) ||
		    (fs->msg_accepted && fs->phase >= FILTER_PH_MAIL) ||
		    (fs->held_accepted && fs->phase >= FILTER_PH_RCPT)) {
			fs->next++;
			continue;
		}
		/*
		 * A filter that timed out is not called again in this session
		 * (its hook may still be running), but every phase it would
		 * have judged gets its on_error action: skipping it would be a
		 * silent accept.
		 */
		if (c->failed) {
			if (filter_apply(fs, c, FMX_TEMPFAIL, 1))
				fs->next++;
			continue;
		}
		c->reply[0] = '\0';
		c->result[0] = '\0';
		c->resumed = 0;
		tv.tv_sec = fi->cf->timeout;
		if (fi->ops->flags & FMX_FLAG_BLOCKING) {
			if (filter_pool_submit(fs, c) == -1) {
				if (filter_apply(fs, c, FMX_TEMPFAIL, 1))
					fs->next++;
				continue;
			}
			c->waiting = 1;
			evtimer_add(fs->timeout, &tv);
			break;
		}
		c->in_hook = 1;
		v = filter_call_hook(fs, c, fs->phase, &fs->args);
		c->in_hook = 0;
		if (v == FMX_PENDING && c->resumed)
			v = c->resume_verdict;
		else if (c->resumed)
			filter_log(c, FMX_LOG_WARN, "resume inside a hook that "
			    "did not return FMX_PENDING ignored");
		if (v == FMX_PENDING) {
			c->waiting = 1;
			evtimer_add(fs->timeout, &tv);
			break;
		}
		if (filter_apply(fs, c, v, 0))
			fs->next++;
	}
	fs->running = 0;
	if (fs->next >= fs->n && fs->done != NULL)
		filter_finish(fs, FMX_CONTINUE, NULL);
}

void
filter_session_run(struct filter_session *fs, enum filter_phase phase,
    const struct filter_args *args, filter_done_fn done, void *arg)
{
	static const struct filter_args none;
	struct filter_result res;
	enum fmx_verdict v;

	if (fs->done != NULL)
		fatalx("filter_session_run: phase %s while %s runs",
		    filter_phase_name(phase), filter_phase_name(fs->phase));
	/* A phase run again replaces what it and the phases after it held. */
	if (phase <= FILTER_PH_MAIL) {
		filter_held_clear(fs, phase);
		if (phase == FILTER_PH_CONNECT)
			fs->held_oom = 0;
	}
	/* The message's policy is known: held answers count for it now. */
	if (phase == FILTER_PH_DATA) {
		fs->held_accepted = 0;
		v = filter_held_apply(fs, fs->facts->policy, 1, &res);
		if (v == FMX_ACCEPT)
			fs->msg_accepted = 1;
		else if (v == FMX_REJECT || v == FMX_TEMPFAIL) {
			/* Not reached when each recipient passed the same reading. */
			fs->phase = phase;
			if (done != NULL)
				done(arg, &res);
			return;
		}
	}
	fs->phase = phase;
	fs->args = args ? *args : none;
	fs->next = 0;
	fs->done = done;
	fs->done_arg = arg;
	if (phase == FILTER_PH_MAIL)
		fs->msg_open = 1;
	filter_run(fs);
}

/* ---- sessions ------------------------------------------------------------ */

struct filter_session *
filter_session_new(struct filter_chain *ch, struct event_base *base,
    const struct filter_facts *facts, const struct filter_host *host)
{
	struct filter_session *fs;
	pthread_mutexattr_t attr;
	size_t i;

	if ((fs = calloc(1, sizeof *fs)) == NULL)
		return NULL;
	if (ch->ninst > 0 && (fs->ctx = calloc(ch->ninst, sizeof *fs->ctx)) == NULL) {
		free(fs);
		return NULL;
	}
	if ((fs->timeout = evtimer_new(base, filter_timeout_cb, fs)) == NULL) {
		free(fs->ctx);
		free(fs);
		return NULL;
	}
	filter_chain_ref(ch);
	fs->chain = ch;
	fs->base = base;
	fs->facts = facts;
	if (host != NULL)
		fs->host = *host;
	fs->n = ch->ninst;
	fs->refs = 1;
	fs->session_id = facts->session_id;
	/* Recursive: an api call may lead to another (a cached DNS answer). */
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&fs->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	for (i = 0; i < fs->n; i++) {
		fs->ctx[i].fs = fs;
		fs->ctx[i].idx = i;
		if (filter_handle_new(&fs->ctx[i]) == -1) {
			log_warn("%016llx filter: no room for another session's "
			    "filter contexts", fs->session_id);
			while (i-- > 0)
				filter_handle_free(&fs->ctx[i]);
			filter_session_release(fs);
			return NULL;
		}
	}
	return fs;
}

const struct filter_outcome *
filter_session_outcome(struct filter_session *fs)
{
	struct filter_outcome *o = &fs->outcome;

	o->edits = fs->edits;
	o->nedits = fs->nedits;
	o->body = fs->body;
	o->bodylen = fs->bodylen;
	o->add_rcpts = fs->add_rcpts;
	o->nadd_rcpts = fs->nadd_rcpts;
	o->del_rcpts = fs->del_rcpts;
	o->ndel_rcpts = fs->ndel_rcpts;
	return o;
}

size_t
filter_session_auth_results(struct filter_session *fs, char *out, size_t outlen)
{
	struct policy_ar_result r[FILTER_AR_MAX];
	size_t i;

	if (fs->nar == 0)
		return 0;
	for (i = 0; i < fs->nar; i++) {
		r[i].method = fs->ar[i].method;
		r[i].result = fs->ar[i].result;
		r[i].reason = NULL;
		r[i].props = fs->ar[i].props[0] ? fs->ar[i].props : NULL;
	}
	return policy_ar_render(out, outlen, fs->chain->cfg->authserv_id, r, fs->nar);
}

static void
filter_ctx_msg_free(struct fmx_ctx *c)
{
	if (c->msg_data != NULL && c->msg_free != NULL)
		c->msg_free(c->msg_data);
	c->msg_data = NULL;
	c->msg_free = NULL;
}

void
filter_session_msg_end(struct filter_session *fs, int aborted)
{
	struct filter_dnsq *q, *qnext;
	size_t i;

	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];
		const struct filter_instance *fi = &fs->chain->inst[i];

		if (c->on_pool)
			continue;	/* its hook still runs; it cleans up on return */
		if (aborted && fs->msg_open && !c->failed && fi->ops->on_abort != NULL)
			fi->ops->on_abort(fi->inst, (struct fmx_ctx *)(uintptr_t)c->handle);
		filter_ctx_msg_free(c);
	}
	/*
	 * Lookups and timers a module started during the message would call
	 * it back about a message that is gone (their argument is usually
	 * its msg_data, just freed): they end with the message.
	 */
	for (q = fs->dnsq; q != NULL; q = qnext) {
		qnext = q->next;
		if (!q->msg)
			continue;
		filter_dns_unlink(fs, q);
		if (filter_resolver != NULL)
			filter_resolver->cancel(fs->base, q->id);
		free(q);
	}
	for (i = 0; i < fs->n; i++)
		if (fs->ctx[i].timer_msg && fs->ctx[i].timer != NULL &&
		    !fs->ctx[i].on_pool) {
			evtimer_del(fs->ctx[i].timer);
			fs->ctx[i].timer_fn = NULL;
			fs->ctx[i].timer_msg = 0;
		}
	for (i = 0; i < fs->nedits; i++) {
		free(fs->edits[i].name);
		free(fs->edits[i].value);
	}
	fs->nedits = 0;
	for (i = 0; i < fs->nadd_rcpts; i++)
		free(fs->add_rcpts[i]);
	for (i = 0; i < fs->ndel_rcpts; i++)
		free(fs->del_rcpts[i]);
	fs->nadd_rcpts = fs->ndel_rcpts = 0;
	free(fs->body);
	fs->body = NULL;
	fs->bodylen = 0;
	fs->nar = 0;
	for (i = 0; i < fs->nfacts; i++) {
		free(fs->fact_key[i]);
		free(fs->fact_value[i]);
	}
	fs->nfacts = 0;
	fs->msg_open = 0;
	fs->msg_accepted = 0;
	fs->held_accepted = 0;
	filter_held_clear(fs, FILTER_PH_MAIL);
	memset(&fs->outcome, 0, sizeof fs->outcome);
}

static void
filter_session_release(struct filter_session *fs)
{
	size_t i;

	if (--fs->refs > 0)
		return;
	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];

		filter_ctx_msg_free(c);
		if (c->conn_data != NULL && c->conn_free != NULL)
			c->conn_free(c->conn_data);
		if (c->timer != NULL)
			event_free(c->timer);
	}
	filter_held_clear(fs, FILTER_PH_CONNECT);
	event_free(fs->timeout);
	pthread_mutex_destroy(&fs->lock);
	filter_chain_unref(fs->chain);
	free(fs->ctx);
	free(fs);
}

/*
 * Give up the phase in progress: done is never called, and the pending
 * call's answer, whenever and from wherever it comes, is refused.
 */
void
filter_session_cancel(struct filter_session *fs)
{
	size_t i;

	if (fs == NULL)
		return;
	fs->done = NULL;
	fs->next = fs->n;
	evtimer_del(fs->timeout);
	for (i = 0; i < fs->n; i++)
		if (fs->ctx[i].waiting)
			filter_call_end(fs, &fs->ctx[i]);
}

void
filter_session_free(struct filter_session *fs)
{
	size_t i;

	if (fs == NULL)
		return;
	/* First: on_abort may call resume() (refused, never run on). */
	filter_session_cancel(fs);
	pthread_mutex_lock(&fs->lock);
	fs->dead = 1;		/* a blocking hook still running is given up */
	pthread_mutex_unlock(&fs->lock);
	filter_session_msg_end(fs, 1);
	/* Outstanding lookups must not call into modules after on_close. */
	while (fs->dnsq != NULL) {
		struct filter_dnsq *q = fs->dnsq;

		fs->dnsq = q->next;
		if (filter_resolver != NULL)
			filter_resolver->cancel(fs->base, q->id);
		free(q);
	}
	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];
		const struct filter_instance *fi = &fs->chain->inst[i];

		if (c->timer != NULL)
			evtimer_del(c->timer);
		if (!c->on_pool && fi->ops->on_close != NULL)
			fi->ops->on_close(fi->inst, (struct fmx_ctx *)(uintptr_t)c->handle);
	}
	/* From now on what modules hold resolves to nothing. */
	for (i = 0; i < fs->n; i++)
		filter_handle_free(&fs->ctx[i]);
	filter_session_release(fs);
}
