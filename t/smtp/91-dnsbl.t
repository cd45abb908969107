#!/usr/bin/python3
# The built-in dnsbl filter (issue 12 section 2): zones written as
# Postfix's postscreen_dnsbl_sites (DOMAIN[=FILTER][*WEIGHT]), a score
# threshold, allow lists with negative weights, answers outside the
# filter ignored, IPv4 and IPv6 reversal, parallel lookups, a shared
# cache, the verdict at connect or at RCPT, DNS trouble -> on_error, and
# configuration errors at FILE:LINE.  Clients come through PROXY v1
# headers so that any address can be the client on loopback; the lists
# are served by fakedns, which counts the queries.
import ipaddress
import os
import re
import subprocess
import sys
import time
import urllib.request
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
import fmx  # noqa: E402
from fmx_tls import proxy_v1  # noqa: E402
from fakedns import FakeDNS  # noqa: E402

BL = 'zen.example.net'
WL = 'list.dnswl.example.net'
BL2 = 'b.example.org'
BODY = b'From: a@example.org\r\nTo: bob@example.com\r\nSubject: dnsbl\r\n\r\nhi\r\n'


def rev(addr):
    return ipaddress.ip_address(addr).reverse_pointer.rsplit('.', 2)[0]


def q(addr, zone):
    return '%s.%s' % (rev(addr), zone)


ZONE = {
    # 192.0.2.10: on the block list only
    q('192.0.2.10', BL): [('A', '127.0.0.2')],
    # 192.0.2.11: on the block list and on the allow list
    q('192.0.2.11', BL): [('A', '127.0.0.2')],
    q('192.0.2.11', WL): [('A', '127.0.10.3')],
    # 192.0.2.12: the block list answers outside its filter
    q('192.0.2.12', BL): [('A', '127.0.0.1')],
    # 192.0.2.13: the allow list answers outside its filter (still blocked)
    q('192.0.2.13', BL): [('A', '127.0.0.4')],
    q('192.0.2.13', WL): [('A', '127.0.10.1')],
    # 192.0.2.14: weight 1 of the second list alone stays under 2
    q('192.0.2.14', BL2): [('A', '127.0.0.2')],
    # 192.0.2.15: both block lists, two zones named
    q('192.0.2.15', BL): [('A', '127.0.0.3')],
    q('192.0.2.15', BL2): [('A', '127.0.0.2')],
    # 192.0.2.16: SERVFAIL, 192.0.2.17: no answer at all
    q('192.0.2.16', BL): 'SERVFAIL',
    q('192.0.2.17', BL): 'TIMEOUT',
    # 192.0.2.18: the "query refused" answer without a filter is no listing
    q('192.0.2.18', BL2): [('A', '127.255.255.254')],
    # 192.0.2.19: cached listing
    q('192.0.2.19', BL): [('A', '127.0.0.2')],
    # IPv6
    q('2001:db8::25', BL): [('A', '127.0.0.2')],
}

ZONES = ['%s=127.0.0.[2..11]*2' % BL, '%s=127.0.[0..255].[2..3]*-2' % WL, BL2]


def start(dns, up, name, **options):
    opts = {'zones': ZONES, 'threshold': 2}
    extra = {k: v for k, v in options.items() if k in ('on_error', 'delay_reject')}
    mport = options.pop('metrics_port', None)
    opts.update({k: v for k, v in options.items() if k not in extra})
    mx = Frontmx(up, start=False, name=name)
    mx.write_conf(conf={
        'metrics': {'listen': '127.0.0.1:%d' % mport} if mport else None,
        'listen': [{'address': '127.0.0.1:%d' % mx.port, 'proxy_protocol': True,
                    'proxy_from': ['127.0.0.0/8']}],
        'dns': {'forward': [dns.address]},
        'timeouts': {'dns': 5},
        'filters': [dict({'name': 'dnsbl', 'options': opts}, **extra)],
    })
    mx.start()
    return mx


def connect(mx, addr):
    c = SmtpClient(mx.port, timeout=15)
    c.send(proxy_v1('TCP6' if ':' in addr else 'TCP4', addr,
                    '2001:db8::1' if ':' in addr else '192.0.2.1', 40000, 25))
    return c


def relayed(mx, up, addr, name):
    c = connect(mx, addr)
    reply_is(c.greeting(timeout=15), 220, None, '%s: greeted' % name)
    c.ehlo('helo.example')
    r = c.transaction('%s@example.org' % name, ['bob@example.com'], BODY)
    reply_is(r['dot'], 250, None, '%s: relayed' % name)
    c.quit()


