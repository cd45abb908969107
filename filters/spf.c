/*
 * spf.c - the built-in SPF filter: RFC 7208 checks of the MAIL FROM and
 * HELO identities with libspf2, without ever blocking the event loop
 *
 * NAME
 *	spf_filter - the "spf" entry of the filters list
 *
 * SYNOPSIS
 *	filters = ( { name = "spf";
 *	              options = { helo = true; max_passes = 30;
 *	                          explanation = "see https://example.net/spf"; }; } );
 *	policy = { default = { spf = { fail = "reject"; softfail = "tag";
 *	                               temperror = "tempfail"; }; }; };
 *
 * DESCRIPTION
 *	At MAIL FROM the filter runs check_host() (RFC 7208 section 4) for
 *	the HELO identity (section 2.3), then for the MAIL FROM identity.  A
 *	HELO result of "fail" is conclusive and ends the check (2.3: no need
 *	to spend DNS on MAIL FROM); any other HELO result only goes to the
 *	log.  For the null reverse-path the MAIL FROM identity is
 *	postmaster@HELO (2.4), so one check of the HELO domain gives the
 *	result.  A quoted local part ("a b"@example.com) stands for its value;
 *	an empty one, or none, is "postmaster" (4.3).  A domain that is no
 *	domain name gives "none" without a lookup (4.3); so does a client
 *	with no IP address.  The result is named with api->set_result() -
 *	pass, fail, softfail, neutral, none, temperror, permerror - and the
 *	transaction's policy maps it to an action; the hook itself always
 *	continues.  The
 *	filter also sets the facts spf.result and spf.domain (for DMARC), a
 *	reply for the refusing results (550 5.7.23 fail and softfail, 550
 *	5.7.24 permerror, 451 4.7.24 temperror; RFC 7372), and at end of
 *	message prepends Received-SPF (RFC 7208 9.1) and adds an "spf"
 *	Authentication-Results entry (RFC 8601 2.7.2).
 *
 * HOW LIBSPF2 IS DRIVEN
 *	libspf2 resolves synchronously.  Its resolver here is a layer of our
 *	own (spf_layer_lookup) that answers only from a per-message table
 *	of (name, type) answers and never touches the network.  A question
 *	the table cannot answer is recorded as a miss and answered TRY_AGAIN,
 *	which makes libspf2 stop; the filter then asks the core's
 *	asynchronous resolver (api->dns_query) for every miss, stores the
 *	answers and runs the whole check again.  Such a pass is CPU only and
 *	deterministic, so pass N+1 walks the path of pass N one step
 *	further.  Passes are bounded (max_passes), and the address records
 *	an MX or PTR answer leads to are fetched along with it, so a record
 *	costs about one round trip per include level.
 *
 *	The same layer does what libspf2 does not (notes/LIBRARIES.md 1):
 *	- it counts the RFC 7208 4.6.4 terms across include and redirect
 *	  (each TXT lookup after the first, i.e. include and redirect; each
 *	  mx, ptr, a and exists lookup; the PTR lookup of a p macro) and
 *	  makes the 11th a permerror, likewise the third void lookup;
 *	- it tells the lookup a term makes from the address lookups of the
 *	  MX and PTR names it led to by tagging the names it hands libspf2
 *	  (SPF_TAG_*), so nothing is guessed;
 *	- it parses every SPF record against the RFC 7208 ABNF first, and
 *	  libspf2 only ever sees a canonical rewrite of a valid record:
 *	  redirect moved last (libspf2 evaluates it in place), dropped when
 *	  the record has "all" (6.1); exp= and unknown modifiers validated
 *	  then dropped (the explanation is ours, 6.2); ip4/ip6 terms of the
 *	  other address family dropped; x/0 prefix lengths (which libspf2
 *	  reads as /32) rewritten; macro transformers normalised.  Malformed
 *	  records thus never reach libspf2's parser, whose error paths call
 *	  SPF_error() (abort()) or underflow (CVE-2023-42118, unfixed in
 *	  Debian 12), and a syntax error anywhere is a permerror (4.6);
 *	- it hands libspf2 at most 10 PTR names, so the rest are ignored
 *	  (4.6.4) where libspf2 would fail with permerror, and skips a PTR
 *	  name whose address lookup fails (5.5) where libspf2 says temperror;
 *	  more than 10 MX records is a permerror whatever their order (4.6.4,
 *	  as the RFC 7208 test suite reads it), where libspf2 looks at the
 *	  first 10 first;
 *	- it orders the p macro's PTR names so that <domain> or a subdomain
 *	  of it is the one libspf2 validates first (7.3);
 *	- TRY_AGAIN on the first TXT lookup, which libspf2 reports as
 *	  SPF_RESULT_INVALID, is temperror; the record is fetched and
 *	  interpreted through libspf2's exported pieces rather than
 *	  SPF_request_query_mailfrom(), which passes every loopback client
 *	  (check_host() has no such rule).
 *
 * OPTIONS
 *	helo = yes|no (default yes): check the HELO identity too.
 *	max_passes = N (default 30, 1..1000): evaluations per identity
 *	    before giving up with temperror.  The elapsed time is bounded by
 *	    the filter's `timeout` (default 30 s; RFC 7208 4.6.4 asks for at
 *	    least 20), whose expiry is the filter's on_error action.
 *	explanation = TEXT (default none): appended to the reply of a fail,
 *	    e.g. a URL; printable ASCII, at most 150 characters.  Texts
 *	    published with exp= are never fetched (RFC 7208 6.2 leaves their
 *	    use to the receiver; CVE-2021-20314 lived there).
 *
 * THREADING
 *	One SPF_server_t per instance, read-only after init and shared by
 *	every worker thread.  The layer finds the pass it serves through a
 *	thread-local pointer set around each libspf2 call.  libspf2's log
 *	handlers are process-global: set once, to nothing.
 *
 * STANDARDS
 *	RFC 7208 (SPF), RFC 7372 (codes 5.7.23 and 5.7.24), RFC 8601.
 */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <spf2/spf.h>

#include "spf.h"

/* RFC 7208 4.6.4: terms that query DNS, void lookups, names per MX/PTR. */
#define SPF_TERMS_MAX		10
#define SPF_VOIDS_MAX		2
#define SPF_NAMES_MAX		10

#define SPF_PASSES_DEFAULT	30
#define SPF_PASSES_LIMIT	1000
/*
 * Distinct (name, type) questions per message.  Two identities, each at
 * most 10 terms, 10 address lookups per MX or PTR term and one first
 * lookup: about 250 in the worst case that is still legal.
 */
#define SPF_ENTRIES_MAX		300
#define SPF_ADDRS_MAX		128	/* address records kept per name (no RFC limit) */
#define SPF_MX_KEEP		(SPF_NAMES_MAX + 1)	/* one more than allowed: libspf2 sees the excess */
#define SPF_RECORD_MAX		4096	/* one SPF record; longer is a permerror */
#define SPF_CANON_MAX		8192	/* the rewrite, x/0 markers included */
#define SPF_TERMS_PER_RECORD	256
/*
 * libspf2 compiles a term into at most SPF_MAX_MECH_LEN (511) bytes and,
 * without upstream d14abff, underflows when a literal starts with less
 * than 4 bytes left.  Terms are estimated conservatively and refused
 * well before.
 */
#define SPF_TERM_DATA_MAX	400
/* A literal: a 4-byte SPF_data_str_t per 255 bytes, text padded to 4. */
#define SPF_LITERAL_DATA(n)	(4 + 4 * ((n) / 255) + (((n) + 3) & ~(size_t)3))
#define SPF_DOMAIN_MAX		253	/* RFC 1035 2.3.4, as text */
#define SPF_NAME_BUF		1024	/* a name with \DDD escapes */
#define SPF_ADDR_MAX		512	/* sender as given */
#define SPF_EXPLANATION_MAX	150
#define SPF_HEADER_MAX		900	/* the core takes values up to 900 */
#define SPF_WHY_MAX		160
#define SPF_NONCE_LEN		16

/*
 * Names handed to libspf2 as MX or PTR targets start with one of these
 * and a dot, so their address lookups come back recognisable.  No real
 * name starts with a control byte; libspf2 only looks the names up and,
 * for ptr, compares their ends with the target domain, which the ".",
 * kept after the tag, leaves intact.
 */
#define SPF_TAG_MX		'\001'
#define SPF_TAG_MX_ANY		'\002'	/* MX of an mx term with a /0 prefix */
#define SPF_TAG_PTR		'\003'
/* An a/mx term with a /0 prefix looks up NAME.x-NONCE.invalid. */
#define SPF_ANY_SUFFIX_FMT	".x-%s.invalid"

enum spf_result {
	SPF_R_PASS = 0,
	SPF_R_FAIL,
	SPF_R_SOFTFAIL,
	SPF_R_NEUTRAL,
	SPF_R_NONE,
	SPF_R_TEMPERROR,
	SPF_R_PERMERROR,
	SPF_R_COUNT		/* must be last */
};

static const char *const spf_result_names[SPF_R_COUNT] = {
	[SPF_R_PASS] = "pass",
	[SPF_R_FAIL] = "fail",
	[SPF_R_SOFTFAIL] = "softfail",
	[SPF_R_NEUTRAL] = "neutral",
	[SPF_R_NONE] = "none",
	[SPF_R_TEMPERROR] = "temperror",
	[SPF_R_PERMERROR] = "permerror",
};

enum spf_identity {
	SPF_ID_HELO = 0,
	SPF_ID_MAILFROM
};

enum spf_entry_state {
	SPF_ST_WANTED = 0,	/* a pass missed it; no query yet */
	SPF_ST_ASKED,		/* query outstanding */
	SPF_ST_DONE
};

/* One configured instance; read-only after init. */
struct spf_inst {
	const struct fmx_api	*api;
	SPF_server_t		*server;
	int			 helo;
	unsigned		 max_passes;
	char			 explanation[SPF_EXPLANATION_MAX + 1];
};

struct spf_msg;

/* One (name, type) question and, once known, its answer. */
struct spf_entry {
	struct spf_entry	*next;
	struct spf_msg		*m;
	int			 type;
	enum spf_entry_state	 state;
	int			 herrno;	/* NETDB_SUCCESS, HOST_NOT_FOUND, NO_DATA, TRY_AGAIN */
	size_t			 n;		/* addresses or names */
	struct in_addr		*a;		/* type A */
	struct in6_addr		*aaaa;		/* type AAAA */
	char			**names;	/* MX, PTR: targets, presentation form */
	int			 nspf;		/* TXT: records that start with v=spf1 */
	char			*spf;		/* TXT: canonical record, one valid record */
	char			 why[SPF_WHY_MAX];	/* TXT: why it is a permerror */
	char			 name[];	/* presentation form, lower case, no final dot */
};

