#!/usr/bin/python3
# The protocol name in frontmx's Received: "with" clause (RFC 3848, RFC 6531
# 3.7.3): SMTP after HELO, ESMTP after EHLO, an S for STARTTLS, an A for an
# authenticated client, and the UTF8 prefix for a transaction whose MAIL
# carried SMTPUTF8 -- one session at a time, each combination once.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403
from fmx_auth import *  # noqa: E402,F403

MX = 'mx.test.example'
USER, PASSWORD = 'alice', 'secret'
RCPT = 'rcpt@example.com'


def session(mx, up, ctx, case, helo=False, tls=False, auth=False, utf8=False):
    """One session, one message; returns the Received field frontmx added."""
    c = TlsClient(mx.ports[0])
    c.greeting()
    if helo:
        reply_is(c.cmd('HELO client.example'), 250, None, '%s: HELO' % case)
    else:
        reply_is(c.ehlo('client.example'), 250, None, '%s: EHLO' % case)
    if tls:
        r, err = c.starttls(ctx, MX)
        ok(r.code == 220 and err is None, '%s: STARTTLS (%r %s)' % (case, r, err))
        reply_is(c.ehlo('client.example'), 250, None, '%s: EHLO in TLS' % case)
    if auth:
        reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 235, '2.7.0', '%s: AUTH' % case)
    body = ('From: alice@example.com\r\nTo: %s\r\nSubject: %s\r\n\r\nhello\r\n' % (RCPT, case)).encode()
    n = len(up.messages)
    res = c.transaction('alice@example.com', [RCPT], body, ' SMTPUTF8' if utf8 else '')
    reply_is(res['dot'], 250, None, '%s: message accepted' % case)
    c.quit()
    if not ok(up.wait_messages(n + 1, 20), '%s: message relayed' % case):
        return b''
    with up.lock:
        m = up.messages[n]
    ok(('SMTPUTF8' in m['mail'].upper()) == utf8,
       '%s: SMTPUTF8 on the relayed MAIL exactly when the client gave it (%r)' % (case, m['mail']))
    return received_field(m['data'])


def main():
    d = tmpdir('fmx-rcvproto-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)
    up = AuthUpstream(users={USER: PASSWORD}, caps=AuthUpstream.CAPS + ['SMTPUTF8'])
    mx = frontmx_listeners_args(
        up, [listener('starttls', certs, auth=True)],
        conf={'relay': {'domains': ['example.com']}})
    cases = [
        ('HELO', dict(helo=True), 'SMTP'),
        ('EHLO', dict(), 'ESMTP'),
        ('EHLO + SMTPUTF8', dict(utf8=True), 'UTF8SMTP'),
        ('STARTTLS', dict(tls=True), 'ESMTPS'),
        ('STARTTLS + SMTPUTF8', dict(tls=True, utf8=True), 'UTF8SMTPS'),
        ('STARTTLS + AUTH', dict(tls=True, auth=True), 'ESMTPSA'),
        ('STARTTLS + AUTH + SMTPUTF8', dict(tls=True, auth=True, utf8=True), 'UTF8SMTPSA'),
    ]
    for case, kw, proto in cases:
        rcv = session(mx, up, ctx, case, **kw)
        m = re.search(rb'\(frontmx\) with (\S+) id ', rcv)
        is_(m.group(1).decode() if m else rcv, proto, '%s: Received says "with %s"' % (case, proto))
        like(rcv, rb'\(using TLSv1\.[23] ' if kw.get('tls') else rb'^(?!.*\(using )',
             '%s: the TLS comment exactly when TLS was used' % case)
    # Postfix accepts only SMTP or ESMTP as XCLIENT PROTO (smtpd.c)
    with up.lock:
        bad = [l for _, l in up.lines if l.upper().startswith(b'XCLIENT')]
    is_(bad, [], 'this upstream offers no XCLIENT: none sent')
    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=120)
