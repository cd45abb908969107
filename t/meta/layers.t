#!/usr/bin/python3
# The dependency direction of the product code: proxy -> filters -> policy
# -> common (README "Layout").  From the #include "..." lines of every .c
# and .h under proxy/ filters/ policy/ common/ it checks:
#
#  (a) no file includes a header of a layer above its own (filters/ must
#      not reach into proxy/, policy/ not into filters/ or proxy/, common/
#      into nothing): what a lower layer needs from above is moved down;
#  (b) no two modules call each other in a loop (a.c includes b.h and b.c
#      includes a.h), nor in a longer circle, in any layer;
#  (c) every #include "..." names a file of the tree (a header we cannot
#      find is one this test cannot place in a layer);
#  (d) every entry of the allowlists below is still a loop: the piece
#      that removes a loop deletes its entry, and a stale one fails.
#
# A file's module is its path without .c/.h; "b.h" counts as module b when
# b.c exists.  Headers are looked up like cc does with this Makefile: next
# to the including file first, then -Iproxy -Ifilters -Ipolicy -Icommon.
# The analyser first runs on a small made-up tree with one of each fault,
# so a parser that stopped seeing includes fails here instead of passing.
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import diag, ok, run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
# Top to bottom; a file may include its own layer and the ones below.
LAYERS = ['proxy', 'filters', 'policy', 'common']

# Loops that exist today and are being removed, each with who removes it.
# Delete an entry when its loop is gone: a stale entry fails (d).
ALLOWED_LOOPS = {
}
# The same for circles of three or more modules (sorted module names).
ALLOWED_CIRCLES = {
}

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def product_files(root):
    out = []
    for layer in LAYERS:
        for dirpath, _dirs, names in os.walk(os.path.join(root, layer)):
            for n in names:
                if n.endswith(('.c', '.h')):
                    out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def resolve(root, f, name):
    here = os.path.normpath(os.path.join(os.path.dirname(f), name))
    if os.path.isfile(os.path.join(root, here)):
        return here
    for layer in LAYERS:
        p = os.path.normpath(os.path.join(layer, name))
        if os.path.isfile(os.path.join(root, p)):
            return p
    return None


def analyse(root):
    """(upward, loops, circles, unresolved, edges) of the tree at root."""
    files = product_files(root)
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward, unresolved, edges = [], [], {}
    for f in files:
        with open(os.path.join(root, f), errors='replace') as fp:
            text = fp.read()
        for name in INCLUDE_RE.findall(text):
            t = resolve(root, f, name)
            if t is None:
                unresolved.append((f, name))
                continue
            if rank[t.split('/')[0]] < rank[f.split('/')[0]]:
                upward.append((f, t))
            a, b = f[:-2], t[:-2]
            if (f.endswith('.c') and t.endswith('.h') and a != b and
                    os.path.isfile(os.path.join(root, b + '.c'))):
                edges.setdefault(a, set()).add(b)
    loops = sorted((a, b) for a in edges for b in edges[a]
                   if a < b and a in edges.get(b, ()))
    return upward, loops, circles(edges), unresolved, edges


def circles(edges):
    """Strongly connected components of more than two modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 2:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def selftest():
    tree = {
        'proxy/a.c': '#include "a.h"\n#include "b.h"\n',
        'proxy/a.h': '',
        'proxy/b.c': '#include "a.h"\n',
        'proxy/b.h': '',
        'filters/f.c': '#include "a.h"\n#include  "nosuch.h"\n',
        'filters/f.h': '',
        'policy/x.c': '# include "y.h"\n',
        'policy/x.h': '',
        'policy/y.c': '#include "z.h"\n',
        'policy/y.h': '',
        'policy/z.c': '#include "x.h"\n',
        'policy/z.h': '',
        'common/c.c': '#include "c.h"\n',
        'common/c.h': '#include "x.h"\n',
    }
    with tempfile.TemporaryDirectory(prefix='fmx-layers-') as d:
        for path, text in tree.items():
            os.makedirs(os.path.join(d, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(d, path), 'w') as fp:
                fp.write(text)
        upward, loops, circ, unresolved, _ = analyse(d)
    ok(sorted(upward) == [('common/c.h', 'policy/x.h'), ('filters/f.c', 'proxy/a.h')],
       'self-test: upward includes found (%s)' % upward)
    ok(loops == [('proxy/a', 'proxy/b')], 'self-test: a.c <-> b.c loop found (%s)' % loops)
    ok(circ == [['policy/x', 'policy/y', 'policy/z']],
       'self-test: x -> y -> z -> x circle found (%s)' % circ)
    ok(unresolved == [('filters/f.c', 'nosuch.h')],
       'self-test: unknown header reported (%s)' % unresolved)


def main():
    selftest()
    upward, loops, circ, unresolved, edges = analyse(ROOT)
    files = product_files(ROOT)
    ok(len(files) > 40 and sum(len(v) for v in edges.values()) > 40,
       'found %d product files and %d module dependencies' %
       (len(files), sum(len(v) for v in edges.values())))
    for f, name in unresolved:
        diag('%s: #include "%s": no such file in the tree' % (f, name))
    ok(not unresolved, '(c) every #include "..." resolves to a product file')
    for layer in LAYERS:
        bad = [(f, t) for f, t in upward if f.split('/')[0] == layer]
        for f, t in bad:
            diag('%s includes %s: a layer above %s/' % (f, t, layer))
        ok(not bad, '(a) %s/ includes no header of a layer above it (%s)' %
           (layer, ' -> '.join(LAYERS)))
    new = [p for p in loops if p not in ALLOWED_LOOPS]
    for a, b in new:
        diag('%s.c includes %s.h and %s.c includes %s.h' % (a, b, b, a))
    ok(not new, '(b) no two modules include each other\'s header')
    newc = [c for c in circ if tuple(c) not in ALLOWED_CIRCLES]
    for c in newc:
        diag('circle: ' + ', '.join(c))
    ok(not newc, '(b) no longer circle of modules')
    for pair, who in sorted(ALLOWED_LOOPS.items()):
        ok(pair in loops, '(d) allowlisted loop %s <-> %s still exists (%s; '
           'delete the entry once it is gone)' % (pair[0], pair[1], who))
    for c, who in sorted(ALLOWED_CIRCLES.items()):
        ok(list(c) in circ, '(d) allowlisted circle %s still exists (%s; '
           'delete the entry once it is gone)' % (', '.join(c), who))


run(main)
