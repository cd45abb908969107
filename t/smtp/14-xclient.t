#!/usr/bin/python3
# The proxy tells the upstream who the client is: XCLIENT when advertised
# (then EHLO again), else XFORWARD (before every transaction), else nothing.
# Attribute values are xtext; client text can never inject attributes.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402

BODY = b'From: alice@example.org\r\nSubject: xclient\r\n\r\nbody\r\n'
XTEXT = re.compile(r'^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$')


def attrs(lines, verb):
    """Parse 'VERB A=x B=y' lines into a list of (name, value)."""
    out = []
    for l in lines:
        parts = l.split(' ')
        if parts[0].upper() != verb:
            continue
        for p in parts[1:]:
            if p == '':
                out.append(('', ''))          # double space: malformed
                continue
            k, _, v = p.partition('=')
            out.append((k.upper(), v))
    return out


def xdecode(v):
    return re.sub(r'\+([0-9A-F]{2})', lambda m: chr(int(m.group(1), 16)), v)


def check_attrs(av, verb, want, name):
    names = [k for k, _ in av]
    ok(all(k and re.match(r'^[A-Z_]+$', k) for k in names), name + ': attribute names well-formed')
    ok(len(names) == len(set(names)), name + ': no attribute repeated (%s)' % names)
    bad = [(k, v) for k, v in av if not XTEXT.match(v)]
    ok(not bad, name + ': every value is xtext (%s)' % bad)
    d = dict(av)
    for k, v in want.items():
        is_(xdecode(d.get(k, '')) if k in d else None, v, '%s: %s=%s' % (name, k, v))
    return d


def one_session(mx, helo, cmd='EHLO', n=1):
    c = SmtpClient(mx.port)
    c.greeting()
    h = c.cmd('%s %s' % (cmd, helo))
    port = c.local_port()
    rs = []
    for i in range(n):
        rs.append(c.transaction('alice@example.org', ['bob@example.com'], BODY))
    c.quit()
    return h, port, rs


