"""A raw, scripted milter (the filter side of the Sendmail milter protocol)
for the tests of frontmx's milter client.

It is written by hand on purpose: libmilter and python3-milter only ever
send well-formed answers, and these tests need a milter that answers with
any version, any flags, any packet - truncated, oversized, out of order -
or never.  Loopback only; one thread per milter connection.

    m = ScriptedMilter(script={'eom': [add_header('X-A', 'b')]})
    mx = Frontmx(up, conf={'filters': [{'name': 'av', 'milter': m.address}]})
    ...
    s = m.sessions[0]          # one per milter connection (one per SMTP session)
    s.events                   # [('C', {...}), ('H', 'helo'), ...] in arrival order
    s.macros['C']              # {'j': 'mx.test.example', ...} of the last D for stage C
    s.packets                  # every (cmd, data) received, raw

Constructor:
  version, actions, protocol   what the milter answers to the MTA's OPTNEG
                               (protocol = the NO*/NR_*/SKIP/... flags)
  symlists                     {stage_number: 'i {rcpt_addr}'} sent as the
                               SETSYMLIST trailer of the OPTNEG answer
  negotiate                    raw bytes sent instead of the OPTNEG answer
                               (or a callable(session, data) -> bytes)
  script                       {stage: spec}: stage is the event name
                               ('connect', 'helo', 'mail', 'rcpt', 'data',
                               'header', 'eoh', 'body', 'eom', 'abort',
                               'unknown') and spec one of
                                 list of packets (bytes, see pkt() and the
                                   helpers): sent in one write
                                 callable(session, data) -> such a list
                                 HANG: read on, never answer this event
                                 CLOSE: close the connection
                                 STALL: stop reading (a milter whose
                                   socket buffers fill up), then close
                               A list item may be Trickle(bytes, delay):
                               sent one octet at a time
                               Events without a spec get 'c' (continue);
                               abort gets no answer (the protocol has none)
  unix                         path: listen on a UNIX socket instead of TCP
  host                         '127.0.0.1' (default) or '::1' (address
                               inet:[::1]:PORT)
  refuse                       pick an address but do not listen
  nr                           set of event commands that get no reply
                               (what the milter negotiated with NR_*)
"""
import os
import socket
import struct
import threading
import time

# Commands (MTA -> milter)
SMFIC_ABORT, SMFIC_BODY, SMFIC_CONNECT, SMFIC_MACRO = b'A', b'B', b'C', b'D'
SMFIC_BODYEOB, SMFIC_HELO, SMFIC_HEADER, SMFIC_MAIL = b'E', b'H', b'L', b'M'
SMFIC_EOH, SMFIC_OPTNEG, SMFIC_QUIT, SMFIC_RCPT = b'N', b'O', b'Q', b'R'
SMFIC_DATA, SMFIC_UNKNOWN, SMFIC_QUIT_NC = b'T', b'U', b'K'

STAGE_OF = {b'C': 'connect', b'H': 'helo', b'M': 'mail', b'R': 'rcpt', b'T': 'data',
            b'L': 'header', b'N': 'eoh', b'B': 'body', b'E': 'eom', b'A': 'abort',
            b'U': 'unknown'}

# Actions and protocol flags (libmilter's mfapi.h / mfdef.h values)
ADDHDRS, CHGBODY, ADDRCPT, DELRCPT = 0x01, 0x02, 0x04, 0x08
CHGHDRS, QUARANTINE, CHGFROM, ADDRCPT_PAR, SETSYMLIST = 0x10, 0x20, 0x40, 0x80, 0x100
ALL_ACTIONS = 0x1ff
NOCONNECT, NOHELO, NOMAIL, NORCPT = 0x1, 0x2, 0x4, 0x8
NOBODY, NOHDRS, NOEOH, NR_HDR = 0x10, 0x20, 0x40, 0x80
NOUNKNOWN, NODATA, SKIP, RCPT_REJ = 0x100, 0x200, 0x400, 0x800
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
NR_DATA, NR_UNKN, NR_EOH, NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
HDR_LEADSPC = 0x100000
NR_ALL = NR_HDR | NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_DATA | NR_UNKN | NR_EOH | NR_BODY
# What each NR_* flag silences
NR_OF = {b'C': NR_CONN, b'H': NR_HELO, b'M': NR_MAIL, b'R': NR_RCPT, b'T': NR_DATA,
         b'L': NR_HDR, b'N': NR_EOH, b'B': NR_BODY, b'U': NR_UNKN}

# SETSYMLIST stages
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = 0, 1, 2, 3, 4, 5, 6

HANG = 'hang'
CLOSE = 'close'
STALL = 'stall'     # stop reading altogether (until the MTA gives up or 60 s)


class Trickle:
    """A spec item sent one octet at a time, delay seconds apart."""

    def __init__(self, data, delay=0.01):
        self.data, self.delay = data, delay


