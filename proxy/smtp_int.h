/*
 * smtp_int.h - private to the smtp_* files: the session and its helpers
 *
 * DESCRIPTION
 *	struct smtp_session (one client connection, its transaction and its
 *	upstream), its state and enums, and the prototypes the smtp_*.c
 *	files share, grouped by the file that defines them.  Nothing outside
 *	proxy/smtp_*.c includes this; the public interface is
 *	smtp_session.h.
 *
 *	Names: each file's functions carry its prefix (smtp_chat_,
 *	smtp_peer_, smtp_auth_, smtp_tx_, smtp_mail_, smtp_data_, smtp_eom_,
 *	smtp_relay_); smtp_session.c keeps the family's bare smtp_ prefix
 *	(smtp_enter_state, smtp_resume, smtp_cmd_*), and smtp_reply() and
 *	smtp_error() in smtp_chat.c keep theirs because every file calls
 *	them.
 */
#ifndef FRONTMX_SMTP_INT_H
#define FRONTMX_SMTP_INT_H

#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <stddef.h>
#include <time.h>

#include <event2/util.h>

#include "config.h"
#include "filter_chain.h"
#include "smtp_frame.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "spool.h"
#include "upstream.h"

struct bufferevent;
struct event;
struct smtp_host;
struct smtp_session;
struct smtp_tx;

#include "xtext.h"

#define SMTP_REPLY_BUF		(SMTP_REPLY_TEXT_MAX + 2048)
/*
 * The longest Received field: "from" HELO (255), "(" PTR name (255),
 * "[" address (46) "])", the TLS comment (96), "by" hostname (255),
 * "(frontmx) with UTF8SMTPSA id" and the id (40), "for <" path (256) ">;",
 * the date (64), every separator a 3-octet fold, and room to spare.
 */
#define SMTP_RECEIVED_MAX	2048
#define SMTP_HELO_MAX		SMTP_DOMAIN_MAX
#define SMTP_QUIT_TIMEOUT	10	/* seconds to flush the last reply */
#define SMTP_BODY_CHUNK		65536	/* body bytes per on_body call (API promise) */
#define SMTP_HEADER_LINE_MAX	998	/* RFC 5322 2.1.1, without the CRLF */
#define SMTP_EXTRA_HEADERS	8192	/* room for Received, A-R, tag and edits */
#define SMTP_OUTPUT_HIGH	65536	/* replies a client leaves unread before we stop reading it */
#define SMTP_PROXY_TIMEOUT	10	/* seconds for a load balancer's PROXY header */
#define SMTP_AUTH_LINE_MAX	12290	/* RFC 4954 4: 12288 octets plus CRLF */
#define SMTP_PIPE_MAX		64	/* MAIL and RCPTs in one group to the upstream */

enum smtp_state {
	SMTP_STATE_PROXY = 0,	/* waiting for the PROXY protocol header */
	SMTP_STATE_CONNECT,	/* connect filters, then the greeting */
	SMTP_STATE_COMMAND,	/* reading commands */
	SMTP_STATE_WAIT,	/* a filter or the upstream owes us an answer */
	SMTP_STATE_DATA,	/* reading message lines */
	SMTP_STATE_BDAT,	/* reading a BDAT chunk (RFC 3030) */
	SMTP_STATE_AUTH,	/* reading a SASL response line (RFC 4954) */
	SMTP_STATE_RELAY,	/* message going upstream; input paused */
	SMTP_STATE_QUIT,	/* flushing the last reply, then close */
	SMTP_STATE_COUNT	/* must be last */
};

/* Why a message is refused once its final dot arrives. */
enum smtp_data_err {
	SMTP_DATA_OK = 0,
	SMTP_DATA_BARE_EOL,	/* bare CR or LF */
	SMTP_DATA_NUL,
	SMTP_DATA_LINE_TOO_LONG,
	SMTP_DATA_TOO_BIG,
	SMTP_DATA_HEADER_TOO_BIG,
	SMTP_DATA_SPOOL,	/* our disk */
	SMTP_DATA_ERR_COUNT	/* must be last */
};

