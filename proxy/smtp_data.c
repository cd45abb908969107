/*
 * smtp_data.c - DATA and BDAT: the message into the spool
 *
 * DESCRIPTION
 *	After the data phase of the filters, message lines are read (DATA:
 *	dot-unstuffed up to the final dot; BDAT: chunks of a given size,
 *	framed into lines the same way, RFC 3030) and appended to the
 *	session's spool, while the header fields are tracked by offset for
 *	the filters and for header edits (smtp_eom.c).
 *
 *	Limits are checked as the octets arrive: line length, header size,
 *	message size (limits.message_size or the upstream's SIZE when
 *	smaller), bare CR or LF, NUL.  A message that breaks one is read to
 *	its end and stored no further, then refused (smtp_data_end), so the
 *	client stays in step.  A good one goes to the filters
 *	(smtp_eom_replay_next).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "log.h"
#include "smtp_frame.h"
#include "smtp_int.h"
#include "spool.h"
#include "strutil.h"

/* A new message is about to be read (DATA or the first BDAT chunk). */
static void
smtp_data_init(struct smtp_session *s)
{
	spool_reset(&s->spool);
	s->tx->nhdrs = 0;
	s->tx->eoh_off = 0;
	s->tx->flags &= ~SMTP_TX_EOH_BLANK;
	s->tx->data_err = SMTP_DATA_OK;
	s->tx->flags |= SMTP_TX_IN_HEADER;
	s->tx->header_bytes = 0;
	s->tx->msg_bytes = 0;
}

static void
smtp_data_proceed(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	smtp_data_init(s);
	smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	smtp_resume(s, SMTP_STATE_DATA);
}

const struct smtp_step smtp_data_step_data = {
	FILTER_PH_DATA, "message", NULL, smtp_data_proceed
};

int
smtp_data_cmd_data(struct smtp_session *s, const char *args)
{
	(void)args;
	/* Not after a BDAT chunk: its row lacks SMTP_VERB_IN_BDAT (RFC 3030 3). */
	smtp_verb_filter(s, NULL);
	return SMTP_VERB_OK;
}

/* The client's final dot arrived: refuse a bad message, else run the filters. */
static void
smtp_data_end(struct smtp_session *s)
{
	const char *reply = NULL;

	smtp_data_clock_stop(s);
	s->stage = "eom";	/* the replies from here answer the final dot */
	if (s->tx->data_err == SMTP_DATA_OK && spool_flush(&s->spool) == -1)
		s->tx->data_err = SMTP_DATA_SPOOL;
	if (s->tx->flags & SMTP_TX_IN_HEADER)
		s->tx->eoh_off = s->spool.size;	/* header only, no body */
	switch (s->tx->data_err) {
	case SMTP_DATA_OK:
		break;
	case SMTP_DATA_BARE_EOL:
		reply = "550 5.5.2 Error: bare CR or LF in message";
		break;
	case SMTP_DATA_NUL:
		reply = "550 5.6.0 Error: NUL character in message";
		break;
	case SMTP_DATA_LINE_TOO_LONG:
		reply = "500 5.5.2 Error: line too long";
		break;
	case SMTP_DATA_TOO_BIG:
		reply = "552 5.3.4 Error: message too large";
		break;
	case SMTP_DATA_HEADER_TOO_BIG:
		reply = "552 5.3.4 Error: message header too large";
		break;
	case SMTP_DATA_SPOOL:
		reply = "451 4.3.0 Error: local spool error, try again later";
		break;
	default:
		fatalx("smtp_data_end: bad error %d", s->tx->data_err);
	}
	if (reply != NULL) {
		smtp_chat_log_message(s, "refused", reply);
		smtp_tx_reset(s);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		/*
		 * XXX Meant: our own spool failing (SMTP_DATA_SPOOL) is no
		 * client error, smtp_reply() instead.  The test always read
		 * the error after the reset had cleared it, so every refusal
		 * has counted against limits.errors; kept so (issue 10 moves
		 * code, behaviour stays).
		 */
		smtp_error(s, "%s", reply);
		return;
	}
	smtp_enter_state(s, SMTP_STATE_WAIT);
	s->tx->replay_i = 0;
	s->tx->replay_off = 0;
	smtp_eom_replay_next(s);
}

