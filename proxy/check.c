/*
 * check.c - `frontmx check`: the whole filter chain and policy, offline,
 * on one message
 *
 * SYNOPSIS
 *	frontmx check -c FILE [--dns HOST@PORT] --ip ADDR [--helo NAME]
 *	    [--from ADDR] [--rcpt ADDR]... [MESSAGE|-]
 *
 * DESCRIPTION
 *	The message goes through the daemon's own SMTP session code over a
 *	socketpair: same framing, same relay control, same filters, same
 *	policy, same header rendering.  Only delivery differs: the session
 *	delivers through the check backend (deliver_check.c, handed to it
 *	as its smtp_host's struct deliver_override), which reports what would
 *	have left.  So what `check` says is what the daemon does, by
 *	construction.
 *
 *	Output: the header fields the proxy would add, then
 *	"verdict: ACTION SMTP-REPLY".  Exit 0 relay (accept, tag), 2 reject,
 *	3 tempfail, 4 quarantine or discard, 64 usage, 78 configuration.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "check.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "filter_chain.h"
#include "limit.h"
#include "log.h"
#include "redis_client.h"
#include "runtime.h"
#include "smtp_reply.h"
#include "smtp_session.h"
#include "worker.h"

#define CHECK_RCPTS_MAX		100
#define CHECK_MESSAGE_MAX	(64u * 1024 * 1024)

enum check_exit {
	CHECK_EXIT_RELAY = 0,
	CHECK_EXIT_REJECT = 2,
	CHECK_EXIT_TEMPFAIL = 3,
	CHECK_EXIT_HELD = 4,		/* quarantine or discard */
	CHECK_EXIT_USAGE = 64,
	CHECK_EXIT_CONFIG = 78
};

/* The client side of the dialogue, one step per expected reply. */
enum check_step {
	CHECK_STEP_GREETING = 0,
	CHECK_STEP_EHLO,
	CHECK_STEP_MAIL,
	CHECK_STEP_RCPT,
	CHECK_STEP_DATA,
	CHECK_STEP_DOT,
	CHECK_STEP_QUIT,
	CHECK_STEP_DONE
};

struct check_state {
	struct event_base	*base;
	struct bufferevent	*bev;
	enum check_step		 step;
	const char		*helo;
	const char		*from;
	const char		*rcpts[CHECK_RCPTS_MAX];
	size_t			 nrcpts;
	size_t			 rcpt_i;
	size_t			 rcpts_ok;
	char			*message;	/* CRLF, dot-stuffed, with the final dot */
	size_t			 messagelen;
	struct smtp_reply	 reply;
	char			 last_reply[1024];	/* the reply that decided */
	char			 action[16];
	char			*added;
	int			 failed;
};

/* To stdout when asked for (--help, exit 0), else to stderr (exit 64). */
static void
check_usage(FILE *fp)
{
	fprintf(fp,
	    "usage: frontmx check -c FILE [--dns HOST@PORT] --ip ADDR [--helo NAME]\n"
	    "           [--from ADDR] [--rcpt ADDR]... [MESSAGE|-]\n"
	    "Runs the filter chain and policy on one message (DNS is real) and prints\n"
	    "the header fields frontmx would add, then 'verdict: ACTION SMTP-REPLY'.\n"
	    "Exit: 0 relay (accept/tag), 2 reject, 3 tempfail, 4 quarantine/discard,\n"
	    "64 usage error, 78 configuration error.\n");
}

/* Read the message and turn it into DATA content: CRLF lines, dot-stuffed. */
static int
check_read_message(struct check_state *cs, const char *path)
{
	FILE *fp = stdin;
	char *raw = NULL, *out;
	size_t len = 0, cap = 0, i, o = 0;
	int bol = 1;

	if (path != NULL && strcmp(path, "-") != 0 && (fp = fopen(path, "rb")) == NULL) {
		fprintf(stderr, "frontmx check: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			if (cap > CHECK_MESSAGE_MAX || (out = realloc(raw, cap)) == NULL) {
				fprintf(stderr, "frontmx check: message too large\n");
				free(raw);
				return -1;
			}
			raw = out;
		}
		i = fread(raw + len, 1, cap - len, fp);
		if (i == 0)
			break;
		len += i;
	}
	if (fp != stdin)
		fclose(fp);
	/* Worst case every byte is an LF that gains a CR or a dot: 3x, plus the dot. */
	if ((out = malloc(len * 3 + 8)) == NULL) {
		free(raw);
		return -1;
	}
	/* Files on disk use LF; a lone LF becomes CRLF, an existing CRLF stays. */
	for (i = 0; i < len; i++) {
		if (bol && raw[i] == '.')
			out[o++] = '.';
		if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
			out[o++] = '\r';
		out[o++] = raw[i];
		bol = raw[i] == '\n';
	}
	if (!bol) {
		out[o++] = '\r';
		out[o++] = '\n';
	}
	memcpy(out + o, ".\r\n", 3);
	o += 3;
	free(raw);
	cs->message = out;
	cs->messagelen = o;
	return 0;
}

