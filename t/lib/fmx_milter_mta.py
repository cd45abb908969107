"""fmx_milter_mta.py - the MTA side of the milter protocol, for tests that
talk to frontmx's milter listener (milter = { listen = ...; }).

    m = MtaMilter(port)                 # connect + OPTNEG (v6, every action)
    r = m.connect('client.example', '192.0.2.1', 40000)   # ('c', b'')
    m.helo('client.example', macros={'{tls_version}': 'TLSv1.3'})
    m.mail('<a@example.org>', macros={'i': 'ABC123'})
    m.rcpt('<b@example.com>')
    mods, final = m.message([('Subject', ' hi')], b'body\\r\\n')
    m.quit()

A reply is (code, data): 'c' continue, 'a' accept, 'r' reject, 't'
tempfail, 'd' discard, 'y' custom reply (data = b'550 5.7.1 text'), 'q'
quarantine ... ; message() returns the modifications (h, i, m, +, -, b, q)
before the final reply, each parsed: ('h', name, value), ('i', idx, name,
value), ('m', idx, name, value), ('+', rcpt), ('-', rcpt), ('b', bytes),
('q', reason).  It follows the filter's NO* / NR_* protocol flags and
HDR_LEADSPC as Postfix does (notes/MILTER.md 2), and keeps what it sent
in .sent for assertions.  Wire facts: notes/LIBRARIES.md 4.
"""

import socket
import struct

SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL, SMFIP_NORCPT = 0x1, 0x2, 0x4, 0x8
SMFIP_NOBODY, SMFIP_NOHDRS, SMFIP_NOEOH, SMFIP_NR_HDR = 0x10, 0x20, 0x40, 0x80
SMFIP_NOUNKNOWN, SMFIP_NODATA, SMFIP_SKIP = 0x100, 0x200, 0x400
SMFIP_HDR_LEADSPC = 0x100000
ALL_ACTIONS = 0x1ff
ALL_PROTOCOL = 0x1fffff
NR_FLAGS = {b'C': 0x1000, b'H': 0x2000, b'M': 0x4000, b'R': 0x8000, b'T': 0x10000,
            b'L': 0x80, b'N': 0x40000, b'B': 0x80000}
NO_FLAGS = {b'C': SMFIP_NOCONNECT, b'H': SMFIP_NOHELO, b'M': SMFIP_NOMAIL,
            b'R': SMFIP_NORCPT, b'T': SMFIP_NODATA, b'L': SMFIP_NOHDRS,
            b'N': SMFIP_NOEOH, b'B': SMFIP_NOBODY}
FINAL = b'carydt4f'


class MilterError(Exception):
    pass


