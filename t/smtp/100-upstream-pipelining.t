#!/usr/bin/python3
# Pipelining to the upstream (issue 13, "write replies together", the
# upstream side): when the upstream offers PIPELINING and the client
# pipelined its envelope, MAIL and the RCPTs that passed the filters go
# to the upstream in one write, and their replies are read in order.
#
# The scripted upstream (t/lib/fmx_pipe.py) holds its replies until it
# has read all the commands it expects, and records each recv(): the
# group must come in one.  Without PIPELINING offered, one command at a
# time, as before.  With XFORWARD, the XFORWARD line goes in the group
# ahead of MAIL.  A second transaction on a kept connection sends its
# MAIL alone (it may meet a connection the MTA just closed, which is
# retried on a fresh one) and its RCPTs together.  The disconnect line
# still counts every command once.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_pipe import PIPE_CAPS, RawUpstream  # noqa: E402

FROM = 'alice@example.org'
RCPTS = ['bob@example.com', 'carol@example.com', 'dave@example.com']
BODY = b'From: alice@example.org\r\nSubject: pipelined\r\n\r\nbody\r\n'
OK4 = b'250 2.1.0 ok\r\n' + b'250 2.1.5 ok\r\n' * 3


def envelope(rcpts=RCPTS):
    return ('MAIL FROM:<%s>\r\n' % FROM + ''.join('RCPT TO:<%s>\r\n' % r for r in rcpts)).encode()


def codes(c, n):
    return [r.code if r is not None else None for r in (c.reply() for _ in range(n))]


def pipelined_message(mx, tag):
    """A client that pipelines MAIL, 3 RCPTs and DATA in one write."""
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('pipe.example')
    c.send(envelope() + b'DATA\r\n')
    got = codes(c, 5)
    is_(got, [250, 250, 250, 250, 354], '%s: MAIL, 3 RCPT, DATA answered in order' % tag)
    c.send(BODY + b'.\r\n')
    reply_is(c.reply(), 250, None, '%s: message accepted' % tag)
    return c


def one_group(conn, n, tag, first=b'MAIL'):
    is_(len(conn.group), 1, '%s: the upstream read the %d commands in one recv() (chunks: %r)'
        % (tag, n, conn.group))
    cmds = conn.group[0].split(b'\r\n')[:-1] if conn.group else []
    is_(len(cmds), n, '%s: that one read held all %d commands and nothing more' % (tag, n))
    ok(cmds and cmds[0].startswith(first), '%s: the group starts with %s' % (tag, first.decode()))


def main():
    # 1. PIPELINING offered: MAIL + 3 RCPT in one write, before any reply.
    up = RawUpstream()
    up.script(4, OK4)
    mx = Frontmx(up.port, conf={'workers': 1})
    c = pipelined_message(mx, 'pipelining')
    conn = up.session(0)
    one_group(conn, 4, 'pipelining')
    is_(len(conn.messages), 1, 'pipelining: the upstream got the message')
    is_([l.decode() for l in conn.messages[0][0]] if conn.messages else None,
        ['MAIL FROM:<%s>' % FROM] + ['RCPT TO:<%s>' % r for r in RCPTS],
        'pipelining: with the envelope in order')

    # 2. A second transaction on the kept connection: MAIL alone, RCPTs together.
    c.send(envelope() + b'DATA\r\n')
    is_(codes(c, 5), [250, 250, 250, 250, 354], 'kept connection: answered in order')
    c.send(BODY + b'.\r\n')
    reply_is(c.reply(), 250, None, 'kept connection: second message accepted')
    c.cmd('QUIT')
    c.close()
    # (the harness's probe of the port was a session too: wait for this one's line)
    ok(wait_for(lambda: 'smtp disconnect from localhost[127.0.0.1] ehlo=1' in mx.log(), 10),
       'session ended')
    like(mx.log(), r'disconnect from \S+ ehlo=1 mail=2 rcpt=6 data=2 quit=1 commands=12\n',
         'the disconnect line counts each pipelined command once')
    is_(len(conn.messages), 2, 'kept connection: both messages over the one connection')
    tail = conn.reads[-4:]
    mails = [r for r in conn.reads if r.startswith(b'MAIL')]
    is_(len(mails), 2, 'kept connection: two reads start with MAIL')
    if len(mails) == 2:
        is_(mails[1], ('MAIL FROM:<%s>\r\n' % FROM).encode(),
            'kept connection: the second MAIL came alone')
        i = conn.reads.index(mails[1])
        is_(conn.reads[i + 1] if i + 1 < len(conn.reads) else None,
            ''.join('RCPT TO:<%s>\r\n' % r for r in RCPTS).encode(),
            'kept connection: then its 3 RCPTs in one read')
    diag('reads at the end: %r' % tail)
    mx.stop()

    # 3. No PIPELINING offered: one command at a time, as before.
    up2 = RawUpstream(caps=[c2 for c2 in PIPE_CAPS if c2 != 'PIPELINING'])
    mx2 = Frontmx(up2.port, conf={'workers': 1})
    c = pipelined_message(mx2, 'no PIPELINING')
    c.cmd('QUIT')
    c.close()
    conn = up2.session(0)
    env = [r for r in conn.reads if r[:4] in (b'MAIL', b'RCPT')]
    is_(len(env), 4, 'no PIPELINING: MAIL and each RCPT in a read of its own')
    ok(all(r.count(b'\r\n') == 1 for r in env), 'no PIPELINING: one command per read')
    is_(len(conn.messages), 1, 'no PIPELINING: message relayed')
    mx2.stop()

    # 4. XFORWARD (no XCLIENT): the XFORWARD line leads the group.
    up3 = RawUpstream(caps=PIPE_CAPS + ['XFORWARD NAME ADDR PROTO HELO'])
    up3.script(5, b'250 2.0.0 ok\r\n' + OK4)
    mx3 = Frontmx(up3.port, conf={'workers': 1})
    c = pipelined_message(mx3, 'XFORWARD')
    c.cmd('QUIT')
    c.close()
    conn = up3.session(0)
    one_group(conn, 5, 'XFORWARD', first=b'XFORWARD')
    is_(len(conn.messages), 1, 'XFORWARD: message relayed')

    # 5. A client that does not pipeline: each command goes alone.
    c = SmtpClient(mx3.port)
    c.greeting()
    c.ehlo('slow.example')
    reply_is(c.cmd('MAIL FROM:<%s>' % FROM), 250, None, 'lockstep client: MAIL')
    for r in RCPTS:
        reply_is(c.cmd('RCPT TO:<%s>' % r), 250, None, 'lockstep client: RCPT %s' % r)
    c.cmd('QUIT')
    c.close()
    conn = up3.session(1)
    env = [r for r in conn.reads if r[:4] in (b'MAIL', b'RCPT', b'XFOR')]
    ok(len(env) >= 4 and all(r.count(b'\r\n') == 1 for r in env if r[:4] == b'RCPT'),
       'lockstep client: one RCPT per read (%r)' % env)
    is_(up.errors + up2.errors + up3.errors, [], 'scripted upstreams had no trouble')
    for m in (mx, mx2, mx3):
        m.check_sanitizers()
    done()


run(main, timeout=120)
