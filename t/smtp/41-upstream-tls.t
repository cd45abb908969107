#!/usr/bin/python3
# Upstream TLS: frontmx as an SMTP client doing STARTTLS towards the MTA.
#  - a real Postfix with a certificate for upstream.test: tls = "verify"
#    delivers over TLS (Postfix logs it, its Received: says ESMTPS); a wrong
#    name, a wrong CA, or the default name (the IP) -> 451 4.4.1, nothing
#    delivered, frontmx logs the verification failure
#  - a capture upstream without STARTTLS: "required"/"verify" -> 451,
#    nothing relayed; "starttls" (opportunistic) -> relayed in clear;
#    tls_if_client_tls: a message received over TLS is never relayed in clear
#  - response injection: a scripted upstream sends "220 ...\r\n250 injected\r\n"
#    in one write after STARTTLS; the extra bytes must be discarded and the
#    dialogue must stay in step
import os
import re
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403

BODY = (b'From: alice@example.org\r\nTo: box@example.com\r\nSubject: %s\r\n'
        b'Message-ID: <%s@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
        b'body line\r\n.dot line\r\n')


def body(tag):
    return BODY % (tag, tag)


def send(port, sender, tag, rcpt='box@example.com', tls_ctx=None, helo='client.example'):
    """One session; returns the transaction dict (+ 'ehlo')."""
    c = TlsClient(port)
    c.greeting()
    c.ehlo(helo)
    if tls_ctx is not None:
        r, err = c.starttls(tls_ctx)
        if err is not None:
            ok(False, '%s: client STARTTLS (%s %s)' % (tag.decode(), r, err))
            return {'mail': None, 'rcpt': [], 'data': None, 'dot': None}
        c.ehlo(helo)
    res = c.transaction(sender, [rcpt], body(tag))
    c.quit()
    return res


def by_subject(pf):
    out = {}
    for p in pf.delivered():
        with open(p, 'rb') as fh:
            data = fh.read()
        m = re.search(rb'^Subject: (.*)$', data, re.M)
        out[m.group(1).decode() if m else p] = data
    return out


def test_postfix(d, pfcerts):
    pf = tls_postfix(pfcerts)
    like(pf.greeting().raw, rb'^220 \S+ ESMTP Postfix', 'a Postfix answers on 127.0.0.1:%d' % pf.port)
    other = make_cert(d, 'upstream.test.other')     # a different, untrusted key

    # 1. verify, right CA and name: delivered over TLS
    mx = Frontmx(pf.port, name='verify-ok', conf={'upstream': {
        'tls': 'verify', 'tls_ca': pfcerts.cert, 'tls_name': 'upstream.test'}})
    res = send(mx.port, 'alice@example.org', b'verified')
    reply_is(res['mail'], 250, '2.1.0', "verify: MAIL gets Postfix's 250 over TLS")
    reply_is(res['dot'], 250, '2.0.0', 'verify: message accepted by Postfix')
    like(res['dot'].text if res['dot'] else '', r'queued as [0-9A-F]+', 'verify: Postfix queue id relayed')
    like(mx.log(), r'upstream tls="TLSv1\.[23] ', 'verify: frontmx logged the upstream TLS session')

    # 2. wrong name
    mx2 = Frontmx(pf.port, name='verify-wrong-name', conf={'upstream': {
        'tls': 'verify', 'tls_ca': pfcerts.cert, 'tls_name': 'wrong.test'}})
    res = send(mx2.port, 'alice@example.org', b'wrongname')
    reply_is(res['mail'], 451, '4.4.1', 'wrong tls_name: MAIL 451 4.4.1')
    is_(res['dot'], None, 'wrong tls_name: no DATA')
    like(mx2.log(), r'(?i)upstream error=.*certificate verify failed',
         'wrong tls_name: frontmx log says certificate verify failed')

    # 3. right name, CA that did not sign the server's certificate
    mx3 = Frontmx(pf.port, name='verify-wrong-ca', conf={'upstream': {
        'tls': 'verify', 'tls_ca': other.cert, 'tls_name': 'upstream.test'}})
    res = send(mx3.port, 'alice@example.org', b'wrongca')
    reply_is(res['mail'], 451, '4.4.1', 'untrusted CA: MAIL 451 4.4.1')
    like(mx3.log(), r'(?i)upstream error=.*certificate verify failed',
         'untrusted CA: frontmx log says certificate verify failed')

    # 4. no tls_name: the host (127.0.0.1) is verified, and the certificate
    #    names upstream.test only
    mx4 = Frontmx(pf.port, name='verify-default-name', conf={'upstream': {
        'tls': 'verify', 'tls_ca': pfcerts.cert}})
    res = send(mx4.port, 'alice@example.org', b'defaultname')
    reply_is(res['mail'], 451, '4.4.1', 'tls_name unset: the IP does not match the certificate: 451 4.4.1')

    # 5. opportunistic towards a STARTTLS Postfix: encrypted too
    mx5 = Frontmx(pf.port, name='opportunistic-postfix')
    res = send(mx5.port, 'carol@example.org', b'opportunistic')
    reply_is(res['dot'], 250, None, 'opportunistic: delivered to Postfix')
    like(mx5.log(), r'upstream tls="TLSv1\.[23] ', 'opportunistic: STARTTLS used when offered')

    files = pf.wait_mail(2, timeout=15)
    time.sleep(1.0)
    got = by_subject(pf)
    is_(sorted(got), ['opportunistic', 'verified'], 'Postfix delivered exactly the two good messages')
    v = got.get('verified', b'')
    rcv = re.findall(rb'^Received: .*(?:\n[ \t].*)*', v, re.M)
    ok(len(rcv) >= 2, 'verified message: Postfix and frontmx Received fields')
    if rcv:
        pr = rcv[0].replace(b'\n', b' ')
        like(pr, rb'by upstream\.test \(Postfix\)', "first Received is Postfix's")
        like(pr, rb'with ESMTPS id', "Postfix's Received: says 'with ESMTPS'")
        like(pr, rb'\(using TLSv1\.[23] with cipher', "Postfix's Received: names the TLS version")
        diag("Postfix's Received: " + pr.decode(errors='replace'))
    log = pf.maillog()
    like(log, r'(?i)TLS connection established from', 'Postfix logged the TLS connection')
    for s in ('wrongname', 'wrongca', 'defaultname'):
        ok(s not in got, 'nothing delivered for the %s case' % s)
    is_(pf.queue_files(), [], 'nothing left in the Postfix queue')
    for m in (mx, mx2, mx3, mx4, mx5):
        m.finish()
    pf.stop()


