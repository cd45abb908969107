/*
 * ratelimit.h - the built-in rate limit filter (see ratelimit.c for what it
 * counts, the options it takes and the results it names).
 */
#ifndef FRONTMX_RATELIMIT_H
#define FRONTMX_RATELIMIT_H

#include "frontmx_filter.h"

const struct fmx_filter	*ratelimit_filter(void);

#endif
