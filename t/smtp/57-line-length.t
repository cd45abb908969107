#!/usr/bin/python3
# limits.line_length (issue 9 item 4b): 1000 octets with CRLF by default
# (RFC 5321 4.5.3.1.6), raised by the admin to let long lines through to
# the upstream, in DATA and BDAT alike, through the content filter and
# DKIM signing; frontmx's own dot-stuffing copes.  Out-of-range values are
# FILE:LINE: errors, and so are those of upstream.probe_interval.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import dkim_tool  # noqa: E402
from fmx_filters import content_filter, write_rules  # noqa: E402

HDR = b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: long lines\r\n\r\n'
LONG = 5000


def line_of(n, ch=b'q', lead=b''):
    """A text line of exactly n octets with its CRLF, as the message holds it."""
    return lead + ch * (n - 2 - len(lead)) + b'\r\n'


def data(c, body):
    """MAIL, RCPT, DATA and the (dot-stuffed) body: the final reply."""
    res = c.transaction('alice@example.org', ['bob@example.com'], body)
    return res['dot']


def bdat(c, body):
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'BDAT: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'BDAT: RCPT')
    # in two chunks cut inside the long line
    half = len(body) // 2
    c.send(b'BDAT %d\r\n' % half + body[:half])
    reply_is(c.reply(), 250, None, 'BDAT: first chunk')
    c.send(b'BDAT %d LAST\r\n' % (len(body) - half) + body[half:])
    return c.reply()


def main():
    # -- the default: 1000
    up = Upstream()
    mx = Frontmx(up, name='default line_length')
    c = SmtpClient(mx.port)
    c.start()
    at = HDR + line_of(1000) + line_of(1000, b'.', b'.')     # a leading dot: stuffed, not counted
    reply_is(data(c, at), 250, None, 'default: 1000-octet lines (one with a leading dot): 250')
    reply_is(data(c, HDR + line_of(1001)), 500, '5.5.2', 'default: a 1001-octet line: 500 5.5.2')
    reply_is(bdat(c, HDR + line_of(1000)), 250, None, 'default BDAT: 1000-octet line: 250')
    reply_is(bdat(c, HDR + line_of(1001)), 500, '5.5.2', 'default BDAT: 1001-octet line: 500 5.5.2')
    c.quit()
    ok(up.wait_messages(2, 10), 'default: the two good messages relayed')
    check_stream(up, 2, 'default line_length')
    if len(up.messages) == 2:
        check_relayed(up.messages[0].data, at, 'default: 1000-octet lines')
    mx.finish()

    # -- raised to 5000, with a content rule and DKIM signing
    rules = write_rules('body /NEEDLE-AT-THE-END/ REJECT 5.7.1 needle found\n')
    up = Upstream()
    up.line_max = LONG
    mx = Frontmx(up, name='line_length %d' % LONG, conf={
        # a backlog shorter than a line: the session must still take it whole
        'limits': {'line_length': LONG, 'pipeline_backlog': 2000},
        'filters': [content_filter(rules),
                    {'name': 'dkim', 'options': {
                        'sign': 'example.org:rsa:%s/rsa2048.pem' % dkim_tool.DATA,
                        'trusted': '127.0.0.1/32'}}],
    })
    c = SmtpClient(mx.port)
    c.start()
    first = line_of(LONG, b'h')                            # the first body line
    dotted = line_of(LONG, b'.', b'.')                     # a leading dot on a long line
    longhdr = b'X-Long: ' + b'v' * (LONG - 10) + b'\r\n'     # a header line as long
    good = longhdr + HDR + first + dotted + line_of(LONG - 1, b'm') + b'end\r\n'
    reply_is(data(c, good), 250, None,
             'raised: %d-octet lines (a header, the first body line, a dotted one): 250' % LONG)
    reply_is(data(c, HDR + line_of(LONG + 1)), 500, '5.5.2',
             'raised: a %d-octet line: 500 5.5.2' % (LONG + 1))
    reply_is(data(c, HDR + b'z' * 100000 + b'\r\n'), 500, '5.5.2', 'raised: a 100 KB line: 500 5.5.2')
    needle = HDR + b'x' * (LONG - 100) + b' NEEDLE-AT-THE-END\r\n'
    reply_is(data(c, needle), 550, '5.7.1',
             'raised: a body rule matches past octet 1000 of a long line')
    reply_is(bdat(c, HDR + line_of(LONG)), 250, None, 'raised BDAT: %d-octet line: 250' % LONG)
    reply_is(bdat(c, HDR + line_of(LONG + 1)), 500, '5.5.2',
             'raised BDAT: %d-octet line: 500 5.5.2' % (LONG + 1))
    c.quit()
    ok(up.wait_messages(2, 10), 'raised: the two good messages relayed')
    check_stream(up, 2, 'line_length %d' % LONG)
    if len(up.messages) == 2:
        m = up.messages[0].data
        ok(first in m and dotted in m and longhdr in m,
           'raised: the long lines reach the upstream intact')
        sig = [h for h in re.split(rb'\r\n(?=\S)', m.split(b'\r\n\r\n', 1)[0])
               if h.lower().startswith(b'dkim-signature:')]
        is_(len(sig), 1, 'raised: the message with long lines is DKIM-signed')
        res = dkim_tool.verify_all(m, {'rsa._domainkey.example.org':
                                       dkim_tool.key_record('rsa2048')})
        is_([r[0] for r in res], ['pass'], 'raised: the signature verifies over the long lines')
    unlike(mx.log(), r'dkim: error', 'raised: no DKIM signing error logged')
    mx.finish()

    # -- configuration bounds
    for key_, val, good_ in (('limits.line_length', 999, False), ('limits.line_length', 1000, True),
                             ('limits.line_length', 1048576, True),
                             ('limits.line_length', 1048577, False),
                             ('upstream.probe_interval', 0, False),
                             ('upstream.probe_interval', 86400, True),
                             ('upstream.probe_interval', 86401, False)):
        grp, k = key_.split('.')
        conf = base_conf(2525, '127.0.0.1:25', '/tmp')
        conf[grp][k] = val
        text = render_conf(conf)
        rc, out, path = run_frontmx_t(text)
        lineno = [i + 1 for i, l in enumerate(text.splitlines()) if re.match(r'\s*%s = ' % k, l)]
        if good_:
            is_(rc, 0, '%s = %d: -t accepts it (%s)' % (key_, val, out.strip()))
        else:
            ok(rc not in (0, None) and lineno and
               out.startswith('%s:%d:' % (path, lineno[0])) and k in out,
               '%s = %d: -t refuses it with FILE:LINE: (%s)' % (key_, val, out.strip()))


run(main, timeout=120)
