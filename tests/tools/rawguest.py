#!/usr/bin/env python3
"""A hostile guest: raw Ethernet frames written on tap0 (AF_PACKET), for tests/hostile.rs.

Run it inside the guest's network namespace only: it writes on the interface named by --dev
(default tap0) and nowhere else, so every frame goes to the tapir (or slirp4netns) under test.
Every sub-command is bounded by a count and by --max-secs; it prints one summary line
`key=value ...` on stdout.

usage: rawguest.py [--dev tap0] [--max-secs S] [--seed N] COMMAND [ARGS]

  malformed N            N malformed or truncated frames of every protocol (Ethernet, ARP, IPv4
                         options/lengths, TCP, UDP, ICMP, IPv6, ICMPv6, NDP, DHCP), mutated from
                         valid templates with a fixed seed
  tcpflags DST PORT      every combination of the 8 TCP flags (256), twice (from the guest's own
                         address and from a spoofed one), plus SYNs with malformed options
  synflood DST PORTS N [--src A] [--spread-dst PREFIX]
                         N SYNs to DST (ports cycled from PORTS, "a-b" or "a,b,c"), each from a
                         fresh source port; --src spoofs the source address (answered in ARP by
                         this tool while it runs, never by the guest kernel, so tapir's SYN-ACKs
                         get no answer); --spread-dst a.b.c spreads destinations over a.b.c.1-254
  synrst DST PORT N      N handshakes from a spoofed source that take the SYN-ACK and answer
                         it with RST (the spoofed peer "gives up")
  udpflood DST PORTS N [--one-src]
                         N datagrams to DST, ports cycled from PORTS, each from a fresh source
                         port (or all from one source port with --one-src)
  frags N                N fragment trains: overlapping fragments, fragments never completed,
                         an endless train of offsets, tiny fragments, oversize reassembly
  spoof N                N rounds of spoofed ARP (replies and gratuitous for the gateway/DNS
                         addresses, requests from other MACs), NDP (NA for fe80::2/fd00::2,
                         NS), router advertisements and DHCP (server replies from the guest,
                         DISCOVER/REQUEST floods with random client MACs)
  probe DST PORT [--proto tcp|udp] [--wait S]
                         one SYN (or a datagram) to DST:PORT from a spoofed source; prints what
                         came back within S seconds (default 3): synack / rst / icmp / udp / none
"""
import argparse
import errno
import os
import random
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

GW4 = "10.0.2.2"
DNS4 = "10.0.2.3"
GUEST4 = "10.0.2.100"
SPOOF4 = "10.0.2.200"


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ip4(a):
    return socket.inet_aton(a)


def ip6(a):
    return socket.inet_pton(socket.AF_INET6, a)


class TapDown(Exception):
    pass


