"""fmx_auth.py - SMTP AUTH (RFC 4954) helpers for t/smtp/44-auth.t.

Builds on fmx.py and fmx_tls.py (never edits them):

    from fmx import *
    from fmx_tls import *
    from fmx_auth import *

    up = AuthUpstream(users={'alice': 'secret'})     # advertises AUTH PLAIN LOGIN
    mx = frontmx_listeners_args(up, [listener('starttls', certs, auth=True)],
                                args=['-v'])
    plain_ir('alice', 'secret')                      # base64 of \\0alice\\0secret

Pieces:
  AuthUpstream             scripted SMTP server (raw sockets, a thread per
                           connection) with AUTH PLAIN and LOGIN; records
                           every line it receives and who authenticated on
                           which connection
  FrontmxArgs              fmx.Frontmx started with extra command-line
                           arguments (e.g. -v)
  frontmx_listeners_args   fmx_tls.frontmx_listeners with extra arguments
  b64, plain_ir            SASL encodings
"""

import base64
import os
import socket
import subprocess
import threading
import time

import fmx
from fmx import Frontmx, free_port, ok, diag, wait_for, frontmx_path

__all__ = ['AuthUpstream', 'FrontmxArgs', 'frontmx_listeners_args', 'b64', 'plain_ir']


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def plain_ir(user, password, authzid=''):
    """RFC 4616 PLAIN message: authzid NUL authcid NUL passwd, base64."""
    return b64(('%s\0%s\0%s' % (authzid, user, password)).encode())


# ---------------------------------------------------------------- upstream

