/*
 * filter_loader.c - load and validate filter modules
 *
 * A module is untrusted until its table has passed every check: the only
 * function of a module we ever call before that is its entry point, and a
 * refused module is closed again at once.  Messages name the file and say
 * what to do, because they end up in front of an operator at startup.
 */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter_loader.h"

#if FMX_ABI_MINOR == 0
_Static_assert(FMX_FILTER_V1_0_SIZE == sizeof(struct fmx_filter),
    "FMX_FILTER_V1_0_SIZE must be the size of the 1.0 struct fmx_filter");
#endif

struct filter_module {
	void			*handle;	/* dlopen() */
	struct fmx_filter	 table;		/* normalized copy, see filter_loader.h */
};

__attribute__((format(printf, 4, 5)))
static int
filter_loader_fail(char *err, size_t errlen, const char *origin,
    const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL || errlen == 0)
		return -1;
	n = snprintf(err, errlen, "%s: ", origin);
	if (n >= 0 && (size_t)n < errlen) {
		va_start(ap, fmt);
		vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/*
 * Copy at most FILTER_LOADER_NAME_MAX characters of a refused name for
 * the message, '?' for anything unprintable: the name is module data.
 */
static void
filter_loader_quote(const char *name, char *buf, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len && i < FILTER_LOADER_NAME_MAX && name[i] != '\0'; i++)
		buf[i] = (name[i] >= 0x20 && name[i] < 0x7f) ? name[i] : '?';
	buf[i] = '\0';
}

static int
filter_loader_name_ok(const char *name)
{
	size_t i;

	if (name[0] < 'a' || name[0] > 'z')
		return 0;
	for (i = 1; name[i] != '\0'; i++) {
		if (i >= FILTER_LOADER_NAME_MAX)
			return 0;
		if (!((name[i] >= 'a' && name[i] <= 'z') ||
		    (name[i] >= '0' && name[i] <= '9') ||
		    name[i] == '_' || name[i] == '-'))
			return 0;
	}
	return 1;
}

int
filter_loader_check(const struct fmx_filter *f, const char *origin,
    char *err, size_t errlen)
{
	char quoted[FILTER_LOADER_NAME_MAX + 1];
	size_t i;

	if (f == NULL)
		return filter_loader_fail(err, errlen, origin, "no filter table");
	/* The first three members are the same in every major version. */
	if (f->abi_major != FMX_ABI_MAJOR)
		return filter_loader_fail(err, errlen, origin,
		    "built for filter ABI %u.%u, frontmx provides %u.%u; "
		    "rebuild the module", f->abi_major, f->abi_minor,
		    FMX_ABI_MAJOR, FMX_ABI_MINOR);
	if (f->struct_size < FMX_FILTER_V1_0_SIZE)
		return filter_loader_fail(err, errlen, origin,
		    "struct_size %zu is smaller than struct fmx_filter of "
		    "ABI %u.0 (%zu bytes); rebuild the module",
		    f->struct_size, FMX_ABI_MAJOR, FMX_FILTER_V1_0_SIZE);
	/*
	 * A newer minor may have appended members we ignore; an older or
	 * equal one cannot be larger than ours: a mismatched header or
	 * garbage in the table.
	 */
	if (f->abi_minor <= FMX_ABI_MINOR && f->struct_size > sizeof *f)
		return filter_loader_fail(err, errlen, origin,
		    "struct_size %zu is larger than struct fmx_filter of "
		    "ABI %u.%u (%zu bytes); rebuild the module",
		    f->struct_size, f->abi_major, f->abi_minor, sizeof *f);
	if (f->name == NULL || f->name[0] == '\0')
		return filter_loader_fail(err, errlen, origin,
		    "the filter has no name");
	if (!filter_loader_name_ok(f->name)) {
		filter_loader_quote(f->name, quoted, sizeof quoted);
		return filter_loader_fail(err, errlen, origin,
		    "invalid filter name \"%s\" (want [a-z][a-z0-9_-]{0,%d})",
		    quoted, FILTER_LOADER_NAME_MAX - 1);
	}
	if ((f->flags & ~(uint32_t)FILTER_LOADER_FLAGS) != 0)
		return filter_loader_fail(err, errlen, origin,
		    "unknown flags 0x%x (frontmx %u.%u knows 0x%x); "
		    "rebuild the module", (unsigned)f->flags, FMX_ABI_MAJOR,
		    FMX_ABI_MINOR, (unsigned)FILTER_LOADER_FLAGS);
	/*
	 * Kept NULL so that a later minor may give them a meaning, which we
	 * then ignore like any member newer than us.
	 */
	for (i = 0; f->abi_minor <= FMX_ABI_MINOR &&
	    i < sizeof f->reserved / sizeof f->reserved[0]; i++)
		if (f->reserved[i] != NULL)
			return filter_loader_fail(err, errlen, origin,
			    "reserved[%zu] is not NULL; rebuild the module", i);
	return 0;
}

