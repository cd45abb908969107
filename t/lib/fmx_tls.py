"""fmx_tls.py - TLS and PROXY-protocol helpers for t/smtp/4*.t.

Builds on fmx.py (never edits it):

    from fmx import *
    from fmx_tls import *

    certs = make_cert(tmpdir(), 'mx.test.example')      # .cert, .key (PEM)
    mx = frontmx_listeners(up, [listener('starttls', certs),
                                listener('implicit', certs)])
    mx.ports                                            # one per listener
    c = TlsClient(mx.ports[0])                          # SmtpClient + TLS
    c.greeting(); c.ehlo(); c.starttls(client_ctx(certs.cert, 'mx.test.example'))

Pieces:
  make_cert          self-signed certificate (openssl req -x509) for a name
  client_ctx         ssl.SSLContext for a client (verifying or not, versions)
  TlsClient          SmtpClient that can STARTTLS or start in TLS
  SClient            drives `openssl s_client -starttls smtp -crlf`
  frontmx_listeners  Frontmx with several (TLS / PROXY) listeners
  tls_postfix        postfix.Postfix with smtpd TLS (security level may)
  TlsScriptUpstream  scripted upstream with STARTTLS (raw sockets + ssl),
                     optional response injection after its 220
  proxy_v1/proxy_v2  PROXY protocol headers (haproxy proxy-protocol.txt)
"""

import os
import queue
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import warnings

import fmx
from fmx import SmtpClient, Frontmx, free_port, tmpdir, wait_for, ok, diag

warnings.filterwarnings('ignore', category=DeprecationWarning)

__all__ = [
    'Certs', 'make_cert', 'client_ctx', 'tls11_ctx', 'tls11_available',
    'TlsClient', 'SClient', 'listener', 'frontmx_listeners', 'tls_postfix',
    'TlsScriptUpstream', 'proxy_v1', 'proxy_v2', 'PROXY_V2_SIG',
    'port_open', 'received_field',
]


# ---------------------------------------------------------------- certificates

class Certs:
    def __init__(self, cert, key, name):
        self.cert, self.key, self.name = cert, key, name

    def __repr__(self):
        return '<Certs %s %s>' % (self.name, self.cert)


def make_cert(directory, name, days=2):
    """Self-signed P-256 certificate for `name` (CN and SAN DNS), made by
    `openssl req -x509` in directory; it is its own trust anchor."""
    base = os.path.join(directory, name)
    cert, key = base + '.crt', base + '.key'
    p = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec',
                        '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                        '-keyout', key, '-out', cert, '-days', str(days),
                        '-subj', '/CN=%s' % name,
                        '-addext', 'subjectAltName=DNS:%s' % name],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    if p.returncode != 0:
        raise RuntimeError('openssl req failed: %s' % p.stdout.decode(errors='replace'))
    os.chmod(key, 0o600)
    return Certs(cert, key, name)


