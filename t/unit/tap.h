/*
 * tap.h - minimal TAP producer for the C unit tests (run by prove).
 * ok(cond, fmt, ...) prints "ok N - name" / "not ok N - name";
 * done_testing() prints the plan and returns the exit status.
 */
#ifndef FRONTMX_TAP_H
#define FRONTMX_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed;

__attribute__((format(printf, 2, 3)))
static inline int
ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return cond;
}

static inline int
done_testing(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif
