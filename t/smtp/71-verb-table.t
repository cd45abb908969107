#!/usr/bin/python3
# The verb table: every verb frontmx knows (and a few it does not), with
# and without arguments, in every session state a client can put it in,
# each asked on a fresh connection.  One cell = the exact reply code and
# enhanced status code of today's main, then a NOOP that shows the
# session is still in step (or the close the reply announced).  It guards
# the move of the preconditions (needs HELO / MAIL / RCPT, allowed before
# TLS, takes arguments) into one verb table (issue 10).
#
# States: start (greeting only), helo (HELO), ehlo (EHLO), mail (EHLO,
# MAIL), rcpt (EHLO, MAIL, RCPT), rcpt-refused (its only RCPT refused),
# helo-rcpt (HELO, MAIL, RCPT), bdat-open (a BDAT chunk, not the LAST),
# done (a message delivered) on a listener without TLS; start, ehlo and
# mail on a STARTTLS listener (tls-*); on a tls = "required" listener
# before STARTTLS (req-start, req-ehlo) and inside TLS (req-tls: STARTTLS,
# EHLO; req-tls-mail: and MAIL); on a listener with auth = true before
# STARTTLS (auth-ehlo) and inside TLS before and after the new EHLO
# (auth-tls, auth-tls-ehlo, auth-tls-mail).
#
# Cells once answered against the RFCs and since fixed: unknown verbs
# 500 (was 502), 530 for every command but NOOP, EHLO, STARTTLS and QUIT
# before STARTTLS on a required listener (was MAIL only), 503 for RCPT
# and the rest between BDAT chunks (RCPT was taken).
#
# VERB_TABLE_DUMP=1 prints what main answers as a table to paste into
# EXPECT (how the table was made; every cell was then reviewed by hand).
import os
import sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
from fmx import *  # noqa: E402,F403
from fmx_tls import *  # noqa: E402,F403
from fmx_auth import AuthUpstream  # noqa: E402

MX = 'mx.test.example'
SENDER = 'alice@example.org'
RCPT = 'bob@example.com'

# (cell name, bytes sent).  A BDAT chunk travels with its command.
VERBS = [
    ('HELO', b'HELO'),
    ('HELO x', b'HELO client.example'),
    ('EHLO', b'EHLO'),
    ('EHLO x', b'EHLO client.example'),
    ('MAIL', b'MAIL'),
    ('MAIL x', ('MAIL FROM:<%s>' % SENDER).encode()),
    ('MAIL <>', b'MAIL FROM:<>'),
    ('RCPT', b'RCPT'),
    ('RCPT x', ('RCPT TO:<%s>' % RCPT).encode()),
    ('DATA', b'DATA'),
    ('DATA x', b'DATA now'),
    ('BDAT', b'BDAT'),
    ('BDAT 5', b'BDAT 5\r\nHello'),
    ('RSET', b'RSET'),
    ('RSET x', b'RSET now'),
    ('NOOP', b'NOOP'),
    ('NOOP x', b'NOOP now'),
    ('VRFY', b'VRFY'),
    ('VRFY x', b'VRFY bob'),
    ('EXPN', b'EXPN'),
    ('EXPN x', b'EXPN staff'),
    ('HELP', b'HELP'),
    ('HELP x', b'HELP MAIL'),
    ('STARTTLS', b'STARTTLS'),
    ('STARTTLS x', b'STARTTLS now'),
    ('AUTH', b'AUTH'),
    ('AUTH x', b'AUTH PLAIN AGFsaWNlAHNlY3JldA=='),
    ('XCLIENT x', b'XCLIENT ADDR=192.0.2.1'),
    ('XFORWARD x', b'XFORWARD ADDR=192.0.2.1'),
    ('LHLO x', b'LHLO client.example'),
    ('ETRN x', b'ETRN example.com'),
    ('XYZZY', b'XYZZY'),
    ('QUIT x', b'QUIT now'),
    ('QUIT', b'QUIT'),
]

