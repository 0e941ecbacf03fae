//! Statistics: the `get_stats` snapshot and its Prometheus text rendering.
//!
//! # Theory of operation
//!
//! Counters live where they are counted: frames and bytes in the device queues
//! (`device::Counters`), malformed frames in the virtual hosts (`stack::vhost::Counters`),
//! flows, refusals, host errors and DNS queries in the proxy (`proxy::Counters`), requests in
//! the API server. Nothing here counts anything: on a `get_stats` request the runtime collects
//! them into one [`Stats`] value, which the API serializes as JSON. `tapir ctl stats
//! --prometheus` deserializes that JSON and renders it with [`to_prometheus`], so the server
//! speaks one format and the text exposition format is a pure function with tests.
//!
//! [`ErrnoCounts`] is the one counter type defined here: host socket errors by errno name, a
//! fixed array (no allocation, `Copy`) so it can sit in the proxy's counters.
//!
//! Pure: no I/O, no clock reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The errnos [`ErrnoCounts`] tells apart (anything else is `other`): what a host `connect`,
/// `send` or `socket` call of a flow can fail with.
const ERRNOS: [(i32, &str); 14] = [
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::EACCES, "EACCES"),
    (libc::EPERM, "EPERM"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENFILE, "ENFILE"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EMSGSIZE, "EMSGSIZE"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
];

/// Host socket errors by errno: a fixed-size map of the [`ERRNOS`] names plus `other`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ErrnoCounts {
    known: [u64; ERRNOS.len()],
    other: u64,
}

impl ErrnoCounts {
    /// Count one error.
    pub fn count(&mut self, e: &std::io::Error) {
        let slot = e
            .raw_os_error()
            .and_then(|n| ERRNOS.iter().position(|(k, _)| *k == n));
        match slot.and_then(|i| self.known.get_mut(i)) {
            Some(c) => *c += 1,
            None => self.other += 1,
        }
    }

    /// The non-zero counts by errno name (`other` last).
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        ERRNOS
            .iter()
            .zip(self.known)
            .map(|((_, name), n)| ((*name).to_owned(), n))
            .chain(std::iter::once(("other".to_owned(), self.other)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// One `get_stats` snapshot. Maps are keyed by the names the API uses (protocols, states,
/// reasons, errnos). Unknown fields are accepted when reading one back: `tapir ctl` may talk to
/// a newer tapir that reports more.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Milliseconds since tapir started (the runtime clock: time stopped is not counted).
    pub uptime_ms: u64,
    /// Frames read from the guest (tap).
    pub frames_from_guest: u64,
    /// Frames written to the guest (tap).
    pub frames_to_guest: u64,
    /// Bytes of the frames read from the guest (Ethernet header on, `virtio_net_hdr` off).
    pub bytes_from_guest: u64,
    /// Bytes of the frames written to the guest.
    pub bytes_to_guest: u64,
    /// Frames and packets dropped, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Live flows by protocol, then state.
    pub flows: BTreeMap<String, BTreeMap<String, u64>>,
    /// Flows created since start, by protocol.
    pub flows_created: BTreeMap<String, u64>,
    /// New flows refused because the protocol's table was full.
    pub refused_full: u64,
    /// Guest packets refused by the translation rules.
    pub refused_rules: u64,
    /// Flows and datagrams refused by the egress policy.
    pub refused_policy: u64,
    /// Host socket errors by errno name.
    pub host_errors: BTreeMap<String, u64>,
    /// DNS queries from the guest to the virtual DNS address.
    pub dns_queries: u64,
    /// ICMPv6 "packet too big" and ICMP "fragmentation needed" errors sent to the guest.
    pub icmp_too_big_sent: u64,
    /// API requests answered (this one not included).
    pub api_requests: u64,
    /// `watch_flows` subscribers connected.
    pub watchers: u64,
}

/// Escape a Prometheus label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    fn by(&mut self, name: &str, kind: &str, help: &str, key: &str, vals: &[(&str, u64)]) {
        self.head(name, kind, help);
        for (k, v) in vals {
            let _ = writeln!(self.0, "{name}{{{key}=\"{}\"}} {v}", label(k));
        }
    }
}

