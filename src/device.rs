//! Frame queues between the tap and smoltcp.
//!
//! # Theory of operation
//!
//! [`Queues`] is the `smoltcp::phy::Device` the interface polls. It performs no I/O itself: the
//! runtime reads frames from the tap into [`Queues::rx_buffer`]s and pushes them with
//! [`Queues::push_rx`]; smoltcp consumes them in `Interface::poll`; frames smoltcp (or the virtual
//! hosts) emit land in the transmit queue, which the runtime drains into the tap with
//! [`Queues::flush`]. Keeping I/O outside makes the stack testable over plain memory and lets
//! the runtime batch reads and writes.
//!
//! Invariants:
//! - Buffers are recycled through two small pools, so steady state does no allocation per frame.
//! - Ingress per `poll` is bounded by [`RX_BATCH`] (smoltcp drains all ingress before egress).
//! - Nothing is dropped silently on the way to the guest. When the tap would block, frames stay
//!   queued (up to [`TX_QUEUE_LIMIT`]); once the queue is full, `transmit` returns `None`, which
//!   smoltcp treats as back-pressure (TCP keeps the data and retries), instead of being written
//!   into a full tap queue and lost (smoltcp's minimum RTO is one second, so a lost frame costs a
//!   second of throughput). Frames emitted outside smoltcp (virtual-host replies) that find the
//!   queue full are counted in [`Counters::tx_dropped`].

use std::collections::VecDeque;
use std::io;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

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

/// Frame counters, for logs and the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Frames read from the guest.
    pub rx_frames: u64,
    /// Frames written to the guest.
    pub tx_frames: u64,
    /// Frames for the guest dropped because the transmit queue was full.
    pub tx_dropped: u64,
    /// Times a tap write would have blocked (frames were kept and retried).
    pub tx_blocked: u64,
}

/// In-memory frame queues implementing `smoltcp::phy::Device`.
#[derive(Debug)]
pub struct Queues {
    rx: VecDeque<Vec<u8>>,
    rx_pool: Vec<Vec<u8>>,
    tx: TxSide,
    mtu: usize,
    counters: Counters,
}

#[derive(Debug)]
struct TxSide {
    queue: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
}

impl TxSide {
    fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }
}

fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_KEEP {
        pool.push(buf);
    }
}

impl Queues {
    /// Queues for an interface with IP MTU `mtu`.
    pub fn new(mtu: usize) -> Self {
        Queues {
            rx: VecDeque::with_capacity(RX_BATCH),
            rx_pool: Vec::new(),
            tx: TxSide {
                queue: VecDeque::new(),
                pool: Vec::new(),
            },
            mtu,
            counters: Counters::default(),
        }
    }

    /// Largest Ethernet frame (IP MTU + header).
    pub fn frame_capacity(&self) -> usize {
        self.mtu + ETHERNET_HEADER_LEN
    }

    /// A cleared buffer with room for one whole frame, for the runtime to read into.
    pub fn rx_buffer(&mut self) -> Vec<u8> {
        let cap = self.frame_capacity();
        let mut b = self.rx_pool.pop().unwrap_or_default();
        b.clear();
        b.reserve_exact(cap);
        b
    }

    /// Give back a buffer that was not queued.
    pub fn recycle_rx(&mut self, buf: Vec<u8>) {
        recycle(&mut self.rx_pool, buf);
    }

    /// Count one frame read from the guest (whoever ends up handling it).
    pub fn count_rx(&mut self) {
        self.counters.rx_frames += 1;
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
        let mut b = self.tx.take_buffer(0);
        b.extend_from_slice(frame);
        self.tx.queue.push_back(b);
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

    /// Write queued frames with `write` until the queue is empty or `write` reports
    /// `WouldBlock` (the frame is kept for the next flush). Other errors are returned; the
    /// failing frame is dropped and counted so one bad frame cannot wedge the queue.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8]) -> io::Result<usize>) -> io::Result<()> {
        while let Some(frame) = self.tx.queue.front() {
            match write(frame) {
                Ok(_) => {
                    self.counters.tx_frames += 1;
                    if let Some(b) = self.tx.queue.pop_front() {
                        recycle(&mut self.tx.pool, b);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.counters.tx_blocked += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.counters.tx_dropped += 1;
                    if let Some(b) = self.tx.queue.pop_front() {
                        recycle(&mut self.tx.pool, b);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Frame counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Pop the oldest frame for the guest (tests and in-memory peers).
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        let f = self.tx.queue.pop_front();
        if f.is_some() {
            self.counters.tx_frames += 1;
        }
        f
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
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut b = self.side.take_buffer(len);
        let r = f(&mut b);
        self.side.queue.push_back(b);
        r
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
            TxToken { side: &mut self.tx },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.queue.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        Some(TxToken { side: &mut self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.frame_capacity();
        caps.max_burst_size = None;
        // Frames from the tap were built by the guest kernel, which checksums them (or marks them
        // as locally generated): skip verification on receive, always compute on transmit.
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.udp = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.icmpv4 = Checksum::Tx;
        ck.icmpv6 = Checksum::Tx;
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
        let mut q = Queues::new(1500);
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
        let mut q = Queues::new(1500);
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
        q.flush(|_| {
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
        q.flush(|f| Ok(f.len())).unwrap();
        assert_eq!(q.tx_pending(), 0);
        assert_eq!(q.counters().tx_frames, TX_QUEUE_LIMIT as u64);
    }

    #[test]
    fn flush_error_drops_only_failing_frame() {
        let mut q = Queues::new(1500);
        q.push_tx(&[1]);
        q.push_tx(&[2]);
        let err = q.flush(|_| Err(io::Error::from_raw_os_error(libc::EIO)));
        assert!(err.is_err());
        assert_eq!(q.tx_pending(), 1);
    }
}