enum smtp_rdns {
	SMTP_RDNS_OK = 0,	/* PTR name whose addresses include the client's */
	SMTP_RDNS_NONE,		/* no PTR, or the name does not point back */
	SMTP_RDNS_TEMP,		/* DNS failed: try again later */
	SMTP_RDNS_PTR,		/* looking up the PTR */
	SMTP_RDNS_FORWARD	/* looking up the name's addresses */
};

enum smtp_tls {
	SMTP_TLS_NONE = 0,
	SMTP_TLS_HANDSHAKE,	/* STARTTLS answered or implicit TLS: handshake running */
	SMTP_TLS_ACTIVE
};

/* The MAIL parameters relayed, kept in the order the client gave them. */
enum smtp_mail_param {
	SMTP_MAIL_SIZE = 0,
	SMTP_MAIL_SMTPUTF8,
	SMTP_MAIL_RET,
	SMTP_MAIL_ENVID,
	SMTP_MAIL_BODY,
	SMTP_MAIL_PARAM_COUNT	/* must be last */
};

/*
 * A verb's preconditions (the verb table, smtp_session.c): the dispatcher
 * checks the syntax, then smtp_verb_unmet() the rest (530 where TLS is
 * required and missing, then 503), and writes their replies itself.
 */
#define SMTP_VERB_NO_ARGS	0x01	/* 501 Syntax when arguments follow */
#define SMTP_VERB_ARGS		0x02	/* 501 Syntax when none do */
#define SMTP_VERB_NEED_HELO	0x04	/* 503 send HELO/EHLO first */
#define SMTP_VERB_NEED_MAIL	0x08	/* 503 need MAIL command */
#define SMTP_VERB_NEED_RCPT	0x10	/* 503 need RCPT, 554 after refused ones */
#define SMTP_VERB_PRE_TLS	0x20	/* allowed before STARTTLS where TLS is required */
#define SMTP_VERB_CHUNK		0x40	/* BDAT: the verb checks the rest after its chunk */
#define SMTP_VERB_IN_BDAT	0x80	/* allowed between BDAT chunks (else 503) */
#define SMTP_VERB_GROUP_END	0x100	/* ends a pipelined group: its reply is never held (smtp_chat_hold) */

/* What a verb function returns. */
#define SMTP_VERB_OK		0	/* it answered, or started what will */
#define SMTP_VERB_SYNTAX	(-1)	/* the dispatcher answers 501 Syntax */

/* struct smtp_session's flags. */
#define SMTP_F_ESMTP		0x0001u	/* the client said EHLO, not HELO */
#define SMTP_F_DRAINING		0x0002u	/* SIGTERM: close when idle */
#define SMTP_F_PROCESSING	0x0004u	/* inside smtp_process(): don't recurse */
#define SMTP_F_OUTPUT_FULL	0x0008u	/* client not reading its replies: paused */
#define SMTP_F_EOF		0x0010u	/* client shut its side: answer, close */
#define SMTP_F_LINE_TIMED	0x0020u	/* deadline set for the line awaited */
#define SMTP_F_RDNS_WAITING	0x0040u	/* a client-name lookup is in flight */
#define SMTP_F_BDAT_LAST	0x0080u	/* the chunk being read is BDAT ... LAST */
#define SMTP_F_UP_REUSED	0x0100u	/* this MAIL went over a kept connection */
#define SMTP_F_GROUP_END	0x0200u	/* a group-ending command's reply is in the output */
#define SMTP_F_PIPE_REPLY	0x0400u	/* writing a queued command's reply: to the output */

/* struct smtp_tx's flags. */
#define SMTP_TX_UTF8		0x0001u	/* MAIL had SMTPUTF8 (RFC 6531) */
#define SMTP_TX_HAS_SIZE	0x0002u	/* MAIL had SIZE= */
#define SMTP_TX_BDAT		0x0004u	/* the message comes in BDAT chunks */
#define SMTP_TX_BDAT_LONG	0x0008u	/* BDAT line over the limit: skipping */
#define SMTP_TX_IN_HEADER	0x0010u	/* the lines arriving are header fields */
#define SMTP_TX_EOH_BLANK	0x0020u	/* an empty line ended the header */
#define SMTP_TX_IN_REPLAY	0x0040u	/* inside smtp_eom_replay_next() */
#define SMTP_TX_REPLAY_AGAIN	0x0080u	/* a filter answered at once: next replay step */
#define SMTP_TX_HEAD_OVERFLOW	0x0100u	/* smtp_eom_head_add() ran out of room */
#define SMTP_TX_NEWBODY		0x0200u	/* a filter replaced the body (s->newbody) */
#define SMTP_TX_MAIL_RETRIED	0x0400u	/* MAIL retried once on a fresh connection */

