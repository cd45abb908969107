/*
 * smtp_reply.c - strict, bounded parser and renderer for SMTP replies
 *
 * NAME
 *	smtp_reply_init, smtp_reply_feed, smtp_reply_enhanced,
 *	smtp_reply_render, smtp_reply_ehlo_caps
 *
 * DESCRIPTION
 *	smtp_reply_feed() takes one framed line at a time and accumulates a
 *	reply (RFC 5321 4.2: *(code "-" text CRLF) code [SP text] CRLF).  It
 *	caps line count and total text, so a hostile or broken upstream
 *	cannot make us read or write out of bounds (OpenSMTPD CVE-2020-8794
 *	was exactly that in a multi-line reply parser).  An error is sticky:
 *	later lines return SMTP_REPLY_ERROR until smtp_reply_init().  After
 *	SMTP_REPLY_DONE the caller must smtp_reply_init() before the next
 *	reply.
 *
 *	smtp_reply_render() writes a reply for our client.  For classes 2, 4
 *	and 5 every line carries an RFC 3463 enhanced code whose class digit
 *	is forced to the rendered reply's class (RFC 3463 2: the class must
 *	agree with the reply code), so overriding 550 with 451 turns
 *	"5.1.1" into "4.1.1".  3xx replies (354, 334 AUTH challenges) carry
 *	no enhanced code (RFC 2034 3 covers 2xx/4xx/5xx only, and a 334
 *	text is base64 that must stay untouched).
 *
 *	smtp_reply_ehlo_caps() reads the EHLO keywords (RFC 5321 4.1.1.1,
 *	keywords are case-insensitive).
 *
 * DIAGNOSTICS
 *	r->error is one of the static strings below when feed returns
 *	SMTP_REPLY_ERROR; render returns 0 for an empty reply, a bad code,
 *	a CR or NUL in the text, or an output buffer that is too small.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "smtp_reply.h"

static int
smtp_reply_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
smtp_reply_upper(int c)
{
	return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

/* RFC 5321 4.2: first digit 2..5 (1yz is not used), second 0..5. */
static int
smtp_reply_code_ok(int code)
{
	return code >= 200 && code <= 599 && (code / 10) % 10 <= 5;
}

void
smtp_reply_init(struct smtp_reply *r)
{
	r->code = 0;
	r->text[0] = '\0';
	r->textlen = 0;
	r->nlines = 0;
	r->error = NULL;
}

static enum smtp_reply_status
smtp_reply_fail(struct smtp_reply *r, const char *why)
{
	r->error = why;
	return SMTP_REPLY_ERROR;
}

enum smtp_reply_status
smtp_reply_feed(struct smtp_reply *r, const char *line, size_t len)
{
	const char *text;
	size_t tlen, need;
	int code, last;

	if (r->error != NULL)
		return SMTP_REPLY_ERROR;
	if (line == NULL)
		return smtp_reply_fail(r, "bad reply code");
	if (len > SMTP_REPLY_LINE_MAX)
		return smtp_reply_fail(r, "reply line too long");
	/* The caller frames lines; check anyway, a bare CR would reach the client. */
	if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL ||
	    memchr(line, '\n', len) != NULL)
		return smtp_reply_fail(r, "bad character in reply");
	if (len < 3 || line[0] < '2' || line[0] > '5' ||
	    line[1] < '0' || line[1] > '5' || !smtp_reply_is_digit(line[2]))
		return smtp_reply_fail(r, "bad reply code");
	if (len == 3 || line[3] == ' ')
		last = 1;
	else if (line[3] == '-')
		last = 0;
	else
		return smtp_reply_fail(r, "bad reply code");	/* "250x" */

	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (r->nlines == 0)
		r->code = code;
	else if (code != r->code)
		return smtp_reply_fail(r, "code changed inside multi-line reply");
	if (r->nlines >= SMTP_REPLY_LINES_MAX)
		return smtp_reply_fail(r, "too many lines");

	text = len > 4 ? line + 4 : "";
	tlen = len > 4 ? len - 4 : 0;
	need = tlen + (r->nlines > 0);		/* '\n' separator */
	if (r->textlen > SMTP_REPLY_TEXT_MAX || need > SMTP_REPLY_TEXT_MAX - r->textlen)
		return smtp_reply_fail(r, "reply too long");
	if (r->nlines > 0)
		r->text[r->textlen++] = '\n';
	memcpy(r->text + r->textlen, text, tlen);
	r->textlen += tlen;
	r->text[r->textlen] = '\0';
	r->nlines++;
	return last ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}

