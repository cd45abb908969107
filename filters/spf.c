/*
 * spf.c - the built-in SPF filter: RFC 7208 checks of the MAIL FROM and
 * HELO identities with libspf2, without ever blocking the event loop
 *
 * NAME
 *	spf_filter - the "spf" entry of the filters list
 *
 * SYNOPSIS
 *	filters = ( { name = "spf";
 *	              options = { helo = true; max_passes = 30;
 *	                          explanation = "see https://example.net/spf"; }; } );
 *	policy = { default = { spf = { fail = "reject"; softfail = "tag";
 *	                               temperror = "tempfail"; }; }; };
 *
 * DESCRIPTION
 *	At MAIL FROM the filter runs check_host() (RFC 7208 section 4) for
 *	the HELO identity (section 2.3), then for the MAIL FROM identity.  A
 *	HELO result of "fail" is conclusive and ends the check (2.3: no need
 *	to spend DNS on MAIL FROM); any other HELO result only goes to the
 *	log.  For the null reverse-path the MAIL FROM identity is
 *	postmaster@HELO (2.4), so one check of the HELO domain gives the
 *	result.  A quoted local part ("a b"@example.com) stands for its value;
 *	an empty one, or none, is "postmaster" (4.3).  A domain that is no
 *	domain name gives "none" without a lookup (4.3); so does a client
 *	with no IP address.  The result is named with api->set_result() -
 *	pass, fail, softfail, neutral, none, temperror, permerror - and the
 *	transaction's policy maps it to an action; the hook itself always
 *	continues.  The
 *	filter also sets the facts spf.result and spf.domain (for DMARC), a
 *	reply for the refusing results (550 5.7.23 fail and softfail, 550
 *	5.7.24 permerror, 451 4.7.24 temperror; RFC 7372), and at end of
 *	message prepends Received-SPF (RFC 7208 9.1) and adds an "spf"
 *	Authentication-Results entry (RFC 8601 2.7.2).
 *
 * HOW LIBSPF2 IS DRIVEN
 *	libspf2 resolves synchronously.  Its resolver here is a layer of our
 *	own (spf_dns_layer, spf_dns.c) that answers only from a per-message table
 *	of (name, type) answers and never touches the network.  A question
 *	the table cannot answer is recorded as a miss and answered TRY_AGAIN,
 *	which makes libspf2 stop; the filter then asks the core's
 *	asynchronous resolver (api->dns_query) for every miss, stores the
 *	answers and runs the whole check again.  Such a pass is CPU only and
 *	deterministic, so pass N+1 walks the path of pass N one step
 *	further.  Passes are bounded (max_passes), and the address records
 *	an MX or PTR answer leads to are fetched along with it, so a record
 *	costs about one round trip per include level.
 *
 *	The same layer does what libspf2 does not (notes/LIBRARIES.md 1):
 *	- it counts the RFC 7208 4.6.4 terms across include and redirect
 *	  (each TXT lookup after the first, i.e. include and redirect; each
 *	  mx, ptr, a and exists lookup; the PTR lookup of a p macro) and
 *	  makes the 11th a permerror, likewise the third void lookup;
 *	- it tells the lookup a term makes from the address lookups of the
 *	  MX and PTR names it led to by tagging the names it hands libspf2
 *	  (SPF_TAG_*), so nothing is guessed;
 *	- it parses every SPF record against the RFC 7208 ABNF first, and
 *	  libspf2 only ever sees a canonical rewrite of a valid record:
 *	  redirect moved last (libspf2 evaluates it in place), dropped when
 *	  the record has "all" (6.1); exp= and unknown modifiers validated
 *	  then dropped (the explanation is ours, 6.2); ip4/ip6 terms of the
 *	  other address family dropped; x/0 prefix lengths (which libspf2
 *	  reads as /32) rewritten; macro transformers normalised.  Malformed
 *	  records thus never reach libspf2's parser, whose error paths call
 *	  SPF_error() (abort()) or underflow (CVE-2023-42118, unfixed in
 *	  Debian 12), and a syntax error anywhere is a permerror (4.6);
 *	- it hands libspf2 at most 10 PTR names, so the rest are ignored
 *	  (4.6.4) where libspf2 would fail with permerror, and skips a PTR
 *	  name whose address lookup fails (5.5) where libspf2 says temperror;
 *	  more than 10 MX records is a permerror whatever their order (4.6.4,
 *	  as the RFC 7208 test suite reads it), where libspf2 looks at the
 *	  first 10 first;
 *	- it orders the p macro's PTR names so that <domain> or a subdomain
 *	  of it is the one libspf2 validates first (7.3);
 *	- TRY_AGAIN on the first TXT lookup, which libspf2 reports as
 *	  SPF_RESULT_INVALID, is temperror; the record is fetched and
 *	  interpreted through libspf2's exported pieces rather than
 *	  SPF_request_query_mailfrom(), which passes every loopback client
 *	  (check_host() has no such rule).
 *
 * OPTIONS
 *	helo = BOOLEAN (default yes): check the HELO identity too.
 *	max_passes = N (default 30, 1..1000): evaluations per identity
 *	    before giving up with temperror.  The elapsed time is bounded by
 *	    the filter's `timeout` (default 30 s; RFC 7208 4.6.4 asks for at
 *	    least 20), whose expiry is the filter's on_error action.
 *	explanation = TEXT (default none): appended to the reply of a fail,
 *	    e.g. a URL; printable ASCII, at most 150 characters.  Texts
 *	    published with exp= are never fetched (RFC 7208 6.2 leaves their
 *	    use to the receiver; CVE-2021-20314 lived there).
 *
 * THREADING
 *	One SPF_server_t per instance, read-only after init and shared by
 *	every worker thread.  The layer finds the pass it serves through a
 *	thread-local pointer set around each libspf2 call.  libspf2's log
 *	handlers are process-global: set once, to nothing.
 *
 * FILES
 *	spf.c		this filter: options, instances, the per-message
 *			driver (passes, queries, answers), what a check says
 *			(result, facts, reply, Received-SPF, A-R).
 *	spf_record.c	pure SPF record parsing and canonical rewriting,
 *			query names (RFC 7208 4.5-7); no DNS, no libspf2.
 *	spf_dns.c	the per-message answer table, DNS answer parsing and
 *			the libspf2 DNS layer that serves passes from it.
 *	spf_int.h	types and limits shared by the three.
 *
 * STANDARDS
 *	RFC 7208 (SPF), RFC 7372 (codes 5.7.23 and 5.7.24), RFC 8601.
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

#include "spf.h"
#include "spf_int.h"
#include "strutil.h"

static const char *const spf_result_names[SPF_R_COUNT] = {
	[SPF_R_PASS] = "pass",
	[SPF_R_FAIL] = "fail",
	[SPF_R_SOFTFAIL] = "softfail",
	[SPF_R_NEUTRAL] = "neutral",
	[SPF_R_NONE] = "none",
	[SPF_R_TEMPERROR] = "temperror",
	[SPF_R_PERMERROR] = "permerror",
};

/* ------------------------------------------------------------------ */
/* Small helpers */

