/*
 * frontmx_filter.h - the filter module API of frontmx (the only header a
 * module author includes)
 *
 * SYNOPSIS
 *	#include "frontmx_filter.h"
 *
 *	static const struct fmx_filter my_filter = {
 *		.abi_major = FMX_ABI_MAJOR, .abi_minor = FMX_ABI_MINOR,
 *		.struct_size = sizeof(struct fmx_filter),
 *		.name = "my_filter",
 *		.on_rcpt = my_rcpt,
 *	};
 *	const struct fmx_filter *
 *	fmx_filter_entry(const struct fmx_api *api) { ...; return &my_filter; }
 *
 * DESCRIPTION
 *	A filter is a table of hooks that mirror milter: connect, helo, mail,
 *	rcpt, data, header, eoh, body, eom, abort, close.  A NULL hook means
 *	"continue".  Built-in filters (SPF, DKIM, DMARC, content rules) use
 *	exactly this API.  A third-party module is a shared object that
 *	exports one symbol, fmx_filter_entry (FMX_ENTRY_SYMBOL), loaded with
 *	dlopen(RTLD_NOW | RTLD_LOCAL) by the path in the configuration.
 *
 * VERSIONING
 *	Both tables start with abi_major, abi_minor and struct_size.  The
 *	loader refuses a module whose abi_major differs from the core's, or
 *	whose struct_size is smaller than the first published struct of that
 *	major, naming the file.  Minor versions only append members, so a
 *	module built against an older minor keeps working; a module must
 *	check api->abi_minor (or api->struct_size) before calling a function
 *	added after the minor it was built with.
 *
 *	1.0	the hooks and api up to set_fact
 *	1.1	api->header_decode
 *	1.2	api->option_string, option_bool, option_uint, option_list,
 *		option_check (typed options for init); FMX_GET_* names for
 *		the keys of api->get() and FMX_FACT_* for set_fact();
 *		set_result(FMX_RESULT_ERROR) applies on_error
 *
 * THREADING
 *	Hooks of one session never overlap, and run on the event-loop thread
 *	that owns the session, unless the filter sets FMX_FLAG_BLOCKING, in
 *	which case the core runs its hooks on a bounded thread pool (never on
 *	an event-loop thread).  A non-blocking hook must not block: for DNS
 *	or timers it returns FMX_PENDING after starting work through the api,
 *	and calls api->resume() with the verdict when done (from the
 *	callback the core invokes on the session's thread).  resume() only
 *	records the answer: the chain and the session continue from the
 *	event loop after the callback returned, never inside resume(), so
 *	the callback may still use its msg_data and conn_data after it (a
 *	pipelined RSET that ends the message runs later).
 *
 *	The struct fmx_ctx * a hook gets is a handle, not a pointer: the core
 *	looks it up on every api call.  A call with the handle of a session
 *	that ended, from any thread but the session's own (or, for a
 *	blocking hook, the pool thread running it while its call is still
 *	wanted) is refused and logged: -1 or NULL, never a crash.  resume()
 *	counts once per pending call; a second answer, an answer from
 *	on_abort, after the timeout, or from a blocking hook is refused.
 *
 * OWNERSHIP
 *	Strings passed to hooks belong to the core and are valid for the
 *	duration of the call only.  Private data set with api->set_conn_data()
 *	or api->set_msg_data() is owned by the core from then on and released
 *	with the given free function (at close, or at the end of the message:
 *	after eom or abort).  Strings returned by api->get() are valid until
 *	the hook returns.
 *
 * RETURN RULES
 *	Hooks return an enum fmx_verdict.  FMX_REJECT and FMX_TEMPFAIL use the
 *	reply set with api->set_reply() if any (validated: 4xx/5xx matching the
 *	verdict, RFC 5321 multi-line syntax, no CR/LF/NUL inside a line),
 *	otherwise a default reply.  FMX_DISCARD and FMX_QUARANTINE are message
 *	verdicts: from a connect/helo/mail/rcpt hook they apply to the
 *	message that follows.  FMX_ACCEPT skips the rest of the chain for the
 *	current message.  A hook that returns an out-of-range value, or that
 *	a timeout overtakes, fails with the filter's configured on_error
 *	action (default tempfail).
 *
 *	What a connect, helo or mail hook answers (its verdict, result and
 *	reply) is acted on at each RCPT, with the policy of that recipient's
 *	domain, unless the filter's configuration says delay_reject = false:
 *	the client's MAIL gets 250 and a refusal becomes the RCPT reply of
 *	the recipients whose policy refuses.  Only FMX_ACCEPT without a
 *	named result acts at once.  A connect or helo answer holds for every
 *	message of the session (until the next HELO), a mail answer for its
 *	transaction.
 */
