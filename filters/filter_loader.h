/*
 * filter_loader.h - load and validate filter modules (shared objects)
 *
 * SYNOPSIS
 *	struct filter_module *m;
 *	char err[256];
 *
 *	if (filter_loader_open(path, &api, &m, err, sizeof err) == -1)
 *		fatalx("%s", err);		(err = "PATH: reason")
 *	f = filter_loader_table(m);
 *	... f->init(&api, options, noptions, &inst) ... f->fini(inst) ...
 *	filter_loader_close(m);
 *
 *	if (filter_loader_check(&builtin_spf, "built-in spf", err, sizeof err) == -1)
 *		fatalx("%s", err);
 *
 * DESCRIPTION
 *	filter_loader_open() dlopen()s path with RTLD_NOW | RTLD_LOCAL, looks
 *	up FMX_ENTRY_SYMBOL, calls it once with api and validates the table
 *	it returns with filter_loader_check().  A module that fails any step
 *	is dlclose()d without any other of its functions being called (its
 *	ELF constructors and destructors do run: dlopen cannot avoid that).
 *	A path without a '/' is taken relative to the current directory, not
 *	searched for in the system library path.
 *
 *	filter_loader_check() is the validation shared with the built-in
 *	filters: abi_major equal to FMX_ABI_MAJOR; struct_size at least
 *	FMX_FILTER_V1_0_SIZE, and no larger than ours unless the module
 *	declares a newer minor (whose extra trailing members are ignored);
 *	name matching [a-z][a-z0-9_-]{0,31}; no unknown bit in flags;
 *	reserved[] all NULL (unless from a newer minor, then ignored).
 *
 * OWNERSHIP
 *	filter_loader_table() returns a copy of the module's table owned by
 *	the struct filter_module and normalized to this core's struct
 *	fmx_filter: members past the module's struct_size are NULL/0, so the
 *	caller may read every member; reserved[] is zeroed.  abi_minor and
 *	struct_size are the module's own.  name and the hooks point into the
 *	module: they are valid until filter_loader_close(), which the caller
 *	must not call before every instance has been through fini().
 *
 * RETURN VALUES
 *	filter_loader_open() and filter_loader_check() return 0, or -1 with
 *	a one-line message "ORIGIN: reason" in err (truncated to errlen).
 */
#ifndef FRONTMX_FILTER_LOADER_H
#define FRONTMX_FILTER_LOADER_H

#include <stddef.h>

#include "frontmx_filter.h"

/*
 * Size of struct fmx_filter as published in ABI 1.0.  Minor versions
 * only append members after reserved[], so this stays fixed when the
 * struct grows; filter_loader.c asserts it while FMX_ABI_MINOR is 0.
 */
#define FMX_FILTER_V1_0_SIZE \
	(offsetof(struct fmx_filter, reserved) + \
	 sizeof(((struct fmx_filter *)0)->reserved))

#define FILTER_LOADER_NAME_MAX	32
#define FILTER_LOADER_FLAGS	(FMX_FLAG_BLOCKING)	/* every flag this core knows */

struct filter_module;		/* opaque: dlopen handle + the module's table */

int		 filter_loader_open(const char *path, const struct fmx_api *api,
		    struct filter_module **out, char *err, size_t errlen);
const struct fmx_filter *filter_loader_table(const struct filter_module *);
void		 filter_loader_close(struct filter_module *);
int		 filter_loader_check(const struct fmx_filter *f, const char *origin,
		    char *err, size_t errlen);

#endif