static int
spf_printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/*
 * RFC 7208 4.3: the <domain> of check_host() must be a multi-label
 * domain name whose labels are 1..63 octets, 253 in all (one final dot
 * allowed); otherwise the result is "none".  Domain literals fail here.
 * Names are ASCII: internationalised names must come as A-labels.
 */
static int
spf_domain_ok(const char *d)
{
	size_t len = strlen(d), label = 0, labels = 0, i;

	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0 || len > SPF_DOMAIN_MAX || d[0] == '[')
		return 0;
	for (i = 0; i < len; i++) {
		if ((unsigned char)d[i] <= 0x20 || (unsigned char)d[i] >= 0x7f)
			return 0;
		if (d[i] == '.') {
			if (label == 0)
				return 0;
			labels++;
			label = 0;
		} else if (++label > 63)
			return 0;
	}
	return label > 0 && labels >= 1;
}

static void
spf_msg_free(void *p)
{
	struct spf_msg *m = p;
	struct spf_entry *e, *next;

	if (m == NULL)
		return;
	for (e = m->zone; e != NULL; e = next) {
		next = e->next;
		spf_dns_entry_free(e);
	}
	free(m);
}

static pthread_once_t spf_once = PTHREAD_ONCE_INIT;

static void
spf_global_init(void)
{
	/*
	 * libspf2 prints warnings and notices on stderr by default; it has
	 * nothing to say that the filter does not log itself.  The error
	 * handler stays: it runs right before an abort().
	 */
	SPF_warning_handler = NULL;
	SPF_info_handler = NULL;
	SPF_debug_handler = NULL;
}

/* ------------------------------------------------------------------ */
/* One evaluation pass */

