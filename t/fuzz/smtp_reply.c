/*
 * smtp_reply.c - fuzz the upstream reply parser (proxy/smtp_reply.c)
 *
 * The input is what an upstream MTA sends: framed as upstream.c frames
 * it (CRLF only, at most SMTP_REPLY_LINE_MAX octets, no CR, LF or NUL
 * inside), fed reply after reply.  Each complete reply is rendered for
 * the client as the session does, and the rendering must be a
 * well-formed reply: one line per upstream line, all with the same
 * code, '-' on all but the last, an enhanced status code of the right
 * class on every line of class 2, 4 and 5, nothing but printable text
 * and CRLF.  The EHLO capability parser runs on every 250.
 */
#include <string.h>

#include "fuzz.h"
#include "smtp_reply.h"

#define RENDER_MAX	(SMTP_REPLY_TEXT_MAX + 2048)	/* SMTP_REPLY_BUF */

static void
check_render(const struct smtp_reply *r, int override, const char *dflt)
{
	static char out[RENDER_MAX];
	char digits[4], text[32];
	const char *p, *eol, *end;
	size_t n, lines = 0, esc;
	int code = override ? override : r->code;

	/* Every valid reply fits the session's buffer, else it says 451. */
	n = smtp_reply_render(r, override, dflt, out, sizeof out);
	FUZZ_CHECK(n > 0);
	FUZZ_CHECK(n < sizeof out && out[n] == '\0' && strlen(out) == n);
	snprintf(digits, sizeof digits, "%03d", code);
	for (p = out, end = out + n; p < end; p = eol + 2) {
		eol = memchr(p, '\r', (size_t)(end - p));
		FUZZ_CHECK(eol != NULL && eol + 1 < end && eol[1] == '\n');
		FUZZ_CHECK(memchr(p, '\n', (size_t)(eol - p)) == NULL);
		FUZZ_CHECK(eol - p >= 3 && memcmp(p, digits, 3) == 0);
		lines++;
		if (eol + 2 == end)
			FUZZ_CHECK(eol - p == 3 || p[3] == ' ');
		else
			FUZZ_CHECK(eol - p > 3 && p[3] == '-');
		if (code / 100 != 3) {
			FUZZ_CHECK(eol - p > 4);
			n = (size_t)(eol - p - 4) < sizeof text - 1 ?
			    (size_t)(eol - p - 4) : sizeof text - 1;
			memcpy(text, p + 4, n);
			text[n] = '\0';
			esc = smtp_reply_enhanced(text, code, NULL, 0);
			FUZZ_CHECK(esc > 0 && text[0] == digits[0]);
		}
	}
	FUZZ_CHECK(lines == r->nlines);
}

static void
check_reply(const struct smtp_reply *r)
{
	struct smtp_ehlo_caps caps;
	char esc[16], dflt[8];

	FUZZ_CHECK(r->code >= 200 && r->code <= 559);
	FUZZ_CHECK(r->nlines >= 1 && r->nlines <= SMTP_REPLY_LINES_MAX);
	FUZZ_CHECK(r->textlen <= SMTP_REPLY_TEXT_MAX &&
	    strlen(r->text) == r->textlen);
	FUZZ_CHECK(memchr(r->text, '\r', r->textlen) == NULL);
	if (smtp_reply_enhanced(r->text, r->code, esc, sizeof esc) > 0)
		FUZZ_CHECK(esc[0] - '0' == r->code / 100);
	/* As smtp_chat_upstream() does, then with the codes the session forces. */
	snprintf(dflt, sizeof dflt, "%d.0.0", r->code / 100 == 3 ? 2 :
	    r->code / 100);
	check_render(r, 0, dflt);
	check_render(r, 451, "4.0.0");
	check_render(r, 554, "2.0.0");	/* a wrong class is corrected */
	check_render(r, 354, NULL);
	smtp_reply_ehlo_caps(r, &caps);
	if (r->code != 250)
		FUZZ_CHECK(caps.flags == 0);
	FUZZ_CHECK(strlen(caps.auth) < sizeof caps.auth);
	FUZZ_CHECK(strlen(caps.xclient) < sizeof caps.xclient);
	FUZZ_CHECK(strlen(caps.xforward) < sizeof caps.xforward);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_reply r;
	const char *p = (const char *)data, *end = p + size, *eol;
	size_t len;

	smtp_reply_init(&r);
	while (p < end) {
		for (eol = p; eol + 1 < end && (eol[0] != '\r' || eol[1] != '\n'); eol++)
			;
		if (eol + 1 >= end)
			break;			/* no CRLF: wait for more */
		len = (size_t)(eol - p);
		if (len > SMTP_REPLY_LINE_MAX ||
		    memchr(p, '\0', len) != NULL || memchr(p, '\r', len) != NULL ||
		    memchr(p, '\n', len) != NULL)
			break;			/* the upstream fails */
		switch (smtp_reply_feed(&r, p, len)) {
		case SMTP_REPLY_MORE:
			break;
		case SMTP_REPLY_DONE:
			check_reply(&r);
			smtp_reply_init(&r);
			break;
		case SMTP_REPLY_ERROR:
			FUZZ_CHECK(r.error != NULL);
			/* Nothing more is accepted after an error. */
			FUZZ_CHECK(smtp_reply_feed(&r, "250 ok", 6) ==
			    SMTP_REPLY_ERROR);
			return 0;
		}
		p = eol + 2;
	}
	/* Bytes the caller did not frame go in raw: they must be refused. */
	if (p < end && (memchr(p, '\r', (size_t)(end - p)) != NULL ||
	    memchr(p, '\n', (size_t)(end - p)) != NULL ||
	    memchr(p, '\0', (size_t)(end - p)) != NULL))
		FUZZ_CHECK(smtp_reply_feed(&r, p, (size_t)(end - p)) ==
		    SMTP_REPLY_ERROR);
	return 0;
}
