#!/usr/bin/python3
"""dkim_tool.py - dkimpy (python3-dkim) as the independent DKIM peer in tests.

Command line (used by t/unit/test_dkim.c):

    dkim_tool.py sign KEY.pem DOMAIN SELECTOR [--alg rsa-sha256|rsa-sha1|ed25519-sha256]
                 [--canon relaxed/simple] [--length] [--headers from,to,subject]
                 < message > signed-message
    dkim_tool.py verify [--key SELECTOR._domainkey.DOMAIN=FILE]... [--minkey N]
                 < message
        prints one line per DKIM-Signature: "RESULT d=DOMAIN s=SELECTOR a=ALG h=H"
        (RESULT pass or fail); exit 0 when every signature passed, 1 otherwise,
        2 when there is none.

Module (used by t/smtp/32-dkim*.t):

    from dkim_tool import sign, verify_all, key_record, DATA
    signed = sign(msg, 'rsa2048.pem', 'example.com', 'rsa')
    verify_all(msg, {'rsa._domainkey.example.com': key_record('rsa2048')})
        -> [(result, d, s, a, h), ...]

OpenDKIM, the other implementation (packages opendkim, opendkim-tools), run
offline in its test mode:

    opendkim_sign(msg, 'ed25519.pem', 'example.org', 'ed', alg='ed25519-sha256')
        -> msg with OpenDKIM's DKIM-Signature (opendkim -t, Mode s)
    opendkim_testmsg_sign(msg, 'rsa2048.pem', 'example.org', 'rsa')
        -> msg signed by opendkim-testmsg (it signs rsa-sha1)
    opendkim_verify(msg, {'rsa._domainkey.example.org': record})
        -> [(result, d, s, a), ...] from the Authentication-Results field
           OpenDKIM would add (TestPublicKeys instead of DNS)
    have_opendkim(), have_opendkim_testmsg()

Keys are the fixtures in t/smtp/data/dkim/ (see README there): NAME.pem is
the private key (PKCS#8, or PKCS#1 for rsa2048-pkcs1), NAME.txt the DNS
TXT record.  dkimpy wants Ed25519 private keys as the base64 32-byte seed;
sign() converts the PKCS#8 PEM (the seed is its last 32 octets).
"""
import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile

import dkim

DATA = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    '..', 'smtp', 'data', 'dkim'))


def key_path(name):
    return name if os.path.isabs(name) or os.sep in name else os.path.join(DATA, name)


def key_record(name):
    """The DNS TXT record (str) of fixture NAME (rsa2048, ed25519, ...)."""
    with open(key_path(name + '.txt') if not name.endswith('.txt') else key_path(name)) as f:
        return f.read().strip()


def _pem_seed(pem):
    body = b''.join(l for l in pem.splitlines() if l and not l.startswith(b'-----'))
    der = base64.b64decode(body)
    return base64.b64encode(der[-32:])


def sign(message, key, domain, selector, alg='rsa-sha256', canon='relaxed/relaxed',
         length=False, headers=None):
    """Return message (bytes, CRLF) with a DKIM-Signature field prepended."""
    with open(key_path(key), 'rb') as f:
        pem = f.read()
    algb = alg.encode()
    privkey = _pem_seed(pem) if algb == b'ed25519-sha256' else pem
    hc, _, bc = canon.partition('/')
    kw = {}
    if headers:
        kw['include_headers'] = [h.encode() for h in headers]
    sig = dkim.sign(message, selector.encode(), domain.encode(), privkey,
                    canonicalize=(hc.encode(), (bc or 'simple').encode()),
                    signature_algorithm=algb, length=length, linesep=b'\r\n', **kw)
    return sig + message


