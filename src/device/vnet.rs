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

/// TCP flags a merged segment may carry: ACK, and PSH (which the last piece keeps).
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Offset of the TCP header in an IPv6 frame without extension headers.
const V6_L4_OFF: usize = ETH_LEN + 40;
/// Largest TCP segment (header included) an IPv6 super-segment may carry: the IPv6 payload
/// length field's limit.
const MAX_V6_L4_LEN: usize = 65_535;

/// Merge the IPv6 TCP frame `next` into the frame before it, `prev[..*prev_len]` with header
/// `prev_hdr` (both prepared by [`tcp_tx_header`]), when `next` simply continues it: same
/// Ethernet and IPv6 headers, same ports, acknowledgment, window and options, flags ACK (and
/// PSH), sequence number right after `prev`'s payload, and every piece so far full-sized with
/// `next` no larger. The result is one super-segment of pieces of `gso_size` bytes
/// (`GSO_TCPV6`), up to 64 KiB, with the pseudo-header sum updated for the new length; a PSH on
/// `next` carries over. Returns whether it merged (then `next` is no longer needed).
///
/// This is what smoltcp's `segmentation-offload` does for IPv4 but cannot for IPv6 (version
/// 0.14 drops any IPv6 packet over the MTU): without it, IPv6 towards the guest is one tap write
/// and one trip through the guest's stack per MSS.
pub fn coalesce_tcpv6(
    prev: &mut Vec<u8>,
    prev_len: &mut usize,
    prev_hdr: &mut VnetHdr,
    next: &[u8],
) -> bool {
    coalesce_tcpv6_inner(prev, prev_len, prev_hdr, next).is_some()
}

