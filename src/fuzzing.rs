//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
//!
//! # Theory of operation
//!
//! Every parser of untrusted input has one function here that takes raw bytes and drives the
//! real code path, so a libFuzzer target is one line and `cargo test` replays the committed
//! corpus through exactly the same code. None of them returns an error: a panic (or an abort, a
//! hang, a leak the fuzzer notices) is the finding, since guest and API input must never panic
//! tapir (it drops and counts what it cannot use).
//!
//! - [`guest_frame`]: one Ethernet frame from the guest, the whole way a tap read takes it in
//!   [`crate::runtime`]: virtual hosts (ARP, NDP, DHCP, DHCPv6, router solicitations, echo of
//!   N+2/N+3), classification, IPv4 and IPv6 reassembly, the proxies (TCP into a flow's smoltcp socket
//!   set, UDP and ICMP echo to host sockets), smoltcp's ingress and egress, and the frames built
//!   on the way back (RST, ICMP errors, UDP replies), taken off the queue as the tap would.
//! - [`guest_frames`]: the same for a sequence of frames with a fake clock between them, so TCP
//!   state machines, fragment reassembly and expiry see histories. A small record format lets
//!   the fuzzer reach deep TCP states: the harness can set a segment's acknowledgment number to
//!   what the stack sent last and its sequence number to continue the guest's previous segment
//!   (smoltcp's initial sequence numbers are seeded, so this is also reproducible), fill in
//!   checksums, and make the host side of a connection answer, send a burst, shut down, or
//!   connect to a port forward. See [`guest_frames`] for the format.
//! - [`api_request`]: API socket requests through the real [`crate::api::Server`] (a Unix socket
//!   in a temporary directory, the reply read back), including `add_hostfwd`'s listeners.
//! - [`publish_spec`]: a `-p` value through [`crate::config::forward::parse_publish`].
//! - [`resolv_conf`]: resolv.conf text through [`crate::nat::resolv::parse`].
//! - [`argv`]: a command line (NUL-separated) through [`crate::cli::parse`] and
//!   [`crate::config::Config::from_options`].
//!
//! # Host sockets: everything stays in a private network namespace
//!
//! The frame harnesses run the real proxies, which open real host sockets to whatever the guest
//! addressed; the API harness binds real listeners. A fuzzer invents every address, so these
//! entry points must only run in a network namespace of their own, where only `lo` exists and
//! nothing can leave the machine whatever the bug. [`confine`] puts the calling thread there
//! (`unshare(CLONE_NEWNET)` as root; `CLONE_NEWUSER | CLONE_NEWNET` otherwise, which needs a
//! single-threaded process, true in a fuzz target's init) or accepts a thread that is already in
//! such a namespace (`unshare -rn cargo fuzz run ...`), brings `lo` up and allows ICMP "ping"
//! sockets there (so echo requests reach the ICMP proxy's host socket). The socket-touching
//! entry points panic if the thread is not confined, so they cannot be misused. Binding the
//! host sockets to loopback instead was considered and rejected: the kernel refuses an IPv4
//! route from 127.0.0.1 to a foreign address, but sends IPv6 packets from ::1 out of any
//! interface (checked on Linux 6.18 with a veth pair).
//!
//! Inside that namespace the harness plays the host's services on loopback: a TCP server on
//! [`HOST_PORT`] (127.0.0.1 and ::1) that echoes, and a UDP echo socket on the same port, so a
//! guest talking to the gateway (N+2 or fd00::2, which tapir maps to the host's loopback)
//! reaches established TCP connections and UDP replies; every other destination fails to
//! connect (network unreachable) and the guest sees RST or an ICMP error, which are paths
//! worth fuzzing too. DNS goes to whatever resolv.conf names and is unreachable likewise.
//!
//! Bounded work per input: at most [`MAX_FRAMES`] frames, [`SERVICE_ROUNDS`] service rounds
//! after each, [`MAX_API_REQUESTS`] API requests.

use std::cell::Cell;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::time::Duration as StdDuration;

use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet, IpAddress, IpProtocol, Ipv4Packet,
    Ipv6Packet, TcpPacket, TcpSeqNumber, UdpPacket,
};

