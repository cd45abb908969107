/*
 * policy.h - per-domain policy lookup, result -> action mapping, dry run,
 * Authentication-Results rendering and forged-field detection
 *
 * SYNOPSIS
 *	#include "policy.h"
 *
 *	const struct config_policy *p = policy_lookup(cfg, "example.com");
 *	struct policy_decision d = policy_decide(cfg, p, "spf", "fail", 0);
 *	if (d.mapped) ... d.action ...; if (d.dry_run) ...
 *
 *	struct policy_ar_result r[] = {
 *		{ "spf", "pass", NULL, "smtp.mailfrom=a@b.example" },
 *	};
 *	char buf[POLICY_AR_MAX];
 *	size_t n = policy_ar_render(buf, sizeof buf, cfg->authserv_id, r, 1);
 *
 *	if (policy_header_is(name, namelen, "Authentication-Results") &&
 *	    policy_ar_is_ours(value, valuelen, cfg->authserv_id))
 *		drop the field;
 *
 * DESCRIPTION
 *	Pure functions over an immutable struct config: no allocation, no
 *	locks, no libevent, no sockets.  Every
 *	worker thread may call them at once on a configuration it holds a
 *	reference to.
 *
 *	policy_lookup() returns the policy for a domain: the entry that
 *	lists the domain itself (any case, one trailing dot ignored), else
 *	the entry of its nearest listed parent, else &cfg->policy_default.
 *	NULL, "" or a malformed name (empty label, longer than 253) gets the
 *	default.  With the index built by config_load() it costs one hash
 *	probe per label (config_policy_find()); a struct config built by
 *	hand (policy_index NULL) is scanned linearly.  Returns NULL only
 *	when cfg is NULL.
 *
 *	policy_decide() is what the filter chain asks about every answer a
 *	filter gives, once: which action the policy takes, and whether the
 *	filter runs dry there.  For a failed call (error, timeout, bad
 *	verdict) mapped is 1 and action is on_error: p's (or the default's)
 *	"on_error" rule for the filter, else the on_error of its `filters`
 *	entry, else tempfail.  Otherwise mapped is 1 when result is not
 *	NULL or "" and policy_action() has a rule for it (action then
 *	replaces the filter's own verdict), and 0 when the filter's verdict
 *	stands (action is CONFIG_ACTION_COUNT).  dry_run is
 *	policy_dry_run(): when 1, a refusing outcome (reject, tempfail,
 *	quarantine, discard), mapped or the filter's own, is relayed with a
 *	dry-run tag instead; the caller applies it because only it knows the
 *	filter's verdict.  filter NULL gives { 0, COUNT, 0 }.
 *
 *	policy_action() maps (filter, result) through p, then through the
 *	default policy: 1 with *out set, or 0 when neither has a rule (the
 *	filter's own verdict then stands).  p NULL means the default.
 *
 *	policy_dry_run() returns 1 or 0 from the first value that is set in
 *	this order: p's group for the filter, p itself, the default's group
 *	for the filter, the default itself, the filter's entry in `filters`;
 *	0 when none is.
 *
 *	policy_ar_render() writes a complete Authentication-Results header
 *	field (RFC 8601 section 2.2), NUL-terminated, with CRLF line ends,
 *	one resinfo per folded line.  It returns the length without the NUL,
 *	or 0 (and an empty string when outlen > 0) when out is too small or
 *	authserv_id is not an RFC 2045 token.  Entries whose method or result
 *	is not an RFC 8601 keyword are left out (policy_ar_keyword_valid()
 *	lets the filter API refuse them up front); with no entry left the
 *	field says "none" (RFC 8601 section 2.2).  A reason becomes a
 *	comment: '(' ')' '\' are escaped, control characters dropped,
 *	non-ASCII bytes become '?', cut at POLICY_AR_REASON_MAX bytes.
 *	props is zero or more "ptype.property=value" items separated by
 *	white space (a "..." value may hold spaces); malformed items and
 *	values longer than POLICY_AR_VALUE_MAX are left out, other values
 *	that are neither RFC 2045 tokens nor local-part@domain are quoted.
 *	No input byte can put a CR or LF in the output: the only ones are
 *	the folds and the final CRLF this function writes, so no line is
 *	longer than about 600 bytes (RFC 5322 section 2.1.1 allows 998).
 *
 *	policy_ar_is_ours() reads the authserv-id at the start of a raw
 *	Authentication-Results field body (after the colon; folds, comments,
 *	nested comments, a quoted-string id and a trailing version number
 *	allowed) and returns 1 when it equals authserv_id ignoring case and
 *	one trailing dot, so the caller can delete the forgery (RFC 8601
 *	section 5).  "mx.example.net.evil" is not "mx.example.net".  Errs
 *	towards 1: an id followed by junk still counts as ours.
 *
 *	policy_header_is() compares a header field name of len bytes with
 *	want, ignoring ASCII case and trailing blanks (RFC 5322 obsolete
 *	syntax allows "Name :", and a reader that accepts it must not be
 *	able to see a field we failed to recognise).
 */