# listener index ('auth': the AUTH daemon's), (command, expected code)
# before the cell, TLS first.
# A command may be bytes: sent as is (a message body), then its reply read.
EHLO = ('EHLO client.example', 250)
MAIL = ('MAIL FROM:<%s>' % SENDER, 250)
RCPT_OK = ('RCPT TO:<%s>' % RCPT, 250)
BODY = b'From: alice@example.org\r\nSubject: verb table\r\n\r\nbody\r\n.\r\n'
STATES = {
    'start': (0, [], False),
    'helo': (0, [('HELO client.example', 250)], False),
    'ehlo': (0, [EHLO], False),
    'mail': (0, [EHLO, MAIL], False),
    'rcpt': (0, [EHLO, MAIL, RCPT_OK], False),
    # every RCPT refused (relay denied): the transaction is open, empty
    'rcpt-refused': (0, [EHLO, MAIL, ('RCPT TO:<x@other.example>', 554)], False),
    'helo-rcpt': (0, [('HELO client.example', 250), MAIL, RCPT_OK], False),
    # a BDAT chunk taken, not the LAST: the transaction is in BDAT
    'bdat-open': (0, [EHLO, MAIL, RCPT_OK, (b'BDAT 5\r\nHello', 250)], False),
    # a message just delivered: the transaction is over
    'done': (0, [EHLO, MAIL, RCPT_OK, ('DATA', 354), (BODY, 250)], False),
    'tls-start': (1, [], False),
    'tls-ehlo': (1, [EHLO], False),
    'tls-mail': (1, [EHLO, MAIL], False),
    'req-start': (2, [], False),
    'req-ehlo': (2, [EHLO], False),
    'req-tls': (2, [EHLO], True),
    'req-tls-mail': (2, [EHLO, MAIL], True),
    # a second daemon, listener with auth = true before an upstream that
    # offers AUTH (fmx_auth.AuthUpstream): AUTH is offered inside TLS only
    'auth-ehlo': ('auth', [EHLO], False),
    'auth-tls': ('auth', [], True),             # STARTTLS done, no EHLO since
    'auth-tls-ehlo': ('auth', [EHLO], True),
    'auth-tls-mail': ('auth', [EHLO, MAIL], True),
}

# Replies after which the session does not read commands: None = a NOOP
# must get 250 after the cell; 'close' = the connection ends; 'skip' =
# the session now reads something else (message data, TLS).
AFTER = {221: 'close', 421: 'close', 354: 'skip', 220: 'skip', 334: 'skip'}

# cell -> (today's answer in most states, {state: today's answer where it
# differs}); an answer is (code, enhanced code or None: HELO/EHLO replies
# and 354 carry none, RFC 2034 3).
S503, S501, S502 = (503, '5.5.1'), (501, '5.5.4'), (502, '5.5.1')
UNKNOWN = (500, '5.5.2')      # RFC 5321 4.2.4: unrecognized
MAIL_OK, RCPT_250 = (250, '2.1.0'), (250, '2.1.5')
OPEN = ('mail', 'rcpt', 'rcpt-refused', 'helo-rcpt', 'bdat-open', 'tls-mail', 'req-tls-mail',
        'auth-tls-mail')
