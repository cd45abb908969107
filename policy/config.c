/*
 * config.c - frontmx configuration loader
 *
 * NAME
 *	config_load, config_ref, config_unref, config_action_name,
 *	config_action_parse, config_netmask_parse, config_netmask_match,
 *	config_relay_domain, config_sockaddr_parse - read and query the
 *	frontmx configuration
 *
 * SYNOPSIS
 *	#include "config.h"
 *
 *	struct config *config_load(const char *file, char *err, size_t errlen);
 *	void config_ref(struct config *c);
 *	void config_unref(struct config *c);
 *
 *	int config_relay_domain(const struct config *c, const char *domain);
 *	int config_netmask_match(const struct config_netmask *m, size_t n,
 *	    const struct sockaddr *sa);
 *
 * DESCRIPTION
 *	config_load() reads a libconfig file (see conf/frontmx.conf for every
 *	key, its meaning and its default) into a freshly allocated, immutable
 *	struct config with a reference count of 1.  The whole file is
 *	checked before anything is returned: an unknown key at any level, a
 *	value of the wrong type, a value out of range or a malformed address,
 *	domain, network or action is an error.  Nothing is half-applied.
 *
 *	config_ref() and config_unref() count references atomically, so any
 *	thread may drop the last one; the last config_unref() frees the
 *	configuration and every string in it.  Taking a reference from a
 *	shared pointer that another thread may swap concurrently is the
 *	caller's problem (swap and ref under the same lock, or on one thread).
 *
 *	config_relay_domain() answers "do we accept mail for this domain"
 *	from a hash of relay.domains in time proportional to the number of
 *	labels in the domain, not to the size of the list.  For the same
 *	reason config_load() ends with policy_index_build() (policy.c), the
 *	hash behind policy_lookup(); config_unref() frees it.
 *
 *	The filters list names the chain: an entry without module must name
 *	a built-in filter (config_builtin_results[]), names are unique, and
 *	options are kept as "key=value" strings in file order for the
 *	module's init().  authserv_id (default hostname) must be an RFC 2045
 *	token, tag.header a field name and tag.subject_prefix free of
 *	control characters: all three end up in header fields.
 *
 * DIAGNOSTICS
 *	config_load() returns NULL and writes one line into err:
 *	"FILE: cannot open: REASON" when the file can't be read, otherwise
 *	"FILE:LINE: MESSAGE".  Only the first error is reported.  A message
 *	longer than errlen is cut short; that loses words, never safety.
 *
 * BUGS
 *	libconfig 1.5 silently wraps an integer literal above 2^31-1 that has
 *	no L suffix.  config_int_literal_check() re-reads the literal from the
 *	file and turns the wrap into an error that asks for the suffix.
 *
 *	@include paths are relative to the working directory, as libconfig
 *	1.5 resolves them; setting its include_dir would break absolute ones.
 */

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "policy.h"
#include "strutil.h"

/* RFC 1035 2.3.4: 255 octets on the wire is 253 characters in text. */
#define CONFIG_DOMAIN_MAX	253
#define CONFIG_LABEL_MAX	63
/* Room for a leading ".", a trailing "." and the NUL. */
#define CONFIG_DOMAIN_BUF	(CONFIG_DOMAIN_MAX + 3)
/* Dotted key paths in messages: "policy.domains[12].spf". */
#define CONFIG_PATH_MAX		128
/* Filter and result names; also bounds the edit-distance rows. */
#define CONFIG_NAME_MAX		32
/* Text of an address in host:port or CIDR form, with scope id. */
#define CONFIG_ADDR_MAX		(INET6_ADDRSTRLEN + IF_NAMESIZE + 16)
/* How much source text config_int_literal_check() looks at. */
#define CONFIG_SCAN_MAX		4096
#define CONFIG_WORKERS_MAX	64
#define CONFIG_TIMEOUT_MAX	86400
#define CONFIG_PROBE_INTERVAL	300	/* seconds between upstream capability probes */
/* filters[].timeout: one hook call; an hour is already a stuck filter. */
#define CONFIG_FILTER_TIMEOUT_MAX 3600
#define CONFIG_FILTER_TIMEOUT	30
/* tag.header: RFC 5322 sets no limit; 64 keeps the field on one line. */
#define CONFIG_HEADER_NAME_MAX	64
/*
 * limits.pipeline_backlog: the session must hold its longest line whole.
 * A text line is 1000 octets with CRLF (RFC 5321 4.5.3.1.6), and one more
 * octet shows that a line is too long; an AUTH line is 12288 plus CRLF
 * (RFC 4954 4).  The same numbers as SMTP_TEXT_LINE_MAX + 1 and
 * SMTP_AUTH_LINE_MAX in proxy/.
 */
#define CONFIG_BACKLOG_MIN	1001
#define CONFIG_BACKLOG_MIN_AUTH	12290
/* tag.subject_prefix: a prefix, not a subject. */
#define CONFIG_SUBJECT_PREFIX_MAX 128
#define CONFIG_TAG_HEADER	"X-Frontmx-Tag"

#ifndef IF_NAMESIZE
#define IF_NAMESIZE		16
#endif

/*
 * relay.domains can hold thousands of names and is consulted for every
 * RCPT, so it gets a hash set: open addressing, linear probing, a
 * power-of-two table kept at most half full, FNV-1a.  Not hsearch_r(3):
 * its ENTRY key is a non-const char * (a cast under -Wcast-qual), FIND
 * takes a non-const table so many worker threads reading it at once would
 * lean on an unwritten promise, the size is fixed at creation, and it is
 * a GNU extension.  This one is short, const-correct and read-only after
 * config_load(), so every worker can query it without a lock.  The keys
 * are chosen by the admin, not the peer, so probe lengths can't be
 * steered by an attacker.
 */
struct config_strset_slot {
	const char	*key;		/* NULL = empty; owned by the caller */
	unsigned	 value;		/* caller's tag: a line number */
};

struct config_strset {
	struct config_strset_slot	*slots;
	size_t				 mask;	/* capacity - 1 */
	size_t				 count;
};

/* Where errors go while one file is being loaded. */
struct config_ctx {
	const char	*file;
	char		*err;
	size_t		 errlen;
};

/* limits.* : one row per key, so defaults, ranges and the key check agree. */
struct config_limit_row {
	const char	*name;		/* first: config_check_keys() reads it */
	size_t		 offset;	/* into struct config_limits */
	long long	 min;
	size_t		 dflt;
	long long	 max;		/* 0: what size_t holds */
};

static const struct config_limit_row config_limit_rows[] = {
	{ "message_size",	offsetof(struct config_limits, message_size),	1024, 26214400, 0 },
	{ "header_size",	offsetof(struct config_limits, header_size),	1, 102400, 0 },
	{ "recipients",		offsetof(struct config_limits, recipients),	1, 1000, 0 },
	{ "connections_per_ip",	offsetof(struct config_limits, connections_per_ip), 0, 50, 0 },
	{ "connections",	offsetof(struct config_limits, connections),	1, 10000, 0 },
	{ "errors",		offsetof(struct config_limits, errors),		1, 20, 0 },
	{ "spool_memory",	offsetof(struct config_limits, spool_memory),	1, 1048576, 0 },
	{ "pipeline_backlog",	offsetof(struct config_limits, pipeline_backlog), 1, 65536, 0 },
	/*
	 * RFC 5321 4.5.3.1.6 by default; an admin may let longer lines
	 * through (the upstream then decides), up to 1 MiB, which bounds
	 * the line buffers of the session and of the filters.
	 */
	{ "line_length",	offsetof(struct config_limits, line_length),	1000, 1000,
	    CONFIG_LINE_LENGTH_MAX },
	{ NULL, 0, 0, 0, 0 }
};

/* timeouts.* in seconds; RFC 5321 4.5.3.2 gives the SMTP ones. */
struct config_timeout_row {
	const char	*name;
	size_t		 offset;	/* into struct config_timeouts */
	unsigned	 dflt;
};

