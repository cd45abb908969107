#!/usr/bin/python3
# Prometheus metrics (issue 12 section 1): metrics.listen serves GET
# /metrics from its own thread.  Real SMTP traffic of each kind moves
# exactly the counters it should (a relayed message, one refused by a
# content rule, one the upstream tempfails, a RCPT refused by relay
# control, a connection over connections_per_ip, the upstream refusing
# connections, STARTTLS, AUTH good and bad, a reload that works and one
# that fails), and `promtool check metrics` (Debian's prometheus) passes
# on the scrape.  Hostile scrapers: a request left half-sent, one
# trickled byte by byte, more idle connections than metrics.connections,
# a 20 KB request line, POST (small and large body), other paths, many
# scrapes at once, scrapes during SIGHUP and while SMTP sessions are
# open; SMTP keeps flowing throughout.  SIGHUP moves metrics.listen.
# The dnsbl, greylist and ratelimit filters and the Redis client count
# through the same API: a listed client, a greylisted triplet, a rate
# limit hit and Redis killed show in the scrape.
# Configuration errors are FILE:LINE.
import os
import re
import socket
import subprocess
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open  # noqa: E402
from fmx_filters import content_filter, write_rules  # noqa: E402
from fmx_tls import make_cert, client_ctx, listener, TlsClient  # noqa: E402
from fmx_auth import AuthUpstream, frontmx_listeners_args, plain_ir  # noqa: E402
from fmx import register_cleanup  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from fmx_redis import RedisServer  # noqa: E402

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
MX = 'mx.test.example'
TIMEOUT = 3             # metrics.timeout in the test configuration
MAXCONN = 4             # metrics.connections


def body(subject, text=b'hello\r\n'):
    return b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: ' + subject + \
        b'\r\n\r\n' + text


# ---------------------------------------------------------------- HTTP

def http(port, request, timeout=5.0):
    """Send raw request bytes, read to EOF: (status or None, headers, body)."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    data = b''
    try:
        s.sendall(request)
        end = time.time() + timeout
        while time.time() < end:
            s.settimeout(max(0.05, end - time.time()))
            d = s.recv(65536)
            if not d:
                break
            data += d
    except OSError:
        pass
    finally:
        s.close()
    head, _, rest = data.partition(b'\r\n\r\n')
    m = re.match(rb'HTTP/1\.[01] (\d{3})', head)
    return (int(m.group(1)) if m else None), head.decode('latin-1'), rest


def get(port, path='/metrics', timeout=5.0):
    return http(port, b'GET ' + path.encode() + b' HTTP/1.0\r\nHost: x\r\n\r\n', timeout)


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text):
    """{(name, ((label, value), ...)): float}; None if a line is malformed."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = LINE.match(line)
        if not m:
            diag('unparsable metrics line: %r' % line)
            return None
        labels = tuple(LABEL.findall(m.group(2) or ''))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(port):
    st, head, b = get(port)
    if st != 200:
        diag('scrape: status %r %r' % (st, head))
        return None
    return parse(b.decode('utf-8'))


def val(s, name, **labels):
    """A sample's value (0 if absent); labels in the metric's order."""
    want = tuple(labels.items())
    for (n, l), v in s.items():
        if n == name and sorted(l) == sorted(want):
            return v
    return 0.0


def delta(before, after, name, **labels):
    return val(after, name, **labels) - val(before, name, **labels)


def promtool(text, name):
    p = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if not ok(p.returncode == 0, name):
        diag(p.stdout.decode(errors='replace')[-3000:])


def promtool_and_finish(mx, mp, what):
    promtool(get(mp)[2], '%s: promtool check metrics passes' % what)
    mx.finish()


def expect_deltas(before, after, what, rows):
    for row in rows:
        name, labels, want = row
        got = delta(before, after, name, **labels)
        if not ok(got == want, '%s: %s%s %+g' % (what, name, labels or '', want)):
            diag('  got %+g' % got)


