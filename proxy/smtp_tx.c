/*
 * smtp_tx.c - one mail transaction: made at MAIL, freed at its end
 *
 * DESCRIPTION
 *	struct smtp_tx (smtp_int.h) holds what belongs to one transaction:
 *	sender, MAIL parameters, recipients, the received message's header
 *	index and counters, the replay position, the header block built at
 *	its end.  s->tx is NULL between transactions, which is what "MAIL
 *	given" means everywhere (smtp_verb_unmet).
 *
 *	smtp_tx_new() makes it when a MAIL passes its syntax checks.  It
 *	ends one of three ways: smtp_tx_done() after the message had its
 *	answer, smtp_tx_reset() when it never completes (RSET, HELO,
 *	STARTTLS, a refused or failed message, the session's end; the
 *	filters hear on_abort), or smtp_tx_free() alone when the MAIL itself
 *	is refused (the filters never saw a transaction).  The spools stay in
 *	the session: their memory goes from one message to the next.
 */
#include <stdlib.h>

#include "filter_chain.h"
#include "log.h"
#include "smtp_int.h"
#include "spool.h"

struct smtp_tx *
smtp_tx_new(struct smtp_session *s)
{
	if (s->tx != NULL)
		fatalx("smtp_tx_new: a transaction is open");
	if ((s->tx = calloc(1, sizeof *s->tx)) == NULL)
		fatalx("out of memory");
	return s->tx;
}

/* Free the transaction, if any, without a word to the filters. */
void
smtp_tx_free(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	size_t i;

	if (tx == NULL)
		return;
	for (i = 0; i < tx->nrcpts; i++) {
		free(tx->rcpts[i]);
		free(tx->rcpt_params[i]);
	}
	free(tx->rcpts);
	free(tx->rcpt_params);
	free(tx->mail_from);
	free(tx->mail_args);
	free(tx->hdrs);
	free(tx->head);
	free(tx->replay_buf);
	if (tx->flags & SMTP_TX_NEWBODY)
		spool_reset(&s->newbody);
	free(tx);
	s->tx = NULL;
}

/*
 * The transaction did not complete (or there is none): a message the
 * chain saw gets on_abort, the transaction goes, the spool is emptied
 * and the message's time bound ends.
 */
void
smtp_tx_reset(struct smtp_session *s)
{
	if (s->fs != NULL)
		filter_session_msg_end(s->fs, s->tx != NULL);
	smtp_tx_free(s);
	spool_reset(&s->spool);
	smtp_data_clock_stop(s);
}

/* The transaction is over (whatever the outcome): back to commands. */
void
smtp_tx_done(struct smtp_session *s)
{
	s->messages++;
	if (s->fs != NULL)
		filter_session_msg_end(s->fs, 0);
	smtp_tx_free(s);	/* so smtp_tx_reset() does not call on_abort */
	smtp_tx_reset(s);
	smtp_resume(s, SMTP_STATE_COMMAND);
}
