/*
 * test_config.c - unit tests for policy/config.c
 *
 * NAME
 *	test_config - configuration loader, netmask and relay-domain cases
 *
 * SYNOPSIS
 *	build/unit/test_config		(from the repository root; prints TAP)
 *
 * DESCRIPTION
 *	A table of configurations, each a fixture under t/unit/conf/ or an
 *	inline text written to a temporary file, with the error expected:
 *	NULL for "loads", otherwise a substring of the message that
 *	includes the line number.  Then the parsed values of the full and
 *	the minimal fixture, the shipped conf/frontmx.conf, address and
 *	domain matching, and reference counting.  Loading and freeing in a
 *	loop gives ASan's leak checker something to find if we leak.
 */

#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

/* Lines 1-2 of every inline case, so case text starts on line 3. */
#define TEST_BASE \
	"listen = ( { address = \"127.0.0.1:2525\"; } );\n" \
	"upstream = { address = \"127.0.0.1:25\"; };\n"
/* The same two lines, with a chain for policy groups to name. */
#define TEST_PBASE \
	"listen = ( { address = \"127.0.0.1:2525\"; } );\n" \
	"upstream = { address = \"127.0.0.1:25\"; }; filters = ( { name = \"spf\"; }, " \
	"{ name = \"dkim\"; }, { name = \"dmarc\"; }, { name = \"content\"; } );\n"

struct test_config_case {
	const char	*name;
	const char	*file;		/* fixture; NULL: write text to a temp file */
	const char	*text;
	const char	*expect;	/* NULL: must load; else substring of err */
};

