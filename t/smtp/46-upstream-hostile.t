#!/usr/bin/python3
# An upstream that answers out of turn, with codes its command cannot get,
# or refuses DATA and keeps its transaction open (as Postfix does):
#  - a reply sent before it was asked (on connect, behind the greeting or
#    any reply, between 354 and our final dot, a second reply to the dot)
#    is a protocol error: the client gets a 4xx, never the early reply, and
#    the connection is dropped;
#  - a reply code the command may not get (RFC 5321 4.3.2: 354 or 221 to
#    the final dot, 250 to DATA, 354 to MAIL, ...) is a 4xx for the client;
#    a 421 ends the upstream connection (frontmx drops it itself);
#  - after the upstream refused DATA its MAIL is still open: frontmx sends
#    RSET before the next MAIL, and the client's next message goes through
#    (never "503 nested MAIL").
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import fmx  # noqa: E402
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: hostile\r\n\r\nbody\r\n'


def session(mx):
    c = SmtpClient(mx.port, timeout=30)
    reply_is(c.greeting(), 220, None, 'greeting')
    c.ehlo()
    return c


def is_4xx(r, name):
    return ok(r is not None and r.code is not None and 400 <= r.code < 500 and
              r.enh is not None and r.enh.startswith('4.'),
              name + ' (%r)' % (r,))


def is_4xx_quiet(r):
    return r is not None and r.code is not None and 400 <= r.code < 500


def ncmd(up, verb):
    return sum(1 for x in up.commands() if x.upper().split(' ')[0] == verb)


def good(c, name):
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, name + ': next message relayed, 250')
    return res


def early_replies(up, mx):
    # greeting stage: a reply before the greeting, or behind it
    for key, what in (('connect', 'before the greeting'), ('greeting', 'behind the greeting'),
                      ('EHLO', 'behind the EHLO reply')):
        up.inject = {key: '250 2.1.0 Ok early\r\n'}
        nmail = ncmd(up, 'MAIL')
        c = session(mx)
        is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), 'a 250 %s: MAIL 4xx' % what)
        is_(ncmd(up, 'MAIL'), nmail, 'a 250 %s: no MAIL relayed' % what)
        up.inject = {}
        good(c, what)
        c.quit()

    # behind the reply to MAIL: the MAIL reply is not acted on
    up.inject = {'MAIL': '250 2.1.5 Ok early\r\n'}
    nrcpt = ncmd(up, 'RCPT')
    c = session(mx)
    is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), 'a reply behind the MAIL reply: MAIL 4xx')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'no transaction after it')
    is_(ncmd(up, 'RCPT'), nrcpt, 'no RCPT relayed')
    up.inject = {}
    good(c, 'after MAIL')
    c.quit()

    # behind the reply to RCPT
    up.inject = {'RCPT': '354 early\r\n'}
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    is_4xx(c.cmd('RCPT TO:<bob@example.com>'), 'a reply behind the RCPT reply: RCPT 4xx')
    up.inject = {}
    c.cmd('RSET')
    good(c, 'after RCPT')
    c.quit()

    # 354 and at once 250, before the message was sent: never acceptance
    n0, a0 = up.transactions, up.accepted
    up.inject = {'DATA': '250 2.0.0 Ok: queued early\r\n'}
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['data'], 354, None, '354 + early 250: DATA 354 (the proxy\'s own)')
    is_4xx(res['dot'], '354 + early 250: the final reply is a 4xx, not the early 250')
    up.inject = {}
    good(c, 'after 354 + 250')
    c.quit()
    ok(up.wait_messages(n0 + 1, 10), 'the next message reached the upstream')
    is_((up.transactions, up.accepted), (n0 + 1, a0 + 1),
        'only the next message was completed upstream')

    # a second reply to the final dot: which one is the verdict?
    n0 = up.transactions
    up.inject = {'DOT': '554 5.7.1 second thoughts\r\n'}
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    is_4xx(res['dot'], 'two replies to the final dot: 4xx, not 250')
    up.inject = {}
    good(c, 'after two final replies')
    c.quit()
    ok(up.wait_messages(n0 + 2, 10), 'both messages completed upstream')

    # behind the reply to our RSET (owed after a refused DATA)
    up.on_data = ['451 4.7.1 not now', None]
    up.inject = {'RSET': '250 2.1.0 Ok early\r\n'}
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 451, '4.7.1', 'DATA refused upstream: 451 4.7.1')
    nconn = len(up.conns)
    good(c, 'a reply behind the RSET reply')
    ok(len(up.conns) > nconn, 'after the early reply behind RSET: a new connection')
    up.inject = {}
    c.quit()


