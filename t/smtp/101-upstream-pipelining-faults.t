#!/usr/bin/python3
# Pipelining to the upstream, what can go wrong (issue 13): the client
# pipelines MAIL, 3 RCPTs and DATA; frontmx sends MAIL and the RCPTs in
# one write (t/smtp/100) and the scripted upstream (t/lib/fmx_pipe.py)
# answers the group as each case says.  The client's replies must be
# exactly right and in command order, a 250 reaches the client only for a
# command the upstream said 250 to, and no message is relayed unless its
# recipients were accepted upstream.  Any error (a wrong code, a reply
# more or fewer than owed, EOF, garbage, a timeout, a reply before the
# group was written) kills the connection: every command still owed gets
# a 4xx.  A refused MAIL: the RCPTs behind it hear what they would have
# heard alone ("503 5.5.1 Error: need MAIL command") and the filters hear
# the transaction ended (the milter gets an abort).  A RCPT refused here
# (relay control, a milter, its syntax) in the middle keeps its place in
# the reply order.
import os
import select
import sys
import threading
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_milter import CONTINUE, REJECT, ScriptedMilter  # noqa: E402
from fmx_pipe import RawUpstream  # noqa: E402

RCPTS = ['bob@example.com', 'carol@example.com', 'dave@example.com']
BODY = b'From: alice@example.org\r\nSubject: faults\r\n\r\nbody\r\n'
NEED_MAIL = '503 5.5.1 Error: need MAIL command'
MALFORMED = '451 4.3.0 Error: malformed upstream reply, try again later'
LOST = '451 4.4.2 Error: upstream connection lost, try again later'
TIMEOUT = '451 4.4.2 Error: upstream timeout, try again later'
N = [0]


def first_line(r):
    return '%d %s' % (r.code, r.lines[0]) if r is not None and r.lines else None


def case(mx, up, name, replies, rcpts=RCPTS, n=None, want=None, texts=None, relayed=False,
         killed=False, before=None):
    """One client session pipelining MAIL, rcpts and DATA; the upstream's
    connection takes n commands (MAIL + rcpts) and answers with replies."""
    N[0] += 1
    sender = 'case%d@example.org' % N[0]
    up.script(n if n is not None else 1 + len(rcpts), replies)
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('faults.example')
    c.send(('MAIL FROM:<%s>\r\n' % sender + ''.join('RCPT TO:<%s>\r\n' % r for r in rcpts)
            + 'DATA\r\n').encode())
    if before is not None:
        before(c)
    rs = [c.reply() for _ in range(2 + len(rcpts))]
    got = [r.code if r is not None else None for r in rs]
    if want is not None:
        is_(got, want, '%s: the client\'s replies in order' % name)
    for i, t in (texts or {}).items():
        is_(first_line(rs[i]), t, '%s: reply %d is %r' % (name, i, t))
    if got and got[-1] == 354:
        c.send(BODY + b'.\r\n')
        reply_is(c.reply(), 250, None, '%s: message accepted' % name)
    c.cmd('QUIT')
    c.close()
    conn = up.session(len(up.served) - 1 if up.served else 0)
    ok(conn is not None, '%s: the upstream had the session' % name)
    if conn is None:
        return None, rs
    is_(len(conn.messages), 1 if relayed else 0, '%s: message %s' % (name, 'relayed' if relayed
                                                                   else 'never relayed'))
    if killed:
        ok(conn.closed_by_peer and b'QUIT' not in conn.cmds,
           '%s: frontmx dropped the connection (no QUIT, never reused)' % name)
    return conn, rs


def milter_rcpt(session, data):
    rcpt = data.decode('latin-1', 'replace')
    if 'reject' in rcpt:
        return [REJECT]
    if 'slow' in rcpt:
        SLOW.wait_upstream()
    return [CONTINUE]


class Slow:
    """The milter holds slow's RCPT until the upstream has sent its early
    reply and frontmx logged the connection dead (seen: it did)."""
    def __init__(self):
        self.mx = None
        self.holding = threading.Event()
        self.sent = threading.Event()
        self.seen = False

    def wait_upstream(self):
        self.holding.set()
        if self.sent.wait(20):
            self.seen = wait_for(lambda: 'reply before it was asked for' in self.mx.log(), 20)


