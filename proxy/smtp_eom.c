/*
 * smtp_eom.c - end of message: filter replay, decision, header block
 *
 * DESCRIPTION
 *	The spooled message is replayed to the filters (each header field,
 *	end of headers, the body in 64 KiB chunks, then eom), so they get
 *	the view milter streaming would, from one spool and no second copy.
 *
 *	At eom the outcome decides: refuse, discard, quarantine, or relay
 *	with the recipient edits applied and the header block rebuilt: our
 *	Received, Authentication-Results and tag first, the client's fields
 *	minus a forged Authentication-Results, with the filters' inserted,
 *	changed and added fields and the tagged Subject.  The body stays in
 *	the spool (or a filter's replacement body); smtp_relay.c sends the
 *	header block and the body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter_chain.h"
#include "log.h"
#include "policy.h"
#include "smtp_int.h"
#include "smtp_parse.h"
#include "smtp_reply.h"
#include "spool.h"
#include "strutil.h"

static void	smtp_eom_replay_step(struct smtp_session *s);

/*
 * RFC 5321 4.4 trace field; every part comes from validated input.  The
 * client controls most of it (a 255-octet HELO, a 253-octet PTR name it
 * owns, a 256-octet path), so it is written word by word and folded
 * (RFC 5322 2.2.3) wherever a line would pass 78 octets: no word is
 * longer than a domain plus a few octets, so no line can pass 998.
 * SMTP_RECEIVED_MAX holds the longest possible field; -1 (logged) if
 * that sum were ever wrong, never a truncated field.
 */
static int
smtp_eom_received(struct smtp_session *s)
{
	struct policy_buf b = { s->tx->received, sizeof s->tx->received, 0, 0, 0 };
	char date[64], word[SMTP_PATH_MAX + 8];
	const char *proto;
	struct tm tm;
	time_t now = time(NULL);
	int n;

	localtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
	policy_puts(&b, "Received: from");
	policy_part(&b, s->helo, strlen(s->helo));
	n = snprintf(word, sizeof word, "(%s", s->name);
	policy_part(&b, word, (size_t)n);
	n = snprintf(word, sizeof word, "[%s])", s->addr);
	policy_part(&b, word, (size_t)n);
	/* The TLS details in a comment, as Postfix does. */
	if (s->tls == SMTP_TLS_ACTIVE) {
		policy_fold(&b);
		policy_puts(&b, "(using ");
		policy_puts(&b, s->tls_desc);
		policy_puts(&b, ")");
	}
	policy_fold(&b);
	policy_puts(&b, "by");
	policy_part(&b, s->cfg->hostname, strlen(s->cfg->hostname));
	policy_part(&b, "(frontmx) with", 14);
	proto = smtp_proto_name(((s->flags & SMTP_F_ESMTP) ? SMTP_PROTO_ESMTP : 0) |
	    (s->tls == SMTP_TLS_ACTIVE ? SMTP_PROTO_TLS : 0) |
	    (s->auth_id != NULL ? SMTP_PROTO_AUTH : 0) |
	    ((s->tx->flags & SMTP_TX_UTF8) ? SMTP_PROTO_UTF8 : 0));
	policy_part(&b, proto, strlen(proto));
	n = snprintf(word, sizeof word, "id %016llx.%lu%s", s->id, s->messages,
	    s->tx->nrcpts == 1 ? "" : ";");
	policy_part(&b, word, (size_t)n);
	if (s->tx->nrcpts == 1) {
		policy_fold(&b);
		policy_puts(&b, "for");
		n = snprintf(word, sizeof word, "<%s>;", s->tx->rcpts[0]);
		policy_part(&b, word, (size_t)n);
	}
	policy_fold(&b);
	policy_puts(&b, date);
	policy_put(&b, "\r\n", 2);
	if (b.overflow) {
		log_warn("%016llx smtp Received field over %zu octets", s->id,
		    sizeof s->tx->received);
		return -1;
	}
	s->tx->receivedlen = b.len;
	return 0;
}

