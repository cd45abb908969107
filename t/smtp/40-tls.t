#!/usr/bin/python3
# Client-side TLS: STARTTLS (openssl s_client, swaks, Python ssl), implicit
# TLS, "required" listeners, CVE-2011-0411 plaintext injection after
# STARTTLS, the RFC 3207 4.2 state reset, TLS 1.2 minimum, ESMTPS in
# Received:, and `frontmx -t` on missing certificate/key files.
# Certificates are made at test time (openssl req -x509) in a temp dir.
import os
import re
import socket
import ssl
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403

MX = 'mx.test.example'


def body(tag):
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: %s\r\n'
            b'Message-ID: <%s@example.org>\r\n\r\nbody of %s\r\n.leading dot\r\n' % (tag, tag, tag))


def find_msg(up, sender):
    return [m for m in up.messages if m.mail_from == sender]


def caps(r):
    return [l.split(' ')[0].upper() for l in (r.lines[1:] if r and r.lines else [])]


def test_sclient(mx, up, certs):
    sc = SClient(mx.ports[0], cafile=certs.cert, name=MX, helo='sclient.example')
    e = sc.cmd('EHLO sclient.example')
    reply_is(e, 250, None, 's_client: EHLO inside TLS 250')
    ok('STARTTLS' not in caps(e), 's_client: EHLO inside TLS does not offer STARTTLS again (%s)' % caps(e))
    reply_is(sc.cmd('MAIL FROM:<sclient@example.org>'), 250, '2.1.0', 's_client: MAIL 250')
    reply_is(sc.cmd('RCPT TO:<bob@example.com>'), 250, '2.1.5', 's_client: RCPT 250')
    reply_is(sc.cmd('DATA'), 354, None, 's_client: DATA 354')
    sc.send('Subject: via s_client\n\nhello over TLS\n..dot\n.\n')
    reply_is(sc.reply(), 250, '2.0.0', 's_client: message accepted 250')
    q = sc.cmd('QUIT')
    reply_is(q, 221, '2.0.0', 's_client: QUIT answered 221 over TLS (STARTTLS session)')
    sc.wait(5)
    sc.close()
    err = sc.stderr()
    like(err, r'verify return:1', 's_client verified the listener certificate (CN=%s)' % MX)
    ok(up.wait_messages(1, 10), 's_client message reached the upstream')
    ms = find_msg(up, 'sclient@example.org')
    is_(len(ms), 1, 's_client: exactly one transaction upstream')
    if ms:
        m = ms[0]
        is_(m.rcpts, ['bob@example.com'], 's_client: recipient relayed')
        ok(m.data.endswith(b'Subject: via s_client\r\n\r\nhello over TLS\r\n.dot\r\n'),
           's_client: body relayed (dot-unstuffed, CRLF)')
        rcv = received_field(m.data)
        like(rcv, rb'with ESMTPS ', "s_client: Received: says 'with ESMTPS'")
        like(rcv, rb'\(using TLSv1\.[23] [A-Z0-9_-]+\)', 's_client: Received: names TLS version and cipher')
        like(rcv, rb'^Received: from sclient\.example ', 's_client: Received: names the EHLO given inside TLS')


