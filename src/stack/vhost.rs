//! Virtual hosts: the gateway, DNS and DHCP "machines" of the virtual network, answered at frame
//! level before frames reach the smoltcp `Interface`.
//!
//! # Theory of operation
//!
//! Every Ethernet frame the guest writes to the tap goes through
//! [`VirtualHosts::on_guest_frame`] first. It returns a [`Verdict`]: either the frame was
//! handled here ([`Verdict::Consumed`], possibly after sending replies through the `reply`
//! callback) or it is to be given, possibly with a rewritten destination MAC, to smoltcp
//! ([`Verdict::ToStack`]).
//!
//! Why this runs before smoltcp:
//!
//! - smoltcp runs with `any_ip = true` so that it terminates flows to every destination. As a
//!   side effect it would answer ARP and NDP for *every* address, which would make the guest
//!   believe any address is on-link and break its duplicate address detection. All ARP and NDP
//!   is therefore decided here: only the gateway `N+2` (ARP, left to smoltcp, which owns that
//!   address) and the DNS proxy `N+3` (answered here) exist on IPv4; `fd00::2`, `fe80::2` and
//!   `fd00::3` on IPv6 (answered here).
//! - smoltcp has one hardware address, [`stack_mac`] (`52:55` + gateway address). slirp4netns
//!   gives `N+3` and the IPv6 hosts their own MACs (`52:55:…:03`, `52:56:00:00:00:02/03`),
//!   and guests keep those in their neighbour caches, so frames addressed to those MACs get
//!   their destination rewritten to [`stack_mac`] in place; otherwise smoltcp would drop them.
//! - Things smoltcp does not do at all live here: the DHCPv4 server (libslirp `bootp.c`),
//!   router advertisements (libslirp `ip6_icmp.c`), stateless DHCPv6 ([`super::dhcpv6`],
//!   libslirp `dhcpv6.c`), and echo replies from `N+2`/`N+3` (answered
//!   even with `--disable-host-loopback`, as libslirp's `icmp_reflect` does) and from `fd00::2`,
//!   `fe80::2` and `fd00::3`.
//!
//! What it owns: the DHCP lease table ([`DHCP_POOL_SIZE`] slots, `N+15 ..= N+30`, keyed by client
//! MAC), the unsolicited router advertisement timer, the learned guest MAC, and counters.
//!
//! What it must not do: I/O, clock reads (time comes in as `now_ms`), panics on any input.
//! Untrusted bytes are parsed only through smoltcp's `new_checked` + `Repr::parse`; replies are
//! built only through smoltcp's emitters, with checksums computed on emit. Checksums of
//! incoming frames are not verified (they come from the guest kernel over a local tap).
//!
//! Invariants:
//!
//! - Each frame yields exactly one verdict and at most one reply; replies go only to the guest.
//! - A client MAC owns at most one lease slot. A client keeps its lease (it is offered again on
//!   every DISCOVER); another client may take a slot only when it is unowned or expired.
//! - Frames we cannot parse (too short, inconsistent lengths) are consumed, counted in
//!   [`Counters::malformed`] and logged at trace level. smoltcp parses with the same code, so it
//!   would drop them too.
//!
//! Timer: with IPv6 enabled, an unsolicited router advertisement goes out
//! [`STARTUP_RA_DELAY_MS`] after the first [`VirtualHosts::on_timer`] call, or as soon as the
//! first guest frame shows that the guest's link is up, then every 200–600 s
//! (libslirp's `NDP_MinRtrAdvInterval ..= NDP_MaxRtrAdvInterval`), picked by a small LCG seeded
//! with the guest MAC. Because a guest frame can move the deadline earlier, callers re-read
//! [`VirtualHosts::next_deadline`] after feeding frames.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress,
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet,
    Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6ExtHeader, Ipv6Packet, Ipv6Repr,
    NdiscNeighborFlags, NdiscOption, NdiscOptionRepr, NdiscPrefixInfoFlags, NdiscPrefixInformation,
    NdiscRepr, NdiscRouterFlags, UdpPacket, UdpRepr, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
    ETHERNET_HEADER_LEN, IPV6_LINK_LOCAL_ALL_NODES,
};

use super::dhcpv6;
use crate::config::{
    mac_for_v4, mac_for_v6, Config, Network, Network6, Services, DHCP_LEASE_SECS, DHCP_POOL_SIZE,
};

/// Smallest Ethernet frame (without FCS); ARP replies are padded to it like libslirp's.
const MIN_ETHERNET_FRAME_LEN: usize = 60;
/// Smallest BOOTP message (RFC 951/1542): some clients ignore shorter replies, so DHCP replies
/// are zero-padded (option PAD) to it.
const MIN_BOOTP_LEN: usize = 300;
/// IPv4 TTL of DHCP replies (libslirp `IPDEFTTL`).
const DHCP_TTL: u8 = 64;
/// TTL / hop limit of echo replies (libslirp `icmp_reflect` uses 255).
const ECHO_TTL: u8 = 255;
/// Hop limit NDP requires on every neighbour discovery message (RFC 4861 §6.1, §7.1).
const NDP_HOP_LIMIT: u8 = 255;
/// How long a DHCPOFFER reserves an address for a client that never sends DHCPREQUEST. Only
/// matters when the pool is full; the client itself gets the same address again regardless.
const DHCP_OFFER_HOLD_MS: u64 = 60_000;
/// DHCP lease time in milliseconds.
const DHCP_LEASE_MS: u64 = DHCP_LEASE_SECS as u64 * 1000;

/// Current hop limit advertised in RAs (libslirp `NDP_AdvCurHopLimit`).
const RA_CUR_HOP_LIMIT: u8 = 64;
/// Router lifetime in RAs: 3 × `NDP_MaxRtrAdvInterval` (libslirp).
const RA_ROUTER_LIFETIME_SECS: u64 = 1800;
/// Valid lifetime of the announced prefix (libslirp `NDP_AdvValidLifetime`).
const RA_PREFIX_VALID_SECS: u64 = 86_400;
/// Preferred lifetime of the announced prefix (libslirp `NDP_AdvPrefLifetime`).
const RA_PREFIX_PREFERRED_SECS: u64 = 14_400;
/// Lifetime of the RDNSS option. libslirp sends `htonl(2 * 600000)` = 1 200 000 s (a
/// milliseconds/seconds mix-up); RFC 8106 §5.1 recommends at least 3 × MaxRtrAdvInterval, which
/// is the router lifetime, so use that.
const RA_RDNSS_LIFETIME_SECS: u32 = 1800;
/// NDP option type of Recursive DNS Server (RFC 8106), which smoltcp has no `Repr` for.
const NDP_OPT_RDNSS: u8 = 25;
/// Length of an RDNSS option with one address, in units of 8 octets.
const NDP_RDNSS_UNITS: u8 = 3;
/// Shortest interval between unsolicited RAs (libslirp `NDP_MinRtrAdvInterval`, 200 s).
pub const RA_MIN_INTERVAL_MS: u64 = 200_000;
/// Longest interval between unsolicited RAs (libslirp `NDP_MaxRtrAdvInterval`, 600 s).
pub const RA_MAX_INTERVAL_MS: u64 = 600_000;
/// Delay of the first unsolicited RA after the first [`VirtualHosts::on_timer`] call. Short, but
/// not zero: at start-up the tap is usually not up yet and the RA would be lost.
pub const STARTUP_RA_DELAY_MS: u64 = 1000;

/// Hardware address smoltcp uses: `52:55` followed by the gateway address `N+2`
/// (`52:55:0a:00:02:02` for the default network). All frames to the guest carry it as source,
/// except ARP replies for `N+3`, which carry `N+3`'s own MAC as libslirp's do.
pub fn stack_mac(net: &Network) -> EthernetAddress {
    EthernetAddress(mac_for_v4(net.gateway()))
}

/// What to do with a frame after [`VirtualHosts::on_guest_frame`] looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handled here (maybe replied), do not give to smoltcp.
    Consumed,
    /// Give the (possibly rewritten) frame to smoltcp.
    ToStack,
}

/// Counters of [`VirtualHosts`], for statistics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames handled here and not given to smoltcp (includes the malformed ones).
    pub consumed: u64,
    /// Frames sent to the guest (ARP/NDP/DHCP/echo replies and unsolicited RAs).
    pub replies: u64,
    /// Frames dropped because they could not be parsed.
    pub malformed: u64,
}

/// Who holds a DHCP pool slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Offered to or bound by this client MAC.
    Client(EthernetAddress),
    /// A client sent DHCPDECLINE: something else uses the address. Blocked until it expires.
    Declined,
}

/// One occupied DHCP pool slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    owner: Owner,
    /// After this instant another client may take the slot (the owner may always renew).
    expires_ms: u64,
}

/// The virtual hosts of the network: ARP/NDP filter, DHCP server, router advertisements and
/// echo replies for the gateway and DNS addresses. See the module documentation.
#[derive(Debug)]
pub struct VirtualHosts {
    net: Network,
    net6: Network6,
    ipv6: bool,
    services: Services,
    /// DNS servers announced by DHCP (the DNS address unless `-D`).
    dns4: Vec<Ipv4Addr>,
    /// DNS server announced by RA and DHCPv6.
    dns6: Ipv6Addr,
    /// [`stack_mac`] of `net`.
    mac: EthernetAddress,
    /// Destination MACs rewritten to `mac`.
    alias_macs: [EthernetAddress; 3],
    guest_mac: Option<EthernetAddress>,
    /// The guest's IPv6 address in the prefix, learned from its traffic (SLAAC assigns it).
    guest6: Option<Ipv6Addr>,
    /// `DHCP_POOL_SIZE` slots; slot `i` is address `N+15+i`.
    leases: Vec<Option<Lease>>,
    /// Next unsolicited RA; `None` until the first `on_timer` or guest frame.
    ra_next_ms: Option<u64>,
    seen_guest: bool,
    rng: u64,
    warned_guest_ra: bool,
    counters: Counters,
    /// Reused buffer for building replies.
    scratch: Vec<u8>,
    /// A guest (address, MAC) for smoltcp's neighbour cache, not yet taken.
    neighbor_hint: Option<(Ipv4Addr, EthernetAddress)>,
    /// The last hint taken.
    hinted: Option<(Ipv4Addr, EthernetAddress)>,
}

impl VirtualHosts {
    /// Virtual hosts for `net`; `ipv6` enables NDP, router advertisements and ICMPv6 echo
    /// (`-6`). Without it every IPv6 frame is consumed.
    pub fn new(net: Network, ipv6: bool) -> Self {
        Self::with(net, Network6::default(), ipv6, Services::default(), &[])
    }

    /// Virtual hosts for a configuration (its networks, services and announced DNS servers).
    pub fn from_config(cfg: &Config) -> Self {
        Self::with(cfg.net, cfg.net6, cfg.ipv6, cfg.services, &cfg.dns_servers)
    }