static const struct test_config_case test_config_cases[] = {
	/* Loads. */
	{ "full fixture", "t/unit/conf/good.conf", NULL, NULL },
	{ "minimal fixture", "t/unit/conf/minimal.conf", NULL, NULL },
	{ "shipped sample", "conf/frontmx.conf", NULL, NULL },
	{ "connections_per_ip 0 is unlimited", NULL,
	  TEST_BASE "limits = { connections_per_ip = 0; };\n", NULL },
	{ "int64 with L suffix", NULL,
	  TEST_BASE "limits = { message_size = 5000000000L; };\n", NULL },
	{ "key name inside a string is not the key", NULL,
	  TEST_BASE "spool = { directory = \"message_size = 1\"; }; "
	  "limits = { message_size = 2048; };\n", NULL },
	{ "empty dns.forward", NULL, TEST_BASE "dns = { forward = [ ]; };\n", NULL },
	{ "upstream host name", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	  "upstream = { address = \"mx.example.net:25\"; };\n", NULL },

	/* Files. */
	{ "missing file", "t/unit/conf/does-not-exist.conf", NULL,
	  "t/unit/conf/does-not-exist.conf: cannot open: No such file or directory" },
	{ "directory", "t/unit/conf", NULL, "t/unit/conf: cannot open: Is a directory" },
	{ "syntax error", "t/unit/conf/syntax.conf", NULL,
	  "t/unit/conf/syntax.conf:5: syntax error" },
	{ "error inside @include names the included file", "t/unit/conf/include.conf",
	  NULL, "t/unit/conf/include.inc:3: unknown key 'recipient' in 'limits' "
	  "(did you mean 'recipients'?)" },
	{ "duplicate setting", NULL, TEST_BASE "workers = 1;\nworkers = 2;\n",
	  ":4: duplicate setting name" },

	/* Unknown keys, at every level. */
	{ "unknown top-level key", NULL, TEST_BASE "foo = 1;\n",
	  ":3: unknown key 'foo' at top level" },
	{ "unknown key in limits", NULL, TEST_BASE "limits = {\n\tfoo = 1;\n};\n",
	  ":4: unknown key 'foo' in 'limits'" },
	{ "misspelt key gets a suggestion", NULL,
	  TEST_BASE "limits = { mesage_size = 2048; };\n",
	  ":3: unknown key 'mesage_size' in 'limits' (did you mean 'message_size'?)" },
	{ "unknown key in timeouts", NULL, TEST_BASE "timeouts = { idle = 5; };\n",
	  ":3: unknown key 'idle' in 'timeouts'" },
	{ "unknown key in listen entry", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\";\n port = 25; } );\n"
	  "upstream = { address = \"127.0.0.1:25\"; };\n",
	  ":2: unknown key 'port' in 'listen[0]'" },
	{ "unknown key in upstream", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	  "upstream = { address = \"127.0.0.1:25\"; tlsv = true; };\n",
	  ":2: unknown key 'tlsv' in 'upstream'" },
	{ "unknown key in relay", NULL, TEST_BASE "relay = { domain = [ \"x.example\" ]; };\n",
	  ":3: unknown key 'domain' in 'relay' (did you mean 'domains'?)" },
	{ "unknown key in dns", NULL, TEST_BASE "dns = { servers = [ \"::1\" ]; };\n",
	  ":3: unknown key 'servers' in 'dns'" },
	{ "unknown key in spool", NULL, TEST_BASE "spool = { dir = \"/tmp\"; };\n",
	  ":3: unknown key 'dir' in 'spool'" },
	{ "unknown key in policy", NULL, TEST_PBASE "policy = { defaults = { }; };\n",
	  ":3: unknown key 'defaults' in 'policy' (did you mean 'default'?)" },
	{ "domain in the default policy", NULL,
	  TEST_PBASE "policy = { default = { domain = \"x.example\"; }; };\n",
	  ":3: unknown key 'domain' in 'policy.default'" },
	{ "upper-case result name", NULL,
	  TEST_PBASE "policy = { default = {\n spf = { Fail = \"reject\"; };\n}; };\n",
	  ":4: unknown key 'Fail' in 'policy.default.spf'" },
	{ "bad filter name", NULL,
	  TEST_PBASE "policy = { default = { SPF = { fail = \"reject\"; }; }; };\n",
	  ":3: unknown key 'SPF' in 'policy.default'" },

	/* Types and ranges. */
	{ "string for an integer", NULL,
	  TEST_BASE "limits = { message_size = \"26214400\"; };\n",
	  ":3: 'limits.message_size' must be an integer" },
	{ "float for an integer", NULL, TEST_BASE "timeouts = { command = 1.5; };\n",
	  ":3: 'timeouts.command' must be an integer" },
	{ "wrapped 32-bit literal", NULL,
	  TEST_BASE "limits = {\n  message_size = 5000000000;\n};\n",
	  ":4: 'limits.message_size' is too large for a plain integer; write it with an L suffix" },
	{ "wrapped hex literal", NULL, TEST_BASE "limits = { spool_memory = 0xFFFFFFFF; };\n",
	  ":3: 'limits.spool_memory' is too large" },
	{ "message_size below 1024", NULL, TEST_BASE "limits = { message_size = 1000; };\n",
	  ":3: 'limits.message_size' must be at least 1024" },
	{ "recipients 0", NULL, TEST_BASE "limits = { recipients = 0; };\n",
	  ":3: 'limits.recipients' must be at least 1" },
	{ "negative errors", NULL, TEST_BASE "limits = { errors = -5; };\n",
	  ":3: 'limits.errors' must be at least 1" },
	{ "timeout 0", NULL, TEST_BASE "timeouts = { command = 0; };\n",
	  ":3: 'timeouts.command' must be between 1 and 86400" },
	{ "timeout over a day", NULL, TEST_BASE "timeouts = { shutdown_grace = 86401; };\n",
	  ":3: 'timeouts.shutdown_grace' must be between 1 and 86400" },
	{ "workers 65", NULL, TEST_BASE "workers = 65;\n", ":3: 'workers' must be between 0 and 64" },
	{ "limits not a group", NULL, TEST_BASE "limits = 5;\n", ":3: 'limits' must be a group" },
	{ "hostname not a string", NULL, TEST_BASE "hostname = 5;\n", ":3: 'hostname' must be a string" },
	{ "hostname empty", NULL, TEST_BASE "hostname = \"\";\n", ":3: 'hostname' must not be empty" },
	{ "hostname bad syntax", NULL, TEST_BASE "hostname = \"mx_1.example\";\n",
	  ":3: 'hostname' must be a valid domain name" },
	{ "xclient not a bool", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	  "upstream = { address = \"127.0.0.1:25\"; xclient = \"yes\"; };\n",
	  ":2: 'upstream.xclient' must be a boolean" },
	{ "chunking not a bool", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	  "upstream = { address = \"127.0.0.1:25\"; chunking = \"no\"; };\n",
	  ":2: 'upstream.chunking' must be a boolean" },
#define TEST_POOL(x) "listen = ( { address = \"127.0.0.1:2525\"; } );\n" \
	"upstream = { address = \"127.0.0.1:25\";\n pool = " x " };\n"
	{ "upstream.pool", NULL, TEST_POOL("{ size = 8; idle = 30; };"), NULL },
	{ "upstream.pool not a group", NULL, TEST_POOL("8;"),
	  ":3: 'upstream.pool' must be a group" },
	{ "upstream.pool unknown key", NULL, TEST_POOL("{ sise = 8; };"),
	  ":3: unknown key 'sise' in 'upstream.pool' (did you mean 'size'?)" },
	{ "upstream.pool.size 1025", NULL, TEST_POOL("{ size = 1025; };"),
	  ":3: 'upstream.pool.size' must be between 0 and 1024" },
	{ "upstream.pool.idle 0", NULL, TEST_POOL("{ idle = 0; };"),
	  ":3: 'upstream.pool.idle' must be between 1 and 86400" },
	{ "dry_run not a bool", NULL, TEST_PBASE "policy = { default = { dry_run = 1; }; };\n",
	  ":3: 'policy.default.dry_run' must be a boolean" },

	/* listen. */
	{ "listen missing", NULL, "upstream = { address = \"127.0.0.1:25\"; };\n",
	  ":1: missing required key 'listen'" },
	{ "listen empty", NULL, "listen = ( );\nupstream = { address = \"127.0.0.1:25\"; };\n",
	  ":1: 'listen' needs at least one" },
	{ "listen a group", NULL,
	  "listen = { address = \"127.0.0.1:2525\"; };\nupstream = { address = \"127.0.0.1:25\"; };\n",
	  ":1: 'listen' must be a list of groups" },
	{ "listen without address", NULL,
	  "listen = ( { } );\nupstream = { address = \"127.0.0.1:25\"; };\n",
	  ":1: 'listen[0]' is missing 'address'" },
	{ "listen host name", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"localhost:25\"; } );\n",
	  ":2: 'listen[0].address' must be a numeric \"IPv4:port\" or \"[IPv6]:port\"" },
	{ "listen without port", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"127.0.0.1\"; } );\n",
	  ":2: 'listen[0].address' must be a numeric" },
	{ "listen IPv6 without brackets", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"::1:25\"; } );\n",
	  ":2: 'listen[0].address' must be a numeric" },
	{ "listen short IPv4", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"127.1:25\"; } );\n",
	  ":2: 'listen[0].address' must be a numeric" },
	{ "listen port too big", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"127.0.0.1:65536\"; } );\n",
	  ":2: 'listen[0].address' must be a numeric" },
	{ "listen port 0", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"127.0.0.1:0\"; } );\n",
	  ":2: 'listen[0].address' port must be 1..65535" },
	{ "listen twice", NULL,
	  "upstream = { address = \"127.0.0.1:25\"; };\nlisten = ( { address = \"127.0.0.1:25\"; },\n"
	  "  { address = \"127.0.0.1:25\"; } );\n",
	  ":3: duplicate listen address '127.0.0.1:25'" },

	/* upstream. */
	{ "upstream missing", NULL, "listen = ( { address = \"127.0.0.1:2525\"; } );\n",
	  ":1: missing required key 'upstream'" },
	{ "upstream empty dir", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"dir:\"; };\n",
	  ":2: 'upstream.address' \"dir:\" needs a directory" },
	{ "upstream without port", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"mx.example.net\"; };\n",
	  ":2: 'upstream.address' must be \"host:port\"" },
	/* A value quoted in an error never carries a raw line end or control byte. */
	{ "upstream with a newline and a tab, quoted safely", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"mx\\n\\tx\"; };\n",
	  ":2: 'upstream.address' must be \"host:port\", \"[IPv6]:port\" or \"dir:PATH\", not 'mx??x'" },
	/* LMTP (RFC 2033): "lmtp:host:port" or "lmtp:unix:PATH". */
	{ "upstream lmtp over TCP", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"lmtp:127.0.0.1:24\"; };\n",
	  NULL },
	{ "upstream lmtp over a unix socket", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"lmtp:unix:/run/dovecot/lmtp\"; };\n",
	  NULL },
	{ "upstream lmtp without port", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"lmtp:mx.example.net\"; };\n",
	  ":2: 'upstream.address' must be \"lmtp:host:port\", \"lmtp:[IPv6]:port\" or \"lmtp:unix:PATH\", not 'lmtp:mx.example.net'" },
	{ "upstream lmtp relative unix path", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"lmtp:unix:run/lmtp\"; };\n",
	  ":2: 'upstream.address' \"lmtp:unix:\" needs an absolute socket path" },
	{ "upstream lmtp bad port", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"lmtp:127.0.0.1:0\"; };\n",
	  ":2: 'upstream.address' port must be 1..65535, not '0'" },
	{ "upstream bad IPv4", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"1.2.3.999:25\"; };\n",
	  ":2: 'upstream.address' has a bad host '1.2.3.999'" },
	{ "upstream port 0", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"mx.example.net:0\"; };\n",
	  ":2: 'upstream.address' port must be 1..65535" },
	{ "upstream service name", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\nupstream = { address = \"mx.example.net:smtp\"; };\n",
	  ":2: 'upstream.address' port must be 1..65535" },
	{ "upstream bad helo", NULL,
	  "listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	  "upstream = { address = \"127.0.0.1:25\"; helo = \"not valid\"; };\n",
	  ":2: 'upstream.helo' must be a valid domain name" },

	/* dns. */
	{ "dns.forward port 0", NULL, TEST_BASE "dns = { forward = [ \"127.0.0.1@0\" ]; };\n",
	  ":3: 'dns.forward' entry '127.0.0.1@0' must be \"IP\" or \"IP@port\"" },
	{ "dns.forward name", NULL, TEST_BASE "dns = { forward = [ \"::1\",\n \"ns.example\" ]; };\n",
	  ":4: 'dns.forward' entry 'ns.example'" },
	{ "dns.forward not an array", NULL, TEST_BASE "dns = { forward = \"::1\"; };\n",
	  ":3: 'dns.forward' must be an array of strings" },

	/* relay. */
	{ "bad CIDR prefix", NULL, TEST_BASE "relay = { networks = [ \"10.0.0.0/33\" ]; };\n",
	  ":3: 'relay.networks' entry '10.0.0.0/33' is not an IP address or CIDR network" },
	{ "bad CIDR address", NULL, TEST_BASE "relay = { networks = [\n \"banana/8\" ]; };\n",
	  ":4: 'relay.networks' entry 'banana/8' is not an IP address" },
	{ "host bits set, IPv4", NULL, TEST_BASE "relay = { networks = [ \"10.1.2.3/8\" ]; };\n",
	  ":3: 'relay.networks' entry '10.1.2.3/8': host bits set (the network is 10.0.0.0/8)" },
	{ "host bits set, IPv6", NULL, TEST_BASE "relay = { networks = [ \"2001:db8::1/32\" ]; };\n",
	  ":3: 'relay.networks' entry '2001:db8::1/32': host bits set (the network is 2001:db8::/32)" },
	{ "relay domain with a space", NULL, TEST_BASE "relay = { domains = [ \"exa mple.com\" ]; };\n",
	  ":3: 'relay.domains' entry 'exa mple.com' is not a valid domain name" },
	{ "relay domain with an empty label", NULL, TEST_BASE "relay = { domains = [ \"a..example\" ]; };\n",
	  ":3: 'relay.domains' entry 'a..example' is not a valid domain name" },
	{ "relay domains mixed types", NULL, TEST_BASE "relay = { domains = ( \"a.example\", 5 ); };\n",
	  ":3: 'relay.domains' must be an array of strings" },

	/* policy. */
	{ "bad action", NULL,
	  TEST_PBASE "policy = {\n default = {\n  spf = { fail = \"bounce\"; };\n };\n};\n",
	  ":5: unknown action 'bounce' (expected accept, tag, quarantine, tempfail, reject or discard)" },
	{ "action in capitals", NULL,
	  TEST_PBASE "policy = { default = { spf = { fail = \"REJECT\"; }; }; };\n",
	  ":3: unknown action 'REJECT'" },
	{ "action not a string", NULL,
	  TEST_PBASE "policy = { default = { spf = { fail = 1; }; }; };\n",
	  ":3: 'policy.default.spf.fail' must be a string" },
	{ "filter not a group", NULL,
	  TEST_PBASE "policy = { default = { spf = \"reject\"; }; };\n",
	  ":3: 'policy.default.spf' must be a group" },
	{ "filter dry_run not a bool", NULL,
	  TEST_PBASE "policy = { default = { dkim = { dry_run = \"no\"; }; }; };\n",
	  ":3: 'policy.default.dkim.dry_run' must be a boolean" },
	{ "policy entry without a domain", NULL,
	  TEST_PBASE "policy = { domains = (\n { spf = { fail = \"tag\"; }; }\n); };\n",
	  ":4: 'policy.domains[0]' needs 'domain' or 'domains'" },
	{ "policy entry with a bad domain", NULL,
	  TEST_PBASE "policy = { domains = ( { domain = \"-x.example\"; } ); };\n",
	  ":3: 'policy.domains[0].domain' entry '-x.example' is not a valid domain name" },
	{ "duplicate policy domain across entries", NULL,
	  TEST_PBASE "policy = { domains = (\n { domain = \"a.example\"; },\n"
	  " { domains = [ \"b.example\", \"A.Example.\" ]; }\n); };\n",
	  ":5: duplicate policy domain 'a.example' (already at line 4)" },
	{ "duplicate policy domain in one entry", NULL,
	  TEST_PBASE "policy = { domains = ( { domain = \"a.example\"; domains = [ \"a.example\" ]; } ); };\n",
	  ":3: duplicate policy domain 'a.example'" },
	{ "policy.domains not a list", NULL,
	  TEST_PBASE "policy = { domains = [ \"a.example\" ]; };\n",
	  ":3: 'policy.domains' must be a list of groups" },

	/* filters. */
	{ "empty filters list", NULL, TEST_BASE "filters = ( );\n", NULL },
	{ "every built-in name", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; }, { name = \"spf\"; },\n"
	  " { name = \"dkim\"; }, { name = \"dmarc\"; } );\n", NULL },
	{ "module may reuse a built-in name", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; module = \"/opt/spf.so\"; } );\n", NULL },
	{ "hyphenated instance with a policy group", NULL,
	  TEST_BASE "filters = ( { name = \"rcpt-allow\"; module = \"x.so\"; } );\n"
	  "policy = { default = { rcpt-allow = { deny = \"reject\"; }; }; };\n", NULL },
	{ "duplicate filter name", NULL,
	  TEST_BASE "filters = (\n { name = \"content\"; },\n { name = \"content\"; module = \"c.so\"; }\n);\n",
	  ":5: duplicate filter name 'content' (already at line 4)" },
	{ "bad on_error", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; on_error = \"bounce\"; } );\n",
	  ":3: 'filters[0].on_error': unknown action 'bounce' (expected accept, tag, "
	  "quarantine, tempfail, reject or discard)" },
	{ "on_error in capitals", NULL,
	  TEST_BASE "filters = ( { name = \"content\";\n on_error = \"Reject\"; } );\n",
	  ":4: 'filters[0].on_error': unknown action 'Reject'" },
	{ "unknown built-in filter", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; },\n { name = \"spam\"; } );\n",
	  ":4: unknown built-in filter 'spam' (set module = path for a third-party module, or milter = ADDRESS for a milter)" },
	{ "filter without a name", NULL,
	  TEST_BASE "filters = ( { module = \"x.so\"; } );\n",
	  ":3: 'filters[0]' is missing 'name'" },
	{ "filter name in capitals", NULL,
	  TEST_BASE "filters = ( { name = \"Content\"; } );\n",
	  ":3: 'filters[0].name' must be [a-z][a-z0-9_-]* (at most 31 characters), not 'Content'" },
	{ "filter name with a dot", NULL,
	  TEST_BASE "filters = ( { name = \"a.b\"; module = \"x.so\"; } );\n",
	  ":3: 'filters[0].name' must be [a-z][a-z0-9_-]*" },
	{ "filter name too long", NULL,
	  TEST_BASE "filters = ( { name = \"abcdefghijabcdefghijabcdefghijab\"; module = \"x.so\"; } );\n",
	  ":3: 'filters[0].name' must be" },
	{ "filter name not a string", NULL,
	  TEST_BASE "filters = ( { name = 5; } );\n", ":3: 'filters[0].name' must be a string" },
	{ "misspelt filter key", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; timout = 5; } );\n",
	  ":3: unknown key 'timout' in 'filters[0]' (did you mean 'timeout'?)" },
	{ "empty module", NULL,
	  TEST_BASE "filters = ( { name = \"x\"; module = \"\"; } );\n",
	  ":3: 'filters[0].module' must not be empty" },
	{ "filter timeout 0", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; timeout = 0; } );\n",
	  ":3: 'filters[0].timeout' must be between 1 and 3600" },
	{ "filter timeout 3601", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; timeout = 3601; } );\n",
	  ":3: 'filters[0].timeout' must be between 1 and 3600" },
	{ "filter dry_run not a bool", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; dry_run = \"yes\"; } );\n",
	  ":3: 'filters[0].dry_run' must be a boolean" },
	{ "options not a group", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; options = [ \"a=b\" ]; } );\n",
	  ":3: 'filters[0].options' must be a group" },
	{ "option a float, after a good one", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; options = {\n rules = \"r\";\n ratio = 0.5; }; } );\n",
	  ":5: 'filters[0].options.ratio' must be a string, an integer, a boolean or a list of them" },
	{ "option a group", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; options = { allow = { a = 1; }; }; } );\n",
	  ":3: 'filters[0].options.allow' must be a string, an integer, a boolean or a list of them" },
	{ "option a list with a float", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; options = { allow = [ 0.5 ]; }; } );\n",
	  ":3: 'filters[0].options.allow' must be a string, an integer, a boolean or a list of them" },
	{ "option a wrapped literal", NULL,
	  TEST_BASE "filters = ( { name = \"content\"; options = { big = 5000000000; }; } );\n",
	  ":3: 'filters[0].options.big' is too large for a plain integer" },
	{ "filters a group", NULL, TEST_BASE "filters = { name = \"spf\"; };\n",
	  ":3: 'filters' must be a list of groups" },
	{ "second entry bad", NULL,
	  TEST_BASE "filters = ( { name = \"spf\"; options = { a = 1; }; },\n \"dkim\" );\n",
	  ":4: 'filters' must be a list of groups" },

	/* quarantine, authserv_id, tag. */
	{ "quarantine without directory", NULL, TEST_BASE "quarantine = { };\n",
	  ":3: 'quarantine' is missing 'directory'" },
	{ "quarantine misspelt", NULL, TEST_BASE "quarantine = { dir = \"/q\"; };\n",
	  ":3: unknown key 'dir' in 'quarantine'" },
	{ "quarantine a string", NULL, TEST_BASE "quarantine = \"/q\";\n",
	  ":3: 'quarantine' must be a group" },
	{ "authserv_id with a space", NULL, TEST_BASE "authserv_id = \"mx example\";\n",
	  ":3: 'authserv_id' must be an RFC 8601 authserv-id" },
	{ "authserv_id with a semicolon", NULL, TEST_BASE "authserv_id = \"mx;spf=pass\";\n",
	  ":3: 'authserv_id' must be an RFC 8601 authserv-id" },
	{ "authserv_id with CR LF", NULL, TEST_BASE "authserv_id = \"mx\\r\\nX-Evil: 1\";\n",
	  "(at most 255 characters), not 'mx??X-Evil: 1'" },
	{ "authserv_id empty", NULL, TEST_BASE "authserv_id = \"\";\n",
	  ":3: 'authserv_id' must not be empty" },
	{ "authserv_id not a string", NULL, TEST_BASE "authserv_id = true;\n",
	  ":3: 'authserv_id' must be a string" },
	{ "tag header with a space", NULL, TEST_BASE "tag = { header = \"X Tag\"; };\n",
	  ":3: 'tag.header' must be a header field name (printable ASCII without spaces or ':'" },
	{ "tag header with a colon", NULL, TEST_BASE "tag = {\n header = \"X-Tag:\"; };\n",
	  ":4: 'tag.header' must be a header field name" },
	{ "tag header with LF", NULL, TEST_BASE "tag = { header = \"X-Tag\\nX\"; };\n",
	  ":3: 'tag.header' must be a header field name (printable ASCII without "
	  "spaces or ':', at most 64 characters), not 'X-Tag?X'" },
	{ "tag header 8-bit", NULL, TEST_BASE "tag = { header = \"X-T\\xe4g\"; };\n",
	  ":3: 'tag.header' must be a header field name" },
	{ "tag header too long", NULL,
	  TEST_BASE "tag = { header = \"X-0123456789012345678901234567890123456789"
	  "01234567890123456789012\"; };\n",
	  ":3: 'tag.header' must be a header field name" },
	{ "tag subject_prefix with CR LF", NULL,
	  TEST_BASE "tag = { subject_prefix = \"[SPAM]\\r\\nBcc: x@example.com\"; };\n",
	  ":3: 'tag.subject_prefix' must not contain control characters" },
	{ "tag subject_prefix with a tab", NULL,
	  TEST_BASE "tag = { subject_prefix = \"[SPAM]\\t\"; };\n",
	  ":3: 'tag.subject_prefix' must not contain control characters" },
	{ "tag misspelt", NULL, TEST_BASE "tag = { headers = \"X\"; };\n",
	  ":3: unknown key 'headers' in 'tag' (did you mean 'header'?)" },
};

