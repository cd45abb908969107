/*
 * smtp_parse.c - SMTP command-line parsing (RFC 5321 4.1), no I/O
 *
 * NAME
 *	smtp_parse_verb, smtp_cmd_name, smtp_parse_path, smtp_parse_strerror,
 *	smtp_parse_helo, smtp_parse_domain, smtp_parse_notify
 *
 * DESCRIPTION
 *	Pure functions over one framed command line (see smtp_parse.h): no
 *	allocation, no I/O, outputs are fixed-size buffers.
 *
 *	smtp_parse_path() first validates the whole path in place (pointers
 *	into args), then checks the RFC 5321 4.5.3.1 limits, and only then
 *	copies into struct smtp_path, so no copy can ever overrun.  Verdicts,
 *	in order of precedence:
 *	  SMTP_PARSE_8BIT	any byte >= 0x80 in args: without SMTPUTF8
 *				(RFC 6531 3.3) neither the path nor an
 *				esmtp-value may carry one; reply 5.6.7.
 *	  SMTP_PARSE_SYNTAX	not "FROM:"/"TO:" [SP...] "<" path ">".
 *	  SMTP_PARSE_ROUTED	a source route "<@a,@b:u@c>", or '%' / '!' in
 *				the local part.  Inside a quoted local part
 *				'@', '%' and '!' count as routing too: Postfix
 *				(resolve_dequoted=yes, the default) looks
 *				inside quotes when it decides whether an
 *				address is routed, and upstream probably
 *				trusts us (SECURITY.md section 7).
 *	  SMTP_PARSE_PATH_TOO_LONG local-part > 64 (quotes included, they are
 *				part of Local-part in the 4.1.2 grammar),
 *				domain > 255, path > 256 with the brackets.
 *	  SMTP_PARSE_TOO_MANY_PARAMS / SMTP_PARSE_PARAM_SYNTAX.
 *	  SMTP_PARSE_PARAM_DUP	the same esmtp-keyword twice, any case:
 *				RFC 5321 4.1.2 lets each appear once, and
 *				"BODY=7BIT BODY=8BITMIME" would mean one thing
 *				here and perhaps another to the upstream.
 */
#include <arpa/inet.h>
#include <string.h>

#include "smtp_parse.h"
#include "strutil.h"

struct smtp_parse_verb_row {
	enum smtp_cmd	 cmd;
	const char	*name;
	size_t		 len;
};

#define SMTP_PARSE_VERB(c, n)	{ c, n, sizeof(n) - 1 }

/* Indexed by enum smtp_cmd; smtp_cmd_name() relies on that order. */
static const struct smtp_parse_verb_row smtp_parse_verbs[SMTP_CMD_COUNT] = {
	SMTP_PARSE_VERB(SMTP_CMD_UNKNOWN,	"UNKNOWN"),
	SMTP_PARSE_VERB(SMTP_CMD_HELO,		"HELO"),
	SMTP_PARSE_VERB(SMTP_CMD_EHLO,		"EHLO"),
	SMTP_PARSE_VERB(SMTP_CMD_MAIL,		"MAIL"),
	SMTP_PARSE_VERB(SMTP_CMD_RCPT,		"RCPT"),
	SMTP_PARSE_VERB(SMTP_CMD_DATA,		"DATA"),
	SMTP_PARSE_VERB(SMTP_CMD_RSET,		"RSET"),
	SMTP_PARSE_VERB(SMTP_CMD_NOOP,		"NOOP"),
	SMTP_PARSE_VERB(SMTP_CMD_QUIT,		"QUIT"),
	SMTP_PARSE_VERB(SMTP_CMD_VRFY,		"VRFY"),
	SMTP_PARSE_VERB(SMTP_CMD_EXPN,		"EXPN"),
	SMTP_PARSE_VERB(SMTP_CMD_HELP,		"HELP"),
	SMTP_PARSE_VERB(SMTP_CMD_STARTTLS,	"STARTTLS"),
	SMTP_PARSE_VERB(SMTP_CMD_AUTH,		"AUTH"),
	SMTP_PARSE_VERB(SMTP_CMD_BDAT,		"BDAT"),
	SMTP_PARSE_VERB(SMTP_CMD_XCLIENT,	"XCLIENT"),
	SMTP_PARSE_VERB(SMTP_CMD_XFORWARD,	"XFORWARD"),
};

