#!/usr/bin/python3
# SMTP AUTH (RFC 4954) on a submission listener: offered only inside TLS and
# only on listeners with auth = true, the SASL exchange relayed to the
# upstream (which decides), an authenticated client may relay anywhere, a
# failed or broken exchange leaves the client unauthenticated (a multi-line
# 334, a 235 to "*" and an abandoned exchange included), and no
# credential ever reaches frontmx's log, even with -v.
import os
import re
import time
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403
from fmx_auth import *  # noqa: E402,F403

MX = 'mx.test.example'
USER, PASSWORD = 'alice', 'secret'
BODY = b'From: alice@example.com\r\nTo: rcpt@other.example\r\nSubject: submission\r\n\r\nhello\r\n'
OUTSIDE = 'rcpt@other.example'

# every credential (and credential-like string) the client sends; none may
# appear in frontmx's log
SECRETS = [PASSWORD, b64(PASSWORD), plain_ir(USER, PASSWORD), 'wrongpw', b64('wrongpw'),
           'crashpw', plain_ir('crash', 'crashpw'), 'lfpw', b64('lfpw'), 'nopepw', b64('nopepw'),
           'plainpw', plain_ir(USER, 'plainpw')]


def caps(reply):
    return [l.upper() for l in reply.lines[1:]]


def has_auth(reply):
    return any(k.split(' ')[0].startswith('AUTH') for k in caps(reply))


def tls_session(port, ctx, helo='submit.example'):
    """Connect, EHLO, STARTTLS, EHLO again: (client, EHLO reply inside TLS)
    or (client, None) on failure."""
    c = TlsClient(port)
    c.greeting()
    c.ehlo(helo)
    r, err = c.starttls(ctx, MX)
    if not ok(r.code == 220 and err is None, 'STARTTLS + handshake (%r %s)' % (r, err)):
        return c, None
    return c, c.ehlo(helo)


def relay_probe(c, name, sender='probe@example.com'):
    """MAIL + RCPT to an outside domain, then RSET: returns the RCPT reply."""
    c.cmd('MAIL FROM:<%s>' % sender)
    r = c.cmd('RCPT TO:<%s>' % OUTSIDE)
    c.cmd('RSET')
    return r


def test_plaintext(mx, up):
    c = TlsClient(mx.ports[0])
    reply_is(c.greeting(), 220, None, 'plaintext: greeting')
    e = c.ehlo('plain.example')
    ok(not has_auth(e), 'plaintext: EHLO does not advertise AUTH before STARTTLS (%s)' % caps(e))
    ok('STARTTLS' in caps(e), 'plaintext: STARTTLS advertised')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 502, '5.5.1',
             'plaintext: AUTH PLAIN with credentials: 502 5.5.1')
    reply_is(c.cmd('AUTH LOGIN'), 502, '5.5.1', 'plaintext: AUTH LOGIN: 502 5.5.1')
    r = relay_probe(c, 'plaintext')
    reply_is(r, 554, '5.7.1', 'plaintext: 127.0.0.1 is not a relay network: outside RCPT 554 5.7.1')
    c.quit()
    ok(not any(l.upper().startswith(b'AUTH') for l in up.all_lines()),
       'plaintext: the upstream never saw an AUTH line')


