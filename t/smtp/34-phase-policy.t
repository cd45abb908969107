#!/usr/bin/python3
# Per-domain policy for what the connect, helo and mail phases find (issue
# 9 item 2).  SPF is decided at MAIL, before any recipient is known; its
# result waits for RCPT and is acted on with the policy of each
# recipient's domain, as Postfix's smtpd_delay_reject does.  The same
# cases run through the daemon and through `frontmx check`, which must
# agree.
#   default         spf fail -> reject, softfail -> tag
#   example.com     spf fail -> tag          (as in conf/frontmx.conf)
#   strict.example  spf softfail -> reject
#   dry.example     dry_run = true
# Asserted: MAIL gets 250 whatever SPF found; a refusing action is the
# RCPT reply (the SPF filter's 550 5.7.23) and that recipient never
# reaches the upstream; recipients whose policy tags are relayed, tagged
# with the SPF result; a dry-run domain relays; mixed recipients in one
# transaction; the 452 4.5.3 policy split still applies.  A filter with
# delay_reject = false acts at MAIL with the default policy.  The same rule
# for connect and helo answers, from a test module (t/plugins/phase_result.c):
# a named result mapped per domain, a plain reject that a dry-run domain
# relays, a connect-time tag that survives EHLO's reset into the message,
# a mail-phase failure whose on_error a domain overrides.  The sample
# conf/frontmx.conf, with its spf entry enabled, through `frontmx check`;
# a filter's own dry_run.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403
from fakedns import FakeDNS  # noqa: E402
from fmx import register_cleanup  # noqa: E402

ZONE = {
    'pass.example': [('TXT', 'v=spf1 ip4:127.0.0.0/8 -all')],
    'fail.example': [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')],
    'soft.example': [('TXT', 'v=spf1 ip4:192.0.2.0/24 ~all')],
}

DOMAINS = ['example.com', 'strict.example', 'dry.example', 'default.example']

POLICY = {
    'default': {'spf': {'fail': 'reject', 'softfail': 'tag', 'temperror': 'tempfail'}},
    'domains': [{'domain': 'example.com', 'spf': {'fail': 'tag'}},
                {'domain': 'strict.example', 'spf': {'softfail': 'reject'}},
                {'domain': 'dry.example', 'dry_run': True}],
}

# sender, recipient, expected: ('relay', tag regex or None, check's verdict)
# | ('reject', reply regex, None).  A dry run relays the message as is
# (verdict accept), with a note in the tag field.
CASES = [
    ('alice@fail.example', 'bob@example.com', ('relay', rb'spf=fail\b', 'tag')),
    ('alice@fail.example', 'bob@default.example', ('reject', r'^550 5\.7\.23 SPF validation failed for fail\.example', None)),
    ('alice@soft.example', 'bob@strict.example', ('reject', r'^550 5\.7\.23 SPF validation failed for soft\.example', None)),
    ('alice@soft.example', 'bob@default.example', ('relay', rb'spf=softfail\b', 'tag')),
    ('alice@fail.example', 'bob@dry.example', ('relay', rb'spf=fail \(dry-run: would reject\)', 'accept')),
    ('alice@pass.example', 'bob@strict.example', ('relay', None, 'accept')),
]


def body(sender, subject):
    return (b'From: ' + sender.encode() + b'\r\nTo: someone@example.com\r\nSubject: ' +
            subject.encode() + b'\r\n\r\nHello.\r\n')


def relayed(up, subject):
    for m in up.messages:
        if re.search(rb'(?m)^Subject: ' + re.escape(subject.encode()) + rb'\r\n', m.data):
            return m
    return None


def tag_of(data):
    t = fields_named(data, 'X-Frontmx-Tag')
    return t[0] if t else None


def daemon_cases(mx, up):
    n = len(up.messages)
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, 'EHLO')
    for i, (sender, rcpt, (want, what, verdict)) in enumerate(CASES):
        name = 'daemon %s -> %s' % (sender, rcpt)
        subject = 'case-%d' % i
        r = c.transaction(sender, [rcpt], body(sender, subject))
        reply_is(r['mail'], 250, None, name + ': MAIL 250 (the result waits for RCPT)')
        if want == 'reject':
            reply_is(r['rcpt'][0], 550, '5.7.23', name + ': RCPT refused with the SPF reply')
            like('%d %s' % (r['rcpt'][0].code, r['rcpt'][0].text), what, name + ': the SPF text')
            ok(r['data'] is None, name + ': no DATA')
            ok(not any(rcpt in cmd for cmd in up.commands()),
               name + ': the upstream never saw the recipient')
            reply_is(c.cmd('RSET'), 250, None, name + ': RSET')
            continue
        reply_is(r['rcpt'][0], 250, None, name + ': RCPT 250')
        reply_is(r['dot'], 250, None, name + ': message accepted')
        n += 1
        up.wait_messages(n)
        m = relayed(up, subject)
        if not ok(m is not None, name + ': relayed'):
            continue
        is_(m.rcpts, [rcpt], name + ': to that recipient')
        if what is None:
            is_(tag_of(m.data), None, name + ': not tagged')
        else:
            like(tag_of(m.data) or b'', rb'^X-Frontmx-Tag: .*' + what, name + ': tagged with the result')
    c.quit()
    return n


