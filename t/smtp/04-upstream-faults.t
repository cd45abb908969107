#!/usr/bin/python3
# Upstream faults (refused, reset in DATA, silent, garbage replies, dropped
# connection) become 4xx for the client, never 250; the client session stays
# usable and the daemon keeps serving; once the upstream is back, mail flows.
import os
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: faults\r\n\r\n' + (b'0123456789' * 7 + b'\r\n') * 70


class Tally:
    """Counts the final 250s the client got, to compare with the upstream."""
    def __init__(self):
        self.ok250 = 0

    def final(self, r):
        if r is not None and r.code == 250:
            self.ok250 += 1


def session(mx):
    c = SmtpClient(mx.port, timeout=15)
    reply_is(c.greeting(), 220, None, 'new connection greeted')
    c.ehlo()
    return c


def good_message(c, t, name):
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['mail'], 250, None, name + ': MAIL 250')
    reply_is(res['dot'], 250, None, name + ': message relayed, 250')
    t.final(res['dot'])
    return res


def main():
    up = Upstream(refuse=True)
    # distinct bounds, so the log tells which one ran out
    mx = Frontmx(up, conf={'timeouts': {'upstream_connect': 2, 'upstream_command': 2,
                                        'upstream_data_end': 3}})
    t = Tally()
    expected = 0

    # -- refused
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 451, '4.4.1', 'upstream refused: MAIL 451 4.4.1')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'no transaction after the 451')
    reply_is(c.cmd('NOOP'), 250, None, 'session still usable (NOOP)')
    c2 = session(mx)
    reply_is(c2.cmd('MAIL FROM:<alice@example.org>'), 451, '4.4.1', 'second session: 451 4.4.1 too')
    c2.quit()
    up.listen()
    good_message(c, t, 'refused, then upstream up (same session)')
    expected += 1
    c.quit()

    # -- reset in the middle of the message data
    up.reset_in_data = 300
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['data'], 354, None, 'reset: DATA 354')
    reply_is(res['dot'], 451, '4.4.2', 'upstream reset mid-DATA: final 451 4.4.2')
    t.final(res['dot'])
    up.reset_in_data = None
    good_message(c, t, 'after reset (same session)')
    expected += 1
    c.quit()

    # -- silent at MAIL (upstream_command = 2)
    up.silent_at = 'MAIL'
    c = session(mx)
    r = c.cmd('MAIL FROM:<alice@example.org>', timeout=120)
    reply_is(r, 451, '4.4.2', 'upstream silent at MAIL: 451 4.4.2')
    ok('error="timeout" state=command detail="no complete reply within 2 s"' in mx.log(),
       'the upstream_command bound (2 s) ran out, at MAIL')
    up.silent_at = None
    good_message(c, t, 'after silent MAIL (same session)')
    expected += 1
    c.quit()

    # -- silent greeting
    up.silent_at = 'greeting'
    c = session(mx)
    r = c.cmd('MAIL FROM:<alice@example.org>')
    reply_is(r, 451, '4.4.2', 'upstream silent at greeting: 451 4.4.2')
    up.silent_at = None
    good_message(c, t, 'after silent greeting (same session)')
    expected += 1

    # -- silent after the final dot (upstream_data_end = 2)
    up.silent_at = 'DOT'
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 451, '4.4.2', 'upstream silent after the dot: 451 4.4.2, not 250')
    ok('error="timeout" state=data-end detail="no complete reply within 3 s"' in mx.log(),
       'the upstream_data_end bound (3 s) ran out, after the dot')
    t.final(res['dot'])
    expected += 1          # the upstream did see the whole message
    up.silent_at = None
    good_message(c, t, 'after silent dot (same session)')
    expected += 1
    c.quit()

    # -- garbage replies
    c = session(mx)
    up.garbage_at, up.garbage = 'MAIL', b'hello world\r\n'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 451, '4.3.0', 'garbage reply to MAIL: 451 4.3.0')
    up.garbage_at, up.garbage = 'RCPT', b'250-ok\r\n550 mixed codes\r\n'
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250 (fresh upstream session)')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 451, '4.3.0',
             'multi-line reply with mixed codes to RCPT: 451 4.3.0')
    c.cmd('RSET')
    up.garbage_at, up.garbage = 'DOT', b'2x0 what\r\n'
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 451, '4.3.0', 'malformed final reply: 451 4.3.0, not 250')
    t.final(res['dot'])
    expected += 1
    # bounded reply parser (cf. OpenSMTPD CVE-2020-8794): too many lines,
    # an over-long line, a bare LF inside a reply
    for garbage, what in ((b'250-line\r\n' * 200 + b'250 ok\r\n', '200-line reply'),
                          (b'250 ' + b'x' * 5000 + b'\r\n', '5000-octet reply line'),
                          (b'250-ok\n250 ok\r\n', 'bare LF in a reply'),
                          (b'250-ok\r\n250-ok\r\n', 'reply cut short (no last line)')):
        up.garbage_at, up.garbage = 'MAIL', garbage
        r = c.cmd('MAIL FROM:<alice@example.org>')
        ok(r.code is not None and 400 <= r.code < 500,
           '%s from the upstream: 4xx, never 250 (%r)' % (what, r))
        if r.code == 250:
            c.cmd('RSET')
    up.garbage_at = None
    c.cmd('RSET')
    good_message(c, t, 'after garbage (same session)')
    expected += 1

    # -- upstream closes the connection between transactions
    up.drop_all()
    time.sleep(0.3)
    r = c.cmd('MAIL FROM:<alice@example.org>')
    ok(r.code == 250 or (r.code is not None and 400 <= r.code < 500),
       'MAIL after the upstream hung up: 250 (reconnected) or 4xx (%r)' % (r,))
    if r.code != 250:
        r = c.cmd('MAIL FROM:<alice@example.org>')
        reply_is(r, 250, None, 'retried MAIL after the hang-up: 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'RCPT 250')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'message after hang-up relayed')
    t.final(f)
    expected += 1
    c.quit()

    # -- upstream goes away entirely
    up.unlisten()
    up.drop_all()
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 451, '4.4.1', 'upstream gone: 451 4.4.1')
    up.listen()
    good_message(c, t, 'upstream back (same session)')
    expected += 1
    c.quit()

    c = session(mx)
    good_message(c, t, 'brand-new session after all faults')
    expected += 1
    c.quit()

    ok(up.wait_messages(expected, 10), 'upstream saw %d DATA completions' % expected)
    check_stream(up, expected, 'upstream')
    is_(t.ok250, up.accepted,
        'nothing lost: client 250s == upstream 250s')
    ok(mx.alive(), 'daemon survived every fault')
    mx.finish()


run(main, timeout=60)
