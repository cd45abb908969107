#!/usr/bin/python3
# The SPF filter through the running proxy: a fake DNS server on loopback
# (dns.forward), a capture upstream, policy spf fail -> reject, softfail ->
# tag, temperror -> tempfail.
#   pass       relayed with Received-SPF: pass (above the client's own
#              fields) and Authentication-Results spf=pass smtp.mailfrom
#   fail       550 5.7.23 at RCPT (the result waits for the recipient's
#              policy, t/smtp/34-phase-policy.t), nothing relayed
#   softfail   relayed, tagged with the result (spf=softfail)
#   SERVFAIL   temperror -> 451 4.7.24 at RCPT, nothing relayed
#   null sender   checked as postmaster@HELO (smtp.helo=)
#   HELO fail  conclusive: 550 5.7.23 naming the HELO (RFC 7208 2.3)
#   a forged Received-SPF from the client stays below ours
# The client is 127.0.0.1: no free pass for loopback (check_host() has none).
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402
from fmx import register_cleanup  # noqa: E402

ZONE = {
    'pass.example': [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')],
    'fail.example': [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')],
    'soft.example': [('TXT', 'v=spf1 include:_spf.soft.example ~all')],
    '_spf.soft.example': [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')],
    'broken.example': 'SERVFAIL',
    'mx-helo.pass.example': [('TXT', 'v=spf1 a -all'), ('A', '127.0.0.1')],
    'liar.example': [('TXT', 'v=spf1 -all')],
}

RCPT = 'bob@example.com'


def body(sender, subject, extra=b''):
    return (b'From: ' + sender.encode() + b'\r\nTo: bob@example.com\r\nSubject: ' +
            subject.encode() + b'\r\n' + extra + b'\r\nHello.\r\n')


def relayed(up, subject):
    for m in up.messages:
        if re.search(rb'(?m)^Subject: ' + re.escape(subject.encode()) + rb'\r\n', m.data):
            return m
    return None


def main():
    dns = FakeDNS(ZONE).start()
    register_cleanup(dns.stop)
    up = Upstream()
    mx = Frontmx(up, conf={
        'dns': {'forward': [dns.address]},
        'filters': [{'name': 'spf', 'timeout': 20}],
        'tag': {'header': 'X-Frontmx-Tag'},
        'policy': {'default': {'spf': {'fail': 'reject', 'softfail': 'tag',
                                       'temperror': 'tempfail'}}},
    })
    count = 0

    # pass: relayed, with both header fields, Received-SPF before the client's fields
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, 'EHLO')
    r = c.transaction('alice@pass.example', [RCPT], body('alice@pass.example', 'spf-pass'))
    reply_is(r['mail'], 250, None, 'pass: MAIL accepted')
    reply_is(r['dot'], 250, None, 'pass: message accepted')
    count += 1
    up.wait_messages(count)
    m = relayed(up, 'spf-pass')
    ok(m is not None, 'pass: relayed')
    if m is not None:
        head = header_block(m.data)
        rs = fields_named(m.data, 'Received-SPF')
        is_(len(rs), 1, 'pass: one Received-SPF')
        like(rs[0] if rs else b'', rb'^Received-SPF: pass \(mx\.test\.example: domain of '
             rb'alice@pass\.example designates 127\.0\.0\.1 as permitted sender\)',
             'pass: Received-SPF result and comment (RFC 7208 9.1)')
        like(rs[0] if rs else b'', rb'client-ip=127\.0\.0\.1;.*envelope-from="alice@pass\.example";'
             rb'.*helo=client\.example;.*identity=mailfrom;', 'pass: Received-SPF key-value pairs')
        like(head, rb'Authentication-Results: mx\.test\.example;\s+spf=pass '
             rb'smtp\.mailfrom=alice@pass\.example', 'pass: Authentication-Results spf=pass')
        ok(head.find(b'Received-SPF:') < head.find(b'From: alice'),
           'pass: Received-SPF above the client\'s fields')
        unlike(head, rb'X-Frontmx-Tag', 'pass: not tagged')
    ok(('pass.example', 'TXT') in dns.queries, 'the record came from the DNS server')

    # fail: 550 5.7.23 at RCPT; nothing reaches the upstream
    before = len(up.messages)
    r = c.transaction('alice@fail.example', [RCPT], body('alice@fail.example', 'spf-fail'))
    reply_is(r['mail'], 250, None, 'fail: MAIL 250, the result waits for the recipient')
    reply_is(r['rcpt'][0], 550, '5.7.23', 'fail: RCPT rejected')
    like(r['rcpt'][0].text, r'SPF validation failed for fail\.example: 127\.0\.0\.1 is not a '
         r'permitted sender', 'fail: the reply says why')
    ok(r['data'] is None, 'fail: no DATA')
    is_(len(up.messages), before, 'fail: nothing relayed')
    ok(not any(cmd.upper().startswith('RCPT') and 'MAIL FROM:<alice@fail.example>' in prev
               for prev, cmd in zip(up.commands(), up.commands()[1:])),
       'fail: the upstream never got a recipient for it')
    reply_is(c.cmd('RSET'), 250, None, 'fail: RSET')

    # softfail: relayed and tagged
    r = c.transaction('alice@soft.example', [RCPT], body('alice@soft.example', 'spf-soft'))
    reply_is(r['dot'], 250, None, 'softfail: accepted')
    count += 1
    up.wait_messages(count)
    m = relayed(up, 'spf-soft')
    ok(m is not None, 'softfail: relayed')
    if m is not None:
        like(header_block(m.data), rb'(?m)^X-Frontmx-Tag: .*spf=softfail\b',
             'softfail: tagged with the result')
        like(header_block(m.data), rb'(?m)^Received-SPF: softfail ', 'softfail: Received-SPF')
        like(header_block(m.data), rb'spf=softfail smtp\.mailfrom=alice@soft\.example',
             'softfail: Authentication-Results')

    # DNS SERVFAIL: temperror -> tempfail -> 451 4.7.24
    before = len(up.messages)
    r = c.transaction('alice@broken.example', [RCPT], body('alice@broken.example', 'spf-temp'))
    reply_is(r['rcpt'][0], 451, '4.7.24', 'SERVFAIL: temperror, RCPT deferred')
    is_(len(up.messages), before, 'SERVFAIL: nothing relayed')
    reply_is(c.cmd('RSET'), 250, None, 'SERVFAIL: RSET')

    # a forged Received-SPF from the client stays below ours
    r = c.transaction('alice@pass.example', [RCPT], body(
        'alice@pass.example', 'spf-forged',
        b'Received-SPF: pass (forged) client-ip=192.0.2.1;\r\n'))
    reply_is(r['dot'], 250, None, 'forged Received-SPF: accepted')
    count += 1
    up.wait_messages(count)
    m = relayed(up, 'spf-forged')
    if ok(m is not None, 'forged Received-SPF: relayed'):
        rs = fields_named(m.data, 'Received-SPF')
        is_(len(rs), 2, 'forged Received-SPF: ours added')
        like(rs[0] if rs else b'', rb'^Received-SPF: pass \(mx\.test\.example:',
             'forged Received-SPF: ours is the topmost (RFC 7208 9.1)')
    c.quit()

    # null sender: MAIL FROM identity postmaster@HELO (RFC 7208 2.4)
    c = SmtpClient(mx.port)
    reply_is(c.start('mx-helo.pass.example'), 250, None, 'EHLO mx-helo.pass.example')
    r = c.transaction('', [RCPT], body('mailer-daemon@pass.example', 'spf-null'))
    reply_is(r['dot'], 250, None, 'null sender: accepted')
    count += 1
    up.wait_messages(count)
    m = relayed(up, 'spf-null')
    if ok(m is not None, 'null sender: relayed'):
        like(header_block(m.data), rb'spf=pass smtp\.helo=mx-helo\.pass\.example',
             'null sender: spf=pass smtp.helo=')
        like(header_block(m.data), rb'(?m)^Received-SPF: pass .*identity=helo;',
             'null sender: Received-SPF identity=helo')
    c.quit()

    # HELO fail is conclusive (RFC 7208 2.3)
    c = SmtpClient(mx.port)
    reply_is(c.start('liar.example'), 250, None, 'EHLO liar.example')
    r = c.transaction('alice@pass.example', [RCPT], body('alice@pass.example', 'spf-helo'))
    reply_is(r['rcpt'][0], 550, '5.7.23', 'HELO fail: RCPT rejected')
    like(r['rcpt'][0].text, r'for HELO liar\.example', 'HELO fail: the reply names the HELO')
    c.quit()

    is_(len(up.messages), count, 'exactly the accepted messages were relayed')
    check_stream(up, count)
    ok(mx.alive(), 'frontmx still running')
    mx.finish()
    dns.stop()


run(main, timeout=90)
