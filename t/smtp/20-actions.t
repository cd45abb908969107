#!/usr/bin/python3
# The six actions of a content rule, through the running proxy and a
# capture upstream: what the client is told, what the upstream receives
# (DATA transactions counted by the strict parser) and what lands in the
# quarantine.  accept ends the filtering of the message: later rules and
# later filters are skipped.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

RULES = r"""# 20-actions.t
header /^Subject:.*\bWARN-ME\b/ WARN only logged
header /^Subject:.*\bACCEPT-ME\b/ ACCEPT
header /^Subject:.*\bTAG-ME\b/ TAG looks like spam
header /^Subject:.*\bQUARANTINE-ME\b/ QUARANTINE held for review
header /^Subject:.*\bTEMPFAIL-ME\b/ TEMPFAIL 4.7.2 content deferred by rule 5
header /^Subject:.*\bREJECT-ME\b/ REJECT 5.7.0 content rejected by rule 6
header /^Subject:.*\bDISCARD-ME\b/ DISCARD
header /^Subject:.*\bPLAIN-REJECT\b/ REJECT
header /^Subject:.*\bDEFER-ME\b/ defer
header /^X-Later:.*REJECT-ME/ REJECT 5.7.0 later header rule
body /^BODY-REJECT-ME$/ REJECT 5.7.3 body rule
"""

SENDER = 'alice@example.org'


def msg(subject, body=b'Hello,\r\nplain text.\r\n', extra=b''):
    return (b'From: Alice <alice@example.org>\r\n'
            b'To: bob@example.com\r\n'
            b'Subject: ' + subject.encode() + b'\r\n'
            b'Message-ID: <' + subject.replace(' ', '.').encode() + b'@example.org>\r\n' +
            extra + b'\r\n' + body)


def find(up, subject):
    """The upstream's message whose header holds this Subject text."""
    for m in up.messages:
        if re.search(rb'(?m)^Subject: .*' + re.escape(subject.encode()) + rb'\r\n', m.data):
            return m
    return None


