# frontmx - filtering SMTP proxy.  `make help` lists the targets.

PROG	 = frontmx
CC	?= cc
PKGS	 = libevent libevent_pthreads libevent_openssl openssl libconfig gmime-3.0 \
	   libpcre2-8 libunbound
WARN	 = -Wall -Wextra -Werror -Wshadow -Wpointer-arith -Wstrict-prototypes \
	   -Wmissing-prototypes -Wmissing-declarations -Wcast-qual -Wformat=2
CFLAGS	?= -O2 -g
CFLAGS	+= -std=c11 -D_GNU_SOURCE -fstack-protector-strong $(WARN) -MMD -MP \
	   -Iproxy -Ifilters -Ipolicy -Icommon $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS	+= $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -ldl
LDLIBS += -lopendkim
LDLIBS += $(shell pkg-config --libs libpsl)
LDLIBS += -lspf2 -lresolv
LDLIBS += -lmilter
LDLIBS += -lhiredis

# Data plane
SRCS	+= proxy/main.c
SRCS	+= proxy/runtime.c
SRCS	+= proxy/worker.c
SRCS	+= proxy/limit.c
SRCS	+= proxy/smtp_session.c
SRCS	+= proxy/smtp_peer.c
SRCS	+= proxy/smtp_chat.c
SRCS	+= proxy/smtp_auth.c
SRCS	+= proxy/smtp_mail.c
SRCS	+= proxy/smtp_data.c
SRCS	+= proxy/smtp_eom.c
SRCS	+= proxy/smtp_relay.c
SRCS	+= proxy/smtp_tx.c
SRCS	+= proxy/smtp_parse.c
SRCS	+= proxy/smtp_reply.c
SRCS	+= proxy/xtext.c
SRCS	+= proxy/haproxy.c
SRCS	+= proxy/smtp_frame.c
SRCS	+= proxy/upstream.c
SRCS	+= proxy/upstream_pool.c
SRCS	+= proxy/spool.c
SRCS	+= proxy/maildir.c
SRCS	+= proxy/deliver.c
SRCS	+= proxy/deliver_smtp.c
SRCS	+= proxy/deliver_lmtp.c
SRCS	+= proxy/deliver_maildir.c
SRCS	+= proxy/deliver_check.c
SRCS	+= proxy/check.c
SRCS	+= proxy/milter_listen.c
SRCS	+= proxy/dns.c
SRCS	+= proxy/tls.c
SRCS	+= proxy/bev.c
SRCS	+= proxy/metrics_http.c
# Filters
SRCS	+= filters/filter_chain.c
SRCS	+= filters/filter_api.c
SRCS	+= filters/filter_pool.c
SRCS	+= filters/filter_loader.c
SRCS	+= filters/filter_opt.c
SRCS	+= filters/content.c
SRCS	+= filters/content_rules.c
SRCS	+= filters/spf.c
SRCS	+= filters/spf_record.c
SRCS	+= filters/spf_dns.c
SRCS	+= filters/dkim.c
SRCS	+= filters/dkim_sign.c
SRCS	+= filters/dkim_dns.c
SRCS	+= filters/dmarc.c
SRCS	+= filters/dnsbl.c
SRCS	+= filters/milter.c
SRCS	+= filters/milter_proto.c
SRCS	+= filters/redis_client.c
SRCS	+= filters/greylist.c
SRCS	+= filters/ratelimit.c
# Policy and configuration
SRCS	+= policy/config.c
SRCS	+= policy/config_net.c
SRCS	+= policy/config_filters.c
SRCS	+= policy/policy.c
# Helpers every layer shares (proxy -> filters -> policy -> common)
SRCS	+= common/log.c
SRCS	+= common/strutil.c
SRCS	+= common/netaddr.c
SRCS	+= common/dnsmsg.c
SRCS	+= common/linebuf.c
SRCS	+= common/metrics.c

# Pure modules the unit tests link against (no libevent, no main).
UNIT_SRCS = proxy/smtp_parse.c proxy/smtp_reply.c proxy/xtext.c proxy/haproxy.c policy/config.c policy/config_net.c policy/config_filters.c policy/policy.c filters/content.c filters/content_rules.c \
	    filters/filter_opt.c filters/milter_proto.c common/strutil.c common/netaddr.c common/dnsmsg.c \
	    common/linebuf.c common/metrics.c common/log.c
