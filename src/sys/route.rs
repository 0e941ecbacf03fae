//! Discovery of pasta's *template interface*: the host interface whose addresses, gateway and
//! MTU the namespace's tap copies.
//!
//! # Theory of operation
//!
//! Per address family, the template is chosen from the routing table of the calling process's
//! network namespace, as pasta does:
//! 1. with an interface name given (pasta's `-i`/`--outbound-if4/6`), that interface, which must
//!    exist, and the gateway of its default route if it has one;
//! 2. otherwise the interface of the default route with the lowest metric (the first one in the
//!    table among equal metrics), and its gateway;
//! 3. failing that, the first interface with a route to a destination that is not link-local
//!    (no gateway then);
//! 4. `lo` never (unless named explicitly).
//!
//! Routes come from `/proc/net/route` (IPv4, the main table only) and `/proc/net/ipv6_route`
//! (every table: the local table's entries, `RTF_LOCAL` and multicast, are left out, as are
//! reject routes and cached clones). Both are text, parsed by the pure functions
//! [`parse_route4`] and [`parse_route6`], so that the rules above are unit-tested on fixtures.
//!
//! IPv4 addresses come from `getifaddrs(3)`: the template's address is the one with the longest
//! prefix on the interface (a non-link-local one if any). An interface without an IPv4 address
//! gives no IPv4 template. IPv6 addresses come from `/proc/net/if_inet6`, which, unlike
//! `getifaddrs`, carries the scope and the flags: the template keeps the global addresses that are
//! neither deprecated nor failed duplicate detection, longest prefix first. As with pasta, IPv6
//! needs a link-local address on the interface (any state) and either a default route or a
//! global address; otherwise there is no IPv6 template. The MTU comes from `SIOCGIFMTU`.
//!
//! Everything here runs once at start-up; none of it belongs in the event loop.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::ifconfig;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_GATEWAY`: the route goes through a gateway.
const RTF_GATEWAY: u32 = 0x0002;
/// `RTF_REJECT`: an unreachable/prohibit/blackhole route.
const RTF_REJECT: u32 = 0x0200;
/// `RTF_CACHE`: a cached clone (IPv6), not a configured route.
const RTF_CACHE: u32 = 0x0100_0000;
/// `RTF_LOCAL`: a route of the local table (the host's own addresses, IPv6).
const RTF_LOCAL: u32 = 0x8000_0000;

/// `IFA_F_DADFAILED` in `/proc/net/if_inet6`.
const IFA_F_DADFAILED: u32 = 0x08;
/// `IFA_F_DEPRECATED` in `/proc/net/if_inet6`.
const IFA_F_DEPRECATED: u32 = 0x20;
/// `IPV6_ADDR_LINKLOCAL` scope in `/proc/net/if_inet6`.
const SCOPE_LINK: u32 = 0x20;
/// Global scope in `/proc/net/if_inet6`.
const SCOPE_GLOBAL: u32 = 0x00;

/// The IPv4 template interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template4 {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// The interface's address with the longest prefix.
    pub addr: Ipv4Addr,
    /// Prefix length of [`Template4::addr`].
    pub prefix_len: u8,
    /// Gateway of the interface's default route, if it has one.
    pub gateway: Option<Ipv4Addr>,
    /// The interface's MTU.
    pub mtu: u32,
}

/// The IPv6 template interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template6 {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Global (not link-local, not deprecated) addresses with their prefix lengths, longest
    /// prefix first. May be empty when the interface has a default route.
    pub addrs: Vec<(Ipv6Addr, u8)>,
    /// Gateway of the interface's default route, if it has one (often link-local).
    pub gateway: Option<Ipv6Addr>,
    /// The interface's MTU.
    pub mtu: u32,
}

/// One line of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    /// Output interface.
    pub ifname: String,
    /// Destination network.
    pub dst: Ipv4Addr,
    /// Destination prefix length (leading ones of the mask).
    pub prefix_len: u8,
    /// Gateway, for routes with `RTF_GATEWAY`.
    pub gateway: Option<Ipv4Addr>,
    /// `RTF_*` flags.
    pub flags: u32,
    /// Route metric (priority).
    pub metric: u32,
}

/// One line of `/proc/net/ipv6_route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    /// Output interface.
    pub ifname: String,
    /// Destination network.
    pub dst: Ipv6Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Gateway (next hop), for routes with `RTF_GATEWAY`.
    pub gateway: Option<Ipv6Addr>,
    /// `RTF_*` flags.
    pub flags: u32,
    /// Route metric (priority).
    pub metric: u32,
}

