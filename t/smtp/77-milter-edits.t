#!/usr/bin/python3
# External milters (issue 11 section 1), what they change and how they
# fail: every end-of-body edit reaches the upstream exactly (add, insert
# with Postfix's index semantics, change, delete, replace body, add and
# delete recipients, change the sender), an OpenDKIM-style value folded
# with bare LF arrives refolded with CRLF, two milters in a chain where the
# second sees the first's edits, timeouts (a silent milter costs at most
# its timeout and the message is not lost), the circuit breaker opening,
# skipping, trying again and closing with its log lines, a policy remap
# of a milter's verdict, and `frontmx -t` / `frontmx check` with milter
# entries (errors as FILE:LINE).
import os
import re
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403
from fmx_milter import *  # noqa: E402,F403

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
MSG = (b'From: alice@example.org\r\nTo: bob@example.com\r\n'
       b'Subject: hello\r\nX-Dup: one\r\nX-Dup: two\r\n\r\nbody\r\n')


def entry(m, name='av', **kw):
    e = {'name': name, 'milter': m.address if isinstance(m, ScriptedMilter) else m}
    e.update(kw)
    return e


def one(up, mx, rcpts=(RCPT,), body=MSG):
    n0 = len(up.messages)
    r = send(mx, SENDER, list(rcpts), body)
    got = None
    if r['dot'] is not None and r['dot'].code == 250 and up.wait_messages(n0 + 1):
        got = up.messages[n0]
    return r, got


