#!/usr/bin/python3
# Every program, Python module, Perl module and data file that the tests,
# `make run` and `make bench` use is present and comes from a Debian package
# that `make deps` installs: one named in the Makefile's DEBS, one of their
# dependencies (Depends/Pre-Depends, recursively, first alternative), or an
# Essential package.  A machine that happens to have a package from earlier
# work (libnet-ssleay-perl for swaks --tls, once) passes the suite while a
# fresh one fails; this test fails on both, naming the package to add.
#
# The inventory is found, not only declared: the Python sources under t/ are
# parsed for imports and for the programs they start (subprocess, Popen,
# start_process), and each one found must be in the tables below, so a new
# tool or module cannot slip in unlisted.  Each entry is then resolved to a
# file (which, importlib, perl %INC, ldd) and that file to its package with
# `dpkg -S`.  Run with -v to see the whole listing.
import ast
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import diag, failed_count, ok, run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
VERBOSE = '-v' in sys.argv[1:] or os.environ.get('TEST_VERBOSE')

# Programs: name -> (the package expected to ship it, who runs it).
PROGRAMS = {
    '/usr/bin/python3': ('python3', 'every t/smtp test, t/lib, dkim_tool.py from test_dkim'),
    'sh': ('dash', 't/unit/*.t'),
    'bash': ('bash', 't/bench/run'),
    'perl': ('perl', 'swaks, prove'),
    'prove': ('perl', 'make test'),
    'make': ('make', 'make test, t/bench/run'),
    'cc': ('gcc', 'make, t/bench/run (tlsload)'),
    'pkg-config': ('pkgconf', 'Makefile'),
    'dpkg-query': ('dpkg', 'make deps, this test'),
    'dpkg': ('dpkg', 'this test'),
    'ldd': ('libc-bin', 'this test'),
    'swaks': ('swaks', '01-relay-basic.t, 40-tls.t, t/lib/selftest.py'),
    'openssl': ('openssl', 't/lib/fmx_tls.py, t/lib/dmarc_util.py, t/bench/run'),
    'postfix': ('postfix', 't/lib/postfix.py'),
    'smtp-sink': ('postfix', 't/bench/run'),
    'smtp-source': ('postfix', 't/bench/run'),
    'postqueue': ('postfix', '85-postfix-milter.t (the hold queue)'),
    'postcat': ('postfix', '97-pool-postfix.t (the XFORWARD attributes of held queue files)'),
    'opendkim': ('opendkim', 't/lib/dkim_tool.py'),
    'opendkim-testmsg': ('opendkim-tools', 't/lib/dkim_tool.py'),
    'valgrind': ('valgrind', '19-valgrind.t'),
    '/usr/sbin/dovecot': ('dovecot-core', '69-lmtp-dovecot.t (LMTP upstream)'),
    # the real milters of t/lib/milters.py (80-83-milter-*.t)
    '/usr/sbin/opendkim': ('opendkim', 't/lib/milters.py (80, 81)'),
    '/usr/sbin/opendkim-genkey': ('opendkim-tools', 't/lib/milters.py (80, 81)'),
    '/usr/sbin/clamd': ('clamav-daemon', 't/lib/milters.py (81)'),
    '/usr/sbin/clamav-milter': ('clamav-milter', 't/lib/milters.py (81)'),
    '/usr/sbin/opendmarc': ('opendmarc', 't/lib/milters.py (82)'),
    '/usr/bin/rspamd': ('rspamd', 't/lib/milters.py (83)'),
    '/usr/bin/redis-server': ('redis-server', 't/lib/fmx_redis.py (87-90: greylist, ratelimit)'),
    '/usr/bin/redis-cli': ('redis-tools', 't/lib/fmx_redis.py (keys, TTLs)'),
    '/usr/sbin/haproxy': ('haproxy', '90-farm.t (two instances behind PROXY v2)'),
    'promtool': ('prometheus', '86-metrics.t (promtool check metrics), t/bench/run'),
    # t/bench/run's shell tools
    'awk': ('mawk', 't/bench/run'),
    'sed': ('sed', 't/bench/run'),
    'grep': ('grep', 't/bench/run'),
    'seq': ('coreutils', 't/bench/run'),
    'sort': ('coreutils', 't/bench/run'),
    'timeout': ('coreutils', 't/bench/run'),
    'mktemp': ('coreutils', 't/bench/run'),
    'nproc': ('coreutils', 't/bench/run'),
    'strace': ('strace', 't/bench/run (syscalls per message)'),
    'getconf': ('libc-bin', 't/bench/run (clock ticks of /proc/PID/stat)'),
    # t/meta/install.t: the man pages, the systemd unit, -t as another user
    'mandoc': ('mandoc', 't/meta/install.t (mandoc -T lint)'),
    'man': ('man-db', 't/meta/install.t (man --warnings)'),
    'systemd-analyze': ('systemd', 't/meta/install.t (systemd-analyze verify)'),
    'setpriv': ('util-linux', 't/meta/install.t (frontmx -t as an unprivileged user)'),
}