class AuthUpstream:
    """A small SMTP server that authenticates.

    users        {name: password} accepted by PLAIN and LOGIN
    close_users  names whose credentials make the server close the
                 connection without a reply (an MTA dying mid-AUTH)
    caps         EHLO keywords

    Attributes a test may change while it runs:
      plain_challenge  the 334 sent for AUTH PLAIN without an initial
                       response (bytes, CRLF included; default one line)
      multi334_users   LOGIN user names whose "Password:" challenge comes
                       as a multi-line 334 (a misbehaving server)
      cancel_reply     the reply to a "*" cancelling an exchange (default
                       501; e.g. a 235 from a server that ignores "*")

    Records, under .lock:
      .lines     (conn, bytes) for every line received, CRLF included,
                 SASL responses too
      .sasl      (conn, bytes) for every line received where a SASL
                 response was due (after a 334)
      .auth      {conn: user} for every connection that authenticated
      .auth_attempts  (conn, mechanism, user or None, result code)
      .messages  dicts: conn, user (authenticated on that connection or
                 None), mail, rcpts, data (un-stuffed)
      .errors    (conn, text): protocol violations by the client (a line
                 not ending in CRLF only, AUTH twice, AUTH inside a
                 transaction, MAIL before EHLO, unknown command, ...)

    Relay policy is left to the proxy: every RCPT is accepted, so any
    refusal the client sees is the proxy's own."""

    CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'AUTH PLAIN LOGIN']

    def __init__(self, users=None, close_users=(), caps=None, hostname='upstream.test'):
        self.users = dict(users or {'alice': 'secret'})
        self.close_users = set(close_users)
        self.caps = list(self.CAPS if caps is None else caps)
        self.hostname = hostname
        self.plain_challenge = b'334 \r\n'
        self.multi334_users = set()
        self.cancel_reply = b'501 5.7.0 Authentication cancelled\r\n'
        self.lock = threading.Condition()
        self.lines, self.auth_attempts, self.messages, self.errors = [], [], [], []
        self.sasl = []
        self.auth = {}
        self.closed = set()         # connections that have ended
        self.nconn = 0
        self._stop = False
        self.socks = []
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(32)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        fmx.register_cleanup(self.stop)
        threading.Thread(target=self._accept, daemon=True).start()

    # -- accessors
    def all_lines(self):
        with self.lock:
            return [l for _, l in self.lines]

    def conn_lines(self, conn):
        with self.lock:
            return [l for c, l in self.lines if c == conn]

    def wait_messages(self, n, timeout=10):
        return wait_for(lambda: len(self.messages) >= n, timeout)

    def stop(self):
        self._stop = True
        for s in [self.lsock] + list(self.socks):
            try:
                s.close()
            except OSError:
                pass

    # -- server
    def _accept(self):
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                idx = self.nconn
                self.nconn += 1
            self.socks.append(s)
            threading.Thread(target=self._serve, args=(idx, s), daemon=True).start()

    def _err(self, idx, what):
        with self.lock:
            self.errors.append((idx, what))

    def _ehlo(self):
        lines = [self.hostname] + self.caps
        return b''.join(('250%s%s\r\n' % ('-' if i < len(lines) - 1 else ' ', l)).encode()
                        for i, l in enumerate(lines))

    def _check(self, idx, mech, user, password):
        """(reply bytes, close?) for a credential."""
        if user in self.close_users:
            with self.lock:
                self.auth_attempts.append((idx, mech, user, None))
            return None, True
        good = user is not None and user in self.users and self.users[user] == password
        with self.lock:
            self.auth_attempts.append((idx, mech, user, 235 if good else 535))
            if good:
                self.auth[idx] = user
        if good:
            return b'235 2.7.0 Authentication successful\r\n', False
        return b'535 5.7.8 Error: authentication failed: bad credentials\r\n', False

    def _password_challenge(self, user):
        if user in self.multi334_users:
            return b'334-UGFzc3dvcmQ6\r\n334 250 2.7.0 Authentication successful\r\n'
        return b'334 UGFzc3dvcmQ6\r\n'

    @staticmethod
    def _decode(text):
        try:
            return base64.b64decode(text.encode('latin-1'), validate=True)
        except (ValueError, TypeError):
            return None

    def _plain(self, idx, resp):
        raw = self._decode(resp)
        if raw is None or raw.count(b'\0') != 2:
            return b'501 5.5.2 Error: malformed PLAIN response\r\n', False
        _authz, user, pw = raw.split(b'\0')
        return self._check(idx, 'PLAIN', user.decode('latin-1'), pw.decode('latin-1'))

    def _serve(self, idx, s):
        s.settimeout(30)
        buf = b''
        st = {'ehlo': False, 'mail': None, 'rcpts': [], 'data': None}
        sasl = None          # ('PLAIN',) or ('LOGIN-user',) / ('LOGIN-pass', user)

        def send(b):
            s.sendall(b)

        try:
            send(('220 %s ESMTP auth-script\r\n' % self.hostname).encode())
            while not self._stop:
                while b'\n' not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                i = buf.index(b'\n')
                line, buf = buf[:i + 1], buf[i + 1:]
                with self.lock:
                    self.lines.append((idx, line))
                if not line.endswith(b'\r\n') or b'\r' in line[:-2]:
                    self._err(idx, 'line not ending in CRLF only: %r' % line[:80])
                if b'\0' in line:
                    self._err(idx, 'NUL in line: %r' % line[:80])
                if st['data'] is not None:
                    if line == b'.\r\n':
                        with self.lock:
                            self.messages.append({'conn': idx, 'user': self.auth.get(idx),
                                                  'mail': st['mail'], 'rcpts': st['rcpts'],
                                                  'data': st['data']})
                            n = len(self.messages)
                            self.lock.notify_all()
                        st['data'], st['mail'], st['rcpts'] = None, None, []
                        send(b'250 2.0.0 Ok: queued as AUTH%04d\r\n' % n)
                    else:
                        st['data'] += line[1:] if line.startswith(b'.') else line
                    continue
                text = line[:-2].decode('latin-1') if line.endswith(b'\r\n') else \
                    line.rstrip(b'\r\n').decode('latin-1')
                if sasl is not None:
                    # a SASL response line (RFC 4954 4)
                    state, sasl = sasl, None
                    with self.lock:
                        self.sasl.append((idx, line))
                    if text == '*':
                        r = self.cancel_reply
                        if r.startswith(b'235') and state[0] == 'LOGIN-pass':
                            with self.lock:
                                self.auth[idx] = state[1]
                        send(r)
                        continue
                    if state[0] == 'PLAIN':
                        r, close = self._plain(idx, text)
                    elif state[0] == 'LOGIN-user':
                        u = self._decode(text)
                        if u is None:
                            r, close = b'501 5.5.2 Error: bad base64\r\n', False
                        else:
                            sasl = ('LOGIN-pass', u.decode('latin-1'))
                            send(self._password_challenge(sasl[1]))
                            continue
                    else:
                        p = self._decode(text)
                        if p is None:
                            r, close = b'501 5.5.2 Error: bad base64\r\n', False
                        else:
                            r, close = self._check(idx, 'LOGIN', state[1], p.decode('latin-1'))
                    if close:
                        return
                    send(r)
                    continue
                verb = text.split(' ', 1)[0].upper()
                arg = text[len(verb) + 1:] if ' ' in text else ''
                if verb in ('EHLO', 'HELO'):
                    st = {'ehlo': True, 'mail': None, 'rcpts': [], 'data': None}
                    send(self._ehlo() if verb == 'EHLO' else b'250 %s\r\n' % self.hostname.encode())
                elif verb == 'AUTH':
                    if not st['ehlo']:
                        self._err(idx, 'AUTH before EHLO')
                    if idx in self.auth:
                        self._err(idx, 'AUTH after a successful AUTH')
                        send(b'503 5.5.1 Error: already authenticated\r\n')
                        continue
                    if st['mail']:
                        self._err(idx, 'AUTH inside a transaction')
                        send(b'503 5.5.1 Error: MAIL transaction in progress\r\n')
                        continue
                    parts = arg.split(' ')
                    mech = parts[0].upper()
                    ir = parts[1] if len(parts) > 1 else None
                    if len(parts) > 2:
                        send(b'501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n')
                    elif mech == 'PLAIN':
                        if ir is None:
                            sasl = ('PLAIN',)
                            send(self.plain_challenge)
                        else:
                            r, close = self._plain(idx, ir)
                            if close:
                                return
                            send(r)
                    elif mech == 'LOGIN':
                        if ir is None:
                            sasl = ('LOGIN-user',)
                            send(b'334 VXNlcm5hbWU6\r\n')
                        else:
                            u = self._decode(ir)
                            if u is None:
                                send(b'501 5.5.2 Error: bad base64\r\n')
                            else:
                                sasl = ('LOGIN-pass', u.decode('latin-1'))
                                send(self._password_challenge(sasl[1]))
                    else:
                        send(b'504 5.5.4 Unrecognized authentication type\r\n')
                elif verb == 'MAIL':
                    if not st['ehlo']:
                        self._err(idx, 'MAIL before EHLO')
                    if st['mail']:
                        self._err(idx, 'nested MAIL')
                        send(b'503 5.5.1 Error: nested MAIL command\r\n')
                        continue
                    st['mail'], st['rcpts'] = text, []
                    send(b'250 2.1.0 Ok\r\n')
                elif verb == 'RCPT':
                    if not st['mail']:
                        self._err(idx, 'RCPT without MAIL')
                        send(b'503 5.5.1 Error: need MAIL command\r\n')
                        continue
                    st['rcpts'].append(text)
                    send(b'250 2.1.5 Ok\r\n')
                elif verb == 'DATA':
                    if not st['rcpts']:
                        self._err(idx, 'DATA without RCPT')
                        send(b'503 5.5.1 Error: need RCPT command\r\n')
                        continue
                    st['data'] = b''
                    send(b'354 End data with <CR><LF>.<CR><LF>\r\n')
                elif verb == 'RSET':
                    st['mail'], st['rcpts'] = None, []
                    send(b'250 2.0.0 Ok\r\n')
                elif verb == 'NOOP':
                    send(b'250 2.0.0 Ok\r\n')
                elif verb == 'QUIT':
                    send(b'221 2.0.0 Bye\r\n')
                    return
                else:
                    self._err(idx, 'unknown command %r' % text[:60])
                    send(b'502 5.5.2 Error: command not recognized\r\n')
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass
            with self.lock:
                self.closed.add(idx)


