#!/usr/bin/python3
# The content filter's rule scopes through the running proxy: body lines
# (also across the 64 KiB body chunks), header rules on RFC 2047 encoded
# and folded fields, attachment file names (plain, RFC 2231 encoded and
# continued, RFC 2047, Content-Type name=, nested message/rfc822), MIME
# header rules.  Clean look-alikes pass.  A bad rule file makes
# `frontmx -t` fail with "FILE:LINE:", stops the start, and a reload keeps
# the old rules.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

RULES = """# 23-content.t rules
body /^FORBIDDEN BODY LINE$/ REJECT 5.7.1 body rule matched
header /^Subject: Gr\u00fc\u00dfe aus Z\u00fcrich$/ REJECT 5.7.1 utf8 subject rule
header /^Subject: .*\\bcheap pills\\b/i REJECT 5.7.1 encoded subject rule
mime /^Content-Type: application\\/x-msdownload\\b/i REJECT 5.7.1 mime type rule
filename /\\.exe$/i REJECT 5.7.1 executable attachment
"""

SENDER = 'alice@example.org'
RCPT = 'bob@example.com'


def simple(subject=b'hello', body=b'text\r\n', extra=b''):
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: ' + subject +
            b'\r\n' + extra + b'\r\n' + body)


def with_attachment(part_headers, subject=b'attachment', payload=b'TVqQAAMAAAAEAAAA\r\n'):
    """multipart/mixed: a text part and one part with the given header lines."""
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: ' + subject + b'\r\n'
            b'MIME-Version: 1.0\r\n'
            b'Content-Type: multipart/mixed; boundary="BOUNDARY-1"\r\n'
            b'\r\n'
            b'This is a multi-part message in MIME format.\r\n'
            b'--BOUNDARY-1\r\n'
            b'Content-Type: text/plain; charset=us-ascii\r\n'
            b'\r\n'
            b'see attachment\r\n'
            b'--BOUNDARY-1\r\n' + b''.join(h + b'\r\n' for h in part_headers) +
            b'Content-Transfer-Encoding: base64\r\n'
            b'\r\n' + payload +
            b'--BOUNDARY-1--\r\n')


def nested(inner):
    """inner message attached as message/rfc822."""
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: fwd\r\n'
            b'MIME-Version: 1.0\r\n'
            b'Content-Type: multipart/mixed; boundary="OUTER"\r\n'
            b'\r\n'
            b'--OUTER\r\n'
            b'Content-Type: text/plain\r\n'
            b'\r\n'
            b'forwarded\r\n'
            b'--OUTER\r\n'
            b'Content-Type: message/rfc822\r\n'
            b'\r\n' + inner.replace(b'BOUNDARY-1', b'INNER-2') +
            b'--OUTER--\r\n')


def octet(disposition, ctype=b'Content-Type: application/octet-stream'):
    return [ctype, disposition]


REFUSED = [
    # (name, message, reply text)
    ('body line', simple(body=b'first\r\nFORBIDDEN BODY LINE\r\nlast\r\n'), 'body rule matched'),
    ('UTF-8 B-encoded Subject',
     simple(subject=b'=?UTF-8?B?R3LDvMOfZSBhdXMgWsO8cmljaA==?='), 'utf8 subject rule'),
    ('ISO-8859-1 Q-encoded Subject',
     simple(subject=b'=?ISO-8859-1?Q?Very_CHEAP_=50ills?= today'), 'encoded subject rule'),
    ('folded Subject of two encoded-words',
     simple(subject=b'=?UTF-8?Q?cheap?=\r\n =?UTF-8?Q?_pills?='), 'encoded subject rule'),
    ('Subject with a space before the colon',
     b'From: alice@example.org\r\nSubject : buy cheap pills\r\n\r\nx\r\n', 'encoded subject rule'),
    ('plain filename="x.exe"',
     with_attachment(octet(b'Content-Disposition: attachment; filename="x.exe"')), 'executable attachment'),
    ('upper-case filename=X.EXE (rule flag i)',
     with_attachment(octet(b'Content-Disposition: attachment; filename=X.EXE')), 'executable attachment'),
    ("RFC 2231 filename*=UTF-8''evil%2Eexe",
     with_attachment(octet(b"Content-Disposition: attachment; filename*=UTF-8''evil%2Eexe")),
     'executable attachment'),
    ('RFC 2231 continuations filename*0/*1/*2',
     with_attachment(octet(b'Content-Disposition: attachment;\r\n filename*0="ev";\r\n'
                           b' filename*1="il.e";\r\n filename*2="xe"')), 'executable attachment'),
    ('RFC 2231 encoded continuations filename*0*/*1*',
     with_attachment(octet(b"Content-Disposition: attachment;\r\n filename*0*=UTF-8''ev%69l;\r\n"
                           b" filename*1*=%2E%65xe")), 'executable attachment'),
    ('RFC 2047 encoded filename',
     with_attachment(octet(b'Content-Disposition: attachment; filename="=?UTF-8?B?ZXZpbC5leGU=?="')),
     'executable attachment'),
    ('Content-Type name= only',
     with_attachment([b'Content-Type: application/octet-stream; name="setup.exe"']),
     'executable attachment'),
    ('name=x.exe behind filename=x.txt',
     with_attachment(octet(b'Content-Disposition: attachment; filename="x.txt"',
                           b'Content-Type: application/octet-stream; name="x.exe"')),
     'executable attachment'),
    ('exe inside an attached message/rfc822',
     nested(with_attachment(octet(b'Content-Disposition: attachment; filename="inner.exe"'))),
     'executable attachment'),
    ('mime Content-Type rule on a part',
     with_attachment([b'Content-Type: application/x-msdownload',
                      b'Content-Disposition: attachment; filename="tool.bin"']), 'mime type rule'),
    ('mime Content-Type rule, folded parameter',
     with_attachment([b'Content-Type:\r\n application/X-MSDOWNLOAD;\r\n name="tool.bin"']),
     'mime type rule'),
    ('mime rule on a single-part message',
     simple(extra=b'MIME-Version: 1.0\r\nContent-Type: application/x-msdownload\r\n',
            body=b'TVqQ\r\n'), 'mime type rule'),
]