/// One line of `/proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr6 {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// The address.
    pub addr: Ipv6Addr,
    /// Prefix length.
    pub prefix_len: u8,
    /// Scope (`0x00` global, `0x10` host, `0x20` link, `0x40` site).
    pub scope: u32,
    /// `IFA_F_*` flags.
    pub flags: u32,
}

/// An IPv4 address as `/proc/net/route` prints it: the 32 bits in network order, read as a
/// host-order integer and printed as 8 hex digits (so `010200C0` is 192.0.2.1 on little-endian).
fn hex_ipv4(s: &str) -> Option<Ipv4Addr> {
    if s.len() != 8 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Ipv4Addr::from(v.to_ne_bytes()))
}

/// An IPv6 address as `/proc/net/ipv6_route` and `/proc/net/if_inet6` print it: 32 hex digits,
/// network order.
fn hex_ipv6(s: &str) -> Option<Ipv6Addr> {
    if s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from)
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

fn hex_u8(s: &str) -> Option<u8> {
    u8::from_str_radix(s, 16).ok()
}

/// Parse `/proc/net/route`. The header and malformed lines are skipped.
pub fn parse_route4(text: &str) -> Vec<Route4> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
            if f.len() < 8 || f[0] == "Iface" {
                return None;
            }
            let dst = hex_ipv4(f[1])?;
            let gw = hex_ipv4(f[2])?;
            let flags = hex_u32(f[3])?;
            let metric = f[6].parse::<u32>().ok()?;
            let mask = u32::from(hex_ipv4(f[7])?);
            // leading_ones is at most 32, which fits a u8.
            let prefix_len = mask.leading_ones() as u8;
            let gateway = (flags & RTF_GATEWAY != 0 && !gw.is_unspecified()).then_some(gw);
            Some(Route4 {
                ifname: f[0].to_owned(),
                dst,
                prefix_len,
                gateway,
                flags,
                metric,
            })
        })
        .collect()
}

/// Parse `/proc/net/ipv6_route`. Malformed lines are skipped.
pub fn parse_route6(text: &str) -> Vec<Route6> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // dst dst_len src src_len next_hop metric refcnt use flags ifname
            if f.len() < 10 {
                return None;
            }
            let dst = hex_ipv6(f[0])?;
            let prefix_len = hex_u8(f[1])?;
            let nh = hex_ipv6(f[4])?;
            let metric = hex_u32(f[5])?;
            let flags = hex_u32(f[8])?;
            let gateway = (flags & RTF_GATEWAY != 0 && !nh.is_unspecified()).then_some(nh);
            Some(Route6 {
                ifname: f[9].to_owned(),
                dst,
                prefix_len,
                gateway,
                flags,
                metric,
            })
        })
        .collect()
}

/// Parse `/proc/net/if_inet6`. Malformed lines are skipped.
pub fn parse_if_inet6(text: &str) -> Vec<Addr6> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // address ifindex prefix_len scope flags ifname
            if f.len() < 6 {
                return None;
            }
            Some(Addr6 {
                addr: hex_ipv6(f[0])?,
                ifindex: hex_u32(f[1])?,
                prefix_len: hex_u8(f[2])?,
                scope: hex_u32(f[3])?,
                flags: hex_u32(f[4])?,
                ifname: f[5].to_owned(),
            })
        })
        .collect()
}

/// A route as the selection rules see it, for either family.
struct Candidate<'a, G> {
    ifname: &'a str,
    default: bool,
    link_local: bool,
    metric: u32,
    gateway: Option<G>,
}

/// The template interface's name and default gateway from `routes` (in table order), by the
/// rules in the module documentation; `None` if no interface qualifies.
fn select<G: Copy>(
    routes: &[Candidate<'_, G>],
    ifname: Option<&str>,
) -> Option<(String, Option<G>)> {
    let best_default = |only: Option<&str>| {
        routes
            .iter()
            .filter(|r| r.default && only.is_none_or(|n| n == r.ifname))
            .filter(|r| only.is_some() || r.ifname != "lo")
            .fold(None::<&Candidate<'_, G>>, |best, r| match best {
                Some(b) if b.metric <= r.metric => Some(b),
                _ => Some(r),
            })
    };
    if let Some(name) = ifname {
        let gw = best_default(Some(name)).and_then(|r| r.gateway);
        return Some((name.to_owned(), gw));
    }
    if let Some(r) = best_default(None) {
        return Some((r.ifname.to_owned(), r.gateway));
    }
    routes
        .iter()
        .find(|r| r.ifname != "lo" && !r.link_local)
        .map(|r| (r.ifname.to_owned(), None))
}

