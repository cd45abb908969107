"""fmx.py - black-box test harness for frontmx (t/smtp/*.t).

Run by Debian's /usr/bin/python3 (aiosmtpd, dnslib, dkim live there).

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
    from fmx import *

    def main():
        up = Upstream()
        mx = Frontmx(up)
        c = SmtpClient(mx.port)
        reply_is(c.greeting(), 220, None, 'greeting')
        ...
        mx.finish()                # SIGTERM, exit 0, no sanitizer reports

    run(main)                      # TAP plan, cleanup, exit status

Pieces:
  TAP            ok(), is_(), like(), unlike(), reply_is(), diag(), done();
                 with todo(reason): the assertions inside are TAP TODO
  processes      every process started here is killed at exit (atexit and
                 try/finally in run()); the test process is a child
                 subreaper, so daemonised grandchildren are found and killed
                 too.  Every socket has a timeout; SIGALRM bounds the file.
  Frontmx        writes a libconfig file, starts $FRONTMX -c FILE
  SmtpClient     raw-socket SMTP client, exact bytes
  Upstream       scripted capture sink with a strict stream parser
  Postfix        see postfix.py
"""

import atexit
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

__all__ = [
    'ok', 'is_', 'isnt', 'like', 'unlike', 'diag', 'note', 'skip', 'todo', 'done', 'run',
    'reply_is', 'failed_count',
    'free_port', 'tmpdir', 'wait_for', 'set_timeout',
    'Frontmx', 'run_frontmx_t', 'frontmx_path', 'render_conf', 'base_conf',
    'SmtpClient', 'Reply', 'Upstream', 'Message', 'Gate', 'check_stream',
    'dot_stuff', 'split_received', 'check_relayed', 'ehlo_lines', 'relay_one_each', 'REPO',
]

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))

# ---------------------------------------------------------------- TAP

_tap = {'n': 0, 'failed': 0, 'done': False, 'todo': None}
_tap_lock = threading.Lock()


def _out(s):
    sys.stdout.write(s)
    sys.stdout.flush()


def diag(*msg):
    text = ' '.join(str(m) for m in msg)
    with _tap_lock:
        for line in text.splitlines() or ['']:
            _out('# %s\n' % line)


note = diag


def ok(cond, name=''):
    name = str(name).replace('\n', ' ').replace('#', '\\#')
    with _tap_lock:
        _tap['n'] += 1
        n = _tap['n']
        why = _tap['todo']
        if why is not None:
            # TAP TODO: a known bug on main; prove counts it as passed,
            # and reports it as "unexpectedly succeeded" once fixed
            name += ' # TODO %s' % why.replace('\n', ' ').replace('#', '')
        if cond:
            _out('ok %d - %s\n' % (n, name))
        else:
            if why is None:
                _tap['failed'] += 1
            _out('not ok %d - %s\n' % (n, name))
            # where the failing assertion is, for the reader of the TAP
            for fr in reversed(traceback.extract_stack()[:-1]):
                if not fr.filename.endswith('fmx.py'):
                    _out('#   at %s line %d\n' % (os.path.basename(fr.filename), fr.lineno))
                    break
    return bool(cond)


class todo:
    """with todo('reason'): the assertions inside are TAP TODO (a known
    bug the test documents: their failure does not fail the file)."""

    def __init__(self, why):
        self.why = why

    def __enter__(self):
        self.saved, _tap['todo'] = _tap['todo'], self.why
        return self

    def __exit__(self, *exc):
        _tap['todo'] = self.saved
        return False


def skip(name, why=''):
    with _tap_lock:
        _tap['n'] += 1
        _out('ok %d - %s # SKIP %s\n' % (_tap['n'], name, why))


def failed_count():
    return _tap['failed']


def _short(v, limit=2000):
    r = repr(v)
    if len(r) > limit:
        r = r[:limit] + '...(%d chars)' % len(r)
    return r


def is_(got, want, name=''):
    res = ok(got == want, name)
    if not res:
        diag('     got: %s' % _short(got))
        diag('  wanted: %s' % _short(want))
    return res


def isnt(got, notwant, name=''):
    res = ok(got != notwant, name)
    if not res:
        diag('     got: %s' % _short(got))
        diag('  wanted anything else')
    return res


def like(got, regex, name=''):
    if isinstance(got, (bytes, bytearray)) and isinstance(regex, str):
        regex = regex.encode()
    if got is None:
        res = False
    else:
        res = re.search(regex, got, re.M) is not None
    ok(res, name)
    if not res:
        diag('                  %s' % _short(got))
        diag("    doesn't match %s" % _short(regex))
    return res


def unlike(got, regex, name=''):
    if isinstance(got, (bytes, bytearray)) and isinstance(regex, str):
        regex = regex.encode()
    res = got is not None and re.search(regex, got, re.M) is None
    ok(res, name)
    if not res:
        diag('                  %s' % _short(got))
        diag('          matches %s' % _short(regex))
    return res


def done():
    """Print the plan and exit: 0 when every assertion passed."""
    with _tap_lock:
        if _tap['done']:
            return
        _tap['done'] = True
        _out('1..%d\n' % _tap['n'])
    _cleanup()
    sys.stdout.flush()
    os._exit(1 if _tap['failed'] or _tap['n'] == 0 else 0)


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout('test file exceeded its time limit')


