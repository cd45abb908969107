/*
 * test_linebuf.c - unit tests for common/linebuf.c, the growing line
 * buffer of the content and DKIM filters
 */
#include <stdio.h>
#include <string.h>

#include "linebuf.h"
#include "tap.h"

int
main(void)
{
	struct linebuf b = { 0 };

	plan(10);
	ok(linebuf_reserve(&b, 0, 16, 100) == 0 && b.p != NULL && b.cap == 16,
	    "want 0: the start size is allocated (%zu)", b.cap);
	memcpy(b.p, "0123456789abcdef", 16);
	ok(linebuf_reserve(&b, 16, 16, 100) == 0 && b.cap == 16,
	    "what fits: nothing changes");
	ok(linebuf_reserve(&b, 17, 16, 100) == 0 && b.cap == 32 &&
	    memcmp(b.p, "0123456789abcdef", 16) == 0,
	    "one more: doubled, contents kept");
	ok(linebuf_reserve(&b, 65, 16, 100) == 0 && b.cap == 100,
	    "past the last doubling: the maximum (%zu)", b.cap);
	ok(linebuf_reserve(&b, 100, 16, 100) == 0 && b.cap == 100,
	    "the maximum itself fits");
	ok(linebuf_reserve(&b, 101, 16, 100) == -1 && b.cap == 100 && b.p != NULL,
	    "over the maximum: -1, the buffer as it was");
	linebuf_free(&b);
	ok(b.p == NULL && b.cap == 0, "free: back to empty");
	linebuf_free(&b);
	ok(b.p == NULL, "free twice: harmless");

	ok(linebuf_reserve(&b, 5000, 4096, 1048578) == 0 && b.cap == 8192,
	    "first want over start: doubled from start (%zu)", b.cap);
	linebuf_free(&b);
	ok(linebuf_reserve(&b, 3, 0, 10) == 0 && b.cap >= 3 && b.cap <= 10,
	    "start 0: still grows (%zu)", b.cap);
	linebuf_free(&b);
	return done_testing();
}
