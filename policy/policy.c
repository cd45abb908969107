/*
 * policy.c - per-domain policy lookup, verdict mapping, dry run and
 * Authentication-Results (RFC 8601)
 *
 * NAME
 *	policy_lookup, policy_decide, policy_action, policy_dry_run,
 *	policy_ar_render,
 *	policy_ar_is_ours, policy_header_is, policy_ar_keyword_valid,
 *	policy_authserv_id_valid - what the configuration says about one
 *	message
 *
 * SYNOPSIS
 *	#include "policy.h"
 *
 * DESCRIPTION
 *	See policy.h for the contract of each function.  Everything here is
 *	a pure function of its arguments and of an immutable struct config:
 *	no global state, no locks, no allocation.  The domain index behind
 *	policy_lookup() is config's (config_policy_find()): built by
 *	config_load() like relay.domains', so this file only reads the
 *	configuration, and config.c never calls up into it.  Output goes
 *	into caller buffers with
 *	stated maxima; input strings may be hostile (reasons come from DNS
 *	TXT records, header values from the client) and are never trusted
 *	to be short, ASCII or free of CR/LF.
 *
 * STANDARDS
 *	RFC 8601 (Authentication-Results), RFC 2045 section 5.1 (token),
 *	RFC 5322 sections 2.1.1 (line length), 2.2.3 (folding), 3.2.2
 *	(comments), 3.2.4 (quoted strings), RFC 5321 section 4.1.2 (Keyword),
 *	RFC 6532 section 3.2 (UTF-8 in quoted strings).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "policy.h"
#include "strutil.h"

/* RFC 1035 2.3.4: 255 octets on the wire is 253 characters of text. */
#define POLICY_DOMAIN_MAX	253
/* A trailing dot and the NUL on top. */
#define POLICY_DOMAIN_BUF	(POLICY_DOMAIN_MAX + 2)
/* Longest "ptype.property" name, and longest method/result keyword. */
#define POLICY_AR_NAME_MAX	64

/* a[0..alen) equals b[0..blen) ignoring ASCII case (NULs included). */
static int
policy_caseeq(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t	i;

	if (alen != blen)
		return 0;
	for (i = 0; i < alen; i++)
		if (str_ascii_lower((unsigned char)a[i]) !=
		    str_ascii_lower((unsigned char)b[i]))
			return 0;
	return 1;
}

/*
 * Lookup.
 */

/* Lower-case, drop one trailing dot, refuse empty labels.  0 ok, -1 bad. */
static int
policy_domain_normalize(const char *s, char *buf)
{
	const char	*nul;
	size_t		 len, i;

	/* Never read past POLICY_DOMAIN_BUF bytes of a hostile name. */
	if ((nul = memchr(s, '\0', POLICY_DOMAIN_BUF)) == NULL)
		return -1;
	len = (size_t)(nul - s);
	if (len == 0)
		return -1;
	for (i = 0; i < len; i++)
		buf[i] = (char)str_ascii_lower((unsigned char)s[i]);
	buf[len] = '\0';
	if (buf[len - 1] == '.')
		buf[--len] = '\0';
	if (len == 0 || len > POLICY_DOMAIN_MAX || buf[0] == '.' ||
	    buf[len - 1] == '.' || strstr(buf, "..") != NULL)
		return -1;
	return 0;
}

const struct config_policy *
policy_lookup(const struct config *c, const char *domain)
{
	const struct config_policy	*p;
	const char			*s;
	char				 buf[POLICY_DOMAIN_BUF];

	if (c == NULL)
		return NULL;
	if (domain == NULL || policy_domain_normalize(domain, buf) == -1)
		return &c->policy_default;
	/*
	 * The name, then each parent, nearest first: a.b.example.com,
	 * b.example.com, example.com, com.  One probe per label.
	 */
	for (s = buf;; s++) {
		if ((p = config_policy_find(c, s)) != NULL)
			return p;
		if ((s = strchr(s, '.')) == NULL)
			return &c->policy_default;
	}
}

/*
 * Actions and dry run.
 */

static const struct config_policy_filter *
policy_filter_find(const struct config_policy *p, const char *filter)
{
	size_t	i;

	for (i = 0; i < p->nfilters; i++)
		if (strcmp(p->filters[i].name, filter) == 0)
			return &p->filters[i];
	return NULL;
}