enum spf_check_state {
	SPF_CK_OFF = 0,		/* not checked */
	SPF_CK_RUN,
	SPF_CK_DONE
};

/* One check_host() run: one identity. */
struct spf_check {
	enum spf_identity	 identity;
	enum spf_check_state	 state;
	char			 domain[SPF_DOMAIN_MAX + 2];
	char			 sender[SPF_ADDR_MAX + 16];	/* <sender> of check_host() */
	enum spf_result		 result;
	char			 why[SPF_WHY_MAX];
	unsigned		 passes;
};

/* Per message, owned by the core through api->set_msg_data(). */
struct spf_msg {
	const struct spf_inst	*inst;
	int			 family;	/* AF_INET (also for v4-mapped) or AF_INET6 */
	struct in_addr		 ip4;
	struct in6_addr		 ip6;
	char			 ip[INET6_ADDRSTRLEN];
	char			 helo[SPF_DOMAIN_MAX + 2];
	int			 helo_ok;	/* a domain name (RFC 7208 4.3) */
	char			 from[SPF_ADDR_MAX];	/* "" = null reverse-path */
	char			 nonce[SPF_NONCE_LEN + 1];
	struct spf_entry	*zone;
	struct spf_entry	**zone_tail;
	size_t			 nzone;
	unsigned		 outstanding;	/* queries in flight */
	unsigned		 queries;
	int			 busy;		/* inside spf_drive()/spf_issue() */
	int			 waiting;	/* the hook returned FMX_PENDING */
	int			 done;
	struct spf_check	 helo_chk;
	struct spf_check	 mail_chk;
	struct spf_check	*final;
	char			 received[SPF_HEADER_MAX + 1];
	char			 ar_props[256];
};

/*
 * What the layer knows about the pass it serves: the counters of RFC
 * 7208 4.6.4 and whether the pass has to stop.
 */
struct spf_pass {
	struct spf_msg		*m;
	int			 first_done;	/* the first TXT lookup (the checked domain) */
	unsigned		 terms;
	unsigned		 voids;
	int			 p_counted;
	SPF_request_t		*req;		/* for cur_dom, the <domain> of the moment */
	const struct spf_entry	*p_ptr;		/* p macro: the PTR names being validated */
	size_t			 p_order[SPF_NAMES_MAX];	/* in the order served */
	size_t			 p_n;
	size_t			 p_idx;
	int			 stopped;	/* answer TRY_AGAIN from now on */
	int			 missed;	/* the table lacked an answer */
	int			 forced;	/* the layer decided permerror */
	char			 why[SPF_WHY_MAX];
};

static _Thread_local struct spf_pass *spf_cur;

/* ------------------------------------------------------------------ */
/* Small helpers */

struct spf_buf {
	char	*p;
	size_t	 cap;
	size_t	 len;
	int	 over;
};

static void
spf_put(struct spf_buf *b, const char *s, size_t n)
{
	if (b == NULL || b->over)
		return;
	if (b->len + n >= b->cap) {
		b->over = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
spf_puts(struct spf_buf *b, const char *s)
{
	spf_put(b, s, strlen(s));
}

static void
spf_putc(struct spf_buf *b, char c)
{
	spf_put(b, &c, 1);
}

static void
spf_lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}

static int
spf_printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/*
 * RFC 7208 4.3: the <domain> of check_host() must be a multi-label
 * domain name whose labels are 1..63 octets, 253 in all (one final dot
 * allowed); otherwise the result is "none".  Domain literals fail here.
 * Names are ASCII: internationalised names must come as A-labels.
 */
static int
spf_domain_ok(const char *d)
{
	size_t len = strlen(d), label = 0, labels = 0, i;

	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0 || len > SPF_DOMAIN_MAX || d[0] == '[')
		return 0;
	for (i = 0; i < len; i++) {
		if ((unsigned char)d[i] <= 0x20 || (unsigned char)d[i] >= 0x7f)
			return 0;
		if (d[i] == '.') {
			if (label == 0)
				return 0;
			labels++;
			label = 0;
		} else if (++label > 63)
			return 0;
	}
	return label > 0 && labels >= 1;
}

/* ------------------------------------------------------------------ */
/* SPF records: RFC 7208 4.5, 4.6, 5, 6, 7 */

/*
 * RFC 7208 7.1 macro-expand at s[0] == '%'.  Returns the bytes it takes,
 * 0 when malformed.  Writes the canonical form: letter case kept (an
 * upper-case letter means URL-encoding), digits without leading zeros
 * and clamped to 128 (a name has at most 127 labels, 7.3, and libspf2
 * refuses more and overflows on long digit strings), 'r' in lower case
 * (libspf2 knows no 'R').  c, r and t are for exp text only (7.3), which
 * is never expanded here.  libspf2 lacks the ',' and '/' delimiters:
 * such a record compiles to a permerror there.
 */
static size_t
spf_macro(const char *s, size_t len, struct spf_buf *out)
{
	char	 num[8];
	size_t	 i;
	unsigned long val = 0;
	int	 digits = 0, rev = 0;
	char	 letter;

	if (len < 2)
		return 0;
	if (s[1] == '%' || s[1] == '_' || s[1] == '-') {
		spf_put(out, s, 2);
		return 2;
	}
	if (s[1] != '{' || len < 4)
		return 0;
	letter = s[2];
	if (strchr("slodiphvSLODIPHV", letter) == NULL || letter == '\0')
		return 0;
	for (i = 3; i < len && isdigit((unsigned char)s[i]); i++) {
		digits = 1;
		if (val < 1000)
			val = val * 10 + (unsigned long)(s[i] - '0');
	}
	if (digits && val == 0)		/* 7.3: "the value MUST be nonzero" */
		return 0;
	if (i < len && (s[i] == 'r' || s[i] == 'R')) {
		rev = 1;
		i++;
	}
	spf_put(out, "%{", 2);
	spf_putc(out, letter);
	if (digits) {
		snprintf(num, sizeof num, "%lu", val > 128 ? 128 : val);
		spf_puts(out, num);
	}
	if (rev)
		spf_putc(out, 'r');
	for (; i < len && strchr(".-+,/_=", s[i]) != NULL && s[i] != '\0'; i++)
		spf_putc(out, s[i]);
	if (i >= len || s[i] != '}')
		return 0;
	spf_putc(out, '}');
	return i + 1;
}

/*
 * RFC 7208 7.1 toplabel: ( *alphanum ALPHA *alphanum ) /
 * ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
 */
static int
spf_toplabel(const char *s, size_t n)
{
	size_t	i;
	int	alpha = 0, dash = 0;

	if (n == 0 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		if (isalpha((unsigned char)s[i]))
			alpha = 1;
		else if (s[i] == '-')
			dash = 1;
		else if (!isdigit((unsigned char)s[i]))
			return 0;
	}
	return alpha || dash;
}

/*
 * RFC 7208 7.1: domain-spec = macro-string domain-end, domain-end =
 * ( "." toplabel [ "." ] ) / macro-expand.  Writes the canonical form to
 * out and adds an upper bound of libspf2's compiled size to *data.
 * 0 valid, -1 not.
 */
static int
spf_domain_spec(const char *s, size_t len, struct spf_buf *out, size_t *data)
{
	size_t	i = 0, n, run = 0, tail = 0, dot;
	int	last_macro = 0;

	if (len == 0)
		return -1;
	while (i < len) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return -1;	/* macro-literal: visible ASCII */
		if (s[i] == '%') {
			if ((n = spf_macro(s + i, len - i, out)) == 0)
				return -1;
			if (run > 0)
				*data += SPF_LITERAL_DATA(run);
			run = 0;
			*data += 4;	/* SPF_data_var_t */
			i += n;
			tail = i;
			last_macro = 1;
			continue;
		}
		spf_putc(out, s[i]);
		run++;
		i++;
		last_macro = 0;
	}
	if (run > 0)
		*data += SPF_LITERAL_DATA(run);
	if (last_macro)
		return 0;
	/* The literal tail must end in "." toplabel, maybe with a final ".". */
	n = len;
	if (n > tail && s[n - 1] == '.')
		n--;
	for (dot = n; dot > tail && s[dot - 1] != '.'; dot--)
		;
	if (dot == tail)
		return -1;	/* no "." before the toplabel */
	return spf_toplabel(s + dot, n - dot) ? 0 : -1;
}

/* RFC 7208 4.6.1 macro-string (unknown modifiers): 0 valid, -1 not. */
static int
spf_macro_string(const char *s, size_t len)
{
	size_t	i = 0, n;

	while (i < len) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return -1;
		if (s[i] == '%') {
			if ((n = spf_macro(s + i, len - i, NULL)) == 0)
				return -1;
			i += n;
		} else
			i++;
	}
	return 0;
}

/* "/" ("0" / %x31-39 0*(maxdigits-1)DIGIT), value <= max: -1 if not. */
static int
spf_cidr(const char *s, size_t len, int max)
{
	size_t	i;
	int	v = 0;

	if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v <= max ? v : -1;
}

/* ip4-network: four qnum, no leading zeros (RFC 7208 5.6). */
static int
spf_ip4_network(const char *s, size_t len, struct in_addr *a)
{
	char	buf[16];
	size_t	i, digits = 0, dots = 0;

	if (len == 0 || len >= sizeof buf)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (digits == 0)
				return -1;
			dots++;
			digits = 0;
		} else if (isdigit((unsigned char)s[i])) {
			if (digits == 1 && s[i - 1] == '0')
				return -1;
			if (++digits > 3)
				return -1;
		} else
			return -1;
	}
	if (dots != 3 || digits == 0)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET, buf, a) == 1 ? 0 : -1;
}

static int
spf_ip6_network(const char *s, size_t len, struct in6_addr *a)
{
	char	buf[INET6_ADDRSTRLEN + 1];

	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET6, buf, a) == 1 ? 0 : -1;
}

enum spf_mech {
	SPF_M_ALL = 0,
	SPF_M_INCLUDE,
	SPF_M_A,
	SPF_M_MX,
	SPF_M_PTR,
	SPF_M_IP4,
	SPF_M_IP6,
	SPF_M_EXISTS,
	SPF_M_COUNT	/* must be last */
};