#ifndef FRONTMX_FILTER_H
#define FRONTMX_FILTER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FMX_ABI_MAJOR	1	/* incompatible change: loader refuses a mismatch */
#define FMX_ABI_MINOR	2	/* appended members only */
#define FMX_ENTRY_SYMBOL "fmx_filter_entry"

#if defined(__GNUC__)
#define FMX_PRINTF(f, a)	__attribute__((format(printf, f, a)))
#define FMX_EXPORT		__attribute__((visibility("default")))
#else
#define FMX_PRINTF(f, a)
#define FMX_EXPORT
#endif

enum fmx_verdict {
	FMX_CONTINUE = 0,	/* next filter / next phase */
	FMX_ACCEPT,		/* skip the rest of the chain for this message */
	FMX_REJECT,		/* 5xx */
	FMX_TEMPFAIL,		/* 4xx */
	FMX_DISCARD,		/* 250 to the client, message dropped and logged */
	FMX_QUARANTINE,		/* 250 to the client, message kept in the quarantine */
	FMX_TAG,		/* relay, marked with the configured tag header / subject prefix */
	FMX_PENDING,		/* answer later through api->resume() */
	FMX_VERDICT_COUNT	/* must be last */
};

enum fmx_log_level {
	FMX_LOG_DEBUG = 0,
	FMX_LOG_INFO,
	FMX_LOG_WARN
};

#define FMX_FLAG_BLOCKING	0x0001u	/* hooks may block: run them on the thread pool */

/*
 * Keys of api->get().  Use the names, not the strings: a misspelt name
 * does not compile, a misspelt string silently gets NULL.  The strings
 * are the API (modules built before 1.2 pass them), so they never change.
 */
#define FMX_GET_CLIENT_ADDR	"client.addr"	/* numeric */
#define FMX_GET_CLIENT_PORT	"client.port"
#define FMX_GET_CLIENT_NAME	"client.name"	/* verified reverse name, or "unknown" */
#define FMX_GET_HELO		"helo"		/* NULL before HELO/EHLO */
#define FMX_GET_TLS		"tls"		/* "TLSv1.3 CIPHER", or "no" */
#define FMX_GET_AUTH		"auth"		/* authenticated identity, NULL if none */
#define FMX_GET_HOSTNAME	"hostname"	/* ours */
#define FMX_GET_SESSION_ID	"session.id"	/* 16 hex digits, as in the log */
#define FMX_GET_MAIL_FROM	"mail.from"	/* "" = null sender, NULL before MAIL */
#define FMX_GET_QUEUE_ID	"queue.id"	/* NULL outside a message */
#define FMX_GET_RCPT_COUNT	"rcpt.count"	/* accepted recipients so far */
#define FMX_GET_POLICY		"policy"	/* name of the transaction's policy */
/* A fact another filter set: FMX_GET_FACT(FMX_FACT_SPF_RESULT). */
#define FMX_GET_FACT_PREFIX	"fact."
#define FMX_GET_FACT(key)	FMX_GET_FACT_PREFIX key
/* This filter's option: FMX_GET_OPTION("allow"); option_*() are typed. */
#define FMX_GET_OPTION_PREFIX	"filter.option."
#define FMX_GET_OPTION(key)	FMX_GET_OPTION_PREFIX key

