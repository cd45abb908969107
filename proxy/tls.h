/*
 * tls.h - OpenSSL contexts for the listeners and the upstream
 *
 * SYNOPSIS
 *	tls_config_prepare(cfg, upstream, err, errlen);	after config_load
 *	ssl = tls_server_ssl(listener);		per STARTTLS / implicit session
 *	ssl = tls_client_ssl(cfg);		per upstream STARTTLS
 *	tls_describe(ssl, buf, len);		"TLSv1.3 TLS_AES_256_GCM_SHA384"
 *
 * DESCRIPTION
 *	Contexts hang off the configuration they were built from and die with
 *	it, so SIGHUP reloads certificates for new sessions while old
 *	sessions keep theirs.  TLS 1.2 is the minimum; TLS 1.2 cipher suites
 *	are ECDHE with AEAD only; compression and renegotiation are off.
 *	The upstream's client context is made only when upstream says the
 *	delivery backend talks to an upstream server (deliver_upstream()).
 */
#ifndef FRONTMX_TLS_H
#define FRONTMX_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct config;
struct config_listener;

int	 tls_config_prepare(struct config *, int upstream, char *err,
	    size_t errlen);
SSL	*tls_server_ssl(const struct config_listener *);
SSL	*tls_client_ssl(const struct config *);
void	 tls_describe(SSL *, char *buf, size_t len);
/* The first OpenSSL error of this thread, for logs. */
const char *tls_error(char *buf, size_t len);

#endif
