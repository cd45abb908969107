"""dmarc_util.py - helpers for the DMARC black-box tests (t/smtp/33-dmarc*.t).

    from dmarc_util import *

    key, txt = dkim_keypair()                  # RSA 2048: PEM (PKCS#1), and the TXT record
                                               # "v=DKIM1; k=rsa; p=..." as a list of
                                               # character-strings of <= 255 bytes
    msg = message('Bob <bob@a.example>', 'subject', 'id@a.example')
    msg = dkim_sign(msg, 'a.example', 'sel', key)   # DKIM-Signature prepended (dkimpy)
    auth_results(data, 'mx.test.example')      # our Authentication-Results, unfolded
    method_result(data, 'dmarc', authserv)     # ('pass', 'header.from=a.example') or None

Keys come from the openssl command line (a `make deps` package), so no
Python crypto module beyond dkimpy is needed.
"""

import base64
import os
import re
import subprocess

import dkim

from fmx import tmpdir

__all__ = ['txt_strings', 'dkim_keypair', 'dkim_sign', 'message', 'auth_results', 'method_result']


def txt_strings(text, size=255):
    """text cut into DNS character-strings (RFC 1035 3.3: at most 255 bytes
    each), the list form FakeDNS takes for one TXT record."""
    return [text[i:i + size] for i in range(0, len(text), size)] or ['']


def dkim_keypair(bits=2048):
    """A new RSA key: (private key PEM bytes, DKIM TXT record as a list of
    character-strings; a 2048-bit key does not fit in one)."""
    d = tmpdir('fmx-dkimkey-')
    path = os.path.join(d, 'key.pem')
    subprocess.run(['openssl', 'genrsa', '-traditional', '-out', path, str(bits)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    der = subprocess.run(['openssl', 'rsa', '-in', path, '-pubout', '-outform', 'DER'],
                         check=True, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout
    with open(path, 'rb') as f:
        pem = f.read()
    return pem, txt_strings('v=DKIM1; k=rsa; p=' + base64.b64encode(der).decode())


def dkim_sign(msg, domain, selector, key):
    """msg (CRLF bytes) with a relaxed/relaxed rsa-sha256 DKIM-Signature in front."""
    sig = dkim.sign(msg, selector.encode(), domain.encode(), key,
                    canonicalize=(b'relaxed', b'relaxed'),
                    include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
    return sig + msg


def message(from_, subject, msgid, to='bob@example.com', extra=b'',
            body=b'Hello,\r\nthis is a DMARC test.\r\n'):
    """A small CRLF message; extra is raw header lines (CRLF-terminated)."""
    if isinstance(from_, str):
        from_ = from_.encode()
    head = b''
    if from_:
        head += b'From: ' + from_ + b'\r\n'
    head += (b'To: ' + to.encode() + b'\r\n'
             b'Subject: ' + subject.encode() + b'\r\n'
             b'Date: Sun, 22 Nov 2026 18:00:00 +0000\r\n'
             b'Message-ID: <' + msgid.encode() + b'>\r\n')
    return head + extra + b'\r\n' + body


def _fields(data, name):
    i = data.find(b'\r\n\r\n')
    head = data if i < 0 else data[:i + 2]
    # Unfold (RFC 5322 2.2.3), then pick the fields by name.
    head = re.sub(rb'\r\n[ \t]+', b' ', head)
    out = []
    for line in head.split(b'\r\n'):
        k, sep, v = line.partition(b':')
        if sep and k.strip().lower() == name.lower():
            out.append(v.strip())
    return out


def auth_results(data, authserv):
    """Values of the Authentication-Results fields with our authserv-id, unfolded."""
    a = authserv.encode().lower()
    return [v for v in _fields(data, b'authentication-results')
            if v.lower().split(b';', 1)[0].strip() == a]


def method_result(data, method, authserv):
    """(result, rest) of the first `method=result ...` in our field, or None."""
    for v in auth_results(data, authserv):
        for part in v.split(b';')[1:]:
            # strip comments for the match, keep the properties
            text = re.sub(rb'\([^)]*\)', b' ', part).strip()
            m = re.match(rb'(?i)' + re.escape(method.encode()) + rb'\s*=\s*([a-z]+)\s*(.*)$',
                         text, re.S)
            if m:
                return m.group(1).decode().lower(), m.group(2).decode()
    return None
