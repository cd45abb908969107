/*
 * smtp_frame.h - framing the client's byte stream into CRLF lines
 *
 * SYNOPSIS
 *	int skipping = 0;
 *	kind = smtp_frame_line(evbuffer, &skipping, buf, max, &len);
 *	smtp_frame_unstuff(&line, &len);	(DATA lines only)
 *
 * DESCRIPTION
 *	smtp_frame_line() takes one line ending in CRLF off the input into buf
 *	(at most max bytes including CRLF; buf holds max bytes).  Only CRLF
 *	ends a line: a bare CR or LF stays inside it and makes it
 *	SMTP_LINE_BARE_EOL, a NUL SMTP_LINE_NUL, so "\n.\n" can never end a
 *	message.  An over-long line is drained as it arrives (*skipping
 *	remembers that across calls), so the input stays bounded by max,
 *	and it is reported once, as SMTP_LINE_TOO_LONG with *lenp 0, when its
 *	CRLF shows up.  SMTP_LINE_NONE: no complete line yet.  It only reads
 *	and drains the evbuffer: no event loop is involved.
 *
 *	smtp_frame_unstuff() removes the transparency dot of a DATA line
 *	(RFC 5321 4.5.2): ".." becomes ".".  The final "." line is the
 *	caller's to recognise before, on an SMTP_LINE_OK of 3 bytes.
 */
#ifndef FRONTMX_SMTP_FRAME_H
#define FRONTMX_SMTP_FRAME_H

#include <stddef.h>

struct evbuffer;

/* Result of framing one line from the client. */
enum smtp_line {
	SMTP_LINE_NONE = 0,	/* need more input */
	SMTP_LINE_OK,
	SMTP_LINE_TOO_LONG,
	SMTP_LINE_BARE_EOL,
	SMTP_LINE_NUL
};

enum smtp_line	smtp_frame_line(struct evbuffer *in, int *skipping, char *buf,
		    size_t max, size_t *lenp);
void		smtp_frame_unstuff(const char **line, size_t *len);

#endif