static const struct config_timeout_row config_timeout_rows[] = {
	{ "command",		offsetof(struct config_timeouts, command),		300 },
	{ "data_block",		offsetof(struct config_timeouts, data_block),		180 },
	{ "data",		offsetof(struct config_timeouts, data),			3600 },
	{ "upstream_connect",	offsetof(struct config_timeouts, upstream_connect),	30 },
	{ "upstream_command",	offsetof(struct config_timeouts, upstream_command),	300 },
	{ "upstream_data_end",	offsetof(struct config_timeouts, upstream_data_end),	600 },
	{ "shutdown_grace",	offsetof(struct config_timeouts, shutdown_grace),	30 },
	{ "dns",		offsetof(struct config_timeouts, dns),			5 },
	{ NULL, 0, 0 }
};

static const char *const config_keys_root[] = {
	"hostname", "workers", "listen", "upstream", "dns", "limits",
	"timeouts", "relay", "spool", "policy", "filters", "quarantine",
	"authserv_id", "tag", NULL
};
static const char *const config_keys_listen[] = { "address", "tls", "cert", "key",
	"proxy_protocol", "proxy_from", "auth", NULL };
static const char *const config_keys_upstream[] = { "address", "helo", "xclient",
	"tls", "tls_name", "tls_ca", "tls_if_client_tls", "probe_interval", NULL };

static const char *const config_tls_modes[CONFIG_TLS_MODE_COUNT] = {
	[CONFIG_TLS_NONE] = "none",
	[CONFIG_TLS_STARTTLS] = "starttls",
	[CONFIG_TLS_REQUIRED] = "required",
	[CONFIG_TLS_IMPLICIT] = "implicit",
	[CONFIG_TLS_VERIFY] = "verify",
};
static const char *const config_keys_dns[] = { "forward", "reverse", NULL };
static const char *const config_keys_relay[] = { "domains", "networks", NULL };
static const char *const config_keys_spool[] = { "directory", NULL };
static const char *const config_keys_policy[] = { "default", "domains", NULL };
static const char *const config_keys_filter[] = {
	"name", "module", "timeout", "on_error", "dry_run", "delay_reject",
	"options", NULL
};
static const char *const config_keys_quarantine[] = { "directory", NULL };
static const char *const config_keys_tag[] = { "header", "subject_prefix", NULL };

/*
 * Filters built into the daemon (config_builtin_results[] below): a
 * `filters` entry without `module` must name one of these.  Adding a
 * built-in filter means adding its row there (and its code in filters/);
 * nothing else in the loader changes.
 *
 * The result names each built-in filter gives api->set_result(), the keys
 * its policy group may map to actions ("on_error" is the core's, valid for
 * every filter).  Keep in step with the filter: content.c content_actions[]
 * and "mime_limit"; spf.c spf_result_names[]; dkim.c dkim_res_msg[] and
 * "sign_error"; dmarc.c's set_result() calls.  A module's results are not
 * knowable here (it may name any), so its groups take any valid name.
 */
static const char *const config_results_content[] = {
	"accept", "tag", "quarantine", "tempfail", "reject", "discard",
	"warn", "mime_limit", "on_error", NULL
};
static const char *const config_results_spf[] = {
	"none", "neutral", "pass", "fail", "softfail", "temperror",
	"permerror", "on_error", NULL
};
static const char *const config_results_dkim[] = {
	"none", "permerror", "fail", "neutral", "temperror", "pass",
	"sign_error", "on_error", NULL
};
static const char *const config_results_dmarc[] = {
	"none", "pass", "fail", "reject", "quarantine", "temperror",
	"permerror", "on_error", NULL
};
static const struct config_builtin_results {
	const char		*name;	/* first: config_suggest() reads it */
	const char *const	*results;
} config_builtin_results[] = {
	{ "content", config_results_content },
	{ "spf", config_results_spf },
	{ "dkim", config_results_dkim },
	{ "dmarc", config_results_dmarc },
	{ NULL, NULL }
};

static const char *const config_action_names[CONFIG_ACTION_COUNT] = {
	[CONFIG_ACTION_ACCEPT]		= "accept",
	[CONFIG_ACTION_TAG]		= "tag",
	[CONFIG_ACTION_QUARANTINE]	= "quarantine",
	[CONFIG_ACTION_TEMPFAIL]	= "tempfail",
	[CONFIG_ACTION_REJECT]		= "reject",
	[CONFIG_ACTION_DISCARD]		= "discard",
};

#define CONFIG_ACTIONS_EXPECTED \
	"accept, tag, quarantine, tempfail, reject or discard"

static void	 config_free(struct config *);
static int	 config_fail(struct config_ctx *, const config_setting_t *,
		    const char *, ...) __attribute__((format(printf, 3, 4)));

/*
 * Memory.  Running out while loading configuration is not something we
 * can report usefully to the peer; the style rule is that x*alloc aborts.
 */

__attribute__((noreturn))
static void
config_oom(void)
{
	fputs("frontmx: config: out of memory\n", stderr);
	abort();
}

static void *
config_xcalloc(size_t n, size_t size)
{
	void	*p;

	/* calloc(0) may return NULL; callers index nothing, so ask for one. */
	if ((p = calloc(n ? n : 1, size ? size : 1)) == NULL)
		config_oom();
	return p;
}

static char *
config_xstrdup(const char *s)
{
	char	*p;

	if ((p = strdup(s)) == NULL)
		config_oom();
	return p;
}

/*
 * The string set.
 */

static struct config_strset *
config_strset_new(void)
{
	struct config_strset	*set;

	set = config_xcalloc(1, sizeof *set);
	set->slots = config_xcalloc(16, sizeof *set->slots);
	set->mask = 15;
	return set;
}

static void
config_strset_free(struct config_strset *set)
{
	if (set == NULL)
		return;
	free(set->slots);
	free(set);
}

static const struct config_strset_slot *
config_strset_find(const struct config_strset *set, const char *key)
{
	size_t	i;

	/* Never full (load <= 1/2), so the probe always meets an empty slot. */
	for (i = (size_t)str_hash(key) & set->mask; set->slots[i].key != NULL;
	    i = (i + 1) & set->mask)
		if (strcmp(set->slots[i].key, key) == 0)
			return &set->slots[i];
	return NULL;
}

static void
config_strset_grow(struct config_strset *set)
{
	struct config_strset_slot	*old = set->slots;
	size_t				 oldcap = set->mask + 1, i, j;

	if (oldcap > SIZE_MAX / 2 / sizeof *old)
		config_oom();
	set->slots = config_xcalloc(oldcap * 2, sizeof *old);
	set->mask = oldcap * 2 - 1;
	for (i = 0; i < oldcap; i++) {
		if (old[i].key == NULL)
			continue;
		for (j = (size_t)str_hash(old[i].key) & set->mask;
		    set->slots[j].key != NULL; j = (j + 1) & set->mask)
			;
		set->slots[j] = old[i];
	}
	free(old);
}

/* Insert key (not copied); returns NULL, or the slot that already had it. */
static const struct config_strset_slot *
config_strset_add(struct config_strset *set, const char *key, unsigned value)
{
	const struct config_strset_slot	*dup;
	size_t				 i;

	if ((dup = config_strset_find(set, key)) != NULL)
		return dup;
	if ((set->count + 1) * 2 > set->mask + 1)
		config_strset_grow(set);
	for (i = (size_t)str_hash(key) & set->mask; set->slots[i].key != NULL;
	    i = (i + 1) & set->mask)
		;
	set->slots[i].key = key;
	set->slots[i].value = value;
	set->count++;
	return NULL;
}

/*
 * Small parsers shared by the loader and the public helpers.
 */

