#!/usr/bin/python3
# A hostile milter (issue 11, section 3), with the raw scripted milter of
# t/lib/fmx_milter.py, which sends what libmilter never would: a higher
# protocol version, actions nobody offered, a short or foreign answer to
# the negotiation, truncated packets (then EOF, then silence), a length
# field of 4 GB, an empty packet, an unknown reply code, edits before end
# of body, custom replies with CR/LF, bare LF, a 2xx or 3xx code, no NUL or
# a multi-line reply whose code changes, header and envelope edits
# carrying CR/LF, 10,000 add-header replies in one write, two replies to
# one command ("c" then "r"), a reply after the timeout, a half-close, a
# close right after quarantine or a body replacement.  Each must end in
# the milter's on_error on five daemons (tempfail, reject on inet, accept,
# discard, quarantine): 4xx / 5xx with nothing relayed, the message
# exactly as sent (never half-edited), 250 and nothing relayed, or 250 and
# the original in the quarantine; clean CRLF upstream, the daemon up under ASan and
# relaying a clean message next.  Replies trickled one byte at a time are
# legal and work.  Then the circuit breaker: after its failures in a row,
# on_error at once and no connection to the milter; one session held by
# the milter never holds up another on the same worker; a client that
# resets while the milter holds its message, the milter answering later
# to a session that is gone; SIGTERM while the milter holds a message.
import os
import socket
import struct
import sys
import threading
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_milterfaults import *  # noqa: E402,F403
from fmx_milter import (ScriptedMilter, STAGE_OF, CONTINUE, REJECT, HANG, CLOSE,  # noqa: E402
                        pkt, reply, quarantine, add_header, insert_header, change_header,
                        replace_body, add_rcpt, add_rcpt_par, change_from, ALL_ACTIONS)

HALFCLOSE = 'halfclose'


class Special:
    """A script entry the base ScriptedMilter does not know."""


class Trickle(Special):
    """Send the packets one octet at a time, delay seconds apart."""

    def __init__(self, packets, delay=0.02):
        self.data, self.delay = b''.join(packets), delay

    def run(self, c):
        for i in range(len(self.data)):
            c.sendall(self.data[i:i + 1])
            time.sleep(self.delay)
        return True


class Late(Special):
    """Answer after delay seconds (after the MTA's timeout fired)."""

    def __init__(self, delay, packets):
        self.delay, self.data = delay, b''.join(packets)

    def run(self, c):
        time.sleep(self.delay)
        try:
            c.sendall(self.data)
        except OSError:
            pass
        return True


class Then(Special):
    """Send these bytes, then CLOSE, HANG or HALFCLOSE."""

    def __init__(self, data, then):
        self.data = data if isinstance(data, bytes) else b''.join(data)
        self.then = then

    def run(self, c):
        c.sendall(self.data)
        if self.then == CLOSE:
            return False
        if self.then == HALFCLOSE:
            c.shutdown(socket.SHUT_WR)
        return True


class HostileMilter(ScriptedMilter):
    def _negotiate(self, c, s, data):
        if self.negotiate == CLOSE:
            c.shutdown(socket.SHUT_RDWR)      # _serve's next read ends it
            return
        super()._negotiate(c, s, data)

    def stop(self):
        # Wake the accept() thread: close() alone leaves a thread blocked in
        # accept() holding the socket, still listening, and the next
        # case's milter cannot bind the same inet port.
        if self.lsock is not None:
            try:
                self.lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().stop()

    def _answer(self, c, s, cmd, data):
        spec = self.script.get(STAGE_OF.get(cmd))
        if spec == HALFCLOSE:
            spec = Then(b'', HALFCLOSE)
        if isinstance(spec, Special):
            return spec.run(c)
        return super()._answer(c, s, cmd, data)


def hm(**kw):
    """A case's milter: a HostileMilter on the daemon's address."""
    def start(bench, d):
        if d['path']:
            return HostileMilter(unix=d['path'], **kw)
        m = HostileMilter(refuse=True, **kw)
        m.port = int(d['addr'].rsplit(':', 1)[1])
        m.address = d['addr']
        m.listen()
        return m
    return start


PASS = hm()


def passthrough(bench, d):
    return PASS(bench, d)


def case(bench, name, start, **kw):
    kw.setdefault('passthrough', passthrough)
    bench.case(name, start, **kw)


