/*
 * filter_chain.c - builds the filter chain of a configuration and runs it
 *
 * DESCRIPTION
 *	filter_chain_new() turns the `filters` list of a configuration into
 *	a chain: built-in filters are linked in, modules dlopen()ed through
 *	filter_loader.c, and each instance's init() gets its options (a bad
 *	option value, recorded by filter_opt.c, fails the load with the
 *	filter's FILE:LINE).
 *
 *	One filter_session per SMTP session holds one struct fmx_ctx per
 *	configured filter (the filter's view of the session: private data,
 *	the reply and result it set, whether it is waiting).  A phase runs the
 *	filters in configuration order through filter_run(), a loop that
 *	stops when a hook is pending (FMX_PENDING, or a blocking filter on
 *	filter_pool.c's threads) and is re-entered from resume(), the pool's
 *	completion event or the per-call timeout.  Exactly one of those ends
 *	each call: a generation number on the context makes late answers
 *	harmless.
 *
 *	Each answer becomes an action in one place, filter_decide(): the
 *	policy says what a result or a failure means and whether the filter
 *	runs dry (policy_decide() in policy/policy.c); a failure - bad
 *	verdict, timeout, refused module call - gets the filter's on_error
 *	action (default tempfail, like Postfix's milter_default_action),
 *	never a crash and never a silent accept.  A filter that timed out is
 *	not called again in that session.  Message-level outcomes (tag,
 *	quarantine, discard) accumulate in the session for the end of the
 *	message; connect/helo/mail answers are held for the recipients'
 *	policies (filter_hold(), filter_session_held()).
 *
 *	The api modules call is filter_api.c; the types the three files
 *	share are in filter_int.h.
 *
 *	Every answer (hook verdict, resume(), pool completion, timeout)
 *	passes filter_answered(), which counts it: its duration, its named
 *	result (or a verdict other than continue), and a failure by kind.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "content.h"
#include "dkim.h"
#include "dmarc.h"
#include "dnsbl.h"
#include "filter_builtin.h"
#include "filter_int.h"
#include "filter_loader.h"
#include "greylist.h"
#include "filter_opt.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "policy.h"
#include "ratelimit.h"
#include "refcount.h"
#include "spf.h"

static const char *const filter_phase_names[FILTER_PH_COUNT] = {
	[FILTER_PH_CONNECT] = "connect",
	[FILTER_PH_HELO] = "helo",
	[FILTER_PH_MAIL] = "mail",
	[FILTER_PH_RCPT] = "rcpt",
	[FILTER_PH_DATA] = "data",
	[FILTER_PH_HEADER] = "header",
	[FILTER_PH_EOH] = "eoh",
	[FILTER_PH_BODY] = "body",
	[FILTER_PH_EOM] = "eom",
};

static const char *const filter_verdict_names[FMX_VERDICT_COUNT] = {
	[FMX_CONTINUE] = "continue",
	[FMX_ACCEPT] = "accept",
	[FMX_REJECT] = "reject",
	[FMX_TEMPFAIL] = "tempfail",
	[FMX_DISCARD] = "discard",
	[FMX_QUARANTINE] = "quarantine",
	[FMX_TAG] = "tag",
	[FMX_PENDING] = "pending",
};

/* Built-in filters use the module API; they are just linked in. */
static const struct {
	const char			*name;
	const struct fmx_filter		*(*table)(void);
} filter_builtins[] = {
	{ "content", content_filter },
	{ "spf", spf_filter },
	{ "dkim", dkim_filter },
	{ "dmarc", dmarc_filter },
	{ "dnsbl", dnsbl_filter },
	{ "greylist", greylist_filter },
	{ "ratelimit", ratelimit_filter },
};

static void	filter_run(struct filter_session *);

/* Which configuration is newer (struct filter_call's chain_serial). */
static atomic_ulong filter_chain_serial;

const char *
filter_phase_name(enum filter_phase phase)
{
	return phase < FILTER_PH_COUNT ? filter_phase_names[phase] : "unknown";
}

const char *
filter_verdict_name(enum fmx_verdict v)
{
	return v < FMX_VERDICT_COUNT ? filter_verdict_names[v] : "invalid";
}

/* ---- the chain --------------------------------------------------------- */

static unsigned
filter_ops_phases(const struct fmx_filter *f)
{
	unsigned m = 0;

	m |= f->on_connect ? 1u << FILTER_PH_CONNECT : 0;
	m |= f->on_helo ? 1u << FILTER_PH_HELO : 0;
	m |= f->on_mail ? 1u << FILTER_PH_MAIL : 0;
	m |= f->on_rcpt ? 1u << FILTER_PH_RCPT : 0;
	m |= f->on_data ? 1u << FILTER_PH_DATA : 0;
	m |= f->on_header ? 1u << FILTER_PH_HEADER : 0;
	m |= f->on_eoh ? 1u << FILTER_PH_EOH : 0;
	m |= f->on_body ? 1u << FILTER_PH_BODY : 0;
	m |= f->on_eom ? 1u << FILTER_PH_EOM : 0;
	return m;
}

