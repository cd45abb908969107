#!/usr/bin/python3
# An admin can install and run it (issue 12 section 4):
#   - frontmx --help, --version and `frontmx check --help` exit 0, usage on
#     standard output;
#   - `make install DESTDIR=...` installs exactly the expected files (binary,
#     man pages, systemd unit with this PREFIX's paths, sysusers.d and
#     tmpfiles.d files, module header, sample configuration and docs), never
#     overwrites an existing configuration, and `make uninstall` removes what
#     it installed;
#   - the man pages pass `mandoc -T lint` and `man --warnings`, and are
#     true: every option of --help and every configuration key the parser
#     accepts is in them (keys found in the C sources; see KEYS below);
#   - the unit passes `systemd-analyze verify` (installed with PREFIX in a
#     temporary root, so its commands exist) and works with the sample
#     configuration's paths: the documented quarantine directory is
#     writable under ProtectSystem=strict, the relative dir: upstream lives
#     in the state directory, -t runs before the start as the unit's user,
#     reload sends SIGHUP; the installed sample passes -t from there;
#   - -t as an unprivileged user refuses a key file that user cannot read,
#     naming FILE:LINE (what ExecStartPre then stops the start with).
import os
import re
import shutil
import stat
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import REPO, diag, free_port, is_, like, ok, run, skip, tmpdir, todo  # noqa: E402
from fmx_tls import make_cert  # noqa: E402

PROG = os.path.join(REPO, 'frontmx')
MAN8 = os.path.join(REPO, 'man', 'frontmx.8')
MAN5 = os.path.join(REPO, 'man', 'frontmx.conf.5')
UNIT = os.path.join(REPO, 'conf', 'frontmx.service')
SAMPLE = os.path.join(REPO, 'conf', 'frontmx.conf')
# Configuration keys the man page (and the sample) had to name when this
# test was last brought up to date: a key missing from these files fails
# only if it is listed here; a newer key is reported as a TODO until it is
# documented and added here (other work lands keys concurrently).
KEYS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config-keys.txt')


def sh(argv, **kw):
    kw.setdefault('stdout', subprocess.PIPE)
    kw.setdefault('stderr', subprocess.PIPE)
    kw.setdefault('timeout', 120)
    p = subprocess.run(argv, **kw)
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


def make(*args):
    return sh(['make', '-s', '--no-print-directory', '-C', REPO] + list(args), timeout=300)


def c_strings(text):
    return re.findall(r'"([a-z][a-z0-9_]*)"', text)


def parser_keys():
    """Every key the configuration parser and the built-in filters accept,
    from the C sources: the config_keys_*[] tables, the limits and
    timeouts rows, and each built-in filter's known[] options (content's
    are its strcmp(key, ...) chain)."""
    keys = set()
    for path in [os.path.join(REPO, 'policy', f) for f in os.listdir(os.path.join(REPO, 'policy'))
                 if f.endswith('.c')]:
        src = open(path).read()
        for m in re.finditer(r'config_keys_\w+\[\]\s*=\s*\{(.*?)\};', src, re.S):
            keys.update(c_strings(m.group(1)))
        for m in re.finditer(r'config_\w+_rows\[\]\s*=\s*\{(.*?)\n\};', src, re.S):
            keys.update(re.findall(r'\{\s*"([a-z][a-z0-9_]*)"', m.group(1)))
    for f in os.listdir(os.path.join(REPO, 'filters')):
        if not f.endswith('.c'):
            continue
        src = open(os.path.join(REPO, 'filters', f)).read()
        for m in re.finditer(r'known\[\]\s*=\s*\{(.*?)\};', src, re.S):
            keys.update(c_strings(m.group(1)))
    content = open(os.path.join(REPO, 'filters', 'content.c')).read()
    keys.update(re.findall(r'strcmp\(key, "([a-z_]+)"\)', content))
    return keys


def man_text(path):
    """The page as rendered (no markup), for word searches."""
    rc, out, err = sh(['mandoc', '-T', 'ascii', path])
    return re.sub(r'.\x08', '', out)


