//! The guest-facing network stack: virtual hosts plus a smoltcp `Interface`.
//!
//! # Theory of operation
//!
//! [`Stack`] is the only owner of smoltcp state. A frame from the guest first meets the
//! [`vhost::VirtualHosts`] (ARP and NDP filtering, ICMP echo of the gateway and DNS addresses,
//! DHCP, router advertisements); whatever they do not consume goes to the smoltcp interface,
//! which runs with `any_ip` so that it can terminate connections to every destination the guest
//! talks to. Its hardware address is the gateway's slirp4netns MAC (`52:55:` + N+2), its
//! addresses are N+2 (and fd00::2 with IPv6), and default routes point at those addresses, which
//! is what `any_ip` requires to accept foreign destinations.
//!
//! The stack never reads the clock: the runtime passes `smoltcp::time::Instant`s in. It never
//! touches file descriptors: frames come and go through [`crate::device::Queues`].
//!
//! It holds no sockets either. smoltcp's own `poll` runs every socket of one `SocketSet` on every
//! call (egress asks each socket whether it has something to send, ingress finds a segment's
//! socket by a linear scan), so with a thousand idle connections that pass cost more than the
//! data (throughput halved in a measurement). Instead every TCP flow owns a `SocketSet` of one
//! socket, the proxy finds a segment's flow by its hash-map key, and the stack offers three
//! bounded operations on whichever set it is given: [`Stack::ingress`] (the frame just
//! queued), [`Stack::egress`] (what that socket has to send) and [`Stack::poll_at`] (when it
//! next needs the clock). Segments that belong to no flow go to an empty set, so smoltcp answers
//! them as it would without a socket (RST).

pub mod classify;
pub mod dhcpv6;
pub mod emit;
pub mod reassembly;
pub mod vhost;

use std::net::Ipv4Addr;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr,
};

use crate::config::{mac_for_v4, Config};
use crate::device::{Queues, TapMode};

/// The network stack facing the guest.
pub struct Stack {
    /// smoltcp interface (any_ip, gateway identity).
    pub iface: Interface,
    /// No sockets: what segments of no flow meet.
    empty: SocketSet<'static>,
    /// Frame queues to and from the tap.
    pub device: Queues,
    /// Virtual hosts answered below smoltcp.
    pub vhost: vhost::VirtualHosts,
}

impl Stack {
    /// Build the stack for `cfg`, on a tap used as `mode` says, at time `now`.
    pub fn new(cfg: &Config, mode: TapMode, now: Instant) -> Self {
        Self::with_seed(cfg, mode, now, seed())
    }

