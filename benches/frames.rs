//! Criterion micro-benchmarks of the per-frame work on the guest -> host path.
//!
//! What it measures:
//!
//! - `classify/*`: [`tapir::stack::classify::classify`] on one Ethernet frame from the guest, for
//!   each kind it tells apart, over IPv4 and IPv6: a TCP data segment (ACK+PSH, 1400 bytes of
//!   payload; result `Other`, left to smoltcp), a TCP SYN (`TcpSyn`), a 64-byte UDP datagram
//!   (`Udp`), a 56-byte ICMP echo request (`EchoRequest`), and a non-IP frame (an ARP request,
//!   `Other`).
//! - `vhost/*`: [`tapir::stack::vhost::VirtualHosts::on_guest_frame`] on the same TCP data
//!   segment (IPv4 and IPv6, virtual hosts with `-6`), the common case: not for the virtual
//!   hosts, so the verdict is `ToStack`.
//!
//! Why it matters: every frame the guest writes to the tap goes through both functions before
//! smoltcp sees it, so their cost is paid per packet on top of smoltcp's own processing; for a
//! bulk TCP transfer nearly all frames are data segments, which is why that case is in both
//! groups.
//!
//! The frames are built once, outside the timed loop, with smoltcp's wire emitters (TCP, ARP)
//! and tapir's own [`tapir::stack::emit::Emitter`] (UDP, ICMP echo), with valid checksums.
//!
//! Run with `cargo bench --bench frames`; see benches/README.md for figures.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, IpRepr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    TcpTimestampRepr, ETHERNET_HEADER_LEN,
};
use tapir::config::Network;
use tapir::stack::classify::{classify, Guest};
use tapir::stack::emit::{Emitter, L2};
use tapir::stack::vhost::{stack_mac, Verdict, VirtualHosts};

/// The guest's MAC (any locally administered unicast address).
const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
/// TCP payload of a data segment: a full segment at MTU 1500 for both families.
const TCP_DATA_LEN: usize = 1400;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Guest -> stack addressing.
fn l2() -> L2 {
    L2 {
        src: GUEST_MAC,
        dst: stack_mac(&Network::default()),
    }
}

/// A TCP segment from `src` to `dst` in an Ethernet frame: a SYN (with the options Linux sends)
/// or an ACK+PSH data segment carrying `payload`.
fn tcp_frame(src: SocketAddr, dst: SocketAddr, syn: bool, payload: &[u8]) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: if syn {
            TcpControl::Syn
        } else {
            TcpControl::Psh
        },
        seq_number: TcpSeqNumber(1_000),
        ack_number: (!syn).then_some(TcpSeqNumber(2_000)),
        window_len: 64_240,
        window_scale: syn.then_some(7),
        max_seg_size: syn.then_some(1460),
        sack_permitted: syn,
        sack_ranges: [None; 3],
        timestamp: Some(TcpTimestampRepr {
            tsval: 1,
            tsecr: u32::from(!syn),
        }),
        payload,
    };
    let (s, d) = (IpAddress::from(src.ip()), IpAddress::from(dst.ip()));
    let ip = IpRepr::new(s, d, IpProtocol::Tcp, tcp.buffer_len(), 64);
    let ethertype = match src.ip() {
        IpAddr::V4(_) => EthernetProtocol::Ipv4,
        IpAddr::V6(_) => EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + ip.buffer_len()];
    EthernetRepr {
        src_addr: l2().src,
        dst_addr: l2().dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    ip.emit(&mut buf[ETHERNET_HEADER_LEN..], &caps);
    let l4 = ETHERNET_HEADER_LEN + ip.header_len();
    tcp.emit(&mut TcpPacket::new_unchecked(&mut buf[l4..]), &s, &d, &caps);
    buf
}

/// One frame built by tapir's emitter.
fn emitted(f: impl FnOnce(&mut Emitter, &mut dyn FnMut(&[u8]))) -> Vec<u8> {
    let mut e = Emitter::new(1500);
    let mut frames = Vec::new();
    f(&mut e, &mut |fr| frames.push(fr.to_vec()));
    assert_eq!(frames.len(), 1, "one unfragmented frame");
    frames.remove(0)
}

