/*
 * ratelimit.c - the built-in rate limit filter, its counters in Redis
 *
 * NAME
 *	ratelimit_filter - at most N messages per T seconds per client
 *	address, client network, envelope sender, authenticated user and
 *	recipient domain
 *
 * SYNOPSIS
 *	redis   = { address = "127.0.0.1:6379"; };
 *	filters = ( { name = "ratelimit";
 *	              options = { client_address = "100/60"; client_network = "500/60";
 *	                          sender = "50/3600"; auth_user = "500/3600";
 *	                          rcpt_domain = "1000/60"; }; } );
 *
 * DESCRIPTION
 *	Each option set is one limit, "N/T": at most N messages in any T
 *	seconds (a sliding window: a Redis sorted set per key holds the
 *	time of each counted message of the last T seconds, at most N of
 *	them, and expires T seconds after the last one).  A message counts
 *	once against its client address, its client network (/24, /64),
 *	its sender (not the null sender: every bounce would share one
 *	key), its authenticated user (authenticated sessions only) and each
 *	distinct recipient domain (the first RATELIMIT_DOMAINS_MAX of them).
 *	Keys: "fmx:rl:KIND:VALUE", shared by every instance using the Redis.
 *
 *	When it counts, and why: at DATA, once the transaction has
 *	recipients that every RCPT-phase filter and the upstream accepted.
 *	A greylisted attempt never gets there (all its recipients got 451),
 *	so a client retrying through greylisting is not locked out by its
 *	own retries, and neither is one whose recipients were refused.
 *	At RCPT the same limits are only checked (nothing is counted): a
 *	client already over a limit gets its 451 before the recipient is
 *	relayed.  The check and the count of one call are one Lua script
 *	(EVALSHA, atomic in Redis, Redis's clock), so two instances sharing
 *	the Redis can never both take the last slot.
 *
 * RESULTS
 *	exceeded	a limit is reached: tempfail, "451 4.7.1 Rate limit
 *			exceeded (KIND), try again in N seconds", N when the
 *			oldest counted message leaves the window.  Map it in
 *			a domain's policy to switch the filter off there.
 *	on_error	Redis unreachable, too slow or in error: the filter's
 *			on_error, tempfail unless set (on_error = "accept"
 *			stops limiting while Redis is down).
 *
 * OPTIONS
 *	client_address, client_network, sender, auth_user, rcpt_domain
 *		"N/T", N in 1..100000 (the window keeps up to N entries),
 *		T in seconds, 1..31622400.  An option left out: no limit
 *		of that kind.
 *	ipv4_prefix, ipv6_prefix (default 24, 64): client_network.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_builtin.h"
#include "metrics.h"
#include "netaddr.h"
#include "ratelimit.h"
#include "redis_client.h"
#include "strutil.h"

#define RATELIMIT_N_MAX		100000ULL
#define RATELIMIT_T_MAX		31622400ULL	/* 366 days */
#define RATELIMIT_DOMAINS_MAX	256	/* recipient domains counted per message */
#define RATELIMIT_VALUE_MAX	256	/* an address; longer: refused by the session first */
#define RATELIMIT_NET_MAX	64

enum ratelimit_kind {
	RATELIMIT_CLIENT_ADDRESS = 0,
	RATELIMIT_CLIENT_NETWORK,
	RATELIMIT_SENDER,
	RATELIMIT_AUTH_USER,
	RATELIMIT_RCPT_DOMAIN,
	RATELIMIT_KIND_COUNT
};

static const char *const ratelimit_kind_names[RATELIMIT_KIND_COUNT] = {
	[RATELIMIT_CLIENT_ADDRESS] = "client_address",
	[RATELIMIT_CLIENT_NETWORK] = "client_network",
	[RATELIMIT_SENDER] = "sender",
	[RATELIMIT_AUTH_USER] = "auth_user",
	[RATELIMIT_RCPT_DOMAIN] = "rcpt_domain",
};

struct ratelimit_limit {
	int			 set;
	unsigned long long	 n;
	unsigned long long	 t;		/* seconds */
};

struct ratelimit_inst {
	const struct fmx_api	*api;
	struct ratelimit_limit	 limit[RATELIMIT_KIND_COUNT];
	unsigned long long	 v4prefix, v6prefix;
};