def quiet_until(pred, timeout=10):
    return wait_for(pred, timeout, 0.05)


# ---------------------------------------------------------------- traffic

def send(mx, subject, text=b'hello\r\n', rcpt=RCPT):
    c = mx.client()
    c.start()
    r = c.transaction(SENDER, [rcpt], body(subject, text))
    c.quit()
    c.close()
    return r


def idle_sessions_gone(mx, mp):
    return quiet_until(lambda: (lambda s: s is not None and
                                val(s, 'frontmx_connections_active') == 0)(scrape(mp)))


def test_traffic(mx, up, mp):
    listener_addr = '127.0.0.1:%d' % mx.port
    ok(idle_sessions_gone(mx, mp), 'no session open before the traffic (the start probe gone)')
    s0 = scrape(mp)
    ok(s0 is not None, 'first scrape parses')

    msg = body(b'relayed')
    r = send(mx, b'relayed')
    reply_is(r['dot'], 250, None, 'relayed message: 250')
    idle_sessions_gone(mx, mp)
    s1 = scrape(mp)
    expect_deltas(s0, s1, 'relayed', [
        ('frontmx_connections_total', {'listener': listener_addr}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'connect', 'code': '220'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'helo', 'code': '250'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'mail', 'code': '250'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'rcpt', 'code': '250'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'data', 'code': '354'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'eom', 'code': '250'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'quit', 'code': '221'}, 1),
        ('frontmx_messages_total', {'result': 'relayed'}, 1),
        ('frontmx_messages_total', {'result': 'rejected'}, 0),
        ('frontmx_message_size_bytes_count', {}, 1),
        ('frontmx_message_size_bytes_sum', {}, len(msg)),
        ('frontmx_message_size_bytes_bucket', {'le': '1024'}, 1),
        ('frontmx_connections_active', {}, 0),
    ])
    ok(delta(s0, s1, 'frontmx_filter_duration_seconds_count', filter='content') >= 1,
       'relayed: the content filter\'s calls are timed')
    ok(delta(s0, s1, 'frontmx_upstream_reply_seconds_count') >= 4,
       'relayed: the upstream\'s replies are timed (greeting, EHLO, MAIL, RCPT, DATA, dot)')

    r = send(mx, b'bad', b'FORBIDDEN\r\n')
    reply_is(r['dot'], 550, '5.7.1', 'content rule: 550 5.7.1 at end of data')
    idle_sessions_gone(mx, mp)
    s2 = scrape(mp)
    expect_deltas(s1, s2, 'content rule', [
        ('frontmx_messages_total', {'result': 'rejected'}, 1),
        ('frontmx_messages_total', {'result': 'relayed'}, 0),
        ('frontmx_smtp_replies_total', {'stage': 'eom', 'code': '550'}, 1),
        ('frontmx_filter_results_total', {'filter': 'content', 'result': 'reject'}, 1),
        ('frontmx_filter_errors_total', {'filter': 'content', 'kind': 'error'}, 0),
    ])

    r = send(mx, b'tempfail-me')
    reply_is(r['dot'], 451, None, 'upstream 451 at end of data: the client gets 451')
    idle_sessions_gone(mx, mp)
    s3 = scrape(mp)
    expect_deltas(s2, s3, 'upstream tempfail', [
        ('frontmx_messages_total', {'result': 'tempfailed'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'eom', 'code': '451'}, 1),
        ('frontmx_upstream_errors_total', {'kind': 'reset'}, 0),
    ])

    r = send(mx, b'outside', rcpt='carol@elsewhere.example')
    reply_is(r['rcpt'][0], 554, '5.7.1', 'relay control: RCPT outside 554 5.7.1')
    idle_sessions_gone(mx, mp)
    s4 = scrape(mp)
    expect_deltas(s3, s4, 'relay denied', [
        ('frontmx_smtp_replies_total', {'stage': 'rcpt', 'code': '554'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'data', 'code': '554'}, 0),
    ])

    # connections_per_ip = 2: two sessions held open, the third is refused
    held = [mx.client(), mx.client()]
    for c in held:
        reply_is(c.greeting(), 220, None, 'limit: a held session gets its greeting')
    s5a = scrape(mp)
    is_(val(s5a, 'frontmx_connections_active'), 2.0, 'two sessions open: connections_active 2')
    third = mx.client()
    reply_is(third.greeting(), 421, '4.7.0', 'limit: the third connection from 127.0.0.1 gets 421')
    third.close()
    for c in held:
        c.quit()
        c.close()
    idle_sessions_gone(mx, mp)
    s5 = scrape(mp)
    expect_deltas(s4, s5, 'connection limit', [
        ('frontmx_connections_refused_total', {'reason': 'limit'}, 1),
        ('frontmx_connections_total', {'listener': listener_addr}, 2),
        ('frontmx_smtp_replies_total', {'stage': 'connect', 'code': '220'}, 2),
    ])

    # the upstream refuses connections: MAIL gets 4xx, one error counted
    up.unlisten()
    c = mx.client()
    c.start()
    r = c.cmd('MAIL FROM:<%s>' % SENDER)
    ok(r.code is not None and r.code // 100 == 4, 'upstream down: MAIL gets 4xx (%r)' % (r,))
    c.quit()
    c.close()
    up.listen()
    idle_sessions_gone(mx, mp)
    s6 = scrape(mp)
    expect_deltas(s5, s6, 'upstream refused', [
        ('frontmx_upstream_errors_total', {'kind': 'refused'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'mail', 'code': str(r.code)}, 1),
    ])
    return s6


def test_reloads(mx, mp):
    s0 = scrape(mp)
    mx.hup()
    ok(quiet_until(lambda: delta(s0, scrape(mp) or {}, 'frontmx_config_reloads_total',
                                 result='ok') == 1), 'SIGHUP: reloads{result="ok"} +1')
    good = mx.conf
    with open(mx.conffile, 'w') as f:
        f.write(good.replace('127.0.0.1:%d' % mp, 'not an address'))
    mx.hup()
    ok(quiet_until(lambda: delta(s0, scrape(mp) or {}, 'frontmx_config_reloads_total',
                                 result='failed') == 1),
       'SIGHUP with a bad file: reloads{result="failed"} +1')
    s1 = scrape(mp)
    is_(delta(s0, s1, 'frontmx_config_reloads_total', result='ok'), 1.0,
        'the failed reload is not counted as ok')
    with open(mx.conffile, 'w') as f:
        f.write(good)
    like(mx.log(), r'reload failed.*metrics\.listen', 'the failed reload names metrics.listen')


def test_tls_auth():
    d = tmpdir('fmx-metrics-tls-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)
    up = AuthUpstream(users={'alice': 'secret'})
    mp = free_port()
    mx = frontmx_listeners_args(
        up, [listener('starttls', certs, auth=True)],
        conf={'metrics': {'listen': '127.0.0.1:%d' % mp}}, name='frontmx (TLS, AUTH)')
    ok(wait_for(lambda: port_open(mp), 10), 'TLS instance: metrics listener up')
    idle_sessions_gone(mx, mp)
    s0 = scrape(mp)
    c = TlsClient(mx.port)
    c.greeting()
    c.ehlo('submit.example')
    r, err = c.starttls(ctx, MX)
    ok(r.code == 220 and err is None, 'STARTTLS and handshake (%r %s)' % (r, err))
    version = c.tls_version()
    c.ehlo('submit.example')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir('alice', 'wrong')), 535, None,
             'AUTH with a bad password: 535')
    reply_is(c.cmd('AUTH PLAIN ' + plain_ir('alice', 'secret')), 235, None,
             'AUTH with the right password: 235')
    c.quit()
    c.close()
    idle_sessions_gone(mx, mp)
    s1 = scrape(mp)
    expect_deltas(s0, s1, 'TLS and AUTH', [
        ('frontmx_tls_handshakes_total', {'side': 'server', 'version': version}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'starttls', 'code': '220'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'helo', 'code': '250'}, 2),
        ('frontmx_auth_total', {'result': 'success'}, 1),
        ('frontmx_auth_total', {'result': 'failure'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'auth', 'code': '235'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'auth', 'code': '535'}, 1),
    ])
    promtool_and_finish(mx, mp, 'TLS instance')