static void
filter_chain_free(struct filter_chain *ch)
{
	size_t i;

	for (i = 0; i < ch->ninst; i++) {
		struct filter_instance *fi = &ch->inst[i];

		if (fi->initialised && fi->ops->fini != NULL)
			fi->ops->fini(fi->inst);
		if (fi->module != NULL)
			filter_loader_close(fi->module);
	}
	free(ch->inst);
	config_unref(ch->cfg);
	free(ch);
}

/* Prefix err with the "FILE:LINE" of the filter's entry (config.h). */
static void
filter_chain_err_where(const struct config_filter *cf, char *err, size_t errlen)
{
	char msg[512];

	if (cf->where == NULL || errlen == 0)
		return;
	snprintf(msg, sizeof msg, "%s", err);
	snprintf(err, errlen, "%s: %s", cf->where, msg);
}

/*
 * init() one instance.  A bad value an option getter saw is the
 * configuration's fault, not the module's: it fails the load with the
 * option named even if init() went on and returned 0.
 */
static int
filter_chain_init(struct filter_instance *fi, char *err, size_t errlen)
{
	const struct config_filter *cf = fi->cf;
	char msg[FILTER_OPT_ERR_MAX];
	int r = 0;

	filter_opt_begin();
	if (fi->ops->init != NULL)
		r = fi->ops->init(&filter_api, (const char *const *)cf->options,
		    cf->noptions, &fi->inst);
	if (filter_opt_end(msg, sizeof msg) == -1) {
		snprintf(err, errlen, "%s%sfilter %s: %s", cf->where ? cf->where : "",
		    cf->where ? ": " : "", cf->name, msg);
		if (r == 0 && fi->ops->fini != NULL)
			fi->ops->fini(fi->inst);
		return -1;
	}
	if (r != 0) {
		snprintf(err, errlen, "%s: filter %s%s%s: initialisation "
		    "failed (see the log above)", cf->where ? cf->where : "",
		    cf->name, cf->module ? " " : "",
		    cf->module ? cf->module : "");
		return -1;
	}
	fi->initialised = 1;
	return 0;
}

