/*
 * smtp_parse.c - fuzz the SMTP command-line parser (proxy/smtp_parse.c)
 *
 * The input is one client command line as the framer hands it over: cut
 * at the first CR, LF or NUL and at SMTP_CMD_LINE_MAX - 2 octets.  Every
 * entry point sees it; for MAIL and RCPT the properties are that an
 * accepted path is within the RFC 5321 limits and carries nothing the
 * proxy could not re-serialise safely, that SMTPUTF8 mode accepts a
 * superset with the same result, and that re-serialising the result and
 * parsing it again gives the same result (what the upstream sees is what
 * we checked).
 */
#include <string.h>

#include "fuzz.h"
#include "smtp_parse.h"

static void
check_path(const struct smtp_path *p, int utf8)
{
	size_t i, j;

	FUZZ_CHECK(strlen(p->local) <= SMTP_LOCAL_MAX);
	FUZZ_CHECK(strlen(p->domain) <= SMTP_DOMAIN_MAX);
	FUZZ_CHECK(strlen(p->mailbox) <= SMTP_PATH_MAX - 2);
	FUZZ_CHECK(p->nparams <= SMTP_PARAMS_MAX);
	for (i = 0; p->mailbox[i] != '\0'; i++) {
		/* SP, '<' or '>' only inside a quoted local part */
		FUZZ_CHECK((unsigned char)p->mailbox[i] >= ' ' &&
		    p->mailbox[i] != 0x7f);
		FUZZ_CHECK((p->mailbox[i] != ' ' && p->mailbox[i] != '<' &&
		    p->mailbox[i] != '>') || p->local[0] == '"');
		FUZZ_CHECK(utf8 || (unsigned char)p->mailbox[i] < 0x80);
	}
	for (i = 0; p->domain[i] != '\0'; i++)
		FUZZ_CHECK(p->domain[i] < 'A' || p->domain[i] > 'Z');
	for (i = 0; i < p->nparams; i++) {
		const struct smtp_param *pa = &p->params[i];

		FUZZ_CHECK(pa->key[0] != '\0');
		FUZZ_CHECK(strlen(pa->key) <= SMTP_PARAM_KEY_MAX);
		for (j = 0; pa->key[j] != '\0'; j++)
			FUZZ_CHECK((pa->key[j] >= 'A' && pa->key[j] <= 'Z') ||
			    (pa->key[j] >= '0' && pa->key[j] <= '9') ||
			    pa->key[j] == '-');
		FUZZ_CHECK(pa->has_value || pa->value[0] == '\0');
		FUZZ_CHECK(!pa->has_value || pa->value[0] != '\0');
		FUZZ_CHECK(strlen(pa->value) <= SMTP_PARAM_VALUE_MAX);
		for (j = 0; pa->value[j] != '\0'; j++)
			FUZZ_CHECK(pa->value[j] >= 33 && pa->value[j] <= 126 &&
			    pa->value[j] != '=');
	}
}

/* The command the proxy would write upstream from p, parsed again. */
static void
check_roundtrip(const struct smtp_path *p, enum smtp_cmd cmd, int utf8)
{
	static char line[4096];
	static struct smtp_path again;
	size_t i, n;
	enum smtp_parse_err e;

	n = (size_t)snprintf(line, sizeof line, "%s<%s>",
	    cmd == SMTP_CMD_MAIL ? "FROM:" : "TO:", p->mailbox);
	for (i = 0; i < p->nparams && n < sizeof line; i++)
		n += (size_t)snprintf(line + n, sizeof line - n, " %s%s%s",
		    p->params[i].key, p->params[i].has_value ? "=" : "",
		    p->params[i].value);
	FUZZ_CHECK(n < sizeof line);
	e = utf8 ? smtp_parse_path_utf8(line, cmd, &again) :
	    smtp_parse_path(line, cmd, &again);
	FUZZ_CHECK(e == SMTP_PARSE_OK);
	FUZZ_CHECK(strcmp(again.mailbox, p->mailbox) == 0);
	FUZZ_CHECK(strcmp(again.local, p->local) == 0);
	FUZZ_CHECK(strcmp(again.domain, p->domain) == 0);
	FUZZ_CHECK(again.nparams == p->nparams);
	for (i = 0; i < p->nparams; i++) {
		FUZZ_CHECK(strcmp(again.params[i].key, p->params[i].key) == 0);
		FUZZ_CHECK(strcmp(again.params[i].value, p->params[i].value) == 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_path p, u;
	char line[SMTP_CMD_LINE_MAX];
	const char *args;
	enum smtp_parse_err e, eu;
	enum smtp_cmd cmd, as;
	size_t n;

	for (n = 0; n < size && n < sizeof line - 2; n++)
		if (data[n] == '\r' || data[n] == '\n' || data[n] == '\0')
			break;
	memcpy(line, data, n);
	line[n] = '\0';

	cmd = smtp_parse_verb(line, &args);
	FUZZ_CHECK(cmd >= SMTP_CMD_UNKNOWN && cmd < SMTP_CMD_COUNT);
	FUZZ_CHECK(args >= line && args <= line + n);
	FUZZ_CHECK(smtp_cmd_name(cmd) != NULL);

	/* Both path grammars, whatever the verb was. */
	for (as = SMTP_CMD_MAIL; as <= SMTP_CMD_RCPT; as++) {
		e = smtp_parse_path(args, as, &p);
		eu = smtp_parse_path_utf8(args, as, &u);
		FUZZ_CHECK(e < SMTP_PARSE_ERR_COUNT && eu < SMTP_PARSE_ERR_COUNT);
		FUZZ_CHECK(smtp_parse_strerror(e) != NULL);
		if (e == SMTP_PARSE_OK) {
			check_path(&p, 0);
			FUZZ_CHECK(eu == SMTP_PARSE_OK);
			FUZZ_CHECK(memcmp(&p, &u, sizeof p) == 0);
			check_roundtrip(&p, as, 0);
		} else
			FUZZ_CHECK(p.mailbox[0] == '\0' && p.nparams == 0);
		if (eu == SMTP_PARSE_OK) {
			check_path(&u, 1);
			FUZZ_CHECK(smtp_parse_utf8_valid((const unsigned char *)
			    u.mailbox, strlen(u.mailbox)));
			check_roundtrip(&u, as, 1);
		}
	}
	if (smtp_parse_domain(args) == 0) {
		FUZZ_CHECK(strlen(args) <= SMTP_DOMAIN_MAX);
		FUZZ_CHECK(smtp_parse_helo(args) == 0);
	} else
		(void)smtp_parse_helo(args);
	(void)smtp_parse_utf8_valid(data, size);
	return 0;
}
