//! Validated, immutable configuration.
//!
//! # Theory of operation
//!
//! `cli` turns argv into [`Options`]: raw values, checked only as far as slirp4netns checks them
//! while parsing (numbers are numbers, paths exist). [`Config::from_options`] then validates the
//! semantics once (CIDR, MAC, outbound addresses) and derives every address of the virtual network
//! from the CIDR exactly as slirp4netns does (`slirp4netns_config_from_cidr`): with network `N`,
//! the gateway (host loopback alias) is `N+2`, the DNS proxy `N+3`, the DHCP pool `N+15..=N+30`
//! and the recommended guest address `N+100`. That last one is why the prefix may be at most 25.
//!
//! The resulting [`Config`] is borrowed immutably (`&Config`) by every other module. Mutable
//! control-plane state (port forwards) lives elsewhere. This module must not open file
//! descriptors or touch the network; `app` resolves `--outbound-addr=IFNAME` to an address and
//! checks that outbound sockets can be bound to it before anything starts, so the rest of the
//! program sees only [`Outbound::Addr`].

pub mod forward;
pub mod pasta;
pub mod portspec;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Default network when `--cidr` is not given (slirp4netns and libslirp default).
pub const DEFAULT_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 2, 0), 24);
/// Default MTU in slirp4netns mode (slirp4netns's default).
pub const DEFAULT_MTU: u32 = 1500;
/// Default MTU for `tapir run`: the value podman and rootlesskit pass, and the fastest.
pub const RUN_DEFAULT_MTU: u32 = 65520;
/// Smallest MTU accepted: the IPv4 minimum (RFC 791), which podman also enforces.
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted: slirp4netns's limit (libslirp `IF_MTU_MAX`).
pub const MAX_MTU: u32 = 65521;
/// Largest prefix length: the guest address N+100 must fit in the network.
pub const MAX_PREFIX_LEN: u8 = 25;
/// Number of DHCP leases (libslirp `NB_BOOTP_CLIENTS`): N+15 ..= N+30.
pub const DHCP_POOL_SIZE: u32 = 16;
/// DHCP lease time in seconds (libslirp's value).
pub const DHCP_LEASE_SECS: u32 = 86400;

/// Errors found while validating options. The messages are slirp4netns's, byte for byte, where
/// slirp4netns has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--cidr` does not look like `a.b.c.d/p`.
    #[error("invalid CIDR: {0}")]
    InvalidCidr(String),
    /// The address part of `--cidr` is not a valid IPv4 address.
    #[error("invalid network address: {0}")]
    InvalidNetworkAddress(String),
    /// The prefix of `--cidr` is outside 1..=25.
    #[error("prefix length needs to be 1-25")]
    PrefixLength,
    /// `--cidr` has host bits set.
    #[error("CIDR needs to be a network address like 10.0.2.0/24, not like {0}")]
    NotNetworkAddress(String),
    /// `--macaddress` is not a unicast MAC address.
    #[error("invalid MAC address: {0}")]
    InvalidMac(String),
    /// `--outbound-addr` is neither an IPv4 address nor an interface name.
    #[error("outbound-addr has to be valid ipv4 address or interface name.")]
    OutboundAddr,
    /// `--outbound-addr6` is neither an IPv6 address nor an interface name.
    #[error("outbound-addr6 has to be valid ipv6 address or interface name.")]
    OutboundAddr6,
    /// `--api-socket` path does not fit in `sockaddr_un`.
    #[error("the specified API socket path is too long (>= 108)")]
    ApiSocketPathTooLong,
    /// An option that names an existing namespace was given to `tapir run`, which makes its own.
    #[error("{0} cannot be used with tapir run (it creates its own namespaces)")]
    NotForRun(&'static str),
    /// A `--publish` spec could not be parsed.
    #[error("invalid --publish value {0:?}: {1}")]
    Publish(String, String),
    /// `--cidr6` is not a usable IPv6 /64 prefix (the value, then why).
    #[error("invalid --cidr6 {0:?}: {1}")]
    InvalidPrefix6(String, &'static str),
    /// A pasta-mode option is invalid (pasta's own message).
    #[error("{0}")]
    Pasta(String),
}

/// How the target network namespace is named on the command line (`--netns-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A process ID: join `/proc/PID/ns/user` (unless `--userns-path`) and `/proc/PID/ns/net`.
    Pid(i32),
    /// A path to a network namespace file; the user namespace only with `--userns-path`.
    Path(PathBuf),
    /// An inherited file descriptor that is already an attached tap (slirp4netns 1.3 `tapfd`).
    TapFd(RawFd),
}

