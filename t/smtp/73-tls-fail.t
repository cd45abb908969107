#!/usr/bin/python3
# Failed TLS, on both sides, while something is pending.
#
# Client side: a session first relays a message in clear, then starts a
# transaction whose filter lookup (build/plugins/slow_async.so, mode=dns,
# held by fakedns) is still out, pipelines STARTTLS behind the MAIL, and
# then breaks the handshake: garbage instead of a ClientHello, half a
# ClientHello and a reset, half a ClientHello and a half-close.  The same
# on an implicit-TLS listener (no STARTTLS: the handshake is the first
# thing).  Each time: the STARTTLS is answered in order, frontmx closes
# the session and logs the failure, the late lookup answer never reaches
# the module, the daemon keeps serving, nothing is delivered twice or
# lost (exactly the messages that got a 250), and ASan stays quiet.
#
# Upstream side: the upstream says 220 to STARTTLS and then sends garbage
# (or closes) instead of its ServerHello, while the client waits on its
# MAIL: 451 4.4.1, the session stays usable, and once the upstream
# behaves the same session relays (t/smtp/41-upstream-tls.t covers
# certificate failures and bytes injected before the handshake).
import os
import re
import socket
import ssl
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402

MX = 'mx.test.example'
RCPT = 'bob@example.com'
WAIT = 20       # upper bound for events that come at once: only guards hangs


def body(tag):
    return ('From: alice@example.org\r\nSubject: %s\r\n\r\nbody of %s\r\n' % (tag, tag)).encode()


def client_hello():
    """The first flight of a TLS client, as bytes (no socket needed)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(hostname_check=False).wrap_bio(inc, out, server_hostname=MX)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def session_id(mx, c):
    """The log's id of the session of client c (by its source port)."""
    regex = r'(\w+) smtp connect client=127\.0\.0\.1 port=%d\n' % c.local_port()
    m = wait_for(lambda: re.search(regex, mx.log()), WAIT)
    return m.group(1) if m else 'no-such-session'


def ended(mx, c, how, name):
    """Break the handshake of client c (BREAKS[how]); frontmx ends the
    session and closes the connection."""
    sid = session_id(mx, c)
    BREAKS[how](c)
    ok(wait_for(lambda: re.search(r'%s smtp closing reason=' % sid, mx.log()), WAIT),
       '%s: the session ended' % name)
    if how == 'garbage':
        like(mx.log(), r'%s smtp tls error=' % sid, '%s: frontmx logged the failed handshake' % name)
    if 'reset' not in how:
        ok(c.expect_close(WAIT), '%s: frontmx closed the connection' % name)


