#!/usr/bin/python3
# Pipelined groups across the transaction boundary, with filter verdicts
# pending in between (RFC 2920; t/smtp/02-pipelining.t covers groups
# without a waiting filter).  build/plugins/slow_async.so (mode=timer,
# eom=1) makes the first RCPT of each transaction wait for a timer
# (reject when the sender contains "reject") and the end of each message
# wait for another (reject when the sender contains "eomfail").
#
# One write carries the end of message 1, RSET, a transaction that is
# refused, RSET and the next transaction; another one a refused message
# followed by the next transaction without RSET; BDAT messages with their
# chunks; and the final dot's upstream reply held (Gate) while the next
# group waits.  Each time the replies come in order and the capture
# upstream gets each relayed transaction with its own recipients only.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

WAIT = 20       # upper bound for events that come at once: only guards hangs


def body(tag):
    return ('From: alice@example.org\r\nSubject: %s\r\n\r\nbody of %s\r\n' % (tag, tag)).encode()


def replies(c, n):
    return [c.reply() for _ in range(n)]


def codes(rs):
    return [r.code for r in rs]


def start(up, name, **opts):
    o = {'mode': 'timer', 'ms': 50, 'eom': 1}
    o.update(opts)
    mx = Frontmx(up, name='frontmx (%s)' % name, conf={
        'filters': [{'name': 'slow', 'module': plugin('slow_async'), 'timeout': 30,
                     'options': o}]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    return mx, c


def envelopes(up, n, name):
    ok(up.wait_messages(n, WAIT), '%s: the upstream got %d message(s)' % (name, n))
    return [(m.mail_from, m.rcpts) for m in up.messages]


def finish(mx, up, name, want, absent, what):
    """The upstream got exactly the envelopes want, in order, and never
    the bytes absent (what); then frontmx stops cleanly."""
    is_(envelopes(up, len(want), name), want,
        '%s: each relayed message with its own recipients, nothing else' % name)
    ok(absent not in up.all_bytes(), '%s: %s never reached the upstream' % (name, what))
    check_stream(up, len(want), '%s: upstream' % name)
    mx.finish()


def rset_between():
    name = 'RSET between'
    up = Upstream()
    mx, c = start(up, name)
    c.send('MAIL FROM:<a@ok.example>\r\nRCPT TO:<r1@example.com>\r\n'
           'RCPT TO:<r2@example.com>\r\nDATA\r\n')
    is_(codes(replies(c, 4)), [250, 250, 250, 354], '%s: MAIL RCPT RCPT DATA' % name)
    c.send(dot_stuff(body('one')) + b'.\r\nRSET\r\n'
           b'MAIL FROM:<b@reject.example>\r\nRCPT TO:<r3@example.com>\r\nRSET\r\n'
           b'MAIL FROM:<c@ok.example>\r\nRCPT TO:<r4@example.com>\r\nDATA\r\n')
    rs = replies(c, 8)
    is_(codes(rs), [250, 250, 250, 550, 250, 250, 250, 354],
        '%s: dot, RSET, MAIL, RCPT (refused), RSET, MAIL, RCPT, DATA in order' % name)
    c.send(dot_stuff(body('two')) + b'.\r\nQUIT\r\n')
    is_(codes(replies(c, 2)), [250, 221], '%s: dot, QUIT' % name)
    ok(c.expect_close(WAIT), '%s: closed' % name)
    finish(mx, up, name, [('a@ok.example', ['r1@example.com', 'r2@example.com']),
                          ('c@ok.example', ['r4@example.com'])],
           b'RCPT TO:<r3@example.com>', 'the refused recipient')


def refused_then_next():
    """The end-of-message verdict refuses message 1; message 2's whole
    group is already behind its final dot, without RSET (the transaction
    ended with the refusal)."""
    name = 'refused dot, next group'
    up = Upstream()
    mx, c = start(up, name)
    c.send('MAIL FROM:<x@eomfail.example>\r\nRCPT TO:<r1@example.com>\r\nDATA\r\n')
    is_(codes(replies(c, 3)), [250, 250, 354], '%s: group 1' % name)
    c.send(dot_stuff(body('refused')) + b'.\r\nMAIL FROM:<y@ok.example>\r\n'
           b'RCPT TO:<r2@example.com>\r\nRCPT TO:<r3@example.com>\r\nDATA\r\n')
    rs = replies(c, 5)
    is_(codes(rs), [550, 250, 250, 250, 354],
        '%s: dot refused (550), then MAIL RCPT RCPT DATA of the next message' % name)
    c.send(dot_stuff(body('accepted')) + b'.\r\n')
    reply_is(c.reply(), 250, None, '%s: message 2 accepted' % name)
    c.quit()
    finish(mx, up, name, [('y@ok.example', ['r2@example.com', 'r3@example.com'])],
           b'Subject: refused', 'message 1\'s data')


def bdat_groups():
    """Two BDAT transactions, chunks and all, in one write (RFC 3030 4.2
    lets BDAT be pipelined)."""
    name = 'BDAT'
    up = Upstream()
    mx, c = start(up, name)
    b1, b2 = body('bdat one'), body('bdat two')
    c.send(b'MAIL FROM:<a@ok.example>\r\nRCPT TO:<r1@example.com>\r\n'
           b'BDAT %d LAST\r\n%s' % (len(b1), b1) +
           b'MAIL FROM:<b@reject.example>\r\nRCPT TO:<r2@example.com>\r\nRSET\r\n'
           b'MAIL FROM:<c@ok.example>\r\nRCPT TO:<r3@example.com>\r\nRCPT TO:<r4@example.com>\r\n'
           b'BDAT %d LAST\r\n%s' % (len(b2), b2))
    rs = replies(c, 10)
    is_(codes(rs), [250, 250, 250, 250, 550, 250, 250, 250, 250, 250],
        '%s: MAIL RCPT BDAT, MAIL RCPT(refused) RSET, MAIL RCPT RCPT BDAT in order' % name)
    c.quit()
    is_(envelopes(up, 2, name),
        [('a@ok.example', ['r1@example.com']), ('c@ok.example', ['r3@example.com', 'r4@example.com'])],
        '%s: each message with its own recipients' % name)
    if len(up.messages) == 2:
        is_(split_received(up.messages[1].data)[1], b2, '%s: message 2\'s own data' % name)
    check_stream(up, 2, '%s: upstream' % name)
    mx.finish()


def bdat_open():
    """Between a transaction's BDAT chunks only BDAT, RSET, NOOP and QUIT
    are taken (RFC 3030 2): RCPT, DATA, MAIL and HELO get 503 and change
    nothing; the message is relayed whole at BDAT LAST with its own
    recipients.  RSET ends an open one: its chunk is never relayed."""
    name = 'BDAT open'
    up = Upstream()
    mx, c = start(up, name)
    b1, b2 = body('bdat open'), b'second chunk\r\n'
    c.send(b'MAIL FROM:<a@ok.example>\r\nRCPT TO:<r1@example.com>\r\n'
           b'BDAT %d\r\n%s' % (len(b1), b1) +
           b'RCPT TO:<r2@example.com>\r\nDATA\r\nMAIL FROM:<x@ok.example>\r\n'
           b'HELO client.example\r\nNOOP\r\n'
           b'BDAT %d LAST\r\n%s' % (len(b2), b2))
    rs = replies(c, 8)
    is_([(r.code, r.enh) for r in rs],
        [(250, '2.1.0'), (250, '2.1.5'), (250, '2.0.0'), (503, '5.5.1'), (503, '5.5.1'),
         (503, '5.5.1'), (503, '5.5.1'), (250, '2.0.0')],
        '%s: MAIL RCPT BDAT, then RCPT DATA MAIL HELO 503, NOOP, BDAT LAST 250' % name)
    c.send(b'MAIL FROM:<b@ok.example>\r\nRCPT TO:<r3@example.com>\r\n'
           b'BDAT 16\r\nSubject: reset\r\nRSET\r\n'
           b'MAIL FROM:<c@ok.example>\r\nRCPT TO:<r4@example.com>\r\n'
           b'BDAT %d LAST\r\n%s' % (len(b1), b1))
    is_(codes(replies(c, 7)), [250, 250, 250, 250, 250, 250, 250],
        '%s: MAIL RCPT BDAT, RSET, MAIL RCPT BDAT LAST' % name)
    c.quit()
    finish(mx, up, name, [('a@ok.example', ['r1@example.com']),
                          ('c@ok.example', ['r4@example.com'])],
           b'Subject: reset', 'the reset transaction\'s chunk')
    if len(up.messages) >= 1:
        is_(split_received(up.messages[0].data)[1], b1 + b2,
            '%s: message 1 whole, both chunks' % name)


def upstream_dot_held():
    """The upstream holds its reply to message 1's final dot while the
    client's next group is already in frontmx's input."""
    name = 'upstream dot held'
    gate = Gate()
    up = Upstream(on_dot=[gate, None])
    mx, c = start(up, name)
    c.send('MAIL FROM:<a@ok.example>\r\nRCPT TO:<r1@example.com>\r\nDATA\r\n')
    is_(codes(replies(c, 3)), [250, 250, 354], '%s: group 1' % name)
    c.send(dot_stuff(body('held')) + b'.\r\nMAIL FROM:<b@ok.example>\r\n'
           b'RCPT TO:<r2@example.com>\r\nDATA\r\n')
    ok(gate.seen.wait(WAIT), '%s: the upstream has message 1\'s final dot' % name)
    gate.open()
    rs = replies(c, 4)
    is_(codes(rs), [250, 250, 250, 354], '%s: dot (once the upstream answered), MAIL RCPT DATA' % name)
    c.send(dot_stuff(body('after')) + b'.\r\nQUIT\r\n')
    is_(codes(replies(c, 2)), [250, 221], '%s: dot, QUIT' % name)
    is_(envelopes(up, 2, name), [('a@ok.example', ['r1@example.com']), ('b@ok.example', ['r2@example.com'])],
        '%s: each message once, with its own recipient' % name)
    check_stream(up, 2, '%s: upstream' % name)
    mx.finish()


def double_resume():
    """The module's callback resumes twice (double=1); the first answer
    refuses RCPT 1, and the session runs on through the pipelined RSET,
    MAIL 2 and RCPT 2 once the callback returned, from the loop.  The
    second resume() is the callback's, about RCPT 1: it must be refused,
    never taken as the answer to RCPT 2, which waits for its own (reject)."""
    name = 'second resume() across a pipelined RSET'
    up = Upstream()
    mx, c = start(up, name, double=1)
    c.send('MAIL FROM:<a@reject.example>\r\nRCPT TO:<r1@example.com>\r\nRSET\r\n'
           'MAIL FROM:<b@reject.example>\r\nRCPT TO:<r2@example.com>\r\nRSET\r\n')
    rs = replies(c, 6)
    is_(codes(rs)[:4], [250, 550, 250, 250], '%s: MAIL, RCPT 1 refused, RSET, MAIL 2' % name)
    t1 = re.findall(r'slow_async start tag=(\d+) from=a@reject', mx.log())
    t1 = t1[0] if t1 else 'none'
    reply_is(rs[4], 550, None, '%s: RCPT 2 gets its own answer (reject), not the stale '
                               'second resume() (continue)' % name)
    like(mx.log(), r'slow_async resumed tag=%s resume=0 again=-1' % t1,
         '%s: the second resume() refused (-1)' % name)
    ok(b'RCPT TO:<r2@example.com>' not in up.all_bytes(),
       '%s: the refused RCPT 2 never reached the upstream' % name)
    # slow_async reads its message state after resume() (ASan checks it):
    # the session runs on (the RSET behind RCPT 1, which frees it) only
    # once the callback returned, from the loop
    like(mx.log(), r'slow_async resumed tag=%s resume=0 again=-1 from=a@reject\.example same=1\n'
         r'[\s\S]*slow_async freed tag=%s\n' % (t1, t1),
         '%s: message 1\'s data outlives the callback that resumed it' % name)
    unlike(mx.log(), r'slow_async freed tag=%s\n[\s\S]*slow_async resumed tag=%s ' % (t1, t1),
           '%s: never freed before the callback that resumed it returned' % name)
    reply_is(rs[5], 250, None, '%s: RSET' % name)
    reply_is(c.cmd('NOOP'), 250, None, '%s: in step' % name)
    c.quit()
    check_stream(up, 0, '%s: upstream' % name)
    mx.finish()


def main():
    require_modules(plugin('slow_async'))
    for part in (rset_between, refused_then_next, bdat_groups, bdat_open, upstream_dot_held,
                 double_resume):
        part()


run(main, timeout=300)
