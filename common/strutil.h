/*
 * strutil.h - the one copy of the small string helpers every layer uses
 *
 * ASCII case folding and comparison (never the locale: a daemon that
 * setlocale()s must not change what it accepts), the one boolean spelling
 * set, bounded decimal numbers, MIME tokens, FNV-1a hashing for the
 * open-addressing tables, and the "key=value" split of a filter option.
 * Pure functions, no allocation, safe from any thread.
 */
#ifndef FRONTMX_STRUTIL_H
#define FRONTMX_STRUTIL_H

#include <stddef.h>
#include <stdint.h>

/* 'A'..'Z' to 'a'..'z'; every other value (EOF, bytes >= 0x80) unchanged. */
int		str_ascii_lower(int c);
/* Lower-case s in place, ASCII letters only. */
void		str_lower(char *s);
/*
 * strcasecmp(3) and strncasecmp(3) that fold ASCII letters only, whatever
 * the locale: <0, 0 or >0 as the folded bytes (unsigned) compare.
 */
int		str_casecmp(const char *a, const char *b);
int		str_ncasecmp(const char *a, const char *b, size_t n);
/* RFC 2045 5.1 token: US-ASCII but SPACE, CTLs and ()<>@,;:\"/[]?= */
int		str_mime_tokenc(int c);
/* 1 if s is 1..max token characters, else 0. */
int		str_mime_token(const char *s, size_t max);
/*
 * A boolean option value: yes/no, true/false, on/off, 1/0, letters in any
 * case (the one spelling set, README: filters[].options).  *out = 1 or 0; returns
 * 0, or -1 (out untouched) for anything else, NULL and "" included.
 */
int		str_bool(const char *v, int *out);
/*
 * An unsigned decimal: digits only (no sign, no blank, no "0x", no
 * trailing junk), at least one, value <= max.  0 ok, -1 (out untouched).
 */
int		str_uint(const char *v, unsigned long long max,
		    unsigned long long *out);
/* FNV-1a 64 of the bytes of s up to its NUL; of n bytes at p. */
uint64_t	str_hash(const char *s);
uint64_t	str_hash_mem(const void *p, size_t n);
/*
 * Split one filter option "key=value" at its first '='.  Blanks (space,
 * tab) around the key and before the value are dropped.  The key is
 * copied into key[keylen] (NUL-terminated), *value points into opt.
 * -1 when there is no '=', the key is empty or does not fit.
 */
int		str_option_split(const char *opt, char *key, size_t keylen,
		    const char **value);

#endif