/* Append to the relayed header block (smtp_eom_build_head() checks head_overflow). */
static void
smtp_eom_head_add(struct smtp_session *s, size_t cap, const char *p, size_t len)
{
	/* Sized for the worst case; should that sum be wrong, 451, not a crash. */
	if ((s->tx->flags & SMTP_TX_HEAD_OVERFLOW) || s->tx->headlen + len > cap) {
		s->tx->flags |= SMTP_TX_HEAD_OVERFLOW;
		return;
	}
	memcpy(s->tx->head + s->tx->headlen, p, len);
	s->tx->headlen += len;
}

/* Field name match, any case, old-style blanks before the colon allowed. */
static int
smtp_eom_field_is(const char *field, size_t len, const char *name)
{
	const char *colon = memchr(field, ':', len);

	return colon != NULL &&
	    policy_header_is(field, (size_t)(colon - field), name);
}

static void
smtp_eom_head_field(struct smtp_session *s, size_t cap, const char *name,
    const char *value)
{
	smtp_eom_head_add(s, cap, name, strlen(name));
	smtp_eom_head_add(s, cap, ": ", 2);
	smtp_eom_head_add(s, cap, value, strlen(value));
	smtp_eom_head_add(s, cap, "\r\n", 2);
}

/* Edits for position pos (0 = before the first original field). */
static void
smtp_eom_head_inserts(struct smtp_session *s, size_t cap,
    const struct filter_outcome *o, size_t pos)
{
	size_t e;

	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_INSERT && o->edits[e].index == pos)
			smtp_eom_head_field(s, cap, o->edits[e].name, o->edits[e].value);
}

/* The header block's bound: every part sized for its worst case. */
static size_t
smtp_eom_head_cap(const struct smtp_session *s, const struct filter_outcome *o)
{
	size_t e, extra = 0;

	for (e = 0; e < o->nedits; e++)
		extra += strlen(o->edits[e].name) + 4 +
		    (o->edits[e].value ? strlen(o->edits[e].value) : 0);
	return s->tx->eoh_off + s->tx->receivedlen + SMTP_EXTRA_HEADERS + extra +
	    (s->cfg->tag_subject_prefix ? strlen(s->cfg->tag_subject_prefix) + 3 : 0) + 2;
}

/*
 * change_header(name, n, value) for the client's field i (src holds the
 * header part): the n-th field of that name is replaced, or dropped when
 * value is NULL.  1 when an edit applied to this field.
 */
static int
smtp_eom_head_change(struct smtp_session *s, size_t cap,
    const struct filter_outcome *o, const char *src, size_t i)
{
	const char *f = src + s->tx->hdrs[i].off;
	size_t vlen = s->tx->hdrs[i].len, e, k, occ;
	int changed = 0;

	for (e = 0; e < o->nedits && !changed; e++) {
		const struct filter_edit *ed = &o->edits[e];

		if (ed->kind != FILTER_EDIT_CHANGE ||
		    !smtp_eom_field_is(f, vlen, ed->name))
			continue;
		for (k = 0, occ = 0; k <= i; k++)
			if (smtp_eom_field_is(src + s->tx->hdrs[k].off, s->tx->hdrs[k].len,
			    ed->name))
				occ++;
		if (occ != ed->index)
			continue;
		changed = 1;
		if (ed->value != NULL)
			smtp_eom_head_field(s, cap, ed->name, ed->value);
	}
	return changed;
}

/* The tagged Subject field f (vlen octets, value after its colon). */
static void
smtp_eom_head_subject(struct smtp_session *s, size_t cap, const char *f,
    size_t vlen, const char *value)
{
	const char *prefix = s->cfg->tag_subject_prefix;
	const char *eol;
	size_t plen = strlen(prefix);

	while (value < f + vlen && (*value == ' ' || *value == '\t'))
		value++;
	eol = memchr(value, '\r', (size_t)(f + vlen - value));
	smtp_eom_head_add(s, cap, "Subject: ", 9);
	if (eol != NULL && 9 + plen + (size_t)(eol - value) >
	    SMTP_HEADER_LINE_MAX) {
		/*
		 * The client's first line was already near the 998-octet
		 * limit (RFC 5322 2.1.1): fold between the prefix and the
		 * old subject instead.
		 */
		while (plen > 0 && (prefix[plen - 1] == ' ' ||
		    prefix[plen - 1] == '\t'))
			plen--;
		smtp_eom_head_add(s, cap, prefix, plen);
		smtp_eom_head_add(s, cap, "\r\n ", 3);
	} else
		smtp_eom_head_add(s, cap, prefix, plen);
	smtp_eom_head_add(s, cap, value, (size_t)(f + vlen - value));
}

