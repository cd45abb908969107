#!/usr/bin/python3
# DKIM through the running proxy: the built-in dkim filter, keys served
# by a fake DNS server on loopback (t/lib/fakedns.py), a capture upstream.
#
# Verification (client 127.0.0.2, not trusted):
#   dkimpy rsa-sha256 / ed25519-sha256      relayed, dkim=pass header.d= ...
#   OpenDKIM rsa-sha256 / ed25519-sha256    relayed, dkim=pass (interop)
#   opendkim-testmsg (rsa-sha1)             relayed, dkim=fail (RFC 8301)
#   tampered body                           relayed, dkim=fail, tagged
#   tampered, to a domain with fail=reject  550, not relayed
#   key lookup SERVFAIL                     temperror -> tempfail: 451
#   (a lookup that times out: 32-dkim-timeout.t)
#   no key (NXDOMAIN)                       dkim=permerror
#   unsigned                                dkim=none
#   a forged dkim=pass Authentication-Results with our authserv-id is gone
#   large body (several 64 KiB chunks), dot-stuffed lines
# Signing (client 127.0.0.1, trusted; From example.net has an RSA and an
# Ed25519 key): the relayed message carries two DKIM-Signature fields
# that dkimpy and OpenDKIM verify; From example.org is not signed.
# `frontmx check` shows the same, and the daemon exits clean (ASan/LSan).
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402
import dkim_tool as dt  # noqa: E402

AUTHSERV = 'mx.test.example'
RCPT = 'bob@example.com'
STRICT_RCPT = 'carol@strict.example'
OUTSIDE = '127.0.0.2'       # not in the dkim filter's trusted networks
INSIDE = '127.0.0.1'        # trusted: its mail for example.net is signed
DNS_TIMEOUT = 5

_seq = [0]


def message(frm='Alice <alice@example.org>', subject='hello', body=None, extra=b''):
    _seq[0] += 1
    msgid = 'dkim-%d-%d@test' % (os.getpid(), _seq[0])
    if body is None:
        body = (b'Hello Bob,\r\n\r\n  this line has   blanks\t \r\n'
                b'.this line starts with a dot\r\n..and this one with two\r\n\r\n')
    head = ('From: %s\r\nTo: Bob <%s>\r\nSubject: %s\r\n'
            'Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%s>\r\n'
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n'
            % (frm, RCPT, subject, msgid)).encode()
    return head + extra + b'\r\n' + body, msgid


def deliver(mx, body, source=OUTSIDE, rcpt=RCPT, sender='alice@example.org'):
    """One transaction from source; returns the dict of SmtpClient.transaction()."""
    c = SmtpClient(mx.port, source=source)
    c.greeting()
    c.ehlo('client.test')
    r = c.transaction(sender, [rcpt], body)
    try:
        c.quit()
    except OSError:
        pass
    c.close()
    return r


def our_ar(data):
    """Our Authentication-Results field (unfolded), or None."""
    for f in fields_named(data, 'Authentication-Results'):
        v = re.sub(rb'\r\n[ \t]+', b' ', f).decode('latin-1')
        if re.match(r'Authentication-Results:\s*%s\s*;' % re.escape(AUTHSERV), v):
            return v.strip()
    return None