def test_swaks(mx, up):
    n0 = len(up.messages)
    p = subprocess.run(['swaks', '--server', '127.0.0.1:%d' % mx.ports[0], '--tls',
                        '--from', 'swaks-tls@example.org', '--to', 'bob@example.com',
                        '--helo', 'swaks.example', '--body', 'swaks starttls body',
                        '--timeout', '10'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode(errors='replace')
    like(out, r'(?m)^<[-~] +220 2\.0\.0 Ready to start TLS', 'swaks --tls: STARTTLS answered 220 2.0.0')
    like(out, r'TLS started', 'swaks --tls: TLS started')
    like(out, r'(?m)^<~ +250 2\.0\.0 ', 'swaks --tls: message accepted inside TLS')
    is_(p.returncode, 0, 'swaks --tls against the starttls listener exits 0')
    if p.returncode:
        diag(out[-2500:])
    ok(wait_for(lambda: find_msg(up, 'swaks-tls@example.org'), 10), 'swaks --tls: message relayed')
    for m in find_msg(up, 'swaks-tls@example.org'):
        like(received_field(m.data), rb'with ESMTPS ', 'swaks --tls: Received says ESMTPS')

    p = subprocess.run(['swaks', '--server', '127.0.0.1:%d' % mx.ports[1], '--tlsc',
                        '--from', 'swaks-tlsc@example.org', '--to', 'bob@example.com',
                        '--helo', 'swaksc.example', '--body', 'swaks implicit body',
                        '--timeout', '10'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode(errors='replace')
    like(out, r'TLS started', 'swaks --tlsc: TLS from the first byte')
    like(out, r'(?m)^<~ +220 mx\.test\.example ESMTP', 'swaks --tlsc: greeting inside TLS')
    is_(p.returncode, 0, 'swaks --tlsc against the implicit listener exits 0')
    if p.returncode:
        diag(out[-2500:])
    ok(wait_for(lambda: find_msg(up, 'swaks-tlsc@example.org'), 10), 'swaks --tlsc: message relayed')
    for m in find_msg(up, 'swaks-tlsc@example.org'):
        rcv = received_field(m.data)
        like(rcv, rb'with ESMTPS ', 'swaks --tlsc: Received says ESMTPS')
        like(rcv, rb'\(using TLSv1\.[23] ', 'swaks --tlsc: Received names the TLS version')
    ok(len(up.messages) >= n0 + 2, 'both swaks messages relayed')


def test_injection(mx, up, ctx):
    # 1. the brief's case: STARTTLS and a MAIL in ONE segment
    c = TlsClient(mx.ports[0])
    reply_is(c.greeting(), 220, None, 'injection 1: greeting')
    e = c.ehlo('victim.example')
    ok('STARTTLS' in caps(e), 'injection 1: STARTTLS advertised before TLS')
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.send(b'STARTTLS\r\nMAIL FROM:<evil@x>\r\n')
    r = c.reply()
    reply_is(r, 220, '2.0.0', 'injection 1: STARTTLS answered 220 2.0.0')
    like(r.text, r'Ready to start TLS', 'injection 1: "Ready to start TLS"')
    # a plaintext reply to the MAIL, sent later, would break the handshake or
    # be read inside TLS in place of the NOOP's reply: both checked below
    ok(c.buf == b'', 'injection 1: no plaintext reply to the pipelined MAIL along with the 220')
    try:
        c.wrap(ctx, MX)
        hs = None
    except (ssl.SSLError, OSError) as ex:
        hs = ex
    ok(hs is None, 'injection 1: handshake after the injected bytes succeeds (%s)' % hs)
    if hs is None:
        reply_is(c.cmd('NOOP'), 250, '2.0.0', 'injection 1: first reply inside TLS is the NOOP reply (nothing queued)')
        reply_is(c.cmd('MAIL FROM:<good@example.org>'), 503, '5.5.1',
                 'injection 1: MAIL inside TLS before a new EHLO: 503 5.5.1')
        reply_is(c.cmd('NOOP'), 250, '2.0.0',
                 'injection 1: no stray reply to the injected MAIL inside TLS (next reply is the NOOP\'s)')
        e = c.ehlo('victim.example')
        reply_is(e, 250, None, 'injection 1: EHLO inside TLS')
        res = c.transaction('good@example.org', ['bob@example.com'], body(b'inj1'))
        reply_is(res['mail'], 250, None, 'injection 1: real MAIL after EHLO: 250')
        reply_is(res['dot'], 250, None, 'injection 1: real message accepted')
        reply_is(c.cmd('QUIT'), 221, '2.0.0', 'injection 1: QUIT answered 221 inside TLS')
    c.close()
    like(mx.log(), r'smtp discarded 20 bytes pipelined after STARTTLS',
         'injection 1: frontmx logged the 20 discarded bytes')

    # 2. a whole plaintext transaction pipelined behind STARTTLS
    c = TlsClient(mx.ports[0])
    c.greeting()
    c.ehlo('victim2.example')
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    evil = (b'STARTTLS\r\nEHLO evil.example\r\nMAIL FROM:<evil2@x>\r\n'
            b'RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: evil\r\n\r\nevil\r\n.\r\n')
    c.send(evil)
    reply_is(c.reply(), 220, '2.0.0', 'injection 2: STARTTLS 220')
    ok(c.buf == b'', 'injection 2: nothing answered in plaintext along with the 220')
    try:
        c.wrap(ctx, MX)
        hs = None
    except (ssl.SSLError, OSError) as ex:
        hs = ex
    ok(hs is None, 'injection 2: handshake succeeds (%s)' % hs)
    if hs is None:
        reply_is(c.cmd('NOOP'), 250, '2.0.0', 'injection 2: first reply inside TLS answers our NOOP')
        reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1',
                 'injection 2: no transaction open inside TLS (RCPT 503)')
        reply_is(c.cmd('MAIL FROM:<late@example.org>'), 503, '5.5.1',
                 'injection 2: the injected EHLO did not count (MAIL 503)')
        c.quit()
    c.close()
    like(mx.log(), r'smtp discarded %d bytes pipelined after STARTTLS' % (len(evil) - 10),
         'injection 2: frontmx logged the %d discarded bytes' % (len(evil) - 10))
    # the injected bytes were discarded at STARTTLS (logged above): they can
    # never reach the upstream later
    allb = up.all_bytes()
    ok(b'evil@x' not in allb and b'evil2@x' not in allb, 'injection: the upstream never saw evil@x / evil2@x')
    ok(b'evil.example' not in allb, 'injection: the injected EHLO name never reached the upstream')
    is_(len(find_msg(up, 'good@example.org')), 1, 'injection: only the real message was relayed')


def test_state_reset(mx, up, ctx):
    c = TlsClient(mx.ports[0])
    c.greeting()
    e = c.ehlo('before.example')
    ok('STARTTLS' in caps(e), 'reset: STARTTLS in EHLO before TLS')
    reply_is(c.cmd('MAIL FROM:<pre-tls@example.org>'), 250, None, 'reset: MAIL before STARTTLS 250')
    r, err = c.starttls(ctx, MX)
    reply_is(r, 220, '2.0.0', 'reset: STARTTLS in the middle of a transaction: 220')
    ok(err is None, 'reset: handshake (%s)' % err)
    if err is not None:
        return
    is_(c.tls_version() in ('TLSv1.2', 'TLSv1.3'), True, 'reset: TLS 1.2 or 1.3 (%s)' % c.tls_version())
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 503, '5.5.1', 'reset: MAIL before the new EHLO: 503 5.5.1')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'reset: the pre-TLS MAIL is forgotten (RCPT 503)')
    e = c.ehlo('after.example')
    reply_is(e, 250, None, 'reset: EHLO inside TLS 250')
    ok('STARTTLS' not in caps(e), 'reset: no STARTTLS in EHLO inside TLS (%s)' % caps(e))
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'reset: RCPT after the new EHLO still needs MAIL')
    reply_is(c.cmd('STARTTLS'), 503, '5.5.1', 'reset: STARTTLS again inside TLS: 503 5.5.1')
    res = c.transaction('post-tls@example.org', ['bob@example.com'], body(b'reset'))
    reply_is(res['dot'], 250, None, 'reset: message inside TLS accepted')
    reply_is(c.cmd('QUIT'), 221, '2.0.0', 'reset: QUIT inside TLS gets 221')
    c.close()
    ok(wait_for(lambda: find_msg(up, 'post-tls@example.org'), 10), 'reset: message relayed')
    for m in find_msg(up, 'post-tls@example.org'):
        rcv = received_field(m.data)
        like(rcv, rb'^Received: from after\.example ', 'reset: Received names the EHLO given inside TLS')
        unlike(rcv, rb'before\.example', 'reset: the pre-TLS EHLO name is forgotten')
        like(rcv, rb'with ESMTPS ', 'reset: Received says ESMTPS')
    is_(len(find_msg(up, 'pre-tls@example.org')), 0, 'reset: the pre-TLS transaction was not relayed')

    # RFC 3207 4 / RFC 2920: a pipelined group may end with STARTTLS; what
    # came before it is answered, nothing is dropped
    ndisc = mx.log().count('pipelined after STARTTLS')
    c = TlsClient(mx.ports[0])
    c.greeting()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.send(b'EHLO group.example\r\nNOOP\r\nSTARTTLS\r\n')
    reply_is(c.reply(), 250, None, 'pipelined group: EHLO answered')
    reply_is(c.reply(), 250, '2.0.0', 'pipelined group: NOOP answered')
    r = c.reply()
    reply_is(r, 220, '2.0.0', 'pipelined group: STARTTLS (last in the group) answered 220')
    err = None
    try:
        c.wrap(ctx, MX)
    except (ssl.SSLError, OSError) as ex:
        err = ex
    ok(err is None, 'pipelined group: handshake (%s)' % err)
    if err is None:
        reply_is(c.ehlo('group.example'), 250, None, 'pipelined group: EHLO inside TLS')
        c.quit()
    c.close()
    is_(mx.log().count('pipelined after STARTTLS'), ndisc,
        'pipelined group: nothing discarded when STARTTLS ends the group')

    # STARTTLS with an argument; on a listener without TLS
    c = TlsClient(mx.ports[0])
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('STARTTLS now'), 501, '5.5.4', 'STARTTLS with an argument: 501 5.5.4')
    c.quit()
    c = TlsClient(mx.ports[3])
    c.greeting()
    e = c.ehlo()
    ok('STARTTLS' not in caps(e), 'tls = none listener: no STARTTLS advertised')
    reply_is(c.cmd('STARTTLS'), 502, '5.5.1', 'tls = none listener: STARTTLS 502')
    res = c.transaction('plain@example.org', ['bob@example.com'], body(b'plain'))
    reply_is(res['dot'], 250, None, 'tls = none listener: plaintext message accepted')
    c.quit()
    ok(wait_for(lambda: find_msg(up, 'plain@example.org'), 10), 'plaintext message relayed')
    for m in find_msg(up, 'plain@example.org'):
        rcv = received_field(m.data)
        like(rcv, rb'with ESMTP id', 'plaintext: Received says ESMTP')
        unlike(rcv, rb'ESMTPS|\(using ', 'plaintext: no TLS claimed in Received')