def test_state_filters():
    """The dnsbl, greylist and ratelimit filters and the Redis client count
    through common/metrics.h: the scrape shows each of their events."""
    redis = RedisServer()
    zone = 'bl.example.net'
    dns = FakeDNS({'2.5.0.127.' + zone: [('A', '127.0.0.2')]}).start()
    register_cleanup(dns.stop)
    up = Upstream()
    mp = free_port()
    mx = Frontmx(up, name='frontmx (dnsbl, greylist, ratelimit)', conf={
        'metrics': {'listen': '127.0.0.1:%d' % mp},
        'redis': {'address': redis.address, 'timeout': 2},
        'dns': {'forward': [dns.address]},
        'relay': {'domains': ['example.com'], 'networks': ['127.0.9.0/24']},
        'filters': [{'name': 'dnsbl', 'options': {'zones': [zone], 'threshold': 1}},
                    {'name': 'greylist', 'options': {'delay': 600}},
                    {'name': 'ratelimit', 'options': {'client_address': '1/60'}}],
    })
    ok(wait_for(lambda: port_open(mp), 10), 'state instance: metrics listener up')
    idle_sessions_gone(mx, mp)
    s0 = scrape(mp)

    c = SmtpClient(mx.port, source='127.0.5.2')
    r = c.greeting(timeout=15)
    reply_is(r, 554, '5.7.1', 'a client on %s: 554 5.7.1 at connect' % zone)
    c.close()
    c = SmtpClient(mx.port, source='127.0.6.1')
    c.start()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 451, '4.7.1', 'a new triplet: greylisted 451 4.7.1')
    c.quit()
    c.close()
    for i, want in ((1, 250), (2, 451)):
        c = SmtpClient(mx.port, source='127.0.9.1')
        c.start()
        r = c.transaction(SENDER, [RCPT], body(b'ratelimit %d' % i))
        code = r['dot'].code if r['dot'] is not None else r['rcpt'][0].code
        is_(code, want, 'relay network client, message %d of a 1/60 limit: %d' % (i, want))
        c.quit()
        c.close()
    idle_sessions_gone(mx, mp)
    s1 = scrape(mp)
    expect_deltas(s0, s1, 'state filters', [
        ('frontmx_dnsbl_hits_total', {'zone': zone}, 1),
        ('frontmx_connections_refused_total', {'reason': 'dnsbl'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'connect', 'code': '554'}, 1),
        ('frontmx_greylist_total', {'result': 'greylisted'}, 1),
        ('frontmx_smtp_replies_total', {'stage': 'rcpt', 'code': '451'}, 2),
        ('frontmx_ratelimit_total', {'key': 'client_address', 'result': 'ok'}, 1),
        ('frontmx_ratelimit_total', {'key': 'client_address', 'result': 'exceeded'}, 1),
        ('frontmx_filter_results_total', {'filter': 'greylist', 'result': 'greylisted'}, 1),
        ('frontmx_filter_results_total', {'filter': 'ratelimit', 'result': 'exceeded'}, 1),
        ('frontmx_messages_total', {'result': 'relayed'}, 1),
        ('frontmx_redis_errors_total', {}, 0),
    ])

    redis.kill()
    c = SmtpClient(mx.port, source='127.0.6.2')
    c.start()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    r = c.cmd('RCPT TO:<%s>' % RCPT, timeout=15)
    ok(r.code is not None and r.code // 100 == 4, 'Redis down: RCPT gets 4xx (on_error) (%r)' % (r,))
    c.quit()
    c.close()
    idle_sessions_gone(mx, mp)
    s2 = scrape(mp)
    ok(delta(s1, s2, 'frontmx_redis_errors_total') >= 1, 'Redis down: redis_errors_total counts it')
    expect_deltas(s1, s2, 'Redis down', [
        ('frontmx_greylist_total', {'result': 'error'}, 1),
        ('frontmx_filter_errors_total', {'filter': 'greylist', 'kind': 'error'}, 1),
        ('frontmx_filter_results_total', {'filter': 'greylist', 'result': 'error'}, 1),
    ])
    promtool_and_finish(mx, mp, 'state instance')


# ---------------------------------------------------------------- hostile

def connect_idle(port):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    return s


def closed_within(s, seconds):
    """True if the peer closes s within seconds (EOF or reset)."""
    end = time.time() + seconds
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True
        if not d:
            return True
    return False


def smtp_ok(mx, name):
    r = send(mx, b'still flowing')
    return reply_is(r['dot'], 250, None, name)


def test_hostile(mx, mp):
    # half a request: the server gives up on it; others are served meanwhile
    half = connect_idle(mp)
    half.sendall(b'GET /metr')
    st, _, _ = get(mp)
    is_(st, 200, 'a half-sent request does not block another scrape')
    t0 = time.time()
    ok(closed_within(half, TIMEOUT + 3), 'the half-sent request is closed after metrics.timeout')
    diag('half request closed after %.1f s' % (time.time() - t0))
    half.close()

    # trickled byte by byte (each byte resets an idle timer): the deadline cuts it
    tr = connect_idle(mp)
    req = b'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: ' + b'a' * 200 + b'\r\n\r\n'
    t0, cut = time.time(), False
    for i in range(len(req)):
        try:
            tr.sendall(req[i:i + 1])
        except OSError:
            cut = True
            break
        if closed_within(tr, 0.2):
            cut = True
            break
    took = time.time() - t0
    ok(cut and took < TIMEOUT + 3, 'a trickled request is cut at the deadline (%.1f s)' % took)
    tr.close()

    # more idle connections than metrics.connections: the next waits, SMTP flows
    idle = [connect_idle(mp) for _ in range(MAXCONN)]
    time.sleep(0.3)
    waiting = socket.create_connection(('127.0.0.1', mp), timeout=10)
    waiting.sendall(b'GET /metrics HTTP/1.0\r\n\r\n')
    waiting.settimeout(1.0)
    try:
        early = waiting.recv(100)
    except socket.timeout:
        early = None
    ok(early is None, 'with %d idle connections the next scrape is not served' % MAXCONN)
    smtp_ok(mx, 'metrics connections all taken: a message is still relayed')
    idle[0].close()
    waiting.settimeout(5)
    try:
        got = waiting.recv(100)
    except OSError:
        got = b''
    ok(got.startswith(b'HTTP/1.0 200') or got.startswith(b'HTTP/1.1 200'),
       'one idle connection closed: the waiting scrape is served (%r)' % got[:40])
    waiting.close()
    for s in idle[1:]:
        ok(closed_within(s, TIMEOUT + 3), 'an idle metrics connection is closed by the deadline')
        s.close()

    # a huge request line
    st, head, b = http(mp, b'GET /' + b'a' * 20000 + b' HTTP/1.0\r\n\r\n')
    ok(st != 200 and b'frontmx_' not in b, 'a 20 KB request line is refused (%r)' % st)
    st, head, b = http(mp, b'GET /metrics HTTP/1.0\r\nX-Big: ' + b'b' * 20000 + b'\r\n\r\n')
    ok(st != 200 and b'frontmx_' not in b, '20 KB of headers are refused (%r)' % st)

    # methods and paths
    st, _, b = http(mp, b'POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc')
    ok(st in (405, 501) and b'frontmx_' not in b, 'POST /metrics is refused (%r)' % st)
    st, _, b = http(mp, b'POST /metrics HTTP/1.0\r\nContent-Length: 100000\r\n\r\n' + b'x' * 100000)
    ok(st is not None and st != 200 and b'frontmx_' not in b,
       'POST with a 100 KB body is refused (%r)' % st)
    for path in ('/', '/metricsx', '/metrics/', '/other'):
        st, _, b = get(mp, path)
        is_(st, 404, 'GET %s: 404' % path)
    st, head, b = http(mp, b'HEAD /metrics HTTP/1.0\r\n\r\n')
    ok(st == 200 and b == b'', 'HEAD /metrics: 200 without a body (%r %r)' % (st, b[:60]))
    st, head, b = get(mp, '/metrics?x=1')
    is_(st, 200, 'GET /metrics?x=1: the query is ignored')
    ok('text/plain; version=0.0.4' in head, 'Content-Type is the text format 0.0.4')
    ok(mx.alive(), 'frontmx survived the hostile requests')

    # many scrapes at once
    results = []

    def scraper():
        for _ in range(5):
            results.append(get(mp, timeout=15)[0])
    ts = [threading.Thread(target=scraper) for _ in range(12)]
    for t in ts:
        t.start()
    smtp_ok(mx, '60 concurrent scrapes: a message is relayed meanwhile')
    for t in ts:
        t.join(60)
    is_(results.count(200), 60, '12 threads x 5 scrapes: all 60 answered 200')

    # scrapes during SIGHUP
    stop, during = threading.Event(), []

    def loop():
        while not stop.is_set():
            during.append(get(mp, timeout=10)[0])
    t = threading.Thread(target=loop)
    t.start()
    s0 = scrape(mp)
    for _ in range(5):
        mx.hup()
        time.sleep(0.1)
    ok(quiet_until(lambda: delta(s0, scrape(mp) or {}, 'frontmx_config_reloads_total',
                                 result='ok') == 5), 'five SIGHUPs: five reloads counted')
    stop.set()
    t.join(20)
    ok(during and all(x == 200 for x in during),
       'scrapes during SIGHUP: all %d answered 200' % len(during))

    # a scrape while an SMTP session is mid-transaction; the session goes on
    c = mx.client()
    c.start()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'open session: MAIL')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'open session: RCPT')
    s = scrape(mp)
    ok(s is not None and val(s, 'frontmx_connections_active') >= 1,
       'scrape during a transaction: connections_active counts it')
    r, dot = c.data(body(b'mid-scrape'))
    reply_is(dot, 250, None, 'the transaction scraped in the middle is relayed')
    c.quit()
    c.close()


