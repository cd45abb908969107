#!/usr/bin/python3
# Interop (issue 11, section 3): Debian's opendkim 2.11 as an external
# milter in frontmx's filter chain (t/lib/milters.py starts it on loopback,
# Mode sv, a fresh opendkim-genkey key for example.net, keys looked up
# through libunbound forwarding to t/lib/fakedns.py).
#
# Signing (client 127.0.0.1, in opendkim's InternalHosts): the relayed
# message carries opendkim's DKIM-Signature, which dkimpy verifies with
# the key the test DNS serves.  OpenDKIM folds that value with a bare
# "\n\t" (SMFIR_INSHEADER at end of body): frontmx must re-fold it with
# CRLF or the upstream sees bare LFs and the signature breaks; the upstream
# parser records any bare CR or LF as a violation.  Also: a body of several
# 64 KiB milter chunks with dot-stuffed lines, two messages in one session
# (ABORT between them), a message after RSET.
# Verifying (client 127.0.0.2, external): a dkimpy-signed message gets
# opendkim's Authentication-Results dkim=pass, a tampered one dkim=fail,
# an unsigned one dkim=none; nothing is signed for an external client.
# opendkim and frontmx are alive at the end; frontmx exits 0, ASan-clean.
import os
import re
import sys
import threading
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import fields_named  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
import dkim_tool as dt  # noqa: E402
from milters import (OpenDKIM, milter_filter, message, deliver, find_message,  # noqa: E402
                     start_all, unfold, ar_field, bare_cr_lf)

INSIDE = '127.0.0.1'      # opendkim's InternalHosts: signed
OUTSIDE = '127.0.0.2'     # verified only
AUTHSERV = 'dkim.interop.example'


def opendkim_ar(data):
    """opendkim's Authentication-Results field (unfolded), or None."""
    return ar_field(fields_named(data, 'Authentication-Results'), AUTHSERV)


