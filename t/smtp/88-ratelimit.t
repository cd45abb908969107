#!/usr/bin/python3
# The ratelimit filter against a real redis-server: for each key kind
# (client_address, client_network, sender, rcpt_domain, and auth_user
# through a submission listener: STARTTLS, AUTH relayed to a scripted
# upstream) N messages pass and the N+1st gets 451 4.7.1 naming the kind,
# at RCPT, and nothing of it is relayed; authenticated clients are not
# greylisted (the unauthenticated session from the same address is); after the window it passes again;
# the keys carry TTLs.  A greylisted client that retries is not locked
# out: greylisted attempts never count (the count is taken at DATA), so
# with a limit of 2 its first two real messages pass.  An RCPT refused
# for another reason does not count either.
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_redis import RedisServer, sample, scrape  # noqa: E402
from fmx_tls import TlsClient, client_ctx, listener, make_cert  # noqa: E402
from fmx_auth import AuthUpstream, frontmx_listeners_args, plain_ir  # noqa: E402

WINDOW = 5     # generous: the 3 messages must fall in one window on a loaded machine


def send(mx, source, sender, rcpt):
    """One message; returns (RCPT reply, final reply or None)."""
    c = SmtpClient(mx.port, source=source)
    c.start()
    r = c.cmd('MAIL FROM:<%s>' % sender)
    reply_is(r, 250, None, 'MAIL from %s' % source)
    r = c.cmd('RCPT TO:<%s>' % rcpt)
    dot = None
    if r.code == 250:
        _, dot = c.data('Subject: rl %s %s\r\n\r\nhello\r\n' % (sender, rcpt))
    c.quit()
    return r, dot


def limited(kind, conf_value, sends, redis, up):
    """A frontmx with the one limit kind=conf_value; sends is a list of
    (source, sender, rcpt): all but the last pass, the last is refused."""
    mport = free_port()
    mx = Frontmx(up, conf={
        'metrics': {'listen': '127.0.0.1:%d' % mport},
        'redis': {'address': redis.address, 'timeout': 5},
        'relay': {'domains': ['example.com', 'other.example'], 'networks': []},
        'filters': [{'name': 'ratelimit', 'options': {kind: conf_value}}],
    })
    mx.mport = mport
    before = len(up.messages)
    for i, (src, sender, rcpt) in enumerate(sends[:-1]):
        r, dot = send(mx, src, sender, rcpt)
        reply_is(r, 250, None, '%s: message %d within the limit: RCPT 250' % (kind, i + 1))
        reply_is(dot, 250, None, '%s: message %d relayed' % (kind, i + 1))
    src, sender, rcpt = sends[-1]
    r, dot = send(mx, src, sender, rcpt)
    reply_is(r, 451, '4.7.1', '%s: message %d (N+1) gets 451 4.7.1 at RCPT' % (kind, len(sends)))
    like(r.text, r'Rate limit exceeded \(%s\), try again in \d+ seconds' % kind,
         '%s: the reply names the limit and when to retry' % kind)
    is_(len(up.messages) - before, len(sends) - 1, '%s: the refused message was not relayed' % kind)
    m = scrape(mport)
    is_(sample(m, 'frontmx_ratelimit_total', key=kind, result='exceeded'), 1.0,
        '%s: frontmx_ratelimit_total{key="%s",result="exceeded"} 1' % (kind, kind))
    is_(sample(m, 'frontmx_ratelimit_total', key=kind, result='ok'), float(len(sends) - 1),
        '%s: and ok for each counted message' % kind)
    return mx


def authenticated(redis):
    """auth_user 2/60, and greylisting that authenticated clients skip."""
    mxname = 'mx.test.example'
    certs = make_cert(tmpdir('fmx-rl-auth-'), mxname)
    ctx = client_ctx(certs.cert)
    up = AuthUpstream(users={'alice': 'secret'})
    mx = frontmx_listeners_args(up, [listener('starttls', certs, auth=True)], conf={
        'redis': {'address': redis.address, 'timeout': 5},
        'relay': {'domains': ['example.com'], 'networks': []},
        'filters': [{'name': 'greylist', 'options': {'delay': 600}},
                    {'name': 'ratelimit', 'options': {'auth_user': '2/60'}}]},
        name='frontmx-auth')

    def session(i, login=True):
        c = TlsClient(mx.ports[0])
        c.greeting()
        c.ehlo('submit.example')
        r, err = c.starttls(ctx, mxname)
        ok(err is None, 'session %d: STARTTLS (%s)' % (i, err))
        c.ehlo('submit.example')
        if login:
            reply_is(c.cmd('AUTH PLAIN ' + plain_ir('alice', 'secret')), 235, '2.7.0',
                     'session %d: AUTH PLAIN' % i)
        res = c.transaction('alice%d@sender.example' % i, ['bob@example.com'],
                            b'Subject: auth %d\r\n\r\nhello\r\n' % i)
        c.quit()
        return res

    for i in (1, 2):
        res = session(i)
        reply_is(res['rcpt'][0], 250, None, 'authenticated message %d: not greylisted, '
                 'within auth_user 2/60' % i)
        reply_is(res['dot'], 250, None, 'authenticated message %d relayed' % i)
    res = session(3)
    reply_is(res['rcpt'][0], 451, '4.7.1', 'authenticated message 3: auth_user limit')
    like(res['rcpt'][0].text, r'Rate limit exceeded \(auth_user\)', 'the reply names auth_user')
    ok('fmx:rl:auth_user:alice' in redis.keys('fmx:rl:auth_user:*'), 'the key is the user name')
    res = session(4, login=False)
    reply_is(res['rcpt'][0], 451, '4.7.1', 'the same client unauthenticated: greylisted')
    like(res['rcpt'][0].text, r'(?i)greylisted', 'by the greylist filter')
    mx.finish()