def main():
    # -- XCLIENT
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO LOGIN'])
    mx = Frontmx(up, name='xclient')
    c = SmtpClient(mx.port)
    c.greeting()
    e = c.ehlo('client.example')
    ok(not any(l.upper().startswith('XCLIENT') for l in e.lines), 'XCLIENT not advertised to the client')
    reply_is(c.cmd('XCLIENT ADDR=192.0.2.99'), 502, '5.5.1', 'client XCLIENT: 502 5.5.1')
    reply_is(c.cmd('XFORWARD ADDR=192.0.2.99'), 502, '5.5.1', 'client XFORWARD: 502 5.5.1')
    port = c.local_port()
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'message relayed through an XCLIENT upstream')
    res = c.transaction('alice@example.org', ['carol@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'second message, same session')
    c.quit()
    ok(up.wait_messages(2, 10), 'upstream got 2 messages')
    check_stream(up, 2, 'xclient upstream')
    ok(b'192.0.2.99' not in up.all_bytes(), "the client's own XCLIENT/XFORWARD never reached the upstream")
    if up.messages:
        m = up.messages[0]
        is_(len(m.xclient), 1, 'exactly one XCLIENT on the upstream connection')
        av = attrs(m.xclient, 'XCLIENT')
        d = check_attrs(av, 'XCLIENT', {'ADDR': '127.0.0.1', 'PORT': str(port),
                                        'HELO': 'client.example', 'PROTO': 'ESMTP'}, 'XCLIENT')
        ok('LOGIN' not in d or d['LOGIN'] in ('', '[UNAVAILABLE]'), 'no LOGIN for an unauthenticated client')
        ok(set(d) <= {'NAME', 'ADDR', 'PORT', 'PROTO', 'HELO', 'LOGIN'},
           'only advertised attributes sent (%s)' % sorted(d))
        ok(all(len(l) + 2 <= 512 for l in m.xclient), 'XCLIENT line within 512 octets')
        raw = up.raw[m.conn]
        like(raw, rb'XCLIENT [^\r\n]*\r\nEHLO [^\r\n]+\r\n(?:[^\r\n]*\r\n)*?MAIL FROM:<alice@example\.org>',
             'XCLIENT, then EHLO again, then MAIL')
        is_(raw.count(b'XCLIENT '), 1, 'one XCLIENT on the connection, before the first MAIL')
        is_(up.messages[1].conn, m.conn, 'second message reuses the upstream session')

    # HELO (not EHLO), an address-literal name: PROTO=SMTP, literal xtext-safe
    h, port, rs = one_session(mx, '[127.0.0.1]', cmd='HELO')
    reply_is(h, 250, None, 'HELO [127.0.0.1]')
    reply_is(rs[0]['dot'], 250, None, 'message after HELO')
    if up.wait_messages(3, 10):
        check_attrs(attrs(up.messages[2].xclient, 'XCLIENT'), 'XCLIENT',
                    {'ADDR': '127.0.0.1', 'PORT': str(port), 'HELO': '[127.0.0.1]', 'PROTO': 'SMTP'},
                    'XCLIENT after HELO')

    # attribute injection through the EHLO argument
    h, port, rs = one_session(mx, 'evil.example ADDR=192.0.2.66 NAME=spoofed.example')
    ok(h.code in (250, 501), 'EHLO with spaces and attributes: 250 or 501 (%r)' % (h,))
    allb = up.all_bytes()
    ok(not re.search(rb'XCLIENT[^\r\n]* ADDR=192\.0\.2\.66', allb), 'no injected ADDR attribute')
    ok(not re.search(rb'XCLIENT[^\r\n]* NAME=spoofed', allb), 'no injected NAME attribute')
    # the messages the clients were told were accepted: 3 before, and this
    # one if its EHLO was taken
    accepted = 3 + sum(1 for r in rs if r['dot'] is not None and r['dot'].code == 250)
    ok(up.wait_messages(accepted, 10), 'upstream got the %d accepted messages' % accepted)
    bad = [m.xclient for m in up.messages
           if [v for k, v in attrs(m.xclient, 'XCLIENT') if k == 'ADDR'] != ['127.0.0.1']]
    ok(up.messages and not bad, 'every XCLIENT has exactly ADDR=127.0.0.1 (%s)' % bad)
    check_stream(up, accepted, 'xclient upstream after injection attempt')
    mx.finish()

    # -- XFORWARD only
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XFORWARD NAME ADDR PORT PROTO HELO'])
    mx = Frontmx(up, name='xforward')
    h, port, rs = one_session(mx, 'client.example', n=2)
    reply_is(rs[0]['dot'], 250, None, 'message 1 through an XFORWARD upstream')
    reply_is(rs[1]['dot'], 250, None, 'message 2, same session')
    ok(up.wait_messages(2, 10), 'upstream got 2 messages')
    check_stream(up, 2, 'xforward upstream')
    ok(b'XCLIENT' not in up.all_bytes(), 'no XCLIENT to an upstream that did not offer it')
    for i, m in enumerate(up.messages[:2]):
        # Postfix resets XFORWARD attributes at the end of each transaction,
        # so they must be sent before every MAIL.
        check_attrs(attrs(m.xforward_tx, 'XFORWARD'), 'XFORWARD',
                    {'ADDR': '127.0.0.1', 'PORT': str(port), 'HELO': 'client.example', 'PROTO': 'ESMTP'},
                    'XFORWARD before message %d' % (i + 1))
        ok(all(len(l) + 2 <= 512 for l in m.xforward_tx), 'XFORWARD lines within 512 octets')
    mx.finish()

    # -- neither
    up = Upstream()
    mx = Frontmx(up, name='plain')
    h, port, rs = one_session(mx, 'client.example')
    reply_is(rs[0]['dot'], 250, None, 'message through a plain upstream')
    ok(up.wait_messages(1, 10), 'upstream got it')
    check_stream(up, 1, 'plain upstream')
    unlike(up.all_bytes(), rb'(?m)^(XCLIENT|XFORWARD)', 'neither XCLIENT nor XFORWARD sent')
    mx.finish()


run(main)
