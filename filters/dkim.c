/*
 * dkim.c - the built-in DKIM filter: verification of every message and
 * signing of mail from trusted clients, on libopendkim
 *
 * NAME
 *	dkim_filter - DomainKeys Identified Mail (RFC 6376, RFC 8301,
 *	RFC 8463) for frontmx
 *
 * SYNOPSIS
 *	filters = ( { name = "dkim";
 *	              options = { max_signatures = 5;
 *	                          sign = "example.com:sel1:/etc/frontmx/rsa.pem,
 *	                                  example.com:ed1:/etc/frontmx/ed.pem";
 *	                          trusted = "127.0.0.0/8, ::1"; }; } );
 *	policy = { default = { dkim = { fail = "tag"; temperror = "tempfail"; }; }; };
 *
 * DESCRIPTION
 *	Verification.  Header fields arrive in on_header (the core drops the
 *	one space after the colon, milter style; the field is rebuilt as
 *	"Name: value" with its folds), the body in on_body, and libopendkim
 *	hashes both as they come.  Public keys are fetched inside dkim_eoh(),
 *	which is re-entrant (notes/LIBRARIES.md 2): the prescreen callback
 *	starts one TXT query per distinct <s>._domainkey.<d> through
 *	api->dns_query() for all signatures at once, the key callback answers
 *	from this message's key cache or says DKIM_CBSTAT_TRYAGAIN, on_eoh
 *	returns FMX_PENDING, and the last DNS answer calls dkim_eoh() again
 *	and then api->resume().  libopendkim's own resolver is never used
 *	(it blocks), and DKIM_LIBFLAGS_DELAYSIGPROC is not set (it moves the
 *	key fetch into dkim_eom(), which cannot be re-entered).
 *
 *	Exact bytes.  A signature with simple header canonicalization covers
 *	the field exactly as sent, and "Name:value" or "Name:\tvalue" cannot
 *	be told from "Name: value" in on_header.  So when no signature passed
 *	and one of the failures used c=simple/..., the message is verified a
 *	second time at eom from the spool (api->msg_read(), the bytes as
 *	received), with the keys already in the cache: no DNS, no wait.
 *
 * RESULTS
 *	Per signature (one Authentication-Results "dkim" entry each, with
 *	header.d, header.s, header.a and header.b, the first 8 characters of
 *	b=, RFC 6008):
 *	    pass	verified: signature and body hash match
 *	    fail	signature or body hash mismatch; rsa-sha1 (RFC 8301
 *			3.1); an RSA key shorter than min_key_bits (RFC 8301
 *			3.2, default 1024); l= larger than the body
 *	    policy	verified, but l= covers only part of the body: text
 *			appended after the signed part is unauthenticated
 *			(RFC 6376 8.2), so it does not count as a pass
 *	    temperror	the key lookup failed (SERVFAIL, timeout, no resolver)
 *	    permerror	no key (NXDOMAIN, no TXT record), a bad or revoked key
 *			record, a signature with bad syntax, missing tags, an
 *			expired or future t=/x=
 *	Per message (api->set_result(), which the policy's dkim group maps to
 *	an action): pass if a signature passed, else temperror if a lookup
 *	failed (a retry may pass), else neutral if only partial (l=)
 *	signatures verified, else fail, else permerror; none when there is
 *	no DKIM-Signature field.  Facts for DMARC: "dkim.pass" (the d=
 *	domains that passed, space separated, lower case) and "dkim.result".
 *	At most max_signatures signatures (default 5) are verified, in header
 *	order; signatures that need no DNS (bad syntax, rsa-sha1) do not use
 *	up the budget, and the rest are ignored (RFC 6376 6.1, SECURITY.md 4).
 *	Reported entries are capped the same way.
 *
 * SIGNING
 *	A message is signed when the client is trusted (its address is in
 *	`trusted`, or it authenticated and sign_authenticated is on) and the
 *	one mailbox of its one From field has a domain listed in `sign`
 *	(exact match, case-insensitive).  Every key of that domain signs, so
 *	an RSA and an Ed25519 key give the dual signature RFC 8463 suggests.
 *	The signer reads the message back from the spool at eom (exact
 *	bytes), with dkim_set_margin(0) so the DKIM-Signature value is one
 *	line: the core takes values without CR/LF.  Only relaxed header
 *	canonicalization is accepted for signing: the core may refold a long
 *	field, which relaxed tolerates and simple does not.
 *	Mail that we sign is not verified as well: it is our own outbound
 *	mail, and a tag (Subject prefix) from an old broken signature would
 *	invalidate the new one.  The fact "dkim.signed" names the domain.
 *	The signer sees the message as received (api->msg_read() is "before
 *	any edit"): a signed field or the body changed by another filter
 *	(change_header, replace_body, tag.subject_prefix) breaks the
 *	signature, whatever the chain order; added fields that are not in
 *	sign_headers do not.  When signing fails the result is "sign_error"
 *	and the verdict tempfail (451), unless the policy maps sign_error
 *	otherwise (sign_error = "accept" relays unsigned).
 *
 * OPTIONS
 *	max_signatures	1..50, default 5
 *	min_key_bits	RSA keys below this fail: 1024..4096, default 1024
 *	verify		boolean, default true (false: a signing-only instance)
 *	sign		"domain:selector:/path/key.pem, ..." PEM private keys,
 *			RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8), told apart
 *			by trying them; checked by a test signature at start
 *	trusted		client networks whose mail is signed, "a/n, b/n";
 *			default none
 *	sign_authenticated  boolean, default true: authenticated sessions
 *			(fact "auth") are trusted too
 *	sign_headers	colon-separated field names to sign; a name listed
 *			twice is oversigned (one more h= entry than fields, so
 *			no field of that name can be added).  Default
 *			DKIM_SIGN_HEADERS_DEFAULT below: From oversigned.
 *	canon		"relaxed/relaxed" (default), "relaxed/simple" or
 *			"relaxed" (= relaxed/simple, RFC 6376 3.5)
 *
 * LIMITS
 *	The core refuses header values over 900 octets: a key whose test
 *	signature does not fit (RSA over about 3072 bits with the default
 *	sign_headers) is refused at start.  Key records over 1024 octets
 *	(libopendkim's buffer) are a permerror.  Keys over 4096 bits do
 *	not fit in that record anyway.
 *
 * THREADING
 *	One DKIM_LIB per configured instance, shared by every worker: it is
 *	read-only after init, and every message has its own DKIM handles,
 *	key cache and state (api->set_msg_data()).  The callbacks find the
 *	message through dkim_get_user_context().
 *
 * DIAGNOSTICS
 *	Log lines start with "dkim:" and are key=value; one INFO line per
 *	message with the result of each signature.
 *
 * FILES
 *	dkim.c		this filter: options, instances, per-message state,
 *			the hooks, verification and its results, reading
 *			the message back from the spool.
 *	dkim_sign.c	signing: trusted clients, the From domain, the
 *			signing keys (loading, test signature), signing a
 *			message from the spool.
 *	dkim_dns.c	key records: TXT answer parsing, the per-message
 *			key cache and the libopendkim key callbacks.
 *	dkim_int.h	types and limits shared by the three.
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

#include "dkim.h"
#include "dkim_int.h"
#include "strutil.h"

static const char *const dkim_res_sig[DKIM_RES_COUNT] = {
	[DKIM_RES_NONE] = "none",
	[DKIM_RES_PERMERROR] = "permerror",
	[DKIM_RES_FAIL] = "fail",
	[DKIM_RES_POLICY] = "policy",
	[DKIM_RES_TEMPERROR] = "temperror",
	[DKIM_RES_PASS] = "pass",
};

static const char *const dkim_res_msg[DKIM_RES_COUNT] = {
	[DKIM_RES_NONE] = "none",
	[DKIM_RES_PERMERROR] = "permerror",
	[DKIM_RES_FAIL] = "fail",
	[DKIM_RES_POLICY] = "neutral",
	[DKIM_RES_TEMPERROR] = "temperror",
	[DKIM_RES_PASS] = "pass",
};

/* ---------------------------------------------------------------- */
/* Small helpers */