fn coalesce_tcpv6_inner(
    prev: &mut Vec<u8>,
    prev_len: &mut usize,
    prev_hdr: &mut VnetHdr,
    next: &[u8],
) -> Option<()> {
    let p = V6_L4_OFF;
    let hdr_len = usize::from(prev_hdr.hdr_len);
    let ok = prev_hdr.flags & F_NEEDS_CSUM != 0
        && matches!(prev_hdr.gso_type, GSO_NONE | GSO_TCPV6)
        && usize::from(prev_hdr.csum_start) == p
        && hdr_len >= p + 20
        && *prev_len > hdr_len
        && next.len() > hdr_len
        && prev.len() >= *prev_len;
    if !ok {
        return None;
    }
    // Both hold hdr_len >= p + 20 bytes (checked above): every index below is in range.
    let a = prev.get(..hdr_len)?;
    let b = next.get(..hdr_len)?;
    let v6_tcp = |f: &[u8]| f[12..14] == ETHERTYPE_IPV6.to_be_bytes() && f[20] == IPPROTO_TCP;
    let flags_ok = |f: u8| f & TCP_ACK != 0 && f & !(TCP_ACK | TCP_PSH) == 0;
    let same = a[..18] == b[..18]          // Ethernet; IPv6 version, class, flow label
        && a[20..p + 4] == b[20..p + 4]    // next header, hop limit, addresses; TCP ports
        && a[p + 8..p + 13] == b[p + 8..p + 13] // acknowledgment, data offset
        && a[p + 14..p + 16] == b[p + 14..p + 16] // window
        && a[p + 18..hdr_len] == b[p + 18..hdr_len]; // urgent pointer, options
    if !(v6_tcp(a) && same && flags_ok(a[p + 13]) && flags_ok(b[p + 13])) {
        return None;
    }
    let prev_payload = *prev_len - hdr_len;
    let next_payload = next.len() - hdr_len;
    let seq = |f: &[u8]| u32::from_be_bytes([f[p + 4], f[p + 5], f[p + 6], f[p + 7]]);
    let expected = seq(a).wrapping_add(u32::try_from(prev_payload).ok()?);
    if seq(b) != expected {
        return None;
    }
    let gso_size = if prev_hdr.gso_type == GSO_TCPV6 {
        usize::from(prev_hdr.gso_size)
    } else {
        prev_payload
    };
    let l4_len = *prev_len - p + next_payload;
    if gso_size == 0
        || prev_payload % gso_size != 0
        || next_payload > gso_size
        || l4_len > MAX_V6_L4_LEN
    {
        return None;
    }
    let new_len = *prev_len + next_payload;
    if prev.len() < new_len {
        prev.resize(new_len, 0);
    }
    prev[*prev_len..new_len].copy_from_slice(&next[hdr_len..]);
    *prev_len = new_len;
    let l4 = u16::try_from(l4_len).ok()?;
    prev[18..20].copy_from_slice(&l4.to_be_bytes());
    let mut acc = sum_be(&prev[22..p], 0);
    acc += u32::from(IPPROTO_TCP) + u32::from(l4);
    prev[p + 16..p + 18].copy_from_slice(&fold(acc).to_be_bytes());
    prev[p + 13] |= next[p + 13] & TCP_PSH;
    prev_hdr.gso_type = GSO_TCPV6;
    prev_hdr.gso_size = u16::try_from(gso_size).ok()?;
    Some(())
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
        tcp_segment(v6, 1000, TcpControl::Psh, 512, payload)
    }

    /// The same with a chosen sequence number, control flag and window.
    fn tcp_segment(
        v6: bool,
        seq: i32,
        control: TcpControl,
        window: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 5201,
            dst_port: 40000,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: Some(TcpSeqNumber(2000)),
            window_len: window,
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

    /// A frame as the transmit path holds it: pseudo-header sum in place, header beside it.
    fn prepared(mut f: Vec<u8>) -> (Vec<u8>, usize, VnetHdr) {
        let h = tcp_tx_header(&mut f, None).unwrap();
        let len = f.len();
        (f, len, h)
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn ipv6_segments_that_continue_each_other_become_one_super_segment() {
        let pieces = [
            pattern(1000, 1),
            pattern(1000, 2),
            pattern(1000, 3),
            pattern(400, 4),
        ];
        let whole: Vec<u8> = pieces.concat();
        let mut seq = 1000;
        let (mut buf, mut len, mut hdr) =
            prepared(tcp_segment(true, seq, TcpControl::None, 512, &pieces[0]));
        for (i, p) in pieces.iter().enumerate().skip(1) {
            seq += 1000;
            let control = if i == pieces.len() - 1 {
                TcpControl::Psh
            } else {
                TcpControl::None
            };
            let (next, _, _) = prepared(tcp_segment(true, seq, control, 512, p));
            assert!(
                coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next),
                "piece {i}"
            );
        }
        assert_eq!((hdr.gso_type, hdr.gso_size), (GSO_TCPV6, 1000));
        assert_eq!(usize::from(hdr.hdr_len), 54 + 20);
        // Completed the way the guest would, it is exactly the segment smoltcp would have built
        // for all the bytes at once (PSH carried over from the last piece).
        buf.truncate(len);
        complete_checksum(&mut buf, &hdr).unwrap();
        assert_eq!(buf, tcp_segment(true, 1000, TcpControl::Psh, 512, &whole));
        // The last piece was short: nothing more may follow.
        let (next, _, _) = prepared(tcp_segment(true, 1000 + 3400, TcpControl::None, 512, b"x"));
        assert!(!coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next));
    }

    #[test]
    fn only_true_continuations_merge() {
        let first = || {
            prepared(tcp_segment(
                true,
                1000,
                TcpControl::None,
                512,
                &pattern(100, 0),
            ))
        };
        let cases = [
            (
                "a gap in sequence",
                tcp_segment(true, 1101, TcpControl::None, 512, b"abc"),
            ),
            (
                "a FIN",
                tcp_segment(true, 1100, TcpControl::Fin, 512, b"abc"),
            ),
            (
                "another window",
                tcp_segment(true, 1100, TcpControl::None, 513, b"abc"),
            ),
            (
                "a longer piece",
                tcp_segment(true, 1100, TcpControl::None, 512, &pattern(101, 0)),
            ),
            (
                "no payload",
                tcp_segment(true, 1100, TcpControl::None, 512, b""),
            ),
        ];
        for (what, next) in cases {
            let (mut buf, mut len, mut hdr) = first();
            let (next, _, _) = prepared(next);
            let before = (buf.clone(), len, hdr);
            assert!(
                !coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next),
                "{what}"
            );
            assert_eq!((buf, len, hdr), before, "{what}: left alone");
        }
        // IPv4 is smoltcp's own business (it segments IPv4 itself).
        let (mut buf, mut len, mut hdr) =
            prepared(tcp_segment(false, 1000, TcpControl::None, 512, b"abc"));
        let (next, _, _) = prepared(tcp_segment(false, 1003, TcpControl::None, 512, b"def"));
        assert!(!coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next));
        // A FIN or SYN on the first frame stops merging too.
        let (mut buf, mut len, mut hdr) =
            prepared(tcp_segment(true, 1000, TcpControl::Fin, 512, b"abc"));
        let (next, _, _) = prepared(tcp_segment(true, 1004, TcpControl::None, 512, b"def"));
        assert!(!coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next));
    }

    #[test]
    fn super_segments_stop_at_64_kib() {
        let piece = pattern(1440, 9);
        let (mut buf, mut len, mut hdr) =
            prepared(tcp_segment(true, 0, TcpControl::None, 512, &piece));
        let mut merged = 1;
        loop {
            let (next, _, _) = prepared(tcp_segment(
                true,
                1440 * merged,
                TcpControl::None,
                512,
                &piece,
            ));
            if !coalesce_tcpv6(&mut buf, &mut len, &mut hdr, &next) {
                break;
            }
            merged += 1;
        }
        // 20 bytes of TCP header plus n * 1440 <= 65535.
        assert_eq!(merged, (65_535 - 20) / 1440);
        assert_eq!(len - 54, 20 + 1440 * merged as usize);
        assert_eq!(
            usize::from(u16::from_be_bytes([buf[18], buf[19]])),
            len - 54
        );
    }
}