GREETED = ('helo', 'ehlo', 'done', 'tls-ehlo', 'req-tls', 'auth-ehlo', 'auth-tls-ehlo')
EXPECT = {
    'HELO': (S501, {}),
    'HELO x': ((250, None), {}),
    'EHLO': (S501, {}),
    'EHLO x': ((250, None), {}),
    # before HELO 503 first; in a transaction 503 nested; the bare verb
    # is a bad sender address (5.1.7)
    'MAIL': (S503, dict((st, (501, '5.1.7')) for st in GREETED)),
    'MAIL x': (S503, dict((st, MAIL_OK) for st in GREETED)),
    'MAIL <>': (S503, dict((st, MAIL_OK) for st in GREETED)),
    'RCPT': (S503, dict((st, (501, '5.1.3')) for st in OPEN)),
    'RCPT x': (S503, dict((st, RCPT_250) for st in OPEN)),
    # without an accepted RCPT 503 (also when the only RCPT was refused:
    # RFC 5321 3.3 allows 503 or 554)
    'DATA': (S503, {'rcpt': (354, None), 'helo-rcpt': (354, None)}),
    'DATA x': (S501, {}),
    # no size: 501, then 421 and the end (the chunk's end is unknowable)
    'BDAT': (S501, {}),
    # the chunk is read either way; 503 without MAIL/RCPT
    'BDAT 5': (S503, {'rcpt': (250, '2.0.0'), 'helo-rcpt': (250, '2.0.0'),
                      'bdat-open': (250, '2.0.0')}),
    'RSET': ((250, '2.0.0'), {}),
    'RSET x': (S501, {}),
    'NOOP': ((250, '2.0.0'), {}),
    'NOOP x': ((250, '2.0.0'), {}),
    'VRFY': (S501, {}),
    'VRFY x': ((252, '2.0.0'), {}),
    'EXPN': (S502, {}),
    'EXPN x': (S502, {}),
    'HELP': ((214, '2.0.0'), {}),
    'HELP x': ((214, '2.0.0'), {}),
    # offered on the starttls and required listeners until TLS is up
    'STARTTLS': (S502, {'tls-start': (220, '2.0.0'), 'tls-ehlo': (220, '2.0.0'),
                        'tls-mail': (220, '2.0.0'), 'req-start': (220, '2.0.0'),
                        'req-ehlo': (220, '2.0.0'), 'req-tls': S503, 'req-tls-mail': S503,
                        'auth-ehlo': (220, '2.0.0'), 'auth-tls': S503,
                        'auth-tls-ehlo': S503, 'auth-tls-mail': S503}),
    'STARTTLS x': (S501, {}),
    # offered inside TLS on the auth listener only (not before STARTTLS);
    # there the upstream decides (235: alice's credentials); never in a
    # transaction.  Like MAIL it needs HELO/EHLO first, and after STARTTLS
    # the new EHLO (auth-tls: RFC 3207 4.2, the server forgets the old one).
    'AUTH': (S502, {'start': S503, 'tls-start': S503, 'auth-tls': S503,
                    'auth-tls-ehlo': S501, 'auth-tls-mail': S503}),
    'AUTH x': (S502, {'start': S503, 'tls-start': S503, 'auth-tls': S503,
                      'auth-tls-ehlo': (235, '2.7.0'), 'auth-tls-mail': S503}),
    'XCLIENT x': (S502, {}),
    'XFORWARD x': (S502, {}),
    'LHLO x': (UNKNOWN, {}),
    'ETRN x': (UNKNOWN, {}),
    'XYZZY': (UNKNOWN, {}),
    'QUIT x': ((221, '2.0.0'), {}),
    'QUIT': ((221, '2.0.0'), {}),
}


# RFC 3207 4: before STARTTLS on a listener that requires TLS, every
# command but NOOP, EHLO, STARTTLS and QUIT gets 530 5.7.0 (a malformed
# one still 501, an unknown one 500).
REQ_PLAIN = ('req-start', 'req-ehlo')
PRE_TLS = ('EHLO x', 'NOOP', 'NOOP x', 'STARTTLS', 'QUIT x', 'QUIT')
R530 = (530, '5.7.0')
# RFC 3030 2: between a transaction's BDAT chunks only BDAT, RSET, NOOP and
# QUIT; anything else known gets 503 (a malformed one 501, unknown 500).
IN_BDAT = ('BDAT 5', 'RSET', 'NOOP', 'NOOP x', 'QUIT x', 'QUIT')


def expected(state, name):
    dflt, exc = EXPECT[name]
    want = exc.get(state, dflt)
    if state in REQ_PLAIN and name not in PRE_TLS and want[0] not in (500, 501):
        return R530
    if state == 'bdat-open' and name not in IN_BDAT and want != S501 and want[0] != 500:
        return S503
    return want