def test_listen_reload(mx, mp):
    before = scrape(mp)
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    tport = taken.getsockname()[1]
    conf = mx.conf.replace('127.0.0.1:%d' % mp, '127.0.0.1:%d' % tport)
    with open(mx.conffile, 'w') as f:
        f.write(conf)
    n = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: 'metrics stay where they were' in mx.log()[n:], 10),
       'SIGHUP to a metrics.listen in use: logged, the old address kept')
    is_(get(mp)[0], 200, 'the old metrics address still serves')
    taken.close()

    mp2 = free_port()
    conf = mx.conf.replace('127.0.0.1:%d' % mp, '127.0.0.1:%d' % mp2)
    with open(mx.conffile, 'w') as f:
        f.write(conf)
    mx.hup()
    ok(wait_for(lambda: port_open(mp2), 10), 'SIGHUP to a new metrics.listen: it serves there')
    ok(wait_for(lambda: not port_open(mp), 10), 'the old metrics address is closed')
    after = scrape(mp2)
    ok(after is not None and val(after, 'frontmx_messages_total', result='relayed') >=
       val(before, 'frontmx_messages_total', result='relayed') > 0,
       'counters carry over the move (nothing reset)')
    with open(mx.conffile, 'w') as f:
        f.write(mx.conf)
    mx.hup()
    ok(wait_for(lambda: port_open(mp), 10), 'and back')


