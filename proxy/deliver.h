/*
 * deliver.h - one interface for every way a message leaves the proxy
 *
 * SYNOPSIS
 *	ops = deliver_choose(cfg, override);
 *	deliver_caps(ops, d, &caps);
 *	d = deliver_open(base, cfg, sid, ops, &client, done, arg);
 *	deliver_mail(d, "MAIL FROM:<a@b>", done, arg);
 *	deliver_rcpt(d, "RCPT TO:<c@d>", done, arg);
 *	deliver_data(d, &msg, done, arg);
 *	deliver_rset(d, done, arg);
 *	deliver_close(d);
 *
 * DESCRIPTION
 *	A backend is a struct deliver_ops: SMTP (deliver_smtp.c, over
 *	upstream.c, XCLIENT/XFORWARD as offered), LMTP (deliver_lmtp.c, the
 *	same client in RFC 2033 mode), Maildir (deliver_maildir.c, the
 *	"dir:PATH" upstream) and `frontmx check` (deliver_check.c, which
 *	delivers nothing and reports).  deliver_choose() in deliver.c is the
 *	only place that looks at the kind of upstream.address; the session
 *	calls it when a transaction starts without an open handle and talks
 *	to whatever it got through the functions below, never to a backend
 *	by name.
 *
 *	The contract is upstream.h's: one operation at a time per handle;
 *	done(arg, err, reply) fires exactly once per operation, always from
 *	the event loop, never inside the call that started it (the Maildir
 *	backend writes synchronously and reports through the loop like the
 *	others).  err is UPSTREAM_OK with a complete reply, whatever its
 *	code, else reply is NULL and the handle is dead: close it; the next
 *	transaction opens a new one.  deliver_open() reports the end of the
 *	connection set-up; the data operation reports the verdict on the
 *	message (for LMTP, on its one recipient).
 *
 *	Pipelining is the exception to "one operation at a time": where
 *	deliver_can_queue() says so (an SMTP upstream that offers
 *	PIPELINING, idle or with a group being queued), deliver_queue()
 *	queues a MAIL or RCPT line with a done of its own, and
 *	deliver_flush() writes the group in one write; each queued command's
 *	done then fires in order with its reply, or one error fires for the
 *	first command still owed and the handle is dead (upstream.h).  No
 *	other operation starts while a group is queued or owed.
 *
 *	A handle lives across transactions (an SMTP connection is reused);
 *	deliver_idle() says it can take the next operation, deliver_in_tx()
 *	that the backend still holds a MAIL transaction (RSET first).
 *
 *	The flags tell the session what a backend needs from it:
 *	DELIVER_F_ONE_RCPT, one recipient per transaction (LMTP: one reply
 *	to the client's final dot must stand for exactly one per-recipient
 *	reply, so a second RCPT gets 452 4.5.3 and comes in its own
 *	transaction; with recipient edits, one transaction per recipient,
 *	the client's first: smtp_relay.c); DELIVER_F_ENVELOPE, RCPTs reach
 *	the backend as they come (recipient edits by filters resend the
 *	envelope);
 *	DELIVER_F_REPORT, every verdict that ends in "the client gets 250"
 *	goes to data (check: discard and quarantine are reported, not done).
 */
#ifndef FRONTMX_DELIVER_H
#define FRONTMX_DELIVER_H

#include <stddef.h>

#include "smtp_reply.h"
#include "upstream.h"

struct ssl_ctx_st;
struct config;
struct event;
struct event_base;
struct spool;

#define DELIVER_F_ONE_RCPT	0x01u
#define DELIVER_F_ENVELOPE	0x02u
#define DELIVER_F_REPORT	0x04u

typedef upstream_done_fn deliver_done_fn;

/* What the data operation delivers. */
struct deliver_msg {
	const char		 *queue_id;
	const char		 *mail_from;	/* "" for the null sender */
	const char *const	 *rcpts;
	size_t			  nrcpts;
	const char		 *head;		/* header block as relayed, CRLF lines */
	size_t			  headlen;
	size_t			  head_prefix;	/* head[0, prefix) are fields we put first, */
	size_t			  head_added;	/* head[added, headlen) fields we appended */
	struct spool		 *spool;
	size_t			  spool_off;	/* the message is the spool from here on */
	const char		 *action;	/* accept, tag, discard, quarantine */
};

struct deliver;

struct deliver_ops {
	const char	*name;		/* "smtp", "lmtp", "dir", "check": logs */
	const char	*result;	/* the log's word for a 2xx; NULL: the action */
	unsigned	 flags;		/* DELIVER_F_* */
	/* What the client may be offered; d NULL before a handle is open. 1 known. */
	int		(*caps)(const struct deliver *, struct smtp_ehlo_caps *);
	/* 0 started (done follows), -1 nothing started: out of memory. */
	int		(*open)(struct deliver *, const struct upstream_client *);
	void		(*mail)(struct deliver *, const char *line);
	void		(*rcpt)(struct deliver *, const char *line);
	void		(*data)(struct deliver *, const struct deliver_msg *);
	void		(*rset)(struct deliver *);
	/* AUTH and SASL lines (never logged); NULL: the backend has no AUTH. */
	void		(*auth)(struct deliver *, const char *line);
	int		(*idle)(const struct deliver *);
	int		(*in_tx)(const struct deliver *);
	/* Pipelining; NULL: the backend takes one command at a time. */
	int		(*can_queue)(const struct deliver *);
	void		(*queue)(struct deliver *, const char *line,
			    deliver_done_fn, void *);
	void		(*flush)(struct deliver *);
	void		(*close)(struct deliver *);
};