static const char *const smtp_parse_errstr[SMTP_PARSE_ERR_COUNT] = {
	[SMTP_PARSE_OK]			= "ok",
	[SMTP_PARSE_SYNTAX]		= "syntax error in path",
	[SMTP_PARSE_PATH_TOO_LONG]	= "path too long",
	[SMTP_PARSE_ROUTED]		= "source-routed address",
	[SMTP_PARSE_PARAM_SYNTAX]	= "bad ESMTP parameter",
	[SMTP_PARSE_TOO_MANY_PARAMS]	= "too many ESMTP parameters",
	[SMTP_PARSE_8BIT]		= "8-bit character in address",
	[SMTP_PARSE_PARAM_DUP]		= "duplicate ESMTP parameter",
};

/* Locale-independent ctype: the parser must not change with setlocale(). */
static int
smtp_parse_is_alpha(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
smtp_parse_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Set only inside smtp_parse_path_utf8(); per thread, as workers parse concurrently. */
static _Thread_local int smtp_parse_utf8;

static int
smtp_parse_is_alnum(int c)
{
	/*
	 * RFC 6531 3.3: with SMTPUTF8, atext and sub-domain also take
	 * UTF8-non-ascii (the bytes were checked as UTF-8 beforehand).
	 */
	return smtp_parse_is_alpha(c) || smtp_parse_is_digit(c) ||
	    (smtp_parse_utf8 && c >= 0x80);
}

static int
smtp_parse_upper(int c)
{
	return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

/* RFC 5321 4.1.2 atext (RFC 5322 3.2.3). */
static int
smtp_parse_is_atext(int c)
{
	return smtp_parse_is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Case-insensitive compare of n bytes; s may be shorter (stops at its NUL). */
static int
smtp_parse_prefix(const char *s, const char *upper, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '\0' || smtp_parse_upper((unsigned char)s[i]) != upper[i])
			return 0;
	return 1;
}

enum smtp_cmd
smtp_parse_verb(const char *line, const char **args)
{
	size_t i, n;

	/*
	 * The verb ends at SP or end of line (RFC 5321 4.1.1: verb SP args).
	 * Measuring it first makes "MAILX" unknown instead of MAIL with
	 * args "X", and "MAIL\tFROM" unknown too: TAB is not a separator.
	 */
	for (n = 0; line[n] != '\0' && line[n] != ' '; n++)
		;
	for (i = SMTP_CMD_UNKNOWN + 1; i < SMTP_CMD_COUNT; i++) {
		if (smtp_parse_verbs[i].len != n ||
		    !smtp_parse_prefix(line, smtp_parse_verbs[i].name, n))
			continue;
		if (args != NULL)
			*args = line + n + (line[n] == ' ');
		return smtp_parse_verbs[i].cmd;
	}
	/* Unknown: *args is "" (the end of line), never a guess at arguments. */
	if (args != NULL)
		*args = line + strlen(line);
	return SMTP_CMD_UNKNOWN;
}

const char *
smtp_cmd_name(enum smtp_cmd cmd)
{
	if ((int)cmd < 0 || cmd >= SMTP_CMD_COUNT)
		return "UNKNOWN";
	return smtp_parse_verbs[cmd].name;
}

const char *
smtp_parse_strerror(enum smtp_parse_err err)
{
	if ((int)err < 0 || err >= SMTP_PARSE_ERR_COUNT)
		return "unknown error";
	return smtp_parse_errstr[err];
}

/*
 * Scan an RFC 5321 Domain (sub-domain *("." sub-domain), sub-domain =
 * Let-dig [Ldh-str]) at p.  Labels are limited to 63 octets by RFC 1035
 * 2.3.4.  Returns the length scanned, 0 if there is no valid domain.  The
 * 255 total is the caller's business: the path parser wants to tell
 * "too long" apart from "bad syntax".
 */
static size_t
smtp_parse_domain_scan(const char *p)
{
	size_t i = 0, label;

	for (;;) {
		if (!smtp_parse_is_alnum((unsigned char)p[i]))
			return 0;
		for (label = 0; smtp_parse_is_alnum((unsigned char)p[i]) ||
		    p[i] == '-'; i++, label++)
			;
		if (label > 63 || p[i - 1] == '-')
			return 0;
		if (p[i] != '.')
			return i;
		i++;
	}
}

int
smtp_parse_domain(const char *d)
{
	size_t n;

	if (d == NULL)
		return -1;
	n = smtp_parse_domain_scan(d);
	if (n == 0 || d[n] != '\0' || n > SMTP_DOMAIN_MAX)
		return -1;
	return 0;
}

/*
 * Scan an address-literal "[...]" at p (RFC 5321 4.1.3).  Only the IPv4
 * and "IPv6:" forms are accepted: General-address-literal tags must be
 * IANA-registered and IPv6 is the only one.  The contents are checked with
 * inet_pton(), which is stricter than the ABNF (no leading zeros in IPv4),
 * and that is fine for us.  Returns the length including the brackets, 0
 * if invalid.
 */
static size_t
smtp_parse_literal_scan(const char *p)
{
	char buf[64];
	unsigned char addr[16];
	const char *start = p, *end;
	size_t n;
	int af = AF_INET;

	if (p[0] != '[' || (end = strchr(p, ']')) == NULL)
		return 0;
	p++;
	n = (size_t)(end - p);
	if (n >= 5 && smtp_parse_prefix(p, "IPV6:", 5)) {
		af = AF_INET6;
		p += 5;
		n -= 5;
	}
	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, p, n);
	buf[n] = '\0';
	if (inet_pton(af, buf, addr) != 1)
		return 0;
	return (size_t)(end - start) + 1;
}

int
smtp_parse_helo(const char *arg)
{
	size_t n;

	/*
	 * RFC 5321 4.1.1.1: Domain / address-literal.  A bare single label
	 * ("localhost") is a valid Domain already.  Everything else, SP
	 * included, is refused: the argument ends up in Received: and in
	 * XCLIENT HELO=, so "EHLO x ADDR=127.0.0.1" must not get through
	 * (SECURITY.md section 7).
	 */
	if (arg == NULL)
		return -1;
	if (arg[0] == '[') {
		n = smtp_parse_literal_scan(arg);
		return (n != 0 && arg[n] == '\0') ? 0 : -1;
	}
	return smtp_parse_domain(arg);
}

/*
 * Scan a Local-part (RFC 5321 4.1.2): Dot-string or Quoted-string.
 * Sets *routed when it holds a routing operator (see the top comment).
 * Returns the length scanned, 0 on a syntax error.
 */
static size_t
smtp_parse_local_scan(const char *p, int *routed)
{
	size_t i = 0;
	int c;

	if (p[0] == '"') {
		/* QcontentSMTP = qtextSMTP / quoted-pairSMTP */
		for (i = 1; p[i] != '"'; i++) {
			c = (unsigned char)p[i];
			if (c == '\\') {
				/* quoted-pairSMTP = "\" %d32-126 */
				c = (unsigned char)p[++i];
				if (c < 32 || c > 126)
					return 0;
			} else if (c < 32 || (c > 126 && !(smtp_parse_utf8 && c >= 0x80)))
				return 0;	/* also the terminating NUL */
			if (c == '@' || c == '%' || c == '!')
				*routed = 1;
		}
		return i + 1;
	}
	/* Dot-string = Atom *("." Atom): no leading, trailing or double dot. */
	for (;;) {
		if (!smtp_parse_is_atext((unsigned char)p[i]))
			return 0;
		for (; smtp_parse_is_atext((unsigned char)p[i]); i++)
			if (p[i] == '%' || p[i] == '!')
				*routed = 1;
		if (p[i] != '.')
			return i;
		i++;
	}
}

/*
 * Scan an A-d-l (RFC 5321 4.1.2: At-domain *( "," At-domain ) ":"), which
 * 4.1.1.3 says servers SHOULD ignore.  We refuse it instead: the proxy
 * cannot know how upstream would route it.  Returns the length including
 * the ':' or 0.
 */
static size_t
smtp_parse_adl_scan(const char *p)
{
	size_t i = 0, n;

	for (;;) {
		if (p[i] != '@')
			return 0;
		i++;
		if ((n = smtp_parse_domain_scan(p + i)) == 0)
			return 0;
		i += n;
		if (p[i] == ':')
			return i + 1;
		if (p[i] != ',')
			return 0;
		i++;
	}
}

/*
 * Parse what follows the closing '>': end of line, or SP then
 * esmtp-param *(SP esmtp-param) (RFC 5321 4.1.2 Mail-parameters).
 */
static enum smtp_parse_err
smtp_parse_params(const char *p, struct smtp_path *out)
{
	struct smtp_param *prm;
	size_t k, v;

	if (*p != ' ' && *p != '\0')
		return SMTP_PARSE_PARAM_SYNTAX;	/* "<a@b>SIZE=1" */
	for (;;) {
		/* Be lenient about repeated and trailing SP: harmless. */
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return SMTP_PARSE_OK;
		if (out->nparams >= SMTP_PARAMS_MAX)
			return SMTP_PARSE_TOO_MANY_PARAMS;
		prm = &out->params[out->nparams];

		/*
		 * esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"),
		 * ASCII even with SMTPUTF8 (RFC 6531 3.3 extends only the
		 * value), so not smtp_parse_is_alnum().
		 */
		if (!smtp_parse_is_alpha(*p) && !smtp_parse_is_digit(*p))
			return SMTP_PARSE_PARAM_SYNTAX;
		for (k = 0; smtp_parse_is_alpha(p[k]) ||
		    smtp_parse_is_digit(p[k]) || p[k] == '-'; k++)
			;
		if (k > SMTP_PARAM_KEY_MAX)
			return SMTP_PARSE_PARAM_SYNTAX;
		for (size_t i = 0; i < k; i++)
			prm->key[i] = (char)smtp_parse_upper((unsigned char)p[i]);
		prm->key[k] = '\0';
		p += k;

		if (*p == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126) */
			p++;
			for (v = 0; p[v] >= 33 && p[v] <= 126 && p[v] != '='; v++)
				;
			if (v == 0 || v > SMTP_PARAM_VALUE_MAX)
				return SMTP_PARSE_PARAM_SYNTAX;
			memcpy(prm->value, p, v);
			prm->value[v] = '\0';
			prm->has_value = 1;
			p += v;
		} else {
			prm->value[0] = '\0';
			prm->has_value = 0;
		}
		if (*p != ' ' && *p != '\0')
			return SMTP_PARSE_PARAM_SYNTAX;
		for (k = 0; k < out->nparams; k++)
			if (strcmp(out->params[k].key, prm->key) == 0)
				return SMTP_PARSE_PARAM_DUP;
		out->nparams++;
	}
}

