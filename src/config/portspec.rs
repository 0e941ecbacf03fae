//! pasta's port specifications (`-t`, `-u`, `-T`, `-U`): parsing into [`PortSpec`].
//!
//! # Theory of operation
//!
//! One option value is a *mode* or a *specification*:
//!
//! ```text
//! none | auto | all
//! [ADDR[%IF]/ | %IF/]CHUNK[,CHUNK]...      CHUNK = N[-M][:P[-Q]] | ~N[-M]
//! ```
//!
//! - `none` and `auto` set the mode once; a second mode, or a mode after specifications, is
//!   `Port forwarding mode 'ARG' conflicts with previous mode`; a specification after a mode is
//!   `Specific ports cannot be specified together with all/none/auto`. `all` is passt's, and
//!   refused as pasta refuses it (after the conflict check, as pasta orders them).
//! - Specifications accumulate into [`PortSpec::Ranges`], one [`PortRange`] per contiguous run.
//!   A later mapping of a port replaces an earlier one for the same address and interface
//!   (pasta keeps one mapping per port number), so one listening address never gets two
//!   listeners for a port.
//! - `ADDR` (IPv4 or IPv6, optionally in brackets, IPv4 too) and `%IF` (at most
//!   [`MAX_IFNAME_LEN`] bytes, not empty) are allowed for `-t`/`-u` only.
//! - `N-M:P-Q` maps `N..=M` to `P..=Q`; both lengths must be equal. Every number is a decimal
//!   port below 65536; `M < N` is invalid. A range starting at port 0 is
//!   `Can't forward port 0 for option '-t ARG'`; a target range starting at 0 is invalid.
//! - `~N[-M]` excludes ports. Exclusions apply to the whole value (they may follow the ranges
//!   they cut): explicit ranges lose the excluded listening ports, keeping their offset. A value of only
//!   exclusions means every port 1-65535 except those and the ephemeral range (the caller
//!   passes the namespace's `ip_local_port_range`, see [`parse_ephemeral_range`]; [`add`]
//!   takes pasta's fallback [`EPHEMERAL_FALLBACK`]). Overlapping exclusions are
//!   `Overlapping excluded ranges ARG`.
//!
//! Differences from pasta, all stricter: numbers are plain decimal digits (pasta's `strtoul`
//! also takes leading blanks and signs), an empty `%IF` is invalid, and a value may name at
//! most [`MAX_SPEC_PORTS`] ports in all (see there for why).
//!
//! Errors are pasta's messages, except the [`MAX_SPEC_PORTS`] one, which is tapir's. This
//! module is pure: it opens nothing and reads no files.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::pasta::{PortRange, PortSpec};

/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// pasta's ephemeral port range when `/proc/sys/net/ipv4/ip_local_port_range` is unreadable.
pub const EPHEMERAL_FALLBACK: RangeInclusive<u16> = 49152..=65535;

/// Most ports one option letter may forward, over all its values.
///
/// tapir holds one host socket per forwarded port (a listening TCP socket or a bound UDP
/// socket, each with an fd and an epoll entry) and its forward table holds at most
/// `forward::MAX_FORWARDS` of them; a test keeps the two equal. pasta accepts up to all 65535
/// ports (`-t ~22` is ~49000); one socket per port would make that some 100 MB of kernel memory
/// per protocol and an fd count beyond many hard limits, so tapir refuses such a value at once
/// with a clear message rather than failing at start-up in the forward table.
pub const MAX_SPEC_PORTS: usize = 1024;

/// Number of port numbers (0..=65535).
const NUM_PORTS: usize = 1 << 16;

/// A set of port numbers (a 65536-bit map).
struct PortSet(Vec<u64>);

impl PortSet {
    fn new() -> Self {
        PortSet(vec![0; NUM_PORTS / 64])
    }
    fn contains(&self, p: u16) -> bool {
        self.0[usize::from(p) / 64] & (1 << (p % 64)) != 0
    }
    fn insert(&mut self, p: u16) {
        self.0[usize::from(p) / 64] |= 1 << (p % 64);
    }
}