/// What to bind outbound host sockets to (`--outbound-addr`, `--outbound-addr6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<A> {
    /// A literal address.
    Addr(A),
    /// The first address of this family on the named interface (resolved at start-up).
    Interface(String),
}

impl<A> Outbound<A> {
    /// The same choice with the address converted by `f`.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Outbound<B> {
        match self {
            Outbound::Addr(a) => Outbound::Addr(f(a)),
            Outbound::Interface(name) => Outbound::Interface(name),
        }
    }
}

/// The IPv4 side of the network the guest sees.
///
/// In slirp4netns mode ([`Network::parse_cidr`], [`Network::default`]) every address is derived
/// from the CIDR as slirp4netns does (`slirp4netns_config_from_cidr`) and the whole prefix is
/// *virtual*: it holds only the guest and tapir's virtual hosts. In pasta mode
/// ([`Network::copied`]) the guest copies the host's own address, prefix and gateway: the
/// prefix is the host's real network, so its other addresses are real hosts, reached through
/// host sockets like any remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Network address `N`.
    pub network: Ipv4Addr,
    /// Prefix length (1..=25 in slirp4netns mode, 0..=32 in pasta mode).
    pub prefix_len: u8,
    /// The guest's address: N+100 (recommended, set by `--configure`), or the host's address
    /// it copies in pasta mode.
    pub guest: Ipv4Addr,
    /// The guest's router, answered by the stack itself: N+2, or the host's default gateway.
    pub gateway: Ipv4Addr,
    /// The DNS forwarding address: N+3, or pasta's `--dns-forward`.
    pub dns: Ipv4Addr,
    /// The address that reaches the host's loopback: N+2, or pasta's `--map-host-loopback`
    /// (default: the gateway). Whether it is used is `Config::disable_host_loopback`.
    pub loopback_alias: Ipv4Addr,
    /// pasta's `--map-guest-addr`: a flow to this address reaches the host at the guest's own
    /// address (which the host holds too, and which the guest therefore shadows).
    pub guest_alias: Option<Ipv4Addr>,
    /// First DHCP lease.
    pub dhcp_first: Ipv4Addr,
    /// Number of DHCP leases from `dhcp_first` on (1..=[`DHCP_POOL_SIZE`]).
    pub dhcp_count: u32,
    /// Whether the prefix is virtual (slirp4netns mode: only the guest and the virtual hosts
    /// live there) or the host's real network (pasta mode: every other address is a remote).
    pub virtual_subnet: bool,
}

impl Network {
    /// Parse and validate `a.b.c.d/p` with slirp4netns's rules and messages.
    pub fn parse_cidr(s: &str) -> Result<Self, ConfigError> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| ConfigError::InvalidCidr(s.to_owned()))?;
        // slirp4netns's regex: ^(([0-9]{1,3}\.){3}[0-9]{1,3})/([0-9]{1,2})$
        let octets: Vec<&str> = addr.split('.').collect();
        let digits = |t: &str, max: usize| {
            !t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_digit())
        };
        if octets.len() != 4 || !octets.iter().all(|o| digits(o, 3)) || !digits(prefix, 2) {
            return Err(ConfigError::InvalidCidr(s.to_owned()));
        }
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| ConfigError::InvalidNetworkAddress(addr.to_owned()))?;
        let prefix_len: u8 = prefix
            .parse()
            .map_err(|_| ConfigError::InvalidCidr(s.to_owned()))?;
        if !(1..=MAX_PREFIX_LEN).contains(&prefix_len) {
            return Err(ConfigError::PrefixLength);
        }
        if u32::from(network) & !mask_bits(prefix_len) != 0 {
            return Err(ConfigError::NotNetworkAddress(s.to_owned()));
        }
        Ok(Network::virtual_from(network, prefix_len))
    }

    /// The slirp4netns network on `network/prefix_len` (prefix at most [`MAX_PREFIX_LEN`]).
    fn virtual_from(network: Ipv4Addr, prefix_len: u8) -> Self {
        let at = |n: u32| Ipv4Addr::from(u32::from(network) + n);
        Network {
            network,
            prefix_len,
            guest: at(100),
            gateway: at(2),
            dns: at(3),
            loopback_alias: at(2),
            guest_alias: None,
            dhcp_first: at(15),
            dhcp_count: DHCP_POOL_SIZE,
            virtual_subnet: true,
        }
    }

    /// pasta's model: the guest is `guest/prefix_len` (the host's own address, or `-a`), its
    /// router `gateway`. The loopback alias starts as the gateway and the DNS address as the
    /// gateway too (callers set the ones the options name); DHCP leases only `guest`.
    pub fn copied(guest: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Self {
        let prefix_len = prefix_len.min(32);
        Network {
            network: Ipv4Addr::from(u32::from(guest) & mask_bits(prefix_len)),
            prefix_len,
            guest,
            gateway,
            dns: gateway,
            loopback_alias: gateway,
            guest_alias: None,
            dhcp_first: guest,
            dhcp_count: 1,
            virtual_subnet: false,
        }
    }

    fn mask_bits(&self) -> u32 {
        mask_bits(self.prefix_len)
    }

    /// Netmask, e.g. 255.255.255.0.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }
    /// Directed broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask_bits())
    }
    /// The guest's router (N+2 in slirp4netns mode); smoltcp's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }
    /// DNS forwarding address (N+3 in slirp4netns mode).
    pub fn dns(&self) -> Ipv4Addr {
        self.dns
    }
    /// First DHCP lease (N+15 in slirp4netns mode).
    pub fn dhcp_start(&self) -> Ipv4Addr {
        self.dhcp_first
    }
    /// Last DHCP lease (N+30 in slirp4netns mode).
    pub fn dhcp_end(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.dhcp_first) + self.dhcp_count.max(1) - 1)
    }
    /// The guest's address (used by `--configure` and as default `guest_addr`), N+100 in
    /// slirp4netns mode.
    pub fn guest(&self) -> Ipv4Addr {
        self.guest
    }
    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.network)
    }
}

