/*
 * config.h - frontmx configuration: types and loader
 *
 * SYNOPSIS
 *	struct config *config_load(const char *file, char *err, size_t errlen);
 *	void config_ref(struct config *); void config_unref(struct config *);
 *
 * DESCRIPTION
 *	config_load() parses a libconfig file into an immutable struct config.
 *	Every key is checked: an unknown key, a wrong type or a bad value is an
 *	error, reported in err as "file:line: message" and config_load()
 *	returns NULL.  The result is shared read-only between worker threads;
 *	a session takes a reference when it starts and drops it when it ends,
 *	so SIGHUP can swap the global pointer while old sessions finish on the
 *	configuration they started with.
 *
 *	The loader is policy/config.c (core, errors, small sections),
 *	config_net.c (listen, upstream, dns, relay) and config_filters.c
 *	(filters, policy groups, action names); config_int.h is private to
 *	them.
 */
#ifndef FRONTMX_CONFIG_H
#define FRONTMX_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "netaddr.h"

#define CONFIG_ERR_MAX	512
/* Longest authserv_id: an RFC 2045 token (a domain name is at most 253). */
#define CONFIG_AUTHSERV_MAX	255

/* Private to config*.c (config_int.h): relay.domains and policy domain hashes. */
struct config_strset;

enum config_tls_mode {
	CONFIG_TLS_NONE = 0,		/* plaintext only */
	CONFIG_TLS_STARTTLS,		/* offered (listener) / used when offered (upstream) */
	CONFIG_TLS_REQUIRED,		/* listener: MAIL refused before STARTTLS; upstream: must */
	CONFIG_TLS_IMPLICIT,		/* listener: TLS from the first byte (port 465 style) */
	CONFIG_TLS_VERIFY,		/* upstream: required, certificate and name verified */
	CONFIG_TLS_MODE_COUNT
};

struct config_listener {
	char			*address;	/* as written, "127.0.0.1:2525" / "[::1]:2525" */
	struct sockaddr_storage	 sa;
	socklen_t		 salen;
	enum config_tls_mode	 tls;		/* NONE, STARTTLS, REQUIRED or IMPLICIT */
	char			*cert;		/* PEM chain, required when tls != none */
	char			*key;		/* PEM private key */
	char			*cert_where;	/* "FILE:LINE" of the cert key, for errors */
	char			*key_where;	/* "FILE:LINE" of the key key */
	int			 proxy_protocol;	/* expect a PROXY v1/v2 header */
	struct netaddr_mask	*proxy_from;	/* who may send it */
	size_t			 nproxy_from;
	int			 auth;		/* submission: relay AUTH to the upstream */
};

enum config_upstream_kind {
	CONFIG_UPSTREAM_SMTP = 0,	/* relay over SMTP to host:port */
	CONFIG_UPSTREAM_DIR,		/* "dir:PATH" Maildir-style delivery */
	CONFIG_UPSTREAM_LMTP,		/* "lmtp:host:port" or "lmtp:unix:PATH" (RFC 2033) */
	CONFIG_UPSTREAM_KIND_COUNT
};

enum config_action {
	CONFIG_ACTION_ACCEPT = 0,
	CONFIG_ACTION_TAG,
	CONFIG_ACTION_QUARANTINE,
	CONFIG_ACTION_TEMPFAIL,
	CONFIG_ACTION_REJECT,
	CONFIG_ACTION_DISCARD,
	CONFIG_ACTION_COUNT
};

/* A filter's result -> action table inside one policy ("spf = { fail = "reject"; }"). */
struct config_policy_rule {
	char			*result;	/* "fail", "softfail", ... */
	enum config_action	 action;
};

struct config_policy_filter {
	char				*name;		/* "spf", "dkim", "dmarc", "content", ... */
	struct config_policy_rule	*rules;
	size_t				 nrules;
	int				 dry_run;	/* -1 unset (inherit), 0, 1 */
};

struct config_policy {
	char				*name;		/* "default" or first domain */
	char				**domains;	/* exact domains; lookup also tries parents */
	size_t				 ndomains;
	struct config_policy_filter	*filters;
	size_t				 nfilters;
	int				 dry_run;	/* -1 unset, 0, 1 */
};

/* metrics.connections: the most scrapers served at once. */
#define CONFIG_METRICS_CONNECTIONS_MAX	256

/* limits.line_length: at most 1 MiB, the bound of every line buffer. */
#define CONFIG_LINE_LENGTH_MAX	1048576