def negotiation(bench):
    case(bench, 'higher protocol version (7)', hm(version=7))
    case(bench, 'actions nobody offered (0x3ff)', hm(actions=ALL_ACTIONS | 0x200))
    case(bench, 'OPTNEG answer 4 octets short', hm(negotiate=pkt('O', struct.pack('!II', 6, 0x1ff))))
    case(bench, 'OPTNEG answered with continue', hm(negotiate=CONTINUE))
    case(bench, 'OPTNEG never answered', hm(negotiate=b''), on=('tempfail', 'accept'))
    case(bench, 'connection closed instead of the OPTNEG answer', hm(negotiate=CLOSE))
    case(bench, 'OPTNEG answer with a 4 GB length field',
         hm(negotiate=struct.pack('!I', 0xfffffff0) + b'O' + b'\0' * 64))


def framing(bench):
    case(bench, 'truncated packet, then EOF',
         hm(script={'rcpt': Then(struct.pack('!I', 16) + b'y550', CLOSE)}))
    case(bench, 'truncated packet, then silence',
         hm(script={'rcpt': Then(struct.pack('!I', 16) + b'y550', HANG)}), on=('tempfail', 'accept'))
    case(bench, 'length field 0xfffffff0 at eom',
         hm(script={'eom': struct.pack('!I', 0xfffffff0) + b'h' + b'X' * 200}))
    case(bench, 'empty packet (length 0)', hm(script={'rcpt': b'\0\0\0\0'}))
    case(bench, 'unknown reply code Z', hm(script={'mail': pkt('Z')}))
    case(bench, 'continue that carries data', hm(script={'rcpt': pkt('c', b'junk')}))


def replies(bench):
    case(bench, 'edit before end of body: add header at header',
         hm(script={'header': [add_header('X-Early', '1'), CONTINUE]}))
    case(bench, 'edit before end of body: add recipient at rcpt',
         hm(script={'rcpt': [add_rcpt('<evil@example.com>'), CONTINUE]}))
    case(bench, 'edit before end of body: replace body at body',
         hm(script={'body': [replace_body(b'early\r\n'), CONTINUE]}))
    case(bench, 'custom reply with CR/LF and a second reply line',
         hm(script={'rcpt': reply('550 5.7.1 no\r\n250 2.0.0 ok')}))
    case(bench, 'custom reply with a bare LF', hm(script={'rcpt': reply('550 5.7.1 no\nInjected')}))
    case(bench, 'custom reply 250 (2xx)', hm(script={'eom': reply('250 2.0.0 fine')}))
    case(bench, 'custom reply 354 (3xx)', hm(script={'rcpt': reply('354 go ahead')}))
    case(bench, 'custom reply without its NUL', hm(script={'rcpt': pkt('y', b'550 5.7.1 no nul')}))
    case(bench, 'custom reply, multi-line, code changes',
         hm(script={'eom': reply('550-5.7.1 first\r\n451 4.7.1 second')}))
    case(bench, 'custom reply with class mismatch (450 5.7.1)', hm(script={'eom': reply('450 5.7.1 mixed')}))
    # The two replies go in one write (bytes, not a list: fmx_milter sends a
    # list's packets one write each).  A stray reply that arrives only after
    # frontmx sent the next event cannot be told from that event's answer,
    # by any MTA; one that is there before must be caught.
    case(bench, 'c then r for one command (two replies)', hm(script={'mail': CONTINUE + REJECT}),
         on=('tempfail', 'accept'))

    def second_rcpt_not_5xx(bench, d, res, fail, new):
        r = res.get('rcpt', [])
        # the 550 given stands; the stray r is a protocol error: on_error
        want = (400, 500) if d['action'] == 'tempfail' else (250, 251)
        ok(len(r) == 2 and r[1].code is not None and want[0] <= r[1].code < want[1],
           'y then r: the second RCPT gets on_error, not the stale r (%s)' % (r[1].code if len(r) == 2 else r))
        if d['action'] == 'accept' and len(new) == 1:
            is_(new[0].rcpts, [RCPT2], 'y then r: relayed to the second recipient only')
    case(bench, 'y then r for one RCPT (two replies), two recipients',
         hm(script={'rcpt': reply('550 5.7.1 no') + REJECT}), rcpts=(RCPT, RCPT2),
         on=('tempfail', 'accept'), expect=lambda d: 'safe' if d['action'] == 'tempfail' else 'edited',
         check=second_rcpt_not_5xx)

    def rcpt_never_5xx(bench, d, res, fail, new):
        bad = [r.code for r in res.get('rcpt', []) if r.code is not None and r.code >= 500]
        is_(bad, [], 'late reject: no RCPT got the late 550')
    case(bench, 'reply after the timeout (late reject, two recipients)',
         hm(script={'rcpt': Late(3, [REJECT])}), rcpts=(RCPT, RCPT2), on=('tempfail', 'accept'),
         check=rcpt_never_5xx)
    case(bench, 'half-close instead of answering DATA', hm(script={'data': HALFCLOSE}))
    case(bench, 'continue, then half-close, at connect',
         hm(script={'connect': Then(CONTINUE, HALFCLOSE)}))


