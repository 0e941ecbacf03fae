//! Spliced port forwards: loopback clients relayed to a socket inside the guest's namespace.
//!
//! # Theory of operation
//!
//! With `--splice-forwards`, a TCP port-forward connection whose client is on the host's loopback
//! does not go through the user-mode stack at all. The socket broker ([`crate::sys::nsbroker`])
//! hands over a TCP socket made inside the container's network namespace and bound to the
//! forward's guest address; tapir connects it to the guest port, so the connection crosses the
//! container's own loopback, and bytes move between the two kernel sockets with `splice(2)`
//! through one pipe per direction, never entering tapir's memory. This is the path rootlesskit's
//! builtin port driver and pasta take for local clients; it runs at loopback speed.
//!
//! What the guest sees differs from the stack path in one way: the client appears as the guest's
//! own address (the socket is bound to it) instead of the gateway (10.0.2.2). Clients that are
//! not on loopback keep the stack path, so their address is still preserved, which is the reason
//! to use slirp4netns's port forwarding at all. That is why the path is opt-in.
//!
//! The path is taken only when it can work, and otherwise the connection silently takes the
//! stack path: no broker (a tap fd was passed in), an address that is not the namespace's own
//! (the broker's `bind` fails), or no descriptors left for the pipes.
//!
//! Each direction is a small state machine: drain the pipe into the destination; once empty, fill
//! it from the source (so a short `EAGAIN` from `splice` into a full pipe never hides readable
//! data); at end of file shut the destination's sending side. Both sockets are registered
//! edge-triggered, the client's under the flow's token and the guest-side one under its peer
//! token, each only for what a direction waits for (`Flow::ask_events`: no input while its
//! pipe waits for the destination, no writability unless a pipe waits for it), and an event
//! pumps the direction it concerns (readable: the socket's data goes out; writable: data waits
//! for it) until it waits on `EAGAIN`, or has moved [`SPLICE_BATCH_BYTES`] (then that direction
//! alone is pumped again after the next poll, so one fast flow cannot starve the tap). A reset or error on either side resets the
//! other (`SO_LINGER` 0). The guest connect has [`CONNECT_TIMEOUT_MS`]; after that the client is
//! reset, as when the guest refuses.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use log::debug;
use mio::unix::SourceFd;
use mio::{Interest, Registry};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};

use super::{
    edge_interest, flow_peer_token, flow_token, new_entry, Env, Flow as AnyFlow, HostEvent,
};
use crate::nat::{FlowId, Key, State, Table};
use crate::sys;
use crate::sys::nsbroker::Broker;

/// Capacity asked for the pipes of the first [`BIG_PIPE_FLOWS`] flows (`F_SETPIPE_SZ`, the
/// default `pipe-max-size`): ~20% more throughput than the kernel's default 64 KiB. Pipe pages
/// are references to socket buffers, held only while data is in flight, but a pipe's size counts
/// against its user's `pipe-user-pages-soft` (16384 pages) at once, and a user over that limit
/// gets 8 KiB pipes in every program, so only a few flows get big pipes.
pub const PIPE_BYTES: usize = 1024 * 1024;
/// Flows at once whose pipes are [`PIPE_BYTES`]: 4 x 2 x 256 pages is 1/8 of the default
/// per-user quota. Others keep the kernel's default size.
pub const BIG_PIPE_FLOWS: usize = 4;
/// Bytes one direction moves per event before yielding to the rest of the loop.
pub const SPLICE_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long the connect to the guest may take (the guest answers at once, unless a firewall in
/// the container drops the SYN).
pub const CONNECT_TIMEOUT_MS: u64 = super::tcp::GUEST_CONNECT_TIMEOUT_SECS * 1000;

/// One direction: source socket -> pipe -> destination socket.
struct Dir {
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    /// What one splice into the pipe asks for.
    cap: usize,
    /// Bytes in the pipe.
    queued: usize,
    /// The source reached end of file.
    eof: bool,
    /// The destination's sending side is shut down (after `eof` and an empty pipe).
    shut: bool,
}

/// How a pump of one direction ended.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// Waiting for an edge (or finished).
    Idle,
    /// Stopped at the batch limit with work left.
    More,
}