def test_plain_ok(mx, up, ctx):
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    reply_is(e, 250, None, 'TLS: EHLO')
    ok('AUTH PLAIN LOGIN' in caps(e), 'TLS: EHLO advertises "AUTH PLAIN LOGIN" (%s)' % caps(e))
    ok('STARTTLS' not in caps(e), 'TLS: no STARTTLS inside TLS')
    reply_is(relay_probe(c, 'TLS'), 554, '5.7.1', 'TLS, not authenticated: outside RCPT 554 5.7.1')
    # AUTH inside a transaction
    reply_is(c.cmd('MAIL FROM:<alice@example.com>'), 250, None, 'MAIL before AUTH')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 503, '5.5.1', 'AUTH inside a transaction: 503 5.5.1')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    reply_is(c.cmd('AUTH'), 501, '5.5.4', 'AUTH without a mechanism: 501 5.5.4')
    n_auth = sum(1 for l in up.all_lines() if l.upper().startswith(b'AUTH'))
    is_(n_auth, 0, 'refused AUTH commands never reached the upstream')
    r = c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD))
    reply_is(r, 235, '2.7.0', 'AUTH PLAIN good credentials: 235 2.7.0')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 503, '5.5.1', 'second AUTH after success: 503 5.5.1')
    reply_is(c.cmd('AUTH LOGIN'), 503, '5.5.1', 'AUTH LOGIN after success: 503 5.5.1')
    # RFC 4954 5: a server offering AUTH at least parses and discards a
    # syntactically valid AUTH= on MAIL (Exim as a smarthost client sends it)
    for prm in ('AUTH=<>', 'AUTH=alice+40example.com'):
        r = c.cmd('MAIL FROM:<alice@example.com> %s' % prm)
        reply_is(r, 250, None, 'authenticated: MAIL with %s accepted (RFC 4954 5)' % prm)
        c.cmd('RSET')
    res = c.transaction('alice@example.com', [OUTSIDE], BODY)
    reply_is(res['mail'], 250, None, 'authenticated: MAIL')
    reply_is(res['rcpt'][0], 250, None, 'authenticated: RCPT to an outside domain 250')
    reply_is(res['dot'], 250, None, 'authenticated: message accepted')
    c.quit()
    ok(up.wait_messages(1, 10), 'authenticated: message relayed')
    m = [x for x in up.messages if OUTSIDE in ' '.join(x['rcpts'])]
    if ok(len(m) == 1, 'authenticated: one message to %s upstream' % OUTSIDE):
        is_(m[0]['user'], USER, 'the message went over the upstream connection where alice authenticated')
        rcv = received_field(m[0]['data'])
        like(rcv, rb' with ESMTPSA ', 'Received says ESMTPSA')
        like(rcv, rb'\(using TLSv1\.[23] ', 'Received names the TLS version')
    lines = up.all_lines()
    ok(('AUTH PLAIN %s\r\n' % plain_ir(USER, PASSWORD)).encode() in lines,
       'the upstream got the AUTH PLAIN line exactly')


def test_login(mx, up, ctx):
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    r = c.cmd('AUTH LOGIN')
    reply_is(r, 334, None, 'AUTH LOGIN: 334')
    is_(r.lines, ['VXNlcm5hbWU6'], 'AUTH LOGIN: the upstream\'s "Username:" challenge relayed as is')
    r = c.cmd(b64(USER))
    reply_is(r, 334, None, 'AUTH LOGIN user: 334')
    is_(r.lines, ['UGFzc3dvcmQ6'], 'AUTH LOGIN: "Password:" challenge')
    r = c.cmd(b64('wrongpw'))
    reply_is(r, 535, '5.7.8', "AUTH LOGIN wrong password: the upstream's 535 5.7.8 relayed")
    reply_is(relay_probe(c, 'after 535'), 554, '5.7.1', 'after a failed AUTH: outside RCPT still 554 5.7.1')
    # cancel with "*"
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'AUTH LOGIN again: 334')
    reply_is(c.cmd(b64(USER)), 334, None, 'user: 334')
    r = c.cmd('*')
    reply_is(r, 501, None, 'client cancels with "*": 501')
    reply_is(relay_probe(c, 'after cancel'), 554, '5.7.1', 'after a cancelled AUTH: outside RCPT 554 5.7.1')
    # then the right password, LOGIN
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'AUTH LOGIN a third time: 334')
    reply_is(c.cmd(b64(USER)), 334, None, 'user: 334')
    reply_is(c.cmd(b64(PASSWORD)), 235, '2.7.0', 'AUTH LOGIN good password: 235 2.7.0')
    res = c.transaction('alice@example.com', [OUTSIDE], BODY)
    reply_is(res['rcpt'][0], 250, None, 'after AUTH LOGIN: outside RCPT 250')
    reply_is(res['dot'], 250, None, 'after AUTH LOGIN: message accepted')
    c.quit()