def refused_at_connect(mx, addr, name, zones):
    c = connect(mx, addr)
    r = c.greeting(timeout=15)
    reply_is(r, 554, '5.7.1', '%s: 554 5.7.1 as the greeting' % name)
    for z in zones:
        like(r.text, r'\b%s\b' % re.escape(z), '%s: the reply names %s' % (name, z))
    like(r.text, r'\[%s\]' % re.escape(addr), '%s: the reply names the client' % name)
    ok(c.expect_close(), '%s: then the connection is closed' % name)
    return r


def count(dns, name):
    return len([x for x in dns.queries if x[0] == name])


def main():
    dns = FakeDNS(ZONE).start()
    fmx.register_cleanup(dns.stop)
    up = Upstream()

    # ---- at connect (the default) ----
    mx = start(dns, up, 'dnsbl at connect')
    r = refused_at_connect(mx, '192.0.2.10', 'listed', [BL])
    unlike(r.text, re.escape(WL), 'listed: the allow list is not named')
    refused_at_connect(mx, '192.0.2.15', 'two lists', [BL, BL2])
    refused_at_connect(mx, '192.0.2.13', 'allow-list answer outside its filter', [BL])
    refused_at_connect(mx, '2001:db8::25', 'IPv6 client', [BL])
    ok(('%s.%s' % ('.'.join(reversed(ipaddress.ip_address('2001:db8::25').exploded
                                     .replace(':', ''))), BL), 'A') in dns.queries,
       'IPv6: looked up as 32 reversed nibbles')
    relayed(mx, up, '192.0.2.11', 'allowlisted')
    relayed(mx, up, '192.0.2.12', 'answer-outside-filter')
    relayed(mx, up, '192.0.2.14', 'under-threshold')
    relayed(mx, up, '192.0.2.18', 'query-refused-code')
    relayed(mx, up, '192.0.2.99', 'not-listed')
    ok(all(count(dns, q('192.0.2.10', z)) == 1 for z in (BL, WL, BL2)),
       'every zone was asked once for one client')
    ok(not [m for m in up.messages if m.mail_from.startswith('listed')],
       'nothing of a refused client reached the upstream')
    like(mx.log(), r'filter=dnsbl phase=connect result=listed .*reason=client \[192\.0\.2\.10\] '
         r'score=2 %s=127\.0\.0\.2\*2' % re.escape(BL), 'the log says why, with the answer')

    # Cache: the second connection of a client makes no new query, from
    # whichever worker takes it (two workers).
    n = count(dns, q('192.0.2.19', BL))
    for i in range(4):
        refused_at_connect(mx, '192.0.2.19', 'cached #%d' % i, [BL])
    is_(count(dns, q('192.0.2.19', BL)) - n, 1, 'cache: 4 connections, one query per zone')
    is_(count(dns, q('192.0.2.99', BL)), 1, 'cache: a negative answer is kept too')
    relayed(mx, up, '192.0.2.99', 'not-listed-again')
    is_(count(dns, q('192.0.2.99', BL)), 1, 'cache: ... and used')

    # Lookups run in parallel: with the block list held, the others are
    # asked before it answers.
    dns.hold(q('192.0.2.30', BL))
    c = connect(mx, '192.0.2.30')
    ok(wait_for(lambda: dns.waiting(q('192.0.2.30', BL)) >= 1, 10), 'held lookup in flight')
    ok(wait_for(lambda: count(dns, q('192.0.2.30', WL)) == 1 and
                count(dns, q('192.0.2.30', BL2)) == 1, 10),
       'parallel: the other zones were asked while the first one waits')
    dns.set(q('192.0.2.30', BL), [('A', '127.0.0.2')])
    dns.release()
    reply_is(c.greeting(timeout=15), 554, '5.7.1', 'parallel: the late answer decides')
    c.close()

    # DNS trouble: the filter's on_error (default tempfail).
    c = connect(mx, '192.0.2.16')
    r = c.greeting(timeout=15)
    reply_is(r, 421, '4.7.1', 'SERVFAIL: on_error tempfail: 421 as the greeting')
    ok(c.expect_close(), 'SERVFAIL: then closed')
    c.close()
    c = connect(mx, '192.0.2.17')
    r = c.greeting(timeout=20)
    reply_is(r, 421, '4.7.1', 'timeout: on_error tempfail: 421 as the greeting')
    c.close()
    like(mx.log(), r'filter=dnsbl phase=connect failed, on_error=tempfail', 'the log says on_error')
    mx.finish()

    # on_error = "accept": DNS trouble lets the client in.
    mx = start(dns, up, 'dnsbl on_error accept', on_error='accept')
    relayed(mx, up, '192.0.2.16', 'servfail-accepted')
    # A failed lookup that cannot change the verdict is no error: listed
    # by two block lists, one of them failing, the other already at 2.
    dns.set(q('192.0.2.40', BL2), 'SERVFAIL')
    dns.set(q('192.0.2.40', BL), [('A', '127.0.0.2')])
    refused_at_connect(mx, '192.0.2.40', 'listed despite a failed list', [BL])
    mx.finish()

    # ---- hostile and odd cases ----
    mx = start(dns, up, 'dnsbl hostile')
    # Many records in one answer: the first ones decide, nothing overflows.
    dns.set(q('192.0.2.50', BL), [('A', '127.0.0.1')] * 7 + [('A', '127.0.%d.1' % i) for i in range(40)])
    relayed(mx, up, '192.0.2.50', 'many-records-none-matching')
    dns.set(q('192.0.2.51', BL), [('A', '127.0.0.2')] + [('A', '127.0.1.%d' % i) for i in range(60)])
    refused_at_connect(mx, '192.0.2.51', 'many records, the first matching', [BL])
    # A CNAME on the way (libunbound follows it): the A record counts.
    dns.set(q('192.0.2.52', BL), [('CNAME', 'listed.zen.example.net')])
    dns.set('listed.zen.example.net', [('A', '127.0.0.3')])
    refused_at_connect(mx, '192.0.2.52', 'CNAME to a listing', [BL])
    # NODATA (the name exists, no A record) is not listed.
    dns.set(q('192.0.2.53', BL), [('TXT', 'listed but no A')])
    relayed(mx, up, '192.0.2.53', 'nodata')
    # An IPv4-mapped IPv6 client is looked up as the IPv4 address it is.
    c = connect(mx, '::ffff:192.0.2.10')
    r = c.greeting(timeout=15)
    reply_is(r, 554, '5.7.1', 'IPv4-mapped IPv6 client: looked up as IPv4')
    c.close()
    # The client leaves while its lookup is held: the answer finds no
    # session (no callback after close; ASan would see a use after free).
    dns.hold(q('192.0.2.54', BL))
    c = connect(mx, '192.0.2.54')
    ok(wait_for(lambda: dns.waiting(q('192.0.2.54', BL)) >= 1, 10), 'gone: lookup held')
    c.close()
    ok(wait_for(lambda: re.search(r'smtp disconnect from unknown\[192\.0\.2\.54\]', mx.log()), 10),
       'gone: the session ended while its lookup was in flight')
    dns.release()
    ok(wait_for(lambda: dns.answered(q('192.0.2.54', BL)) >= 1, 10), 'gone: the answer came later')
    relayed(mx, up, '192.0.2.99', 'after-gone')
    # An early talker (commands before the greeting) is refused all the same.
    dns.hold(q('192.0.2.55', BL))
    dns.set(q('192.0.2.55', BL), [('A', '127.0.0.2')])
    c = connect(mx, '192.0.2.55')
    ok(wait_for(lambda: dns.waiting(q('192.0.2.55', BL)) >= 1, 10), 'pregreet: lookup held')
    c.send(b'EHLO early.example\r\nMAIL FROM:<a@example.org>\r\n')
    dns.release()
    r = c.greeting(timeout=15)
    reply_is(r, 554, '5.7.1', 'pregreet: 554 as the first thing it reads')
    ok(c.expect_close(), 'pregreet: closed, its commands never answered')
    # SIGHUP while a lookup is held: that session keeps the old zones and
    # verdict, the next one uses the new configuration.
    dns.hold(q('192.0.2.56', BL))
    dns.set(q('192.0.2.56', BL), [('A', '127.0.0.2')])
    c = connect(mx, '192.0.2.56')
    ok(wait_for(lambda: dns.waiting(q('192.0.2.56', BL)) >= 1, 10), 'sighup: lookup held')
    text = open(mx.conffile).read().replace('"%s=127.0.0.[2..11]*2"' % BL, '"%s=127.0.0.[9..11]*2"' % BL)
    with open(mx.conffile, 'w') as f:
        f.write(text)
    mx.hup()
    ok(wait_for(lambda: 'configuration reloaded' in mx.log(), 10), 'sighup: reloaded')
    dns.release()
    reply_is(c.greeting(timeout=15), 554, '5.7.1', 'sighup: the held session keeps its configuration')
    c.close()
    relayed(mx, up, '192.0.2.56', 'sighup-new-filter')
    mx.finish()

    # Every zone listing: the reply stays one bounded line and names zones
    # whole (no zone cut in the middle).
    zones = ['z%02d.%s.example.net' % (i, 'x' * 40) for i in range(32)]
    for z in zones:
        dns.set(q('192.0.2.60', z), [('A', '127.0.0.2')])
    mx = start(dns, up, 'dnsbl 32 zones', zones=zones, threshold=1)
    c = connect(mx, '192.0.2.60')
    r = c.greeting(timeout=15)
    reply_is(r, 554, '5.7.1', '32 listings: 554')
    line = r.raw.decode()
    ok(len(line) <= 512 and line.count('\r\n') == 1, '32 listings: one line of %d octets' % len(line))
    named = re.findall(r'z\d\d\.x+\.example\.net', line)
    ok(len(named) >= 3 and all(n in zones for n in named), '32 listings: %d zones named, whole' % len(named))
    c.close()
    ok(all(count(dns, q('192.0.2.60', z)) == 1 for z in zones), '32 zones: each asked once')
    mx.finish()

    # ---- metrics: hits per zone, refused connections ----
    mport = free_port()
    mx = start(dns, up, 'dnsbl metrics', metrics_port=mport)
    refused_at_connect(mx, '192.0.2.10', 'metrics: listed', [BL])
    refused_at_connect(mx, '192.0.2.10', 'metrics: listed again (cached)', [BL])
    relayed(mx, up, '192.0.2.11', 'metrics-allowlisted')
    relayed(mx, up, '192.0.2.99', 'metrics-clean')
    text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % mport, timeout=10).read().decode()

    def sample(name, **labels):
        lab = ','.join('%s="%s"' % kv for kv in labels.items())
        m = re.search(r'(?m)^%s\{%s\} (\S+)$' % (re.escape(name), re.escape(lab)), text)
        return float(m.group(1)) if m else None

    is_(sample('frontmx_dnsbl_hits_total', zone=BL), 3.0,
        'metrics: frontmx_dnsbl_hits_total{zone="%s"} 3 (two listed sessions, one allowlisted)' % BL)
    is_(sample('frontmx_dnsbl_hits_total', zone=WL), 1.0,
        'metrics: frontmx_dnsbl_hits_total{zone="%s"} 1' % WL)
    is_(sample('frontmx_dnsbl_hits_total', zone=BL2), None, 'metrics: no series for a zone never hit')
    is_(sample('frontmx_connections_refused_total', reason='dnsbl'), 2.0,
        'metrics: frontmx_connections_refused_total{reason="dnsbl"} 2')
    mx.finish()

    # ---- at RCPT ----
    mx = start(dns, up, 'dnsbl at rcpt', when='rcpt')
    c = connect(mx, '192.0.2.10')
    reply_is(c.greeting(timeout=15), 220, None, 'rcpt: greeted although listed')
    c.ehlo('helo.example')
    reply_is(c.cmd('MAIL FROM:<rcpt@example.org>'), 250, None, 'rcpt: MAIL 250')
    r = c.cmd('RCPT TO:<bob@example.com>')
    reply_is(r, 554, '5.7.1', 'rcpt: RCPT 554 5.7.1')
    like(r.text, re.escape(BL), 'rcpt: the reply names the zone')
    r = c.cmd('RCPT TO:<carol@example.com>')
    reply_is(r, 554, '5.7.1', 'rcpt: every RCPT refused')
    c.quit()
    relayed(mx, up, '192.0.2.11', 'rcpt-allowlisted')
    # The verdict waits for a lookup still running at RCPT.
    dns.hold(q('192.0.2.31', BL))
    dns.set(q('192.0.2.31', BL), [('A', '127.0.0.5')])
    c = connect(mx, '192.0.2.31')
    reply_is(c.greeting(timeout=15), 220, None, 'rcpt: greeted while the lookup runs')
    c.ehlo('helo.example')
    reply_is(c.cmd('MAIL FROM:<late@example.org>'), 250, None, 'rcpt: MAIL 250 while the lookup runs')
    c.send(b'RCPT TO:<bob@example.com>\r\n')
    ok(wait_for(lambda: dns.waiting(q('192.0.2.31', BL)) >= 1, 10), 'rcpt: lookup still held')
    dns.release()
    reply_is(c.reply(timeout=15), 554, '5.7.1', 'rcpt: the RCPT waited for the answer')
    c.quit()
    like(mx.log(), r'filter=dnsbl phase=rcpt result=listed', 'rcpt: logged at rcpt')
    mx.finish()

    # ---- policy: mapping, per domain, dry run ----
    def start_policy(name, policy, **kw):
        m = Frontmx(up, start=False, name=name)
        entry = dict({'name': 'dnsbl', 'options': {'zones': ZONES, 'threshold': 2,
                                                   'when': kw.pop('when', 'connect')}}, **kw)
        m.write_conf(conf={
            'listen': [{'address': '127.0.0.1:%d' % m.port, 'proxy_protocol': True,
                        'proxy_from': ['127.0.0.0/8']}],
            'dns': {'forward': [dns.address]},
            'timeouts': {'dns': 5},
            'relay': {'domains': ['example.com', 'example.org']},
            'filters': [entry],
            'policy': policy,
        })
        m.start()
        return m

    def tagged(m, sender):
        msgs = [x for x in up.messages if x.mail_from == sender]
        return msgs[0].data.decode('utf-8', 'replace') if msgs else ''

    # A domain whose policy maps listed to accept gets its mail; the others not.
    mx = start_policy('dnsbl per-domain policy', {'domains': [
        {'domain': 'example.org', 'dnsbl': {'listed': 'accept'}}]}, when='rcpt')
    c = connect(mx, '192.0.2.10')
    reply_is(c.greeting(timeout=15), 220, None, 'per-domain: greeted')
    c.ehlo('helo.example')
    reply_is(c.cmd('MAIL FROM:<pd@example.org>'), 250, None, 'per-domain: MAIL')
    reply_is(c.cmd('RCPT TO:<bob@example.com>'), 554, '5.7.1', 'per-domain: default policy refuses')
    reply_is(c.cmd('RCPT TO:<ann@example.org>'), 250, None, 'per-domain: listed = accept for example.org')
    reply_is(c.data(BODY)[1], 250, None, 'per-domain: relayed to example.org')
    c.quit()
    mx.finish()

    # listed = "tag": relayed with the tag header naming the result.
    mx = start_policy('dnsbl tag', {'default': {'dnsbl': {'listed': 'tag'}}})
    c = connect(mx, '192.0.2.10')
    reply_is(c.greeting(timeout=15), 220, None, 'tag: greeted although listed')
    c.ehlo('helo.example')
    r = c.transaction('tag@example.org', ['bob@example.com'], BODY)
    reply_is(r['dot'], 250, None, 'tag: relayed')
    c.quit()
    ok(wait_for(lambda: tagged(mx, 'tag@example.org'), 10), 'tag: reached the upstream')
    like(tagged(mx, 'tag@example.org'), r'X-Frontmx-Tag: dnsbl=listed', 'tag: X-Frontmx-Tag: dnsbl=listed')
    mx.finish()

    # dry_run: relayed, logged and tagged as what would have happened.
    mx = start_policy('dnsbl dry run', {}, dry_run=True)
    c = connect(mx, '192.0.2.10')
    reply_is(c.greeting(timeout=15), 220, None, 'dry run: greeted although listed')
    c.ehlo('helo.example')
    r = c.transaction('dry@example.org', ['bob@example.com'], BODY)
    reply_is(r['dot'], 250, None, 'dry run: relayed')
    c.quit()
    like(mx.log(), r'filter=dnsbl dry-run: would reject', 'dry run: logged')
    ok(wait_for(lambda: tagged(mx, 'dry@example.org'), 10), 'dry run: reached the upstream')
    like(tagged(mx, 'dry@example.org'), r'X-Frontmx-Tag: dnsbl=listed \(dry-run: would reject\)',
         'dry run: tagged with what would have happened')
    mx.finish()

    # ---- frontmx check: a client refused at connect is a verdict too ----
    d = tmpdir('fmx-91-check-')
    conf = os.path.join(d, 'check.conf')
    with open(conf, 'w') as f:
        f.write(render_conf({
            'hostname': 'mx.test.example',
            'listen': [{'address': '127.0.0.1:%d' % free_port()}],
            'upstream': {'address': '127.0.0.1:%d' % free_port()},
            'relay': {'domains': ['example.com']},
            'dns': {'reverse': False},
            'filters': [{'name': 'dnsbl', 'options': {'zones': ZONES, 'threshold': 2}}]}))
    for ip, code, verdict in (('192.0.2.10', 2, r'verdict: reject 554 5\.7\.1 Service unavailable; '
                               r'client \[192\.0\.2\.10\] blocked using zen\.example\.net$'),
                              ('192.0.2.11', 0, r'verdict: accept 250 ')):
        p = subprocess.run([frontmx_path(), 'check', '-c', conf, '--dns', dns.address, '--ip', ip,
                            '--from', 'a@example.org', '--rcpt', 'bob@example.com', '-'],
                           input=BODY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                           env=dict(os.environ, ASAN_OPTIONS='detect_leaks=1'))
        is_(p.returncode, code, 'check --ip %s: exit %d' % (ip, code))
        like(p.stdout.decode().strip().splitlines()[-1] if p.stdout.strip() else '', verdict,
             'check --ip %s: the verdict line' % ip)

    # ---- configuration ----
    def conf_t(zones_text, extra=''):
        text = ('hostname = "mx.test.example";\n'
                'listen = ( { address = "127.0.0.1:%d"; } );\n' % free_port() +
                'upstream = { address = "127.0.0.1:%d"; };\n' % free_port() +
                'dns = { reverse = false; };\n'
                'filters = (\n'
                '  { name = "dnsbl";\n'
                '    options = { zones = %s;%s };\n' % (zones_text, extra or ' threshold = 2;') +
                '  }\n'
                ');\n')
        return run_frontmx_t(text)

    def many(n):
        return '[ %s ]' % ', '.join('"l%d.example.net*%d"' % (i, 1 - 2 * (i % 2)) for i in range(n))

    rc, out, path = conf_t(many(32))
    is_(rc, 0, 'config: 32 zones (the limit) accepted: %s' % out.strip()[:200])
    rc, out, path = conf_t(many(33))
    ok(rc not in (0, None), 'config: 33 zones refused')
    like(out, r'%s:6: filter dnsbl: option zones: 33 zones, at most 32' % re.escape(path),
         'config: 33 zones: FILE:LINE and why')
    rc, out, path = conf_t('"%s"' % BL)
    is_(rc, 0, 'config: one zone as a plain string is accepted')
    for bad, why in (
            ('zen.example.net*', r"no weight after '\*'"),
            ('zen.example.net*x', 'the weight is not an integer'),
            ('zen.example.net*2000', 'out of range'),
            ('zen..example.net', 'not a domain name'),
            ('=127.0.0.2', 'not a domain name'),
            ('zen.example.net=', "no answer filter after '='"),
            ('zen.example.net=127.0.0', 'not d.d.d.d'),
            ('zen.example.net=127.0.0.256', 'not d.d.d.d'),
            ('zen.example.net=127.0.0.[5..3]', 'not d.d.d.d'),
            ('zen.example.net=127.0.0.[2..', 'not d.d.d.d'),
            ('zen.example.net=127.0.0.[2;;3]', 'not d.d.d.d'),
            ('zen.example.net=127.0.0.2.1', 'not d.d.d.d'),
            ('zen.example.net 127.0.0.2', 'not a domain name'),
            ('x' * 189 + '.example', 'too long')):
        rc, out, path = conf_t('[ "%s", "%s" ]' % (ZONES[0], bad))
        ok(rc not in (0, None), 'config: zone %r refused' % bad[:40])
        like(out, r"%s:6: filter dnsbl: option zones: '.*': .*%s" % (re.escape(path), why),
             'config: zone %r: FILE:LINE and why' % bad[:40])
    rc, out, path = conf_t('[ "%s" ]' % ZONES[0], ' when = "later";')
    like(out, r'%s:6: filter dnsbl: option when: .*connect.*rcpt' % re.escape(path),
         'config: when = "later" refused at FILE:LINE')
    rc, out, path = conf_t('[ "%s" ]' % ZONES[0], ' threshold = 0;')
    like(out, r'%s:6: filter dnsbl: option threshold' % re.escape(path),
         'config: threshold 0 refused at FILE:LINE')
    rc, out, path = conf_t('[ ]')
    like(out, r'%s:6: filter dnsbl: option zones: at least one zone' % re.escape(path),
         'config: no zone refused at FILE:LINE')
    rc, out, path = conf_t('[ "%s" ]' % ZONES[0], ' bogus = 1;')
    like(out, r'%s:6: filter dnsbl: option bogus' % re.escape(path),
         'config: unknown option refused at FILE:LINE')
    rc, out, path = conf_t('( [ "a" ] )')
    like(out, r'%s:\d+: .*must be a list of strings' % re.escape(path),
         'config: a nested list refused at FILE:LINE')


run(main, timeout=150)
