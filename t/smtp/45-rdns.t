#!/usr/bin/python3
# The client's name, verified both ways (FCrDNS) through the resolver:
# PTR, then the name's addresses must include the client's.  The result
# goes to the upstream as XCLIENT NAME= (a name, [UNAVAILABLE] or
# [TEMPUNAVAIL], as Postfix's XCLIENT_README defines them), into the
# Received field and to filters.  Client addresses come from PROXY headers
# so that non-loopback clients can be named on loopback; DNS is fakedns.
import ipaddress
import os
import re
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402
from fmx_tls import proxy_v1  # noqa: E402
from fakedns import FakeDNS  # noqa: E402

BODY = b'From: a@example.org\r\nTo: bob@example.com\r\nSubject: rdns\r\n\r\nhi\r\n'
CAPS = ['PIPELINING', '8BITMIME', 'XCLIENT NAME ADDR PORT PROTO HELO']


def xattrs(line):
    d = {}
    for p in line.split(' ')[1:]:
        k, _, v = p.partition('=')
        d[k.upper()] = re.sub(r'\+([0-9A-F]{2})', lambda m: chr(int(m.group(1), 16)), v)
    return d


def main():
    dns = FakeDNS({
        # good: PTR and A agree
        '7.100.51.198.in-addr.arpa': [('PTR', 'Mail.Client.Example')],
        'mail.client.example': [('A', '198.51.100.7')],
        # forged: the PTR names a host whose address is elsewhere
        '8.100.51.198.in-addr.arpa': [('PTR', 'www.bank.example')],
        'www.bank.example': [('A', '203.0.113.50')],
        # 198.51.100.9: no PTR at all (NXDOMAIN)
        '10.100.51.198.in-addr.arpa': 'SERVFAIL',
        # IPv6
        ipaddress.ip_address('2001:db8::1').reverse_pointer: [('PTR', 'v6.client.example')],
        'v6.client.example': [('AAAA', '2001:db8::1')],
    }).start()
    fmx.register_cleanup(dns.stop)
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, start=False, name='frontmx (reverse DNS)')
    mx.write_conf(conf={
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
        'dns': {'forward': [dns.address], 'reverse': True},
        'timeouts': {'dns': 2},
    })
    mx.start()

    def one(fam, addr, name, want_name, want_rcv):
        sender = '%s@example.org' % name
        c = SmtpClient(mx.port)
        c.send(proxy_v1(fam, addr, '2001:db8::25' if fam == 'TCP6' else '192.0.2.1', 40000, 25))
        reply_is(c.greeting(timeout=10), 220, None, '%s: greeted' % name)
        c.ehlo('helo.example')
        r = c.transaction(sender, ['bob@example.com'], BODY)
        reply_is(r['dot'], 250, None, '%s: relayed' % name)
        c.quit()
        ok(wait_for(lambda: [m for m in up.messages if m.mail_from == sender], 10),
           '%s: reached the upstream' % name)
        m = [m for m in up.messages if m.mail_from == sender]
        if not m:
            return
        xs = [xattrs(l) for l in m[0].xclient]
        is_(xs[-1].get('NAME') if xs else None, want_name, '%s: XCLIENT NAME=%s' % (name, want_name))
        like(m[0].data.split(b'\r\n\t', 1)[0].decode(),
             r'^Received: from helo\.example \(%s \[%s\]\)' % (re.escape(want_rcv), re.escape(addr)),
             '%s: Received names %s' % (name, want_rcv))

    one('TCP4', '198.51.100.7', 'good', 'mail.client.example', 'mail.client.example')
    one('TCP4', '198.51.100.8', 'forged', '[UNAVAILABLE]', 'unknown')
    one('TCP4', '198.51.100.9', 'nxdomain', '[UNAVAILABLE]', 'unknown')
    one('TCP4', '198.51.100.10', 'servfail', '[TEMPUNAVAIL]', 'unknown')
    one('TCP6', '2001:db8::1', 'ipv6', 'v6.client.example', 'v6.client.example')
    ok(('8.100.51.198.in-addr.arpa', 'PTR') in dns.queries and
       ('www.bank.example', 'A') in dns.queries,
       'the forged PTR was checked against the name\'s addresses')
    mx.finish()


run(main, timeout=60)
