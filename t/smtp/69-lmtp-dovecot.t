#!/usr/bin/python3
# LMTP upstream against a real Dovecot LMTP listener (dovecot-lmtpd, README
# "LMTP upstream (Dovecot)").  The test starts `dovecot -F` with a private
# configuration in a temporary directory: base_dir, state and log there,
# protocols = lmtp only, an LMTP listener on 127.0.0.1:PORT and a unix
# socket, a passwd-file userdb (alice, bob, carol; anyone else unknown),
# auth_username_format = %Ln so "bob@example.com" is user bob, and
# mail_location = maildir under the temporary directory.  As root (CI),
# Dovecot's own processes run as its packaged users and mail is stored as
# nobody; as anyone else, everything runs as that user.
#
# Through frontmx with upstream.address "lmtp:127.0.0.1:PORT", then
# "lmtp:unix:PATH": one recipient gets exactly one copy; three recipients
# give 250 for the first and 452 4.5.3 for the others, the client sends
# those again one per transaction, and each Maildir holds exactly one
# copy; an unknown user gets Dovecot's 550 relayed, never 250, and no
# copy anywhere.  With a module that adds recipients (t/plugins/rcpt_edit.c
# adds carol and the unknown nobody): the client's 250 is alice's, carol
# gets one copy in a transaction of her own, nobody's 550 is only logged.
import os
import pwd
import shutil
import subprocess
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx import port_open, register_cleanup, start_process  # noqa: E402
from fmx_filters import plugin, require_modules  # noqa: E402

DOVECOT = '/usr/sbin/dovecot'
LMTP = '/usr/lib/dovecot/lmtp'
USERS = ('alice', 'bob', 'carol')
SENDER = 'sender@example.org'

CONF = '''
base_dir = %(dir)s/run
state_dir = %(dir)s/state
log_path = %(dir)s/dovecot.log
info_log_path = %(dir)s/dovecot.log
ssl = no
protocols = lmtp
listen = 127.0.0.1
default_internal_user = %(internal)s
default_login_user = %(login)s
first_valid_uid = %(uid)d
last_valid_uid = 0
mail_location = maildir:%(dir)s/mail/%%n/Maildir
auth_username_format = %%Ln
passdb {
  driver = passwd-file
  args = %(dir)s/users
}
userdb {
  driver = passwd-file
  args = %(dir)s/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %(port)d
  }
  unix_listener lmtp {
    path = %(dir)s/lmtp.sock
    mode = 0666
  }
}
lmtp_save_to_detail_mailbox = no
'''