def early_in_data(d):
    # the early 250 arrives while frontmx is still sending the message: the
    # upstream stops reading once it sent it, so the final dot cannot be out
    up = Upstream(inject={'data': '250 2.0.0 Ok: queued early\r\n'}, hold_data=True,
                  ehlo_caps=['PIPELINING', 'SIZE 20000000', '8BITMIME', 'ENHANCEDSTATUSCODES'])
    mx = Frontmx(up, conf={'limits': {'message_size': 16 * 1048576}}, name='data-send')
    big = BODY + (b'x' * 998 + b'\r\n') * 6000       # 6 MB, more than the socket buffers
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], big)
    reply_is(res['data'], 354, None, 'big message: DATA 354')
    is_4xx(res['dot'], 'a 250 in the middle of the data: 4xx, not the early 250')
    up.release()
    up.inject = {}
    up.hold_data = False
    good(c, 'after a reply during the data')
    c.quit()
    ok(up.wait_messages(1, 20), 'the next message reached the upstream')
    is_(up.transactions, 1, 'the message answered early was never completed upstream')
    check_stream(up, 1, 'data-send upstream')
    mx.finish()


def early_xclient(d):
    # no PIPELINING: XCLIENT and EHLO go one at a time
    up = Upstream(ehlo_caps=['SIZE 10240000', 'ENHANCEDSTATUSCODES',
                             'XCLIENT NAME ADDR PORT PROTO HELO'],
                  inject={'XCLIENT': '250 2.1.0 Ok early\r\n'})
    mx = Frontmx(up, name='xclient')
    c = session(mx)
    is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), 'a reply behind the XCLIENT reply: MAIL 4xx')
    is_(ncmd(up, 'MAIL'), 0, 'no MAIL relayed')
    up.inject = {}
    c.cmd('RSET')
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'then a clean XCLIENT session relays')
    c.quit()
    # a second EHLO with another name: the upstream must not keep the
    # first one (XCLIENT HELO=) for the next transaction
    c = session(mx)
    good(c, 'first name')
    c.ehlo('second.example')
    good(c, 'second name')
    c.quit()
    ok(up.wait_messages(3, 10), 'both messages relayed')
    with up.lock:
        m = up.messages[-1]
    like(m.xclient[-1] if m.xclient else '', r' HELO=second\.example\b',
         'after a new EHLO the upstream was told the new name (%r)' % (m.xclient[-1:],))
    check_stream(up, 3, 'xclient upstream')
    mx.finish()


def early_xclient_pipelined(d):
    # with PIPELINING the EHLO goes right behind XCLIENT, so a reply
    # injected behind XCLIENT's looks like the EHLO reply; the real one is
    # then a reply nobody asked for.  Whenever that shows, the connection
    # goes: the client never gets its 250 over a stream out of step.
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO'],
                  inject={'XCLIENT': '250 2.1.0 Ok early\r\n'})
    mx = Frontmx(up, name='xclient-pipelined')
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    replies = [res['mail']] + res['rcpt'] + ([res['dot']] if res['dot'] else [])
    ok(any(is_4xx_quiet(r) for r in replies) and (res['dot'] is None or res['dot'].code != 250),
       'pipelined XCLIENT + an injected reply: a 4xx, no final 250 (%r)' % (replies,))
    is_(up.transactions, 0, 'no message completed over that connection')
    up.inject = {}
    c.cmd('RSET')
    good(c, 'after the pipelined XCLIENT injection')
    c.quit()
    mx.finish()


def early_starttls(d):
    # STARTTLS refused (454), and a reply behind the refusal: frontmx must
    # not go on in the clear taking it for the next command's reply (bytes
    # behind a 220 are discarded before the handshake, 41-upstream-tls.t)
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['STARTTLS', 'XCLIENT NAME ADDR PORT PROTO HELO'],
                  inject={'STARTTLS': '220 2.0.0 early\r\n'})
    mx = Frontmx(up, name='starttls')
    c = session(mx)
    is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), 'a reply behind the STARTTLS refusal: MAIL 4xx')
    is_(ncmd(up, 'XCLIENT') + ncmd(up, 'MAIL'), 0, 'no XCLIENT or MAIL relayed')
    up.inject = {}
    good(c, 'after STARTTLS')
    c.quit()
    check_stream(up, 1, 'starttls upstream')
    mx.finish()


