#!/usr/bin/python3
# Out of file descriptors (issue 8 item 8): with RLIMIT_NOFILE lowered on
# the running daemon and exhausted by idle connections, accept() fails
# with EMFILE while clients stay queued.  frontmx must not spin: it warns
# at most once per interval (the count of warnings is bounded by the time
# that passed, not by the number of failed accepts), tells queued clients
# 421 instead of leaving them hanging, and serves normally again once
# connections close.  The /metrics listener, at the same limit, does not
# spin either (one line a second at most) and scrapes work again after.
import os
import re
import resource
import socket
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open  # noqa: E402

BODY = b'From: a@example.org\r\nSubject: fd limit\r\n\r\nbody\r\n'
LOG_INTERVAL = 10       # WORKER_ACCEPT_LOG in proxy/worker.c
WORKERS = 2             # base_conf


def accept_warnings(mx):
    return len(re.findall(r'accept: ', mx.log()))


def refused_fd_limit(mp):
    """frontmx_connections_refused_total{reason="fd-limit"} from a scrape."""
    s = socket.create_connection(('127.0.0.1', mp), timeout=10)
    s.sendall(b'GET /metrics HTTP/1.0\r\n\r\n')
    data = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    m = re.search(rb'(?m)^frontmx_connections_refused_total\{reason="fd-limit"\} (\d+)$', data)
    return int(m.group(1)) if m else None


def main():
    up = Upstream()
    mp = free_port()
    mx = Frontmx(up, name='frontmx (fd limit)',
                 conf={'metrics': {'listen': '127.0.0.1:%d' % mp}})
    ok(wait_for(lambda: port_open(mp), 10), 'metrics listener up')
    base = mx.nfds()
    ok(base is not None, 'frontmx fd count read from /proc (%s)' % base)
    limit = base + 12
    resource.prlimit(mx.pid, resource.RLIMIT_NOFILE, (limit, limit))
    is_(resource.prlimit(mx.pid, resource.RLIMIT_NOFILE)[0], limit,
        'RLIMIT_NOFILE of the running daemon lowered to %d' % limit)

    socks = []
    t0 = time.time()
    for _ in range(limit + 30):
        s = socket.create_connection(('127.0.0.1', mx.port), timeout=10)
        socks.append(s)
    ok(wait_for(lambda: accept_warnings(mx) > 0, 20), 'EMFILE reached and logged')

    # Queued clients are answered 421 rather than left waiting.
    got421 = [0]

    def some_421():
        for s in socks:
            s.settimeout(0)
            try:
                d = s.recv(4096)
            except (BlockingIOError, socket.timeout):
                continue
            except OSError:
                continue
            if d.startswith(b'421'):
                got421[0] += 1
        return got421[0] > 0

    ok(wait_for(some_421, 20, 0.2), 'a client queued at the fd limit gets a 421')
    # a scraper queued on the metrics listener meanwhile
    t1 = time.time()
    scraper = socket.create_connection(('127.0.0.1', mp), timeout=10)
    scraper.sendall(b'GET /metrics HTTP/1.0\r\n\r\n')
    # Let the pressure last: a spinning accept loop logs thousands of lines
    # in this time; a paced one at most one per worker per interval.
    time.sleep(3)
    elapsed = time.time() - t0
    n = accept_warnings(mx)
    bound = WORKERS * (int(elapsed / LOG_INTERVAL) + 2)
    ok(n <= bound, 'accept warnings paced: %d lines in %.1f s (at most %d)' % (n, elapsed, bound))
    m = len(re.findall(r'metrics: cannot accept', mx.log()))
    mbound = int(time.time() - t1) + 2
    ok(0 < m <= mbound, 'metrics accept failures paced: %d lines (at most %d)' % (m, mbound))
    spun = len(re.findall(r'Error from accept', mx.log()))
    is_(spun, 0, 'no unpaced accept loop on the metrics listener (libevent warnings)')
    ok(mx.alive(), 'frontmx survived the fd limit')

    for s in socks:
        s.close()
    ok(wait_for(lambda: (mx.nfds() or limit) < limit - 4, 30), 'connections closed on the daemon side')

    def serves():
        try:
            c = SmtpClient(mx.port, timeout=5)
        except OSError:
            return False
        try:
            if c.greeting().code != 220:
                return False
            c.ehlo()
            r = c.transaction('after@example.org', ['bob@example.com'], BODY)
            return r['dot'] is not None and r['dot'].code == 250
        finally:
            c.close()

    ok(wait_for(serves, 30, 0.5), 'serves and relays again once connections closed')
    scraper.settimeout(10)
    try:
        got = scraper.recv(100)
    except OSError:
        got = b''
    ok(got.startswith(b'HTTP/1.0 200') or got.startswith(b'HTTP/1.1 200'),
       'the scraper queued at the fd limit is served once descriptors free (%r)' % got[:30])
    scraper.close()
    refused = refused_fd_limit(mp)
    ok(refused is not None and refused >= got421[0] > 0,
       'frontmx_connections_refused_total{reason="fd-limit"} counts the 421s '
       '(%s, clients that read one: %d)' % (refused, got421[0]))
    ok(up.wait_messages(1, 10), 'the message reached the upstream')
    mx.finish()


run(main, timeout=150)
