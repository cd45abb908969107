"""fakedns_spf.py - a real DNS server on loopback serving the zonedata of
an RFC 7208 test-suite scenario (openspf.org suite, as shipped in
Debian's python3-spf: /usr/share/doc/python3-spf/rfc7208-tests.yml.gz).

    from fakedns_spf import SpfDNS, load_suite
    for scenario in load_suite():          # dicts: description, tests, zonedata
        dns = SpfDNS(scenario['zonedata']).start()
        dns.address                        # "127.0.0.1@PORT" for --dns
        ...
        dns.stop()

The answers follow the suite's reference driver (testspf.py in the same
package), which is what the expected results were written against:

  - "SPF" (type 99) records are also served as TXT when the name has no
    TXT entry at all ("auto-magic duplication", see the suite's header);
    "TXT: NONE" stops that and serves no TXT;
  - a bare "TIMEOUT" entry makes every type not listed before it time
    out (no reply at all); "TYPE: TIMEOUT" does it for that type only;
  - a name that is not in the zone gets NXDOMAIN, unless it starts with
    "error.", which is a temporary error (SERVFAIL here);
  - a name with entries but none of the asked type gets NODATA;
  - CNAMEs are followed (as a recursive resolver would), loops stop;
  - TXT values are str or lists of str (several strings in one record),
    encoded as UTF-8; strings over 255 octets are split.

Extends fakedns.FakeDNS (same start/stop/address/queries); only the
resolver differs.
"""
import gzip
import socket

from dnslib import A, AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from fakedns import FakeDNS

SUITE = '/usr/share/doc/python3-spf/rfc7208-tests.yml.gz'

_SPF_TYPE = 99


def load_suite(path=SUITE):
    """The scenarios of the YAML suite, in file order."""
    import yaml
    with gzip.open(path, 'rb') as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _norm(name):
    return str(name).rstrip('.').lower()


def _strings(v):
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    return [str(v)]


def build_zone(zonedata):
    """{name: [entry, ...]} with entry 'TIMEOUT' or (type, value)."""
    zone = {}
    for name, recs in zonedata.items():
        out = []
        has_txt = False
        spf = []
        for r in recs or []:
            if isinstance(r, str):
                out.append(r)               # 'TIMEOUT'
                continue
            for t, v in r.items():
                if t in ('TXT', 'SPF'):
                    v = _strings(v)
                    if t == 'TXT':
                        has_txt = True
                    if v == ['NONE']:
                        continue
                    if t == 'SPF':
                        spf.append(v)
                if v == 'TIMEOUT':
                    out.append((t, 'TIMEOUT'))
                    continue
                out.append((t, v))
        if not has_txt:
            out += [('TXT', v) for v in spf]
        zone[_norm(name)] = out
    return zone


def _rdata(t, v):
    if t in ('TXT', 'SPF'):
        parts = []
        for s in v:
            b = s.encode('utf-8')
            parts += [b[i:i + 255] for i in range(0, len(b), 255)] or [b'']
        return TXT(parts) if v else TXT([])
    if t == 'A':
        return A(v)
    if t == 'AAAA':
        return AAAA(socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, v)))
    if t == 'MX':
        return MX(str(v[1]), int(v[0]))
    if t == 'PTR':
        return PTR(v)
    if t == 'CNAME':
        return CNAME(v)
    raise ValueError('type %s' % t)


_QTYPES = {'A': QTYPE.A, 'AAAA': QTYPE.AAAA, 'TXT': QTYPE.TXT, 'MX': QTYPE.MX,
           'PTR': QTYPE.PTR, 'CNAME': QTYPE.CNAME, 'SPF': _SPF_TYPE}


class _SpfResolver(BaseResolver):
    def __init__(self, owner):
        self.owner = owner

    def _lookup(self, name, rname, qtype, reply, seen):
        """Add the answers for (name, qtype), owned by rname (the wire
        name, kept as is); returns None, 'TIMEOUT', 'SERVFAIL' or
        'NXDOMAIN'."""
        entries = self.owner.zone.get(name)
        if entries is None:
            if name.startswith('error.'):
                return 'SERVFAIL'
            return 'NXDOMAIN'
        found = False
        for e in entries:
            if e == 'TIMEOUT':
                if not found:
                    return 'TIMEOUT'
                break
            t, v = e
            if t == 'CNAME' and qtype != 'CNAME':
                reply.add_answer(RR(rname, QTYPE.CNAME, rdata=_rdata(t, v), ttl=60))
                target = _norm(v)
                if target in seen or len(seen) > 10:
                    return None
                seen.add(target)
                r = self._lookup(target, target, qtype, reply, seen)
                return None if r == 'NXDOMAIN' else r
            if t != qtype:
                continue
            found = True
            if v == 'TIMEOUT':
                return 'TIMEOUT'
            reply.add_answer(RR(rname, _QTYPES[t], rdata=_rdata(t, v), ttl=60))
        return None

    def resolve(self, request, handler):
        reply = request.reply()
        # The raw labels: dnslib's text form escapes blanks and the like.
        qname = '.'.join(l.decode('latin-1') for l in request.q.qname.label).lower()
        qt = request.q.qtype
        qtype = 'SPF' if qt == _SPF_TYPE else QTYPE.get(qt, str(qt))
        with self.owner.lock:
            self.owner.queries.append((qname, qtype))
        try:
            r = self._lookup(qname, request.q.qname, qtype, reply, {qname})
        except Exception:           # a value dnslib cannot encode
            r = 'SERVFAIL'
        if r == 'TIMEOUT':
            if self.owner.timeout_servfail:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            return None
        if r == 'SERVFAIL':
            reply.header.rcode = RCODE.SERVFAIL
        elif r == 'NXDOMAIN':
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _QuietHandler(DNSHandler):
    """dnslib sends nothing when the resolver returns None (a timeout),
    by failing inside its handler; keep that silent."""

    def handle(self):
        try:
            DNSHandler.handle(self)
        except AttributeError:
            pass


class SpfDNS(FakeDNS):
    """FakeDNS serving suite zonedata.  timeout_servfail=True answers the
    suite's TIMEOUT with SERVFAIL instead of silence (same temperror,
    no waiting for the resolver's timeout)."""

    def __init__(self, zonedata, timeout_servfail=False):
        FakeDNS.__init__(self, {})
        self.zone = build_zone(zonedata)
        self.timeout_servfail = timeout_servfail

    def start(self):
        for _ in range(20):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
            s.close()
            try:
                quiet = DNSLogger(log='-request,-reply,-truncated,-error,-recv,-send,-data')
                udp = DNSServer(_SpfResolver(self), port=port, address='127.0.0.1',
                                logger=quiet, handler=_QuietHandler)
                tcp = DNSServer(_SpfResolver(self), port=port, address='127.0.0.1',
                                tcp=True, logger=quiet, handler=_QuietHandler)
            except OSError:
                continue
            self.port = port
            self.servers = [udp, tcp]
            for srv in self.servers:
                srv.start_thread()
            return self
        raise RuntimeError('fakedns_spf: no free port')
