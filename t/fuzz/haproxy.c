/*
 * haproxy.c - fuzz the PROXY protocol v1/v2 parser (proxy/haproxy.c)
 *
 * The input is what a balancer (or anyone allowed by proxy_from) sends
 * before the greeting; the session hands at most HAPROXY_MAX octets of
 * it to haproxy_parse().  Properties: a verdict uses no more than it
 * was given; an accepted header yields an IPv4 or IPv6 address; holding
 * HAPROXY_MAX octets always gives a verdict; and the verdict does not
 * depend on how the bytes arrived: every shorter prefix of an accepted
 * header is "more", every longer input gives the same header, and a
 * prefix that is bad stays bad.
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <string.h>

#include "fuzz.h"
#include "haproxy.h"

static enum haproxy_status
parse(const uint8_t *data, size_t len, size_t *used, struct sockaddr_storage *ss)
{
	enum haproxy_status st;

	memset(ss, 0x5a, sizeof *ss);
	st = haproxy_parse(data, len, used, ss);
	FUZZ_CHECK(st <= HAPROXY_ADDR);
	FUZZ_CHECK(*used <= len);
	FUZZ_CHECK((*used > 0) == (st == HAPROXY_LOCAL || st == HAPROXY_ADDR));
	if (st == HAPROXY_ADDR)
		FUZZ_CHECK(ss->ss_family == AF_INET || ss->ss_family == AF_INET6);
	if (len >= HAPROXY_MAX)
		FUZZ_CHECK(st != HAPROXY_MORE);
	return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_storage ss, ss2;
	enum haproxy_status st, st2;
	size_t len = size < HAPROXY_MAX ? size : HAPROXY_MAX, used, used2, k, step;

	st = parse(data, len, &used, &ss);
	/* All prefixes of short inputs, a sample of long ones. */
	step = len <= 128 ? 1 : len / 61 + 1;
	for (k = 0; k < len; k += step) {
		st2 = parse(data, k, &used2, &ss2);
		if (st == HAPROXY_LOCAL || st == HAPROXY_ADDR) {
			if (k < used)
				FUZZ_CHECK(st2 == HAPROXY_MORE);
			else {
				FUZZ_CHECK(st2 == st && used2 == used);
				FUZZ_CHECK(st != HAPROXY_ADDR ||
				    memcmp(&ss, &ss2, sizeof ss) == 0);
			}
		}
		if (st2 == HAPROXY_BAD)
			FUZZ_CHECK(st == HAPROXY_BAD);
	}
	return 0;
}