def main():
    recs = {
        'rsa._domainkey.example.org': dt.key_record('rsa2048'),
        'ed._domainkey.example.org': dt.key_record('ed25519'),
        'rsa._domainkey.example.net': dt.key_record('rsa2048'),
        'ed._domainkey.example.net': dt.key_record('ed25519'),
    }
    zone = {name: [('TXT', rec)] for name, rec in recs.items()}
    # A 2048-bit key record is over 255 octets: two character-strings.
    zone['rsa._domainkey.example.org'] = [('TXT', [recs['rsa._domainkey.example.org'][:200],
                                                   recs['rsa._domainkey.example.org'][200:]])]
    zone['broken._domainkey.example.org'] = 'SERVFAIL'
    dns = FakeDNS(zone).start()
    register_cleanup(dns.stop)

    keys = dt.DATA
    up = Upstream()
    mx = Frontmx(up, conf={
        'dns': {'forward': [dns.address]},
        'timeouts': {'dns': DNS_TIMEOUT},
        'relay': {'domains': ['example.com', 'strict.example'], 'networks': ['127.0.0.0/8']},
        'filters': [{'name': 'dkim', 'options': {
            'sign': 'example.net:rsa:%s/rsa2048.pem, example.net:ed:%s/ed25519.pem'
                    % (keys, keys),
            'trusted': '127.0.0.1/32',
        }}],
        'policy': {
            'default': {'dkim': {'fail': 'tag', 'permerror': 'tag', 'temperror': 'tempfail'}},
            'domains': [{'domain': 'strict.example',
                         'dkim': {'fail': 'reject', 'sign_error': 'accept'}}],
        },
    })
    relayed = [0]

    def relayed_msg(msgid):
        for m in up.messages:
            if ('<%s>' % msgid).encode() in m.data:
                return m
        return None

    def expect_relayed(name, r, msgid):
        if not reply_is(r['dot'], 250, None, '%s: 250' % name):
            diag(mx.log()[-2000:])
            return None
        relayed[0] += 1
        up.wait_messages(relayed[0])
        m = relayed_msg(msgid)
        ok(m is not None, '%s: relayed' % name)
        return m

    def expect_ar(name, m, pattern):
        ar = our_ar(m.data) if m else None
        like(ar, pattern, '%s: Authentication-Results %s' % (name, pattern))
        return ar

    # ---- verification: dkimpy
    msg, msgid = message(subject='dkimpy rsa')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
    m = expect_relayed('dkimpy rsa-sha256', deliver(mx, signed), msgid)
    ar = expect_ar('dkimpy rsa-sha256', m,
                   r'dkim=pass header\.d=example\.org header\.s=rsa header\.a=rsa-sha256 '
                   r'header\.b="?[A-Za-z0-9+/]{8}"?')
    if m:
        ok(m.data.endswith(msg.split(b'\r\n\r\n', 1)[1]) and b'..and this one' in m.raw_data,
           'dkimpy rsa-sha256: body relayed unchanged (re-stuffed on the wire)')
        b = re.search(rb'\bb=([A-Za-z0-9+/]{8})', re.sub(rb'\s', b'', signed.split(b'\r\n\r\n')[0]))
        ok(b is not None and ar is not None and b.group(1).decode() in ar,
           'header.b is the first 8 characters of b=')
        unlike(m.data, r'X-Frontmx-Tag', 'dkimpy rsa-sha256: not tagged')

    msg, msgid = message(subject='dkimpy ed25519')
    signed = dt.sign(msg, 'ed25519.pem', 'example.org', 'ed', alg='ed25519-sha256')
    m = expect_relayed('dkimpy ed25519-sha256', deliver(mx, signed), msgid)
    expect_ar('dkimpy ed25519-sha256', m,
              r'dkim=pass header\.d=example\.org header\.s=ed header\.a=ed25519-sha256')

    msg, msgid = message(subject='dkimpy both')
    signed = dt.sign(dt.sign(msg, 'ed25519.pem', 'example.org', 'ed', alg='ed25519-sha256'),
                     'rsa2048.pem', 'example.org', 'rsa')
    m = expect_relayed('dkimpy rsa + ed25519', deliver(mx, signed), msgid)
    ar = expect_ar('dkimpy rsa + ed25519', m, r'dkim=pass header\.d=example\.org header\.s=rsa')
    like(ar, r'dkim=pass header\.d=example\.org header\.s=ed',
         'dkimpy rsa + ed25519: one dkim=pass per signature')

    # ---- tampering and policy
    msg, msgid = message(subject='tampered')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa').replace(b'Hello Bob', b'Hello Eve')
    m = expect_relayed('tampered body, fail = tag', deliver(mx, signed), msgid)
    expect_ar('tampered body', m, r'dkim=fail header\.d=example\.org header\.s=rsa')
    if m:
        like(m.data, r'(?m)^X-Frontmx-Tag: .*dkim', 'tampered body: tagged')

    before = up.transactions
    msg, msgid = message(subject='tampered strict')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa').replace(b'Hello Bob', b'Hello Eve')
    r = deliver(mx, signed, rcpt=STRICT_RCPT)
    ok(r['dot'] is not None and r['dot'].code is not None and 500 <= r['dot'].code < 600,
       'tampered, recipient policy dkim fail = reject: 5xx (%r)' % (r['dot'],))
    msg, msgid = message(subject='good strict')
    m = expect_relayed('valid signature, fail = reject domain',
                       deliver(mx, dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa'),
                               rcpt=STRICT_RCPT), msgid)
    # the next message has arrived: the refused one, answered first, never will
    is_(up.transactions, before + 1, 'tampered, fail = reject: not relayed')

    # ---- DNS failures
    for sel, what in (('broken', 'key lookup SERVFAIL'),):
        before = up.transactions
        msg, msgid = message(subject=what)
        signed = dt.sign(msg, 'rsa2048.pem', 'example.org', sel)
        r = deliver(mx, signed)
        reply_is(r['dot'], 451, None, '%s: temperror -> tempfail: 451' % what)

    msg, msgid = message(subject='no key')
    m = expect_relayed('no key (NXDOMAIN)',
                       deliver(mx, dt.sign(msg, 'rsa2048.pem', 'example.org', 'gone')), msgid)
    is_(up.transactions, before + 1, 'key lookup SERVFAIL: not relayed (the next message was)')
    expect_ar('no key (NXDOMAIN)', m, r'dkim=permerror header\.d=example\.org header\.s=gone')

    msg, msgid = message(subject='unsigned')
    m = expect_relayed('unsigned', deliver(mx, msg), msgid)
    expect_ar('unsigned', m, r'dkim=none')

    # A forged result claiming our authserv-id (CVE-2022-48521 style) is removed.
    msg, msgid = message(subject='forged ar', extra=(
        'Authentication-Results: %s; dkim=pass header.d=example.org\r\n' % AUTHSERV).encode())
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa').replace(b'Hello Bob', b'Hello Eve')
    m = expect_relayed('forged Authentication-Results', deliver(mx, signed), msgid)
    if m:
        ars = [f for f in fields_named(m.data, 'Authentication-Results') if AUTHSERV.encode() in f]
        is_(len(ars), 1, 'forged Authentication-Results: only ours is left')
        expect_ar('forged Authentication-Results', m, r'dkim=fail')
        unlike(m.data, r'dkim=pass', 'forged Authentication-Results: no dkim=pass anywhere')

    # a large body: several 64 KiB chunks through the filter
    big = b''.join(b'line %06d: the quick brown fox  jumps over\tthe lazy dog \r\n' % i
                   for i in range(6000))
    msg, msgid = message(subject='large', body=big)
    m = expect_relayed('350 KB body', deliver(mx, dt.sign(msg, 'ed25519.pem', 'example.org',
                                                          'ed', alg='ed25519-sha256')), msgid)
    expect_ar('350 KB body', m, r'dkim=pass header\.d=example\.org header\.s=ed')

    # ---- interop: OpenDKIM as the signer
    if dt.have_opendkim():
        for alg, key, sel in (('rsa-sha256', 'rsa2048.pem', 'rsa'),
                              ('ed25519-sha256', 'ed25519.pem', 'ed')):
            msg, msgid = message(subject='opendkim %s' % alg)
            signed = dt.opendkim_sign(msg, key, 'example.org', sel, alg=alg)
            m = expect_relayed('OpenDKIM %s' % alg, deliver(mx, signed), msgid)
            expect_ar('OpenDKIM %s' % alg, m,
                      r'dkim=pass header\.d=example\.org header\.s=%s header\.a=%s' % (sel, alg))
    else:
        for alg in ('rsa-sha256', 'ed25519-sha256'):
            ok(False, 'OpenDKIM %s signer: opendkim installed (make deps)' % alg)
    if dt.have_opendkim_testmsg():
        msg, msgid = message(subject='opendkim-testmsg')
        signed = dt.opendkim_testmsg_sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
        m = expect_relayed('opendkim-testmsg (rsa-sha1)', deliver(mx, signed), msgid)
        expect_ar('opendkim-testmsg (rsa-sha1)', m, r'dkim=fail header\.d=example\.org '
                  r'header\.s=rsa header\.a=rsa-sha1')
    else:
        ok(False, 'opendkim-testmsg rsa-sha1 signer: opendkim-tools installed (make deps)')

    # ---- signing
    msg, msgid = message(frm='Alice <alice@example.net>', subject='outbound')
    m = expect_relayed('trusted client, From example.net',
                       deliver(mx, msg, source=INSIDE, sender='alice@example.net'), msgid)
    if m:
        sigs = fields_named(m.data, 'DKIM-Signature')
        is_(len(sigs), 2, 'outbound: two DKIM-Signature fields (RSA and Ed25519)')
        ok(all(b'\r\n' not in s[:-2] and len(s) < 998 for s in sigs),
           'outbound: each DKIM-Signature on one line under 998 octets')
        like(b''.join(sigs), r'a=rsa-sha256;.*d=example\.net;.*s=rsa;', 'outbound: rsa-sha256 d=example.net s=rsa')
        like(b''.join(sigs), r'a=ed25519-sha256;.*d=example\.net;.*s=ed;', 'outbound: ed25519-sha256 s=ed')
        like(b''.join(sigs), r'h=From:[^;]*:from;', 'outbound: From oversigned in h=')
        res = dt.verify_all(m.data, recs)
        is_(sorted((x[0], x[2], x[3]) for x in res),
            [('pass', 'ed', 'ed25519-sha256'), ('pass', 'rsa', 'rsa-sha256')],
            'outbound: dkimpy verifies both signatures of the relayed message')
        if dt.have_opendkim():
            res = dt.opendkim_verify(m.data, recs)
            is_(sorted((x[0], x[2], x[3]) for x in res),
                [('pass', 'ed', 'ed25519-sha256'), ('pass', 'rsa', 'rsa-sha256')],
                'outbound: OpenDKIM verifies both signatures')
        else:
            ok(False, 'outbound: OpenDKIM verifies both signatures: opendkim installed (make deps)')
        ar = our_ar(m.data)
        ok(ar is None or 'dkim=' not in ar, 'outbound: our own mail is signed, not verified')

    msg, msgid = message(frm='Alice <alice@example.net>', subject='outbound big',
                         body=big + b'.\r\n..\r\n')
    m = expect_relayed('trusted client, large body with dot lines',
                       deliver(mx, msg, source=INSIDE, sender='alice@example.net'), msgid)
    if m:
        res = dt.verify_all(m.data, recs)
        ok(len(res) == 2 and all(x[0] == 'pass' for x in res),
           'outbound large body: dkimpy verifies both signatures')

    # A signature the core cannot take (h= lists 150 Cc fields: over 900
    # octets): sign_error, 451 by default; relayed unsigned where the
    # policy maps sign_error = "accept".
    many_cc = b''.join(b'Cc: c%d@example.com\r\n' % i for i in range(150))
    before = up.transactions
    msg, msgid = message(frm='Alice <alice@example.net>', subject='too long', extra=many_cc)
    r = deliver(mx, msg, source=INSIDE, sender='alice@example.net')
    reply_is(r['dot'], 451, '4.7.0', 'signature over the core limit: sign_error -> 451 4.7.0')
    like(mx.log(), r'result=sign_error', 'sign_error logged')
    msg, msgid = message(frm='Alice <alice@example.net>', subject='too long ok', extra=many_cc)
    m = expect_relayed('sign_error = "accept" for strict.example',
                       deliver(mx, msg, source=INSIDE, sender='alice@example.net',
                               rcpt=STRICT_RCPT), msgid)
    is_(up.transactions, before + 1, 'sign_error: not relayed (the next message was)')
    if m:
        is_(len(fields_named(m.data, 'DKIM-Signature')), 0, 'sign_error = "accept": relayed unsigned')

    msg, msgid = message(frm='Alice <alice@example.org>', subject='not ours')
    m = expect_relayed('trusted client, From example.org',
                       deliver(mx, msg, source=INSIDE), msgid)
    if m:
        is_(len(fields_named(m.data, 'DKIM-Signature')), 0,
            'From example.org (no key): not signed')
        expect_ar('From example.org from a trusted client', m, r'dkim=none')

    msg, msgid = message(frm='Alice <alice@example.net>', subject='untrusted')
    m = expect_relayed('untrusted client, From example.net',
                       deliver(mx, msg, source=OUTSIDE, sender='alice@example.net'), msgid)
    if m:
        is_(len(fields_named(m.data, 'DKIM-Signature')), 0, 'untrusted client: not signed')

    # ---- frontmx check: the same filter offline
    msg, msgid = message(subject='check')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
    rc, out, err = frontmx_check(mx.conffile, ip=OUTSIDE, sender='alice@example.org',
                                 rcpts=[RCPT], message=signed, extra=['--dns', dns.address])
    is_(rc, 0, 'frontmx check: exit 0 for a valid signature')
    like(out, r'dkim=pass header\.d=example\.org', 'frontmx check: dkim=pass')
    no_sanitizer(err, 'frontmx check')
    msg, msgid = message(frm='alice@example.net', subject='check sign')
    rc, out, err = frontmx_check(mx.conffile, ip=INSIDE, sender='alice@example.net',
                                 rcpts=[RCPT], message=msg, extra=['--dns', dns.address])
    is_(rc, 0, 'frontmx check --ip 127.0.0.1: exit 0')
    like(out, r'DKIM-Signature: v=1; a=rsa-sha256', 'frontmx check: shows the DKIM-Signature it would add')

    # ---- configuration errors stop `frontmx -t` and name the problem
    base = mx.conf
    keyval = re.search(r'sign = "([^"]*)";', base).group(1)
    for old, new, want in ((keyval, 'example.net:rsa:/nonexistent/dkim.pem', '/nonexistent/dkim.pem'),
                           ('sign = ', 'canon = "simple/simple"; sign = ', 'canon'),
                           ('sign = ', 'max_signatures = 0; sign = ', 'max_signatures'),
                           ('sign = ', 'colour = "blue"; sign = ', 'unknown option')):
        rc, out, path = run_frontmx_t(base.replace(old, new, 1))
        ok(rc not in (0, None) and want in out,
           'frontmx -t: dkim option error refused, naming %s' % want)
        if rc in (0, None) or want not in out:
            diag(out[-1500:])
    rc, out, path = run_frontmx_t(base)
    is_(rc, 0, 'frontmx -t: the test configuration is valid')

    check_stream(up, relayed[0])
    mx.finish()


run(main, timeout=150)