/// Flows holding big pipes now (tapir is single-threaded; the atomic only makes it a safe
/// static).
static BIG_PIPES_IN_USE: AtomicUsize = AtomicUsize::new(0);

/// A claim on one of the [`BIG_PIPE_FLOWS`], released on drop.
struct BigPipes;

impl BigPipes {
    fn claim() -> Option<BigPipes> {
        BIG_PIPES_IN_USE
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < BIG_PIPE_FLOWS).then_some(n + 1)
            })
            .ok()
            .map(|_| BigPipes)
    }
}

impl Drop for BigPipes {
    fn drop(&mut self) {
        BIG_PIPES_IN_USE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes the pipe can hold (its capacity once resized).
fn pipe(big: bool) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let mut cap = DEFAULT_PIPE_BYTES;
    if big {
        let size = i32::try_from(PIPE_BYTES).unwrap_or(i32::MAX);
        match nix::fcntl::fcntl(&w, FcntlArg::F_SETPIPE_SZ(size)) {
            Ok(n) => cap = usize::try_from(n).unwrap_or(DEFAULT_PIPE_BYTES),
            // A smaller pipe still works; it only takes more calls.
            Err(e) => debug!("F_SETPIPE_SZ {PIPE_BYTES}: {e}"),
        }
    }
    Ok((r, w, cap))
}

/// The kernel's default pipe capacity (16 pages).
const DEFAULT_PIPE_BYTES: usize = 16 * 4096;

fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> Result<usize, Errno> {
    loop {
        match nix::fcntl::splice(
            from.as_fd(),
            None,
            to.as_fd(),
            None,
            len,
            SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
        ) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

impl Dir {
    fn new(big: bool) -> io::Result<Dir> {
        let (pipe_r, pipe_w, cap) = pipe(big)?;
        Ok(Dir {
            pipe_r,
            pipe_w,
            cap,
            queued: 0,
            eof: false,
            shut: false,
        })
    }

    /// Move bytes from `src` to `dst`; adds what reached `dst` to `moved`.
    fn pump(&mut self, src: &TcpStream, dst: &TcpStream, moved: &mut u64) -> Result<Pumped, Errno> {
        let mut budget = SPLICE_BATCH_BYTES;
        loop {
            while self.queued > 0 {
                match splice(&self.pipe_r, dst, self.queued) {
                    Ok(n) => {
                        self.queued -= n;
                        *moved += n as u64;
                        budget = budget.saturating_sub(n);
                    }
                    Err(Errno::EAGAIN) => return Ok(Pumped::Idle),
                    Err(e) => return Err(e),
                }
            }
            if self.eof {
                if !self.shut {
                    self.shut = true;
                    if let Err(e) = dst.shutdown(std::net::Shutdown::Write) {
                        debug!("splice: shutdown: {e}");
                    }
                }
                return Ok(Pumped::Idle);
            }
            if budget == 0 {
                return Ok(Pumped::More);
            }
            match splice(src, &self.pipe_w, self.cap) {
                Ok(0) => self.eof = true,
                Ok(n) => self.queued = n,
                Err(Errno::EAGAIN) => return Ok(Pumped::Idle),
                Err(e) => return Err(e),
            }
        }
    }
}

/// What the client's socket is registered for first.
const HOST_START: Interest = Interest::READABLE;
/// What the guest side's socket is registered for first (it is connecting).
const GUEST_START: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// A spliced connection.
pub struct Flow {
    /// The accepted client, on the host.
    host: TcpStream,
    /// The socket in the guest's namespace.
    guest: TcpStream,
    connected: bool,
    /// host -> guest.
    up: Dir,
    /// guest -> host.
    down: Dir,
    /// Held while the pipes are big.
    _big: Option<BigPipes>,
    /// What is asked of the client / the guest-side socket now ([`Flow::ask_events`]).
    host_interest: Interest,
    guest_interest: Interest,
    /// Directions (up, down) that stopped at [`SPLICE_BATCH_BYTES`] with work left.
    unfinished: (bool, bool),
}

/// What [`Flow::on_event`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Wait for the next edge.
    Wait,
    /// Pump again after the next poll (a batch limit was hit).
    Again,
    /// Finished or failed: close the flow.
    Done,
}

impl Flow {
    /// Connect progress and data: pump the directions `ev` concerns (the client's socket is the
    /// flow's, the guest-side one its peer: readable feeds one direction, writable drains the
    /// other), both for an error, a first connect or an empty event (a batch to finish).
    pub fn on_event(
        &mut self,
        table: &mut Table,
        registry: &Registry,
        id: FlowId,
        ev: &HostEvent,
        now_ms: u64,
    ) -> Outcome {
        let just_connected = !self.connected;
        if !self.connected {
            match self.guest.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    debug!("splice flow {id}: connect to the guest: {e}");
                    self.reset_host();
                    return Outcome::Done;
                }
            }
            if self.guest.peer_addr().is_err() {
                return Outcome::Wait;
            }
            self.connected = true;
            table.set_state(id, State::Open);
        }
        // `readable` includes end of file (`HostEvent::from_mio`).
        let (mut pump_up, mut pump_down) = if ev.peer {
            (ev.writable, ev.readable)
        } else {
            (ev.readable, ev.writable)
        };
        if just_connected || ev.error {
            (pump_up, pump_down) = (true, true);
        } else if !(pump_up || pump_down) {
            // No event: the directions that stopped at their batch limit go on.
            (pump_up, pump_down) = self.unfinished;
        }
        let (mut inn, mut out) = (0u64, 0u64);
        // A direction not pumped now keeps what it had: one stopped at its batch limit must
        // still be resumed after an event that concerned only the other direction (its source
        // raises no new edge for data already there).
        let kept = |more: bool| Ok(if more { Pumped::More } else { Pumped::Idle });
        let up = if pump_up {
            self.up.pump(&self.host, &self.guest, &mut inn)
        } else {
            kept(self.unfinished.0)
        };
        let down = if pump_down {
            self.down.pump(&self.guest, &self.host, &mut out)
        } else {
            kept(self.unfinished.1)
        };
        table.account(id, out, inn, now_ms);
        if let Err(e) = self.ask_events(registry, id) {
            debug!("splice flow {id}: epoll: {e}");
            self.reset_host();
            return Outcome::Done;
        }
        match (up, down) {
            (Err(e), _) | (_, Err(e)) => {
                debug!("splice flow {id}: {e}");
                let _ = sys::net::set_linger_zero(&self.host);
                let _ = sys::net::set_linger_zero(&self.guest);
                Outcome::Done
            }
            _ if self.up.shut && self.down.shut => Outcome::Done,
            (Ok(a), Ok(b)) => {
                if self.up.shut || self.down.shut {
                    table.set_state(id, State::HalfClosed);
                }
                self.unfinished = (a == Pumped::More, b == Pumped::More);
                if a == Pumped::More || b == Pumped::More {
                    Outcome::Again
                } else {
                    Outcome::Wait
                }
            }
        }
    }