def daemon_mixed(mx, up, n):
    # one transaction, recipients of four policies
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, 'mixed: EHLO')
    r = c.transaction('alice@fail.example',
                      ['u1@default.example', 'bob@example.com', 'u2@strict.example',
                       'u3@dry.example', 'carol@example.com'],
                      body('alice@fail.example', 'mixed-1'))
    reply_is(r['mail'], 250, None, 'mixed: MAIL 250')
    reply_is(r['rcpt'][0], 550, '5.7.23', 'mixed: default.example first, refused at RCPT')
    reply_is(r['rcpt'][1], 250, None, 'mixed: example.com accepted after a refused first recipient')
    reply_is(r['rcpt'][2], 550, '5.7.23', 'mixed: strict.example refused (fail -> default reject)')
    reply_is(r['rcpt'][3], 452, '4.5.3', 'mixed: dry.example has another policy: 452 4.5.3')
    reply_is(r['rcpt'][4], 250, None, 'mixed: a second example.com recipient accepted')
    reply_is(r['dot'], 250, None, 'mixed: message accepted')
    n += 1
    up.wait_messages(n)
    m = relayed(up, 'mixed-1')
    if ok(m is not None, 'mixed: relayed'):
        is_(m.rcpts, ['bob@example.com', 'carol@example.com'],
            'mixed: exactly the accepted recipients reached the upstream')
        like(tag_of(m.data) or b'', rb'spf=fail\b', 'mixed: tagged with the SPF result')
        is_(len(re.findall(rb'spf=', tag_of(m.data) or b'')), 1, 'mixed: tagged once')
    # the deferred recipient, retried on its own
    r = c.transaction('alice@fail.example', ['u3@dry.example'], body('alice@fail.example', 'mixed-2'))
    reply_is(r['rcpt'][0], 250, None, 'mixed retry: dry.example accepted')
    reply_is(r['dot'], 250, None, 'mixed retry: message accepted')
    n += 1
    up.wait_messages(n)
    m = relayed(up, 'mixed-2')
    if ok(m is not None, 'mixed retry: relayed'):
        like(tag_of(m.data) or b'', rb'spf=fail \(dry-run: would reject\)',
             'mixed retry: the dry-run note')
    # the same sender again gets the same answer; RSET ends the refused transaction
    r = c.transaction('alice@fail.example', ['u4@default.example'], body('alice@fail.example', 'mixed-3'))
    reply_is(r['rcpt'][0], 550, '5.7.23', 'same sender again: default.example still refused')
    reply_is(c.cmd('DATA'), 554, '5.5.1', 'no valid recipients: DATA refused')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    # a new MAIL gets its own result
    r = c.transaction('alice@pass.example', ['u5@default.example'], body('alice@pass.example', 'mixed-4'))
    reply_is(r['rcpt'][0], 250, None, 'next MAIL (pass): default.example accepted')
    reply_is(r['dot'], 250, None, 'next MAIL (pass): message accepted')
    n += 1
    up.wait_messages(n)
    m = relayed(up, 'mixed-4')
    if ok(m is not None, 'next MAIL (pass): relayed'):
        is_(tag_of(m.data), None, 'next MAIL (pass): not tagged (the fail of the last MAIL is gone)')
    c.quit()
    return n


