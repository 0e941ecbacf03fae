//! Flows: every guest connection carried on a host socket.
//!
//! # Theory of operation
//!
//! [`Proxy`] owns the NAT [`Table`] and one [`Flow`] per entry (same index). Guest frames reach
//! it after the virtual hosts ([`Proxy::on_guest_frame`]):
//!
//! - a TCP SYN for an unknown (guest, remote) pair becomes a non-blocking host `connect()` plus a
//!   smoltcp socket listening on exactly that remote endpoint with its SYN-ACK paused
//!   ("connect before accept"); the SYN then goes on to smoltcp, which parks it in SYN-RECEIVED.
//!   When the host connect succeeds the SYN-ACK is released; when it fails the guest gets RST
//!   (refused) or an ICMP error (unreachable), never a connection the host side does not have.
//! - UDP datagrams and ICMP echo requests never enter smoltcp: they go straight to a host socket
//!   per guest endpoint, and replies are built as frames by [`Emitter`].
//!
//! Every TCP flow owns its smoltcp socket in a `SocketSet` of its own (see [`crate::stack`]):
//! a guest segment is looked up by its (guest, remote) key in the NAT table's hash map and given
//! to smoltcp with that flow's set only, and the flow is marked in [`work::Work`]. The runtime
//! calls [`Proxy::on_host_event`] for readiness of host sockets (which marks the flow too) and
//! [`Proxy::after_poll`] once per wake-up, which serves only the marked flows and those whose
//! smoltcp deadline has come: it moves bytes between smoltcp sockets and host sockets within the
//! space both sides have (back-pressure instead of buffering: a full smoltcp send buffer stops
//! reads from the host, an unwritable host socket leaves data in the smoltcp receive buffer,
//! which shrinks the window advertised to the guest), then lets smoltcp transmit. So the cost of
//! a wake-up follows the flows that have news, not the flows that exist.
//! [`Proxy::on_timer`] expires idle UDP and ICMP flows. Destinations are checked by the
//! translation rules before any host socket is made, and guest frames from sources the guest
//! may not use are dropped on entry ([`Rules::guest_source_ok`]); under pressure a new flow
//! reclaims the oldest unconfirmed one (`make_room`).
//!
//! Host sockets are registered with the runtime's mio registry under [`flow_token`] of their
//! flow id; that is the only way this module touches the event loop.

pub mod conntrack;
pub mod egress;
pub mod icmp;
pub mod splice;
pub mod tcp;
pub mod udp;
pub mod work;

use std::net::{IpAddr, SocketAddr};

use log::{debug, warn};
use mio::Registry;
use smoltcp::time::Instant;
use smoltcp::wire::EthernetAddress;

use crate::config::{Config, Outbound};
use crate::forward::{ForwardTable, Listener};
use crate::nat::journal::CloseReason;
use crate::nat::resolv::{Nameservers, Resolvers, RESOLV_CONF};
use crate::nat::{FlowId, Key, Proto, Refusal, Rules, Table};
use crate::stack::classify::{self, Guest};
use crate::stack::emit::{Emitter, Unreachable, L2};
use crate::stack::reassembly::Reassembler;
use crate::stack::Stack;
use crate::sys;

/// First mio token value used for flows (lower values are the runtime's own).
pub const FLOW_TOKEN_BASE: usize = 1 << 20;

/// Added to a flow's token for its second socket (a spliced flow's socket in the guest's
/// namespace), so that an event says which socket it is for. Above every flow id (the table
/// holds far fewer flows).
const PEER_TOKEN_BIT: usize = 1 << 19;

/// The mio token of flow `id`.
pub fn flow_token(id: FlowId) -> mio::Token {
    mio::Token(FLOW_TOKEN_BASE + id)
}

/// The mio token of flow `id`'s second socket.
pub fn flow_peer_token(id: FlowId) -> mio::Token {
    mio::Token(FLOW_TOKEN_BASE + PEER_TOKEN_BIT + id)
}

/// What to register a flow's socket for when it waits for readability (`read`) and/or
/// writability (`write`): edge-triggered, an edge nobody waits for is a wake-up with nothing to
/// do. With neither, writability stands in (mio needs some interest): a socket with nothing in
/// its send buffer raises no writability edge, and errors and hang-ups are reported whatever
/// is asked. A changed registration re-arms the edge, so readiness that came meanwhile is
/// reported at once.
pub fn edge_interest(read: bool, write: bool) -> mio::Interest {
    match (read, write) {
        (true, true) => mio::Interest::READABLE | mio::Interest::WRITABLE,
        (true, false) => mio::Interest::READABLE,
        (false, _) => mio::Interest::WRITABLE,
    }
}

/// The flow id of a mio token, if it is a flow token (of either socket).
pub fn token_flow(t: mio::Token) -> Option<FlowId> {
    t.0.checked_sub(FLOW_TOKEN_BASE)
        .map(|i| i & !PEER_TOKEN_BIT)
}

