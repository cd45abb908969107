/*
 * upstream_pool.h - idle upstream connections kept for the next client
 *
 * SYNOPSIS
 *	if ((up = upstream_pool_take(cfg, &client)) != NULL)
 *		upstream_reuse(up, &client, sid, done, arg);	(RSET first)
 *	if (!upstream_pool_put(up, cfg, base, sid))
 *		upstream_close(up);
 *	upstream_pool_flush(draining);
 *
 * DESCRIPTION
 *	Per worker thread; see upstream_pool.c.  upstream_pool_put() takes
 *	the connection (1) when upstream.pool allows it and the connection
 *	may serve another client, else leaves it to the caller (0).
 *	upstream_pool_take() hands out one made under cfg that suits the
 *	client, or NULL.  upstream_pool_flush() closes every pooled
 *	connection (a reload); with draining set nothing is pooled again.
 */
#ifndef FRONTMX_UPSTREAM_POOL_H
#define FRONTMX_UPSTREAM_POOL_H

struct config;
struct event_base;
struct upstream;
struct upstream_client;

int		 upstream_pool_put(struct upstream *, const struct config *,
		    struct event_base *, unsigned long long sid);
struct upstream	*upstream_pool_take(const struct config *,
		    const struct upstream_client *);
void		 upstream_pool_flush(int draining);

#endif
