//! The NAT table (tapir's conntrack) and the address-translation rules.
//!
//! # Theory of operation
//!
//! Every flow the guest starts is one [`Entry`] in the [`Table`], found by its [`Key`] through a
//! hash map (never a scan of all sockets). The key is the flow as the guest sees it:
//!
//! - TCP: (guest address:port, remote address:port);
//! - UDP: (guest address:port) only, remote unspecified: the mapping is endpoint-independent as
//!   in libslirp, so one host socket serves every remote the guest talks to from that port and
//!   replies from any remote reach the guest;
//! - ICMP echo: (guest address, echo identifier as the port), remote unspecified.
//!
//! The table has a fixed capacity per protocol ([`MAX_TCP_FLOWS`], [`MAX_UDP_FLOWS`],
//! [`MAX_ICMP_FLOWS`]); a flow beyond it is refused (the caller answers the guest with RST or
//! ICMP) and counted in [`Table::refused`].
//!
//! Like conntrack, the table knows which flows are *confirmed*: a TCP flow once both its sides
//! are connected ([`State::Connecting`] left behind), a UDP or ICMP flow once a reply came
//! back. Unconfirmed flows are kept oldest first, so that under pressure ([`Table::pressure`],
//! [`EARLY_DROP_PERCENT`] of a protocol's capacity) the proxy reclaims the oldest of them for a
//! new flow ([`Table::oldest_unconfirmed`]): a SYN flood or a spray of UDP to closed ports
//! then costs the flood its own flows, not the guest's real connections or its DNS.
//!
//! [`Rules`] decide where a guest destination goes on the host (spec §3.5): the gateway N+2 is
//! the host's loopback (unless `--disable-host-loopback`), N+3:53 is the first resolver of the
//! same family from resolv.conf (unless `--disable-dns`), any other port of N+3 is refused,
//! fd00::2 maps to `::1`. Addresses that would reach the host's loopback or nobody if proxied
//! as they are (127/8, 0/8, broadcast, multicast, the virtual network's other addresses, `::1`,
//! `::`, link-local, IPv4-mapped IPv6, the rest of fd00::/64) are refused before a host socket
//! exists, and so are guest frames from such source addresses ([`Rules::guest_source_ok`]);
//! every other address passes through unchanged. The reverse direction ([`Rules::inbound`])
//! maps host loopback sources back to the gateway.
//!
//! This module is pure data: no file descriptors, no smoltcp sockets, no clock reads.

pub mod journal;
pub mod resolv;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Network, Network6};
use resolv::Nameservers;

/// Most concurrent TCP flows. Each holds one host fd and up to two socket buffers; 4096 is far
/// above what a container opens through a user-mode stack and well inside the fd limit tapir
/// raises itself to.
pub const MAX_TCP_FLOWS: usize = 4096;
/// Most concurrent UDP flows (one host socket per guest source port).
pub const MAX_UDP_FLOWS: usize = 1024;
/// Most concurrent ICMP echo flows (one host socket per guest echo identifier).
pub const MAX_ICMP_FLOWS: usize = 256;
/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// Fill level (percent of a protocol's capacity) from which the oldest unconfirmed flow is
/// reclaimed for each new one, as conntrack's early drop and Linux's SYN cookies keep a
/// flooded table usable. Below it, nothing is reclaimed early.
pub const EARLY_DROP_PERCENT: usize = 90;

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP / ICMPv6 echo.
    Icmp,
}

impl Proto {
    fn capacity(self) -> usize {
        match self {
            Proto::Tcp => MAX_TCP_FLOWS,
            Proto::Udp => MAX_UDP_FLOWS,
            Proto::Icmp => MAX_ICMP_FLOWS,
        }
    }

    /// Lower-case name, as in slirp4netns's API (`tcp`, `udp`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// A flow as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Protocol.
    pub proto: Proto,
    /// Guest endpoint (for ICMP the port is the echo identifier).
    pub guest: SocketAddr,
    /// Remote endpoint as the guest addressed it (unspecified for UDP and ICMP).
    pub remote: SocketAddr,
}

impl Key {
    /// TCP key.
    pub fn tcp(guest: SocketAddr, remote: SocketAddr) -> Key {
        Key {
            proto: Proto::Tcp,
            guest,
            remote,
        }
    }

    /// UDP key (endpoint-independent).
    pub fn udp(guest: SocketAddr) -> Key {
        Key {
            proto: Proto::Udp,
            guest,
            remote: unspecified_like(guest.ip()),
        }
    }

    /// ICMP echo key.
    pub fn icmp(guest: IpAddr, ident: u16) -> Key {
        Key {
            proto: Proto::Icmp,
            guest: SocketAddr::new(guest, ident),
            remote: unspecified_like(guest),
        }
    }
}

fn unspecified_like(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// Index of a flow in the table. Stable for the flow's lifetime; reused after removal, so holders
/// must drop it when the flow goes.
pub type FlowId = usize;

/// Where a flow is in its life (for diagnostics; the proxies own the real state machines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP: the host connect (outbound) or the guest connect (port forward) is in flight.
    Connecting,
    /// TCP: both directions open.
    Open,
    /// TCP: one direction has finished.
    HalfClosed,
    /// UDP and ICMP: the host socket is live until it expires.
    Active,
}

impl State {
    /// Lower-case name for logs and the API.
    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::HalfClosed => "half-closed",
            State::Active => "active",
        }
    }
}

/// One flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Guest-side identity.
    pub key: Key,
    /// Where the host socket talks to (after translation); for UDP the last destination.
    pub target: SocketAddr,
    /// Local address of the host socket, once known.
    pub host_local: Option<SocketAddr>,
    /// Life-cycle state.
    pub state: State,
    /// Bytes guest -> host.
    pub bytes_out: u64,
    /// Bytes host -> guest.
    pub bytes_in: u64,
    /// Packets guest -> host: datagrams for UDP and ICMP, guest segments for TCP (spliced
    /// flows never see packets and stay at 0).
    pub packets_out: u64,
    /// Packets host -> guest (datagrams, or TCP segments sent to the guest).
    pub packets_in: u64,
    /// Creation time (milliseconds on the runtime clock).
    pub created_ms: u64,
    /// Last activity (milliseconds on the runtime clock).
    pub active_ms: u64,
}

