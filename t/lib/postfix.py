"""postfix.py - a real, private Postfix instance as an upstream MTA.

    pf = Postfix()                # starts it on a free 127.0.0.1 port
    pf = Postfix(main_cf={'mynetworks': '127.0.0.1/32'})   # override parameters
    pf.port, pf.maildir           # TMP/mail/box/{new,cur,tmp}
    pf.wait_mail(1, timeout=15)   # -> list of delivered file paths
    pf.maillog()                  # its own log file
    pf.greeting()                 # its 220 greeting (a fmx.Reply)
    pf.stop()

Runs as root with its own config_directory, queue_directory and
data_directory inside a temp dir; the system instance is neither used nor
touched (/etc/postfix is only read: master.cf as the template, postfix-files
for `postfix check`).  The master runs in the foreground (`postfix start-fg`)
as our child, so it cannot outlive the test; fmx's exit cleanup also kills
any of its daemons that were re-parented to us.

Every recipient in example.com is delivered by virtual(8) to one Maildir,
TMP/mail/box/.  XCLIENT is allowed from 127.0.0.1, mynetworks is
127.0.0.0/8.
"""

import glob
import os
import pwd
import signal
import subprocess
import time

import fmx

MAIN_CF = """\
compatibility_level = 3.6
myhostname = upstream.test
mydomain = test
myorigin = upstream.test
queue_directory = {d}/queue
data_directory = {d}/data
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.1
smtpd_authorized_xforward_hosts = 127.0.0.1
virtual_mailbox_domains = example.com
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_mailbox_limit = 0
message_size_limit = 10240000
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
smtputf8_enable = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
delay_warning_time = 0
queue_run_delay = 2s
minimal_backoff_time = 2s
"""

# Services we keep from /etc/postfix/master.cf; everything else (pipe
# transports for uucp, maildrop, ...) and every inet service is dropped.
KEEP = ('pickup', 'cleanup', 'qmgr', 'tlsmgr', 'rewrite', 'bounce', 'defer', 'trace',
        'verify', 'flush', 'proxymap', 'proxywrite', 'smtp', 'relay', 'showq', 'error',
        'retry', 'discard', 'local', 'virtual', 'lmtp', 'anvil', 'scache', 'postlog')


def _master_cf(port, template='/etc/postfix/master.cf'):
    out = ['127.0.0.1:%d inet n - n - - smtpd\n' % port]
    keep = False
    have_postlog = False
    with open(template) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            if line[0] in ' \t':                 # continuation of the previous entry
                if keep:
                    out.append(line)
                continue
            f_ = line.split()
            keep = len(f_) >= 8 and f_[1] != 'inet' and f_[0] in KEEP
            if not keep:
                continue
            f_[4] = 'n'                          # no chroot: the queue is in a temp dir
            out.append(' '.join(f_) + '\n')
            if f_[0] == 'postlog':
                have_postlog = True
    if not have_postlog:
        out.append('postlog unix-dgram n - n - 1 postlogd\n')
    return ''.join(out)


def _vuser():
    for name in ('nobody',):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            pass
    return 65534, 65534