static const char *const spf_mech_names[SPF_M_COUNT] = {
	[SPF_M_ALL] = "all", [SPF_M_INCLUDE] = "include", [SPF_M_A] = "a",
	[SPF_M_MX] = "mx", [SPF_M_PTR] = "ptr", [SPF_M_IP4] = "ip4",
	[SPF_M_IP6] = "ip6", [SPF_M_EXISTS] = "exists",
};

/* The rewrite being built, and what the record parser reports. */
struct spf_canon {
	struct spf_buf	 out;
	int		 family;
	const char	*nonce;
	const char	*why;		/* permerror reason */
};

/*
 * One directive (RFC 7208 4.6.2, 5): validate and append its canonical
 * form.  0 ok, -1 permerror (c->why set).
 */
static int
spf_directive(struct spf_canon *c, const char *t, size_t len)
{
	struct spf_buf	 spec;
	char		 specbuf[SPF_RECORD_MAX + 1];
	char		 suffix[64];
	struct in_addr	 a4;
	struct in6_addr	 a6;
	size_t		 i, namelen, speclen = 0, data = 0, j;
	const char	*rest, *sp = NULL, *slash;
	enum spf_mech	 m;
	char		 q = '+';
	int		 c4 = -1, c6 = -1, v;

	if (len > 0 && strchr("+-?~", t[0]) != NULL) {
		q = t[0];
		t++;
		len--;
	}
	for (namelen = 0; namelen < len && isalnum((unsigned char)t[namelen]); namelen++)
		;
	for (m = 0; m < SPF_M_COUNT; m++)
		if (strlen(spf_mech_names[m]) == namelen &&
		    strncasecmp(t, spf_mech_names[m], namelen) == 0)
			break;
	if (m == SPF_M_COUNT || namelen == 0) {
		c->why = "unknown mechanism";		/* 5: permerror */
		return -1;
	}
	rest = t + namelen;
	len -= namelen;
	if (len > 0 && rest[0] != ':' && rest[0] != '/') {
		c->why = "unknown mechanism";
		return -1;
	}

	switch (m) {
	case SPF_M_ALL:
		if (len != 0) {
			c->why = "syntax error in all";
			return -1;
		}
		break;
	case SPF_M_INCLUDE:
	case SPF_M_EXISTS:
	case SPF_M_PTR:
		if (len == 0 && m == SPF_M_PTR)
			break;
		if (len < 2 || rest[0] != ':') {
			c->why = m == SPF_M_PTR ? "syntax error in ptr" :
			    "domain-spec required";
			return -1;
		}
		sp = rest + 1;
		speclen = len - 1;
		break;
	case SPF_M_A:
	case SPF_M_MX:
		/* [ ":" domain-spec ] [ ip4-cidr-length ] [ "/" ip6-cidr-length ] */
		j = len;
		for (i = j; i > 0 && isdigit((unsigned char)rest[i - 1]); i--)
			;
		if (i < j && i >= 2 && rest[i - 1] == '/' && rest[i - 2] == '/') {
			if ((c6 = spf_cidr(rest + i, j - i, 128)) < 0) {
				c->why = "bad ip6-cidr-length";
				return -1;
			}
			j = i - 2;
			for (i = j; i > 0 && isdigit((unsigned char)rest[i - 1]); i--)
				;
		}
		if (i < j && i >= 1 && rest[i - 1] == '/') {
			if ((c4 = spf_cidr(rest + i, j - i, 32)) < 0) {
				c->why = "bad ip4-cidr-length";
				return -1;
			}
			j = i - 1;
		}
		if (j > 0) {
			if (rest[0] != ':' || j < 2) {
				c->why = "syntax error in domain-spec";
				return -1;
			}
			sp = rest + 1;
			speclen = j - 1;
		}
		break;
	case SPF_M_IP4:
	case SPF_M_IP6:
		if (len < 2 || rest[0] != ':') {
			c->why = "network required";
			return -1;
		}
		slash = memchr(rest + 1, '/', len - 1);
		i = slash ? (size_t)(slash - rest) : len;
		if (m == SPF_M_IP4 ? spf_ip4_network(rest + 1, i - 1, &a4) :
		    spf_ip6_network(rest + 1, i - 1, &a6)) {
			c->why = m == SPF_M_IP4 ? "bad ip4-network" : "bad ip6-network";
			return -1;
		}
		v = m == SPF_M_IP4 ? 32 : 128;
		if (slash != NULL && (v = spf_cidr(slash + 1, len - i - 1,
		    m == SPF_M_IP4 ? 32 : 128)) < 0) {
			c->why = "bad cidr-length";
			return -1;
		}
		if (m == SPF_M_IP4)
			c4 = v;
		else
			c6 = v;
		break;
	default:
		break;
	}

	spec = (struct spf_buf){ specbuf, sizeof specbuf, 0, 0 };
	specbuf[0] = '\0';
	if (sp != NULL) {
		if (spf_domain_spec(sp, speclen, &spec, &data) == -1) {
			c->why = "syntax error in domain-spec";
			return -1;
		}
		if (spec.over || data > SPF_TERM_DATA_MAX) {
			c->why = "domain-spec too long";
			return -1;
		}
	}

	/* The rewrite; '+' is the default qualifier (4.6.2). */
	switch (m) {
	case SPF_M_IP4:
	case SPF_M_IP6:
		/* 5.6: ip4 never matches an IPv6 connection and vice versa. */
		if ((m == SPF_M_IP4) != (c->family == AF_INET))
			return 0;
		spf_putc(&c->out, ' ');
		if (q != '+')
			spf_putc(&c->out, q);
		if ((m == SPF_M_IP4 ? c4 : c6) == 0) {
			/* x/0 matches every address; libspf2 reads /0 as /32. */
			spf_puts(&c->out, "all");
			return 0;
		}
		spf_put(&c->out, t, namelen + len);
		return 0;
	case SPF_M_A:
	case SPF_M_MX:
		spf_putc(&c->out, ' ');
		if (q != '+')
			spf_putc(&c->out, q);
		spf_puts(&c->out, spf_mech_names[m]);
		v = c->family == AF_INET ? c4 : c6;
		if (v == 0) {
			/*
			 * 5.3, 5.4: a /0 prefix matches when any address
			 * record exists, which libspf2 (reading /0 as /32)
			 * cannot say.  The lookup name gets a suffix only
			 * this message knows; the layer then answers a
			 * non-empty address set with the client's address.
			 */
			snprintf(suffix, sizeof suffix, SPF_ANY_SUFFIX_FMT, c->nonce);
			spf_putc(&c->out, ':');
			spf_puts(&c->out, sp != NULL ? specbuf : "%{d}");
			spf_puts(&c->out, suffix);
			return 0;
		}
		if (sp != NULL) {
			spf_putc(&c->out, ':');
			spf_puts(&c->out, specbuf);
		}
		if (v > 0) {
			snprintf(suffix, sizeof suffix, c->family == AF_INET ? "/%d" :
			    "//%d", v);
			spf_puts(&c->out, suffix);
		}
		return 0;
	default:
		spf_putc(&c->out, ' ');
		if (q != '+')
			spf_putc(&c->out, q);
		spf_puts(&c->out, spf_mech_names[m]);
		if (sp != NULL) {
			spf_putc(&c->out, ':');
			spf_puts(&c->out, specbuf);
		}
		return 0;
	}
}

/*
 * Parse one SPF record (already selected by its "v=spf1" version, 4.5)
 * and write into out the record libspf2 will evaluate.  0 ok, -1
 * permerror with *why.
 */
static int
spf_record_canon(const char *rec, size_t len, int family, const char *nonce,
    char *out, size_t outlen, const char **why)
{
	struct spf_canon c;
	struct spf_buf	 redir;
	char		 redirbuf[SPF_RECORD_MAX + 1];
	size_t		 i, start, n, namelen, data, sign, terms = 0;
	int		 have_all = 0, nredirect = 0, nexp = 0;
	const char	*t, *eq;

	c.out = (struct spf_buf){ out, outlen, 0, 0 };
	c.family = family;
	c.nonce = nonce;
	c.why = NULL;
	redir = (struct spf_buf){ redirbuf, sizeof redirbuf, 0, 0 };
	redirbuf[0] = '\0';
	if (outlen > 0)
		out[0] = '\0';
	*why = NULL;
	if (len > SPF_RECORD_MAX) {
		*why = "record too long";
		return -1;
	}
	if (len < 6 || strncasecmp(rec, "v=spf1", 6) != 0 ||
	    (len > 6 && rec[6] != ' ')) {
		*why = "not an SPF record";
		return -1;
	}
	/* 3.1, 4.6.1: terms are printable ASCII separated by SP only. */
	for (i = 0; i < len; i++)
		if ((unsigned char)rec[i] < 0x20 || (unsigned char)rec[i] > 0x7e) {
			*why = "control or non-ASCII character in record";
			return -1;
		}
	spf_puts(&c.out, "v=spf1");
	for (i = 6; i < len; ) {
		while (i < len && rec[i] == ' ')
			i++;
		if (i >= len)
			break;
		for (start = i; i < len && rec[i] != ' '; i++)
			;
		t = rec + start;
		n = i - start;
		if (++terms > SPF_TERMS_PER_RECORD) {
			*why = "too many terms";
			return -1;
		}
		/* modifier = name "=" ..., name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) */
		eq = memchr(t, '=', n);
		namelen = eq ? (size_t)(eq - t) : 0;
		if (eq != NULL && namelen > 0 && isalpha((unsigned char)t[0]) &&
		    strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789-_.") >= namelen) {
			data = 0;
			if (namelen == 8 && strncasecmp(t, "redirect", 8) == 0) {
				/* 6: redirect and exp at most once each */
				if (++nredirect > 1) {
					*why = "redirect appears twice";
					return -1;
				}
				if (spf_domain_spec(eq + 1, n - namelen - 1, &redir,
				    &data) == -1 || redir.over ||
				    data > SPF_TERM_DATA_MAX) {
					*why = "syntax error in redirect";
					return -1;
				}
			} else if (namelen == 3 && strncasecmp(t, "exp", 3) == 0) {
				if (++nexp > 1) {
					*why = "exp appears twice";
					return -1;
				}
				if (spf_domain_spec(eq + 1, n - namelen - 1, NULL,
				    &data) == -1) {
					*why = "syntax error in exp";
					return -1;
				}
			} else if (spf_macro_string(eq + 1, n - namelen - 1) == -1) {
				/* 6: unknown modifiers are ignored, but must parse */
				*why = "syntax error in modifier";
				return -1;
			}
			continue;
		}
		/* t[0..n) is not terminated: compare within it. */
		sign = strchr("+-?~", t[0]) != NULL;
		if (n == 3 + sign && strncasecmp(t + sign, "all", 3) == 0)
			have_all = 1;
		if (spf_directive(&c, t, n) == -1) {
			*why = c.why;
			return -1;
		}
	}
	/* 6.1: redirect counts only when no mechanism matched and there is no "all". */
	if (nredirect && !have_all) {
		spf_puts(&c.out, " redirect=");
		spf_puts(&c.out, redirbuf);
	}
	if (c.out.over) {
		*why = "record too long";
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The per-message answer table */

static void
spf_entry_free(struct spf_entry *e)
{
	size_t i;

	if (e->names != NULL)
		for (i = 0; i < e->n; i++)
			free(e->names[i]);
	free(e->names);
	free(e->a);
	free(e->aaaa);
	free(e->spf);
	free(e);
}

static void
spf_msg_free(void *p)
{
	struct spf_msg *m = p;
	struct spf_entry *e, *next;

	if (m == NULL)
		return;
	for (e = m->zone; e != NULL; e = next) {
		next = e->next;
		spf_entry_free(e);
	}
	free(m);
}

static struct spf_entry *
spf_entry_find(const struct spf_msg *m, const char *name, int type)
{
	struct spf_entry *e;

	for (e = m->zone; e != NULL; e = e->next)
		if (e->type == type && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Find or add (name, type); NULL when the table is full or out of memory. */
static struct spf_entry *
spf_entry_want(struct spf_msg *m, const char *name, int type)
{
	struct spf_entry *e;
	size_t len = strlen(name);

	if ((e = spf_entry_find(m, name, type)) != NULL)
		return e;
	if (m->nzone >= SPF_ENTRIES_MAX || (e = calloc(1, sizeof *e + len + 1)) == NULL)
		return NULL;
	memcpy(e->name, name, len + 1);
	e->m = m;
	e->type = type;
	e->state = SPF_ST_WANTED;
	*m->zone_tail = e;
	m->zone_tail = &e->next;
	m->nzone++;
	return e;
}

/*
 * A name from a record or macro expansion as the text of a query:
 * RFC 1035 5.1 presentation form with the specials escaped (a local part
 * may hold '"', '\\' or '(' ...), lower case.  -1 when it is no name:
 * an empty label or one over 63 octets.  Longer than 253 octets, the
 * left labels are dropped (RFC 7208 4.8).
 */
static int
spf_query_name(const char *raw, char *out, size_t outlen)
{
	struct spf_buf	 b = { out, outlen, 0, 0 };
	size_t		 len = strlen(raw), label = 0, i;
	char		 esc[8];

	if (len > 0 && raw[len - 1] == '.')
		len--;
	while (len > SPF_DOMAIN_MAX) {
		const char *dot = memchr(raw, '.', len);

		if (dot == NULL)
			return -1;
		len -= (size_t)(dot + 1 - raw);
		raw = dot + 1;
	}
	if (len == 0)
		return -1;
	out[0] = '\0';
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)raw[i];

		if (ch == '.') {
			if (label == 0)
				return -1;
			label = 0;
			spf_putc(&b, '.');
			continue;
		}
		if (++label > 63)
			return -1;
		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '*' || ch == '/' ||
		    ch == '+' || ch == '=' || ch == '%' || ch == '~' || ch == '&' ||
		    ch == '!' || ch == '#' || ch == '\'' || ch == '^' || ch == '`' ||
		    ch == '{' || ch == '|' || ch == '}' || ch == ',' || ch == ':' ||
		    ch == '<' || ch == '>' || ch == '?' || ch == '[' || ch == ']')
			spf_putc(&b, (char)tolower(ch));
		else {
			snprintf(esc, sizeof esc, "\\%03u", ch);
			spf_puts(&b, esc);
		}
	}
	if (label == 0 || b.over)
		return -1;
	return 0;
}

/* A name from a DNS answer (presentation form already): lower case, no final dot. */
static int
spf_answer_name(const char *name, char *out, size_t outlen)
{
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.' && !(len > 1 && name[len - 2] == '\\'))
		len--;
	if (len == 0 || len >= outlen)
		return -1;
	memcpy(out, name, len);
	out[len] = '\0';
	spf_lower(out);
	return 0;
}

/*
 * Store a DNS answer in e.  rcode is the RCODE (-1: no answer).  RFC
 * 7208 2.6.6 / 4.4: NXDOMAIN is HOST_NOT_FOUND, NOERROR without a record
 * of the type NO_DATA, anything else (SERVFAIL, timeout, REFUSED, a
 * packet that does not parse or is truncated) TRY_AGAIN: temperror.
 * CNAME chains in the answer are followed (at most 16 links).
 */
static void
spf_answer(struct spf_entry *e, int rcode, const unsigned char *pkt, size_t len)
{
	char		 chain[17][NS_MAXDNAME];
	char		 buf[NS_MAXDNAME], txt[SPF_RECORD_MAX + 1];
	char		 canon[SPF_CANON_MAX];
	ns_msg		 msg;
	ns_rr		 rr;
	size_t		 nchain = 1, k, txtlen, i;
	int		 count, grew, r;
	const unsigned char *rd, *rdend;
	const char	*why;

	e->state = SPF_ST_DONE;
	e->herrno = TRY_AGAIN;
	if (rcode == 3) {
		e->herrno = HOST_NOT_FOUND;
		return;
	}
	if (rcode != 0 || pkt == NULL || len == 0 || len > 65535 ||
	    ns_initparse(pkt, (int)len, &msg) == -1 || ns_msg_getflag(msg, ns_f_tc))
		return;
	/* The question must be ours: the same name, in the resolver's spelling. */
	if (ns_msg_count(msg, ns_s_qd) != 1 || ns_parserr(&msg, ns_s_qd, 0, &rr) == -1 ||
	    (int)ns_rr_type(rr) != e->type ||
	    spf_answer_name(ns_rr_name(rr), chain[0], sizeof chain[0]) == -1)
		return;
	if (ns_name_pton(e->name, (unsigned char *)buf, sizeof buf) == -1 ||
	    ns_name_ntop((unsigned char *)buf, txt, sizeof txt) == -1 ||
	    spf_answer_name(txt, buf, sizeof buf) == -1 ||
	    strcmp(buf, chain[0]) != 0)
		return;
	count = ns_msg_count(msg, ns_s_an);
	/* Follow CNAMEs (RRs may come in any order). */
	do {
		grew = 0;
		for (r = 0; r < count && nchain < sizeof chain / sizeof chain[0]; r++) {
			if (ns_parserr(&msg, ns_s_an, r, &rr) == -1)
				return;
			if (ns_rr_type(rr) != ns_t_cname || ns_rr_class(rr) != ns_c_in ||
			    spf_answer_name(ns_rr_name(rr), buf, sizeof buf) == -1 ||
			    strcmp(buf, chain[nchain - 1]) != 0)
				continue;
			if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg),
			    ns_rr_rdata(rr), txt, sizeof txt) == -1 ||
			    spf_answer_name(txt, chain[nchain], sizeof chain[0]) == -1)
				return;
			for (k = 0; k < nchain && strcmp(chain[k], chain[nchain]) != 0; k++)
				;
			if (k < nchain)
				break;		/* a loop: what we have is all there is */
			nchain++;
			grew = 1;
		}
	} while (grew);

	e->herrno = NO_DATA;
	for (r = 0; r < count; r++) {
		if (ns_parserr(&msg, ns_s_an, r, &rr) == -1) {
			e->herrno = TRY_AGAIN;
			return;
		}
		if ((int)ns_rr_type(rr) != e->type || ns_rr_class(rr) != ns_c_in ||
		    spf_answer_name(ns_rr_name(rr), buf, sizeof buf) == -1)
			continue;
		for (k = 0; k < nchain && strcmp(chain[k], buf) != 0; k++)
			;
		if (k == nchain)
			continue;
		rd = ns_rr_rdata(rr);
		rdend = rd + ns_rr_rdlen(rr);
		switch (e->type) {
		case ns_t_a:
			if (ns_rr_rdlen(rr) != 4 || e->n >= SPF_ADDRS_MAX)
				continue;
			if (e->a == NULL && (e->a = calloc(SPF_ADDRS_MAX, sizeof *e->a)) == NULL)
				goto oom;
			memcpy(&e->a[e->n++], rd, 4);
			break;
		case ns_t_aaaa:
			if (ns_rr_rdlen(rr) != 16 || e->n >= SPF_ADDRS_MAX)
				continue;
			if (e->aaaa == NULL &&
			    (e->aaaa = calloc(SPF_ADDRS_MAX, sizeof *e->aaaa)) == NULL)
				goto oom;
			memcpy(&e->aaaa[e->n++], rd, 16);
			break;
		case ns_t_mx:
		case ns_t_ptr:
			/* 4.6.4: only 10 are used (an 11th MX makes a permerror). */
			if (e->n >= (e->type == ns_t_mx ? SPF_MX_KEEP : SPF_NAMES_MAX))
				continue;
			if (e->type == ns_t_mx && ns_rr_rdlen(rr) < 3)
				continue;
			if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg),
			    rd + (e->type == ns_t_mx ? 2 : 0), txt, sizeof txt) == -1)
				continue;
			if (spf_answer_name(txt, buf, sizeof buf) == -1)
				buf[0] = '\0';	/* the root: RFC 7505 null MX */
			if (e->names == NULL &&
			    (e->names = calloc(SPF_MX_KEEP, sizeof *e->names)) == NULL)
				goto oom;
			if ((e->names[e->n] = strdup(buf)) == NULL)
				goto oom;
			e->n++;
			break;
		case ns_t_txt:
			/* 3.3: the strings of one TXT record are joined without spaces. */
			for (txtlen = 0; rd < rdend; ) {
				size_t sl = *rd++;

				if (sl > (size_t)(rdend - rd)) {
					e->herrno = TRY_AGAIN;
					return;
				}
				if (txtlen + sl <= SPF_RECORD_MAX)
					memcpy(txt + txtlen, rd, sl);
				txtlen += sl;
				rd += sl;
			}
			e->n++;
			/* 4.5: keep records that start with "v=spf1" and SP or end. */
			if (txtlen < 6 || strncasecmp(txt, "v=spf1", 6) != 0 ||
			    (txtlen > 6 && txt[6] != ' '))
				continue;
			if (++e->nspf > 1) {
				free(e->spf);
				e->spf = NULL;
				snprintf(e->why, sizeof e->why, "more than one SPF record");
				continue;
			}
			if (txtlen > SPF_RECORD_MAX) {
				snprintf(e->why, sizeof e->why, "record too long");
				continue;
			}
			for (i = 0; i < txtlen; i++)
				if (txt[i] == '\0')
					break;
			if (i < txtlen) {
				snprintf(e->why, sizeof e->why, "NUL in record");
				continue;
			}
			txt[txtlen] = '\0';
			if (spf_record_canon(txt, txtlen, e->m->family, e->m->nonce,
			    canon, sizeof canon, &why) == -1) {
				snprintf(e->why, sizeof e->why, "%s", why);
				continue;
			}
			if ((e->spf = strdup(canon)) == NULL)
				goto oom;
			break;
		default:
			continue;
		}
		e->herrno = NETDB_SUCCESS;
	}
	if (e->type == ns_t_txt && e->n > 0)
		e->herrno = NETDB_SUCCESS;	/* TXT records, maybe none of them SPF */
	return;
