#!/usr/bin/python3
# A timeout bounds the whole wait, not the gap between two bytes (issue 8
# item 9).  Peers that trickle, each byte well inside the timeout:
# - a client trickling one command line gets 421 4.4.2 at
#   timeouts.command, before it has sent the whole line;
# - an upstream dribbling its reply to RCPT or to the final dot gives the
#   client 451 4.4.2 at timeouts.upstream_command / upstream_data_end,
#   before it has sent the whole reply;
# - a client trickling its message (DATA, or BDAT one octet per chunk)
#   gets 421 4.4.2 at timeouts.data, the bound on the whole message,
#   although each chunk arrives well inside timeouts.data_block;
# - a PROXY header trickled by a balancer is cut at its 10 s bound;
# - a SASL response line trickled inside AUTH gets 421 at timeouts.command.
# Nothing here measures time: each case asserts the outcome (the 4xx
# arrives, the trickler had not finished); the loops have hang guards.
import os
import select
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_auth import AuthUpstream, b64  # noqa: E402
from fmx_tls import TlsClient, client_ctx, frontmx_listeners, listener, make_cert  # noqa: E402

FROM, RCPT = 'alice@example.org', 'bob@example.com'
GAP = 0.1       # between two trickled bytes: far inside every timeout (2 s)
T = {'command': 2, 'data_block': 2, 'upstream_command': 2, 'upstream_data_end': 2}


def trickle(c, data, gap=GAP):
    """Send data one byte at a time until frontmx answers; the number of
    bytes sent before the answer."""
    for i in range(len(data)):
        if not c.send(data[i:i + 1]):
            return i
        r, _, _ = select.select([c.sock], [], [], gap)
        if r:
            return i + 1
    return len(data)


class Dribble:
    """Upstream reply hook: the reply one byte at a time, CRLF last."""

    def __init__(self, text):
        self.text = text.encode()
        self.sent = None

    def __call__(self, arg, conn):
        self.sent = 0
        for i in range(len(self.text)):
            try:
                conn.sock.sendall(self.text[i:i + 1])
            except OSError:
                break
            self.sent += 1
            time.sleep(GAP)
        return '\r\n'


def client_side(mx):
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start(), 250, None, 'EHLO')
    line = ('MAIL FROM:<%s@example.org>\r\n' % ('t' * 150)).encode()
    n = trickle(c, line)
    reply_is(c.reply(), 421, '4.4.2', 'trickled command line: 421 4.4.2')
    ok(n < len(line), 'trickled command line: cut before its end (%d of %d bytes)'
       % (n, len(line)))
    ok(c.expect_close(10), 'trickled command line: connection closed')

    # complete commands, each well inside timeouts.command, keep a session
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start(), 250, None, 'EHLO')
    good = all(c.cmd('NOOP').code == 250 for _ in range(5))
    ok(good, 'each complete command starts a new wait')
    c.quit()


def upstream_side(up, mx):
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start(), 250, None, 'EHLO')
    d = Dribble('250 2.1.5 ' + 'r' * 150)
    up.on_rcpt = d
    reply_is(c.cmd('MAIL FROM:<%s>' % FROM), 250, None, 'MAIL')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 451, '4.4.2', 'upstream dribbling its RCPT reply: 451 4.4.2')
    ok(d.sent is not None and d.sent < len(d.text),
       'the dribbled RCPT reply was cut before its end (%s of %d bytes)' % (d.sent, len(d.text)))
    up.on_rcpt = None
    c.cmd('RSET')
    d = Dribble('250 2.0.0 Ok: ' + 'q' * 150)
    up.on_dot = d
    res = c.transaction(FROM, [RCPT], b'Subject: dribble\r\n\r\nbody\r\n')
    reply_is(res['dot'], 451, '4.4.2', 'upstream dribbling its reply to the dot: 451 4.4.2')
    ok(d.sent is not None and d.sent < len(d.text),
       'the dribbled dot reply was cut before its end (%s of %d bytes)' % (d.sent, len(d.text)))
    up.on_dot = None
    res = c.transaction(FROM, [RCPT], b'Subject: after\r\n\r\nbody\r\n')
    reply_is(res['dot'], 250, None, 'the next message goes through')
    c.quit()


