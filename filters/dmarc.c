/*
 * dmarc.c - the built-in DMARC filter (RFC 7489)
 *
 * NAME
 *	dmarc_filter - check the author domain of each message against the
 *	DMARC policy its owner publishes
 *
 * SYNOPSIS
 *	filters = ( { name = "spf"; }, { name = "dkim"; },
 *	            { name = "dmarc";
 *	              options = { psl = "/usr/share/publicsuffix/public_suffix_list.dat";
 *	                          honor_pct = true; }; } );
 *	policy = { default = { dmarc = { reject = "reject";
 *	                                 quarantine = "quarantine"; }; }; };
 *
 * DESCRIPTION
 *	The filter reads the RFC 5322.From field in on_header and does the
 *	rest in on_eom, after the SPF and DKIM filters (which must come
 *	before it in `filters`) have left their findings in the message
 *	facts "spf.result", "spf.domain" and "dkim.pass":
 *
 *	1. Author domain (RFC 7489 3.1, 6.6.1).  Exactly one From field
 *	   whose mailboxes all have the same domain.  No From field, several
 *	   From fields, mailboxes in different domains, an address literal,
 *	   a non-ASCII domain or a field that does not parse are a
 *	   "permerror" (see RESULTS).  The field is parsed here, by a small
 *	   RFC 5322 3.4 tokenizer (atoms, quoted strings, nested comments,
 *	   domain literals, group syntax, obs-route), rather than with
 *	   GMime: GMime's parser repairs broken input (an '@' in an unquoted
 *	   display name becomes an address), but for DMARC the domain must
 *	   be the one a strict reader, and so the MUA, takes as the author;
 *	   and g_mime_init() is process-global state shared with the
 *	   content filter.  The parser is linear, non-recursive and keeps no
 *	   more than one domain name.
 *
 *	2. Policy discovery (6.6.3).  TXT _dmarc.<author domain> through
 *	   api->dns_query() (asynchronous: FMX_PENDING, then api->resume()).
 *	   Records not starting with "v=DMARC1" are discarded.  None left
 *	   (NXDOMAIN or NODATA included): the same at the Organizational
 *	   Domain, when it differs from the author domain.  More than one
 *	   record: no policy.  Any other DNS failure: "temperror".
 *
 *	3. Organizational Domain (3.2): the registrable domain by the
 *	   Public Suffix List, through libpsl (wildcard and exception rules
 *	   done right, unlike libopendmarc 1.4.2: notes/LIBRARIES.md 3).
 *	   A name that is itself a public suffix is its own organizational
 *	   domain.
 *
 *	4. Record (6.3, 6.4).  tag=value pairs separated by ';', "v=DMARC1"
 *	   first (the version literal is case-sensitive, the rest is not).
 *	   A record without a valid p= (or with an invalid sp=) is read as
 *	   p=none when it has a syntactically valid rua= URI, and ignored
 *	   (no policy) otherwise (6.6.3 step 6).  Invalid adkim=, aspf= and
 *	   pct= values fall back to their defaults (r, r, 100); unknown tags
 *	   are ignored; the first of duplicated tags counts.
 *
 *	5. Identifier alignment (3.1), computed here, not by libopendmarc
 *	   (whose strict mode falls back to the organizational domain).
 *	   SPF is aligned when spf.result is "pass" and spf.domain aligns
 *	   with the author domain under aspf=; DKIM when any domain in
 *	   dkim.pass aligns under adkim=.  Strict: equal ignoring case.
 *	   Relaxed: the same organizational domain.  Either aligned: pass.
 *
 *	6. Policy (6.6.4).  sp= when the record came from the
 *	   organizational domain (and sp= is present), p= otherwise.  pct=
 *	   (6.3) applies to failures only: a message outside the sampled
 *	   percentage gets the next weaker policy (reject -> quarantine,
 *	   quarantine -> none).
 *
 * RESULTS
 *	The result names the outcome for the policy (set_result); without
 *	a mapping the hook's own verdict stands:
 *
 *	result      case                                  verdict     A-R
 *	pass        aligned, record found                 continue    pass
 *	none        no (usable) record: DMARC not applied continue    none
 *	fail        not aligned, policy none              continue    fail
 *	quarantine  not aligned, policy quarantine        quarantine  fail
 *	reject      not aligned, policy reject            reject      fail
 *	temperror   DNS failure or timeout                continue    temperror
 *	permerror   no usable RFC 5322.From (step 1)      reject      permerror
 *
 *	So the published policy is honoured by default, and a per-domain
 *	policy can override it (dmarc = { reject = "quarantine"; }).
 *	permerror rejects by default because RFC 7489 6.6.1 notes such
 *	messages are "typically rejected" (RFC 5322 requires exactly one
 *	From), and because letting them through unchecked would let a
 *	second From field or a second mailbox slip past DMARC
 *	(cf. CVE-2021-34555); map permerror to accept or tag to relax it.
 *	temperror relays by default (map it to tempfail to defer instead).
 *	The reject reply is "550 5.7.1 Email rejected per DMARC policy for
 *	DOMAIN"; permerror's is "550 5.7.1 Email rejected: REASON".
 *	Authentication-Results gets dmarc=RESULT header.from=DOMAIN
 *	(RFC 7489 11.2); the log line's reason gives p, sp, pct, the
 *	disposition and which identifiers aligned.
 *
 * OPTIONS
 *	psl = PATH	Public Suffix List file (.dat or libpsl's .dafsa).
 *			Default /usr/share/publicsuffix/public_suffix_list.dat
 *			(Debian package publicsuffix), and libpsl's built-in
 *			list if that cannot be read.  A PATH that cannot be
 *			read refuses the configuration.
 *	honor_pct = BOOLEAN	(default yes) apply pct=; no enforces the
 *			policy for every failing message.
 *	pct_seed = STRING	make the pct= sample deterministic: a hash
 *			of STRING (at most 255 characters) and the message's
 *			Message-ID (its queue id when it has none).  Without
 *			it the sample is arc4random(), which a sender cannot
 *			steer.  For tests.
 *
 * THREADING
 *	The instance (options, PSL context) is read-only after init and
 *	shared by all workers; libpsl's lookups only read the context.
 *	Per-message state lives in the core's message slot.
 *
 * CAVEATS
 *	No aggregate or failure reports (rua=, ruf=), no IDNA: a non-ASCII
 *	author domain is a permerror, so that a UTS 46 look-alike of an
 *	ASCII domain cannot escape that domain's policy.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpsl.h>

#include "dmarc.h"
#include "dnsmsg.h"
#include "strutil.h"

#define DMARC_PSL_DEFAULT	"/usr/share/publicsuffix/public_suffix_list.dat"
#define DMARC_DOMAIN_MAX	253	/* RFC 1035 2.3.4, without the final dot */
#define DMARC_PREFIX		"_dmarc."
/* The author domain plus "_dmarc." must still be a valid name. */
#define DMARC_AUTHOR_MAX	(DMARC_DOMAIN_MAX - (sizeof DMARC_PREFIX - 1))
#define DMARC_LABEL_MAX		63
#define DMARC_RECORD_MAX	4096	/* one TXT record, strings joined */
#define DMARC_FACT_MAX		512	/* the core's longest fact value */
#define DMARC_MSGID_MAX		255	/* bytes of Message-ID kept for pct */
#define DMARC_SEED_MAX		255	/* the pct_seed option */
#define DMARC_REASON_MAX	200
#define DMARC_ERR_MAX		96
#define DMARC_NOTE_MAX		128
#define DMARC_TXT		16	/* RR type TXT */
#define DMARC_RCODE_NXDOMAIN	3

