#!/usr/bin/python3
# A real Exim 4.96 (Debian 12's default MTA) delivers through frontmx.
# Exim pipelines the end of each message (the final dot or BDAT LAST)
# with QUIT and then shuts down its sending side: frontmx must still
# answer everything (t/smtp/46-half-close.t has the scripted cases).
#
# Exim runs with a private configuration (t/lib/exim.py): one
# manualroute router to frontmx's loopback port.
#
# Four rounds, three messages each: one connection per message with
# CHUNKING (BDAT LAST + QUIT), the same with DATA (hosts_try_chunking
# empty), a queue run that sends its messages down one connection, and
# one connection per message over STARTTLS.
# Each message must reach the upstream exactly once, Exim must log a
# delivery (=>) for each and no deferral, failure or TLS error, and every
# connection must end with Exim's QUIT: frontmx logs no disconnect (an
# end of input before QUIT, an error, a timeout) for any of them.
#
# Whether frontmx logs "smtp eof" for Exim's half-close is not asserted:
# in clear Exim shuts its side right after the pipelined QUIT, usually
# before frontmx has relayed the message and read the QUIT, but nothing
# orders the two; over TLS Exim sends close_notify and shuts its side
# only after it has read the 221, when frontmx no longer reads.  Both
# orders must work; t/smtp/46-half-close.t scripts each one.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import make_cert, listener, frontmx_listeners  # noqa: E402
from exim import Exim, available  # noqa: E402

CONF = '''
log_selector = +smtp_confirmation +pipelining

begin routers
to_frontmx:
  driver = manualroute
  domains = *
  transport = to_frontmx
  route_list = * 127.0.0.1
  self = send
  no_more

begin transports
to_frontmx:
  driver = smtp
  port = %(port)d
  allow_localhost
  %(tls)s
  hosts_try_chunking = %(chunking)s

begin retry
* * F,1h,1h
'''


def sender(port, chunking=True, tls=False):
    return Exim(CONF, {'port': port, 'chunking': '*' if chunking else '',
                       'tls': 'hosts_require_tls = *\n  tls_verify_certificates =' if tls
                       else 'hosts_avoid_tls = *'})


def message(tag):
    return ('From: alice@example.org\nTo: bob@example.com\nSubject: exim %s\n'
            'Message-ID: <%s@exim.test.example>\n\nsent by a real Exim (%s)\n'
            % (tag, tag, tag)).encode()


def ended_with_quit(mx, mark, sessions, name):
    """The sessions that relayed a message since log offset mark: there are
    sessions of them, and each ended with Exim's QUIT, i.e. frontmx logged
    no abnormal close and no TLS error for it.  (Frontmx.start's port probe
    connects and closes: that session relays nothing and is left out.)"""
    text = mx.log()[mark:]
    ids = set(re.findall(r'^\S+ \S+ info: (\w+) message client=', text, re.M))
    is_(len(ids), sessions, '%s: frontmx relayed over %d connections' % (name, sessions))
    bad = [l for l in text.splitlines()
           if re.match(r'^\S+ \S+ \S+ (\w+) smtp (closing|tls error)', l)
           and l.split()[3] in ids]
    if not ok(not bad, '%s: every connection ended with QUIT, no abnormal close or TLS '
              'error logged' % name):
        diag('\n'.join(bad[:10]))
    eof = set(re.findall(r'^\S+ \S+ info: (\w+) smtp eof ', text, re.M)) & ids
    diag('%s: frontmx saw the half-close before QUIT on %d of %d connections' % (
        name, len(eof), len(ids)))


def round_(name, up, mx, chunking, queue_run, tls=False):
    ex = sender(mx.port, chunking, tls)
    tags = ['%s-%d' % (name, i) for i in range(3)]
    before = len(up.messages)
    for t in tags:
        rc, out = ex.run(['-odq' if queue_run else '-odi', '-f', 'alice@example.org',
                          'bob@example.com'], message(t))
        if not is_(rc, 0, '%s: exim accepted %s' % (name, t)):
            diag(out)
    if queue_run:
        rc, out = ex.run(['-qqff'])
        if not is_(rc, 0, '%s: exim queue run' % name):
            diag(out)
    ok(up.wait_messages(before + len(tags), 30), '%s: the upstream got %d messages' % (
        name, len(tags)))
    log = ex.mainlog()
    for t in tags:
        got = [m for m in up.messages if ('Message-ID: <%s@' % t).encode() in m.data]
        is_(len(got), 1, '%s: %s delivered exactly once' % (name, t))
    ids = re.findall(r'^\S+ \S+ (\S+) <= ', log, re.M)
    is_(len(ids), len(tags), '%s: exim received %d messages' % (name, len(tags)))
    for i in ids:
        like(log, r'(?m)^\S+ \S+ %s => bob@example\.com .*%sC="250 ' % (
            re.escape(i), r'X=TLS.* ' if tls else ''),
             '%s: exim logged %s delivered%s with the upstream\'s 250' % (
                 name, i, ' over TLS' if tls else ''))
    # "TLS error on connection (recv): The TLS connection was
    # non-properly terminated": the end of the connection came without
    # frontmx's close_notify.
    bad = [l for l in log.splitlines() if re.match(r'^\S+ \S+ \S+ (==|\*\*) ', l)
           or 'closed connection' in l or 'TLS error' in l]
    if not ok(not bad, '%s: exim logged no deferral, failure, lost connection '
              'or TLS error' % name):
        diag('\n'.join(bad[:10]))
    rc, out = ex.run(['-bpc'])
    is_(out.strip(), '0', '%s: exim\'s queue is empty' % name)
    if queue_run:
        # -qq routes first, then sends every message for the host down the
        # connection of the first (Exim's "continued" deliveries).
        is_(len(set(m.conn for m in up.messages[before:])), 1,
            '%s: all %d messages came down one connection' % (name, len(tags)))
    return log


def main():
    if not available():
        return
    up = Upstream()
    mx = Frontmx(up)
    round_('bdat', up, mx, chunking=True, queue_run=False)
    round_('data', up, mx, chunking=False, queue_run=False)
    log = round_('queue', up, mx, chunking=True, queue_run=True)
    # three connections per round, one for the queue run
    ended_with_quit(mx, 0, 7, 'clear')
    unlike(mx.log(), r'result=aborted', 'frontmx aborted no message')
    diag('exim mainlog of the queue run:\n' + log)
    check_stream(up, 9, 'upstream')
    mx.finish()

    # STARTTLS: Exim ends TLS with close_notify, then shuts down its side
    certs = make_cert(tmpdir('fmx-exim-tls-'), 'mx.test.example')
    up = Upstream()
    mx = frontmx_listeners(up, [listener('starttls', certs)])
    mark = len(mx.log())
    round_('tls', up, mx, chunking=True, queue_run=False, tls=True)
    like(mx.log()[mark:], r'smtp tls=', 'tls: the sessions used TLS')
    ended_with_quit(mx, mark, 3, 'tls')
    unlike(mx.log(), r'result=aborted', 'tls: frontmx aborted no message')
    check_stream(up, 3, 'tls: upstream')
    mx.finish()


run(main, timeout=400)
