//! Read-only classification of guest frames, before smoltcp sees them.
//!
//! # Theory of operation
//!
//! The proxies must act on some frames before smoltcp sees them: a TCP SYN to a new destination
//! needs a (paused) listening smoltcp socket to exist first, or smoltcp would answer it with RST;
//! every other TCP segment goes to its own flow's socket set, found by its endpoints;
//! UDP datagrams and ICMP echo requests are proxied at frame level without smoltcp at all (one
//! host socket per guest endpoint, replies built by [`super::emit`]). [`classify`] parses the
//! frame through smoltcp's checked wire types and says which case it is; it never modifies the
//! frame and never panics. Fragmented IPv4 packets, and IPv6 packets whose first extension
//! header is a Fragment header, are reported as [`Guest::Fragment`] for [`super::reassembly`].

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet,
    Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
};

/// What a guest frame is, for the proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guest<'a> {
    /// A TCP segment with SYN and without ACK: possibly a new flow.
    TcpSyn {
        /// Guest endpoint.
        src: SocketAddr,
        /// Destination as the guest addressed it.
        dst: SocketAddr,
        /// The IP packet (for quoting in ICMP errors).
        packet: &'a [u8],
    },
    /// Any other TCP segment: its flow's smoltcp socket gets it.
    Tcp {
        /// Guest endpoint.
        src: SocketAddr,
        /// Destination as the guest addressed it.
        dst: SocketAddr,
        /// Bytes of data the segment carries (0 for a pure ACK).
        payload_len: usize,
    },
    /// A UDP datagram.
    Udp {
        /// Guest endpoint.
        src: SocketAddr,
        /// Destination.
        dst: SocketAddr,
        /// Datagram payload.
        payload: &'a [u8],
        /// The IP packet (for quoting in ICMP errors).
        packet: &'a [u8],
    },
    /// An ICMP or ICMPv6 echo request.
    EchoRequest {
        /// Guest address.
        src: IpAddr,
        /// Destination.
        dst: IpAddr,
        /// Echo identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Echo payload.
        data: &'a [u8],
        /// The whole IP packet (quoted in ICMP errors).
        packet: &'a [u8],
    },
    /// A fragment of a larger IPv4 or IPv6 datagram.
    Fragment,
    /// Anything else: for smoltcp (or already handled by the virtual hosts).
    Other,
}

/// Source MAC of a frame, if it is long enough to have one.
pub fn source_mac(frame: &[u8]) -> Option<EthernetAddress> {
    EthernetFrame::new_checked(frame).ok().map(|f| f.src_addr())
}

impl Guest<'_> {
    /// The guest's source address, for the kinds that carry one.
    pub fn source(&self) -> Option<IpAddr> {
        match self {
            Guest::TcpSyn { src, .. } | Guest::Tcp { src, .. } | Guest::Udp { src, .. } => {
                Some(src.ip())
            }
            Guest::EchoRequest { src, .. } => Some(*src),
            Guest::Fragment | Guest::Other => None,
        }
    }
}

/// Classify one Ethernet frame from the guest.
pub fn classify(frame: &[u8]) -> Guest<'_> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Guest::Other;
    };
    let payload = &frame[EthernetFrame::<&[u8]>::header_len()..];
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => classify_v4(payload),
        EthernetProtocol::Ipv6 => classify_v6(payload),
        _ => Guest::Other,
    }
}

fn classify_v4(packet: &[u8]) -> Guest<'_> {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Guest::Other;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Guest::Fragment;
    }
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    let total = usize::from(ip.total_len()).min(packet.len());
    let hl = usize::from(ip.header_len());
    let Some(body) = packet.get(hl..total) else {
        return Guest::Other;
    };
    let packet = &packet[..total];
    match ip.next_header() {
        IpProtocol::Tcp => tcp(src, dst, body, packet),
        IpProtocol::Udp => udp(src, dst, body, packet),
        IpProtocol::Icmp => {
            let Ok(icmp) = Icmpv4Packet::new_checked(body) else {
                return Guest::Other;
            };
            match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::ignored()) {
                Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => Guest::EchoRequest {
                    src,
                    dst,
                    ident,
                    seq: seq_no,
                    data,
                    packet,
                },
                _ => Guest::Other,
            }
        }
        _ => Guest::Other,
    }
}

