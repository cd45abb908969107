/*
 * strutil.c - ASCII case, booleans, numbers, hashing, option split
 *
 * The one copy of helpers that proxy/, filters/ and policy/ each used to
 * carry in their own (and disagreeing) variants.  Nothing here looks at
 * the locale: tolower(3) and strcasecmp(3) follow LC_CTYPE, and what the
 * daemon accepts must not depend on the environment it was started in.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "strutil.h"

#define STR_FNV_OFFSET	14695981039346656037ULL
#define STR_FNV_PRIME	1099511628211ULL

int
str_ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

void
str_lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)str_ascii_lower((unsigned char)*s);
}

int
str_ncasecmp(const char *a, const char *b, size_t n)
{
	int	ca, cb;

	for (; n > 0; a++, b++, n--) {
		ca = str_ascii_lower((unsigned char)*a);
		cb = str_ascii_lower((unsigned char)*b);
		if (ca != cb || ca == '\0')
			return ca - cb;
	}
	return 0;
}

int
str_casecmp(const char *a, const char *b)
{
	return str_ncasecmp(a, b, SIZE_MAX);
}

int
str_mime_tokenc(int c)
{
	return c > ' ' && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

int
str_mime_token(const char *s, size_t max)
{
	size_t	i;

	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || !str_mime_tokenc((unsigned char)s[i]))
			return 0;
	return i > 0;
}

int
str_bool(const char *v, int *out)
{
	/* The one spelling set (README "Options"); index parity is the value. */
	static const char *const words[] = {
		"no", "yes", "false", "true", "off", "on", "0", "1",
	};
	size_t	i;

	if (v == NULL)
		return -1;
	for (i = 0; i < sizeof words / sizeof words[0]; i++)
		if (str_casecmp(v, words[i]) == 0) {
			*out = (int)(i & 1);
			return 0;
		}
	return -1;
}

int
str_uint(const char *v, unsigned long long max, unsigned long long *out)
{
	unsigned long long	n = 0;
	unsigned		d;

	if (v == NULL || *v == '\0')
		return -1;
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9')
			return -1;
		d = (unsigned)(*v - '0');
		/* n * 10 + d > max, asked without overflowing. */
		if (d > max || n > (max - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*out = n;
	return 0;
}

uint64_t
str_hash_mem(const void *p, size_t n)
{
	const unsigned char	*b = p;
	uint64_t		 h = STR_FNV_OFFSET;

	while (n-- > 0) {
		h ^= *b++;
		h *= STR_FNV_PRIME;
	}
	return h;
}

uint64_t
str_hash(const char *s)
{
	return str_hash_mem(s, strlen(s));
}

static int
str_is_blank(int c)
{
	return c == ' ' || c == '\t';
}

int
str_option_split(const char *opt, char *key, size_t keylen,
    const char **value)
{
	const char	*eq, *k = opt, *ke;

	if (opt == NULL || (eq = strchr(opt, '=')) == NULL)
		return -1;
	while (k < eq && str_is_blank((unsigned char)*k))
		k++;
	for (ke = eq; ke > k && str_is_blank((unsigned char)ke[-1]); ke--)
		;
	if (ke == k || (size_t)(ke - k) >= keylen)
		return -1;
	memcpy(key, k, (size_t)(ke - k));
	key[ke - k] = '\0';
	for (eq++; str_is_blank((unsigned char)*eq); eq++)
		;
	*value = eq;
	return 0;
}
