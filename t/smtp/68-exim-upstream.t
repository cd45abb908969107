#!/usr/bin/python3
# frontmx relays to a real Exim 4.96 as its upstream (README "Other
# MTAs").  Exim runs as a private daemon on a loopback port
# (t/lib/exim.py): local domain example.com, an accept router and a
# maildir transport in its temporary directory, an RCPT ACL that refuses
# nobody@example.com with 550 and accepts example.com only from
# 127.0.0.1, no DNS, no TLS.
#
# The client connects from 127.0.0.2.  Exim offers neither XCLIENT nor
# XFORWARD, so frontmx must send neither: Exim sees (and logs) frontmx's
# own connection from 127.0.0.1 with frontmx's HELO, the client's address
# is only in frontmx's Received: field, and Exim logs no unknown command.
# Three messages must each be delivered exactly once, the client must get
# 250 for exactly those, and the recipient Exim refuses must get Exim's
# 550 relayed and never be delivered.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from exim import upstream_daemon  # noqa: E402


CLIENT = '127.0.0.2'
REFUSED = 'nobody@example.com'


def message(tag):
    return ('From: alice@example.org\r\nTo: someone@example.com\r\nSubject: upstream %s\r\n'
            'Message-ID: <%s@client.example>\r\n\r\nrelayed to a real Exim (%s)\r\n'
            % (tag, tag, tag)).encode()


def delivered(ex):
    """{file name: bytes} of Exim's maildir (new/)."""
    d = os.path.join(ex.dir, 'mail', 'new')
    out = {}
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        with open(os.path.join(d, n), 'rb') as f:
            out[n] = f.read()
    return out


def main():
    up = upstream_daemon()
    if up is None:
        return
    ex, port = up
    mx = Frontmx(port, name='exim-upstream')

    # (tag, recipients, the ones Exim accepts)
    plan = [('one', ['bob@example.com'], ['bob@example.com']),
            ('two', ['carol@example.com', REFUSED], ['carol@example.com']),
            ('three', ['dave@example.com'], ['dave@example.com']),
            ('refused', [REFUSED], [])]
    c = SmtpClient(mx.port, source=CLIENT, timeout=60)
    e = c.start('client.example')
    is_(e.code, 250, 'EHLO to frontmx')
    sent = []
    for tag, rcpts, good in plan:
        res = c.transaction('alice@example.org', rcpts, message(tag))
        is_(res['mail'].code, 250, '%s: MAIL 250' % tag)
        for r, rep in zip(rcpts, res['rcpt']):
            if r == REFUSED:
                is_(rep.code, 550, '%s: RCPT %s gets 550' % (tag, r))
                like(rep.text, r'nobody here \(exim refuses\)',
                     '%s: the 550 is Exim\'s, relayed' % tag)
            else:
                is_(rep.code, 250, '%s: RCPT %s gets 250' % (tag, r))
        if good:
            ok(res['dot'] is not None and res['dot'].code == 250,
               '%s: 250 after the final dot (%r)' % (tag, res['dot']))
            sent.append((tag, good))
        else:
            ok(res['data'] is None, '%s: no DATA without an accepted recipient' % tag)
            # the session goes on after the refused transaction
            r = c.cmd('RSET')
            is_(r.code, 250, '%s: RSET 250' % tag)
    c.quit()

    # Exim delivers after its 250, in a process of its own: wait for the
    # files and for Exim to log each message Completed (hang guard only).
    wait_for(lambda: len(delivered(ex)) >= len(sent)
             and ex.mainlog().count(' Completed') >= len(sent), 120)
    files = delivered(ex)
    log = ex.mainlog()
    is_(len(files), len(sent), 'exim delivered %d messages' % len(sent))
    for tag, good in sent:
        got = [d for d in files.values() if ('Message-ID: <%s@client.example>' % tag).encode() in d]
        if not is_(len(got), 1, '%s: delivered exactly once' % tag):
            continue
        d = got[0]
        like(d, (r'(?m)^Envelope-to: %s\r?$' % re.escape(', '.join(good))).encode(),
             '%s: delivered to %s only' % (tag, ', '.join(good)))
        rcv = re.findall(rb'(?m)^Received: (?:.*\r?\n[ \t].*)*.*', d)
        exim_rcv = [r for r in rcv if b'by exim.test.example' in r]
        mx_rcv = [r for r in rcv if b'by mx.test.example' in r]
        is_(len(exim_rcv), 1, '%s: one Received: by Exim' % tag)
        is_(len(mx_rcv), 1, '%s: one Received: by frontmx' % tag)
        if exim_rcv:
            # no XCLIENT: Exim's own field names frontmx's connection
            like(exim_rcv[0], rb'from \[127\.0\.0\.1\] \(helo=mx\.test\.example\)',
                 '%s: Exim received it from frontmx (127.0.0.1, frontmx\'s HELO)' % tag)
        if mx_rcv:
            like(mx_rcv[0], rb'from client\.example \(.*\[127\.0\.0\.2\]\)',
                 '%s: frontmx\'s Received names the client (127.0.0.2)' % tag)
        ok(d.endswith(b'\n\nrelayed to a real Exim (%s)\n' % tag.encode()),
           '%s: body intact' % tag)
    ok(not any(b'nobody@example.com' in d for d in files.values()),
       'nothing delivered to %s' % REFUSED)
    unlike(log, r'(?m)^\S+ \S+ \S+ [=-]> nobody@', 'exim logged no delivery to %s' % REFUSED)

    # Exim offers neither XCLIENT nor XFORWARD, and frontmx sent neither:
    # every connection and message Exim logged came from 127.0.0.1 (the
    # client's 127.0.0.2 never reaches Exim), and Exim saw no unknown
    # command.
    conns = re.findall(r'SMTP connection from .*\[([\d.]+)\]', log)
    ok(conns and all(a == '127.0.0.1' for a in conns),
       'exim logged its connections from 127.0.0.1 (%s)' % ', '.join(conns))
    froms = re.findall(r'(?m)^\S+ \S+ \S+ <= \S+ H=(.*?) P=', log)
    is_(len(froms), len(sent), 'exim logged %d arrivals' % len(sent))
    ok(all(h == '(mx.test.example) [127.0.0.1]' for h in froms),
       'every arrival from frontmx at 127.0.0.1 (%s)' % '; '.join(froms))
    unlike(log, r'127\.0\.0\.2', 'the client address never reached Exim')
    unlike(log, r'(?i)xclient|xforward|unrecognized command|syntax error',
           'exim saw no XCLIENT, XFORWARD or unknown command')
    like(log, r'rejected RCPT <nobody@example\.com>: nobody here',
         'exim logged the refusal it sent')
    like(mx.log(), r'upstream capabilities: ', 'frontmx logged the upstream capabilities')
    unlike(''.join(l for l in mx.log().splitlines(True) if 'upstream capabilities' in l),
           r'(?i)xclient|xforward', 'frontmx saw no XCLIENT/XFORWARD offered')
    diag('exim mainlog:\n' + log)
    mx.finish()


run(main, timeout=300)
