#!/usr/bin/python3
# upstream.address = "dir:PATH": one Maildir file per recipient in PATH/new
# (written in PATH/tmp, then renamed), starting with Return-Path and
# Delivered-To, then the Received header and the message.
import os
import re
import stat
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403


def files(d, sub):
    p = os.path.join(d, sub)
    return sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else []


def parse(path):
    with open(path, 'rb') as f:
        data = f.read()
    eol = b'\r\n' if b'\r\n' in data else b'\n'
    return data, eol


def check_file(path, sender, rcpt, original, name):
    data, eol = parse(path)
    if eol == b'\r\n':
        ok(re.search(rb'(?<!\r)\n', data) is None, name + ': consistent CRLF line ends')
    else:
        ok(b'\r' not in data, name + ': consistent LF line ends')
    lines = data.split(eol)
    is_(lines[0], b'Return-Path: <%s>' % sender.encode(), name + ': Return-Path first')
    like(lines[1] if len(lines) > 1 else b'', rb'^Delivered-To: <?%s>?$' % re.escape(rcpt.encode()),
         name + ': Delivered-To second')
    rest = eol.join(lines[2:])
    norm = rest.replace(eol, b'\r\n')
    check_relayed(norm, original, name)


def main():
    d = os.path.join(tmpdir('fmx-maildir-'), 'Maildir')
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(d, sub))
    mx = Frontmx('dir:' + d)

    c = SmtpClient(mx.port)
    c.greeting()
    e = c.ehlo()
    reply_is(e, 250, None, 'EHLO with a dir: upstream')

    m1 = b'From: alice@example.org\r\nSubject: one\r\n\r\nfirst\r\n.dot line\r\n..two dots\r\n'
    res = c.transaction('alice@example.org', ['bob@example.com'], m1)
    reply_is(res['mail'], 250, None, 'MAIL 250')
    reply_is(res['rcpt'][0], 250, None, 'RCPT 250')
    reply_is(res['dot'], 250, None, 'message 1 delivered: 250')
    ok(wait_for(lambda: len(files(d, 'new')) == 1, 5), 'one file in new/')
    new1 = files(d, 'new')
    if new1:
        check_file(new1[0], 'alice@example.org', 'bob@example.com', m1, 'message 1')
        st = os.stat(new1[0])
        ok(not st.st_mode & stat.S_IWOTH, 'file is not world-writable')
        ok(st.st_size > len(m1), 'file is complete (%d bytes)' % st.st_size)

    m2 = b'From: alice@example.org\r\nSubject: two\r\n\r\nto two recipients\r\n'
    res = c.transaction('alice@example.org', ['carol@example.com', 'dave@example.com'], m2)
    reply_is(res['dot'], 250, None, 'message 2 (two recipients): 250')
    ok(wait_for(lambda: len(files(d, 'new')) == 3, 5), 'one file per recipient: 3 files in new/')
    got = {}
    for p in files(d, 'new'):
        if p in new1:
            continue
        data, eol = parse(p)
        m = re.search(rb'^Delivered-To: <?([^>\r\n]*)>?', data, re.M)
        got[m.group(1).decode() if m else p] = p
    is_(sorted(got), ['carol@example.com', 'dave@example.com'], 'Delivered-To per recipient')
    for rcpt, p in got.items():
        check_file(p, 'alice@example.org', rcpt, m2, 'message 2 for ' + rcpt)

    m3 = b'Subject: bounce\r\n\r\nnull sender\r\n'
    res = c.transaction('', ['bob@example.com'], m3)
    reply_is(res['dot'], 250, None, 'null sender message: 250')
    big = b'Subject: big\r\n\r\n' + b''.join(b'line %06d .\r\n.%d\r\n' % (i, i) for i in range(8000))
    res = c.transaction('alice@example.org', ['bob@example.com'], big)
    reply_is(res['dot'], 250, None, 'message beyond spool_memory: 250')
    c.quit()
    ok(wait_for(lambda: len(files(d, 'new')) == 5, 5), '5 files in new/')
    seen = set(files(d, 'new'))
    for p in sorted(seen - set(new1) - set(got.values())):
        data, eol = parse(p)
        if b'Subject: bounce' in data:
            check_file(p, '', 'bob@example.com', m3, 'null sender')
        else:
            check_file(p, 'alice@example.org', 'bob@example.com', big, 'big message')
    is_(files(d, 'tmp'), [], 'tmp/ is empty afterwards')
    is_(len(set(os.path.basename(p) for p in seen)), 5, 'unique file names')
    is_(files(d, 'cur'), [], 'cur/ untouched')
    mx.finish()


run(main)