def check_cases(dns):
    cf = Frontmx(None, name='check config', start=False, conf={
        'dns': {'forward': [dns.address]},
        'relay': {'domains': DOMAINS, 'networks': []},
        'filters': [{'name': 'spf', 'timeout': 20}],
        'tag': {'header': 'X-Frontmx-Tag'},
        'policy': POLICY,
    }).conffile
    for i, (sender, rcpt, (want, what, verdict)) in enumerate(CASES):
        name = 'check %s -> %s' % (sender, rcpt)
        rc, out, err = frontmx_check(cf, ip='127.0.0.1', helo='client.example', sender=sender,
                                     rcpts=[rcpt], message=body(sender, 'check-%d' % i))
        no_sanitizer(err, name)
        last = [x for x in out.split('\n') if x][-1:] or ['']
        if want == 'reject':
            is_(rc, 2, name + ': exit 2')
            like(last[0], r'^verdict: reject 550 5\.7\.23 ', name + ': verdict: reject with the SPF reply')
            continue
        is_(rc, 0, name + ': exit 0 (relayed)')
        like(last[0], r'^verdict: %s 250 ' % verdict, name + ': verdict: ' + verdict)
        if what is None:
            unlike(out, r'(?m)^X-Frontmx-Tag:', name + ': no tag field')
        else:
            like(out.encode(), rb'(?m)^X-Frontmx-Tag: .*' + what, name + ': the tag field with the result')
    rc, out, err = frontmx_check(cf, ip='127.0.0.1', helo='client.example',
                                 sender='alice@fail.example',
                                 rcpts=['u1@default.example', 'bob@example.com'],
                                 message=body('alice@fail.example', 'check-mixed'))
    is_(rc, 0, 'check mixed: relayed to the example.com recipient (exit 0)')
    like(out, r'(?m)^verdict: tag 250 ', 'check mixed: verdict: tag')


def sample_conf(dns):
    # conf/frontmx.conf itself, which chains spf (its policy names it, and
    # a policy group for an unchained filter is an error): its own
    # example.com policy (spf fail -> tag) must have its effect
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'conf', 'frontmx.conf')
    with open(path) as f:
        text = f.read()
    if not like(text, r'(?m)^\t\tname = "spf";$', 'sample conf: chains the spf filter'):
        return
    rc, out, err = frontmx_check(path, ip='127.0.0.1', helo='client.example',
                                 sender='alice@fail.example', rcpts=['bob@example.com'],
                                 message=body('alice@fail.example', 'sample'),
                                 extra=['--dns', dns.address])
    no_sanitizer(err, 'sample conf')
    is_(rc, 0, 'sample conf: SPF fail to example.com relayed (its policy: fail -> tag)')
    like(out, r'(?m)^verdict: tag 250 ', 'sample conf: verdict: tag')
    like(out, r'(?m)^X-Frontmx-Tag: spf=fail$', 'sample conf: tagged with the result')


def filter_dry_run(dns):
    # the filter's own dry_run (filters entry) keeps working with held results
    up = Upstream()
    mx = Frontmx(up, name='frontmx filter dry_run', conf={
        'dns': {'forward': [dns.address]},
        'relay': {'domains': DOMAINS, 'networks': []},
        'filters': [{'name': 'spf', 'timeout': 20, 'dry_run': True}],
        'tag': {'header': 'X-Frontmx-Tag'},
        'policy': {'default': {'spf': {'fail': 'reject'}},
                   'domains': [{'domain': 'strict.example', 'dry_run': False}]},
    })
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, 'filter dry_run: EHLO')
    r = c.transaction('alice@fail.example', ['bob@default.example'], body('alice@fail.example', 'fd-1'))
    reply_is(r['rcpt'][0], 250, None, 'filter dry_run: RCPT 250')
    reply_is(r['dot'], 250, None, 'filter dry_run: relayed')
    ok(up.wait_messages(1), 'filter dry_run: upstream got it')
    m = relayed(up, 'fd-1')
    if ok(m is not None, 'filter dry_run: found'):
        like(tag_of(m.data) or b'', rb'spf=fail \(dry-run: would reject\)', 'filter dry_run: the note')
    r = c.transaction('alice@fail.example', ['bob@strict.example'], body('alice@fail.example', 'fd-2'))
    reply_is(r['rcpt'][0], 550, '5.7.23', 'filter dry_run: a domain with dry_run = false still rejects')
    c.cmd('RSET')
    c.quit()
    mx.finish()


