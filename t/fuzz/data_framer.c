/*
 * data_framer.c - fuzz the client line framer and DATA un-stuffing
 * (proxy/smtp_frame.c)
 *
 * The input's first octet chooses the mode (command lines of at most
 * SMTP_CMD_LINE_MAX octets, or DATA lines of SMTP_TEXT_LINE_MAX + 1) and
 * how the rest arrives: in pieces of pseudo-random sizes, as a client
 * trickling bytes would send them.  The framer must give the same lines
 * as a plain reference framer that sees the whole stream at once: only
 * CRLF ends a line, a line longer than the limit is one TOO_LONG, a bare
 * CR or LF inside a line makes it BARE_EOL, a NUL makes it NUL.  So the
 * result does not depend on how the bytes were cut, and "\n.\n" or
 * "\r.\r" can never end a message.  The input buffer stays bounded by
 * the limit whatever arrives.
 */
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "smtp_frame.h"
#include "smtp_parse.h"

struct rec {
	uint8_t	*buf;
	size_t	 len, cap;
};

static void
rec_add(struct rec *r, enum smtp_line kind, const char *line, size_t len)
{
	FUZZ_CHECK(r->len + 5 + len <= r->cap);
	r->buf[r->len++] = (uint8_t)kind;
	memcpy(r->buf + r->len, &len, 4);
	r->len += 4;
	if (len > 0)
		memcpy(r->buf + r->len, line, len);
	r->len += len;
}

/* The reference: the whole stream, CRLF-split, classified line by line. */
static void
reference(const uint8_t *p, size_t n, size_t max, struct rec *r)
{
	size_t start = 0, i, j;
	enum smtp_line kind;

	for (i = 0; i + 1 < n; i++) {
		if (p[i] != '\r' || p[i + 1] != '\n')
			continue;
		if (i + 2 - start > max)
			rec_add(r, SMTP_LINE_TOO_LONG, NULL, 0);
		else {
			kind = SMTP_LINE_OK;
			for (j = start; j < i; j++)
				if (p[j] == '\r' || p[j] == '\n') {
					kind = SMTP_LINE_BARE_EOL;
					break;
				} else if (p[j] == '\0') {
					kind = SMTP_LINE_NUL;
					break;
				}
			rec_add(r, kind, (const char *)p + start, i + 2 - start);
		}
		start = i + 2;
		i++;
	}
}

static void
frame_all(struct evbuffer *in, int *skipping, size_t max, int data,
    struct rec *r)
{
	char line[SMTP_TEXT_LINE_MAX + 1];
	const char *u;
	size_t len, ulen;
	enum smtp_line kind;

	for (;;) {
		len = (size_t)-1;
		kind = smtp_frame_line(in, skipping, line, max, &len);
		/* Bounded: what stays buffered is less than one line. */
		FUZZ_CHECK(evbuffer_get_length(in) <= max ||
		    kind != SMTP_LINE_NONE);
		if (kind == SMTP_LINE_NONE)
			return;
		if (kind == SMTP_LINE_TOO_LONG) {
			FUZZ_CHECK(len == 0);
			rec_add(r, kind, NULL, 0);
			continue;
		}
		FUZZ_CHECK(len >= 2 && len <= max);
		FUZZ_CHECK(line[len - 2] == '\r' && line[len - 1] == '\n');
		rec_add(r, kind, line, len);
		if (!data)
			continue;
		/* The end of the message is ".\r\n" and nothing else. */
		if (kind == SMTP_LINE_OK && len == 3 && line[0] == '.')
			continue;
		u = line;
		ulen = len;
		smtp_frame_unstuff(&u, &ulen);
		FUZZ_CHECK(ulen >= 2 && u[ulen - 2] == '\r' && u[ulen - 1] == '\n');
		FUZZ_CHECK(ulen == len || (line[0] == '.' && u == line + 1 &&
		    ulen == len - 1));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rec want, got;
	struct evbuffer *in;
	uint32_t seed;
	size_t max, off, piece;
	int skipping = 0, dmode;

	if (size < 1)
		return 0;
	dmode = data[0] & 1;
	seed = data[0] | 1u;
	max = dmode ? SMTP_TEXT_LINE_MAX + 1 : SMTP_CMD_LINE_MAX;
	data++;
	size--;

	want.cap = got.cap = 5 * size + 16;
	want.len = got.len = 0;
	if ((want.buf = malloc(want.cap)) == NULL ||
	    (got.buf = malloc(got.cap)) == NULL)
		abort();
	reference(data, size, max, &want);

	if ((in = evbuffer_new()) == NULL)
		abort();
	for (off = 0; off < size; off += piece) {
		/* xorshift: pieces of 1..64 octets, now and then up to 2048 */
		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		piece = seed % 8 == 0 ? seed % 2048 + 1 : seed % 64 + 1;
		if (piece > size - off)
			piece = size - off;
		evbuffer_add(in, data + off, piece);
		frame_all(in, &skipping, max, dmode, &got);
	}
	FUZZ_CHECK(got.len == want.len && memcmp(got.buf, want.buf, got.len) == 0);
	evbuffer_free(in);
	free(want.buf);
	free(got.buf);
	return 0;
}