/* Facts the built-in filters set with api->set_fact(). */
#define FMX_FACT_SPF_RESULT	"spf.result"	/* pass, fail, softfail, ... */
#define FMX_FACT_SPF_DOMAIN	"spf.domain"	/* the domain SPF authenticated */
#define FMX_FACT_DKIM_PASS	"dkim.pass"	/* d= domains of passing signatures */

/* set_result() name of a check that could not be done: on_error applies. */
#define FMX_RESULT_ERROR	"error"

/* One (session, filter) pair: what every hook and api call is about. */
struct fmx_ctx;

typedef void (*fmx_free_fn)(void *);
typedef void (*fmx_dns_fn)(struct fmx_ctx *, void *arg, int rcode,
    const unsigned char *answer, size_t len);
typedef void (*fmx_timer_fn)(struct fmx_ctx *, void *arg);

/* Core -> module.  Append-only within a major version. */
struct fmx_api {
	uint32_t	abi_major;
	uint32_t	abi_minor;
	size_t		struct_size;

	/* ctx may be NULL (in init and fini): the line then names no session. */
	void		(*log)(struct fmx_ctx *, enum fmx_log_level,
			    const char *fmt, ...) FMX_PRINTF(3, 4);

	/*
	 * Session facts by name (the FMX_GET_* constants above); NULL when
	 * unknown.
	 */
	const char	*(*get)(struct fmx_ctx *, const char *key);
	/* The i-th accepted recipient of the message, NULL past the end. */
	const char	*(*rcpt)(struct fmx_ctx *, size_t i);

	void		*(*conn_data)(struct fmx_ctx *);
	void		 (*set_conn_data)(struct fmx_ctx *, void *, fmx_free_fn);
	void		*(*msg_data)(struct fmx_ctx *);
	void		 (*set_msg_data)(struct fmx_ctx *, void *, fmx_free_fn);

	/* 0 ok, -1 refused (logged): "550 5.7.1 text" or multi-line "550-..\n550 .." */
	int		 (*set_reply)(struct fmx_ctx *, const char *reply);

	/*
	 * Name the outcome of this filter's check ("pass", "fail",
	 * "softfail", a rule name...).  The transaction's policy maps
	 * (filter name, result) to an action; that action replaces the
	 * verdict the hook returns.  Without a mapping the hook's verdict
	 * stands.  reason goes to the log and to Authentication-Results
	 * comments (no CR/LF).  0 ok, -1 refused.
	 * The result FMX_RESULT_ERROR ("error") says the check itself could
	 * not be done (its DNS or back end failed): the core then applies
	 * the filter's on_error action, as for a timeout, whatever the hook
	 * returned.
	 */
	int		 (*set_result)(struct fmx_ctx *, const char *result,
			    const char *reason);
	/*
	 * Add a method result to the Authentication-Results field the core
	 * writes (RFC 8601), e.g. ("spf", "pass", "smtp.mailfrom=a@b.example").
	 */
	int		 (*add_auth_result)(struct fmx_ctx *, const char *method,
			    const char *result, const char *props);

	/*
	 * Message edits, eom hook only; each validated like client input
	 * (header name: printable ASCII without ':'; value: no CR/LF/NUL,
	 * folding is the core's job).  0 ok, -1 refused.
	 */
	int		 (*add_header)(struct fmx_ctx *, const char *name,
			    const char *value);
	int		 (*insert_header)(struct fmx_ctx *, size_t index,
			    const char *name, const char *value);
	/* index-th (1-based) field named name; value NULL deletes it. */
	int		 (*change_header)(struct fmx_ctx *, const char *name,
			    size_t index, const char *value);
	int		 (*replace_body)(struct fmx_ctx *, const void *body,
			    size_t len);
	int		 (*add_rcpt)(struct fmx_ctx *, const char *addr);
	int		 (*del_rcpt)(struct fmx_ctx *, const char *addr);

