#!/usr/bin/python3
# Never a crash: nothing asynchronous acts on a session that is gone.
#
# Modules that misuse resume() (t/plugins/misbehave.c): from on_abort
# after the client left, twice, long after their session ended, from a
# thread of their own (after the close, and while the session still
# waits), and a blocking hook that wakes up after its session was closed
# and still uses the api.  Every such call is refused (-1) and logged,
# the first answer counts, the session in hand is never touched.
#
# Then the client goes away at every point where the session waits for
# something: a filter hook pending at each phase, a blocking-pool job
# (running, and still queued), the upstream's greeting / EHLO / MAIL /
# RCPT / DATA / final-dot reply, the reverse DNS of the client, and SPF,
# DKIM-key and DMARC-policy lookups held by fakedns.  The daemon stays up with no sanitizer
# report, and nothing reaches the upstream that the client did not
# finish (no message whose final dot the client never sent).
import os
import re
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fmx_tls import proxy_v1  # noqa: E402
from fakedns import FakeDNS  # noqa: E402
from dmarc_util import dkim_keypair, dkim_sign, message  # noqa: E402

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
BODY = b'From: alice@example.org\r\nSubject: lifetime\r\n\r\nbody line\r\n'
PHASES = ('connect', 'helo', 'mail', 'rcpt', 'data', 'eom')
WAIT = 20       # upper bound for events that come at once: only guards hangs


def mis(mode, so='misbehave', **kw):
    # delay_reject = false: a mail-phase failure answers the MAIL itself
    # (held for RCPT by default, t/smtp/34-phase-policy.t).
    e = {'name': 'mis', 'module': plugin(so), 'options': {'mode': mode}, 'delay_reject': False}
    e['options'].update(kw.pop('options', {}))
    e.update(kw)
    return e


def log_count(mx, regex):
    return len(re.findall(regex, mx.log()))


def wait_log(mx, regex, n=1, timeout=WAIT):
    return wait_for(lambda: log_count(mx, regex) >= n, timeout)


def drive(c, phase):
    """Talk to the point where the hook (or relay) of phase is waiting;
    the last command is sent, its reply never read."""
    if phase == 'connect':
        return True
    ok_ = c.greeting().code == 220
    if phase == 'helo':
        c.send(b'EHLO client.example\r\n')
        return ok_
    ok_ = ok_ and c.ehlo().code == 250
    if phase == 'mail':
        c.send(('MAIL FROM:<%s>\r\n' % SENDER).encode())
        return ok_
    ok_ = ok_ and c.cmd('MAIL FROM:<%s>' % SENDER).code == 250
    if phase == 'rcpt':
        c.send(('RCPT TO:<%s>\r\n' % RCPT).encode())
        return ok_
    ok_ = ok_ and c.cmd('RCPT TO:<%s>' % RCPT).code == 250
    if phase == 'data':
        c.send(b'DATA\r\n')
        return ok_
    ok_ = ok_ and c.cmd('DATA').code == 354
    c.send(dot_stuff(BODY) + b'.\r\n')
    return ok_


def nothing_relayed(up, name):
    is_(len(up.messages), 0, name + ': no message reached the upstream')
    ok(not any(x.upper() == 'DATA' for x in up.commands()),
       name + ': no DATA command reached the upstream')


def resume_abort():
    # A hook is pending at each phase in turn and the client leaves; from
    # MAIL on, on_abort then calls resume().
    for phase in PHASES:
        up = Upstream()
        mx = Frontmx(up, name='frontmx (resume_abort at %s)' % phase,
                     conf={'filters': [mis('resume_abort', timeout=2,
                                           options={'phase': phase})]})
        c = SmtpClient(mx.port, timeout=WAIT)
        ok(drive(c, phase), '%s: driven to the pending hook' % phase)
        ok(wait_log(mx, r'filter=mis misbehave pending phase=%s' % phase),
           '%s: the hook is pending' % phase)
        c.vanish()
        ok(wait_log(mx, r'smtp closing reason='), '%s: the session ended' % phase)
        if phase in ('mail', 'rcpt', 'data', 'eom'):
            # on_abort runs for a message that had started (MAIL onward)
            ok(wait_log(mx, r'misbehave abort resume=-?\d'), '%s: on_abort ran' % phase)
            like(mx.log(), r'misbehave abort resume=-1',
                 '%s: resume() from on_abort refused (-1)' % phase)
            unlike(mx.log(), r'misbehave abort resume=0', '%s: ... never accepted' % phase)
        ok(mx.alive(), '%s: daemon alive' % phase)
        c = SmtpClient(mx.port, timeout=WAIT)
        if phase != 'connect':
            reply_is(c.greeting(), 220, None, '%s: a new session is served' % phase)
        c.close()
        if phase == 'mail':
            # Half-closed instead: the client is still owed the MAIL reply,
            # which comes when the hook times out (a timed-out filter is
            # not called again, not even on_abort).
            c = SmtpClient(mx.port, timeout=WAIT)
            drive(c, phase)
            ok(wait_log(mx, r'misbehave pending phase=mail', 2), 'half-close: hook pending')
            c.sock.shutdown(socket.SHUT_WR)
            reply_is(c.reply(), 451, None, 'half-close: the MAIL reply still comes (on_error)')
            ok(c.expect_close(WAIT), 'half-close: then frontmx closes')
            ok(wait_log(mx, r'smtp closing reason=', 2), 'half-close: session ended')
            unlike(mx.log(), r'misbehave abort resume=0', 'half-close: no resume() accepted')
            c.close()
        nothing_relayed(up, phase)
        mx.finish()


