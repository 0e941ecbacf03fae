//! The upstream DNS resolver, from `/etc/resolv.conf`.
//!
//! # Theory of operation
//!
//! The DNS proxy (guest N+3:53 and fd00::3:53) forwards to the first `nameserver` of the same
//! address family in the resolv.conf that tapir's own mount namespace sees, as libslirp does
//! (`get_dns_addr_resolv_conf`): an IPv6 entry is skipped for IPv4 queries and vice versa, an
//! optional `%scope` suffix is accepted on IPv6 entries, unparsable entries are skipped.
//!
//! [`parse`] is pure. [`Resolvers`] caches the result and re-reads the file when its identity
//! (device, inode, size, modification time) changes, checking at most once per
//! [`RECHECK_INTERVAL`], so a host that rewrites resolv.conf (NetworkManager, DHCP) is followed
//! within about a second without a `stat` per query.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default location.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How often the file's identity is re-checked (libslirp's TIMEOUT_DEFAULT is 1000 ms).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Largest resolv.conf read (a real one is a few hundred bytes).
pub const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;

/// First IPv4 and first IPv6 nameserver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nameservers {
    /// First IPv4 `nameserver` line.
    pub v4: Option<Ipv4Addr>,
    /// First IPv6 `nameserver` line (scope id, if any, in `v6_scope`).
    pub v6: Option<Ipv6Addr>,
    /// Interface index of the IPv6 entry's `%scope` (0 if none or unknown).
    pub v6_scope: u32,
}

/// Parse resolv.conf text. `scope_index` maps a `%iface` suffix to an interface index.
pub fn parse(text: &str, scope_index: &dyn Fn(&str) -> u32) -> Nameservers {
    let mut ns = Nameservers::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(value) = words.next() else { continue };
        let (addr, scope) = match value.split_once('%') {
            Some((a, s)) => (a, Some(s)),
            None => (value, None),
        };
        if let Ok(v4) = addr.parse::<Ipv4Addr>() {
            if ns.v4.is_none() && scope.is_none() {
                ns.v4 = Some(v4);
            }
        } else if let Ok(v6) = addr.parse::<Ipv6Addr>() {
            if ns.v6.is_none() {
                ns.v6 = Some(v6);
                ns.v6_scope = scope.map(scope_index).unwrap_or(0);
            }
        }
    }
    ns
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Cached nameservers of a resolv.conf file, re-read when the file changes.
#[derive(Debug)]
pub struct Resolvers {
    path: PathBuf,
    current: Nameservers,
    identity: Option<Identity>,
    checked: Option<Instant>,
}

impl Resolvers {
    /// Watch `path` (normally [`RESOLV_CONF`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Resolvers {
            path: path.into(),
            current: Nameservers::default(),
            identity: None,
            checked: None,
        }
    }

    /// Current nameservers, re-reading the file if it changed (checked at most once per
    /// [`RECHECK_INTERVAL`]).
    pub fn get(&mut self, now: Instant) -> Nameservers {
        let due = self
            .checked
            .is_none_or(|t| now.saturating_duration_since(t) >= RECHECK_INTERVAL);
        if due {
            self.checked = Some(now);
            self.refresh();
        }
        self.current
    }

    fn refresh(&mut self) {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            if self.identity.take().is_some() {
                log::warn!(
                    "{} disappeared; DNS proxy has no upstream",
                    self.path.display()
                );
            }
            self.current = Nameservers::default();
            return;
        };
        let id = Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        if self.identity == Some(id) {
            return;
        }
        if meta.len() > MAX_RESOLV_CONF_BYTES {
            log::warn!(
                "{} is larger than {MAX_RESOLV_CONF_BYTES} bytes; ignored",
                self.path.display()
            );
            return;
        }
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let ns = parse(&text, &|name| crate::sys::ifindex(name).unwrap_or(0));
                if ns != self.current || self.identity.is_none() {
                    log::info!(
                        "DNS upstream: {} / {}",
                        ns.v4.map_or("none".into(), |a| a.to_string()),
                        ns.v6.map_or("none".into(), |a| a.to_string())
                    );
                }
                self.current = ns;
                self.identity = Some(id);
            }
            Err(e) => log::warn!("cannot read {}: {e}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_scope(_: &str) -> u32 {
        0
    }

    #[test]
    fn first_of_each_family() {
        let ns = parse(
            "# comment\nsearch example\nnameserver ::1\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nnameserver fd00::53\n",
            &no_scope,
        );
        assert_eq!(ns.v4, Some(Ipv4Addr::new(127, 0, 0, 53)));
        assert_eq!(ns.v6, Some(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn skips_garbage_and_handles_scope() {
        let ns = parse(
            "nameserver\nnameserver not-an-ip\nnameserver\t10.1.2.3 trailing\nnameserver fe80::1%eth0\n",
            &|n| if n == "eth0" { 7 } else { 0 },
        );
        assert_eq!(ns.v4, Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(ns.v6, Some("fe80::1".parse().unwrap()));
        assert_eq!(ns.v6_scope, 7);
        assert_eq!(parse("", &no_scope), Nameservers::default());
    }

    #[test]
    fn rereads_when_file_changes() {
        let dir = std::env::temp_dir().join(format!("tapir-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("resolv.conf");
        std::fs::write(&p, "nameserver 127.0.0.1\n").unwrap();
        let mut r = Resolvers::new(&p);
        let t0 = Instant::now();
        assert_eq!(r.get(t0).v4, Some(Ipv4Addr::LOCALHOST));
        std::fs::write(&p, "nameserver 198.51.100.1\nnameserver 198.51.100.2\n").unwrap();
        // Within the recheck interval the cached value stands.
        assert_eq!(r.get(t0).v4, Some(Ipv4Addr::LOCALHOST));
        let later = t0 + RECHECK_INTERVAL;
        assert_eq!(r.get(later).v4, Some(Ipv4Addr::new(198, 51, 100, 1)));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(r.get(later + RECHECK_INTERVAL).v4, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
