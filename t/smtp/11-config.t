#!/usr/bin/python3
# frontmx -t -c FILE: exit 0 for a good file; non-zero and "FILE:LINE:" on
# stderr for an unknown key, a wrong type, a bad value or a syntax error.
import os
import re
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402

SAN = ('AddressSanitizer', 'LeakSanitizer', 'runtime error:')


def base_lines():
    spool = tmpdir('fmx-spool-')
    text = render_conf(base_conf(free_port(), '127.0.0.1:%d' % free_port(), spool))
    return text.splitlines()


def edit(lines, find, new=None, insert_after=False):
    """Replace (or insert after) the first line containing find; returns
    (text, 1-based line number of the edited/inserted line)."""
    out = list(lines)
    for i, l in enumerate(out):
        if find in l:
            if insert_after:
                out.insert(i + 1, new)
                return '\n'.join(out) + '\n', i + 2
            out[i] = new
            return '\n'.join(out) + '\n', i + 1
    raise KeyError(find)


def no_sanitizer(out, name):
    ok(not any(s in out for s in SAN), name + ': no sanitizer report')


def bad(text, line, name, lines_ok=None):
    rc, out, path = run_frontmx_t(text)
    ok(rc not in (0, None), name + ': non-zero exit (%s)' % rc)
    ok(rc is None or rc < 128, name + ': exits, no crash (%s)' % rc)
    want = lines_ok or [line]
    pat = r'%s:(%s):' % (re.escape(path), '|'.join(str(x) for x in want))
    like(out, pat, name + ': "FILE:%s:" message' % '|'.join(str(x) for x in want))
    no_sanitizer(out, name)
    return out


def main():
    L = base_lines()
    good = '\n'.join(L) + '\n'

    rc, out, path = run_frontmx_t(good)
    is_(rc, 0, 'base test config: -t exits 0')
    if rc:
        diag(out)
    no_sanitizer(out, 'good config')

    text = render_conf(base_conf(free_port(), 'dir:' + tmpdir('fmx-md-'), tmpdir('fmx-spool-')))
    rc, out, _ = run_frontmx_t(text)
    is_(rc, 0, 'dir: upstream config: -t exits 0')

    # unknown keys
    t, n = edit(L, 'spool = {', 'frobnicate = 1;\nspool = {')
    bad(t, n, 'unknown top-level key')
    t, n = edit(L, 'errors = 20;', '  frobnicate = 3;', insert_after=True)
    bad(t, n, 'unknown key inside limits')
    t, n = edit(L, 'data_block = 180;', '  data_blocks = 180;')
    bad(t, n, 'misspelt key inside timeouts')

    # wrong types
    t, n = edit(L, 'workers = 2;', 'workers = "two";')
    bad(t, n, 'workers is a string')
    t, n = edit(L, 'message_size = 1048576;', '  message_size = "big";')
    bad(t, n, 'limits.message_size is a string')
    t, n = edit(L, 'domains = [', '  domains = "example.com";')
    bad(t, n, 'relay.domains is a string, not an array')
    t, n = edit(L, 'hostname = ', 'hostname = 42;')
    bad(t, n, 'hostname is an integer')
    t, n = edit(L, 'command = 300;', '  command = 3.5;')
    bad(t, n, 'timeouts.command is a float')

    # bad values
    t, n = edit(L, 'address = "127.0.0.1:', '    address = "not an address";')
    bad(t, n, 'listen address unparseable')
    t, n = edit(L, 'networks = [', '  networks = [ "300.0.0.0/8" ];')
    bad(t, n, 'relay.networks with a bad address')
    t, n = edit(L, 'networks = [', '  networks = [ "127.0.0.0/33" ];')
    bad(t, n, 'relay.networks with prefix /33')
    t, n = edit(L, 'recipients = 100;', '  recipients = -5;')
    bad(t, n, 'negative recipients')

    # syntax errors (libconfig may point at the next token's line)
    t, n = edit(L, 'command = 300;', '  command = = 300;')
    bad(t, n, 'doubled "="', lines_ok=[n, n + 1])
    t, n = edit(L, 'spool = {', 'spool = {{')
    bad(t, n, 'doubled "{"', lines_ok=[n, n + 1])
    t, n = edit(L, 'upstream_command = 10;', '@@@ nonsense @@@')
    bad(t, n, 'garbage line')
    t, n = edit(L, 'hostname = ', 'hostname = "unterminated;')
    bad(t, n, 'unterminated string', lines_ok=list(range(n, len(L) + 2)))

    # missing file
    p = os.path.join(tmpdir(), 'does-not-exist.conf')
    rc, out = fmx.run_frontmx_t_file(p)
    ok(rc not in (0, None), 'missing file: non-zero exit (%s)' % rc)
    like(out, re.escape(p), 'missing file: message names the file')

    # the daemon itself refuses to start with a bad file, with the same message
    t, n = edit(L, 'workers = 2;', 'workers = "two";')
    d = tmpdir()
    path = os.path.join(d, 'bad.conf')
    with open(path, 'w') as f:
        f.write(t)
    try:
        pr = subprocess.run([frontmx_path(), '-c', path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        ok(pr.returncode != 0, 'frontmx -c BAD exits non-zero (%s)' % pr.returncode)
        like(pr.stdout.decode(errors='replace'), r'%s:%d:' % (re.escape(path), n), 'frontmx -c BAD: FILE:LINE:')
    except subprocess.TimeoutExpired:
        ok(False, 'frontmx -c BAD exits instead of running')

    # the shipped sample configuration passes
    shipped = os.path.join(REPO, 'conf', 'frontmx.conf')
    ok(os.path.exists(shipped), 'conf/frontmx.conf exists')
    if os.path.exists(shipped):
        # (a -t that hung, on DNS or the upstream, is rc None after 60 s)
        rc, out = fmx.run_frontmx_t_file(shipped, timeout=60)
        is_(rc, 0, 'conf/frontmx.conf passes frontmx -t')
        if rc:
            diag(out)
        no_sanitizer(out, 'shipped config')


run(main)