    fn with(
        net: Network,
        net6: Network6,
        ipv6: bool,
        services: Services,
        dns_servers: &[std::net::IpAddr],
    ) -> Self {
        let pool = usize::try_from(net.dhcp_count.clamp(1, DHCP_POOL_SIZE)).unwrap_or(1);
        let mut dns4: Vec<Ipv4Addr> = dns_servers
            .iter()
            .filter_map(|a| match a {
                std::net::IpAddr::V4(a) => Some(*a),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        if dns4.is_empty() {
            dns4.push(net.dns());
        }
        let dns6 = dns_servers
            .iter()
            .find_map(|a| match a {
                std::net::IpAddr::V6(a) => Some(*a),
                std::net::IpAddr::V4(_) => None,
            })
            .unwrap_or(net6.dns);
        VirtualHosts {
            net,
            net6,
            ipv6,
            services,
            dns4,
            dns6,
            mac: stack_mac(&net),
            alias_macs: [
                EthernetAddress(mac_for_v4(net.dns())),
                EthernetAddress(mac_for_v6(net6.gateway)),
                EthernetAddress(mac_for_v6(net6.dns)),
            ],
            guest_mac: None,
            guest6: None,
            leases: vec![None; pool],
            ra_next_ms: None,
            seen_guest: false,
            rng: 0x2545_f491_4f6c_dd1d,
            warned_guest_ra: false,
            counters: Counters::default(),
            scratch: Vec::new(),
            neighbor_hint: None,
            hinted: None,
        }
    }

    /// The gateway address N+2 (smoltcp's own).
    pub fn gateway(&self) -> Ipv4Addr {
        self.net.gateway()
    }

    /// Hardware address smoltcp must use ([`stack_mac`] of the network).
    pub fn stack_mac(&self) -> EthernetAddress {
        self.mac
    }

    /// Guest MAC learned from ARP/NDP/DHCP, if any (for logs and for unsolicited RA destination).
    /// The latest one seen wins.
    pub fn guest_mac(&self) -> Option<EthernetAddress> {
        self.guest_mac
    }

    /// The guest's IPv6 address: the assigned one (pasta mode), else the latest source address
    /// inside the prefix seen from the guest (or the target of its duplicate address detection,
    /// which announces a SLAAC address before any traffic). The target of IPv6 port forwards to
    /// `::`.
    pub fn guest_v6(&self) -> Option<Ipv6Addr> {
        self.net6.guest.or(self.guest6)
    }

    /// Remember `a` as the guest's IPv6 address if it can be one: inside the prefix, unicast,
    /// and none of tapir's own addresses.
    fn learn_guest_v6(&mut self, a: Ipv6Addr) {
        let candidate = self.net6.contains(a)
            && !a.is_multicast()
            && a != self.net6.prefix
            && !self.is_v6_vhost(a)
            && Some(a) != self.net6.loopback_alias;
        if candidate && self.guest6 != Some(a) {
            log::debug!("vhost: guest IPv6 address is {a}");
            self.guest6 = Some(a);
        }
    }

    /// Counters: frames consumed, replies sent, malformed frames dropped.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The current timer deadline in ms (next unsolicited RA), or `None`. Can move earlier after
    /// [`Self::on_guest_frame`], so read it again after feeding frames.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.ipv6 && self.services.ra {
            self.ra_next_ms
        } else {
            None
        }
    }

    /// Inspect one frame from the guest; may rewrite its destination MAC in place; calls `reply`
    /// with each complete Ethernet frame to send back to the guest.
    pub fn on_guest_frame(
        &mut self,
        frame: &mut [u8],
        now_ms: u64,
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let verdict = self.classify(frame, now_ms, reply);
        if verdict == Verdict::Consumed {
            self.counters.consumed += 1;
        }
        verdict
    }

    /// Timer work (unsolicited IPv6 router advertisements); returns the next deadline in ms, or
    /// None. A returned deadline is always later than `now_ms`.
    pub fn on_timer(&mut self, now_ms: u64, reply: &mut dyn FnMut(&[u8])) -> Option<u64> {
        if !(self.ipv6 && self.services.ra) {
            return None;
        }
        let due = *self
            .ra_next_ms
            .get_or_insert(now_ms.saturating_add(STARTUP_RA_DELAY_MS));
        if now_ms >= due {
            self.send_ra(reply);
            let next = now_ms.saturating_add(self.next_ra_interval());
            self.ra_next_ms = Some(next);
        }
        self.ra_next_ms
    }

    fn classify(&mut self, frame: &mut [u8], now_ms: u64, reply: &mut dyn FnMut(&[u8])) -> Verdict {
        // Destination MAC rewrite, in place.
        match EthernetFrame::new_checked(&mut *frame) {
            Ok(mut eth) => {
                if self.alias_macs.contains(&eth.dst_addr()) {
                    eth.set_dst_addr(self.mac);
                }
            }
            Err(_) => return self.malformed("ethernet frame too short"),
        }
        let Ok(eth) = EthernetFrame::new_checked(&*frame) else {
            return self.malformed("ethernet frame too short");
        };
        let Ok(eth_repr) = EthernetRepr::parse(&eth) else {
            return self.malformed("ethernet frame too short");
        };
        if !self.seen_guest {
            self.seen_guest = true;
            if self.ipv6 {
                // The guest's link is up: advertise promptly instead of waiting.
                let soon = self.ra_next_ms.map_or(now_ms, |t| t.min(now_ms));
                self.ra_next_ms = Some(soon);
            }
        }
        let payload = eth.payload();
        match eth_repr.ethertype {
            EthernetProtocol::Arp => self.on_arp(&eth_repr, payload, reply),
            EthernetProtocol::Ipv4 => self.on_ipv4(&eth_repr, payload, now_ms, reply),
            EthernetProtocol::Ipv6 => self.on_ipv6(&eth_repr, payload, reply),
            EthernetProtocol::Unknown(_) => Verdict::ToStack,
        }
    }

    fn malformed(&mut self, what: &str) -> Verdict {
        self.counters.malformed += 1;
        log::trace!("vhost: dropping malformed frame from guest: {what}");
        Verdict::Consumed
    }

    /// A guest address and MAC that smoltcp's neighbour cache should learn, seen in an ARP
    /// frame smoltcp does not get (each pair once).
    pub fn take_neighbor_hint(&mut self) -> Option<(Ipv4Addr, EthernetAddress)> {
        let hint = self.neighbor_hint.take()?;
        self.hinted = Some(hint);
        Some(hint)
    }

    fn learn_guest_mac(&mut self, mac: EthernetAddress) {
        if !mac.is_unicast() || mac == EthernetAddress([0; 6]) || mac == self.mac {
            return;
        }
        if self.guest_mac != Some(mac) {
            log::debug!("vhost: guest MAC is {mac}");
            if self.guest_mac.is_none() {
                let mut seed = [0u8; 8];
                seed[2..].copy_from_slice(mac.as_bytes());
                self.rng ^= u64::from_be_bytes(seed);
            }
            self.guest_mac = Some(mac);
        }
    }

    /// Whether `ip` can be a guest address: inside the network and none of the special ones.
    fn is_guest_ip(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(ip)
            && ip != self.net.network
            && ip != self.net.broadcast()
            && ip != self.net.gateway()
            && ip != self.net.dns()
    }

    // ---------------------------------------------------------------- ARP

