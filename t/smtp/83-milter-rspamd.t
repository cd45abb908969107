#!/usr/bin/python3
# Interop (issue 11, section 3): Debian's rspamd 3.4 proxy worker in
# self-scan mode as an external milter (t/lib/milters.py: the packaged
# rules, LOCAL_CONFDIR/DBDIR/RUNDIR/LOGDIR in the test's temp dir, the
# normal and controller workers off, hyperscan off, DNS to a fake server
# on loopback; it starts in ~10 s and ~3 x 250 MB RSS).
#
# rspamd is not libmilter: it answers the negotiation with every NR_* flag
# (0xff080) whether offered or not, so frontmx must not wait for a reply
# to any event but end of body; it reads {i}, {rcpt_mailer}, {daemon_name}.
#   clean message, two recipients: relayed with X-Spamd-Result (its
#     milter_headers) and X-Rspamd-Queue-Id = frontmx's queue id (macro i)
#   a test rule worth 10 (t/lib/milters.py's rspamd.local.lua): the "add
#     header" action, relayed with rspamd's X-Spam: Yes (SMFIR_ADDHEADER)
#   GTUBE: refused at end of data with rspamd's own reply (SMFIR_REPLYCODE
#     "554 5.7.1 Gtube pattern"); the upstream receives nothing
#   three messages in one session (ABORT between them under NR flags)
# rspamd is alive at the end; frontmx exits 0, ASan-clean.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import fields_named  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from milters import (Rspamd, milter_filter, message, deliver, find_message,  # noqa: E402
                     start_all, unfold, bare_cr_lf)

# The GTUBE test string, split so that this file itself is no test mail.
GTUBE = (b'XJS*C4JDBQADN1.NSBN3*2IDNEN*'
         b'GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X')


def main():
    ready, why = Rspamd.available()
    if not ready:
        skip('rspamd interop', why)
        return
    dns = FakeDNS({}).start()       # every lookup: NXDOMAIN at once
    register_cleanup(dns.stop)
    rs = Rspamd(dns=dns.address)
    if not start_all(rs):
        return

    up = Upstream()
    # command = 10: a client that waited for a reply rspamd never sends
    # (an NR_* event) fails in 10 s per event, not 30
    mx = Frontmx(up, conf={'filters': [milter_filter(
        'rspamd', rs, timeouts={'connect': 10, 'command': 10, 'content': 60})]})

    # ---- clean, two recipients
    msg, msgid = message(subject='rspamd clean')
    r = deliver(mx.port, msg, rcpts=('bob@example.com', 'carol@example.com'))
    if not reply_is(r['dot'], 250, None, 'clean: 250'):
        diag(mx.log()[-3000:])
        rs.diag_log()
    up.wait_messages(1)
    m = find_message(up, msgid)
    ok(m is not None, 'clean: relayed')
    is_(m.rcpts if m else None, ['bob@example.com', 'carol@example.com'], 'clean: both recipients')
    res = fields_named(m.data, 'X-Spamd-Result') if m else []
    like(unfold(res[0]) if res else '', r'^X-Spamd-Result: default: False \[-?[0-9.]+ / 15\.00\]',
         "clean: rspamd's X-Spamd-Result arrives (not spam)")
    qid = fields_named(m.data, 'X-Rspamd-Queue-Id') if m else []
    qid = unfold(qid[0]).split(':', 1)[1].strip() if qid else ''
    ok(re.match(r'^[0-9a-f]{16}\b', qid) and qid[:16] in mx.log(),
       "clean: X-Rspamd-Queue-Id is frontmx's queue id, the i macro (%r)" % qid)
    if m:
        ok(not bare_cr_lf(m.data), 'clean: no bare CR or LF relayed')
        ok(m.data.endswith(msg.split(b'\r\n\r\n', 1)[1]), 'clean: body unchanged')

    # ---- 8-bit body, 30 recipients (RCPT events rspamd asked not to answer)
    rcpts = ['user%02d@example.com' % i for i in range(30)]
    msg, msgid = message(subject='rspamd 8bit',
                         body='Grüße aus Köln, naïve café\r\n'.encode('utf-8') * 50)
    msg = msg.replace(b'charset=us-ascii', b'charset=utf-8')
    r = deliver(mx.port, msg, rcpts=rcpts)
    reply_is(r['dot'], 250, None, '8-bit body, 30 recipients: 250')
    up.wait_messages(2)
    m = find_message(up, msgid)
    is_(m.rcpts if m else None, rcpts, '8-bit body, 30 recipients: relayed to all 30')
    ok(m is not None and m.data.endswith(msg.split(b'\r\n\r\n', 1)[1]),
       '8-bit body, 30 recipients: body unchanged')
    ok(m is not None and fields_named(m.data, 'X-Spamd-Result'),
       '8-bit body, 30 recipients: scanned (X-Spamd-Result)')

    # ---- rspamd's add header action: its X-Spam: Yes edit
    msg, msgid = message(subject='rspamd add header', extra=b'X-Fmx-Test-Spam: 1\r\n')
    reply_is(deliver(mx.port, msg)['dot'], 250, None, 'add header action: 250')
    up.wait_messages(3)
    m = find_message(up, msgid)
    is_([unfold(f) for f in fields_named(m.data, 'X-Spam')] if m else None, ['X-Spam: Yes'],
        'add header action: relayed with X-Spam: Yes')
    res = fields_named(m.data, 'X-Spamd-Result') if m else []
    like(unfold(res[0]) if res else '',
         r'default: \w+ \[1[0-4]\.\d+ / 15\.00\].*FMX_TEST_SPAM\(10\.00\)',
         'add header action: X-Spamd-Result has the score between add_header and reject')

    # ---- GTUBE
    before = up.transactions
    msg, msgid = message(subject='rspamd gtube', body=GTUBE + b'\r\n')
    r = deliver(mx.port, msg)
    reply_is(r['dot'], 554, '5.7.1', 'GTUBE: 554 5.7.1 at end of data')
    like(r['dot'].text if r['dot'] else '', r'Gtube pattern', "GTUBE: rspamd's reply text")

    # ---- three messages in one session: clean, GTUBE, clean
    c = SmtpClient(mx.port, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    ids = []
    for i, body in enumerate((None, GTUBE + b'\r\n', None)):
        msg, msgid = message(subject='session %d' % i, body=body)
        ids.append(msgid)
        r = c.transaction('alice@example.org', ['bob@example.com'], msg)
        reply_is(r['dot'], 554 if body else 250, None,
                 'one session, message %d: %s' % (i + 1, 'refused' if body else '250'))
    c.quit()
    up.wait_messages(before + 2)
    is_([find_message(up, x) is not None for x in ids], [True, False, True],
        'one session: the clean messages relayed, the GTUBE one not')
    is_(up.transactions, before + 2, 'GTUBE never reached the upstream')
    is_(up.violations, [], 'the upstream saw no stream violation')
    ok(rs.alive(), 'rspamd is still running')
    mx.finish()


run(main, timeout=300)
