#!/usr/bin/python3
# Log lines on stderr (common/log.c): a worker holds the lines of one loop
# iteration and writes them together before its loop blocks again.  The
# operator (and every test here) still reads each line at once: a session's
# connect line is there while the session waits for the client, its
# disconnect line once the client has gone, with nothing else happening.
# Lines of many concurrent sessions on both workers arrive whole, one per
# line, none split or run into another; the lines of a session closed by
# a SIGTERM drain are written before the daemon exits.  (Held batches,
# PIPE_BUF bounds, fatalx and exit: t/unit/test_log.c.)
import os
import re
import signal
import sys
import threading
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: log\r\n\r\nbody\r\n'
LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z frontmx\[\d+\] '
                  r'(info|warning|debug): [^\n]*$')
SESSIONS = 40


def session_id(mx, port):
    """The id of the session from client port PORT (its connect line)."""
    m = re.search(r'info: ([0-9a-f]{16}) smtp connect client=127\.0\.0\.1 port=%d\n' % port,
                  mx.log())
    return m.group(1) if m else None


def prompt(up):
    mx = Frontmx(up)
    c = SmtpClient(mx.port)
    c.greeting()
    port = c.local_port()
    ok(wait_for(lambda: session_id(mx, port) is not None, 10),
       'prompt: the connect line is there while the session waits for the client')
    sid = session_id(mx, port)
    reply_is(c.ehlo('client.example'), 250, None, 'prompt: EHLO')
    res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
    reply_is(res['dot'], 250, None, 'prompt: message relayed')
    ok(wait_for(lambda: re.search(r'info: %s message .*result=relayed' % sid, mx.log()), 10),
       'prompt: the message line is there while the client is still connected')
    c.quit()
    c.close()
    ok(wait_for(lambda: re.search(r'info: %s smtp disconnect from ' % sid, mx.log()), 10),
       'prompt: the disconnect line is there once the client has gone, the daemon idle')
    return mx


def many(up):
    mx = Frontmx(up)
    ports, replies = [], []
    lock = threading.Lock()

    def one():
        c = SmtpClient(mx.port)
        c.greeting()
        port = c.local_port()
        c.ehlo('client.example')
        res = c.transaction('alice@example.org', ['bob@example.com'], BODY)
        c.quit()
        with lock:
            ports.append(port)
            replies.append(res['dot'].code if res['dot'] else None)
        c.close()

    th = [threading.Thread(target=one) for _ in range(SESSIONS)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    is_(replies, [250] * SESSIONS, 'many: %d concurrent sessions relayed' % SESSIONS)
    ids = {}
    ok(wait_for(lambda: all(session_id(mx, p) for p in ports) and
                all(re.search(r'info: %s smtp disconnect from ' % session_id(mx, p), mx.log())
                    for p in ports), 10),
       'many: every session\'s connect and disconnect lines are there')
    log = mx.log()
    lines = log.split('\n')
    is_(lines[-1], '', 'many: the log ends with a whole line')
    bad = [x for x in lines[:-1] if not LINE.match(x) or x.count(' frontmx[') != 1]
    is_(bad, [], 'many: every line is one whole log line (none split or joined)')
    for p in ports:
        ids[p] = session_id(mx, p)
    complete = [p for p, sid in ids.items()
                if len(re.findall(r'info: %s smtp connect ' % sid, log)) == 1 and
                len(re.findall(r'info: %s message .*result=relayed' % sid, log)) == 1 and
                len(re.findall(r'info: %s smtp disconnect ' % sid, log)) == 1]
    is_(len(complete), SESSIONS, 'many: each session logged connect, message and disconnect once')
    mx.check_sanitizers()


def sigterm(up):
    mx = Frontmx(up, conf={'timeouts': {'shutdown_grace': 60}})
    c = SmtpClient(mx.port)
    c.greeting()
    port = c.local_port()
    reply_is(c.ehlo('client.example'), 250, None, 'sigterm: session open')
    ok(wait_for(lambda: session_id(mx, port) is not None, 10), 'sigterm: connect line')
    sid = session_id(mx, port)
    os.kill(mx.pid, signal.SIGTERM)
    is_(mx.stop(30), 0, 'sigterm: exit 0')
    c.close()
    log = mx.log()
    end = log.find('frontmx stopped')
    m = re.search(r'info: %s smtp (disconnect|closing)[^\n]*\n' % sid, log)
    ok(m is not None and 0 <= m.start() < end,
       'sigterm: the drained session\'s last line is written before "frontmx stopped"')
    ok(log.endswith('frontmx stopped\n'), 'sigterm: "frontmx stopped" is the last line')
    mx.check_sanitizers()


def main():
    up = Upstream()
    mx = prompt(up)
    mx.check_sanitizers()
    many(up)
    sigterm(up)
    done()


run(main, timeout=120)
