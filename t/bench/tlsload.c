/*
 * tlsload.c - SMTP load generator with STARTTLS, for t/bench/run
 *
 * usage: tlsload [-p] [-P rcpts] [-T seconds] host port total_messages sessions size
 *
 *   -p          plaintext: no STARTTLS (to measure the tool's own cost)
 *   -P rcpts    pipeline the envelope (RFC 2920): MAIL, rcpts RCPTs and
 *               DATA in one write, then their replies (smtp-source cannot)
 *   -T seconds  socket read/write timeout per operation (default 60)
 *
 * One message per connection: 220, EHLO, STARTTLS (220), TLS handshake
 * (TLS 1.2 or later, certificate not verified), EHLO again, MAIL, RCPT,
 * DATA (354), `size` bytes of message (a few header fields, then body
 * lines of 78 characters, CRLF; no line starts with '.'), ".", 250, QUIT.
 * Commands are not pipelined (but see -P).  `sessions` threads, each with its own
 * blocking socket, take messages from a shared counter until `total` have
 * been attempted.
 *
 * Prints one line on stdout:
 *   tlsload: mode=starttls ok=N failed=F elapsed=S rate=R
 * and the first few failures on stderr.  Exit status 0 when every message
 * got its 250, 1 when any failed, 2 on a usage or set-up error.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o tlsload tlsload.c -lssl -lcrypto -lpthread
 */

#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_ERRORS_SHOWN 10

static const char *g_host, *g_port;
static long g_total;
static int g_plain;
static int g_timeout = 60;
static long g_pipe;                     /* -P: RCPTs in the pipelined envelope; 0 none */
static SSL_CTX *g_ctx;
static struct addrinfo *g_addr;
static char *g_msg;                     /* the message, CRLF lines, no final "." */
static size_t g_msglen;

static atomic_long g_next;              /* messages handed out so far */
static atomic_long g_ok, g_failed;
static atomic_int g_shown;

struct conn {
	int fd;
	SSL *ssl;
	char buf[4096];
	size_t off, len;                /* unread input: buf[off .. len) */
	char line[1024];                /* last reply line, for messages */
};

