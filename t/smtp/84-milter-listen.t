#!/usr/bin/python3
# frontmx's chain served as a milter (issue 11 section 2): a daemon with
# milter = { listen = "inet:127.0.0.1:PORT"; } driven by an MTA-side
# milter client (t/lib/fmx_milter_mta.py, protocol 6 as Postfix speaks it).
#
#   accept     continue everywhere; at eom our Authentication-Results
#              (spf=pass for the connect address, smtp.helo from HELO) and
#              Received-SPF inserted at the top, the module's fields added
#   facts      client address, port and name from CONNECT, HELO, TLS from
#              {tls_version}/{cipher}, AUTH from {auth_authen}, queue id
#              from i, sender, recipients, policy: as a module sees them
#   verdicts   SPF fail: 550 with the policy's reply at RCPT; content
#              rules: reject with the rule's reply ('%' doubled for the
#              MTA), tempfail, discard, quarantine (with reason), tag
#              (tag field, Subject prefix); dry-run relays and tags
#   edits      forged Authentication-Results deleted (chgheader, from the
#              last), recipient add/delete, insert at an index, change
#   hostile    disconnect mid-message, abort then a new message, a header
#              over limits.header_size, many recipients (limits.recipients),
#              several connections at once, SIGHUP during a connection
#              (it finishes on its runtime, the next one takes the new)
#   config     bad milter.listen: FILE:LINE error; SIGTERM exits 0, clean
import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open  # noqa: E402
from fmx_filters import content_filter, plugin, require_modules, write_rules  # noqa: E402
from fmx_milter_mta import MtaMilter  # noqa: E402
from fakedns import FakeDNS  # noqa: E402