def set_timeout(seconds):
    """Bound the whole test file's wall time (SIGALRM in the main thread)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(seconds))


def _term(signum, frame):
    diag('killed by signal %d' % signum)
    _cleanup()
    os._exit(1)


# The whole-file limit is a hang guard, never a speed test: ASan builds on
# two cores shared with other suites ran 45 s files for over a minute.
MIN_FILE_TIMEOUT = 300


def run(main, timeout=45):
    """Run main() with a time limit (at least MIN_FILE_TIMEOUT: a guard
    against hangs only); report exceptions; clean up; done()."""
    set_timeout(max(timeout, MIN_FILE_TIMEOUT))
    try:
        main()
    except BaseException as e:  # noqa: B902 - report everything as a failure
        if isinstance(e, SystemExit) and e.code in (0, None):
            pass
        else:
            ok(False, 'test script raised %s: %s' % (type(e).__name__, e))
            diag(traceback.format_exc())
    finally:
        signal.alarm(0)
        done()


# ---------------------------------------------------------------- processes, temp dirs

_procs = []          # subprocess.Popen objects started by the harness
_cleanups = []       # callables run (LIFO) at exit
_tmpdirs = []
_cleaned = {'done': False}
_MYPID = os.getpid()


def _set_subreaper():
    # Orphaned descendants (Postfix daemons, a daemonising frontmx) get
    # re-parented to us instead of init, so _cleanup() can find and kill them.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)        # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _children_of(pid):
    kids = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(')') + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            kids.append(int(d))
    return kids


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in _children_of(p):
            out.append(k)
            todo.append(k)
    return out


def register_cleanup(fn):
    _cleanups.append(fn)


def _cleanup():
    if _cleaned['done'] or os.getpid() != _MYPID:
        return
    _cleaned['done'] = True
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:
            diag('cleanup error: %s' % e)
    for p in _procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                try:
                    p.kill()
                except OSError:
                    pass
            try:
                p.wait(timeout=5)
            except Exception:
                pass
    # Anything still below us (orphans re-parented to the subreaper) was
    # started by this test: kill it by pid and reap it.
    for _ in range(3):
        kids = _descendants(_MYPID)
        if not kids:
            break
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.time() + 2
        for k in kids:
            while time.time() < deadline:
                try:
                    r, _st = os.waitpid(k, os.WNOHANG)
                except ChildProcessError:
                    break
                if r:
                    break
                time.sleep(0.02)
    if not os.environ.get('FMX_KEEP'):
        for d in _tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
    else:
        for d in _tmpdirs:
            diag('kept %s' % d)


_set_subreaper()
atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _term)
signal.signal(signal.SIGHUP, _term)


def start_process(argv, **kw):
    """Popen in its own session (so its group can be killed) and track it."""
    kw.setdefault('start_new_session', True)
    kw.setdefault('stdin', subprocess.DEVNULL)
    p = subprocess.Popen(argv, **kw)
    _procs.append(p)
    return p


def tmpdir(prefix='fmx-'):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    _tmpdirs.append(d)
    return d


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout=10.0, interval=0.05):
    """Poll pred() until true or timeout; returns its last value."""
    end = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= end:
            return v
        time.sleep(interval)


def port_open(port, host='127.0.0.1'):
    try:
        s = socket.create_connection((host, port), timeout=0.5)
    except OSError:
        return False
    s.close()
    return True


# ---------------------------------------------------------------- frontmx

def frontmx_path():
    p = os.environ.get('FRONTMX', './frontmx')
    if not os.path.isabs(p):
        if os.path.exists(p):
            p = os.path.abspath(p)
        else:
            p = os.path.join(REPO, p)
    return p


def _cfg_value(v, indent):
    pad = '  ' * indent
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return '"%s"' % v.replace('\\', '\\\\').replace('"', '\\"')
    if isinstance(v, dict):
        body = ''.join('%s  %s = %s;\n' % (pad, k, _cfg_value(x, indent + 1))
                       for k, x in v.items() if x is not None)
        return '{\n%s%s}' % (body, pad)
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, dict) for x in v):       # libconfig list of groups
            return '( %s )' % ', '.join(_cfg_value(x, indent + 1) for x in v)
        return '[ %s ]' % ', '.join(_cfg_value(x, indent + 1) for x in v)
    raise TypeError('cannot render %r' % (v,))


def render_conf(d):
    """Render a dict as a libconfig file (groups, arrays, lists of groups)."""
    return ''.join('%s = %s;\n' % (k, _cfg_value(v, 0)) for k, v in d.items() if v is not None)


def base_conf(port, upstream, spool):
    return {
        'hostname': 'mx.test.example',
        'workers': 2,
        'listen': [{'address': '127.0.0.1:%d' % port}],
        'upstream': {'address': upstream},
        'limits': {'message_size': 1048576, 'recipients': 100, 'errors': 20,
                   'spool_memory': 65536},
        'timeouts': {'command': 300, 'data_block': 180, 'upstream_connect': 5,
                     'upstream_command': 10, 'upstream_data_end': 10,
                     'shutdown_grace': 5},
        'relay': {'domains': ['example.com'], 'networks': ['127.0.0.0/8']},
        'spool': {'directory': spool},
        # No reverse lookups through the machine's resolver: tests stay on
        # loopback (t/smtp/45-rdns.t tests them against fakedns).
        'dns': {'reverse': False},
    }


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def _upstream_address(upstream):
    if upstream is None:
        return '127.0.0.1:%d' % free_port()      # nobody listens there
    if isinstance(upstream, int):
        return '127.0.0.1:%d' % upstream
    if isinstance(upstream, str):
        return upstream
    return '127.0.0.1:%d' % upstream.port


# epoll_wait / epoll_pwait / epoll_pwait2 by machine (/proc/PID/task/TID/syscall)
EPOLL_WAIT_SYSCALLS = {'x86_64': ('232', '281', '441'), 'aarch64': ('22', '441')}


def workers_idle(pid):
    """True when every worker thread of frontmx PID (named fmx-worker-N)
    is blocked in epoll_wait, i.e. has written every log line it held (it
    flushes before it blocks), or when that cannot be known."""
    waits = EPOLL_WAIT_SYSCALLS.get(os.uname().machine)
    if waits is None:
        return True
    try:
        tids = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return True
    for t in tids:
        try:
            with open('/proc/%d/task/%s/comm' % (pid, t)) as f:
                if not f.read().startswith('fmx-worker'):
                    continue
            with open('/proc/%d/task/%s/syscall' % (pid, t)) as f:
                nr = f.read().split(' ', 1)[0].strip()
        except OSError:
            continue
        if nr not in waits:
            return False
    return True


SANITIZER_PATTERNS = ('ERROR: AddressSanitizer', 'runtime error:', 'LeakSanitizer',
                      'ERROR: UndefinedBehaviorSanitizer', 'AddressSanitizer:DEADLYSIGNAL')


class Frontmx:
    """One frontmx daemon on a free loopback port.

    Frontmx(upstream, conf=None, raw=None, start=True)
      upstream  Upstream object, port number, "host:port" or "dir:PATH"
      conf      dict merged over base_conf() (None values delete keys)
      raw       complete config text instead; @PORT@, @UPSTREAM@ and
                @SPOOL@ are substituted
    """

    def __init__(self, upstream=None, conf=None, raw=None, start=True, name='frontmx',
                 expect_start=True, env=None):
        self.dir = tmpdir('fmx-d-')
        self.spool = os.path.join(self.dir, 'spool')
        os.mkdir(self.spool)
        self.port = free_port()
        self.upstream_address = _upstream_address(upstream)
        self.conffile = os.path.join(self.dir, 'frontmx.conf')
        self.logfile = os.path.join(self.dir, 'frontmx.log')
        self.name = name
        self.proc = None
        self.rc = None
        self.env = env or {}
        self.write_conf(conf=conf, raw=raw)
        register_cleanup(self._kill)
        if start:
            self.start(expect_start)

    def conf_text(self, conf=None, raw=None):
        if raw is not None:
            return (raw.replace('@PORT@', str(self.port))
                    .replace('@UPSTREAM@', self.upstream_address)
                    .replace('@SPOOL@', self.spool))
        d = base_conf(self.port, self.upstream_address, self.spool)
        if conf:
            _merge(d, conf)
        return render_conf(d)

    def write_conf(self, conf=None, raw=None):
        text = self.conf_text(conf, raw)
        tmp = self.conffile + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.rename(tmp, self.conffile)
        self.conf = text
        return text

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, expect_start=True):
        exe = frontmx_path()
        if not os.access(exe, os.X_OK):
            ok(False, '%s: binary %s exists' % (self.name, exe))
            raise RuntimeError('no frontmx binary at %s (set FRONTMX)' % exe)
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0:halt_on_error=1')
        env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')
        self.log_fh = open(self.logfile, 'ab')
        self.proc = start_process([exe, '-c', self.conffile], stdout=self.log_fh,
                                  stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        # a guard against a hang only: under valgrind on a loaded machine
        # the start alone can take well over 10 s
        end = time.time() + 60
        up = False
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            if port_open(self.port):
                up = True
                break
            time.sleep(0.05)
        if expect_start:
            ok(up, '%s started and listens on 127.0.0.1:%d' % (self.name, self.port))
            if not up:
                diag('exit status: %s' % self.proc.poll())
                diag('log:\n' + self.log()[-4000:])
                raise RuntimeError('frontmx did not start')
        return up

    def log(self):
        """The daemon's stderr so far, once its workers have written
        the lines they hold (common/log.c: a worker writes the lines of a
        loop pass together before it blocks, so a reply can reach the
        client a moment before the line logged next to it)."""
        if self.proc is not None and self.proc.poll() is None:
            # a guard against a busy daemon only: an idle one is seen at once
            end = time.time() + 1.0
            while not workers_idle(self.proc.pid) and time.time() < end:
                time.sleep(0.001)
        try:
            with open(self.logfile, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self, field):
        """A numeric field of /proc/PID/status (e.g. 'VmRSS', in kB)."""
        try:
            with open('/proc/%d/status' % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ':'):
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def nfds(self):
        try:
            return len(os.listdir('/proc/%d/fd' % self.proc.pid))
        except OSError:
            return None

    def hup(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self, timeout=None):
        """SIGTERM, wait (shutdown_grace + 5 s by default), return exit code.

        A negative code is a signal; None means it had to be SIGKILLed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except OSError:
                pass
            try:
                self.rc = self.proc.wait(timeout=timeout or 10)
            except subprocess.TimeoutExpired:
                diag('%s did not exit after SIGTERM; killing it' % self.name)
                self._kill()
                self.rc = None
        else:
            self.rc = self.proc.returncode
        return self.rc

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except Exception:
                pass

    def check_sanitizers(self, name=None):
        text = self.log()
        bad = [p for p in SANITIZER_PATTERNS if p in text]
        res = ok(not bad, name or '%s: no sanitizer reports in its log' % self.name)
        if not res:
            i = min(text.find(p) for p in bad)
            diag(text[max(0, i - 500):i + 6000])
        return res

    def finish(self):
        """Stop with SIGTERM; assert exit status 0 and a clean sanitizer log."""
        rc = self.stop()
        is_(rc, 0, '%s: exits 0 on SIGTERM' % self.name)
        self.check_sanitizers()
        return rc

    def client(self, **kw):
        return SmtpClient(self.port, **kw)


