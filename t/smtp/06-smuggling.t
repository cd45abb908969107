#!/usr/bin/python3
# SMTP smuggling (SECURITY.md section 1).  Each known end-of-data look-alike
# is embedded in a message, followed by a smuggled MAIL/RCPT/DATA and a
# second message, then the real CRLF.CRLF.  The proxy must not take the
# look-alike as the end of data (no reply before the real terminator), must
# answer one 5xx for the whole thing, and the upstream must see zero
# transactions and never the smuggled envelope.  Bare CR, bare LF and NUL in
# command lines make the whole line (up to the next CRLF) one bad command.
import os
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

SEQUENCES = [
    b'\n.\n', b'\r.\r', b'\r.\n', b'\n.\r', b'\n.\r\n', b'\r\n.\n', b'\r.\r\n',
    b'\r\n.\r', b'\r\n.\r\r\n', b'\r\r\n.\r\r\n', b'\r\n\x00.\r\n', b'\r\n.\x00\r\n',
]

SMUGGLED = (b'MAIL FROM:<admin@smuggled.example>\r\n'
            b'RCPT TO:<victim@example.com>\r\n'
            b'DATA\r\n'
            b'From: admin@smuggled.example\r\n'
            b'Subject: smuggled\r\n'
            b'\r\n'
            b'smuggled body\r\n')

FIRST = (b'From: alice@example.org\r\n'
         b'To: bob@example.com\r\n'
         b'Subject: carrier\r\n'
         b'\r\n'
         b'first message')


def open_data(mx):
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    m = c.cmd('MAIL FROM:<alice@example.org>')
    r = c.cmd('RCPT TO:<bob@example.com>')
    d = c.cmd('DATA')
    return c, (m.code, r.code, d.code) == (250, 250, 354)


def main():
    up = Upstream()
    mx = Frontmx(up)

    for seq in SEQUENCES:
        name = 'DATA with %r' % seq
        c, ready = open_data(mx)
        ok(ready, name + ': MAIL/RCPT/DATA accepted')
        c.send(FIRST + seq + SMUGGLED)
        early = c.reply(timeout=0.4)
        ok(early.code is None and not c.eof,
           name + ': no reply before the real CRLF.CRLF (%r)' % (early,))
        c.send(b'\r\n.\r\n')
        r = c.reply()
        want = '5.6.0' if b'\x00' in seq else '5.5.2'
        reply_is(r, 550, want, name + ': one 550 %s for the message' % want)
        n = c.cmd('NOOP')
        reply_is(n, 250, None, name + ': next reply is the NOOP\'s (no reply to smuggled commands)')
        reply_is(c.cmd('RCPT TO:<x@example.com>'), 503, '5.5.1',
                 name + ': no transaction open afterwards')
        c.quit()

    # the session stays usable after a rejected message: a clean one passes
    c, ready = open_data(mx)
    c.send(b'\r\n'.join([b'Subject: bare LF first', b'', b'x\ny']) + b'\r\n.\r\n')
    reply_is(c.reply(), 550, '5.5.2', 'bare LF inside a line: 550 5.5.2')
    clean = b'From: alice@example.org\r\nSubject: clean\r\n\r\nclean body\r\n'
    res = c.transaction('alice@example.org', ['bob@example.com'], clean)
    reply_is(res['dot'], 250, None, 'clean message afterwards in the same session: 250')
    c.quit()

    # the smuggled sequence split across TCP segments changes nothing
    c, ready = open_data(mx)
    for piece in (FIRST + b'\n', b'.', b'\n' + SMUGGLED[:10], SMUGGLED[10:]):
        c.send(piece)
        time.sleep(0.05)        # separate TCP segments
    c.send(b'\r\n.\r\n')
    # an early reply to the split sequence would be read here in place of the 550
    reply_is(c.reply(), 550, '5.5.2', 'split \\n.\\n: no early reply, the end of data gets 550 5.5.2')
    reply_is(c.cmd('NOOP'), 250, None, 'split \\n.\\n: and nothing else was queued (NOOP answered next)')
    c.quit()

    # the whole attack in one write, DATA not waiting for 354 (as the
    # smuggling scanners send it); every smuggled sequence in one message
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.send(b'MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n' + FIRST +
           b''.join(s + SMUGGLED for s in SEQUENCES) + b'\r\n.\r\nNOOP\r\n')
    rs = [c.reply() for _ in range(5)]
    is_([r.code for r in rs], [250, 250, 354, 550, 250],
        'one write: MAIL RCPT DATA, all sequences, CRLF.CRLF, NOOP -> 250 250 354 550 250')
    ok(c.reply(timeout=0.4).code is None, 'one write: no further reply')
    c.quit()

    # -- command lines
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    for seq, what in ((b'\n', 'bare LF'), (b'\r', 'bare CR'), (b'\x00', 'NUL')):
        c.send(b'NOOP' + seq + b'MAIL FROM:<admin@smuggled.example>\r\n')
        reply_is(c.reply(), 500, '5.5.2', '%s in a command line: 500 5.5.2' % what)
        reply_is(c.cmd('RCPT TO:<victim@example.com>'), 503, '5.5.1',
                 '%s: the MAIL after it was never executed' % what)
    # the MAIL itself carrying the bad byte
    c.send(b'MAIL FROM:<alice@example.org>\nRCPT TO:<victim@example.com>\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'MAIL..\\nRCPT..: one 500 5.5.2')
    reply_is(c.cmd('NOOP'), 250, None, 'exactly one reply for that line')
    reply_is(c.cmd('RCPT TO:<victim@example.com>'), 503, '5.5.1', 'and no MAIL is active')
    c.send(b'MAIL FROM:<alice@example.org>\x00 SIZE=10\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'NUL inside MAIL: 500 5.5.2')
    reply_is(c.cmd('RCPT TO:<victim@example.com>'), 503, '5.5.1', 'NUL MAIL not executed')
    # a bare LF is not a line end: no reply until the CRLF arrives
    c.send(b'NOOP\n')
    early = c.reply(timeout=0.4)
    ok(early.code is None and not c.eof, 'NOOP<LF>: no reply (LF is not a line end) (%r)' % (early,))
    c.send(b'\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'NOOP<LF><CR><LF>: 500 5.5.2')
    # bare CR right before CRLF
    c.send(b'NOOP\r\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'NOOP<CR><CR><LF>: 500 5.5.2')
    # a pipelined group with a smuggled line in the middle
    c.send(b'MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\nDATA\r\nRSET\r\n')
    rs = [c.reply() for _ in range(3)]
    is_([r.code for r in rs], [250, 500, 250], 'MAIL, RCPT<LF>DATA (one bad line), RSET')
    reply_is(c.cmd('NOOP'), 250, None, 'in step afterwards')
    c.quit()

    ok(up.wait_messages(1, 10), 'the clean message was relayed')
    check_stream(up, 1, 'upstream')
    allb = up.all_bytes()
    ok(b'smuggled' not in allb, 'no smuggled byte ever reached the upstream')
    ok(b'victim@' not in allb, 'the smuggled recipient never reached the upstream')
    ok(b'\x00' not in allb, 'no NUL reached the upstream')
    if up.messages:
        check_relayed(up.messages[0].data, clean, 'clean message')
    ok(mx.alive(), 'daemon alive')
    mx.finish()


run(main)
