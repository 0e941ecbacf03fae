//! Frame queues between the tap and smoltcp.
//!
//! # Theory of operation
//!
//! [`Queues`] is the `smoltcp::phy::Device` the interface polls. It performs no I/O itself: the
//! runtime reads frames from the tap into [`Queues::rx_buffer`]s and pushes them with
//! [`Queues::push_rx`]; smoltcp consumes each at once (`Stack::ingress`); frames smoltcp (or the virtual
//! hosts) emit land in the transmit queue, which the runtime drains into the tap with
//! [`Queues::flush`]. Keeping I/O outside makes the stack testable over plain memory and lets
//! the runtime batch reads and writes.
//!
//! Invariants:
//! - Buffers are recycled through two small pools, so steady state does no allocation per frame.
//! - Ingress per wake-up is bounded by [`RX_BATCH`] frames, each handed to smoltcp on its own.
//! - Nothing is dropped silently on the way to the guest. When the tap would block, frames stay
//!   queued (up to [`TX_QUEUE_LIMIT`]); once the queue is full, `transmit` returns `None`, which
//!   smoltcp treats as back-pressure (TCP keeps the data and retries), instead of being written
//!   into a full tap queue and lost (smoltcp's minimum RTO is one second, so a lost frame costs a
//!   second of throughput). Frames emitted outside smoltcp (virtual-host replies) that find the
//!   queue full are counted in [`Counters::tx_dropped`].
//!
//! # Offloads
//!
//! When the tap carries `virtio_net_hdr`s ([`TapMode::vnet_hdr_len`] > 0, see [`vnet`]), the
//! device tells smoltcp it segments and checksums TCP itself: smoltcp then emits TCP segments
//! of up to 64 KiB whatever the MTU, without computing their checksum, and
//! [`TxToken::consume`] turns each into a partial-checksum frame (with GSO when it is larger
//! than the guest's MSS). The guest takes it whole, so at MTU 1500 one tap write carries what
//! used to take 45. smoltcp cannot do this for IPv6, so there consecutive MSS-sized segments of
//! one connection are merged into the frame queued before them, as long as they simply continue
//! it ([`vnet::coalesce_tcpv6`]): the same result, built on the way out. In the other direction, with [`TapMode::rx_gso`] the guest sends its own
//! super-segments (receive buffers are then sized for 64 KiB whatever the MTU), and the
//! partial checksums it leaves are never verified here (they never are: see `capabilities`).

pub mod vnet;

use std::collections::VecDeque;
use std::io;

use std::num::NonZeroUsize;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use vnet::VnetHdr;

/// Ethernet header length (no VLAN tag, no FCS).
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Frames read from the tap per batch before the stack is polled. Large enough to amortise the
/// poll, small enough to keep latency and the transient memory bounded (64 x 64 KiB worst case).
pub const RX_BATCH: usize = 64;
/// Frames waiting for the tap before the stack is told to hold back. The kernel's own tap
/// queue sits behind this; 512 frames is ~0.75 MB at MTU 1500 and covers a full TCP window burst.
pub const TX_QUEUE_LIMIT: usize = 512;
/// Spare buffers kept per pool; more are freed, bounding idle memory.
pub const POOL_KEEP: usize = 32;
/// Largest IPv4 TCP super-segment, as an Ethernet frame: the IPv4 total length is 16 bits.
pub const GSO_FRAME_V4: usize = ETHERNET_HEADER_LEN + 65535;
/// Largest IPv6 TCP super-segment, as an Ethernet frame: the payload length is 16 bits.
pub const GSO_FRAME_V6: usize = ETHERNET_HEADER_LEN + 40 + 65535;

/// How frames cross the tap.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapMode {
    /// Bytes of `virtio_net_hdr` before every frame (0 for plain frames, else
    /// [`vnet::HDR_LEN`]..=[`vnet::MAX_HDR_LEN`]).
    pub vnet_hdr_len: usize,
    /// TCP segmentation and checksums towards the guest are left to its kernel (needs a header).
    pub tx_offload: bool,
    /// The guest may send TCP super-segments (`TUNSETOFFLOAD` with TSO was accepted).
    pub rx_gso: bool,
}