int
dkim_is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* s, with surrounding blanks removed, copied into dst; -1 if it does not fit. */
int
dkim_trim_copy(char *dst, size_t dstlen, const char *s, size_t len)
{
	while (len > 0 && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	if (len >= dstlen)
		return -1;
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/*
 * A domain or selector as DNS allows it: labels of letters, digits, '-'
 * and '_' (selectors and _domainkey use it), 1..63 octets each.  d= and
 * s= come from the sender; nothing else reaches the resolver or the
 * Authentication-Results field.
 */
int
dkim_name_ok(const char *s)
{
	size_t len = 0, label = 0;

	if (s == NULL || *s == '\0')
		return 0;
	for (; *s != '\0'; s++, len++) {
		if (*s == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
			return 0;
		if (++label > DKIM_LABEL_MAX)
			return 0;
	}
	return label > 0 && len <= DKIM_NAME_MAX;
}

/* snprintf for text where a cut is fine (reasons, log lines). */
__attribute__((format(printf, 3, 4)))
static void
dkim_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* Field name equality, blanks before the colon allowed (obsolete "Name :"). */
static int
dkim_field_is(const char *name, const char *want)
{
	size_t n = strlen(want);

	if (str_ncasecmp(name, want, n) != 0)
		return 0;
	for (name += n; *name != '\0'; name++)
		if (!dkim_is_wsp(*name))
			return 0;
	return 1;
}

/*
 * dkim_eoh() until it stops asking for keys.  1: done (eoh_stat set),
 * 0: waiting for DNS.  It also waits while queries are outstanding after
 * dkim_eoh() finished, so that no answer can outlive the message state
 * it points to.
 */
int
dkim_drive_eoh(struct dkim_msg *m)
{
	unsigned round;

	for (round = 0; !m->eoh_done && round < DKIM_EOH_ROUNDS; round++) {
		m->in_eoh = 1;
		m->eoh_stat = dkim_eoh(m->vd);
		m->in_eoh = 0;
		if (m->eoh_stat != DKIM_STAT_CBTRYAGAIN)
			m->eoh_done = 1;
		else if (m->outstanding > 0)
			return 0;
	}
	if (!m->eoh_done) {
		/* The key callback kept asking for what it has: give up. */
		m->eoh_stat = DKIM_STAT_INTERNAL;
		m->eoh_done = 1;
	}
	return m->outstanding == 0;
}

/* ---------------------------------------------------------------- */
/* Body length for l= */

static void
dkim_blen_feed(struct dkim_blen *b, int relaxed, const unsigned char *p,
    size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (c == '\r')
			continue;	/* the core passes CRLF pairs only */
		if (c == '\n') {
			/* relaxed drops trailing blanks: b->wsp is forgotten */
			if (b->line == 0)
				b->blank += 2;
			else {
				b->done += b->blank + b->line + 2;
				b->blank = 0;
			}
			b->line = 0;
			b->wsp = 0;
			continue;
		}
		if (relaxed && dkim_is_wsp(c)) {
			b->wsp = 1;
			continue;
		}
		if (b->wsp) {
			b->line++;	/* a run of blanks is one SP */
			b->wsp = 0;
		}
		b->line++;
	}
}

static uint64_t
dkim_blen_total(const struct dkim_blen *b, int relaxed)
{
	uint64_t n = b->done;

	/* A last line without CRLF gets one (the core always ends with CRLF). */
	if (b->line > 0)
		n += b->blank + b->line + 2;
	if (n == 0 && !relaxed)
		n = 2;		/* simple: an empty body is one CRLF */
	return n;
}

/* ---------------------------------------------------------------- */
/* Reading the message back from the spool */

static int
dkim_rd_fill(struct dkim_reader *r)
{
	long n;

	if (r->pos < r->len)
		return 1;
	if (r->eof)
		return 0;
	n = r->api->msg_read(r->ctx, r->off, r->buf, sizeof r->buf);
	if (n < 0 || (size_t)n > sizeof r->buf)
		return -1;
	if (n == 0) {
		r->eof = 1;
		return 0;
	}
	r->off += (size_t)n;
	r->pos = 0;
	r->len = (size_t)n;
	return 1;
}

/*
 * One line with its CRLF into r->line: 1 (a last line may lack it), 0 at
 * the end, -1 error (out of memory, or over DKIM_LINE_MAX).
 */
static int
dkim_rd_line(struct dkim_reader *r, size_t *lenp)
{
	const unsigned char *nl;
	size_t len = 0, n;
	int rc;

	for (;;) {
		if ((rc = dkim_rd_fill(r)) <= 0) {
			if (rc < 0)
				return -1;
			*lenp = len;
			return len > 0;
		}
		nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
		n = nl != NULL ? (size_t)(nl - (r->buf + r->pos)) + 1 : r->len - r->pos;
		/* Over DKIM_LINE_MAX is an error here: the signature needs it all. */
		if (linebuf_reserve(&r->line, len + n, DKIM_LINE_START,
		    DKIM_LINE_MAX) == -1)
			return -1;
		memcpy(r->line.p + len, r->buf + r->pos, n);
		len += n;
		r->pos += n;
		if (nl != NULL) {
			*lenp = len;
			return 1;
		}
	}
}

void
dkim_reader_free(struct dkim_reader *r)
{
	if (r != NULL)
		linebuf_free(&r->line);
	free(r);
}

/* Where the core starts a header field (smtp_session.c): name, blanks, ':'. */
static int
dkim_field_start(const char *line, size_t len)
{
	size_t i, name = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c == ':')
			return name > 0;
		if (c == ' ' || c == '\t') {
			if (name == 0)
				return 0;
			continue;
		}
		if (c < 33 || c > 126 || i > name)
			return 0;
		name++;
	}
	return 0;
}

