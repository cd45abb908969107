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


def wait_421(c, t0, name):
    # A hang guard only: the outcome, not the clock, is asserted; the lower
    # bound says the wait was not cut short (load can only lengthen it).
    r = c.reply(timeout=120)
    dt = time.time() - t0
    reply_is(r, 421, '4.4.2', name + ': 421 4.4.2')
    ok(dt >= 1.5, name + ': not before timeouts.command (%.1fs)' % dt)
    ok(c.expect_close(30), name + ': connection closed')


def main():
    up = Upstream()
    # distinct upstream bounds, so the log tells which one ran out
    mx = Frontmx(up, conf={'timeouts': {'command': 2, 'data_block': 2, 'upstream_command': 2,
                                        'upstream_data_end': 3}})

    # three idle clients at once: after the greeting, after EHLO, inside DATA
    a = SmtpClient(mx.port, timeout=60)
    ta = time.time()
    reply_is(a.greeting(), 220, None, 'idle A greeted')
    b = SmtpClient(mx.port, timeout=60)
    b.greeting()
    reply_is(b.ehlo(), 250, None, 'idle B after EHLO')
    tb = time.time()
    d = SmtpClient(mx.port, timeout=60)
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
    c = SmtpClient(mx.port, timeout=60)
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

    c = SmtpClient(mx.port, timeout=60)
    c.greeting()

    # silent upstream at RCPT (upstream_command = 2)
    c.ehlo()
    up.silent_at = 'RCPT'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    r = c.cmd('RCPT TO:<bob@example.com>', timeout=120)
    reply_is(r, 451, '4.4.2', 'upstream silent at RCPT: 451 4.4.2')
    ok('error="timeout" state=command detail="no complete reply within 2 s"' in mx.log(),
       'the upstream_command bound (2 s) ran out, at the command')
    up.silent_at = None
    c.cmd('RSET')
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'next transaction (upstream answering again): 250')

    # silent upstream after the dot (upstream_data_end = 2)
    up.silent_at = 'DOT'
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 451, '4.4.2', 'upstream silent after the dot: 451 4.4.2')
    ok('error="timeout" state=data-end detail="no complete reply within 3 s"' in mx.log(),
       'the upstream_data_end bound (3 s) ran out, after the dot')
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