/* One command line: verb, then an optional argument exactly as given. */
static void
check_send(struct check_state *cs, const char *verb, const char *arg)
{
	struct evbuffer *out = bufferevent_get_output(cs->bev);

	evbuffer_add(out, verb, strlen(verb));
	if (arg != NULL)
		evbuffer_add(out, arg, strlen(arg));
	evbuffer_add(out, "\r\n", 2);
}

static void
check_mail(struct check_state *cs)
{
	char line[600];

	snprintf(line, sizeof line, "MAIL FROM:<%.512s>", cs->from);
	check_send(cs, line, NULL);
}

static void
check_rcpt(struct check_state *cs)
{
	char line[600];

	snprintf(line, sizeof line, "RCPT TO:<%.512s>", cs->rcpts[cs->rcpt_i++]);
	check_send(cs, line, NULL);
}

static void
check_decide(struct check_state *cs, const char *action)
{
	if (cs->action[0] == '\0')
		snprintf(cs->action, sizeof cs->action, "%s", action);
}

static void
check_keep_reply(struct check_state *cs)
{
	char *nl;

	snprintf(cs->last_reply, sizeof cs->last_reply, "%d %.1000s",
	    cs->reply.code, cs->reply.text);
	while ((nl = strchr(cs->last_reply, '\n')) != NULL)
		*nl = ' ';
}

/* A refusal ends the check: 5xx reject, 4xx tempfail. */
static int
check_refused(struct check_state *cs)
{
	if (cs->reply.code / 100 == 2 || cs->reply.code / 100 == 3)
		return 0;
	check_keep_reply(cs);
	check_decide(cs, cs->reply.code / 100 == 5 ? "reject" : "tempfail");
	cs->step = CHECK_STEP_QUIT;
	check_send(cs, "QUIT", NULL);
	return 1;
}

static void
check_next(struct check_state *cs)
{
	switch (cs->step) {
	case CHECK_STEP_GREETING:
		if (check_refused(cs))
			return;
		cs->step = CHECK_STEP_EHLO;
		check_send(cs, "EHLO ", cs->helo);
		break;
	case CHECK_STEP_EHLO:
		if (check_refused(cs))
			return;
		cs->step = CHECK_STEP_MAIL;
		check_mail(cs);
		break;
	case CHECK_STEP_MAIL:
		if (check_refused(cs))
			return;
		cs->step = CHECK_STEP_RCPT;
		check_rcpt(cs);
		break;
	case CHECK_STEP_RCPT:
		/* Several recipients: like a client, go on with those accepted. */
		if (cs->reply.code / 100 == 2)
			cs->rcpts_ok++;
		else
			check_keep_reply(cs);
		if (cs->rcpt_i < cs->nrcpts) {
			check_rcpt(cs);
			break;
		}
		if (cs->rcpts_ok == 0) {
			check_decide(cs, cs->reply.code / 100 == 5 ? "reject" : "tempfail");
			cs->step = CHECK_STEP_QUIT;
			check_send(cs, "QUIT", NULL);
			break;
		}
		cs->last_reply[0] = '\0';
		cs->step = CHECK_STEP_DATA;
		check_send(cs, "DATA", NULL);
		break;
	case CHECK_STEP_DATA:
		if (check_refused(cs))
			return;
		cs->step = CHECK_STEP_DOT;
		bufferevent_write(cs->bev, cs->message, cs->messagelen);
		break;
	case CHECK_STEP_DOT:
		if (!check_refused(cs)) {
			check_keep_reply(cs);
			check_decide(cs, "accept");	/* the session's report refines it */
			cs->step = CHECK_STEP_QUIT;
			check_send(cs, "QUIT", NULL);
		}
		break;
	case CHECK_STEP_QUIT:
		cs->step = CHECK_STEP_DONE;
		event_base_loopexit(cs->base, NULL);
		break;
	default:
		break;
	}
}

