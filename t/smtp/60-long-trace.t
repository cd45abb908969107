#!/usr/bin/python3
# Long but valid client-controlled trace data must never stop the daemon
# (issue 8 item 7): a 255-octet HELO, a 253-octet forward-confirmed PTR
# name, a 256-octet recipient path, an IPv6 client address from a PROXY v2
# header, each alone and all at once.  Every message is delivered and every
# header line the upstream sees is at most 998 octets (RFC 5322 2.1.1),
# folded only with CRLF + WSP (2.2.3) and never into a blank line; the
# Received field, unfolded, still names each value in full.
import ipaddress
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402
from fmx_tls import proxy_v2, make_cert, client_ctx, TlsClient  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from fmx_filters import content_filter, write_rules  # noqa: E402

CAPS = ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', 'XCLIENT NAME ADDR PORT PROTO HELO']


def labels(total, ch):
    """A domain of exactly total octets: 63-octet labels of ch, then the rest."""
    parts = []
    left = total
    while left > 0:
        n = min(63, left)
        if left - n == 1:          # never leave a lone dot: shorten this label
            n -= 1
        parts.append(ch * n)
        left -= n + 1               # the dot before the next label
    d = '.'.join(parts)
    assert len(d) == total, (len(d), total)
    return d


HELO = labels(255, 'h')
PTR = labels(253, 'p')
RDOM = labels(189, 'r')
RCPT = 'l' * 64 + '@' + RDOM            # 254 octets: the path is 256 with <>
# A long but ordinary host name of our own: the Received field names it too.
MX = 'mx.' + labels(100, 'm') + '.example'
V6 = '2001:db8:1234:5678:9abc:def0:1234:5678'
V6_SHORT = '2001:db8::77'


def header_block(data):
    i = data.find(b'\r\n\r\n')
    return data[:i + 2] if i != -1 else data


def check_folding(data, name):
    """Every line of the header block <= 998 octets, continuation lines
    start with WSP and hold something besides WSP."""
    hdr = header_block(data)
    lines = hdr.split(b'\r\n')[:-1]
    longest = max(len(x) for x in lines) if lines else 0
    ok(longest <= 998, '%s: every header line <= 998 octets (longest %d)' % (name, longest))
    bad = [x for x in lines if not x or (x[:1] not in (b' ', b'\t') and b':' not in x)]
    ok(not bad, '%s: every header line is a field or a continuation' % name)
    if bad:
        diag(repr(bad[:3]))
    blank = [x for x in lines if x[:1] in (b' ', b'\t') and not x.strip()]
    ok(not blank, '%s: no continuation line is only white space' % name)
    ok(b'\r' not in hdr.replace(b'\r\n', b'') and b'\n' not in hdr.replace(b'\r\n', b''),
       '%s: no bare CR or LF in the header block' % name)


def unfolded_received(data):
    rcv, _ = split_received(data)
    if rcv is None:
        return ''
    # RFC 5322 2.2.3 unfolding, then any run of WSP compares as one space.
    return re.sub(rb'[ \t]+', b' ', rcv.replace(b'\r\n', b'')).decode('latin-1')


