#!/usr/bin/python3
# Interop (issue 11, section 3): Debian's clamav-milter 1.4 + clamd as an
# external milter (t/lib/milters.py: clamd on a private unix socket with a
# one-line local .ndb signature for the EICAR test string; no freshclam,
# no network).  Two clamav-milters share the clamd: "av" with the default
# reject (SMFIR_REJECT: frontmx's own 550 5.7.1) and "avmsg" with a
# RejectMsg (clamav-milter's own reply via SMFIR_REPLYCODE).
#
#   EICAR in the body / in a base64 attachment: 5xx at end of data, with
#     clamav-milter's reply; the upstream receives no message
#   clean message: relayed with X-Virus-Status: Clean (AddHeader Replace)
#   a client's forged X-Virus-Status: Infected is replaced (CHGHEADER)
#   EICAR then a clean message in one session: the second is relayed
#   a chain of two real milters, clamav-milter then opendkim signing with
#     X-Virus-Status in SignHeaders: opendkim saw clamav-milter's header
#     (it is in h= and the signature verifies as relayed); in the reverse
#     order opendkim signed before the header existed (not in h=)
#   EICAR after 900 KB of text (14 body chunks): still refused
#   policy av = { reject = "quarantine"; } and OnInfected Quarantine
#     (SMFIR_QUARANTINE): 250, one copy in the quarantine Maildir (with
#     the milter's X-Virus-Status edit), nothing relayed; dry_run: relayed
#   the client vanishes (RST) mid-body, and after the dot once clamav-milter
#     has its verdict: nothing relayed, the next session is, all stay up
#   frontmx check with the same entry: exit 0 (the milter's header shown)
#     / exit 2 (550 5.7.1)
#   SIGHUP mid-transaction: the same milter still decides; clamd down:
#     clamav-milter's own 451; clamav-milter down: on_error tempfail 451
# clamav-milter and clamd are alive until stopped; frontmx exits 0,
# ASan-clean.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import fields_named, frontmx_check, no_sanitizer  # noqa: E402
import base64  # noqa: E402
import dkim_tool as dt  # noqa: E402
from milters import (Clamd, ClamavMilter, OpenDKIM, EICAR, EICAR_NAME,  # noqa: E402
                     milter_filter, message, deliver, find_message, start_all, unfold,
                     bare_cr_lf)

REJECT_MSG = 'Virus found: %v'


def attachment(payload):
    """A multipart message body with payload as a base64 attachment."""
    b64 = base64.encodebytes(payload).replace(b'\n', b'\r\n')
    return (b'--frontier\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
            b'--frontier\r\nContent-Type: application/octet-stream\r\n'
            b'Content-Transfer-Encoding: base64\r\n'
            b'Content-Disposition: attachment; filename="eicar.com"\r\n\r\n'
            + b64 + b'--frontier--\r\n')


