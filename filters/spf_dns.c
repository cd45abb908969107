/*
 * spf_dns.c - the SPF filter's DNS side: the per-message table of
 * (name, type) answers, DNS answer parsing, and the libspf2 DNS layer
 * that serves every pass from that table
 *
 * NAME
 *	spf_dns_layer, spf_dns_answer, spf_dns_entry_want
 *
 * SYNOPSIS
 *	#include "spf_int.h"
 *
 *	extern SPF_dns_server_t spf_dns_layer;
 *	extern _Thread_local struct spf_pass *spf_dns_cur;
 *	struct spf_entry *spf_dns_entry_want(struct spf_msg *, const char *, int);
 *	void spf_dns_answer(struct spf_entry *, int rcode,
 *	    const unsigned char *pkt, size_t len);
 *
 * DESCRIPTION
 *	libspf2 resolves synchronously.  Its only resolver is spf_dns_layer,
 *	which answers from the per-message table and never touches the
 *	network: a question the table cannot answer is recorded as a miss
 *	(an entry in state SPF_ST_WANTED) and answered TRY_AGAIN, which makes
 *	libspf2 stop; spf.c then asks the core's resolver, stores the
 *	answers with spf_dns_answer() and runs the pass again.  The pass
 *	being served is found through the thread-local spf_dns_cur, which
 *	spf.c sets around each libspf2 call.
 *
 *	The layer does what libspf2 does not (notes/LIBRARIES.md 1):
 *	- it counts the RFC 7208 4.6.4 terms across include and redirect
 *	  and makes the 11th a permerror, likewise the third void lookup;
 *	- it tells the lookup a term makes from the address lookups of the
 *	  MX and PTR names it led to by tagging the names it hands libspf2
 *	  (SPF_TAG_*), so nothing is guessed;
 *	- TXT answers reach libspf2 only as spf_record_canon() rewrites;
 *	- it hands libspf2 at most 10 PTR names, skips a PTR name whose
 *	  address lookup fails (5.5), and makes more than 10 MX records a
 *	  permerror whatever their order (4.6.4);
 *	- it orders the p macro's PTR names so that <domain> or a subdomain
 *	  of it is the one libspf2 validates first (7.3).
 *
 *	spf_dns_answer() maps an answer as RFC 7208 2.6.6 / 4.4 says:
 *	NXDOMAIN is HOST_NOT_FOUND, NOERROR without a record of the type
 *	NO_DATA, anything else (SERVFAIL, timeout, a packet that does not
 *	parse or is truncated, a question that is not ours) TRY_AGAIN.
 *	The table holds at most SPF_ENTRIES_MAX questions, each at most
 *	SPF_ADDRS_MAX addresses or SPF_MX_KEEP names.
 *
 * STANDARDS
 *	RFC 7208 sections 2.6, 4.4, 4.6.4, 5 and 7.3; RFC 1035.
 */
#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <spf2/spf.h>

#include "spf_int.h"
#include "strutil.h"

/* The pass the layer serves, set by spf.c around each libspf2 call. */
_Thread_local struct spf_pass *spf_dns_cur;

/* ------------------------------------------------------------------ */
/* The per-message answer table */

void
spf_dns_entry_free(struct spf_entry *e)
{
	size_t i;

	if (e->names != NULL)
		for (i = 0; i < e->n; i++)
			free(e->names[i]);
	free(e->names);
	free(e->a);
	free(e->aaaa);
	free(e->spf);
	free(e);
}