/// Whether a flow token is the one of the flow's second socket ([`flow_peer_token`]).
pub fn token_is_peer(t: mio::Token) -> bool {
    t.0.checked_sub(FLOW_TOKEN_BASE)
        .is_some_and(|i| i & PEER_TOKEN_BIT != 0)
}

/// One proxied flow.
pub enum Flow {
    /// TCP (smoltcp socket + host stream).
    Tcp(tcp::Flow),
    /// UDP (host socket per guest endpoint).
    Udp(udp::Flow),
    /// ICMP echo (host ping socket per guest identifier).
    Icmp(icmp::Flow),
    /// A port-forward connection spliced to a socket in the guest's namespace.
    Splice(splice::Flow),
}

/// Where a guest frame goes after the proxies looked at it.
enum Route {
    /// Proxied at frame level (or refused): nothing more to do.
    Consumed,
    /// To smoltcp, with the socket set of the TCP flow with this key (if it exists), and the
    /// bytes of data the segment carries.
    Stack(Option<Key>, usize),
}

/// Milliseconds of a runtime instant (the unit of the NAT table's clocks).
fn ms(now: Instant) -> u64 {
    u64::try_from(now.total_millis()).unwrap_or(0)
}

/// Counters for logs and the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Flows created, by protocol (tcp, udp, icmp).
    pub created: [u64; 3],
    /// Guest packets refused by the translation rules.
    pub refused: u64,
    /// Datagrams dropped (send failures, no upstream, oversize replies).
    pub dropped: u64,
    /// IPv4 and IPv6 fragments from the guest (reassembled before proxying).
    pub fragments: u64,
    /// TCP port-forward connections that took the spliced path (also counted in `created`).
    pub spliced: u64,
    /// Guest packets dropped for a source address the guest may not use
    /// ([`Rules::guest_source_ok`]).
    pub martians: u64,
    /// Unconfirmed flows reclaimed to make room for new ones under pressure
    /// ([`crate::nat::Table::pressure`]).
    pub early_drops: u64,
    /// Host socket errors of flows (connect, send), by errno.
    pub host_errors: crate::stats::ErrnoCounts,
    /// Guest datagrams to the virtual DNS address's port 53.
    pub dns_queries: u64,
    /// ICMPv6 "packet too big" and ICMP "fragmentation needed" errors sent to the guest (its
    /// datagram did not fit the host path's MTU).
    pub too_big_sent: u64,
}

/// Shared state the protocol handlers need besides their own flow.
pub struct Env<'a> {
    /// Translation rules.
    pub rules: &'a Rules,
    /// Current upstream nameservers.
    pub ns: Nameservers,
    /// Frame builder.
    pub emitter: &'a mut Emitter,
    /// Source address for outbound host sockets, by family.
    pub outbound: (Option<IpAddr>, Option<IpAddr>),
    /// Counters.
    pub counters: &'a mut Counters,
    /// Runtime clock, milliseconds.
    pub now_ms: u64,
    /// Scratch buffer for datagrams read from host sockets (shared, so idle flows own none).
    pub buf: &'a mut Vec<u8>,
    /// Flows with news and smoltcp deadlines.
    pub work: &'a mut work::Work,
    /// The egress policy (checked by [`egress::outbound`]).
    pub policy: &'a mut crate::policy::Policy,
}

impl Env<'_> {
    /// Outbound source address for a destination's family.
    pub fn source_for(&self, dst: IpAddr) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(_) => self.outbound.0,
            IpAddr::V6(_) => self.outbound.1,
        }
    }
}

/// What epoll said about a flow's host socket (edge-triggered: each is news since the last).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostEvent {
    /// Data (or end of file) to read.
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// A pending socket error.
    pub error: bool,
    /// The peer shut down its sending side (`EPOLLRDHUP`): reads must go on to end of file
    /// even after a short one, since no further event will come.
    pub read_closed: bool,
    /// The event is for the flow's second socket ([`flow_peer_token`]).
    pub peer: bool,
}

impl HostEvent {
    /// What a readiness event of a flow's socket says.
    pub fn from_mio(ev: &mio::event::Event) -> HostEvent {
        HostEvent {
            readable: ev.is_readable() || ev.is_read_closed(),
            writable: ev.is_writable() || ev.is_write_closed(),
            error: ev.is_error(),
            read_closed: ev.is_read_closed(),
            peer: token_is_peer(ev.token()),
        }
    }
}

