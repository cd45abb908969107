/*
 * xtext.c - RFC 3461 section 4 xtext encoding and decoding
 *
 * NAME
 *	xtext_encode, xtext_valid, xtext_decode
 *
 * DESCRIPTION
 *	xtext = *( xchar / hexchar ), xchar = "!".."~" except '+' and '=',
 *	hexchar = "+" 2(upper-case HEXDIG).  We use it for XCLIENT and
 *	XFORWARD attribute values (Postfix XCLIENT_README): without it a
 *	client could send "EHLO x ADDR=127.0.0.1" and inject an attribute
 *	(SECURITY.md section 7), because SP and '=' would pass through.
 *
 *	xtext_encode() encodes every byte outside "!".."~", and '+' and '=',
 *	including bytes >= 0x80, so the output is always 7-bit printable.
 *
 *	xtext_decode() produces a C string, so it refuses "+00": a NUL in
 *	the middle would make the decoded length and strlen() disagree, the
 *	classic way two components end up seeing different values.  Any
 *	other byte, CR and LF included, is decoded; callers putting the
 *	result in a line-based context must check it (Exim CVE-2020-28026).
 *
 *	On failure both encode and decode leave out as "" (when outlen > 0),
 *	never a partial result.
 */
#include "xtext.h"

static const char xtext_hex[] = "0123456789ABCDEF";

/* RFC 3461: "two upper case hexadecimal digits"; lower case is invalid. */
static int
xtext_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int
xtext_is_xchar(int c)
{
	return c >= '!' && c <= '~' && c != '+' && c != '=';
}

size_t
xtext_encode(const char *in, char *out, size_t outlen)
{
	size_t pos = 0;
	int c;

	if (out == NULL || outlen == 0)
		return (size_t)-1;
	if (in == NULL)
		goto short_buf;
	for (; *in != '\0'; in++) {
		c = (unsigned char)*in;
		if (xtext_is_xchar(c)) {
			if (outlen - pos < 2)		/* char + NUL */
				goto short_buf;
			out[pos++] = (char)c;
		} else {
			if (outlen - pos < 4)		/* "+XX" + NUL */
				goto short_buf;
			out[pos++] = '+';
			out[pos++] = xtext_hex[c >> 4];
			out[pos++] = xtext_hex[c & 0x0f];
		}
	}
	out[pos] = '\0';
	return pos;

short_buf:				/* or no input */
	out[0] = '\0';
	return (size_t)-1;
}

int
xtext_valid(const char *s)
{
	if (s == NULL)
		return 0;
	for (; *s != '\0'; s++) {
		if (*s == '+') {
			if (xtext_hexval((unsigned char)s[1]) < 0 ||
			    xtext_hexval((unsigned char)s[2]) < 0)
				return 0;	/* also catches "+" and "+A" at the end */
			s += 2;
		} else if (!xtext_is_xchar((unsigned char)*s))
			return 0;
	}
	return 1;
}

size_t
xtext_decode(const char *in, char *out, size_t outlen)
{
	size_t pos = 0;
	int hi, lo, c;

	if (out == NULL || outlen == 0)
		return (size_t)-1;
	if (in == NULL)
		goto fail;
	for (; *in != '\0'; in++) {
		c = (unsigned char)*in;
		if (c == '+') {
			/* in[1] is checked before in[2] is read: no over-read. */
			if ((hi = xtext_hexval((unsigned char)in[1])) < 0 ||
			    (lo = xtext_hexval((unsigned char)in[2])) < 0)
				goto fail;
			c = hi << 4 | lo;
			if (c == 0)
				goto fail;
			in += 2;
		} else if (!xtext_is_xchar(c))
			goto fail;
		if (outlen - pos < 2)			/* byte + NUL */
			goto fail;
		out[pos++] = (char)c;
	}
	out[pos] = '\0';
	return pos;

fail:
	out[0] = '\0';
	return (size_t)-1;
}
