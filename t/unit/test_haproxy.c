/*
 * test_haproxy.c - PROXY protocol v1/v2 header parser (TAP)
 *
 * Each case is the bytes a balancer sends and what haproxy_parse() must
 * say: the status, how many bytes the header used, the client address
 * and port.  Every strict prefix of a complete header must be "more"
 * (never a premature verdict), and bytes after it are the client's.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdio.h>
#include <string.h>

#include "haproxy.h"
#include "tap.h"

#define SIG	"\r\n\r\n\0\r\nQUIT\n"

struct hp_case {
	const char	*name;
	const char	*in;
	size_t		 len;		/* 0: strlen(in) */
	enum haproxy_status want;
	size_t		 used;		/* for LOCAL/ADDR */
	const char	*addr;		/* for ADDR */
	unsigned	 port;
};

static const struct hp_case cases[] = {
	/* ---- v1 */
	{ "v1 TCP4", "PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n", 0,
	    HAPROXY_ADDR, 45, "192.0.2.10", 40000 },
	{ "v1 TCP4, SMTP follows", "PROXY TCP4 192.0.2.10 198.51.100.1 1 25\r\nEHLO x\r\n", 0,
	    HAPROXY_ADDR, 41, "192.0.2.10", 1 },
	{ "v1 TCP6", "PROXY TCP6 2001:db8::10 2001:db8::1 65535 25\r\n", 0,
	    HAPROXY_ADDR, 46, "2001:db8::10", 65535 },
	{ "v1 UNKNOWN", "PROXY UNKNOWN\r\n", 0, HAPROXY_LOCAL, 15, NULL, 0 },
	{ "v1 UNKNOWN with addresses",
	    "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", 0,
	    HAPROXY_LOCAL, 59, NULL, 0 },
	{ "v1 port 65536", "PROXY TCP4 192.0.2.10 198.51.100.1 65536 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 six-digit port", "PROXY TCP4 192.0.2.10 198.51.100.1 400000 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 trailing junk", "PROXY TCP4 192.0.2.10 198.51.100.1 1 25 x\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 TCP4 with an IPv6 address", "PROXY TCP4 2001:db8::1 198.51.100.1 1 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 TCP6 with an IPv4 address", "PROXY TCP6 192.0.2.1 2001:db8::1 1 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 bad destination", "PROXY TCP4 192.0.2.10 198.51.100 1 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 UDP4", "PROXY UDP4 192.0.2.10 198.51.100.1 1 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 lower-case", "proxy TCP4 192.0.2.10 198.51.100.1 1 25\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 missing port", "PROXY TCP4 192.0.2.10 198.51.100.1 1\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 bare LF does not end it, line too long",
	    "PROXY TCP4 192.0.2.10 198.51.100.1 1 25\n"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", 0,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v1 bare LF, still waiting for CRLF",
	    "PROXY TCP4 192.0.2.10 198.51.100.1 1 25\n", 0, HAPROXY_MORE, 0, NULL, 0 },
	{ "v1 NUL inside", "PROXY TCP4 192.0.2.10\0 198.51.100.1 1 25\r\n", 42,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "neither v1 nor v2", "EHLO x\r\n", 0, HAPROXY_BAD, 0, NULL, 0 },
	{ "empty", "", 0, HAPROXY_MORE, 0, NULL, 0 },
	{ "first octet of the v2 signature", "\r", 1, HAPROXY_MORE, 0, NULL, 0 },
	/* ---- v2: SIG, ver/cmd, family, length (big-endian), body */
	{ "v2 TCP4",
	    SIG "\x21\x11\x00\x0c" "\xcb\x00\x71\x07" "\xc6\x33\x64\x01" "\x9c\x42\x00\x19",
	    28, HAPROXY_ADDR, 28, "203.0.113.7", 40002 },
	{ "v2 TCP4 with a TLV, SMTP follows",
	    SIG "\x21\x11\x00\x13" "\xcb\x00\x71\x08" "\xc6\x33\x64\x01" "\x9c\x44\x00\x19"
	    "\x02\x00\x04" "mx.x" "EHLO", 39, HAPROXY_ADDR, 35, "203.0.113.8", 40004 },
	{ "v2 TCP6",
	    SIG "\x21\x21\x00\x24"
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x77"
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
	    "\x9c\x43\x00\x19", 52, HAPROXY_ADDR, 52, "2001:db8::77", 40003 },
	{ "v2 LOCAL", SIG "\x20\x00\x00\x00", 16, HAPROXY_LOCAL, 16, NULL, 0 },
	{ "v2 PROXY UNSPEC", SIG "\x21\x00\x00\x00", 16, HAPROXY_LOCAL, 16, NULL, 0 },
	{ "v2 version 1", SIG "\x11\x11\x00\x0c" "\xcb\x00\x71\x07" "\xc6\x33\x64\x01"
	    "\x9c\x42\x00\x19", 28, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 version 3", SIG "\x31\x11\x00\x0c" "\xcb\x00\x71\x07" "\xc6\x33\x64\x01"
	    "\x9c\x42\x00\x19", 28, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 command 5", SIG "\x25\x11\x00\x0c" "\xcb\x00\x71\x07" "\xc6\x33\x64\x01"
	    "\x9c\x42\x00\x19", 28, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 UDP4", SIG "\x21\x12\x00\x0c" "\xcb\x00\x71\x07" "\xc6\x33\x64\x01"
	    "\x9c\x42\x00\x19", 28, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 TCP4 shorter than its addresses", SIG "\x21\x11\x00\x04" "\xcb\x00\x71\x07",
	    20, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 TCP6 shorter than its addresses", SIG "\x21\x21\x00\x0c"
	    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00", 28, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 length 513 (over the maximum)", SIG "\x21\x11\x02\x01", 16,
	    HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 length 65535", SIG "\x21\x11\xff\xff", 16, HAPROXY_BAD, 0, NULL, 0 },
	{ "v2 length 512, body not there yet", SIG "\x21\x11\x02\x00", 16,
	    HAPROXY_MORE, 0, NULL, 0 },
	{ "v2 broken signature", "\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c" "\xcb\x00\x71\x07"
	    "\xc6\x33\x64\x01" "\x9c\x42\x00\x19", 28, HAPROXY_BAD, 0, NULL, 0 },
};

static void
check(const struct hp_case *c)
{
	struct sockaddr_storage ss;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
	size_t len = c->len ? c->len : strlen(c->in), used, i, more = 0;
	char addr[INET6_ADDRSTRLEN] = "";
	unsigned port = 0;
	enum haproxy_status st;

	memset(&ss, 0xa5, sizeof ss);
	st = haproxy_parse((const unsigned char *)c->in, len, &used, &ss);
	ok(st == c->want, "%s: status %d (want %d)", c->name, st, c->want);
	if (c->want == HAPROXY_LOCAL || c->want == HAPROXY_ADDR)
		ok(used == c->used, "%s: used %zu (want %zu)", c->name, used, c->used);
	else
		ok(used == 0, "%s: nothing used (%zu)", c->name, used);
	if (c->want == HAPROXY_ADDR) {
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof addr);
			port = ntohs(s4->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
			port = ntohs(s6->sin6_port);
		}
		ok(strcmp(addr, c->addr) == 0 && port == c->port,
		    "%s: client %s port %u (want %s port %u)", c->name, addr, port,
		    c->addr, c->port);
	}
	/* A verdict on a complete header never comes early. */
	if (c->want == HAPROXY_LOCAL || c->want == HAPROXY_ADDR) {
		for (i = 0; i < c->used; i++)
			if (haproxy_parse((const unsigned char *)c->in, i, &used,
			    &ss) != HAPROXY_MORE)
				more++;
		ok(more == 0, "%s: each of its %zu prefixes is incomplete (%zu not)",
		    c->name, c->used, more);
	}
}

