#!/usr/bin/python3
# Pipelining to a real Postfix (issue 13): a client pipelines MAIL,
# several RCPTs and DATA; frontmx sends MAIL and the RCPTs to Postfix in
# one group (t/smtp/100 shows the group with a scripted upstream) and
# relays each of Postfix's replies in order: the accepted recipients get
# the message, the one Postfix refuses (relaying for a client it does not
# trust) gets Postfix's own 554, and Postfix logs no "improper command
# pipelining" (smtpd_forbid_unauth_pipelining = yes would drop such a
# client).  Once with XCLIENT (the group is MAIL and RCPTs), once with
# XFORWARD only (the group starts with XFORWARD).
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402
from fmx_auth import FrontmxArgs  # noqa: E402

RCPTS = ['ann@example.com', 'ben@example.com', 'far@notours.example', 'cat@example.com']


def body(tag):
    return (b'From: alice@example.org\r\nTo: ann@example.com\r\nSubject: %s\r\n'
            b'Message-ID: <%s@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
            b'pipelined to postfix\r\n' % (tag.encode(), tag.encode()))


def run_case(tag, main_cf, want_xforward):
    pf = postfix.Postfix(main_cf=main_cf)
    like(pf.greeting().raw, rb'^220 upstream\.test ESMTP Postfix', '%s: a Postfix answers' % tag)
    # -v: the upstream dialogue in the log, to see what went in one group
    mx = FrontmxArgs(pf.port, args=['-v'], conf={'workers': 1})
    c = SmtpClient(mx.port, source='127.0.0.2')
    c.greeting()
    c.ehlo('pipe.example')
    c.send(('MAIL FROM:<alice@example.org>\r\n' + ''.join('RCPT TO:<%s>\r\n' % r for r in RCPTS)
            + 'DATA\r\n').encode())
    rs = [c.reply() for _ in range(len(RCPTS) + 2)]
    is_([r.code if r else None for r in rs], [250, 250, 250, 554, 250, 354],
        '%s: MAIL, 4 RCPTs (one refused by Postfix), DATA answered in order' % tag)
    like(rs[3].text if rs[3] else '', r'(?i)relay access denied', "%s: the 554 is Postfix's own" % tag)
    c.send(body(tag) + b'.\r\n')
    reply_is(c.reply(), 250, '2.0.0', '%s: message queued by Postfix' % tag)
    c.cmd('QUIT')
    c.close()
    files = pf.wait_mail(3, timeout=30)
    is_(len(files), 3, '%s: delivered to the 3 accepted recipients' % tag)
    log = pf.maillog()
    unlike(log, r'(?i)improper command pipelining', '%s: Postfix saw no improper pipelining' % tag)
    unlike(log, r'(?i)warning: .*(xforward|xclient|lost synchronization|non-SMTP)',
           '%s: no protocol warnings in the Postfix log' % tag)
    # Postfix offers CHUNKING: the message goes as BDAT (upstream.chunking)
    like(log, r'disconnect from \S+ .*mail=1 rcpt=3/4 bdat=1',
         "%s: Postfix's session: one MAIL, 4 RCPTs (3 accepted), BDAT" % tag)
    # frontmx's debug log shows what went in one write: the upstream
    # lines between the RCPT's arrival and the first reply read
    flog = mx.log()
    first = flog.find('upstream >>> MAIL FROM:<alice@example.org>')
    reply = flog.find('upstream <<< 250', first)
    sent = flog[first:reply].count('upstream >>> RCPT TO:')
    is_(sent, 4, '%s: all 4 RCPTs written before the first reply to MAIL was read' % tag)
    if want_xforward:
        xf = flog.rfind('upstream >>> XFORWARD', 0, first)
        ok(xf >= 0 and flog.find('upstream <<<', xf) > first,
           '%s: XFORWARD went in the same group, ahead of MAIL' % tag)
    mx.finish()
    pf.stop()


def main():
    # XCLIENT: the real client 127.0.0.2 is not trusted for relaying.
    run_case('XCLIENT', {'mynetworks': '127.0.0.1/32'}, False)
    # XFORWARD only: Postfix judges the connection's own address, so
    # mynetworks leaves 127.0.0.1 out too.
    run_case('XFORWARD', {'mynetworks': '127.0.0.9/32', 'smtpd_authorized_xclient_hosts': ''}, True)
    done()


run(main, timeout=240)