def run_frontmx_t(conf_text, name='frontmx.conf', timeout=15):
    """Run `frontmx -t -c FILE` on conf_text; return (rc, output, file path)."""
    d = tmpdir('fmx-t-')
    path = os.path.join(d, name)
    with open(path, 'w') as f:
        f.write(conf_text)
    return run_frontmx_t_file(path, timeout=timeout) + (path,)


def run_frontmx_t_file(path, timeout=15):
    env = dict(os.environ)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1')
    try:
        p = subprocess.run([frontmx_path(), '-t', '-c', path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        return (None, (e.output or b'').decode('utf-8', 'replace'))
    return (p.returncode, p.stdout.decode('utf-8', 'replace'))


# ---------------------------------------------------------------- client

class Reply:
    """One SMTP reply: code (int, None on EOF/timeout, -1 if malformed), lines
    (text after "ddd-"/"ddd "), raw bytes.  Unpacks as (code, lines)."""

    def __init__(self, code, lines, raw=b'', error=None):
        self.code, self.lines, self.raw, self.error = code, lines, raw, error

    def __iter__(self):
        return iter((self.code, self.lines))

    def __getitem__(self, i):
        return (self.code, self.lines)[i]

    def __len__(self):
        return 2

    @property
    def text(self):
        return '\n'.join(self.lines)

    @property
    def enh(self):
        """Enhanced status code of the first line ("5.7.1"), or None."""
        if not self.lines:
            return None
        m = re.match(r'([245]\.\d{1,3}\.\d{1,3})(?: |$)', self.lines[0])
        return m.group(1) if m else None

    def __repr__(self):
        if self.code is None:
            return '<no reply: %s; raw=%r>' % (self.error, self.raw)
        return '<%s %r>' % (self.code, self.raw)


def reply_is(r, code, enh=None, name=''):
    """Assert a Reply's code (and enhanced code of its first line, if given).
    Every line of a multi-line reply must carry the code (parser checks)."""
    good = r is not None and r.code == code
    if good and enh is not None:
        good = r.enh == enh
    res = ok(good, name)
    if not res:
        diag('     got: %r' % (r,))
        diag('  wanted: %s%s' % (code, (' ' + enh) if enh else ''))
    return res


class SmtpClient:
    """Raw-socket SMTP client.  send() writes exact bytes; cmd() adds CRLF."""

    def __init__(self, port, host='127.0.0.1', source=None, timeout=10.0):
        self.timeout = timeout
        src = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=src)
        self.buf = b''
        self.eof = False
        self.transcript = []          # ('>', bytes) / ('<', bytes)

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.transcript.append(('>', data))
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.transcript.append(('!', str(e).encode()))
            return False

    def _fill(self, deadline):
        if self.eof:
            return False
        t = deadline - time.time()
        if t <= 0:
            return False
        self.sock.settimeout(t)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError as e:            # ECONNRESET
            self.eof = True
            self.transcript.append(('!', str(e).encode()))
            return False
        if not d:
            self.eof = True
            return False
        self.transcript.append(('<', d))
        self.buf += d
        return True

    def readline(self, timeout=None):
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        while b'\n' not in self.buf:
            if not self._fill(deadline):
                return None
        i = self.buf.index(b'\n')
        line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
        return line

    def reply(self, timeout=None):
        """Read one complete (multi-line) reply."""
        deadline = time.time() + (self.timeout if timeout is None else timeout)
        lines, raw, code = [], b'', None
        while True:
            line = self.readline(max(0.0, deadline - time.time()))
            if line is None:
                err = 'connection closed' if self.eof else 'timeout'
                if raw or self.buf:
                    err += ' inside a reply'
                return Reply(None, lines, raw + self.buf, err)
            raw += line
            m = re.match(rb'^([2-5]\d\d)([ -]?)(.*)\r\n$', line, re.S)
            if not m or b'\r' in m.group(3) or b'\n' in m.group(3):
                # Malformed.  Resynchronise so that one bad reply does not
                # shift every later one: a line that does not end in CRLF or
                # looks like a continuation belongs to the same reply.
                lines = lines + [line.decode('latin-1')]
                while (not line.endswith(b'\r\n') or re.match(rb'^\d{3}-', line)):
                    line = self.readline(min(1.0, max(0.0, deadline - time.time())))
                    if line is None:
                        break
                    raw += line
                    lines.append(line.decode('latin-1'))
                return Reply(-1, lines, raw, 'malformed reply line')
            c = int(m.group(1))
            if code is not None and c != code:
                return Reply(-1, lines, raw, 'code changed inside a multi-line reply')
            code = c
            lines.append(m.group(3).decode('latin-1'))
            if m.group(2) != b'-':
                return Reply(code, lines, raw)

    def greeting(self, timeout=None):
        return self.reply(timeout)

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b'\r\n')
        return self.reply(timeout)

    def ehlo(self, name='client.example'):
        return self.cmd('EHLO ' + name)

    def start(self, helo='client.example'):
        """Greeting + EHLO; returns the EHLO reply."""
        g = self.greeting()
        if g.code != 220:
            return g
        return self.ehlo(helo)

    def data(self, body, stuffed=False):
        """DATA, the body (dot-stuffed unless stuffed=True) and CRLF.CRLF.

        Returns (reply to DATA, final reply or None)."""
        r = self.cmd('DATA')
        if r.code != 354:
            return r, None
        if isinstance(body, str):
            body = body.encode()
        if not stuffed:
            body = dot_stuff(body)
        if not body.endswith(b'\r\n') and body:
            body += b'\r\n'
        self.send(body + b'.\r\n')
        return r, self.reply()

    def transaction(self, sender, rcpts, body, params=''):
        """MAIL, each RCPT, and (if MAIL and some RCPT got 250) DATA + body.

        Returns {'mail': Reply, 'rcpt': [Reply...], 'data': Reply|None,
        'dot': Reply|None}."""
        res = {'mail': self.cmd('MAIL FROM:<%s>%s' % (sender, params)), 'rcpt': [],
               'data': None, 'dot': None}
        for r in rcpts:
            res['rcpt'].append(self.cmd('RCPT TO:<%s>' % r))
        if res['mail'].code == 250 and any(x.code == 250 for x in res['rcpt']):
            res['data'], res['dot'] = self.data(body)
        return res

    def expect_close(self, timeout=5.0):
        """True if the peer closes within timeout (remaining bytes discarded
        after being recorded in .tail)."""
        deadline = time.time() + timeout
        self.tail = self.buf
        self.buf = b''
        while not self.eof:
            if not self._fill(deadline):
                break
            self.tail += self.buf
            self.buf = b''
        return self.eof

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def vanish(self):
        """Go away at once: a reset (SO_LINGER 0), not a half-close
        (which frontmx answers to the end, t/smtp/46-half-close.t)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass
        self.close()

    def quit(self):
        r = self.cmd('QUIT')
        self.close()
        return r


def relay_one_each(port, n, body, name='message %d relayed'):
    """n sessions one after another, each EHLO clientI.example, one
    message alice@example.org -> bob@example.com (its 250 asserted as
    name % I), QUIT; returns the QUIT replies."""
    quits = []
    for i in range(n):
        c = SmtpClient(port)
        c.greeting()
        c.ehlo('client%d.example' % i)
        res = c.transaction('alice@example.org', ['bob@example.com'], body)
        reply_is(res['dot'], 250, None, name % i)
        quits.append(c.quit())
        c.close()
    return quits


def ehlo_lines(port):
    """The keyword lines of a fresh session's EHLO reply (hostname left out)."""
    c = SmtpClient(port)
    e = c.start()
    c.quit()
    return list(e.lines[1:])