#define SMTP_FLAG_SET(word, flag, on) \
	do { if (on) (word) |= (flag); else (word) &= ~(flag); } while (0)

/*
 * One filter phase the session runs, and what follows its verdict.  Every
 * phase answers through one completion funnel (smtp_filter_done): a reject
 * or tempfail is answered there (the filter's reply, or a default naming
 * `what`) and then handed to refused (NULL: back to commands); any other
 * verdict goes to proceed.  With what NULL, proceed sees every verdict.
 */
struct smtp_step {
	enum filter_phase phase;
	const char	*what;
	void		(*refused)(struct smtp_session *,
			    const struct filter_result *);
	void		(*proceed)(struct smtp_session *,
			    const struct filter_result *);
};

/* One row of the verb table (smtp_verbs, smtp_command). */
struct smtp_verb {
	enum smtp_cmd	 cmd;
	const char	*syntax;	/* after "501 5.5.4 Syntax: " */
	unsigned	 flags;		/* SMTP_VERB_* preconditions */
	const struct smtp_step *step;	/* its filter phase (smtp_verb_filter), or NULL */
	int		(*fn)(struct smtp_session *, const char *args);
};

/*
 * A MAIL or RCPT queued to the upstream in a pipelined group
 * (smtp_relay.c), its client reply owed until the upstream's comes.
 * Replies to the commands read after it (a RCPT refused here) wait in
 * after, so that the client hears them in command order.
 */
struct smtp_piped {
	int		 stat;		/* SMTP_STAT_*: the disconnect line's count */
	const char	*stage;		/* the metrics' stage */
	char		*rcpt;		/* RCPT: the recipient; NULL: MAIL */
	char		*dsn;		/* ... its DSN parameters as relayed */
	struct evbuffer	*after;		/* later replies, held; NULL: none */
};

enum smtp_pipe {
	SMTP_PIPE_NONE = 0,
	SMTP_PIPE_OPEN,		/* commands queued, not yet written */
	SMTP_PIPE_SENT		/* written: the session waits for the replies */
};

/* One header field of the spooled message. */
struct smtp_hdr {
	size_t	off;		/* in the spool */
	size_t	len;		/* including folds and the final CRLF */
};

/*
 * One mail transaction: made at MAIL (smtp_tx_new), freed at its end
 * (smtp_tx_done after the message, smtp_tx_reset on RSET, HELO, STARTTLS,
 * a refused MAIL or a failure).  Session-wide facts stay in struct
 * smtp_session; so do the spools, whose memory one message leaves to the
 * next.
 */
struct smtp_tx {
	unsigned		 flags;		/* SMTP_TX_* */
	char			*mail_from;	/* the sender, once MAIL passed its checks */
	char			*mail_args;	/* its parameters as validated, "K=V K" (milters) */
	char			 queue_id[40];
	struct timespec		 start;
	const struct config_policy *policy;	/* of the first accepted recipient */
	/* MAIL parameters as validated; the upstream line is made at send. */
	int			 body;	/* 0, 7 (BODY=7BIT) or 8 (BODY=8BITMIME) */
	int			 ret;	/* 0, 1 RET=FULL, 2 RET=HDRS */
	unsigned long long	 size;
	char			 envid[101];	/* RFC 3461 4.4: xtext, 100 at most */
	enum smtp_mail_param	 order[SMTP_MAIL_PARAM_COUNT];	/* as the client gave them */
	size_t			 nparams;
	/* RCPT */
	char			**rcpts;
	char			**rcpt_params;	/* " NOTIFY=.. ORCPT=.." each, or NULL */
	size_t			 nrcpts;
	size_t			 rcpt_attempts;
	/* The message as it arrives (smtp_data.c). */
	size_t			 size_limit;	/* smtp_relay_size_limit() at the data's start; 0 before */
	unsigned long long	 bdat_total;	/* octets of this message's chunks so far */
	size_t			 bdat_linelen;
	enum smtp_data_err	 data_err;
	size_t			 header_bytes;
	size_t			 msg_bytes;
	struct smtp_hdr		*hdrs;
	size_t			 nhdrs;
	size_t			 hdrcap;
	size_t			 eoh_off;	/* spool offset where the body part starts */
	/* At its end (smtp_eom.c): replay to the filters, the header block. */
	size_t			 replay_i;	/* header/body replay to the filters */
	size_t			 replay_off;
	char			*replay_buf;
	char			 received[SMTP_RECEIVED_MAX];
	size_t			 receivedlen;
	char			*head;		/* header block as relayed */
	size_t			 headlen;
	size_t			 head_prefix;	/* fields we put before the client's */
	size_t			 head_added;	/* start of the fields appended after them */
};

