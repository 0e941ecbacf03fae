#!/usr/bin/env python3
"""Tiny TCP servers for the integration tests (run inside the test's private host namespace).

usage: tcpserve.py MODE ADDR PORT
  greet     accept forever; print "peer ADDR" (flushed) and send "ok\n" to each client, close.
  halfclose accept forever; read until EOF, then answer "got N bytes\n" and close
            (works only if the client's FIN arrives while the other direction stays open).
  udpecho   UDP: send every datagram back to its sender (one process, unlike `ncat -u -k -e`,
            whose forked children outlive a killed parent).
  slow      connects take 6 s or more: the accept queue (backlog 0) is held full by a filler
            connection for 6 s, so the kernel drops SYNs until a retransmission; then accept
            forever and hold each client open until it closes.
  hold      accept forever and hold each client open until it closes (idle connections).
"""
import socket
import sys
import threading
import time


def serve(mode, addr, port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if mode == "udpecho":
        u = socket.socket(family, socket.SOCK_DGRAM)
        u.bind((addr, port))
        while True:
            data, peer = u.recvfrom(65535)
            u.sendto(data, peer)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    if mode == "slow":
        s.listen(0)
        filler = socket.create_connection((addr, port))
        print("ready", flush=True)
        time.sleep(6)
        s.accept()[0].close()
        filler.close()
    else:
        s.listen(512)
    while True:
        c, peer = s.accept()
        print("peer", peer[0], flush=True)
        threading.Thread(target=handle, args=(mode, c), daemon=True).start()


def handle(mode, c):
    try:
        if mode == "greet":
            c.sendall(b"ok\n")
        elif mode in ("slow", "hold"):
            while c.recv(65536):
                pass
        elif mode == "halfclose":
            n = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.sendall(b"got %d bytes\n" % n)
    finally:
        c.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2], int(sys.argv[3]))
