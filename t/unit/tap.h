/*
 * tap.h - minimal TAP producer for the C unit tests (run by prove).
 * plan(n) first: prints "1..n", so a case table that is skipped (a helper
 * failed, an early return) shows as a wrong count instead of vanishing.
 * ok(cond, fmt, ...) prints "ok N - name" / "not ok N - name";
 * done_testing() checks the count against the plan and returns the exit
 * status.  Without a plan, done_testing() fails.
 */
#ifndef FRONTMX_TAP_H
#define FRONTMX_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_n, tap_failed, tap_planned = -1;

static inline void
plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
}

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
	if (tap_planned < 0) {
		ok(0, "plan() called before the first test");
		printf("1..%d\n", tap_n);
		return 1;
	}
	if (tap_n != tap_planned) {
		printf("# planned %d tests but ran %d\n", tap_planned, tap_n);
		return 1;
	}
	return tap_failed ? 1 : 0;
}

#endif