oom:
	e->herrno = TRY_AGAIN;
}

/* ------------------------------------------------------------------ */
/* The libspf2 DNS layer */

static SPF_dns_rr_t *
spf_rr_status(SPF_dns_server_t *s, const char *domain, ns_type type, int herrno)
{
	return SPF_dns_rr_new_init(s, domain, type, 0, herrno);
}

static void
spf_force(struct spf_pass *p, const char *why)
{
	p->forced = 1;
	p->stopped = 1;
	snprintf(p->why, sizeof p->why, "%s", why);
}

/* RFC 7208 4.6.4: a void lookup is NXDOMAIN or NOERROR without records. */
static int
spf_void(struct spf_pass *p, const struct spf_entry *e)
{
	if (e->herrno != HOST_NOT_FOUND && e->herrno != NO_DATA)
		return 0;
	if (++p->voids > SPF_VOIDS_MAX) {
		spf_force(p, "more than 2 void lookups");
		return -1;
	}
	return 0;
}

static int
spf_has_client(const struct spf_msg *m, const struct spf_entry *e)
{
	size_t i;

	for (i = 0; i < e->n; i++)
		if ((e->type == ns_t_a && m->family == AF_INET &&
		    e->a[i].s_addr == m->ip4.s_addr) ||
		    (e->type == ns_t_aaaa && m->family == AF_INET6 &&
		    memcmp(&e->aaaa[i], &m->ip6, sizeof m->ip6) == 0))
			return 1;
	return 0;
}

/*
 * Build the answer libspf2 gets.  client_only: answer a non-empty
 * address set with the client's own address (the x/0 prefixes).
 * tag: prefix each MX/PTR name with it (0 = none).
 */
static SPF_dns_rr_t *
spf_rr_build(SPF_dns_server_t *s, const char *domain, ns_type type,
    const struct spf_entry *e, int client_only, char tag, const size_t *order)
{
	const struct spf_msg *m = e->m;
	SPF_dns_rr_t	*rr;
	size_t		 i, n = e->n, len, k;

	if (e->herrno != NETDB_SUCCESS || e->n == 0)
		return spf_rr_status(s, domain, type,
		    e->herrno == NETDB_SUCCESS ? NO_DATA : e->herrno);
	if ((rr = SPF_dns_rr_new_init(s, domain, type, 0, NETDB_SUCCESS)) == NULL)
		return NULL;
	if (client_only)
		n = 1;
	for (i = 0; i < n; i++) {
		switch (type) {
		case ns_t_a:
			if (SPF_dns_rr_buf_realloc(rr, (int)i, sizeof(struct in_addr)) !=
			    SPF_E_SUCCESS)
				goto fail;
			rr->rr[i]->a = client_only ? m->ip4 : e->a[i];
			break;
		case ns_t_aaaa:
			if (SPF_dns_rr_buf_realloc(rr, (int)i, sizeof(struct in6_addr)) !=
			    SPF_E_SUCCESS)
				goto fail;
			rr->rr[i]->aaaa = client_only ? m->ip6 : e->aaaa[i];
			break;
		case ns_t_mx:
		case ns_t_ptr:
			k = order != NULL ? order[i] : i;
			len = strlen(e->names[k]) + 3;
			if (SPF_dns_rr_buf_realloc(rr, (int)i, len) != SPF_E_SUCCESS)
				goto fail;
			if (tag)
				snprintf(rr->rr[i]->mx, len, "%c.%s", tag, e->names[k]);
			else
				snprintf(rr->rr[i]->mx, len, "%s", e->names[k]);
			break;
		case ns_t_txt:
			len = strlen(e->spf) + 1;
			if (SPF_dns_rr_buf_realloc(rr, (int)i, len) != SPF_E_SUCCESS)
				goto fail;
			memcpy(rr->rr[i]->txt, e->spf, len);
			n = 1;
			break;
		default:
			goto fail;
		}
		rr->num_rr = (int)i + 1;
	}
	return rr;
fail:
	SPF_dns_rr_free(rr);
	return spf_rr_status(s, domain, type, TRY_AGAIN);
}

/* 0: name is <domain>, 1: a subdomain of it, 2: anything else (RFC 7208 7.3). */
static int
spf_p_rank(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);

	if (strcasecmp(name, domain) == 0)
		return 0;
	if (n > d && name[n - d - 1] == '.' && strcasecmp(name + n - d, domain) == 0)
		return 1;
	return 2;
}

/* The p macro's PTR names in the order of preference, for libspf2 and for us. */
static void
spf_p_order(struct spf_pass *p, const struct spf_entry *e)
{
	const char	*dom = p->req != NULL && p->req->cur_dom != NULL ?
			    p->req->cur_dom : "";
	size_t		 i;
	int		 rank;

	p->p_ptr = NULL;
	p->p_n = 0;
	p->p_idx = 0;
	if (e->herrno != NETDB_SUCCESS)
		return;
	for (rank = 0; rank <= 2; rank++)
		for (i = 0; i < e->n && i < SPF_NAMES_MAX; i++)
			if (spf_p_rank(e->names[i], dom) == rank)
				p->p_order[p->p_n++] = i;
	if (p->p_n > 0)
		p->p_ptr = e;
}

/*
 * libspf2's only resolver.  Roles of a lookup, told apart without
 * guessing:
 *	first TXT of the pass	the checked domain: not a term
 *	later TXT		include or redirect: a term
 *	MX; PTR (cached)	mx, ptr: a term
 *	PTR (not cached)	libspf2's p macro: counted once (4.6.4)
 *	A/AAAA, tagged name	address of an MX/PTR name: not a term
 *	A/AAAA after p's PTR	p macro validation (exact name order)
 *	other A/AAAA		a, exists: a term
 * A term's own lookup that finds nothing is a void lookup.
 */
static SPF_dns_rr_t *
spf_layer_lookup(SPF_dns_server_t *s, const char *domain, ns_type type,
    int should_cache)
{
	struct spf_pass	*p = spf_cur;
	struct spf_msg	*m;
	struct spf_entry *e;
	char		 raw[SPF_NAME_BUF], name[SPF_NAME_BUF], suffix[64];
	char		 tag = 0;
	size_t		 len, slen;
	int		 any = 0, term = 0, pmacro = 0, pvalid = 0;

	if (p == NULL || domain == NULL)
		return spf_rr_status(s, domain ? domain : "", type, TRY_AGAIN);
	m = p->m;
	/* RFC 7208 3.1, 4.4: only TXT; type SPF (99) is no longer used. */
	if (type != ns_t_txt && type != ns_t_a && type != ns_t_aaaa &&
	    type != ns_t_mx && type != ns_t_ptr)
		return spf_rr_status(s, domain, type, NO_DATA);
	if (p->stopped)
		return spf_rr_status(s, domain, type, TRY_AGAIN);

	if ((domain[0] == SPF_TAG_MX || domain[0] == SPF_TAG_MX_ANY ||
	    domain[0] == SPF_TAG_PTR) && domain[1] == '.') {
		tag = domain[0];
		domain += 2;
	}
	if ((len = strlen(domain)) >= sizeof raw)
		return spf_rr_status(s, domain, type, HOST_NOT_FOUND);
	memcpy(raw, domain, len + 1);
	if (len > 0 && raw[len - 1] == '.')
		raw[--len] = '\0';
	snprintf(suffix, sizeof suffix, SPF_ANY_SUFFIX_FMT, m->nonce);
	slen = strlen(suffix);
	if (tag == 0 && len > slen && strcasecmp(raw + len - slen, suffix) == 0) {
		any = 1;
		raw[len - slen] = '\0';
	}

	switch (type) {
	case ns_t_txt:
		if (!p->first_done)
			p->first_done = 1;
		else
			term = 1;
		break;
	case ns_t_mx:
		term = 1;
		break;
	case ns_t_ptr:
		if (should_cache)
			term = 1;
		else
			pmacro = 1;
		break;
	default:
		if (tag != 0)
			break;
		if (!should_cache && p->p_ptr != NULL && p->p_idx < p->p_n &&
		    spf_answer_name(raw, name, sizeof name) == 0 &&
		    strcmp(name, p->p_ptr->names[p->p_order[p->p_idx]]) == 0) {
			pvalid = 1;
			break;
		}
		term = 1;
		break;
	}
	if (term && ++p->terms > SPF_TERMS_MAX) {
		spf_force(p, "more than 10 DNS-querying terms");
		return spf_rr_status(s, domain, type, TRY_AGAIN);
	}
	if (pmacro && !p->p_counted) {
		p->p_counted = 1;
		if (++p->terms > SPF_TERMS_MAX) {
			spf_force(p, "more than 10 DNS-querying terms");
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		}
	}

	/* Names from DNS answers are in presentation form already. */
	if ((tag != 0 || pvalid) ? spf_answer_name(raw, name, sizeof name) :
	    spf_query_name(raw, name, sizeof name))
		return spf_rr_status(s, domain, type, HOST_NOT_FOUND);

	if ((e = spf_entry_find(m, name, type)) == NULL || e->state != SPF_ST_DONE) {
		if (e == NULL && (e = spf_entry_want(m, name, type)) == NULL) {
			/* The table is full (or no memory): temperror, not a miss. */
			p->stopped = 1;
			snprintf(p->why, sizeof p->why, "too many DNS lookups");
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		}
		p->missed = 1;
		p->stopped = 1;
		return spf_rr_status(s, domain, type, TRY_AGAIN);
	}

	switch (type) {
	case ns_t_txt:
		if (term && spf_void(p, e) == -1)
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		if (e->herrno != NETDB_SUCCESS)
			return spf_rr_status(s, domain, type, e->herrno);
		if (e->nspf == 0)
			return spf_rr_status(s, domain, type, NO_DATA);	/* 4.5: none */
		if (e->spf == NULL) {
			/* 4.5 more than one record, 4.6 syntax: permerror */
			spf_force(p, e->why);
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		}
		return spf_rr_build(s, domain, type, e, 0, 0, NULL);
	case ns_t_mx:
		if (spf_void(p, e) == -1)
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		/*
		 * 4.6.4: more than 10 address lookups for one mx is a
		 * permerror.  The suite (mx-limit) settles the RFC 4408
		 * debate: more than 10 MX records is a permerror whatever
		 * their order, which DNS does not fix anyway.
		 */
		if (e->herrno == NETDB_SUCCESS && e->n > SPF_NAMES_MAX) {
			spf_force(p, "more than 10 MX records");
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		}
		return spf_rr_build(s, domain, type, e, 0, any ? SPF_TAG_MX_ANY : SPF_TAG_MX,
		    NULL);
	case ns_t_ptr:
		if (pmacro) {
			/*
			 * 7.3: of the validated names, <domain> itself SHOULD
			 * be used, else a subdomain of it, else any.  libspf2
			 * takes the first name that validates (5.5), so it
			 * gets them in that order; the layer follows along.
			 */
			spf_p_order(p, e);
			return spf_rr_build(s, domain, type, e, 0, 0, p->p_order);
		}
		if (spf_void(p, e) == -1)
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		return spf_rr_build(s, domain, type, e, 0, SPF_TAG_PTR, NULL);
	default:
		if (pvalid) {
			/* libspf2 stops at the first name that has the client's address */
			if (spf_has_client(m, e) || ++p->p_idx >= p->p_n)
				p->p_ptr = NULL;
			if (e->herrno == TRY_AGAIN)
				return spf_rr_status(s, domain, type, NO_DATA);
			return spf_rr_build(s, domain, type, e, 0, 0, NULL);
		}
		if (tag == SPF_TAG_PTR && e->herrno == TRY_AGAIN)
			return spf_rr_status(s, domain, type, NO_DATA);	/* 5.5: skip it */
		if (term && spf_void(p, e) == -1)
			return spf_rr_status(s, domain, type, TRY_AGAIN);
		return spf_rr_build(s, domain, type, e, any || tag == SPF_TAG_MX_ANY, 0, NULL);
	}
}

