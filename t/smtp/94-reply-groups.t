#!/usr/bin/python3
# RFC 2920 reply groups (issue 13): while the session waits for the
# upstream (or a filter) on a pipelined command, the replies to the
# commands before it are held, and leave together with its own reply in
# one write; a group-ending command's reply (EHLO, NOOP, ...) is never
# held; a client that waits for each reply gets each at once; a group split
# across reads gets the reply of its complete part; DATA's 354 and the
# message's 250 + QUIT's 221 go out together with what came before.
#
# "One write" is seen from the client: the replies arrive in one recv()
# chunk.  "Held" is seen with an upstream Gate: the upstream has the next
# command, so frontmx had the previous reply in hand, and the client
# still has nothing.  The short polls for "nothing arrived" only bound
# the test; a slower machine can only make it pass more, never fail.
import os
import select
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

FROM, RCPT = 'alice@example.org', 'bob@example.com'
QUIET = 0.5     # how long "nothing arrives" is watched


def body(tag):
    return ('From: %s\r\nSubject: %s\r\n\r\nbody of %s\r\n' % (FROM, tag, tag)).encode()


def replies(c, n):
    return [c.reply() for _ in range(n)]


def codes(rs):
    return [r.code if r is not None else None for r in rs]


def nothing_arrives(c, secs=QUIET):
    """True when the client socket stays silent for secs (nothing buffered)."""
    if c.buf:
        return False
    r, _, _ = select.select([c.sock], [], [], secs)
    return not r


def chunks_since(c, mark):
    """The recv() chunks the client got since transcript index mark."""
    return [d for (way, d) in c.transcript[mark:] if way == '<']


def session(mx):
    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.ehlo(), 250, None, 'EHLO')
    return c


def main():
    up = Upstream()
    mx = Frontmx(up)
    n = 0

    # 1. MAIL + RCPT pipelined, the RCPT's upstream reply held: MAIL's 250
    #    is held with it, and both leave in one write.
    gate = Gate()
    up.on_rcpt = gate
    c = session(mx)
    mark = len(c.transcript)
    c.send(('MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n' % (FROM, RCPT)).encode())
    ok(gate.seen.wait(20), 'group: the upstream got the RCPT (MAIL\'s 250 is in frontmx\'s hands)')
    ok(nothing_arrives(c), 'group: MAIL\'s 250 held while the pipelined RCPT waits')
    gate.open()
    rs = replies(c, 2)
    is_(codes(rs), [250, 250], 'group: then 250 250 in order')
    got = chunks_since(c, mark)
    is_(len(got), 1, 'group: both replies in one write (one recv chunk: %r)' % got)
    c.send(b'DATA\r\n')
    reply_is(c.reply(), 354, None, 'group: DATA')
    c.send(body('group') + b'.\r\n')
    reply_is(c.reply(), 250, None, 'group: message accepted')
    n += 1
    ok(up.wait_messages(n), 'group: relayed')
    c.quit()
    up.on_rcpt = None

    # 2. Not held when the client waits for each reply: MAIL alone while
    #    its upstream reply is held; released, it arrives on its own.
    gate = Gate()
    up.on_mail = gate
    c = session(mx)
    c.send(('MAIL FROM:<%s>\r\n' % FROM).encode())
    ok(gate.seen.wait(20), 'lone MAIL: the upstream has it')
    gate.open()
    reply_is(c.reply(), 250, None, 'lone MAIL: its 250 comes without more input')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'lone RCPT: its 250 comes')
    reply_is(c.cmd('RSET'), 250, None, 'lone RSET')
    up.on_mail = None
    c.quit()

    # 3. A group split across reads: the complete MAIL line is answered
    #    although half a RCPT line is buffered behind it (no deadlock).
    c = session(mx)
    c.send(('MAIL FROM:<%s>\r\nRCPT TO:<bob@exa' % FROM).encode())
    reply_is(c.reply(), 250, None, 'split group: MAIL answered with half a RCPT buffered')
    mark = len(c.transcript)
    c.send(b'mple.com>\r\nDATA\r\n')
    rs = replies(c, 2)
    is_(codes(rs), [250, 354], 'split group: the rest, RCPT and DATA, answered in order')
    is_(len(chunks_since(c, mark)), 1, 'split group: RCPT\'s 250 and DATA\'s 354 in one write')
    c.send(body('split') + b'.\r\n')
    reply_is(c.reply(), 250, None, 'split group: message accepted')
    n += 1
    ok(up.wait_messages(n), 'split group: relayed')
    c.quit()

    # 4. Group-ending commands are not held: NOOP or EHLO before a MAIL
    #    that waits for the upstream gets its reply at once.
    for verb in ('NOOP', 'EHLO client.example', 'HELO client.example'):
        gate = Gate()
        up.on_mail = gate
        c = session(mx)
        c.send(('%s\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n' % (verb, FROM, RCPT)).encode())
        ok(gate.seen.wait(20), '%s + MAIL: the upstream has the MAIL' % verb)
        r = c.reply(timeout=10)
        ok(r is not None and r.code == 250, '%s ends a group: its reply arrives while MAIL waits (%r)'
           % (verb.split()[0], r))
        gate.open()
        is_(codes(replies(c, 2)), [250, 250], '%s + MAIL + RCPT: then MAIL and RCPT answered' % verb)
        c.cmd('RSET')
        c.quit()
    up.on_mail = None

    # 5. The whole group MAIL RCPT RCPT DATA: one write of 250 250 250 354
    #    (DATA ends it); then message + QUIT: 250 and 221 in one write.
    c = session(mx)
    mark = len(c.transcript)
    c.send(('MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n'
            % (FROM, RCPT)).encode())
    rs = replies(c, 4)
    is_(codes(rs), [250, 250, 250, 354], 'MAIL RCPT RCPT DATA: in order')
    got = chunks_since(c, mark)
    is_(len(got), 1, 'MAIL RCPT RCPT DATA: all four replies in one write (%r)' % got)
    mark = len(c.transcript)
    c.send(body('quit') + b'.\r\nQUIT\r\n')
    rs = replies(c, 2)
    is_(codes(rs), [250, 221], 'message + QUIT: 250 then 221')
    is_(len(chunks_since(c, mark)), 1, 'message + QUIT: both replies in one write')
    ok(c.expect_close(10), 'message + QUIT: closed')
    n += 1
    ok(up.wait_messages(n), 'QUIT group: relayed')

    # 6. A refused RCPT inside a held group keeps its place and its code.
    up.on_rcpt = lambda arg, conn: '550 5.1.1 no such user' if 'nobody@' in arg else None
    c = session(mx)
    c.send(('MAIL FROM:<%s>\r\nRCPT TO:<nobody@example.com>\r\nRCPT TO:<%s>\r\nDATA\r\n'
            % (FROM, RCPT)).encode())
    rs = replies(c, 4)
    is_(codes(rs), [250, 550, 250, 354], 'refused RCPT inside a group: in order')
    c.send(body('refused') + b'.\r\nQUIT\r\n')
    is_(codes(replies(c, 2)), [250, 221], 'refused RCPT group: message accepted, QUIT')
    n += 1
    ok(up.wait_messages(n), 'refused RCPT group: relayed')
    up.on_rcpt = None

    check_stream(up, n)
    mx.finish()


run(main, timeout=120)