use crate::config::forward::{ForwardSpec, Proto as FwdProto};
use crate::config::{Config, Network, Options};
use crate::device::{vnet, TapMode};
use crate::forward::{self, ForwardTable};
use crate::proxy::{self, HostEvent, Proxy};
use crate::stack::Stack;

/// Port of the harness's host-side TCP echo server and UDP echo socket (on 127.0.0.1 and ::1
/// in the private namespace), reached by the guest as N+2 or fd00::2.
pub const HOST_PORT: u16 = 8080;
/// Host port of the TCP and UDP port forwards the frame harness publishes (to guest port 80),
/// on 127.0.0.1.
pub const FORWARD_PORT: u16 = 8081;
/// Frames per [`guest_frames`] input: enough for a handshake, data both ways, a close and a few
/// fragments; more only slows each run down.
pub const MAX_FRAMES: usize = 64;
/// Service rounds after each frame (host events, flow passes, frames to the guest): loopback
/// answers within a round or two.
pub const SERVICE_ROUNDS: usize = 3;
/// Requests per [`api_request`] input (separated by 0xff bytes).
pub const MAX_API_REQUESTS: usize = 8;
/// Largest request written to the API socket per connection: a little past the server's own
/// limit, so the "too large" path is reached, and below the socket buffer, so the write never
/// blocks.
const MAX_API_WRITE: usize = crate::api::proto::MAX_REQUEST + 64;
/// smoltcp's random seed in the harness: fixed, so initial sequence numbers repeat per input.
const SEED: u64 = 0x7461_7069_725f_667a;
/// Bytes the host side sends when a record asks for a burst (more than one MTU 1500 window of
/// segments, less than the socket buffers).
const BURST: usize = 16 * 1024;
/// Clock steps a record can ask for (ms): nothing, a tick, the delayed-ACK and retransmission
/// range, the reassembly timeout (5 s), the UDP DNS expiry (10 s), the UDP and ICMP idle expiry
/// (240 s), and the TCP abort (300 s).
const CLOCK_STEPS_MS: [i64; 8] = [0, 1, 200, 1_000, 5_100, 10_100, 240_100, 300_100];

thread_local! {
    static CONFINED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread's network namespace has no interface but `lo`.
fn only_loopback() -> bool {
    let Ok(dev) = std::fs::read_to_string("/proc/thread-self/net/dev") else {
        return false;
    };
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .all(|name| name.trim() == "lo")
}

/// Put the calling thread into a private network namespace with only `lo` (up), unless it is
/// in one already. Idempotent per thread. See the module documentation.
pub fn confine() -> Result<(), String> {
    if CONFINED.with(Cell::get) {
        return Ok(());
    }
    if !only_loopback() {
        use nix::sched::{unshare, CloneFlags};
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            // Not root: a user namespace first (needs a single-threaded process).
            let uid = nix::unistd::getuid();
            let gid = nix::unistd::getgid();
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
                .map_err(|e2| format!("unshare(CLONE_NEWNET): {e}; with CLONE_NEWUSER: {e2}"))?;
            let w = |f: &str, s: String| {
                std::fs::write(f, s).map_err(|e| format!("cannot write {f}: {e}"))
            };
            w("/proc/self/uid_map", format!("0 {uid} 1\n"))?;
            w("/proc/self/setgroups", "deny\n".to_owned())?;
            w("/proc/self/gid_map", format!("0 {gid} 1\n"))?;
        }
        if !only_loopback() {
            return Err("still not in a namespace of only lo after unshare".to_owned());
        }
    }
    crate::sys::ifconfig::set_up("lo").map_err(|e| format!("cannot bring lo up: {e}"))?;
    // A new namespace allows no ICMP "ping" sockets (net.ipv4.ping_group_range is "1 0"):
    // allow them here, so the ICMP echo proxy gets past its socket. Best effort: in a user
    // namespace only the mapped group can be named.
    let ping = "/proc/sys/net/ipv4/ping_group_range";
    if std::fs::write(ping, "0 2147483647").is_err() {
        let _ = std::fs::write(ping, "0 0");
    }
    CONFINED.with(|c| c.set(true));
    Ok(())
}

