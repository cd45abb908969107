/*
 * bev.h - write a plain-socket bufferevent's output now, without the
 * EPOLLOUT round trip
 *
 * A socket bufferevent writes only when the loop reports the socket
 * writable, which costs two epoll_ctl calls per small write (add, then
 * delete EPOLLOUT).  SMTP is small writes, one reply or command at a time,
 * to a socket that is almost always writable: bev_flush() writes at once
 * and enables EV_WRITE only for what the kernel did not take, so
 * libevent's usual path (and the write callback) handles the rest.  TLS
 * bufferevents are left to libevent entirely.
 */
#ifndef FRONTMX_BEV_H
#define FRONTMX_BEV_H

struct bufferevent;

/* 1 if bev is a plain socket bufferevent (not a filter such as TLS). */
int	bev_direct(struct bufferevent *);
void	bev_flush(struct bufferevent *);

#endif
