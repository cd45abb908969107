/*
 * test_dnsmsg.c - common/dnsmsg.c: name skipping, header and question
 * skip, answer records, TXT joining, on hand-built packets (TAP).
 */
#include <stdint.h>
#include <string.h>

#include "dnsmsg.h"
#include "tap.h"

#define N(a)	(sizeof (a) / sizeof (a)[0])

/* A growing packet for one test. */
struct pkt {
	unsigned char	b[4096];
	size_t		len;
};

static void
put(struct pkt *p, const void *s, size_t n)
{
	memcpy(p->b + p->len, s, n);
	p->len += n;
}

static void
put16(struct pkt *p, unsigned v)
{
	unsigned char b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	put(p, b, 2);
}

/* Header with qd questions and an answers. */
static void
header(struct pkt *p, unsigned qd, unsigned an)
{
	p->len = 0;
	put16(p, 0x1234);
	put16(p, 0x8180);
	put16(p, qd);
	put16(p, an);
	put16(p, 0);
	put16(p, 0);
}

/* "example.com" as labels. */
static void
name(struct pkt *p)
{
	put(p, "\x07" "example" "\x03" "com" "\x00", 13);
}

/* One answer: name pointer to the question, type, class, ttl, rdata. */
static void
answer(struct pkt *p, unsigned type, const void *rd, size_t rdlen)
{
	put(p, "\xc0\x0c", 2);
	put16(p, type);
	put16(p, DNSMSG_IN);
	put16(p, 0);
	put16(p, 300);
	put16(p, (unsigned)rdlen);
	put(p, rd, rdlen);
}

struct name_case {
	const char	*what;
	const char	*bytes;
	size_t		 len;
	int		 rc;
	size_t		 end;		/* *pos after, when rc == 0 */
};

static const struct name_case name_cases[] = {
	{ "root", "\x00", 1, 0, 1 },
	{ "two labels", "\x01" "a" "\x01" "b" "\x00", 5, 0, 5 },
	{ "pointer", "\xc0\x0c", 2, 0, 2 },
	{ "label then pointer", "\x01" "a" "\xc0\x00", 4, 0, 4 },
	{ "pointer cut after one byte", "\xc0", 1, -1, 0 },
	{ "label runs past the end", "\x05" "ab", 3, -1, 0 },
	{ "no terminator", "\x01" "a", 2, -1, 0 },
	{ "empty", "", 0, -1, 0 },
	{ "0x40 label type", "\x41" "a" "\x00", 3, -1, 0 },
	{ "0x80 label type", "\x81" "a" "\x00", 3, -1, 0 },
	{ "trailing bytes stay", "\x00" "xyz", 4, 0, 1 },
};

static void
test_names(void)
{
	unsigned char	b[2 * 128 + 1];
	size_t		i, pos;

	for (i = 0; i < N(name_cases); i++) {
		const struct name_case *t = &name_cases[i];
		int rc;

		pos = 0;
		rc = dnsmsg_skip_name((const unsigned char *)t->bytes, t->len,
		    &pos);
		ok(rc == t->rc && (rc != 0 || pos == t->end),
		    "skip_name: %s (%d, pos %zu)", t->what, rc, pos);
	}
	/* 127 one-octet labels, then the root: the most a name can hold. */
	for (i = 0; i < 127; i++) {
		b[2 * i] = 1;
		b[2 * i + 1] = 'x';
	}
	b[2 * 127] = 0;
	pos = 0;
	ok(dnsmsg_skip_name(b, 2 * 127 + 1, &pos) == 0 && pos == 255,
	    "skip_name: 127 labels pass");
	/* One past: 128 labels. */
	b[2 * 127] = 1;
	b[2 * 127 + 1] = 'x';
	b[2 * 128] = 0;
	pos = 0;
	ok(dnsmsg_skip_name(b, sizeof b, &pos) == -1,
	    "skip_name: 128 labels refused");
	pos = 3;
	ok(dnsmsg_skip_name((const unsigned char *)"\x00", 1, &pos) == -1,
	    "skip_name: start past the end");
}

