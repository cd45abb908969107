/*
 * content.c - fuzz the content rule file parser (filters/content_rules.c,
 * included whole to see the compiled rules)
 *
 * The input is a rule file.  content_rules_load() either refuses it with
 * one "PATH:LINE: message" (or "PATH: message") line and leaks nothing,
 * or loads no more rules than the file has lines, each REJECT or
 * TEMPFAIL rule with a reply the core will accept: "550 5.x.x text" or
 * "451 4.x.x text", printable ASCII only, so no rule can put a line end
 * or an 8-bit octet in front of a client.
 */
#define FUZZ_FILE
#include "../../filters/content_rules.c"

#include "fuzz.h"

static void
check_reply(const struct content_rule *r)
{
	const char *p;

	FUZZ_CHECK(r->reply != NULL);
	if (r->action == CONTENT_ACTION_REJECT)
		FUZZ_CHECK(strncmp(r->reply, "550 5.", 6) == 0);
	else
		FUZZ_CHECK(strncmp(r->reply, "451 4.", 6) == 0);
	for (p = r->reply; *p != '\0'; p++)
		FUZZ_CHECK(*p >= ' ' && *p <= '~');
	FUZZ_CHECK(strlen(r->reply) <= 512 - 2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct content_rules *rules = NULL;
	char err[CONTENT_ERR_MAX];
	const char *path = fuzz_file(data, size);
	size_t i, lines = 1;

	for (i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (content_rules_load(path, &rules, err, sizeof err) == -1) {
		FUZZ_CHECK(rules == NULL);
		FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0 &&
		    err[strlen(path)] == ':');
		FUZZ_CHECK(strpbrk(err, "\r\n") == NULL);
		return 0;
	}
	FUZZ_CHECK(rules != NULL && content_rules_count(rules) <= lines);
	for (i = 0; i < rules->n; i++) {
		FUZZ_CHECK(rules->v[i].re != NULL);
		FUZZ_CHECK(rules->v[i].line >= 1 && rules->v[i].line <= lines);
		if (rules->v[i].action == CONTENT_ACTION_REJECT ||
		    rules->v[i].action == CONTENT_ACTION_TEMPFAIL)
			check_reply(&rules->v[i]);
	}
	content_rules_free(rules);
	return 0;
}
