"""postfix_smtpd.py - a private Postfix smtpd with STARTTLS for t/bench/run.

usage: /usr/bin/python3 t/bench/postfix_smtpd.py CERT KEY PORTFILE

Starts Postfix through t/lib/postfix.py (its own config, queue and data
directories in a temp dir under $TMPDIR, master in the foreground as our
child) on a free 127.0.0.1 port, with smtpd offering STARTTLS (security
level may) with CERT/KEY and every message discarded (discard(8)).  When
it accepts connections, writes "PORT DIR" (DIR: its temp dir, with queue/)
to PORTFILE; then waits
for SIGTERM/SIGINT (or the parent going away), stops Postfix and removes
the temp dir (unless FMX_KEEP is set).  Exit 0 after a clean stop, 1 when
Postfix did not come up.  Needs root, like postfix.py.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))

import fmx       # noqa: E402  (installs exit cleanup, subreaper)
import postfix   # noqa: E402

MAIN_CF = {
    # TLS, as a public MX would offer it
    'smtpd_tls_security_level': 'may',
    'smtpd_tls_loglevel': '0',
    'smtpd_tls_session_cache_database': '',
    'smtp_tls_security_level': 'none',
    # accept mail from loopback for example.com, throw it away
    'mydestination': '',
    'virtual_mailbox_domains': '',
    'relay_domains': 'example.com',
    'mynetworks': '127.0.0.0/8',
    'default_transport': 'discard:bench',
    'relay_transport': 'discard:bench',
    'local_transport': 'discard:bench',
    # enough smtpd processes for the bench's parallel sessions
    'default_process_limit': os.environ.get('BENCH_PF_PROCS', '100'),
}


class Stop(Exception):
    pass


def _stop(signum, frame):
    raise Stop()


def main():
    if len(sys.argv) != 4:
        sys.stderr.write('usage: postfix_smtpd.py CERT KEY PORTFILE\n')
        return 2
    cert, key, portfile = sys.argv[1:]
    os.environ['PATH'] = '/usr/sbin:/usr/bin:/sbin:/bin:' + os.environ.get('PATH', '')
    cf = dict(MAIN_CF, smtpd_tls_cert_file=cert, smtpd_tls_key_file=key)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _stop)
    parent = os.getppid()
    try:
        pf = postfix.Postfix(main_cf=cf)
    except Stop:
        return 0                # fmx._cleanup() below stops what was started
    except Exception as e:  # noqa: B902 - report why, exit non-zero
        sys.stderr.write('postfix_smtpd: %s\n' % e)
        return 1
    try:
        tmp = portfile + '.tmp'
        with open(tmp, 'w') as f:
            f.write('%d %s\n' % (pf.port, pf.dir))
        os.rename(tmp, portfile)
        sys.stdout.write('postfix_smtpd: Postfix smtpd on 127.0.0.1:%d, dir %s\n' % (pf.port, pf.dir))
        sys.stdout.flush()
        while os.getppid() == parent and pf.proc.poll() is None:
            time.sleep(0.5)
        if pf.proc.poll() is not None:
            sys.stderr.write('postfix_smtpd: Postfix master exited (%s)\n%s' % (
                pf.proc.poll(), pf.maillog()[-2000:]))
            return 1
    except Stop:
        pass
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)    # a second signal must not cut the stop short
    pf.stop()
    return 0


if __name__ == '__main__':
    rc = main()
    fmx._cleanup()          # stop Postfix and its daemons, remove the temp dir
    sys.stdout.flush()
    os._exit(rc)