    /// [`Stack::new`] with smoltcp's random seed given: the same seed gives the same initial
    /// sequence numbers, which the fuzz harness needs to replay a TCP exchange
    /// ([`crate::fuzzing`]). Production uses [`Stack::new`].
    pub fn with_seed(cfg: &Config, mode: TapMode, now: Instant, seed: u64) -> Self {
        let mtu = usize::try_from(cfg.mtu).unwrap_or(crate::config::MAX_MTU as usize);
        let mut device = Queues::new(mtu, mode);
        let mac = EthernetAddress(mac_for_v4(cfg.net.gateway()));
        let mut icfg = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut device, now);
        let gw = cfg.net.gateway();
        let gw6 = cfg.net6.gateway;
        // smoltcp sends to a destination directly only if one of its addresses' prefixes holds
        // it. A gateway outside the guest's prefix (pasta mode: a link-local IPv6 router, or an
        // IPv4 gateway beyond a /32) gets prefix 0, so that the guest is still on-link.
        let len4 = if cfg.net.contains(gw) {
            cfg.net.prefix_len
        } else {
            0
        };
        let len6 = match cfg.net6.guest {
            Some(g) if !cfg.net6.contains(gw6) || !cfg.net6.contains(g) => 0,
            _ => cfg.net6.prefix_len,
        };
        iface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (2): exactly the IPv4 and the IPv6 gateway
            // (N+2 and fd00::2 in slirp4netns mode).
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(gw), len4));
            if cfg.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(gw6), len6));
            }
        });
        // any_ip accepts a foreign destination only if a route to it goes through one of our own
        // addresses: a default route via ourselves makes every destination ours.
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
        if cfg.ipv6 {
            let _ = iface.routes_mut().add_default_ipv6_route(gw6);
        }
        iface.set_any_ip(true);
        Stack {
            iface,
            empty: SocketSet::new(Vec::new()),
            device,
            vhost: vhost::VirtualHosts::from_config(cfg),
        }
    }

    /// Let the virtual hosts see a guest frame first (they may answer it and may rewrite its
    /// destination MAC). Returns true if the frame goes on (to the proxies, then smoltcp).
    pub fn filter_guest_frame(&mut self, frame: &mut [u8], now: Instant) -> bool {
        let device = &mut self.device;
        let verdict = self.vhost.on_guest_frame(frame, now_ms(now), &mut |reply| {
            device.push_tx(reply);
        });
        if let Some((ip, mac)) = self.vhost.take_neighbor_hint() {
            self.teach_neighbor(ip, mac, now);
        }
        verdict == vhost::Verdict::ToStack
    }

    /// Fill smoltcp's neighbour cache with the guest's `ip` at `mac`, the way smoltcp learns
    /// it from the guest: an ARP reply aimed at N+2 (smoltcp has no call to fill its cache).
    fn teach_neighbor(&mut self, ip: Ipv4Addr, mac: EthernetAddress, now: Instant) {
        let own = self.vhost.stack_mac();
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: own,
            target_protocol_addr: self.vhost.gateway(),
        };
        let eth = EthernetRepr {
            src_addr: mac,
            dst_addr: own,
            ethertype: EthernetProtocol::Arp,
        };
        let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut f);
        arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        self.ingress(now, frame, None);
    }

    /// Hand `frame` to smoltcp at once, with `sockets` (a flow's) or, for a frame of no flow,
    /// with no socket at all. Returns whether socket state may have changed. Any immediate answer
    /// (a RST) is queued for the guest.
    pub fn ingress(
        &mut self,
        now: Instant,
        frame: Vec<u8>,
        sockets: Option<&mut SocketSet<'static>>,
    ) -> bool {
        self.device.push_rx(frame);
        let sockets = sockets.unwrap_or(&mut self.empty);
        let mut changed = false;
        // One frame is queued, so this ends after one round (and at once if the queue was
        // somehow longer, since each round takes one frame).
        loop {
            match self
                .iface
                .poll_ingress_single(now, &mut self.device, sockets)
            {
                smoltcp::iface::PollIngressSingleResult::None => break,
                smoltcp::iface::PollIngressSingleResult::PacketProcessed => {}
                smoltcp::iface::PollIngressSingleResult::SocketStateChanged => changed = true,
            }
        }
        changed
    }

    /// Let the sockets of `sockets` transmit what they have (as far as the guest queue has
    /// room). Returns whether socket state may have changed.
    pub fn egress(&mut self, now: Instant, sockets: &mut SocketSet<'static>) -> bool {
        let mut changed = false;
        // Each round emits at most one segment per socket; stop when nothing more goes out.
        while self.iface.poll_egress(now, &mut self.device, sockets)
            == smoltcp::iface::PollResult::SocketStateChanged
        {
            changed = true;
        }
        changed
    }

    /// When the sockets of `sockets` next need [`Stack::egress`] (retransmission, keep-alive,
    /// timeout, or now when they have data and window), if ever without news from the guest.
    pub fn poll_at(&mut self, now: Instant, sockets: &SocketSet<'static>) -> Option<Instant> {
        self.iface.poll_at(now, sockets)
    }

    /// Run timers of the virtual hosts; returns their next deadline.
    pub fn on_timer(&mut self, now: Instant) -> Option<Instant> {
        let device = &mut self.device;
        self.vhost
            .on_timer(now_ms(now), &mut |reply| {
                device.push_tx(reply);
            })
            .map(|ms| Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
}

fn now_ms(now: Instant) -> u64 {
    u64::try_from(now.total_millis()).unwrap_or(0)
}

/// A seed for smoltcp's initial sequence numbers and ports: not security-critical (the guest
/// can see everything anyway), but must differ between runs.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;
    use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr};

    const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x64]);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

    fn stack() -> Stack {
        let cfg = Config::from_options(Options::default(), false).unwrap();
        Stack::new(&cfg, TapMode::default(), Instant::ZERO)
    }

    fn arp_request(tpa: Ipv4Addr) -> Vec<u8> {
        let arp = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: GUEST_MAC,
            source_protocol_addr: GUEST,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: tpa,
        };
        let eth = EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        let mut frame = vec![0u8; 60];
        let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut f);
        arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
        frame
    }

    fn syn_to(dst: Ipv4Addr, port: u16, own_mac: EthernetAddress) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: port,
            control: TcpControl::Syn,
            seq_number: smoltcp::wire::TcpSeqNumber(1),
            ack_number: None,
            window_len: 64240,
            window_scale: None,
            max_seg_size: Some(1460),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: GUEST,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: GUEST_MAC,
            dst_addr: own_mac,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut frame = vec![0u8; eth.buffer_len() + ip.buffer_len() + tcp.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.emit(&mut f);
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(p.payload_mut()),
            &IpAddress::Ipv4(GUEST),
            &IpAddress::Ipv4(dst),
            &caps,
        );
        frame
    }

    fn ethertypes(stack: &mut Stack) -> Vec<EthernetProtocol> {
        std::iter::from_fn(|| stack.device.pop_tx())
            .map(|f| EthernetFrame::new_unchecked(&f[..]).ethertype())
            .collect()
    }

    /// A guest that only ever asked for N+3 (the virtual hosts answer that, smoltcp never sees
    /// it) gets smoltcp's answer to its first segment at once: smoltcp was told the guest's MAC,
    /// instead of sending an ARP request and dropping the answer (the guest then retried a
    /// second later).
    #[test]
    fn smoltcp_knows_the_guest_after_its_arp_for_the_dns_address() {
        let mut s = stack();
        let dns = Ipv4Addr::new(10, 0, 2, 3);
        let mut arp = arp_request(dns);
        assert!(!s.filter_guest_frame(&mut arp, Instant::ZERO));
        assert_eq!(
            ethertypes(&mut s),
            [EthernetProtocol::Arp],
            "the DNS host's ARP reply"
        );
        // No socket listens: smoltcp answers the SYN with RST, as IPv4, not with an ARP request.
        let own = s.vhost.stack_mac();
        s.ingress(Instant::ZERO, syn_to(dns, 80, own), None);
        assert_eq!(ethertypes(&mut s), [EthernetProtocol::Ipv4]);
    }
}
