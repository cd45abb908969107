/*
 * greylist.c - the built-in greylisting filter, its state in Redis
 *
 * NAME
 *	greylist_filter - defer the first delivery attempt of an unknown
 *	(client network, sender, recipient) triplet
 *
 * SYNOPSIS
 *	redis   = { address = "127.0.0.1:6379"; };
 *	filters = ( { name = "spf"; },
 *	            { name = "greylist";
 *	              options = { delay = 300; retry_window = 86400;
 *	                          whitelist_time = 3110400;
 *	                          spf_allow = [ "bank.example" ]; }; } );
 *	policy  = { domains = ( { domain = "lists.example.com";
 *	                          greylist = { greylisted = "accept"; }; } ); };
 *
 * DESCRIPTION
 *	At RCPT, for each recipient: the triplet is the client's network
 *	(its /24, or /64 for IPv6: senders that retry from another address
 *	of their pool still match), the envelope sender and the recipient,
 *	both in lower case ("<>" for the null sender).
 *
 *	1. The network is whitelisted (it passed within whitelist_time):
 *	   continue, and its whitelisting runs whitelist_time from now.
 *	2. Triplet unknown: it is remembered, result "greylisted".
 *	3. Known for less than delay seconds: "greylisted" again (the
 *	   first attempt's time counts, not the retry's).
 *	4. Known for delay seconds or more: result "pass", the triplet is
 *	   forgotten and the network whitelisted for whitelist_time seconds,
 *	   so the same sender's other recipients and every other sender of
 *	   that network pass at once from then on.
 *
 *	A triplet is remembered for delay + retry_window seconds after its
 *	first attempt: a retry later than that starts over (greylisted).
 *	Every key carries its TTL (triplets delay + retry_window, networks
 *	whitelist_time), so Redis forgets what is not used and never grows
 *	without bound.  One Lua script (EVALSHA) reads and writes the keys
 *	atomically and uses Redis's clock, so every instance of a farm
 *	sharing the Redis sees the same state and the same time.  Keys:
 *	"fmx:gl:w:NETWORK" and "fmx:gl:t:NETWORK SENDER RECIPIENT".
 *
 *	Not greylisted ("skipped", counted, not named to the policy):
 *	clients in relay.networks, authenticated clients, and messages whose
 *	envelope sender passed SPF for a domain in spf_allow (the SPF filter,
 *	earlier in the chain or not, has set the facts spf.result and
 *	spf.domain at MAIL).
 *
 * RESULTS
 *	greylisted	the attempt is deferred: tempfail, "451 4.7.1
 *			Greylisted, try again in N seconds" (N: what is left
 *			of the delay).  Map it to accept in a domain's policy
 *			to switch greylisting off for that domain.
 *	pass		the retry came after the delay (logged; continue).
 *	on_error	Redis unreachable, too slow (redis.timeout) or in
 *			error: the filter's on_error, tempfail unless set
 *			(mail waits, the sender retries; on_error = "accept"
 *			lets mail through unchecked while Redis is down).
 *
 * OPTIONS
 *	delay = N		seconds before a retry passes (default 300)
 *	retry_window = N	seconds after the delay during which a retry
 *				is taken (default 86400)
 *	whitelist_time = N	seconds a network stays whitelisted after its
 *				last pass (default 3110400, 36 days)
 *	spf_allow = LIST	domains whose SPF pass skips greylisting:
 *				"example.com" that domain, ".example.com" its
 *				subdomains (as relay.domains)
 *	ipv4_prefix = N		the network of an IPv4 client (default 24)
 *	ipv6_prefix = N		the network of an IPv6 client (default 64)
 *
 * THREADING
 *	The instance is read-only after init.  A hook waits for its script
 *	(FMX_PENDING) on the worker's Redis connection; the answer resumes
 *	it only while that call still waits (redis_client.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "filter_builtin.h"
#include "greylist.h"
#include "metrics.h"
#include "netaddr.h"
#include "redis_client.h"
#include "strutil.h"

#define GREYLIST_ADDR_MAX	256	/* an address, RFC 5321 path limit */
#define GREYLIST_NET_MAX	64	/* "ffff:...:ffff/128" */
#define GREYLIST_KEY_MAX	(16 + GREYLIST_NET_MAX + 2 * GREYLIST_ADDR_MAX)
#define GREYLIST_DAY		86400ULL

struct greylist_inst {
	const struct fmx_api	*api;
	unsigned long long	 delay;		/* seconds */
	unsigned long long	 retry_window;
	unsigned long long	 whitelist_time;
	unsigned long long	 v4prefix, v6prefix;
	char			**spf_allow;	/* lower case; one allocation */
	size_t			 nspf_allow;
};

