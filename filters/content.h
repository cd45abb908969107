/*
 * content.h - the built-in content filter (header/body/MIME rules)
 *
 * SYNOPSIS
 *	#include "content.h"
 *
 *	const struct fmx_filter *content_filter(void);
 *
 *	int  content_rules_load(const char *path, struct content_rules **out,
 *	         char *err, size_t errlen);
 *	size_t content_rules_count(const struct content_rules *);
 *	void content_rules_free(struct content_rules *);
 *
 * DESCRIPTION
 *	content_filter() returns the filter table named "content".  It uses
 *	frontmx_filter.h exactly like a third-party module; the core links
 *	it in instead of dlopen()ing it.  Options ("key=value"):
 *
 *	    rules = PATH	rule file (required)
 *	    max_depth = N	MIME nesting limit, 1..1000 (default 20)
 *	    max_parts = N	MIME entities per message, 1..100000 (default 500)
 *	    jit = BOOLEAN	PCRE2 JIT (default yes); "no" interprets the
 *				patterns, slower, but checkable under valgrind
 *
 *	A message whose structure exceeds either limit gets the result
 *	"mime_limit" and the verdict reject, "554 5.6.0 Error: message
 *	structure too complex" (the policy may map mime_limit elsewhere).
 *
 * RULE FILE
 *	One rule per line; blank lines and lines whose first non-blank
 *	character is '#' are ignored.  No continuation lines.
 *
 *	    SCOPE  /REGEX/FLAGS  ACTION [TEXT]
 *
 *	SCOPE	header    each top-level header field, unfolded to
 *			  "Name: value" (white space around the colon
 *			  normalised to ": "); matched raw and RFC 2047-decoded
 *		body      each line of the message body as received (raw,
 *			  still transfer-encoded), without CRLF, whole:
 *			  the core's limits.line_length (1000 by default,
 *			  at most 1 MiB) bounds them; longer ones are
 *			  matched truncated to 1 MiB
 *		mime      each header field of every MIME entity below the
 *			  top-level header: the Content-* fields of the
 *			  message, every part's fields, the header of an
 *			  attached message/rfc822; unfolded, matched raw and
 *			  decoded
 *		filename  every Content-Disposition filename and Content-Type
 *			  name parameter of every part, RFC 2231 and RFC 2047
 *			  decoded (both are checked when both are present)
 *	REGEX	PCRE2, byte-wise (no UTF unless the pattern starts with
 *		(*UTF), and then invalid UTF-8 in a subject is tolerated);
 *		'/' inside is written "\/".
 *	FLAGS	i caseless, m multiline, s dotall, x extended.
 *	ACTION	ACCEPT, TAG, QUARANTINE, TEMPFAIL (alias DEFER), REJECT,
 *		DISCARD, WARN (log only and keep looking); case-insensitive.
 *	TEXT	printable ASCII, at most 400 characters.  For REJECT and
 *		TEMPFAIL it is the reply text, optionally starting with an
 *		enhanced status code of the matching class ("5.7.1 ...");
 *		otherwise 5.7.1 / 4.7.1: "550 5.7.1 TEXT", "451 4.7.1 TEXT".
 *		For other actions it is only logged.
 *
 *	Evaluation order is arrival order: header fields as they come, then
 *	body lines, then (at end of message) the MIME structure: the limits
 *	over the whole tree first, then each entity in tree order with its
 *	mime rules before its filename rules; for one subject, rules in
 *	file order.  The first matching rule that is not
 *	WARN decides the message: the filter calls api->set_result(ctx,
 *	"<action in lower case>", "rule PATH:LINE matched") and returns the
 *	verdict.  Nothing is evaluated after that for the message.
 *
 * DIAGNOSTICS
 *	content_rules_load() returns 0, or -1 with err set to "PATH:LINE:
 *	message" (a bad line) or "PATH: cannot open: reason".  The filter's
 *	init logs that message and fails.  A regex that hits its match,
 *	depth or heap limit on a subject counts as "no match" for that
 *	subject and is logged.  WARN matches and limit hits share a budget
 *	of 16 log lines per message, so a big body cannot flood the log.
 *
 * THREADING
 *	Compiled rules are read-only after load and shared by all sessions;
 *	match data lives in the per-message state, so hooks of different
 *	sessions may run concurrently.
 */
#ifndef FRONTMX_CONTENT_H
#define FRONTMX_CONTENT_H

#include <stddef.h>

#include "frontmx_filter.h"

#define CONTENT_ERR_MAX	512	/* enough for "PATH:LINE: message" */

struct content_rules;

const struct fmx_filter	*content_filter(void);

int		 content_rules_load(const char *path, struct content_rules **out,
		    char *err, size_t errlen);
size_t		 content_rules_count(const struct content_rules *);
void		 content_rules_free(struct content_rules *);

/*
 * A header field value as a person reads it (api->header_decode): folds
 * removed, RFC 2047 words decoded by GMime, UTF-8 made valid, control
 * characters as spaces; snprintf() semantics, cut on a character
 * boundary.  The length of the whole value, or -1 (NULL value, memory).
 */
long		 content_header_decode(const char *value, char *buf, size_t buflen);

#endif