def test_config_errors():
    cases = [
        ('metrics = { listen = "nowhere"; };', r'metrics\.listen'),
        ('metrics = { listen = "127.0.0.1:0"; };', r'port must be'),
        ('metrics = { };', r"missing 'listen'"),
        ('metrics = { listen = "127.0.0.1:9"; connections = 0; };', r'connections'),
        ('metrics = { listen = "127.0.0.1:9"; timeout = 100000; };', r'timeout'),
        ('metrics = { listen = "127.0.0.1:9"; listne = 1; };', r'listne'),
    ]
    base = render_conf(base_conf(free_port(), '127.0.0.1:25', tmpdir('fmx-spool-')))
    nlines = base.count('\n')
    for extra, why in cases:
        rc, out, path = run_frontmx_t(base + extra + '\n')
        ok(rc not in (0, None) and re.search(re.escape(path) + ':%d: ' % (nlines + 1), out) and
           re.search(why, out), 'frontmx -t: %s -> FILE:LINE: error (%s)' % (extra, out.strip()[:160]))
    rc, out, path = run_frontmx_t(base + 'metrics = { listen = "127.0.0.1:9125"; '
                                  'connections = 16; timeout = 5; };\n')
    is_(rc, 0, 'frontmx -t: a full metrics group is accepted')


