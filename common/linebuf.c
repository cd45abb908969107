/*
 * linebuf.c - the one growing line buffer (linebuf.h): was
 * content_line_room() in filters/content.c, the growth inside
 * dkim_rd_line() in filters/dkim.c and spool_grow() in proxy/spool.c, the
 * same doubling with three caps.
 */
#include <stdlib.h>

#include "linebuf.h"

int
linebuf_reserve(struct linebuf *b, size_t want, size_t start, size_t max)
{
	size_t	 cap = b->cap != 0 ? b->cap : (start != 0 ? start : 1);
	char	*p;

	if (want > max)
		return -1;
	if (b->p != NULL && want <= b->cap)
		return 0;
	/* Doubling stops at max, which want does not exceed: no overflow. */
	while (cap < want)
		cap = cap > max / 2 ? max : cap * 2;
	if (cap > max)
		cap = max;
	if ((p = realloc(b->p, cap)) == NULL)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

void
linebuf_free(struct linebuf *b)
{
	free(b->p);
	b->p = NULL;
	b->cap = 0;
}
