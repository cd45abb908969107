#!/usr/bin/python3
# `frontmx check -c FILE --ip ADDR [--helo] [--from] [--rcpt]... MESSAGE|-`:
# the whole filter chain and policy offline on one message.  Prints the
# header fields the proxy would add, then "verdict: ACTION SMTP-REPLY";
# exit 0 relay (accept/tag), 2 reject, 3 tempfail, 4 quarantine/discard,
# 64 usage, 78 configuration.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

RULES = r"""header /^Subject:.*\bTAG-ME\b/ TAG
header /^Subject:.*\bREJECT-ME\b/ REJECT 5.7.0 rejected by the check rule
header /^Subject:.*\bTEMPFAIL-ME\b/ TEMPFAIL 4.7.2 deferred by the check rule
header /^Subject:.*\bQUARANTINE-ME\b/ QUARANTINE
header /^Subject:.*\bDISCARD-ME\b/ DISCARD
header /^Subject: dotted$/ WARN
body /^\.hidden secret$/ REJECT 5.7.1 dot line rule
"""

IP = '198.51.100.7'          # outside relay.networks
TRUSTED_IP = '192.0.2.25'    # inside relay.networks


def msg(subject, body=b'body line\r\n'):
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: ' + subject.encode() +
            b'\r\nMessage-ID: <check@example.org>\r\n\r\n' + body)


def lines(out):
    return [x for x in out.split('\n') if x != '']


def last(out):
    ls = lines(out)
    return ls[-1] if ls else ''


def check(conf, message=None, name='', rcpts=('bob@example.com',), ip=IP, **kw):
    rc, out, err = frontmx_check(conf, ip=ip, helo=kw.pop('helo', 'client.example'),
                                 sender=kw.pop('sender', 'alice@example.org'),
                                 rcpts=rcpts, message=message, **kw)
    no_sanitizer(err, name)
    if rc is None:
        diag('%s: timed out' % name)
    return rc, out, err