UNIT_TESTS = $(patsubst t/unit/%.c,build/unit/%,$(wildcard t/unit/test_*.c))

OBJS	 = $(SRCS:%.c=build/rel/%.o)
ASAN_OBJS = $(SRCS:%.c=build/asan/%.o)
ASAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

DEBS	 = build-essential pkg-config libevent-dev libconfig-dev libpcre2-dev \
	   libgmime-3.0-dev libunbound-dev libssl-dev openssl libpsl-dev publicsuffix \
	   libopendkim-dev opendkim opendkim-tools libspf2-dev python3-spf python3-yaml \
	   swaks libnet-ssleay-perl postfix python3-aiosmtpd python3-dnslib python3-dkim valgrind \
	   libnss-wrapper libdb5.3 libgnutls-dane0 libgnutls30 libidn12 libnsl2 \
	   libpcre2-8-0 libcrypt1 libidn2-0 clang libclang-rt-14-dev llvm-14 \
	   dovecot-lmtpd
# libmilter: the test milter of t/milter (fault cases, the bench's milter line),
# and proxy/milter_listen.c: the chain served as a milter (issue 11)
DEBS	+= libmilter-dev
DEBS	+= prometheus	# promtool check metrics on a scrape (t/smtp/86-metrics.t)
DEBS	+= strace	# make bench: frontmx's syscalls per message (t/bench/run)
DEBS	+= mandoc man-db systemd	# t/meta/install.t: mandoc -T lint and man --warnings on the man pages, systemd-analyze verify on the unit
# Real milters for the interop tests t/smtp/80-83 (t/lib/milters.py starts
# each on loopback in the test's temp dir; policy-rc.d or not, the tests use
# private sockets, ports and pid files, never the packaged services).
# opendkim is above; clamd + clamav-milter with a local .ndb signature (no
# freshclam run), opendmarc, rspamd's proxy worker in self-scan mode.
DEBS	+= clamav-daemon clamav-milter opendmarc rspamd
# Shared state for the greylist and ratelimit filters (filters/redis_client.c):
# hiredis's async client on the worker loops; a real redis-server, redis-cli
# and HAProxy (PROXY v2 in front of two instances) for t/smtp/87-90.
DEBS	+= libhiredis-dev redis-server redis-tools haproxy
# A real Exim 4.96 (Debian 12's default MTA) as a sending client for
# t/smtp/47-exim.t and as the upstream of t/smtp/68-exim-upstream.t
# (t/lib/exim.py).  Installing exim4 would remove Postfix, so `make exim`
# downloads its two packages and unpacks them into build/exim; the shared
# libraries it needs are in DEBS above, and libnss-wrapper lets the test
# give its compiled-in user (Debian-exim) a uid without touching /etc.
EXIM_DEBS = exim4-base exim4-daemon-light
EXIM	 = build/exim/root/usr/sbin/exim4
PROVE	?= prove
# Quiet unless V=1.
Q	 = $(if $(V),,@)
E	 = $(if $(V),@true,@echo)

.PHONY: all deps run test check unit asan bench bench-compare clean help modules milters exim fuzz fuzzers install uninstall
all: $(PROG)

$(PROG): $(OBJS)
	$(E) "  LD      $@"
	$(Q)$(CC) $(CFLAGS) -o $@ $(OBJS) $(LDFLAGS) $(LDLIBS)

build/rel/%.o: %.c
	@mkdir -p $(dir $@)
	$(E) "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

# ASan/UBSan build of the daemon; `make test` runs the black-box suite against it.
asan: $(PROG)-asan
$(PROG)-asan: $(ASAN_OBJS)
	$(E) "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $(ASAN_OBJS) $(LDFLAGS) $(LDLIBS)

build/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(E) "  CC      $< (asan)"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -c -o $@ $<

# A unit test is its own object (compiled with -MMD like everything else, so
# its .d names every header and every .c it #includes) linked with the ASan
# objects of the modules it tests.
UNIT_OBJS = $(UNIT_SRCS:%.c=build/asan/%.o)
build/unit/%.o: t/unit/%.c
	@mkdir -p $(dir $@)
	$(E) "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -It/unit -c -o $@ $<

$(filter-out build/unit/test_loader build/unit/test_deliver,$(UNIT_TESTS)): build/unit/%: build/unit/%.o $(UNIT_OBJS)
	$(E) "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $< $(UNIT_OBJS) $(LDLIBS)

