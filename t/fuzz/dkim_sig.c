/*
 * dkim_sig.c - fuzz DKIM-Signature fields and key records as the DKIM
 * filter hands them to libopendkim (filters/dkim.c: dkim_init_lib(),
 * dkim_key_cb()), so the tag lists anyone can put in a message or a
 * DNS zone are parsed with our settings: BADSIGHANDLES, our key
 * callback answering from the "DNS" part of the input.
 *
 * The input is "SIGNATURE\0KEY RECORD\0BODY": one DKIM-Signature field
 * value (folds allowed), the TXT record the key query returns (at most
 * DKIM_KEYREC_MAX octets, as dkim_txt_pick() leaves it), the body.  The
 * header has a From and a Subject.  No crash, no leak, no UB; every
 * signature gets a status.
 */
#include <string.h>

#include <opendkim/dkim.h>

#include "fuzz.h"

#define KEYREC_MAX	1024	/* DKIM_KEYREC_MAX in filters/dkim.c */

static const char *fuzz_key;
static size_t fuzz_keylen;

static DKIM_CBSTAT
key_cb(DKIM *d, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	(void)d;
	(void)sig;
	if (fuzz_key == NULL || fuzz_keylen >= buflen)
		return DKIM_CBSTAT_NOTFOUND;
	memcpy(buf, fuzz_key, fuzz_keylen);
	buf[fuzz_keylen] = '\0';
	return DKIM_CBSTAT_CONTINUE;
}

static DKIM_LIB *
lib_get(void)
{
	static DKIM_LIB *lib;
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES, minbits = 1024;

	if (lib != NULL)
		return lib;
	if ((lib = dkim_init(NULL, NULL)) == NULL)
		abort();
	(void)dkim_dns_set_init(lib, NULL);
	(void)dkim_dns_set_close(lib, NULL);
	if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
	    sizeof flags) != DKIM_STAT_OK ||
	    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits,
	    sizeof minbits) != DKIM_STAT_OK ||
	    dkim_set_key_lookup(lib, key_cb) != DKIM_STAT_OK)
		abort();
	return lib;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char hdr[8192];
	const char *sig = (const char *)data, *key, *body, *end = sig + size;
	DKIM_SIGINFO **sigs;
	DKIM_STAT st;
	DKIM *d;
	size_t siglen, n;
	int nsigs, i;
	_Bool testkey;

	if ((key = memchr(sig, '\0', size)) == NULL)
		return 0;
	siglen = (size_t)(key - sig);
	key++;
	if ((body = memchr(key, '\0', (size_t)(end - key))) == NULL)
		return 0;
	fuzz_key = key;
	fuzz_keylen = (size_t)(body - key);
	body++;
	if (fuzz_keylen > KEYREC_MAX || siglen > sizeof hdr - 32)
		return 0;

	if ((d = dkim_verify(lib_get(), (const u_char *)"fuzz", NULL, &st)) == NULL)
		return 0;
	n = (size_t)snprintf(hdr, sizeof hdr, "DKIM-Signature: %.*s", (int)siglen, sig);
	(void)dkim_header(d, (u_char *)hdr, n);
	(void)dkim_header(d, (u_char *)"From: a@example.com",
	    strlen("From: a@example.com"));
	(void)dkim_header(d, (u_char *)"Subject: x", strlen("Subject: x"));
	st = dkim_eoh(d);
	if (st == DKIM_STAT_OK || st == DKIM_STAT_NOSIG || st == DKIM_STAT_CANTVRFY) {
		(void)dkim_body(d, (u_char *)(uintptr_t)body, (size_t)(end - body));
		(void)dkim_eom(d, &testkey);
	}
	if (dkim_getsiglist(d, &sigs, &nsigs) == DKIM_STAT_OK)
		for (i = 0; i < nsigs; i++)
			(void)dkim_sig_geterror(sigs[i]);
	dkim_free(d);
	fuzz_key = NULL;
	return 0;
}