enum dmarc_policy {
	DMARC_P_UNSET = 0,	/* tag absent */
	DMARC_P_INVALID,	/* tag present, value not one of the three */
	DMARC_P_NONE,
	DMARC_P_QUARANTINE,
	DMARC_P_REJECT
};

static const char *const dmarc_policy_names[] = {
	[DMARC_P_UNSET] = "unset",
	[DMARC_P_INVALID] = "invalid",
	[DMARC_P_NONE] = "none",
	[DMARC_P_QUARANTINE] = "quarantine",
	[DMARC_P_REJECT] = "reject",
};

/* One parsed "v=DMARC1" record (RFC 7489 6.3). */
struct dmarc_record {
	enum dmarc_policy	 p, sp;
	int			 adkim_strict, aspf_strict;
	unsigned		 pct;		/* 0..100 */
	int			 has_rua;	/* at least one valid rua= URI */
	int			 too_long;	/* longer than DMARC_RECORD_MAX */
};

enum dmarc_stage {
	DMARC_ST_HEADERS = 0,	/* collecting the header */
	DMARC_ST_ASK_AUTHOR,	/* _dmarc.<author domain> outstanding */
	DMARC_ST_ASK_ORG,	/* _dmarc.<organizational domain> outstanding */
	DMARC_ST_DONE
};

/* One configured instance: read-only after init. */
struct dmarc_inst {
	const struct fmx_api	*api;
	psl_ctx_t		*psl_owned;	/* loaded from a file; NULL for built-in */
	const psl_ctx_t		*psl;
	int			 honor_pct;
	int			 pct_seeded;
	char			 pct_seed[DMARC_SEED_MAX + 1];
};

/* Per message, owned by the core through api->set_msg_data(). */
struct dmarc_msg {
	unsigned		 nfrom;		/* From fields seen */
	char			 from_err[DMARC_ERR_MAX];	/* "" when usable */
	char			 domain[DMARC_DOMAIN_MAX + 1];	/* author, lower case */
	char			 org[DMARC_DOMAIN_MAX + 1];	/* its organizational domain */
	char			 msgid[DMARC_MSGID_MAX + 1];
	/* Copies of the SPF and DKIM facts, taken in on_eom. */
	char			 spf_domain[DMARC_DOMAIN_MAX + 1];	/* "" unless spf pass */
	char			 dkim_pass[DMARC_FACT_MAX + 1];
	char			 queue_id[64];

	enum dmarc_stage	 stage;
	int			 waiting;	/* a query of ours is outstanding */
	int			 in_query;	/* inside api->dns_query() */
	int			 answered;	/* its callback ran (maybe inside) */

	int			 temperror;
	int			 have_record;
	int			 record_at_org;
	char			 note[DMARC_NOTE_MAX];	/* why no policy applies */
	struct dmarc_record	 rec;
};

/* ---------------------------------------------------------------- */
/* Names */

/*
 * Copies a domain name into out (size DMARC_DOMAIN_MAX + 1) in lower
 * case without one trailing dot.  -1 when it is empty, too long, or has
 * a character that is not a letter, digit, '-' or '_', or an empty or
 * over-long label; err then says which, in words safe for an SMTP reply.
 */
static int
dmarc_domain_norm(const char *in, size_t len, char *out, const char **err)
{
	size_t i, label = 0;
	unsigned char c;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > DMARC_DOMAIN_MAX) {
		*err = "invalid From domain";
		return -1;
	}
	for (i = 0; i < len; i++) {
		c = (unsigned char)in[i];
		if (c == '.') {
			if (label == 0) {
				*err = "invalid From domain";
				return -1;
			}
			label = 0;
			out[i] = '.';
			continue;
		}
		if (c >= 0x80) {
			*err = "non-ASCII From domain";
			return -1;
		}
		if (!isalnum(c) && c != '-' && c != '_') {
			*err = "invalid From domain";
			return -1;
		}
		if (++label > DMARC_LABEL_MAX) {
			*err = "invalid From domain";
			return -1;
		}
		out[i] = (char)str_ascii_lower(c);
	}
	if (label == 0) {
		*err = "invalid From domain";
		return -1;
	}
	out[len] = '\0';
	return 0;
}

/*
 * The organizational domain of d (lower case) into out (RFC 7489 3.2):
 * the registrable domain by the PSL; a public suffix is its own.
 */
static void
dmarc_org_domain(const struct dmarc_inst *di, const char *d, char *out,
    size_t outlen)
{
	const char *r = psl_registrable_domain(di->psl, d);

	snprintf(out, outlen, "%s", r != NULL ? r : d);
}

/*
 * Identifier alignment (RFC 7489 3.1.1, 3.1.2): a authenticated
 * identifier, author the author domain (normalised).  Strict mode
 * wants the same name, relaxed the same organizational domain.
 */