struct filter_chain *
filter_chain_new(struct config *cfg, char *err, size_t errlen)
{
	struct filter_chain *ch;
	size_t i, j;

	if ((ch = calloc(1, sizeof *ch)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	config_ref(cfg);
	ch->cfg = cfg;
	ch->refcount = 1;
	ch->serial = atomic_fetch_add(&filter_chain_serial, 1) + 1;
	if (cfg->nfilters > 0 &&
	    (ch->inst = calloc(cfg->nfilters, sizeof *ch->inst)) == NULL) {
		snprintf(err, errlen, "out of memory");
		filter_chain_free(ch);
		return NULL;
	}
	for (i = 0; i < cfg->nfilters; i++) {
		const struct config_filter *cf = &cfg->filters[i];
		struct filter_instance *fi = &ch->inst[i];

		fi->cf = cf;
		ch->ninst = i + 1;
		if (cf->milter != NULL) {
			/* An external milter: the built-in speaks the protocol. */
			fi->ops = milter_filter();
			ch->daemon_addr = 1;
			if ((fi->inst = milter_inst_new(cf)) == NULL) {
				snprintf(err, errlen, "out of memory");
				filter_chain_free(ch);
				return NULL;
			}
		} else if (cf->module != NULL) {
			if (filter_loader_open(cf->module, &filter_api, &fi->module,
			    err, errlen) == -1) {
				filter_chain_err_where(cf, err, errlen);
				filter_chain_free(ch);
				return NULL;
			}
			fi->ops = filter_loader_table(fi->module);
		} else {
			for (j = 0; j < sizeof filter_builtins / sizeof filter_builtins[0]; j++)
				if (strcmp(filter_builtins[j].name, cf->name) == 0)
					fi->ops = filter_builtins[j].table();
			if (fi->ops == NULL) {
				snprintf(err, errlen, "filter %s: not a built-in filter "
				    "(set module = PATH)", cf->name);
				filter_chain_free(ch);
				return NULL;
			}
			if (filter_loader_check(fi->ops, cf->name, err, errlen) == -1) {
				filter_chain_free(ch);
				return NULL;
			}
		}
		if (filter_chain_init(fi, err, errlen) == -1) {
			filter_chain_free(ch);
			return NULL;
		}
		ch->wants |= filter_ops_phases(fi->ops);
	}
	return ch;
}

void
filter_chain_ref(struct filter_chain *ch)
{
	refcount_hold(&ch->refcount);
}

void
filter_chain_unref(struct filter_chain *ch)
{
	if (ch != NULL && refcount_drop(&ch->refcount))
		filter_chain_free(ch);
}

struct config *
filter_chain_config(const struct filter_chain *ch)
{
	return ch->cfg;
}

int
filter_chain_wants(const struct filter_chain *ch, enum filter_phase phase)
{
	return (ch->wants & (1u << phase)) != 0;
}

int
filter_chain_wants_daemon_addr(const struct filter_chain *ch)
{
	return ch->daemon_addr;
}

/* ---- running a phase ----------------------------------------------------- */

/*
 * One hook call, on the loop thread or a pool thread: it sees the phase
 * and arguments it is given (a pool job's own copies), and the module gets
 * the ctx's handle, never the pointer.
 */
enum fmx_verdict
filter_chain_call_hook(struct filter_session *fs, struct fmx_ctx *c,
    enum filter_phase phase, const struct filter_args *a)
{
	const struct fmx_filter *f = fs->chain->inst[c->idx].ops;
	void *inst = fs->chain->inst[c->idx].inst;
	struct fmx_ctx *h = (struct fmx_ctx *)(uintptr_t)c->handle;
	enum fmx_verdict v = FMX_CONTINUE;

	switch (phase) {
	case FILTER_PH_CONNECT:
		v = f->on_connect(inst, h);
		break;
	case FILTER_PH_HELO:
		v = f->on_helo(inst, h, a->str);
		break;
	case FILTER_PH_MAIL:
		v = f->on_mail(inst, h, a->str);
		break;
	case FILTER_PH_RCPT:
		v = f->on_rcpt(inst, h, a->str);
		break;
	case FILTER_PH_DATA:
		v = f->on_data(inst, h);
		break;
	case FILTER_PH_HEADER:
		v = f->on_header(inst, h, a->str, a->str2);
		break;
	case FILTER_PH_EOH:
		v = f->on_eoh(inst, h);
		break;
	case FILTER_PH_BODY:
		v = f->on_body(inst, h, a->data, a->len);
		break;
	case FILTER_PH_EOM:
		v = f->on_eom(inst, h);
		break;
	default:
		fatalx("filter_chain_call_hook: bad phase %d", phase);
	}
	return v;
}

static int
filter_has_hook(const struct fmx_filter *f, enum filter_phase phase)
{
	return (filter_ops_phases(f) & (1u << phase)) != 0;
}

static enum fmx_verdict
filter_action_verdict(enum config_action a)
{
	switch (a) {
	case CONFIG_ACTION_ACCEPT:
		return FMX_CONTINUE;
	case CONFIG_ACTION_TAG:
		return FMX_TAG;
	case CONFIG_ACTION_QUARANTINE:
		return FMX_QUARANTINE;
	case CONFIG_ACTION_REJECT:
		return FMX_REJECT;
	case CONFIG_ACTION_DISCARD:
		return FMX_DISCARD;
	case CONFIG_ACTION_TEMPFAIL:
	default:
		return FMX_TEMPFAIL;
	}
}

/* How strongly a message-level verdict binds: the strongest one wins. */
static int
filter_verdict_rank(enum fmx_verdict v)
{
	switch (v) {
	case FMX_QUARANTINE:
		return 3;
	case FMX_DISCARD:
		return 2;
	case FMX_TAG:
		return 1;
	default:
		return 0;
	}
}

/*
 * The tag header lists filter=result for each filter that tagged the
 * message (the result is what an admin wants to see, the action is in the
 * policy); "tag" when the filter named no result.  A dry-run entry says
 * what would have happened: "spf=fail (dry-run: would reject)".
 */
static void
filter_tag(struct filter_session *fs, const char *name, const char *result,
    enum fmx_verdict dry)
{
	size_t used = strlen(fs->outcome.tags);

	if (dry != FMX_CONTINUE)
		snprintf(fs->outcome.tags + used, sizeof fs->outcome.tags - used,
		    "%s%s=%s (dry-run: would %s)", used ? ", " : "", name,
		    result[0] ? result : "dry-run", filter_verdict_name(dry));
	else
		snprintf(fs->outcome.tags + used, sizeof fs->outcome.tags - used,
		    "%s%s=%s", used ? ", " : "", name, result[0] ? result : "tag");
}

static void
filter_finish(struct filter_session *fs, enum fmx_verdict v,
    const struct fmx_ctx *c)
{
	struct filter_result res;
	filter_done_fn done = fs->done;

	memset(&res, 0, sizeof res);
	res.verdict = v;
	if (c != NULL) {
		snprintf(res.filter, sizeof res.filter, "%s", filter_ctx_name(c));
		/* A module's reply must match the class of the final verdict. */
		if (c->reply[0] != '\0' &&
		    filter_reply_valid(c->reply, v == FMX_REJECT ? 5 : 4) == 0)
			snprintf(res.reply, sizeof res.reply, "%s", c->reply);
	}
	fs->done = NULL;
	fs->next = fs->n;
	if (done != NULL)
		done(fs->done_arg, &res);
}

/* What one hook answered, before the policy reads it. */
struct filter_answer {
	enum fmx_verdict	 verdict;
	int			 failed;	/* error, timeout, bad verdict: on_error */
	const char		*result;	/* api->set_result(), "" none */
	const char		*reason;
	const char		*reply;		/* api->set_reply(), "" default */
};

/*
 * What an answer means under policy pol.  policy_decide() says which
 * action replaces the hook's verdict (on_error for a failure, the mapping
 * of a named result, or none) and whether the filter runs dry there; this
 * only turns that into a verdict and logs it.  *dry is the refusing
 * verdict dry run turned into a relay, FMX_CONTINUE if none.  quiet logs
 * only refusals (the per-recipient reading of held answers).
 */
static enum fmx_verdict
filter_decide(struct filter_session *fs, size_t idx,
    const struct config_policy *pol, enum filter_phase phase,
    const struct filter_answer *a, enum fmx_verdict *dry, int quiet)
{
	const char *name = fs->chain->inst[idx].cf->name;
	struct policy_decision d;
	enum fmx_verdict v = a->verdict;

	*dry = FMX_CONTINUE;
	d = policy_decide(fs->chain->cfg, pol, name, a->result, a->failed);
	if (d.mapped)
		v = filter_action_verdict(d.action);
	if (a->failed && (!quiet || v == FMX_REJECT || v == FMX_TEMPFAIL))
		log_warn("%016llx filter=%s phase=%s failed, on_error=%s",
		    fs->session_id, name, filter_phase_name(phase),
		    config_action_name(d.action));
	if (a->result[0] != '\0' &&
	    (!quiet || v == FMX_REJECT || v == FMX_TEMPFAIL))
		log_info("%016llx filter=%s phase=%s result=%s policy=%s "
		    "verdict=%s%s%s", fs->session_id, name,
		    filter_phase_name(phase), a->result,
		    pol != NULL ? pol->name : "default", filter_verdict_name(v),
		    a->reason[0] ? " reason=" : "", a->reason);
	/* Dry run spares what would refuse the message, whoever chose it. */
	if (d.dry_run && v != FMX_CONTINUE && v != FMX_ACCEPT && v != FMX_TAG) {
		if (!quiet)
			log_info("%016llx filter=%s dry-run: would %s, relaying",
			    fs->session_id, name, filter_verdict_name(v));
		*dry = v;
		v = FMX_CONTINUE;
	}
	return v;
}

/* Message-level bookkeeping of a decided verdict: tags, quarantine, discard. */
static void
filter_mark(struct filter_session *fs, size_t idx, enum fmx_verdict v,
    const char *result, enum fmx_verdict dry)
{
	const char *name = fs->chain->inst[idx].cf->name;

	if (dry != FMX_CONTINUE)
		filter_tag(fs, name, result, dry);
	if (v != FMX_TAG && v != FMX_QUARANTINE && v != FMX_DISCARD)
		return;
	if (v == FMX_TAG)
		filter_tag(fs, name, result, FMX_CONTINUE);
	if (filter_verdict_rank(v) > filter_verdict_rank(fs->outcome.verdict)) {
		fs->outcome.verdict = v;
		snprintf(fs->outcome.reason, sizeof fs->outcome.reason,
		    "filter %s", name);
	}
}

/* Forget held answers of phase and the phases after it (up to mail). */
static void
filter_held_clear(struct filter_session *fs, enum filter_phase phase)
{
	struct filter_held **hp = &fs->held, *h;

	while ((h = *hp) != NULL) {
		if (h->phase >= phase) {
			*hp = h->next;
			free(h->reply);
			free(h);
		} else
			hp = &h->next;
	}
}

/*
 * Keep a connect, helo or mail answer until the recipients are known.
 * Out of memory cannot drop it silently: it then stands as a failure,
 * whose on_error every recipient gets.
 */
static void
filter_hold(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v,
    int failed)
{
	struct filter_held *h, **tail;

	if ((h = calloc(1, sizeof *h)) == NULL) {
		/* Never a silent accept: every recipient gets a 4xx. */
		log_warn("%016llx filter=%s out of memory holding its verdict",
		    fs->session_id, filter_ctx_name(c));
		fs->held_oom = 1;
		return;
	}
	h->phase = fs->phase;
	h->idx = c->idx;
	h->verdict = v;
	h->failed = failed;
	snprintf(h->result, sizeof h->result, "%s", c->result);
	snprintf(h->reason, sizeof h->reason, "%s", c->reason);
	if (c->reply[0] != '\0')
		h->reply = strdup(c->reply);	/* NULL: the default reply */
	for (tail = &fs->held; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = h;
	log_debug("%016llx filter=%s phase=%s result=%s verdict=%s held for the "
	    "recipients' policy", fs->session_id, filter_ctx_name(c),
	    filter_phase_name(fs->phase), c->result[0] ? c->result : "-",
	    failed ? "error" : filter_verdict_name(v));
}

/*
 * A connect or helo answer acted on at once whose effect is on the
 * messages of the session (filter_held.mark_only): kept, so that every
 * message's commit marks it.  Out of memory drops the mark (the message
 * is relayed untagged) and says so.
 */
static void
filter_hold_mark(struct filter_session *fs, struct fmx_ctx *c,
    enum fmx_verdict v, enum fmx_verdict dry)
{
	struct filter_held *h, **tail;

	if ((h = calloc(1, sizeof *h)) == NULL) {
		log_warn("%016llx filter=%s out of memory keeping its %s",
		    fs->session_id, filter_ctx_name(c), filter_verdict_name(v));
		return;
	}
	h->phase = fs->phase;
	h->idx = c->idx;
	h->verdict = v;
	h->dry = dry;
	h->mark_only = 1;
	snprintf(h->result, sizeof h->result, "%s", c->result);
	for (tail = &fs->held; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = h;
}

/*
 * Read the held answers in chain order with policy pol, as the chain
 * would have read them live: the first refusal or accept ends it.
 * commit records the message-level outcome (once, at DATA).
 */
static enum fmx_verdict
filter_held_apply(struct filter_session *fs, const struct config_policy *pol,
    int commit, struct filter_result *res)
{
	const struct filter_held *h;
	struct filter_answer a;
	enum fmx_verdict v, dry;
	static const char *const what[] = {
		[FILTER_PH_CONNECT] = "connection",
		[FILTER_PH_HELO] = "HELO",
		[FILTER_PH_MAIL] = "sender",
	};

	memset(res, 0, sizeof *res);
	res->verdict = FMX_CONTINUE;
	if (fs->held_oom) {
		res->verdict = FMX_TEMPFAIL;
		snprintf(res->reply, sizeof res->reply,
		    "451 4.3.0 Error: out of memory, try again later");
		return res->verdict;
	}
	for (h = fs->held; h != NULL; h = h->next) {
		if (h->mark_only) {
			if (commit)
				filter_mark(fs, h->idx, h->verdict, h->result,
				    h->dry);
			continue;
		}
		a.verdict = h->verdict;
		a.failed = h->failed;
		a.result = h->result;
		a.reason = h->reason;
		a.reply = h->reply != NULL ? h->reply : "";
		v = filter_decide(fs, h->idx, pol, h->phase, &a, &dry, !commit);
		if (commit)
			filter_mark(fs, h->idx, v, h->result, dry);
		if (v != FMX_ACCEPT && v != FMX_REJECT && v != FMX_TEMPFAIL)
			continue;
		res->verdict = v;
		if (v == FMX_ACCEPT)
			return v;
		snprintf(res->filter, sizeof res->filter, "%s",
		    fs->chain->inst[h->idx].cf->name);
		/* The filter's own reply if it fits the verdict, else say who refused. */
		if (!h->failed && a.reply[0] != '\0' &&
		    filter_reply_valid(a.reply, v == FMX_REJECT ? 5 : 4) == 0)
			snprintf(res->reply, sizeof res->reply, "%s", a.reply);
		else
			snprintf(res->reply, sizeof res->reply, "%s %s %s %s by policy",
			    v == FMX_REJECT ? "550" : "451",
			    v == FMX_REJECT ? "5.7.1" : "4.7.1", what[h->phase],
			    v == FMX_REJECT ? "rejected" : "deferred");
		return v;
	}
	return FMX_CONTINUE;
}

enum fmx_verdict
filter_session_held(struct filter_session *fs, const struct config_policy *pol,
    struct filter_result *res)
{
	enum fmx_verdict v = filter_held_apply(fs, pol, 0, res);

	fs->held_accepted = v == FMX_ACCEPT;
	if (v == FMX_ACCEPT)
		res->verdict = FMX_CONTINUE;
	return res->verdict;
}

/*
 * Turn what a hook returned into what happens: policy mapping of its
 * result, dry-run, message-level bookkeeping.  Returns 1 to go on with the
 * next filter, 0 when the phase ended (done was called).  A connect, helo
 * or mail answer of a delay_reject filter is held for the recipients'
 * policies instead (smtpd_delay_reject); only a plain continue, or an
 * accept that names no result (the same under every policy), acts now.
 */
static int
filter_apply(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v,
    int failed)
{
	const struct config_filter *cf = fs->chain->inst[c->idx].cf;
	struct filter_answer a;
	enum fmx_verdict dry;

	if (failed) {
		c->reply[0] = '\0';
		snprintf(c->result, sizeof c->result, FMX_RESULT_ERROR);
	}
	if (fs->phase <= FILTER_PH_MAIL && cf->delay_reject &&
	    (failed || c->result[0] != '\0' ||
	    (v != FMX_CONTINUE && v != FMX_ACCEPT))) {
		filter_hold(fs, c, v, failed);
		c->result[0] = '\0';
		c->reason[0] = '\0';
		return 1;
	}
	a.verdict = v;
	a.failed = failed;
	a.result = c->result;
	a.reason = c->reason;
	a.reply = c->reply;
	v = filter_decide(fs, c->idx, fs->facts->policy, fs->phase, &a, &dry, 0);
	if (fs->phase < FILTER_PH_MAIL && (dry != FMX_CONTINUE || v == FMX_TAG ||
	    v == FMX_QUARANTINE || v == FMX_DISCARD))
		filter_hold_mark(fs, c, v, dry);
	else
		filter_mark(fs, c->idx, v, c->result, dry);
	c->result[0] = '\0';
	c->reason[0] = '\0';
	switch (v) {
	case FMX_CONTINUE:
	case FMX_TAG:
	case FMX_QUARANTINE:
	case FMX_DISCARD:
		return 1;
	case FMX_ACCEPT:
		fs->msg_accepted = 1;
		filter_finish(fs, FMX_CONTINUE, c);
		return 0;
	case FMX_REJECT:
	case FMX_TEMPFAIL:
		filter_finish(fs, v, c);
		return 0;
	default:
		fatalx("filter_apply: bad verdict %d", v);
	}
}

/*
 * One answer of c's call, counted then applied (filter_apply): the
 * duration since the call began, the result it named (else a verdict
 * other than continue; "error" for a failure), and a failure the chain
 * sees by its kind: "timeout" (the chain's timer), "error" for a call
 * refused, an invalid verdict, a built-in's FILTER_VERDICT_ERROR or the
 * result FMX_RESULT_ERROR.  A failure a built-in marked itself
 * (c->failed: milter.c) was counted by it, with its own kind.  A filter
 * that failed earlier and only gets its on_error again is not
 * answering: filter_run() applies that directly.
 */
static int
filter_answered(struct filter_session *fs, struct fmx_ctx *c,
    enum fmx_verdict v, const char *kind)
{
	const char	*name = filter_ctx_name(c), *result = NULL;
	struct timespec	 now;
	int		 failed = kind != NULL || c->failed;

	if (!failed && v == FILTER_VERDICT_ERROR) {
		kind = "error";		/* the built-in logged why */
	} else if (!failed && ((unsigned)v >= FMX_VERDICT_COUNT ||
	    v == FMX_PENDING)) {
		log_warn("%016llx filter=%s phase=%s returned invalid verdict %d",
		    fs->session_id, name, filter_phase_name(fs->phase), (int)v);
		kind = "error";
	} else if (!failed && strcmp(c->result, FMX_RESULT_ERROR) == 0) {
		kind = "error";		/* the check could not be done */
	}
	failed = failed || kind != NULL;
	clock_gettime(CLOCK_MONOTONIC, &now);
	metrics_observe((double)(now.tv_sec - c->call_start.tv_sec) +
	    (double)(now.tv_nsec - c->call_start.tv_nsec) / 1e9,
	    METRIC_FILTER_DURATION, name);
	if (kind != NULL)
		metrics_inc(METRIC_FILTER_ERRORS, name, kind);
	if (failed)
		result = FMX_RESULT_ERROR;
	else if (c->result[0] != '\0')
		result = c->result;
	else if (v != FMX_CONTINUE)
		result = filter_verdict_name(v);
	if (result != NULL)
		metrics_inc(METRIC_FILTER_RESULTS, name, result);
	return filter_apply(fs, c, v, failed);
}

/*
 * The pending call of c is over (answered, timed out, given up): later
 * answers carry an older generation.  Under the lock, so that a pool
 * thread's api call sees either the live call or none (filter_api_enter).
 */
static void
filter_call_end(struct filter_session *fs, struct fmx_ctx *c)
{
	pthread_mutex_lock(&fs->lock);
	c->waiting = 0;
	c->gen++;
	pthread_mutex_unlock(&fs->lock);
}

static void
filter_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct filter_session *fs = arg;
	struct fmx_ctx *c;

	(void)fd;
	(void)what;
	if (fs->next >= fs->n)
		return;
	c = &fs->ctx[fs->next];
	if (!c->waiting)
		return;
	log_warn("%016llx filter=%s phase=%s timed out after %us",
	    fs->session_id, filter_ctx_name(c), filter_phase_name(fs->phase),
	    fs->chain->inst[c->idx].cf->timeout);
	filter_call_end(fs, c);	/* a late answer is now stale */
	c->failed = 1;		/* never called again in this session */
	if (filter_answered(fs, c, FMX_TEMPFAIL, "timeout"))
		fs->next++;
	filter_run(fs);
}

void
filter_chain_call_done(struct filter_session *fs, struct fmx_ctx *c, enum fmx_verdict v)
{
	filter_call_end(fs, c);
	evtimer_del(fs->timeout);
	if (filter_answered(fs, c, v, NULL))
		fs->next++;
	filter_run(fs);
}

/*
 * The answer a module gave through resume(), from the loop: the module's
 * callback has returned, so what it holds (its msg_data) is not freed
 * under it by the session running on (an RSET pipelined behind).
 */
static void
filter_resumed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct filter_session *fs = arg;
	struct fmx_ctx *c = fs->resumed;

	(void)fd;
	(void)what;
	fs->resumed = NULL;
	if (c == NULL || fs->done == NULL)
		return;
	/* A built-in (milter.c) marks its own failure: on_error, now and later. */
	if (filter_answered(fs, c, fs->resumed_v, NULL))
		fs->next++;
	filter_run(fs);
}

/*
 * resume() for c's pending call: the call ends now (a second answer is
 * refused), the chain goes on from the loop, never inside resume().
 */
void
filter_chain_call_resumed(struct filter_session *fs, struct fmx_ctx *c,
    enum fmx_verdict v)
{
	filter_call_end(fs, c);
	evtimer_del(fs->timeout);
	fs->resumed = c;
	fs->resumed_v = v;
	event_active(fs->resumed_ev, EV_TIMEOUT, 0);
}

static void
filter_run(struct filter_session *fs)
{
	struct timeval tv = { 0 };
	struct fmx_ctx *c;
	const struct filter_instance *fi;
	enum fmx_verdict v;

	if (fs->running || fs->done == NULL)
		return;
	fs->running = 1;
	while (fs->next < fs->n && fs->done != NULL) {
		c = &fs->ctx[fs->next];
		fi = &fs->chain->inst[c->idx];
		if (!filter_has_hook(fi->ops, fs->phase) ||
		    (fs->msg_accepted && fs->phase >= FILTER_PH_MAIL) ||
		    (fs->held_accepted && fs->phase >= FILTER_PH_RCPT)) {
			fs->next++;
			continue;
		}
		/*
		 * A filter that timed out is not called again in this session
		 * (its hook may still be running), but every phase it would
		 * have judged gets its on_error action: skipping it would be a
		 * silent accept.
		 */
		if (c->failed) {
			if (filter_apply(fs, c, FMX_TEMPFAIL, 1))
				fs->next++;
			continue;
		}
		c->reply[0] = '\0';
		c->result[0] = '\0';
		c->resumed = 0;
		c->calls++;
		tv.tv_sec = fi->cf->timeout;
		clock_gettime(CLOCK_MONOTONIC, &c->call_start);
		if (fi->ops->flags & FMX_FLAG_BLOCKING) {
			if (filter_pool_submit(fs, c) == -1) {
				if (filter_answered(fs, c, FMX_TEMPFAIL, "error"))
					fs->next++;
				continue;
			}
			c->waiting = 1;
			evtimer_add(fs->timeout, &tv);
			break;
		}
		c->in_hook = 1;
		v = filter_chain_call_hook(fs, c, fs->phase, &fs->args);
		c->in_hook = 0;
		if (v == FMX_PENDING && c->resumed)
			v = c->resume_verdict;
		else if (c->resumed)
			log_warn("%016llx filter=%s resume inside a hook that "
			    "did not return FMX_PENDING ignored", fs->session_id,
			    filter_ctx_name(c));
		if (v == FMX_PENDING) {
			c->waiting = 1;
			/* 0: a milter bounds each reply with its own timeouts. */
			if (tv.tv_sec > 0)
				evtimer_add(fs->timeout, &tv);
			break;
		}
		if (filter_answered(fs, c, v, NULL))
			fs->next++;
	}
	fs->running = 0;
	if (fs->next >= fs->n && fs->done != NULL)
		filter_finish(fs, FMX_CONTINUE, NULL);
}

void
filter_session_run(struct filter_session *fs, enum filter_phase phase,
    const struct filter_args *args, filter_done_fn done, void *arg)
{
	static const struct filter_args none;
	struct filter_result res;
	enum fmx_verdict v;

	if (fs->done != NULL)
		fatalx("filter_session_run: phase %s while %s runs",
		    filter_phase_name(phase), filter_phase_name(fs->phase));
	/* A phase run again replaces what it and the phases after it held. */
	if (phase <= FILTER_PH_MAIL) {
		filter_held_clear(fs, phase);
		if (phase == FILTER_PH_CONNECT)
			fs->held_oom = 0;
	}
	/* The message's policy is known: held answers count for it now. */
	if (phase == FILTER_PH_DATA) {
		fs->held_accepted = 0;
		v = filter_held_apply(fs, fs->facts->policy, 1, &res);
		if (v == FMX_ACCEPT)
			fs->msg_accepted = 1;
		else if (v == FMX_REJECT || v == FMX_TEMPFAIL) {
			/* Not reached when each recipient passed the same reading. */
			fs->phase = phase;
			if (done != NULL)
				done(arg, &res);
			return;
		}
	}
	fs->phase = phase;
	fs->args = args ? *args : none;
	fs->next = 0;
	fs->done = done;
	fs->done_arg = arg;
	if (phase == FILTER_PH_MAIL)
		fs->msg_open = 1;
	filter_run(fs);
}

/* ---- sessions ------------------------------------------------------------ */

struct filter_session *
filter_session_new(struct filter_chain *ch, struct event_base *base,
    const struct filter_facts *facts, const struct filter_host *host)
{
	struct filter_session *fs;
	pthread_mutexattr_t attr;
	size_t i;

	if ((fs = calloc(1, sizeof *fs)) == NULL)
		return NULL;
	if (ch->ninst > 0 && (fs->ctx = calloc(ch->ninst, sizeof *fs->ctx)) == NULL) {
		free(fs);
		return NULL;
	}
	if ((fs->timeout = evtimer_new(base, filter_timeout_cb, fs)) == NULL ||
	    (fs->resumed_ev = event_new(base, -1, 0, filter_resumed_cb,
	    fs)) == NULL) {
		if (fs->timeout != NULL)
			event_free(fs->timeout);
		free(fs->ctx);
		free(fs);
		return NULL;
	}
	filter_chain_ref(ch);
	fs->chain = ch;
	fs->base = base;
	fs->facts = facts;
	if (host != NULL)
		fs->host = *host;
	fs->n = ch->ninst;
	fs->refs = 1;
	fs->session_id = facts->session_id;
	/* Recursive: an api call may lead to another (a cached DNS answer). */
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&fs->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	for (i = 0; i < fs->n; i++) {
		fs->ctx[i].fs = fs;
		fs->ctx[i].idx = i;
		if (filter_api_handle_new(&fs->ctx[i]) == -1) {
			log_warn("%016llx filter: no room for another session's "
			    "filter contexts", fs->session_id);
			while (i-- > 0)
				filter_api_handle_free(&fs->ctx[i]);
			filter_chain_session_release(fs);
			return NULL;
		}
	}
	return fs;
}

const struct filter_outcome *
filter_session_outcome(struct filter_session *fs)
{
	struct filter_outcome *o = &fs->outcome;

	o->edits = fs->edits;
	o->nedits = fs->nedits;
	o->body = fs->body;
	o->bodylen = fs->bodylen;
	o->add_rcpts = fs->add_rcpts;
	o->add_rcpt_args = fs->add_rcpt_args;
	o->mail_from = fs->chg_from;
	o->mail_from_args = fs->chg_from_args;
	o->nadd_rcpts = fs->nadd_rcpts;
	o->del_rcpts = fs->del_rcpts;
	o->ndel_rcpts = fs->ndel_rcpts;
	return o;
}

size_t
filter_session_auth_results(struct filter_session *fs, char *out, size_t outlen)
{
	struct policy_ar_result r[FILTER_AR_MAX];
	size_t i;

	if (fs->nar == 0)
		return 0;
	for (i = 0; i < fs->nar; i++) {
		r[i].method = fs->ar[i].method;
		r[i].result = fs->ar[i].result;
		r[i].reason = NULL;
		r[i].props = fs->ar[i].props[0] ? fs->ar[i].props : NULL;
	}
	return policy_ar_render(out, outlen, fs->chain->cfg->authserv_id, r, fs->nar);
}

static void
filter_ctx_msg_free(struct fmx_ctx *c)
{
	if (c->msg_data != NULL && c->msg_free != NULL)
		c->msg_free(c->msg_data);
	c->msg_data = NULL;
	c->msg_free = NULL;
}

void
filter_session_msg_end(struct filter_session *fs, int aborted)
{
	size_t i;

	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];
		const struct filter_instance *fi = &fs->chain->inst[i];

		if (c->on_pool)
			continue;	/* its hook still runs; it cleans up on return */
		if (aborted && fs->msg_open && !c->failed && fi->ops->on_abort != NULL)
			fi->ops->on_abort(fi->inst, (struct fmx_ctx *)(uintptr_t)c->handle);
		filter_ctx_msg_free(c);
	}
	/* After on_abort: lookups and timers of the message end with it. */
	filter_api_msg_end(fs);
	for (i = 0; i < fs->nedits; i++) {
		free(fs->edits[i].name);
		free(fs->edits[i].value);
	}
	fs->nedits = 0;
	for (i = 0; i < fs->nadd_rcpts; i++) {
		free(fs->add_rcpts[i]);
		free(fs->add_rcpt_args[i]);
		fs->add_rcpt_args[i] = NULL;
	}
	free(fs->chg_from);
	free(fs->chg_from_args);
	fs->chg_from = fs->chg_from_args = NULL;
	for (i = 0; i < fs->ndel_rcpts; i++)
		free(fs->del_rcpts[i]);
	fs->nadd_rcpts = fs->ndel_rcpts = 0;
	free(fs->body);
	fs->body = NULL;
	fs->bodylen = 0;
	fs->nar = 0;
	for (i = 0; i < fs->nfacts; i++) {
		free(fs->fact_key[i]);
		free(fs->fact_value[i]);
	}
	fs->nfacts = 0;
	fs->msg_open = 0;
	fs->msg_accepted = 0;
	fs->held_accepted = 0;
	filter_held_clear(fs, FILTER_PH_MAIL);
	memset(&fs->outcome, 0, sizeof fs->outcome);
}

