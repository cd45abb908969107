#!/usr/bin/python3
# LMTP upstream (RFC 2033) against a scripted LMTP server (t/lib/fmx.py's
# strict capture Upstream in lmtp mode): frontmx says LHLO, relays one
# recipient per transaction (a second RCPT gets 452 4.5.3 and the client
# sends it again in a new transaction), and maps the one per-recipient
# reply after the final dot to the client's reply.  The server answers the
# dot with 250, 450, 550, two replies for one recipient, nothing (then
# closes), a reply before the dot (behind its 354), and a line without a
# code.  Whatever it does, the client never gets 250 for a recipient the
# server did not accept, and no recipient gets two copies; every broken
# answer is a 451 4.x and a new connection next time.
#
# A filter that edits recipients (t/plugins/rcpt_edit.c: adds two, removes
# one) gets the matrix of per-recipient replies: the client's reply is
# always the server's reply for the client's own recipient, delivered alone
# first; the added ones follow only after its 2xx, each in a transaction of
# its own, and their failures are logged, never the client's reply; when
# the client's recipient failed nothing else is delivered, so the retry
# duplicates nothing; when the filter removed it, the first added
# recipient stands in for it.  Every copy is counted per recipient.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import plugin, require_modules  # noqa: E402
import socket  # noqa: E402

BODY = b'From: alice@example.org\r\nSubject: lmtp\r\n\r\nto a scripted LMTP server\r\n'
SENDER = 'alice@example.org'


def server_copies(up, start=0):
    """{recipient: copies the server said it delivered (2xx for it after the
    dot)} over messages[start:]"""
    out = {}
    with up.lock:
        msgs = list(up.messages[start:])
    for m in msgs:
        lines = (m.reply or '').split('\r\n')
        for i, rcpt in enumerate(m.rcpts):
            if i < len(lines) and lines[i][:1] == '2':
                out[rcpt] = out.get(rcpt, 0) + 1
    return out


def session(mx):
    c = SmtpClient(mx.port, timeout=30)
    reply_is(c.start('client.example'), 250, None, 'EHLO')
    return c


def one(c, rcpt, name):
    """One transaction for one recipient; the reply to the final dot."""
    res = c.transaction(SENDER, [rcpt], BODY)
    reply_is(res['mail'], 250, None, name + ': MAIL 250')
    reply_is(res['rcpt'][0], 250, None, name + ': RCPT 250')
    return res['dot']


def shut(m, conn):
    """on_dot: no reply at all, the connection closed."""
    try:
        conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return ''


