"""fmx_milterfaults.py - the fault and hostile-milter cases of frontmx's
milter client (issue 11, section 3): t/smtp/78-milter-faults.t (the
libmilter test milter, t/milter/testmilter.c) and t/smtp/79-milter-hostile.t
(the raw scripted milter, t/lib/fmx_milter.py).

    bench = FaultBench(['tempfail', 'reject', 'accept'])
    bench.case('hang at rcpt', lambda b: TestMilter(b.milter_conn, '-H', 'rcpt'))
    bench.finish()

FaultBench runs one frontmx per on_error value, each with one filter
`av` (a milter) whose address stays put while the test swaps the milter
behind it: every case starts its own milter there, sends one message
through each daemon and checks the outcome the daemon's on_error
promises:
  tempfail  some reply of the transaction is 4xx, nothing reaches upstream
  reject    some reply is 5xx, nothing reaches upstream
  accept    the message reaches upstream exactly as sent (one Received
            prepended, none of the failing milter's edits: never half-edited)
  discard   250, nothing reaches upstream
  quarantine  250, nothing upstream, one copy in the quarantine Maildir
            ending with the message as sent, none of the milter's headers
and, after every case, that the daemon is alive, its log holds no
sanitizer report, the upstream stream is clean CRLF, and a clean message
goes through a pass-through milter.

The milter is told apart from the clean run by the 'av' filter name only;
the daemons use `breaker = { failures = 0; }` (off) so that a run of
failing cases does not open the circuit breaker and skip the milter.
"""

import os
import re
import select
import signal
import socket
import subprocess
import time

from fmx import (REPO, Frontmx, Upstream, check_relayed, diag, is_, ok,
                 register_cleanup, start_process, tmpdir, free_port)
from fmx_filters import send, make_maildir, maildir_files, read_file

__all__ = ['TESTMILTER', 'TestMilter', 'FaultBench', 'message', 'big_message',
           'SENDER', 'RCPT', 'RCPT2', 'stale_unix_socket', 'transaction', 'header_value']

TESTMILTER = os.path.join(REPO, 'build', 'milter', 'testmilter')
SENDER = 'alice@example.org'
RCPT = 'bob@example.com'
RCPT2 = 'carol@example.com'


def message(tag, extra=b''):
    """A small message; tag names the case in its Subject."""
    return (b'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: ' + tag.encode() +
            b'\r\n' + extra + b'\r\nbody of ' + tag.encode() + b'\r\n')


