#!/usr/bin/python3
# A filter that adds or removes a recipient makes frontmx send the
# envelope again (RSET, MAIL, every final RCPT) before DATA.  The re-sent
# envelope keeps the transaction's ESMTP parameters exactly as the
# original went upstream: MAIL's SIZE, BODY, SMTPUTF8 (RFC 6531), RET and
# ENVID (RFC 3461), and each client recipient's own NOTIFY and ORCPT.  A
# recipient the filter added gets no DSN parameters (the api gives it
# none).  Module: t/plugins/rcpt_edit.c.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'SMTPUTF8', 'DSN', 'ENHANCEDSTATUSCODES']
BODY = b'From: alice@example.org\r\nSubject: envelope\r\n\r\nbody\r\n'


def edit(**opts):
    return {'filters': [{'name': 'rcpt_edit', 'module': plugin('rcpt_edit'),
                         'options': opts}]}


def last_envelope(m):
    return m.mail_cmd, list(m.rcpt_cmds)


def main():
    require_modules(plugin('rcpt_edit'))

    # DSN parameters on MAIL and RCPT, a recipient added
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, name='frontmx (added recipient, DSN)', conf=edit(add='carol@example.com'))
    c = SmtpClient(mx.port)
    c.start()
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME RET=HDRS '
                   'ENVID=QQ314159'), 250, None, 'DSN: MAIL 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE '
                   'ORCPT=rfc822;bob@example.com'), 250, None, 'DSN: RCPT 250')
    r = c.data(BODY)[1]
    reply_is(r, 250, None, 'DSN: message relayed')
    c.quit()
    ok(up.wait_messages(1, 10), 'DSN: upstream got it')
    if up.messages:
        mail, rcpts = last_envelope(up.messages[0])
        is_(mail, 'MAIL FROM:<alice@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ314159',
            'DSN: the re-sent MAIL keeps SIZE, BODY, RET and ENVID')
        is_(rcpts, ['RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com',
                    'RCPT TO:<carol@example.com>'],
            'DSN: the client\'s recipient keeps NOTIFY and ORCPT, the added one has none')
    ok(any(x.upper() == 'RSET' for x in up.commands()), 'DSN: the envelope was sent again after RSET')
    check_stream(up, 1, 'DSN upstream')
    mx.finish()

    # SMTPUTF8: a UTF-8 sender must not go out without SMTPUTF8
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, name='frontmx (added recipient, SMTPUTF8)', conf=edit(add='carol@example.com'))
    c = SmtpClient(mx.port)
    c.start()
    sender = 'jöran@example.org'
    reply_is(c.cmd(('MAIL FROM:<%s> SMTPUTF8' % sender).encode()), 250, None, 'UTF8: MAIL 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'UTF8: RCPT 250')
    reply_is(c.data(BODY)[1], 250, None, 'UTF8: message relayed')
    c.quit()
    ok(up.wait_messages(1, 10), 'UTF8: upstream got it')
    if up.messages:
        mail, rcpts = last_envelope(up.messages[0])
        # the capture upstream keeps command lines as latin-1 text
        is_(mail, ('MAIL FROM:<%s> SMTPUTF8' % sender).encode().decode('latin-1'),
            'UTF8: the re-sent MAIL keeps SMTPUTF8')
        is_(rcpts, ['RCPT TO:<bob@example.com>', 'RCPT TO:<carol@example.com>'],
            'UTF8: both recipients sent')
    mx.finish()

    # A recipient removed and one added: each remaining one keeps its own
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, name='frontmx (removed and added)',
                 conf=edit(del1='bob@example.com', add='carol@example.com'))
    c = SmtpClient(mx.port)
    c.start()
    reply_is(c.cmd('MAIL FROM:<alice@example.org> RET=FULL'), 250, None, 'swap: MAIL 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com> NOTIFY=NEVER'), 250, None, 'swap: RCPT bob')
    reply_is(c.cmd('RCPT TO:<dave@example.com> NOTIFY=DELAY'), 250, None, 'swap: RCPT dave')
    reply_is(c.cmd('RCPT TO:<erin@example.com> ORCPT=rfc822;erin+2B@example.com'), 250, None,
             'swap: RCPT erin')
    reply_is(c.data(BODY)[1], 250, None, 'swap: message relayed')
    c.quit()
    ok(up.wait_messages(1, 10), 'swap: upstream got it')
    if up.messages:
        mail, rcpts = last_envelope(up.messages[0])
        is_(mail, 'MAIL FROM:<alice@example.org> RET=FULL', 'swap: MAIL keeps RET')
        is_(sorted(rcpts), sorted(['RCPT TO:<dave@example.com> NOTIFY=DELAY',
                                   'RCPT TO:<erin@example.com> ORCPT=rfc822;erin+2B@example.com',
                                   'RCPT TO:<carol@example.com>']),
            'swap: bob removed, dave and erin keep their own parameters, carol has none')
    mx.finish()


run(main, timeout=120)
