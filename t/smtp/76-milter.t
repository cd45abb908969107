#!/usr/bin/python3
# External milters in the filter chain, the protocol (issue 11 section 1),
# against t/lib/fmx_milter.py's raw scripted milter: negotiation (version
# 6 offered with every action; an older version accepted and its missing
# events not sent; a higher version or unoffered actions refused with
# on_error; NR_*/NO* flags honoured even unoffered; SETSYMLIST), the macros
# of each stage, the events in order with their content (connect family
# and port, ESMTP args, headers without our Received and without the
# leading space, multi-line joined with LF, body in chunks of at most
# 65535 with an empty EOB, ABORT between messages, QUIT at the end), every
# reply kind end to end, and protocol errors ending in on_error.
import os
import re
import struct
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403
from fmx_milter import *  # noqa: E402,F403
from fmx_tls import TlsClient, client_ctx, frontmx_listeners, listener, make_cert  # noqa: E402

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
MSG = (b'From: alice@example.org\r\nTo: bob@example.com\r\n'
       b'Subject: hello\r\nX-Folded: first\r\n second line\r\n'
       b'X-Empty:\r\n\r\nbody line 1\r\nbody line 2\r\n')


def milter_entry(m, name='av', **kw):
    e = {'name': name, 'milter': m.address if isinstance(m, ScriptedMilter) else m}
    e.update(kw)
    return e


def start(up, *entries, conf=None):
    c = {'filters': list(entries)}
    c.update(conf or {})
    return Frontmx(up, conf=c)


def session(mx, msgs, helo='client.example', params=' SIZE=100'):
    """One SMTP session: each msg is (rcpts, body); returns the transactions."""
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo(helo)
    res = [c.transaction(SENDER, rcpts, body, params=params) for rcpts, body in msgs]
    res.append(c.local_port())
    c.quit()
    c.close()
    return res


