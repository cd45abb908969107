#!/usr/bin/python3
# DMARC (RFC 7489) through the running proxy: the built-in spf, dkim and
# dmarc filters in that order, DNS from a fake server on loopback, a
# capture upstream and a quarantine directory.
#
#   pass via SPF         MAIL FROM domain = From domain, client IP in its SPF
#   pass via DKIM        SPF passes for an unrelated ESP domain; the message
#                        is signed (dkimpy) with d= the From domain
#   fail, p=reject       550 5.7.1, never relayed; also with a valid DKIM
#                        signature of an unaligned domain
#   adkim=s              a valid signature by a subdomain does not align
#                        (both also with p=none: relayed, dkim=pass, dmarc=fail)
#   fail, p=quarantine   250, held in the quarantine, never relayed
#   fail, p=none         relayed, dmarc=fail in Authentication-Results
#   sp= via the organizational domain (news.quar.example -> _dmarc.quar.example)
#   two From fields      550 (permerror)
#   no record            relayed, dmarc=none
#   SERVFAIL             relayed, dmarc=temperror
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402
from dmarc_util import *  # noqa: E402,F403

AUTHSERV = 'mx.test.example'
RCPT = 'bob@example.com'
SPF_LOCAL = 'v=spf1 ip4:127.0.0.0/8 -all'


