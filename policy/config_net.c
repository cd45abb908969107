/*
 * config_net.c - frontmx configuration loader: addresses
 *
 * NAME
 *	config_relay_domain, config_sockaddr_parse - the configuration
 *	sections that are addresses, and the questions asked of them
 *
 * SYNOPSIS
 *	#include "config.h"
 *
 *	int config_relay_domain(const struct config *c, const char *domain);
 *	int config_sockaddr_parse(const char *s, struct sockaddr_storage *ss,
 *	    socklen_t *len);
 *
 * DESCRIPTION
 *	Part of config_load() (config.c), cut out because it is what an
 *	admin's address mistakes meet: listen (addresses, TLS mode, PROXY
 *	protocol, AUTH), upstream (host:port, [IPv6]:port, lmtp:host:port,
 *	lmtp:unix:PATH or dir:PATH, its TLS), dns (resolver addresses) and
 *	relay (domains, networks).
 *	Addresses are numeric only: nothing here resolves a name.
 *
 *	config_relay_domain() answers "do we accept mail for this domain"
 *	from a hash of relay.domains in time proportional to the number of
 *	labels in the domain, not to the size of the list.  Networks
 *	(relay.networks, proxy_from) are parsed and matched by
 *	common/netaddr.c; a network with host bits set is an error in
 *	relay.networks, where "10.1.2.3/8" usually means the admin meant /32.
 */

#include <sys/socket.h>
#include <sys/types.h>

#include <sys/un.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <libconfig.h>
#include <netdb.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "config_int.h"
#include "netaddr.h"
#include "strutil.h"

/* Text of an address in host:port or CIDR form, with scope id. */
#define CONFIG_ADDR_MAX		(INET6_ADDRSTRLEN + IF_NAMESIZE + 16)
#define CONFIG_PROBE_INTERVAL	300	/* seconds between upstream capability probes */
#define CONFIG_POOL_SIZE_MAX	1024	/* idle upstream connections per worker */
#define CONFIG_POOL_IDLE	30	/* seconds a pooled connection waits, default */

#ifndef IF_NAMESIZE
#define IF_NAMESIZE		16
#endif

static const char *const config_keys_listen[] = { "address", "tls", "cert", "key",
	"proxy_protocol", "proxy_from", "auth", NULL };
static const char *const config_keys_upstream[] = { "address", "helo", "xclient",
	"chunking", "tls", "tls_name", "tls_ca", "tls_if_client_tls", "probe_interval", "pool", NULL };
static const char *const config_keys_upstream_pool[] = { "size", "idle", NULL };

static const char *const config_tls_modes[CONFIG_TLS_MODE_COUNT] = {
	[CONFIG_TLS_NONE] = "none",
	[CONFIG_TLS_STARTTLS] = "starttls",
	[CONFIG_TLS_REQUIRED] = "required",
	[CONFIG_TLS_IMPLICIT] = "implicit",
	[CONFIG_TLS_VERIFY] = "verify",
};
static const char *const config_keys_dns[] = { "forward", "reverse", NULL };
static const char *const config_keys_relay[] = { "domains", "networks", NULL };
static const char *const config_keys_redis[] = { "address", "password", "db",
	"timeout", NULL };
static const char *const config_keys_metrics[] = { "listen", "connections",
	"timeout", NULL };

/* metrics.*: scrapers served at once, seconds each may stay (proxy/metrics_http.c). */
#define CONFIG_METRICS_CONNECTIONS	8
#define CONFIG_METRICS_TIMEOUT		10
#define CONFIG_METRICS_TIMEOUT_MAX	300

/* Decimal port, no sign, no junk, at most 5 digits: 0..65535.  0 ok, -1. */
static int
config_port_parse(const char *s, unsigned *port)
{
	unsigned long long	v;

	if (strlen(s) > 5 || str_uint(s, 65535, &v) == -1)
		return -1;
	*port = (unsigned)v;
	return 0;
}

/*
 * Split "host:port" or "[host]:port".  An unbracketed host may not hold a
 * colon: "::1:25" is ambiguous, so IPv6 needs the brackets.
 */