def reach(ports, ctx, state):
    """A fresh connection in state; None if it could not get there."""
    li, cmds, tls = STATES[state]
    c = TlsClient(ports[li], timeout=15)
    if c.greeting().code != 220:
        return None
    if tls:
        c.ehlo()
        r, err = c.starttls(ctx, MX)
        if err is not None:
            return None
    for line, code in cmds:
        if isinstance(line, bytes):
            c.send(line)
            r = c.reply()
        else:
            r = c.cmd(line)
        if r.code != code:
            diag('%s: %r -> %r' % (state, line, r))
            return None
    return c


def cell(ports, ctx, state, name, data):
    """(reply, after): the cell's reply, then 'in step' / 'closed' /
    'skip' / what the NOOP got instead."""
    c = reach(ports, ctx, state)
    if c is None:
        return None, 'could not reach the state'
    if b'\r\n' in data:
        c.send(data)                # a command with its chunk: no CRLF after
        r = c.reply()
    else:
        r = c.cmd(data)
    if name == 'BDAT':
        # no size: 501, then 421 (the end of the chunk is unknowable)
        r2 = c.reply()
        after = 'closed' if r2.code == 421 and c.expect_close(10) else 'not closed: %r' % (r2,)
        c.close()
        return r, after
    what = AFTER.get(r.code)
    if what == 'close':
        after = 'closed' if c.expect_close(10) else 'not closed'
    elif what == 'skip':
        after = 'skip'
    else:
        n = c.cmd('NOOP')
        after = 'in step' if n.code == 250 else 'NOOP got %r' % (n,)
    c.close()
    return r, after


def main():
    d = tmpdir('fmx-verbs-')
    certs = make_cert(d, MX)
    ctx = client_ctx(certs.cert)
    up = Upstream()
    mx = frontmx_listeners(up, [listener(None), listener('starttls', certs),
                                listener('required', certs)],
                           # 127.0.0.1 is no relay client: outside RCPTs are refused
                           conf={'relay': {'domains': ['example.com'],
                                           'networks': ['192.0.2.0/24']}},
                           name='frontmx (plain, starttls, required listeners)')
    aup = AuthUpstream(users={'alice': 'secret'})
    amx = frontmx_listeners(aup, [listener('starttls', certs, auth=True)],
                            name='frontmx (starttls listener with auth)')
    ports = dict(enumerate(mx.ports))
    ports['auth'] = amx.ports[0]
    dump = os.environ.get('VERB_TABLE_DUMP')
    for state in STATES:
        for name, data in VERBS:
            r, after = cell(ports, ctx, state, name, data)
            got = (r.code, r.enh) if r is not None else None
            if dump:
                diag('    (%r, %r): %r,' % (state, name, got))
                continue
            want = expected(state, name)
            is_(got, want, '%s: %s -> %s %s' % (state, name, want[0], want[1] or ''))
            ok(after in ('in step', 'closed', 'skip'),
               '%s: %s: then %s' % (state, name, after))
    ok(mx.alive(), 'daemon alive after every cell')
    # Nothing the cells sent was a complete message (BDAT 5 is not LAST,
    # DATA got no body); refused verbs never reach the upstream.
    allb = up.all_bytes()
    ok(b'XCLIENT ADDR=192.0.2.1' not in allb and b'EXPN' not in allb and b'ETRN' not in allb
       and b'LHLO' not in allb and b'XYZZY' not in allb,
       'refused and unknown verbs never reached the upstream')
    # the 'done' state delivered one message per cell, nothing else did
    check_stream(up, len(VERBS), 'upstream')
    mx.finish()
    ok(amx.alive(), 'AUTH daemon alive after every cell')
    with aup.lock:
        errs = list(aup.errors)
    is_(errs, [], 'AUTH upstream: no protocol violations (AUTH twice, in a transaction, ...)')
    amx.finish()


run(main, timeout=300)
