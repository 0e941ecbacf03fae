//! Seed inputs: one valid example of every exchange the harnesses can reach, built here rather
//! than captured, so they say what they are.

use super::{fix_up, HOST_PORT};

const GUEST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const STACK_MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
const BROADCAST: [u8; 6] = [0xff; 6];
const GUEST: [u8; 4] = [10, 0, 2, 100];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
const DNS: [u8; 4] = [10, 0, 2, 3];
/// A documentation address (RFC 5737): unreachable in the harness's namespace.
const FOREIGN: [u8; 4] = [192, 0, 2, 1];

fn v6(segs: [u16; 8]) -> [u8; 16] {
    std::net::Ipv6Addr::new(
        segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7],
    )
    .octets()
}

const GUEST6: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 0x64];
const GUEST6_LL: [u16; 8] = [0xfe80, 0, 0, 0, 0, 0, 0, 0x64];
const GATEWAY6: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 2];
const DNS6: [u16; 8] = [0xfd00, 0, 0, 0, 0, 0, 0, 3];
const ALL_ROUTERS: [u16; 8] = [0xff02, 0, 0, 0, 0, 0, 0, 2];
const DHCP6_SERVERS: [u16; 8] = [0xff02, 0, 0, 0, 0, 0, 1, 2];
const SOLICITED_GW: [u16; 8] = [0xff02, 0, 0, 0, 0, 1, 0xff00, 2];

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn len16(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// An IPv4 packet; `frag` is (identification, offset in 8-byte units, more fragments).
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: (u16, u16, bool), payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&len16(20 + payload.len()));
    p.extend_from_slice(&frag.0.to_be_bytes());
    let ff = frag.1 | if frag.2 { 0x2000 } else { 0 };
    p.extend_from_slice(&ff.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len16(payload.len()));
    p.extend_from_slice(&[next, 255]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&len16(8 + payload.len()));
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let opts: &[u8] = if flags & SYN != 0 {
        // MSS 1460, window scale 7, SACK permitted.
        &[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1]
    } else {
        &[]
    };
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    let words = u8::try_from((20 + opts.len()) / 4).unwrap_or(5);
    p.extend_from_slice(&[words << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(opts);
    p.extend_from_slice(payload);
    p
}

fn echo(ty: u8, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(data);
    p
}

/// A frame with its checksums filled in.
fn done(mut f: Vec<u8>) -> Vec<u8> {
    fix_up(&mut f, None, None, true);
    f
}

fn v4(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    done(eth(
        dst_mac,
        0x0800,
        &ipv4(src, dst, proto, (1, 0, false), l4),
    ))
}

fn v6f(dst_mac: [u8; 6], src: [u16; 8], dst: [u16; 8], next: u8, l4: &[u8]) -> Vec<u8> {
    done(eth(dst_mac, 0x86dd, &ipv6(v6(src), v6(dst), next, l4)))
}

fn multicast_mac(ip: [u16; 8]) -> [u8; 6] {
    let o = v6(ip);
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn arp_request() -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&GUEST_MAC);
    a.extend_from_slice(&GUEST);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&GATEWAY);
    eth(BROADCAST, 0x0806, &a)
}

fn dhcp(msg_type: u8, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0];
    b.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    b.extend_from_slice(&GUEST_MAC);
    b.extend_from_slice(&[0; 10 + 64 + 128]);
    b.extend_from_slice(&[0x63, 0x82, 0x53, 0x63, 53, 1, msg_type]);
    b.extend_from_slice(extra);
    b.extend_from_slice(&[55, 3, 1, 3, 6, 255]);
    v4(BROADCAST, [0; 4], [255; 4], 17, &udp(68, 67, &b))
}

fn dns_query() -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

