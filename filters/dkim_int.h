/*
 * dkim_int.h - private to the dkim*.c files of the built-in DKIM filter:
 * limits, the per-instance, per-message and per-signature types, and the
 * functions one file lends another
 *
 * DESCRIPTION
 *	dkim.c (filter glue, verification, spool reader), dkim_sign.c
 *	(signing) and dkim_dns.c (key records) share these.  Nothing outside
 *	filters/dkim*.c includes it, except the unit test and the fuzz
 *	harness, which reach the static parsers by including the .c files
 *	whole.
 */
#ifndef FRONTMX_DKIM_INT_H
#define FRONTMX_DKIM_INT_H

#include <sys/types.h>

#include <stdint.h>

#include <opendkim/dkim.h>

#include "frontmx_filter.h"
#include "linebuf.h"
#include "netaddr.h"

#define DKIM_SIGS_DEFAULT	5
#define DKIM_SIGS_LIMIT		50
#define DKIM_MINBITS_DEFAULT	1024	/* RFC 8301 3.2 */
#define DKIM_MINBITS_LIMIT	4096
#define DKIM_NAME_MAX		253	/* a DNS name without the final dot */
#define DKIM_LABEL_MAX		63
#define DKIM_KEYREC_MAX		1024	/* libopendkim's key buffer (BUFRSZ) */
#define DKIM_HDRVAL_MAX		900	/* the core's limit for a header value */
#define DKIM_SIGHDR_BUF		2048
#define DKIM_KEYFILE_MAX	(64 * 1024)
/*
 * One spooled line: the core lets lines through up to its
 * limits.line_length (1000 by default, at most 1 MiB), and header lines up
 * to its header_size; the reader's buffer grows from 4 KiB to what the
 * message needs, so a long first body line does not stop signing.
 */
#define DKIM_LINE_START		4096
#define DKIM_LINE_MAX		(1048576 + 2)
#define DKIM_FIELD_MAX		(256 * 1024)	/* one field read from the spool */
#define DKIM_READ_CHUNK		16384
#define DKIM_PROPS_MAX		256	/* the core's property buffer, NUL included */
#define DKIM_REASON_MAX		200
#define DKIM_LOG_MAX		900
#define DKIM_FACT_MAX		512
#define DKIM_ALG_MAX		24
#define DKIM_KEYS_MAX		64	/* `sign` entries */
#define DKIM_KEYS_PER_DOMAIN	4
#define DKIM_NETS_MAX		256
#define DKIM_HDRNAMES_MAX	64
#define DKIM_HDRNAME_MAX	64
#define DKIM_OPTVAL_MAX		8192
/* dkim_eoh() re-runs only after answers came; this bounds a confused library. */
#define DKIM_EOH_ROUNDS		(DKIM_SIGS_LIMIT + 4)

#define DKIM_SIGN_HEADERS_DEFAULT \
	"from:from:reply-to:subject:date:message-id:to:cc:in-reply-to:" \
	"references:mime-version:content-type:content-transfer-encoding:" \
	"list-id:list-unsubscribe:list-unsubscribe-post"

#define DKIM_SIGN_REPLY		"451 4.7.0 DKIM signing failed, try again later"

/* Results, in the order a message result prefers them (higher wins). */
enum dkim_res {
	DKIM_RES_NONE = 0,
	DKIM_RES_PERMERROR,
	DKIM_RES_FAIL,
	DKIM_RES_POLICY,	/* per signature; "neutral" for the message */
	DKIM_RES_TEMPERROR,
	DKIM_RES_PASS,
	DKIM_RES_COUNT		/* must be last */
};

struct dkim_key {
	char		*domain;
	char		*selector;
	char		*path;
	char		*pem;		/* the file, NUL-terminated */
	dkim_alg_t	 alg;		/* DKIM_SIGN_RSASHA256 or _ED25519SHA256 */
	unsigned	 bits;
};

/* One configured instance; read-only after init. */
struct dkim_inst {
	const struct fmx_api	*api;
	DKIM_LIB		*lib;
	unsigned		 max_sigs;
	unsigned		 min_bits;
	int			 verify;
	int			 sign_auth;
	dkim_canon_t		 hcanon, bcanon;
	struct netaddr_mask	*nets;
	size_t			 nnets;
	struct dkim_key		*keys;
	size_t			 nkeys;
	/* NULL-terminated for DKIM_OPTS_SIGNHDRS / _OVERSIGNHDRS */
	char			*signhdrs[DKIM_HDRNAMES_MAX + 1];
	char			*oversign[DKIM_HDRNAMES_MAX + 1];
};

enum dkim_keystate {
	DKIM_KEY_PENDING = 0,
	DKIM_KEY_FOUND,
	DKIM_KEY_NONE,		/* NXDOMAIN, or no TXT record */
	DKIM_KEY_TEMPFAIL,	/* SERVFAIL, timeout, no resolver */
	DKIM_KEY_BADNAME,	/* d= or s= is not a DNS name */
	DKIM_KEY_BADREC		/* unusable answer: too long, NUL inside */
};

