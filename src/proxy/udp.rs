//! UDP flows: one host socket per guest source endpoint, endpoint-independent.
//!
//! # Theory of operation
//!
//! Like libslirp, a guest endpoint (address:port) gets one unconnected host socket, whatever the
//! remote. Each datagram is translated by the NAT rules and sent with `send_to`; every datagram
//! the host socket receives, from any remote, is delivered to the guest endpoint with the remote
//! (mapped back: host loopback appears as the gateway, the resolver as the DNS address) as its
//! source. The last few destinations are remembered ([`MAX_PEERS`]) so that replies and ICMP
//! errors map back to the exact address the guest used.
//!
//! ICMP errors the host receives for our datagrams (port unreachable, host unreachable) arrive on
//! the socket's error queue (`IP_RECVERR`) and are relayed to the guest as ICMP errors quoting a
//! reconstruction of the guest's datagram header, so a guest's connected UDP socket sees
//! `ECONNREFUSED` as it would on a real network.
//!
//! Flows expire after [`IDLE_TIMEOUT_MS`] without traffic, or [`DNS_TIMEOUT_MS`] for flows that
//! only talked to the DNS proxy (libslirp's `SO_EXPIRE`/`SO_EXPIREFAST`), or
//! [`UNREPLIED_TIMEOUT_MS`] for flows that never got an answer (as conntrack).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use log::debug;
use mio::unix::SourceFd;
use mio::{Interest, Registry};

use super::{flow_token, new_entry, Env, Flow as AnyFlow};
use crate::nat::{FlowId, Key, Proto, Refusal, Table};
use crate::stack::emit::{Unreachable, L2};
use crate::stack::Stack;
use crate::sys;

/// Idle lifetime of a UDP flow (libslirp `SO_EXPIRE`, 240 s).
pub const IDLE_TIMEOUT_MS: u64 = 240_000;
/// Idle lifetime of a flow that only talked to the DNS proxy (libslirp `SO_EXPIREFAST`, 10 s).
pub const DNS_TIMEOUT_MS: u64 = 10_000;
/// Idle lifetime of a flow that never got a reply (conntrack's `nf_conntrack_udp_timeout`,
/// 30 s): a spray of datagrams to closed or silent ports holds its sockets for this long, not
/// [`IDLE_TIMEOUT_MS`].
pub const UNREPLIED_TIMEOUT_MS: u64 = 30_000;
/// Destinations remembered per flow for mapping replies and errors back.
pub const MAX_PEERS: usize = 8;

/// One UDP flow.
pub struct Flow {
    sock: UdpSocket,
    guest: SocketAddr,
    l2: L2,
    readable: bool,
    /// (host target, address the guest sent to), most recent last.
    peers: Vec<(SocketAddr, SocketAddr)>,
    only_dns: bool,
    /// A datagram came back from the host side.
    replied: bool,
    active_ms: u64,
}

/// A datagram from the guest.
#[allow(clippy::too_many_arguments)]
pub fn on_guest_datagram(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    stack: &mut Stack,
    registry: &Registry,
    l2: L2,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    packet: &[u8],
) {
    // Checked for every datagram, not only at flow creation: one flow serves every remote.
    let target = match super::egress::outbound(env, Proto::Udp, src, dst) {
        // To one of tapir's own flow sockets (a port of theirs at an address of this host):
        // its datagrams would come back as "replies" from tapir itself and keep flows alive
        // as answered. The address is only looked at when the port matches.
        Ok(t) if table.is_own_udp_port(t.port()) && sys::net::is_local_addr(t.ip()) => {
            let what = format_args!("{src} -> {dst}");
            super::refuse(env, stack, l2, Proto::Udp, Refusal::Reserved, what, packet);
            return;
        }
        Ok(t) => t,
        Err(refusal) => {
            let what = format_args!("{src} -> {dst}");
            super::refuse(env, stack, l2, Proto::Udp, refusal, what, packet);
            return;
        }
    };
    let key = Key::udp(src);
    let id = match table.lookup(&key) {
        Some(id) => id,
        None => match create(env, table, flows, registry, l2, key, target) {
            Some(id) => id,
            None => {
                env.counters.dropped += 1;
                return;
            }
        },
    };
    let Some(Some(AnyFlow::Udp(flow))) = flows.get_mut(id) else {
        return;
    };
    if target.is_ipv6() != flow.guest.is_ipv6() {
        env.counters.dropped += 1;
        return;
    }
    flow.remember(target, dst, env.rules.is_dns(dst.ip()));
    flow.active_ms = env.now_ms;
    match flow.sock.send_to(payload, target) {
        Ok(_) => {
            table.account(id, payload.len() as u64, 0, env.now_ms);
            if let Some(e) = table.get_mut(id) {
                e.target = target;
            }
        }
        Err(e) => {
            debug!("udp flow {id}: send to {target}: {e}");
            env.counters.host_errors.count(&e);
            env.counters.dropped += 1;
            let kind = match e.raw_os_error() {
                // The DNS proxy cannot reach its upstream: to the guest, N+3 does not serve
                // DNS now (port unreachable is the one error a UDP socket is told of).
                Some(_) if env.rules.is_dns(dst.ip()) => Some(Unreachable::Port),
                Some(libc::ENETUNREACH) => Some(Unreachable::Net),
                Some(libc::EHOSTUNREACH) => Some(Unreachable::Host),
                Some(libc::ECONNREFUSED) => Some(Unreachable::Port),
                _ => None,
            };
            if let Some(kind) = kind {
                let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
                    stack.device.push_tx(f);
                });
            }
        }
    }
}

