/*
 * smtp_auth.c - AUTH (RFC 4954), relayed to the upstream
 *
 * DESCRIPTION
 *	On a submission listener (listener auth on), after TLS only, the
 *	EHLO offers the upstream's own mechanisms and every AUTH exchange is
 *	relayed to the upstream line by line: it checks the password, the
 *	proxy never sees one it keeps.  The proxy only reads the name the
 *	client claims (smtp_auth_learn), and that name becomes the session's
 *	identity (s->auth_id) when the upstream answers 235.
 *
 *	SASL response lines are read in SMTP_STATE_AUTH, up to 12288 octets
 *	(RFC 4954 4), and are never logged.  A bad one is answered 501 and
 *	the upstream exchange cancelled with "*", never by hanging up (a QUIT
 *	mid-exchange would count as a failed password against us).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <openssl/evp.h>

#include "log.h"
#include "metrics.h"
#include "smtp_frame.h"
#include "smtp_int.h"
#include "strutil.h"
#include "upstream.h"

/*
 * AUTH: on submission listeners, after TLS only (credentials never cross
 * in the clear), with the mechanisms the upstream offers: it decides.
 */
void
smtp_auth_offer(const struct smtp_session *s, char *out, size_t outlen)
{
	char mechs[128];

	out[0] = '\0';
	if (s->listener == NULL || !s->listener->auth ||
	    s->tls != SMTP_TLS_ACTIVE || s->auth_id != NULL)
		return;
	smtp_relay_auth_mechs(s, mechs, sizeof mechs);
	if (mechs[0] != '\0')
		snprintf(out, outlen, "250-AUTH %.100s\n", mechs);
}

int
smtp_auth_offered(const struct smtp_session *s)
{
	return s->listener != NULL && s->listener->auth &&
	    s->tls == SMTP_TLS_ACTIVE;
}

/*
 * Who logged in, for policy, filters and DKIM signing: the authcid of
 * PLAIN (RFC 4616), the user of LOGIN, the name of CRAM-MD5.  The upstream
 * checked the password; we only read the name.
 */
static void
smtp_auth_learn(struct smtp_session *s, const char *b64)
{
	unsigned char dec[1024];
	const unsigned char *id = dec, *nul;
	size_t len = strlen(b64);
	int n;

	if (len == 0 || len > 4 * (sizeof dec / 3) - 4 || strcmp(b64, "=") == 0)
		return;
	if ((n = EVP_DecodeBlock(dec, (const unsigned char *)b64, (int)len)) < 0)
		return;
	while (len > 0 && b64[len - 1] == '=') {	/* padding decodes to NULs */
		n--;
		len--;
	}
	if (n <= 0)
		return;
	if (str_casecmp(s->auth_mech, "PLAIN") == 0) {
		if ((nul = memchr(dec, '\0', (size_t)n)) == NULL)
			return;
		id = nul + 1;
		if ((nul = memchr(id, '\0', (size_t)(dec + n - id))) == NULL)
			return;
		n = (int)(nul - id);
	} else if (str_casecmp(s->auth_mech, "CRAM-MD5") == 0) {
		if ((nul = memchr(dec, ' ', (size_t)n)) == NULL)
			return;
		n = (int)(nul - dec);
	} else if (str_casecmp(s->auth_mech, "LOGIN") != 0)
		return;
	/* An identity goes into logs and headers: printable, no CR/LF. */
	for (int i = 0; i < n; i++)
		if (id[i] < 0x21 || id[i] > 0x7e)
			return;
	/* Only a claim: it becomes the identity when the upstream says 235. */
	free(s->auth_claim);
	if ((s->auth_claim = strndup((const char *)id, (size_t)n)) == NULL)
		fatalx("out of memory");
}

/* Forget a claim that did not end in 235 (failure, cancel, error). */
static void
smtp_auth_forget(struct smtp_session *s)
{
	free(s->auth_claim);
	s->auth_claim = NULL;
}

