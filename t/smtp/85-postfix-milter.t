#!/usr/bin/python3
# A real Postfix with smtpd_milters pointing at frontmx's milter listener
# (issue 11 sections 2 and 3): no proxy in the path, Postfix delivers to a
# Maildir, frontmx judges through libmilter.
#
#   SPF fail       Postfix answers RCPT with the policy's reply (the SPF
#                  filter's 550 5.7.23), nothing is delivered
#   DKIM verify    a dkimpy-signed message is delivered with frontmx's
#                  Authentication-Results: dkim=pass header.d=example.org,
#                  spf=pass, and Received-SPF; a forged
#                  Authentication-Results claiming frontmx's authserv-id is
#                  gone from the delivered file, another one stays
#   DKIM sign      mail from the trusted client for example.net is signed
#                  by frontmx (insheader, folds as Postfix stores them) and
#                  the delivered copy verifies with dkimpy
#   quarantine     a content rule QUARANTINE puts the message in Postfix's
#                  hold queue (postqueue -p shows it held, with the reason
#                  in Postfix's log); nothing is delivered for it
#   reject         a content rule REJECT: Postfix answers the final dot
#                  with the rule's reply
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open, register_cleanup  # noqa: E402
from fmx_filters import content_filter, write_rules  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from postfix import Postfix  # noqa: E402
import dkim_tool as dt  # noqa: E402

AUTHSERV = 'mx.test.example'
RULES = """# 85-postfix-milter.t
header /^Subject:.*HOLDME/ QUARANTINE held for review
header /^Subject:.*REJECTME/ REJECT 5.7.1 rejected by rule 85
"""
_seq = [0]


def message(frm, subject, extra=b''):
    _seq[0] += 1
    msgid = 'pfm-%d-%d@test' % (os.getpid(), _seq[0])
    head = ('From: %s\r\nTo: Bob <bob@example.com>\r\nSubject: %s\r\n'
            'Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%s>\r\n'
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n'
            % (frm, subject, msgid)).encode()
    body = b'Hello Bob,\r\n\r\n  with   blanks\t \r\n.a dotted line\r\n'
    return head + extra + b'\r\n' + body, msgid


def send(port, sender, msg, rcpt='bob@example.com'):
    c = SmtpClient(port, timeout=60)
    c.greeting()
    c.ehlo('client.test')
    r = c.transaction(sender, [rcpt], msg)
    try:
        c.quit()
    except OSError:
        pass
    c.close()
    return r


def delivered_with(pf, msgid, timeout=30):
    found = []

    def look():
        for p in pf.delivered():
            with open(p, 'rb') as f:
                data = f.read()
            if ('<%s>' % msgid).encode() in data:
                found.append(data)
                return True
        return False
    wait_for(look, timeout, 0.2)
    return found[0] if found else None


def head_of(data):
    return data.replace(b'\r\n', b'\n').split(b'\n\n', 1)[0]


def unfold(h):
    return re.sub(rb'\n[ \t]+', b' ', h)


