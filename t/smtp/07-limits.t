#!/usr/bin/python3
# Bounded: recipients, message size (SIZE= and actual), text line 1000,
# command line 512, path 256, local-part 64, hard error limit.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

HDR = b'From: alice@example.org\r\nSubject: limits\r\n\r\n'
SIZE = 100000


def domain_of(n):
    """A syntactically valid domain of exactly n octets (labels <= 63)."""
    rest = n - 4                     # room before ".com"
    labels = []
    while rest > 0:
        take = min(63, rest)
        if rest - take == 1:         # never leave a lone dot
            take -= 1
        labels.append('d' * take)
        rest -= take
        if rest > 0:
            rest -= 1
    d = '.'.join(labels + ['com'])
    assert len(d) == n, (n, len(d))
    return d


def mailbox_of(n, local=64):
    m = 'a' * local + '@' + domain_of(n - local - 1)
    assert len(m) == n
    return m


def session(mx):
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    return c


def main():
    up = Upstream()
    mx = Frontmx(up, conf={'limits': {'message_size': SIZE}})
    relayed = 0

    c = SmtpClient(mx.port)
    c.greeting()
    e = c.ehlo()
    ok('SIZE %d' % SIZE in e.lines, 'EHLO advertises SIZE %d' % SIZE)

    # -- SIZE= and message size
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=%d' % (SIZE * 2)), 552, '5.3.4',
             'MAIL SIZE= over the limit: 552 5.3.4')
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=1000'), 250, None, 'MAIL SIZE=1000: 250')
    c.cmd('RSET')
    big = HDR + (b'x' * 98 + b'\r\n') * (SIZE * 3 // 200)       # 1.5 x limit
    res = c.transaction('alice@example.org', ['bob@example.com'], big)
    reply_is(res['data'], 354, None, 'oversized message: DATA 354')
    reply_is(res['dot'], 552, '5.3.4', 'oversized message: 552 5.3.4 after the dot')
    ok(not c.eof, 'connection kept open after 552')
    fits = HDR + (b'y' * 98 + b'\r\n') * (SIZE * 8 // 1000)     # 0.8 x limit
    res = c.transaction('alice@example.org', ['bob@example.com'], fits)
    reply_is(res['dot'], 250, None, 'message of 0.8 x limit: 250')
    relayed += 1
    c.quit()

    # -- recipients: 100 accepted, the 101st gets 452 4.5.3
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL for 101 recipients')
    c.send(b''.join(b'RCPT TO:<r%03d@example.com>\r\n' % i for i in range(101)))
    rs = [c.reply() for _ in range(101)]
    is_([r.code for r in rs[:100]], [250] * 100, 'first 100 recipients: 250')
    reply_is(rs[100], 452, '4.5.3', '101st recipient: 452 4.5.3')
    body = HDR + b'many recipients\r\n'
    d, f = c.data(body)
    reply_is(f, 250, None, 'message to 100 recipients: 250')
    relayed += 1
    c.quit()

    # -- text lines
    c = session(mx)
    line998 = HDR + b'z' * 998 + b'\r\n'
    res = c.transaction('alice@example.org', ['bob@example.com'], line998)
    reply_is(res['dot'], 250, None, 'text line of 1000 octets incl. CRLF: 250')
    relayed += 1
    for n, name in ((999, '1001-octet text line'), (100000, '100 KB text line')):
        reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, name + ': MAIL')
        c.cmd('RCPT TO:<bob@example.com>')
        reply_is(c.cmd('DATA'), 354, None, name + ': DATA')
        c.send(HDR + b'q' * n + b'\r\nmore\r\n')
        early = c.reply(timeout=0.4)
        ok(early.code is None and not c.eof, name + ': no reply before the dot (%r)' % (early,))
        c.send(b'.\r\n')
        reply_is(c.reply(), 500, '5.5.2', name + ': 500 5.5.2 after the dot')
    reply_is(c.cmd('NOOP'), 250, None, 'session usable after over-long text lines')
    c.quit()

    # -- command lines
    c = session(mx)
    reply_is(c.cmd('NOOP ' + 'n' * 505), 250, None, '512-octet command line (incl. CRLF): 250')
    reply_is(c.cmd('NOOP ' + 'n' * 506), 500, '5.5.2', '513-octet command line: 500 5.5.2')
    reply_is(c.cmd('NOOP'), 250, None, 'in step after the 513-octet line')
    c.send(b'MAIL FROM:<alice@example.org> ' + b'X' * 100000 + b'\r\nNOOP\r\n')
    r1, r2 = c.reply(), c.reply()
    reply_is(r1, 500, '5.5.2', '100 KB command line: one 500 5.5.2')
    reply_is(r2, 250, None, 'followed by the NOOP reply')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'the long MAIL was not executed')

    # -- path lengths (RFC 5321 4.5.3.1.3: 256 octets including < >)
    ok256, ok257 = mailbox_of(254), mailbox_of(255)
    reply_is(c.cmd('MAIL FROM:<%s>' % ok257), 501, '5.1.7', 'MAIL path of 257 octets: 501 5.1.7')
    reply_is(c.cmd('MAIL FROM:<%s>' % ok256), 250, None, 'MAIL path of 256 octets: 250')
    reply_is(c.cmd('RCPT TO:<%s>' % ok257), 501, '5.1.3', 'RCPT path of 257 octets: 501 5.1.3')
    reply_is(c.cmd('RCPT TO:<%s>' % ok256), 250, None, 'RCPT path of 256 octets: 250')
    reply_is(c.cmd('RCPT TO:<%s@example.com>' % ('l' * 65)), 501, '5.1.3', 'RCPT local-part of 65: 501 5.1.3')
    reply_is(c.cmd('RCPT TO:<%s@example.com>' % ('l' * 64)), 250, None, 'RCPT local-part of 64: 250')
    d, f = c.data(HDR + b'long paths\r\n')
    reply_is(f, 250, None, 'message with 256-octet paths: 250')
    relayed += 1
    reply_is(c.cmd('MAIL FROM:<%s@example.org>' % ('l' * 65)), 501, '5.1.7', 'MAIL local-part of 65: 501 5.1.7')
    reply_is(c.cmd('MAIL FROM:<a@%s.example.org>' % ('l' * 64)), 501, None, 'MAIL domain label of 64: 501')
    c.quit()

    # -- hard error limit (limits.errors = 20), one command at a time
    c = session(mx)
    codes = []
    for i in range(25):
        r = c.cmd('XYZZY %d' % i, timeout=5)
        codes.append(r.code)
        if r.code != 500:
            break
    ok(codes[-1] == 421 and 19 <= len(codes) - 1 <= 20 and set(codes[:-1]) == {500},
       'after 19-20 unknown commands (500): 421 (%s)' % codes)
    reply_is(r, 421, '4.7.0', 'error limit reply is 421 4.7.0')
    ok(c.expect_close(5), 'closed after the error limit')

    # pipelined junk: replies stop at the 421 and the connection closes
    c = session(mx)
    c.send(b''.join(b'XYZZY %d\r\n' % i for i in range(40)))
    rs = []
    while True:
        r = c.reply(timeout=5)
        if r.code is None:
            break
        rs.append(r.code)
        if r.code == 421:
            break
    ok(rs and rs[-1] == 421 and len(rs) <= 21, 'pipelined junk: cut off with 421 (%d replies)' % len(rs))
    ok(c.expect_close(5), 'pipelined junk: connection closed')
    is_(getattr(c, 'tail', b''), b'', 'nothing after the 421')

    ok(up.wait_messages(relayed, 10), 'upstream got %d messages' % relayed)
    check_stream(up, relayed, 'upstream')
    ms = up.messages
    if len(ms) == relayed:
        check_relayed(ms[0].data, fits, '0.8 x limit message')
        is_(len(ms[1].rcpts), 100, '100 recipients relayed')
        check_relayed(ms[2].data, line998, '1000-octet line message')
        is_(ms[3].mail_from, ok256, '256-octet reverse path relayed intact')
    ok(mx.alive(), 'daemon alive')
    mx.finish()


run(main)
