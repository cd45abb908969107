/*
 * dnsmsg.h - walk the answer records of a DNS reply packet (RFC 1035 4.1)
 *
 * The one bounds-checked reader of raw DNS replies for the filters that
 * get them from the resolver as bytes (DKIM key and DMARC policy TXT
 * records).  Pure: no allocation, no resolver, safe from any thread; every
 * read is checked against the packet length, so a hostile reply is at
 * worst "malformed".
 *
 *	struct dnsmsg m;
 *	struct dnsmsg_rr rr;
 *	if (dnsmsg_open(&m, pkt, len) == -1) malformed;
 *	while ((r = dnsmsg_next(&m, &rr)) == 1)
 *		if (rr.type == DNSMSG_TXT && rr.class == DNSMSG_IN)
 *			dnsmsg_txt(&rr, buf, sizeof buf, &n);
 *	if (r == -1) malformed;
 */
#ifndef FRONTMX_DNSMSG_H
#define FRONTMX_DNSMSG_H

#include <stddef.h>
#include <stdint.h>

#define DNSMSG_HDR	12	/* header octets */
#define DNSMSG_LABELS	127	/* labels in a name: 255 octets at one each */
#define DNSMSG_TXT	16	/* RR type TXT */
#define DNSMSG_IN	1	/* class IN */

struct dnsmsg {
	const unsigned char	*pkt;
	size_t			 len;
	size_t			 pos;		/* next answer record */
	unsigned		 ancount;	/* answer records left */
};

struct dnsmsg_rr {
	unsigned		 type;
	unsigned		 class;
	uint32_t		 ttl;
	const unsigned char	*rdata;		/* inside the packet */
	size_t			 rdlen;
};

/*
 * Skip the possibly compressed name at *pos (RFC 1035 4.1.4): a pointer
 * ends it, so nothing is followed and no loop is possible.  0 with *pos
 * past the name; -1 when it runs past len, uses the reserved label types
 * or has more than DNSMSG_LABELS labels.
 */
int	dnsmsg_skip_name(const unsigned char *pkt, size_t len, size_t *pos);
/* Read the header and skip the questions: 0, or -1 malformed. */
int	dnsmsg_open(struct dnsmsg *m, const unsigned char *pkt, size_t len);
/* The next answer record: 1 and *rr, 0 when there is none left, -1 malformed. */
int	dnsmsg_next(struct dnsmsg *m, struct dnsmsg_rr *rr);
/*
 * The character-strings of a TXT record joined (RFC 1035 3.3.14) into
 * out[outsize], NUL-terminated; *outlen the bytes joined, which may
 * include NULs (the caller decides whether that is acceptable).  0 when
 * all fit, 1 when cut at outsize - 1, -1 when a string runs past the
 * record (out is then "").  outsize must be at least 1.
 */
int	dnsmsg_txt(const struct dnsmsg_rr *rr, char *out, size_t outsize,
	    size_t *outlen);

#endif
