"""milters.py - the real Debian milters, started by a test on loopback.

    from milters import OpenDKIM, Clamd, ClamavMilter, OpenDMARC, Rspamd
    dk = OpenDKIM(mode='sv', domain='example.net', selector='sel',
                  dns=fakedns.address).start()
    dk.address          # "inet:127.0.0.1:PORT", frontmx's (and Postfix's) syntax
    dk.record           # the TXT record of the key opendkim-genkey made
    dk.started_in       # seconds from exec to a listening socket
    dk.log()            # its own log/output, for diag() on a failure
    dk.stop()

    cd = Clamd().start()                       # one-line .ndb EICAR signature
    av = ClamavMilter(cd).start()              # talks to cd's private socket
    dm = OpenDMARC(authserv_id='mx.interop.example').start()
    rs = Rspamd(dns=fakedns.address)           # .start() may take ~10 s
    Rspamd.available()                         # (True, '') or (False, why)

Each milter runs from its Debian package's binary with a config file, pid
file, sockets, temp and log files in a private temp dir of the test, on a
free loopback port: never the packaged service's socket, config or user,
so a system instance (if the package's postinst started one) neither
collides nor helps.  "Listening" is read from /proc/net/{tcp,unix}, not
probed with a connection: a bare connect-and-close is a protocol error to
a milter (and crashed rspamd's proxy once, rspamd#3083).  A milter that
exits or does not listen in time raises MilterError with its log; every
process is a fmx.start_process child, killed at the test's exit.

Run directly (`/usr/bin/python3 t/lib/milters.py`) it starts each one and
prints how long it took: the start-up timings of the interop matrix.
"""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmx  # noqa: E402

