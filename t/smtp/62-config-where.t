#!/usr/bin/python3
# Configuration errors found after parsing are reported as FILE:LINE: at
# the line of the key that names the culprit, by `frontmx -t` and at
# start-up alike (issue 8 item 13): a missing TLS certificate or key, a
# missing upstream tls_ca, a missing filter module.  And
# limits.pipeline_backlog shorter than the longest line a session must read
# whole (1001 octets, 12290 with an AUTH listener) is refused at its line
# instead of stalling every session; the minimum itself is accepted.
# The directories the daemon writes to (quarantine and dir: Maildirs, the
# spool) are checked by -t as by start-up (issue 9 item 3), at their key.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import make_cert  # noqa: E402

D = tmpdir('fmx-where-')
CERTS = make_cert(D, 'mx.test.example')


def conf(port, listen_extra='', upstream_extra='', limits='', filters='', spool=None):
    """A configuration whose interesting lines are tagged '# @NAME'."""
    return ('hostname = "mx.test.example";\n'
            'listen = ( {\n'
            '  address = "127.0.0.1:%d";\n' % port +
            listen_extra +
            '} );\n'
            'upstream = {\n'
            '  address = "127.0.0.1:%d";\n' % free_port() +
            upstream_extra +
            '};\n' +
            (spool if spool is not None else 'spool = { directory = "%s"; };\n' % D) +
            'dns = { reverse = false; };\n'
            'limits = {\n'
            '  message_size = 1048576;\n' +
            limits +
            '};\n' + filters)


def line_of(text, tag):
    for i, line in enumerate(text.split('\n'), 1):
        if '# @' + tag in line:
            return i
    raise ValueError(tag)


def both(name, text, tag, what):
    """-t and a real start both fail with FILE:LINE: at the tagged line."""
    want = line_of(text, tag)
    rc, out, path = run_frontmx_t(text, name=name.replace(' ', '-') + '.conf')
    ok(rc not in (0, None), '%s: -t fails' % name)
    like(out, r'(?m)^%s:%d: .*%s' % (re.escape(path), want, what),
         '%s: -t says %s:%d: (the line that names it)' % (name, os.path.basename(path), want))
    mx = Frontmx(raw=text, start=False, name='frontmx (%s)' % name)
    with open(mx.conffile, 'w') as f:
        f.write(text)
    started = mx.start(expect_start=False)
    ok(not started, '%s: start-up refused' % name)
    if mx.proc:
        try:
            mx.proc.wait(timeout=20)
        except Exception:
            pass
    like(mx.log(), r'%s:%d: .*%s' % (re.escape(mx.conffile), want, what),
         '%s: start-up says FILE:%d:' % (name, want))


def main():
    port = free_port()
    both('missing cert', conf(port, '  tls = "starttls";\n'
                                    '  cert = "%s/nonexistent.crt"; # @CERT\n' % D +
                                    '  key = "%s";\n' % CERTS.key), 'CERT', 'nonexistent\\.crt')
    both('missing key', conf(port, '  tls = "starttls";\n'
                                   '  cert = "%s";\n' % CERTS.cert +
                                   '  key = "%s/nonexistent.key"; # @KEY\n' % D), 'KEY',
         'nonexistent\\.key')
    both('missing tls_ca', conf(port, upstream_extra='  tls = "verify";\n'
                                '  tls_ca = "%s/nonexistent-ca.pem"; # @CA\n' % D), 'CA',
         'nonexistent-ca\\.pem')
    both('missing module', conf(port, filters='filters = (\n'
                                '  { name = "ghost";\n'
                                '    module = "%s/nonexistent.so"; # @MOD\n' % D +
                                '  } );\n'), 'MOD', 'nonexistent\\.so')

    # pipeline_backlog: the minimum and one below it, without and with AUTH.
    tls = ('  tls = "starttls";\n  cert = "%s";\n  key = "%s";\n' % (CERTS.cert, CERTS.key))
    for extra, lo, what in (('', 1001, 'text line'), (tls + '  auth = true;\n', 12290, 'AUTH')):
        for v in (1, lo - 1):
            text = conf(port, extra, limits='  pipeline_backlog = %d; # @PB\n' % v)
            rc, out, path = run_frontmx_t(text)
            ok(rc not in (0, None), 'pipeline_backlog = %d (%s): -t fails' % (v, what))
            like(out, r'(?m)^%s:%d: .*pipeline_backlog.*at least %d' %
                 (re.escape(path), line_of(text, 'PB'), lo),
                 'pipeline_backlog = %d (%s): FILE:LINE: names the minimum %d' % (v, what, lo))
        text = conf(port, extra, limits='  pipeline_backlog = %d;\n' % lo)
        rc, out, _ = run_frontmx_t(text)
        is_(rc, 0, 'pipeline_backlog = %d (%s): accepted' % (lo, what))
        if rc != 0:
            diag(out)


    # Directories: a regular file where one must be made or used.
    blocker = os.path.join(D, 'a-file')
    with open(blocker, 'w') as f:
        f.write('not a directory\n')
    both('quarantine under a file',
         conf(port, filters='quarantine = {\n'
              '  directory = "%s/q"; # @Q\n};\n' % blocker), 'Q', 'quarantine .*Not a directory')
    # the first "address" is the listener's: put dir: on the upstream's
    text = conf(port, upstream_extra='')
    lines = text.split('\n')
    i = lines.index('upstream = {')
    lines[i + 1] = '  address = "dir:%s/md"; # @UP' % blocker
    both('dir: upstream under a file', '\n'.join(lines), 'UP', 'upstream .*Not a directory')
    both('spool directory missing',
         conf(port, spool='spool = {\n  directory = "%s/none"; # @SP\n};\n' % D),
         'SP', 'spool directory .*No such file')
    both('spool directory is a file',
         conf(port, spool='spool = {\n  directory = "%s"; # @SP\n};\n' % blocker),
         'SP', 'spool directory .*not a directory')
    qd = os.path.join(D, 'quarantine-ok')
    rc, out, _ = run_frontmx_t(conf(port, filters='quarantine = { directory = "%s"; };\n' % qd))
    is_(rc, 0, 'a quarantine directory that can be made: -t passes')
    ok(os.path.isdir(os.path.join(qd, 'new')), '-t made the Maildir start-up would make')


run(main, timeout=120)
