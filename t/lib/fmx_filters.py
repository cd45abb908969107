"""fmx_filters.py - helpers for the filter, policy and module tests
(t/smtp/2*.t), on top of fmx.py.

    import os, sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'lib'))
    from fmx import *
    from fmx_filters import *

Pieces:
  paths         plugin(name), EXAMPLE_MODULE, DATA (t/smtp/data)
  files         write_rules(text), make_maildir(dir), maildir_files(dir, sub)
  config        content_filter(rules, **kw): one `filters` entry
  SMTP          send(mx, sender, rcpts, body): one session, one transaction
  messages      header_block(data), header_fields(data), fields_named(data, name)
  command line  frontmx_t(conffile), frontmx_check(conffile, ...): run the
                binary, return (rc, stdout, stderr); no_sanitizer(text, name)
"""

import os
import re
import subprocess
import time

from fmx import (REPO, frontmx_path, tmpdir, ok, diag, SmtpClient,
                 SANITIZER_PATTERNS)

__all__ = [
    'PLUGINS', 'EXAMPLE_MODULE', 'DATA', 'plugin', 'require_modules',
    'write_rules', 'make_maildir', 'maildir_files', 'read_file',
    'content_filter', 'send', 'header_block', 'header_fields', 'fields_named',
    'frontmx_t', 'frontmx_check', 'no_sanitizer', 'Timer',
]

PLUGINS = os.path.join(REPO, 'build', 'plugins')
EXAMPLE_MODULE = os.path.join(REPO, 'filters', 'examples', 'rcpt_allow.so')
DATA = os.path.join(REPO, 't', 'smtp', 'data')


def plugin(name):
    """Absolute path of a test module built by `make modules`."""
    return os.path.join(PLUGINS, name + '.so')


def require_modules(*paths):
    """One assertion that the modules exist (built by `make modules`)."""
    missing = [p for p in paths if not os.path.exists(p)]
    r = ok(not missing, 'test modules are built (make modules)')
    if not r:
        diag('missing: %s' % ', '.join(missing))
    return r


# ---------------------------------------------------------------- files

def write_rules(text, d=None, name='content.rules'):
    """Write a content rule file into a fresh (or the given) directory."""
    d = d or tmpdir('fmx-rules-')
    path = os.path.join(d, name)
    with open(path, 'wb') as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return path


def make_maildir(d):
    for sub in ('tmp', 'new', 'cur'):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    return d


def maildir_files(d, sub='new'):
    p = os.path.join(d, sub)
    return sorted(os.path.join(p, f) for f in os.listdir(p)) if os.path.isdir(p) else []


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


# ---------------------------------------------------------------- config

def content_filter(rules, name='content', **kw):
    """A `filters` entry for the built-in content filter."""
    e = {'name': name}
    e.update(kw)
    opts = dict(e.pop('options', {}))
    opts.setdefault('rules', rules)
    e['options'] = opts
    return e


# ---------------------------------------------------------------- SMTP

def send(mx, sender, rcpts, body, helo='client.example', params=''):
    """Connect, EHLO, one transaction, QUIT.  Returns the transaction dict
    of SmtpClient.transaction() plus 'greeting' and 'ehlo'."""
    c = SmtpClient(mx.port)
    g = c.greeting()
    e = c.ehlo(helo)
    r = c.transaction(sender, rcpts, body, params=params)
    r['greeting'], r['ehlo'] = g, e
    try:
        c.quit()
    except OSError:
        pass
    c.close()
    return r


# ---------------------------------------------------------------- messages

def header_block(data):
    """The header block of a CRLF message (without the empty line)."""
    i = data.find(b'\r\n\r\n')
    if data.startswith(b'\r\n'):
        return b''
    return data if i < 0 else data[:i + 2]


def header_fields(data):
    """[(name, whole field with folds and CRLF)] of the header block."""
    out = []
    for line in re.split(rb'(?<=\r\n)', header_block(data)):
        if not line:
            continue
        if line[:1] in (b' ', b'\t') and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            name = line.split(b':', 1)[0].strip()
            out.append((name, line))
    return out


def fields_named(data, name):
    """The fields called name (any case, blanks before the colon allowed)."""
    if isinstance(name, str):
        name = name.encode()
    return [f for n, f in header_fields(data) if n.lower() == name.lower()]


# ---------------------------------------------------------------- command line

def _env():
    env = dict(os.environ)
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0:halt_on_error=1')
    env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1:halt_on_error=1')
    return env


def frontmx_t(conffile, timeout=20, cwd=None):
    """`frontmx -t -c FILE`: (rc, stdout+stderr)."""
    try:
        p = subprocess.run([frontmx_path(), '-t', '-c', conffile], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, env=_env(), cwd=cwd)
    except subprocess.TimeoutExpired as e:
        return None, (e.output or b'').decode('utf-8', 'replace')
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def frontmx_check(conffile, ip='127.0.0.1', helo=None, sender=None, rcpts=(),
                  message=None, path=None, stdin=None, extra=(), timeout=20, cwd=None):
    """`frontmx check -c FILE --ip IP ... [MESSAGE|-]`.

    message (bytes) is written to a temp file and passed by name; stdin
    (bytes) is fed with '-' as MESSAGE; path passes an existing file.
    ip=None leaves --ip out.  Returns (rc, stdout, stderr) as str."""
    argv = [frontmx_path(), 'check', '-c', conffile]
    if ip is not None:
        argv += ['--ip', ip]
    if helo is not None:
        argv += ['--helo', helo]
    if sender is not None:
        argv += ['--from', sender]
    for r in rcpts:
        argv += ['--rcpt', r]
    argv += list(extra)
    if message is not None:
        d = tmpdir('fmx-msg-')
        path = os.path.join(d, 'message.eml')
        with open(path, 'wb') as f:
            f.write(message)
    if path is not None:
        argv.append(path)
    elif stdin is not None:
        argv.append('-')
    try:
        p = subprocess.run(argv, input=stdin if stdin is not None else b'',
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=_env(), cwd=cwd)
    except subprocess.TimeoutExpired as e:
        return (None, (e.stdout or b'').decode('utf-8', 'replace'),
                (e.stderr or b'').decode('utf-8', 'replace'))
    return (p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'))


def no_sanitizer(text, name):
    bad = [p for p in SANITIZER_PATTERNS if p in (text or '')]
    r = ok(not bad, name + ': no sanitizer report')
    if not r:
        i = min(text.find(p) for p in bad)
        diag(text[max(0, i - 300):i + 4000])
    return r


class Timer:
    """with Timer() as t: ...; t.elapsed"""

    def __enter__(self):
        self.start = time.time()
        self.elapsed = None
        return self

    def __exit__(self, *exc):
        self.elapsed = time.time() - self.start
        return False