def main():
    up = Upstream(lmtp=True, ehlo_caps=['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx('lmtp:127.0.0.1:%d' % up.port,
                 conf={'timeouts': {'upstream_command': 10, 'upstream_data_end': 10}})
    client_250 = {}     # recipient: 250s the client got after the dot
    c = session(mx)

    # -- 250: delivered, the client is told so
    dot = one(c, 'ok@example.com', '250')
    reply_is(dot, 250, '2.0.0', '250: the per-recipient 250 is the client\'s')
    client_250['ok@example.com'] = 1
    cmds = up.commands()
    ok(any(x.startswith('LHLO ') for x in cmds) and
       not any(x.split(' ')[0] in ('EHLO', 'HELO') for x in cmds),
       'frontmx says LHLO, never EHLO/HELO, to an LMTP server')
    ok(not any(x.startswith(('XCLIENT', 'XFORWARD')) for x in cmds),
       'no XCLIENT/XFORWARD: the server offers neither')

    # -- three recipients: one per transaction, the rest 452 4.5.3 and retried
    r = c.cmd('MAIL FROM:<%s>' % SENDER)
    reply_is(r, 250, None, 'three: MAIL 250')
    reply_is(c.cmd('RCPT TO:<one@example.com>'), 250, None, 'three: first RCPT 250')
    for n in ('two', 'three'):
        r = c.cmd('RCPT TO:<%s@example.com>' % n)
        reply_is(r, 452, '4.5.3', 'three: RCPT %s gets 452 4.5.3' % n)
        like(r.text, r'new transaction', 'three: the 452 says to send it in a new transaction')
    d, dot = c.data(BODY)
    reply_is(dot, 250, None, 'three: 250 for the one recipient relayed')
    client_250['one@example.com'] = 1
    for n in ('two', 'three'):
        reply_is(one(c, '%s@example.com' % n, 'three retry ' + n), 250, None,
                 'three: %s delivered in its own transaction' % n)
        client_250['%s@example.com' % n] = 1
    ok(all(len(m.rcpts) == 1 for m in up.messages),
       'every LMTP transaction carried exactly one recipient')

    # -- 450 and 550 relayed, never 250; the 450 one is delivered on retry
    up.on_dot = '450 4.2.0 <temp@example.com> mailbox busy'
    reply_is(one(c, 'temp@example.com', '450'), 450, '4.2.0', '450: relayed as 450')
    up.on_dot = '550 5.1.1 <gone@example.com> no such user'
    dot = one(c, 'gone@example.com', '550')
    reply_is(dot, 550, '5.1.1', '550: relayed as 550')
    like(dot.text, r'no such user', '550: the server\'s text')
    up.on_dot = None
    reply_is(one(c, 'temp@example.com', '450 retry'), 250, None, '450: the retry is delivered')
    client_250['temp@example.com'] = 1
    c.quit()

    # -- broken answers: 451 4.x, the connection dropped, never 250
    cases = [
        ('two replies for one recipient', 'double@example.com',
         {'on_dot': lambda m, conn: '250 2.0.0 <%s> Ok\r\n250 2.0.0 <%s> Ok again'
          % (m.rcpts[0], m.rcpts[0])}),
        ('no reply, then close', 'silent@example.com', {'on_dot': shut}),
        ('a reply before the dot', 'early@example.com',
         {'inject': {'DATA': '250 2.0.0 <early@example.com> Ok, early\r\n'}}),
        ('a reply without a code', 'nocode@example.com', {'on_dot': 'Ok but no code'}),
    ]
    for name, rcpt, attrs in cases:
        nconn = len(up.conns)
        for k, v in attrs.items():
            setattr(up, k, v)
        c = session(mx)
        dot = one(c, rcpt, name)
        ok(dot is not None and dot.code == 451 and (dot.enh or '').startswith('4.'),
           '%s: 451 4.x to the client (%r)' % (name, dot))
        up.on_dot = None
        up.inject = {}
        ok(wait_for(lambda: up.conns[nconn].closed, 10),
           '%s: frontmx dropped that LMTP connection' % name)
        reply_is(c.cmd('NOOP'), 250, None, '%s: the client session goes on' % name)
        c.quit()

    # -- XCLIENT only when offered: then XCLIENT, and LHLO again
    up.ehlo_caps = ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES', 'XCLIENT ADDR PORT HELO']
    nconn = len(up.conns)
    c = session(mx)
    reply_is(one(c, 'xclient@example.com', 'xclient'), 250, None, 'xclient: delivered')
    client_250['xclient@example.com'] = 1
    conn = up.conns[nconn]
    ok(len(conn.xclient) == 1 and 'ADDR=127.0.0.1' in conn.xclient[0],
       'xclient: offered, so sent once (%r)' % conn.xclient)
    lhlo = [x for x in conn.commands if x.startswith('LHLO ')]
    is_(len(lhlo), 2, 'xclient: LHLO before and after XCLIENT')
    c.quit()

    # -- the invariants over everything above
    copies = server_copies(up)
    ok(all(n == 1 for n in copies.values()),
       'no recipient delivered twice by the server (%r)' % copies)
    for rcpt, n in client_250.items():
        is_(copies.get(rcpt, 0), 1, '%s: the client\'s 250 stands for one copy' % rcpt)
    ok('gone@example.com' not in copies, 'the refused recipient was never delivered')
    check_stream(up, len(up.messages), 'LMTP stream')
    mx.finish()
    added_recipient()


ARCH = 'archive@example.com'
ARCH2 = 'archive2@example.com'
MOVED = 'moved@example.com'


def per_rcpt(script):
    """on_dot: each recipient's reply from script (default 250), in RCPT order"""
    return lambda m, conn: '\r\n'.join(
        script.get(r, '250 2.0.0 <%s> Ok' % r) for r in m.rcpts)


def added_case(c, up, name, rcpt, script, code, want):
    """One message to rcpt (the filter adds ARCH and ARCH2, removes MOVED),
    the server answering per recipient from script: the client's reply to
    the dot has code, and want is {recipient: copies} delivered by it."""
    start = len(up.messages)
    up.on_dot = per_rcpt(script)
    dot = one(c, rcpt, name)
    is_(dot.code if dot else None, code, '%s: client hears %d (%r)' % (name, code, dot))
    # the session answers nothing else until the added recipients are done
    reply_is(c.cmd('NOOP'), 250, None, name + ': NOOP after the dot')
    up.on_dot = None
    got = server_copies(up, start)
    is_(got, want, '%s: copies delivered per recipient' % name)
    return dot


def added_recipient():
    """LMTP with filter-edited recipients (t/plugins/rcpt_edit.c): the
    client's reply is the reply for the client's own recipient, delivered
    alone first; the added ones go after its 2xx, one per transaction, and
    their failures are only logged; when the client's recipient failed,
    nothing else is delivered (its retry runs the filters again); when a
    filter removed it, the first added recipient stands in for it."""
    if not require_modules(plugin('rcpt_edit')):
        return
    up = Upstream(lmtp=True, ehlo_caps=['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx('lmtp:127.0.0.1:%d' % up.port, name='frontmx (lmtp, added recipient)',
                 conf={'filters': [{'name': 'rcpt_edit', 'module': plugin('rcpt_edit'),
                                    'options': {'del': MOVED, 'add': ARCH, 'add2': ARCH2}}]})
    c = session(mx)
    first = len(up.messages)
    added_case(c, up, 'added, all 250', 'first@example.com', {}, 250,
               {'first@example.com': 1, ARCH: 1, ARCH2: 1})
    # client 250, an added one 450: 250 (a 4xx would make the client
    # resend a message its recipient already has)
    added_case(c, up, 'client 250, added 450', 'second@example.com',
               {ARCH: '450 4.2.0 <%s> busy' % ARCH}, 250,
               {'second@example.com': 1, ARCH2: 1})
    # client 250, an added one 550: 250 (a 5xx would bounce a delivered message)
    added_case(c, up, 'client 250, added 550', 'third@example.com',
               {ARCH2: '550 5.1.1 <%s> no such user' % ARCH2}, 250,
               {'third@example.com': 1, ARCH: 1})
    # client 450: the added ones are not delivered, the retry delivers
    # everything once
    added_case(c, up, 'client 450, added 250', 'fourth@example.com',
               {'fourth@example.com': '450 4.2.0 <fourth@example.com> over quota'},
               450, {})
    added_case(c, up, 'client 450, retried', 'fourth@example.com', {}, 250,
               {'fourth@example.com': 1, ARCH: 1, ARCH2: 1})
    # client 550: the client bounces it, nothing delivered
    added_case(c, up, 'client 550, added 250', 'fifth@example.com',
               {'fifth@example.com': '550 5.1.1 <fifth@example.com> no such user'},
               550, {})
    # the filter removed the client's recipient and added two: the first
    # added stands in for it; its 450 is the client's and nothing is
    # delivered, so the retry duplicates nothing
    added_case(c, up, 'removed, first added 450', MOVED,
               {ARCH: '450 4.2.0 <%s> busy' % ARCH}, 450, {})
    added_case(c, up, 'removed, retried', MOVED, {}, 250, {ARCH: 1, ARCH2: 1})
    # ... and a 450 of the second added one is logged, the client has 250
    added_case(c, up, 'removed, second added 450', MOVED,
               {ARCH2: '450 4.2.0 <%s> busy' % ARCH2}, 250, {ARCH: 1})
    # an added recipient refused at RCPT (the envelope is sent for each):
    # logged, the others delivered; the same for the stand-in is the client's
    up.on_rcpt = lambda cmd, conn: ('550 5.1.1 <%s> unknown' % ARCH) if ARCH in cmd else None
    added_case(c, up, 'client 250, added refused at RCPT', 'sixth@example.com', {}, 250,
               {'sixth@example.com': 1, ARCH2: 1})
    dot = added_case(c, up, 'removed, stand-in refused at RCPT', MOVED, {}, 550, {})
    like(dot.text if dot else '', r'unknown', 'removed: the RCPT refusal\'s text is the client\'s')
    up.on_rcpt = None
    # the filter adds the client's own recipient again: one copy
    added_case(c, up, 'added repeats the client\'s', ARCH, {}, 250, {ARCH: 1, ARCH2: 1})
    with up.lock:
        msgs = list(up.messages[first:])
    ok(all(len(m.rcpts) == 1 for m in msgs),
       'added: every LMTP transaction carried exactly one recipient (%r)'
       % [m.rcpts for m in msgs])
    ok(MOVED not in server_copies(up, first),
       'added: the recipient the filter removed was never delivered')
    conn = up.conns[-1]
    c.quit()
    # frontmx ends the connection with QUIT: it was in step, not dropped
    ok(wait_for(lambda: conn.closed, 10) and conn.commands[-1] == 'QUIT',
       'added: every reply was read in step, the connection ended with QUIT')
    is_(sum(1 for x in conn.commands if x == 'DATA'), len(msgs),
        'added: every message went down that one connection')
    check_stream(up, len(up.messages), 'added: LMTP stream')
    log = mx.log()
    like(log, r'added rcpt=<archive@example\.com> result=tempfail reply="450 4\.2\.0',
         'added: an added recipient\'s 450 is logged with its address')
    like(log, r'added rcpt=<archive2@example\.com> result=rejected reply="550 5\.1\.1',
         'added: an added recipient\'s 550 is logged with its address')
    like(log, r'added rcpt=<archive@example\.com> result=rejected reply="550 5\.1\.1 <archive@example\.com> unknown',
         'added: a refusal at RCPT is logged with its address')
    like(log, r'added rcpt=<archive@example\.com> result=skipped',
         'added: a repeated recipient is skipped and logged')
    mx.finish()


run(main, timeout=120)
