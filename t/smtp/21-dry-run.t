#!/usr/bin/python3
# dry_run: log and tag what would have happened, relay anyway.  The same
# REJECT rule with dry_run set at filter level (filters[].dry_run), for the
# whole default policy (policy.default.dry_run), for the content group of
# the default policy, and for one recipient domain only
# (policy.domains[].dry_run): relayed with a dry-run note in the tag
# header, while a domain that is not in dry-run still rejects.  A
# policy's dry_run wins over the filter's.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

RULES = r"""header /^Subject:.*\bREJECT-ME\b/ REJECT 5.7.0 rejected by the rule
header /^Subject:.*\bQUARANTINE-ME\b/ QUARANTINE
header /^Subject:.*\bTEMPFAIL-ME\b/ TEMPFAIL
body /^DISCARD-ME$/ DISCARD
"""

SENDER = 'alice@example.net'
RELAY = {'domains': ['example.com', 'example.org'], 'networks': ['192.0.2.0/24']}


def msg(subject, body=b'body line\r\n'):
    return (b'From: alice@example.net\r\nSubject: ' + subject.encode() +
            b'\r\nMessage-ID: <' + subject.replace(' ', '-').encode() + b'@example.net>\r\n\r\n' + body)


def relayed_with_note(mx, up, rcpt, subject, action, name, body=b'body line\r\n'):
    """Send; expect 250, the message upstream tagged content=RESULT (dry-run: would ACTION)."""
    n = up.transactions
    original = msg(subject, body)
    r = send(mx, SENDER, [rcpt], original)
    reply_is(r['dot'], 250, None, name + ': relayed (250) instead of %s' % action)
    if not up.wait_messages(n + 1, 5):
        ok(False, name + ': reached the upstream')
        return None
    m = up.messages[n]
    tags = fields_named(m.data, 'X-Frontmx-Tag')
    is_(len(tags), 1, name + ': one X-Frontmx-Tag field')
    like(tags[0] if tags else b'', rb'^X-Frontmx-Tag: .*content=[a-z0-9_-]+ \(dry-run: would %s\)' % action.encode(),
         name + ': the tag says content would have done %s' % action)
    ok(m.data.endswith(header_block(original)[-60:] + b'\r\n' + body),
       name + ': message otherwise intact')
    is_(m.rcpts, [rcpt], name + ': envelope recipient')
    return m


def rejected(mx, rcpt, name):
    r = send(mx, SENDER, [rcpt], msg('REJECT-ME ' + name))
    reply_is(r['dot'], 550, '5.7.0', name + ': still rejected (550 5.7.0)')
    is_(r['dot'].lines, ['5.7.0 rejected by the rule'], name + ": rule's text")


def main():
    d = tmpdir('fmx-dry-')
    rules = write_rules(RULES, d)
    q = make_maildir(os.path.join(d, 'q'))

    # -- 1. filter level: filters[].dry_run = true
    up = Upstream()
    mx = Frontmx(up, name='frontmx (filter dry_run)', conf={
        'relay': RELAY, 'quarantine': {'directory': q},
        'filters': [content_filter(rules, dry_run=True)],
    })
    relayed_with_note(mx, up, 'bob@example.com', 'REJECT-ME 1', 'reject', 'filter dry_run')
    relayed_with_note(mx, up, 'bob@example.org', 'REJECT-ME 1b', 'reject', 'filter dry_run, other domain')
    relayed_with_note(mx, up, 'bob@example.com', 'TEMPFAIL-ME 1', 'tempfail', 'filter dry_run tempfail')
    relayed_with_note(mx, up, 'bob@example.com', 'QUARANTINE-ME 1', 'quarantine',
                      'filter dry_run quarantine')
    relayed_with_note(mx, up, 'bob@example.com', 'discard body 1', 'discard',
                      'filter dry_run discard', body=b'x\r\nDISCARD-ME\r\n')
    is_(maildir_files(q), [], 'dry-run quarantine: nothing in the quarantine')
    like(mx.log(), r'dry-run: would reject', 'dry run logged ("would reject")')
    check_stream(up, 5, 'filter dry_run upstream')
    mx.finish()

    # -- 2. policy.default.dry_run = true
    up = Upstream()
    mx = Frontmx(up, name='frontmx (policy.default.dry_run)', conf={
        'relay': RELAY,
        'filters': [content_filter(rules)],
        'policy': {'default': {'dry_run': True}},
    })
    relayed_with_note(mx, up, 'bob@example.com', 'REJECT-ME 2', 'reject', 'default policy dry_run')
    relayed_with_note(mx, up, 'bob@example.org', 'REJECT-ME 2b', 'reject', 'default policy dry_run, other domain')
    check_stream(up, 2, 'policy.default.dry_run upstream')
    mx.finish()

    # -- 3. policy.default.content.dry_run = true (one filter group)
    up = Upstream()
    mx = Frontmx(up, name='frontmx (policy.default.content.dry_run)', conf={
        'relay': RELAY,
        'filters': [content_filter(rules)],
        'policy': {'default': {'content': {'dry_run': True}}},
    })
    relayed_with_note(mx, up, 'bob@example.com', 'REJECT-ME 3', 'reject', 'content group dry_run')
    check_stream(up, 1, 'content group dry_run upstream')
    mx.finish()

    # -- 4. per domain: example.org in dry run, example.com not
    up = Upstream()
    mx = Frontmx(up, name='frontmx (per-domain dry_run)', conf={
        'relay': RELAY,
        'filters': [content_filter(rules)],
        'policy': {'domains': [{'domain': 'example.org', 'dry_run': True}]},
    })
    relayed_with_note(mx, up, 'bob@example.org', 'REJECT-ME 4', 'reject', 'example.org dry_run')
    rejected(mx, 'bob@example.com', 'example.com (no dry run)')
    # the dry-run domain's message relayed, the other one not
    check_stream(up, 1, 'per-domain dry_run upstream')
    ok(b'REJECT-ME example.com' not in up.all_bytes(), 'the rejected message never reached the upstream')
    # and the message without any match is not tagged
    r = send(mx, SENDER, ['bob@example.org'], msg('innocent'))
    reply_is(r['dot'], 250, None, 'dry-run domain, clean message: 250')
    if up.wait_messages(2, 5):
        is_(fields_named(up.messages[1].data, 'X-Frontmx-Tag'), [],
            'dry-run domain, clean message: no tag (nothing would have happened)')
    else:
        ok(False, 'clean message relayed')
    mx.finish()

    # -- 5. the policy wins over the filter: filter dry_run = true, but
    #       example.com's policy says dry_run = false
    up = Upstream()
    mx = Frontmx(up, name='frontmx (policy dry_run = false over filter)', conf={
        'relay': RELAY,
        'filters': [content_filter(rules, dry_run=True)],
        'policy': {'domains': [{'domain': 'example.com', 'dry_run': False}]},
    })
    rejected(mx, 'bob@example.com', 'policy dry_run=false beats filter dry_run=true')
    relayed_with_note(mx, up, 'bob@example.org', 'REJECT-ME 5', 'reject',
                      'filter dry_run still applies to other domains')
    check_stream(up, 1, 'policy-over-filter upstream')
    mx.finish()


run(main)