/// All flows and the policy they follow.
pub struct Proxy {
    rules: Rules,
    /// The egress policy (changed at run time through the API: [`Proxy::take_policy`]).
    policy: crate::policy::Policy,
    /// Whether guest echo requests are proxied (pasta's `--no-icmp` turns it off).
    icmp: bool,
    resolvers: Resolvers,
    table: Table,
    flows: Vec<Option<Flow>>,
    emitter: Emitter,
    stack_mac: EthernetAddress,
    outbound: (Option<IpAddr>, Option<IpAddr>),
    counters: Counters,
    epoch: std::time::Instant,
    icmp_warned: bool,
    /// Flows with news, and smoltcp deadlines.
    work: work::Work,
    /// The flows `after_poll` is serving (kept to reuse its allocation).
    serving: Vec<FlowId>,
    buf: Vec<u8>,
    reassembler: Reassembler,
    /// The frame being routed was reassembled from guest fragments (so the host may fragment
    /// it again: [`udp::HeaderBits`]).
    reassembled: bool,
    /// UDP port-forward sessions: (guest endpoint, client as the guest sees it) -> forward.
    sessions: udp::Sessions,
    /// The guest's MAC, from the last frame classified here (for frames we originate).
    guest_mac: Option<EthernetAddress>,
    /// UDP forwards that may still hold datagrams (their drain stopped early).
    pending_forwards: Vec<u64>,
    /// Spliced flows that stopped at their batch limit (pumped again after the next poll).
    pending_splices: Vec<FlowId>,
    /// TCP forwards whose accept ran out of descriptors (retried by [`Proxy::on_timer`]).
    starved: Vec<u64>,
    /// Socket factory inside the guest's namespace (`--splice-forwards`).
    broker: Option<sys::nsbroker::Broker>,
    /// When [`Proxy::on_timer`] must run next at the latest, if sooner than it said last time
    /// (a spliced connect's deadline).
    timer_due_ms: Option<u64>,
}

/// Flows listed by `get_info` at most (bounds the reply; the API caps nothing else).
pub const MAX_INFO_FLOWS: usize = 256;
/// Least time between two expiry checks of UDP/ICMP flows (each check runs when the earliest
/// flow is due, so idle flows cost one wake-up per expiry, not one per second).
const EXPIRY_CHECK_MS: u64 = 1000;
/// Connections accepted from one forward listener per wake-up (fairness).
const ACCEPT_BATCH: usize = 64;

/// The source address outbound sockets bind to. `app` has already turned an interface name
/// into its address and checked that it binds (before the banner), so only addresses reach
/// here; a name that did not (a caller that skipped that check) binds nothing.
fn outbound_source<A: Into<IpAddr> + Copy>(o: &Option<Outbound<A>>) -> Option<IpAddr> {
    match o {
        Some(Outbound::Addr(a)) => Some((*a).into()),
        Some(Outbound::Interface(name)) => {
            debug!("outbound interface {name} was not resolved at start-up; sockets are not bound");
            None
        }
        None => None,
    }
}

impl Proxy {
    /// Set the socket broker for spliced forwards (replacing any).
    pub fn set_broker(&mut self, broker: Option<sys::nsbroker::Broker>) {
        self.broker = broker;
    }

    /// Build from the configuration. `broker`, if any, makes sockets in the guest's namespace
    /// for spliced port forwards.
    pub fn new(cfg: &Config, broker: Option<sys::nsbroker::Broker>) -> Self {
        let mtu = usize::try_from(cfg.mtu).unwrap_or(1500);
        Proxy {
            rules: Rules::new(cfg),
            policy: egress::initial(cfg),
            icmp: cfg.services.icmp,
            resolvers: Resolvers::new(RESOLV_CONF),
            table: Table::new(),
            flows: Vec::new(),
            emitter: Emitter::new(mtu),
            stack_mac: EthernetAddress(crate::config::mac_for_v4(cfg.net.gateway())),
            outbound: (
                outbound_source(&cfg.outbound_addr),
                outbound_source(&cfg.outbound_addr6),
            ),
            counters: Counters::default(),
            epoch: std::time::Instant::now(),
            icmp_warned: false,
            work: work::Work::default(),
            serving: Vec::new(),
            buf: Vec::new(),
            reassembler: Reassembler::new(),
            reassembled: false,
            sessions: udp::Sessions::default(),
            guest_mac: None,
            pending_forwards: Vec::new(),
            pending_splices: Vec::new(),
            starved: Vec::new(),
            broker,
            timer_due_ms: None,
        }
    }

    /// The NAT table (read-only).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A JSON snapshot for the API's `get_info`: counters and up to [`MAX_INFO_FLOWS`] flows.
    pub fn info(&self, now_ms: u64) -> serde_json::Value {
        let t = &self.table;
        let c = &self.counters;
        let flows: Vec<serde_json::Value> = t
            .iter()
            .take(MAX_INFO_FLOWS)
            .map(|(id, e)| {
                serde_json::json!({
                    "id": id,
                    "proto": e.key.proto.name(),
                    "guest": e.key.guest.to_string(),
                    "remote": e.key.remote.to_string(),
                    "target": e.target.to_string(),
                    "host_local": e.host_local.map(|a| a.to_string()),
                    "state": e.state.name(),
                    "bytes_out": e.bytes_out,
                    "bytes_in": e.bytes_in,
                    "age_ms": now_ms.saturating_sub(e.created_ms),
                    "idle_ms": now_ms.saturating_sub(e.active_ms),
                })
            })
            .collect();
        serde_json::json!({
            "flows": {
                "tcp": t.count(Proto::Tcp),
                "udp": t.count(Proto::Udp),
                "icmp": t.count(Proto::Icmp),
                "refused_full": t.refused(),
                "list": flows,
            },
            "flows_created": {
                "tcp": c.created[0],
                "udp": c.created[1],
                "icmp": c.created[2],
                "tcp_spliced": c.spliced,
            },
            "splice_forwards": self.broker.is_some(),
            "refused": c.refused,
            "martian_sources": c.martians,
            "early_drops": c.early_drops,
            "dropped": c.dropped,
            "fragments": c.fragments,
            "udp6_fragmented": self.emitter.fragmented_v6(),
            "reassembly_dropped": self.reassembler.dropped(),
            "icmp_too_big_sent": c.too_big_sent,
        })
    }