def no_delay(dns):
    # delay_reject = false: the filter acts at MAIL with the default policy
    up = Upstream()
    mx = Frontmx(up, name='frontmx no delay', conf={
        'dns': {'forward': [dns.address]},
        'relay': {'domains': DOMAINS, 'networks': []},
        'filters': [{'name': 'spf', 'timeout': 20, 'delay_reject': False}],
        'tag': {'header': 'X-Frontmx-Tag'},
        'policy': POLICY,
    })
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, 'no delay: EHLO')
    r = c.transaction('alice@fail.example', ['bob@example.com'], body('alice@fail.example', 'nd-1'))
    reply_is(r['mail'], 550, '5.7.23', 'no delay: MAIL refused with the default policy')
    ok(not any('fail.example' in cmd for cmd in up.commands()),
       'no delay: the upstream never saw the sender')
    r = c.transaction('alice@soft.example', ['bob@default.example'], body('alice@soft.example', 'nd-2'))
    reply_is(r['dot'], 250, None, 'no delay: softfail relayed (default: tag)')
    ok(up.wait_messages(1), 'no delay: softfail message relayed')
    m = relayed(up, 'nd-2')
    if ok(m is not None, 'no delay: found'):
        like(tag_of(m.data) or b'', rb'spf=softfail\b', 'no delay: tagged with the result')
    c.quit()
    ok(mx.alive(), 'no delay: frontmx still running')
    mx.finish()
    bad = Frontmx(None, name='bad delay_reject', start=False, conf={
        'filters': [{'name': 'spf', 'delay_reject': 'yes'}]}).conffile
    rc, out = frontmx_t(bad)
    ok(rc not in (0, None), 'frontmx -t: delay_reject = "yes" refused')
    like(out, r'frontmx\.conf:\d+: .*delay_reject.* must be a boolean',
         'frontmx -t: FILE:LINE: names the key')


def early_module(phase, **opts):
    o = {'phase': phase}
    o.update(opts)
    return {'name': 'early', 'module': plugin('phase_result'), 'timeout': 10, 'options': o}


def start(name, filters, policy=None):
    """A frontmx with these filters and policy, and a client past EHLO."""
    up = Upstream()
    conf = {'relay': {'domains': DOMAINS, 'networks': []}, 'filters': filters,
            'tag': {'header': 'X-Frontmx-Tag'}}
    if policy is not None:
        conf['policy'] = policy
    mx = Frontmx(up, name='frontmx ' + name, conf=conf)
    c = SmtpClient(mx.port)
    reply_is(c.start('client.example'), 250, None, name + ': EHLO')
    return up, mx, c


