#!/usr/bin/python3
# Interop (issue 11, section 3): Debian's opendmarc 1.4 as an external
# milter (t/lib/milters.py starts it on loopback with its own authserv-id).
#
# opendmarc answers SMFIR_ACCEPT at CONNECT for a client in IgnoreHosts
# (127.0.0.1 by default), so the client here reaches frontmx through a
# listener with proxy_protocol = true and presents 192.0.2.25 (and
# 2001:db8::25): the CONNECT packet frontmx sends carries that address
# (family '4' / '6').  Its DMARC lookups go to the system resolver (it has
# no resolver option; DNSTimeout bounds them): whatever the answer,
# its Authentication-Results (dmarc=...; header.from=example.org) and
# DMARC-Filter fields arrive upstream, folded with CRLF.
# A direct client from 127.0.0.1: opendmarc accepts the whole connection at
# CONNECT; frontmx must relay its messages unchanged (no header from it),
# two in the same session.
# A chain opendmarc, clamav-milter from 127.0.0.1: opendmarc's accept at
# CONNECT is its own; clamav-milter still refuses EICAR and tags clean mail.
# RejectMultiValueFrom: a From with two addresses is refused by opendmarc
# (5xx at end of data) and not relayed; the next message is.
# opendmarc is alive at the end; frontmx exits 0, ASan-clean.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import fields_named  # noqa: E402
from milters import (OpenDMARC, milter_filter, message, deliver, find_message,  # noqa: E402
                     proxy_v1, listening_tcp, start_all, ar_field, bare_cr_lf, unfold,
                     Clamd, ClamavMilter, EICAR)

AUTHSERV = 'dmarc.interop.example'


def dmarc_ar(data):
    return ar_field(fields_named(data, 'Authentication-Results'), AUTHSERV)


def main():
    dm = OpenDMARC(authserv_id=AUTHSERV, extra=[('RejectMultiValueFrom', 'true')])
    if not start_all(dm):
        return

    up = Upstream()
    pp_port = free_port()
    mx = Frontmx(up, start=False)
    # two listeners: the base one (direct clients) and one behind PROXY
    mx.write_conf(conf={
        'filters': [milter_filter('dmarc-ext', dm)],
        'listen': [{'address': '127.0.0.1:%d' % mx.port},
                   {'address': '127.0.0.1:%d' % pp_port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
    })
    mx.start()
    ok(wait_for(lambda: listening_tcp(pp_port), 10), 'the PROXY listener is up')
    n = [0]

    def via_proxy(name, client_ip):
        msg, msgid = message(frm='Alice <alice@example.org>', subject=name)
        r = deliver(pp_port, msg, proxy=proxy_v1(client_ip))
        if not reply_is(r['dot'], 250, None, '%s: 250' % name):
            diag(mx.log()[-3000:])
            dm.diag_log()
            return None
        n[0] += 1
        up.wait_messages(n[0])
        m = find_message(up, msgid)
        ok(m is not None, '%s: relayed' % name)
        return m

    for name, ip in (('client 192.0.2.25 via PROXY', '192.0.2.25'),
                     ('client 2001:db8::25 via PROXY', '2001:db8::25')):
        m = via_proxy(name, ip)
        ar = dmarc_ar(m.data) if m else None
        like(ar, r'^Authentication-Results: %s; dmarc=\w+ .*header\.from=example\.org'
             % re.escape(AUTHSERV), "%s: opendmarc's Authentication-Results arrives" % name)
        like(b''.join(fields_named(m.data, 'DMARC-Filter')) if m else b'',
             r'^DMARC-Filter: OpenDMARC Filter v1\.4', '%s: its DMARC-Filter field too' % name)
        if m:
            ok(not bare_cr_lf(m.data), '%s: no bare CR or LF' % name)

    # ---- RejectMultiValueFrom: opendmarc's own refusal (SMFIR_REPLYCODE)
    before = up.transactions
    msg, msgid = message(frm='alice@example.org, mallory@example.net', subject='two authors')
    r = deliver(pp_port, msg, proxy=proxy_v1('192.0.2.26'))
    ok(r['dot'] is not None and r['dot'].code is not None and 500 <= r['dot'].code < 600,
       'From with two addresses: refused by opendmarc, 5xx (%r)' % (r['dot'],))
    msg2, id2 = message(subject='after two authors')
    reply_is(deliver(pp_port, msg2, proxy=proxy_v1('192.0.2.26'))['dot'], 250, None,
             'the next message: 250')
    n[0] += 1
    up.wait_messages(n[0])
    is_(up.transactions, before + 1, 'From with two addresses: not relayed')

    # ---- 127.0.0.1 directly: opendmarc accepts the connection at CONNECT
    c = SmtpClient(mx.port, timeout=60)
    c.greeting()
    c.ehlo('client.interop.example')
    ids = []
    for i in range(2):
        msg, msgid = message(subject='ignored host %d' % i)
        ids.append((msg, msgid))
        reply_is(c.transaction('alice@example.org', ['bob@example.com'], msg)['dot'], 250, None,
                 'ignored host (accept at CONNECT), message %d: 250' % (i + 1))
    c.quit()
    n[0] += 2
    up.wait_messages(n[0])
    for i, (msg, msgid) in enumerate(ids):
        m = find_message(up, msgid)
        ok(m is not None, 'ignored host, message %d: relayed' % (i + 1))
        if m:
            is_(dmarc_ar(m.data), None, 'ignored host, message %d: no header from opendmarc' % (i + 1))
            ok(m.data.endswith(msg), 'ignored host, message %d: relayed unchanged' % (i + 1))

    is_(up.violations, [], 'the upstream saw no stream violation')
    ok(dm.alive(), 'opendmarc is still running')
    mx.finish()

    # ---- opendmarc's accept at CONNECT ends only its own part: the next
    # milter in the chain (clamav-milter) still scans every message
    cd = Clamd()
    av = ClamavMilter(cd)
    if not start_all(cd, av):
        return
    mx = Frontmx(up, conf={'filters': [milter_filter('dmarc-ext', dm), milter_filter('av', av)]})
    before = up.transactions
    msg, msgid = message(subject='accepted by opendmarc, EICAR', body=EICAR + b'\r\n')
    reply_is(deliver(mx.port, msg)['dot'], 550, '5.7.1',
             'opendmarc accepts the connection, clamav-milter after it still refuses EICAR')
    msg, msgid = message(subject='accepted by opendmarc, clean')
    reply_is(deliver(mx.port, msg)['dot'], 250, None, 'the same chain, a clean message: 250')
    up.wait_messages(before + 1)
    m = find_message(up, msgid)
    is_([unfold(f) for f in fields_named(m.data, 'X-Virus-Status')] if m else None,
        ['X-Virus-Status: Clean'], 'the same chain, a clean message: scanned by clamav-milter')
    is_(up.transactions, before + 1, 'the same chain: EICAR not relayed')
    mx.finish()


run(main, timeout=180)
