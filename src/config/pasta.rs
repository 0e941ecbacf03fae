//! pasta's command line as values, and how it becomes a [`Config`].
//!
//! # Theory of operation
//!
//! When tapir runs as `pasta` (argv\[0\]'s basename contains `pasta`, or `tapir pasta ...`),
//! `cli::pasta` parses pasta's options into [`PastaOptions`]: typed, syntax-checked values,
//! with nothing looked up yet. pasta's address model needs the host's state: by default the
//! guest interface *copies* the host's template interface (the one holding the default route
//! of each family): its name, address and prefix, and the host's default gateway. `app` reads
//! that state into a [`Host`] (no I/O here), and [`build`] turns options plus host into the
//! same validated [`Config`] the slirp4netns front end produces, so nothing downstream knows
//! which front end started it.
//!
//! Addresses, in pasta's terms, and what each becomes in the [`Network`]:
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `-a` | the template's address | the guest's address (`guest`) |
//! | `-n` | the template's prefix, or the class of `-a` | `prefix_len` |
//! | `-g` | the host's default gateway | the guest's router (`gateway`), answered by tapir |
//! | `--map-host-loopback` | the gateway, unless `--no-map-gw` | `loopback_alias` |
//! | `--map-guest-addr` | none | `guest_alias`: to the host at the guest's address |
//! | `--dns-forward` | none | `dns`: UDP/TCP port 53 there goes to the host's resolver |
//!
//! Without a template (no route on any interface) pasta falls back to link-local addressing
//! (169.254.2.1/16, gateway 169.254.2.2); tapir does too, but honours `-a`/`-n`/`-g` there,
//! which pasta ignores.
//!
//! The prefix of a copied network is the host's real network: [`Network::virtual_subnet`] is
//! false, so its other addresses are remotes reached through host sockets, and tapir answers
//! ARP and NDP for all of them (the guest must hand such traffic to us).
//!
//! Defaults that differ from slirp4netns mode, as pasta has them: MTU 65520, `--config-net`
//! off (podman and rootlesskit 2.3+ pass it), daemon mode unless `-f`, sandbox and seccomp on
//! (pasta isolates itself unasked; `--no-sandbox` is tapir's own switch), splicing of
//! loopback port-forward clients on, IPv6 on when the host has it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::forward::{ForwardSpec, Proto};
use super::{
    AutoForward, Config, ConfigError, Network, Network6, Outbound, Process, Services, Target,
    DEFAULT_BUSY_POLL_US, RUN_DEFAULT_MTU,
};

/// Link-local fallback without a template interface (pasta's local mode): guest address.
pub const LOCAL_GUEST: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 1);
/// Link-local fallback: prefix length.
pub const LOCAL_PREFIX_LEN: u8 = 16;
/// Link-local fallback: gateway (and host loopback alias).
pub const LOCAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 2);
/// Link-local fallback: IPv6 gateway.
pub const LOCAL_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Tap name when neither `-I` nor a template names one.
pub const DEFAULT_IFNAME: &str = "tap0";

/// One `-t`/`-u`/`-T`/`-U` option value, parsed (pasta's port specification).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortSpec {
    /// Not given: `auto` for `-t`/`-u` (pasta's default); `none` for `-T`/`-U`, which tapir
    /// does not implement.
    #[default]
    Unset,
    /// `none`.
    None,
    /// `auto`: follow the listening sockets of the other side.
    Auto,
    /// Explicit ranges (one or more options).
    Ranges(Vec<PortRange>),
}

/// One forwarded range: host ports `first..=last` to guest ports `to_first..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    /// Listening address (`ADDR/` prefix); `None`: every address.
    pub addr: Option<IpAddr>,
    /// Listening interface (`%IF`).
    pub iface: Option<String>,
    /// First port on the listening side.
    pub first: u16,
    /// Last port on the listening side (inclusive).
    pub last: u16,
    /// First port on the other side (`:PORT`), same length as `first..=last`.
    pub to_first: u16,
}