static void
smtp_auth_reply(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	if (err != UPSTREAM_OK) {
		smtp_auth_forget(s);
		metrics_inc(METRIC_AUTH, "error");
		smtp_relay_failed(s, err);
		smtp_resume(s, SMTP_STATE_COMMAND);
		return;
	}
	if (r->code == 334) {
		/* A challenge: base64 text, relayed as is (no enhanced code on 3xx). */
		smtp_reply(s, "334 %.1000s", r->text);
		smtp_resume(s, SMTP_STATE_AUTH);
		return;
	}
	if (r->code == 235) {
		s->auth_id = s->auth_claim != NULL ? s->auth_claim : strdup("unknown");
		s->auth_claim = NULL;
		if (s->auth_id == NULL)
			fatalx("out of memory");
		log_info("%016llx smtp auth=ok mech=%s user=%s client=%s", s->id,
		    s->auth_mech, s->auth_id, s->addr);
		metrics_inc(METRIC_AUTH, "success");
	} else {
		smtp_auth_forget(s);
		log_info("%016llx smtp auth=failed mech=%s code=%d client=%s",
		    s->id, s->auth_mech, r->code, s->addr);
		metrics_inc(METRIC_AUTH, "failure");
		s->errors++;
	}
	smtp_chat_upstream(s, r, "2.7.0");
	smtp_resume(s, SMTP_STATE_COMMAND);
}

int
smtp_auth_cmd(struct smtp_session *s, const char *args)
{
	char offer[160];
	const char *sp;
	int n;

	smtp_auth_offer(s, offer, sizeof offer);
	if (offer[0] == '\0' && s->auth_id == NULL) {
		smtp_error(s, "502 5.5.1 Error: command not implemented");
		return SMTP_VERB_OK;
	}
	if (s->auth_id != NULL) {
		smtp_error(s, "503 5.5.1 Error: already authenticated");
		return SMTP_VERB_OK;
	}
	if (s->tx != NULL) {
		smtp_error(s, "503 5.5.1 Error: AUTH not allowed in a mail transaction");
		return SMTP_VERB_OK;
	}
	sp = strchr(args, ' ');
	n = sp ? (int)(sp - args) : (int)strlen(args);
	if (n == 0 || n >= (int)sizeof s->auth_mech)
		return SMTP_VERB_SYNTAX;
	snprintf(s->auth_mech, sizeof s->auth_mech, "%.*s", n, args);
	s->auth_step = 0;
	if (sp != NULL)
		smtp_auth_learn(s, sp + 1);
	snprintf(s->pending, sizeof s->pending, "AUTH %s", args);
	s->pending_cb = smtp_auth_reply;
	smtp_enter_state(s, SMTP_STATE_WAIT);
	smtp_relay_mail_start(s);
	return SMTP_VERB_OK;
}

/*
 * The upstream's answer to our "*": the client already has its 501.  A
 * 235 or 334 to "*" is a protocol error (upstream.c), the connection gone.
 */
static void
smtp_auth_cancelled(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct smtp_session *s = arg;

	(void)r;
	if (err != UPSTREAM_OK)
		smtp_relay_close(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
}

/* One SASL response line from the client (up to RFC 4954's 12288 octets). */
int
smtp_auth_input(struct smtp_session *s)
{
	char *line;
	size_t len;
	enum smtp_line kind;

	if ((line = malloc(SMTP_AUTH_LINE_MAX + 1)) == NULL)
		fatalx("out of memory");
	kind = smtp_frame_line(bufferevent_get_input(s->bev), &s->skipping, line,
	    SMTP_AUTH_LINE_MAX, &len);
	if (kind == SMTP_LINE_NONE) {
		free(line);
		return 0;
	}
	if (kind != SMTP_LINE_OK || s->dl == NULL) {
		free(line);
		smtp_auth_forget(s);
		smtp_error(s, "501 5.5.2 Error: bad SASL response");
		if (s->state == SMTP_STATE_QUIT)
			return 1;
		/*
		 * Cancel the exchange upstream with "*" (RFC 4954 4) rather
		 * than hanging up mid-exchange: a QUIT there would be taken
		 * as a (wrong) password and counted against our address.
		 */
		smtp_enter_state(s, SMTP_STATE_WAIT);
		if (smtp_relay_auth(s, "*", smtp_auth_cancelled) == -1)
			smtp_enter_state(s, SMTP_STATE_COMMAND);
		return 1;
	}
	line[len - 2] = '\0';
	if (s->auth_step++ == 0 && str_casecmp(s->auth_mech, "LOGIN") == 0)
		smtp_auth_learn(s, line);
	else if (s->auth_step == 1 && str_casecmp(s->auth_mech, "LOGIN") != 0)
		smtp_auth_learn(s, line);
	smtp_enter_state(s, SMTP_STATE_WAIT);
	if (smtp_relay_auth(s, line, smtp_auth_reply) == -1) {
		/* A backend without AUTH (never offered it): nothing to relay to. */
		smtp_auth_forget(s);
		smtp_reply(s, "502 5.5.1 Error: command not implemented");
		smtp_enter_state(s, SMTP_STATE_COMMAND);
	}
	free(line);
	return 1;
}