/* RFC 1035 host name syntax: letters, digits, inner hyphens, 63/253. */
static int
config_domain_valid(const char *s)
{
	size_t	len = 0, label = 0;

	for (; *s != '\0'; s++, len++) {
		if (*s == '.') {
			if (label == 0 || s[-1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-'))
			return 0;
		if (*s == '-' && label == 0)
			return 0;
		if (++label > CONFIG_LABEL_MAX)
			return 0;
	}
	return len > 0 && len <= CONFIG_DOMAIN_MAX && label > 0 &&
	    s[-1] != '-';
}

/*
 * Lower-case s into buf, drop one trailing dot (the root, which lookups
 * ignore too) and check the syntax.  With lead_dot a leading "." is kept:
 * it is relay.domains' "and subdomains" marker.  0 ok, -1 bad.
 */
static int
config_domain_normalize(const char *s, char *buf, size_t size, int lead_dot)
{
	size_t	len;

	len = strlen(s);
	if (len == 0 || len >= size)
		return -1;
	memcpy(buf, s, len + 1);
	str_lower(buf);
	if (buf[len - 1] == '.')
		buf[--len] = '\0';
	if (lead_dot && buf[0] == '.')
		return config_domain_valid(buf + 1) ? 0 : -1;
	return config_domain_valid(buf) ? 0 : -1;
}

/* Filter and result names: [a-z][a-z0-9_]*, short. */
static int
config_name_valid(const char *s)
{
	size_t	i;

	if (!(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return i < CONFIG_NAME_MAX;
}

/*
 * Filter names: [a-z][a-z0-9_-]*, short.  The hyphen is allowed (unlike
 * in result names) because instance names like "rcpt-allow" are common
 * and libconfig accepts them as setting names in policy groups too.
 */
static int
config_filter_name_valid(const char *s)
{
	size_t	i;

	if (!(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 1; s[i] != '\0'; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return 0;
	return i < CONFIG_NAME_MAX;
}

static int
config_filter_builtin(const char *name)
{
	size_t	i;

	for (i = 0; config_builtin_results[i].name != NULL; i++)
		if (strcmp(config_builtin_results[i].name, name) == 0)
			return 1;
	return 0;
}

/* Decimal port, no sign, no leading junk: 0..65535.  0 ok, -1 bad. */
static int
config_port_parse(const char *s, unsigned *port)
{
	unsigned long	v = 0;
	size_t		i;

	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9' || i >= 5)
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (i == 0 || v > 65535)
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

/* Compare the first prefix bits of a and b. */
static int
config_prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
	unsigned	bytes = prefix / 8, bits = prefix % 8;
	uint8_t		mask;

	if (memcmp(a, b, bytes) != 0)
		return 0;
	if (bits == 0)
		return 1;
	mask = (uint8_t)(0xff << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

/*
 * The netmask parser behind both config_netmask_parse() and the loader.
 * *hostbits tells whether the address had bits set past the prefix: the
 * public parser just clears them, the loader calls it a mistake, because
 * "10.1.2.3/8" in relay.networks usually means the admin meant /32.
 */
static int
config_netmask_parse_bits(const char *s, struct config_netmask *m, int *hostbits)
{
	static const uint8_t	 mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char			 buf[INET6_ADDRSTRLEN];
	const char		*slash;
	uint8_t			 orig[16];
	unsigned		 prefix, max, i;
	size_t			 n;

	memset(m, 0, sizeof *m);
	slash = strchr(s, '/');
	n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, m->addr) == 1) {
		m->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, m->addr) == 1) {
		m->family = AF_INET6;
		max = 128;
	} else
		return -1;
	prefix = max;
	if (slash != NULL) {
		/* Digits only: strtoul would take " 8", "+8" and "0x8". */
		if (slash[1] == '\0' || strlen(slash + 1) > 3)
			return -1;
		for (prefix = 0, i = 1; slash[i] != '\0'; i++) {
			if (slash[i] < '0' || slash[i] > '9')
				return -1;
			prefix = prefix * 10 + (unsigned)(slash[i] - '0');
		}
		if (prefix > max)
			return -1;
	}
	memcpy(orig, m->addr, sizeof orig);
	for (i = prefix; i < max; i++)
		m->addr[i / 8] &= (uint8_t)~(0x80 >> (i % 8));
	*hostbits = memcmp(orig, m->addr, max / 8) != 0;
	/*
	 * "::ffff:192.0.2.0/120" is an IPv4 network written the IPv6 way;
	 * store it as IPv4 so it matches plain AF_INET peers as well.
	 */
	if (m->family == AF_INET6 && prefix >= 96 &&
	    memcmp(m->addr, mapped, sizeof mapped) == 0) {
		memmove(m->addr, m->addr + 12, 4);
		memset(m->addr + 4, 0, 12);
		m->family = AF_INET;
		prefix -= 96;
	}
	m->prefix = prefix;
	return 0;
}

/*
 * Public helpers.
 */

const char *
config_action_name(enum config_action a)
{
	/*
	 * A bad value is a broken invariant, but this runs in log paths; a
	 * visible "invalid" in a log line beats taking the daemon down.
	 */
	if ((unsigned)a >= CONFIG_ACTION_COUNT)
		return "invalid";
	return config_action_names[a];
}

int
config_action_parse(const char *s, enum config_action *a)
{
	unsigned	i;

	/* Exact lower case: the same word must mean the same thing everywhere. */
	for (i = 0; i < CONFIG_ACTION_COUNT; i++)
		if (strcmp(s, config_action_names[i]) == 0) {
			*a = (enum config_action)i;
			return 0;
		}
	return -1;
}

int
config_netmask_parse(const char *s, struct config_netmask *m)
{
	int	hostbits;

	return config_netmask_parse_bits(s, m, &hostbits);
}

int
config_netmask_match(const struct config_netmask *m, size_t n,
    const struct sockaddr *sa)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;
	uint8_t			a4[4], a6[16];
	int			has4 = 0, has6 = 0;
	size_t			i;

	if (sa == NULL)
		return 0;
	/* memcpy, not a cast: sa may point into any byte buffer. */
	switch (sa->sa_family) {
	case AF_INET:
		memcpy(&sin, sa, sizeof sin);
		memcpy(a4, &sin.sin_addr, 4);
		has4 = 1;
		break;
	case AF_INET6:
		memcpy(&sin6, sa, sizeof sin6);
		memcpy(a6, &sin6.sin6_addr, 16);
		has6 = 1;
		/* A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d. */
		if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
			memcpy(a4, a6 + 12, 4);
			has4 = 1;
		}
		break;
	default:
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (m[i].family == AF_INET && has4 &&
		    config_prefix_equal(m[i].addr, a4, m[i].prefix))
			return 1;
		if (m[i].family == AF_INET6 && has6 &&
		    config_prefix_equal(m[i].addr, a6, m[i].prefix))
			return 1;
	}
	return 0;
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

void
config_ref(struct config *c)
{
	if (c != NULL)
		__atomic_add_fetch(&c->refcount, 1, __ATOMIC_RELAXED);
}

void
config_unref(struct config *c)
{
	/* acq_rel: whoever frees must see every other holder's last reads. */
	if (c != NULL &&
	    __atomic_sub_fetch(&c->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		config_free(c);
}

/*
 * Error reporting and key paths.
 */

static void
config_errf(struct config_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
config_errf(struct config_ctx *ctx, const char *fmt, ...)
{
	va_list	ap;

	if (ctx->err == NULL || ctx->errlen == 0)
		return;
	va_start(ap, fmt);
	/* Truncation only shortens the message; the NUL is always there. */
	(void)vsnprintf(ctx->err, ctx->errlen, fmt, ap);
	va_end(ap);
}

/* The file and line of setting s (NULL or the root: line 1). */
static const char *
config_source(struct config_ctx *ctx, const config_setting_t *s,
    unsigned *line)
{
	const char	*file = ctx->file;

	*line = 0;
	if (s != NULL) {
		if (config_setting_source_file(s) != NULL)
			file = config_setting_source_file(s);
		*line = config_setting_source_line(s);
	}
	/*
	 * The root setting has no line.  Callers grep for "file:line:", and
	 * the top of the file is where a missing top-level key belongs.
	 */
	if (*line == 0)
		*line = 1;
	return file;
}

/* "FILE:LINE: message" for setting s. */
static int
config_fail(struct config_ctx *ctx, const config_setting_t *s,
    const char *fmt, ...)
{
	char		 msg[CONFIG_ERR_MAX], *p;
	const char	*file;
	unsigned	 line;
	va_list		 ap;

	file = config_source(ctx, s, &line);
	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/*
	 * msg quotes values of the file, where "\n" is a newline: the
	 * error must stay one line for -t and the log.
	 */
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p == 0x7f)
			*p = '?';
	config_errf(ctx, "%s:%u: %s", file, line, msg);
	return -1;
}

/*
 * "FILE:LINE" of member name of g (of g itself when it has none), kept
 * for errors found after parsing: a certificate or module that cannot be
 * loaded is reported at the line that names it.
 */
static char *
config_where(struct config_ctx *ctx, const config_setting_t *g,
    const char *name)
{
	const config_setting_t	*m = NULL;
	const char		*file;
	unsigned		 line;
	char			 buf[PATH_MAX + 16];

	/* g is NULL for a group left out: its defaults belong to line 1. */
	if (name != NULL && g != NULL)
		m = config_setting_get_member(g, name);
	file = config_source(ctx, m != NULL ? m : g, &line);
	(void)snprintf(buf, sizeof buf, "%s:%u", file, line);
	return config_xstrdup(buf);
}

/* parent + "." + name into buf; a path too long for buf ends in "...". */
static const char *
config_path(char *buf, size_t size, const char *parent, const char *name)
{
	int	n;

	if (parent[0] == '\0')
		n = snprintf(buf, size, "%s", name);
	else
		n = snprintf(buf, size, "%s.%s", parent, name);
	if (n < 0 || (size_t)n >= size)
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

static const char *
config_path_index(char *buf, size_t size, const char *parent, int i)
{
	int	n;

	n = snprintf(buf, size, "%s[%d]", parent, i);
	if (n < 0 || (size_t)n >= size)
		memcpy(buf + size - 4, "...", 4);
	return buf;
}

/* Levenshtein distance, capped: only used to suggest a close key. */
static size_t
config_edit_distance(const char *a, const char *b)
{
	size_t	row[2][CONFIG_NAME_MAX + 1], la, lb, i, j, cost, v;

	la = strlen(a);
	lb = strlen(b);
	if (la > CONFIG_NAME_MAX || lb > CONFIG_NAME_MAX)
		return SIZE_MAX;
	for (j = 0; j <= lb; j++)
		row[0][j] = j;
	for (i = 1; i <= la; i++) {
		row[i % 2][0] = i;
		for (j = 1; j <= lb; j++) {
			cost = a[i - 1] == b[j - 1] ? 0 : 1;
			v = row[(i - 1) % 2][j - 1] + cost;
			if (row[(i - 1) % 2][j] + 1 < v)
				v = row[(i - 1) % 2][j] + 1;
			if (row[i % 2][j - 1] + 1 < v)
				v = row[i % 2][j - 1] + 1;
			row[i % 2][j] = v;
		}
	}
	return row[la % 2][lb];
}

/*
 * Look name up in rows, an array of structs (or of plain strings) whose
 * first member is the const char * name, ending with a NULL name; stride
 * is the row size.  1 if found; else 0 and *best the closest name within
 * two edits, or NULL.  This lets the limits table serve as its own list
 * of keys.
 */
static int
config_suggest(const char *name, const void *rows, size_t stride,
    const char **best)
{
	const char	*key;
	size_t		 d, bestd, j;

	*best = NULL;
	bestd = 3;	/* suggest only within two edits */
	for (j = 0;; j++) {
		memcpy(&key, (const char *)rows + j * stride, sizeof key);
		if (key == NULL)
			return 0;
		if (strcmp(key, name) == 0)
			return 1;
		if ((d = config_edit_distance(name, key)) < bestd) {
			bestd = d;
			*best = key;
		}
	}
}

/* Reject every member of group whose name is not in rows (config_suggest). */
static int
config_check_keys(struct config_ctx *ctx, const config_setting_t *group,
    const char *path, const void *rows, size_t stride)
{
	const config_setting_t	*m;
	const char		*name, *best;
	int			 i, n;

	n = config_setting_length(group);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(group, (unsigned)i);
		if ((name = config_setting_name(m)) == NULL)
			continue;
		if (config_suggest(name, rows, stride, &best))
			continue;
		return config_fail(ctx, m, "unknown key '%s' %s%s%s%s%s%s", name,
		    path[0] ? "in '" : "at top level", path, path[0] ? "'" : "",
		    best ? " (did you mean '" : "", best ? best : "",
		    best ? "'?)" : "");
	}
	return 0;
}

/*
 * libconfig 1.5 keeps an integer literal without the L suffix in 32 bits
 * and wraps it without a word: "message_size = 5000000000;" reads back as
 * 705032704.  Re-read the source from the setting's line, find
 * "name = literal" (skipping strings and comments) and compare.  If the
 * literal can't be found (an odd layout, a file replaced since libconfig
 * read it), trust libconfig rather than invent an error.  A file edited
 * in that instant can fail one reload; the next one reads it whole.
 */
static int
config_int_literal_check(struct config_ctx *ctx, const config_setting_t *s,
    const char *path)
{
	char		 buf[CONFIG_SCAN_MAX];
	const char	*file, *name, *p, *id;
	char		*end;
	unsigned	 line, l = 1;
	unsigned long long u;
	long long	 lit;
	size_t		 n, namelen;
	FILE		*fp;
	int		 c, neg;

	if ((name = config_setting_name(s)) == NULL ||
	    (line = config_setting_source_line(s)) == 0)
		return 0;
	file = config_setting_source_file(s) ? config_setting_source_file(s) :
	    ctx->file;
	if ((fp = fopen(file, "r")) == NULL)
		return 0;
	while (l < line && (c = getc(fp)) != EOF)
		if (c == '\n')
			l++;
	n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	namelen = strlen(name);

	for (p = buf; *p != '\0';) {
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
			if (*p == '"')
				p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			if ((p = strstr(p + 2, "*/")) == NULL)
				return 0;
			p += 2;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    *p == '*') {
			for (id = p; (*p >= 'a' && *p <= 'z') ||
			    (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
			    *p == '_' || *p == '-' || *p == '*'; p++)
				;
			if ((size_t)(p - id) != namelen ||
			    memcmp(id, name, namelen) != 0)
				continue;
			p += strspn(p, " \t\r\n");
			if (*p != '=' && *p != ':')
				continue;
			p += 1 + strspn(p + 1, " \t\r\n");
			neg = *p == '-';
			if (*p == '-' || *p == '+')
				p++;
			errno = 0;
			if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
				u = strtoull(p + 2, &end, 16);
				if (end == p + 2)
					return 0;
				if (errno == ERANGE || u > (unsigned long long)LLONG_MAX)
					goto range;
				lit = (long long)u;
			} else {
				lit = strtoll(p, &end, 10);
				if (end == p)
					return 0;
				if (errno == ERANGE)
					goto range;
			}
			if (neg)
				lit = -lit;
			if (lit == config_setting_get_int64(s))
				return 0;
 range:
			return config_fail(ctx, s, "'%s' is too large for a "
			    "plain integer; write it with an L suffix "
			    "(e.g. 5000000000L)", path);
		} else if (*p >= '0' && *p <= '9') {
			/* Skip a whole number so "0x1f" is not read as "x1f". */
			while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			    (*p >= 'A' && *p <= 'Z') || *p == '.')
				p++;
		} else
			p++;
	}
	return 0;
}

/*
 * Typed access.  Each config_want_*() looks up name in group and returns
 * 1 with the value stored when it is there and valid, 0 when it is absent
 * (out untouched: the caller's default stands) and -1 with err set.
 */

static int
config_want_setting(const config_setting_t *group, const char *name,
    const config_setting_t **out)
{
	return (*out = config_setting_get_member(group, name)) != NULL;
}

static int
config_want_string(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const char **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return config_fail(ctx, s, "'%s' must be a string", path);
	if (config_setting_get_string(s)[0] == '\0')
		return config_fail(ctx, s, "'%s' must not be empty", path);
	*out = config_setting_get_string(s);
	return 1;
}

static int
config_bool_value(struct config_ctx *ctx, const config_setting_t *s,
    const char *path, int *out)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return config_fail(ctx, s, "'%s' must be a boolean "
		    "(true or false)", path);
	*out = config_setting_get_bool(s) ? 1 : 0;
	return 1;
}

static int
config_want_bool(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, int *out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	return config_bool_value(ctx, s,
	    config_path(path, sizeof path, parent, name), out);
}

static int
config_want_int(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, long long min, long long max,
    long long *out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];
	long long		 v;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return config_fail(ctx, s, "'%s' must be an integer", path);
	if (config_setting_type(s) == CONFIG_TYPE_INT &&
	    config_int_literal_check(ctx, s, path) == -1)
		return -1;
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		if (max == LLONG_MAX)
			return config_fail(ctx, s, "'%s' must be at least %lld",
			    path, min);
		return config_fail(ctx, s, "'%s' must be between %lld and %lld",
		    path, min, max);
	}
	*out = v;
	return 1;
}

static int
config_want_group(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];

	if (!config_want_setting(group, name, &s))
		return 0;
	if (!config_setting_is_group(s))
		return config_fail(ctx, s, "'%s' must be a group { ... }",
		    config_path(path, sizeof path, parent, name));
	*out = s;
	return 1;
}

/* A list ( ... ) whose elements are all groups. */
static int
config_want_group_list(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_list(s))
		return config_fail(ctx, s, "'%s' must be a list of groups "
		    "( { ... }, { ... } )", path);
	n = config_setting_length(s);
	for (i = 0; i < n; i++)
		if (!config_setting_is_group(config_setting_get_elem(s,
		    (unsigned)i)))
			return config_fail(ctx, config_setting_get_elem(s,
			    (unsigned)i), "'%s' must be a list of groups "
			    "( { ... }, { ... } )", path);
	*out = s;
	return 1;
}

