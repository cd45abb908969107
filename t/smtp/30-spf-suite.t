#!/usr/bin/python3
# RFC 7208 conformance: the openspf.org test suite (release 2014.04, as
# shipped by Debian's python3-spf) through `frontmx check`.  Each scenario
# gets its own DNS server on loopback serving its zonedata (fakedns_spf.py
# follows the suite's reference driver); each test runs
#   frontmx check -c CONF --dns 127.0.0.1@PORT --ip HOST --helo HELO
#                 --from MAILFROM --rcpt postmaster@example.com MSG
# and the result is read from the Received-SPF field frontmx prints, which
# must agree with the Authentication-Results spf= entry.  The policy maps
# no SPF result, so every message is relayed (exit 0).  The suite checks
# the MAIL FROM identity (HELO only for the null sender), so the filter
# runs with helo = false.
#
# The tests listed in REFUSED must get exactly that refusal; everything
# else must give one of the suite's results.  Nothing is skipped: a missing
# suite file or module, a DNS server that does not start, a resolver that
# never asks the test server (libunbound answers RFC 6303 reverse zones
# itself unless told to forward them) are failures, and the number of tests
# run is checked against the release's.
import concurrent.futures
import ipaddress
import os
import re
import sys
import traceback
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

PARALLEL = 4
SUITE_TESTS = 203           # in release 2014.04

# Tests frontmx answers differently, each pinned to exactly what happens.
# These four are refused by the SMTP session (501) before any filter runs:
# their MAIL FROM or EHLO argument is not RFC 5321 syntax.  RFC 7208
# evaluates identities the SMTP server accepted (2.2-2.4), and for a
# malformed domain check_host() itself only gives "none" (4.3), no SPF
# verdict; refusing the command is a stronger, earlier answer.
# t/unit/test_spf.c feeds the same inputs to the filter through the API
# and gets the suite's results.
REFUSED = {
    'toolonglabel': ('MAIL', '64-octet label: RFC 1035 2.3.4, RFC 5321 4.1.2'),
    'emptylabel': ('MAIL', 'empty labels are no RFC 5321 4.1.2 Domain'),
    'invalid-domain-long-via-macro': ('EHLO', 'EHLO takes a Domain or '
                                      'address-literal, RFC 5321 4.1.1.1'),
    'invalid-hello-macro': ('EHLO', 'EHLO argument with a blank, RFC 5321 4.1.1.1'),
}

DOT_STRING = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def smtp_mailbox(addr):
    """The suite's <sender> as an RFC 5321 4.1.2 Mailbox: a local part that
    is no Dot-string travels as a Quoted-string ("Macro Error"@..., and the
    empty local part of nolocalpart as ""@...)."""
    local, at, domain = addr.rpartition('@')
    if not at or DOT_STRING.match(local):
        return addr
    return '"%s"@%s' % (local.replace('\\', '\\\\').replace('"', '\\"'), domain)

CONF = """
hostname = "mx.test.example";
listen = ( { address = "127.0.0.1:1"; } );
upstream = { address = "127.0.0.1:1"; };
relay = { networks = [ "0.0.0.0/0", "::/0" ]; };
timeouts = { dns = 5; };
filters = ( { name = "spf"; timeout = 30; options = { helo = false; }; } );
"""

MESSAGE = (b'From: suite@example.com\r\nTo: postmaster@example.com\r\n'
           b'Subject: RFC 7208 suite\r\n\r\nbody\r\n')


def run_one(conf, msg, dns, t):
    """(exit code, stdout, stderr, Received-SPF result, A-R spf= result)."""
    try:
        return _run_one(conf, msg, dns, t)
    except Exception:           # reported by the caller, not fatal to the run
        return None, '', traceback.format_exc(), None, None


def _run_one(conf, msg, dns, t):
    rc, out, err = frontmx_check(conf, ip=str(t['host']), helo=str(t['helo']),
                                 sender=smtp_mailbox(str(t['mailfrom'])),
                                 rcpts=['postmaster@example.com'],
                                 path=msg, extra=['--dns', dns.address], timeout=60)
    m = re.search(r'(?m)^Received-SPF: (\w+)', out)
    a = re.search(r'(?m)\bspf=(\w+)', out)
    got = m.group(1) if m else None
    return rc, out, err, got, a.group(1) if a else None


def reverse_name(host):
    try:
        return ipaddress.ip_address(host).reverse_pointer.lower()
    except ValueError:
        return None


def main():
    try:
        from fakedns_spf import SpfDNS, load_suite, SUITE
        scenarios = load_suite()
    except (ImportError, OSError) as e:
        ok(False, 'RFC 7208 suite loaded (python3-spf, python3-yaml: make deps): %s' % e)
        done()
        return
    is_(sum(len(sc['tests']) for sc in scenarios), SUITE_TESTS,
        'the suite has its %d tests' % SUITE_TESTS)
    d = tmpdir('fmx-spfsuite-')
    conf = os.path.join(d, 'frontmx.conf')
    msg = os.path.join(d, 'message.eml')
    with open(conf, 'w') as f:
        f.write(CONF)
    with open(msg, 'wb') as f:
        f.write(MESSAGE)
    rc, out = frontmx_t(conf)
    is_(rc, 0, 'suite configuration is valid')
    if rc != 0:
        diag(out)
        done()
        return

    total = passed = 0
    failures = []
    for sc in scenarios:
        tests = list(sc['tests'].items())
        try:
            dns = SpfDNS(sc.get('zonedata') or {}).start()
        except Exception:
            ok(False, '%s: DNS server for the scenario started' % sc['description'])
            diag(traceback.format_exc())
            total += len(tests)
            failures += [tid for tid, _ in tests]
            continue
        try:
            with concurrent.futures.ThreadPoolExecutor(PARALLEL) as ex:
                futs = [ex.submit(run_one, conf, msg, dns, t) for _, t in tests]
                results = [f.result() for f in futs]
        finally:
            dns.stop()
        asked = {q for q in dns.queries}
        for (tid, t), (rc, out, err, got, ar) in zip(tests, results):
            want = t['result'] if isinstance(t['result'], list) else [t['result']]
            good = got in want and ar == got and rc == 0
            total += 1
            passed += good
            name = '%s: %s (%s) -> %s' % (sc['description'], tid, t['spec'], '/'.join(want))
            no_sanitizer(err, name)
            if tid in REFUSED:
                cmd, why = REFUSED[tid]
                ok(rc == 2 and re.search(r'(?m)^verdict: reject 501 ', out) is not None,
                   '%s: %s refused with 501 (%s)' % (name, cmd, why))
            elif ok(good, name):
                continue
            failures.append(tid)
            rev = reverse_name(str(t['host']))
            if rev is not None and (rev, 'PTR') not in asked and rev in {
                    k.lower() for k in sc.get('zonedata') or {}}:
                diag('the resolver never asked the test server for %s (RFC 6303 zone not '
                     'forwarded?)' % rev)
            diag('got %s (A-R spf=%s, exit %s); host=%s helo=%r mailfrom=%r'
                 % (got, ar, rc, t['host'], t['helo'], t['mailfrom']))
            if tid not in REFUSED:
                diag('stdout: ' + out[-1500:])
                diag('stderr: ' + err[-1500:])
    diag('RFC 7208 suite (%s): %d/%d passed' % (SUITE, passed, total))
    if failures:
        diag('not passed: ' + ', '.join(failures))
    done()


# A hang guard only: ~200 `frontmx check` runs take 3 minutes alone under
# ASan on a loaded 2-core machine, longer inside a parallel `make test`.
run(main, timeout=900)
