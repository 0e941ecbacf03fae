//! TCP flows: a smoltcp socket facing the guest, a host `TcpStream` facing the world.
//!
//! # Theory of operation
//!
//! State diagram (guest side in smoltcp terms, host side in ours):
//!
//! ```text
//! guest SYN ──> Connecting: host connect() in flight, smoltcp SYN-RECEIVED with SYN-ACK paused
//!   connect ok       ──> Open: SYN-ACK released, bytes flow both ways
//!   ECONNREFUSED     ──> RST to the guest, flow removed (also when out of descriptors)
//!   EHOSTUNREACH     ──> ICMP host unreachable, flow removed
//!   other error      ──> ICMP net unreachable, flow removed
//! Open:
//!   guest FIN (CLOSE-WAIT..) and its data delivered ──> shutdown(host, SHUT_WR)
//!   host EOF                                        ──> smoltcp close() (FIN after queued data)
//!   both                                            ──> host fd closed at once
//!   guest RST                                       ──> host socket reset (SO_LINGER 0) and closed
//!   host reset / write error                        ──> smoltcp abort() (RST to the guest)
//!   smoltcp CLOSED or TIME-WAIT with host fd closed ──> flow removed
//! ```
//!
//! Every state has a bounded lifetime, whatever the guest sends or fails to send (a SYN flood,
//! spoofed sources, clients that give up), so flows and their host fds always come back:
//!
//! | state | ends after | why this bound |
//! |---|---|---|
//! | host connect in flight | [`HOST_CONNECT_TIMEOUT_MS`] (ICMP net unreachable) | libslirp's connection-establishment timer |
//! | SYN-ACK sent, no ACK | [`HANDSHAKE_TIMEOUT_SECS`] of guest silence | Linux's `tcp_synack_retries` |
//! | SYN-ACK answered with RST (smoltcp back in LISTEN) | at once, host reset | the guest has no such connection |
//! | our FIN unacknowledged | [`FIN_TIMEOUT_SECS`] of guest silence | Linux's `tcp_fin_timeout` |
//! | forward, guest not answering its SYN | [`GUEST_CONNECT_TIMEOUT_SECS`] | the host client waits meanwhile |
//! | any other state, idle | never while the guest answers keep-alives every [`KEEPALIVE_SECS`]; [`STALL_TIMEOUT_SECS`] of guest silence | a vanished guest sends no RST |
//!
//! Any RST from the guest that smoltcp accepts for the flow closes it and resets the host side
//! at once. Under pressure the oldest unestablished flows are reclaimed for new ones
//! ([`crate::nat::Table::pressure`]).
//!
//! Back-pressure: bytes move only within the space both sides have. The host is read straight
//! into the smoltcp send buffer (`send` with a closure, no intermediate copy), and the smoltcp
//! receive buffer is written straight to the host. A full send buffer stops reading (the kernel
//! socket buffer fills and the remote's window closes); a host that does not take data leaves it
//! in the receive buffer, whose shrinking window slows the guest.
//!
//! Readiness of the host socket is edge-triggered and remembered until a call blocks; the
//! socket is registered only for the edges the flow waits for ([`Flow::ask_events`]), so data
//! arriving for a flow whose smoltcp buffer is full, or ACKs for data the host peer already
//! took, wake nobody.
//!
//! Socket settings follow the architecture notes: Nagle and delayed ACK off on the smoltcp side
//! (the proxy already batches), `TCP_NODELAY` on the host side, [`BUFFER_SIZE`] per direction so
//! that window scaling keeps a 65520-byte MTU link full.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;

use log::debug;
use mio::unix::SourceFd;
use mio::{Interest, Registry};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{Socket, SocketBuffer, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::{edge_interest, flow_token, new_entry, Env, Flow as AnyFlow, HostEvent};
use crate::nat::{FlowId, Key, Proto, Refusal, Table};
use crate::stack::emit::{Unreachable, L2};
use crate::stack::Stack;
use crate::sys;

/// Bytes of buffer per direction per flow. 1 MiB keeps a single flow at full speed over a
/// 65520-byte MTU (larger buffers measured no faster in the architecture notes) and stays below
/// what the guest's tap queue holds at MTU 1500. Allocated zeroed, so untouched pages of idle
/// flows cost no resident memory.
///
/// One byte short of 1 MiB on purpose (found by fuzzing): smoltcp 0.14 sends its SYN-ACK with
/// the unscaled window (at most 65535) but records it as if scaled by its window shift, which
/// it derives from the buffer size: 5 for 2^20 bytes, so until its next ACK it accepted data
/// up to 65535 << 5 = 2 MiB past the SYN into a 1 MiB buffer, and a guest that then filled the
/// gap tripped an assertion in its ring buffer (a panic, in release builds too). With
/// 2^20 - 1 the shift is 4 and 65535 << 4 fits.
pub const BUFFER_SIZE: usize = (1 << 20) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Outbound: the host connect() is in flight, the guest's SYN-ACK is paused.
    Connecting,
    /// Inbound (port forward): the host client is accepted, smoltcp is connecting to the guest.
    GuestConnecting,
    Open,
}

