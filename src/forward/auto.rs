//! `auto` port forwarding (pasta's `-t auto`, `-u auto`): host listeners that follow the
//! namespace's own listening sockets.
//!
//! # Theory of operation
//!
//! Every [`SCAN_INTERVAL_MS`] (pasta's 1 s) the runtime calls [`AutoForwarder::scan`], which
//! re-reads the namespace's socket tables and makes the auto forwards of the
//! [`ForwardTable`] match them:
//!
//! - TCP: ports of sockets in state `0A` (LISTEN) in `/proc/net/tcp` and `/proc/net/tcp6`;
//! - UDP: ports of sockets in state `07` (unconnected) in `/proc/net/udp` and `/proc/net/udp6`,
//!   and, as pasta does, the ports of the TCP listeners too (protocols such as iperf3 set up
//!   UDP transfers on the number of their TCP control port).
//!
//! The listening address in the namespace is not looked at (pasta does not either): a port
//! bound to the namespace's loopback only is forwarded too, and its clients are refused there.
//!
//! A port `P` wanted by the scan gets a host socket on `[::]:P` (dual-stack, where the host has
//! IPv6 and `net.ipv6.bindv6only` is 0, its default) or else `0.0.0.0:P`, relayed to the guest's
//! address, port `P`. Ports the table already forwards on the command line or through the API
//! (same protocol and host port, any address) are left alone, and so are the ports of the
//! namespace-to-host forwards (`-T`/`-U`): their listeners inside the namespace would otherwise
//! be forwarded back to the host, a loop. A host port that cannot be bound (another host
//! process has it) is logged once at debug level and tried again at each later scan. A port
//! the namespace no longer listens on has its host socket closed (connections already accepted
//! live on). At most [`MAX_AUTO_PORTS`] ports per protocol are forwarded this way.
//!
//! Auto forwards live in the forward table under fixed ids ([`super::auto_id`]), one per
//! protocol and port, so opening and closing a port over and over never uses up ids.
//!
//! The tables must be read in the namespace, and `/proc/net/*` shows the network namespace of
//! the process that opens it; a seq file, once open, keeps showing the namespace it was opened
//! in. So [`open`] opens the four files at start-up, in a child forked into the target's
//! namespaces (before the event loop, the sandbox and the seccomp filter), and each scan reads
//! them again from offset 0 with `pread` (the seq file starts over at offset 0).
//!
//! The parsing and the plan ([`parse_sockets`], [`plan`]) are pure; [`AutoForwarder`] does the
//! I/O.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use log::{debug, info, warn};
use mio::Registry;

use super::{auto_id, ForwardTable};
use crate::config::forward::{ForwardSpec, Proto};
use crate::config::Config;

/// Interval between scans (pasta's `TCP_TIMER_INTERVAL` / `UDP_TIMER_INTERVAL`).
pub const SCAN_INTERVAL_MS: u64 = 1000;
/// Most ports forwarded automatically, per protocol. A container's services listen on a few
/// ports; a port scan-like workload (thousands of listeners) would otherwise fill the forward
/// table, whose [`super::MAX_FORWARDS`] also bounds explicit forwards.
pub const MAX_AUTO_PORTS: usize = 256;
/// Most bytes read from one table per scan. Listening sockets come first in the kernel's TCP
/// table (the listening hash is walked before the established one), so a namespace with more
/// connections than this covers (~27,000 lines of 150 bytes) still has its listeners found.
pub const MAX_TABLE_BYTES: usize = 4 << 20;
/// Bytes asked for per `pread`.
const READ_CHUNK: usize = 64 << 10;

/// `st` of a listening TCP socket.
pub const TCP_LISTEN: u8 = 0x0A;
/// `st` of an unconnected UDP socket (`TCP_CLOSE`).
pub const UDP_UNCONNECTED: u8 = 0x07;

