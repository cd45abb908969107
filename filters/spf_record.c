/*
 * spf_record.c - SPF record parsing and canonical rewriting for the
 * built-in SPF filter; pure functions, no DNS and no libspf2 calls
 *
 * NAME
 *	spf_record_canon, spf_record_query_name
 *
 * SYNOPSIS
 *	#include "spf_int.h"
 *
 *	int spf_record_canon(const char *rec, size_t len, int family,
 *	    const char *nonce, char *out, size_t outlen, const char **why);
 *	int spf_record_query_name(const char *raw, char *out, size_t outlen);
 *
 * DESCRIPTION
 *	spf_record_canon() parses one SPF record (selected by its "v=spf1"
 *	version, RFC 7208 4.5) against the RFC 7208 ABNF and writes into out
 *	the record libspf2 will evaluate: redirect moved last and dropped
 *	when the record has "all" (6.1), exp= and unknown modifiers
 *	validated then dropped (6.2), ip4/ip6 terms of the other address
 *	family dropped, x/0 prefix lengths rewritten (libspf2 reads /0 as
 *	/32), macro transformers normalised (7.1).  Malformed records thus
 *	never reach libspf2's parser (CVE-2023-42118).  It returns 0, or -1
 *	with *why set to the permerror reason (a static string).
 *
 *	spf_record_query_name() turns a name from a record or a macro
 *	expansion into the text of a query (RFC 1035 5.1 presentation form,
 *	lower case, left labels dropped beyond 253 octets, RFC 7208 4.8);
 *	0, or -1 when it is no name.
 *
 *	Every output is bounded by the caller's buffer (struct spf_buf
 *	records an overflow instead of writing past it).
 *
 * STANDARDS
 *	RFC 7208 sections 4.5, 4.6, 5, 6 and 7.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "spf_int.h"
#include "strutil.h"

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
spf_record_macro(const char *s, size_t len, struct spf_buf *out)
{
	char	 num[8];
	size_t	 i;
	unsigned long val = 0;
	int	 digits = 0, rev = 0;
	char	 letter;

	if (len < 2)
		return 0;
	if (s[1] == '%' || s[1] == '_' || s[1] == '-') {
		spf_buf_put(out, s, 2);
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
	spf_buf_put(out, "%{", 2);
	spf_buf_putc(out, letter);
	if (digits) {
		snprintf(num, sizeof num, "%lu", val > 128 ? 128 : val);
		spf_buf_puts(out, num);
	}
	if (rev)
		spf_buf_putc(out, 'r');
	for (; i < len && strchr(".-+,/_=", s[i]) != NULL && s[i] != '\0'; i++)
		spf_buf_putc(out, s[i]);
	if (i >= len || s[i] != '}')
		return 0;
	spf_buf_putc(out, '}');
	return i + 1;
}

/*
 * RFC 7208 7.1 toplabel: ( *alphanum ALPHA *alphanum ) /
 * ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
 */
static int
spf_record_toplabel(const char *s, size_t n)
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
spf_record_domain_spec(const char *s, size_t len, struct spf_buf *out, size_t *data)
{
	size_t	i = 0, n, run = 0, tail = 0, dot;
	int	last_macro = 0;

	if (len == 0)
		return -1;
	while (i < len) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return -1;	/* macro-literal: visible ASCII */
		if (s[i] == '%') {
			if ((n = spf_record_macro(s + i, len - i, out)) == 0)
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
		spf_buf_putc(out, s[i]);
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
	return spf_record_toplabel(s + dot, n - dot) ? 0 : -1;
}

/* RFC 7208 4.6.1 macro-string (unknown modifiers): 0 valid, -1 not. */
static int
spf_record_macro_string(const char *s, size_t len)
{
	size_t	i = 0, n;

	while (i < len) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return -1;
		if (s[i] == '%') {
			if ((n = spf_record_macro(s + i, len - i, NULL)) == 0)
				return -1;
			i += n;
		} else
			i++;
	}
	return 0;
}

/* "/" ("0" / %x31-39 0*(maxdigits-1)DIGIT), value <= max: -1 if not. */
static int
spf_record_cidr(const char *s, size_t len, int max)
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
spf_record_ip4_network(const char *s, size_t len, struct in_addr *a)
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
spf_record_ip6_network(const char *s, size_t len, struct in6_addr *a)
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
	struct spf_buf	 redir;		/* redirect=, canonical, written last */
	int		 nredirect, nexp;
};

/*
 * One directive as parsed, for the rewrite.  t is the directive after its
 * qualifier: namelen octets of mechanism name, then len octets of
 * arguments at rest.
 */