fn mask_bits(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

impl Default for Network {
    fn default() -> Self {
        Network::virtual_from(DEFAULT_CIDR.0, DEFAULT_CIDR.1)
    }
}

/// The default IPv6 side of slirp4netns's network (libslirp hard-codes it; not derived from
/// `--cidr`): the defaults of [`Network6`]. `--cidr6` moves it ([`Network6::parse_prefix`]).
pub mod ipv6 {
    use std::net::Ipv6Addr;
    /// Prefix announced in router advertisements.
    pub const PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0);
    /// Prefix length.
    pub const PREFIX_LEN: u8 = 64;
    /// Gateway / host loopback alias.
    pub const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    /// DNS proxy.
    pub const DNS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);
    /// Link-local source of router advertisements.
    pub const ROUTER_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
}

/// The IPv6 side of the network the guest sees: slirp4netns's fixed fd00::/64 (the
/// [`Default`]), or in pasta mode the host's global prefix and default gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network6 {
    /// Prefix announced in router advertisements and used by `--configure`.
    pub prefix: Ipv6Addr,
    /// Prefix length (64 for SLAAC).
    pub prefix_len: u8,
    /// The guest's address when it is assigned (pasta mode copies the host's); `None` with
    /// SLAAC.
    pub guest: Option<Ipv6Addr>,
    /// The guest's router, answered by the stack (fd00::2, or the host's IPv6 gateway, which
    /// may be link-local).
    pub gateway: Ipv6Addr,
    /// Link-local source of router advertisements.
    pub router_ll: Ipv6Addr,
    /// DNS forwarding address (fd00::3, or pasta's IPv6 `--dns-forward`).
    pub dns: Ipv6Addr,
    /// Whether DNS to [`Self::dns`] is forwarded (always in slirp4netns mode unless
    /// `--disable-dns`; in pasta mode only with an IPv6 `--dns-forward`).
    pub dns_enabled: bool,
    /// The address that reaches the host's `::1` (fd00::2, or `--map-host-loopback`).
    pub loopback_alias: Option<Ipv6Addr>,
    /// pasta's IPv6 `--map-guest-addr`.
    pub guest_alias: Option<Ipv6Addr>,
    /// Whether the prefix is virtual (see [`Network::virtual_subnet`]).
    pub virtual_subnet: bool,
}

impl Default for Network6 {
    fn default() -> Self {
        Network6 {
            prefix: ipv6::PREFIX,
            prefix_len: ipv6::PREFIX_LEN,
            guest: None,
            gateway: ipv6::GATEWAY,
            router_ll: ipv6::ROUTER_LL,
            dns: ipv6::DNS,
            dns_enabled: true,
            loopback_alias: Some(ipv6::GATEWAY),
            guest_alias: None,
            virtual_subnet: true,
        }
    }
}