def test_bad_sasl_line(mx, up, ctx):
    # PLAIN without an initial response, and a bare LF in the response line
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    r = c.cmd('AUTH PLAIN')
    reply_is(r, 334, None, 'AUTH PLAIN (no initial response): 334')
    blob = plain_ir(USER, 'plainpw')
    c.send(blob[:8].encode() + b'\n' + blob[8:].encode() + b'\r\n')
    reply_is(c.reply(), 501, None, 'bare LF in the SASL response line: 501')
    reply_is(c.cmd('NOOP'), 250, None, 'bare LF in the SASL response: the session continues')
    reply_is(relay_probe(c, 'after bad SASL line'), 554, '5.7.1',
             'after the broken PLAIN exchange: not authenticated (outside RCPT 554 5.7.1)')
    # a response line over RFC 4954's 12288 octets
    reply_is(c.cmd('AUTH PLAIN'), 334, None, 'AUTH PLAIN for an over-long response: 334')
    c.send(b'A' * 13000 + b'\r\n')
    reply_is(c.reply(), 501, None, 'SASL response over 12288 octets: 501')
    reply_is(c.cmd('NOOP'), 250, None, 'over-long SASL response: the session continues')
    # PLAIN without initial response, done right
    reply_is(c.cmd('AUTH PLAIN'), 334, None, 'AUTH PLAIN again: 334')
    reply_is(c.cmd(plain_ir(USER, PASSWORD)), 235, '2.7.0', 'PLAIN response line after 334: 235')
    c.quit()

    # LOGIN: the user name goes through, then a broken password line
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'LOGIN/bad line: AUTH LOGIN 334')
    reply_is(c.cmd(b64('mallory')), 334, None, 'LOGIN/bad line: user "mallory" (unknown upstream): 334')
    pw = b64('lfpw')
    c.send(pw[:2].encode() + b'\n' + pw[2:].encode() + b'\r\n')
    reply_is(c.reply(), 501, None, 'LOGIN/bad line: bare LF in the password line: 501')
    reply_is(c.cmd('NOOP'), 250, None, 'LOGIN/bad line: session continues')
    r = c.cmd('AUTH PLAIN ' + plain_ir(USER, 'nopepw'))
    ok(r.code == 535, 'LOGIN/bad line: a new AUTH is allowed (not "already authenticated") (%r)' % (r,))
    reply_is(relay_probe(c, 'after a broken LOGIN', sender='mallory@example.com'), 554, '5.7.1',
             'LOGIN/bad line: the half-done LOGIN did not authenticate "mallory" (outside RCPT 554 5.7.1)')
    c.quit()


def test_upstream_dies(mx, up, ctx):
    # the upstream closes the connection when it gets these credentials
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    r = c.cmd('AUTH PLAIN ' + plain_ir('crash', 'crashpw'))
    ok(r.code is not None and r.code // 100 == 4, 'upstream gone during AUTH: 4xx (%r)' % (r,))
    reply_is(c.cmd('NOOP'), 250, None, 'upstream gone during AUTH: session continues')
    reply_is(relay_probe(c, 'upstream died', sender='crash@example.com'), 554, '5.7.1',
             'upstream gone during AUTH: the client is not authenticated (outside RCPT 554 5.7.1)')
    c.quit()


def is_4xx_reply(r):
    return r.code is not None and r.code // 100 == 4 and r.enh is not None and r.enh.startswith('4.')


def test_multiline_334(mx, up, ctx):
    # a 334 is relayed only as one line: a second line would reach the
    # client looking like a reply of its own
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    up.plain_challenge = b'334-\r\n334 250 2.7.0 smuggled\r\n'
    r = c.cmd('AUTH PLAIN')
    ok(is_4xx_reply(r), 'multi-line 334 to AUTH PLAIN: a 4xx ends the exchange (%r)' % (r,))
    up.plain_challenge = b'334 \r\n'
    r = c.cmd('NOOP')
    reply_is(r, 250, None, 'multi-line 334: the session goes on in step (NOOP 250)')
    unlike(r.text if r else '', r'smuggled', "multi-line 334: the NOOP reply is frontmx's own")
    reply_is(relay_probe(c, 'after a multi-line 334'), 554, '5.7.1',
             'multi-line 334: not authenticated (outside RCPT 554 5.7.1)')
    # LOGIN: the "Password:" challenge in two lines
    up.multi334_users.add('multi')
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'LOGIN with a multi-line Password challenge: 334')
    r = c.cmd(b64('multi'))
    ok(is_4xx_reply(r), 'multi-line "Password:" 334: a 4xx ends the exchange (%r)' % (r,))
    r = c.cmd('NOOP')
    reply_is(r, 250, None, 'multi-line Password challenge: NOOP 250')
    unlike(r.text if r else '', r'Authentication successful', "the upstream's second line never reaches the client")
    reply_is(relay_probe(c, 'after a multi-line Password challenge', sender='multi@example.com'),
             554, '5.7.1', 'multi-line Password challenge: not authenticated')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 235, '2.7.0',
             'then a good AUTH works (a new upstream connection)')
    c.quit()