def basic_flow(up):
    m = ScriptedMilter()
    mx = start(up, milter_entry(m))
    big = b'x' * 76 + b'\r\n'
    bigbody = big * 1800                      # 140400 octets: three chunks
    n0 = len(up.messages)
    res = session(mx, [([RCPT, 'carol@example.com'], MSG),
                       ([RCPT], b'Subject: big\r\n\r\n' + bigbody)])
    port = res[-1]
    reply_is(res[0]['dot'], 250, None, 'basic: first message relayed')
    reply_is(res[1]['dot'], 250, None, 'basic: big message relayed')
    ok(up.wait_messages(n0 + 2), 'basic: upstream got both messages')
    ok(m.wait_all_closed(), 'basic: milter connection closed at the end of the session')
    # (the harness's probe of the listening port was a session too)
    ok(len([x for x in m.sessions if 'H' in x.cmds()]) == 1, 'basic: one milter connection for the SMTP session')
    s = m.main_session()
    is_(s.optneg, (6, 0x1ff, s.optneg[2] if s.optneg else None), 'basic: OPTNEG offers version 6 and actions 0x1ff')
    ok(s.optneg and s.optneg[2] & NR_ALL == NR_ALL and s.optneg[2] & SKIP and
       s.optneg[2] & HDR_LEADSPC, 'basic: OPTNEG offers every NR flag, SKIP and HDR_LEADSPC')
    cmds = s.cmds()
    like(cmds, r'^ODCDHDMDRDRDTL{5}DNBDE', 'basic: first message events in order, D before each')
    like(cmds, r'DEADMDRDTLDNBBBDEQ$', 'basic: ABORT before the second MAIL, three body chunks, QUIT at the end')
    ev = dict((c.decode(), v) for c, v in s.events if c in (b'C', b'H'))
    name = [d for st, d in s.macro_log if st == 'C'][0].get('{client_name}')
    is_(ev.get('C'), {'host': '[127.0.0.1]' if name in (None, 'unknown') else name,
                      'family': '4', 'port': port, 'addr': '127.0.0.1'},
        'basic: CONNECT has [addr], family 4, the client port and the address')
    is_(ev.get('H'), 'client.example', 'basic: HELO name')
    mails = [v for c, v in s.events if c == b'M']
    is_(mails[0], ['<alice@example.org>', 'SIZE=100'], 'basic: MAIL with its ESMTP argument')
    rcpts = [v for c, v in s.events if c == b'R']
    is_(rcpts[:2], [['<bob@example.com>'], ['<carol@example.com>']], 'basic: each RCPT')
    hdrs = s.headers()
    is_(hdrs[:5], [('From', 'alice@example.org'), ('To', 'bob@example.com'),
                   ('Subject', 'hello'), ('X-Folded', 'first\n second line'), ('X-Empty', '')],
        'basic: headers without our Received, one leading space removed, folds joined with LF')
    bodies = [v for c, v in s.events if c == b'B']
    is_(bodies[0], b'body line 1\r\nbody line 2\r\n', 'basic: body of the first message')
    ok(all(len(b) <= 65535 for b in bodies), 'basic: no body chunk over 65535 octets')
    is_(b''.join(bodies[1:]), bigbody, 'basic: the big body arrives whole in chunks')
    is_([len(b) for b in bodies[1:]], [65535, 65535, len(bigbody) - 2 * 65535], 'basic: chunks of 65535')
    eobs = [v for c, v in s.events if c == b'E']
    is_(eobs, [b'', b''], 'basic: EOB packets are empty')
    # macros per stage (Postfix names and defaults)
    mc = [(st, d) for st, d in s.macro_log]
    conn = mc[0][1]
    is_(mc[0][0], 'C', 'macros: the first D is the connect stage')
    is_(conn.get('j'), 'mx.test.example', 'macros: j is our hostname')
    is_(conn.get('{daemon_name}'), 'mx.test.example', 'macros: {daemon_name}')
    is_(conn.get('{daemon_addr}'), '127.0.0.1', 'macros: {daemon_addr}')
    ok('v' in conn and conn.get('_') == '%s [127.0.0.1]' % name, 'macros: v and _')
    is_(conn.get('{client_addr}'), '127.0.0.1', 'macros: {client_addr}')
    is_(conn.get('{client_port}'), str(port), 'macros: {client_port}')
    mailm = [d for st, d in mc if st == 'M'][0]
    like(mailm.get('i', ''), r'^[0-9a-f]{16}\.\d+$', 'macros: i (queue id) from MAIL on')
    is_((mailm.get('{mail_addr}'), mailm.get('{mail_host}'), mailm.get('{mail_mailer}')),
        ('alice@example.org', 'example.org', 'smtp'), 'macros: {mail_addr} {mail_host} {mail_mailer}')
    rcptm = [d for st, d in mc if st == 'R']
    is_([(d.get('{rcpt_addr}'), d.get('{rcpt_host}')) for d in rcptm[:2]],
        [('bob@example.com', 'example.com'), ('carol@example.com', 'example.com')],
        'macros: {rcpt_addr} {rcpt_host} per recipient')
    ok(all(d.get('i') == mailm.get('i') for st, d in mc[:8] if st in 'RTNE'),
       'macros: i in the RCPT, DATA, EOH and EOM stages')
    # nothing changed upstream
    got = split_received(up.messages[n0].data)[1]
    is_(got, MSG, 'basic: the message reaches the upstream unchanged')
    mx.check_sanitizers('basic: no sanitizer reports')