/* Write text to a fresh temporary file; its name goes into path. */
static int
test_config_write(const char *text, char *path, size_t size)
{
	const char	*dir;
	size_t		 len = strlen(text);
	int		 fd, n;

	if ((dir = getenv("TMPDIR")) == NULL || dir[0] == '\0')
		dir = "/tmp";
	n = snprintf(path, size, "%s/test_config.XXXXXX", dir);
	if (n < 0 || (size_t)n >= size)
		return -1;
	if ((fd = mkstemp(path)) == -1)
		return -1;
	if (write(fd, text, len) != (ssize_t)len) {
		close(fd);
		unlink(path);
		return -1;
	}
	close(fd);
	return 0;
}

static struct config *
test_config_load_text(const char *text, char *err, size_t errlen)
{
	struct config	*c;
	char		 path[PATH_MAX];

	if (test_config_write(text, path, sizeof path) == -1) {
		snprintf(err, errlen, "cannot write a temp file");
		return NULL;
	}
	c = config_load(path, err, errlen);
	unlink(path);
	return c;
}

static void
test_config_table(void)
{
	const struct test_config_case	*tc;
	struct config			*c;
	char				 err[CONFIG_ERR_MAX], path[PATH_MAX];
	size_t				 i;

	for (i = 0; i < sizeof test_config_cases / sizeof test_config_cases[0]; i++) {
		tc = &test_config_cases[i];
		err[0] = '\0';
		path[0] = '\0';
		if (tc->file != NULL) {
			c = config_load(tc->file, err, sizeof err);
		} else if (test_config_write(tc->text, path, sizeof path) == 0) {
			c = config_load(path, err, sizeof err);
			unlink(path);
		} else {
			ok(0, "%s: cannot write a temp file", tc->name);
			continue;
		}
		if (tc->expect == NULL)
			ok(c != NULL && err[0] == '\0', "%s: loads%s%s", tc->name,
			    err[0] ? ": " : "", err);
		else {
			ok(c == NULL && strstr(err, tc->expect) != NULL,
			    "%s: \"%s\"", tc->name, err);
			/* Inline cases: the message must start "TMPFILE:". */
			if (path[0] != '\0')
				ok(strncmp(err, path, strlen(path)) == 0 &&
				    err[strlen(path)] == ':',
				    "%s: error names the file", tc->name);
		}
		config_unref(c);
	}
}