static int
dmarc_aligned(const struct dmarc_inst *di, const char *a, size_t alen,
    const char *author, int strict)
{
	char an[DMARC_DOMAIN_MAX + 1], ao[DMARC_DOMAIN_MAX + 1];
	char bo[DMARC_DOMAIN_MAX + 1];
	const char *err;

	if (dmarc_domain_norm(a, alen, an, &err) == -1)
		return 0;
	if (strcmp(an, author) == 0)
		return 1;
	if (strict)
		return 0;
	dmarc_org_domain(di, an, ao, sizeof ao);
	dmarc_org_domain(di, author, bo, sizeof bo);
	return strcmp(ao, bo) == 0;
}

/* ---------------------------------------------------------------- */
/* RFC 5322.From (RFC 5322 3.4, 3.2; RFC 7489 6.6.1) */

enum dmarc_tok_type {
	DMARC_TOK_END = 0,
	DMARC_TOK_WORD,		/* atom or quoted-string */
	DMARC_TOK_LITERAL,	/* [domain literal] */
	DMARC_TOK_SPECIAL,	/* one of < > : ; @ , . */
	DMARC_TOK_ERROR
};

struct dmarc_tok {
	enum dmarc_tok_type	 type;
	const char		*p;	/* WORD: the atom, or the quoted text */
	size_t			 len;
	int			 quoted;
	char			 c;	/* SPECIAL */
};

struct dmarc_from {
	const char		*s;	/* the raw field value, NUL-terminated */
	size_t			 pos;
	struct dmarc_tok	 tok;	/* lookahead */
	unsigned		 nmailbox;
	const char		*err;
	char			 domain[DMARC_DOMAIN_MAX + 1];
};

/* RFC 5322 3.2.3 atext, plus UTF-8 (RFC 6532 3.2). */
static int
dmarc_atext(unsigned char c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) ||
	    c >= 0x80;
}

/* Skips CFWS; comments nest (RFC 5322 3.2.2), counted, not recursed. */
static int
dmarc_skip_cfws(struct dmarc_from *f)
{
	const char *s = f->s;
	size_t depth;

	for (;;) {
		switch (s[f->pos]) {
		case ' ': case '\t': case '\r': case '\n':	/* folds included */
			f->pos++;
			continue;
		case '(':
			for (depth = 0;;) {
				switch (s[f->pos]) {
				case '\0':
					f->err = "unterminated comment in From";
					return -1;
				case '\\':
					if (s[f->pos + 1] == '\0') {
						f->err = "unterminated comment in From";
						return -1;
					}
					f->pos += 2;
					continue;
				case '(':
					depth++;
					break;
				case ')':
					depth--;
					break;
				}
				f->pos++;
				if (depth == 0)
					break;
			}
			continue;
		default:
			return 0;
		}
	}
}

/* Reads the next token into f->tok. */
static void
dmarc_next(struct dmarc_from *f)
{
	struct dmarc_tok *t = &f->tok;
	const char *s = f->s;
	unsigned char c;
	size_t start;
	char close;

	memset(t, 0, sizeof *t);
	if (dmarc_skip_cfws(f) == -1) {
		t->type = DMARC_TOK_ERROR;
		return;
	}
	c = (unsigned char)s[f->pos];
	if (c == '\0') {
		t->type = DMARC_TOK_END;
		return;
	}
	if (c == '"' || c == '[') {
		/* quoted-string (3.2.4) or domain-literal (3.4.1), with quoted-pairs */
		close = c == '"' ? '"' : ']';
		start = ++f->pos;
		for (;;) {
			c = (unsigned char)s[f->pos];
			if (c == '\0' || (close == ']' && c == '[')) {
				t->type = DMARC_TOK_ERROR;
				f->err = close == '"' ? "unterminated quoted string in From" :
				    "bad domain literal in From";
				return;
			}
			if (c == '\\') {
				if (s[f->pos + 1] == '\0') {
					t->type = DMARC_TOK_ERROR;
					f->err = "unterminated quoted string in From";
					return;
				}
				f->pos += 2;
				continue;
			}
			if (c == (unsigned char)close)
				break;
			f->pos++;
		}
		t->type = close == '"' ? DMARC_TOK_WORD : DMARC_TOK_LITERAL;
		t->quoted = close == '"';
		t->p = s + start;
		t->len = f->pos - start;
		f->pos++;
		return;
	}
	if (c != '\0' && strchr("<>:;@,.", c) != NULL) {
		t->type = DMARC_TOK_SPECIAL;
		t->c = (char)c;
		f->pos++;
		return;
	}
	if (dmarc_atext(c)) {
		start = f->pos;
		while (dmarc_atext((unsigned char)s[f->pos]))
			f->pos++;
		t->type = DMARC_TOK_WORD;
		t->p = s + start;
		t->len = f->pos - start;
		return;
	}
	/* A stray ')', ']' or '\\', a control character, DEL. */
	t->type = DMARC_TOK_ERROR;
	f->err = "invalid character in From";
}

static int
dmarc_is(const struct dmarc_from *f, char c)
{
	return f->tok.type == DMARC_TOK_SPECIAL && f->tok.c == c;
}

/*
 * domain = dot-atom / domain-literal / obs-domain (3.4.1).  The name,
 * normalised, goes to out (DMARC_DOMAIN_MAX + 1 bytes) unless out is
 * NULL (an obs-route domain, only skipped).
 */
static int
dmarc_parse_domain(struct dmarc_from *f, char *out)
{
	char buf[DMARC_DOMAIN_MAX + 2];
	size_t len = 0;

	if (f->tok.type == DMARC_TOK_LITERAL) {
		f->err = "address literal as From domain";
		return -1;
	}
	for (;;) {
		if (f->tok.type != DMARC_TOK_WORD || f->tok.quoted) {
			f->err = f->tok.type == DMARC_TOK_ERROR && f->err != NULL ?
			    f->err : "invalid From domain";
			return -1;
		}
		if (len + f->tok.len + 1 >= sizeof buf) {
			f->err = "invalid From domain";
			return -1;
		}
		memcpy(buf + len, f->tok.p, f->tok.len);
		len += f->tok.len;
		dmarc_next(f);
		if (!dmarc_is(f, '.'))
			break;
		buf[len++] = '.';
		dmarc_next(f);
		/* One trailing dot ("example.com.") names the same domain. */
		if (f->tok.type != DMARC_TOK_WORD)
			break;
	}
	buf[len] = '\0';
	if (out == NULL)
		return 0;
	if (dmarc_domain_norm(buf, len, out, &f->err) == -1)
		return -1;
	if (strlen(out) > DMARC_AUTHOR_MAX) {
		f->err = "invalid From domain";
		return -1;
	}
	return 0;
}