static int
config_hostport_split(const char *s, char *host, size_t hostlen, char *port,
    size_t portlen, int *bracketed)
{
	const char	*h, *e, *p;
	size_t		 n;

	if (s[0] == '[') {
		h = s + 1;
		if ((e = strchr(h, ']')) == NULL || e[1] != ':')
			return -1;
		p = e + 2;
		*bracketed = 1;
	} else {
		h = s;
		if ((e = strchr(s, ':')) == NULL || strchr(e + 1, ':') != NULL)
			return -1;
		p = e + 1;
		*bracketed = 0;
	}
	n = (size_t)(e - h);
	if (n == 0 || n >= hostlen || strlen(p) >= portlen)
		return -1;
	memcpy(host, h, n);
	host[n] = '\0';
	memcpy(port, p, strlen(p) + 1);
	return 0;
}

/* An IPv6 literal, optionally with a %scope (checked by getaddrinfo). */
static int
config_ipv6_valid(const char *s)
{
	char		 buf[INET6_ADDRSTRLEN];
	struct in6_addr	 a;
	size_t		 n;

	n = strcspn(s, "%");
	if (n >= sizeof buf)
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

static int
config_ipv4_valid(const char *s)
{
	struct in_addr	a;

	/* inet_pton, not inet_aton: "127.1" and "0x7f.1" are not addresses here. */
	return inet_pton(AF_INET, s, &a) == 1;
}

static in_port_t
config_sockaddr_port(const struct sockaddr_storage *ss)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof sin);
		return ntohs(sin.sin_port);
	}
	memcpy(&sin6, ss, sizeof sin6);
	return ntohs(sin6.sin6_port);
}

int
config_sockaddr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo	 hints, *res = NULL;
	char		 host[CONFIG_ADDR_MAX], port[8];
	unsigned	 p;
	int		 bracketed;

	if (config_hostport_split(s, host, sizeof host, port, sizeof port,
	    &bracketed) == -1 || config_port_parse(port, &p) == -1)
		return -1;
	/* Brackets mean IPv6 and nothing else; no brackets mean IPv4. */
	if (bracketed ? !config_ipv6_valid(host) : !config_ipv4_valid(host))
		return -1;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = bracketed ? AF_INET6 : AF_INET;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return -1;
	if (res->ai_addrlen > sizeof *ss) {
		freeaddrinfo(res);
		return -1;
	}
	memset(ss, 0, sizeof *ss);
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
config_relay_domain(const struct config *c, const char *domain)
{
	char		 buf[CONFIG_DOMAIN_BUF];
	const char	*p, *e;
	size_t		 len, elen, i;

	if (c == NULL || domain == NULL)
		return 0;
	len = strnlen(domain, sizeof buf);
	if (len == 0 || len >= sizeof buf || domain[0] == '.')
		return 0;
	memcpy(buf, domain, len + 1);
	str_lower(buf);
	if (buf[len - 1] == '.')
		buf[--len] = '\0';
	if (len == 0)
		return 0;

	if (c->relay_index == NULL) {
		/* A struct config built by hand (tests): scan the list. */
		for (i = 0; i < c->nrelay_domains; i++) {
			e = c->relay_domains[i];
			elen = strlen(e);
			if (e[0] == '.' ? len > elen &&
			    strcmp(buf + len - elen, e) == 0 :
			    strcmp(buf, e) == 0)
				return 1;
		}
		return 0;
	}
	/* The name itself, then ".parent" for every parent: one probe a label. */
	if (config_strset_find(c->relay_index, buf) != NULL)
		return 1;
	for (p = strchr(buf, '.'); p != NULL; p = strchr(p + 1, '.'))
		if (config_strset_find(c->relay_index, p) != NULL)
			return 1;
	return 0;
}

/* tls = "none|starttls|required|implicit|verify"; allowed is a mask. */
static int
config_tls_mode(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, unsigned allowed, enum config_tls_mode dflt,
    enum config_tls_mode *out)
{
	const char *v = NULL;
	unsigned m;
	int r;

	*out = dflt;
	if ((r = config_want_string(ctx, g, path, "tls", &v)) != 1)
		return r;
	/* The upstream's STARTTLS-when-offered mode reads better by its name. */
	if (!(allowed & (1u << CONFIG_TLS_IMPLICIT)) &&
	    strcmp(v, "opportunistic") == 0) {
		*out = CONFIG_TLS_STARTTLS;
		return 1;
	}
	for (m = 0; m < CONFIG_TLS_MODE_COUNT; m++)
		if ((allowed & (1u << m)) && strcmp(v, config_tls_modes[m]) == 0) {
			*out = (enum config_tls_mode)m;
			return 1;
		}
	return config_fail(ctx, config_setting_get_member(g, "tls"),
	    "'%s.tls' must be one of %s, not '%s'", path,
	    (allowed & (1u << CONFIG_TLS_IMPLICIT)) ?
	    "none, starttls, required, implicit" :
	    "none, opportunistic, required, verify", v);
}