impl TapMode {
    /// Whether frames to the guest carry offloads.
    pub fn tx_offload(&self) -> bool {
        self.tx_offload && self.vnet_hdr_len >= vnet::HDR_LEN
    }
}

/// Frame counters, for logs and the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Frames read from the guest.
    pub rx_frames: u64,
    /// Frames written to the guest.
    pub tx_frames: u64,
    /// Bytes of the frames read from the guest (without the `virtio_net_hdr`).
    pub rx_bytes: u64,
    /// Bytes of the frames written to the guest (without the `virtio_net_hdr`).
    pub tx_bytes: u64,
    /// Frames for the guest dropped because the transmit queue was full.
    pub tx_dropped: u64,
    /// Times a tap write would have blocked (frames were kept and retried).
    pub tx_blocked: u64,
    /// IPv6 TCP segments merged into the frame before them (see [`vnet::coalesce_tcpv6`]).
    pub tx_coalesced: u64,
}

/// In-memory frame queues implementing `smoltcp::phy::Device`.
#[derive(Debug)]
pub struct Queues {
    rx: VecDeque<Vec<u8>>,
    rx_pool: Vec<Vec<u8>>,
    tx: TxSide,
    mtu: usize,
    mode: TapMode,
    counters: Counters,
}

#[derive(Debug)]
struct TxSide {
    /// Frames for the guest.
    queue: VecDeque<TxFrame>,
    pool: Vec<Vec<u8>>,
    offload: bool,
    /// Segments merged into the frame before them.
    coalesced: u64,
}

/// A frame for the guest: the first `len` bytes of `buf`, written with `hdr`. Buffers keep
/// their full length between uses (the frame length is kept apart), so reusing one costs no
/// zero-fill of up to 64 KiB: that was 7% of tapir's CPU time at MTU 65520.
#[derive(Debug)]
struct TxFrame {
    hdr: VnetHdr,
    buf: Vec<u8>,
    len: usize,
}

impl TxFrame {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Bytes at the start of a reused transmit buffer that are zeroed before each use: every
/// header a frame can carry (Ethernet 14, IPv6 40 or IPv4 up to 60, TCP up to 60 or an ICMP
/// header with its quote). Emitters write every byte of a frame, but header padding they skip
/// (after a TCP end-of-options, say) is then zero, as in a fresh buffer, never stale.
const ZEROED_PREFIX: usize = 256;

impl TxSide {
    /// A buffer of at least `len` bytes whose first [`ZEROED_PREFIX`] bytes are zero.
    fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        if b.len() < len {
            b.clear();
            b.resize(len, 0);
        } else {
            let zero = len.min(ZEROED_PREFIX);
            b[..zero].fill(0);
        }
        b
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_KEEP {
        pool.push(buf);
    }
}

impl Queues {
    /// Queues for an interface with IP MTU `mtu` on a tap used as `mode` says.
    pub fn new(mtu: usize, mode: TapMode) -> Self {
        Queues {
            rx: VecDeque::with_capacity(RX_BATCH),
            rx_pool: Vec::new(),
            tx: TxSide {
                queue: VecDeque::new(),
                pool: Vec::new(),
                offload: mode.tx_offload(),
                coalesced: 0,
            },
            mtu,
            mode,
            counters: Counters::default(),
        }
    }

    /// How frames cross the tap.
    pub fn mode(&self) -> TapMode {
        self.mode
    }

    /// Largest Ethernet frame on the link (IP MTU + header): what the stack may send unless
    /// it is a TCP super-segment.
    pub fn frame_capacity(&self) -> usize {
        self.mtu + ETHERNET_HEADER_LEN
    }

    /// Largest Ethernet frame the guest may send: a whole TCP super-segment when the guest
    /// segments nothing, else [`Queues::frame_capacity`].
    pub fn rx_capacity(&self) -> usize {
        if self.mode.rx_gso {
            self.frame_capacity().max(GSO_FRAME_V6)
        } else {
            self.frame_capacity()
        }
    }

    /// A cleared buffer with room for one whole frame, for the runtime to read into.
    pub fn rx_buffer(&mut self) -> Vec<u8> {
        let cap = self.rx_capacity();
        let mut b = self.rx_pool.pop().unwrap_or_default();
        b.clear();
        b.reserve_exact(cap);
        b
    }