fn assert_confined() {
    assert!(
        CONFINED.with(Cell::get),
        "fuzzing: call confine() first: this entry point opens real host sockets"
    );
}

/// The host side of the harness: what the gateway's loopback serves.
struct HostSide {
    listeners: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
    conns: Vec<TcpStream>,
    clients: Vec<TcpStream>,
    buf: Vec<u8>,
}

/// Most connections the host side keeps per input (accepted plus its own clients).
const MAX_HOST_CONNS: usize = 32;

impl HostSide {
    fn new() -> Self {
        let mut listeners = Vec::new();
        let mut udp = Vec::new();
        for ip in [
            std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
            std::net::IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let a = SocketAddr::new(ip, HOST_PORT);
            if let Ok(l) = TcpListener::bind(a) {
                if l.set_nonblocking(true).is_ok() {
                    listeners.push(l);
                }
            }
            if let Ok(u) = UdpSocket::bind(a) {
                if u.set_nonblocking(true).is_ok() {
                    udp.push(u);
                }
            }
        }
        HostSide {
            listeners,
            udp,
            conns: Vec::new(),
            clients: Vec::new(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// Accept, echo TCP and UDP (without blocking, within the buffers).
    fn serve(&mut self) {
        for l in &self.listeners {
            while let Ok((s, _)) = l.accept() {
                if self.conns.len() < MAX_HOST_CONNS && s.set_nonblocking(true).is_ok() {
                    self.conns.push(s);
                }
            }
        }
        for s in self.conns.iter_mut().chain(self.clients.iter_mut()) {
            while let Ok(n) = s.read(&mut self.buf) {
                if n == 0 {
                    break;
                }
                let _ = s.write(&self.buf[..n]);
            }
        }
        for u in &self.udp {
            while let Ok((n, from)) = u.recv_from(&mut self.buf) {
                let _ = u.send_to(&self.buf[..n], from);
            }
        }
    }

    fn burst(&mut self) {
        let data = vec![0x5a; BURST];
        for s in self.conns.iter_mut().chain(self.clients.iter_mut()) {
            let _ = s.write(&data);
        }
    }

    fn shutdown(&mut self) {
        for s in self.conns.iter().chain(self.clients.iter()) {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }

    /// A client of the port forwards: one TCP connection, one UDP datagram.
    fn use_forwards(&mut self) {
        let fwd = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), FORWARD_PORT);
        if self.clients.len() < MAX_HOST_CONNS {
            if let Ok(mut s) = crate::sys::net::tcp_connect(fwd, None) {
                let _ = s.write(b"hello from the host\n");
                self.clients.push(s);
            }
        }
        if let Ok(u) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            let _ = u.send_to(b"datagram from the host", fwd);
        }
    }
}

/// What a record of [`guest_frames`] asks of the host side after its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostAction {
    None,
    Burst,
    Shutdown,
    Forwards,
}

/// One tapir data plane on in-memory queues, driven as the runtime drives it.
struct Harness {
    stack: Stack,
    proxy: Proxy,
    forwards: ForwardTable,
    poll: mio::Poll,
    events: mio::Events,
    host: HostSide,
    now: Instant,
    next_expiry_ms: u64,
    /// The last TCP segment sent to the guest: its ports and the sequence number past it.
    stack_last: Option<Segment>,
    /// The last TCP segment the guest sent.
    guest_last: Option<Segment>,
}

