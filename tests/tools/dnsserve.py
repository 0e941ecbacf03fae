#!/usr/bin/env python3
"""A tiny DNS responder for the integration tests (inside the test's private host namespace).

usage: dnsserve.py ADDR PORT ANSWER [DELAY_SECS]

Answers every query, over UDP and TCP on ADDR:PORT, with one A record ANSWER (TTL 0) for the
question's name, after DELAY_SECS (default 0; each query waits in its own thread, so a slow
answer does not hold up the others). Prints nothing.
"""
import socket
import struct
import sys
import threading
import time


def answer(query, addr):
    if len(query) < 12:
        return None
    # Question section: the name, then type and class.
    i = 12
    while i < len(query) and query[i] != 0:
        i += 1 + query[i]
    qend = i + 5
    if qend > len(query):
        return None
    ident = query[:2]
    flags = struct.pack("!H", 0x8180)
    counts = struct.pack("!HHHH", 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton(addr)
    return ident + flags + counts + query[12:qend] + rr


def serve_udp(sock, addr, delay):
    while True:
        q, peer = sock.recvfrom(4096)

        def reply(q=q, peer=peer):
            time.sleep(delay)
            r = answer(q, addr)
            if r:
                sock.sendto(r, peer)

        threading.Thread(target=reply, daemon=True).start()


def serve_tcp_conn(c, addr, delay):
    try:
        c.settimeout(30)
        while True:
            hdr = c.recv(2, socket.MSG_WAITALL)
            if len(hdr) < 2:
                return
            (n,) = struct.unpack("!H", hdr)
            q = c.recv(n, socket.MSG_WAITALL)
            time.sleep(delay)
            r = answer(q, addr)
            if not r:
                return
            c.sendall(struct.pack("!H", len(r)) + r)
    except OSError:
        pass
    finally:
        c.close()


def main():
    host, port, addr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((host, port))
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((host, port))
    t.listen(128)
    threading.Thread(target=serve_udp, args=(u, addr, delay), daemon=True).start()
    while True:
        c, _ = t.accept()
        threading.Thread(target=serve_tcp_conn, args=(c, addr, delay), daemon=True).start()


if __name__ == "__main__":
    main()