static const struct config_policy_filter *
test_config_filter(const struct config_policy *p, const char *name)
{
	size_t	i;

	for (i = 0; i < p->nfilters; i++)
		if (strcmp(p->filters[i].name, name) == 0)
			return &p->filters[i];
	return NULL;
}

/* The action for result in filter, or -1. */
static int
test_config_rule(const struct config_policy *p, const char *filter,
    const char *result)
{
	const struct config_policy_filter	*f;
	size_t					 i;

	if ((f = test_config_filter(p, filter)) == NULL)
		return -1;
	for (i = 0; i < f->nrules; i++)
		if (strcmp(f->rules[i].result, result) == 0)
			return (int)f->rules[i].action;
	return -1;
}

static unsigned
test_config_port(const struct sockaddr_storage *ss)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	if (ss->ss_family == AF_INET) {
		memcpy(&sin, ss, sizeof sin);
		return ntohs(sin.sin_port);
	}
	memcpy(&sin6, ss, sizeof sin6);
	return ntohs(sin6.sin6_port);
}

static void
test_config_good(void)
{
	const struct config_filter	*f;
	const struct config_policy	*p;
	struct config			*c;
	char				 err[CONFIG_ERR_MAX];

	c = config_load("t/unit/conf/good.conf", err, sizeof err);
	if (!ok(c != NULL, "good.conf loads: %s", err))
		return;
	ok(strcmp(c->file, "t/unit/conf/good.conf") == 0, "file kept");
	ok(strcmp(c->hostname, "MX1.example.net") == 0, "hostname as written");
	ok(c->workers == 4, "workers");
	ok(c->nlisteners == 2, "two listeners");
	ok(c->nlisteners == 2 && c->listeners[0].sa.ss_family == AF_INET &&
	    c->listeners[0].salen == sizeof(struct sockaddr_in) &&
	    test_config_port(&c->listeners[0].sa) == 2525 &&
	    strcmp(c->listeners[0].address, "127.0.0.1:2525") == 0,
	    "listener 0 is 127.0.0.1:2525");
	ok(c->nlisteners == 2 && c->listeners[1].sa.ss_family == AF_INET6 &&
	    c->listeners[1].salen == sizeof(struct sockaddr_in6) &&
	    test_config_port(&c->listeners[1].sa) == 2526,
	    "listener 1 is [::1]:2526");
	ok(c->upstream_kind == CONFIG_UPSTREAM_SMTP &&
	    strcmp(c->upstream_address, "[2001:db8::25]:10025") == 0 &&
	    strcmp(c->upstream_host, "2001:db8::25") == 0 &&
	    strcmp(c->upstream_port, "10025") == 0 && c->upstream_dir == NULL,
	    "upstream split into host and port without brackets");
	ok(strcmp(c->upstream_helo, "relay.example.net") == 0, "upstream.helo");
	ok(c->upstream_xclient == 0, "upstream.xclient false");
	ok(c->upstream_chunking == 0, "upstream.chunking false");
	ok(c->ndns_forward == 3 && strcmp(c->dns_forward[0], "127.0.0.1@5353") == 0 &&
	    strcmp(c->dns_forward[1], "::1") == 0 &&
	    strcmp(c->dns_forward[2], "192.0.2.53@53") == 0, "dns.forward");
	ok(c->limits.message_size == (size_t)5000000000LL, "message_size int64");
	ok(c->limits.header_size == 65536 && c->limits.recipients == 100 &&
	    c->limits.connections_per_ip == 0 && c->limits.connections == 500 &&
	    c->limits.errors == 5 && c->limits.spool_memory == 0x10000 &&
	    c->limits.pipeline_backlog == 4096, "other limits");
	ok(c->timeouts.command == 60 && c->timeouts.data_block == 61 &&
	    c->timeouts.data == 7200 &&
	    c->timeouts.upstream_connect == 5 && c->timeouts.upstream_command == 62 &&
	    c->timeouts.upstream_data_end == 86400 && c->timeouts.shutdown_grace == 1,
	    "timeouts");
	ok(c->nrelay_domains == 3 && strcmp(c->relay_domains[0], "example.com") == 0 &&
	    strcmp(c->relay_domains[1], ".example.org") == 0 &&
	    strcmp(c->relay_domains[2], "trailing.example") == 0,
	    "relay.domains lower-cased, trailing dot and repeat dropped");
	ok(c->nrelay_networks == 5, "relay.networks");
	ok(c->nrelay_networks == 5 && c->relay_networks[4].family == AF_INET &&
	    c->relay_networks[4].prefix == 24,
	    "::ffff:198.51.100.0/120 stored as 198.51.100.0/24");
	ok(strcmp(c->spool_dir, "/var/tmp/frontmx") == 0, "spool.directory");

	p = &c->policy_default;
	ok(strcmp(p->name, "default") == 0 && p->ndomains == 0, "default policy name");
	ok(p->dry_run == 0, "default dry_run false");
	ok(p->nfilters == 5, "default has 5 filter groups");
	ok(test_config_rule(p, "spf", "fail") == CONFIG_ACTION_REJECT &&
	    test_config_rule(p, "spf", "softfail") == CONFIG_ACTION_TAG &&
	    test_config_rule(p, "spf", "temperror") == CONFIG_ACTION_TEMPFAIL,
	    "spf rules");
	ok(test_config_filter(p, "spf") != NULL &&
	    test_config_filter(p, "spf")->nrules == 3 &&
	    test_config_filter(p, "spf")->dry_run == 1, "spf dry_run is not a rule");
	ok(test_config_filter(p, "dkim") != NULL &&
	    test_config_filter(p, "dkim")->dry_run == -1, "dkim dry_run unset = -1");
	ok(test_config_rule(p, "dmarc", "quarantine") == CONFIG_ACTION_QUARANTINE &&
	    test_config_rule(p, "content", "reject") == CONFIG_ACTION_DISCARD &&
	    test_config_rule(p, "content", "accept") == CONFIG_ACTION_ACCEPT,
	    "dmarc and content rules");
	ok(test_config_filter(p, "rcpt-allow") != NULL &&
	    test_config_filter(p, "rcpt-allow")->nrules == 0,
	    "module filter's group accepted");

	ok(c->npolicies == 3, "three per-domain policies");
	if (c->npolicies == 3) {
		p = &c->policies[0];
		ok(strcmp(p->name, "example.com") == 0 && p->ndomains == 1 &&
		    strcmp(p->domains[0], "example.com") == 0 && p->dry_run == -1,
		    "policy 0: example.com, lower-cased, dry_run unset");
		ok(test_config_rule(p, "spf", "fail") == CONFIG_ACTION_TAG,
		    "policy 0: spf fail = tag");
		p = &c->policies[1];
		ok(strcmp(p->name, "a.example") == 0 && p->ndomains == 2 &&
		    strcmp(p->domains[1], "b.example") == 0 && p->dry_run == 1 &&
		    p->nfilters == 0, "policy 1: domains array, dry_run");
		p = &c->policies[2];
		ok(p->ndomains == 2 && strcmp(p->domains[0], "c.example") == 0 &&
		    strcmp(p->domains[1], "d.example") == 0 &&
		    test_config_rule(p, "dkim", "fail") == CONFIG_ACTION_REJECT &&
		    test_config_filter(p, "dkim")->dry_run == 0,
		    "policy 2: domain plus domains");
	}
	ok(c->policy_index != NULL, "policy index built by config_load");

	ok(c->nfilters == 5, "five filters");
	if (c->nfilters == 5) {
		f = &c->filters[0];
		ok(strcmp(f->name, "content") == 0 && f->module == NULL &&
		    f->timeout == 5 && f->on_error == CONFIG_ACTION_REJECT &&
		    f->dry_run == 1, "filter 0: built-in content, timeout, on_error, dry_run");
		ok(f->noptions == 6 && strcmp(f->options[0], "rules=conf/content.rules") == 0 &&
		    strcmp(f->options[1], "max_parts=100") == 0 &&
		    strcmp(f->options[2], "big=5000000000") == 0 &&
		    strcmp(f->options[3], "strict=false") == 0 &&
		    strcmp(f->options[4], "allow=a@example.com") == 0 &&
		    strcmp(f->options[5], "empty=") == 0,
		    "filter 0: options as key=value in file order");
		f = &c->filters[1];
		ok(strcmp(f->name, "rcpt-allow") == 0 &&
		    strcmp(f->module, "filters/examples/rcpt_allow.so") == 0 &&
		    f->timeout == 30 && f->on_error == CONFIG_ACTION_TEMPFAIL &&
		    f->dry_run == -1 && f->noptions == 0,
		    "filter 1: module, defaults (30 s, tempfail, dry_run unset)");
		f = &c->filters[2];
		ok(strcmp(f->name, "spf") == 0 && f->dry_run == 0 && f->noptions == 0,
		    "filter 2: dry_run false, empty options");
	}
	ok(c->quarantine_dir != NULL &&
	    strcmp(c->quarantine_dir, "/var/spool/frontmx/quarantine") == 0,
	    "quarantine.directory");
	ok(strcmp(c->authserv_id, "Auth.example.net") == 0, "authserv_id as written");
	ok(strcmp(c->tag_header, "X-Spam-Flag") == 0, "tag.header");
	ok(c->tag_subject_prefix != NULL &&
	    strcmp(c->tag_subject_prefix, "[SPAM] ") == 0, "tag.subject_prefix");
	ok(c->refcount == 1, "refcount starts at 1");
	config_unref(c);
}

