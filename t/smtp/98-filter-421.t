#!/usr/bin/python3
# A filter's 421 closes the session (RFC 5321 3.8: 421 means the server is
# closing the transmission channel).  A milter's SMFIR_SHUTDOWN and a
# custom "421 ..." reply (a milter's SMFIR_REPLYCODE, the same path a
# module's set_reply takes) used to be written to the client while the
# session went on reading commands: the client was told the channel was
# closing and then got answers to its next commands.  Now the reply is the
# session's last word at every phase (RCPT, end of data), pipelined
# commands behind it are not answered, nothing is relayed for the
# transaction it ended, and the daemon goes on serving new sessions.
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_milter import *  # noqa: E402,F403

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
MSG = b'From: alice@example.org\r\nSubject: 421\r\n\r\nbody\r\n'


def start(up, m):
    return Frontmx(up, conf={'filters': [{'name': 'av', 'milter': m.address}]})


def at_rcpt(up, name, answer):
    m = ScriptedMilter(script={'rcpt': [answer]})
    mx = start(up, m)
    n0 = len(up.messages)
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, '%s: MAIL 250' % name)
    # RCPT and the commands a pipelining client sends behind it
    c.send(b'RCPT TO:<' + RCPT.encode() + b'>\r\nNOOP\r\nRSET\r\n')
    reply_is(c.reply(), 421, None, '%s: RCPT answered 421' % name)
    ok(c.expect_close(), '%s: the session is closed after the 421' % name)
    is_(c.tail, b'', '%s: nothing answered after the 421' % name)
    c.close()
    is_(len(up.messages), n0, '%s: nothing relayed' % name)
    after(up, mx, name, n0)


def at_eom(up, name, answer):
    m = ScriptedMilter(script={'eom': [answer]})
    mx = start(up, m)
    n0 = len(up.messages)
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, '%s: MAIL 250' % name)
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, '%s: RCPT 250' % name)
    reply_is(c.cmd('DATA'), 354, None, '%s: DATA 354' % name)
    c.send(dot_stuff(MSG) + b'.\r\nNOOP\r\n')
    reply_is(c.reply(), 421, None, '%s: end of data answered 421' % name)
    ok(c.expect_close(), '%s: the session is closed after the 421' % name)
    is_(c.tail, b'', '%s: the pipelined NOOP is not answered' % name)
    c.close()
    is_(len(up.messages), n0, '%s: nothing relayed' % name)
    like(mx.log(), r'smtp closing reason=filter-421', '%s: the close is logged' % name)
    after(up, mx, name, n0)


def after(up, mx, name, n0):
    ok(mx.alive(), '%s: daemon up' % name)
    mx.check_sanitizers('%s: no sanitizer reports' % name)


def main():
    up = Upstream()
    at_rcpt(up, 'SMFIR_SHUTDOWN at RCPT', SHUTDOWN)
    at_rcpt(up, 'custom 421 at RCPT', reply('421 4.7.0 milter says bye'))
    at_eom(up, 'SMFIR_SHUTDOWN at end of data', SHUTDOWN)
    at_eom(up, 'custom 421 at end of data', reply('421 4.7.0 milter says bye'))
    # a 451 at RCPT does not close: the session goes on
    m = ScriptedMilter(script={'rcpt': [TEMPFAIL]})
    mx = start(up, m)
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    c.cmd('MAIL FROM:<%s>' % SENDER)
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 451, None, '451 at RCPT')
    reply_is(c.cmd('NOOP'), 250, None, '451 at RCPT: the session goes on')
    c.quit()
    c.close()
    done()


run(main, timeout=120)