impl Entry {
    /// Whether the flow is confirmed: TCP connected on both sides (or past that), UDP and ICMP
    /// answered at least once.
    pub fn confirmed(&self) -> bool {
        match self.key.proto {
            Proto::Tcp => self.state != State::Connecting,
            Proto::Udp | Proto::Icmp => self.bytes_in > 0,
        }
    }
}

/// The table is full for this protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many {} flows (limit {limit})", proto.name())]
pub struct Full {
    /// Protocol whose limit was hit.
    pub proto: Proto,
    /// The limit.
    pub limit: usize,
}

/// Flow table: hash lookup by key, slab storage by id.
#[derive(Debug, Default)]
pub struct Table {
    map: HashMap<Key, FlowId>,
    slots: Vec<Option<Entry>>,
    free: Vec<FlowId>,
    counts: [usize; 3],
    refused: u64,
    /// Unconfirmed flows per protocol, oldest first: (creation time, id).
    unconfirmed: [BTreeSet<(u64, FlowId)>; 3],
    /// Local ports of the UDP flows' host sockets (with how many flows hold each: sockets of
    /// both families may share one), so the guest cannot address tapir's own sockets.
    udp_ports: HashMap<u16, usize>,
    /// New and closed flows for `watch_flows` (records only while enabled).
    journal: journal::Journal,
    /// Why flows being ended elsewhere will close, when it is not how they end (a TCP flow
    /// the policy kills closes later, after its RST, through the ordinary path).
    close_reasons: HashMap<FlowId, journal::CloseReason>,
}

fn proto_index(p: Proto) -> usize {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Icmp => 2,
    }
}

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Find a flow by its guest-side key.
    pub fn lookup(&self, key: &Key) -> Option<FlowId> {
        self.map.get(key).copied()
    }

    /// Insert a new flow; refuses (and counts) beyond the protocol's capacity. An existing flow
    /// with the same key is returned unchanged.
    pub fn insert(&mut self, entry: Entry) -> Result<FlowId, Full> {
        if let Some(id) = self.map.get(&entry.key) {
            return Ok(*id);
        }
        let proto = entry.key.proto;
        let i = proto_index(proto);
        if self.counts[i] >= proto.capacity() {
            self.refused += 1;
            return Err(Full {
                proto,
                limit: proto.capacity(),
            });
        }
        self.counts[i] += 1;
        let key = entry.key;
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id] = Some(entry);
                id
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.map.insert(key, id);
        if let Some(e) = self.slots.get(id).and_then(Option::as_ref) {
            if !e.confirmed() {
                self.unconfirmed[i].insert((e.created_ms, id));
            }
            self.journal.record(|| journal::Event::New(id, e.clone()));
        }
        Ok(id)
    }

    /// Record why flow `id` will close, whatever path removes it later.
    pub fn set_close_reason(&mut self, id: FlowId, reason: journal::CloseReason) {
        if self.slots.get(id).is_some_and(Option::is_some) {
            self.close_reasons.insert(id, reason);
        }
    }

    /// Remove a flow whose setup failed, returning it.
    pub fn remove(&mut self, id: FlowId) -> Option<Entry> {
        self.remove_because(id, journal::CloseReason::SetupFailed)
    }

    /// Remove a flow for `reason`, returning it. A TCP flow that ends [`journal::CloseReason::Done`]
    /// while still connecting is journaled as [`journal::CloseReason::ConnectFailed`].
    pub fn remove_because(&mut self, id: FlowId, reason: journal::CloseReason) -> Option<Entry> {
        let e = self.slots.get_mut(id)?.take()?;
        let reason = self.close_reasons.remove(&id).unwrap_or(reason);
        self.journal.record(|| {
            let reason = match (e.key.proto, e.state, reason) {
                (Proto::Tcp, State::Connecting, journal::CloseReason::Done) => {
                    journal::CloseReason::ConnectFailed
                }
                _ => reason,
            };
            journal::Event::Closed(id, e.clone(), reason)
        });
        self.map.remove(&e.key);
        let i = proto_index(e.key.proto);
        self.counts[i] -= 1;
        self.unconfirmed[i].remove(&(e.created_ms, id));
        self.forget_udp_port(&e);
        self.free.push(id);
        Some(e)
    }

    /// Record the local address of flow `id`'s host socket.
    pub fn set_host_local(&mut self, id: FlowId, local: Option<SocketAddr>) {
        let Some(e) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let old = std::mem::replace(&mut e.host_local, local);
        if e.key.proto == Proto::Udp {
            let port = local.map(|a| a.port());
            if old.map(|a| a.port()) != port {
                if let Some(p) = old {
                    self.release_udp_port(p.port());
                }
                if let Some(p) = port {
                    *self.udp_ports.entry(p).or_insert(0) += 1;
                }
            }
        }
    }

    /// Whether `port` is the local port of one of the UDP flows' host sockets: a datagram the
    /// guest sends there through the host's loopback would reach tapir itself.
    pub fn is_own_udp_port(&self, port: u16) -> bool {
        self.udp_ports.contains_key(&port)
    }

    fn forget_udp_port(&mut self, e: &Entry) {
        if e.key.proto == Proto::Udp {
            if let Some(a) = e.host_local {
                self.release_udp_port(a.port());
            }
        }
    }

    fn release_udp_port(&mut self, port: u16) {
        if let Some(n) = self.udp_ports.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.udp_ports.remove(&port);
            }
        }
    }

    /// Set the state of flow `id`; a TCP flow leaving [`State::Connecting`] is confirmed.
    pub fn set_state(&mut self, id: FlowId, state: State) {
        let Some(e) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        e.state = state;
        if e.confirmed() {
            let (created, i) = (e.created_ms, proto_index(e.key.proto));
            self.unconfirmed[i].remove(&(created, id));
        }
    }

    /// Whether `proto`'s flows fill [`EARLY_DROP_PERCENT`] of its capacity or more.
    pub fn pressure(&self, proto: Proto) -> bool {
        self.count(proto) * 100 >= proto.capacity() * EARLY_DROP_PERCENT
    }

    /// The oldest flow of `proto` that is not confirmed yet.
    pub fn oldest_unconfirmed(&self, proto: Proto) -> Option<FlowId> {
        self.unconfirmed[proto_index(proto)]
            .first()
            .map(|&(_, id)| id)
    }

    /// Unconfirmed flows of `proto`.
    pub fn unconfirmed(&self, proto: Proto) -> usize {
        self.unconfirmed[proto_index(proto)].len()
    }

    /// A flow by id.
    pub fn get(&self, id: FlowId) -> Option<&Entry> {
        self.slots.get(id)?.as_ref()
    }

    /// A flow by id, mutably.
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Entry> {
        self.slots.get_mut(id)?.as_mut()
    }

    /// Count traffic of flow `id` (bytes guest -> host, host -> guest) at `now_ms`; any
    /// traffic refreshes its activity time. Unknown ids are ignored.
    pub fn account(&mut self, id: FlowId, out: u64, inn: u64, now_ms: u64) {
        let Some(e) = self.slots.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let was = e.confirmed();
        e.bytes_out += out;
        e.bytes_in += inn;
        if e.key.proto != Proto::Tcp {
            // One call per datagram; TCP counts segments apart (`count_packets`).
            e.packets_out += u64::from(out > 0);
            e.packets_in += u64::from(inn > 0);
        }
        if out + inn > 0 {
            e.active_ms = now_ms;
        }
        if !was && e.confirmed() {
            let (created, i) = (e.created_ms, proto_index(e.key.proto));
            self.unconfirmed[i].remove(&(created, id));
        }
    }

    /// Count packets of flow `id` (guest -> host, host -> guest) that [`Table::account`] does
    /// not see: TCP segments. Unknown ids are ignored.
    pub fn count_packets(&mut self, id: FlowId, out: u64, inn: u64) {
        if let Some(e) = self.slots.get_mut(id).and_then(Option::as_mut) {
            e.packets_out += out;
            e.packets_in += inn;
        }
    }

    /// The new/closed flow journal (see [`journal`]).
    pub fn journal_mut(&mut self) -> &mut journal::Journal {
        &mut self.journal
    }

    /// Number of live flows.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no flows.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Live flows of one protocol.
    pub fn count(&self, proto: Proto) -> usize {
        self.counts[proto_index(proto)]
    }

    /// Flows refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// All live flows.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
    }
}

