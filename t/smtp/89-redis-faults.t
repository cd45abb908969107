#!/usr/bin/python3
# Redis in trouble is a filter error, never a hang or a crash:
#  - redis-server killed mid-test: greylist and ratelimit each apply their
#    default on_error (tempfail: a 4xx, nothing relayed), the client gets an
#    answer; on_error = "accept" through SIGHUP relays; redis-server started
#    again on the same port: both filters work again without restarting
#    frontmx (reconnect with backoff);
#  - a "Redis" that accepts and never answers: the command times out after
#    redis.timeout, on_error applies, the connection is dropped;
#  - a wrong password: AUTH refused is logged (without the password) and
#    on_error applies; SIGHUP with the right one, then with another server
#    and database: the new settings are used at once;
#  - unix:PATH addresses;
#  - replies that come after the session is gone (a slow Redis behind a
#    delaying proxy, a silent one whose timeout fires after the client
#    left): dropped, no callback into a freed session (ASan), frontmx
#    keeps serving.
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_redis import DelayProxy, RedisServer, SilentServer, sample, scrape  # noqa: E402

RCPT = 'bob@example.com'


def rcpt(mx, source, sender, send=False):
    """MAIL + RCPT (+ the message): (RCPT reply, final reply or None)."""
    c = SmtpClient(mx.port, source=source, timeout=20)
    c.start()
    reply_is(c.cmd('MAIL FROM:<%s>' % sender), 250, None, 'MAIL %s' % sender)
    r = c.cmd('RCPT TO:<%s>' % RCPT)
    dot = None
    if send and r.code == 250:
        _, dot = c.data('Subject: faults %s\r\n\r\nhello\r\n' % sender)
    c.quit()
    return r, dot


def conf(redis_address, filters, mport=None, **redis_extra):
    r = {'address': redis_address, 'timeout': 1}
    r.update(redis_extra)
    c = {'redis': r, 'relay': {'domains': ['example.com'], 'networks': []},
         'filters': filters}
    if mport:
        c['metrics'] = {'listen': '127.0.0.1:%d' % mport}
    return c


GREY = {'name': 'greylist', 'options': {'delay': 60}}
RL = {'name': 'ratelimit', 'options': {'client_address': '1000/60'}}


def killed_and_restarted(up):
    redis = RedisServer()
    mport = free_port()
    gl = Frontmx(up, conf=conf(redis.address, [GREY], mport), name='greylist-mx')
    rl = Frontmx(up, conf=conf(redis.address, [RL]), name='ratelimit-mx')
    r, _ = rcpt(gl, '127.0.1.1', 'a@s.example')
    reply_is(r, 451, '4.7.1', 'Redis up: greylisted')
    r, dot = rcpt(rl, '127.0.1.1', 'a@s.example', send=True)
    reply_is(dot, 250, None, 'Redis up: ratelimit passes')
    n = len(up.messages)

    redis.kill()
    for i in range(3):
        r, _ = rcpt(gl, '127.0.1.2', 'k%d@s.example' % i)
        ok(400 <= r.code < 500, 'Redis killed, attempt %d: greylist answers 4xx (on_error '
           'default tempfail): %r' % (i + 1, r))
        unlike(r.text, r'(?i)greylisted', 'and it is the error, not a greylisting')
        r, dot = rcpt(rl, '127.0.1.2', 'k%d@s.example' % i, send=True)
        ok(400 <= r.code < 500, 'Redis killed, attempt %d: ratelimit answers 4xx: %r' % (i + 1, r))
    is_(len(up.messages), n, 'nothing relayed while Redis is down (never a silent accept)')
    like(gl.log(), r'filter=greylist phase=rcpt failed, on_error=tempfail', 'greylist: on_error logged')
    like(rl.log(), r'filter=ratelimit phase=rcpt failed, on_error=tempfail', 'ratelimit: on_error logged')
    like(gl.log(), r'redis 127\.0\.0\.1:\d+: (connection lost|cannot connect)', 'the lost connection is logged')
    m = scrape(mport)
    ok(sample(m, 'frontmx_redis_errors_total') >= 3, 'frontmx_redis_errors_total counts the failures (%s)'
       % sample(m, 'frontmx_redis_errors_total'))
    ok(sample(m, 'frontmx_greylist_total', result='error') >= 3, 'frontmx_greylist_total{result="error"} too')

    # on_error = "accept" (SIGHUP): mail flows unchecked while Redis is down
    gl.write_conf(conf(redis.address, [dict(GREY, on_error='accept')], mport))
    gl.hup()
    ok(wait_for(lambda: 'configuration reloaded' in gl.log(), 10), 'SIGHUP taken')
    r, dot = wait_for(lambda: (lambda x: x if x[0].code == 250 else None)(
        rcpt(gl, '127.0.1.3', 'acc@s.example', send=True)), 10) or (Reply(0, []), None)
    reply_is(r, 250, None, 'on_error = "accept": RCPT 250 with Redis down')
    reply_is(dot, 250, None, 'and the message relayed')

    # Redis back on the same port: recovery without restarting frontmx
    redis.start()
    got = wait_for(lambda: rcpt(rl, '127.0.1.4', 'back@s.example', send=True)[1], 15)
    ok(got is not None and got.code == 250, 'Redis restarted: ratelimit counts again (%r)' % got)
    ok(wait_for(lambda: redis.keys('fmx:rl:client_address:127.0.1.4'), 10),
       'the count is in the restarted Redis (EVAL after NOSCRIPT)')
    gl.write_conf(conf(redis.address, [GREY], mport))
    gl.hup()
    r = wait_for(lambda: (lambda x: x if 'reylisted' in x.text else None)(
        rcpt(gl, '127.0.1.5', 'back@s.example')[0]), 15)
    ok(r is not None, 'Redis restarted: greylist works again (%r)' % r)
    ok(gl.alive() and rl.alive(), 'both frontmx still run')
    gl.finish()
    rl.finish()
    redis.kill()


