/*
 * spool.h - one message's content, in memory up to a threshold, then in an
 * unlinked temporary file
 *
 * SYNOPSIS
 *	spool_init(&sp, mem_max, dir);
 *	spool_append(&sp, line, len);	...
 *	spool_read(&sp, off, buf, len);
 *	spool_reset(&sp); spool_free(&sp);
 *
 * DESCRIPTION
 *	The spool holds the message exactly as the proxy will re-serialise it:
 *	un-stuffed lines, each ending in CRLF.  Once mem_max bytes would be
 *	exceeded the content moves to an O_TMPFILE (or mkstemp+unlink) file in
 *	dir, so a large message costs disk, not RAM, and disappears with the
 *	descriptor if the daemon dies.  Writes to the file are batched through
 *	a SPOOL_WBUF_SIZE buffer to keep the syscall count per line at zero.
 */
#ifndef FRONTMX_SPOOL_H
#define FRONTMX_SPOOL_H

#include <stddef.h>
#include <sys/types.h>

#include "linebuf.h"

#define SPOOL_WBUF_SIZE	65536

struct spool {
	struct linebuf mem;	/* in-memory content, or the file write buffer */
	size_t	 memlen;
	size_t	 mem_max;	/* threshold before switching to the file */
	int	 fd;		/* -1 while in memory */
	off_t	 filelen;	/* bytes flushed to fd */
	size_t	 size;		/* total content bytes */
	int	 last;		/* the last byte appended (-1: none yet) */
	const char *dir;
	int	 error;		/* errno of the first I/O failure, 0 if none */
};

void	spool_init(struct spool *, size_t mem_max, const char *dir);
/* 0 ok, -1 I/O error (sp->error set; the message must be tempfailed). */
int	spool_append(struct spool *, const void *, size_t);
/* Make every appended byte readable through spool_read(). 0 ok, -1 error. */
int	spool_flush(struct spool *);
/* Bytes read (0 at the end), -1 on error. */
ssize_t	spool_read(struct spool *, off_t off, void *buf, size_t len);
/* The last byte appended, -1 when empty: no read needed. */
int	spool_last(const struct spool *);
void	spool_reset(struct spool *);
void	spool_free(struct spool *);

#endif