# Filter modules: the example, and the test modules of t/plugins (one .so per
# .c) for test_loader and the black-box suite.  Built as a third party would,
# against frontmx_filter.h alone, in strict C99.
MODULE_SRCS = $(wildcard t/plugins/*.c)
MODULES	 = $(MODULE_SRCS:t/plugins/%.c=build/plugins/%.so) filters/examples/rcpt_allow.so
ABI_PREV_SRCS = $(wildcard t/plugins/abi-prev/*.c)
MODULES	+= $(ABI_PREV_SRCS:t/plugins/abi-prev/%.c=build/plugins/abi-prev/%.so)
MODULE_CFLAGS = -std=c99 -pedantic -O2 -g -shared -fPIC -fvisibility=hidden $(WARN) -Ifilters -MMD -MP

modules: $(MODULES)

build/plugins/%.so: t/plugins/%.c filters/frontmx_filter.h
	@mkdir -p $(dir $@)
	$(E) "  CC      $@"
	$(Q)$(CC) $(MODULE_CFLAGS) -o $@ $<

# Also in its .d, but a tree built before modules had .d files needs it.
build/plugins/misbehave_blocking.so: t/plugins/misbehave.c

filters/examples/rcpt_allow.so: filters/examples/rcpt_allow.c filters/frontmx_filter.h
	$(E) "  CC      $@"
	$(Q)$(CC) $(MODULE_CFLAGS) -o $@ $<

# Modules built against the header of the previous minor (a copy of
# frontmx_filter.h as main had it before the bump), never against ours:
# they prove that a module nobody rebuilt still loads and works.
build/plugins/abi-prev/%.so: t/plugins/abi-prev/%.c t/plugins/abi-prev/frontmx_filter.h
	@mkdir -p $(dir $@)
	$(E) "  CC      $@ (previous ABI minor)"
	$(Q)$(CC) $(filter-out -Ifilters,$(MODULE_CFLAGS)) -It/plugins/abi-prev -o $@ $<

# The test milters of t/milter (libmilter, as every packaged milter but
# rspamd): the fault cases of the milter client and the bench's milter line.
MILTERS	 = $(patsubst t/milter/%.c,build/milter/%,$(wildcard t/milter/*.c))
milters: $(MILTERS)

build/milter/%: t/milter/%.c
	@mkdir -p $(dir $@)
	$(E) "  CC      $@"
	$(Q)$(CC) -std=c11 -D_GNU_SOURCE -O2 -g $(WARN) -MMD -MP -o $@ $< -lmilter -lpthread

# Links the loader and the option getters it hands modules; dlopen()s
# $(MODULES) at run time (see `unit`).
TEST_LOADER_OBJS = build/asan/filters/filter_loader.o build/asan/filters/filter_opt.o \
	build/asan/common/strutil.o build/asan/common/metrics.o
build/unit/test_loader: build/unit/test_loader.o $(TEST_LOADER_OBJS)
	$(E) "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $< $(TEST_LOADER_OBJS) -ldl

# deliver.c's backends reach upstream.c, TLS and the configuration: the
# daemon's objects but main.o.
TEST_DELIVER_OBJS = $(filter-out build/asan/proxy/main.o,$(ASAN_OBJS))
build/unit/test_deliver: build/unit/test_deliver.o $(TEST_DELIVER_OBJS)
	$(E) "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $< $(TEST_DELIVER_OBJS) $(LDFLAGS) $(LDLIBS)

unit: $(UNIT_TESTS) modules

# libFuzzer harnesses, one per parser of untrusted bytes (t/fuzz/README).
# Each is built with clang, ASan and UBSan, from its harness and the
# sources it needs (FUZZ_SRCS below); the corpus under t/fuzz/corpus/NAME
# seeds it.  `make fuzz` runs each for FUZZ_TIME seconds, new inputs go
# to build/fuzz/corpus/NAME and findings to build/fuzz/crash/; `make
# test` replays the corpus and fuzzes a few seconds (t/fuzz/fuzz.t).
FUZZ_CC	?= clang
FUZZ_TIME ?= 60
FUZZ_FLAGS = -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	   -fno-omit-frame-pointer
FUZZERS	 = $(patsubst t/fuzz/%.c,%,$(wildcard t/fuzz/*.c))
FUZZ_BINS = $(FUZZERS:%=build/fuzz/%)

build/fuzz/smtp_parse:	FUZZ_SRCS = proxy/smtp_parse.c
build/fuzz/smtp_reply:	FUZZ_SRCS = proxy/smtp_reply.c
build/fuzz/xtext:	FUZZ_SRCS = proxy/xtext.c
build/fuzz/milter_proto:	FUZZ_SRCS = filters/milter_proto.c
build/fuzz/haproxy:	FUZZ_SRCS = proxy/haproxy.c
build/fuzz/data_framer:	FUZZ_SRCS = proxy/smtp_frame.c
build/fuzz/config:	FUZZ_SRCS = $(UNIT_SRCS)
build/fuzz/content: filters/content_rules.c
# spf, dkim, dmarc and dnsbl #include their filter to reach its static parsers.
build/fuzz/spf: filters/spf.c filters/spf_record.c filters/spf_dns.c
build/fuzz/dkim: filters/dkim.c filters/dkim_sign.c filters/dkim_dns.c
build/fuzz/dmarc: filters/dmarc.c
build/fuzz/dnsbl: filters/dnsbl.c
build/fuzz/dnsbl:	FUZZ_SRCS = filters/filter_opt.c

# Every harness links the common/ helpers (a parser in any layer may use
# them); $(sort) drops the copy $(UNIT_SRCS) already names.
FUZZ_COMMON = common/strutil.c common/netaddr.c common/dnsmsg.c common/linebuf.c \
	      common/metrics.c

fuzzers: $(FUZZ_BINS)

build/fuzz/%: t/fuzz/%.c t/fuzz/fuzz.h $(UNIT_SRCS) proxy/smtp_frame.c $(FUZZ_COMMON)
	@mkdir -p $(dir $@)
	$(E) "  FUZZ    $@"
	$(Q)$(FUZZ_CC) $(CFLAGS) $(FUZZ_FLAGS) -It/fuzz -Ifilters -o $@ $< $(sort $(FUZZ_SRCS) $(FUZZ_COMMON)) \
	    $(LDFLAGS) $(LDLIBS)

fuzz: deps
	$(MAKE) fuzzers
	@mkdir -p build/fuzz/crash
	@for f in $(FUZZERS); do \
		mkdir -p build/fuzz/corpus/$$f; \
		echo "fuzz $$f for $(FUZZ_TIME) s"; \
		LSAN_OPTIONS=suppressions=$(CURDIR)/t/fuzz/lsan.supp build/fuzz/$$f -max_total_time=$(FUZZ_TIME) -timeout=10 -rss_limit_mb=1024 \
		    -print_final_stats=1 -artifact_prefix=build/fuzz/crash/$$f- \
		    build/fuzz/corpus/$$f t/fuzz/corpus/$$f || exit 1; \
	done

# Install the Debian packages that are missing (no-op when all are present).
deps:
	@missing=""; for p in $(DEBS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

exim: $(EXIM)
$(EXIM):
	@rm -rf build/exim && mkdir -p build/exim/debs
	$(E) "  GET     $(EXIM_DEBS)"
	$(Q)if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	cd build/exim/debs && { \
		apt-get download -qq -o APT::Sandbox::User=root $(EXIM_DEBS) 2>/dev/null || \
		{ $$SUDO apt-get update -qq && \
		  apt-get download -qq -o APT::Sandbox::User=root $(EXIM_DEBS); }; }
	$(Q)for f in build/exim/debs/*.deb; do dpkg -x "$$f" build/exim/root || exit 1; done
	$(Q)chmod u-s $@ && touch $@

run: deps
	$(MAKE) all
	./$(PROG) -c conf/frontmx.conf

test: deps
	$(MAKE) all asan unit milters exim fuzzers
	FRONTMX=$(CURDIR)/$(PROG)-asan $(PROVE) -j2 t/meta t/unit t/smtp t/fuzz

check: test

bench: deps
	$(MAKE) all milters
	t/bench/run

# The bench of this tree against the build of revision REV, alternating in
# one run (t/bench/compare): `make bench-compare REV=HEAD~5`, with
# BENCH_WORKERS=N and BENCH_PASSES=N from the environment.
REV	?= HEAD
bench-compare: deps
	t/bench/compare $(REV)

# make install [PREFIX=/usr/local] [DESTDIR=/staging]: the binary, the
# man pages, the systemd unit (with this PREFIX's paths), its sysusers.d
# and tmpfiles.d files, the module header for filter authors, and the
# sample configuration in $(SYSCONFDIR)/frontmx, which an existing
# frontmx.conf or content.rules is never overwritten by (the samples also
# go to $(DOCDIR)).  systemd reads units, sysusers.d and tmpfiles.d under
# /usr/local/lib too.  t/meta/install.t checks the file list.
PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
DOCDIR	?= $(PREFIX)/share/doc/frontmx
INCLUDEDIR ?= $(PREFIX)/include/frontmx
UNITDIR	?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR ?= /etc
INSTALL	?= install

install: $(PROG)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/frontmx
	$(INSTALL) -m 0755 $(PROG) $(DESTDIR)$(SBINDIR)/frontmx
	$(INSTALL) -m 0644 man/frontmx.8 $(DESTDIR)$(MANDIR)/man8/frontmx.8
	$(INSTALL) -m 0644 man/frontmx.conf.5 $(DESTDIR)$(MANDIR)/man5/frontmx.conf.5
	$(INSTALL) -m 0644 filters/frontmx_filter.h $(DESTDIR)$(INCLUDEDIR)/frontmx_filter.h
	$(INSTALL) -m 0644 README.md conf/frontmx.conf conf/content.rules $(DESTDIR)$(DOCDIR)
	sed -e 's|/usr/local/sbin/frontmx|$(SBINDIR)/frontmx|g' \
	    -e 's|/etc/frontmx/|$(SYSCONFDIR)/frontmx/|g' \
	    -e 's|/usr/local/share/doc/frontmx/|$(DOCDIR)/|g' conf/frontmx.service \
	    > $(DESTDIR)$(UNITDIR)/frontmx.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/frontmx.service
	$(INSTALL) -m 0644 conf/frontmx.sysusers $(DESTDIR)$(SYSUSERSDIR)/frontmx.conf
	$(INSTALL) -m 0644 conf/frontmx.tmpfiles $(DESTDIR)$(TMPFILESDIR)/frontmx.conf
	for f in frontmx.conf content.rules; do \
		[ -e $(DESTDIR)$(SYSCONFDIR)/frontmx/$$f ] || \
		$(INSTALL) -m 0644 conf/$$f $(DESTDIR)$(SYSCONFDIR)/frontmx/$$f; \
	done

# Leaves $(SYSCONFDIR)/frontmx alone: it holds the admin's configuration.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/frontmx $(DESTDIR)$(MANDIR)/man8/frontmx.8 \
	    $(DESTDIR)$(MANDIR)/man5/frontmx.conf.5 \
	    $(DESTDIR)$(INCLUDEDIR)/frontmx_filter.h \
	    $(DESTDIR)$(UNITDIR)/frontmx.service \
	    $(DESTDIR)$(SYSUSERSDIR)/frontmx.conf $(DESTDIR)$(TMPFILESDIR)/frontmx.conf \
	    $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/frontmx.conf \
	    $(DESTDIR)$(DOCDIR)/content.rules
	-rmdir $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(DOCDIR)

clean:
	rm -rf build $(PROG) $(PROG)-asan filters/examples/rcpt_allow.so filters/examples/rcpt_allow.d

# `make print-DEBS` and the like: a variable's value, for scripts (t/meta/deps.t).
print-%:
	@echo $($*)

help:
	@echo "make        build ./frontmx"
	@echo "make deps   install missing Debian packages"
	@echo "make install [PREFIX=/usr/local] [DESTDIR=dir]  binary, man pages, systemd unit, sample config, module header"
	@echo "make run    deps + build + run with conf/frontmx.conf (foreground)"
	@echo "make test   deps + build + ASan/UBSan build + the whole suite (prove)"
	@echo "make exim   unpack Exim 4.96 into build/exim (client and upstream for the tests)"
	@echo "make bench  throughput and memory against smtp-sink"
	@echo "make bench-compare REV=R  the same bench, build of R vs this tree, alternating"
	@echo "make fuzz   each libFuzzer harness of t/fuzz for FUZZ_TIME (60) seconds"

# What each object, unit test and module read when it was last compiled
# (-MMD -MP): editing any header or #included .c rebuilds what uses it.
-include $(OBJS:.o=.d) $(ASAN_OBJS:.o=.d) $(UNIT_TESTS:=.d) $(MODULES:.so=.d) $(MILTERS:=.d) \
    $(FUZZ_BINS:=.d)
