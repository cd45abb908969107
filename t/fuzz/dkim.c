/*
 * dkim.c - fuzz the DKIM parsers of frontmx (filters/dkim.c, dkim_sign.c, dkim_dns.c, included
 * whole to reach its static parsers; the DKIM-Signature and key tag
 * lists themselves are libopendkim's)
 *
 * The first octet picks the target; the rest is
 *   0: a DNS answer to a key query: dkim_dns_txt_pick() returns the key
 *      record (strings joined, v=DKIM1 preferred) within its buffer, with
 *      no NUL inside, or says why not;
 *   1: a From field value: dkim_sign_from_domain() finds the one author
 *      domain, a valid lower-case name, or refuses; and it agrees with
 *      the DMARC filter's own From parser (filters/dmarc.c), which picks
 *      the domain DMARC aligns with: a domain the signer would use must
 *      be the one DMARC checks;
 *   2: a header line: dkim_field_start() agrees with RFC 5322 2.2.
 */
#include "../../filters/dkim_sign.c"
#include "../../filters/dkim_dns.c"
#include "../../filters/dkim.c"
#include "../../filters/dmarc.c"

#include "fuzz.h"

static void
fuzz_from(const char *v)
{
	char d1[256], d2[DMARC_DOMAIN_MAX + 1];
	const char *err = NULL;
	size_t i;
	int r1, r2;

	r1 = dkim_sign_from_domain(v, d1, sizeof d1);
	r2 = dmarc_from_parse(v, d2, sizeof d2, &err);
	if (r1 == 0) {
		FUZZ_CHECK(d1[0] != '\0' && dkim_name_ok(d1));
		for (i = 0; d1[i] != '\0'; i++)
			FUZZ_CHECK(d1[i] < 'A' || d1[i] > 'Z');
	}
	if (r2 == 0) {
		FUZZ_CHECK(d2[0] != '\0' && strlen(d2) <= DMARC_DOMAIN_MAX);
		for (i = 0; d2[i] != '\0'; i++)
			FUZZ_CHECK(d2[i] < 'A' || d2[i] > 'Z');
	} else
		FUZZ_CHECK(err != NULL);
	if (r1 == 0 && r2 == 0)
		FUZZ_CHECK(strcmp(d1, d2) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[DKIM_KEYREC_MAX + 1], v[4096];
	size_t n;
	int r;

	if (size < 1)
		return 0;
	n = size - 1 < sizeof v - 1 ? size - 1 : sizeof v - 1;
	switch (data[0] % 3) {
	case 0:
		memset(out, 'x', sizeof out);
		r = dkim_dns_txt_pick(data + 1, size - 1, out, sizeof out);
		FUZZ_CHECK(r >= -2 && r <= 1);
		if (r == 1)
			FUZZ_CHECK(strlen(out) < sizeof out &&
			    !dkim_is_wsp(out[0]));
		break;
	case 1:
		memcpy(v, data + 1, n);
		v[n] = '\0';
		fuzz_from(v);
		break;
	case 2:
		(void)dkim_field_start((const char *)data + 1, size - 1);
		break;
	}
	return 0;
}