/* The per-listener keys beyond address: TLS, PROXY protocol, AUTH. */
static int
config_load_listen_extra(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, struct config_listener *l)
{
	const config_setting_t *list = NULL, *e;
	const char *v = NULL;
	int r, i, n, b;

	if (config_tls_mode(ctx, g, path, (1u << CONFIG_TLS_NONE) |
	    (1u << CONFIG_TLS_STARTTLS) | (1u << CONFIG_TLS_REQUIRED) |
	    (1u << CONFIG_TLS_IMPLICIT), CONFIG_TLS_NONE, &l->tls) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, path, "cert", &v)) == -1)
		return -1;
	if (r == 1) {
		l->cert = config_xstrdup(v);
		l->cert_where = config_where(ctx, g, "cert");
	}
	if ((r = config_want_string(ctx, g, path, "key", &v)) == -1)
		return -1;
	if (r == 1) {
		l->key = config_xstrdup(v);
		l->key_where = config_where(ctx, g, "key");
	}
	if (l->tls != CONFIG_TLS_NONE && (l->cert == NULL || l->key == NULL))
		return config_fail(ctx, g, "'%s' has tls = \"%s\" but no cert "
		    "and key", path, config_tls_modes[l->tls]);
	b = 0;
	if (config_want_bool(ctx, g, path, "proxy_protocol", &b) == -1)
		return -1;
	l->proxy_protocol = b;
	if ((r = config_want_strings(ctx, g, path, "proxy_from", &list)) == -1)
		return -1;
	if (r == 1) {
		n = config_setting_length(list);
		l->proxy_from = config_xcalloc((size_t)n + 1, sizeof *l->proxy_from);
		for (i = 0; i < n; i++) {
			e = config_setting_get_elem(list, (unsigned)i);
			v = config_setting_get_string(e);
			if (netaddr_mask_parse(v,
			    &l->proxy_from[l->nproxy_from], NULL) == -1)
				return config_fail(ctx, e, "'%s.proxy_from' entry "
				    "'%s' is not an address or CIDR network",
				    path, v);
			l->nproxy_from++;
		}
	}
	if (l->proxy_protocol && l->nproxy_from == 0)
		return config_fail(ctx, g, "'%s' has proxy_protocol but no "
		    "proxy_from (the addresses allowed to send the header)", path);
	b = 0;
	if (config_want_bool(ctx, g, path, "auth", &b) == -1)
		return -1;
	l->auth = b;
	return 0;
}