/// The only prefix length `--cidr6` accepts: SLAAC needs a 64-bit interface identifier.
pub const PREFIX6_LEN: u8 = 64;
/// Offset of the gateway (host loopback alias) in a `--cidr6` prefix: PREFIX::2, as fd00::2.
pub const GATEWAY6_OFFSET: u128 = 2;
/// Offset of the DNS forwarding address in a `--cidr6` prefix: PREFIX::3, as fd00::3.
pub const DNS6_OFFSET: u128 = 3;

impl Network6 {
    /// Parse and validate `--cidr6=PREFIX/64` and derive the virtual IPv6 network from it:
    /// gateway (and host loopback alias) PREFIX::2, DNS PREFIX::3; router advertisements still
    /// come from fe80::2. Refused: anything but an IPv6 address with `/64`, host bits set, the
    /// unspecified, multicast, link-local and IPv4-mapped/-compatible ranges.
    pub fn parse_prefix(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &'static str| ConfigError::InvalidPrefix6(s.to_owned(), why);
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| bad("expected PREFIX/64, e.g. fd00:1::/64"))?;
        let prefix: Ipv6Addr = match addr.parse() {
            Ok(a) => a,
            Err(_) if addr.parse::<Ipv4Addr>().is_ok() => {
                return Err(bad("an IPv4 address (use --cidr for the IPv4 network)"))
            }
            Err(_) => return Err(bad("not an IPv6 address")),
        };
        if len != "64" {
            return Err(bad("the prefix length must be 64 (SLAAC needs a /64)"));
        }
        let host_mask = u128::MAX >> PREFIX6_LEN;
        let p = u128::from(prefix);
        if p & host_mask != 0 {
            return Err(bad("host bits set (a network address ends in ::)"));
        }
        let top = prefix.segments()[0];
        if p == 0 || prefix.segments()[..4] == [0, 0, 0, 0] {
            return Err(bad(
                "the ::/64 range holds ::, ::1 and IPv4-mapped addresses",
            ));
        }
        if top & 0xff00 == 0xff00 {
            return Err(bad("a multicast prefix"));
        }
        if top & 0xffc0 == 0xfe80 {
            return Err(bad("a link-local prefix"));
        }
        Ok(Network6::virtual_from(prefix))
    }

    /// The slirp4netns-style virtual network on `prefix/64`.
    fn virtual_from(prefix: Ipv6Addr) -> Self {
        let at = |n: u128| Ipv6Addr::from(u128::from(prefix) | n);
        Network6 {
            prefix,
            prefix_len: PREFIX6_LEN,
            gateway: at(GATEWAY6_OFFSET),
            dns: at(DNS6_OFFSET),
            loopback_alias: Some(at(GATEWAY6_OFFSET)),
            ..Network6::default()
        }
    }

    /// Whether `a` lies inside the prefix.
    pub fn contains(&self, a: Ipv6Addr) -> bool {
        let bits = u32::from(self.prefix_len.min(128));
        let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
        u128::from(a) & mask == u128::from(self.prefix) & mask
    }
}

/// MAC address slirp4netns's virtual host `ip` answers ARP with: `52:55` followed by the address.
pub fn mac_for_v4(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x52, 0x55, o[0], o[1], o[2], o[3]]
}

/// MAC address of an IPv6 virtual host: `52:56` followed by the last four bytes of the address.
pub fn mac_for_v6(ip: Ipv6Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x52, 0x56, o[12], o[13], o[14], o[15]]
}

/// Parse `--macaddress` the way slirp4netns does (':'-separated hex bytes, at most six; fewer are
/// accepted and the rest are zero) but reject multicast addresses up front instead of failing
/// later in the kernel.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || ConfigError::InvalidMac(s.to_owned());
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.is_empty() || parts.len() > 6 {
        return Err(bad());
    }
    for (slot, part) in mac.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(bad());
    }
    Ok(mac)
}