/// Why a guest destination is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `--disable-host-loopback` forbids the gateway address.
    #[error("host loopback is disabled")]
    HostLoopbackDisabled,
    /// Only port 53 of the DNS address is served.
    #[error("only port 53 of the DNS address is served")]
    NotDns,
    /// The resolv.conf has no nameserver of this family.
    #[error("no upstream nameserver")]
    NoNameserver,
    /// A broadcast or multicast destination (no ICMP error may answer it, RFC 1122 3.2.2).
    #[error("not a unicast destination")]
    NotUnicast,
    /// An address that would reach the host itself or no host at all if proxied as it is:
    /// loopback, unspecified, "this network" (0.0.0.0/8), link-local IPv6, IPv4-mapped or
    /// -compatible IPv6, and the virtual network's addresses that no virtual host owns.
    #[error("reserved destination")]
    Reserved,
    /// IPv6 is not enabled (`--enable-ipv6` was not given).
    #[error("IPv6 is disabled")]
    Ipv6Disabled,
    /// IPv4 is not served (pasta's `--ipv6-only`).
    #[error("IPv4 is disabled")]
    Ipv4Disabled,
    /// The egress policy ([`crate::policy`]) denied the translated destination.
    #[error("denied by the egress policy")]
    Denied,
}

/// Address translation policy (immutable, built from the configuration).
///
/// The destination check is an allowlist in spirit: the mapping addresses (the loopback alias,
/// the DNS address, pasta's guest alias) are translated; every address that would reach the
/// host's loopback or no real host if proxied as it is, is refused before any host socket is
/// made (slirp4netns 1.2 proxies 127.0.0.1, 0.0.0.0 and 255.255.255.255 from a guest that
/// writes raw frames, so `--disable-host-loopback` can be walked around there); what remains
/// is an ordinary remote address and passes through unchanged. In slirp4netns mode the whole
/// prefix is virtual and its unowned addresses are refused; in pasta mode the prefix is the
/// host's own network and its addresses are remotes like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The IPv4 network.
    pub net: Network,
    /// The IPv6 network.
    pub net6: Network6,
    /// Whether IPv4 is served.
    pub ipv4: bool,
    /// Whether IPv6 is served.
    pub ipv6: bool,
    /// Whether the loopback alias reaches the host's loopback.
    pub host_loopback: bool,
    /// Whether the IPv4 DNS address forwards to the host's resolver.
    pub dns: bool,
}

impl Rules {
    /// Build from the configuration.
    pub fn new(cfg: &crate::config::Config) -> Self {
        Rules {
            net: cfg.net,
            net6: cfg.net6,
            ipv4: cfg.ipv4,
            ipv6: cfg.ipv6,
            host_loopback: !cfg.disable_host_loopback,
            dns: !cfg.disable_dns,
        }
    }

    /// Whether `dst` is the DNS forwarding address (and DNS is enabled).
    pub fn is_dns(&self, dst: IpAddr) -> bool {
        match dst {
            IpAddr::V4(a) => self.dns && a == self.net.dns,
            IpAddr::V6(a) => self.ipv6 && self.net6.dns_enabled && a == self.net6.dns,
        }
    }

