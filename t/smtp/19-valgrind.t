#!/usr/bin/python3
# Valgrind-clean: the release build (not the ASan one) under memcheck through
# the paths that allocate the most: relay with pipelining, dot-stuffing,
# smuggling attempts, BDAT, the content filter (PCRE2 + GMime), an upstream
# failure, SIGHUP and SIGTERM.  No invalid access, no uninitialised use and
# no definitely lost block, or the daemon's exit status says so.
import os
import shutil
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

VG_STATUS = 97

BODY = (b'From: a@example.org\r\nTo: b@example.com\r\nSubject: vg\r\n\r\n'
        b'line one\r\n.leading dot\r\n..two dots\r\nlast\r\n')


def main():
    release = os.environ.get('FRONTMX_RELEASE', os.path.join(REPO, 'frontmx'))
    if shutil.which('valgrind') is None or not os.access(release, os.X_OK):
        # both come with make test (valgrind is in DEBS): missing is a failure
        ok(False, 'valgrind (make deps) and %s (make) are there' % release)
        return
    d = tmpdir('fmx-vg-')
    vglog = os.path.join(d, 'valgrind.log')
    wrapper = os.path.join(d, 'frontmx-vg')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec valgrind -q --error-exitcode=%d --leak-check=full '
                '--errors-for-leak-kinds=definite --track-origins=yes '
                '--log-file=%s %s "$@"\n' % (VG_STATUS, vglog, release))
    os.chmod(wrapper, 0o755)
    os.environ['FRONTMX'] = wrapper
    rules = os.path.join(d, 'content.rules')
    with open(rules, 'w') as f:
        f.write('header /^Subject:.*forbidden/i REJECT 5.7.1 no\n'
                'filename /\\.exe$/i REJECT 5.7.1 no exe\n')
    up = Upstream()
    # jit = no: valgrind cannot see into PCRE2's JIT-generated code and
    # reports its reads as uninitialised; the interpreter is checkable.
    mx = Frontmx(up, conf={'filters': [{'name': 'content',
                                         'options': {'rules': rules, 'jit': 'no'}}]},
                 name='frontmx under valgrind')

    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    r = c.transaction('a@example.org', ['b@example.com'], BODY)
    reply_is(r['dot'], 250, None, 'relayed under valgrind')
    r = c.transaction('a@example.org', ['b@example.com'],
                      BODY.replace(b'Subject: vg', b'Subject: forbidden'))
    reply_is(r['dot'], 550, '5.7.1', 'content rule rejects under valgrind')
    # a smuggling attempt: bare LF dot inside the message
    c.send(b'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n')
    c.reply(), c.reply(), c.reply()
    c.send(b'Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n.\r\n')
    reply_is(c.reply(), 550, '5.5.2', 'bare LF refused under valgrind')
    # BDAT
    chunk = b'Subject: chunked\r\n\r\nchunk body\r\n'
    c.send(b'MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nBDAT %d LAST\r\n'
           % len(chunk) + chunk)
    c.reply(), c.reply()
    reply_is(c.reply(), 250, None, 'BDAT relayed under valgrind')
    c.quit()
    mx.hup()
    # upstream failure path
    up.unlisten()
    up.drop_all()
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo('client.example')
    reply_is(c.cmd('MAIL FROM:<a@example.org>'), 451, None, 'upstream down: 451 under valgrind')
    c.quit()
    rc = mx.stop(timeout=30)
    is_(rc, 0, 'exit status 0 under valgrind (%d would mean memcheck errors)' % VG_STATUS)
    with open(vglog) as f:
        report = f.read()
    is_(report.strip(), '', 'valgrind reported nothing')
    if report.strip():
        diag(report[-4000:])


run(main, timeout=120)