class Tap:
    def __init__(self, dev):
        self.dev = dev
        self.s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.s.bind((dev, 0))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.s.setblocking(False)
        # /sys may belong to another namespace (nsenter -n); the socket knows the address.
        self.mac = self.s.getsockname()[4][:6]
        self.gw_mac = bytes([0x52, 0x55]) + ip4(GW4)
        self.sent = 0
        self.errors = 0
        self.arp_for = set()  # spoofed IPv4 addresses this tool answers ARP for
        self.nd_for = set()  # spoofed IPv6 addresses this tool answers neighbour solicitations for

    def gone(self, e):
        """The interface went away (the helper under test died and took the tap with it)."""
        if e.errno in (errno.ENETDOWN, errno.ENXIO, errno.ENODEV):
            raise TapDown(self.sent)

    def send(self, frame):
        for _ in range(200):
            try:
                self.s.send(frame)
                self.sent += 1
                return
            except BlockingIOError:
                self.pump(0.005)
            except OSError as e:
                self.gone(e)
                # EINVAL/EMSGSIZE for deliberately broken frames: counted, not fatal.
                self.errors += 1
                return
        self.errors += 1

    def recv_all(self):
        """Incoming frames (what tapir wrote to the guest) queued so far."""
        out = []
        while True:
            try:
                data, addr = self.s.recvfrom(70000)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as e:
                self.gone(e)
                raise
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            out.append(data)
            self.answer_arp(data)
            self.answer_nd(data)

    def pump(self, secs):
        """Wait up to secs for frames; answer ARP for spoofed addresses; return the frames."""
        r, _, _ = select.select([self.s], [], [], secs)
        return self.recv_all() if r else []

    def answer_nd(self, f):
        if len(f) < 78 or f[12:14] != b"\x86\xdd" or f[20] != 58 or f[54] != 135:
            return
        target = socket.inet_ntop(socket.AF_INET6, f[62:78])
        if target not in self.nd_for:
            return
        src = socket.inet_ntop(socket.AF_INET6, f[22:38])
        na = struct.pack("!I", 0x60000000) + f[62:78] + b"\x02\x01" + self.mac
        pkt = ipv6(target, src, 58, icmp6(target, src, 136, 0, na))
        self.send(f[6:12] + self.mac + struct.pack("!H", ETH_P_IPV6) + pkt)

    def answer_arp(self, f):
        if len(f) < 42 or f[12:14] != b"\x08\x06" or f[20:22] != b"\x00\x01":
            return
        target = socket.inet_ntoa(f[38:42])
        if target not in self.arp_for:
            return
        sha, spa = f[22:28], f[28:32]
        arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 2) + self.mac + f[38:42] + sha + spa
        self.send(sha + self.mac + struct.pack("!H", ETH_P_ARP) + arp)

    def eth(self, payload, ethertype=ETH_P_IP, dst=None, src=None):
        return (dst or self.gw_mac) + (src or self.mac) + struct.pack("!H", ethertype) + payload


def ipv4(src, dst, proto, payload, ident=None, frag=0, ttl=64, tot=None, ihl=5, opts=b""):
    ident = random.randrange(65536) if ident is None else ident
    hlen = ihl * 4
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        tot if tot is not None else hlen + len(payload),
        ident,
        frag,
        ttl,
        proto,
        0,
        ip4(src),
        ip4(dst),
    ) + opts
    hdr = hdr[:hlen].ljust(hlen, b"\0")
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def tcp4(src, dst, sport, dport, flags, seq=0, ack=0, opts=b"", payload=b"", win=65535, doff=None):
    doff = doff if doff is not None else (20 + len(opts) + 3) // 4
    opts = opts.ljust(((len(opts) + 3) // 4) * 4, b"\0")
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, win, 0, 0) + opts
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 6, len(hdr) + len(payload))
    c = csum(pseudo + hdr + payload)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:] + payload


def udp4(src, dst, sport, dport, payload, length=None):
    ln = length if length is not None else 8 + len(payload)
    hdr = struct.pack("!HHHH", sport, dport, ln, 0)
    pseudo = ip4(src) + ip4(dst) + struct.pack("!BBH", 0, 17, 8 + len(payload))
    c = csum(pseudo + hdr + payload) or 0xFFFF
    return hdr[:6] + struct.pack("!H", c) + payload


def ipv6(src, dst, nh, payload, plen=None):
    return struct.pack(
        "!IHBB16s16s",
        0x60000000,
        len(payload) if plen is None else plen,
        nh,
        255,
        ip6(src),
        ip6(dst),
    ) + payload


def l4v6(src, dst, nh, hdr_and_payload, csum_off):
    pseudo = ip6(src) + ip6(dst) + struct.pack("!IxxxB", len(hdr_and_payload), nh)
    b = bytearray(hdr_and_payload)
    b[csum_off:csum_off + 2] = b"\0\0"
    c = csum(pseudo + bytes(b))
    b[csum_off:csum_off + 2] = struct.pack("!H", c)
    return bytes(b)


def tcp6(src, dst, sport, dport, flags, seq=0):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    return l4v6(src, dst, 6, hdr, 16)


def udp6(src, dst, sport, dport, payload):
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return l4v6(src, dst, 17, hdr, 6)


