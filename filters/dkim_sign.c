/*
 * dkim_sign.c - the signing half of the built-in DKIM filter: which
 * clients are trusted, the From domain that picks the keys, the keys
 * themselves, and signing a message read back from the spool
 *
 * NAME
 *	dkim_sign_trusted, dkim_sign_from_domain, dkim_sign_message,
 *	dkim_sign_parse_keys, dkim_sign_parse_trusted
 *
 * SYNOPSIS
 *	#include "dkim_int.h"
 *
 *	int dkim_sign_trusted(const struct dkim_inst *, struct fmx_ctx *);
 *	int dkim_sign_from_domain(const char *v, char *out, size_t outlen);
 *	int dkim_sign_message(struct dkim_msg *, struct fmx_ctx *);
 *	int dkim_sign_parse_keys(struct dkim_inst *, const char *v);
 *	int dkim_sign_parse_trusted(struct dkim_inst *, const char *v);
 *
 * DESCRIPTION
 *	dkim_sign_trusted() says whether the client may have its mail
 *	signed: it authenticated (and sign_authenticated is on) or its
 *	address is in one of the `trusted` networks (an IPv4-mapped IPv6
 *	address counts as IPv4).
 *
 *	dkim_sign_from_domain() gives the lower-case domain of the one
 *	mailbox of a From field (RFC 5322 3.4, 3.6.2), or -1 for none,
 *	several, a group or a domain literal: such mail is not signed.
 *
 *	dkim_sign_message() signs with every key of the From domain, all
 *	fed by one pass over the spool (the bytes as received), and adds
 *	the DKIM-Signature fields; 0, or -1 (logged).
 *
 *	dkim_sign_parse_keys() loads the `sign` option's PEM keys, tells
 *	RSA from Ed25519 by trying them, and refuses a key whose test
 *	signature does not fit the core's 900-octet header value.
 *	dkim_sign_parse_trusted() reads the `trusted` networks (host bits
 *	must be zero).  Both log what they refuse and return -1.
 *
 * LIMITS
 *	At most DKIM_KEYS_MAX keys, DKIM_KEYS_PER_DOMAIN per domain,
 *	DKIM_NETS_MAX networks; key files up to DKIM_KEYFILE_MAX octets.
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
#include "netaddr.h"
#include "strutil.h"

/* ---------------------------------------------------------------- */
/* Trusted clients */

/* Is the client trusted: authenticated (sign_authenticated), or in `trusted`? */
int
dkim_sign_trusted(const struct dkim_inst *di, struct fmx_ctx *ctx)
{
	const char *addr, *auth;

	if (di->sign_auth && (auth = di->api->get(ctx, "auth")) != NULL &&
	    *auth != '\0')
		return 1;
	if (di->nnets == 0 || (addr = di->api->get(ctx, "client.addr")) == NULL)
		return 0;
	/* An IPv4-mapped IPv6 client matches IPv4 networks (netaddr.h). */
	return netaddr_mask_match_text(di->nets, di->nnets, addr);
}

/* ---------------------------------------------------------------- */
/* The From domain, for choosing a signing key */

/* Where dkim_sign_from_domain() is in a From field value. */
struct dkim_sign_from {
	char	addr[1024];	/* the address found so far */
	char	seg[1024];	/* the current segment, comments dropped */
	size_t	alen, slen, mailboxes;
	int	depth;		/* comment nesting */
	int	inq, inangle, angled;
	int	ws;		/* a blank (or comment) since the last octet */
	int	gap;		/* a blank inside the segment: not an address */
	int	addr_gap;
};

/*
 * One octet inside a quoted string or a comment; returns p, moved over
 * an escaped octet.  A quoted octet has no meaning: it stands as 'q'.
 */
static const char *
dkim_sign_from_inner(struct dkim_sign_from *f, const char *p)
{
	int c = (unsigned char)*p;

	if (f->inq) {
		if (c == '\\' && p[1] != '\0')
			p++;
		else if (c == '"')
			f->inq = 0;
		if (f->slen + 1 < sizeof f->seg)
			f->seg[f->slen++] = 'q';
		return p;
	}
	if (c == '\\' && p[1] != '\0')
		p++;
	else if (c == '(')
		f->depth++;
	else if (c == ')')
		f->depth--;
	return p;
}