static int
dkim_feed_field(DKIM **h, size_t n, char *field, size_t len)
{
	size_t i;

	if (len >= 2 && field[len - 2] == '\r' && field[len - 1] == '\n')
		len -= 2;
	if (len == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (h[i] != NULL)
			(void)dkim_header(h[i], (u_char *)field, len);
	return 0;
}

/*
 * The header block from the spool, field by field, to every handle.  It
 * ends where the core's ends: at the empty line (consumed), or at the
 * first line that is no header field (left in r->line, its length in
 * *pendlen: the first body line).  0 ok, -1 error.
 */
int
dkim_spool_head(struct dkim_reader *r, DKIM **h, size_t n, size_t *nfields,
    size_t *pendlen)
{
	char *field = NULL, *nf, *line;
	size_t flen = 0, fcap = 0, len;
	int rc;

	*nfields = 0;
	*pendlen = 0;
	for (;;) {
		if ((rc = dkim_rd_line(r, &len)) < 0)
			goto fail;
		line = r->line.p;
		if (rc == 0)
			break;
		if (len == 2 && line[0] == '\r' && line[1] == '\n')
			break;
		if (dkim_is_wsp(line[0]) && flen == 0) {
			*pendlen = len;		/* a fold with nothing to fold */
			break;
		}
		if (!dkim_is_wsp(line[0])) {
			if (!dkim_field_start(line, len)) {
				*pendlen = len;
				break;
			}
			if (flen > 0) {
				dkim_feed_field(h, n, field, flen);
				(*nfields)++;
			}
			flen = 0;
		}
		if (flen + len > DKIM_FIELD_MAX)
			goto fail;
		if (flen + len > fcap) {
			fcap = flen + len > 2 * fcap ? flen + len : 2 * fcap;
			if ((nf = realloc(field, fcap)) == NULL)
				goto fail;
			field = nf;
		}
		memcpy(field + flen, line, len);
		flen += len;
	}
	if (flen > 0) {
		dkim_feed_field(h, n, field, flen);
		(*nfields)++;
	}
	free(field);
	return 0;
fail:
	free(field);
	return -1;
}

/* The rest of the message to every handle that wants a body; -1 error. */
int
dkim_spool_body(struct dkim_reader *r, DKIM **h, const int *want, size_t n,
    size_t pendlen, uint64_t *total)
{
	size_t i;
	int rc;

	*total = 0;
	if (pendlen > 0) {
		for (i = 0; i < n; i++)
			if (want[i] && dkim_body(h[i], (u_char *)r->line.p, pendlen) !=
			    DKIM_STAT_OK)
				return -1;
		*total += pendlen;
	}
	while ((rc = dkim_rd_fill(r)) > 0) {
		for (i = 0; i < n; i++)
			if (want[i] && dkim_body(h[i], r->buf + r->pos,
			    r->len - r->pos) != DKIM_STAT_OK)
				return -1;
		*total += r->len - r->pos;
		r->pos = r->len;
	}
	return rc;
}

/* ---------------------------------------------------------------- */
/* Per message state */

static void
dkim_msg_free(void *arg)
{
	struct dkim_msg *m = arg;
	size_t i;

	if (m == NULL)
		return;
	if (m->vd != NULL)
		dkim_free(m->vd);
	for (i = 0; i < m->nkeys; i++)
		free(m->keys[i].txt);
	free(m->keys);
	free(m);
}

static DKIM *
dkim_verifier_new(struct dkim_msg *m)
{
	DKIM_STAT st;
	DKIM *d;

	d = dkim_verify(m->di->lib, (u_char *)m->id, NULL, &st);
	if (d == NULL)
		return NULL;
	if (dkim_set_user_context(d, m) != DKIM_STAT_OK) {
		dkim_free(d);
		return NULL;
	}
	return d;
}

static struct dkim_msg *
dkim_msg_get(const struct dkim_inst *di, struct fmx_ctx *ctx)
{
	struct dkim_msg *m;
	const char *id;

	if ((m = di->api->msg_data(ctx)) != NULL)
		return m;
	if ((m = calloc(1, sizeof *m)) == NULL)
		return NULL;
	m->di = di;
	m->eoh_stat = DKIM_STAT_INVALID;	/* dkim_eoh() not run (yet) */
	if ((id = di->api->get(ctx, "queue.id")) == NULL &&
	    (id = di->api->get(ctx, "session.id")) == NULL)
		id = "frontmx";
	snprintf(m->id, sizeof m->id, "%s", id);
	if (di->verify && (m->vd = dkim_verifier_new(m)) == NULL)
		m->internal = 1;
	di->api->set_msg_data(ctx, m, dkim_msg_free);
	return m;
}

/* ---------------------------------------------------------------- */
/* Verification results */

static const char *
dkim_nokey_why(struct dkim_msg *m, DKIM_SIGINFO *sig, enum dkim_res *res)
{
	char name[DKIM_NAME_MAX + 1];
	struct dkim_keyent *e;

	if (dkim_dns_key_name(sig, name, sizeof name) == -1) {
		*res = DKIM_RES_PERMERROR;
		return "d= or s= is not a domain name";
	}
	if ((e = dkim_dns_key_find(m, name)) == NULL) {
		*res = DKIM_RES_TEMPERROR;
		return "key not looked up";
	}
	switch (e->state) {
	case DKIM_KEY_NONE:
		*res = DKIM_RES_PERMERROR;
		return "no key";
	case DKIM_KEY_BADREC:
		*res = DKIM_RES_PERMERROR;
		return "unusable key record";
	case DKIM_KEY_FOUND:
		*res = DKIM_RES_PERMERROR;
		return "key record too long";
	default:
		*res = DKIM_RES_TEMPERROR;
		return "key lookup failed";
	}
}

/* One signature after dkim_eom(); 0 when it is not reported (over the cap). */
static int
dkim_sig_result(struct dkim_msg *m, DKIM *d, DKIM_SIGINFO *sig,
    struct dkim_sigres *r)
{
	const struct dkim_inst *di = m->di;
	unsigned flags = dkim_sig_getflags(sig), bits = 0;
	int err = dkim_sig_geterror(sig);
	dkim_canon_t hc = DKIM_CANON_UNKNOWN, bc = DKIM_CANON_UNKNOWN;
	dkim_alg_t alg = DKIM_SIGN_UNKNOWN;
	ssize_t signlen = -1;
	const char *v;
	size_t i, j;

	memset(r, 0, sizeof *r);
	(void)dkim_sig_getsignalg(sig, &alg);
	(void)dkim_sig_getcanons(sig, &hc, &bc);
	if (flags & DKIM_SIGFLAG_IGNORE) {
		if (err != DKIM_SIGERROR_UNKNOWN || alg != DKIM_SIGN_RSASHA1)
			return 0;	/* over max_signatures */
		r->res = DKIM_RES_FAIL;
		r->why = "rsa-sha1 is not accepted (RFC 8301)";
	} else if ((flags & DKIM_SIGFLAG_PASSED) &&
	    dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH &&
	    (err == DKIM_SIGERROR_OK || err == DKIM_SIGERROR_UNKNOWN)) {
		r->res = DKIM_RES_PASS;
		r->why = "verified";
		if (alg != DKIM_SIGN_ED25519SHA256 &&
		    (dkim_sig_getkeysize(sig, &bits) != DKIM_STAT_OK ||
		    bits < di->min_bits)) {
			r->res = DKIM_RES_FAIL;
			r->why = "RSA key shorter than min_key_bits (RFC 8301)";
		} else if (dkim_sig_getcanonlen(d, sig, NULL, NULL, &signlen) ==
		    DKIM_STAT_OK && signlen >= 0 &&
		    (bc == DKIM_CANON_SIMPLE || bc == DKIM_CANON_RELAXED) &&
		    (uint64_t)signlen < dkim_blen_total(&m->blen[bc],
		    bc == DKIM_CANON_RELAXED)) {
			r->res = DKIM_RES_POLICY;
			r->why = "l= leaves part of the body unsigned";
		}
	} else {
		switch (err) {
		case DKIM_SIGERROR_BADSIG:
			r->res = DKIM_RES_FAIL;
			r->why = (flags & DKIM_SIGFLAG_PASSED) ?
			    "body hash mismatch" : "signature mismatch";
			break;
		case DKIM_SIGERROR_KEYTOOSMALL:
			r->res = DKIM_RES_FAIL;
			r->why = "RSA key shorter than min_key_bits (RFC 8301)";
			break;
		case DKIM_SIGERROR_TOOLARGE_L:
			r->res = DKIM_RES_FAIL;
			r->why = "l= is larger than the body";
			break;
		case DKIM_SIGERROR_NOKEY:
		case DKIM_SIGERROR_KEYFAIL:
			r->why = dkim_nokey_why(m, sig, &r->res);
			break;
		case DKIM_SIGERROR_KEYREVOKED:
			r->res = DKIM_RES_PERMERROR;
			r->why = "key revoked";
			break;
		case DKIM_SIGERROR_UNKNOWN:
			/* never processed: dkim_eoh() stopped early */
			r->res = DKIM_RES_TEMPERROR;
			r->why = "not verified";
			break;
		default:
			r->res = DKIM_RES_PERMERROR;
			r->why = dkim_sig_geterrorstr(err);
			if (r->why == NULL)
				r->why = "unusable signature";
			break;
		}
	}
	r->simplehdr = hc == DKIM_CANON_SIMPLE;
	if ((v = (const char *)dkim_sig_getdomain(sig)) != NULL && dkim_name_ok(v)) {
		snprintf(r->d, sizeof r->d, "%s", v);
		str_lower(r->d);
	}
	if ((v = (const char *)dkim_sig_getselector(sig)) != NULL && dkim_name_ok(v))
		snprintf(r->s, sizeof r->s, "%s", v);
	if ((v = (const char *)dkim_sig_getalgorithm(sig)) != NULL &&
	    strlen(v) < sizeof r->a) {
		for (i = 0; v[i] != '\0'; i++)
			if (!isalnum((unsigned char)v[i]) && v[i] != '-')
				break;
		if (v[i] == '\0')
			snprintf(r->a, sizeof r->a, "%s", v);
	}
	/* RFC 6008: the first 8 characters of b=, blanks (FWS) skipped */
	if ((v = (const char *)dkim_sig_gettagvalue(sig, 0, (u_char *)"b")) != NULL) {
		for (i = j = 0; v[i] != '\0' && j < 8; i++)
			if (isalnum((unsigned char)v[i]) || v[i] == '+' || v[i] == '/')
				r->b[j++] = v[i];
		r->b[j] = '\0';
	}
	return 1;
}

static void
dkim_outcome_add(struct dkim_outcome *o, const struct dkim_sigres *r,
    size_t cap)
{
	size_t dl = strlen(r->d), pl = strlen(o->pass);

	o->nsigs++;
	if (r->res > o->res) {
		o->res = r->res;
		o->why = r->why;
	}
	if (r->res == DKIM_RES_PASS) {
		o->npass++;
		/* dkim.pass: each d= once */
		if (dl > 0) {
			const char *p = o->pass;
			int dup = 0;

			while (*p != '\0') {
				size_t wl = strcspn(p, " ");

				if (wl == dl && strncmp(p, r->d, dl) == 0)
					dup = 1;
				p += wl;
				while (*p == ' ')
					p++;
			}
			if (!dup && pl + dl + 2 <= sizeof o->pass)
				snprintf(o->pass + pl, sizeof o->pass - pl, "%s%s",
				    pl ? " " : "", r->d);
		}
	}
	if (r->res != DKIM_RES_PASS && r->simplehdr)
		o->simple_fail = 1;
	if (o->nrep < cap)
		o->rep[o->nrep++] = *r;
}

/* The results of a verifier after dkim_eom() (or an early end). */
static void
dkim_collect(struct dkim_msg *m, DKIM *d, DKIM_STAT eoh, struct dkim_outcome *o)
{
	DKIM_SIGINFO **sigs = NULL;
	struct dkim_sigres r;
	int nsigs = 0, i;

	memset(o, 0, sizeof *o);
	o->res = DKIM_RES_NONE;
	if (d != NULL && dkim_getsiglist(d, &sigs, &nsigs) != DKIM_STAT_OK)
		nsigs = 0;
	for (i = 0; i < nsigs; i++)
		if (dkim_sig_result(m, d, sigs[i], &r))
			dkim_outcome_add(o, &r, m->di->max_sigs);
	if (o->nsigs == 0 && m->nsigfields > 0) {
		/* Fields were there but no signature came out of them. */
		memset(&r, 0, sizeof r);
		if (m->internal || (eoh != DKIM_STAT_OK && eoh != DKIM_STAT_NOSIG &&
		    eoh != DKIM_STAT_SYNTAX)) {
			r.res = DKIM_RES_TEMPERROR;
			r.why = "internal error";
		} else {
			r.res = DKIM_RES_PERMERROR;
			r.why = "unusable DKIM-Signature field";
		}
		dkim_outcome_add(o, &r, m->di->max_sigs);
	}
	if (o->res == DKIM_RES_NONE)
		o->why = "no signature";
}

/*
 * The second pass at eom: the message as received, from the spool, into
 * a fresh verifier; keys from the cache.  0 done (o filled), -1 not
 * possible (the first pass stands).
 */
static int
dkim_verify_exact(struct dkim_msg *m, struct fmx_ctx *ctx, struct dkim_outcome *o)
{
	const struct fmx_api *api = m->di->api;
	struct dkim_reader *r = NULL;
	size_t nfields, pendlen;
	uint64_t total;
	DKIM *h[1];
	DKIM_STAT st;
	int want[1] = { 1 }, ret = -1;

	if ((h[0] = dkim_verifier_new(m)) == NULL ||
	    (r = calloc(1, sizeof *r)) == NULL)
		goto out;
	r->api = api;
	r->ctx = ctx;
	m->no_fetch = 1;
	if (dkim_spool_head(r, h, 1, &nfields, &pendlen) == -1 ||
	    nfields != m->nfields)
		goto out;
	m->in_eoh = 1;
	st = dkim_eoh(h[0]);
	m->in_eoh = 0;
	if (st != DKIM_STAT_OK && st != DKIM_STAT_NOSIG)
		goto out;
	want[0] = st == DKIM_STAT_OK;
	if (dkim_spool_body(r, h, want, 1, pendlen, &total) != 0 ||
	    total != m->bodylen)
		goto out;
	if (want[0])
		(void)dkim_eom(h[0], NULL);
	dkim_collect(m, h[0], st, o);
	ret = 0;
out:
	if (ret == -1)
		api->log(ctx, FMX_LOG_INFO, "dkim: exact re-check not possible; "
		    "first pass stands");
	m->no_fetch = 0;
	if (h[0] != NULL)
		dkim_free(h[0]);
	dkim_reader_free(r);
	return ret;
}

static void
dkim_report(struct dkim_msg *m, struct fmx_ctx *ctx, const struct dkim_outcome *o)
{
	const struct fmx_api *api = m->di->api;
	char props[DKIM_PROPS_MAX], reason[DKIM_REASON_MAX], log[DKIM_LOG_MAX];
	size_t i, ll;
	int n;

	if (o->nsigs == 0)
		(void)api->add_auth_result(ctx, "dkim", dkim_res_sig[o->res], NULL);
	ll = 0;
	log[0] = '\0';
	for (i = 0; i < o->nrep; i++) {
		const struct dkim_sigres *r = &o->rep[i];

		props[0] = '\0';
		if (r->d[0] != '\0') {
			n = snprintf(props, sizeof props, "header.d=%s%s%s%s%s%s%s",
			    r->d, r->s[0] ? " header.s=" : "", r->s,
			    r->a[0] ? " header.a=" : "", r->a,
			    r->b[0] ? " header.b=" : "", r->b);
			/* a long d= and s=: d= alone, or nothing */
			if (n < 0 || (size_t)n >= sizeof props)
				n = snprintf(props, sizeof props, "header.d=%s", r->d);
			if (n < 0 || (size_t)n >= sizeof props)
				props[0] = '\0';
		}
		if (api->add_auth_result(ctx, "dkim", dkim_res_sig[r->res],
		    props[0] ? props : NULL) == -1)
			api->log(ctx, FMX_LOG_WARN, "dkim: Authentication-Results "
			    "entry refused (too many results)");
		if (ll < sizeof log) {
			n = snprintf(log + ll, sizeof log - ll, " sig%zu=%s d=%s s=%s "
			    "a=%s why=\"%s\"", i + 1, dkim_res_sig[r->res],
			    r->d[0] ? r->d : "-", r->s[0] ? r->s : "-",
			    r->a[0] ? r->a : "-", r->why ? r->why : "");
			ll = n > 0 ? ll + (size_t)n : sizeof log;
		}
	}
	if (o->res == DKIM_RES_PASS)
		dkim_fmt(reason, sizeof reason, "%zu of %zu signature(s) verified: %s",
		    o->npass, o->nsigs, o->pass);
	else if (o->res == DKIM_RES_NONE)
		dkim_fmt(reason, sizeof reason, "message not signed");
	else
		dkim_fmt(reason, sizeof reason, "%zu signature(s), none verified: %s",
		    o->nsigs, o->why ? o->why : "");
	if (o->npass > 0)
		(void)api->set_fact(ctx, "dkim.pass", o->pass);
	(void)api->set_fact(ctx, "dkim.result", dkim_res_msg[o->res]);
	if (api->set_result(ctx, dkim_res_msg[o->res], reason) == -1)
		api->log(ctx, FMX_LOG_WARN, "dkim: result refused");
	api->log(ctx, FMX_LOG_INFO, "dkim: result=%s signatures=%zu%s%s",
	    dkim_res_msg[o->res], o->nsigs, log,
	    o->nsigs > o->nrep ? " (more not listed)" : "");
}

/* ---------------------------------------------------------------- */
/* Hooks */

static enum fmx_verdict
dkim_on_header(void *inst, struct fmx_ctx *ctx, const char *name,
    const char *value)
{
	const struct dkim_inst *di = inst;
	struct dkim_msg *m;
	size_t nl, vl;
	char *f;

	if ((m = dkim_msg_get(di, ctx)) == NULL)
		return FMX_CONTINUE;	/* reported at eom as temperror */
	if (value == NULL)
		value = "";
	m->nfields++;
	if (dkim_field_is(name, "DKIM-Signature"))
		m->nsigfields++;
	if (dkim_field_is(name, "From")) {
		/*
		 * "From :" (obsolete syntax) is no From field to dkimpy or
		 * OpenDKIM: a signature over it would not verify there.
		 */
		if (m->nfrom++ > 0 || str_casecmp(name, "From") != 0 ||
		    dkim_sign_from_domain(value, m->from_domain,
		    sizeof m->from_domain) == -1)
			m->from_bad = 1;
	}
	if (m->vd == NULL)
		return FMX_CONTINUE;
	/* "Name: value" again: the core dropped the one space (milter style). */
	nl = strlen(name);
	vl = strlen(value);
	if ((f = malloc(nl + vl + 3)) == NULL) {
		m->internal = 1;
		return FMX_CONTINUE;
	}
	memcpy(f, name, nl);
	memcpy(f + nl, ": ", 2);
	memcpy(f + nl + 2, value, vl + 1);
	/* A field libopendkim finds malformed is simply not hashed. */
	(void)dkim_header(m->vd, (u_char *)f, nl + 2 + vl);
	free(f);
	return FMX_CONTINUE;
}

static enum fmx_verdict
dkim_on_eoh(void *inst, struct fmx_ctx *ctx)
{
	const struct dkim_inst *di = inst;
	struct dkim_msg *m;
	size_t i;

	if ((m = dkim_msg_get(di, ctx)) == NULL)
		return FMX_CONTINUE;
	if (di->nkeys > 0 && m->nfrom == 1 && !m->from_bad &&
	    dkim_sign_trusted(di, ctx))
		for (i = 0; i < di->nkeys; i++)
			if (str_casecmp(di->keys[i].domain, m->from_domain) == 0)
				m->sign = 1;
	if (m->sign && m->vd != NULL) {
		/* Our own outbound mail: signed, not verified (see SIGNING). */
		dkim_free(m->vd);
		m->vd = NULL;
	}
	if (m->vd == NULL)
		return FMX_CONTINUE;
	m->ctx = ctx;
	if (!dkim_drive_eoh(m)) {
		m->ctx = NULL;
		m->waiting = 1;
		return FMX_PENDING;
	}
	m->ctx = NULL;
	return FMX_CONTINUE;
}

static enum fmx_verdict
dkim_on_body(void *inst, struct fmx_ctx *ctx, const unsigned char *chunk,
    size_t len)
{
	const struct dkim_inst *di = inst;
	struct dkim_msg *m;

	if ((m = dkim_msg_get(di, ctx)) == NULL || len == 0)
		return FMX_CONTINUE;
	m->bodylen += len;
	if (m->vd == NULL || m->eoh_stat != DKIM_STAT_OK)
		return FMX_CONTINUE;
	if (m->need_blen) {
		dkim_blen_feed(&m->blen[DKIM_CANON_SIMPLE], 0, chunk, len);
		dkim_blen_feed(&m->blen[DKIM_CANON_RELAXED], 1, chunk, len);
	}
	/* libopendkim only reads the chunk; its prototype lacks the const. */
	if (dkim_body(m->vd, (u_char *)(uintptr_t)chunk, len) != DKIM_STAT_OK)
		m->internal = 1;
	return FMX_CONTINUE;
}

static enum fmx_verdict
dkim_verify_eom(struct dkim_msg *m, struct fmx_ctx *ctx)
{
	const struct fmx_api *api = m->di->api;
	struct dkim_outcome *o, *o2;

	if ((o = calloc(1, sizeof *o)) == NULL) {
		(void)api->set_result(ctx, "temperror", "out of memory");
		return FMX_CONTINUE;
	}
	if (m->vd != NULL && m->eoh_stat == DKIM_STAT_OK && !m->internal)
		(void)dkim_eom(m->vd, NULL);
	else if (m->vd != NULL && m->eoh_stat == DKIM_STAT_NOSIG)
		(void)dkim_eom(m->vd, NULL);	/* all ignored: nothing to hash */
	dkim_collect(m, m->vd, m->eoh_stat, o);
	if (m->internal && o->res != DKIM_RES_PASS) {
		o->res = DKIM_RES_TEMPERROR;
		o->why = "internal error";
	} else if (o->res != DKIM_RES_PASS && o->simple_fail &&
	    (o2 = calloc(1, sizeof *o2)) != NULL) {
		if (dkim_verify_exact(m, ctx, o2) == 0)
			memcpy(o, o2, sizeof *o);
		free(o2);
	}
	dkim_report(m, ctx, o);
	free(o);
	return FMX_CONTINUE;
}

static enum fmx_verdict
dkim_on_eom(void *inst, struct fmx_ctx *ctx)
{
	const struct dkim_inst *di = inst;
	struct dkim_msg *m;

	if ((m = dkim_msg_get(di, ctx)) == NULL) {
		(void)di->api->set_result(ctx, "temperror", "out of memory");
		return FMX_CONTINUE;
	}
	if (m->sign) {
		if (dkim_sign_message(m, ctx) == -1) {
			(void)di->api->set_result(ctx, "sign_error",
			    "the message could not be signed");
			(void)di->api->set_reply(ctx, DKIM_SIGN_REPLY);
			return FMX_TEMPFAIL;
		}
		return FMX_CONTINUE;
	}
	if (!di->verify)
		return FMX_CONTINUE;
	return dkim_verify_eom(m, ctx);
}

/*
 * No on_abort: the per-message state is freed by the core after abort
 * (OWNERSHIP in frontmx_filter.h), and no DNS query can be outstanding
 * then: on_eoh only stops waiting when none is, and the core cancels
 * them when the session ends or the filter times out.
 */

/* ---------------------------------------------------------------- */
/* Configuration */

/* The next item of a comma or blank separated list into item; NULL at the end. */
const char *
dkim_list_next(const char *s, char *item, size_t len, int *toolong)
{
	size_t n;

	*toolong = 0;
	while (*s == ',' || isspace((unsigned char)*s))
		s++;
	if (*s == '\0')
		return NULL;
	n = strcspn(s, ", \t\r\n");
	if (n >= len) {
		*toolong = 1;
		return NULL;
	}
	memcpy(item, s, n);
	item[n] = '\0';
	return s + n;
}

static int
dkim_parse_headers(struct dkim_inst *di, const char *v)
{
	char name[DKIM_HDRNAME_MAX];
	size_t ns = 0, no = 0, i, len;
	const char *p = v, *e;

	for (i = 0; i < DKIM_HDRNAMES_MAX + 1; i++) {
		free(di->signhdrs[i]);
		free(di->oversign[i]);
		di->signhdrs[i] = di->oversign[i] = NULL;
	}
	while (*p != '\0') {
		e = strchr(p, ':');
		len = e != NULL ? (size_t)(e - p) : strlen(p);
		if (dkim_trim_copy(name, sizeof name, p, len) == -1)
			goto bad;
		p += len + (e != NULL);
		if (name[0] == '\0')
			continue;
		/* Names become part of a regular expression in libopendkim. */
		for (i = 0; name[i] != '\0'; i++)
			if (!isalnum((unsigned char)name[i]) && name[i] != '-')
				goto bad;
		str_lower(name);
		for (i = 0; i < ns; i++)
			if (strcmp(di->signhdrs[i], name) == 0)
				break;
		if (i < ns) {
			/* listed twice: oversign (once is enough) */
			for (i = 0; i < no; i++)
				if (strcmp(di->oversign[i], name) == 0)
					break;
			if (i == no) {
				if ((di->oversign[no++] = strdup(name)) == NULL)
					return -1;
			}
			continue;
		}
		if (ns == DKIM_HDRNAMES_MAX) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: sign_headers: more "
			    "than %d names", DKIM_HDRNAMES_MAX);
			return -1;
		}
		if ((di->signhdrs[ns++] = strdup(name)) == NULL)
			return -1;
	}
	for (i = 0; i < ns; i++)
		if (strcmp(di->signhdrs[i], "from") == 0)
			return 0;
	di->api->log(NULL, FMX_LOG_WARN, "dkim: sign_headers must include from "
	    "(RFC 6376 5.4)");
	return -1;