def test_required(mx, up, ctx):
    c = TlsClient(mx.ports[2])
    reply_is(c.greeting(), 220, None, 'required: plaintext greeting')
    e = c.ehlo('req.example')
    ok('STARTTLS' in caps(e), 'required: STARTTLS advertised')
    reply_is(c.cmd('MAIL FROM:<req-plain@example.org>'), 530, '5.7.0', 'required: plaintext MAIL: 530 5.7.0')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 530, '5.7.0', 'required: plaintext RCPT: 530 5.7.0 (RFC 3207 4)')
    reply_is(c.cmd('HELO req.example'), 530, '5.7.0', 'required: plaintext HELO: 530 5.7.0')
    reply_is(c.cmd('RSET'), 530, '5.7.0', 'required: plaintext RSET: 530 5.7.0')
    reply_is(c.cmd('NOOP'), 250, None, 'required: NOOP is fine before TLS')
    r, err = c.starttls(ctx, MX)
    ok(r.code == 220 and err is None, 'required: STARTTLS + handshake (%s %s)' % (r, err))
    if err is None:
        reply_is(c.ehlo('req.example'), 250, None, 'required: EHLO inside TLS 250')
        res = c.transaction('req-tls@example.org', ['bob@example.com'], body(b'req'))
        reply_is(res['mail'], 250, None, 'required: MAIL inside TLS 250')
        reply_is(res['dot'], 250, None, 'required: message accepted inside TLS')
        c.quit()
    c.close()
    ok(wait_for(lambda: find_msg(up, 'req-tls@example.org'), 10), 'required: TLS message relayed')
    is_(len(find_msg(up, 'req-plain@example.org')), 0, 'required: nothing of the plaintext attempt relayed')
    ok(b'req-plain@example.org' not in up.all_bytes(), 'required: the refused MAIL never reached the upstream')


