//! Frames to the guest that are built outside smoltcp.
//!
//! # Theory of operation
//!
//! UDP and ICMP echo are proxied at frame level (see [`super::classify`]), so their replies,
//! and the ICMP errors that report a failed host connect or an ICMP error received on a host
//! socket (unreachable, time exceeded, packet too big: one builder, [`Emitter::icmp_error`],
//! for both families), are built here with smoltcp's wire emitters into one reusable scratch buffer and
//! handed to a callback (the runtime's transmit queue). Checksums are always computed.
//!
//! A UDP datagram larger than the guest's MTU is split into fragments that the guest kernel
//! reassembles: IPv4 fragments, or over IPv6 packets with a Fragment extension header (RFC 8200
//! §4.5; tapir is the datagram's source towards the guest, so fragmenting is allowed), counted
//! by [`Emitter::fragmented_v6`]. Other IPv6 packets that do not fit are refused with
//! [`EmitError::TooBig`].

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded, Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr,
    Icmpv6TimeExceeded, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr,
    UdpPacket, UdpRepr,
};

use crate::device::ETHERNET_HEADER_LEN;

/// Hop limit of frames we originate (Linux's default).
pub const HOP_LIMIT: u8 = 64;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;
/// IPv6 Fragment extension header length (RFC 8200 §4.5).
const IPV6_FRAG_HEADER_LEN: usize = 8;
/// Largest IPv6 payload without a jumbogram option.
const IPV6_MAX_PAYLOAD: usize = 65_535;
/// IPv6 minimum MTU: ICMPv6 errors quote at most this much (RFC 4443 §2.4), and no "packet
/// too big" names less (RFC 8200 §5).
const IPV6_MIN_MTU: usize = 1280;
/// IPv4 minimum MTU (RFC 791): no "fragmentation needed" names less.
const IPV4_MIN_MTU: usize = 68;

/// Link-layer addressing of an emitted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    /// Source MAC (the stack's).
    pub src: EthernetAddress,
    /// Destination MAC (the guest's).
    pub dst: EthernetAddress,
}

/// Why a frame could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// Does not fit the MTU and cannot be fragmented.
    #[error("{0} bytes do not fit the MTU")]
    TooBig(usize),
    /// Source and destination are of different address families.
    #[error("mixed address families")]
    Family,
    /// The packet to quote in an ICMP error could not be parsed.
    #[error("unparsable packet to quote")]
    BadQuote,
}

/// Kinds of destination-unreachable errors we report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Network unreachable (IPv6: no route).
    Net,
    /// Host unreachable (IPv6: address unreachable).
    Host,
    /// Port unreachable.
    Port,
    /// Administratively prohibited (ICMPv4 type 3 code 13, ICMPv6 type 1 code 1): the egress
    /// policy denied the flow.
    Prohibited,
}

/// ICMP errors we report to the guest about a packet it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Destination unreachable, for the reason given.
    Unreachable(Unreachable),
    /// Time (hop limit) exceeded in transit: ICMPv4 type 11 code 0, ICMPv6 type 3 code 0.
    TimeExceeded,
    /// Larger than the path MTU: ICMPv6 Packet Too Big (type 2), or ICMPv4 "fragmentation
    /// needed" (type 3 code 4) with the next-hop MTU (RFC 1191).
    TooBig {
        /// The path MTU (clamped by the emitter, see [`Emitter::icmp_error`]).
        mtu: u32,
    },
}

/// Builds frames into a reusable buffer.
#[derive(Debug)]
pub struct Emitter {
    mtu: usize,
    buf: Vec<u8>,
    datagram: Vec<u8>,
    ident: u16,
    /// Identification of the next fragmented IPv6 datagram.
    ident6: u32,
    /// IPv6 datagrams sent as fragments.
    fragmented_v6: u64,
}

impl Emitter {
    /// An emitter for an interface with IP MTU `mtu`.
    pub fn new(mtu: usize) -> Self {
        Emitter {
            mtu,
            buf: Vec::new(),
            datagram: Vec::new(),
            ident: 1,
            ident6: 1,
            fragmented_v6: 0,
        }
    }