def main():
    redis = RedisServer()
    authenticated(redis)
    up = Upstream()

    # client_address: the recovery after the window too
    mx = limited('client_address', '2/%d' % WINDOW, [
        ('127.0.1.1', 'a1@s.example', 'bob@example.com'),
        ('127.0.1.1', 'a2@s.example', 'carl@example.com'),
        ('127.0.1.1', 'a3@s.example', 'dora@other.example')], redis, up)
    key = 'fmx:rl:client_address:127.0.1.1'
    is_(redis.cli('ZCARD', key), '2', 'the window holds the 2 counted messages, not the refused one')
    t = redis.ttl(key)
    ok(t is not None and 0 < t <= WINDOW, 'the key has a TTL of at most the window (%s)' % t)
    r, _ = send(mx, '127.0.1.2', 'a4@s.example', 'bob@example.com')
    reply_is(r, 250, None, 'another address of the network is not limited by it')
    time.sleep(WINDOW + 0.3)
    r, dot = send(mx, '127.0.1.1', 'a5@s.example', 'bob@example.com')
    reply_is(r, 250, None, 'client_address: after the window, RCPT 250 again')
    reply_is(dot, 250, None, 'client_address: and relayed')
    like(mx.log(), r'filter=ratelimit phase=rcpt result=exceeded', 'the refusal is logged with its result')
    mx.finish()

    mx = limited('client_network', '2/60', [
        ('127.0.2.1', 'n1@s.example', 'bob@example.com'),
        ('127.0.2.2', 'n2@s.example', 'bob@example.com'),
        ('127.0.2.3', 'n3@s.example', 'bob@example.com')], redis, up)
    ok('fmx:rl:client_network:127.0.2.0/24' in redis.keys('fmx:rl:client_network:*'),
       'client_network: the key is the /24')
    mx.finish()

    mx = limited('sender', '2/60', [
        ('127.0.3.1', 'Same@Sender.example', 'bob@example.com'),
        ('127.0.4.1', 'same@sender.example', 'bob@example.com'),
        ('127.0.5.1', 'SAME@sender.example', 'bob@example.com')], redis, up)
    r, _ = send(mx, '127.0.3.1', '', 'bob@example.com')
    reply_is(r, 250, None, 'sender: the null sender is not limited (bounces would share one key)')
    mx.finish()

    mx = limited('rcpt_domain', '2/60', [
        ('127.0.6.1', 'd1@s.example', 'x@other.example'),
        ('127.0.7.1', 'd2@s.example', 'y@Other.Example'),
        ('127.0.8.1', 'd3@s.example', 'z@other.example')], redis, up)
    r, _ = send(mx, '127.0.8.1', 'd3@s.example', 'z@example.com')
    reply_is(r, 250, None, 'rcpt_domain: another domain is not limited by it')
    mx.finish()

    # Greylisted retries do not count: limit 2 per client address.
    mx = Frontmx(up, conf={
        'redis': {'address': redis.address, 'timeout': 5},
        'relay': {'domains': ['example.com'], 'networks': []},
        'filters': [{'name': 'greylist', 'options': {'delay': 2, 'retry_window': 60}},
                    {'name': 'ratelimit', 'options': {'client_address': '2/60'}}],
    })
    src = '127.0.10.1'
    r, _ = send(mx, src, 'g@s.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'greylist + ratelimit: first attempt greylisted')
    like(r.text, r'(?i)greylisted', 'by the greylist filter')
    t0 = time.time()
    for i in range(3):
        r, _ = send(mx, src, 'g@s.example', 'bob@example.com')
        reply_is(r, 451, '4.7.1', 'early retry %d greylisted' % (i + 1))
    is_(redis.keys('fmx:rl:client_address:%s' % src), [], 'greylisted attempts counted nothing')
    time.sleep(max(0, t0 + 2.3 - time.time()))
    r, dot = send(mx, src, 'g@s.example', 'bob@example.com')
    reply_is(r, 250, None, 'after the delay the retry passes: not locked out by its 4 retries')
    reply_is(dot, 250, None, 'and is relayed')
    r, dot = send(mx, src, 'g2@s.example', 'bob@example.com')
    reply_is(r, 250, None, 'second message (whitelisted network) within the limit')
    reply_is(dot, 250, None, 'relayed')
    is_(redis.cli('ZCARD', 'fmx:rl:client_address:%s' % src), '2', 'exactly the 2 relayed messages counted')
    r, _ = send(mx, src, 'g3@s.example', 'bob@example.com')
    reply_is(r, 451, '4.7.1', 'third message: the rate limit')
    like(r.text, r'Rate limit exceeded', 'by the ratelimit filter')
    # A recipient refused by relay control is not counted either.
    c = SmtpClient(mx.port, source='127.0.1.9')
    c.start()
    c.cmd('MAIL FROM:<r@s.example>')
    r = c.cmd('RCPT TO:<x@not-ours.example>')
    reply_is(r, 554, '5.7.1', 'recipient outside relay.domains refused')
    r = c.cmd('DATA')
    ok(r.code >= 500, 'DATA without recipients refused (%d)' % r.code)
    c.quit()
    is_(redis.keys('fmx:rl:client_address:127.0.1.9'), [], 'a transaction without recipients counts nothing')
    mx.finish()


run(main, timeout=120)