def _dnsfunc(records):
    recs = {k.lower().rstrip('.'): v for k, v in records.items()}

    def f(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        v = recs.get(name.lower().rstrip('.'))
        if v is None:
            return None
        return v.encode() if isinstance(v, str) else v
    return f


def _sig_tags(value):
    tags = {}
    for part in re.sub(rb'\s+', b'', value).split(b';'):
        if b'=' in part:
            k, v = part.split(b'=', 1)
            tags[k.decode()] = v.decode(errors='replace')
    return tags


def signatures(message):
    """The values of the DKIM-Signature fields, in order (unfolded bytes)."""
    head = message.split(b'\r\n\r\n', 1)[0]
    out = []
    for m in re.finditer(rb'^DKIM-Signature:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)', head,
                         re.I | re.M):
        out.append(m.group(1))
    return out


def verify_all(message, records, minkey=1024):
    """Verify every DKIM-Signature: [(result, d, s, a, h), ...]."""
    out = []
    sigs = signatures(message)
    for i, value in enumerate(sigs):
        d = dkim.DKIM(message, minkey=minkey)
        try:
            ok = d.verify(idx=i, dnsfunc=_dnsfunc(records))
        except dkim.DKIMException:
            ok = False
        t = _sig_tags(value)
        out.append(('pass' if ok else 'fail', t.get('d', ''), t.get('s', ''),
                    t.get('a', ''), t.get('h', '')))
    return out


# ---------------------------------------------------------------- OpenDKIM

OPENDKIM = shutil.which('opendkim') or ('/usr/sbin/opendkim'
                                         if os.access('/usr/sbin/opendkim', os.X_OK) else None)
TESTMSG = shutil.which('opendkim-testmsg') or (
    '/usr/sbin/opendkim-testmsg' if os.access('/usr/sbin/opendkim-testmsg', os.X_OK) else None)


def have_opendkim():
    return OPENDKIM is not None


def have_opendkim_testmsg():
    return TESTMSG is not None


def _private_copy(d, key):
    # OpenDKIM refuses keys others can read (RequireSafeKeys).
    dst = os.path.join(d, os.path.basename(key_path(key)))
    shutil.copyfile(key_path(key), dst)
    os.chmod(dst, 0o600)
    return dst


def _crlf(b):
    return re.sub(rb'\r?\n', b'\r\n', b)


def opendkim_sign(message, key, domain, selector, alg='rsa-sha256',
                  canon='relaxed/relaxed'):
    """message with the DKIM-Signature OpenDKIM's milter code makes for it."""
    with tempfile.TemporaryDirectory(prefix='fmx-odkim-') as d:
        conf = os.path.join(d, 'opendkim.conf')
        msgf = os.path.join(d, 'msg.eml')
        with open(conf, 'w') as f:
            f.write('Mode s\nSyslog no\nRequireSafeKeys no\nDomain %s\nSelector %s\nKeyFile %s\n'
                    'SignatureAlgorithm %s\nCanonicalization %s\n'
                    % (domain, selector, _private_copy(d, key), alg, canon))
        with open(msgf, 'wb') as f:
            f.write(message)
        p = subprocess.run([OPENDKIM, '-x', conf, '-t', msgf], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    m = re.search(rb'^(DKIM-Signature:.*?\n)(?![ \t])', p.stdout, re.S | re.M)
    if p.returncode != 0 or m is None:
        raise RuntimeError('opendkim -t did not sign: %r' % p.stdout[-500:])
    return _crlf(m.group(1)) + message


def opendkim_testmsg_sign(message, key, domain, selector):
    """message signed by opendkim-testmsg (libopendkim's default: rsa-sha1)."""
    with tempfile.TemporaryDirectory(prefix='fmx-odkim-') as d:
        p = subprocess.run([TESTMSG, '-C', '-d', domain, '-s', selector,
                            '-k', _private_copy(d, key)], input=message,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0 or not p.stdout.startswith(b'DKIM-Signature:'):
        raise RuntimeError('opendkim-testmsg failed: %r' % p.stderr[-500:])
    return _crlf(p.stdout)


def opendkim_verify(message, records):
    """OpenDKIM's verdict on each signature of message, read from the
    Authentication-Results field its test mode prints: [(result, d, s, a)]."""
    out = []
    text = opendkim_verify_raw(message, records)
    m = re.search(r"hname='Authentication-Results' hvalue='([^']*)'", text)
    for part in (m.group(1).split(';') if m else []):
        r = re.search(r'\bdkim=(\w+)', part)
        if not r:
            continue
        tags = dict(re.findall(r'\bheader\.(\w)=(\S+)', part))
        out.append((r.group(1), tags.get('d', ''), tags.get('s', ''), tags.get('a', '')))
    return out


def opendkim_verify_raw(message, records):
    """OpenDKIM's test-mode output (-vv) for message."""
    with tempfile.TemporaryDirectory(prefix='fmx-odkim-') as d:
        keys = os.path.join(d, 'keys')
        conf = os.path.join(d, 'opendkim.conf')
        msgf = os.path.join(d, 'msg.eml')
        with open(keys, 'w') as f:
            for name, rec in records.items():
                f.write('%s %s\n' % (name, rec))
        with open(conf, 'w') as f:
            f.write('Mode v\nSyslog no\nTestPublicKeys %s\nAuthservID test.invalid\n'
                    'AlwaysAddARHeader yes\n' % keys)
        with open(msgf, 'wb') as f:
            f.write(message)
        p = subprocess.run([OPENDKIM, '-vv', '-x', conf, '-t', msgf], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return p.stdout.decode('utf-8', 'replace')


def _main(argv):
    if len(argv) < 2 or argv[1] not in ('sign', 'verify'):
        sys.stderr.write(__doc__)
        return 64
    data = sys.stdin.buffer.read()
    if argv[1] == 'sign':
        args = argv[2:]
        pos, opts, i = [], {}, 0
        while i < len(args):
            a = args[i]
            if a == '--length':
                opts['length'] = True
            elif a in ('--alg', '--canon', '--headers'):
                i += 1
                opts[a[2:]] = args[i]
            else:
                pos.append(a)
            i += 1
        if len(pos) != 3:
            sys.stderr.write('sign: KEY DOMAIN SELECTOR\n')
            return 64
        headers = opts['headers'].split(',') if 'headers' in opts else None
        out = sign(data, pos[0], pos[1], pos[2], alg=opts.get('alg', 'rsa-sha256'),
                   canon=opts.get('canon', 'relaxed/relaxed'),
                   length=opts.get('length', False), headers=headers)
        sys.stdout.buffer.write(out)
        return 0
    records, minkey, args, i = {}, 1024, argv[2:], 0
    while i < len(args):
        if args[i] == '--key':
            name, _, path = args[i + 1].partition('=')
            records[name] = key_record(path)
            i += 2
        elif args[i] == '--minkey':
            minkey = int(args[i + 1])
            i += 2
        else:
            sys.stderr.write('verify: unknown argument %s\n' % args[i])
            return 64
    res = verify_all(data, records, minkey)
    for r in res:
        print('%s d=%s s=%s a=%s h=%s' % r)
    if not res:
        return 2
    return 0 if all(r[0] == 'pass' for r in res) else 1


if __name__ == '__main__':
    sys.exit(_main(sys.argv))