fn usable4(r: &Route4) -> bool {
    r.flags & RTF_UP != 0 && r.flags & RTF_REJECT == 0
}

fn usable6(r: &Route6) -> bool {
    r.flags & RTF_UP != 0
        && r.flags & (RTF_REJECT | RTF_LOCAL | RTF_CACHE) == 0
        && !r.dst.is_multicast()
}

fn link_local4(a: Ipv4Addr) -> bool {
    a.is_link_local()
}

fn link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The IPv4 template's name and gateway from a parsed `/proc/net/route`.
pub fn select4(routes: &[Route4], ifname: Option<&str>) -> Option<(String, Option<Ipv4Addr>)> {
    let c: Vec<_> = routes
        .iter()
        .filter(|r| usable4(r))
        .map(|r| Candidate {
            ifname: &r.ifname,
            default: r.prefix_len == 0,
            link_local: link_local4(r.dst),
            metric: r.metric,
            gateway: r.gateway,
        })
        .collect();
    select(&c, ifname)
}

/// The IPv6 template's name and gateway from a parsed `/proc/net/ipv6_route`.
pub fn select6(routes: &[Route6], ifname: Option<&str>) -> Option<(String, Option<Ipv6Addr>)> {
    let c: Vec<_> = routes
        .iter()
        .filter(|r| usable6(r))
        .map(|r| Candidate {
            ifname: &r.ifname,
            default: r.prefix_len == 0,
            link_local: link_local6(r.dst),
            metric: r.metric,
            gateway: r.gateway,
        })
        .collect();
    select(&c, ifname)
}

/// The address to copy among `addrs` (address, prefix length): the longest prefix, preferring
/// addresses outside 169.254.0.0/16; the first one among equals.
pub fn pick_ipv4(addrs: &[(Ipv4Addr, u8)]) -> Option<(Ipv4Addr, u8)> {
    addrs
        .iter()
        .copied()
        .fold(None, |best: Option<(Ipv4Addr, u8)>, a| match best {
            Some(b) if (!b.0.is_link_local(), b.1) >= (!a.0.is_link_local(), a.1) => Some(b),
            _ => Some(a),
        })
}

/// The global, usable addresses of `ifname` among `addrs`, longest prefix first; and whether
/// the interface has a link-local address.
pub fn pick_ipv6(addrs: &[Addr6], ifname: &str) -> (Vec<(Ipv6Addr, u8)>, bool) {
    let mine = addrs.iter().filter(|a| a.ifname == ifname);
    let has_ll = mine.clone().any(|a| a.scope == SCOPE_LINK);
    let mut global: Vec<(Ipv6Addr, u8)> = mine
        .filter(|a| a.scope == SCOPE_GLOBAL && a.flags & (IFA_F_DEPRECATED | IFA_F_DADFAILED) == 0)
        .map(|a| (a.addr, a.prefix_len))
        .collect();
    // Stable: equal prefixes keep the kernel's order.
    global.sort_by_key(|a| std::cmp::Reverse(a.1));
    (global, has_ll)
}

fn read_proc(path: &str) -> io::Result<String> {
    std::fs::read_to_string(path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Check that a named interface exists, with pasta's message if not.
fn named_ifindex(name: &str) -> io::Result<u32> {
    super::ifindex(name).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("Invalid interface name {name}: No such device"),
        )
    })
}

