#!/usr/bin/python3
# upstream.pool (issue 13): an idle upstream connection serves the next
# client when nothing binds it to the last one (XFORWARD, not XCLIENT),
# after an RSET that proves it in step; each transaction carries its own
# client's XFORWARD attributes; a connection whose state is in doubt is
# never reused, and a message is never lost to a stale one.
import os
import shutil
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import TlsClient, client_ctx, listener, make_cert  # noqa: E402
from fmx_auth import AuthUpstream, frontmx_listeners_args, plain_ir  # noqa: E402
import fmx  # noqa: E402

BODY = b'From: alice@example.org\r\nSubject: pool\r\n\r\nbody\r\n'
XF_CAPS = fmx.DEFAULT_CAPS + ['XFORWARD NAME ADDR PORT PROTO HELO']
XC_CAPS = fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO LOGIN']


def conf(size=8, idle=30):
    return {'workers': 1, 'upstream': {'pool': {'size': size, 'idle': idle}}}


def session(mx, helo, source='127.0.0.1', rcpt='bob@example.com'):
    """One client: EHLO, one message, QUIT; returns the reply to the dot.
    Returns after frontmx closed the client (the session is gone, its
    upstream connection pooled or closed)."""
    c = SmtpClient(mx.port, source=source)
    c.greeting()
    c.ehlo(helo)
    res = c.transaction('alice@example.org', [rcpt], BODY)
    c.cmd('QUIT')
    c.expect_close(5)
    c.close()
    return res['dot']


def xf(msg):
    """The XFORWARD attributes sent for this message's transaction."""
    d = {}
    for line in msg.xforward_tx:
        for p in line.split(' ')[1:]:
            k, _, v = p.partition('=')
            d[k.upper()] = v
    return d


def conns(up):
    """The connections that carried mail: not frontmx's capability probes
    (EHLO or LHLO, QUIT)."""
    with up.lock:
        return [c for c in up.conns
                if any(x.split(' ')[0].upper() not in ('EHLO', 'LHLO', 'QUIT') for x in c.commands)]


def quitted(up, i):
    with up.lock:
        c = conns(up)[i]
        return 'QUIT' in [x.upper() for x in c.commands] or c.closed


