/*
 * haproxy.c - PROXY protocol v1 and v2 header parser
 *
 * NAME
 *	haproxy_parse
 *
 * DESCRIPTION
 *	Pure functions over bytes already read (see haproxy.h), so that the
 *	parser is unit-tested from tables and fuzzed apart from the session.
 *	v1 is one text line "PROXY TCP4|TCP6 SRC DST SPORT DPORT" ending in
 *	CRLF (a bare LF does not end it), or "PROXY UNKNOWN ..."; v2 is the
 *	12-byte signature, version/command, family, a 16-bit length, then the
 *	addresses and TLVs, which we skip.  Only the source address and port
 *	are used; TLVs are never trusted.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "haproxy.h"

static const unsigned char haproxy_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
    0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* Parse "PROXY TCP4 1.2.3.4 5.6.7.8 1234 25" (NUL-terminated, no CRLF). */
static enum haproxy_status
haproxy_v1(const char *line, struct sockaddr_storage *ss)
{
	char fam[8], src[64], dst[64];
	struct in6_addr d6;	/* big enough for either family */
	unsigned sport, dport;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	char tail;

	if (strncmp(line, "PROXY UNKNOWN", 13) == 0)
		return HAPROXY_LOCAL;
	if (sscanf(line, "PROXY %7s %63s %63s %5u %5u%c", fam, src, dst, &sport,
	    &dport, &tail) != 5 || sport > 65535 || dport > 65535)
		return HAPROXY_BAD;
	memset(ss, 0, sizeof *ss);
	if (strcmp(fam, "TCP4") == 0 && inet_pton(AF_INET, src, &s4->sin_addr) == 1 &&
	    inet_pton(AF_INET, dst, &d6) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)sport);
		return HAPROXY_ADDR;
	}
	if (strcmp(fam, "TCP6") == 0 && inet_pton(AF_INET6, src, &s6->sin6_addr) == 1 &&
	    inet_pton(AF_INET6, dst, &d6) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)sport);
		return HAPROXY_ADDR;
	}
	return HAPROXY_BAD;
}

/* v2: h holds the whole header, len = 16 + its length field. */
static enum haproxy_status
haproxy_v2(const unsigned char *h, size_t len, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	unsigned ver = h[12] >> 4, cmd = h[12] & 0x0f, fam = h[13];

	if (ver != 2 || cmd > 1)
		return HAPROXY_BAD;
	if (cmd == 0)		/* LOCAL: the balancer's own health check */
		return HAPROXY_LOCAL;
	memset(ss, 0, sizeof *ss);
	if (fam == 0x11 && len >= 16 + 12) {		/* TCP over IPv4 */
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, h + 16, 4);
		memcpy(&s4->sin_port, h + 24, 2);
		return HAPROXY_ADDR;
	}
	if (fam == 0x21 && len >= 16 + 36) {		/* TCP over IPv6 */
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, h + 16, 16);
		memcpy(&s6->sin6_port, h + 48, 2);
		return HAPROXY_ADDR;
	}
	/* UNSPEC: keep the connection's address. */
	return fam == 0x00 ? HAPROXY_LOCAL : HAPROXY_BAD;
}

enum haproxy_status
haproxy_parse(const unsigned char *buf, size_t len, size_t *used,
    struct sockaddr_storage *ss)
{
	char line[HAPROXY_V1_MAX];
	enum haproxy_status st;
	size_t need, i;

	*used = 0;
	if (len == 0)
		return HAPROXY_MORE;
	if (memcmp(buf, haproxy_sig, len < sizeof haproxy_sig ? len :
	    sizeof haproxy_sig) == 0) {
		if (len < 16)
			return HAPROXY_MORE;
		need = 16 + (((size_t)buf[14] << 8) | buf[15]);
		if (need > HAPROXY_V2_MAX)
			return HAPROXY_BAD;
		if (len < need)
			return HAPROXY_MORE;
		if ((st = haproxy_v2(buf, need, ss)) != HAPROXY_BAD)
			*used = need;
		return st;
	}
	if (memcmp(buf, "PROXY ", len < 6 ? len : 6) != 0)
		return HAPROXY_BAD;
	if (len < 6)
		return HAPROXY_MORE;
	/* Only CRLF ends the line; it must fit in HAPROXY_V1_MAX with it. */
	for (i = 0; i + 1 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n')
			break;
	if (i + 1 >= len)
		return len > HAPROXY_V1_MAX ? HAPROXY_BAD : HAPROXY_MORE;
	if (i + 2 > HAPROXY_V1_MAX)
		return HAPROXY_BAD;
	if (memchr(buf, '\0', i) != NULL)
		return HAPROXY_BAD;
	memcpy(line, buf, i);
	line[i] = '\0';
	if ((st = haproxy_v1(line, ss)) != HAPROXY_BAD)
		*used = i + 2;
	return st;
}
