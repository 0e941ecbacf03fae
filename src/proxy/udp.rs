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
//! ICMP errors the host receives for our datagrams arrive on the socket's error queue
//! (`IP_RECVERR`) and are relayed to the guest by the type and code received (see
//! [`error_kind`]): unreachable as unreachable, time exceeded as time exceeded, packet too big /
//! fragmentation needed with its MTU. They come from the address that sent them
//! (`SO_EE_OFFENDER`: a router on the path, or the destination), translated back like a reply's
//! source; errors the host raised itself, and errors about the DNS upstream, from the address
//! the guest sent to. They quote a reconstruction of the guest's datagram header, so a guest's
//! connected UDP socket sees `ECONNREFUSED` or learns the path MTU as it would on a real
//! network.
//!
//! The host socket carries two bits of the guest's IP header, set with `setsockopt` only when
//! they differ from the datagram before (so a flow that keeps them pays nothing per datagram):
//! - "don't fragment": an IPv4 datagram with DF, and every IPv6 datagram the guest did not
//!   fragment itself (a router never fragments IPv6), go out with `IP(V6)_PMTUDISC_DO`. One
//!   larger than the host path's MTU then fails with `EMSGSIZE` and the guest gets ICMP
//!   "fragmentation needed" / ICMPv6 "packet too big" quoting it, with the MTU the kernel
//!   queued, as from a router (counted as `icmp_too_big_sent`). Datagrams the guest fragmented
//!   (reassembled by [`crate::stack::reassembly`]) may be fragmented by the host.
//! - a TTL / hop limit below [`HOPS_PROPAGATED_BELOW`] is passed on (`IP_TTL`,
//!   `IPV6_UNICAST_HOPS`), so `traceroute -U` and `tracepath` see the host path's routers answer
//!   with time exceeded. tapir does not count as a hop itself.
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
use crate::stack::emit::{IcmpError, Unreachable, L2};
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
/// A guest TTL / hop limit below this is given to the host socket (traceroute probes use 1 to
/// 30); at or above it (64 is Linux's default, 128 and 255 other systems') the host's default
/// applies, so ordinary traffic never changes the socket.
pub const HOPS_PROPAGATED_BELOW: u8 = 64;

/// What a guest datagram's IP header asks of the host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBits {
    /// The guest forbade fragmentation (IPv4 DF; IPv6: it did not fragment the datagram).
    pub dont_fragment: bool,
    /// The TTL to send with, or `None` for the host's default.
    pub hops: Option<u8>,
}

impl HeaderBits {
    /// The bits of `packet` (the guest's IP packet; `reassembled` if it arrived in fragments).
    pub fn of(packet: &[u8], reassembled: bool) -> Self {
        let (df, ttl) = if let Ok(p) = smoltcp::wire::Ipv4Packet::new_checked(packet) {
            (p.dont_frag(), p.hop_limit())
        } else if let Ok(p) = smoltcp::wire::Ipv6Packet::new_checked(packet) {
            (true, p.hop_limit())
        } else {
            (false, HOPS_PROPAGATED_BELOW)
        };
        HeaderBits {
            dont_fragment: df && !reassembled,
            // A TTL of 0 is not sendable; 1 reaches as far.
            hops: (ttl < HOPS_PROPAGATED_BELOW).then_some(ttl.max(1)),
        }
    }
}

impl Default for HeaderBits {
    /// A new socket's state: the kernel may fragment, default TTL.
    fn default() -> Self {
        HeaderBits {
            dont_fragment: false,
            hops: None,
        }
    }
}

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
    /// What the host socket is set to.
    bits: HeaderBits,
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
    bits: HeaderBits,
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
    flow.set_bits(bits);
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
                // Larger than the path MTU with "don't fragment": the kernel queued the MTU on
                // the error queue; relay it now, quoting the datagram itself.
                Some(libc::EMSGSIZE) => {
                    flow.relay_errors(env, stack, Some(packet));
                    None
                }
                // The DNS proxy cannot reach its upstream: to the guest, N+3 does not serve
                // DNS now (port unreachable is the one error a UDP socket is told of).
                Some(_) if env.rules.is_dns(dst.ip()) => Some(Unreachable::Port),
                Some(errno) => unreachable_for(errno),
                None => None,
            };
            if let Some(kind) = kind {
                let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
                    stack.device.push_tx(f);
                });
            }
        }
    }
}