static enum spf_result
spf_map(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_PASS:
		return SPF_R_PASS;
	case SPF_RESULT_FAIL:
		return SPF_R_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_R_SOFTFAIL;
	case SPF_RESULT_NEUTRAL:
		return SPF_R_NEUTRAL;
	case SPF_RESULT_NONE:
		return SPF_R_NONE;
	case SPF_RESULT_PERMERROR:
		return SPF_R_PERMERROR;
	case SPF_RESULT_TEMPERROR:
	case SPF_RESULT_INVALID:	/* libspf2's TRY_AGAIN on the first lookup */
	default:
		return SPF_R_TEMPERROR;
	}
}

/*
 * Run check_host() once against what the table knows.  1: c->result is
 * final; 0: answers are missing (the table has WANTED entries).
 */
static int
spf_pass_run(struct spf_msg *m, struct spf_check *c)
{
	SPF_server_t	*srv = m->inst->server;
	SPF_request_t	*req;
	SPF_response_t	*resp;
	SPF_record_t	*rec = NULL;
	SPF_errcode_t	 err;
	struct spf_pass	 p;
	enum spf_result	 r;

	memset(&p, 0, sizeof p);
	p.m = m;
	c->why[0] = '\0';
	if ((req = SPF_request_new(srv)) == NULL) {
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "out of memory");
		return 1;
	}
	if (m->family == AF_INET)
		SPF_request_set_ipv4(req, m->ip4);
	else
		SPF_request_set_ipv6(req, m->ip6);
	/* %{h}: the HELO as given, even when it is not a domain (7.3). */
	if (SPF_request_set_env_from(req, c->sender) != SPF_E_SUCCESS ||
	    SPF_request_set_helo_dom(req, m->helo[0] ? m->helo : "unknown") !=
	    SPF_E_SUCCESS || (resp = SPF_response_new(req)) == NULL) {
		SPF_request_free(req);
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "out of memory");
		return 1;
	}
	/*
	 * What SPF_request_query_mailfrom() does, minus its free pass for
	 * loopback clients and with a compile failure of the first record
	 * reported as permerror (libspf2 leaves the result INVALID).
	 */
	req->cur_dom = c->domain;
	p.req = req;
	spf_dns_cur = &p;
	err = SPF_server_get_record(srv, req, resp, &rec);
	if (err == SPF_E_SUCCESS) {
		resp->spf_record_exp = rec;
		SPF_record_interpret(rec, req, resp, 0);
		r = spf_map(SPF_response_result(resp));
		if (r == SPF_R_PERMERROR || r == SPF_R_TEMPERROR)
			snprintf(c->why, sizeof c->why, "%s",
			    SPF_strerror(SPF_response_errcode(resp)));
	} else {
		switch (SPF_response_result(resp)) {
		case SPF_RESULT_NONE:
			r = SPF_R_NONE;
			break;
		case SPF_RESULT_PERMERROR:
			r = SPF_R_PERMERROR;
			break;
		case SPF_RESULT_TEMPERROR:
			r = SPF_R_TEMPERROR;
			break;
		default:
			r = err == SPF_E_DNS_ERROR ? SPF_R_TEMPERROR : SPF_R_PERMERROR;
			break;
		}
		snprintf(c->why, sizeof c->why, "%s", SPF_strerror(err));
	}
	spf_dns_cur = NULL;
	if (rec != NULL)
		SPF_record_free(rec);
	SPF_response_free(resp);
	SPF_request_free(req);
	c->passes++;

	if (p.forced) {
		c->result = SPF_R_PERMERROR;
		snprintf(c->why, sizeof c->why, "%s", p.why);
		return 1;
	}
	if (p.missed)
		return 0;
	if (p.stopped) {	/* the table was full: no answer to wait for */
		c->result = SPF_R_TEMPERROR;
		snprintf(c->why, sizeof c->why, "%s", p.why);
		return 1;
	}
	c->result = r;
	if (r == SPF_R_TEMPERROR)
		snprintf(c->why, sizeof c->why, "DNS lookup failed");
	return 1;
}

/* ------------------------------------------------------------------ */
/* Asynchronous driver */

static void	spf_answer_cb(struct fmx_ctx *, void *, int, const unsigned char *, size_t);

/*
 * Once an MX or PTR answer is in, the address records of its names will
 * be asked for next (unless a name matches first): ask for them now, in
 * the same round trip.  At most the 10 names 4.6.4 allows.
 */
static void
spf_prefetch(struct spf_msg *m, const struct spf_entry *e)
{
	size_t i;

	if ((e->type != ns_t_mx && e->type != ns_t_ptr) ||
	    e->herrno != NETDB_SUCCESS)
		return;
	for (i = 0; i < e->n && i < SPF_NAMES_MAX; i++)
		if (e->names[i][0] != '\0')
			(void)spf_dns_entry_want(m, e->names[i],
			    m->family == AF_INET ? ns_t_a : ns_t_aaaa);
}