    /// How many IPv6 UDP datagrams were larger than the MTU and sent as fragments.
    pub fn fragmented_v6(&self) -> u64 {
        self.fragmented_v6
    }

    fn frame(&mut self, l2: L2, ethertype: EthernetProtocol, ip_len: usize) -> &mut [u8] {
        self.buf.clear();
        self.buf.resize(ETHERNET_HEADER_LEN + ip_len, 0);
        let mut f = EthernetFrame::new_unchecked(&mut self.buf[..]);
        EthernetRepr {
            src_addr: l2.src,
            dst_addr: l2.dst,
            ethertype,
        }
        .emit(&mut f);
        &mut self.buf[ETHERNET_HEADER_LEN..]
    }

    /// A UDP datagram from `src` to `dst` (fragmented when larger than the MTU).
    pub fn udp(
        &mut self,
        l2: L2,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), EmitError> {
        let caps = ChecksumCapabilities::default();
        let udp = UdpRepr {
            src_port: src.port(),
            dst_port: dst.port(),
        };
        let udp_len = UDP_HEADER_LEN + payload.len();
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                if udp_len > usize::from(u16::MAX) - IPV4_HEADER_LEN {
                    return Err(EmitError::TooBig(udp_len));
                }
                // The whole UDP datagram first (checksum covers all of it).
                self.datagram.clear();
                self.datagram.resize(udp_len, 0);
                udp.emit(
                    &mut UdpPacket::new_unchecked(&mut self.datagram[..]),
                    &IpAddress::Ipv4(s),
                    &IpAddress::Ipv4(d),
                    payload.len(),
                    |p| p.copy_from_slice(payload),
                    &caps,
                );
                let ident = self.ident;
                self.ident = self.ident.wrapping_add(1);
                let max_chunk = (self.mtu.saturating_sub(IPV4_HEADER_LEN)) & !7;
                if max_chunk == 0 {
                    return Err(EmitError::TooBig(udp_len));
                }
                let datagram = std::mem::take(&mut self.datagram);
                let mut offset = 0;
                while offset < udp_len {
                    let chunk = (udp_len - offset).min(max_chunk);
                    let more = offset + chunk < udp_len;
                    let ip = Ipv4Repr {
                        src_addr: s,
                        dst_addr: d,
                        next_header: IpProtocol::Udp,
                        payload_len: chunk,
                        hop_limit: HOP_LIMIT,
                    };
                    let buf = self.frame(l2, EthernetProtocol::Ipv4, IPV4_HEADER_LEN + chunk);
                    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
                    ip.emit(&mut p, &caps);
                    p.set_ident(ident);
                    p.set_more_frags(more);
                    p.set_frag_offset(
                        u16::try_from(offset).map_err(|_| EmitError::TooBig(udp_len))?,
                    );
                    p.payload_mut()
                        .copy_from_slice(&datagram[offset..offset + chunk]);
                    p.fill_checksum();
                    out(&self.buf);
                    offset += chunk;
                }
                self.datagram = datagram;
                Ok(())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                if IPV6_HEADER_LEN + udp_len > self.mtu {
                    return self.udp6_fragments(l2, (s, d), udp, payload, out);
                }
                let ip = Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Udp,
                    payload_len: udp_len,
                    hop_limit: HOP_LIMIT,
                };
                let buf = self.frame(l2, EthernetProtocol::Ipv6, IPV6_HEADER_LEN + udp_len);
                let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
                ip.emit(&mut p);
                udp.emit(
                    &mut UdpPacket::new_unchecked(p.payload_mut()),
                    &IpAddress::Ipv6(s),
                    &IpAddress::Ipv6(d),
                    payload.len(),
                    |b| b.copy_from_slice(payload),
                    &caps,
                );
                out(&self.buf);
                Ok(())
            }
            _ => Err(EmitError::Family),
        }
    }

    /// A UDP datagram over IPv6 that does not fit the MTU, as fragments: each an IPv6 header,
    /// a Fragment header (next header UDP, offset, more-fragments flag, one identification per
    /// datagram) and a multiple of 8 bytes of the whole UDP datagram (the last one the rest).
    fn udp6_fragments(
        &mut self,
        l2: L2,
        (s, d): (std::net::Ipv6Addr, std::net::Ipv6Addr),
        udp: UdpRepr,
        payload: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), EmitError> {
        let udp_len = UDP_HEADER_LEN + payload.len();
        let max_chunk = self
            .mtu
            .saturating_sub(IPV6_HEADER_LEN + IPV6_FRAG_HEADER_LEN)
            & !7;
        if udp_len > IPV6_MAX_PAYLOAD || max_chunk == 0 {
            return Err(EmitError::TooBig(udp_len));
        }
        self.datagram.clear();
        self.datagram.resize(udp_len, 0);
        udp.emit(
            &mut UdpPacket::new_unchecked(&mut self.datagram[..]),
            &IpAddress::Ipv6(s),
            &IpAddress::Ipv6(d),
            payload.len(),
            |p| p.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        let ident = self.ident6;
        self.ident6 = self.ident6.wrapping_add(1);
        let datagram = std::mem::take(&mut self.datagram);
        let mut offset = 0;
        while offset < udp_len {
            let chunk = (udp_len - offset).min(max_chunk);
            let more = offset + chunk < udp_len;
            // Offset in 8-byte units in the top 13 bits; offset is a multiple of 8 below 2^16.
            let Ok(off_field) = u16::try_from(offset) else {
                self.datagram = datagram;
                return Err(EmitError::TooBig(udp_len));
            };
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Ipv6Frag,
                payload_len: IPV6_FRAG_HEADER_LEN + chunk,
                hop_limit: HOP_LIMIT,
            };
            let len = IPV6_HEADER_LEN + IPV6_FRAG_HEADER_LEN + chunk;
            let buf = self.frame(l2, EthernetProtocol::Ipv6, len);
            let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut p);
            let body = p.payload_mut();
            body[0] = u8::from(IpProtocol::Udp);
            body[1] = 0;
            body[2..4].copy_from_slice(&(off_field | u16::from(more)).to_be_bytes());
            body[4..8].copy_from_slice(&ident.to_be_bytes());
            body[IPV6_FRAG_HEADER_LEN..].copy_from_slice(&datagram[offset..offset + chunk]);
            out(&self.buf);
            offset += chunk;
        }
        self.datagram = datagram;
        self.fragmented_v6 += 1;
        Ok(())
    }

    /// An ICMP(v6) echo request (`request`) or reply.
    #[allow(clippy::too_many_arguments)]
    pub fn echo(
        &mut self,
        l2: L2,
        request: bool,
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq_no: u16,
        data: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), EmitError> {
        let caps = ChecksumCapabilities::default();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let icmp = if request {
                    Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }
                } else {
                    Icmpv4Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    }
                };
                self.ipv4(l2, s, d, IpProtocol::Icmp, icmp.buffer_len(), out, |b| {
                    icmp.emit(&mut Icmpv4Packet::new_unchecked(b), &caps)
                })
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let icmp = if request {
                    Icmpv6Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }
                } else {
                    Icmpv6Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    }
                };
                self.ipv6(l2, s, d, IpProtocol::Icmpv6, icmp.buffer_len(), out, |b| {
                    icmp.emit(&s, &d, &mut Icmpv6Packet::new_unchecked(b), &caps)
                })
            }
            _ => Err(EmitError::Family),
        }
    }

    /// A destination-unreachable error about `quoted` (an IP packet the guest sent), from the
    /// address the guest tried to reach back to the guest.
    pub fn unreachable(
        &mut self,
        l2: L2,
        kind: Unreachable,
        quoted: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), EmitError> {
        self.icmp_error(l2, IcmpError::Unreachable(kind), None, quoted, out)
    }

    /// An ICMP(v6) error about `quoted` (an IP packet the guest sent, or a reconstruction of
    /// its headers) to the guest, from `from` or, without it, from the address the guest tried
    /// to reach. ICMPv4 quotes the IP header and 8 bytes (RFC 792); ICMPv6 as much as keeps
    /// the error within the IPv6 minimum MTU (RFC 4443 §2.4). A "too big" MTU is clamped to
    /// between the family's minimum and the guest's MTU: a guest told of a larger MTU than its
    /// own link has would gain nothing, and one below the minimum is not valid.
    pub fn icmp_error(
        &mut self,
        l2: L2,
        kind: IcmpError,
        from: Option<IpAddr>,
        quoted: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) -> Result<(), EmitError> {
        let caps = ChecksumCapabilities::default();
        let version = quoted.first().map(|b| b >> 4);
        if version == Some(4) {
            let p = Ipv4Packet::new_checked(quoted).map_err(|_| EmitError::BadQuote)?;
            let header = Ipv4Repr::parse(&p, &ChecksumCapabilities::ignored())
                .map_err(|_| EmitError::BadQuote)?;
            let hl = usize::from(p.header_len());
            let data = quoted.get(hl..(hl + 8).min(quoted.len())).unwrap_or(&[]);
            let (icmp, mtu) = match kind {
                IcmpError::Unreachable(u) => {
                    let reason = match u {
                        Unreachable::Net => Icmpv4DstUnreachable::NetUnreachable,
                        Unreachable::Host => Icmpv4DstUnreachable::HostUnreachable,
                        Unreachable::Port => Icmpv4DstUnreachable::PortUnreachable,
                        Unreachable::Prohibited => Icmpv4DstUnreachable::CommProhibited,
                    };
                    let r = Icmpv4Repr::DstUnreachable {
                        reason,
                        header,
                        data,
                    };
                    (r, None)
                }
                IcmpError::TimeExceeded => {
                    let r = Icmpv4Repr::TimeExceeded {
                        reason: Icmpv4TimeExceeded::TtlExpired,
                        header,
                        data,
                    };
                    (r, None)
                }
                IcmpError::TooBig { mtu } => {
                    let r = Icmpv4Repr::DstUnreachable {
                        reason: Icmpv4DstUnreachable::FragRequired,
                        header,
                        data,
                    };
                    (r, Some(self.clamp_mtu(mtu, IPV4_MIN_MTU)))
                }
            };
            let s = match from {
                None => header.dst_addr,
                Some(IpAddr::V4(a)) => a,
                Some(IpAddr::V6(_)) => return Err(EmitError::Family),
            };
            let d = header.src_addr;
            self.ipv4(l2, s, d, IpProtocol::Icmp, icmp.buffer_len(), out, |b| {
                let mut packet = Icmpv4Packet::new_unchecked(b);
                icmp.emit(&mut packet, &caps);
                if let Some(mtu) = mtu {
                    // RFC 1191: the next-hop MTU sits in the low 16 bits of the "unused" word,
                    // where an echo message has its sequence number.
                    packet.set_echo_seq_no(u16::try_from(mtu).unwrap_or(u16::MAX));
                    packet.fill_checksum();
                }
            })
        } else if version == Some(6) {
            let p = Ipv6Packet::new_checked(quoted).map_err(|_| EmitError::BadQuote)?;
            let header = Ipv6Repr::parse(&p).map_err(|_| EmitError::BadQuote)?;
            let room = IPV6_MIN_MTU - IPV6_HEADER_LEN - 8 - IPV6_HEADER_LEN;
            let end = quoted.len().min(IPV6_HEADER_LEN + room);
            let data = quoted.get(IPV6_HEADER_LEN..end).unwrap_or(&[]);
            let icmp = match kind {
                IcmpError::Unreachable(u) => {
                    let reason = match u {
                        Unreachable::Net => Icmpv6DstUnreachable::NoRoute,
                        Unreachable::Host => Icmpv6DstUnreachable::AddrUnreachable,
                        Unreachable::Port => Icmpv6DstUnreachable::PortUnreachable,
                        Unreachable::Prohibited => Icmpv6DstUnreachable::AdminProhibit,
                    };
                    Icmpv6Repr::DstUnreachable {
                        reason,
                        header,
                        data,
                    }
                }
                IcmpError::TimeExceeded => Icmpv6Repr::TimeExceeded {
                    reason: Icmpv6TimeExceeded::HopLimitExceeded,
                    header,
                    data,
                },
                IcmpError::TooBig { mtu } => Icmpv6Repr::PktTooBig {
                    mtu: self.clamp_mtu(mtu, IPV6_MIN_MTU),
                    header,
                    data,
                },
            };
            let s = match from {
                None => header.dst_addr,
                Some(IpAddr::V6(a)) => a,
                Some(IpAddr::V4(_)) => return Err(EmitError::Family),
            };
            let d = header.src_addr;
            self.ipv6(l2, s, d, IpProtocol::Icmpv6, icmp.buffer_len(), out, |b| {
                icmp.emit(&s, &d, &mut Icmpv6Packet::new_unchecked(b), &caps)
            })
        } else {
            Err(EmitError::BadQuote)
        }
    }

    /// `mtu` within [`min`, the guest's MTU] (the minimum wins over a smaller guest MTU).
    fn clamp_mtu(&self, mtu: u32, min: usize) -> u32 {
        let guest = u32::try_from(self.mtu).unwrap_or(u32::MAX);
        let min = u32::try_from(min).unwrap_or(0);
        mtu.min(guest).max(min)
    }

    #[allow(clippy::too_many_arguments)]
    fn ipv4(
        &mut self,
        l2: L2,
        s: std::net::Ipv4Addr,
        d: std::net::Ipv4Addr,
        proto: IpProtocol,
        len: usize,
        out: &mut dyn FnMut(&[u8]),
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EmitError> {
        if IPV4_HEADER_LEN + len > self.mtu {
            return Err(EmitError::TooBig(len));
        }
        let ip = Ipv4Repr {
            src_addr: s,
            dst_addr: d,
            next_header: proto,
            payload_len: len,
            hop_limit: HOP_LIMIT,
        };
        let buf = self.frame(l2, EthernetProtocol::Ipv4, IPV4_HEADER_LEN + len);
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &ChecksumCapabilities::default());
        fill(p.payload_mut());
        out(&self.buf);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn ipv6(
        &mut self,
        l2: L2,
        s: std::net::Ipv6Addr,
        d: std::net::Ipv6Addr,
        proto: IpProtocol,
        len: usize,
        out: &mut dyn FnMut(&[u8]),
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), EmitError> {
        if IPV6_HEADER_LEN + len > self.mtu {
            return Err(EmitError::TooBig(len));
        }
        let ip = Ipv6Repr {
            src_addr: s,
            dst_addr: d,
            next_header: proto,
            payload_len: len,
            hop_limit: HOP_LIMIT,
        };
        let buf = self.frame(l2, EthernetProtocol::Ipv6, IPV6_HEADER_LEN + len);
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p);
        fill(p.payload_mut());
        out(&self.buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{Ipv4Packet, UdpPacket};

    fn l2() -> L2 {
        L2 {
            src: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
            dst: EthernetAddress([2, 0, 0, 0, 0, 9]),
        }
    }

    fn collect(f: impl FnOnce(&mut dyn FnMut(&[u8]))) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        f(&mut |b: &[u8]| v.push(b.to_vec()));
        v
    }

    #[test]
    fn udp_v4_checksums_verify() {
        let mut e = Emitter::new(1500);
        let frames = collect(|o| {
            e.udp(
                l2(),
                "10.0.2.2:53".parse().unwrap(),
                "10.0.2.100:4000".parse().unwrap(),
                b"abc",
                o,
            )
            .unwrap()
        });
        let f = EthernetFrame::new_checked(&frames[0][..]).unwrap();
        assert_eq!(f.dst_addr(), l2().dst);
        let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
        assert_eq!(udp.payload(), b"abc");
    }

    #[test]
    fn udp_v4_fragments_reassemble() {
        let mut e = Emitter::new(1500);
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let frames = collect(|o| {
            e.udp(
                l2(),
                "10.0.2.2:53".parse().unwrap(),
                "10.0.2.100:4000".parse().unwrap(),
                &payload,
                o,
            )
            .unwrap()
        });
        assert_eq!(frames.len(), 4);
        let mut whole = vec![0u8; 8 + payload.len()];
        for (i, fr) in frames.iter().enumerate() {
            assert!(fr.len() <= 1514);
            let ip = Ipv4Packet::new_checked(&fr[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.more_frags(), i + 1 < frames.len());
            let off = usize::from(ip.frag_offset());
            whole[off..off + ip.payload().len()].copy_from_slice(ip.payload());
        }
        let udp = UdpPacket::new_checked(&whole[..]).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4("10.0.2.2".parse().unwrap()),
            &IpAddress::Ipv4("10.0.2.100".parse().unwrap())
        ));
        assert_eq!(udp.payload(), &payload[..]);
    }

    #[test]
    fn udp_v6_fragments_reassemble() {
        let mut e = Emitter::new(1500);
        let (src, dst) = ("fd00::2", "fd00::5");
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let send = |e: &mut Emitter, payload: &[u8]| {
            collect(|o| {
                e.udp(
                    l2(),
                    SocketAddr::new(src.parse().unwrap(), 53),
                    SocketAddr::new(dst.parse().unwrap(), 4000),
                    payload,
                    o,
                )
                .unwrap()
            })
        };
        let frames = send(&mut e, &payload);
        assert_eq!(frames.len(), 4, "5008 bytes in chunks of 1448");
        let mut whole = vec![0u8; 8 + payload.len()];
        let mut idents = Vec::new();
        for (i, fr) in frames.iter().enumerate() {
            assert!(fr.len() <= 1514);
            let ip = Ipv6Packet::new_checked(&fr[14..]).unwrap();
            assert_eq!(ip.next_header(), IpProtocol::Ipv6Frag);
            let h = ip.payload();
            assert_eq!(h[0], u8::from(IpProtocol::Udp));
            let field = u16::from_be_bytes([h[2], h[3]]);
            assert_eq!(field & 1 == 1, i + 1 < frames.len(), "more-fragments flag");
            let off = usize::from(field & !7);
            let chunk = &h[8..];
            if i + 1 < frames.len() {
                assert_eq!(chunk.len() % 8, 0);
            }
            whole[off..off + chunk.len()].copy_from_slice(chunk);
            idents.push(u32::from_be_bytes([h[4], h[5], h[6], h[7]]));
        }
        assert!(idents.iter().all(|&i| i == idents[0]));
        let udp = UdpPacket::new_checked(&whole[..]).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv6(src.parse().unwrap()),
            &IpAddress::Ipv6(dst.parse().unwrap())
        ));
        assert_eq!(udp.payload(), &payload[..]);
        assert_eq!(e.fragmented_v6(), 1);
        // The next datagram gets another identification; a small one is not fragmented.
        let again = send(&mut e, &payload);
        let h = Ipv6Packet::new_checked(&again[0][14..]).unwrap().payload()[4..8].to_vec();
        assert_ne!(u32::from_be_bytes([h[0], h[1], h[2], h[3]]), idents[0]);
        let small = send(&mut e, b"x");
        assert_eq!(small.len(), 1);
        let ip = Ipv6Packet::new_checked(&small[0][14..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(e.fragmented_v6(), 2);
        // The largest UDP datagram fits in fragments; nothing larger exists.
        assert_eq!(send(&mut e, &vec![0u8; 65_527]).len(), 46);
        // An MTU below one 8-byte chunk cannot carry fragments.
        let r = Emitter::new(48).udp(
            l2(),
            "[fd00::2]:53".parse().unwrap(),
            "[fd00::5]:4000".parse().unwrap(),
            &[0u8; 100],
            &mut |_| panic!("nothing emitted"),
        );
        assert_eq!(r, Err(EmitError::TooBig(108)));
    }

    #[test]
    fn unreachable_quotes_the_syn_and_swaps_addresses() {
        let mut e = Emitter::new(1500);
        // Build a "SYN" packet as the guest would have sent it: a UDP packet works as quote too.
        let syn = collect(|o| {
            e.udp(
                l2(),
                "10.0.2.100:4000".parse().unwrap(),
                "192.0.2.7:80".parse().unwrap(),
                b"x",
                o,
            )
            .unwrap()
        });
        let quoted = syn[0][14..].to_vec();
        let frames = collect(|o| e.unreachable(l2(), Unreachable::Host, &quoted, o).unwrap());
        let ip = Ipv4Packet::new_checked(&frames[0][14..]).unwrap();
        assert_eq!(
            ip.src_addr(),
            "192.0.2.7".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(
            ip.dst_addr(),
            "10.0.2.100".parse::<std::net::Ipv4Addr>().unwrap()
        );
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_code(), 1, "host unreachable");
        assert!(e
            .unreachable(l2(), Unreachable::Net, &[0x45, 0], &mut |_| {})
            .is_err());
    }
    /// The guest's datagram `src -> dst` with `len` payload bytes, as an IP packet.
    fn guest_packet(e: &mut Emitter, src: &str, dst: &str, len: usize) -> Vec<u8> {
        let frames = collect(|o| {
            e.udp(
                l2(),
                src.parse().unwrap(),
                dst.parse().unwrap(),
                &vec![7; len],
                o,
            )
            .unwrap()
        });
        assert_eq!(frames.len(), 1);
        frames[0][14..].to_vec()
    }

    #[test]
    fn time_exceeded_from_the_router_in_both_families() {
        let mut e = Emitter::new(1500);
        let q4 = guest_packet(&mut e, "10.0.2.100:4000", "192.0.2.7:33434", 20);
        let router: IpAddr = "198.51.100.1".parse().unwrap();
        let f = collect(|o| {
            e.icmp_error(l2(), IcmpError::TimeExceeded, Some(router), &q4, o)
                .unwrap()
        });
        let ip = Ipv4Packet::new_checked(&f[0][14..]).unwrap();
        assert_eq!(IpAddr::V4(ip.src_addr()), router);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (11, 0));
        // Header (rebuilt by smoltcp: same addresses, protocol and lengths) and 8 bytes quoted.
        assert_eq!(icmp.data()[12..], q4[12..28]);

        let q6 = guest_packet(&mut e, "[fd00::100]:4000", "[2001:db8::7]:33434", 20);
        let router: IpAddr = "2001:db8:1::1".parse().unwrap();
        let f = collect(|o| {
            e.icmp_error(l2(), IcmpError::TimeExceeded, Some(router), &q6, o)
                .unwrap()
        });
        let ip = Ipv6Packet::new_checked(&f[0][14..]).unwrap();
        assert_eq!(IpAddr::V6(ip.src_addr()), router);
        assert_eq!(
            ip.dst_addr(),
            "fd00::100".parse::<std::net::Ipv6Addr>().unwrap()
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (3, 0));
        assert_eq!(icmp.payload(), &q6[..], "all of a small packet is quoted");
        // A source of the other family is refused.
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let r = e.icmp_error(l2(), IcmpError::TimeExceeded, Some(v4), &q6, &mut |_| {});
        assert_eq!(r, Err(EmitError::Family));
    }

    #[test]
    fn packet_too_big_quotes_within_1280_and_clamps_the_mtu() {
        let mut e = Emitter::new(9000);
        let q6 = guest_packet(&mut e, "[fd00::100]:4000", "[2001:db8::7]:9", 8000);
        for (mtu, told) in [(1400, 1400), (500, 1280), (65_000, 9000)] {
            let f = collect(|o| {
                e.icmp_error(l2(), IcmpError::TooBig { mtu }, None, &q6, o)
                    .unwrap()
            });
            assert_eq!(
                f[0].len(),
                14 + 1280,
                "the error fills the minimum MTU exactly"
            );
            let ip = Ipv6Packet::new_checked(&f[0][14..]).unwrap();
            assert_eq!(
                ip.src_addr(),
                "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap()
            );
            let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
            assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
            assert_eq!(u8::from(icmp.msg_type()), 2);
            assert_eq!(icmp.pkt_too_big_mtu(), told);
            assert_eq!(icmp.payload(), &q6[..1280 - 48]);
        }
        let q4 = guest_packet(&mut e, "10.0.2.100:4000", "192.0.2.7:9", 3000);
        for (mtu, told) in [(1400, 1400), (20, 68), (100_000, 9000)] {
            let f = collect(|o| {
                e.icmp_error(l2(), IcmpError::TooBig { mtu }, None, &q4, o)
                    .unwrap()
            });
            let ip = Ipv4Packet::new_checked(&f[0][14..]).unwrap();
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert!(icmp.verify_checksum(), "checksum covers the MTU field");
            assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (3, 4));
            assert_eq!(icmp.echo_seq_no(), told, "next-hop MTU");
            assert_eq!(icmp.data()[12..], q4[12..28]);
        }
    }
}