/// Format a MAC address as `xx:xx:xx:xx:xx:xx`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Raw options as parsed from the command line, before semantic validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `-c`: configure the interface inside the namespace.
    pub configure: bool,
    /// `-e FD`.
    pub exit_fd: Option<RawFd>,
    /// `-r FD`.
    pub ready_fd: Option<RawFd>,
    /// `-m MTU`, already range-checked.
    pub mtu: Option<u32>,
    /// `-6`.
    pub enable_ipv6: bool,
    /// `-a PATH`.
    pub api_socket: Option<PathBuf>,
    /// `--cidr`.
    pub cidr: Option<String>,
    /// `--cidr6`.
    pub cidr6: Option<String>,
    /// `--disable-host-loopback` (or the deprecated `--no-host-loopback`).
    pub disable_host_loopback: bool,
    /// `--userns-path`.
    pub userns_path: Option<PathBuf>,
    /// `--enable-sandbox` (or the deprecated `--create-sandbox`).
    pub enable_sandbox: bool,
    /// `--enable-seccomp`.
    pub enable_seccomp: bool,
    /// `--outbound-addr`.
    pub outbound_addr: Option<String>,
    /// `--outbound-addr6`.
    pub outbound_addr6: Option<String>,
    /// `--disable-dns`.
    pub disable_dns: bool,
    /// `--macaddress`.
    pub macaddress: Option<String>,
    /// `-p/--publish` specs, in order.
    pub publish: Vec<String>,
    /// `--debug`: verbose logging.
    pub debug: bool,
    /// `--disable-offload`: plain frames on the tap, no TSO/checksum offload.
    pub disable_offload: bool,
    /// `--busy-poll=USEC`, already range-checked.
    pub busy_poll_us: Option<u32>,
    /// `--splice-forwards`: relay port forwards from loopback clients inside the namespace.
    pub splice_forwards: bool,
    /// `--auto-forward=tcp,udp` (hidden): follow the namespace's listeners, as pasta's `auto`.
    pub auto_forward: AutoForward,
    /// The namespace to attach to (positional PID|PATH|FD with `--netns-type`). `None` for `run`.
    pub target: Option<Target>,
    /// The egress policy options (`--allow`, `--deny`, `--policy-file`, ...), in order.
    pub policy: crate::policy::Spec,
    /// Positional TAPNAME, untruncated ([`Config::from_options`] truncates it to 15 bytes).
    pub tap_name: Option<String>,
}

/// The validated configuration. Built once, then borrowed immutably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Namespace to attach to; `None` when `tapir run` makes its own.
    pub target: Option<Target>,
    /// User namespace to join before the network namespace (`--userns-path`).
    pub userns_path: Option<PathBuf>,
    /// Tap device name inside the namespace.
    pub tap_name: String,
    /// Bring the interface up and address it (§3.3 of the spec).
    pub configure: bool,
    /// MTU of the tap and of the stack.
    pub mtu: u32,
    /// The virtual IPv4 network.
    pub net: Network,
    /// Whether the IPv6 side (fd00::/64, or `--cidr6`) is enabled.
    pub ipv6: bool,
    /// MAC address to give the tap (`--macaddress`, only with `--configure`).
    pub mac: Option<[u8; 6]>,
    /// Fd to write the ready byte to.
    pub ready_fd: Option<RawFd>,
    /// Fd whose hang-up ends the process.
    pub exit_fd: Option<RawFd>,
    /// API socket path.
    pub api_socket: Option<PathBuf>,
    /// Refuse connections to the gateway (host loopback).
    pub disable_host_loopback: bool,
    /// Do not intercept N+3 as a DNS proxy.
    pub disable_dns: bool,
    /// Confine the process in a private mount namespace and drop capabilities.
    pub enable_sandbox: bool,
    /// Install the seccomp allowlist.
    pub enable_seccomp: bool,
    /// Source address for outbound IPv4 host sockets.
    pub outbound_addr: Option<Outbound<Ipv4Addr>>,
    /// Source address for outbound IPv6 host sockets.
    pub outbound_addr6: Option<Outbound<Ipv6Addr>>,
    /// Port forwards requested on the command line (`-p`), validated.
    pub publish: Vec<forward::ForwardSpec>,
    /// Verbose logging.
    pub debug: bool,
    /// Use tap offloads (`IFF_VNET_HDR`, TSO and checksum offload) unless `--disable-offload`.
    pub offload: bool,
    /// Longest busy-poll before sleeping, in microseconds (0: never spin).
    pub busy_poll_us: u32,
    /// Splice TCP port-forward connections from loopback clients to a socket inside the
    /// namespace ([`crate::proxy::splice`]).
    pub splice_forwards: bool,
    /// The IPv6 side of the network (used when `ipv6`).
    pub net6: Network6,
    /// Whether IPv4 is served (pasta's `--ipv6-only` turns it off).
    pub ipv4: bool,
    /// Which built-in services answer the guest (pasta's `--no-dhcp`, `--no-ndp`, `--no-ra`,
    /// `--no-dhcpv6`, `--no-icmp`).
    pub services: Services,
    /// DNS servers announced by DHCP, DHCPv6 and router advertisements instead of the DNS
    /// forwarding address (pasta's `-D`); empty: the forwarding address.
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Search domains announced by DHCP (pasta's `-S`).
    pub dns_search: Vec<String>,
    /// How the process runs: daemon, pid file, quiet banner, namespace watch.
    pub process: Process,
    /// Forward every port the guest listens on (pasta's `-t auto` / `-u auto`).
    pub auto_forward: AutoForward,
    /// The egress policy ([`crate::policy`]).
    pub policy: crate::policy::Spec,
}