static void
test_walk(void)
{
	struct pkt		p;
	struct dnsmsg		m;
	struct dnsmsg_rr	rr;
	int			rc;

	header(&p, 1, 2);
	name(&p);
	put16(&p, DNSMSG_TXT);
	put16(&p, DNSMSG_IN);
	answer(&p, 5, "\x00", 1);			/* a CNAME on the way */
	answer(&p, DNSMSG_TXT, "\x02" "hi", 3);
	ok(dnsmsg_open(&m, p.b, p.len) == 0 && m.ancount == 2 &&
	    m.pos == DNSMSG_HDR + 13 + 4, "open: header and question skipped");
	rc = dnsmsg_next(&m, &rr);
	ok(rc == 1 && rr.type == 5 && rr.class == DNSMSG_IN &&
	    rr.ttl == 300 && rr.rdlen == 1, "next: first record (CNAME)");
	rc = dnsmsg_next(&m, &rr);
	ok(rc == 1 && rr.type == DNSMSG_TXT && rr.rdlen == 3 &&
	    memcmp(rr.rdata, "\x02hi", 3) == 0, "next: second record (TXT)");
	ok(dnsmsg_next(&m, &rr) == 0 && dnsmsg_next(&m, &rr) == 0,
	    "next: 0 at the end, and again");

	/* The last record's RDATA one octet short. */
	p.len--;
	ok(dnsmsg_open(&m, p.b, p.len) == 0 && dnsmsg_next(&m, &rr) == 1 &&
	    dnsmsg_next(&m, &rr) == -1, "next: RDLENGTH past the end");
	/* Record header cut: name and 9 of its 10 octets. */
	header(&p, 0, 1);
	put(&p, "\x00", 1);
	put(&p, "\x00\x10\x00\x01\x00\x00\x01\x2c\x00", 9);
	ok(dnsmsg_open(&m, p.b, p.len) == 0 && dnsmsg_next(&m, &rr) == -1,
	    "next: record header cut");
	/* More answers announced than present. */
	header(&p, 0, 3);
	answer(&p, DNSMSG_TXT, "\x01" "a", 2);
	ok(dnsmsg_open(&m, p.b, p.len) == 0 && dnsmsg_next(&m, &rr) == 1 &&
	    dnsmsg_next(&m, &rr) == -1, "next: ANCOUNT larger than the packet");

	header(&p, 1, 0);
	ok(dnsmsg_open(&m, p.b, 11) == -1, "open: 11-octet header refused");
	ok(dnsmsg_open(&m, NULL, 0) == -1, "open: NULL refused");
	name(&p);
	put16(&p, DNSMSG_TXT);
	put(&p, "\x00", 1);			/* QCLASS cut */
	ok(dnsmsg_open(&m, p.b, p.len) == -1, "open: question cut");
	p.len++;
	ok(dnsmsg_open(&m, p.b, p.len) == 0 && dnsmsg_next(&m, &rr) == 0,
	    "open: question whole, no answers");
}

struct txt_case {
	const char	*what;
	const char	*rd;
	size_t		 rdlen;
	size_t		 outsize;
	int		 rc;
	const char	*want;
	size_t		 wantlen;
};

static const struct txt_case txt_cases[] = {
	{ "one string", "\x05" "v=DM1", 6, 64, 0, "v=DM1", 5 },
	{ "strings joined", "\x02" "ab" "\x01" "c", 5, 64, 0, "abc", 3 },
	{ "empty record", "", 0, 64, 0, "", 0 },
	{ "empty string", "\x00", 1, 64, 0, "", 0 },
	{ "fits exactly", "\x03" "abc", 4, 4, 0, "abc", 3 },
	{ "one past: cut", "\x04" "abcd", 5, 4, 1, "abc", 3 },
	{ "cut across strings", "\x02" "ab" "\x02" "cd", 6, 4, 1, "abc", 3 },
	{ "outsize 1", "\x01" "a", 2, 1, 1, "", 0 },
	{ "string past the record", "\x05" "ab", 3, 64, -1, "", 0 },
	{ "NUL kept and counted", "\x03" "a\0b", 4, 64, 0, "a", 3 },
};

static void
test_txt(void)
{
	struct dnsmsg_rr	rr;
	char			out[64];
	size_t			i, n;

	for (i = 0; i < N(txt_cases); i++) {
		const struct txt_case *t = &txt_cases[i];
		int rc;

		memset(&rr, 0, sizeof rr);
		rr.rdata = (const unsigned char *)t->rd;
		rr.rdlen = t->rdlen;
		memset(out, 'x', sizeof out);
		n = 99;
		rc = dnsmsg_txt(&rr, out, t->outsize, &n);
		ok(rc == t->rc && n == t->wantlen && strcmp(out, t->want) == 0 &&
		    out[n] == '\0', "txt: %s (%d, %zu)", t->what, rc, n);
	}
}

int
main(void)
{
	plan((int)N(name_cases) + 3 + 11 + (int)N(txt_cases));
	test_names();
	test_walk();
	test_txt();
	return done_testing();
}
