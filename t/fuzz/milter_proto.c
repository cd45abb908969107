/*
 * milter_proto.c - fuzz what a milter sends the MTA (filters/milter_proto.c)
 *
 * Properties: the packet reader never reads past the bytes it has, every
 * prefix of a packet is "more" and a length over MILTER_PKT_MAX is refused
 * at once; the OPTNEG check accepts only versions 2..6 and offered actions
 * and keeps each symbol list NUL-terminated within its bound; an accepted
 * SMFIR_REPLYCODE renders to printable 4xx/5xx lines joined by '\n', all
 * with the same code; an accepted header value has no CR or LF but in a
 * CRLF fold followed by a blank, and no line over 998 octets.
 */
#include <string.h>

#include "fuzz.h"
#include "milter_proto.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[MILTER_REPLY_MAX], val[MILTER_HDR_VALUE_MAX];
	static char in[MILTER_HDR_VALUE_MAX + 16];
	struct milter_pkt p;
	struct milter_optneg o;
	const char *why, *s[4];
	size_t used, i, n;
	long len;
	int r;

	/* The stream as packets: each prefix of a whole packet needs more. */
	r = milter_pkt_parse(data, size, &p, &used);
	if (r == 1) {
		const uint8_t *d = p.data;
		size_t dl = p.len;

		FUZZ_CHECK(used <= size && used == 5 + p.len && p.len < MILTER_PKT_MAX);
		for (i = 0; i < used; i++)
			FUZZ_CHECK(milter_pkt_parse(data, i, &p, &n) == 0);
		FUZZ_CHECK(d == data + 5 && dl == used - 5);
	} else if (r == -1)
		FUZZ_CHECK(size >= 4);
	r = milter_strings(data, size, s, 0, 4);
	FUZZ_CHECK(r <= 4);
	for (i = 0; r > 0 && i < (size_t)r; i++)
		FUZZ_CHECK((const uint8_t *)s[i] >= data && (const uint8_t *)s[i] < data + size);

	if (milter_optneg_parse(data, size, &o, &why) == 0) {
		FUZZ_CHECK(o.version >= 2 && o.version <= MILTER_VERSION);
		FUZZ_CHECK((o.actions & ~SMFIF_ALL) == 0);
		for (i = 0; i < MILTER_ST_COUNT; i++)
			FUZZ_CHECK(!o.has_list[i] || memchr(o.list[i], '\0',
			    sizeof o.list[i]) != NULL);
	}

	if (milter_reply_text(data, size, out, sizeof out) == 0) {
		char code[3];

		memcpy(code, out, 3);
		FUZZ_CHECK(code[0] == '4' || code[0] == '5');
		for (i = 0; out[i] != '\0'; i++) {
			FUZZ_CHECK(out[i] == '\n' || (out[i] >= 0x20 && out[i] <= 0x7e));
			if (i == 0 || out[i - 1] == '\n')
				FUZZ_CHECK(memcmp(out + i, code, 3) == 0);
		}
	}

	n = size < sizeof in - 1 ? size : sizeof in - 1;
	memcpy(in, data, n);
	in[n] = '\0';
	if ((len = milter_hdr_value(in, val, sizeof val)) >= 0) {
		size_t line = 0;

		FUZZ_CHECK((size_t)len == strlen(val));
		for (i = 0; i < (size_t)len; i++) {
			if (val[i] == '\r') {
				FUZZ_CHECK(val[i + 1] == '\n' &&
				    (val[i + 2] == ' ' || val[i + 2] == '\t'));
				line = 0;
				continue;
			}
			if (val[i] == '\n') {
				FUZZ_CHECK(i > 0 && val[i - 1] == '\r');
				continue;
			}
			FUZZ_CHECK(++line <= 998);
		}
	}
	milter_hdr_name_valid(in);
	return 0;
}
