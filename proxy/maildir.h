/*
 * maildir.h - "dir:PATH" upstream: Maildir-style local delivery
 *
 * SYNOPSIS
 *	maildir_prepare(dir, err, errlen);
 *	maildir_deliver(&req, err, errlen);
 *
 * DESCRIPTION
 *	One file per recipient, written into PATH/tmp, fsync'd, then renamed
 *	into PATH/new and the directory fsync'd, so a 250 is only given for
 *	mail that is on disk.  All copies are written to tmp/ before any is
 *	renamed: a failure on the second recipient leaves no copy behind and
 *	the client is told 451, so it retries the whole message.  Files use
 *	LF line ends as Maildir readers (Dovecot, mutt) expect, and start with
 *	Return-Path and Delivered-To.
 *
 *	The writes are blocking; this upstream exists so that `make run` does
 *	real work on a machine without an MTA, not for high volume.
 */
#ifndef FRONTMX_MAILDIR_H
#define FRONTMX_MAILDIR_H

#include <stddef.h>

struct spool;

struct maildir_request {
	const char		 *dir;
	const char		 *hostname;
	const char		 *mail_from;	/* "" for the null sender */
	const char *const	 *rcpts;
	size_t			  nrcpts;
	const char		 *prepend;	/* header fields added by the proxy, CRLF lines */
	size_t			  prependlen;
	struct spool		 *spool;
	size_t			  spool_off;	/* the spool is copied from here on */
	int			  single;	/* one file listing every recipient (quarantine) */
	const char		 *note;		/* extra first header field value, e.g. quarantine reason */
};

int	maildir_prepare(const char *dir, char *err, size_t errlen);
/* 0 delivered to every recipient; -1 nothing delivered, err says why. */
int	maildir_deliver(const struct maildir_request *, char *err, size_t errlen);

#endif
