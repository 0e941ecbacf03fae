//! IPv4 reassembly of guest fragments.
//!
//! # Theory of operation
//!
//! A guest that sends a UDP datagram larger than its MTU (a 4 KiB DNS-over-UDP query, an
//! application using 8 KiB datagrams at MTU 1500) emits IPv4 fragments. UDP and ICMP are proxied
//! at frame level, so fragments are put back together here before classification. Datagrams are
//! keyed by (source, destination, protocol, identification) as RFC 791 prescribes; holes are
//! tracked by the bytes received so far, since the guest kernel never sends overlapping
//! fragments (and overlaps are handled by last-write-wins, which cannot corrupt memory).
//!
//! Bounded: at most [`MAX_DATAGRAMS`] in flight (the oldest is evicted), at most
//! [`MAX_DATAGRAM_LEN`] bytes each, and an incomplete datagram is dropped after
//! [`TIMEOUT_MS`]. Output is a whole IPv4 packet with a fresh header (no fragmentation flags,
//! correct total length and checksum).

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Ipv4Packet, Ipv4Repr};

/// Datagrams being reassembled at once.
pub const MAX_DATAGRAMS: usize = 16;
/// Largest reassembled datagram (the IPv4 maximum).
pub const MAX_DATAGRAM_LEN: usize = 65_535;
/// How long an incomplete datagram is kept (Linux uses 30 s; guests on a local tap deliver all
/// fragments within microseconds, so a short timeout bounds memory sooner).
pub const TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
}

#[derive(Debug)]
struct Partial {
    key: Key,
    header: Ipv4Repr,
    payload: Vec<u8>,
    received: usize,
    total: Option<usize>,
    started_ms: u64,
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

    /// Incomplete datagrams dropped (timeout, eviction, oversize).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Add one fragment (a whole IPv4 packet). Returns the reassembled packet when complete.
    pub fn push(&mut self, packet: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        self.expire(now_ms);
        let p = Ipv4Packet::new_checked(packet).ok()?;
        // Not Ipv4Repr::parse: without smoltcp's fragmentation feature it rejects fragments.
        let header = Ipv4Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: 0,
            hop_limit: p.hop_limit(),
        };
        let key = Key {
            src: p.src_addr(),
            dst: p.dst_addr(),
            proto: u8::from(p.next_header()),
            ident: p.ident(),
        };
        let offset = usize::from(p.frag_offset());
        let hl = usize::from(p.header_len());
        let end_of_packet = usize::from(p.total_len()).min(packet.len());
        let data = packet.get(hl..end_of_packet)?;
        let end = offset + data.len();
        if end > MAX_DATAGRAM_LEN - 20 {
            self.dropped += 1;
            self.partials.retain(|x| x.key != key);
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
                    header,
                    payload: Vec::new(),
                    received: 0,
                    total: None,
                    started_ms: now_ms,
                });
                self.partials.len() - 1
            }
        };
        let part = &mut self.partials[idx];
        if part.payload.len() < end {
            part.payload.resize(end, 0);
        }
        part.payload[offset..end].copy_from_slice(data);
        part.received += data.len();
        if !p.more_frags() {
            part.total = Some(end);
        }
        let total = part.total?;
        if part.received < total {
            return None;
        }
        let part = self.partials.remove(idx);
        let mut header = part.header;
        header.payload_len = total;
        let mut out = vec![0u8; 20 + total];
        let mut q = Ipv4Packet::new_unchecked(&mut out[..]);
        header.emit(&mut q, &ChecksumCapabilities::default());
        q.payload_mut().copy_from_slice(&part.payload[..total]);
        Some(out)
    }

    fn expire(&mut self, now_ms: u64) {
        let before = self.partials.len();
        self.partials
            .retain(|p| now_ms.saturating_sub(p.started_ms) < TIMEOUT_MS);
        self.dropped += (before - self.partials.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::emit::{Emitter, L2};
    use smoltcp::wire::{EthernetAddress, UdpPacket};

    fn fragments(len: usize) -> Vec<Vec<u8>> {
        let mut e = Emitter::new(1500);
        let l2 = L2 {
            src: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst: EthernetAddress([2, 0, 0, 0, 0, 2]),
        };
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut v = Vec::new();
        e.udp(
            l2,
            "10.0.2.100:5000".parse().unwrap(),
            "10.0.2.2:9".parse().unwrap(),
            &payload,
            &mut |f| v.push(f[14..].to_vec()),
        )
        .unwrap();
        v
    }

    fn check(whole: &[u8], len: usize) {
        let ip = Ipv4Packet::new_checked(whole).unwrap();
        assert!(ip.verify_checksum());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
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
}
