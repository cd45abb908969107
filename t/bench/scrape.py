#!/usr/bin/python3
"""A Prometheus stand-in for t/bench/run: scrape GET /metrics in a loop.

usage: scrape.py PORT INTERVAL OUTFILE

Scrapes http://127.0.0.1:PORT/metrics every INTERVAL seconds (a new
connection each time, as Prometheus does after an idle keep-alive is
dropped) until SIGTERM, then writes "scrapes=N failed=M bytes=B" to
OUTFILE.  A scrape fails when the status is not 200 or the body has no
frontmx_messages_total line.  Exit status 0.
"""

import signal
import socket
import sys
import time


def scrape(port):
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    try:
        s.sendall(b'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n')
        data = b''
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    return data


def main():
    port, interval, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    n = failed = nbytes = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop:
        t0 = time.time()
        try:
            data = scrape(port)
            good = data.startswith(b'HTTP/1.') and b' 200 ' in data[:20] and \
                b'\nfrontmx_messages_total{' in data
        except OSError:
            data, good = b'', False
        n += 1
        failed += 0 if good else 1
        nbytes += len(data)
        left = interval - (time.time() - t0)
        if left > 0 and not stop:
            time.sleep(left)
    with open(out, 'w') as f:
        f.write('scrapes=%d failed=%d bytes=%d\n' % (n, failed, nbytes))


main()
