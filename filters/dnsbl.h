/*
 * dnsbl.h - the built-in DNSBL/DNSWL filter: see dnsbl.c for the zone
 * syntax (Postfix's postscreen_dnsbl_sites), the options and the results.
 */
#ifndef FRONTMX_DNSBL_H
#define FRONTMX_DNSBL_H

#include "frontmx_filter.h"

const struct fmx_filter	*dnsbl_filter(void);

#endif
