#!/usr/bin/python3
# upstream.pool against a real Postfix that trusts frontmx for XFORWARD
# only (no XCLIENT): several clients' messages go over fewer connections,
# and Postfix records each message with its own client's address and
# HELO, never the previous client's (issue 13, connection reuse).  The
# messages are held in Postfix's queue (HOLD at end of data) so that
# postcat shows the XFORWARD attributes each queue file got
# (log_client_address, log_helo_name); the log's orig_client= says the
# same for the address.
import os
import re
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402

N = 4


def body(i):
    return (b'From: alice@example.org\r\nTo: box@example.com\r\nSubject: pool %d\r\n'
            b'Message-ID: <pool%d@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n'
            b'message %d\r\n' % (i, i, i))


def main():
    pf = postfix.Postfix(main_cf={'mynetworks': '127.0.0.1/32',
                                  'smtpd_authorized_xclient_hosts': '',
                                  'smtpd_end_of_data_restrictions': 'check_client_access static:HOLD'})
    like(pf.greeting().raw, rb'^220 upstream\.test ESMTP Postfix', 'a Postfix answers')
    mx = Frontmx(pf.port, conf={'workers': 1, 'upstream': {'pool': {'size': 4, 'idle': 30}}})
    # frontmx's blocking start-up probe (EHLO, QUIT) came before it listened
    ok(wait_for(lambda: 'ehlo=1 quit=1 commands=2' in pf.maillog(), 15),
       "frontmx's start-up probe is over")
    connects0 = pf.maillog().count(' connect from')
    for i in range(N):
        c = SmtpClient(mx.port, source='127.0.0.%d' % (i + 2))
        c.greeting()
        c.ehlo('c%d.example' % i)
        res = c.transaction('alice@example.org', ['box@example.com'], body(i))
        reply_is(res['dot'], 250, '2.0.0', 'client %d: queued by Postfix' % i)
        c.cmd('QUIT')
        c.expect_close(5)
        c.close()
    ok(wait_for(lambda: len(pf.queue_files()) >= N, 30), '%d messages held in the Postfix queue' % N)
    log = pf.maillog()
    connects = log.count(' connect from') - connects0
    diag('Postfix smtpd connections for %d messages: %d' % (N, connects))
    ok(1 <= connects < N, 'fewer connections than messages (%d for %d)' % (connects, N))
    seen = set()
    for p in pf.queue_files():
        r = subprocess.run(['postcat', '-c', pf.etc, p], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = r.stdout.decode('utf-8', 'replace')
        m = re.search(r'^Subject: pool (\d+)$', out, re.M)
        if not m:
            ok(False, 'held message has its Subject: %s' % p)
            continue
        i = int(m.group(1))
        seen.add(i)
        attrs = dict(re.findall(r'^named_attribute: (log_\w+)=(.*)$', out, re.M))
        is_(attrs.get('log_client_address'), '127.0.0.%d' % (i + 2),
            "message %d: Postfix recorded its own client's address" % i)
        is_(attrs.get('log_helo_name'), 'c%d.example' % i,
            "message %d: Postfix recorded its own client's HELO" % i)
        is_(attrs.get('log_protocol_name'), 'ESMTP', 'message %d: its protocol' % i)
    is_(sorted(seen), list(range(N)), 'every message held once')
    for i in range(N):
        like(log, r'orig_client=\S*\[127\.0\.0\.%d\]' % (i + 2),
             'maillog: a message from 127.0.0.%d (orig_client=)' % (i + 2))
    unlike(log, r'(?i)warning: .*(xforward|xclient|lost synchronization|non-SMTP|pipelining)',
           'no XFORWARD or protocol warnings in the Postfix log')
    unlike(log, r'(?i)reject: ', 'Postfix rejected nothing')
    mx.finish()
    pf.stop()


run(main, timeout=120)