/*
 * One client connection: who it is, where it stands (state, flags), the
 * buffers it reuses, its upstream, and its transaction when one is open.
 */
/*
 * The commands the disconnect line counts, in the order Postfix's smtpd
 * prints them ("ehlo=1 mail=1 rcpt=0/1 ... commands=3/4"), then ours
 * Postfix lacks, then everything else as "unknown".
 */
enum smtp_stat {
	SMTP_STAT_HELO = 0,
	SMTP_STAT_EHLO,
	SMTP_STAT_XCLIENT,
	SMTP_STAT_XFORWARD,
	SMTP_STAT_STARTTLS,
	SMTP_STAT_AUTH,
	SMTP_STAT_MAIL,
	SMTP_STAT_RCPT,
	SMTP_STAT_DATA,
	SMTP_STAT_BDAT,
	SMTP_STAT_RSET,
	SMTP_STAT_NOOP,
	SMTP_STAT_VRFY,
	SMTP_STAT_EXPN,
	SMTP_STAT_HELP,
	SMTP_STAT_QUIT,
	SMTP_STAT_UNKNOWN,
	SMTP_STAT_COUNT		/* must be last */
};

struct smtp_session {
	unsigned long long	 id;
	struct smtp_host	*host;		/* who runs it (smtp_session.h) */
	struct runtime		*rt;		/* owns chain, cfg and tls_ctx */
	struct filter_chain	*chain;		/* rt's */
	struct config		*cfg;		/* rt's */
	struct ssl_ctx_st	*tls_ctx;	/* rt's for this listener; NULL: no TLS */
	struct filter_session	*fs;
	struct filter_facts	 facts;
	const struct config_listener *listener;	/* NULL for `frontmx check` */
	enum smtp_tls		 tls;
	char			 tls_desc[96];	/* "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	struct bufferevent	*bev;
	enum smtp_state		 state;
	unsigned		 flags;		/* SMTP_F_* */
	const struct smtp_verb	*verb;		/* the command being handled */
	const struct smtp_step	*step;		/* the filter phase running */
	const char		*stage;		/* metrics: connect, helo, mail, ... (smtp_chat_command) */
	int			 last_code;	/* of the last reply sent to the client */
	TAILQ_ENTRY(smtp_session) entry;

	struct sockaddr_storage	 sa;
	char			 addr[INET6_ADDRSTRLEN];
	unsigned		 port;
	char			 daemon_addr[INET6_ADDRSTRLEN];	/* ours, for milters' {daemon_addr} */
	unsigned		 daemon_port;
	/* The client's name: verified both ways, or why not (RFC 1912 2.1). */
	char			 name[SMTP_DOMAIN_MAX + 1];	/* "unknown" when none */
	enum smtp_rdns		 rdns;
	unsigned long long	 rdns_id;
	char			 helo[SMTP_HELO_MAX + 1];
	unsigned		 offer;		/* SMTP_EHLO_* pass-through extensions our EHLO offered */
	size_t			 errors;
	int			 skipping;	/* smtp_frame_line() state, by address */
	struct event		*quit_timer;	/* waiting for TLS bytes to leave */
	struct event		*deadline;	/* the whole wait: smtp_deadline() */
	struct timespec		 data_by;	/* the message must be in by then; 0: none */
	int			 quit_polls;