/* [ "a", "b" ] or ( "a", "b" ): non-empty strings. */
static int
config_want_strings(struct config_ctx *ctx, const config_setting_t *group,
    const char *parent, const char *name, const config_setting_t **out)
{
	const config_setting_t	*s, *e;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n;

	if (!config_want_setting(group, name, &s))
		return 0;
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_array(s) && !config_setting_is_list(s))
		return config_fail(ctx, s, "'%s' must be an array of strings "
		    "[ \"...\", \"...\" ]", path);
	n = config_setting_length(s);
	for (i = 0; i < n; i++) {
		e = config_setting_get_elem(s, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return config_fail(ctx, e, "'%s' must be an array of "
			    "strings [ \"...\", \"...\" ]", path);
		if (config_setting_get_string(e)[0] == '\0')
			return config_fail(ctx, e, "'%s' holds an empty string",
			    path);
	}
	*out = s;
	return 1;
}

/*
 * Sections.
 */

static int
config_load_hostname(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	char		 buf[256];
	const char	*name = NULL;
	int		 r;

	if ((r = config_want_string(ctx, root, "", "hostname", &name)) == -1)
		return -1;
	if (r == 1) {
		if (!config_domain_valid(name))
			return config_fail(ctx, config_setting_get_member(root,
			    "hostname"), "'hostname' must be a valid domain "
			    "name, not '%s'", name);
		c->hostname = config_xstrdup(name);
		return 0;
	}
	/* gethostname() may truncate without a NUL; provide one. */
	if (gethostname(buf, sizeof buf - 1) == -1)
		return config_fail(ctx, root, "'hostname' is not set and "
		    "gethostname failed: %s", strerror(errno));
	buf[sizeof buf - 1] = '\0';
	if (!config_domain_valid(buf))
		return config_fail(ctx, root, "'hostname' is not set and the "
		    "system name '%s' is not a valid domain name", buf);
	c->hostname = config_xstrdup(buf);
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
			if (config_netmask_parse(v, &l->proxy_from[l->nproxy_from]) == -1)
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

static int
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

static int
config_load_upstream(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *s;
	const char		*addr = NULL, *helo = NULL;
	char			 host[CONFIG_ADDR_MAX], port[8];
	unsigned		 p;
	long long		 v;
	int			 r, bracketed, xclient;

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
	} else {
		if (config_hostport_split(addr, host, sizeof host, port,
		    sizeof port, &bracketed) == -1)
			return config_fail(ctx, s, "'upstream.address' must be "
			    "\"host:port\", \"[IPv6]:port\" or \"dir:PATH\", "
			    "not '%s'", addr);
		/* Digits and dots only is meant as IPv4: don't let 1.2.3.999 pass as a name. */
		if (bracketed ? !config_ipv6_valid(host) :
		    strspn(host, "0123456789.") == strlen(host) ?
		    !config_ipv4_valid(host) : !config_domain_valid(host))
			return config_fail(ctx, s, "'upstream.address' has a "
			    "bad host '%s'", host);
		if (config_port_parse(port, &p) == -1 || p == 0)
			return config_fail(ctx, s, "'upstream.address' port "
			    "must be 1..65535, not '%s'", port);
		c->upstream_kind = CONFIG_UPSTREAM_SMTP;
		c->upstream_host = config_xstrdup(host);
		c->upstream_port = config_xstrdup(port);
	}

	if ((r = config_want_string(ctx, g, "upstream", "helo", &helo)) == -1)
		return -1;
	if (r == 1 && !config_domain_valid(helo))
		return config_fail(ctx, config_setting_get_member(g, "helo"),
		    "'upstream.helo' must be a valid domain name, not '%s'",
		    helo);
	c->upstream_helo = config_xstrdup(r == 1 ? helo : c->hostname);

	xclient = 1;
	if (config_want_bool(ctx, g, "upstream", "xclient", &xclient) == -1)
		return -1;
	c->upstream_xclient = xclient;
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
	xclient = 0;
	if (config_want_bool(ctx, g, "upstream", "tls_if_client_tls", &xclient) == -1)
		return -1;
	c->upstream_tls_if_client_tls = xclient;
	c->upstream_probe_interval = CONFIG_PROBE_INTERVAL;
	if ((r = config_want_int(ctx, g, "upstream", "probe_interval", 1,
	    CONFIG_TIMEOUT_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		c->upstream_probe_interval = (unsigned)v;
	return 0;
}

static int
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

/*
 * limits.pipeline_backlog caps the unread client input, and the session
 * frames each line whole: a backlog shorter than the longest line a
 * listener must read would stall every session that sends one.  The
 * listeners are loaded first.
 */
static int
config_check_backlog(struct config_ctx *ctx, const config_setting_t *g,
    const struct config *c)
{
	size_t	min = CONFIG_BACKLOG_MIN, i;

	for (i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].auth)
			min = CONFIG_BACKLOG_MIN_AUTH;
	if (c->limits.pipeline_backlog >= min)
		return 0;
	return config_fail(ctx, config_setting_get_member(g, "pipeline_backlog"),
	    "'limits.pipeline_backlog' must be at least %zu%s, not %zu", min,
	    min == CONFIG_BACKLOG_MIN_AUTH ? " with a listener that has auth "
	    "(one RFC 4954 AUTH line)" : " (one RFC 5321 text line)",
	    c->limits.pipeline_backlog);
}

static int
config_load_limits(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const struct config_limit_row	*row;
	const config_setting_t		*g = NULL;
	long long			 v, max;
	size_t				 sv;
	int				 r;

	/* size_t may be narrower than long long on 32-bit hosts. */
	max = (unsigned long long)SIZE_MAX < (unsigned long long)LLONG_MAX ?
	    (long long)SIZE_MAX : LLONG_MAX;
	if ((r = config_want_group(ctx, root, "", "limits", &g)) == -1)
		return -1;
	if (r == 1 && config_check_keys(ctx, g, "limits", config_limit_rows,
	    sizeof config_limit_rows[0]) == -1)
		return -1;
	for (row = config_limit_rows; row->name != NULL; row++) {
		sv = row->dflt;
		if (g != NULL) {
			r = config_want_int(ctx, g, "limits", row->name,
			    row->min, row->max ? row->max : max, &v);
			if (r == -1)
				return -1;
			if (r == 1)
				sv = (size_t)v;
		}
		memcpy((char *)&c->limits + row->offset, &sv, sizeof sv);
	}
	return config_check_backlog(ctx, g, c);
}

static int
config_load_timeouts(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const struct config_timeout_row	*row;
	const config_setting_t		*g = NULL;
	long long			 v;
	unsigned			 uv;
	int				 r;

	if ((r = config_want_group(ctx, root, "", "timeouts", &g)) == -1)
		return -1;
	if (r == 1 && config_check_keys(ctx, g, "timeouts",
	    config_timeout_rows, sizeof config_timeout_rows[0]) == -1)
		return -1;
	for (row = config_timeout_rows; row->name != NULL; row++) {
		uv = row->dflt;
		if (g != NULL) {
			r = config_want_int(ctx, g, "timeouts", row->name, 1,
			    CONFIG_TIMEOUT_MAX, &v);
			if (r == -1)
				return -1;
			if (r == 1)
				uv = (unsigned)v;
		}
		memcpy((char *)&c->timeouts + row->offset, &uv, sizeof uv);
	}
	return 0;
}

static int
config_load_relay(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *list = NULL, *e;
	struct config_netmask	*m;
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
			if (config_netmask_parse_bits(s, m, &hostbits) == -1)
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

static int
config_load_spool(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*dir = "/tmp";
	int			 r;

	if ((r = config_want_group(ctx, root, "", "spool", &g)) == -1)
		return -1;
	if (r == 1) {
		if (config_check_keys(ctx, g, "spool", config_keys_spool,
		    sizeof config_keys_spool[0]) == -1)
			return -1;
		if (config_want_string(ctx, g, "spool", "directory", &dir) == -1)
			return -1;
	}
	c->spool_dir = config_xstrdup(dir);
	c->spool_where = config_where(ctx, g, "directory");
	return 0;
}

/*
 * One filter group: spf = { fail = "reject"; dry_run = true; }.  The
 * filter must be in the chain (c->filters, loaded first): a group for
 * one that never runs is a typo or a forgotten filters entry.  A
 * built-in's result names are checked against config_builtin_results[].
 */
static int
config_load_filter(struct config_ctx *ctx, const struct config *c,
    const config_setting_t *g, const char *parent,
    struct config_policy_filter *f)
{
	const config_setting_t	*m;
	struct config_policy_rule *rule;
	const struct config_filter *cf = NULL;
	const char *const	*results = NULL;
	const char		*name, *s, *best;
	char			 path[CONFIG_PATH_MAX], mpath[CONFIG_PATH_MAX];
	size_t			 k, d, bestd = 3;
	int			 i, n;

	name = config_setting_name(g);
	config_path(path, sizeof path, parent, name);
	if (!config_setting_is_group(g))
		return config_fail(ctx, g, "'%s' must be a group of "
		    "result = \"action\" settings", path);
	best = NULL;
	for (k = 0; k < c->nfilters && cf == NULL; k++) {
		if (strcmp(c->filters[k].name, name) == 0)
			cf = &c->filters[k];
		else if ((d = config_edit_distance(name,
		    c->filters[k].name)) < bestd) {
			bestd = d;
			best = c->filters[k].name;
		}
	}
	if (cf == NULL)
		return config_fail(ctx, g, "'%s': no filter '%s' in the "
		    "'filters' chain%s%s%s", path, name,
		    best ? " (did you mean '" : "", best ? best : "",
		    best ? "'?)" : "");
	if (cf->module == NULL)
		for (k = 0; config_builtin_results[k].name != NULL; k++)
			if (strcmp(config_builtin_results[k].name, name) == 0)
				results = config_builtin_results[k].results;
	f->name = config_xstrdup(name);
	f->dry_run = -1;
	n = config_setting_length(g);
	f->rules = config_xcalloc((size_t)n, sizeof *f->rules);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, name);
		if (strcmp(name, "dry_run") == 0) {
			if (config_bool_value(ctx, m, mpath, &f->dry_run) == -1)
				return -1;
			continue;
		}
		if (!config_name_valid(name))
			return config_fail(ctx, m, "unknown key '%s' in '%s' "
			    "(result names are [a-z][a-z0-9_]*)", name, path);
		if (results != NULL && !config_suggest(name, results,
		    sizeof results[0], &best))
			return config_fail(ctx, m, "unknown result '%s' in '%s': "
			    "filter '%s' never gives it%s%s%s", name, path,
			    f->name, best ? " (did you mean '" : "",
			    best ? best : "", best ? "'?)" : "");
		if (config_setting_type(m) != CONFIG_TYPE_STRING)
			return config_fail(ctx, m, "'%s' must be a string "
			    "(" CONFIG_ACTIONS_EXPECTED ")", mpath);
		s = config_setting_get_string(m);
		rule = &f->rules[f->nrules];
		if (config_action_parse(s, &rule->action) == -1)
			return config_fail(ctx, m, "unknown action '%s' "
			    "(expected " CONFIG_ACTIONS_EXPECTED ")", s);
		rule->result = config_xstrdup(name);
		f->nrules++;
	}
	return 0;
}

/* Add one policy domain, refusing one already claimed by any policy. */
static int
config_policy_add_domain(struct config_ctx *ctx, const config_setting_t *e,
    const char *path, struct config_policy *p, struct config_strset *seen)
{
	const struct config_strset_slot	*dup;
	const char			*s;
	char				 buf[CONFIG_DOMAIN_BUF];
	char				*d;

	s = config_setting_get_string(e);
	if (config_domain_normalize(s, buf, sizeof buf, 0) == -1)
		return config_fail(ctx, e, "'%s' entry '%s' is not a valid "
		    "domain name", path, s);
	d = config_xstrdup(buf);
	p->domains[p->ndomains++] = d;
	if ((dup = config_strset_add(seen, d,
	    config_setting_source_line(e))) != NULL)
		return config_fail(ctx, e, "duplicate policy domain '%s' "
		    "(already at line %u)", d, dup->value);
	return 0;
}

/*
 * A policy group: policy.default, or one policy.domains entry (entry = 1,
 * which also takes domain/domains).  Every other name that looks like a
 * filter name is a filter group, so third-party filters get policy
 * without changes here.
 */
static int
config_load_policy_group(struct config_ctx *ctx, const struct config *c,
    const config_setting_t *g, const char *path, int entry,
    struct config_policy *p, struct config_strset *seen)
{
	const config_setting_t	*m, *list = NULL;
	const char		*name;
	char			 mpath[CONFIG_PATH_MAX];
	size_t			 nd = 0, nf = 0;
	int			 i, j, n;

	p->dry_run = -1;
	n = config_setting_length(g);
	/* First pass: sizes, so arrays are allocated once. */
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		if (entry && strcmp(name, "domain") == 0)
			nd++;
		else if (entry && strcmp(name, "domains") == 0 &&
		    config_setting_is_aggregate(m))
			nd += (size_t)config_setting_length(m);
		else if (strcmp(name, "dry_run") != 0 &&
		    strcmp(name, "domain") != 0 && strcmp(name, "domains") != 0)
			nf++;
	}
	p->domains = config_xcalloc(nd, sizeof *p->domains);
	p->filters = config_xcalloc(nf, sizeof *p->filters);

	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		name = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, name);
		if (strcmp(name, "dry_run") == 0) {
			if (config_bool_value(ctx, m, mpath, &p->dry_run) == -1)
				return -1;
		} else if (entry && strcmp(name, "domain") == 0) {
			if (config_setting_type(m) != CONFIG_TYPE_STRING)
				return config_fail(ctx, m, "'%s' must be a "
				    "string", mpath);
			if (config_policy_add_domain(ctx, m, mpath, p,
			    seen) == -1)
				return -1;
		} else if (entry && strcmp(name, "domains") == 0) {
			if (config_want_strings(ctx, g, path, name, &list) == -1)
				return -1;
			for (j = 0; j < config_setting_length(list); j++)
				if (config_policy_add_domain(ctx,
				    config_setting_get_elem(list, (unsigned)j),
				    mpath, p, seen) == -1)
					return -1;
		} else if (strcmp(name, "domain") != 0 &&
		    strcmp(name, "domains") != 0 &&
		    config_filter_name_valid(name)) {
			if (config_load_filter(ctx, c, m, path,
			    &p->filters[p->nfilters++]) == -1)
				return -1;
		} else
			return config_fail(ctx, m, "unknown key '%s' in '%s'%s",
			    name, path, strcmp(name, "domain") == 0 ||
			    strcmp(name, "domains") == 0 ? " (domains belong "
			    "in policy.domains entries)" : "");
	}
	if (entry) {
		if (p->ndomains == 0)
			return config_fail(ctx, g, "'%s' needs 'domain' or "
			    "'domains'", path);
		p->name = config_xstrdup(p->domains[0]);
	}
	return 0;
}