def test_capture(d, cert):
    up = Upstream()           # no STARTTLS
    # required: nothing relayed
    mxr = Frontmx(up, name='required', conf={'upstream': {'tls': 'required'}})
    res = send(mxr.port, 'req@example.org', b'required')
    reply_is(res['mail'], 451, '4.4.1', 'tls = required, upstream without STARTTLS: MAIL 451 4.4.1')
    is_(res['dot'], None, 'tls = required: no DATA')
    like(mxr.log(), r'(?i)TLS required but the upstream does not offer STARTTLS',
         'tls = required: frontmx logged why')
    mxv = Frontmx(up, name='verify-nostarttls', conf={'upstream': {
        'tls': 'verify', 'tls_ca': cert.cert, 'tls_name': 'upstream.test'}})
    res = send(mxv.port, 'ver@example.org', b'verify')
    reply_is(res['mail'], 451, '4.4.1', 'tls = verify, upstream without STARTTLS: MAIL 451 4.4.1')
    time.sleep(0.3)
    ok(b'req@example.org' not in up.all_bytes() and b'ver@example.org' not in up.all_bytes(),
       'required/verify: the envelope never reached the plaintext upstream')
    is_(up.transactions, 0, 'required/verify: nothing relayed')

    # opportunistic: relayed in clear
    mxo = Frontmx(up, name='opportunistic', conf={'upstream': {'tls': 'starttls'}})
    res = send(mxo.port, 'opp@example.org', b'opp')
    reply_is(res['dot'], 250, None, 'tls = starttls, upstream without STARTTLS: relayed in clear')
    ok(up.wait_messages(1, 10), 'opportunistic: capture upstream got the message')
    ok(not any(c.upper() == 'STARTTLS' for c in up.commands()), 'no STARTTLS sent to an upstream that does not offer it')

    # tls_if_client_tls
    mxt = frontmx_listeners(up, [listener('starttls', cert)], name='tls-if-client-tls',
                            conf={'upstream': {'tls': 'starttls', 'tls_if_client_tls': True}})
    res = send(mxt.port, 'tlsclient@example.org', b'tlsclient', tls_ctx=client_ctx())
    reply_is(res['mail'], 451, '4.4.1', 'tls_if_client_tls: TLS client, upstream without STARTTLS: 451 4.4.1')
    res = send(mxt.port, 'plainclient@example.org', b'plainclient')
    reply_is(res['dot'], 250, None, 'tls_if_client_tls: plaintext client still relayed in clear')
    ok(up.wait_messages(2, 10), 'tls_if_client_tls: the plaintext message relayed')
    time.sleep(0.3)
    ok(b'tlsclient@example.org' not in up.all_bytes(),
       'tls_if_client_tls: nothing of the TLS-received message went out in clear')
    check_stream(up, 2, 'capture upstream')
    for m in (mxr, mxv, mxo, mxt):
        m.finish()