def check_cli():
    rc, out, err = sh([PROG, 'check', '--help'])
    is_(rc, 0, 'frontmx check --help exits 0')
    like(out, r'usage: frontmx check -c FILE', 'frontmx check --help: usage on stdout')
    is_(err, '', 'frontmx check --help: nothing on stderr')
    rc, out, err = sh([PROG, 'check'])
    is_(rc, 64, 'frontmx check without options: 64')
    like(err, r'usage: frontmx check', 'frontmx check without options: usage on stderr')
    rc, out, err = sh([PROG, '--help'])
    is_(rc, 0, 'frontmx --help exits 0')
    rc, out2, err = sh([PROG, '--version'])
    is_(rc, 0, 'frontmx --version exits 0')
    # The man page names every option --help and check --help list.
    page = man_text(MAN8)
    rc, chk, err = sh([PROG, 'check', '--help'])
    opts = set(re.findall(r'(?<![\w-])(-[a-zA-Z]|--[a-z][a-z-]+)\b', out + chk))
    missing = sorted(o for o in opts if not re.search(r'(?<![\w-])%s\b' % re.escape(o), page))
    ok(len(opts) >= 10 and not missing, 'frontmx(8) names every option of --help (%d; missing: %s)'
       % (len(opts), ', '.join(missing) or 'none'))


def check_man():
    for page in (MAN8, MAN5):
        rc, out, err = sh(['mandoc', '-T', 'lint', '-W', 'warning', page])
        ok(rc == 0 and out == '' and err == '', 'mandoc -T lint: %s clean%s'
           % (os.path.basename(page), '' if rc == 0 else ': ' + (out + err)[:500]))
        rc, out, err = sh(['man', '--warnings', '-l', page],
                          env=dict(os.environ, MANWIDTH='80', MAN_KEEP_FORMATTING='0'))
        ok(rc == 0 and err == '', 'man --warnings: %s clean%s'
           % (os.path.basename(page), '' if not err else ': ' + err[:500]))
        like(re.sub(r'.\x08', '', out), r'NAME\s+frontmx', 'man renders %s' % os.path.basename(page))

    keys = parser_keys()
    ok(len(keys) > 80, 'found the parser\'s keys in the sources (%d)' % len(keys))
    known = set(l.split('#')[0].strip() for l in open(KEYS)) - {''}
    page = man_text(MAN5)
    sample = open(SAMPLE).read()
    for where, text in (('frontmx.conf(5)', page), ('conf/frontmx.conf', sample)):
        missing = sorted(k for k in keys if not re.search(r'\b%s\b' % k, text))
        old = [k for k in missing if k in known]
        new = [k for k in missing if k not in known]
        ok(not old, '%s names every key the parser accepts%s' % (
            where, ': missing ' + ', '.join(old) if old else ''))
        if new:
            with todo('keys added since t/meta/config-keys.txt: document them, then list them'):
                ok(False, '%s: newer keys not documented: %s' % (where, ', '.join(new)))
    unlisted = sorted(keys - known)
    if unlisted:
        diag('keys not in t/meta/config-keys.txt yet: %s' % ', '.join(unlisted))