HELLO = None
BREAKS = {
    'garbage': lambda c: c.send(b'this is not a ClientHello\r\n' * 4),
    'half hello, reset': lambda c: (c.send(HELLO[:len(HELLO) // 2]), c.vanish()),
    'half hello, half-close': lambda c: (c.send(HELLO[:len(HELLO) // 2]),
                                         c.sock.shutdown(socket.SHUT_WR)),
}


def client_side(dns, certs, ctx):
    up = Upstream()
    mx = frontmx_listeners(up, [listener('starttls', certs), listener('implicit', certs)], conf={
        'workers': 1,
        'dns': {'forward': [dns.address]}, 'timeouts': {'dns': 30},
        'filters': [{'name': 'slow', 'module': plugin('slow_async'), 'timeout': 30,
                     'options': {'mode': 'dns'}}]},
        name='frontmx (client TLS failures)')
    relayed = []
    n = 0
    for how in BREAKS:
        n += 1
        name = 'STARTTLS, %s' % how
        # a domain of its own: the resolver caches the earlier answers
        domain = 'tls%d.example' % n
        sender = 'held@%s' % domain
        dns.set(domain, [('TXT', 'reject')])
        dns.hold(domain)
        c = TlsClient(mx.ports[0], timeout=WAIT)
        c.start()
        r = c.transaction('clear%d@ok.example' % n, [RCPT], body('clear %d' % n))
        if reply_is(r['dot'], 250, None, '%s: a message in clear first, 250' % name):
            relayed.append('clear%d@ok.example' % n)
        answered = dns.answered(domain)
        c.send('MAIL FROM:<%s>\r\nSTARTTLS\r\n' % sender)
        reply_is(c.reply(), 250, None, '%s: MAIL 250 (its lookup is out)' % name)
        reply_is(c.reply(), 220, None, '%s: then the pipelined STARTTLS 220' % name)
        ok(wait_for(lambda: dns.waiting(domain) == 1, WAIT), '%s: lookup held' % name)
        tag = re.findall(r'slow_async start tag=(\d+) from=%s ' % re.escape(sender), mx.log())
        ended(mx, c, how, name)
        c.close()
        dns.release()
        ok(wait_for(lambda: dns.answered(domain) > answered, WAIT),
           '%s: the late answer was sent' % name)
        ok(tag and not re.search(r'slow_async answer tag=%s ' % tag[0], mx.log()),
           '%s: the lookup of the reset transaction never called back' % name)
        ok(mx.alive(), '%s: daemon alive' % name)

    for how in BREAKS:
        name = 'implicit, %s' % how
        c = SmtpClient(mx.ports[1], timeout=WAIT)
        ended(mx, c, how, name)
        c.close()
        ok(mx.alive(), '%s: daemon alive' % name)

    # the daemon still serves TLS on both listeners
    c = TlsClient(mx.ports[0], timeout=WAIT)
    c.start()
    r, err = c.starttls(ctx, MX)
    ok(r.code == 220 and err is None, 'afterwards: STARTTLS + handshake (%r %s)' % (r, err))
    c.ehlo()
    if reply_is(c.transaction('after@ok.example', [RCPT], body('after'))['dot'], 250, None,
                'afterwards: a message over STARTTLS relayed'):
        relayed.append('after@ok.example')
    c.quit()
    c = TlsClient(mx.ports[1], implicit=ctx, server_hostname=MX, timeout=WAIT)
    c.start()
    if reply_is(c.transaction('implicit@ok.example', [RCPT], body('implicit'))['dot'], 250, None,
                'afterwards: a message over implicit TLS relayed'):
        relayed.append('implicit@ok.example')
    c.quit()
    ok(up.wait_messages(len(relayed), WAIT), 'upstream got the accepted messages')
    is_(sorted(m.mail_from for m in up.messages), sorted(relayed),
        'exactly the messages that got a 250 were relayed, each once; none of the broken sessions\'')
    check_stream(up, len(relayed), 'upstream')
    mx.finish()


class BrokenTlsUpstream(TlsScriptUpstream):
    """TlsScriptUpstream whose STARTTLS is answered 220, then .breaker:
    b'...' is sent instead of a ServerHello and the connection closed
    (b'' closes at once); None: a normal handshake."""

    breaker = b'this is not a ServerHello\r\n'

    def _send(self, idx, s, data):
        super()._send(idx, s, data)
        if data.startswith(b'220 2.0.0 go ahead') and self.breaker is not None:
            s.sendall(self.breaker)
            s.shutdown(socket.SHUT_RDWR)
            raise OSError('handshake broken on purpose')


def upstream_side(certs):
    for how, breaker in (('garbage', b'this is not a ServerHello\r\n'), ('close', b'')):
        name = 'upstream %s' % how
        sup = BrokenTlsUpstream(certs)
        sup.breaker = breaker
        mx = Frontmx(sup.port, name='frontmx (%s)' % name, conf={'upstream': {
            'tls': 'verify', 'tls_ca': certs.cert, 'tls_name': 'upstream.test'}})
        c = SmtpClient(mx.port, timeout=WAIT)
        c.start()
        reply_is(c.cmd('MAIL FROM:<a@ok.example>'), 451, '4.4.1',
                 '%s: handshake fails, MAIL 451 4.4.1' % name)
        like(mx.log(), r'upstream error=.*state=tls-handshake', '%s: frontmx logged it' % name)
        reply_is(c.cmd('NOOP'), 250, None, '%s: session still usable' % name)
        sup.breaker = None
        r = c.transaction('b@ok.example', [RCPT], body(name))
        reply_is(r['dot'], 250, None, '%s: once the upstream behaves, the same session relays' % name)
        c.quit()
        ok(sup.wait_messages(1, WAIT), '%s: relayed' % name)
        is_([(m['mail'], m['tls']) for m in sup.messages], [('MAIL FROM:<b@ok.example>', True)],
            '%s: exactly the second message, inside TLS' % name)
        is_(sup.errors, [], '%s: no protocol errors seen by the upstream' % name)
        ok(mx.alive(), '%s: daemon alive' % name)
        mx.finish()


def main():
    global HELLO
    require_modules(plugin('slow_async'))
    d = tmpdir('fmx-tlsfail-')
    certs = make_cert(d, MX)
    upcerts = make_cert(d, 'upstream.test')
    ctx = client_ctx(certs.cert)
    HELLO = client_hello()
    ok(len(HELLO) > 100 and HELLO[:1] == b'\x16', 'a ClientHello to break (%d octets)' % len(HELLO))
    dns = FakeDNS({'ok.example': [('TXT', 'fine')]}).start()
    register_cleanup(dns.stop)
    client_side(dns, certs, ctx)
    upstream_side(upcerts)


run(main, timeout=300)
