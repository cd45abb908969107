/*
 * test_deliver.c - unit tests for proxy/deliver.c and its local backends
 *
 * NAME
 *	test_deliver - deliver.h's contract on the Maildir and check backends
 *
 * SYNOPSIS
 *	build/unit/test_deliver		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	deliver_choose() maps each upstream.address kind (and check's
 *	override) to its backend and flags; deliver_upstream() says which
 *	talk to a server.  On the synchronous backends (dir:, check) every
 *	operation's done() fires exactly once, never inside the call that
 *	started it, and only from the event loop; a handle closed with a
 *	reply pending never calls back.  The Maildir backend writes one
 *	file per recipient and answers 250 (451 when it cannot); the check
 *	backend reports the action and the fields the proxy added.  The
 *	SMTP and LMTP backends are upstream.c, which t/smtp tests against
 *	scripted servers, Postfix, Exim and Dovecot.
 *	Linked with every ASan object but main.o.
 */

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "deliver.h"
#include "log.h"
#include "maildir.h"
#include "spool.h"
#include "tap.h"

struct test_done {
	int	calls;
	int	code;
	char	text[256];
};

static void
test_deliver_done(void *arg, enum upstream_err err, const struct smtp_reply *r)
{
	struct test_done *t = arg;

	t->calls++;
	t->code = err == UPSTREAM_OK && r != NULL ? r->code : -1;
	snprintf(t->text, sizeof t->text, "%.200s", r != NULL ? r->text : "");
}

