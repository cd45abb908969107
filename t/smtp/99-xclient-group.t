#!/usr/bin/python3
# XCLIENT ends a command group: frontmx sends the EHLO that must follow it
# only after XCLIENT's reply (the upstream's new 220 greeting), even when
# the upstream offers PIPELINING.  Postfix restarts its session on XCLIENT
# and treats bytes that arrive before that greeting as improper pipelining
# ("improper command pipelining after XCLIENT"; with
# smtpd_forbid_unauth_pipelining it drops the connection), so an EHLO sent
# behind XCLIENT in one write, or before its reply came, risks the relay.
# The scripted upstream holds its XCLIENT reply a moment and looks whether
# the EHLO is already there.
import os
import socket
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import fmx  # noqa: E402
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: xclient\r\n\r\nbody\r\n'
early = []


def on_xclient(arg, conn):
    time.sleep(0.3)
    seen = bytes(conn.raw)
    after = seen[seen.rfind(b'XCLIENT'):]
    try:
        peek = conn.sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, OSError):
        peek = b''
    early.append(b'EHLO' in after or b'EHLO' in peek)
    return None     # the default reply: a new 220 greeting


def main():
    up = Upstream(ehlo_caps=fmx.DEFAULT_CAPS + ['XCLIENT NAME ADDR PORT PROTO HELO'],
                  on_xclient=on_xclient)
    mx = Frontmx(up)
    relay_one_each(mx.port, 3, BODY, 'message %d relayed through XCLIENT')
    is_(len(early), 3, 'XCLIENT sent on each of the 3 upstream connections')
    is_(early.count(True), 0, 'no EHLO sent before XCLIENT\'s reply came')
    mx.check_sanitizers()
    done()


run(main, timeout=60)