/// Parse the content of `/proc/sys/net/ipv4/ip_local_port_range` (`FIRST<blanks>LAST`).
pub fn parse_ephemeral_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(a)), Some(Ok(b)), None) = (it.next(), it.next(), it.next()) else {
        return None;
    };
    (a <= b).then_some(a..=b)
}

/// Add one `-OPT ARG` occurrence to `spec` (options accumulate as pasta's do). `opt` is the
/// short option letter (`t`, `u`, `T`, `U`); errors are pasta's messages. An exclusions-only
/// value leaves out pasta's fallback ephemeral range, [`EPHEMERAL_FALLBACK`].
pub fn add(spec: &mut PortSpec, opt: char, arg: &str) -> Result<(), String> {
    add_with_ephemeral(spec, opt, arg, EPHEMERAL_FALLBACK)
}

/// [`add`], with the ephemeral range an exclusions-only value leaves out.
pub fn add_with_ephemeral(
    spec: &mut PortSpec,
    opt: char,
    arg: &str,
    ephemeral: RangeInclusive<u16>,
) -> Result<(), String> {
    let conflict = || format!("Port forwarding mode '{arg}' conflicts with previous mode");
    match arg {
        "none" | "auto" | "all" => {
            if *spec != PortSpec::Unset {
                return Err(conflict());
            }
            *spec = match arg {
                "none" => PortSpec::None,
                "auto" => PortSpec::Auto,
                _ => return Err("'all' port forwarding is only allowed for passt".to_owned()),
            };
            return Ok(());
        }
        _ => {}
    }
    let mut ranges = match std::mem::take(spec) {
        PortSpec::Unset => Vec::new(),
        PortSpec::Ranges(r) => r,
        other => {
            *spec = other;
            return Err("Specific ports cannot be specified together with all/none/auto".into());
        }
    };
    // On error the option is fatal anyway; keep what was there so `spec` stays meaningful.
    let result = parse_into(&mut ranges, opt, arg, ephemeral);
    *spec = PortSpec::Ranges(ranges);
    result
}

/// A parsed `N[-M]`.
fn port_range(s: &str) -> Option<(u16, u16)> {
    let num = |t: &str| {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse::<u16>().ok()
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let p = num(s)?;
            (p, p)
        }
    };
    (first <= last).then_some((first, last))
}

/// The listening address and interface of a `ADDR[%IF]/` or `%IF/` prefix.
fn prefix(p: &str) -> Option<(Option<IpAddr>, Option<String>)> {
    let (addr, iface) = match p.split_once('%') {
        Some((a, i)) => {
            if i.is_empty() || i.len() > MAX_IFNAME_LEN {
                return None;
            }
            (a, Some(i.to_owned()))
        }
        None => (p, None),
    };
    if addr.is_empty() {
        return iface.is_some().then_some((None, iface));
    }
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    Some((Some(addr.parse().ok()?), iface))
}

