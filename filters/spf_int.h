/*
 * spf_int.h - private to the spf_*.c files of the built-in SPF filter:
 * limits, the per-instance, per-message and per-pass types, the bounded
 * output buffer, and the functions one file lends another
 *
 * DESCRIPTION
 *	spf.c (filter glue and driver), spf_record.c (record parsing) and
 *	spf_dns.c (answer table and libspf2 layer) share these.  Nothing
 *	outside filters/spf*.c includes it, except the unit test and the
 *	fuzz harness, which reach the static parsers by including the .c
 *	files whole.
 */
#ifndef FRONTMX_SPF_INT_H
#define FRONTMX_SPF_INT_H

#include <sys/types.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>

#include <string.h>

#include <spf2/spf.h>

#include "frontmx_filter.h"

/* RFC 7208 4.6.4: terms that query DNS, void lookups, names per MX/PTR. */
#define SPF_TERMS_MAX		10
#define SPF_VOIDS_MAX		2
#define SPF_NAMES_MAX		10

#define SPF_PASSES_DEFAULT	30
#define SPF_PASSES_LIMIT	1000
/*
 * Distinct (name, type) questions per message.  Two identities, each at
 * most 10 terms, 10 address lookups per MX or PTR term and one first
 * lookup: about 250 in the worst case that is still legal.
 */
#define SPF_ENTRIES_MAX		300
#define SPF_ADDRS_MAX		128	/* address records kept per name (no RFC limit) */
#define SPF_MX_KEEP		(SPF_NAMES_MAX + 1)	/* one more than allowed: libspf2 sees the excess */
#define SPF_RECORD_MAX		4096	/* one SPF record; longer is a permerror */
#define SPF_CANON_MAX		8192	/* the rewrite, x/0 markers included */
#define SPF_TERMS_PER_RECORD	256
/*
 * libspf2 compiles a term into at most SPF_MAX_MECH_LEN (511) bytes and,
 * without upstream d14abff, underflows when a literal starts with less
 * than 4 bytes left.  Terms are estimated conservatively and refused
 * well before.
 */
#define SPF_TERM_DATA_MAX	400
/* A literal: a 4-byte SPF_data_str_t per 255 bytes, text padded to 4. */
#define SPF_LITERAL_DATA(n)	(4 + 4 * ((n) / 255) + (((n) + 3) & ~(size_t)3))
#define SPF_DOMAIN_MAX		253	/* RFC 1035 2.3.4, as text */
#define SPF_NAME_BUF		1024	/* a name with \DDD escapes */
#define SPF_ADDR_MAX		512	/* sender as given */
#define SPF_EXPLANATION_MAX	150
#define SPF_HEADER_MAX		900	/* the core takes values up to 900 */
#define SPF_WHY_MAX		160
#define SPF_NONCE_LEN		16

/*
 * Names handed to libspf2 as MX or PTR targets start with one of these
 * and a dot, so their address lookups come back recognisable.  No real
 * name starts with a control byte; libspf2 only looks the names up and,
 * for ptr, compares their ends with the target domain, which the ".",
 * kept after the tag, leaves intact.
 */
#define SPF_TAG_MX		'\001'
#define SPF_TAG_MX_ANY		'\002'	/* MX of an mx term with a /0 prefix */
#define SPF_TAG_PTR		'\003'
/* An a/mx term with a /0 prefix looks up NAME.x-NONCE.invalid. */
#define SPF_ANY_SUFFIX_FMT	".x-%s.invalid"

enum spf_result {
	SPF_R_PASS = 0,
	SPF_R_FAIL,
	SPF_R_SOFTFAIL,
	SPF_R_NEUTRAL,
	SPF_R_NONE,
	SPF_R_TEMPERROR,
	SPF_R_PERMERROR,
	SPF_R_COUNT		/* must be last */
};

enum spf_identity {
	SPF_ID_HELO = 0,
	SPF_ID_MAILFROM
};

enum spf_entry_state {
	SPF_ST_WANTED = 0,	/* a pass missed it; no query yet */
	SPF_ST_ASKED,		/* query outstanding */
	SPF_ST_DONE
};

/* One configured instance; read-only after init. */
struct spf_inst {
	const struct fmx_api	*api;
	SPF_server_t		*server;
	int			 helo;
	unsigned		 max_passes;
	char			 explanation[SPF_EXPLANATION_MAX + 1];
};

struct spf_msg;