int
smtp_parse_notify(const char *value)
{
	static const char *const kw[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY" };
	unsigned seen = 0;
	const char *p, *end;
	size_t i, j, n;

	if (value == NULL)
		return -1;
	for (p = value;; p = end + 1) {
		end = strchr(p, ',');
		n = end != NULL ? (size_t)(end - p) : strlen(p);
		for (i = 0; i < sizeof kw / sizeof kw[0]; i++) {
			if (strlen(kw[i]) != n)
				continue;
			for (j = 0; j < n &&
			    smtp_parse_upper((unsigned char)p[j]) == kw[i][j]; j++)
				;
			if (j == n)
				break;
		}
		/* An empty or unknown element, or one seen before. */
		if (i == sizeof kw / sizeof kw[0] || (seen & (1u << i)))
			return -1;
		seen |= 1u << i;
		if (end == NULL)
			break;
	}
	/* NEVER stands alone (RFC 3461 4.1). */
	return (seen & 1u) && seen != 1u ? -1 : 0;
}

static enum smtp_parse_err
smtp_parse_path_scan(const char *args, enum smtp_cmd cmd, struct smtp_path *out)
{
	const char *p, *path, *local, *domain;
	size_t llen, dlen, plen, i;
	int routed = 0;

	if (args == NULL)
		return SMTP_PARSE_SYNTAX;

	for (p = args; *p != '\0' && !smtp_parse_utf8; p++)
		if ((unsigned char)*p >= 0x80)
			return SMTP_PARSE_8BIT;

	if (cmd == SMTP_CMD_MAIL && smtp_parse_prefix(args, "FROM:", 5))
		p = args + 5;
	else if (cmd == SMTP_CMD_RCPT && smtp_parse_prefix(args, "TO:", 3))
		p = args + 3;
	else
		return SMTP_PARSE_SYNTAX;

	/* "MAIL FROM: <a@b>" is not RFC 5321 but many clients send it. */
	while (*p == ' ')
		p++;
	if (*p != '<')
		return SMTP_PARSE_SYNTAX;
	path = p++;

	if (cmd == SMTP_CMD_MAIL && *p == '>')		/* null reverse-path */
		return smtp_parse_params(p + 1, out);

	if (cmd == SMTP_CMD_RCPT && smtp_parse_prefix(p, "POSTMASTER>", 11)) {
		/* 4.1.1.3: "<Postmaster>" without a domain, any case. */
		memcpy(out->local, p, 10);
		memcpy(out->mailbox, p, 10);
		return smtp_parse_params(p + 11, out);
	}

	if (*p == '@') {
		if ((i = smtp_parse_adl_scan(p)) == 0)
			return SMTP_PARSE_SYNTAX;
		p += i;
		routed = 1;
	}

	local = p;
	if ((llen = smtp_parse_local_scan(local, &routed)) == 0 ||
	    local[llen] != '@')
		return SMTP_PARSE_SYNTAX;
	domain = local + llen + 1;
	if (*domain == '[')
		dlen = smtp_parse_literal_scan(domain);
	else
		dlen = smtp_parse_domain_scan(domain);
	if (dlen == 0 || domain[dlen] != '>')
		return SMTP_PARSE_SYNTAX;
	p = domain + dlen + 1;
	plen = (size_t)(p - path);

	if (routed)
		return SMTP_PARSE_ROUTED;
	if (llen > SMTP_LOCAL_MAX || dlen > SMTP_DOMAIN_MAX || plen > SMTP_PATH_MAX)
		return SMTP_PARSE_PATH_TOO_LONG;

	/*
	 * Lengths are now proven to fit: local <= 64 < sizeof local,
	 * domain <= 255 < sizeof domain, and local + 1 + domain = plen - 2
	 * <= 254 < sizeof mailbox.
	 */
	memcpy(out->local, local, llen);
	out->local[llen] = '\0';
	for (i = 0; i < dlen; i++)
		out->domain[i] = (char)str_ascii_lower((unsigned char)domain[i]);
	out->domain[dlen] = '\0';
	memcpy(out->mailbox, local, llen);
	out->mailbox[llen] = '@';
	memcpy(out->mailbox + llen + 1, out->domain, dlen + 1);

	return smtp_parse_params(p, out);
}

enum smtp_parse_err
smtp_parse_path(const char *args, enum smtp_cmd cmd, struct smtp_path *out)
{
	enum smtp_parse_err err;

	/* On error out is all zero, so no half-parsed address can leak on. */
	memset(out, 0, sizeof(*out));
	if ((err = smtp_parse_path_scan(args, cmd, out)) != SMTP_PARSE_OK)
		memset(out, 0, sizeof(*out));
	return err;
}

/*
 * RFC 3629 well-formed UTF-8: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no C0/C1 controls beyond what SMTP already refuses.
 */
int
smtp_parse_utf8_valid(const unsigned char *p, size_t len)
{
	size_t i = 0, n, k;
	unsigned cp;

	while (i < len) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		if (p[i] >= 0xc2 && p[i] <= 0xdf) {
			n = 1;
			cp = p[i] & 0x1f;
		} else if (p[i] >= 0xe0 && p[i] <= 0xef) {
			n = 2;
			cp = p[i] & 0x0f;
		} else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
			n = 3;
			cp = p[i] & 0x07;
		} else
			return 0;
		for (k = 1; k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff ||
		    (cp >= 0x80 && cp <= 0x9f))
			return 0;
		i += n + 1;
	}
	return 1;
}

