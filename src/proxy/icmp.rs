//! ICMP echo flows through unprivileged "ping" sockets.
//!
//! # Theory of operation
//!
//! Echo requests to the virtual hosts are answered by [`crate::stack::vhost`]; every other echo
//! request gets a host `SOCK_DGRAM`/`IPPROTO_ICMP` socket per (guest address, echo identifier)
//! (no raw sockets, no privileges: the host must list the user's group in
//! `net.ipv4.ping_group_range`, which Debian and Fedora do by default). The kernel rewrites the
//! identifier to the socket's own; replies are mapped back to the guest's identifier and built as
//! frames, with the remote (translated back) as their source. When the host refuses ping sockets
//! the request is dropped, and the caller logs that once.
//!
//! Flows expire after [`IDLE_TIMEOUT_MS`] without a request or reply.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use log::debug;
use mio::unix::SourceFd;
use mio::{Interest, Registry};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr};

use super::{flow_token, new_entry, Env, Flow as AnyFlow};
use crate::nat::{FlowId, Key, Proto, Table};
use crate::stack::emit::L2;
use crate::stack::Stack;
use crate::sys;

/// The sequence number and payload of an echo reply read from a ping socket. The kernel has
/// verified the checksum already, so it is not checked again.
fn parse_echo_reply(msg: &[u8], v6: bool) -> Option<(u16, &[u8])> {
    if v6 {
        let p = Icmpv6Packet::new_checked(msg).ok()?;
        let any = std::net::Ipv6Addr::UNSPECIFIED;
        match Icmpv6Repr::parse(&any, &any, &p, &ChecksumCapabilities::ignored()) {
            Ok(Icmpv6Repr::EchoReply { seq_no, data, .. }) => Some((seq_no, data)),
            _ => None,
        }
    } else {
        let p = Icmpv4Packet::new_checked(msg).ok()?;
        match Icmpv4Repr::parse(&p, &ChecksumCapabilities::ignored()) {
            Ok(Icmpv4Repr::EchoReply { seq_no, data, .. }) => Some((seq_no, data)),
            _ => None,
        }
    }
}

/// Idle lifetime of an echo flow.
pub const IDLE_TIMEOUT_MS: u64 = 10_000;

/// One echo flow.
pub struct Flow {
    sock: UdpSocket,
    guest: IpAddr,
    ident: u16,
    l2: L2,
    readable: bool,
    /// (host target, address the guest pinged).
    peers: Vec<(IpAddr, IpAddr)>,
    active_ms: u64,
}

/// An echo request from the guest. Returns false if ping sockets are unavailable on this host.
#[allow(clippy::too_many_arguments)]
pub fn on_guest_echo(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    stack: &mut Stack,
    registry: &Registry,
    l2: L2,
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq: u16,
    data: &[u8],
    packet: &[u8],
) -> bool {
    let (from, to) = (SocketAddr::new(src, ident), SocketAddr::new(dst, 0));
    let target = match super::egress::outbound(env, Proto::Icmp, from, to) {
        Ok(t) => t.ip(),
        Err(refusal) => {
            let what = format_args!("{src} -> {dst}");
            super::refuse(env, stack, l2, Proto::Icmp, refusal, what, packet);
            return true;
        }
    };
    let key = Key::icmp(src, ident);
    let id = match table.lookup(&key) {
        Some(id) => id,
        None => {
            super::make_room(env, table, flows, Proto::Icmp);
            let id = match table.insert(new_entry(key, SocketAddr::new(target, 0), env.now_ms)) {
                Ok(id) => id,
                Err(full) => {
                    debug!("icmp {src}: {full}");
                    return true;
                }
            };
            let sock = match sys::net::icmp_socket(src.is_ipv6(), env.source_for(target)) {
                Ok(s) => s,
                Err(e) => {
                    table.remove(id);
                    debug!("icmp: ping socket: {e}");
                    return !matches!(
                        e.raw_os_error(),
                        Some(
                            libc::EACCES | libc::EPERM | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT
                        )
                    );
                }
            };
            if registry
                .register(
                    &mut SourceFd(&sock.as_raw_fd()),
                    flow_token(id),
                    Interest::READABLE,
                )
                .is_err()
            {
                table.remove(id);
                return true;
            }
            env.counters.created[2] += 1;
            super::Proxy::store_flow(
                flows,
                id,
                AnyFlow::Icmp(Flow {
                    sock,
                    guest: src,
                    ident,
                    l2,
                    readable: false,
                    peers: Vec::new(),
                    active_ms: env.now_ms,
                }),
            );
            id
        }
    };
    let Some(Some(AnyFlow::Icmp(flow))) = flows.get_mut(id) else {
        return true;
    };
    if target.is_ipv6() != src.is_ipv6() {
        return true;
    }
    if !flow.peers.iter().any(|(t, _)| *t == target) {
        if flow.peers.len() >= super::udp::MAX_PEERS {
            flow.peers.remove(0);
        }
        flow.peers.push((target, dst));
    }
    flow.active_ms = env.now_ms;
    // The kernel fills in the identifier and the checksum.
    let mut msg = Vec::with_capacity(8 + data.len());
    msg.push(if src.is_ipv6() { 128 } else { 8 });
    msg.extend_from_slice(&[0, 0, 0, 0, 0]);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(data);
    match flow.sock.send_to(&msg, SocketAddr::new(target, 0)) {
        Ok(_) => table.account(id, data.len() as u64, 0, env.now_ms),
        Err(e) => {
            debug!("icmp flow {id}: send to {target}: {e}");
            env.counters.host_errors.count(&e);
            env.counters.dropped += 1;
        }
    }
    true
}

impl Flow {
    /// Readiness of the host socket. Returns true when the flow is finished.
    pub fn on_host_event(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        table: &mut Table,
        id: FlowId,
        readable: bool,
    ) -> bool {
        self.readable |= readable;
        self.drain(env, stack, table, id)
    }

    /// Datagrams may still wait on the host socket (the last drain stopped at a full guest
    /// queue or its batch): drain again after the next wake-up.
    pub fn wants_drain(&self) -> bool {
        self.readable
    }

    /// Relay echo replies while the guest queue has room.
    pub fn drain(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        table: &mut Table,
        id: FlowId,
    ) -> bool {
        if !self.readable {
            return false;
        }
        let mut bytes = 0u64;
        let this = &*self;
        let end = super::drain_datagrams(env, stack, &this.sock, |env, stack, from, n| {
            let Some((seq, data)) = parse_echo_reply(&env.buf[..n], this.guest.is_ipv6()) else {
                return;
            };
            let remote = from.ip();
            let src = this
                .peers
                .iter()
                .find(|(t, _)| *t == remote)
                .map(|(_, g)| *g)
                .unwrap_or_else(|| env.rules.inbound(from, false, &env.ns).ip());
            bytes += data.len() as u64;
            let emitted = env.emitter.echo(
                this.l2,
                false,
                src,
                this.guest,
                this.ident,
                seq,
                data,
                &mut |f| {
                    stack.device.push_tx(f);
                },
            );
            if emitted.is_err() {
                env.counters.dropped += 1;
            }
        });
        if end != super::Drained::Pending {
            self.readable = false;
        }
        if bytes > 0 {
            self.active_ms = env.now_ms;
        }
        table.account(id, 0, bytes, env.now_ms);
        false
    }

    /// Whether the flow has been idle too long.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms()
    }

    /// When the flow expires unless traffic comes first (runtime clock, ms).
    pub fn expires_ms(&self) -> u64 {
        self.active_ms.saturating_add(IDLE_TIMEOUT_MS)
    }
}
