/*
 * smtp_frame.c - CRLF line framing of the client's input, DATA un-stuffing
 *
 * NAME
 *	smtp_frame_line, smtp_frame_unstuff
 *
 * DESCRIPTION
 *	The one place where client bytes become lines (see smtp_frame.h), for
 *	commands, AUTH responses and DATA alike.  It touches nothing but the
 *	evbuffer it is given, so t/fuzz/data_framer.c drives it with any
 *	byte stream cut in any pieces.
 */
#include <event2/buffer.h>

#include "smtp_frame.h"

enum smtp_line
smtp_frame_line(struct evbuffer *in, int *skipping, char *buf, size_t max,
    size_t *lenp)
{
	struct evbuffer_ptr eol;
	size_t eol_len, have, len, i;
	unsigned char last;

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
	if (eol.pos < 0) {
		have = evbuffer_get_length(in);
		if (!*skipping && have < max)
			return SMTP_LINE_NONE;
		/* Keep a trailing CR: it may be half of the CRLF we wait for. */
		if (have > 0) {
			evbuffer_ptr_set(in, &eol, have - 1, EVBUFFER_PTR_SET);
			if (evbuffer_copyout_from(in, &eol, &last, 1) != 1)
				last = 0;
			evbuffer_drain(in, last == '\r' ? have - 1 : have);
		}
		*skipping = 1;
		return SMTP_LINE_NONE;
	}
	len = (size_t)eol.pos + 2;
	if (*skipping || len > max) {
		evbuffer_drain(in, len);
		*skipping = 0;
		*lenp = 0;
		return SMTP_LINE_TOO_LONG;
	}
	evbuffer_remove(in, buf, len);
	*lenp = len;
	for (i = 0; i < len - 2; i++) {
		if (buf[i] == '\r' || buf[i] == '\n')
			return SMTP_LINE_BARE_EOL;
		if (buf[i] == '\0')
			return SMTP_LINE_NUL;
	}
	return SMTP_LINE_OK;
}

/* line[0..len) ends in CRLF; a line of CRLF alone has no dot to remove. */
void
smtp_frame_unstuff(const char **line, size_t *len)
{
	if (*len > 2 && (*line)[0] == '.') {
		(*line)++;
		(*len)--;
	}
}
