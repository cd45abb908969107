/*
 * runtime.h - what the daemon runs on: one configuration, its filter
 * chain and its TLS contexts, loaded together and swapped together
 *
 * SYNOPSIS
 *	rt = runtime_load(file, err, errlen);	start-up, -t, SIGHUP
 *	worker_runtime_set(rt);			publish (worker.c)
 *	runtime_ref(rt); ... runtime_unref(rt);	a session's hold
 *
 * DESCRIPTION
 *	runtime_load() reads the configuration (config_load()), builds an
 *	OpenSSL context for every listener with TLS and one for the upstream
 *	when the delivery backend talks to one (deliver_upstream()), checks
 *	the directories the daemon writes to (deliver_prepare(), quarantine,
 *	spool) and builds the filter chain (modules loaded, initialised).
 *	Any failure is one "FILE:LINE: ..." line in err and NULL; nothing is
 *	half-built.  runtime_from_chain() wraps a chain built by hand
 *	(`frontmx check`): no TLS contexts.
 *
 *	The result is immutable and reference counted (atomically): a
 *	session holds the runtime it started on, so SIGHUP swaps the
 *	published one while old sessions finish on theirs; the last unref
 *	frees the contexts, the chain and the configuration.  struct config
 *	is data read from the file; what the proxy builds from it lives here.
 *
 *	runtime_server_ctx() is listener i's context (NULL: no TLS there, or
 *	i out of range), runtime_client_ctx() the upstream's (NULL: plain).
 */
#ifndef FRONTMX_RUNTIME_H
#define FRONTMX_RUNTIME_H

#include <stddef.h>

#include <openssl/ssl.h>

struct config;
struct filter_chain;
struct runtime;

struct runtime		*runtime_load(const char *file, char *err, size_t errlen);
struct runtime		*runtime_from_chain(struct filter_chain *);
void			 runtime_ref(struct runtime *);
void			 runtime_unref(struct runtime *);

struct config		*runtime_config(const struct runtime *);
struct filter_chain	*runtime_chain(const struct runtime *);
SSL_CTX			*runtime_server_ctx(const struct runtime *, size_t i);
SSL_CTX			*runtime_client_ctx(const struct runtime *);

#endif