bad:
	di->api->log(NULL, FMX_LOG_WARN, "dkim: sign_headers: \"%s\" is not a "
	    "list of field names (letters, digits, '-')", v);
	return -1;
}

static int
dkim_parse_canon(struct dkim_inst *di, const char *v)
{
	if (str_casecmp(v, "relaxed/relaxed") == 0) {
		di->hcanon = DKIM_CANON_RELAXED;
		di->bcanon = DKIM_CANON_RELAXED;
	} else if (str_casecmp(v, "relaxed/simple") == 0 ||
	    str_casecmp(v, "relaxed") == 0) {
		di->hcanon = DKIM_CANON_RELAXED;
		di->bcanon = DKIM_CANON_SIMPLE;
	} else {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: canon \"%s\": expected "
		    "relaxed/relaxed, relaxed/simple or relaxed (simple header "
		    "canonicalization breaks when the field is refolded)", v);
		return -1;
	}
	return 0;
}

/* A text option through api->option_string(), at most DKIM_OPTVAL_MAX. */
static int
dkim_option_text(const struct dkim_inst *di, const char *const *options,
    size_t noptions, const char *key, const char **out)
{
	const char *v;
	int r;

	if ((r = di->api->option_string(options, noptions, key, &v)) != 1)
		return r;
	if (strlen(v) >= DKIM_OPTVAL_MAX) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: longer than %d "
		    "characters", key, DKIM_OPTVAL_MAX - 1);
		return -1;
	}
	*out = v;
	return 1;
}