ZONE = {
    'pass.example': [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')],
    'fail.example': [('TXT', 'v=spf1 ip4:198.51.100.0/24 -all')],
}

RULES = """# 84-milter-listen.t
header /^Subject:.*REJECTME/ REJECT 5.7.1 100% spam here
header /^Subject:.*DEFERME/ TEMPFAIL 4.7.1 come back later
header /^Subject:.*HOLDME/ QUARANTINE held for review
header /^Subject:.*DROPME/ DISCARD
header /^Subject:.*TAGME/ TAG
body /DRYRUNME/ REJECT 5.7.1 dry
"""

RCPT = '<bob@example.com>'


def conf(mport, rules, dns, extra=None):
    c = {
        'authserv_id': 'mx.test.example',
        'dns': {'forward': [dns.address], 'reverse': False},
        'milter': {'listen': 'inet:127.0.0.1:%d' % mport, 'timeout': 30},
        'tag': {'subject_prefix': '[TAG] '},
        'filters': [
            {'name': 'spf', 'timeout': 10},
            content_filter(rules),
            {'name': 'facts', 'module': plugin('facts_header'), 'options': {'edit': '1'}},
            {'name': 'rcpts', 'module': plugin('rcpt_edit'),
             'options': {'add1': 'carol@example.com', 'del1': 'bob@example.com'}},
        ],
        'policy': {'default': {'spf': {'fail': 'reject'}},
                   'domains': [{'domain': 'dry.example', 'dry_run': True}]},
    }
    if extra:
        c.update(extra)
    return c


def session(mport, addr='192.0.2.10', helo='client.pass.example', name='client.pass.example',
            macros_helo=None, macros_mail=None):
    m = MtaMilter(mport)
    r = m.connect(name, addr, 41000, macros={'j': 'mta.example', '{daemon_name}': 'mta'})
    if r[0] != 'c':
        return m, r
    r = m.helo(helo, macros=macros_helo)
    return m, r


def headers_for(subject, extra=()):
    return [('From', ' alice@pass.example'), ('To', ' bob@example.com'),
            ('Subject', ' ' + subject)] + list(extra)


def mods_named(mods, kind, name=None):
    return [x for x in mods if x[0] == kind and (name is None or x[-2] == name)]


def one_message(mport, subject, body=b'hello\r\n', sender='<alice@pass.example>',
                rcpts=(RCPT,), extra=(), **kw):
    m, r = session(mport, **kw)
    r = m.mail(sender, macros={'i': 'Q1', '{auth_authen}': 'alice'}) if r[0] == 'c' else r
    for rc in rcpts:
        if r[0] != 'c':
            break
        r = m.rcpt(rc, macros={'i': 'QUEUE42'})
    if r[0] != 'c':
        m.quit()
        return [], r
    r = m.data(macros={'i': 'QUEUE42'})
    if r[0] != 'c':
        m.quit()
        return [], r
    mods, final = m.message(headers_for(subject, extra), body, macros={'i': 'QUEUE42'})
    m.quit()
    return mods, final


def main():
    require_modules(plugin('facts_header'), plugin('rcpt_edit'), plugin('slow_async'))
    dns = FakeDNS(ZONE).start()
    d = tmpdir('fmx-ml-')
    rules = write_rules(RULES, d)
    mport = free_port()
    up = Upstream()
    mx = Frontmx(up, conf=conf(mport, rules, dns))
    ok(wait_for(lambda: port_open(mport), 10), 'milter listener on 127.0.0.1:%d' % mport)
    ok(wait_for(lambda: re.search(r'milter listening on inet:127\.0\.0\.1:%d' % mport, mx.log()), 5),
       'logged where it listens')

    # ---- negotiation: what frontmx asks of the MTA
    m = MtaMilter(mport)
    is_(m.version, 6, 'negotiated protocol 6')
    ok(m.actions & 0x01 and m.actions & 0x10 and m.actions & 0x20,
       'asks for ADDHDRS, CHGHDRS and QUARANTINE (actions 0x%x)' % m.actions)
    ok(m.protocol & 0x100000, 'asks for header values with their leading space (HDR_LEADSPC)')
    like(m.symlists.get(2, ''), r'\{auth_authen\}', 'asks for {auth_authen} at MAIL (setsymlist)')
    like(m.symlists.get(1, ''), r'\{tls_version\}', 'asks for {tls_version} at HELO')
    m.quit()

    # ---- accept path, facts from macros
    m, r = session(mport, macros_helo={'{tls_version}': 'TLSv1.3', '{cipher}': 'TLS_AES_256_GCM_SHA384'})
    is_(r[0], 'c', 'connect and helo: continue')
    is_(m.mail('<alice@pass.example>', macros={'i': 'Q1', '{auth_authen}': 'alice'})[0], 'c',
        'MAIL: continue (SPF pass)')
    is_(m.rcpt(RCPT, macros={'i': 'QUEUE42'})[0], 'c', 'RCPT: continue')
    is_(m.data(macros={'i': 'QUEUE42'})[0], 'c', 'DATA: continue')
    forged = ('Authentication-Results', ' mx.test.example; spf=pass smtp.mailfrom=evil@x')
    other = ('Authentication-Results', ' other.example; dkim=pass')
    mods, final = m.message(headers_for('hello', [forged, other, forged, ('X-Change', ' old')]),
                            b'hello\r\n', macros={'i': 'QUEUE42'})
    m.quit()
    is_(final[0], 'c', 'end of message: continue')
    ins = mods_named(mods, 'i')
    top = [x for x in ins if x[1] == 0]
    ok(any(x[2] == 'Authentication-Results' and re.search(
        r'^ mx\.test\.example;\s+spf=pass smtp\.mailfrom=alice@pass\.example', x[3]) for x in top),
        'our Authentication-Results inserted at the top (spf=pass for 192.0.2.10)')
    ok(any(x[2] == 'Received-SPF' and 'helo=client.pass.example' in x[3] for x in top),
       'Received-SPF inserted, with the HELO from the MTA')
    ok(all('\r' not in x[3] for x in ins), 'inserted values fold with LF only (the MTA adds CR)')
    dels = mods_named(mods, 'm', 'Authentication-Results')
    is_([(x[1], x[3]) for x in dels], [(3, ''), (1, '')],
        'both forged Authentication-Results deleted, from the last (occurrences 3 then 1)')
    is_([(x[1], x[3]) for x in mods_named(mods, 'm', 'X-Change')], [(1, ' changed')],
        'a filter\'s change_header: chgheader index 1')
    is_([(x[1], x[3]) for x in ins if x[2] == 'X-Inserted'], [(1, ' yes')],
        'a filter\'s insert_header at index 1: insheader 1')
    facts = [x[2] for x in mods_named(mods, 'h', 'X-Facts')]
    is_(len(facts), 1, 'the module\'s X-Facts field added (addheader)')
    f = facts[0] if facts else ''
    like(f, r'addr=192\.0\.2\.10 port=41000 name=client\.pass\.example ', 'facts: client from CONNECT')
    like(f, r'helo=client\.pass\.example ', 'facts: HELO')
    like(f, r'tls=\[TLSv1\.3 TLS_AES_256_GCM_SHA384\]', 'facts: TLS from {tls_version} {cipher}')
    like(f, r'auth=alice ', 'facts: AUTH identity from {auth_authen}')
    like(f, r'from=alice@pass\.example rcpts=1 policy=default', 'facts: sender, recipients, policy')
    is_([x[2] for x in mods_named(mods, 'h', 'X-Queue-Id')], [' QUEUE42'], 'facts: queue id from i')
    is_([x for x in mods if x[0] in '+-'], [('-', '<bob@example.com>'), ('+', '<carol@example.com>')],
        'a filter\'s recipient edits: delrcpt bob, addrcpt carol')
    is_(mods_named(mods, 'b'), [], 'no body replacement unless a filter asks')
    like(mx.log(), r'milter message id=QUEUE42 client=192\.0\.2\.10 from=<alice@pass\.example> '
         r'to=<bob@example\.com> size=\d+ result=accepted', 'one log line for the message')

    mods, final = one_message(mport, 'new body', sender='<replacebody@pass.example>')
    is_(final[0], 'c', 'a filter replacing the body: continue')
    is_(mods_named(mods, 'b'), [('b', b'replaced body\r\n')], 'the new body: replacebody')

    # ---- header fields as the MTA gives them: LF folds, no leading space without HDR_LEADSPC
    mods, final = one_message(mport, 'folded\n\tREJECTME on the second line')
    is_(final[0], 'y', 'a folded Subject (LF from the MTA) is one field: the rule sees its continuation')
    m = MtaMilter(mport, protocol=0x1fffff & ~0x100000)
    ok(not m.protocol & 0x100000, 'an MTA without HDR_LEADSPC: not negotiated')
    m.connect('client.pass.example', '192.0.2.10', 41000)
    m.helo('client.pass.example')
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    mods, final = m.message(headers_for('REJECTME without leadspc'), b'x\r\n')
    is_(final[0], 'y', 'without HDR_LEADSPC: the field is rebuilt with its space, the rule matches')
    m = MtaMilter(mport, protocol=0x1fffff & ~0x100000)
    m.connect('client.pass.example', '192.0.2.10', 41000)
    m.helo('client.pass.example')
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    mods, final = m.message(headers_for('plain'), b'x\r\n')
    m.quit()
    ok(mods_named(mods, 'h', 'X-Queue-Id') and not mods_named(mods, 'h', 'X-Queue-Id')[0][2].startswith(' '),
       'without HDR_LEADSPC: added values carry no leading space (the MTA adds it)')

    for name, value, want in (('Bad:Name', ' x', b'451 4.3.0 '), ('Bad Name', ' x', b'451 4.3.0 '),
                              ('X-CR', ' a\rb', b'550 5.5.2 '), ('X-LF', ' a\nb', b'550 5.5.2 ')):
        mods, final = one_message(mport, 'x', extra=[(name, value)])
        ok(final[0] == 'y' and final[1].startswith(want),
           'header %r: %s (got %r)' % (name + ':' + value, want.decode().strip(), final))

    # ---- a unix client (no address in CONNECT), hostname "[addr]" = unknown name
    m = MtaMilter(mport)
    is_(m.connect('[192.0.2.11]', '192.0.2.11', 41001)[0], 'c', 'unverified client name: continue')
    m.quit()

    # ---- verdicts
    mods, final = one_message(mport, 'x', sender='<alice@fail.example>')
    is_(final[0], 'y', 'SPF fail: RCPT refused with a custom reply')
    like(final[1], rb'^550 5\.7\.23 SPF validation failed for fail\.example: 192\.0\.2\.10 ',
         'SPF fail: the SPF filter\'s reply, as the proxy gives it (550 5.7.23)')
    mods, final = one_message(mport, 'REJECTME now')
    is_(final, ('y', b'550 5.7.1 100%% spam here'),
        'content rule REJECT: the rule\'s reply, % doubled for the MTA')
    mods, final = one_message(mport, 'DEFERME now')
    is_(final, ('y', b'451 4.7.1 come back later'), 'content rule TEMPFAIL: 451 with its reply')
    mods, final = one_message(mport, 'DROPME now')
    is_(final[0], 'd', 'content rule DISCARD: discard')
    mods, final = one_message(mport, 'HOLDME now')
    is_(final[0], 'c', 'QUARANTINE: continue (the MTA holds it)')
    is_([x[1] for x in mods_named(mods, 'q')], ['filter content'], 'QUARANTINE: smfi_quarantine with the reason')
    ok(any(x[2] == 'Authentication-Results' for x in mods_named(mods, 'i')),
       'QUARANTINE: the held message carries its Authentication-Results')
    mods, final = one_message(mport, 'TAGME now')
    is_(final[0], 'c', 'TAG: continue')
    ok(any(x[2] == 'X-Frontmx-Tag' and 'content=' in x[3] for x in mods_named(mods, 'i')),
       'TAG: the tag field inserted')
    is_([(x[1], x[3]) for x in mods_named(mods, 'm', 'Subject')], [(1, ' [TAG] TAGME now')],
        'TAG: Subject prefixed (chgheader)')
    mods, final = one_message(mport, 'x', body=b'DRYRUNME\r\n', rcpts=('<carol@dry.example>',))
    is_(final[0], 'c', 'dry-run domain: a REJECT rule relays')
    ok(any(x[2] == 'X-Frontmx-Tag' and 'dry-run: would reject' in x[3] for x in mods_named(mods, 'i')),
       'dry-run domain: tagged with what would have happened')
    mods, final = one_message(mport, 'x', rcpts=(RCPT, '<carol@dry.example>'))
    is_(final, ('y', b'452 4.5.3 Error: recipient has a different policy, send it in a separate transaction'),
        'a recipient of another policy: 452 4.5.3 (one policy per message)')

    # ---- hostile MTA side
    m, r = session(mport)
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    m.header('Subject', ' half')
    m.eoh()
    m.body(b'partial')
    m.close()                       # gone mid-message
    ok(wait_for(lambda: 'the MTA aborted it' in mx.log() or
                re.search(r'milter disconnect client=192\.0\.2\.10 messages=0', mx.log()), 5),
       'MTA vanishing mid-message: the connection is freed')
    m, r = session(mport)
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    m.header('Subject', ' REJECTME first')
    m.abort()
    is_(m.mail('<alice@pass.example>')[0], 'c', 'after ABORT: a new MAIL continues')
    m.rcpt(RCPT)
    mods, final = m.message(headers_for('second'), b'ok\r\n')
    is_(final[0], 'c', 'after ABORT: the new message is judged on its own (accepted)')
    m.quit()
    mods, final = one_message(mport, 'x', extra=[('X-Big', ' ' + 'a' * 900)] * 130)
    is_(final, ('y', b'552 5.3.4 Error: message header too large'),
        'header block over limits.header_size: 552 5.3.4')
    rcpts = ['<r%d@example.com>' % i for i in range(101)]
    m, r = session(mport)
    m.mail('<alice@pass.example>')
    answers = [m.rcpt(x)[0] for x in rcpts]
    is_(answers.count('c'), 100, '100 recipients taken (limits.recipients)')
    is_(answers[-1], 'y', 'the 101st: 452')
    mods, final = m.message(headers_for('many'), b'x\r\n')
    is_(final[0], 'c', 'the message to 100 recipients: accepted')
    m.quit()

    results = []

    def worker(i):
        try:
            results.append(one_message(mport, 'parallel %d' % i)[1][0])
        except Exception as e:          # noqa: BLE001
            results.append(repr(e))
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    is_(sorted(results), ['c'] * 8, 'eight connections at once: each accepted')

    # ---- SIGHUP during a connection
    m, r = session(mport)
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    rules2 = write_rules(RULES.replace('REJECTME', 'NEWRULE'), d, 'content2.rules')
    mx.write_conf(conf=conf(mport, rules2, dns))
    mark = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: 'configuration reloaded' in mx.log()[mark:], 10), 'SIGHUP: reloaded')
    like(mx.log()[mark:], r'milter on inet:127\.0\.0\.1:%d: new connections take the reloaded' % mport,
         'SIGHUP: the milter listener says it keeps its address')
    mods, final = m.message(headers_for('REJECTME old rules'), b'x\r\n')
    is_(final[0], 'y', 'SIGHUP mid-connection: the connection keeps its runtime (old rule rejects)')
    m.quit()
    mods, final = one_message(mport, 'REJECTME again')
    is_(final[0], 'c', 'after SIGHUP: a new connection takes the new rules')
    mods, final = one_message(mport, 'NEWRULE')
    is_(final[0], 'y', 'after SIGHUP: the new rule rejects')
    # moving the listener needs a restart: said so, still serving
    c2 = conf(mport, rules2, dns)
    c2['milter'] = {'listen': 'inet:127.0.0.1:%d' % free_port()}
    mx.write_conf(conf=c2)
    mark = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: 'configuration reloaded' in mx.log()[mark:], 10), 'SIGHUP with a new milter.listen: reloaded')
    like(mx.log()[mark:], r'milter\.listen changed .* restart', 'the log says moving it needs a restart')
    is_(one_message(mport, 'still')[1][0], 'c', 'and the old address still serves')
    ok(mx.alive(), 'daemon alive')

    # ---- SIGTERM drains: a message in flight finishes, a new connection gets 421
    m, r = session(mport)
    m.mail('<alice@pass.example>')
    m.rcpt(RCPT)
    mark = len(mx.log())
    os.kill(mx.pid, signal.SIGTERM)
    ok(wait_for(lambda: 'signal 15: draining' in mx.log()[mark:], 10), 'SIGTERM: draining')
    n = MtaMilter(mport)
    is_(n.connect('late.example', '192.0.2.30', 40000), ('y', b'421 4.3.2 Service shutting down'),
        'SIGTERM: a new MTA connection gets 421 4.3.2')
    n.close()
    mods, final = m.message(headers_for('in flight'), b'x\r\n')
    is_(final[0], 'c', 'SIGTERM: the message in flight is still judged and accepted')
    m.quit()
    mx.finish()
    unlike(mx.log()[mark:], r'still open after', 'SIGTERM: every MTA connection ended within the grace')
    dns.stop()

    # ---- a slow chain: the filter's timeout bounds it; milter.timeout bounds our wait
    sock = os.path.join(d, 'milter.sock')
    slow = {'name': 'slow', 'module': plugin('slow_async'), 'timeout': 1,
            'options': {'mode': 'timer', 'ms': '4000'}}
    mx2 = Frontmx(up, name='slow filter, unix socket', conf={
        'milter': {'listen': 'unix:%s' % sock}, 'filters': [slow],
        'timeouts': {'shutdown_grace': 2}})
    ok(wait_for(lambda: os.path.exists(sock), 10), 'milter.listen unix:PATH: the socket exists')
    m = MtaMilter(path=sock)
    is_(m.connect('[127.0.0.1]', family=b'U')[0], 'c', 'over the unix socket: a local client connects')
    m.helo('client.example')
    is_(m.mail('<alice@example.org>')[0], 'c', 'slow filter: MAIL continues (its lookup runs on)')
    r = m.rcpt(RCPT)
    is_(r[0], 'y', 'a filter slower than its timeout: RCPT gets a reply ...')
    like(r[1], rb'^451 ', '... 451: the filter\'s on_error (tempfail), never a silent accept')
    like(mx2.log(), r'filter=slow phase=rcpt timed out after 1s', 'the filter timeout ended the wait')
    m2 = MtaMilter(path=sock)           # left open across SIGTERM
    is_(m2.connect('[127.0.0.1]', family=b'U')[0], 'c', 'a second connection, left idle')
    m.quit()
    mx2.finish()
    like(mx2.log(), r'milter: 1 connection still open after 2s', 'SIGTERM with an idle MTA connection: '
         'drained within shutdown_grace, then said so')
    m2.close()

    slow2 = dict(slow, timeout=30)
    mx3 = Frontmx(up, name='milter.timeout below the chain', conf={
        'milter': {'listen': 'inet:127.0.0.1:%d' % free_port(), 'timeout': 1}, 'filters': [slow2]})
    mport3 = int(re.search(r'milter = \{\s*listen = "inet:127\.0\.0\.1:(\d+)"', mx3.conf).group(1))
    ok(wait_for(lambda: port_open(mport3), 10), 'third daemon: milter listener up')
    m = MtaMilter(mport3)
    m.connect('client.example', '192.0.2.20', 40000)
    m.helo('client.example')
    m.mail('<alice@example.org>')
    r = m.rcpt(RCPT)
    is_(r, ('y', b'451 4.3.0 Error: filter timeout, try again later'),
        'the chain slower than milter.timeout: 451 4.3.0 at the end of our wait')
    r = m.rcpt('<carol@example.com>')
    like(r[1], rb'^451 4\.3\.0 ', 'the connection answers tempfail from then on')
    m.quit()
    ok(wait_for(lambda: 'milter disconnect client=192.0.2.20' in mx3.log(), 15),
       'the connection is freed once the chain is done with it')
    mx3.finish()

    # ---- valgrind: the release build, a message of each verdict, ABORT, a vanishing MTA
    release = os.environ.get('FRONTMX_RELEASE', os.path.join(REPO, 'frontmx'))
    vglog = os.path.join(d, 'valgrind.log')
    wrapper = os.path.join(d, 'frontmx-vg')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec valgrind -q --error-exitcode=99 --leak-check=full '
                '--errors-for-leak-kinds=definite --log-file=%s %s "$@"\n' % (vglog, release))
    os.chmod(wrapper, 0o755)
    vport = free_port()
    saved = os.environ.get('FRONTMX')
    os.environ['FRONTMX'] = wrapper
    try:
        vg = Frontmx(up, name='frontmx under valgrind', conf={
            'milter': {'listen': 'inet:127.0.0.1:%d' % vport}, 'tag': {'subject_prefix': '[T] '},
            'filters': [content_filter(rules2, options={'jit': False}),
                        {'name': 'facts', 'module': plugin('facts_header'), 'options': {'edit': '1'}}]})
    finally:
        if saved is None:
            os.environ.pop('FRONTMX', None)
        else:
            os.environ['FRONTMX'] = saved
    ok(wait_for(lambda: port_open(vport), 60), 'under valgrind: milter listener up')
    got = []
    for subj in ('plain', 'NEWRULE', 'HOLDME', 'TAGME'):
        m = MtaMilter(vport, timeout=60)
        m.connect('x.example', '192.0.2.1', 1)
        m.helo('x.example')
        m.mail('<a@pass.example>')
        m.rcpt(RCPT)
        got.append(m.message(headers_for(subj, [('Authentication-Results', ' mx.test.example; x=y')]),
                             b'body\r\n')[1][0])
        m.mail('<a@pass.example>')
        m.rcpt(RCPT)
        m.header('Subject', ' aborted')
        m.abort()
        m.quit()
    is_(got, ['c', 'y', 'c', 'c'], 'under valgrind: accept, reject, quarantine, tag')
    m = MtaMilter(vport, timeout=60)
    m.connect('x.example', '192.0.2.1', 1)
    m.helo('x.example')
    m.mail('<a@pass.example>')
    m.rcpt(RCPT)
    m.header('Subject', ' gone')
    m.close()
    rc = vg.stop(timeout=60)
    is_(rc, 0, 'under valgrind: exit 0 on SIGTERM (no error, no definite leak)')
    if rc != 0 and os.path.exists(vglog):
        diag(open(vglog).read()[-4000:])

    # ---- configuration errors
    for bad, why in (('inet:localhost:25', 'a name'), ('tcp:1.2.3.4:5', 'unknown kind'),
                     ('unix:relative', 'relative path'), ('inet:127.0.0.1:0', 'port 0')):
        rc, out, path = run_frontmx_t('hostname = "x";\nlisten = ( { address = "127.0.0.1:2525"; } );\n'
                                      'upstream = { address = "127.0.0.1:25"; };\n'
                                      'milter = {\n  listen = "%s";\n};\n' % bad)
        isnt(rc, 0, 'milter.listen %s (%s): refused' % (bad, why))
        like(out, re.escape(path) + r':5: .*milter\.listen', '%s: FILE:LINE names milter.listen' % bad)


run(main, timeout=150)