def installed_files(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def check_install():
    root = tmpdir('fmx-dest-')
    rc, out, err = make('install', 'DESTDIR=' + root)
    is_(rc, 0, 'make install DESTDIR=%s' % root)
    if rc != 0:
        diag(err[-2000:])
        return
    want = {
        'usr/local/sbin/frontmx': 0o755,
        'usr/local/share/man/man8/frontmx.8': 0o644,
        'usr/local/share/man/man5/frontmx.conf.5': 0o644,
        'usr/local/lib/systemd/system/frontmx.service': 0o644,
        'usr/local/lib/sysusers.d/frontmx.conf': 0o644,
        'usr/local/lib/tmpfiles.d/frontmx.conf': 0o644,
        'usr/local/include/frontmx/frontmx_filter.h': 0o644,
        'usr/local/share/doc/frontmx/README.md': 0o644,
        'usr/local/share/doc/frontmx/frontmx.conf': 0o644,
        'usr/local/share/doc/frontmx/content.rules': 0o644,
        'etc/frontmx/frontmx.conf': 0o644,
        'etc/frontmx/content.rules': 0o644,
    }
    got = installed_files(root)
    is_(sorted(got), sorted(want), 'make install: exactly the expected files')
    is_({k: oct(v) for k, v in got.items()}, {k: oct(v) for k, v in want.items()},
        'make install: with the expected modes')
    unit = open(os.path.join(root, 'usr/local/lib/systemd/system/frontmx.service')).read()
    like(unit, r'(?m)^ExecStart=/usr/local/sbin/frontmx -s -c /etc/frontmx/frontmx\.conf$',
         'installed unit: default PREFIX paths')
    like(unit, r'(?m)^Documentation=file:/usr/local/share/doc/frontmx/README\.md$',
         'installed unit: its Documentation= is installed')
    is_(open(os.path.join(root, 'usr/local/include/frontmx/frontmx_filter.h')).read(),
        open(os.path.join(REPO, 'filters', 'frontmx_filter.h')).read(),
        'installed module header is filters/frontmx_filter.h')
    # A second install keeps the admin's configuration.
    conf = os.path.join(root, 'etc/frontmx/frontmx.conf')
    with open(conf, 'a') as f:
        f.write('# edited by the admin\n')
    rc, out, err = make('install', 'DESTDIR=' + root)
    is_(rc, 0, 'make install again')
    like(open(conf).read(), r'# edited by the admin\n$', 'make install again: frontmx.conf left alone')
    rc, out, err = make('uninstall', 'DESTDIR=' + root)
    is_(rc, 0, 'make uninstall')
    is_(sorted(installed_files(root)), ['etc/frontmx/content.rules', 'etc/frontmx/frontmx.conf'],
        'make uninstall: only the configuration is left')


def unit_settings(text):
    d = {}
    for line in text.splitlines():
        m = re.match(r'^([A-Za-z]+)=(.*)$', line)
        if m:
            d.setdefault(m.group(1), []).append(m.group(2))
    return d


def check_unit():
    root = tmpdir('fmx-pfx-')
    rc, out, err = make('install', 'PREFIX=%s/usr' % root, 'SYSCONFDIR=%s/etc' % root)
    is_(rc, 0, 'make install PREFIX=%s/usr' % root)
    unit = os.path.join(root, 'usr/lib/systemd/system/frontmx.service')
    # No MANPATH to the installed pages: verify must pass as an admin runs it.
    env = dict(os.environ)
    rc, out, err = sh(['systemd-analyze', 'verify', unit], env=env)
    ok(rc == 0 and (out + err).strip() == '', 'systemd-analyze verify: no complaint%s'
       % ('' if rc == 0 and not (out + err).strip() else ': ' + (out + err)[:800]))
    # The check can fail: the same unit with a misspelt key is reported.
    bad = os.path.join(tmpdir('fmx-badunit-'), 'frontmx.service')
    with open(bad, 'w') as f:
        f.write(open(unit).read().replace('ProtectSystem=', 'ProtectSytem='))
    rc, out, err = sh(['systemd-analyze', 'verify', bad], env=env)
    like(out + err, r'ProtectSytem', 'systemd-analyze verify reports a misspelt key (control)')

    u = unit_settings(open(UNIT).read())
    sbin = '/usr/local/sbin/frontmx'
    is_(u.get('ExecStartPre'), ['%s -t -c /etc/frontmx/frontmx.conf' % sbin],
        'unit: ExecStartPre checks the configuration (frontmx -t)')
    is_(u.get('ExecReload'), ['%s -t -c /etc/frontmx/frontmx.conf' % sbin, '/bin/kill -HUP $MAINPID'],
        'unit: reload checks, then sends SIGHUP')
    is_(u.get('ProtectSystem'), ['strict'], 'unit: ProtectSystem=strict')
    user = (u.get('User') or [''])[0]
    ok(user and u.get('DynamicUser') is None, 'unit: a fixed system user (%s), so key files can '
       'be made readable to it' % user)
    sysusers = open(os.path.join(REPO, 'conf', 'frontmx.sysusers')).read()
    like(sysusers, r'(?m)^u %s ' % re.escape(user), 'sysusers.d creates the unit\'s user')
    # The sample's paths: the documented quarantine directory must be
    # writable under ProtectSystem=strict, and made for the unit's user.
    sample = open(SAMPLE).read()
    m = re.search(r'(?m)^#?quarantine = \{\s*\n#?\s*directory = "([^"]+)";', sample)
    ok(m, 'the sample documents a quarantine directory')
    qdir = m.group(1) if m else '/nonexistent'
    rw = [p.lstrip('-') for v in u.get('ReadWritePaths', []) for p in v.split()]
    ok(any(qdir == p or qdir.startswith(p.rstrip('/') + '/') for p in rw),
       'unit: the quarantine directory %s is under ReadWritePaths (%s)' % (qdir, ' '.join(rw)))
    tmpfiles = open(os.path.join(REPO, 'conf', 'frontmx.tmpfiles')).read()
    like(tmpfiles, r'(?m)^d %s 07[0-7]0 %s ' % (re.escape(qdir), re.escape(user)),
         'tmpfiles.d makes the quarantine directory for the unit\'s user')
    state = (u.get('StateDirectory') or [''])[0]
    is_(u.get('WorkingDirectory'), ['/var/lib/%s' % state],
        'unit: works in its StateDirectory (the sample\'s relative dir: upstream lives there)')
    like(sample, r'(?m)^\s*directory = "/tmp";', 'the sample spools in /tmp ...')
    is_(u.get('PrivateTmp'), ['yes'], '... which the unit makes private and writable')
    # The installed sample passes -t in a working directory like the unit's.
    work = tmpdir('fmx-work-')
    rc, out, err = sh([os.path.join(root, 'usr/sbin/frontmx'), '-t', '-c',
                       os.path.join(root, 'etc/frontmx/frontmx.conf')], cwd=work)
    is_(rc, 0, 'the installed sample configuration passes frontmx -t%s' % ('' if rc == 0 else ': ' + err))


def check_key_user():
    if os.geteuid() != 0 or not shutil.which('setpriv'):
        for i in range(3):
            skip('-t as another user (%d)' % i, 'not root or no setpriv')
        return
    d = tmpdir('fmx-keys-')
    os.chmod(d, 0o755)
    c = make_cert(d, 'mx.test.example')
    cert, key = c.cert, c.key
    conf = os.path.join(d, 'frontmx.conf')
    with open(conf, 'w') as f:
        f.write('hostname = "mx.test.example";\n'
                'listen = ( { address = "127.0.0.1:%d"; tls = "starttls";\n' % free_port() +
                '  cert = "%s";\n  key = "%s"; } );\n' % (cert, key) +
                'upstream = { address = "127.0.0.1:%d"; };\n' % free_port() +
                'spool = { directory = "/tmp"; };\n' +
                'dns = { reverse = false; };\n')
    for p in (conf, cert):
        os.chmod(p, 0o644)
    os.chown(key, 0, 0)
    os.chmod(key, 0o600)
    nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', PROG, '-t', '-c', conf]
    rc, out, err = sh(nobody)
    ok(rc not in (0, None), '-t as an unprivileged user: a key it cannot read is refused')
    like(err, r'%s:4: .*%s' % (re.escape(conf), re.escape(os.path.basename(key))),
         '-t as an unprivileged user: FILE:LINE names the key')
    os.chown(key, 0, 65534)
    os.chmod(key, 0o640)
    rc, out, err = sh(nobody)
    is_(rc, 0, '-t as an unprivileged user: the key made readable to its group passes%s'
        % ('' if rc == 0 else ': ' + err))


def main():
    if not os.access(PROG, os.X_OK):
        ok(False, 'the frontmx binary is built (make)')
        return
    check_cli()
    check_man()
    check_install()
    check_unit()
    check_key_user()


run(main, timeout=600)