static struct spf_entry *
spf_dns_entry_find(const struct spf_msg *m, const char *name, int type)
{
	struct spf_entry *e;

	for (e = m->zone; e != NULL; e = e->next)
		if (e->type == type && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Find or add (name, type); NULL when the table is full or out of memory. */
struct spf_entry *
spf_dns_entry_want(struct spf_msg *m, const char *name, int type)
{
	struct spf_entry *e;
	size_t len = strlen(name);

	if ((e = spf_dns_entry_find(m, name, type)) != NULL)
		return e;
	if (m->nzone >= SPF_ENTRIES_MAX || (e = calloc(1, sizeof *e + len + 1)) == NULL)
		return NULL;
	memcpy(e->name, name, len + 1);
	e->m = m;
	e->type = type;
	e->state = SPF_ST_WANTED;
	*m->zone_tail = e;
	m->zone_tail = &e->next;
	m->nzone++;
	return e;
}

/* A name from a DNS answer (presentation form already): lower case, no final dot. */
static int
spf_dns_answer_name(const char *name, char *out, size_t outlen)
{
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.' && !(len > 1 && name[len - 2] == '\\'))
		len--;
	if (len == 0 || len >= outlen)
		return -1;
	memcpy(out, name, len);
	out[len] = '\0';
	str_lower(out);
	return 0;
}

/* The names an answer may hold records for: the question, then CNAMEs. */
#define SPF_CHAIN_MAX	17

/* What storing one answer record did. */
enum spf_dns_store {
	SPF_DNS_SKIP = 0,	/* not used (wrong size, over the cap, not SPF) */
	SPF_DNS_KEPT,		/* stored: the name has data */
	SPF_DNS_FAIL		/* broken or out of memory: TRY_AGAIN, stop */
};

/*
 * The question must be ours: the same name, in the resolver's spelling.
 * chain0 gets it (lower case, no final dot).  0, or -1.
 */
static int
spf_dns_answer_question(const struct spf_entry *e, ns_msg *msg, char *chain0,
    size_t chainlen)
{
	char	buf[NS_MAXDNAME], txt[SPF_RECORD_MAX + 1];
	ns_rr	rr;

	if (ns_msg_count(*msg, ns_s_qd) != 1 || ns_parserr(msg, ns_s_qd, 0, &rr) == -1 ||
	    (int)ns_rr_type(rr) != e->type ||
	    spf_dns_answer_name(ns_rr_name(rr), chain0, chainlen) == -1)
		return -1;
	if (ns_name_pton(e->name, (unsigned char *)buf, sizeof buf) == -1 ||
	    ns_name_ntop((unsigned char *)buf, txt, sizeof txt) == -1 ||
	    spf_dns_answer_name(txt, buf, sizeof buf) == -1 ||
	    strcmp(buf, chain0) != 0)
		return -1;
	return 0;
}

/*
 * Follow CNAMEs from chain[0] (RRs may come in any order), at most
 * SPF_CHAIN_MAX names.  The chain's length, or 0 for a broken packet.
 */
static size_t
spf_dns_answer_chain(ns_msg *msg, char chain[][NS_MAXDNAME])
{
	char	buf[NS_MAXDNAME], txt[SPF_RECORD_MAX + 1];
	ns_rr	rr;
	size_t	nchain = 1, k;
	int	count = ns_msg_count(*msg, ns_s_an), grew, r;

	do {
		grew = 0;
		for (r = 0; r < count && nchain < SPF_CHAIN_MAX; r++) {
			if (ns_parserr(msg, ns_s_an, r, &rr) == -1)
				return 0;
			if (ns_rr_type(rr) != ns_t_cname || ns_rr_class(rr) != ns_c_in ||
			    spf_dns_answer_name(ns_rr_name(rr), buf, sizeof buf) == -1 ||
			    strcmp(buf, chain[nchain - 1]) != 0)
				continue;
			if (ns_name_uncompress(ns_msg_base(*msg), ns_msg_end(*msg),
			    ns_rr_rdata(rr), txt, sizeof txt) == -1 ||
			    spf_dns_answer_name(txt, chain[nchain], NS_MAXDNAME) == -1)
				return 0;
			for (k = 0; k < nchain && strcmp(chain[k], chain[nchain]) != 0; k++)
				;
			if (k < nchain)
				break;		/* a loop: what we have is all there is */
			nchain++;
			grew = 1;
		}
	} while (grew);
	return nchain;
}

/* An A or AAAA record. */
static enum spf_dns_store
spf_dns_answer_addr(struct spf_entry *e, const ns_rr *rr)
{
	const unsigned char *rd = ns_rr_rdata(*rr);

	if (e->type == ns_t_a) {
		if (ns_rr_rdlen(*rr) != 4 || e->n >= SPF_ADDRS_MAX)
			return SPF_DNS_SKIP;
		if (e->a == NULL && (e->a = calloc(SPF_ADDRS_MAX, sizeof *e->a)) == NULL)
			return SPF_DNS_FAIL;
		memcpy(&e->a[e->n++], rd, 4);
		return SPF_DNS_KEPT;
	}
	if (ns_rr_rdlen(*rr) != 16 || e->n >= SPF_ADDRS_MAX)
		return SPF_DNS_SKIP;
	if (e->aaaa == NULL &&
	    (e->aaaa = calloc(SPF_ADDRS_MAX, sizeof *e->aaaa)) == NULL)
		return SPF_DNS_FAIL;
	memcpy(&e->aaaa[e->n++], rd, 16);
	return SPF_DNS_KEPT;
}

/* An MX or PTR record: its target name. */
static enum spf_dns_store
spf_dns_answer_target(struct spf_entry *e, ns_msg *msg, const ns_rr *rr)
{
	char	buf[NS_MAXDNAME], txt[SPF_RECORD_MAX + 1];
	const unsigned char *rd = ns_rr_rdata(*rr);

	/* 4.6.4: only 10 are used (an 11th MX makes a permerror). */
	if (e->n >= (e->type == ns_t_mx ? SPF_MX_KEEP : SPF_NAMES_MAX))
		return SPF_DNS_SKIP;
	if (e->type == ns_t_mx && ns_rr_rdlen(*rr) < 3)
		return SPF_DNS_SKIP;
	if (ns_name_uncompress(ns_msg_base(*msg), ns_msg_end(*msg),
	    rd + (e->type == ns_t_mx ? 2 : 0), txt, sizeof txt) == -1)
		return SPF_DNS_SKIP;
	if (spf_dns_answer_name(txt, buf, sizeof buf) == -1)
		buf[0] = '\0';	/* the root: RFC 7505 null MX */
	if (e->names == NULL &&
	    (e->names = calloc(SPF_MX_KEEP, sizeof *e->names)) == NULL)
		return SPF_DNS_FAIL;
	if ((e->names[e->n] = strdup(buf)) == NULL)
		return SPF_DNS_FAIL;
	e->n++;
	return SPF_DNS_KEPT;
}

/*
 * A TXT record: counted, and kept in canonical form when it is the one
 * SPF record (4.5); a record that makes a permerror leaves e->why.
 */
static enum spf_dns_store
spf_dns_answer_txt(struct spf_entry *e, const ns_rr *rr)
{
	char		 txt[SPF_RECORD_MAX + 1], canon[SPF_CANON_MAX];
	const unsigned char *rd = ns_rr_rdata(*rr), *rdend = rd + ns_rr_rdlen(*rr);
	size_t		 txtlen, i;
	const char	*why;

	/* 3.3: the strings of one TXT record are joined without spaces. */
	for (txtlen = 0; rd < rdend; ) {
		size_t sl = *rd++;

		if (sl > (size_t)(rdend - rd))
			return SPF_DNS_FAIL;
		if (txtlen + sl <= SPF_RECORD_MAX)
			memcpy(txt + txtlen, rd, sl);
		txtlen += sl;
		rd += sl;
	}
	e->n++;
	/* 4.5: keep records that start with "v=spf1" and SP or end. */
	if (txtlen < 6 || str_ncasecmp(txt, "v=spf1", 6) != 0 ||
	    (txtlen > 6 && txt[6] != ' '))
		return SPF_DNS_SKIP;
	if (++e->nspf > 1) {
		free(e->spf);
		e->spf = NULL;
		snprintf(e->why, sizeof e->why, "more than one SPF record");
		return SPF_DNS_SKIP;
	}
	if (txtlen > SPF_RECORD_MAX) {
		snprintf(e->why, sizeof e->why, "record too long");
		return SPF_DNS_SKIP;
	}
	for (i = 0; i < txtlen; i++)
		if (txt[i] == '\0')
			break;
	if (i < txtlen) {
		snprintf(e->why, sizeof e->why, "NUL in record");
		return SPF_DNS_SKIP;
	}
	txt[txtlen] = '\0';
	if (spf_record_canon(txt, txtlen, e->m->family, e->m->nonce,
	    canon, sizeof canon, &why) == -1) {
		snprintf(e->why, sizeof e->why, "%s", why);
		return SPF_DNS_SKIP;
	}
	if ((e->spf = strdup(canon)) == NULL)
		return SPF_DNS_FAIL;
	return SPF_DNS_KEPT;
}

/*
 * Store a DNS answer in e.  rcode is the RCODE (-1: no answer).  RFC
 * 7208 2.6.6 / 4.4: NXDOMAIN is HOST_NOT_FOUND, NOERROR without a record
 * of the type NO_DATA, anything else (SERVFAIL, timeout, REFUSED, a
 * packet that does not parse or is truncated) TRY_AGAIN: temperror.
 * CNAME chains in the answer are followed (at most 16 links).
 */
void
spf_dns_answer(struct spf_entry *e, int rcode, const unsigned char *pkt, size_t len)
{
	char		 chain[SPF_CHAIN_MAX][NS_MAXDNAME];
	char		 buf[NS_MAXDNAME];
	ns_msg		 msg;
	ns_rr		 rr;
	size_t		 nchain, k;
	int		 count, r;
	enum spf_dns_store st;

	e->state = SPF_ST_DONE;
	e->herrno = TRY_AGAIN;
	if (rcode == 3) {
		e->herrno = HOST_NOT_FOUND;
		return;
	}
	if (rcode != 0 || pkt == NULL || len == 0 || len > 65535 ||
	    ns_initparse(pkt, (int)len, &msg) == -1 || ns_msg_getflag(msg, ns_f_tc))
		return;
	if (spf_dns_answer_question(e, &msg, chain[0], sizeof chain[0]) == -1 ||
	    (nchain = spf_dns_answer_chain(&msg, chain)) == 0)
		return;
	count = ns_msg_count(msg, ns_s_an);
	e->herrno = NO_DATA;
	for (r = 0; r < count; r++) {
		if (ns_parserr(&msg, ns_s_an, r, &rr) == -1) {
			e->herrno = TRY_AGAIN;
			return;
		}
		if ((int)ns_rr_type(rr) != e->type || ns_rr_class(rr) != ns_c_in ||
		    spf_dns_answer_name(ns_rr_name(rr), buf, sizeof buf) == -1)
			continue;
		for (k = 0; k < nchain && strcmp(chain[k], buf) != 0; k++)
			;
		if (k == nchain)
			continue;
		switch (e->type) {
		case ns_t_a:
		case ns_t_aaaa:
			st = spf_dns_answer_addr(e, &rr);
			break;
		case ns_t_mx:
		case ns_t_ptr:
			st = spf_dns_answer_target(e, &msg, &rr);
			break;
		case ns_t_txt:
			st = spf_dns_answer_txt(e, &rr);
			break;
		default:
			st = SPF_DNS_SKIP;
			break;
		}
		if (st == SPF_DNS_FAIL) {
			e->herrno = TRY_AGAIN;
			return;
		}
		if (st == SPF_DNS_KEPT)
			e->herrno = NETDB_SUCCESS;
	}
	if (e->type == ns_t_txt && e->n > 0)
		e->herrno = NETDB_SUCCESS;	/* TXT records, maybe none of them SPF */
}

/* ------------------------------------------------------------------ */
/* The libspf2 DNS layer */

static SPF_dns_rr_t *
spf_dns_rr_status(SPF_dns_server_t *s, const char *domain, ns_type type, int herrno)
{
	return SPF_dns_rr_new_init(s, domain, type, 0, herrno);
}

static void
spf_dns_force(struct spf_pass *p, const char *why)
{
	p->forced = 1;
	p->stopped = 1;
	snprintf(p->why, sizeof p->why, "%s", why);
}

/* RFC 7208 4.6.4: a void lookup is NXDOMAIN or NOERROR without records. */
static int
spf_dns_void(struct spf_pass *p, const struct spf_entry *e)
{
	if (e->herrno != HOST_NOT_FOUND && e->herrno != NO_DATA)
		return 0;
	if (++p->voids > SPF_VOIDS_MAX) {
		spf_dns_force(p, "more than 2 void lookups");
		return -1;
	}
	return 0;
}

static int
spf_dns_has_client(const struct spf_msg *m, const struct spf_entry *e)
{
	size_t i;

	for (i = 0; i < e->n; i++)
		if ((e->type == ns_t_a && m->family == AF_INET &&
		    e->a[i].s_addr == m->ip4.s_addr) ||
		    (e->type == ns_t_aaaa && m->family == AF_INET6 &&
		    memcmp(&e->aaaa[i], &m->ip6, sizeof m->ip6) == 0))
			return 1;
	return 0;
}

/*
 * Build the answer libspf2 gets.  client_only: answer a non-empty
 * address set with the client's own address (the x/0 prefixes).
 * tag: prefix each MX/PTR name with it (0 = none).
 */
static SPF_dns_rr_t *
spf_dns_rr_build(SPF_dns_server_t *s, const char *domain, ns_type type,
    const struct spf_entry *e, int client_only, char tag, const size_t *order)
{
	const struct spf_msg *m = e->m;
	SPF_dns_rr_t	*rr;
	size_t		 i, n = e->n, len, k;

	if (e->herrno != NETDB_SUCCESS || e->n == 0)
		return spf_dns_rr_status(s, domain, type,
		    e->herrno == NETDB_SUCCESS ? NO_DATA : e->herrno);
	if ((rr = SPF_dns_rr_new_init(s, domain, type, 0, NETDB_SUCCESS)) == NULL)
		return NULL;
	if (client_only)
		n = 1;
	for (i = 0; i < n; i++) {
		switch (type) {
		case ns_t_a:
			if (SPF_dns_rr_buf_realloc(rr, (int)i, sizeof(struct in_addr)) !=
			    SPF_E_SUCCESS)
				goto fail;
			rr->rr[i]->a = client_only ? m->ip4 : e->a[i];
			break;
		case ns_t_aaaa:
			if (SPF_dns_rr_buf_realloc(rr, (int)i, sizeof(struct in6_addr)) !=
			    SPF_E_SUCCESS)
				goto fail;
			rr->rr[i]->aaaa = client_only ? m->ip6 : e->aaaa[i];
			break;
		case ns_t_mx:
		case ns_t_ptr:
			k = order != NULL ? order[i] : i;
			len = strlen(e->names[k]) + 3;
			if (SPF_dns_rr_buf_realloc(rr, (int)i, len) != SPF_E_SUCCESS)
				goto fail;
			if (tag)
				snprintf(rr->rr[i]->mx, len, "%c.%s", tag, e->names[k]);
			else
				snprintf(rr->rr[i]->mx, len, "%s", e->names[k]);
			break;
		case ns_t_txt:
			len = strlen(e->spf) + 1;
			if (SPF_dns_rr_buf_realloc(rr, (int)i, len) != SPF_E_SUCCESS)
				goto fail;
			memcpy(rr->rr[i]->txt, e->spf, len);
			n = 1;
			break;
		default:
			goto fail;
		}
		rr->num_rr = (int)i + 1;
	}
	return rr;
fail:
	SPF_dns_rr_free(rr);
	return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
}

/* 0: name is <domain>, 1: a subdomain of it, 2: anything else (RFC 7208 7.3). */
static int
spf_dns_p_rank(const char *name, const char *domain)
{
	size_t n = strlen(name), d = strlen(domain);

	if (str_casecmp(name, domain) == 0)
		return 0;
	if (n > d && name[n - d - 1] == '.' && str_casecmp(name + n - d, domain) == 0)
		return 1;
	return 2;
}

/* The p macro's PTR names in the order of preference, for libspf2 and for us. */
static void
spf_dns_p_order(struct spf_pass *p, const struct spf_entry *e)
{
	const char	*dom = p->req != NULL && p->req->cur_dom != NULL ?
			    p->req->cur_dom : "";
	size_t		 i;
	int		 rank;

	p->p_ptr = NULL;
	p->p_n = 0;
	p->p_idx = 0;
	if (e->herrno != NETDB_SUCCESS)
		return;
	for (rank = 0; rank <= 2; rank++)
		for (i = 0; i < e->n && i < SPF_NAMES_MAX; i++)
			if (spf_dns_p_rank(e->names[i], dom) == rank)
				p->p_order[p->p_n++] = i;
	if (p->p_n > 0)
		p->p_ptr = e;
}

/* One question libspf2 asks the layer, and its role (spf_dns_layer_lookup). */
struct spf_dns_q {
	SPF_dns_server_t *s;
	const char	*domain;	/* as asked, tag removed */
	ns_type		 type;
	char		 raw[SPF_NAME_BUF];	/* no final dot, no any-suffix */
	char		 tag;		/* SPF_TAG_*, 0 for none */
	int		 any;		/* the x/0 suffix of this message */
	int		 term;		/* an RFC 7208 4.6.4 term */
	int		 pmacro;	/* libspf2's p macro PTR lookup */
	int		 pvalid;	/* p macro validation of a PTR name */
};

/* Take the tag, the final dot and the any-suffix off the asked name: 0, -1. */
static int
spf_dns_layer_name(const struct spf_pass *p, struct spf_dns_q *q,
    const char *domain)
{
	char	suffix[64];
	size_t	len, slen;

	if ((domain[0] == SPF_TAG_MX || domain[0] == SPF_TAG_MX_ANY ||
	    domain[0] == SPF_TAG_PTR) && domain[1] == '.') {
		q->tag = domain[0];
		domain += 2;
	}
	q->domain = domain;
	if ((len = strlen(domain)) >= sizeof q->raw)
		return -1;
	memcpy(q->raw, domain, len + 1);
	if (len > 0 && q->raw[len - 1] == '.')
		q->raw[--len] = '\0';
	snprintf(suffix, sizeof suffix, SPF_ANY_SUFFIX_FMT, p->m->nonce);
	slen = strlen(suffix);
	if (q->tag == 0 && len > slen && str_casecmp(q->raw + len - slen, suffix) == 0) {
		q->any = 1;
		q->raw[len - slen] = '\0';
	}
	return 0;
}

/*
 * The role of the lookup (the table above), and the RFC 7208 4.6.4 count:
 * 0, or -1 when this term is one too many (the pass is forced).
 */
static int
spf_dns_layer_role(struct spf_pass *p, struct spf_dns_q *q, int should_cache)
{
	char	name[SPF_NAME_BUF];

	switch (q->type) {
	case ns_t_txt:
		if (!p->first_done)
			p->first_done = 1;
		else
			q->term = 1;
		break;
	case ns_t_mx:
		q->term = 1;
		break;
	case ns_t_ptr:
		if (should_cache)
			q->term = 1;
		else
			q->pmacro = 1;
		break;
	default:
		if (q->tag != 0)
			break;
		if (!should_cache && p->p_ptr != NULL && p->p_idx < p->p_n &&
		    spf_dns_answer_name(q->raw, name, sizeof name) == 0 &&
		    strcmp(name, p->p_ptr->names[p->p_order[p->p_idx]]) == 0) {
			q->pvalid = 1;
			break;
		}
		q->term = 1;
		break;
	}
	if (q->term && ++p->terms > SPF_TERMS_MAX) {
		spf_dns_force(p, "more than 10 DNS-querying terms");
		return -1;
	}
	if (q->pmacro && !p->p_counted) {
		p->p_counted = 1;
		if (++p->terms > SPF_TERMS_MAX) {
			spf_dns_force(p, "more than 10 DNS-querying terms");
			return -1;
		}
	}
	return 0;
}

/* The answer to a question the table has answered (e is SPF_ST_DONE). */
static SPF_dns_rr_t *
spf_dns_layer_serve(struct spf_pass *p, const struct spf_dns_q *q,
    struct spf_entry *e)
{
	SPF_dns_server_t *s = q->s;
	const char	*domain = q->domain;
	ns_type		 type = q->type;

	switch (type) {
	case ns_t_txt:
		if (q->term && spf_dns_void(p, e) == -1)
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		if (e->herrno != NETDB_SUCCESS)
			return spf_dns_rr_status(s, domain, type, e->herrno);
		if (e->nspf == 0)
			return spf_dns_rr_status(s, domain, type, NO_DATA);	/* 4.5: none */
		if (e->spf == NULL) {
			/* 4.5 more than one record, 4.6 syntax: permerror */
			spf_dns_force(p, e->why);
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		}
		return spf_dns_rr_build(s, domain, type, e, 0, 0, NULL);
	case ns_t_mx:
		if (spf_dns_void(p, e) == -1)
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		/*
		 * 4.6.4: more than 10 address lookups for one mx is a
		 * permerror.  The suite (mx-limit) settles the RFC 4408
		 * debate: more than 10 MX records is a permerror whatever
		 * their order, which DNS does not fix anyway.
		 */
		if (e->herrno == NETDB_SUCCESS && e->n > SPF_NAMES_MAX) {
			spf_dns_force(p, "more than 10 MX records");
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		}
		return spf_dns_rr_build(s, domain, type, e, 0,
		    q->any ? SPF_TAG_MX_ANY : SPF_TAG_MX,
		    NULL);
	case ns_t_ptr:
		if (q->pmacro) {
			/*
			 * 7.3: of the validated names, <domain> itself SHOULD
			 * be used, else a subdomain of it, else any.  libspf2
			 * takes the first name that validates (5.5), so it
			 * gets them in that order; the layer follows along.
			 */
			spf_dns_p_order(p, e);
			return spf_dns_rr_build(s, domain, type, e, 0, 0, p->p_order);
		}
		if (spf_dns_void(p, e) == -1)
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		return spf_dns_rr_build(s, domain, type, e, 0, SPF_TAG_PTR, NULL);
	default:
		if (q->pvalid) {
			/* libspf2 stops at the first name that has the client's address */
			if (spf_dns_has_client(p->m, e) || ++p->p_idx >= p->p_n)
				p->p_ptr = NULL;
			if (e->herrno == TRY_AGAIN)
				return spf_dns_rr_status(s, domain, type, NO_DATA);
			return spf_dns_rr_build(s, domain, type, e, 0, 0, NULL);
		}
		if (q->tag == SPF_TAG_PTR && e->herrno == TRY_AGAIN)
			return spf_dns_rr_status(s, domain, type, NO_DATA);	/* 5.5: skip it */
		if (q->term && spf_dns_void(p, e) == -1)
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		return spf_dns_rr_build(s, domain, type, e,
		    q->any || q->tag == SPF_TAG_MX_ANY, 0, NULL);
	}
}

/*
 * libspf2's only resolver.  Roles of a lookup, told apart without
 * guessing:
 *	first TXT of the pass	the checked domain: not a term
 *	later TXT		include or redirect: a term
 *	MX; PTR (cached)	mx, ptr: a term
 *	PTR (not cached)	libspf2's p macro: counted once (4.6.4)
 *	A/AAAA, tagged name	address of an MX/PTR name: not a term
 *	A/AAAA after p's PTR	p macro validation (exact name order)
 *	other A/AAAA		a, exists: a term
 * A term's own lookup that finds nothing is a void lookup.
 */
static SPF_dns_rr_t *
spf_dns_layer_lookup(SPF_dns_server_t *s, const char *domain, ns_type type,
    int should_cache)
{
	struct spf_pass	*p = spf_dns_cur;
	struct spf_msg	*m;
	struct spf_entry *e;
	struct spf_dns_q q;
	char		 name[SPF_NAME_BUF];

	if (p == NULL || domain == NULL)
		return spf_dns_rr_status(s, domain ? domain : "", type, TRY_AGAIN);
	m = p->m;
	/* RFC 7208 3.1, 4.4: only TXT; type SPF (99) is no longer used. */
	if (type != ns_t_txt && type != ns_t_a && type != ns_t_aaaa &&
	    type != ns_t_mx && type != ns_t_ptr)
		return spf_dns_rr_status(s, domain, type, NO_DATA);
	if (p->stopped)
		return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
	memset(&q, 0, sizeof q);
	q.s = s;
	q.type = type;
	if (spf_dns_layer_name(p, &q, domain) == -1)
		return spf_dns_rr_status(s, q.domain, type, HOST_NOT_FOUND);
	domain = q.domain;
	if (spf_dns_layer_role(p, &q, should_cache) == -1)
		return spf_dns_rr_status(s, domain, type, TRY_AGAIN);

	/* Names from DNS answers are in presentation form already. */
	if ((q.tag != 0 || q.pvalid) ? spf_dns_answer_name(q.raw, name, sizeof name) :
	    spf_record_query_name(q.raw, name, sizeof name))
		return spf_dns_rr_status(s, domain, type, HOST_NOT_FOUND);

	if ((e = spf_dns_entry_find(m, name, type)) == NULL || e->state != SPF_ST_DONE) {
		if (e == NULL && (e = spf_dns_entry_want(m, name, type)) == NULL) {
			/* The table is full (or no memory): temperror, not a miss. */
			p->stopped = 1;
			snprintf(p->why, sizeof p->why, "too many DNS lookups");
			return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
		}
		p->missed = 1;
		p->stopped = 1;
		return spf_dns_rr_status(s, domain, type, TRY_AGAIN);
	}
	return spf_dns_layer_serve(p, &q, e);
}

/* The layer is stateless (the pass comes through spf_dns_cur): one for all. */
SPF_dns_server_t spf_dns_layer = {
	.lookup = spf_dns_layer_lookup,
	.name = "frontmx",
};
