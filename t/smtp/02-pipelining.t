#!/usr/bin/python3
# RFC 2920 pipelining: whole command groups in one write, replies in order,
# group-ending commands honoured, message + QUIT pipelined.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403


def replies(c, n):
    return [c.reply() for _ in range(n)]


def codes(rs):
    return [r.code for r in rs]


def main():
    up = Upstream(on_rcpt=lambda arg, conn: '550 5.1.1 no such user' if 'nobody@' in arg else None)
    mx = Frontmx(up)
    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.ehlo(), 250, None, 'EHLO')

    # 1. MAIL/RCPT/RCPT/DATA in one send
    body1 = b'Subject: pipelined 1\r\n\r\nbody one\r\n'
    c.send(b'MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n'
           b'RCPT TO:<carol@example.com>\r\nDATA\r\n')
    rs = replies(c, 4)
    is_(codes(rs), [250, 250, 250, 354], 'group MAIL RCPT RCPT DATA: replies in order')
    # 2. message, final dot and the next whole group in one send (DATA last)
    body2 = b'Subject: pipelined 2\r\n\r\nbody two\r\n'
    c.send(body1 + b'.\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<dave@example.com>\r\nDATA\r\n')
    rs = replies(c, 4)
    is_(codes(rs), [250, 250, 250, 354], 'dot + next group: 250 250 250 354')
    # 3. a failing RCPT in the middle of a group
    c.send(body2 + b'.\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\n'
           b'RCPT TO:<nobody@example.com>\r\nRCPT TO:<erin@example.com>\r\nDATA\r\n')
    rs = replies(c, 6)
    is_(codes(rs), [250, 250, 250, 550, 250, 354], 'group with a rejected RCPT: replies in order')
    if len(rs) == 6 and rs[3].code == 550:
        is_(rs[3].enh, '5.1.1', 'rejected RCPT keeps the upstream enhanced code')
    body3 = b'Subject: pipelined 3\r\n\r\nbody three\r\n.leading dot\r\n'
    # 4. message + QUIT in one send
    c.send(dot_stuff(body3) + b'.\r\nQUIT\r\n')
    rs = replies(c, 2)
    is_(codes(rs), [250, 221], 'message + QUIT pipelined: 250 then 221')
    ok(c.expect_close(5), 'closed after pipelined QUIT')

    # 5. RSET inside a group; a group where every RCPT fails, then DATA
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.send(b'MAIL FROM:<x@example.org>\r\nRCPT TO:<bob@example.com>\r\nRSET\r\n'
           b'MAIL FROM:<alice@example.org>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n')
    rs = replies(c, 6)
    is_(codes(rs)[:5], [250, 250, 250, 250, 550], 'MAIL RCPT RSET MAIL RCPT(bad): in order')
    ok(len(rs) == 6 and rs[5].code in (503, 554) and rs[5].enh == '5.5.1',
       'DATA with no accepted recipient: 503/554 5.5.1 (got %r)' % (rs[5] if len(rs) == 6 else None))
    reply_is(c.cmd('RSET'), 250, None, 'RSET after failed DATA')
    # 6. several NOOPs and a RSET pipelined (NOOP must be last, but a server
    #    must still answer every command in order)
    c.send(b'NOOP\r\nNOOP\r\nRSET\r\nNOOP\r\n')
    is_(codes(replies(c, 4)), [250, 250, 250, 250], 'NOOP NOOP RSET NOOP: four replies')
    # 7. two complete transactions, each in a single write after 354
    c.send(b'MAIL FROM:<alice@example.org>\r\nRCPT TO:<frank@example.com>\r\nDATA\r\n')
    is_(codes(replies(c, 3)), [250, 250, 354], 'third group')
    body4 = b'Subject: pipelined 4\r\n\r\n' + b'line\r\n' * 2000
    c.send(body4 + b'.\r\nRSET\r\nQUIT\r\n')
    is_(codes(replies(c, 3)), [250, 250, 221], 'big body + RSET + QUIT')
    c.expect_close(5)

    ok(up.wait_messages(4, 10), 'upstream got 4 messages')
    check_stream(up, 4, 'upstream')
    ms = up.messages
    if len(ms) == 4:
        is_(ms[0].rcpts, ['bob@example.com', 'carol@example.com'], 'msg 1 recipients')
        check_relayed(ms[0].data, body1, 'msg 1')
        is_(ms[1].rcpts, ['dave@example.com'], 'msg 2 recipients')
        check_relayed(ms[1].data, body2, 'msg 2')
        is_(ms[2].rcpts, ['bob@example.com', 'erin@example.com'], 'msg 3 recipients (rejected one absent)')
        check_relayed(ms[2].data, body3, 'msg 3')
        is_(ms[3].rcpts, ['frank@example.com'], 'msg 4 recipients')
        check_relayed(ms[3].data, body4, 'msg 4')
    ok(not any(m.mail_from == 'x@example.org' for m in ms), 'RSET transaction not relayed')
    mx.finish()


run(main)
