/*
 * milter.h - an external milter as a built-in filter of the chain
 *
 * A `filters` entry with milter = ADDRESS (struct config_filter's
 * milter fields) runs milter_filter()'s hooks; filter_chain_new() makes
 * its instance with milter_inst_new() (the circuit breaker shared by
 * every session of the configuration), freed by the table's fini.
 */
#ifndef FRONTMX_MILTER_H
#define FRONTMX_MILTER_H

#include "frontmx_filter.h"

struct config_filter;

const struct fmx_filter	*milter_filter(void);
void			*milter_inst_new(const struct config_filter *);
void			 milter_inst_free(void *);

#endif