/*
 * The client's fields (src holds its header part), minus any
 * Authentication-Results that claims our authserv-id (RFC 8601 5), with
 * the filters' changes, inserts and the tagged Subject.
 */
static void
smtp_eom_head_client(struct smtp_session *s, size_t cap,
    const struct filter_outcome *o, const char *src)
{
	size_t i, vlen;
	const char *f, *value;
	int subject_done = 0;

	for (i = 0; i < s->tx->nhdrs; i++) {
		f = src + s->tx->hdrs[i].off;
		vlen = s->tx->hdrs[i].len;
		value = memchr(f, ':', vlen);
		value = value ? value + 1 : f + vlen;
		if (smtp_eom_field_is(f, vlen, "Authentication-Results") &&
		    policy_ar_is_ours(value, (size_t)(f + vlen - value),
		    s->cfg->authserv_id)) {
			log_info("%016llx smtp removed forged Authentication-Results",
			    s->id);
		} else if (smtp_eom_head_change(s, cap, o, src, i)) {
			/* replaced or dropped */
		} else if (!subject_done && o->verdict == FMX_TAG &&
		    s->cfg->tag_subject_prefix != NULL &&
		    smtp_eom_field_is(f, vlen, "Subject")) {
			subject_done = 1;
			smtp_eom_head_subject(s, cap, f, vlen, value);
		} else
			smtp_eom_head_add(s, cap, f, vlen);
		smtp_eom_head_inserts(s, cap, o, i + 1);
	}
}

/*
 * Build the header block the upstream will see: our Received, our
 * Authentication-Results, the tag, then the client's fields as edited
 * (smtp_eom_head_client), then the fields the filters added.  Everything
 * added was validated (no CR/LF inside a value), so the only line ends
 * are the ones written here.
 */
static int
smtp_eom_build_head(struct smtp_session *s, const struct filter_outcome *o)
{
	char *src = NULL;
	size_t cap, e;

	cap = smtp_eom_head_cap(s, o);
	if ((s->tx->head = malloc(cap)) == NULL)
		return -1;
	s->tx->headlen = 0;
	s->tx->flags &= ~SMTP_TX_HEAD_OVERFLOW;
	if (s->tx->eoh_off > 0) {
		if ((src = malloc(s->tx->eoh_off)) == NULL ||
		    spool_read(&s->spool, 0, src, s->tx->eoh_off) != (ssize_t)s->tx->eoh_off) {
			free(src);
			return -1;
		}
	}
	smtp_eom_head_add(s, cap, s->tx->received, s->tx->receivedlen);
	s->tx->headlen += filter_session_auth_results(s->fs, s->tx->head + s->tx->headlen,
	    SMTP_EXTRA_HEADERS / 2);
	if (o->tags[0] != '\0')
		smtp_eom_head_field(s, cap, s->cfg->tag_header, o->tags);
	smtp_eom_head_inserts(s, cap, o, 0);
	s->tx->head_prefix = s->tx->headlen;
	smtp_eom_head_client(s, cap, o, src);
	s->tx->head_added = s->tx->headlen;
	for (e = 0; e < o->nedits; e++)
		if (o->edits[e].kind == FILTER_EDIT_ADD)
			smtp_eom_head_field(s, cap, o->edits[e].name, o->edits[e].value);
	/* Header fields the client sent after a non-header line stay in the body. */
	free(src);
	if (o->body != NULL) {
		/* The new body replaces everything after the header block. */
		smtp_eom_head_add(s, cap, "\r\n", 2);
		s->tx->flags |= SMTP_TX_NEWBODY;
		if (spool_append(&s->newbody, o->body, o->bodylen) == -1 ||
		    spool_flush(&s->newbody) == -1)
			return -1;
	}
	if (s->tx->flags & SMTP_TX_HEAD_OVERFLOW) {
		log_warn("%016llx smtp header block over its %zu-octet bound",
		    s->id, cap);
		return -1;
	}
	return 0;
}