static void
check_readcb(struct bufferevent *bev, void *arg)
{
	struct check_state *cs = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n;
	char *line;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		enum smtp_reply_status st = smtp_reply_feed(&cs->reply, line, n);

		free(line);
		if (st == SMTP_REPLY_MORE)
			continue;
		if (st == SMTP_REPLY_ERROR) {
			fprintf(stderr, "frontmx check: malformed reply from the session: %s\n", cs->reply.error ? cs->reply.error : "?");
			cs->failed = 1;
			event_base_loopexit(cs->base, NULL);
			return;
		}
		check_next(cs);
		smtp_reply_init(&cs->reply);
	}
}

static void
check_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct check_state *cs = arg;

	(void)bev;
	(void)what;
	if (cs->step != CHECK_STEP_DONE && cs->action[0] == '\0')
		cs->failed = 1;
	event_base_loopexit(cs->base, NULL);
}

/* deliver_check.c tells us what the session would have delivered. */
static void
check_report(void *arg, const struct deliver_check_report *r)
{
	struct check_state *cs = arg;

	snprintf(cs->action, sizeof cs->action, "%s", r->action);
	free(cs->added);
	if ((cs->added = malloc(r->addedlen + 1)) == NULL)
		fatalx("out of memory");
	memcpy(cs->added, r->added, r->addedlen);
	cs->added[r->addedlen] = '\0';
}

static int
check_sockaddr(const char *ip, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(49152);
		*len = sizeof *s4;
		return 0;
	}
	if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(49152);
		*len = sizeof *s6;
		return 0;
	}
	return -1;
}

static int
check_exit_code(const char *action)
{
	if (strcmp(action, "accept") == 0 || strcmp(action, "tag") == 0)
		return CHECK_EXIT_RELAY;
	if (strcmp(action, "reject") == 0)
		return CHECK_EXIT_REJECT;
	if (strcmp(action, "tempfail") == 0)
		return CHECK_EXIT_TEMPFAIL;
	return CHECK_EXIT_HELD;
}

/* What the command line asked for. */
struct check_args {
	const char	*file;
	const char	*ip;
	const char	*dns;
	const char	*message;
};

/* The options into cs and a; 0 go on, else the exit code (-1: help, 0). */
static int
check_options(int argc, char *argv[], struct check_state *cs,
    struct check_args *a)
{
	static const struct option longopts[] = {
		{ "dns", required_argument, NULL, 'd' },
		{ "ip", required_argument, NULL, 'i' },
		{ "helo", required_argument, NULL, 'e' },
		{ "from", required_argument, NULL, 'f' },
		{ "rcpt", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			a->file = optarg;
			break;
		case 'd':
			a->dns = optarg;
			break;
		case 'i':
			a->ip = optarg;
			break;
		case 'e':
			cs->helo = optarg;
			break;
		case 'f':
			cs->from = optarg;
			break;
		case 'r':
			if (cs->nrcpts == CHECK_RCPTS_MAX) {
				fprintf(stderr, "frontmx check: too many --rcpt\n");
				return CHECK_EXIT_USAGE;
			}
			cs->rcpts[cs->nrcpts++] = optarg;
			break;
		case 'h':
			check_usage(stdout);
			return -1;
		default:
			check_usage(stderr);
			return CHECK_EXIT_USAGE;
		}
	}
	if (a->file == NULL || a->ip == NULL || optind + 1 < argc) {
		check_usage(stderr);
		return CHECK_EXIT_USAGE;
	}
	a->message = optind < argc ? argv[optind] : "-";
	if (cs->nrcpts == 0)
		cs->rcpts[cs->nrcpts++] = "postmaster";
	return 0;
}

/*
 * The configuration, DNS (--dns replaces dns.forward, as if the file had
 * said so) and the filter chain; NULL after saying why, *rc the exit code.
 */
