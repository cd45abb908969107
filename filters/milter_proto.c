/*
 * milter_proto.c - milter packets and the checks on a milter's answers
 *
 * DESCRIPTION
 *	The MTA side of the milter protocol, written by hand because
 *	libmilter only implements the filter side.  Pure functions (see
 *	milter_proto.h): milter.c does the I/O and the state machine.  What
 *	is checked follows Postfix's milter8.c: the OPTNEG answer
 *	(milter8_connect), SMFIR_REPLYCODE (milter8_valid_smtp_reply), and a
 *	header value is made unable to smuggle anything past the header it
 *	belongs to.
 */
#include <ctype.h>
#include <string.h>

#include "milter_proto.h"

static uint32_t
milter_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void
milter_pkt_head(unsigned char out[5], char cmd, size_t datalen)
{
	uint32_t n = (uint32_t)datalen + 1;

	out[0] = (unsigned char)(n >> 24);
	out[1] = (unsigned char)(n >> 16);
	out[2] = (unsigned char)(n >> 8);
	out[3] = (unsigned char)n;
	out[4] = (unsigned char)cmd;
}

int
milter_pkt_parse(const unsigned char *buf, size_t avail, struct milter_pkt *p,
    size_t *used)
{
	uint32_t n;

	if (avail < 4)
		return 0;
	n = milter_get32(buf);
	if (n == 0 || n > MILTER_PKT_MAX)
		return -1;
	if (avail - 4 < n)
		return 0;
	p->cmd = (char)buf[4];
	p->data = buf + 5;
	p->len = n - 1;
	*used = 4 + (size_t)n;
	return 1;
}

int
milter_strings(const unsigned char *data, size_t len, const char **out,
    int min, int max)
{
	size_t i, start = 0;
	int n = 0;

	if (len == 0)
		return min == 0 ? 0 : -1;
	if (data[len - 1] != '\0')
		return -1;
	for (i = 0; i < len; i++) {
		if (data[i] != '\0')
			continue;
		if (n >= max)
			return -1;
		out[n++] = (const char *)data + start;
		start = i + 1;
	}
	return n >= min ? n : -1;
}

int
milter_optneg_parse(const unsigned char *data, size_t len,
    struct milter_optneg *o, const char **why)
{
	size_t off = 12, end;
	uint32_t stage;

	memset(o, 0, sizeof *o);
	if (len < 12) {
		*why = "short OPTNEG answer";
		return -1;
	}
	o->version = milter_get32(data);
	o->actions = milter_get32(data + 4);
	o->flags = milter_get32(data + 8);
	/* milter8_connect: a higher version or an unoffered action fails it. */
	if (o->version > MILTER_VERSION || o->version < 2) {
		*why = "unsupported protocol version";
		return -1;
	}
	if (o->actions & ~SMFIF_ALL) {
		*why = "asks for actions that were not offered";
		return -1;
	}
	/* The SETSYMLIST trailer: (stage, NUL-terminated list) pairs. */
	while (off < len) {
		if (len - off < 5) {
			*why = "truncated symbol list";
			return -1;
		}
		stage = milter_get32(data + off);
		off += 4;
		for (end = off; end < len && data[end] != '\0'; end++)
			;
		if (end >= len || stage >= MILTER_ST_COUNT ||
		    end - off >= MILTER_SYMLIST_MAX || o->has_list[stage]) {
			*why = "malformed symbol list";
			return -1;
		}
		memcpy(o->list[stage], data + off, end - off + 1);
		o->has_list[stage] = 1;
		off = end + 1;
	}
	return 0;
}

/* "X.Y.Z" enhanced status code at p (RFC 3463); its length, 0 if none. */
static size_t
milter_enh_len(const char *p, size_t len)
{
	size_t i = 0, part, digits;

	for (part = 0; part < 3; part++) {
		for (digits = 0; i < len && isdigit((unsigned char)p[i]); i++)
			digits++;
		if (digits == 0 || digits > 3 || (part == 0 && digits != 1))
			return 0;
		if (part < 2) {
			if (i >= len || p[i] != '.')
				return 0;
			i++;
		}
	}
	return i < len && p[i] != ' ' ? 0 : i;
}

int
milter_reply_text(const unsigned char *data, size_t len, char *out,
    size_t outlen)
{
	const char *s = (const char *)data, *line, *eol;
	size_t slen, llen, o = 0, i, enh;
	char code[3];
	int last;

	if (len == 0 || data[len - 1] != '\0' || outlen == 0)
		return -1;
	slen = strlen(s);
	if (slen + 1 != len || slen < 3)
		return -1;
	memcpy(code, s, 3);
	if ((code[0] != '4' && code[0] != '5') || !isdigit((unsigned char)code[1]) ||
	    !isdigit((unsigned char)code[2]))
		return -1;
	for (line = s; ; line = eol + 2) {
		eol = strstr(line, "\r\n");
		last = eol == NULL;
		llen = last ? strlen(line) : (size_t)(eol - line);
		if (llen < 3 || llen > 510 || memcmp(line, code, 3) != 0)
			return -1;
		if (llen > 3 && line[3] != (last ? ' ' : '-'))
			return -1;
		if (llen == 3 && !last)
			return -1;
		/* The enhanced code, if any, must be of the reply's class. */
		if (llen > 4 && (enh = milter_enh_len(line + 4, llen - 4)) > 0 &&
		    line[4] != code[0])
			return -1;
		for (i = 0; i < llen; i++) {
			unsigned char ch = (unsigned char)line[i];

			if (ch < 0x20 || ch > 0x7e)
				return -1;
			/* "%%" is how a milter writes one '%' (sendmail's printf). */
			if (ch == '%' && i + 1 < llen && line[i + 1] == '%')
				i++;
			if (o + 2 >= outlen)
				return -1;
			out[o++] = (char)ch;
		}
		if (last)
			break;
		out[o++] = '\n';
	}
	out[o] = '\0';
	return 0;
}

int
milter_hdr_name_valid(const char *name)
{
	size_t i, len = strlen(name);

	if (len == 0 || len > MILTER_HDR_NAME_MAX)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)name[i] < 33 || (unsigned char)name[i] > 126 ||
		    name[i] == ':')
			return -1;
	return 0;
}

long
milter_hdr_value(const char *in, char *out, size_t outlen)
{
	size_t o = 0, line = 0, i;
	unsigned char ch;

	for (i = 0; in[i] != '\0'; i++) {
		ch = (unsigned char)in[i];
		if (ch == '\r' && in[i + 1] == '\n')
			continue;	/* CRLF: handled with its LF */
		if (ch == '\n') {
			/* Only a fold: the next line starts with a blank. */
			if (in[i + 1] != ' ' && in[i + 1] != '\t')
				return -1;
			if (o + 3 >= outlen)
				return -1;
			out[o++] = '\r';
			out[o++] = '\n';
			line = 0;
			continue;
		}
		if (ch == '\r' || (ch < 0x20 && ch != '\t') || ch == 0x7f)
			return -1;
		/* RFC 5322 2.1.1; the name on the first line counts loosely. */
		if (++line > 998 - MILTER_HDR_NAME_MAX - 2 || o + 2 >= outlen)
			return -1;
		out[o++] = (char)ch;
	}
	if (outlen == 0)
		return -1;
	out[o] = '\0';
	return (long)o;
}