/// How long a port-forward connection may wait for the guest to answer its SYN before the host
/// client is reset (the guest may be down or firewalled; the Linux default is about 2 minutes).
pub const GUEST_CONNECT_TIMEOUT_SECS: u64 = 20;

/// What a host socket is registered for first: both, as neither readiness is known.
const HOST_START: Interest = Interest::READABLE.add(Interest::WRITABLE);

/// One TCP flow.
pub struct Flow {
    /// This flow's own smoltcp socket set, holding one socket (see [`crate::stack`]).
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    stream: Option<TcpStream>,
    phase: Phase,
    /// The host socket is (or may be) readable / writable: an edge was seen and no call has
    /// blocked since (edge-triggered readiness, remembered until used up).
    readable: bool,
    writable: bool,
    /// What the host socket is registered for now ([`Flow::ask_events`]).
    interest: Interest,
    host_eof: bool,
    host_shut_wr: bool,
    /// The host peer has sent its FIN (or the socket failed): read on to end of file, since
    /// no further readable event will come.
    host_closing: bool,
    /// The guest's SYN (IP packet), quoted in ICMP errors while connecting.
    syn: Vec<u8>,
    l2: L2,
    /// While [`Phase::Connecting`]: when the host connect is given up
    /// ([`HOST_CONNECT_TIMEOUT_MS`] after the SYN), on the runtime clock.
    connect_deadline_ms: u64,
    /// The guest opened it (the egress policy applies); false for port-forward connections.
    outbound: bool,
}

/// How long an open flow may go without a word from the guest (an ACK of data, an answer to a
/// keep-alive or a window probe) before it is aborted: bounds the life of flows whose guest
/// vanished without a RST (a spoofed source that completed a handshake, a namespace torn
/// down). The guest's kernel answers within milliseconds while it lives, even for a frozen
/// container, so this need not be long; 90 s keeps the table's return to its idle baseline
/// after a storm within 2 minutes.
pub const STALL_TIMEOUT_SECS: u64 = 90;
/// Keep-alive interval of an idle open flow towards the guest: a live guest answers each probe,
/// so an idle connection lives as long as its guest does, while a vanished guest's flow ends
/// [`STALL_TIMEOUT_SECS`] after its last word (smoltcp counts that timeout from the last
/// segment the guest sent, idle or not). Two probes go unanswered before that.
pub const KEEPALIVE_SECS: u64 = 30;
/// How long the host `connect()` of an outbound flow may take (libslirp's `TCPTV_KEEP_INIT`,
/// 75 s; the kernel alone would try for about 127 s, `tcp_syn_retries` 6). The guest then gets
/// ICMP net unreachable, as for any connect error but refusal.
pub const HOST_CONNECT_TIMEOUT_MS: u64 = 75_000;
/// How long the guest may stay silent before completing the handshake (acknowledging our
/// SYN-ACK): Linux gives up after about 63 s (`tcp_synack_retries` 5). Spoofed SYN sources end
/// here.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 63;
/// How long the guest may stay silent while our FIN is unacknowledged (FIN-WAIT-1, CLOSING,
/// LAST-ACK): Linux's `tcp_fin_timeout`.
pub const FIN_TIMEOUT_SECS: u64 = 60;

/// Set the smoltcp timeout and keep-alive that bound the life of a socket in its current
/// state (the table in the module documentation). Only whether keep-alives are on is decided
/// here; their interval is [`keepalive_interval`], set before each smoltcp call that may
/// restart the keep-alive timer.
fn bound_lifetime(sock: &mut Socket<'static>) {
    let (secs, keep_alive) = match sock.state() {
        State::SynSent => (GUEST_CONNECT_TIMEOUT_SECS, false),
        State::Listen | State::SynReceived => (HANDSHAKE_TIMEOUT_SECS, false),
        State::FinWait1 | State::Closing | State::LastAck => (FIN_TIMEOUT_SECS, false),
        _ => (STALL_TIMEOUT_SECS, true),
    };
    let timeout = Some(Duration::from_secs(secs));
    if sock.timeout() != timeout {
        sock.set_timeout(timeout);
    }
    if sock.keep_alive().is_some() != keep_alive {
        sock.set_keep_alive(keep_alive.then(|| Duration::from_secs(KEEPALIVE_SECS)));
    }
}