/* The end of a mailbox (',' outside <>, or the end): -1 for a second one. */
static int
dkim_sign_from_mailbox(struct dkim_sign_from *f)
{
	f->seg[f->slen] = '\0';
	if (f->slen > 0 || f->angled) {
		if (++f->mailboxes > 1)
			return -1;
		if (!f->angled) {
			memcpy(f->addr, f->seg, f->slen + 1);
			f->alen = f->slen;
			f->addr_gap = f->gap;
		}
	}
	f->slen = 0;
	f->ws = f->gap = 0;
	return 0;
}

/* Any other octet: 0, or -1 when the field is not one plain mailbox. */
static int
dkim_sign_from_octet(struct dkim_sign_from *f, int c)
{
	switch (c) {
	case '"':
		f->inq = 1;
		break;
	case '(':
		f->depth = 1;
		f->ws = 1;		/* a comment separates like a blank */
		break;
	case '<':
		if (f->inangle || f->angled)
			return -1;
		f->inangle = 1;
		f->slen = 0;
		f->ws = f->gap = 0;
		break;
	case '>':
		if (!f->inangle)
			return -1;
		f->inangle = 0;
		f->angled = 1;
		f->seg[f->slen] = '\0';
		memcpy(f->addr, f->seg, f->slen + 1);
		f->alen = f->slen;
		f->addr_gap = f->gap;
		f->slen = 0;
		break;
	case ':':
	case ';':
		if (!f->inangle)
			return -1;	/* a group */
		break;
	case ' ':
	case '\t':
	case '\r':
	case '\n':
		f->ws = 1;
		break;
	default:
		if (f->angled)
			break;		/* display text after the address */
		if (f->slen + 1 >= sizeof f->seg)
			return -1;
		/* "exa mple.com": blanks may only surround '.' and '@' */
		if (f->ws && f->slen > 0 && f->seg[f->slen - 1] != '.' &&
		    f->seg[f->slen - 1] != '@' && c != '.' && c != '@')
			f->gap = 1;
		f->ws = 0;
		f->seg[f->slen++] = (char)c;
	}
	return 0;
}

/*
 * The domain of the one mailbox of a From field (RFC 5322 3.4, 3.6.2),
 * lower case.  -1 for none, several, a group, or a domain literal: such
 * mail is not signed (it would not align for DMARC either).  Comments
 * are dropped; quoted strings cannot hide a '@', ',' or '<'.
 */
int
dkim_sign_from_domain(const char *v, char *out, size_t outlen)
{
	struct dkim_sign_from f;
	const char *at, *p;

	memset(&f, 0, sizeof f);
	for (p = v;; p++) {
		int c = (unsigned char)*p;

		if (c != '\0' && (f.inq || f.depth > 0)) {
			p = dkim_sign_from_inner(&f, p);
			continue;
		}
		if (c == '\0' || (c == ',' && !f.inangle)) {
			if (dkim_sign_from_mailbox(&f) == -1)
				return -1;
			if (c == '\0')
				break;
			continue;
		}
		if (dkim_sign_from_octet(&f, c) == -1)
			return -1;
	}
	if (f.inq || f.depth > 0 || f.inangle || f.mailboxes != 1 || f.alen == 0 ||
	    f.addr_gap)
		return -1;
	if ((at = strrchr(f.addr, '@')) == NULL || at == f.addr || at[1] == '[')
		return -1;
	if (strlen(at + 1) >= outlen || !dkim_name_ok(at + 1))
		return -1;
	snprintf(out, outlen, "%s", at + 1);
	str_lower(out);
	return 0;
}

/* ---------------------------------------------------------------- */
/* Signing */

/*
 * libopendkim 2.11.0 (Debian 12, and upstream to date) frees the key
 * material of a signing handle only for RSA: dkim_free() has
 * "if (sig_keytype == DKIM_KEYTYPE_RSA) { BIO, EVP_PKEY, RSA, out }", so
 * every Ed25519 signature leaks its EVP_PKEY, BIO and output buffer
 * (about 550 octets).  The RSA branch frees exactly those members and
 * the RSA pointer is NULL for Ed25519, so relabelling a finished Ed25519
 * handle as RSA (0) lets dkim_free() release it all.  The struct mirrors
 * struct dkim_siginfo of dkim-types.h in that release; it is written only
 * when the library version matches and the public getters agree with it
 * field by field; otherwise the leak stays and nothing is touched.
 */
