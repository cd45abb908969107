#!/usr/bin/python3
# BDAT (RFC 3030) to real MTAs that offer CHUNKING: a private Postfix and,
# when `make exim` unpacked it, a private Exim 4.96 (issue 13).  Messages
# with leading dots, a lone dot, a big body (file spool) and a client BDAT
# message without a final CRLF arrive intact; the MTAs' logs show BDAT
# (Postfix: "bdat=N" in its disconnect line and no "data="; Exim: "K" on
# the arrival line), and with upstream.chunking = false the same messages
# arrive the same way through DATA.  Postfix's smtpd_data_restrictions
# refusal of BDAT is relayed and the next message in the session goes
# through (frontmx RSETs first: a refused BDAT may leave the MAIL open).
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402
from fmx_tls import make_cert, tls_postfix  # noqa: E402
from exim import upstream_daemon  # noqa: E402

HEAD = (b'From: alice@example.org\r\nTo: box@example.com\r\nSubject: %s\r\n'
        b'Message-ID: <%s@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n')


def messages(tag):
    t = tag.encode()
    return [
        (t + b'-dots', HEAD % (t + b'-dots', t + b'-dots') +
         b'first line\r\n.\r\n..\r\n.leading dot\r\ntrailing space \r\n\r\nlast line\r\n'),
        (t + b'-big', HEAD % (t + b'-big', t + b'-big') +
         b''.join(b'.%06d ' % i + b'z' * 70 + b'\r\n' for i in range(3000))),
    ]


def client_bdat(tag):
    t = tag.encode() + b'-unterminated'
    return t, HEAD % (t, t) + b'.dot line\r\nno CRLF at the end'


def lf(b):
    return b.replace(b'\r\n', b'\n')


def relay(mx, tag):
    """Every message of messages(tag) and client_bdat(tag) through one
    session; {subject: original bytes as the MTA should store them}."""
    want = {}
    c = SmtpClient(mx.port, timeout=60)
    c.start('client.example')
    for subj, body in messages(tag):
        reply_is(c.transaction('alice@example.org', ['box@example.com'], body)['dot'],
                 250, '2.0.0', '%s: 250 from the MTA' % subj.decode())
        want[subj] = body
    subj, body = client_bdat(tag)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, '%s: MAIL' % subj.decode())
    reply_is(c.cmd('RCPT TO:<box@example.com>'), 250, None, '%s: RCPT' % subj.decode())
    c.send(b'BDAT %d LAST\r\n' % len(body) + body)
    reply_is(c.reply(), 250, '2.0.0', '%s: 250 from the MTA' % subj.decode())
    want[subj] = body + b'\r\n'
    c.quit()
    return want


def check_files(files, want, label):
    by_subject = {}
    for p in files:
        with open(p, 'rb') as fh:
            data = fh.read()
        m = re.search(rb'^Subject: (\S+)', data, re.M)
        if m:
            by_subject[m.group(1)] = data
    for subj, body in want.items():
        got = by_subject.get(subj, b'')
        # the body and the client's header fields, after the MTA's and our Received
        if not ok(got.endswith(lf(body)), '%s: %s arrived intact' % (label, subj.decode())):
            diag(got[:600].decode(errors='replace'))