def big_message(tag, size=200000):
    """A message whose body is several milter body chunks (65535 octets each)."""
    line = b'0123456789' * 7 + b'\r\n'
    return message(tag) + line * (size // len(line))


def stale_unix_socket(path):
    """A UNIX socket file nobody listens on (connect: ECONNREFUSED)."""
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()


class TestMilter:
    """build/milter/testmilter on conn (libmilter syntax: unix:PATH or
    inet:PORT@127.0.0.1), with the flags of t/milter/testmilter.c."""

    def __init__(self, conn, *args):
        self.logfile = os.path.join(tmpdir('fmx-tm-'), 'milter.log')
        argv = [TESTMILTER, '-p', conn, '-l', self.logfile] + list(args)
        self.proc = start_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        register_cleanup(self.stop)
        self.ready = self._wait_ready(10)
        if not self.ready:
            diag('testmilter %s did not come up: %s' % (' '.join(args), self.stderr()))

    def _wait_ready(self, timeout):
        end = time.time() + timeout
        line = b''
        while time.time() < end and not line.endswith(b'\n'):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                b = os.read(self.proc.stdout.fileno(), 64)
                if not b:
                    break
                line += b
        return line.startswith(b'ready')

    def stderr(self):
        if self.proc.poll() is None:
            return ''
        return self.proc.stderr.read().decode('utf-8', 'replace')

    def log(self):
        try:
            with open(self.logfile, 'rb') as f:
                return f.read().decode('utf-8', 'replace').splitlines()
        except OSError:
            return []

    def saw(self, prefix, timeout=10):
        """Wait until a log line starts with prefix."""
        end = time.time() + timeout
        while time.time() < end:
            if any(line.startswith(prefix) for line in self.log()):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        # SIGKILL: a thread may sleep in a hang for an hour
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def transaction(mx, body, rcpts=(RCPT,), sender=SENDER):
    """One SMTP session with one transaction (fmx_filters.send).  Returns
    (replies, fail): the replies of send() and the first that is neither
    2xx nor 3xx as (stage, Reply), or None (a refused RCPT counts only
    when every RCPT was refused)."""
    res = send(mx, sender, list(rcpts), body)
    # a refused recipient fails the transaction only if none was taken
    rcpt = [] if any(x.code == 250 for x in res['rcpt']) else res['rcpt'][:1]
    stages = [('greeting', res['greeting']), ('ehlo', res['ehlo']), ('mail', res['mail'])] + \
        [('rcpt', x) for x in rcpt] + [('data', res['data']), ('dot', res['dot'])]
    for stage, rep in stages:
        if rep is not None and (rep.code is None or rep.code < 200 or rep.code >= 400):
            return res, (stage, rep)
    return res, None


class FaultBench:
    """One frontmx per on_error value, a milter address shared by the cases."""

    def __init__(self, actions, inet=(), timeouts=2, extra=None):
        self.up = Upstream()
        self.dir = tmpdir('fmx-mf-')
        self.daemons = []
        for act in actions:
            if act in inet:
                port = free_port()
                addr, conn = 'inet:127.0.0.1:%d' % port, 'inet:%d@127.0.0.1' % port
            else:
                path = os.path.join(self.dir, '%s.sock' % act)
                addr, conn = 'unix:' + path, 'unix:' + path
            f = {'name': 'av', 'milter': addr, 'on_error': act,
                 'timeouts': {'connect': timeouts, 'command': timeouts, 'content': timeouts},
                 'breaker': {'failures': 0}}
            f.update(extra or {})
            conf = {'filters': [f]}
            qdir = None
            if act == 'quarantine':
                qdir = make_maildir(os.path.join(self.dir, 'quarantine'))
                conf['quarantine'] = {'directory': qdir}
            mx = Frontmx(self.up, name='frontmx (milter on_error %s)' % act, conf=conf)
            self.daemons.append({'action': act, 'mx': mx, 'addr': addr, 'conn': conn,
                                 'path': addr[5:] if addr.startswith('unix:') else None,
                                 'quarantine': qdir})
        self.milter = None

    def clear(self):
        if self.milter is not None:
            self.milter.stop()
            self.milter = None

    def outcome(self, name, d, res, fail, body, n_before, expect=None, rcpts=(RCPT,), q_before=()):
        """Check what the client got and what the upstream received."""
        act = expect or d['action']
        with self.up.lock:
            new = list(self.up.messages[n_before:])
        stage = fail[0] if fail else 'none'
        code = fail[1].code if fail else None
        text = ' '.join(fail[1].lines) if fail else ''
        if act == 'tempfail':
            ok(code is not None and 400 <= code < 500,
               '%s: the client gets 4xx (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 0, '%s: nothing reaches the upstream' % name)
        elif act == 'reject':
            ok(code is not None and 500 <= code < 600,
               '%s: the client gets 5xx (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 0, '%s: nothing reaches the upstream' % name)
        elif act == 'quarantine':  # 250, one copy in the quarantine: the original
            ok(fail is None, '%s: the client gets 250 (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 0, '%s: nothing reaches the upstream' % name)
            files = [f for f in maildir_files(d['quarantine']) if f not in q_before] if d['quarantine'] else []
            if is_(len(files), 1, '%s: one copy in the quarantine' % name):
                data = read_file(files[0]).replace(b'\r\n', b'\n')
                orig = body.replace(b'\r\n', b'\n')
                ok(data.endswith(orig), '%s: the quarantined copy ends with the message as sent' % name)
                ok(not re.search(rb'(?m)^X-(Good|N|Bad|Early|Trickle|Added):', data[:-len(orig)]),
                   "%s: none of the failing milter's headers in the quarantined copy" % name)
        elif act == 'discard':
            ok(fail is None, '%s: the client gets 250 (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 0, '%s: nothing reaches the upstream' % name)
        elif act == 'safe':       # either way, as long as nothing is lost
            if fail is None:
                is_(len(new), 1, '%s: accepted, and the upstream gets it once' % name)
            else:
                ok(code is not None and 400 <= code < 600,
                   '%s: refused with 4xx/5xx (at %s: %s %s)' % (name, stage, code, text))
                is_(len(new), 0, '%s: refused, and nothing reaches the upstream' % name)
        elif act == 'edited':     # relayed once; check() looks at the edits
            ok(fail is None, '%s: the message is accepted (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 1, '%s: the upstream gets it once' % name)
        else:      # accept: relayed, and exactly as sent
            ok(fail is None, '%s: the message is accepted (at %s: %s %s)' % (name, stage, code, text))
            is_(len(new), 1, '%s: the upstream gets it once' % name)
            if len(new) == 1:
                check_relayed(new[0].data, body, name)
                is_((new[0].mail_from, sorted(new[0].rcpts)), (SENDER, sorted(rcpts)),
                    '%s: the envelope as sent' % name)
        # a reply that reached the client is one well-formed reply
        for k in ('greeting', 'ehlo', 'mail', 'data', 'dot'):
            r = res.get(k)
            if r is not None and r.code == -1:
                ok(False, '%s: %s reply malformed: %r' % (name, k, r.raw))
        return new

    def framing(self, name):
        with self.up.lock:
            viol = list(self.up.violations)
            errs = list(self.up.errors)
        r = ok(not viol and not errs, '%s: upstream stream clean (CRLF only, in sequence)' % name)
        if not r:
            diag('violations: %r errors: %r' % (viol[:5], errs[:5]))

    def healthy(self, name, d, passthrough):
        """The daemon is up, a pass-through milter relays a clean message."""
        mx = d['mx']
        if not ok(mx.alive(), '%s: %s still running' % (name, mx.name)):
            diag(mx.log()[-4000:])
            raise RuntimeError('frontmx died')
        self.clear()
        self.milter = passthrough(self, d)
        n = len(self.up.messages)
        body = message('clean after ' + name)
        res, fail = transaction(mx, body)
        ok(fail is None, '%s: then a clean message passes (%s)' % (
            name, '%s %s' % (fail[0], fail[1].code) if fail else 'ok'))
        with self.up.lock:
            new = self.up.messages[n:]
        if len(new) == 1:
            check_relayed(new[0].data, body, name + ' (clean)')
        else:
            is_(len(new), 1, '%s: the clean message reaches the upstream once' % name)
        mx.check_sanitizers('%s: no sanitizer report in the log of %s' % (name, mx.name))
        self.clear()

    def case(self, name, start, body=None, on=None, expect=None, rcpts=(RCPT,),
             passthrough=None, check=None):
        """Run one case on the daemons named in on (all by default).

        start(bench, d) starts the milter for daemon d (or None for none);
        expect(d) may override the expected outcome; check(bench, d, res,
        fail, new) adds assertions."""
        body = body or message(name)
        passthrough = passthrough or (lambda b, d: TestMilter(d['conn']))
        for d in self.daemons:
            if on is not None and d['action'] not in on:
                continue
            cname = '%s [on_error %s]' % (name, d['action'])
            self.clear()
            if d['path'] and os.path.exists(d['path']):
                os.unlink(d['path'])
            self.milter = start(self, d)
            n = len(self.up.messages)
            q = set(maildir_files(d['quarantine'])) if d['quarantine'] else set()
            res, fail = transaction(d['mx'], body, rcpts=rcpts)
            new = self.outcome(cname, d, res, fail, body, n,
                               expect(d) if callable(expect) else expect, rcpts, q)
            if check:
                check(self, d, res, fail, new)
            self.framing(cname)
            self.healthy(cname, d, passthrough)

    def finish(self):
        self.clear()
        for d in self.daemons:
            d['mx'].finish()


def header_value(data, name):
    """Unfolded value of the first header field called name (bytes)."""
    m = re.search(rb'(?im)^' + re.escape(name.encode()) + rb':[ \t]?(.*(?:\r\n[ \t].*)*)\r\n', data)
    return m.group(1) if m else None