static void failure(long n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void failure(long n, const char *fmt, ...)
{
	va_list ap;
	char msg[512];
	unsigned long e;

	atomic_fetch_add(&g_failed, 1);
	if (atomic_fetch_add(&g_shown, 1) >= MAX_ERRORS_SHOWN)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	e = ERR_peek_last_error();
	if (e) {
		char ebuf[256];
		ERR_error_string_n(e, ebuf, sizeof ebuf);
		fprintf(stderr, "tlsload: message %ld: %s (%s)\n", n, msg, ebuf);
	} else {
		fprintf(stderr, "tlsload: message %ld: %s\n", n, msg);
	}
	ERR_clear_error();
}

/* Write all of buf; 0 or -1. */
static int c_write(struct conn *c, const char *buf, size_t len)
{
	while (len > 0) {
		if (c->ssl) {
			size_t w = 0;
			if (SSL_write_ex(c->ssl, buf, len, &w) <= 0)
				return -1;
			buf += w;
			len -= w;
		} else {
			ssize_t w = send(c->fd, buf, len, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				return -1;
			}
			buf += w;
			len -= (size_t)w;
		}
	}
	return 0;
}

/* Refill the input buffer; >0 bytes read, 0 EOF, -1 error. */
static int c_fill(struct conn *c)
{
	if (c->off > 0) {
		memmove(c->buf, c->buf + c->off, c->len - c->off);
		c->len -= c->off;
		c->off = 0;
	}
	if (c->len == sizeof c->buf)
		return -1;                      /* a line longer than the buffer */
	if (c->ssl) {
		size_t r = 0;
		int rc = SSL_read_ex(c->ssl, c->buf + c->len, sizeof c->buf - c->len, &r);
		if (rc <= 0)
			return SSL_get_error(c->ssl, rc) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
		c->len += r;
		return (int)r;
	}
	for (;;) {
		ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return (int)r;
		c->len += (size_t)r;
		return (int)r;
	}
}

/* Read one line into c->line (CRLF or LF stripped); 0 or -1. */
static int c_line(struct conn *c)
{
	for (;;) {
		char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
		if (nl) {
			size_t n = (size_t)(nl - (c->buf + c->off));
			size_t keep = n;
			if (keep > 0 && c->buf[c->off + keep - 1] == '\r')
				keep--;
			if (keep >= sizeof c->line)
				keep = sizeof c->line - 1;
			memcpy(c->line, c->buf + c->off, keep);
			c->line[keep] = '\0';
			c->off += n + 1;
			return 0;
		}
		if (c_fill(c) <= 0)
			return -1;
	}
}

/* Read a whole (multi-line) reply; its code, or -1. */
static int c_reply(struct conn *c)
{
	for (;;) {
		if (c_line(c) < 0)
			return -1;
		if (strlen(c->line) < 3 || c->line[0] < '1' || c->line[0] > '5'
		    || c->line[1] < '0' || c->line[1] > '9' || c->line[2] < '0' || c->line[2] > '9')
			return -1;
		if (c->line[3] != '-')
			return (c->line[0] - '0') * 100 + (c->line[1] - '0') * 10 + (c->line[2] - '0');
	}
}

/* Send a command (without CRLF), expect a reply code; 0 or -1. */
static int cmd(struct conn *c, long n, const char *command, int want)
{
	char buf[256];
	int code;
	int len = snprintf(buf, sizeof buf, "%s\r\n", command);

	errno = 0;
	if (c_write(c, buf, (size_t)len) < 0) {
		failure(n, "%s: write failed: %s", command, strerror(errno));
		return -1;
	}
	code = c_reply(c);
	if (code != want) {
		if (code < 0)
			failure(n, "%s: no reply (%s)", command, errno ? strerror(errno) : "connection closed");
		else
			failure(n, "%s: got \"%s\", wanted %d", command, c->line, want);
		return -1;
	}
	return 0;
}

static int connect_to(void)
{
	struct timeval tv = { .tv_sec = g_timeout, .tv_usec = 0 };
	int one = 1;

	for (struct addrinfo *a = g_addr; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			return fd;
		close(fd);
	}
	return -1;
}

/* -P: MAIL, g_pipe RCPTs and DATA in one write, then each reply; 0 or -1. */
static int pipelined_envelope(struct conn *c, long n)
{
	char buf[64 * 40];
	size_t len;
	long i;
	int code;

	len = (size_t)snprintf(buf, sizeof buf, "MAIL FROM:<a@example.com>\r\n");
	for (i = 0; i < g_pipe; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "RCPT TO:<b%ld@example.com>\r\n", i);
	len += (size_t)snprintf(buf + len, sizeof buf - len, "DATA\r\n");
	errno = 0;
	if (c_write(c, buf, len) < 0) {
		failure(n, "pipelined envelope: write failed: %s", strerror(errno));
		return -1;
	}
	for (i = 0; i < g_pipe + 2; i++) {
		code = c_reply(c);
		if (code != (i == g_pipe + 1 ? 354 : 250)) {
			failure(n, "pipelined envelope: reply %ld: %s", i + 1, code < 0 ? "none" : c->line);
			return -1;
		}
	}
	return 0;
}

/* One connection, one message; 0 when the message got its 250. */
static int one_message(struct conn *c, long n)
{
	int code, delivered = 0;

	c->ssl = NULL;
	c->off = c->len = 0;
	c->fd = connect_to();
	if (c->fd < 0) {
		failure(n, "connect to %s:%s: %s", g_host, g_port, strerror(errno));
		return -1;
	}
	errno = 0;
	code = c_reply(c);
	if (code != 220) {
		failure(n, "greeting: %s", code < 0 ? "none" : c->line);
		goto out;
	}
	if (cmd(c, n, "EHLO tlsload.example", 250) < 0)
		goto out;
	if (!g_plain) {
		if (cmd(c, n, "STARTTLS", 220) < 0)
			goto out;
		if (c->off != c->len) {
			failure(n, "data after the STARTTLS reply (response injection?)");
			goto out;
		}
		c->ssl = SSL_new(g_ctx);
		if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
			failure(n, "SSL_new failed");
			goto out;
		}
		ERR_clear_error();
		if (SSL_connect(c->ssl) != 1) {
			failure(n, "TLS handshake failed");
			goto out;
		}
		if (cmd(c, n, "EHLO tlsload.example", 250) < 0)
			goto out;
	}
	if (g_pipe > 0) {
		if (pipelined_envelope(c, n) < 0)
			goto out;
	} else if (cmd(c, n, "MAIL FROM:<a@example.com>", 250) < 0
	    || cmd(c, n, "RCPT TO:<b@example.com>", 250) < 0
	    || cmd(c, n, "DATA", 354) < 0)
		goto out;
	if (c_write(c, g_msg, g_msglen) < 0) {
		failure(n, "writing the message failed: %s", strerror(errno));
		goto out;
	}
	if (cmd(c, n, ".", 250) < 0)
		goto out;
	delivered = 1;
	atomic_fetch_add(&g_ok, 1);
	/* QUIT is courtesy: the message is in; a missing 221 is no failure. */
	if (c_write(c, "QUIT\r\n", 6) == 0)
		(void)c_reply(c);
	if (c->ssl)
		SSL_shutdown(c->ssl);           /* send close_notify, do not wait */
out:
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	close(c->fd);
	ERR_clear_error();
	return delivered ? 0 : -1;
}