/// The tables, as `/proc/net/` names: TCP (IPv4, IPv6), UDP (IPv4, IPv6).
pub const TABLES: [&str; 4] = [
    "/proc/net/tcp",
    "/proc/net/tcp6",
    "/proc/net/udp",
    "/proc/net/udp6",
];

/// Add to `out` the local ports of the sockets of `text` (a `/proc/net/{tcp,udp}[6]` table) in
/// state `state`. The header, malformed lines, port 0 and an unterminated last line (a read cut
/// short) are skipped.
pub fn parse_sockets(text: &[u8], state: u8, out: &mut BTreeSet<u16>) {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..i],
        None => return,
    };
    for line in complete.split(|&b| b == b'\n').skip(1) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let mut fields = line.split_ascii_whitespace();
        let (Some(_sl), Some(local), Some(_remote), Some(st)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((_, port)) = local.rsplit_once(':') else {
            continue;
        };
        let (Ok(port), Ok(st)) = (u16::from_str_radix(port, 16), u8::from_str_radix(st, 16)) else {
            continue;
        };
        if st == state && port != 0 {
            out.insert(port);
        }
    }
}

/// What a scan changes for one protocol.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ports to open, ascending.
    pub open: Vec<u16>,
    /// Ports to close, ascending.
    pub close: Vec<u16>,
}

/// Make `open` (the auto forwards now) follow `wanted` (ports to forward, already without the
/// excluded ones): close what is no longer wanted, open what is new, lowest ports first, so
/// that at most `limit` stay open.
pub fn plan(wanted: &BTreeSet<u16>, open: &BTreeSet<u16>, limit: usize) -> Plan {
    let close: Vec<u16> = open.difference(wanted).copied().collect();
    let staying = open.len() - close.len();
    let room = limit.saturating_sub(staying);
    Plan {
        open: wanted.difference(open).take(room).copied().collect(),
        close,
    }
}

/// The namespace's socket tables, opened inside it ([`TABLES`] order; `None`: not available,
/// e.g. `tcp6` on a kernel without IPv6).
#[derive(Debug, Default)]
pub struct ProcNet {
    files: [Option<File>; 4],
}

/// Open [`TABLES`] inside the target's namespaces (`userns` if any, then `netns`), in a forked
/// child (see [`crate::sys::netns`]): call while single-threaded.
pub fn open(userns: Option<&Path>, netns: &Path) -> ProcNet {
    let mut p = ProcNet::default();
    for (slot, path) in p.files.iter_mut().zip(TABLES) {
        let opened = crate::sys::netns::call_in_namespaces(userns, netns, || {
            File::open(path)
                .map(OwnedFd::from)
                .map_err(|e| format!("{path}: {e}"))
        });
        match opened {
            Ok(fd) => *slot = Some(File::from(fd)),
            Err(e) => debug!("auto forwarding: cannot open the namespace's {path}: {e}"),
        }
    }
    p
}

impl ProcNet {
    /// Files opened by the caller (tests: this process's own namespace).
    pub fn from_files(files: [Option<File>; 4]) -> Self {
        ProcNet { files }
    }

    /// Ports in state `state` of tables `range` (0-1 TCP, 2-3 UDP), into `out`.
    fn ports(
        &self,
        range: std::ops::Range<usize>,
        state: u8,
        buf: &mut Vec<u8>,
        out: &mut BTreeSet<u16>,
    ) -> io::Result<()> {
        for f in self.files[range].iter().flatten() {
            read_table(f, buf)?;
            parse_sockets(buf, state, out);
        }
        Ok(())
    }
}