	/*
	 * Read the message as received (headers and body, un-stuffed, CRLF
	 * line ends, before any edit), from offset off; eom hook only.
	 * Returns bytes read, 0 at the end, -1 on error.
	 */
	long		 (*msg_read)(struct fmx_ctx *, size_t off, void *buf,
			    size_t len);

	/*
	 * Asynchronous work: the session waits until resume() is called.
	 * The session continues after resume() returned (from the event
	 * loop), not inside it.  0 taken, -1 refused (no pending call).
	 */
	int		 (*resume)(struct fmx_ctx *, enum fmx_verdict);
	/*
	 * DNS through the core's resolver (cached, asynchronous); type is the
	 * RR type number (16 TXT, 1 A, 28 AAAA, 15 MX, 12 PTR).  The callback
	 * runs on the session's thread with the raw answer packet (parse it
	 * with ns_initparse/ns_parserr from <arpa/nameser.h>), or with
	 * rcode -1 and no packet on timeout or failure.  Queries still
	 * outstanding when the session ends are cancelled: the callback
	 * never runs after on_close.  Queries and timers started during a
	 * message (MAIL to the end of data) end with it: their callbacks
	 * never run after on_abort or the end of that message.  0 started,
	 * -1 refused.
	 */
	int		 (*dns_query)(struct fmx_ctx *, const char *name, int type,
			    fmx_dns_fn, void *arg);
	/*
	 * One timer slot per filter per session: a second timer() call
	 * before the first fired replaces it (the first callback never
	 * runs).  0 started, -1 refused.
	 */
	int		 (*timer)(struct fmx_ctx *, unsigned msec, fmx_timer_fn,
			    void *arg);

	/*
	 * Per-message facts shared between filters, e.g. the SPF filter
	 * sets FMX_FACT_SPF_RESULT and FMX_FACT_SPF_DOMAIN and DMARC reads
	 * them with get(ctx, FMX_GET_FACT(FMX_FACT_SPF_RESULT)).  Keys
	 * [a-z0-9._-], values printable ASCII without CR/LF; cleared at the
	 * end of each message.  Known keys: the FMX_FACT_* constants
	 * (dkim.pass is a space-separated list).  0 ok, -1 refused.
	 */
	int		 (*set_fact)(struct fmx_ctx *, const char *key,
			    const char *value);

	/* ---- ABI 1.1: check api->abi_minor >= 1 before calling ---- */

	/*
	 * A header field value as a person reads it, e.g. the value on_header
	 * gets: unfolded (each CRLF before white space removed, RFC 5322
	 * 2.2.3), RFC 2047 encoded-words decoded and everything converted
	 * to UTF-8 (by GMime; invalid sequences become U+FFFD), control
	 * characters other than TAB that an encoded word may carry (CR, LF,
	 * NUL...) turned into spaces.  Like snprintf(): writes at most buflen bytes including
	 * the NUL into buf, which the module owns (a value cut short is cut
	 * on a UTF-8 character boundary), and returns the length of the
	 * whole decoded value, so a return >= buflen means buf was too
	 * small.  -1 when value is NULL or memory ran out.  Nothing is
	 * allocated for the module to free; any hook may call it.
	 */
	long		 (*header_decode)(struct fmx_ctx *, const char *value,
			    char *buf, size_t buflen);

	/* ---- ABI 1.2: check api->abi_minor >= 2 before calling ---- */

