/*
 * runtime.c - the configuration, its filter chain and its TLS contexts as
 * one reference-counted object (see runtime.h)
 *
 * This was main_load() and main_prepare() in main.c, with the SSL_CTXs
 * stored in struct config (a policy/ type carrying proxy/ state, freed
 * through a callback) and the sessions reaching their configuration
 * through the filter chain.  Now the proxy owns what it builds, and a
 * session holds one runtime for its configuration, chain and contexts.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "deliver.h"
#include "filter_chain.h"
#include "maildir.h"
#include "refcount.h"
#include "runtime.h"
#include "tls.h"

struct runtime {
	int			 refcount;	/* refcount.h */
	struct config		*cfg;		/* one reference */
	struct filter_chain	*chain;		/* one reference; holds cfg too */
	SSL_CTX			**server_ctx;	/* [cfg->nlisteners], NULL: plain */
	size_t			 nserver;
	SSL_CTX			*client_ctx;	/* upstream; NULL: plain or none */
};

static void
runtime_free(struct runtime *rt)
{
	size_t	i;

	for (i = 0; i < rt->nserver; i++)
		SSL_CTX_free(rt->server_ctx[i]);
	free(rt->server_ctx);
	SSL_CTX_free(rt->client_ctx);
	filter_chain_unref(rt->chain);
	config_unref(rt->cfg);
	free(rt);
}

/*
 * Certificates are checked like the rest of the file (-t, SIGHUP).  The
 * upstream's client context is made only when the delivery backend
 * talks to an upstream server.
 */
static int
runtime_tls(struct runtime *rt, char *err, size_t errlen)
{
	const struct config	*cfg = rt->cfg;
	size_t			 i;

	if ((rt->server_ctx = calloc(cfg->nlisteners ? cfg->nlisteners : 1,
	    sizeof *rt->server_ctx)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", cfg->file);
		return -1;
	}
	rt->nserver = cfg->nlisteners;
	for (i = 0; i < cfg->nlisteners; i++) {
		if (cfg->listeners[i].tls == CONFIG_TLS_NONE)
			continue;
		if ((rt->server_ctx[i] = tls_server_ctx(&cfg->listeners[i], err,
		    errlen)) == NULL)
			return -1;
	}
	if (deliver_upstream(cfg, NULL) &&
	    cfg->upstream_tls != CONFIG_TLS_NONE &&
	    (rt->client_ctx = tls_client_ctx(cfg, err, errlen)) == NULL)
		return -1;
	return 0;
}

/*
 * The directories the daemon writes to, checked (and the Maildirs made)
 * on the one path -t, start-up and SIGHUP share, so -t passes only a
 * file the daemon will run with.  Errors are "FILE:LINE:" of the key
 * that names the directory.
 */
static int
runtime_dirs(const struct config *cfg, char *err, size_t errlen)
{
	char why[CONFIG_ERR_MAX / 2];	/* room left for "FILE:LINE: quarantine " */
	const char *spool_why;
	struct stat st;

	if (deliver_prepare(cfg, err, errlen) == -1)
		return -1;
	if (cfg->quarantine_dir != NULL &&
	    maildir_prepare(cfg->quarantine_dir, why, sizeof why) == -1) {
		snprintf(err, errlen, "%s: quarantine %s", cfg->quarantine_where,
		    why);
		return -1;
	}
	/* Large messages are spooled there: it must take new files. */
	spool_why = NULL;
	if (stat(cfg->spool_dir, &st) == -1)
		spool_why = strerror(errno);
	else if (!S_ISDIR(st.st_mode))
		spool_why = "not a directory";
	else if (access(cfg->spool_dir, W_OK | X_OK) == -1)
		spool_why = strerror(errno);
	if (spool_why != NULL) {
		snprintf(err, errlen, "%s: spool directory %s: %s",
		    cfg->spool_where, cfg->spool_dir, spool_why);
		return -1;
	}
	return 0;
}

struct runtime *
runtime_load(const char *file, char *err, size_t errlen)
{
	struct runtime	*rt;

	if ((rt = calloc(1, sizeof *rt)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", file);
		return NULL;
	}
	rt->refcount = 1;
	if ((rt->cfg = config_load(file, err, errlen)) == NULL ||
	    runtime_tls(rt, err, errlen) == -1 ||
	    runtime_dirs(rt->cfg, err, errlen) == -1 ||
	    (rt->chain = filter_chain_new(rt->cfg, err, errlen)) == NULL) {
		runtime_free(rt);
		return NULL;
	}
	return rt;
}

struct runtime *
runtime_from_chain(struct filter_chain *ch)
{
	struct runtime	*rt;

	if ((rt = calloc(1, sizeof *rt)) == NULL) {
		filter_chain_unref(ch);
		return NULL;
	}
	rt->refcount = 1;
	rt->chain = ch;
	rt->cfg = filter_chain_config(ch);
	config_ref(rt->cfg);
	return rt;
}

void
runtime_ref(struct runtime *rt)
{
	if (rt != NULL)
		refcount_hold(&rt->refcount);
}

void
runtime_unref(struct runtime *rt)
{
	if (rt != NULL && refcount_drop(&rt->refcount))
		runtime_free(rt);
}

struct config *
runtime_config(const struct runtime *rt)
{
	return rt->cfg;
}

struct filter_chain *
runtime_chain(const struct runtime *rt)
{
	return rt->chain;
}

SSL_CTX *
runtime_server_ctx(const struct runtime *rt, size_t i)
{
	return i < rt->nserver ? rt->server_ctx[i] : NULL;
}

SSL_CTX *
runtime_client_ctx(const struct runtime *rt)
{
	return rt->client_ctx;
}