    /// Ask each socket only for the events that can give work: readability while its pipe is
    /// empty (input into a pipe that waits for its destination only wakes tapir to find the
    /// destination still full), writability while a pipe waits for it (and the guest side's while
    /// it connects) ([`edge_interest`]). Registered for both always, a spliced bulk transfer
    /// woke tapir on every arrival and on every ACK that freed send buffer, most of them with
    /// nothing to do.
    fn ask_events(&mut self, registry: &Registry, id: FlowId) -> io::Result<()> {
        let host = edge_interest(self.up.queued == 0, self.down.queued > 0);
        let guest = edge_interest(self.down.queued == 0, self.up.queued > 0 || !self.connected);
        if host != self.host_interest {
            registry.reregister(&mut SourceFd(&self.host.as_raw_fd()), flow_token(id), host)?;
            self.host_interest = host;
        }
        if guest != self.guest_interest {
            registry.reregister(
                &mut SourceFd(&self.guest.as_raw_fd()),
                flow_peer_token(id),
                guest,
            )?;
            self.guest_interest = guest;
        }
        Ok(())
    }

    fn reset_host(&self) {
        let _ = sys::net::set_linger_zero(&self.host);
    }

    /// When a guest connect still in flight is given up (runtime clock, ms).
    pub fn connect_deadline_ms(created_ms: u64) -> u64 {
        created_ms.saturating_add(CONNECT_TIMEOUT_MS)
    }

