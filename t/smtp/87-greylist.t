#!/usr/bin/python3
# The greylist filter against a real redis-server (t/lib/fmx_redis.py):
# first attempt of a (network, sender, recipient) triplet 451 4.7.1 with a
# retry hint, a retry before the delay 451 again, after the delay 250 and
# the message relayed; the pass whitelists the client's /24 (another
# sender from another address of it passes at once); a triplet retried
# after delay + retry_window is greylisted afresh; every key Redis holds
# has a TTL; relay.networks, SPF pass for a domain on spf_allow and a
# domain whose policy maps greylisted to accept are not greylisted
# (authenticated clients: t/smtp/88-ratelimit.t, which has a submission
# listener).
# An IPv6 client's network is its /64 (a listener on [::1]).
# Clients come from distinct loopback /24s (127.0.N.1), so each part of
# the test has its own networks.
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from fmx_redis import RedisServer, sample, scrape  # noqa: E402

DELAY = 2
WINDOW = 2


def attempt(mx, source, sender, rcpt, send=False):
    """One session: MAIL, RCPT (and the message when send); the RCPT reply
    (and the final reply)."""
    c = SmtpClient(mx.port, source=source)
    c.start()
    r = c.cmd('MAIL FROM:<%s>' % sender)
    if r.code != 250:
        c.close()
        return r, None
    r = c.cmd('RCPT TO:<%s>' % rcpt)
    dot = None
    if send and r.code == 250:
        _, dot = c.data('Subject: greylist %s %s\r\n\r\nhello\r\n' % (sender, rcpt))
    c.quit()
    return r, dot