/* The layer is stateless (the pass comes through spf_cur): one for all. */
static SPF_dns_server_t spf_layer = {
	.lookup = spf_layer_lookup,
	.name = "frontmx",
};

static pthread_once_t spf_once = PTHREAD_ONCE_INIT;

static void
spf_global_init(void)
{
	/*
	 * libspf2 prints warnings and notices on stderr by default; it has
	 * nothing to say that the filter does not log itself.  The error
	 * handler stays: it runs right before an abort().
	 */
	SPF_warning_handler = NULL;
	SPF_info_handler = NULL;
	SPF_debug_handler = NULL;
}

/* ------------------------------------------------------------------ */
/* One evaluation pass */

static enum spf_result
spf_map(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS:
		return SPF_R_PASS;
	case SPF_RESULT_FAIL:
		return SPF_R_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_R_SOFTFAIL;
	case SPF_RESULT_NEUTRAL:
		return SPF_R_NEUTRAL;
	case SPF_RESULT_NONE:
		return SPF_R_NONE;
	case SPF_RESULT_PERMERROR:
		return SPF_R_PERMERROR;
	case SPF_RESULT_TEMPERROR:
	case SPF_RESULT_INVALID:	/* libspf2's TRY_AGAIN on the first lookup */
	default:
		return SPF_R_TEMPERROR;
	}
}

/*
 * Run check_host() once against what the table knows.  1: c->result is
 * final; 0: answers are missing (the table has WANTED entries).
 */
static int
spf_pass_run(struct spf_msg *m, struct spf_check *c)
{
	SPF_server_t	*srv = m->inst->server;
	SPF_request_t	*req;
	SPF_response_t	*resp;
	SPF_record_t	*rec = NULL;
	SPF_errcode_t	 err;
	struct spf_pass	 p;
	enum spf_result	 r;

	memset(&p, 0, sizeof p);
	p.m = m;
	c->why[0] = '\0';
	if ((req = SPF_request_new(srv)) == NULL) {
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "out of memory");
		return 1;
	}
	if (m->family == AF_INET)
		SPF_request_set_ipv4(req, m->ip4);
	else
		SPF_request_set_ipv6(req, m->ip6);
	/* %{h}: the HELO as given, even when it is not a domain (7.3). */
	if (SPF_request_set_env_from(req, c->sender) != SPF_E_SUCCESS ||
	    SPF_request_set_helo_dom(req, m->helo[0] ? m->helo : "unknown") !=
	    SPF_E_SUCCESS || (resp = SPF_response_new(req)) == NULL) {
		SPF_request_free(req);
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "out of memory");
		return 1;
	}
	/*
	 * What SPF_request_query_mailfrom() does, minus its free pass for
	 * loopback clients and with a compile failure of the first record
	 * reported as permerror (libspf2 leaves the result INVALID).
	 */
	req->cur_dom = c->domain;
	p.req = req;
	spf_cur = &p;
	err = SPF_server_get_record(srv, req, resp, &rec);
	if (err == SPF_E_SUCCESS) {
		resp->spf_record_exp = rec;
		SPF_record_interpret(rec, req, resp, 0);
		r = spf_map(SPF_response_result(resp));
		if (r == SPF_R_PERMERROR || r == SPF_R_TEMPERROR)
			snprintf(c->why, sizeof c->why, "%s",
			    SPF_strerror(SPF_response_errcode(resp)));
	} else {
		switch (SPF_response_result(resp)) {
		case SPF_RESULT_NONE:
			r = SPF_R_NONE;
			break;
		case SPF_RESULT_PERMERROR:
			r = SPF_R_PERMERROR;
			break;
		case SPF_RESULT_TEMPERROR:
			r = SPF_R_TEMPERROR;
			break;
		default:
			r = err == SPF_E_DNS_ERROR ? SPF_R_TEMPERROR : SPF_R_PERMERROR;
			break;
		}
		snprintf(c->why, sizeof c->why, "%s", SPF_strerror(err));
	}
	spf_cur = NULL;
	if (rec != NULL)
		SPF_record_free(rec);
	SPF_response_free(resp);
	SPF_request_free(req);
	c->passes++;

	if (p.forced) {
		c->result = SPF_R_PERMERROR;
		snprintf(c->why, sizeof c->why, "%s", p.why);
		return 1;
	}
	if (p.missed)
		return 0;
	if (p.stopped) {	/* the table was full: no answer to wait for */
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "%s", p.why);
		return 1;
	}
	c->result = r;
	if (r == SPF_R_TEMPERROR)
		snprintf(c->why, sizeof c->why, "DNS lookup failed");
	return 1;
}

/* ------------------------------------------------------------------ */
/* Asynchronous driver */

static void	spf_dns_cb(struct fmx_ctx *, void *, int, const unsigned char *, size_t);

/*
 * Once an MX or PTR answer is in, the address records of its names will
 * be asked for next (unless a name matches first): ask for them now, in
 * the same round trip.  At most the 10 names 4.6.4 allows.
 */
static void
spf_prefetch(struct spf_msg *m, const struct spf_entry *e)
{
	size_t i;

	if ((e->type != ns_t_mx && e->type != ns_t_ptr) ||
	    e->herrno != NETDB_SUCCESS)
		return;
	for (i = 0; i < e->n && i < SPF_NAMES_MAX; i++)
		if (e->names[i][0] != '\0')
			(void)spf_entry_want(m, e->names[i],
			    m->family == AF_INET ? ns_t_a : ns_t_aaaa);
}

/* Ask the core for every WANTED entry (answers may come back at once). */
static void
spf_issue(struct fmx_ctx *ctx, struct spf_msg *m)
{
	const struct fmx_api *api = m->inst->api;
	struct spf_entry *e;

	for (e = m->zone; e != NULL; e = e->next) {
		if (e->state != SPF_ST_WANTED)
			continue;
		e->state = SPF_ST_ASKED;
		m->outstanding++;
		m->queries++;
		if (api->dns_query(ctx, e->name, e->type, spf_dns_cb, e) == -1) {
			/* No resolver, or it refused: temperror (2.6.7). */
			if (e->state == SPF_ST_ASKED) {
				m->outstanding--;
				e->state = SPF_ST_DONE;
				e->herrno = TRY_AGAIN;
			}
		}
	}
}

/*
 * <sender> of check_host() from MAIL FROM: a quoted local part (RFC 5321
 * 4.1.2 Quoted-string) stands for its value, so "Macro Error"@d is the
 * sender Macro Error@d, and an empty one, ""@d, has no local part, which
 * makes it postmaster@d (RFC 7208 4.3).
 */
static void
spf_sender(char *out, size_t outlen, const char *from, const char *at)
{
	struct spf_buf	 b = { out, outlen, 0, 0 };
	const char	*s;

	out[0] = '\0';
	if (from[0] == '"' && at - from >= 2 && at[-1] == '"') {
		for (s = from + 1; s < at - 1; s++) {
			if (*s == '\\' && s + 1 < at - 1)
				s++;
			spf_putc(&b, *s);
		}
	} else
		spf_put(&b, from, (size_t)(at - from));
	if (b.len == 0)
		spf_puts(&b, "postmaster");
	spf_puts(&b, at);
	if (b.over)
		snprintf(out, outlen, "%s", from);
}

/*
 * Set up one check.  The HELO identity and the null reverse-path use
 * postmaster@<HELO> (RFC 7208 2.3, 2.4); a MAIL FROM without a local
 * part gets "postmaster" (4.3).  A domain that is no domain name makes
 * the check's result "none" (4.3) without any lookup.
 */
