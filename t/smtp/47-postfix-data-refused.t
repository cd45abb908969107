#!/usr/bin/python3
# A real Postfix that refuses the DATA command itself (smtpd_data_restrictions)
# keeps its MAIL transaction open: the next MAIL without RSET would get
# "503 5.5.1 Error: nested MAIL command".  frontmx must pass the refusal on
# and RSET before the client's next message, which then goes through: the
# client never gets a 5xx it did not earn.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402


def msg(subject):
    return ('From: alice@example.org\r\nTo: box@example.com\r\nSubject: %s\r\n'
            'Message-ID: <%s@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
            'body\r\n' % (subject, subject)).encode()


def main():
    access = ('inline:{ { tempdata@example.org = 450 4.7.1 data not now }, '
              '{ permdata@example.org = 554 5.7.1 data refused } }')
    pf = postfix.Postfix(main_cf={'smtpd_data_restrictions': 'check_sender_access ' + access})
    # DATA itself refused: Postfix offers CHUNKING, so keep frontmx on DATA
    # here (the BDAT refusal is t/smtp/104-bdat-mta.t's)
    mx = Frontmx(pf.port, conf={'upstream': {'chunking': False}})

    c = SmtpClient(mx.port, timeout=30)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.ehlo('client.example'), 250, None, 'EHLO')
    n = 0
    for sender, code, enh in (('tempdata@example.org', 450, '4.7.1'),
                              ('permdata@example.org', 554, '5.7.1')):
        res = c.transaction(sender, ['box@example.com'], msg('refused%d' % code))
        reply_is(res['mail'], 250, None, '%s: MAIL 250' % sender)
        reply_is(res['dot'], code, enh, "%s: Postfix's %d %s to DATA is the final reply" % (sender, code, enh))
        res = c.transaction('alice@example.org', ['box@example.com'], msg('after%d' % code))
        reply_is(res['mail'], 250, '2.1.0', 'next MAIL in the same session: 250, not 503 nested MAIL')
        reply_is(res['dot'], 250, '2.0.0', 'next message after the refused DATA: relayed')
        n += 1
    c.quit()

    files = pf.wait_mail(n, timeout=20)
    is_(len(files), n, 'the %d messages after the refusals were delivered' % n)
    subjects = sorted(re.search(rb'^Subject: (\S+)', open(p, 'rb').read(), re.M).group(1)
                      for p in files)
    is_(subjects, [b'after450', b'after554'], 'exactly those two, none of the refused ones')
    log = pf.maillog()
    like(log, r'reject: DATA from .*data not now', 'Postfix logged its DATA refusal')
    unlike(log, r'(?i)nested MAIL|improper command pipelining|lost synchronization',
           'no nested MAIL or pipelining complaint in the Postfix log')
    mx.finish()
    pf.stop()


run(main, timeout=90)
