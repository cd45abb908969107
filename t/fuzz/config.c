/*
 * config.c - fuzz the configuration loader (policy/config.c over
 * libconfig), from a file held in a memfd
 *
 * config_load() either builds a configuration, which is then released,
 * or refuses the file with one "FILE:LINE: message" line: no crash, no
 * leak, no line end or other control byte quoted from the file into the
 * message that `frontmx -t` prints and the log keeps.  Inputs with an
 * @include are skipped: they would read other files of this machine.
 */
#define FUZZ_FILE
#include <string.h>

#include "config.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CONFIG_ERR_MAX];
	const char *path, *p;
	struct config *c;
	size_t plen;

	if (memmem(data, size, "@include", 8) != NULL)
		return 0;
	path = fuzz_file(data, size);
	plen = strlen(path);
	err[0] = 'x';
	if ((c = config_load(path, err, sizeof err)) != NULL) {
		config_ref(c);
		config_unref(c);
		config_unref(c);
		return 0;
	}
	FUZZ_CHECK(strncmp(err, path, plen) == 0 && err[plen] == ':');
	for (p = err + plen + 1; *p >= '0' && *p <= '9'; p++)
		;
	FUZZ_CHECK(p > err + plen + 1 && p[0] == ':' && p[1] == ' ');
	for (p = err; *p != '\0'; p++)
		FUZZ_CHECK((unsigned char)*p >= ' ' && *p != 0x7f);
	return 0;
}
