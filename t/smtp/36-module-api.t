#!/usr/bin/python3
# Filter module API 1.2 (issue 10): the typed option getters
# (api->option_string/_bool/_uint/_list/_check) and compatibility.
#
# - t/plugins/typed_options.so reads its options with the getters: every
#   boolean spelling of the one set (yes/no, true/false, on/off, 1/0, any
#   case), a bounded number, a string, a comma list; the message shows
#   what it read.  A bad value or a misspelt key stops `frontmx -t` with
#   "FILE:LINE: filter NAME: option KEY: ..." (the daemon refuses to
#   start likewise).
# - build/plugins/abi-prev/prev_minor.so, built against the 1.1 header
#   (t/plugins/abi-prev/frontmx_filter.h, never rebuilt against ours),
#   loads and works: string keys of get(), header_decode, set_reply.
# - A module of a newer minor still loads (appended members ignored),
#   one of another major is refused, as before the bump.
import os
import re
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_filters import *  # noqa: E402,F403

SENDER = 'sender@example.org'
PREV = os.path.join(os.path.dirname(plugin('x')), 'abi-prev', 'prev_minor.so')
BOOLS = [('yes', 1), ('no', 0), ('True', 1), ('FALSE', 0), ('on', 1), ('Off', 0),
         ('1', 1), ('0', 0)]


def body(n, subject=b'plain'):
    return (b'From: sender@example.org\r\nSubject: ' + subject +
            b'\r\nMessage-ID: <api%d@example.org>\r\n\r\nbody %d\r\n' % (n, n))


def typed(options):
    return {'name': 'typed', 'module': plugin('typed_options'), 'options': options}


def refused(options, want_re, name):
    """frontmx -t with these options fails, naming FILE:LINE, the filter and the option."""
    t = Frontmx(None, name=name, start=False, conf={'filters': [typed(options)]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), '%s: frontmx -t fails (rc=%s)' % (name, rc))
    like(out, re.escape(t.conffile) + r':\d+: filter typed: ' + want_re,
         '%s: FILE:LINE: filter typed: option ...' % name)
    no_sanitizer(out, '%s: -t' % name)
    return t


