//! TCP flows: a smoltcp socket facing the guest, a host `TcpStream` facing the world.
//!
//! # Theory of operation
//!
//! State diagram (guest side in smoltcp terms, host side in ours):
//!
//! ```text
//! guest SYN ──> Connecting: host connect() in flight, smoltcp SYN-RECEIVED with SYN-ACK paused
//!   connect ok       ──> Open: SYN-ACK released, bytes flow both ways
//!   ECONNREFUSED     ──> RST to the guest, flow removed
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
//! Back-pressure: bytes move only within the space both sides have. The host is read straight
//! into the smoltcp send buffer (`send` with a closure, no intermediate copy), and the smoltcp
//! receive buffer is written straight to the host. A full send buffer stops reading (the kernel
//! socket buffer fills and the remote's window closes); a host that does not take data leaves it
//! in the receive buffer, whose shrinking window slows the guest.
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
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::{flow_token, new_entry, Env, Flow as AnyFlow, HostEvent};
use crate::nat::{FlowId, Key, Refusal, Table};
use crate::stack::emit::{Unreachable, L2};
use crate::stack::Stack;
use crate::sys;

/// Bytes of buffer per direction per flow. 1 MiB keeps a single flow at full speed over a
/// 65520-byte MTU (larger buffers measured no faster in the architecture notes) and stays below
/// what the guest's tap queue holds at MTU 1500. Allocated zeroed, so untouched pages of idle
/// flows cost no resident memory.
pub const BUFFER_SIZE: usize = 1 << 20;

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

/// One TCP flow.
pub struct Flow {
    /// This flow's own smoltcp socket set, holding one socket (see [`crate::stack`]).
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    stream: Option<TcpStream>,
    phase: Phase,
    readable: bool,
    writable: bool,
    host_eof: bool,
    host_shut_wr: bool,
    /// The host peer has sent its FIN (or the socket failed): read on to end of file, since
    /// no further readable event will come.
    host_closing: bool,
    /// The guest's SYN (IP packet), quoted in ICMP errors while connecting.
    syn: Vec<u8>,
    l2: L2,
}

/// How long an open flow may wait for the guest to acknowledge data (or answer keep-alives)
/// before it is aborted: bounds the life of flows whose guest vanished without a RST.
pub const STALL_TIMEOUT_SECS: u64 = 300;

/// A smoltcp socket configured for proxying: [`BUFFER_SIZE`] each way, no Nagle (the host side
/// already batches), no delayed ACK (it costs a quarter of the throughput at MTU 65520).
fn new_socket() -> Socket<'static> {
    let mut sock = Socket::new(
        SocketBuffer::new(vec![0u8; BUFFER_SIZE]),
        SocketBuffer::new(vec![0u8; BUFFER_SIZE]),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    sock.set_timeout(Some(smoltcp::time::Duration::from_secs(STALL_TIMEOUT_SECS)));
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
    let target = match env.rules.outbound(crate::nat::Proto::Tcp, dst, &env.ns) {
        Ok(t) => t,
        Err(refusal) => {
            env.counters.refused += 1;
            debug!("tcp {src} -> {dst} refused: {refusal}");
            let kind = match refusal {
                Refusal::NotDns => Unreachable::Port,
                _ => Unreachable::Net,
            };
            let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
                stack.device.push_tx(f);
            });
            return false;
        }
    };
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
            table.remove(id);
            return refuse_connect(env, stack, l2, packet, &e);
        }
    };
    if let Err(e) = registry.register(
        &mut SourceFd(&stream.as_raw_fd()),
        flow_token(id),
        Interest::READABLE | Interest::WRITABLE,
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
    super::Proxy::store_flow(
        flows,
        id,
        AnyFlow::Tcp(Flow::new(
            sock,
            stream,
            Phase::Connecting,
            packet.to_vec(),
            l2,
        )),
    );
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
                Interest::READABLE | Interest::WRITABLE,
            )
        });
    if let Err(e) = setup {
        debug!("tcp forward from {peer}: {e}");
        table.remove(id);
        return None;
    }
    let mut sock = new_socket();
    sock.set_timeout(Some(smoltcp::time::Duration::from_secs(
        GUEST_CONNECT_TIMEOUT_SECS,
    )));
    let remote = smoltcp::wire::IpEndpoint::new(IpAddress::from(guest.ip()), guest.port());
    let local = smoltcp::wire::IpEndpoint::new(IpAddress::from(src.ip()), src.port());
    if let Err(e) = sock.connect(stack.iface.context(), remote, local) {
        debug!("tcp forward from {peer}: smoltcp connect: {e}");
        table.remove(id);
        let _ = sys::net::set_linger_zero(&stream);
        return None;
    }
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
        Some(libc::ECONNREFUSED) => return true,
        Some(libc::EHOSTUNREACH) => Unreachable::Host,
        _ => Unreachable::Net,
    };
    let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
        stack.device.push_tx(f);
    });
    false
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
            host_eof: false,
            host_shut_wr: false,
            host_closing: false,
            syn,
            l2,
        }
    }

    /// The flow's socket set (one socket), for the stack.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
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
                    sock.set_timeout(Some(smoltcp::time::Duration::from_secs(STALL_TIMEOUT_SECS)));
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
        if let Some(e) = table.get_mut(id) {
            e.state = if self.host_eof || self.host_shut_wr {
                crate::nat::State::HalfClosed
            } else {
                crate::nat::State::Open
            };
        }

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
        if !matches!(sock.state(), State::Listen | State::SynReceived) {
            // The guest gave up (RST) before the host answered.
            self.stream = None;
            return true;
        }
        if !self.writable {
            return false;
        }
        let Some(stream) = self.stream.as_ref() else {
            return true;
        };
        let err = match stream.take_error() {
            Ok(Some(e)) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
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
                self.syn = Vec::new();
                if let Some(e) = table.get_mut(id) {
                    e.host_local = stream.local_addr().ok();
                }
                debug!("tcp flow {id}: connected");
                false
            }
            Some(e) => {
                debug!("tcp flow {id}: connect failed: {e}");
                self.stream = None;
                if e.raw_os_error() == Some(libc::ECONNREFUSED) {
                    sock.abort(); // RST on the next poll, then the flow is removed
                    return true;
                }
                let kind = if e.raw_os_error() == Some(libc::EHOSTUNREACH) {
                    Unreachable::Host
                } else {
                    Unreachable::Net
                };
                let _ = env.emitter.unreachable(self.l2, kind, &self.syn, &mut |f| {
                    stack.device.push_tx(f);
                });
                // The ICMP error is the answer: the paused socket is dropped without a RST.
                true
            }
        }
    }
}