    fn on_arp(
        &mut self,
        eth: &EthernetRepr,
        payload: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            return self.malformed("short ARP packet");
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return self.malformed("ARP packet is not Ethernet/IPv4");
        };
        if sha != eth.src_addr {
            // A lone guest on a tap has no one to speak for: an ARP whose sender differs from
            // the frame's source would teach smoltcp (and us) a MAC no frame comes from, and cut
            // the guest's own traffic until it expires.
            return self.malformed("ARP sender address differs from the frame's source");
        }
        if self.is_guest_ip(spa) {
            self.learn_guest_mac(sha);
            // smoltcp learns the guest's address only from ARP aimed at N+2. ARP for N+3 and
            // announcements stop here, so it is told (Stack::filter_guest_frame): otherwise its
            // first answer to a guest that never asked for N+2 (a SYN-ACK or a RST from N+3)
            // waits for an ARP exchange and is lost, and the guest retries a second later.
            if tpa != self.net.gateway() && self.hinted != Some((spa, sha)) {
                self.neighbor_hint = Some((spa, sha));
            }
        }
        if spa == tpa {
            // Gratuitous ARP / announcement: nothing to answer.
            return Verdict::Consumed;
        }
        let gateway = self.net.gateway();
        let dns = self.net.dns();
        match operation {
            // smoltcp owns N+2: it answers with its MAC and learns the guest's.
            ArpOperation::Request | ArpOperation::Reply if tpa == gateway => Verdict::ToStack,
            // The host's network (pasta mode): every other address is a remote we proxy, so
            // the guest must send it to us. Not the guest's own (DAD probes come from 0.0.0.0
            // and announcements were handled above), not a virtual network's.
            ArpOperation::Request
                if !self.net.virtual_subnet && !spa.is_unspecified() && tpa != spa =>
            {
                self.send_arp_reply(eth, self.mac, tpa, sha, spa, reply);
                Verdict::Consumed
            }
            ArpOperation::Request if tpa == dns => {
                let dns_mac = EthernetAddress(mac_for_v4(dns));
                let arp = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: dns_mac,
                    source_protocol_addr: dns,
                    target_hardware_addr: sha,
                    target_protocol_addr: spa,
                };
                let eth_out = EthernetRepr {
                    src_addr: dns_mac,
                    dst_addr: eth.src_addr,
                    ethertype: EthernetProtocol::Arp,
                };
                let len = (eth_out.buffer_len() + arp.buffer_len()).max(MIN_ETHERNET_FRAME_LEN);
                self.transmit(reply, len, |buf| {
                    let mut frame = EthernetFrame::new_unchecked(buf);
                    eth_out.emit(&mut frame);
                    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
                });
                Verdict::Consumed
            }
            // Every other address does not exist (any_ip would make smoltcp claim it).
            _ => Verdict::Consumed,
        }
    }

    /// An ARP reply: `ip` is at `mac`, to the asker `sha`/`spa`.
    fn send_arp_reply(
        &mut self,
        eth: &EthernetRepr,
        mac: EthernetAddress,
        ip: Ipv4Addr,
        sha: EthernetAddress,
        spa: Ipv4Addr,
        reply: &mut dyn FnMut(&[u8]),
    ) {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: sha,
            target_protocol_addr: spa,
        };
        let eth_out = EthernetRepr {
            src_addr: mac,
            dst_addr: eth.src_addr,
            ethertype: EthernetProtocol::Arp,
        };
        let len = (eth_out.buffer_len() + arp.buffer_len()).max(MIN_ETHERNET_FRAME_LEN);
        self.transmit(reply, len, |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth_out.emit(&mut frame);
            arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
        });
    }

    // ---------------------------------------------------------------- IPv4

    fn on_ipv4(
        &mut self,
        eth: &EthernetRepr,
        payload: &[u8],
        now_ms: u64,
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            return self.malformed("bad IPv4 lengths");
        };
        if packet.version() == 4 && (packet.more_frags() || packet.frag_offset() != 0) {
            // Not ours to judge (nothing we answer is fragmented); smoltcp decides.
            return Verdict::ToStack;
        }
        let Ok(ip) = Ipv4Repr::parse(&packet, &ChecksumCapabilities::ignored()) else {
            return self.malformed("bad IPv4 header");
        };
        let net = self.net;
        match ip.next_header {
            IpProtocol::Icmp
                if net.virtual_subnet
                    && (ip.dst_addr == net.gateway() || ip.dst_addr == net.dns()) =>
            {
                self.on_icmpv4_to_vhost(eth, &ip, packet.payload(), reply)
            }
            IpProtocol::Udp
                if ip.dst_addr == Ipv4Addr::BROADCAST
                    || ip.dst_addr == net.broadcast()
                    || ip.dst_addr == net.gateway() =>
            {
                let Ok(udp_packet) = UdpPacket::new_checked(packet.payload()) else {
                    return self.malformed("bad UDP lengths");
                };
                let src = IpAddress::Ipv4(ip.src_addr);
                let dst = IpAddress::Ipv4(ip.dst_addr);
                let Ok(udp) =
                    UdpRepr::parse(&udp_packet, &src, &dst, &ChecksumCapabilities::ignored())
                else {
                    return self.malformed("bad UDP header");
                };
                if udp.dst_port == DHCP_SERVER_PORT && !self.services.dhcp {
                    Verdict::Consumed
                } else if udp.dst_port == DHCP_SERVER_PORT {
                    self.on_dhcp(udp_packet.payload(), now_ms, reply)
                } else {
                    Verdict::ToStack
                }
            }
            _ => Verdict::ToStack,
        }
    }

    fn on_icmpv4_to_vhost(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv4Repr,
        payload: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let Ok(packet) = Icmpv4Packet::new_checked(payload) else {
            return self.malformed("short ICMPv4 packet");
        };
        let Ok(Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        }) = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::ignored())
        else {
            return Verdict::ToStack;
        };
        let src = ip.src_addr;
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() {
            return Verdict::Consumed;
        }
        let icmp = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let ip_out = Ipv4Repr {
            src_addr: ip.dst_addr,
            dst_addr: src,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: ECHO_TTL,
        };
        self.transmit_ipv4(reply, eth.src_addr, &ip_out, |l4| {
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(l4),
                &ChecksumCapabilities::default(),
            );
        });
        Verdict::Consumed
    }

    // ---------------------------------------------------------------- DHCP

    fn pool_index(&self, ip: Ipv4Addr) -> Option<usize> {
        let off = u32::from(ip).checked_sub(u32::from(self.net.dhcp_start()))?;
        if off < u32::try_from(self.leases.len()).unwrap_or(0) {
            usize::try_from(off).ok()
        } else {
            None
        }
    }

    fn pool_addr(&self, idx: usize) -> Ipv4Addr {
        let off = u32::try_from(idx).unwrap_or(0);
        Ipv4Addr::from(u32::from(self.net.dhcp_start()) + off)
    }

    fn slot_of(&self, mac: EthernetAddress) -> Option<usize> {
        self.leases
            .iter()
            .position(|l| matches!(l, Some(Lease { owner: Owner::Client(m), .. }) if *m == mac))
    }

    fn is_free(&self, idx: usize, now_ms: u64) -> bool {
        match self.leases.get(idx) {
            Some(None) => true,
            Some(Some(lease)) => lease.expires_ms <= now_ms,
            None => false,
        }
    }

    fn assignable(&self, idx: usize, mac: EthernetAddress, now_ms: u64) -> bool {
        self.slot_of(mac) == Some(idx) || self.is_free(idx, now_ms)
    }

    fn first_free(&self, now_ms: u64) -> Option<usize> {
        (0..self.leases.len()).find(|&i| self.is_free(i, now_ms))
    }

    /// Give slot `idx` to `mac` until at least `expires_ms`, dropping any other slot it held.
    fn bind(&mut self, idx: usize, mac: EthernetAddress, expires_ms: u64) {
        let keep = match self.leases.get(idx) {
            Some(Some(Lease {
                owner: Owner::Client(m),
                expires_ms: e,
            })) if *m == mac => *e,
            _ => 0,
        };
        for slot in self.leases.iter_mut() {
            if matches!(slot, Some(Lease { owner: Owner::Client(m), .. }) if *m == mac) {
                *slot = None;
            }
        }
        if let Some(slot) = self.leases.get_mut(idx) {
            *slot = Some(Lease {
                owner: Owner::Client(mac),
                expires_ms: expires_ms.max(keep),
            });
        }
    }

    fn on_dhcp(&mut self, payload: &[u8], now_ms: u64, reply: &mut dyn FnMut(&[u8])) -> Verdict {
        let Ok(packet) = DhcpPacket::new_checked(payload) else {
            return self.malformed("short BOOTP message");
        };
        let Ok(req) = DhcpRepr::parse(&packet) else {
            return self.malformed("not a DHCP request");
        };
        let mac = req.client_hardware_address;
        if !mac.is_unicast() || mac == EthernetAddress([0; 6]) {
            return self.malformed("DHCP client hardware address is not unicast");
        }
        let gateway = self.net.gateway();
        let ciaddr = (!req.client_ip.is_unspecified()).then_some(req.client_ip);
        match req.message_type {
            DhcpMessageType::Discover => {
                let requested = req
                    .requested_ip
                    .and_then(|ip| self.pool_index(ip))
                    .filter(|&i| self.is_free(i, now_ms));
                let Some(idx) = self
                    .slot_of(mac)
                    .or(requested)
                    .or_else(|| self.first_free(now_ms))
                else {
                    log::warn!("DHCP: no free address left for {mac}");
                    return Verdict::Consumed;
                };
                self.bind(idx, mac, now_ms.saturating_add(DHCP_OFFER_HOLD_MS));
                let yiaddr = self.pool_addr(idx);
                log::debug!("DHCP: offering {yiaddr} to {mac}");
                self.dhcp_reply(&req, DhcpMessageType::Offer, yiaddr, reply);
            }
            DhcpMessageType::Request => {
                if req.server_identifier.is_some_and(|s| s != gateway) {
                    // The client chose another server.
                    return Verdict::Consumed;
                }
                let idx = match req.requested_ip.or(ciaddr) {
                    Some(ip) => match self.pool_index(ip) {
                        Some(i) if self.assignable(i, mac, now_ms) => i,
                        _ => {
                            log::debug!("DHCP: {mac} requested {ip}, not available: NAK");
                            self.dhcp_reply(
                                &req,
                                DhcpMessageType::Nak,
                                Ipv4Addr::UNSPECIFIED,
                                reply,
                            );
                            return Verdict::Consumed;
                        }
                    },
                    // No address named at all: libslirp treats it as a client that remembers
                    // an address it was given before ("windows fix").
                    None => match self.slot_of(mac).or_else(|| self.first_free(now_ms)) {
                        Some(i) => i,
                        None => {
                            log::warn!("DHCP: no free address left for {mac}");
                            return Verdict::Consumed;
                        }
                    },
                };
                self.bind(idx, mac, now_ms.saturating_add(DHCP_LEASE_MS));
                self.learn_guest_mac(mac);
                let yiaddr = self.pool_addr(idx);
                log::debug!("DHCP: lease of {yiaddr} to {mac}");
                self.dhcp_reply(&req, DhcpMessageType::Ack, yiaddr, reply);
            }
            DhcpMessageType::Release => {
                if let Some(idx) = self.slot_of(mac) {
                    if ciaddr.is_none_or(|ip| ip == self.pool_addr(idx)) {
                        log::debug!("DHCP: {mac} released {}", self.pool_addr(idx));
                        if let Some(slot) = self.leases.get_mut(idx) {
                            *slot = None;
                        }
                    }
                }
            }
            DhcpMessageType::Decline => {
                // libslirp ignores DECLINE; then the client would be offered the same address
                // forever. Block the address instead.
                let declined = req.requested_ip.and_then(|ip| self.pool_index(ip));
                if let Some(idx) = declined.filter(|&i| self.slot_of(mac) == Some(i)) {
                    log::warn!("DHCP: {mac} declined {}", self.pool_addr(idx));
                    if let Some(slot) = self.leases.get_mut(idx) {
                        *slot = Some(Lease {
                            owner: Owner::Declined,
                            expires_ms: now_ms.saturating_add(DHCP_LEASE_MS),
                        });
                    }
                }
            }
            DhcpMessageType::Inform => {
                self.dhcp_reply(&req, DhcpMessageType::Ack, Ipv4Addr::UNSPECIFIED, reply);
            }
            // Server messages from the guest, or unknown types.
            _ => {}
        }
        Verdict::Consumed
    }

    /// Send an OFFER/ACK (with configuration options) or NAK answering `req`.
    fn dhcp_reply(
        &mut self,
        req: &DhcpRepr<'_>,
        message_type: DhcpMessageType,
        your_ip: Ipv4Addr,
        reply: &mut dyn FnMut(&[u8]),
    ) {
        let net = self.net;
        let gateway = net.gateway();
        let nak = message_type == DhcpMessageType::Nak;
        let inform = req.message_type == DhcpMessageType::Inform;
        let config = !nak;
        let out = DhcpRepr {
            message_type,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: if nak || message_type == DhcpMessageType::Offer {
                Ipv4Addr::UNSPECIFIED
            } else {
                req.client_ip
            },
            your_ip,
            server_ip: if nak { Ipv4Addr::UNSPECIFIED } else { gateway },
            router: config.then_some(gateway),
            subnet_mask: config.then_some(net.netmask()),
            relay_agent_ip: req.relay_agent_ip,
            broadcast: req.broadcast,
            requested_ip: None,
            client_identifier: req.client_identifier,
            server_identifier: Some(gateway),
            parameter_request_list: None,
            // Sent even with --disable-dns, as libslirp does.
            dns_servers: config.then(|| self.dns4.iter().copied().take(3).collect()),
            max_size: None,
            // RFC 2131 §4.3.5: no lease time in the answer to DHCPINFORM.
            lease_duration: (config && !inform).then_some(DHCP_LEASE_SECS),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        // RFC 2131 §4.1: NAKs, broadcast-flag requests and clients without an address get a
        // broadcast; a configured client (renewing, or INFORM) gets unicast to its address.
        let dst_ip = match (nak || req.broadcast, req.client_ip) {
            (false, ip) if !ip.is_unspecified() => ip,
            _ => Ipv4Addr::BROADCAST,
        };
        let dhcp_len = out.buffer_len().max(MIN_BOOTP_LEN);
        let udp = UdpRepr {
            src_port: DHCP_SERVER_PORT,
            dst_port: DHCP_CLIENT_PORT,
        };
        let ip_out = Ipv4Repr {
            src_addr: gateway,
            dst_addr: dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + dhcp_len,
            hop_limit: DHCP_TTL,
        };
        let src = IpAddress::Ipv4(gateway);
        let dst = IpAddress::Ipv4(dst_ip);
        let mut emitted = true;
        self.transmit_ipv4(reply, req.client_hardware_address, &ip_out, |l4| {
            udp.emit(
                &mut UdpPacket::new_unchecked(l4),
                &src,
                &dst,
                dhcp_len,
                |buf| {
                    emitted = out.emit(&mut DhcpPacket::new_unchecked(buf)).is_ok();
                },
                &ChecksumCapabilities::default(),
            );
        });
        if !emitted {
            // Cannot happen with the options above; the buffer is sized by `buffer_len`.
            log::warn!("DHCP: could not encode a {message_type:?}");
        }
    }

    // ---------------------------------------------------------------- IPv6

    /// Whether `addr` is one of the IPv6 addresses answered here (the gateway, the router's
    /// link-local address, the DNS address).
    fn is_v6_vhost(&self, addr: Ipv6Addr) -> bool {
        addr == self.net6.gateway || addr == self.net6.router_ll || addr == self.net6.dns
    }

    /// Whether a neighbour solicitation for `target` from `src` gets an answer: the virtual
    /// hosts in slirp4netns mode; in pasta mode every address but the guest's own (the host's
    /// network is behind us), never a DAD probe.
    fn answers_ns(&self, src: Ipv6Addr, target: Ipv6Addr) -> bool {
        if !self.services.ndp || target.is_multicast() {
            return false;
        }
        if self.net6.virtual_subnet {
            return self.is_v6_vhost(target);
        }
        !src.is_unspecified() && target != src && Some(target) != self.net6.guest
    }

    /// Link-layer address advertised for `target`.
    fn v6_mac(&self, target: Ipv6Addr) -> EthernetAddress {
        if self.net6.virtual_subnet {
            EthernetAddress(mac_for_v6(target))
        } else {
            self.mac
        }
    }

    fn on_ipv6(
        &mut self,
        eth: &EthernetRepr,
        payload: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        if !self.ipv6 {
            return Verdict::Consumed;
        }
        let Ok(packet) = Ipv6Packet::new_checked(payload) else {
            return self.malformed("bad IPv6 lengths");
        };
        let Ok(ip) = Ipv6Repr::parse(&packet) else {
            return self.malformed("bad IPv6 header");
        };
        self.learn_guest_v6(ip.src_addr);
        match ip.next_header {
            IpProtocol::Icmpv6 => self.on_icmpv6(eth, &ip, packet.payload(), reply),
            IpProtocol::Udp if ip.dst_addr == dhcpv6::ALL_SERVERS && !self.services.dhcpv6 => {
                Verdict::Consumed
            }
            IpProtocol::Udp if ip.dst_addr == dhcpv6::ALL_SERVERS => {
                self.on_dhcpv6(eth, &ip, packet.payload(), reply)
            }
            // MLD reports carry a hop-by-hop header (router alert).
            IpProtocol::HopByHop if ip.dst_addr.is_multicast() => {
                match Ipv6ExtHeader::new_checked(packet.payload()) {
                    Ok(hbh) if hbh.next_header() == IpProtocol::Icmpv6 => Verdict::Consumed,
                    Ok(_) => Verdict::ToStack,
                    Err(_) => self.malformed("short hop-by-hop header"),
                }
            }
            _ => Verdict::ToStack,
        }
    }

    fn on_icmpv6(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        payload: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let Ok(packet) = Icmpv6Packet::new_checked(payload) else {
            return self.malformed("short or unknown ICMPv6 message");
        };
        let Ok(icmp) = Icmpv6Repr::parse(
            &ip.src_addr,
            &ip.dst_addr,
            &packet,
            &ChecksumCapabilities::ignored(),
        ) else {
            return self.malformed("bad ICMPv6 message");
        };
        match icmp {
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) => {
                if ip.hop_limit != NDP_HOP_LIMIT {
                    return Verdict::Consumed;
                }
                if !ip.src_addr.is_unspecified() {
                    self.learn_guest_mac(eth.src_addr);
                } else {
                    // Duplicate address detection: the guest is about to use `target_addr`.
                    self.learn_guest_v6(target_addr);
                }
                if self.answers_ns(ip.src_addr, target_addr) {
                    self.send_na(eth, ip, target_addr, reply);
                }
                // Any other target does not exist, and in particular DAD probes for the
                // guest's own address must stay unanswered.
                Verdict::Consumed
            }
            // Answers to smoltcp's own solicitations.
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { .. }) => Verdict::ToStack,
            Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { .. }) => {
                if ip.hop_limit == NDP_HOP_LIMIT {
                    if !ip.src_addr.is_unspecified() {
                        self.learn_guest_mac(eth.src_addr);
                    }
                    if self.services.ra {
                        self.send_ra(reply);
                    }
                }
                Verdict::Consumed
            }
            Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert { .. }) => {
                if !self.warned_guest_ra {
                    self.warned_guest_ra = true;
                    log::warn!("guest sent NDP RA, but shouldn't");
                }
                Verdict::Consumed
            }
            Icmpv6Repr::Ndisc(NdiscRepr::Redirect { .. }) | Icmpv6Repr::Mld(_) => Verdict::Consumed,
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } if self.net6.virtual_subnet && self.is_v6_vhost(ip.dst_addr) => {
                let src = ip.src_addr;
                if src.is_unspecified() || src.is_multicast() {
                    return Verdict::Consumed;
                }
                let icmp = Icmpv6Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                let ip_out = Ipv6Repr {
                    src_addr: ip.dst_addr,
                    dst_addr: src,
                    next_header: IpProtocol::Icmpv6,
                    payload_len: icmp.buffer_len(),
                    hop_limit: ECHO_TTL,
                };
                self.transmit_ipv6(reply, eth.src_addr, &ip_out, |l4| {
                    icmp.emit(
                        &ip_out.src_addr,
                        &ip_out.dst_addr,
                        &mut Icmpv6Packet::new_unchecked(l4),
                        &ChecksumCapabilities::default(),
                    );
                });
                Verdict::Consumed
            }
            _ if ip.dst_addr.is_multicast() => Verdict::Consumed,
            _ => Verdict::ToStack,
        }
    }

    /// Neighbour advertisement for our `target`, answering a solicitation. A solicitation from
    /// `::` is another node's DAD for one of our addresses: defend it to all nodes (RFC 4861
    /// §7.2.4), without the solicited flag.
    fn send_na(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        target: Ipv6Addr,
        reply: &mut dyn FnMut(&[u8]),
    ) {
        let dad = ip.src_addr.is_unspecified();
        let mut flags = NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE;
        if !dad {
            flags |= NdiscNeighborFlags::SOLICITED;
        }
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: Some(self.v6_mac(target).into()),
        });
        let (dst_ip, dst_mac) = if dad {
            (
                IPV6_LINK_LOCAL_ALL_NODES,
                multicast_mac(IPV6_LINK_LOCAL_ALL_NODES),
            )
        } else {
            (ip.src_addr, eth.src_addr)
        };
        let ip_out = Ipv6Repr {
            src_addr: target,
            dst_addr: dst_ip,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: NDP_HOP_LIMIT,
        };
        self.transmit_ipv6(reply, dst_mac, &ip_out, |l4| {
            icmp.emit(
                &ip_out.src_addr,
                &ip_out.dst_addr,
                &mut Icmpv6Packet::new_unchecked(l4),
                &ChecksumCapabilities::default(),
            );
        });
    }

    /// A datagram to the DHCPv6 servers' group: answer an Information-Request from `fe80::2`
    /// ([`dhcpv6::answer`]); anything else to that group is dropped (nothing else serves it).
    fn on_dhcpv6(
        &mut self,
        eth: &EthernetRepr,
        ip: &Ipv6Repr,
        payload: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> Verdict {
        let Ok(udp) = UdpPacket::new_checked(payload) else {
            return self.malformed("short UDP datagram to the DHCPv6 servers");
        };
        if udp.dst_port() != dhcpv6::SERVER_PORT || !ip.src_addr.is_unicast_link_local() {
            return Verdict::Consumed;
        }
        let Some(answer) = dhcpv6::answer(udp.payload(), self.mac.0, self.dns6) else {
            return Verdict::Consumed;
        };
        self.learn_guest_mac(eth.src_addr);
        let udp_out = UdpRepr {
            src_port: dhcpv6::SERVER_PORT,
            dst_port: udp.src_port(),
        };
        let ip_out = Ipv6Repr {
            src_addr: self.net6.router_ll,
            dst_addr: ip.src_addr,
            next_header: IpProtocol::Udp,
            payload_len: udp_out.header_len() + answer.len(),
            hop_limit: NDP_HOP_LIMIT,
        };
        let (src, dst) = (
            IpAddress::Ipv6(ip_out.src_addr),
            IpAddress::Ipv6(ip_out.dst_addr),
        );
        log::debug!(
            "DHCPv6: Information-Request from {}: DNS {}",
            ip.src_addr,
            self.dns6
        );
        self.transmit_ipv6(reply, eth.src_addr, &ip_out, |l4| {
            udp_out.emit(
                &mut UdpPacket::new_unchecked(l4),
                &src,
                &dst,
                answer.len(),
                |buf| buf.copy_from_slice(&answer),
                &ChecksumCapabilities::default(),
            );
        });
        Verdict::Consumed
    }

    /// Router advertisement from `fe80::2` to all nodes (libslirp `ndp_send_ra`), with the
    /// prefix and an RDNSS option.
    fn send_ra(&mut self, reply: &mut dyn FnMut(&[u8])) {
        let ra = NdiscRepr::RouterAdvert {
            hop_limit: RA_CUR_HOP_LIMIT,
            flags: NdiscRouterFlags::empty(),
            router_lifetime: Duration::from_secs(RA_ROUTER_LIFETIME_SECS),
            reachable_time: Duration::from_millis(0),
            retrans_time: Duration::from_millis(0),
            lladdr: Some(self.v6_mac(self.net6.router_ll).into()),
            mtu: None,
            prefix_info: Some(NdiscPrefixInformation {
                prefix_len: self.net6.prefix_len,
                flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
                valid_lifetime: Duration::from_secs(RA_PREFIX_VALID_SECS),
                preferred_lifetime: Duration::from_secs(RA_PREFIX_PREFERRED_SECS),
                prefix: self.net6.prefix,
            }),
        };
        // RDNSS (RFC 8106 §5.1): reserved (2), lifetime (4), one address (16).
        let mut rdnss_data = [0u8; 22];
        let (lifetime, addr) = rdnss_data[2..].split_at_mut(4);
        lifetime.copy_from_slice(&RA_RDNSS_LIFETIME_SECS.to_be_bytes());
        addr.copy_from_slice(&self.dns6.octets());
        let rdnss = NdiscOptionRepr::Unknown {
            type_: NDP_OPT_RDNSS,
            length: NDP_RDNSS_UNITS,
            data: &rdnss_data,
        };
        let icmp = Icmpv6Repr::Ndisc(ra);
        let ra_len = icmp.buffer_len();
        let ip_out = Ipv6Repr {
            src_addr: self.net6.router_ll,
            dst_addr: IPV6_LINK_LOCAL_ALL_NODES,
            next_header: IpProtocol::Icmpv6,
            payload_len: ra_len + rdnss.buffer_len(),
            hop_limit: NDP_HOP_LIMIT,
        };
        let dst_mac = multicast_mac(IPV6_LINK_LOCAL_ALL_NODES);
        self.transmit_ipv6(reply, dst_mac, &ip_out, |l4| {
            let caps = ChecksumCapabilities::default();
            let mut packet = Icmpv6Packet::new_unchecked(&mut *l4);
            icmp.emit(&ip_out.src_addr, &ip_out.dst_addr, &mut packet, &caps);
            if let Some(tail) = l4.get_mut(ra_len..) {
                rdnss.emit(&mut NdiscOption::new_unchecked(tail));
            }
            Icmpv6Packet::new_unchecked(l4).fill_checksum(&ip_out.src_addr, &ip_out.dst_addr);
        });
    }

    /// Next pseudo-random interval between unsolicited RAs, in
    /// `RA_MIN_INTERVAL_MS ..= RA_MAX_INTERVAL_MS`.
    fn next_ra_interval(&mut self) -> u64 {
        // Knuth's MMIX LCG; the high bits are the good ones.
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        RA_MIN_INTERVAL_MS + (self.rng >> 33) % (RA_MAX_INTERVAL_MS - RA_MIN_INTERVAL_MS + 1)
    }

    // ---------------------------------------------------------------- output

    /// Build a frame of `len` zeroed bytes with `fill` and hand it to `reply`.
    fn transmit(&mut self, reply: &mut dyn FnMut(&[u8]), len: usize, fill: impl FnOnce(&mut [u8])) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(len, 0);
        fill(&mut buf);
        reply(&buf);
        self.scratch = buf;
        self.counters.replies += 1;
    }

    /// Ethernet + IPv4 header from `ip` (source MAC [`stack_mac`]); `fill_l4` writes the
    /// `ip.payload_len` bytes of payload.
    fn transmit_ipv4(
        &mut self,
        reply: &mut dyn FnMut(&[u8]),
        dst_mac: EthernetAddress,
        ip: &Ipv4Repr,
        fill_l4: impl FnOnce(&mut [u8]),
    ) {
        let eth = EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        };
        let len = ETHERNET_HEADER_LEN + ip.buffer_len() + ip.payload_len;
        self.transmit(reply, len, |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth.emit(&mut frame);
            let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
            ip.emit(&mut packet, &ChecksumCapabilities::default());
            fill_l4(packet.payload_mut());
        });
    }

    /// Ethernet + IPv6 header from `ip` (source MAC [`stack_mac`]); `fill_l4` writes the
    /// `ip.payload_len` bytes of payload.
    fn transmit_ipv6(
        &mut self,
        reply: &mut dyn FnMut(&[u8]),
        dst_mac: EthernetAddress,
        ip: &Ipv6Repr,
        fill_l4: impl FnOnce(&mut [u8]),
    ) {
        let eth = EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv6,
        };
        let len = ETHERNET_HEADER_LEN + ip.buffer_len() + ip.payload_len;
        self.transmit(reply, len, |buf| {
            let mut frame = EthernetFrame::new_unchecked(buf);
            eth.emit(&mut frame);
            let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
            ip.emit(&mut packet);
            fill_l4(packet.payload_mut());
        });
    }
}

