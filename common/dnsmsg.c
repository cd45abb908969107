/*
 * dnsmsg.c - DNS reply walking: names, answer records, TXT strings
 *
 * The DKIM and DMARC filters each carried a name skipper and a header,
 * question and record walker over the same RFC 1035 layout; this is the
 * one copy.  Every offset is checked against the packet length before it
 * is read.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dnsmsg.h"

static unsigned
dnsmsg_u16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

int
dnsmsg_skip_name(const unsigned char *pkt, size_t len, size_t *pos)
{
	size_t		p = *pos;
	unsigned	labels;

	/* DNSMSG_LABELS labels, then the root or a pointer: one more step. */
	for (labels = 0; labels <= DNSMSG_LABELS; labels++) {
		if (p >= len)
			return -1;
		if (pkt[p] == 0) {
			*pos = p + 1;
			return 0;
		}
		if ((pkt[p] & 0xc0) == 0xc0) {
			if (p + 2 > len)
				return -1;
			*pos = p + 2;
			return 0;
		}
		if ((pkt[p] & 0xc0) != 0)
			return -1;	/* 0x40, 0x80: not in use (RFC 6891 5) */
		p += 1 + (size_t)pkt[p];
	}
	return -1;
}

int
dnsmsg_open(struct dnsmsg *m, const unsigned char *pkt, size_t len)
{
	unsigned	qd;

	memset(m, 0, sizeof *m);
	if (pkt == NULL || len < DNSMSG_HDR)
		return -1;
	m->pkt = pkt;
	m->len = len;
	m->pos = DNSMSG_HDR;
	qd = dnsmsg_u16(pkt + 4);
	m->ancount = dnsmsg_u16(pkt + 6);
	/* Each question: a name, then QTYPE and QCLASS. */
	while (qd-- > 0) {
		if (dnsmsg_skip_name(pkt, len, &m->pos) == -1 ||
		    m->pos + 4 > len)
			return -1;
		m->pos += 4;
	}
	return 0;
}

int
dnsmsg_next(struct dnsmsg *m, struct dnsmsg_rr *rr)
{
	const unsigned char	*p;
	size_t			 pos = m->pos;

	if (m->ancount == 0)
		return 0;
	/* NAME, then TYPE CLASS TTL RDLENGTH: 10 octets, then RDATA. */
	if (dnsmsg_skip_name(m->pkt, m->len, &pos) == -1 || pos + 10 > m->len)
		return -1;
	p = m->pkt + pos;
	rr->type = dnsmsg_u16(p);
	rr->class = dnsmsg_u16(p + 2);
	rr->ttl = (uint32_t)dnsmsg_u16(p + 4) << 16 | dnsmsg_u16(p + 6);
	rr->rdlen = dnsmsg_u16(p + 8);
	pos += 10;
	if (rr->rdlen > m->len - pos)
		return -1;
	rr->rdata = m->pkt + pos;
	m->pos = pos + rr->rdlen;
	m->ancount--;
	return 1;
}

int
dnsmsg_txt(const struct dnsmsg_rr *rr, char *out, size_t outsize,
    size_t *outlen)
{
	size_t	i = 0, n = 0, sl, take;
	int	cut = 0;

	while (i < rr->rdlen) {
		sl = rr->rdata[i++];
		if (sl > rr->rdlen - i) {
			out[0] = '\0';
			*outlen = 0;
			return -1;
		}
		take = sl;
		if (take > outsize - 1 - n) {
			take = outsize - 1 - n;
			cut = 1;
		}
		memcpy(out + n, rr->rdata + i, take);
		n += take;
		i += sl;
	}
	out[n] = '\0';
	*outlen = n;
	return cut;
}
