/*
 * greylist.h - the built-in greylisting filter (see greylist.c for what it
 * does, the options it takes and the results it names).
 */
#ifndef FRONTMX_GREYLIST_H
#define FRONTMX_GREYLIST_H

#include "frontmx_filter.h"

const struct fmx_filter	*greylist_filter(void);

#endif