def main():
    recs = {'rsa._domainkey.example.org': dt.key_record('rsa2048'),
            'rsa._domainkey.example.net': dt.key_record('rsa2048')}
    zone = {n: [('TXT', [r[:200], r[200:]])] for n, r in recs.items()}
    zone['pass.example'] = [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')]
    zone['example.org'] = [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')]
    zone['example.net'] = [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')]
    zone['fail.example'] = [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')]
    dns = FakeDNS(zone).start()
    register_cleanup(dns.stop)
    d = tmpdir('fmx-pfm-')
    rules = write_rules(RULES, d)
    mport = free_port()
    up = Upstream()
    mx = Frontmx(up, conf={
        'authserv_id': AUTHSERV,
        'dns': {'forward': [dns.address], 'reverse': False},
        'milter': {'listen': 'inet:127.0.0.1:%d' % mport},
        'filters': [
            {'name': 'spf', 'timeout': 20},
            {'name': 'dkim', 'timeout': 20, 'options': {
                'sign': 'example.net:rsa:%s/rsa2048.pem' % dt.DATA,
                'trusted': '127.0.0.1/32'}},
            content_filter(rules),
        ],
        'policy': {'default': {'spf': {'fail': 'reject'}, 'dkim': {'fail': 'tag'}}},
    })
    ok(wait_for(lambda: port_open(mport), 10), 'frontmx milter listener is up')
    pf = Postfix(main_cf={
        'smtpd_milters': 'inet:127.0.0.1:%d' % mport,
        'milter_default_action': 'tempfail',
        'milter_protocol': '6',
    })
    reply_is(pf.greeting(), 220, None, 'a real Postfix listens in front, frontmx is only its milter')

    # ---- SPF fail: refused at RCPT with the policy's reply
    msg, msgid = message('Alice <alice@fail.example>', 'spf fail')
    r = send(pf.port, 'alice@fail.example', msg)
    rc = r['rcpt'][0] if r.get('rcpt') else None
    reply_is(rc, 550, '5.7.23', 'SPF fail: Postfix answers RCPT with 550 5.7.23')
    like(rc.text if rc else '', r'SPF validation failed for fail\.example',
         'SPF fail: the SPF filter\'s reply, through Postfix')
    # postlogd writes the log a moment later
    ok(wait_for(lambda: re.search(r'milter-reject: RCPT from \S+: 550 5\.7\.23 ', pf.maillog()), 10),
       'Postfix logs the milter reject')

    # ---- DKIM verify, SPF pass, forged Authentication-Results removed
    forged = ('Authentication-Results: %s; dkim=pass header.d=forged.example\r\n'
              'Authentication-Results: other.example; spf=none\r\n' % AUTHSERV).encode()
    msg, msgid = message('Alice <alice@example.org>', 'dkim signed')
    signed = dt.sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
    # the forged fields are added after signing (not covered by h=)
    signed = forged + signed
    r = send(pf.port, 'alice@example.org', signed)
    reply_is(r['dot'], 250, None, 'dkimpy-signed message: 250 from Postfix')
    data = delivered_with(pf, msgid)
    ok(data is not None, 'dkimpy-signed message delivered to the Maildir')
    h = unfold(head_of(data or b''))
    like(h, (r'(?m)^Authentication-Results: %s;.*\bdkim=pass header\.d=example\.org header\.s=rsa'
             % re.escape(AUTHSERV)).encode(), 'delivered with Authentication-Results: dkim=pass')
    like(h, (r'(?m)^Authentication-Results: %s;.*\bspf=pass smtp\.mailfrom=alice@example\.org'
             % re.escape(AUTHSERV)).encode(), 'and spf=pass for the client Postfix saw (127.0.0.1)')
    like(h, rb'(?m)^Received-SPF: pass ', 'and Received-SPF')
    unlike(h, rb'forged\.example', 'the forged Authentication-Results claiming our id is gone')
    like(h, rb'(?m)^Authentication-Results: other\.example; spf=none', 'another authserv-id\'s stays')
    is_(len(re.findall(rb'(?m)^Authentication-Results: ' + re.escape(AUTHSERV.encode()), h)), 1,
        'exactly one Authentication-Results with our id')
    ok(b'\r' not in (data or b'').replace(b'\r\n', b''), 'no stray CR in the delivered file')

    # ---- DKIM sign from the trusted client, verified by dkimpy
    msg, msgid = message('Carol <carol@example.net>', 'sign me')
    r = send(pf.port, 'carol@example.net', msg)
    reply_is(r['dot'], 250, None, 'message from example.net: 250')
    data = delivered_with(pf, msgid)
    ok(data is not None and b'DKIM-Signature:' in data, 'delivered with frontmx\'s DKIM-Signature')
    if data:
        crlf = data.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
        res = dt.verify_all(crlf, recs)
        is_([x[0] for x in res if x[1] == 'example.net'], ['pass'],
            'dkimpy verifies the signature frontmx made (d=example.net) in the delivered copy')

    # ---- quarantine: Postfix's hold queue
    msg, msgid = message('Alice <alice@pass.example>', 'HOLDME please')
    r = send(pf.port, 'alice@pass.example', msg)
    reply_is(r['dot'], 250, None, 'QUARANTINE: Postfix takes the message (250)')
    held = []

    def in_hold():
        held[:] = [p for p in pf.queue_files() if '/hold/' in p]
        return held
    ok(wait_for(in_hold, 20, 0.2), 'QUARANTINE: the message is in Postfix\'s hold queue')
    env = dict(os.environ, MAIL_CONFIG=pf.etc)
    q = subprocess.run(['postqueue', '-c', pf.etc, '-p'], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30).stdout.decode(errors='replace')
    like(q, r'(?m)^[0-9A-F]+!\s', 'postqueue -p shows it held (!)')
    like(q, r'alice@pass\.example', 'postqueue -p: the held message is alice\'s')
    ok(wait_for(lambda: 'milter triggers HOLD action' in pf.maillog(), 10), 'Postfix logs the milter HOLD')
    ok(delivered_with(pf, msgid, timeout=3) is None, 'QUARANTINE: nothing delivered for it')

    # ---- content rule reject at the final dot
    msg, msgid = message('Alice <alice@pass.example>', 'REJECTME now')
    r = send(pf.port, 'alice@pass.example', msg)
    reply_is(r['dot'], 550, '5.7.1', 'content rule REJECT: Postfix answers the dot with 550 5.7.1')
    like(r['dot'].text if r['dot'] else '', r'rejected by rule 85', 'with the rule\'s reply')

    like(mx.log(), r'milter message id=[0-9A-F]+ client=127\.0\.0\.1 ',
         'frontmx logs the messages with Postfix\'s queue id')
    pf.stop()
    mx.finish()


run(main, timeout=240)