int
main(void)
{
	unsigned char big[HAPROXY_MAX];
	struct sockaddr_storage ss;
	size_t i, used;

	plan(93);
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check(&cases[i]);

	/* The v1 limit, 107 octets with CRLF, and one past it. */
	memset(big, 'x', sizeof big);
	memcpy(big, "PROXY UNKNOWN ", 14);
	memcpy(big + HAPROXY_V1_MAX - 2, "\r\n", 2);
	ok(haproxy_parse(big, HAPROXY_V1_MAX, &used, &ss) == HAPROXY_LOCAL &&
	    used == HAPROXY_V1_MAX, "v1 of %d octets with CRLF: used", HAPROXY_V1_MAX);
	memcpy(big + HAPROXY_V1_MAX - 2, "x\r\n", 3);
	ok(haproxy_parse(big, HAPROXY_V1_MAX + 1, &used, &ss) == HAPROXY_BAD,
	    "v1 of %d octets with CRLF: bad", HAPROXY_V1_MAX + 1);
	ok(haproxy_parse(big, HAPROXY_V1_MAX, &used, &ss) == HAPROXY_MORE,
	    "v1 %d octets without CRLF yet: more", HAPROXY_V1_MAX);
	big[HAPROXY_V1_MAX] = 'x';
	ok(haproxy_parse(big, HAPROXY_V1_MAX + 1, &used, &ss) == HAPROXY_BAD,
	    "v1 %d octets without CRLF: bad", HAPROXY_V1_MAX + 1);

	/* A caller holding HAPROXY_MAX bytes always gets a verdict. */
	memset(big, 'x', sizeof big);
	memcpy(big, "PROXY ", 6);
	ok(haproxy_parse(big, sizeof big, &used, &ss) == HAPROXY_BAD,
	    "v1 without CRLF in HAPROXY_MAX octets: bad");
	memcpy(big, SIG "\x21\x11\x02\x00", 16);
	big[13] = 0x31;		/* UNIX stream */
	ok(haproxy_parse(big, sizeof big, &used, &ss) == HAPROXY_BAD && used == 0,
	    "v2 AF_UNIX: bad");
	big[13] = 0x11;
	ok(haproxy_parse(big, sizeof big, &used, &ss) == HAPROXY_ADDR &&
	    used == HAPROXY_MAX, "v2 TCP4 with 500 octets of TLVs: used all %d",
	    HAPROXY_MAX);
	return done_testing();
}