def silent(up):
    s = SilentServer()
    mx = Frontmx(up, conf=conf(s.address, [GREY]), name='silent-mx')
    t0 = time.time()
    r, _ = rcpt(mx, '127.0.2.1', 'quiet@s.example')
    took = time.time() - t0
    ok(400 <= r.code < 500, 'Redis that never answers: 4xx (on_error) %r' % r)
    diag('answered after %.1f s (redis.timeout 1)' % took)
    like(mx.log(), r'redis: greylist: no answer within 1s', 'the timeout is logged')
    like(mx.log(), r'closing the connection: a command timed out', 'and the stuck connection dropped')
    ok(s.accepted() >= 1 and b'EVALSHA' in s.received,
       'the command did reach the silent server (%d connections, %r)' % (s.accepted(), s.received[:60]))
    # the timeout fires after the client left: no callback into the freed session
    c = SmtpClient(mx.port, source='127.0.2.2')
    c.start()
    c.cmd('MAIL FROM:<gone@s.example>')
    c.send(b'RCPT TO:<%s>\r\n' % RCPT.encode())
    time.sleep(0.1)
    c.vanish()
    time.sleep(1.5)
    r, _ = rcpt(mx, '127.0.2.3', 'after@s.example')
    ok(400 <= r.code < 500, 'frontmx serves the next session (%r)' % r)
    mx.finish()