fn create(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut Vec<Option<AnyFlow>>,
    registry: &Registry,
    l2: L2,
    key: Key,
    target: SocketAddr,
) -> Option<FlowId> {
    super::make_room(env, table, flows, Proto::Udp);
    let id = match table.insert(new_entry(key, target, env.now_ms)) {
        Ok(id) => id,
        Err(full) => {
            debug!("udp {}: {full}", key.guest);
            return None;
        }
    };
    let sock = match sys::net::udp_socket(key.guest.is_ipv6(), env.source_for(target.ip())) {
        Ok(s) => s,
        Err(e) => {
            debug!("udp {}: socket: {e}", key.guest);
            table.remove(id);
            return None;
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
        return None;
    }
    table.set_host_local(id, sock.local_addr().ok());
    env.counters.created[1] += 1;
    debug!("udp {}: new flow {id}", key.guest);
    super::Proxy::store_flow(
        flows,
        id,
        AnyFlow::Udp(Flow {
            sock,
            guest: key.guest,
            l2,
            readable: false,
            peers: Vec::new(),
            only_dns: true,
            replied: false,
            active_ms: env.now_ms,
        }),
    );
    Some(id)
}

impl Flow {
    /// The destinations remembered: (host target, address the guest sent to).
    pub fn peers(&self) -> &[(SocketAddr, SocketAddr)] {
        &self.peers
    }

    fn remember(&mut self, target: SocketAddr, guest_dst: SocketAddr, dns: bool) {
        self.only_dns &= dns;
        if let Some(i) = self.peers.iter().position(|(t, _)| *t == target) {
            let p = self.peers.remove(i);
            self.peers.push((p.0, guest_dst));
            return;
        }
        if self.peers.len() >= MAX_PEERS {
            self.peers.remove(0);
        }
        self.peers.push((target, guest_dst));
    }

    fn guest_view(&self, env: &Env<'_>, from: SocketAddr) -> SocketAddr {
        let from = normalize(from);
        match self.peers.iter().rev().find(|(t, _)| normalize(*t) == from) {
            Some((_, g)) => *g,
            None => env.rules.inbound(from, false, &env.ns),
        }
    }

    /// Readiness of the host socket. Returns true when the flow is finished.
    pub fn on_host_event(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        table: &mut Table,
        id: FlowId,
        readable: bool,
        error: bool,
    ) -> bool {
        if error {
            self.relay_errors(env, stack);
        }
        self.readable |= readable;
        self.drain(env, stack, table, id)
    }

    fn relay_errors(&mut self, env: &mut Env<'_>, stack: &mut Stack) {
        while let Ok(Some(err)) = sys::net::recv_error(&self.sock) {
            let Some(dst) = err.dst else { continue };
            let guest_dst = self.guest_view(env, dst);
            let kind = match err.errno {
                libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
                    if env.rules.is_dns(guest_dst.ip()) =>
                {
                    Unreachable::Port // as for a failed send to the upstream resolver
                }
                libc::ECONNREFUSED => Unreachable::Port,
                libc::EHOSTUNREACH => Unreachable::Host,
                libc::ENETUNREACH => Unreachable::Net,
                _ => continue,
            };
            // Reconstruct the start of the guest's datagram to quote it.
            let mut quoted = Vec::new();
            let l2 = self.l2;
            let _ = env.emitter.udp(l2, self.guest, guest_dst, &[], &mut |f| {
                quoted = f[crate::device::ETHERNET_HEADER_LEN..].to_vec();
            });
            let _ = env.emitter.unreachable(l2, kind, &quoted, &mut |f| {
                stack.device.push_tx(f);
            });
        }
    }

    /// Datagrams may still wait on the host socket (the last drain stopped at a full guest
    /// queue or its batch): drain again after the next wake-up.
    pub fn wants_drain(&self) -> bool {
        self.readable
    }

    /// Relay datagrams from the host while the guest queue has room. Never finishes the flow
    /// (expiry does).
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
            let src = this.guest_view(env, from);
            bytes += n as u64;
            let emitted = env
                .emitter
                .udp(this.l2, src, this.guest, &env.buf[..n], &mut |f| {
                    stack.device.push_tx(f);
                });
            if emitted.is_err() {
                env.counters.dropped += 1;
            }
        });
        match end {
            super::Drained::Pending => {}
            super::Drained::Empty => self.readable = false,
            // A queued ICMP error surfaces as a receive error: relay it.
            super::Drained::Error(_) => {
                self.readable = false;
                self.relay_errors(env, stack);
            }
        }
        if bytes > 0 {
            self.active_ms = env.now_ms;
            self.replied = true;
        }
        table.account(id, 0, bytes, env.now_ms);
        false
    }

    /// Whether the flow has been idle too long.
    pub fn expired(&self, now_ms: u64) -> bool {
        let limit = if self.only_dns {
            DNS_TIMEOUT_MS
        } else if !self.replied {
            UNREPLIED_TIMEOUT_MS
        } else {
            IDLE_TIMEOUT_MS
        };
        now_ms.saturating_sub(self.active_ms) >= limit
    }
}

