#!/usr/bin/python3
# Asynchronous answers that come after their transaction (or session) is
# gone.  build/plugins/slow_async.so starts a module DNS query (held by
# fakedns) or a module timer at MAIL without waiting for it, and makes the
# RCPT wait for the answer; its callbacks get the message's state, which
# the core frees at the end of the message.  The API (frontmx_filter.h,
# dns_query) says such callbacks never run after the end of their
# message: a late answer must neither run nor be applied to the next
# transaction (a late "reject" for message 1 never rejects message 2).
#
# The transaction ends by RSET, EHLO or HELO while the answer is out, or
# the session by QUIT or by the client vanishing; a second MAIL (refused,
# nested) does not end it.  A pending end-of-message timer outlives its
# session.  t/smtp/27-lifetime.t covers pending hooks and resume()
# misuse when the client leaves; this file covers the transaction
# boundary inside a live session.
#
# Ordering is by events, not time: fakedns answers one held name at a
# time (release(name), answered(name)); timers of one session run on one
# event loop in deadline order, so a later timer's answer proves an
# earlier one had its turn.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import register_cleanup  # noqa: E402
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402

RCPT = 'bob@example.com'
BODY = b'From: alice@example.org\r\nSubject: async\r\n\r\nbody line\r\n'
WAIT = 20       # upper bound for events that come at once: only guards hangs


def slow(*opts):
    """A filters entry for slow_async.so; opts are "key=value"."""
    return {'name': 'slow', 'module': plugin('slow_async'), 'timeout': 30,
            'options': dict(o.split('=', 1) for o in opts)}


def log_count(mx, regex):
    return len(re.findall(regex, mx.log()))


def wait_log(mx, regex, n=1, timeout=WAIT):
    return wait_for(lambda: log_count(mx, regex) >= n, timeout)


def tag_of(mx, sender):
    m = re.findall(r'slow_async start tag=(\d+) from=%s ' % re.escape(sender), mx.log())
    return m[-1] if m else None


def never_answered(mx, tag, name, what='(eom )?'):
    unlike(mx.log(), r'slow_async %sanswer tag=%s ' % (what, tag),
           '%s: the callback of the gone transaction (tag %s) never ran' % (name, tag))


def check_sanity(mx, name):
    """A fresh session: a "reject" answer does reject (so a late one
    applied to another message would have been seen), an ok one relays."""
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    reply_is(c.cmd('MAIL FROM:<x@reject.example>'), 250, None, '%s: next session: MAIL' % name)
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 550, None,
             '%s: next session: a "reject" answer rejects the RCPT' % name)
    c.cmd('RSET')
    r = c.transaction('y@ok.example', [RCPT], BODY)
    reply_is(r['dot'], 250, None, '%s: next session: an ok answer, message relayed' % name)
    c.quit()


def message2_only(mx, up, t2, name, again, why=''):
    """Message 2 (b@ok.example) got its own answer and reached the
    upstream with its own envelope."""
    like(mx.log(), r'slow_async answer tag=%s from=b@ok\.example verdict=continue\n'
         r'[\s\S]*slow_async resumed tag=%s resume=0 %s' % (t2, t2, again),
         '%s: message 2 got its own answer%s' % (name, why))
    ok(up.wait_messages(1, WAIT), '%s: message 2 relayed' % name)
    if up.messages:
        m = up.messages[0]
        is_((m.mail_from, m.rcpts), ('b@ok.example', [RCPT]),
            '%s: upstream: message 2\'s envelope only' % name)


def held_mail(dns, name, also_hold=()):
    """A frontmx with slow_async (mode=dns), a session whose MAIL 1
    (a@reject.example) has its lookup held: (up, mx, client, tag 1)."""
    up = Upstream()
    mx = Frontmx(up, name='frontmx (%s)' % name, conf={
        'dns': {'forward': [dns.address]}, 'timeouts': {'dns': 30},
        'filters': [slow('mode=dns')]})
    for held in ('reject.example',) + tuple(also_hold):
        dns.hold(held)
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    reply_is(c.cmd('MAIL FROM:<a@reject.example>'), 250, None, '%s: MAIL 1 (lookup started)' % name)
    ok(wait_for(lambda: dns.waiting('reject.example') == 1, WAIT),
       '%s: message 1\'s lookup is out' % name)
    return up, mx, c, tag_of(mx, 'a@reject.example')


