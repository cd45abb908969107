#!/usr/bin/python3
# RFC 5321 4.5.2 transparency: the proxy strips one leading dot from each
# client line and re-stuffs its own output; bodies round-trip exactly,
# in memory and through the spool file (spool_memory = 64 KiB).
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

HDR = b'From: alice@example.org\r\nSubject: dots\r\n\r\n'

CASES = [
    ('lone dot, two dots, dot-x, three dots',
     HDR + b'.\r\n..\r\n.x\r\n...\r\nend\r\n'),
    ('dot lines at the very end', HDR + b'text\r\n.\r\n..\r\n'),
    ('dot with trailing space and tab', HDR + b'. \r\n.\t\r\n. .\r\n'),
    ('dot-only body directly after the header', HDR + b'.\r\n'),
    ('first line of DATA starts with a dot', b'.starts: with a dot\r\n\r\nbody\r\n'),
    ('empty message', b''),
    ('CRLF only', b'\r\n'),
    ('dot lines around blank lines', HDR + b'\r\n.\r\n\r\n.\r\n\r\n'),
    # 1000 octets with CRLF; 1001 on the wire after stuffing, which RFC 5321
    # 4.5.3.1.6 allows ("not counting the leading dot duplicated")
    ('998-octet line starting with a dot', HDR + b'.' + b'd' * 997 + b'\r\n'),
]


def big_body():
    lines = []
    for i in range(6000):            # about 210 KiB: beyond spool_memory
        k = i % 6
        lines.append([b'.', b'..', b'.x%d' % i, b'...', b'plain line %d' % i, b''][k])
    return HDR + b'\r\n'.join(lines) + b'\r\n'


def main():
    up = Upstream()
    mx = Frontmx(up)
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    cases = CASES + [('210 KiB of dot lines (spooled to a file)', big_body())]
    accepted = []
    for name, body in cases:
        res = c.transaction('alice@example.org', ['bob@example.com'], body)
        if reply_is(res['dot'], 250, None, name + ': 250'):
            accepted.append((name, body))

    # A client that does NOT stuff: the server still strips one leading dot
    # (RFC 5321 4.5.2), so ".x" arrives as "x" and ".." as ".".
    unstuffed = HDR + b'.x\r\n..\r\n.abc\r\n'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'unstuffed: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'unstuffed: RCPT')
    reply_is(c.cmd('DATA'), 354, None, 'unstuffed: DATA')
    c.send(unstuffed + b'.\r\n')
    reply_is(c.reply(), 250, None, 'unstuffed: 250')
    c.quit()

    n = len(accepted) + 1
    ok(up.wait_messages(n, 10), 'upstream got %d messages' % n)
    check_stream(up, n, 'upstream')
    ms = up.messages
    for i, (name, body) in enumerate(accepted):
        if i >= len(ms):
            ok(False, name + ': relayed')
            continue
        check_relayed(ms[i].data, body, name)
        is_(ms[i].raw_data, dot_stuff(ms[i].data), name + ': upstream bytes correctly re-stuffed')
    if len(ms) == n:
        rcv, rest = split_received(ms[-1].data)
        is_(rest, HDR + b'x\r\n.\r\nabc\r\n', 'unstuffed client: one leading dot stripped per line')
        is_(ms[-1].raw_data, dot_stuff(ms[-1].data), 'unstuffed client: re-stuffed upstream')
    mx.finish()


run(main)