def icmp6(src, dst, typ, code, body):
    return l4v6(src, dst, 58, struct.pack("!BBH", typ, code, 0) + body, 2)


def arp(op, sha, spa, tha, tpa):
    return struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, op) + sha + ip4(spa) + tha + ip4(tpa)


def dhcp(op, mtype, chaddr, xid, yiaddr="0.0.0.0", extra=b""):
    body = struct.pack("!BBBBIHH4s4s4s4s", op, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4, ip4(yiaddr),
                       b"\0" * 4, b"\0" * 4)
    body += chaddr.ljust(16, b"\0") + b"\0" * 192 + b"\x63\x82\x53\x63"
    body += bytes([53, 1, mtype]) + extra + b"\xff"
    return body


# ---------------------------------------------------------------------------------------------


def deadline_passed(args, t0):
    return time.monotonic() - t0 > args.max_secs


def templates(t):
    """Valid frames of every protocol, the seeds for mutation."""
    g = GUEST4
    ll = "fe80::dead:beef"
    out = [
        t.eth(arp(1, t.mac, g, b"\0" * 6, GW4), ETH_P_ARP, dst=b"\xff" * 6),
        t.eth(ipv4(g, GW4, 6, tcp4(g, GW4, 40000, 18080, 0x02, seq=1, opts=b"\x02\x04\x05\xb4"))),
        t.eth(ipv4(g, "198.51.100.1", 6, tcp4(g, "198.51.100.1", 40001, 18080, 0x18, 5, 6,
                                                payload=b"GET / HTTP/1.0\r\n\r\n"))),
        t.eth(ipv4(g, DNS4, 17, udp4(g, DNS4, 40002, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6
                                     + b"\x05tapir\x04test\x00\x00\x01\x00\x01"))),
        t.eth(ipv4(g, GW4, 1, b"\x08\x00\x00\x00\x12\x34\x00\x01" + b"x" * 32)),
        t.eth(ipv4(g, "198.51.100.1", 1, b"\x08\x00\x00\x00\x12\x35\x00\x01" + b"y" * 32)),
        t.eth(ipv4("0.0.0.0", "255.255.255.255", 17,
                   udp4("0.0.0.0", "255.255.255.255", 68, 67,
                        dhcp(1, 1, t.mac, 0x1234)))),
        t.eth(ipv6(ll, "ff02::2", 58, icmp6(ll, "ff02::2", 133, 0, b"\0" * 4)), ETH_P_IPV6),
        t.eth(ipv6(ll, "ff02::1:ff00:2", 58,
                   icmp6(ll, "ff02::1:ff00:2", 135, 0, b"\0" * 4 + ip6("fe80::2"))), ETH_P_IPV6),
        t.eth(ipv6("fd00::100", "fd00::2", 6, tcp6("fd00::100", "fd00::2", 40003, 18080, 0x02)),
              ETH_P_IPV6),
        t.eth(ipv6("fd00::100", "fd00::3", 17,
                   udp6("fd00::100", "fd00::3", 40004, 53, b"\x12\x34\x01\x00\x00\x01" + b"\0" * 6
                        + b"\x05tapir\x04test\x00\x00\x1c\x00\x01")), ETH_P_IPV6),
        t.eth(ipv6("fd00::100", "fd00::2", 58,
                   icmp6("fd00::100", "fd00::2", 128, 0, b"\x12\x34\x00\x01abcd")), ETH_P_IPV6),
    ]
    return out