/* local-part = word *("." word) (3.4.1, obs-local-part: CFWS allowed). */
static int
dmarc_parse_local(struct dmarc_from *f)
{
	for (;;) {
		if (f->tok.type != DMARC_TOK_WORD) {
			f->err = f->tok.type == DMARC_TOK_ERROR && f->err != NULL ?
			    f->err : "invalid address in From";
			return -1;
		}
		dmarc_next(f);
		if (!dmarc_is(f, '.'))
			return 0;
		dmarc_next(f);
	}
}

/* One mailbox found: all must share one domain (RFC 7489 6.6.1). */
static int
dmarc_add_mailbox(struct dmarc_from *f, const char *domain)
{
	if (f->nmailbox++ == 0)
		snprintf(f->domain, sizeof f->domain, "%s", domain);
	else if (strcmp(f->domain, domain) != 0) {
		f->err = "From has mailboxes in different domains";
		return -1;
	}
	return 0;
}

/* addr-spec = local-part "@" domain, the lookahead at its first token. */
static int
dmarc_parse_addr_spec(struct dmarc_from *f)
{
	char domain[DMARC_DOMAIN_MAX + 1];

	if (dmarc_parse_local(f) == -1)
		return -1;
	if (!dmarc_is(f, '@')) {
		f->err = f->tok.type == DMARC_TOK_ERROR && f->err != NULL ? f->err :
		    "invalid address in From";
		return -1;
	}
	dmarc_next(f);
	if (dmarc_parse_domain(f, domain) == -1)
		return -1;
	return dmarc_add_mailbox(f, domain);
}

/*
 * angle-addr = "<" [obs-route] addr-spec ">" (3.4, 4.4), the lookahead
 * just past "<".  obs-route = obs-domain-list ":", its domains ignored.
 */
static int
dmarc_parse_angle(struct dmarc_from *f)
{
	if (dmarc_is(f, '>')) {
		f->err = "empty address in From";
		return -1;
	}
	if (dmarc_is(f, '@') || dmarc_is(f, ',')) {
		while (dmarc_is(f, '@') || dmarc_is(f, ',')) {
			if (dmarc_is(f, ',')) {
				dmarc_next(f);
				continue;
			}
			dmarc_next(f);
			if (dmarc_parse_domain(f, NULL) == -1)
				return -1;
		}
		if (!dmarc_is(f, ':')) {
			f->err = "invalid route in From";
			return -1;
		}
		dmarc_next(f);
	}
	if (dmarc_parse_addr_spec(f) == -1)
		return -1;
	if (!dmarc_is(f, '>')) {
		f->err = f->tok.type == DMARC_TOK_ERROR && f->err != NULL ? f->err :
		    "unterminated angle address in From";
		return -1;
	}
	dmarc_next(f);
	return 0;
}

/*
 * address = mailbox / group (3.4); in_group: a mailbox only.  The
 * phrase in front (display name, words and obs-phrase dots) is scanned
 * first: the token after it tells what the address is.  An addr-spec
 * is re-read from its start, so a display name that merely looks like
 * an address ("a@b" <c@d>) is a quoted word and never a domain.
 */
static int
dmarc_parse_address(struct dmarc_from *f, int in_group)
{
	struct dmarc_from save = *f;
	unsigned nwords = 0;

	while (f->tok.type == DMARC_TOK_WORD || (nwords > 0 && dmarc_is(f, '.'))) {
		nwords += f->tok.type == DMARC_TOK_WORD;
		dmarc_next(f);
	}
	if (f->tok.type == DMARC_TOK_ERROR)
		return -1;
	if (dmarc_is(f, '<')) {
		dmarc_next(f);
		return dmarc_parse_angle(f);
	}
	if (dmarc_is(f, '@') && nwords > 0) {
		*f = save;
		return dmarc_parse_addr_spec(f);
	}
	if (dmarc_is(f, ':') && nwords > 0 && !in_group) {
		/* group = display-name ":" [group-list] ";" */
		dmarc_next(f);
		for (;;) {
			if (dmarc_is(f, ';')) {
				dmarc_next(f);
				return 0;
			}
			if (dmarc_is(f, ',')) {
				dmarc_next(f);
				continue;
			}
			if (f->tok.type == DMARC_TOK_END) {
				f->err = "unterminated group in From";
				return -1;
			}
			if (dmarc_parse_address(f, 1) == -1)
				return -1;
			if (f->tok.type == DMARC_TOK_END) {
				f->err = "unterminated group in From";
				return -1;
			}
			if (!dmarc_is(f, ',') && !dmarc_is(f, ';')) {
				f->err = f->tok.type == DMARC_TOK_ERROR && f->err != NULL ?
				    f->err : "invalid group in From";
				return -1;
			}
		}
	}
	if (f->err == NULL)
		f->err = "invalid address in From";
	return -1;
}

/*
 * Parses one From field value (raw, folds kept).  0 and the one author
 * domain (lower case) in domain; -1 and a reason (a constant, safe in an
 * SMTP reply) in *err.
 */
static int
dmarc_from_parse(const char *value, char *domain, size_t domlen,
    const char **err)
{
	struct dmarc_from f;

	memset(&f, 0, sizeof f);
	f.s = value;
	dmarc_next(&f);
	for (;;) {
		/* obs-addr-list: empty elements between commas are allowed */
		while (dmarc_is(&f, ','))
			dmarc_next(&f);
		if (f.tok.type == DMARC_TOK_END)
			break;
		if (dmarc_parse_address(&f, 0) == -1) {
			*err = f.err != NULL ? f.err : "invalid address in From";
			return -1;
		}
		if (f.tok.type == DMARC_TOK_END)
			break;
		if (!dmarc_is(&f, ',')) {
			*err = f.tok.type == DMARC_TOK_ERROR && f.err != NULL ? f.err :
			    "unexpected text after the address in From";
			return -1;
		}
	}
	if (f.nmailbox == 0) {
		*err = "no address in From";
		return -1;
	}
	snprintf(domain, domlen, "%s", f.domain);
	return 0;
}