static void
spf_check_setup(struct spf_msg *m, struct spf_check *c, enum spf_identity id)
{
	const char	*at;
	size_t		 len;

	memset(c, 0, sizeof *c);
	c->identity = id;
	c->result = SPF_R_NONE;
	c->state = SPF_CK_DONE;
	if (id == SPF_ID_HELO || m->from[0] == '\0') {
		snprintf(c->domain, sizeof c->domain, "%s", m->helo);
		snprintf(c->sender, sizeof c->sender, "postmaster@%s", m->helo);
		if (!m->helo_ok) {
			snprintf(c->why, sizeof c->why, "HELO name is not a domain name");
			return;
		}
	} else {
		at = strrchr(m->from, '@');
		snprintf(c->domain, sizeof c->domain, "%s", at ? at + 1 : "");
		if (at == NULL || !spf_domain_ok(at + 1)) {
			snprintf(c->sender, sizeof c->sender, "%s", m->from);
			snprintf(c->why, sizeof c->why, "no valid domain in MAIL FROM");
			return;
		}
		spf_sender(c->sender, sizeof c->sender, m->from, at);
	}
	len = strlen(c->domain);
	if (len > 0 && c->domain[len - 1] == '.')
		c->domain[len - 1] = '\0';
	spf_lower(c->domain);
	c->why[0] = '\0';
	c->state = SPF_CK_RUN;
}

/*
 * Run the checks as far as the answers allow: HELO first (2.3), then
 * MAIL FROM unless HELO failed.  1: all done, m->final set; 0: waiting
 * for answers.
 */
static int
spf_drive(struct fmx_ctx *ctx, struct spf_msg *m)
{
	struct spf_check *c;

	m->busy = 1;
	while (!m->done) {
		if (m->helo_chk.state == SPF_CK_RUN)
			c = &m->helo_chk;
		else if (m->helo_chk.state == SPF_CK_DONE &&
		    m->helo_chk.result == SPF_R_FAIL) {
			m->final = &m->helo_chk;	/* 2.3: conclusive */
			m->done = 1;
			break;
		} else if (m->mail_chk.state == SPF_CK_RUN)
			c = &m->mail_chk;
		else {
			m->final = &m->mail_chk;
			m->done = 1;
			break;
		}
		if (c->passes >= m->inst->max_passes) {
			/* 4.6.4: a bound on the work; like a timeout, temperror */
			c->result = SPF_R_TEMPERROR;
			snprintf(c->why, sizeof c->why, "too many DNS round trips");
			c->state = SPF_CK_DONE;
			continue;
		}
		if (spf_pass_run(m, c)) {
			c->state = SPF_CK_DONE;
			continue;
		}
		spf_issue(ctx, m);
		if (m->outstanding > 0) {
			m->busy = 0;
			return 0;
		}
		/* Answered at once (the resolver's cache, or refused): go on. */
	}
	m->busy = 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* What the check says: result, facts, reply, header fields */

/* RFC 5322 3.2.3 dot-atom. */
static int
spf_dot_atom(const char *s)
{
	size_t	i, n = strlen(s);

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return 0;
			continue;
		}
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("!#$%&'*+-/=?^_`{|}~", s[i]) == NULL)
			return 0;
	}
	return 1;
}

/* A dot-atom as is, anything else as an RFC 5322 quoted-string. */
static void
spf_put_value(struct spf_buf *b, const char *v)
{
	if (spf_dot_atom(v)) {
		spf_puts(b, v);
		return;
	}
	spf_putc(b, '"');
	for (; *v != '\0'; v++) {
		if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
			continue;
		if (*v == '"' || *v == '\\')
			spf_putc(b, '\\');
		spf_putc(b, *v);
	}
	spf_putc(b, '"');
}

/*
 * An Authentication-Results property value (RFC 8601 2.2 pvalue):
 * local-part@domain as is when both are dot-atoms, else quoted.  The
 * core's renderer splits properties at white space, so a value with a
 * blank must arrive quoted.
 */
static void
spf_put_pvalue(struct spf_buf *b, const char *v)
{
	char		 local[SPF_ADDR_MAX];
	const char	*at = strrchr(v, '@');
	size_t		 n;

	if (at != NULL && (n = (size_t)(at - v)) < sizeof local) {
		memcpy(local, v, n);
		local[n] = '\0';
		if ((n == 0 || spf_dot_atom(local)) && spf_dot_atom(at + 1)) {
			spf_puts(b, v);
			return;
		}
	}
	spf_put_value(b, v);
}

/* Append " key=value;" only if it fits whole (RFC 7208 9.1 key-value-pair). */
static void
spf_put_kv(struct spf_buf *b, const char *key, const char *value)
{
	char		item[SPF_HEADER_MAX + 1];
	struct spf_buf	t = { item, sizeof item, 0, 0 };

	spf_putc(&t, ' ');
	spf_puts(&t, key);
	spf_putc(&t, '=');
	spf_put_value(&t, value);
	spf_putc(&t, ';');
	if (!t.over && b->len + t.len < b->cap)
		spf_put(b, item, t.len);
}

/* Comment text: '(' ')' '\' quoted (RFC 5322 3.2.2), controls dropped. */
static void
spf_put_ctext(struct spf_buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			continue;
		if (*s == '(' || *s == ')' || *s == '\\')
			spf_putc(b, '\\');
		spf_putc(b, *s);
	}
}

/* The check's finding in words (the comment of RFC 7208 9.1's examples). */
static void
spf_explain(const struct spf_msg *m, const struct spf_check *c, const char *who,
    char *out, size_t outlen)
{
	switch (c->result) {
	case SPF_R_PASS:
		snprintf(out, outlen, "domain of %s designates %s as permitted sender",
		    who, m->ip);
		break;
	case SPF_R_FAIL:
		snprintf(out, outlen, "domain of %s does not designate %s as "
		    "permitted sender", who, m->ip);
		break;
	case SPF_R_SOFTFAIL:
		snprintf(out, outlen, "domain of transitioning %s does not designate "
		    "%s as permitted sender", who, m->ip);
		break;
	case SPF_R_NEUTRAL:
		snprintf(out, outlen, "%s is neither permitted nor denied by domain "
		    "of %s", m->ip, who);
		break;
	case SPF_R_NONE:
		if (c->why[0] != '\0')
			snprintf(out, outlen, "%s: %s", who, c->why);
		else
			snprintf(out, outlen, "domain of %s does not designate "
			    "permitted sender hosts", who);
		break;
	default:
		snprintf(out, outlen, "error in processing during lookup of %s: %s",
		    who, c->why[0] ? c->why : "unknown error");
		break;
	}
}

static void
spf_publish(struct fmx_ctx *ctx, struct spf_msg *m)
{
	const struct fmx_api	*api = m->inst->api;
	const struct spf_check	*c = m->final;
	const char		*res = spf_result_names[c->result];
	const char		*receiver = api->get(ctx, "hostname");
	int			 helo_id = c->identity == SPF_ID_HELO || m->from[0] == '\0';
	char			 who[SPF_ADDR_MAX + 16], text[1024], reply[1024];
	char			 comment[600];
	struct spf_buf		 b, cb;
	const char		*dom = c->domain[0] != '\0' ? c->domain : "(none)";

	if (receiver == NULL || !spf_printable(receiver))
		receiver = "localhost";
	/* Who the finding is about: the HELO domain, or the sender (its domain when long). */
	if (helo_id)
		snprintf(who, sizeof who, "%s", dom);
	else
		snprintf(who, sizeof who, "%s", strlen(c->sender) <= 128 ? c->sender : dom);
	spf_explain(m, c, who, text, sizeof text);

	api->set_result(ctx, res, text);
	api->set_fact(ctx, "spf.result", res);
	if (c->domain[0] != '\0' && spf_printable(c->domain))
		api->set_fact(ctx, "spf.domain", c->domain);

	/* RFC 7372: 5.7.23 SPF validation failed, x.7.24 SPF validation error. */
	reply[0] = '\0';
	switch (c->result) {
	case SPF_R_FAIL:
	case SPF_R_SOFTFAIL:
		snprintf(reply, sizeof reply, "550 5.7.23 SPF validation failed for "
		    "%s%.253s: %s is not a permitted sender%s%s",
		    helo_id && m->from[0] != '\0' ? "HELO " : "", dom, m->ip,
		    m->inst->explanation[0] ? "; " : "", m->inst->explanation);
		break;
	case SPF_R_PERMERROR:
		snprintf(reply, sizeof reply, "550 5.7.24 SPF validation error for "
		    "%.253s: %.160s", dom, c->why);
		break;
	case SPF_R_TEMPERROR:
		snprintf(reply, sizeof reply, "451 4.7.24 SPF temporary error for "
		    "%.253s: %.160s", dom, c->why);
		break;
	default:
		break;
	}
	if (reply[0] != '\0') {
		reply[500] = '\0';	/* RFC 5321 4.5.3.1.5: 512 with the CRLF */
		if (spf_printable(reply))
			api->set_reply(ctx, reply);
	}

	/* RFC 7208 9.1: result (comment) key=value; ... */
	cb = (struct spf_buf){ comment, sizeof comment, 0, 0 };
	spf_puts(&cb, " (");
	spf_put_ctext(&cb, receiver);
	spf_puts(&cb, ": ");
	spf_put_ctext(&cb, text);
	spf_putc(&cb, ')');
	b = (struct spf_buf){ m->received, sizeof m->received, 0, 0 };
	spf_puts(&b, res);
	if (!cb.over)
		spf_put(&b, comment, cb.len);
	spf_put_kv(&b, "client-ip", m->ip);
	spf_put_kv(&b, "envelope-from", m->from[0] ? m->from : "<>");
	if (m->helo[0] != '\0')
		spf_put_kv(&b, "helo", m->helo);
	spf_put_kv(&b, "receiver", receiver);
	spf_put_kv(&b, "identity", helo_id ? "helo" : "mailfrom");
	if (c->result == SPF_R_PERMERROR || c->result == SPF_R_TEMPERROR)
		spf_put_kv(&b, "problem", c->why);
	if (b.over)
		m->received[0] = '\0';

	/* RFC 8601 2.7.2: smtp.mailfrom, or smtp.helo for the HELO identity. */
	b = (struct spf_buf){ m->ar_props, sizeof m->ar_props, 0, 0 };
	spf_puts(&b, helo_id ? "smtp.helo=" : "smtp.mailfrom=");
	spf_put_pvalue(&b, helo_id ? dom : c->sender);
	if (b.over) {
		b.len = 0;
		b.over = 0;
		spf_puts(&b, helo_id ? "smtp.helo=" : "smtp.mailfrom=");
		spf_put_pvalue(&b, dom);
		if (b.over)
			m->ar_props[0] = '\0';
	}

	api->log(ctx, FMX_LOG_INFO, "spf: identity=%s domain=%.253s result=%s "
	    "passes=%u queries=%u%s%s", helo_id ? "helo" : "mailfrom", dom, res,
	    c->passes, m->queries, c->why[0] ? " problem=" : "", c->why);
	if (c != &m->helo_chk && m->helo_chk.state == SPF_CK_DONE)
		api->log(ctx, FMX_LOG_DEBUG, "spf: identity=helo domain=%.253s result=%s",
		    m->helo_chk.domain, spf_result_names[m->helo_chk.result]);
}

