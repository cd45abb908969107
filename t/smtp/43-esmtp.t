#!/usr/bin/python3
# ESMTP extensions the proxy honours itself or passes through:
#   SIZE (RFC 1870), SMTPUTF8 (RFC 6531), DSN (RFC 3461), CHUNKING/BDAT
#   (RFC 3030, converted to DATA upstream).
# Everything is checked on the wire at both ends: what the client is told,
# and the exact lines the upstream receives (parameters re-serialised,
# refused commands never forwarded).  A real Postfix takes the DSN
# parameters at the end.
import os
import re
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import postfix  # noqa: E402

LIMIT = 20000           # limits.message_size of both proxies
RICH = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'SMTPUTF8', 'DSN']
POOR = ['PIPELINING', '8BITMIME', 'ENHANCEDSTATUSCODES']      # no SIZE, SMTPUTF8, DSN

BODY = b'From: alice@example.org\r\nSubject: esmtp\r\n\r\nbody line\r\n'


# ---------------------------------------------------------------- helpers

def caps(reply):
    return [l.upper() for l in reply.lines[1:]]


def keywords(reply):
    return [l.split(' ')[0].upper() for l in reply.lines[1:]]


def session(mx, helo='client.example'):
    c = SmtpClient(mx.port)
    c.greeting()
    e = c.ehlo(helo)
    return c, e


def up_lines(up):
    """Every line the upstream received, all connections, in order (bytes)."""
    with up.lock:
        return [l for c in up.conns for l in c.lines]


def up_cmd_line(up, prefix):
    """The upstream command lines starting with prefix (bytes, CRLF kept)."""
    return [l for l in up_lines(up) if l.startswith(prefix)]


def msgs_from(up, sender):
    with up.lock:
        return [m for m in up.messages if m.mail_cmd.startswith('MAIL FROM:<%s>' % sender)]


def msg_by_marker(up, marker):
    """Messages whose MAIL line (raw bytes) contains marker."""
    with up.lock:
        return [m for m in up.messages if marker in m.mail_cmd.encode('latin-1')]


def bdat(c, data, last=False, wait=True):
    c.send(b'BDAT %d%s\r\n' % (len(data), b' LAST' if last else b'') + data)
    return c.reply() if wait else None


def mail_rcpt(c, sender, rcpt='bob@example.com', tag=''):
    r1 = c.cmd('MAIL FROM:<%s>' % sender)
    r2 = c.cmd('RCPT TO:<%s>' % rcpt)
    ok(r1.code == 250 and r2.code == 250, '%sMAIL + RCPT accepted (%r %r)' % (tag, r1, r2))
    return r1.code == 250 and r2.code == 250


# ---------------------------------------------------------------- SIZE

def test_size(mx, up, mx2, up2, count):
    c, e = session(mx)
    ok('SIZE %d' % LIMIT in caps(e), 'SIZE: EHLO advertises SIZE %d (limits.message_size)' % LIMIT)
    r = c.cmd('MAIL FROM:<size-big@example.org> SIZE=%d' % (LIMIT + 1))
    reply_is(r, 552, '5.3.4', 'SIZE=limit+1: 552 5.3.4')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'SIZE=limit+1: no transaction opened')
    r = c.cmd('MAIL FROM:<size-huge@example.org> SIZE=99999999999999999999999')
    ok(r.code in (501, 552) and r.enh in ('5.5.4', '5.3.4'),
       'SIZE beyond 64 bits: refused 501/552 (%r)' % (r,))
    reply_is(c.cmd('MAIL FROM:<size-bad@example.org> SIZE=12abc'), 501, '5.5.4', 'SIZE=12abc: 501 5.5.4')
    reply_is(c.cmd('MAIL FROM:<size-bad@example.org> SIZE'), 501, '5.5.4', 'SIZE without a value: 501 5.5.4')
    res = c.transaction('size-ok@example.org', ['bob@example.com'], BODY, params=' SIZE=%d' % LIMIT)
    reply_is(res['mail'], 250, None, 'SIZE=limit: MAIL accepted')
    reply_is(res['dot'], 250, None, 'SIZE=limit: message relayed')
    count[0] += 1
    c.quit()
    allb = up.all_bytes()
    ok(b'size-big@' not in allb and b'size-huge@' not in allb and b'size-bad@' not in allb,
       'SIZE: refused MAILs never reached the upstream')
    ok(up.wait_messages(count[0], 10), 'SIZE: message relayed')
    got = up_cmd_line(up, b'MAIL FROM:<size-ok@')
    is_(got, [b'MAIL FROM:<size-ok@example.org> SIZE=%d\r\n' % LIMIT],
        'SIZE forwarded to an upstream that advertises SIZE')

    c, e = session(mx2)
    ok('SIZE %d' % LIMIT in caps(e), 'SIZE: advertised even when the upstream has no SIZE')
    reply_is(c.cmd('MAIL FROM:<size-big2@example.org> SIZE=%d' % (LIMIT + 1)), 552, '5.3.4',
             'no-SIZE upstream: SIZE=limit+1 still 552 5.3.4 (the proxy enforces it)')
    res = c.transaction('size-drop@example.org', ['bob@example.com'], BODY, params=' SIZE=%d' % len(BODY))
    reply_is(res['dot'], 250, None, 'no-SIZE upstream: message with SIZE= relayed')
    count[1] += 1
    c.quit()
    ok(up2.wait_messages(count[1], 10), 'no-SIZE upstream: message arrived')
    is_(up_cmd_line(up2, b'MAIL FROM:<size-drop@'), [b'MAIL FROM:<size-drop@example.org>\r\n'],
        'SIZE dropped for an upstream that does not advertise it')
    ok(b'size-big2@' not in up2.all_bytes(), 'no-SIZE upstream: refused MAIL never forwarded')