/* ---------------------------------------------------------------- */
/* Policy record (RFC 7489 6.3, 6.4) */

static int
dmarc_wsp(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* s[0..len) equals word, ignoring ASCII case. */
static int
dmarc_ieq(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && str_ncasecmp(s, word, len) == 0;
}

static enum dmarc_policy
dmarc_policy_value(const char *v, size_t len)
{
	if (dmarc_ieq(v, len, "none"))
		return DMARC_P_NONE;
	if (dmarc_ieq(v, len, "quarantine"))
		return DMARC_P_QUARANTINE;
	if (dmarc_ieq(v, len, "reject"))
		return DMARC_P_REJECT;
	return DMARC_P_INVALID;
}

/*
 * rua = dmarc-uri *(*WSP "," *WSP dmarc-uri), dmarc-uri = URI ["!" size]:
 * 1 when at least one element is "scheme:something" (RFC 3986 3.1).
 */
static int
dmarc_rua_valid(const char *v, size_t len)
{
	size_t i = 0, start, j;

	while (i < len) {
		while (i < len && (dmarc_wsp((unsigned char)v[i]) || v[i] == ','))
			i++;
		start = i;
		while (i < len && v[i] != ',')
			i++;
		/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
		if (start < i && isalpha((unsigned char)v[start])) {
			for (j = start + 1; j < i && (isalnum((unsigned char)v[j]) ||
			    v[j] == '+' || v[j] == '-' || v[j] == '.'); j++)
				;
			if (j < i && v[j] == ':' && j + 1 < i &&
			    !dmarc_wsp((unsigned char)v[j + 1]))
				return 1;
		}
	}
	return 0;
}

/*
 * Parses one TXT record (len bytes, may hold anything).  0 when it is
 * not a DMARC record (the first tag is not v=DMARC1: 6.6.3 step 4);
 * 1 with rec filled in otherwise.
 */
static int
dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *rec)
{
	size_t i = 0, seg, end, ns, ne, vs, ve, eq;
	int first = 1, seen_p = 0, seen_sp = 0, seen_adkim = 0, seen_aspf = 0;
	int seen_pct = 0, seen_rua = 0;
	unsigned long n;
	const char *v;
	size_t vlen, k;

	memset(rec, 0, sizeof *rec);
	rec->pct = 100;
	while (i <= len) {
		seg = i;
		for (end = seg; end < len && txt[end] != ';'; end++)
			;
		i = end + 1;
		/* name *WSP "=" *WSP value, blanks around both */
		for (ns = seg; ns < end && dmarc_wsp((unsigned char)txt[ns]); ns++)
			;
		for (eq = ns; eq < end && txt[eq] != '='; eq++)
			;
		if (ns == end) {
			if (first)
				return 0;
			continue;	/* empty element, e.g. after the last ';' */
		}
		if (eq == end) {
			if (first)
				return 0;
			continue;	/* syntax error: ignored (6.3) */
		}
		for (ne = eq; ne > ns && dmarc_wsp((unsigned char)txt[ne - 1]); ne--)
			;
		for (vs = eq + 1; vs < end && dmarc_wsp((unsigned char)txt[vs]); vs++)
			;
		for (ve = end; ve > vs && dmarc_wsp((unsigned char)txt[ve - 1]); ve--)
			;
		v = txt + vs;
		vlen = ve - vs;
		if (first) {
			/* dmarc-version = "v" *WSP "=" *WSP %x44.4d.41.52.43.31 */
			if (!dmarc_ieq(txt + ns, ne - ns, "v") || vlen != 6 ||
			    memcmp(v, "DMARC1", 6) != 0)
				return 0;
			first = 0;
			continue;
		}
		if (dmarc_ieq(txt + ns, ne - ns, "p") && !seen_p++)
			rec->p = dmarc_policy_value(v, vlen);
		else if (dmarc_ieq(txt + ns, ne - ns, "sp") && !seen_sp++)
			rec->sp = dmarc_policy_value(v, vlen);
		else if (dmarc_ieq(txt + ns, ne - ns, "adkim") && !seen_adkim++)
			rec->adkim_strict = dmarc_ieq(v, vlen, "s");
		else if (dmarc_ieq(txt + ns, ne - ns, "aspf") && !seen_aspf++)
			rec->aspf_strict = dmarc_ieq(v, vlen, "s");
		else if (dmarc_ieq(txt + ns, ne - ns, "pct") && !seen_pct++) {
			/* dmarc-percent = "pct" *WSP "=" *WSP 1*3DIGIT; else the default */
			for (k = 0, n = 0; k < vlen && k < 4 && isdigit((unsigned char)v[k]); k++)
				n = n * 10 + (unsigned long)(v[k] - '0');
			if (vlen >= 1 && vlen <= 3 && k == vlen && n <= 100)
				rec->pct = (unsigned)n;
		} else if (dmarc_ieq(txt + ns, ne - ns, "rua") && !seen_rua++)
			rec->has_rua = dmarc_rua_valid(v, vlen);
		/* other tags (ruf, fo, rf, ri, unknown ones): ignored (6.3) */
	}
	return first ? 0 : 1;
}

/* ---------------------------------------------------------------- */
/* DNS answer */

/*
 * Reads the TXT records of an answer packet (RFC 1035 4.1, 3.3.14; the
 * character-strings of one record are joined).  Returns the number of
 * DMARC records, the first parsed into rec; -1 for a malformed packet.
 */