def negotiation(up):
    # an older version: no DATA event (version 2 has none)
    m = ScriptedMilter(version=2)
    mx = start(up, milter_entry(m))
    n0 = len(up.messages)
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 250, None, 'v2 milter: message relayed')
    ok(m.wait_all_closed(), 'v2 milter: session over')
    ok('T' not in m.main_session().cmds(), 'v2 milter: no DATA event sent')
    ok(up.wait_messages(n0 + 1), 'v2 milter: upstream got it')
    # refused: a higher version, unoffered actions
    for name, kw, why in (('higher version', {'version': 7}, 'unsupported protocol version'),
                          ('unoffered actions', {'actions': 0x3ff}, 'actions that were not offered')):
        m = ScriptedMilter(**kw)
        mx = start(up, milter_entry(m))
        n0 = len(up.messages)
        res = session(mx, [([RCPT], MSG)])
        reply_is(res[0]['rcpt'][0], 451, '4.7.1', '%s: on_error tempfail at RCPT' % name)
        like(mx.log(), r'filter=av milter inet:127\.0\.0\.1:\d+: negotiation refused: .*' + why,
             '%s: logged with the reason' % name)
        ok(m.wait_all_closed(), '%s: milter connection closed' % name)
        is_(len(up.messages), n0, '%s: nothing relayed' % name)
        ok(mx.alive(), '%s: daemon up' % name)
    # on_error = accept: the milter is skipped
    m = ScriptedMilter(version=7)
    mx = start(up, milter_entry(m, on_error='accept'))
    n0 = len(up.messages)
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 250, None, 'on_error accept: the message goes on without the milter')
    # NR flags, even ones not offered: the milter never answers those events
    flags = NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_DATA | NR_HDR | NR_EOH | NR_BODY | NR_UNKN
    m = ScriptedMilter(protocol=flags)
    mx = start(up, milter_entry(m, timeouts={'command': 5, 'content': 5}))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 250, None, 'NR flags: relayed (no reply awaited)')
    unlike(mx.log(), r'no answer within', 'NR flags: no event waited for a reply that never comes')
    # NO flags: the events go, the macros still go
    m = ScriptedMilter(protocol=NOHELO | NOHDRS | NOBODY | NOEOH)
    mx = start(up, milter_entry(m))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 250, None, 'NO flags: relayed')
    ok(m.wait_all_closed(), 'NO flags: session over')
    cmds = m.main_session().cmds()
    like(cmds, r'^ODCDDMDRDTDDEQ$', 'NO flags: no HELO, header, EOH or body events; their macros still sent')
    # SETSYMLIST replaces the default lists
    m = ScriptedMilter(symlists={M_CONNECT: 'j', M_ENVFROM: '{mail_addr} {client_addr} i',
                                 M_EOM: '{rcpt_addr} i'})
    mx = start(up, milter_entry(m))
    res = session(mx, [([RCPT], MSG)])
    ok(m.wait_all_closed(), 'SETSYMLIST: session over')
    log = m.main_session().macro_log
    is_(list(log[0][1].keys()), ['j'], 'SETSYMLIST: connect stage sends only j')
    mm = [d for st, d in log if st == 'M'][0]
    is_(sorted(mm.keys()), ['i', '{client_addr}', '{mail_addr}'], 'SETSYMLIST: MAIL stage list replaced')
    em = [d for st, d in log if st == 'E'][0]
    is_(list(em.keys()), ['i'], 'SETSYMLIST: unknown value at EOM omitted, i kept')
    # the milter is down: on_error, and the daemon answers
    m = ScriptedMilter(refuse=True)
    mx = start(up, milter_entry(m))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['rcpt'][0], 451, '4.7.1', 'milter down: 451 at RCPT')
    like(mx.log(), r'milter inet:127\.0\.0\.1:\d+: cannot connect', 'milter down: logged')
    # inet:[IPv6]:PORT
    m = ScriptedMilter(host='::1', script={'eom': [reply('550 5.7.1 v6 says no')]})
    mx = start(up, milter_entry(m))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 550, '5.7.1', 'inet:[::1]:PORT: the milter on IPv6 loopback answers')
    # a UNIX socket that is not there: refused at once, on_error accept lets it through
    d = tmpdir('fmx-milter-')
    mx = start(up, milter_entry('unix:' + os.path.join(d, 'none.sock'), on_error='accept'))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 250, None, 'missing UNIX socket, on_error accept: relayed')
    like(mx.log(), r'milter unix:[^ ]+: cannot connect', 'missing UNIX socket: logged')
    mx = start(up, milter_entry('unix:' + os.path.join(d, 'none.sock')))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['rcpt'][0], 451, '4.7.1', 'missing UNIX socket, on_error tempfail: 451 at RCPT')
    # a UNIX socket
    m = ScriptedMilter(unix=os.path.join(d, 'm.sock'), script={'eom': [reject_text('550 5.7.1 unix says no')]})
    mx = start(up, milter_entry(m))
    res = session(mx, [([RCPT], MSG)])
    reply_is(res[0]['dot'], 550, '5.7.1', 'unix: the milter on a UNIX socket answers')
    mx.check_sanitizers('negotiation: no sanitizer reports')


def reject_text(text):
    return reply(text)


