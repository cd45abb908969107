/*
 * dmarc.c - fuzz the DMARC record and DNS answer parsers
 * (filters/dmarc.c, included whole to reach its static parsers)
 *
 * The first octet picks the target; the rest is
 *   0: a TXT record published at _dmarc.<domain>: dmarc_record_parse()
 *      says "not DMARC" or fills a record whose fields are in range; a
 *      record is DMARC exactly when its first tag is v=DMARC1;
 *   1: the DNS answer holding such records: dmarc_dns_scan() counts them
 *      or says the packet is malformed;
 *   2: a domain from a header or an SPF/DKIM result: dmarc_domain_norm()
 *      gives a lower-case LDH name within the limits, and alignment
 *      against the built-in public suffix list does not depend on case.
 */
#include "../../filters/dmarc.c"

#include "fuzz.h"

static void
check_record(const struct dmarc_record *r)
{
	FUZZ_CHECK(r->p <= DMARC_P_REJECT && r->sp <= DMARC_P_REJECT);
	FUZZ_CHECK(r->pct <= 100);
	FUZZ_CHECK(r->adkim_strict == 0 || r->adkim_strict == 1);
	FUZZ_CHECK(r->aspf_strict == 0 || r->aspf_strict == 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dmarc_inst di;
	struct dmarc_record rec;
	char out[DMARC_DOMAIN_MAX + 1], up[DMARC_DOMAIN_MAX + 1];
	const char *err = NULL, *t;
	size_t i, n;
	int r;

	if (di.psl == NULL && (di.psl = psl_builtin()) == NULL)
		abort();
	if (size < 1)
		return 0;
	t = (const char *)data + 1;
	n = size - 1;
	switch (data[0] % 3) {
	case 0:
		r = dmarc_record_parse(t, n, &rec);
		FUZZ_CHECK(r == 0 || r == 1);
		if (r == 1) {
			check_record(&rec);
			for (i = 0; i < n && dmarc_wsp((unsigned char)t[i]); i++)
				;
			FUZZ_CHECK(i < n && (t[i] == 'v' || t[i] == 'V'));
		}
		break;
	case 1:
		memset(&rec, 0, sizeof rec);
		r = dmarc_dns_scan(data + 1, n, &rec);
		FUZZ_CHECK(r >= -1);
		if (r > 0)
			check_record(&rec);
		break;
	case 2:
		if (dmarc_domain_norm(t, n, out, &err) == -1) {
			FUZZ_CHECK(err != NULL);
			break;
		}
		FUZZ_CHECK(strlen(out) <= DMARC_DOMAIN_MAX && out[0] != '\0');
		for (i = 0; out[i] != '\0'; i++) {
			FUZZ_CHECK(out[i] < 'A' || out[i] > 'Z');
			up[i] = (char)toupper((unsigned char)out[i]);
		}
		up[i] = '\0';
		FUZZ_CHECK(dmarc_aligned(&di, up, i, out, 1) == 1);
		FUZZ_CHECK(dmarc_aligned(&di, up, i, out, 0) == 1);
		break;
	}
	return 0;
}
