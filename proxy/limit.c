/*
 * limit.c - process-wide connection counts: in total and per client
 *
 * DESCRIPTION
 *	One hash table of client addresses with their connection counts,
 *	shared by every worker under one mutex (taken once per accept and
 *	once per close, never on the data path).  limit.h has the contract.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "limit.h"
#include "log.h"
#include "strutil.h"

#define LIMIT_CONN_BUCKETS	4096

/* Per-client-address connection count, shared by all workers. */
struct limit_conn {
	struct limit_conn	*next;
	int			 family;
	uint8_t			 addr[16];
	size_t			 count;
};

static pthread_mutex_t limit_conn_lock = PTHREAD_MUTEX_INITIALIZER;
static struct limit_conn *limit_conn_table[LIMIT_CONN_BUCKETS];
static size_t limit_conn_total;

/* The address bytes that identify a client; v4-mapped v6 counts as v4. */
static int
limit_conn_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return AF_INET;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			memcpy(key, &a->s6_addr[12], 4);
			return AF_INET;
		}
		memcpy(key, a, 16);
		return AF_INET6;
	}
	return AF_UNSPEC;
}

static size_t
limit_conn_hash(int family, const uint8_t key[16])
{
	return (size_t)((str_hash_mem(key, 16) ^ (uint64_t)(unsigned)family) %
	    LIMIT_CONN_BUCKETS);
}

void
limit_conn_force(const struct sockaddr *sa)
{
	static const struct config unlimited = {
		.limits = { .connections = SIZE_MAX, .connections_per_ip = 0 },
	};

	if (limit_conn_acquire(sa, &unlimited) == -1)
		fatalx("limit_conn_force: out of memory");
}

int
limit_conn_acquire(const struct sockaddr *sa, const struct config *cfg)
{
	return limit_conn_acquire_per_ip(sa, cfg, 1);
}

int
limit_conn_acquire_per_ip(const struct sockaddr *sa, const struct config *cfg,
    int per_ip)
{
	struct limit_conn *c;
	uint8_t key[16];
	int family = limit_conn_key(sa, key);
	size_t b = limit_conn_hash(family, key);
	int rc = 0;

	pthread_mutex_lock(&limit_conn_lock);
	for (c = limit_conn_table[b]; c != NULL; c = c->next)
		if (c->family == family && memcmp(c->addr, key, 16) == 0)
			break;
	if (limit_conn_total >= cfg->limits.connections ||
	    (c != NULL && per_ip && cfg->limits.connections_per_ip != 0 &&
	    c->count >= cfg->limits.connections_per_ip)) {
		rc = -1;
		goto out;
	}
	if (c == NULL) {
		if ((c = calloc(1, sizeof *c)) == NULL) {
			rc = -1;
			goto out;
		}
		c->family = family;
		memcpy(c->addr, key, 16);
		c->next = limit_conn_table[b];
		limit_conn_table[b] = c;
	}
	c->count++;
	limit_conn_total++;
out:
	pthread_mutex_unlock(&limit_conn_lock);
	return rc;
}

void
limit_conn_release(const struct sockaddr *sa)
{
	struct limit_conn *c, **pp;
	uint8_t key[16];
	int family = limit_conn_key(sa, key);
	size_t b = limit_conn_hash(family, key);

	pthread_mutex_lock(&limit_conn_lock);
	for (pp = &limit_conn_table[b]; (c = *pp) != NULL; pp = &c->next)
		if (c->family == family && memcmp(c->addr, key, 16) == 0)
			break;
	if (c == NULL)
		fatalx("limit_conn_release: unknown client");
	limit_conn_total--;
	if (--c->count == 0) {
		*pp = c->next;
		free(c);
	}
	pthread_mutex_unlock(&limit_conn_lock);
}
