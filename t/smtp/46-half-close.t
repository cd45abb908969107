#!/usr/bin/python3
# A client that half-closes (shutdown(SHUT_WR) once it has written its last
# command) is owed every reply to what it sent: frontmx stops reading at
# end of file, finishes the transaction and every buffered command, writes
# the replies, then closes.  Exim 4.96 does exactly this on every
# plaintext delivery (t/smtp/47-exim.t).  Each message must reach the
# upstream exactly once, and a client that half-closes before its message
# is complete gets nothing relayed.
import os
import re
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

FROM, RCPT = 'alice@example.org', 'bob@example.com'


def body(tag):
    return ('From: %s\r\nSubject: %s\r\n\r\nhalf-close %s\r\n' % (FROM, tag, tag)).encode()


def half_close(c):
    c.sock.shutdown(socket.SHUT_WR)


def replies(c, n, timeout=15):
    return [c.reply(timeout=timeout) for _ in range(n)]


def codes(rs):
    return [r.code for r in rs]


def relayed(up, tag, name):
    """Exactly one upstream message carries this tag."""
    want = body(tag)
    got = [m for m in up.messages if m.data.endswith(want)]
    return is_(len(got), 1, name + ': relayed exactly once')


def session(mx):
    c = SmtpClient(mx.port, timeout=15)
    reply_is(c.start(), 250, None, 'EHLO')
    return c


def in_data(mx, name):
    """A session with MAIL, RCPT and DATA pipelined and answered."""
    c = session(mx)
    c.send('MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n' % (FROM, RCPT))
    is_(codes(replies(c, 3)), [250, 250, 354], name + ': MAIL, RCPT, DATA answered')
    return c


def delivered(up, n, tag, name):
    ok(up.wait_messages(n, 10), name + ': upstream got the message')
    relayed(up, tag, name)


def main():
    up = Upstream(ehlo_caps=['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES',
                             'CHUNKING'])
    mx = Frontmx(up)
    n = 0

    # 1. after the dot: the whole transaction pipelined, then SHUT_WR
    c = in_data(mx, 'dot')
    c.send(dot_stuff(body('dot')) + b'.\r\n')
    half_close(c)
    reply_is(c.reply(), 250, '2.0.0', 'half-closed after the dot: 250 for the message')
    ok(c.expect_close(15), 'dot: then frontmx closes')
    n += 1
    delivered(up, n, 'dot', 'dot')

    # 2. after QUIT, everything (even MAIL..DATA) in one write with the body
    #    only after the 354, as RFC 2920 wants
    c = in_data(mx, 'quit')
    c.send(dot_stuff(body('quit')) + b'.\r\nQUIT\r\n')
    half_close(c)
    rs = replies(c, 2)
    is_(codes(rs), [250, 221], 'half-closed after QUIT: 250 for the message, then 221')
    ok(c.expect_close(15), 'quit: then frontmx closes')
    n += 1
    delivered(up, n, 'quit', 'quit')

    # 3. commands still buffered when the end of file arrives: MAIL and
    #    RCPT wait for the upstream, the rest waits behind them
    c = session(mx)
    c.send('MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nNOOP\r\nRSET\r\nQUIT\r\n' % (FROM, RCPT))
    half_close(c)
    is_(codes(replies(c, 5)), [250, 250, 250, 250, 221],
        'buffered commands: each answered after the half-close')
    ok(c.expect_close(15), 'buffered commands: then frontmx closes')

    # 4. half-close while the upstream is in the middle of its reply to
    #    the final dot: the upstream stored the message, so the client must
    #    hear the 250 (else it sends the message again: a duplicate)
    gate = Gate(first=b'250 2.0.0 Ok: ', reply='queued as SLOW')   # half a reply, the rest later
    up.on_dot = gate
    c = in_data(mx, 'slow dot')
    c.send(dot_stuff(body('slow')) + b'.\r\nQUIT\r\n')
    ok(gate.seen.wait(15), 'slow dot: the upstream got the dot and started its reply')
    mark = len(mx.log())
    half_close(c)
    # Release the upstream only once frontmx has seen the end of file.
    ok(wait_for(lambda: re.search(r'smtp (eof|closing reason=eof)', mx.log()[mark:]), 15),
       'slow dot: frontmx saw the half-close')
    gate.open()
    rs = replies(c, 2)
    is_(codes(rs), [250, 221], 'slow dot: 250 for the message, then 221')
    like(rs[0].text, r'queued as SLOW', 'slow dot: the upstream\'s own 250 relayed')
    ok(c.expect_close(15), 'slow dot: then frontmx closes')
    up.on_dot = None
    n += 1
    relayed(up, 'slow', 'slow dot')

    # 5. BDAT LAST, then QUIT, then SHUT_WR (Exim with CHUNKING)
    c = session(mx)
    b = body('bdat')
    c.send(b'MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n' % (FROM.encode(), RCPT.encode(),
                                                                  len(b)) + b + b'QUIT\r\n')
    half_close(c)
    is_(codes(replies(c, 4)), [250, 250, 250, 221], 'BDAT LAST + QUIT + half-close: all answered')
    ok(c.expect_close(15), 'bdat: then frontmx closes')
    n += 1
    delivered(up, n, 'bdat', 'bdat')

    # 6. two chunks, both in the buffer behind the half-close
    c = session(mx)
    b = body('chunks')
    c.send(b'MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT 10\r\n%sBDAT %d LAST\r\n%s' % (
        FROM.encode(), RCPT.encode(), b[:10], len(b) - 10, b[10:]))
    half_close(c)
    is_(codes(replies(c, 4)), [250, 250, 250, 250], 'two chunks then half-close: all answered')
    ok(c.expect_close(15), 'chunks: then frontmx closes without QUIT')
    n += 1
    delivered(up, n, 'chunks', 'chunks')

    # 7. end of file before the message is complete: nothing is relayed
    c = in_data(mx, 'cut DATA')
    c.send(body('cut-data') + b'no final dot')
    half_close(c)
    ok(c.expect_close(15), 'cut DATA: frontmx closes')
    c = session(mx)
    b = body('cut-bdat')
    c.send(b'MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n' % (FROM.encode(), RCPT.encode(),
                                                                  len(b) + 10) + b)
    half_close(c)
    is_(codes(replies(c, 2)), [250, 250], 'cut BDAT: MAIL and RCPT answered')
    ok(c.expect_close(15), 'cut BDAT: frontmx closes')
    ok(wait_for(lambda: len(re.findall(r'result=aborted reply="client disconnected"',
                                       mx.log())) >= 2, 15),
       'cut DATA and BDAT: both logged as aborted')

    # 8. a client that goes away at once (a full close, which frontmx cannot
    #    tell from a half-close) while its MAIL waits for the upstream: the
    #    replies meet a closed socket, the session ends, nothing is relayed
    gate2 = Gate()
    up.on_mail = gate2
    gone = len(re.findall(r'smtp disconnect', mx.log()))
    c = session(mx)
    c.send('MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n' % (FROM, RCPT))
    ok(gate2.seen.wait(15), 'full close: MAIL reached the upstream')
    c.close()
    gate2.open()
    ok(wait_for(lambda: len(re.findall(r'smtp disconnect', mx.log())) > gone, 15),
       'full close: the session ends')
    up.on_mail = None

    c = session(mx)
    reply_is(c.cmd('NOOP'), 250, None, 'daemon still serves new connections')
    c.quit()
    check_stream(up, n, 'upstream')
    ok(not any(m.data.endswith(body('cut-data')) or b'cut-' in m.data for m in up.messages),
       'no partial message relayed')
    mx.finish()


run(main, timeout=150)