static void
test_config_defaults(void)
{
	struct config	*c;
	char		 err[CONFIG_ERR_MAX], host[256];

	c = config_load("t/unit/conf/minimal.conf", err, sizeof err);
	if (!ok(c != NULL, "minimal.conf loads: %s", err))
		return;
	memset(host, 0, sizeof host);
	ok(gethostname(host, sizeof host - 1) == 0 &&
	    strcmp(c->hostname, host) == 0, "hostname defaults to gethostname()");
	ok(c->workers == 0, "workers default 0");
	ok(c->upstream_kind == CONFIG_UPSTREAM_SMTP &&
	    strcmp(c->upstream_host, "mx.example.net") == 0 &&
	    strcmp(c->upstream_port, "25") == 0, "upstream host name and port");
	ok(strcmp(c->upstream_helo, c->hostname) == 0, "helo defaults to hostname");
	ok(c->upstream_xclient == 1, "xclient defaults to true");
	ok(c->upstream_chunking == 1, "chunking defaults to true");
	ok(c->upstream_pool_size == 0 && c->upstream_pool_idle == 30,
	    "upstream.pool: none by default (idle 30)");
	ok(c->ndns_forward == 0, "no dns.forward");
	ok(c->limits.message_size == 26214400 && c->limits.header_size == 102400 &&
	    c->limits.recipients == 1000 && c->limits.connections_per_ip == 50 &&
	    c->limits.connections == 10000 && c->limits.errors == 20 &&
	    c->limits.spool_memory == 1048576 && c->limits.pipeline_backlog == 65536,
	    "limit defaults");
	ok(c->timeouts.command == 300 && c->timeouts.data_block == 180 &&
	    c->timeouts.data == 3600 && c->timeouts.upstream_connect == 30 && c->timeouts.upstream_command == 300 &&
	    c->timeouts.upstream_data_end == 600 && c->timeouts.shutdown_grace == 30,
	    "timeout defaults");
	ok(c->nrelay_domains == 0 && c->nrelay_networks == 0, "no relay lists");
	ok(config_relay_domain(c, "example.com") == 0, "empty relay.domains matches nothing");
	ok(strcmp(c->spool_dir, "/tmp") == 0, "spool defaults to /tmp");
	ok(strcmp(c->policy_default.name, "default") == 0 &&
	    c->policy_default.nfilters == 0 && c->policy_default.dry_run == -1 &&
	    c->npolicies == 0, "empty default policy");
	ok(c->nfilters == 0 && c->filters == NULL, "no filters");
	ok(c->quarantine_dir == NULL, "no quarantine directory");
	ok(strcmp(c->authserv_id, c->hostname) == 0, "authserv_id defaults to hostname");
	ok(strcmp(c->tag_header, "X-Frontmx-Tag") == 0, "tag.header default");
	ok(c->tag_subject_prefix == NULL, "no subject prefix by default");
	config_unref(c);
}

