#!/usr/bin/python3
# A real Postfix as the upstream MTA.  The client connects from 127.0.0.2;
# the proxy connects to Postfix from 127.0.0.1 and tells it the real client
# with XCLIENT.  Postfix must log, stamp and judge 127.0.0.2.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402


def lf(b):
    return b.replace(b'\r\n', b'\n')


def main():
    # mynetworks = 127.0.0.1/32: the proxy's own address may use XCLIENT,
    # the real client (127.0.0.2) is not trusted by Postfix for relaying.
    pf = postfix.Postfix(main_cf={'mynetworks': '127.0.0.1/32'})
    like(pf.greeting().raw, rb'^220 upstream\.test ESMTP Postfix', 'a Postfix answers on 127.0.0.1:%d' % pf.port)
    mx = Frontmx(pf.port)

    c = SmtpClient(mx.port, source='127.0.0.2')
    reply_is(c.greeting(), 220, None, 'greeting')
    e = c.ehlo('client.example')
    reply_is(e, 250, None, 'EHLO')
    kw = [x.split(' ')[0].upper() for x in e.lines[1:]]
    ok('XCLIENT' not in kw and 'ETRN' not in kw and 'VRFY' not in kw,
       "Postfix's XCLIENT/ETRN/VRFY not passed through (%s)" % kw)

    m1 = (b'From: Alice <alice@example.org>\r\nTo: box@example.com\r\nSubject: via postfix\r\n'
          b'Message-ID: <pf1@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
          b'first line\r\n.\r\n..\r\n.leading dot\r\ntrailing space \r\n\r\nlast line\r\n')
    res = c.transaction('alice@example.org', ['box@example.com'], m1)
    reply_is(res['mail'], 250, '2.1.0', "MAIL: Postfix's 250 2.1.0")
    reply_is(res['rcpt'][0], 250, '2.1.5', "RCPT: Postfix's 250 2.1.5")
    reply_is(res['dot'], 250, '2.0.0', "final: Postfix's 250 2.0.0")
    like(res['dot'].text if res['dot'] else '', r'queued as [0-9A-F]+', 'final reply carries the Postfix queue id')

    # Postfix judges relaying on the real client address (from XCLIENT)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'second MAIL')
    r = c.cmd('RCPT TO:<someone@notours.example>')
    reply_is(r, 554, '5.7.1', 'Postfix refuses relaying for 127.0.0.2: 554 5.7.1 propagated')
    like(r.text, r'(?i)relay access denied', "it is Postfix's own text")
    reply_is(c.cmd('RCPT TO:<box@example.com>'), 250, None, 'allowed recipient in the same transaction')
    # complete headers, so that Postfix's cleanup adds none
    m2 = (b'From: alice@example.org\r\nTo: box@example.com\r\nSubject: second\r\n'
          b'Message-ID: <pf2@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:01 +0000\r\n\r\n'
          b'second message\r\n')
    d, f = c.data(m2)
    reply_is(f, 250, None, 'second message: 250')
    c.quit()

    files = pf.wait_mail(2, timeout=15)
    is_(len(files), 2, 'two messages delivered into the maildir')
    by_subject = {}
    for p in files:
        with open(p, 'rb') as fh:
            data = fh.read()
        m = re.search(rb'^Subject: (.*)$', data, re.M)
        by_subject[m.group(1) if m else p] = data
    got = by_subject.get(b'via postfix', b'')
    ok(got.endswith(lf(m1)), 'message 1: original bytes intact at the end of the delivered file')
    if not got.endswith(lf(m1)):
        diag(got.decode(errors='replace'))
    hdr = got[:len(got) - len(lf(m1))] if got.endswith(lf(m1)) else got
    received = re.findall(rb'^Received: .*(?:\n[ \t].*)*', hdr, re.M)
    is_(len(received), 2, 'two Received fields: Postfix and frontmx')
    if len(received) == 2:
        like(received[0], rb'\[127\.0\.0\.2\]', "Postfix's Received names 127.0.0.2 (XCLIENT)")
        unlike(received[0], rb'\[127\.0\.0\.1\]', "Postfix's Received does not name the proxy's 127.0.0.1")
        like(received[0], rb'by upstream\.test \(Postfix\)', 'first Received is Postfix\'s')
        # XCLIENT HELO= is overridden by the EHLO that must follow XCLIENT:
        # that EHLO has to carry the client's HELO name (XCLIENT_README's
        # example does exactly this), or Postfix sees the proxy's name.
        like(received[0], rb'^Received: from client\.example \(',
             "Postfix's Received names the client's HELO (client.example)")
        like(received[1], rb'^Received: from client\.example \(.*\[127\.0\.0\.2\]\)', "frontmx's Received")
        like(received[1], rb'by mx\.test\.example', "frontmx's Received names mx.test.example")
        diag("Postfix's Received: " + received[0].decode(errors='replace').replace('\n', ' '))
    like(hdr, rb'^Return-Path: <alice@example\.org>$', 'Return-Path from the relayed envelope')
    got2 = by_subject.get(b'second', b'')
    ok(got2.endswith(lf(m2)), 'message 2 intact')
    ok(b'notours' not in got2, 'refused recipient not in message 2')

    log = pf.maillog()
    like(log, r'client=\S*\[127\.0\.0\.2\]', 'Postfix maillog: client=...[127.0.0.2]')
    unlike(log, r'client=\S*\[127\.0\.0\.1\]', 'Postfix maillog: no message from client 127.0.0.1')
    like(log, r'connect from \S*\[127\.0\.0\.1\]', 'the TCP connection itself came from 127.0.0.1')
    like(log, r'(?i)reject: RCPT from \S*\[127\.0\.0\.2\].*Relay access denied',
         'Postfix logged the relay refusal for 127.0.0.2')
    unlike(log, r'(?i)warning: .*(xclient|lost synchronization|non-SMTP|pipelining)',
           'no XCLIENT/protocol warnings in the Postfix log')
    is_(pf.queue_files(), [], 'nothing left in the Postfix queue')
    mx.finish()
    pf.stop()


run(main, timeout=60)
