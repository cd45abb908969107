#!/usr/bin/python3
# One "disconnect from NAME[ADDR]" line per session with the command
# counts as Postfix's smtpd writes them (issue 12 section 4):
#   disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6
# each command used with its successes, "/total" when some failed, in
# Postfix's order, and commands=ok[/total] last; however the session
# ends (QUIT, the client vanishing, a command cut short, a refusal at
# connect, too many errors), exactly one such line.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402
from fmx_tls import TlsClient, make_cert, proxy_v1  # noqa: E402
from fakedns import FakeDNS  # noqa: E402

BODY = b'From: a@example.org\r\nTo: bob@example.com\r\nSubject: log\r\n\r\nhi\r\n'


def sid_of(mx, port):
    """The session id of the client whose source port is port."""
    m = re.search(r' (\w{16}) smtp connect client=\S+ port=%d\b' % port, mx.log())
    return m.group(1) if m else None


def disconnect_lines(mx, sid):
    return re.findall(r'^.* %s smtp disconnect .*$' % sid, mx.log(), re.M)


def client(mx):
    c = mx.client()
    c.lport = c.local_port()    # the log names the session by it
    return c


def check(mx, c, want, name):
    """The session of client c ends with exactly the line want."""
    sid = sid_of(mx, c.lport)
    ok(sid is not None, '%s: session id found' % name)
    if sid is None:
        return
    ok(wait_for(lambda: disconnect_lines(mx, sid), 10), '%s: disconnect logged' % name)
    lines = disconnect_lines(mx, sid)
    is_(len(lines), 1, '%s: exactly one disconnect line' % name)
    if lines:
        got = lines[0].split(' smtp ', 1)[1]
        is_(got, want, '%s: %s' % (name, want))