    /// Give back a buffer that was not queued.
    pub fn recycle_rx(&mut self, buf: Vec<u8>) {
        recycle(&mut self.rx_pool, buf);
    }

    /// Count one frame of `len` bytes read from the guest (whoever ends up handling it).
    pub fn count_rx(&mut self, len: usize) {
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += len as u64;
    }

    /// Queue a frame from the guest for the stack.
    pub fn push_rx(&mut self, frame: Vec<u8>) {
        self.rx.push_back(frame);
    }

    /// Number of frames waiting for the stack.
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    /// Queue a frame for the guest that was built outside smoltcp. Returns false (and counts a
    /// drop) if the transmit queue is full.
    pub fn push_tx(&mut self, frame: &[u8]) -> bool {
        if self.tx.queue.len() >= TX_QUEUE_LIMIT {
            self.counters.tx_dropped += 1;
            return false;
        }
        let mut b = self.tx.take_buffer(frame.len());
        b[..frame.len()].copy_from_slice(frame);
        self.tx.queue.push_back(TxFrame {
            hdr: VnetHdr::default(),
            buf: b,
            len: frame.len(),
        });
        true
    }

    /// Number of frames waiting for the tap.
    pub fn tx_pending(&self) -> usize {
        self.tx.queue.len()
    }

    /// Whether the transmit queue has room (the stack may emit).
    pub fn tx_has_room(&self) -> bool {
        self.tx.queue.len() < TX_QUEUE_LIMIT
    }