struct dkim_msg;

/* One key record of this message; also the DNS callback's argument. */
struct dkim_keyent {
	struct dkim_msg		*m;
	enum dkim_keystate	 state;
	char			 name[DKIM_NAME_MAX + 1];
	char			*txt;
};

/*
 * Canonicalized body length (RFC 6376 3.4.3, 3.4.4), counted as the body
 * goes by, to tell whether an l= signature covers the whole body.
 */
struct dkim_blen {
	uint64_t	done;		/* through the last non-empty line */
	uint64_t	blank;		/* empty lines since */
	uint64_t	line;		/* the current line so far */
	int		wsp;		/* relaxed: blanks pending */
};

/* Per message, owned by the core through api->set_msg_data(). */
struct dkim_msg {
	const struct dkim_inst	*di;
	struct fmx_ctx		*ctx;		/* set for the current call only */
	DKIM			*vd;		/* verifier; NULL: not verifying */
	DKIM_STAT		 eoh_stat;
	int			 eoh_done;
	int			 waiting;	/* on_eoh returned FMX_PENDING */
	int			 in_eoh;	/* inside dkim_eoh(): answers only record */
	int			 no_fetch;	/* second pass: keys from the cache only */
	int			 internal;	/* a library call failed */
	unsigned		 outstanding;	/* DNS queries not answered yet */
	int			 sign;		/* decided at eoh */
	int			 need_blen;	/* some signature has l= */
	size_t			 nfields;
	size_t			 nsigfields;	/* DKIM-Signature fields */
	size_t			 nfrom;
	int			 from_bad;
	char			 from_domain[DKIM_NAME_MAX + 1];
	uint64_t		 bodylen;
	struct dkim_blen	 blen[2];	/* [DKIM_CANON_SIMPLE], [_RELAXED] */
	struct dkim_keyent	*keys;		/* max_sigs entries, never moved */
	size_t			 nkeys;
	char			 id[40];
};

/* One signature's outcome, as reported. */
struct dkim_sigres {
	enum dkim_res	 res;
	const char	*why;		/* static text */
	int		 simplehdr;	/* c=simple/...: exact header bytes matter */
	char		 d[DKIM_NAME_MAX + 1];
	char		 s[DKIM_NAME_MAX + 1];
	char		 a[DKIM_ALG_MAX];
	char		 b[9];
};

struct dkim_outcome {
	enum dkim_res		 res;
	const char		*why;
	size_t			 nsigs;		/* considered (reported or not) */
	size_t			 nrep;
	size_t			 npass;
	int			 simple_fail;
	char			 pass[DKIM_FACT_MAX];
	struct dkim_sigres	 rep[DKIM_SIGS_LIMIT];
};

/* The message as received, read back through api->msg_read(). */
struct dkim_reader {
	const struct fmx_api	*api;
	struct fmx_ctx		*ctx;
	size_t			 off;
	size_t			 pos, len;
	int			 eof;
	unsigned char		 buf[DKIM_READ_CHUNK];
	struct linebuf		 line;		/* dkim_rd_line()'s, freed by the caller */
};

/* dkim_sign.c */
int dkim_sign_trusted(const struct dkim_inst *di, struct fmx_ctx *ctx);
int dkim_sign_from_domain(const char *v, char *out, size_t outlen);
int dkim_sign_message(struct dkim_msg *m, struct fmx_ctx *ctx);
int dkim_sign_parse_trusted(struct dkim_inst *di, const char *v);
int dkim_sign_key_load(struct dkim_inst *di, struct dkim_key *k);
int dkim_sign_parse_keys(struct dkim_inst *di, const char *v);

/* dkim_dns.c */
struct dkim_keyent *dkim_dns_key_find(struct dkim_msg *m, const char *name);
int dkim_dns_key_name(DKIM_SIGINFO *sig, char *name, size_t len);
DKIM_CBSTAT dkim_dns_prescreen_cb(DKIM *d, DKIM_SIGINFO **sigs, int nsigs);
DKIM_CBSTAT dkim_dns_key_cb(DKIM *d, DKIM_SIGINFO *sig, u_char *buf, size_t buflen);

/* dkim.c */
int dkim_is_wsp(int c);
int dkim_trim_copy(char *dst, size_t dstlen, const char *s, size_t len);
int dkim_name_ok(const char *s);
int dkim_drive_eoh(struct dkim_msg *m);
void dkim_reader_free(struct dkim_reader *r);
int dkim_spool_head(struct dkim_reader *r, DKIM **h, size_t n, size_t *nfields,
    size_t *pendlen);
int dkim_spool_body(struct dkim_reader *r, DKIM **h, const int *want, size_t n,
    size_t pendlen, uint64_t *total);
const char *dkim_list_next(const char *s, char *item, size_t len, int *toolong);

#endif