def main():
    up = Upstream(on_rcpt=lambda arg, conn: '550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown'
                  if 'nobody@' in arg else None)
    mx = Frontmx(up, conf={'limits': {'errors': 3}, 'relay': {'networks': ['192.0.2.0/24']}})

    # 1. The issue's example: ehlo mail rcpt rcpt data quit, all accepted.
    c = client(mx)
    c.start()
    r = c.transaction('a@example.org', ['bob@example.com', 'carol@example.com'], BODY)
    reply_is(r['dot'], 250, None, 'plain: relayed')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 commands=6',
          'plain')

    # 2. A refused recipient (the upstream's 550) and one outside relay.domains.
    c = client(mx)
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'failed: MAIL')
    reply_is(c.cmd('RCPT TO:<nobody@example.com>'), 550, None, 'failed: upstream refuses the RCPT')
    reply_is(c.cmd('RCPT TO:<x@elsewhere.example>'), 554, None, 'failed: relay refused')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'failed: good RCPT')
    reply_is(c.data(BODY)[1], 250, None, 'failed: DATA relayed')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1/3 data=1 quit=1 commands=5/7',
          'failed rcpts')

    # 3. Unknown and not-implemented commands, NOOP, RSET, HELO, VRFY, HELP.
    c = client(mx)
    reply_is(c.greeting(), 220, None, 'misc: greeting')
    reply_is(c.cmd('HELO client.example'), 250, None, 'misc: HELO')
    reply_is(c.cmd('NOOP'), 250, None, 'misc: NOOP')
    reply_is(c.cmd('FOO bar'), 500, None, 'misc: unknown command')
    reply_is(c.cmd('VRFY bob'), 252, None, 'misc: VRFY')
    reply_is(c.cmd('RSET'), 250, None, 'misc: RSET')
    reply_is(c.cmd('EXPN list'), 502, None, 'misc: EXPN')
    reply_is(c.cmd('HELP'), 214, None, 'misc: HELP')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] helo=1 rset=1 noop=1 vrfy=1 expn=0/1 '
          'help=1 quit=1 unknown=0/1 commands=6/8', 'misc')

    # 4. The client vanishes after MAIL: no quit, no failure.
    c = client(mx)
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'vanish: MAIL')
    c.close()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 mail=1 commands=2', 'vanish')

    # 5. The client goes away in the middle of the message: DATA failed.
    c = client(mx)
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 250, None, 'mid-data: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'mid-data: RCPT')
    reply_is(c.cmd('DATA'), 354, None, 'mid-data: 354')
    c.send(b'Subject: half\r\n\r\nhalf a message\r\n')
    c.close()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4',
          'mid-data')

    # 6. Pipelined: the counts follow the replies, in order.
    c = client(mx)
    c.start()
    c.send(b'MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\n'
           b'RCPT TO:<x@elsewhere.example>\r\nDATA\r\n')
    codes = [c.reply().code for _ in range(4)]
    is_(codes, [250, 250, 554, 354], 'pipelined: replies')
    reply_is(c.cmd(BODY.decode() + '.'), 250, None, 'pipelined: relayed')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 commands=5/6',
          'pipelined')

    # 7. Too many errors (limits.errors = 3): the 421 ends it, counted once.
    c = client(mx)
    c.start()
    for i in range(3):
        c.cmd('BOGUS%d' % i)
    ok(c.expect_close(), 'errors: closed after the third error')
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 unknown=0/3 commands=1/4', 'errors')
    like(mx.log(), r'smtp closing reason=too-many-errors client=127\.0\.0\.1', 'errors: the reason logged')

    # 8. A line that is no command (bare LF) counts as unknown.
    c = client(mx)
    c.start()
    c.send(b'NOOP\nNOOP\r\n')
    r = c.reply()
    is_(r.code, 500, 'bare LF: 500')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=1 quit=1 unknown=0/1 commands=2/3', 'bare LF')

    # 9. Every session got one line: the port probe and each client.
    sessions = re.findall(r' (\w{16}) smtp connect client=', mx.log())
    lines = re.findall(r' (\w{16}) smtp disconnect from ', mx.log())
    ok(sorted(sessions) == sorted(lines),
       'one disconnect line per session (%d sessions, %d lines)' % (len(sessions), len(lines)))
    mx.finish()

    # 10. STARTTLS, as Postfix logs it: ehlo=2 starttls=1 ...
    d = tmpdir('fmx-92-tls-')
    certs = make_cert(d, 'mx.test.example')
    mx = Frontmx(up, start=False, name='frontmx (starttls)')
    mx.write_conf(conf={'listen': [{'address': '127.0.0.1:%d' % mx.port, 'tls': 'starttls',
                                    'cert': certs.cert, 'key': certs.key}]})
    mx.start()
    c = TlsClient(mx.port)
    c.lport = c.local_port()
    reply_is(c.greeting(), 220, None, 'tls: greeting')
    c.ehlo('client.example')
    r, err = c.starttls()
    ok(err is None, 'tls: STARTTLS and handshake (%s)' % (err,))
    c.ehlo('client.example')
    r = c.transaction('a@example.org', ['bob@example.com'], BODY)
    reply_is(r['dot'], 250, None, 'tls: relayed')
    c.quit()
    check(mx, c, 'disconnect from localhost[127.0.0.1] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 '
          'commands=7', 'starttls')
    mx.finish()

    # 11. A client refused at connect (dnsbl), named by its PROXY address.
    dns = FakeDNS({'10.2.0.192.bl.example.net': [('A', '127.0.0.2')]}).start()
    fmx.register_cleanup(dns.stop)
    mx = Frontmx(up, start=False, name='frontmx (dnsbl)')
    mx.write_conf(conf={
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
        'dns': {'forward': [dns.address]},
        'filters': [{'name': 'dnsbl', 'options': {'zones': ['bl.example.net']}}],
    })
    mx.start()
    c = client(mx)
    c.send(proxy_v1('TCP4', '192.0.2.10', '192.0.2.1', 40000, 25))
    reply_is(c.greeting(timeout=15), 554, '5.7.1', 'connect refusal: 554')
    ok(c.expect_close(), 'connect refusal: closed')
    check(mx, c, 'disconnect from unknown[192.0.2.10] commands=0', 'connect refusal')
    like(mx.log(), r'smtp refused=connection client=192\.0\.2\.10 filter=dnsbl verdict=reject '
         r'reply="554 5\.7\.1 Service unavailable; client \[192\.0\.2\.10\] blocked using bl\.example\.net"',
         'connect refusal: the reply the client got is logged')
    mx.finish()


run(main, timeout=120)