struct spf_term {
	enum spf_mech	 m;
	char		 q;		/* qualifier; '+' is the default (4.6.2) */
	const char	*t;
	size_t		 namelen;
	const char	*rest;
	size_t		 len;
	const char	*sp;		/* domain-spec, NULL if none */
	size_t		 speclen;
	int		 c4, c6;	/* cidr lengths, -1 if none */
};

/* Qualifier and mechanism name (RFC 7208 4.6.2, 5): 0, or -1 permerror. */
static int
spf_record_term_name(struct spf_canon *c, struct spf_term *d, const char *t,
    size_t len)
{
	d->q = '+';
	d->sp = NULL;
	d->speclen = 0;
	d->c4 = d->c6 = -1;
	if (len > 0 && strchr("+-?~", t[0]) != NULL) {
		d->q = t[0];
		t++;
		len--;
	}
	for (d->namelen = 0; d->namelen < len &&
	    isalnum((unsigned char)t[d->namelen]); d->namelen++)
		;
	for (d->m = 0; d->m < SPF_M_COUNT; d->m++)
		if (strlen(spf_mech_names[d->m]) == d->namelen &&
		    str_ncasecmp(t, spf_mech_names[d->m], d->namelen) == 0)
			break;
	if (d->m == SPF_M_COUNT || d->namelen == 0) {
		c->why = "unknown mechanism";		/* 5: permerror */
		return -1;
	}
	d->t = t;
	d->rest = t + d->namelen;
	d->len = len - d->namelen;
	if (d->len > 0 && d->rest[0] != ':' && d->rest[0] != '/') {
		c->why = "unknown mechanism";
		return -1;
	}
	return 0;
}