/// Discover the IPv4 template interface in the calling thread's network namespace, or the
/// interface `ifname` (which must exist: `NotFound` otherwise). `Ok(None)` when no interface
/// qualifies or the chosen one has no IPv4 address.
pub fn template4(ifname: Option<&str>) -> io::Result<Option<Template4>> {
    if let Some(n) = ifname {
        named_ifindex(n)?;
    }
    let routes = parse_route4(&read_proc("/proc/net/route")?);
    let Some((name, gateway)) = select4(&routes, ifname) else {
        return Ok(None);
    };
    let addrs: Vec<(Ipv4Addr, u8)> = nix::ifaddrs::getifaddrs()
        .map_err(|e| io::Error::other(format!("getifaddrs: {}", e.desc())))?
        .filter(|ia| ia.interface_name == name)
        .filter_map(|ia| {
            let addr = ia.address?.as_sockaddr_in()?.ip();
            let mask = ia.netmask.and_then(|m| m.as_sockaddr_in().map(|m| m.ip()));
            // leading_ones is at most 32, which fits a u8.
            let len = mask.map_or(32, |m| u32::from(m).leading_ones() as u8);
            Some((addr, len))
        })
        .collect();
    let Some((addr, prefix_len)) = pick_ipv4(&addrs) else {
        return Ok(None);
    };
    let Some(ifindex) = super::ifindex(&name) else {
        // Gone between the reads: as if it never qualified.
        return Ok(None);
    };
    Ok(Some(Template4 {
        mtu: ifconfig::get_mtu(&name)?,
        ifname: name,
        ifindex,
        addr,
        prefix_len,
        gateway,
    }))
}