/*
 * The options, through the getters every module has (API 1.2), so that a
 * bad value is named by the core as FILE:LINE: filter dkim: option KEY.
 * sign and sign_headers are left in *sign and *headers for later.
 */
static int
dkim_init_options(struct dkim_inst *di, const char *const *options,
    size_t noptions, const char **sign, const char **headers)
{
	static const char *const known[] = { "max_signatures", "min_key_bits",
	    "verify", "sign", "trusted", "sign_authenticated", "sign_headers",
	    "canon", NULL };
	const struct fmx_api *api = di->api;
	unsigned long long sigs = DKIM_SIGS_DEFAULT, bits = DKIM_MINBITS_DEFAULT;
	const char *trusted = NULL, *canon = NULL;

	if (api->option_check(options, noptions, known) == -1) {
		api->log(NULL, FMX_LOG_WARN, "dkim: unknown option, or one that "
		    "is not key=value (expected max_signatures, min_key_bits, "
		    "verify, sign, trusted, sign_authenticated, sign_headers or "
		    "canon)");
		return -1;
	}
	if (api->option_uint(options, noptions, "max_signatures", 1,
	    DKIM_SIGS_LIMIT, &sigs) == -1 ||
	    api->option_uint(options, noptions, "min_key_bits",
	    DKIM_MINBITS_DEFAULT, DKIM_MINBITS_LIMIT, &bits) == -1 ||
	    api->option_bool(options, noptions, "verify", &di->verify) == -1 ||
	    api->option_bool(options, noptions, "sign_authenticated",
	    &di->sign_auth) == -1 ||
	    dkim_option_text(di, options, noptions, "sign", sign) == -1 ||
	    dkim_option_text(di, options, noptions, "sign_headers", headers) == -1 ||
	    dkim_option_text(di, options, noptions, "trusted", &trusted) == -1 ||
	    dkim_option_text(di, options, noptions, "canon", &canon) == -1)
		return -1;
	di->max_sigs = (unsigned)sigs;
	di->min_bits = (unsigned)bits;	/* RFC 8301 3.2 */
	if (trusted != NULL && dkim_sign_parse_trusted(di, trusted) == -1)
		return -1;
	if (canon != NULL && dkim_parse_canon(di, canon) == -1)
		return -1;
	return 0;
}