def main():
    cd = Clamd()
    av = ClamavMilter(cd)
    avmsg = ClamavMilter(cd, reject_msg=REJECT_MSG)
    if not start_all(cd, av, avmsg):
        return

    up = Upstream()

    def infected(mx, name, filt, body, reply_re):
        """EICAR: refused at end of data with reply_re; nothing relayed."""
        before = up.transactions
        msg, msgid = message(subject=name, body=body)
        r = deliver(mx.port, msg)
        if not reply_is(r['dot'], 550, '5.7.1', '%s: 550 5.7.1 at end of data' % name):
            diag(mx.log()[-3000:])
            filt.diag_log()
        like(r['dot'].raw.decode('latin-1') if r['dot'] else '', reply_re,
             '%s: the reply matches %r' % (name, reply_re))
        # the next message arrives; the infected one never will
        msg2, id2 = message(subject=name + ', next')
        reply_is(deliver(mx.port, msg2)['dot'], 250, None, '%s: the next (clean) message 250' % name)
        up.wait_messages(before + 1)
        ok(find_message(up, msgid) is None and find_message(up, id2) is not None,
           '%s: the upstream received the clean one, not the infected one' % name)
        is_(up.transactions, before + 1, '%s: one transaction upstream' % name)

    def clean(mx, name, filt, extra=b''):
        before = up.transactions
        msg, msgid = message(subject=name, extra=extra)
        r = deliver(mx.port, msg)
        if not reply_is(r['dot'], 250, None, '%s: 250' % name):
            diag(mx.log()[-3000:])
            filt.diag_log()
        up.wait_messages(before + 1)
        m = find_message(up, msgid)
        ok(m is not None, '%s: relayed' % name)
        return m

    # ---- default reject (SMFIR_REJECT)
    mx = Frontmx(up, conf={'filters': [milter_filter('av', av)]})
    m = clean(mx, 'clean', av)
    st = fields_named(m.data, 'X-Virus-Status') if m else []
    is_([unfold(f) for f in st], ['X-Virus-Status: Clean'], 'clean: X-Virus-Status: Clean added')
    like(b''.join(fields_named(m.data, 'X-Virus-Scanned')) if m else b'',
         r'X-Virus-Scanned: clamav-milter \d', 'clean: X-Virus-Scanned added')
    if m:
        ok(not bare_cr_lf(m.data), 'clean: no bare CR or LF relayed')

    m = clean(mx, 'forged status', av, extra=b'X-Virus-Status: Infected (forged)\r\n')
    st = fields_named(m.data, 'X-Virus-Status') if m else []
    is_([unfold(f) for f in st], ['X-Virus-Status: Clean'],
        "forged status: the client's X-Virus-Status replaced by clamav-milter's")

    infected(mx, 'EICAR, default reject', av, EICAR + b'\r\n', r'^550 5\.7\.1 ')
    infected(mx, 'EICAR attachment (base64), default reject', av, attachment(EICAR),
             r'^550 5\.7\.1 ')
    # EICAR after ~900 KB of text: every one of the 14 body chunks reached
    # clamd, in order, up to the last
    filler = b''.join(b'%07d %s\r\n' % (i, b'y' * 80) for i in range(10000))
    infected(mx, 'EICAR at the end of a 900 KB body', av, filler + EICAR + b'\r\n',
             r'^550 5\.7\.1 ')

    # EICAR, then a clean message, in one session
    before = up.transactions
    c = SmtpClient(mx.port, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    msg, bad = message(subject='same session, infected', body=EICAR + b'\r\n')
    reply_is(c.transaction('alice@example.org', ['bob@example.com'], msg)['dot'], 550, '5.7.1',
             'one session: EICAR refused')
    msg, good = message(subject='same session, clean')
    reply_is(c.transaction('alice@example.org', ['bob@example.com'], msg)['dot'], 250, None,
             'one session: the clean message after it 250')
    c.quit()
    up.wait_messages(before + 1)
    ok(find_message(up, good) is not None and find_message(up, bad) is None,
       'one session: only the clean message relayed')
    mx.finish()

    # ---- RejectMsg: clamav-milter's own reply (SMFIR_REPLYCODE)
    mx = Frontmx(up, conf={'filters': [milter_filter('avmsg', avmsg)]})
    infected(mx, 'EICAR, RejectMsg', avmsg, EICAR + b'\r\n',
             r'^550 5\.7\.1 Virus found: %s' % re.escape(EICAR_NAME))
    m = clean(mx, 'clean, RejectMsg milter', avmsg)
    is_([unfold(f) for f in fields_named(m.data, 'X-Virus-Status')] if m else None,
        ['X-Virus-Status: Clean'], 'clean, RejectMsg milter: X-Virus-Status: Clean')
    mx.finish()

    # ---- a chain of two real milters: order matters
    dk = OpenDKIM(mode='s', domain='example.net', selector='sel',
                  extra=[('SignHeaders', 'From,To,Subject,Date,Message-ID,X-Virus-Status')])
    if not start_all(dk):
        return
    keys = {dk.key_name: dk.record}
    for order, names in (('clamav then opendkim', ('av', 'odkim')),
                         ('opendkim then clamav', ('odkim', 'av'))):
        filt = {'av': milter_filter('av', av), 'odkim': milter_filter('odkim', dk)}
        mx = Frontmx(up, conf={'filters': [filt[n] for n in names]})
        before = up.transactions
        msg, msgid = message(frm='alice@example.net', subject=order)
        r = deliver(mx.port, msg, sender='alice@example.net')
        reply_is(r['dot'], 250, None, '%s: 250' % order)
        up.wait_messages(before + 1)
        m = find_message(up, msgid)
        sig = fields_named(m.data, 'DKIM-Signature') if m else []
        h = re.search(r'\bh=([^;]*)', unfold(sig[0])) if sig else None
        h = [x.strip().lower() for x in h.group(1).split(':')] if h else []
        if names[0] == 'av':
            ok('x-virus-status' in h,
               "%s: opendkim signed clamav-milter's X-Virus-Status (h=%s)" % (order, ':'.join(h)))
        else:
            ok(h and 'x-virus-status' not in h,
               '%s: opendkim signed before X-Virus-Status existed (h=%s)' % (order, ':'.join(h)))
        is_([x[0] for x in dt.verify_all(m.data, keys)] if m else None, ['pass'],
            '%s: the signature verifies as relayed (dkimpy)' % order)
        is_([unfold(f) for f in fields_named(m.data, 'X-Virus-Status')] if m else None,
            ['X-Virus-Status: Clean'], '%s: X-Virus-Status: Clean' % order)
        # an infected message stops at clamav-milter whatever the order
        before = up.transactions
        msg, msgid = message(frm='alice@example.net', subject=order + ' EICAR', body=EICAR)
        reply_is(deliver(mx.port, msg, sender='alice@example.net')['dot'], 550, '5.7.1',
                 '%s: EICAR refused' % order)
        mx.finish()
        is_(up.transactions, before, '%s: EICAR not relayed' % order)

    is_(up.violations, [], 'the upstream saw no stream violation')
    ok(av.alive() and avmsg.alive() and cd.alive() and dk.alive(),
       'clamd, both clamav-milters and opendkim still running')

    # ---- the policy acts on the milter's verdict like on any filter result
    qdir = os.path.join(tmpdir('fmx-q-'), 'quarantine')
    os.mkdir(qdir)

    def qfiles():
        """Every file under the quarantine directory (a Maildir)."""
        return set(os.path.join(d, f) for d, _, fs in os.walk(qdir) for f in fs)

    def quarantined(name, mx, filt):
        """EICAR: 250 to the client, kept in the quarantine directory,
        not relayed."""
        before, files = up.transactions, qfiles()
        msg, msgid = message(subject=name, body=EICAR + b'\r\n')
        r = deliver(mx.port, msg)
        if not reply_is(r['dot'], 250, None, '%s: 250 (quarantined, not refused)' % name):
            diag(mx.log()[-3000:])
            filt.diag_log()
        new = sorted(qfiles() - files)
        data = b''
        for f in new:
            with open(f, 'rb') as fh:
                data += fh.read()
        ok(len(new) == 1 and ('<%s>' % msgid).encode() in data and EICAR in data,
           '%s: the message is in the quarantine directory, one copy (%s)'
           % (name, [os.path.relpath(f, qdir) for f in new]))
        # the next message is relayed; the quarantined one never was
        msg2, id2 = message(subject=name + ', next')
        reply_is(deliver(mx.port, msg2)['dot'], 250, None, '%s: next message 250' % name)
        up.wait_messages(before + 1)
        is_(up.transactions, before + 1, '%s: only the next message relayed' % name)
        return data

    mx = Frontmx(up, conf={'filters': [milter_filter('av', av)], 'quarantine': {'directory': qdir},
                           'policy': {'default': {'av': {'reject': 'quarantine'}}}})
    quarantined('policy av reject = quarantine', mx, av)
    mx.finish()

    avq = ClamavMilter(cd, on_infected='Quarantine')
    if not start_all(avq):
        return
    mx = Frontmx(up, conf={'filters': [milter_filter('avq', avq)],
                           'quarantine': {'directory': qdir}})
    data = quarantined('clamav-milter OnInfected Quarantine (SMFIR_QUARANTINE)', mx, avq)
    like(data.decode('latin-1'), r'(?m)^X-Virus-Status: Infected \(%s' % re.escape(EICAR_NAME),
         "OnInfected Quarantine: the copy kept carries clamav-milter's X-Virus-Status: Infected"
         " (its edits applied, as in Postfix's hold queue)")
    mx.finish()

    mx = Frontmx(up, conf={'filters': [milter_filter('av', av, dry_run=True)]})
    before = up.transactions
    msg, msgid = message(subject='dry run', body=EICAR + b'\r\n')
    reply_is(deliver(mx.port, msg)['dot'], 250, None, 'dry_run: EICAR accepted')
    up.wait_messages(before + 1)
    ok(find_message(up, msgid) is not None, 'dry_run: EICAR relayed (what would happen is logged)')
    like(mx.log(), r'(?i)dry.?run', 'dry_run: logged')
    mx.finish()

    # ---- the client goes away while the milter has the message: mid-body,
    # and after the final dot once clamav-milter has logged its verdict (its
    # reply to frontmx is under way): the answer arrives for a session that
    # is gone or going
    mx = Frontmx(up, conf={'filters': [milter_filter('av', av)]})
    before = up.transactions
    for name, cut in (('client gone mid-body', 0.5), ('client gone after the dot', None)):
        c = SmtpClient(mx.port, timeout=60)
        c.greeting()
        c.ehlo('client.interop.example')
        c.cmd('MAIL FROM:<alice@example.org>')
        c.cmd('RCPT TO:<bob@example.com>')
        reply_is(c.cmd('DATA'), 354, None, '%s: DATA' % name)
        msg, _ = message(subject=name, body=filler + EICAR + b'\r\n')
        data = dot_stuff(msg) + b'.\r\n'
        scanned = av.log().count('infected by')
        c.send(data[:int(len(data) * cut)] if cut else data)
        if not cut:
            # gone once clamav-milter has its verdict, before frontmx answers
            ok(wait_for(lambda: av.log().count('infected by') > scanned, 30),
               '%s: clamav-milter scanned it' % name)
        c.vanish()
        msg2, id2 = message(subject=name + ', next')
        reply_is(deliver(mx.port, msg2)['dot'], 250, None, '%s: the next session is relayed' % name)
    up.wait_messages(before + 2)
    is_(up.transactions, before + 2, 'clients gone: only the two next messages relayed')
    ok(av.alive() and cd.alive(), 'clients gone: clamav-milter and clamd still running')
    mx.finish()

    # ---- frontmx check with the same filter entry: the real milter decides
    chk = Frontmx(None, conf={'filters': [milter_filter('av', av)]}, start=False, name='check')
    for name, body, rc, out in (
            ('check, clean', b'clean\r\n', 0, r'(?m)^X-Virus-Status: Clean$[\s\S]*^verdict: accept '),
            ('check, EICAR', EICAR + b'\r\n', 2, r'(?m)^verdict: reject 550 5\.7\.1 ')):
        msg, _ = message(subject=name, body=body)
        r = frontmx_check(chk.conffile, sender='alice@example.org', rcpts=['bob@example.com'],
                          message=msg, timeout=120)
        is_(r[0], rc, '%s: frontmx check exits %d' % (name, rc))
        like(r[1], out, '%s: prints %r' % (name, out))
        no_sanitizer(r[2], name)

    # ---- SIGHUP mid-transaction, then the scanners going away
    mx = Frontmx(up, conf={'filters': [milter_filter('av', av)]})
    c = SmtpClient(mx.port, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'SIGHUP mid-transaction: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'SIGHUP mid-transaction: RCPT')
    n = mx.log().count('configuration reloaded')
    mx.hup()
    wait_for(lambda: mx.log().count('configuration reloaded') > n, 10)
    msg, msgid = message(subject='after SIGHUP', body=EICAR + b'\r\n')
    r = c.data(msg)[1]
    reply_is(r, 550, '5.7.1', 'SIGHUP mid-transaction: EICAR still refused by the same milter')
    c.quit()

    before = up.transactions
    cd.stop()
    msg, msgid = message(subject='clamd down')
    r = deliver(mx.port, msg)
    ok(r['dot'] is not None and r['dot'].code is not None and 400 <= r['dot'].code < 500,
       "clamd down: clamav-milter's OnFail defers: 4xx (%r)" % (r['dot'],))
    av.stop()
    msg, msgid = message(subject='milter down')
    r = deliver(mx.port, msg)
    ok(r['dot'] is not None and r['dot'].code is not None and 400 <= r['dot'].code < 500
       or any(x.code is not None and 400 <= x.code < 500 for x in [r['mail']] + r['rcpt']),
       'clamav-milter down: on_error = "tempfail": 4xx, the message stays with the client (%r)'
       % (r,))
    is_(up.transactions, before, 'scanner down: nothing relayed unscanned')
    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=300)