/*
 * A handle: the backend's state plus what every backend needs.  Only
 * deliver*.c look inside.
 */
struct deliver {
	const struct deliver_ops *ops;
	void			*arg;		/* the override's argument (check's report) */
	struct event_base	*base;
	const struct config	*cfg;
	struct ssl_ctx_st	*tls_ctx;	/* the runtime's upstream context */
	unsigned long long	 sid;
	deliver_done_fn		 done;		/* the operation in flight */
	void			*done_arg;
	struct upstream		*up;		/* smtp, lmtp */
	/* smtp, lmtp: the client's facts, for a second try within the open only */
	struct upstream_client	 client;
	struct event		*later;		/* dir, check: done from the loop */
	struct smtp_reply	*reply;		/* ... with this reply */
	int			 dead;
};

/* A backend chosen by the caller instead of upstream.address (check.c). */
struct deliver_override {
	const struct deliver_ops *ops;
	void			*arg;
};

const struct deliver_ops *deliver_choose(const struct config *,
		    const struct deliver_override *);
int		 deliver_caps(const struct deliver_ops *, const struct deliver *,
		    struct smtp_ehlo_caps *);
struct deliver	*deliver_open(struct event_base *, const struct config *,
		    struct ssl_ctx_st *tls_ctx, unsigned long long sid,
		    const struct deliver_ops *,
		    const struct deliver_override *, const struct upstream_client *,
		    deliver_done_fn, void *arg);
void		 deliver_mail(struct deliver *, const char *line, deliver_done_fn,
		    void *);
void		 deliver_rcpt(struct deliver *, const char *line, deliver_done_fn,
		    void *);
void		 deliver_data(struct deliver *, const struct deliver_msg *,
		    deliver_done_fn, void *);
void		 deliver_rset(struct deliver *, deliver_done_fn, void *);
/* 0 relayed (done follows); -1 the backend has no AUTH, nothing sent. */
int		 deliver_auth(struct deliver *, const char *line, deliver_done_fn,
		    void *);
int		 deliver_idle(const struct deliver *);
int		 deliver_in_tx(const struct deliver *);
int		 deliver_can_queue(const struct deliver *);
void		 deliver_queue(struct deliver *, const char *line, deliver_done_fn,
		    void *);
void		 deliver_flush(struct deliver *);
unsigned	 deliver_flags(const struct deliver_ops *);
const struct deliver_ops *deliver_backend(const struct deliver *);
/* The message log's result for a delivered message (relayed, delivered, the action). */
const char	*deliver_result(const struct deliver_ops *, const char *action);
void		 deliver_close(struct deliver *);

/*
 * For the process around the sessions (main.c, worker.c), so that
 * they need not know the kinds either.  deliver_upstream(): 1 when the
 * configured backend talks to an upstream server through upstream.c
 * (then *lmtp, when not NULL, says in which dialect), 0 otherwise.
 * deliver_prepare(): make what start-up needs (a dir: Maildir), errors
 * "FILE:LINE: ...".  deliver_probe(): the blocking start-up probe, 0 when
 * it answered or there is nothing to probe.
 */
int		 deliver_upstream(const struct config *, int *lmtp);
int		 deliver_prepare(const struct config *, char *err, size_t errlen);
int		 deliver_probe(const struct config *, struct ssl_ctx_st *tls_ctx);

/*
 * `frontmx check` (deliver_check.c): the override's arg is a struct
 * deliver_check; fn hears of each message that would leave, with the
 * action and the header fields the proxy adds.
 */
struct deliver_check_report {
	const char	*action;	/* accept, tag, quarantine, discard */
	const char	*added;		/* header fields, CRLF lines */
	size_t		 addedlen;
};
struct deliver_check {
	void		(*fn)(void *arg, const struct deliver_check_report *);
	void		*arg;
};

/*
 * The quarantine (deliver_maildir.c): one file in dir listing every
 * recipient, note its first header field.  0 written, -1 logged.
 */
int		 deliver_maildir_quarantine(const struct config *,
		    unsigned long long sid, const char *dir,
		    const struct deliver_msg *, const char *note);

/* Backends' helpers (deliver.c). */
void		 deliver_begin(struct deliver *, deliver_done_fn, void *);
void		 deliver_finish(struct deliver *, enum upstream_err,
		    const struct smtp_reply *);
/* Report "code text" from the loop: a synchronous backend's reply. */
void		 deliver_reply_later(struct deliver *, int code, const char *fmt, ...)
		    __attribute__((format(printf, 3, 4)));

/* The envelope operations of Maildir and check (deliver.c). */
int		 deliver_local_caps(const struct deliver *, struct smtp_ehlo_caps *);
int		 deliver_local_open(struct deliver *, const struct upstream_client *);
void		 deliver_local_mail(struct deliver *, const char *line);
void		 deliver_local_rcpt(struct deliver *, const char *line);
void		 deliver_local_rset(struct deliver *);
int		 deliver_local_idle(const struct deliver *);
int		 deliver_local_in_tx(const struct deliver *);
void		 deliver_local_close(struct deliver *);

extern const struct deliver_ops deliver_smtp_ops;
extern const struct deliver_ops deliver_lmtp_ops;
extern const struct deliver_ops deliver_maildir_ops;
extern const struct deliver_ops deliver_check_ops;

#endif