fn dhcpv6_information_request() -> Vec<u8> {
    let mut m = vec![11, 0xab, 0xcd, 0xef];
    m.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1]);
    m.extend_from_slice(&GUEST_MAC);
    m.extend_from_slice(&[0, 6, 0, 2, 0, 23]);
    v6f(
        multicast_mac(DHCP6_SERVERS),
        GUEST6_LL,
        DHCP6_SERVERS,
        17,
        &udp(546, 547, &m),
    )
}

fn router_solicitation() -> Vec<u8> {
    let mut m = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    m.extend_from_slice(&GUEST_MAC);
    v6f(multicast_mac(ALL_ROUTERS), GUEST6_LL, ALL_ROUTERS, 58, &m)
}

fn neighbor_solicitation() -> Vec<u8> {
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&v6(GATEWAY6));
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&GUEST_MAC);
    v6f(multicast_mac(SOLICITED_GW), GUEST6_LL, SOLICITED_GW, 58, &m)
}

/// The guest's own address announced (as its kernel answers the stack's solicitation).
fn neighbor_advertisement() -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
    m.extend_from_slice(&v6(GUEST6));
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&GUEST_MAC);
    v6f(STACK_MAC, GUEST6, GATEWAY6, 58, &m)
}

/// Two IPv4 fragments of one UDP datagram to the host echo port.
fn fragments() -> [Vec<u8>; 2] {
    let whole = udp(40000, HOST_PORT, &[0x61; 40]);
    let (a, b) = whole.split_at(24);
    let mut first = eth(
        STACK_MAC,
        0x0800,
        &ipv4(GUEST, GATEWAY, 17, (7, 0, true), a),
    );
    let mut second = eth(
        STACK_MAC,
        0x0800,
        &ipv4(GUEST, GATEWAY, 17, (7, 3, false), b),
    );
    // Only the IPv4 header checksums: the UDP checksum spans both fragments.
    for f in [&mut first, &mut second] {
        if let Ok(mut eth) = smoltcp::wire::EthernetFrame::new_checked(&mut f[..]) {
            if let Ok(mut ip) = smoltcp::wire::Ipv4Packet::new_checked(eth.payload_mut()) {
                ip.fill_checksum();
            }
        }
    }
    [first, second]
}

/// Two IPv6 fragments (Fragment header, next header 44) of one UDP datagram to the host echo
/// port. IPv6 has no header checksum, and the UDP checksum spans both fragments.
fn fragments6() -> [Vec<u8>; 2] {
    let whole = udp(40010, HOST_PORT, &[0x62; 40]);
    let (a, b) = whole.split_at(24);
    let piece = |offset_units: u16, more: bool, data: &[u8]| {
        let mut p = vec![17, 0];
        p.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&0x0bad_f00d_u32.to_be_bytes());
        p.extend_from_slice(data);
        eth(STACK_MAC, 0x86dd, &ipv6(v6(GUEST6), v6(GATEWAY6), 44, &p))
    };
    [piece(0, true, a), piece(3, false, b)]
}

/// Single frames, for `guest_frame`.
fn frames() -> Vec<Vec<u8>> {
    let [frag1, frag2] = fragments();
    let [frag6a, frag6b] = fragments6();
    vec![
        arp_request(),
        dhcp(1, &[]),
        dhcp(3, &[50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]),
        v4(STACK_MAC, GUEST, GATEWAY, 1, &echo(8, 1, 1, b"ping")),
        v4(STACK_MAC, GUEST, FOREIGN, 1, &echo(8, 2, 1, b"ping")),
        v4(
            STACK_MAC,
            GUEST,
            GATEWAY,
            17,
            &udp(40000, HOST_PORT, b"hello"),
        ),
        v4(STACK_MAC, GUEST, GATEWAY, 17, &udp(40001, 9, b"nobody")),
        v4(STACK_MAC, GUEST, DNS, 17, &udp(40002, 53, &dns_query())),
        v4(
            STACK_MAC,
            GUEST,
            GATEWAY,
            6,
            &tcp(40000, HOST_PORT, 1000, 0, SYN, &[]),
        ),
        v4(
            STACK_MAC,
            GUEST,
            FOREIGN,
            6,
            &tcp(40001, 80, 1000, 0, SYN, &[]),
        ),
        v4(
            STACK_MAC,
            GUEST,
            GATEWAY,
            6,
            &tcp(40002, HOST_PORT, 1000, 5, ACK, b"x"),
        ),
        frag1,
        frag2,
        router_solicitation(),
        neighbor_solicitation(),
        neighbor_advertisement(),
        dhcpv6_information_request(),
        v6f(STACK_MAC, GUEST6, GATEWAY6, 58, &echo(128, 3, 1, b"ping6")),
        v6f(
            STACK_MAC,
            GUEST6,
            GATEWAY6,
            17,
            &udp(40003, HOST_PORT, b"hi6"),
        ),
        v6f(STACK_MAC, GUEST6, DNS6, 17, &udp(40004, 53, &dns_query())),
        v6f(
            STACK_MAC,
            GUEST6,
            GATEWAY6,
            6,
            &tcp(40005, HOST_PORT, 1000, 0, SYN, &[]),
        ),
        frag6a,
        frag6b,
    ]
}