static void
spf_dns_cb(struct fmx_ctx *ctx, void *arg, int rcode, const unsigned char *answer,
    size_t len)
{
	struct spf_entry	*e = arg;
	struct spf_msg		*m = e->m;

	if (e->state != SPF_ST_ASKED)
		return;
	spf_answer(e, rcode, answer, len);
	m->outstanding--;
	spf_prefetch(m, e);
	if (m->busy)
		return;		/* inside spf_issue(): it picks up the rest */
	m->busy = 1;
	spf_issue(ctx, m);
	m->busy = 0;
	if (m->outstanding > 0 || !spf_drive(ctx, m))
		return;
	spf_publish(ctx, m);
	if (m->waiting) {
		m->waiting = 0;
		m->inst->api->resume(ctx, FMX_CONTINUE);
	}
}

/* ------------------------------------------------------------------ */
/* Hooks */

/* The client's address: IPv4, or IPv6 (an IPv4-mapped one is IPv4, RFC 7208 5). */
static int
spf_client(struct spf_msg *m, const char *addr)
{
	char	buf[INET6_ADDRSTRLEN + 8];
	char	*pct;
	size_t	len;

	if (addr == NULL)
		return -1;
	if (strncasecmp(addr, "ipv6:", 5) == 0)
		addr += 5;
	if (addr[0] == '[')
		addr++;
	if ((len = strlen(addr)) >= sizeof buf)
		return -1;
	memcpy(buf, addr, len + 1);
	if (len > 0 && buf[len - 1] == ']')
		buf[len - 1] = '\0';
	if ((pct = strchr(buf, '%')) != NULL)
		*pct = '\0';
	if (inet_pton(AF_INET, buf, &m->ip4) == 1)
		m->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, &m->ip6) == 1) {
		m->family = AF_INET6;
		if (IN6_IS_ADDR_V4MAPPED(&m->ip6)) {
			memcpy(&m->ip4, &m->ip6.s6_addr[12], 4);
			m->family = AF_INET;
		}
	} else
		return -1;
	if (m->family == AF_INET)
		inet_ntop(AF_INET, &m->ip4, m->ip, sizeof m->ip);
	else
		inet_ntop(AF_INET6, &m->ip6, m->ip, sizeof m->ip);
	return 0;
}

static enum fmx_verdict
spf_on_mail(void *instance, struct fmx_ctx *ctx, const char *from)
{
	struct spf_inst		*si = instance;
	const struct fmx_api	*api = si->api;
	struct spf_msg		*m;
	const char		*helo = api->get(ctx, "helo");
	unsigned char		 rnd[SPF_NONCE_LEN / 2];
	size_t			 len, i;

	if ((m = calloc(1, sizeof *m)) == NULL) {
		api->set_result(ctx, "temperror", "out of memory");
		return FMX_CONTINUE;
	}
	m->inst = si;
	m->zone_tail = &m->zone;
	api->set_msg_data(ctx, m, spf_msg_free);
	arc4random_buf(rnd, sizeof rnd);
	for (i = 0; i < sizeof rnd; i++)
		snprintf(m->nonce + 2 * i, 3, "%02x", rnd[i]);

	/* The core passes the address without <>; be sure. */
	if (from == NULL)
		from = "";
	len = strlen(from);
	if (len >= 2 && from[0] == '<' && from[len - 1] == '>') {
		from++;
		len -= 2;
	}
	if (len >= sizeof m->from || !spf_printable(from))
		len = 0;
	memcpy(m->from, from, len);
	m->from[len] = '\0';
	if (helo != NULL && strlen(helo) < sizeof m->helo && spf_printable(helo))
		snprintf(m->helo, sizeof m->helo, "%s", helo);
	m->helo_ok = m->helo[0] != '\0' && spf_domain_ok(m->helo);

	if (spf_client(m, api->get(ctx, "client.addr")) == -1) {
		/* No IP address, no check_host() (4.1). */
		snprintf(m->ip, sizeof m->ip, "unknown");
		spf_check_setup(m, &m->mail_chk, SPF_ID_MAILFROM);
		m->mail_chk.state = SPF_CK_DONE;
		m->mail_chk.result = SPF_R_NONE;
		snprintf(m->mail_chk.why, sizeof m->mail_chk.why,
		    "client address unknown");
		m->final = &m->mail_chk;
		m->done = 1;
		spf_publish(ctx, m);
		return FMX_CONTINUE;
	}
	if (si->helo && m->from[0] != '\0')
		spf_check_setup(m, &m->helo_chk, SPF_ID_HELO);
	if (m->helo_chk.state == SPF_CK_DONE)
		m->helo_chk.state = SPF_CK_OFF;	/* an unusable HELO is simply not checked */
	spf_check_setup(m, &m->mail_chk, SPF_ID_MAILFROM);

	if (spf_drive(ctx, m)) {
		spf_publish(ctx, m);
		return FMX_CONTINUE;
	}
	m->waiting = 1;
	return FMX_PENDING;
}

static enum fmx_verdict
spf_on_eom(void *instance, struct fmx_ctx *ctx)
{
	struct spf_inst		*si = instance;
	const struct fmx_api	*api = si->api;
	struct spf_msg		*m = api->msg_data(ctx);

	if (m == NULL || !m->done || m->final == NULL)
		return FMX_CONTINUE;
	/*
	 * RFC 7208 9.1: prepended, above every other Received-SPF (one the
	 * client wrote must not pass for ours); add_header would append it.
	 */
	if (m->received[0] != '\0')
		api->insert_header(ctx, 0, "Received-SPF", m->received);
	api->add_auth_result(ctx, "spf", spf_result_names[m->final->result],
	    m->ar_props[0] ? m->ar_props : NULL);
	return FMX_CONTINUE;
}

/* ------------------------------------------------------------------ */
/* Instances */

static int
spf_bool(const char *v, int *out)
{
	if (strcasecmp(v, "yes") == 0 || strcasecmp(v, "true") == 0 ||
	    strcasecmp(v, "on") == 0 || strcmp(v, "1") == 0)
		*out = 1;
	else if (strcasecmp(v, "no") == 0 || strcasecmp(v, "false") == 0 ||
	    strcasecmp(v, "off") == 0 || strcmp(v, "0") == 0)
		*out = 0;
	else
		return -1;
	return 0;
}

static void
spf_fini(void *instance)
{
	struct spf_inst *si = instance;

	if (si == NULL)
		return;
	if (si->server != NULL)
		SPF_server_free(si->server);	/* leaves our static layer alone */
	free(si);
}

static int
spf_init(const struct fmx_api *api, const char *const *options, size_t noptions,
    void **instance)
{
	struct spf_inst	*si;
	SPF_response_t	*resp = NULL;
	const char	*eq, *v;
	char		*end;
	unsigned long	 n;
	size_t		 i;

	pthread_once(&spf_once, spf_global_init);
	if ((si = calloc(1, sizeof *si)) == NULL)
		return -1;
	si->api = api;
	si->helo = 1;
	si->max_passes = SPF_PASSES_DEFAULT;
	for (i = 0; i < noptions; i++) {
		if ((eq = strchr(options[i], '=')) == NULL)
			goto bad;
		v = eq + 1;
		if ((size_t)(eq - options[i]) == 4 && strncmp(options[i], "helo", 4) == 0) {
			if (spf_bool(v, &si->helo) == -1)
				goto bad;
		} else if ((size_t)(eq - options[i]) == 10 &&
		    strncmp(options[i], "max_passes", 10) == 0) {
			errno = 0;
			n = strtoul(v, &end, 10);
			if (errno != 0 || end == v || *end != '\0' || n < 1 ||
			    n > SPF_PASSES_LIMIT || v[0] == '-')
				goto bad;
			si->max_passes = (unsigned)n;
		} else if ((size_t)(eq - options[i]) == 11 &&
		    strncmp(options[i], "explanation", 11) == 0) {
			if (strlen(v) > SPF_EXPLANATION_MAX || !spf_printable(v))
				goto bad;
			snprintf(si->explanation, sizeof si->explanation, "%s", v);
		} else
			goto bad;
	}
	if ((si->server = SPF_server_new_dns(&spf_layer, 0)) == NULL) {
		api->log(NULL, FMX_LOG_WARN, "spf: cannot create the libspf2 server");
		spf_fini(si);
		return -1;
	}
	/* Never libspf2's default text, which points at the defunct openspf.org. */
	if (SPF_server_set_explanation(si->server, "SPF check failed", &resp) !=
	    SPF_E_SUCCESS) {
		if (resp != NULL)
			SPF_response_free(resp);
		spf_fini(si);
		return -1;
	}
	if (resp != NULL)
		SPF_response_free(resp);
	/* 4.6.4; our layer counts across includes, these bound libspf2's own loops. */
	SPF_server_set_max_dns_mech(si->server, SPF_TERMS_MAX);
	SPF_server_set_max_dns_mx(si->server, SPF_NAMES_MAX);
	SPF_server_set_max_dns_ptr(si->server, SPF_NAMES_MAX);
	*instance = si;
	return 0;
bad:
	api->log(NULL, FMX_LOG_WARN, "spf: invalid option \"%.64s\" (known: "
	    "helo = yes|no, max_passes = 1..%d, explanation = text of at most %d "
	    "printable characters)", options[i], SPF_PASSES_LIMIT, SPF_EXPLANATION_MAX);
	spf_fini(si);
	return -1;
}

static const struct fmx_filter spf_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "spf",
	.init = spf_init,
	.fini = spf_fini,
	.on_mail = spf_on_mail,
	.on_eom = spf_on_eom,
};

const struct fmx_filter *
spf_filter(void)
{
	return &spf_table;
}