struct dkim_siginfo_2_11 {
	int		 sig_dnssec_key;
	u_int		 sig_flags;
	u_int		 sig_error;
	u_int		 sig_bh;
	u_int		 sig_version;
	u_int		 sig_hashtype;
	u_int		 sig_keytype;
	u_int		 sig_keybits;
	size_t		 sig_siglen;
	size_t		 sig_keylen;
	size_t		 sig_b64keylen;
	int		 sig_query;
	dkim_alg_t	 sig_signalg;
	dkim_canon_t	 sig_hdrcanonalg;
	dkim_canon_t	 sig_bodycanonalg;
	uint64_t	 sig_timestamp;
	u_char		*sig_domain;
	u_char		*sig_selector;
	u_char		*sig_sig;
	u_char		*sig_key;
	u_char		*sig_b64key;
	void		*sig_context;
	void		*sig_signature;
	void		*sig_hdrcanon;
	void		*sig_bodycanon;
	void		*sig_taglist;
	void		*sig_keytaglist;
	void		*sig_sslerrbuf;
};

#define DKIM_LIB_2_11		0x020B0000
#define DKIM_KEYTYPE_RSA_2_11	0
#define DKIM_KEYTYPE_ED_2_11	1

static void
dkim_sign_free(DKIM *h)
{
	DKIM_SIGINFO **sigs;
	struct dkim_siginfo_2_11 *s;
	dkim_alg_t alg;
	unsigned bits;
	int n;

	if (dkim_libversion() == DKIM_LIB_2_11 &&
	    dkim_getsiglist(h, &sigs, &n) == DKIM_STAT_OK && n == 1 &&
	    dkim_sig_getsignalg(sigs[0], &alg) == DKIM_STAT_OK &&
	    alg == DKIM_SIGN_ED25519SHA256 &&
	    dkim_sig_getkeysize(sigs[0], &bits) == DKIM_STAT_OK) {
		s = (struct dkim_siginfo_2_11 *)sigs[0];
		if (s->sig_signalg == alg && s->sig_keybits == bits &&
		    s->sig_flags == dkim_sig_getflags(sigs[0]) &&
		    s->sig_bh == (u_int)dkim_sig_getbh(sigs[0]) &&
		    s->sig_domain == dkim_sig_getdomain(sigs[0]) &&
		    s->sig_selector == dkim_sig_getselector(sigs[0]) &&
		    s->sig_signature != NULL &&
		    s->sig_keytype == DKIM_KEYTYPE_ED_2_11)
			s->sig_keytype = DKIM_KEYTYPE_RSA_2_11;
	}
	dkim_free(h);
}

/*
 * Sign with every key of the From domain: one pass over the spool feeds
 * all signers.  0 signed, -1 failed (logged).
 */