/*
 * Recipient edits from the filters: 0 ok, -1 nothing left to deliver to.
 * Deletions first, additions appended: with LMTP's one client recipient,
 * rcpts[0] is still the client's unless a filter removed it
 * (smtp_relay.c's per-recipient loop counts on that).
 */
static int
smtp_eom_rcpt_edits(struct smtp_session *s, const struct filter_outcome *o,
    int *changed)
{
	struct smtp_path p;
	char line[SMTP_PATH_MAX + 600], params[SMTP_PARAM_VALUE_MAX * 2 + 32];
	size_t i, j, k, used;

	*changed = 0;
	for (i = 0; i < o->ndel_rcpts; i++)
		for (j = 0; j < s->tx->nrcpts; j++)
			if (str_casecmp(s->tx->rcpts[j], o->del_rcpts[i]) == 0) {
				log_info("%016llx filter removed rcpt=<%s>", s->id,
				    s->tx->rcpts[j]);
				free(s->tx->rcpts[j]);
				free(s->tx->rcpt_params[j]);
				s->tx->nrcpts--;
				s->tx->rcpts[j] = s->tx->rcpts[s->tx->nrcpts];
				s->tx->rcpt_params[j] = s->tx->rcpt_params[s->tx->nrcpts];
				*changed = 1;
				break;
			}
	for (i = 0; i < o->nadd_rcpts; i++) {
		/* Re-parse exactly like a client's RCPT: no smuggling via modules. */
		snprintf(line, sizeof line, "TO:<%s>%s%s", o->add_rcpts[i],
		    o->add_rcpt_args[i] ? " " : "",
		    o->add_rcpt_args[i] ? o->add_rcpt_args[i] : "");
		if (smtp_parse_path(line, SMTP_CMD_RCPT, &p) != SMTP_PARSE_OK) {
			log_warn("%016llx filter added invalid rcpt ignored", s->id);
			continue;
		}
		/*
		 * A milter's ESMTP arguments (SMFIR_ADDRCPT_PAR): only DSN's
		 * NOTIFY and ORCPT are relayed, re-serialised as parsed.
		 */
		params[0] = '\0';
		for (k = 0, used = 0; k < p.nparams; k++)
			if (p.params[k].has_value &&
			    (strcmp(p.params[k].key, "NOTIFY") == 0 ||
			    strcmp(p.params[k].key, "ORCPT") == 0) &&
			    used + strlen(p.params[k].key) + strlen(p.params[k].value) + 3 <
			    sizeof params)
				used += (size_t)snprintf(params + used, sizeof params - used,
				    " %s=%s", p.params[k].key, p.params[k].value);
		log_info("%016llx filter added rcpt=<%s>%s", s->id, p.mailbox, params);
		smtp_mail_rcpt_add(s, p.mailbox, params[0] ? params : NULL);
		*changed = 1;
	}
	return s->tx->nrcpts > 0 ? 0 : -1;
}

/* A filter refused the message (its reply is out): the transaction ends. */
static void
smtp_eom_refused(struct smtp_session *s, const struct filter_result *res)
{
	char reply[FILTER_REPLY_MAX];

	/* The reply the client got (first line), not just who refused. */
	if (smtp_filter_reply(res, s->step->what, reply, sizeof reply) == NULL)
		snprintf(reply, sizeof reply, "refused by %s", res->filter);
	reply[strcspn(reply, "\n")] = '\0';
	smtp_chat_log_message(s, "refused", reply);
	smtp_tx_done(s);
}

/*
 * A milter's new envelope sender (SMFIR_CHGFROM), re-parsed like a
 * client's MAIL FROM.  0 ok or unchanged, -1 unusable (the message is
 * deferred: never relayed under a sender nobody checked).
 */
static int
smtp_eom_sender_edit(struct smtp_session *s, const struct filter_outcome *o)
{
	struct smtp_path p;
	char line[SMTP_PATH_MAX + 16], *from;

	if (o->mail_from == NULL)
		return 0;
	snprintf(line, sizeof line, "FROM:<%s>", o->mail_from);
	if (smtp_parse_path(line, SMTP_CMD_MAIL, &p) != SMTP_PARSE_OK ||
	    (from = strdup(p.mailbox)) == NULL) {
		log_warn("%016llx filter changed the sender to an invalid address",
		    s->id);
		return -1;
	}
	if (o->mail_from_args != NULL)
		log_info("%016llx filter sender arguments not relayed: %s", s->id,
		    o->mail_from_args);
	log_info("%016llx filter changed from=<%s> to from=<%s>", s->id,
	    s->tx->mail_from, from);
	free(s->tx->mail_from);
	s->tx->mail_from = from;
	return 0;
}