    /// Where a guest flow to `dst` goes on the host. Checked before any host socket is made.
    pub fn outbound(
        &self,
        proto: Proto,
        dst: SocketAddr,
        ns: &Nameservers,
    ) -> Result<SocketAddr, Refusal> {
        if dst.is_ipv6() && !self.ipv6 {
            return Err(Refusal::Ipv6Disabled);
        }
        if dst.is_ipv4() && !self.ipv4 {
            return Err(Refusal::Ipv4Disabled);
        }
        if self.is_dns(dst.ip()) && proto != Proto::Icmp {
            if dst.port() == DNS_PORT {
                return match dst.ip() {
                    IpAddr::V4(_) => ns
                        .v4
                        .map(|a| SocketAddr::new(IpAddr::V4(a), DNS_PORT))
                        .ok_or(Refusal::NoNameserver),
                    IpAddr::V6(_) => ns
                        .v6
                        .map(|a| {
                            SocketAddr::V6(std::net::SocketAddrV6::new(a, DNS_PORT, 0, ns.v6_scope))
                        })
                        .ok_or(Refusal::NoNameserver),
                };
            }
            if self.is_virtual(dst.ip()) {
                return Err(Refusal::NotDns);
            }
        }
        match dst.ip() {
            IpAddr::V4(a) if a == self.net.loopback_alias => {
                if self.host_loopback {
                    return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dst.port()));
                }
                if self.net.virtual_subnet {
                    return Err(Refusal::HostLoopbackDisabled);
                }
            }
            IpAddr::V6(a) if Some(a) == self.net6.loopback_alias => {
                if self.host_loopback {
                    return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), dst.port()));
                }
                if self.net6.virtual_subnet {
                    return Err(Refusal::HostLoopbackDisabled);
                }
            }
            IpAddr::V4(a) if Some(a) == self.net.guest_alias => {
                return Ok(SocketAddr::new(IpAddr::V4(self.net.guest), dst.port()));
            }
            IpAddr::V6(a) if Some(a) == self.net6.guest_alias => {
                if let Some(g) = self.net6.guest {
                    return Ok(SocketAddr::new(IpAddr::V6(g), dst.port()));
                }
            }
            _ => {}
        }
        self.check_remote(dst.ip())?;
        Ok(dst)
    }

    /// Whether `ip` is one of the virtual network's own addresses (slirp4netns mode only: in
    /// pasta mode the gateway and DNS addresses are the host network's).
    fn is_virtual(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.net.virtual_subnet && self.net.contains(a),
            IpAddr::V6(a) => self.net6.virtual_subnet && self.net6.contains(a),
        }
    }

    /// Whether `ip`, which is no mapping address, may be proxied as it is.
    fn check_remote(&self, ip: IpAddr) -> Result<(), Refusal> {
        match ip {
            IpAddr::V4(a) => {
                if a.is_multicast() || a.is_broadcast() || a == self.net.broadcast() {
                    Err(Refusal::NotUnicast)
                } else if reserved_v4(a) || self.is_virtual(ip) || a == self.net.guest {
                    // A virtual network holds no host but the virtual ones (the guest's own
                    // address never comes through the tap): its other addresses, the network
                    // address among them, are nobody's, and must not reach a host network
                    // that happens to use the same range. In pasta mode the guest's address is
                    // the host's own: only the guest alias reaches it.
                    Err(Refusal::Reserved)
                } else {
                    Ok(())
                }
            }
            IpAddr::V6(a) => {
                if a.is_multicast() {
                    Err(Refusal::NotUnicast)
                } else if a.is_unspecified()
                    || a.is_loopback()
                    || a.is_unicast_link_local()
                    || embedded_v4(a).is_some()
                    || self.is_virtual(ip)
                    || Some(a) == self.net6.guest
                {
                    Err(Refusal::Reserved)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether the guest may use `src` as its source address: never one that is the host's
    /// (loopback), nobody's (unspecified, "this network", broadcast, multicast, IPv4-mapped
    /// or -compatible IPv6), or one of the addresses tapir answers for. Frames from such
    /// sources are dropped before they reach a proxy or smoltcp.
    pub fn guest_source_ok(&self, src: IpAddr) -> bool {
        match src {
            IpAddr::V4(a) => {
                !(reserved_v4(a)
                    || a.is_multicast()
                    || a.is_broadcast()
                    || a == self.net.broadcast()
                    || a == self.net.gateway
                    || a == self.net.dns
                    || a == self.net.loopback_alias
                    || Some(a) == self.net.guest_alias)
            }
            IpAddr::V6(a) => {
                !(a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || embedded_v4(a).is_some()
                    || a == self.net6.gateway
                    || a == self.net6.dns
                    || a == self.net6.router_ll
                    || Some(a) == self.net6.loopback_alias
                    || Some(a) == self.net6.guest_alias)
            }
        }
    }

    /// The address a host-side peer that the guest cannot see (loopback, unspecified, the
    /// other family) appears as: the loopback alias (the gateway by default).
    fn host_alias(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.net6.loopback_alias.unwrap_or(self.net6.gateway))
        } else {
            IpAddr::V4(self.net.loopback_alias)
        }
    }

    /// A host peer at the guest's own address (pasta mode: the host's address, which the guest
    /// shadows) appears as the guest alias when there is one.
    fn shadowed(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(a) if !self.net.virtual_subnet && a == self.net.guest => {
                self.net.guest_alias.map(IpAddr::V4)
            }
            IpAddr::V6(a) if !self.net6.virtual_subnet && Some(a) == self.net6.guest => {
                self.net6.guest_alias.map(IpAddr::V6)
            }
            _ => None,
        }
    }

    /// How a client of a port forward appears to the guest (libslirp `sotranslate_accept`):
    /// loopback and unspecified clients appear as the loopback alias (the gateway); every other
    /// client keeps its address, so the container sees who connected. A client of the other
    /// address family than the guest address also appears as the alias (it cannot be
    /// represented).
    pub fn inbound_client(&self, peer: SocketAddr, guest_v6: bool) -> SocketAddr {
        let peer = match peer.ip() {
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), peer.port()),
                None => peer,
            },
            IpAddr::V4(_) => peer,
        };
        if let Some(alias) = self.shadowed(peer.ip()) {
            return SocketAddr::new(alias, peer.port());
        }
        let keep = match peer.ip() {
            IpAddr::V4(a) => !guest_v6 && !a.is_loopback() && !a.is_unspecified(),
            IpAddr::V6(a) => guest_v6 && !a.is_loopback() && !a.is_unspecified(),
        };
        if keep {
            peer
        } else {
            SocketAddr::new(self.host_alias(guest_v6), peer.port())
        }
    }

    /// How a host peer appears to the guest: loopback sources become the loopback alias (spec
    /// §2, libslirp `sotranslate_in`/`sotranslate_accept`); a reply from the resolver to a DNS
    /// flow appears to come from the DNS address; the host's own address (pasta mode) appears
    /// as the guest alias; everything else is preserved.
    pub fn inbound(&self, from: SocketAddr, dns_flow: bool, ns: &Nameservers) -> SocketAddr {
        if dns_flow && from.port() == DNS_PORT {
            match from.ip() {
                IpAddr::V4(a) if Some(a) == ns.v4 => {
                    return SocketAddr::new(IpAddr::V4(self.net.dns), DNS_PORT)
                }
                IpAddr::V6(a) if Some(a) == ns.v6 => {
                    return SocketAddr::new(IpAddr::V6(self.net6.dns), DNS_PORT)
                }
                _ => {}
            }
        }
        if let Some(alias) = self.shadowed(from.ip()) {
            return SocketAddr::new(alias, from.port());
        }
        match from.ip() {
            IpAddr::V4(a) if a.is_loopback() || a.is_unspecified() => {
                SocketAddr::new(self.host_alias(false), from.port())
            }
            IpAddr::V6(a) if a.is_loopback() || a.is_unspecified() => {
                SocketAddr::new(self.host_alias(true), from.port())
            }
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => {
                    self.inbound(SocketAddr::new(IpAddr::V4(v4), from.port()), dns_flow, ns)
                }
                None => from,
            },
            _ => from,
        }
    }
}