	/*
	 * Typed options, for init(): options and noptions are init()'s
	 * arguments, and no ctx is needed.  They read a value the way
	 * frontmx reads its own configuration, so every filter, built-in
	 * or module, accepts the same spellings.
	 *
	 * Each returns 1 when key is set (*out then holds its value), 0 when
	 * it is not (*out untouched: store the default there first), and -1
	 * when the value is bad.  A bad value is also recorded by the core:
	 * when init() returns, frontmx refuses the configuration (frontmx -t,
	 * start, SIGHUP) with the line
	 *	FILE:LINE: filter NAME: option KEY: what is wrong
	 * whatever init() returned, so a module need not log it; it just
	 * returns -1.  A key given twice is an error (option_list aside).
	 *
	 * option_string: the value as written, valid until init() returns.
	 * option_bool: yes/no, true/false, on/off, 1/0, in any case; *out 1 or 0.
	 * option_uint: decimal digits only, from min to max inclusive.
	 * option_list: items separated by commas, and a key given several
	 *	times adds its items in order; blanks around an item are
	 *	dropped, empty items skipped.  *out is a NULL-terminated
	 *	array of the items in ONE allocation, which the module owns and
	 *	releases with free(); *count (count may be NULL) the number of
	 *	items.  A key set to "" gives 1 and an empty array.
	 * option_check: every option is "key=value" with key in known[]
	 *	(NULL-terminated); call it first so that a misspelt option
	 *	stops the start instead of being ignored.
	 */
	int		 (*option_string)(const char *const *options,
			    size_t noptions, const char *key, const char **out);
	int		 (*option_bool)(const char *const *options,
			    size_t noptions, const char *key, int *out);
	int		 (*option_uint)(const char *const *options,
			    size_t noptions, const char *key, unsigned long long min,
			    unsigned long long max, unsigned long long *out);
	int		 (*option_list)(const char *const *options,
			    size_t noptions, const char *key, char ***out,
			    size_t *count);
	int		 (*option_check)(const char *const *options,
			    size_t noptions, const char *const *known);
};

/* Module -> core.  Append-only within a major version. */
struct fmx_filter {
	uint32_t	 abi_major;
	uint32_t	 abi_minor;
	size_t		 struct_size;	/* sizeof as the module compiled it */
	const char	*name;
	uint32_t	 flags;		/* FMX_FLAG_* */

	/* Called once per configured instance; options are "key=value" pairs. */
	int		 (*init)(const struct fmx_api *, const char *const *options,
			    size_t noptions, void **instance);
	void		 (*fini)(void *instance);

	enum fmx_verdict (*on_connect)(void *inst, struct fmx_ctx *);
	enum fmx_verdict (*on_helo)(void *inst, struct fmx_ctx *, const char *helo);
	enum fmx_verdict (*on_mail)(void *inst, struct fmx_ctx *, const char *from);
	enum fmx_verdict (*on_rcpt)(void *inst, struct fmx_ctx *, const char *rcpt);
	enum fmx_verdict (*on_data)(void *inst, struct fmx_ctx *);
	/* name and raw value (folds kept as CRLF + WSP, no trailing CRLF) */
	enum fmx_verdict (*on_header)(void *inst, struct fmx_ctx *,
			    const char *name, const char *value);
	enum fmx_verdict (*on_eoh)(void *inst, struct fmx_ctx *);
	/* Un-stuffed CRLF body bytes in chunks of at most 64 KiB. */
	enum fmx_verdict (*on_body)(void *inst, struct fmx_ctx *,
			    const unsigned char *chunk, size_t len);
	enum fmx_verdict (*on_eom)(void *inst, struct fmx_ctx *);
	void		 (*on_abort)(void *inst, struct fmx_ctx *);	/* RSET, disconnect */
	void		 (*on_close)(void *inst, struct fmx_ctx *);

	void		*reserved[8];
};

/*
 * The one symbol a module exports, e.g.
 *	FMX_EXPORT const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);
 * Addresses passed to hooks (mail, rcpt) come without the angle brackets.
 * fmx_dns_fn's rcode is the DNS RCODE (0 NOERROR, 3 NXDOMAIN) or -1 when
 * no answer came (timeout, network error).  Policy groups and log lines
 * use the instance name from the configuration (`filters` entry `name`).
 */
typedef const struct fmx_filter *(*fmx_entry_fn)(const struct fmx_api *);
FMX_EXPORT const struct fmx_filter *fmx_filter_entry(const struct fmx_api *);

#ifdef __cplusplus
}
#endif

#endif