    fn env(&mut self, now_ms: u64) -> (Env<'_>, &mut Table, &mut Vec<Option<Flow>>) {
        let ns = self
            .resolvers
            .get(self.epoch + std::time::Duration::from_millis(now_ms));
        (
            Env {
                rules: &self.rules,
                ns,
                emitter: &mut self.emitter,
                outbound: self.outbound,
                counters: &mut self.counters,
                now_ms,
                buf: &mut self.buf,
                work: &mut self.work,
                policy: &mut self.policy,
            },
            &mut self.table,
            &mut self.flows,
        )
    }

    pub(crate) fn store_flow(flows: &mut Vec<Option<Flow>>, id: FlowId, flow: Flow) {
        if flows.len() <= id {
            flows.resize_with(id + 1, || None);
        }
        flows[id] = Some(flow);
    }

    /// A guest frame that the virtual hosts passed on: proxied at frame level (UDP, ICMP echo),
    /// or handed to smoltcp with its flow's socket set, or with none.
    pub fn on_guest_frame(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        forwards: &ForwardTable,
        frame: Vec<u8>,
        now: Instant,
    ) {
        match self.route(stack, registry, forwards, &frame, now) {
            Route::Stack(key, data) => self.hand_to_stack(stack, frame, key, data, now),
            Route::Consumed => stack.device.recycle_rx(frame),
        }
    }

    /// Give `frame` to smoltcp with the socket set of the TCP flow `key` names, if there is one
    /// (else smoltcp answers as if no socket listened), and mark that flow for a pass.
    fn hand_to_stack(
        &mut self,
        stack: &mut Stack,
        frame: Vec<u8>,
        key: Option<Key>,
        data: usize,
        now: Instant,
    ) {
        let id = key.and_then(|k| self.table.lookup(&k));
        let flow = id.and_then(|id| match self.flows.get_mut(id) {
            Some(Some(Flow::Tcp(f))) => Some((id, f)),
            _ => None,
        });
        match flow {
            Some((id, f)) => {
                f.before_guest_segment(data, now);
                stack.ingress(now, frame, Some(f.sockets()));
                self.table.count_packets(id, 1, 0);
                self.work.mark(id);
            }
            None => {
                stack.ingress(now, frame, None);
            }
        }
    }