# ---------------------------------------------------------------- SMTPUTF8

U_FROM = 'jöran@exämple.org'
U_RCPT = 'ünïcode@example.com'


def test_smtputf8(mx, up, mx2, up2, count):
    c, e = session(mx)
    ok('SMTPUTF8' in keywords(e), 'SMTPUTF8: advertised when the upstream has it')
    r = c.cmd('MAIL FROM:<%s> SMTPUTF8' % U_FROM)
    reply_is(r, 250, None, 'SMTPUTF8: UTF-8 sender with SMTPUTF8 accepted')
    reply_is(c.cmd('RCPT TO:<%s>' % U_RCPT), 250, None, 'SMTPUTF8: UTF-8 recipient accepted')
    d, f = c.data(b'From: =?utf-8?q?j=C3=B6ran?= <j\xc3\xb6ran@ex\xc3\xa4mple.org>\r\n'
                  b'Subject: utf8\r\n\r\nk\xc3\xa4se\r\n')
    reply_is(f, 250, None, 'SMTPUTF8: message relayed')
    count[0] += 1
    ok(up.wait_messages(count[0], 10), 'SMTPUTF8: upstream got it')
    is_(up_cmd_line(up, b'MAIL FROM:<j\xc3\xb6ran'),
        ['MAIL FROM:<jöran@exämple.org> SMTPUTF8\r\n'.encode('utf-8')],
        'SMTPUTF8: upstream MAIL has the UTF-8 address and SMTPUTF8')
    is_(up_cmd_line(up, 'RCPT TO:<ü'.encode('utf-8')),
        ['RCPT TO:<ünïcode@example.com>\r\n'.encode('utf-8')],
        'SMTPUTF8: upstream RCPT has the UTF-8 address')

    # the same addresses without SMTPUTF8 on MAIL
    reply_is(c.cmd('MAIL FROM:<%s>' % U_FROM), 553, '5.6.7', 'no SMTPUTF8 parameter: UTF-8 sender 553 5.6.7')
    reply_is(c.cmd('MAIL FROM:<ascii-tx@example.org>'), 250, None, 'ASCII MAIL without SMTPUTF8')
    reply_is(c.cmd('RCPT TO:<%s>' % U_RCPT), 553, '5.6.7',
             'no SMTPUTF8 on this MAIL: UTF-8 recipient 553 5.6.7')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    c.quit()

    # invalid UTF-8, with SMTPUTF8: refused, never forwarded
    bad = [(b'\xc3\x28', 'C3 28 (bad continuation)'), (b'\xc0\xaf', 'C0 AF (overlong "/")'),
           (b'\xed\xa0\x80', 'ED A0 80 (UTF-16 surrogate)'), (b'\xf4\x90\x80\x80', 'F4 90 80 80 (> U+10FFFF)'),
           (b'\xe0\x80\xaf', 'E0 80 AF (overlong 3-byte)'), (b'\xc3', 'C3 then "@" (truncated)')]
    c, e = session(mx)
    for i, (seq, name) in enumerate(bad):
        line = b'MAIL FROM:<bad%dx' % i + seq + b'@example.org> SMTPUTF8'
        r = c.cmd(line)
        ok(r.code is not None and r.code // 100 == 5, 'invalid UTF-8 %s in MAIL with SMTPUTF8: 5xx (%r)' % (name, r))
    # esmtp-keyword stays ASCII under SMTPUTF8 (RFC 6531 3.3 extends only
    # the value): a UTF-8 keyword is a syntax error, never echoed back raw
    # (found by t/fuzz/smtp_parse)
    for kw in (b'K\xc3\xa9Y=1', b'\xc3\xa9', b'X-\xe2\x82\xac'):
        r = c.cmd(b'MAIL FROM:<kw@example.org> SMTPUTF8 ' + kw)
        reply_is(r, 501, '5.5.4', 'UTF-8 esmtp-keyword %r: 501 5.5.4' % kw)
        ok(r is not None and not any(b >= 0x80 for b in r.raw),
           'UTF-8 esmtp-keyword %r: not echoed (%r)' % (kw, r))
    reply_is(c.cmd('MAIL FROM:<%s> SMTPUTF8' % U_FROM), 250, None, 'valid SMTPUTF8 MAIL after the refusals')
    for i, (seq, name) in enumerate(bad[:2]):
        r = c.cmd(b'RCPT TO:<badr%dx' % i + seq + b'@example.com>')
        ok(r.code is not None and r.code // 100 == 5, 'invalid UTF-8 %s in RCPT of an SMTPUTF8 MAIL: 5xx (%r)' % (name, r))
    reply_is(c.cmd('RSET'), 250, None, 'RSET')
    reply_is(c.cmd('NOOP'), 250, None, 'session in step after invalid UTF-8')
    c.quit()
    allb = up.all_bytes()
    ok(not re.search(rb'<bad\d|<badr\d', allb), 'invalid UTF-8 addresses never reached the upstream')
    ok(all(b'\xc0' not in l and b'\xed\xa0' not in l for l in up_lines(up)), 'no invalid UTF-8 byte upstream')

    # upstream without SMTPUTF8
    c, e = session(mx2)
    ok('SMTPUTF8' not in keywords(e), 'no-SMTPUTF8 upstream: SMTPUTF8 not advertised')
    reply_is(c.cmd('MAIL FROM:<plain8@example.org> SMTPUTF8'), 555, '5.5.4',
             'no-SMTPUTF8 upstream: SMTPUTF8 parameter 555 5.5.4')
    r = c.cmd('MAIL FROM:<%s> SMTPUTF8' % U_FROM)
    ok(r.code in (553, 555), 'no-SMTPUTF8 upstream: UTF-8 sender refused 553/555 (%r)' % (r,))
    reply_is(c.cmd('MAIL FROM:<ascii2@example.org>'), 250, None, 'no-SMTPUTF8 upstream: ASCII MAIL fine')
    reply_is(c.cmd('RCPT TO:<%s>' % U_RCPT), 553, '5.6.7', 'no-SMTPUTF8 upstream: UTF-8 RCPT 553 5.6.7')
    c.cmd('RSET')
    c.quit()
    ok(b'plain8@' not in up2.all_bytes() and b'SMTPUTF8' not in up2.all_bytes(),
       'no-SMTPUTF8 upstream never saw SMTPUTF8 or the refused MAIL')
    ok(not any(b >= 0x80 for b in up2.all_bytes()), 'no-SMTPUTF8 upstream never saw an 8-bit byte')


# ---------------------------------------------------------------- DSN

def test_dsn(mx, up, mx2, up2, count):
    c, e = session(mx)
    ok('DSN' in keywords(e), 'DSN: advertised when the upstream has it')
    r = c.cmd('MAIL FROM:<dsn-ok@example.org> RET=HDRS ENVID=abc+2Bdef')
    reply_is(r, 250, None, 'DSN: MAIL RET=HDRS ENVID=abc+2Bdef accepted')
    r = c.cmd('RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com')
    reply_is(r, 250, None, 'DSN: RCPT NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;... accepted')
    r = c.cmd('RCPT TO:<carol@example.com> notify=never')
    reply_is(r, 250, None, 'DSN: RCPT notify=never accepted')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'DSN: message relayed')
    count[0] += 1
    ok(up.wait_messages(count[0], 10), 'DSN: upstream got it')
    is_(up_cmd_line(up, b'MAIL FROM:<dsn-ok@'),
        [b'MAIL FROM:<dsn-ok@example.org> RET=HDRS ENVID=abc+2Bdef\r\n'],
        'DSN: RET and ENVID re-serialised on the upstream MAIL')
    rc = [l for l in up_cmd_line(up, b'RCPT TO:<') if b'NOTIFY' in l.upper() or b'ORCPT' in l]
    ok(b'RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com\r\n' in rc,
       'DSN: NOTIFY and ORCPT re-serialised on the upstream RCPT (%r)' % rc)
    ok(any(re.match(rb'RCPT TO:<carol@example\.com> NOTIFY=NEVER\r\n$', l, re.I) for l in rc),
       'DSN: NOTIFY=NEVER forwarded (%r)' % rc)

    r = c.cmd('MAIL FROM:<dsn-ret@example.org> ret=full')
    reply_is(r, 250, None, 'DSN: ret=full (lower case) accepted')
    reply_is(c.cmd('RSET'), 250, None, 'RSET')

    # bad MAIL parameters: 501 5.5.4, never forwarded
    for prm, name in (('ENVID=abc+zz', 'ENVID with "+zz" (not xtext)'),
                      ('ENVID=abc+2b', 'ENVID with lower-case hexchar'),
                      ('ENVID=' + 'e' * 101, 'ENVID of 101 characters'),
                      ('ENVID', 'ENVID without a value')):
        reply_is(c.cmd('MAIL FROM:<dsn-badmail@example.org> %s' % prm), 501, '5.5.4',
                 'DSN: %s: 501 5.5.4' % name)
    r = c.cmd('MAIL FROM:<dsn-badmail@example.org> RET=BOGUS')
    ok(r.code in (501, 555) and r.enh == '5.5.4', 'DSN: RET=BOGUS refused 501/555 5.5.4 (%r)' % (r,))
    c.quit()

    # bad RCPT parameters inside a good transaction
    c, e = session(mx)
    reply_is(c.cmd('MAIL FROM:<dsn-rcpts@example.org>'), 250, None, 'DSN: MAIL for the RCPT checks')
    for i, (prm, name) in enumerate((('NOTIFY=NEVER,SUCCESS', 'NOTIFY=NEVER,SUCCESS'),
                                     ('NOTIFY=NEVER,NEVER', 'NOTIFY=NEVER,NEVER'),
                                     ('NOTIFY=SOMETIMES', 'NOTIFY=SOMETIMES'),
                                     ('ORCPT=bob@example.com', 'ORCPT without ";"'),
                                     ('ORCPT=;bob@example.com', 'ORCPT with an empty type'),
                                     ('ORCPT=rfc822;bob+zz@example.com', 'ORCPT with bad xtext'),
                                     ('ORCPT=rfc_822;bob@example.com', 'ORCPT type with "_"'),
                                     ('FOO=bar', 'unknown RCPT parameter'))):
        r = c.cmd('RCPT TO:<dsnbad%d@example.com> %s' % (i, prm))
        if prm.startswith('FOO'):
            ok(r.code in (501, 555) and r.enh == '5.5.4', 'DSN: %s refused 501/555 (%r)' % (name, r))
        else:
            reply_is(r, 501, '5.5.4', 'DSN: %s: 501 5.5.4' % name)
    # CR / LF injection through ORCPT, raw bytes
    c.send(b'RCPT TO:<crinj@example.com> ORCPT=rfc822;a\rMAIL FROM:<evil-cr@evil.example>\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'DSN: ORCPT with a bare CR: 500 5.5.2')
    c.send(b'RCPT TO:<lfinj@example.com> ORCPT=rfc822;a\nMAIL FROM:<evil-lf@evil.example>\r\n')
    reply_is(c.reply(), 500, '5.5.2', 'DSN: ORCPT with a bare LF: 500 5.5.2')
    # with a real CRLF it is two commands: a valid RCPT, then a nested MAIL
    c.send(b'RCPT TO:<crlfinj@example.com> ORCPT=rfc822;a\r\nMAIL FROM:<evil-crlf@evil.example>\r\n')
    reply_is(c.reply(), 250, None, 'DSN: "ORCPT=rfc822;a" CRLF: the RCPT alone is valid')
    reply_is(c.reply(), 503, '5.5.1', 'DSN: ... and the "MAIL" after the CRLF is a nested MAIL: 503')
    # xtext-encoded CR LF stays encoded, on one line
    r = c.cmd('RCPT TO:<xtinj@example.com> ORCPT=rfc822;a+0D+0AMAIL')
    reply_is(r, 250, None, 'DSN: xtext "+0D+0A" in ORCPT is valid xtext: accepted')
    reply_is(c.cmd('RCPT TO:<bob@example.com> NOTIFY=DELAY'), 250, None, 'DSN: good RCPT after the bad ones')
    d, f = c.data(BODY)
    reply_is(f, 250, None, 'DSN: message after the refusals relayed')
    count[0] += 1
    c.quit()
    ok(up.wait_messages(count[0], 10), 'DSN: upstream got it')
    allb = up.all_bytes()
    ok(b'dsn-badmail@' not in allb, 'DSN: refused MAILs never reached the upstream')
    ok(not re.search(rb'dsnbad\d', allb), 'DSN: refused RCPTs never reached the upstream')
    ok(b'evil' not in allb and b'<crinj@' not in allb and b'<lfinj@' not in allb,
       'DSN: nothing of the CR/LF injection attempts reached the upstream')
    m = msgs_from(up, 'dsn-rcpts@example.org')
    if ok(len(m) == 1, 'DSN: the transaction was relayed once'):
        is_(m[0].rcpt_cmds, ['RCPT TO:<crlfinj@example.com> ORCPT=rfc822;a',
                             'RCPT TO:<xtinj@example.com> ORCPT=rfc822;a+0D+0AMAIL',
                             'RCPT TO:<bob@example.com> NOTIFY=DELAY'],
            'DSN: exactly the accepted RCPTs, re-serialised, xtext kept encoded')

    # upstream without DSN
    c, e = session(mx2)
    ok('DSN' not in keywords(e), 'no-DSN upstream: DSN not advertised')
    reply_is(c.cmd('MAIL FROM:<nodsn@example.org> RET=HDRS'), 555, '5.5.4', 'no-DSN upstream: RET= 555 5.5.4')
    reply_is(c.cmd('MAIL FROM:<nodsn@example.org> ENVID=x'), 555, '5.5.4', 'no-DSN upstream: ENVID= 555 5.5.4')
    reply_is(c.cmd('MAIL FROM:<nodsn-ok@example.org>'), 250, None, 'no-DSN upstream: plain MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com> NOTIFY=SUCCESS'), 555, '5.5.4', 'no-DSN upstream: NOTIFY= 555 5.5.4')
    reply_is(c.cmd('RCPT TO:<bob@example.com> ORCPT=rfc822;bob@example.com'), 555, '5.5.4',
             'no-DSN upstream: ORCPT= 555 5.5.4')
    c.cmd('RSET')
    c.quit()
    allb = up2.all_bytes()
    ok(not re.search(rb'(?i)NOTIFY=|ORCPT=|RET=|ENVID=', allb), 'no-DSN upstream never saw a DSN parameter')
    ok(b'nodsn@' not in allb, 'no-DSN upstream: refused MAILs never forwarded')


# ---------------------------------------------------------------- BDAT

def test_bdat(mx, up, count):
    c, e = session(mx)
    ok('CHUNKING' in keywords(e), 'BDAT: CHUNKING advertised')

    # 1. two chunks + LAST; dot lines inside chunks; a line split across
    #    chunks, and a CR/LF pair split across chunks
    ch1 = (b'From: alice@example.org\r\nSubject: bdat one\r\n\r\nfirst line\r\n'
           b'.leading dot\r\n.\r\n..two dots\r\n')
    ch2 = b'.\r\nsplit li'
    ch3 = b'ne across chunks\r\nlast line\r'
    ch4 = b'\n.\r\n'
    if mail_rcpt(c, 'bdat1@example.org', tag='BDAT 1: '):
        r = bdat(c, ch1)
        reply_is(r, 250, '2.0.0', 'BDAT 1: first chunk 250 2.0.0')
        like(r.text, r'\b%d octets received' % len(ch1), 'BDAT 1: "%d octets received"' % len(ch1))
        r = bdat(c, ch2)
        reply_is(r, 250, '2.0.0', 'BDAT 1: second chunk (ends mid-line) 250')
        like(r.text, r'\b%d octets received' % (len(ch1) + len(ch2)),
             'BDAT 1: octet count includes the partial line (%d)' % (len(ch1) + len(ch2)))
        reply_is(bdat(c, ch3), 250, '2.0.0', 'BDAT 1: third chunk (ends in CR) 250')
        r = bdat(c, ch4, last=True)
        reply_is(r, 250, '2.0.0', 'BDAT 1: LAST gets the upstream\'s 250')
        like(r.text, r'queued as CAPT\d+', "BDAT 1: it is the upstream's own text")
        count[0] += 1
        ok(up.wait_messages(count[0], 10), 'BDAT 1: relayed')
        m = msgs_from(up, 'bdat1@example.org')
        if ok(len(m) == 1, 'BDAT 1: one DATA transaction upstream'):
            whole = ch1 + ch2 + ch3 + ch4
            check_relayed(m[0].data, whole, 'BDAT 1', helo='client.example')
            ok(m[0].raw_data.endswith(b'\r\n..leading dot\r\n..\r\n...two dots\r\n..\r\nsplit li'
                                      b'ne across chunks\r\nlast line\r\n..\r\n'),
               'BDAT 1: dot-stuffed correctly on the DATA stream (%r)' % m[0].raw_data[-120:])

    # 2. BDAT after the LAST chunk: no transaction; the chunk is consumed
    c.send(b'BDAT 6\r\nQUIT\r\n')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT after LAST: 503 5.5.1')
    reply_is(c.cmd('NOOP'), 250, None, 'BDAT after LAST: its chunk ("QUIT\\r\\n") consumed, next command works')

    # 3. BDAT then DATA in the same transaction
    if mail_rcpt(c, 'bdat3@example.org', tag='BDAT 3: '):
        p1 = b'Subject: mixed\r\n\r\npart one\r\n'
        reply_is(bdat(c, p1), 250, '2.0.0', 'BDAT 3: chunk 250')
        reply_is(c.cmd('DATA'), 503, '5.5.1', 'BDAT 3: DATA after BDAT: 503 5.5.1')
        p2 = b'part two\r\n'
        reply_is(bdat(c, p2, last=True), 250, None, 'BDAT 3: the BDAT transaction goes on: LAST 250')
        count[0] += 1
        ok(up.wait_messages(count[0], 10), 'BDAT 3: relayed')
        m = msgs_from(up, 'bdat3@example.org')
        if ok(len(m) == 1, 'BDAT 3: one transaction'):
            check_relayed(m[0].data, p1 + p2, 'BDAT 3')

    # 4. BDAT 0 LAST ends a message; a last line without CRLF gets one
    if mail_rcpt(c, 'bdat4@example.org', tag='BDAT 4: '):
        p = b'Subject: zero\r\n\r\nno newline at the end'
        reply_is(bdat(c, p), 250, '2.0.0', 'BDAT 4: chunk')
        reply_is(c.cmd('BDAT 0 LAST'), 250, None, 'BDAT 4: BDAT 0 LAST ends the message')
        count[0] += 1
        ok(up.wait_messages(count[0], 10), 'BDAT 4: relayed')
        m = msgs_from(up, 'bdat4@example.org')
        if ok(len(m) == 1, 'BDAT 4: one transaction'):
            check_relayed(m[0].data, p + b'\r\n', 'BDAT 4 (CRLF added to the last line)')

    # 5. oversize: the sum of the chunks is over limits.message_size
    line = b'x' * 98 + b'\r\n'
    if mail_rcpt(c, 'bdat5@example.org', tag='BDAT 5: '):
        big1 = b'Subject: big\r\n\r\n' + line * 150          # ~15 kB: fine
        big2 = line * 60                                       # +6 kB: over 20000
        reply_is(bdat(c, big1), 250, '2.0.0', 'BDAT 5: first chunk under the limit 250')
        reply_is(bdat(c, big2, last=True), 552, '5.3.4', 'BDAT 5: LAST pushing the total over the limit: 552 5.3.4')
        reply_is(c.cmd('RCPT TO:<bob@example.com>'), 503, '5.5.1', 'BDAT 5: transaction is over after 552')
    if mail_rcpt(c, 'bdat5b@example.org', tag='BDAT 5b: '):
        r = bdat(c, b'Subject: big\r\n\r\n' + line * 210, last=True)
        reply_is(r, 552, '5.3.4', 'BDAT 5b: one LAST chunk over the limit: 552 5.3.4')
    reply_is(c.cmd('NOOP'), 250, None, 'BDAT 5: session in step')
    ok(not msgs_from(up, 'bdat5@example.org') and not msgs_from(up, 'bdat5b@example.org'),
       'BDAT 5: nothing relayed')

    # 6. bare LF / bare CR / NUL inside a chunk
    for i, (bad, code, enh, name) in enumerate(((b'a\nb\r\n', 550, '5.5.2', 'bare LF'),
                                                (b'a\rb\r\n', 550, '5.5.2', 'bare CR'),
                                                (b'a\x00b\r\n', 550, '5.6.0', 'NUL'))):
        if mail_rcpt(c, 'bdat6-%d@example.org' % i, tag='BDAT 6 %s: ' % name):
            r = bdat(c, b'Subject: bad\r\n\r\n' + bad + b'after\r\n', last=True)
            reply_is(r, code, enh, 'BDAT 6: %s inside a chunk: %d %s' % (name, code, enh))
    reply_is(c.cmd('NOOP'), 250, None, 'BDAT 6: session in step')
    ok(not any(msgs_from(up, 'bdat6-%d@example.org' % i) for i in range(3)), 'BDAT 6: nothing relayed')

    # 7. chunk sizes spanning pipelined "commands": they are data
    if mail_rcpt(c, 'bdat7@example.org', tag='BDAT 7: '):
        c.send(b'BDAT 10 LAST\r\nRSET\r\nQUIT\r\n')
        reply_is(c.reply(), 250, None, 'BDAT 7: "RSET\\r\\nQUIT" (10 octets) is the message: 250')
        r = c.reply()
        ok(r.code in (500, 502), 'BDAT 7: the CRLF after the chunk is an empty command: 500/502 (%r)' % (r,))
        reply_is(c.cmd('NOOP'), 250, None, 'BDAT 7: the QUIT inside the chunk was not run')
        count[0] += 1
        ok(up.wait_messages(count[0], 10), 'BDAT 7: relayed')
        m = msgs_from(up, 'bdat7@example.org')
        if ok(len(m) == 1, 'BDAT 7: one transaction'):
            check_relayed(m[0].data, b'RSET\r\nQUIT\r\n', 'BDAT 7')
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.send(b'MAIL FROM:<bdat8@example.org>\r\nRCPT TO:<bob@example.com>\r\n'
           b'BDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n')
    reply_is(c.reply(), 250, None, 'BDAT 8: pipelined MAIL')
    reply_is(c.reply(), 250, None, 'BDAT 8: pipelined RCPT')
    reply_is(c.reply(), 250, None, 'BDAT 8: pipelined BDAT LAST with "QUIT\\r\\nQUIT\\r\\n" as data')
    reply_is(c.reply(), 250, '2.0.0', 'BDAT 8: the NOOP after the chunk answered, no 221')
    count[0] += 1
    ok(up.wait_messages(count[0], 10), 'BDAT 8: relayed')
    m = msgs_from(up, 'bdat8@example.org')
    if ok(len(m) == 1, 'BDAT 8: one transaction'):
        check_relayed(m[0].data, b'QUIT\r\nQUIT\r\n', 'BDAT 8')
    reply_is(c.cmd('QUIT'), 221, None, 'BDAT: QUIT')
    c.close()

    # 9. BDAT without MAIL (new session), without RCPT
    c, e = session(mx)
    c.send(b'BDAT 6\r\nQUIT\r\n')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT 9: without MAIL: chunk ("QUIT\\r\\n") consumed, 503 5.5.1')
    reply_is(c.cmd('NOOP'), 250, None, 'BDAT 9: session still open')
    reply_is(c.cmd('MAIL FROM:<bdat9@example.org>'), 250, None, 'BDAT 9: MAIL')
    c.send(b'BDAT 6 LAST\r\nQUIT\r\n')
    reply_is(c.reply(), 503, '5.5.1', 'BDAT 9: without RCPT: chunk consumed, 503 5.5.1')
    reply_is(c.cmd('NOOP'), 250, None, 'BDAT 9: still in step')
    c.quit()
    ok(not msgs_from(up, 'bdat9@example.org'), 'BDAT 9: nothing relayed')

    # 10. a size we cannot use: 501, then 421 and close (the chunk's end is unknown)
    for arg in ('x', '', '-5', '10 LASTX', '10 LAST extra', '99999999999999999999999'):
        c, e = session(mx)
        c.send(('BDAT %s\r\n' % arg).encode() if arg else b'BDAT\r\n')
        reply_is(c.reply(), 501, '5.5.4', 'BDAT 10: "BDAT %s": 501 5.5.4' % arg)
        r = c.reply()
        reply_is(r, 421, None, 'BDAT 10: "BDAT %s": then 421' % arg)
        ok(c.expect_close(5), 'BDAT 10: "BDAT %s": connection closed' % arg)
        c.close()


# ---------------------------------------------------------------- Postfix + DSN

def test_postfix_dsn():
    pf = postfix.Postfix()
    like(pf.greeting().raw, rb'^220 upstream\.test ESMTP Postfix', 'a Postfix answers on 127.0.0.1:%d' % pf.port)
    mx = Frontmx(pf.port, name='frontmx->postfix')
    c, e = session(mx)
    ok('DSN' in keywords(e), 'Postfix upstream: DSN advertised by the proxy')
    msg = (b'From: box@example.com\r\nTo: bob@example.com\r\nSubject: dsn via postfix\r\n'
           b'Message-ID: <dsn1@example.com>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nhello\r\n')
    reply_is(c.cmd('MAIL FROM:<box@example.com> RET=HDRS ENVID=abc+2Bdef'), 250, '2.1.0',
             'Postfix: MAIL RET=HDRS ENVID=abc+2Bdef 250')
    reply_is(c.cmd('RCPT TO:<box@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com'),
             250, '2.1.5', 'Postfix: RCPT NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com 250')
    d, f = c.data(msg)
    reply_is(f, 250, '2.0.0', 'Postfix: message accepted')
    c.quit()
    # the message, and the success notification Postfix sends to the sender
    files = pf.wait_mail(2, timeout=15)
    is_(len(files), 2, 'Postfix: the message and its success DSN delivered')
    log = pf.maillog()
    like(log, r'to=<box@example\.com>, relay=virtual, .*status=sent \(delivered',
         'Postfix maillog: the message was delivered')
    like(log, r'sender delivery status notification', 'Postfix maillog: NOTIFY=SUCCESS made a success DSN')
    dsn = b''
    for p in files:
        with open(p, 'rb') as fh:
            data = fh.read()
        if b'multipart/report' in data:
            dsn = data
    like(dsn, rb'(?mi)^Original-Envelope-Id: abc\+2Bdef$|^Original-Envelope-Id: abc\+def$',
         'Postfix DSN: Original-Envelope-Id from ENVID')
    like(dsn, rb'(?mi)^Original-Recipient: rfc822; ?bob@example\.com$', 'Postfix DSN: Original-Recipient from ORCPT')
    like(dsn, rb'(?mi)^Action: delivered', 'Postfix DSN: Action: delivered')
    unlike(dsn, rb'\r\n\r\nhello\r?\n', 'Postfix DSN: RET=HDRS: the body is not returned')
    unlike(log, r'(?i)warning:.*(lost synchronization|non-SMTP|pipelining|dsn)', 'Postfix: no protocol warnings')
    mx.finish()
    pf.stop()


def main():
    up = Upstream(ehlo_caps=RICH)
    mx = Frontmx(up, conf={'limits': {'message_size': LIMIT}}, name='frontmx (rich upstream)')
    up2 = Upstream(ehlo_caps=POOR)
    mx2 = Frontmx(up2, conf={'limits': {'message_size': LIMIT}}, name='frontmx (poor upstream)')
    count = [0, 0]
    test_size(mx, up, mx2, up2, count)
    test_smtputf8(mx, up, mx2, up2, count)
    test_dsn(mx, up, mx2, up2, count)
    test_bdat(mx, up, count)
    check_stream(up, count[0], 'rich upstream')
    check_stream(up2, count[1], 'poor upstream')
    ok(mx.alive() and mx2.alive(), 'both daemons still running')
    mx.finish()
    mx2.finish()
    test_postfix_dsn()


run(main, timeout=60)
