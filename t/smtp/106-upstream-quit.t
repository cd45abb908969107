#!/usr/bin/python3
# frontmx does not wait for the upstream's reply to QUIT on a plain
# connection (Postfix's smtp client does the same, smtp_skip_quit_response
# = yes): it writes QUIT and closes, a read(2) and a loop pass less per
# connection.  The scripted upstream holds its 221 and looks whether frontmx
# has closed already.  Over TLS the reply is still read, then close_notify
# (t/smtp/41-upstream-tls.t).
import os
import select
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import fmx  # noqa: E402
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: quit\r\n\r\nbody\r\n'
closed_first = []


def on_quit(arg, conn):
    # a guard only: frontmx, waiting for this reply, would never close
    r, _, _ = select.select([conn.sock], [], [], 5)
    eof = False
    if r:
        try:
            eof = conn.sock.recv(1, socket.MSG_PEEK) == b''
        except OSError:
            eof = True
    closed_first.append(eof)
    return None     # the default 221


def main():
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO'],
                  on_quit=on_quit)
    mx = Frontmx(up)
    n0 = len(closed_first)      # the start-up probe's QUIT
    quits = relay_one_each(mx.port, 3, BODY)
    is_([q.code for q in quits], [221] * 3, 'each client\'s QUIT: 221')
    ok(wait_for(lambda: len(closed_first) >= n0 + 3, 20),
       'the upstream got QUIT on each of the 3 connections')
    is_(closed_first[n0:n0 + 3], [True] * 3,
        'frontmx closed each connection after its QUIT without waiting for the 221')
    conns = [x for x in up.conns if x.commands and x.commands[0].startswith('EHLO')
             and any(cmd.startswith('MAIL') for cmd in x.commands)]
    is_([x.commands[-1] for x in conns], ['QUIT'] * 3, 'QUIT is the last command of each')
    unlike(mx.log(), r'upstream error=', 'no upstream error logged')
    mx.check_sanitizers()
    is_(mx.stop(), 0, 'exits 0 on SIGTERM')
    done()


run(main, timeout=120)
