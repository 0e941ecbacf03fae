//! Reassembly of guest fragments, IPv4 and IPv6.
//!
//! # Theory of operation
//!
//! A guest that sends a UDP datagram larger than its MTU (a 4 KiB DNS-over-UDP query, an
//! application using 8 KiB datagrams at MTU 1500) emits fragments: IPv4 fragments, or IPv6
//! packets with a Fragment header (RFC 8200 §4.5). UDP and ICMP are proxied at frame level, so
//! fragments are put back together here before classification. Datagrams are keyed by
//! (source, destination, protocol, identification) for IPv4 (RFC 791) and (source,
//! destination, identification) for IPv6. Only a Fragment header right after the IPv6 header
//! is recognised (what a guest kernel sends for UDP); [`super::classify`] leaves other
//! extension-header chains to smoltcp.
//!
//! What has arrived is kept as a sorted list of disjoint byte runs, adjacent runs merged, so a
//! datagram is whole when one run covers it from 0 to the length the last fragment gave.
//! Guest input is untrusted, and a hostile sequence costs at most its own datagram:
//! - a fragment inside what has arrived (a duplicate) is ignored: bytes once received are never
//!   overwritten;
//! - a fragment that partly overlaps what has arrived discards the whole datagram (RFC 5722
//!   for IPv6; Linux does the same for IPv4);
//! - so does a non-last fragment whose length is not a multiple of 8, a last fragment that
//!   disagrees with the length known, or data past that length;
//! - more than [`MAX_RUNS`] disjoint runs (holes left on purpose) discard it too.
//!
//! Bounded: at most [`MAX_DATAGRAMS`] in flight across both families (the oldest is evicted),
//! at most [`MAX_DATAGRAM_LEN`] bytes each, and an incomplete datagram is dropped after
//! [`TIMEOUT_MS`]. Every discarded datagram is counted in [`Reassembler::dropped`]. Output is a
//! whole packet with a fresh header: IPv4 without fragmentation flags, correct total length and
//! checksum; IPv6 without the Fragment header, its next header the fragment header's.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, Ipv6Repr,
};

/// Datagrams being reassembled at once (both families together).
pub const MAX_DATAGRAMS: usize = 16;
/// Largest reassembled datagram (the IPv4 maximum; an IPv6 payload without a jumbogram option
/// is no larger).
pub const MAX_DATAGRAM_LEN: usize = 65_535;
/// How long an incomplete datagram is kept (Linux uses 30 s for IPv4, 60 s for IPv6; guests on
/// a local tap deliver all fragments within microseconds, so a short timeout bounds memory
/// sooner).
pub const TIMEOUT_MS: u64 = 5_000;
/// Disjoint runs of received bytes per datagram. A 64 KiB datagram at the IPv6 minimum MTU is
/// 53 fragments, which even in the worst order form at most 27 runs, and in order (what a
/// guest on a local tap sends) one; more means holes left on purpose.
pub const MAX_RUNS: usize = 64;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// The IPv6 Fragment header's length (RFC 8200 §4.5: fixed; its second byte is reserved).
const IPV6_FRAG_HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        ident: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ident: u32,
    },
}

/// The header the whole datagram gets (payload length filled in at the end).
#[derive(Debug, Clone, Copy)]
enum Header {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

/// One fragment, parsed.
struct Piece<'a> {
    key: Key,
    header: Header,
    /// Byte offset of `data` in the datagram.
    offset: usize,
    data: &'a [u8],
    more: bool,
}

#[derive(Debug)]
struct Partial {
    key: Key,
    /// From the first fragment (offset 0) once it has come.
    header: Option<Header>,
    payload: Vec<u8>,
    /// Received byte ranges: sorted, disjoint, not adjacent.
    runs: Vec<(usize, usize)>,
    total: Option<usize>,
    started_ms: u64,
}

/// Why a datagram is discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    Overlap,
    Inconsistent,
    Scattered,
}