static int
dmarc_dns_scan(const unsigned char *pkt, size_t len, struct dmarc_record *rec)
{
	char txt[DMARC_RECORD_MAX + 1];
	struct dmarc_record r;
	struct dnsmsg m;
	struct dnsmsg_rr rr;
	size_t tlen;
	int n = 0, too_long, more;

	if (dnsmsg_open(&m, pkt, len) == -1)
		return -1;
	while ((more = dnsmsg_next(&m, &rr)) == 1) {
		if (rr.type != DNSMSG_TXT || rr.class != DNSMSG_IN)
			continue;	/* CNAME on the way, or a stray RR */
		/* A record over DMARC_RECORD_MAX is parsed cut, and flagged. */
		if ((too_long = dnsmsg_txt(&rr, txt, sizeof txt, &tlen)) == -1)
			return -1;
		if (dmarc_record_parse(txt, tlen, &r) == 1) {
			r.too_long = too_long;
			if (n++ == 0)
				*rec = r;
		}
	}
	return more == -1 ? -1 : n;
}

/* ---------------------------------------------------------------- */
/* The filter */

/* The SplitMix64 finaliser, after FNV-1a, so that every bit counts. */
static uint64_t
dmarc_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * The message's pct sample, 0..99 (RFC 7489 6.6.4): the policy applies
 * when it is below pct.  Deterministic with pct_seed (for tests), else
 * random.
 */
static unsigned
dmarc_pct_sample(const struct dmarc_inst *di, const struct dmarc_msg *st)
{
	char buf[DMARC_SEED_MAX + 1 + sizeof st->msgid + sizeof st->queue_id];

	if (!di->pct_seeded)
		return arc4random_uniform(100);
	/* FNV-1a (str_hash) of "SEED\nID": the ID cannot pose as part of the seed. */
	snprintf(buf, sizeof buf, "%s\n%s", di->pct_seed,
	    st->msgid[0] != '\0' ? st->msgid : st->queue_id);
	return (unsigned)(dmarc_mix(str_hash(buf)) % 100);
}

/*
 * The end of the check: names the result, adds the Authentication-
 * Results entry, and returns the verdict (RESULTS above).
 */
static enum fmx_verdict
dmarc_finish(const struct dmarc_inst *di, struct fmx_ctx *ctx,
    struct dmarc_msg *st)
{
	const struct fmx_api *api = di->api;
	const struct dmarc_record *rec = &st->rec;
	char props[DMARC_DOMAIN_MAX + 16], reason[DMARC_REASON_MAX + 64];
	char reply[DMARC_DOMAIN_MAX + 64];
	enum dmarc_policy pol, disp;
	const char *s, *e;
	int spf_al = 0, dkim_al = 0, sampled_out = 0;
	unsigned sample = 0;

	st->stage = DMARC_ST_DONE;
	snprintf(props, sizeof props, "header.from=%s", st->domain);
	if (st->temperror) {
		api->set_result(ctx, "temperror", st->note);
		api->add_auth_result(ctx, "dmarc", "temperror", props);
		return FMX_CONTINUE;
	}
	if (!st->have_record) {
		/* 6.6.3 step 5/6: no policy, DMARC is not applied. */
		api->set_result(ctx, "none", st->note);
		api->add_auth_result(ctx, "dmarc", "none", props);
		return FMX_CONTINUE;
	}

	/* 3.1.2: SPF pass for the MAIL FROM (or HELO) domain, aligned. */
	if (st->spf_domain[0] != '\0')
		spf_al = dmarc_aligned(di, st->spf_domain, strlen(st->spf_domain),
		    st->domain, rec->aspf_strict);
	/* 3.1.1: any passing DKIM signature whose d= aligns. */
	for (s = st->dkim_pass; *s != '\0' && !dkim_al; s = e) {
		while (*s == ' ' || *s == ',')
			s++;
		for (e = s; *e != '\0' && *e != ' ' && *e != ','; e++)
			;
		if (e > s)
			dkim_al = dmarc_aligned(di, s, (size_t)(e - s), st->domain,
			    rec->adkim_strict);
	}

	/* 6.6.4: sp= for a record found at the organizational domain. */
	pol = st->record_at_org && rec->sp != DMARC_P_UNSET ? rec->sp : rec->p;
	disp = pol;
	if (!spf_al && !dkim_al && pol >= DMARC_P_QUARANTINE && di->honor_pct &&
	    rec->pct < 100) {
		/* 6.3 pct: outside the sample, the next weaker policy. */
		sample = dmarc_pct_sample(di, st);
		if (sample >= rec->pct) {
			disp = pol == DMARC_P_REJECT ? DMARC_P_QUARANTINE : DMARC_P_NONE;
			sampled_out = 1;
		}
	}
	snprintf(reason, sizeof reason, "%.80s p=%s%s%s pct=%u policy=%s%s "
	    "disposition=%s spf=%s dkim=%s", st->record_at_org ? st->org : st->domain,
	    dmarc_policy_names[rec->p], rec->sp != DMARC_P_UNSET ? " sp=" : "",
	    rec->sp != DMARC_P_UNSET ? dmarc_policy_names[rec->sp] : "", rec->pct,
	    dmarc_policy_names[pol], sampled_out ? " (pct sampled out)" : "",
	    spf_al || dkim_al ? "none" : dmarc_policy_names[disp],
	    spf_al ? "aligned" : "unaligned", dkim_al ? "aligned" : "unaligned");

	if (spf_al || dkim_al) {
		api->set_result(ctx, "pass", reason);
		api->add_auth_result(ctx, "dmarc", "pass", props);
		return FMX_CONTINUE;
	}
	api->add_auth_result(ctx, "dmarc", "fail", props);
	switch (disp) {
	case DMARC_P_REJECT:
		snprintf(reply, sizeof reply,
		    "550 5.7.1 Email rejected per DMARC policy for %s", st->domain);
		api->set_reply(ctx, reply);
		api->set_result(ctx, "reject", reason);
		return FMX_REJECT;
	case DMARC_P_QUARANTINE:
		api->set_result(ctx, "quarantine", reason);
		return FMX_QUARANTINE;
	default:
		api->set_result(ctx, "fail", reason);
		return FMX_CONTINUE;
	}
}

