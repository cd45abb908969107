# A real Exim 4.96 for the black-box tests, with a private configuration.
#
# Exim is not installed (it would replace Postfix): `make exim` unpacks
# its Debian packages into build/exim.  It runs here with a private
# configuration (-C): spool and logs in a temporary directory, no DNS.
# Its binary has a compiled-in user, Debian-exim; libnss_wrapper maps that
# name to a uid (nobody's when the test runs as root, since Exim refuses
# uid 0 for it; the caller's own otherwise) without touching /etc/passwd.
#
# Users: t/smtp/47-exim.t (Exim as a sending client of frontmx) and
# t/smtp/68-exim-upstream.t (Exim as frontmx's upstream).
import glob
import os
import shutil
import subprocess

from fmx import diag, free_port, like, ok, port_open, start_process, tmpdir, wait_for

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
EXIM = os.environ.get('EXIM') or os.path.join(TOP, 'build', 'exim', 'root', 'usr', 'sbin', 'exim4')
NSS_WRAPPER = (glob.glob('/usr/lib/*/libnss_wrapper.so') + ['/usr/lib/libnss_wrapper.so'])[0]
NOBODY = 65534

# What every private Exim shares; each test adds its log_selector, ACLs,
# routers and transports.
COMMON = '''
exim_path = %(exim)s
spool_directory = %(dir)s/spool
log_file_path = %(dir)s/log/%%slog
primary_hostname = exim.test.example
qualify_domain = example.org
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
message_logs = false
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
'''


# Exim as frontmx's upstream (t/smtp/68-exim-upstream.t, 104-bdat-mta.t):
# local domain example.com accepted from 127.0.0.1 only, nobody@example.com
# refused with 550, an accept router and a maildir transport into DIR/mail
# (create it with dirs=('mail',)).
UPSTREAM_CONF = '''
log_selector = +smtp_connection +smtp_protocol_error +smtp_syntax_error +received_recipients
local_interfaces = 127.0.0.1
domainlist local_domains = example.com
acl_smtp_rcpt = check_rcpt
deliver_drop_privilege = true

begin acl
check_rcpt:
  deny    recipients = nobody@example.com
          message = nobody here (exim refuses)
  accept  domains = +local_domains
          hosts = 127.0.0.1
  deny    message = relay not permitted (exim)

begin routers
local:
  driver = accept
  domains = +local_domains
  transport = to_maildir

begin transports
to_maildir:
  driver = appendfile
  directory = %(dir)s/mail
  maildir_format
  create_directory
  envelope_to_add
  user = Debian-exim
  mode = 0600
'''


def available():
    """TAP: Exim is unpacked, libnss_wrapper installed, and it is 4.96."""
    if not ok(os.access(EXIM, os.X_OK), 'Exim unpacked at %s (make exim)' % EXIM):
        return False
    if not ok(os.path.exists(NSS_WRAPPER), 'libnss_wrapper installed (make deps)'):
        return False
    rc, out = Exim('').run(['-bV'])
    return like(out.splitlines()[0] if out else '', r'^Exim version 4\.96\b', 'it is Exim 4.96')


class Exim:
    """One private Exim: COMMON + conf (a %-template that may use %(exim)s,
    %(dir)s and the keys of subs), with the subdirectories in dirs (plus
    spool and log) owned by Exim's user."""

    def __init__(self, conf, subs=None, dirs=()):
        self.dir = tmpdir('fmx-exim-')
        os.chmod(self.dir, 0o755)
        # The binary where Exim's own user can run it again (its exim_path).
        self.exe = os.path.join(self.dir, 'exim4')
        shutil.copy(EXIM, self.exe)
        os.chmod(self.exe, 0o755)
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:
            uid = gid = NOBODY
        for sub in ('spool', 'log') + tuple(dirs):
            os.mkdir(os.path.join(self.dir, sub))
            if os.getuid() == 0:
                os.chown(os.path.join(self.dir, sub), uid, gid)
        with open(os.path.join(self.dir, 'passwd'), 'w') as f:
            f.write('root:x:0:0:root:/root:/bin/sh\n'
                    'Debian-exim:x:%d:%d:Exim:%s:/bin/false\n' % (uid, gid, self.dir))
        with open(os.path.join(self.dir, 'group'), 'w') as f:
            f.write('root:x:0:\nDebian-exim:x:%d:\n' % gid)
        self.conf = os.path.join(self.dir, 'exim.conf')
        with open(self.conf, 'w') as f:
            f.write((COMMON + conf) % dict(subs or {}, exim=self.exe, dir=self.dir))
        self.env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER,
                        NSS_WRAPPER_PASSWD=os.path.join(self.dir, 'passwd'),
                        NSS_WRAPPER_GROUP=os.path.join(self.dir, 'group'))
        self.proc = None

    def run(self, args, data=None):
        p = subprocess.run([self.exe, '-C', self.conf] + args, input=data, env=self.env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        return p.returncode, p.stdout.decode('utf-8', 'replace')

    def daemon(self, port):
        """Start an SMTP daemon in the foreground (-bdf) on 127.0.0.1:port;
        fmx's cleanup stops it."""
        self.daemon_out = os.path.join(self.dir, 'daemon.out')
        with open(self.daemon_out, 'wb') as out:
            self.proc = start_process([self.exe, '-C', self.conf, '-bdf', '-oX', str(port)],
                                      env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self.proc

    def mainlog(self):
        try:
            with open(os.path.join(self.dir, 'log', 'mainlog')) as f:
                return f.read()
        except OSError:
            return ''


def upstream_daemon():
    """TAP: an Exim with UPSTREAM_CONF listening on a free loopback port;
    (exim, port), or None when Exim is not available or did not come up."""
    if not available():
        return None
    ex = Exim(UPSTREAM_CONF, dirs=('mail',))
    port = free_port()
    ex.daemon(port)
    if not ok(wait_for(lambda: port_open(port), 60), 'exim listens on 127.0.0.1:%d' % port):
        with open(ex.daemon_out, errors='replace') as f:
            diag(f.read())
        diag(ex.mainlog())
        return None
    return ex, port
