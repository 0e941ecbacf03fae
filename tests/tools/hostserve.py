#!/usr/bin/env python3
"""Host-side servers for tests/hostile.rs (run inside the test's private host namespace).

usage: hostserve.py MODE ADDR PORT [ARGS]
  echo                 TCP: echo every byte back, per connection, until EOF.
  reset                TCP: send 64 KiB chunks for 1 s, then close with SO_LINGER 0 (RST).
  sink LOG             TCP: read to EOF or error; append "BYTES SHA256 ERROR" to LOG per
                       connection (ERROR is "-" for a clean EOF, else the errno name).
  udpburst N SIZE LOG  UDP: for each datagram received, send N datagrams of SIZE bytes back to
                       its sender as fast as send() allows; append "sent N" to LOG.
  udpcount LOG         UDP: count the datagrams received; rewrite LOG with the count every
                       0.2 s.
"""
import errno
import hashlib
import os
import socket
import struct
import sys
import threading
import time


def listener(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(512)
    return s


def echo(c):
    with c:
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            c.sendall(d)


def reset(c):
    chunk = b"r" * 65536
    end = time.monotonic() + 1.0
    c.setblocking(False)
    while time.monotonic() < end:
        try:
            c.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def sink(c, log):
    h = hashlib.sha256()
    n = 0
    err = "-"
    with c:
        while True:
            try:
                d = c.recv(1 << 20)
            except OSError as e:
                err = errno.errorcode.get(e.errno, str(e.errno))
                break
            if not d:
                break
            n += len(d)
            h.update(d)
    with open(log, "a") as f:
        f.write("%d %s %s\n" % (n, h.hexdigest(), err))


def udpburst(addr, port, n, size, log):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    u.bind((addr, port))
    while True:
        _, peer = u.recvfrom(65535)
        payload = b"b" * size
        sent = 0
        for i in range(n):
            while True:
                try:
                    u.sendto(struct.pack("!I", i) + payload[4:], peer)
                    sent += 1
                    break
                except BlockingIOError:
                    time.sleep(0.0005)
                except OSError:
                    break
        with open(log, "a") as f:
            f.write("sent %d\n" % sent)


def udpcount(addr, port, log):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    u.bind((addr, port))
    u.settimeout(0.2)
    n = 0
    while True:
        try:
            u.recv(65535)
            n += 1
            continue
        except socket.timeout:
            pass
        with open(log + ".tmp", "w") as f:
            f.write("%d\n" % n)
        os.replace(log + ".tmp", log)


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "udpcount":
        udpcount(addr, port, sys.argv[4])
        return
    if mode == "udpburst":
        udpburst(addr, port, int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        return
    s = listener(addr, port)
    while True:
        c, _ = s.accept()
        if mode == "echo":
            target, args = echo, (c,)
        elif mode == "reset":
            target, args = reset, (c,)
        elif mode == "sink":
            target, args = sink, (c, sys.argv[4])
        else:
            raise SystemExit("unknown mode " + mode)
        threading.Thread(target=target, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