def test_implicit(mx, up, ctx):
    c = TlsClient(mx.ports[1], implicit=ctx, server_hostname=MX)
    reply_is(c.greeting(), 220, None, 'implicit: greeting inside TLS')
    is_(c.tls_version() in ('TLSv1.2', 'TLSv1.3'), True, 'implicit: TLS %s' % c.tls_version())
    e = c.ehlo('imp.example')
    ok('STARTTLS' not in caps(e), 'implicit: no STARTTLS advertised')
    reply_is(c.cmd('STARTTLS'), 503, '5.5.1', 'implicit: STARTTLS inside implicit TLS 503')
    res = c.transaction('implicit@example.org', ['bob@example.com'], body(b'imp'))
    reply_is(res['dot'], 250, None, 'implicit: message accepted')
    reply_is(c.cmd('QUIT'), 221, None, 'implicit: QUIT 221')
    c.close()
    ok(wait_for(lambda: find_msg(up, 'implicit@example.org'), 10), 'implicit: relayed')
    for m in find_msg(up, 'implicit@example.org'):
        rcv = received_field(m.data)
        like(rcv, rb'with ESMTPS ', 'implicit: Received says ESMTPS')
        like(rcv, rb'\(using TLSv1\.3 TLS_[A-Z0-9_]+\)', 'implicit: Received names TLSv1.3 and its cipher')

    # a plaintext client on the implicit port never gets a plaintext greeting
    c = SmtpClient(mx.ports[1])
    c.send(b'EHLO plain.example\r\n')
    closed = c.expect_close(5)
    ok(closed, 'implicit: plaintext client is disconnected')
    ok(b'220' not in (c.tail or b''), 'implicit: no plaintext 220 to a plaintext client')
    c.close()