fn pairs(m: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    m.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// Render `s` in the Prometheus text exposition format (version 0.0.4): one `# HELP` and
/// `# TYPE` line per metric, counters named `..._total`, gauges for what goes up and down.
pub fn to_prometheus(s: &Stats) -> String {
    let mut o = Out(String::new());
    o.head(
        "tapir_uptime_seconds",
        "gauge",
        "Seconds since tapir started.",
    );
    let _ = writeln!(
        o.0,
        "tapir_uptime_seconds {}.{:03}",
        s.uptime_ms / 1000,
        s.uptime_ms % 1000
    );
    let dirs = |a, b| [("from_guest", a), ("to_guest", b)];
    o.by(
        "tapir_frames_total",
        "counter",
        "Ethernet frames through the tap, by direction.",
        "direction",
        &dirs(s.frames_from_guest, s.frames_to_guest),
    );
    o.by(
        "tapir_bytes_total",
        "counter",
        "Bytes of Ethernet frames through the tap, by direction.",
        "direction",
        &dirs(s.bytes_from_guest, s.bytes_to_guest),
    );
    o.by(
        "tapir_drops_total",
        "counter",
        "Frames and packets dropped, by reason.",
        "reason",
        &pairs(&s.drops),
    );
    o.head(
        "tapir_flows",
        "gauge",
        "Live flows in the flow table, by protocol and state.",
    );
    for (proto, states) in &s.flows {
        for (state, n) in states {
            let _ = writeln!(
                o.0,
                "tapir_flows{{proto=\"{}\",state=\"{}\"}} {n}",
                label(proto),
                label(state)
            );
        }
    }
    o.by(
        "tapir_flows_created_total",
        "counter",
        "Flows created since start, by protocol.",
        "proto",
        &pairs(&s.flows_created),
    );
    o.by(
        "tapir_refused_total",
        "counter",
        "New flows refused, by reason (full table, translation rules, egress policy).",
        "reason",
        &[
            ("full", s.refused_full),
            ("rules", s.refused_rules),
            ("policy", s.refused_policy),
        ],
    );
    o.by(
        "tapir_host_errors_total",
        "counter",
        "Host socket errors of flows, by errno.",
        "errno",
        &pairs(&s.host_errors),
    );
    o.one(
        "tapir_dns_queries_total",
        "counter",
        "DNS queries from the guest to the virtual DNS address.",
        s.dns_queries,
    );
    o.one(
        "tapir_icmp_too_big_sent_total",
        "counter",
        "ICMP packet-too-big / fragmentation-needed errors sent to the guest.",
        s.icmp_too_big_sent,
    );
    o.one(
        "tapir_api_requests_total",
        "counter",
        "API requests answered.",
        s.api_requests,
    );
    o.one(
        "tapir_flow_watchers",
        "gauge",
        "watch_flows subscribers connected.",
        s.watchers,
    );
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_counts() {
        let mut c = ErrnoCounts::default();
        assert!(c.to_map().is_empty());
        c.count(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        c.count(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        c.count(&std::io::Error::from_raw_os_error(libc::ENETUNREACH));
        c.count(&std::io::Error::from_raw_os_error(libc::EXDEV));
        c.count(&std::io::Error::other("no errno"));
        let m = c.to_map();
        assert_eq!(m.get("ECONNREFUSED"), Some(&2));
        assert_eq!(m.get("ENETUNREACH"), Some(&1));
        assert_eq!(m.get("other"), Some(&2));
        assert_eq!(m.len(), 3);
    }

    fn sample() -> Stats {
        let mut s = Stats {
            uptime_ms: 12_345,
            frames_from_guest: 10,
            frames_to_guest: 9,
            bytes_from_guest: 1000,
            bytes_to_guest: 900,
            refused_full: 1,
            refused_rules: 2,
            dns_queries: 3,
            icmp_too_big_sent: 6,
            api_requests: 4,
            ..Stats::default()
        };
        s.drops.insert("malformed".into(), 5);
        s.flows
            .entry("tcp".into())
            .or_default()
            .insert("open".into(), 2);
        s.flows_created.insert("tcp".into(), 7);
        s.host_errors.insert("ECONNREFUSED".into(), 1);
        s
    }

    #[test]
    fn prometheus_text() {
        let t = to_prometheus(&sample());
        for line in [
            "# TYPE tapir_uptime_seconds gauge",
            "tapir_uptime_seconds 12.345",
            "# TYPE tapir_frames_total counter",
            "tapir_frames_total{direction=\"from_guest\"} 10",
            "tapir_bytes_total{direction=\"to_guest\"} 900",
            "tapir_drops_total{reason=\"malformed\"} 5",
            "# TYPE tapir_flows gauge",
            "tapir_flows{proto=\"tcp\",state=\"open\"} 2",
            "tapir_flows_created_total{proto=\"tcp\"} 7",
            "tapir_refused_total{reason=\"policy\"} 0",
            "tapir_host_errors_total{errno=\"ECONNREFUSED\"} 1",
            "tapir_dns_queries_total 3",
            "tapir_icmp_too_big_sent_total 6",
            "# TYPE tapir_api_requests_total counter",
            "tapir_api_requests_total 4",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        // Every metric has exactly one HELP and one TYPE line, and counters end in _total.
        for l in t.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut w = l.split(' ').skip(2);
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            assert_eq!(kind == "counter", name.ends_with("_total"), "{l}");
            assert_eq!(
                t.lines()
                    .filter(|x| x.starts_with(&format!("# HELP {name} ")))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn json_round_trip_and_tolerance() {
        let s = sample();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["refused_policy"], 0);
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        let newer: Stats =
            serde_json::from_str(r#"{"uptime_ms":5,"something_new":{"a":1}}"#).unwrap();
        assert_eq!(newer.uptime_ms, 5);
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
