#!/usr/bin/python3
# BDAT to the upstream (RFC 3030; issue 13, one round trip less per
# message): when the upstream offers CHUNKING the message goes as one
# "BDAT <n> LAST" with exactly n octets, not dot-stuffed, and its one reply
# is the message's.  What DATA delivered and what BDAT delivers are the same
# octets at the upstream (the same messages through both, compared).
# upstream.chunking = false, an upstream without CHUNKING, and LMTP keep
# DATA.  Faults: a reply before the last octet was written, 5xx, 4xx, two
# replies, garbage, EOF in the chunk, silence: the client gets the reply
# to BDAT LAST or a 4xx, never a 250 the upstream did not give after the
# last octet.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'CHUNKING']
FROM, RCPT = 'alice@example.org', 'bob@example.com'

# Lines a dot-stuffer and a counter could get wrong: leading dots, a lone
# dot, empty lines, a line of spaces; a header-only message; a big one that
# goes through the file spool (spool_memory is 64 KiB) in several reads.
MESSAGES = [
    ('dots', b'From: alice@example.org\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading\r\n'
             b'\r\n   \r\nlast line\r\n'),
    ('header only', b'From: alice@example.org\r\nSubject: no body\r\n'),
    ('no blank line body', b'Subject: x\r\nnot a header line\r\nmore\r\n'),
    ('big', b'From: alice@example.org\r\nSubject: big\r\n\r\n' +
            b''.join(b'.%06d ' % i + b'x' * 70 + b'\r\n' for i in range(3000))),
]
# Through the client's BDAT, the last line without CRLF: the spool adds one.
CLIENT_BDAT = b'From: alice@example.org\r\nSubject: unterminated\r\n\r\n.dot\r\nno CRLF at the end'


def send_all(mx):
    """Every message of MESSAGES (DATA from the client) and CLIENT_BDAT;
    the final replies."""
    finals = []
    c = SmtpClient(mx.port, timeout=30)
    c.start()
    for name, body in MESSAGES:
        res = c.transaction(FROM, [RCPT], body)
        finals.append(res['dot'])
    reply_is(c.cmd('MAIL FROM:<%s>' % FROM), 250, None, 'MAIL for the client BDAT')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'RCPT for the client BDAT')
    c.send(b'BDAT %d LAST\r\n' % len(CLIENT_BDAT) + CLIENT_BDAT)
    finals.append(c.reply())
    c.quit()
    return finals


def verb_of(up, mx, name):
    """One message through mx to up: it must go as DATA."""
    c = session(mx)
    reply_is(c.transaction(FROM, [RCPT], MESSAGES[0][1])['dot'], 250, None, name + ': 250')
    c.quit()
    ok(up.wait_messages(1, 10) and up.messages[0].verb == 'DATA', name + ': DATA')
    mx.finish()
    up.stop()


def session(mx):
    c = SmtpClient(mx.port, timeout=60)
    c.start()
    return c