struct config_limits {
	size_t	 message_size;		/* bytes, default 26214400 */
	size_t	 header_size;		/* bytes of the header block, default 102400 */
	size_t	 recipients;		/* per transaction, default 1000 (RFC min 100) */
	size_t	 connections_per_ip;	/* default 50; 0 = unlimited */
	size_t	 connections;		/* total, default 10000 */
	size_t	 errors;		/* hard error limit before 421, default 20 */
	size_t	 spool_memory;		/* message bytes kept in RAM before the temp file, default 1048576 */
	size_t	 pipeline_backlog;	/* buffered unread client input, default 65536 */
	size_t	 line_length;		/* DATA/BDAT text line with CRLF, default 1000 (RFC 5321) */
};

/* Seconds; RFC 5321 4.5.3.2 defaults. */
struct config_timeouts {
	unsigned command;		/* 300: wait for a client command */
	unsigned data_block;		/* 180: wait for the next DATA chunk */
	unsigned data;			/* 3600: the whole message's data */
	unsigned upstream_connect;	/* 30 */
	unsigned upstream_command;	/* 300: wait for an upstream reply */
	unsigned upstream_data_end;	/* 600: wait for the reply to the final dot */
	unsigned shutdown_grace;	/* 30: SIGTERM drain time */
	unsigned dns;			/* 5: one DNS lookup for a filter */
};

/*
 * redis = { address = "127.0.0.1:6379"; password = "..."; db = 0; timeout = 1; };
 * The shared state of the greylist and ratelimit filters (filters/redis_client.c).
 * address NULL: no redis section (those filters then refuse to load).
 */
#define CONFIG_REDIS_PASSWORD_MAX	512
struct config_redis {
	char		*address;	/* as written: "IP:port", "[IPv6]:port", "unix:PATH" */
	char		*host;		/* numeric IP (never resolved: no blocking lookup) */
	unsigned	 port;
	char		*unix_path;	/* "unix:PATH" */
	char		*password;	/* AUTH on connect; NULL: none */
	unsigned	 db;		/* SELECT on connect when not 0 (0..65535) */
	unsigned	 timeout;	/* seconds one command may take, connect included (default 1) */
	char		*where;		/* "FILE:LINE" of the redis group */
};

/* One entry of the `filters` list: a built-in filter or a module instance. */
struct config_filter {
	char			*name;		/* unique; built-in name or instance name */
	char			*module;	/* path of a .so, NULL for a built-in */
	char			*where;		/* "FILE:LINE" of module (of the entry for a built-in) */
	unsigned		 timeout;	/* seconds per hook call, default 30; 0: a milter's own timeouts */
	enum config_action	 on_error;	/* default CONFIG_ACTION_TEMPFAIL */
	int			 dry_run;	/* -1 unset, 0, 1 */
	int			 delay_reject;	/* connect/helo/mail verdicts wait for RCPT (default 1) */
	char			**options;	/* "key=value" strings from the options group */
	size_t			 noptions;
	/*
	 * An external milter (milter = "unix:PATH" | "inet:HOST:PORT" |
	 * "inet:[IPv6]:PORT", Postfix's smtpd_milters syntax): NULL for
	 * built-in filters and modules.  The address is resolved once, at
	 * load; the filter connects to milter_sa for each SMTP session.
	 */
	char			*milter;
	struct sockaddr_storage	 milter_sa;
	socklen_t		 milter_salen;
	unsigned		 milter_connect;	/* seconds, timeouts.connect (30) */
	unsigned		 milter_command;	/* seconds per reply, timeouts.command (30) */
	unsigned		 milter_content;	/* seconds per reply from DATA on (300) */
	unsigned		 breaker_failures;	/* consecutive failures that open it (5) */
	unsigned		 breaker_open;		/* seconds it stays open (60) */
};

struct config {
	char			*file;
	char			*hostname;		/* banner, Received, authserv-id */
	struct config_listener	*listeners;
	size_t			 nlisteners;
	unsigned		 workers;		/* 0 = one per core */