class Dovecot:
    def __init__(self):
        self.dir = tmpdir('fmx-dovecot-')
        self.port = free_port()
        self.sock = os.path.join(self.dir, 'lmtp.sock')
        if os.getuid() == 0:
            # Dovecot refuses to run its helpers as root; the packaged
            # users exist wherever dovecot-core is installed.
            internal, login = 'dovecot', 'dovenull'
            uid = gid = pwd.getpwnam('nobody').pw_uid
        else:
            internal = login = pwd.getpwuid(os.getuid()).pw_name
            uid, gid = os.getuid(), os.getgid()
        for d in ('run', 'state', 'mail'):
            os.mkdir(os.path.join(self.dir, d))
        os.chmod(self.dir, 0o755)
        os.chown(os.path.join(self.dir, 'mail'), uid, gid)
        with open(os.path.join(self.dir, 'users'), 'w') as f:
            for u in USERS:
                f.write('%s::%d:%d::%s/mail/%s::\n' % (u, uid, gid, self.dir, u))
        self.conf = os.path.join(self.dir, 'dovecot.conf')
        with open(self.conf, 'w') as f:
            f.write(CONF % {'dir': self.dir, 'port': self.port, 'internal': internal,
                            'login': login, 'uid': uid})
        self.proc = start_process(['/usr/sbin/dovecot', '-F', '-c', self.conf],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        register_cleanup(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self):
        try:
            with open(os.path.join(self.dir, 'dovecot.log'), errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def copies(self, user):
        """Messages in user's Maildir (new/ and cur/)."""
        n = 0
        for sub in ('new', 'cur'):
            d = os.path.join(self.dir, 'mail', user, 'Maildir', sub)
            if os.path.isdir(d):
                n += len(os.listdir(d))
        return n

    def all_copies(self):
        root = os.path.join(self.dir, 'mail')
        return {u: self.copies(u) for u in sorted(os.listdir(root))}


def body(tag):
    return ('From: %s\r\nTo: list@example.com\r\nSubject: lmtp %s\r\n'
            'Message-ID: <%s@client.example>\r\n\r\nthrough frontmx to Dovecot LMTP (%s)\r\n'
            % (SENDER, tag, tag, tag)).encode()


def send_one(c, rcpt, tag):
    res = c.transaction(SENDER, [rcpt], body(tag))
    reply_is(res['rcpt'][0], 250, None, '%s: RCPT <%s> 250' % (tag, rcpt))
    reply_is(res['dot'], 250, None, '%s: 250 after the final dot' % tag)


def round_trip(dv, address, form):
    mx = Frontmx(address, name='lmtp-' + form)
    before = dv.all_copies()

    def gained(u):
        return dv.copies(u) - before.get(u, 0)

    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start('client.example'), 250, None, '%s: EHLO' % form)

    # one recipient, one copy
    send_one(c, 'alice@example.com', form + ' one')
    is_(gained('alice'), 1, '%s: alice has exactly one copy' % form)

    # three recipients: the first now, the others 452 4.5.3 and again alone
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, '%s three: MAIL' % form)
    reply_is(c.cmd('RCPT TO:<alice@example.com>'), 250, None, '%s three: RCPT alice 250' % form)
    for u in ('bob', 'carol'):
        reply_is(c.cmd('RCPT TO:<%s@example.com>' % u), 452, '4.5.3',
                 '%s three: RCPT %s 452 4.5.3' % (form, u))
    d, dot = c.data(body(form + ' three'))
    reply_is(dot, 250, None, '%s three: 250 for alice' % form)
    for u in ('bob', 'carol'):
        send_one(c, '%s@example.com' % u, '%s three, retry %s' % (form, u))
    is_(gained('alice'), 2, '%s: alice has her two messages, once each' % form)
    is_(gained('bob'), 1, '%s: bob has exactly one copy' % form)
    is_(gained('carol'), 1, '%s: carol has exactly one copy' % form)

    # an unknown user: Dovecot's 550 relayed, never 250
    res = c.transaction(SENDER, ['nobody@example.com'], body(form + ' unknown'))
    r = res['rcpt'][0]
    ok(r.code is not None and r.code // 100 == 5,
       '%s unknown: Dovecot\'s 5xx relayed (%r)' % (form, r))
    like(r.text, r"(?i)user doesn't exist|unknown user", '%s unknown: Dovecot\'s text' % form)
    ok(res['dot'] is None, '%s unknown: no DATA without a recipient' % form)
    reply_is(c.cmd('RSET'), 250, None, '%s unknown: RSET' % form)

    # an unknown user behind a known one: only the known one goes through
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, '%s mixed: MAIL' % form)
    r = c.cmd('RCPT TO:<nobody@example.com>')
    ok(r.code // 100 == 5, '%s mixed: unknown first, 5xx (%r)' % (form, r))
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 250, None, '%s mixed: bob 250' % form)
    d, dot = c.data(body(form + ' mixed'))
    reply_is(dot, 250, None, '%s mixed: 250 for bob' % form)
    is_(gained('bob'), 2, '%s mixed: bob got that one once' % form)
    ok('nobody' not in dv.all_copies(), '%s: no Maildir for the unknown user' % form)
    c.quit()
    mx.finish()
    like(mx.log(), r'upstream lmtp rcpt=1/1 reply="250', '%s: frontmx logs the per-recipient reply' % form)


def added(dv):
    """A module adds carol (known) and nobody (unknown) to alice's message."""
    if not require_modules(plugin('rcpt_edit')):
        return
    mx = Frontmx('lmtp:127.0.0.1:%d' % dv.port, name='lmtp-added',
                 conf={'filters': [{'name': 'rcpt_edit', 'module': plugin('rcpt_edit'),
                                    'options': {'add': 'carol@example.com',
                                                'add2': 'nobody@example.com'}}]})
    before = dv.all_copies()
    c = SmtpClient(mx.port, timeout=60)
    reply_is(c.start('client.example'), 250, None, 'added: EHLO')
    send_one(c, 'alice@example.com', 'added')
    # the session answers NOOP once the added recipients are done
    reply_is(c.cmd('NOOP'), 250, None, 'added: NOOP after the dot')
    c.quit()
    mx.finish()
    after = dv.all_copies()
    is_(after.get('alice', 0) - before.get('alice', 0), 1, 'added: alice has one copy')
    is_(after.get('carol', 0) - before.get('carol', 0), 1, 'added: carol has one copy')
    ok('nobody' not in after, 'added: no Maildir for the unknown added user')
    log = mx.log()
    like(log, r'added rcpt=<carol@example\.com> result=relayed reply="250',
         'added: carol\'s 250 logged')
    like(log, r'added rcpt=<nobody@example\.com> result=rejected reply="5',
         'added: the unknown added user\'s 5xx logged, the client still has 250')


def main():
    if not (os.access(DOVECOT, os.X_OK) and os.access(LMTP, os.X_OK)):
        skip('Dovecot LMTP', 'dovecot-lmtpd is not installed (make deps)')
        return
    dv = Dovecot()
    if not ok(wait_for(lambda: port_open(dv.port) and os.path.exists(dv.sock), 30),
              'dovecot listens on 127.0.0.1:%d and %s' % (dv.port, dv.sock)):
        diag(dv.log())
        return
    round_trip(dv, 'lmtp:127.0.0.1:%d' % dv.port, 'tcp')
    round_trip(dv, 'lmtp:unix:%s' % dv.sock, 'unix')
    added(dv)
    log = dv.log()
    unlike(log, r'(?m)(Error|Fatal|Panic):', 'dovecot logged no error')
    if failed_count():
        diag(log[-4000:])
    shutil.rmtree(os.path.join(dv.dir, 'run'), ignore_errors=True)


run(main, timeout=180)