/* Every filter had its say: act on the outcome. */
static void
smtp_eom_decide(struct smtp_session *s, const struct filter_result *res)
{
	const struct filter_outcome *o;
	int rcpts_changed;

	(void)res;
	o = filter_session_outcome(s->fs);
	if (smtp_eom_rcpt_edits(s, o, &rcpts_changed) == -1) {
		smtp_chat_log_message(s, "discarded", "filters removed every recipient");
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->tx->queue_id);
		smtp_tx_done(s);
		return;
	}
	/* A new sender, like new recipients, makes the envelope go again. */
	if (o->mail_from != NULL)
		rcpts_changed = 1;
	if (smtp_eom_sender_edit(s, o) == -1) {
		smtp_chat_log_message(s, "tempfail", "invalid sender edit");
		smtp_reply(s, "451 4.3.0 Error: local error, try again later");
		smtp_tx_done(s);
		return;
	}
	if (smtp_eom_received(s) == -1 || smtp_eom_build_head(s, o) == -1) {
		smtp_chat_log_message(s, "tempfail", "out of memory or spool error");
		smtp_reply(s, "451 4.3.0 Error: local error, try again later");
		smtp_tx_done(s);
		return;
	}
	if (smtp_relay_reported(s, o->verdict))
		return;
	switch (o->verdict) {
	case FMX_DISCARD:
		/* The client keeps no responsibility: logging the decision is the record. */
		smtp_chat_log_message(s, "discarded", o->reason);
		smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->tx->queue_id);
		smtp_tx_done(s);
		return;
	case FMX_QUARANTINE:
		if (s->cfg->quarantine_dir == NULL ||
		    smtp_relay_quarantine(s, o->reason) == -1) {
			/* Nowhere safe to keep it: the client keeps it. */
			smtp_chat_log_message(s, "tempfail", "quarantine unavailable");
			smtp_reply(s, "451 4.3.0 Error: quarantine unavailable, try again later");
		} else {
			smtp_chat_log_message(s, "quarantined", o->reason);
			smtp_reply(s, "250 2.0.0 Ok: queued as %s", s->tx->queue_id);
		}
		smtp_tx_done(s);
		return;
	default:
		break;
	}
	smtp_relay_deliver(s, rcpts_changed);
}

static void
smtp_eom_replay_proceed(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	/* Filters usually answer at once: iterate there instead of recursing per header. */
	if (s->tx->flags & SMTP_TX_IN_REPLAY)
		s->tx->flags |= SMTP_TX_REPLAY_AGAIN;
	else
		smtp_eom_replay_next(s);
}

static const struct smtp_step smtp_eom_step_header = {
	FILTER_PH_HEADER, "message", smtp_eom_refused, smtp_eom_replay_proceed
};
static const struct smtp_step smtp_eom_step_eoh = {
	FILTER_PH_EOH, "message", smtp_eom_refused, smtp_eom_replay_proceed
};
static const struct smtp_step smtp_eom_step_body = {
	FILTER_PH_BODY, "message", smtp_eom_refused, smtp_eom_replay_proceed
};
static const struct smtp_step smtp_eom_step_eom = {
	FILTER_PH_EOM, "message", smtp_eom_refused, smtp_eom_decide
};

long
smtp_eom_msg_read(void *arg, size_t off, void *buf, size_t len)
{
	struct smtp_session *s = arg;

	return (long)spool_read(&s->spool, (off_t)off, buf, len);
}

/*
 * Feed the spooled message to the filters: each header field, end of
 * headers, the body in chunks, then eom.  Nothing was relayed yet, so
 * replaying at end of data gives the filters the same view milter
 * streaming would, with one spool and no second copy.  replay_i walks the
 * header fields, replay_off the body.
 */