def postfix_part():
    access = 'inline:{ { tempdata@example.org = 450 4.7.1 data not now } }'
    # STARTTLS offered: the plain runs say tls = "none", the TLS one
    # writes the chunk through the TLS bufferevent instead
    pf = tls_postfix(make_cert(tmpdir(), 'upstream.test'),
                     main_cf={'mynetworks': '127.0.0.1/32',
                              'smtpd_data_restrictions': 'check_sender_access ' + access})
    like(pf.greeting().raw, rb'^220 upstream\.test ESMTP Postfix', 'a Postfix answers')
    for label, chunking, tls in (('postfix-bdat', True, 'none'), ('postfix-data', False, 'none'),
                                 ('postfix-tls-bdat', True, 'opportunistic')):
        mx = Frontmx(pf.port, conf={'upstream': {'chunking': chunking, 'tls': tls}}, name=label)
        ok(wait_for(lambda: 'ehlo=1 quit=1 commands=2' in pf.maillog(), 15), "%s: start-up probe over" % label)
        log0 = len(pf.maillog())
        delivered0 = set(pf.delivered())
        want = relay(mx, label)
        files = [p for p in pf.wait_mail(len(delivered0) + len(want), 30) if p not in delivered0]
        is_(len(files), len(want), '%s: %d messages delivered' % (label, len(want)))
        check_files(files, want, label)
        ok(wait_for(lambda: 'disconnect from' in pf.maillog()[log0:], 15), '%s: Postfix logged the disconnect' % label)
        disc = re.findall(r'disconnect from \S+ (.*)', pf.maillog()[log0:])
        diag('%s: %s' % (label, disc))
        n = len(want)
        if chunking:
            ok(any(re.search(r'\bbdat=%d\b' % n, d) and 'data=' not in d for d in disc),
               '%s: Postfix counted %d BDAT and no DATA (%s)' % (label, n, disc))
        else:
            ok(any(re.search(r'\bdata=%d\b' % n, d) and 'bdat=' not in d for d in disc),
               '%s: Postfix counted %d DATA and no BDAT (%s)' % (label, n, disc))
        if tls != 'none':
            like(mx.log(), r'upstream tls="TLS', '%s: the upstream connection used TLS' % label)
        mx.finish()

    # Postfix's smtpd_data_restrictions refuse BDAT too: relayed, then RSET
    mx = Frontmx(pf.port, name='postfix-refuse')
    log0 = len(pf.maillog())
    c = SmtpClient(mx.port, timeout=60)
    c.start('client.example')
    body = HEAD % (b'refused', b'refused') + b'body\r\n'
    res = c.transaction('tempdata@example.org', ['box@example.com'], body)
    reply_is(res['dot'], 450, '4.7.1', "Postfix's 450 4.7.1 to BDAT LAST is the client's reply")
    body = HEAD % (b'after-refused', b'after-refused') + b'body\r\n'
    res = c.transaction('alice@example.org', ['box@example.com'], body)
    reply_is(res['mail'], 250, '2.1.0', 'next MAIL: 250, not 503 nested MAIL')
    reply_is(res['dot'], 250, '2.0.0', 'next message relayed')
    c.quit()
    log = pf.maillog()[log0:]
    like(log, r'reject: BDAT from .*data not now', 'Postfix logged its BDAT refusal')
    unlike(log, r'(?i)nested MAIL|improper command pipelining|lost synchronization|'
           r'warning: .*(bdat|chunk)', 'no nested MAIL, pipelining or BDAT complaint')
    mx.finish()
    pf.stop()


def exim_part():
    up = upstream_daemon()
    if up is None:
        return
    ex, port = up
    new = os.path.join(ex.dir, 'mail', 'new')

    def files():
        try:
            return sorted(os.path.join(new, n) for n in os.listdir(new))
        except OSError:
            return []
    for label, chunking in (('exim-bdat', True), ('exim-data', False)):
        mx = Frontmx(port, conf={'upstream': {'chunking': chunking}}, name=label)
        before = set(files())
        want = relay(mx, label)
        wait_for(lambda: len(files()) - len(before) >= len(want) and
                 ex.mainlog().count(' Completed') >= len(before) + len(want), 120)
        got = [p for p in files() if p not in before]
        is_(len(got), len(want), '%s: %d messages delivered' % (label, len(want)))
        check_files(got, want, label)
        arrivals = [l for l in ex.mainlog().splitlines() if ' <= ' in l and label in l]
        is_(len(arrivals), len(want), '%s: Exim logged %d arrivals' % (label, len(want)))
        if chunking:
            ok(arrivals and all(' P=esmtp K ' in l for l in arrivals),
               '%s: every arrival marked K (received with CHUNKING)' % label)
        else:
            ok(arrivals and not any(' K ' in l for l in arrivals),
               '%s: no arrival marked K (DATA)' % label)
        mx.finish()
    unlike(ex.mainlog(), r'(?i)protocol error|syntax error|unrecognized command',
           'Exim logged no protocol error')


def main():
    postfix_part()
    exim_part()


run(main, timeout=300)