fn classify_v6(packet: &[u8]) -> Guest<'_> {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Guest::Other;
    };
    let src = IpAddr::V6(ip.src_addr());
    let dst = IpAddr::V6(ip.dst_addr());
    let total = (40 + usize::from(ip.payload_len())).min(packet.len());
    let Some(body) = packet.get(40..total) else {
        return Guest::Other;
    };
    let packet = &packet[..total];
    // Other extension headers are not walked: such packets go to smoltcp.
    match ip.next_header() {
        IpProtocol::Ipv6Frag => Guest::Fragment,
        IpProtocol::Tcp => tcp(src, dst, body, packet),
        IpProtocol::Udp => udp(src, dst, body, packet),
        IpProtocol::Icmpv6 => {
            let Ok(icmp) = Icmpv6Packet::new_checked(body) else {
                return Guest::Other;
            };
            match Icmpv6Repr::parse(
                &ip.src_addr(),
                &ip.dst_addr(),
                &icmp,
                &ChecksumCapabilities::ignored(),
            ) {
                Ok(Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => Guest::EchoRequest {
                    src,
                    dst,
                    ident,
                    seq: seq_no,
                    data,
                    packet,
                },
                _ => Guest::Other,
            }
        }
        _ => Guest::Other,
    }
}

fn tcp<'a>(src: IpAddr, dst: IpAddr, body: &'a [u8], packet: &'a [u8]) -> Guest<'a> {
    let Ok(t) = TcpPacket::new_checked(body) else {
        return Guest::Other;
    };
    let (src, dst) = (
        SocketAddr::new(src, t.src_port()),
        SocketAddr::new(dst, t.dst_port()),
    );
    if t.syn() && !t.ack() && !t.rst() {
        Guest::TcpSyn { src, dst, packet }
    } else {
        let payload_len = body.len().saturating_sub(usize::from(t.header_len()));
        Guest::Tcp {
            src,
            dst,
            payload_len,
        }
    }
}

fn udp<'a>(src: IpAddr, dst: IpAddr, body: &'a [u8], packet: &'a [u8]) -> Guest<'a> {
    let Ok(u) = UdpPacket::new_checked(body) else {
        return Guest::Other;
    };
    let len = usize::from(u.len()).min(body.len());
    let Some(payload) = body.get(8..len) else {
        return Guest::Other;
    };
    Guest::Udp {
        src: SocketAddr::new(src, u.src_port()),
        dst: SocketAddr::new(dst, u.dst_port()),
        payload,
        packet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::emit::{Emitter, L2};

    fn l2() -> L2 {
        L2 {
            src: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst: EthernetAddress([2, 0, 0, 0, 0, 2]),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_v4_and_v6_roundtrip_through_emitter() {
        let mut e = Emitter::new(1500);
        for (src, dst) in [
            (sa("10.0.2.100:5000"), sa("10.0.2.2:53")),
            (sa("[fd00::5]:5000"), sa("[fd00::2]:53")),
        ] {
            let mut frames = Vec::new();
            e.udp(l2(), src, dst, b"hello", &mut |f| frames.push(f.to_vec()))
                .unwrap();
            assert_eq!(frames.len(), 1);
            match classify(&frames[0]) {
                Guest::Udp {
                    src: s,
                    dst: d,
                    payload,
                    ..
                } => {
                    assert_eq!((s, d, payload), (src, dst, &b"hello"[..]));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(source_mac(&frames[0]), Some(l2().src));
        }
    }

    #[test]
    fn echo_request_and_fragments() {
        let mut e = Emitter::new(1500);
        let mut frames = Vec::new();
        e.echo(
            l2(),
            true,
            "10.0.2.100".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            7,
            9,
            b"ping",
            &mut |f| frames.push(f.to_vec()),
        )
        .unwrap();
        assert!(matches!(
            classify(&frames[0]),
            Guest::EchoRequest {
                ident: 7,
                seq: 9,
                data: b"ping",
                ..
            }
        ));
        // A big datagram is fragmented by the emitter; each fragment classifies as Fragment,
        // IPv4 fragments and IPv6 ones (a Fragment header) alike.
        for (src, dst) in [
            (sa("10.0.2.2:1"), sa("10.0.2.100:2")),
            (sa("[fd00::2]:1"), sa("[fd00::100]:2")),
        ] {
            frames.clear();
            e.udp(l2(), src, dst, &[0u8; 4000], &mut |f| {
                frames.push(f.to_vec())
            })
            .unwrap();
            assert_eq!(frames.len(), 3);
            for f in &frames {
                assert_eq!(classify(f), Guest::Fragment);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 12345;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            let _ = classify(&buf);
            let mut v4 = buf.clone();
            if v4.len() > 14 {
                v4[12] = 0x08;
                v4[13] = 0x00;
                let _ = classify(&v4);
                v4[12] = 0x86;
                v4[13] = 0xdd;
                let _ = classify(&v4);
            }
        }
    }
}