def cmd_malformed(t, args):
    rnd = random.Random(args.seed)
    tpls = templates(t)
    t0 = time.monotonic()
    n = 0
    special = []
    g = GUEST4
    # Hand-made classics, each once per round.
    special.append(t.eth(b""))  # header only
    special.append(t.eth(b"", ETH_P_IPV6))
    special.append(t.eth(ipv4(g, GW4, 6, b"", ihl=15)))  # IHL beyond the packet
    special.append(t.eth(ipv4(g, GW4, 6, b"", ihl=2)))  # IHL below minimum
    special.append(t.eth(ipv4(g, GW4, 17, udp4(g, GW4, 1, 2, b"abc"), tot=60000)))  # length lie
    special.append(t.eth(ipv4(g, GW4, 17, udp4(g, GW4, 1, 2, b"abc"), tot=10)))
    special.append(t.eth(ipv4(g, GW4, 17, udp4(g, GW4, 1, 2, b"abc", length=4000))))
    special.append(t.eth(ipv4(g, GW4, 17, udp4(g, GW4, 1, 2, b"abc", length=3))))
    special.append(t.eth(ipv4(g, GW4, 6, tcp4(g, GW4, 1, 18080, 0x02, doff=15))))
    special.append(t.eth(ipv4(g, GW4, 6, tcp4(g, GW4, 1, 18080, 0x02, doff=1))))
    special.append(t.eth(ipv4(g, GW4, 6, tcp4(g, GW4, 1, 18080, 0x02)[:12])))  # cut TCP header
    special.append(t.eth(ipv4(g, GW4, 1, b"\x03\x03")))  # cut ICMP
    special.append(t.eth(ipv4(g, GW4, 1, b"\x03\x03\0\0\0\0\0\0" + b"\x45" + b"\0" * 7)))
    special.append(t.eth(ipv4(g, GW4, 99, b"unknown protocol")))
    special.append(t.eth(ipv4(g, GW4, 6, b"", opts=b"\x44\x02" + b"\0" * 2, ihl=6)))  # bad opt
    special.append(t.eth(ipv6("fd00::100", "fd00::2", 0, b"\x3a\x08" + b"\0" * 6, plen=2)))
    special.append(t.eth(ipv6("fd00::100", "fd00::2", 44, b"\x06\0\0\x01\0\0\0\x01", plen=8),
                         ETH_P_IPV6))  # lone fragment header
    special.append(t.eth(ipv6("fd00::100", "fd00::2", 6, b"", plen=65000), ETH_P_IPV6))
    special.append(t.eth(ipv6("fe80::1", "ff02::1", 58, icmp6("fe80::1", "ff02::1", 134, 0,
                                                               b"\x40\0\x07\x08" + b"\0" * 8
                                                               + b"\x03\x00"), ), ETH_P_IPV6))
    special.append(t.eth(arp(1, t.mac, g, b"\0" * 6, GW4)[:10], ETH_P_ARP, dst=b"\xff" * 6))
    special.append(t.eth(struct.pack("!HHBBH", 1, ETH_P_IP, 16, 16, 1) + b"\0" * 8, ETH_P_ARP))
    special.append(t.eth(b"\x08\x00" + b"vlan", 0x8100))
    while n < args.count and not deadline_passed(args, t0):
        for f in special:
            t.send(f)
            n += 1
        for _ in range(64):
            f = bytearray(rnd.choice(tpls))
            how = rnd.randrange(4)
            if how == 0:  # truncate anywhere
                f = f[: rnd.randrange(len(f))]
            elif how == 1:  # flip a few bytes past the Ethernet header
                for _ in range(rnd.randrange(1, 6)):
                    i = rnd.randrange(14, len(f))
                    f[i] = rnd.randrange(256)
            elif how == 2:  # flip and truncate
                i = rnd.randrange(14, len(f))
                f[i] ^= 0xFF
                f = f[: rnd.randrange(14, len(f) + 1)]
            else:  # random tail after a valid IP/TCP/UDP header
                cut = rnd.randrange(14, len(f))
                f = f[:cut] + bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
            t.send(bytes(f))
            n += 1
        t.pump(0.002)  # about 25,000 frames/s: the guest's tap queue (1000) is not the limit
    print("sent=%d errors=%d secs=%.1f" % (t.sent, t.errors, time.monotonic() - t0))


