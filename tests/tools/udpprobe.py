"""Send one UDP datagram and print the first error queued for it (IP_RECVERR).

  udpprobe.py DST PORT SIZE [HOPS]

The socket forbids fragmentation (IP(V6)_PMTUDISC_DO) and, with HOPS, sends with that TTL /
hop limit. Prints one line:
  local ERRNO                      the send itself failed (e.g. EMSGSIZE: the route's MTU is known)
  errno=E origin=O type=T code=C info=I from=ADDR
                                   an ICMP(v6) error arrived (origin 2 ICMP, 3 ICMPv6; info is
                                   the MTU for "too big"; ADDR the offender, or - if none)
  none                             nothing arrived within 3 tries of 1 s
"""
import errno
import select
import socket
import struct
import sys

MSG_ERRQUEUE = 0x2000
IP_RECVERR, IPV6_RECVERR = 11, 25
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_DO = 10, 23, 2


def offender(raw):
    if len(raw) < 2:
        return "-"
    family = struct.unpack("=H", raw[:2])[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return "-"


def main():
    dst, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    hops = int(sys.argv[4]) if len(sys.argv) > 4 else None
    v6 = ":" in dst
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)
        if hops is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)
        if hops is not None:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hops)
    for _ in range(3):
        try:
            s.sendto(b"p" * size, (dst, port))
        except OSError as e:
            print("local", errno.errorcode.get(e.errno, e.errno))
            return
        p = select.poll()
        p.register(s, select.POLLERR)
        if not p.poll(1000):
            continue
        _, anc, _, _ = s.recvmsg(65535, 512, MSG_ERRQUEUE)
        for level, ty, data in anc:
            if (level, ty) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
                e, origin, t, c, _pad, info, _data = struct.unpack("=IBBBBII", data[:16])
                print(f"errno={errno.errorcode.get(e, e)} origin={origin} type={t} code={c} "
                      f"info={info} from={offender(data[16:])}")
                return
    print("none")


main()