def replies(up, qdir):
    cases = [
        # name, script, checks(res)
        ('reject at rcpt', {'rcpt': lambda s, d: [REJECT] if b'bob' in d else [CONTINUE]},
         lambda r: (reply_is(r['rcpt'][0], 550, '5.7.1', 'reject at rcpt: 550 5.7.1 for that recipient'),
                    reply_is(r['rcpt'][1], 250, None, 'reject at rcpt: the other recipient accepted'),
                    reply_is(r['dot'], 250, None, 'reject at rcpt: message for the other relayed'))),
        ('tempfail at mail', {'mail': [TEMPFAIL]},
         lambda r: (reply_is(r['mail'], 250, None, 'tempfail at mail: MAIL 250 (delay_reject)'),
                    reply_is(r['rcpt'][0], 451, '4.7.1', 'tempfail at mail: RCPT 451 4.7.1'))),
        ('reject at eom', {'eom': [REJECT]},
         lambda r: reply_is(r['dot'], 550, '5.7.1', 'reject at eom: 550 5.7.1')),
        ('tempfail at eom', {'eom': [TEMPFAIL]},
         lambda r: reply_is(r['dot'], 451, '4.7.1', 'tempfail at eom: 451 4.7.1')),
        ('shutdown at eom', {'eom': [SHUTDOWN]},
         lambda r: reply_is(r['dot'], 421, None, 'shutdown at eom: 421')),
        ('custom reply', {'eom': [reply('554 5.7.1 100%% spam')]},
         lambda r: (reply_is(r['dot'], 554, '5.7.1', 'custom reply: its code'),
                    like(r['dot'].text, r'100% spam$', 'custom reply: %% becomes %'))),
        ('custom multi-line', {'eom': [reply('451-4.7.1 first\r\n451 4.7.1 second')]},
         lambda r: (reply_is(r['dot'], 451, '4.7.1', 'custom multi-line: 451'),
                    is_(len(r['dot'].lines) if r['dot'] else 0, 2, 'custom multi-line: two lines'))),
        ('custom at rcpt', {'rcpt': [reply('550 5.1.1 no such user')]},
         lambda r: (reply_is(r['rcpt'][0], 550, '5.1.1', 'custom at rcpt: the milter reply'),)),
        ('discard', {'eom': [DISCARD]},
         lambda r: reply_is(r['dot'], 250, None, 'discard: 250 to the client')),
        ('accept at connect', {'connect': [ACCEPT], 'eom': [REJECT]},
         lambda r: reply_is(r['dot'], 250, None, 'accept at connect: nothing more asked, relayed')),
        ('quarantine then continue', {'eom': [quarantine('looks bad'), CONTINUE]},
         lambda r: reply_is(r['dot'], 250, None, 'quarantine: 250 (kept, not relayed)')),
        ('progress', {'eom': [PROGRESS, PROGRESS, CONTINUE]},
         lambda r: reply_is(r['dot'], 250, None, 'progress packets then continue: relayed')),
        ('skip in body', {'body': [SKIPPKT]},
         lambda r: reply_is(r['dot'], 250, None, 'skip: relayed')),
    ]
    for name, script, check in cases:
        m = ScriptedMilter(script=script)
        mx = start(up, milter_entry(m), conf={'quarantine': {'directory': qdir}})
        n0 = len(up.messages)
        body = MSG if name != 'skip in body' else b'Subject: s\r\n\r\n' + b'y' * 76 + b'\r\n' * 1 + (b'z' * 78 + b'\r\n') * 2000
        r = session(mx, [([RCPT, 'carol@example.com'], body)])[0]
        check(r)
        ok(mx.alive(), '%s: daemon up' % name)
        ok(m.wait_all_closed(), '%s: milter session ended' % name)
        s = m.main_session()
        if name == 'discard' or name.startswith('quarantine'):
            time.sleep(0.3)
            is_(len(up.messages), n0, '%s: nothing relayed' % name)
        if name == 'quarantine then continue':
            files = [f for dp, dn, fn in os.walk(qdir) for f in fn]
            ok(len(files) >= 1, 'quarantine: the message is in the quarantine')
            like(mx.log(), r'milter quarantine: looks bad', 'quarantine: reason logged')
        if name == 'accept at connect':
            is_(s.event_cmds(), 'OCQ', 'accept at connect: no event after CONNECT (QUIT at the end)')
        if name == 'skip in body':
            is_(len([1 for c, v in s.events if c == b'B']), 1, 'skip: no body chunk after the skip')
            ok(s.cmds().endswith('DEQ'), 'skip: EOB follows')
        mx.check_sanitizers('%s: no sanitizer reports' % name)