/* Ask the core for every WANTED entry (answers may come back at once). */
static void
spf_issue(struct fmx_ctx *ctx, struct spf_msg *m)
{
	const struct fmx_api *api = m->inst->api;
	struct spf_entry *e;

	for (e = m->zone; e != NULL; e = e->next) {
		if (e->state != SPF_ST_WANTED)
			continue;
		e->state = SPF_ST_ASKED;
		m->outstanding++;
		m->queries++;
		if (api->dns_query(ctx, e->name, e->type, spf_answer_cb, e) == -1) {
			/* No resolver, or it refused: temperror (2.6.7). */
			if (e->state == SPF_ST_ASKED) {
				m->outstanding--;
				e->state = SPF_ST_DONE;
				e->herrno = TRY_AGAIN;
			}
		}
	}
}

/*
 * <sender> of check_host() from MAIL FROM: a quoted local part (RFC 5321
 * 4.1.2 Quoted-string) stands for its value, so "Macro Error"@d is the
 * sender Macro Error@d, and an empty one, ""@d, has no local part, which
 * makes it postmaster@d (RFC 7208 4.3).
 */
static void
spf_sender(char *out, size_t outlen, const char *from, const char *at)
{
	struct spf_buf	 b = { out, outlen, 0, 0 };
	const char	*s;

	out[0] = '\0';
	if (from[0] == '"' && at - from >= 2 && at[-1] == '"') {
		for (s = from + 1; s < at - 1; s++) {
			if (*s == '\\' && s + 1 < at - 1)
				s++;
			spf_buf_putc(&b, *s);
		}
	} else
		spf_buf_put(&b, from, (size_t)(at - from));
	if (b.len == 0)
		spf_buf_puts(&b, "postmaster");
	spf_buf_puts(&b, at);
	if (b.over)
		snprintf(out, outlen, "%s", from);
}

/*
 * Set up one check.  The HELO identity and the null reverse-path use
 * postmaster@<HELO> (RFC 7208 2.3, 2.4); a MAIL FROM without a local
 * part gets "postmaster" (4.3).  A domain that is no domain name makes
 * the check's result "none" (4.3) without any lookup.
 */
static void
spf_check_setup(struct spf_msg *m, struct spf_check *c, enum spf_identity id)
{
	const char	*at;
	size_t		 len;

	memset(c, 0, sizeof *c);
	c->identity = id;
	c->result = SPF_R_NONE;
	c->state = SPF_CK_DONE;
	if (id == SPF_ID_HELO || m->from[0] == '\0') {
		snprintf(c->domain, sizeof c->domain, "%s", m->helo);
		snprintf(c->sender, sizeof c->sender, "postmaster@%s", m->helo);
		if (!m->helo_ok) {
			snprintf(c->why, sizeof c->why, "HELO name is not a domain name");
			return;
		}
	} else {
		at = strrchr(m->from, '@');
		snprintf(c->domain, sizeof c->domain, "%s", at ? at + 1 : "");
		if (at == NULL || !spf_domain_ok(at + 1)) {
			snprintf(c->sender, sizeof c->sender, "%s", m->from);
			snprintf(c->why, sizeof c->why, "no valid domain in MAIL FROM");
			return;
		}
		spf_sender(c->sender, sizeof c->sender, m->from, at);
	}
	len = strlen(c->domain);
	if (len > 0 && c->domain[len - 1] == '.')
		c->domain[len - 1] = '\0';
	str_lower(c->domain);
	c->why[0] = '\0';
	c->state = SPF_CK_RUN;
}

/*
 * Run the checks as far as the answers allow: HELO first (2.3), then
 * MAIL FROM unless HELO failed.  1: all done, m->final set; 0: waiting
 * for answers.
 */