def cmd_tcpflags(t, args):
    t0 = time.monotonic()
    rnd = random.Random(args.seed)
    t.arp_for.add(SPOOF4)
    for src in (GUEST4, SPOOF4):
        for flags in range(256):
            sport = 20000 + rnd.randrange(40000)
            seg = tcp4(src, args.dst, sport, args.port, flags, seq=rnd.randrange(1 << 32),
                       ack=rnd.randrange(1 << 32), opts=b"\x02\x04\x05\xb4",
                       payload=b"x" * (flags & 7))
            t.send(t.eth(ipv4(src, args.dst, 6, seg)))
            if flags % 16 == 0:
                t.pump(0.001)
        # SYNs with malformed options: zero length, length past the header, truncated MSS,
        # window scale 255, SACK with odd length, unknown kinds, endless NOPs.
        for opts in (b"\x02\x00", b"\x02\x28\x05\xb4", b"\x02\x04\x05", b"\x03\x03\xff",
                     b"\x05\x03\x00", b"\x08\x0a" + b"\0" * 6, b"\xfe\x01", b"\x01" * 40,
                     b"\x04\x01", b"\x22\xff"):
            for _ in range(10):
                sport = 20000 + rnd.randrange(40000)
                seg = tcp4(src, args.dst, sport, args.port, 0x02, seq=rnd.randrange(1 << 32),
                           opts=opts[:40])
                t.send(t.eth(ipv4(src, args.dst, 6, seg)))
    # Keep answering ARP for the spoofed source for a moment.
    end = time.monotonic() + 1
    while time.monotonic() < end:
        t.pump(0.1)
    print("sent=%d errors=%d secs=%.1f" % (t.sent, t.errors, time.monotonic() - t0))


def parse_ports(s):
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def cmd_synflood(t, args):
    t0 = time.monotonic()
    rnd = random.Random(args.seed)
    ports = parse_ports(args.ports)
    src = args.src or GUEST4
    if src != GUEST4:
        t.arp_for.add(src)
    synacks = rsts = 0
    sport0 = 10000
    i = 0
    while i < args.count and not deadline_passed(args, t0):
        dst = args.dst
        if args.spread_dst:
            dst = "%s.%d" % (args.spread_dst, 1 + i % 254)
        sport = sport0 + (i % 50000)
        seg = tcp4(src, dst, sport, ports[i % len(ports)], 0x02, seq=rnd.randrange(1 << 32),
                   opts=b"\x02\x04\x05\xb4")
        t.send(t.eth(ipv4(src, dst, 6, seg)))
        i += 1
        if i % 32 == 0:
            for f in t.recv_all():
                k = tcp_kind(f)
                synacks += k == "synack"
                rsts += k == "rst"
            if args.rate:
                time.sleep(32.0 / args.rate)
    end = time.monotonic() + args.linger
    while time.monotonic() < end:
        for f in t.pump(0.1):
            k = tcp_kind(f)
            synacks += k == "synack"
            rsts += k == "rst"
    print("sent=%d synacks=%d rsts=%d secs=%.1f" % (i, synacks, rsts, time.monotonic() - t0))


def is_icmp_error(f):
    """An ICMP or ICMPv6 error (not echo, not neighbour discovery)."""
    if len(f) >= 35 and f[12:14] == b"\x08\x00" and f[23] == 1:
        return f[14 + (f[14] & 15) * 4] in (3, 4, 5, 11, 12)
    if len(f) >= 55 and f[12:14] == b"\x86\xdd" and f[20] == 58:
        return f[54] in (1, 2, 3, 4)
    return False


def tcp_kind(f):
    if len(f) < 54 or f[12:14] != b"\x08\x00" or f[23] != 6:
        if len(f) >= 34 and f[12:14] == b"\x08\x00" and f[23] == 1:
            return "icmp"
        if len(f) >= 54 and f[12:14] == b"\x86\xdd":
            if f[20] == 6:
                fl = f[54 + 13] if len(f) > 67 else 0
                return "synack" if fl & 0x12 == 0x12 else ("rst" if fl & 4 else "tcp")
            if f[20] == 58:
                return "icmp"
            if f[20] == 17:
                return "udp"
        if len(f) >= 34 and f[12:14] == b"\x08\x00" and f[23] == 17:
            return "udp"
        return None
    ihl = (f[14] & 15) * 4
    fl = f[14 + ihl + 13]
    if fl & 0x12 == 0x12:
        return "synack"
    if fl & 4:
        return "rst"
    return "tcp"


