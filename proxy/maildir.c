/*
 * maildir.c - Maildir-style delivery for the "dir:PATH" upstream
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "maildir.h"
#include "spool.h"

#define MAILDIR_CHUNK	65536

static atomic_ulong maildir_seq;

int
maildir_prepare(const char *dir, char *err, size_t errlen)
{
	static const char *const sub[] = { "", "/tmp", "/new", "/cur" };
	char path[PATH_MAX];
	size_t i;

	for (i = 0; i < sizeof sub / sizeof sub[0]; i++) {
		if (snprintf(path, sizeof path, "%s%s", dir, sub[i]) >=
		    (int)sizeof path) {
			snprintf(err, errlen, "%s: path too long", dir);
			return -1;
		}
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			snprintf(err, errlen, "%s: mkdir: %s", path,
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Write buf to fd dropping every CR: the spool holds only CRLF line ends. */
static int
maildir_write_lf(int fd, const char *buf, size_t len)
{
	char out[MAILDIR_CHUNK];
	size_t i, n = 0;
	ssize_t w;
	size_t off;

	for (i = 0; i < len; i++) {
		if (buf[i] == '\r')
			continue;
		out[n++] = buf[i];
		if (n == sizeof out || i + 1 == len) {
			for (off = 0; off < n; off += (size_t)w) {
				w = write(fd, out + off, n - off);
				if (w < 0) {
					if (errno == EINTR) {
						w = 0;
						continue;
					}
					return -1;
				}
			}
			n = 0;
		}
	}
	return 0;
}

static int
maildir_write_copy(const struct maildir_request *req, const char *rcpt,
    int fd)
{
	char hdr[1024], buf[MAILDIR_CHUNK];
	off_t off = (off_t)req->spool_off;
	ssize_t n;
	size_t i;
	int len;

	/* Envelope addresses were validated by the parser: no CR/LF inside. */
	len = snprintf(hdr, sizeof hdr, "Return-Path: <%s>\n", req->mail_from);
	if (len < 0 || (size_t)len >= sizeof hdr ||
	    maildir_write_lf(fd, hdr, (size_t)len) == -1)
		return -1;
	if (req->note != NULL) {
		len = snprintf(hdr, sizeof hdr, "X-Frontmx-Quarantine: %s\n",
		    req->note);
		if (len < 0 || (size_t)len >= sizeof hdr ||
		    maildir_write_lf(fd, hdr, (size_t)len) == -1)
			return -1;
	}
	for (i = 0; i < req->nrcpts; i++) {
		if (!req->single && req->rcpts[i] != rcpt)
			continue;
		len = snprintf(hdr, sizeof hdr, "Delivered-To: %s\n",
		    req->rcpts[i]);
		if (len < 0 || (size_t)len >= sizeof hdr ||
		    maildir_write_lf(fd, hdr, (size_t)len) == -1)
			return -1;
	}
	if (maildir_write_lf(fd, req->prepend, req->prependlen) == -1)
		return -1;
	while ((n = spool_read(req->spool, off, buf, sizeof buf)) > 0) {
		if (maildir_write_lf(fd, buf, (size_t)n) == -1)
			return -1;
		off += n;
	}
	if (n < 0)
		return -1;
	return fsync(fd);
}

int
maildir_deliver(const struct maildir_request *req, char *err, size_t errlen)
{
	char (*names)[128];
	char tmp[PATH_MAX], new[PATH_MAX];
	struct timeval tv;
	size_t i, done = 0, ncopies = req->single ? 1 : req->nrcpts;
	int fd, dfd, rc = -1;

	if ((names = calloc(ncopies, sizeof *names)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	gettimeofday(&tv, NULL);
	for (i = 0; i < ncopies; i++) {
		snprintf(names[i], sizeof names[i], "%lld.M%ldP%ldQ%lu.%s",
		    (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(),
		    atomic_fetch_add(&maildir_seq, 1), req->hostname);
		if (snprintf(tmp, sizeof tmp, "%s/tmp/%s", req->dir, names[i]) >=
		    (int)sizeof tmp) {
			snprintf(err, errlen, "path too long");
			goto out;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd == -1) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			goto out;
		}
		done = i + 1;
		if (maildir_write_copy(req, req->rcpts[i], fd) == -1) {
			snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
			close(fd);
			goto out;
		}
		if (close(fd) == -1) {
			snprintf(err, errlen, "%s: close: %s", tmp,
			    strerror(errno));
			goto out;
		}
	}
	/* Every copy is safely in tmp/: publish them. */
	for (i = 0; i < ncopies; i++) {
		snprintf(tmp, sizeof tmp, "%s/tmp/%s", req->dir, names[i]);
		snprintf(new, sizeof new, "%s/new/%s", req->dir, names[i]);
		if (rename(tmp, new) == -1) {
			snprintf(err, errlen, "rename %s: %s", tmp,
			    strerror(errno));
			goto out;
		}
	}
	done = 0;
	snprintf(new, sizeof new, "%s/new", req->dir);
	if ((dfd = open(new, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		/* The rename is durable only once the directory is. */
		if (fsync(dfd) == -1) {
			snprintf(err, errlen, "fsync %s: %s", new,
			    strerror(errno));
			close(dfd);
			goto out;
		}
		close(dfd);
	}
	rc = 0;
out:
	/* Undo partial work so a 451 leaves nothing for the retry to duplicate. */
	for (i = 0; i < done; i++) {
		snprintf(tmp, sizeof tmp, "%s/tmp/%s", req->dir, names[i]);
		(void)unlink(tmp);
	}
	free(names);
	return rc;
}