# The EICAR test file's fixed 68 octets, split so that this source file
# is not itself flagged by a scanner that reads the test tree.
EICAR = (b'X5O!P%@AP[4\\PZX54(P^)7CC)7}$'
         b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*')
# clamd's one-line signature for it (.ndb: name:target:offset:hex): the
# hex of "EICAR-STANDARD-ANTIVIRUS-TEST-FILE", anywhere in any file.  No
# freshclam, no network; a .hdb hash of the raw file did not match a mail.
EICAR_NDB = ('Local.EICAR.NDB:0:*:'
             + b'EICAR-STANDARD-ANTIVIRUS-TEST-FILE'.hex() + '\n')
EICAR_NAME = 'Local.EICAR.NDB'


class MilterError(Exception):
    pass


def listening_tcp(port):
    """Is something listening on 127.0.0.1:port (or 0.0.0.0:port)?"""
    want = (':%04X' % port)
    try:
        with open('/proc/net/tcp') as f:
            next(f)
            for line in f:
                p = line.split()
                if p[3] == '0A' and p[1].endswith(want) and p[1][:8] in ('0100007F', '00000000'):
                    return True
    except OSError:
        pass
    return False


def _listening_unix(path):
    try:
        with open('/proc/net/unix') as f:
            next(f)
            for line in f:
                p = line.split()
                # Flags 00010000 = __SO_ACCEPTCON: a listening socket.
                if len(p) >= 8 and p[7] == path and p[3] == '00010000':
                    return True
    except OSError:
        pass
    return False


def _write(path, text, mode=0o644):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def _conf(pairs):
    return ''.join('%s %s\n' % (k, v) for k, v in pairs if v is not None)


class Milter:
    """One daemon in its own temp dir.  Subclasses set argv, the files to
    write and what to wait for (self.port or self.unix_path)."""
    name = 'milter'
    binary = None
    start_timeout = 30.0

    def __init__(self):
        self.dir = fmx.tmpdir('fmx-%s-' % self.name)
        self.port = None
        self.unix_path = None
        self.proc = None
        self.started_in = None
        self.logs = []                   # files log() shows
        self.out = os.path.join(self.dir, '%s.out' % self.name)

    @classmethod
    def available(cls):
        if cls.binary and not os.access(cls.binary, os.X_OK):
            return False, '%s not installed (make deps)' % cls.binary
        return True, ''

    @property
    def address(self):
        """Postfix's smtpd_milters syntax, which frontmx's milter key takes."""
        if self.port:
            return 'inet:127.0.0.1:%d' % self.port
        return 'unix:%s' % self.unix_path

    def path(self, name):
        return os.path.join(self.dir, name)

    def argv(self):
        raise NotImplementedError

    def prepare(self):
        """Write config files; called by start()."""

    def env(self):
        return None

    def listening(self):
        if self.port:
            return listening_tcp(self.port)
        return _listening_unix(self.unix_path)

    def start(self):
        self.prepare()
        t0 = time.time()
        with open(self.out, 'wb') as out:
            self.proc = fmx.start_process(self.argv(), stdout=out, stderr=subprocess.STDOUT,
                                          cwd=self.dir, env=self.env())
        end = t0 + self.start_timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise MilterError('%s exited (status %s) before listening:\n%s'
                                  % (self.name, self.proc.returncode, self.log()))
            if self.listening():
                self.started_in = time.time() - t0
                return self
            time.sleep(0.05)
        self.stop()
        raise MilterError('%s not listening on %s after %.0f s:\n%s'
                          % (self.name, self.address, self.start_timeout, self.log()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM to its process group, SIGKILL after timeout; returns the
        exit status (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait(timeout=5)
            return None

    def log(self, tail=6000):
        parts = []
        for f in [self.out] + self.logs:
            try:
                with open(f, 'rb') as fh:
                    data = fh.read().decode('utf-8', 'replace')
            except OSError:
                continue
            parts.append('--- %s\n%s' % (os.path.basename(f), data[-tail:]))
        return '\n'.join(parts)

    def diag_log(self):
        for line in self.log().splitlines():
            fmx.diag('  ' + line)


# ---------------------------------------------------------------- OpenDKIM

def _txt_record(zone_text):
    """The TXT value of opendkim-genkey's SEL.txt (a zone-file line with
    the record split into quoted strings)."""
    return ''.join(re.findall(r'"([^"]*)"', zone_text))


def unbound_conf(path, dns):
    """A libunbound config forwarding every query to fakedns's "IP@PORT"
    (OpenDKIM's ResolverConfiguration): the real resolver path, offline."""
    return _write(path, 'server:\n'
                        '  do-not-query-localhost: no\n'
                        '  username: ""\n  chroot: ""\n'
                        '  harden-referral-path: no\n'
                        'forward-zone:\n  name: "."\n  forward-addr: %s\n' % dns)


class OpenDKIM(Milter):
    """opendkim 2.11 as a milter (on a free port, or unix=True: a socket in
    its temp dir).  mode 's', 'v' or 'sv'; signing uses a
    fresh key from opendkim-genkey (self.record is its TXT record, to serve
    as SELECTOR._domainkey.DOMAIN); verifying resolves keys through dns
    ("127.0.0.1@PORT" of a fakedns.FakeDNS) with libunbound.
    With dns (ResolverConfiguration), opendkim 2.11 itself crashes under
    concurrent sessions (SIGSEGV after "fatal flex scanner internal
    error--end of buffer missed", libunbound's config lexer run from
    several threads; cf. OpenDKIM#56): give parallel tests an instance
    without it."""
    name = 'opendkim'
    binary = '/usr/sbin/opendkim'
    genkey = '/usr/sbin/opendkim-genkey'

    def __init__(self, mode='sv', domain='example.net', selector='sel', dns=None,
                 internal='127.0.0.1', authserv_id='dkim.interop.example', extra=(),
                 canon='relaxed/simple', unix=False):
        super().__init__()
        self.mode, self.domain, self.selector = mode, domain, selector
        self.dns, self.internal, self.authserv_id = dns, internal, authserv_id
        self.extra = list(extra)
        self.canon = canon
        if unix:
            self.unix_path = self.path('opendkim.sock')
        else:
            self.port = fmx.free_port()
        self.record = None
        self.key = None
        if 's' in mode:
            kd = self.path('keys')
            os.mkdir(kd)
            p = subprocess.run([self.genkey, '-b', '2048', '-D', kd, '-d', domain, '-s', selector],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if p.returncode != 0:
                raise MilterError('opendkim-genkey failed: %r' % p.stdout)
            self.key = os.path.join(kd, selector + '.private')
            with open(os.path.join(kd, selector + '.txt')) as f:
                self.record = _txt_record(f.read())

    @property
    def key_name(self):
        return '%s._domainkey.%s' % (self.selector, self.domain)

    def prepare(self):
        pairs = [('Syslog', 'no'), ('LogWhy', 'yes'), ('Mode', self.mode),
                 ('Socket', 'local:%s' % self.unix_path if self.unix_path
                  else 'inet:%d@127.0.0.1' % self.port),
                 ('PidFile', self.path('opendkim.pid')),
                 ('AuthservID', self.authserv_id),
                 ('InternalHosts', self.internal),
                 ('Canonicalization', self.canon),
                 ('RequireSafeKeys', 'no'),
                 ('AlwaysAddARHeader', 'yes')]
        if self.key:
            pairs += [('Domain', self.domain), ('Selector', self.selector),
                      ('KeyFile', self.key)]
        if self.dns:
            pairs.append(('ResolverConfiguration',
                          unbound_conf(self.path('unbound.conf'), self.dns)))
        _write(self.path('opendkim.conf'), _conf(pairs + self.extra))

    def argv(self):
        # -f: foreground (there is no "Foreground" key).  With Syslog no
        # its errors go to stderr, which start() saves in opendkim.out.
        return [self.binary, '-f', '-x', self.path('opendkim.conf')]


# ---------------------------------------------------------------- ClamAV

class Clamd(Milter):
    """clamd (clamav-daemon) on a private unix socket with one signature
    database: local.ndb matching EICAR.  Loads in well under a second."""
    name = 'clamd'
    binary = '/usr/sbin/clamd'

    def __init__(self):
        super().__init__()
        self.unix_path = self.path('clamd.sock')
        self.logs = [self.path('clamd.log')]

    def prepare(self):
        db = self.path('clamdb')
        os.makedirs(db, exist_ok=True)
        os.makedirs(self.path('tmp'), exist_ok=True)
        _write(os.path.join(db, 'local.ndb'), EICAR_NDB)
        _write(self.path('clamd.conf'), _conf([
            ('LocalSocket', self.unix_path),
            ('DatabaseDirectory', db),
            ('TemporaryDirectory', self.path('tmp')),
            ('LogFile', self.path('clamd.log')),
            ('LogVerbose', 'yes'),
            ('PidFile', self.path('clamd.pid')),
            ('Foreground', 'yes'),
            # no self-check reloads, no bytecode signatures to look for
            ('SelfCheck', '0'),
            ('Bytecode', 'no')]))

    def argv(self):
        return [self.binary, '-c', self.path('clamd.conf')]


class ClamavMilter(Milter):
    """clamav-milter talking to a Clamd; OnInfected Reject, AddHeader
    Replace (X-Virus-Status on every message it scanned)."""
    name = 'clamav-milter'
    binary = '/usr/sbin/clamav-milter'

    def __init__(self, clamd, on_infected='Reject', reject_msg=None):
        super().__init__()
        self.clamd = clamd
        self.on_infected, self.reject_msg = on_infected, reject_msg
        self.port = fmx.free_port()
        self.logs = [self.path('clamav-milter.log')]

    def prepare(self):
        os.makedirs(self.path('tmp'), exist_ok=True)
        _write(self.path('clamav-milter.conf'), _conf([
            ('MilterSocket', 'inet:%d@127.0.0.1' % self.port),
            ('ClamdSocket', 'unix:%s' % self.clamd.unix_path),
            ('Foreground', 'yes'),
            ('OnInfected', self.on_infected),
            ('RejectMsg', self.reject_msg),
            ('AddHeader', 'Replace'),
            ('LogFile', self.path('clamav-milter.log')),
            ('LogVerbose', 'yes'),
            ('LogInfected', 'Full'),
            ('LogClean', 'Full'),
            ('PidFile', self.path('clamav-milter.pid')),
            ('TemporaryDirectory', self.path('tmp'))]))

    def argv(self):
        return [self.binary, '-c', self.path('clamav-milter.conf')]


# ---------------------------------------------------------------- OpenDMARC

class OpenDMARC(Milter):
    """opendmarc 1.4 with its own authserv-id.  It accepts at CONNECT any
    client in IgnoreHosts (127.0.0.1 by default): the test must present
    another client address.  Its DMARC record lookups go to the system
    resolver (it has no resolver option): DNSTimeout bounds them, and the
    tests assert the header, whatever the DNS answered."""
    name = 'opendmarc'
    binary = '/usr/sbin/opendmarc'

    def __init__(self, authserv_id='dmarc.interop.example', extra=()):
        super().__init__()
        self.authserv_id = authserv_id
        self.extra = list(extra)
        self.port = fmx.free_port()

    def prepare(self):
        _write(self.path('opendmarc.conf'), _conf([
            ('Syslog', 'false'),
            ('Socket', 'inet:%d@127.0.0.1' % self.port),
            ('PidFile', self.path('opendmarc.pid')),
            ('AuthservID', self.authserv_id),
            ('TrustedAuthservIDs', self.authserv_id),
            ('PublicSuffixList', '/usr/share/publicsuffix/public_suffix_list.dat'),
            ('DNSTimeout', '2'),
            ('SPFSelfValidate', 'false'),
            ('SoftwareHeader', 'true'),
            ('FailureReports', 'false'),
            ('RejectFailures', 'false')] + self.extra))

    def argv(self):
        return [self.binary, '-f', '-c', self.path('opendmarc.conf')]


# ---------------------------------------------------------------- rspamd

class Rspamd(Milter):
    """rspamd 3.4's proxy worker in self-scan mode, milter = yes, on a free
    port; the packaged rules (/etc/rspamd) with this temp dir as
    LOCAL_CONFDIR (so /etc/rspamd/local.d is not read), DBDIR, RUNDIR and
    LOGDIR; the normal and controller workers off (count = -1), hyperscan
    off (its regexp compile would take minutes on two shared cores), DNS to
    fakedns's "IP@PORT" (or a closed loopback port: fails at once).  Run
    as root with -i: the tests run as root and rspamd refuses otherwise."""
    name = 'rspamd'
    binary = '/usr/bin/rspamd'
    start_timeout = 90.0

    def __init__(self, dns=None, extra_options='', reject_message='Spam message rejected'):
        super().__init__()
        self.reject_message = reject_message
        self.port = fmx.free_port()
        self.dns = dns or '127.0.0.1:%d' % fmx.free_port()
        self.extra_options = extra_options
        self.logs = [self.path('log/rspamd.log')]

    def prepare(self):
        for d in ('local/local.d', 'local/override.d', 'db', 'run', 'log'):
            os.makedirs(self.path(d), exist_ok=True)
        o = self.path('local/override.d')
        _write(os.path.join(o, 'worker-proxy.inc'),
               'bind_socket = "127.0.0.1:%d";\nmilter = yes;\ntimeout = 60s;\n'
               'upstream "local" { default = yes; self_scan = yes; }\ncount = 1;\n'
               'reject_message = "%s";\n'
               % (self.port, self.reject_message))
        _write(os.path.join(o, 'worker-normal.inc'), 'count = -1;\n')
        _write(os.path.join(o, 'worker-controller.inc'), 'count = -1;\n')
        _write(os.path.join(o, 'worker-fuzzy.inc'), 'count = -1;\n')
        _write(os.path.join(o, 'options.inc'),
               'dns { nameserver = ["%s"]; timeout = 1s; retransmits = 1; }\n'
               'disable_hyperscan = true;\n%s' % (self.dns.replace('@', ':'), self.extra_options))
        _write(os.path.join(o, 'logging.inc'), 'level = "info";\n')
        # A test symbol worth 10 points (add_header is 6, reject 15) on any
        # message with an X-Fmx-Test-Spam field: rspamd's "add header"
        # action, which its milter answers with an added X-Spam: Yes.
        _write(self.path('local/rspamd.local.lua'),
               'rspamd_config.FMX_TEST_SPAM = {\n'
               '  callback = function(task)\n'
               '    return task:get_header("X-Fmx-Test-Spam") ~= nil\n'
               '  end,\n'
               '  score = 10.0,\n'
               '  description = "frontmx interop test: add_header",\n'
               '}\n')
        # What it adds to a message it passes: its result and an
        # Authentication-Results field (the packaged default adds nothing).
        _write(self.path('local/local.d/milter_headers.conf'),
               'use = ["x-spamd-result", "x-rspamd-queue-id"];\n'
               # the tests' clients are on loopback, which rspamd counts as local
               'skip_local = false;\nskip_authenticated = false;\n')

    def argv(self):
        d = self.dir
        return [self.binary, '-f', '-i', '-c', '/etc/rspamd/rspamd.conf',
                '--var', 'LOCAL_CONFDIR=%s/local' % d, '--var', 'DBDIR=%s/db' % d,
                '--var', 'RUNDIR=%s/run' % d, '--var', 'LOGDIR=%s/log' % d]


# ---------------------------------------------------------------- frontmx side

def milter_filter(name, milter, **over):
    """A frontmx filters entry for milter (a Milter or an address), with
    issue 11's keys: Postfix's default timeouts, on_error = "tempfail"."""
    d = {'name': name, 'milter': milter.address if isinstance(milter, Milter) else milter,
         'timeouts': {'connect': 30, 'command': 30, 'content': 300},
         'on_error': 'tempfail'}
    d.update(over)
    return d


_seq = [0]


def message(frm='Alice <alice@example.org>', to='Bob <bob@example.com>', subject='interop',
            body=None, extra=b''):
    """(message bytes with CRLF, its Message-ID): a plain text mail whose
    Message-ID finds it again among the upstream's messages."""
    _seq[0] += 1
    msgid = 'interop-%d-%d@test.example' % (os.getpid(), _seq[0])
    if body is None:
        body = (b'Hello Bob,\r\n\r\n  a line with   blanks\t \r\n'
                b'.a line that starts with a dot\r\n\r\n')
    head = ('From: %s\r\nTo: %s\r\nSubject: %s\r\n'
            'Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <%s>\r\n'
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n'
            % (frm, to, subject, msgid)).encode()
    return head + extra + b'\r\n' + body, msgid


def proxy_v1(client_ip, client_port=40025):
    """A PROXY protocol v1 header presenting client_ip (for a listener with
    proxy_protocol = true): the CONNECT a milter sees then carries it."""
    fam = 'TCP6' if ':' in client_ip else 'TCP4'
    dst = '::1' if fam == 'TCP6' else '127.0.0.1'
    return ('PROXY %s %s %s %d 25\r\n' % (fam, client_ip, dst, client_port)).encode()


def deliver(port, body, sender='alice@example.org', rcpts=('bob@example.com',),
            source=None, proxy=None, helo='client.interop.example', timeout=60):
    """One SMTP session to frontmx on port: (PROXY header,) EHLO, one
    transaction, QUIT.  Returns SmtpClient.transaction()'s dict; replies
    wait up to timeout (a milter may take its time at end of data)."""
    kw = {'timeout': timeout}
    if source:
        kw['source'] = source
    c = fmx.SmtpClient(port, **kw)
    try:
        if proxy:
            c.send(proxy)
        c.greeting()
        c.ehlo(helo)
        r = c.transaction(sender, list(rcpts), body)
        try:
            c.quit()
        except OSError:
            pass
    finally:
        c.close()
    return r


def start_all(*milters):
    """Start each milter in turn: True, or one failed assertion with the
    log of the one that did not come up (the test then stops)."""
    for m in milters:
        try:
            m.start()
        except MilterError as e:
            fmx.ok(False, '%s starts on loopback: %s' % (m.name, e))
            return False
        fmx.diag('%s listening on %s after %.2f s' % (m.name, m.address, m.started_in))
    return True


def unfold(field):
    """A header field (bytes, with CRLF folds) as one line of text."""
    return re.sub(rb'\r\n[ \t]+', b' ', field).decode('latin-1').strip()


def ar_field(fields, authserv):
    """The Authentication-Results field (unfolded) among fields (the
    fmx_filters.fields_named list) whose authserv-id is authserv, or None."""
    for f in fields:
        v = unfold(f)
        if re.match(r'Authentication-Results:\s*%s\s*;' % re.escape(authserv), v):
            return v
    return None


def bare_cr_lf(data):
    """Does data hold a CR or LF that is not part of a CRLF pair?"""
    return re.search(rb'(?<!\r)\n|\r(?!\n)', data) is not None


def find_message(up, msgid):
    """The upstream's Message carrying Message-ID msgid, or None."""
    for m in list(up.messages):
        if ('<%s>' % msgid).encode() in m.data:
            return m
    return None


# ---------------------------------------------------------------- self-check

def _selfcheck():
    """Start each milter, print its start-up time, stop it."""
    import fakedns
    dns = fakedns.FakeDNS({}).start()
    fmx.register_cleanup(dns.stop)
    cd = None
    rows = []
    for make in (lambda: OpenDKIM(dns=dns.address), Clamd,
                 lambda: ClamavMilter(cd), OpenDMARC, lambda: Rspamd(dns=dns.address)):
        m = make()
        try:
            m.start()
            rows.append('%-14s %-28s started in %.2f s' % (m.name, m.address, m.started_in))
        except MilterError as e:
            rows.append('%-14s FAILED: %s' % (m.name, e))
        if isinstance(m, Clamd):
            cd = m
    print('\n'.join(rows))


if __name__ == '__main__':
    try:
        _selfcheck()
    finally:
        fmx._cleanup()
