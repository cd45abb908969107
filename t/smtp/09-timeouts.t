#!/usr/bin/python3
# Every wait has a timeout: an idle client gets 421 4.4.2 and is closed
# (timeouts.command = 2, timeouts.data_block = 2), and so does one that
# trickles a command line, since the timeout bounds the whole wait for
# the line; a silent upstream gives 451 4.4.2 after
# timeouts.upstream_command / upstream_data_end = 2.
import os
import select
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: timeouts\r\n\r\nbody\r\n'


def wait_421(c, t0, name, lo=1.5, hi=7.0):
    r = c.reply(timeout=hi + 1 - (time.time() - t0))
    dt = time.time() - t0
    reply_is(r, 421, '4.4.2', name + ': 421 4.4.2')
    ok(lo <= dt <= hi, name + ': after about 2 s (%.1fs)' % dt)
    ok(c.expect_close(3), name + ': connection closed')


def main():
    up = Upstream()
    mx = Frontmx(up, conf={'timeouts': {'command': 2, 'data_block': 2, 'upstream_command': 2,
                                        'upstream_data_end': 2}})

    # three idle clients at once: after the greeting, after EHLO, inside DATA
    a = SmtpClient(mx.port, timeout=10)
    ta = time.time()
    reply_is(a.greeting(), 220, None, 'idle A greeted')
    b = SmtpClient(mx.port, timeout=10)
    b.greeting()
    reply_is(b.ehlo(), 250, None, 'idle B after EHLO')
    tb = time.time()
    d = SmtpClient(mx.port, timeout=10)
    d.greeting()
    d.ehlo()
    d.cmd('MAIL FROM:<alice@example.org>')
    d.cmd('RCPT TO:<bob@example.com>')
    reply_is(d.cmd('DATA'), 354, None, 'idle D inside DATA')
    d.send(b'Subject: half\r\n\r\npartial line without end')
    td = time.time()
    wait_421(a, ta, 'idle after greeting')
    wait_421(b, tb, 'idle after EHLO')
    wait_421(d, td, 'idle inside DATA')

    # activity inside one command line does not reset the clock:
    # timeouts.command bounds the whole wait for the line (49-trickle.t
    # has the other trickles)
    c = SmtpClient(mx.port, timeout=10)
    c.greeting()
    line = b'NOOP ' + b'x' * 40 + b'\r\n'
    sent = 0
    for i in range(len(line)):
        c.send(line[i:i + 1])
        sent += 1
        if select.select([c.sock], [], [], 0.5)[0]:
            break
    reply_is(c.reply(), 421, '4.4.2', 'a NOOP trickled one byte every 0.5 s: 421 4.4.2')
    ok(sent < len(line), 'the trickled line was cut (%d of %d bytes)' % (sent, len(line)))
    c.close()

    c = SmtpClient(mx.port, timeout=10)
    c.greeting()

    # silent upstream at RCPT (upstream_command = 2)
    c.ehlo()
    up.silent_at = 'RCPT'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    t0 = time.time()
    r = c.cmd('RCPT TO:<bob@example.com>')
    dt = time.time() - t0
    reply_is(r, 451, '4.4.2', 'upstream silent at RCPT: 451 4.4.2')
    ok(1.5 <= dt <= 6, 'after about timeouts.upstream_command (%.1fs)' % dt)
    up.silent_at = None
    c.cmd('RSET')
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'next transaction (upstream answering again): 250')

    # silent upstream after the dot (upstream_data_end = 2)
    up.silent_at = 'DOT'
    t0 = time.time()
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    dt = time.time() - t0
    reply_is(res['dot'], 451, '4.4.2', 'upstream silent after the dot: 451 4.4.2')
    ok(dt <= 7, 'after about timeouts.upstream_data_end (%.1fs)' % dt)
    up.silent_at = None
    c.quit()

    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'daemon still serves new connections')
    c.quit()
    ok(up.wait_messages(2, 5), 'upstream saw both completed messages')
    check_stream(up, 2, 'upstream')
    ok(not any(m.rcpts == [] for m in up.messages), 'no partial message from the idle DATA client')
    mx.finish()


run(main)