def resume_double():
    up = Upstream()
    mx = Frontmx(up, name='frontmx (resume_double)', conf={'filters': [mis('resume_double')]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    r = c.transaction(SENDER, [RCPT], BODY)
    reply_is(r['mail'], 250, None, 'double: MAIL 250 (the first resume, CONTINUE, counts)')
    reply_is(r['rcpt'][0], 250, None, 'double: RCPT 250 (the first in-hook resume counts)')
    reply_is(r['dot'], 250, None, 'double: message relayed')
    c.quit()
    like(mx.log(), r'misbehave timer resume=0 again=-1',
         'double: from a timer, the second resume() is refused (-1)')
    like(mx.log(), r'misbehave in-hook resume=0 again=-1',
         'double: inside the hook, the second resume() is refused (-1)')
    ok(up.wait_messages(1, WAIT), 'double: the upstream got the message')
    mx.finish()


def resume_late():
    up = Upstream()
    mx = Frontmx(up, name='frontmx (resume_late)',
                 conf={'workers': 1, 'filters': [mis('resume_late', timeout=1)]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 451, None,
             'late: the first MAIL pends past its timeout: 451')
    c.quit()
    ok(wait_log(mx, r'smtp disconnect'), 'late: first session over')
    # Sessions later: every hook first resumes the dead session's ctx.
    for i in range(3):
        c = SmtpClient(mx.port, timeout=WAIT)
        c.start()
        r = c.transaction(SENDER, [RCPT], BODY)
        reply_is(r['dot'], 250, None, 'late: session %d relays its message' % (i + 2))
        c.quit()
    ok(log_count(mx, r'misbehave late resume=-1') >= 3,
       'late: resume() of a closed session\'s ctx refused (-1), every time')
    unlike(mx.log(), r'misbehave late resume=0', 'late: ... never accepted')
    like(mx.log(), r'stale', 'late: the refusal is logged')
    ok(up.wait_messages(3, WAIT), 'late: three messages relayed')
    mx.finish()


def resume_thread():
    up = Upstream()
    mx = Frontmx(up, name='frontmx (resume_thread)', conf={'filters': [mis('resume_thread')]})
    c = SmtpClient(mx.port, timeout=WAIT)
    drive(c, 'mail')
    ok(wait_log(mx, r'misbehave pending phase=mail'), 'thread: MAIL pending')
    c.vanish()
    ok(wait_log(mx, r'misbehave thread resume=-?\d+ \(after close\)'),
       'thread: the module\'s thread resumed after the close')
    like(mx.log(), r'misbehave thread resume=-1 \(after close\)',
         'thread: refused (-1), the closed session untouched')
    ok(mx.alive(), 'thread: daemon alive')
    nothing_relayed(up, 'thread')
    mx.finish()

    up = Upstream()
    mx = Frontmx(up, name='frontmx (resume_thread_live)',
                 conf={'filters': [mis('resume_thread_live', timeout=2)]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 451, None,
             'thread live: a resume() from a foreign thread does not count: 451 at the timeout')
    like(mx.log(), r'misbehave thread resume=-1 \(live\)',
         'thread live: resume() from another thread refused (-1)')
    reply_is(c.cmd('NOOP'), 250, None, 'thread live: session in step')
    c.quit()
    nothing_relayed(up, 'thread live')
    mx.finish()


def blocking_after_close():
    # Four pool threads (proxy/main.c): five sessions, so one job is queued.
    up = Upstream()
    mx = Frontmx(up, name='frontmx (blocking hook outlives its session)', conf={
        'filters': [mis('sleep', so='misbehave_blocking', timeout=30,
                        options={'seconds': 5, 'phase': 'mail'})]})
    cs = []
    for i in range(4):
        c = SmtpClient(mx.port, timeout=WAIT)
        drive(c, 'mail')
        cs.append(c)
    ok(wait_log(mx, r'misbehave sleeping phase=mail', 4), 'blocking: four hooks sleep')
    # A fifth session: its connect hook waits in the pool's queue.
    cs.append(SmtpClient(mx.port, timeout=WAIT))
    ok(wait_log(mx, r'smtp connect', 6), 'blocking: a fifth session is queued')
    for c in cs:
        c.vanish()
    ok(wait_log(mx, r'smtp disconnect', 6), 'blocking: the five sessions ended')
    ok(wait_log(mx, r'misbehave woke', 4), 'blocking: the hooks woke up')
    woke = re.findall(r'misbehave woke arg=(\S+) helo=(\S+) from=(\S+) add_header=(-?\d+)', mx.log())
    ok(woke and all(w[1] == '-' and w[2] == '-' for w in woke),
       'blocking: api->get() after the session closed returns NULL (%r)' % (woke[:1],))
    ok(woke and all(w[3] == '-1' for w in woke),
       'blocking: add_header() after the session closed refused')
    ok(woke and all(w[0] == SENDER for w in woke),
       'blocking: the hook\'s own argument stays valid for the whole call')
    # The queued job of the fifth session is dropped when a thread takes
    # it (its session is gone); ASan would report a hook run on it.
    ok(mx.alive(), 'blocking: daemon alive')
    nothing_relayed(up, 'blocking')
    mx.finish()


def upstream_pending():
    # The upstream says nothing at one stage; the client leaves meanwhile.
    for stage, upto in (('greeting', 'mail'), ('EHLO', 'mail'), ('XCLIENT', 'mail'),
                        ('MAIL', 'mail'), ('RCPT', 'rcpt'), ('DATA', 'eom'),
                        ('DOT', 'eom')):
        caps = ['PIPELINING', '8BITMIME', 'XCLIENT NAME ADDR PORT PROTO HELO']
        up = Upstream(ehlo_caps=caps)
        mx = Frontmx(up, name='frontmx (upstream silent at %s)' % stage)
        up.silent_at = stage     # after the start-up probe
        probe = len(up.conns)
        c = SmtpClient(mx.port, timeout=WAIT)
        drive(c, upto)
        want = {'greeting': None, 'EHLO': 'EHLO', 'XCLIENT': 'XCLIENT', 'MAIL': 'MAIL',
                'RCPT': 'RCPT', 'DATA': 'DATA', 'DOT': 'DATA'}[stage]
        if want is None:
            ok(up.wait_connections(probe + 1, WAIT), 'silent %s: frontmx connected' % stage)
        else:
            ok(wait_for(lambda: any(x.upper().startswith(want)
                                    for cn in up.conns[probe:] for x in cn.commands), WAIT),
               'silent %s: the command reached the upstream' % stage)
        if stage == 'DOT':
            ok(wait_for(lambda: any(line == b'.\r\n' for cn in up.conns[probe:] for line in cn.lines), WAIT),
               'silent DOT: the final dot reached the upstream')
        c.vanish()
        ok(wait_log(mx, r'smtp closing reason='), 'silent %s: session ended' % stage)
        ok(wait_for(lambda: all(cn.closed for cn in up.conns), WAIT),
           'silent %s: frontmx dropped the upstream connection' % stage)
        ok(mx.alive(), 'silent %s: daemon alive' % stage)
        if stage != 'DOT':
            is_(len(up.messages), 0, 'silent %s: nothing delivered' % stage)
        mx.finish()

    # The client leaves in the middle of its message: nothing goes upstream.
    up = Upstream()
    mx = Frontmx(up, name='frontmx (client leaves mid-DATA)')
    c = SmtpClient(mx.port, timeout=WAIT)
    drive(c, 'data')
    reply_is(c.reply(), 354, None, 'mid-DATA: 354')
    c.send(b'From: alice@example.org\r\nSubject: half\r\n\r\nfirst half\r\n')
    c.vanish()
    ok(wait_log(mx, r'smtp closing reason='), 'mid-DATA: session ended')
    nothing_relayed(up, 'mid-DATA')
    mx.finish()


def dns_pending():
    dns = FakeDNS({
        '7.100.51.198.in-addr.arpa': [('PTR', 'mail.client.example')],
        'mail.client.example': [('A', '198.51.100.7')],
        'held.example': [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')],
    }).start()
    register_cleanup(dns.stop)

    # rDNS: the PTR answer is outstanding when the client leaves.
    up = Upstream()
    mx = Frontmx(up, start=False, name='frontmx (rDNS outstanding)')
    mx.write_conf(conf={
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
        'dns': {'forward': [dns.address], 'reverse': True},
        'timeouts': {'dns': 30},
    })
    mx.start()
    dns.hold('7.100.51.198.in-addr.arpa')
    c = SmtpClient(mx.port, timeout=WAIT)
    c.send(proxy_v1('TCP4', '198.51.100.7', '192.0.2.1', 40000, 25))
    ok(wait_for(lambda: dns.waiting('7.100.51.198.in-addr.arpa') > 0, WAIT),
       'rDNS: the PTR query is outstanding')
    c.vanish()
    ok(wait_log(mx, r'smtp closing reason='), 'rDNS: session ended')
    dns.release()
    # The answer arrives for nobody; a new session is named as usual.
    c = SmtpClient(mx.port, timeout=WAIT)
    c.send(proxy_v1('TCP4', '198.51.100.7', '192.0.2.1', 40001, 25))
    reply_is(c.greeting(), 220, None, 'rDNS: next session greeted')
    c.quit()
    ok(mx.alive(), 'rDNS: daemon alive')
    mx.finish()

    # SPF: the filter's TXT lookup is outstanding when the client leaves.
    up = Upstream()
    mx = Frontmx(up, name='frontmx (SPF lookup outstanding)', conf={
        'dns': {'forward': [dns.address]},
        'timeouts': {'dns': 30},
        'filters': [{'name': 'spf', 'timeout': 30}],
    })
    dns.hold('held.example')
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    c.send(b'MAIL FROM:<a@held.example>\r\n')
    ok(wait_for(lambda: dns.waiting('held.example') > 0, WAIT), 'SPF: the TXT query is outstanding')
    c.vanish()
    ok(wait_log(mx, r'smtp closing reason='), 'SPF: session ended')
    dns.release()
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    r = c.transaction('a@held.example', [RCPT], BODY)
    reply_is(r['dot'], 250, None, 'SPF: the next session is checked and relayed')
    c.quit()
    ok(up.wait_messages(1, WAIT), 'SPF: exactly the finished message was relayed')
    is_(len(up.messages), 1, 'SPF: one message upstream')
    mx.finish()

    # DKIM key and DMARC policy lookups at the end of data: the client
    # leaves after its final dot while the answer is outstanding.
    key, key_txt = dkim_keypair()
    dns.set('sel._domainkey.dkimok.example', [('TXT', key_txt)])
    dns.set('_dmarc.dkimok.example', [('TXT', 'v=DMARC1; p=reject; adkim=s')])
    for held, what in (('sel._domainkey.dkimok.example', 'DKIM key'),
                       ('_dmarc.dkimok.example', 'DMARC policy')):
        up = Upstream()
        mx = Frontmx(up, name='frontmx (%s lookup outstanding)' % what, conf={
            'dns': {'forward': [dns.address]},
            'timeouts': {'dns': 30},
            'filters': [{'name': 'dkim', 'timeout': 30}, {'name': 'dmarc', 'timeout': 30}],
        })
        msg = dkim_sign(message('Bob <bob@dkimok.example>', 'held %s' % what,
                                'held@dkimok.example'), 'dkimok.example', 'sel', key)
        dns.hold(held)
        c = SmtpClient(mx.port, timeout=WAIT)
        c.start()
        reply_is(c.cmd('MAIL FROM:<bob@dkimok.example>'), 250, None, '%s: MAIL 250' % what)
        reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, '%s: RCPT 250' % what)
        reply_is(c.cmd('DATA'), 354, None, '%s: DATA 354' % what)
        c.send(dot_stuff(msg) + b'.\r\n')
        ok(wait_for(lambda: dns.waiting(held) > 0, WAIT), '%s: the query is outstanding' % what)
        c.vanish()
        ok(wait_log(mx, r'smtp closing reason='), '%s: session ended' % what)
        dns.release()
        nothing_relayed(up, what)
        c = SmtpClient(mx.port, timeout=WAIT)
        c.start()
        r = c.transaction('bob@dkimok.example', [RCPT], msg)
        reply_is(r['dot'], 250, None, '%s: the next session is checked and relayed' % what)
        c.quit()
        ok(up.wait_messages(1, WAIT), '%s: exactly the finished message was relayed' % what)
        mx.finish()


def main():
    require_modules(plugin('misbehave'), plugin('misbehave_blocking'))
    parts = (resume_abort, resume_double, resume_late, resume_thread,
             blocking_after_close, upstream_pending, dns_pending)
    # LIFETIME_ONLY=resume_late,dns_pending runs a subset while debugging.
    only = [x for x in os.environ.get('LIFETIME_ONLY', '').split(',') if x]
    for part in parts:
        if not only or part.__name__ in only:
            part()


run(main, timeout=600)
