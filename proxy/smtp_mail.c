/*
 * smtp_mail.c - MAIL and RCPT with their parameters
 *
 * DESCRIPTION
 *	MAIL: the path is parsed (UTF-8 only with SMTPUTF8 offered), its
 *	parameters validated against what this session's EHLO offered
 *	(s->offer: SIZE, SMTPUTF8, BODY, DSN's RET and ENVID, AUTH= parsed
 *	and dropped) and kept in the client's order; smtp_relay.c makes the
 *	upstream's line from them.  Then the mail phase of the filters.
 *
 *	RCPT: relay control (relay domains, relay networks, authenticated
 *	users), DSN's NOTIFY and ORCPT re-serialised, the recipient limit
 *	(452), the verdicts held since connect/helo/mail acted on with the
 *	recipient's own policy, and one policy per transaction: a recipient
 *	of another policy gets 452 and comes back in its own transaction.
 *	Then the rcpt phase of the filters, then the upstream.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "filter_chain.h"
#include "log.h"
#include "netaddr.h"
#include "policy.h"
#include "smtp_int.h"
#include "smtp_parse.h"
#include "strutil.h"
#include "xtext.h"

/*
 * What the client was offered (at its last EHLO) is what it may use:
 * the upstream changing in between must not turn it into a 555.
 */
int
smtp_mail_offer_8bitmime(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_8BITMIME) != 0;
}

int
smtp_mail_offer_smtputf8(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_SMTPUTF8) != 0;
}

int
smtp_mail_offer_dsn(const struct smtp_session *s)
{
	return (s->offer & SMTP_EHLO_DSN) != 0;
}