/* A configuration with this upstream.address; NULL (reported) if it fails. */
static struct config *
test_deliver_config(const char *dir, const char *address)
{
	char path[PATH_MAX], err[CONFIG_ERR_MAX];
	struct config *c;
	FILE *fp;

	snprintf(path, sizeof path, "%s/frontmx.conf", dir);
	if ((fp = fopen(path, "w")) == NULL)
		return NULL;
	fprintf(fp, "hostname = \"mx.test.example\";\n"
	    "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	    "upstream = { address = \"%s\"; };\n", address);
	fclose(fp);
	c = config_load(path, err, sizeof err);
	if (c == NULL)
		printf("# %s\n", err);
	unlink(path);
	return c;
}

static int
test_deliver_files(const char *dir)
{
	DIR *d;
	struct dirent *e;
	int n = 0;

	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* One loop turn: what was scheduled for "now" runs. */
static void
test_deliver_turn(struct event_base *base)
{
	event_base_loop(base, EVLOOP_NONBLOCK);
}

static void
test_deliver_choose(const char *tmp)
{
	struct deliver_override o = { .ops = &deliver_check_ops };
	struct config *c;
	int lmtp = -1;

	if ((c = test_deliver_config(tmp, "127.0.0.1:25")) != NULL) {
		ok(deliver_choose(c, NULL) == &deliver_smtp_ops &&
		    deliver_flags(&deliver_smtp_ops) == DELIVER_F_ENVELOPE,
		    "host:port is the SMTP backend, RCPTs given as they come");
		ok(deliver_upstream(c, &lmtp) == 1 && lmtp == 0,
		    "SMTP talks to an upstream, not in LMTP");
		ok(deliver_choose(c, &o) == &deliver_check_ops,
		    "an override wins over upstream.address");
	}
	config_unref(c);
	if ((c = test_deliver_config(tmp, "lmtp:unix:/run/dovecot/lmtp")) != NULL) {
		ok(deliver_choose(c, NULL) == &deliver_lmtp_ops &&
		    (deliver_flags(&deliver_lmtp_ops) & DELIVER_F_ONE_RCPT),
		    "lmtp:unix: is the LMTP backend, one recipient per transaction");
		ok(deliver_upstream(c, &lmtp) == 1 && lmtp == 1,
		    "LMTP talks to an upstream in LMTP");
		ok(deliver_probe(c, NULL) == -1, "the LMTP probe of a missing socket fails");
	}
	config_unref(c);
	ok(deliver_flags(&deliver_check_ops) == DELIVER_F_REPORT &&
	    deliver_flags(&deliver_maildir_ops) == 0,
	    "check reports discard/quarantine, dir: takes the envelope locally");
}

static void
test_deliver_check_report(void *arg, const struct deliver_check_report *r)
{
	char *out = arg;

	snprintf(out, 256, "%s|%.*s", r->action, (int)r->addedlen, r->added);
}

static void
test_deliver_local(const char *tmp)
{
	static const char *const rcpts[] = { "bob@example.com", "carol@example.com" };
	static const char head[] = "Received: ours\r\nSubject: theirs\r\nX-Tag: ours too\r\n";
	char mdir[256], sub[PATH_MAX], why[256], report[256] = "";
	struct upstream_client cl = { .addr = "192.0.2.1", .helo = "client.example" };
	struct deliver_check dc = { .fn = test_deliver_check_report, .arg = report };
	struct deliver_override o = { .ops = &deliver_check_ops, .arg = &dc };
	struct deliver_msg m;
	struct test_done t = { 0 };
	struct event_base *base = event_base_new();
	struct spool sp;
	struct config *c;
	struct deliver *d;

	snprintf(mdir, sizeof mdir, "%s/maildir", tmp);
	snprintf(sub, sizeof sub, "dir:%s", mdir);
	if ((c = test_deliver_config(tmp, sub)) == NULL ||
	    maildir_prepare(mdir, why, sizeof why) == -1) {
		ok(0, "dir: configuration and Maildir");
		config_unref(c);
		event_base_free(base);
		return;
	}
	d = deliver_open(base, c, NULL, 1, deliver_choose(c, NULL), NULL, &cl,
	    test_deliver_done, &t);
	ok(d != NULL && t.calls == 0, "open: no reply inside the call");
	test_deliver_turn(base);
	ok(t.calls == 1 && t.code == 220, "open: one 220, from the loop");
	ok(deliver_idle(d) && !deliver_in_tx(d), "idle, no transaction held");
	deliver_mail(d, "MAIL FROM:<a@example.org>", test_deliver_done, &t);
	ok(t.calls == 1 && !deliver_idle(d), "MAIL: in flight, not idle");
	test_deliver_turn(base);
	ok(t.calls == 2 && t.code == 250 && strncmp(t.text, "2.1.0", 5) == 0,
	    "MAIL: 250 2.1.0 from the loop");
	deliver_rcpt(d, "RCPT TO:<bob@example.com>", test_deliver_done, &t);
	test_deliver_turn(base);
	ok(t.calls == 3 && t.code == 250 && strncmp(t.text, "2.1.5", 5) == 0,
	    "RCPT: 250 2.1.5");
	ok(deliver_auth(d, "AUTH PLAIN AA==", test_deliver_done, &t) == -1 &&
	    t.calls == 3, "AUTH: a Maildir has none, nothing fires");

	spool_init(&sp, 1024, tmp);
	spool_append(&sp, "\r\nbody\r\n", 8);
	spool_flush(&sp);
	memset(&m, 0, sizeof m);
	m.queue_id = "Q1";
	m.mail_from = "a@example.org";
	m.rcpts = rcpts;
	m.nrcpts = 2;
	m.head = head;
	m.headlen = sizeof head - 1;
	m.head_prefix = strlen("Received: ours\r\n");
	m.head_added = m.headlen - strlen("X-Tag: ours too\r\n");
	m.spool = &sp;
	m.action = "tag";
	deliver_data(d, &m, test_deliver_done, &t);
	ok(t.calls == 3, "data: written, but the reply waits for the loop");
	test_deliver_turn(base);
	snprintf(sub, sizeof sub, "%s/new", mdir);
	ok(t.calls == 4 && t.code == 250 && strstr(t.text, "queued as Q1") != NULL &&
	    test_deliver_files(sub) == 2, "data: 250 queued as Q1, one file per recipient");
	ok(strcmp(deliver_result(deliver_backend(d), "tag"), "delivered") == 0,
	    "dir: logged as delivered");

	/* A reply pending when the handle closes never arrives. */
	deliver_rset(d, test_deliver_done, &t);
	deliver_close(d);
	test_deliver_turn(base);
	ok(t.calls == 4, "closed with a reply pending: no call back");

	/* new/ gone: 451, nothing left behind in tmp/. */
	snprintf(sub, sizeof sub, "%s/new", mdir);
	for (DIR *dp = opendir(sub); dp != NULL; dp = NULL) {
		struct dirent *e;
		char f[PATH_MAX * 2];

		while ((e = readdir(dp)) != NULL)
			if (e->d_name[0] != '.') {
				snprintf(f, sizeof f, "%s/%s", sub, e->d_name);
				unlink(f);
			}
		closedir(dp);
	}
	rmdir(sub);
	d = deliver_open(base, c, NULL, 2, deliver_choose(c, NULL), NULL, &cl,
	    test_deliver_done, &t);
	test_deliver_turn(base);
	deliver_data(d, &m, test_deliver_done, &t);
	test_deliver_turn(base);
	snprintf(sub, sizeof sub, "%s/tmp", mdir);
	ok(t.calls == 6 && t.code == 451 && test_deliver_files(sub) == 0,
	    "data into a broken Maildir: 451, tmp/ left empty");
	deliver_close(d);

	/* check: the same envelope, reported instead of written. */
	d = deliver_open(base, c, NULL, 3, deliver_choose(c, &o), &o, &cl,
	    test_deliver_done, &t);
	test_deliver_turn(base);
	deliver_data(d, &m, test_deliver_done, &t);
	ok(t.calls == 7, "check: the reply waits for the loop");
	test_deliver_turn(base);
	ok(t.calls == 8 && t.code == 250 &&
	    strcmp(report, "tag|Received: ours\r\nX-Tag: ours too\r\n") == 0,
	    "check: action and our fields reported, 250 from the loop");
	ok(strcmp(deliver_result(deliver_backend(d), "tag"), "tag") == 0,
	    "check: logged as its action");
	deliver_close(d);

	spool_free(&sp);
	config_unref(c);
	event_base_free(base);
}

int
main(void)
{
	char tmp[] = "/tmp/test_deliver.XXXXXX";
	char cmd[64];

	plan(22);
	log_init(0, 0);
	if (mkdtemp(tmp) == NULL) {
		printf("Bail out! mkdtemp\n");
		return 1;
	}
	test_deliver_choose(tmp);
	test_deliver_local(tmp);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmp);
	return done_testing();
}