def pkt(cmd, data=b''):
    """One milter packet: 4-octet length (command included), command, data."""
    if isinstance(cmd, str):
        cmd = cmd.encode()
    if isinstance(data, str):
        data = data.encode()
    return struct.pack('!I', len(data) + 1) + cmd + data


def z(*parts):
    """NUL-terminated strings, concatenated."""
    return b''.join((p.encode() if isinstance(p, str) else p) + b'\0' for p in parts)


CONTINUE = pkt('c')
ACCEPT = pkt('a')
REJECT = pkt('r')
TEMPFAIL = pkt('t')
DISCARD = pkt('d')
SHUTDOWN = pkt('4')
SKIPPKT = pkt('s')
PROGRESS = pkt('p')


def reply(text):
    """SMFIR_REPLYCODE ('y'): 'CODE text' NUL-terminated."""
    return pkt('y', z(text))


def quarantine(reason):
    return pkt('q', z(reason))


def add_header(name, value):
    return pkt('h', z(name, value))


def insert_header(index, name, value):
    return pkt('i', struct.pack('!I', index) + z(name, value))


def change_header(index, name, value):
    return pkt('m', struct.pack('!I', index) + z(name, value))


def replace_body(data):
    return pkt('b', data)


def add_rcpt(addr):
    return pkt('+', z(addr))


def add_rcpt_par(addr, args):
    return pkt('2', z(addr, args))


def del_rcpt(addr):
    return pkt('-', z(addr))


def change_from(addr, args=None):
    return pkt('e', z(addr) if args is None else z(addr, args))


def _split_z(data):
    """NUL-terminated strings of a packet (a last one without NUL kept too)."""
    parts = data.split(b'\0')
    if parts and parts[-1] == b'':
        parts.pop()
    return [p.decode('latin-1') for p in parts]


class MilterSession:
    """What one milter connection received, parsed."""

    def __init__(self):
        self.packets = []       # (cmd, data) in arrival order
        self.events = []        # (cmd, parsed) for every non-macro command
        self.macros = {}        # stage cmd letter -> {name: value} of the last D
        self.macro_log = []     # (stage letter, {name: value}) in order
        self.optneg = None      # (version, actions, protocol) the MTA offered
        self.closed = False     # the MTA closed the connection
        self.body = b''         # body chunks of the current message

    def cmds(self):
        """The command letters received, macros included, as one string."""
        return ''.join(c.decode() for c, _ in self.packets)

    def event_cmds(self):
        return ''.join(c.decode() for c, _ in self.events)

    def headers(self):
        """(name, value) of every header event, in order."""
        return [v for c, v in self.events if c == SMFIC_HEADER]


