/*
 * dnsbl.c - fuzz the DNSBL filter's parsers (filters/dnsbl.c, included
 * whole to reach its static functions)
 *
 * The first octet picks the target; the rest is
 *   0: a DNS reply from a list (network input): dnsbl_parse() fails or
 *      marks only entries of the looked-up domain, and the TTL it keeps
 *      is at most cache_ttl;
 *   1: a zones entry (configuration): dnsbl_zone_parse() refuses it or
 *      gives a valid lower-case domain and a weight in range;
 *   2: a client address: dnsbl_reverse() refuses it or gives a name that
 *      fits with the longest domain.
 */
#include "../../filters/dnsbl.c"

#include "fuzz.h"

static struct dnsbl_inst *
fuzz_inst(void)
{
	static struct dnsbl_inst di;
	static char z0[] = "zen.example.net=127.0.0.[2..11]*2";
	static char z1[] = "zen.example.net=127.0.0.[10;11]*5";
	static char z2[] = "other.example.net";
	char *zones[] = { z0, z1, z2 };

	if (di.nzones == 0) {
		di.cache_ttl = 300;
		if (dnsbl_zones_load(&di, zones, 3) == -1)
			abort();
	}
	return &di;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnsbl_inst *di = fuzz_inst();
	struct dnsbl_answer a;
	struct dnsbl_zone z;
	char text[512], rev[DNSBL_REV_MAX + 1];
	uint32_t ttl;
	size_t i, n;
	int r;

	if (size < 1)
		return 0;
	n = size - 1;
	switch (data[0] % 3) {
	case 0:
		r = dnsbl_parse(di, data[0] / 3 % 2, 0, data + 1, n, &a, &ttl);
		FUZZ_CHECK(r == 0 || r == -1);
		if (r == 0) {
			FUZZ_CHECK(ttl <= di->cache_ttl);
			FUZZ_CHECK((a.match & ~(data[0] / 3 % 2 ? 4u : 3u)) == 0);
		}
		break;
	case 1:
		if (n >= sizeof text)
			n = sizeof text - 1;
		memcpy(text, data + 1, n);
		text[n] = '\0';
		if (dnsbl_zone_parse(text, &z) == NULL) {
			FUZZ_CHECK(z.weight >= -DNSBL_WEIGHT_MAX &&
			    z.weight <= DNSBL_WEIGHT_MAX);
			FUZZ_CHECK(dnsbl_domain_valid(z.domain, strlen(z.domain)));
			for (i = 0; z.domain[i] != '\0'; i++)
				FUZZ_CHECK(!(z.domain[i] >= 'A' && z.domain[i] <= 'Z'));
		}
		break;
	default:
		if (n >= sizeof text)
			n = sizeof text - 1;
		memcpy(text, data + 1, n);
		text[n] = '\0';
		if (dnsbl_reverse(text, rev, sizeof rev) == 0)
			FUZZ_CHECK(strlen(rev) + 1 + DNSBL_DOMAIN_MAX <= DNSBL_QNAME_MAX);
		break;
	}
	return 0;
}
