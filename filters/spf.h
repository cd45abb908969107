/*
 * spf.h - the built-in SPF filter (see spf.c for what it checks and the
 * options it takes).
 */
#ifndef FRONTMX_SPF_H
#define FRONTMX_SPF_H

#include "frontmx_filter.h"

const struct fmx_filter	*spf_filter(void);

#endif
