#!/usr/bin/python3
# Never advertise a capability the proxy cannot honour; relay MAIL with only
# the parameters the upstream advertised (DESIGN "One message, end to end").
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: caps\r\n\r\nbody\r\n'


def ehlo_keywords(mx):
    c = SmtpClient(mx.port)
    c.greeting()
    e = c.ehlo()
    c.quit()
    return [l.split(' ')[0].upper() for l in e.lines[1:]], e


def main():
    # an upstream that offers everything
    rich = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'CHUNKING',
            'BINARYMIME', 'AUTH PLAIN LOGIN', 'AUTH=PLAIN LOGIN', 'STARTTLS', 'SMTPUTF8', 'DSN',
            'XCLIENT NAME ADDR PORT PROTO HELO LOGIN', 'XFORWARD NAME ADDR PORT PROTO HELO',
            'ETRN', 'VRFY', 'DELIVERBY', 'X-EXPS GSSAPI']
    up = Upstream(ehlo_caps=rich)
    mx = Frontmx(up, name='rich upstream')
    kw, e = ehlo_keywords(mx)
    reply_is(e, 250, None, 'EHLO')
    for k in ('BINARYMIME', 'AUTH', 'AUTH=PLAIN', 'STARTTLS', 'XCLIENT', 'XFORWARD',
              'ETRN', 'DELIVERBY', 'X-EXPS'):
        ok(k not in kw, 'upstream %s not passed through to the client' % k)
    ok('CHUNKING' in kw, 'CHUNKING advertised: the proxy implements BDAT itself')
    ok('8BITMIME' in kw, '8BITMIME advertised (upstream has it)')
    diag('advertised to the client: %s' % ' '.join(kw))
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    # BDAT without MAIL: the 6 octets ("QUIT\r\n") are consumed as the
    # chunk (RFC 3030), never run as a command, then 503.
    c.send(b'BDAT 6 LAST\r\nQUIT\r\n')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT without MAIL: chunk consumed, 503')
    reply_is(c.cmd('NOOP'), 250, None, 'in step after BDAT: the chunk was not read as a command')
    reply_is(c.cmd('MAIL FROM:<alice@example.org> AUTH=<>'), 555, '5.5.4',
             'AUTH= parameter refused (AUTH not advertised)')
    c.quit()
    mx.finish()

    # a minimal upstream: no SIZE, no 8BITMIME
    up = Upstream(ehlo_caps=['PIPELINING', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx(up, name='minimal upstream')
    kw, e = ehlo_keywords(mx)
    ok('8BITMIME' not in kw, '8BITMIME not advertised when the upstream lacks it (%s)' % kw)
    ok('SIZE' in kw, 'SIZE still advertised (the proxy enforces it itself)')
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY, params=' SIZE=%d' % len(BODY))
    reply_is(res['mail'], 250, None, 'MAIL with SIZE= accepted by the proxy')
    reply_is(res['dot'], 250, None, 'message relayed')
    r = c.cmd('MAIL FROM:<alice@example.org> BODY=8BITMIME')
    ok(r.code in (250, 555, 501, 504),
       'BODY=8BITMIME to a 7-bit upstream: refused, or accepted and not passed on (%r)' % (r,))
    c.cmd('RSET')
    c.quit()
    ok(up.wait_messages(1, 10), 'upstream got the message')
    check_stream(up, 1, 'minimal upstream')
    if up.messages:
        unlike(up.messages[0].mail_cmd, r'(?i)SIZE=', 'SIZE= not sent to an upstream without SIZE')
    unlike(up.all_bytes(), rb'(?i)BODY=8BITMIME', 'BODY=8BITMIME never sent to a 7-bit upstream')
    mx.finish()


run(main)