/// Read all of `f` from offset 0 (at most [`MAX_TABLE_BYTES`]) into `buf`.
fn read_table(f: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    loop {
        let len = buf.len();
        if len >= MAX_TABLE_BYTES {
            return Ok(());
        }
        buf.resize(len + READ_CHUNK.min(MAX_TABLE_BYTES - len), 0);
        let offset = u64::try_from(len).unwrap_or(u64::MAX);
        match f.read_at(&mut buf[len..], offset) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(());
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
}

/// The auto forwarder: its tables, what it forwards to, and its schedule.
#[derive(Debug)]
pub struct AutoForwarder {
    files: ProcNet,
    tcp: bool,
    udp: bool,
    /// Host address of the listeners: `::` (dual-stack) or `0.0.0.0`.
    host: IpAddr,
    /// Where clients are relayed to (the port is the same).
    guest: IpAddr,
    /// Ports whose host socket could not be opened (logged once; retried each scan).
    failed: BTreeSet<(bool, u16)>,
    /// Whether the limit was reported.
    limit_logged: bool,
    next_ms: u64,
    buf: Vec<u8>,
}

impl AutoForwarder {
    /// The forwarder of `cfg.auto_forward` over `files`; the first scan is due at once.
    pub fn new(cfg: &Config, files: ProcNet) -> Self {
        let guest = match cfg.net6.guest {
            Some(g) if !cfg.ipv4 => IpAddr::V6(g),
            _ => IpAddr::V4(cfg.net.guest()),
        };
        let v6 = std::net::UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0));
        let host = if v6.is_ok() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        AutoForwarder {
            files,
            tcp: cfg.auto_forward.tcp,
            udp: cfg.auto_forward.udp,
            host,
            guest,
            failed: BTreeSet::new(),
            limit_logged: false,
            next_ms: 0,
            buf: Vec::new(),
        }
    }

    /// When the next scan is due (runtime clock, ms).
    pub fn due_ms(&self) -> u64 {
        self.next_ms
    }

    /// Scan and update the table's auto forwards. Returns the ids of the forwards removed (the
    /// caller tells the proxies).
    pub fn scan(&mut self, now_ms: u64, table: &mut ForwardTable, registry: &Registry) -> Vec<u64> {
        self.next_ms = now_ms.saturating_add(SCAN_INTERVAL_MS);
        let mut tcp = BTreeSet::new();
        let mut udp = BTreeSet::new();
        let read = (|| {
            if self.tcp || self.udp {
                self.files
                    .ports(0..2, TCP_LISTEN, &mut self.buf, &mut tcp)?;
            }
            if self.udp {
                self.files
                    .ports(2..4, UDP_UNCONNECTED, &mut self.buf, &mut udp)?;
            }
            io::Result::Ok(())
        })();
        if let Err(e) = read {
            // Keep the forwards as they are: a read error says nothing about the sockets.
            debug!("auto forwarding: cannot read the namespace's socket tables: {e}");
            return Vec::new();
        }
        if self.udp {
            // pasta's rule: UDP also follows TCP listeners.
            udp.extend(tcp.iter().copied());
        }
        let mut removed = Vec::new();
        for (on, proto, mut wanted) in [(self.tcp, Proto::Tcp, tcp), (self.udp, Proto::Udp, udp)] {
            if !on {
                continue;
            }
            let mut open = BTreeSet::new();
            for (id, spec) in table.list() {
                if spec.proto != proto {
                    continue;
                }
                if auto_id(proto, spec.host_port) == id {
                    open.insert(spec.host_port);
                } else {
                    // Forwarded explicitly: not ours to manage.
                    wanted.remove(&spec.host_port);
                }
            }
            let p = plan(&wanted, &open, MAX_AUTO_PORTS);
            if wanted.len() > MAX_AUTO_PORTS && !self.limit_logged {
                self.limit_logged = true;
                warn!(
                    "auto forwarding: the namespace listens on {} {} ports; only {MAX_AUTO_PORTS} are forwarded",
                    wanted.len(),
                    proto.name()
                );
            }
            let udp = proto == Proto::Udp;
            self.failed
                .retain(|&(u, port)| u != udp || wanted.contains(&port));
            for port in p.close {
                let id = auto_id(proto, port);
                if let Some(spec) = table.remove(id) {
                    info!("auto forward closed: {spec}");
                    removed.push(id);
                }
            }
            for port in p.open {
                let spec = ForwardSpec {
                    proto,
                    host_addr: self.host,
                    host_port: port,
                    guest_addr: self.guest,
                    guest_port: port,
                };
                match table.add_auto(spec, registry) {
                    Ok(_) => {
                        self.failed.remove(&(udp, port));
                        info!("auto forward: {spec}");
                    }
                    Err(e) => {
                        if self.failed.insert((udp, port)) {
                            debug!("auto forward {spec}: {e}; trying again at the next scans");
                        }
                    }
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1235 1 0000000000000000 100 0 0 10 0
   2: 6400020A:0016 0202000A:C350 01 00000000:00000000 02:000A7D4B 00000000     0        0 1236 4 0000000000000000 20 4 29 10 -1
   3: 00000000:0000 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1237 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2000 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:D431 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3000 2 0000000000000000 0
  121: 0100007F:A1B2 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3001 2 0000000000000000 0
";

    fn ports(text: &str, state: u8) -> Vec<u16> {
        let mut s = BTreeSet::new();
        parse_sockets(text.as_bytes(), state, &mut s);
        s.into_iter().collect()
    }

    #[test]
    fn tables_parse() {
        assert_eq!(ports(TCP, TCP_LISTEN), [22, 8080]);
        assert_eq!(ports(TCP6, TCP_LISTEN), [80]);
        assert_eq!(ports(UDP, UDP_UNCONNECTED), [53]);
        // Only the header, or nothing.
        assert_eq!(
            ports(&TCP[..TCP.find('\n').unwrap() + 1], TCP_LISTEN),
            [0u16; 0]
        );
        assert_eq!(ports("", TCP_LISTEN), [0u16; 0]);
        // Garbage lines are skipped, the rest still counts.
        let junk = format!("{TCP}garbage\n 9: zz:zz 0:0 0A\n 9: 0:GGGG 0:0 0A\n\u{0}\u{ff}\n");
        assert_eq!(ports(&junk, TCP_LISTEN), [22, 8080]);
    }

    #[test]
    fn a_cut_last_line_is_ignored() {
        // "...:1F" of a read cut inside ":1F90" must not become port 0x1F.
        let cut = &TCP[..TCP.find(":1F90").unwrap() + 3];
        assert_eq!(ports(cut, TCP_LISTEN), [22]);
    }

    fn set(p: &[u16]) -> BTreeSet<u16> {
        p.iter().copied().collect()
    }

    #[test]
    fn plans() {
        assert_eq!(plan(&set(&[]), &set(&[]), 10), Plan::default());
        assert_eq!(
            plan(&set(&[80, 443]), &set(&[22, 80]), 10),
            Plan {
                open: vec![443],
                close: vec![22]
            }
        );
        // The limit counts the ports that stay open.
        assert_eq!(
            plan(&set(&[1, 2, 3, 4]), &set(&[4]), 2),
            Plan {
                open: vec![1],
                close: vec![]
            }
        );
        assert_eq!(plan(&set(&[1, 2]), &set(&[1, 2]), 1), Plan::default());
        assert_eq!(
            plan(&set(&[5]), &set(&[1, 2]), 1),
            Plan {
                open: vec![5],
                close: vec![1, 2]
            }
        );
    }

    /// The seq files keep the namespace they were opened in and read again from offset 0:
    /// this process's own tables, with a listener appearing and going between two reads.
    #[test]
    fn tables_reread_from_offset_zero() {
        let f = File::open("/proc/net/tcp").unwrap();
        let f6 = File::open("/proc/net/tcp6").ok();
        let files = ProcNet::from_files([Some(f), f6, None, None]);
        let mut buf = Vec::new();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut out = BTreeSet::new();
        files.ports(0..2, TCP_LISTEN, &mut buf, &mut out).unwrap();
        assert!(out.contains(&port), "{port} not in {out:?}");
        drop(l);
        let mut out = BTreeSet::new();
        files.ports(0..2, TCP_LISTEN, &mut buf, &mut out).unwrap();
        assert!(!out.contains(&port), "{port} still in {out:?}");
    }
}