/* What one _dmarc answer means for the discovery (RFC 7489 6.6.3). */
static void
dmarc_answer(struct dmarc_msg *st, int rcode, const unsigned char *pkt,
    size_t len)
{
	const char *asked = st->stage == DMARC_ST_ASK_ORG ? st->org : st->domain;
	struct dmarc_record rec;
	int n = 0;

	if (rcode != 0 && rcode != DMARC_RCODE_NXDOMAIN) {
		st->temperror = 1;
		if (rcode < 0)
			snprintf(st->note, sizeof st->note, "no DNS answer for "
			    DMARC_PREFIX "%.60s", asked);
		else
			snprintf(st->note, sizeof st->note, "DNS rcode %d for "
			    DMARC_PREFIX "%.60s", rcode, asked);
		st->stage = DMARC_ST_DONE;
		return;
	}
	if (rcode == 0 && (n = dmarc_dns_scan(pkt, len, &rec)) < 0) {
		st->temperror = 1;
		snprintf(st->note, sizeof st->note, "malformed DNS answer for "
		    DMARC_PREFIX "%.60s", asked);
		st->stage = DMARC_ST_DONE;
		return;
	}
	if (n == 0) {
		/* Step 3: none at the author domain: try the organizational one. */
		if (st->stage == DMARC_ST_ASK_AUTHOR && strcmp(st->org, st->domain) != 0) {
			st->stage = DMARC_ST_ASK_ORG;
			return;
		}
		snprintf(st->note, sizeof st->note, "no DMARC record");
	} else if (n > 1)
		/* Step 5: several records, no policy. */
		snprintf(st->note, sizeof st->note, "%d DMARC records at "
		    DMARC_PREFIX "%.60s", n, asked);
	else if (rec.too_long)
		snprintf(st->note, sizeof st->note, "DMARC record at "
		    DMARC_PREFIX "%.60s too long, ignored", asked);
	else if (rec.p < DMARC_P_NONE || rec.sp == DMARC_P_INVALID) {
		if (rec.has_rua) {
			/* Step 6: read as p=none, reports still wanted. */
			rec.p = DMARC_P_NONE;
			rec.sp = DMARC_P_UNSET;
			st->rec = rec;
			st->have_record = 1;
		} else
			snprintf(st->note, sizeof st->note, "invalid DMARC record at "
			    DMARC_PREFIX "%.60s, ignored", asked);
	} else {
		st->rec = rec;
		st->have_record = 1;
	}
	st->record_at_org = st->have_record && st->stage == DMARC_ST_ASK_ORG;
	st->stage = DMARC_ST_DONE;
}

static void dmarc_dns_cb(struct fmx_ctx *, void *, int, const unsigned char *,
    size_t);

/*
 * Runs the discovery from the current stage: asks the next question,
 * or finishes.  FMX_PENDING while an answer is outstanding.  An answer
 * that comes inside api->dns_query() (from the resolver's cache) is
 * taken up here, never resumed from the callback.
 */
static enum fmx_verdict
dmarc_run(const struct dmarc_inst *di, struct fmx_ctx *ctx, struct dmarc_msg *st)
{
	char qname[DMARC_DOMAIN_MAX + sizeof DMARC_PREFIX];	/* names are checked */
	int r;

	while (st->stage == DMARC_ST_ASK_AUTHOR || st->stage == DMARC_ST_ASK_ORG) {
		snprintf(qname, sizeof qname, DMARC_PREFIX "%s",
		    st->stage == DMARC_ST_ASK_ORG ? st->org : st->domain);
		st->answered = 0;
		st->waiting = 1;
		st->in_query = 1;
		r = di->api->dns_query(ctx, qname, DMARC_TXT, dmarc_dns_cb,
		    (void *)(uintptr_t)di);
		st->in_query = 0;
		if (st->answered)
			continue;
		if (r == -1) {
			st->waiting = 0;
			st->temperror = 1;
			snprintf(st->note, sizeof st->note, "DNS query refused");
			break;
		}
		return FMX_PENDING;
	}
	return dmarc_finish(di, ctx, st);
}

static void
dmarc_dns_cb(struct fmx_ctx *ctx, void *arg, int rcode,
    const unsigned char *answer, size_t len)
{
	const struct dmarc_inst *di = arg;
	struct dmarc_msg *st = di->api->msg_data(ctx);
	enum fmx_verdict v;

	/* Not ours, or stale: nothing is waiting for it. */
	if (st == NULL || !st->waiting)
		return;
	st->waiting = 0;
	dmarc_answer(st, rcode, answer, len);
	st->answered = 1;
	if (st->in_query)
		return;
	v = dmarc_run(di, ctx, st);
	if (v != FMX_PENDING)
		di->api->resume(ctx, v);
}

static void
dmarc_msg_free(void *p)
{
	free(p);
}

/* This message's state, created on first use; NULL without memory. */
static struct dmarc_msg *
dmarc_msg(const struct dmarc_inst *di, struct fmx_ctx *ctx)
{
	struct dmarc_msg *st = di->api->msg_data(ctx);

	if (st != NULL)
		return st;
	if ((st = calloc(1, sizeof *st)) == NULL) {
		di->api->log(ctx, FMX_LOG_WARN, "dmarc: error=\"out of memory\"");
		return NULL;
	}
	di->api->set_msg_data(ctx, st, dmarc_msg_free);
	return st;
}

/* Message-ID without blanks and folds, cut at DMARC_MSGID_MAX. */
static void
dmarc_copy_msgid(char *out, const char *v)
{
	size_t n = 0;

	for (; *v != '\0' && n < DMARC_MSGID_MAX; v++)
		if (!dmarc_wsp((unsigned char)*v))
			out[n++] = *v;
	out[n] = '\0';
}

/* A space-separated list, cut only between its elements. */
static void
dmarc_copy_list(char *out, size_t outlen, const char *list)
{
	size_t n = strlen(list);

	if (n >= outlen) {
		for (n = outlen - 1; n > 0 && list[n] != ' '; n--)
			;
	}
	memcpy(out, list, n);
	out[n] = '\0';
}

