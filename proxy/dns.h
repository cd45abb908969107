/*
 * dns.h - the one resolver of the daemon: libunbound on each worker's
 * event loop, with its cache
 *
 * SYNOPSIS
 *	dns_configure(forward, nforward, timeout_secs);	once, before workers start
 *	dns_install();		lends it to the filters (filter_resolver_set)
 *	dns_shutdown();		after the workers stopped
 *
 * DESCRIPTION
 *	Each event_base gets its own ub_ctx (ub_ctx_create_event), created on
 *	first use on that base's thread, so a lookup never leaves the thread
 *	that asked and never blocks it.  With dns.forward the contexts
 *	forward to those servers ("IP@port", loopback allowed: that is how
 *	tests run a real DNS server); without it they use /etc/resolv.conf.
 *	Every query has its own timeout on top of unbound's retries, so a
 *	silent server costs a filter at most dns.timeout seconds; the answer
 *	is then reported as rcode -1.
 */
#ifndef FRONTMX_DNS_H
#define FRONTMX_DNS_H

#include <stddef.h>

#include "filter_chain.h"

int	dns_configure(char *const *forward, size_t nforward, unsigned timeout);
void	dns_install(void);
void	dns_shutdown(void);
/*
 * The same lookups for the proxy itself (the client's reverse name).
 * done may run before dns_lookup() returns (cache); the id is then 1 and
 * must not be cancelled.  0: the lookup could not start.
 */
unsigned long long dns_lookup(struct event_base *, const char *name, int type,
	    filter_dns_done, void *arg);
void	dns_cancel(struct event_base *, unsigned long long id);
/* Drop the context of one event_base (a worker that finished draining). */
void	dns_release(struct event_base *);

#endif
