#!/usr/bin/python3
# SIGHUP with a changed `listen` list (issue 8 item 11): every socket keeps
# the settings of the listen entry with its own address, never those of
# whatever entry now sits at the same place in the list.  Reordered,
# removed and added entries; tls = "required" must keep refusing plaintext
# MAIL; a session open across the reload keeps the settings it started
# with; removed addresses stop accepting, added ones start.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403
import fmx  # noqa: E402

BODY = b'From: a@example.org\r\nSubject: listen reload\r\n\r\nbody\r\n'


def plain_mail(port):
    """Reply to a plaintext MAIL on a fresh connection (None if refused)."""
    try:
        c = SmtpClient(port, timeout=10)
    except OSError:
        return None
    try:
        if c.greeting().code != 220:
            return None
        c.ehlo('client.example')
        return c.cmd('MAIL FROM:<a@example.org>').code
    finally:
        c.close()


def tls_mail(port, ctx):
    c = TlsClient(port)
    c.greeting()
    c.ehlo('client.example')
    c.starttls(ctx, 'mx.test.example')
    c.ehlo('client.example')
    r = c.cmd('MAIL FROM:<a@example.org>').code
    c.close()
    return r


def main():
    d = tmpdir('fmx-hup-listen-')
    certs = make_cert(d, 'mx.test.example')
    ctx = client_ctx(certs.cert)
    up = Upstream()
    plain = {}
    req = {'tls': 'required', 'cert': certs.cert, 'key': certs.key}
    mx = frontmx_listeners(up, [plain, req], name='frontmx (listen reload)')
    pa, pb = mx.ports
    pc = free_port()
    addr = {pa: '127.0.0.1:%d' % pa, pb: '127.0.0.1:%d' % pb, pc: '127.0.0.1:%d' % pc}
    n = [0]

    def reload(groups, name):
        conf = re.sub(r'listen = .*?\n(?=upstream = )',
                      'listen = %s;\n' % render_listen(groups), mx.conf, flags=re.S)
        with open(mx.conffile, 'w') as f:
            f.write(conf)
        n[0] += 1
        mx.hup()
        ok(wait_for(lambda: len(re.findall(r'configuration reloaded', mx.log())) >= n[0], 10),
           '%s: reloaded' % name)

    def render_listen(groups):
        return '( %s )' % ', '.join(fmx._cfg_value(dict(address=addr[p], **g), 1) for p, g in groups)

    is_(plain_mail(pa), 250, 'start: plain port takes plaintext MAIL')
    is_(plain_mail(pb), 530, 'start: tls=required port refuses plaintext MAIL (530)')

    # A session opened on the required port before any reload.
    old = TlsClient(pb)
    old.greeting()
    old.ehlo('old.example')

    # -- reorder: required first, plain second
    reload([(pb, req), (pa, plain)], 'reorder')
    is_(plain_mail(pb), 530, 'reorder: required port still refuses plaintext MAIL')
    is_(plain_mail(pa), 250, 'reorder: plain port still takes plaintext MAIL')
    is_(tls_mail(pb, ctx), 250, 'reorder: required port takes MAIL after STARTTLS')

    # -- remove the plain port: the required one must not inherit index 0
    reload([(pb, req)], 'remove')
    is_(plain_mail(pb), 530, 'remove: required port still refuses plaintext MAIL')
    ok(wait_for(lambda: not port_open(pa), 10), 'remove: the removed port stops accepting')

    # -- add a new required port and the plain one back, in a new order
    reload([(pc, req), (pa, plain), (pb, req)], 'add')
    ok(wait_for(lambda: port_open(pc) and port_open(pa), 10), 'add: the new ports accept')
    is_(plain_mail(pc), 530, 'add: new required port refuses plaintext MAIL')
    is_(plain_mail(pa), 250, 'add: re-added plain port takes plaintext MAIL')
    is_(plain_mail(pb), 530, 'add: required port still refuses plaintext MAIL')
    is_(tls_mail(pc, ctx), 250, 'add: new required port takes MAIL after STARTTLS')

    # -- change a port's own settings: new connections get them, the open
    # session keeps what it started with.
    reload([(pc, req), (pa, plain), (pb, plain)], 'relax')
    is_(plain_mail(pb), 250, 'relax: the port now plain takes plaintext MAIL in a new session')
    reply_is(old.cmd('MAIL FROM:<a@example.org>'), 530, '5.7.0',
             'the session opened before the reloads still requires TLS')
    old.starttls(ctx, 'mx.test.example')
    old.ehlo('old.example')
    res = old.transaction('a@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'the old session delivers after STARTTLS')
    old.close()
    ok(up.wait_messages(1, 10), 'the upstream got the old session\'s message')

    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=120)