def main():
    test_config_errors()
    d = tmpdir('fmx-metrics-')
    rules = write_rules('body /^FORBIDDEN$/ REJECT 5.7.1 forbidden body\n', d)

    def dot(m, conn):
        return '451 4.3.0 try again later' if b'tempfail-me' in m.data else None
    up = Upstream(on_dot=dot)
    mp = free_port()
    mx = Frontmx(up, conf={
        'metrics': {'listen': '127.0.0.1:%d' % mp, 'timeout': TIMEOUT, 'connections': MAXCONN},
        'limits': {'connections_per_ip': 2},
        'relay': {'domains': ['example.com'], 'networks': ['192.0.2.0/24']},
        'filters': [content_filter(rules)],
    })
    ok(wait_for(lambda: port_open(mp), 10), 'metrics listener up on 127.0.0.1:%d' % mp)
    st, head, b = get(mp)
    is_(st, 200, 'GET /metrics: 200')
    promtool(b, 'promtool check metrics passes on the first scrape')
    text = b.decode()
    for name in ('frontmx_connections_total', 'frontmx_connections_active',
                 'frontmx_connections_refused_total', 'frontmx_smtp_replies_total',
                 'frontmx_messages_total', 'frontmx_message_size_bytes',
                 'frontmx_filter_results_total', 'frontmx_filter_duration_seconds',
                 'frontmx_filter_errors_total', 'frontmx_upstream_errors_total',
                 'frontmx_upstream_reply_seconds', 'frontmx_tls_handshakes_total',
                 'frontmx_auth_total', 'frontmx_greylist_total', 'frontmx_ratelimit_total',
                 'frontmx_dnsbl_hits_total', 'frontmx_redis_errors_total',
                 'frontmx_build_info', 'frontmx_config_reloads_total',
                 'process_start_time_seconds'):
        ok(re.search(r'^# TYPE %s ' % name, text, re.M), 'exposes %s' % name)
    ver = re.search(r'#define FRONTMX_VERSION\s+"([^"]+)"',
                    open(os.path.join(REPO, 'proxy', 'version.h')).read()).group(1)
    like(text, r'(?m)^frontmx_build_info\{version="%s"\} 1$' % re.escape(ver),
         'frontmx_build_info carries proxy/version.h\'s release')
    start = re.search(r'(?m)^process_start_time_seconds (\S+)$', text)
    ok(start and abs(float(start.group(1)) - time.time()) < 120,
       'process_start_time_seconds is about now')

    last = test_traffic(mx, up, mp)
    test_reloads(mx, mp)
    test_hostile(mx, mp)
    st, head, b = get(mp)
    promtool(b, 'promtool check metrics passes after all the traffic')
    test_listen_reload(mx, mp)
    ok(last is not None, 'traffic scrapes parsed')
    mx.finish()
    test_tls_auth()
    test_state_filters()


run(main, timeout=240)