static int
spf_drive(struct fmx_ctx *ctx, struct spf_msg *m)
{
	struct spf_check *c;

	m->busy = 1;
	while (!m->done) {
		if (m->helo_chk.state == SPF_CK_RUN)
			c = &m->helo_chk;
		else if (m->helo_chk.state == SPF_CK_DONE &&
		    m->helo_chk.result == SPF_R_FAIL) {
			m->final = &m->helo_chk;	/* 2.3: conclusive */
			m->done = 1;
			break;
		} else if (m->mail_chk.state == SPF_CK_RUN)
			c = &m->mail_chk;
		else {
			m->final = &m->mail_chk;
			m->done = 1;
			break;
		}
		if (c->passes >= m->inst->max_passes) {
			/* 4.6.4: a bound on the work; like a timeout, temperror */
			c->result = SPF_R_TEMPERROR;
			snprintf(c->why, sizeof c->why, "too many DNS round trips");
			c->state = SPF_CK_DONE;
			continue;
		}
		if (spf_pass_run(m, c)) {
			c->state = SPF_CK_DONE;
			continue;
		}
		spf_issue(ctx, m);
		if (m->outstanding > 0) {
			m->busy = 0;
			return 0;
		}
		/* Answered at once (the resolver's cache, or refused): go on. */
	}
	m->busy = 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* What the check says: result, facts, reply, header fields */

/* RFC 5322 3.2.3 dot-atom. */
static int
spf_dot_atom(const char *s)
{
	size_t	i, n = strlen(s);

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return 0;
			continue;
		}
		if (!isalnum((unsigned char)s[i]) &&
		    strchr("!#$%&'*+-/=?^_`{|}~", s[i]) == NULL)
			return 0;
	}
	return 1;
}

/* A dot-atom as is, anything else as an RFC 5322 quoted-string. */
static void
spf_put_value(struct spf_buf *b, const char *v)
{
	if (spf_dot_atom(v)) {
		spf_buf_puts(b, v);
		return;
	}
	spf_buf_putc(b, '"');
	for (; *v != '\0'; v++) {
		if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
			continue;
		if (*v == '"' || *v == '\\')
			spf_buf_putc(b, '\\');
		spf_buf_putc(b, *v);
	}
	spf_buf_putc(b, '"');
}

/*
 * An Authentication-Results property value (RFC 8601 2.2 pvalue):
 * local-part@domain as is when both are dot-atoms, else quoted.  The
 * core's renderer splits properties at white space, so a value with a
 * blank must arrive quoted.
 */
static void
spf_put_pvalue(struct spf_buf *b, const char *v)
{
	char		 local[SPF_ADDR_MAX];
	const char	*at = strrchr(v, '@');
	size_t		 n;

	if (at != NULL && (n = (size_t)(at - v)) < sizeof local) {
		memcpy(local, v, n);
		local[n] = '\0';
		if ((n == 0 || spf_dot_atom(local)) && spf_dot_atom(at + 1)) {
			spf_buf_puts(b, v);
			return;
		}
	}
	spf_put_value(b, v);
}

/* Append " key=value;" only if it fits whole (RFC 7208 9.1 key-value-pair). */
static void
spf_put_kv(struct spf_buf *b, const char *key, const char *value)
{
	char		item[SPF_HEADER_MAX + 1];
	struct spf_buf	t = { item, sizeof item, 0, 0 };

	spf_buf_putc(&t, ' ');
	spf_buf_puts(&t, key);
	spf_buf_putc(&t, '=');
	spf_put_value(&t, value);
	spf_buf_putc(&t, ';');
	if (!t.over && b->len + t.len < b->cap)
		spf_buf_put(b, item, t.len);
}

/* Comment text: '(' ')' '\' quoted (RFC 5322 3.2.2), controls dropped. */
static void
spf_put_ctext(struct spf_buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			continue;
		if (*s == '(' || *s == ')' || *s == '\\')
			spf_buf_putc(b, '\\');
		spf_buf_putc(b, *s);
	}
}

/* The check's finding in words (the comment of RFC 7208 9.1's examples). */
static void
spf_explain(const struct spf_msg *m, const struct spf_check *c, const char *who,
    char *out, size_t outlen)
{
	switch (c->result) {
	case SPF_R_PASS:
		snprintf(out, outlen, "domain of %s designates %s as permitted sender",
		    who, m->ip);
		break;
	case SPF_R_FAIL:
		snprintf(out, outlen, "domain of %s does not designate %s as "
		    "permitted sender", who, m->ip);
		break;
	case SPF_R_SOFTFAIL:
		snprintf(out, outlen, "domain of transitioning %s does not designate "
		    "%s as permitted sender", who, m->ip);
		break;
	case SPF_R_NEUTRAL:
		snprintf(out, outlen, "%s is neither permitted nor denied by domain "
		    "of %s", m->ip, who);
		break;
	case SPF_R_NONE:
		if (c->why[0] != '\0')
			snprintf(out, outlen, "%s: %s", who, c->why);
		else
			snprintf(out, outlen, "domain of %s does not designate "
			    "permitted sender hosts", who);
		break;
	default:
		snprintf(out, outlen, "error in processing during lookup of %s: %s",
		    who, c->why[0] ? c->why : "unknown error");
		break;
	}
}