/// Ethernet multicast address of an IPv6 multicast group (RFC 2464 §7): `33:33` + last 4 bytes.
fn multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ipv6;
    use smoltcp::wire::{DhcpOption, MldRepr};

    const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
    const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
    const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456);
    const STACK: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 2]);
    const DNS_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 10, 0, 2, 3]);
    const V6_GW_MAC: EthernetAddress = EthernetAddress([0x52, 0x56, 0, 0, 0, 2]);
    const V6_DNS_MAC: EthernetAddress = EthernetAddress([0x52, 0x56, 0, 0, 0, 3]);
    const PING_DATA: &[u8] = b"tapir ping payload 0123456789";

    fn vh() -> VirtualHosts {
        VirtualHosts::new(Network::default(), true)
    }

    fn feed(vh: &mut VirtualHosts, frame: &[u8], now: u64) -> (Verdict, Vec<Vec<u8>>) {
        let mut frame = frame.to_vec();
        let mut out = Vec::new();
        let v = vh.on_guest_frame(&mut frame, now, &mut |f| out.push(f.to_vec()));
        (v, out)
    }

    fn client_mac(n: u8) -> EthernetAddress {
        EthernetAddress([0x02, 0, 0, 0, 0, n])
    }

    fn eth_frame(
        src: EthernetAddress,
        dst: EthernetAddress,
        ethertype: EthernetProtocol,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; ETHERNET_HEADER_LEN + payload_len];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: src,
            dst_addr: dst,
            ethertype,
        }
        .emit(&mut frame);
        fill(frame.payload_mut());
        buf
    }

    fn arp_frame(op: ArpOperation, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: op,
            source_hardware_addr: GUEST_MAC,
            source_protocol_addr: spa,
            target_hardware_addr: if op == ArpOperation::Reply {
                STACK
            } else {
                EthernetAddress([0; 6])
            },
            target_protocol_addr: tpa,
        };
        let dst = if op == ArpOperation::Reply {
            STACK
        } else {
            EthernetAddress::BROADCAST
        };
        eth_frame(
            GUEST_MAC,
            dst,
            EthernetProtocol::Arp,
            arp.buffer_len(),
            |p| arp.emit(&mut ArpPacket::new_unchecked(p)),
        )
    }

    fn ipv4_frame(dst_mac: EthernetAddress, ip: Ipv4Repr, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let len = ip.buffer_len() + ip.payload_len;
        eth_frame(GUEST_MAC, dst_mac, EthernetProtocol::Ipv4, len, |p| {
            let mut packet = Ipv4Packet::new_unchecked(p);
            ip.emit(&mut packet, &ChecksumCapabilities::default());
            fill(packet.payload_mut());
        })
    }

    fn ping4(dst: Ipv4Addr, dst_mac: EthernetAddress) -> Vec<u8> {
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: PING_DATA,
        };
        let ip = Ipv4Repr {
            src_addr: GUEST_IP,
            dst_addr: dst,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        ipv4_frame(dst_mac, ip, |p| {
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(p),
                &ChecksumCapabilities::default(),
            )
        })
    }

    fn udp4_frame(dst: Ipv4Addr, dst_mac: EthernetAddress, dst_port: u16, data: &[u8]) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: 40000,
            dst_port,
        };
        let ip = Ipv4Repr {
            src_addr: GUEST_IP,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + data.len(),
            hop_limit: 64,
        };
        ipv4_frame(dst_mac, ip, |p| {
            udp.emit(
                &mut UdpPacket::new_unchecked(p),
                &IpAddress::Ipv4(GUEST_IP),
                &IpAddress::Ipv4(dst),
                data.len(),
                |b| b.copy_from_slice(data),
                &ChecksumCapabilities::default(),
            )
        })
    }

    struct DhcpReq {
        mac: EthernetAddress,
        msg: DhcpMessageType,
        requested: Option<Ipv4Addr>,
        ciaddr: Ipv4Addr,
        server_id: Option<Ipv4Addr>,
        broadcast: bool,
        client_id: bool,
    }

    fn dhcp_req(mac: EthernetAddress, msg: DhcpMessageType) -> DhcpReq {
        DhcpReq {
            mac,
            msg,
            requested: None,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            server_id: None,
            broadcast: false,
            client_id: true,
        }
    }

    fn dhcp_frame(r: &DhcpReq) -> Vec<u8> {
        let prl = [1u8, 3, 6, 15, 51];
        let hostname = [DhcpOption {
            kind: 12,
            data: b"guest",
        }];
        let dhcp = DhcpRepr {
            message_type: r.msg,
            transaction_id: 0xdead_beef,
            secs: 0,
            client_hardware_address: r.mac,
            client_ip: r.ciaddr,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: r.broadcast,
            requested_ip: r.requested,
            client_identifier: r.client_id.then_some(r.mac),
            server_identifier: r.server_id,
            parameter_request_list: Some(&prl),
            dns_servers: None,
            max_size: Some(576),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &hostname,
        };
        let (src_ip, dst_ip, dst_mac) = if r.ciaddr.is_unspecified() {
            (
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                EthernetAddress::BROADCAST,
            )
        } else {
            (r.ciaddr, Network::default().gateway(), STACK)
        };
        let udp = UdpRepr {
            src_port: DHCP_CLIENT_PORT,
            dst_port: DHCP_SERVER_PORT,
        };
        let ip = Ipv4Repr {
            src_addr: src_ip,
            dst_addr: dst_ip,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + dhcp.buffer_len(),
            hop_limit: 64,
        };
        let len = ip.buffer_len() + ip.payload_len;
        eth_frame(r.mac, dst_mac, EthernetProtocol::Ipv4, len, |p| {
            let mut packet = Ipv4Packet::new_unchecked(p);
            ip.emit(&mut packet, &ChecksumCapabilities::default());
            udp.emit(
                &mut UdpPacket::new_unchecked(packet.payload_mut()),
                &IpAddress::Ipv4(src_ip),
                &IpAddress::Ipv4(dst_ip),
                dhcp.buffer_len(),
                |b| dhcp.emit(&mut DhcpPacket::new_unchecked(b)).unwrap(),
                &ChecksumCapabilities::default(),
            )
        })
    }

    /// What a DHCP reply said, re-parsed with checksum verification.
    #[derive(Debug)]
    struct DhcpSeen {
        eth: EthernetRepr,
        ip: Ipv4Repr,
        udp: UdpRepr,
        bootp_len: usize,
        message_type: DhcpMessageType,
        xid: u32,
        your_ip: Ipv4Addr,
        server_identifier: Option<Ipv4Addr>,
        subnet_mask: Option<Ipv4Addr>,
        router: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
        lease: Option<u32>,
    }

    fn parse_eth(f: &[u8]) -> (EthernetRepr, &[u8]) {
        let frame = EthernetFrame::new_checked(f).expect("ethernet");
        (EthernetRepr::parse(&frame).unwrap(), frame.payload())
    }

    fn parse_ipv4(p: &[u8]) -> (Ipv4Repr, &[u8]) {
        let packet = Ipv4Packet::new_checked(p).expect("ipv4 lengths");
        let repr = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("ipv4");
        (repr, packet.payload())
    }

    fn parse_ipv6(p: &[u8]) -> (Ipv6Repr, &[u8]) {
        let packet = Ipv6Packet::new_checked(p).expect("ipv6 lengths");
        (Ipv6Repr::parse(&packet).expect("ipv6"), packet.payload())
    }

    fn parse_dhcp(f: &[u8]) -> DhcpSeen {
        let (eth, p) = parse_eth(f);
        assert_eq!(eth.ethertype, EthernetProtocol::Ipv4);
        let (ip, p) = parse_ipv4(p);
        let udp_packet = UdpPacket::new_checked(p).unwrap();
        let udp = UdpRepr::parse(
            &udp_packet,
            &IpAddress::Ipv4(ip.src_addr),
            &IpAddress::Ipv4(ip.dst_addr),
            &ChecksumCapabilities::default(),
        )
        .expect("udp checksum");
        let payload = udp_packet.payload();
        let packet = DhcpPacket::new_checked(payload).unwrap();
        let d = DhcpRepr::parse(&packet).expect("dhcp");
        DhcpSeen {
            eth,
            ip,
            udp,
            bootp_len: payload.len(),
            message_type: d.message_type,
            xid: d.transaction_id,
            your_ip: d.your_ip,
            server_identifier: d.server_identifier,
            subnet_mask: d.subnet_mask,
            router: d.router,
            dns: d.dns_servers.map(|v| v.to_vec()).unwrap_or_default(),
            lease: d.lease_duration,
        }
    }

    fn dhcp_exchange(vh: &mut VirtualHosts, r: &DhcpReq, now: u64) -> Option<DhcpSeen> {
        let (v, out) = feed(vh, &dhcp_frame(r), now);
        assert_eq!(v, Verdict::Consumed);
        assert!(out.len() <= 1);
        out.first().map(|f| parse_dhcp(f))
    }

    fn ipv6_frame(
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        icmp: &Icmpv6Repr,
    ) -> Vec<u8> {
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit: 255,
        };
        let len = ip.buffer_len() + ip.payload_len;
        eth_frame(src_mac, dst_mac, EthernetProtocol::Ipv6, len, |p| {
            let mut packet = Ipv6Packet::new_unchecked(p);
            ip.emit(&mut packet);
            icmp.emit(
                &src,
                &dst,
                &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
                &ChecksumCapabilities::default(),
            );
        })
    }

    fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
        let o = a.octets();
        Ipv6Addr::from([
            0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
        ])
    }

    fn ns_frame(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let lladdr = (!src.is_unspecified()).then(|| GUEST_MAC.into());
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr,
        });
        let dst = solicited_node(target);
        ipv6_frame(GUEST_MAC, multicast_mac(dst), src, dst, &icmp)
    }

    fn rs_frame() -> Vec<u8> {
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit {
            lladdr: Some(GUEST_MAC.into()),
        });
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        ipv6_frame(GUEST_MAC, multicast_mac(dst), GUEST_LL, dst, &icmp)
    }

    fn ping6(dst: Ipv6Addr, dst_mac: EthernetAddress) -> Vec<u8> {
        let icmp = Icmpv6Repr::EchoRequest {
            ident: 0x4321,
            seq_no: 9,
            data: PING_DATA,
        };
        ipv6_frame(GUEST_MAC, dst_mac, GUEST_V6, dst, &icmp)
    }

    /// MLDv2 report with the hop-by-hop router alert header, as Linux sends it.
    fn mld_frame() -> Vec<u8> {
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
        let icmp = Icmpv6Repr::Mld(MldRepr::Report {
            nr_mcast_addr_rcrds: 0,
            data: &[],
        });
        let hbh_len = 8;
        let ip = Ipv6Repr {
            src_addr: GUEST_LL,
            dst_addr: dst,
            next_header: IpProtocol::HopByHop,
            payload_len: hbh_len + icmp.buffer_len(),
            hop_limit: 1,
        };
        let len = ip.buffer_len() + ip.payload_len;
        eth_frame(
            GUEST_MAC,
            multicast_mac(dst),
            EthernetProtocol::Ipv6,
            len,
            |p| {
                let mut packet = Ipv6Packet::new_unchecked(p);
                ip.emit(&mut packet);
                let payload = packet.payload_mut();
                let (hbh, rest) = payload.split_at_mut(hbh_len);
                let mut header = Ipv6ExtHeader::new_unchecked(&mut *hbh);
                header.set_next_header(IpProtocol::Icmpv6);
                header.set_header_len(0);
                hbh[2..].copy_from_slice(&[5, 2, 0, 0, 1, 0]); // router alert MLD, PadN
                icmp.emit(
                    &GUEST_LL,
                    &dst,
                    &mut Icmpv6Packet::new_unchecked(rest),
                    &ChecksumCapabilities::default(),
                );
            },
        )
    }

    /// Parse an ICMPv6 reply frame with checksum verification.
    fn with_icmpv6<R>(
        f: &[u8],
        check: impl FnOnce(EthernetRepr, Ipv6Repr, Icmpv6Repr<'_>, &[u8]) -> R,
    ) -> R {
        let (eth, p) = parse_eth(f);
        assert_eq!(eth.ethertype, EthernetProtocol::Ipv6);
        let (ip, p) = parse_ipv6(p);
        assert_eq!(ip.next_header, IpProtocol::Icmpv6);
        let packet = Icmpv6Packet::new_checked(p).unwrap();
        let icmp = Icmpv6Repr::parse(
            &ip.src_addr,
            &ip.dst_addr,
            &packet,
            &ChecksumCapabilities::default(),
        )
        .expect("icmpv6 with valid checksum");
        check(eth, ip, icmp, p)
    }

    // ------------------------------------------------------------ ARP

    #[test]
    fn arp_for_dns_answered_with_its_mac() {
        let mut vh = vh();
        let (v, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, GUEST_IP, Ipv4Addr::new(10, 0, 2, 3)),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MIN_ETHERNET_FRAME_LEN);
        let (eth, p) = parse_eth(&out[0]);
        assert_eq!(eth.dst_addr, GUEST_MAC);
        assert_eq!(eth.src_addr, DNS_MAC);
        assert_eq!(eth.ethertype, EthernetProtocol::Arp);
        let repr = ArpRepr::parse(&ArpPacket::new_checked(p).unwrap()).unwrap();
        assert_eq!(
            repr,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: DNS_MAC,
                source_protocol_addr: Ipv4Addr::new(10, 0, 2, 3),
                target_hardware_addr: GUEST_MAC,
                target_protocol_addr: GUEST_IP,
            }
        );
        assert_eq!(vh.guest_mac(), Some(GUEST_MAC));
        assert_eq!(
            vh.counters(),
            Counters {
                consumed: 1,
                replies: 1,
                malformed: 0
            }
        );
    }

    #[test]
    fn arp_for_gateway_goes_to_stack() {
        let mut vh = vh();
        let (v, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, GUEST_IP, Ipv4Addr::new(10, 0, 2, 2)),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
        assert!(out.is_empty());
        assert_eq!(vh.guest_mac(), Some(GUEST_MAC));
        let (v, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Reply, GUEST_IP, Ipv4Addr::new(10, 0, 2, 2)),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
        assert!(out.is_empty());
        assert_eq!(vh.counters().consumed, 0);
    }

    /// An ARP whose sender hardware address is not the frame's source (one frame of a guest
    /// that writes its own) must not reach smoltcp, which would learn that MAC for the guest's
    /// address and send the guest's traffic to it.
    #[test]
    fn arp_whose_sender_is_not_the_frame_source_is_dropped() {
        let mut vh = vh();
        for op in [ArpOperation::Request, ArpOperation::Reply] {
            for tpa in [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3)] {
                let mut f = arp_frame(op, GUEST_IP, tpa);
                // Sender hardware address: bytes 8..14 of the ARP packet, after the 14-byte
                // Ethernet header.
                f[22..28].copy_from_slice(&[0x02, 0xde, 0xad, 0, 0, 1]);
                let (v, out) = feed(&mut vh, &f, 0);
                assert_eq!(v, Verdict::Consumed, "{op:?} for {tpa}");
                assert!(out.is_empty(), "{op:?} for {tpa}: no answer");
            }
        }
        assert_eq!(vh.guest_mac(), None, "nothing learned");
        assert_eq!(vh.counters().malformed, 4);
    }

    #[test]
    fn arp_for_other_addresses_not_answered() {
        let mut vh = vh();
        for tpa in [
            Ipv4Addr::new(10, 0, 2, 50),
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(192, 168, 1, 1),
        ] {
            let (v, out) = feed(&mut vh, &arp_frame(ArpOperation::Request, GUEST_IP, tpa), 0);
            assert_eq!(v, Verdict::Consumed, "{tpa}");
            assert!(out.is_empty());
        }
        // A reply to someone else is not smoltcp's business either.
        let (v, _) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Reply, GUEST_IP, Ipv4Addr::new(10, 0, 2, 3)),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert_eq!(vh.counters().replies, 0);
    }

    /// pasta mode: the guest holds the host's address on the host's network.
    fn pasta_vh() -> VirtualHosts {
        let net = Network::copied(
            Ipv4Addr::new(192, 0, 2, 10),
            24,
            Ipv4Addr::new(192, 0, 2, 1),
        );
        let net6 = Network6 {
            prefix: "2001:db8::".parse().unwrap(),
            guest: Some(GUEST_V6),
            gateway: "fe80::1".parse().unwrap(),
            router_ll: "fe80::1".parse().unwrap(),
            virtual_subnet: false,
            ..Network6::default()
        };
        VirtualHosts::with(net, net6, true, Services::default(), &[])
    }

    #[test]
    fn pasta_mode_answers_arp_and_ns_for_the_hosts_network() {
        let mut vh = pasta_vh();
        let guest = Ipv4Addr::new(192, 0, 2, 10);
        // The gateway is smoltcp's.
        let (v, _) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, guest, Ipv4Addr::new(192, 0, 2, 1)),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
        // Any other host of the network is behind us.
        let (v, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, guest, Ipv4Addr::new(192, 0, 2, 77)),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert_eq!(out.len(), 1);
        let (eth, payload) = parse_eth(&out[0]);
        assert_eq!(eth.dst_addr, GUEST_MAC);
        let arp = ArpRepr::parse(&ArpPacket::new_checked(payload).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        } = arp
        else {
            panic!("not an ARP reply");
        };
        assert_eq!(source_hardware_addr, vh.stack_mac());
        assert_eq!(source_protocol_addr, Ipv4Addr::new(192, 0, 2, 77));
        // DAD probes and announcements of the guest's own address stay unanswered.
        let (_, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, Ipv4Addr::UNSPECIFIED, guest),
            0,
        );
        assert!(out.is_empty());
        let (_, out) = feed(&mut vh, &arp_frame(ArpOperation::Request, guest, guest), 0);
        assert!(out.is_empty());
        // NDP: every address but the guest's, never DAD.
        let (_, out) = feed(
            &mut vh,
            &ns_frame(GUEST_LL, "2001:db8::99".parse().unwrap()),
            0,
        );
        assert_eq!(out.len(), 1);
        let (_, out) = feed(&mut vh, &ns_frame(GUEST_LL, "fe80::1".parse().unwrap()), 0);
        assert_eq!(out.len(), 1);
        let (_, out) = feed(&mut vh, &ns_frame(GUEST_LL, GUEST_V6), 0);
        assert!(out.is_empty());
        let (_, out) = feed(&mut vh, &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6), 0);
        assert!(out.is_empty());
        // Echo to the gateway is proxied (to the real gateway, or the host's loopback).
        let (v, out) = feed(&mut vh, &ping4(Ipv4Addr::new(192, 0, 2, 1), STACK), 0);
        assert_eq!(v, Verdict::ToStack);
        assert!(out.is_empty());
    }

    #[test]
    fn services_can_be_turned_off() {
        let services = Services {
            dhcp: false,
            ndp: false,
            ra: false,
            dhcpv6: true,
            icmp: true,
        };
        let mut vh =
            VirtualHosts::with(Network::default(), Network6::default(), true, services, &[]);
        let (v, out) = feed(
            &mut vh,
            &dhcp_frame(&dhcp_req(client_mac(1), DhcpMessageType::Discover)),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty(), "--no-dhcp");
        let (_, out) = feed(&mut vh, &ns_frame(GUEST_LL, ipv6::GATEWAY), 0);
        assert!(out.is_empty(), "--no-ndp");
        let (_, out) = feed(&mut vh, &rs_frame(), 0);
        assert!(out.is_empty(), "--no-ra");
        assert_eq!(vh.on_timer(0, &mut |_| panic!("--no-ra")), None);
    }

    #[test]
    fn gratuitous_arp_learned_not_answered() {
        let mut vh = vh();
        let (v, out) = feed(
            &mut vh,
            &arp_frame(ArpOperation::Request, GUEST_IP, GUEST_IP),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        assert_eq!(vh.guest_mac(), Some(GUEST_MAC));
        // A guest claiming the gateway's address is not answered and not learned.
        let mut vh = self::vh();
        let gw = Ipv4Addr::new(10, 0, 2, 2);
        let (v, out) = feed(&mut vh, &arp_frame(ArpOperation::Request, gw, gw), 0);
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        assert_eq!(vh.guest_mac(), None);
    }

    // ------------------------------------------------------------ MAC rewrite

    #[test]
    fn dst_mac_of_dns_rewritten_to_stack_mac() {
        let mut vh = vh();
        let mut frame = udp4_frame(Ipv4Addr::new(10, 0, 2, 3), DNS_MAC, 53, b"query");
        let original = frame.clone();
        let v = vh.on_guest_frame(&mut frame, 0, &mut |_| panic!("no reply expected"));
        assert_eq!(v, Verdict::ToStack);
        let (eth, _) = parse_eth(&frame);
        assert_eq!(eth.dst_addr, STACK);
        assert_eq!(
            frame[6..],
            original[6..],
            "only the destination MAC changes"
        );

        for mac in [V6_GW_MAC, V6_DNS_MAC] {
            let mut frame = eth_frame(GUEST_MAC, mac, EthernetProtocol::Ipv6, 40, |p| {
                Ipv6Repr {
                    src_addr: GUEST_V6,
                    dst_addr: ipv6::GATEWAY,
                    next_header: IpProtocol::Tcp,
                    payload_len: 0,
                    hop_limit: 64,
                }
                .emit(&mut Ipv6Packet::new_unchecked(p))
            });
            let v = vh.on_guest_frame(&mut frame, 0, &mut |_| panic!("no reply expected"));
            assert_eq!(v, Verdict::ToStack);
            assert_eq!(parse_eth(&frame).0.dst_addr, STACK);
        }

        // Other destinations are left alone.
        let mut frame = udp4_frame(Ipv4Addr::new(1, 1, 1, 1), STACK, 53, b"query");
        let original = frame.clone();
        assert_eq!(
            vh.on_guest_frame(&mut frame, 0, &mut |_| {}),
            Verdict::ToStack
        );
        assert_eq!(frame, original);
    }

    // ------------------------------------------------------------ ICMPv4

    #[test]
    fn ping_gateway_and_dns_answered() {
        for (dst, dst_mac) in [
            (Ipv4Addr::new(10, 0, 2, 2), STACK),
            (Ipv4Addr::new(10, 0, 2, 3), DNS_MAC),
        ] {
            let mut vh = vh();
            let (v, out) = feed(&mut vh, &ping4(dst, dst_mac), 0);
            assert_eq!(v, Verdict::Consumed);
            assert_eq!(out.len(), 1);
            let (eth, p) = parse_eth(&out[0]);
            assert_eq!((eth.src_addr, eth.dst_addr), (STACK, GUEST_MAC));
            let (ip, p) = parse_ipv4(p);
            assert_eq!((ip.src_addr, ip.dst_addr), (dst, GUEST_IP));
            assert_eq!(ip.hop_limit, 255);
            assert_eq!(ip.next_header, IpProtocol::Icmp);
            let packet = Icmpv4Packet::new_checked(p).unwrap();
            let icmp =
                Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).expect("checksum");
            assert_eq!(
                icmp,
                Icmpv4Repr::EchoReply {
                    ident: 0x1234,
                    seq_no: 7,
                    data: PING_DATA
                }
            );
        }
    }

    #[test]
    fn ping_elsewhere_goes_to_stack() {
        let mut vh = vh();
        for dst in [Ipv4Addr::new(10, 0, 2, 50), Ipv4Addr::new(8, 8, 8, 8)] {
            let (v, out) = feed(&mut vh, &ping4(dst, STACK), 0);
            assert_eq!(v, Verdict::ToStack);
            assert!(out.is_empty());
        }
        let (v, _) = feed(
            &mut vh,
            &udp4_frame(Ipv4Addr::new(10, 0, 2, 2), STACK, 8080, b"x"),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
        let (v, _) = feed(
            &mut vh,
            &udp4_frame(Ipv4Addr::BROADCAST, EthernetAddress::BROADCAST, 137, b"x"),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
    }

    // ------------------------------------------------------------ DHCP

    fn assert_config_options(s: &DhcpSeen, net: &Network) {
        assert_eq!(s.server_identifier, Some(net.gateway()));
        assert_eq!(s.subnet_mask, Some(net.netmask()));
        assert_eq!(s.router, Some(net.gateway()));
        assert_eq!(s.dns, vec![net.dns()]);
        assert_eq!(s.lease, Some(DHCP_LEASE_SECS));
    }

    #[test]
    fn dhcp_discover_offer_request_ack() {
        let net = Network::default();
        let mut vh = vh();
        let mac = client_mac(1);
        let offer =
            dhcp_exchange(&mut vh, &dhcp_req(mac, DhcpMessageType::Discover), 0).expect("offer");
        assert_eq!(offer.message_type, DhcpMessageType::Offer);
        assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(offer.xid, 0xdead_beef);
        assert_config_options(&offer, &net);
        assert_eq!((offer.eth.src_addr, offer.eth.dst_addr), (STACK, mac));
        assert_eq!(
            (offer.ip.src_addr, offer.ip.dst_addr),
            (net.gateway(), Ipv4Addr::BROADCAST)
        );
        assert_eq!((offer.udp.src_port, offer.udp.dst_port), (67, 68));
        assert!(offer.bootp_len >= MIN_BOOTP_LEN);

        let mut req = dhcp_req(mac, DhcpMessageType::Request);
        req.requested = Some(offer.your_ip);
        req.server_id = Some(net.gateway());
        let ack = dhcp_exchange(&mut vh, &req, 10).expect("ack");
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.your_ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_config_options(&ack, &net);
        assert_eq!(ack.ip.dst_addr, Ipv4Addr::BROADCAST);
        assert_eq!(vh.guest_mac(), Some(mac));

        // The client keeps its lease.
        let again = dhcp_exchange(&mut vh, &dhcp_req(mac, DhcpMessageType::Discover), 20).unwrap();
        assert_eq!(again.your_ip, Ipv4Addr::new(10, 0, 2, 15));

        // Renewal: unicast from the bound address, answered by unicast.
        let mut renew = dhcp_req(mac, DhcpMessageType::Request);
        renew.ciaddr = Ipv4Addr::new(10, 0, 2, 15);
        let ack = dhcp_exchange(&mut vh, &renew, 30).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.your_ip, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(ack.ip.dst_addr, Ipv4Addr::new(10, 0, 2, 15));

        // Broadcast flag wins over ciaddr.
        renew.broadcast = true;
        let ack = dhcp_exchange(&mut vh, &renew, 40).unwrap();
        assert_eq!(ack.ip.dst_addr, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn dhcp_second_client_exhaustion_and_release() {
        let mut vh = vh();
        for n in 0..16u8 {
            let offer = dhcp_exchange(
                &mut vh,
                &dhcp_req(client_mac(n), DhcpMessageType::Discover),
                0,
            )
            .unwrap();
            assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 2, 15 + n));
        }
        assert!(dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(16), DhcpMessageType::Discover),
            0
        )
        .is_none());
        // REQUEST without an address from a newcomer: no address, no answer.
        assert!(dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(16), DhcpMessageType::Request),
            0
        )
        .is_none());

        // Client 0 releases .15, which the newcomer then gets.
        let mut rel = dhcp_req(client_mac(0), DhcpMessageType::Release);
        rel.ciaddr = Ipv4Addr::new(10, 0, 2, 15);
        assert!(dhcp_exchange(&mut vh, &rel, 0).is_none());
        let offer = dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(16), DhcpMessageType::Discover),
            0,
        )
        .unwrap();
        assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 2, 15));
    }

    #[test]
    fn dhcp_unrequested_offers_expire_when_pool_is_full() {
        let mut vh = vh();
        for n in 0..16u8 {
            dhcp_exchange(
                &mut vh,
                &dhcp_req(client_mac(n), DhcpMessageType::Discover),
                0,
            )
            .unwrap();
        }
        assert!(dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(16), DhcpMessageType::Discover),
            1
        )
        .is_none());
        let offer = dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(16), DhcpMessageType::Discover),
            DHCP_OFFER_HOLD_MS,
        )
        .unwrap();
        assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 2, 15));
    }

    #[test]
    fn dhcp_request_for_foreign_address_nak() {
        let net = Network::default();
        let mut vh = vh();
        let (a, b) = (client_mac(1), client_mac(2));
        dhcp_exchange(&mut vh, &dhcp_req(a, DhcpMessageType::Discover), 0).unwrap();
        let offer_b = dhcp_exchange(&mut vh, &dhcp_req(b, DhcpMessageType::Discover), 0).unwrap();
        assert_eq!(offer_b.your_ip, Ipv4Addr::new(10, 0, 2, 16));

        for foreign in [
            Ipv4Addr::new(10, 0, 2, 16),  // b's
            Ipv4Addr::new(10, 0, 2, 100), // outside the pool
            Ipv4Addr::new(192, 168, 1, 7),
        ] {
            let mut req = dhcp_req(a, DhcpMessageType::Request);
            req.requested = Some(foreign);
            let nak = dhcp_exchange(&mut vh, &req, 0).expect("nak");
            assert_eq!(nak.message_type, DhcpMessageType::Nak, "{foreign}");
            assert_eq!(nak.your_ip, Ipv4Addr::UNSPECIFIED);
            assert_eq!(nak.server_identifier, Some(net.gateway()));
            assert_eq!(nak.lease, None);
            assert_eq!(nak.ip.dst_addr, Ipv4Addr::BROADCAST);
            assert_eq!(nak.eth.dst_addr, a);
        }

        // A free pool address other than the offered one is fine (an old lease).
        let mut req = dhcp_req(a, DhcpMessageType::Request);
        req.requested = Some(Ipv4Addr::new(10, 0, 2, 20));
        let ack = dhcp_exchange(&mut vh, &req, 0).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.your_ip, Ipv4Addr::new(10, 0, 2, 20));
        // ... and a's previous slot (.15) is free again.
        let offer = dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(3), DhcpMessageType::Discover),
            0,
        )
        .unwrap();
        assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 2, 15));

        // A REQUEST naming another server is ignored.
        let mut req = dhcp_req(b, DhcpMessageType::Request);
        req.requested = Some(Ipv4Addr::new(10, 0, 2, 16));
        req.server_id = Some(Ipv4Addr::new(10, 0, 2, 99));
        assert!(dhcp_exchange(&mut vh, &req, 0).is_none());
    }

    #[test]
    fn dhcp_discover_honours_requested_free_address() {
        let mut vh = vh();
        let mut d = dhcp_req(client_mac(1), DhcpMessageType::Discover);
        d.requested = Some(Ipv4Addr::new(10, 0, 2, 22));
        d.client_id = false;
        assert_eq!(
            dhcp_exchange(&mut vh, &d, 0).unwrap().your_ip,
            Ipv4Addr::new(10, 0, 2, 22)
        );
    }

    #[test]
    fn dhcp_inform_and_decline() {
        let net = Network::default();
        let mut vh = vh();
        let mut inform = dhcp_req(client_mac(1), DhcpMessageType::Inform);
        inform.ciaddr = GUEST_IP;
        let ack = dhcp_exchange(&mut vh, &inform, 0).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.your_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.lease, None);
        assert_eq!(ack.dns, vec![net.dns()]);
        assert_eq!(ack.ip.dst_addr, GUEST_IP);

        let mac = client_mac(2);
        let offer = dhcp_exchange(&mut vh, &dhcp_req(mac, DhcpMessageType::Discover), 0).unwrap();
        let mut decline = dhcp_req(mac, DhcpMessageType::Decline);
        decline.requested = Some(offer.your_ip);
        assert!(dhcp_exchange(&mut vh, &decline, 0).is_none());
        let next = dhcp_exchange(&mut vh, &dhcp_req(mac, DhcpMessageType::Discover), 0).unwrap();
        assert_ne!(next.your_ip, offer.your_ip);
    }

    #[test]
    fn dhcp_in_slash25_network() {
        let net = Network::parse_cidr("10.0.135.128/25").unwrap();
        let mut vh = VirtualHosts::new(net, false);
        let stack = EthernetAddress([0x52, 0x55, 10, 0, 135, 130]);
        assert_eq!(vh.stack_mac(), stack);
        assert_eq!(stack_mac(&net), stack);
        let offer = dhcp_exchange(
            &mut vh,
            &dhcp_req(client_mac(1), DhcpMessageType::Discover),
            0,
        )
        .unwrap();
        assert_eq!(offer.your_ip, Ipv4Addr::new(10, 0, 135, 143));
        assert_eq!(offer.eth.src_addr, stack);
        assert_eq!(offer.ip.src_addr, Ipv4Addr::new(10, 0, 135, 130));
        assert_config_options(&offer, &net);
        assert_eq!(offer.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 128)));
        assert_eq!(offer.dns, vec![Ipv4Addr::new(10, 0, 135, 131)]);
    }

    // ------------------------------------------------------------ IPv6

    #[test]
    fn ns_for_virtual_hosts_answered() {
        for (target, mac) in [
            (ipv6::GATEWAY, V6_GW_MAC),
            (ipv6::ROUTER_LL, V6_GW_MAC),
            (ipv6::DNS, V6_DNS_MAC),
        ] {
            let mut vh = vh();
            let (v, out) = feed(&mut vh, &ns_frame(GUEST_LL, target), 0);
            assert_eq!(v, Verdict::Consumed);
            assert_eq!(out.len(), 1, "{target}");
            with_icmpv6(&out[0], |eth, ip, icmp, _| {
                assert_eq!((eth.src_addr, eth.dst_addr), (STACK, GUEST_MAC));
                assert_eq!((ip.src_addr, ip.dst_addr), (target, GUEST_LL));
                assert_eq!(ip.hop_limit, 255);
                assert_eq!(
                    icmp,
                    Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                        flags: NdiscNeighborFlags::ROUTER
                            | NdiscNeighborFlags::SOLICITED
                            | NdiscNeighborFlags::OVERRIDE,
                        target_addr: target,
                        lladdr: Some(mac.into()),
                    })
                );
            });
            assert_eq!(vh.guest_mac(), Some(GUEST_MAC));
        }
    }

    #[test]
    fn ns_for_other_addresses_and_dad_not_answered() {
        let mut vh = vh();
        // DAD for the guest's own SLAAC address.
        let (v, out) = feed(&mut vh, &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6), 0);
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        // Resolution of some other address (any_ip would make smoltcp claim it).
        let (v, out) = feed(
            &mut vh,
            &ns_frame(GUEST_LL, Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x50)),
            0,
        );
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        // DAD for one of our addresses is defended, unsolicited, to all nodes.
        let (v, out) = feed(&mut vh, &ns_frame(Ipv6Addr::UNSPECIFIED, ipv6::GATEWAY), 0);
        assert_eq!(v, Verdict::Consumed);
        assert_eq!(out.len(), 1);
        with_icmpv6(&out[0], |eth, ip, icmp, _| {
            assert_eq!(eth.dst_addr, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
            assert_eq!(ip.dst_addr, IPV6_LINK_LOCAL_ALL_NODES);
            let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { flags, .. }) = icmp else {
                panic!("not an NA: {icmp:?}");
            };
            assert!(!flags.contains(NdiscNeighborFlags::SOLICITED));
        });
    }

    #[test]
    fn na_from_guest_goes_to_stack() {
        let mut vh = vh();
        let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
            target_addr: GUEST_V6,
            lladdr: Some(GUEST_MAC.into()),
        });
        let frame = ipv6_frame(GUEST_MAC, STACK, GUEST_V6, ipv6::GATEWAY, &icmp);
        assert_eq!(feed(&mut vh, &frame, 0).0, Verdict::ToStack);
    }

    fn check_ra(frame: &[u8]) {
        with_icmpv6(frame, |eth, ip, icmp, raw| {
            assert_eq!(
                (eth.src_addr, eth.dst_addr),
                (STACK, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]))
            );
            assert_eq!(
                (ip.src_addr, ip.dst_addr),
                (ipv6::ROUTER_LL, IPV6_LINK_LOCAL_ALL_NODES)
            );
            assert_eq!(ip.hop_limit, 255);
            assert_eq!(
                icmp,
                Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
                    hop_limit: 64,
                    flags: NdiscRouterFlags::empty(),
                    router_lifetime: Duration::from_secs(1800),
                    reachable_time: Duration::from_millis(0),
                    retrans_time: Duration::from_millis(0),
                    lladdr: Some(V6_GW_MAC.into()),
                    mtu: None,
                    prefix_info: Some(NdiscPrefixInformation {
                        prefix_len: 64,
                        flags: NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF,
                        valid_lifetime: Duration::from_secs(86_400),
                        preferred_lifetime: Duration::from_secs(14_400),
                        prefix: ipv6::PREFIX,
                    }),
                })
            );
            // Walk the options to find RDNSS (smoltcp has no Repr for it).
            let packet = Icmpv6Packet::new_checked(raw).unwrap();
            let mut opts = packet.payload();
            let mut rdnss = None;
            while !opts.is_empty() {
                let opt = NdiscOption::new_checked(opts).unwrap();
                let len = usize::from(opt.data_len()) * 8;
                assert!(len > 0);
                if let Ok(NdiscOptionRepr::Unknown {
                    type_: 25,
                    length,
                    data,
                }) = NdiscOptionRepr::parse(&opt)
                {
                    rdnss = Some((length, data.to_vec()));
                }
                opts = &opts[len..];
            }
            let (length, data) = rdnss.expect("RDNSS option");
            assert_eq!(length, 3);
            assert_eq!(&data[2..6], &1800u32.to_be_bytes());
            assert_eq!(&data[6..22], &ipv6::DNS.octets());
        });
    }

    #[test]
    fn rs_answered_with_ra() {
        let mut vh = vh();
        let (v, out) = feed(&mut vh, &rs_frame(), 0);
        assert_eq!(v, Verdict::Consumed);
        assert_eq!(out.len(), 1);
        check_ra(&out[0]);
        assert_eq!(vh.guest_mac(), Some(GUEST_MAC));
    }

    #[test]
    fn unsolicited_ra_on_timer() {
        let mut vh = vh();
        let mut out = Vec::new();
        let first = vh
            .on_timer(5_000, &mut |f| out.push(f.to_vec()))
            .expect("deadline");
        assert_eq!(first, 5_000 + STARTUP_RA_DELAY_MS);
        assert!(out.is_empty());
        let next = vh
            .on_timer(first, &mut |f| out.push(f.to_vec()))
            .expect("deadline");
        assert_eq!(out.len(), 1);
        check_ra(&out[0]);
        assert!((first + RA_MIN_INTERVAL_MS..=first + RA_MAX_INTERVAL_MS).contains(&next));
        // Early wakeups do nothing.
        assert_eq!(
            vh.on_timer(next - 1, &mut |f| out.push(f.to_vec())),
            Some(next)
        );
        assert_eq!(out.len(), 1);
        let after = vh.on_timer(next, &mut |f| out.push(f.to_vec())).unwrap();
        assert_eq!(out.len(), 2);
        assert!((next + RA_MIN_INTERVAL_MS..=next + RA_MAX_INTERVAL_MS).contains(&after));
        assert_eq!(vh.counters().replies, 2);
    }

    #[test]
    fn first_guest_frame_advances_ra() {
        let mut vh = vh();
        assert_eq!(vh.next_deadline(), None);
        assert_eq!(vh.on_timer(0, &mut |_| {}), Some(STARTUP_RA_DELAY_MS));
        feed(&mut vh, &mld_frame(), 300);
        assert_eq!(vh.next_deadline(), Some(300));
        let mut n = 0;
        vh.on_timer(300, &mut |_| n += 1);
        assert_eq!(n, 1);

        // Without IPv6 there is no timer at all.
        let mut vh4 = VirtualHosts::new(Network::default(), false);
        feed(&mut vh4, &ping4(Ipv4Addr::new(10, 0, 2, 2), STACK), 0);
        assert_eq!(vh4.on_timer(0, &mut |_| panic!("no RA without -6")), None);
        assert_eq!(vh4.next_deadline(), None);
    }

    #[test]
    fn guest_v6_learned_from_dad_and_traffic() {
        let mut vh = vh();
        assert_eq!(vh.guest_v6(), None);
        // Link-local and our own addresses are never the guest's.
        feed(&mut vh, &ns_frame(GUEST_LL, ipv6::GATEWAY), 0);
        feed(&mut vh, &ns_frame(Ipv6Addr::UNSPECIFIED, ipv6::GATEWAY), 0);
        assert_eq!(vh.guest_v6(), None);
        // DAD announces the SLAAC address before any traffic.
        feed(&mut vh, &ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6), 0);
        assert_eq!(vh.guest_v6(), Some(GUEST_V6));
        // The latest source inside the prefix wins; others are ignored.
        let other = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x77);
        let echo = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: PING_DATA,
        };
        feed(
            &mut vh,
            &ipv6_frame(GUEST_MAC, V6_GW_MAC, other, ipv6::GATEWAY, &echo),
            0,
        );
        assert_eq!(vh.guest_v6(), Some(other));
        let outside = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        feed(
            &mut vh,
            &ipv6_frame(GUEST_MAC, V6_GW_MAC, outside, ipv6::GATEWAY, &echo),
            0,
        );
        assert_eq!(vh.guest_v6(), Some(other));
    }

    #[test]
    fn ping6_to_virtual_hosts_answered() {
        for (dst, mac) in [(ipv6::GATEWAY, V6_GW_MAC), (ipv6::DNS, V6_DNS_MAC)] {
            let mut vh = vh();
            let (v, out) = feed(&mut vh, &ping6(dst, mac), 0);
            assert_eq!(v, Verdict::Consumed);
            assert_eq!(out.len(), 1);
            with_icmpv6(&out[0], |eth, ip, icmp, _| {
                assert_eq!((eth.src_addr, eth.dst_addr), (STACK, GUEST_MAC));
                assert_eq!((ip.src_addr, ip.dst_addr), (dst, GUEST_V6));
                assert_eq!(
                    icmp,
                    Icmpv6Repr::EchoReply {
                        ident: 0x4321,
                        seq_no: 9,
                        data: PING_DATA
                    }
                );
            });
        }
        let mut vh = vh();
        let (v, out) = feed(
            &mut vh,
            &ping6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), STACK),
            0,
        );
        assert_eq!(v, Verdict::ToStack);
        assert!(out.is_empty());
    }

    #[test]
    fn guest_ra_mld_and_disabled_ipv6_consumed() {
        let mut vh = vh();
        let ra = Icmpv6Repr::Ndisc(NdiscRepr::RouterAdvert {
            hop_limit: 64,
            flags: NdiscRouterFlags::empty(),
            router_lifetime: Duration::from_secs(1800),
            reachable_time: Duration::from_millis(0),
            retrans_time: Duration::from_millis(0),
            lladdr: None,
            mtu: None,
            prefix_info: None,
        });
        let frame = ipv6_frame(
            GUEST_MAC,
            multicast_mac(IPV6_LINK_LOCAL_ALL_NODES),
            GUEST_LL,
            IPV6_LINK_LOCAL_ALL_NODES,
            &ra,
        );
        for _ in 0..2 {
            let (v, out) = feed(&mut vh, &frame, 0);
            assert_eq!(v, Verdict::Consumed);
            assert!(out.is_empty());
        }
        let (v, out) = feed(&mut vh, &mld_frame(), 0);
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        assert_eq!(vh.counters().malformed, 0);

        let mut vh4 = VirtualHosts::new(Network::default(), false);
        for f in [
            rs_frame(),
            ns_frame(GUEST_LL, ipv6::GATEWAY),
            ping6(ipv6::GATEWAY, V6_GW_MAC),
        ] {
            let (v, out) = feed(&mut vh4, &f, 0);
            assert_eq!(v, Verdict::Consumed);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn malformed_frames_counted() {
        let mut vh = vh();
        let (v, _) = feed(&mut vh, &[0u8; 10], 0);
        assert_eq!(v, Verdict::Consumed);
        let mut ping = ping4(Ipv4Addr::new(10, 0, 2, 2), STACK);
        ping.truncate(ping.len() - 4); // IPv4 total length now exceeds the frame
        let (v, out) = feed(&mut vh, &ping, 0);
        assert_eq!(v, Verdict::Consumed);
        assert!(out.is_empty());
        assert_eq!(
            vh.counters(),
            Counters {
                consumed: 2,
                replies: 0,
                malformed: 2
            }
        );
        // Ethernet padding after the IP packet is fine.
        let mut ping = ping4(Ipv4Addr::new(10, 0, 2, 2), STACK);
        ping.extend_from_slice(&[0; 8]);
        let (_, out) = feed(&mut vh, &ping, 0);
        assert_eq!(out.len(), 1);
    }

    fn fixtures() -> Vec<Vec<u8>> {
        let gw = Ipv4Addr::new(10, 0, 2, 2);
        let dns = Ipv4Addr::new(10, 0, 2, 3);
        let mut req = dhcp_req(client_mac(1), DhcpMessageType::Request);
        req.requested = Some(Ipv4Addr::new(10, 0, 2, 15));
        req.server_id = Some(gw);
        vec![
            arp_frame(ArpOperation::Request, GUEST_IP, gw),
            arp_frame(ArpOperation::Request, GUEST_IP, dns),
            arp_frame(ArpOperation::Request, GUEST_IP, Ipv4Addr::new(10, 0, 2, 50)),
            arp_frame(ArpOperation::Request, GUEST_IP, GUEST_IP),
            ping4(gw, STACK),
            ping4(dns, DNS_MAC),
            ping4(Ipv4Addr::new(8, 8, 8, 8), STACK),
            udp4_frame(dns, DNS_MAC, 53, b"query"),
            dhcp_frame(&dhcp_req(client_mac(1), DhcpMessageType::Discover)),
            dhcp_frame(&req),
            ns_frame(GUEST_LL, ipv6::GATEWAY),
            ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_V6),
            rs_frame(),
            ping6(ipv6::GATEWAY, V6_GW_MAC),
            mld_frame(),
        ]
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn fuzzish_no_panic() {
        let mut rng = Lcg(42);
        let mut sink = |_: &[u8]| {};
        for ipv6 in [true, false] {
            let mut vh = VirtualHosts::new(Network::default(), ipv6);
            let mut now = 0;
            for fixture in fixtures() {
                for len in 0..=fixture.len() {
                    let mut f = fixture[..len].to_vec();
                    vh.on_guest_frame(&mut f, now, &mut sink);
                    now += 1;
                }
                // Random mutations of 1..=4 bytes past the Ethernet header.
                for _ in 0..2000 {
                    let mut f = fixture.clone();
                    for _ in 0..=rng.next() % 4 {
                        let i = ETHERNET_HEADER_LEN
                            + usize::try_from(rng.next()).unwrap()
                                % (f.len() - ETHERNET_HEADER_LEN);
                        f[i] = u8::try_from(rng.next() & 0xff).unwrap();
                    }
                    vh.on_guest_frame(&mut f, now, &mut sink);
                    now += 1;
                }
            }
            // Random byte strings, plain and behind a plausible Ethernet header.
            for i in 0..5000 {
                let len = usize::try_from(rng.next() % 300).unwrap();
                let mut f: Vec<u8> = (0..len)
                    .map(|_| u8::try_from(rng.next() & 0xff).unwrap())
                    .collect();
                if i % 2 == 0 && f.len() >= ETHERNET_HEADER_LEN {
                    let ethertype: [u8; 2] = match i % 6 {
                        0 => [0x08, 0x00],
                        2 => [0x08, 0x06],
                        _ => [0x86, 0xdd],
                    };
                    f[12..14].copy_from_slice(&ethertype);
                    if ethertype == [0x08, 0x00] && f.len() > 14 {
                        f[14] = 0x45;
                    } else if ethertype == [0x86, 0xdd] && f.len() > 14 {
                        f[14] = 0x60;
                    }
                }
                vh.on_guest_frame(&mut f, now, &mut sink);
                now += 1;
            }
            vh.on_timer(now + 10 * RA_MAX_INTERVAL_MS, &mut sink);
            assert!(vh.counters().malformed > 0);
        }
    }
}
