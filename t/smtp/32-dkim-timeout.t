#!/usr/bin/python3
# DKIM key lookup that times out: the DNS server on loopback never
# answers for the selector, the resolver gives up after timeouts.dns, the
# dkim filter names the result temperror and the policy (temperror =
# "tempfail") answers 451; nothing is relayed.  The other signature of
# the message, whose key does come, does not wait for the slow one.  The
# daemon must still stop cleanly on SIGTERM afterwards (the timed-out
# query may still be pending inside the resolver then).
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402
import dkim_tool as dt  # noqa: E402

RCPT = 'bob@example.com'
DNS_TIMEOUT = 2


def message(subject):
    return ('From: Alice <alice@example.org>\r\nTo: %s\r\nSubject: %s\r\n'
            'Message-ID: <%s-%d@test>\r\n\r\nbody\r\n'
            % (RCPT, subject, subject.replace(' ', '-'), os.getpid())).encode()


def main():
    ed = dt.key_record('ed25519')
    dns = FakeDNS({'slow._domainkey.example.org': 'TIMEOUT',
                   'ed._domainkey.example.org': [('TXT', ed)]}).start()
    register_cleanup(dns.stop)
    up = Upstream()
    mx = Frontmx(up, conf={
        'dns': {'forward': [dns.address]},
        'timeouts': {'dns': DNS_TIMEOUT},
        'filters': [{'name': 'dkim', 'timeout': 20}],
        'policy': {'default': {'dkim': {'fail': 'tag', 'temperror': 'tempfail'}}},
    })

    signed = dt.sign(message('slow key'), 'rsa2048.pem', 'example.org', 'slow')
    r = send(mx, 'alice@example.org', [RCPT], signed)
    reply_is(r['dot'], 451, None, 'key lookup times out: temperror -> tempfail: 451')
    ok(('slow._domainkey.example.org', 'TXT') in [(q.lower(), t) for q, t in dns.queries],
       'the key was asked for, the server never answered')
    like(mx.log(), r'filter=dkim .*result=temperror', 'log: result=temperror (the resolver gave up)')

    # One slow key, one good one: the good one passes; pass wins.
    msg = dt.sign(dt.sign(message('slow and good'), 'rsa2048.pem', 'example.org', 'slow'),
                  'ed25519.pem', 'example.org', 'ed', alg='ed25519-sha256')
    r = send(mx, 'alice@example.org', [RCPT], msg)
    reply_is(r['dot'], 250, None, 'slow key next to a good signature: 250 (pass wins)')
    ok(up.wait_messages(1), 'relayed')
    if up.messages:
        like(up.messages[0].data, r'dkim=pass header\.d=example\.org header\.s=ed',
             'dkim=pass for the good signature')
        like(up.messages[0].data, r'dkim=temperror header\.d=example\.org header\.s=slow',
             'dkim=temperror for the slow one')
    # the 451 came before this message was sent, and this one has arrived
    is_(up.transactions, 1, 'only that one relayed')
    mx.finish()


run(main, timeout=90)