impl Harness {
    /// `flags`: bit 0 IPv6, bit 1 tap offloads, bit 2 `--disable-host-loopback`, bit 3 MTU 1500
    /// (else 65520), bit 4 `--disable-dns`, bit 5 pasta's address model (podman's options on
    /// the host [`pasta_host`]: the prefix is a real network, ARP/NDP answer for all of it).
    fn new(flags: u8) -> Self {
        assert_confined();
        let mut cfg = if flags & 32 != 0 {
            pasta_config(flags)
        } else {
            let opts = Options {
                enable_ipv6: flags & 1 != 0,
                disable_host_loopback: flags & 4 != 0,
                mtu: Some(if flags & 8 != 0 { 1500 } else { 65520 }),
                disable_dns: flags & 16 != 0,
                ..Options::default()
            };
            match Config::from_options(opts, false) {
                Ok(c) => c,
                Err(e) => unreachable!("harness options are valid: {e}"),
            }
        };
        let guest = cfg.net.guest();
        for proto in [FwdProto::Tcp, FwdProto::Udp] {
            cfg.publish.push(ForwardSpec {
                proto,
                host_addr: Ipv4Addr::LOCALHOST.into(),
                host_port: FORWARD_PORT,
                guest_addr: guest.into(),
                guest_port: 80,
            });
        }
        let mode = if flags & 2 != 0 {
            TapMode {
                vnet_hdr_len: vnet::HDR_LEN,
                tx_offload: true,
                rx_gso: true,
            }
        } else {
            TapMode::default()
        };
        let poll = match mio::Poll::new() {
            Ok(p) => p,
            Err(e) => panic!("fuzzing: epoll_create: {e}"),
        };
        let mut forwards = ForwardTable::new();
        for spec in &cfg.publish {
            // The ports are free in a fresh namespace; a failure only costs coverage.
            let _ = forwards.add(*spec, poll.registry());
        }
        let now = Instant::from_secs(1);
        Harness {
            stack: Stack::with_seed(&cfg, mode, now, SEED),
            proxy: Proxy::new(&cfg, None),
            forwards,
            poll,
            events: mio::Events::with_capacity(64),
            host: HostSide::new(),
            now,
            next_expiry_ms: 0,
            stack_last: None,
            guest_last: None,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.now.total_millis()).unwrap_or(0)
    }

    /// A frame read from the tap, as `Runtime::read_tap_batch` handles it.
    fn deliver(&mut self, frame: &[u8]) {
        self.stack.device.count_rx(frame.len());
        let mut buf = self.stack.device.rx_buffer();
        let cap = self.stack.device.rx_capacity();
        // The tap never returns more than a buffer holds.
        buf.extend_from_slice(&frame[..frame.len().min(cap)]);
        if buf.is_empty() {
            self.stack.device.recycle_rx(buf);
            return;
        }
        self.guest_last = tcp_segment(&buf).or(self.guest_last);
        if self.stack.filter_guest_frame(&mut buf, self.now) {
            self.proxy.on_guest_frame(
                &mut self.stack,
                self.poll.registry(),
                &self.forwards,
                buf,
                self.now,
            );
        } else {
            self.stack.device.recycle_rx(buf);
        }
    }

    /// What `Runtime::run` and `Runtime::service` do after reading the tap.
    fn service(&mut self) {
        for _ in 0..SERVICE_ROUNDS {
            if let Err(e) = self.poll.poll(&mut self.events, Some(StdDuration::ZERO)) {
                panic!("fuzzing: epoll_wait: {e}");
            }
            let now_ms = self.now_ms();
            let tokens: Vec<_> = self
                .events
                .iter()
                .map(|ev| (ev.token(), HostEvent::from_mio(ev)))
                .collect();
            for (token, ev) in tokens {
                if let Some(fid) = forward::token_forward(token) {
                    self.proxy.on_forward_ready(
                        &mut self.stack,
                        self.poll.registry(),
                        &self.forwards,
                        fid,
                        now_ms,
                    );
                } else if let Some(id) = proxy::token_flow(token) {
                    self.proxy
                        .on_host_event(&mut self.stack, self.poll.registry(), id, ev, now_ms);
                }
            }
            self.host.serve();
            self.stack.on_timer(self.now);
            self.proxy.after_poll(
                &mut self.stack,
                self.poll.registry(),
                &self.forwards,
                self.now,
            );
            if let Some(due) = self.proxy.take_timer_due() {
                self.next_expiry_ms = self.next_expiry_ms.min(due);
            }
            if now_ms >= self.next_expiry_ms {
                self.next_expiry_ms = self
                    .proxy
                    .on_timer(now_ms)
                    .unwrap_or(now_ms.saturating_add(60_000));
            }
            // The tap takes everything (pop_tx completes partial checksums as the guest's
            // kernel would).
            while let Some(f) = self.stack.device.pop_tx() {
                self.stack_last = tcp_segment(&f).or(self.stack_last);
            }
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += smoltcp::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    }
}

/// Ports of a TCP segment and the sequence number just past it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    src_port: u16,
    dst_port: u16,
    next: u32,
}

