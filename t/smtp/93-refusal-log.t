#!/usr/bin/python3
# What a Postfix admin greps for when mail is refused (issue 12 section
# 4): an upstream's refusal of a RCPT is logged with the upstream's reply;
# a message or command a filter refuses is logged with the SMTP reply the
# client got, not the filter's name alone; limit refusals name the client
# address.  Each line is checked exactly (after the session id).
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import proxy_v1  # noqa: E402

BODY = b'From: a@example.org\r\nTo: bob@example.com\r\nSubject: %s\r\n\r\nhi\r\n'
UNKNOWN = '550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown'


def lines(mx, what):
    """Log lines containing what, without the timestamp, level and id."""
    out = []
    for l in mx.log().splitlines():
        if what in l:
            m = re.match(r'^\S+ \S+ \S+ (?:\w{16} )?(.*)$', l)
            out.append(m.group(1) if m else l)
    return out


def logged(mx, want, name):
    ok(wait_for(lambda: want in lines(mx, want), 10), name)
    if want not in lines(mx, want):
        diag('want: %s' % want)
        diag('log:\n' + '\n'.join(mx.log().splitlines()[-15:]))


def main():
    d = tmpdir('fmx-refuse-')
    rules = os.path.join(d, 'content.rules')
    with open(rules, 'w') as f:
        f.write('header /^Subject: spam/ REJECT 5.7.1 Spam is not welcome here\n'
                'header /^Subject: later/ TEMPFAIL 4.7.1 Try again later\n')
    up = Upstream(on_rcpt=lambda arg, conn: UNKNOWN if 'nobody@' in arg else None,
                  on_mail=lambda arg, conn: '553 5.7.1 <spammer@bad.example>: Sender address rejected'
                  if 'spammer@' in arg else None)
    mx = Frontmx(up, conf={
        'limits': {'recipients': 2, 'message_size': 100000, 'connections_per_ip': 2},
        'filters': [{'name': 'content', 'options': {'rules': rules}}],
    })

    # 1. The upstream refuses a recipient: its reply, in our log.
    c = mx.client()
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'upstream rcpt: MAIL')
    r = c.cmd('RCPT TO:<nobody@example.com>')
    reply_is(r, 550, '5.1.1', 'upstream rcpt: the client gets the 550')
    logged(mx, 'upstream refused rcpt=<nobody@example.com> client=127.0.0.1 reply="%s"' % UNKNOWN,
           'upstream rcpt: logged with the upstream\'s reply')

    # ... and its refusal of a sender.
    r = c.cmd('RSET')
    r = c.cmd('MAIL FROM:<spammer@bad.example>')
    reply_is(r, 553, '5.7.1', 'upstream mail: the client gets the 553')
    logged(mx, 'upstream refused from=<spammer@bad.example> client=127.0.0.1 '
           'reply="553 5.7.1 <spammer@bad.example>: Sender address rejected"',
           'upstream mail: logged with the upstream\'s reply')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'content: MAIL')

    # 2. A message the content filter refuses: the reply the client got.
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'content: RCPT')
    r = c.data(BODY % b'spam offer')[1]
    reply_is(r, 550, '5.7.1', 'content: refused at the end of data')
    is_(r.raw.decode().strip(), '550 5.7.1 Spam is not welcome here', 'content: the reply')
    logged(mx, 'smtp refused=message client=127.0.0.1 filter=content verdict=reject '
           'reply="550 5.7.1 Spam is not welcome here"', 'content: the refusal names the reply')
    ok(re.search(r'message client=127\.0\.0\.1 from=<a@example\.org> rcpts=1 to=<bob@example\.com> '
                 r'size=\d+ result=refused reply="550 5\.7\.1 Spam is not welcome here" duration=',
                 mx.log()), 'content: the message line carries the reply, not the filter name')
    # ... and a tempfail the same way.
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'tempfail: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'tempfail: RCPT')
    r = c.data(BODY % b'later please')[1]
    reply_is(r, 451, '4.7.1', 'tempfail: 451')
    ok(re.search(r'result=refused reply="451 4\.7\.1 Try again later"', mx.log()),
       'tempfail: the message line carries the reply')

    # 3. Limits name the client: recipients, SIZE, concurrent connections.
    reply_is(c.cmd('MAIL FROM:<a@example.org> SIZE=200000'), 552, '5.3.4', 'size: 552')
    logged(mx, 'smtp refused reason=message-size client=127.0.0.1 size=200000 limit=100000',
           'size: logged with the client')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'recipients: MAIL')
    reply_is(c.cmd('RCPT TO:<b1@example.com>'), 250, None, 'recipients: 1')
    reply_is(c.cmd('RCPT TO:<b2@example.com>'), 250, None, 'recipients: 2')
    reply_is(c.cmd('RCPT TO:<b3@example.com>'), 452, '4.5.3', 'recipients: 3 is one too many')
    logged(mx, 'smtp refused reason=recipients client=127.0.0.1 rcpt=<b3@example.com> limit=2',
           'recipients: logged with the client')
    c2 = mx.client()
    reply_is(c2.greeting(), 220, None, 'connections: the second is taken')
    c3 = mx.client()
    r = c3.greeting()
    reply_is(r, 421, '4.7.0', 'connections: the third gets 421')
    logged(mx, 'connection refused reason=limit client=127.0.0.1', 'connections: logged with the client')
    for x in (c, c2, c3):
        x.close()
    ok(wait_for(lambda: len(re.findall(r'smtp disconnect from', mx.log())) ==
                len(re.findall(r'smtp connect client=', mx.log())), 10),
       'connections: every session ended')

    # 4. The relay refusal and the message-size refusal in DATA already
    #    named the client; they still do.
    c = mx.client()
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'big: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'big: RCPT')
    r = c.data(b'Subject: big\r\n\r\n' + b'x' * 998 + b'\r\n' + (b'y' * 998 + b'\r\n') * 110)[1]
    reply_is(r, 552, '5.3.4', 'big: 552')
    ok(re.search(r'message client=127\.0\.0\.1 .* result=refused reply="552 5\.3\.4 Error: message too large"',
                 mx.log()), 'big: logged with the client and the reply')
    c.quit()
    mx.finish()

    # 5. Behind a balancer the per-address limit applies to the address in
    #    the PROXY header, and its refusal names that address.
    mx = Frontmx(up, start=False, name='frontmx (proxy)')
    mx.write_conf(conf={
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
        'limits': {'connections_per_ip': 1},
    })
    mx.start()
    c1 = mx.client()
    c1.send(proxy_v1('TCP4', '198.51.100.7', '192.0.2.1', 40000, 25))
    reply_is(c1.greeting(), 220, None, 'proxy limit: the first session from 198.51.100.7')
    c2 = mx.client()
    c2.send(proxy_v1('TCP4', '198.51.100.7', '192.0.2.1', 40001, 25))
    reply_is(c2.greeting(), 421, '4.7.0', 'proxy limit: the second gets 421')
    ok(re.search(r' \w{16} connection refused reason=limit client=198\.51\.100\.7$', mx.log(), re.M),
       'proxy limit: logged with the address behind the balancer')
    c1.close()
    c2.close()
    mx.finish()


run(main, timeout=90)