int
dkim_sign_message(struct dkim_msg *m, struct fmx_ctx *ctx)
{
	const struct dkim_inst *di = m->di;
	const struct fmx_api *api = di->api;
	DKIM *h[DKIM_KEYS_PER_DOMAIN];
	const struct dkim_key *k[DKIM_KEYS_PER_DOMAIN];
	int want[DKIM_KEYS_PER_DOMAIN];
	struct dkim_reader *r = NULL;
	char *val = NULL;
	size_t n = 0, i, nfields, pendlen;
	uint64_t total;
	DKIM_STAT st;
	int ret = -1;

	for (i = 0; i < di->nkeys && n < DKIM_KEYS_PER_DOMAIN; i++)
		if (str_casecmp(di->keys[i].domain, m->from_domain) == 0)
			k[n++] = &di->keys[i];
	for (i = 0; i < n; i++)
		h[i] = NULL;
	for (i = 0; i < n; i++) {
		h[i] = dkim_sign(di->lib, (u_char *)m->id, NULL,
		    (dkim_sigkey_t)k[i]->pem, (u_char *)k[i]->selector,
		    (u_char *)k[i]->domain, di->hcanon, di->bcanon, k[i]->alg,
		    -1, &st);
		if (h[i] == NULL) {
			api->log(ctx, FMX_LOG_WARN, "dkim: error=\"dkim_sign: %s\"",
			    dkim_getresultstr(st));
			goto out;
		}
		/* One line: the core takes header values without CR/LF. */
		(void)dkim_set_margin(h[i], 0);
		want[i] = 1;
	}
	if ((r = calloc(1, sizeof *r)) == NULL ||
	    (val = malloc(DKIM_SIGHDR_BUF)) == NULL)
		goto out;
	r->api = api;
	r->ctx = ctx;
	if (dkim_spool_head(r, h, n, &nfields, &pendlen) == -1) {
		api->log(ctx, FMX_LOG_WARN, "dkim: error=\"cannot read the message\"");
		goto out;
	}
	for (i = 0; i < n; i++)
		if ((st = dkim_eoh(h[i])) != DKIM_STAT_OK) {
			api->log(ctx, FMX_LOG_WARN, "dkim: error=\"signing: %s\"",
			    dkim_geterror(h[i]) ? dkim_geterror(h[i]) :
			    dkim_getresultstr(st));
			goto out;
		}
	if (dkim_spool_body(r, h, want, n, pendlen, &total) != 0) {
		api->log(ctx, FMX_LOG_WARN, "dkim: error=\"cannot read the message\"");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((st = dkim_eom(h[i], NULL)) != DKIM_STAT_OK ||
		    (st = dkim_getsighdr(h[i], (u_char *)val, DKIM_SIGHDR_BUF,
		    sizeof "DKIM-Signature: " - 1)) != DKIM_STAT_OK) {
			api->log(ctx, FMX_LOG_WARN, "dkim: error=\"signing: %s\"",
			    dkim_geterror(h[i]) ? dkim_geterror(h[i]) :
			    dkim_getresultstr(st));
			goto out;
		}
		if (strpbrk(val, "\r\n") != NULL ||
		    api->insert_header(ctx, 0, "DKIM-Signature", val) == -1) {
			api->log(ctx, FMX_LOG_WARN, "dkim: error=\"DKIM-Signature "
			    "refused by the core (%zu octets)\" d=%s s=%s",
			    strlen(val), k[i]->domain, k[i]->selector);
			goto out;
		}
		api->log(ctx, FMX_LOG_INFO, "dkim: signed d=%s s=%s a=%s",
		    k[i]->domain, k[i]->selector,
		    k[i]->alg == DKIM_SIGN_ED25519SHA256 ? "ed25519-sha256" :
		    "rsa-sha256");
	}
	if (total != m->bodylen || nfields != m->nfields)
		api->log(ctx, FMX_LOG_WARN, "dkim: the spool (%zu fields, %llu body "
		    "octets) differs from the hooks (%zu, %llu)", nfields,
		    (unsigned long long)total, m->nfields,
		    (unsigned long long)m->bodylen);
	/* For DMARC on outbound mail: what the relayed message will carry. */
	(void)api->set_fact(ctx, "dkim.signed", m->from_domain);
	ret = 0;
out:
	for (i = 0; i < n; i++)
		if (h[i] != NULL)
			dkim_sign_free(h[i]);
	free(val);
	dkim_reader_free(r);
	return ret;
}

int
dkim_sign_parse_trusted(struct dkim_inst *di, const char *v)
{
	char item[INET6_ADDRSTRLEN + 8];
	const char *p = v;
	int toolong, hostbits;

	while ((p = dkim_list_next(p, item, sizeof item, &toolong)) != NULL) {
		if (di->nnets == DKIM_NETS_MAX) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: trusted: more than "
			    "%d networks", DKIM_NETS_MAX);
			return -1;
		}
		if (di->nets == NULL &&
		    (di->nets = calloc(DKIM_NETS_MAX, sizeof *di->nets)) == NULL)
			return -1;
		/* Host bits set ("10.1.2.3/8") is a typo, as in relay.networks. */
		if (netaddr_mask_parse(item, &di->nets[di->nnets], &hostbits) == -1 ||
		    hostbits) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: trusted: \"%s\" is not "
			    "an address or network (host bits must be zero)", item);
			return -1;
		}
		di->nnets++;
	}
	if (toolong) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: trusted: item too long");
		return -1;
	}
	return 0;
}

static char *
dkim_sign_read_file(const struct dkim_inst *di, const char *path)
{
	struct stat st;
	char *buf = NULL;
	ssize_t n;
	size_t got = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) ||
	    st.st_size <= 0 || st.st_size > DKIM_KEYFILE_MAX) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: not a key file "
		    "(a regular file of at most %d octets)", path, DKIM_KEYFILE_MAX);
		goto fail;
	}
	if (st.st_mode & (S_IROTH | S_IWOTH))
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: private key readable "
		    "by others (chmod 600 or 640)", path);
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL)
		goto fail;
	while (got < (size_t)st.st_size) {
		n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	if (strlen(buf) != got || strncmp(buf, "-----BEGIN ", 11) != 0 ||
	    strstr(buf, "ENCRYPTED") != NULL) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: expected an unencrypted "
		    "PEM private key", path);
		free(buf);
		return NULL;
	}
	return buf;