def password_and_sighup(up):
    redis = RedisServer(password='right-pass')
    other = RedisServer(unixsocket=True)
    mx = Frontmx(up, conf=conf(redis.address, [GREY], password='wrong-pass'), name='auth-mx')
    r, _ = rcpt(mx, '127.0.3.1', 'pw@s.example')
    ok(400 <= r.code < 500, 'wrong password: 4xx (on_error) %r' % r)
    unlike(r.text, r'(?i)greylisted', 'not a greylisting')
    like(mx.log(), r'redis 127\.0\.0\.1:\d+: AUTH refused', 'AUTH refused is logged')
    unlike(mx.log(), r'wrong-pass', 'the password is not logged')
    is_(redis.keys('fmx:*'), [], 'nothing written without AUTH')

    mx.write_conf(conf(redis.address, [GREY], password='right-pass'))
    mx.hup()
    r = wait_for(lambda: (lambda x: x if 'reylisted' in x.text else None)(
        rcpt(mx, '127.0.3.2', 'pw@s.example')[0]), 10)
    ok(r is not None, 'SIGHUP with the right password: greylisting works (%r)' % r)
    ok(redis.keys('fmx:gl:t:127.0.3.0/24*'), 'the triplet is in that Redis')

    mx.write_conf(conf(other.unix_address, [GREY], db=2))
    mx.hup()
    r = wait_for(lambda: (lambda x: x if 'reylisted' in x.text and other.keys('fmx:gl:*', db=2)
                          else None)(rcpt(mx, '127.0.3.3', 'moved@s.example')[0]), 10)
    ok(r is not None, 'SIGHUP to another Redis (unix:PATH, db 2): used at once')
    is_(other.keys('fmx:gl:*', db=0), [], 'SELECT 2 on connect: nothing in db 0')
    # the server closes the idle connection (its timeout, CLIENT KILL): the
    # next command opens a new one at once and succeeds (SELECT 2 again)
    other.cli('CLIENT', 'KILL', 'TYPE', 'normal')
    ok(wait_for(lambda: 'connection lost' in mx.log(), 5, 0.01), 'the closed connection is noticed')
    r, _ = rcpt(mx, '127.0.3.5', 'killed@s.example')
    reply_is(r, 451, '4.7.1', 'after the server closed the connection: the next command succeeds')
    like(r.text, r'(?i)greylisted', 'greylisted, not on_error')
    ok(other.keys('fmx:gl:t:127.0.3.0/24 killed@*', db=2), 'in db 2 again')
    r, _ = rcpt(mx, '127.0.3.4', 'moved2@s.example')
    reply_is(r, 451, '4.7.1', 'greylisted through the new Redis')
    ok(other.keys('fmx:gl:t:127.0.3.0/24 moved2@*', db=2) and
       not redis.keys('fmx:gl:t:127.0.3.0/24 moved2@*'), 'its triplet is in the new one only')
    mx.finish()
    redis.kill()
    other.kill()


def late_replies(up):
    redis = RedisServer()
    slow = DelayProxy(redis.port, 0.8)
    mx = Frontmx(up, conf=conf(slow.address, [GREY, RL], timeout=5), name='late-mx')
    r, _ = rcpt(mx, '127.0.4.1', 'slow@s.example')
    reply_is(r, 451, '4.7.1', 'slow Redis within the timeout: greylisted')
    # sessions that leave while their command is in flight
    for i in range(3):
        c = SmtpClient(mx.port, source='127.0.4.%d' % (10 + i))
        c.start()
        c.cmd('MAIL FROM:<late%d@s.example>' % i)
        c.send(b'RCPT TO:<%s>\r\n' % RCPT.encode())
        time.sleep(0.1)
        if i == 2:
            c.send(b'RSET\r\nQUIT\r\n')
        c.vanish()
    before = slow.replies
    ok(wait_for(lambda: slow.replies > before, 10), 'the late replies did come back')
    time.sleep(1)
    time.sleep(0.3)
    ok(mx.alive(), 'frontmx alive after replies for sessions that are gone')
    r, _ = rcpt(mx, '127.0.4.1', 'slow@s.example')
    reply_is(r, 451, '4.7.1', 'and still answers from Redis')
    # a whitelisted network: the rate-limit count at DATA is in flight
    # when the client goes
    redis.cli('SET', 'fmx:gl:w:127.0.5.0/24', '1', 'PX', '600000')
    c = SmtpClient(mx.port, source='127.0.5.1', timeout=20)
    c.start()
    c.cmd('MAIL FROM:<data@s.example>')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'whitelisted: RCPT 250 through the slow Redis')
    before = slow.replies
    c.send(b'DATA\r\n')
    time.sleep(0.1)
    c.vanish()
    ok(wait_for(lambda: slow.replies > before, 10), 'the count\'s reply came back after the client left')
    time.sleep(0.5)
    r, dot = rcpt(mx, '127.0.5.2', 'data2@s.example', send=True)
    reply_is(dot, 250, None, 'the next client on that network is served and relayed')
    # SIGHUP mid-session, a command in flight: the new configuration points
    # at the Redis itself; the session started before gets its answer, a
    # session that starts after uses the new place
    c = SmtpClient(mx.port, source='127.0.6.1', timeout=20)
    c.start()
    c.cmd('MAIL FROM:<hup@s.example>')
    c.send(b'RCPT TO:<%s>\r\n' % RCPT.encode())
    mx.write_conf(conf(redis.address, [GREY, RL], timeout=5))
    mx.hup()
    r = c.reply()
    reply_is(r, 451, '4.7.1', 'SIGHUP while RCPT waits on Redis: the session gets its answer')
    like(r.text, r'(?i)greylisted', 'from Redis')
    reply_is(c.cmd('RSET'), 250, None, 'and goes on')
    c.quit()
    ok(wait_for(lambda: 'configuration reloaded' in mx.log(), 10), 'the reload is done')
    before = slow.replies
    r = wait_for(lambda: (lambda x: x if x.code == 250 else None)(
        rcpt(mx, '127.0.5.3', 'hup2@s.example', send=True)[1]), 10)
    reply_is(r, 250, None, 'a session after SIGHUP is served')
    is_(slow.replies, before, 'through the new address, not the slow proxy')
    mx.finish()
    redis.kill()