/* The two LMTP forms land in host/port or the socket path. */
static void
test_config_lmtp(void)
{
	struct config	*c;
	char		 err[CONFIG_ERR_MAX], path[PATH_MAX];

	if (test_config_write("listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	    "upstream = { address = \"lmtp:[::1]:24\"; };\n", path, sizeof path) == -1)
		return;
	c = config_load(path, err, sizeof err);
	unlink(path);
	ok(c != NULL && c->upstream_kind == CONFIG_UPSTREAM_LMTP &&
	    strcmp(c->upstream_host, "::1") == 0 &&
	    strcmp(c->upstream_port, "24") == 0 && c->upstream_unix == NULL,
	    "lmtp:[::1]:24 is LMTP to ::1 port 24");
	config_unref(c);
	if (test_config_write("listen = ( { address = \"127.0.0.1:2525\"; } );\n"
	    "upstream = { address = \"lmtp:unix:/run/dovecot/lmtp\"; };\n", path,
	    sizeof path) == -1)
		return;
	c = config_load(path, err, sizeof err);
	unlink(path);
	ok(c != NULL && c->upstream_kind == CONFIG_UPSTREAM_LMTP &&
	    strcmp(c->upstream_unix, "/run/dovecot/lmtp") == 0 &&
	    c->upstream_host == NULL, "lmtp:unix:PATH is LMTP to that socket");
	config_unref(c);
}

static void
test_config_sample(void)
{
	struct config	*c;
	char		 err[CONFIG_ERR_MAX];

	c = config_load("conf/frontmx.conf", err, sizeof err);
	if (!ok(c != NULL, "conf/frontmx.conf loads: %s", err))
		return;
	ok(c->nlisteners == 1 && strcmp(c->listeners[0].address, "127.0.0.1:2525") == 0,
	    "sample listens on 127.0.0.1:2525");
	ok(c->upstream_kind == CONFIG_UPSTREAM_DIR &&
	    strcmp(c->upstream_dir, "./maildir") == 0 && c->upstream_host == NULL,
	    "sample delivers to dir:./maildir");
	ok(config_relay_domain(c, "example.com") == 1 &&
	    config_relay_domain(c, "example.net") == 0, "sample relays example.com");
	ok(c->nrelay_networks == 2, "sample relay.networks");
	ok(test_config_rule(&c->policy_default, "spf", "fail") == CONFIG_ACTION_REJECT,
	    "sample spf fail = reject");
	ok(strcmp(c->authserv_id, "mx.example.net") == 0 &&
	    strcmp(c->tag_header, "X-Frontmx-Tag") == 0, "sample authserv_id and tag");
	config_unref(c);
}

static void
test_config_sockaddr_parse(void)
{
	static const struct {
		const char	*s;
		int		 family;	/* 0: refused */
		unsigned	 port;
	} cases[] = {
		{ "127.0.0.1:2525",	AF_INET,	2525 },
		{ "0.0.0.0:25",		AF_INET,	25 },
		{ "[::1]:25",		AF_INET6,	25 },
		{ "[::]:65535",		AF_INET6,	65535 },
		{ "[127.0.0.1]:25",	0, 0 },
		{ "::1:25",		0, 0 },
		{ "127.0.0.1:",		0, 0 },
		{ ":25",		0, 0 },
		{ "127.0.0.1:99999",	0, 0 },
		{ "127.0.0.1:-1",	0, 0 },
		{ "localhost:25",	0, 0 },
		{ "[::1]25",		0, 0 },
	};
	struct sockaddr_storage	ss;
	socklen_t		len;
	size_t			i;
	int			r;

	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		r = config_sockaddr_parse(cases[i].s, &ss, &len);
		if (cases[i].family == 0)
			ok(r == -1, "sockaddr '%s' refused", cases[i].s);
		else
			ok(r == 0 && ss.ss_family == cases[i].family &&
			    test_config_port(&ss) == cases[i].port,
			    "sockaddr '%s' parsed", cases[i].s);
	}
}