static struct filter_chain *
check_chain(const struct check_args *a, int *rc)
{
	struct filter_chain *ch;
	struct config *cfg;
	char err[CONFIG_ERR_MAX];

	log_init(0, getenv("FRONTMX_CHECK_VERBOSE") != NULL);
	*rc = CHECK_EXIT_CONFIG;
	if ((cfg = config_load(a->file, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return NULL;
	}
	if (a->dns != NULL) {
		while (cfg->ndns_forward > 0)
			free(cfg->dns_forward[--cfg->ndns_forward]);
		free(cfg->dns_forward);
		if ((cfg->dns_forward = calloc(1, sizeof *cfg->dns_forward)) == NULL ||
		    (cfg->dns_forward[0] = strdup(a->dns)) == NULL)
			fatalx("out of memory");
		cfg->ndns_forward = 1;
	}
	if (dns_configure(cfg->dns_forward, cfg->ndns_forward,
	    cfg->timeouts.dns) == -1) {
		fprintf(stderr, "frontmx check: bad DNS server %s\n",
		    a->dns ? a->dns : "");
		config_unref(cfg);
		*rc = CHECK_EXIT_USAGE;
		return NULL;
	}
	dns_install();
	ch = filter_chain_new(cfg, err, sizeof err);
	config_unref(cfg);
	if (ch == NULL)
		fprintf(stderr, "%s\n", err);
	return ch;
}

/*
 * The daemon's own session over a socketpair, delivering through the
 * check backend (deliver_check.c) instead of upstream.address: nothing
 * leaves, check_report() hears what would have.  -1 if it cannot start.
 */
static int
check_session(struct check_state *cs, struct filter_chain *ch,
    const struct sockaddr_storage *ss, socklen_t sslen)
{
	struct deliver_check dc = { .fn = check_report, .arg = cs };
	struct deliver_override o = { .ops = &deliver_check_ops, .arg = &dc };
	struct smtp_host host;
	struct runtime *rt;
	int sv[2];

	/* No TLS contexts: the check session has no listener. */
	if ((rt = runtime_from_chain(ch)) == NULL ||
	    filter_pool_start(2, 16) == -1 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1) {
		fprintf(stderr, "frontmx check: %s\n", strerror(errno));
		runtime_unref(rt);
		return -1;
	}
	worker_runtime_set(rt);
	runtime_ref(rt);
	/*
	 * The session may close first (a connection refused at connect
	 * closes after its greeting): our QUIT then meets a closed socket,
	 * an EPIPE to handle, not a signal that kills the check before its
	 * verdict.  The daemon ignores SIGPIPE too (main.c).
	 */
	signal(SIGPIPE, SIG_IGN);
	memset(&host, 0, sizeof host);
	TAILQ_INIT(&host.sessions);
	host.deliver = &o;
	host.base = cs->base = event_base_new();
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	if (limit_conn_acquire((const struct sockaddr *)ss, runtime_config(rt)) == -1)
		fatalx("check: connection limit");
	smtp_session_start(&host, sv[0], (const struct sockaddr *)ss, sslen, rt,
	    SIZE_MAX);
	cs->bev = bufferevent_socket_new(cs->base, sv[1], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(cs->bev, check_readcb, NULL, check_eventcb, cs);
	bufferevent_enable(cs->bev, EV_READ | EV_WRITE);
	smtp_reply_init(&cs->reply);
	event_base_dispatch(cs->base);

	bufferevent_free(cs->bev);
	/* Let the session see the close and free itself. */
	event_base_loop(cs->base, EVLOOP_NONBLOCK);
	smtp_session_free_all(&host);
	redis_client_release();
	event_base_free(cs->base);
	worker_runtime_set(NULL);
	filter_pool_stop();
	dns_shutdown();
	return 0;
}

/* The verdict on stdout; the exit code. */
static int
check_print(const struct check_state *cs)
{
	if (cs->failed || cs->action[0] == '\0') {
		fprintf(stderr, "frontmx check: the session ended unexpectedly\n");
		return CHECK_EXIT_CONFIG;
	}
	/* The fields as a terminal shows them: LF line ends. */
	for (size_t i = 0; cs->added != NULL && cs->added[i] != '\0'; i++)
		if (cs->added[i] != '\r')
			putchar(cs->added[i]);
	printf("verdict: %s %s\n", cs->action, cs->last_reply);
	return check_exit_code(cs->action);
}

int
check_main(int argc, char *argv[])
{
	struct check_state cs;
	struct check_args a;
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct filter_chain *ch;
	int rc;

	memset(&cs, 0, sizeof cs);
	memset(&a, 0, sizeof a);
	cs.helo = "check.invalid";
	cs.from = "";
	if ((rc = check_options(argc, argv, &cs, &a)) != 0)
		return rc == -1 ? 0 : rc;
	if (check_sockaddr(a.ip, &ss, &sslen) == -1) {
		fprintf(stderr, "frontmx check: --ip %s: not an IP address\n", a.ip);
		return CHECK_EXIT_USAGE;
	}
	if (check_read_message(&cs, a.message) == -1)
		return CHECK_EXIT_USAGE;
	if ((ch = check_chain(&a, &rc)) != NULL)
		rc = check_session(&cs, ch, &ss, sslen) == -1 ?
		    CHECK_EXIT_CONFIG : check_print(&cs);
	free(cs.message);
	free(cs.added);
	return rc;
}