static void dkim_filter_fini(void *);

static int
dkim_init_lib(struct dkim_inst *di)
{
	unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES;
	unsigned int minbits = di->min_bits;

	if ((di->lib = dkim_init(NULL, NULL)) == NULL)
		return -1;
	/*
	 * Our key callback always answers, so libopendkim's blocking
	 * resolver is never used; without these two, dkim_close() would
	 * still res_nclose() a handle (notes/LIBRARIES.md 2).
	 */
	(void)dkim_dns_set_init(di->lib, NULL);
	(void)dkim_dns_set_close(di->lib, NULL);
	/* Malformed signatures are reported (permerror), not taken as unsigned. */
	if (dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags,
	    sizeof flags) != DKIM_STAT_OK ||
	    dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_MINKEYBITS, &minbits,
	    sizeof minbits) != DKIM_STAT_OK ||
	    dkim_set_key_lookup(di->lib, dkim_dns_key_cb) != DKIM_STAT_OK ||
	    dkim_set_prescreen(di->lib, dkim_dns_prescreen_cb) != DKIM_STAT_OK)
		return -1;
	if (dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS,
	    di->signhdrs, sizeof(char **)) != DKIM_STAT_OK ||
	    dkim_options(di->lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
	    di->oversign[0] != NULL ? di->oversign : NULL,
	    sizeof(u_char **)) != DKIM_STAT_OK) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: sign_headers refused by "
		    "libopendkim (list too long?)");
		return -1;
	}
	return 0;
}

