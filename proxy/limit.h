/*
 * limit.h - process-wide connection counts: in total and per client
 *
 * SYNOPSIS
 *	limit_conn_acquire() counts one connection from the address when
 *	limits.connections and limits.connections_per_ip of cfg allow it:
 *	0 admitted, -1 over a limit (or out of memory; nothing counted).
 *	limit_conn_release() gives one back; releasing an address never
 *	acquired is a broken invariant (fatalx).  limit_conn_force() counts
 *	one even over the limits, for a connection about to be refused, so
 *	that its release balances.  A v4-mapped IPv6 address counts as the
 *	IPv4 one.  Any thread may call them (one mutex).
 *
 *	The worker acquires when it accepts; the session releases when it
 *	ends, and re-counts under the real client address after a PROXY
 *	header (smtp_peer.c).
 */
#ifndef FRONTMX_LIMIT_H
#define FRONTMX_LIMIT_H

#include <sys/socket.h>

struct config;

int	limit_conn_acquire(const struct sockaddr *, const struct config *);
/*
 * The same, with per_ip 0: only limits.connections applies.  For a
 * balancer's connection to a proxy_protocol listener: every client behind
 * it shares its address, so the per-address limit applies to the address
 * in the PROXY header instead (smtp_peer.c re-counts under it).
 */
int	limit_conn_acquire_per_ip(const struct sockaddr *, const struct config *,
	    int per_ip);
void	limit_conn_release(const struct sockaddr *);
void	limit_conn_force(const struct sockaddr *);

#endif