def edits(bench):
    good = add_header('X-Good', '1')
    bad = {
        'header value with CR/LF': add_header('X-Bad', 'a\r\nInjected: yes'),
        'header value with a bare CR': add_header('X-Bad', 'a\rb'),
        'header name with CR/LF': add_header('X-Bad\r\nInjected', 'yes'),
        'header name with a colon and space': add_header('X Bad:', 'v'),
        'empty header name': add_header('', 'v'),
        'changed header with CR/LF': change_header(1, 'Subject', 'x\r\nInjected: yes'),
        'inserted header with LF not followed by WSP': insert_header(0, 'X-Bad', 'a\nInjected: yes'),
        'added recipient with CR/LF': add_rcpt('<x@example.com>\r\nRCPT TO:<evil@example.com>'),
        'added recipient with CR/LF in its args': add_rcpt_par('<x@example.com>', 'NOTIFY=NEVER\r\nRSET'),
        'changed sender with CR/LF': change_from('<a@example.org>\r\nRSET'),
        'changed sender with CR/LF in its args': change_from('<a@example.org>', 'SIZE=1\r\nRSET'),
    }
    for name, edit in bad.items():
        case(bench, name + ' (after a good edit)', hm(script={'eom': [good, edit, CONTINUE]}))
    # one past the chain's limits (64 header edits, 32 added or deleted
    # recipients per message): refused as a whole, never partly applied
    case(bench, '65 added headers (one past the limit)',
         hm(script={'eom': [add_header('X-N', str(i)) for i in range(65)] + [CONTINUE]}))
    case(bench, '33 added recipients (one past the limit), after a good edit',
         hm(script={'eom': [good] + [add_rcpt('<r%d@example.com>' % i) for i in range(33)] + [CONTINUE]}))
    case(bench, '10,000 add-header replies in one write',
         hm(script={'eom': [add_header('X-N', str(i)) for i in range(10000)] + [CONTINUE]}))
    case(bench, 'quarantine and a header, then close',
         hm(script={'eom': Then([quarantine('held'), good], CLOSE)}))
    case(bench, 'body replaced, then close', hm(script={'eom': Then([replace_body(b'new\r\n')], CLOSE)}))
    case(bench, 'body replaced with bare LF and bare CR',
         hm(script={'eom': [replace_body(b'one\ntwo\rthree\r\n'), CONTINUE]}), on=('accept',), expect='safe')


def legal(bench):
    def trickled(bench, d, res, fail, new):
        if len(new) == 1:
            like(new[0].data.decode('latin-1'), r'(?m)^X-Trickle: ?yes\r$', 'trickled: header added')
    case(bench, 'reply trickled one octet at a time',
         hm(script={'eom': Trickle([add_header('X-Trickle', 'yes'), CONTINUE])}),
         on=('accept',), expect='edited', check=trickled)


def breaker():
    """failures = 2: two sessions fail on a dead milter, then on_error at
    once, without connecting, while the breaker is open."""
    up = Upstream()
    d = tmpdir('fmx-mf-br-')
    sock = os.path.join(d, 'm.sock')
    f = {'name': 'av', 'milter': 'unix:' + sock, 'on_error': 'tempfail',
         'timeouts': {'connect': 2, 'command': 2, 'content': 2},
         'breaker': {'failures': 2, 'open': 600}}
    mx = Frontmx(up, name='frontmx (breaker)', conf={'filters': [f]})
    for i in (1, 2):
        res, fail = transaction(mx, message('breaker %d' % i))
        ok(fail is not None and 400 <= (fail[1].code or 0) < 500, 'breaker: failure %d gets 4xx' % i)
    m = HostileMilter(unix=sock)
    res, fail = transaction(mx, message('breaker open'))
    ok(fail is not None and 400 <= (fail[1].code or 0) < 500, 'breaker open: 4xx at once')
    is_(len(m.sessions), 0, 'breaker open: no connection to the milter')
    check_stream(up, 0, 'breaker upstream')
    m.stop()
    mx.finish()