	enum config_upstream_kind upstream_kind;
	char			*upstream_address;	/* as written */
	char			*upstream_host;		/* SMTP, LMTP over TCP: host part */
	char			*upstream_port;		/* SMTP, LMTP over TCP: port part */
	char			*upstream_unix;		/* LMTP: "lmtp:unix:PATH" socket path */
	char			*upstream_dir;		/* DIR: path */
	char			*upstream_dir_where;	/* "FILE:LINE" of upstream.address */
	char			*upstream_helo;		/* name we send in EHLO, default hostname */
	int			 upstream_xclient;	/* 1 = use XCLIENT/XFORWARD when offered (default) */
	int			 upstream_chunking;	/* 1 = BDAT (RFC 3030) when offered (default) */
	enum config_tls_mode	 upstream_tls;		/* NONE, STARTTLS (default), REQUIRED, VERIFY */
	char			*upstream_tls_name;	/* name to verify, default the host */
	char			*upstream_tls_ca;	/* CA file, default the system store */
	char			*upstream_where;	/* "FILE:LINE" of tls_ca (or upstream.tls) */
	int			 upstream_tls_if_client_tls;	/* no plaintext relay of TLS-received mail */
	unsigned		 upstream_probe_interval;	/* seconds between capability probes, default 300 */
	unsigned		 upstream_pool_size;	/* idle connections kept per worker, 0 = no pool */
	unsigned		 upstream_pool_idle;	/* seconds one is kept, default 30 */

	char			**dns_forward;		/* "127.0.0.1@5353"; none = system resolver */
	int			 dns_reverse;		/* look up clients' names (FCrDNS), default 1 */
	size_t			 ndns_forward;

	struct config_limits	 limits;
	struct config_timeouts	 timeouts;

	char			**relay_domains;	/* lowercase; ".example.com" also matches subdomains */
	size_t			 nrelay_domains;
	struct netaddr_mask	*relay_networks;
	size_t			 nrelay_networks;
	struct config_strset	*relay_index;		/* private; NULL = linear scan of relay_domains */

	struct config_redis	 redis;			/* address NULL: none */

	char			*spool_dir;		/* temp files for large messages, default "/tmp" */
	char			*spool_where;		/* "FILE:LINE" of spool.directory (line 1: default) */

	struct config_policy	 policy_default;
	struct config_policy	*policies;		/* per-domain overrides */
	size_t			 npolicies;
	struct config_strset	*policy_index;		/* private; NULL = linear scan of policies */

	struct config_filter	*filters;		/* in chain order */
	size_t			 nfilters;
	char			*quarantine_dir;	/* NULL: quarantine acts as tempfail */
	char			*quarantine_where;	/* "FILE:LINE" of quarantine.directory */
	char			*authserv_id;		/* default hostname */
	char			*tag_header;		/* default "X-Frontmx-Tag" */
	char			*tag_subject_prefix;	/* default NULL: subject untouched */

	/* milter = { listen; timeout; }: the chain served to an MTA (milter_listen.c) */
	char			*milter_listen;		/* as written; NULL: no milter listener */
	char			*milter_listen_conn;	/* libmilter's spelling: inet:PORT@HOST, unix:PATH */
	char			*milter_where;		/* "FILE:LINE" of milter.listen */
	unsigned		 milter_timeout;	/* seconds libmilter waits for the MTA, default 300 */

	char			*metrics_listen;	/* "127.0.0.1:9125"; NULL: no /metrics */
	struct sockaddr_storage	 metrics_sa;
	socklen_t		 metrics_salen;
	char			*metrics_where;		/* "FILE:LINE" of metrics.listen */
	unsigned		 metrics_connections;	/* concurrent scrapers, default 8 */
	unsigned		 metrics_timeout;	/* seconds a scraper may stay, default 10 */

	int			 refcount;		/* refcount.h */
};

struct config	*config_load(const char *file, char *err, size_t errlen);
void		 config_ref(struct config *);
void		 config_unref(struct config *);

const char	*config_action_name(enum config_action);
int		 config_action_parse(const char *, enum config_action *);

/*
 * The policy.domains entry that lists domain itself (lower case, no
 * trailing dot: policy_lookup() normalises and walks the parents), or
 * NULL.  One hash probe; a struct config built by hand (policy_index
 * NULL) is scanned, any case.
 */
const struct config_policy *
		 config_policy_find(const struct config *, const char *domain);
/* 1 if domain (any case) is in relay.domains (exact, or a ".parent" entry). */
int		 config_relay_domain(const struct config *, const char *domain);
/* 1 if the two redis sections connect the same way (address, password, db). */
int		 config_redis_same(const struct config_redis *, const struct config_redis *);
/* Parse "host:port", "[v6]:port"; 0 ok, -1 bad. Resolves numerics only. */
int		 config_sockaddr_parse(const char *, struct sockaddr_storage *, socklen_t *);

#endif
