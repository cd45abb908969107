#!/usr/bin/python3
# Two small bookkeeping promises (issue 8 item 14):
# - the octet count of a BDAT 250 reply counts this message's chunks only,
#   not a chunk refused before (no MAIL yet);
# - the duration logged for a message counts from its MAIL command, also
#   when it is aborted before the upstream answered that MAIL, and its
#   size is its own (0 before DATA), not the previous message's.
import os
import re
import socket
import struct
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

FROM, RCPT = 'alice@example.org', 'bob@example.com'


def main():
    up = Upstream()
    mx = Frontmx(up)

    c = SmtpClient(mx.port)
    reply_is(c.start(), 250, None, 'EHLO')
    c.send(b'BDAT 10\r\n0123456789')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT before MAIL: chunk consumed, 503')
    c.send(b'BDAT 7 LAST\r\nabcdefg')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT LAST before MAIL: 503 again')
    reply_is(c.cmd('MAIL FROM:<%s>' % FROM), 250, None, 'MAIL')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'RCPT')
    body = b'Subject: count\r\n\r\nhello\r\n'
    c.send(b'BDAT 5\r\n' + body[:5])
    r = c.reply()
    reply_is(r, 250, '2.0.0', 'first chunk of the message: 250')
    like(r.text, r'^2\.0\.0 5 octets received', 'the count is this chunk\'s 5 octets')
    c.send(b'BDAT %d LAST\r\n' % (len(body) - 5) + body[5:])
    reply_is(c.reply(), 250, '2.0.0', 'last chunk: the upstream\'s 250')
    ok(up.wait_messages(1, 10), 'message relayed')
    is_(up.messages[0].data.endswith(body), True, 'with the chunks\' bytes only')
    c.quit()

    # A MAIL the upstream has not answered yet when the client resets the
    # connection: the logged duration is at most what the test saw pass
    # between sending that MAIL and reading the log line.
    gate = Gate()
    c = SmtpClient(mx.port)
    reply_is(c.start(), 250, None, 'EHLO')
    # a first message on the same connection, whose size must not stick
    res = c.transaction(FROM, [RCPT], b'Subject: first\r\n\r\n' + b'x' * 500 + b'\r\n')
    reply_is(res['dot'], 250, None, 'a first message on the connection')
    up.on_mail = gate
    t0 = time.time()
    c.send('MAIL FROM:<%s>\r\n' % FROM)
    ok(gate.seen.wait(15), 'MAIL reached the upstream')
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    c.close()
    pat = (r'message client=\S+ from=<%s> .* size=(\d+) result=aborted .*duration=(\d+\.\d+)'
           % re.escape(FROM))
    ok(wait_for(lambda: re.search(pat, mx.log()), 15), 'the aborted message is logged')
    t1 = time.time()
    gate.open()
    up.on_mail = None
    m = re.search(pat, mx.log())
    d = float(m.group(2)) if m else -1.0
    is_(m and m.group(1), '0', 'its size is 0, not the previous message\'s')
    ok(0 <= d <= (t1 - t0) + 0.01,
       'its duration counts from MAIL (%.3f s logged, %.3f s seen by the test)' % (d, t1 - t0))
    mx.finish()


run(main, timeout=90)