def test_cancel_ignored(mx, up, ctx):
    # an upstream that takes "*" for the password and says 235 (RFC 4954 4:
    # it must refuse): its connection is authenticated as someone the
    # client is not, and must carry none of the client's mail.  Both ways a
    # "*" goes up: the client's own, and frontmx's after a broken line.
    for how in ('client', 'frontmx'):
        c, e = tls_session(mx.ports[0], ctx)
        if e is None:
            return
        n0 = len(up.messages)
        reply_is(c.cmd('AUTH LOGIN'), 334, None, 'cancel ignored (%s): AUTH LOGIN 334' % how)
        reply_is(c.cmd(b64(USER)), 334, None, 'cancel ignored (%s): user 334' % how)
        up.cancel_reply = b'235 2.7.0 Authentication successful\r\n'
        if how == 'client':
            r = c.cmd('*')
            ok(is_4xx_reply(r), 'cancel ignored (client "*"): a 4xx, not the 235 (%r)' % (r,))
        else:
            c.send(b'bm9wZQ\n==\r\n')
            reply_is(c.reply(), 501, None, 'cancel ignored (bare LF in the SASL line): 501')
        reply_is(c.cmd('NOOP'), 250, None, 'cancel ignored (%s): NOOP 250' % how)
        up.cancel_reply = b'501 5.7.0 Authentication cancelled\r\n'
        reply_is(relay_probe(c, 'after the ignored cancel'), 554, '5.7.1',
                 'cancel ignored (%s): the client is not authenticated' % how)
        res = c.transaction('bob@example.com', ['local@example.com'], BODY)
        reply_is(res['dot'], 250, None, 'cancel ignored (%s): a local message is relayed' % how)
        c.quit()
        ok(up.wait_messages(n0 + 1, 10), 'cancel ignored (%s): the message reached the upstream' % how)
        with up.lock:
            m = up.messages[n0] if len(up.messages) > n0 else {}
        is_(m.get('user'), None,
            'cancel ignored (%s): it went over a connection not authenticated upstream' % how)


def test_abandoned(mx, up, ctx):
    # the client goes away in the middle of an exchange: no QUIT where a
    # SASL response is due (checked with every SASL line in main)
    c, e = tls_session(mx.ports[0], ctx)
    if e is None:
        return
    reply_is(c.cmd('AUTH LOGIN'), 334, None, 'abandoned: AUTH LOGIN 334')
    with up.lock:
        conn = up.nconn - 1          # the connection this exchange is on
    c.close()
    ok(wait_for(lambda: conn in up.closed, 20), 'abandoned: frontmx closed the upstream connection')
    with up.lock:
        due = [l for cn, l in up.sasl if cn == conn]
    is_(due, [], 'abandoned: nothing sent where the SASL response was due (no QUIT taken for a user name)')