/*
 * RFC 5322 2.2: field-name = 1*ftext followed by ':'; the obsolete
 * syntax (4.5.5) allows blanks before the colon, and readers honour it,
 * so such a line is a header field too (else "Subject :" would escape
 * header rules and a forged "Authentication-Results :" its removal).
 */
static int
smtp_data_header_start(const char *line, size_t len)
{
	size_t i, name = 0;

	for (i = 0; i < len; i++) {
		if (line[i] == ':')
			return name > 0;
		if (line[i] == ' ' || line[i] == '\t') {
			if (name == 0)
				return 0;
			continue;
		}
		if ((unsigned char)line[i] < 33 || (unsigned char)line[i] > 126 ||
		    i > name)	/* a blank inside the name */
			return 0;
		name++;
	}
	return 0;
}

/* Track header fields as they are spooled (offsets, folds, end of header). */
static void
smtp_data_track_header(struct smtp_session *s, const char *line, size_t len,
    size_t content)
{
	struct smtp_hdr *h;
	size_t cap;

	if (content == 0) {
		s->tx->flags &= ~SMTP_TX_IN_HEADER;
		s->tx->eoh_off = s->spool.size;
		s->tx->flags |= SMTP_TX_EOH_BLANK;
	} else if (line[0] == ' ' || line[0] == '\t') {
		if (s->tx->nhdrs > 0)
			s->tx->hdrs[s->tx->nhdrs - 1].len += len;
		else {
			/* a fold with nothing to fold */
			s->tx->flags &= ~SMTP_TX_IN_HEADER;
			s->tx->eoh_off = s->spool.size;
		}
	} else if (smtp_data_header_start(line, content)) {
		if (s->tx->nhdrs == s->tx->hdrcap) {
			cap = s->tx->hdrcap ? s->tx->hdrcap * 2 : 32;
			if ((h = realloc(s->tx->hdrs, cap * sizeof *h)) == NULL)
				fatalx("out of memory");
			s->tx->hdrs = h;
			s->tx->hdrcap = cap;
		}
		s->tx->hdrs[s->tx->nhdrs].off = s->spool.size;
		s->tx->hdrs[s->tx->nhdrs].len = len;
		s->tx->nhdrs++;
	} else {
		/* Not a header field: like Postfix, the body starts here. */
		s->tx->flags &= ~SMTP_TX_IN_HEADER;
		s->tx->eoh_off = s->spool.size;
	}
}

/* One message line, CRLF included in len (content is len - 2 bytes). */
static void
smtp_data_line(struct smtp_session *s, const char *line, size_t len,
    enum smtp_line kind)
{
	size_t content = len - 2;

	switch (kind) {
	case SMTP_LINE_OK:
		break;
	case SMTP_LINE_BARE_EOL:
		if (s->tx->data_err == SMTP_DATA_OK)
			s->tx->data_err = SMTP_DATA_BARE_EOL;
		break;
	case SMTP_LINE_NUL:
		if (s->tx->data_err == SMTP_DATA_OK)
			s->tx->data_err = SMTP_DATA_NUL;
		break;
	case SMTP_LINE_TOO_LONG:
		if (s->tx->data_err == SMTP_DATA_OK)
			s->tx->data_err = SMTP_DATA_LINE_TOO_LONG;
		return;
	default:
		fatalx("smtp_data_line: bad kind %d", kind);
	}
	/*
	 * Un-stuff (RFC 5321 4.5.2); the writer re-stuffs its own output.
	 * BDAT content is not stuffed (RFC 3030 2).
	 */
	if (!(s->tx->flags & SMTP_TX_BDAT)) {
		smtp_frame_unstuff(&line, &len);
		content = len - 2;
	}
	/*
	 * 4.5.3.1.6: 1000 octets with CRLF, the stuffing dot not counted,
	 * unless the admin raised limits.line_length.
	 */
	if (len > s->cfg->limits.line_length && s->tx->data_err == SMTP_DATA_OK)
		s->tx->data_err = SMTP_DATA_LINE_TOO_LONG;
	s->tx->msg_bytes += len;
	if ((s->tx->flags & SMTP_TX_IN_HEADER) && content > 0 &&
	    (s->tx->header_bytes += len) > s->cfg->limits.header_size &&
	    s->tx->data_err == SMTP_DATA_OK)
		s->tx->data_err = SMTP_DATA_HEADER_TOO_BIG;
	/* Fixed when the data starts: the upstream connection is open. */
	if (s->tx->size_limit == 0)
		s->tx->size_limit = smtp_relay_size_limit(s);
	if (s->tx->msg_bytes > s->tx->size_limit &&
	    s->tx->data_err == SMTP_DATA_OK)
		s->tx->data_err = SMTP_DATA_TOO_BIG;
	if (s->tx->data_err != SMTP_DATA_OK)
		return;		/* keep reading to the dot, store nothing */
	if (s->tx->flags & SMTP_TX_IN_HEADER)
		smtp_data_track_header(s, line, len, content);
	if (spool_append(&s->spool, line, len) == -1)
		s->tx->data_err = SMTP_DATA_SPOOL;
}