/// Discover the IPv6 template interface in the calling thread's network namespace, or the
/// interface `ifname` (which must exist: `NotFound` otherwise). `Ok(None)` when no interface
/// qualifies, IPv6 is disabled, or the chosen one has no link-local address or has neither a
/// default route nor a global address.
pub fn template6(ifname: Option<&str>) -> io::Result<Option<Template6>> {
    if let Some(n) = ifname {
        named_ifindex(n)?;
    }
    let routes = match std::fs::read_to_string("/proc/net/ipv6_route") {
        Ok(s) => parse_route6(&s),
        // IPv6 disabled (ipv6.disable=1): no file, no template.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("/proc/net/ipv6_route: {e}"),
            ))
        }
    };
    let Some((name, gateway)) = select6(&routes, ifname) else {
        return Ok(None);
    };
    let addrs = match std::fs::read_to_string("/proc/net/if_inet6") {
        Ok(s) => parse_if_inet6(&s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io::Error::new(e.kind(), format!("/proc/net/if_inet6: {e}"))),
    };
    let (global, has_ll) = pick_ipv6(&addrs, &name);
    if !has_ll || (gateway.is_none() && global.is_empty()) {
        return Ok(None);
    }
    let Some(ifindex) = super::ifindex(&name) else {
        return Ok(None);
    };
    Ok(Some(Template6 {
        mtu: ifconfig::get_mtu(&name)?,
        ifname: name,
        ifindex,
        addrs: global,
        gateway,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/route` of a host with eth0 (metric 100) and wlan0 (metric 600) defaults,
    /// as a little-endian kernel prints it.
    const ROUTE4: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t0000FEA9\t00000000\t0001\t0\t0\t1000\t0000FFFF\t0\t0\t0
garbage line
";

    /// `/proc/net/ipv6_route` captured in a namespace with a veth pair (v0 has
    /// 2001:db8::10/64 and a default via 2001:db8::1), main and local tables mixed.
    const ROUTE6: &str = "\
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       v0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       v1
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       v0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003       v0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
20010db8000000000000000000000010 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       v0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001       v1
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000010 03 40 00 80       v0
20010db8000000000000000000000020 03 30 00 80       v0
20010db8000000000000000000000099 03 50 00 20       v0
fe80000000000000184acafffea2e908 03 40 20 40       v0
fe80000000000000b806a4fffe9b9d5e 02 40 20 40       v1
";

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_proc_net_route() {
        let r = parse_route4(ROUTE4);
        assert_eq!(r.len(), 4);
        assert_eq!(
            r[1],
            Route4 {
                ifname: "eth0".into(),
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                flags: 3,
                metric: 100,
            }
        );
        assert_eq!(r[2].dst, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(r[2].prefix_len, 24);
        assert_eq!(r[2].gateway, None);
        assert_eq!(r[3].dst, Ipv4Addr::new(169, 254, 0, 0));
        assert_eq!(r[3].prefix_len, 16);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_default_with_lowest_metric_wins() {
        let r = parse_route4(ROUTE4);
        assert_eq!(
            select4(&r, None),
            Some(("eth0".into(), Some(Ipv4Addr::new(192, 0, 2, 1))))
        );
        // -i wlan0: its own default gateway.
        assert_eq!(
            select4(&r, Some("wlan0")),
            Some(("wlan0".into(), Some(Ipv4Addr::new(192, 168, 0, 1))))
        );
        // -i on an interface without a default route: no gateway.
        assert_eq!(select4(&r, Some("v9")), Some(("v9".into(), None)));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_without_default_takes_first_non_link_local_route() {
        let text = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
lo\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
a0\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
b0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
c0\t000300C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        assert_eq!(
            select4(&parse_route4(text), None),
            Some(("b0".into(), None))
        );
        // Only lo and link-local: nothing.
        let only: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
        assert_eq!(select4(&parse_route4(&only), None), None);
        assert_eq!(select4(&[], None), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_ignores_reject_and_lo_defaults() {
        let text = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
lo\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0
lo\t00000000\t0100007F\t0003\t0\t0\t0\t00000000\t0\t0\t0
e0\t00000000\t00000000\t0001\t0\t0\t50\t00000000\t0\t0\t0
";
        // A default route without a gateway (`default dev e0`) still selects its interface.
        assert_eq!(
            select4(&parse_route4(text), None),
            Some(("e0".into(), None))
        );
    }

    #[test]
    fn parses_proc_net_ipv6_route() {
        let r = parse_route6(ROUTE6);
        assert_eq!(r.len(), 8);
        assert_eq!(r[0].dst, "2001:db8::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(r[0].prefix_len, 64);
        assert_eq!(r[0].metric, 256);
        assert_eq!(r[0].gateway, None);
        assert_eq!(r[3].prefix_len, 0);
        assert_eq!(r[3].metric, 1024);
        assert_eq!(r[3].gateway, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(r[7].flags, 0x0020_0200);
        assert_eq!(r[7].ifname, "lo");
    }

    #[test]
    fn ipv6_selection() {
        let r = parse_route6(ROUTE6);
        assert_eq!(
            select6(&r, None),
            Some(("v0".into(), Some("2001:db8::1".parse().unwrap())))
        );
        // Without the default route: v1 has only link-local and multicast (local table)
        // routes, v0 has 2001:db8::/64.
        let no_default: Vec<Route6> = r.iter().filter(|x| x.prefix_len != 0).cloned().collect();
        assert_eq!(select6(&no_default, None), Some(("v0".into(), None)));
        let v1_only: Vec<Route6> = r.iter().filter(|x| x.ifname != "v0").cloned().collect();
        assert_eq!(select6(&v1_only, None), None);
    }

    #[test]
    fn ipv6_link_local_gateway_and_metrics() {
        let text = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     b0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000002 00000064 00000001 00000000 00000003     a0
";
        assert_eq!(
            select6(&parse_route6(text), None),
            Some(("a0".into(), Some("fe80::2".parse().unwrap())))
        );
    }

    #[test]
    fn ipv6_addresses() {
        let a = parse_if_inet6(IF_INET6);
        assert_eq!(a.len(), 6);
        assert_eq!(a[1].ifindex, 3);
        let (global, ll) = pick_ipv6(&a, "v0");
        assert!(ll);
        // The deprecated /80 is left out; the /64 comes before the /48.
        assert_eq!(
            global,
            vec![
                ("2001:db8::10".parse().unwrap(), 64),
                ("2001:db8::20".parse().unwrap(), 48)
            ]
        );
        let (global, ll) = pick_ipv6(&a, "v1");
        assert!(ll);
        assert!(global.is_empty());
        let (global, ll) = pick_ipv6(&a, "lo");
        assert!(!ll);
        assert!(global.is_empty());
    }

    #[test]
    fn ipv4_address_choice() {
        let a = |s: &str, l| (s.parse::<Ipv4Addr>().unwrap(), l);
        assert_eq!(pick_ipv4(&[]), None);
        assert_eq!(
            pick_ipv4(&[a("10.0.0.1", 8), a("192.0.2.10", 24), a("192.0.2.11", 24)]),
            Some(a("192.0.2.10", 24))
        );
        assert_eq!(
            pick_ipv4(&[a("169.254.1.1", 32), a("10.0.0.1", 8)]),
            Some(a("10.0.0.1", 8))
        );
        assert_eq!(
            pick_ipv4(&[a("169.254.1.1", 16)]),
            Some(a("169.254.1.1", 16))
        );
    }

    #[test]
    fn malformed_input_is_skipped() {
        assert!(parse_route4("Iface\nx y z\n\u{0}\n").is_empty());
        assert!(parse_route6("zz 40 00 00 00 00 00 00 00 v0\n").is_empty());
        assert!(parse_if_inet6("fe80 02 40 20 40 v0\n").is_empty());
    }

    #[test]
    fn unknown_interface_is_not_found() {
        let e = template4(Some("no-such-if0")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "Invalid interface name no-such-if0: No such device"
        );
        assert_eq!(
            template6(Some("no-such-if0")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn templates_in_a_namespace() {
        crate::sys::testns::in_namespace("sys::route::tests::templates_in_a_namespace", || {
            use crate::sys::testns::run;
            // Only lo: no template at all.
            if let Err(e) = crate::sys::testns::try_run(&["ip", "link", "set", "lo", "up"]) {
                return crate::sys::testns::skip(
                    "sys::route::tests::templates_in_a_namespace",
                    &format!("no usable ip(8): {e}"),
                );
            }
            assert_eq!(template4(None).unwrap(), None);
            assert_eq!(template6(None).unwrap(), None);
            let veth = [
                "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ];
            if let Err(e) = crate::sys::testns::try_run(&veth) {
                return crate::sys::testns::skip(
                    "sys::route::tests::templates_in_a_namespace",
                    &format!("cannot make a veth pair: {e}"),
                );
            }
            run(&["ip", "addr", "add", "192.0.2.10/24", "dev", "v0"]);
            run(&["ip", "addr", "add", "10.9.0.1/8", "dev", "v0"]);
            run(&["ip", "link", "set", "v0", "up"]);
            run(&["ip", "link", "set", "v1", "up"]);
            run(&[
                "ip",
                "-6",
                "addr",
                "add",
                "2001:db8::10/64",
                "dev",
                "v0",
                "nodad",
            ]);
            // No default route yet: the first interface with a non-link-local route.
            let t = template4(None).unwrap().expect("v4 template");
            assert_eq!((t.ifname.as_str(), t.gateway), ("v0", None));
            run(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
            run(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                "2001:db8::1",
                "dev",
                "v0",
            ]);
            let ifindex = crate::sys::ifindex("v0").unwrap();
            assert_eq!(
                template4(None).unwrap(),
                Some(Template4 {
                    ifname: "v0".into(),
                    ifindex,
                    addr: Ipv4Addr::new(192, 0, 2, 10),
                    prefix_len: 24,
                    gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                    mtu: 1500,
                })
            );
            // The link-local address appears with the link; wait for it (tentative is fine).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let t6 = loop {
                if let Some(t) = template6(None).unwrap() {
                    break t;
                }
                assert!(std::time::Instant::now() < deadline, "no v6 template");
                std::thread::sleep(std::time::Duration::from_millis(50));
            };
            assert_eq!(
                t6,
                Template6 {
                    ifname: "v0".into(),
                    ifindex,
                    addrs: vec![("2001:db8::10".parse().unwrap(), 64)],
                    gateway: Some("2001:db8::1".parse().unwrap()),
                    mtu: 1500,
                }
            );
            // -i v1: no IPv4 address, and only link-local IPv6.
            assert_eq!(template4(Some("v1")).unwrap(), None);
            assert_eq!(template6(Some("v1")).unwrap(), None);
            // A default route with a lower metric elsewhere wins.
            run(&[
                "ip", "link", "add", "w0", "type", "veth", "peer", "name", "w1",
            ]);
            run(&["ip", "addr", "add", "198.51.100.7/32", "dev", "w0"]);
            run(&["ip", "link", "set", "w0", "mtu", "9000", "up"]);
            run(&["ip", "link", "set", "w1", "up"]);
            run(&["ip", "route", "del", "default", "via", "192.0.2.1"]);
            run(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "192.0.2.1",
                "metric",
                "100",
            ]);
            run(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                "198.51.100.1",
                "dev",
                "w0",
                "onlink",
                "metric",
                "50",
            ]);
            let t = template4(None).unwrap().expect("w0");
            assert_eq!(t.ifname, "w0");
            assert_eq!((t.addr, t.prefix_len), (Ipv4Addr::new(198, 51, 100, 7), 32));
            assert_eq!(t.gateway, Some(Ipv4Addr::new(198, 51, 100, 1)));
            assert_eq!(t.mtu, 9000);
            // -i v0 keeps v0's own gateway.
            let t = template4(Some("v0")).unwrap().expect("v0");
            assert_eq!(t.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        });
    }
}