CLEAN = [
    ('plain text', simple()),
    ('body line not alone on its line', simple(body=b'x FORBIDDEN BODY LINE\r\nFORBIDDEN BODY LINE y\r\n')),
    ('Subject that decodes to something else', simple(subject=b'=?UTF-8?B?R3LDvMOfZSBhdXMgQmVybg==?=')),
    ('pills without cheap', simple(subject=b'=?UTF-8?Q?pills?=')),
    ('attachment report.pdf',
     with_attachment(octet(b'Content-Disposition: attachment; filename="report.pdf"',
                           b'Content-Type: application/pdf; name="report.pdf"'))),
    ('attachment x.exe.txt', with_attachment(octet(b'Content-Disposition: attachment; filename="x.exe.txt"'))),
    ("RFC 2231 filename*=UTF-8''notes%2Etxt",
     with_attachment(octet(b"Content-Disposition: attachment; filename*=UTF-8''notes%2Etxt"))),
    ('continuations making exe.txt',
     with_attachment(octet(b'Content-Disposition: attachment;\r\n filename*0="exe";\r\n filename*1=".txt"'))),
    ('application/x-msdownloader is another type',
     with_attachment([b'Content-Type: application/x-msdownloader'])),
    ('".exe" only in the body text', simple(body=b'please run setup.exe\r\nfilename="x.exe"\r\n')),
]


def chunk_body(offset):
    """A body whose forbidden line starts at body offset `offset` (so it
    straddles the 64 KiB chunk boundary when offset is just below it)."""
    filler = b''
    while len(filler) < offset - 80:
        filler += b'x' * 76 + b'\r\n'
    pad = offset - len(filler) - 2
    filler += b'y' * pad + b'\r\n'
    assert len(filler) == offset
    return filler + b'FORBIDDEN BODY LINE\r\n' + b'z' * 70 + b'\r\n' * 3


