#!/usr/bin/python3
# A failing milter costs its on_error, never a message, never the daemon
# (issue 11, section 3, "Fault and hostile-milter cases"), with a real
# libmilter milter (build/milter/testmilter, t/milter/testmilter.c):
# down (UNIX path missing, stale socket, inet port refused), hanging at
# each stage, a reply after the timeout, closing at connect, mid-body and
# at end of message, header and envelope edits carrying CR/LF, 10,000
# added headers, a custom reply whose enhanced code has the wrong class.
# Each runs against three daemons, on_error tempfail, reject (milter on
# inet) and accept, and must end in that on_error: 4xx / 5xx with nothing
# relayed, or the message relayed exactly as sent (none of the failing
# milter's edits).  After each case the daemon relays a clean message and
# its log has no ASan/UBSan report.  Then what a milter decides (verdicts,
# valid edits, a bare-LF folded header) and a SIGHUP while a milter holds
# a message.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_milterfaults import *  # noqa: E402,F403

STAGES = ('connect', 'helo', 'mail', 'rcpt', 'data', 'header', 'eoh', 'body', 'eom')
SOME = ('connect', 'rcpt', 'body', 'eom')


def tm(*args):
    """A case's milter: testmilter with these flags on the daemon's address."""
    def start(bench, d):
        m = TestMilter(d['conn'], *args)
        ok(m.ready, 'testmilter %s is listening' % ' '.join(a.replace('\r', '\\r').replace('\n', '\\n')
                                                            for a in args))
        return m
    return start


def faults(bench):
    # -- down
    bench.case('milter down (nothing at the address)', lambda b, d: None)
    bench.case('stale UNIX socket, nobody listening',
               lambda b, d: stale_unix_socket(d['path']), on=('tempfail', 'accept'))

    # -- hangs: each stage costs the command/content timeout (2 s)
    for st in STAGES:
        bench.case('hangs at %s' % st, tm('-H', st), on=None if st in SOME else ('tempfail',))

    # -- a reply after the timeout fired: the milter wakes at 4 s, its
    # answer goes to a connection frontmx gave up at 2 s
    def woke(bench, d, res, fail, new):
        ok(bench.milter.saw('woke eom', 10), 'late reply: the milter answered after the timeout')
    bench.case('late reply at eom', tm('-H', 'eom:4'), check=woke)

    # -- the milter stops reading mid-body: frontmx's writes stall (a body
    # larger than the socket buffers), the content timeout still fires
    bench.case('hangs at body, writes stall', tm('-H', 'body'), body=big_message('writes stall', 900000),
               on=('tempfail',))

    # -- closes: right after connect, mid-body (a body of 4 chunks), at eom
    bench.case('closes at connect', tm('-X', 'connect'))
    bench.case('closes mid-body', tm('-X', 'body'), body=big_message('closes mid-body'))
    bench.case('closes at eom', tm('-X', 'eom'))

    # -- edits carrying CR/LF (libmilter sends them as given); the valid
    # edit before each must not reach the upstream either
    bench.case('header value with CR/LF', tm('-A', 'X-Good:1', '-A', 'X-Bad:a\r\nInjected: yes'))
    bench.case('header name with CR/LF', tm('-A', 'X-Good:1', '-A', 'X-Bad\r\nInjected:yes'))
    bench.case('changed header with a bare CR', tm('-A', 'X-Good:1', '-C', 'Subject:1:a\rb'))
    bench.case('inserted header with a bare LF line', tm('-I', '0:X-Bad:a\nInjected: yes'))
    bench.case('added recipient with CR/LF', tm('-A', 'X-Good:1', '-t', '<x@example.com>\r\nDATA'))
    bench.case('changed sender with CR/LF', tm('-A', 'X-Good:1', '-f', '<a@example.org>\r\nRSET'))
    bench.case('10,000 added headers', tm('-a', '10000'))

    # -- a custom reply libmilter lets through but the protocol forbids:
    # 550 with a 4.x.x enhanced code
    bench.case('custom reply 550 4.7.1 (class mismatch)',
               tm('-r', 'eom:reject', '-R', '550 4.7.1 class mismatch'))