fn parse_into(
    ranges: &mut Vec<PortRange>,
    opt: char,
    arg: &str,
    ephemeral: RangeInclusive<u16>,
) -> Result<(), String> {
    let bad = || format!("Invalid port specifier {arg}");
    let (addr, iface, chunks) = match arg.split_once('/') {
        Some((p, chunks)) => {
            if opt != 't' && opt != 'u' {
                return Err(bad());
            }
            let (addr, iface) = prefix(p).ok_or_else(bad)?;
            (addr, iface, chunks)
        }
        None => (None, None, arg),
    };

    // Exclusions first: they cut every range of the value, wherever they stand.
    let mut exclude = PortSet::new();
    let mut only_exclusions = true;
    for chunk in chunks.split(',') {
        let Some(x) = chunk.strip_prefix('~') else {
            only_exclusions = false;
            continue;
        };
        let (first, last) = port_range(x).ok_or_else(bad)?;
        for p in first..=last {
            if exclude.contains(p) {
                return Err(format!("Overlapping excluded ranges {arg}"));
            }
            exclude.insert(p);
        }
    }

    // (first, last, to_first) before exclusions.
    let mut wanted: Vec<(u16, u16, u16)> = Vec::new();
    if only_exclusions {
        for p in ephemeral {
            exclude.insert(p);
        }
        wanted.push((1, u16::MAX, 1));
    } else {
        for chunk in chunks.split(',').filter(|c| !c.starts_with('~')) {
            let (from, to) = match chunk.split_once(':') {
                Some((f, t)) => (f, Some(t)),
                None => (chunk, None),
            };
            let (first, last) = port_range(from).ok_or_else(bad)?;
            let to_first = match to {
                Some(t) => {
                    let (tf, tl) = port_range(t).ok_or_else(bad)?;
                    if tl - tf != last - first || tf == 0 {
                        return Err(bad());
                    }
                    tf
                }
                None => first,
            };
            if first == 0 {
                return Err(format!("Can't forward port 0 for option '-{opt} {arg}'"));
            }
            wanted.push((first, last, to_first));
        }
    }

    // Cut the exclusions out, keeping each range's offset.
    let mut new = Vec::new();
    for (first, last, to_first) in wanted {
        let mut run: Option<u16> = None;
        for p in first..=last {
            let excluded = exclude.contains(p);
            match (run, excluded) {
                (None, false) => run = Some(p),
                (Some(start), true) => {
                    new.push(range(&addr, &iface, start, p - 1, first, to_first));
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run {
            new.push(range(&addr, &iface, start, last, first, to_first));
        }
    }

    // A later mapping replaces an earlier one for the same listening address.
    let mut kept = ranges.clone();
    for r in new {
        put(&mut kept, r);
    }

    let total: usize = kept.iter().map(|r| usize::from(r.last - r.first) + 1).sum();
    if total > MAX_SPEC_PORTS {
        return Err(format!(
            "Too many ports for option '-{opt} {arg}': {total} in all, tapir forwards at most \
             {MAX_SPEC_PORTS} per option (one host socket each)"
        ));
    }
    *ranges = kept;
    Ok(())
}

/// The part `first..=last` of a range that started at `orig_first` mapped to `to_first`.
fn range(
    addr: &Option<IpAddr>,
    iface: &Option<String>,
    first: u16,
    last: u16,
    orig_first: u16,
    to_first: u16,
) -> PortRange {
    PortRange {
        addr: *addr,
        iface: iface.clone(),
        first,
        last,
        // In range: `first - orig_first` is at most the length both sides share.
        to_first: to_first.wrapping_add(first - orig_first),
    }
}

/// Add `new`, taking its ports out of the ranges of `kept` with the same address and interface.
fn put(kept: &mut Vec<PortRange>, new: PortRange) {
    let mut out = Vec::with_capacity(kept.len() + 2);
    for r in kept.drain(..) {
        let same = r.addr == new.addr && r.iface == new.iface;
        if !same || r.last < new.first || r.first > new.last {
            out.push(r);
            continue;
        }
        if r.first < new.first {
            out.push(sub(&r, r.first, new.first - 1));
        }
        if r.last > new.last {
            out.push(sub(&r, new.last + 1, r.last));
        }
    }
    out.push(new);
    *kept = out;
}

/// The part `first..=last` of `r`.
fn sub(r: &PortRange, first: u16, last: u16) -> PortRange {
    range(&r.addr, &r.iface, first, last, r.first, r.to_first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(opt: char, args: &[&str]) -> Result<PortSpec, String> {
        let mut s = PortSpec::Unset;
        for a in args {
            add(&mut s, opt, a)?;
        }
        Ok(s)
    }

    fn ranges(opt: char, args: &[&str]) -> Vec<(u16, u16, u16)> {
        match parse(opt, args).unwrap() {
            PortSpec::Ranges(r) => r.iter().map(|r| (r.first, r.last, r.to_first)).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn err(opt: char, args: &[&str]) -> String {
        parse(opt, args).unwrap_err()
    }

    #[test]
    fn modes() {
        assert_eq!(parse('t', &["none"]), Ok(PortSpec::None));
        assert_eq!(parse('u', &["auto"]), Ok(PortSpec::Auto));
        assert_eq!(parse('T', &["auto"]), Ok(PortSpec::Auto));
        assert_eq!(
            err('t', &["all"]),
            "'all' port forwarding is only allowed for passt"
        );
        assert_eq!(
            err('t', &["auto", "none"]),
            "Port forwarding mode 'none' conflicts with previous mode"
        );
        assert_eq!(
            err('t', &["none", "none"]),
            "Port forwarding mode 'none' conflicts with previous mode"
        );
        assert_eq!(
            err('t', &["auto", "all"]),
            "Port forwarding mode 'all' conflicts with previous mode"
        );
        // A mode after specifications: pasta's mode check sees a mode already set.
        assert_eq!(
            err('t', &["80", "none"]),
            "Port forwarding mode 'none' conflicts with previous mode"
        );
        for m in ["none", "auto"] {
            assert_eq!(
                err('t', &[m, "80"]),
                "Specific ports cannot be specified together with all/none/auto"
            );
        }
    }

    #[test]
    fn chunks() {
        assert_eq!(ranges('t', &["80"]), [(80, 80, 80)]);
        assert_eq!(ranges('t', &["80-82"]), [(80, 82, 80)]);
        assert_eq!(ranges('t', &["8080:80"]), [(8080, 8080, 80)]);
        assert_eq!(ranges('t', &["8080-8081:80-81"]), [(8080, 8081, 80)]);
        assert_eq!(
            ranges('u', &["53,80-81:90-91,65535"]),
            [(53, 53, 53), (80, 81, 90), (65535, 65535, 65535)]
        );
        // Options accumulate.
        assert_eq!(ranges('t', &["80", "443"]), [(80, 80, 80), (443, 443, 443)]);
        assert_eq!(ranges('T', &["1-3:4-6"]), [(1, 3, 4)]);
    }

    #[test]
    fn invalid_chunks() {
        for a in [
            "",
            "80-70",
            "foo",
            "80:90-91",
            "~70000",
            "70000",
            "80,",
            ",80",
            "80-",
            "-80",
            "+80",
            " 80",
            "80:",
            "80:0",
            "1-2:0-1",
            "80-81:90",
            "80x",
            "~",
            "~80-",
            "80::90",
            "80/",
            "/80",
            "1.2.3.4/",
            "1.2.3.4/80/81",
            "999.1.1.1/80",
            "[::1/80",
            "%/80",
            "::1%/80",
            "%abcdefghijklmnop/80",
        ] {
            assert_eq!(
                err('t', &[a]),
                format!("Invalid port specifier {a}"),
                "{a:?}"
            );
        }
    }

    #[test]
    fn port_zero() {
        assert_eq!(err('t', &["0"]), "Can't forward port 0 for option '-t 0'");
        assert_eq!(
            err('u', &["0-5:10-15"]),
            "Can't forward port 0 for option '-u 0-5:10-15'"
        );
        // Excluding 0 is fine.
        assert_eq!(ranges('t', &["~0,80"]), [(80, 80, 80)]);
    }

    #[test]
    fn addresses_and_interfaces() {
        let one = |arg: &str| match parse('t', &[arg]).unwrap() {
            PortSpec::Ranges(r) => {
                assert_eq!(r.len(), 1);
                r.into_iter().next().unwrap()
            }
            other => panic!("{other:?}"),
        };
        let r = one("127.0.0.1/8080:80");
        assert_eq!(r.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!((r.iface, r.first, r.to_first), (None, 8080, 80));
        let r = one("[127.0.0.1]/80");
        assert_eq!(r.addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let r = one("[::1]/80");
        assert_eq!(r.addr, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let r = one("::1/80");
        assert_eq!(r.addr, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let r = one("192.0.2.1%eth0/80");
        assert_eq!(r.addr, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r.iface.as_deref(), Some("eth0"));
        let r = one("%eth0/80");
        assert_eq!((r.addr, r.iface.as_deref()), (None, Some("eth0")));
        let r = one("%abcdefghijklmno/80");
        assert_eq!(r.iface.as_deref(), Some("abcdefghijklmno"));
        // Only -t and -u take an address or interface.
        for o in ['T', 'U'] {
            assert_eq!(
                err(o, &["127.0.0.1/80"]),
                "Invalid port specifier 127.0.0.1/80"
            );
            assert_eq!(err(o, &["%lo/80"]), "Invalid port specifier %lo/80");
        }
        assert!(parse('u', &["127.0.0.1/80"]).is_ok());
    }

    #[test]
    fn exclusions_cut_ranges() {
        assert_eq!(ranges('t', &["80-90,~85"]), [(80, 84, 80), (86, 90, 86)]);
        // Exclusions (of listening ports) may come first; offsets are kept.
        assert_eq!(
            ranges('t', &["~1082-1083,1080-1085:80-85"]),
            [(1080, 1081, 80), (1084, 1085, 84)]
        );
        // A range wholly excluded vanishes.
        assert_eq!(ranges('t', &["80,~80,81"]), [(81, 81, 81)]);
        assert_eq!(
            err('t', &["~80-90,~85"]),
            "Overlapping excluded ranges ~80-90,~85"
        );
        // Exclusions apply to their own option only.
        assert_eq!(ranges('t', &["80", "~80,81"]), [(80, 80, 80), (81, 81, 81)]);
    }

    #[test]
    fn exclusions_only() {
        let mut s = PortSpec::Unset;
        add_with_ephemeral(&mut s, 't', "~22", 1000..=65535).unwrap();
        let PortSpec::Ranges(r) = s else { panic!() };
        let r: Vec<_> = r.iter().map(|r| (r.first, r.last, r.to_first)).collect();
        assert_eq!(r, [(1, 21, 1), (23, 999, 23)]);
        // With pasta's fallback ephemeral range this is ~49000 ports: over tapir's limit.
        assert_eq!(
            err('t', &["~22"]),
            format!(
                "Too many ports for option '-t ~22': 49150 in all, tapir forwards at most \
                 {MAX_SPEC_PORTS} per option (one host socket each)"
            )
        );
        // With an address.
        let mut s = PortSpec::Unset;
        add_with_ephemeral(&mut s, 'u', "127.0.0.1/~1-99", 200..=65535).unwrap();
        let PortSpec::Ranges(r) = s else { panic!() };
        assert_eq!((r.len(), r[0].first, r[0].last), (1, 100, 199));
        assert_eq!(r[0].addr, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn later_mappings_replace_earlier_ones() {
        assert_eq!(
            ranges('t', &["80-82", "81:8081"]),
            [(80, 80, 80), (82, 82, 82), (81, 81, 8081)]
        );
        assert_eq!(ranges('t', &["80", "80"]), [(80, 80, 80)]);
        // Within one value too.
        assert_eq!(ranges('t', &["80-81,81:90"]), [(80, 80, 80), (81, 81, 90)]);
        // Another listening address is another listener.
        let PortSpec::Ranges(r) = parse('t', &["80", "127.0.0.1/80"]).unwrap() else {
            panic!()
        };
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn limit() {
        assert_eq!(MAX_SPEC_PORTS, crate::forward::MAX_FORWARDS);
        assert!(parse('t', &["1-1024"]).is_ok());
        assert!(err('t', &["1-1025"]).starts_with("Too many ports for option '-t 1-1025': 1025"));
        assert!(err('t', &["1-1000", "2001-2100"]).starts_with("Too many ports"));
        // A failed value leaves the earlier ones.
        let mut s = PortSpec::Unset;
        add(&mut s, 't', "80").unwrap();
        assert!(add(&mut s, 't', "1-2000").is_err());
        assert_eq!(s, parse('t', &["80"]).unwrap());
    }

    #[test]
    fn ephemeral_range_text() {
        assert_eq!(parse_ephemeral_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_ephemeral_range("1 1"), Some(1..=1));
        assert_eq!(parse_ephemeral_range("2 1"), None);
        assert_eq!(parse_ephemeral_range("1"), None);
        assert_eq!(parse_ephemeral_range("1 2 3"), None);
        assert_eq!(parse_ephemeral_range("a b"), None);
    }
}