int
config_load_listen(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*list = NULL, *g;
	struct config_listener	*l;
	const char		*addr = NULL;
	char			 path[CONFIG_PATH_MAX];
	in_port_t		 port;
	size_t			 j;
	int			 i, n, r;

	if ((r = config_want_group_list(ctx, root, "", "listen", &list)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, root, "missing required key 'listen'");
	if ((n = config_setting_length(list)) == 0)
		return config_fail(ctx, list, "'listen' needs at least one "
		    "{ address = \"IP:port\"; }");
	c->listeners = config_xcalloc((size_t)n, sizeof *c->listeners);
	for (i = 0; i < n; i++) {
		g = config_setting_get_elem(list, (unsigned)i);
		config_path_index(path, sizeof path, "listen", i);
		if (config_check_keys(ctx, g, path, config_keys_listen,
		    sizeof config_keys_listen[0]) == -1)
			return -1;
		if ((r = config_want_string(ctx, g, path, "address", &addr)) == -1)
			return -1;
		if (r == 0)
			return config_fail(ctx, g, "'%s' is missing 'address'",
			    path);
		l = &c->listeners[c->nlisteners];
		l->address = config_xstrdup(addr);
		c->nlisteners++;
		g = config_setting_get_member(g, "address");
		if (config_sockaddr_parse(addr, &l->sa, &l->salen) == -1)
			return config_fail(ctx, g, "'%s.address' must be a "
			    "numeric \"IPv4:port\" or \"[IPv6]:port\", not "
			    "'%s'", path, addr);
		port = config_sockaddr_port(&l->sa);
		/* Port 0 would bind somewhere nobody knows about. */
		if (port == 0)
			return config_fail(ctx, g, "'%s.address' port must be "
			    "1..65535", path);
		if (config_load_listen_extra(ctx, config_setting_get_elem(list,
		    (unsigned)i), path, l) == -1)
			return -1;
		for (j = 0; j + 1 < c->nlisteners; j++)
			if (c->listeners[j].salen == l->salen &&
			    memcmp(&c->listeners[j].sa, &l->sa, l->salen) == 0)
				return config_fail(ctx, g, "duplicate listen "
				    "address '%s'", addr);
	}
	return 0;
}

/*
 * The "host:port" or "[IPv6]:port" of upstream.address (after "lmtp:"
 * when prefix says so) into c->upstream_host and c->upstream_port.
 */
static int
config_upstream_hostport(struct config_ctx *ctx, const config_setting_t *s,
    const char *addr, const char *prefix, struct config *c)
{
	char		 host[CONFIG_ADDR_MAX], port[8];
	unsigned	 p;
	int		 bracketed;

	if (config_hostport_split(addr, host, sizeof host, port,
	    sizeof port, &bracketed) == -1)
		return config_fail(ctx, s, "'upstream.address' must be "
		    "\"%shost:port\", \"%s[IPv6]:port\" or \"%s\", not '%s%s'",
		    prefix, prefix, prefix[0] ? "lmtp:unix:PATH" : "dir:PATH",
		    prefix, addr);
	/* Digits and dots only is meant as IPv4: don't let 1.2.3.999 pass as a name. */
	if (bracketed ? !config_ipv6_valid(host) :
	    strspn(host, "0123456789.") == strlen(host) ?
	    !config_ipv4_valid(host) : !config_domain_valid(host))
		return config_fail(ctx, s, "'upstream.address' has a "
		    "bad host '%s'", host);
	if (config_port_parse(port, &p) == -1 || p == 0)
		return config_fail(ctx, s, "'upstream.address' port "
		    "must be 1..65535, not '%s'", port);
	c->upstream_host = config_xstrdup(host);
	c->upstream_port = config_xstrdup(port);
	return 0;
}

/*
 * upstream.pool = { size; idle; }: idle upstream connections each worker
 * keeps for the next client (proxy/upstream_pool.c).  Absent or size 0:
 * no pool, one connection per client session, as before.
 */
static int
config_load_upstream_pool(struct config_ctx *ctx, const config_setting_t *up,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	long long		 v;
	int			 r;

	c->upstream_pool_size = 0;
	c->upstream_pool_idle = CONFIG_POOL_IDLE;
	if ((r = config_want_group(ctx, up, "upstream", "pool", &g)) == -1)
		return -1;
	if (r == 0)
		return 0;
	if (config_check_keys(ctx, g, "upstream.pool", config_keys_upstream_pool,
	    sizeof config_keys_upstream_pool[0]) == -1)
		return -1;
	if ((r = config_want_int(ctx, g, "upstream.pool", "size", 0,
	    CONFIG_POOL_SIZE_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		c->upstream_pool_size = (unsigned)v;
	if ((r = config_want_int(ctx, g, "upstream.pool", "idle", 1,
	    CONFIG_TIMEOUT_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		c->upstream_pool_idle = (unsigned)v;
	return 0;
}

int
config_load_upstream(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *s;
	const char		*addr = NULL, *helo = NULL;
	long long		 v;
	int			 r;

	if ((r = config_want_group(ctx, root, "", "upstream", &g)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, root, "missing required key 'upstream'");
	if (config_check_keys(ctx, g, "upstream", config_keys_upstream,
	    sizeof config_keys_upstream[0]) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, "upstream", "address", &addr)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'upstream' is missing 'address'");
	s = config_setting_get_member(g, "address");
	c->upstream_address = config_xstrdup(addr);
	if (strncmp(addr, "dir:", 4) == 0) {
		if (addr[4] == '\0')
			return config_fail(ctx, s, "'upstream.address' "
			    "\"dir:\" needs a directory, e.g. \"dir:./maildir\"");
		c->upstream_kind = CONFIG_UPSTREAM_DIR;
		c->upstream_dir = config_xstrdup(addr + 4);
		c->upstream_dir_where = config_where(ctx, g, "address");
	} else if (strncmp(addr, "lmtp:unix:", 10) == 0) {
		/* sun_path holds 108 octets with the NUL (unix(7)). */
		if (addr[10] != '/' || strlen(addr + 10) > 107)
			return config_fail(ctx, s, "'upstream.address' "
			    "\"lmtp:unix:\" needs an absolute socket path of at most "
			    "107 octets, e.g. \"lmtp:unix:/run/dovecot/lmtp\", not '%s'",
			    addr);
		c->upstream_kind = CONFIG_UPSTREAM_LMTP;
		c->upstream_unix = config_xstrdup(addr + 10);
	} else if (strncmp(addr, "lmtp:", 5) == 0) {
		if (config_upstream_hostport(ctx, s, addr + 5, "lmtp:", c) == -1)
			return -1;
		c->upstream_kind = CONFIG_UPSTREAM_LMTP;
	} else {
		if (config_upstream_hostport(ctx, s, addr, "", c) == -1)
			return -1;
		c->upstream_kind = CONFIG_UPSTREAM_SMTP;
	}

	if ((r = config_want_string(ctx, g, "upstream", "helo", &helo)) == -1)
		return -1;
	if (r == 1 && !config_domain_valid(helo))
		return config_fail(ctx, config_setting_get_member(g, "helo"),
		    "'upstream.helo' must be a valid domain name, not '%s'",
		    helo);
	c->upstream_helo = config_xstrdup(r == 1 ? helo : c->hostname);

	c->upstream_xclient = 1;
	if (config_want_bool(ctx, g, "upstream", "xclient",
	    &c->upstream_xclient) == -1)
		return -1;
	c->upstream_chunking = 1;
	if (config_want_bool(ctx, g, "upstream", "chunking",
	    &c->upstream_chunking) == -1)
		return -1;
	if (config_tls_mode(ctx, g, "upstream", (1u << CONFIG_TLS_NONE) |
	    (1u << CONFIG_TLS_STARTTLS) | (1u << CONFIG_TLS_REQUIRED) |
	    (1u << CONFIG_TLS_VERIFY), CONFIG_TLS_STARTTLS, &c->upstream_tls) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, "upstream", "tls_name", &helo)) == -1)
		return -1;
	if (r == 1)
		c->upstream_tls_name = config_xstrdup(helo);
	if ((r = config_want_string(ctx, g, "upstream", "tls_ca", &helo)) == -1)
		return -1;
	if (r == 1)
		c->upstream_tls_ca = config_xstrdup(helo);
	c->upstream_where = config_where(ctx, g, r == 1 ? "tls_ca" : "tls");
	c->upstream_tls_if_client_tls = 0;
	if (config_want_bool(ctx, g, "upstream", "tls_if_client_tls",
	    &c->upstream_tls_if_client_tls) == -1)
		return -1;
	c->upstream_probe_interval = CONFIG_PROBE_INTERVAL;
	if ((r = config_want_int(ctx, g, "upstream", "probe_interval", 1,
	    CONFIG_TIMEOUT_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		c->upstream_probe_interval = (unsigned)v;
	return config_load_upstream_pool(ctx, g, c);
}

int
config_load_dns(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *list = NULL, *e = NULL;
	struct in6_addr		 a6;
	struct in_addr		 a4;
	const char		*s = NULL, *at;
	char			 ip[INET6_ADDRSTRLEN];
	unsigned		 port;
	size_t			 len;
	int			 i, n, r;

	c->dns_reverse = 1;
	if ((r = config_want_group(ctx, root, "", "dns", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "dns", config_keys_dns,
	    sizeof config_keys_dns[0]) == -1)
		return -1;
	if (config_want_bool(ctx, g, "dns", "reverse", &c->dns_reverse) == -1)
		return -1;
	if ((r = config_want_strings(ctx, g, "dns", "forward", &list)) != 1)
		return r;
	n = config_setting_length(list);
	c->dns_forward = config_xcalloc((size_t)n, sizeof *c->dns_forward);
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(list, (unsigned)i);
		s = config_setting_get_string(e);
		/* Last '@': IPv6 has colons, so '@' is the port separator. */
		at = strrchr(s, '@');
		len = at ? (size_t)(at - s) : strlen(s);
		if (len == 0 || len >= sizeof ip)
			goto bad;
		memcpy(ip, s, len);
		ip[len] = '\0';
		if (inet_pton(AF_INET, ip, &a4) != 1 &&
		    inet_pton(AF_INET6, ip, &a6) != 1)
			goto bad;
		if (at != NULL && (config_port_parse(at + 1, &port) == -1 ||
		    port == 0))
			goto bad;
		c->dns_forward[c->ndns_forward++] = config_xstrdup(s);
	}
	return 0;
 bad:
	return config_fail(ctx, e, "'dns.forward' entry '%s' must be \"IP\" "
	    "or \"IP@port\" (port 1..65535)", s);
}

int
config_load_relay(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *list = NULL, *e;
	struct netaddr_mask	*m;
	const char		*s;
	char			 buf[CONFIG_DOMAIN_BUF], net[INET6_ADDRSTRLEN];
	char			*d;
	int			 i, n, r, hostbits;

	if ((r = config_want_group(ctx, root, "", "relay", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "relay", config_keys_relay,
	    sizeof config_keys_relay[0]) == -1)
		return -1;

	if ((r = config_want_strings(ctx, g, "relay", "domains", &list)) == -1)
		return -1;
	if (r == 1) {
		n = config_setting_length(list);
		c->relay_domains = config_xcalloc((size_t)n,
		    sizeof *c->relay_domains);
		c->relay_index = config_strset_new();
		for (i = 0; i < n; i++) {
			e = config_setting_get_elem(list, (unsigned)i);
			s = config_setting_get_string(e);
			if (config_domain_normalize(s, buf, sizeof buf, 1) == -1)
				return config_fail(ctx, e, "'relay.domains' "
				    "entry '%s' is not a valid domain name", s);
			d = config_xstrdup(buf);
			/* A repeat is harmless: keep the first, drop this one. */
			if (config_strset_add(c->relay_index, d, 0) != NULL) {
				free(d);
				continue;
			}
			c->relay_domains[c->nrelay_domains++] = d;
		}
	}

	if ((r = config_want_strings(ctx, g, "relay", "networks", &list)) == -1)
		return -1;
	if (r == 1) {
		n = config_setting_length(list);
		c->relay_networks = config_xcalloc((size_t)n,
		    sizeof *c->relay_networks);
		for (i = 0; i < n; i++) {
			e = config_setting_get_elem(list, (unsigned)i);
			s = config_setting_get_string(e);
			m = &c->relay_networks[i];
			if (netaddr_mask_parse(s, m, &hostbits) == -1)
				return config_fail(ctx, e, "'relay.networks' "
				    "entry '%s' is not an IP address or CIDR "
				    "network", s);
			if (hostbits) {
				if (inet_ntop(m->family, m->addr, net,
				    sizeof net) == NULL)
					net[0] = '\0';
				return config_fail(ctx, e, "'relay.networks' "
				    "entry '%s': host bits set (the network is "
				    "%s/%u)", s, net, m->prefix);
			}
			c->nrelay_networks++;
		}
	}
	return 0;
}

/*
 * milter = { listen = "inet:HOST:PORT" | "inet:[IPv6]:PORT" | "unix:PATH";
 * timeout = SECONDS; }: frontmx also serves its chain as a milter
 * (proxy/milter_listen.c).  The address is written as in Postfix's
 * smtpd_milters, so an admin copies it from main.cf; libmilter spells
 * the same thing "inet:PORT@HOST", "inet6:PORT@HOST" or "unix:PATH"
 * (smfi_setconn(3)), kept in milter_listen_conn.
 */
static const char *const config_keys_milter[] = { "listen", "timeout", NULL };

int
config_load_milter(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *s;
	const char		*addr = NULL;
	char			 host[CONFIG_ADDR_MAX], port[8], conn[CONFIG_ADDR_MAX + 128];
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	long long		 v = 300;
	unsigned		 p;
	int			 r, bracketed;

	/* Absent: no milter listener. */
	if ((r = config_want_group(ctx, root, "", "milter", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "milter", config_keys_milter,
	    sizeof config_keys_milter[0]) == -1)
		return -1;
	if (config_want_int(ctx, g, "milter", "timeout", 1, CONFIG_TIMEOUT_MAX,
	    &v) == -1)
		return -1;
	c->milter_timeout = (unsigned)v;
	if ((r = config_want_string(ctx, g, "milter", "listen", &addr)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'milter' is missing 'listen' "
		    "(\"inet:127.0.0.1:8892\" or \"unix:/run/frontmx/milter.sock\")");
	s = config_setting_get_member(g, "listen");
	if (strncmp(addr, "unix:", 5) == 0) {
		/* sun_path holds 108 octets with the NUL (unix(7)). */
		if (addr[5] != '/' || strlen(addr + 5) > 107)
			return config_fail(ctx, s, "'milter.listen' \"unix:\" needs "
			    "an absolute socket path of at most 107 octets, not '%s'",
			    addr);
		snprintf(conn, sizeof conn, "unix:%s", addr + 5);
	} else if (strncmp(addr, "inet:", 5) == 0) {
		if (config_sockaddr_parse(addr + 5, &ss, &sslen) == -1 ||
		    config_hostport_split(addr + 5, host, sizeof host, port,
		    sizeof port, &bracketed) == -1 ||
		    config_port_parse(port, &p) == -1 || p == 0)
			return config_fail(ctx, s, "'milter.listen' must be "
			    "\"inet:IPv4:PORT\", \"inet:[IPv6]:PORT\" or "
			    "\"unix:PATH\" (numeric address, port 1..65535), "
			    "not '%s'", addr);
		snprintf(conn, sizeof conn, "%s:%s@%s",
		    ss.ss_family == AF_INET6 ? "inet6" : "inet", port, host);
	} else
		return config_fail(ctx, s, "'milter.listen' must be "
		    "\"inet:HOST:PORT\", \"inet:[IPv6]:PORT\" or \"unix:PATH\" "
		    "(Postfix's smtpd_milters syntax), not '%s'", addr);
	c->milter_listen = config_xstrdup(addr);
	c->milter_listen_conn = config_xstrdup(conn);
	c->milter_where = config_where(ctx, g, "listen");
	return 0;
}

/*
 * redis = { address = "127.0.0.1:6379"; password = "..."; db = 0; timeout = 1; };
 * "HOST:port", "[IPv6]:port" or "unix:PATH".  A host name is resolved here,
 * once per load: hiredis would resolve it with a blocking getaddrinfo() on
 * the worker's loop at every connect.
 * The built-in filters that keep their state there (greylist, ratelimit)
 * cannot work without it: such a chain is refused at the filter's line.
 */
int
config_load_redis(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	static const char *const needs[] = { "greylist", "ratelimit", NULL };
	struct addrinfo		 hints, *res = NULL;
	struct sockaddr_un	 sun;
	const config_setting_t	*g = NULL;
	const char		*addr = NULL, *pw = NULL;
	char			 host[CONFIG_ADDR_MAX], port[8];
	unsigned		 p;
	long long		 v;
	size_t			 i, k;
	int			 r, br;

	c->redis.timeout = 1;
	if ((r = config_want_group(ctx, root, "", "redis", &g)) == -1)
		return -1;
	if (r == 0) {
		for (i = 0; i < c->nfilters; i++)
			for (k = 0; needs[k] != NULL; k++)
				if (c->filters[i].module == NULL &&
				    strcmp(c->filters[i].name, needs[k]) == 0) {
					snprintf(ctx->err, ctx->errlen, "%s: filter %s "
					    "keeps its state in Redis: add a redis "
					    "section (redis = { address = "
					    "\"127.0.0.1:6379\"; };)",
					    c->filters[i].where ? c->filters[i].where :
					    ctx->file, needs[k]);
					return -1;
				}
		return 0;
	}
	if (config_check_keys(ctx, g, "redis", config_keys_redis,
	    sizeof config_keys_redis[0]) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, "redis", "address", &addr)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'redis' is missing 'address' "
		    "(\"127.0.0.1:6379\", \"[::1]:6379\" or \"unix:PATH\")");
	if (strncmp(addr, "unix:", 5) == 0) {
		if (addr[5] != '/' || strlen(addr + 5) >= sizeof sun.sun_path)
			return config_fail(ctx, config_setting_get_member(g,
			    "address"), "'redis.address' \"%s\": unix:PATH needs "
			    "an absolute path of at most %zu bytes", addr,
			    sizeof sun.sun_path - 1);
		c->redis.unix_path = config_xstrdup(addr + 5);
	} else {
		if (config_hostport_split(addr, host, sizeof host, port,
		    sizeof port, &br) == -1 ||
		    config_port_parse(port, &p) == -1 || p == 0 ||
		    (br && !config_ipv6_valid(host)))
			return config_fail(ctx, config_setting_get_member(g,
			    "address"), "'redis.address' \"%s\" must be "
			    "\"HOST:port\", \"[IPv6]:port\" or \"unix:PATH\"",
			    addr);
		/*
		 * A name is resolved now, at start or SIGHUP: hiredis would
		 * call a blocking getaddrinfo() on the worker's loop.
		 */
		if (!br && !config_ipv4_valid(host)) {
			memset(&hints, 0, sizeof hints);
			hints.ai_family = AF_UNSPEC;
			hints.ai_socktype = SOCK_STREAM;
			if ((r = getaddrinfo(host, NULL, &hints, &res)) != 0 ||
			    res == NULL)
				return config_fail(ctx, config_setting_get_member(g,
				    "address"), "'redis.address' \"%s\": cannot "
				    "resolve %s: %s", addr, host, gai_strerror(r));
			r = getnameinfo(res->ai_addr, res->ai_addrlen, host,
			    sizeof host, NULL, 0, NI_NUMERICHOST);
			freeaddrinfo(res);
			if (r != 0)
				return config_fail(ctx, config_setting_get_member(g,
				    "address"), "'redis.address' \"%s\": %s", addr,
				    gai_strerror(r));
		}
		c->redis.host = config_xstrdup(host);
		c->redis.port = p;
	}
	c->redis.address = config_xstrdup(addr);
	c->redis.where = config_where(ctx, g, "address");
	if ((r = config_want_string(ctx, g, "redis", "password", &pw)) == -1)
		return -1;
	if (r == 1) {
		if (*pw == '\0' || strlen(pw) > CONFIG_REDIS_PASSWORD_MAX)
			return config_fail(ctx, config_setting_get_member(g,
			    "password"), "'redis.password' must be 1 to %d "
			    "characters", CONFIG_REDIS_PASSWORD_MAX);
		c->redis.password = config_xstrdup(pw);
	}
	v = 0;
	if (config_want_int(ctx, g, "redis", "db", 0, 65535, &v) == -1)
		return -1;
	c->redis.db = (unsigned)v;
	v = c->redis.timeout;
	if (config_want_int(ctx, g, "redis", "timeout", 1, 3600, &v) == -1)
		return -1;
	c->redis.timeout = (unsigned)v;
	return 0;
}

void
config_free_redis(struct config_redis *r)
{
	free(r->address);
	free(r->host);
	free(r->unix_path);
	free(r->password);
	free(r->where);
}

static int
config_str_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
	    (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
config_redis_same(const struct config_redis *a, const struct config_redis *b)
{
	return config_str_same(a->address, b->address) &&
	    config_str_same(a->password, b->password) && a->db == b->db;
}

/*
 * metrics = { listen = "127.0.0.1:9125"; connections = 8; timeout = 10; }:
 * where GET /metrics is served (proxy/metrics_http.c).  Absent: not
 * served.
 */
int
config_load_metrics(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*addr = NULL;
	long long		 v = CONFIG_METRICS_CONNECTIONS;
	int			 r;

	c->metrics_connections = CONFIG_METRICS_CONNECTIONS;
	c->metrics_timeout = CONFIG_METRICS_TIMEOUT;
	if ((r = config_want_group(ctx, root, "", "metrics", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "metrics", config_keys_metrics,
	    sizeof config_keys_metrics[0]) == -1)
		return -1;
	if (config_want_int(ctx, g, "metrics", "connections", 1,
	    CONFIG_METRICS_CONNECTIONS_MAX, &v) == -1)
		return -1;
	c->metrics_connections = (unsigned)v;
	v = CONFIG_METRICS_TIMEOUT;
	if (config_want_int(ctx, g, "metrics", "timeout", 1,
	    CONFIG_METRICS_TIMEOUT_MAX, &v) == -1)
		return -1;
	c->metrics_timeout = (unsigned)v;
	if ((r = config_want_string(ctx, g, "metrics", "listen", &addr)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'metrics' is missing 'listen'");
	c->metrics_where = config_where(ctx, g, "listen");
	g = config_setting_get_member(g, "listen");
	if (config_sockaddr_parse(addr, &c->metrics_sa, &c->metrics_salen) == -1)
		return config_fail(ctx, g, "'metrics.listen' must be a numeric "
		    "\"IPv4:port\" or \"[IPv6]:port\", not '%s'", addr);
	if (config_sockaddr_port(&c->metrics_sa) == 0)
		return config_fail(ctx, g, "'metrics.listen' port must be "
		    "1..65535");
	c->metrics_listen = config_xstrdup(addr);
	return 0;
}
