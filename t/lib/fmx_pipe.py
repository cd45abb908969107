"""A raw scripted upstream for the tests of frontmx's pipelining to its
upstream (t/smtp/100, 101): it records what each recv() brought, so a
test can say which commands came in one write, and it answers only what
its handler says, when it says it (early, twice, garbage, never).

    up = RawUpstream(caps)           # PIPE_CAPS by default
    up.script(4, b'250 ok\\r\\n' * 4) # the next client session's connection:
                                     # reads 4 commands, holds its replies
                                     # until it has them all, then sends these
    mx = Frontmx(up.port, ...)
    c = up.session(0)                # that connection, once it served
    c.group                          # the recv() chunks the 4 came in
    c.messages                       # (envelope lines, message) it took

A connection whose first command is QUIT (frontmx's start-up probe, the
prober) is answered and not counted as a session.  Sessions beyond the
scripts are served plainly (serve_rest).  replies may be a callable
(conn, lines) that answers itself (early, twice, garbage, EOF).

Loopback only; one thread per connection; a handler that raises is
recorded in up.errors (a test says so), never lost.
"""
import socket
import threading
import time

from fmx import free_port, register_cleanup, send_all

PIPE_CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES']


class RawConn:
    def __init__(self, idx, sock):
        self.idx = idx
        self.sock = sock
        self.buf = b''
        self.reads = []          # every recv() chunk, in order
        self.group = []          # the chunks the last lines() call took lines from
        self.cmds = []           # every command line read, in order
        self.messages = []       # (envelope lines since the last reply to DATA, message bytes)
        self.envelope = []
        self.closed_by_peer = False
        self.done = threading.Event()

    def send(self, data):
        send_all(self.sock, data)

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return None
        except OSError:
            d = b''
        if not d:
            self.closed_by_peer = True
            return b''
        self.reads.append(d)
        self.buf += d
        return d

    def lines(self, n, timeout=10.0):
        """The next n CRLF lines (fewer if the peer closed or timeout ran
        out)."""
        out = []
        end = time.time() + timeout
        while len(out) < n:
            i = self.buf.find(b'\r\n')
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                out.append(line)
                self.cmds.append(line)
                if line.upper().startswith((b'MAIL', b'RCPT', b'XFORWARD')):
                    self.envelope.append(line)
                continue
            left = end - time.time()
            if left <= 0:
                break
            if not self._recv(left):
                break
        return out

    def take(self, n, timeout=5.0):
        """The first command (None for QUIT, answered), then n-1 more
        within timeout; self.group: every recv() chunk they came in."""
        start = len(self.reads) - (1 if self.buf else 0)
        first = self.line(60.0)
        if first is None or first.upper() == b'QUIT':
            self.send(b'221 2.0.0 bye\r\n')
            return None
        got = [first] + self.lines(n - 1, timeout)
        self.group = self.reads[max(start, 0):]
        return got

    def line(self, timeout=10.0):
        got = self.lines(1, timeout)
        return got[0] if got else None

    def hello(self, caps=None, banner=b'220 raw.test ESMTP\r\n'):
        self.send(banner)
        ehlo = self.line()
        if ehlo is None:
            return False
        caps = ['raw.test'] + list(PIPE_CAPS if caps is None else caps)
        self.send(b''.join(('250%s%s\r\n' % (' ' if i == len(caps) - 1 else '-', c)).encode()
                           for i, c in enumerate(caps)))
        return True

    def serve_rest(self, timeout=30.0, first=None):
        """Answer plainly what comes (first: a line already read):
        MAIL/RCPT/XFORWARD/RSET/NOOP 250, DATA 354 and the message 250,
        QUIT 221 and close."""
        end = time.time() + timeout
        while time.time() < end:
            line, first = (first, None) if first is not None else (self.line(end - time.time()), None)
            if line is None:
                return
            verb = line[:4].upper()
            if verb == b'DATA':
                self.send(b'354 go ahead\r\n')
                msg = b''
                while not msg.endswith(b'\r\n.\r\n') and time.time() < end:
                    i = self.buf.find(b'\r\n.\r\n')
                    if i >= 0:
                        msg, self.buf = self.buf[:i + 5], self.buf[i + 5:]
                        break
                    if not self._recv(end - time.time()):
                        return
                self.messages.append((list(self.envelope), msg))
                self.envelope = []
                self.send(b'250 2.0.0 queued as RAW%d\r\n' % len(self.messages))
            elif verb == b'QUIT':
                self.send(b'221 2.0.0 bye\r\n')
                return
            elif verb == b'RSET':
                self.envelope = []
                self.send(b'250 2.0.0 ok\r\n')
            else:
                self.send(b'250 2.0.0 ok\r\n')


class RawUpstream:
    def __init__(self, caps=None):
        self.caps = caps
        self.scripts = []
        self.served = []            # the session connections, in order
        self.port = free_port()
        self.conns = []
        self.errors = []
        self.lock = threading.Condition()
        self._stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', self.port))
        self.lsock.listen(64)
        register_cleanup(self.stop)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                c = RawConn(len(self.conns), s)
                self.conns.append(c)
                self.lock.notify_all()
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self._serve(c)
        except Exception as e:      # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append((c.idx, repr(e)))
        finally:
            try:
                c.sock.close()
            except OSError:
                pass
            c.done.set()

    def script(self, n, replies, caps=None):
        """The next session's connection: take n commands, then replies
        (bytes sent in one write, or callable(conn, lines)), then plain."""
        with self.lock:
            self.scripts.append((n, replies, caps))

    def _serve(self, c):
        with self.lock:
            sc = self.scripts[0] if self.scripts else None
        if not c.hello(sc[2] if sc and sc[2] is not None else self.caps):
            return
        got = c.take(sc[0] if sc else 1)
        if got is None:
            return          # a probe: EHLO, QUIT
        with self.lock:
            if sc is not None and self.scripts and self.scripts[0] is sc:
                self.scripts.pop(0)
            else:
                sc = None
            self.served.append(c)
            self.lock.notify_all()
        if sc is None:
            c.serve_rest(first=got[0])
            return
        if callable(sc[1]):
            sc[1](c, got)
        else:
            c.send(sc[1])
            c.serve_rest()

    def session(self, i, timeout=15.0):
        """The i-th session connection, once its handler is over."""
        end = time.time() + timeout
        with self.lock:
            while len(self.served) <= i and time.time() < end:
                self.lock.wait(0.1)
            c = self.served[i] if len(self.served) > i else None
        if c is not None:
            c.done.wait(max(end - time.time(), 0.1))
        return c

    def stop(self):
        self._stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for c in list(self.conns):
            try:
                c.sock.close()
            except OSError:
                pass