    /// Write queued frames with `write(header, frame)` until the queue is empty or `write`
    /// reports `WouldBlock` (the frame is kept for the next flush). `header` is the frame's
    /// `virtio_net_hdr` ([`TapMode::vnet_hdr_len`] bytes, empty for plain frames). Other errors
    /// are returned; the failing frame is dropped and counted so one bad frame cannot wedge the
    /// queue.
    pub fn flush(
        &mut self,
        mut write: impl FnMut(&[u8], &[u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        let hdr_len = self.mode.vnet_hdr_len.min(vnet::MAX_HDR_LEN);
        let mut hdr = [0u8; vnet::MAX_HDR_LEN];
        while let Some(frame) = self.tx.queue.front() {
            if hdr_len > 0 {
                hdr[..vnet::HDR_LEN].copy_from_slice(&frame.hdr.to_bytes());
            }
            match write(&hdr[..hdr_len], frame.bytes()) {
                Ok(_) => {
                    self.counters.tx_frames += 1;
                    self.counters.tx_bytes += frame.len as u64;
                    if let Some(f) = self.tx.queue.pop_front() {
                        recycle(&mut self.tx.pool, f.buf);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.counters.tx_blocked += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.counters.tx_dropped += 1;
                    if let Some(f) = self.tx.queue.pop_front() {
                        recycle(&mut self.tx.pool, f.buf);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Frame counters.
    pub fn counters(&self) -> Counters {
        Counters {
            tx_coalesced: self.tx.coalesced,
            ..self.counters
        }
    }

    /// Pop the oldest frame for the guest (tests and in-memory peers). A frame with a partial
    /// checksum is completed, so the caller sees what the guest's kernel would accept; a
    /// super-segment stays whole.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        let TxFrame {
            hdr: h,
            buf: mut f,
            len,
        } = self.tx.queue.pop_front()?;
        f.truncate(len);
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        if h.flags & vnet::F_NEEDS_CSUM != 0 {
            let _ = vnet::complete_checksum(&mut f, &h);
        }
        Some(f)
    }
}

/// Receive token: one queued frame.
pub struct RxToken<'a> {
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.buf);
        recycle(self.pool, self.buf);
        r
    }
}

/// Transmit token: appends one frame to the transmit queue.
pub struct TxToken<'a> {
    side: &'a mut TxSide,
    /// Payload bytes per segment smoltcp asked for (a super-segment), if any.
    segment: Option<u16>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut b = self.side.take_buffer(len);
        let r = f(&mut b[..len]);
        // With offloads smoltcp left TCP checksums to us: hand them (and any segmentation) to
        // the guest's kernel. Other frames carry complete checksums and an empty header.
        let hdr = if self.side.offload {
            vnet::tcp_tx_header(&mut b[..len], self.segment).unwrap_or_default()
        } else {
            VnetHdr::default()
        };
        // IPv6 TCP segments that continue the frame queued just before become one
        // super-segment (smoltcp cannot emit those for IPv6; see vnet::coalesce_tcpv6).
        if hdr.gso_type == vnet::GSO_NONE && hdr.flags & vnet::F_NEEDS_CSUM != 0 {
            if let Some(prev) = self.side.queue.back_mut() {
                if vnet::coalesce_tcpv6(&mut prev.buf, &mut prev.len, &mut prev.hdr, &b[..len]) {
                    self.side.coalesced += 1;
                    recycle(&mut self.side.pool, b);
                    return r;
                }
            }
        }
        self.side.queue.push_back(TxFrame { hdr, buf: b, len });
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.segment = meta.segmentation_offload_size.map(|s| s.get());
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // A reply may be generated while consuming; only hand out a frame if it can be answered.
        if self.tx.queue.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        let buf = self.rx.pop_front()?;
        Some((
            RxToken {
                buf,
                pool: &mut self.rx_pool,
            },
            TxToken {
                side: &mut self.tx,
                segment: None,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.queue.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        Some(TxToken {
            side: &mut self.tx,
            segment: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_capacity();
        caps.max_burst_size = None;
        // Frames from the tap were built by the guest kernel, which checksums them (or marks them
        // as locally generated, or leaves a partial checksum with offloads): skip verification
        // on receive, compute on transmit - except TCP with offloads, which the guest's kernel
        // treats as checksummed (see `TxToken::consume`).
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.udp = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.icmpv4 = Checksum::Tx;
        ck.icmpv6 = Checksum::Tx;
        if self.mode.tx_offload() {
            ck.tcp = Checksum::None;
            caps.segmentation.tcpv4 = NonZeroUsize::new(GSO_FRAME_V4);
            // Not for IPv6: smoltcp 0.14's IPv6 egress neither passes the segment size on
            // (`set_meta`) nor exempts super-segments from its MTU check, so it would drop
            // every one. IPv6 TCP gets MSS-sized segments with checksum offload, which
            // `TxToken::consume` merges into super-segments itself (vnet::coalesce_tcpv6).
            caps.segmentation.tcpv6 = None;
        }
        caps.checksum = ck;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{Device, RxToken as _, TxToken as _};

    #[test]
    fn rx_roundtrip_and_recycle() {
        let mut q = Queues::new(1500, TapMode::default());
        let mut b = q.rx_buffer();
        assert!(b.capacity() >= 1514);
        b.extend_from_slice(&[1, 2, 3]);
        q.push_rx(b);
        let (rx, _tx) = q.receive(Instant::ZERO).unwrap();
        assert_eq!(rx.consume(|f| f.to_vec()), vec![1, 2, 3]);
        assert!(q.receive(Instant::ZERO).is_none());
        assert_eq!(q.rx_pool.len(), 1, "buffer recycled");
    }

    #[test]
    fn tx_backpressure_instead_of_drop() {
        let mut q = Queues::new(1500, TapMode::default());
        for _ in 0..TX_QUEUE_LIMIT {
            q.transmit(Instant::ZERO)
                .unwrap()
                .consume(60, |b| b.fill(7));
        }
        assert!(
            q.transmit(Instant::ZERO).is_none(),
            "full queue holds the stack back"
        );
        assert!(!q.push_tx(&[0; 60]));
        assert_eq!(q.counters().tx_dropped, 1);
        // A tap that takes two frames then blocks.
        let mut taken = 0;
        q.flush(|_, _| {
            if taken < 2 {
                taken += 1;
                Ok(60)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        })
        .unwrap();
        assert_eq!(q.tx_pending(), TX_QUEUE_LIMIT - 2);
        assert_eq!(q.counters().tx_blocked, 1);
        assert!(q.transmit(Instant::ZERO).is_some());
        q.flush(|_, f| Ok(f.len())).unwrap();
        assert_eq!(q.tx_pending(), 0);
        assert_eq!(q.counters().tx_frames, TX_QUEUE_LIMIT as u64);
    }

    /// An IPv4 TCP frame of `payload` bytes with a zero checksum, as smoltcp emits it when TCP
    /// checksums are offloaded.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&u16::try_from(40 + payload).unwrap().to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 2, 2]);
        f[30..34].copy_from_slice(&[10, 0, 2, 100]);
        f[34 + 12] = 0x50;
        f
    }

    #[test]
    fn offload_mode_advertises_segmentation_and_writes_headers() {
        let mode = TapMode {
            vnet_hdr_len: vnet::HDR_LEN,
            tx_offload: true,
            rx_gso: true,
        };
        let mut q = Queues::new(1500, mode);
        let caps = q.capabilities();
        assert_eq!(caps.max_transmission_unit, 1514);
        assert!(
            !caps.checksum.tcp.tx(),
            "smoltcp leaves TCP checksums to the guest"
        );
        assert_eq!(caps.segmentation.tcpv4.map(|n| n.get()), Some(GSO_FRAME_V4));
        assert!(
            q.rx_buffer().capacity() >= GSO_FRAME_V6,
            "room for a super-segment"
        );

        // A super-segment smoltcp asked to be cut into 1460-byte segments.
        let frame = tcp_frame(20000);
        let mut tok = q.transmit(Instant::ZERO).unwrap();
        let mut meta = PacketMeta::default();
        meta.segmentation_offload_size = std::num::NonZeroU16::new(1460);
        tok.set_meta(meta);
        tok.consume(frame.len(), |b| b.copy_from_slice(&frame));
        // A non-TCP frame (ARP) gets an empty header.
        q.push_tx(&[0u8; 42]);
        let mut seen = Vec::new();
        q.flush(|h, f| {
            seen.push((VnetHdr::from_bytes(h).unwrap(), f.len()));
            Ok(h.len() + f.len())
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        let (h, len) = seen[0];
        assert_eq!(len, frame.len());
        assert_eq!(h.flags, vnet::F_NEEDS_CSUM);
        assert_eq!((h.gso_type, h.gso_size), (vnet::GSO_TCPV4, 1460));
        assert_eq!((h.csum_start, h.csum_offset, h.hdr_len), (34, 16, 54));
        assert_eq!(seen[1], (VnetHdr::default(), 42));
    }

    #[test]
    fn plain_mode_writes_no_header_and_checksums_tcp() {
        let mut q = Queues::new(1500, TapMode::default());
        let caps = q.capabilities();
        assert!(caps.checksum.tcp.tx());
        assert!(caps.segmentation.tcpv4.is_none());
        assert_eq!(q.rx_buffer().capacity(), 1514);
        q.push_tx(&tcp_frame(10));
        q.flush(|h, _| {
            assert!(h.is_empty());
            Ok(0)
        })
        .unwrap();
    }

    #[test]
    fn reused_buffers_keep_frame_length_and_zero_headers() {
        let mut q = Queues::new(1500, TapMode::default());
        q.transmit(Instant::ZERO)
            .unwrap()
            .consume(1514, |b| b.fill(0xaa));
        q.flush(|_, f| Ok(f.len())).unwrap();
        // The same buffer comes back for a smaller frame whose emitter skips bytes 0..20.
        q.transmit(Instant::ZERO).unwrap().consume(100, |b| {
            assert_eq!(b.len(), 100);
            b[20..].fill(0x55);
        });
        let f = q.pop_tx().unwrap();
        assert_eq!(f.len(), 100);
        assert!(f[..20].iter().all(|&x| x == 0), "no stale header bytes");
        assert!(f[20..].iter().all(|&x| x == 0x55));
        // And a frame queued from outside smoltcp is exactly what was given.
        q.push_tx(&[1, 2, 3]);
        assert_eq!(q.pop_tx().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn flush_error_drops_only_failing_frame() {
        let mut q = Queues::new(1500, TapMode::default());
        q.push_tx(&[1]);
        q.push_tx(&[2]);
        let err = q.flush(|_, _| Err(io::Error::from_raw_os_error(libc::EIO)));
        assert!(err.is_err());
        assert_eq!(q.tx_pending(), 1);
    }
}