int
filter_loader_open(const char *path, const struct fmx_api *api,
    struct filter_module **out, char *err, size_t errlen)
{
	struct filter_module *m;
	const struct fmx_filter *f;
	/* ISO C has no object -> function pointer conversion; POSIX needs it. */
	union {
		void		*obj;
		fmx_entry_fn	 fn;
	} sym;
	const char *msg, *opened;
	char *rel = NULL;
	void *handle;
	size_t plen = strlen(path), olen;

	*out = NULL;
	/* Without a '/', dlopen() would search the system library path. */
	if (strchr(path, '/') == NULL) {
		if ((rel = malloc(plen + 3)) == NULL)
			return filter_loader_fail(err, errlen, path, "out of memory");
		memcpy(rel, "./", 2);
		memcpy(rel + 2, path, plen + 1);
	}
	opened = rel != NULL ? rel : path;
	handle = dlopen(opened, RTLD_NOW | RTLD_LOCAL);
	if (handle == NULL) {
		/* glibc's message usually starts with the path already. */
		if ((msg = dlerror()) == NULL)
			msg = "dlopen failed";
		olen = strlen(opened);
		if (strncmp(msg, opened, olen) == 0 && strncmp(msg + olen, ": ", 2) == 0)
			msg += olen + 2;
		filter_loader_fail(err, errlen, path, "%s", msg);
		free(rel);
		return -1;
	}
	free(rel);

	dlerror();
	if ((sym.obj = dlsym(handle, FMX_ENTRY_SYMBOL)) == NULL) {
		filter_loader_fail(err, errlen, path, "no %s symbol - not a "
		    "frontmx filter module", FMX_ENTRY_SYMBOL);
		goto fail;
	}
	if ((f = sym.fn(api)) == NULL) {
		filter_loader_fail(err, errlen, path, "%s() returned NULL: the "
		    "module declined this frontmx (filter ABI %u.%u)",
		    FMX_ENTRY_SYMBOL, FMX_ABI_MAJOR, FMX_ABI_MINOR);
		goto fail;
	}
	if (filter_loader_check(f, path, err, errlen) == -1)
		goto fail;

	if ((m = calloc(1, sizeof *m)) == NULL) {
		filter_loader_fail(err, errlen, path, "out of memory");
		goto fail;
	}
	m->handle = handle;
	/* Members the module does not have stay NULL; newer ones are ignored. */
	memcpy(&m->table, f, f->struct_size < sizeof m->table ?
	    f->struct_size : sizeof m->table);
	memset(m->table.reserved, 0, sizeof m->table.reserved);
	*out = m;
	return 0;

fail:
	dlclose(handle);
	return -1;
}

const struct fmx_filter *
filter_loader_table(const struct filter_module *m)
{
	return &m->table;
}

void
filter_loader_close(struct filter_module *m)
{
	if (m == NULL)
		return;
	dlclose(m->handle);
	free(m);
}