def dns_tx_end(dns):
    """Message 1's lookup (its answer: reject) is out when the transaction
    ends; message 2 waits for its own lookup; message 1's answer arrives
    first."""
    for ending in ('RSET', 'EHLO client.example', 'HELO client.example'):
        name = 'dns, %s' % ending.split(' ')[0]
        up, mx, c, t1 = held_mail(dns, name, ('ok.example',))
        ok(c.cmd(ending).code == 250, '%s: %s 250, the transaction ends' % (name, ending))
        ok(wait_log(mx, r'slow_async freed tag=%s\b' % t1), '%s: message 1\'s state freed' % name)
        reply_is(c.cmd('MAIL FROM:<b@ok.example>'), 250, None, '%s: MAIL 2' % name)
        t2 = tag_of(mx, 'b@ok.example')
        ok(wait_for(lambda: dns.waiting('ok.example') == 1, WAIT),
           '%s: message 2\'s lookup is out' % name)
        c.send('RCPT TO:<%s>\r\n' % RCPT)
        ok(wait_log(mx, r'slow_async rcpt tag=%s to=\S+ pending' % t2),
           '%s: RCPT 2 waits for its answer' % name)
        # message 1's "reject" goes out first, then message 2's answer
        dns.release('reject.example')
        ok(wait_for(lambda: dns.answered('reject.example') >= 1, WAIT),
           '%s: message 1\'s answer sent' % name)
        dns.release('ok.example')
        reply_is(c.reply(), 250, None,
                 '%s: RCPT 2 250: message 1\'s late "reject" is not applied to message 2' % name)
        reply_is(c.data(BODY)[1], 250, None, '%s: message 2 accepted' % name)
        c.quit()
        never_answered(mx, t1, name)
        message2_only(mx, up, t2, name, 'again=0')
        dns.release()
        check_sanity(mx, name)
        check_stream(up, 2, '%s: upstream' % name)
        mx.finish()


def dns_nested_mail(dns):
    """A second MAIL inside the transaction is refused (503) and does not
    replace it: message 1's answer, when it comes, is still message 1's."""
    name = 'dns, nested MAIL'
    up, mx, c, t1 = held_mail(dns, name)
    reply_is(c.cmd('MAIL FROM:<b@ok.example>'), 503, '5.5.1', '%s: nested MAIL 503 5.5.1' % name)
    is_(tag_of(mx, 'b@ok.example'), None, '%s: no filter ran for the refused MAIL' % name)
    c.send('RCPT TO:<%s>\r\n' % RCPT)
    ok(wait_log(mx, r'slow_async rcpt tag=%s to=\S+ pending' % t1), '%s: RCPT waits' % name)
    dns.release()
    reply_is(c.reply(), 550, None, '%s: RCPT 550: message 1\'s answer, for message 1' % name)
    unlike(mx.log(), r'slow_async freed tag=%s\b' % t1 + r'[\s\S]*slow_async answer tag=%s ' % t1,
           '%s: the state was not freed before its answer' % name)
    reply_is(c.cmd('RSET'), 250, None, '%s: RSET' % name)
    r = c.transaction('b@ok.example', [RCPT], BODY)
    reply_is(r['dot'], 250, None, '%s: the next transaction relays' % name)
    c.quit()
    ok(up.wait_messages(1, WAIT), '%s: relayed' % name)
    check_stream(up, 1, '%s: upstream' % name)
    mx.finish()


def dns_session_end(dns):
    """The session ends (QUIT, or the client vanishes) while message 1's
    lookup is out; the answer arrives for nobody."""
    for ending in ('QUIT', 'vanish'):
        name = 'dns, %s' % ending
        up, mx, c, t1 = held_mail(dns, name)
        if ending == 'QUIT':
            reply_is(c.cmd('QUIT'), 221, None, '%s: QUIT 221' % name)
            ok(c.expect_close(WAIT), '%s: closed' % name)
        else:
            c.send('RCPT TO:<%s>\r\n' % RCPT)
            ok(wait_log(mx, r'slow_async rcpt tag=%s to=\S+ pending' % t1), '%s: RCPT waits' % name)
            c.vanish()
        ok(wait_log(mx, r'smtp disconnect'), '%s: session ended' % name)
        ok(wait_log(mx, r'slow_async freed tag=%s\b' % t1), '%s: message state freed' % name)
        answered = dns.answered('reject.example')
        dns.release()
        ok(wait_for(lambda: dns.answered('reject.example') > answered, WAIT),
           '%s: the late answer was sent' % name)
        # the late answer and a new session's queries meet in the resolver
        check_sanity(mx, name)
        never_answered(mx, t1, name)
        ok(mx.alive(), '%s: daemon alive' % name)
        check_stream(up, 1, '%s: upstream (only the sanity message)' % name)
        mx.finish()