	/* The transaction (smtp_tx.c), and what outlives it. */
	struct smtp_tx		*tx;		/* NULL: no MAIL yet */
	/* The BDAT chunk being read: a refused one has no transaction. */
	unsigned long long	 bdat_left;	/* bytes of the current chunk still to read */
	const char		*bdat_refuse;	/* consume the chunk, then this reply */
	char			 bdat_reply[FILTER_REPLY_MAX];	/* a filter's refusal, kept */
	/* Buffers kept from message to message (their memory is reused). */
	char			*text_line;	/* smtp_data_text_line(): one DATA line, or a BDAT line across chunks */
	struct spool		 spool;		/* the message as received */
	struct spool		 newbody;	/* a filter's replacement body */

	/* Upstream. */
	struct deliver		*dl;		/* deliver.h: upstream, Maildir or check */
	char			 pending[SMTP_CMD_LINE_MAX + SMTP_PARAMS_MAX * 8];	/* command to relay */
	char			 pending_rcpt[SMTP_PATH_MAX + 1];
	char			 pending_dsn[SMTP_PARAM_VALUE_MAX * 2 + 32];	/* its DSN parameters */
	upstream_done_fn	 pending_cb;	/* who gets the reply to pending */
	/*
	 * The pipelined group to the upstream (smtp_relay.c), a ring of
	 * SMTP_PIPE_MAX made at the first group: an idle session pays nothing.
	 */
	struct smtp_piped	*piped;
	size_t			 piped_head;
	size_t			 npiped;
	size_t			 piped_rcpts;	/* RCPTs among them */
	enum smtp_pipe		 pipe;
	int			 pipe_nomail;	/* the group's MAIL was refused */
	char			*auth_id;	/* authenticated identity (RFC 4954), set on 235 only */
	char			*auth_claim;	/* the name in the exchange, until the upstream says 235 */
	char			 auth_mech[24];
	int			 auth_step;	/* SASL responses relayed so far */
	unsigned long		 messages;

	/* Postfix-style command counts for the disconnect line (smtp_chat.c). */
	int			 stat_open;	/* SMTP_STAT_* awaiting its final reply, -1 none */
	unsigned		 stat_ok[SMTP_STAT_COUNT];
	unsigned		 stat_all[SMTP_STAT_COUNT];
};

/* smtp_chat.c */
void	smtp_chat_command(struct smtp_session *s, enum smtp_cmd cmd);
void	smtp_chat_log_disconnect(struct smtp_session *s);

/* smtp_session.c */
void	smtp_data_clock_stop(struct smtp_session *s);
void	smtp_read_on(struct smtp_session *s);
void	smtp_enter_state(struct smtp_session *s, enum smtp_state state);
void	smtp_facts(struct smtp_session *s);
void	smtp_filter(struct smtp_session *s, const struct smtp_step *st,
	    const char *str);
void	smtp_filter_run(struct smtp_session *s, const struct smtp_step *st,
	    const struct filter_args *a);
void	smtp_verb_filter(struct smtp_session *s, const char *str);
int	smtp_filter_refused(struct smtp_session *s,
	    const struct filter_result *res, const char *what);
const char *smtp_filter_reply(const struct filter_result *res,
	    const char *what, char *buf, size_t len);
void	smtp_resume(struct smtp_session *s, enum smtp_state state);
void	smtp_process(struct smtp_session *s);
void	smtp_readcb(struct bufferevent *bev, void *arg);
void	smtp_eventcb(struct bufferevent *bev, short what, void *arg);
void	smtp_connect_filters(struct smtp_session *s);
void	smtp_session_free(struct smtp_session *s);
const char *smtp_verb_unmet(const struct smtp_session *s, unsigned flags);

/* smtp_chat.c */
__attribute__((format(printf, 2, 3)))
void	smtp_reply(struct smtp_session *s, const char *fmt, ...);
__attribute__((format(printf, 2, 3)))
void	smtp_error(struct smtp_session *s, const char *fmt, ...);
void	smtp_chat_upstream(struct smtp_session *s, const struct smtp_reply *r,
	    const char *dflt_ok);
void	smtp_chat_log_message(struct smtp_session *s, const char *result,
	    const char *reply);