def main():
    key, key_txt = dkim_keypair()
    esp_key, esp_key_txt = dkim_keypair()
    dns = FakeDNS({
        # SPF passes for these MAIL FROM domains from 127.0.0.1
        'spfok.example': [('TXT', SPF_LOCAL)],
        'esp.example': [('TXT', SPF_LOCAL)],
        # DKIM keys
        'sel._domainkey.dkimok.example': [('TXT', key_txt)],
        'sel._domainkey.mail.dkimok.example': [('TXT', key_txt)],
        'sel._domainkey.esp.example': [('TXT', esp_key_txt)],
        'sel._domainkey.mail.monitor.example': [('TXT', key_txt)],
        # DMARC policies
        '_dmarc.spfok.example': [('TXT', 'v=DMARC1; p=reject')],
        '_dmarc.dkimok.example': [('TXT', 'v=DMARC1; p=reject; adkim=s')],
        '_dmarc.reject.example': [('TXT', 'v=DMARC1; p=reject')],
        '_dmarc.quar.example': [('TXT', 'v=DMARC1; p=quarantine; sp=reject')],
        '_dmarc.monitor.example': [('TXT', 'v=DMARC1; p=none; adkim=s')],
        '_dmarc.none.example': [('TXT', 'v=DMARC1; p=none; rua=mailto:d@none.example')],
        '_dmarc.broken.example': 'SERVFAIL',
    }).start()
    register_cleanup(dns.stop)

    d = tmpdir('fmx-dmarc-')
    q = make_maildir(os.path.join(d, 'q'))
    up = Upstream()
    mx = Frontmx(up, conf={
        'dns': {'forward': [dns.address]},
        'filters': [{'name': 'spf'}, {'name': 'dkim'},
                    {'name': 'dmarc', 'options': {'honor_pct': True}}],
        'quarantine': {'directory': q},
        'policy': {'default': {
            'dmarc': {'reject': 'reject', 'quarantine': 'quarantine', 'none': 'accept'},
        }},
    })
    relayed = 0

    def relayed_msg(msgid):
        for m in up.messages:
            if ('<%s>' % msgid).encode() in m.data:
                return m
        return None

    def expect_relayed(name, r, msgid, want_dmarc, want_from, extra=()):
        nonlocal relayed
        if not reply_is(r['dot'], 250, None, '%s: 250' % name):
            return
        relayed += 1
        ok(up.wait_messages(relayed), '%s: relayed to the upstream' % name)
        m = relayed_msg(msgid)
        if m is None:
            ok(False, '%s: message found upstream' % name)
            return
        res = method_result(m.data, 'dmarc', AUTHSERV)
        ok(res is not None and res[0] == want_dmarc and
           re.search(r'header\.from=%s\b' % re.escape(want_from), res[1]) is not None,
           '%s: Authentication-Results dmarc=%s header.from=%s (got %r)'
           % (name, want_dmarc, want_from, res))
        for method, want in extra:
            got = method_result(m.data, method, AUTHSERV)
            is_(got and got[0], want, '%s: Authentication-Results %s=%s' % (name, method, want))
        is_(len(auth_results(m.data, AUTHSERV)), 1,
            '%s: exactly one Authentication-Results of ours' % name)

    # -- pass via SPF: MAIL FROM and From in spfok.example, 127.0.0.1 in its SPF
    msg = message('Alice <alice@spfok.example>', 'spf aligned', 'spf-pass@spfok.example')
    r = send(mx, 'alice@spfok.example', [RCPT], msg)
    expect_relayed('pass via SPF', r, 'spf-pass@spfok.example', 'pass', 'spfok.example',
                   extra=[('spf', 'pass')])

    # -- pass via DKIM: SPF passes for esp.example only; d=dkimok.example aligns
    msg = dkim_sign(message('Bob <bob@dkimok.example>', 'dkim aligned',
                            'dkim-pass@dkimok.example'), 'dkimok.example', 'sel', key)
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('pass via DKIM', r, 'dkim-pass@dkimok.example', 'pass', 'dkimok.example',
                   extra=[('dkim', 'pass'), ('spf', 'pass')])

    # -- fail, p=reject: SPF passes for esp.example, which is not aligned
    msg = message('CEO <ceo@reject.example>', 'wire transfer', 'rej@reject.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    reply_is(r['dot'], 550, '5.7.1', 'p=reject: 550 5.7.1')
    like(r['dot'].text, r'DMARC policy for reject\.example',
         'p=reject: the reply names the domain')

    # -- fail, p=reject: a valid DKIM signature, but of esp.example
    msg = dkim_sign(message('CEO <ceo@reject.example>', 'signed by the ESP',
                            'rej-dkim@reject.example'), 'esp.example', 'sel', esp_key)
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    reply_is(r['dot'], 550, '5.7.1', 'p=reject, DKIM pass for an unaligned d=: 550 5.7.1')

    # -- adkim=s: a valid signature by a subdomain does not align
    msg = dkim_sign(message('Bob <bob@dkimok.example>', 'strict dkim',
                            'dkim-strict@dkimok.example'), 'mail.dkimok.example', 'sel', key)
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    reply_is(r['dot'], 550, '5.7.1', 'adkim=s: valid d=mail.dkimok.example does not '
             'align with dkimok.example: 550 5.7.1')

    # -- the same two with p=none, relayed, so Authentication-Results shows
    #    that DKIM did pass and DMARC still failed
    msg = dkim_sign(message('Mon <mon@monitor.example>', 'esp signed, monitored',
                            'mon-esp@monitor.example'), 'esp.example', 'sel', esp_key)
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('p=none, DKIM pass for an unaligned d=', r, 'mon-esp@monitor.example',
                   'fail', 'monitor.example', extra=[('dkim', 'pass'), ('spf', 'pass')])
    msg = dkim_sign(message('Mon <mon@monitor.example>', 'subdomain signed, strict',
                            'mon-strict@monitor.example'), 'mail.monitor.example', 'sel', key)
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('p=none, adkim=s, DKIM pass for d=mail.monitor.example', r,
                   'mon-strict@monitor.example', 'fail', 'monitor.example',
                   extra=[('dkim', 'pass')])

    # -- sp= through the organizational domain
    msg = message('News <news@news.quar.example>', 'subdomain', 'sp@news.quar.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    reply_is(r['dot'], 550, '5.7.1', 'sp=reject for news.quar.example: 550 5.7.1')
    asked = [n for n, t in dns.queries if t == 'TXT' and n.startswith('_dmarc.')]
    ok('_dmarc.news.quar.example' in asked and '_dmarc.quar.example' in asked,
       'sp=: _dmarc.news.quar.example, then _dmarc.quar.example asked')

    # -- two From fields: permerror, rejected
    msg = message('Alice <alice@spfok.example>', 'two froms', 'two-from@spfok.example',
                  extra=b'From: ceo@reject.example\r\n')
    r = send(mx, 'alice@spfok.example', [RCPT], msg)
    reply_is(r['dot'], 550, '5.7.1', 'two From fields: 550 5.7.1')
    like(r['dot'].text, r'(?i)multiple From', 'two From fields: the reply says why')
    is_(len(up.messages), relayed, 'no rejected message reached the upstream')

    # -- fail, p=quarantine: 250, held, not relayed
    msg = message('Q <q@quar.example>', 'quarantine me', 'quar@quar.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    reply_is(r['dot'], 250, None, 'p=quarantine: the client is told 250')
    files = maildir_files(q)
    is_(len(files), 1, 'p=quarantine: one file in the quarantine')
    if files:
        data = read_file(files[0])
        like(data, rb'(?m)^Message-ID: <quar@quar\.example>\r?$',
             'p=quarantine: the quarantined file is that message')
        like(data, rb'(?mi)^X-Frontmx-Quarantine: .*dmarc',
             'p=quarantine: X-Frontmx-Quarantine names the dmarc filter')
    is_(len(up.messages), relayed, 'p=quarantine: not relayed')

    # -- fail, p=none: relayed with dmarc=fail
    msg = message('N <n@none.example>', 'monitor only', 'none@none.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('p=none', r, 'none@none.example', 'fail', 'none.example')

    # -- no record: relayed with dmarc=none
    msg = message('X <x@nodmarc.example>', 'no policy', 'none2@nodmarc.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('no DMARC record', r, 'none2@nodmarc.example', 'none', 'nodmarc.example')

    # -- DNS failure: relayed with dmarc=temperror (map temperror to defer instead)
    msg = message('X <x@broken.example>', 'servfail', 'tmp@broken.example')
    r = send(mx, 'bounce@esp.example', [RCPT], msg)
    expect_relayed('SERVFAIL', r, 'tmp@broken.example', 'temperror', 'broken.example')

    is_(len(maildir_files(q)), 1, 'the quarantine still holds one message')
    check_stream(up, relayed)
    mx.finish()


run(main, timeout=90)