def main():
    require_modules(plugin('typed_options'), PREV, plugin('newer_minor'), plugin('bad_abi'))

    # -- typed options: every boolean spelling, a number, a string, a list
    up = Upstream()
    filters = [typed({'flag': spelling, 'count': 3 + i % 2, 'name': 'n%d' % i,
                      'items': ' a , b,,c '})
               for i, (spelling, _) in enumerate(BOOLS)]
    for i, f in enumerate(filters):
        f['name'] = 'typed%d' % i
    filters.append({'name': 'defaults', 'module': plugin('typed_options')})
    mx = Frontmx(up, conf={'filters': filters})
    r = send(mx, SENDER, ['rcpt@example.com'], body(1))
    reply_is(r['dot'], 250, None, 'typed options: message relayed')
    ok(up.wait_messages(1), 'typed options: the upstream got it')
    if up.messages:
        got = fields_named(up.messages[0].data, 'X-Typed-Options')
        facts = b' client=127.0.0.1 helo=client.example option.name=%s\r\n'
        want = [b'X-Typed-Options: flag=%d count=%d name=n%d items=a|b|c (3)'
                % (v, 3 + i % 2, i) + facts % (b'n%d' % i) for i, (_, v) in enumerate(BOOLS)]
        want.append(b'X-Typed-Options: flag=0 count=5 name=- items= (0)' + facts % b'-')
        is_(sorted(got), sorted(want), 'each spelling read as its boolean; number, '
            'string and list as written; defaults when unset; get() by FMX_GET_* names')
    mx.finish()

    # the daemon itself knows integer and boolean options as strings too
    t = Frontmx(None, name='libconfig types', start=False,
                conf={'filters': [typed({'flag': True, 'count': 10})]})
    rc, out = frontmx_t(t.conffile)
    is_(rc, 0, 'a libconfig boolean and integer are accepted (rc=%s)' % rc)

    # -- bad values: FILE:LINE: filter NAME: option KEY: ...
    refused({'flag': 'maybe'}, r'option flag: "maybe" is not a boolean \(yes/no, '
            r'true/false, on/off, 1/0\)', 'bad boolean')
    refused({'count': 11}, r'option count: "11" is not a number from 1 to 10',
            'number above the maximum')
    refused({'count': '-1'}, r'option count: "-1" is not a number from 1 to 10',
            'negative number')
    refused({'cuont': 2}, r'option cuont: unknown option \(known: flag, count, name, items\)',
            'misspelt option')
    t = refused({'flag': 'maybe'}, r'option flag', 'bad boolean at start')
    t.start(expect_start=False)
    try:
        rc = t.proc.wait(timeout=10)
    except Exception:
        rc = None
    ok(rc not in (0, None), 'bad boolean: the daemon refuses to start (rc=%s)' % rc)
    like(t.log(), r'filter typed: option flag: "maybe" is not a boolean',
         'bad boolean: the daemon says which filter and option')

    # rcpt_allow reads its options through the getters too
    t = Frontmx(None, name='rcpt_allow misspelt', start=False,
                conf={'filters': [{'name': 'allow', 'module': EXAMPLE_MODULE,
                                   'options': {'alow': 'alice@example.com'}}]})
    rc, out = frontmx_t(t.conffile)
    like(out, re.escape(t.conffile) + r':\d+: filter allow: option alow: unknown option '
         r'\(known: allow, allow_domains\)', 'rcpt_allow: a misspelt option is named')

    # -- a module built against the previous minor (1.1) loads and works
    up = Upstream()
    mx = Frontmx(up, conf={'filters': [{'name': 'prev', 'module': PREV,
                                        'options': {'tag': 'kept'}}]})
    c = SmtpClient(mx.port)
    c.greeting()
    c.ehlo()
    reply_is(c.cmd('MAIL FROM:<%s>' % SENDER), 250, None, '1.1 module: MAIL 250')
    r = c.cmd('RCPT TO:<refuse@example.com>')
    reply_is(r, 550, '5.7.1', '1.1 module: its RCPT refusal')
    is_(r.lines, ['5.7.1 refused by a module built for 1.1'], '1.1 module: its reply text')
    reply_is(c.cmd('RCPT TO:<rcpt@example.com>'), 250, None, '1.1 module: other RCPT 250')
    d, f = c.data(body(2, b'=?UTF-8?Q?Gr=C3=BC=C3=9Fe?='))
    reply_is(f, 250, None, '1.1 module: message relayed')
    c.quit()
    ok(up.wait_messages(1), '1.1 module: the upstream got it')
    if up.messages:
        is_(fields_named(up.messages[0].data, 'X-Prev-Minor'),
            [('X-Prev-Minor: built 1.1 core 1.%d client 127.0.0.1 tag kept subject Grüße\r\n'
              % abi_minor()).encode()],
            '1.1 module on this core: get() by string key, its option, header_decode')
    mx.finish()

    # -- newer minor loads, other major refused: unchanged by the bump
    t = Frontmx(None, name='newer minor', start=False,
                conf={'filters': [{'name': 'newer', 'module': plugin('newer_minor')}]})
    rc, out = frontmx_t(t.conffile)
    is_(rc, 0, 'a module of a newer minor loads (rc=%s)' % rc)
    t = Frontmx(None, name='other major', start=False,
                conf={'filters': [{'name': 'bad', 'module': plugin('bad_abi')}]})
    rc, out = frontmx_t(t.conffile)
    ok(rc not in (0, None), 'a module of another major is refused (rc=%s)' % rc)
    like(out, r'built for filter ABI 2\.0, frontmx provides 1\.%d' % abi_minor(),
         'another major: the refusal names both versions')


def abi_minor():
    """FMX_ABI_MINOR of the header this tree builds with."""
    with open(os.path.join(REPO, 'filters', 'frontmx_filter.h')) as f:
        return int(re.search(r'#define FMX_ABI_MINOR\s+(\d+)', f.read()).group(1))


run(main, timeout=120)
