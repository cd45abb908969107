#!/usr/bin/python3
# Third-party filter modules: the example filters/examples/rcpt_allow.so
# loaded by absolute and by relative path does its job through the proxy;
# the loader refuses bad modules (wrong ABI, no entry point, ...) in
# `frontmx -t`, at start and on SIGHUP (the old configuration keeps
# serving), naming the .so and the reason.
import os
import re
import shutil
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

SENDER = 'sender@example.org'
RELAY = {'domains': ['example.com', 'example.org'], 'networks': ['192.0.2.0/24']}


def body(n):
    return b'From: sender@example.org\r\nSubject: module test %d\r\n\r\nbody %d\r\n' % (n, n)


def allow_filter(module, allow='alice@example.com', **kw):
    e = {'name': 'allow', 'module': module, 'options': {'allow': allow}}
    e.update(kw)
    return e


def rcpt_reply(mx, rcpt):
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    c.cmd('MAIL FROM:<%s>' % SENDER)
    r = c.cmd('RCPT TO:<%s>' % rcpt)
    c.quit()
    return r


def refused_module(name, so, reason_re):
    """frontmx -t and a daemon start with this module: non-zero, clear message."""
    t = Frontmx(None, name='%s (-t)' % name, start=False,
                conf={'filters': [allow_filter(so)]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), '%s: frontmx -t exits non-zero (rc=%s)' % (name, rc))
    like(out, re.escape(so) + ': ', '%s: -t names the .so path' % name)
    like(out, reason_re, '%s: -t says why' % name)
    no_sanitizer(out, '%s: -t' % name)
    t.start(expect_start=False)
    try:
        rc = t.proc.wait(timeout=10)
    except Exception:
        rc = None
    ok(rc not in (0, None), '%s: the daemon refuses to start (rc=%s)' % (name, rc))
    like(t.log(), re.escape(so) + ': .*' + reason_re, '%s: daemon says which .so and why' % name)
    t.check_sanitizers('%s: no sanitizer reports' % name)


