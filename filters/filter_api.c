/*
 * filter_api.c - the struct fmx_api the core hands every filter
 *
 * DESCRIPTION
 *	Everything a module can ask of the core goes through filter_api
 *	(filter_int.h): session facts, private data slots, replies and
 *	results, message edits, DNS and timers, resume().  Built-in filters
 *	get the same table.
 *
 *	A module holds a handle, not a pointer (see "handles" below): every
 *	call resolves it with filter_api_enter(), which refuses a stale
 *	handle, a foreign thread, or a blocking hook that was given up on,
 *	and takes the session's lock.  Every argument is untrusted: replies,
 *	header edits, addresses, facts and results are validated here so
 *	that nothing a module passes can put CR, LF or NUL into what the
 *	core sends upstream, and every refusal is one log line and -1.
 *
 *	The DNS queries and timers a module starts belong to its session
 *	(and, when started during a message, to that message): the chain
 *	ends them through filter_api_msg_end() and filter_api_session_end(),
 *	so a module callback never runs after on_abort or on_close.
 *
 *	The option getters of ABI 1.2 are filter_opt.c's, unchanged: they
 *	need no session.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "content.h"
#include "filter_builtin.h"
#include "filter_int.h"
#include "filter_opt.h"
#include "log.h"

/* Installed by proxy/dns.c: filters never depend on the proxy. */
static const struct filter_resolver *filter_resolver;

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

static _Thread_local struct filter_table *filter_table;	/* this loop thread's */
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
int
filter_api_handle_new(struct fmx_ctx *c)
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
void
filter_api_handle_free(struct fmx_ctx *c)
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
	struct filter_job *job = filter_pool_job();
	uint32_t i = (uint32_t)(v >> 32) & FILTER_H_IDX_MAX;

	if (job != NULL)		/* a pool thread: its own call's ctx only */
		return job->handle == v && v != 0 ? job->c : NULL;
	if (t == NULL || (unsigned)(v >> (32 + FILTER_H_IDX_BITS)) != t->tid ||
	    i >= t->n || t->slots[i].c == NULL || t->slots[i].gen != (uint32_t)v)
		return NULL;
	return t->slots[i].c;
}

struct fmx_ctx *
filter_api_ctx(struct fmx_ctx *h)
{
	return filter_ctx_get(h);
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
	struct filter_job *job = filter_pool_job();

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
	struct filter_job *job = filter_pool_job();
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

/*
 * Not under the lock.  The answer is acted on from the loop once the
 * module's callback returned (filter_chain_call_resumed), never inside
 * resume(): the session does not run on under the module's feet.
 */
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
		filter_chain_call_resumed(c->fs, c, v);
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

const struct fmx_api filter_api = {
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


/* ---- built-in filters' calls (filter_builtin.h) ------------------------ */

int
filter_call_get(struct fmx_ctx *h, struct filter_call *out)
{
	struct fmx_ctx *c = filter_ctx_get(h);

	/* A hook on its loop: a pool thread has no loop to wait on. */
	if (c == NULL || filter_pool_job() != NULL || !c->in_hook)
		return -1;
	out->handle = c->handle;
	out->serial = c->calls;
	out->session_id = c->fs->session_id;
	out->base = c->fs->base;
	out->cfg = c->fs->chain->cfg;
	out->chain_serial = c->fs->chain->serial;
	return 0;
}

struct fmx_ctx *
filter_call_live(const struct filter_call *call)
{
	struct fmx_ctx *c = filter_ctx_get((struct fmx_ctx *)(uintptr_t)call->handle);

	if (c == NULL || filter_pool_job() != NULL || c->calls != call->serial ||
	    !c->waiting || c->failed)
		return NULL;
	return (struct fmx_ctx *)(uintptr_t)c->handle;
}

/*
 * Lookups and timers a module started during the message would call it
 * back about a message that is gone (their argument is usually its
 * msg_data, just freed): they end with the message.  A timer of a hook
 * still on the pool is left to it.
 */
void
filter_api_msg_end(struct filter_session *fs)
{
	struct filter_dnsq *q, *qnext;
	size_t i;

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
}

void
filter_api_session_end(struct filter_session *fs)
{
	struct filter_dnsq *q;

	while ((q = fs->dnsq) != NULL) {
		fs->dnsq = q->next;
		if (filter_resolver != NULL)
			filter_resolver->cancel(fs->base, q->id);
		free(q);
	}
}
