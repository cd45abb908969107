#!/usr/bin/python3
# frontmx -t and the policy's filter groups: a group for a filter that is
# not in the `filters` chain, or a result name a built-in filter never
# gives, is an error at the key's FILE:LINE: with a "did you mean" when a
# close name exists (a typo would otherwise leave the rule silently dead).
# A module's results are not knowable, so its group takes any name.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

SAN = ('AddressSanitizer', 'LeakSanitizer', 'runtime error:')


def conf(tail):
    """The base test config plus tail; returns (text, {marker: line number})
    for every line of tail ending in a '# MARKER' comment."""
    base = render_conf(base_conf(free_port(), '127.0.0.1:%d' % free_port(), tmpdir('fmx-spool-')))
    lines = base.rstrip('\n').split('\n') + tail.strip('\n').split('\n')
    marks = {}
    for i, l in enumerate(lines):
        m = re.search(r'# (\w+)\s*$', l)
        if m:
            marks[m.group(1)] = i + 1
    return '\n'.join(lines) + '\n', marks


def good(tail, name):
    text, _ = conf(tail)
    rc, out, _ = run_frontmx_t(text)
    is_(rc, 0, name + ': -t exits 0')
    if rc:
        diag(out)


def bad(tail, mark, want, name):
    text, marks = conf(tail)
    rc, out, path = run_frontmx_t(text)
    ok(rc not in (0, None) and rc < 128, name + ': non-zero exit, no crash (%s)' % rc)
    line = '%s:%d: ' % (path, marks[mark])
    got = [l for l in out.splitlines() if l.startswith(path)]
    is_(got[0][len(line):] if got and got[0].startswith(line) else (got[0] if got else out),
        want, name + ': "FILE:%d: %s"' % (marks[mark], want))
    ok(not any(s in out for s in SAN), name + ': no sanitizer report')


def main():
    chain = 'filters = ( { name = "spf"; }, { name = "dkim"; } );\n'
    good(chain + 'policy = { default = { spf = { fail = "reject"; softfail = "tag"; '
         'on_error = "accept"; }; dkim = { fail = "tag"; sign_error = "tempfail"; }; }; };',
         'every group names a chained filter and results it gives')
    bad(chain + 'policy = {\n default = {\n  spff = { fail = "reject"; }; # SPFF\n };\n};',
        'SPFF', "'policy.default.spff': no filter 'spff' in the 'filters' chain (did you mean 'spf'?)",
        'policy.default.spff')
    bad(chain + 'policy = {\n default = {\n  spf = {\n   fial = "reject"; # FIAL\n  };\n };\n};',
        'FIAL', "unknown result 'fial' in 'policy.default.spf': filter 'spf' never gives it "
        "(did you mean 'fail'?)", 'spf.fial')
    bad(chain + 'policy = {\n default = {\n  dmarc = { reject = "reject"; }; # DMARC\n };\n};',
        'DMARC', "'policy.default.dmarc': no filter 'dmarc' in the 'filters' chain",
        'dmarc group, dmarc not chained, nothing close')
    bad(chain + 'policy = {\n domains = ( {\n  domain = "example.org";\n  dkim = {\n'
        '   pas = "accept"; # PAS\n  };\n } );\n};',
        'PAS', "unknown result 'pas' in 'policy.domains[0].dkim': filter 'dkim' never gives it "
        "(did you mean 'pass'?)", 'per-domain dkim.pas')
    bad('policy = {\n default = {\n  spf = { fail = "reject"; }; # NOCHAIN\n };\n};',
        'NOCHAIN', "'policy.default.spf': no filter 'spf' in the 'filters' chain",
        'no filters at all')


run(main, timeout=120)