def dot_stuff(body):
    """RFC 5321 4.5.2 transparency: double a leading dot on every line."""
    if isinstance(body, str):
        body = body.encode()
    out = []
    for line in body.split(b'\r\n'):
        out.append(b'.' + line if line.startswith(b'.') else line)
    return b'\r\n'.join(out)


def split_received(data):
    """Split a relayed message into (first header field if it is Received:,
    rest).  The field includes its folded continuation lines."""
    if not data.startswith(b'Received:'):
        return None, data
    i = data.find(b'\r\n')
    while i != -1 and data[i + 2:i + 3] in (b'\t', b' '):
        i = data.find(b'\r\n', i + 2)
    if i == -1:
        return data, b''
    return data[:i + 2], data[i + 2:]


def check_relayed(got, original, name, addr='127.0.0.1', helo=None):
    """The upstream got exactly one prepended Received: field + original."""
    if got is None:
        ok(False, name + ': message relayed')
        return False
    rcv, rest = split_received(got)
    r1 = ok(rcv is not None, name + ': starts with a Received: header field')
    if rcv is not None:
        like(rcv, r'^Received: from .*\[%s\]' % re.escape(addr),
             name + ': Received names the client address')
        like(rcv, r'by mx\.test\.example', name + ': Received names our hostname')
        if helo is not None:
            like(rcv, r'^Received: from %s[ \r]' % re.escape(helo), name + ': Received names the HELO')
        ok(b'\r\n' not in rcv[:-2].replace(b'\r\n\t', b'').replace(b'\r\n ', b''),
           name + ': Received folded only with CRLF + WSP')
        r2, _ = split_received(rest)
        ok(r2 is None or original.startswith(b'Received:'),
           name + ': exactly one Received: prepended')
    r3 = is_(rest, original, name + ': message bytes relayed exactly')
    return r1 and r3


# ---------------------------------------------------------------- upstream