/// What to tell the guest about an error queued on a flow socket, by the ICMP type and code
/// received (or, for errors the host raised itself, the errno); `None` for what it need not
/// hear. `dns`: the datagram went to the DNS proxy's upstream, where every unreachable is
/// "port unreachable" (as for a failed send).
pub fn error_kind(err: &sys::net::IcmpError, dns: bool) -> Option<IcmpError> {
    use libc::{SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL};
    let unreachable = match (err.origin, err.icmp_type, err.icmp_code) {
        (SO_EE_ORIGIN_ICMP, 11, 0) | (SO_EE_ORIGIN_ICMP6, 3, 0) => {
            return Some(IcmpError::TimeExceeded)
        }
        (SO_EE_ORIGIN_ICMP, 3, 4) | (SO_EE_ORIGIN_ICMP6, 2, _) => {
            return Some(IcmpError::TooBig { mtu: err.info })
        }
        (SO_EE_ORIGIN_LOCAL, ..) if err.errno == libc::EMSGSIZE => {
            return Some(IcmpError::TooBig { mtu: err.info })
        }
        (SO_EE_ORIGIN_ICMP, 3, code) => match code {
            0 | 6 | 11 => Unreachable::Net,
            3 => Unreachable::Port,
            9 | 10 | 13 => Unreachable::Prohibited,
            _ => Unreachable::Host,
        },
        (SO_EE_ORIGIN_ICMP6, 1, code) => match code {
            0 => Unreachable::Net,
            1 | 5 | 6 => Unreachable::Prohibited,
            4 => Unreachable::Port,
            _ => Unreachable::Host,
        },
        // Raised by the host itself (e.g. no neighbour answered), or a message not mapped
        // above: by the errno the kernel derived.
        _ => unreachable_for(err.errno)?,
    };
    Some(IcmpError::Unreachable(if dns {
        Unreachable::Port
    } else {
        unreachable
    }))
}

