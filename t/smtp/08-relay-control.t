#!/usr/bin/python3
# Relay control is the proxy's job: a recipient outside relay.domains from a
# client outside relay.networks gets 554 5.7.1 and never reaches the
# upstream; %, ! and source routes are refused even for trusted clients.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: relay\r\n\r\nbody\r\n'

ROUTED = [
    'user%other.example@example.com',
    'other.example!user@example.com',
    '@example.com:user@other.example',
    '@a.example,@example.com:user@example.com',
    'user%example.com@example.com',
]


def session(port, source=None):
    c = SmtpClient(port, source=source)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<alice@other.example>'), 250, None, 'MAIL from any sender domain')
    return c


def main():
    # -- untrusted client (relay.networks does not contain 127.0.0.1)
    up = Upstream()
    mx = Frontmx(up, conf={'relay': {'domains': ['example.com'], 'networks': ['192.0.2.0/24']}},
                 name='untrusted')
    c = session(mx.port)
    reply_is(c.cmd('RCPT TO:<bob@other.example>'), 554, '5.7.1', 'foreign domain: 554 5.7.1')
    reply_is(c.cmd('RCPT TO:<bob@sub.example.com>'), 554, '5.7.1', 'subdomain not listed: 554 5.7.1')
    reply_is(c.cmd('RCPT TO:<bob@example.com.other.example>'), 554, '5.7.1', 'suffix trick: 554 5.7.1')
    reply_is(c.cmd('RCPT TO:<bob@notexample.com>'), 554, '5.7.1', 'notexample.com: 554 5.7.1')
    for a in ROUTED:
        reply_is(c.cmd('RCPT TO:<%s>' % a), 554, '5.7.1', 'routed %s: 554 5.7.1' % a)
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'relay.domains recipient: 250')
    reply_is(c.cmd('RCPT TO:<Carol@EXAMPLE.COM>'), 250, None, 'domain match is case-insensitive: 250')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'message relayed to the allowed recipients')
    c.quit()
    ok(up.wait_messages(1, 10), 'upstream got the message')
    check_stream(up, 1, 'untrusted: upstream')
    if up.messages:
        # domains are case-insensitive: the proxy may normalise their case,
        # but the local part must be kept as is
        is_([r.lower() for r in up.messages[0].rcpts], ['bob@example.com', 'carol@example.com'],
            'only the allowed recipients reached the upstream')
        is_([r.split('@')[0] for r in up.messages[0].rcpts], ['bob', 'Carol'], 'local parts kept as is')
    allb = up.all_bytes().lower()
    leaked = [a for a in (b'bob@other.example', b'sub.example.com', b'example.com.other.example',
                          b'notexample.com', b'!', b'%', b'@example.com:') if a in allb]
    ok(not leaked, 'no refused recipient ever reached the upstream (%s)' % leaked)
    mx.finish()

    # -- relay.networks = 127.0.0.1/32: 127.0.0.1 trusted, 127.0.0.2 not
    up = Upstream()
    mx = Frontmx(up, conf={'relay': {'domains': ['example.com'], 'networks': ['127.0.0.1/32']}},
                 name='one-host')
    c = session(mx.port, source='127.0.0.2')
    reply_is(c.cmd('RCPT TO:<bob@other.example>'), 554, '5.7.1', 'from 127.0.0.2 (outside /32): 554 5.7.1')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'from 127.0.0.2 to example.com: 250')
    c.quit()
    c = session(mx.port, source='127.0.0.1')
    reply_is(c.cmd('RCPT TO:<bob@other.example>'), 250, None, 'from 127.0.0.1 (inside /32): 250')
    c.quit()
    mx.finish()

    # -- trusted network (127.0.0.0/8): may relay anywhere, but never routed
    up = Upstream()
    mx = Frontmx(up, name='trusted')
    c = session(mx.port)
    for a in ROUTED:
        reply_is(c.cmd('RCPT TO:<%s>' % a), 554, '5.7.1', 'trusted, routed %s: still 554 5.7.1' % a)
    reply_is(c.cmd('RCPT TO:<bob@other.example>'), 250, None, 'trusted client, foreign domain: 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'trusted client, own domain: 250')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'trusted relay message: 250')
    c.quit()
    ok(up.wait_messages(1, 10), 'upstream got the trusted message')
    check_stream(up, 1, 'trusted: upstream')
    if up.messages:
        is_(up.messages[0].rcpts, ['bob@other.example', 'bob@example.com'], 'both recipients relayed')
        check_relayed(up.messages[0].data, BODY, 'trusted message')
    ok(b'%' not in up.all_bytes() and b'!' not in up.all_bytes(), 'no routed address reached the upstream')
    mx.finish()


run(main)
