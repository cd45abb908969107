#!/usr/bin/python3
# The upstream connection reads its greeting without waiting for the
# connect to report writable (issue 13: no EPOLLOUT, no SO_ERROR per
# connection), so the greeting, or its absence, is what tells how the
# connect went.  Each way a connect can go still ends as it must:
#   - nothing listens (refused): 451 4.4.1, "connect failed"
#   - the handshake never completes (the listener's accept queue is
#     full, so the kernel drops our SYN): after timeouts.upstream_connect,
#     451 4.4.1, "connect failed ... connect timed out", not a silent server
#   - accepted, but no greeting: after the same bound, 451 4.4.2 timeout,
#     "no complete reply", not a connect failure
#   - accepted and closed at once, or reset, before any byte: a 451
#   - a greeting trickled one byte at a time: the message is relayed
# and the session goes on after each failure.
import os
import re
import socket
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402

FROM, RCPT = 'alice@example.org', 'bob@example.com'
BODY = b'From: alice@example.org\r\nSubject: connect\r\n\r\nbody\r\n'


class RawUpstream:
    """A listener on 127.0.0.1 that does what `mode` says with each connection."""

    def __init__(self, mode, backlog=16):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.accepted = threading.Event()
        register_cleanup(self.stop)
        if mode != 'never-accept':
            threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self.accepted.set()
            if self.mode == 'close':
                c.close()
            elif self.mode == 'reset':
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
                c.close()
            # 'silent': keep it open, say nothing

    def stop(self):
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass


def session(mx, name):
    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, '%s: greeting' % name)
    reply_is(c.ehlo(), 250, None, '%s: EHLO' % name)
    return c


def try_mail(port, name, want_enh, log_re, not_re=None, log_bound=None):
    """A frontmx whose upstream is 127.0.0.1:port; MAIL must get 451 want_enh."""
    mx = Frontmx(port, name='frontmx (%s)' % name,
                 conf={'timeouts': {'upstream_connect': 2, 'upstream_command': 2}})
    c = session(mx, name)
    t0 = time.time()
    r = c.cmd('MAIL FROM:<%s>' % FROM, timeout=20)
    took = time.time() - t0
    ok(r is not None and r.code == 451 and r.enh in want_enh,
       '%s: MAIL gets 451 %s (%r)' % (name, '/'.join(want_enh), r))
    if log_bound is not None:
        ok(took >= log_bound - 0.5, '%s: only after timeouts.upstream_connect (%.1f s)' % (name, took))
    ok(wait_for(lambda: re.search(log_re, mx.log()), 5), '%s: the log says %s' % (name, log_re))
    if not_re is not None:
        unlike(mx.log(), not_re, '%s: and not %s' % (name, not_re))
    reply_is(c.cmd('NOOP'), 250, None, '%s: the session goes on' % name)
    c.quit()
    mx.finish()


def main():
    # 1. refused: nothing listens on the port
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    try_mail(port, 'refused', ('4.4.1',), r'upstream error="connect failed"')

    # 2. the handshake never completes: a listener that never accepts,
    #    its queue (backlog 0: one connection) filled first
    up = RawUpstream('never-accept', backlog=0)
    fillers = []
    for _ in range(3):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(('127.0.0.1', up.port))
        except BlockingIOError:
            pass
        fillers.append(f)
    register_cleanup(lambda: [f.close() for f in fillers])
    time.sleep(0.2)
    try_mail(up.port, 'handshake never completes', ('4.4.1',),
             r'upstream error="connect failed".*connect timed out', log_bound=2)

    # 3. accepted, silent: a timeout, not a connect failure
    up = RawUpstream('silent')
    try_mail(up.port, 'silent after accept', ('4.4.2',),
             r'upstream error="timeout".*no complete reply within 2 s',
             not_re=r'connect failed|connect timed out', log_bound=2)

    # 4. accepted and closed, or reset, before any byte
    up = RawUpstream('close')
    try_mail(up.port, 'closed before the greeting', ('4.4.1', '4.4.2'), r'upstream error=')
    up = RawUpstream('reset')
    try_mail(up.port, 'reset before the greeting', ('4.4.1', '4.4.2'), r'upstream error=')

    # 5. a greeting trickled one byte at a time, then a normal session
    real = Upstream()
    lsock = socket.socket()
    lsock.bind(('127.0.0.1', 0))
    lsock.listen(4)
    register_cleanup(lsock.close)

    def trickle_proxy():
        # every connection (frontmx's prober's too): a thread of its own
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=trickle_one, args=(c,), daemon=True).start()

    def trickle_one(c):
        # trickle the real upstream's greeting, then splice both ways
        u = socket.create_connection(('127.0.0.1', real.port))
        greeting = b''
        while not greeting.endswith(b'\r\n'):
            greeting += u.recv(1)
        for b in greeting:
            c.sendall(bytes([b]))
            time.sleep(0.01)

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        threading.Thread(target=pump, args=(u, c), daemon=True).start()
        pump(c, u)
    threading.Thread(target=trickle_proxy, daemon=True).start()
    mx = Frontmx(lsock.getsockname()[1], name='frontmx (trickled greeting)')
    c = session(mx, 'trickled greeting')
    res = c.transaction(FROM, [RCPT], BODY)
    reply_is(res['dot'], 250, None, 'trickled greeting: message accepted')
    ok(real.wait_messages(1), 'trickled greeting: relayed')
    c.quit()
    mx.finish()


run(main, timeout=120)