def cmd_synrst(t, args):
    """Spoofed source: take the SYN-ACK, answer with RST."""
    t0 = time.monotonic()
    rnd = random.Random(args.seed)
    src = SPOOF4
    t.arp_for.add(src)
    pending = {}
    done = 0
    for i in range(args.count):
        sport = 30000 + i
        isn = rnd.randrange(1 << 32)
        pending[sport] = isn
        seg = tcp4(src, args.dst, sport, args.port, 0x02, seq=isn, opts=b"\x02\x04\x05\xb4")
        t.send(t.eth(ipv4(src, args.dst, 6, seg)))
    end = time.monotonic() + min(10, args.max_secs)
    while pending and time.monotonic() < end:
        for f in t.pump(0.1):
            if tcp_kind(f) != "synack" or socket.inet_ntoa(f[30:34]) != src:
                continue
            ihl = (f[14] & 15) * 4
            sport_remote, dport = struct.unpack("!HH", f[14 + ihl:14 + ihl + 4])
            if dport not in pending:
                continue
            isn = pending.pop(dport)
            rst = tcp4(src, args.dst, dport, sport_remote, 0x04, seq=(isn + 1) & 0xFFFFFFFF)
            t.send(t.eth(ipv4(src, args.dst, 6, rst)))
            done += 1
    print("sent=%d reset=%d unanswered=%d secs=%.1f" % (args.count, done, len(pending),
                                                        time.monotonic() - t0))


def cmd_udpflood(t, args):
    t0 = time.monotonic()
    ports = parse_ports(args.ports)
    i = 0
    while i < args.count and not deadline_passed(args, t0):
        sport = 5000 if args.one_src else 10000 + (i % 50000)
        seg = udp4(GUEST4, args.dst, sport, ports[i % len(ports)], b"hostile %d" % i)
        t.send(t.eth(ipv4(GUEST4, args.dst, 17, seg)))
        i += 1
        if i % 64 == 0:
            t.recv_all()
            if args.rate:
                time.sleep(64.0 / args.rate)
    print("sent=%d secs=%.1f" % (i, time.monotonic() - t0))


def cmd_frags(t, args):
    t0 = time.monotonic()
    rnd = random.Random(args.seed)
    g, d = GUEST4, args.dst
    n = 0
    MF = 0x2000
    while n < args.count and not deadline_passed(args, t0):
        ident = rnd.randrange(65536)
        payload = udp4(g, d, 40000 + n % 1000, args.port, b"F" * 3000)
        kind = n % 5 if args.kind is None else args.kind
        if kind == 0:  # overlapping: a range sent twice with different bytes, then the rest
            t.send(t.eth(ipv4(g, d, 17, payload[:1480], ident, MF)))
            t.send(t.eth(ipv4(g, d, 17, b"Z" * 1480, ident, MF | 100)))  # overlaps 800..2280
            t.send(t.eth(ipv4(g, d, 17, payload[1480:2960], ident, MF | 185)))
            t.send(t.eth(ipv4(g, d, 17, payload[2960:], ident, 370)))
        elif kind == 1:  # never completed: first fragment only
            t.send(t.eth(ipv4(g, d, 17, payload[:1480], ident, MF)))
        elif kind == 2:  # endless train: offsets growing past 64 KiB, never a last fragment
            for k in range(60):
                t.send(t.eth(ipv4(g, d, 17, b"E" * 1480, ident, MF | ((k * 185) & 0x1FFF))))
        elif kind == 3:  # tiny 8-byte fragments, out of order, a hole left
            for k in range(40, 0, -2):
                t.send(t.eth(ipv4(g, d, 17, b"t" * 8, ident, MF | k)))
        else:  # last fragment whose end exceeds 65535
            t.send(t.eth(ipv4(g, d, 17, b"L" * 1000, ident, 0x1FFF)))
            t.send(t.eth(ipv4(g, d, 17, b"L" * 1480, ident, MF)))
        n += 1
        if n % 16 == 0:
            t.recv_all()
    print("trains=%d sent=%d secs=%.1f" % (n, t.sent, time.monotonic() - t0))