static int
policy_rule_find(const struct config_policy *p, const char *filter,
    const char *result, enum config_action *out)
{
	const struct config_policy_filter	*f;
	size_t					 i;

	if ((f = policy_filter_find(p, filter)) == NULL)
		return 0;
	for (i = 0; i < f->nrules; i++)
		if (strcmp(f->rules[i].result, result) == 0) {
			*out = f->rules[i].action;
			return 1;
		}
	return 0;
}

int
policy_action(const struct config *c, const struct config_policy *p,
    const char *filter, const char *result, enum config_action *out)
{
	const struct config_policy	*d = c ? &c->policy_default : NULL;

	if (filter == NULL || result == NULL || out == NULL)
		return 0;
	if (p == NULL)
		p = d;
	/* The domain's rule, else the default's: a domain policy only overrides. */
	if (p != NULL && policy_rule_find(p, filter, result, out))
		return 1;
	if (d != NULL && d != p && policy_rule_find(d, filter, result, out))
		return 1;
	return 0;
}

/* -1 when neither p's group for filter nor p itself sets dry_run. */
static int
policy_dry_run_of(const struct config_policy *p, const char *filter)
{
	const struct config_policy_filter	*f;

	if ((f = policy_filter_find(p, filter)) != NULL && f->dry_run >= 0)
		return f->dry_run > 0;
	if (p->dry_run >= 0)
		return p->dry_run > 0;
	return -1;
}

int
policy_dry_run(const struct config *c, const struct config_policy *p,
    const char *filter)
{
	const struct config_policy	*d = c ? &c->policy_default : NULL;
	size_t				 i;
	int				 v;

	if (filter == NULL)
		return 0;
	if (p == NULL)
		p = d;
	/* Most specific first: the domain, then the default, then the filter. */
	if (p != NULL && (v = policy_dry_run_of(p, filter)) >= 0)
		return v;
	if (d != NULL && d != p && (v = policy_dry_run_of(d, filter)) >= 0)
		return v;
	if (c != NULL)
		for (i = 0; i < c->nfilters; i++)
			if (strcmp(c->filters[i].name, filter) == 0 &&
			    c->filters[i].dry_run >= 0)
				return c->filters[i].dry_run > 0;
	return 0;
}

/* The filters entry named filter, NULL when the chain has none. */
static const struct config_filter *
policy_chain_filter(const struct config *c, const char *filter)
{
	size_t	i;

	for (i = 0; c != NULL && i < c->nfilters; i++)
		if (strcmp(c->filters[i].name, filter) == 0)
			return &c->filters[i];
	return NULL;
}

/*
 * The one place a filter's answer becomes an action: the chain calls it
 * once per answer and only maps the action to its verdict.  A failure
 * always has an action (on_error: the policy's, else the filter's entry,
 * else tempfail) so that a broken filter is never a silent accept.
 */
struct policy_decision
policy_decide(const struct config *c, const struct config_policy *p,
    const char *filter, const char *result, int failed)
{
	struct policy_decision		 d = { 0, CONFIG_ACTION_COUNT, 0 };
	const struct config_filter	*cf;

	if (filter == NULL)
		return d;
	if (failed) {
		d.mapped = 1;
		if (!policy_action(c, p, filter, "on_error", &d.action))
			d.action = (cf = policy_chain_filter(c, filter)) != NULL ?
			    cf->on_error : CONFIG_ACTION_TEMPFAIL;
	} else if (result != NULL && result[0] != '\0')
		d.mapped = policy_action(c, p, filter, result, &d.action);
	d.dry_run = policy_dry_run(c, p, filter);
	return d;
}

/*
 * Character classes.
 */

static int
policy_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