# ---------------------------------------------------------------- frontmx with arguments

class FrontmxArgs(Frontmx):
    """fmx.Frontmx, started as `$FRONTMX ARGS... -c FILE` (e.g. args=['-v'])."""

    def __init__(self, upstream=None, args=(), **kw):
        self.extra_args = list(args)
        super().__init__(upstream, **kw)

    def start(self, expect_start=True):
        exe = frontmx_path()
        if not os.access(exe, os.X_OK):
            ok(False, '%s: binary %s exists' % (self.name, exe))
            raise RuntimeError('no frontmx binary at %s (set FRONTMX)' % exe)
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0:halt_on_error=1')
        env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')
        self.log_fh = open(self.logfile, 'ab')
        self.proc = fmx.start_process([exe] + self.extra_args + ['-c', self.conffile],
                                      stdout=self.log_fh, stderr=subprocess.STDOUT,
                                      env=env, cwd=self.dir)
        # a guard against a hang only: under valgrind on a loaded machine
        # the start alone can take well over 10 s
        end = time.time() + 60
        up = False
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            if fmx.port_open(self.port):
                up = True
                break
            time.sleep(0.05)
        if expect_start:
            ok(up, '%s started (%s) and listens on 127.0.0.1:%d' % (
                self.name, ' '.join(self.extra_args) or 'no extra arguments', self.port))
            if not up:
                diag('exit status: %s' % self.proc.poll())
                diag('log:\n' + self.log()[-4000:])
                raise RuntimeError('frontmx did not start')
        return up


def frontmx_listeners_args(upstream, listeners, conf=None, name='frontmx', args=(),
                           expect_start=True):
    """fmx_tls.frontmx_listeners, with extra command-line arguments."""
    mx = FrontmxArgs(upstream, args=args, start=False, name=name)
    ports, groups = [], []
    for i, l in enumerate(listeners):
        port = mx.port if i == 0 else free_port()
        g = {'address': '127.0.0.1:%d' % port}
        g.update(l)
        ports.append(port)
        groups.append(g)
    mx.ports = ports
    c = dict(conf or {})
    c['listen'] = groups
    mx.write_conf(conf=c)
    up = mx.start(expect_start)
    if up:
        ok(all(wait_for(lambda p=p: fmx.port_open(p), 5) for p in ports[1:]),
           '%s: all %d listeners accept connections' % (name, len(ports)))
    return mx
