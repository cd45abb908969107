#!/usr/bin/python3
# A milter's {daemon_addr} and {daemon_port} name the listener address the
# client reached.  frontmx asks the kernel for it (getsockname) only when the
# chain has a milter, so this covers the chain gaining one on SIGHUP as well
# as listeners on different addresses (127.0.0.1, 127.0.0.2, [::1] when the
# machine has IPv6 loopback).
import os
import socket
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import fmx  # noqa: E402
from fmx import *  # noqa: E402,F403
from fmx_milter import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: daemon_addr\r\n\r\nbody\r\n'


def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(('::1', 0))
        s.close()
        return True
    except OSError:
        return False


def session(host, port, relay=True):
    """Connect, EHLO, maybe one message; returns (client port, DATA reply)."""
    c = SmtpClient(port, host=host)
    c.greeting()
    c.ehlo('client.example')
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY) if relay else None
    cport = c.local_port()
    c.quit()
    c.close()
    return cport, res


def main():
    up = Upstream()
    targets = [('127.0.0.1', free_port()), ('127.0.0.2', free_port())]
    if have_ipv6():
        targets.append(('::1', free_port()))
    else:
        skip('[::1] listener', 'no IPv6 loopback')
    listen = [{'address': ('[%s]:%d' if ':' in h else '%s:%d') % (h, p)} for h, p in targets]
    # frontmx probes mx.port: make it the first listener's
    mx = Frontmx(up, start=False)
    mx.port = targets[0][1]
    mx.write_conf(conf={'listen': listen})
    mx.start()
    ok(all(wait_for(lambda p=p, h=h: fmx.port_open(p, h), 5)
           for h, p in targets), 'every listener accepts connections')
    # no milter: sessions relay (the address is not asked for)
    _, res = session(*targets[0])
    reply_is(res['dot'], 250, None, 'no milter: message relayed')
    # a milter that asks for the listener address at connect
    m = ScriptedMilter(symlists={M_CONNECT: '{daemon_addr} {daemon_port} {client_port}'})
    loaded = mx.log().count('configuration reloaded')
    mx.write_conf(conf={'listen': listen, 'filters': [{'name': 'mil', 'milter': m.address}]})
    mx.hup()
    ok(wait_for(lambda: mx.log().count('configuration reloaded') > loaded, 10),
       'SIGHUP: the configuration with a milter is loaded')
    want = {}
    for h, p in targets:
        # [::1] is not in relay.networks: the connect macros are enough there
        cport, res = session(h, p, relay=':' not in h)
        want[str(cport)] = (h, p)
        if res is not None:
            reply_is(res['dot'], 250, None, '%s: message relayed through the milter' % h)
    ok(m.wait_sessions(len(targets)) and m.wait_all_closed(), 'milter sessions over')
    got = {}
    for s in m.sessions:
        conn = [d for st, d in s.macro_log if st == 'C']
        if conn and conn[0].get('{client_port}') in want:
            got[conn[0]['{client_port}']] = conn[0]
    for cport, (h, p) in want.items():
        d = got.get(cport, {})
        is_((d.get('{daemon_addr}'), d.get('{daemon_port}')), (h, str(p)),
            'listener %s port %d: {daemon_addr} and {daemon_port}' % (h, p))
    mx.check_sanitizers()
    is_(mx.stop(), 0, 'exits 0 on SIGTERM')
    done()


run(main, timeout=60)