    fn route(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        forwards: &ForwardTable,
        frame: &[u8],
        now: Instant,
    ) -> Route {
        let now_ms = ms(now);
        let kind = classify::classify(frame);
        if matches!(kind, Guest::Other) {
            return Route::Stack(None, 0);
        }
        let Some(guest_mac) = classify::source_mac(frame) else {
            return Route::Stack(None, 0);
        };
        self.guest_mac = Some(guest_mac);
        if let Some(src) = kind.source() {
            if !self.rules.guest_source_ok(src) {
                self.counters.martians += 1;
                debug!("dropped a guest packet from {src}: not a source the guest may use");
                return Route::Consumed;
            }
        }
        // The common case, every segment of an open connection: straight to its flow, without
        // building the environment the other cases need.
        if let Guest::Tcp {
            src,
            dst,
            payload_len,
        } = kind
        {
            return Route::Stack(Some(Key::tcp(src, dst)), payload_len);
        }
        if let Guest::Udp {
            src, dst, payload, ..
        } = &kind
        {
            if dst.port() == crate::nat::DNS_PORT && self.rules.is_dns(dst.ip()) {
                self.counters.dns_queries += 1;
            }
            if self.sessions.reply(forwards, *src, *dst, payload, now_ms) {
                return Route::Consumed;
            }
        }
        let l2 = L2 {
            src: self.stack_mac,
            dst: guest_mac,
        };
        let icmp_on = self.icmp;
        let reassembled = self.reassembled;
        let (mut env, table, flows) = self.env(now_ms);
        let mut icmp_unavailable = false;
        let created = env.counters.created;
        let route = match kind {
            Guest::TcpSyn { src, dst, packet } => {
                if tcp::on_guest_syn(
                    &mut env, table, flows, stack, registry, l2, src, dst, packet,
                ) {
                    Route::Stack(Some(Key::tcp(src, dst)), 0)
                } else {
                    Route::Consumed
                }
            }
            // Routed above; kept total so no guest frame can reach a panic.
            Guest::Tcp {
                src,
                dst,
                payload_len,
            } => Route::Stack(Some(Key::tcp(src, dst)), payload_len),
            Guest::Udp {
                src,
                dst,
                payload,
                packet,
            } => {
                let bits = udp::HeaderBits::of(packet, reassembled);
                udp::on_guest_datagram(
                    &mut env, table, flows, stack, registry, l2, src, dst, payload, packet, bits,
                );
                Route::Consumed
            }
            Guest::EchoRequest { .. } if !icmp_on => {
                env.counters.refused += 1;
                Route::Consumed
            }
            Guest::EchoRequest {
                src,
                dst,
                ident,
                seq,
                data,
                packet,
            } => {
                icmp_unavailable = !icmp::on_guest_echo(
                    &mut env, table, flows, stack, registry, l2, src, dst, ident, seq, data, packet,
                );
                Route::Consumed
            }
            Guest::Fragment => {
                env.counters.fragments += 1;
                let eth = crate::device::ETHERNET_HEADER_LEN;
                if let Some(whole) = frame
                    .get(eth..)
                    .and_then(|packet| self.reassembler.push(packet, now_ms))
                {
                    let mut f = Vec::with_capacity(eth + whole.len());
                    f.extend_from_slice(&frame[..eth]);
                    f.extend_from_slice(&whole);
                    self.reassembled = true;
                    self.on_guest_frame(stack, registry, forwards, f, now);
                    self.reassembled = false;
                }
                return Route::Consumed;
            }
            Guest::Other => Route::Stack(None, 0),
        };
        if self.counters.created[1..] != created[1..] {
            // A new UDP or echo flow: its expiry must be checked within EXPIRY_CHECK_MS, even
            // if the last check, finding no such flow, asked for none.
            self.due(now_ms + EXPIRY_CHECK_MS);
        }
        if icmp_unavailable && !self.icmp_warned {
            warn!(
                "ICMP echo to external hosts is unavailable: the host does not allow unprivileged \
                 ICMP sockets for this user (see net.ipv4.ping_group_range); echo requests are dropped"
            );
            self.icmp_warned = true;
        }
        route
    }

