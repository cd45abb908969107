#!/usr/bin/python3
# The capture upstream (t/lib/fmx.py Upstream) behaves as documented, spoken
# to directly: like a strict Postfix it keeps the transaction after refusing
# DATA (nested MAIL without RSET), it closes after 421 and 221, raw bytes are
# injected exactly where asked, a message's reply is set before anyone can
# see the message, and .accepted counts 250s while .transactions counts
# every completion.  Tests that trust it (03, 04, 46) are only as strict as
# this.
import os
import time
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403


def conn(up):
    c = SmtpClient(up.port, timeout=10)
    return c


def raw_until(c, marker):
    """Bytes from c up to and including marker (or what came before EOF)."""
    while marker not in c.buf and not c.eof:
        if not c._fill(time.time() + 10):
            break
    i = c.buf.find(marker)
    if i < 0:
        out, c.buf = c.buf, b''
        return out
    out, c.buf = c.buf[:i + len(marker)], c.buf[i + len(marker):]
    return out


def main():
    up = Upstream()

    # a refused DATA keeps the transaction (Postfix)
    up.on_data = ['451 4.7.1 not now', None]
    c = conn(up)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.ehlo(), 250, None, 'EHLO')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'MAIL')
    reply_is(c.cmd('RCPT TO:<b@example.com>'), 250, None, 'RCPT')
    reply_is(c.cmd('DATA'), 451, '4.7.1', 'DATA refused')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 503, '5.5.1', 'MAIL without RSET: 503 nested MAIL')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'MAIL after RSET: 250')
    reply_is(c.cmd('RCPT TO:<b@example.com>'), 250, None, 'RCPT')
    d, f = c.data(b'Subject: x\r\n\r\nbody\r\n')
    reply_is(f, 250, None, 'message accepted')
    with up.lock:
        errs = [e[1] for e in up.errors]
    is_(errs, ['nested MAIL'], 'the upstream recorded the nested MAIL as an error')
    c.quit()
    with up.lock:
        up.errors[:] = []

    # the reply is set when the message is published; counters
    up.on_dot = ['554 5.7.1 no', None]
    c = conn(up)
    c.greeting()
    c.ehlo()
    res = c.transaction('a@example.org', ['b@example.com'], b'Subject: y\r\n\r\nbody\r\n')
    reply_is(res['dot'], 554, '5.7.1', 'final dot refused')
    ok(up.wait_messages(2, 10), 'two completions')
    with up.lock:
        replies = [m.reply for m in up.messages]
    ok(all(r is not None for r in replies), 'every published message has its reply (%r)' % (replies,))
    is_((up.transactions, up.accepted), (2, 1), '.transactions counts both, .accepted the 250 only')
    c.quit()

    # 421 closes the connection (unless close_on_421 is off)
    up.on_mail = '421 4.3.2 closing'
    c = conn(up)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 421, '4.3.2', '421 to MAIL')
    ok(c.expect_close(10), 'the upstream closed after its 421')
    up.close_on_421 = False
    c = conn(up)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 421, '4.3.2', '421 to MAIL, close_on_421 off')
    reply_is(c.cmd('NOOP'), 250, None, 'the connection stays open')
    c.close()
    up.close_on_421 = True
    up.on_mail = None

    # injection: on connect, behind a reply, after the dot
    up.inject = {'connect': b'250 early\r\n', 'MAIL': b'250 extra\r\n',
                 'DOT': b'554 second\r\n'}
    c = conn(up)
    is_(raw_until(c, b'\r\n'), b'250 early\r\n', 'connect: the injected bytes come first')
    like(raw_until(c, b'\r\n'), rb'^220 ', 'then the greeting')
    c.ehlo()
    c.send(b'MAIL FROM:<a@example.org>\r\n')
    is_(raw_until(c, b'250 extra\r\n'), b'250 2.1.0 Ok\r\n250 extra\r\n',
        'MAIL: the reply, then the injected bytes')
    up.inject = {'DOT': b'554 second\r\n'}
    c.cmd('RCPT TO:<b@example.com>')
    c.cmd('DATA')
    c.send(b'Subject: z\r\n\r\nbody\r\n.\r\n')
    like(raw_until(c, b'554 second\r\n'), rb'^250 [^\r\n]*\r\n554 second\r\n$',
         'DOT: the reply, then the injected bytes')
    c.quit()

    # injection in the middle of the data, with hold
    up.inject = {'data': b'250 2.0.0 early\r\n'}
    up.hold_data = True
    up.inject_data_at = 20
    c = conn(up)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<a@example.org>')
    c.cmd('RCPT TO:<b@example.com>')
    reply_is(c.cmd('DATA'), 354, None, 'DATA 354')
    n = up.transactions
    c.send(b'Subject: w\r\n\r\n' + b'line\r\n' * 10 + b'.\r\n')
    is_(raw_until(c, b'\r\n'), b'250 2.0.0 early\r\n', 'data: the injected bytes, before the dot was read')
    is_(up.transactions, n, 'held: the final dot is not read before release()')
    up.release()
    like(raw_until(c, b'\r\n'), rb'^250 2\.0\.0 Ok: queued', 'after release() the real final reply')
    ok(up.wait_messages(n + 1, 10), 'and the message completes')
    c.quit()
    up.stop()


run(main, timeout=60)