static enum fmx_verdict
dmarc_header(void *inst, struct fmx_ctx *ctx, const char *name,
    const char *value)
{
	const struct dmarc_inst *di = inst;
	struct dmarc_msg *st;
	const char *err = NULL;

	if (str_casecmp(name, "From") != 0 && str_casecmp(name, "Message-ID") != 0)
		return FMX_CONTINUE;
	if ((st = dmarc_msg(di, ctx)) == NULL)
		return FMX_TEMPFAIL;
	if (str_casecmp(name, "Message-ID") == 0) {
		if (st->msgid[0] == '\0')
			dmarc_copy_msgid(st->msgid, value);
		return FMX_CONTINUE;
	}
	/* RFC 5322 3.6: exactly one From; RFC 7489 6.6.1. */
	if (++st->nfrom > 1)
		snprintf(st->from_err, sizeof st->from_err,
		    "multiple From header fields");
	else if (dmarc_from_parse(value, st->domain, sizeof st->domain, &err) == -1)
		snprintf(st->from_err, sizeof st->from_err, "%s", err);
	return FMX_CONTINUE;
}

static enum fmx_verdict
dmarc_eom(void *inst, struct fmx_ctx *ctx)
{
	const struct dmarc_inst *di = inst;
	const struct fmx_api *api = di->api;
	struct dmarc_msg *st;
	const char *spf, *dom, *dkim, *qid;
	char reply[DMARC_ERR_MAX + 40], props[DMARC_DOMAIN_MAX + 16];

	if ((st = dmarc_msg(di, ctx)) == NULL)
		return FMX_TEMPFAIL;
	if (st->stage != DMARC_ST_HEADERS)
		return FMX_CONTINUE;	/* cannot happen: eom runs once */
	if (st->nfrom == 0)
		snprintf(st->from_err, sizeof st->from_err, "no From header field");
	if (st->from_err[0] != '\0') {
		/* 6.6.1: no single author domain to evaluate. */
		st->stage = DMARC_ST_DONE;
		snprintf(reply, sizeof reply, "550 5.7.1 Email rejected: %s",
		    st->from_err);
		api->set_reply(ctx, reply);
		api->set_result(ctx, "permerror", st->from_err);
		if (st->nfrom == 1 && st->domain[0] != '\0') {
			snprintf(props, sizeof props, "header.from=%s", st->domain);
			api->add_auth_result(ctx, "dmarc", "permerror", props);
		} else
			api->add_auth_result(ctx, "dmarc", "permerror", NULL);
		return FMX_REJECT;
	}
	dmarc_org_domain(di, st->domain, st->org, sizeof st->org);

	/* The SPF and DKIM filters ran before us (see DESCRIPTION). */
	spf = api->get(ctx, "fact.spf.result");
	dom = api->get(ctx, "fact.spf.domain");
	/* Never a cut copy: a prefix of a long name may be another name. */
	if (spf != NULL && str_casecmp(spf, "pass") == 0 && dom != NULL &&
	    strlen(dom) < sizeof st->spf_domain)
		memcpy(st->spf_domain, dom, strlen(dom) + 1);
	if ((dkim = api->get(ctx, "fact.dkim.pass")) != NULL)
		dmarc_copy_list(st->dkim_pass, sizeof st->dkim_pass, dkim);
	if ((qid = api->get(ctx, "queue.id")) != NULL)
		snprintf(st->queue_id, sizeof st->queue_id, "%s", qid);

	st->stage = DMARC_ST_ASK_AUTHOR;
	return dmarc_run(di, ctx, st);
}

static void
dmarc_fini(void *inst)
{
	struct dmarc_inst *di = inst;

	if (di == NULL)
		return;
	psl_free(di->psl_owned);
	free(di);
}

static int
dmarc_init(const struct fmx_api *api, const char *const *options,
    size_t noptions, void **instance)
{
	struct dmarc_inst *di;
	static const char *const known[] = { "psl", "honor_pct", "pct_seed", NULL };
	const char *path = NULL, *seed = NULL;
	int seeded;

	*instance = NULL;
	if ((di = calloc(1, sizeof *di)) == NULL) {
		api->log(NULL, FMX_LOG_WARN, "dmarc: error=\"out of memory\"");
		return -1;
	}
	di->api = api;
	di->honor_pct = 1;
	/* The getters every module has (API 1.2): the core names a bad value. */
	if (api->option_check(options, noptions, known) == -1 ||
	    api->option_string(options, noptions, "psl", &path) == -1 ||
	    api->option_bool(options, noptions, "honor_pct", &di->honor_pct) == -1 ||
	    (seeded = api->option_string(options, noptions, "pct_seed",
	    &seed)) == -1) {
		api->log(NULL, FMX_LOG_WARN, "dmarc: invalid options (known: psl = "
		    "PATH, honor_pct = boolean, pct_seed = STRING)");
		goto fail;
	}
	if (seeded) {
		if (strlen(seed) > DMARC_SEED_MAX) {
			api->log(NULL, FMX_LOG_WARN, "dmarc: pct_seed longer "
			    "than %d characters", DMARC_SEED_MAX);
			goto fail;
		}
		di->pct_seeded = 1;
		snprintf(di->pct_seed, sizeof di->pct_seed, "%s", seed);
	}
	if (path != NULL) {
		if (*path == '\0' || (di->psl_owned = psl_load_file(path)) == NULL) {
			api->log(NULL, FMX_LOG_WARN, "dmarc: psl \"%s\": cannot "
			    "load the public suffix list", path);
			goto fail;
		}
	} else if ((di->psl_owned = psl_load_file(DMARC_PSL_DEFAULT)) == NULL)
		api->log(NULL, FMX_LOG_INFO, "dmarc: %s cannot be read, using "
		    "libpsl's built-in public suffix list", DMARC_PSL_DEFAULT);
	di->psl = di->psl_owned != NULL ? di->psl_owned : psl_builtin();
	if (di->psl == NULL) {
		api->log(NULL, FMX_LOG_WARN, "dmarc: no public suffix list "
		    "(install publicsuffix or set option psl)");
		goto fail;
	}
	*instance = di;
	return 0;
fail:
	dmarc_fini(di);
	return -1;
}

static const struct fmx_filter dmarc_table = {
	.abi_major = FMX_ABI_MAJOR,
	.abi_minor = FMX_ABI_MINOR,
	.struct_size = sizeof(struct fmx_filter),
	.name = "dmarc",
	.init = dmarc_init,
	.fini = dmarc_fini,
	.on_header = dmarc_header,
	.on_eom = dmarc_eom,
};

const struct fmx_filter *
dmarc_filter(void)
{
	return &dmarc_table;
}
