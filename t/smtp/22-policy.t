#!/usr/bin/python3
# Per-domain policy: the content filter names its result ("reject"), the
# transaction's policy maps it to an action.  default maps reject ->
# reject, example.org maps it to tag.  Lookup by recipient domain, exact
# then parent domains.  One policy per transaction: a recipient whose
# policy differs from the first accepted one gets 452 4.5.3 and never
# reaches the upstream.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

RULES = r"""header /^Subject:.*\bBAD-WORD\b/ REJECT 5.7.0 bad word
header /^Subject:.*\bMEH-WORD\b/ TAG
"""

SENDER = 'alice@example.net'


def msg(subject):
    return (b'From: alice@example.net\r\nSubject: ' + subject.encode() +
            b'\r\n\r\nbody\r\n')


def by_subject(up, subject):
    for m in up.messages:
        if fields_named(m.data, 'Subject') and subject.encode() in fields_named(m.data, 'Subject')[0]:
            return m
    return None


def main():
    rules = write_rules(RULES)
    up = Upstream()
    mx = Frontmx(up, conf={
        'relay': {'domains': ['example.com', 'example.org', '.example.org', 'other.example'],
                  'networks': ['192.0.2.0/24']},
        'filters': [content_filter(rules)],
        'tag': {'subject_prefix': '[SPAM] '},
        'policy': {
            'default': {'content': {'reject': 'reject'}},
            'domains': [{'domain': 'example.org', 'content': {'reject': 'tag'}},
                        {'domain': 'other.example', 'content': {'tag': 'reject'}}],
        },
    })
    nrelayed = 0

    # -- example.org: reject -> tag
    r = send(mx, SENDER, ['bob@example.org'], msg('BAD-WORD for org'))
    reply_is(r['rcpt'][0], 250, None, 'example.org: RCPT 250')
    reply_is(r['dot'], 250, None, 'example.org: reject mapped to tag -> relayed (250)')
    nrelayed += 1
    ok(up.wait_messages(nrelayed, 5), 'example.org: message reached the upstream')
    m = by_subject(up, 'BAD-WORD for org')
    if m:
        tag = fields_named(m.data, 'X-Frontmx-Tag')
        is_(len(tag), 1, 'example.org: tagged (X-Frontmx-Tag)')
        like(tag[0] if tag else b'', rb'content=', 'example.org: the tag names the filter')
        is_(fields_named(m.data, 'Subject'), [b'Subject: [SPAM] BAD-WORD for org\r\n'],
            'example.org: Subject prefixed like any tag')
    else:
        ok(False, 'example.org message relayed')

    # -- example.com (no entry): the default policy, reject
    r = send(mx, SENDER, ['bob@example.com'], msg('BAD-WORD for com'))
    reply_is(r['dot'], 550, '5.7.0', 'example.com: default policy rejects (550 5.7.0)')
    is_(r['dot'].lines, ['5.7.0 bad word'], "example.com: the rule's text")

    # -- parent domain lookup: sub.example.org and a.b.example.org use example.org's
    for rcpt in ('carol@sub.example.org', 'dave@a.b.example.org', 'Erin@EXAMPLE.ORG'):
        r = send(mx, SENDER, [rcpt], msg('BAD-WORD for %s' % rcpt))
        reply_is(r['rcpt'][0], 250, None, '%s: RCPT 250' % rcpt)
        reply_is(r['dot'], 250, None, "%s: example.org's policy (tag) applies" % rcpt)
        nrelayed += 1
        ok(up.wait_messages(nrelayed, 5), '%s: relayed' % rcpt)
        m = by_subject(up, 'BAD-WORD for %s' % rcpt)
        is_(len(fields_named(m.data, 'X-Frontmx-Tag')) if m else None, 1, '%s: tagged' % rcpt)

    # -- a domain policy maps another result: TAG -> reject for other.example only
    r = send(mx, SENDER, ['bob@other.example'], msg('MEH-WORD other'))
    reply_is(r['dot'], 550, None, 'other.example: tag mapped to reject -> 550')
    r = send(mx, SENDER, ['bob@example.com'], msg('MEH-WORD com'))
    reply_is(r['dot'], 250, None, "example.com: the same TAG rule relays (default has no 'tag' mapping)")
    nrelayed += 1
    # ... and other.example inherits default's reject = reject
    r = send(mx, SENDER, ['bob@other.example'], msg('BAD-WORD other'))
    reply_is(r['dot'], 550, '5.7.0', "other.example: default's reject mapping still applies")

    # -- one policy per transaction
    before = len(up.commands())
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'mixed: MAIL 250')
    reply_is(c.cmd('RCPT TO:<a@example.com>'), 250, None, 'mixed: RCPT a@example.com 250 (fixes the policy)')
    r = c.cmd('RCPT TO:<b@example.org>')
    reply_is(r, 452, '4.5.3', 'mixed: RCPT b@example.org (other policy) 452 4.5.3')
    r2 = c.cmd('RCPT TO:<c@sub.example.org>')
    reply_is(r2, 452, '4.5.3', 'mixed: RCPT c@sub.example.org (example.org policy) 452 4.5.3')
    reply_is(c.cmd('RCPT TO:<b@example.com>'), 250, None, 'mixed: RCPT b@example.com (same policy) 250')
    d, f = c.data(msg('mixed clean'))
    reply_is(f, 250, None, 'mixed: the message for the example.com recipients is relayed')
    nrelayed += 1
    # the deferred recipient in its own transaction, same session
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'retry: MAIL 250')
    reply_is(c.cmd('RCPT TO:<b@example.org>'), 250, None, 'retry: RCPT b@example.org alone 250')
    reply_is(c.cmd('RCPT TO:<c@sub.example.org>'), 250, None,
             'retry: RCPT c@sub.example.org (same policy as example.org) 250')
    reply_is(c.cmd('RCPT TO:<x@example.com>'), 452, '4.5.3', 'retry: now example.com is the odd one: 452')
    d, f = c.data(msg('BAD-WORD retry'))
    reply_is(f, 250, None, 'retry: relayed and tagged under example.org policy')
    nrelayed += 1
    c.quit()

    ok(up.wait_messages(nrelayed, 5), 'upstream got %d messages' % nrelayed)
    m = by_subject(up, 'mixed clean')
    is_(m.rcpts if m else None, ['a@example.com', 'b@example.com'],
        'mixed: upstream envelope holds only the example.com recipients')
    m = by_subject(up, 'BAD-WORD retry')
    is_(m.rcpts if m else None, ['b@example.org', 'c@sub.example.org'], 'retry: upstream envelope')
    is_(len(fields_named(m.data, 'X-Frontmx-Tag')) if m else None, 1, 'retry: tagged')
    cmds = up.commands()[before:]
    rcpts_seen = [x for x in cmds if x.upper().startswith('RCPT')]
    is_(rcpts_seen, ['RCPT TO:<a@example.com>', 'RCPT TO:<b@example.com>',
                     'RCPT TO:<b@example.org>', 'RCPT TO:<c@sub.example.org>'],
        'the 452 recipients were never relayed in the mixed transaction')
    check_stream(up, nrelayed, 'upstream')
    ok(b'BAD-WORD for com' not in up.all_bytes() and b'MEH-WORD other' not in up.all_bytes(),
       'rejected messages never reached the upstream')
    mx.finish()


run(main)