void
filter_chain_session_release(struct filter_session *fs)
{
	size_t i;

	if (--fs->refs > 0)
		return;
	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];

		filter_ctx_msg_free(c);
		if (c->conn_data != NULL && c->conn_free != NULL)
			c->conn_free(c->conn_data);
		if (c->timer != NULL)
			event_free(c->timer);
	}
	filter_held_clear(fs, FILTER_PH_CONNECT);
	event_free(fs->timeout);
	event_free(fs->resumed_ev);
	pthread_mutex_destroy(&fs->lock);
	filter_chain_unref(fs->chain);
	free(fs->ctx);
	free(fs);
}

/*
 * Give up the phase in progress: done is never called, and the pending
 * call's answer, whenever and from wherever it comes, is refused.
 */
void
filter_session_cancel(struct filter_session *fs)
{
	size_t i;

	if (fs == NULL)
		return;
	fs->done = NULL;
	fs->next = fs->n;
	evtimer_del(fs->timeout);
	/* A resume() taken but not yet acted on is dropped with the phase. */
	event_del(fs->resumed_ev);
	fs->resumed = NULL;
	for (i = 0; i < fs->n; i++)
		if (fs->ctx[i].waiting)
			filter_call_end(fs, &fs->ctx[i]);
}

void
filter_session_free(struct filter_session *fs)
{
	size_t i;

	if (fs == NULL)
		return;
	/* First: on_abort may call resume() (refused, never run on). */
	filter_session_cancel(fs);
	pthread_mutex_lock(&fs->lock);
	fs->dead = 1;		/* a blocking hook still running is given up */
	pthread_mutex_unlock(&fs->lock);
	filter_session_msg_end(fs, 1);
	/* Outstanding lookups must not call into modules after on_close. */
	filter_api_session_end(fs);
	for (i = 0; i < fs->n; i++) {
		struct fmx_ctx *c = &fs->ctx[i];
		const struct filter_instance *fi = &fs->chain->inst[i];

		if (c->timer != NULL)
			evtimer_del(c->timer);
		if (!c->on_pool && fi->ops->on_close != NULL)
			fi->ops->on_close(fi->inst, (struct fmx_ctx *)(uintptr_t)c->handle);
	}
	/* From now on what modules hold resolves to nothing. */
	for (i = 0; i < fs->n; i++)
		filter_api_handle_free(&fs->ctx[i]);
	filter_chain_session_release(fs);
}
