/*
 * bev.h - plain-socket bufferevents without libevent's extra syscalls
 *
 * Writes: a socket bufferevent writes only when the loop reports the
 * socket writable, which costs two epoll_ctl calls per small write (add,
 * then delete EPOLLOUT).  SMTP is small writes, one reply or command at a
 * time, to a socket that is almost always writable: bev_flush() writes at
 * once and enables EV_WRITE only for what the kernel did not take, so
 * libevent's usual path (and the write callback) handles the rest.
 *
 * Reads: libevent's socket read asks the kernel how much is there
 * (ioctl FIONREAD) before every read, then reads at most 4096 bytes of it
 * (EVBUFFER_MAX_READ in libevent 2.1): four syscalls and two loop turns
 * for a 10 KiB message body.  bev_read_own() gives the bufferevent's read
 * event our callback instead, which reads without asking first, as much
 * as the read watermark and the bufferevent's max single read allow, and
 * appends it to the input buffer.  Everything else stays libevent's:
 * enable/disable, the read timeout, watermark suspension, deferred
 * callbacks.
 *
 * TLS bufferevents are left to libevent entirely; the plain bufferevent
 * under a TLS filter (STARTTLS) keeps our read callback, and the filter
 * reads from its input buffer as before.
 */
#ifndef FRONTMX_BEV_H
#define FRONTMX_BEV_H

struct bufferevent;

/* 1 if bev is a plain socket bufferevent (not a filter such as TLS). */
int	bev_direct(struct bufferevent *);
void	bev_flush(struct bufferevent *);
/* Plain socket bufferevent with its fd set: our read callback (above). */
void	bev_read_own(struct bufferevent *);

#endif