void
smtp_eom_replay_next(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;

	do {
		tx->flags &= ~SMTP_TX_REPLAY_AGAIN;
		tx->flags |= SMTP_TX_IN_REPLAY;
		smtp_eom_replay_step(s);
		/* The message ended inside (refused, or decided): tx is gone. */
		if (s->tx != tx)
			return;
		tx->flags &= ~SMTP_TX_IN_REPLAY;
	} while (tx->flags & SMTP_TX_REPLAY_AGAIN);
}

/* Our own disk failed under the message: the client keeps it (451). */
static void
smtp_eom_replay_failed(struct smtp_session *s)
{
	free(s->tx->replay_buf);
	s->tx->replay_buf = NULL;
	s->tx->replay_i = 0;
	s->tx->replay_off = 0;
	smtp_chat_log_message(s, "tempfail", "spool read error");
	smtp_reply(s, "451 4.3.0 Error: local error, try again later");
	smtp_tx_done(s);
}

static void
smtp_eom_replay_step(struct smtp_session *s)
{
	struct filter_args a;
	size_t body_start = s->tx->eoh_off, len;
	ssize_t n;
	char *colon;

	memset(&a, 0, sizeof a);
	smtp_facts(s);
	if (s->tx->replay_i < s->tx->nhdrs && filter_chain_wants(s->chain, FILTER_PH_HEADER)) {
		const struct smtp_hdr *h = &s->tx->hdrs[s->tx->replay_i++];

		free(s->tx->replay_buf);
		if ((s->tx->replay_buf = malloc(h->len + 1)) == NULL)
			fatalx("out of memory");
		if (spool_read(&s->spool, (off_t)h->off, s->tx->replay_buf, h->len) !=
		    (ssize_t)h->len) {
			smtp_eom_replay_failed(s);
			return;
		}
		len = h->len - 2;	/* without the final CRLF */
		s->tx->replay_buf[len] = '\0';
		colon = strchr(s->tx->replay_buf, ':');
		*colon = '\0';
		/* obsolete "Name :" syntax: the name is without the blanks */
		for (len = (size_t)(colon - s->tx->replay_buf); len > 0 &&
		    (s->tx->replay_buf[len - 1] == ' ' || s->tx->replay_buf[len - 1] == '\t'); len--)
			s->tx->replay_buf[len - 1] = '\0';
		a.str = s->tx->replay_buf;
		a.str2 = colon + 1;
		/* milter convention: drop the one space after the colon */
		if (*a.str2 == ' ')
			a.str2++;
		smtp_filter_run(s, &smtp_eom_step_header, &a);
		return;
	}
	if (s->tx->replay_i == s->tx->nhdrs || !filter_chain_wants(s->chain, FILTER_PH_HEADER)) {
		s->tx->replay_i = s->tx->nhdrs + 1;
		if (filter_chain_wants(s->chain, FILTER_PH_EOH)) {
			smtp_filter_run(s, &smtp_eom_step_eoh, &a);
			return;
		}
	}
	/* The body proper starts after the empty line that ends the header. */
	if (s->tx->replay_off == 0)
		s->tx->replay_off = body_start +
		    ((s->tx->flags & SMTP_TX_EOH_BLANK) ? 2 : 0);
	if (filter_chain_wants(s->chain, FILTER_PH_BODY) &&
	    s->tx->replay_off < s->spool.size) {
		free(s->tx->replay_buf);
		if ((s->tx->replay_buf = malloc(SMTP_BODY_CHUNK)) == NULL)
			fatalx("out of memory");
		n = spool_read(&s->spool, (off_t)s->tx->replay_off, s->tx->replay_buf,
		    SMTP_BODY_CHUNK);
		if (n <= 0) {
			smtp_eom_replay_failed(s);
			return;
		}
		s->tx->replay_off += (size_t)n;
		a.data = (const unsigned char *)s->tx->replay_buf;
		a.len = (size_t)n;
		smtp_filter_run(s, &smtp_eom_step_body, &a);
		return;
	}
	free(s->tx->replay_buf);
	s->tx->replay_buf = NULL;
	s->tx->replay_i = 0;
	s->tx->replay_off = 0;
	smtp_filter_run(s, &smtp_eom_step_eom, &a);
}
