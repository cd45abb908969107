#!/usr/bin/python3
# Editing any source rebuilds everything built from it: for each local file
# that the compiler says a program, unit test or module reads (`cc -MM`,
# independent of the Makefile's own rules), `make -n -W FILE` must relink
# that binary.  Once, test_dkim #included filters/dkim.c without depending
# on it, and the unit test ran stale after dkim.c changed.
#
# Needs the tree built (make test builds it first); make -n changes nothing.
import concurrent.futures
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import diag, ok, run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
def make(*args):
    p = subprocess.run(['make', '--no-print-directory', '-C', ROOT] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return p.returncode, p.stdout.decode(errors='replace')


def var(name):
    return make('-s', 'print-' + name)[1].split()


def local_deps(src, flags):
    """Local files (under ROOT) the compiler reads for src."""
    p = subprocess.run(['cc', '-MM'] + flags + [src], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode(errors='replace')
    if p.returncode != 0:
        diag('cc -MM %s failed:\n%s' % (src, out[-2000:]))
        return None
    words = out.replace('\\\n', ' ').split(':', 1)[1].split()
    return set(os.path.normpath(w) for w in words if not w.startswith('/'))


def linked_sources(target, out):
    """The .c files that go into target, from `make -n -B target` output:
    the sources on the command that writes target, and those of the
    commands that write the objects it links."""
    writes = {}
    for line in out.splitlines():
        m = re.search(r' -o (\S+)', line)
        if m and not line.lstrip().startswith('echo'):
            writes[m.group(1)] = shlex.split(line)
    srcs = set()
    for a in writes.get(target, []):
        if a.endswith('.c'):
            srcs.add(a)
        elif a.endswith('.o'):
            srcs |= set(b for b in writes.get(a, []) if b.endswith('.c'))
    return srcs


def main():
    os.chdir(ROOT)
    cflags = shlex.split(' '.join(var('CFLAGS')))
    flags = [f for f in cflags if f.startswith(('-I', '-D', '-std'))] + ['-It/unit']
    units = var('UNIT_TESTS')
    modules = var('MODULES')
    ok(units and modules, 'the Makefile lists %d unit tests and %d modules' % (len(units), len(modules)))
    want = ['frontmx', 'frontmx-asan'] + units + modules
    for t in want:
        ok(os.path.exists(t), '%s is built (make all asan unit builds it)' % t)
    # what make would run to build everything from scratch: the link lines
    rc, out = make('-n', '-B', *want)
    ok(rc == 0, 'make -n -B (exit %d)' % rc)
    targets = {}
    links = dict((t, linked_sources(t, out)) for t in want)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        allsrc = sorted(set().union(*links.values()))
        cache = dict(zip(allsrc, pool.map(lambda s: local_deps(s, flags), allsrc)))
    for t in want:
        srcs = links[t]
        if not ok(srcs, '%s: sources found on its link line (%s)' % (t, ' '.join(sorted(srcs)))):
            continue
        deps = set()
        for s in srcs:
            if cache[s] is None:
                ok(False, '%s: cc -MM %s' % (t, s))
                continue
            deps |= cache[s]
        targets[t] = deps
    files = sorted(set().union(*targets.values())) if targets else []
    ok(len(files) > 20, '%d local files are read by the %d targets' % (len(files), len(targets)))
    stale = {}

    def what_if(f):
        users = [t for t in targets if f in targets[t]]
        # CFLAGS and LDLIBS emptied: no pkg-config runs, the graph is the same
        rc, out = make('-n', '-W', f, 'CFLAGS=', 'LDLIBS=', *users)
        return [(t, f) for t in users if rc != 0 or not re.search(r'-o %s(\s|$)' % re.escape(t), out)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for res in pool.map(what_if, files):
            for t, f in res:
                stale.setdefault(t, []).append(f)
    for t in sorted(targets):
        if not ok(t not in stale, '%s is rebuilt after any of its %d files changes' % (t, len(targets[t]))):
            diag('  not rebuilt after: %s' % ' '.join(stale[t]))


run(main, timeout=600)
