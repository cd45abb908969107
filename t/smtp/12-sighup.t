#!/usr/bin/python3
# SIGHUP reloads the configuration without dropping sessions: a broken file
# is logged and the old configuration stays; a good changed file applies to
# new sessions, while sessions already open finish on the one they started.
import os
import re
import sys
import time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403

BODY = b'From: alice@example.org\r\nSubject: hup\r\n\r\nbody\r\n'
UNTRUSTED = {'relay': {'domains': ['example.com'], 'networks': ['192.0.2.0/24']}}


def rcpt_code(mx, rcpt):
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<alice@example.org>')
    r = c.cmd('RCPT TO:<%s>' % rcpt)
    c.quit()
    return r.code


def main():
    up = Upstream()
    mx = Frontmx(up, conf=UNTRUSTED)
    is_(rcpt_code(mx, 'bob@new.example'), 554, 'before reload: new.example refused')

    # a session opened before any reload, mid-transaction
    old = SmtpClient(mx.port)
    old.greeting()
    old.ehlo()
    reply_is(old.cmd('MAIL FROM:<alice@example.org>'), 250, None, 'old session: MAIL')

    # -- broken file: logged, old configuration kept
    good_text = mx.conf
    broken = good_text.replace('workers = 2;', 'workers = 2;\nthis is not libconfig ;;;')
    lineno = broken.splitlines().index('this is not libconfig ;;;') + 1
    with open(mx.conffile, 'w') as f:
        f.write(broken)
    loglen = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: len(mx.log()) > loglen and re.search(
        r'%s:(%d|%d):' % (re.escape(mx.conffile), lineno, lineno + 1), mx.log()[loglen:]), 5),
        'broken config on HUP: error logged as FILE:LINE:')
    ok(wait_for(lambda: 'reload failed, keeping the running configuration' in mx.log()[loglen:], 10),
       'broken config on HUP: the reload is over (logged), the old configuration kept')
    ok(mx.alive(), 'daemon still running after HUP with a broken file')
    c = SmtpClient(mx.port)
    reply_is(c.greeting(), 220, None, 'still accepting connections')
    c.quit()
    is_(rcpt_code(mx, 'bob@example.com'), 250, 'old configuration still in force: example.com 250')
    is_(rcpt_code(mx, 'bob@new.example'), 554, 'old configuration still in force: new.example 554')

    # -- wrong type (not a syntax error): also refused as a whole
    with open(mx.conffile, 'w') as f:
        f.write(good_text.replace('domains = [ "example.com" ];',
                                  'domains = [ "example.com", "new.example" ];')
                .replace('workers = 2;', 'workers = "two";'))
    loglen = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: re.search(re.escape(mx.conffile) + r':\d+:', mx.log()[loglen:]), 5),
       'wrong type on HUP: error logged')
    ok(wait_for(lambda: 'reload failed, keeping the running configuration' in mx.log()[loglen:], 10),
       'wrong type on HUP: the reload is over (logged), the old configuration kept')
    is_(rcpt_code(mx, 'bob@new.example'), 554, 'half-good file not applied: new.example still 554')

    # -- good changed file: new relay domain for new sessions
    mx.write_conf(conf={'relay': {'domains': ['example.com', 'new.example'],
                                  'networks': ['192.0.2.0/24']}})
    mx.hup()
    ok(wait_for(lambda: rcpt_code(mx, 'bob@new.example') == 250, 5, 0.2),
       'after HUP with a good file: new.example accepted in a new session')
    is_(rcpt_code(mx, 'bob@other.example'), 554, 'other domains still refused')

    # the old session survived both reloads and finishes its transaction
    reply_is(old.cmd('RCPT TO:<bob@example.com>'), 250, None, 'old session: RCPT after reloads')
    reply_is(old.cmd('RCPT TO:<bob@new.example>'), 554, '5.7.1',
             'old session keeps the configuration it started with')
    d, f = old.data(BODY)
    reply_is(f, 250, None, 'old session: message relayed after reloads')
    reply_is(old.cmd('QUIT'), 221, None, 'old session: QUIT')

    # a burst of HUPs does no harm
    loaded = mx.log().count('configuration reloaded')
    for _ in range(5):
        mx.hup()
        time.sleep(0.02)
    ok(wait_for(lambda: mx.log().count('configuration reloaded') > loaded, 10),
       'the burst of HUPs reloaded the file')
    ok(mx.alive(), 'alive after a burst of HUPs')
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    res = c.transaction('alice@example.org', ['carol@new.example'], BODY)
    reply_is(res['dot'], 250, None, 'message to the new domain after the HUP burst')
    c.quit()

    ok(up.wait_messages(2, 10), 'upstream got both messages')
    check_stream(up, 2, 'upstream')
    mx.finish()


run(main)
