/*
 * smtp_parse.h - SMTP command-line parsing (RFC 5321 4.1), no I/O
 *
 * SYNOPSIS
 *	enum smtp_cmd smtp_parse_verb(const char *line, const char **args);
 *	enum smtp_parse_err smtp_parse_path(const char *args, enum smtp_cmd,
 *	    struct smtp_path *out);
 *
 * DESCRIPTION
 *	The caller has already framed the line: it ended in CRLF, which has
 *	been removed, and it holds no NUL, CR or LF and is shorter than
 *	SMTP_CMD_LINE_MAX.  These functions never allocate; every output is a
 *	fixed-size buffer sized by the RFC 5321 4.5.3.1 limits.
 */
#ifndef FRONTMX_SMTP_PARSE_H
#define FRONTMX_SMTP_PARSE_H

#include <stddef.h>

#define SMTP_CMD_LINE_MAX	512	/* including CRLF, RFC 5321 4.5.3.1.4 */
#define SMTP_TEXT_LINE_MAX	1000	/* including CRLF, RFC 5321 4.5.3.1.6 */
#define SMTP_LOCAL_MAX		64	/* 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX		255	/* 4.5.3.1.2 */
#define SMTP_PATH_MAX		256	/* 4.5.3.1.3, including the angle brackets */
#define SMTP_PARAMS_MAX		16	/* MAIL/RCPT ESMTP parameters we keep */
#define SMTP_PARAM_KEY_MAX	32
#define SMTP_PARAM_VALUE_MAX	500

enum smtp_cmd {
	SMTP_CMD_UNKNOWN = 0,
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_AUTH,
	SMTP_CMD_BDAT,
	SMTP_CMD_XCLIENT,
	SMTP_CMD_XFORWARD,
	SMTP_CMD_COUNT		/* must be last */
};

enum smtp_parse_err {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_SYNTAX,		/* 501 5.5.4 / 5.1.7 / 5.1.3 */
	SMTP_PARSE_PATH_TOO_LONG,	/* 501 5.1.x path/local/domain over limit */
	SMTP_PARSE_ROUTED,		/* source route "@a:" or '%' / '!' in local part */
	SMTP_PARSE_PARAM_SYNTAX,	/* 501 5.5.4 bad esmtp-param */
	SMTP_PARSE_TOO_MANY_PARAMS,	/* 501 5.5.4 */
	SMTP_PARSE_8BIT,		/* non-ASCII in the address (SMTPUTF8 is not ours yet) */
	SMTP_PARSE_PARAM_DUP,		/* 501 5.5.4 the same esmtp-keyword twice */
	SMTP_PARSE_ERR_COUNT
};

struct smtp_param {
	char	key[SMTP_PARAM_KEY_MAX + 1];	/* upper-cased esmtp-keyword */
	char	value[SMTP_PARAM_VALUE_MAX + 1];
	int	has_value;			/* "KEY=" vs "KEY" */
};

struct smtp_path {
	char			mailbox[SMTP_PATH_MAX + 1];	/* without <>; "" = null path */
	char			local[SMTP_LOCAL_MAX + 1 + 2];	/* may be a quoted-string, kept quoted */
	char			domain[SMTP_DOMAIN_MAX + 1];	/* lower-cased; "" for <> and <postmaster> */
	struct smtp_param	params[SMTP_PARAMS_MAX];
	size_t			nparams;
};

/* Case-insensitive verb lookup; *args points past the verb and one SP (or at ""). */
enum smtp_cmd	 smtp_parse_verb(const char *line, const char **args);
const char	*smtp_cmd_name(enum smtp_cmd);

/*
 * args is what follows "MAIL " or "RCPT ": "FROM:<a@b> SIZE=10" or
 * "TO:<a@b>".  Accepts optional spaces after the colon (common clients),
 * requires the angle brackets.  MAIL accepts "<>"; RCPT accepts
 * "<postmaster>" (any case) without a domain.
 */
enum smtp_parse_err smtp_parse_path(const char *args, enum smtp_cmd,
		    struct smtp_path *out);
const char	*smtp_parse_strerror(enum smtp_parse_err);

/*
 * The same with SMTPUTF8 (RFC 6531) negotiated for the transaction:
 * UTF-8 is allowed in the local part and the domain, and must be
 * well-formed (else SMTP_PARSE_8BIT).
 */
enum smtp_parse_err smtp_parse_path_utf8(const char *args, enum smtp_cmd,
		    struct smtp_path *out);
/* 1 if p[0..len) is well-formed UTF-8 (RFC 3629), no C1 controls. */
int		 smtp_parse_utf8_valid(const unsigned char *p, size_t len);

/*
 * RFC 3461 4.1 NOTIFY value: "NEVER", or one or more of SUCCESS, FAILURE
 * and DELAY (any case) separated by single commas, none twice.  0 ok,
 * -1 bad ("SUCCESS,,FAILURE", a trailing comma, "NEVER,DELAY", ...).
 */
int		 smtp_parse_notify(const char *value);

/* HELO/EHLO argument: a domain or an address literal "[192.0.2.1]" / "[IPv6:...]". 0 ok, -1 bad. */
int		 smtp_parse_helo(const char *arg);

/* RFC 5321 Domain syntax (dot-separated LDH labels), length-checked. 0 ok, -1 bad. */
int		 smtp_parse_domain(const char *d);

/* How the client spoke, for smtp_proto_name(). */
#define SMTP_PROTO_ESMTP	0x01	/* EHLO, not HELO */
#define SMTP_PROTO_TLS		0x02	/* STARTTLS or implicit TLS */
#define SMTP_PROTO_AUTH		0x04	/* authenticated (RFC 4954) */
#define SMTP_PROTO_UTF8		0x08	/* this MAIL had SMTPUTF8 (RFC 6531) */

/*
 * The protocol name for a Received "with" clause (RFC 3848, RFC 6531
 * 3.7.3): "SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTP",
 * "UTF8SMTPS", "UTF8SMTPA" or "UTF8SMTPSA"; a static string.  The one
 * source of these names (also XCLIENT PROTO).
 */
const char	*smtp_proto_name(unsigned flags);

#endif
