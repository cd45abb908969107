#!/usr/bin/python3
# PROXY protocol (haproxy proxy-protocol.txt) on listeners with
# proxy_protocol = true: v1 and v2, TCP4 and TCP6, from proxy_from only.
# The address in the header becomes the client: XCLIENT ADDR= to the
# upstream, the Received: field, the log.  A malformed or missing header,
# or a header from a source outside proxy_from: closed without a greeting.
# v2 LOCAL and v1 UNKNOWN keep the connection's own address.
import os
import re
import socket
import ssl
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402
from fmx_tls import *  # noqa: E402,F403

MX = 'mx.test.example'
BODY = b'From: alice@example.org\r\nSubject: proxied\r\n\r\nbody\r\n'


def xattrs(line):
    d = {}
    for p in line.split(' ')[1:]:
        k, _, v = p.partition('=')
        d[k.upper()] = re.sub(r'\+([0-9A-F]{2})', lambda m: chr(int(m.group(1), 16)), v)
    return d


class Runner:
    def __init__(self, mx, up):
        self.mx, self.up = mx, up
        self.n = 0

    def session(self, port, header, name, tls=None, implicit=None):
        """Send header, then a normal session with a unique sender; returns
        (greeting, final reply, upstream Message or None)."""
        self.n += 1
        sender = 'pp%d@example.org' % self.n
        try:
            c = TlsClient(port)
        except OSError as e:
            ok(False, '%s: connect (%s)' % (name, e))
            return None, None, None
        if header:
            c.send(header)
        if implicit is not None:
            try:
                c.wrap(implicit, MX)
            except (ssl.SSLError, OSError) as e:
                ok(False, '%s: TLS handshake after the header (%s)' % (name, e))
                c.close()
                return None, None, None
        g = c.greeting(timeout=5)
        if not reply_is(g, 220, None, '%s: greeted' % name):
            c.close()
            return g, None, None
        c.ehlo('pp.example')
        if tls is not None:
            r, err = c.starttls(tls, MX)
            ok(err is None, '%s: STARTTLS after the header (%s)' % (name, err))
            if err is not None:
                c.close()
                return g, None, None
            c.ehlo('pp.example')
        res = c.transaction(sender, ['bob@example.com'], BODY)
        reply_is(res['dot'], 250, None, '%s: message accepted' % name)
        c.quit()
        if not self.up.wait_messages(1, 5) or not wait_for(
                lambda: [m for m in self.up.messages if m.mail_from == sender], 10):
            ok(False, '%s: message relayed' % name)
            return g, res['dot'], None
        m = [m for m in self.up.messages if m.mail_from == sender][0]
        return g, res['dot'], m

    def check_addr(self, m, addr, port, name, ipv6=False):
        if m is None:
            ok(False, '%s: relayed, so XCLIENT can be checked' % name)
            return
        xs = [xattrs(l) for l in m.xclient]
        ok(xs, '%s: the upstream got XCLIENT' % name)
        want = ('IPV6:' + addr) if ipv6 else addr
        is_(xs[-1].get('ADDR') if xs else None, want, '%s: XCLIENT ADDR=%s' % (name, want))
        if port is not None:
            is_(xs[-1].get('PORT') if xs else None, str(port), '%s: XCLIENT PORT=%s' % (name, port))
        rcv = received_field(m.data)
        like(rcv, r'^Received: from pp\.example \(\S+ \[%s\]\)' % re.escape(addr),
             '%s: Received: names [%s]' % (name, addr))

    def refused(self, port, data, name, shut=False, why='bad-proxy-header'):
        before = self.mx.log().count('reason=%s' % why)
        try:
            c = SmtpClient(port)
        except OSError as e:
            ok(False, '%s: connect (%s)' % (name, e))
            return
        if data:
            c.send(data)
        if shut:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        closed = c.expect_close(5)
        ok(closed, '%s: connection closed' % name)
        ok(b'220' not in (c.tail or b''), '%s: without a greeting (%r)' % (name, (c.tail or b'')[:60]))
        c.close()
        ok(wait_for(lambda: self.mx.log().count('reason=%s' % why) > before, 3),
           '%s: logged reason=%s' % (name, why))


