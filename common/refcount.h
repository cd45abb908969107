/*
 * refcount.h - the one reference count of the shared, immutable objects
 * (struct config, struct runtime, struct filter_chain)
 *
 * SYNOPSIS
 *	#include "refcount.h"
 *
 *	obj->refcount = 1;		(before anyone else can see obj)
 *	refcount_hold(&obj->refcount);
 *	if (refcount_drop(&obj->refcount))
 *		obj_free(obj);
 *
 * DESCRIPTION
 *	A reload builds a new configuration, runtime and filter chain while
 *	workers still hold the old ones; each worker takes and drops its
 *	references from its own thread, and the last one frees.  The count
 *	is a plain int changed only through these atomic builtins.
 *
 *	refcount_hold() is relaxed: taking a reference needs one already
 *	held, so nothing can be freed under it and nothing is published by
 *	it.  refcount_drop() is acquire-release: each holder's last reads of
 *	the object happen before its decrement (release), and whoever brings
 *	the count to zero sees all of them before it frees (acquire).
 *
 * RETURN VALUES
 *	refcount_drop(): 1 when that was the last reference (free the
 *	object), else 0.
 */
#ifndef FRONTMX_REFCOUNT_H
#define FRONTMX_REFCOUNT_H

static inline void
refcount_hold(int *rc)
{
	__atomic_add_fetch(rc, 1, __ATOMIC_RELAXED);
}

static inline int
refcount_drop(int *rc)
{
	return __atomic_sub_fetch(rc, 1, __ATOMIC_ACQ_REL) == 0;
}

#endif