class Postfix:
    def __init__(self, port=None, main_cf=None, extra_main_cf='', start=True):
        """main_cf: dict of main.cf parameters replacing the defaults above;
        extra_main_cf: text appended as is."""
        if os.geteuid() != 0:
            raise RuntimeError('Postfix helper needs root')
        self.dir = fmx.tmpdir('fmx-pf-')
        self.port = port or fmx.free_port()
        self.etc = os.path.join(self.dir, 'etc')
        self.mailbase = os.path.join(self.dir, 'mail')
        self.maildir = os.path.join(self.mailbase, 'box')
        self.maillog_path = os.path.join(self.dir, 'maillog')
        self.proc = None
        uid, gid = _vuser()
        pf = pwd.getpwnam('postfix')
        for sub in ('etc', 'queue', 'data', 'mail'):
            os.mkdir(os.path.join(self.dir, sub))
            os.chmod(os.path.join(self.dir, sub), 0o755)
        os.chown(os.path.join(self.dir, 'data'), pf.pw_uid, pf.pw_gid)
        os.chown(self.mailbase, uid, gid)
        text = MAIN_CF.format(d=self.dir, uid=uid, gid=gid)
        for k, v in (main_cf or {}).items():
            lines = [l for l in text.splitlines() if l.split(' =')[0].strip() != k]
            text = '\n'.join(lines + ['%s = %s' % (k, v)]) + '\n'
        with open(os.path.join(self.etc, 'main.cf'), 'w') as f:
            f.write(text + extra_main_cf)
        with open(os.path.join(self.etc, 'master.cf'), 'w') as f:
            f.write(_master_cf(self.port))
        fmx.register_cleanup(self.stop)
        if start:
            self.start()

    def _env(self):
        env = dict(os.environ)
        env['MAIL_CONFIG'] = self.etc
        return env

    def _postfix(self, *args, timeout=120):     # hang guard: post-install is slow under load
        return subprocess.run(['postfix', '-c', self.etc] + list(args), env=self._env(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)

    def start(self, timeout=120):   # a hang guard: Postfix starts slowly on loaded cores
        # creates the queue directories with the right owners and modes
        r = self._postfix('check')
        if r.returncode != 0:
            raise RuntimeError('postfix check failed: %s' % r.stdout.decode(errors='replace'))
        self.out = os.path.join(self.dir, 'start-fg.out')
        fh = open(self.out, 'wb')
        self.proc = fmx.start_process(['postfix', '-c', self.etc, 'start-fg'],
                                      stdout=fh, stderr=subprocess.STDOUT, env=self._env())
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                break
            if fmx.port_open(self.port):
                return True
            time.sleep(0.1)
        raise RuntimeError('postfix did not start (rc=%s): %s\n%s' % (
            self.proc.poll(), open(self.out, 'rb').read().decode(errors='replace'),
            self.maillog()))

    def greeting(self):
        """The 220 greeting of its smtpd (a Reply), proof that a Postfix is
        what listens on self.port."""
        try:
            c = fmx.SmtpClient(self.port, timeout=30)
        except OSError as e:
            fmx.diag('postfix greeting: connect to %d: %s' % (self.port, e))
            return fmx.Reply(None, [], b'', str(e))
        try:
            return c.greeting()
        except Exception as e:     # noqa: B902 - a failed check, not a crash
            fmx.diag('postfix greeting on %d: %r' % (self.port, e))
            return fmx.Reply(None, [], b'', repr(e))
        finally:
            try:
                c.quit()
            except Exception:      # noqa: B902
                pass
            c.close()

    def maillog(self):
        try:
            with open(self.maillog_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def delivered(self):
        return sorted(glob.glob(os.path.join(self.maildir, 'new', '*')))

    def wait_mail(self, n=1, timeout=15):
        fmx.wait_for(lambda: len(self.delivered()) >= n, timeout, 0.1)
        return self.delivered()

    def queue_files(self):
        """Messages still in the queue (not yet delivered)."""
        out = []
        for sub in ('incoming', 'active', 'deferred', 'hold', 'maildrop'):
            for root, _dirs, files in os.walk(os.path.join(self.dir, 'queue', sub)):
                out += [os.path.join(root, f) for f in files]
        return out

    def stop(self):
        if self.proc is None:
            return
        p, self.proc = self.proc, None
        if p.poll() is None:
            try:
                self._postfix('stop', timeout=20)
            except Exception:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(timeout=5)
        # daemons that outlive the master (they exit on their own when the
        # master's status pipe closes) are re-parented to the test process:
        # wait a moment for them, fmx's exit cleanup kills the rest.
        fmx.wait_for(lambda: not self._leftovers(), 5, 0.1)
        for pid in self._leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def _leftovers(self):
        """pids of live (non-zombie) processes whose MAIL_CONFIG is ours."""
        pids = []
        want = ('MAIL_CONFIG=' + self.etc).encode()
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/environ' % d, 'rb') as f:
                    env = f.read().split(b'\0')
                with open('/proc/%s/stat' % d) as f:
                    state = f.read().rsplit(')', 1)[1].split()[0]
            except OSError:
                continue
            if want in env and state != 'Z':
                pids.append(int(d))
        # reap the zombies that are ours
        mine = set(p.pid for p in fmx._procs)
        for k in fmx._children_of(os.getpid()):
            if k in mine:
                continue
            try:
                os.waitpid(k, os.WNOHANG)
            except ChildProcessError:
                pass
        return pids
