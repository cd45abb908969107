/*
 * version.h - the release this tree builds
 *
 * DESCRIPTION
 *	One place for the version `frontmx --version` prints (and, later,
 *	what metrics and logs report).  Bump it with every release; the
 *	filter API has its own version in filters/frontmx_filter.h.
 */
#ifndef FRONTMX_VERSION_H
#define FRONTMX_VERSION_H

#define FRONTMX_VERSION	"0.5.0"

#endif