/* The script's answers: { code, seconds }. */
enum greylist_code {
	GREYLIST_NEW = 0,	/* triplet first seen: greylisted */
	GREYLIST_EARLY,		/* retry before the delay: greylisted */
	GREYLIST_PASS,		/* retry after the delay: network whitelisted */
	GREYLIST_WHITE,		/* network already whitelisted */
	GREYLIST_CODE_COUNT
};

/*
 * KEYS[1] the network's whitelist key, KEYS[2] the triplet's; ARGV the
 * delay, retry window and whitelist time in milliseconds.  Redis's own
 * clock (TIME), so that instances with skewed clocks agree; with effect
 * replication (the default since Redis 5) a script may write after TIME.
 */
static struct redis_script greylist_script = REDIS_SCRIPT("greylist",
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local delay = tonumber(ARGV[1])\n"
	"if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
	"  return {3, 0}\n"
	"end\n"
	"local first = redis.call('GET', KEYS[2])\n"
	"if not first then\n"
	"  redis.call('SET', KEYS[2], now, 'PX', delay + tonumber(ARGV[2]))\n"
	"  return {0, math.ceil(delay / 1000)}\n"
	"end\n"
	"local age = now - tonumber(first)\n"
	"if age < delay then\n"
	"  return {1, math.ceil((delay - age) / 1000)}\n"
	"end\n"
	"redis.call('DEL', KEYS[2])\n"
	"redis.call('SET', KEYS[1], now, 'PX', ARGV[3])\n"
	"return {2, math.floor(age / 1000)}\n");

/* frontmx_greylist_total{result}: greylisted, pass, whitelisted, skipped, error. */
static void
greylist_count(const char *result)
{
	metrics_inc(METRIC_GREYLIST, result);
}

static void
greylist_fini(void *instance)
{
	struct greylist_inst *gi = instance;

	if (gi == NULL)
		return;
	free(gi->spf_allow);
	free(gi);
}

static int
greylist_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	static const char *const known[] = { "delay", "retry_window",
	    "whitelist_time", "spf_allow", "ipv4_prefix", "ipv6_prefix", NULL };
	struct greylist_inst *gi;
	size_t i;

	if ((gi = calloc(1, sizeof *gi)) == NULL)
		return -1;
	gi->api = api;
	gi->delay = 300;
	gi->retry_window = GREYLIST_DAY;
	gi->whitelist_time = 36 * GREYLIST_DAY;
	gi->v4prefix = 24;
	gi->v6prefix = 64;
	/* Bounds keep delay + retry_window in milliseconds well inside Lua's doubles. */
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_uint(options, noptions, "delay", 0, 7 * GREYLIST_DAY,
	    &gi->delay) == -1 ||
	    api->option_uint(options, noptions, "retry_window", 1,
	    366 * GREYLIST_DAY, &gi->retry_window) == -1 ||
	    api->option_uint(options, noptions, "whitelist_time", 1,
	    366 * GREYLIST_DAY, &gi->whitelist_time) == -1 ||
	    api->option_uint(options, noptions, "ipv4_prefix", 8, 32,
	    &gi->v4prefix) == -1 ||
	    api->option_uint(options, noptions, "ipv6_prefix", 16, 128,
	    &gi->v6prefix) == -1 ||
	    api->option_list(options, noptions, "spf_allow", &gi->spf_allow,
	    &gi->nspf_allow) == -1) {
		greylist_fini(gi);
		return -1;
	}
	for (i = 0; i < gi->nspf_allow; i++)
		str_lower(gi->spf_allow[i]);
	redis_script_init(&greylist_script);
	*instance = gi;
	return 0;
}

/* domain is on the list: itself, or a subdomain of a ".parent" entry. */
static int
greylist_domain_listed(const struct greylist_inst *gi, const char *domain)
{
	size_t i, dl = strlen(domain), el;

	for (i = 0; i < gi->nspf_allow; i++) {
		const char *e = gi->spf_allow[i];

		el = strlen(e);
		if (e[0] == '.' ? dl > el && str_casecmp(domain + dl - el, e) == 0 :
		    str_casecmp(domain, e) == 0)
			return 1;
	}
	return 0;
}

/* Why this client is not greylisted, or NULL. */
static const char *
greylist_skip(const struct greylist_inst *gi, struct fmx_ctx *h,
    const struct filter_call *call, const char *addr)
{
	const struct config *cfg = call->cfg;
	const char *res, *dom;

	if (gi->api->get(h, FMX_GET_AUTH) != NULL)
		return "authenticated";
	if (netaddr_mask_match_text(cfg->relay_networks, cfg->nrelay_networks,
	    addr))
		return "relay network";
	res = gi->api->get(h, FMX_GET_FACT(FMX_FACT_SPF_RESULT));
	dom = gi->api->get(h, FMX_GET_FACT(FMX_FACT_SPF_DOMAIN));
	if (res != NULL && dom != NULL && strcmp(res, "pass") == 0 &&
	    greylist_domain_listed(gi, dom))
		return "SPF pass for an allowed domain";
	return NULL;
}