def bad_codes(up, mx):
    # final dot: only 250 or a refusal; DATA: only 354 or a refusal
    for attr, reply in (('on_dot', '354 End data with <CR><LF>.<CR><LF>'),
                        ('on_dot', '221 2.0.0 Bye'), ('on_dot', '251 2.0.0 what'),
                        ('on_dot', '421 4.3.2 Service shutting down'),
                        ('on_data', '250 2.0.0 Ok'), ('on_data', '221 2.0.0 Bye'),
                        ('on_data', '334 what')):
        setattr(up, attr, reply)
        c = session(mx)
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        is_4xx(res['dot'], '%r to %s: a 4xx final reply' % (reply[:3], attr[3:].upper()))
        setattr(up, attr, None)
        good(c, 'after %r to %s' % (reply[:3], attr[3:].upper()))
        c.quit()
    # MAIL, RCPT: only 250 (251) or a refusal
    for attr, reply in (('on_mail', '354 go ahead'), ('on_mail', '221 2.0.0 Bye'),
                        ('on_mail', '235 2.7.0 what'), ('on_rcpt', '354 go ahead'),
                        ('on_rcpt', '221 2.0.0 Bye')):
        setattr(up, attr, reply)
        c = session(mx)
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        r = res['mail'] if attr == 'on_mail' else res['rcpt'][0]
        is_4xx(r, '%r to %s: 4xx' % (reply[:3], attr[3:].upper()))
        ok(res['dot'] is None, 'no message sent')
        setattr(up, attr, None)
        c.cmd('RSET')
        good(c, 'after %r to %s' % (reply[:3], attr[3:].upper()))
        c.quit()
    # RSET: only 250
    up.on_data = ['451 4.7.1 not now', None]
    up.on_rset = ['354 what', None]
    c = session(mx)
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 451, '4.7.1', 'DATA refused upstream: 451 4.7.1')
    good(c, '354 to RSET')
    c.quit()
    up.on_rset = None
    # a greeting that is not 220
    up.banner = '250 upstream.test not a greeting'
    c = session(mx)
    is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), '250 as the greeting: MAIL 4xx')
    up.banner = '220 upstream.test ESMTP capture'
    good(c, 'after a 250 greeting')
    c.quit()
    # a multi-line refusal's text goes to the log as one line
    up.banner = '554-5.3.2 no service\r\n554 5.3.2 FAKE-LOG-LINE client=1.2.3.4'
    c = session(mx)
    is_4xx(c.cmd('MAIL FROM:<alice@example.org>'), '554 greeting: MAIL 4xx')
    up.banner = '220 upstream.test ESMTP capture'
    c.quit()
    ok(wait_for(lambda: 'no service' in mx.log(), 10), 'the refusal is logged')
    unlike(mx.log(), r'FAKE-LOG-LINE', "the upstream's second line makes no log line of its own")


def closing_421(up, mx):
    # 421 at MAIL from an upstream that does not hang up itself: frontmx
    # must not keep the pair open, and the client must not be told 421
    # while its session goes on
    up.close_on_421 = False
    for attr in ('on_mail', 'on_rcpt', 'on_data', 'on_dot'):
        setattr(up, attr, '421 4.3.2 Service shutting down')
        nconn = len(up.conns)
        c = session(mx)
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        r = {'on_mail': res['mail'], 'on_rcpt': res['rcpt'][0]}.get(attr, res['dot'])
        is_4xx(r, '421 to %s: 4xx' % attr[3:].upper())
        setattr(up, attr, None)
        if r is not None and r.code == 421:
            ok(c.expect_close(10), '421 given to the client: the client is disconnected')
        else:
            ok(len(up.conns) > nconn and wait_for(lambda: up.conns[nconn].closed, 10),
               '421 to %s: frontmx closed that upstream connection' % attr[3:].upper())
            c.cmd('RSET')
            good(c, 'after 421 to %s' % attr[3:].upper())
            c.quit()
    up.close_on_421 = True


def refused_data(up, mx):
    # Postfix keeps the transaction after refusing DATA: RSET is owed
    for refusal, code, enh in (('451 4.7.1 data refused for now', 451, '4.7.1'),
                               ('554 5.7.1 data refused', 554, '5.7.1')):
        up.on_data = [refusal, None]
        nrset = ncmd(up, 'RSET')
        c = session(mx)
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        reply_is(res['dot'], code, enh, 'DATA refused upstream (%d): the client gets it' % code)
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        reply_is(res['mail'], 250, None, 'next MAIL in the session: 250, not 503 nested MAIL')
        reply_is(res['dot'], 250, None, 'next message relayed')
        ok(ncmd(up, 'RSET') > nrset, 'frontmx sent RSET before the next MAIL')
        c.quit()
    up.on_data = None
    # a client RSET or EHLO in the middle, and our own refusal of the
    # message: the upstream's MAIL is open each time
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'RCPT 250')
    reply_is(c.cmd('RSET'), 250, None, 'client RSET')
    good(c, 'after a client RSET')
    reply_is(c.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'MAIL 250')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, 'RCPT 250')
    c.ehlo('again.example')
    good(c, 'after a client EHLO')
    c.quit()


def main():
    d = tmpdir()
    up = Upstream()
    mx = Frontmx(up, conf={'timeouts': {'upstream_command': 10, 'upstream_data_end': 10}})

    early_replies(up, mx)
    bad_codes(up, mx)
    closing_421(up, mx)
    refused_data(up, mx)
    with up.lock:
        errs = list(up.errors)
    is_(errs, [], 'the upstream saw no out-of-sequence command (no nested MAIL)')
    with up.lock:
        viol = list(up.violations)
    is_(viol, [], 'the upstream saw strict CRLF framing')
    ok(mx.alive(), 'frontmx alive')
    mx.finish()

    early_in_data(d)
    early_xclient(d)
    early_xclient_pipelined(d)
    early_starttls(d)


run(main, timeout=240)
