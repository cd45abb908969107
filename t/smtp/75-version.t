#!/usr/bin/python3
# frontmx -V / --version: what a bug report needs, on stdout, exit 0.  The
# version must be proxy/version.h's and the filter API line the one
# filters/frontmx_filter.h defines, so neither can drift from what the
# binary was built with; the libraries are the ones actually loaded.
import os
import re
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import REPO, frontmx_path, is_, like, ok, run  # noqa: E402

SAN = ('AddressSanitizer', 'LeakSanitizer', 'runtime error:')


def header_define(path, name):
    with open(os.path.join(REPO, path)) as f:
        m = re.search(r'^#define\s+%s\s+(\S+)' % name, f.read(), re.M)
    return m.group(1).strip('"') if m else None


def frontmx(*args):
    p = subprocess.run([frontmx_path()] + list(args), capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def main():
    version = header_define('proxy/version.h', 'FRONTMX_VERSION')
    major = header_define('filters/frontmx_filter.h', 'FMX_ABI_MAJOR')
    minor = header_define('filters/frontmx_filter.h', 'FMX_ABI_MINOR')
    ok(version and re.fullmatch(r'\d+\.\d+\.\d+', version), 'version.h holds a release number: %s' % version)

    rc, out, err = frontmx('--version')
    is_(rc, 0, '--version exits 0')
    is_(err, '', '--version writes nothing on stderr')
    lines = out.splitlines()
    is_(len(lines), 3, 'three lines: version, filter API, libraries')
    is_(lines[0] if lines else '', 'frontmx %s' % version, 'first line: frontmx and version.h\'s version')
    is_(lines[1] if len(lines) > 1 else '', 'filter API %s.%s' % (major, minor),
        'second line: the ABI of frontmx_filter.h')
    like(lines[2] if len(lines) > 2 else '', r'^libevent 2\.\d+\.\d+\S*, OpenSSL \d+\.\d+\.\d+',
         'third line: the libevent and OpenSSL actually loaded')

    rc2, out2, err2 = frontmx('-V')
    is_(rc2, 0, '-V exits 0')
    is_(out2, out, '-V prints the same as --version')

    # No configuration needed, and -V wins over a missing -c.
    rc3, out3, _ = frontmx('-V', '-c', '/nonexistent/frontmx.conf')
    is_((rc3, out3), (0, out), '-V does not read the configuration')

    rc4, out4, _ = frontmx('-h')
    is_(rc4, 0, '-h exits 0')
    like(out4, r'(?m)^\s+-V\s', '-h lists -V')

    rc6, _, err6 = frontmx('--bogus')
    is_(rc6, 64, 'an unknown long option is a usage error (64)')
    ok(not any(s in err + err2 + err6 for s in SAN), 'no sanitizer report')


run(main)