/* a and mx: [ ":" domain-spec ] [ ip4-cidr-length ] [ "/" ip6-cidr-length ] */
static int
spf_record_term_dual_cidr(struct spf_canon *c, struct spf_term *d)
{
	const char	*rest = d->rest;
	size_t		 i, j = d->len;

	for (i = j; i > 0 && isdigit((unsigned char)rest[i - 1]); i--)
		;
	if (i < j && i >= 2 && rest[i - 1] == '/' && rest[i - 2] == '/') {
		if ((d->c6 = spf_record_cidr(rest + i, j - i, 128)) < 0) {
			c->why = "bad ip6-cidr-length";
			return -1;
		}
		j = i - 2;
		for (i = j; i > 0 && isdigit((unsigned char)rest[i - 1]); i--)
			;
	}
	if (i < j && i >= 1 && rest[i - 1] == '/') {
		if ((d->c4 = spf_record_cidr(rest + i, j - i, 32)) < 0) {
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
		d->sp = rest + 1;
		d->speclen = j - 1;
	}
	return 0;
}

/* ip4 and ip6: ":" network [ "/" cidr-length ] (RFC 7208 5.6). */
static int
spf_record_term_ip(struct spf_canon *c, struct spf_term *d)
{
	struct in_addr	 a4;
	struct in6_addr	 a6;
	const char	*rest = d->rest, *slash;
	size_t		 i, len = d->len;
	int		 v4 = d->m == SPF_M_IP4, v;

	if (len < 2 || rest[0] != ':') {
		c->why = "network required";
		return -1;
	}
	slash = memchr(rest + 1, '/', len - 1);
	i = slash ? (size_t)(slash - rest) : len;
	if (v4 ? spf_record_ip4_network(rest + 1, i - 1, &a4) :
	    spf_record_ip6_network(rest + 1, i - 1, &a6)) {
		c->why = v4 ? "bad ip4-network" : "bad ip6-network";
		return -1;
	}
	v = v4 ? 32 : 128;
	if (slash != NULL && (v = spf_record_cidr(slash + 1, len - i - 1,
	    v4 ? 32 : 128)) < 0) {
		c->why = "bad cidr-length";
		return -1;
	}
	if (v4)
		d->c4 = v;
	else
		d->c6 = v;
	return 0;
}

/* The arguments of the mechanism: 0, or -1 permerror (c->why set). */
static int
spf_record_term_args(struct spf_canon *c, struct spf_term *d)
{
	switch (d->m) {
	case SPF_M_ALL:
		if (d->len != 0) {
			c->why = "syntax error in all";
			return -1;
		}
		return 0;
	case SPF_M_INCLUDE:
	case SPF_M_EXISTS:
	case SPF_M_PTR:
		if (d->len == 0 && d->m == SPF_M_PTR)
			return 0;
		if (d->len < 2 || d->rest[0] != ':') {
			c->why = d->m == SPF_M_PTR ? "syntax error in ptr" :
			    "domain-spec required";
			return -1;
		}
		d->sp = d->rest + 1;
		d->speclen = d->len - 1;
		return 0;
	case SPF_M_A:
	case SPF_M_MX:
		return spf_record_term_dual_cidr(c, d);
	case SPF_M_IP4:
	case SPF_M_IP6:
		return spf_record_term_ip(c, d);
	default:
		return 0;
	}
}

/* " " [qualifier] name: the start of every rewritten term. */
static void
spf_record_term_start(struct spf_canon *c, const struct spf_term *d)
{
	spf_buf_putc(&c->out, ' ');
	if (d->q != '+')
		spf_buf_putc(&c->out, d->q);
}

/* a and mx in the rewrite; spec is the canonical domain-spec. */
static void
spf_record_write_a_mx(struct spf_canon *c, const struct spf_term *d,
    const char *spec)
{
	char	suffix[64];
	int	v;

	spf_record_term_start(c, d);
	spf_buf_puts(&c->out, spf_mech_names[d->m]);
	v = c->family == AF_INET ? d->c4 : d->c6;
	if (v == 0) {
		/*
		 * 5.3, 5.4: a /0 prefix matches when any address
		 * record exists, which libspf2 (reading /0 as /32)
		 * cannot say.  The lookup name gets a suffix only
		 * this message knows; the layer then answers a
		 * non-empty address set with the client's address.
		 */
		snprintf(suffix, sizeof suffix, SPF_ANY_SUFFIX_FMT, c->nonce);
		spf_buf_putc(&c->out, ':');
		spf_buf_puts(&c->out, d->sp != NULL ? spec : "%{d}");
		spf_buf_puts(&c->out, suffix);
		return;
	}
	if (d->sp != NULL) {
		spf_buf_putc(&c->out, ':');
		spf_buf_puts(&c->out, spec);
	}
	if (v > 0) {
		snprintf(suffix, sizeof suffix, c->family == AF_INET ? "/%d" :
		    "//%d", v);
		spf_buf_puts(&c->out, suffix);
	}
}

/* The canonical form of a valid term; spec is its canonical domain-spec. */
static void
spf_record_term_write(struct spf_canon *c, const struct spf_term *d,
    const char *spec)
{
	switch (d->m) {
	case SPF_M_IP4:
	case SPF_M_IP6:
		/* 5.6: ip4 never matches an IPv6 connection and vice versa. */
		if ((d->m == SPF_M_IP4) != (c->family == AF_INET))
			return;
		spf_record_term_start(c, d);
		if ((d->m == SPF_M_IP4 ? d->c4 : d->c6) == 0) {
			/* x/0 matches every address; libspf2 reads /0 as /32. */
			spf_buf_puts(&c->out, "all");
			return;
		}
		spf_buf_put(&c->out, d->t, d->namelen + d->len);
		return;
	case SPF_M_A:
	case SPF_M_MX:
		spf_record_write_a_mx(c, d, spec);
		return;
	default:
		spf_record_term_start(c, d);
		spf_buf_puts(&c->out, spf_mech_names[d->m]);
		if (d->sp != NULL) {
			spf_buf_putc(&c->out, ':');
			spf_buf_puts(&c->out, spec);
		}
		return;
	}
}

/*
 * One directive (RFC 7208 4.6.2, 5): validate and append its canonical
 * form.  0 ok, -1 permerror (c->why set).
 */
static int
spf_record_directive(struct spf_canon *c, const char *t, size_t len)
{
	struct spf_term	 d;
	struct spf_buf	 spec;
	char		 specbuf[SPF_RECORD_MAX + 1];
	size_t		 data = 0;

	if (spf_record_term_name(c, &d, t, len) == -1 ||
	    spf_record_term_args(c, &d) == -1)
		return -1;
	spec = (struct spf_buf){ specbuf, sizeof specbuf, 0, 0 };
	specbuf[0] = '\0';
	if (d.sp != NULL) {
		if (spf_record_domain_spec(d.sp, d.speclen, &spec, &data) == -1) {
			c->why = "syntax error in domain-spec";
			return -1;
		}
		if (spec.over || data > SPF_TERM_DATA_MAX) {
			c->why = "domain-spec too long";
			return -1;
		}
	}
	spf_record_term_write(c, &d, specbuf);
	return 0;
}

/*
 * A term that is a modifier (RFC 7208 4.6.1: name "=" ..., name = ALPHA
 * *( ALPHA / DIGIT / "-" / "_" / "." )): validate it and keep redirect's
 * canonical domain-spec for the end.  1 it was a modifier, 0 it is a
 * directive, -1 permerror (c->why set).
 */
static int
spf_record_modifier(struct spf_canon *c, const char *t, size_t n)
{
	const char	*eq = memchr(t, '=', n);
	size_t		 namelen = eq ? (size_t)(eq - t) : 0, data = 0;

	if (eq == NULL || namelen == 0 || !isalpha((unsigned char)t[0]) ||
	    strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.") < namelen)
		return 0;
	if (namelen == 8 && str_ncasecmp(t, "redirect", 8) == 0) {
		/* 6: redirect and exp at most once each */
		if (++c->nredirect > 1) {
			c->why = "redirect appears twice";
			return -1;
		}
		if (spf_record_domain_spec(eq + 1, n - namelen - 1, &c->redir,
		    &data) == -1 || c->redir.over || data > SPF_TERM_DATA_MAX) {
			c->why = "syntax error in redirect";
			return -1;
		}
	} else if (namelen == 3 && str_ncasecmp(t, "exp", 3) == 0) {
		if (++c->nexp > 1) {
			c->why = "exp appears twice";
			return -1;
		}
		if (spf_record_domain_spec(eq + 1, n - namelen - 1, NULL,
		    &data) == -1) {
			c->why = "syntax error in exp";
			return -1;
		}
	} else if (spf_record_macro_string(eq + 1, n - namelen - 1) == -1) {
		/* 6: unknown modifiers are ignored, but must parse */
		c->why = "syntax error in modifier";
		return -1;
	}
	return 1;
}

/* The whole record before its terms: size, version (4.5), characters. */
static const char *
spf_record_head(const char *rec, size_t len)
{
	size_t	i;

	if (len > SPF_RECORD_MAX)
		return "record too long";
	if (len < 6 || str_ncasecmp(rec, "v=spf1", 6) != 0 ||
	    (len > 6 && rec[6] != ' '))
		return "not an SPF record";
	/* 3.1, 4.6.1: terms are printable ASCII separated by SP only. */
	for (i = 0; i < len; i++)
		if ((unsigned char)rec[i] < 0x20 || (unsigned char)rec[i] > 0x7e)
			return "control or non-ASCII character in record";
	return NULL;
}

/*
 * Parse one SPF record (already selected by its "v=spf1" version, 4.5)
 * and write into out the record libspf2 will evaluate.  0 ok, -1
 * permerror with *why.
 */
int
spf_record_canon(const char *rec, size_t len, int family, const char *nonce,
    char *out, size_t outlen, const char **why)
{
	struct spf_canon c;
	char		 redirbuf[SPF_RECORD_MAX + 1];
	size_t		 i, start, n, sign, terms = 0;
	int		 have_all = 0, r;
	const char	*t;

	memset(&c, 0, sizeof c);
	c.out = (struct spf_buf){ out, outlen, 0, 0 };
	c.family = family;
	c.nonce = nonce;
	c.redir = (struct spf_buf){ redirbuf, sizeof redirbuf, 0, 0 };
	redirbuf[0] = '\0';
	if (outlen > 0)
		out[0] = '\0';
	if ((*why = spf_record_head(rec, len)) != NULL)
		return -1;
	spf_buf_puts(&c.out, "v=spf1");
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
		if ((r = spf_record_modifier(&c, t, n)) == 1)
			continue;
		/* t[0..n) is not terminated: compare within it. */
		sign = strchr("+-?~", t[0]) != NULL;
		if (r == 0 && n == 3 + sign && str_ncasecmp(t + sign, "all", 3) == 0)
			have_all = 1;
		if (r == -1 || spf_record_directive(&c, t, n) == -1) {
			*why = c.why;
			return -1;
		}
	}
	/* 6.1: redirect counts only when no mechanism matched and there is no "all". */
	if (c.nredirect && !have_all) {
		spf_buf_puts(&c.out, " redirect=");
		spf_buf_puts(&c.out, redirbuf);
	}
	if (c.out.over) {
		*why = "record too long";
		return -1;
	}
	return 0;
}

/*
 * A name from a record or macro expansion as the text of a query:
 * RFC 1035 5.1 presentation form with the specials escaped (a local part
 * may hold '"', '\\' or '(' ...), lower case.  -1 when it is no name:
 * an empty label or one over 63 octets.  Longer than 253 octets, the
 * left labels are dropped (RFC 7208 4.8).
 */
int
spf_record_query_name(const char *raw, char *out, size_t outlen)
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
			spf_buf_putc(&b, '.');
			continue;
		}
		if (++label > 63)
			return -1;
		if (isalnum(ch) || ch == '-' || ch == '_' || ch == '*' || ch == '/' ||
		    ch == '+' || ch == '=' || ch == '%' || ch == '~' || ch == '&' ||
		    ch == '!' || ch == '#' || ch == '\'' || ch == '^' || ch == '`' ||
		    ch == '{' || ch == '|' || ch == '}' || ch == ',' || ch == ':' ||
		    ch == '<' || ch == '>' || ch == '?' || ch == '[' || ch == ']')
			spf_buf_putc(&b, (char)str_ascii_lower(ch));
		else {
			snprintf(esc, sizeof esc, "\\%03u", ch);
			spf_buf_puts(&b, esc);
		}
	}
	if (label == 0 || b.over)
		return -1;
	return 0;
}