/* One script call: its keys and arguments, and what key i is about. */
#define RATELIMIT_KEYS_MAX	(RATELIMIT_RCPT_DOMAIN + RATELIMIT_DOMAINS_MAX)
struct ratelimit_call {
	struct ratelimit_inst	*ri;
	size_t			 nkeys;
	enum ratelimit_kind	 kind[RATELIMIT_KEYS_MAX];
	char			*key[RATELIMIT_KEYS_MAX];
	int			 counting;	/* DATA: count, not only check */
};

/*
 * KEYS: one per limit.  ARGV[1] "check" or "count", ARGV[2] this
 * message's member, then for key i ARGV[1+2i] its N and ARGV[2+2i] its
 * window in milliseconds.  Answers { 0, 0 } (within every limit), or
 * { i, seconds } for the first key at its limit (nothing counted).
 */
static struct redis_script ratelimit_script = REDIS_SCRIPT("ratelimit",
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"for i = 1, #KEYS do\n"
	"  local n = tonumber(ARGV[1 + 2 * i])\n"
	"  local w = tonumber(ARGV[2 + 2 * i])\n"
	"  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - w)\n"
	"  if redis.call('ZCARD', KEYS[i]) >= n then\n"
	"    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')\n"
	"    local wait = w\n"
	"    if oldest[2] then wait = tonumber(oldest[2]) + w - now end\n"
	"    return {i, math.ceil(wait / 1000)}\n"
	"  end\n"
	"end\n"
	"if ARGV[1] == 'count' then\n"
	"  for i = 1, #KEYS do\n"
	"    redis.call('ZADD', KEYS[i], now, ARGV[2])\n"
	"    redis.call('PEXPIRE', KEYS[i], ARGV[2 + 2 * i])\n"
	"  end\n"
	"end\n"
	"return {0, 0}\n");

/*
 * frontmx_ratelimit_total{key,result}: "exceeded" for the kind that
 * refused (at RCPT or DATA), "ok" for each kind a counted message passed.
 */
static void
ratelimit_count(const char *kind, const char *result)
{
	metrics_inc(METRIC_RATELIMIT, kind, result);
}

static void
ratelimit_fini(void *instance)
{
	free(instance);
}

/* "N/T": 0 ok (or not set), -1 bad (logged: the load fails naming the filter). */
static int
ratelimit_option(const struct fmx_api *api, const char *const *options,
    size_t noptions, const char *key, struct ratelimit_limit *l)
{
	const char *v = NULL, *slash;
	char n[24];
	int r;

	if ((r = api->option_string(options, noptions, key, &v)) != 1)
		return r;
	if ((slash = strchr(v, '/')) == NULL || (size_t)(slash - v) >= sizeof n)
		goto bad;
	memcpy(n, v, (size_t)(slash - v));
	n[slash - v] = '\0';
	if (str_uint(n, RATELIMIT_N_MAX, &l->n) == -1 || l->n == 0 ||
	    str_uint(slash + 1, RATELIMIT_T_MAX, &l->t) == -1 || l->t == 0)
		goto bad;
	l->set = 1;
	return 0;
 bad:
	api->log(NULL, FMX_LOG_WARN, "ratelimit: option %s = \"%s\": want "
	    "\"N/T\", N messages (1..%llu) per T seconds (1..%llu)", key, v,
	    RATELIMIT_N_MAX, RATELIMIT_T_MAX);
	return -1;
}

static int
ratelimit_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	static const char *const known[] = { "client_address", "client_network",
	    "sender", "auth_user", "rcpt_domain", "ipv4_prefix", "ipv6_prefix",
	    NULL };
	struct ratelimit_inst *ri;
	size_t k;

	if ((ri = calloc(1, sizeof *ri)) == NULL)
		return -1;
	ri->api = api;
	ri->v4prefix = 24;
	ri->v6prefix = 64;
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_uint(options, noptions, "ipv4_prefix", 8, 32,
	    &ri->v4prefix) == -1 ||
	    api->option_uint(options, noptions, "ipv6_prefix", 16, 128,
	    &ri->v6prefix) == -1)
		goto bad;
	for (k = 0; k < RATELIMIT_KIND_COUNT; k++)
		if (ratelimit_option(api, options, noptions,
		    ratelimit_kind_names[k], &ri->limit[k]) == -1)
			goto bad;
	redis_script_init(&ratelimit_script);
	*instance = ri;
	return 0;
 bad:
	free(ri);
	return -1;
}