static void
spf_publish(struct fmx_ctx *ctx, struct spf_msg *m)
{
	const struct fmx_api	*api = m->inst->api;
	const struct spf_check	*c = m->final;
	const char		*res = spf_result_names[c->result];
	const char		*receiver = api->get(ctx, "hostname");
	int			 helo_id = c->identity == SPF_ID_HELO || m->from[0] == '\0';
	char			 who[SPF_ADDR_MAX + 16], text[1024], reply[1024];
	char			 comment[600];
	struct spf_buf		 b, cb;
	const char		*dom = c->domain[0] != '\0' ? c->domain : "(none)";

	if (receiver == NULL || !spf_printable(receiver))
		receiver = "localhost";
	/* Who the finding is about: the HELO domain, or the sender (its domain when long). */
	if (helo_id)
		snprintf(who, sizeof who, "%s", dom);
	else
		snprintf(who, sizeof who, "%s", strlen(c->sender) <= 128 ? c->sender : dom);
	spf_explain(m, c, who, text, sizeof text);

	api->set_result(ctx, res, text);
	api->set_fact(ctx, "spf.result", res);
	if (c->domain[0] != '\0' && spf_printable(c->domain))
		api->set_fact(ctx, "spf.domain", c->domain);

	/* RFC 7372: 5.7.23 SPF validation failed, x.7.24 SPF validation error. */
	reply[0] = '\0';
	switch (c->result) {
	case SPF_R_FAIL:
	case SPF_R_SOFTFAIL:
		snprintf(reply, sizeof reply, "550 5.7.23 SPF validation failed for "
		    "%s%.253s: %s is not a permitted sender%s%s",
		    helo_id && m->from[0] != '\0' ? "HELO " : "", dom, m->ip,
		    m->inst->explanation[0] ? "; " : "", m->inst->explanation);
		break;
	case SPF_R_PERMERROR:
		snprintf(reply, sizeof reply, "550 5.7.24 SPF validation error for "
		    "%.253s: %.160s", dom, c->why);
		break;
	case SPF_R_TEMPERROR:
		snprintf(reply, sizeof reply, "451 4.7.24 SPF temporary error for "
		    "%.253s: %.160s", dom, c->why);
		break;
	default:
		break;
	}
	if (reply[0] != '\0') {
		reply[500] = '\0';	/* RFC 5321 4.5.3.1.5: 512 with the CRLF */
		if (spf_printable(reply))
			api->set_reply(ctx, reply);
	}

	/* RFC 7208 9.1: result (comment) key=value; ... */
	cb = (struct spf_buf){ comment, sizeof comment, 0, 0 };
	spf_buf_puts(&cb, " (");
	spf_put_ctext(&cb, receiver);
	spf_buf_puts(&cb, ": ");
	spf_put_ctext(&cb, text);
	spf_buf_putc(&cb, ')');
	b = (struct spf_buf){ m->received, sizeof m->received, 0, 0 };
	spf_buf_puts(&b, res);
	if (!cb.over)
		spf_buf_put(&b, comment, cb.len);
	spf_put_kv(&b, "client-ip", m->ip);
	spf_put_kv(&b, "envelope-from", m->from[0] ? m->from : "<>");
	if (m->helo[0] != '\0')
		spf_put_kv(&b, "helo", m->helo);
	spf_put_kv(&b, "receiver", receiver);
	spf_put_kv(&b, "identity", helo_id ? "helo" : "mailfrom");
	if (c->result == SPF_R_PERMERROR || c->result == SPF_R_TEMPERROR)
		spf_put_kv(&b, "problem", c->why);
	if (b.over)
		m->received[0] = '\0';

	/* RFC 8601 2.7.2: smtp.mailfrom, or smtp.helo for the HELO identity. */
	b = (struct spf_buf){ m->ar_props, sizeof m->ar_props, 0, 0 };
	spf_buf_puts(&b, helo_id ? "smtp.helo=" : "smtp.mailfrom=");
	spf_put_pvalue(&b, helo_id ? dom : c->sender);
	if (b.over) {
		b.len = 0;
		b.over = 0;
		spf_buf_puts(&b, helo_id ? "smtp.helo=" : "smtp.mailfrom=");
		spf_put_pvalue(&b, dom);
		if (b.over)
			m->ar_props[0] = '\0';
	}

	api->log(ctx, FMX_LOG_INFO, "spf: identity=%s domain=%.253s result=%s "
	    "passes=%u queries=%u%s%s", helo_id ? "helo" : "mailfrom", dom, res,
	    c->passes, m->queries, c->why[0] ? " problem=" : "", c->why);
	if (c != &m->helo_chk && m->helo_chk.state == SPF_CK_DONE)
		api->log(ctx, FMX_LOG_DEBUG, "spf: identity=helo domain=%.253s result=%s",
		    m->helo_chk.domain, spf_result_names[m->helo_chk.result]);
}

