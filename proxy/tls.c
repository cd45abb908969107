/*
 * tls.c - OpenSSL contexts for STARTTLS, implicit TLS and the upstream
 *
 * Builds the contexts from a configuration's listen and upstream keys;
 * runtime.c owns them (one set per loaded configuration, swapped and
 * freed with it), so struct config carries no OpenSSL state.  Also the
 * close_notify that ends a connection's TLS (libevent never sends one).
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "metrics.h"
#include "tls.h"

/* TLS 1.2 suites (1.3 has only good ones): forward secret, AEAD. */
#define TLS_CIPHERS_12	"ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"

const char *
tls_error(char *buf, size_t len)
{
	unsigned long e = ERR_get_error();

	if (e == 0)
		snprintf(buf, len, "unknown TLS error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

static int
tls_ctx_common(SSL_CTX *ctx)
{
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	return SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
	    SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) == 1 ? 0 : -1;
}

SSL_CTX *
tls_server_ctx(const struct config_listener *l, char *err, size_t errlen)
{
	char e[256];
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    tls_ctx_common(ctx) == -1) {
		snprintf(err, errlen, "listen %s: %s", l->address, tls_error(e, sizeof e));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, l->cert) != 1) {
		snprintf(err, errlen, "%s: listen %s: cert %s: %s", l->cert_where,
		    l->address, l->cert, tls_error(e, sizeof e));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, l->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s: listen %s: key %s: %s", l->key_where,
		    l->address, l->key, tls_error(e, sizeof e));
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* One SMTP session, one handshake: tickets buy nothing here. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
}

SSL_CTX *
tls_client_ctx(const struct config *cfg, char *err, size_t errlen)
{
	char e[256];
	SSL_CTX *ctx;

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    tls_ctx_common(ctx) == -1) {
		snprintf(err, errlen, "upstream TLS: %s", tls_error(e, sizeof e));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cfg->upstream_tls == CONFIG_TLS_VERIFY) {
		if ((cfg->upstream_tls_ca != NULL ?
		    SSL_CTX_load_verify_locations(ctx, cfg->upstream_tls_ca, NULL) :
		    SSL_CTX_set_default_verify_paths(ctx)) != 1) {
			snprintf(err, errlen, "%s: upstream tls_ca %s: %s",
			    cfg->upstream_where,
			    cfg->upstream_tls_ca ? cfg->upstream_tls_ca : "(system)",
			    tls_error(e, sizeof e));
			SSL_CTX_free(ctx);
			return NULL;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else
		/* Opportunistic (RFC 7435): encrypt, do not authenticate. */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

SSL *
tls_server_ssl(SSL_CTX *ctx)
{
	return ctx != NULL ? SSL_new(ctx) : NULL;
}

SSL *
tls_client_ssl(SSL_CTX *ctx, const struct config *cfg)
{
	/* "lmtp:unix:PATH" has no host: the name must come from tls_name. */
	const char *name = cfg->upstream_tls_name ? cfg->upstream_tls_name :
	    cfg->upstream_host ? cfg->upstream_host : "localhost";
	SSL *ssl;

	if (ctx == NULL || (ssl = SSL_new(ctx)) == NULL)
		return NULL;
	/* SNI only for names; the verified name is checked by OpenSSL. */
	if (strchr(name, ':') == NULL && strspn(name, "0123456789.") != strlen(name))
		SSL_set_tlsext_host_name(ssl, name);
	if (cfg->upstream_tls == CONFIG_TLS_VERIFY) {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, name) != 1) {
			SSL_free(ssl);
			return NULL;
		}
	}
	return ssl;
}

void
tls_handshake_done(SSL *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s %s", SSL_get_version(ssl),
	    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
	metrics_inc(METRIC_TLS_HANDSHAKES, SSL_is_server(ssl) ? "server" :
	    "client", SSL_get_version(ssl));
}

/*
 * Send our close_notify once, before the connection closes: RFC 8446
 * 6.1 wants one before a party closes its write side, and a client that
 * reads after QUIT's 221 (Exim) logs a TLS error without it.  Not after
 * a handshake that never finished or a fatal error (OpenSSL is back "in
 * init" then): there is nothing to close cleanly.  We do not wait for the
 * peer's own close_notify.  A failure only means the alert is lost; its
 * errors are cleared so that no other session's bufferevent reports them.
 */
void
tls_close_notify(SSL *ssl)
{
	if (ssl == NULL || !SSL_is_init_finished(ssl) ||
	    (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
		return;
	if (SSL_shutdown(ssl) < 0)
		ERR_clear_error();
}