static int
dkim_filter_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct dkim_inst *di;
	const char *sign = NULL, *headers = DKIM_SIGN_HEADERS_DEFAULT;
	size_t i;

	*instance = NULL;
	if ((di = calloc(1, sizeof *di)) == NULL) {
		api->log(NULL, FMX_LOG_WARN, "dkim: error=\"out of memory\"");
		return -1;
	}
	di->api = api;
	di->max_sigs = DKIM_SIGS_DEFAULT;
	di->min_bits = DKIM_MINBITS_DEFAULT;
	di->verify = 1;
	di->sign_auth = 1;
	di->hcanon = DKIM_CANON_RELAXED;
	di->bcanon = DKIM_CANON_RELAXED;
	if (dkim_init_options(di, options, noptions, &sign, &headers) == -1)
		goto fail;
	if (dkim_parse_headers(di, headers) == -1)
		goto fail;
	if (dkim_init_lib(di) == -1) {
		api->log(NULL, FMX_LOG_WARN, "dkim: error=\"libopendkim set-up failed\"");
		goto fail;
	}
	if (sign != NULL && dkim_sign_parse_keys(di, sign) == -1)
		goto fail;
	for (i = 0; i < di->nkeys; i++)
		if (dkim_sign_key_load(di, &di->keys[i]) == -1)
			goto fail;
	if (di->nkeys > 0 && di->nnets == 0 && !di->sign_auth)
		api->log(NULL, FMX_LOG_WARN, "dkim: sign is set but no client is "
		    "trusted (trusted, sign_authenticated): nothing will be signed");
	if (!di->verify && di->nkeys == 0) {
		api->log(NULL, FMX_LOG_WARN, "dkim: verify = false and no sign "
		    "keys: the filter would do nothing");
		goto fail;
	}
	*instance = di;
	return 0;
fail:
	dkim_filter_fini(di);
	return -1;
}

static void
dkim_filter_fini(void *instance)
{
	struct dkim_inst *di = instance;
	size_t i;

	if (di == NULL)
		return;
	if (di->lib != NULL)
		dkim_close(di->lib);
	for (i = 0; i < di->nkeys; i++) {
		free(di->keys[i].domain);
		free(di->keys[i].selector);
		free(di->keys[i].path);
		if (di->keys[i].pem != NULL) {
			/* a private key: do not leave it in freed memory */
			explicit_bzero(di->keys[i].pem, strlen(di->keys[i].pem));
			free(di->keys[i].pem);
		}
	}
	free(di->keys);
	free(di->nets);
	for (i = 0; i < DKIM_HDRNAMES_MAX + 1; i++) {
		free(di->signhdrs[i]);
		free(di->oversign[i]);
	}
	free(di);
}

static const struct fmx_filter dkim_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "dkim",
	.init = dkim_filter_init,
	.fini = dkim_filter_fini,
	.on_header = dkim_on_header,
	.on_eoh = dkim_on_eoh,
	.on_body = dkim_on_body,
	.on_eom = dkim_on_eom,
};

const struct fmx_filter *
dkim_filter(void)
{
	return &dkim_table;
}