static void
ratelimit_call_free(void *p)
{
	struct ratelimit_call *rc = p;
	size_t i;

	if (rc == NULL)
		return;
	for (i = 0; i < rc->nkeys; i++)
		free(rc->key[i]);
	free(rc);
}

/* The message's call record (reused by every call of the message). */
static struct ratelimit_call *
ratelimit_call_get(struct ratelimit_inst *ri, struct fmx_ctx *h)
{
	const struct fmx_api *api = ri->api;
	struct ratelimit_call *rc = api->msg_data(h);
	size_t i;

	if (rc == NULL) {
		if ((rc = calloc(1, sizeof *rc)) == NULL)
			return NULL;
		rc->ri = ri;
		api->set_msg_data(h, rc, ratelimit_call_free);
	}
	for (i = 0; i < rc->nkeys; i++)
		free(rc->key[i]);
	rc->nkeys = 0;
	return rc;
}

/* Add the key of kind for value (lower-cased unless it is the auth user). */
static int
ratelimit_key(struct ratelimit_call *rc, enum ratelimit_kind kind,
    const char *value)
{
	char buf[32 + RATELIMIT_VALUE_MAX], *k;
	size_t i;

	if (!rc->ri->limit[kind].set || value == NULL || value[0] == '\0')
		return 0;
	if (strlen(value) >= RATELIMIT_VALUE_MAX || rc->nkeys == RATELIMIT_KEYS_MAX)
		return -1;
	snprintf(buf, sizeof buf, "fmx:rl:%s:%s", ratelimit_kind_names[kind], value);
	if (kind != RATELIMIT_AUTH_USER)
		str_lower(buf);
	for (i = 0; i < rc->nkeys; i++)	/* two recipients, one domain: once */
		if (strcmp(rc->key[i], buf) == 0)
			return 0;
	if ((k = strdup(buf)) == NULL)
		return -1;
	rc->kind[rc->nkeys] = kind;
	rc->key[rc->nkeys++] = k;
	return 0;
}

static const char *
ratelimit_domain(const char *addr)
{
	const char *at = addr != NULL ? strrchr(addr, '@') : NULL;

	return at != NULL ? at + 1 : NULL;
}

static void
ratelimit_answer(struct fmx_ctx *h, void *arg, const redisReply *r)
{
	struct ratelimit_call *rc = arg;
	const struct fmx_api *api = rc->ri->api;
	const char *kind;
	char reason[128], reply[160];
	long long i, secs;
	size_t k;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    (i = r->element[0]->integer) < 0 || (size_t)i > rc->nkeys) {
		if (r != NULL)
			api->log(h, FMX_LOG_WARN, "unexpected answer from Redis");
		api->resume(h, FILTER_VERDICT_ERROR);
		return;
	}
	if (i == 0) {
		if (rc->counting)
			for (k = 0; k < rc->nkeys; k++)
				ratelimit_count(ratelimit_kind_names[rc->kind[k]], "ok");
		api->resume(h, FMX_CONTINUE);
		return;
	}
	kind = ratelimit_kind_names[rc->kind[i - 1]];
	secs = r->element[1]->integer;
	ratelimit_count(kind, "exceeded");
	snprintf(reason, sizeof reason, "%s %llu/%llu reached (%s)", kind,
	    rc->ri->limit[rc->kind[i - 1]].n, rc->ri->limit[rc->kind[i - 1]].t,
	    rc->key[i - 1] + sizeof "fmx:rl:" - 1);
	api->set_result(h, "exceeded", reason);
	snprintf(reply, sizeof reply, "451 4.7.1 Rate limit exceeded (%s), try "
	    "again in %lld seconds", kind, secs > 0 ? secs : 1);
	api->set_reply(h, reply);
	api->resume(h, FMX_TEMPFAIL);
}

/* Send the script for rc's keys: FMX_PENDING, CONTINUE without keys, or an error. */
static enum fmx_verdict
ratelimit_send(struct ratelimit_inst *ri, struct fmx_ctx *h,
    struct ratelimit_call *rc, const struct filter_call *call)
{
	const char *argv[3 * RATELIMIT_KEYS_MAX + 2];
	char nums[2 * RATELIMIT_KEYS_MAX][24], member[64];
	size_t i, argc = 0;