enum smtp_parse_err
smtp_parse_path_utf8(const char *args, enum smtp_cmd cmd, struct smtp_path *out)
{
	enum smtp_parse_err err;

	if (args == NULL ||
	    !smtp_parse_utf8_valid((const unsigned char *)args, strlen(args))) {
		memset(out, 0, sizeof(*out));
		return SMTP_PARSE_8BIT;
	}
	smtp_parse_utf8 = 1;
	err = smtp_parse_path(args, cmd, out);
	smtp_parse_utf8 = 0;
	return err;
}

const char *
smtp_proto_name(unsigned flags)
{
	/* Indexed by TLS | AUTH; the registry has no HELO variant with S or A. */
	static const char *const esmtp[4] = {
		"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"
	};
	static const char *const utf8[4] = {
		"UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"
	};
	unsigned i;

	/*
	 * HELO offers no STARTTLS, AUTH or SMTPUTF8; a HELO over implicit
	 * TLS is still "SMTP" (IANA has no "SMTPS"), the Received comment
	 * naming the TLS version.
	 */
	if (!(flags & SMTP_PROTO_ESMTP))
		return "SMTP";
	i = ((flags & SMTP_PROTO_TLS) ? 1 : 0) | ((flags & SMTP_PROTO_AUTH) ? 2 : 0);
	return (flags & SMTP_PROTO_UTF8) ? utf8[i] : esmtp[i];
}