# Third-party Python modules: name -> package (the standard library is
# checked too, through whatever package ships the file).
PY_PACKAGES = {
    'dkim': 'python3-dkim',
    'dnslib': 'python3-dnslib',
    'yaml': 'python3-yaml',
}

# Perl modules: name -> (package, who needs it).
PERL_MODULES = {
    'Net::SSLeay': ('libnet-ssleay-perl', 'swaks --tls/--tlsc (40-tls.t)'),
    'TAP::Harness': ('perl', 'prove'),
}

# swaks features the tests use, as `swaks --support` names them.
SWAKS_FEATURES = {
    'TLS': '40-tls.t (--tls, --tlsc)',
    'Socket Transport': 'every swaks run',
}

# Data files: path -> (package, who reads it).
FILES = {
    '/usr/share/publicsuffix/public_suffix_list.dat': ('publicsuffix', 'filters/dmarc.c (make run, 33-dmarc.t)'),
    '/usr/share/doc/python3-spf/rfc7208-tests.yml.gz': ('python3-spf', '30-spf-suite.t'),
    '/usr/lib/x86_64-linux-gnu/libnss_wrapper.so': ('libnss-wrapper', 't/lib/exim.py (LD_PRELOAD)'),
    '/usr/lib/dovecot/lmtp': ('dovecot-lmtpd', '69-lmtp-dovecot.t (LMTP upstream)'),
    '/usr/share/postfix/master.cf.dist': ('postfix', 't/lib/postfix.py (its copy, /etc/postfix/master.cf)'),
    '/etc/postfix/postfix-files': ('postfix', 't/lib/postfix.py (postfix check)'),
    '/etc/rspamd/rspamd.conf': ('rspamd', 't/lib/milters.py (its packaged rules, 83)'),
}

def note(s):
    if VERBOSE:
        diag(s)


# ---------------------------------------------------------------- packages