def cmd_spoof(t, args):
    t0 = time.monotonic()
    rnd = random.Random(args.seed)
    bc = b"\xff" * 6
    n = 0
    while n < args.count and not deadline_passed(args, t0):
        fake = bytes([0x02, 0x66]) + bytes(rnd.randrange(256) for _ in range(4))
        # ARP: replies and gratuitous announcements claiming the gateway and DNS addresses,
        # requests for them from other MACs, a reply to tapir about an unrelated address.
        for who in (GW4, DNS4):
            t.send(t.eth(arp(2, fake, who, t.gw_mac, who), ETH_P_ARP, dst=t.gw_mac, src=fake))
            t.send(t.eth(arp(1, fake, who, b"\0" * 6, who), ETH_P_ARP, dst=bc, src=fake))
            t.send(t.eth(arp(1, fake, "10.0.2.%d" % rnd.randrange(1, 255), b"\0" * 6, who),
                         ETH_P_ARP, dst=bc, src=fake))
        t.send(t.eth(arp(2, fake, "10.0.2.2", t.gw_mac, GUEST4), ETH_P_ARP, src=fake))
        # NDP: neighbour advertisements (override) for tapir's addresses; solicitations
        # from random link-local sources; a router advertisement from the guest.
        ll = "fe80::66:%x" % rnd.randrange(65536)
        for who in ("fe80::2", "fd00::2", "fd00::3"):
            na = struct.pack("!I", 0xA0000000) + ip6(who) + b"\x02\x01" + fake
            t.send(t.eth(ipv6(ll, "ff02::1", 58, icmp6(ll, "ff02::1", 136, 0, na)),
                         ETH_P_IPV6, dst=b"\x33\x33\0\0\0\x01", src=fake))
            ns = b"\0" * 4 + ip6(who) + b"\x01\x01" + fake
            t.send(t.eth(ipv6(ll, "ff02::1:ff00:2", 58, icmp6(ll, "ff02::1:ff00:2", 135, 0, ns)),
                         ETH_P_IPV6, dst=b"\x33\x33\xff\0\0\x02", src=fake))
        ra = (b"\x40\x00\x07\x08" + b"\0" * 8
              + b"\x03\x04\x40\xc0" + b"\xff" * 8 + b"\0" * 4 + ip6("2001:db8::")
              + b"\x01\x01" + fake)
        t.send(t.eth(ipv6(ll, "ff02::1", 58, icmp6(ll, "ff02::1", 134, 0, ra)),
                     ETH_P_IPV6, dst=b"\x33\x33\0\0\0\x01", src=fake))
        # DHCP: server replies (OFFER, ACK, NAK) sent by the guest, and a DISCOVER and a
        # REQUEST from a random client MAC (an attempt to exhaust the pool).
        for mtype, op in ((2, 2), (5, 2), (6, 2), (1, 1), (3, 1)):
            extra = b""
            if mtype == 3:
                extra = b"\x32\x04" + ip4("10.0.2.%d" % rnd.randrange(15, 31)) + \
                    b"\x36\x04" + ip4(GW4)
            src_ip, sp, dp = ("10.0.2.100", 67, 68) if op == 2 else ("0.0.0.0", 68, 67)
            body = dhcp(op, mtype, fake, rnd.randrange(1 << 32), "10.0.2.%d" % rnd.randrange(15, 31),
                        extra)
            t.send(t.eth(ipv4(src_ip, "255.255.255.255", 17,
                              udp4(src_ip, "255.255.255.255", sp, dp, body)), dst=bc, src=fake))
        n += 1
        if n % 8 == 0:
            t.recv_all()
    print("rounds=%d sent=%d secs=%.1f" % (n, t.sent, time.monotonic() - t0))