/// A `guest_frames` input: configuration byte, then (control, frame) records.
fn sequence(config: u8, records: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut s = vec![config];
    for (ctl, f) in records {
        s.push(*ctl);
        s.extend_from_slice(&u16::try_from(f.len()).unwrap_or(u16::MAX).to_le_bytes());
        s.extend_from_slice(f);
    }
    s
}

/// Fix-ups: reply to the stack's last segment, continue the guest's, fill checksums.
const FIX: u8 = 0x07;
const HOST_BURST: u8 = 1 << 3;
const HOST_SHUTDOWN: u8 = 2 << 3;
const HOST_FORWARDS: u8 = 3 << 3;
const CLOCK_1S: u8 = 3 << 5;
const CLOCK_240S: u8 = 6 << 5;

/// A TCP conversation with the host echo server: handshake, data, host burst, close.
fn tcp_conversation(v6: bool) -> Vec<(u8, Vec<u8>)> {
    let seg = |flags: u8, data: &[u8]| {
        let t = tcp(40000, HOST_PORT, 1000, 0, flags, data);
        if v6 {
            v6f(STACK_MAC, GUEST6, GATEWAY6, 6, &t)
        } else {
            v4(STACK_MAC, GUEST, GATEWAY, 6, &t)
        }
    };
    let neighbor = if v6 {
        neighbor_advertisement()
    } else {
        arp_request()
    };
    vec![
        (0, neighbor),
        (0x04, seg(SYN, &[])),
        (FIX, seg(ACK, &[])),
        (FIX, seg(PSH_ACK, b"GET / HTTP/1.0\r\n\r\n")),
        (FIX | HOST_BURST, seg(ACK, &[])),
        (FIX, seg(ACK, &[])),
        (FIX | HOST_SHUTDOWN, seg(ACK, &[])),
        (FIX | CLOCK_1S, seg(FIN_ACK, &[])),
        (FIX, seg(ACK, &[])),
    ]
}

