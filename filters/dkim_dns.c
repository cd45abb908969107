/*
 * dkim_dns.c - DKIM key records for the built-in DKIM filter: TXT answer
 * parsing, the per-message key cache, and the libopendkim callbacks that
 * start the queries and answer from the cache
 *
 * NAME
 *	dkim_dns_txt_pick, dkim_dns_prescreen_cb, dkim_dns_key_cb
 *
 * SYNOPSIS
 *	#include "dkim_int.h"
 *
 *	int dkim_dns_txt_pick(const unsigned char *pkt, size_t len,
 *	    char *out, size_t outlen);
 *	DKIM_CBSTAT dkim_dns_prescreen_cb(DKIM *, DKIM_SIGINFO **, int);
 *	DKIM_CBSTAT dkim_dns_key_cb(DKIM *, DKIM_SIGINFO *, u_char *, size_t);
 *
 * DESCRIPTION
 *	The prescreen callback caps the work (RFC 6376 6.1), drops rsa-sha1
 *	without a lookup (RFC 8301 3.1) and starts one TXT query per
 *	distinct <s>._domainkey.<d> through api->dns_query(), all at once.
 *	The key callback answers from this message's cache, or says
 *	DKIM_CBSTAT_TRYAGAIN while a query is outstanding; the last answer
 *	runs dkim_drive_eoh() (dkim.c) again and resumes the message.
 *	libopendkim's own (blocking) resolver is never used.
 *
 *	dkim_dns_txt_pick() takes the key record out of a TXT answer: the
 *	character-strings of one record joined (RFC 6376 3.6.2.2), the
 *	first record starting with v=DKIM1, else the first one; 1 found, 0
 *	none, -1 malformed packet, -2 unusable (over the buffer, NUL inside).
 *
 * LIMITS
 *	Key records up to DKIM_KEYREC_MAX (1024) octets, libopendkim's
 *	buffer; at most max_signatures cache entries per message.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <opendkim/dkim.h>

#include "dkim_int.h"
#include "dnsmsg.h"
#include "strutil.h"

/* ---------------------------------------------------------------- */
/* DNS: TXT answers */

/*
 * The key record in a TXT answer: the character-strings of one record
 * joined (RFC 6376 3.6.2.2), the first record that starts with v=DKIM1,
 * else the first one.  1 found, 0 no TXT record, -1 malformed packet,
 * -2 the record is unusable (over outlen, NUL inside).
 */
static int
dkim_dns_txt_pick(const unsigned char *p, size_t len, char *out, size_t outlen)
{
	struct dnsmsg m;
	struct dnsmsg_rr rr;
	size_t n;
	char rec[DKIM_KEYREC_MAX + 1];
	int found = 0, chosen_bad = 0, more, cut;

	if (outlen == 0 || dnsmsg_open(&m, p, len) == -1)
		return -1;
	while ((more = dnsmsg_next(&m, &rr)) == 1) {
		int bad;
		const char *r;

		if (rr.type != DNSMSG_TXT || rr.class != DNSMSG_IN)
			continue;
		/* Longer than libopendkim's buffer or the caller's: unusable. */
		if ((cut = dnsmsg_txt(&rr, rec, outlen < sizeof rec ? outlen :
		    sizeof rec, &n)) == -1)
			return -1;
		bad = cut || memchr(rec, '\0', n) != NULL;
		for (r = rec; dkim_is_wsp(*r); r++)
			;
		if (!found || (!bad && strncmp(r, "v=DKIM1", 7) == 0 &&
		    strncmp(out, "v=DKIM1", 7) != 0)) {
			if (!bad)
				snprintf(out, outlen, "%s", r);
			else
				out[0] = '\0';
			chosen_bad = bad;
			found = 1;
		}
	}
	if (more == -1)
		return -1;
	if (!found)
		return 0;
	return chosen_bad ? -2 : 1;
}

/* ---------------------------------------------------------------- */
/* Key cache and the libopendkim callbacks */


struct dkim_keyent *
dkim_dns_key_find(struct dkim_msg *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nkeys; i++)
		if (str_casecmp(m->keys[i].name, name) == 0)
			return &m->keys[i];
	return NULL;
}

/* "<s>._domainkey.<d>" for a signature; -1 if s= or d= is no DNS name. */
int
dkim_dns_key_name(DKIM_SIGINFO *sig, char *name, size_t len)
{
	const char *d = (const char *)dkim_sig_getdomain(sig);
	const char *s = (const char *)dkim_sig_getselector(sig);
	int n;

	if (!dkim_name_ok(d) || !dkim_name_ok(s))
		return -1;
	n = snprintf(name, len, "%s._domainkey.%s", s, d);
	return n < 0 || (size_t)n >= len || n > DKIM_NAME_MAX ? -1 : 0;
}

