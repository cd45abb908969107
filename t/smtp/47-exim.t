#!/usr/bin/python3
# A real Exim 4.96 (Debian 12's default MTA) delivers through frontmx.
# Exim pipelines the end of each message (the final dot or BDAT LAST)
# with QUIT and then shuts down its sending side: frontmx must still
# answer everything (t/smtp/46-half-close.t has the scripted cases).
#
# Exim is not installed (it would replace Postfix): `make exim` unpacks
# its Debian packages into build/exim.  It runs here with a private
# configuration (-C): spool and logs in a temporary directory, one
# manualroute router to frontmx's loopback port, no DNS.  Its binary has a
# compiled-in user, Debian-exim; libnss_wrapper maps that name to a uid
# (nobody's when the test runs as root, since Exim refuses uid 0 for it;
# the caller's own otherwise) without touching /etc/passwd.
#
# Four rounds, three messages each: one connection per message with
# CHUNKING (BDAT LAST + QUIT), the same with DATA (hosts_try_chunking
# empty), a queue run that sends its messages down one connection, and
# one connection per message over STARTTLS.
# Each message must reach the upstream exactly once, and Exim must log a
# delivery (=>) for each and no deferral or failure.
import glob
import os
import re
import shutil
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import make_cert, listener, frontmx_listeners  # noqa: E402

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
EXIM = os.environ.get('EXIM') or os.path.join(TOP, 'build', 'exim', 'root', 'usr', 'sbin', 'exim4')
NSS_WRAPPER = (glob.glob('/usr/lib/*/libnss_wrapper.so') + ['/usr/lib/libnss_wrapper.so'])[0]
NOBODY = 65534

CONF = '''
exim_path = %(exim)s
spool_directory = %(dir)s/spool
log_file_path = %(dir)s/log/%%slog
log_selector = +smtp_confirmation +pipelining
primary_hostname = exim.test.example
qualify_domain = example.org
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
message_logs = false
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP

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


class Exim:
    def __init__(self, port, chunking=True, tls=False):
        self.dir = tmpdir('fmx-exim-')
        os.chmod(self.dir, 0o755)
        # The binary where Exim's own user can run it again (its exim_path).
        self.exe = os.path.join(self.dir, 'exim4')
        shutil.copy(EXIM, self.exe)
        os.chmod(self.exe, 0o755)
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            uid = gid = NOBODY
        for sub in ('spool', 'log'):
            os.mkdir(os.path.join(self.dir, sub))
            if os.getuid() == 0:
                os.chown(os.path.join(self.dir, sub), uid, gid)
        with open(os.path.join(self.dir, 'passwd'), 'w') as f:
            f.write('root:x:0:0:root:/root:/bin/sh\n'
                    'Debian-exim:x:%d:%d:Exim:%s:/bin/false\n' % (uid, gid, self.dir))
        with open(os.path.join(self.dir, 'group'), 'w') as f:
            f.write('root:x:0:\nDebian-exim:x:%d:\n' % gid)
        self.conf = os.path.join(self.dir, 'exim.conf')
        with open(self.conf, 'w') as f:
            f.write(CONF % {'exim': self.exe, 'dir': self.dir, 'port': port,
                            'chunking': '*' if chunking else '',
                            'tls': 'hosts_require_tls = *\n  tls_verify_certificates =' if tls
                            else 'hosts_avoid_tls = *'})
        self.env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER,
                        NSS_WRAPPER_PASSWD=os.path.join(self.dir, 'passwd'),
                        NSS_WRAPPER_GROUP=os.path.join(self.dir, 'group'))

    def run(self, args, data=None):
        p = subprocess.run([self.exe, '-C', self.conf] + args, input=data, env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        return p.returncode, p.stdout.decode('utf-8', 'replace')

    def mainlog(self):
        try:
            with open(os.path.join(self.dir, 'log', 'mainlog')) as f:
                return f.read()
        except OSError:
            return ''


def message(tag):
    return ('From: alice@example.org\nTo: bob@example.com\nSubject: exim %s\n'
            'Message-ID: <%s@exim.test.example>\n\nsent by a real Exim (%s)\n'
            % (tag, tag, tag)).encode()


def round_(name, up, mx, chunking, queue_run, tls=False):
    ex = Exim(mx.port, chunking, tls)
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
    bad = [l for l in log.splitlines() if re.match(r'^\S+ \S+ \S+ (==|\*\*) ', l)
           or 'closed connection' in l]
    if not ok(not bad, '%s: exim logged no deferral, failure or lost connection' % name):
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
    if not ok(os.access(EXIM, os.X_OK), 'Exim unpacked at %s (make exim)' % EXIM):
        return
    if not ok(os.path.exists(NSS_WRAPPER), 'libnss_wrapper installed (make deps)'):
        return
    ex = Exim(9)
    rc, out = ex.run(['-bV'])
    like(out.splitlines()[0] if out else '', r'^Exim version 4\.96\b', 'it is Exim 4.96')
    up = Upstream()
    mx = Frontmx(up)
    round_('bdat', up, mx, chunking=True, queue_run=False)
    round_('data', up, mx, chunking=False, queue_run=False)
    log = round_('queue', up, mx, chunking=True, queue_run=True)
    # frontmx saw the half-closes and still answered
    like(mx.log(), r'smtp eof state=\w+ client=127\.0\.0\.1', 'frontmx saw Exim half-close')
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
    like(mx.log()[mark:], r'smtp eof state=\w+ client=127\.0\.0\.1',
         'tls: frontmx saw Exim half-close')
    unlike(mx.log(), r'result=aborted', 'tls: frontmx aborted no message')
    check_stream(up, 3, 'tls: upstream')
    mx.finish()


run(main, timeout=400)