/// Which address families pasta serves (`-4`, `-6`: the last one wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// Both (IPv6 only when the host has it).
    #[default]
    Both,
    /// `-4/--ipv4-only`.
    V4Only,
    /// `-6/--ipv6-only`.
    V6Only,
}

/// An address option that also takes `none` (`--map-host-loopback`, `--map-guest-addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddrOpt {
    /// Not given.
    #[default]
    Unset,
    /// `none`.
    None,
    /// Addresses given, at most one per family.
    Addr {
        /// IPv4 address, if one was given.
        v4: Option<Ipv4Addr>,
        /// IPv6 address, if one was given.
        v6: Option<Ipv6Addr>,
    },
}

impl AddrOpt {
    /// The IPv4 address given, if any.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        match self {
            AddrOpt::Addr { v4, .. } => *v4,
            _ => None,
        }
    }
    /// The IPv6 address given, if any.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        match self {
            AddrOpt::Addr { v6, .. } => *v6,
            _ => None,
        }
    }
    /// Record one more address (the last one of a family wins, as in pasta).
    pub fn add(&mut self, ip: IpAddr) {
        let (mut v4, mut v6) = (self.v4(), self.v6());
        match ip {
            IpAddr::V4(a) => v4 = Some(a),
            IpAddr::V6(a) => v6 = Some(a),
        }
        *self = AddrOpt::Addr { v4, v6 };
    }
}

