#!/usr/bin/python3
# Limits lowered for real, each at the limit and one past it (issue 8,
# harness: limits that existed only as parsed config), and local delivery
# when writing fails:
#   limits.connections      N sessions greeted, the next gets 421 4.7.0 and
#                           is closed; a slot freed is usable again
#   limits.header_size      a header block of exactly N octets is relayed,
#                           N + 1 gets 552 5.3.4
#   limits.pipeline_backlog at its minimum (1001), 25 KiB of pipelined
#                           commands (900 RCPTs) and a 1000-octet text line still get
#                           every reply in order (no stall)
#   dir: upstream and quarantine with a regular file where new/ or tmp/
#                           should be: 451, never 250, never a crash; the
#                           client's retry is delivered once it is fixed
import os
import shutil
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import content_filter, write_rules, make_maildir, maildir_files  # noqa: E402


def greeted(mx):
    c = SmtpClient(mx.port)
    return c, c.greeting()


def connections():
    up = Upstream()
    mx = Frontmx(up, conf={'limits': {'connections': 3, 'connections_per_ip': 0}},
                 name='frontmx (connections = 3)')
    # Frontmx.start's port probe is a session too: under load it may still
    # hold one of the 3 slots when session 3 connects.  Its end is logged.
    ok(wait_for(lambda: 'smtp disconnect from' in mx.log(), 10),
       'connections: the start-up probe session ended')
    held = []
    for i in range(3):
        c, g = greeted(mx)
        reply_is(g, 220, None, 'connections: session %d of 3 greeted' % (i + 1))
        held.append(c)
    c, g = greeted(mx)
    reply_is(g, 421, '4.7.0', 'connections: the 4th gets 421 4.7.0')
    ok(c.expect_close(10), 'connections: and is closed')
    held.pop().quit()

    def fourth():
        c, g = greeted(mx)
        if g.code == 220:
            held.append(c)
            return True
        c.close()
        return False
    ok(wait_for(fourth, 10, 0.1), 'connections: a freed slot takes a new session')
    c, g = greeted(mx)
    reply_is(g, 421, '4.7.0', 'connections: full again, the next gets 421')
    for c in held:
        c.quit()
    mx.finish()


def header_size():
    up = Upstream()
    limit = 300
    mx = Frontmx(up, conf={'limits': {'header_size': limit}}, name='frontmx (header_size = 300)')

    def message(total):
        head = b'From: a@example.org\r\nSubject: '
        pad = total - len(head) - 2
        return head + b'x' * pad + b'\r\n' + b'\r\nbody\r\n'

    for total, code, name in ((limit, 250, 'exactly the limit'), (limit + 1, 552, 'one past it')):
        body = message(total)
        ok(body.index(b'\r\n\r\n') + 2 == total, 'header_size: test header block is %d octets' % total)
        c = mx.client()
        c.start()
        r = c.transaction('hs%d@example.org' % total, ['bob@example.com'], body)
        reply_is(r['dot'], code, '2.0.0' if code == 250 else '5.3.4', 'header_size: %s' % name)
        reply_is(c.cmd('NOOP'), 250, None, 'header_size: %s: session goes on' % name)
        c.quit()
    ok(up.wait_messages(1, 10), 'header_size: the message at the limit reached the upstream')
    is_([m.mail_from for m in up.messages], ['hs%d@example.org' % limit],
        'header_size: only the message at the limit was relayed')
    mx.finish()


