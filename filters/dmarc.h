/*
 * dmarc.h - the built-in DMARC filter (see dmarc.c for what it checks and the
 * options it takes).
 */
#ifndef FRONTMX_DMARC_H
#define FRONTMX_DMARC_H

#include "frontmx_filter.h"

const struct fmx_filter	*dmarc_filter(void);

#endif