def protocol_errors(up):
    bad = [
        ('edit before eob', {'rcpt': [add_header('X-A', 'b'), CONTINUE]}, 'message edit before end of body'),
        ('unknown reply code', {'helo': [pkt('Z')]}, 'unknown reply code 0x5a'),
        ('continue with data', {'mail': [pkt('c', b'junk')]}, 'reply with unexpected data'),
        ('oversized packet', {'rcpt': [struct.pack('!I', 0x7fffffff) + b'c']}, 'packet length 0 or over the bound'),
        ('zero length packet', {'rcpt': [struct.pack('!I', 0)]}, 'packet length 0 or over the bound'),
        ('truncated then close', {'rcpt': lambda s, d: [b'\x00\x00\x00\x10cab']}, None),
        ('close mid-body', {'body': CLOSE}, 'connection closed by the milter'),
        ('custom reply 2xx', {'eom': [reply('250 2.0.0 fine')]}, 'invalid custom reply'),
        ('custom reply with CRLF inside', {'eom': [reply('550 5.7.1 a\r\nX-Evil: 1')]}, 'invalid custom reply'),
        ('custom reply class mismatch', {'eom': [reply('550 4.7.1 bad class')]}, 'invalid custom reply'),
        ('discard at connect', {'connect': [DISCARD]}, 'discard at connect or HELO'),
        ('skip outside body', {'mail': [SKIPPKT]}, 'skip outside the body'),
        ('header edit with CRLF', {'eom': [add_header('X-A', 'v\r\nX-Evil: 1'), CONTINUE]},
         'header edit with an invalid name'),
        ('header edit with bare CR', {'eom': [add_header('X-A', 'v\rX'), CONTINUE]},
         'header edit with an invalid name'),
        ('header name with colon', {'eom': [add_header('X:A', 'v'), CONTINUE]},
         'header edit with an invalid name'),
        ('10000 add-header replies', {'eom': [add_header('X-Many', 'v')] * 10000 + [CONTINUE]},
         'too many edits'),
    ]
    for name, script, why in bad:
        m = ScriptedMilter(script=script)
        mx = start(up, milter_entry(m, timeouts={'command': 3, 'content': 3}))
        n0 = len(up.messages)
        r = session(mx, [([RCPT], MSG)])[0]
        codes = [x.code for x in [r['mail']] + r['rcpt'] + [r['dot']] if x is not None]
        ok(any(400 <= c < 500 for c in codes) and 250 not in codes[-1:] and
           (r['dot'] is None or r['dot'].code != 250),
           '%s: on_error tempfail, the client gets a 4xx (%s)' % (name, codes))
        time.sleep(0.2)
        is_(len(up.messages), n0, '%s: nothing relayed' % name)
        if why:
            like(mx.log(), r'filter=av milter [^ ]+: ' + re.escape(why), '%s: logged' % name)
        like(mx.log(), r'filter=av phase=\w+ failed, on_error=tempfail', '%s: on_error applied' % name)
        ok(m.wait_all_closed(), '%s: frontmx closed the milter connection' % name)
        ok(mx.alive(), '%s: daemon up' % name)
        mx.check_sanitizers('%s: no sanitizer reports' % name)
        mx.stop()
        m.stop()


def rset(up):
    m = ScriptedMilter()
    mx = start(up, milter_entry(m))
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    c.cmd('RCPT TO:<%s>' % RCPT)
    reply_is(c.cmd('RSET'), 250, None, 'rset: 250')
    t = c.transaction(SENDER, [RCPT], MSG)
    reply_is(t['dot'], 250, None, 'rset: the next message relayed')
    c.quit()
    is_(m.main_session().event_cmds(), 'OCHMRAMRTLLLLLNBEQ',
        'rset: ABORT at RSET, one only, then the next message and QUIT')


def tls_macros(up):
    certs = make_cert(tmpdir('fmx-milter-tls-'), 'mx.test.example')
    m = ScriptedMilter()
    mx = frontmx_listeners(up, [listener(tls='starttls', certs=certs)],
                           conf={'filters': [milter_entry(m)]})
    c = TlsClient(mx.port)
    c.greeting()
    c.ehlo('plain.example')
    r, err = c.starttls(client_ctx(), 'mx.test.example')
    ok(err is None, 'tls: handshake (%s)' % err)
    c.ehlo('tls.example')
    t = c.transaction(SENDER, [RCPT], MSG)
    reply_is(t['dot'], 250, None, 'tls: relayed')
    version, cipher = c.tls_version(), c.cipher()[0]
    c.quit()
    s = m.main_session()
    helos = [d for st, d in s.macro_log if st == 'H']
    is_(len(helos), 2, 'tls: a HELO event for each EHLO')
    is_(helos[0], {}, 'tls: no TLS macros before STARTTLS')
    is_((helos[-1].get('{tls_version}'), helos[-1].get('{cipher}')), (version, cipher),
        'tls: {tls_version} and {cipher} after STARTTLS')
    mx.check_sanitizers('tls: no sanitizer reports')


def main():
    up = Upstream()
    rset(up)
    tls_macros(up)
    qdir = tmpdir('fmx-milter-q-')
    basic_flow(up)
    negotiation(up)
    replies(up, qdir)
    protocol_errors(up)


if __name__ == '__main__':
    run(main, timeout=300)