/*
 * The buffer one message line is framed into, for DATA and BDAT alike
 * (a transaction uses one of them): limits.line_length plus a stuffing
 * dot and a spare octet, so up to 1 MiB when the admin raised it.  Made
 * at the session's first message, kept to its end: idle sessions have
 * none, and s->cfg does not change under a session.
 */
static char *
smtp_data_text_line(struct smtp_session *s)
{
	if (s->text_line == NULL &&
	    (s->text_line = malloc(s->cfg->limits.line_length + 2)) == NULL)
		fatalx("out of memory");
	return s->text_line;
}

/* Frame chunk bytes into lines, like DATA but with no stuffing and no dot. */
static void
smtp_data_bdat_bytes(struct smtp_session *s, const char *p, size_t n)
{
	char *line = smtp_data_text_line(s);
	const char *nl;
	size_t take, len, i;
	enum smtp_line kind;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		take = nl ? (size_t)(nl - p) + 1 : n;
		if ((s->tx->flags & SMTP_TX_BDAT_LONG) ||
		    s->tx->bdat_linelen + take > s->cfg->limits.line_length + 2) {
			/* Over 1000 octets: account for it, keep nothing. */
			if (!(s->tx->flags & SMTP_TX_BDAT_LONG) &&
			    s->tx->data_err == SMTP_DATA_OK)
				smtp_data_line(s, line, 2, SMTP_LINE_TOO_LONG);
			SMTP_FLAG_SET(s->tx->flags, SMTP_TX_BDAT_LONG, nl == NULL);
			s->tx->bdat_linelen = 0;
			s->tx->msg_bytes += take;
			p += take;
			n -= take;
			continue;
		}
		memcpy(line + s->tx->bdat_linelen, p, take);
		s->tx->bdat_linelen += take;
		p += take;
		n -= take;
		if (nl == NULL)
			break;
		len = s->tx->bdat_linelen;
		s->tx->bdat_linelen = 0;
		kind = SMTP_LINE_OK;
		if (len < 2 || line[len - 2] != '\r')
			kind = SMTP_LINE_BARE_EOL;	/* LF without CR */
		for (i = 0; kind == SMTP_LINE_OK && i + 2 < len; i++) {
			if (line[i] == '\r' || line[i] == '\n')
				kind = SMTP_LINE_BARE_EOL;
			else if (line[i] == '\0')
				kind = SMTP_LINE_NUL;
		}
		if (kind == SMTP_LINE_BARE_EOL && len < 2) {
			/* a lone LF: account 2 octets so the line helper can cope */
			line[1] = '\n';
			len = 2;
		}
		smtp_data_line(s, line, len, kind);
	}
}