def decisions(bench):
    """What a working milter decides is applied, whatever on_error says
    (run on the on_error = accept daemon, so a verdict is not on_error)."""
    acc = ('accept',)

    def rcpt_reply(bench, d, res, fail, new):
        ok(fail is not None and fail[0] == 'rcpt', 'reject at rcpt: refused at RCPT')
        if fail:
            like(' '.join(fail[1].lines), r'5\.7\.1 go away', "reject at rcpt: the milter's own reply")
    bench.case('milter rejects at rcpt with its reply', tm('-r', 'rcpt:reject', '-R', '550 5.7.1 go away'),
               on=acc, expect='reject', check=rcpt_reply)
    bench.case('milter tempfails at mail', tm('-r', 'mail:tempfail'), on=acc, expect='tempfail')
    bench.case('milter discards at eom', tm('-r', 'eom:discard'), on=acc, expect='discard')
    bench.case('milter accepts at connect (no more events)', tm('-r', 'connect:accept', '-A', 'X-No:1'),
               on=acc, expect='accept')

    bench.case('milter rejects at the first chunk of a big body', tm('-r', 'body:reject'),
               body=big_message('reject in body', 900000), on=acc, expect='reject')
    bench.case('milter skips the rest of the body', tm('-r', 'body:skip'),
               body=big_message('skip'), on=acc, expect='accept')
    bench.case('milter wants no reply to headers (NR_HDR)', tm('-N'), on=acc, expect='accept')

    def edited(bench, d, res, fail, new):
        if len(new) != 1:
            return
        m = new[0]
        is_(m.mail_from, 'new@example.org', 'edits: envelope sender changed')
        is_(sorted(m.rcpts), ['carol@example.com'], 'edits: bob deleted, carol added')
        like(m.mail_cmd, r'(?i)^MAIL FROM:<new@example.org>', 'edits: MAIL FROM as changed')
        _, rest = split_received(m.data)
        hdr, _, bodytext = rest.partition(b'\r\n\r\n')
        like(hdr.decode('latin-1'), r'(?m)^Subject: edited\r?$', 'edits: Subject changed')
        like(hdr.decode('latin-1'), r'(?m)^X-Added: yes\r?$', 'edits: header added')
        ok(hdr.startswith(b'X-Top: 1\r\n'), 'edits: header inserted at the top')
        is_(bodytext, b'body of valid edits: sender, recipients, headers\r\n', 'edits: body kept')
    bench.case('valid edits: sender, recipients, headers',
               tm('-f', '<new@example.org>', '-t', '<carol@example.com>', '-d', '<bob@example.com>',
                  '-C', 'Subject:1:edited', '-A', 'X-Added:yes', '-I', '0:X-Top:1'),
               on=acc, expect='edited', check=edited)

    def replaced(bench, d, res, fail, new):
        if len(new) == 1:
            _, rest = split_received(new[0].data)
            is_(rest.partition(b'\r\n\r\n')[2], b'replaced body\r\n', 'body replaced')
    bench.case('body replaced', tm('-b', 'replaced body\r\n'), on=acc, expect='edited', check=replaced)
    # Postfix refuses a body replacement mixed with other edits: so does frontmx
    bench.case('body replaced and a header added (mixed: refused)',
               tm('-A', 'X-Added:yes', '-b', 'replaced body\r\n'))

    # OpenDKIM folds DKIM-Signature with bare "\n\t": re-folded with CRLF
    def folded(bench, d, res, fail, new):
        if len(new) == 1:
            like(new[0].data.decode('latin-1'), r'(?m)^X-Fold: ?a\r\n\tb\r$',
                 'bare-LF fold: re-folded with CRLF')
    bench.case('header folded with bare LF (as OpenDKIM folds)', tm('-A', 'X-Fold:a\n\tb'),
               on=acc, expect='edited', check=folded)


def sighup_mid_session():
    """SIGHUP while the milter holds the message, the reload pointing the
    filter at another milter: the session finishes with the milter it
    started with, the message is relayed once with that milter's edit;
    the next session uses the new milter."""
    up = Upstream()
    d = tmpdir('fmx-mf-hup-')
    old, new = os.path.join(d, 'old.sock'), os.path.join(d, 'new.sock')

    def conf(sock):
        return {'filters': [{'name': 'av', 'milter': 'unix:' + sock, 'on_error': 'tempfail',
                             'timeouts': {'connect': 10, 'command': 20, 'content': 20}}]}
    mx = Frontmx(up, name='frontmx (SIGHUP)', conf=conf(old))
    m_old = TestMilter('unix:' + old, '-H', 'body:3', '-A', 'X-Milter:old')
    m_new = TestMilter('unix:' + new, '-A', 'X-Milter:new')
    ok(m_old.ready and m_new.ready, 'SIGHUP: both milters are up')
    c = SmtpClient(mx.port, timeout=30)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'SIGHUP: MAIL')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'SIGHUP: RCPT')
    reply_is(c.cmd('DATA'), 354, None, 'SIGHUP: DATA')
    body = message('sighup')
    c.send(dot_stuff(body) + b'.\r\n')
    ok(m_old.saw('hang body', 10), 'SIGHUP: the old milter holds the body')
    mx.write_conf(conf=conf(new))
    mx.hup()
    ok(wait_for(lambda: 'configuration reloaded' in mx.log(), 10), 'SIGHUP: the daemon reloaded')
    r = c.reply(timeout=30)
    reply_is(r, 250, None, 'SIGHUP: the held message is accepted after the reload')
    ok(up.wait_messages(1, 10), 'SIGHUP: the upstream got it')
    if len(up.messages) >= 1:
        is_(header_value(up.messages[0].data, 'X-Milter'), b'old',
            "SIGHUP: the held message has the old milter's edit only")
    c.quit()
    res, fail = transaction(mx, message('after sighup'))
    ok(fail is None, 'SIGHUP: a new session after the reload passes')
    ok(up.wait_messages(2, 10), 'SIGHUP: the upstream got the second message')
    if len(up.messages) >= 2:
        is_(header_value(up.messages[1].data, 'X-Milter'), b'new', 'SIGHUP: the new session used the new milter')
    check_stream(up, 2, 'SIGHUP upstream')
    m_old.stop()
    m_new.stop()
    mx.finish()


def main():
    ok(os.access(TESTMILTER, os.X_OK), 'testmilter is built (make milters)')
    bench = FaultBench(['tempfail', 'reject', 'accept'], inet=('reject',))
    faults(bench)
    decisions(bench)
    bench.finish()
    sighup_mid_session()


run(main, timeout=600)