def config_errors():
    """frontmx -t: each bad redis or filter setting is a FILE:LINE error."""
    base = ('listen = ( { address = "127.0.0.1:2525"; } );\n'
            'upstream = { address = "127.0.0.1:25"; };\n')
    cases = [
        ('filters = ( { name = "greylist"; } );\n', 3, r'filter greylist keeps its state in Redis'),
        ('filters = ( { name = "ratelimit"; } );\n', 3, r'filter ratelimit keeps its state in Redis'),
        ('redis = { db = 1; };\n', 3, r"'redis' is missing 'address'"),
        ('redis = {\n address = "127.0.0.1"; };\n', 4, r"'redis.address' \"127.0.0.1\" must be"),
        ('redis = {\n address = "unix:relative.sock"; };\n', 4, r'absolute path'),
        ('redis = {\n address = "[::1:6379"; };\n', 4, r"must be"),
        ('redis = { address = "127.0.0.1:6379";\n password = ""; };\n', 4, r'redis.password'),
        ('redis = { address = "127.0.0.1:6379";\n db = 70000; };\n', 4, r'db'),
        ('redis = { address = "127.0.0.1:6379";\n timeout = 0; };\n', 4, r'timeout'),
        ('redis = { address = "127.0.0.1:6379";\n colour = 1; };\n', 4, r'colour'),
        ('redis = { address = "127.0.0.1:6379"; };\nfilters = ( { name = "greylist";\n'
         ' options = { delay = "soon"; }; } );\n', 4, r'filter greylist: option delay'),
        ('redis = { address = "127.0.0.1:6379"; };\nfilters = ( { name = "greylist";\n'
         ' options = { delai = 5; }; } );\n', 4, r'delai'),
        ('redis = { address = "127.0.0.1:6379"; };\nfilters = ( { name = "ratelimit";\n'
         ' options = { sender = "50 per hour"; }; } );\n', 4, r'filter ratelimit'),
        ('redis = { address = "127.0.0.1:6379"; };\nfilters = ( { name = "ratelimit";\n'
         ' options = { sender = "0/60"; }; } );\n', 4, r'filter ratelimit'),
        ('redis = { address = "127.0.0.1:6379"; };\nfilters = ( { name = "greylist"; } );\n'
         'policy = { default = {\n greylist = { greylistd = "accept"; }; }; };\n', 6, r'greylistd'),
    ]
    for text, line, what in cases:
        rc, out, path = run_frontmx_t(base + text)
        ok(rc not in (0, None), 'frontmx -t refuses: %s (exit %s)' % (what, rc))
        like(out, r'frontmx\.conf:%d: .*%s' % (line, what), 'at the line: %s' % out.strip()[:160])
    rc, out, _ = run_frontmx_t(base + 'redis = { address = "unix:/run/redis/redis.sock"; password = "x y"; '
                               'db = 3; timeout = 2; };\nfilters = ( { name = "greylist"; }, '
                               '{ name = "ratelimit"; options = { sender = "50/3600"; }; } );\n')
    is_(rc, 0, 'frontmx -t: a complete redis section with both filters is valid (%s)' % out.strip()[:200])


def main():
    config_errors()
    up = Upstream()
    killed_and_restarted(up)
    silent(up)
    password_and_sighup(up)
    late_replies(up)


run(main, timeout=150)
