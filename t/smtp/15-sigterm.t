#!/usr/bin/python3
# SIGTERM stops accepting and drains: open sessions may finish within
# timeouts.shutdown_grace, then the daemon exits 0.  No clock is read: a
# daemon that must not wait gets a 60 s grace and 30 s to exit, one that
# must wait is seen alive, then the grace's end is seen in its log.
import os
import signal
import subprocess
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402

BODY = b'From: alice@example.org\r\nSubject: drain\r\n\r\n' + b'body line\r\n' * 100


def wait_exit(mx, limit):
    t0 = time.time()
    try:
        rc = mx.proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        rc = None
    return rc, time.time() - t0


def new_conn_refused(port):
    """True if a new connection is refused, or greeted with 421, or closed."""
    try:
        c = SmtpClient(port, timeout=2)
    except OSError:
        return True
    r = c.greeting(timeout=2)
    c.close()
    return r.code != 220


def main():
    up = Upstream()

    # -- no sessions: exit 0 without waiting for the grace
    mx = Frontmx(up, conf={'timeouts': {'shutdown_grace': 60}}, name='idle daemon')
    os.kill(mx.pid, signal.SIGTERM)
    rc, dt = wait_exit(mx, 30)
    is_(rc, 0, 'no sessions: SIGTERM -> exit 0, without waiting out the 60 s grace')
    mx.check_sanitizers()

    # -- an idle session (no transaction): closed at once, exit 0
    mx = Frontmx(up, conf={'timeouts': {'shutdown_grace': 60}}, name='idle-session daemon')
    c = SmtpClient(mx.port, timeout=10)
    c.greeting()
    reply_is(c.ehlo(), 250, None, 'idle session open')
    os.kill(mx.pid, signal.SIGTERM)
    rc, dt = wait_exit(mx, 30)
    is_(rc, 0, 'idle session: exit 0, the idle session closed without waiting out the 60 s grace')
    r = c.reply(timeout=2)
    ok(r.code in (None, 421), 'the idle client got 421 or just a close (%r)' % (r,))
    ok(c.expect_close(2), 'the idle client was disconnected')
    mx.check_sanitizers()

    # -- a stalled transaction: waited for up to the grace period, then cut
    mx = Frontmx(up, conf={'timeouts': {'shutdown_grace': 10}}, name='stalled-session daemon')
    c = SmtpClient(mx.port, timeout=10)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<stalled@example.org>')
    c.cmd('RCPT TO:<bob@example.com>')
    reply_is(c.cmd('DATA'), 354, None, 'stalled session inside DATA')
    c.send(b'Subject: stalled\r\n\r\nno end in sight\r\n')
    os.kill(mx.pid, signal.SIGTERM)
    ok(wait_for(lambda: new_conn_refused(mx.port), 10), 'new connections are not served while draining')
    ok(mx.alive() and 'grace period over' not in mx.log(),
       'still running while a transaction is in progress (draining)')
    rc, dt = wait_exit(mx, 40)
    is_(rc, 0, 'stalled transaction: exit 0 after the grace period')
    like(mx.log(), r'grace period over, closing 1 sessions', 'the 10 s grace ran out, then the session was cut')
    r = c.reply(timeout=2)
    ok(r.code in (None, 421), 'the stalled client got 421 or just a close (%r)' % (r,))
    ok(c.expect_close(2), 'the stalled client was disconnected')
    ok(not any(m.mail_from == 'stalled@example.org' for m in up.messages), 'stalled message not relayed')
    mx.check_sanitizers()

    # -- a session in the middle of DATA finishes its message, then exit
    mx = Frontmx(up, conf={'timeouts': {'shutdown_grace': 60}}, name='draining daemon')
    c = SmtpClient(mx.port, timeout=10)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL before SIGTERM')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'RCPT before SIGTERM')
    reply_is(c.cmd('DATA'), 354, None, 'DATA before SIGTERM')
    c.send(BODY[:100])
    os.kill(mx.pid, signal.SIGTERM)
    ok(wait_for(lambda: 'draining' in mx.log(), 10), 'SIGTERM seen (draining logged)')
    ok(mx.alive(), 'not exited while a message is in progress')
    c.send(BODY[100:] + b'.\r\n')
    reply_is(c.reply(), 250, None, 'message in progress at SIGTERM is relayed: 250')
    r = c.cmd('QUIT')
    ok(r.code in (221, 421), 'QUIT while draining: 221 or 421 (%r)' % (r,))
    rc, dt = wait_exit(mx, 30)
    is_(rc, 0, 'drained: exit 0 once its last session ended, without waiting out the 60 s grace')
    ok(up.wait_messages(1, 5), 'the upstream has the message')
    check_stream(up, 1, 'upstream')
    if up.messages:
        check_relayed(up.messages[0].data, BODY, 'drained message')
    mx.check_sanitizers()

    # nothing listens on the port any more
    ok(not fmx.port_open(mx.port), 'port closed after exit')


run(main)
