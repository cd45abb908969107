#!/usr/bin/python3
"""Idle-connection memory probe for t/bench/run.

usage: idle.py HOST PORT COUNT PID [TIMEOUT]

Opens COUNT TCP connections to HOST:PORT, waits until every one of them has
received a 220 greeting (so the server has accepted it and set up its
session), then compares the VmRSS of process PID before and after.  Prints

    idle        5000 connections  RSS +45000 KiB  9.0 KiB/conn (target < 32 KiB)

and closes the connections.  Connections are opened in a bounded window so
the server's listen queue never overflows.  Exit status: 0 ok, 1 when a
connection failed, got something other than 220, or the deadline passed.
"""

import errno
import os
import selectors
import socket
import sys
import time

WINDOW = 256            # connections awaiting their greeting at any time


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])     # kB
    raise RuntimeError(f"{key} not found for pid {pid}")


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        pass
    return False


def fail(msg):
    print(f"idle: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) not in (5, 6):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(64)
    host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    deadline = time.monotonic() + (float(sys.argv[5]) if len(sys.argv) == 6 else 120.0)

    rss_before = vm(pid, "VmRSS")
    sel = selectors.DefaultSelector()
    pending = {}        # sock -> bytes received so far
    done = []
    opened = 0

    while len(done) < count:
        if not alive(pid):
            fail(f"process {pid} died after {len(done)} connections were greeted")
        if time.monotonic() > deadline:
            fail(f"timeout: {len(done)} of {count} connections greeted")
        while opened < count and len(pending) < WINDOW:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((host, port))
            if rc not in (0, errno.EINPROGRESS):
                fail(f"connect #{opened + 1}: {os.strerror(rc)}")
            sel.register(s, selectors.EVENT_READ)
            pending[s] = b""
            opened += 1
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError as e:
                fail(f"connection #{len(done) + 1}: {e}")
            if not data:
                fail(f"connection closed before greeting after {len(done)} greeted "
                     f"(got {pending[s]!r})")
            buf = pending[s] + data
            if b"\n" not in buf:
                pending[s] = buf
                continue
            if not buf.startswith(b"220"):
                fail(f"connection #{len(done) + 1}: greeting {buf.splitlines()[0]!r}")
            sel.unregister(s)
            del pending[s]
            done.append(s)

    # Let the server finish whatever it does after the greeting.
    time.sleep(0.5)
    if not alive(pid):
        fail(f"process {pid} died with {count} connections open")
    rss_after = vm(pid, "VmRSS")
    delta = rss_after - rss_before
    print(f"idle        {count} connections  RSS {delta:+d} KiB  "
          f"{delta / count:.1f} KiB/conn (target < 32 KiB)")
    sys.stdout.flush()

    for s in done:
        s.close()
    sel.close()


if __name__ == "__main__":
    main()