SLOW = Slow()


def main():
    m = ScriptedMilter(script={'rcpt': milter_rcpt})
    up = RawUpstream()
    mx = Frontmx(up.port, conf={'workers': 1,
                                'relay': {'networks': ['10.0.0.0/8']},
                                'timeouts': {'upstream_command': 3},
                                'filters': [{'name': 'rcptcheck', 'milter': m.address}]})
    SLOW.mx = mx
    ok4 = b'250 2.1.0 ok\r\n' + b'250 2.1.5 ok\r\n' * 3

    # -- every 250 held until the upstream gave it
    got_group, go = threading.Event(), threading.Event()

    def hold(conn, lines):
        got_group.set()
        go.wait(20)
        conn.send(b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 <carol@example.com>: no such user\r\n'
                  b'250 2.1.5 ok\r\n')
        conn.serve_rest()

    def quiet(c):
        ok(got_group.wait(20), 'held: the upstream has the group')
        r, _, _ = select.select([c.sock], [], [], 0.5)
        ok(not r and not c.buf, 'held: the client has no reply while the upstream holds its own')
        go.set()

    conn, rs = case(mx, up, 'one RCPT refused', hold, want=[250, 250, 550, 250, 354],
                    texts={2: '550 5.1.1 <carol@example.com>: no such user'}, relayed=True,
                    before=quiet)
    if conn is not None and conn.messages:
        is_([l.split(b':', 1)[1].decode() for l in conn.messages[0][0][1:]],
            ['<%s>' % r for r in RCPTS], 'one RCPT refused: upstream envelope as sent')

    # -- the upstream refuses MAIL
    conn, rs = case(mx, up, 'MAIL refused', b'550 5.7.1 sender refused\r\n' +
                    b'503 5.5.1 Error: need MAIL command\r\n' * 3,
                    want=[550, 503, 503, 503, 503],
                    texts={0: '550 5.7.1 sender refused', 1: NEED_MAIL, 2: NEED_MAIL,
                           3: NEED_MAIL, 4: NEED_MAIL})
    ms = [s for s in m.sessions if any(c == b'M' and 'case%d@' % N[0] in ' '.join(v)
                                       for c, v in s.events)]

    def rcpts_then_abort():
        # the milter's thread records the abort when it reads it
        ev = ms[0].event_cmds() if len(ms) == 1 else ''
        return ev.count('R') == 3 and 'A' in ev.split('R')[-1]
    ok(wait_for(rcpts_then_abort, 10), 'MAIL refused: the milter saw 3 RCPTs, then an abort (%s)'
       % (ms[0].event_cmds() if ms else None))
    case(mx, up, 'MAIL 4xx', b'451 4.3.0 try later\r\n' + b'503 5.5.1 bad sequence\r\n' * 3,
         want=[451, 503, 503, 503, 503], texts={0: '451 4.3.0 try later', 1: NEED_MAIL})
    case(mx, up, 'MAIL refused, RCPTs 250', b'550 5.7.1 no\r\n' + b'250 2.1.5 ok\r\n' * 3,
         want=[550, 451, 451, 451, 503], texts={1: MALFORMED, 4: NEED_MAIL}, killed=True)

    # -- wrong codes
    case(mx, up, '354 to MAIL', b'354 what\r\n' + b'250 2.1.5 ok\r\n' * 3,
         want=[451, 451, 451, 451, 503], texts={0: MALFORMED, 3: MALFORMED, 4: NEED_MAIL},
         killed=True)
    case(mx, up, '354 to a RCPT', b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n250 2.1.5 ok\r\n',
         want=[250, 250, 451, 451, 503], texts={2: MALFORMED}, killed=True)
    case(mx, up, 'a 221 to a RCPT', b'250 2.1.0 ok\r\n221 bye\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n',
         want=[250, 451, 451, 451, 503], killed=True)

    # -- more or fewer than owed, EOF, garbage, silence
    conn, rs = case(mx, up, 'one reply too many', ok4 + b'250 2.0.0 extra\r\n', killed=True)
    got = [r.code if r is not None else None for r in rs]
    ok(got[:3] == [250, 250, 250] and got[3] in (250, 451) and got[4] in (451, 503),
       'one reply too many: 250s only for what the upstream said, then a 4xx (%r)' % got)

    def eof(conn, lines):
        conn.send(b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n')
        conn.sock.shutdown(2)
    case(mx, up, 'EOF after two replies', eof, want=[250, 250, 451, 451, 503],
         texts={2: LOST, 3: LOST})

    def garbage(conn, lines):
        conn.send(b'250 2.1.0 ok\r\nhello world\r\n')
        conn.line(20)
    case(mx, up, 'garbage', garbage, want=[250, 451, 451, 451, 503], texts={1: MALFORMED},
         killed=True)

    def silent(conn, lines):
        conn.send(b'250 2.1.0 ok\r\n')
        conn.line(20)           # until frontmx hangs up
    case(mx, up, 'silent after MAIL', silent, want=[250, 451, 451, 451, 503],
         texts={1: TIMEOUT, 3: TIMEOUT}, killed=True)

    # -- the upstream speaks while the group is still being queued: the
    #    milter holds slow's RCPT (MAIL and bob are queued, nothing was
    #    written) until the upstream's stray reply killed the connection
    N[0] += 1
    sender = 'case%d@example.org' % N[0]
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('faults.example')
    c.send(('MAIL FROM:<%s>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<slow@example.com>\r\n'
            'RCPT TO:<dave@example.com>\r\nDATA\r\n' % sender).encode())
    ok(SLOW.holding.wait(20), 'early: the milter holds the third RCPT')
    conns = [x for x in up.conns if not x.done.is_set() and len(x.cmds) == 1]
    is_(len(conns), 1, 'early: one upstream connection waits for its group')
    if conns:
        conns[0].send(b'250 2.0.0 early\r\n')
    SLOW.sent.set()
    rs = [c.reply() for _ in range(5)]
    is_([r.code if r else None for r in rs], [451, 451, 451, 451, 503],
        'early: every queued command gets a 4xx, DATA 503')
    is_(first_line(rs[0]), MALFORMED, 'early: the 4xx says the upstream reply was malformed')
    ok(SLOW.seen, 'early: frontmx saw the reply before the group was written')
    c.cmd('QUIT')
    c.close()
    ok(not any(b'MAIL FROM:<%s>' % sender.encode() in b''.join(x.reads) for x in up.conns),
       'early: the group was never written to the dead connection')

    # -- RCPTs refused here, in the middle of the group
    conn, rs = case(mx, up, 'relay denied in the middle', b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n',
                    rcpts=['bob@example.com', 'x@elsewhere.example', 'dave@example.com'], n=2,
                    want=[250, 250, 554, 250, 354], relayed=True,
                    texts={2: '554 5.7.1 <x@elsewhere.example>: Relay access denied'})
    if conn is not None:
        is_(len(conn.group), 1, 'relay denied: MAIL and bob came in one read')
        is_([l.decode() for l in conn.messages[0][0][1:]] if conn.messages else None,
            ['RCPT TO:<bob@example.com>', 'RCPT TO:<dave@example.com>'],
            'relay denied: the refused one never reached the upstream')
    case(mx, up, 'milter refusal in the middle', b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n',
         rcpts=['bob@example.com', 'reject@example.com', 'dave@example.com'], n=2,
         want=[250, 250, 550, 250, 354], relayed=True)
    case(mx, up, 'syntax error in the middle', b'250 2.1.0 ok\r\n250 2.1.5 ok\r\n',
         rcpts=['bob@example.com', 'bad', 'dave@example.com'], n=2,
         want=[250, 250, 501, 250, 354], relayed=True)

    is_(up.errors, [], 'the scripted upstream had no trouble')
    mx.check_sanitizers()
    done()


run(main, timeout=240)
