//! `virtio_net_hdr`: the per-frame offload header of a tap opened with `IFF_VNET_HDR`.
//!
//! # Theory of operation
//!
//! The header (`include/uapi/linux/virtio_net.h`, 10 bytes) tells the kernel two things about
//! a frame we write, and tells us the same about a frame we read:
//! - `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial. The checksum field holds the
//!   folded (not inverted) pseudo-header sum; whoever needs the real checksum sums from
//!   `csum_start` to the end and stores the result at `csum_start + csum_offset`. A guest
//!   that receives such a frame for a local socket does not verify it at all (it came from
//!   software that did not corrupt it), so neither side ever sums the payload.
//! - `gso_type`/`gso_size`: the frame is a TCP super-segment of up to 64 KiB that stands for
//!   segments of `gso_size` payload bytes; the receiving stack takes it whole (as it takes a
//!   GRO-merged packet) and only segments it if it forwards it somewhere that needs it.
//!
//! smoltcp's `segmentation-offload` feature hands us TCP segments larger than the guest's MSS
//! with the MSS in `PacketMeta::segmentation_offload_size`, and with checksums left to us
//! (smoltcp requires checksum offload along with segmentation). [`tcp_tx_header`] turns such a
//! frame into what the kernel expects: pseudo-header sum in place, header describing the rest.
//!
//! Fields are in the host's byte order (legacy virtio on a little-endian host, which is what
//! the tun driver uses unless `TUNSETVNETBE`/`TUNSETVNETLE` say otherwise).

/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const HDR_LEN: usize = 10;
/// Largest header length we accept from a tap someone else opened (`TUNSETVNETHDRSZ` may make
/// it 12, `virtio_net_hdr_mrg_rxbuf`); the bytes past the first 10 are zero on write.
pub const MAX_HDR_LEN: usize = 12;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// Offset of the checksum field in a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

/// A `struct virtio_net_hdr`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Length of the headers to replicate per segment (Ethernet + IP + TCP).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header as the tun driver reads it.
    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Parse a header the tun driver wrote (`None` if `b` is shorter than [`HDR_LEN`]).
    pub fn from_bytes(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero).
fn sum_be(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 bits.
    acc as u16
}

/// Prepare a TCP frame built without a checksum for the tap: store the pseudo-header sum in its
/// checksum field and return the header that asks for the rest (`NEEDS_CSUM`), plus GSO when
/// the payload is larger than `segment` (the guest's MSS). Returns `None`, leaving the frame
/// alone, if it is not a well-formed Ethernet + IPv4/IPv6 + TCP frame without IPv6 extension
/// headers (smoltcp never emits those for TCP).
pub fn tcp_tx_header(frame: &mut [u8], segment: Option<u16>) -> Option<VnetHdr> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH_LEN..)?;
    let (l4_off, l4_len, gso_type, pseudo) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != IPPROTO_TCP || total < ihl {
                return None;
            }
            let l4_len = total - ihl;
            let mut acc = sum_be(ip.get(12..20)?, 0);
            acc += u32::from(IPPROTO_TCP);
            acc += u32::try_from(l4_len).ok()?;
            (ETH_LEN + ihl, l4_len, GSO_TCPV4, acc)
        }
        ETHERTYPE_IPV6 => {
            if ip.first()? >> 4 != 6 || *ip.get(6)? != IPPROTO_TCP {
                return None;
            }
            let l4_len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            let mut acc = sum_be(ip.get(8..40)?, 0);
            acc += u32::from(IPPROTO_TCP);
            // The upper-layer length is a 32-bit field; ours fits 16 bits.
            acc += u32::try_from(l4_len).ok()?;
            (ETH_LEN + 40, l4_len, GSO_TCPV6, acc)
        }
        _ => return None,
    };
    let tcp = frame.get(l4_off..l4_off.checked_add(l4_len)?)?;
    let tcp_hdr_len = usize::from(tcp.get(12)? >> 4) * 4;
    if tcp_hdr_len < 20 || tcp_hdr_len > l4_len {
        return None;
    }
    let payload = l4_len - tcp_hdr_len;
    let csum = fold(pseudo).to_be_bytes();
    frame[l4_off + 16..l4_off + 18].copy_from_slice(&csum);
    let mut h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: u16::try_from(l4_off + tcp_hdr_len).ok()?,
        gso_size: 0,
        csum_start: u16::try_from(l4_off).ok()?,
        csum_offset: TCP_CSUM_OFFSET,
    };
    if let Some(mss) = segment.filter(|&m| m > 0 && payload > usize::from(m)) {
        h.gso_type = gso_type;
        h.gso_size = mss;
    }
    Some(h)
}