def timer_pipelined():
    """One write: MAIL 1 (its timer would answer reject), RSET, MAIL 2,
    RCPT.  Message 1's timer is due before message 2's; the RCPT must get
    message 2's own answer.  double=1: the callback resumes a second time
    (refused)."""
    name = 'timer, pipelined RSET'
    up = Upstream()
    mx = Frontmx(up, name='frontmx (%s)' % name, conf={
        'workers': 1, 'filters': [slow('mode=timer', 'ms=300', 'double=1')]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    c.send('MAIL FROM:<a@reject.example>\r\nRSET\r\nMAIL FROM:<b@ok.example>\r\n'
           'RCPT TO:<%s>\r\n' % RCPT)
    got = [c.reply() for _ in range(4)]
    is_([r.code for r in got], [250, 250, 250, 250],
        '%s: MAIL, RSET, MAIL, RCPT answered in order, RCPT 250' % name)
    t1, t2 = tag_of(mx, 'a@reject.example'), tag_of(mx, 'b@ok.example')
    reply_is(c.data(BODY)[1], 250, None, '%s: message 2 accepted' % name)
    c.quit()
    never_answered(mx, t1, name)
    message2_only(mx, up, t2, name, 'again=-1',
                  ', a second resume() from its callback refused (-1)')
    check_stream(up, 1, '%s: upstream' % name)
    mx.finish()


def timer_eom_gone():
    """The end-of-message hook waits for a timer.  Pipelined QUIT behind
    the final dot: the 250 comes, then 221, the message relayed once.
    The client vanishing instead: the timer never runs after the session
    ended (a second session's later timer on the same worker proves it
    had its turn), the message is not relayed."""
    name = 'eom timer'
    up = Upstream()
    mx = Frontmx(up, name='frontmx (%s)' % name, conf={
        'workers': 1, 'filters': [slow('mode=timer', 'ms=300', 'eom=1')]})
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    c.send('MAIL FROM:<a@ok.example>\r\nRCPT TO:<%s>\r\nDATA\r\n' % RCPT)
    got = [c.reply() for _ in range(3)]
    is_([r.code for r in got], [250, 250, 354], '%s: MAIL, RCPT, DATA' % name)
    c.send(dot_stuff(BODY) + b'.\r\nQUIT\r\n')
    reply_is(c.reply(), 250, None, '%s: pipelined QUIT: the final dot\'s 250 first' % name)
    reply_is(c.reply(), 221, None, '%s: then 221' % name)
    ok(c.expect_close(WAIT), '%s: closed' % name)
    ok(up.wait_messages(1, WAIT), '%s: relayed' % name)

    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    c.send('MAIL FROM:<gone@ok.example>\r\nRCPT TO:<%s>\r\nDATA\r\n' % RCPT)
    got = [c.reply() for _ in range(3)]
    is_([r.code for r in got], [250, 250, 354], '%s, vanish: MAIL, RCPT, DATA' % name)
    tg = tag_of(mx, 'gone@ok.example')
    c.send(dot_stuff(BODY) + b'.\r\n')
    ok(wait_log(mx, r'slow_async eom pending tag=%s\b' % tg), '%s, vanish: the hook waits' % name)
    c.vanish()
    ok(wait_log(mx, r'slow_async freed tag=%s\b' % tg), '%s, vanish: message state freed' % name)
    # a later timer on the same (only) worker
    c = SmtpClient(mx.port, timeout=WAIT)
    c.start()
    r = c.transaction('after@ok.example', [RCPT], BODY)
    reply_is(r['dot'], 250, None, '%s, vanish: the next session relays' % name)
    c.quit()
    never_answered(mx, tg, name + ', vanish', 'eom ')
    ok(up.wait_messages(2, WAIT), '%s: the next message relayed' % name)
    is_(sorted(m.mail_from for m in up.messages), ['a@ok.example', 'after@ok.example'],
        '%s: the vanished client\'s message not relayed, the others once' % name)
    check_stream(up, 2, '%s: upstream' % name)
    mx.finish()


def main():
    require_modules(plugin('slow_async'))
    dns = FakeDNS({
        'reject.example': [('TXT', 'reject')],
        'ok.example': [('TXT', 'fine')],
    }).start()
    register_cleanup(dns.stop)
    parts = (dns_tx_end, dns_nested_mail, dns_session_end, timer_pipelined, timer_eom_gone)
    only = [x for x in os.environ.get('ASYNC_ONLY', '').split(',') if x]
    for part in parts:
        if only and part.__name__ not in only:
            continue
        if part.__code__.co_argcount:
            part(dns)
        else:
            part()


run(main, timeout=300)