/* Consume the current chunk; 1 when it is complete (and answered). */
int
smtp_data_bdat_input(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	char buf[16384];
	size_t have, take;
	const char *refuse;

	while (s->bdat_left > 0 && (have = evbuffer_get_length(in)) > 0) {
		take = have < sizeof buf ? have : sizeof buf;
		if (take > s->bdat_left)
			take = (size_t)s->bdat_left;
		evbuffer_remove(in, buf, take);
		s->bdat_left -= take;
		/* A refused chunk is consumed, not counted: it is no message's. */
		if (s->bdat_refuse == NULL) {
			s->tx->bdat_total += take;
			smtp_data_bdat_bytes(s, buf, take);
		}
	}
	if (s->bdat_left > 0)
		return 0;
	if ((refuse = s->bdat_refuse) != NULL) {
		/* The octets are gone, the client is in step: now say no. */
		s->bdat_refuse = NULL;
		smtp_data_clock_stop(s);
		if (s->tx != NULL)
			smtp_tx_reset(s);
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_error(s, "%s", refuse);
		return 1;
	}
	if (!(s->flags & SMTP_F_BDAT_LAST)) {
		smtp_enter_state(s, SMTP_STATE_COMMAND);
		smtp_reply(s, "250 2.0.0 %llu octets received", s->tx->bdat_total);
		return 1;
	}
	if (s->tx->bdat_linelen > 0 || (s->tx->flags & SMTP_TX_BDAT_LONG))
		/* A last line without CRLF: the message still ends in one. */
		smtp_data_bdat_bytes(s, "\r\n", 2);
	smtp_data_end(s);
	return 1;
}

/*
 * The data phase's verdict on a BDAT message, whatever it is: a refusal
 * waits until the chunk is consumed (smtp_data_bdat_input), so this step
 * has no `what` and the funnel answers nothing itself.
 */
static void
smtp_data_bdat_start(struct smtp_session *s, const struct filter_result *res)
{
	if (res->verdict == FMX_REJECT || res->verdict == FMX_TEMPFAIL) {
		s->bdat_refuse = res->reply[0] ? res->reply :
		    res->verdict == FMX_REJECT ? "550 5.7.1 message rejected by policy" :
		    "451 4.7.1 message deferred by policy";
		/* res->reply lives in the chain only until the next phase: copy */
		snprintf(s->bdat_reply, sizeof s->bdat_reply, "%s", s->bdat_refuse);
		s->bdat_refuse = s->bdat_reply;
	} else {
		smtp_data_init(s);
		s->tx->flags |= SMTP_TX_BDAT;
	}
	smtp_resume(s, SMTP_STATE_BDAT);
}

const struct smtp_step smtp_data_step_bdat = {
	FILTER_PH_DATA, NULL, NULL, smtp_data_bdat_start
};

int
smtp_data_cmd_bdat(struct smtp_session *s, const char *args)
{
	unsigned long long size;
	const char *p = args;
	char *end;

	/*
	 * Without a size we cannot know where the chunk ends, and its octets
	 * would be read as commands: end the session instead (RFC 3030 3).
	 */
	errno = 0;
	size = strtoull(p, &end, 10);
	if (p[0] < '0' || p[0] > '9' || errno != 0 || end - p > 20 ||
	    (*end != '\0' && str_casecmp(end, " LAST") != 0)) {
		smtp_reply(s, "501 5.5.4 Syntax: BDAT size [LAST]");
		smtp_reply(s, "421 4.5.0 %s Error: cannot find the end of the chunk",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return SMTP_VERB_OK;
	}
	s->bdat_left = size;
	SMTP_FLAG_SET(s->flags, SMTP_F_BDAT_LAST, *end != '\0');
	/* Its row's preconditions, answered after the chunk (SMTP_VERB_CHUNK). */
	s->bdat_refuse = smtp_verb_unmet(s, s->verb->flags);
	if (s->bdat_refuse != NULL || (s->tx->flags & SMTP_TX_BDAT)) {
		smtp_enter_state(s, SMTP_STATE_BDAT);
		return SMTP_VERB_OK;
	}
	/* First chunk of the message: the data phase filters run first. */
	smtp_verb_filter(s, NULL);
	return SMTP_VERB_OK;
}

/* Consume buffered message lines; 1 if the final dot was seen. */
int
smtp_data_input(struct smtp_session *s)
{
	char *line = smtp_data_text_line(s);
	enum smtp_line kind;
	size_t len;

	for (;;) {
		/* One more octet than the limit: room for a stuffing dot. */
		kind = smtp_frame_line(bufferevent_get_input(s->bev),
		    &s->skipping, line, s->cfg->limits.line_length + 1, &len);
		if (kind == SMTP_LINE_NONE)
			return 0;
		if (kind == SMTP_LINE_OK && len == 3 && line[0] == '.') {
			smtp_data_end(s);
			return 1;
		}
		if (kind == SMTP_LINE_TOO_LONG) {
			smtp_data_line(s, line, 2, kind);
			continue;
		}
		smtp_data_line(s, line, len, kind);
	}
}
