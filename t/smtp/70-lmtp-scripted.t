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
# A filter that adds a recipient (t/plugins/rcpt_edit.c) makes the
# envelope go again with two RCPTs: two replies after the dot, and the
# client hears 250 only when both are 2xx, the 4xx when one is.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import plugin, require_modules  # noqa: E402
import socket  # noqa: E402

BODY = b'From: alice@example.org\r\nSubject: lmtp\r\n\r\nto a scripted LMTP server\r\n'
SENDER = 'alice@example.org'


def server_copies(up):
    """{recipient: copies the server said it delivered (2xx for it after the dot)}"""
    out = {}
    with up.lock:
        msgs = list(up.messages)
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


def added_recipient():
    if not require_modules(plugin('rcpt_edit')):
        return
    up = Upstream(lmtp=True, ehlo_caps=['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx('lmtp:127.0.0.1:%d' % up.port, name='frontmx (lmtp, added recipient)',
                 conf={'filters': [{'name': 'rcpt_edit', 'module': plugin('rcpt_edit'),
                                    'options': {'add': 'archive@example.com'}}]})
    c = session(mx)
    reply_is(one(c, 'first@example.com', 'added, all 250'), 250, None,
             'added: 250 when both recipients got 250')
    m = up.messages[-1] if up.messages else None
    is_(m.rcpts if m else None, ['first@example.com', 'archive@example.com'],
        'added: the envelope went again with both recipients')
    up.on_dot = lambda m, conn: ('250 2.0.0 <%s> Ok\r\n450 4.2.0 <%s> busy'
                                 % (m.rcpts[0], m.rcpts[1]))
    dot = one(c, 'second@example.com', 'added, one 450')
    reply_is(dot, 450, '4.2.0', 'added: the 450 of one recipient is the client\'s reply, not 250')
    up.on_dot = None
    conn = up.conns[-1]
    c.quit()
    # frontmx ends the connection with QUIT: it was in step, not dropped
    ok(wait_for(lambda: conn.closed, 10) and conn.commands[-1] == 'QUIT',
       'added: both replies were read in step, the connection ended with QUIT')
    is_(sum(1 for x in conn.commands if x == 'DATA'), 2,
        'added: both messages went down that one connection')
    check_stream(up, 2, 'added: LMTP stream')
    like(mx.log(), r'lmtp rcpt=2/2 reply="450', 'added: each per-recipient reply is logged')
    mx.finish()


run(main, timeout=120)