def edits(up):
    cases = [
        ('add header', [add_header('X-Added', 'yes')],
         MSG.replace(b'\r\n\r\n', b'\r\nX-Added: yes\r\n\r\n', 1)),
        ('insert at 0 (top)', [insert_header(0, 'X-Top', 'first')],
         b'X-Top: first\r\n' + MSG),
        ('insert at 2', [insert_header(2, 'X-Two', 'x')],
         MSG.replace(b'Subject:', b'X-Two: x\r\nSubject:', 1)),
        ('insert past the end', [insert_header(99, 'X-End', 'e')],
         MSG.replace(b'\r\n\r\n', b'\r\nX-End: e\r\n\r\n', 1)),
        ('change index 2', [change_header(2, 'X-Dup', 'TWO')],
         MSG.replace(b'X-Dup: two', b'X-Dup: TWO')),
        ('change index 0 means 1', [change_header(0, 'x-dup', 'ONE')],
         MSG.replace(b'X-Dup: one', b'X-Dup: ONE')),
        ('delete (empty value)', [change_header(1, 'Subject', '')],
         MSG.replace(b'Subject: hello\r\n', b'')),
        ('change a missing field adds it', [change_header(1, 'X-New', 'n')],
         MSG.replace(b'\r\n\r\n', b'\r\nX-New: n\r\n\r\n', 1)),
        ('insert then change the inserted', [insert_header(0, 'X-I', 'a'), change_header(1, 'X-I', 'b')],
         b'X-I: b\r\n' + MSG),
        ('add then delete the added', [add_header('X-Gone', 'a'), change_header(1, 'X-Gone', '')], MSG),
        ('two inserts at 0 keep their order', [insert_header(0, 'X-B', 'b'), insert_header(0, 'X-A', 'a')],
         b'X-A: a\r\nX-B: b\r\n' + MSG),
        ('bare-LF folded value refolded', [insert_header(0, 'DKIM-Signature', 'v=1; a=rsa-sha256;\n\tb=abc\n\tdef')],
         b'DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\tdef\r\n' + MSG),
        ('replace body', [replace_body(b'new body\r\nline 2\r\n')],
         MSG.replace(b'body\r\n', b'new body\r\nline 2\r\n')),
    ]
    for name, script, want in cases:
        m = ScriptedMilter(script={'eom': script + [CONTINUE]})
        mx = Frontmx(up, conf={'filters': [entry(m)]})
        r, got = one(up, mx)
        reply_is(r['dot'], 250, None, '%s: 250' % name)
        is_(split_received(got.data)[1] if got else None, want, '%s: upstream got exactly the edit' % name)
        ok(got is not None and not [v for v in up.violations], '%s: nothing bare on the wire' % name)
        mx.check_sanitizers('%s: no sanitizer reports' % name)
        mx.stop()
        m.stop()
    # envelope edits
    m = ScriptedMilter(script={'eom': [add_rcpt('<carol@example.com>'), del_rcpt('<bob@example.com>'),
                                       change_from('<sender@example.net>'), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'envelope edits: 250')
    is_(got.rcpts if got else None, ['carol@example.com'], 'envelope edits: recipient added, bob deleted')
    is_(got.mail_from if got else None, 'sender@example.net', 'envelope edits: sender changed')
    like(mx.log(), r'filter changed from=<alice@example.org> to from=<sender@example.net>', 'envelope edits: logged')
    m = ScriptedMilter(script={'eom': [add_rcpt_par('<dave@example.com>', 'NOTIFY=NEVER'), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    r, got = one(up, mx)
    is_(sorted(got.rcpts) if got else None, ['bob@example.com', 'dave@example.com'],
        'add rcpt with ESMTP args: added')
    # edits refused
    for name, script in (('CRLF injection in a value', [add_header('X-A', 'v\r\nX-Evil: 1')]),
                         ('bare LF not folding', [insert_header(0, 'X-A', 'v\nX-Evil: 1')]),
                         ('body replacement mixed with a header edit', [add_header('X-A', 'v'), replace_body(b'x\r\n')]),
                         ('body with bare LF', [replace_body(b'x\ny\r\n')]),
                         ('invalid recipient', [add_rcpt('<a b@example.com>')])):
        m = ScriptedMilter(script={'eom': script + [CONTINUE]})
        mx = Frontmx(up, conf={'filters': [entry(m)]})
        n0 = len(up.messages)
        r, got = one(up, mx)
        reply_is(r['dot'], 451, None, '%s: on_error tempfail' % name)
        time.sleep(0.2)
        is_(len(up.messages), n0, '%s: nothing relayed' % name)
        ok(b'X-Evil' not in up.all_bytes(), '%s: nothing smuggled' % name)
        mx.check_sanitizers('%s: no sanitizer reports' % name)
    # an edit with no action negotiated for it
    m = ScriptedMilter(actions=ADDHDRS, script={'eom': [change_header(1, 'Subject', 'x'), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    r, got = one(up, mx)
    reply_is(r['dot'], 451, None, 'unnegotiated edit: on_error tempfail')


def chain(up):
    first = ScriptedMilter(script={'eom': [add_header('X-First', 'one'), insert_header(0, 'X-Top', 't'),
                                           CONTINUE]})
    second = ScriptedMilter(script={'eom': [change_header(1, 'X-First', 'changed by second'),
                                            change_header(1, 'X-Top', ''), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(first, 'm1'), entry(second, 'm2')]})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'chain: 250')
    ok(second.wait_all_closed(), 'chain: second milter session over')
    hdrs = second.main_session().headers()
    is_(hdrs[0], ('X-Top', 't'), "chain: the second milter sees the first's insert at the top")
    is_(hdrs[-1], ('X-First', 'one'), "chain: the second milter sees the first's added field")
    want = MSG.replace(b'\r\n\r\n', b'\r\nX-First: changed by second\r\n\r\n', 1)
    is_(split_received(got.data)[1] if got else None, want,
        "chain: upstream has the second's change of the first's field, the inserted one deleted")
    # the first refuses: the second never sees the message content
    first = ScriptedMilter(script={'eom': [REJECT]})
    second = ScriptedMilter()
    mx = Frontmx(up, conf={'filters': [entry(first, 'm1'), entry(second, 'm2')]})
    r, got = one(up, mx)
    reply_is(r['dot'], 550, '5.7.1', 'chain: the first milter rejects')
    ok(second.wait_all_closed(), 'chain: second session over')
    ok('L' not in second.main_session().cmds(), 'chain: the second milter got no content')
    # the second's edits would pass the message's limit (64 header edits):
    # none of them applies, on_error accept relays the first's alone
    first = ScriptedMilter(script={'eom': [add_header('X-One-%d' % i, 'v') for i in range(30)] + [CONTINUE]})
    second = ScriptedMilter(script={'eom': [add_header('X-Two-%d' % i, 'v') for i in range(40)] + [CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(first, 'm1'), entry(second, 'm2', on_error='accept')]})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'chain over the edit limit, on_error accept: 250')
    ok(got is not None and got.data.count(b'X-One-') == 30 and b'X-Two-' not in got.data,
       "chain over the edit limit: the first's 30 fields, none of the second's")
    like(mx.log(), r'milter [^ ]+: more header or recipient edits than a message takes', 'chain over the edit limit: logged')
    # a body replaced by the first is what the second reads
    first = ScriptedMilter(script={'eom': [replace_body(b'replaced\r\n'), CONTINUE]})
    second = ScriptedMilter()
    mx = Frontmx(up, conf={'filters': [entry(first, 'm1'), entry(second, 'm2')]})
    r, got = one(up, mx)
    ok(second.wait_all_closed(), 'chain: second session over (body)')
    is_(second.main_session().body, b'replaced\r\n', "chain: the second milter reads the first's body")


def timeouts(up):
    for stage, t in (('connect', 'command'), ('rcpt', 'command'), ('header', 'content'),
                     ('body', 'content'), ('eom', 'content')):
        m = ScriptedMilter(script={stage: HANG})
        mx = Frontmx(up, conf={'filters': [entry(m, timeouts={'connect': 2, 'command': 2, 'content': 2})]})
        n0 = len(up.messages)
        r, got = one(up, mx)
        codes = [x.code for x in [r['mail']] + r['rcpt'] + ([r['dot']] if r['dot'] else [])]
        ok(any(c // 100 == 4 for c in codes) and 250 not in codes[-1:],
           'hang at %s: the client gets a 4xx (%s)' % (stage, codes))
        like(mx.log(), r'filter=av milter [^ ]+: no answer within 2s', 'hang at %s: timeout logged' % stage)
        ok(mx.alive(), 'hang at %s: daemon up' % stage)
        is_(len(up.messages), n0, 'hang at %s: nothing relayed' % stage)
        ok(m.wait_all_closed(), 'hang at %s: frontmx closed the milter connection' % stage)
        mx.check_sanitizers('hang at %s: no sanitizer reports' % stage)
        mx.stop()
        m.stop()
    # a milter that stops reading in the middle of a big body it never answers (NR_BODY)
    m = ScriptedMilter(protocol=NR_BODY | NR_HDR, script={'body': STALL})
    mx = Frontmx(up, conf={'filters': [entry(m, timeouts={'content': 2})]})
    n0 = len(up.messages)
    r, got = one(up, mx, body=b'Subject: big\r\n\r\n' + (b'b' * 998 + b'\r\n') * 900)
    reply_is(r['dot'], 451, None, 'stalled reader: 451')
    like(mx.log(), r'filter=av milter [^ ]+: no answer within 2s', 'stalled reader: timeout logged')
    is_(len(up.messages), n0, 'stalled reader: nothing relayed')
    m.stop()
    # on_error = quarantine keeps the message
    q = tmpdir('fmx-milter-q-')
    m = ScriptedMilter(script={'eom': HANG})
    mx = Frontmx(up, conf={'filters': [entry(m, on_error='quarantine', timeouts={'content': 1})],
                           'quarantine': {'directory': q}})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'hang, on_error quarantine: 250')
    ok(wait_for(lambda: [f for dp, dn, fn in os.walk(q) for f in fn], 5), 'hang, on_error quarantine: kept in the quarantine')
    # the chain's own timeout, when set, also bounds a milter
    m = ScriptedMilter(script={'eom': HANG})
    mx = Frontmx(up, conf={'filters': [entry(m, timeout=1)]})
    r, got = one(up, mx)
    reply_is(r['dot'], 451, None, 'timeout = 1 on a hanging milter: 451')


def metric(port, kind):
    """frontmx_filter_errors_total{filter="av",kind=KIND} from GET /metrics."""
    import socket
    s = socket.create_connection(('127.0.0.1', port), timeout=5)
    s.sendall(b'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n')
    data = b''
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    m = re.search(rb'^frontmx_filter_errors_total\{filter="av",kind="' + kind.encode() + rb'"\} (\S+)$',
                  data, re.M)
    return float(m.group(1)) if m else 0.0


def breaker(up):
    m = ScriptedMilter(refuse=True)
    mport = free_port()
    mx = Frontmx(up, conf={'filters': [entry(m, breaker={'failures': 2, 'open': 3})],
                           'metrics': {'listen': '127.0.0.1:%d' % mport}})
    for i in range(2):
        r, got = one(up, mx)
        reply_is(r['rcpt'][0], 451, '4.7.1', 'breaker: milter down, session %d gets 451' % (i + 1))
    ok(wait_for(lambda: 'circuit breaker open for 3s after 2 failures in a row' in mx.log(), 5),
       'breaker: opening logged')
    r, got = one(up, mx)
    reply_is(r['rcpt'][0], 451, '4.7.1', 'breaker: open, on_error at once')
    like(mx.log(), r'milter [^ ]+ skipped: circuit breaker open', 'breaker: the skip is logged')
    # (the harness's probe of the port may be a failure or a skip of its own)
    err, skipped = metric(mport, 'error'), metric(mport, 'circuit-open')
    ok(err >= 2 and skipped >= 1 and err + skipped in (3.0, 4.0),
       'metrics: frontmx_filter_errors_total{filter="av"} kind="error" (%s) and kind="circuit-open" (%s)'
       % (err, skipped))
    m.listen()
    time.sleep(3.2)
    n0 = len(m.sessions)
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'breaker: after open seconds, one trial session passes')
    ok(wait_for(lambda: 'circuit breaker half-open' in mx.log() and 'circuit breaker closed' in mx.log(), 5),
       'breaker: half-open and closed logged')
    ok(len(m.sessions) > n0, 'breaker: the trial reached the milter')
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'breaker: closed, milter used again')
    # a trial that fails opens it again
    m2 = ScriptedMilter(script={'connect': [TEMPFAIL]}, version=7)
    mx = Frontmx(up, conf={'filters': [entry(m2, breaker={'failures': 1, 'open': 1})]})
    one(up, mx)
    ok(wait_for(lambda: 'after 1 failures in a row' in mx.log(), 5), 'breaker: failures = 1 opens after one')
    time.sleep(1.2)
    one(up, mx)
    ok(wait_for(lambda: 'open again for 1s: the trial failed' in mx.log(), 5), 'breaker: a failed trial reopens it')
    mx.check_sanitizers('breaker: no sanitizer reports')


def policy(up):
    q = tmpdir('fmx-milter-q-')
    m = ScriptedMilter(script={'eom': [reply('554 5.7.1 virus found')]})
    mx = Frontmx(up, conf={'filters': [entry(m)], 'quarantine': {'directory': q},
                           'policy': {'default': {'av': {'reject': 'quarantine'}}}})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'policy remap reject -> quarantine: 250')
    ok(wait_for(lambda: [f for dp, dn, fn in os.walk(q) for f in fn], 5), 'policy remap: quarantined')
    m = ScriptedMilter()
    mx = Frontmx(up, conf={'filters': [entry(m)], 'policy': {'default': {'av': {'continue': 'tag'}}}})
    r, got = one(up, mx)
    ok(got is not None and b'X-Frontmx-Tag: av=continue' in got.data, 'policy: a pass named continue can be mapped (tag)')
    m = ScriptedMilter(script={'eom': [REJECT]})
    mx = Frontmx(up, conf={'filters': [entry(m, dry_run=True)]})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'dry_run: reject only logged, relayed')
    ok(got is not None and b'av=reject (dry-run: would reject)' in got.data, 'dry_run: tagged')


def config(up):
    d = tmpdir('fmx-milter-conf-')
    m = ScriptedMilter()
    good = Frontmx(up, start=False, conf={'filters': [entry(m, timeouts={'connect': 5, 'command': 10, 'content': 60},
                                                            breaker={'failures': 3, 'open': 30}),
                                                      entry('unix:/run/x.sock', 'x2'),
                                                      entry('inet:[::1]:8891', 'x3')],
                                          'policy': {'default': {'av': {'reject': 'tag'}}}})
    rc, out = frontmx_t(good.conffile)
    is_(rc, 0, 'frontmx -t accepts milter entries: %s' % out.strip()[:200])
    bad = [
        ('bad address', {'milter': 'tcp:1.2.3.4:1'}, 'expected unix:PATH'),
        ('no port', {'milter': 'inet:127.0.0.1'}, 'no :PORT'),
        ('port 0', {'milter': 'inet:127.0.0.1:0'}, 'bad host or port'),
        ('relative unix path', {'milter': 'unix:x.sock'}, 'must be absolute'),
        ('unknown timeouts key', {'milter': 'inet:127.0.0.1:1', 'timeouts': {'reply': 3}}, 'reply'),
        ('timeouts without milter', {'timeouts': {'connect': 3}}, 'timeouts and breaker are for a milter'),
        ('breaker open 0', {'milter': 'inet:127.0.0.1:1', 'breaker': {'open': 0}}, 'breaker.open'),
        ('module and milter', {'milter': 'inet:127.0.0.1:1', 'module': '/x.so'}, 'exclude each other'),
    ]
    for name, kw, why in bad:
        e = {'name': 'spf' if 'milter' not in kw else 'av'}
        e.update(kw)
        t = Frontmx(up, start=False, conf={'filters': [e]})
        rc, out = frontmx_t(t.conffile)
        ok(rc not in (0, None), '-t refuses %s' % name)
        like(out, re.escape(t.conffile) + r':\d+: .*' + re.escape(why), '-t: %s: FILE:LINE: %s' % (name, why))
    t = Frontmx(up, start=False, conf={'filters': [entry(m)], 'policy': {'default': {'av': {'rejct': 'tag'}}}})
    rc, out = frontmx_t(t.conffile)
    like(out, r"unknown result 'rejct'.*did you mean 'reject'", '-t: a milter policy group checks result names')
    # frontmx check runs the milter too
    m = ScriptedMilter(script={'eom': [reply('550 5.7.1 check says no')]})
    t = Frontmx(up, start=False, conf={'filters': [entry(m)]})
    rc, outp, err = frontmx_check(t.conffile, helo='client.example', sender=SENDER, rcpts=[RCPT], message=MSG)
    like(outp + err, r'550 5\.7\.1 check says no', 'frontmx check: the milter verdict is shown')
    no_sanitizer(outp + err, 'frontmx check: no sanitizer reports')


def attacks(up):
    # the client goes away while the milter still owes its answer
    m = ScriptedMilter(script={'eom': HANG})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    c.cmd('RCPT TO:<%s>' % RCPT)
    c.cmd('DATA')
    c.send(MSG + b'.\r\n')
    ok(wait_for(lambda: 'E' in (m.main_session(0.1) or MilterSession()).cmds(), 5), 'gone client: EOB reached the milter')
    c.vanish()
    ok(m.wait_all_closed(), 'gone client: frontmx closed the milter connection')
    time.sleep(0.3)
    ok(mx.alive(), 'gone client: daemon up')
    mx.check_sanitizers('gone client: no sanitizer reports')
    # replies trickled one octet at a time, packets split anywhere
    m = ScriptedMilter(script={'rcpt': [Trickle(CONTINUE)], 'eom': [Trickle(add_header('X-T', 'slow')),
                                                                    Trickle(CONTINUE)]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    r, got = one(up, mx)
    reply_is(r['dot'], 250, None, 'trickled replies: 250')
    ok(got is not None and b'X-T: slow\r\n' in got.data, 'trickled replies: the edit applied')
    # two answers to one event in one write (rspamd's y then r): the second
    # is out of step (one arriving after the next event went out cannot be
    # told from that event's answer, in Postfix either)
    m = ScriptedMilter(script={'rcpt': [reply('550 5.7.1 first answer') + REJECT]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    n0 = len(up.messages)
    r = send(mx, SENDER, [RCPT, 'carol@example.com'], MSG)
    reply_is(r['rcpt'][0], 550, '5.7.1', 'y then r: the first answer is the reply')
    reply_is(r['rcpt'][1], 451, '4.7.1', 'y then r: the extra packet is a protocol error, on_error next')
    like(mx.log(), r'milter [^ ]+: reply nobody asked for', 'y then r: logged')
    is_(len(up.messages), n0, 'y then r: nothing relayed')
    # closed during negotiation
    m = ScriptedMilter(negotiate=lambda s, d: b'')
    m.script = {}
    mx = Frontmx(up, conf={'filters': [entry(m, timeouts={'command': 2})]})
    r, got = one(up, mx)
    reply_is(r['rcpt'][0], 451, '4.7.1', 'no OPTNEG answer: 451 at RCPT')
    # HDR_LEADSPC: the value keeps its leading space
    m = ScriptedMilter(protocol=HDR_LEADSPC, script={'eom': [add_header('X-L', ' lead'), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    r, got = one(up, mx)
    is_(m.main_session().headers()[0], ('From', ' alice@example.org'), 'HDR_LEADSPC: the leading space is sent')
    ok(got is not None and b'\r\nX-L: lead\r\n' in got.data, 'HDR_LEADSPC: an edit keeps one space')
    # SIGHUP in the middle of a session: it finishes on its own chain
    m = ScriptedMilter(script={'eom': [add_header('X-Old', 'chain'), CONTINUE]})
    mx = Frontmx(up, conf={'filters': [entry(m)]})
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    m2 = ScriptedMilter(script={'eom': [add_header('X-New', 'chain'), CONTINUE]})
    mx.write_conf(conf={'filters': [entry(m2)]})
    mx.hup()
    ok(wait_for(lambda: 'reload' in mx.log() or 'configuration' in mx.log(), 5), 'SIGHUP: reloaded')
    n0 = len(up.messages)
    t = c.transaction(SENDER, [RCPT], MSG)
    c.quit()
    reply_is(t['dot'], 250, None, 'SIGHUP mid-session: the message goes on')
    ok(up.wait_messages(n0 + 1) and b'X-Old: chain' in up.messages[n0].data,
       'SIGHUP mid-session: the session kept its milter')
    r, got = one(up, mx)
    ok(got is not None and b'X-New: chain' in got.data, 'SIGHUP: a new session uses the new milter')
    mx.check_sanitizers('attacks: no sanitizer reports')


def main():
    up = Upstream()
    attacks(up)
    edits(up)
    chain(up)
    timeouts(up)
    breaker(up)
    policy(up)
    config(up)


if __name__ == '__main__':
    run(main, timeout=300)