/* RFC 5322 3.2.3 atext. */
static int
policy_atext(unsigned char c)
{
	return policy_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/*
 * RFC 5321 4.1.2 Keyword (Ldh-str): letters, digits and inner hyphens;
 * RFC 8601 2.2 lets a method carry "/version" (1*DIGIT).
 */
static int
policy_keyword(const char *s, size_t len, int version_ok)
{
	size_t	i, n;

	for (n = 0; n < len && s[n] != '/'; n++)
		if (!policy_alnum((unsigned char)s[n]) &&
		    (s[n] != '-' || n == 0))
			return 0;
	if (n == 0 || n > POLICY_AR_NAME_MAX || s[n - 1] == '-')
		return 0;
	if (n == len)
		return 1;
	if (!version_ok || n + 1 == len || len - n > 10)
		return 0;
	for (i = n + 1; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

int
policy_ar_keyword_valid(const char *s, int version_ok)
{
	return s != NULL && policy_keyword(s, strlen(s), version_ok);
}

int
policy_authserv_id_valid(const char *s)
{
	/* RFC 8601 2.2: authserv-id = value; we only ever write the token form. */
	return s != NULL && str_mime_token(s, POLICY_AUTHSERV_MAX);
}

/*
 * Rendering: the bounded header-field writer of policy.h.  Everything goes
 * through policy_put(), which never writes past size - 1 (room for the
 * NUL) and remembers an overflow instead, so the caller checks once at
 * the end.
 */
void
policy_put(struct policy_buf *b, const char *s, size_t n)
{
	if (b->overflow || n >= b->size - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->col += n;
	b->p[b->len] = '\0';
}

void
policy_puts(struct policy_buf *b, const char *s)
{
	policy_put(b, s, strlen(s));
}

/* A fold: RFC 5322 2.2.3 FWS, CRLF then a tab.  The only CRLF we emit. */
void
policy_fold(struct policy_buf *b)
{
	policy_put(b, "\r\n\t", 3);
	b->col = 1;
}

/*
 * One more word: on this line if it fits, else on the next.  A word is
 * never folded away from a fold's own tab, which would leave a line of
 * white space only (RFC 5322 3.2.2 forbids it).
 */
void
policy_part(struct policy_buf *b, const char *s, size_t n)
{
	if (b->col > 1 && b->col + 1 + n > POLICY_FOLD)
		policy_fold(b);
	else
		policy_put(b, " ", 1);
	policy_put(b, s, n);
}

/*
 * reason as an RFC 5322 3.2.2 comment: ctext plus quoted-pairs.  Control
 * characters are dropped (CR/LF would end the field, NUL cuts C strings
 * downstream), '(' ')' '\' are escaped so the comment can neither close
 * early nor nest, and bytes >= 0x80 become '?': reasons are free text,
 * often from a DNS TXT record, and a 7-bit comment is legal in any
 * message.  dst holds POLICY_AR_REASON_MAX + 3.  Returns the length, 0
 * when nothing printable is left.
 */
static size_t
policy_comment(char *dst, const char *reason)
{
	const unsigned char	*s = (const unsigned char *)reason;
	size_t			 n = 1, need;
	unsigned char		 c;

	dst[0] = '(';
	for (; *s != '\0'; s++) {
		c = *s;
		if (c < ' ' || c == 0x7f)
			continue;
		if (c >= 0x80)
			c = '?';
		need = c == '(' || c == ')' || c == '\\' ? 2 : 1;
		if (n - 1 + need > POLICY_AR_REASON_MAX)
			break;
		if (need == 2)
			dst[n++] = '\\';
		dst[n++] = (char)c;
	}
	if (n == 1)
		return 0;
	dst[n++] = ')';
	dst[n] = '\0';
	return n;
}

/* RFC 1035 host name: LDH labels, no empty label, at most 253. */
static int
policy_domain_syntax(const char *s, size_t len)
{
	size_t	i, label = 0;

	if (len == 0 || len > POLICY_DOMAIN_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
		} else if (policy_alnum((unsigned char)s[i]) ||
		    (s[i] == '-' && label > 0)) {
			if (++label > 63)
				return 0;
		} else
			return 0;
	}
	return label > 0 && s[len - 1] != '-';
}

/*
 * RFC 8601 2.2 pvalue's second form, [ [ local-part ] "@" ] domain-name,
 * with local-part a dot-atom or a quoted-string (RFC 5322 3.4.1).  Only
 * well-formed text passes, so it can be copied as is.
 */
static int
policy_addr_syntax(const char *s, size_t len)
{
	size_t		 i, l;

	/* The last '@' separates: a quoted local part may hold one. */
	for (i = len; i > 0 && s[i - 1] != '@'; i--)
		;
	if (i == 0)
		return 0;
	l = i - 1;		/* local-part is s[0..l) */
	if (!policy_domain_syntax(s + i, len - i))
		return 0;
	if (l == 0)
		return 1;
	if (s[0] == '"') {
		if (l < 2 || s[l - 1] != '"')
			return 0;
		for (i = 1; i + 1 < l; i++) {
			if (s[i] == '\\') {
				/* A quoted-pair may quote anything visible or a blank. */
				if (++i + 1 > l - 1 || (unsigned char)s[i] < ' ' ||
				    s[i] == 0x7f)
					return 0;
			} else if ((unsigned char)s[i] < ' ' || s[i] == 0x7f ||
			    (unsigned char)s[i] >= 0x80 || s[i] == '"')
				return 0;
		}
		return 1;
	}
	if (s[0] == '.' || s[l - 1] == '.')
		return 0;
	for (i = 0; i < l; i++)
		if (!(policy_atext((unsigned char)s[i]) ||
		    (s[i] == '.' && s[i + 1] != '.')))
			return 0;
	return 1;
}

/*
 * Render "name=value" into dst (POLICY_AR_NAME_MAX + POLICY_AR_VALUE_MAX
 * + 2).  v is the value as the filter wrote it.  A token or an address
 * goes as is; anything else becomes a quoted-string: a value given in
 * quotes is unquoted first so it is not quoted twice, control characters
 * are dropped, '"' and '\' escaped; UTF-8 is kept (RFC 6532 3.2 allows
 * it in quoted strings, and only an SMTPUTF8 envelope supplies it).
 * Returns the length, or 0 to leave the item out (too long).
 */
static size_t
policy_prop(char *dst, const char *name, size_t namelen, const char *v,
    size_t vlen)
{
	size_t	n, i, start = 0, end = vlen, vstart;
	int	tok = vlen > 0;

	memcpy(dst, name, namelen);
	dst[namelen] = '=';
	n = vstart = namelen + 1;
	for (i = 0; i < vlen; i++)
		if (!str_mime_tokenc((unsigned char)v[i]))
			tok = 0;
	if (tok || policy_addr_syntax(v, vlen)) {
		if (vlen > POLICY_AR_VALUE_MAX)
			return 0;
		memcpy(dst + n, v, vlen);
		n += vlen;
		dst[n] = '\0';
		return n;
	}
	/* "..." with nothing after the closing quote: take the inside. */
	if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
		for (i = 1; i < vlen - 1; i++)
			if (v[i] == '\\')
				i++;
			else if (v[i] == '"')
				break;
		if (i == vlen - 1) {
			start = 1;
			end = vlen - 1;
		}
	}
	dst[n++] = '"';
	for (i = start; i < end; i++) {
		unsigned char c = (unsigned char)v[i];

		if (start == 1 && c == '\\' && i + 1 < end)
			c = (unsigned char)v[++i];
		if (c < ' ' || c == 0x7f)
			continue;
		if (n - vstart + (c == '"' || c == '\\' ? 2 : 1) + 1 >
		    POLICY_AR_VALUE_MAX)
			return 0;
		if (c == '"' || c == '\\')
			dst[n++] = '\\';
		dst[n++] = (char)c;
	}
	dst[n++] = '"';
	dst[n] = '\0';
	return n;
}

/* Outside quotes, a blank or any control character separates items. */
static int
policy_sep(unsigned char c)
{
	return c <= ' ' || c == 0x7f;
}

/*
 * props: "ptype.property=value" items (RFC 8601 2.2 propspec).  The name
 * must be Keyword "." Keyword; anything else is dropped whole, since
 * half an item would change what the receiver reads.
 */
static void
policy_props(struct policy_buf *b, const char *props)
{
	char		 item[POLICY_AR_NAME_MAX + POLICY_AR_VALUE_MAX + 2];
	const char	*s = props, *start, *eq, *dot;
	size_t		 n, namelen;
	int		 inq;

	for (;;) {
		while (*s != '\0' && policy_sep((unsigned char)*s))
			s++;
		if (*s == '\0')
			return;
		/*
		 * A '"' right after the '=' opens a quoted value, in which
		 * a blank does not end the item.
		 */
		for (start = s, inq = 0; *s != '\0' &&
		    (inq || !policy_sep((unsigned char)*s)); s++) {
			if (inq) {
				if (*s == '\\' && s[1] != '\0')
					s++;
				else if (*s == '"')
					inq = 0;
			} else if (*s == '"' && s > start && s[-1] == '=')
				inq = 1;
		}
		eq = memchr(start, '=', (size_t)(s - start));
		if (eq == NULL)
			continue;
		namelen = (size_t)(eq - start);
		dot = memchr(start, '.', namelen);
		if (dot == NULL || namelen > POLICY_AR_NAME_MAX ||
		    !policy_keyword(start, (size_t)(dot - start), 0) ||
		    !policy_keyword(dot + 1, namelen - (size_t)(dot + 1 - start), 0))
			continue;
		if ((size_t)(s - eq - 1) > 2 * POLICY_AR_VALUE_MAX)
			continue;
		if ((n = policy_prop(item, start, namelen, eq + 1,
		    (size_t)(s - eq - 1))) > 0)
			policy_part(b, item, n);
	}
}

size_t
policy_ar_render(char *out, size_t outlen, const char *authserv_id,
    const struct policy_ar_result *r, size_t n)
{
	struct policy_buf	 b = { out, outlen, 0, 0, 0 };
	char			 comment[POLICY_AR_REASON_MAX + 3];
	size_t			 i, done = 0, len;

	if (out == NULL || outlen == 0)
		return 0;
	out[0] = '\0';
	if (!policy_authserv_id_valid(authserv_id) || (r == NULL && n > 0))
		return 0;
	/* RFC 8601 2.2: authres-header-field = "Authentication-Results:" authserv-id ... */
	policy_puts(&b, "Authentication-Results: ");
	policy_puts(&b, authserv_id);
	policy_puts(&b, ";");
	for (i = 0; i < n; i++) {
		if (!policy_ar_keyword_valid(r[i].method, 1) ||
		    !policy_ar_keyword_valid(r[i].result, 0))
			continue;
		/* resinfo = ";" methodspec ...: the ";" ends the line before. */
		if (done > 0)
			policy_puts(&b, ";");
		policy_fold(&b);
		policy_puts(&b, r[i].method);
		policy_puts(&b, "=");
		policy_puts(&b, r[i].result);
		if (r[i].reason != NULL &&
		    (len = policy_comment(comment, r[i].reason)) > 0)
			policy_part(&b, comment, len);
		if (r[i].props != NULL)
			policy_props(&b, r[i].props);
		done++;
	}
	/* RFC 8601 2.2: no-result = [CFWS] ";" [CFWS] "none". */
	if (done == 0)
		policy_puts(&b, " none");
	policy_put(&b, "\r\n", 2);
	if (b.overflow) {
		out[0] = '\0';
		return 0;
	}
	out[b.len] = '\0';
	return b.len;
}

/*
 * Reading a foreign field.  Raw field bodies may hold folds (CRLF WSP,
 * or a bare LF from a lenient reader upstream), comments that nest
 * (RFC 5322 3.2.2) and quoted-pairs; all of it is CFWS before the id.
 */
static size_t
policy_skip_cfws(const char *s, size_t len, size_t i)
{
	size_t	depth;

	while (i < len) {
		if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++;
			continue;
		}
		if (s[i] != '(')
			break;
		/* No recursion: a counter, so "((((..." can't exhaust the stack. */
		for (depth = 0; i < len; i++) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '(')
				depth++;
			else if (s[i] == ')' && --depth == 0) {
				i++;
				break;
			}
		}
	}
	return i;
}

