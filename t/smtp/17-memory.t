#!/usr/bin/python3
# Bounded: hostile clients (32 MB lines without CRLF, in commands and in
# DATA; 32 MB messages over the size limit; a pipelining flood that never
# reads its replies) do not grow the daemon's memory; no descriptor leaks.
import os
import socket
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

MB = 1 << 20
PAYLOAD = 32 * MB
GROWTH_MAX = 12 * MB // 1024          # kB; far below the 32 MB payloads
CHUNK = b'A' * 65536


def blast(c, head, total, tail, limit=20.0):
    """Send head + total bytes of 'A' + tail; stop quietly if the peer
    closes or stops reading for 3 s.  Returns bytes sent."""
    c.sock.settimeout(3)
    sent = 0
    t_end = time.time() + limit
    try:
        c.sock.sendall(head)
        while sent < total and time.time() < t_end:
            c.sock.sendall(CHUNK)
            sent += len(CHUNK)
        c.sock.sendall(tail)
    except (socket.timeout, OSError):
        pass
    return sent


def main():
    up = Upstream()
    # ASan keeps freed memory in quarantine; without this RSS would grow
    # with the bytes merely passed through.
    mx = Frontmx(up, conf={'limits': {'message_size': MB}},
                 env={'ASAN_OPTIONS': 'detect_leaks=1:quarantine_size_mb=0:'
                                      'thread_local_quarantine_size_kb=0:allocator_release_to_os_interval_ms=100'})
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    res = c.transaction('alice@example.org', ['bob@example.com'], b'Subject: warm-up\r\n\r\nx\r\n')
    reply_is(res['dot'], 250, None, 'warm-up message')
    c.quit()
    time.sleep(0.3)
    fds0 = mx.nfds()
    rss0 = mx.status('VmRSS')
    ok(rss0 is not None, 'VmRSS readable (%s kB)' % rss0)
    peak = [rss0 or 0]
    phase = {}

    def sample(name):
        v = mx.status('VmRSS')
        if v:
            peak[0] = max(peak[0], v)
            phase[name] = max(phase.get(name, 0), v - (rss0 or 0))

    # 1. a 32 MB command line without CRLF
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    blast(c, b'NOOP ', PAYLOAD, b'\r\n')
    sample('command line')
    r = c.reply(timeout=5)
    ok(r.code in (500, 421), '32 MB command line: 500 or 421 (%r)' % (r,))
    if r.code == 500:
        reply_is(c.cmd('NOOP'), 250, None, 'still in step after it')
    c.close()
    sample('command line')

    # 2. a 32 MB DATA line without CRLF
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<alice@example.org>')
    c.cmd('RCPT TO:<bob@example.com>')
    reply_is(c.cmd('DATA'), 354, None, 'DATA for the long line')
    blast(c, b'Subject: long\r\n\r\n', PAYLOAD, b'\r\n.\r\n')
    sample('DATA line')
    r = c.reply(timeout=10)
    ok(r.code in (500, 552, 421) and r.code != 250, '32 MB DATA line: 500/552/421, never 250 (%r)' % (r,))
    c.close()
    sample('DATA line')

    # 3. a 32 MB message of ordinary lines, 32 x message_size
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<alice@example.org>')
    c.cmd('RCPT TO:<bob@example.com>')
    reply_is(c.cmd('DATA'), 354, None, 'DATA for the huge message')
    line = b'B' * 78 + b'\r\n'
    c.sock.settimeout(3)
    sent = 0
    try:
        c.sock.sendall(b'Subject: huge\r\n\r\n')
        block = line * 800
        while sent < PAYLOAD:
            c.sock.sendall(block)
            sent += len(block)
        c.sock.sendall(b'.\r\n')
    except (socket.timeout, OSError):
        pass
    sample('huge message')
    r = c.reply(timeout=10)
    reply_is(r, 552, '5.3.4', '32 MB message: 552 5.3.4')
    c.close()
    sample('huge message')

    # 4. pipelining flood: 32 MB of NOOPs, replies never read
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.sock.settimeout(3)
    sent = 0
    block = b'NOOP\r\n' * 10000
    t_end = time.time() + 10
    try:
        while sent < PAYLOAD and time.time() < t_end:
            c.sock.sendall(block)
            sent += len(block)
            if sent % (4 * MB) < len(block):
                sample('flood')
    except (socket.timeout, OSError):
        pass
    sample('flood')
    diag('flood: sent %d MB before the proxy stopped reading or closed' % (sent // MB))
    c.close()
    time.sleep(0.5)
    sample('flood')

    for name in ('command line', 'DATA line', 'huge message', 'flood'):
        g = phase.get(name, 0)
        ok(g < GROWTH_MAX, '%s: RSS growth %d kB < %d kB' % (name, g, GROWTH_MAX))
    ok(mx.alive(), 'daemon alive')
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    res = c.transaction('alice@example.org', ['bob@example.com'], b'Subject: after\r\n\r\nx\r\n')
    reply_is(res['dot'], 250, None, 'normal message afterwards')
    c.quit()
    ok(wait_for(lambda: mx.nfds() is not None and mx.nfds() <= fds0, 5),
       'no descriptor leak (%s -> %s)' % (fds0, mx.nfds()))
    check_stream(up, 2, 'upstream')
    mx.finish()


run(main, timeout=90)
