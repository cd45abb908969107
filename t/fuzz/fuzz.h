/*
 * fuzz.h - helpers shared by the libFuzzer harnesses of t/fuzz
 *
 * FUZZ_CHECK(cond) aborts with the failed condition: libFuzzer reports
 * it as a crash and saves the input, like a sanitizer finding.  The
 * harnesses check properties that must hold for every input, not only
 * that the parser survives it.
 */
#ifndef FRONTMX_FUZZ_H
#define FRONTMX_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: property failed: %s\n",		\
		    __FILE__, __LINE__, #cond);				\
		abort();						\
	}								\
} while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#ifdef FUZZ_FILE
#include <sys/mman.h>
#include <unistd.h>

/*
 * For loaders that take a path: the input as the content of one memfd,
 * reopened through /proc by the loader, so nothing touches the disk.
 */
static const char *
fuzz_file(const uint8_t *data, size_t size)
{
	static char path[64];
	static int fd = -1;

	if (fd == -1) {
		if ((fd = memfd_create("fuzz", MFD_CLOEXEC)) == -1)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) == -1 ||
	    (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	return path;
}
#endif

#endif