/// Built-in services of the virtual hosts; all on by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    /// DHCPv4 server.
    pub dhcp: bool,
    /// Neighbour discovery answers (NDP).
    pub ndp: bool,
    /// Router advertisements.
    pub ra: bool,
    /// Stateless DHCPv6.
    pub dhcpv6: bool,
    /// ICMP echo proxying and answers.
    pub icmp: bool,
}

impl Default for Services {
    fn default() -> Self {
        Services {
            dhcp: true,
            ndp: true,
            ra: true,
            dhcpv6: true,
            icmp: true,
        }
    }
}

/// The process contract (pasta's daemon mode, `--pid`, `--quiet`, namespace watch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// Fork into the background once ready; the parent's exit 0 means ready.
    pub daemonize: bool,
    /// Write the serving process's PID here.
    pub pid_file: Option<PathBuf>,
    /// No banner on stderr (warnings and errors still print).
    pub quiet: bool,
    /// Log to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// Exit when this network-namespace file is deleted (podman unmounts and removes it when
    /// the container goes).
    pub netns_file: Option<PathBuf>,
    /// Bring the namespace's loopback interface up even without `configure` (pasta does).
    pub loopback_up: bool,
}

/// Automatic forwarding of the guest's listening ports (pasta's `auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AutoForward {
    /// TCP listeners in the namespace get a host listener on the same port.
    pub tcp: bool,
    /// UDP sockets (and, as pasta does, TCP listeners' port numbers) get a bound host socket.
    pub udp: bool,
}

/// Default `--busy-poll`: off. Spinning bought round-trip time with a core while request/response
/// traffic lasted; since each exchange costs one frame to the guest instead of two (delayed ACK
/// of small segments, `proxy::tcp::SMALL_DATA`), tapir's round trip without it is under half
/// of slirp4netns's at about slirp4netns's CPU, and the spin measured no faster on a 2-vCPU VM
/// (benches/README.md). It stays an opt-in for latency-critical users. See `runtime::BusyPoll`.
pub const DEFAULT_BUSY_POLL_US: u32 = 0;
/// Largest `--busy-poll`: beyond a millisecond, sleeping is cheaper than any spin saves.
pub const MAX_BUSY_POLL_US: u32 = 1000;

/// Longest tap name the kernel keeps (IFNAMSIZ - 1); slirp4netns truncates silently.
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest `sun_path` (108 bytes including the terminating NUL).
pub const MAX_UNIX_PATH_LEN: usize = 107;

fn parse_outbound<A: std::str::FromStr>(
    s: &str,
    err: ConfigError,
) -> Result<Outbound<A>, ConfigError> {
    if let Ok(a) = s.parse::<A>() {
        return Ok(Outbound::Addr(a));
    }
    // An interface name: what the kernel accepts (1..=15 bytes, no '/', no whitespace).
    let valid = !s.is_empty()
        && s.len() <= MAX_IFNAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if valid {
        Ok(Outbound::Interface(s.to_owned()))
    } else {
        Err(err)
    }
}

