/*
 * tls.h - OpenSSL contexts for the listeners and the upstream
 *
 * SYNOPSIS
 *	ctx = tls_server_ctx(listener, err, errlen);	at load (runtime.c)
 *	ctx = tls_client_ctx(cfg, err, errlen);		at load (runtime.c)
 *	ssl = tls_server_ssl(ctx);		per STARTTLS / implicit session
 *	ssl = tls_client_ssl(ctx, cfg);		per upstream STARTTLS
 *	tls_handshake_done(ssl, buf, len);	"TLSv1.3 TLS_AES_256_GCM_SHA384",
 *						counted in frontmx_tls_handshakes_total
 *	tls_close_notify(ssl);			before an orderly close
 *
 * DESCRIPTION
 *	runtime.c builds the contexts with a configuration and frees them
 *	with it, so SIGHUP reloads certificates for new sessions while old
 *	sessions keep theirs.  TLS 1.2 is the minimum; TLS 1.2 cipher suites
 *	are ECDHE with AEAD only; compression and renegotiation are off.
 *	An error is "FILE:LINE: ..." of the key naming the failing file.
 *	tls_server_ssl() and tls_client_ssl() return NULL for a NULL ctx
 *	(no TLS there) or when OpenSSL fails.  tls_close_notify() sends
 *	the close_notify alert once, only on an established connection.
 */
#ifndef FRONTMX_TLS_H
#define FRONTMX_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct config;
struct config_listener;

SSL_CTX	*tls_server_ctx(const struct config_listener *, char *err,
	    size_t errlen);
SSL_CTX	*tls_client_ctx(const struct config *, char *err, size_t errlen);
SSL	*tls_server_ssl(SSL_CTX *);
SSL	*tls_client_ssl(SSL_CTX *, const struct config *);
/* A handshake finished: describe it into buf, count it by side and version. */
void	 tls_handshake_done(SSL *, char *buf, size_t len);
void	 tls_close_notify(SSL *);
/* The first OpenSSL error of this thread, for logs. */
const char *tls_error(char *buf, size_t len);

#endif