/*
 * Length of an RFC 3463 status-code at t (class "." 1*3digit "." 1*3digit,
 * class 2/4/5) followed by SP or the end of t[0..len), or 0.  The class is
 * not compared with anything here.
 */
static size_t
smtp_reply_esc_scan(const char *t, size_t len)
{
	size_t i, n;
	int part;

	if (len < 5 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || t[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (n = 0; i < len && n < 3 && smtp_reply_is_digit(t[i]); i++, n++)
			;
		if (n == 0)
			return 0;
		if (part == 0) {
			if (i >= len || t[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && t[i] != ' ')
		return 0;	/* "2.0.0000", "2.0.0x" */
	return i;
}

size_t
smtp_reply_enhanced(const char *text, int code, char *out, size_t outlen)
{
	size_t n;

	if (text == NULL || !smtp_reply_code_ok(code))
		return 0;
	/* The longest code is "5.999.999" (9); look no further than that + 1. */
	n = smtp_reply_esc_scan(text, strnlen(text, 16));
	if (n == 0 || text[0] - '0' != code / 100)
		return 0;
	if (out != NULL) {
		if (outlen <= n)
			return 0;
		memcpy(out, text, n);
		out[n] = '\0';
	}
	return n;
}

/* Bounded append; returns -1 once out is full (the caller then gives up). */
static int
smtp_reply_put(char *out, size_t outlen, size_t *pos, const char *s, size_t n)
{
	if (*pos > outlen || n > outlen - *pos)
		return -1;
	memcpy(out + *pos, s, n);
	*pos += n;
	return 0;
}

size_t
smtp_reply_render(const struct smtp_reply *r, int code_override,
    const char *dflt, char *out, size_t outlen)
{
	char esc[16], digits[3];
	const char *t, *nl, *rest;
	size_t textlen, start, tl, n, esclen = 0, pos = 0;
	int code, with_esc;

	if (r == NULL || out == NULL || outlen == 0 || r->nlines == 0)
		return 0;
	code = code_override != 0 ? code_override : r->code;
	if (!smtp_reply_code_ok(code))
		return 0;
	digits[0] = (char)('0' + code / 100);
	digits[1] = (char)('0' + code / 10 % 10);
	digits[2] = (char)('0' + code % 10);
	with_esc = digits[0] != '3';

	if (with_esc) {
		/*
		 * dflt should already match the class; if the caller got that
		 * wrong, fixing the class digit beats sending a reply whose
		 * enhanced code contradicts it.
		 */
		esclen = dflt != NULL ? smtp_reply_esc_scan(dflt, strnlen(dflt, 16)) : 0;
		if (esclen == 0 || dflt[esclen] != '\0') {
			memcpy(esc, "X.0.0", 6);
			esclen = 5;
		} else
			memcpy(esc, dflt, esclen + 1);
		esc[0] = digits[0];
	}

	/* Never trust textlen beyond the buffer, nor past an early NUL. */
	textlen = r->textlen < SMTP_REPLY_TEXT_MAX ? r->textlen : SMTP_REPLY_TEXT_MAX;
	textlen = strnlen(r->text, textlen);
	if (memchr(r->text, '\r', textlen) != NULL)
		return 0;

	for (start = 0;;) {
		t = r->text + start;
		nl = memchr(t, '\n', textlen - start);
		tl = nl != NULL ? (size_t)(nl - t) : textlen - start;

		if (smtp_reply_put(out, outlen, &pos, digits, 3) == -1 ||
		    smtp_reply_put(out, outlen, &pos, nl != NULL ? "-" : " ", 1) == -1)
			return 0;
		rest = t;
		if (with_esc) {
			if ((n = smtp_reply_esc_scan(t, tl)) != 0) {
				/* Keep upstream's subject.detail, force the class. */
				if (smtp_reply_put(out, outlen, &pos, digits, 1) == -1 ||
				    smtp_reply_put(out, outlen, &pos, t + 1, n - 1) == -1)
					return 0;
				rest = t + n + (n < tl);	/* skip the SP */
			} else if (smtp_reply_put(out, outlen, &pos, esc, esclen) == -1)
				return 0;
			n = tl - (size_t)(rest - t);
			if (n > 0 && (smtp_reply_put(out, outlen, &pos, " ", 1) == -1 ||
			    smtp_reply_put(out, outlen, &pos, rest, n) == -1))
				return 0;
		} else if (tl > 0) {
			if (smtp_reply_put(out, outlen, &pos, rest, tl) == -1)
				return 0;
		} else if (nl == NULL) {
			pos--;		/* bare "354": drop the SP we just wrote */
		}
		if (smtp_reply_put(out, outlen, &pos, "\r\n", 2) == -1)
			return 0;
		if (nl == NULL)
			break;
		start += tl + 1;
	}
	if (pos >= outlen)
		return 0;	/* no room for the NUL */
	out[pos] = '\0';
	return pos;
}

struct smtp_reply_ehlo_row {
	const char	*name;		/* upper case */
	unsigned	 flag;
};

static const struct smtp_reply_ehlo_row smtp_reply_ehlo_table[] = {
	{ "PIPELINING",			SMTP_EHLO_PIPELINING },
	{ "SIZE",			SMTP_EHLO_SIZE },
	{ "8BITMIME",			SMTP_EHLO_8BITMIME },
	{ "SMTPUTF8",			SMTP_EHLO_SMTPUTF8 },
	{ "DSN",			SMTP_EHLO_DSN },
	{ "CHUNKING",			SMTP_EHLO_CHUNKING },
	{ "STARTTLS",			SMTP_EHLO_STARTTLS },
	{ "AUTH",			SMTP_EHLO_AUTH },
	{ "ENHANCEDSTATUSCODES",	SMTP_EHLO_ENHANCEDSTATUSCODES },
	{ "XCLIENT",			SMTP_EHLO_XCLIENT },
	{ "XFORWARD",			SMTP_EHLO_XFORWARD },
	{ "BINARYMIME",			SMTP_EHLO_BINARYMIME },
};

/*
 * "PIPELINING 8BITMIME ... size=N" for the log: the keywords the caps
 * hold, in table order, and the SIZE argument (0: none or no limit).
 */
size_t
smtp_ehlo_caps_format(const struct smtp_ehlo_caps *caps, char *out,
    size_t outlen)
{
	size_t i, pos = 0;
	int n;

	if (outlen == 0)
		return 0;
	out[0] = '\0';
	for (i = 0; i < sizeof smtp_reply_ehlo_table /
	    sizeof smtp_reply_ehlo_table[0]; i++) {
		if (!(caps->flags & smtp_reply_ehlo_table[i].flag) ||
		    smtp_reply_ehlo_table[i].flag == SMTP_EHLO_SIZE)
			continue;
		n = snprintf(out + pos, outlen - pos, "%s ",
		    smtp_reply_ehlo_table[i].name);
		if (n < 0 || (size_t)n >= outlen - pos)
			return pos;
		pos += (size_t)n;
	}
	n = snprintf(out + pos, outlen - pos, "size=%zu",
	    (caps->flags & SMTP_EHLO_SIZE) ? caps->size : 0);
	if (n > 0 && (size_t)n < outlen - pos)
		pos += (size_t)n;
	return pos;
}

/* Case-insensitive: does t[0..len) equal the upper-case name? */
static int
smtp_reply_keyword_eq(const char *t, size_t len, const char *name)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (name[i] == '\0' || smtp_reply_upper((unsigned char)t[i]) != name[i])
			return 0;
	return name[len] == '\0';
}

/*
 * Copy the SP-separated argument list a[0..len) upper-cased into dst.
 * Tokens with bytes outside 0x21..0x7e are dropped, and the list is cut
 * at a token boundary when dst is full: a truncated "REVERSE_NAME" could
 * otherwise read as a different attribute name.
 */
static void
smtp_reply_copy_list(char *dst, size_t dstlen, const char *a, size_t len)
{
	size_t i = 0, tok, j, pos = 0, k;
	int good;

	dst[0] = '\0';
	while (i < len) {
		while (i < len && a[i] == ' ')
			i++;
		for (tok = i, good = 1; i < len && a[i] != ' '; i++)
			if (a[i] < 0x21 || a[i] > 0x7e)
				good = 0;
		if (i == tok || !good)
			continue;
		k = i - tok + (pos > 0);	/* bytes this token needs */
		if (k >= dstlen - pos)
			break;
		if (pos > 0)
			dst[pos++] = ' ';
		for (j = tok; j < i; j++)
			dst[pos++] = (char)smtp_reply_upper((unsigned char)a[j]);
		dst[pos] = '\0';
	}
}

/* RFC 1870 SIZE argument: decimal, 0 = no fixed limit; saturate on overflow. */
static size_t
smtp_reply_size_arg(const char *a, size_t len)
{
	size_t i, v = 0;

	for (i = 0; i < len && a[i] == ' '; i++)
		;
	if (i == len)
		return 0;
	for (; i < len && smtp_reply_is_digit(a[i]); i++) {
		if (v > (SIZE_MAX - 9) / 10)
			return SIZE_MAX;
		v = v * 10 + (size_t)(a[i] - '0');
	}
	if (i < len && a[i] != ' ')
		return 0;		/* "SIZE 10k": ignore, do not guess */
	return v;
}

void
smtp_reply_ehlo_caps(const struct smtp_reply *r, struct smtp_ehlo_caps *caps)
{
	const char *t, *nl, *args;
	size_t textlen, start, tl, kw, alen, i;

	memset(caps, 0, sizeof(*caps));
	if (r == NULL || r->code != 250 || r->nlines == 0)
		return;
	textlen = r->textlen < SMTP_REPLY_TEXT_MAX ? r->textlen : SMTP_REPLY_TEXT_MAX;
	textlen = strnlen(r->text, textlen);

	/* The first line is the server's domain and greeting, not a keyword. */
	if ((nl = memchr(r->text, '\n', textlen)) == NULL)
		return;
	for (start = (size_t)(nl - r->text) + 1; start <= textlen; start += tl + 1) {
		t = r->text + start;
		nl = memchr(t, '\n', textlen - start);
		tl = nl != NULL ? (size_t)(nl - t) : textlen - start;

		for (kw = 0; kw < tl && t[kw] != ' '; kw++)
			;
		args = t + kw;
		alen = tl - kw;

		/* Old clients' "AUTH=PLAIN LOGIN" (Postfix broken_sasl_auth_clients). */
		if (kw > 5 && smtp_reply_keyword_eq(t, 5, "AUTH=")) {
			caps->flags |= SMTP_EHLO_AUTH;
			if (caps->auth[0] == '\0')
				smtp_reply_copy_list(caps->auth, sizeof(caps->auth),
				    t + 5, tl - 5);
			continue;
		}
		for (i = 0; i < sizeof(smtp_reply_ehlo_table) /
		    sizeof(smtp_reply_ehlo_table[0]); i++)
			if (smtp_reply_keyword_eq(t, kw, smtp_reply_ehlo_table[i].name))
				break;
		if (i == sizeof(smtp_reply_ehlo_table) / sizeof(smtp_reply_ehlo_table[0]))
			continue;	/* unknown keyword: not ours to pass on */
		caps->flags |= smtp_reply_ehlo_table[i].flag;
		switch (smtp_reply_ehlo_table[i].flag) {
		case SMTP_EHLO_SIZE:
			caps->size = smtp_reply_size_arg(args, alen);
			break;
		case SMTP_EHLO_AUTH:
			smtp_reply_copy_list(caps->auth, sizeof(caps->auth), args, alen);
			break;
		case SMTP_EHLO_XCLIENT:
			smtp_reply_copy_list(caps->xclient, sizeof(caps->xclient), args, alen);
			break;
		case SMTP_EHLO_XFORWARD:
			smtp_reply_copy_list(caps->xforward, sizeof(caps->xforward), args, alen);
			break;
		default:
			break;
		}
		if (nl == NULL)
			break;
	}
}