def main():
    bad_abi, no_entry = plugin('bad_abi'), plugin('no_entry')
    require_modules(EXAMPLE_MODULE, bad_abi, no_entry, plugin('null_entry'), plugin('bad_name'))

    # -- rcpt_allow by absolute path
    up = Upstream()
    mx = Frontmx(up, conf={'relay': RELAY, 'filters': [allow_filter(EXAMPLE_MODULE)]})
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, 'MAIL 250')
    reply_is(c.cmd('RCPT TO:<alice@example.com>'), 250, None, 'allowed rcpt alice@example.com: 250')
    r = c.cmd('RCPT TO:<mallory@example.com>')
    reply_is(r, 550, '5.1.1', 'other rcpt: 550 5.1.1')
    is_(r.lines, ['5.1.1 <mallory@example.com>: recipient not allowed here'],
        "other rcpt: the module's reply text")
    reply_is(c.cmd('RCPT TO:<ALICE@Example.COM>'), 250, None, 'allow-list ignores case: 250')
    reply_is(c.cmd('RCPT TO:<postmaster@example.org>'), 250, None, 'postmaster always allowed: 250')
    d, f = c.data(body(1))
    reply_is(f, 250, None, 'message to the allowed recipients relayed')
    c.quit()
    ok(up.wait_messages(1, 5), 'upstream got the message')
    if up.messages:
        m = up.messages[0]
        is_([x.lower() for x in m.rcpts], ['alice@example.com', 'alice@example.com',
                                           'postmaster@example.org'],
            'upstream envelope: only the allowed recipients')
        is_(fields_named(m.data, 'X-Rcpt-Allow'), [b'X-Rcpt-Allow: checked 4 recipients\r\n'],
            'relayed message carries X-Rcpt-Allow (4 recipients checked)')
        ok(m.data.endswith(b'\r\n\r\nbody 1\r\n'), 'body intact')
    ok(not any('mallory' in x for x in up.commands()), 'the refused recipient never reached the upstream')

    # only refused recipients: no DATA at all
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    r = c.transaction(SENDER, ['mallory@example.com', 'trudy@example.org'], body(2))
    ok(all(x.code == 550 for x in r['rcpt']), 'two refused recipients: both 550')
    reply_is(c.cmd('DATA'), 554, None, 'DATA without an accepted recipient: 554')
    c.quit()
    check_stream(up, 1, 'upstream')
    mx.finish()

    # -- relative module path: from the working directory, never the library path
    up = Upstream()
    rel = Frontmx(up, name='frontmx (relative module path)', start=False,
                  conf={'relay': RELAY, 'filters': [allow_filter('rcpt_allow.so')]})
    shutil.copy(EXAMPLE_MODULE, os.path.join(rel.dir, 'rcpt_allow.so'))
    rel.start()
    reply_is(rcpt_reply(rel, 'alice@example.com'), 250, None, 'relative path: allowed 250')
    reply_is(rcpt_reply(rel, 'eve@example.com'), 550, '5.1.1', 'relative path: module active, 550')
    rel.finish()
    t = Frontmx(None, name='system library name', start=False,
                conf={'filters': [allow_filter('libc.so.6')]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), 'module = "libc.so.6": not searched in the system library path (rc=%s)' % rc)
    like(out, r'libc\.so\.6: ', 'module = "libc.so.6": error names it')

    # -- refused modules
    refused_module('bad_abi.so', bad_abi, r'ABI 2\.0.*provides 1\.\d+')
    refused_module('no_entry.so', no_entry, r'no fmx_filter_entry symbol')
    refused_module('null_entry.so', plugin('null_entry'), r'returned NULL')
    refused_module('bad_name.so', plugin('bad_name'), r'invalid filter name')
    missing = os.path.join(tmpdir('fmx-nomod-'), 'missing.so')
    refused_module('missing .so', missing, r'(?i:no such file)')
    # an options typo stops the start (init refuses)
    t = Frontmx(None, name='rcpt_allow with a misspelt option', start=False,
                conf={'filters': [{'name': 'allow', 'module': EXAMPLE_MODULE,
                                   'options': {'alow': 'alice@example.com'}}]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), 'misspelt module option: frontmx -t fails')
    like(out, r'allow', 'misspelt module option: the message names the filter')

    # -- SIGHUP with a bad module keeps the running configuration
    up = Upstream()
    mx = Frontmx(up, name='frontmx (HUP)', conf={'relay': RELAY, 'filters': [allow_filter(EXAMPLE_MODULE)]})
    reply_is(rcpt_reply(mx, 'bob@example.com'), 550, '5.1.1', 'before HUP: bob refused')
    mx.write_conf(conf={'relay': RELAY, 'filters': [allow_filter(bad_abi)]})
    loglen = len(mx.log())
    mx.hup()
    ok(wait_for(lambda: re.search(re.escape(bad_abi) + r': .*ABI 2\.0', mx.log()[loglen:]), 5),
       'HUP with bad_abi.so: the log names the .so and the ABI')
    ok(wait_for(lambda: 'reload failed, keeping the running configuration' in mx.log()[loglen:], 10),
       'HUP with bad_abi.so: the reload is over (logged), the old configuration kept')
    ok(mx.alive(), 'daemon alive after the refused reload')
    reply_is(rcpt_reply(mx, 'alice@example.com'), 250, None, 'old configuration serves: alice 250')
    reply_is(rcpt_reply(mx, 'bob@example.com'), 550, '5.1.1', 'old configuration serves: bob still 550')
    r = send(mx, SENDER, ['alice@example.com'], body(3))
    reply_is(r['dot'], 250, None, 'old configuration serves: message relayed')
    ok(up.wait_messages(1, 5) and len(fields_named(up.messages[0].data, 'X-Rcpt-Allow')) == 1,
       'old configuration serves: rcpt_allow still adds X-Rcpt-Allow')
    # a good reload afterwards does apply
    mx.write_conf(conf={'relay': RELAY, 'filters': [allow_filter(EXAMPLE_MODULE, allow='bob@example.com')]})
    mx.hup()
    ok(wait_for(lambda: rcpt_reply(mx, 'bob@example.com').code == 250, 5, 0.2),
       'HUP with a good file: bob now allowed')
    reply_is(rcpt_reply(mx, 'alice@example.com'), 550, '5.1.1', 'after the good HUP: alice refused')
    check_stream(up, 1, 'HUP upstream')
    mx.finish()


run(main)