/* a equals ours ignoring ASCII case and one trailing dot on either side. */
static int
policy_id_eq(const char *a, size_t alen, const char *ours)
{
	size_t	olen = strlen(ours);

	if (alen > 1 && a[alen - 1] == '.')
		alen--;
	if (olen > 1 && ours[olen - 1] == '.')
		olen--;
	return policy_caseeq(a, alen, ours, olen);
}

int
policy_ar_is_ours(const char *value, size_t len, const char *authserv_id)
{
	char	buf[POLICY_AUTHSERV_MAX + 2];
	size_t	i, k, n;

	if (value == NULL || !policy_authserv_id_valid(authserv_id))
		return 0;
	i = policy_skip_cfws(value, len, 0);
	if (i >= len)
		return 0;
	if (value[i] == '"') {
		/*
		 * RFC 8601 2.2 allows the quoted-string form of value.
		 * Decode quoted-pairs, drop fold CR/LF (RFC 5322 3.2.4: they
		 * are not part of the content); an unterminated string ends
		 * at the end of the field, since a lenient reader may take it
		 * that way too and removing is the safe error.
		 */
		for (n = 0, i++; i < len && value[i] != '"'; i++) {
			if (value[i] == '\r' || value[i] == '\n')
				continue;
			if (value[i] == '\\' && i + 1 < len)
				i++;
			if (n == sizeof buf)
				return 0;	/* longer than any id of ours */
			buf[n++] = value[i];
		}
		return policy_id_eq(buf, n, authserv_id);
	}
	/*
	 * The token form.  Whatever follows it (CFWS, a version number,
	 * ';', or junk) does not matter: a reader that stops at the token
	 * sees our id, so the field must go.
	 */
	for (k = i; k < len && str_mime_tokenc((unsigned char)value[k]); k++)
		;
	if (k == i)
		return 0;
	return policy_id_eq(value + i, k - i, authserv_id);
}

int
policy_header_is(const char *name, size_t len, const char *want)
{
	if (name == NULL || want == NULL)
		return 0;
	/* RFC 5322 4.5.3 obs-optional: WSP may sit between name and colon. */
	while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t'))
		len--;
	return len > 0 && policy_caseeq(name, len, want, strlen(want));
}
