#!/usr/bin/python3
"""authdns.py - the DNS and the message for the bench's SPF+DKIM+DMARC line.

    authdns.py WORKDIR

Writes WORKDIR/auth.eml (a ~10 KiB message From example.com, DKIM-signed
with the rsa2048 test key by dkimpy, LF line ends as smtp-source -F wants)
and serves on loopback the records that make it pass: SPF for
example.com allowing 127.0.0.1, the DKIM key, and DMARC p=reject.  Writes
the server's port to WORKDIR/authdns.port, then serves until SIGTERM.
"""
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))
from fakedns import FakeDNS          # noqa: E402
from dkim_tool import sign, key_record  # noqa: E402

work = sys.argv[1]
body = b''.join(b'bench line %05d: the quick brown fox jumps over the lazy dog\r\n' % i
                for i in range(150))
msg = (b'From: Bench <a@example.com>\r\nTo: b@example.com\r\nSubject: bench\r\n'
       b'Message-ID: <bench@example.com>\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\n\r\n'
       + body)
signed = sign(msg, 'rsa2048.pem',
              'example.com', 'rsa')
with open(os.path.join(work, 'auth.eml'), 'wb') as f:
    f.write(signed.replace(b'\r\n', b'\n'))
dns = FakeDNS({
    'example.com': [('TXT', 'v=spf1 ip4:127.0.0.1 -all')],
    'rsa._domainkey.example.com': [('TXT', key_record('rsa2048'))],
    '_dmarc.example.com': [('TXT', 'v=DMARC1; p=reject')],
}).start()
with open(os.path.join(work, 'authdns.port.tmp'), 'w') as f:
    f.write('%d\n' % dns.port)
os.rename(os.path.join(work, 'authdns.port.tmp'), os.path.join(work, 'authdns.port'))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    time.sleep(0.2)
dns.stop()