    /// Whether the guest connect has been pending too long (then the client is reset).
    pub fn connect_expired(&self, created_ms: u64, now_ms: u64) -> bool {
        let expired = !self.connected && now_ms >= Self::connect_deadline_ms(created_ms);
        if expired {
            self.reset_host();
        }
        expired
    }

    /// Whether the guest connect is still in flight.
    pub fn connecting(&self) -> bool {
        !self.connected
    }
}

/// Try to splice client `stream` (accepted from `peer`) to `guest`. On success the flow is stored
/// and `Ok` returned; otherwise the stream comes back untouched, for the stack path.
#[allow(clippy::too_many_arguments)]
pub fn on_inbound(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    registry: &Registry,
    broker: &Broker,
    guest: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(), TcpStream> {
    let inner: OwnedFd = match broker.tcp_socket(guest.ip()) {
        Ok(fd) => fd,
        Err(e) => {
            debug!("splice: no socket for {guest} in the namespace ({e}); using the stack");
            return Err(stream);
        }
    };
    let inner = TcpStream::from(inner);
    let big = BigPipes::claim();
    let (up, down) = match (Dir::new(big.is_some()), Dir::new(big.is_some())) {
        (Ok(u), Ok(d)) => (u, d),
        (Err(e), _) | (_, Err(e)) => {
            debug!("splice: pipes: {e}; using the stack");
            return Err(stream);
        }
    };
    let Ok(local) = inner.local_addr() else {
        return Err(stream);
    };
    // The flow's key is the connection as the guest sees it: its own address as the client.
    let key = Key::tcp(guest, local);
    let id = match table.insert(new_entry(key, peer, env.now_ms)) {
        Ok(id) => id,
        Err(full) => {
            debug!("splice from {peer}: {full}");
            let _ = sys::net::set_linger_zero(&stream);
            return Ok(());
        }
    };
    let setup = (|| {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        inner.set_nodelay(true)?;
        match nix::sys::socket::connect(
            inner.as_raw_fd(),
            &nix::sys::socket::SockaddrStorage::from(guest),
        ) {
            Ok(()) | Err(Errno::EINPROGRESS) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
        // Both are read; the guest side is also watched for its connect to complete.
        for (fd, token, i) in [
            (stream.as_raw_fd(), flow_token(id), HOST_START),
            (inner.as_raw_fd(), flow_peer_token(id), GUEST_START),
        ] {
            registry.register(&mut SourceFd(&fd), token, i)?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        debug!("splice from {peer} to {guest}: {e}");
        table.remove(id);
        let _ = sys::net::set_linger_zero(&stream);
        return Ok(());
    }
    if let Some(e) = table.get_mut(id) {
        e.host_local = stream.local_addr().ok();
    }
    env.counters.spliced += 1;
    env.counters.created[0] += 1;
    debug!("tcp forward {peer} -> {guest} spliced (as {local}, flow {id})");
    super::Proxy::store_flow(
        flows,
        id,
        AnyFlow::Splice(Flow {
            host: stream,
            guest: inner,
            connected: false,
            up,
            down,
            _big: big,
            host_interest: HOST_START,
            guest_interest: GUEST_START,
            unfinished: (false, false),
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A connected loopback pair: (client, accepted), the accepted side non-blocking.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, s)
    }

    /// Pump until the direction has shut its destination (or `limit` rounds pass).
    fn pump_to_end(d: &mut Dir, src: &TcpStream, dst: &TcpStream) -> Result<u64, Errno> {
        let mut moved = 0;
        for _ in 0..100_000 {
            d.pump(src, dst, &mut moved)?;
            if d.shut {
                return Ok(moved);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        panic!("the relay never finished ({moved} bytes moved)");
    }

    #[test]
    fn relays_every_byte_then_shuts_down_the_destination() {
        let (mut writer, src) = pair();
        let (dst_client, mut reader) = pair();
        dst_client.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let w = std::thread::spawn(move || {
            writer.write_all(&data).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
            writer
        });
        reader.set_nonblocking(false).unwrap();
        let r = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        let mut d = Dir::new(false).unwrap();
        let moved = pump_to_end(&mut d, &src, &dst_client).unwrap();
        assert_eq!(moved, expected.len() as u64);
        assert!(d.eof && d.shut && d.queued == 0);
        // The destination saw end of file after the last byte.
        assert!(r.join().unwrap() == expected);
        drop(w.join().unwrap());
    }

    #[test]
    fn a_reset_source_is_an_error() {
        let (writer, src) = pair();
        let (dst_client, _reader) = pair();
        sys::net::set_linger_zero(&writer).unwrap();
        drop(writer);
        let mut d = Dir::new(false).unwrap();
        let mut moved = 0;
        let mut result = Ok(Pumped::Idle);
        for _ in 0..1000 {
            result = d.pump(&src, &dst_client, &mut moved);
            if result.is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(result, Err(Errno::ECONNRESET));
        assert!(!d.shut, "a reset must not look like an orderly end of file");
    }

    /// The events of one poll (`timeout_ms`) as `HostEvent`s.
    fn events(poll: &mut mio::Poll, timeout_ms: u64) -> Vec<HostEvent> {
        let mut evs = mio::Events::with_capacity(8);
        poll.poll(&mut evs, Some(std::time::Duration::from_millis(timeout_ms)))
            .unwrap();
        evs.iter().map(HostEvent::from_mio).collect()
    }

    /// A connected flow between `host` and `guest`, registered in `poll` for `host_interest` and
    /// `guest_interest`, with `unfinished` batches.
    fn flow(
        poll: &mio::Poll,
        host: TcpStream,
        guest: TcpStream,
        (host_interest, guest_interest): (Interest, Interest),
        unfinished: (bool, bool),
    ) -> Flow {
        for (fd, token, i) in [
            (host.as_raw_fd(), flow_token(0), host_interest),
            (guest.as_raw_fd(), flow_peer_token(0), guest_interest),
        ] {
            poll.registry()
                .register(&mut SourceFd(&fd), token, i)
                .unwrap();
        }
        Flow {
            host,
            guest,
            connected: true,
            up: Dir::new(false).unwrap(),
            down: Dir::new(false).unwrap(),
            _big: None,
            host_interest,
            guest_interest,
            unfinished,
        }
    }

    #[test]
    fn a_direction_waiting_for_its_destination_is_not_woken_by_input() {
        // host client -> `host` (tapir) ... `guest` (tapir) -> guest app, which reads nothing yet.
        let (mut client, host) = pair();
        let (guest, mut app) = pair();
        guest.set_nonblocking(true).unwrap();
        app.set_nonblocking(false).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let connected = Interest::READABLE;
        let mut flow = flow(&poll, host, guest, (HOST_START, connected), (false, false));
        let mut table = Table::new();
        let chunk = vec![7u8; 256 * 1024];
        client.set_nonblocking(true).unwrap();
        // Feed until the guest side is full and the pipe holds what it could not take.
        let mut sent = 0usize;
        for _ in 0..400 {
            if flow.up.queued > 0 {
                break;
            }
            sent += client.write(&chunk).unwrap_or(0);
            for ev in events(&mut poll, 20) {
                flow.on_event(&mut table, poll.registry(), 0, &ev, 0);
            }
        }
        assert!(flow.up.queued > 0, "the guest side never filled up");
        // Asking for writability in place of input reports the client's socket writable once
        // (a changed registration re-arms the edge): one wake-up per stop, not per arrival.
        for ev in events(&mut poll, 20) {
            flow.on_event(&mut table, poll.registry(), 0, &ev, 0);
        }
        assert_eq!(
            flow.host_interest,
            Interest::WRITABLE,
            "input is not asked for"
        );
        assert_eq!(flow.guest_interest, Interest::READABLE | Interest::WRITABLE);
        // More input while blocked: no wake-up at all.
        while let Ok(n) = client.write(&chunk) {
            sent += n;
        }
        let evs = events(&mut poll, 100);
        assert!(evs.is_empty(), "woken by input it cannot move: {evs:?}");
        // The app reads: the guest side's writability drains the pipe, input is asked again,
        // and every byte arrives.
        let reader = std::thread::spawn(move || {
            let mut got = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while got < sent {
                got += app.read(&mut buf).unwrap();
            }
            got
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reader.is_finished() && std::time::Instant::now() < deadline {
            for ev in events(&mut poll, 20) {
                flow.on_event(&mut table, poll.registry(), 0, &ev, 0);
            }
        }
        assert_eq!(reader.join().unwrap(), sent);
        assert_eq!(flow.host_interest, Interest::READABLE);
        assert_eq!(flow.guest_interest, Interest::READABLE);
    }

    #[test]
    fn a_direction_stopped_at_its_batch_limit_is_resumed_after_an_event_for_the_other() {
        let (_client, host) = pair();
        let (guest, _app) = pair();
        guest.set_nonblocking(true).unwrap();
        let poll = mio::Poll::new().unwrap();
        let r = Interest::READABLE;
        // host -> guest stopped at SPLICE_BATCH_BYTES on the last pass.
        let mut flow = flow(&poll, host, guest, (r, r), (true, false));
        let mut table = Table::new();
        // The guest side becomes readable (nothing to read): only guest -> host is pumped.
        let guest_readable = HostEvent {
            readable: true,
            peer: true,
            ..HostEvent::default()
        };
        let outcome = flow.on_event(&mut table, poll.registry(), 0, &guest_readable, 0);
        assert_eq!(
            outcome,
            Outcome::Again,
            "host -> guest still has a batch to finish"
        );
        assert_eq!(flow.unfinished, (true, false));
        // The pass for unfinished batches (an empty event) then pumps host -> guest, which
        // finds nothing more and is done.
        let outcome = flow.on_event(&mut table, poll.registry(), 0, &HostEvent::default(), 0);
        assert_eq!(outcome, Outcome::Wait);
        assert_eq!(flow.unfinished, (false, false));
    }

    #[test]
    fn big_pipes_are_bounded() {
        // No other test claims big pipes, so all of them are free here.
        let claims: Vec<_> = std::iter::from_fn(BigPipes::claim).take(100).collect();
        assert_eq!(claims.len(), BIG_PIPE_FLOWS);
        assert!(BigPipes::claim().is_none());
        drop(claims);
        assert_eq!(BIG_PIPES_IN_USE.load(Ordering::Relaxed), 0);
        assert!(BigPipes::claim().is_some());
    }
}