    /// A port-forward listener is readable: accept its clients or relay its datagrams.
    pub fn on_forward_ready(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        forwards: &ForwardTable,
        fid: u64,
        now_ms: u64,
    ) {
        let Some(fwd) = forwards.get(fid) else { return };
        let Some(guest) = forward_guest(fwd.spec.guest_socket(), stack.vhost.guest_v6()) else {
            // `::` before the guest's IPv6 address is known: nobody to relay to.
            let (done, n) = discard_clients(&fwd.listener);
            self.env(now_ms).0.counters.dropped += n;
            if n > 0 {
                debug!("forward {fid}: the guest's IPv6 address is not known yet; {n} refused");
            }
            if !done && !self.pending_forwards.contains(&fid) {
                self.pending_forwards.push(fid);
            }
            return;
        };
        let l2 = L2 {
            src: self.stack_mac,
            dst: self
                .guest_mac
                .or_else(|| stack.vhost.guest_mac())
                .unwrap_or(EthernetAddress::BROADCAST),
        };
        match &fwd.listener {
            Listener::Tcp(l) => {
                let mut exhausted = false;
                for _ in 0..ACCEPT_BATCH {
                    match l.accept() {
                        Ok((mut stream, peer)) => {
                            let broker = self.broker.take();
                            let (mut env, table, flows) = self.env(now_ms);
                            let spliced = match broker.as_ref().filter(|_| {
                                peer.ip().to_canonical().is_loopback() && guest.is_ipv4()
                            }) {
                                Some(b) => splice::on_inbound(
                                    &mut env, table, flows, registry, b, guest, stream, peer,
                                )
                                .err(),
                                None => Some(stream),
                            };
                            self.broker = broker;
                            let Some(back) = spliced else {
                                self.due(now_ms + splice::CONNECT_TIMEOUT_MS);
                                continue;
                            };
                            stream = back;
                            let (mut env, table, flows) = self.env(now_ms);
                            if let Some(id) = tcp::on_inbound(
                                &mut env, table, flows, stack, registry, l2, guest, stream, peer,
                            ) {
                                env.work.mark(id);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            exhausted = true;
                            break;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            debug!("forward {fid}: accept: {e}");
                            if crate::api::accept_starved(&e) && !self.starved.contains(&fid) {
                                // Out of descriptors: the backlog's clients are accepted
                                // again after ACCEPT_RETRY_MS (no edge will announce them).
                                self.starved.push(fid);
                                self.due(now_ms + crate::api::ACCEPT_RETRY_MS);
                            }
                            exhausted = true;
                            break;
                        }
                    }
                }
                // Edge-triggered: clients may still wait in the backlog; retry after the poll.
                if !exhausted && !self.pending_forwards.contains(&fid) {
                    self.pending_forwards.push(fid);
                }
            }
            Listener::Udp(sock) => {
                let mut sessions = std::mem::take(&mut self.sessions);
                let before = sessions.len();
                let (mut env, _, _) = self.env(now_ms);
                let end = sessions.on_forward_readable(&mut env, stack, fid, sock, l2, guest);
                if sessions.len() > before {
                    // A new session: its expiry must be checked (see EXPIRY_CHECK_MS).
                    self.due(now_ms + EXPIRY_CHECK_MS);
                }
                self.sessions = sessions;
                // Edge-triggered: if datagrams may remain, retry after the next poll.
                if end == Drained::Pending && !self.pending_forwards.contains(&fid) {
                    self.pending_forwards.push(fid);
                }
            }
        }
    }

    /// A forward was removed: forget its UDP sessions.
    pub fn on_forward_removed(&mut self, fid: u64) {
        self.sessions.remove_forward(fid);
    }

    /// Readiness of a flow's host socket.
    pub fn on_host_event(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        id: FlowId,
        ev: HostEvent,
        now_ms: u64,
    ) {
        let (mut env, table, flows) = self.env(now_ms);
        let Some(Some(flow)) = flows.get_mut(id) else {
            return;
        };
        let mut again = false;
        let done = match flow {
            Flow::Tcp(f) => {
                f.on_host_event(ev);
                env.work.mark(id);
                false
            }
            Flow::Udp(f) => {
                let done = f.on_host_event(&mut env, stack, table, id, ev.readable, ev.error);
                if f.wants_drain() {
                    env.work.mark(id);
                }
                done
            }
            Flow::Icmp(f) => {
                let done = f.on_host_event(&mut env, stack, table, id, ev.readable);
                if f.wants_drain() {
                    env.work.mark(id);
                }
                done
            }
            Flow::Splice(f) => match f.on_event(table, registry, id, &ev, now_ms) {
                splice::Outcome::Wait => false,
                splice::Outcome::Again => {
                    again = true;
                    false
                }
                splice::Outcome::Done => true,
            },
        };
        if done {
            Self::close(table, flows, env.work, id, CloseReason::Done);
        }
        if again && !self.pending_splices.contains(&id) {
            self.pending_splices.push(id);
        }
    }

    /// Serve the flows with news since the last call: the ones the guest sent segments to,
    /// whose host socket had an event, or whose smoltcp deadline came. Each TCP flow moves bytes
    /// between its sockets, then smoltcp transmits what that produced (twice if transmitting
    /// changed the socket's state, e.g. a timeout closed it); finished flows are closed after
    /// their last segments (a RST, a final ACK) went out. Flows without news are not touched.
    pub fn after_poll(
        &mut self,
        stack: &mut Stack,
        registry: &Registry,
        forwards: &ForwardTable,
        now: Instant,
    ) {
        let now_ms = ms(now);
        for fid in std::mem::take(&mut self.pending_forwards) {
            self.on_forward_ready(stack, registry, forwards, fid, now_ms);
        }
        for id in std::mem::take(&mut self.pending_splices) {
            self.on_host_event(stack, registry, id, HostEvent::default(), now_ms);
        }
        self.work.mark_due(now);
        let mut serving = std::mem::take(&mut self.serving);
        self.work.take_dirty(&mut serving);
        let (mut env, table, flows) = self.env(now_ms);
        for &id in &serving {
            let Some(Some(flow)) = flows.get_mut(id) else {
                continue;
            };
            let done = match flow {
                Flow::Tcp(f) => {
                    let queued = stack.device.tx_pending();
                    let mut done = f.pump(&mut env, stack, table, id);
                    if f.transmit(stack, now) && !done {
                        done = f.pump(&mut env, stack, table, id);
                        f.transmit(stack, now);
                    }
                    // Segments for the guest (the queue is only flushed after the pass).
                    let sent = stack.device.tx_pending().saturating_sub(queued);
                    table.count_packets(id, 0, sent as u64);
                    if !done {
                        if let Err(e) = f.ask_events(registry, id) {
                            // Not seen in practice (epoll_ctl MOD of a registered socket);
                            // without the right events the flow could stall, so end it.
                            debug!("tcp flow {id}: epoll: {e}");
                            f.abort();
                            env.work.mark(id);
                        }
                        env.work.set_deadline(id, f.next_deadline(stack, now));
                    }
                    done
                }
                Flow::Udp(f) => {
                    let done = f.drain(&mut env, stack, table, id);
                    if !done && f.wants_drain() {
                        env.work.mark(id);
                    }
                    done
                }
                Flow::Icmp(f) => {
                    let done = f.drain(&mut env, stack, table, id);
                    if !done && f.wants_drain() {
                        env.work.mark(id);
                    }
                    done
                }
                // Pumped on their own events (and `pending_splices`), never by the stack.
                Flow::Splice(_) => false,
            };
            if done {
                Self::close(table, flows, env.work, id, CloseReason::Done);
            }
        }
        self.serving = serving;
    }

    /// The earliest smoltcp deadline of any flow.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.work.next_deadline()
    }