static void
test_config_relay(void)
{
	static const struct {
		const char	*domain;
		int		 match;
	} cases[] = {
		{ "example.com",	1 },	/* exact */
		{ "EXAMPLE.Com",	1 },	/* case */
		{ "example.com.",	1 },	/* trailing dot */
		{ "www.example.com",	0 },	/* exact entry only */
		{ "notexample.com",	0 },
		{ "example.com.evil",	0 },
		{ "example.org",	0 },	/* ".example.org" is subdomains only */
		{ "a.example.org",	1 },
		{ "a.b.Example.ORG.",	1 },
		{ "trailing.example",	1 },	/* entry had a trailing dot */
		{ "",			0 },
		{ ".",			0 },
		{ ".example.org",	0 },	/* a query is never a pattern */
		{ "com",		0 },
	};
	static char *hand_domains[] = { "example.com", ".example.org", "trailing.example" };
	struct config	*c, hand;
	char		 err[CONFIG_ERR_MAX], longname[400];
	size_t		 i;

	c = config_load("t/unit/conf/good.conf", err, sizeof err);
	if (!ok(c != NULL, "good.conf loads for relay cases: %s", err))
		return;
	/* The same answers from the hash and from the linear fallback. */
	memset(&hand, 0, sizeof hand);
	hand.relay_domains = hand_domains;
	hand.nrelay_domains = 3;
	for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ok(config_relay_domain(c, cases[i].domain) == cases[i].match,
		    "relay '%s' %s", cases[i].domain, cases[i].match ? "yes" : "no");
		ok(config_relay_domain(&hand, cases[i].domain) == cases[i].match,
		    "relay '%s' %s (no index)", cases[i].domain,
		    cases[i].match ? "yes" : "no");
	}
	memset(longname, 'a', sizeof longname - 1);
	longname[sizeof longname - 1] = '\0';
	ok(config_relay_domain(c, longname) == 0, "over-long name: no, and no overflow");
	ok(config_relay_domain(c, NULL) == 0, "NULL domain: no");
	config_unref(c);
}