def main():
    d = tmpdir('fmx-check-')
    rules = write_rules(RULES, d)
    q = make_maildir(os.path.join(d, 'q'))
    cf = Frontmx(None, name='check config', start=False, conf={
        'relay': {'domains': ['example.com', 'example.org'], 'networks': ['192.0.2.0/24']},
        'filters': [content_filter(rules)],
        'quarantine': {'directory': q},
        'tag': {'header': 'X-Frontmx-Tag', 'subject_prefix': '[TAG] '},
        'policy': {'domains': [{'domain': 'example.org', 'content': {'reject': 'tag'}}]},
    }).conffile

    # -- clean: accept, exit 0, the Received field we would add
    rc, out, err = check(cf, msg('hello'), 'clean')
    is_(rc, 0, 'clean: exit 0')
    like(last(out), r'^verdict: accept 250 ', 'clean: last line "verdict: accept 250 ..."')
    like(out, r'(?m)^Received: from client\.example .*\[198\.51\.100\.7\]',
         'clean: printed fields include our Received: (HELO and --ip)')
    like(out, r'(?m)for <bob@example\.com>', 'clean: Received names the recipient')
    ok('\r' not in out, 'clean: LF line ends on the terminal')
    unlike(out, r'(?m)^(From|Subject|Message-ID):', "clean: the client's own fields are not printed")
    unlike(out, r'(?m)^X-Frontmx-Tag:', 'clean: no tag field')

    # -- tag
    rc, out, err = check(cf, msg('please TAG-ME'), 'tag')
    is_(rc, 0, 'tag: exit 0')
    like(last(out), r'^verdict: tag ', 'tag: verdict: tag')
    like(out, r'(?m)^X-Frontmx-Tag: .*content', 'tag: printed fields include X-Frontmx-Tag')
    like(out, r'(?m)^Received:', 'tag: and Received:')
    ls = lines(out)
    is_([i for i, x in enumerate(ls) if x.startswith('verdict:')], [len(ls) - 1],
        'tag: exactly one verdict line, the last')

    # -- reject / tempfail / quarantine / discard
    rc, out, err = check(cf, msg('REJECT-ME'), 'reject')
    is_(rc, 2, 'reject: exit 2')
    is_(last(out), 'verdict: reject 550 5.7.0 rejected by the check rule', 'reject: verdict line')
    rc, out, err = check(cf, msg('TEMPFAIL-ME'), 'tempfail')
    is_(rc, 3, 'tempfail: exit 3')
    is_(last(out), 'verdict: tempfail 451 4.7.2 deferred by the check rule', 'tempfail: verdict line')
    rc, out, err = check(cf, msg('QUARANTINE-ME'), 'quarantine')
    is_(rc, 4, 'quarantine: exit 4')
    like(last(out), r'^verdict: quarantine\b', 'quarantine: verdict: quarantine')
    is_(maildir_files(q) + maildir_files(q, 'tmp'), [], 'quarantine: check delivers nothing into the quarantine')
    rc, out, err = check(cf, msg('DISCARD-ME'), 'discard')
    is_(rc, 4, 'discard: exit 4')
    like(last(out), r'^verdict: discard\b', 'discard: verdict: discard')

    # -- policy applies: example.org maps reject -> tag
    rc, out, err = check(cf, msg('REJECT-ME'), 'policy', rcpts=('carol@example.org',))
    is_(rc, 0, 'policy: example.org recipient, reject mapped to tag: exit 0')
    like(last(out), r'^verdict: tag ', 'policy: verdict: tag')

    # -- relay control
    rc, out, err = check(cf, msg('hello'), 'relay denied', rcpts=('x@elsewhere.example',))
    is_(rc, 2, 'relay denied: exit 2')
    like(last(out), r'^verdict: reject 554 5\.7\.1 ', 'relay denied: verdict: reject 554 5.7.1')
    rc, out, err = check(cf, msg('hello'), 'relay from a trusted network', ip=TRUSTED_IP,
                         rcpts=('x@elsewhere.example',))
    is_(rc, 0, 'relay from relay.networks to any domain: exit 0')
    rc, out, err = check(cf, msg('hello'), 'one of two recipients denied',
                         rcpts=('x@elsewhere.example', 'bob@example.com'))
    is_(rc, 0, 'one recipient denied, one accepted: relayed for the other, exit 0')
    like(out, r'(?m)^Received: .*', 'one recipient denied: Received printed')

    # -- message from stdin ('-') gives the same result as from a file
    m = msg('please TAG-ME')
    rc1, out1, _ = check(cf, m, 'file')
    rc2, out2, err2 = check(cf, None, 'stdin', stdin=m)
    is_(rc2, 0, "stdin '-': exit 0")
    like(last(out2), r'^verdict: tag ', "stdin '-': verdict: tag")
    is_(re.sub(r'(id|as) \S+', r'\1 ID', re.sub(r'\w{3}, \d+ \w{3} \d{4} [\d:]+ [+-]\d{4}', 'DATE', out2)),
        re.sub(r'(id|as) \S+', r'\1 ID', re.sub(r'\w{3}, \d+ \w{3} \d{4} [\d:]+ [+-]\d{4}', 'DATE', out1)),
        "stdin '-': same output as the file (but ids and dates)")

    # -- LF-only message files (as on disk)
    lf = os.path.join(DATA, 'check-lf.eml')
    ok(b'\r' not in read_file(lf), 'fixture check-lf.eml has LF line ends only')
    rc, out, err = check(cf, None, 'LF-only file', path=lf)
    is_(rc, 0, 'LF-only file: accepted, exit 0')
    like(last(out), r'^verdict: accept 250 ', 'LF-only file: verdict: accept')
    rc, out, err = check(cf, None, 'LF-only file with a dot line', path=os.path.join(DATA, 'check-lf-dot.eml'))
    is_(rc, 2, 'LF-only file, ".hidden secret" line: body rule sees the un-stuffed line, exit 2')
    is_(last(out), 'verdict: reject 550 5.7.1 dot line rule', 'LF-only dot line: verdict')
    rc, out, err = check(cf, None, 'LF-only stdin', stdin=read_file(lf).replace(b'quarterly report', b'TAG-ME'))
    is_(rc, 0, 'LF-only on stdin with a TAG rule: exit 0')
    like(last(out), r'^verdict: tag ', 'LF-only on stdin: header rule matched (verdict: tag)')
    rc, out, err = check(cf, b'Subject: no final newline\n\nlast line without newline', 'no final LF')
    is_(rc, 0, 'message without a final newline: exit 0')

    # -- a module in check: rcpt_allow adds a field at the end of the header
    cf2 = Frontmx(None, name='check config (module)', start=False, conf={
        'filters': [{'name': 'allow', 'module': EXAMPLE_MODULE,
                     'options': {'allow': 'bob@example.com'}}],
    }).conffile
    rc, out, err = check(cf2, msg('hello'), 'module allowed', ip='127.0.0.1')
    is_(rc, 0, 'module: allowed recipient, exit 0')
    like(out, r'(?m)^X-Rcpt-Allow: checked 1 recipients$', "module: printed fields include the module's X-Rcpt-Allow")
    like(out, r'(?m)^Received:', 'module: and Received:')
    rc, out, err = check(cf2, msg('hello'), 'module refused', ip='127.0.0.1', rcpts=('eve@example.com',))
    is_(rc, 2, 'module: refused recipient, exit 2')
    is_(last(out), 'verdict: reject 550 5.1.1 <eve@example.com>: recipient not allowed here',
        "module: verdict carries the module's reply")

    # -- usage errors: 64
    rc, out, err = check(cf, msg('hello'), 'missing --ip', ip=None)
    is_(rc, 64, 'missing --ip: exit 64')
    like(err, r'(?i)usage', 'missing --ip: usage on stderr')
    rc, out, err = check(cf, msg('hello'), 'bad --ip', ip='not-an-address')
    is_(rc, 64, '--ip not an address: exit 64')
    rc, out, err = check(cf, msg('hello'), 'unknown option', extra=('--bogus',))
    is_(rc, 64, 'unknown option: exit 64')
    rc, out, err = frontmx_check(cf, ip=IP, path='/nonexistent/message.eml')
    ok(rc is not None and rc >= 64, 'unreadable message file: exit >= 64 (rc=%s)' % rc)
    rc, out, err = frontmx_check(cf, ip=IP, path=os.path.join(DATA, 'check-lf.eml'),
                                 extra=(os.path.join(DATA, 'check-lf.eml'),))
    is_(rc, 64, 'two MESSAGE arguments: exit 64')

    # -- configuration errors: 78 (>= 64)
    bad = os.path.join(d, 'bad.conf')
    with open(bad, 'w') as f:
        f.write(open(cf).read() + 'no_such_key = 1;\n')
    nlines = len(open(bad).read().splitlines())
    rc, out, err = check(bad, msg('hello'), 'bad config')
    is_(rc, 78, 'bad config: exit 78')
    like(err, re.escape(bad) + r':%d:' % nlines, 'bad config: FILE:LINE: on stderr')
    is_(out, '', 'bad config: nothing on stdout')
    badrules = Frontmx(None, name='check config (bad rules)', start=False,
                       conf={'filters': [content_filter(write_rules('header /(/ REJECT\n'))]}).conffile
    rc, out, err = check(badrules, msg('hello'), 'bad rules')
    ok(rc is not None and rc >= 64, 'bad rule file: exit >= 64 (rc=%s)' % rc)
    like(err, r'content\.rules:1:', 'bad rule file: RULES:1: on stderr')
    rc, out, err = check(os.path.join(d, 'missing.conf'), msg('hello'), 'missing config')
    ok(rc is not None and rc >= 64, 'missing config file: exit >= 64 (rc=%s)' % rc)


run(main)
