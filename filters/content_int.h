/*
 * content_int.h - private to content.c and content_rules.c: limits, the
 * scopes and actions, and the compiled rule set
 *
 * DESCRIPTION
 *	A struct content_rules is built by content_rules_load()
 *	(content_rules.c) and only read afterwards, by every session at
 *	once (content.c).  Nothing outside filters/content*.c includes this,
 *	except the fuzz harness.
 */
#ifndef FRONTMX_CONTENT_INT_H
#define FRONTMX_CONTENT_INT_H

#include <stddef.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "frontmx_filter.h"

/*
 * A body line is matched whole: the core refuses lines over its
 * limits.line_length (1000 octets by default, RFC 5321 4.5.3.1.6, at most
 * 1 MiB), and a rule must see the end of every line it lets through, or
 * text pushed past octet 1000 would escape it.  Longer lines (not from
 * the core) are matched cut.
 */
#define CONTENT_LINE_MAX	1048576
#define CONTENT_LINE_START	1024	/* the buffer doubles from here */
#define CONTENT_RULE_LINE_MAX	4096	/* one rule file line */
#define CONTENT_RULES_MAX	10000	/* rules per file */
#define CONTENT_TEXT_MAX	400	/* "550 5.7.1 " + text stays under 512 */
#define CONTENT_NAME_SHOW	64	/* bytes of a bad word quoted in an error */
#define CONTENT_EXCERPT_MAX	80	/* bytes of a subject quoted in the log */
#define CONTENT_LOG_MAX		16	/* WARN and match-error lines per message */
#define CONTENT_REASON_MAX	512

#define CONTENT_DEPTH_DEFAULT	20
#define CONTENT_DEPTH_MAX	1000	/* GMime itself stops at 1024 */
#define CONTENT_PARTS_DEFAULT	500
#define CONTENT_PARTS_MAX	100000

/*
 * PCRE2 limits.  The default match limit (10 million) lets one line cost
 * a noticeable fraction of a second with a backtracking pattern; a
 * million steps is still far above what any sane rule needs on a
 * 1000-byte subject.  The heap limit is in KiB.
 */
#define CONTENT_MATCH_LIMIT	1000000
#define CONTENT_DEPTH_LIMIT	10000
#define CONTENT_HEAP_LIMIT	4096

#define CONTENT_MIME_LIMIT_REPLY "554 5.6.0 Error: message structure too complex"

enum content_scope {
	CONTENT_SCOPE_HEADER = 0,
	CONTENT_SCOPE_BODY,
	CONTENT_SCOPE_MIME,
	CONTENT_SCOPE_FILENAME,
	CONTENT_SCOPE_COUNT	/* must be last */
};

enum content_action {
	CONTENT_ACTION_ACCEPT = 0,
	CONTENT_ACTION_TAG,
	CONTENT_ACTION_QUARANTINE,
	CONTENT_ACTION_TEMPFAIL,
	CONTENT_ACTION_REJECT,
	CONTENT_ACTION_DISCARD,
	CONTENT_ACTION_WARN,
	CONTENT_ACTION_COUNT	/* must be last */
};

struct content_action_def {
	const char		*name;		/* as written in the rule file */
	const char		*result;	/* api->set_result() name, the policy's key */
	enum fmx_verdict	 verdict;
};

struct content_rule {
	enum content_scope	 scope;
	enum content_action	 action;
	unsigned		 line;
	pcre2_code		*re;
	char			*text;		/* as written, NULL if none (logged) */
	char			*reply;		/* REJECT/TEMPFAIL: full SMTP reply */
};

struct content_rules {
	char			*path;
	struct content_rule	*v;
	size_t			 n, cap;
	unsigned		 scopes;	/* 1u << CONTENT_SCOPE_* in use */
	pcre2_match_context	*mctx;		/* limits; read-only once loaded */
};

/* content_rules.c */
int content_rules_is_space(int c);

/* content_rules.c */
extern const char *const content_rules_scope_names[CONTENT_SCOPE_COUNT];
extern const struct content_action_def content_rules_actions[CONTENT_ACTION_COUNT];

#endif