static void
spf_answer_cb(struct fmx_ctx *ctx, void *arg, int rcode, const unsigned char *answer,
    size_t len)
{
	struct spf_entry	*e = arg;
	struct spf_msg		*m = e->m;

	if (e->state != SPF_ST_ASKED)
		return;
	spf_dns_answer(e, rcode, answer, len);
	m->outstanding--;
	spf_prefetch(m, e);
	if (m->busy)
		return;		/* inside spf_issue(): it picks up the rest */
	m->busy = 1;
	spf_issue(ctx, m);
	m->busy = 0;
	if (m->outstanding > 0 || !spf_drive(ctx, m))
		return;
	spf_publish(ctx, m);
	if (m->waiting) {
		m->waiting = 0;
		m->inst->api->resume(ctx, FMX_CONTINUE);
	}
}

/* ------------------------------------------------------------------ */
/* Hooks */

/* The client's address: IPv4, or IPv6 (an IPv4-mapped one is IPv4, RFC 7208 5). */
static int
spf_client(struct spf_msg *m, const char *addr)
{
	char	buf[INET6_ADDRSTRLEN + 8];
	char	*pct;
	size_t	len;

	if (addr == NULL)
		return -1;
	if (str_ncasecmp(addr, "ipv6:", 5) == 0)
		addr += 5;
	if (addr[0] == '[')
		addr++;
	if ((len = strlen(addr)) >= sizeof buf)
		return -1;
	memcpy(buf, addr, len + 1);
	if (len > 0 && buf[len - 1] == ']')
		buf[len - 1] = '\0';
	if ((pct = strchr(buf, '%')) != NULL)
		*pct = '\0';
	if (inet_pton(AF_INET, buf, &m->ip4) == 1)
		m->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, &m->ip6) == 1) {
		m->family = AF_INET6;
		if (IN6_IS_ADDR_V4MAPPED(&m->ip6)) {
			memcpy(&m->ip4, &m->ip6.s6_addr[12], 4);
			m->family = AF_INET;
		}
	} else
		return -1;
	if (m->family == AF_INET)
		inet_ntop(AF_INET, &m->ip4, m->ip, sizeof m->ip);
	else
		inet_ntop(AF_INET6, &m->ip6, m->ip, sizeof m->ip);
	return 0;
}

static enum fmx_verdict
spf_on_mail(void *instance, struct fmx_ctx *ctx, const char *from)
{
	struct spf_inst		*si = instance;
	const struct fmx_api	*api = si->api;
	struct spf_msg		*m;
	const char		*helo = api->get(ctx, "helo");
	unsigned char		 rnd[SPF_NONCE_LEN / 2];
	size_t			 len, i;

	if ((m = calloc(1, sizeof *m)) == NULL) {
		api->set_result(ctx, "temperror", "out of memory");
		return FMX_CONTINUE;
	}
	m->inst = si;
	m->zone_tail = &m->zone;
	api->set_msg_data(ctx, m, spf_msg_free);
	arc4random_buf(rnd, sizeof rnd);
	for (i = 0; i < sizeof rnd; i++)
		snprintf(m->nonce + 2 * i, 3, "%02x", rnd[i]);

	/* The core passes the address without <>; be sure. */
	if (from == NULL)
		from = "";
	len = strlen(from);
	if (len >= 2 && from[0] == '<' && from[len - 1] == '>') {
		from++;
		len -= 2;
	}
	if (len >= sizeof m->from || !spf_printable(from))
		len = 0;
	memcpy(m->from, from, len);
	m->from[len] = '\0';
	if (helo != NULL && strlen(helo) < sizeof m->helo && spf_printable(helo))
		snprintf(m->helo, sizeof m->helo, "%s", helo);
	m->helo_ok = m->helo[0] != '\0' && spf_domain_ok(m->helo);

	if (spf_client(m, api->get(ctx, "client.addr")) == -1) {
		/* No IP address, no check_host() (4.1). */
		snprintf(m->ip, sizeof m->ip, "unknown");
		spf_check_setup(m, &m->mail_chk, SPF_ID_MAILFROM);
		m->mail_chk.state = SPF_CK_DONE;
		m->mail_chk.result = SPF_R_NONE;
		snprintf(m->mail_chk.why, sizeof m->mail_chk.why,
		    "client address unknown");
		m->final = &m->mail_chk;
		m->done = 1;
		spf_publish(ctx, m);
		return FMX_CONTINUE;
	}
	if (si->helo && m->from[0] != '\0')
		spf_check_setup(m, &m->helo_chk, SPF_ID_HELO);
	if (m->helo_chk.state == SPF_CK_DONE)
		m->helo_chk.state = SPF_CK_OFF;	/* an unusable HELO is simply not checked */
	spf_check_setup(m, &m->mail_chk, SPF_ID_MAILFROM);

	if (spf_drive(ctx, m)) {
		spf_publish(ctx, m);
		return FMX_CONTINUE;
	}
	m->waiting = 1;
	return FMX_PENDING;
}