def main():
    dk = OpenDKIM(mode='sv', domain='example.net', selector='sel', authserv_id=AUTHSERV)
    rsa = dt.key_record('rsa2048')
    # Records over 255 octets are two character-strings, as in real zones.
    dns = FakeDNS({dk.key_name: [('TXT', [dk.record[:200], dk.record[200:]])],
                   'rsa._domainkey.example.org': [('TXT', [rsa[:200], rsa[200:]])]}).start()
    register_cleanup(dns.stop)
    dk.dns = dns.address
    if not start_all(dk):
        return
    keys = {dk.key_name: dk.record, 'rsa._domainkey.example.org': rsa}

    up = Upstream()
    mx = Frontmx(up, conf={'filters': [milter_filter('odkim', dk)]})
    relayed = [0]

    def expect_relayed(name, r, msgid):
        if not reply_is(r['dot'], 250, None, '%s: 250 at end of data' % name):
            diag(mx.log()[-3000:])
            dk.diag_log()
            return None
        relayed[0] += 1
        up.wait_messages(relayed[0])
        m = find_message(up, msgid)
        ok(m is not None, '%s: relayed' % name)
        return m

    def expect_signed(name, m, selector='sel'):
        if m is None:
            ok(False, '%s: no message to check' % name)
            return
        sigs = fields_named(m.data, 'DKIM-Signature')
        is_(len(sigs), 1, '%s: one DKIM-Signature field' % name)
        if not sigs:
            return
        sig = sigs[0]
        like(unfold(sig), r'\bd=example\.net;.*\bs=%s;' % selector,
             '%s: d=example.net s=%s' % (name, selector))
        # OpenDKIM folds long values; the fold arrives as CRLF + WSP.
        ok(re.search(rb'\r\n[ \t]', sig) is not None,
           '%s: the signature is folded, with CRLF before each continuation' % name)
        ok(not bare_cr_lf(m.data),
           '%s: no bare CR or LF anywhere in the relayed message' % name)
        res = dt.verify_all(m.data, keys)
        is_([r[:3] for r in res], [('pass', 'example.net', selector)],
            '%s: dkimpy verifies the signature as relayed' % name)

    # ---- signing: a trusted (internal) client
    msg, msgid = message(frm='Alice <alice@example.net>', subject='sign me')
    m = expect_relayed('sign', deliver(mx.port, msg, sender='alice@example.net', source=INSIDE),
                       msgid)
    expect_signed('sign', m)
    if m:
        ok(m.data.endswith(msg.split(b'\r\n\r\n', 1)[1]), 'sign: body relayed unchanged')
    is_(up.violations, [], 'sign: the upstream saw no stream violation (bare LF, NUL, long line)')

    # A body of several 64 KiB milter chunks, with dot-stuffed lines: what
    # opendkim hashed (bh=) is what went upstream.
    line = b'.%s\r\n' % (b'x' * 70)
    big = b''.join(b'%06d' % i + line for i in range(3000))        # ~230 KB
    msg, msgid = message(frm='alice@example.net', subject='big', body=big)
    m = expect_relayed('sign, 230 KB body in several chunks',
                       deliver(mx.port, msg, sender='alice@example.net', source=INSIDE), msgid)
    expect_signed('sign, 230 KB body', m)

    # Two messages in one session (the milter gets ABORT between them),
    # and a transaction abandoned with RSET before a third.
    c = SmtpClient(mx.port, source=INSIDE, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    ids = []
    for i in range(2):
        msg, msgid = message(frm='alice@example.net', subject='session %d' % i)
        ids.append(msgid)
        r = c.transaction('alice@example.net', ['bob@example.com'], msg)
        reply_is(r['dot'], 250, None, 'one session, message %d: 250' % (i + 1))
    reply_is(c.cmd('MAIL FROM:<alice@example.net>'), 250, None, 'one session: MAIL before RSET')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'one session: RCPT before RSET')
    reply_is(c.cmd('RSET'), 250, None, 'one session: RSET')
    msg, msgid = message(frm='alice@example.net', subject='after rset')
    ids.append(msgid)
    r = c.transaction('alice@example.net', ['bob@example.com'], msg)
    reply_is(r['dot'], 250, None, 'one session, message after RSET: 250')
    c.quit()
    relayed[0] += 3
    up.wait_messages(relayed[0])
    for i, msgid in enumerate(ids):
        expect_signed('one session, message %d' % (i + 1), find_message(up, msgid))

    # ---- verifying: an external client, messages signed by dkimpy
    msg, msgid = message(subject='dkimpy signed')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
    m = expect_relayed('verify', deliver(mx.port, signed, source=OUTSIDE), msgid)
    ar = opendkim_ar(m.data) if m else None
    like(ar, r'dkim=pass \(2048-bit key[^)]*\) header\.d=example\.org .*header\.s=rsa',
         "verify: opendkim's Authentication-Results says dkim=pass")
    if m:
        ar_fields = [f for f in fields_named(m.data, 'Authentication-Results') if AUTHSERV.encode() in f]
        ok(ar_fields and not bare_cr_lf(ar_fields[0]),
           'verify: its folded Authentication-Results arrives with CRLF folds')
        is_(len(fields_named(m.data, 'DKIM-Signature')), 1,
            'verify: external client, nothing signed (only the original signature)')
        is_([r[0] for r in dt.verify_all(m.data, keys)], ['pass'],
            'verify: the original signature still verifies as relayed')

    msg, msgid = message(subject='tampered')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa').replace(b'Hello Bob', b'Hello Eve')
    m = expect_relayed('tampered', deliver(mx.port, signed, source=OUTSIDE), msgid)
    like(opendkim_ar(m.data) if m else None, r'dkim=fail .*header\.d=example\.org',
         "tampered: opendkim's Authentication-Results says dkim=fail")

    msg, msgid = message(frm='alice@example.net', subject='unsigned, external')
    m = expect_relayed('unsigned', deliver(mx.port, msg, sender='alice@example.net',
                                           source=OUTSIDE), msgid)
    like(opendkim_ar(m.data) if m else None, r'dkim=none',
         'unsigned: dkim=none (AlwaysAddARHeader)')
    if m:
        is_(fields_named(m.data, 'DKIM-Signature'), [], 'unsigned, external client: not signed')

    is_(up.violations, [], 'the upstream saw no stream violation in any message')
    if not ok(dk.alive(), 'opendkim is still running'):
        diag('opendkim exit status %r' % (dk.proc.returncode,))
        dk.diag_log()

    # ---- eight sessions at once: one milter connection each.  A signing
    # opendkim of its own, without ResolverConfiguration: with it (the
    # instance above), concurrent sessions crash opendkim 2.11 itself
    # (SIGSEGV, "fatal flex scanner internal error--end of buffer missed":
    # libunbound's non-reentrant config lexer run from several milter
    # threads, cf. trusteddomainproject/OpenDKIM#56), found by this test.
    dp = OpenDKIM(mode='s', domain='example.net', selector='par')
    if not start_all(dp):
        return
    keys[dp.key_name] = dp.record
    mx.finish()
    mx = Frontmx(up, conf={'filters': [milter_filter('odkim-par', dp)]})
    results = [None] * 8
    msgs = [message(frm='alice@example.net', subject='parallel %d' % i) for i in range(8)]

    def one(i):
        results[i] = deliver(mx.port, msgs[i][0], sender='alice@example.net', source=INSIDE)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if not is_([r['dot'].code if r and r['dot'] else None for r in results], [250] * 8,
               'eight parallel sessions: each 250'):
        diag('replies: %r' % (results,))
        diag(mx.log()[-4000:])
    relayed[0] += 8
    up.wait_messages(relayed[0])
    is_([[x[:3] for x in dt.verify_all(find_message(up, i).data, keys)]
         if find_message(up, i) else None for _, i in msgs], [[('pass', 'example.net', 'par')]] * 8,
        'eight parallel sessions: each signed, each signature verifies as relayed')

    if not ok(dp.alive(), 'parallel: opendkim is still running'):
        diag('opendkim exit status %r' % (dp.proc.returncode,))
        dp.diag_log()

    # ---- simple/simple on a unix socket: header bytes as the milter saw
    # them (HDR_LEADSPC: OpenDKIM asks for the value with its leading
    # space; a multi-line field joined with LF) are what was relayed, or
    # the simple header hash breaks.  The body arrives by BDAT.
    ds = OpenDKIM(mode='sv', domain='example.net', selector='simple', canon='simple/simple',
                  unix=True, authserv_id=AUTHSERV, dns=dns.address,
                  extra=[('SignHeaders', 'From,To,Subject,Date,Message-ID,X-Tab,X-Folded,X-Bare')])
    dns.set(ds.key_name, [('TXT', [ds.record[:200], ds.record[200:]])])
    keys[ds.key_name] = ds.record
    if not start_all(ds):
        return
    mx.finish()
    mx = Frontmx(up, conf={'filters': [milter_filter('odkim-simple', ds)]})
    odd = (b'X-Tab:\tafter a tab  \r\nX-Folded: first\r\n\tsecond\r\n   third \r\n'
           b'X-Bare:no space\r\n')
    msg, msgid = message(frm='alice@example.net', subject='simple  canon', extra=odd)
    c = SmtpClient(mx.port, source=INSIDE, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    reply_is(c.cmd('MAIL FROM:<alice@example.net>'), 250, None, 'simple, BDAT: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'simple, BDAT: RCPT')
    half = len(msg) // 2
    c.send(b'BDAT %d\r\n' % half + msg[:half])
    reply_is(c.reply(), 250, None, 'simple, BDAT: first chunk')
    c.send(b'BDAT %d LAST\r\n' % (len(msg) - half) + msg[half:])
    r = c.reply()
    c.quit()
    m = expect_relayed('simple/simple, BDAT', {'dot': r}, msgid)
    expect_signed('simple/simple, BDAT', m, 'simple')
    sig = fields_named(m.data, 'DKIM-Signature') if m else []
    like(unfold(sig[0]) if sig else '', r'\bc=simple/simple;.*\bh=[^;]*X-Folded',
         'simple/simple: the odd header fields are signed')
    if m:
        ok(odd in m.data, 'simple/simple: the odd header fields relayed byte for byte')

    msg, msgid = message(subject='dkimpy simple', extra=odd)
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa', canon='simple/simple',
                     headers=['from', 'to', 'subject', 'x-tab', 'x-folded', 'x-bare'])
    m = expect_relayed('verify simple/simple', deliver(mx.port, signed, source=OUTSIDE), msgid)
    like(opendkim_ar(m.data) if m else None, r'dkim=pass .*header\.d=example\.org',
         'verify simple/simple: opendkim passes a dkimpy simple/simple signature on odd headers')

    # ---- opendkim dies in the middle of a transaction
    before = up.transactions
    c = SmtpClient(mx.port, source=INSIDE, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    reply_is(c.cmd('MAIL FROM:<alice@example.net>'), 250, None, 'milter killed: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'milter killed: RCPT')
    ds.stop()
    msg, msgid = message(frm='alice@example.net', subject='milter killed')
    r = c.data(msg)
    final = r[1] if r[0].code == 354 else r[0]
    ok(final is not None and final.code is not None and 400 <= final.code < 500,
       'milter killed mid-transaction: on_error tempfail, 4xx (%r)' % (final,))
    c.quit()
    is_(up.transactions, before, 'milter killed mid-transaction: nothing relayed unsigned')
    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=240)