/* One (name, type) question and, once known, its answer. */
struct spf_entry {
	struct spf_entry	*next;
	struct spf_msg		*m;
	int			 type;
	enum spf_entry_state	 state;
	int			 herrno;	/* NETDB_SUCCESS, HOST_NOT_FOUND, NO_DATA, TRY_AGAIN */
	size_t			 n;		/* addresses or names */
	struct in_addr		*a;		/* type A */
	struct in6_addr		*aaaa;		/* type AAAA */
	char			**names;	/* MX, PTR: targets, presentation form */
	int			 nspf;		/* TXT: records that start with v=spf1 */
	char			*spf;		/* TXT: canonical record, one valid record */
	char			 why[SPF_WHY_MAX];	/* TXT: why it is a permerror */
	char			 name[];	/* presentation form, lower case, no final dot */
};

enum spf_check_state {
	SPF_CK_OFF = 0,		/* not checked */
	SPF_CK_RUN,
	SPF_CK_DONE
};

/* One check_host() run: one identity. */
struct spf_check {
	enum spf_identity	 identity;
	enum spf_check_state	 state;
	char			 domain[SPF_DOMAIN_MAX + 2];
	char			 sender[SPF_ADDR_MAX + 16];	/* <sender> of check_host() */
	enum spf_result		 result;
	char			 why[SPF_WHY_MAX];
	unsigned		 passes;
};

/* Per message, owned by the core through api->set_msg_data(). */
struct spf_msg {
	const struct spf_inst	*inst;
	int			 family;	/* AF_INET (also for v4-mapped) or AF_INET6 */
	struct in_addr		 ip4;
	struct in6_addr		 ip6;
	char			 ip[INET6_ADDRSTRLEN];
	char			 helo[SPF_DOMAIN_MAX + 2];
	int			 helo_ok;	/* a domain name (RFC 7208 4.3) */
	char			 from[SPF_ADDR_MAX];	/* "" = null reverse-path */
	char			 nonce[SPF_NONCE_LEN + 1];
	struct spf_entry	*zone;
	struct spf_entry	**zone_tail;
	size_t			 nzone;
	unsigned		 outstanding;	/* queries in flight */
	unsigned		 queries;
	int			 busy;		/* inside spf_drive()/spf_issue() */
	int			 waiting;	/* the hook returned FMX_PENDING */
	int			 done;
	struct spf_check	 helo_chk;
	struct spf_check	 mail_chk;
	struct spf_check	*final;
	char			 received[SPF_HEADER_MAX + 1];
	char			 ar_props[256];
};

/*
 * What the layer knows about the pass it serves: the counters of RFC
 * 7208 4.6.4 and whether the pass has to stop.
 */
struct spf_pass {
	struct spf_msg		*m;
	int			 first_done;	/* the first TXT lookup (the checked domain) */
	unsigned		 terms;
	unsigned		 voids;
	int			 p_counted;
	SPF_request_t		*req;		/* for cur_dom, the <domain> of the moment */
	const struct spf_entry	*p_ptr;		/* p macro: the PTR names being validated */
	size_t			 p_order[SPF_NAMES_MAX];	/* in the order served */
	size_t			 p_n;
	size_t			 p_idx;
	int			 stopped;	/* answer TRY_AGAIN from now on */
	int			 missed;	/* the table lacked an answer */
	int			 forced;	/* the layer decided permerror */
	char			 why[SPF_WHY_MAX];
};

/*
 * A bounded output buffer: what does not fit sets over and is dropped, so
 * a caller checks once at the end.  p always stays NUL-terminated.
 */
struct spf_buf {
	char	*p;
	size_t	 cap;
	size_t	 len;
	int	 over;
};

static inline void
spf_buf_put(struct spf_buf *b, const char *s, size_t n)
{
	if (b == NULL || b->over)
		return;
	if (b->len + n >= b->cap) {
		b->over = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static inline void
spf_buf_puts(struct spf_buf *b, const char *s)
{
	spf_buf_put(b, s, strlen(s));
}

static inline void
spf_buf_putc(struct spf_buf *b, char c)
{
	spf_buf_put(b, &c, 1);
}

/* spf_record.c */
int spf_record_canon(const char *rec, size_t len, int family, const char *nonce,
    char *out, size_t outlen, const char **why);
int spf_record_query_name(const char *raw, char *out, size_t outlen);

/* spf_dns.c */
void spf_dns_entry_free(struct spf_entry *e);
struct spf_entry *spf_dns_entry_want(struct spf_msg *m, const char *name, int type);
void spf_dns_answer(struct spf_entry *e, int rcode, const unsigned char *pkt, size_t len);

/* libspf2's resolver, and the pass it serves (set around each libspf2 call). */
extern SPF_dns_server_t spf_dns_layer;
extern _Thread_local struct spf_pass *spf_dns_cur;

#endif
