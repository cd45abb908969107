#!/usr/bin/python3
# N instances, one state: two frontmx processes behind a real HAProxy
# (Debian's, send-proxy-v2, loopback) share one redis-server.  HAProxy
# has one frontend pinned to each instance (so the test chooses which one
# a session reaches) and a round-robin one.  A triplet greylisted through
# instance A passes when retried through B after the delay, and the pass
# whitelists the network on A too; a rate limit of 3 per client address
# counts the messages of both instances (the 4th, whichever instance it
# reaches, is refused), and the greylisted first attempt counted nothing.
# Each instance sees the real client address from the PROXY v2 header.
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open, start_process  # noqa: E402
from fmx_redis import RedisServer  # noqa: E402

HAPROXY = '/usr/sbin/haproxy'
DELAY = 2
RCPT = 'bob@example.com'


def instance(up, redis, name):
    mx = Frontmx(up, start=False, name=name)
    mx.write_conf({
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.1']}],
        'redis': {'address': redis.address, 'timeout': 5},
        'relay': {'domains': ['example.com'], 'networks': []},
        'filters': [{'name': 'greylist', 'options': {'delay': DELAY, 'retry_window': 60}},
                    {'name': 'ratelimit', 'options': {'client_address': '3/60'}}],
    })
    mx.start()
    return mx


def haproxy(a, b):
    d = tmpdir('fmx-haproxy-')
    ports = {'a': free_port(), 'b': free_port(), 'rr': free_port()}
    cfg = os.path.join(d, 'haproxy.cfg')
    with open(cfg, 'w') as f:
        f.write('''global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend via_a
    bind 127.0.0.1:%(a)d
    default_backend mx_a

frontend via_b
    bind 127.0.0.1:%(b)d
    default_backend mx_b

frontend farm
    bind 127.0.0.1:%(rr)d
    default_backend mx_all

backend mx_a
    server a 127.0.0.1:%(pa)d send-proxy-v2

backend mx_b
    server b 127.0.0.1:%(pb)d send-proxy-v2

backend mx_all
    balance roundrobin
    server a 127.0.0.1:%(pa)d send-proxy-v2
    server b 127.0.0.1:%(pb)d send-proxy-v2
''' % dict(ports, pa=a.port, pb=b.port))
    p = subprocess.run([HAPROXY, '-c', '-f', cfg], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=20)
    is_(p.returncode, 0, 'haproxy -c accepts the configuration')
    proc = start_process([HAPROXY, '-db', '-f', cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ok(wait_for(lambda: all(port_open(x) for x in ports.values()), 15), 'haproxy listens')
    return proc, ports


def send(port, source, sender, data=True):
    c = SmtpClient(port, source=source, timeout=20)
    g = c.greeting()
    if g.code != 220:
        return g, None
    c.ehlo('client.example')
    c.cmd('MAIL FROM:<%s>' % sender)
    r = c.cmd('RCPT TO:<%s>' % RCPT)
    dot = None
    if data and r.code == 250:
        _, dot = c.data('Subject: farm %s\r\n\r\nhello\r\n' % sender)
    c.quit()
    return r, dot


def main():
    redis = RedisServer()
    up = Upstream()
    a = instance(up, redis, 'frontmx-a')
    b = instance(up, redis, 'frontmx-b')
    _proc, P = haproxy(a, b)

    # greylisted through A, retried through B
    r, _ = send(P['a'], '127.0.1.1', 'alice@sender.example')
    reply_is(r, 451, '4.7.1', 'through A: first attempt greylisted')
    t0 = time.time()
    like(a.log(), r'client=127\.0\.1\.1', 'A sees the real client address (PROXY v2)')
    r, _ = send(P['b'], '127.0.1.1', 'alice@sender.example')
    reply_is(r, 451, '4.7.1', 'through B before the delay: greylisted too (the same triplet)')
    time.sleep(max(0, t0 + DELAY + 0.3 - time.time()))
    r, dot = send(P['b'], '127.0.1.1', 'alice@sender.example')
    reply_is(r, 250, None, 'through B after the delay: the triplet A greylisted passes')
    reply_is(dot, 250, None, 'and B relays the message')
    like(b.log(), r'filter=greylist phase=rcpt result=pass', 'B logged the pass')
    r, dot = send(P['a'], '127.0.1.9', 'carol@other.example')
    reply_is(r, 250, None, 'the network B whitelisted passes at once through A')

    # one rate limit for both: 3 per client address per minute
    src = '127.0.2.1'
    r, _ = send(P['a'], src, 'r0@s.example')
    reply_is(r, 451, '4.7.1', 'rate limit client: greylisted first (through A)')
    t0 = time.time()
    time.sleep(max(0, t0 + DELAY + 0.3 - time.time()))
    for i, via in enumerate(['b', 'a', 'b']):
        # the first is the greylisted triplet's retry; it whitelists the network
        r, dot = send(P[via], src, 'r%d@s.example' % i)
        reply_is(r, 250, None, 'message %d through %s: within the limit' % (i + 1, via.upper()))
        reply_is(dot, 250, None, 'message %d relayed' % (i + 1))
    is_(redis.cli('ZCARD', 'fmx:rl:client_address:%s' % src), '3',
        'one counter for both instances holds the 3 messages (the greylisted attempt did not count)')
    for via in ('a', 'b'):
        r, _ = send(P[via], src, 'r9@s.example')
        reply_is(r, 451, '4.7.1', '4th message through %s: refused by the shared limit' % via.upper())
        like(r.text, r'Rate limit exceeded \(client_address\)', 'by the ratelimit filter (%s)' % via.upper())

    # the round-robin frontend reaches both; state is the same either way
    for i in range(4):
        r, dot = send(P['rr'], '127.0.1.%d' % (20 + i), 'rr%d@s.example' % i)
        reply_is(r, 250, None, 'round robin %d: whitelisted network passes on whichever instance' % i)
    ok('rr0@s.example' in a.log() + b.log() and 'rr1@s.example' in a.log() + b.log(),
       'round-robin sessions were served')
    ok(any('rr%d@s.example' % i in a.log() for i in range(4)) and
       any('rr%d@s.example' % i in b.log() for i in range(4)),
       'by both instances')

    a.finish()
    b.finish()


run(main, timeout=120)
