#!/usr/bin/python3
# SIZE is the smaller of limits.message_size and the upstream's own SIZE
# (issue 9 item 4): advertised at EHLO, enforced at MAIL SIZE= (552 5.3.4)
# and on the data itself (552 5.3.4 after the dot, never relayed).  An
# upstream SIZE of 0, or none at all, sets no limit of its own.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402

HDR = b'From: alice@example.org\r\nSubject: size\r\n\r\n'
OURS = 1048576                  # base_conf's limits.message_size


def body_of(n):
    """A message of exactly n octets as the client writes it."""
    line = b'x' * 78 + b'\r\n'
    b = HDR + line * ((n - len(HDR)) // len(line))
    return b + b'y' * (n - len(b) - 2) + b'\r\n'


def advertised(mx):
    return [l for l in ehlo_lines(mx.port) if l.upper().startswith('SIZE')]


def main():
    # -- the upstream's SIZE is smaller than ours
    UP = 200000
    up = Upstream(ehlo_caps=['PIPELINING', 'SIZE %d' % UP, '8BITMIME', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx(up, name='upstream SIZE %d' % UP)
    is_(advertised(mx), ['SIZE %d' % UP], 'EHLO advertises the upstream\'s smaller SIZE')
    c = SmtpClient(mx.port)
    c.start()
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % (UP + 1)), 552, '5.3.4',
             'MAIL SIZE= one over the upstream\'s limit: 552 5.3.4 at MAIL')
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % UP), 250, None,
             'MAIL SIZE= at the upstream\'s limit: 250')
    c.cmd('RSET')
    # undeclared and too big: read to the dot, refused, never relayed
    res = c.transaction('alice@example.org', ['bob@example.com'], body_of(UP + 1))
    reply_is(res['data'], 354, None, 'undeclared message one octet over: DATA 354')
    reply_is(res['dot'], 552, '5.3.4', 'undeclared message one octet over: 552 5.3.4 after the dot')
    is_(up.transactions, 0, 'the oversized message never reached the upstream')
    exact = body_of(UP)
    res = c.transaction('alice@example.org', ['bob@example.com'], exact)
    reply_is(res['dot'], 250, None, 'message of exactly the upstream\'s SIZE: 250')
    # far over it, and the session stays usable
    res = c.transaction('alice@example.org', ['bob@example.com'], body_of(3 * UP))
    reply_is(res['dot'], 552, '5.3.4', 'message of 3 x the upstream\'s SIZE: 552 5.3.4')
    reply_is(c.cmd('NOOP'), 250, None, 'in step after the refusal')
    c.quit()
    ok(up.wait_messages(1, 10), 'upstream got the one message that fits')
    check_stream(up, 1, 'upstream SIZE %d' % UP)
    if up.messages:
        check_relayed(up.messages[0].data, exact, 'the message that fits')
    like(mx.log(), r'upstream capabilities.* size=%d' % UP, 'the upstream SIZE is logged')
    mx.finish()

    # -- an upstream SIZE larger than ours, SIZE 0 and no SIZE: ours applies
    for caps, name in ((['SIZE %d' % (OURS * 4)], 'larger upstream SIZE'),
                       (['SIZE 0'], 'upstream SIZE 0 (no limit)'),
                       (['SIZE'], 'upstream SIZE without a number'),
                       ([], 'upstream without SIZE')):
        up = Upstream(ehlo_caps=['PIPELINING', '8BITMIME'] + caps)
        mx = Frontmx(up, name=name)
        is_(advertised(mx), ['SIZE %d' % OURS], '%s: EHLO advertises our own SIZE' % name)
        c = SmtpClient(mx.port)
        c.start()
        reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % (OURS + 1)), 552, '5.3.4',
                 '%s: SIZE= over ours: 552 5.3.4' % name)
        reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % OURS), 250, None,
                 '%s: SIZE= at ours: 250' % name)
        c.cmd('RSET')
        c.quit()
        mx.finish()

    # -- a real Postfix with message_size_limit lowered
    PF = 100000
    pf = postfix.Postfix(main_cf={'message_size_limit': str(PF)})
    mx = Frontmx(pf.port, name='postfix message_size_limit %d' % PF)
    is_(advertised(mx), ['SIZE %d' % PF], "EHLO advertises Postfix's message_size_limit")
    c = SmtpClient(mx.port)
    c.start()
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % (PF + 1)), 552, '5.3.4',
             'Postfix: SIZE= over its limit refused by frontmx at MAIL')
    res = c.transaction('alice@example.org', ['box@example.com'], body_of(PF + 1))
    reply_is(res['dot'], 552, '5.3.4', 'Postfix: undeclared message over its limit: 552 5.3.4')
    like(res['dot'].text if res['dot'] else '', r'message too large',
         "it is frontmx's refusal, not Postfix's at the end of the data")
    small = (b'From: alice@example.org\r\nTo: box@example.com\r\nSubject: fits\r\n'
             b'Message-ID: <size@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
             + (b'z' * 70 + b'\r\n') * 10)
    res = c.transaction('alice@example.org', ['box@example.com'], small)
    reply_is(res['dot'], 250, None, 'Postfix: a message under its limit is delivered')
    c.quit()
    is_(len(pf.wait_mail(1, timeout=15)), 1, 'Postfix delivered exactly the one that fits')
    mx.finish()
    pf.stop()


run(main, timeout=120)
