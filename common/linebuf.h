/*
 * linebuf.h - a line buffer that grows by doubling, from a start size up
 * to a hard maximum
 *
 * SYNOPSIS
 *	#include "linebuf.h"
 *
 *	struct linebuf b = { 0 };		(or inside a calloc'ed struct)
 *	if (linebuf_reserve(&b, len + n, 4096, 1048576) == -1)
 *		error;				(over the maximum, or no memory)
 *	memcpy(b.p + len, data, n);
 *	linebuf_free(&b);
 *
 * DESCRIPTION
 *	For the filters that reassemble lines from chunks, and for the
 *	message spool's memory (proxy/spool.c): the buffer starts at start
 *	octets and doubles until a line fits, never past max, so one long
 *	line costs what it needs and a hostile one is bounded.
 *	linebuf_reserve() makes b->p hold at least want octets (b->cap says
 *	how many); it allocates the first time even for want 0, so b->p is
 *	never NULL after it succeeded.  The caller decides what a line over
 *	max means: refuse it (want > max gives -1) or keep it cut (ask for
 *	max).  Contents are kept across growth (realloc).
 *
 *	start and max are arguments, not fields, so a zeroed struct linebuf
 *	is ready to use; pass the same ones on every call.
 *
 * RETURN VALUES
 *	linebuf_reserve(): 0, or -1 when want > max or memory runs out (the
 *	buffer is then as it was).
 */
#ifndef FRONTMX_LINEBUF_H
#define FRONTMX_LINEBUF_H

#include <stddef.h>

struct linebuf {
	char	*p;		/* NULL until the first linebuf_reserve() */
	size_t	 cap;
};

int	linebuf_reserve(struct linebuf *b, size_t want, size_t start, size_t max);
void	linebuf_free(struct linebuf *b);

#endif