def main():
    d = tmpdir('fmx-content-')
    rules = write_rules(RULES, d)
    up = Upstream()
    mx = Frontmx(up, conf={'filters': [content_filter(rules)]})

    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    relayed = []        # clean messages the client got 250 for
    accepted = 0        # every 250, for the upstream transaction count
    for name, m, text in REFUSED:
        r = c.transaction(SENDER, [RCPT], m)
        reply_is(r['dot'], 550, '5.7.1', '%s: 550 5.7.1' % name)
        like(r['dot'].text, re.escape(text) + '$', '%s: refused by the rule "%s"' % (name, text))
        accepted += r['dot'] is not None and r['dot'].code == 250
    for name, m in CLEAN:
        r = c.transaction(SENDER, [RCPT], m)
        reply_is(r['dot'], 250, None, 'clean: %s: relayed' % name)
        if r['dot'] and r['dot'].code == 250:
            relayed.append((name, m))
            accepted += 1

    # body lines split across 64 KiB chunks, and beyond spool_memory
    for off in (65536 - 10, 65536 - 19, 65536 - 20, 65536, 65536 + 1, 200000):
        r = c.transaction(SENDER, [RCPT], simple(subject=b'big', body=chunk_body(off)))
        reply_is(r['dot'], 550, '5.7.1', 'forbidden line at body offset %d: 550' % off)
        accepted += r['dot'] is not None and r['dot'].code == 250
    big_clean = simple(subject=b'big clean', body=chunk_body(65530).replace(b'FORBIDDEN', b'ALLOWED'))
    r = c.transaction(SENDER, [RCPT], big_clean)
    reply_is(r['dot'], 250, None, 'big clean message: relayed')
    if r['dot'] and r['dot'].code == 250:
        relayed.append(('big clean', big_clean))
        accepted += 1
    c.quit()

    ok(up.wait_messages(accepted, 10), 'upstream got the %d accepted messages' % accepted)
    got = [split_received(x.data)[1] for x in up.messages]
    for name, m in relayed:
        ok(m in got, 'clean: %s: relayed unchanged' % name)
    check_stream(up, accepted, 'upstream (as many transactions as 250 replies)')
    allb = up.all_bytes()
    ok(b'evil' not in allb and b'inner.exe' not in allb and b'x-msdownload\r\n' not in allb,
       'no refused message reached the upstream')

    # -- reload with a broken rule file keeps the old rules; a good one applies
    with open(rules, 'a') as f:
        f.write('header /^Subject: reload-test/ REJECT 5.7.1 new rule\n')
        f.write('header /unterminated REJECT\n')
    n = len(RULES.splitlines()) + 2
    loglen = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: re.search(re.escape(rules) + ':%d:' % n, mx.log()[loglen:]), 5),
       'HUP with a broken rule file: "RULES:%d:" logged' % n)
    ok(wait_for(lambda: 'reload failed, keeping the running configuration' in mx.log()[loglen:], 10),
       'HUP with a broken rule file: the reload is over (logged), the old configuration kept')
    ok(mx.alive(), 'daemon alive after the failed reload')
    r = send(mx, SENDER, [RCPT], simple(subject=b'reload-test 1'))
    reply_is(r['dot'], 250, None, 'old rules still in force (new rule not loaded)')
    r = send(mx, SENDER, [RCPT], simple(body=b'FORBIDDEN BODY LINE\r\n'))
    reply_is(r['dot'], 550, '5.7.1', 'old rules still in force (body rule)')
    with open(rules, 'w') as f:
        f.write(RULES + 'header /^Subject: reload-test/ REJECT 5.7.1 new rule\n')
    mx.hup()
    ok(wait_for(lambda: send(mx, SENDER, [RCPT], simple(subject=b'reload-test 2'))['dot'].code == 550,
                5, 0.2), 'HUP with a good rule file: the new rule applies')
    mx.finish()

    # -- bad rule files: frontmx -t says FILE:LINE:, the daemon does not start
    bad = [
        ('unknown scope', 'subject /x/ REJECT\n', 'unknown scope'),
        ('bad regex', 'header /(unclosed/ REJECT\n', 'regex'),
        ('unknown action', 'header /x/ BOUNCE\n', 'unknown action'),
        ('enhanced code of the wrong class', 'header /x/ REJECT 4.7.1 nope\n', '4.7.1'),
        ('unterminated pattern', 'body /abc REJECT\n', 'unterminated'),
        ('unknown flag', 'body /abc/q REJECT\n', 'flag'),
        ('non-ASCII text', 'body /abc/ REJECT caf\u00e9\n', 'non-ASCII'),
        ('missing action', 'body /abc/\n', 'action'),
    ]
    for name, line, word in bad:
        path = write_rules('# comment\n\nheader /^Subject: ok/ TAG\n' + line)
        t = Frontmx(None, name='bad rules (%s)' % name, start=False,
                    conf={'filters': [content_filter(path)]})
        rc, out = frontmx_t(t.conffile)
        ok(rc not in (0, None), '%s: frontmx -t fails (rc=%s)' % (name, rc))
        like(out, re.escape(path) + r':4: ', '%s: error names %s:4:' % (name, os.path.basename(path)))
        like(out, '(?i)' + re.escape(word), '%s: error says what is wrong (%s)' % (name, word))
        no_sanitizer(out, name)
    missing = os.path.join(d, 'no-such.rules')
    t = Frontmx(None, name='missing rules', start=False, conf={'filters': [content_filter(missing)]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), 'missing rule file: frontmx -t fails')
    like(out, re.escape(missing) + ': cannot open', 'missing rule file: "PATH: cannot open"')
    good = Frontmx(None, name='good rules', start=False, conf={'filters': [content_filter(rules)]})
    rc, out = frontmx_t(good.conffile)
    is_(rc, 0, 'good rule file: frontmx -t exits 0')

    # the daemon refuses to start with a bad rule file
    path = write_rules('header /x/ REJECT\nheader /(/ REJECT\n')
    t = Frontmx(None, name='daemon with bad rules', start=False,
                conf={'filters': [content_filter(path)]})
    t.start(expect_start=False)
    try:
        rc = t.proc.wait(timeout=10)
    except Exception:
        rc = None
    ok(rc not in (0, None), 'daemon with a bad rule file exits non-zero (rc=%s)' % rc)
    like(t.log(), re.escape(path) + ':2:', 'daemon with a bad rule file: FILE:LINE: in its output')
    t.check_sanitizers()


run(main)
