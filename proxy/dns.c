/*
 * dns.c - asynchronous DNS for the filters, libunbound on our event loops
 *
 * libevent's evdns cannot ask for TXT or MX (notes/LIBRARIES.md 0.1), so
 * the resolver is libunbound driven by the worker's own event_base.
 */
#include <arpa/nameser.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <unbound.h>
#include <unbound-event.h>

#include "dns.h"
#include "filter_chain.h"
#include "log.h"

#define DNS_BASES_MAX	(64 + 4)	/* workers, plus `frontmx check` */
#define DNS_FORWARD_MAX	8

struct dns_base {
	struct event_base	*base;
	struct ub_ctx		*ub;
};

/* One lookup a filter is waiting for. */
struct dns_query {
	struct ub_ctx		*ub;
	int			 async_id;
	struct event		*timer;
	filter_dns_done		 done;
	void			*arg;
	int			 in_resolve;	/* inside ub_resolve_event() */
	int			 answered;
};

static pthread_mutex_t dns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dns_base dns_bases[DNS_BASES_MAX];
static size_t dns_nbases;
static char dns_forward[DNS_FORWARD_MAX][128];
static size_t dns_nforward;
static unsigned dns_timeout = 5;

int
dns_configure(char *const *forward, size_t nforward, unsigned timeout)
{
	size_t i;

	if (nforward > DNS_FORWARD_MAX)
		nforward = DNS_FORWARD_MAX;
	for (i = 0; i < nforward; i++)
		if (snprintf(dns_forward[i], sizeof dns_forward[i], "%s",
		    forward[i]) >= (int)sizeof dns_forward[i])
			return -1;
	dns_nforward = nforward;
	if (timeout > 0)
		dns_timeout = timeout;
	return 0;
}

static struct ub_ctx *
dns_ctx_new(struct event_base *base)
{
	struct ub_ctx *ub;
	size_t i;
	int r = 0;

	static const char *const doc_zones[] = {
		/* RFC 5737 / RFC 3849 documentation networks */
		"2.0.192.in-addr.arpa. nodefault",
		"100.51.198.in-addr.arpa. nodefault",
		"113.0.203.in-addr.arpa. nodefault",
		"8.b.d.0.1.0.0.2.ip6.arpa. nodefault",
	};

	if ((ub = ub_ctx_create_event(base)) == NULL)
		return NULL;
	/*
	 * libunbound answers RFC 6303 reverse zones (RFC 1918 and friends)
	 * itself with NXDOMAIN.  A mail filter behind a site resolver needs
	 * the real answers: a PTR or %{p} check of a LAN client is common.
	 */
	r = ub_ctx_set_option(ub, "unblock-lan-zones:", "yes");
	if (r == 0)
		r = ub_ctx_set_option(ub, "insecure-lan-zones:", "yes");
	if (r == 0 && dns_nforward == 0)
		r = ub_ctx_resolvconf(ub, NULL);
	else if (r == 0) {
		/* Test servers and local caches live on loopback. */
		r = ub_ctx_set_option(ub, "do-not-query-localhost:", "no");
		/* Forwarded, the documentation networks are the server's too. */
		for (i = 0; r == 0 && i < sizeof doc_zones / sizeof doc_zones[0]; i++)
			r = ub_ctx_set_option(ub, "local-zone:", doc_zones[i]);
		for (i = 0; r == 0 && i < dns_nforward; i++)
			r = ub_ctx_set_fwd(ub, dns_forward[i]);
	}
	if (r != 0) {
		log_warn("dns: resolver setup: %s", ub_strerror(r));
		ub_ctx_delete(ub);
		return NULL;
	}
	return ub;
}

/* The context of this base, created on first use (on the base's own thread). */
static struct ub_ctx *
dns_ctx(struct event_base *base)
{
	struct ub_ctx *ub = NULL;
	size_t i;

	pthread_mutex_lock(&dns_lock);
	for (i = 0; i < dns_nbases; i++)
		if (dns_bases[i].base == base) {
			ub = dns_bases[i].ub;
			break;
		}
	if (ub == NULL && dns_nbases < DNS_BASES_MAX &&
	    (ub = dns_ctx_new(base)) != NULL) {
		dns_bases[dns_nbases].base = base;
		dns_bases[dns_nbases].ub = ub;
		dns_nbases++;
	}
	pthread_mutex_unlock(&dns_lock);
	return ub;
}