def test_injection(d, cert):
    # 1. "220 ...\r\n250 injected\r\n" in one write: discard, stay in step
    sup = TlsScriptUpstream(cert, inject=b'250 injected\r\n')
    mx = Frontmx(sup.port, name='injection', conf={'upstream': {
        'tls': 'verify', 'tls_ca': cert.cert, 'tls_name': 'upstream.test'}})
    c = TlsClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    res = c.transaction('inj@example.org', ['bob@example.com'], body(b'inj'))
    m = res['mail']
    reply_is(m, 250, '2.1.0', 'injection: MAIL 250 2.1.0')
    like(m.text if m else '', r'sender ok \(script\)', "injection: the MAIL reply is the upstream's MAIL reply")
    r0 = res['rcpt'][0] if res['rcpt'] else None
    reply_is(r0, 250, '2.1.5', 'injection: RCPT 250 2.1.5')
    like(r0.text if r0 else '', r'recipient ok \(script\)', "injection: the RCPT reply is the upstream's RCPT reply")
    reply_is(res['dot'], 250, '2.0.0', 'injection: message accepted')
    like(res['dot'].text if res['dot'] else '', r'queued as SCRIPT0001', "injection: final reply is the upstream's")
    reply_is(c.cmd('RSET'), 250, None, 'injection: RSET after the message')
    res2 = c.transaction('inj2@example.org', ['bob@example.com'], body(b'inj2'))
    like(res2['dot'].text if res2['dot'] else '', r'queued as SCRIPT0002', 'injection: second message in step')
    c.quit()
    ok(sup.wait_messages(2, 10), 'injection: upstream got both messages')
    ok(all(msg['tls'] for msg in sup.messages), 'injection: both relayed inside TLS')
    is_(sup.errors, [], 'injection: no protocol errors seen by the upstream (EHLO before MAIL inside TLS etc.)')
    # every connection: after the TLS handshake the first command is EHLO
    by_conn = {}
    for idx, phase, cmd in sup.events:
        by_conn.setdefault(idx, []).append((phase, cmd))
    good = True
    for idx, ev in by_conn.items():
        tls_cmds = [cmd for phase, cmd in ev if phase == 'tls']
        plain = [cmd.split(' ')[0].upper() for phase, cmd in ev if phase == 'plain']
        if plain != ['EHLO', 'STARTTLS'] or (tls_cmds and not tls_cmds[0].upper().startswith('EHLO ')):
            good = False
            diag('conn %d: %r' % (idx, ev))
    ok(good and by_conn, 'injection: each connection: only EHLO, STARTTLS in clear, then EHLO first inside TLS')
    like(mx.log(), r'upstream sent 14 bytes after its STARTTLS 220; discarded',
         'injection: frontmx logged the 14 discarded bytes')
    ok(mx.alive(), 'injection: frontmx alive')
    # frontmx QUITs the upstream when the session ends: after the 221 its
    # close_notify, then the socket (not a bare close, which Exim logs)
    ok(wait_for(lambda: len(sup.closes) >= 1, 10), 'injection: the upstream saw frontmx close TLS')
    is_(sorted(set(how for _, how in sup.closes)), ['close_notify'],
        'injection: close_notify after QUIT\'s 221, every connection (%r)' % (sup.closes,))
    mx.finish()

    # 2. the extra bytes come in a later segment, before the handshake: they
    #    land in the TLS engine; the handshake fails and nothing is relayed
    sup2 = TlsScriptUpstream(cert, inject_late=b'250 injected late\r\n')
    mx2 = Frontmx(sup2.port, name='late-injection', conf={'upstream': {
        'tls': 'verify', 'tls_ca': cert.cert, 'tls_name': 'upstream.test'}})
    c = TlsClient(mx2.port)
    c.greeting()
    c.ehlo('client.example')
    r = c.cmd('MAIL FROM:<late@example.org>')
    reply_is(r, 451, '4.4.1', 'late injection: handshake fails, MAIL 451 4.4.1')
    reply_is(c.cmd('NOOP'), 250, None, 'late injection: session still usable')
    like(mx2.log(), r'upstream error=.*state=tls-handshake', 'late injection: frontmx logged the failed upstream handshake')
    c.quit()
    time.sleep(0.3)
    is_(len(sup2.messages), 0, 'late injection: nothing relayed')
    ok(not any(cmd.upper().startswith('MAIL') for _, _, cmd in sup2.events),
       'late injection: no MAIL reached the upstream')
    mx2.finish()


def main():
    d = tmpdir('fmx-uptls-')
    pfcerts = make_cert(d, 'upstream.test')
    test_capture(d, pfcerts)
    test_injection(d, pfcerts)
    test_postfix(d, pfcerts)


run(main, timeout=60)
