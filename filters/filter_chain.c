/*
 * filter_chain.c - runs the configured filters for one phase
 *
 * No filter modules are configured yet, so every phase continues.  The
 * session already goes through this funnel at every phase, which is what
 * lets the filter API plug in without reshaping the SMTP state machine.
 */
#include <string.h>

#include "filter_chain.h"

static const char *const filter_phase_names[FILTER_PH_COUNT] = {
	[FILTER_PH_CONNECT] = "connect",
	[FILTER_PH_HELO] = "helo",
	[FILTER_PH_MAIL] = "mail",
	[FILTER_PH_RCPT] = "rcpt",
	[FILTER_PH_DATA] = "data",
	[FILTER_PH_EOM] = "eom",
};

const char *
filter_phase_name(enum filter_phase phase)
{
	if (phase >= FILTER_PH_COUNT)
		return "unknown";
	return filter_phase_names[phase];
}

void
filter_chain_run(enum filter_phase phase, const struct filter_facts *facts,
    filter_done_fn done, void *arg)
{
	struct filter_result res;

	(void)phase;
	(void)facts;
	memset(&res, 0, sizeof res);
	res.verdict = FILTER_CONTINUE;
	done(arg, &res);
}
