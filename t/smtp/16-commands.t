#!/usr/bin/python3
# The command reply table: sequencing, syntax, unsupported extensions.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403


def main():
    up = Upstream()
    mx = Frontmx(up)

    # -- sequencing
    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 503, '5.5.1', 'MAIL before HELO: 503 5.5.1')
    reply_is(c.cmd('HELO'), 501, '5.5.4', 'HELO without argument: 501 5.5.4')
    reply_is(c.cmd('EHLO bad_name!'), 501, '5.5.4', 'EHLO with a bad name: 501 5.5.4')
    reply_is(c.cmd('EHLO'), 501, '5.5.4', 'EHLO without argument: 501 5.5.4')
    reply_is(c.ehlo('client.example'), 250, None, 'EHLO')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'RCPT before MAIL: 503 5.5.1')
    reply_is(c.cmd('DATA'), 503, '5.5.1', 'DATA before MAIL: 503 5.5.1')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 503, '5.5.1', 'nested MAIL: 503 5.5.1')
    reply_is(c.cmd('DATA'), 503, '5.5.1', 'DATA before RCPT: 503 5.5.1')
    reply_is(c.ehlo('client.example'), 250, None, 'EHLO again')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'EHLO reset the transaction')
    reply_is(c.cmd('NOOP'), 250, '2.0.0', 'NOOP 250 2.0.0')
    reply_is(c.cmd('NOOP some text'), 250, '2.0.0', 'NOOP with an argument 250 2.0.0')
    reply_is(c.cmd('RSET'), 250, '2.0.0', 'RSET 250 2.0.0')
    reply_is(c.cmd('VRFY bob'), 252, '2.0.0', 'VRFY 252 2.0.0')
    reply_is(c.cmd('HELP'), 214, None, 'HELP 214')
    reply_is(c.cmd('noop'), 250, None, 'verbs are case-insensitive')
    reply_is(c.cmd('QUIT'), 221, '2.0.0', 'QUIT 221 2.0.0')
    ok(c.expect_close(5), 'closed after QUIT')

    # -- unsupported and unknown commands
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    for cmd in ('EXPN staff', 'STARTTLS', 'AUTH PLAIN AGFsaWNlAHNlY3JldA==',
                'XCLIENT ADDR=192.0.2.1', 'XFORWARD ADDR=192.0.2.1'):
        reply_is(c.cmd(cmd), 502, '5.5.1', '%s: 502 5.5.1' % cmd.split(' ')[0])
    # BDAT is implemented: without MAIL the (empty) chunk is consumed, then 503.
    reply_is(c.cmd('BDAT 0 LAST'), 503, '5.5.1', 'BDAT without MAIL: 503 5.5.1')
    reply_is(c.cmd('XYZZY'), 500, '5.5.2', 'unknown command: 500 5.5.2 (RFC 5321 4.2.4)')
    reply_is(c.cmd('NOOP'), 250, None, 'in step')
    c.quit()

    # -- address syntax and parameters
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    for a in ('alice@example.org', '<alice@>', '<@example.org>', '<a b@example.org>',
              '<alice@example..org>', '<alice@-example.org>', '<alice@example.org'):
        reply_is(c.cmd('MAIL FROM:' + a), 501, '5.1.7', 'MAIL FROM:%s: 501 5.1.7' % a)
    reply_is(c.cmd('MAIL FROM:<alice@example.org> FOO=BAR'), 555, '5.5.4', 'unknown MAIL parameter: 555 5.5.4')
    r = c.cmd(b'MAIL FROM:<j\xc3\xb6s\xc3\xa9@example.org>')
    ok(r.code is not None and 500 <= r.code < 600 and r.enh == '5.6.7',
       '8-bit sender without SMTPUTF8: 5xx 5.6.7 (%r)' % (r,))
    reply_is(c.cmd('mail from: <alice@example.org>'), 250, None, 'lower case, space after colon: 250')
    for a in ('bob@example.com', '<bob@>', '<>', '<b b@example.com>', '<bob@example.com'):
        reply_is(c.cmd('RCPT TO:' + a), 501, '5.1.3', 'RCPT TO:%s: 501 5.1.3' % a)
    reply_is(c.cmd('RCPT TO:<bob@example.com> FOO=1'), 555, '5.5.4', 'unknown RCPT parameter: 555 5.5.4')
    reply_is(c.cmd('RCPT TO:<Postmaster>'), 250, None, 'RCPT TO:<Postmaster> (RFC 5321 4.5.1): 250')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    reply_is(c.cmd('MAIL FROM:<>'), 250, None, 'null sender: 250')
    c.quit()

    allb = up.all_bytes()
    ok(b'FOO=' not in allb, 'refused parameters never reached the upstream')
    ok(b'192.0.2.1' not in allb and b'AUTH' not in allb and b'EXPN' not in allb,
       'refused commands never reached the upstream')
    check_stream(up, 0, 'upstream')
    mx.finish()


run(main)
