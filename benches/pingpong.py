#!/usr/bin/env python3
"""TCP request/response latency, the fallback for `sockperf ping-pong`.

benches/compare.sh uses this only when sockperf is not installed; the summary then labels the
latency rows "python3 ping-pong" because the numbers are not comparable with sockperf's.

    pingpong.py server ADDR PORT           echo fixed-size messages until killed
    pingpong.py client ADDR PORT SECONDS   send a message, wait for the echo, repeat

The client prints one line `avg_rtt_us=X p50_rtt_us=Y count=N` (full round trip, microseconds,
measured with time.perf_counter_ns around each send/receive pair; 12-byte messages as sockperf's
default, TCP_NODELAY on both ends).
"""

import socket
import statistics
import sys
import threading
import time

MSG = 12


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_one(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while True:
            msg = recv_exact(conn, MSG)
            if msg is None:
                return
            conn.sendall(msg)


def server(addr, port):
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((addr, port))
    lst.listen(16)
    while True:
        conn, _ = lst.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def client(addr, port, seconds):
    sock = socket.create_connection((addr, port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * MSG
    # Warm-up, as sockperf does, so the first exchanges do not count.
    for _ in range(100):
        sock.sendall(msg)
        if recv_exact(sock, MSG) is None:
            sys.exit("server closed the connection")
    rtts = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter_ns()
        sock.sendall(msg)
        if recv_exact(sock, MSG) is None:
            sys.exit("server closed the connection")
        rtts.append(time.perf_counter_ns() - t0)
    sock.close()
    if not rtts:
        sys.exit("no round trips completed")
    print(
        "avg_rtt_us=%.3f p50_rtt_us=%.3f count=%d"
        % (statistics.fmean(rtts) / 1000, statistics.median(rtts) / 1000, len(rtts))
    )


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
