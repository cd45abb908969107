/*
 * main.c - frontmx: command line, signals, start and stop of the workers
 *
 * SYNOPSIS
 *	frontmx [-s] [-v] -c FILE	run in the foreground
 *	frontmx -t -c FILE		check the configuration and exit
 *
 * DESCRIPTION
 *	Signals are blocked in every thread and taken synchronously here with
 *	sigwait(), so reload and drain run in plain thread context, never in a
 *	signal handler.  SIGHUP loads the file again: a bad file is logged and
 *	the old configuration stays; a good one serves sessions accepted from
 *	then on, while sessions in flight finish on the one they started with.
 *	SIGTERM/SIGINT stop accepting and drain (worker.c).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/crypto.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include "check.h"
#include "config.h"
#include "deliver.h"
#include "dns.h"
#include "filter_chain.h"
#include "frontmx_filter.h"
#include "log.h"
#include "milter_listen.h"
#include "metrics.h"
#include "metrics_http.h"
#include "runtime.h"
#include "upstream.h"
#include "version.h"
#include "worker.h"

#define MAIN_WORKERS_MAX	64
#define MAIN_POOL_THREADS	4	/* for filters that declare FMX_FLAG_BLOCKING */
#define MAIN_POOL_QUEUE		1024

static void
main_usage(FILE *fp)
{
	fprintf(fp,
	    "usage: frontmx [-s] [-v] -c FILE      run in the foreground\n"
	    "       frontmx -t -c FILE             check the configuration\n"
	    "       frontmx -V                     version\n"
	    "       frontmx check -c FILE --ip ADDR [--helo NAME] [--from ADDR]\n"
	    "               [--rcpt ADDR]... [--dns HOST@PORT] [MESSAGE|-]\n"
	    "                                      run the filters and policy on one\n"
	    "                                      message (see frontmx check --help)\n"
	    "\n"
	    "  -c FILE   configuration file (libconfig syntax), e.g. conf/frontmx.conf\n"
	    "  -t        check FILE and exit: 0 if good, else FILE:LINE: error and 1\n"
	    "  -s        log to syslog (facility mail) instead of stderr\n"
	    "  -v        verbose: log every command and reply (debug)\n"
	    "  -h        this help\n"
	    "  -V        the version, the filter API it serves and the libraries it runs on\n"
	    "\n"
	    "Signals: SIGHUP reloads FILE (a bad file keeps the running configuration);\n"
	    "SIGTERM/SIGINT stop accepting, let sessions finish within\n"
	    "timeouts.shutdown_grace, then exit 0.\n");
}

/*
 * What a bug report needs: this build's version, the module API a module
 * must be built against, and the versions of the libraries actually
 * loaded (they can differ from the headers built against).
 */
static void
main_version(void)
{
	printf("frontmx %s\n", FRONTMX_VERSION);
	printf("filter API %d.%d\n", FMX_ABI_MAJOR, FMX_ABI_MINOR);
	printf("libevent %s, %s\n", event_get_version(),
	    OpenSSL_version(OPENSSL_VERSION));
}

/* 10,000 concurrent sessions need twice as many descriptors. */
static void
main_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void
main_reload(const char *file, struct worker *workers, unsigned nworkers)
{
	char err[CONFIG_ERR_MAX];
	struct runtime *rt;
	unsigned i;

	if ((rt = runtime_load(file, err, sizeof err)) == NULL) {
		log_warn("reload failed, keeping the running configuration: %s",
		    err);
		metrics_inc(METRIC_CONFIG_RELOADS, "failed");
		return;
	}
	/*
	 * New connections take the new settings of their socket's address
	 * at once; each worker then binds new addresses and closes the
	 * ones no longer listed (worker.c).
	 */
	worker_runtime_set(rt);
	for (i = 0; i < nworkers; i++)
		worker_reload(&workers[i]);
	milter_listen_reload(runtime_config(rt));
	metrics_http_reload(runtime_config(rt));
	metrics_inc(METRIC_CONFIG_RELOADS, "ok");
	log_info("configuration reloaded from %s", file);
	/* The upstream (or its address) may have changed: ask it now. */
	worker_probe_kick();
}

/* What the command line asked for. */
struct main_opts {
	const char	*file;
	int		 check;		/* -t */
	int		 use_syslog;	/* -s */
	int		 verbose;	/* -v */
};

/* Parse the daemon's options: -1 to go on, else the exit status. */
static int
main_options(int argc, char *argv[], struct main_opts *o)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int	opt;

	memset(o, 0, sizeof *o);
	while ((opt = getopt_long(argc, argv, "c:hstvV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'V':
			main_version();
			return 0;
		case 'c':
			o->file = optarg;
			break;
		case 'h':
			main_usage(stdout);
			return 0;
		case 's':
			o->use_syslog = 1;
			break;
		case 't':
			o->check = 1;
			break;
		case 'v':
			o->verbose = 1;
			break;
		default:
			main_usage(stderr);
			return 64;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "frontmx: unexpected argument '%s'\n",
		    argv[optind]);
		main_usage(stderr);
		return 64;
	}
	if (o->file == NULL) {
		main_usage(stderr);
		return 64;
	}
	return -1;
}