void	smtp_chat_setup(struct smtp_session *s);
int	smtp_chat_hold(const struct smtp_session *s);
int	smtp_chat_quit_later(struct smtp_session *s);
void	smtp_chat_quit_flushed(struct smtp_session *s);
void	smtp_chat_writecb(struct bufferevent *bev, void *arg);
struct evbuffer *smtp_chat_out(struct smtp_session *s);

/* smtp_peer.c */
extern const struct smtp_step smtp_peer_step_helo;
int	smtp_peer_cmd_helo(struct smtp_session *s, const char *args);
int	smtp_peer_cmd_ehlo(struct smtp_session *s, const char *args);
int	smtp_peer_cmd_starttls(struct smtp_session *s, const char *args);
int	smtp_peer_tls_wrap(struct smtp_session *s);
void	smtp_peer_lookup(struct smtp_session *s);
void	smtp_peer_set(struct smtp_session *s, const struct sockaddr *sa);
void	smtp_peer_local(struct smtp_session *s, int fd);
void	smtp_peer_proxy_input(struct smtp_session *s);

/* smtp_auth.c */
void	smtp_auth_offer(const struct smtp_session *s, char *out, size_t outlen);
int	smtp_auth_offered(const struct smtp_session *s);
int	smtp_auth_cmd(struct smtp_session *s, const char *args);
int	smtp_auth_input(struct smtp_session *s);

/* smtp_mail.c */
extern const struct smtp_step smtp_mail_step_mail, smtp_mail_step_rcpt;
int	smtp_mail_offer_8bitmime(const struct smtp_session *s);
int	smtp_mail_offer_smtputf8(const struct smtp_session *s);
int	smtp_mail_offer_dsn(const struct smtp_session *s);
int	smtp_mail_cmd_mail(struct smtp_session *s, const char *args);
void	smtp_mail_rcpt_add(struct smtp_session *s, const char *rcpt,
	    const char *params);
const struct config_policy *smtp_mail_rcpt_policy(const struct smtp_session *s,
	    const char *rcpt);
void	smtp_mail_rcpt_accepted(struct smtp_session *s, const char *rcpt,
	    const char *dsn);
int	smtp_mail_cmd_rcpt(struct smtp_session *s, const char *args);

/* smtp_data.c */
extern const struct smtp_step smtp_data_step_data, smtp_data_step_bdat;
int	smtp_data_cmd_data(struct smtp_session *s, const char *args);
int	smtp_data_bdat_input(struct smtp_session *s);
int	smtp_data_cmd_bdat(struct smtp_session *s, const char *args);
int	smtp_data_input(struct smtp_session *s);

/* smtp_eom.c */
long	smtp_eom_msg_read(void *arg, size_t off, void *buf, size_t len);
void	smtp_eom_replay_next(struct smtp_session *s);

/* smtp_relay.c */
void	smtp_relay_close(struct smtp_session *s);
void	smtp_relay_cancel(struct smtp_session *s);
void	smtp_relay_failed(struct smtp_session *s, enum upstream_err err);
int	smtp_relay_has(const struct smtp_session *s, unsigned flag);
void	smtp_relay_auth_mechs(const struct smtp_session *s, char *out,
	    size_t outlen);
int	smtp_relay_auth(struct smtp_session *s, const char *line,
	    upstream_done_fn done);
int	smtp_relay_rcpt_full(const struct smtp_session *s);
unsigned	smtp_relay_offer_flags(const struct smtp_session *s);
size_t	smtp_relay_size_limit(const struct smtp_session *s);
void	smtp_relay_mail_start(struct smtp_session *s);
int	smtp_relay_quarantine(struct smtp_session *s, const char *note);
void	smtp_relay_mail(struct smtp_session *s);
void	smtp_relay_rcpt(struct smtp_session *s);
int	smtp_relay_pipe_gate(struct smtp_session *s);
int	smtp_relay_reported(struct smtp_session *s, enum fmx_verdict verdict);
void	smtp_relay_deliver(struct smtp_session *s, int rcpts_changed);

/* smtp_tx.c */
struct smtp_tx *smtp_tx_new(struct smtp_session *s);
void	smtp_tx_free(struct smtp_session *s);
void	smtp_tx_reset(struct smtp_session *s);
void	smtp_tx_done(struct smtp_session *s);

#endif