impl Partial {
    /// Record `[start, end)`; `Ok(false)` for a duplicate (nothing new).
    fn add_run(&mut self, start: usize, end: usize) -> Result<bool, Discard> {
        if start == end {
            return Ok(false);
        }
        // Runs ending before `start` (not touching it) stay as they are.
        let i = self.runs.partition_point(|r| r.1 < start);
        if let Some(&(s, e)) = self.runs.get(i) {
            if s <= start && end <= e {
                return Ok(false);
            }
        }
        let (mut lo, mut hi, mut j) = (start, end, i);
        while let Some(&(s, e)) = self.runs.get(j) {
            if s > end {
                break;
            }
            if s < end && e > start {
                return Err(Discard::Overlap);
            }
            (lo, hi, j) = (lo.min(s), hi.max(e), j + 1);
        }
        self.runs.splice(i..j, [(lo, hi)]);
        if self.runs.len() > MAX_RUNS {
            return Err(Discard::Scattered);
        }
        Ok(true)
    }

    /// Take one fragment in; `Ok(true)` when the datagram is whole.
    fn add(&mut self, piece: &Piece<'_>) -> Result<bool, Discard> {
        let (offset, end) = (piece.offset, piece.offset + piece.data.len());
        if piece.more && piece.data.len() % 8 != 0 {
            return Err(Discard::Inconsistent);
        }
        let past_data = self.runs.last().is_some_and(|r| r.1 > end);
        match (self.total, piece.more) {
            (Some(t), false) if t != end => return Err(Discard::Inconsistent),
            (Some(t), true) if end > t => return Err(Discard::Inconsistent),
            (None, false) if past_data => return Err(Discard::Inconsistent),
            _ => {}
        }
        if self.add_run(offset, end)? {
            if self.payload.len() < end {
                self.payload.resize(end, 0);
            }
            self.payload[offset..end].copy_from_slice(piece.data);
            if offset == 0 {
                self.header = Some(piece.header);
            }
        }
        if !piece.more {
            self.total = Some(end);
        }
        Ok(self
            .total
            .is_some_and(|t| t > 0 && self.header.is_some() && self.runs == [(0, t)]))
    }
}

/// The reassembler.
#[derive(Debug, Default)]
pub struct Reassembler {
    partials: Vec<Partial>,
    dropped: u64,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Incomplete datagrams dropped (timeout, eviction, oversize, overlap, inconsistency).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Add one fragment (a whole IPv4 packet, or an IPv6 packet whose next header is a
    /// Fragment header). Returns the reassembled packet when complete.
    pub fn push(&mut self, packet: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        self.expire(now_ms);
        let piece = match packet.first().map(|b| b >> 4) {
            Some(4) => parse_v4(packet)?,
            Some(6) => parse_v6(packet)?,
            _ => return None,
        };
        let max = match piece.header {
            Header::V4(_) => MAX_DATAGRAM_LEN - IPV4_HEADER_LEN,
            Header::V6(_) => MAX_DATAGRAM_LEN,
        };
        let key = piece.key;
        if piece.offset + piece.data.len() > max {
            self.discard(key);
            return None;
        }
        let idx = match self.partials.iter().position(|x| x.key == key) {
            Some(i) => i,
            None => {
                if self.partials.len() >= MAX_DATAGRAMS {
                    self.partials.remove(0);
                    self.dropped += 1;
                }
                self.partials.push(Partial {
                    key,
                    header: None,
                    payload: Vec::new(),
                    runs: Vec::new(),
                    total: None,
                    started_ms: now_ms,
                });
                self.partials.len() - 1
            }
        };
        match self.partials[idx].add(&piece) {
            Ok(false) => None,
            Ok(true) => whole(self.partials.remove(idx)),
            Err(why) => {
                log::trace!("guest fragments discarded: {why:?}");
                self.discard(key);
                None
            }
        }
    }

    /// Drop the datagram `key` names (counted even if none was held: the fragment was).
    fn discard(&mut self, key: Key) {
        self.dropped += 1;
        self.partials.retain(|x| x.key != key);
    }

    fn expire(&mut self, now_ms: u64) {
        let before = self.partials.len();
        self.partials
            .retain(|p| now_ms.saturating_sub(p.started_ms) < TIMEOUT_MS);
        self.dropped += (before - self.partials.len()) as u64;
    }
}

fn parse_v4(packet: &[u8]) -> Option<Piece<'_>> {
    let p = Ipv4Packet::new_checked(packet).ok()?;
    // Not Ipv4Repr::parse: without smoltcp's fragmentation feature it rejects fragments.
    let header = Ipv4Repr {
        src_addr: p.src_addr(),
        dst_addr: p.dst_addr(),
        next_header: p.next_header(),
        payload_len: 0,
        hop_limit: p.hop_limit(),
    };
    let key = Key::V4 {
        src: p.src_addr(),
        dst: p.dst_addr(),
        proto: u8::from(p.next_header()),
        ident: p.ident(),
    };
    let hl = usize::from(p.header_len());
    let end_of_packet = usize::from(p.total_len()).min(packet.len());
    Some(Piece {
        key,
        header: Header::V4(header),
        offset: usize::from(p.frag_offset()),
        data: packet.get(hl..end_of_packet)?,
        more: p.more_frags(),
    })
}