#ifndef FRONTMX_POLICY_H
#define FRONTMX_POLICY_H

#include <stddef.h>

#include "config.h"

/* Room for any rendered field with a few dozen results. */
#define POLICY_AR_MAX		8192
/* Fold before a word that would take the line past this (RFC 5322 2.1.1's 78). */
#define POLICY_FOLD		78
/* Bytes of comment text kept from one reason, escapes included. */
#define POLICY_AR_REASON_MAX	256
/* Longest property value rendered, quotes and escapes included. */
#define POLICY_AR_VALUE_MAX	512
/* Longest authserv-id accepted: config.h's, which checks it at load. */
#define POLICY_AUTHSERV_MAX	CONFIG_AUTHSERV_MAX

struct policy_ar_result {
	const char	*method;	/* "spf", "dkim", "dkim/1" */
	const char	*result;	/* "pass", "fail", ... */
	const char	*reason;	/* NULL or free text -> "(comment)" */
	const char	*props;		/* NULL or "smtp.mailfrom=a@b.example" ... */
};

/* What the policy makes of one filter answer: policy_decide(). */
struct policy_decision {
	int			 mapped;	/* 1: action replaces the filter's verdict */
	enum config_action	 action;	/* when mapped; else CONFIG_ACTION_COUNT */
	int			 dry_run;	/* refusing outcomes are only tagged */
};

const struct config_policy *
		 policy_lookup(const struct config *, const char *domain);
struct policy_decision
		 policy_decide(const struct config *, const struct config_policy *,
		    const char *filter, const char *result, int failed);
/* policy_decide()'s parts, for its tests: the chain calls policy_decide(). */
int		 policy_action(const struct config *, const struct config_policy *,
		    const char *filter, const char *result, enum config_action *out);
int		 policy_dry_run(const struct config *, const struct config_policy *,
		    const char *filter);

size_t		 policy_ar_render(char *out, size_t outlen, const char *authserv_id,
		    const struct policy_ar_result *, size_t n);
int		 policy_ar_is_ours(const char *value, size_t len,
		    const char *authserv_id);
int		 policy_header_is(const char *name, size_t len, const char *want);

/*
 * 1 if s is an RFC 8601 method (version_ok: "dkim", "dkim/1") or result
 * ("pass") keyword: letters, digits, inner hyphens, at most 64.
 */
int		 policy_ar_keyword_valid(const char *s, int version_ok);
/* 1 if s is an RFC 2045 token usable as an authserv-id (1..255 bytes). */
int		 policy_authserv_id_valid(const char *s);

/*
 * A bounded header-field writer, used for Authentication-Results here and
 * for Received in the session: p holds size bytes and stays NUL-terminated; col counts the
 * octets since the last CRLF; overflow is set instead of writing past
 * the end.  policy_part() puts one word after a space, or after a fold
 * when the line would pass POLICY_FOLD; a word shorter than 990 octets
 * therefore keeps every line within RFC 5322's 998.
 */
struct policy_buf {
	char	*p;
	size_t	 size;
	size_t	 len;
	size_t	 col;		/* bytes since the last CRLF */
	int	 overflow;
};

void		 policy_put(struct policy_buf *, const char *, size_t);
void		 policy_puts(struct policy_buf *, const char *);
void		 policy_fold(struct policy_buf *);
void		 policy_part(struct policy_buf *, const char *, size_t);

#endif