def main():
    dns = FakeDNS({
        ipaddress.ip_address(V6).reverse_pointer: [('PTR', PTR)],
        PTR: [('AAAA', V6)],
    }).start()
    fmx.register_cleanup(dns.stop)
    certs = make_cert(tmpdir('fmx-trace-'), 'mx.test.example')   # CN: 64 octets at most
    up = Upstream(ehlo_caps=CAPS)
    mx = Frontmx(up, start=False, name='frontmx (long trace data)')
    mx.write_conf(conf={
        'hostname': MX,
        'listen': [{'address': '127.0.0.1:%d' % mx.port},
                   {'address': '127.0.0.1:%d' % free_port(), 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8'], 'tls': 'starttls',
                    'cert': certs.cert, 'key': certs.key}],
        'relay': {'domains': ['example.com', RDOM], 'networks': ['127.0.0.0/8']},
        'dns': {'forward': [dns.address], 'reverse': True},
        'timeouts': {'dns': 5},
    })
    pport = int(re.findall(r'127\.0\.0\.1:(\d+)', mx.conf)[1])
    mx.start()
    n = [0]

    def one(name, helo='client.example', rcpt='bob@example.com', v6=None, rcpts=None, tls=False):
        n[0] += 1
        sender = 'long%d@example.org' % n[0]
        body = ('From: a@example.org\r\nSubject: %s\r\n\r\nbody\r\n' % name).encode()
        c = TlsClient(pport if v6 else mx.port)
        if v6:
            c.send(proxy_v2('PROXY', 'TCP6', v6, '2001:db8::25', 40000, 25))
        reply_is(c.greeting(timeout=15), 220, None, '%s: greeted' % name)
        reply_is(c.ehlo(helo), 250, None, '%s: EHLO %d octets accepted' % (name, len(helo)))
        if tls:
            c.starttls(client_ctx(certs.cert), 'mx.test.example')
            reply_is(c.ehlo(helo), 250, None, '%s: EHLO again after STARTTLS' % name)
        r = c.transaction(sender, rcpts or [rcpt], body)
        reply_is(r['dot'], 250, '2.0.0', '%s: message accepted' % name)
        c.quit()
        ok(wait_for(lambda: [m for m in up.messages if m.mail_from == sender], 10),
           '%s: delivered upstream' % name)
        m = [m for m in up.messages if m.mail_from == sender]
        if not m:
            return None
        check_folding(m[0].data, name)
        _, rest = split_received(m[0].data)
        is_(rest, body, '%s: the message follows the Received field unchanged' % name)
        return unfolded_received(m[0].data)

    u = one('max HELO', helo=HELO)
    ok(u.startswith('Received: from %s' % HELO), 'max HELO: Received names the whole HELO')

    u = one('max recipient', rcpt=RCPT)
    like(u, r'for <%s>;' % re.escape(RCPT), 'max recipient: Received names the whole recipient')

    u = one('PROXY v2 IPv6 with a 253-octet PTR', v6=V6)
    like(u, r'\(%s \[%s\]\)' % (re.escape(PTR), re.escape(V6)),
         'PTR: Received names the verified 253-octet name and the IPv6 address')

    u = one('all at once', helo=HELO, rcpt=RCPT, v6=V6)
    like(u, r'^Received: from %s \(%s \[%s\]\)\s+by %s \(frontmx\) with ESMTP id '
         r'[0-9a-f]{16}\.\d+\s+for <%s>;\s+\S' % (re.escape(HELO), re.escape(PTR), re.escape(V6),
                                               re.escape(MX), re.escape(RCPT)),
         'all at once: the unfolded Received field holds every part in order')

    u = one('all at once over TLS', helo=HELO, rcpt=RCPT, v6=V6, tls=True)
    like(u, r'^Received: from %s \(%s \[%s\]\) \(using TLS\S+ \S+\) by %s \(frontmx\) with '
         r'ESMTPS id [0-9a-f]{16}\.\d+ for <%s>; \S' % (re.escape(HELO), re.escape(PTR), re.escape(V6),
                                                    re.escape(MX), re.escape(RCPT)),
         'all at once over TLS: the unfolded Received field holds every part, TLS too')

    u = one('all at once, two recipients', helo=HELO, v6=V6, rcpts=[RCPT, 'bob@example.com'])
    unlike(u, r'for <', 'two recipients: no "for" clause')

    # Short values keep the usual layout: no fold inside the from clause.
    u = one('short values', v6=V6_SHORT)
    like(split_received(up.messages[-1].data)[0].split(b'\r\n')[0].decode(),
         r'^Received: from client\.example \(unknown \[%s\]\)$' % re.escape(V6_SHORT),
         'short values: the from clause stays on the first line')

    ok(mx.alive(), 'frontmx still running')
    unlike(mx.log(), r'fatal', 'no fatal error logged')
    # XCLIENT with a 253-octet NAME and a 255-octet HELO is longer than
    # 512 octets (Postfix reads up to line_length_limit, 2048): not
    # counted here, every other line must be clean.
    is_([v for v in up.violations if not v[2].startswith(b'XCLIENT ')], [],
        'the upstream saw a clean stream')
    mx.finish()
    subject_prefix()


def subject_prefix():
    """tag.subject_prefix on a Subject whose first line is already 998
    octets: the prefix must not push the line past the limit."""
    rules = write_rules('header /^Subject:.*TAG-ME/ TAG long subject\n')
    up = Upstream()
    mx = Frontmx(up, conf={'filters': [content_filter(rules)],
                           'tag': {'header': 'X-Frontmx-Tag', 'subject_prefix': '[TAG] '}},
                 name='frontmx (Subject prefix)')
    for n, name in ((998, 'a 998-octet Subject line'), (990, 'a 990-octet Subject line'),
                    (60, 'a short Subject line')):
        line = b'Subject: TAG-ME '
        line += b'x' * (n - len(line))
        body = b'From: a@example.org\r\n' + line + b'\r\n\r\nbody\r\n'
        c = mx.client()
        c.start()
        r = c.transaction('tag%d@example.org' % n, ['bob@example.com'], body)
        reply_is(r['dot'], 250, None, '%s: tagged and relayed' % name)
        c.quit()
        m = [x for x in up.messages if x.mail_from == 'tag%d@example.org' % n]
        if not ok(m, '%s: reached the upstream' % name):
            continue
        check_folding(m[0].data, name)
        subj = re.search(rb'(?m)^Subject:(.*(?:\r\n[ \t].*)*)\r\n', m[0].data)
        got = re.sub(rb'[ \t]+', b' ', subj.group(1).replace(b'\r\n', b'')).strip() if subj else b''
        is_(got, b'[TAG] ' + line[len(b'Subject: '):], '%s: the unfolded Subject is the prefix '
            'and the old subject' % name)
        if n == 60:
            like(subj.group(0), rb'^Subject: \[TAG\] TAG-ME x+\r\n$', '%s: not folded' % name)
    mx.finish()


run(main, timeout=120)