def one_slow_session_blocks_no_other():
    """A milter that stops answering one session costs that session its
    timeout, never the others on the same worker (workers = 1)."""
    up = Upstream()
    d = tmpdir('fmx-mf-iso-')
    sock = os.path.join(d, 'm.sock')

    def mail(session, data):
        return HANG if b'slow@' in data else [CONTINUE]
    m = ScriptedMilter(unix=sock, script={'mail': mail})
    mx = Frontmx(up, name='frontmx (one worker, one slow milter session)',
                 conf={'workers': 1, 'filters': [{'name': 'av', 'milter': 'unix:' + sock,
                       'on_error': 'tempfail',
                       'timeouts': {'connect': 10, 'command': 10, 'content': 10}}]})
    slow = SmtpClient(mx.port, timeout=30)
    slow.greeting()
    slow.ehlo()
    slow.send(b'MAIL FROM:<slow@example.org>\r\n')
    ok(wait_for(lambda: any(b'slow@' in b''.join(x for c, x in s.packets if c == b'M')
                            for s in list(m.sessions)), 10), 'isolation: the milter holds the slow MAIL')
    res, fail = transaction(mx, message('fast while slow'))
    ok(fail is None, 'isolation: another session passes while the milter holds one')
    r = slow.reply(timeout=30)
    ok(r.code is not None, 'isolation: the slow session then gets its answer (%s)' % r.code)
    slow.close()
    check_stream(up, 1, 'isolation upstream')
    m.stop()
    mx.finish()


def client_gone_while_milter_holds():
    """The client resets while the milter holds the message (at rcpt, at
    end of message); the milter answers later to a session that is gone."""
    up = Upstream()
    d = tmpdir('fmx-mf-gone-')
    sock = os.path.join(d, 'm.sock')
    release = threading.Event()

    def late(session, data):
        release.wait(10)
        return [add_header('X-Late', '1'), CONTINUE]
    m = ScriptedMilter(unix=sock, script={'eom': late})
    mx = Frontmx(up, name='frontmx (client gone)',
                 conf={'filters': [{'name': 'av', 'milter': 'unix:' + sock, 'on_error': 'tempfail',
                                    'timeouts': {'connect': 10, 'command': 10, 'content': 10}}]})
    c = SmtpClient(mx.port, timeout=30)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'gone: MAIL')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'gone: RCPT')
    reply_is(c.cmd('DATA'), 354, None, 'gone: DATA')
    c.send(dot_stuff(message('gone')) + b'.\r\n')
    ok(wait_for(lambda: any(cmd == b'E' for s in list(m.sessions) for cmd, _ in s.packets), 10),
       'gone: the milter holds end of message')
    c.vanish()
    time.sleep(0.5)              # the daemon sees the reset before the answer
    release.set()
    held = [s for s in m.sessions if any(cmd == b'E' for cmd, _ in s.packets)][0]
    ok(m.wait_closed(m.sessions.index(held), 15), 'gone: frontmx closes the milter connection')
    ok(mx.alive(), 'gone: daemon still running')
    mx.check_sanitizers('gone: no sanitizer report after the late answer')
    res, fail = transaction(mx, message('after gone'))
    ok(fail is None, 'gone: next session passes')
    m.stop()
    mx.finish()


def sigterm_while_milter_holds():
    """SIGTERM while the milter holds a message: the daemon drains, the
    held message is answered (relayed, or a 4xx), never lost, exit 0."""
    up = Upstream()
    d = tmpdir('fmx-mf-term-')
    sock = os.path.join(d, 'm.sock')
    m = TestMilter('unix:' + sock, '-H', 'eom:2')
    mx = Frontmx(up, name='frontmx (SIGTERM)',
                 conf={'filters': [{'name': 'av', 'milter': 'unix:' + sock, 'on_error': 'tempfail',
                                    'timeouts': {'connect': 10, 'command': 10, 'content': 10}}]})
    c = SmtpClient(mx.port, timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    c.cmd('RCPT TO:<%s>' % RCPT)
    c.cmd('DATA')
    body = message('sigterm')
    c.send(dot_stuff(body) + b'.\r\n')
    ok(m.saw('hang eom', 10), 'SIGTERM: the milter holds end of message')
    os.kill(mx.pid, 15)
    r = c.reply(timeout=30)
    n = len(up.messages)
    ok((r.code == 250 and n == 1) or (r.code is not None and 400 <= r.code < 500 and n == 0),
       'SIGTERM: the held message is relayed (250) or deferred (4xx), never lost (%s, %d upstream)' % (r.code, n))
    if r.code == 250 and n == 1:
        check_relayed(up.messages[0].data, body, 'SIGTERM')
    c.close()
    mx.finish()
    m.stop()


def main():
    bench = FaultBench(['tempfail', 'reject', 'accept', 'discard', 'quarantine'], inet=('reject',))
    negotiation(bench)
    framing(bench)
    replies(bench)
    edits(bench)
    legal(bench)
    bench.finish()
    breaker()
    one_slow_session_blocks_no_other()
    client_gone_while_milter_holds()
    sigterm_while_milter_holds()


run(main, timeout=600)
