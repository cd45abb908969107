/*
 * spf.h - the built-in SPF filter (RFC 7208): see spf.c for what it
 * checks, the options it takes and the results it names.
 */
#ifndef FRONTMX_SPF_H
#define FRONTMX_SPF_H

#include "frontmx_filter.h"

const struct fmx_filter	*spf_filter(void);

#endif