/* Lower-case copy of an address; "<>" for the null sender.  -1: too long. */
static int
greylist_addr(const char *in, char *out, size_t outlen)
{
	if (in == NULL || strlen(in) >= outlen)
		return -1;
	snprintf(out, outlen, "%s", in[0] ? in : "<>");
	str_lower(out);
	return 0;
}

static void
greylist_answer(struct fmx_ctx *h, void *arg, const redisReply *r)
{
	const struct greylist_inst *gi = arg;
	const struct fmx_api *api = gi->api;
	char buf[128];
	long long code, secs;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    (code = r->element[0]->integer) < 0 || code >= GREYLIST_CODE_COUNT) {
		if (r != NULL)
			api->log(h, FMX_LOG_WARN, "unexpected answer from Redis");
		greylist_count("error");
		api->resume(h, FILTER_VERDICT_ERROR);
		return;
	}
	secs = r->element[1]->integer;
	switch ((enum greylist_code)code) {
	case GREYLIST_NEW:
	case GREYLIST_EARLY:
		greylist_count("greylisted");
		snprintf(buf, sizeof buf, "%s, %lld s to wait",
		    code == GREYLIST_NEW ? "new triplet" : "retry too early", secs);
		api->set_result(h, "greylisted", buf);
		snprintf(buf, sizeof buf, "451 4.7.1 Greylisted, try again in "
		    "%lld seconds", secs > 0 ? secs : 1);
		api->set_reply(h, buf);
		api->resume(h, FMX_TEMPFAIL);
		return;
	case GREYLIST_PASS:
		greylist_count("pass");
		snprintf(buf, sizeof buf, "retried after %lld s, network "
		    "whitelisted", secs);
		api->set_result(h, "pass", buf);
		api->resume(h, FMX_CONTINUE);
		return;
	case GREYLIST_WHITE:
	default:
		greylist_count("whitelisted");
		api->resume(h, FMX_CONTINUE);
		return;
	}
}

static enum fmx_verdict
greylist_on_rcpt(void *inst, struct fmx_ctx *h, const char *rcpt)
{
	struct greylist_inst *gi = inst;
	const struct fmx_api *api = gi->api;
	struct filter_call call;
	const char *addr, *why, *argv[5];
	char net[GREYLIST_NET_MAX], from[GREYLIST_ADDR_MAX], to[GREYLIST_ADDR_MAX];
	char wkey[GREYLIST_KEY_MAX], tkey[GREYLIST_KEY_MAX];
	char delay[24], window[24], white[24];

	if (filter_call_get(h, &call) == -1)
		return FILTER_VERDICT_ERROR;
	if ((addr = api->get(h, FMX_GET_CLIENT_ADDR)) == NULL ||
	    netaddr_network_text(addr, (unsigned)gi->v4prefix,
	    (unsigned)gi->v6prefix, net, sizeof net) == -1) {
		/* A client with no IP address (a unix socket): nothing to greylist. */
		greylist_count("skipped");
		return FMX_CONTINUE;
	}
	if ((why = greylist_skip(gi, h, &call, addr)) != NULL) {
		api->log(h, FMX_LOG_DEBUG, "not greylisted: %s", why);
		greylist_count("skipped");
		return FMX_CONTINUE;
	}
	if (greylist_addr(api->get(h, FMX_GET_MAIL_FROM), from, sizeof from) == -1 ||
	    greylist_addr(rcpt, to, sizeof to) == -1)
		return FILTER_VERDICT_ERROR;
	snprintf(wkey, sizeof wkey, "fmx:gl:w:%s", net);
	snprintf(tkey, sizeof tkey, "fmx:gl:t:%s %s %s", net, from, to);
	snprintf(delay, sizeof delay, "%llu", gi->delay * 1000);
	snprintf(window, sizeof window, "%llu", gi->retry_window * 1000);
	snprintf(white, sizeof white, "%llu", gi->whitelist_time * 1000);
	argv[0] = wkey;
	argv[1] = tkey;
	argv[2] = delay;
	argv[3] = window;
	argv[4] = white;
	if (redis_client_eval(&call, &greylist_script, 2, 5, argv, greylist_answer,
	    gi) == -1) {
		greylist_count("error");
		return FILTER_VERDICT_ERROR;
	}
	return FMX_PENDING;
}

static const struct fmx_filter greylist_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "greylist",
	.init = greylist_init,
	.fini = greylist_fini,
	.on_rcpt = greylist_on_rcpt,
};

const struct fmx_filter *
greylist_filter(void)
{
	return &greylist_table;
}