class Message:
    """One DATA transaction seen by the Upstream."""

    def __init__(self, conn, helo, mail_cmd, rcpt_cmds, data, raw_data, xclient, xforward):
        self.conn = conn
        self.helo = helo
        self.mail_cmd = mail_cmd
        self.rcpt_cmds = rcpt_cmds
        self.mail_from = _angle(mail_cmd)
        self.rcpts = [_angle(r) for r in rcpt_cmds]
        self.data = data              # un-dot-stuffed, CRLF line ends
        self.raw_data = raw_data      # as sent, stuffed, without the final ".\r\n"
        self.verb = 'DATA'            # or 'BDAT': data is the chunks' octets
        self.xclient = list(xclient)
        self.xforward = list(xforward)   # every XFORWARD seen on the connection so far
        self.xforward_tx = []            # XFORWARD lines since the previous transaction
        self.reply = None

    def __repr__(self):
        return '<Message from=%r rcpts=%r %d bytes>' % (self.mail_from, self.rcpts, len(self.data))


def _angle(cmd):
    m = re.search(r'<([^>]*)>', cmd)
    return m.group(1) if m else None


class _Conn:
    def __init__(self, idx, sock):
        self.idx = idx
        self.sock = sock
        self.raw = bytearray()
        self.lines = []             # every complete line received (bytes)
        self.commands = []          # command lines (str), data excluded
        self.helo = None
        self.xclient = []
        self.xforward = []
        self.closed = False


DEFAULT_CAPS = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES']


def send_all(sock, data):
    """sendall() of data (str as UTF-8) by a scripted peer; a peer that
    went away is the test's to notice, not an exception."""
    if isinstance(data, str):
        data = data.encode()
    try:
        sock.sendall(data)
    except OSError:
        pass


