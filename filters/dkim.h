/*
 * dkim.h - the built-in DKIM filter (see dkim.c for what it checks and the
 * options it takes).
 */
#ifndef FRONTMX_DKIM_H
#define FRONTMX_DKIM_H

#include "frontmx_filter.h"

const struct fmx_filter	*dkim_filter(void);

#endif