    /// [`Proxy::on_timer`] must run at `at_ms` at the latest.
    fn due(&mut self, at_ms: u64) {
        self.timer_due_ms = Some(self.timer_due_ms.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// A deadline set since the last [`Proxy::on_timer`] that may be sooner than the time it
    /// returned (taken: the runtime folds it into its timer).
    pub fn take_timer_due(&mut self) -> Option<u64> {
        self.timer_due_ms.take()
    }

    /// Expire idle UDP and ICMP flows and spliced connects that took too long, and retry the
    /// forwards whose accept ran out of descriptors. Returns the next time (ms) this wants to
    /// run.
    pub fn on_timer(&mut self, now_ms: u64) -> Option<u64> {
        for fid in std::mem::take(&mut self.starved) {
            if !self.pending_forwards.contains(&fid) {
                self.pending_forwards.push(fid);
            }
        }
        let mut next = self.sessions.expire(now_ms);
        let (env, table, flows) = self.env(now_ms);
        for id in 0..flows.len() {
            let expires = match &flows[id] {
                Some(Flow::Udp(f)) => f.expires_ms(),
                Some(Flow::Icmp(f)) => f.expires_ms(),
                Some(Flow::Splice(f)) if f.connecting() => match table.get(id) {
                    Some(e) if f.connect_expired(e.created_ms, now_ms) => now_ms,
                    Some(e) => splice::Flow::connect_deadline_ms(e.created_ms),
                    None => continue,
                },
                _ => continue,
            };
            if expires <= now_ms {
                debug!("flow {id} expired");
                Self::close(table, flows, env.work, id, CloseReason::Expired);
            } else {
                next = Some(next.map_or(expires, |n| n.min(expires)));
            }
        }
        // Not sooner than EXPIRY_CHECK_MS: flows expiring close together go in one wake-up.
        next.map(|t| t.max(now_ms + EXPIRY_CHECK_MS))
    }

    /// Forget flow `id` (its sockets close as it drops: a TCP flow's last segments must have
    /// been transmitted before).
    fn close(
        table: &mut Table,
        flows: &mut [Option<Flow>],
        work: &mut work::Work,
        id: FlowId,
        reason: CloseReason,
    ) {
        work.forget(id);
        if flows.get_mut(id).and_then(Option::take).is_some() {
            if let Some(e) = table.remove_because(id, reason) {
                debug!(
                    "{} flow {} -> {} closed ({} bytes out, {} bytes in)",
                    e.key.proto.name(),
                    e.key.guest,
                    e.target,
                    e.bytes_out,
                    e.bytes_in
                );
            }
        }
    }

    /// Whether work is left over that no event will announce (a forward's backlog, a spliced
    /// flow at its batch limit): the loop must not sleep.
    pub fn has_pending(&self) -> bool {
        !self.pending_forwards.is_empty() || !self.pending_splices.is_empty()
    }

    /// Number of live flows of `proto`.
    pub fn count(&self, proto: Proto) -> usize {
        self.table.count(proto)
    }
}

/// Under pressure ([`Table::pressure`]), reclaim the oldest unconfirmed flow of `proto` for
/// the new one about to be inserted (its host side reset): a flood then evicts its own flows,
/// not the guest's established ones.
pub(crate) fn make_room(
    env: &mut Env<'_>,
    table: &mut Table,
    flows: &mut [Option<Flow>],
    proto: Proto,
) {
    if !table.pressure(proto) {
        return;
    }
    let Some(id) = table.oldest_unconfirmed(proto) else {
        return;
    };
    if let Some(Some(Flow::Tcp(f))) = flows.get_mut(id) {
        f.reset_host();
    }
    env.counters.early_drops += 1;
    debug!(
        "{} flow {id} reclaimed: the table is under pressure",
        proto.name()
    );
    Proxy::close(table, flows, env.work, id, CloseReason::EarlyDrop);
}

/// How the guest learns that the rules refused a flow of `proto`: an ICMP destination
/// unreachable of this kind, or nothing. Nothing answers a broadcast or multicast destination
/// (RFC 1122 3.2.2) or IPv6 while it is disabled (as slirp4netns without `-6`). DNS without a
/// nameserver gets port unreachable, so the guest's resolver fails at once (libslirp drops the
/// query and lets it time out; Linux tells a UDP socket of port unreachable only).
pub(crate) fn refusal_reply(refusal: Refusal, proto: Proto) -> Option<Unreachable> {
    match refusal {
        Refusal::HostLoopbackDisabled | Refusal::Reserved => Some(Unreachable::Net),
        Refusal::Denied => Some(Unreachable::Prohibited),
        Refusal::NotDns | Refusal::NoNameserver if proto != Proto::Icmp => Some(Unreachable::Port),
        Refusal::NotDns
        | Refusal::NoNameserver
        | Refusal::NotUnicast
        | Refusal::Ipv6Disabled
        | Refusal::Ipv4Disabled => None,
    }
}

/// Count, log and answer a flow the rules refused; `packet` (the guest's IP packet) is quoted
/// in the ICMP error, if one is due.
pub(crate) fn refuse(
    env: &mut Env<'_>,
    stack: &mut Stack,
    l2: L2,
    proto: Proto,
    refusal: Refusal,
    what: std::fmt::Arguments<'_>,
    packet: &[u8],
) {
    if refusal != Refusal::Denied {
        // (a denial was counted and logged, rate-limited, by `egress::outbound`)
        env.counters.refused += 1;
        debug!("{} {what} refused: {refusal}", proto.name());
    }
    if let Some(kind) = refusal_reply(refusal, proto) {
        let _ = env.emitter.unreachable(l2, kind, packet, &mut |f| {
            stack.device.push_tx(f);
        });
    }
}

/// Largest datagram read from a host socket (UDP over IPv4 carries at most 65507 bytes; an ICMP
/// echo message at most 65535 - 20).
pub const MAX_DATAGRAM: usize = 65_535;
/// Datagrams relayed from one host socket per pass, so one busy socket cannot starve others.
pub const DRAIN_BATCH: usize = 64;

/// How a [`drain_datagrams`] pass ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// The socket has nothing more (wait for its next readable edge).
    Empty,
    /// Stopped with data possibly pending: the guest queue is full or the batch is done
    /// (retry after the next poll).
    Pending,
    /// A receive error other than "would block".
    Error(std::io::ErrorKind),
}

/// Receive datagrams from `sock` while the guest's transmit queue has room, at most
/// [`DRAIN_BATCH`], calling `deliver(env, stack, from, len)` for each; the bytes are in
/// `env.buf[..len]`. Shared by UDP flows, UDP port forwards and ICMP echo flows.
pub fn drain_datagrams(
    env: &mut Env<'_>,
    stack: &mut Stack,
    sock: &std::net::UdpSocket,
    mut deliver: impl FnMut(&mut Env<'_>, &mut Stack, SocketAddr, usize),
) -> Drained {
    if env.buf.len() < MAX_DATAGRAM {
        env.buf.resize(MAX_DATAGRAM, 0);
    }
    for _ in 0..DRAIN_BATCH {
        if !stack.device.tx_has_room() {
            return Drained::Pending;
        }
        match sock.recv_from(env.buf) {
            Ok((n, from)) => deliver(env, stack, from, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!("recv from {:?}: {e}", sock.local_addr().ok());
                return Drained::Error(e.kind());
            }
        }
    }
    Drained::Pending
}

/// Where a forward's clients go: its guest address, or for `::` the guest's learned IPv6
/// address `learned` (`None` while unknown).
fn forward_guest(guest: SocketAddr, learned: Option<std::net::Ipv6Addr>) -> Option<SocketAddr> {
    match guest.ip() {
        IpAddr::V6(a) if a.is_unspecified() => {
            learned.map(|l| SocketAddr::new(l.into(), guest.port()))
        }
        _ => Some(guest),
    }
}

/// Refuse the waiting clients of a forward that cannot reach the guest: reset TCP connections,
/// drop datagrams (at most [`ACCEPT_BATCH`]). Returns whether the socket is drained, and how
/// many were refused.
fn discard_clients(listener: &Listener) -> (bool, u64) {
    let mut n = 0;
    let mut scrap = [0u8; 1];
    for _ in 0..ACCEPT_BATCH {
        let r = match listener {
            Listener::Tcp(l) => l.accept().map(|(c, _)| {
                let _ = sys::net::set_linger_zero(&c);
            }),
            Listener::Udp(u) => u.recv_from(&mut scrap).map(|_| ()),
        };
        match r {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (true, n),
        }
    }
    (false, n)
}

/// A new NAT entry for `key` going to `target`.
pub(crate) fn new_entry(
    key: crate::nat::Key,
    target: SocketAddr,
    now_ms: u64,
) -> crate::nat::Entry {
    crate::nat::Entry {
        key,
        target,
        host_local: None,
        state: if key.proto == Proto::Tcp {
            crate::nat::State::Connecting
        } else {
            crate::nat::State::Active
        },
        bytes_out: 0,
        bytes_in: 0,
        packets_out: 0,
        packets_in: 0,
        created_ms: now_ms,
        active_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_guest_resolves_unspecified_to_the_learned_address() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let learned = "fd00::5054:ff:fe12:3456".parse().ok();
        assert_eq!(
            forward_guest(sa("[::]:80"), learned),
            Some(sa("[fd00::5054:ff:fe12:3456]:80"))
        );
        assert_eq!(forward_guest(sa("[::]:80"), None), None);
        assert_eq!(
            forward_guest(sa("[fd00::9]:80"), learned),
            Some(sa("[fd00::9]:80"))
        );
        assert_eq!(
            forward_guest(sa("10.0.2.100:80"), None),
            Some(sa("10.0.2.100:80"))
        );
    }
}