def main():
    d = tmpdir('fmx-pp-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO'])
    trusted = {'proxy_protocol': True, 'proxy_from': ['127.0.0.0/8']}
    mx = frontmx_listeners(up, [
        listener(**trusted),                                                  # 0
        listener(proxy_protocol=True, proxy_from=['192.0.2.0/24']),           # 1 untrusted
        listener('starttls', certs, **trusted),                               # 2
        listener('implicit', certs, **trusted),                               # 3
        listener(),                                                           # 4 no PROXY
    ])
    R = Runner(mx, up)
    P = mx.ports

    # ---- good headers from a trusted source
    g, f, m = R.session(P[0], proxy_v1('TCP4', '192.0.2.10', '198.51.100.1', 40000, 25), 'v1 TCP4')
    R.check_addr(m, '192.0.2.10', 40000, 'v1 TCP4')
    like(mx.log(), r'smtp proxy client=192\.0\.2\.10 port=40000 via=127\.0\.0\.1', 'v1 TCP4: logged with via=')
    like(mx.log(), r'message client=192\.0\.2\.10 ', 'v1 TCP4: message log names the real client')

    g, f, m = R.session(P[0], proxy_v1('TCP6', '2001:db8::10', '2001:db8::1', 40001, 25), 'v1 TCP6')
    R.check_addr(m, '2001:db8::10', 40001, 'v1 TCP6', ipv6=True)

    g, f, m = R.session(P[0], proxy_v2('PROXY', 'TCP4', '203.0.113.7', '198.51.100.1', 40002, 25), 'v2 TCP4')
    R.check_addr(m, '203.0.113.7', 40002, 'v2 TCP4')

    g, f, m = R.session(P[0], proxy_v2('PROXY', 'TCP6', '2001:db8::77', '2001:db8::1', 40003, 25), 'v2 TCP6')
    R.check_addr(m, '2001:db8::77', 40003, 'v2 TCP6', ipv6=True)

    tlvs = b'\x02\x00\x0amx.example' + b'\x04\x00\x03\x00\x00\x00'      # AUTHORITY, NOOP
    g, f, m = R.session(P[0], proxy_v2('PROXY', 'TCP4', '203.0.113.8', '198.51.100.1', 40004, 25, tlvs=tlvs),
                        'v2 TCP4 with TLVs')
    R.check_addr(m, '203.0.113.8', 40004, 'v2 TCP4 with TLVs')

    g, f, m = R.session(P[0], proxy_v2('LOCAL', 'UNSPEC'), 'v2 LOCAL')
    R.check_addr(m, '127.0.0.1', None, 'v2 LOCAL keeps the connection address')

    g, f, m = R.session(P[0], proxy_v1('UNKNOWN', None, None, None, None), 'v1 UNKNOWN')
    R.check_addr(m, '127.0.0.1', None, 'v1 UNKNOWN keeps the connection address')

    # header, then STARTTLS on the same connection
    g, f, m = R.session(P[2], proxy_v1('TCP4', '192.0.2.20', '198.51.100.1', 40005, 25),
                        'v1 + STARTTLS', tls=ctx)
    R.check_addr(m, '192.0.2.20', 40005, 'v1 + STARTTLS')
    if m is not None:
        like(received_field(m.data), rb'with ESMTPS ', 'v1 + STARTTLS: Received says ESMTPS')

    # header in clear, then implicit TLS (haproxy "send-proxy" to port 465)
    g, f, m = R.session(P[3], proxy_v2('PROXY', 'TCP4', '192.0.2.21', '198.51.100.1', 40006, 465),
                        'v2 + implicit TLS', implicit=ctx)
    R.check_addr(m, '192.0.2.21', 40006, 'v2 + implicit TLS')

    # ---- malformed v1
    good = b'PROXY TCP4 192.0.2.10 198.51.100.1 40000 25'
    for data, name in (
            (b'PROXY TCP4 192.0.2.10 198.51.100.1 40000\r\n', 'v1 missing a port'),
            (b'PROXY TCP4 999.0.2.10 198.51.100.1 40000 25\r\n', 'v1 bad source address'),
            (b'PROXY TCP5 192.0.2.10 198.51.100.1 40000 25\r\n', 'v1 unknown family'),
            (b'PROXY TCP4 2001:db8::1 198.51.100.1 40000 25\r\n', 'v1 IPv6 address under TCP4'),
            (b'PROXY TCP4 192.0.2.10 198.51.100.1 70000 25\r\n', 'v1 port above 65535'),
            (b'PROXY TCP4 192.0.2.10 198.51.100.1 -1 25\r\n', 'v1 negative port'),
            (good + b' extra\r\n', 'v1 trailing garbage'),
            (b'PROXY TCP4 192.0.2.10 not-an-address 40000 25\r\n', 'v1 bad destination address'),
            (good + b'\nEHLO x.example\r\n', 'v1 ended by bare LF'),
            (b'PROXY ' + b'A' * 120 + b'\r\n', 'v1 over 107 octets'),
            (b'PROXY TCP4 192.0.2.10\x00 198.51.100.1 40000 25\r\n', 'v1 with NUL'),
            (b'proxy TCP4 192.0.2.10 198.51.100.1 40000 25\r\n', 'v1 lower-case PROXY')):
        R.refused(P[0], data, 'malformed ' + name)
    R.refused(P[0], b'PROXY TCP4 192.0.2.10 198.51.100.1 40000 25', 'v1 without CRLF, then EOF',
              shut=True, why='eof')

    # ---- malformed v2
    v2 = proxy_v2('PROXY', 'TCP4', '203.0.113.7', '198.51.100.1', 40002, 25)
    for data, name, shut, why in (
            (proxy_v2('PROXY', 'TCP4', '203.0.113.7', '198.51.100.1', 1, 25, version=1),
             'v2 bad version (1)', False, 'bad-proxy-header'),
            (proxy_v2('PROXY', 'TCP4', '203.0.113.7', '198.51.100.1', 1, 25, version=3),
             'v2 bad version (3)', False, 'bad-proxy-header'),
            (proxy_v2(0x5, 'TCP4', '203.0.113.7', '198.51.100.1', 1, 25), 'v2 bad command', False,
             'bad-proxy-header'),
            (proxy_v2('PROXY', 'TCP4', length=0xffff, body=b'\x00' * 12), 'v2 length 65535 beyond the buffer',
             False, 'bad-proxy-header'),
            (proxy_v2('PROXY', 'TCP4', length=4, body=b'\xcb\x00\x71\x07'), 'v2 TCP4 shorter than its addresses',
             False, 'bad-proxy-header'),
            (proxy_v2('PROXY', 'TCP6', length=12, body=b'\x20\x01' + b'\x00' * 10),
             'v2 TCP6 shorter than its addresses', False, 'bad-proxy-header'),
            (proxy_v2('PROXY', 'UDP4', '203.0.113.7', '198.51.100.1', 1, 25), 'v2 UDP', False,
             'bad-proxy-header'),
            (v2[:12] + v2[12:16], 'v2 length beyond the data sent, then EOF', True, 'eof'),
            (v2[:11] + b'X' + v2[12:], 'v2 broken signature', False, 'bad-proxy-header')):
        R.refused(P[0], data, 'malformed ' + name, shut=shut, why=why)

    # ---- no header
    R.refused(P[0], b'EHLO client.example\r\n', 'no header (plain EHLO)')
    c = SmtpClient(P[0])
    r = c.reply(timeout=1.5)
    ok(r.code is None and not r.raw, 'no header yet (idle client): no greeting before the header')
    c.close()

    # ---- untrusted source
    R.refused(P[1], proxy_v1('TCP4', '192.0.2.10', '198.51.100.1', 40000, 25),
              'valid v1 from a source outside proxy_from', why='proxy-not-allowed')
    R.refused(P[1], proxy_v2('PROXY', 'TCP4', '192.0.2.11', '198.51.100.1', 1, 25),
              'valid v2 from a source outside proxy_from', why='proxy-not-allowed')
    unlike(mx.log(), r'proxy client=192\.0\.2\.11 ', 'untrusted header: its address never became the client')

    # ---- a listener without proxy_protocol never honours a header
    c = SmtpClient(P[4])
    reply_is(c.greeting(), 220, None, 'no proxy_protocol: greeted at once')
    r = c.cmd(proxy_v1('TCP4', '192.0.2.99', '198.51.100.1', 40099, 25)[:-2])
    ok(r.code is not None and r.code >= 500, 'no proxy_protocol: a PROXY line is an unknown command (%r)' % r)
    c.ehlo('pp.example')
    res = c.transaction('noproxy@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'no proxy_protocol: message accepted')
    c.quit()
    if wait_for(lambda: [m for m in up.messages if m.mail_from == 'noproxy@example.org'], 10):
        m = [m for m in up.messages if m.mail_from == 'noproxy@example.org'][0]
        is_(xattrs(m.xclient[-1]).get('ADDR') if m.xclient else None, '127.0.0.1',
            'no proxy_protocol: XCLIENT ADDR is the real peer')
    else:
        ok(False, 'no proxy_protocol: message relayed')
    ok(b'192.0.2.99' not in up.all_bytes(), 'no proxy_protocol: the header address never reached the upstream')

    # one message per R.session(), each told 250, and the one without PROXY
    check_stream(up, R.n + 1, 'upstream')
    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=60)