/// Finish a partial checksum the way the receiver of a `NEEDS_CSUM` frame would: sum from
/// `csum_start` to the end and store the inverted result (tests, and any consumer that must
/// see a complete checksum).
pub fn complete_checksum(frame: &mut [u8], h: &VnetHdr) -> Option<()> {
    let start = usize::from(h.csum_start);
    let at = start + usize::from(h.csum_offset);
    frame.get(at..at + 2)?;
    let sum = !fold(sum_be(frame.get(start..)?, 0));
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
        Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };

    /// A TCP frame with a correct checksum (as smoltcp would build it with checksums on).
    fn tcp_frame(v6: bool, payload: &[u8]) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 5201,
            dst_port: 40000,
            control: TcpControl::Psh,
            seq_number: TcpSeqNumber(1000),
            ack_number: Some(TcpSeqNumber(2000)),
            window_len: 512,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let (src, dst, ethertype, ip_len): (IpAddress, IpAddress, _, usize) = if v6 {
            (
                "fd00::2".parse().unwrap(),
                "fd00::100".parse().unwrap(),
                EthernetProtocol::Ipv6,
                40,
            )
        } else {
            (
                "10.0.2.2".parse().unwrap(),
                "10.0.2.100".parse().unwrap(),
                EthernetProtocol::Ipv4,
                20,
            )
        };
        let mut buf = vec![0u8; 14 + ip_len + tcp.buffer_len()];
        let eth = EthernetRepr {
            src_addr: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
            dst_addr: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
            ethertype,
        };
        let mut f = EthernetFrame::new_unchecked(&mut buf);
        eth.emit(&mut f);
        let caps = ChecksumCapabilities::default();
        match (src, dst) {
            (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
                let ip = Ipv4Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    hop_limit: 64,
                };
                let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
                ip.emit(&mut p, &caps);
                let mut t = TcpPacket::new_unchecked(p.payload_mut());
                tcp.emit(&mut t, &src, &dst, &caps);
            }
            (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
                let ip = Ipv6Repr {
                    src_addr: s,
                    dst_addr: d,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.buffer_len(),
                    hop_limit: 64,
                };
                let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
                ip.emit(&mut p);
                let mut t = TcpPacket::new_unchecked(p.payload_mut());
                tcp.emit(&mut t, &src, &dst, &caps);
            }
            _ => unreachable!(),
        }
        buf
    }

    #[test]
    fn header_bytes_roundtrip() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(VnetHdr::from_bytes(&[0; 9]), None);
    }

    #[test]
    fn partial_checksum_completes_to_the_real_one() {
        for v6 in [false, true] {
            for len in [0usize, 1, 1459, 1461, 40000] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let good = tcp_frame(v6, &payload);
                let mut f = good.clone();
                let l4 = if v6 { 54 } else { 34 };
                f[l4 + 16] = 0;
                f[l4 + 17] = 0;
                let h = tcp_tx_header(&mut f, Some(1460)).expect("tcp frame");
                assert_eq!(h.flags, F_NEEDS_CSUM);
                assert_eq!(usize::from(h.csum_start), l4);
                assert_eq!(usize::from(h.hdr_len), l4 + 20);
                if len > 1460 {
                    assert_eq!(h.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
                    assert_eq!(h.gso_size, 1460);
                } else {
                    assert_eq!((h.gso_type, h.gso_size), (GSO_NONE, 0));
                }
                complete_checksum(&mut f, &h).unwrap();
                assert_eq!(f, good, "v6={v6} len={len}");
            }
        }
    }

    #[test]
    fn no_segmentation_without_a_segment_size() {
        let mut f = tcp_frame(false, &[1; 3000]);
        let h = tcp_tx_header(&mut f, None).unwrap();
        assert_eq!(h.gso_type, GSO_NONE);
        let h = tcp_tx_header(&mut f, Some(0)).unwrap();
        assert_eq!(h.gso_type, GSO_NONE);
    }

    #[test]
    fn non_tcp_and_malformed_frames_are_left_alone() {
        let good = tcp_frame(false, b"hello");
        // ARP ethertype.
        let mut f = good.clone();
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tcp_tx_header(&mut f, None), None);
        // UDP protocol.
        let mut f = good.clone();
        f[14 + 9] = 17;
        assert_eq!(tcp_tx_header(&mut f, None), None);
        // Truncated at every length: never panics, never touches the frame.
        for cut in 0..good.len() - 5 {
            let mut f = good[..cut].to_vec();
            let before = f.clone();
            assert_eq!(tcp_tx_header(&mut f, None), None, "cut {cut}");
            assert_eq!(f, before);
        }
        // IPv4 total length shorter than the header.
        let mut f = good.clone();
        f[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(tcp_tx_header(&mut f, None), None);
        // TCP data offset beyond the segment.
        let mut f = good;
        f[34 + 12] = 0xf0;
        assert_eq!(tcp_tx_header(&mut f, None), None);
    }
}