static enum fmx_verdict
spf_on_eom(void *instance, struct fmx_ctx *ctx)
{
	struct spf_inst		*si = instance;
	const struct fmx_api	*api = si->api;
	struct spf_msg		*m = api->msg_data(ctx);

	if (m == NULL || !m->done || m->final == NULL)
		return FMX_CONTINUE;
	/*
	 * RFC 7208 9.1: prepended, above every other Received-SPF (one the
	 * client wrote must not pass for ours); add_header would append it.
	 */
	if (m->received[0] != '\0')
		api->insert_header(ctx, 0, "Received-SPF", m->received);
	api->add_auth_result(ctx, "spf", spf_result_names[m->final->result],
	    m->ar_props[0] ? m->ar_props : NULL);
	return FMX_CONTINUE;
}

/* ------------------------------------------------------------------ */
/* Instances */

static void
spf_fini(void *instance)
{
	struct spf_inst *si = instance;

	if (si == NULL)
		return;
	if (si->server != NULL)
		SPF_server_free(si->server);	/* leaves our static layer alone */
	free(si);
}

static int
spf_init(const struct fmx_api *api, const char *const *options, size_t noptions,
    void **instance)
{
	static const char *const known[] = { "helo", "max_passes", "explanation",
	    NULL };
	struct spf_inst	*si;
	SPF_response_t	*resp = NULL;
	const char	*expl = "";
	unsigned long long n = SPF_PASSES_DEFAULT;

	pthread_once(&spf_once, spf_global_init);
	if ((si = calloc(1, sizeof *si)) == NULL)
		return -1;
	si->api = api;
	si->helo = 1;
	/* The getters every module has (API 1.2): the core names a bad value. */
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_bool(options, noptions, "helo", &si->helo) == -1 ||
	    api->option_uint(options, noptions, "max_passes", 1, SPF_PASSES_LIMIT,
	    &n) == -1 ||
	    api->option_string(options, noptions, "explanation", &expl) == -1)
		goto bad;
	si->max_passes = (unsigned)n;
	if (strlen(expl) > SPF_EXPLANATION_MAX || !spf_printable(expl))
		goto bad;
	snprintf(si->explanation, sizeof si->explanation, "%s", expl);
	if ((si->server = SPF_server_new_dns(&spf_dns_layer, 0)) == NULL) {
		api->log(NULL, FMX_LOG_WARN, "spf: cannot create the libspf2 server");
		spf_fini(si);
		return -1;
	}
	/* Never libspf2's default text, which points at the defunct openspf.org. */
	if (SPF_server_set_explanation(si->server, "SPF check failed", &resp) !=
	    SPF_E_SUCCESS) {
		if (resp != NULL)
			SPF_response_free(resp);
		spf_fini(si);
		return -1;
	}
	if (resp != NULL)
		SPF_response_free(resp);
	/* 4.6.4; our layer counts across includes, these bound libspf2's own loops. */
	SPF_server_set_max_dns_mech(si->server, SPF_TERMS_MAX);
	SPF_server_set_max_dns_mx(si->server, SPF_NAMES_MAX);
	SPF_server_set_max_dns_ptr(si->server, SPF_NAMES_MAX);
	*instance = si;
	return 0;
bad:
	api->log(NULL, FMX_LOG_WARN, "spf: invalid options (known: helo = "
	    "boolean, max_passes = 1..%d, explanation = text of at most %d "
	    "printable characters)", SPF_PASSES_LIMIT, SPF_EXPLANATION_MAX);
	spf_fini(si);
	return -1;
}

static const struct fmx_filter spf_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "spf",
	.init = spf_init,
	.fini = spf_fini,
	.on_mail = spf_on_mail,
	.on_eom = spf_on_eom,
};

const struct fmx_filter *
spf_filter(void)
{
	return &spf_table;
}