fail:
	free(buf);
	close(fd);
	return NULL;
}

/*
 * A test signature with one of each sign_headers field: proves the key
 * loads for alg, and measures the value the core will be handed.
 * 0 ok, -1 this algorithm does not fit the key, -2 too long.
 */
static int
dkim_sign_key_test(const struct dkim_inst *di, struct dkim_key *k, dkim_alg_t alg,
    size_t *vlen)
{
	char msg[DKIM_HDRNAMES_MAX * (DKIM_HDRNAME_MAX + 8) + 512];
	char *val = NULL;
	DKIM_SIGINFO **sigs;
	DKIM_STAT st;
	DKIM *h;
	size_t i, off = 0;
	int n, ret = -1, nsigs;
	unsigned bits = 0;
	char *p, *e;

	h = dkim_sign(di->lib, (u_char *)"frontmx-keytest", NULL,
	    (dkim_sigkey_t)k->pem, (u_char *)k->selector, (u_char *)k->domain,
	    di->hcanon, di->bcanon, alg, -1, &st);
	if (h == NULL)
		return -1;
	(void)dkim_set_margin(h, 0);
	for (i = 0; di->signhdrs[i] != NULL; i++) {
		n = snprintf(msg + off, sizeof msg - off, "%s: %s\r\n",
		    di->signhdrs[i], strcmp(di->signhdrs[i], "from") == 0 ?
		    "key test <postmaster@example.invalid>" : "x");
		if (n < 0 || (size_t)n >= sizeof msg - off)
			goto out;
		off += (size_t)n;
	}
	/* Fields one at a time, as the signer gets them. */
	for (p = msg; p < msg + off; p = e + 2) {
		e = strstr(p, "\r\n");
		if (dkim_header(h, (u_char *)p, (size_t)(e - p)) != DKIM_STAT_OK)
			goto out;
	}
	if (dkim_eoh(h) != DKIM_STAT_OK ||
	    dkim_body(h, (u_char *)"key test\r\n", 10) != DKIM_STAT_OK ||
	    dkim_eom(h, NULL) != DKIM_STAT_OK ||
	    (val = malloc(DKIM_SIGHDR_BUF)) == NULL ||
	    dkim_getsighdr(h, (u_char *)val, DKIM_SIGHDR_BUF,
	    sizeof "DKIM-Signature: " - 1) != DKIM_STAT_OK)
		goto out;
	if (dkim_getsiglist(h, &sigs, &nsigs) == DKIM_STAT_OK && nsigs > 0)
		(void)dkim_sig_getkeysize(sigs[0], &bits);
	k->bits = bits;
	*vlen = strlen(val);
	ret = *vlen > DKIM_HDRVAL_MAX ? -2 : 0;
out:
	free(val);
	dkim_sign_free(h);
	return ret;
}

/*
 * The key type from the PEM itself: "RSA PRIVATE KEY" is PKCS#1; a
 * PKCS#8 "PRIVATE KEY" names its algorithm by OID near the start of the
 * DER.  Not by trial: libopendkim leaks a key it fails to load.
 * DKIM_SIGN_UNKNOWN when neither.
 */
static dkim_alg_t
dkim_sign_key_type(const char *pem)
{
	static const unsigned char oid_rsa[] =
	    { 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01 };
	static const unsigned char oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char der[48];
	const char *p, *c;
	unsigned acc = 0, bits = 0;
	size_t n = 0, i;

	if (strncmp(pem, "-----BEGIN RSA PRIVATE KEY-----", 31) == 0)
		return DKIM_SIGN_RSASHA256;
	if (strncmp(pem, "-----BEGIN PRIVATE KEY-----", 27) != 0)
		return DKIM_SIGN_UNKNOWN;
	for (p = pem + 27; *p != '\0' && *p != '-' && n < sizeof der; p++) {
		if ((c = strchr(b64, *p)) == NULL)
			continue;	/* line ends, '=' */
		acc = (acc << 6) | (unsigned)(c - b64);
		if ((bits += 6) >= 8) {
			bits -= 8;
			der[n++] = (unsigned char)(acc >> bits);
		}
	}
	for (i = 0; i + sizeof oid_rsa <= n; i++)
		if (memcmp(der + i, oid_rsa, sizeof oid_rsa) == 0)
			return DKIM_SIGN_RSASHA256;
	for (i = 0; i + sizeof oid_ed25519 <= n; i++)
		if (memcmp(der + i, oid_ed25519, sizeof oid_ed25519) == 0)
			return DKIM_SIGN_ED25519SHA256;
	return DKIM_SIGN_UNKNOWN;
}