def debs():
    """DEBS as the Makefile has it."""
    p = subprocess.run(['make', '-s', '--no-print-directory', '-C', ROOT, 'print-DEBS'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    return p.stdout.decode().split()


def installed():
    """{package: (essential, provides, [dependency groups])} for installed packages."""
    fmt = '${Package}\t${Essential}\t${Provides}\t${Pre-Depends}\t${Depends}\t${db:Status-Abbrev}\n'
    out = subprocess.run(['dpkg-query', '-W', '-f=' + fmt], stdout=subprocess.PIPE,
                         timeout=60).stdout.decode()
    db = {}
    for line in out.splitlines():
        f = line.split('\t')
        if len(f) < 6 or not f[5].startswith('ii'):
            continue
        deps = [g for g in (f[3] + ',' + f[4]).split(',') if g.strip()]
        db[f[0]] = (f[1] == 'yes', names(f[2]), deps)
    return db


def names(field):
    return [re.sub(r'[\s(:].*', '', a.strip()) for a in field.split(',') if a.strip()]


def closure(roots, db):
    """Packages `apt-get install --no-install-recommends roots` brings in: for
    each dependency group, the first alternative (a virtual one: its installed
    providers).  Returns {package: the chain that pulled it in}."""
    providers = {}
    for p, (_, prov, _) in db.items():
        for v in prov:
            providers.setdefault(v, []).append(p)
    why = {}
    todo = [(r, r) for r in roots]
    while todo:
        p, chain = todo.pop()
        if p in why:
            continue
        why[p] = chain
        if p not in db:
            continue
        for group in db[p][2]:
            first = re.sub(r'[\s(:].*', '', group.split('|')[0].strip())
            for q in ([first] if first in db else providers.get(first, [first])):
                todo.append((q, chain + ' > ' + q))
    return why


def candidates(path):
    """Where dpkg may know path from: path itself and its /usr-merged twin,
    then each symlink hop (alternatives belong to no package), then the
    real path (a symlinked directory: /usr/share/perl/5.36)."""
    out = []
    seen = set()
    while path and path not in seen:
        seen.add(path)
        out.append(path)
        for a, b in (('/usr/bin/', '/bin/'), ('/usr/sbin/', '/sbin/'), ('/usr/lib/', '/lib/')):
            if path.startswith(a):
                out.append(b + path[len(a):])
            elif path.startswith(b):
                out.append(a + path[len(b):])
        if not os.path.islink(path):
            break
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    out.append(os.path.realpath(path))
    return out


def owners(paths):
    """{path: package} from one `dpkg -S` for all of paths (one call reads
    the file lists once; a call per file takes a minute)."""
    found = {}
    paths = sorted(set(paths))
    if not paths:
        return found
    p = subprocess.run(['dpkg', '-S'] + paths, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=120)
    want = set(paths)
    for line in p.stdout.decode().splitlines():
        if line.startswith('diversion by'):
            continue
        pkgs, _, f = line.partition(': ')
        if f in want:
            found[f] = pkgs.split(',')[0].split(':')[0]
    return found


# ---------------------------------------------------------------- scanning

def python_sources():
    out = []
    for f in sorted(glob.glob(os.path.join(ROOT, 't', '**', '*'), recursive=True)):
        if not os.path.isfile(f) or os.path.relpath(f, ROOT).startswith('t/fuzz/'):
            continue
        if f.endswith('.py'):
            out.append(f)
        elif f.endswith('.t') or '/t/bench/' in f:
            with open(f, 'rb') as fh:
                if fh.readline().startswith(b'#!/usr/bin/python3'):
                    out.append(f)
    return out


def scan(files):
    """({module: [files]}, {program: [files]}) imported / started by files."""
    local = set(os.path.basename(f)[:-3] for f in files if f.endswith('.py'))
    mods, progs = {}, {}
    for f in files:
        rel = os.path.relpath(f, ROOT)
        with open(f, 'rb') as fh:
            tree = ast.parse(fh.read(), f)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [a.name.split('.')[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found = [node.module.split('.')[0]]
            else:
                found = []
            for m in found:
                if m not in local:
                    mods.setdefault(m, []).append(rel)
            if isinstance(node, ast.Call) and node.args:
                fn = node.func
                if isinstance(fn, ast.Attribute):
                    # subprocess.run(...), fmx.start_process(...); not ex.run(...)
                    owner_ = getattr(fn.value, 'id', '')
                    fname = fn.attr if owner_ in ('subprocess', 'fmx') else ''
                else:
                    fname = getattr(fn, 'id', '')
                a0 = node.args[0]
                if (fname in ('run', 'Popen', 'call', 'check_call', 'check_output', 'start_process')
                        and isinstance(a0, ast.List) and a0.elts
                        and isinstance(a0.elts[0], ast.Constant) and isinstance(a0.elts[0].value, str)):
                    progs.setdefault(a0.elts[0].value, []).append(rel)
    return mods, progs


def which(prog):
    return shutil.which(prog, path=os.environ.get('PATH', '') + ':/usr/sbin:/sbin:/usr/bin:/bin')


# ---------------------------------------------------------------- checks

class Inventory:
    """Entries (kind, name, file, expected package, users): resolved to
    packages in one batch, then checked against what make deps installs."""

    def __init__(self):
        self.items = []

    def add(self, kind, name, path, want, users):
        self.items.append((kind, name, path, want, users))

    def check(self, allowed):
        own = owners(c for it in self.items if it[2] for c in candidates(it[2]))
        listing = []
        for kind, name, path, want, users in self.items:
            label = '%s %s (%s)' % (kind, name, users)
            if path is None:
                ok(False, '%s: present' % label)
                diag('  missing: add %s to DEBS in the Makefile, then make deps' % want)
                continue
            pkg = as_path = None
            for c in candidates(path):
                if c in own:
                    pkg, as_path = own[c], c
                    break
            listing.append('%-8s %-22s %-58s %s' % (kind, name, as_path or path, pkg or '(no package)'))
            if pkg is None:
                ok(False, '%s: %s belongs to a Debian package' % (label, path))
                diag('  dpkg -S knows no package for %s; expected %s' % (path, want))
                continue
            if not ok(pkg in allowed, '%s: %s comes from %s, which make deps installs'
                      % (label, as_path, pkg)):
                diag('  %s is neither in DEBS nor pulled in by it: add %s to DEBS in the Makefile'
                     % (pkg, pkg))
            elif VERBOSE:
                diag('  %s' % allowed[pkg])
        return listing


def main():
    if shutil.which('dpkg-query') is None:
        ok(False, 'dpkg-query found: the tests need a Debian system')
        return
    roots = debs()
    ok(len(roots) > 10 and 'swaks' in roots, 'DEBS read from the Makefile (%d packages)' % len(roots))
    db = installed()
    essential = [p for p, (e, _, _) in db.items() if e]
    allowed = closure(roots + essential, db)
    inv = Inventory()

    files = python_sources()
    mods, progs = scan(files)
    ok(len(files) > 20 and 'fmx' not in mods and 'socket' in mods,
       'scanned %d Python sources under t/ (%d modules, %d programs)' % (len(files), len(mods), len(progs)))

    # what the sources start must be in the inventory
    for prog in sorted(progs):
        ok(prog in PROGRAMS, 'program %s (started by %s) is in the inventory'
           % (prog, ', '.join(sorted(set(progs[prog])))))
    for name, (want, users) in sorted(PROGRAMS.items()):
        inv.add('program', name, which(name), want, users)

    for m in sorted(mods):
        users = ', '.join(sorted(set(os.path.basename(f) for f in mods[m])))
        try:
            spec = importlib.util.find_spec(m)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin in ('built-in', 'frozen'):
            continue        # inside the interpreter: checked as program python3
        origin = spec.origin if spec is not None else None
        if spec is not None and origin is None and spec.submodule_search_locations:
            origin = list(spec.submodule_search_locations)[0]
        inv.add('python', m, origin, PY_PACKAGES.get(m, 'python3-' + m), users)

    for m, (want, users) in sorted(PERL_MODULES.items()):
        key = m.replace('::', '/') + '.pm'
        p = subprocess.run(['perl', '-M' + m, '-e', 'print $INC{"%s"}' % key],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
        inv.add('perl', m, p.stdout.decode() if p.returncode == 0 and p.stdout else None, want, users)

    for path, (want, users) in sorted(FILES.items()):
        inv.add('file', os.path.basename(path), path if os.path.exists(path) else None, want, users)

    # the shared libraries of what `make run` starts, and of the Exim that
    # `make exim` unpacks without dpkg (so without its dependencies)
    for exe, users in (('frontmx', 'frontmx (make run)'),
                       (os.path.join('build', 'exim', 'root', 'usr', 'sbin', 'exim4'), 'Exim of t/lib/exim.py')):
        path = os.path.join(ROOT, exe)
        if not os.access(path, os.X_OK):
            continue
        out = subprocess.run(['ldd', path], stdout=subprocess.PIPE, timeout=60).stdout.decode()
        for lib, lpath in re.findall(r'(?m)^\s*(\S+) => (/\S+)', out):
            inv.add('library', lib, os.path.realpath(lpath), '(the package of %s)' % lib, users)
        missing = re.findall(r'(?m)^\s*(\S+) => not found', out)
        ok(not missing, 'ldd %s: every shared library found (%s)' % (exe, ', '.join(missing)))

    listing = inv.check(allowed)

    if which('swaks'):
        sup = subprocess.run(['swaks', '--support'], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=60).stdout.decode(errors='replace')
        for feat, users in sorted(SWAKS_FEATURES.items()):
            m = re.search(r'(?m)^\*\*\* %s not available: (.*)$' % re.escape(feat), sup)
            if not ok(re.search(r'(?m)^=== %s supported' % re.escape(feat), sup),
                      'swaks --support: %s supported (%s)' % (feat, users)):
                diag('  swaks says: %s' % (m.group(1) if m else sup[-500:]))

    if VERBOSE or failed_count():
        diag('inventory (kind, name, file, dpkg -S package):')
        for line in listing:
            diag('  ' + line)


run(main, timeout=600)