/// Sequences, for `guest_frames`.
fn sequences() -> Vec<Vec<u8>> {
    let [frag1, frag2] = fragments();
    let syn_refused = v4(STACK_MAC, GUEST, GATEWAY, 6, &tcp(40009, 9, 1, 0, SYN, &[]));
    let reset = v4(
        STACK_MAC,
        GUEST,
        GATEWAY,
        6,
        &tcp(40000, HOST_PORT, 0, 0, RST, &[]),
    );
    let mut conversation_reset = tcp_conversation(false);
    conversation_reset.truncate(4);
    conversation_reset.push((FIX, reset));
    // The host connects to the TCP forward; the guest answers smoltcp's SYN with SYN-ACK.
    let syn_ack = v4(
        STACK_MAC,
        GUEST,
        GATEWAY,
        6,
        &tcp(80, 1, 5000, 0, SYN | ACK, &[]),
    );
    vec![
        sequence(0b01001, &tcp_conversation(false)),
        sequence(0b00011, &tcp_conversation(true)),
        sequence(0b01000, &conversation_reset),
        sequence(
            0b01000,
            &[
                (0, arp_request()),
                (0x04, frames()[1].clone()),
                (0x04 | CLOCK_1S, frames()[2].clone()),
                (0, frag1),
                (CLOCK_1S, frag2),
                (0, syn_refused),
                (CLOCK_240S, frames()[5].clone()),
            ],
        ),
        sequence(
            0b00001,
            &[
                (0, arp_request()),
                (HOST_FORWARDS, router_solicitation()),
                (FIX, syn_ack),
                (
                    FIX,
                    v4(
                        STACK_MAC,
                        GUEST,
                        GATEWAY,
                        6,
                        &tcp(80, 1, 0, 0, PSH_ACK, b"hi"),
                    ),
                ),
            ],
        ),
        sequence(
            0b00011,
            &[
                (0, neighbor_solicitation()),
                (0, router_solicitation()),
                (0, dhcpv6_information_request()),
                (0, neighbor_advertisement()),
                (0, frames()[17].clone()),
                (0, frames()[18].clone()),
                (CLOCK_1S, frames()[19].clone()),
            ],
        ),
        // A guest IPv6 datagram in two fragments, the second a second later.
        sequence(0b00011, &{
            let [a, b] = fragments6();
            [(0, neighbor_solicitation()), (0, a), (CLOCK_1S, b)]
        }),
    ]
}

fn api() -> Vec<Vec<u8>> {
    let reqs: [&[u8]; 6] = [
        br#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8082, "guest_port": 80}}"#,
        br#"{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 8083, "guest_addr": "10.0.2.100", "guest_port": 53}}"#,
        br#"{"execute": "list_hostfwd"}"#,
        br#"{"execute": "remove_hostfwd", "arguments": {"id": 1}}"#,
        br#"{"execute": "get_info"}"#,
        b"{\"execute\": \"list_hostfwd\"}\n",
    ];
    let mut out: Vec<Vec<u8>> = reqs.iter().map(|r| r.to_vec()).collect();
    out.push(reqs.join(&0xffu8));
    // Fills the server's whole buffer: "too large message".
    let mut big = br#"{"execute": "list_hostfwd", "pad": ""#.to_vec();
    big.resize(crate::api::proto::MAX_REQUEST + 10, b'a');
    big.extend_from_slice(br#""}"#);
    out.push(big);
    out
}

pub(super) fn all() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    out.extend(frames().into_iter().map(|f| ("guest_frame", f)));
    out.extend(sequences().into_iter().map(|s| ("guest_frames", s)));
    out.extend(api().into_iter().map(|a| ("api_request", a)));
    for p in [
        "8080:80",
        "127.0.0.1:8080:80/udp",
        "[::1]:8080:80/tcp",
        "0.0.0.0:1:65535",
    ] {
        out.push(("publish_spec", p.as_bytes().to_vec()));
    }
    for r in [
        "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver fe80::1%lo\noptions edns0\n",
        "nameserver 192.0.2.1\nnameserver 2001:db8::1\n",
    ] {
        out.push(("resolv_conf", r.as_bytes().to_vec()));
    }
    let argvs: [&[&str]; 4] = [
        &[
            "tapir",
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "12345",
            "tap0",
        ],
        &[
            "tapir",
            "-c",
            "-6",
            "--cidr=10.0.3.0/24",
            "-p",
            "8080:80",
            "--netns-type=path",
            "/proc/1/ns/net",
            "tap0",
        ],
        &[
            "tapir",
            "run",
            "--publish=127.0.0.1:8080:80/udp",
            "--",
            "true",
        ],
        &["tapir", "ctl", "/tmp/api.sock", "add", "8080:80"],
    ];
    for a in argvs {
        out.push(("argv", a.join("\0").into_bytes()));
    }
    out
}
