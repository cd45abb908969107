/*
 * xtext.h - RFC 3461 section 4 xtext, used for XCLIENT/XFORWARD attribute
 * values (Postfix XCLIENT_README) and DSN ENVID/ORCPT.
 *
 * xtext_encode(): every char outside "!".."~", and '+' and '=', becomes
 * "+XX" (uppercase hex).  Returns the encoded length (excluding NUL), or
 * (size_t)-1 when outlen is too small; out is always NUL-terminated when
 * outlen > 0.
 * xtext_valid(): 1 if s is well-formed xtext ("+" followed by two
 * uppercase hex digits, other chars in "!".."~" except '=').
 * xtext_decode(): inverse; returns decoded length or (size_t)-1 on bad
 * input or short buffer.
 */
#ifndef FRONTMX_XTEXT_H
#define FRONTMX_XTEXT_H

#include <stddef.h>

size_t	xtext_encode(const char *in, char *out, size_t outlen);
int	xtext_valid(const char *s);
size_t	xtext_decode(const char *in, char *out, size_t outlen);

#endif
