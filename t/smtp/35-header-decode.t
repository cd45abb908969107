#!/usr/bin/python3
# api->header_decode (filter ABI 1.1, issue 9 item 7c): a module gets a
# header value decoded from RFC 2047 to UTF-8 by the core.  The test
# module t/plugins/decode_header.c decodes the Subject it sees at
# on_header and adds X-Decoded (the value) and X-Decoded-Length (what the
# call returned); a second instance with an 8-byte buffer shows the cut on
# a character boundary.  A module built against ABI 1.0
# (t/plugins/older_minor.c) loads and runs next to them.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

CASES = [
    # raw Subject, decoded (UTF-8), full length
    (b'=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=', 'Grüße aus Köln'),
    (b'=?ISO-8859-1?Q?Caf=E9?=\r\n =?ISO-8859-1?Q?_au_lait?=', 'Café au lait'),
    (b'plain and\r\n folded', 'plain and folded'),
    (b'=?UTF-8?Q?a=0D=0ABcc:_evil@example.net?=', 'a  Bcc: evil@example.net'),
]


def utf8_cut(s, n):
    """The longest prefix of s's UTF-8 that fits n-1 bytes, whole characters only."""
    b = s.encode()[:n - 1]
    return b.decode('utf-8', 'ignore').encode()


def main():
    dec, older = plugin('decode_header'), plugin('older_minor')
    # the core's minor (1.1 when this test was written; 1.2 added option getters)
    with open(os.path.join(REPO, 'filters', 'frontmx_filter.h')) as f:
        minor = int(re.search(r'#define FMX_ABI_MINOR\s+(\d+)', f.read()).group(1))
    require_modules(dec, older)
    up = Upstream()
    mx = Frontmx(up, conf={
        'filters': [{'name': 'dec', 'module': dec},
                    {'name': 'dec_short', 'module': dec,
                     'options': {'buflen': 8, 'out': 'X-Short'}},
                    {'name': 'older', 'module': older}],
    })
    for i, (raw, want) in enumerate(CASES):
        name = 'case %d' % i
        body = (b'From: alice@example.org\r\nSubject: ' + raw +
                b'\r\nMessage-ID: <dec%d@example.org>\r\n\r\nbody\r\n' % i)
        r = send(mx, 'alice@example.org', ['bob@example.com'], body)
        reply_is(r['dot'], 250, None, name + ': relayed')
        if not ok(up.wait_messages(i + 1), name + ': reached the upstream'):
            continue
        m = up.messages[i]
        got = fields_named(m.data, 'X-Decoded')
        is_(got, [b'X-Decoded: ' + want.encode() + b'\r\n'], name + ': decoded to UTF-8: ' + want)
        is_(fields_named(m.data, 'X-Decoded-Length'),
            [b'X-Decoded-Length: %d\r\n' % len(want.encode())], name + ': the full length returned')
        is_(fields_named(m.data, 'X-Short'), [b'X-Short: ' + utf8_cut(want, 8) + b'\r\n'],
            name + ': 8-byte buffer: cut on a character boundary')
        is_(fields_named(m.data, 'X-Short-Length'),
            [b'X-Short-Length: %d\r\n' % len(want.encode())], name + ': short buffer: still the full length')
        is_(fields_named(m.data, 'Bcc'), [], name + ': no Bcc field smuggled')
        is_(fields_named(m.data, 'X-Older-Minor'), [b'X-Older-Minor: api 1.%d\r\n' % minor],
            name + ': the ABI 1.0 module ran, on a 1.%d core' % minor)
    ok(mx.alive(), 'frontmx still running')
    mx.finish()


run(main, timeout=60)