	if (rc->nkeys == 0)
		return FMX_CONTINUE;
	snprintf(member, sizeof member, "%016llx.%08x.%s", call->session_id,
	    arc4random(), ri->api->get(h, FMX_GET_QUEUE_ID) ?
	    ri->api->get(h, FMX_GET_QUEUE_ID) : "-");
	for (i = 0; i < rc->nkeys; i++)
		argv[argc++] = rc->key[i];
	argv[argc++] = rc->counting ? "count" : "check";
	argv[argc++] = member;
	for (i = 0; i < rc->nkeys; i++) {
		const struct ratelimit_limit *l = &ri->limit[rc->kind[i]];

		snprintf(nums[2 * i], sizeof nums[0], "%llu", l->n);
		snprintf(nums[2 * i + 1], sizeof nums[0], "%llu", l->t * 1000);
		argv[argc++] = nums[2 * i];
		argv[argc++] = nums[2 * i + 1];
	}
	if (redis_client_eval(call, &ratelimit_script, (int)rc->nkeys, (int)argc,
	    argv, ratelimit_answer, rc) == -1)
		return FILTER_VERDICT_ERROR;
	return FMX_PENDING;
}

/* The keys every call of the message has: client, network, sender, user. */
static int
ratelimit_base_keys(struct ratelimit_inst *ri, struct fmx_ctx *h,
    struct ratelimit_call *rc)
{
	const struct fmx_api *api = ri->api;
	const char *addr = api->get(h, FMX_GET_CLIENT_ADDR);
	char net[RATELIMIT_NET_MAX];

	if (ratelimit_key(rc, RATELIMIT_CLIENT_ADDRESS, addr) == -1)
		return -1;
	if (addr != NULL && netaddr_network_text(addr, (unsigned)ri->v4prefix,
	    (unsigned)ri->v6prefix, net, sizeof net) == 0 &&
	    ratelimit_key(rc, RATELIMIT_CLIENT_NETWORK, net) == -1)
		return -1;
	/* The null sender ("") is no key: see DESCRIPTION. */
	if (ratelimit_key(rc, RATELIMIT_SENDER, api->get(h, FMX_GET_MAIL_FROM)) == -1 ||
	    ratelimit_key(rc, RATELIMIT_AUTH_USER, api->get(h, FMX_GET_AUTH)) == -1)
		return -1;
	return 0;
}

/* RCPT: is any limit already reached?  Nothing is counted here. */
static enum fmx_verdict
ratelimit_on_rcpt(void *inst, struct fmx_ctx *h, const char *rcpt)
{
	struct ratelimit_inst *ri = inst;
	struct ratelimit_call *rc;
	struct filter_call call;

	if (filter_call_get(h, &call) == -1 ||
	    (rc = ratelimit_call_get(ri, h)) == NULL ||
	    ratelimit_base_keys(ri, h, rc) == -1 ||
	    ratelimit_key(rc, RATELIMIT_RCPT_DOMAIN, ratelimit_domain(rcpt)) == -1)
		return FILTER_VERDICT_ERROR;
	rc->counting = 0;
	return ratelimit_send(ri, h, rc, &call);
}

/*
 * DATA: the transaction's recipients passed every RCPT filter
 * (greylisting included) and the upstream: count the message now.
 */
static enum fmx_verdict
ratelimit_on_data(void *inst, struct fmx_ctx *h)
{
	struct ratelimit_inst *ri = inst;
	struct ratelimit_call *rc;
	struct filter_call call;
	const char *r;
	size_t i, domains = 0;

	if (filter_call_get(h, &call) == -1 ||
	    (rc = ratelimit_call_get(ri, h)) == NULL ||
	    ratelimit_base_keys(ri, h, rc) == -1)
		return FILTER_VERDICT_ERROR;
	for (i = 0; (r = ri->api->rcpt(h, i)) != NULL &&
	    domains < RATELIMIT_DOMAINS_MAX; i++) {
		size_t before = rc->nkeys;

		if (ratelimit_key(rc, RATELIMIT_RCPT_DOMAIN, ratelimit_domain(r)) == -1)
			return FILTER_VERDICT_ERROR;
		domains += rc->nkeys - before;
	}
	rc->counting = 1;
	return ratelimit_send(ri, h, rc, &call);
}

static const struct fmx_filter ratelimit_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "ratelimit",
	.init = ratelimit_init,
	.fini = ratelimit_fini,
	.on_rcpt = ratelimit_on_rcpt,
	.on_data = ratelimit_on_data,
};

const struct fmx_filter *
ratelimit_filter(void)
{
	return &ratelimit_table;
}