class MtaMilter:
    def __init__(self, port=None, path=None, host='127.0.0.1', timeout=20.0,
                 actions=ALL_ACTIONS, protocol=ALL_PROTOCOL, negotiate=True):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b''
        self.sent = []
        self.version = self.actions = self.protocol = None
        self.symlists = {}
        if negotiate:
            self.negotiate(actions, protocol)

    # ---- framing
    def send(self, cmd, data=b''):
        self.sent.append((cmd, data))
        self.sock.sendall(struct.pack('!I', len(data) + 1) + cmd + data)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise MilterError('connection closed by the filter')
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def packet(self):
        (n,) = struct.unpack('!I', self._read(4))
        if n < 1 or n > 1 << 20:
            raise MilterError('bad packet length %d' % n)
        body = self._read(n)
        return body[:1], body[1:]

    # ---- negotiation
    def negotiate(self, actions=ALL_ACTIONS, protocol=ALL_PROTOCOL):
        self.send(b'O', struct.pack('!III', 6, actions, protocol))
        cmd, data = self.packet()
        if cmd != b'O':
            raise MilterError('OPTNEG answered with %r' % cmd)
        self.version, self.actions, self.protocol = struct.unpack('!III', data[:12])
        rest = data[12:]
        while len(rest) >= 4:
            (stage,) = struct.unpack('!I', rest[:4])
            lst, _, rest = rest[4:].partition(b'\0')
            self.symlists[stage] = lst.decode()
        return self.version, self.actions, self.protocol

    @property
    def leadspc(self):
        return bool(self.protocol & SMFIP_HDR_LEADSPC)

    def macros(self, cmd, macros):
        if macros is None:
            return
        data = cmd
        for k, v in macros.items():
            data += k.encode() + b'\0' + v.encode() + b'\0'
        self.send(b'D', data)

    def reply(self):
        """Read until a final reply; progress is skipped, 'q' kept aside."""
        mods = []
        while True:
            cmd, data = self.packet()
            if cmd == b'p':
                continue
            if cmd in FINAL:
                return mods, (cmd.decode(), data.rstrip(b'\0'))
            mods.append(parse_mod(cmd, data))

    def event(self, cmd, data=b'', macros=None):
        self.macros(cmd, macros)
        if self.protocol & NO_FLAGS.get(cmd, 0):
            return ('c', b'')
        self.send(cmd, data)
        if self.protocol & NR_FLAGS.get(cmd, 0):
            return ('c', b'')
        mods, final = self.reply()
        if mods:
            raise MilterError('modifications before end of message: %r' % mods)
        return final

    # ---- events
    def connect(self, hostname='client.example', addr='192.0.2.1', port=40000,
                family=b'4', macros=None):
        if family == b'U':
            data = hostname.encode() + b'\0' + b'U'
        else:
            data = (hostname.encode() + b'\0' + family + struct.pack('!H', port) +
                    addr.encode() + b'\0')
        return self.event(b'C', data, macros)

    def helo(self, name, macros=None):
        return self.event(b'H', name.encode() + b'\0', macros)

    def mail(self, sender, args=(), macros=None):
        data = sender.encode() + b'\0' + b''.join(a.encode() + b'\0' for a in args)
        return self.event(b'M', data, macros)

    def rcpt(self, rcpt, args=(), macros=None):
        data = rcpt.encode() + b'\0' + b''.join(a.encode() + b'\0' for a in args)
        return self.event(b'R', data, macros)

    def data(self, macros=None):
        return self.event(b'T', b'', macros)

    def header(self, name, value):
        """value as in the message, with its leading space; Postfix drops
        that space unless HDR_LEADSPC was negotiated, and folds with LF."""
        if not self.leadspc and value.startswith(' '):
            value = value[1:]
        return self.event(b'L', name.encode() + b'\0' + value.encode() + b'\0')

    def eoh(self, macros=None):
        return self.event(b'N', b'', macros)

    def body(self, data):
        for i in range(0, len(data), 65535):
            r = self.event(b'B', data[i:i + 65535])
            if r[0] != 'c':
                return r
        return ('c', b'')

    def eom(self, macros=None):
        self.macros(b'E', macros)
        self.send(b'E')
        return self.reply()

    def message(self, headers, body, macros=None):
        """headers: [(name, value-with-leading-space)], body: bytes (CRLF).
        Returns (mods, final) of end of message, or ([], early refusal)."""
        for name, value in headers:
            r = self.header(name, value)
            if r[0] != 'c':
                return [], r
        r = self.eoh()
        if r[0] != 'c':
            return [], r
        if body:
            r = self.body(body)
            if r[0] != 'c':
                return [], r
        return self.eom(macros)

    def abort(self):
        self.send(b'A')

    def quit(self):
        try:
            self.send(b'Q')
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def parse_mod(cmd, data):
    c = cmd.decode()
    if c == 'h':
        name, value, _ = data.split(b'\0', 2)
        return ('h', name.decode(), value.decode())
    if c in ('i', 'm'):
        (idx,) = struct.unpack('!I', data[:4])
        name, value, _ = data[4:].split(b'\0', 2)
        return (c, idx, name.decode(), value.decode())
    if c in ('+', '-', 'q', 'e'):
        return (c, data.rstrip(b'\0').decode())
    if c == '2':
        rcpt, args, _ = (data + b'\0').split(b'\0', 2)
        return ('2', rcpt.decode(), args.decode())
    if c == 'b':
        return ('b', data)
    return (c, data)