/// The keep-alive interval to give smoltcp at `now`: from `now` to the first multiple of
/// [`KEEPALIVE_SECS`] on the runtime clock that is at least [`KEEPALIVE_SECS`] less
/// [`KEEPALIVE_SLACK_MS`] away. smoltcp restarts a socket's keep-alive timer at
/// `now + interval` whenever it sends or its data is all acknowledged; with this interval every
/// idle flow's next probe falls on the same grid point, and a thousand idle connections wake
/// the process about once per interval instead of a thousand times (a probe at its own time
/// each). The slack keeps a probe sent just after its grid point (the wake-up is a little
/// late) on the next one, so probes follow every [`KEEPALIVE_SECS`] and two go unanswered
/// before [`STALL_TIMEOUT_SECS`] of guest silence ends a flow.
pub fn keepalive_interval(now: Instant) -> Duration {
    let grid = i64::try_from(KEEPALIVE_SECS * 1_000_000).unwrap_or(i64::MAX);
    let slack = i64::try_from(KEEPALIVE_SLACK_MS * 1000).unwrap_or(0);
    let now = now.total_micros().max(0);
    let earliest = now.saturating_add(grid - slack);
    let next = earliest.saturating_add(grid - 1) / grid * grid;
    Duration::from_micros(u64::try_from(next - now).unwrap_or(0))
}

/// How much sooner than [`KEEPALIVE_SECS`] a keep-alive may come to stay on the grid
/// ([`keepalive_interval`]).
pub const KEEPALIVE_SLACK_MS: u64 = 1000;

/// Set how smoltcp acknowledges a guest segment carrying `data` bytes ([`SMALL_DATA`]).
fn ack_policy(sock: &mut Socket<'static>, data: usize) {
    if data == 0 {
        return;
    }
    let delay = if data < SMALL_DATA {
        Duration::from_micros(SMALL_DATA_ACK_DELAY_US)
    } else {
        Duration::ZERO
    };
    sock.set_ack_delay(Some(delay));
}

/// Set the keep-alive interval for `now` (see [`keepalive_interval`]) where keep-alives are
/// on, and where the handshake is about to complete (so the timer starts on the grid instead
/// of with an immediate probe, smoltcp's way when keep-alives are switched on later).
fn align_keep_alive(sock: &mut Socket<'static>, now: Instant) {
    if sock.keep_alive().is_some() || matches!(sock.state(), State::SynReceived | State::SynSent) {
        sock.set_keep_alive(Some(keepalive_interval(now)));
    }
}

/// Guest segments with less data than this are acknowledged late, after
/// [`SMALL_DATA_ACK_DELAY_US`], so that the answer from the host, when it comes sooner, carries
/// the ACK: a request/response exchange then costs one frame to the guest instead of two (the
/// pure ACK's tap write runs the guest's TCP receive path in our process). Larger segments, the
/// full-sized or GSO segments of a transfer, are acknowledged at once as before (a delayed ACK
/// on those cost a quarter of the throughput at MTU 65520); among small ones smoltcp still
/// acknowledges at once as soon as more than an MSS is unacknowledged (RFC 9293's "every
/// second full-sized segment").
pub const SMALL_DATA: usize = 2048;
/// How long the ACK of a small guest segment waits for a reply to carry it. Far below Linux's
/// 40 ms minimum delayed ACK (and libslirp's 200 ms), so a guest that writes twice before
/// reading with Nagle on waits at most this long; long enough for a local service's answer.
pub const SMALL_DATA_ACK_DELAY_US: u64 = 1000;

/// A smoltcp socket configured for proxying: [`BUFFER_SIZE`] each way, no Nagle (the host side
/// already batches), ACKs at once until [`Flow::before_guest_segment`] sees a small segment.
fn new_socket() -> Socket<'static> {
    let mut sock = Socket::new(
        SocketBuffer::new(vec![0u8; BUFFER_SIZE]),
        SocketBuffer::new(vec![0u8; BUFFER_SIZE]),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    bound_lifetime(&mut sock);
    sock
}

/// A guest SYN. Returns whether smoltcp should see the frame.
#[allow(clippy::too_many_arguments)]
pub fn on_guest_syn(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    stack: &mut Stack,
    registry: &Registry,
    l2: L2,
    src: SocketAddr,
    dst: SocketAddr,
    packet: &[u8],
) -> bool {
    let key = Key::tcp(src, dst);
    if table.lookup(&key).is_some() {
        return true; // a retransmitted SYN: smoltcp's socket already has it
    }
    let target = match super::egress::outbound(env, Proto::Tcp, src, dst) {
        Ok(t) => t,
        // A denied connect fails at once: no listener, so smoltcp answers the SYN with RST.
        Err(Refusal::Denied) if !env.policy.icmp_reply() => return true,
        Err(refusal) => {
            let what = format_args!("{src} -> {dst}");
            super::refuse(env, stack, l2, Proto::Tcp, refusal, what, packet);
            return false;
        }
    };
    super::make_room(env, table, flows, Proto::Tcp);
    let id = match table.insert(new_entry(key, target, env.now_ms)) {
        Ok(id) => id,
        Err(full) => {
            debug!("tcp {src} -> {dst} refused: {full}");
            return true; // no listener: smoltcp answers RST
        }
    };
    let stream = match sys::net::tcp_connect(target, env.source_for(target.ip())) {
        Ok(s) => s,
        Err(e) => {
            debug!("tcp {src} -> {dst} ({target}): connect: {e}");
            env.counters.host_errors.count(&e);
            table.remove(id);
            return refuse_connect(env, stack, l2, packet, &e);
        }
    };
    if let Err(e) = registry.register(
        &mut SourceFd(&stream.as_raw_fd()),
        flow_token(id),
        HOST_START,
    ) {
        debug!("tcp: cannot register host socket: {e}");
        table.remove(id);
        return true;
    }
    let mut sock = new_socket();
    sock.pause_synack(true);
    let listen = IpListenEndpoint {
        addr: Some(IpAddress::from(dst.ip())),
        port: dst.port(),
    };
    if sock.listen(listen).is_err() {
        table.remove(id);
        return true;
    }
    env.counters.created[0] += 1;
    debug!("tcp {src} -> {dst}: connecting to {target} (flow {id})");
    let mut flow = Flow::new(sock, stream, Phase::Connecting, packet.to_vec(), l2);
    flow.connect_deadline_ms = env.now_ms.saturating_add(HOST_CONNECT_TIMEOUT_MS);
    super::Proxy::store_flow(flows, id, AnyFlow::Tcp(flow));
    true
}

