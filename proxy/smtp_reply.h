/*
 * smtp_reply.h - strict, bounded parser for SMTP replies (RFC 5321 4.2)
 *
 * SYNOPSIS
 *	smtp_reply_init(&r);
 *	while (line framed by the caller)
 *		switch (smtp_reply_feed(&r, line, len)) { MORE / DONE / ERROR }
 *
 * DESCRIPTION
 *	Used on the upstream side: the upstream is trusted to be an MTA but not
 *	to be well-behaved, so everything is capped (cf. OpenSMTPD
 *	CVE-2020-8794).  A line is "ddd-text" or "ddd text" or "ddd"; every
 *	line of one reply carries the same code; the first digit is 2..5;
 *	no more than SMTP_REPLY_LINES_MAX lines or SMTP_REPLY_TEXT_MAX bytes.
 *	The caller strips CRLF and rejects lines with CR, LF or NUL inside or
 *	longer than SMTP_REPLY_LINE_MAX before calling smtp_reply_feed().
 */
#ifndef FRONTMX_SMTP_REPLY_H
#define FRONTMX_SMTP_REPLY_H

#include <stddef.h>

#define SMTP_REPLY_LINE_MAX	1000	/* RFC says 512; real MTAs exceed it, be a little lenient */
#define SMTP_REPLY_LINES_MAX	64
#define SMTP_REPLY_TEXT_MAX	8192	/* all lines' text, '\n'-separated */

enum smtp_reply_status {
	SMTP_REPLY_MORE = 0,	/* continuation line accepted, need more */
	SMTP_REPLY_DONE,	/* last line seen, reply complete */
	SMTP_REPLY_ERROR	/* malformed; r->error says why */
};

struct smtp_reply {
	int	code;				/* 200..599 */
	char	text[SMTP_REPLY_TEXT_MAX + 1];	/* lines' text without code, joined by '\n' */
	size_t	textlen;
	size_t	nlines;
	const char *error;			/* static string when status is ERROR */
};

void	smtp_reply_init(struct smtp_reply *);
enum smtp_reply_status smtp_reply_feed(struct smtp_reply *, const char *line, size_t len);

/*
 * The enhanced status code at the start of line text ("2.1.0 Ok" -> "2.1.0"),
 * if it is syntactically valid (RFC 3463) and its class matches the reply
 * code's first digit.  Returns length of the code (and copies it to out,
 * NUL-terminated, outlen >= 16) or 0 when absent.
 */
size_t	smtp_reply_enhanced(const char *text, int code, char *out, size_t outlen);

/*
 * Render r as wire text into out (CRLF line ends, '-' on all but the last
 * line), forcing every line to carry an enhanced status code: the
 * upstream's own when valid, else dflt (e.g. "4.0.0").  If code_override is
 * non-zero it replaces r->code (dflt must then match its class).  Returns
 * bytes written, or 0 if out is too small.
 */
size_t	smtp_reply_render(const struct smtp_reply *r, int code_override,
	    const char *dflt, char *out, size_t outlen);

/* EHLO reply keywords (upper-cased) are each line of text after the first. */
#define SMTP_EHLO_PIPELINING	0x0001u
#define SMTP_EHLO_SIZE		0x0002u
#define SMTP_EHLO_8BITMIME	0x0004u
#define SMTP_EHLO_SMTPUTF8	0x0008u
#define SMTP_EHLO_DSN		0x0010u
#define SMTP_EHLO_CHUNKING	0x0020u
#define SMTP_EHLO_STARTTLS	0x0040u
#define SMTP_EHLO_AUTH		0x0080u
#define SMTP_EHLO_ENHANCEDSTATUSCODES 0x0100u
#define SMTP_EHLO_XCLIENT	0x0200u
#define SMTP_EHLO_XFORWARD	0x0400u
#define SMTP_EHLO_BINARYMIME	0x0800u

struct smtp_ehlo_caps {
	unsigned	flags;		/* SMTP_EHLO_* */
	size_t		size;		/* SIZE argument, 0 = none/unlimited */
	char		xclient[128];	/* XCLIENT attribute list as advertised, upper-cased */
	char		xforward[128];	/* XFORWARD attribute list */
	char		auth[128];	/* AUTH mechanisms */
};

/* Parse a complete EHLO reply (r->code must be 250). */
void	smtp_reply_ehlo_caps(const struct smtp_reply *r, struct smtp_ehlo_caps *caps);
/* The keywords and "size=N" on one line for the log; returns its length. */
size_t	smtp_ehlo_caps_format(const struct smtp_ehlo_caps *caps, char *out,
	    size_t outlen);

#endif