def early_phases():
    require_modules(plugin('phase_result'))
    pol = {'default': {'early': {'listed': 'reject'}},
           'domains': [{'domain': 'example.com', 'early': {'listed': 'tag'}},
                       {'domain': 'dry.example', 'dry_run': True}]}
    for phase in ('connect', 'helo'):
        up = Upstream()
        mx = Frontmx(up, name='frontmx %s result' % phase, conf={
            'relay': {'domains': DOMAINS, 'networks': []},
            'filters': [early_module(phase, result='listed',
                                     reply='550 5.7.1 listed at %s by the test module' % phase)],
            'tag': {'header': 'X-Frontmx-Tag'},
            'policy': pol,
        })
        name = phase + ' result'
        c = SmtpClient(mx.port)
        reply_is(c.greeting(), 220, None, name + ': greeting 220 (the answer waits for RCPT)')
        reply_is(c.ehlo(), 250, None, name + ': EHLO 250')
        r = c.transaction('alice@pass.example', ['u@default.example', 'bob@example.com'],
                          body('alice@pass.example', phase + '-1'))
        reply_is(r['mail'], 250, None, name + ': MAIL 250')
        reply_is(r['rcpt'][0], 550, '5.7.1', name + ': default policy: RCPT refused')
        like(r['rcpt'][0].text, r'listed at %s by the test module' % phase,
             name + ': with the module\'s reply')
        reply_is(r['rcpt'][1], 250, None, name + ': example.com (listed -> tag): RCPT 250')
        reply_is(r['dot'], 250, None, name + ': message accepted')
        ok(up.wait_messages(1), name + ': relayed')
        m = relayed(up, phase + '-1')
        if ok(m is not None, name + ': found upstream'):
            like(tag_of(m.data) or b'', rb'early=listed\b', name + ': tagged with the result')
        # a second message of the session: the answer still stands
        r = c.transaction('alice@pass.example', ['v@default.example'], body('alice@pass.example', phase + '-2'))
        reply_is(r['rcpt'][0], 550, '5.7.1', name + ': next message, default policy: still refused')
        c.cmd('RSET')
        c.quit()
        ok(mx.alive(), name + ': frontmx still running')
        mx.finish()

    # a plain reject (no result) at connect: the dry-run domain relays it
    up, mx, c = start('connect reject', [early_module('connect', verdict='reject')],
                      {'domains': [{'domain': 'dry.example', 'dry_run': True}]})
    r = c.transaction('alice@pass.example', ['u@default.example', 'w@dry.example'],
                      body('alice@pass.example', 'cr-1'))
    reply_is(r['rcpt'][0], 550, '5.7.1', 'connect reject: default policy refuses at RCPT')
    like(r['rcpt'][0].text, r'connection rejected by policy', 'connect reject: the default reply names the phase')
    reply_is(r['rcpt'][1], 250, None, 'connect reject: dry-run domain: RCPT 250')
    reply_is(r['dot'], 250, None, 'connect reject: dry-run domain: relayed')
    ok(up.wait_messages(1), 'connect reject: relayed')
    m = relayed(up, 'cr-1')
    if ok(m is not None, 'connect reject: found'):
        like(tag_of(m.data) or b'', rb'early=dry-run \(dry-run: would reject\)',
             'connect reject: the dry-run note')
    c.quit()
    mx.finish()

    # a mail-phase failure (invalid verdict): on_error per recipient domain
    up, mx, c = start('held failure', [{'name': 'mis', 'module': plugin('misbehave'),
                                        'options': {'mode': 'bogus_verdict'}}],
                      {'domains': [{'domain': 'example.com', 'mis': {'on_error': 'accept'}}]})
    r = c.transaction('alice@pass.example', ['u@default.example', 'bob@example.com'],
                      body('alice@pass.example', 'hf-1'))
    reply_is(r['mail'], 250, None, 'held failure: MAIL 250')
    reply_is(r['rcpt'][0], 451, '4.7.1', 'held failure: default on_error tempfail at RCPT')
    like(r['rcpt'][0].text, r'sender deferred by policy', 'held failure: the reply names the sender')
    reply_is(r['rcpt'][1], 250, None, 'held failure: example.com on_error accept: RCPT 250')
    reply_is(r['dot'], 250, None, 'held failure: example.com: relayed')
    ok(up.wait_messages(1), 'held failure: upstream got it')
    c.quit()
    like(mx.log(), r'filter=mis phase=mail returned invalid verdict 99', 'held failure: logged when it happened')
    mx.finish()

    # a connect-time tag reaches the message (EHLO's reset used to drop it)
    up, mx, c = start('connect tag', [early_module('connect', verdict='tag')])
    r = c.transaction('alice@pass.example', ['bob@example.com'], body('alice@pass.example', 'ct-1'))
    reply_is(r['dot'], 250, None, 'connect tag: accepted')
    ok(up.wait_messages(1), 'connect tag: relayed')
    m = relayed(up, 'ct-1')
    if ok(m is not None, 'connect tag: found'):
        like(tag_of(m.data) or b'', rb'^X-Frontmx-Tag: early=tag', 'connect tag: tagged')
    c.quit()
    mx.finish()


def main():
    early_phases()
    dns = FakeDNS(ZONE).start()
    register_cleanup(dns.stop)
    up = Upstream()
    mx = Frontmx(up, conf={
        'dns': {'forward': [dns.address]},
        'relay': {'domains': DOMAINS, 'networks': []},
        'filters': [{'name': 'spf', 'timeout': 20}],
        'tag': {'header': 'X-Frontmx-Tag'},
        'policy': POLICY,
    })
    n = daemon_cases(mx, up)
    n = daemon_mixed(mx, up, n)
    is_(len(up.messages), n, 'exactly the accepted messages were relayed')
    check_stream(up, n)
    ok(mx.alive(), 'frontmx still running')
    mx.finish()
    check_cases(dns)
    sample_conf(dns)
    filter_dry_run(dns)
    no_delay(dns)
    dns.stop()


run(main, timeout=120)