/// The unreachable error a UDP send or queued error with `errno` becomes for the guest, if any
/// (the same errnos whether `send_to` returned them or the error queue held them).
fn unreachable_for(errno: i32) -> Option<Unreachable> {
    match errno {
        libc::ECONNREFUSED => Some(Unreachable::Port),
        libc::EHOSTUNREACH => Some(Unreachable::Host),
        libc::ENETUNREACH => Some(Unreachable::Net),
        _ => None,
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
            bits: HeaderBits::default(),
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
            self.relay_errors(env, stack, None);
        }
        self.readable |= readable;
        self.drain(env, stack, table, id)
    }

    /// Set the host socket to `bits` where it differs (see the module's theory).
    fn set_bits(&mut self, bits: HeaderBits) {
        let v6 = self.guest.is_ipv6();
        if bits.dont_fragment != self.bits.dont_fragment {
            match sys::net::set_dont_fragment(&self.sock, v6, bits.dont_fragment) {
                Ok(()) => self.bits.dont_fragment = bits.dont_fragment,
                Err(e) => debug!("udp {}: don't fragment: {e}", self.guest),
            }
        }
        if bits.hops != self.bits.hops {
            match sys::net::set_hop_limit(&self.sock, v6, bits.hops) {
                Ok(()) => self.bits.hops = bits.hops,
                Err(e) => debug!("udp {}: hop limit: {e}", self.guest),
            }
        }
    }

    /// Relay the errors queued on the host socket. `sent`, the guest's packet whose send just
    /// failed with `EMSGSIZE`, is quoted in the "too big" error the host queued for it.
    fn relay_errors(&mut self, env: &mut Env<'_>, stack: &mut Stack, mut sent: Option<&[u8]>) {
        while let Ok(Some(err)) = sys::net::recv_error(&self.sock) {
            let Some(dst) = err.dst else { continue };
            let guest_dst = self.guest_view(env, dst);
            let dns = env.rules.is_dns(guest_dst.ip());
            let Some(kind) = error_kind(&err, dns) else {
                continue;
            };
            // From the router that reported it, as the guest sees that address; from the
            // destination for the host's own errors and for DNS (the guest talks to N+3).
            let from = match err.offender {
                Some(o) if !dns => self.guest_view(env, SocketAddr::new(o, dst.port())).ip(),
                _ => guest_dst.ip(),
            };
            let mut quoted = Vec::new();
            let l2 = self.l2;
            let local_too_big =
                err.origin == libc::SO_EE_ORIGIN_LOCAL && matches!(kind, IcmpError::TooBig { .. });
            match sent.take_if(|_| local_too_big) {
                Some(packet) => quoted.extend_from_slice(packet),
                // Reconstruct the start of the guest's datagram to quote it.
                None => {
                    let _ = env.emitter.udp(l2, self.guest, guest_dst, &[], &mut |f| {
                        quoted = f[crate::device::ETHERNET_HEADER_LEN..].to_vec();
                    });
                }
            }
            let sent = env
                .emitter
                .icmp_error(l2, kind, Some(from), &quoted, &mut |f| {
                    stack.device.push_tx(f);
                });
            if sent.is_ok() && matches!(kind, IcmpError::TooBig { .. }) {
                env.counters.too_big_sent += 1;
            }
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
                self.relay_errors(env, stack, None);
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
        now_ms >= self.expires_ms()
    }

    /// When the flow expires unless traffic comes first (runtime clock, ms).
    pub fn expires_ms(&self) -> u64 {
        let limit = if self.only_dns {
            DNS_TIMEOUT_MS
        } else if !self.replied {
            UNREPLIED_TIMEOUT_MS
        } else {
            IDLE_TIMEOUT_MS
        };
        self.active_ms.saturating_add(limit)
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

    /// Sessions open.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No session is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forget the sessions of a removed forward.
    pub fn remove_forward(&mut self, fid: u64) {
        self.map.retain(|_, s| s.forward != fid);
    }

    /// Drop idle sessions; returns when the next of the others expires.
    pub fn expire(&mut self, now_ms: u64) -> Option<u64> {
        self.map
            .retain(|_, s| now_ms.saturating_sub(s.active_ms) < SESSION_TIMEOUT_MS);
        self.map
            .values()
            .map(|s| s.active_ms.saturating_add(SESSION_TIMEOUT_MS))
            .min()
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

#[cfg(test)]
mod tests {
    use super::*;
    use libc::{SO_EE_ORIGIN_ICMP as ICMP, SO_EE_ORIGIN_ICMP6 as ICMP6, SO_EE_ORIGIN_LOCAL};

    fn err(origin: u8, icmp_type: u8, icmp_code: u8, errno: i32, info: u32) -> sys::net::IcmpError {
        sys::net::IcmpError {
            errno,
            origin,
            icmp_type,
            icmp_code,
            info,
            offender: None,
            dst: None,
        }
    }

    #[test]
    fn errors_map_by_what_was_received() {
        use IcmpError::*;
        let cases = [
            // Time exceeded no longer becomes host unreachable.
            (err(ICMP, 11, 0, libc::EHOSTUNREACH, 0), TimeExceeded),
            (err(ICMP6, 3, 0, libc::EHOSTUNREACH, 0), TimeExceeded),
            // Too big, from the network or from this host, with the MTU.
            (err(ICMP, 3, 4, libc::EMSGSIZE, 1400), TooBig { mtu: 1400 }),
            (err(ICMP6, 2, 0, libc::EMSGSIZE, 1280), TooBig { mtu: 1280 }),
            (
                err(SO_EE_ORIGIN_LOCAL, 0, 0, libc::EMSGSIZE, 1500),
                TooBig { mtu: 1500 },
            ),
            // Unreachable codes.
            (
                err(ICMP, 3, 3, libc::ECONNREFUSED, 0),
                Unreachable(super::Unreachable::Port),
            ),
            (
                err(ICMP, 3, 1, libc::EHOSTUNREACH, 0),
                Unreachable(super::Unreachable::Host),
            ),
            (
                err(ICMP, 3, 0, libc::ENETUNREACH, 0),
                Unreachable(super::Unreachable::Net),
            ),
            (
                err(ICMP, 3, 13, libc::EHOSTUNREACH, 0),
                Unreachable(super::Unreachable::Prohibited),
            ),
            (
                err(ICMP6, 1, 4, libc::ECONNREFUSED, 0),
                Unreachable(super::Unreachable::Port),
            ),
            (
                err(ICMP6, 1, 3, libc::EHOSTUNREACH, 0),
                Unreachable(super::Unreachable::Host),
            ),
            (
                err(ICMP6, 1, 0, libc::ENETUNREACH, 0),
                Unreachable(super::Unreachable::Net),
            ),
            (
                err(ICMP6, 1, 1, libc::EACCES, 0),
                Unreachable(super::Unreachable::Prohibited),
            ),
            // The host's own errors, by errno.
            (
                err(SO_EE_ORIGIN_LOCAL, 0, 0, libc::EHOSTUNREACH, 0),
                Unreachable(super::Unreachable::Host),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(error_kind(&e, false), Some(want), "{e:?}");
        }
        // Nothing to say about other local errors or other ICMP messages.
        assert_eq!(
            error_kind(&err(SO_EE_ORIGIN_LOCAL, 0, 0, libc::ENOBUFS, 0), false),
            None
        );
        assert_eq!(error_kind(&err(ICMP, 12, 0, libc::EPROTO, 0), false), None);
        // DNS: every unreachable is "port unreachable"; time exceeded stays what it is.
        let dns = error_kind(&err(ICMP6, 1, 3, libc::EHOSTUNREACH, 0), true);
        assert_eq!(dns, Some(Unreachable(super::Unreachable::Port)));
        assert_eq!(
            error_kind(&err(ICMP, 11, 0, libc::EHOSTUNREACH, 0), true),
            Some(TimeExceeded)
        );
    }

    #[test]
    fn header_bits_follow_df_reassembly_and_small_ttls() {
        use crate::stack::emit::Emitter;
        let l2 = L2 {
            src: smoltcp::wire::EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst: smoltcp::wire::EthernetAddress([2, 0, 0, 0, 0, 2]),
        };
        let mut e = Emitter::new(1500);
        let mut packet = |src: &str, dst: &str| {
            let mut p = Vec::new();
            e.udp(
                l2,
                src.parse().unwrap(),
                dst.parse().unwrap(),
                b"x",
                &mut |f| p = f[14..].to_vec(),
            )
            .unwrap();
            p
        };
        let mut v4 = packet("10.0.2.100:1", "192.0.2.1:2");
        let v6 = packet("[fd00::100]:1", "[2001:db8::1]:2");
        // The emitter's packets carry DF (IPv4) and hop limit 64: nothing propagated.
        let big = HeaderBits::of(&v4, false);
        assert_eq!(
            big,
            HeaderBits {
                dont_fragment: true,
                hops: None
            }
        );
        assert_eq!(HeaderBits::of(&v6, false), big);
        // Reassembled: the host may fragment.
        assert!(!HeaderBits::of(&v4, true).dont_fragment);
        assert!(!HeaderBits::of(&v6, true).dont_fragment);
        // A traceroute probe's TTL is passed on; 0 is sent as 1.
        let mut p = smoltcp::wire::Ipv4Packet::new_unchecked(&mut v4[..]);
        p.set_hop_limit(3);
        p.set_dont_frag(false);
        assert_eq!(
            HeaderBits::of(&v4, false),
            HeaderBits {
                dont_fragment: false,
                hops: Some(3)
            }
        );
        smoltcp::wire::Ipv4Packet::new_unchecked(&mut v4[..]).set_hop_limit(0);
        assert_eq!(HeaderBits::of(&v4, false).hops, Some(1));
        assert_eq!(HeaderBits::of(&[], false), HeaderBits::default());
    }
}