/// A client accepted on a TCP port forward: connect to the guest from the client's address.
/// Returns the new flow (its SYN is for the next egress).
#[allow(clippy::too_many_arguments)]
pub fn on_inbound(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    stack: &mut Stack,
    registry: &Registry,
    l2: L2,
    guest: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<FlowId> {
    let src = env.rules.inbound_client(peer, guest.is_ipv6());
    let key = Key::tcp(guest, src);
    if table.lookup(&key).is_some() {
        debug!("tcp forward: {src} -> {guest} already has a flow; refusing {peer}");
        let _ = sys::net::set_linger_zero(&stream);
        return None;
    }
    super::make_room(env, table, flows, Proto::Tcp);
    let id = match table.insert(new_entry(key, peer, env.now_ms)) {
        Ok(id) => id,
        Err(full) => {
            debug!("tcp forward from {peer}: {full}");
            let _ = sys::net::set_linger_zero(&stream);
            return None;
        }
    };
    let setup = stream
        .set_nonblocking(true)
        .and_then(|()| stream.set_nodelay(true))
        .and_then(|()| {
            registry.register(
                &mut SourceFd(&stream.as_raw_fd()),
                flow_token(id),
                HOST_START,
            )
        });
    if let Err(e) = setup {
        debug!("tcp forward from {peer}: {e}");
        table.remove(id);
        return None;
    }
    let mut sock = new_socket();
    let remote = smoltcp::wire::IpEndpoint::new(IpAddress::from(guest.ip()), guest.port());
    let local = smoltcp::wire::IpEndpoint::new(IpAddress::from(src.ip()), src.port());
    if let Err(e) = sock.connect(stack.iface.context(), remote, local) {
        debug!("tcp forward from {peer}: smoltcp connect: {e}");
        table.remove(id);
        let _ = sys::net::set_linger_zero(&stream);
        return None;
    }
    bound_lifetime(&mut sock);
    if let Some(e) = table.get_mut(id) {
        e.host_local = stream.local_addr().ok();
    }
    env.counters.created[0] += 1;
    debug!("tcp forward {peer} -> {guest} (as {src}, flow {id})");
    super::Proxy::store_flow(
        flows,
        id,
        AnyFlow::Tcp(Flow::new(
            sock,
            stream,
            Phase::GuestConnecting,
            Vec::new(),
            l2,
        )),
    );
    Some(id)
}

/// Answer a failed connect: RST for refusal, ICMP otherwise. Returns whether smoltcp should see
/// the SYN (it answers RST when no socket listens).
fn refuse_connect(
    env: &mut Env<'_>,
    stack: &mut Stack,
    l2: L2,
    packet: &[u8],
    e: &io::Error,
) -> bool {
    let kind = match e.raw_os_error() {
        // Refused, or tapir is out of descriptors or memory for a new socket (RLIMIT_NOFILE):
        // a reset, so the guest's connect fails at once with ECONNREFUSED while its open
        // flows go on.
        Some(libc::ECONNREFUSED | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            return true
        }
        _ => unreachable_for(e),
    };
    let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
        stack.device.push_tx(f);
    });
    false
}

/// The ICMP(v6) error that tells the guest why a host connect failed (other than a refusal),
/// the same for both families: the kernel reports the ICMP error it received as the errno
/// (`EHOSTUNREACH` for host unreachable and time exceeded, and for ICMPv4 administratively
/// prohibited; `EACCES` for ICMPv6 administratively prohibited; `EPERM` for a local firewall
/// drop); anything else, a timeout included, is "network unreachable".
fn unreachable_for(e: &io::Error) -> Unreachable {
    match e.raw_os_error() {
        Some(libc::EHOSTUNREACH) => Unreachable::Host,
        Some(libc::EACCES | libc::EPERM) => Unreachable::Prohibited,
        _ => Unreachable::Net,
    }
}

fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Flow {
    /// A flow in `phase` whose host side is `stream`, before any event has arrived.
    fn new(sock: Socket<'static>, stream: TcpStream, phase: Phase, syn: Vec<u8>, l2: L2) -> Self {
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(sock);
        Flow {
            sockets,
            handle,
            stream: Some(stream),
            phase,
            readable: false,
            writable: false,
            interest: HOST_START,
            host_eof: false,
            host_shut_wr: false,
            host_closing: false,
            syn,
            l2,
            connect_deadline_ms: u64::MAX,
            outbound: phase == Phase::Connecting,
        }
    }

    /// When this flow next needs a pass without news: smoltcp's next deadline, except while the
    /// host connect is in flight, when only the connect deadline matters (the paused SYN-ACK
    /// would otherwise make smoltcp ask for a pass at once, again and again).
    pub fn next_deadline(&mut self, stack: &mut Stack, now: Instant) -> Option<Instant> {
        if self.phase == Phase::Connecting {
            let ms = i64::try_from(self.connect_deadline_ms).unwrap_or(i64::MAX);
            return Some(Instant::from_millis(ms));
        }
        stack.poll_at(now, &self.sockets)
    }

    /// Whether the guest opened this flow (not a port-forward connection).
    pub fn is_outbound(&self) -> bool {
        self.outbound
    }

    /// Reset both sides now (the egress policy no longer allows the flow): the host side at
    /// once, the guest with a RST on the flow's next pass, after which it is removed.
    pub fn abort(&mut self) {
        self.reset_host();
        self.sockets.get_mut::<Socket>(self.handle).abort();
    }

    /// Reset the host side now (the flow is being reclaimed).
    pub fn reset_host(&mut self) {
        if let Some(s) = self.stream.take() {
            let _ = sys::net::set_linger_zero(&s);
        }
    }

    /// Prepare for a guest segment carrying `data` bytes, about to reach smoltcp at `now`. A
    /// small one (a request, a keystroke) is acknowledged after [`SMALL_DATA_ACK_DELAY_US`]
    /// unless a reply carries the ACK first, anything larger at once; a pure ACK changes
    /// nothing. See [`SMALL_DATA`]. The keep-alive timer the segment may restart is aligned
    /// ([`keepalive_interval`]).
    pub fn before_guest_segment(&mut self, data: usize, now: Instant) {
        let sock = self.sockets.get_mut::<Socket>(self.handle);
        align_keep_alive(sock, now);
        ack_policy(sock, data);
    }

    /// Let smoltcp transmit what the flow has for the guest at `now` (keep-alive timers it
    /// restarts aligned, [`keepalive_interval`]). Returns whether socket state may have changed.
    pub fn transmit(&mut self, stack: &mut Stack, now: Instant) -> bool {
        align_keep_alive(self.sockets.get_mut::<Socket>(self.handle), now);
        stack.egress(now, &mut self.sockets)
    }

    /// The flow's socket set (one socket), for the stack.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// Ask the host socket only for the edges the flow waits for ([`edge_interest`]):
    /// readability once a read found it empty (while readiness is remembered, an arrival, e.g.
    /// into a flow whose smoltcp send buffer is full, only wakes tapir to learn nothing new),
    /// writability once a write found it full or while the connect is in flight. Registered for
    /// both always, a bulk transfer woke tapir for every arrival and every ACK from the host
    /// peer: 40% to 50% fewer wake-ups in guest->host and port-forward iperf3 runs.
    pub fn ask_events(&mut self, registry: &Registry, id: FlowId) -> io::Result<()> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(());
        };
        let read = !self.readable && !self.host_eof;
        let write = !self.writable && !self.host_shut_wr;
        let want = edge_interest(read, write);
        if want != self.interest {
            registry.reregister(&mut SourceFd(&stream.as_raw_fd()), flow_token(id), want)?;
            self.interest = want;
        }
        Ok(())
    }

    /// Record readiness (edge-triggered: remember it until a call would block).
    pub fn on_host_event(&mut self, ev: HostEvent) {
        self.readable |= ev.readable || ev.error;
        self.writable |= ev.writable || ev.error;
        self.host_closing |= ev.read_closed || ev.error;
    }

    /// Move bytes and advance state. Returns true when the flow is finished.
    pub fn pump(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        table: &mut Table,
        id: FlowId,
    ) -> bool {
        if self.phase == Phase::Connecting {
            // Connected (the held SYN-ACK goes out) or failed (a RST may go out).
            return self.check_connect(env, stack, table, id);
        }
        let sock = self.sockets.get_mut::<Socket>(self.handle);
        if self.phase == Phase::GuestConnecting {
            match sock.state() {
                State::SynSent | State::SynReceived => return false,
                State::Established | State::CloseWait => {
                    bound_lifetime(sock);
                    self.phase = Phase::Open;
                    debug!("tcp flow {id}: guest accepted");
                }
                _ => {
                    // Refused (RST) or timed out: the host client sees a reset, as with
                    // slirp4netns.
                    debug!("tcp flow {id}: guest refused the forwarded connection");
                    if let Some(s) = self.stream.take() {
                        let _ = sys::net::set_linger_zero(&s);
                    }
                    return true;
                }
            }
        }
        let state = sock.state();
        if state == State::Listen {
            // The guest answered our SYN-ACK with RST (smoltcp's SYN-RECEIVED falls back to
            // LISTEN): it has no such connection, e.g. its client gave up while the host
            // connect was in flight. Reset the host side; the flow is over.
            debug!("tcp flow {id}: the guest reset the handshake");
            self.reset_host();
            return true;
        }
        let mut out = 0u64;
        let mut inn = 0u64;
        let mut reset_host = false;

        if let Some(stream) = self.stream.as_ref() {
            // guest -> host
            // A short write means the host socket's buffer is full, a short read that it is
            // empty: either way the next call would only say EAGAIN, and the socket's next
            // change of state raises a new edge-triggered event, so stop here (one syscall
            // less per message for request/response traffic).
            while self.writable && !self.host_shut_wr && sock.can_recv() {
                let mut offered = 0;
                let r = sock.recv(|buf| {
                    offered = buf.len();
                    match (&*stream).write(buf) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    }
                });
                match r {
                    Ok(Ok(n)) => {
                        out += n as u64;
                        if n < offered {
                            self.writable = false;
                        }
                    }
                    Ok(Err(e)) if is_would_block(&e) => self.writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        debug!("tcp flow {id}: host write: {e}");
                        sock.abort();
                        reset_host = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let guest_fin = matches!(
                state,
                State::CloseWait | State::LastAck | State::Closing | State::TimeWait
            );
            if guest_fin && !self.host_shut_wr && sock.recv_queue() == 0 && !reset_host {
                let _ = stream.shutdown(Shutdown::Write);
                self.host_shut_wr = true;
            }
            // host -> guest
            while self.readable && !self.host_eof && !reset_host && sock.can_send() {
                let mut offered = 0;
                let r = sock.send(|buf| {
                    offered = buf.len();
                    match (&*stream).read(buf) {
                        Ok(n) => (n, Ok(n)),
                        Err(e) => (0, Err(e)),
                    }
                });
                match r {
                    Ok(Ok(0)) if offered > 0 => {
                        self.host_eof = true;
                        sock.close();
                    }
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        inn += n as u64;
                        if n < offered && !self.host_closing {
                            self.readable = false;
                        }
                    }
                    Ok(Err(e)) if is_would_block(&e) => self.readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        debug!("tcp flow {id}: host read: {e}");
                        sock.abort();
                        self.host_eof = true;
                        reset_host = true;
                    }
                    Err(_) => break,
                }
            }
        }
        table.account(id, out, inn, env.now_ms);
        let nat_state = match state {
            State::SynSent | State::SynReceived => crate::nat::State::Connecting,
            _ if self.host_eof || self.host_shut_wr => crate::nat::State::HalfClosed,
            _ => crate::nat::State::Open,
        };
        table.set_state(id, nat_state);
        bound_lifetime(sock);

        let state = sock.state();
        // The guest reset or timed out while the host side is still open: reset the host too.
        if state == State::Closed && !(self.host_eof && self.host_shut_wr) {
            reset_host = true;
        }
        if reset_host {
            if let Some(s) = self.stream.take() {
                let _ = sys::net::set_linger_zero(&s);
            }
        } else if self.host_eof && self.host_shut_wr {
            // Both directions are done: release the host fd now, not after TIME-WAIT.
            self.stream = None;
        }
        self.stream.is_none() && matches!(state, State::Closed | State::TimeWait)
    }

    fn check_connect(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        table: &mut Table,
        id: FlowId,
    ) -> bool {
        let sock = self.sockets.get_mut::<Socket>(self.handle);
        if sock.state() != State::SynReceived {
            // The guest gave up (RST, back to LISTEN) before the host answered, or smoltcp
            // never took its SYN (a malformed segment such as SYN|FIN): the SYN has always
            // been processed before the first pass.
            debug!("tcp flow {id}: the guest left the handshake while connecting");
            self.stream = None;
            return true;
        }
        let timed_out = env.now_ms >= self.connect_deadline_ms;
        if !self.writable && !timed_out {
            return false;
        }
        let Some(stream) = self.stream.as_ref() else {
            return true;
        };
        let err = match stream.take_error() {
            Ok(Some(e)) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) && timed_out => {
                    Some(io::Error::from_raw_os_error(libc::ETIMEDOUT))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                    self.writable = false; // spurious wake-up; still connecting
                    return false;
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        match err {
            None => {
                sock.pause_synack(false);
                self.phase = Phase::Open;
                self.connect_deadline_ms = u64::MAX;
                self.syn = Vec::new();
                if let Some(e) = table.get_mut(id) {
                    e.host_local = stream.local_addr().ok();
                }
                debug!("tcp flow {id}: connected");
                false
            }
            Some(e) => {
                debug!("tcp flow {id}: connect failed: {e}");
                env.counters.host_errors.count(&e);
                self.stream = None;
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    sock.abort(); // RST on the next poll, then the flow is removed
                    return true;
                }
                let kind = unreachable_for(&e);
                let _ = env.emitter.unreachable(self.l2, kind, &self.syn, &mut |f| {
                    stack.device.push_tx(f);
                });
                // The ICMP error is the answer: the paused socket is dropped without a RST.
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_become_the_same_icmp_errors_in_both_families() {
        let kind = |n| unreachable_for(&io::Error::from_raw_os_error(n));
        assert_eq!(kind(libc::EHOSTUNREACH), Unreachable::Host);
        assert_eq!(kind(libc::EACCES), Unreachable::Prohibited);
        assert_eq!(kind(libc::EPERM), Unreachable::Prohibited);
        assert_eq!(kind(libc::ENETUNREACH), Unreachable::Net);
        assert_eq!(kind(libc::ETIMEDOUT), Unreachable::Net);
    }
    use smoltcp::iface::{Config, Interface};
    use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
    use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};
    use std::collections::VecDeque;

    /// An Ethernet wire looped back onto itself that can go silent: a guest that vanished
    /// without a word.
    #[derive(Default)]
    struct Wire {
        frames: VecDeque<Vec<u8>>,
        cut: bool,
        /// Every frame sent, for the tests that count them.
        log: Vec<Vec<u8>>,
    }
    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut Wire);

    impl RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = vec![0; len];
            let r = f(&mut frame);
            if !self.0.cut {
                self.0.log.push(frame.clone());
                self.0.frames.push_back(frame);
            }
            r
        }
    }

    impl Device for Wire {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;
        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
            let frame = self.frames.pop_front()?;
            Some((Rx(frame), Tx(self)))
        }
        fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
            Some(Tx(self))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = 1514;
            caps
        }
    }

    /// A proxy socket (the flow's side) connected to a plain smoltcp socket (the guest's side)
    /// over a [`Wire`], driven on a simulated clock a second at a time.
    struct Pair {
        wire: Wire,
        iface: Interface,
        sockets: SocketSet<'static>,
        flow: SocketHandle,
        now: Instant,
    }

    impl Pair {
        fn established() -> Pair {
            let mut wire = Wire::default();
            let mac = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
            let now = Instant::from_secs(1);
            let mut iface =
                Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut wire, now);
            iface.update_ip_addrs(|a| {
                a.push(IpCidr::new(Ipv4Address::new(10, 0, 2, 2).into(), 24))
                    .unwrap();
            });
            let mut sockets = SocketSet::new(Vec::new());
            let mut flow = new_socket();
            flow.listen(80).unwrap();
            let flow = sockets.add(flow);
            let mut guest = Socket::new(
                SocketBuffer::new(vec![0; 4096]),
                SocketBuffer::new(vec![0; 4096]),
            );
            let remote = (Ipv4Address::new(10, 0, 2, 2), 80);
            guest.connect(iface.context(), remote, 40000).unwrap();
            sockets.add(guest);
            let mut p = Pair {
                wire,
                iface,
                sockets,
                flow,
                now,
            };
            p.run(2);
            assert_eq!(p.state(), State::Established);
            p
        }

        fn state(&self) -> State {
            self.sockets.get::<Socket>(self.flow).state()
        }

        /// Advance `secs` seconds, a second at a time, bounding the flow's lifetime after each
        /// step as the proxy's pass does.
        fn run(&mut self, secs: u64) {
            for _ in 0..secs {
                self.step(Duration::from_secs(1));
            }
        }

        /// Advance by `by` and let both sides run, aligning the flow's keep-alive first as the
        /// proxy does before each smoltcp call.
        fn step(&mut self, by: Duration) {
            self.now += by;
            for _ in 0..8 {
                align_keep_alive(self.sockets.get_mut::<Socket>(self.flow), self.now);
                self.iface.poll(self.now, &mut self.wire, &mut self.sockets);
            }
            bound_lifetime(self.sockets.get_mut::<Socket>(self.flow));
        }

        fn guest(&mut self) -> &mut Socket<'static> {
            let guest = self
                .sockets
                .iter()
                .map(|(h, _)| h)
                .find(|h| *h != self.flow)
                .unwrap();
            self.sockets.get_mut::<Socket>(guest)
        }

        fn flow(&mut self) -> &mut Socket<'static> {
            self.sockets.get_mut::<Socket>(self.flow)
        }

        /// Segments the flow's side sent from the `from`-th frame of the log on, as (data
        /// bytes, ACK flag).
        fn flow_segments(&self, from: usize) -> Vec<(usize, bool)> {
            use smoltcp::wire::{EthernetFrame, Ipv4Packet, TcpPacket};
            self.wire.log[from..]
                .iter()
                .filter_map(|f| {
                    let eth = EthernetFrame::new_checked(&f[..]).ok()?;
                    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
                    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
                    (tcp.src_port() == 80).then(|| {
                        let data = tcp.payload().len();
                        (data, tcp.ack())
                    })
                })
                .collect()
        }
    }

    #[test]
    fn keepalive_interval_ends_on_the_grid_about_one_to_two_intervals_away() {
        let grid = KEEPALIVE_SECS * 1_000_000;
        let slack = KEEPALIVE_SLACK_MS * 1000;
        for us in [
            0,
            1,
            999_999,
            grid - 1,
            grid,
            grid + 1,
            grid + 200,
            7 * grid + 12_345,
        ] {
            let now = Instant::from_micros(i64::try_from(us).unwrap());
            let i = keepalive_interval(now).total_micros();
            assert!((grid - slack..2 * grid - slack).contains(&i), "{us}: {i}");
            assert_eq!((us + i) % grid, 0, "{us}: {i}");
        }
        // A probe sent just after its grid point: the next one interval later.
        let late = Instant::from_micros(i64::try_from(3 * grid + 200).unwrap());
        assert_eq!(keepalive_interval(late).total_micros(), grid - 200);
    }

    /// An idle flow's next keep-alive falls on the grid whenever its last segment went out, so
    /// every idle flow wakes the process at the same instant; and no keep-alive goes out while
    /// the connection is busy. (Whether the handshake alone would send a probe is not shown
    /// here: this harness sends none either way, with or without `align_keep_alive`'s
    /// handshake rule.)
    #[test]
    fn idle_flows_keep_alive_on_the_grid() {
        for offset_ms in [0, 3, 777] {
            let mut p = Pair::established();
            let from = p.wire.log.len();
            p.step(Duration::from_millis(offset_ms));
            ack_policy(p.flow(), 4);
            p.guest().send_slice(b"ping").unwrap();
            p.step(Duration::from_millis(1));
            p.flow().send_slice(b"pong").unwrap();
            p.step(Duration::from_millis(1));
            // The guest's delayed ACK of pong (smoltcp's default 10 ms) restarts the timer too.
            p.step(Duration::from_millis(20));
            let at = p.iface.poll_at(p.now, &p.sockets).unwrap();
            let grid = i64::try_from(KEEPALIVE_SECS * 1000).unwrap();
            assert_eq!(at.total_millis() % grid, 0, "offset {offset_ms}: {at}");
            assert!(at > p.now, "offset {offset_ms}");
            // ping's ACK rode on pong: no keep-alive, no pure ACK.
            assert_eq!(p.flow_segments(from), vec![(4, true)], "offset {offset_ms}");
            // Nor a keep-alive (1 byte, one before the sequence) anywhere in the exchange.
            assert!(
                !p.flow_segments(0).contains(&(1, true)),
                "offset {offset_ms}"
            );
        }
    }

    /// A small segment's ACK waits for the reply to carry it, or goes alone after the delay;
    /// a large one is acknowledged at once.
    #[test]
    fn small_segments_are_acknowledged_by_the_reply_or_after_the_delay() {
        let mut p = Pair::established();
        // No reply: a pure ACK once the delay has passed, not before.
        ack_policy(p.flow(), 12);
        p.guest().send_slice(&[1; 12]).unwrap();
        let from = p.wire.log.len();
        p.step(Duration::from_micros(10));
        assert_eq!(p.flow_segments(from), vec![]);
        p.step(Duration::from_micros(SMALL_DATA_ACK_DELAY_US));
        assert_eq!(p.flow_segments(from), vec![(0, true)]);
        let mut buf = [0; 64];
        assert_eq!(p.flow().recv_slice(&mut buf), Ok(12));
        // A large segment: acknowledged at once.
        ack_policy(p.flow(), SMALL_DATA);
        p.guest().send_slice(&[2; SMALL_DATA]).unwrap();
        let from = p.wire.log.len();
        p.step(Duration::from_micros(10));
        let acks = p.flow_segments(from);
        assert!(
            !acks.is_empty() && acks.iter().all(|s| *s == (0, true)),
            "{acks:?}"
        );
    }

    /// An idle connection whose guest is alive lives on (keep-alives are answered); it used to
    /// be aborted after the stall timeout, so an idle SSH or database connection died after 5
    /// minutes.
    #[test]
    fn idle_flow_with_a_live_guest_lives_on() {
        let mut p = Pair::established();
        p.run(3600);
        assert_eq!(p.state(), State::Established);
    }

    /// A guest that vanishes without a word (no RST, no answer to keep-alives) loses its flow
    /// within the stall timeout of its last word.
    #[test]
    fn idle_flow_of_a_vanished_guest_ends() {
        let mut p = Pair::established();
        p.run(KEEPALIVE_SECS * 2);
        p.wire.cut = true;
        p.run(STALL_TIMEOUT_SECS + 2);
        assert_eq!(p.state(), State::Closed);
    }

    #[test]
    fn lifetimes_by_state() {
        let mut s = new_socket();
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.timeout(), Some(Duration::from_secs(STALL_TIMEOUT_SECS)));
        s.listen(80).unwrap();
        bound_lifetime(&mut s);
        assert_eq!(
            s.timeout(),
            Some(Duration::from_secs(HANDSHAKE_TIMEOUT_SECS))
        );
        assert_eq!(s.keep_alive(), None);
    }
}