fn parse_v6(packet: &[u8]) -> Option<Piece<'_>> {
    let p = Ipv6Packet::new_checked(packet).ok()?;
    if p.next_header() != IpProtocol::Ipv6Frag {
        return None;
    }
    let end_of_packet = (IPV6_HEADER_LEN + usize::from(p.payload_len())).min(packet.len());
    let body = packet.get(IPV6_HEADER_LEN..end_of_packet)?;
    let ext = Ipv6ExtHeader::new_checked(body).ok()?;
    let frag = Ipv6FragmentHeader::new_checked(ext.payload()).ok()?;
    let header = Ipv6Repr {
        src_addr: p.src_addr(),
        dst_addr: p.dst_addr(),
        next_header: ext.next_header(),
        payload_len: 0,
        hop_limit: p.hop_limit(),
    };
    let key = Key::V6 {
        src: p.src_addr(),
        dst: p.dst_addr(),
        ident: frag.ident(),
    };
    Some(Piece {
        key,
        header: Header::V6(header),
        // In 8-byte units.
        offset: usize::from(frag.frag_offset()) * 8,
        data: body.get(IPV6_FRAG_HEADER_LEN..)?,
        more: frag.more_frags(),
    })
}

/// The whole packet of a complete datagram (`None` without its first fragment's header, which
/// [`Partial::add`] never calls complete).
fn whole(part: Partial) -> Option<Vec<u8>> {
    let total = part.total.unwrap_or(0);
    let data = part.payload.get(..total).unwrap_or(&[]);
    match part.header {
        Some(Header::V4(mut h)) => {
            h.payload_len = data.len();
            let mut out = vec![0u8; IPV4_HEADER_LEN + data.len()];
            let mut q = Ipv4Packet::new_unchecked(&mut out[..]);
            h.emit(&mut q, &ChecksumCapabilities::default());
            q.payload_mut().copy_from_slice(data);
            Some(out)
        }
        Some(Header::V6(mut h)) => {
            h.payload_len = data.len();
            let mut out = vec![0u8; IPV6_HEADER_LEN + data.len()];
            let mut q = Ipv6Packet::new_unchecked(&mut out[..]);
            h.emit(&mut q);
            q.payload_mut().copy_from_slice(data);
            Some(out)
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::emit::{Emitter, L2};
    use smoltcp::wire::{EthernetAddress, UdpPacket};

    /// The emitter's fragments of a UDP datagram `src -> dst` with `len` payload bytes.
    fn emitted(src: &str, dst: &str, len: usize) -> Vec<Vec<u8>> {
        let mut e = Emitter::new(1500);
        let l2 = L2 {
            src: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst: EthernetAddress([2, 0, 0, 0, 0, 2]),
        };
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut v = Vec::new();
        e.udp(
            l2,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            &payload,
            &mut |f| v.push(f[14..].to_vec()),
        )
        .unwrap();
        v
    }

    fn fragments(len: usize) -> Vec<Vec<u8>> {
        emitted("10.0.2.100:5000", "10.0.2.2:9", len)
    }

    fn fragments6(len: usize) -> Vec<Vec<u8>> {
        emitted("[fd00::100]:5000", "[2001:db8::1]:9", len)
    }

    fn check(whole: &[u8], len: usize) {
        let ip = Ipv4Packet::new_checked(whole).unwrap();
        assert!(ip.verify_checksum());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        check_payload(ip.payload(), len);
    }

    /// A UDP datagram whose payload is the test pattern, `len` bytes.
    fn check_payload(datagram: &[u8], len: usize) {
        let udp = UdpPacket::new_checked(datagram).unwrap();
        assert_eq!(udp.payload().len(), len);
        assert!(udp
            .payload()
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn in_order_and_reversed() {
        let frags = fragments(5000);
        assert_eq!(frags.len(), 4);
        let mut r = Reassembler::new();
        let mut out = None;
        for f in &frags {
            out = r.push(f, 0);
        }
        check(&out.unwrap(), 5000);
        let mut out = None;
        for f in frags.iter().rev() {
            assert!(out.is_none());
            out = r.push(f, 0);
        }
        check(&out.unwrap(), 5000);
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn incomplete_datagrams_expire_and_are_bounded() {
        let frags = fragments(3000);
        let mut r = Reassembler::new();
        assert!(r.push(&frags[0], 0).is_none());
        // Too late for the rest.
        assert!(r.push(&frags[1], TIMEOUT_MS + 1).is_none());
        assert!(r.push(&frags[2], TIMEOUT_MS + 2).is_none());
        assert!(r.dropped() >= 1);
        // Many distinct incomplete datagrams: bounded.
        for i in 0..(MAX_DATAGRAMS as u16 * 2) {
            let mut f = frags[0].clone();
            let mut p = Ipv4Packet::new_unchecked(&mut f[..]);
            p.set_ident(1000 + i);
            r.push(&f, 100);
        }
        assert!(r.partials.len() <= MAX_DATAGRAMS);
    }

    #[test]
    fn garbage_is_ignored() {
        let mut r = Reassembler::new();
        assert!(r.push(&[], 0).is_none());
        assert!(r.push(&[0x45; 30], 0).is_none());
    }
    /// An IPv6 fragment `fd00::100 -> 2001:db8::1` of datagram `ident`, carrying `data` at
    /// byte `offset` (a multiple of 8).
    fn frag6(ident: u32, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
        let len = IPV6_FRAG_HEADER_LEN + data.len();
        let mut out = vec![0u8; IPV6_HEADER_LEN + len];
        let ip = Ipv6Repr {
            src_addr: "fd00::100".parse().unwrap(),
            dst_addr: "2001:db8::1".parse().unwrap(),
            next_header: IpProtocol::Ipv6Frag,
            payload_len: len,
            hop_limit: 64,
        };
        let mut p = Ipv6Packet::new_unchecked(&mut out[..]);
        ip.emit(&mut p);
        let body = p.payload_mut();
        let mut ext = Ipv6ExtHeader::new_unchecked(&mut body[..IPV6_FRAG_HEADER_LEN]);
        ext.set_next_header(IpProtocol::Udp);
        ext.set_header_len(0);
        let mut f = Ipv6FragmentHeader::new_unchecked(ext.payload_mut());
        f.set_frag_offset(offset / 8);
        f.set_more_frags(more);
        f.set_ident(ident);
        body[IPV6_FRAG_HEADER_LEN..].copy_from_slice(data);
        out
    }

    fn check6(whole: &[u8], len: usize) {
        let ip = Ipv6Packet::new_checked(whole).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(usize::from(ip.payload_len()), 8 + len);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &smoltcp::wire::IpAddress::Ipv6(ip.src_addr()),
            &smoltcp::wire::IpAddress::Ipv6(ip.dst_addr())
        ));
        check_payload(ip.payload(), len);
    }

    #[test]
    fn ipv6_in_order_reversed_and_shuffled() {
        let frags = fragments6(9000);
        assert_eq!(frags.len(), 7, "9008 bytes in chunks of 1448");
        let mut r = Reassembler::new();
        for order in [
            (0..7).collect::<Vec<_>>(),
            (0..7).rev().collect(),
            vec![3, 0, 6, 1, 5, 2, 4],
        ] {
            let mut out = None;
            for (n, &i) in order.iter().enumerate() {
                assert!(out.is_none(), "complete after {n} of 7");
                out = r.push(&frags[i], 0);
            }
            check6(&out.unwrap(), 9000);
        }
        assert_eq!(r.dropped(), 0);
        assert!(r.partials.is_empty());
        // An atomic fragment (offset 0, no more) is a whole datagram at once.
        let atomic = r.push(&frag6(9, 0, false, b"12345678"), 0).unwrap();
        assert_eq!(
            Ipv6Packet::new_checked(&atomic[..]).unwrap().payload(),
            b"12345678"
        );
    }

    #[test]
    fn families_and_idents_do_not_mix() {
        let v4 = fragments(3000);
        let v6 = fragments6(3000);
        let mut r = Reassembler::new();
        // Interleaved, and both idents 1 (each emitter starts there).
        assert!(r.push(&v4[0], 0).is_none());
        assert!(r.push(&v6[0], 0).is_none());
        assert!(r.push(&v4[1], 0).is_none());
        assert!(r.push(&v6[1], 0).is_none());
        check(&r.push(&v4[2], 0).unwrap(), 3000);
        check6(&r.push(&v6[2], 0).unwrap(), 3000);
    }

    #[test]
    fn duplicates_are_ignored_and_never_overwrite() {
        let mut r = Reassembler::new();
        let (a, b) = ([1u8; 16], [2u8; 8]);
        assert!(r.push(&frag6(7, 0, true, &a), 0).is_none());
        // The same fragment again, and one inside it with other bytes: ignored.
        assert!(r.push(&frag6(7, 0, true, &a), 0).is_none());
        assert!(r.push(&frag6(7, 8, true, &[9u8; 8]), 0).is_none());
        let whole = r.push(&frag6(7, 16, false, &b), 0).unwrap();
        let ip = Ipv6Packet::new_checked(&whole[..]).unwrap();
        assert_eq!(ip.payload(), [&a[..], &b[..]].concat());
        assert_eq!(r.dropped(), 0);
    }

    #[test]
    fn hostile_fragments_discard_their_datagram() {
        let d = [0u8; 64];
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "partial overlap",
                vec![frag6(1, 0, true, &d[..16]), frag6(1, 8, true, &d[..16])],
            ),
            (
                "non-last length not a multiple of 8",
                vec![frag6(1, 0, true, &d[..12])],
            ),
            (
                "two different lengths",
                vec![frag6(1, 16, false, &d[..8]), frag6(1, 32, false, &d[..8])],
            ),
            (
                "data past the length",
                vec![frag6(1, 8, false, &d[..8]), frag6(1, 16, true, &d[..8])],
            ),
            (
                "last fragment shorter than data received",
                vec![frag6(1, 32, true, &d[..8]), frag6(1, 0, false, &d[..8])],
            ),
            ("past 64 KiB", vec![frag6(1, 65_528, false, &d[..16])]),
        ];
        for (what, frags) in cases {
            let mut r = Reassembler::new();
            for f in &frags {
                assert!(r.push(f, 0).is_none(), "{what}");
            }
            assert_eq!(r.dropped(), 1, "{what}");
            assert!(r.partials.is_empty(), "{what}");
        }
        // Holes on purpose: every other 8 bytes, past MAX_RUNS runs.
        let mut r = Reassembler::new();
        for i in 0..=MAX_RUNS as u16 {
            assert!(r.push(&frag6(2, i * 16, true, &d[..8]), 0).is_none());
        }
        assert_eq!(r.dropped(), 1);
        assert!(r.partials.is_empty());
        // Many datagrams at once: bounded, the oldest evicted.
        for ident in 0..(MAX_DATAGRAMS as u32 * 3) {
            r.push(&frag6(ident, 0, true, &d[..8]), 1);
        }
        assert_eq!(r.partials.len(), MAX_DATAGRAMS);
        // And they time out.
        r.push(&frag6(999, 0, true, &d[..8]), 1 + TIMEOUT_MS);
        assert_eq!(r.partials.len(), 1);
    }

    #[test]
    fn truncated_and_mangled_ipv6_never_panic() {
        let mut r = Reassembler::new();
        let good = frag6(5, 0, true, &[7u8; 64]);
        for cut in 0..good.len() {
            let _ = r.push(&good[..cut], 0);
        }
        // A payload length larger than the packet, a non-zero reserved byte, every byte set.
        let mut f = good.clone();
        Ipv6Packet::new_unchecked(&mut f[..]).set_payload_len(60_000);
        let _ = r.push(&f, 0);
        let mut f = good.clone();
        f[IPV6_HEADER_LEN + 1] = 0xff;
        let _ = r.push(&f, 0);
        let mut x: u32 = 7;
        for _ in 0..2000 {
            let mut f = good.clone();
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x >> 8) as usize % f.len();
                f[i] = (x >> 24) as u8;
            }
            let _ = r.push(&f, 0);
        }
        assert!(r.partials.len() <= MAX_DATAGRAMS);
    }
}