def test_versions(mx, up, certs):
    avail, why = tls11_available(certs)
    for name, port, starttls in (('starttls listener', mx.ports[0], True),
                                 ('implicit listener', mx.ports[1], False)):
        if not avail:
            skip('%s: TLS 1.1-only client refused' % name, why)
            skip('%s: frontmx logged the failed handshake' % name, why)
        else:
            n_before = mx.log().count('smtp tls error=')
            err = None
            try:
                if starttls:
                    c = TlsClient(port)
                    c.greeting()
                    c.ehlo()
                    r, err = c.starttls(tls11_ctx())
                    if r.code != 220:
                        err = 'no 220: %r' % r
                else:
                    c = TlsClient(port, implicit=tls11_ctx())
            except (ssl.SSLError, OSError) as e:
                err = e
            ok(err is not None, '%s: TLS 1.1-only client refused (%s)' % (name, err))
            ok(err is not None and re.search(r'(?i)protocol.version', str(err)),
               '%s: the client is told why: protocol_version alert (%s)' % (name, err))
            ok(wait_for(lambda: mx.log().count('smtp tls error=') > n_before, 3),
               '%s: frontmx logged the failed handshake' % name)
            last = [l for l in mx.log().splitlines() if 'smtp tls error=' in l][-1:]
            like(last[0] if last else '', r'(?i)unsupported protocol|version',
                 '%s: the log line gives the OpenSSL reason' % name)
            try:
                c.close()
            except Exception:     # noqa: B902
                pass
        # positive control: TLS 1.2 is accepted, with a forward-secret AEAD suite
        ctx12 = client_ctx(certs.cert, max_version=ssl.TLSVersion.TLSv1_2)
        try:
            if starttls:
                c = TlsClient(port)
                c.greeting()
                c.ehlo()
                r, err = c.starttls(ctx12, MX)
            else:
                c = TlsClient(port, implicit=ctx12, server_hostname=MX)
                err = None
        except (ssl.SSLError, OSError) as e:
            err = e
        ok(err is None and c.tls_version() == 'TLSv1.2', '%s: TLS 1.2 client accepted (%s)' % (name, err))
        if err is None:
            cname = c.cipher()[0]
            like(cname, r'^ECDHE-.*(GCM|CHACHA20)', '%s: TLS 1.2 suite is ECDHE + AEAD (%s)' % (name, cname))
            if not starttls:
                c.greeting()
            c.ehlo('tls12.example')
            res = c.transaction('tls12-%d@example.org' % port, ['bob@example.com'], body(b'tls12'))
            reply_is(res['dot'], 250, None, '%s: message over TLS 1.2 accepted' % name)
            c.close()
            if wait_for(lambda: find_msg(up, 'tls12-%d@example.org' % port), 10):
                rcv = received_field(find_msg(up, 'tls12-%d@example.org' % port)[0].data)
                like(rcv, rb'\(using TLSv1\.2 ECDHE-[A-Z0-9-]+\)', '%s: Received says TLSv1.2 + cipher' % name)
            else:
                ok(False, '%s: TLS 1.2 message relayed' % name)