/*
 * Process-wide set-up before any thread exists: libevent locking, the
 * descriptor limit, SIGPIPE ignored, and HUP/TERM/INT blocked so that
 * every thread inherits the mask and only main_wait() takes them.
 */
static int
main_process_setup(sigset_t *set)
{
	if (evthread_use_pthreads() == -1) {
		log_warn("libevent has no pthreads support");
		return -1;
	}
	main_raise_nofile();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(set);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	return 0;
}

/* Resolver, filter thread pool, upstream probe, then the workers. */
static int
main_start(struct runtime *rt, struct worker *workers, unsigned *nworkers)
{
	const struct config	*cfg = runtime_config(rt);
	char			 err[CONFIG_ERR_MAX];
	long			 ncpu;
	unsigned		 i;

	/* XXX dns.forward is read once: a change needs a restart. */
	if (dns_configure(cfg->dns_forward, cfg->ndns_forward,
	    cfg->timeouts.dns) == -1) {
		log_warn("dns: bad forward list");
		return -1;
	}
	dns_install();
	if (filter_pool_start(MAIN_POOL_THREADS, MAIN_POOL_QUEUE) == -1) {
		log_warn("cannot start the filter thread pool");
		return -1;
	}
	if (deliver_probe(cfg, runtime_client_ctx(rt)) == -1)
		log_warn("upstream %s not reachable at start; probing it until "
		    "it answers", cfg->upstream_address);
	worker_runtime_set(rt);

	*nworkers = cfg->workers;
	if (*nworkers == 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		*nworkers = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	if (*nworkers > MAIN_WORKERS_MAX)
		*nworkers = MAIN_WORKERS_MAX;
	for (i = 0; i < *nworkers; i++) {
		if (worker_start(&workers[i], i, cfg) == -1) {
			log_warn("cannot start worker %u", i);
			return -1;
		}
	}
	if (milter_listen_start(cfg) == -1)
		return -1;
	if (metrics_http_start(cfg, err, sizeof err) == -1) {
		log_warn("%s", err);
		return -1;
	}
	log_info("frontmx started workers=%u listen=%s upstream=%s", *nworkers,
	    cfg->listeners[0].address, cfg->upstream_address);
	return 0;
}

/* Serve until SIGTERM or SIGINT, reloading on SIGHUP; returns the signal. */
static int
main_wait(const char *file, const sigset_t *set, struct worker *workers,
    unsigned nworkers)
{
	int	sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			return sig;
		main_reload(file, workers, nworkers);
	}
}

/* timeouts.shutdown_grace of the running configuration. */
static unsigned
main_grace(void)
{
	struct config	*cfg = worker_config_get();
	unsigned	 grace = cfg->timeouts.shutdown_grace;

	config_unref(cfg);
	return grace;
}

/*
 * Drain the milter listener (milter_listen.c: it needs the loops' DNS
 * and the filter pool to the end) and the workers, then release what
 * main_start() took.
 */
static void
main_stop(struct worker *workers, unsigned nworkers, unsigned grace)
{
	unsigned	i;

	milter_listen_stop(grace);
	for (i = 0; i < nworkers; i++)
		worker_drain(&workers[i]);
	for (i = 0; i < nworkers; i++)
		worker_join(&workers[i]);
	metrics_http_stop();
	worker_runtime_set(NULL);
	filter_pool_stop();
	dns_shutdown();
	libevent_global_shutdown();
}

int
main(int argc, char *argv[])
{
	struct worker		 workers[MAIN_WORKERS_MAX];
	struct main_opts	 o;
	char			 err[CONFIG_ERR_MAX];
	struct runtime		*rt;
	sigset_t		 set;
	unsigned		 nworkers = 0;
	int			 r, sig;

	if (argc > 1 && strcmp(argv[1], "check") == 0)
		return check_main(argc - 1, argv + 1);
	if ((r = main_options(argc, argv, &o)) != -1)
		return r;
	log_init(o.use_syslog, o.verbose);
#if defined(__SANITIZE_ADDRESS__)
	/* A sanitizer report ends the process: the lines loops still hold too. */
	__sanitizer_set_death_callback(log_flush_all);
#endif
	/* -t loads the modules and rule files too: a bad one fails the check. */
	if ((rt = runtime_load(o.file, err, sizeof err)) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (o.check) {
		runtime_unref(rt);
		return 0;
	}
	metrics_init(FRONTMX_VERSION);
	if (main_process_setup(&set) == -1 ||
	    main_start(rt, workers, &nworkers) == -1)
		return 1;
	sig = main_wait(o.file, &set, workers, nworkers);
	log_info("signal %d: draining", sig);
	main_stop(workers, nworkers, main_grace());
	log_info("frontmx stopped");
	return 0;
}