def test_no_auth_listeners(mx, up, ctx):
    # tls = starttls without auth
    c, e = tls_session(mx.ports[1], ctx)
    if e is not None:
        reply_is(e, 250, None, 'listener without auth: EHLO inside TLS')
        ok(not has_auth(e), 'listener without auth: no AUTH advertised even after TLS (%s)' % caps(e))
        reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 502, '5.5.1',
                 'listener without auth: AUTH PLAIN 502 5.5.1')
        reply_is(relay_probe(c, 'no-auth listener'), 554, '5.7.1', 'listener without auth: outside RCPT 554')
        c.quit()
    # auth = true but no TLS at all: never offered (credentials never in the clear)
    c = TlsClient(mx.ports[2])
    c.greeting()
    e = c.ehlo('clear.example')
    ok(not has_auth(e) and 'STARTTLS' not in caps(e),
       'auth = true without TLS: neither AUTH nor STARTTLS advertised (%s)' % caps(e))
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir(USER, PASSWORD)), 502, '5.5.1', 'auth without TLS: AUTH 502 5.5.1')
    c.quit()


def test_log(mx):
    log = mx.log()
    like(log, r'smtp <<< AUTH \(credentials not logged\)', 'log: -v is on (AUTH lines are logged, masked)')
    like(log, r'upstream >>> \(SASL data, \d+ bytes\)', 'log: -v is on (SASL data to the upstream masked)')
    like(log, r'auth=ok mech=PLAIN user=alice ', 'log: the successful login is logged with the user name')
    like(log, r'auth=failed mech=LOGIN code=535 ', 'log: the failed login is logged')
    leaked = [s for s in SECRETS if s in log]
    is_(leaked, [], 'log: no password, base64 password or PLAIN blob in the -v log')
    for s in leaked:
        for l in log.splitlines():
            if s in l:
                diag('  leaked in: %s' % l)
                break


def main():
    d = tmpdir('fmx-auth-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)
    up = AuthUpstream(users={USER: PASSWORD}, close_users={'crash'})
    mx = frontmx_listeners_args(
        up, [listener('starttls', certs, auth=True), listener('starttls', certs),
             listener(None, None, auth=True)],
        conf={'relay': {'domains': ['example.com'], 'networks': ['192.0.2.0/24']}},
        name='frontmx -v', args=['-v'])
    test_plaintext(mx, up)
    test_plain_ok(mx, up, ctx)
    test_login(mx, up, ctx)
    test_bad_sasl_line(mx, up, ctx)
    test_upstream_dies(mx, up, ctx)
    test_multiline_334(mx, up, ctx)
    test_cancel_ignored(mx, up, ctx)
    test_abandoned(mx, up, ctx)
    test_no_auth_listeners(mx, up, ctx)
    time.sleep(0.3)
    # upstream invariants: a RCPT outside example.com only ever on a
    # connection where the client authenticated
    with up.lock:
        lines = list(up.lines)
        auth = dict(up.auth)
        errs = list(up.errors)
    outside = [(cn, l) for cn, l in lines if l.upper().startswith(b'RCPT TO:')
               and not re.search(rb'@example\.com>', l)]
    bad = [(cn, l) for cn, l in outside if cn not in auth]
    is_(bad, [], 'upstream: no outside-domain RCPT on an unauthenticated connection')
    with up.lock:
        sasl = list(up.sasl)
    is_([x for x in sasl if not re.match(rb'^([A-Za-z0-9+/]*={0,2}|\*)\r\n$', x[1]) or x[1] == b'QUIT\r\n'], [],
        'upstream: every line sent where a SASL response was due is base64 or "*" '
        '(an abandoned exchange is cancelled with "*", RFC 4954 4, not answered with QUIT)')
    is_(errs, [], 'upstream: no protocol violations (CRLF, AUTH twice, AUTH in a transaction, ...)')
    is_(len(up.messages), 4, 'upstream: exactly the two authenticated messages and the two local ones')
    ok(mx.alive(), 'frontmx still running')
    test_log(mx)
    mx.finish()


run(main, timeout=60)