/// An ARP request from the guest for the gateway: a frame that is not IP.
fn arp_frame() -> Vec<u8> {
    let net = Network::default();
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: net.guest(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: net.gateway(),
    };
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + arp.buffer_len()];
    EthernetRepr {
        src_addr: GUEST_MAC,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    arp.emit(&mut ArpPacket::new_unchecked(
        &mut buf[ETHERNET_HEADER_LEN..],
    ));
    buf
}

/// Guest and remote endpoints for one address family.
struct Family {
    name: &'static str,
    guest: SocketAddr,
    remote: SocketAddr,
    dns: SocketAddr,
}

fn families() -> [Family; 2] {
    [
        Family {
            name: "v4",
            guest: sa("10.0.2.100:40000"),
            remote: sa("198.51.100.7:443"),
            dns: sa("10.0.2.3:53"),
        },
        Family {
            name: "v6",
            guest: sa("[fd00::5054:ff:fe12:3456]:40000"),
            remote: sa("[2001:db8::7]:443"),
            dns: sa("[fd00::3]:53"),
        },
    ]
}

/// The frames of one family, named, with the variant `classify` must return for each.
fn family_frames(f: &Family) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let data = vec![0x5a; TCP_DATA_LEN];
    let udp = emitted(|e, out| {
        e.udp(l2(), f.guest, f.dns, &[0x42; 64], out)
            .expect("udp frame")
    });
    let echo = emitted(|e, out| {
        e.echo(
            l2(),
            true,
            f.guest.ip(),
            f.remote.ip(),
            0x1234,
            1,
            &[0x61; 56],
            out,
        )
        .expect("echo frame")
    });
    vec![
        (
            "tcp_data",
            tcp_frame(f.guest, f.remote, false, &data),
            "Other",
        ),
        ("tcp_syn", tcp_frame(f.guest, f.remote, true, &[]), "TcpSyn"),
        ("udp", udp, "Udp"),
        ("icmp_echo", echo, "EchoRequest"),
    ]
}

fn variant(g: &Guest<'_>) -> &'static str {
    match g {
        Guest::TcpSyn { .. } => "TcpSyn",
        Guest::Tcp { .. } => "Tcp",
        Guest::Udp { .. } => "Udp",
        Guest::EchoRequest { .. } => "EchoRequest",
        Guest::Fragment => "Fragment",
        Guest::Other => "Other",
    }
}

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    for fam in families() {
        for (what, frame, expect) in family_frames(&fam) {
            assert_eq!(variant(&classify(&frame)), expect, "{what} {}", fam.name);
            g.bench_with_input(BenchmarkId::new(what, fam.name), &frame, |b, frame| {
                b.iter(|| classify(black_box(frame)))
            });
        }
    }
    let arp = arp_frame();
    assert_eq!(classify(&arp), Guest::Other);
    g.bench_with_input(BenchmarkId::new("non_ip", "arp"), &arp, |b, frame| {
        b.iter(|| classify(black_box(frame)))
    });
    g.finish();
}

fn bench_vhost(c: &mut Criterion) {
    let mut g = c.benchmark_group("vhost");
    g.throughput(Throughput::Elements(1));
    let data = vec![0x5a; TCP_DATA_LEN];
    for fam in families() {
        let mut frame = tcp_frame(fam.guest, fam.remote, false, &data);
        let mut vh = VirtualHosts::new(Network::default(), true);
        let mut replies = 0u64;
        assert_eq!(
            vh.on_guest_frame(&mut frame, 0, &mut |_| replies += 1),
            Verdict::ToStack
        );
        g.bench_function(BenchmarkId::new("tcp_data", fam.name), |b| {
            // The destination MAC is already the stack's, so the frame is never rewritten and
            // stays the same from one iteration to the next.
            b.iter(|| vh.on_guest_frame(black_box(&mut frame), 1_000, &mut |_| {}))
        });
        assert_eq!(vh.counters().consumed, 0, "every frame went to the stack");
    }
    g.finish();
}

// Inside a private module because `criterion_group!` generates an undocumented `pub fn`.
mod group {
    use super::*;
    criterion_group!(benches, bench_classify, bench_vhost);
}
criterion_main!(group::benches);