static void
dkim_dns_answer(struct fmx_ctx *ctx, void *arg, int rcode,
    const unsigned char *pkt, size_t len)
{
	struct dkim_keyent *e = arg;
	struct dkim_msg *m = e->m;
	const struct fmx_api *api = m->di->api;
	char rec[DKIM_KEYREC_MAX + 1];
	int r;

	if (rcode == 0 && pkt != NULL && len >= 12)
		rcode = pkt[3] & 0x0f;		/* the packet is the authority */
	rec[0] = '\0';
	if (rcode == 3)
		e->state = DKIM_KEY_NONE;
	else if (rcode != 0 || pkt == NULL)
		e->state = DKIM_KEY_TEMPFAIL;
	else if ((r = dkim_dns_txt_pick(pkt, len, rec, sizeof rec)) == 1) {
		if ((e->txt = strdup(rec)) == NULL)
			e->state = DKIM_KEY_TEMPFAIL;
		else
			e->state = DKIM_KEY_FOUND;
	} else if (r == 0)
		e->state = DKIM_KEY_NONE;
	else if (r == -2)
		e->state = DKIM_KEY_BADREC;
	else
		e->state = DKIM_KEY_TEMPFAIL;
	if (m->outstanding > 0)
		m->outstanding--;
	/* Answered inside dns_query(), inside dkim_eoh(): the caller goes on. */
	if (m->in_eoh || !m->waiting || m->outstanding > 0)
		return;
	m->ctx = ctx;
	if (!m->eoh_done && !dkim_drive_eoh(m)) {
		m->ctx = NULL;
		return;
	}
	m->ctx = NULL;
	m->waiting = 0;
	api->resume(ctx, FMX_CONTINUE);
}

/* The cache entry for a signature's key, starting its query if new. */
static struct dkim_keyent *
dkim_dns_key_get(struct dkim_msg *m, DKIM_SIGINFO *sig)
{
	const struct dkim_inst *di = m->di;
	struct dkim_keyent *e;
	char name[DKIM_NAME_MAX + 1];
	int badname;

	badname = dkim_dns_key_name(sig, name, sizeof name) == -1;
	if (badname)
		snprintf(name, sizeof name, "(invalid)");
	if ((e = dkim_dns_key_find(m, name)) != NULL)
		return e;
	if (m->keys == NULL &&
	    (m->keys = calloc(di->max_sigs, sizeof *m->keys)) == NULL)
		return NULL;
	if (m->nkeys >= di->max_sigs)
		return NULL;
	e = &m->keys[m->nkeys++];
	e->m = m;
	snprintf(e->name, sizeof e->name, "%s", name);
	if (badname) {
		e->state = DKIM_KEY_BADNAME;
		return e;
	}
	if (m->no_fetch || m->ctx == NULL) {
		e->state = DKIM_KEY_TEMPFAIL;	/* not fetched: never guess */
		return e;
	}
	e->state = DKIM_KEY_PENDING;
	m->outstanding++;
	/* The answer may come before dns_query() returns (cache). */
	if (di->api->dns_query(m->ctx, name, 16 /* TXT */, dkim_dns_answer, e) == -1) {
		if (e->state == DKIM_KEY_PENDING) {
			m->outstanding--;
			e->state = DKIM_KEY_TEMPFAIL;
		}
	}
	return e;
}

/*
 * Before any key is fetched: cap the work (RFC 6376 6.1), drop rsa-sha1
 * without a lookup (RFC 8301 3.1), and start every key query at once so
 * the answers arrive together.
 */
DKIM_CBSTAT
dkim_dns_prescreen_cb(DKIM *d, DKIM_SIGINFO **sigs, int nsigs)
{
	struct dkim_msg *m = dkim_get_user_context(d);
	unsigned budget;
	dkim_alg_t alg;
	int i;

	if (m == NULL)
		return DKIM_CBSTAT_ERROR;
	budget = m->di->max_sigs;
	for (i = 0; i < nsigs; i++) {
		if (dkim_sig_geterror(sigs[i]) != DKIM_SIGERROR_UNKNOWN)
			continue;	/* broken already: reported, costs nothing */
		if (dkim_sig_getsignalg(sigs[i], &alg) == DKIM_STAT_OK &&
		    alg == DKIM_SIGN_RSASHA1) {
			dkim_sig_ignore(sigs[i]);
			continue;
		}
		if (budget == 0) {
			dkim_sig_ignore(sigs[i]);
			continue;
		}
		budget--;
		if (dkim_sig_gettagvalue(sigs[i], 0, (u_char *)"l") != NULL)
			m->need_blen = 1;
		(void)dkim_dns_key_get(m, sigs[i]);
	}
	return DKIM_CBSTAT_CONTINUE;
}

DKIM_CBSTAT
dkim_dns_key_cb(DKIM *d, DKIM_SIGINFO *sig, u_char *buf, size_t buflen)
{
	struct dkim_msg *m = dkim_get_user_context(d);
	struct dkim_keyent *e;

	if (m == NULL || (e = dkim_dns_key_get(m, sig)) == NULL)
		return DKIM_CBSTAT_NOTFOUND;	/* classified as temperror */
	switch (e->state) {
	case DKIM_KEY_PENDING:
		return DKIM_CBSTAT_TRYAGAIN;
	case DKIM_KEY_FOUND:
		if (strlen(e->txt) >= buflen)
			return DKIM_CBSTAT_NOTFOUND;
		memcpy(buf, e->txt, strlen(e->txt) + 1);
		return DKIM_CBSTAT_CONTINUE;
	default:
		/*
		 * NOTFOUND makes libopendkim mark the signature NOKEY and go
		 * on with the others; ERROR would abort dkim_eoh().  What
		 * really happened is in the cache, for the report.
		 */
		return DKIM_CBSTAT_NOTFOUND;
	}
}