def main():
    redis = RedisServer()
    dns = FakeDNS({'bank.example': [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')],
                   'shop.example': [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')]}).start()
    register_cleanup(dns.stop)
    up = Upstream()
    mx = Frontmx(up, start=False)
    port6 = free_port()
    mport = free_port()
    mx.write_conf({
        'metrics': {'listen': '127.0.0.1:%d' % mport},
        'listen': [{'address': '127.0.0.1:%d' % mx.port}, {'address': '[::1]:%d' % port6}],
        'redis': {'address': redis.address, 'timeout': 5},
        'dns': {'forward': [dns.address]},
        'relay': {'domains': ['example.com', 'lists.example.org'],
                  'networks': ['127.0.9.0/24']},
        'filters': [{'name': 'spf'},
                    {'name': 'greylist', 'options': {
                        'delay': DELAY, 'retry_window': WINDOW, 'whitelist_time': 600,
                        'spf_allow': ['bank.example', '.trusted.example']}}],
        'policy': {'default': {'spf': {'fail': 'reject'}},
                   'domains': [{'domain': 'lists.example.org',
                                'greylist': {'greylisted': 'accept'}}]},
    })
    mx.start()

    # 1. first attempt, early retry, retry after the delay
    r, _ = attempt(mx, '127.0.1.1', 'alice@sender.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'first attempt of a triplet: 451 4.7.1')
    like(r.text, r'(?i)greylisted.*try again in \d+ seconds', 'the reply says why and when to retry')
    first = time.time()
    r, _ = attempt(mx, '127.0.1.1', 'alice@sender.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'retry before the delay: 451 4.7.1 again')
    is_(len(up.messages), 0, 'nothing relayed while greylisted')
    time.sleep(max(0, first + DELAY + 0.3 - time.time()))
    r, dot = attempt(mx, '127.0.1.1', 'alice@sender.example', 'bob@example.com', send=True)
    reply_is(r, 250, None, 'retry after the delay: RCPT 250')
    reply_is(dot, 250, None, 'and the message is relayed')
    is_(len(up.messages), 1, 'upstream got exactly that message')
    like(mx.log(), r'filter=greylist phase=rcpt result=pass', 'the pass is logged')

    # 2. whitelisting: the /24 passed, so another address and sender of it pass at once
    r, dot = attempt(mx, '127.0.1.77', 'carol@elsewhere.example', 'dave@example.com', send=True)
    reply_is(r, 250, None, 'same /24, other sender and recipient: passes at once (whitelisted)')
    reply_is(dot, 250, None, 'whitelisted network: message relayed')
    r, _ = attempt(mx, '127.0.2.1', 'carol@elsewhere.example', 'dave@example.com')
    reply_is(r, 451, '4.7.1', 'another /24 is not whitelisted by it')

    # 3. TTLs on every key: Redis never grows without bound
    keys = redis.keys('fmx:gl:*')
    ok('fmx:gl:w:127.0.1.0/24' in keys, 'the whitelisted network is a key (%s)' % keys)
    ttls = dict((k, redis.ttl(k)) for k in keys)
    ok(keys and all(t is not None and t > 0 for t in ttls.values()),
       'every greylist key has a TTL (%s)' % ttls)
    ok(0 < ttls.get('fmx:gl:w:127.0.1.0/24', 0) <= 600, 'whitelist TTL is whitelist_time')
    trip = [k for k in keys if k.startswith('fmx:gl:t:127.0.2.0/24 ')]
    is_(len(trip), 1, 'the pending triplet is one key')
    ok(trip and 0 < ttls[trip[0]] <= DELAY + WINDOW, 'triplet TTL is at most delay + retry_window')
    ok(not any(k.startswith('fmx:gl:t:127.0.1.0/24 ') for k in keys),
       'a triplet that passed is forgotten (its network is whitelisted)')

    # 4. expiry: a retry after delay + retry_window starts over
    r, _ = attempt(mx, '127.0.3.1', 'eve@late.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'expiry: first attempt greylisted')
    time.sleep(DELAY + WINDOW + 0.5)
    r, _ = attempt(mx, '127.0.3.1', 'eve@late.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'retry after delay + retry_window: greylisted again')
    time.sleep(DELAY + 0.3)
    r, _ = attempt(mx, '127.0.3.1', 'eve@late.example', 'bob@example.com')
    reply_is(r, 250, None, 'and passes after a new delay')

    # 5. not greylisted: relay.networks, SPF pass for an allowed domain, policy
    r, _ = attempt(mx, '127.0.9.1', 'frank@any.example', 'bob@example.com')
    reply_is(r, 250, None, 'client in relay.networks: not greylisted')
    r, _ = attempt(mx, '127.0.4.1', 'gina@bank.example', 'bob@example.com')
    reply_is(r, 250, None, 'SPF pass for a domain on spf_allow: not greylisted')
    r, _ = attempt(mx, '127.0.4.1', 'hank@shop.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'SPF pass for a domain not on spf_allow: greylisted')
    r, _ = attempt(mx, '127.0.5.1', 'ivy@sender.example', 'list@lists.example.org')
    reply_is(r, 250, None, 'domain whose policy maps greylisted to accept: passes')
    r, _ = attempt(mx, '127.0.5.1', 'ivy@sender.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'same client and sender to a greylisting domain: 451')
    ok(not any(k.startswith('fmx:gl:t:127.0.9.0/24') for k in redis.keys('fmx:gl:*')),
       'relay.networks clients leave nothing in Redis')

    # 6. case: the triplet is case-insensitive
    r, _ = attempt(mx, '127.0.6.1', 'Jo@Case.Example', 'Bob@Example.com')
    reply_is(r, 451, '4.7.1', 'mixed-case triplet greylisted')
    ok(any(k == 'fmx:gl:t:127.0.6.0/24 jo@case.example bob@example.com'
           for k in redis.keys('fmx:gl:t:127.0.6.0/24*')), 'stored in lower case')

    # 7. IPv6: the network is the client's /64
    c = SmtpClient(port6, host='::1')
    c.start()
    c.cmd('MAIL FROM:<v6@sender.example>')
    r = c.cmd('RCPT TO:<bob@example.com>')
    c.quit()
    reply_is(r, 451, '4.7.1', 'IPv6 client: greylisted')
    ok('fmx:gl:t:::/64 v6@sender.example bob@example.com' in redis.keys('fmx:gl:t:::*'),
       'its triplet names the /64 (%s)' % redis.keys('fmx:gl:t:::*'))

    # 8. frontmx_greylist_total{result}
    m = scrape(mport)
    ok(sample(m, 'frontmx_greylist_total', result='greylisted') >= 10,
       'metrics: greylisted counted (%s)' % sample(m, 'frontmx_greylist_total', result='greylisted'))
    is_(sample(m, 'frontmx_greylist_total', result='pass'), 2.0, 'metrics: the 2 passes')
    ok(sample(m, 'frontmx_greylist_total', result='whitelisted') >= 1, 'metrics: whitelisted counted')
    is_(sample(m, 'frontmx_greylist_total', result='skipped'), 2.0,
        'metrics: the relay-network and SPF-allow skips')
    is_(sample(m, 'frontmx_redis_errors_total'), 0.0, 'metrics: no Redis error')

    mx.finish()


run(main, timeout=90)