/// The TCP segment in `frame` (Ethernet, IPv4 or IPv6), if it is one.
fn tcp_segment(frame: &[u8]) -> Option<Segment> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let seg = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            ip.payload().to_vec()
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            ip.payload().to_vec()
        }
        _ => return None,
    };
    let tcp = TcpPacket::new_checked(&seg[..]).ok()?;
    let len = u32::try_from(tcp.segment_len()).ok()?;
    Some(Segment {
        src_port: tcp.src_port(),
        dst_port: tcp.dst_port(),
        next: (tcp.seq_number().0 as u32).wrapping_add(len),
    })
}

/// Apply a record's fix-ups to a guest TCP segment (`reply`: answer this segment of the stack,
/// with its ports swapped and its end acknowledged; `seq`: the sequence number), then fill
/// checksums if asked.
fn fix_up(frame: &mut [u8], reply: Option<Segment>, seq: Option<u32>, checksums: bool) {
    let Ok(mut eth) = EthernetFrame::new_checked(frame) else {
        return;
    };
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let Ok(mut ip) = Ipv4Packet::new_checked(eth.payload_mut()) else {
                return;
            };
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            let proto = ip.next_header();
            fix_l4(proto, ip.payload_mut(), &src, &dst, reply, seq, checksums);
            if checksums {
                ip.fill_checksum();
            }
        }
        EthernetProtocol::Ipv6 => {
            let Ok(mut ip) = Ipv6Packet::new_checked(eth.payload_mut()) else {
                return;
            };
            let (src, dst) = (
                IpAddress::Ipv6(ip.src_addr()),
                IpAddress::Ipv6(ip.dst_addr()),
            );
            let proto = ip.next_header();
            fix_l4(proto, ip.payload_mut(), &src, &dst, reply, seq, checksums);
        }
        _ => {}
    }
}

fn fix_l4(
    proto: IpProtocol,
    l4: &mut [u8],
    src: &IpAddress,
    dst: &IpAddress,
    reply: Option<Segment>,
    seq: Option<u32>,
    checksums: bool,
) {
    match proto {
        IpProtocol::Tcp => {
            let Ok(mut tcp) = TcpPacket::new_checked(l4) else {
                return;
            };
            if let Some(r) = reply {
                tcp.set_src_port(r.dst_port);
                tcp.set_dst_port(r.src_port);
                tcp.set_ack_number(TcpSeqNumber(r.next as i32));
            }
            if let Some(s) = seq {
                tcp.set_seq_number(TcpSeqNumber(s as i32));
            }
            if checksums {
                tcp.fill_checksum(src, dst);
            }
        }
        IpProtocol::Udp if checksums => {
            if let Ok(mut udp) = UdpPacket::new_checked(l4) {
                udp.fill_checksum(src, dst);
            }
        }
        IpProtocol::Icmp if checksums => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(l4) {
                icmp.fill_checksum();
            }
        }
        IpProtocol::Icmpv6 if checksums => {
            if let (Ok(mut icmp), IpAddress::Ipv6(s), IpAddress::Ipv6(d)) =
                (Icmpv6Packet::new_checked(l4), src, dst)
            {
                icmp.fill_checksum(s, d);
            }
        }
        _ => {}
    }
}

