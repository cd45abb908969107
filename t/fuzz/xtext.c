/*
 * xtext.c - fuzz RFC 3461 xtext (proxy/xtext.c)
 *
 * Properties: encode always yields valid, 7-bit printable xtext that
 * decodes back to the input; decode accepts exactly what xtext_valid()
 * accepts (minus "+00", which would hide a NUL); every output is
 * NUL-terminated within its buffer, and a short buffer fails cleanly.
 */
#include <string.h>

#include "fuzz.h"
#include "xtext.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char in[1024], enc[3 * sizeof in + 1], dec[sizeof in + 1];
	size_t n, e, d, small, i;

	/* The first byte picks a short buffer size for the "too small" paths. */
	if (size == 0)
		return 0;
	small = data[0];
	data++;
	size--;
	n = size < sizeof in - 1 ? size : sizeof in - 1;
	memcpy(in, data, n);
	in[n] = '\0';
	n = strlen(in);		/* the API takes C strings */

	e = xtext_encode(in, enc, sizeof enc);
	FUZZ_CHECK(e != (size_t)-1 && e == strlen(enc) && e <= 3 * n);
	FUZZ_CHECK(xtext_valid(enc));
	for (i = 0; i < e; i++)
		FUZZ_CHECK(enc[i] >= '!' && enc[i] <= '~' && enc[i] != '=');
	d = xtext_decode(enc, dec, sizeof dec);
	FUZZ_CHECK(d == n && memcmp(dec, in, n + 1) == 0);

	/* Short buffers: fail whole, leave "". */
	if (small < e + 1) {
		FUZZ_CHECK(xtext_encode(in, enc, small) == (size_t)-1);
		FUZZ_CHECK(small == 0 || enc[0] == '\0');
	}

	/* The input itself as xtext. */
	d = xtext_decode(in, dec, sizeof dec);
	if (d != (size_t)-1) {
		FUZZ_CHECK(xtext_valid(in));
		FUZZ_CHECK(d == strlen(dec) && d <= n);
		e = xtext_encode(dec, enc, sizeof enc);
		FUZZ_CHECK(e != (size_t)-1 && xtext_decode(enc, dec, sizeof dec) == d);
	} else {
		FUZZ_CHECK(dec[0] == '\0');
		FUZZ_CHECK(!xtext_valid(in) || strstr(in, "+00") != NULL);
	}
	d = xtext_decode(in, dec, small);
	FUZZ_CHECK(d == (size_t)-1 || (d < small && d == strlen(dec)));
	return 0;
}
