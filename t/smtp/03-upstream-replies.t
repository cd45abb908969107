#!/usr/bin/python3
# The upstream's 4xx/5xx on MAIL, RCPT, DATA and the final dot reach the
# client with their codes; a 250 is given only when the upstream said 250;
# nothing of a transaction reaches the upstream after its RCPTs were refused.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: replies\r\n\r\nbody\r\n'


def rcpt_script(arg, conn):
    if 'temp@' in arg:
        return '450 4.2.0 mailbox busy'
    if 'gone@' in arg:
        return '550 5.1.1 no such user'
    if 'plain@' in arg:
        return '550 no such user here'          # no enhanced code
    if 'multi@' in arg:
        return '553-5.1.3 first line\r\n553-5.1.3 second line\r\n553 5.1.3 last line'
    return None


def session(mx):
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    return c


def main():
    up = Upstream(on_rcpt=rcpt_script)
    mx = Frontmx(up)
    expected = 0           # DATA completions the upstream should count
    accepted = 0           # final 250s given to the client

    # MAIL refused by the upstream, temporarily and permanently
    c = session(mx)
    up.on_mail = '451 4.3.2 try again later'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 451, '4.3.2', 'upstream 451 4.3.2 on MAIL propagated')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'RCPT after refused MAIL: 503 5.5.1')
    up.on_mail = '550 5.7.1 sender blocked'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 550, '5.7.1', 'upstream 550 5.7.1 on MAIL propagated')
    up.on_mail = '553 sender syntax upstream'
    r = c.cmd('MAIL FROM:<alice@example.org>')
    reply_is(r, 553, None, 'upstream 553 without enhanced code propagated')
    ok(r.enh is not None and r.enh.startswith('5.'), 'an enhanced code 5.x.x is added (%r)' % (r,))
    up.on_mail = None
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'session usable: MAIL 250 once upstream agrees')

    # RCPT replies
    reply_is(c.cmd('RCPT TO:<temp@example.com>'), 450, '4.2.0', 'RCPT 450 4.2.0 propagated')
    reply_is(c.cmd('RCPT TO:<gone@example.com>'), 550, '5.1.1', 'RCPT 550 5.1.1 propagated')
    r = c.cmd('RCPT TO:<plain@example.com>')
    reply_is(r, 550, None, 'RCPT 550 without enhanced code propagated')
    ok(r.enh is not None and r.enh.startswith('5.'), 'an enhanced code 5.x.x is added (%r)' % (r,))
    r = c.cmd('RCPT TO:<multi@example.com>')
    reply_is(r, 553, '5.1.3', 'multi-line 553 propagated')
    ok(len(r.lines) >= 1 and all(re.match(r'5\.\d+\.\d+ ', l) for l in r.lines),
       'every line of the multi-line reply has an enhanced code')
    reply_is(c.cmd('RCPT TO:<ok@example.com>'), 250, None, 'good RCPT 250')
    r, f = c.data(BODY)
    reply_is(r, 354, None, 'DATA 354')
    reply_is(f, 250, None, 'message with one accepted rcpt: 250')
    expected += 1
    accepted += 1
    up.wait_messages(expected, 5)
    is_(up.messages[-1].rcpts if up.messages else None, ['ok@example.com'],
        'only the accepted recipient reached the upstream')

    # every RCPT refused: no DATA upstream
    ndata = sum(1 for x in up.commands() if x.upper() == 'DATA')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    reply_is(c.cmd('RCPT TO:<gone@example.com>'), 550, '5.1.1', 'only RCPT refused')
    r = c.cmd('DATA')
    ok(r.code in (503, 554) and r.enh == '5.5.1', 'DATA with no recipient: 503/554 5.5.1 (%r)' % (r,))
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    is_(sum(1 for x in up.commands() if x.upper() == 'DATA'), ndata,
        'no DATA sent upstream after every RCPT was refused')

    # final-dot replies
    for reply, code, enh in (('554 5.7.0 content rejected', 554, '5.7.0'),
                             ('452 4.3.1 insufficient storage', 452, '4.3.1'),
                             ('451 4.7.1 greylisted', 451, '4.7.1'),
                             ('550-5.7.1 multi\r\n550 5.7.1 line reject', 550, '5.7.1')):
        up.on_dot = reply
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        reply_is(res['data'], 354, None, 'DATA 354 (%s)' % reply[:3])
        reply_is(res['dot'], code, enh, 'final-dot reply %d %s propagated' % (code, enh))
        expected += 1
    up.on_dot = None

    # upstream refuses DATA itself (after our 354): client gets the 4xx/5xx
    for reply, code in (('451 4.3.0 no data now', 451), ('554 5.5.1 no valid recipients', 554)):
        up.on_data = reply
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        reply_is(res['data'], 354, None, 'DATA 354 from the proxy itself')
        ok(res['dot'] is not None and res['dot'].code == code,
           'upstream %d to DATA becomes the final reply (%r)' % (code, res['dot']))
    up.on_data = None

    # and a normal message still works in the same session
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'message after all the refusals: 250')
    expected += 1
    accepted += 1
    c.quit()

    ok(up.wait_messages(expected, 10), 'upstream saw %d DATA completions' % expected)
    check_stream(up, expected, 'upstream')
    is_(up.accepted, accepted,
        'the client got 250 exactly as often as the upstream said 250')
    mx.finish()


run(main)
