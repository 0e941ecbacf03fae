#!/usr/bin/env python3
"""Idle TCP connections for benches/compare.sh's "with idle connections" row.

  idleconns.py hold ADDR PORT        accept connections and keep them open (host side)
  idleconns.py open ADDR PORT N      open N connections, print "opened N", keep them open

Both run until killed. Nothing is sent on the connections: they are the keep-alive pools and
idle clients a busy container holds while one flow moves data.
"""
import resource
import socket
import sys
import time


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4096)
    conns = []
    while True:
        c, _ = s.accept()
        conns.append(c)


def open_(addr, port, n):
    conns = []
    for _ in range(n):
        conns.append(socket.create_connection((addr, port), timeout=10))
    print("opened %d" % len(conns), flush=True)
    while True:
        time.sleep(3600)


def main(argv):
    raise_fd_limit()
    if argv[:1] == ["hold"] and len(argv) == 3:
        hold(argv[1], int(argv[2]))
    elif argv[:1] == ["open"] and len(argv) == 4:
        open_(argv[1], int(argv[2]), int(argv[3]))
    else:
        sys.exit(__doc__)


main(sys.argv[1:])
