/*
 * spf.c - fuzz the SPF record canonicaliser and DNS answer reader
 * (filters/spf_record.c, spf_dns.c, spf.c, included whole to reach their
 * static parsers)
 *
 * The first octet picks the target; the rest is
 *   0: a TXT record as a domain's owner publishes it: spf_record_canon()
 *      either refuses it with a reason or writes a record for libspf2
 *      that starts "v=spf1", fits its buffer and has no line end;
 *   1: a DNS answer packet for "example.com" (TXT, A, AAAA, MX or PTR by
 *      the second octet): spf_dns_answer() stores a bounded result;
 *   2: a name from a record or macro expansion: spf_record_query_name().
 */
#include "../../filters/spf_record.c"
#include "../../filters/spf_dns.c"
#include "../../filters/spf.c"

#include "fuzz.h"

static const char nonce[] = "0123456789abcdef";

static void
fuzz_canon(const char *rec, size_t len, int family)
{
	static char out[SPF_CANON_MAX];
	const char *why;
	int r;

	r = spf_record_canon(rec, len, family, nonce, out, sizeof out, &why);
	if (r == -1) {
		FUZZ_CHECK(why != NULL && *why != '\0');
		return;
	}
	FUZZ_CHECK(r == 0 && why == NULL);
	FUZZ_CHECK(strlen(out) < sizeof out && strncmp(out, "v=spf1", 6) == 0);
	FUZZ_CHECK(strpbrk(out, "\r\n") == NULL);
}

static void
fuzz_answer(const uint8_t *pkt, size_t len, int type)
{
	static const int types[] = { ns_t_txt, ns_t_a, ns_t_aaaa, ns_t_mx, ns_t_ptr };
	struct spf_msg *m;
	struct spf_entry *e;
	size_t i;

	if ((m = calloc(1, sizeof *m)) == NULL)
		abort();
	m->family = type & 0x80 ? AF_INET6 : AF_INET;
	memcpy(m->nonce, nonce, sizeof nonce);
	m->zone_tail = &m->zone;
	if ((e = spf_dns_entry_want(m, "example.com", types[(type & 0x7f) % 5])) == NULL)
		abort();
	spf_dns_answer(e, (type & 0x40) ? 3 : 0, pkt, len);
	FUZZ_CHECK(e->state == SPF_ST_DONE);
	FUZZ_CHECK(e->herrno == NETDB_SUCCESS || e->herrno == HOST_NOT_FOUND ||
	    e->herrno == NO_DATA || e->herrno == TRY_AGAIN);
	FUZZ_CHECK(e->n <= SPF_ADDRS_MAX);
	if (e->names != NULL)
		for (i = 0; i < e->n; i++)
			FUZZ_CHECK(e->names[i] != NULL &&
			    strlen(e->names[i]) < NS_MAXDNAME);
	if (e->spf != NULL)
		FUZZ_CHECK(e->nspf == 1 && strncmp(e->spf, "v=spf1", 6) == 0);
	FUZZ_CHECK(strlen(e->why) < sizeof e->why);
	spf_msg_free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char raw[SPF_RECORD_MAX + 2], out[SPF_NAME_BUF];
	size_t n;

	if (size < 2)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_canon((const char *)data + 2, size - 2,
		    data[1] & 1 ? AF_INET6 : AF_INET);
		break;
	case 1:
		fuzz_answer(data + 2, size - 2, data[1]);
		break;
	case 2:
		n = size - 1 < sizeof raw - 1 ? size - 1 : sizeof raw - 1;
		memcpy(raw, data + 1, n);
		raw[n] = '\0';
		if (spf_record_query_name(raw, out, sizeof out) == 0)
			FUZZ_CHECK(strlen(out) <= 4 * SPF_DOMAIN_MAX);
		break;
	}
	return 0;
}
