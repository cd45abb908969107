/*
 * dkim.h - the built-in DKIM filter: verifies every message (RFC 6376,
 * RFC 8301, RFC 8463) and signs mail from trusted clients.  See dkim.c
 * for what it checks, the results it names and the options it takes.
 */
#ifndef FRONTMX_DKIM_H
#define FRONTMX_DKIM_H

#include "frontmx_filter.h"

const struct fmx_filter	*dkim_filter(void);

#endif