class Upstream:
    """Scripted capture sink on 127.0.0.1 (a thread in the test process).

    Records the exact bytes of each connection (.raw, a list of bytes),
    parses the stream strictly (.violations: lines not ending in CRLF, bare
    CR/LF, NUL, over-long lines; .errors: commands out of sequence) and
    records every DATA completion as a Message (.messages).

    Behaviour (attributes may be changed while it runs; they are read when
    the next connection or command arrives):
      ehlo_caps   EHLO keywords
      banner      greeting line
      on_mail, on_rcpt, on_data, on_dot, on_helo, on_xclient
                  reply for that command: a string ("550 5.1.0 nope"), a
                  callable(arg_line, conn) -> string, or a list used in turn
                  (last element repeats); None means the normal reply
      refuse      (constructor) pick a free port but do not listen;
                  call .listen() later to come up on that port
      on_rset, on_noop, on_quit, on_starttls
                  the same for RSET, NOOP, QUIT and STARTTLS (this upstream
                  has no TLS: default 454, even when ehlo_caps offer it)
      reset_in_data  close with RST after this many bytes of message data
      silent_at   stop answering at 'greeting','EHLO','XCLIENT','MAIL','RCPT',
                  'DATA','DOT','RSET','QUIT' (keeps reading, never replies)
      garbage_at  same phases: send .garbage instead of the reply
      garbage     bytes, default b'hello world\\r\\n'
      inject      raw bytes sent at a chosen moment, {key: spec}; spec is
                  bytes/str, a callable(conn) -> bytes, or a list used in
                  turn like the on_* lists (None: nothing).  Keys:
                    'connect'  on connect, before the greeting
                    PHASE      ('greeting', 'EHLO', 'MAIL', 'RCPT', 'DATA',
                               'DOT', 'RSET', ...) right behind that
                               phase's reply, in the same write
                    'data'     in the middle of the message data, once
                               inject_data_at octets of it have arrived
                               (before the final dot is read); with
                               hold_data the upstream then stops reading
                               until .release() (or 60 s), so a message
                               larger than the socket buffers proves the
                               proxy had not sent its final dot yet
      inject_data_at  octets of message data before the 'data' injection (1)
      hold_data   see inject 'data'
      close_on_421  close after sending a 421 (default; False: stay open,
                  to see whether the proxy drops the connection itself)
      line_max    longest text line (with CRLF, the stuffing dot not
                  counted) before it is a violation; 1000 (RFC 5321)
      BDAT        (RFC 3030) when ehlo_caps offer CHUNKING (not by
                  default): "BDAT n [LAST]" and its n octets, read as
                  they are; each chunk is answered after its last octet
                  ("250 2.0.0 n octets received"), BDAT LAST by on_bdat,
                  else on_dot (the message's final reply either way;
                  default "250 2.0.0 Ok: queued as ...")
                  and the chunks become one Message (.verb 'BDAT', .data
                  = .raw_data = the octets).  Phase 'BDAT' for silent_at,
                  garbage_at, inject; reset_in_data counts chunk octets.
      bdat_early  a reply sent as soon as a BDAT command line arrives,
                  before its chunk is read (a broken MTA); with
                  hold_data the upstream then reads nothing more until
                  .release() (or 60 s)
      rcvbuf      (constructor) SO_RCVBUF of the listening socket, so a
                  message that the upstream does not read fills the
                  socket buffers in a bounded number of octets
      lmtp        (constructor) speak LMTP (RFC 2033): LHLO instead of
                  EHLO (EHLO and HELO are errors, 500), and after the
                  final dot one reply per accepted RCPT ("250 2.0.0
                  <rcpt> Ok ...").  on_dot then gives the whole answer to
                  the dot: its text is sent as is (several replies, none,
                  anything, or "" for nothing); Message.reply keeps it

    Like a strict real MTA (Postfix): a refused DATA leaves the transaction
    open (the next MAIL without RSET gets "503 5.5.1 Error: nested MAIL
    command"); a 421 or 221 reply, whatever the phase, is followed by
    closing the connection.

    Counters: .messages (and .transactions) are the DATA completions the
    upstream saw, whatever it answered; .accepted counts those it answered
    250.  Each Message's .reply is set before it is published.
    """

    PHASES = ('greeting', 'EHLO', 'HELO', 'STARTTLS', 'XCLIENT', 'XFORWARD', 'MAIL', 'RCPT',
              'DATA', 'DOT', 'BDAT', 'RSET', 'NOOP', 'QUIT')

    def __init__(self, ehlo_caps=None, banner='220 upstream.test ESMTP capture', on_mail=None,
                 on_rcpt=None, on_data=None, on_dot=None, on_helo=None, on_xclient=None,
                 on_rset=None, on_noop=None, on_quit=None, on_starttls=None,
                 refuse=False, reset_in_data=None, silent_at=None, garbage_at=None,
                 garbage=b'hello world\r\n', hostname='upstream.test', port=0,
                 inject=None, inject_data_at=1, hold_data=False, lmtp=False,
                 on_bdat=None, bdat_early=None, rcvbuf=None):
        self.lmtp = lmtp
        self.on_bdat, self.bdat_early, self.rcvbuf = on_bdat, bdat_early, rcvbuf
        self.ehlo_caps = list(DEFAULT_CAPS if ehlo_caps is None else ehlo_caps)
        self.banner = banner
        self.on_mail, self.on_rcpt, self.on_data, self.on_dot = on_mail, on_rcpt, on_data, on_dot
        self.on_helo, self.on_xclient = on_helo, on_xclient
        self.on_rset, self.on_noop, self.on_quit = on_rset, on_noop, on_quit
        self.on_starttls = on_starttls
        self.inject = dict(inject or {})
        self.inject_data_at = inject_data_at
        self.hold_data = hold_data
        self.close_on_421 = True
        self.line_max = 1000        # text line limit with CRLF (limits.line_length)
        self._release = threading.Event()
        self.reset_in_data = reset_in_data
        self.silent_at = silent_at
        self.garbage_at = garbage_at
        self.garbage = garbage
        self.hostname = hostname
        self.lock = threading.Condition()
        self.conns = []
        self.messages = []
        self.violations = []        # (conn idx, description, bytes)
        self.errors = []            # (conn idx, description)
        self._stopping = False
        self.lsock = None
        self.port = port or free_port()
        self._seq = 0
        register_cleanup(self.stop)
        if not refuse:
            self.listen()

    # -- lifecycle
    def listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            # before listen(): accepted sockets inherit it, no autotuning
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.bind(('127.0.0.1', self.port))
        s.listen(64)
        s.settimeout(0.2)
        self.lsock = s
        self._stopping = False
        t = threading.Thread(target=self._accept_loop, args=(s,), daemon=True)
        self._accept_thread = t
        t.start()

    def unlisten(self):
        """Stop accepting (existing connections stay); the port refuses
        from the moment this returns."""
        s, self.lsock = self.lsock, None
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)     # wakes accept(), drops the backlog
            except OSError:
                pass
            t = getattr(self, '_accept_thread', None)
            if t and t is not threading.current_thread():
                t.join(2)
            s.close()

    def stop(self):
        self._stopping = True
        self.unlisten()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.close()
            except OSError:
                pass

    def drop_all(self):
        """Close every open connection now (the proxy sees EOF)."""
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            if not c.closed:
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    # -- accessors
    @property
    def raw(self):
        with self.lock:
            return [bytes(c.raw) for c in self.conns]

    @property
    def transactions(self):
        """DATA completions seen, whatever the reply to the final dot."""
        with self.lock:
            return len(self.messages)

    @property
    def accepted(self):
        """DATA completions the upstream answered with 250."""
        with self.lock:
            return sum(1 for m in self.messages if m.reply and m.reply.startswith('250'))

    def release(self):
        """Let a connection held by hold_data read on."""
        self._release.set()

    def all_bytes(self):
        return b''.join(self.raw)

    def commands(self):
        with self.lock:
            return [cmd for c in self.conns for cmd in c.commands]

    def wait_messages(self, n, timeout=10):
        end = time.time() + timeout
        with self.lock:
            while len(self.messages) < n:
                t = end - time.time()
                if t <= 0:
                    break
                self.lock.wait(t)
            return len(self.messages) >= n

    def wait_connections(self, n, timeout=10):
        return wait_for(lambda: len(self.conns) >= n, timeout)

    def reset_counts(self):
        with self.lock:
            self.messages = []

    # -- server
    def _accept_loop(self, lsock):
        while not self._stopping and self.lsock is lsock:
            try:
                s, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                c = _Conn(len(self.conns), s)
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _pick(self, spec, arg, conn, default):
        if spec is None:
            return default
        if isinstance(spec, list):
            if not spec:
                return default
            v = spec.pop(0) if len(spec) > 1 else spec[0]
            return self._pick(v, arg, conn, default)
        if callable(spec):
            v = spec(arg, conn)
            return default if v is None else v
        return spec

    def _send(self, c, data):
        send_all(c.sock, data)

    def _injection(self, key, c):
        v = self.inject.get(key)
        if isinstance(v, list):
            v = (v.pop(0) if len(v) > 1 else v[0]) if v else None
        if callable(v):
            v = v(c)
        if v is None:
            return b''
        return v.encode() if isinstance(v, str) else v

    def _will_send(self, phase):
        """The reply for phase really goes out (no fault scripted)."""
        return self.silent_at != phase and self.garbage_at != phase

    def _respond(self, c, st, phase, reply):
        """Send reply for phase unless a fault is scripted for it, then
        what inject holds for the phase, in the same write.  A 421 or 221
        reply closes the connection afterwards, as a real MTA does."""
        if self.silent_at == phase:
            st['silent'] = True
            return False
        extra = self._injection(phase, c)
        if self.garbage_at == phase:
            self._send(c, self.garbage + extra)
            return False
        if isinstance(reply, str):
            reply = reply.encode()
        if not reply.endswith(b'\r\n'):
            reply += b'\r\n'
        self._send(c, reply + extra)
        last = reply[:-2].rsplit(b'\r\n', 1)[-1]
        if last[:3] == b'221' or (last[:3] == b'421' and self.close_on_421):
            st['close'] = True
        return True

    def _ehlo_reply(self):
        lines = [self.hostname] + list(self.ehlo_caps)
        out = b''
        for i, l in enumerate(lines):
            sep = ' ' if i == len(lines) - 1 else '-'
            out += ('250%s%s\r\n' % (sep, l)).encode()
        return out

    def _violation(self, c, what, data):
        with self.lock:
            self.violations.append((c.idx, what, bytes(data[:200])))

    def _error(self, c, what):
        with self.lock:
            self.errors.append((c.idx, what))

    def _serve(self, c):
        s = c.sock
        s.settimeout(0.2)
        st = {'silent': False, 'data': False, 'mail': None, 'rcpts': [], 'need_ehlo': False,
              'greeted': False, 'dbytes': 0, 'dbuf': bytearray(), 'draw': bytearray(), 'xf_tx': [],
              'close': False, 'held': False}
        early = self._injection('connect', c)
        if early:
            self._send(c, early)
        self._respond(c, st, 'greeting', self.banner)
        if st['close']:
            self._close(c)
            return
        buf = bytearray()
        try:
            while not self._stopping:
                try:
                    d = s.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not d:
                    break
                with self.lock:
                    c.raw += d
                buf += d
                while True:
                    if st.get('bdat_left') is not None:
                        r = self._bdat_octets(c, st, buf)
                        if r is None:
                            break               # the chunk needs more
                        if not r or st['close']:
                            return
                        continue
                    i = buf.find(b'\n')
                    if i < 0:
                        if len(buf) > 1 << 20:
                            self._violation(c, 'over 1 MiB without LF', buf)
                            buf.clear()
                        break
                    line = bytes(buf[:i + 1])
                    del buf[:i + 1]
                    if not self._line(c, st, line) or st['close']:
                        return
                    if st['held']:
                        # hold_data: read nothing more until release()
                        st['held'] = False
                        self._release.wait(60)
        finally:
            self._close(c)

    def _close(self, c):
        c.closed = True
        try:
            c.sock.close()
        except OSError:
            pass
        with self.lock:
            self.lock.notify_all()

    def _line(self, c, st, line):
        """Handle one LF-terminated line. Returns False to close."""
        with self.lock:
            c.lines.append(line)
        strict = line.endswith(b'\r\n') and b'\r' not in line[:-2]
        if not strict:
            self._violation(c, 'bare CR or LF (line not ending in CRLF only)', line)
        if b'\x00' in line:
            self._violation(c, 'NUL', line)
        body = line[:-2] if line.endswith(b'\r\n') else line[:-1]
        if st['data']:
            return self._data_line(c, st, line, body, strict)
        if len(line) > 512:
            self._violation(c, 'command line over 512 octets', line)
        cmd = body.decode('latin-1')
        with self.lock:
            c.commands.append(cmd)
        if st['silent']:
            return True
        verb = cmd.split(' ', 1)[0].upper()
        arg = cmd[len(verb) + 1:] if ' ' in cmd else ''
        if self.lmtp and verb in ('EHLO', 'HELO'):
            self._error(c, '%s to an LMTP server' % verb)
            self._respond(c, st, verb, '500 5.5.1 Error: this is LMTP, say LHLO')
            return True
        if self.lmtp and verb == 'LHLO':
            verb = 'EHLO'
        elif verb == 'LHLO':
            self._error(c, 'LHLO to an SMTP server')
            self._send(c, b'502 5.5.2 Error: command not recognized\r\n')
            return True
        if verb in ('EHLO', 'HELO'):
            c.helo = arg
            st['greeted'] = True
            st['need_ehlo'] = False
            st['mail'], st['rcpts'] = None, []
            if verb == 'EHLO':
                self._respond(c, st, 'EHLO', self._pick(self.on_helo, cmd, c, self._ehlo_reply()))
            else:
                self._respond(c, st, 'HELO', self._pick(self.on_helo, cmd, c,
                                                        '250 %s' % self.hostname))
        elif verb == 'XCLIENT':
            with self.lock:
                c.xclient.append(cmd)
            if not any(k.upper().startswith('XCLIENT') for k in self.ehlo_caps):
                self._error(c, 'XCLIENT not advertised')
                self._respond(c, st, 'XCLIENT', '502 5.5.1 Error: command not implemented')
            elif st['mail']:
                self._error(c, 'XCLIENT inside a transaction')
                self._respond(c, st, 'XCLIENT', '503 5.5.1 Error: MAIL transaction in progress')
            else:
                st['need_ehlo'] = True
                st['greeted'] = False
                self._respond(c, st, 'XCLIENT', self._pick(self.on_xclient, cmd, c, self.banner))
        elif verb == 'XFORWARD':
            with self.lock:
                c.xforward.append(cmd)
            st['xf_tx'].append(cmd)
            if st['mail']:
                self._error(c, 'XFORWARD inside a transaction')
            if not any(k.upper().startswith('XFORWARD') for k in self.ehlo_caps):
                self._error(c, 'XFORWARD not advertised')
                self._respond(c, st, 'XFORWARD', '502 5.5.1 Error: command not implemented')
            else:
                self._respond(c, st, 'XFORWARD', '250 2.0.0 Ok')
        elif verb == 'MAIL':
            if not st['greeted']:
                self._error(c, 'MAIL before EHLO' + (' (after XCLIENT)' if st['need_ehlo'] else ''))
            if st['mail']:
                self._error(c, 'nested MAIL')
                self._respond(c, st, 'MAIL', '503 5.5.1 Error: nested MAIL command')
                return True
            r = self._pick(self.on_mail, cmd, c, '250 2.1.0 Ok')
            if r.startswith('250'):
                st['mail'], st['rcpts'] = cmd, []
            self._respond(c, st, 'MAIL', r)
        elif verb == 'RCPT':
            if not st['mail']:
                self._error(c, 'RCPT without MAIL')
                self._respond(c, st, 'RCPT', '503 5.5.1 Error: need MAIL command')
                return True
            r = self._pick(self.on_rcpt, cmd, c, '250 2.1.5 Ok')
            if r.startswith('250'):
                st['rcpts'].append(cmd)
            self._respond(c, st, 'RCPT', r)
        elif verb == 'DATA':
            if not st['mail']:
                self._error(c, 'DATA without MAIL')
                self._respond(c, st, 'DATA', '503 5.5.1 Error: need RCPT command')
                return True
            if not st['rcpts']:
                self._error(c, 'DATA without accepted RCPT')
                self._respond(c, st, 'DATA', '554 5.5.1 Error: no valid recipients')
                return True
            r = self._pick(self.on_data, cmd, c, '354 End data with <CR><LF>.<CR><LF>')
            if r.startswith('354'):
                st['data'] = True
                st['dbytes'] = 0
                st['dbuf'] = bytearray()
                st['draw'] = bytearray()
                st['injected'] = False
            # else: like Postfix, the transaction stays open until RSET
            self._respond(c, st, 'DATA', r)
        elif verb == 'BDAT':
            return self._bdat_cmd(c, st, cmd, arg)
        elif verb == 'RSET':
            st['bdat'] = None
            r = self._pick(self.on_rset, cmd, c, '250 2.0.0 Ok')
            if r.startswith('250'):
                st['mail'], st['rcpts'] = None, []
                st['xf_tx'] = []
            self._respond(c, st, 'RSET', r)
        elif verb == 'STARTTLS':
            if not any(k.upper() == 'STARTTLS' for k in self.ehlo_caps):
                self._error(c, 'STARTTLS not advertised')
            self._respond(c, st, 'STARTTLS', self._pick(self.on_starttls, cmd, c,
                                                        '454 4.7.0 TLS not available'))
        elif verb == 'NOOP':
            self._respond(c, st, 'NOOP', self._pick(self.on_noop, cmd, c, '250 2.0.0 Ok'))
        elif verb == 'QUIT':
            self._respond(c, st, 'QUIT', self._pick(self.on_quit, cmd, c, '221 2.0.0 Bye'))
            if not st['silent']:
                return False
        else:
            self._error(c, 'unknown command %r' % cmd[:60])
            self._send(c, b'502 5.5.2 Error: command not recognized\r\n')
        return True

    def _bdat_cmd(self, c, st, cmd, arg):
        """BDAT n [LAST] (RFC 3030 2): the chunk's octets follow."""
        m = re.match(r'^(\d{1,18})( LAST)?$', arg, re.I)
        if not any(k.upper() == 'CHUNKING' for k in self.ehlo_caps):
            self._error(c, 'BDAT without CHUNKING advertised')
        if not m:
            self._error(c, 'bad BDAT %r' % cmd[:60])
            self._send(c, b'501 5.5.4 Syntax: BDAT count [LAST]\r\n')
            return True
        if st.get('bdat') is None:
            # the first chunk of a message: it is checked after its octets
            st['bdat'] = bytearray()
            st['dbytes'] = 0
            st['bdat_ok'] = bool(st['mail'] and st['rcpts'])
        st['bdat_left'] = int(m.group(1))
        st['bdat_last'] = bool(m.group(2))
        if self.bdat_early is not None:
            self._send(c, self.bdat_early.encode() + b'\r\n')
            st['held'] = self.hold_data
        return True

    def _bdat_octets(self, c, st, buf):
        """Take chunk octets from buf: None while more are owed, else the
        chunk is complete and answered (False: close)."""
        take = min(len(buf), st['bdat_left'])
        if self.reset_in_data is not None:
            take = min(take, max(self.reset_in_data - st['dbytes'], 0))
        st['bdat'] += buf[:take]
        del buf[:take]
        st['bdat_left'] -= take
        st['dbytes'] += take
        if self.reset_in_data is not None and st['dbytes'] >= self.reset_in_data:
            self._reset(c)
            return False
        if st['bdat_left'] > 0:
            return None
        st['bdat_left'] = None
        if not st['bdat_ok']:
            st['bdat'] = None
            if not st['mail']:
                self._error(c, 'BDAT without MAIL')
            else:
                self._error(c, 'BDAT without accepted RCPT')
            self._respond(c, st, 'BDAT', '503 5.5.1 Error: need RCPT command')
            return True
        if not st['bdat_last']:
            self._respond(c, st, 'BDAT', '250 2.0.0 %d octets received' % len(st['bdat']))
            return True
        data, st['bdat'] = bytes(st['bdat']), None
        # the message's final reply: on_dot's unless on_bdat says otherwise
        hook = self.on_bdat if self.on_bdat is not None else self.on_dot
        r = self._complete(c, st, data, data, 'BDAT', hook, 'BDAT',
                           lambda m, seq: '250 2.0.0 Ok: queued as CAPT%04d' % seq)
        self._respond(c, st, 'BDAT', r)
        return True

    def _complete(self, c, st, data, raw, verb, hook, phase, dflt):
        """A message is complete (final dot, BDAT LAST): its Message, the
        reply hook's answer (dflt(message, seq) by default), published
        with that reply set; returns the reply."""
        with self.lock:
            self._seq += 1
            seq = self._seq
        m = Message(c.idx, c.helo, st['mail'], st['rcpts'], data, raw, c.xclient, c.xforward)
        m.verb = verb
        st['mail'], st['rcpts'] = None, []
        r = self._pick(hook, m, c, dflt(m, seq))
        m.xforward_tx = list(st['xf_tx'])
        st['xf_tx'] = []
        # the reply the proxy really gets (None: silent or garbage),
        # set before waiters can see the message
        m.reply = r if self._will_send(phase) else None
        with self.lock:
            self.messages.append(m)
            self.lock.notify_all()
        return r

    def _reset(self, c):
        """Close with RST (reset_in_data)."""
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              b'\x01\x00\x00\x00\x00\x00\x00\x00')
            c.sock.close()
        except OSError:
            pass

    def _data_line(self, c, st, line, body, strict):
        # RFC 5321 4.5.3.1.6: 1000 octets including CRLF, not counting
        # the leading dot duplicated for transparency
        if len(line) - (1 if line.startswith(b'..') else 0) > self.line_max:
            self._violation(c, 'text line over %d octets' % self.line_max, line)
        if strict and body == b'.':
            st['data'] = False

            def dflt(m, seq):
                if self.lmtp:
                    return '\r\n'.join('250 2.0.0 <%s> Ok: queued as CAPT%04d' % (rcpt, seq)
                                         for rcpt in m.rcpts)
                return '250 2.0.0 Ok: queued as CAPT%04d' % seq
            r = self._complete(c, st, bytes(st['dbuf']), bytes(st['draw']), 'DATA',
                               self.on_dot, 'DOT', dflt)
            if self.lmtp and r == '':
                return True             # no reply at all: the script decides
            self._respond(c, st, 'DOT', r)
            return True
        st['draw'] += line
        un = line[1:] if line.startswith(b'.') else line
        st['dbuf'] += un
        st['dbytes'] += len(line)
        if not st.get('injected') and st['dbytes'] >= self.inject_data_at:
            st['injected'] = True
            extra = self._injection('data', c)
            if extra:
                self._send(c, extra)
                st['held'] = self.hold_data
        if self.reset_in_data is not None and st['dbytes'] >= self.reset_in_data:
            self._reset(c)
            return False
        return True