def cmd_probe(t, args):
    """One SYN or datagram from a spoofed source (answered in ARP/NDP by this tool, never by the
    guest kernel); prints what came back for it."""
    v6 = ":" in args.dst
    sport = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
    proto = 6 if args.proto == "tcp" else 17
    if v6:
        src = "fd00::200"
        t.nd_for.add(src)
        if proto == 6:
            pkt = ipv6(src, args.dst, 6, tcp6(src, args.dst, sport, args.port, 0x02, seq=1))
        else:
            pkt = ipv6(src, args.dst, 17, udp6(src, args.dst, sport, args.port, b"probe\n"))
        frame = t.eth(pkt, ETH_P_IPV6, dst=bytes([0x52, 0x56, 0, 0, 0, 2]))
    else:
        src = SPOOF4
        t.arp_for.add(src)
        if proto == 6:
            pkt = ipv4(src, args.dst, 6, tcp4(src, args.dst, sport, args.port, 0x02, seq=1,
                                             opts=b"\x02\x04\x05\xb4"))
        else:
            pkt = ipv4(src, args.dst, 17, udp4(src, args.dst, sport, args.port, b"probe\n"))
        frame = t.eth(pkt)
    t.recv_all()
    t.send(frame)
    end = time.monotonic() + args.wait
    seen = "none"
    while time.monotonic() < end:
        for f in t.pump(0.05):
            if is_icmp_error(f):
                # Only errors quoting our probe (its source port in the quoted header).
                if struct.pack("!H", sport) in f[42:]:
                    print("icmp")  # a refusal is final
                    return
                continue
            if v6:
                if len(f) < 58 or f[12:14] != b"\x86\xdd" or f[20] != proto:
                    continue
                off = 54
            else:
                if len(f) < 38 or f[12:14] != b"\x08\x00" or f[23] != proto:
                    continue
                off = 14 + (f[14] & 15) * 4
            if len(f) < off + 4 or struct.unpack("!H", f[off + 2:off + 4])[0] != sport:
                continue
            if proto == 17:
                print("udp")
                return
            fl = f[off + 13]
            print("synack" if fl & 0x12 == 0x12 else ("rst" if fl & 4 else "tcp"))
            return
    print(seen)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dev", default="tap0")
    p.add_argument("--max-secs", type=float, default=30)
    p.add_argument("--seed", type=int, default=13)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("malformed")
    s.add_argument("count", type=int)
    s = sub.add_parser("tcpflags")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s = sub.add_parser("synflood")
    s.add_argument("dst")
    s.add_argument("ports")
    s.add_argument("count", type=int)
    s.add_argument("--src")
    s.add_argument("--spread-dst")
    s.add_argument("--rate", type=float, default=0, help="SYNs per second (0: as fast as possible)")
    s.add_argument("--linger", type=float, default=1.0)
    s = sub.add_parser("synrst")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    s = sub.add_parser("udpflood")
    s.add_argument("dst")
    s.add_argument("ports")
    s.add_argument("count", type=int)
    s.add_argument("--one-src", action="store_true")
    s.add_argument("--rate", type=float, default=0)
    s = sub.add_parser("frags")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("count", type=int)
    s.add_argument("--kind", type=int, help="only one kind of train (0-4, see cmd_frags)")
    s = sub.add_parser("spoof")
    s.add_argument("count", type=int)
    s = sub.add_parser("probe")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("--proto", default="tcp")
    s.add_argument("--wait", type=float, default=3.0,
                   help="seconds to wait for an answer (the first answer may wait for neighbour discovery)")
    args = p.parse_args()
    random.seed(args.seed)
    t = Tap(args.dev)
    try:
        {
            "malformed": cmd_malformed,
            "tcpflags": cmd_tcpflags,
            "synflood": cmd_synflood,
            "synrst": cmd_synrst,
            "udpflood": cmd_udpflood,
            "frags": cmd_frags,
            "spoof": cmd_spoof,
            "probe": cmd_probe,
        }[args.cmd](t, args)
    except TapDown as e:
        print("TAP DOWN (the helper died) after sent=%s" % e.args[0])
        return 3


if __name__ == "__main__":
    sys.exit(main())