class ScriptedMilter:
    def __init__(self, script=None, version=6, actions=ALL_ACTIONS, protocol=0,
                 symlists=None, negotiate=None, unix=None, refuse=False, nr=None, host='127.0.0.1'):
        self.script = dict(script or {})
        self.version, self.actions, self.protocol = version, actions, protocol
        self.symlists = dict(symlists or {})
        self.negotiate = negotiate
        self.nr = set(nr or ())
        for cmd, flag in NR_OF.items():
            if protocol & flag:
                self.nr.add(cmd)
        self.sessions = []
        self.lock = threading.Condition()
        self._stopping = False
        self._conns = []
        self.unix = unix
        self.host = host
        self.family = socket.AF_INET6 if ':' in host else socket.AF_INET
        if unix:
            self.address = 'unix:%s' % unix
        else:
            s = socket.socket(self.family, socket.SOCK_STREAM)
            s.bind((host, 0))
            self.port = s.getsockname()[1]
            s.close()
            self.address = ('inet:[%s]:%d' if ':' in host else 'inet:%s:%d') % (host, self.port)
        self.lsock = None
        if not refuse:
            self.listen()
        try:
            from fmx import register_cleanup
            register_cleanup(self.stop)
        except ImportError:
            pass

    def listen(self):
        if self.unix:
            if os.path.exists(self.unix):
                os.unlink(self.unix)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(self.unix)
        else:
            s = socket.socket(self.family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self.port))
        s.listen(64)
        self.lsock = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    def stop(self):
        self._stopping = True
        if self.lsock is not None:
            try:
                self.lsock.close()
            except OSError:
                pass
            self.lsock = None
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass

    def wait_sessions(self, n, timeout=10):
        end = time.time() + timeout
        with self.lock:
            while len(self.sessions) < n and time.time() < end:
                self.lock.wait(0.05)
            return len(self.sessions) >= n

    def wait_closed(self, i=-1, timeout=10):
        """Wait until the MTA closed session i's connection."""
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if self.sessions and self.sessions[i].closed:
                    return True
            time.sleep(0.05)
        return False

    def wait_all_closed(self, timeout=10):
        """Wait until every milter connection so far ended."""
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if self.sessions and all(x.closed for x in self.sessions):
                    return True
            time.sleep(0.05)
        return False

    def main_session(self, timeout=10):
        """The session of the SMTP dialogue a test ran: the one with the
        most packets once every connection ended (a harness probe of the
        listening port opens a milter connection too, and it may be
        accepted after the test's own)."""
        self.wait_all_closed(timeout)
        with self.lock:
            return max(self.sessions, key=lambda x: len(x.packets)) if self.sessions else None

    # -- serving
    def _accept_loop(self, lsock):
        while not self._stopping:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            self._conns.append(c)
            s = MilterSession()
            with self.lock:
                self.sessions.append(s)
                self.lock.notify_all()
            threading.Thread(target=self._serve, args=(c, s), daemon=True).start()

    @staticmethod
    def _recv_exact(c, n):
        buf = b''
        while len(buf) < n:
            d = c.recv(n - len(buf))
            if not d:
                return None
            buf += d
        return buf

    def _answer(self, c, s, cmd, data):
        stage = STAGE_OF.get(cmd)
        spec = self.script.get(stage)
        if callable(spec):
            spec = spec(s, data)
        if spec is None:
            if cmd == SMFIC_ABORT or cmd in self.nr:
                return True
            spec = [CONTINUE]
        if spec == HANG:
            return True
        if spec == STALL:
            end = time.time() + 60
            while time.time() < end and not self._stopping:
                time.sleep(0.1)
            return False
        if spec == CLOSE:
            return False
        if isinstance(spec, bytes):
            spec = [spec]
        for item in spec:
            if isinstance(item, Trickle):
                for i in range(len(item.data)):
                    c.sendall(item.data[i:i + 1])
                    time.sleep(item.delay)
            else:
                c.sendall(item)
        return True

    def _parse(self, s, cmd, data):
        if cmd == SMFIC_MACRO:
            stage = data[:1].decode('latin-1')
            parts = _split_z(data[1:])
            d = dict(zip(parts[0::2], parts[1::2]))
            with self.lock:
                s.macros[stage] = d
                s.macro_log.append((stage, d))
            return
        if cmd == SMFIC_CONNECT:
            host, rest = data.split(b'\0', 1)
            fam = rest[:1].decode('latin-1')
            if fam in ('4', '6'):
                port = struct.unpack('!H', rest[1:3])[0]
                addr = _split_z(rest[3:])[0]
            else:
                port, addr = None, _split_z(rest[1:])[0] if len(rest) > 1 else ''
            v = {'host': host.decode('latin-1'), 'family': fam, 'port': port, 'addr': addr}
        elif cmd == SMFIC_HEADER:
            parts = data.split(b'\0')
            v = (parts[0].decode('latin-1'), parts[1].decode('latin-1') if len(parts) > 1 else None)
        elif cmd == SMFIC_BODY:
            s.body += data
            v = data
        elif cmd in (SMFIC_MAIL, SMFIC_RCPT):
            v = _split_z(data)
        elif cmd == SMFIC_HELO:
            v = _split_z(data)[0] if data else ''
        else:
            v = data
        with self.lock:
            s.events.append((cmd, v))
            if cmd == SMFIC_ABORT:
                s.body = b''

    def _negotiate(self, c, s, data):
        if len(data) >= 12:
            s.optneg = struct.unpack('!III', data[:12])
        if self.negotiate is not None:
            raw = self.negotiate(s, data) if callable(self.negotiate) else self.negotiate
            c.sendall(raw)
            return
        trailer = b''.join(struct.pack('!I', st) + z(lst) for st, lst in sorted(self.symlists.items()))
        c.sendall(pkt('O', struct.pack('!III', self.version, self.actions, self.protocol) + trailer))

    def _serve(self, c, s):
        try:
            while True:
                hdr = self._recv_exact(c, 4)
                if hdr is None:
                    break
                n = struct.unpack('!I', hdr)[0]
                body = self._recv_exact(c, n) if n else b''
                if body is None or n == 0:
                    break
                cmd, data = body[:1], body[1:]
                with self.lock:
                    s.packets.append((cmd, data))
                self._parse(s, cmd, data)
                if cmd == SMFIC_OPTNEG:
                    self._negotiate(c, s, data)
                    continue
                if cmd in (SMFIC_MACRO,):
                    continue
                if cmd in (SMFIC_QUIT, SMFIC_QUIT_NC):
                    if cmd == SMFIC_QUIT:
                        break
                    continue
                if not self._answer(c, s, cmd, data):
                    break
        except OSError:
            pass
        finally:
            with self.lock:
                s.closed = True
                self.lock.notify_all()
            try:
                c.close()
            except OSError:
                pass
