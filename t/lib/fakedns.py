"""fakedns.py - a real DNS server on loopback for tests (dnslib).

    from fakedns import FakeDNS
    dns = FakeDNS({'example.com': [('TXT', 'v=spf1 ip4:192.0.2.0/24 -all')],
                   'mail.example.com': [('A', '192.0.2.7'), ('MX', (10, 'mx.example.com'))],
                   'broken.example': 'SERVFAIL', 'slow.example': 'TIMEOUT'})
    dns.start()            # UDP and TCP on 127.0.0.1:<free port>
    dns.address            # "127.0.0.1@PORT", for dns.forward / --dns
    dns.set(name, records) # change the zone while running
    dns.queries            # [(qname, qtype), ...] seen, for assertions
    dns.hold(name)         # answers for name wait until dns.release()
    dns.waiting(name)      # how many queries for name are being held
    dns.release()          # answer every held query now (and later ones)
    dns.release(name)      # only those for name (the others stay held)
    dns.answered(name)     # how many answers for name were sent
    dns.stop()

Names not in the zone get NXDOMAIN; names present without the asked type
get NOERROR with no answer (NODATA).  A TXT value may be a str or a list of
str (several character-strings in one record).  Names compare
case-insensitively (resolvers randomise case).
"""
import socket
import threading
import time

from dnslib import A, AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

_TYPES = {'A': (QTYPE.A, A), 'AAAA': (QTYPE.AAAA, AAAA), 'TXT': (QTYPE.TXT, TXT),
          'MX': (QTYPE.MX, MX), 'PTR': (QTYPE.PTR, PTR), 'CNAME': (QTYPE.CNAME, CNAME)}


def _norm(name):
    return name.rstrip('.').lower()


class _Resolver(BaseResolver):
    def __init__(self, owner):
        self.owner = owner

    def resolve(self, request, handler):
        reply = self._resolve(request)
        self.owner._answered(str(request.q.qname))
        return reply

    def _resolve(self, request):
        reply = request.reply()
        qname = str(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        with self.owner.lock:
            self.owner.queries.append((_norm(qname), qtype))
            held = _norm(qname) in self.owner.held
            if held:
                self.owner.nwaiting[_norm(qname)] = self.owner.nwaiting.get(_norm(qname), 0) + 1
        if held:
            # An answer outstanding for as long as the test wants: it
            # goes out (normally) when the test calls release().
            with self.owner.cond:
                self.owner.cond.wait_for(lambda: _norm(qname) not in self.owner.held, 30)
                self.owner.nwaiting[_norm(qname)] -= 1
        with self.owner.lock:
            entry = self.owner.zone.get(_norm(qname))
        if entry == 'TIMEOUT':
            # Say nothing for long enough that the resolver gives up; the
            # reply that finally goes out is too late to matter.
            self.owner.stopping.wait(30)
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if entry == 'SERVFAIL':
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rtype, value in entry:
            if rtype != qtype and not (rtype == 'CNAME' and qtype != 'CNAME'):
                continue
            code, cls = _TYPES[rtype]
            if rtype == 'TXT':
                parts = value if isinstance(value, list) else [value]
                parts = [p.encode() if isinstance(p, str) else p for p in parts]
                # A character-string holds 255 octets (RFC 1035 3.3): a
                # longer value (a 2048-bit DKIM key) becomes several.
                parts = [p[i:i + 255] for p in parts for i in range(0, max(len(p), 1), 255)]
                rdata = TXT(parts)
            elif rtype == 'MX':
                rdata = MX(value[1], value[0])
            else:
                rdata = cls(value)
            reply.add_answer(RR(qname, code, rdata=rdata, ttl=60))
        return reply


class FakeDNS:
    def __init__(self, zone=None):
        self.zone = {}
        self.lock = threading.Lock()
        self.queries = []
        for k, v in (zone or {}).items():
            self.zone[_norm(k)] = v
        self.port = None
        self.servers = []
        self.stopping = threading.Event()
        self.held = set()
        self.nwaiting = {}
        self.nanswered = {}
        self.cond = threading.Condition(self.lock)

    def set(self, name, records):
        with self.lock:
            if records is None:
                self.zone.pop(_norm(name), None)
            else:
                self.zone[_norm(name)] = records

    def hold(self, name):
        with self.lock:
            self.held.add(_norm(name))

    def waiting(self, name):
        with self.lock:
            return self.nwaiting.get(_norm(name), 0)

    def release(self, name=None):
        with self.cond:
            if name is None:
                self.held.clear()
            else:
                self.held.discard(_norm(name))
            self.cond.notify_all()

    def _answered(self, qname):
        with self.lock:
            self.nanswered[_norm(qname)] = self.nanswered.get(_norm(qname), 0) + 1

    def answered(self, name):
        # counted as the answer is handed to dnslib, which sends it at once
        with self.lock:
            return self.nanswered.get(_norm(name), 0)

    def start(self):
        # Same port for UDP and TCP (large TXT answers fall back to TCP).
        for _ in range(20):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
            s.close()
            try:
                quiet = DNSLogger(log='-request,-reply,-truncated,-error,-recv,-send,-data')
                udp = DNSServer(_Resolver(self), port=port, address='127.0.0.1',
                                logger=quiet)
                tcp = DNSServer(_Resolver(self), port=port, address='127.0.0.1',
                                tcp=True, logger=quiet)
            except OSError:
                continue
            self.port = port
            self.servers = [udp, tcp]
            for srv in self.servers:
                # Handler threads may be parked in a TIMEOUT: never wait for them.
                srv.server.daemon_threads = True
                srv.server.block_on_close = False
                srv.start_thread()
            return self
        raise RuntimeError('fakedns: no free port')

    @property
    def address(self):
        return '127.0.0.1@%d' % self.port

    def stop(self):
        self.stopping.set()
        self.release()
        for srv in self.servers:
            try:
                srv.stop()
                srv.server.server_close()
            except Exception:
                pass
        self.servers = []


if __name__ == '__main__':
    d = FakeDNS({'example.com': [('TXT', 'v=spf1 -all'), ('A', '192.0.2.1')],
                 'fail.example': 'SERVFAIL'}).start()
    q = DNSRecord.question('example.com', 'TXT')
    print(DNSRecord.parse(q.send('127.0.0.1', d.port)).rr)
    q = DNSRecord.question('nope.example', 'A')
    print(DNSRecord.parse(q.send('127.0.0.1', d.port)).header)
    d.stop()
