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
#include <strings.h>

#include "spf_int.h"

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
};

/*
 * One directive (RFC 7208 4.6.2, 5): validate and append its canonical
 * form.  0 ok, -1 permerror (c->why set).
 */
static int
spf_record_directive(struct spf_canon *c, const char *t, size_t len)
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
			if ((c6 = spf_record_cidr(rest + i, j - i, 128)) < 0) {
				c->why = "bad ip6-cidr-length";
				return -1;
			}
			j = i - 2;
			for (i = j; i > 0 && isdigit((unsigned char)rest[i - 1]); i--)
				;
		}
		if (i < j && i >= 1 && rest[i - 1] == '/') {
			if ((c4 = spf_record_cidr(rest + i, j - i, 32)) < 0) {
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
		if (m == SPF_M_IP4 ? spf_record_ip4_network(rest + 1, i - 1, &a4) :
		    spf_record_ip6_network(rest + 1, i - 1, &a6)) {
			c->why = m == SPF_M_IP4 ? "bad ip4-network" : "bad ip6-network";
			return -1;
		}
		v = m == SPF_M_IP4 ? 32 : 128;
		if (slash != NULL && (v = spf_record_cidr(slash + 1, len - i - 1,
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
		if (spf_record_domain_spec(sp, speclen, &spec, &data) == -1) {
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
		spf_buf_putc(&c->out, ' ');
		if (q != '+')
			spf_buf_putc(&c->out, q);
		if ((m == SPF_M_IP4 ? c4 : c6) == 0) {
			/* x/0 matches every address; libspf2 reads /0 as /32. */
			spf_buf_puts(&c->out, "all");
			return 0;
		}
		spf_buf_put(&c->out, t, namelen + len);
		return 0;
	case SPF_M_A:
	case SPF_M_MX:
		spf_buf_putc(&c->out, ' ');
		if (q != '+')
			spf_buf_putc(&c->out, q);
		spf_buf_puts(&c->out, spf_mech_names[m]);
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
			spf_buf_putc(&c->out, ':');
			spf_buf_puts(&c->out, sp != NULL ? specbuf : "%{d}");
			spf_buf_puts(&c->out, suffix);
			return 0;
		}
		if (sp != NULL) {
			spf_buf_putc(&c->out, ':');
			spf_buf_puts(&c->out, specbuf);
		}
		if (v > 0) {
			snprintf(suffix, sizeof suffix, c->family == AF_INET ? "/%d" :
			    "//%d", v);
			spf_buf_puts(&c->out, suffix);
		}
		return 0;
	default:
		spf_buf_putc(&c->out, ' ');
		if (q != '+')
			spf_buf_putc(&c->out, q);
		spf_buf_puts(&c->out, spf_mech_names[m]);
		if (sp != NULL) {
			spf_buf_putc(&c->out, ':');
			spf_buf_puts(&c->out, specbuf);
		}
		return 0;
	}
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
				if (spf_record_domain_spec(eq + 1, n - namelen - 1, &redir,
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
				if (spf_record_domain_spec(eq + 1, n - namelen - 1, NULL,
				    &data) == -1) {
					*why = "syntax error in exp";
					return -1;
				}
			} else if (spf_record_macro_string(eq + 1, n - namelen - 1) == -1) {
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
		if (spf_record_directive(&c, t, n) == -1) {
			*why = c.why;
			return -1;
		}
	}
	/* 6.1: redirect counts only when no mechanism matched and there is no "all". */
	if (nredirect && !have_all) {
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
			spf_buf_putc(&b, (char)tolower(ch));
		else {
			snprintf(esc, sizeof esc, "\\%03u", ch);
			spf_buf_puts(&b, esc);
		}
	}
	if (label == 0 || b.over)
		return -1;
	return 0;
}