def main():
    require_modules(EXAMPLE_MODULE)
    d = tmpdir('fmx-actions-')
    rules = write_rules(RULES, d)
    q = make_maildir(os.path.join(d, 'q'))
    up = Upstream()
    mx = Frontmx(up, conf={
        'filters': [content_filter(rules)],
        'quarantine': {'directory': q},
        'tag': {'header': 'X-Frontmx-Tag', 'subject_prefix': '[TAG] '},
    })
    relayed = 0

    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'greeting')
    reply_is(c.ehlo(), 250, None, 'EHLO')

    # -- no rule matches: relayed byte for byte
    clean = msg('nothing special here')
    r = c.transaction(SENDER, ['bob@example.com'], clean)
    reply_is(r['dot'], 250, '2.0.0', 'clean message: 250')
    relayed += 1
    ok(up.wait_messages(relayed), 'clean message reached the upstream')
    m = find(up, 'nothing special here')
    if m:
        check_relayed(m.data, clean, 'clean message')
        is_(fields_named(m.data, 'X-Frontmx-Tag'), [], 'clean message: no tag header')
    else:
        ok(False, 'clean message relayed')

    # -- reject: 550 with the rule's text, never reaches the upstream
    r = c.transaction(SENDER, ['bob@example.com'], msg('please REJECT-ME now'))
    reply_is(r['data'], 354, None, 'reject: DATA 354 (content is judged at the end)')
    reply_is(r['dot'], 550, '5.7.0', 'reject: 550 5.7.0')
    is_(r['dot'].lines, ['5.7.0 content rejected by rule 6'], "reject: the rule's text")

    # default reply text of a REJECT rule without text
    r = c.transaction(SENDER, ['bob@example.com'], msg('PLAIN-REJECT'))
    reply_is(r['dot'], 550, '5.7.1', 'reject without text: 550 5.7.1')
    like(r['dot'].text, r'(?i)rejected', 'reject without text: default text')

    # -- tempfail: 451 with the rule's text
    r = c.transaction(SENDER, ['bob@example.com'], msg('TEMPFAIL-ME please'))
    reply_is(r['dot'], 451, '4.7.2', 'tempfail: 451 4.7.2')
    is_(r['dot'].lines, ['4.7.2 content deferred by rule 5'], "tempfail: the rule's text")
    r = c.transaction(SENDER, ['bob@example.com'], msg('DEFER-ME'))
    reply_is(r['dot'], 451, '4.7.1', 'DEFER (lower case) is TEMPFAIL: 451 4.7.1')

    # -- discard: 250, nothing relayed, nothing quarantined
    r = c.transaction(SENDER, ['bob@example.com'], msg('DISCARD-ME'))
    reply_is(r['dot'], 250, '2.0.0', 'discard: the client is told 250')

    # -- quarantine: 250, one copy in the quarantine with the envelope
    qbody = b'Line one\r\n.leading dot\r\nlast line\r\n'
    qmsg = msg('QUARANTINE-ME', body=qbody)
    r = c.transaction(SENDER, ['bob@example.com', 'carol@example.com'], qmsg)
    ok(all(x.code == 250 for x in r['rcpt']), 'quarantine: both RCPT 250')
    reply_is(r['dot'], 250, '2.0.0', 'quarantine: the client is told 250')
    files = maildir_files(q)
    is_(len(files), 1, 'quarantine: exactly one file in quarantine/new (one copy for all recipients)')
    is_(maildir_files(q, 'tmp'), [], 'quarantine: tmp/ is empty')
    if files:
        data = read_file(files[0])
        lines = data.replace(b'\r\n', b'\n').split(b'\n')
        is_(lines[0], b'Return-Path: <alice@example.org>', 'quarantine file: Return-Path first')
        like(data, rb'(?m)^X-Frontmx-Quarantine: .*content', 'quarantine file: X-Frontmx-Quarantine names the filter')
        like(data, rb'(?m)^Delivered-To: <?bob@example\.com>?\r?$', 'quarantine file: Delivered-To bob')
        like(data, rb'(?m)^Delivered-To: <?carol@example\.com>?\r?$', 'quarantine file: Delivered-To carol')
        like(data, rb'(?m)^Received: from client\.example ', 'quarantine file: our Received field')
        like(data, rb'(?m)^Subject: QUARANTINE-ME\r?$', 'quarantine file: the original Subject')
        norm = data.replace(b'\r\n', b'\n')
        ok(norm.endswith(b'\n\n' + qbody.replace(b'\r\n', b'\n')),
           'quarantine file: the body, un-stuffed, complete')
        envelope = norm.split(b'\nReceived:', 1)[0]
        ok(b'X-Frontmx-Quarantine' in envelope and b'Delivered-To' in envelope,
           'quarantine file: envelope fields come before the message')

    # -- tag: relayed with the tag header and the Subject prefix
    tbody = b'tagged body\r\n'
    tmsg = msg('please TAG-ME now', body=tbody)
    r = c.transaction(SENDER, ['bob@example.com'], tmsg)
    reply_is(r['dot'], 250, None, 'tag: 250 (relayed)')
    relayed += 1
    ok(up.wait_messages(relayed), 'tag: reached the upstream')
    m = find(up, 'please TAG-ME now')
    if m:
        tags = fields_named(m.data, 'X-Frontmx-Tag')
        is_(len(tags), 1, 'tag: one X-Frontmx-Tag field')
        like(tags[0] if tags else b'', rb'^X-Frontmx-Tag: .*content', 'tag: the field names the filter')
        is_(fields_named(m.data, 'Subject'), [b'Subject: [TAG] please TAG-ME now\r\n'],
            'tag: Subject prefixed once with tag.subject_prefix')
        ok(m.data.endswith(b'\r\n\r\n' + tbody), 'tag: body unchanged')
        is_(fields_named(m.data, 'Message-ID'), [b'Message-ID: <please.TAG-ME.now@example.org>\r\n'],
            'tag: other fields unchanged')
    else:
        ok(False, 'tag: message relayed')

    # -- WARN keeps looking: the next matching rule decides
    r = c.transaction(SENDER, ['bob@example.com'], msg('WARN-ME and REJECT-ME'))
    reply_is(r['dot'], 550, '5.7.0', 'WARN then REJECT: rejected by the later rule')

    # -- accept: later rules (header, body) are skipped
    amsg = msg('ACCEPT-ME REJECT-ME', body=b'BODY-REJECT-ME\r\n', extra=b'X-Later: REJECT-ME\r\n')
    r = c.transaction(SENDER, ['bob@example.com'], amsg)
    reply_is(r['dot'], 250, None, 'accept: relayed although later rules would reject')
    relayed += 1
    ok(up.wait_messages(relayed), 'accept: reached the upstream')
    m = find(up, 'ACCEPT-ME REJECT-ME')
    if m:
        check_relayed(m.data, amsg, 'accepted message')
    else:
        ok(False, 'accept: message relayed')

    # body rule without ACCEPT: rejected
    r = c.transaction(SENDER, ['bob@example.com'], msg('body check', body=b'x\r\nBODY-REJECT-ME\r\ny\r\n'))
    reply_is(r['dot'], 550, '5.7.3', 'body rule: 550 5.7.3')
    r = c.transaction(SENDER, ['bob@example.com'], msg('later header', extra=b'X-Later: REJECT-ME\r\n'))
    reply_is(r['dot'], 550, '5.7.0', 'header rule on a later field: 550')
    is_(r['dot'].lines, ['5.7.0 later header rule'], 'header rule on a later field: its text')

    # -- the session is still usable after every refusal
    last = msg('after all refusals')
    r = c.transaction(SENDER, ['bob@example.com'], last)
    reply_is(r['dot'], 250, None, 'same session: a clean message after the refusals is relayed')
    relayed += 1
    reply_is(c.cmd('QUIT'), 221, None, 'QUIT')
    c.close()

    ok(up.wait_messages(relayed), 'upstream got %d messages' % relayed)
    check_stream(up, relayed, 'upstream')
    allb = up.all_bytes()
    for word in ('QUARANTINE-ME', 'TEMPFAIL-ME', 'DISCARD-ME', 'PLAIN-REJECT', 'DEFER-ME',
                 'BODY-REJECT-ME\r\ny', 'WARN-ME', 'later header'):
        ok(word.encode() not in allb, 'never in the upstream stream: %s' % word.split('\r')[0])
    is_(len(maildir_files(q)), 1, 'quarantine still holds exactly one message (discard kept nothing)')
    is_(sorted(x.rcpts[0] for x in up.messages), ['bob@example.com'] * relayed,
        'relayed messages keep their envelope')
    log = mx.log()
    like(log, r'rules:2 .*action=warn', 'WARN rule logged')
    ok(mx.alive(), 'daemon still running')
    mx.finish()

    # -- accept skips the rest of the chain (a later filter's eom hook);
    #    tag.header and an absent subject_prefix are honoured
    up2 = Upstream()
    mx2 = Frontmx(up2, name='frontmx (content + rcpt_allow)', conf={
        'filters': [content_filter(rules),
                    {'name': 'allow', 'module': EXAMPLE_MODULE,
                     'options': {'allow_domains': 'example.com'}}],
        'tag': {'header': 'X-Other-Tag'},
    })
    plain = msg('plain one')
    r = send(mx2, SENDER, ['bob@example.com'], plain)
    reply_is(r['dot'], 250, None, 'chain: plain message relayed')
    r = send(mx2, SENDER, ['bob@example.com'], msg('ACCEPT-ME chain'))
    reply_is(r['dot'], 250, None, 'chain: accepted message relayed')
    r = send(mx2, SENDER, ['bob@example.com'], msg('TAG-ME chain'))
    reply_is(r['dot'], 250, None, 'chain: tagged message relayed')
    ok(up2.wait_messages(3), 'chain: upstream got 3 messages')
    m = find(up2, 'plain one')
    is_(len(fields_named(m.data, 'X-Rcpt-Allow')) if m else None, 1,
        'chain: the later filter ran on a plain message (X-Rcpt-Allow)')
    m = find(up2, 'ACCEPT-ME chain')
    is_(fields_named(m.data, 'X-Rcpt-Allow') if m else None, [],
        'chain: ACCEPT skipped the later filter (no X-Rcpt-Allow)')
    m = find(up2, 'TAG-ME chain')
    if m:
        is_(len(fields_named(m.data, 'X-Other-Tag')), 1, 'tag.header = X-Other-Tag is used')
        is_(fields_named(m.data, 'X-Frontmx-Tag'), [], 'no default tag header besides it')
        is_(fields_named(m.data, 'Subject'), [b'Subject: TAG-ME chain\r\n'],
            'no subject_prefix configured: Subject unchanged')
        is_(len(fields_named(m.data, 'X-Rcpt-Allow')), 1, 'TAG does not stop the chain')
    else:
        ok(False, 'chain: tagged message relayed')
    check_stream(up2, 3, 'chain upstream')
    mx2.finish()

    # -- a quarantine directory that does not exist yet: the daemon must
    #    either create it (as it does for upstream "dir:") or refuse the
    #    configuration; never accept it and then defer every quarantined
    #    message
    newq = os.path.join(d, 'fresh-quarantine')
    up3 = Upstream()
    mx3 = Frontmx(up3, name='frontmx (fresh quarantine dir)', start=False, conf={
        'filters': [content_filter(rules)],
        'quarantine': {'directory': newq},
    })
    rc, out = frontmx_t(mx3.conffile)
    if rc != 0:
        like(out, re.escape(newq), 'missing quarantine directory: -t refuses it, naming it')
    else:
        mx3.start()
        r = send(mx3, SENDER, ['bob@example.com'], msg('QUARANTINE-ME fresh'))
        reply_is(r['dot'], 250, None,
                 'quarantine into a directory that did not exist at start: 250')
        is_(len(maildir_files(newq)), 1, 'quarantine directory created: one file in new/')
        check_stream(up3, 0, 'fresh quarantine upstream')
        mx3.finish()


run(main)
