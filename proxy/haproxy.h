/*
 * haproxy.h - PROXY protocol v1 and v2 headers (haproxy's
 * proxy-protocol.txt), parsed from bytes, no I/O
 *
 * SYNOPSIS
 *	n = copy of at most HAPROXY_MAX buffered bytes into buf;
 *	switch (haproxy_parse(buf, n, &used, &ss)) { MORE / BAD / LOCAL / ADDR }
 *
 * DESCRIPTION
 *	The header comes from a load balancer before any SMTP byte, so the
 *	whole of buf is the balancer's.  haproxy_parse() looks at buf[0..len)
 *	and says whether a complete header is there (*used bytes of it, to
 *	drop from the input), whether more bytes are needed, or whether it is
 *	not a header we accept.  A header of more than HAPROXY_V1_MAX (v1) or
 *	HAPROXY_V2_MAX (v2) bytes is bad, so the caller never needs to hold
 *	more than HAPROXY_MAX bytes: with len == HAPROXY_MAX the answer is
 *	never MORE.
 */
#ifndef FRONTMX_HAPROXY_H
#define FRONTMX_HAPROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define HAPROXY_V1_MAX	107		/* proxy-protocol.txt 2.1, with CRLF */
#define HAPROXY_V2_MAX	(16 + 512)	/* header + addresses + TLVs we accept */
#define HAPROXY_MAX	HAPROXY_V2_MAX

enum haproxy_status {
	HAPROXY_MORE = 0,	/* incomplete: wait for more bytes */
	HAPROXY_BAD,		/* not a PROXY header we accept: close */
	HAPROXY_LOCAL,		/* LOCAL / UNKNOWN / UNSPEC: keep the TCP peer */
	HAPROXY_ADDR		/* *ss holds the real client (IPv4 or IPv6, port) */
};

enum haproxy_status haproxy_parse(const unsigned char *buf, size_t len,
		    size_t *used, struct sockaddr_storage *ss);

#endif
