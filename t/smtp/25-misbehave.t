#!/usr/bin/python3
# Filters fail safely: build/plugins/misbehave.so breaks the module rules
# (out-of-range verdict, CRLF in a header value, a 2xx / CRLF-injecting
# reply, a pending call never resumed, a failing init) and
# misbehave_blocking.so blocks past its timeout.  Each yields the filter's
# on_error action (default tempfail) or a refused api call, never a
# crash, a hung session, a smuggled byte or a silent accept.
# Honest headers: incoming Authentication-Results claiming our authserv_id
# are removed, in any spelling, other ones are kept.
import os
import re
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'


def body(tag):
    return b'From: alice@example.org\r\nSubject: ' + tag.encode() + b'\r\n\r\nbody line\r\n'


def mis(mode, so='misbehave', **kw):
    # delay_reject = false: these tests want the mail-phase failure acted
    # on at MAIL; 34-phase-policy.t tests it held for the recipients.
    e = {'name': 'mis', 'module': plugin(so), 'options': {'mode': mode}, 'delay_reject': False}
    opts = kw.pop('options', {})
    e['options'].update(opts)
    e.update(kw)
    return e


def session(mx):
    c = SmtpClient(mx.port, timeout=15)
    c.greeting()
    c.ehlo()
    return c


def no_mail_upstream(up, name):
    ok(not any(x.upper().startswith('MAIL') for x in up.commands()),
       name + ': nothing reached the upstream (no MAIL)')