def main():
    # -- the same messages through DATA (chunking = false) and BDAT
    up_d, up_b = Upstream(ehlo_caps=CAPS), Upstream(ehlo_caps=CAPS)
    mx_d = Frontmx(up_d, conf={'upstream': {'chunking': False}}, name='frontmx-data')
    mx_b = Frontmx(up_b, name='frontmx-bdat')
    n = len(MESSAGES) + 1
    for label, mx, up in (('DATA', mx_d, up_d), ('BDAT', mx_b, up_b)):
        finals = send_all(mx)
        for (name, _b), r in zip(MESSAGES + [('client BDAT', b'')], finals):
            reply_is(r, 250, '2.0.0', '%s: %s: the upstream\'s 250' % (label, name))
        ok(up.wait_messages(n, 15), '%s: %d messages at the upstream' % (label, n))
    is_([m.verb for m in up_d.messages], ['DATA'] * n, 'chunking = false: every message went as DATA')
    is_([m.verb for m in up_b.messages], ['BDAT'] * n, 'chunking on, CHUNKING offered: every one as BDAT')
    cmds = up_b.commands()
    is_([x for x in cmds if x.split(' ')[0] in ('DATA', 'BDAT')],
        ['BDAT %d LAST' % len(m.data) for m in up_b.messages],
        'one "BDAT <n> LAST" per message, n its exact length, no DATA')
    for (name, _b), md, mb in zip(MESSAGES + [('client BDAT', b'')], up_d.messages, up_b.messages):
        rd, bd = split_received(md.data)
        rb, bb = split_received(mb.data)
        ok(rd is not None and rb is not None, '%s: each starts with our Received' % name)
        is_(bb, bd, '%s: BDAT delivered the octets DATA delivered' % name)
        ok(mb.data.endswith(b'\r\n'), '%s: ends in CRLF' % name)
    is_(split_received(up_b.messages[-1].data)[1], CLIENT_BDAT + b'\r\n',
        'the unterminated client BDAT arrives with one CRLF added, as by DATA')
    is_(up_b.violations + up_b.errors, [], 'the BDAT upstream saw no violation or error')
    mx_d.finish()
    mx_b.finish()
    up_d.stop()

    # -- DATA when no CHUNKING is offered, and for LMTP, CHUNKING or not
    # (RFC 2033's replies after the dot are tested with DATA only)
    up = Upstream()
    verb_of(up, Frontmx(up), 'no CHUNKING offered')
    up = Upstream(lmtp=True, ehlo_caps=CAPS)
    verb_of(up, Frontmx(up, conf={'upstream': {'address': 'lmtp:127.0.0.1:%d' % up.port}}),
            'LMTP with CHUNKING offered')

    # -- faults; timeouts.upstream_data_end = 3 for the silent one
    up = Upstream(ehlo_caps=CAPS, rcvbuf=4096)
    mx = Frontmx(up, conf={'timeouts': {'upstream_data_end': 3},
                           'limits': {'message_size': 16 << 20}})
    body = MESSAGES[0][1]

    def fault(name, code, enh, msgs, **kw):
        for k, v in kw.items():
            setattr(up, k, v)
        before = len(up.messages)
        c = session(mx)
        res = c.transaction(FROM, [RCPT], body)
        reply_is(res['dot'], code, enh, name)
        for k in kw:
            setattr(up, k, None)
        c.quit()
        is_(len(up.messages) - before, msgs, name + ': messages the upstream completed: %d' % msgs)
        return res['dot']

    r = fault('5xx to BDAT LAST: relayed', 554, '5.7.1', 1,
              on_bdat='554 5.7.1 Error: content refused')
    like(r.text if r else '', 'content refused', "5xx: the upstream's own text")
    fault('4xx to BDAT LAST: relayed', 452, '4.3.1', 1,
          on_bdat='452 4.3.1 Error: insufficient storage')
    fault('two replies to BDAT LAST: 451, not the 250', 451, '4.3.0', 1,
          on_bdat='250 2.0.0 Ok: queued as ONE\r\n250 2.0.0 Ok: queued as TWO')
    fault('garbage reply to BDAT LAST: 451', 451, '4.3.0', 1, garbage_at='BDAT',
          garbage=b'2x0 what\r\n')
    fault('354 to BDAT LAST (no sense): 451', 451, '4.3.0', 1,
          on_bdat='354 go ahead')
    fault('EOF in the chunk: 451', 451, '4.4.2', 0, reset_in_data=60)
    fault('silent after the chunk: 451', 451, '4.4.2', 1, silent_at='BDAT')
    like(mx.log(), r'error="timeout" state=data-end detail="no complete reply within 3 s"',
         'silence: the upstream_data_end bound (3 s) ran out after the chunk')
    up.garbage = b'hello world\r\n'

    # A 250 before the last octet was written: the upstream answers the
    # command line at once and reads no more, so 9 MB cannot all be
    # written (its receive buffer is 4 KiB, ours at most 4 MiB).
    big = b'From: alice@example.org\r\nSubject: early\r\n\r\n' + (b'y' * 998 + b'\r\n') * 9000
    up.bdat_early, up.hold_data = '250 2.0.0 Ok: queued early', True
    c = session(mx)
    res = c.transaction(FROM, [RCPT], big)
    reply_is(res['dot'], 451, '4.3.0', 'a 250 before the last octet: 451, never the 250')
    up.release()
    up.bdat_early, up.hold_data = None, False
    c.quit()
    like(mx.log(), r'error="malformed reply" state=data-send detail="reply before it was asked for"',
         'logged: the reply came while the chunk was being written')
    is_(len([m for m in up.messages if len(m.data) > 1000000]), 0, 'the big message was not completed')

    # after all of that: a message through the same daemon, as BDAT
    c = session(mx)
    before = len(up.messages)
    reply_is(c.transaction(FROM, [RCPT], body)['dot'], 250, '2.0.0', 'then a message relays again')
    c.quit()
    ok(up.wait_messages(before + 1, 10) and up.messages[-1].verb == 'BDAT', '... as BDAT')
    # a refused BDAT LAST may leave the MAIL open (RFC 3030): RSET before the next
    c = session(mx)
    up.on_bdat = '554 5.7.1 no'
    reply_is(c.transaction(FROM, [RCPT], body)['dot'], 554, '5.7.1', 'refused BDAT LAST')
    up.on_bdat = None
    reply_is(c.transaction(FROM, [RCPT], body)['dot'], 250, '2.0.0', 'next message, same session: 250')
    c.quit()
    conn = up.conns[-1]
    verbs = [x.split(' ')[0] for x in conn.commands]
    i = verbs.index('BDAT')
    is_(verbs[i + 1:i + 3], ['RSET', 'MAIL'], 'after the refused BDAT LAST: RSET, then MAIL')
    is_(up.violations, [], 'no violations')
    mx.finish()
    up.stop()


run(main, timeout=240)
