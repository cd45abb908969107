#!/usr/bin/python3
"""Self-test of the harness (no frontmx needed): /usr/bin/python3 t/lib/selftest.py

Drives Upstream with SmtpClient and swaks directly, and checks the strict
parser, the fault modes and render_conf.  `make test` runs it (t/meta/harness.t).
"""
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fmx import *  # noqa: E402,F401,F403
import fmx  # noqa: E402


def session(up, body, stuffed=False):
    c = SmtpClient(up.port, timeout=3)
    g = c.greeting()
    e = c.ehlo('me.example')
    m = c.cmd('MAIL FROM:<a@example.org>')
    r = c.cmd('RCPT TO:<b@example.com>')
    d, f = c.data(body, stuffed=stuffed)
    c.quit()
    return g, e, m, r, d, f


def main():
    # happy path, dot-stuffing round trip
    up = Upstream()
    body = b'Subject: x\r\n\r\n.\r\n..\r\n.x\r\nend\r\n'
    g, e, m, r, d, f = session(up, body)
    reply_is(g, 220, None, 'banner')
    reply_is(e, 250, None, 'ehlo')
    ok('PIPELINING' in e.lines and '8BITMIME' in e.lines, 'caps advertised')
    reply_is(f, 250, '2.0.0', 'final reply')
    up.wait_messages(1, 3)
    check_stream(up, 1, 'clean session')
    is_(up.messages[0].data, body, 'un-stuffed data round-trips')
    is_(up.messages[0].raw_data, dot_stuff(body), 'raw data is stuffed')
    is_(up.messages[0].mail_from, 'a@example.org', 'mail_from parsed')
    is_(up.messages[0].rcpts, ['b@example.com'], 'rcpts parsed')
    like(up.raw[0], rb'^EHLO me\.example\r\nMAIL', 'raw bytes recorded')

    # the strict parser sees bare LF, bare CR, NUL; \n.\n does not end data
    up = Upstream()
    c = SmtpClient(up.port, timeout=3)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.com>')
    c.cmd('DATA')
    c.send(b'x\n.\nMAIL FROM:<smuggled@x>\r\n')
    r = c.reply(timeout=0.5)
    is_(r.code, None, 'no reply to smuggled MAIL inside data')
    c.send(b'a\rb\r\nn\x00ul\r\n.\r\n')
    reply_is(c.reply(), 250, None, 'real end of data')
    c.quit()
    fmx.wait_for(lambda: up.conns[0].closed, 3)
    ok(len(up.violations) >= 3, 'violations recorded (%d)' % len(up.violations))
    is_(up.transactions, 1, 'bare LF dot is not an end of data')

    # scripted replies
    up = Upstream(on_mail='451 4.3.0 try later', ehlo_caps=['XCLIENT NAME ADDR PORT PROTO HELO'])
    c = SmtpClient(up.port, timeout=3)
    c.greeting()
    reply_is(c.ehlo(), 250, None, 'ehlo')
    reply_is(c.cmd('XCLIENT ADDR=127.0.0.9 HELO=a+2Bb'), 220, None, 'xclient -> 220')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 451, '4.3.0', 'on_mail scripted')
    reply_is(c.ehlo(), 250, None, 'ehlo again')
    up.on_mail = None
    up.on_rcpt = lambda arg, conn: '550 5.1.1 unknown' if 'bad' in arg else None
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'on_mail cleared')
    reply_is(c.cmd('RCPT TO:<bad@example.com>'), 550, '5.1.1', 'on_rcpt callable')
    reply_is(c.cmd('RCPT TO:<good@example.com>'), 250, None, 'on_rcpt default')
    up.on_dot = ['452 4.3.1 full', '250 2.0.0 ok']
    d, f = c.data(b'hi\r\n')
    reply_is(f, 452, '4.3.1', 'on_dot list 1')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<good@example.com>')
    d, f = c.data(b'hi\r\n')
    reply_is(f, 250, None, 'on_dot list 2')
    c.quit()
    is_(up.conns[0].xclient, ['XCLIENT ADDR=127.0.0.9 HELO=a+2Bb'], 'xclient recorded')
    is_(up.messages[0].rcpts, ['good@example.com'], 'rejected rcpt not in message')
    is_(up.errors, [(0, 'MAIL before EHLO (after XCLIENT)')], 'sequence error after XCLIENT seen')
    is_(up.transactions, 2, 'scripted: 2 transactions')

    # faults
    up = Upstream(refuse=True)
    try:
        socket.create_connection(('127.0.0.1', up.port), timeout=1).close()
        ok(False, 'refuse: connect refused')
    except OSError:
        ok(True, 'refuse: connect refused')
    up.listen()
    reply_is(SmtpClient(up.port, timeout=2).greeting(), 220, None, 'listen() later')

    up = Upstream(silent_at='greeting')
    c = SmtpClient(up.port, timeout=1)
    is_(c.greeting().code, None, 'silent at greeting')
    up.silent_at = 'MAIL'
    c = SmtpClient(up.port, timeout=1)
    c.greeting()
    c.ehlo()
    is_(c.cmd('MAIL FROM:<a@b.example>').code, None, 'silent at MAIL')
    up.silent_at = None
    up.garbage_at = 'MAIL'
    c = SmtpClient(up.port, timeout=1)
    c.greeting()
    c.ehlo()
    is_(c.cmd('MAIL FROM:<a@b.example>').code, -1, 'garbage at MAIL')
    up.garbage_at = 'RCPT'
    up.garbage = b'250-ok\r\n550 mixed\r\n'
    c = SmtpClient(up.port, timeout=1)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<a@b.example>')
    is_(c.cmd('RCPT TO:<b@example.com>').code, -1, 'mixed-code multiline is malformed')

    up = Upstream(reset_in_data=100)
    c = SmtpClient(up.port, timeout=2)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<a@b.example>')
    c.cmd('RCPT TO:<b@example.com>')
    c.cmd('DATA')
    c.send(b'x' * 50 + b'\r\n' + b'y' * 50 + b'\r\n')
    ok(c.expect_close(3), 'reset_in_data closes')
    is_(up.transactions, 0, 'no transaction after reset')

    # swaks against the capture sink
    up = Upstream()
    p = subprocess.run(['swaks', '--server', '127.0.0.1:%d' % up.port, '--to', 'b@example.com',
                        '--from', 'a@example.org', '--body', 'swaks body', '--pipeline',
                        '--timeout', '5'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=20)
    is_(p.returncode, 0, 'swaks --pipeline to the sink')
    up.wait_messages(1, 3)
    check_stream(up, 1, 'swaks')
    like(up.messages[0].data if up.messages else b'', rb'swaks body\r\n', 'swaks body captured')

    # config rendering
    t = render_conf(fmx._merge(base_conf(25, '127.0.0.1:26', '/tmp'),
                               {'limits': {'recipients': 5}, 'relay': {'networks': ['192.0.2.0/24']},
                                'workers': None}))
    like(t, r'limits = \{\n  message_size = 1048576;\n  recipients = 5;', 'merged limits')
    like(t, r'listen = \( \{\n    address = "127\.0\.0\.1:25";\n  \} \);', 'list of groups')
    like(t, r'networks = \[ "192\.0\.2\.0/24" \];', 'array of strings')
    unlike(t, r'workers', 'None deletes a key')

    # Postfix
    import postfix
    t0 = time.time()
    pf = postfix.Postfix()
    c = SmtpClient(pf.port, source='127.0.0.2')
    reply_is(c.start(), 250, None, 'postfix ehlo')
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<box@example.com>')
    d, f = c.data(b'Subject: t\r\n\r\nbody\r\n')
    reply_is(f, 250, None, 'postfix accepted')
    c.quit()
    is_(len(pf.wait_mail(1)), 1, 'postfix delivered')
    pf.stop()
    ok(not pf._leftovers(), 'postfix stopped, nothing left (%.1fs)' % (time.time() - t0))


run(main, timeout=60)