def main():
    require_modules(plugin('misbehave'), plugin('misbehave_blocking'))

    # ---- bogus_verdict: on_mail returns 99 -> on_error (default tempfail)
    up = Upstream()
    mx = Frontmx(up, name='frontmx (bogus_verdict)', conf={'filters': [mis('bogus_verdict')]})
    c = session(mx)
    r = c.cmd('MAIL FROM:<%s>' % SENDER)
    reply_is(r, 451, None, 'bogus_verdict: MAIL gets the default on_error tempfail (451)')
    like(r.text, r'^4\.\d+\.\d+ ', 'bogus_verdict: 451 with an enhanced 4.x.x code')
    reply_is(c.cmd('NOOP'), 250, None, 'bogus_verdict: session still in step (NOOP 250)')
    r = c.cmd('MAIL FROM:<%s>' % SENDER)
    reply_is(r, 451, None, 'bogus_verdict: a second MAIL in the session: 451 again')
    c.quit()
    no_mail_upstream(up, 'bogus_verdict')
    like(mx.log(), r'filter=mis .*invalid verdict 99', 'bogus_verdict: logged with the filter name')
    ok(mx.alive(), 'bogus_verdict: daemon alive')
    mx.finish()

    # on_error = "accept": the admin chose to let it through
    up = Upstream()
    mx = Frontmx(up, name='frontmx (bogus_verdict, on_error accept)',
                 conf={'filters': [mis('bogus_verdict', on_error='accept')]})
    r = send(mx, SENDER, [RCPT], body('on_error accept'))
    reply_is(r['mail'], 250, None, 'on_error = accept: MAIL 250')
    reply_is(r['dot'], 250, None, 'on_error = accept: message relayed')
    ok(up.wait_messages(1, 5), 'on_error = accept: upstream got it')
    check_stream(up, 1, 'on_error = accept upstream')
    mx.finish()

    # on_error = "reject"
    up = Upstream()
    mx = Frontmx(up, name='frontmx (bogus_verdict, on_error reject)',
                 conf={'filters': [mis('bogus_verdict', on_error='reject')]})
    r = send(mx, SENDER, [RCPT], body('on_error reject'))
    reply_is(r['mail'], 550, None, 'on_error = reject: MAIL 550')
    no_mail_upstream(up, 'on_error = reject')
    mx.finish()

    # ---- crlf_header: add_header("X-Evil", "x\r\nBcc: evil@x") refused
    up = Upstream()
    mx = Frontmx(up, name='frontmx (crlf_header)', conf={'filters': [mis('crlf_header')]})
    original = body('crlf_header')
    r = send(mx, SENDER, [RCPT], original)
    reply_is(r['dot'], 250, None, 'crlf_header: message relayed')
    ok(up.wait_messages(1, 5), 'crlf_header: upstream got it')
    if up.messages:
        m = up.messages[0]
        is_(fields_named(m.data, 'X-Misbehave'), [b'X-Misbehave: refused\r\n'],
            'crlf_header: the core refused the edit (X-Misbehave: refused)')
        is_(fields_named(m.data, 'Bcc'), [], 'crlf_header: no injected Bcc field')
        ok(b'evil@x' not in up.all_bytes(), 'crlf_header: "evil@x" nowhere in the upstream stream')
        is_(fields_named(m.data, 'X-Evil'), [], 'crlf_header: no half X-Evil field')
        is_(m.rcpts, [RCPT], 'crlf_header: envelope unchanged (no added recipient)')
        ok(m.data.endswith(b'\r\n\r\nbody line\r\n'), 'crlf_header: body intact')
    check_stream(up, 1, 'crlf_header upstream (strict CRLF, no bare CR/LF)')
    mx.finish()

    # ---- bogus_reply: set_reply("250 ok") and a CRLF-injecting reply refused
    up = Upstream()
    mx = Frontmx(up, name='frontmx (bogus_reply)', conf={'filters': [mis('bogus_reply')]})
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'bogus_reply: MAIL 250')
    r = c.cmd('RCPT TO:<%s>' % RCPT)
    reply_is(r, 550, '5.7.1', "bogus_reply: RCPT 550 5.7.1, the core's default reply")
    is_(len(r.lines), 1, 'bogus_reply: one reply line')
    unlike(r.raw, rb'(?i)250 ok|MAIL FROM', 'bogus_reply: neither "250 ok" nor the injected MAIL line')
    r2 = c.cmd('NOOP')
    reply_is(r2, 250, '2.0.0', 'bogus_reply: the next reply is the NOOP\'s own (no extra line queued)')
    c.quit()
    allin = b''.join(d for k, d in c.transcript if k == '<')
    unlike(allin, rb'MAIL FROM:<x>', 'bogus_reply: the injected line never reached the client')
    ok(not any(x.upper().startswith('RCPT') for x in up.commands()),
       'bogus_reply: the refused recipient never reached the upstream')
    ok(b'MAIL FROM:<x>' not in up.all_bytes(), 'bogus_reply: nothing injected upstream')
    like(mx.log(), r'set_reply 2xx=-1 crlf=-1', 'bogus_reply: both set_reply() calls returned -1')
    mx.finish()

    # ---- pending_forever with timeout = 2: on_error after ~2 s
    up = Upstream()
    mx = Frontmx(up, name='frontmx (pending_forever)',
                 conf={'filters': [mis('pending_forever', timeout=2)]})
    c = session(mx)
    r = c.cmd('MAIL FROM:<%s>' % SENDER, timeout=30)
    reply_is(r, 451, None, 'pending_forever: MAIL 451 (on_error tempfail)')
    ok(wait_for(lambda: mx.log().count('filter=mis phase=mail timed out') == 1, 10),
       'pending_forever: the 451 is the 2 s filter timeout (logged)')
    # the filter timed out; the session must not now run without it
    reply_is(c.cmd('RSET'), 250, None, 'pending_forever: RSET 250')
    r = c.cmd('MAIL FROM:<%s>' % SENDER, timeout=30)
    reply_is(r, 451, None,
             'pending_forever: a second MAIL in the same session is not let through unfiltered (451)')
    if r.code == 250:
        c.cmd('RCPT TO:<%s>' % RCPT)
        c.data(body('after timeout'))
    c.quit()
    no_mail_upstream(up, 'pending_forever')
    like(mx.log(), r'filter=mis phase=mail timed out', 'pending_forever: timeout logged')
    # another session is not affected
    n = mx.log().count('filter=mis phase=mail timed out')
    c = session(mx)
    r = c.cmd('MAIL FROM:<%s>' % SENDER, timeout=30)
    ok(r.code == 451 and wait_for(lambda: mx.log().count('filter=mis phase=mail timed out') > n, 10),
       'pending_forever: a new session waits for the timeout and fails the same way')
    c.quit()
    mx.finish()

    # ---- misbehave_blocking.so mode=sleep seconds=20, timeout = 2, one worker.
    # The hook sleeps ten times the timeout: a worker it blocked could neither
    # serve another session nor answer at the timeout before the client's
    # 15 s hang guard, however loaded the machine.
    up = Upstream()
    mx = Frontmx(up, name='frontmx (blocking sleep)', conf={
        'workers': 1,
        'filters': [mis('sleep', so='misbehave_blocking', timeout=2, options={'seconds': 20})]})
    c = session(mx)
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'blocking: MAIL 250')
    reply_is(c.cmd('RCPT TO:<%s>' % RCPT), 250, None, 'blocking: RCPT 250')
    reply_is(c.cmd('DATA'), 354, None, 'blocking: DATA 354')
    c.send(dot_stuff(body('blocking')) + b'.\r\n')
    # meanwhile, on the same (only) worker, another session is served
    time.sleep(0.3)         # (lets the hook start; a later start only makes this weaker)
    c2 = SmtpClient(mx.port, timeout=15)
    g = c2.greeting()
    e = c2.ehlo()
    n = c2.cmd('NOOP')
    ok(g.code == 220 and e.code == 250 and n.code == 250,
       'blocking: another session is served while the hook sleeps')
    c2.quit()
    r = c.reply(timeout=15)
    reply_is(r, 451, None, 'blocking: end of data 451 at the 2 s timeout, not after the 20 s sleep')
    like(mx.log(), r'filter=mis phase=eom timed out', 'blocking: timeout logged')
    # the same session again: the timed-out filter must not be skipped silently
    r = c.transaction(SENDER, [RCPT], body('blocking again'))
    isnt(r['dot'].code if r['dot'] else None, 250,
         'blocking: the next message of the session is not relayed without the filter')
    c.quit()
    ok(b'Subject: blocking' not in up.all_bytes(), 'blocking: the message never reached the upstream')
    # SIGTERM while the timed-out hook still sleeps on the pool thread: the
    # late completion must not touch the worker's freed event_base
    ok(mx.alive(), 'blocking: daemon alive while the hook still sleeps')
    rc = mx.stop(timeout=40)
    is_(rc, 0, 'blocking: SIGTERM while a blocking hook is still on the pool: exit 0 '
               '(no late event_base_once() on the freed worker base)')
    mx.check_sanitizers('blocking: no sanitizer reports (leak of the late pool completion)')

    # ---- error_init and refused modes: frontmx -t fails naming the filter
    for mode, so in (('error_init', 'misbehave'), ('sleep', 'misbehave'), ('no_such_mode', 'misbehave')):
        t = Frontmx(None, name='init %s' % mode, start=False,
                    conf={'filters': [{'name': 'broken_one', 'module': plugin(so),
                                       'options': {'mode': mode}}]})
        rc, out = frontmx_t(t.conffile)
        ok(rc not in (0, None), 'mode=%s: frontmx -t fails (rc=%s)' % (mode, rc))
        like(out, r'broken_one', 'mode=%s: the message names the filter' % mode)
        no_sanitizer(out, 'mode=%s' % mode)

    # ---- forged Authentication-Results
    up = Upstream()
    mx = Frontmx(up, name='frontmx (Authentication-Results)', conf={'authserv_id': 'auth.test.example'})
    forged = [
        b'Authentication-Results: auth.test.example; spf=pass smtp.mailfrom=alice@example.org\r\n',
        b'authentication-results: AUTH.Test.Example; dkim=pass header.d=example.org\r\n',
        b'AUTHENTICATION-RESULTS: auth.test.example;\r\n\tspf=pass\r\n',
        b'Authentication-Results:\r\n auth.test.example;\r\n dmarc=pass\r\n',
        b'Authentication-Results: (forged) auth.test.example; arc=pass\r\n',
        b'Authentication-Results: auth.test.example 1; spf=pass\r\n',
        b'Authentication-Results: "auth.test.example"; iprev=pass\r\n',
    ]
    kept = [
        b'Authentication-Results: other.example; dkim=pass header.d=example.org\r\n',
        b'Authentication-Results: auth.test.example.evil; spf=pass\r\n',
        b'Authentication-Results: mx.test.example; spf=pass\r\n',
        b'X-Authentication-Results: auth.test.example; spf=pass\r\n',
    ]
    hdr = b'From: alice@example.org\r\nSubject: A-R\r\n'
    fields = []
    for i in range(max(len(forged), len(kept))):
        if i < len(forged):
            fields.append(forged[i])
        if i < len(kept):
            fields.append(kept[i])
    msg1 = hdr + b''.join(fields) + b'Message-ID: <ar@example.org>\r\n\r\nbody\r\n'
    want1 = hdr + b''.join(kept) + b'Message-ID: <ar@example.org>\r\n\r\nbody\r\n'
    r = send(mx, SENDER, [RCPT], msg1)
    reply_is(r['dot'], 250, None, 'A-R: message relayed')
    ok(up.wait_messages(1, 5), 'A-R: upstream got it')
    if up.messages:
        got = split_received(up.messages[0].data)[1]
        is_(got, want1, 'A-R: fields claiming auth.test.example removed (any case, folded, '
                        'comment, version, quoted), the others kept in order')

    # obsolete syntax: blanks between the name and the colon (RFC 5322 4.5)
    msg2 = (b'From: alice@example.org\r\nSubject: A-R obs\r\n'
            b'Authentication-Results : auth.test.example; spf=pass\r\n'
            b'Authentication-Results: other.example; spf=fail\r\n\r\nbody\r\n')
    r = send(mx, SENDER, [RCPT], msg2)
    reply_is(r['dot'], 250, None, 'A-R obs: relayed')
    # a forged field hidden behind an obsolete-syntax field of another name
    msg3 = (b'From: alice@example.org\r\nSubject: A-R behind\r\n'
            b'X-Obsolete : yes\r\n'
            b'Authentication-Results: auth.test.example; dkim=pass\r\n\r\nbody\r\n')
    r = send(mx, SENDER, [RCPT], msg3)
    reply_is(r['dot'], 250, None, 'A-R behind an obs field: relayed')
    ok(up.wait_messages(3, 5), 'A-R: upstream got all three')
    if len(up.messages) >= 3:
        d2 = up.messages[1].data
        ok(re.search(rb'(?mi)^Authentication-Results[ \t]*:[ \t]*auth\.test\.example', d2) is None,
           'A-R "Authentication-Results : auth.test.example" (space before colon) removed')
        ok(b'other.example; spf=fail' in d2, 'A-R obs: the other.example field kept')
        d3 = up.messages[2].data
        ok(re.search(rb'(?mi)^Authentication-Results[ \t]*:[ \t]*auth\.test\.example', d3) is None,
           'A-R after an obsolete-syntax "X-Obsolete : yes" field removed')
    check_stream(up, 3, 'A-R upstream')
    mx.finish()


run(main, timeout=180)