int
dkim_sign_key_load(struct dkim_inst *di, struct dkim_key *k)
{
	size_t vlen = 0;
	int r = -1;

	if ((k->pem = dkim_sign_read_file(di, k->path)) == NULL)
		return -1;
	k->alg = dkim_sign_key_type(k->pem);
	if (k->alg == DKIM_SIGN_UNKNOWN ||
	    (k->alg == DKIM_SIGN_ED25519SHA256 &&
	    !dkim_libfeature(di->lib, DKIM_FEATURE_ED25519))) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: neither an RSA nor an "
		    "Ed25519 private key (PEM, PKCS#1 or PKCS#8)", k->path);
		return -1;
	}
	r = dkim_sign_key_test(di, k, k->alg, &vlen);
	if (r == -1) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: the %s key does not "
		    "sign (damaged, or RSA under %u bits)", k->path,
		    k->alg == DKIM_SIGN_RSASHA256 ? "RSA" : "Ed25519",
		    DKIM_MINBITS_DEFAULT);
		return -1;
	}
	if (r == -2) {
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: its DKIM-Signature "
		    "would be %zu octets, over the %d the core accepts in one "
		    "header value: use a smaller key or fewer sign_headers",
		    k->path, vlen, DKIM_HDRVAL_MAX);
		return -1;
	}
	if (k->alg == DKIM_SIGN_RSASHA256 && k->bits < 2048)
		di->api->log(NULL, FMX_LOG_WARN, "dkim: %s: %u-bit RSA key; 2048 "
		    "bits are recommended (RFC 8301 3.2)", k->path, k->bits);
	return 0;
}

int
dkim_sign_parse_keys(struct dkim_inst *di, const char *v)
{
	char item[DKIM_OPTVAL_MAX];
	const char *p = v, *e;
	struct dkim_key *k;
	char *c1, *c2;
	size_t len, i, same;

	while (*p != '\0') {
		e = strchr(p, ',');
		len = e != NULL ? (size_t)(e - p) : strlen(p);
		if (dkim_trim_copy(item, sizeof item, p, len) == -1)
			return -1;
		p += len + (e != NULL);
		if (item[0] == '\0')
			continue;
		if (di->nkeys == DKIM_KEYS_MAX) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: sign: more than %d "
			    "keys", DKIM_KEYS_MAX);
			return -1;
		}
		if ((c1 = strchr(item, ':')) == NULL ||
		    (c2 = strchr(c1 + 1, ':')) == NULL) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: sign: \"%s\": "
			    "expected domain:selector:/path/key.pem", item);
			return -1;
		}
		*c1 = *c2 = '\0';
		if (!dkim_name_ok(item) || !dkim_name_ok(c1 + 1) || c2[1] == '\0') {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: sign: bad domain "
			    "\"%s\", selector \"%s\" or empty path", item, c1 + 1);
			return -1;
		}
		for (i = same = 0; i < di->nkeys; i++)
			if (str_casecmp(di->keys[i].domain, item) == 0)
				same++;
		if (same == DKIM_KEYS_PER_DOMAIN) {
			di->api->log(NULL, FMX_LOG_WARN, "dkim: sign: more than %d "
			    "keys for %s", DKIM_KEYS_PER_DOMAIN, item);
			return -1;
		}
		if (di->keys == NULL &&
		    (di->keys = calloc(DKIM_KEYS_MAX, sizeof *di->keys)) == NULL)
			return -1;
		k = &di->keys[di->nkeys++];
		if ((k->domain = strdup(item)) == NULL ||
		    (k->selector = strdup(c1 + 1)) == NULL ||
		    (k->path = strdup(c2 + 1)) == NULL)
			return -1;
		str_lower(k->domain);
	}
	return 0;
}