def data_side(up, mx):
    # DATA: every byte well inside data_block, the message past timeouts.data
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start(), 250, None, 'EHLO')
    c.cmd('MAIL FROM:<%s>' % FROM)
    c.cmd('RCPT TO:<%s>' % RCPT)
    reply_is(c.cmd('DATA'), 354, None, 'DATA: 354')
    msg = b'Subject: trickle\r\n\r\n' + b'd' * 300 + b'\r\n.\r\n'
    n = trickle(c, msg)
    reply_is(c.reply(), 421, '4.4.2', 'trickled message: 421 4.4.2 at timeouts.data')
    ok(n < len(msg), 'trickled message: cut before its end (%d of %d bytes)' % (n, len(msg)))
    ok(c.expect_close(10), 'trickled message: connection closed')

    # BDAT: one octet per chunk, each chunk answered at once
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start(), 250, None, 'EHLO')
    c.cmd('MAIL FROM:<%s>' % FROM)
    c.cmd('RCPT TO:<%s>' % RCPT)
    sent, r = 0, None
    for i in range(300):
        c.send(b'BDAT 1\r\nx')
        r = c.reply()
        if r.code != 250:
            break
        sent += 1
        time.sleep(GAP)
    reply_is(r, 421, '4.4.2', 'BDAT one octet at a time: 421 4.4.2 at timeouts.data')
    ok(sent < 300, 'BDAT one octet at a time: cut before the end (%d chunks of 300)' % sent)
    ok(c.expect_close(10), 'BDAT trickle: connection closed')


def proxy_side(up):
    # A PROXY header trickled by a "balancer": its 10 s bound is for the
    # whole header (the connection closes without a greeting).
    mx = Frontmx(up, conf={'timeouts': T}, start=False)
    port = mx.port
    mx.write_conf(conf={'timeouts': T, 'listen': [{'address': '127.0.0.1:%d' % port,
                                                   'proxy_protocol': True,
                                                   'proxy_from': ['127.0.0.0/8']}]})
    mx.start()
    c = SmtpClient(port, timeout=60)
    hdr = b'PROXY TCP4 192.0.2.1 192.0.2.2 ' + b'1' * 60
    n = trickle(c, hdr, gap=0.3)
    ok(c.expect_close(30), 'trickled PROXY header: connection closed')
    ok(n < len(hdr), 'trickled PROXY header: cut before its end (%d of %d bytes)' % (n, len(hdr)))
    mx.finish()


def auth_side():
    # A SASL response line trickled inside AUTH LOGIN: timeouts.command
    # bounds the whole line there too.
    certs = make_cert(tmpdir('fmx-trickle-'), 'mx.test.example')
    up = AuthUpstream(users={'alice': 'secret'})
    mx = frontmx_listeners(up, [listener('starttls', certs, auth=True)], conf={'timeouts': T})
    c = TlsClient(mx.port, timeout=60)
    c.greeting()
    c.ehlo('trickle.example')
    r, err = c.starttls(client_ctx(certs.cert), 'mx.test.example')
    ok(r.code == 220 and err is None, 'AUTH: STARTTLS')
    c.ehlo('trickle.example')
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'AUTH LOGIN: 334')
    line = (b64('alice') + 'A' * 120 + '\r\n').encode()
    n = trickle(c, line)
    reply_is(c.reply(), 421, '4.4.2', 'trickled SASL line: 421 4.4.2')
    ok(n < len(line), 'trickled SASL line: cut before its end (%d of %d bytes)' % (n, len(line)))
    mx.finish()


def main():
    up = Upstream(ehlo_caps=['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES',
                             'CHUNKING'])
    mx = Frontmx(up, conf={'timeouts': T})
    client_side(mx)
    upstream_side(up, mx)
    mx.finish()

    proxy_side(up)
    auth_side()

    mx = Frontmx(up, conf={'timeouts': dict(T, data=4)})
    data_side(up, mx)
    check_stream(up, 2, 'upstream')
    ok(all(m.data.endswith(b'body\r\n') for m in up.messages), 'no trickled message relayed')
    mx.finish()


run(main, timeout=240)