/// pasta's options, syntax-checked (see the module docs for the address options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PastaOptions {
    /// `-a` (IPv4 and/or IPv6).
    pub address: AddrOpt,
    /// `-n`: IPv4 prefix length (dotted netmasks are converted by the parser).
    pub prefix_len: Option<u8>,
    /// `-g` (IPv4 and/or IPv6).
    pub gateway: AddrOpt,
    /// `-i`: template interface.
    pub interface: Option<String>,
    /// `-I`: interface name in the namespace.
    pub ns_ifname: Option<String>,
    /// `-m`: MTU (0: leave the interface's).
    pub mtu: Option<u32>,
    /// `-o`: outbound source addresses.
    pub outbound: AddrOpt,
    /// `-4` / `-6`.
    pub family: Family,
    /// `--map-gw` (true) / `--no-map-gw` (false); default true.
    pub map_gw: Option<bool>,
    /// `--map-host-loopback`.
    pub map_host_loopback: AddrOpt,
    /// `--map-guest-addr`.
    pub map_guest_addr: AddrOpt,
    /// `--dns-forward`.
    pub dns_forward: AddrOpt,
    /// `-D` addresses (empty with `-D none` or when absent).
    pub dns: Vec<IpAddr>,
    /// `-S` domains.
    pub search: Vec<String>,
    /// `--no-dhcp`, `--no-ndp`, `--no-ra`, `--no-dhcpv6`, `--no-icmp` (each false when given).
    pub services: Services,
    /// `--config-net`.
    pub config_net: bool,
    /// `--ns-mac-addr`.
    pub ns_mac: Option<[u8; 6]>,
    /// `-f`.
    pub foreground: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-d`.
    pub debug: bool,
    /// `-P/--pid`.
    pub pid_file: Option<PathBuf>,
    /// `-l/--log-file`.
    pub log_file: Option<PathBuf>,
    /// `--netns`.
    pub netns: Option<PathBuf>,
    /// `--userns`.
    pub userns: Option<PathBuf>,
    /// The PID operand.
    pub pid: Option<i32>,
    /// `--no-netns-quit`.
    pub no_netns_quit: bool,
    /// `-t`.
    pub tcp: PortSpec,
    /// `-u`.
    pub udp: PortSpec,
    /// `-T`.
    pub tcp_ns: PortSpec,
    /// `-U`.
    pub udp_ns: PortSpec,
    /// `--no-splice`.
    pub no_splice: bool,
    /// `--no-sandbox` (tapir's own): no private mount namespace, no seccomp filter.
    pub no_sandbox: bool,
    /// `--api-socket` (tapir's own): slirp4netns's API socket, in pasta mode too.
    pub api_socket: Option<PathBuf>,
    /// The egress policy options (tapir's own).
    pub policy: crate::policy::Spec,
}

/// What `app` read from the host: the template interface of each family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// IPv4 template.
    pub v4: Option<Template4>,
    /// IPv6 template.
    pub v6: Option<Template6>,
}

/// The host's IPv4 template interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template4 {
    /// Interface name.
    pub ifname: String,
    /// Its address with the longest prefix.
    pub addr: Ipv4Addr,
    /// That address's prefix length.
    pub prefix_len: u8,
    /// The default gateway through it, if any.
    pub gateway: Option<Ipv4Addr>,
}

/// The host's IPv6 template interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template6 {
    /// Interface name.
    pub ifname: String,
    /// Its global address with the longest prefix, if any.
    pub addr: Option<(Ipv6Addr, u8)>,
    /// The default gateway through it, if any.
    pub gateway: Option<Ipv6Addr>,
}

/// The prefix length of `a` by its class (pasta's rule for `-a` without `-n` and no template).
pub fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Errors in pasta's own words (exit 1, message on stderr without prefix).
fn invalid(msg: String) -> ConfigError {
    ConfigError::Pasta(msg)
}

/// Turn pasta options and the host's state into a [`Config`].
pub fn build(o: &PastaOptions, host: &Host) -> Result<Config, ConfigError> {
    let v4_on = o.family != Family::V6Only;
    let t4 = host.v4.as_ref();
    let t6 = host.v6.as_ref();
    let local = t4.is_none() && t6.is_none();

    // IPv4 plan.
    let guest = o.address.v4().or(t4.map(|t| t.addr)).unwrap_or(LOCAL_GUEST);
    let prefix_len = match (o.prefix_len, o.address.v4(), t4) {
        (Some(p), _, _) => p,
        (None, Some(a), Some(t)) if a == t.addr => t.prefix_len,
        (None, Some(a), _) => classful_prefix(a),
        (None, None, Some(t)) => t.prefix_len,
        (None, None, None) => LOCAL_PREFIX_LEN,
    };
    let gateway = o
        .gateway
        .v4()
        .or(t4.and_then(|t| t.gateway))
        .or(local.then_some(LOCAL_GATEWAY));
    let has_gateway = gateway.is_some();
    // Without a gateway the stack still needs an address of its own on the link: take the
    // other end of a point-to-point pair inside the prefix, never the guest's.
    let gateway = gateway.unwrap_or_else(|| {
        let g = u32::from(guest);
        Ipv4Addr::from(if g & 1 == 0 { g | 1 } else { g & !1 })
    });
    if gateway == guest {
        return Err(invalid(format!("Invalid gateway address: {gateway}")));
    }
    let mut net = Network::copied(guest, prefix_len, gateway);
    let map_gw = o.map_gw.unwrap_or(true) && o.map_host_loopback != AddrOpt::None;
    let loopback4 = o
        .map_host_loopback
        .v4()
        .or((map_gw && has_gateway).then_some(gateway));
    if let Some(a) = loopback4 {
        net.loopback_alias = a;
    }
    net.guest_alias = o.map_guest_addr.v4();
    let dns4 = o.dns_forward.v4();
    if let Some(d) = dns4 {
        net.dns = d;
    }

    // IPv6 plan: the host's global address and gateway, when it has them.
    let mut net6 = Network6 {
        virtual_subnet: false,
        ..Network6::default()
    };
    let addr6 = o.address.v6().map(|a| (a, 64)).or(t6.and_then(|t| t.addr));
    let gateway6 = o
        .gateway
        .v6()
        .or(t6.and_then(|t| t.gateway))
        .or(local.then_some(LOCAL_GATEWAY6));
    let ipv6 = o.family != Family::V4Only && (addr6.is_some() || o.family == Family::V6Only);
    if let Some((a, len)) = addr6 {
        net6.guest = Some(a);
        net6.prefix_len = len;
        net6.prefix = Ipv6Addr::from(
            u128::from(a)
                & u128::MAX
                    .checked_shl(128 - u32::from(len.min(128)))
                    .unwrap_or(0),
        );
    }
    if let Some(g) = gateway6 {
        net6.gateway = g;
        if g.is_unicast_link_local() {
            net6.router_ll = g;
        }
    }
    net6.loopback_alias = o
        .map_host_loopback
        .v6()
        .or((map_gw && gateway6.is_some()).then_some(net6.gateway));
    net6.guest_alias = o.map_guest_addr.v6();
    net6.dns_enabled = o.dns_forward.v6().is_some();
    if let Some(d) = o.dns_forward.v6() {
        net6.dns = d;
    }

    let target = match (o.pid, &o.netns) {
        (Some(pid), None) => Some(Target::Pid(pid)),
        (None, Some(path)) => Some(Target::Path(path.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(invalid("Both --netns and PID or command given".to_owned()))
        }
    };
    let userns_path = match (&o.userns, o.pid) {
        (Some(p), _) => Some(p.clone()),
        (None, _) => None,
    };
    let tap_name = o
        .ns_ifname
        .clone()
        .or(t4.map(|t| t.ifname.clone()))
        .or(t6.map(|t| t.ifname.clone()))
        .unwrap_or_else(|| DEFAULT_IFNAME.to_owned());

    // Namespace-to-host forwarding (-T/-U) is not implemented: only `none` (and leaving the
    // option out, which pasta reads as `auto`) are accepted.
    for (opt, spec) in [("-T", &o.tcp_ns), ("-U", &o.udp_ns)] {
        match spec {
            PortSpec::Unset | PortSpec::None => {}
            PortSpec::Auto => {
                return Err(invalid(format!(
                    "tapir: pasta option {opt} auto is not supported (only {opt} none)"
                )))
            }
            PortSpec::Ranges(_) => {
                return Err(invalid(format!(
                    "tapir: pasta option {opt} PORTS is not supported (only {opt} none)"
                )))
            }
        }
    }
    let forwards = |spec: &PortSpec, proto: Proto| -> Vec<ForwardSpec> {
        let PortSpec::Ranges(ranges) = spec else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // No address: every address, as pasta's `*`: 0.0.0.0 and, with IPv6, `[::]` (an
        // IPv6-only socket beside it; its clients reach the guest's IPv4 address).
        let any: &[IpAddr] = if ipv6 {
            &[
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ]
        } else {
            &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        };
        for r in ranges {
            let addrs = match r.addr {
                Some(a) => vec![a],
                None => any.to_vec(),
            };
            for host_addr in addrs {
                for (i, port) in (r.first..=r.last).enumerate() {
                    let Some(to) = u16::try_from(i)
                        .ok()
                        .and_then(|i| r.to_first.checked_add(i))
                    else {
                        break;
                    };
                    // Clients of either family reach the guest's IPv4 address (an IPv6 client
                    // appears as the gateway); only an IPv6-only guest is reached over IPv6.
                    let guest_addr = match net6.guest {
                        Some(g) if !v4_on => IpAddr::V6(g),
                        _ => IpAddr::V4(net.guest),
                    };
                    out.push(ForwardSpec {
                        proto,
                        host_addr,
                        host_port: port,
                        guest_addr,
                        guest_port: to,
                    });
                }
            }
        }
        out
    };
    let mut publish = forwards(&o.tcp, Proto::Tcp);
    publish.extend(forwards(&o.udp, Proto::Udp));

    let pid_netns = o.pid.is_none() && o.netns.is_some() && !o.no_netns_quit;
    let daemonize = !o.foreground && target.is_some();
    Ok(Config {
        target,
        userns_path,
        tap_name: tap_name.chars().take(super::MAX_IFNAME_LEN).collect(),
        configure: o.config_net,
        mtu: o.mtu.filter(|&m| m != 0).unwrap_or(RUN_DEFAULT_MTU),
        net,
        ipv6,
        mac: o.ns_mac,
        ready_fd: None,
        exit_fd: None,
        api_socket: o.api_socket.clone(),
        disable_host_loopback: loopback4.is_none(),
        disable_dns: dns4.is_none(),
        policy: o.policy.clone(),
        enable_sandbox: !o.no_sandbox,
        enable_seccomp: !o.no_sandbox,
        outbound_addr: o.outbound.v4().map(Outbound::Addr),
        outbound_addr6: o.outbound.v6().map(Outbound::Addr),
        publish,
        debug: o.debug,
        offload: true,
        busy_poll_us: DEFAULT_BUSY_POLL_US,
        splice_forwards: !o.no_splice,
        net6,
        ipv4: v4_on,
        // --config-net configures addresses and routes itself, and then pasta sends no router
        // advertisements (they would add a second default route).
        services: Services {
            ra: o.services.ra && !o.config_net,
            ..o.services
        },
        dns_servers: o.dns.clone(),
        dns_search: o.search.clone(),
        process: Process {
            daemonize,
            pid_file: o.pid_file.clone(),
            quiet: o.quiet,
            log_file: o.log_file.clone(),
            netns_file: pid_netns.then(|| o.netns.clone()).flatten(),
            loopback_up: true,
        },
        // pasta's default for a missing -t/-u is `auto`.
        auto_forward: AutoForward {
            tcp: matches!(o.tcp, PortSpec::Auto | PortSpec::Unset),
            udp: matches!(o.udp, PortSpec::Auto | PortSpec::Unset),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth_host() -> Host {
        Host {
            v4: Some(Template4 {
                ifname: "v0".into(),
                addr: Ipv4Addr::new(192, 0, 2, 10),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
            }),
            v6: Some(Template6 {
                ifname: "v0".into(),
                addr: Some(("2001:db8::10".parse().unwrap(), 64)),
                gateway: Some("2001:db8::1".parse().unwrap()),
            }),
        }
    }

    /// podman 5.4's argv as options.
    fn podman() -> PastaOptions {
        let mut o = PastaOptions {
            config_net: true,
            map_gw: Some(false),
            quiet: true,
            netns: Some("/run/user/1000/netns/netns-x".into()),
            tcp: PortSpec::Ranges(vec![PortRange {
                addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                iface: None,
                first: 18080,
                last: 18081,
                to_first: 80,
            }]),
            udp: PortSpec::None,
            tcp_ns: PortSpec::None,
            udp_ns: PortSpec::None,
            ..Default::default()
        };
        o.dns_forward.add("169.254.1.1".parse().unwrap());
        o.map_guest_addr.add("169.254.1.2".parse().unwrap());
        o
    }

    #[test]
    fn podman_copies_the_template() {
        let c = build(&podman(), &veth_host()).unwrap();
        assert_eq!(c.tap_name, "v0");
        assert_eq!(c.net.guest, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(c.net.prefix_len, 24);
        assert_eq!(c.net.gateway, Ipv4Addr::new(192, 0, 2, 1));
        assert!(!c.net.virtual_subnet);
        assert!(c.disable_host_loopback, "--no-map-gw");
        assert_eq!(c.net.dns, Ipv4Addr::new(169, 254, 1, 1));
        assert!(!c.disable_dns);
        assert_eq!(c.net.guest_alias, Some(Ipv4Addr::new(169, 254, 1, 2)));
        assert!(c.ipv6);
        assert_eq!(c.net6.guest, Some("2001:db8::10".parse().unwrap()));
        assert_eq!(c.net6.gateway, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(c.net6.loopback_alias, None);
        assert!(!c.net6.dns_enabled);
        assert_eq!(c.mtu, 65520);
        assert!(c.configure && c.enable_sandbox && c.enable_seccomp && c.splice_forwards);
        assert!(c.process.daemonize && c.process.quiet);
        assert_eq!(
            c.process.netns_file,
            Some(PathBuf::from("/run/user/1000/netns/netns-x"))
        );
        assert_eq!(c.publish.len(), 2, "127.0.0.1 only");
        assert_eq!(c.publish[1].host_port, 18081);
        assert_eq!(c.publish[1].guest_port, 81);
        assert_eq!(c.publish[1].guest_addr, IpAddr::V4(c.net.guest));
        assert_eq!(c.auto_forward, AutoForward::default());
    }

    #[test]
    fn rootlesskit_addresses_are_honoured() {
        let mut o = PastaOptions {
            foreground: true,
            ns_ifname: Some("tap0".into()),
            mtu: Some(65520),
            prefix_len: Some(24),
            family: Family::V4Only,
            pid: Some(1234),
            tcp: PortSpec::Auto,
            udp: PortSpec::Auto,
            ..Default::default()
        };
        o.address.add("10.0.2.100".parse().unwrap());
        o.gateway.add("10.0.2.2".parse().unwrap());
        o.dns_forward.add("10.0.2.3".parse().unwrap());
        let c = build(&o, &veth_host()).unwrap();
        assert_eq!(c.tap_name, "tap0");
        assert_eq!(c.net.guest, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(c.net.network, Ipv4Addr::new(10, 0, 2, 0));
        assert_eq!(c.net.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.net.loopback_alias, Ipv4Addr::new(10, 0, 2, 2));
        assert!(!c.disable_host_loopback);
        assert!(!c.ipv6);
        assert!(!c.process.daemonize);
        assert_eq!(c.target, Some(Target::Pid(1234)));
        assert!(c.auto_forward.tcp && c.auto_forward.udp);
        assert!(!c.configure);
    }

    #[test]
    fn no_template_means_link_local() {
        let c = build(&PastaOptions::default(), &Host::default()).unwrap();
        assert_eq!(c.net.guest, LOCAL_GUEST);
        assert_eq!(c.net.prefix_len, 16);
        assert_eq!(c.net.gateway, LOCAL_GATEWAY);
        assert_eq!(c.tap_name, DEFAULT_IFNAME);
        assert!(!c.disable_host_loopback);
        assert!(!c.ipv6);
        // -a/-g are honoured there (pasta ignores them).
        let mut o = PastaOptions::default();
        o.address.add("10.0.2.100".parse().unwrap());
        let c = build(&o, &Host::default()).unwrap();
        assert_eq!(c.net.guest, Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(c.net.prefix_len, 8, "classful, as pasta");
    }

    #[test]
    fn map_host_loopback_and_none() {
        let mut o = PastaOptions::default();
        o.map_host_loopback.add("10.9.9.9".parse().unwrap());
        let c = build(&o, &veth_host()).unwrap();
        assert_eq!(c.net.loopback_alias, Ipv4Addr::new(10, 9, 9, 9));
        assert!(!c.disable_host_loopback);
        let o = PastaOptions {
            map_host_loopback: AddrOpt::None,
            ..Default::default()
        };
        assert!(build(&o, &veth_host()).unwrap().disable_host_loopback);
    }

    #[test]
    fn pid_and_netns_conflict() {
        let o = PastaOptions {
            pid: Some(1),
            netns: Some("/x".into()),
            ..Default::default()
        };
        assert_eq!(
            build(&o, &veth_host()).unwrap_err().to_string(),
            "Both --netns and PID or command given"
        );
    }
}