/* A refused sender opens no transaction. */
static void
smtp_mail_refused(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	smtp_tx_free(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

static void
smtp_mail_proceed(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	smtp_relay_mail(s);
}

const struct smtp_step smtp_mail_step_mail = {
	FILTER_PH_MAIL, "sender", smtp_mail_refused, smtp_mail_proceed
};

static int
smtp_mail_is_ascii(const char *p)
{
	for (; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			return 0;
	return 1;
}

/* Remember that the client gave this parameter, in its order (once each). */
static void
smtp_mail_param_keep(struct smtp_session *s, enum smtp_mail_param kind)
{
	size_t i;

	for (i = 0; i < s->tx->nparams; i++)
		if (s->tx->order[i] == kind)
			return;
	if (s->tx->nparams >= SMTP_MAIL_PARAM_COUNT)
		fatalx("smtp_mail_param_keep: %zu parameters", s->tx->nparams);
	s->tx->order[s->tx->nparams++] = kind;
}

/*
 * Validate the MAIL parameters against what this session was offered and
 * keep them (smtp_relay_mail_line makes the upstream's line from them).
 * Returns 0, or -1 after replying to the client.
 */
static int
smtp_mail_params(struct smtp_session *s, const struct smtp_path *p)
{
	unsigned long long size;
	char *end;
	size_t i;

	s->tx->flags &= ~SMTP_TX_UTF8;
	s->tx->body = 0;
	s->tx->ret = 0;
	s->tx->flags &= ~SMTP_TX_HAS_SIZE;
	s->tx->envid[0] = '\0';
	s->tx->nparams = 0;
	for (i = 0; i < p->nparams; i++) {
		const struct smtp_param *pa = &p->params[i];

		if (strcmp(pa->key, "SIZE") == 0) {
			errno = 0;
			size = strtoull(pa->value, &end, 10);
			if (!pa->has_value || *end != '\0' || errno ||
			    pa->value[0] < '0' || pa->value[0] > '9') {
				smtp_error(s, "501 5.5.4 Bad SIZE parameter");
				return -1;
			}
			if (size > smtp_relay_size_limit(s)) {
				log_info("%016llx smtp refused reason=message-size "
				    "client=%s size=%llu limit=%llu", s->id, s->addr,
				    size, (unsigned long long)smtp_relay_size_limit(s));
				smtp_error(s, "552 5.3.4 Message size exceeds fixed limit");
				return -1;
			}
			s->tx->flags |= SMTP_TX_HAS_SIZE;
			s->tx->size = size;
			smtp_mail_param_keep(s, SMTP_MAIL_SIZE);
		} else if (strcmp(pa->key, "SMTPUTF8") == 0 && !pa->has_value &&
		    smtp_mail_offer_smtputf8(s)) {
			s->tx->flags |= SMTP_TX_UTF8;
			smtp_mail_param_keep(s, SMTP_MAIL_SMTPUTF8);
		} else if (strcmp(pa->key, "RET") == 0 && smtp_mail_offer_dsn(s) &&
		    pa->has_value && (str_casecmp(pa->value, "FULL") == 0 ||
		    str_casecmp(pa->value, "HDRS") == 0)) {
			s->tx->ret = str_casecmp(pa->value, "FULL") == 0 ? 1 : 2;
			smtp_mail_param_keep(s, SMTP_MAIL_RET);
		} else if (strcmp(pa->key, "ENVID") == 0 && smtp_mail_offer_dsn(s)) {
			/* RFC 3461 4.4: xtext, at most 100 characters. */
			if (!pa->has_value ||
			    strlen(pa->value) >= sizeof s->tx->envid ||
			    !xtext_valid(pa->value)) {
				smtp_error(s, "501 5.5.4 Bad ENVID parameter");
				return -1;
			}
			snprintf(s->tx->envid, sizeof s->tx->envid, "%s", pa->value);
			smtp_mail_param_keep(s, SMTP_MAIL_ENVID);
		} else if (strcmp(pa->key, "AUTH") == 0 && smtp_auth_offered(s)) {
			/*
			 * RFC 4954 5: parse and discard.  The upstream gets no
			 * AUTH= from us: it only trusts what it authenticated.
			 */
			if (!pa->has_value || (strcmp(pa->value, "<>") != 0 &&
			    !xtext_valid(pa->value))) {
				smtp_error(s, "501 5.5.4 Bad AUTH parameter");
				return -1;
			}
		} else if (strcmp(pa->key, "BODY") == 0 && pa->has_value &&
		    (str_casecmp(pa->value, "7BIT") == 0 ||
		    str_casecmp(pa->value, "8BITMIME") == 0)) {
			int eight = str_casecmp(pa->value, "8BITMIME") == 0;

			if (eight && !smtp_mail_offer_8bitmime(s)) {
				smtp_error(s, "555 5.5.4 Unsupported parameter BODY=8BITMIME");
				return -1;
			}
			s->tx->body = eight ? 8 : 7;
			smtp_mail_param_keep(s, SMTP_MAIL_BODY);
		} else {
			smtp_error(s, "555 5.5.4 Unsupported parameter %s",
			    pa->key);
			return -1;
		}
	}
	return 0;
}

/*
 * The reply for a MAIL or RCPT path the parser refused (RFC 3463: 5.1.7
 * bad sender, 5.1.3 bad recipient).  1 if refused, 0 for SMTP_PARSE_OK.
 */
static int
smtp_mail_path_refused(struct smtp_session *s, enum smtp_parse_err e,
    enum smtp_cmd cmd)
{
	const char *esc = cmd == SMTP_CMD_MAIL ? "5.1.7" : "5.1.3";

	switch (e) {
	case SMTP_PARSE_OK:
		return 0;
	case SMTP_PARSE_PATH_TOO_LONG:
		smtp_error(s, "501 %s Error: path too long", esc);
		return 1;
	case SMTP_PARSE_ROUTED:
		if (cmd == SMTP_CMD_RCPT) {
			/* Sender-specified routing is how open relays are abused. */
			smtp_error(s, "554 5.7.1 Error: source routing and %%/! "
			    "addresses are not allowed");
			return 1;
		}
		break;
	case SMTP_PARSE_PARAM_SYNTAX:
	case SMTP_PARSE_TOO_MANY_PARAMS:
		smtp_error(s, "501 5.5.4 Error: bad parameters");
		return 1;
	case SMTP_PARSE_PARAM_DUP:
		smtp_error(s, "501 5.5.4 Error: duplicate parameter");
		return 1;
	case SMTP_PARSE_8BIT:
		smtp_error(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
		return 1;
	default:
		break;
	}
	smtp_error(s, "501 %s Bad %s address syntax", esc,
	    cmd == SMTP_CMD_MAIL ? "sender" : "recipient");
	return 1;
}

/*
 * MAIL's parameters as they passed the checks, "KEY=VALUE KEY", for the
 * milters' MAIL event (Postfix passes the client's ESMTP arguments).
 */
static void
smtp_mail_args_keep(struct smtp_session *s, const struct smtp_path *p)
{
	size_t i, len = 1;
	char *out;

	for (i = 0; i < p->nparams; i++)
		len += strlen(p->params[i].key) + strlen(p->params[i].value) + 2;
	if (p->nparams == 0 || (out = malloc(len)) == NULL)
		return;
	out[0] = '\0';
	for (i = 0; i < p->nparams; i++) {
		if (i > 0)
			strcat(out, " ");
		strcat(out, p->params[i].key);
		if (p->params[i].has_value) {
			strcat(out, "=");
			strcat(out, p->params[i].value);
		}
	}
	s->tx->mail_args = out;
}

int
smtp_mail_cmd_mail(struct smtp_session *s, const char *args)
{
	struct smtp_path p;
	enum smtp_parse_err e;

	if (s->tx != NULL) {
		smtp_error(s, "503 5.5.1 Error: nested MAIL command");
		return SMTP_VERB_OK;
	}
	if (s->flags & SMTP_F_DRAINING) {
		smtp_reply(s, "421 4.3.2 %s Service shutting down",
		    s->cfg->hostname);
		smtp_enter_state(s, SMTP_STATE_QUIT);
		return SMTP_VERB_OK;
	}
	e = smtp_parse_path(args, SMTP_CMD_MAIL, &p);
	if (e == SMTP_PARSE_8BIT && smtp_mail_offer_smtputf8(s))
		e = smtp_parse_path_utf8(args, SMTP_CMD_MAIL, &p);
	if (smtp_mail_path_refused(s, e, SMTP_CMD_MAIL))
		return SMTP_VERB_OK;
	smtp_tx_new(s);
	if (smtp_mail_params(s, &p) == -1) {
		smtp_tx_free(s);
		return SMTP_VERB_OK;
	}
	/* RFC 6531 3.4: a UTF-8 address needs SMTPUTF8 on this MAIL. */
	if (!(s->tx->flags & SMTP_TX_UTF8) && !smtp_mail_is_ascii(p.mailbox)) {
		smtp_tx_free(s);
		smtp_error(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
		return SMTP_VERB_OK;
	}
	if ((s->tx->mail_from = strdup(p.mailbox)) == NULL)
		fatalx("out of memory");
	smtp_mail_args_keep(s, &p);
	/* What is logged for the message counts from here, whatever ends it. */
	clock_gettime(CLOCK_MONOTONIC, &s->tx->start);
	s->tx->msg_bytes = 0;
	snprintf(s->tx->queue_id, sizeof s->tx->queue_id, "%016llx.%lu", s->id,
	    s->messages);
	s->tx->flags &= ~SMTP_TX_MAIL_RETRIED;
	smtp_verb_filter(s, s->tx->mail_from);
	return SMTP_VERB_OK;
}

/* A recipient with its RCPT parameters as relayed (NULL or "": none). */
void
smtp_mail_rcpt_add(struct smtp_session *s, const char *rcpt, const char *params)
{
	char **v;

	if ((v = reallocarray(s->tx->rcpts, s->tx->nrcpts + 1, sizeof *v)) == NULL)
		fatalx("out of memory");
	s->tx->rcpts = v;
	if ((v = reallocarray(s->tx->rcpt_params, s->tx->nrcpts + 1, sizeof *v)) == NULL)
		fatalx("out of memory");
	s->tx->rcpt_params = v;
	if ((s->tx->rcpts[s->tx->nrcpts] = strdup(rcpt)) == NULL ||
	    (params != NULL && params[0] != '\0' &&
	    (s->tx->rcpt_params[s->tx->nrcpts] = strdup(params)) == NULL))
		fatalx("out of memory");
	if (params == NULL || params[0] == '\0')
		s->tx->rcpt_params[s->tx->nrcpts] = NULL;
	s->tx->nrcpts++;
}

/* The policy of a recipient's domain: what its first one fixes. */
const struct config_policy *
smtp_mail_rcpt_policy(const struct smtp_session *s, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');

	return policy_lookup(s->cfg, at ? at + 1 : NULL);
}

/* The first accepted recipient fixes the transaction's policy. */
void
smtp_mail_rcpt_accepted(struct smtp_session *s, const char *rcpt,
    const char *dsn)
{
	if (s->tx->nrcpts == 0)
		s->tx->policy = smtp_mail_rcpt_policy(s, rcpt);
	smtp_mail_rcpt_add(s, rcpt, dsn);
}

static void
smtp_mail_rcpt_proceed(struct smtp_session *s, const struct filter_result *res)
{
	(void)res;
	smtp_relay_rcpt(s);
}

const struct smtp_step smtp_mail_step_rcpt = {
	FILTER_PH_RCPT, "recipient", NULL, smtp_mail_rcpt_proceed
};

/*
 * RCPT parameters: DSN's NOTIFY and ORCPT (RFC 3461 4.1, 4.2) when the
 * upstream takes DSN, re-serialised from what was validated, so nothing
 * the client wrote goes through verbatim.  0 ok, -1 after replying.
 */
static int
smtp_mail_rcpt_params(struct smtp_session *s, const struct smtp_path *p, char *out,
    size_t outlen)
{
	size_t i, used = 0;
	int n;

	out[0] = '\0';
	for (i = 0; i < p->nparams; i++) {
		const struct smtp_param *pa = &p->params[i];
		const char *semi;

		if (!smtp_mail_offer_dsn(s)) {
			smtp_error(s, "555 5.5.4 Unsupported parameter %s", pa->key);
			return -1;
		}
		if (!smtp_relay_has(s, SMTP_EHLO_DSN)) {
			/* Offered at EHLO, gone now (smtp_relay_mail_line). */
			smtp_reply(s, "451 4.3.0 Error: the upstream no longer "
			    "offers DSN, try again later");
			return -1;
		}
		if (strcmp(pa->key, "NOTIFY") == 0 && pa->has_value) {
			if (smtp_parse_notify(pa->value) == -1)
				goto bad;
			n = snprintf(out + used, outlen - used, " NOTIFY=%s", pa->value);
		} else if (strcmp(pa->key, "ORCPT") == 0 && pa->has_value &&
		    (semi = strchr(pa->value, ';')) != NULL && semi > pa->value &&
		    xtext_valid(semi + 1) && strlen(pa->value) <= 500) {
			/* addr-type ";" xtext: the type is an atom */
			for (const char *c = pa->value; c < semi; c++)
				if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
				    (*c >= '0' && *c <= '9') || *c == '-'))
					goto bad;
			n = snprintf(out + used, outlen - used, " ORCPT=%s", pa->value);
		} else
			goto bad;
		if (n < 0 || (size_t)n >= outlen - used)
			goto bad;
		used += (size_t)n;
	}
	return 0;
bad:
	smtp_error(s, "501 5.5.4 Bad DSN parameter");
	return -1;
}

/* Relay control: the upstream trusts us, so we must not be an open relay. */
static int
smtp_mail_rcpt_allowed(struct smtp_session *s, const struct smtp_path *p)
{
	if (p->domain[0] == '\0')	/* <postmaster>: always ours (RFC 5321 4.5.1) */
		return 1;
	if (config_relay_domain(s->cfg, p->domain))
		return 1;
	if (s->auth_id != NULL)		/* RFC 4954: our own authenticated users */
		return 1;
	return netaddr_mask_match(s->cfg->relay_networks,
	    s->cfg->nrelay_networks, (const struct sockaddr *)&s->sa);
}

int
smtp_mail_cmd_rcpt(struct smtp_session *s, const char *args)
{
	struct smtp_path p;
	enum smtp_parse_err e;
	const struct config_policy *pol;
	struct filter_result held;
	char dsn[SMTP_PARAM_VALUE_MAX * 2 + 32];
	int n;

	e = (s->tx->flags & SMTP_TX_UTF8) ?
	    smtp_parse_path_utf8(args, SMTP_CMD_RCPT, &p) :
	    smtp_parse_path(args, SMTP_CMD_RCPT, &p);
	if (smtp_mail_path_refused(s, e, SMTP_CMD_RCPT))
		return SMTP_VERB_OK;
	if (smtp_mail_rcpt_params(s, &p, dsn, sizeof dsn) == -1)
		return SMTP_VERB_OK;
	/*
	 * RCPTs queued to the upstream (smtp_relay.c's pipelined group)
	 * count as accepted here until their replies come: a client can
	 * only hear 452 sooner, never have more recipients or two policies.
	 */
	if (s->tx->nrcpts + s->piped_rcpts >= s->cfg->limits.recipients) {
		/* RFC 5321 4.5.3.1.10: 452, so the client retries the rest later. */
		log_info("%016llx smtp refused reason=recipients client=%s "
		    "rcpt=<%s> limit=%zu", s->id, s->addr, p.mailbox,
		    (size_t)s->cfg->limits.recipients);
		smtp_reply(s, "452 4.5.3 Error: too many recipients");
		return SMTP_VERB_OK;
	}
	if (!smtp_mail_rcpt_allowed(s, &p)) {
		log_info("%016llx smtp reject=relay client=%s rcpt=<%s>", s->id,
		    s->addr, p.mailbox);
		smtp_error(s, "554 5.7.1 <%s>: Relay access denied", p.mailbox);
		return SMTP_VERB_OK;
	}
	pol = policy_lookup(s->cfg, p.domain[0] ? p.domain : NULL);
	/*
	 * What connect, helo and mail found waited for this: acted on with
	 * the recipient's own policy (Postfix's smtpd_delay_reject), before
	 * the policy split, so a recipient refused anyway is told so now.
	 */
	if (filter_session_held(s->fs, pol, &held) != FMX_CONTINUE) {
		s->tx->rcpt_attempts++;
		smtp_filter_refused(s, &held, "recipient");
		return SMTP_VERB_OK;
	}
	/*
	 * One message, one policy: a recipient whose domain has another
	 * policy than the first accepted one must come in its own
	 * transaction; 452 makes the client retry it later (DESIGN.md).
	 */
	if (s->tx->nrcpts + s->piped_rcpts > 0 && s->tx->policy != pol) {
		smtp_reply(s, "452 4.5.3 Error: recipient has a different policy, "
		    "send it in a separate transaction");
		return SMTP_VERB_OK;
	}
	/* LMTP: one recipient per transaction (smtp_relay_rcpt_full). */
	if (smtp_relay_rcpt_full(s)) {
		smtp_reply(s, "452 4.5.3 Error: one recipient per message here, "
		    "send the others in a new transaction");
		return SMTP_VERB_OK;
	}
	s->tx->rcpt_attempts++;
	snprintf(s->pending_rcpt, sizeof s->pending_rcpt, "%s", p.mailbox);
	snprintf(s->pending_dsn, sizeof s->pending_dsn, "%s", dsn);
	n = snprintf(s->pending, sizeof s->pending, "RCPT TO:<%s>%s", p.mailbox,
	    dsn);
	if (n < 0 || (size_t)n >= sizeof s->pending)
		fatalx("smtp_mail_cmd_rcpt: path over limit");
	smtp_enter_state(s, SMTP_STATE_WAIT);
	/* The recipient's own policy applies while its rcpt hooks run. */
	smtp_facts(s);
	s->facts.policy = pol;
	{
		struct filter_args a = { .str = s->pending_rcpt };

		smtp_filter_run(s, s->verb->step, &a);
	}
	return SMTP_VERB_OK;
}
