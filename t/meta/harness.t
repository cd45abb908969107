#!/bin/sh
# The harness's own self-test, t/lib/selftest.py: the capture upstream,
# SmtpClient, swaks and the private Postfix against each other, without
# frontmx, so a harness bug shows here and not as a frontmx failure.
exec /usr/bin/python3 "$(dirname "$0")/../lib/selftest.py"