static void *worker(void *arg)
{
	struct conn *c = malloc(sizeof *c);
	long n;

	(void)arg;
	if (!c) {
		fprintf(stderr, "tlsload: out of memory\n");
		exit(2);
	}
	while ((n = atomic_fetch_add(&g_next, 1)) < g_total)
		one_message(c, n + 1);
	free(c);
	return NULL;
}

/* size bytes: header fields, an empty line, body lines of 78 characters
 * plus CRLF; the last body line is shorter.  Exact when size allows. */
static void build_message(size_t size)
{
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	char hdr[512];
	size_t h, pos, i;
	int line = 0;

	h = (size_t)snprintf(hdr, sizeof hdr,
	    "From: <a@example.com>\r\n"
	    "To: <b@example.com>\r\n"
	    "Subject: tlsload test message\r\n"
	    "Message-ID: <tlsload.%ld@tlsload.example>\r\n"
	    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
	    "\r\n", (long)getpid());
	if (size < h + 2)
		size = h + 2;
	g_msg = malloc(size + 1);
	if (!g_msg) {
		fprintf(stderr, "tlsload: out of memory\n");
		exit(2);
	}
	memcpy(g_msg, hdr, h);
	pos = h;
	while (pos < size) {
		size_t left = size - pos, n = 78;
		if (left < 80) {
			n = left >= 2 ? left - 2 : 0;
			if (left - n < 2) {
				/* 1 byte left after a full line: cannot be a line on
				 * its own; end one byte early instead. */
				break;
			}
		}
		for (i = 0; i < n; i++)         /* never a '.' first: dot-safe */
			g_msg[pos + i] = alpha[(i + (size_t)line) % (sizeof alpha - 1)];
		pos += n;
		g_msg[pos++] = '\r';
		g_msg[pos++] = '\n';
		line++;
	}
	g_msglen = pos;
}

static void usage(void)
{
	fprintf(stderr, "usage: tlsload [-p] [-P rcpts] [-T seconds] host port total_messages sessions size\n");
	exit(2);
}

static long number(const char *s, long min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct timespec t0, t1;
	pthread_t *tids;
	pthread_attr_t attr;
	long sessions, started = 0, i;
	double elapsed;
	int opt, rc;

	while ((opt = getopt(argc, argv, "pP:T:")) != -1) {
		switch (opt) {
		case 'p': g_plain = 1; break;
		case 'P': g_pipe = number(optarg, 1); if (g_pipe > 60) usage(); break;
		case 'T': g_timeout = (int)number(optarg, 1); break;
		default: usage();
		}
	}
	if (argc - optind != 5)
		usage();
	g_host = argv[optind];
	g_port = argv[optind + 1];
	g_total = number(argv[optind + 2], 1);
	sessions = number(argv[optind + 3], 1);
	build_message((size_t)number(argv[optind + 4], 0));
	if (sessions > g_total)
		sessions = g_total;

	signal(SIGPIPE, SIG_IGN);
	rc = getaddrinfo(g_host, g_port, &hints, &g_addr);
	if (rc != 0) {
		fprintf(stderr, "tlsload: %s:%s: %s\n", g_host, g_port, gai_strerror(rc));
		return 2;
	}
	if (!g_plain) {
		g_ctx = SSL_CTX_new(TLS_client_method());
		if (!g_ctx || !SSL_CTX_set_min_proto_version(g_ctx, TLS1_2_VERSION)) {
			fprintf(stderr, "tlsload: cannot set up TLS\n");
			return 2;
		}
		SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
		/* no resumption: every connection makes a full handshake */
		SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
	}

	tids = calloc((size_t)sessions, sizeof *tids);
	if (!tids) {
		fprintf(stderr, "tlsload: out of memory\n");
		return 2;
	}
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < sessions; i++) {
		rc = pthread_create(&tids[i], &attr, worker, NULL);
		if (rc != 0) {
			fprintf(stderr, "tlsload: pthread_create: %s (running %ld sessions)\n",
			    strerror(rc), started);
			if (started == 0)
				return 2;
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	pthread_attr_destroy(&attr);

	elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("tlsload: mode=%s ok=%ld failed=%ld elapsed=%.6f rate=%.1f\n",
	    g_plain ? "plain" : "starttls", atomic_load(&g_ok), atomic_load(&g_failed),
	    elapsed, elapsed > 0 ? (double)atomic_load(&g_ok) / elapsed : 0.0);
	if (atomic_load(&g_shown) > MAX_ERRORS_SHOWN)
		fprintf(stderr, "tlsload: %d more failures not shown\n",
		    atomic_load(&g_shown) - MAX_ERRORS_SHOWN);

	free(tids);
	free(g_msg);
	freeaddrinfo(g_addr);
	SSL_CTX_free(g_ctx);
	return atomic_load(&g_ok) == g_total ? 0 : 1;
}