def client_ctx(cafile=None, hostname_check=True, max_version=None, min_version=None,
               ciphers=None):
    """Client context.  With cafile: verify the chain against it (and the
    name given to wrap, when hostname_check); without: no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = hostname_check
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def tls11_ctx():
    """A client that offers TLS 1.1 and nothing newer, or None when this
    Python/OpenSSL cannot build one."""
    if not getattr(ssl, 'HAS_TLSv1_1', False) or not hasattr(ssl.TLSVersion, 'TLSv1_1'):
        return None
    try:
        return client_ctx(min_version=ssl.TLSVersion.TLSv1_1,
                          max_version=ssl.TLSVersion.TLSv1_1,
                          ciphers='DEFAULT:@SECLEVEL=0')
    except (ssl.SSLError, ValueError):
        return None


def tls11_available(certs):
    """Positive control: can tls11_ctx() really complete a TLS 1.1
    handshake here (against a local Python server that allows it)?
    Returns (True, '') or (False, why)."""
    cctx = tls11_ctx()
    if cctx is None:
        return False, 'TLS 1.1 not supported by this Python/OpenSSL'
    try:
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(certs.cert, certs.key)
        sctx.minimum_version = ssl.TLSVersion.TLSv1_1
        sctx.maximum_version = ssl.TLSVersion.TLSv1_1
        sctx.set_ciphers('DEFAULT:@SECLEVEL=0')
    except (ssl.SSLError, ValueError) as e:
        return False, 'cannot configure a TLS 1.1 server: %s' % e
    ls = socket.socket()
    ls.bind(('127.0.0.1', 0))
    ls.listen(1)
    ls.settimeout(5)
    res = {}

    def serve():
        try:
            s, _ = ls.accept()
            s.settimeout(5)
            t = sctx.wrap_socket(s, server_side=True)
            res['server'] = t.version()
            t.close()
        except Exception as e:      # noqa: B902
            res['server_err'] = str(e)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        s = socket.create_connection(('127.0.0.1', ls.getsockname()[1]), timeout=5)
        t = cctx.wrap_socket(s)
        v = t.version()
        t.close()
    except Exception as e:          # noqa: B902
        return False, 'local TLS 1.1 handshake failed: %s' % e
    finally:
        th.join(5)
        ls.close()
    if v != 'TLSv1.1':
        return False, 'negotiated %s, not TLSv1.1' % v
    return True, ''


# ---------------------------------------------------------------- clients

class TlsClient(SmtpClient):
    """SmtpClient whose socket can be wrapped in TLS.

    TlsClient(port, implicit=ctx)   handshake at once (implicit TLS)
    c.starttls(ctx, server_hostname)  -> (reply to STARTTLS, error or None)
    c.tls_version(), c.cipher()
    """

    def __init__(self, port, implicit=None, server_hostname=None, **kw):
        super().__init__(port, **kw)
        self.tls_error = None
        self.plain_sock = self.sock
        if implicit is not None:
            self.wrap(implicit, server_hostname)

    def wrap(self, ctx=None, server_hostname=None):
        """TLS handshake on the current socket; raises ssl.SSLError/OSError."""
        ctx = ctx or client_ctx()
        self.plain_sock = self.sock
        t = ctx.wrap_socket(self.sock, server_hostname=server_hostname,
                            do_handshake_on_connect=False)
        t.settimeout(self.timeout)
        t.do_handshake()
        self.sock = t
        self.transcript.append(('=', b'TLS ' + (t.version() or '?').encode()))
        return t

    def starttls(self, ctx=None, server_hostname=None):
        """STARTTLS; on 220, the handshake.  Returns (reply, error): error is
        None on success, else the exception (or a description)."""
        r = self.cmd('STARTTLS')
        if r.code != 220:
            return r, 'STARTTLS refused'
        if self.buf:
            # bytes after the 220 in plaintext: the server is answering
            # something pipelined (or injecting)
            return r, 'plaintext bytes after 220: %r' % self.buf
        try:
            self.wrap(ctx, server_hostname)
        except (ssl.SSLError, OSError) as e:
            self.tls_error = e
            return r, e
        return r, None

    def tls_version(self):
        return self.sock.version() if isinstance(self.sock, ssl.SSLSocket) else None

    def cipher(self):
        return self.sock.cipher() if isinstance(self.sock, ssl.SSLSocket) else None

    def quiet_for(self, seconds):
        """True if nothing arrives for `seconds` (bytes received are kept in
        .buf for the caller)."""
        before = len(self.buf)
        self._fill(time.time() + seconds)
        return len(self.buf) == before and not self.eof


class SClient:
    """`openssl s_client -starttls smtp -crlf`: it does the greeting, its own
    EHLO and STARTTLS; then we talk through its stdin/stdout.

    -quiet (implies -ign_eof) and -nocommands (so "RCPT"/"QUIT" lines are
    not taken as s_client's R/Q commands)."""

    def __init__(self, port, cafile=None, name='mx.test.example', helo='sclient.example',
                 extra=(), timeout=10.0):
        argv = ['openssl', 's_client', '-starttls', 'smtp', '-crlf', '-quiet', '-nocommands',
                '-connect', '127.0.0.1:%d' % port, '-name', helo]
        if cafile:
            argv += ['-CAfile', cafile, '-verify_return_error', '-verify_hostname', name]
        argv += list(extra)
        self.timeout = timeout
        self.errfile = os.path.join(tmpdir('fmx-sc-'), 'stderr')
        self.errfh = open(self.errfile, 'wb')
        self.p = fmx.start_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=self.errfh)
        self.q = queue.Queue()
        self.lines = []
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in iter(self.p.stdout.readline, b''):
            self.q.put(line)
        self.q.put(None)

    def stderr(self):
        with open(self.errfile, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        try:
            self.p.stdin.write(data)
            self.p.stdin.flush()
            return True
        except OSError:
            return False

    def reply(self, timeout=None):
        """One reply as fmx.Reply (code None on EOF/timeout)."""
        deadline = time.time() + (timeout or self.timeout)
        lines, raw = [], b''
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                return fmx.Reply(None, lines, raw, 'timeout')
            if line is None:
                self.q.put(None)
                return fmx.Reply(None, lines, raw, 'eof')
            raw += line
            self.lines.append(line)
            m = re.match(rb'^([2-5]\d\d)([ -]?)(.*?)\r?\n$', line, re.S)
            if not m:
                return fmx.Reply(-1, lines + [line.decode('latin-1')], raw, 'malformed')
            lines.append(m.group(3).decode('latin-1'))
            if m.group(2) != b'-':
                return fmx.Reply(int(m.group(1)), lines, raw)

    def cmd(self, line, timeout=None):
        # -crlf turns our LF into CRLF
        self.send(line + '\n')
        return self.reply(timeout)

    def wait(self, timeout=10):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        if self.p.poll() is None:
            try:
                self.p.terminate()
                self.p.wait(timeout=5)
            except Exception:       # noqa: B902
                pass


# ---------------------------------------------------------------- frontmx

def listener(tls=None, certs=None, **kw):
    """A listen group (the address is filled in by frontmx_listeners)."""
    d = {}
    if tls is not None:
        d['tls'] = tls
    if certs is not None:
        d['cert'] = certs.cert
        d['key'] = certs.key
    d.update(kw)
    return d


def port_open(port):
    return fmx.port_open(port)


def frontmx_listeners(upstream, listeners, conf=None, name='frontmx', expect_start=True):
    """Frontmx with one listen group per entry of listeners (dicts without
    address).  mx.ports[i] is the port of listeners[i] (mx.port = ports[0])."""
    mx = Frontmx(upstream, start=False, name=name)
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
        ok(all(wait_for(lambda p=p: port_open(p), 5) for p in ports[1:]),
           '%s: all %d listeners accept connections' % (name, len(ports)))
    return mx


def received_field(data):
    """The first Received: field of relayed data (CRLF), unfolded."""
    rcv, _ = fmx.split_received(data or b'')
    if rcv is None:
        return b''
    return re.sub(rb'\r\n[ \t]+', b' ', rcv)


# ---------------------------------------------------------------- Postfix

def tls_postfix(certs, main_cf=None, **kw):
    """A private Postfix (postfix.py) whose smtpd offers STARTTLS with
    certs (security level may), logs TLS and puts the TLS details in its
    Received: field."""
    import postfix
    cf = {
        'smtpd_tls_cert_file': certs.cert,
        'smtpd_tls_key_file': certs.key,
        'smtpd_tls_security_level': 'may',
        'smtpd_tls_loglevel': '1',
        'smtpd_tls_received_header': 'yes',
        'smtpd_tls_session_cache_database': '',
        'smtp_tls_security_level': 'none',
    }
    cf.update(main_cf or {})
    return postfix.Postfix(main_cf=cf, **kw)


# ---------------------------------------------------------------- scripted TLS upstream

class TlsScriptUpstream:
    """A tiny SMTP server with STARTTLS, one thread per connection.

    inject      bytes sent in the same write as "220 go ahead\\r\\n" after
                STARTTLS (response injection), e.g. b'250 injected\\r\\n'
    inject_late bytes sent in a second write 0.2 s after the 220, before
                the handshake
    xclient     advertise XCLIENT after TLS

    Records .events (conn, 'plain'|'tls', command line), .messages
    (dicts: conn, mail, rcpts, data), .errors (protocol violations by the
    client, e.g. MAIL before EHLO after TLS, bytes pipelined after
    STARTTLS), .handshakes (conn, version or error), .closes (conn, how
    the client closed TLS after QUIT's 221: 'close_notify', or what
    happened instead)."""

    def __init__(self, certs, inject=b'', inject_late=b'', xclient=False,
                 hostname='upstream.test'):
        self.certs = certs
        self.inject = inject
        self.inject_late = inject_late
        self.xclient = xclient
        self.hostname = hostname
        self.lock = threading.Condition()
        self.events, self.messages, self.errors, self.handshakes = [], [], [], []
        self.closes = []
        self.replies = []               # (conn, bytes sent) in order
        self.nconn = 0
        self._stop = False
        self.sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.sctx.load_cert_chain(certs.cert, certs.key)
        # Python sets it by default: an EOF without close_notify would
        # then read as a clean end (.closes could not tell them apart)
        self.sctx.options &= ~getattr(ssl, 'OP_IGNORE_UNEXPECTED_EOF', 0)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(('127.0.0.1', 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        fmx.register_cleanup(self.stop)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stop = True
        for s in [self.lsock] + self.socks:
            try:
                s.close()
            except OSError:
                pass

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

    def _send(self, idx, s, data):
        with self.lock:
            self.replies.append((idx, data))
        s.sendall(data)

    def _caps(self, tls):
        caps = [self.hostname, 'PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES']
        if not tls:
            caps.append('STARTTLS')
        elif self.xclient:
            caps.append('XCLIENT NAME ADDR PORT PROTO HELO')
        return b''.join(('250%s%s\r\n' % ('-' if i < len(caps) - 1 else ' ', c)).encode()
                        for i, c in enumerate(caps))

    def wait_messages(self, n, timeout=10):
        return wait_for(lambda: len(self.messages) >= n, timeout)

    def _close_seen(self, idx, s):
        """After QUIT's 221 inside TLS: did the client close TLS with
        close_notify (a clean end of data) or just the socket?"""
        try:
            how = 'close_notify' if s.recv(1) == b'' else 'data after QUIT'
        except ssl.SSLEOFError:
            how = 'EOF without close_notify'
        except (OSError, ssl.SSLError) as e:
            how = 'error: %s' % e
        with self.lock:
            self.closes.append((idx, how))

    def _serve(self, idx, s):
        s.settimeout(10)
        buf = b''
        tls = False
        st = {'ehlo': False, 'mail': None, 'rcpts': [], 'data': None}
        try:
            self._send(idx, s, ('220 %s ESMTP script\r\n' % self.hostname).encode())
            while not self._stop:
                while b'\n' not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                i = buf.index(b'\n')
                line, buf = buf[:i + 1], buf[i + 1:]
                if st['data'] is not None:
                    if line == b'.\r\n':
                        with self.lock:
                            self.messages.append({'conn': idx, 'tls': tls, 'mail': st['mail'],
                                                  'rcpts': st['rcpts'], 'data': st['data']})
                            n = len(self.messages)
                        st['data'], st['mail'], st['rcpts'] = None, None, []
                        self._send(idx, s, b'250 2.0.0 Ok: queued as SCRIPT%04d\r\n' % n)
                    else:
                        st['data'] += line[1:] if line.startswith(b'.') else line
                    continue
                cmd = line.rstrip(b'\r\n').decode('latin-1')
                with self.lock:
                    self.events.append((idx, 'tls' if tls else 'plain', cmd))
                verb = cmd.split(' ', 1)[0].upper()
                if verb in ('EHLO', 'HELO'):
                    st['ehlo'] = True
                    st['mail'], st['rcpts'] = None, []
                    self._send(idx, s, self._caps(tls))
                elif verb == 'STARTTLS' and not tls:
                    if buf:
                        self._err(idx, 'client pipelined %r after STARTTLS' % buf)
                    self._send(idx, s, b'220 2.0.0 go ahead\r\n' + self.inject)
                    if self.inject_late:
                        time.sleep(0.2)
                        self._send(idx, s, self.inject_late)
                    try:
                        # unclean EOF raises (SSLEOFError): .closes tells them apart
                        s = self.sctx.wrap_socket(s, server_side=True,
                                                  suppress_ragged_eofs=False)
                        self.socks.append(s)
                        with self.lock:
                            self.handshakes.append((idx, s.version()))
                    except (ssl.SSLError, OSError) as e:
                        with self.lock:
                            self.handshakes.append((idx, 'error: %s' % e))
                        return
                    tls, buf = True, b''
                    st = {'ehlo': False, 'mail': None, 'rcpts': [], 'data': None}
                elif verb == 'XCLIENT' and tls and self.xclient:
                    st['ehlo'] = False
                    self._send(idx, s, ('220 %s ESMTP script\r\n' % self.hostname).encode())
                elif verb == 'MAIL':
                    if not st['ehlo']:
                        self._err(idx, 'MAIL before EHLO (%s)' % ('tls' if tls else 'plain'))
                    if st['mail']:
                        self._err(idx, 'nested MAIL')
                    st['mail'], st['rcpts'] = cmd, []
                    self._send(idx, s, b'250 2.1.0 sender ok (script)\r\n')
                elif verb == 'RCPT':
                    if not st['mail']:
                        self._err(idx, 'RCPT without MAIL')
                        self._send(idx, s, b'503 5.5.1 need MAIL\r\n')
                        continue
                    st['rcpts'].append(cmd)
                    self._send(idx, s, b'250 2.1.5 recipient ok (script)\r\n')
                elif verb == 'DATA':
                    if not st['rcpts']:
                        self._err(idx, 'DATA without RCPT')
                        self._send(idx, s, b'503 5.5.1 need RCPT\r\n')
                        continue
                    st['data'] = b''
                    self._send(idx, s, b'354 3.0.0 go on (script)\r\n')
                elif verb == 'RSET':
                    st['mail'], st['rcpts'] = None, []
                    self._send(idx, s, b'250 2.0.0 reset (script)\r\n')
                elif verb == 'NOOP':
                    self._send(idx, s, b'250 2.0.0 noop (script)\r\n')
                elif verb == 'QUIT':
                    self._send(idx, s, b'221 2.0.0 bye (script)\r\n')
                    if tls:
                        self._close_seen(idx, s)
                    return
                else:
                    self._err(idx, 'unexpected command %r' % cmd)
                    self._send(idx, s, b'502 5.5.2 unknown (script)\r\n')
        except (OSError, ssl.SSLError):
            return
        finally:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------- PROXY protocol

PROXY_V2_SIG = b'\r\n\r\n\x00\r\nQUIT\n'


def proxy_v1(fam, src, dst, sport, dport):
    """'PROXY TCP4 src dst sport dport\\r\\n' (fam 'UNKNOWN': just that)."""
    if fam == 'UNKNOWN':
        return b'PROXY UNKNOWN\r\n'
    return ('PROXY %s %s %s %s %s\r\n' % (fam, src, dst, sport, dport)).encode()


def proxy_v2(cmd='PROXY', fam='TCP4', src=None, dst=None, sport=0, dport=0, tlvs=b'',
             version=2, length=None, body=None):
    """Binary v2 header.  cmd 'PROXY'|'LOCAL'|int, fam 'TCP4'|'TCP6'|
    'UNSPEC'|int (byte 13); length overrides the length field; body
    overrides the address block."""
    c = {'LOCAL': 0, 'PROXY': 1}.get(cmd, cmd)
    f = {'UNSPEC': 0x00, 'TCP4': 0x11, 'UDP4': 0x12, 'TCP6': 0x21, 'UNIX': 0x31}.get(fam, fam)
    if body is None:
        if f == 0x11:
            body = (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst) +
                    struct.pack('!HH', sport, dport))
        elif f == 0x21:
            body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
                    struct.pack('!HH', sport, dport))
        else:
            body = b''
    body += tlvs
    n = len(body) if length is None else length
    return PROXY_V2_SIG + bytes([(version << 4) | c, f]) + struct.pack('!H', n) + body