def test_config(certs):
    spool = tmpdir('fmx-spool-')

    def conf(listen):
        d = base_conf(free_port(), '127.0.0.1:%d' % free_port(), spool)
        d['listen'] = [dict({'address': '127.0.0.1:%d' % free_port()}, **listen)]
        return render_conf(d)

    rc, out, _ = run_frontmx_t(conf({'tls': 'starttls', 'cert': certs.cert, 'key': certs.key}))
    is_(rc, 0, 'frontmx -t: good cert and key pass')
    if rc:
        diag(out)
    missing = '/nonexistent/fmx-%d/cert.pem' % os.getpid()
    rc, out, _ = run_frontmx_t(conf({'tls': 'starttls', 'cert': missing, 'key': certs.key}))
    ok(rc not in (0, None) and rc < 128, 'frontmx -t: missing cert file: non-zero exit (%s)' % rc)
    like(out, re.escape(missing), 'frontmx -t: the message names the missing cert file')
    missing_key = '/nonexistent/fmx-%d/key.pem' % os.getpid()
    rc, out, _ = run_frontmx_t(conf({'tls': 'implicit', 'cert': certs.cert, 'key': missing_key}))
    ok(rc not in (0, None) and rc < 128, 'frontmx -t: missing key file: non-zero exit (%s)' % rc)
    like(out, re.escape(missing_key), 'frontmx -t: the message names the missing key file')
    other = make_cert(tmpdir('fmx-cert2-'), 'other.test.example')
    rc, out, _ = run_frontmx_t(conf({'tls': 'required', 'cert': certs.cert, 'key': other.key}))
    ok(rc not in (0, None) and rc < 128, 'frontmx -t: key not matching the cert: non-zero exit (%s)' % rc)
    like(out, re.escape(other.key), 'frontmx -t: the mismatch message names the key file')
    rc, out, _ = run_frontmx_t(conf({'tls': 'starttls'}))
    ok(rc not in (0, None) and rc < 128, 'frontmx -t: tls without cert/key: non-zero exit (%s)' % rc)
    like(out, r'cert', 'frontmx -t: message says the cert is missing')
    ok(not any(s in out for s in ('AddressSanitizer', 'LeakSanitizer', 'runtime error:')),
       'frontmx -t: no sanitizer report')


def main():
    d = tmpdir('fmx-tls-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)            # verifies chain and name
    up = Upstream()
    mx = frontmx_listeners(up, [listener('starttls', certs), listener('implicit', certs),
                                listener('required', certs), listener('none')], name='frontmx')
    test_sclient(mx, up, certs)
    test_swaks(mx, up)
    test_injection(mx, up, ctx)
    test_state_reset(mx, up, ctx)
    test_required(mx, up, ctx)
    test_implicit(mx, up, ctx)
    test_versions(mx, up, certs)
    # the messages the tests above had accepted (250 to the dot), each once
    sent = ['sclient@example.org', 'swaks-tls@example.org', 'swaks-tlsc@example.org',
            'good@example.org', 'post-tls@example.org', 'plain@example.org', 'req-tls@example.org',
            'implicit@example.org'] + ['tls12-%d@example.org' % p for p in mx.ports[:2]]
    check_stream(up, len(sent), 'upstream')
    is_(sorted(m.mail_from for m in up.messages), sorted(sent), 'upstream: the accepted messages, once each')
    ok(mx.alive(), 'frontmx still running')
    mx.finish()
    test_config(certs)


run(main, timeout=60)