impl Config {
    /// Validate `opts` and derive the network. `run_mode` selects `tapir run`'s defaults.
    pub fn from_options(opts: Options, run_mode: bool) -> Result<Config, ConfigError> {
        if run_mode && opts.userns_path.is_some() {
            return Err(ConfigError::NotForRun("--userns-path"));
        }
        let net = match &opts.cidr {
            Some(c) => Network::parse_cidr(c)?,
            None => Network::default(),
        };
        let net6 = match &opts.cidr6 {
            Some(c) => Network6::parse_prefix(c)?,
            None => Network6::default(),
        };
        let mac = opts.macaddress.as_deref().map(parse_mac).transpose()?;
        let outbound_addr = opts
            .outbound_addr
            .as_deref()
            .map(|s| parse_outbound(s, ConfigError::OutboundAddr))
            .transpose()?;
        let outbound_addr6 = opts
            .outbound_addr6
            .as_deref()
            .map(|s| parse_outbound(s, ConfigError::OutboundAddr6))
            .transpose()?;
        if let Some(p) = &opts.api_socket {
            if p.as_os_str().len() > MAX_UNIX_PATH_LEN {
                return Err(ConfigError::ApiSocketPathTooLong);
            }
        }
        let mut tap_name = opts.tap_name.unwrap_or_else(|| "tap0".to_owned());
        if tap_name.len() > MAX_IFNAME_LEN {
            let mut end = MAX_IFNAME_LEN;
            while !tap_name.is_char_boundary(end) {
                end -= 1;
            }
            tap_name.truncate(end);
        }
        Ok(Config {
            target: opts.target,
            userns_path: opts.userns_path,
            tap_name,
            configure: opts.configure || run_mode,
            mtu: opts.mtu.unwrap_or(if run_mode {
                RUN_DEFAULT_MTU
            } else {
                DEFAULT_MTU
            }),
            net,
            ipv6: opts.enable_ipv6,
            mac,
            ready_fd: opts.ready_fd,
            exit_fd: opts.exit_fd,
            api_socket: opts.api_socket,
            disable_host_loopback: opts.disable_host_loopback,
            disable_dns: opts.disable_dns,
            enable_sandbox: opts.enable_sandbox,
            enable_seccomp: opts.enable_seccomp,
            outbound_addr,
            outbound_addr6,
            publish: opts
                .publish
                .iter()
                .map(|p| {
                    let f = forward::parse_publish(p, &net)?;
                    forward::check_guest(&f, opts.enable_ipv6.then_some(&net6))
                        .map_err(|why| ConfigError::Publish(p.clone(), why.to_owned()))?;
                    Ok(f)
                })
                .collect::<Result<_, ConfigError>>()?,
            debug: opts.debug,
            offload: !opts.disable_offload,
            busy_poll_us: opts.busy_poll_us.unwrap_or(DEFAULT_BUSY_POLL_US),
            splice_forwards: opts.splice_forwards,
            net6: Network6 {
                dns_enabled: !opts.disable_dns,
                ..net6
            },
            ipv4: true,
            services: Services::default(),
            dns_servers: Vec::new(),
            dns_search: Vec::new(),
            process: Process::default(),
            auto_forward: opts.auto_forward,
            policy: opts.policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_network_addresses() {
        let n = Network::default();
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(n.dns(), Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(n.dhcp_start(), Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(n.dhcp_end(), Ipv4Addr::new(10, 0, 2, 30));
        assert_eq!(n.guest(), Ipv4Addr::new(10, 0, 2, 100));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 0, 2, 255));
        assert!(n.contains(Ipv4Addr::new(10, 0, 2, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 0, 3, 1)));
    }

    #[test]
    fn cidr_slash25_from_spec() {
        let n = Network::parse_cidr("10.0.135.128/25").unwrap();
        assert_eq!(n.guest(), Ipv4Addr::new(10, 0, 135, 228));
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 0, 135, 130));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 128));
    }

    #[test]
    fn cidr_errors_match_slirp4netns() {
        use ConfigError::*;
        assert_eq!(Network::parse_cidr("24"), Err(InvalidCidr("24".into())));
        assert_eq!(Network::parse_cidr("foo"), Err(InvalidCidr("foo".into())));
        assert_eq!(
            Network::parse_cidr("10.0.2.0"),
            Err(InvalidCidr("10.0.2.0".into()))
        );
        assert_eq!(
            Network::parse_cidr("1.2.3.4/123"),
            Err(InvalidCidr("1.2.3.4/123".into()))
        );
        assert_eq!(
            Network::parse_cidr("10.0.2.256/24"),
            Err(InvalidNetworkAddress("10.0.2.256".into()))
        );
        assert_eq!(Network::parse_cidr("10.0.2.0/26"), Err(PrefixLength));
        assert_eq!(Network::parse_cidr("10.0.2.0/0"), Err(PrefixLength));
        assert_eq!(
            Network::parse_cidr("10.0.2.100/24")
                .unwrap_err()
                .to_string(),
            "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"
        );
        assert!(Network::parse_cidr("10.0.0.0/8").is_ok());
        assert!(Network::parse_cidr("128.0.0.0/1").is_ok());
    }

    #[test]
    fn cidr6_derives_addresses() {
        let n = Network6::parse_prefix("fd12:3456:789a:1::/64").unwrap();
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(n.prefix, a("fd12:3456:789a:1::"));
        assert_eq!(n.prefix_len, 64);
        assert_eq!(n.gateway, a("fd12:3456:789a:1::2"));
        assert_eq!(n.dns, a("fd12:3456:789a:1::3"));
        assert_eq!(n.loopback_alias, Some(a("fd12:3456:789a:1::2")));
        assert_eq!(n.router_ll, ipv6::ROUTER_LL);
        assert!(n.virtual_subnet && n.dns_enabled && n.guest.is_none());
        assert!(n.contains(a("fd12:3456:789a:1:5054:ff:fe12:3456")));
        assert!(!n.contains(a("fd00::2")));
        // The default network is what fd00::/64 derives.
        assert_eq!(
            Network6::parse_prefix("fd00::/64").unwrap(),
            Network6::default()
        );
        assert!(Network6::parse_prefix("2001:db8:1:2::/64").is_ok());
    }

    #[test]
    fn cidr6_errors() {
        let why = |s: &str| match Network6::parse_prefix(s) {
            Err(ConfigError::InvalidPrefix6(v, why)) => {
                assert_eq!(v, s);
                why
            }
            other => panic!("{s}: {other:?}"),
        };
        assert!(why("fd00::").contains("PREFIX/64"));
        assert!(why("fd00::/48").contains("must be 64"));
        assert!(why("fd00::/064").contains("must be 64"));
        assert!(why("fd00::/").contains("must be 64"));
        assert!(why("fd00::1/64").contains("host bits"));
        assert!(why("fd00::0:1:0/64").contains("host bits"));
        assert!(why("ff02::/64").contains("multicast"));
        assert!(why("fe80::/64").contains("link-local"));
        assert!(why("febf:1::/64").contains("link-local"));
        assert!(why("::/64").contains("::/64"));
        assert!(why("10.0.2.0/64").contains("IPv4"));
        assert!(why("10.0.2.0/24").contains("IPv4"));
        assert!(why("fd00:::/64").contains("not an IPv6"));
        assert!(why("[fd00::]/64").contains("not an IPv6"));
        assert_eq!(
            Network6::parse_prefix("fe80::/64").unwrap_err().to_string(),
            "invalid --cidr6 \"fe80::/64\": a link-local prefix"
        );
        // Through the options, -6 or not.
        let o = Options {
            cidr6: Some("fd00:1::/64".into()),
            disable_dns: true,
            ..Default::default()
        };
        let c = Config::from_options(o, true).unwrap();
        assert_eq!(c.net6.gateway, "fd00:1::2".parse::<Ipv6Addr>().unwrap());
        assert!(!c.net6.dns_enabled);
        let bad = Options {
            cidr6: Some("fd00:1::/56".into()),
            ..Default::default()
        };
        assert!(Config::from_options(bad, false).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            mac_for_v4(Ipv4Addr::new(10, 0, 2, 2)),
            [0x52, 0x55, 10, 0, 2, 2]
        );
        assert_eq!(mac_for_v6(ipv6::GATEWAY), [0x52, 0x56, 0, 0, 0, 2]);
        assert_eq!(
            parse_mac("0e:d4:18:d9:38:fb").unwrap(),
            [0x0e, 0xd4, 0x18, 0xd9, 0x38, 0xfb]
        );
        assert_eq!(parse_mac("2:4").unwrap(), [2, 4, 0, 0, 0, 0]);
        assert!(parse_mac("01:00:5e:00:00:01").is_err(), "multicast");
        assert!(parse_mac("0e:d4:18:d9:38:fb:00").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
        assert!(parse_mac("100:00:00:00:00:00").is_err());
        assert_eq!(
            format_mac(&[0x0e, 0xd4, 0x18, 0xd9, 0x38, 0xfb]),
            "0e:d4:18:d9:38:fb"
        );
    }

    #[test]
    fn from_options_defaults_and_truncation() {
        let o = Options {
            tap_name: Some("averyveryverylongname".into()),
            ..Default::default()
        };
        let c = Config::from_options(o.clone(), false).unwrap();
        assert_eq!(c.tap_name, "averyveryverylo");
        assert_eq!(c.mtu, DEFAULT_MTU);
        assert!(!c.configure);
        let r = Config::from_options(o, true).unwrap();
        assert_eq!(r.mtu, RUN_DEFAULT_MTU);
        assert!(r.configure);
    }

    #[test]
    fn outbound_parse() {
        let o = Options {
            outbound_addr: Some("127.0.0.1".into()),
            outbound_addr6: Some("eth0".into()),
            ..Default::default()
        };
        let c = Config::from_options(o, false).unwrap();
        assert_eq!(c.outbound_addr, Some(Outbound::Addr(Ipv4Addr::LOCALHOST)));
        assert_eq!(c.outbound_addr6, Some(Outbound::Interface("eth0".into())));
        let bad = Options {
            outbound_addr: Some("no/such/if".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_options(bad, false).unwrap_err().to_string(),
            "outbound-addr has to be valid ipv4 address or interface name."
        );
    }
}