class Gate:
    """A reply hook for Upstream (on_mail=, on_dot=, ...) that holds its
    answer until the test opens it: a slow upstream stepped by events, not
    sleeps.  .seen is set when the command arrives; first (bytes) goes out
    at once, e.g. half a reply; then, once .open() is called (or after
    timeout seconds), reply is the answer (None: the normal one)."""

    def __init__(self, reply=None, first=None, timeout=30):
        self.reply, self.first, self.timeout = reply, first, timeout
        self.seen = threading.Event()
        self._open = threading.Event()

    def __call__(self, arg, conn):
        self.seen.set()
        if self.first:
            conn.sock.sendall(self.first)
        self._open.wait(self.timeout)
        return self.reply

    def open(self):
        self._open.set()


def check_stream(up, ntrans, name='upstream stream'):
    """The differential invariant: the upstream stream holds only CRLF lines
    (no bare CR/LF, no NUL, no over-long lines), no out-of-sequence command,
    and exactly ntrans DATA transactions."""
    with up.lock:
        viol = list(up.violations)
        errs = list(up.errors)
        n = len(up.messages)
    r1 = ok(not viol, name + ': strict CRLF framing, no bare CR/LF/NUL, no long line')
    if not r1:
        for v in viol[:10]:
            diag('  conn %d: %s: %r' % v)
    r2 = ok(not errs, name + ': no out-of-sequence commands')
    if not r2:
        for e in errs[:10]:
            diag('  conn %d: %s' % e)
    r3 = is_(n, ntrans, name + ': exactly %d DATA transaction(s)' % ntrans)
    return r1 and r2 and r3
