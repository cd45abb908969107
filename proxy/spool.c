/*
 * spool.c - message content store, memory first, then an unlinked file
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spool.h"

void
spool_init(struct spool *sp, size_t mem_max, const char *dir)
{
	memset(sp, 0, sizeof *sp);
	sp->fd = -1;
	sp->last = -1;
	sp->mem_max = mem_max;
	sp->dir = dir;
}

static int
spool_open_file(struct spool *sp)
{
	char path[PATH_MAX];
	int fd;

	/* O_TMPFILE: the file never has a name, so a crash leaves nothing. */
	fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd == -1) {
		/* Filesystems without O_TMPFILE: create, then unlink at once. */
		if (snprintf(path, sizeof path, "%s/frontmx.XXXXXX", sp->dir) >=
		    (int)sizeof path) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if ((fd = mkostemp(path, O_CLOEXEC)) == -1)
			return -1;
		(void)unlink(path);
	}
	sp->fd = fd;
	return 0;
}

static int
spool_write_all(struct spool *sp, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = pwrite(sp->fd, p, len, sp->filelen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
		sp->filelen += n;
	}
	return 0;
}

int
spool_flush(struct spool *sp)
{
	if (sp->error)
		return -1;
	if (sp->fd == -1 || sp->memlen == 0)
		return 0;
	if (spool_write_all(sp, sp->mem.p, sp->memlen) == -1) {
		sp->error = errno;
		return -1;
	}
	sp->memlen = 0;
	return 0;
}

/*
 * The buffer never needs more than mem_max (the in-memory content) or
 * SPOOL_WBUF_SIZE (the file write buffer): spool_append() moves to the file
 * or writes straight through before either is passed.
 */
static int
spool_grow(struct spool *sp, size_t need)
{
	size_t max = sp->mem_max > SPOOL_WBUF_SIZE ? sp->mem_max :
	    SPOOL_WBUF_SIZE;

	return linebuf_reserve(&sp->mem, need, 4096, max);
}

int
spool_append(struct spool *sp, const void *data, size_t len)
{
	if (sp->error)
		return -1;
	if (len > 0)
		sp->last = ((const unsigned char *)data)[len - 1];
	if (sp->fd == -1 && sp->memlen + len > sp->mem_max) {
		/* Crossing the threshold: move what we have to the file. */
		if (spool_open_file(sp) == -1 || spool_flush(sp) == -1) {
			sp->error = errno ? errno : EIO;
			return -1;
		}
	}
	if (sp->fd != -1 && sp->memlen + len > SPOOL_WBUF_SIZE) {
		if (spool_flush(sp) == -1)
			return -1;
		if (len > SPOOL_WBUF_SIZE) {
			if (spool_write_all(sp, data, len) == -1) {
				sp->error = errno;
				return -1;
			}
			sp->size += len;
			return 0;
		}
	}
	if (spool_grow(sp, sp->memlen + len) == -1) {
		sp->error = ENOMEM;
		return -1;
	}
	memcpy(sp->mem.p + sp->memlen, data, len);
	sp->memlen += len;
	sp->size += len;
	return 0;
}

ssize_t
spool_read(struct spool *sp, off_t off, void *buf, size_t len)
{
	ssize_t n;

	if (off < 0 || (size_t)off >= sp->size)
		return 0;
	if (len > sp->size - (size_t)off)
		len = sp->size - (size_t)off;
	if (sp->fd == -1) {
		memcpy(buf, sp->mem.p + off, len);
		return (ssize_t)len;
	}
	if (spool_flush(sp) == -1)
		return -1;
	do
		n = pread(sp->fd, buf, len, off);
	while (n < 0 && errno == EINTR);
	return n;
}

int
spool_last(const struct spool *sp)
{
	return sp->size > 0 ? sp->last : -1;
}

void
spool_reset(struct spool *sp)
{
	if (sp->fd != -1)
		close(sp->fd);
	sp->fd = -1;
	sp->filelen = 0;
	sp->memlen = 0;
	sp->size = 0;
	sp->last = -1;
	sp->error = 0;
	/* Give back big buffers; keep a small one for the next message. */
	if (sp->mem.cap > SPOOL_WBUF_SIZE)
		linebuf_free(&sp->mem);
}

void
spool_free(struct spool *sp)
{
	spool_reset(sp);
	linebuf_free(&sp->mem);
}