def main():
    # -- reuse: two clients, one upstream connection, each its own facts
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(), name='pool')
    r1 = session(mx, 'first.example', source='127.0.0.2')
    r2 = session(mx, 'second.example', source='127.0.0.3')
    reply_is(r1, 250, None, 'first client relayed')
    reply_is(r2, 250, None, 'second client relayed')
    ok(up.wait_messages(2, 10), 'upstream got both messages')
    is_(len(conns(up)), 1, 'one upstream connection served both clients')
    cmds = [x.split(' ')[0].upper() for x in conns(up)[0].commands]
    diag('commands: %s' % cmds)
    ok('RSET' in cmds[cmds.index('DATA'):], 'RSET between the two transactions')
    is_(cmds.count('EHLO'), 1, 'one EHLO for both clients')
    if len(up.messages) == 2:
        a, b = xf(up.messages[0]), xf(up.messages[1])
        is_(a.get('ADDR'), '127.0.0.2', "first message: first client's ADDR")
        is_(a.get('HELO'), 'first.example', "first message: first client's HELO")
        is_(b.get('ADDR'), '127.0.0.3', "second message: second client's ADDR")
        is_(b.get('HELO'), 'second.example', "second message: second client's HELO")
        ok('first.example' not in ' '.join(up.messages[1].xforward_tx) and
           '127.0.0.2' not in ' '.join(up.messages[1].xforward_tx),
           "second message never carries the first client's facts")
    is_(up.errors, [], 'upstream saw no command out of sequence')
    ok(not quitted(up, 0), 'the pooled connection stays open')
    mx.finish()

    # -- XCLIENT offered: a connection carries one client, no pool
    up = Upstream(ehlo_caps=XC_CAPS)
    mx = Frontmx(up, conf=conf(), name='xclient')
    reply_is(session(mx, 'first.example'), 250, None, 'xclient: first relayed')
    reply_is(session(mx, 'second.example'), 250, None, 'xclient: second relayed')
    ok(up.wait_messages(2, 10), 'xclient: upstream got both')
    is_(len(conns(up)), 2, 'xclient: one upstream connection per client')
    ok(wait_for(lambda: quitted(up, 0), 5), 'xclient: the first connection was closed')
    mx.finish()

    # -- xclient = false: no identity sent at all, the connection is pooled
    up = Upstream(ehlo_caps=XC_CAPS + ['XFORWARD NAME ADDR PORT PROTO HELO'])
    mx = Frontmx(up, conf={'workers': 1, 'upstream': {'xclient': False,
                                                      'pool': {'size': 8, 'idle': 30}}},
                 name='noxclient')
    reply_is(session(mx, 'first.example'), 250, None, 'xclient = false: first relayed')
    reply_is(session(mx, 'second.example'), 250, None, 'xclient = false: second relayed')
    ok(up.wait_messages(2, 10), 'xclient = false: upstream got both')
    is_(len(conns(up)), 1, 'xclient = false: one connection for both')
    ok(not any(x.split(' ')[0].upper() in ('XCLIENT', 'XFORWARD') for x in up.commands()),
       'xclient = false: neither XCLIENT nor XFORWARD sent')
    mx.finish()

    # -- LMTP: pooled the same way
    up = Upstream(lmtp=True)
    mx = Frontmx('lmtp:127.0.0.1:%d' % up.port, conf=conf(), name='lmtp')
    reply_is(session(mx, 'first.example'), 250, None, 'lmtp: first delivered')
    reply_is(session(mx, 'second.example'), 250, None, 'lmtp: second delivered')
    ok(up.wait_messages(2, 10), 'lmtp: server got both')
    is_(len(conns(up)), 1, 'lmtp: one connection for both')
    cmds = [x.split(' ')[0].upper() for x in conns(up)[0].commands] if conns(up) else []
    ok('RSET' in cmds[cmds.index('DATA'):] if 'DATA' in cmds else False, 'lmtp: RSET before reuse')
    is_(up.errors, [], 'lmtp: no command out of sequence')
    mx.finish()

    # -- AUTH relayed: the connection is that user's, never pooled (else
    # the next client would relay as alice)
    d = tmpdir('fmx-pool-auth-')
    certs = make_cert(d, 'mx.test.example')
    up = AuthUpstream(users={'alice': 'secret'})
    mx = frontmx_listeners_args(up, [listener('starttls', certs, auth=True)],
                                conf={'workers': 1, 'upstream': {'pool': {'size': 8, 'idle': 30}},
                                      'relay': {'domains': ['example.com'], 'networks': ['192.0.2.0/24']}},
                                name='auth')
    c = TlsClient(mx.ports[0])
    c.greeting()
    c.ehlo('submit.example')
    r, err = c.starttls(client_ctx(certs.cert), 'mx.test.example')
    ok(r.code == 220 and err is None, 'auth: STARTTLS')
    c.ehlo('submit.example')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir('alice', 'secret')), 235, None, 'auth: alice authenticated')
    res = c.transaction('alice@example.com', ['rcpt@other.example'], BODY)
    reply_is(res['dot'], 250, None, 'auth: relayed outside as alice')
    n = mx.log().count('smtp disconnect from')
    c.cmd('QUIT')
    c.close()
    # the session is over (and its upstream connection pooled or closed)
    ok(wait_for(lambda: mx.log().count('smtp disconnect from') > n, 10), 'auth: first session over')
    c = SmtpClient(mx.ports[0])
    c.greeting()
    c.ehlo('anon.example')
    r = c.cmd('MAIL FROM:<x@example.com>')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'auth: next client, local RCPT')
    reply_is(c.data(BODY)[1], 250, None, 'auth: next client relayed')
    c.cmd('QUIT')
    c.close()
    ok(up.wait_messages(2, 10), 'auth: upstream got both')
    with up.lock:
        msgs = list(up.messages)
    if len(msgs) == 2:
        is_(msgs[0]['user'], 'alice', "auth: first message on alice's connection")
        is_(msgs[1]['user'], None, 'auth: second message on a connection nobody authenticated on')
        isnt(msgs[1]['conn'], msgs[0]['conn'], 'auth: not the authenticated connection')
    mx.finish()

    # -- no pool configured: as before, one connection per client
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf={'workers': 1}, name='nopool')
    session(mx, 'first.example')
    session(mx, 'second.example')
    ok(up.wait_messages(2, 10), 'no pool: upstream got both')
    is_(len(conns(up)), 2, 'no pool: one connection per client')
    mx.finish()

    # -- the health check RSET fails: dropped, a new connection, no loss
    faults = [('4xx', {'on_rset': '451 4.3.0 try later'}),
              ('5xx', {'on_rset': '554 5.5.1 no'}),
              ('garbage', {'garbage_at': 'RSET'}),
              ('421 and close', {'on_rset': '421 4.4.2 bye'}),
              ('silent', {'silent_at': 'RSET'})]
    for name, fault in faults:
        up = Upstream(ehlo_caps=XF_CAPS)
        mx = Frontmx(up, conf=conf(), name='rset-' + name.split()[0])
        reply_is(session(mx, 'first.example'), 250, None, '%s: first relayed' % name)
        for k, v in fault.items():
            setattr(up, k, v)
        r = session(mx, 'second.example', source='127.0.0.3')
        for k in fault:
            setattr(up, k, None)
        reply_is(r, 250, None, '%s: second client relayed all the same' % name)
        ok(up.wait_messages(2, 10), '%s: upstream got both messages' % name)
        is_(len(conns(up)), 2, '%s: the failed connection replaced by a new one' % name)
        with up.lock:
            first = list(conns(up)[0].commands)
        is_([x.split(' ')[0].upper() for x in first].count('MAIL'), 1,
            '%s: nothing more sent on the connection that failed' % name)
        if len(up.messages) == 2:
            is_(xf(up.messages[1]).get('ADDR'), '127.0.0.3', "%s: second message: its own ADDR" % name)
        ok(wait_for(lambda: conns(up)[0].closed or quitted(up, 0), 5), '%s: the failed one closed' % name)
        mx.finish()

    # -- the upstream closes an idle pooled connection: never used
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(), name='eof')
    session(mx, 'first.example')
    up.drop_all()
    ok(wait_for(lambda: conns(up)[0].closed, 5), 'eof: the upstream closed the idle one')
    time.sleep(0.3)
    reply_is(session(mx, 'second.example'), 250, None, 'eof: second client relayed')
    is_(len(conns(up)), 2, 'eof: a new connection for the second client')
    ok('pooled connection lost' in mx.log(), 'eof: logged and removed from the pool')
    is_(up.errors, [], 'eof: no command out of sequence')
    mx.finish()

    # -- a 421 on an idle pooled connection: the same
    up = Upstream(ehlo_caps=XF_CAPS)
    up.close_on_421 = False
    mx = Frontmx(up, conf=conf(), name='idle421')
    session(mx, 'first.example')
    with up.lock:
        c0 = conns(up)[0]
    up._send(c0, b'421 4.4.2 idle timeout\r\n')
    ok(wait_for(lambda: 'pooled connection lost' in mx.log(), 5), 'idle 421: the pool dropped it')
    reply_is(session(mx, 'second.example'), 250, None, 'idle 421: second client relayed')
    is_(len(conns(up)), 2, 'idle 421: on a new connection')
    mx.finish()

    # -- idle time: the pooled connection gets QUIT when it runs out
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(idle=1), name='idle')
    session(mx, 'first.example')
    ok(not quitted(up, 0), 'idle: pooled at first')
    ok(wait_for(lambda: quitted(up, 0), 6), 'idle: QUIT after upstream.pool.idle')
    reply_is(session(mx, 'second.example'), 250, None, 'idle: second client relayed')
    is_(len(conns(up)), 2, 'idle: on a new connection')
    mx.finish()

    # -- size bound: two at once, pool of one
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(size=1), name='size')
    cs = []
    for i in range(2):
        c = SmtpClient(mx.port)
        c.greeting()
        c.ehlo('c%d.example' % i)
        reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'size: client %d MAIL' % i)
        cs.append(c)
    for i, c in enumerate(cs):
        reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'size: client %d RCPT' % i)
        reply_is(c.data(BODY)[1], 250, None, 'size: client %d relayed' % i)
        c.cmd('QUIT')
        c.expect_close(5)
        c.close()
    is_(len(conns(up)), 2, 'size: two upstream connections at once')
    ok(wait_for(lambda: quitted(up, 0) or quitted(up, 1), 5), 'size: one beyond the bound closed')
    time.sleep(0.3)
    is_(sum(1 for i in range(2) if quitted(up, i)), 1, 'size: the other one kept')
    reply_is(session(mx, 'third.example'), 250, None, 'size: third client relayed')
    is_(len(conns(up)), 2, 'size: the third reused the kept one')
    mx.finish()

    # -- an unexpected reply: the connection is dead, never pooled
    up = Upstream(ehlo_caps=XF_CAPS, inject={'RCPT': '250 2.0.0 extra\r\n'})
    mx = Frontmx(up, conf=conf(), name='unexpected')
    r = session(mx, 'first.example')
    ok(r is None or r.code != 250, 'unexpected: first message not taken')
    up.inject = {}
    reply_is(session(mx, 'second.example'), 250, None, 'unexpected: second client relayed')
    is_(len(conns(up)), 2, 'unexpected: a new connection')
    with up.lock:
        first = [x.split(' ')[0].upper() for x in conns(up)[0].commands]
    ok('DATA' not in first and 'RSET' not in first, 'unexpected: nothing more on the first (%s)' % first)
    mx.finish()

    # -- the client vanishes mid-transaction: that connection is not pooled
    up = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(), name='vanish')
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('first.example')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'vanish: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'vanish: RCPT')
    c.vanish()
    ok(wait_for(lambda: quitted(up, 0), 5), 'vanish: the connection holding a transaction closed')
    reply_is(session(mx, 'second.example'), 250, None, 'vanish: next client relayed')
    is_(len(conns(up)), 2, 'vanish: on a new connection')
    is_(up.errors, [], 'vanish: no nested MAIL or other error upstream')
    mx.finish()

    # -- SIGHUP to another upstream: pooled ones to the old are dropped
    up = Upstream(ehlo_caps=XF_CAPS)
    up2 = Upstream(ehlo_caps=XF_CAPS)
    mx = Frontmx(up, conf=conf(), name='hup')
    session(mx, 'first.example')
    ok(not quitted(up, 0), 'hup: pooled')
    mx.upstream_address = '127.0.0.1:%d' % up2.port
    mx.write_conf(conf=conf())
    mx.hup()
    ok(wait_for(lambda: quitted(up, 0), 10), 'hup: the pooled connection to the old upstream closed')
    ok(wait_for(lambda: 'configuration reloaded' in mx.log(), 10), 'hup: reloaded')
    ok(mx.alive(), 'hup: still running')
    if not mx.alive():
        diag(mx.log()[-3000:])
    reply_is(session(mx, 'second.example'), 250, None, 'hup: next client relayed')
    ok(up2.wait_messages(1, 10), 'hup: to the new upstream')
    is_(len(up.messages), 1, 'hup: nothing more to the old one')
    mx.finish()


    # -- the same under valgrind (release build): reuse, a connection lost
    # while pooled, a reload flushing the pool, SIGTERM with one pooled
    valgrind_run()


