"""fmx_redis.py - a real redis-server (Debian's) for the tests, and peers
that misbehave like a Redis can.

    from fmx_redis import RedisServer, SilentServer, DelayProxy
    r = RedisServer()                   # own port on 127.0.0.1, own temp dir
    r = RedisServer(password='s3cret', unixsocket=True)
    r.address                           # "127.0.0.1:PORT" for redis.address
    r.unix_address                      # "unix:/tmp/.../redis.sock"
    r.cli('TTL', 'fmx:gl:w:127.0.1.0/24')   # redis-cli's answer, stripped
    r.keys('fmx:gl:*')                  # sorted list
    r.kill(); r.start()                 # SIGKILL, then the same port again
    s = SilentServer()                  # accepts, reads, never answers
    p = DelayProxy(r.port, 0.5)         # forwards, each reply 0.5 s late
    sample(scrape(port), 'frontmx_greylist_total', result='pass')   # /metrics

The server never touches the machine's own Redis: a free loopback port,
no saving, its files in a temp dir of the test.  Everything started here
is killed at the end of the test (fmx.start_process, register_cleanup).
"""
import os
import re
import select
import socket
import subprocess
import threading
import time
import urllib.request

from fmx import free_port, register_cleanup, start_process, tmpdir, wait_for

REDIS_SERVER = '/usr/bin/redis-server'
REDIS_CLI = '/usr/bin/redis-cli'


def scrape(port):
    """GET /metrics of a frontmx with metrics.listen on 127.0.0.1:port."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10) as r:
            return r.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def sample(text, name, **labels):
    """The value of the series name{labels} (any label order), 0 if absent."""
    want = sorted(labels.items())
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ''))
        if got == want:
            return float(m.group(3))
    return 0.0


class RedisServer:
    def __init__(self, password=None, unixsocket=False, start=True):
        self.dir = tmpdir('fmx-redis-')
        self.port = free_port()
        self.password = password
        self.sock_path = os.path.join(self.dir, 'redis.sock') if unixsocket else None
        self.proc = None
        register_cleanup(self.kill)
        if start:
            self.start()

    @property
    def address(self):
        return '127.0.0.1:%d' % self.port

    @property
    def unix_address(self):
        return 'unix:%s' % self.sock_path

    def start(self):
        argv = [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1',
                '--dir', self.dir, '--save', '', '--appendonly', 'no',
                '--daemonize', 'no', '--logfile', os.path.join(self.dir, 'redis.log')]
        if self.password:
            argv += ['--requirepass', self.password]
        if self.sock_path:
            argv += ['--unixsocket', self.sock_path, '--unixsocketperm', '700']
        self.proc = start_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self.cli('PING') == 'PONG', timeout=15):
            raise RuntimeError('redis-server did not start on port %d' % self.port)

    def cli(self, *args, db=None):
        argv = [REDIS_CLI, '-h', '127.0.0.1', '-p', str(self.port), '--no-raw']
        if self.password:
            argv += ['--no-auth-warning', '-a', self.password]
        if db is not None:
            argv += ['-n', str(db)]
        try:
            p = subprocess.run(argv + [str(a) for a in args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        except subprocess.TimeoutExpired:
            return None
        out = p.stdout.decode('utf-8', 'replace').strip()
        # --no-raw quotes strings and numbers "(integer) 5"; keep the value
        if out.startswith('(integer) '):
            return out[len('(integer) '):]
        if len(out) >= 2 and out[0] == '"' and out[-1] == '"' and '\n' not in out:
            return out[1:-1]
        return out

    def keys(self, pattern, db=None):
        argv = [REDIS_CLI, '-h', '127.0.0.1', '-p', str(self.port), '--raw']
        if self.password:
            argv += ['--no-auth-warning', '-a', self.password]
        if db is not None:
            argv += ['-n', str(db)]
        p = subprocess.run(argv + ['--scan', '--pattern', pattern], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        return sorted(l for l in p.stdout.decode('utf-8', 'replace').split('\n') if l)

    def ttl(self, key, db=None):
        v = self.cli('TTL', key, db=db)
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _listen():
    """A listening socket on a free loopback port: (sock, port, address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    return sock, port, '127.0.0.1:%d' % port


class SilentServer:
    """Accepts TCP connections, reads what comes, never says a word."""

    def __init__(self):
        self.sock, self.port, self.address = _listen()
        self.conns = []
        self.naccepted = 0
        self.received = b''
        self.stopped = False
        threading.Thread(target=self._loop, daemon=True).start()
        register_cleanup(self.stop)

    def _loop(self):
        while not self.stopped:
            rl = [self.sock] + self.conns
            try:
                r, _, _ = select.select(rl, [], [], 0.2)
            except (OSError, ValueError):
                return
            for s in r:
                if s is self.sock:
                    try:
                        c, _ = self.sock.accept()
                        self.conns.append(c)
                        self.naccepted += 1
                    except OSError:
                        pass
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b''
                if not data:
                    self.conns.remove(s)
                    s.close()
                else:
                    self.received += data

    def accepted(self):
        """Connections accepted so far (open or not)."""
        return self.naccepted

    def stop(self):
        self.stopped = True
        for s in self.conns + [self.sock]:
            try:
                s.close()
            except OSError:
                pass


class DelayProxy:
    """TCP proxy to a Redis on 127.0.0.1:port; every chunk from the
    server reaches the client delay seconds late (a slow Redis)."""

    def __init__(self, port, delay):
        self.target = port
        self.delay = delay
        self.sock, self.port, self.address = _listen()
        self.stopped = False
        self.replies = 0
        threading.Thread(target=self._accept, daemon=True).start()
        register_cleanup(self.stop)

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(('127.0.0.1', self.target), timeout=5)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, s, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, self.delay), daemon=True).start()

    def _pump(self, src, dst, delay):
        src.settimeout(None)
        while not self.stopped:
            try:
                data = src.recv(65536)
            except OSError:
                data = b''
            if not data:
                break
            if delay:
                time.sleep(delay)
                self.replies += 1
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