static int
config_load_policy(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL, *d = NULL, *list = NULL;
	struct config_strset	*seen;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n, r;

	c->policy_default.name = config_xstrdup("default");
	c->policy_default.dry_run = -1;
	if ((r = config_want_group(ctx, root, "", "policy", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "policy", config_keys_policy,
	    sizeof config_keys_policy[0]) == -1)
		return -1;
	if ((r = config_want_group(ctx, g, "policy", "default", &d)) == -1)
		return -1;
	if (r == 1 && config_load_policy_group(ctx, c, d, "policy.default", 0,
	    &c->policy_default, NULL) == -1)
		return -1;

	if ((r = config_want_group_list(ctx, g, "policy", "domains",
	    &list)) != 1)
		return r;
	n = config_setting_length(list);
	c->policies = config_xcalloc((size_t)n, sizeof *c->policies);
	/* The domain strings live in c->policies; seen only points at them. */
	seen = config_strset_new();
	for (r = 0, i = 0; i < n && r == 0; i++) {
		c->npolicies++;
		config_path_index(path, sizeof path, "policy.domains", i);
		r = config_load_policy_group(ctx, c, config_setting_get_elem(list,
		    (unsigned)i), path, 1, &c->policies[i], seen);
	}
	config_strset_free(seen);
	return r;
}

/* "key=value" for one filters[].options member; the module parses it. */
static char *
config_option_join(const char *key, const char *value)
{
	size_t	klen = strlen(key), vlen = strlen(value);
	char	*s;

	s = config_xcalloc(klen + vlen + 2, 1);
	memcpy(s, key, klen);
	s[klen] = '=';
	memcpy(s + klen + 1, value, vlen + 1);
	return s;
}

/*
 * filters[].options: a flat group whose values are strings, integers or
 * booleans, handed to the module's init() as "key=value" in file order
 * (the order the admin wrote is the only order a module can rely on).
 */
static int
config_load_filter_options(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, struct config_filter *f)
{
	const config_setting_t	*m;
	const char		*key;
	char			 mpath[CONFIG_PATH_MAX], num[32];
	int			 i, n;

	n = config_setting_length(g);
	f->options = config_xcalloc((size_t)n, sizeof *f->options);
	for (i = 0; i < n; i++) {
		m = config_setting_get_elem(g, (unsigned)i);
		key = config_setting_name(m);
		config_path(mpath, sizeof mpath, path, key);
		switch (config_setting_type(m)) {
		case CONFIG_TYPE_STRING:
			f->options[f->noptions++] = config_option_join(key,
			    config_setting_get_string(m));
			break;
		case CONFIG_TYPE_INT:
			if (config_int_literal_check(ctx, m, mpath) == -1)
				return -1;
			/* FALLTHROUGH */
		case CONFIG_TYPE_INT64:
			(void)snprintf(num, sizeof num, "%lld",
			    (long long)config_setting_get_int64(m));
			f->options[f->noptions++] = config_option_join(key, num);
			break;
		case CONFIG_TYPE_BOOL:
			f->options[f->noptions++] = config_option_join(key,
			    config_setting_get_bool(m) ? "true" : "false");
			break;
		default:
			return config_fail(ctx, m, "'%s' must be a string, an "
			    "integer or a boolean", mpath);
		}
	}
	return 0;
}

/* One filters entry: { name = "spf"; } or { name = "x"; module = "x.so"; }. */
static int
config_load_filter_entry(struct config_ctx *ctx, const config_setting_t *g,
    const char *path, struct config_filter *f, struct config_strset *seen)
{
	const struct config_strset_slot	*dup;
	const config_setting_t		*s, *opts = NULL;
	const char			*name = NULL, *module = NULL, *act = NULL;
	char				 mpath[CONFIG_PATH_MAX];
	long long			 v;
	int				 r;

	f->timeout = CONFIG_FILTER_TIMEOUT;
	f->on_error = CONFIG_ACTION_TEMPFAIL;
	f->dry_run = -1;
	f->delay_reject = 1;
	if (config_check_keys(ctx, g, path, config_keys_filter,
	    sizeof config_keys_filter[0]) == -1)
		return -1;

	if ((r = config_want_string(ctx, g, path, "name", &name)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'%s' is missing 'name'", path);
	s = config_setting_get_member(g, "name");
	if (!config_filter_name_valid(name))
		return config_fail(ctx, s, "'%s.name' must be [a-z][a-z0-9_-]* "
		    "(at most %d characters), not '%s'", path,
		    CONFIG_NAME_MAX - 1, name);
	f->name = config_xstrdup(name);
	/* The name keys policy groups and logs: two filters can't share one. */
	if ((dup = config_strset_add(seen, f->name,
	    config_setting_source_line(s))) != NULL)
		return config_fail(ctx, s, "duplicate filter name '%s' "
		    "(already at line %u)", name, dup->value);

	if ((r = config_want_string(ctx, g, path, "module", &module)) == -1)
		return -1;
	f->where = config_where(ctx, g, r == 1 ? "module" : NULL);
	if (r == 1)
		f->module = config_xstrdup(module);
	else if (!config_filter_builtin(name))
		return config_fail(ctx, s, "unknown built-in filter '%s' (set "
		    "module = path for a third-party module)", name);

	if ((r = config_want_int(ctx, g, path, "timeout", 1,
	    CONFIG_FILTER_TIMEOUT_MAX, &v)) == -1)
		return -1;
	if (r == 1)
		f->timeout = (unsigned)v;

	if ((r = config_want_string(ctx, g, path, "on_error", &act)) == -1)
		return -1;
	if (r == 1 && config_action_parse(act, &f->on_error) == -1)
		return config_fail(ctx, config_setting_get_member(g, "on_error"),
		    "'%s.on_error': unknown action '%s' (expected "
		    CONFIG_ACTIONS_EXPECTED ")", path, act);

	if (config_want_bool(ctx, g, path, "dry_run", &f->dry_run) == -1)
		return -1;
	if (config_want_bool(ctx, g, path, "delay_reject", &f->delay_reject) == -1)
		return -1;

	if ((r = config_want_group(ctx, g, path, "options", &opts)) == -1)
		return -1;
	if (r == 1 && config_load_filter_options(ctx, opts,
	    config_path(mpath, sizeof mpath, path, "options"), f) == -1)
		return -1;
	return 0;
}

static int
config_load_filters(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*list = NULL;
	struct config_strset	*seen;
	char			 path[CONFIG_PATH_MAX];
	int			 i, n, r;

	if ((r = config_want_group_list(ctx, root, "", "filters", &list)) != 1)
		return r;
	n = config_setting_length(list);
	c->filters = config_xcalloc((size_t)n, sizeof *c->filters);
	/* The names live in c->filters; seen only points at them. */
	seen = config_strset_new();
	for (r = 0, i = 0; i < n && r == 0; i++) {
		/* Count first: config_free() releases a half-built entry too. */
		c->nfilters++;
		config_path_index(path, sizeof path, "filters", i);
		r = config_load_filter_entry(ctx, config_setting_get_elem(list,
		    (unsigned)i), path, &c->filters[i], seen);
	}
	config_strset_free(seen);
	return r;
}

static int
config_load_quarantine(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*dir = NULL;
	int			 r;

	/* Absent: no quarantine, and the quarantine action tempfails. */
	if ((r = config_want_group(ctx, root, "", "quarantine", &g)) != 1)
		return r;
	if (config_check_keys(ctx, g, "quarantine", config_keys_quarantine,
	    sizeof config_keys_quarantine[0]) == -1)
		return -1;
	if ((r = config_want_string(ctx, g, "quarantine", "directory",
	    &dir)) == -1)
		return -1;
	if (r == 0)
		return config_fail(ctx, g, "'quarantine' is missing "
		    "'directory'");
	c->quarantine_dir = config_xstrdup(dir);
	c->quarantine_where = config_where(ctx, g, "directory");
	return 0;
}

/*
 * A copy of s safe to quote in an error message: control characters
 * become '?', so a value holding CR/LF can't split the one-line error
 * (or the log line it ends up in).
 */
static const char *
config_printable(const char *s, char *buf, size_t size)
{
	size_t	i;

	for (i = 0; s[i] != '\0' && i + 1 < size; i++)
		buf[i] = (unsigned char)s[i] < ' ' || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static int
config_load_authserv_id(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const char	*id = NULL;
	char		 shown[CONFIG_PATH_MAX];
	int		 r;

	if ((r = config_want_string(ctx, root, "", "authserv_id", &id)) == -1)
		return -1;
	if (r == 0) {
		/* RFC 8601 2.5: the host name is the usual authserv-id. */
		c->authserv_id = config_xstrdup(c->hostname);
		return 0;
	}
	/*
	 * RFC 8601 2.2: authserv-id = value (RFC 2045 token or quoted
	 * string).  We write the token form only, and the forged-field
	 * check compares against it, so a space or ';' would make our own
	 * field unparseable and let forgeries through.
	 */
	if (!policy_authserv_id_valid(id))
		return config_fail(ctx, config_setting_get_member(root,
		    "authserv_id"), "'authserv_id' must be an RFC 8601 "
		    "authserv-id: printable ASCII without spaces or "
		    "()<>@,;:\\\"/[]?= (at most %d characters), not '%s'",
		    POLICY_AUTHSERV_MAX, config_printable(id, shown,
		    sizeof shown));
	c->authserv_id = config_xstrdup(id);
	return 0;
}

/* RFC 5322 3.6.8 field-name: printable US-ASCII except ':'. */
static int
config_header_name_valid(const char *s)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 ||
		    s[i] == ':')
			return 0;
	return i > 0 && i <= CONFIG_HEADER_NAME_MAX;
}

static int
config_load_tag(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	const config_setting_t	*g = NULL;
	const char		*header = CONFIG_TAG_HEADER, *prefix = NULL;
	char			 shown[CONFIG_PATH_MAX];
	size_t			 i;
	int			 r;

	if ((r = config_want_group(ctx, root, "", "tag", &g)) == -1)
		return -1;
	if (r == 1) {
		if (config_check_keys(ctx, g, "tag", config_keys_tag,
		    sizeof config_keys_tag[0]) == -1)
			return -1;
		if ((r = config_want_string(ctx, g, "tag", "header",
		    &header)) == -1)
			return -1;
		if (r == 1 && !config_header_name_valid(header))
			return config_fail(ctx, config_setting_get_member(g,
			    "header"), "'tag.header' must be a header field "
			    "name (printable ASCII without spaces or ':', at "
			    "most %d characters), not '%s'",
			    CONFIG_HEADER_NAME_MAX, config_printable(header,
			    shown, sizeof shown));
		if (config_want_string(ctx, g, "tag", "subject_prefix",
		    &prefix) == -1)
			return -1;
	}
	if (prefix != NULL) {
		/*
		 * It goes into the Subject: field verbatim; a CR or LF would
		 * start a new header field, other controls have no business
		 * in a header either.
		 */
		for (i = 0; prefix[i] != '\0'; i++)
			if ((unsigned char)prefix[i] < ' ' || prefix[i] == 0x7f)
				return config_fail(ctx,
				    config_setting_get_member(g,
				    "subject_prefix"), "'tag.subject_prefix' "
				    "must not contain control characters "
				    "(CR, LF, TAB, ...)");
		if (i > CONFIG_SUBJECT_PREFIX_MAX)
			return config_fail(ctx, config_setting_get_member(g,
			    "subject_prefix"), "'tag.subject_prefix' must be "
			    "at most %d characters", CONFIG_SUBJECT_PREFIX_MAX);
		c->tag_subject_prefix = config_xstrdup(prefix);
	}
	c->tag_header = config_xstrdup(header);
	return 0;
}

static int
config_load_root(struct config_ctx *ctx, const config_setting_t *root,
    struct config *c)
{
	long long	v = 0;

	if (config_check_keys(ctx, root, "", config_keys_root,
	    sizeof config_keys_root[0]) == -1)
		return -1;
	/* hostname first: upstream.helo defaults to it. */
	if (config_load_hostname(ctx, root, c) == -1)
		return -1;
	if (config_want_int(ctx, root, "", "workers", 0, CONFIG_WORKERS_MAX,
	    &v) == -1)
		return -1;
	c->workers = (unsigned)v;
	if (config_load_listen(ctx, root, c) == -1 ||
	    config_load_upstream(ctx, root, c) == -1 ||
	    config_load_dns(ctx, root, c) == -1 ||
	    config_load_limits(ctx, root, c) == -1 ||
	    config_load_timeouts(ctx, root, c) == -1 ||
	    config_load_relay(ctx, root, c) == -1 ||
	    config_load_spool(ctx, root, c) == -1 ||
	    /* Filters first: a policy group must name a filter in the chain. */
	    config_load_filters(ctx, root, c) == -1 ||
	    config_load_policy(ctx, root, c) == -1 ||
	    config_load_quarantine(ctx, root, c) == -1 ||
	    config_load_authserv_id(ctx, root, c) == -1 ||
	    config_load_tag(ctx, root, c) == -1)
		return -1;
	return 0;
}

static void
config_free_policy(struct config_policy *p)
{
	size_t	i, j;

	free(p->name);
	for (i = 0; i < p->ndomains; i++)
		free(p->domains[i]);
	free(p->domains);
	for (i = 0; i < p->nfilters; i++) {
		free(p->filters[i].name);
		for (j = 0; j < p->filters[i].nrules; j++)
			free(p->filters[i].rules[j].result);
		free(p->filters[i].rules);
	}
	free(p->filters);
}

/* Frees a whole or a half-built configuration: counts track what exists. */
static void
config_free(struct config *c)
{
	size_t	i, j;

	/* The proxy's SSL_CTXs go first: it alone knows how to free them. */
	if (c->tls_ctx_free != NULL) {
		for (i = 0; i < c->nlisteners; i++)
			if (c->listeners[i].tls_ctx != NULL)
				c->tls_ctx_free(c->listeners[i].tls_ctx);
		if (c->upstream_tls_ctx != NULL)
			c->tls_ctx_free(c->upstream_tls_ctx);
	}
	free(c->file);
	free(c->hostname);
	for (i = 0; i < c->nlisteners; i++) {
		free(c->listeners[i].address);
		free(c->listeners[i].cert);
		free(c->listeners[i].key);
		free(c->listeners[i].cert_where);
		free(c->listeners[i].key_where);
		free(c->listeners[i].proxy_from);
	}
	free(c->listeners);
	free(c->upstream_tls_name);
	free(c->upstream_tls_ca);
	free(c->upstream_where);
	free(c->upstream_address);
	free(c->upstream_host);
	free(c->upstream_port);
	free(c->upstream_dir);
	free(c->upstream_unix);
	free(c->upstream_helo);
	for (i = 0; i < c->ndns_forward; i++)
		free(c->dns_forward[i]);
	free(c->dns_forward);
	for (i = 0; i < c->nrelay_domains; i++)
		free(c->relay_domains[i]);
	free(c->relay_domains);
	config_strset_free(c->relay_index);
	free(c->relay_networks);
	free(c->spool_dir);
	free(c->spool_where);
	free(c->upstream_dir_where);
	free(c->quarantine_where);
	config_free_policy(&c->policy_default);
	for (i = 0; i < c->npolicies; i++)
		config_free_policy(&c->policies[i]);
	free(c->policies);
	policy_index_free(c->policy_index);
	for (i = 0; i < c->nfilters; i++) {
		free(c->filters[i].name);
		free(c->filters[i].module);
		free(c->filters[i].where);
		for (j = 0; j < c->filters[i].noptions; j++)
			free(c->filters[i].options[j]);
		free(c->filters[i].options);
	}
	free(c->filters);
	free(c->quarantine_dir);
	free(c->authserv_id);
	free(c->tag_header);
	free(c->tag_subject_prefix);
	free(c);
}

struct config *
config_load(const char *file, char *err, size_t errlen)
{
	struct config_ctx	 ctx = { file, err, errlen };
	struct config		*c;
	struct stat		 st;
	config_t		 lc;
	FILE			*fp;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	/*
	 * Open it ourselves: libconfig says only "file I/O error", and the
	 * admin wants to know whether it is ENOENT or EACCES.
	 */
	if ((fp = fopen(file, "r")) == NULL) {
		config_errf(&ctx, "%s: cannot open: %s", file, strerror(errno));
		return NULL;
	}
	/* fopen(3) happily opens a directory; libconfig would then say "syntax error". */
	memset(&st, 0, sizeof st);
	if (fstat(fileno(fp), &st) == -1 || !S_ISREG(st.st_mode)) {
		config_errf(&ctx, "%s: cannot open: %s", file,
		    S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
		fclose(fp);
		return NULL;
	}
	config_init(&lc);
	if (config_read(&lc, fp) == CONFIG_FALSE) {
		config_errf(&ctx, "%s:%d: %s", config_error_file(&lc) ?
		    config_error_file(&lc) : file, config_error_line(&lc),
		    config_error_text(&lc));
		fclose(fp);
		config_destroy(&lc);
		return NULL;
	}
	fclose(fp);

	c = config_xcalloc(1, sizeof *c);
	c->refcount = 1;
	c->file = config_xstrdup(file);
	if (config_load_root(&ctx, config_root_setting(&lc), c) == -1) {
		config_free(c);
		c = NULL;
	} else
		/* Before anyone else sees c: it is read-only from here on. */
		policy_index_build(c);
	config_destroy(&lc);
	return c;
}