def pipeline_backlog():
    up = Upstream()
    mx = Frontmx(up, conf={'limits': {'pipeline_backlog': 1001, 'recipients': 1000}},
                 name='frontmx (pipeline_backlog = 1001)')
    c = mx.client()
    c.start()
    n = 900
    batch = b'MAIL FROM:<pb@example.org>\r\n' + b''.join(
        b'RCPT TO:<r%03d@example.com>\r\n' % i for i in range(n))
    ok(len(batch) > 20 * 1001, 'pipeline_backlog: %d octets pipelined in one write' % len(batch))
    c.send(batch)
    replies = [c.reply(timeout=30) for _ in range(n + 1)]
    is_([r.code for r in replies], [250] * (n + 1), 'pipeline_backlog: every reply, in order')
    long_line = b'X-Long: ' + b'y' * (998 - 8)
    ok(len(long_line) + 2 == 1000, 'pipeline_backlog: a 1000-octet text line')
    d, f = c.data(b'From: a@example.org\r\n' + long_line + b'\r\n\r\nbody\r\n')
    reply_is(f, 250, None, 'pipeline_backlog: message with the longest line relayed')
    c.quit()
    ok(up.wait_messages(1, 10), 'pipeline_backlog: the upstream got it')
    if up.messages:
        is_(len(up.messages[0].rcpts), n, 'pipeline_backlog: with all %d recipients' % n)
    mx.finish()


def break_dir(path, sub):
    p = os.path.join(path, sub)
    shutil.rmtree(p)
    with open(p, 'w') as f:
        f.write('not a directory\n')


def fix_dir(path, sub):
    p = os.path.join(path, sub)
    os.unlink(p)
    os.mkdir(p)


def dir_delivery():
    d = tmpdir('fmx-dirfail-')
    box = make_maildir(os.path.join(d, 'box'))
    mx = Frontmx('dir:' + box, name='frontmx (dir: failing)')
    for sub in ('new', 'tmp'):
        break_dir(box, sub)
        c = mx.client()
        c.start()
        r = c.transaction('dir-%s@example.org' % sub, ['bob@example.com'],
                          b'Subject: dir\r\n\r\nbody\r\n')
        reply_is(r['dot'], 451, '4.3.0', 'dir: %s/ is a file: 451' % sub)
        c.quit()
        ok(mx.alive(), 'dir: %s/ is a file: still running' % sub)
        fix_dir(box, sub)
        is_(maildir_files(box, 'new'), [], 'dir: %s/ is a file: nothing delivered' % sub)
        is_(maildir_files(box, 'tmp'), [], 'dir: %s/ is a file: nothing left in tmp/' % sub)
    c = mx.client()
    c.start()
    r = c.transaction('dir-ok@example.org', ['bob@example.com'], b'Subject: dir\r\n\r\nbody\r\n')
    reply_is(r['dot'], 250, None, 'dir: repaired: the retry is delivered')
    c.quit()
    is_(len(maildir_files(box, 'new')), 1, 'dir: repaired: one file in new/')
    mx.finish()


def quarantine():
    d = tmpdir('fmx-qfail-')
    q = make_maildir(os.path.join(d, 'q'))
    rules = write_rules('header /^Subject:.*QUARANTINE-ME/ QUARANTINE held\n', d)
    up = Upstream()
    mx = Frontmx(up, conf={'filters': [content_filter(rules)], 'quarantine': {'directory': q}},
                 name='frontmx (quarantine failing)')
    body = b'From: a@example.org\r\nSubject: QUARANTINE-ME\r\n\r\nbody\r\n'
    for sub in ('new', 'tmp'):
        break_dir(q, sub)
        c = mx.client()
        c.start()
        r = c.transaction('q-%s@example.org' % sub, ['bob@example.com'], body)
        reply_is(r['dot'], 451, '4.3.0', 'quarantine: %s/ is a file: 451' % sub)
        c.quit()
        ok(mx.alive(), 'quarantine: %s/ is a file: still running' % sub)
        fix_dir(q, sub)
        is_(maildir_files(q, 'new'), [], 'quarantine: %s/ is a file: nothing stored' % sub)
    c = mx.client()
    c.start()
    r = c.transaction('q-ok@example.org', ['bob@example.com'], body)
    reply_is(r['dot'], 250, None, 'quarantine: repaired: 250 once the copy is stored')
    c.quit()
    is_(len(maildir_files(q, 'new')), 1, 'quarantine: repaired: one file in new/')
    is_(up.transactions, 0, 'quarantine: nothing went to the upstream')
    mx.finish()


def main():
    connections()
    header_size()
    pipeline_backlog()
    dir_delivery()
    quarantine()


run(main, timeout=150)
