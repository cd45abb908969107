#!/usr/bin/python3
# The EHLO a client sees follows the upstream's current capabilities
# (issue 9 item 5): frontmx probes the upstream on a worker's loop until it
# answers, then every upstream.probe_interval seconds, and again at once
# when a session finds it unreachable.  While it was never reached,
# 8BITMIME, SMTPUTF8 and DSN are advertised (README "Capabilities"); a
# transaction that needs one the upstream then lacks gets 451 4.3.0, never
# a permanent refusal and never a parameter the upstream did not offer.
# Every wait is on a log line or a reply, never a sleep.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

RICH = ['PIPELINING', 'SIZE 500000', '8BITMIME', 'SMTPUTF8', 'DSN', 'ENHANCEDSTATUSCODES']
POOR = ['PIPELINING', 'SIZE 400000', '8BITMIME', 'ENHANCEDSTATUSCODES']
BODY = b'From: alice@example.org\r\nSubject: caps\r\n\r\nbody\r\n'


def ehlo(mx):
    return [l.upper() for l in ehlo_lines(mx.port)]


def mail_tempfails(mx, what):
    c = SmtpClient(mx.port)
    c.start()
    r = c.cmd('MAIL FROM:<alice@example.org>')
    ok(r.code is not None and r.code // 100 == 4, '%s: 4xx (%r)' % (what, r))
    c.quit()


def keywords(lines):
    return [l.split(' ')[0] for l in lines]


def cap_lines(mx):
    return re.findall(r'upstream capabilities[^\n]*', mx.log())


def wait_caps(mx, n, pattern, what):
    """Wait for more than n 'upstream capabilities' lines, the last matching."""
    got = wait_for(lambda: len(cap_lines(mx)) > n and re.search(pattern, cap_lines(mx)[-1]),
                   40, 0.1)
    ok(got, what)
    if not got:
        diag('capability lines: %r' % cap_lines(mx))
        diag(mx.log()[-3000:])
    return got


def main():
    # -- down at start, up later, nobody sends MAIL in between
    up = Upstream(ehlo_caps=RICH, refuse=True)
    mx = Frontmx(up, conf={'upstream': {'probe_interval': 1}}, name='probe_interval 1')
    like(mx.log(), r'upstream .*not reachable', 'start: the upstream is down')
    lines = ehlo(mx)
    kw = keywords(lines)
    for k in ('8BITMIME', 'SMTPUTF8', 'DSN'):
        ok(k in kw, 'upstream never reached: %s advertised (the documented choice)' % k)
    ok('SIZE 1048576' in lines, 'upstream never reached: our own SIZE (%s)' % lines)
    mail_tempfails(mx, 'MAIL while the upstream is down')

    n = len(cap_lines(mx))
    up.listen()
    wait_caps(mx, n, r'SMTPUTF8', 'the prober finds the upstream once it listens')
    lines = ehlo(mx)
    kw = keywords(lines)
    for k in ('8BITMIME', 'SMTPUTF8', 'DSN'):
        ok(k in kw, 'upstream back: %s advertised' % k)
    ok('SIZE 500000' in lines, "upstream back: the upstream's SIZE 500000 (%s)" % lines)
    is_([x for x in up.commands() if x.upper().startswith('MAIL')], [],
        'learnt without any session sending MAIL upstream')

    # a session that saw SMTPUTF8 before the upstream dropped it
    old = SmtpClient(mx.port)
    old.greeting()
    ok('SMTPUTF8' in keywords([l.upper() for l in old.ehlo().lines[1:]]),
       'old session: SMTPUTF8 offered')

    # -- the upstream changes: refreshed within probe_interval
    n = len(cap_lines(mx))
    up.ehlo_caps = list(POOR)
    wait_caps(mx, n, r'^(?!.*SMTPUTF8)(?!.*DSN).*size=400000',
              'the change is logged after a refresh')
    lines = ehlo(mx)
    kw = keywords(lines)
    ok('SMTPUTF8' not in kw and 'DSN' not in kw, 'refreshed: SMTPUTF8 and DSN gone (%s)' % kw)
    ok('8BITMIME' in kw, 'refreshed: 8BITMIME still there')
    ok('SIZE 400000' in lines, 'refreshed: SIZE 400000 (%s)' % lines)
    c = SmtpClient(mx.port)
    c.start()
    reply_is(c.cmd('MAIL FROM:<alice@example.org> SMTPUTF8'), 555, '5.5.4',
             'new session: SMTPUTF8 not offered, so refused as unknown')
    c.quit()

    # the old session was promised SMTPUTF8 and DSN: a temporary refusal
    nmail = len([x for x in up.commands() if x.upper().startswith('MAIL')])
    r = old.cmd('MAIL FROM:<alice@example.org> SMTPUTF8')
    reply_is(r, 451, '4.3.0', 'old session: MAIL SMTPUTF8 to an upstream without it: 451 4.3.0')
    r = old.cmd('MAIL FROM:<alice@example.org> RET=HDRS')
    reply_is(r, 451, '4.3.0', 'old session: MAIL RET= to an upstream without DSN: 451 4.3.0')
    res = old.transaction('alice@example.org', ['bob@example.com'], BODY, params=' BODY=8BITMIME')
    reply_is(res['dot'], 250, None, 'old session: BODY=8BITMIME still relayed')
    old.quit()
    mails = [x for x in up.commands() if x.upper().startswith('MAIL')][nmail:]
    ok(all('SMTPUTF8' not in m.upper() and 'RET=' not in m.upper() for m in mails),
       'nothing the upstream lacks was sent to it (%r)' % mails)
    mx.finish()

    # -- a long interval: a session that finds the upstream gone makes the
    #    prober look again, and it learns the new capabilities on its return
    up = Upstream(ehlo_caps=RICH)
    mx = Frontmx(up, conf={'upstream': {'probe_interval': 3600}}, name='probe_interval 3600')
    like(cap_lines(mx)[0] if cap_lines(mx) else '', r'SMTPUTF8', 'start: capabilities learnt')
    up.unlisten()
    up.ehlo_caps = list(POOR)
    n = len(cap_lines(mx))
    mail_tempfails(mx, 'MAIL with the upstream gone')
    ok(wait_for(lambda: re.search(r'upstream probe failed', mx.log()), 20, 0.1),
       'the failed session set the prober off')
    up.listen()
    wait_caps(mx, n, r'size=400000', 'the prober learns the returned upstream\'s capabilities')
    kw = keywords(ehlo(mx))
    ok('SMTPUTF8' not in kw, 'after the upstream came back: SMTPUTF8 no longer advertised')
    mx.finish()


run(main, timeout=150)