static void
dns_query_free(struct dns_query *q)
{
	if (q->timer != NULL)
		event_free(q->timer);
	free(q);
}

static void
dns_answer_cb(void *arg, int err, void *pkt, int len, int sec,
    char *why_bogus, int ratelimited)
{
	struct dns_query *q = arg;
	int rcode = -1;

	(void)sec;
	(void)why_bogus;
	(void)ratelimited;
	/* err is libunbound's own status; the DNS RCODE is in the packet. */
	if (err == 0 && pkt != NULL && len >= HFIXEDSZ)
		rcode = ((const unsigned char *)pkt)[3] & 0x0f;
	q->answered = 1;
	q->done(q->arg, rcode, rcode >= 0 ? pkt : NULL,
	    rcode >= 0 ? (size_t)len : 0);
	if (!q->in_resolve)
		dns_query_free(q);
}

static void
dns_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	(void)fd;
	(void)what;
	ub_cancel(q->ub, q->async_id);
	q->done(q->arg, -1, NULL, 0);
	dns_query_free(q);
}

unsigned long long
dns_lookup(struct event_base *base, const char *name, int type,
    filter_dns_done done, void *arg)
{
	struct timeval tv = { .tv_sec = dns_timeout };
	struct dns_query *q;
	struct ub_ctx *ub;
	int r;

	if ((ub = dns_ctx(base)) == NULL)
		return 0;
	if ((q = calloc(1, sizeof *q)) == NULL)
		return 0;
	q->ub = ub;
	q->done = done;
	q->arg = arg;
	if ((q->timer = evtimer_new(base, dns_timeout_cb, q)) == NULL) {
		free(q);
		return 0;
	}
	q->in_resolve = 1;
	r = ub_resolve_event(ub, name, type, 1 /* IN */, q, dns_answer_cb,
	    &q->async_id);
	q->in_resolve = 0;
	if (q->answered) {
		/* Answered from the cache before ub_resolve_event() returned. */
		dns_query_free(q);
		return 1;
	}
	if (r != 0) {
		log_debug("dns: %s type %d: %s", name, type, ub_strerror(r));
		dns_query_free(q);
		return 0;
	}
	evtimer_add(q->timer, &tv);
	/*
	 * The pointer is the id: only the chain holds it, and it cancels
	 * exactly the queries whose answers have not arrived.
	 */
	return (unsigned long long)(uintptr_t)q;
}

void
dns_cancel(struct event_base *base, unsigned long long id)
{
	struct dns_query *q = (struct dns_query *)(uintptr_t)id;

	(void)base;
	if (q == NULL || id == 1)
		return;
	ub_cancel(q->ub, q->async_id);
	dns_query_free(q);
}

static const struct filter_resolver dns_resolver = {
	.query = dns_lookup,
	.cancel = dns_cancel,
};

void
dns_install(void)
{
	filter_resolver_set(&dns_resolver);
}

/*
 * A draining worker with no session left: its resolver's retry timers
 * must not keep the loop (and SIGTERM) waiting.  Every query was
 * cancelled with its session, so nothing refers to the context any more.
 */
void
dns_release(struct event_base *base)
{
	size_t i;

	pthread_mutex_lock(&dns_lock);
	for (i = 0; i < dns_nbases; i++)
		if (dns_bases[i].base == base) {
			ub_ctx_delete(dns_bases[i].ub);
			dns_bases[i] = dns_bases[--dns_nbases];
			break;
		}
	pthread_mutex_unlock(&dns_lock);
}

void
dns_shutdown(void)
{
	size_t i;

	filter_resolver_set(NULL);
	pthread_mutex_lock(&dns_lock);
	for (i = 0; i < dns_nbases; i++)
		ub_ctx_delete(dns_bases[i].ub);
	dns_nbases = 0;
	pthread_mutex_unlock(&dns_lock);
}