/// 0.0.0.0/8 ("this network", RFC 1122: never a destination) and 127.0.0.0/8 (loopback).
fn reserved_v4(a: Ipv4Addr) -> bool {
    a.octets()[0] == 0 || a.is_loopback()
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or IPv4-compatible (`::a.b.c.d`,
/// deprecated by RFC 4291) IPv6 address. A host socket would carry such a destination over
/// IPv4, so `::ffff:127.0.0.1` would be the host's loopback: no such address is proxied.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let compatible = a.segments()[..6] == [0; 6] && !(a.is_unspecified() || a.is_loopback());
    (compatible || a.to_ipv4_mapped().is_some()).then(|| {
        let [.., a0, a1, a2, a3] = a.octets();
        Ipv4Addr::new(a0, a1, a2, a3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entry(key: Key) -> Entry {
        Entry {
            key,
            target: key.remote,
            host_local: None,
            state: State::Active,
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            created_ms: 0,
            active_ms: 0,
        }
    }

    fn rules() -> Rules {
        Rules {
            net: Network::default(),
            net6: Network6::default(),
            ipv4: true,
            ipv6: true,
            host_loopback: true,
            dns: true,
        }
    }

    fn ns() -> Nameservers {
        Nameservers {
            v4: Some(Ipv4Addr::new(127, 0, 0, 53)),
            v6: Some("::1".parse().unwrap()),
            v6_scope: 0,
        }
    }

    #[test]
    fn insert_lookup_remove_reuses_slots() {
        let mut t = Table::new();
        let k1 = Key::tcp(sa("10.0.2.100:40000"), sa("10.0.2.2:80"));
        let k2 = Key::tcp(sa("10.0.2.100:40001"), sa("10.0.2.2:80"));
        let a = t.insert(entry(k1)).unwrap();
        let b = t.insert(entry(k2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.insert(entry(k1)).unwrap(), a, "same key, same flow");
        assert_eq!(t.lookup(&k2), Some(b));
        assert_eq!(t.remove(a).unwrap().key, k1);
        assert_eq!(t.lookup(&k1), None);
        assert!(t.remove(a).is_none());
        let c = t.insert(entry(k1)).unwrap();
        assert_eq!(c, a, "slot reused");
        assert_eq!(t.len(), 2);
        assert_eq!(t.count(Proto::Tcp), 2);
        assert_eq!(t.iter().count(), 2);
        t.account(b, 5, 7, 42);
        t.account(b, 0, 0, 99);
        let e = t.get(b).unwrap();
        assert_eq!(
            (e.bytes_out, e.bytes_in, e.active_ms),
            (5, 7, 42),
            "idle calls do not refresh"
        );
        t.account(12345, 1, 1, 1); // unknown id: ignored
    }

    #[test]
    fn capacity_is_enforced_per_protocol() {
        let mut t = Table::new();
        for i in 0..MAX_ICMP_FLOWS {
            t.insert(entry(Key::icmp("10.0.2.100".parse().unwrap(), i as u16)))
                .unwrap();
        }
        let err = t
            .insert(entry(Key::icmp("10.0.2.100".parse().unwrap(), 60000)))
            .unwrap_err();
        assert_eq!(err.limit, MAX_ICMP_FLOWS);
        assert_eq!(t.refused(), 1);
        // Other protocols are unaffected.
        t.insert(entry(Key::udp(sa("10.0.2.100:5000")))).unwrap();
    }

    #[test]
    fn udp_key_is_endpoint_independent() {
        let a = Key::udp(sa("10.0.2.100:5000"));
        assert_eq!(a.remote, sa("0.0.0.0:0"));
        assert_eq!(Key::udp(sa("[fd00::5]:5000")).remote, sa("[::]:0"));
    }

    #[test]
    fn outbound_rules() {
        let r = rules();
        let n = ns();
        assert_eq!(
            r.outbound(Proto::Tcp, sa("10.0.2.2:8080"), &n),
            Ok(sa("127.0.0.1:8080"))
        );
        assert_eq!(
            r.outbound(Proto::Udp, sa("10.0.2.3:53"), &n),
            Ok(sa("127.0.0.53:53"))
        );
        assert_eq!(
            r.outbound(Proto::Tcp, sa("10.0.2.3:53"), &n),
            Ok(sa("127.0.0.53:53"))
        );
        assert_eq!(
            r.outbound(Proto::Tcp, sa("10.0.2.3:80"), &n),
            Err(Refusal::NotDns)
        );
        assert_eq!(
            r.outbound(Proto::Tcp, sa("198.51.100.1:80"), &n),
            Ok(sa("198.51.100.1:80"))
        );
        assert_eq!(
            r.outbound(Proto::Udp, sa("[fd00::2]:7"), &n),
            Ok(sa("[::1]:7"))
        );
        assert_eq!(
            r.outbound(Proto::Udp, sa("[fd00::3]:53"), &n),
            Ok(sa("[::1]:53"))
        );
        assert_eq!(
            r.outbound(Proto::Udp, sa("224.0.0.1:5"), &n),
            Err(Refusal::NotUnicast)
        );
        let none = Nameservers::default();
        assert_eq!(
            r.outbound(Proto::Udp, sa("10.0.2.3:53"), &none),
            Err(Refusal::NoNameserver)
        );
    }

    #[test]
    fn disable_host_loopback_but_dns_still_works() {
        let r = Rules {
            host_loopback: false,
            ..rules()
        };
        let n = ns();
        assert_eq!(
            r.outbound(Proto::Tcp, sa("10.0.2.2:8080"), &n),
            Err(Refusal::HostLoopbackDisabled)
        );
        assert_eq!(
            r.outbound(Proto::Tcp, sa("[fd00::2]:80"), &n),
            Err(Refusal::HostLoopbackDisabled)
        );
        // The DNS rule is checked first, so a loopback resolver still works (as in libslirp).
        assert_eq!(
            r.outbound(Proto::Udp, sa("10.0.2.3:53"), &n),
            Ok(sa("127.0.0.53:53"))
        );
    }

    /// pasta mode as podman runs it: the host's 192.0.2.10/24, gateway 192.0.2.1,
    /// `--no-map-gw`, `--dns-forward 169.254.1.1`, `--map-guest-addr 169.254.1.2`.
    fn pasta_rules(host_loopback: bool) -> Rules {
        let mut net = Network::copied(
            Ipv4Addr::new(192, 0, 2, 10),
            24,
            Ipv4Addr::new(192, 0, 2, 1),
        );
        net.dns = Ipv4Addr::new(169, 254, 1, 1);
        net.guest_alias = Some(Ipv4Addr::new(169, 254, 1, 2));
        let net6 = Network6 {
            prefix: "2001:db8::".parse().unwrap(),
            guest: Some("2001:db8::10".parse().unwrap()),
            gateway: "2001:db8::1".parse().unwrap(),
            dns_enabled: false,
            loopback_alias: host_loopback.then(|| "2001:db8::1".parse().unwrap()),
            guest_alias: None,
            virtual_subnet: false,
            ..Network6::default()
        };
        Rules {
            net,
            net6,
            ipv4: true,
            ipv6: true,
            host_loopback,
            dns: true,
        }
    }

    #[test]
    fn pasta_mode_translation() {
        let n = ns();
        let r = pasta_rules(false);
        let tcp = |a: &str| r.outbound(Proto::Tcp, sa(a), &n);
        // The host's network is real: its hosts, the gateway among them, are remotes.
        assert_eq!(tcp("192.0.2.1:80"), Ok(sa("192.0.2.1:80")));
        assert_eq!(tcp("192.0.2.77:80"), Ok(sa("192.0.2.77:80")));
        assert_eq!(tcp("[2001:db8::1]:80"), Ok(sa("[2001:db8::1]:80")));
        assert_eq!(tcp("[2001:db8::77]:80"), Ok(sa("[2001:db8::77]:80")));
        // The guest alias reaches the host at its own address; that address itself does not.
        assert_eq!(tcp("169.254.1.2:8000"), Ok(sa("192.0.2.10:8000")));
        assert_eq!(tcp("192.0.2.10:8000"), Err(Refusal::Reserved));
        assert_eq!(tcp("[2001:db8::10]:80"), Err(Refusal::Reserved));
        // DNS forward, TCP and UDP; other ports of that address pass through.
        assert_eq!(tcp("169.254.1.1:53"), Ok(sa("127.0.0.53:53")));
        assert_eq!(
            r.outbound(Proto::Udp, sa("169.254.1.1:53"), &n),
            Ok(sa("127.0.0.53:53"))
        );
        assert_eq!(tcp("169.254.1.1:80"), Ok(sa("169.254.1.1:80")));
        // Loopback stays out of reach whatever the address.
        assert_eq!(tcp("127.0.0.1:80"), Err(Refusal::Reserved));
        assert_eq!(tcp("192.0.2.255:80"), Err(Refusal::NotUnicast));
        // With the gateway mapped (no --no-map-gw), it is the host's loopback.
        let m = pasta_rules(true);
        let mut m4 = m;
        m4.net.loopback_alias = m.net.gateway;
        assert_eq!(
            m4.outbound(Proto::Tcp, sa("192.0.2.1:80"), &n),
            Ok(sa("127.0.0.1:80"))
        );
        assert_eq!(
            m4.outbound(Proto::Tcp, sa("[2001:db8::1]:80"), &n),
            Ok(sa("[::1]:80"))
        );
        // Inbound: the host's own address appears as the guest alias, loopback as the alias.
        assert_eq!(
            r.inbound_client(sa("192.0.2.10:4000"), false),
            sa("169.254.1.2:4000")
        );
        assert_eq!(
            r.inbound_client(sa("127.0.0.1:4000"), false),
            sa("192.0.2.1:4000")
        );
        assert_eq!(
            r.inbound_client(sa("198.51.100.7:4000"), false),
            sa("198.51.100.7:4000")
        );
        assert_eq!(
            r.inbound(sa("127.0.0.53:53"), true, &n),
            sa("169.254.1.1:53")
        );
        // --ipv6-only refuses IPv4.
        let v6only = Rules { ipv4: false, ..r };
        assert_eq!(
            v6only.outbound(Proto::Tcp, sa("192.0.2.77:80"), &n),
            Err(Refusal::Ipv4Disabled)
        );
    }

    #[test]
    fn disable_dns_leaves_n3_to_nobody() {
        let r = Rules {
            dns: false,
            net6: Network6 {
                dns_enabled: false,
                ..Network6::default()
            },
            ..rules()
        };
        // slirp4netns proxies N+3 as it is then, out to the host's network; no host is there.
        assert_eq!(
            r.outbound(Proto::Udp, sa("10.0.2.3:53"), &ns()),
            Err(Refusal::Reserved)
        );
        assert_eq!(
            r.outbound(Proto::Tcp, sa("[fd00::3]:53"), &ns()),
            Err(Refusal::Reserved)
        );
    }

    /// Every destination that must never be proxied as it is, against every protocol, with and
    /// without `--disable-host-loopback` and `-6`: none of them may reach a host socket, and
    /// only the mapping addresses reach the host's loopback, and only when allowed.
    #[test]
    fn destination_table() {
        use Refusal::*;
        // (destination, refusal whatever the options; None: the row is a mapping address)
        let never: &[(&str, Refusal)] = &[
            ("127.0.0.1", Reserved),
            ("127.1.2.3", Reserved),
            ("127.255.255.255", Reserved),
            ("0.0.0.0", Reserved),
            ("0.1.2.3", Reserved),
            ("255.255.255.255", NotUnicast),
            ("224.0.0.1", NotUnicast),
            ("239.255.255.250", NotUnicast),
            ("10.0.2.0", Reserved),
            ("10.0.2.255", NotUnicast),
            ("10.0.2.100", Reserved),
            ("10.0.2.50", Reserved),
        ];
        let never6: &[(&str, Refusal)] = &[
            ("::1", Reserved),
            ("::", Reserved),
            ("::ffff:127.0.0.1", Reserved),
            ("::ffff:0.0.0.0", Reserved),
            ("::ffff:10.0.2.2", Reserved),
            ("::ffff:198.51.100.1", Reserved),
            ("::127.0.0.1", Reserved),
            ("::10.0.2.2", Reserved),
            ("ff02::1", NotUnicast),
            ("ff05::2", NotUnicast),
            ("fe80::1", Reserved),
            ("fe80::2", Reserved),
            ("fd00::1", Reserved),
            ("fd00::100", Reserved),
        ];
        let n = ns();
        for host_loopback in [true, false] {
            for ipv6 in [true, false] {
                let r = Rules {
                    host_loopback,
                    ipv6,
                    ..rules()
                };
                for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
                    let port = if proto == Proto::Icmp { 0 } else { 8080 };
                    let at = |a: &str| SocketAddr::new(a.parse().unwrap(), port);
                    let case = format!("{proto:?} loopback={host_loopback} ipv6={ipv6}");
                    for &(a, why) in never {
                        assert_eq!(r.outbound(proto, at(a), &n), Err(why), "{a} {case}");
                    }
                    for &(a, why) in never6 {
                        let want = if ipv6 { why } else { Ipv6Disabled };
                        assert_eq!(r.outbound(proto, at(a), &n), Err(want), "{a} {case}");
                    }
                    // The mapping addresses.
                    let gw4 = r.outbound(proto, at("10.0.2.2"), &n);
                    let gw6 = r.outbound(proto, at("fd00::2"), &n);
                    if host_loopback {
                        assert_eq!(gw4, Ok(at("127.0.0.1")), "{case}");
                    } else {
                        assert_eq!(gw4, Err(HostLoopbackDisabled), "{case}");
                    }
                    match (ipv6, host_loopback) {
                        (false, _) => assert_eq!(gw6, Err(Ipv6Disabled), "{case}"),
                        (true, true) => assert_eq!(gw6, Ok(at("::1")), "{case}"),
                        (true, false) => assert_eq!(gw6, Err(HostLoopbackDisabled), "{case}"),
                    }
                    // Ordinary remotes pass through unchanged.
                    for a in ["198.51.100.1", "10.0.3.1", "192.168.1.1"] {
                        assert_eq!(r.outbound(proto, at(a), &n), Ok(at(a)), "{a} {case}");
                    }
                    let remote6 = r.outbound(proto, at("2001:db8::1"), &n);
                    if ipv6 {
                        assert_eq!(remote6, Ok(at("2001:db8::1")), "{case}");
                    } else {
                        assert_eq!(remote6, Err(Ipv6Disabled), "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn guest_sources() {
        let r = rules();
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "0.0.0.5",
            "255.255.255.255",
            "10.0.2.255",
            "224.0.0.5",
            "10.0.2.2",
            "10.0.2.3",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "ff02::1",
            "fd00::2",
            "fd00::3",
            "fe80::2",
        ] {
            assert!(!r.guest_source_ok(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "10.0.2.100",
            "10.0.2.15",
            "198.51.100.9",
            "fd00::5054:ff:fe12:3456",
            "fe80::5054:ff:fe12:3456",
            "2001:db8::7",
        ] {
            assert!(r.guest_source_ok(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn own_udp_ports_are_known_until_their_flow_goes() {
        let mut t = Table::new();
        let a = t.insert(entry(Key::udp(sa("10.0.2.100:5000")))).unwrap();
        let b = t.insert(entry(Key::udp(sa("[fd00::5]:5000")))).unwrap();
        let tcp = t
            .insert(entry(Key::tcp(sa("10.0.2.100:1"), sa("10.0.2.2:2"))))
            .unwrap();
        t.set_host_local(a, Some(sa("0.0.0.0:40000")));
        t.set_host_local(b, Some(sa("[::]:40000")));
        t.set_host_local(tcp, Some(sa("127.0.0.1:40001")));
        assert!(t.is_own_udp_port(40000));
        assert!(!t.is_own_udp_port(40001), "TCP sockets take no datagrams");
        t.remove(a);
        assert!(t.is_own_udp_port(40000), "still held by the IPv6 flow");
        t.set_host_local(b, Some(sa("[::]:40002")));
        assert!(!t.is_own_udp_port(40000));
        assert!(t.is_own_udp_port(40002));
        t.remove(b);
        assert!(!t.is_own_udp_port(40002));
    }

    #[test]
    fn packets_and_journal() {
        let mut t = Table::new();
        let u = t.insert(entry(Key::udp(sa("10.0.2.100:5000")))).unwrap();
        t.journal_mut().set_enabled(true);
        let mut c = entry(Key::tcp(sa("10.0.2.100:1"), sa("198.51.100.1:80")));
        c.state = State::Connecting;
        let c = t.insert(c).unwrap();
        t.account(u, 100, 0, 5);
        t.account(u, 0, 30, 6);
        t.account(c, 1000, 0, 6);
        t.count_packets(c, 2, 1);
        let e = t.get(u).unwrap();
        assert_eq!((e.packets_out, e.packets_in), (1, 1));
        let e = t.get(c).unwrap();
        assert_eq!(
            (e.packets_out, e.packets_in),
            (2, 1),
            "TCP bytes count no packets"
        );
        t.remove_because(c, journal::CloseReason::Done);
        t.remove_because(u, journal::CloseReason::Expired);
        let (evs, lost) = t.journal_mut().take();
        assert_eq!(lost, 0);
        assert!(matches!(&evs[0], journal::Event::New(id, _) if *id == c));
        assert!(matches!(
            &evs[1],
            journal::Event::Closed(id, e, journal::CloseReason::ConnectFailed)
                if *id == c && e.bytes_out == 1000
        ));
        assert!(matches!(
            &evs[2],
            journal::Event::Closed(id, _, journal::CloseReason::Expired) if *id == u
        ));
        // A flow the policy killed closes later through the ordinary path, and says why.
        let k = t
            .insert(entry(Key::tcp(sa("10.0.2.100:2"), sa("198.51.100.1:80"))))
            .unwrap();
        t.set_close_reason(k, journal::CloseReason::Policy { rule: Some(7) });
        t.remove_because(k, journal::CloseReason::Done);
        let (evs, _) = t.journal_mut().take();
        assert!(matches!(
            evs.last(),
            Some(journal::Event::Closed(id, _, journal::CloseReason::Policy { rule: Some(7) }))
                if *id == k
        ));
    }

    #[test]
    fn unconfirmed_flows_oldest_first_and_pressure() {
        let mut t = Table::new();
        let mut e = |port: u16, created: u64| {
            let mut e = entry(Key::tcp(
                sa(&format!("10.0.2.100:{port}")),
                sa("198.51.100.1:80"),
            ));
            e.state = State::Connecting;
            e.created_ms = created;
            t.insert(e).unwrap()
        };
        let a = e(1, 30);
        let b = e(2, 10);
        let c = e(3, 20);
        assert_eq!(t.unconfirmed(Proto::Tcp), 3);
        assert_eq!(t.oldest_unconfirmed(Proto::Tcp), Some(b));
        t.set_state(b, State::Open);
        assert_eq!(t.oldest_unconfirmed(Proto::Tcp), Some(c));
        t.remove(c);
        assert_eq!(t.oldest_unconfirmed(Proto::Tcp), Some(a));
        t.set_state(a, State::Connecting);
        assert_eq!(t.unconfirmed(Proto::Tcp), 1, "still unconfirmed, once");
        // UDP and ICMP are confirmed by a reply, not by traffic from the guest.
        let u = t.insert(entry(Key::udp(sa("10.0.2.100:5000")))).unwrap();
        assert_eq!(t.oldest_unconfirmed(Proto::Udp), Some(u));
        t.account(u, 100, 0, 5);
        assert_eq!(t.oldest_unconfirmed(Proto::Udp), Some(u));
        t.account(u, 0, 1, 6);
        assert_eq!(t.oldest_unconfirmed(Proto::Udp), None);
        // Pressure starts at EARLY_DROP_PERCENT of the capacity.
        let mut t = Table::new();
        let threshold = (MAX_ICMP_FLOWS * EARLY_DROP_PERCENT).div_ceil(100);
        for i in 0..threshold {
            assert!(!t.pressure(Proto::Icmp), "{i}");
            t.insert(entry(Key::icmp("10.0.2.100".parse().unwrap(), i as u16)))
                .unwrap();
        }
        assert!(t.pressure(Proto::Icmp));
        assert!(!t.pressure(Proto::Tcp));
    }

    #[test]
    fn inbound_clients_of_forwards() {
        let r = rules();
        assert_eq!(
            r.inbound_client(sa("127.0.0.1:5000"), false),
            sa("10.0.2.2:5000")
        );
        assert_eq!(
            r.inbound_client(sa("127.3.4.5:5000"), false),
            sa("10.0.2.2:5000")
        );
        assert_eq!(
            r.inbound_client(sa("198.51.100.7:5000"), false),
            sa("198.51.100.7:5000")
        );
        assert_eq!(
            r.inbound_client(sa("[::ffff:198.51.100.7]:5"), false),
            sa("198.51.100.7:5")
        );
        assert_eq!(
            r.inbound_client(sa("[2001:db8::1]:5"), false),
            sa("10.0.2.2:5")
        );
        assert_eq!(r.inbound_client(sa("[::1]:5"), true), sa("[fd00::2]:5"));
    }

    #[test]
    fn inbound_rules() {
        let r = rules();
        let n = ns();
        assert_eq!(r.inbound(sa("127.0.0.1:9"), false, &n), sa("10.0.2.2:9"));
        assert_eq!(r.inbound(sa("0.0.0.0:9"), false, &n), sa("10.0.2.2:9"));
        assert_eq!(r.inbound(sa("[::1]:9"), false, &n), sa("[fd00::2]:9"));
        assert_eq!(
            r.inbound(sa("198.51.100.1:9"), false, &n),
            sa("198.51.100.1:9")
        );
        assert_eq!(r.inbound(sa("127.0.0.53:53"), true, &n), sa("10.0.2.3:53"));
        assert_eq!(r.inbound(sa("127.0.0.53:53"), false, &n), sa("10.0.2.2:53"));
        assert_eq!(
            r.inbound(sa("[::ffff:127.0.0.1]:5"), false, &n),
            sa("10.0.2.2:5")
        );
    }
}