/// A host as pasta sees it: template `v0` with 192.0.2.10/24 and 2001:db8::10/64, default
/// gateways 192.0.2.1 and fe80::1 (link-local, as routers often are).
fn pasta_host() -> crate::config::pasta::Host {
    use crate::config::pasta::{Host, Template4, Template6};
    Host {
        v4: Some(Template4 {
            ifname: "v0".into(),
            addr: Ipv4Addr::new(192, 0, 2, 10),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        }),
        v6: Some(Template6 {
            ifname: "v0".into(),
            addr: Some((
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
                64,
            )),
            gateway: Some(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        }),
    }
}

/// podman's pasta options (`--dns-forward 169.254.1.1 --map-guest-addr 169.254.1.2`, gateway
/// mapped to host loopback unless bit 2) on [`pasta_host`], with the harness's flags.
fn pasta_config(flags: u8) -> Config {
    use crate::config::pasta::{build, Family, PastaOptions};
    let mut o = PastaOptions {
        family: if flags & 1 != 0 {
            Family::Both
        } else {
            Family::V4Only
        },
        map_gw: Some(flags & 4 == 0),
        mtu: Some(if flags & 8 != 0 { 1500 } else { 65520 }),
        ..PastaOptions::default()
    };
    if flags & 16 == 0 {
        o.dns_forward.add(Ipv4Addr::new(169, 254, 1, 1).into());
    }
    o.map_guest_addr.add(Ipv4Addr::new(169, 254, 1, 2).into());
    match build(&o, &pasta_host()) {
        Ok(mut c) => {
            // The harness drives the data plane only: no forwards of the options' own.
            c.publish.clear();
            c
        }
        Err(e) => unreachable!("harness pasta options are valid: {e}"),
    }
}

/// One guest frame (the whole input) through a data plane with IPv6 and tap offloads on, at
/// MTU 65520, in slirp4netns's and in pasta's address model; then the clock moves past the
/// reassembly timeout and the timers run.
///
/// # Panics
/// If the thread is not [`confine`]d, and on any bug the frame reaches.
pub fn guest_frame(data: &[u8]) {
    for flags in [0b0011, 0b10_0011] {
        let mut h = Harness::new(flags);
        h.deliver(data);
        h.service();
        h.advance(CLOCK_STEPS_MS[4]);
        h.service();
    }
}

/// A sequence of guest frames with host-side actions and clock steps in between.
///
/// Format: one byte of configuration (bit 0 IPv6, bit 1 tap offloads, bit 2
/// `--disable-host-loopback`, bit 3 MTU 1500 instead of 65520, bit 4 `--disable-dns`, bit 5
/// pasta's address model), then
/// records of `[control: u8][length: u16 LE][frame: length bytes]` (a short last record takes
/// what is left), at most [`MAX_FRAMES`]. Control bits:
///
/// - 0x01: make a TCP segment answer the last segment the stack sent: its ports swapped, its
///   end acknowledged (this also reaches connections the stack opened, to ephemeral ports);
/// - 0x02: set its sequence number to just past the guest's previous segment;
/// - 0x04: fill in IPv4, TCP, UDP, ICMP and ICMPv6 checksums;
/// - bits 3-4, after the frame: 1 the host side sends [`BURST`] bytes on each of its
///   connections, 2 it shuts down its sending side, 3 it connects to the TCP forward and sends
///   a datagram to the UDP forward ([`FORWARD_PORT`]);
/// - bits 5-7: how far the clock moves before the frame (an index into 0, 1 ms, 200 ms, 1 s,
///   5.1 s, 10.1 s, 240.1 s, 300.1 s).
///
/// # Panics
/// If the thread is not [`confine`]d, and on any bug the frames reach.
pub fn guest_frames(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(flags);
    for _ in 0..MAX_FRAMES {
        let [ctl, l0, l1, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let mut frame = frame.to_vec();
        let reply = if ctl & 1 != 0 { h.stack_last } else { None };
        let seq = if ctl & 2 != 0 {
            h.guest_last.map(|s| s.next)
        } else {
            None
        };
        fix_up(&mut frame, reply, seq, ctl & 4 != 0);
        h.advance(CLOCK_STEPS_MS[usize::from(ctl >> 5)]);
        h.deliver(&frame);
        h.service();
        match host_action(*ctl) {
            HostAction::None => {}
            HostAction::Burst => h.host.burst(),
            HostAction::Shutdown => h.host.shutdown(),
            HostAction::Forwards => h.host.use_forwards(),
        }
        h.service();
    }
    // Let every timer run out: retransmissions give up, flows expire.
    for step in [CLOCK_STEPS_MS[3], CLOCK_STEPS_MS[6], CLOCK_STEPS_MS[7]] {
        h.advance(step);
        h.service();
    }
}

fn host_action(ctl: u8) -> HostAction {
    match (ctl >> 3) & 3 {
        1 => HostAction::Burst,
        2 => HostAction::Shutdown,
        3 => HostAction::Forwards,
        _ => HostAction::None,
    }
}

/// Requests to the API socket: the input split at 0xff bytes (which UTF-8 never contains),
/// at most [`MAX_API_REQUESTS`], each sent on its own connection to one server with one forward
/// table, as slirp4netns clients do, and the reply read back.
///
/// # Panics
/// If the thread is not [`confine`]d (`add_hostfwd` binds real listeners), and on any bug.
pub fn api_request(data: &[u8]) {
    assert_confined();
    let dir = std::env::temp_dir().join(format!(
        "tapir-fuzz-api-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("fuzzing: cannot create {}: {e}", dir.display());
    }
    let path = dir.join("api.sock");
    let poll = match mio::Poll::new() {
        Ok(p) => p,
        Err(e) => panic!("fuzzing: epoll_create: {e}"),
    };
    let mut server = match crate::api::Server::bind(&path, poll.registry(), mio::Token(4)) {
        Ok(s) => s,
        Err(e) => panic!("fuzzing: cannot bind the API socket: {e}"),
    };
    let mut forwards = ForwardTable::new();
    let info = || serde_json::json!({ "flows": { "tcp": 0 } });
    let table = crate::nat::Table::new();
    let stats = crate::stats::Stats::default;
    for (i, req) in data
        .split(|&b| b == 0xff)
        .take(MAX_API_REQUESTS)
        .enumerate()
    {
        let Ok(mut client) = UnixStream::connect(&path) else {
            continue;
        };
        let _ = client.set_nonblocking(true);
        let _ = client.write(&req[..req.len().min(MAX_API_WRITE)]);
        let _ = client.shutdown(std::net::Shutdown::Write);
        let now_ms = u64::try_from(i).unwrap_or(0) * 1000;
        server.on_listener(poll.registry(), now_ms);
        let mut policy = crate::policy::Policy::default();
        let mut h = crate::api::Handler {
            forwards: &mut forwards,
            registry: poll.registry(),
            default_guest: Network::default().guest(),
            net6: Some(crate::config::Network6::default()),
            info: &info,
            removed: Vec::new(),
            table: &table,
            now_ms,
            stats: &stats,
            policy: &mut policy,
            kill_denied: false,
        };
        for slot in 0..crate::api::MAX_CONNECTIONS {
            server.on_conn(slot, &mut h);
        }
        let mut reply = Vec::new();
        let _ = client.read_to_end(&mut reply);
        server.on_timer(poll.registry(), now_ms);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `-p`/`--publish` value (lossy UTF-8, as argv would carry it after `to_string_lossy`);
/// an accepted spec is also formatted.
pub fn publish_spec(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(spec) = crate::config::forward::parse_publish(&s, &Network::default()) {
        let _ = spec.to_string();
    }
}

/// resolv.conf text (the real reader refuses invalid UTF-8, so such input stops here), with
/// `%scope` suffixes looked up as the real reader does.
pub fn resolv_conf(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::nat::resolv::parse(text, &|name| crate::sys::ifindex(name).unwrap_or(0));
    }
}

/// A command line: the input split at NUL bytes into argv (argv\[0\] first), parsed as `main`
/// does, and an attach or run command's options validated into a `Config`.
pub fn argv(data: &[u8]) {
    let args: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if let Ok((cmd, _warnings)) = crate::cli::parse(&args) {
        match cmd {
            crate::cli::Command::Attach(o) => {
                let _ = Config::from_options(o, false);
            }
            crate::cli::Command::Run { options, .. } => {
                let _ = Config::from_options(options, true);
            }
            crate::cli::Command::Pasta(o) => {
                let _ = crate::config::pasta::build(&o, &pasta_host());
                let _ = crate::config::pasta::build(&o, &crate::config::pasta::Host::default());
            }
            _ => {}
        }
    }
}

/// Seed inputs the fuzz targets start from, by target name: valid examples of every protocol
/// the harnesses reach (the committed corpus grew from these).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    seeds::all()
}

mod seeds;
