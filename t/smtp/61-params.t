#!/usr/bin/python3
# ESMTP parameters given twice, and malformed NOTIFY lists, are refused
# with 501 5.5.4 and never reach the upstream (issue 8 item 12): RFC 5321
# 4.1.2 allows each esmtp-keyword once per command, RFC 3461 4.1 makes
# NOTIFY a comma-separated list of known keywords, none empty.  The same
# commands written correctly still pass, so the refusals are not blanket.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8', 'DSN']
BODY = b'From: a@example.org\r\nSubject: params\r\n\r\nbody\r\n'

BAD_MAIL = [
    'BODY=7BIT BODY=8BITMIME',
    'BODY=8BITMIME BODY=8BITMIME',
    'ENVID=one ENVID=two',
    'SIZE=10 size=20',
    'RET=FULL RET=HDRS',
    'RET=HDRS SIZE=1 ENVID=x ret=HDRS',
    'SMTPUTF8 SMTPUTF8',
]
BAD_RCPT = [
    'NOTIFY=SUCCESS,,FAILURE',
    'NOTIFY=SUCCESS,',
    'NOTIFY=,FAILURE',
    'NOTIFY=NEVER,SUCCESS',
    'NOTIFY=SUCCESS,SUCCESS',
    'NOTIFY=SUCCESS NOTIFY=FAILURE',
    'NOTIFY=NEVER notify=NEVER',
    'ORCPT=rfc822;bob@example.com ORCPT=rfc822;eve@example.com',
]


def main():
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, name='frontmx (duplicate parameters)')
    c = mx.client()
    reply_is(c.start(), 250, None, 'EHLO')
    for p in BAD_MAIL:
        reply_is(c.cmd('MAIL FROM:<dup@example.org> ' + p), 501, '5.5.4', 'MAIL %s refused' % p)
        c.cmd('RSET')       # so that one wrong answer does not hide the next
    reply_is(c.cmd('MAIL FROM:<dup@example.org> BODY=8BITMIME ENVID=one RET=HDRS SIZE=10'), 250, None,
             'MAIL with each parameter once accepted')
    for p in BAD_RCPT:
        reply_is(c.cmd('RCPT TO:<bob@example.com> ' + p), 501, '5.5.4', 'RCPT %s refused' % p)
    reply_is(c.cmd('RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com'),
             250, None, 'RCPT with each parameter once accepted')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'message relayed')
    c.quit()
    ok(up.wait_messages(1, 10), 'upstream got the message')
    cmds = [x for x in up.commands() if x.upper().startswith(('MAIL', 'RCPT'))]
    is_(cmds, ['MAIL FROM:<dup@example.org> BODY=8BITMIME ENVID=one RET=HDRS SIZE=10',
               'RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com'],
        'the upstream saw only the well-formed MAIL and RCPT')
    mx.finish()


run(main, timeout=60)