def valgrind_run():
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    release = os.environ.get('FRONTMX_RELEASE', os.path.join(repo, 'frontmx'))
    if shutil.which('valgrind') is None or not os.access(release, os.X_OK):
        ok(False, 'valgrind (make deps) and %s (make) are there' % release)
        return
    d = tmpdir('fmx-pool-vg-')
    vglog = os.path.join(d, 'valgrind.log')
    wrapper = os.path.join(d, 'frontmx-vg')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec valgrind -q --error-exitcode=3 --leak-check=full '
                '--errors-for-leak-kinds=definite --log-file=%s %s "$@"\n' % (vglog, release))
    os.chmod(wrapper, 0o755)
    saved = os.environ.get('FRONTMX')
    os.environ['FRONTMX'] = wrapper
    try:
        up = Upstream(ehlo_caps=XF_CAPS)
        mx = Frontmx(up, conf=conf(), name='pool under valgrind')
        reply_is(session(mx, 'first.example'), 250, None, 'valgrind: first relayed')
        reply_is(session(mx, 'second.example'), 250, None, 'valgrind: second relayed, reused')
        is_(len(conns(up)), 1, 'valgrind: one upstream connection for both')
        up.drop_all()
        ok(wait_for(lambda: 'pooled connection lost' in mx.log(), 20), 'valgrind: lost while pooled')
        reply_is(session(mx, 'third.example'), 250, None, 'valgrind: third relayed')
        mx.hup()
        ok(wait_for(lambda: 'configuration reloaded' in mx.log(), 20), 'valgrind: reloaded')
        reply_is(session(mx, 'fourth.example'), 250, None, 'valgrind: fourth relayed, then pooled')
        rc = mx.stop(timeout=30)
        is_(rc, 0, 'valgrind: exit status 0 with a pooled connection at SIGTERM (3: memcheck errors)')
        with open(vglog) as f:
            report = f.read()
        is_(report.strip(), '', 'valgrind reported nothing')
        if report.strip():
            diag(report[-4000:])
    finally:
        if saved is None:
            os.environ.pop('FRONTMX', None)
        else:
            os.environ['FRONTMX'] = saved


run(main, timeout=240)
