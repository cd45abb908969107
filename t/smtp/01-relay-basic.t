#!/usr/bin/python3
# Byte-for-byte relay to a capture upstream: several messages and an RSET in
# one session; the upstream sees exactly the transactions the client got 250
# for, each as one Received: field + the original bytes.
import os
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403


def msg(n, extra=b''):
    return (b'From: Alice <alice@example.org>\r\n'
            b'To: bob@example.com\r\n'
            b'Subject: message %d\r\n'
            b'Message-ID: <m%d@example.org>\r\n'
            b'\r\n'
            b'Hello Bob,\r\n'
            b'\tindented line\r\n'
            b'trailing spaces   \r\n'
            b'\r\n' % (n, n) + extra + b'-- \r\nAlice\r\n')


def main():
    up = Upstream()
    mx = Frontmx(up)

    c = SmtpClient(mx.port)
    g = c.greeting()
    reply_is(g, 220, None, 'greeting is 220')
    like(g.lines[0] if g.lines else '', r'^mx\.test\.example ESMTP frontmx', 'greeting text')

    e = c.ehlo('client.example')
    reply_is(e, 250, None, 'EHLO 250')
    is_(e.lines[0].split(' ')[0] if e.lines else None, 'mx.test.example', 'EHLO first line is our hostname')
    kw = [x.upper() for x in e.lines[1:]]
    ok('PIPELINING' in kw, 'EHLO advertises PIPELINING')
    ok('SIZE 1048576' in kw, 'EHLO advertises SIZE = limits.message_size')
    ok('ENHANCEDSTATUSCODES' in kw, 'EHLO advertises ENHANCEDSTATUSCODES')
    ok('8BITMIME' in kw, 'EHLO advertises 8BITMIME (upstream has it)')
    # CHUNKING is the proxy's own (RFC 3030, converted to DATA upstream);
    # STARTTLS/AUTH only on listeners configured for them.
    ok('CHUNKING' in kw, 'EHLO advertises CHUNKING (implemented by the proxy)')
    for bad in ('XCLIENT', 'XFORWARD', 'AUTH', 'STARTTLS', 'BDAT'):
        ok(not any(k.split(' ')[0] == bad for k in kw), 'EHLO does not advertise %s' % bad)

    sent = []          # (sender, rcpts, original bytes) the client got 250 for

    # 1: simple message
    body = msg(1)
    r = c.transaction('alice@example.org', ['bob@example.com'], body)
    reply_is(r['mail'], 250, '2.1.0', 'msg 1: MAIL 250 2.1.0 (upstream code)')
    reply_is(r['rcpt'][0], 250, '2.1.5', 'msg 1: RCPT 250 2.1.5')
    reply_is(r['data'], 354, None, 'msg 1: DATA 354')
    reply_is(r['dot'], 250, '2.0.0', 'msg 1: final 250 2.0.0')
    sent.append(('alice@example.org', ['bob@example.com'], body))

    # 2: two recipients, SIZE= parameter
    body = msg(2)
    r = c.transaction('alice@example.org', ['bob@example.com', 'carol@example.com'], body,
                      params=' SIZE=%d' % len(body))
    reply_is(r['mail'], 250, None, 'msg 2: MAIL with SIZE= 250')
    ok(all(x.code == 250 for x in r['rcpt']), 'msg 2: both RCPT 250')
    reply_is(r['dot'], 250, None, 'msg 2: final 250')
    sent.append(('alice@example.org', ['bob@example.com', 'carol@example.com'], body))

    # RSET in the middle of a transaction: nothing of it reaches DATA upstream
    reply_is(c.cmd('MAIL FROM:<ghost@example.org>'), 250, None, 'MAIL before RSET')
    reply_is(c.cmd('RCPT TO:<ghost@example.com>'), 250, None, 'RCPT before RSET')
    reply_is(c.cmd('RSET'), 250, '2.0.0', 'RSET 250 2.0.0')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'RCPT after RSET needs MAIL')
    reply_is(c.cmd('NOOP'), 250, '2.0.0', 'NOOP 250 2.0.0')

    # 3: null sender, 8-bit body with BODY=8BITMIME, a long (998 octet) line
    body = msg(3, b'caf\xc3\xa9 \xff\xfe bytes\r\n' + b'L' * 998 + b'\r\n')
    r = c.transaction('', ['bob@example.com'], body, params=' BODY=8BITMIME')
    reply_is(r['mail'], 250, None, 'msg 3: MAIL FROM:<> BODY=8BITMIME 250')
    reply_is(r['dot'], 250, None, 'msg 3: final 250')
    sent.append(('', ['bob@example.com'], body))

    # 4: message without a trailing empty line / minimal
    body = b'Subject: tiny\r\n\r\nx\r\n'
    r = c.transaction('alice@example.org', ['dave@example.com'], body)
    reply_is(r['dot'], 250, None, 'msg 4: final 250')
    sent.append(('alice@example.org', ['dave@example.com'], body))

    q = c.cmd('QUIT')
    reply_is(q, 221, '2.0.0', 'QUIT 221 2.0.0')
    ok(c.expect_close(5), 'connection closed after QUIT')

    ok(up.wait_messages(len(sent), 10), 'upstream got %d messages' % len(sent))
    check_stream(up, len(sent), 'upstream')
    msgs = up.messages
    for i, (sender, rcpts, body) in enumerate(sent):
        if i >= len(msgs):
            ok(False, 'msg %d relayed' % (i + 1))
            continue
        m = msgs[i]
        is_(m.mail_from, sender, 'msg %d: envelope sender relayed' % (i + 1))
        is_(m.rcpts, rcpts, 'msg %d: envelope recipients relayed' % (i + 1))
        is_(m.reply[:3] if m.reply else None, '250', 'msg %d: upstream said 250' % (i + 1))
        check_relayed(m.data, body, 'msg %d' % (i + 1), helo='client.example')
    if len(msgs) >= 3:
        like(msgs[2].mail_cmd, r'(?i)BODY=8BITMIME', 'BODY=8BITMIME passed to an 8BITMIME upstream')
    if len(msgs) >= 2:
        like(msgs[1].mail_cmd, r'(?i)SIZE=\d+', 'SIZE= passed to a SIZE upstream')
    unlike(up.all_bytes(), rb'ghost@example\.com>\r\nDATA', 'RSET transaction never reached DATA')
    is_(sum(1 for m in msgs if m.mail_from == 'ghost@example.org'), 0,
        'RSET transaction not relayed')

    # HELO (not EHLO) session
    c = SmtpClient(mx.port)
    c.greeting()
    h = c.cmd('HELO old.example')
    reply_is(h, 250, None, 'HELO 250')
    is_(len(h.lines), 1, 'HELO reply is one line')
    body = b'Subject: helo\r\n\r\nvia HELO\r\n'
    r = c.transaction('alice@example.org', ['bob@example.com'], body)
    reply_is(r['dot'], 250, None, 'HELO session: message accepted')
    c.quit()
    if up.wait_messages(len(sent) + 1, 10):
        m = up.messages[len(sent)]
        check_relayed(m.data, body, 'HELO session', helo='old.example')
        like(split_received(m.data)[0] or b'', rb'with SMTP', 'Received says "with SMTP" after HELO')
    else:
        ok(False, 'HELO session message relayed')
    sent.append(None)

    # a real client: swaks with pipelining
    p = subprocess.run(['swaks', '--server', '127.0.0.1:%d' % mx.port, '--from', 'swaks@example.org',
                        '--to', 'bob@example.com', '--body', 'swaks body line', '--pipeline',
                        '--helo', 'swaks.example', '--timeout', '10'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    is_(p.returncode, 0, 'swaks --pipeline through the proxy succeeds')
    if p.returncode:
        diag(p.stdout.decode(errors='replace')[-3000:])
    ok(up.wait_messages(len(sent) + 1, 10), 'swaks message relayed')
    if len(up.messages) > len(sent):
        m = up.messages[len(sent)]
        is_(m.mail_from, 'swaks@example.org', 'swaks envelope sender')
        like(m.data, rb'\r\n\r\nswaks body line\r\n', 'swaks body relayed')
    check_stream(up, len(sent) + 1, 'upstream after all sessions')

    ok(mx.alive(), 'daemon still running')
    mx.finish()


run(main)