/// Idle lifetime of a UDP port-forward session.
pub const SESSION_TIMEOUT_MS: u64 = IDLE_TIMEOUT_MS;
/// Most UDP port-forward sessions (distinct clients) at once.
pub const MAX_SESSIONS: usize = crate::nat::MAX_UDP_FLOWS;

#[derive(Debug, Clone, Copy)]
struct Session {
    forward: u64,
    peer: SocketAddr,
    active_ms: u64,
}

/// UDP port-forward sessions.
///
/// A datagram from a client of a UDP forward goes to the guest from the client's address as the
/// guest sees it ([`crate::nat::Rules::inbound_client`]). The guest's replies come back to that
/// address from the forwarded port; they are recognised here by (guest endpoint, client) and
/// sent from the forward's own socket to the real client, so the client sees replies from the
/// port it used. This path bypasses the outbound rules on purpose: a reply to a loopback client
/// must work with `--disable-host-loopback` too (slirp4netns drops it: podman #4586).
#[derive(Debug, Default)]
pub struct Sessions {
    map: std::collections::HashMap<(SocketAddr, SocketAddr), Session>,
}

impl Sessions {
    /// Relay datagrams from the forward socket `sock` (forward `fid`) to `guest`.
    pub fn on_forward_readable(
        &mut self,
        env: &mut Env<'_>,
        stack: &mut Stack,
        fid: u64,
        sock: &UdpSocket,
        l2: L2,
        guest: SocketAddr,
    ) -> super::Drained {
        let map = &mut self.map;
        super::drain_datagrams(env, stack, sock, |env, stack, peer, n| {
            let src = env.rules.inbound_client(peer, guest.is_ipv6());
            let key = (guest, src);
            if !map.contains_key(&key) && map.len() >= MAX_SESSIONS {
                env.counters.dropped += 1;
                return;
            }
            map.insert(
                key,
                Session {
                    forward: fid,
                    peer,
                    active_ms: env.now_ms,
                },
            );
            let emitted = env.emitter.udp(l2, src, guest, &env.buf[..n], &mut |f| {
                stack.device.push_tx(f);
            });
            if emitted.is_err() {
                env.counters.dropped += 1;
            }
        })
    }

    /// If (`src`, `dst`) is a session, send `payload` to its client and return true.
    pub fn reply(
        &mut self,
        forwards: &crate::forward::ForwardTable,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        now_ms: u64,
    ) -> bool {
        let Some(s) = self.map.get_mut(&(src, dst)) else {
            return false;
        };
        s.active_ms = now_ms;
        if let Some(crate::forward::Forward {
            listener: crate::forward::Listener::Udp(sock),
            ..
        }) = forwards.get(s.forward)
        {
            if let Err(e) = sock.send_to(payload, s.peer) {
                debug!("udp forward {}: reply to {}: {e}", s.forward, s.peer);
            }
        }
        true
    }

    /// Forget the sessions of a removed forward.
    pub fn remove_forward(&mut self, fid: u64) {
        self.map.retain(|_, s| s.forward != fid);
    }

    /// Drop idle sessions; returns whether any remain.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        self.map
            .retain(|_, s| now_ms.saturating_sub(s.active_ms) < SESSION_TIMEOUT_MS);
        !self.map.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
fn normalize(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}