/* Thousands of relay domains: the hash grows and still finds each one. */
static void
test_config_many_domains(void)
{
	struct config	*c;
	char		*text, err[CONFIG_ERR_MAX], name[64];
	size_t		 size = 1 << 20, len, i;
	int		 n, found = 0;

	if ((text = malloc(size)) == NULL) {
		ok(0, "malloc");
		return;
	}
	len = (size_t)snprintf(text, size, TEST_BASE "relay = { domains = [\n");
	for (i = 0; i < 5000; i++) {
		n = snprintf(text + len, size - len, "%s\"%sd%zu.example\"\n",
		    i ? "," : "", i % 2 ? "." : "", i);
		if (n < 0 || (size_t)n >= size - len)
			break;
		len += (size_t)n;
	}
	snprintf(text + len, size - len, "]; };\n");
	c = test_config_load_text(text, err, sizeof err);
	free(text);
	if (!ok(c != NULL && c->nrelay_domains == 5000, "5000 relay domains load: %s", err)) {
		config_unref(c);
		return;
	}
	for (i = 0; i < 5000; i++) {
		snprintf(name, sizeof name, "%sd%zu.example", i % 2 ? "x." : "", i);
		found += config_relay_domain(c, name);
	}
	ok(found == 5000, "all 5000 found (%d)", found);
	ok(config_relay_domain(c, "d1.example") == 0 &&
	    config_relay_domain(c, "x.d0.example") == 0 &&
	    config_relay_domain(c, "d5000.example") == 0, "near misses are misses");
	config_unref(c);
}

static void
test_config_actions(void)
{
	static const struct {
		enum config_action	 action;
		const char		*name;
	} names[] = {
		{ CONFIG_ACTION_ACCEPT,		"accept" },
		{ CONFIG_ACTION_TAG,		"tag" },
		{ CONFIG_ACTION_QUARANTINE,	"quarantine" },
		{ CONFIG_ACTION_TEMPFAIL,	"tempfail" },
		{ CONFIG_ACTION_REJECT,		"reject" },
		{ CONFIG_ACTION_DISCARD,	"discard" },
	};
	enum config_action	a;
	size_t			i;

	ok(sizeof names / sizeof names[0] == CONFIG_ACTION_COUNT,
	    "a name below for each of the %d actions", CONFIG_ACTION_COUNT);
	for (i = 0; i < sizeof names / sizeof names[0]; i++)
		ok(strcmp(config_action_name(names[i].action), names[i].name) == 0 &&
		    config_action_parse(names[i].name, &a) == 0 && a == names[i].action,
		    "action %d is \"%s\", and \"%s\" parses to it", (int)names[i].action,
		    names[i].name, names[i].name);
	ok(config_action_parse("quarantine", &a) == 0 && a == CONFIG_ACTION_QUARANTINE,
	    "quarantine");
	ok(config_action_parse("Reject", &a) == -1 && config_action_parse("", &a) == -1,
	    "wrong case and empty refused");
	ok(strcmp(config_action_name(CONFIG_ACTION_COUNT), "invalid") == 0,
	    "out-of-range action name");
}

static void
test_config_refcount(void)
{
	struct config	*c;
	char		 err[CONFIG_ERR_MAX];
	int		 i, loaded = 0;

	c = config_load("t/unit/conf/good.conf", err, sizeof err);
	if (!ok(c != NULL, "good.conf loads for refcount: %s", err))
		return;
	config_ref(c);
	config_ref(c);
	ok(c->refcount == 3, "two refs: 3");
	config_unref(c);
	config_unref(c);
	ok(c->refcount == 1 && strcmp(c->hostname, "MX1.example.net") == 0,
	    "still alive after two unrefs");
	config_unref(c);		/* freed; ASan would flag any later use */
	config_unref(NULL);
	config_ref(NULL);

	/* Many loads and frees, good and bad: ASan's leak check runs at exit. */
	for (i = 0; i < 200; i++) {
		c = config_load(i % 2 ? "t/unit/conf/good.conf" : "conf/frontmx.conf",
		    err, sizeof err);
		loaded += c != NULL;
		config_unref(c);
		c = config_load("t/unit/conf/include.conf", err, sizeof err);
		config_unref(c);
	}
	ok(loaded == 200, "200 loads and frees");
	c = config_load("t/unit/conf/good.conf", NULL, 0);
	ok(c != NULL, "NULL err buffer tolerated on success");
	config_unref(c);
	ok(config_load("t/unit/conf/syntax.conf", NULL, 0) == NULL,
	    "NULL err buffer tolerated on failure");
}

int
main(void)
{
	struct config	*c;
	char		 small[16];

	plan(382);
	/* prove runs us from the repository root; fixtures are relative to it. */
	if (access("t/unit/conf/good.conf", R_OK) == -1) {
		printf("Bail out! run from the repository root\n");
		return 1;
	}
	test_config_table();
	test_config_good();
	test_config_defaults();
	test_config_sample();
	test_config_lmtp();
	test_config_sockaddr_parse();
	test_config_relay();
	test_config_many_domains();
	test_config_actions();
	test_config_refcount();

	c = config_load("t/unit/conf/does-not-exist.conf", small, sizeof small);
	ok(c == NULL && strlen(small) == sizeof small - 1,
	    "error truncated to a small buffer: \"%s\"", small);
	return done_testing();
}
