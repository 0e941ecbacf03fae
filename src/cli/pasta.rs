//! pasta mode: pasta's command line (passt 2025_05_03), parsed into [`PastaOptions`].
//!
//! # Theory of operation
//!
//! podman 5+ and rootlesskit 2 run tapir as their `pasta`, so the command line is parsed the
//! way pasta's `conf()` parses it: `getopt_long` with the optstring
//! `+dqfel:hs:F:I:p:P:m:a:n:M:g:i:o:D:S:H:461t:u:T:U:` and pasta's `longopts` ([`TABLE`], in
//! pasta's order, so ambiguity messages list the possibilities as pasta does). The leading `+`
//! means no permutation: options end at the first operand (or `--`), and everything from there
//! on is the PID or a COMMAND.
//!
//! Mode selection is pasta's own rule plus a subcommand ([`is_pasta`]): the basename of
//! argv\[0\] contains `pasta`, or argv\[1\] is exactly `pasta`. Diagnostics start with argv\[0\]
//! as given either way; the usage text names `ARGV0` or `ARGV0 pasta`.
//!
//! pasta reads its options in three passes, and the order of its errors follows them; so does
//! this parser:
//!
//! 1. every option but `-t -u -D -T -U`, in argv order, each checked at once with pasta's
//!    message (`Invalid address: X`, `MTU N too large (max 65521)`, ...). `-h`/`--help` and
//!    `--version` end parsing where they stand, so `--version --bad` prints the version but
//!    `--host-lo-to-ns-lo --version` fails (rootlesskit 2.3.2 takes exit 0 of exactly that probe
//!    to mean "supported");
//! 2. `-t`, `-u` and `-D`, in argv order (`config::portspec::add` for the port specifications);
//! 3. the operands: one operand that reads fully as a C `long` is the PID; `--netns` with any
//!    operand is an error; any other operand list is a COMMAND, which tapir does not spawn;
//! 4. `-T` and `-U`.
//!
//! pasta's own errors (everything but getopt's) are bare text without a program prefix, and
//! no usage follows them ([`CliError::plain`]); getopt's errors are followed by the usage on
//! stderr (`ARGV0: unrecognized option '--foo'`, which podman greps for). Warnings pasta prints
//! while parsing (`--stderr will be dropped soon`) are returned as lines for stderr; when an
//! error follows them they are prepended to its message, so the output is pasta's in order.
//!
//! Every option pasta knows is in the table, so getopt consumes its argument as pasta would,
//! but tapir implements only those with a [`PastaOptions`] field (plus `--trace`, which is
//! `--debug` here). Every other one is refused as soon as it is met with
//! `tapir: pasta option --NAME is not supported`, exit 1: silently ignoring an option would make
//! a client believe in a feature tapir lacks.
//!
//! tapir's own long options (`--map-gw`, which podman documents as a pasta option but pasta
//! lacks; `--no-sandbox`; `--api-socket`; the egress policy's `--allow`, `--deny`,
//! `--policy-file`, `--deny-private`, `--default-deny`, `--deny-icmp-reply`,
//! `--no-user-policy`) are matched exactly, or by a prefix that matches none
//! of pasta's options, so every abbreviation pasta accepts resolves as in pasta.
//!
//! Deliberate differences from pasta:
//! - `-n` must be a dotted netmask or a whole number 0-32 (pasta reads `-n 24x` as 24 and
//!   `-n foo` as 0);
//! - `-g` also rejects multicast addresses;
//! - `-i` is checked for length here; whether the interface exists is `app`'s business;
//! - a PID of 0 is refused (`Invalid PID 0`), as no process has it;
//! - values kept as `String` (interface names, search domains) must be valid UTF-8.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::getopt::{long, short, Found, Getopt, LongOpt, ShortOpt, Spelling, Table};
use super::policy::PolicyOpt;
use super::{parse_c_long, CliError, Command};
use crate::config::pasta::{AddrOpt, Family, PastaOptions, PortSpec};
use crate::config::{portspec, MAX_IFNAME_LEN};

/// Every option of pasta's table, and tapir's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Debug,
    Quiet,
    Foreground,
    Stderr,
    LogFile,
    Help,
    NsIfname,
    PidFile,
    Mtu,
    Address,
    Netmask,
    Gateway,
    Interface,
    Outbound,
    Dns,
    Search,
    NoIcmp,
    NoDhcp,
    NoDhcpv6,
    NoNdp,
    NoRa,
    NoSplice,
    NoMapGw,
    Ipv4Only,
    Ipv6Only,
    TcpPorts,
    UdpPorts,
    TcpNs,
    UdpNs,
    Userns,
    Netns,
    NsMacAddr,
    DnsForward,
    NoNetnsQuit,
    Trace,
    Version,
    ConfigNet,
    MapHostLoopback,
    MapGuestAddr,
    /// tapir's: `--map-gw` (undoes `--no-map-gw`).
    MapGw,
    /// tapir's: `--no-sandbox`.
    NoSandbox,
    /// tapir's: `--api-socket PATH`.
    ApiSocket,
    /// tapir's: the egress policy options (`--allow`, `--deny`, ...).
    Policy(super::policy::PolicyOpt),
    /// Known to pasta, not implemented by tapir: refused when met. The name is the option's
    /// first long name, so `--socket` and `--socket-path` are one option, as in pasta.
    Unsupported(&'static str),
}

use Opt::Unsupported as No;

/// pasta's `longopts`, in its order (conf.c), with `flag`/`val` collapsed into [`Opt`].
const LONG_OPTIONS: &[LongOpt<Opt>] = &[
    long("debug", false, Opt::Debug),
    long("quiet", false, Opt::Quiet),
    long("foreground", false, Opt::Foreground),
    long("stderr", false, Opt::Stderr),
    long("log-file", true, Opt::LogFile),
    long("help", false, Opt::Help),
    long("socket", true, No("socket")),
    long("fd", true, No("fd")),
    long("ns-ifname", true, Opt::NsIfname),
    long("pcap", true, No("pcap")),
    long("pid", true, Opt::PidFile),
    long("mtu", true, Opt::Mtu),
    long("address", true, Opt::Address),
    long("netmask", true, Opt::Netmask),
    long("mac-addr", true, No("mac-addr")),
    long("gateway", true, Opt::Gateway),
    long("interface", true, Opt::Interface),
    long("outbound", true, Opt::Outbound),
    long("dns", true, Opt::Dns),
    long("search", true, Opt::Search),
    long("hostname", true, No("hostname")),
    long("no-tcp", false, No("no-tcp")),
    long("no-udp", false, No("no-udp")),
    long("no-icmp", false, Opt::NoIcmp),
    long("no-dhcp", false, Opt::NoDhcp),
    long("no-dhcpv6", false, Opt::NoDhcpv6),
    long("no-ndp", false, Opt::NoNdp),
    long("no-ra", false, Opt::NoRa),
    long("no-splice", false, Opt::NoSplice),
    long("freebind", false, No("freebind")),
    long("no-map-gw", false, Opt::NoMapGw),
    long("ipv4-only", false, Opt::Ipv4Only),
    long("ipv6-only", false, Opt::Ipv6Only),
    long("one-off", false, No("one-off")),
    long("tcp-ports", true, Opt::TcpPorts),
    long("udp-ports", true, Opt::UdpPorts),
    long("tcp-ns", true, Opt::TcpNs),
    long("udp-ns", true, Opt::UdpNs),
    long("userns", true, Opt::Userns),
    long("netns", true, Opt::Netns),
    long("ns-mac-addr", true, Opt::NsMacAddr),
    long("dhcp-dns", false, No("dhcp-dns")),
    long("no-dhcp-dns", false, No("no-dhcp-dns")),
    long("dhcp-search", false, No("dhcp-search")),
    long("no-dhcp-search", false, No("no-dhcp-search")),
    long("dns-forward", true, Opt::DnsForward),
    long("no-netns-quit", false, Opt::NoNetnsQuit),
    long("trace", false, Opt::Trace),
    long("runas", true, No("runas")),
    long("log-size", true, No("log-size")),
    long("version", false, Opt::Version),
    long("outbound-if4", true, No("outbound-if4")),
    long("outbound-if6", true, No("outbound-if6")),
    long("config-net", false, Opt::ConfigNet),
    long("no-copy-routes", false, No("no-copy-routes")),
    long("no-copy-addrs", false, No("no-copy-addrs")),
    long("netns-only", false, No("netns-only")),
    long("map-host-loopback", true, Opt::MapHostLoopback),
    long("map-guest-addr", true, Opt::MapGuestAddr),
    long("host-lo-to-ns-lo", false, No("host-lo-to-ns-lo")),
    long("dns-host", true, No("dns-host")),
    long("vhost-user", false, No("vhost-user")),
    long("print-capabilities", false, No("print-capabilities")),
    long("socket-path", true, No("socket")),
    long("fqdn", true, No("fqdn")),
    long("repair-path", true, No("repair-path")),
];

/// tapir's own long options in pasta mode.
const EXTRA_OPTIONS: &[LongOpt<Opt>] = &[
    long("map-gw", false, Opt::MapGw),
    long("no-sandbox", false, Opt::NoSandbox),
    long("api-socket", true, Opt::ApiSocket),
    long("allow", true, Opt::Policy(PolicyOpt::Allow)),
    long("deny", true, Opt::Policy(PolicyOpt::Deny)),
    long("policy-file", true, Opt::Policy(PolicyOpt::File)),
    long("deny-private", false, Opt::Policy(PolicyOpt::DenyPrivate)),
    long("default-deny", false, Opt::Policy(PolicyOpt::DefaultDeny)),
    long(
        "deny-icmp-reply",
        false,
        Opt::Policy(PolicyOpt::DenyIcmpReply),
    ),
    long(
        "no-user-policy",
        false,
        Opt::Policy(PolicyOpt::NoUserPolicy),
    ),
];

/// pasta's optstring `dqfel:hs:F:I:p:P:m:a:n:M:g:i:o:D:S:H:461t:u:T:U:` (the `+` is the
/// scanner's `permute: false`).
const SHORT_OPTIONS: &[ShortOpt<Opt>] = &[
    short(b'd', false, Opt::Debug),
    short(b'q', false, Opt::Quiet),
    short(b'f', false, Opt::Foreground),
    short(b'e', false, Opt::Stderr),
    short(b'l', true, Opt::LogFile),
    short(b'h', false, Opt::Help),
    short(b's', true, No("socket")),
    short(b'F', true, No("fd")),
    short(b'I', true, Opt::NsIfname),
    short(b'p', true, No("pcap")),
    short(b'P', true, Opt::PidFile),
    short(b'm', true, Opt::Mtu),
    short(b'a', true, Opt::Address),
    short(b'n', true, Opt::Netmask),
    short(b'M', true, No("mac-addr")),
    short(b'g', true, Opt::Gateway),
    short(b'i', true, Opt::Interface),
    short(b'o', true, Opt::Outbound),
    short(b'D', true, Opt::Dns),
    short(b'S', true, Opt::Search),
    short(b'H', true, No("hostname")),
    short(b'4', false, Opt::Ipv4Only),
    short(b'6', false, Opt::Ipv6Only),
    short(b'1', false, No("one-off")),
    short(b't', true, Opt::TcpPorts),
    short(b'u', true, Opt::UdpPorts),
    short(b'T', true, Opt::TcpNs),
    short(b'U', true, Opt::UdpNs),
];

/// pasta's option table for the getopt engine.
static TABLE: Table<Opt> = Table {
    long: LONG_OPTIONS,
    extra: EXTRA_OPTIONS,
    short: SHORT_OPTIONS,
};

/// pasta's largest MTU (65535 minus the Ethernet header's 14, rounded down to 4, plus 4: the
/// number its message prints).
pub const PASTA_MAX_MTU: u64 = 65521;
/// `PATH_MAX`, which bounds pasta's path options.
const PATH_MAX: usize = 4096;
/// pasta's `MAXDNSRCH`: at most this many `-S` domains.
const MAX_SEARCH: usize = 6;
/// Longest `-S` domain (`PASST_MAXDNAME` less the terminating NUL).
const MAX_DOMAIN_LEN: usize = 253;
/// The directory of a `--netns NAME` without `/` (iproute2's `NETNS_RUN_DIR`).
const NETNS_RUN_DIR: &str = "/run/netns";

/// The warning pasta prints for `-e/--stderr`.
pub const WARN_STDERR: &str = "--stderr will be dropped soon";

/// The basename of argv\[0\] contains `pasta` (pasta's `strstr` rule).
fn named_pasta(argv: &[OsString]) -> bool {
    argv.first().is_some_and(|a| {
        let bytes = a.as_bytes();
        let base = bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        base.windows(5).any(|w| w == b"pasta")
    })
}

/// Whether `argv` is a pasta-mode command line: the basename of argv\[0\] contains `pasta`, or
/// argv\[1\] is exactly `pasta`.
pub fn is_pasta(argv: &[OsString]) -> bool {
    args(argv).is_some()
}

/// The pasta-mode arguments after argv\[0\] (and after `pasta` for `tapir pasta ...`), or
/// `None` if `argv` is not a pasta-mode command line.
pub(super) fn args(argv: &[OsString]) -> Option<&[OsString]> {
    if named_pasta(argv) {
        argv.get(1..)
    } else if argv.get(1).is_some_and(|a| a == "pasta") {
        argv.get(2..)
    } else {
        None
    }
}

/// The `--help` text in pasta mode (for [`Command::PastaHelp`], and on stderr after a getopt
/// error). Ends with a newline.
pub fn pasta_usage(argv: &[OsString]) -> String {
    let argv0 = argv.first().map(|a| a.to_string_lossy().into_owned());
    let argv0 = argv0.as_deref().unwrap_or("pasta");
    let p = if named_pasta(argv) {
        argv0.to_owned()
    } else {
        format!("{argv0} pasta")
    };
    format!(
        "Usage: {p} [OPTION]... [PID]\n\
         \x20      {p} [OPTION]... --netns [PATH|NAME]\n\
         \n\
         Connect the network namespace of process PID, or the one at PATH (or at\n\
         /run/netns/NAME), to the host through tapir, a userspace network stack that\n\
         takes pasta's options. Options end at the first argument that is not one.\n\
         tapir does not start a COMMAND in this mode (use 'tapir run' for that).\n\
         \n\
         \x20 -d, --debug                debug messages on stderr (--trace: the same)\n\
         \x20 -q, --quiet                only warnings and errors\n\
         \x20 -f, --foreground           stay in the foreground (default: detach when ready)\n\
         \x20 -e, --stderr               accepted and ignored (deprecated in pasta)\n\
         \x20 -l, --log-file PATH        log to PATH\n\
         \x20 -P, --pid FILE             write the serving process's PID to FILE\n\
         \x20 -m, --mtu MTU              tap MTU, 0 to leave it (default 65520, max {max_mtu})\n\
         \x20 -a, --address ADDR         guest IPv4 and/or IPv6 address (default: the host's)\n\
         \x20 -n, --netmask MASK         IPv4 netmask, dotted or prefix length\n\
         \x20 -g, --gateway ADDR         IPv4 and/or IPv6 gateway (default: the host's)\n\
         \x20 -i, --interface NAME       host interface to copy addresses and routes from\n\
         \x20 -I, --ns-ifname NAME       tap name in the namespace (default: the template's)\n\
         \x20 -o, --outbound ADDR        source address of outbound connections\n\
         \x20 -4, --ipv4-only            IPv4 only\n\
         \x20 -6, --ipv6-only            IPv6 only\n\
         \x20 -D, --dns ADDR|none        DNS server to advertise (repeatable)\n\
         \x20 -S, --search DOMAIN|none   DNS search domain to advertise (repeatable)\n\
         \x20     --dns-forward ADDR     guest DNS traffic to ADDR goes to the host's resolver\n\
         \x20     --map-host-loopback ADDR|none  guest traffic to ADDR goes to host loopback\n\
         \x20     --map-guest-addr ADDR|none     guest traffic to ADDR goes to the host at\n\
         \x20                                    the guest's own address\n\
         \x20     --no-map-gw            do not map the gateway to host loopback\n\
         \x20     --map-gw               map it (the default)\n\
         \x20     --no-dhcp, --no-ndp, --no-ra, --no-dhcpv6, --no-icmp\n\
         \x20                            disable that service\n\
         \x20     --config-net           configure the tap: link, addresses, routes, MTU\n\
         \x20     --ns-mac-addr MAC      tap MAC address\n\
         \x20 -t, --tcp-ports SPEC       host to namespace TCP forwards: none, auto or ports\n\
         \x20 -u, --udp-ports SPEC       host to namespace UDP forwards\n\
         \x20 -T, --tcp-ns SPEC          namespace to host TCP forwards\n\
         \x20 -U, --udp-ns SPEC          namespace to host UDP forwards\n\
         \x20     --userns PATH          user namespace to join\n\
         \x20     --netns PATH|NAME      network namespace to serve\n\
         \x20     --no-netns-quit        keep running when the namespace goes away\n\
         \x20     --no-splice            no loopback splicing of forwarded connections\n\
         \x20     --no-sandbox           tapir: no mount namespace, no seccomp filter\n\
         \x20     --api-socket PATH      tapir: slirp4netns-style API socket\n\
         \x20     --no-user-policy       tapir: skip ~/.config/tapir/policy (egress rules)\n\
         \x20 -h, --help                 show this help and exit\n\
         \x20     --version              show the version and exit\n\
         \n\
         pasta's other options are refused with an error.\n",
        max_mtu = PASTA_MAX_MTU,
    )
}

/// The `--version` text in pasta mode. Ends with a newline.
pub fn pasta_version() -> String {
    format!(
        "{} {} (pasta-compatible mode)\n",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    )
}

/// A value as pasta's messages print it.
fn shown(s: &OsStr) -> std::borrow::Cow<'_, str> {
    s.to_string_lossy()
}

/// `inet_pton(AF_INET6)` then `inet_pton(AF_INET)`, as pasta tries them.
fn inet(s: &OsStr) -> Option<IpAddr> {
    s.to_str()?.parse().ok()
}

/// IPv4 addresses pasta never accepts as a host address: unspecified and broadcast.
fn v4_unusable(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_broadcast()
}

/// IPv6 `IN6_IS_ADDR_V4MAPPED` or `IN6_IS_ADDR_V4COMPAT`.
fn v6_embeds_v4(a: Ipv6Addr) -> bool {
    let s = a.segments();
    s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && u128::from(a) > 1))
}

/// `-a`: a unicast address of the guest.
fn address(s: &OsStr) -> Result<IpAddr, String> {
    match inet(s) {
        Some(IpAddr::V6(a))
            if !a.is_unspecified() && !a.is_loopback() && !v6_embeds_v4(a) && !a.is_multicast() =>
        {
            Ok(IpAddr::V6(a))
        }
        Some(IpAddr::V4(a)) if !v4_unusable(a) && !a.is_loopback() && !a.is_multicast() => {
            Ok(IpAddr::V4(a))
        }
        _ => Err(format!("Invalid address: {}", shown(s))),
    }
}

/// `-g`: the guest's gateway.
fn gateway(s: &OsStr) -> Result<IpAddr, String> {
    match inet(s) {
        Some(IpAddr::V6(a)) if !a.is_unspecified() && !a.is_loopback() && !a.is_multicast() => {
            Ok(IpAddr::V6(a))
        }
        Some(IpAddr::V4(a)) if !v4_unusable(a) && !a.is_loopback() && !a.is_multicast() => {
            Ok(IpAddr::V4(a))
        }
        _ => Err(format!("Invalid gateway address: {}", shown(s))),
    }
}

/// `-o`: an outbound source address (loopback allowed for IPv4, as in pasta).
fn outbound(s: &OsStr) -> Result<IpAddr, String> {
    match inet(s) {
        Some(IpAddr::V6(a))
            if !a.is_unspecified() && !a.is_loopback() && !v6_embeds_v4(a) && !a.is_multicast() =>
        {
            Ok(IpAddr::V6(a))
        }
        Some(IpAddr::V4(a)) if !v4_unusable(a) && !a.is_multicast() => Ok(IpAddr::V4(a)),
        _ => Err(format!(
            "Invalid or redundant outbound address: {}",
            shown(s)
        )),
    }
}

/// `--dns-forward`: anything but unspecified, loopback and IPv4 broadcast.
fn dns_forward(s: &OsStr) -> Result<IpAddr, String> {
    match inet(s) {
        Some(IpAddr::V6(a)) if !a.is_unspecified() && !a.is_loopback() => Ok(IpAddr::V6(a)),
        Some(IpAddr::V4(a)) if !v4_unusable(a) && !a.is_loopback() => Ok(IpAddr::V4(a)),
        _ => Err(format!("Invalid DNS forwarding address: {}", shown(s))),
    }
}

/// `--map-host-loopback` / `--map-guest-addr` (pasta's `conf_nat`): `none`, or an address that
/// is not unspecified, loopback or multicast.
fn nat(target: &mut AddrOpt, s: &OsStr) -> Result<(), String> {
    if s == "none" {
        *target = AddrOpt::None;
        return Ok(());
    }
    match inet(s) {
        Some(a) if !a.is_unspecified() && !a.is_loopback() && !a.is_multicast() => {
            target.add(a);
            Ok(())
        }
        _ => Err(format!("Invalid address to remap to host: {}", shown(s))),
    }
}

/// `strtoul(s, &end, 0)` with `errno == 0 && *end == '\0'`: optional white space and sign,
/// then hexadecimal after `0x`, octal after `0`, else decimal. A minus sign negates modulo
/// 2^64, as in C. Like `strtoul`, the empty string reads as 0.
fn parse_c_ulong(s: &OsStr) -> Option<u64> {
    let bytes = s.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if rest.is_empty() {
        // No digits: strtoul returns 0 with `end` at the very start of the string (before any
        // white space or sign), which is its end only for the empty string.
        return s.is_empty().then_some(0);
    }
    let (radix, digits) = match rest {
        [b'0', b'x' | b'X', hex @ ..] if hex.first().is_some_and(u8::is_ascii_hexdigit) => {
            (16, hex)
        }
        [b'0', ..] => (8, rest),
        _ => (10, rest),
    };
    let mut n: u64 = 0;
    for &d in digits {
        let d = char::from(d).to_digit(radix)?;
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(if negative { n.wrapping_neg() } else { n })
}

/// `-m`.
fn mtu(s: &OsStr) -> Result<u32, String> {
    let n = parse_c_ulong(s).ok_or_else(|| format!("Invalid MTU: {}", shown(s)))?;
    if n > PASTA_MAX_MTU {
        return Err(format!("MTU {n} too large (max {PASTA_MAX_MTU})"));
    }
    u32::try_from(n).map_err(|_| format!("Invalid MTU: {}", shown(s)))
}

/// `-n`: a dotted netmask with contiguous bits, or a prefix length 0-32.
fn netmask(s: &OsStr) -> Result<u8, String> {
    let bad = || format!("Invalid netmask: {}", shown(s));
    if let Some(mask) = s.to_str().and_then(|t| t.parse::<Ipv4Addr>().ok()) {
        let bits = u32::from(mask);
        let len = bits.leading_ones();
        return if bits.checked_shl(len).unwrap_or(0) == 0 {
            u8::try_from(len).map_err(|_| bad())
        } else {
            Err(bad())
        };
    }
    parse_c_ulong(s)
        .filter(|&n| n <= 32)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(bad)
}

/// An interface name: 1 to 15 bytes of UTF-8.
fn ifname(s: &OsStr) -> Option<String> {
    s.to_str()
        .filter(|t| !t.is_empty() && t.len() <= MAX_IFNAME_LEN)
        .map(str::to_owned)
}

/// A path option that pasta copies into a `PATH_MAX` buffer: not empty, shorter than that.
fn path(s: &OsStr, what: &str) -> Result<PathBuf, String> {
    if s.is_empty() || s.len() >= PATH_MAX {
        return Err(format!("Invalid {what}: {}", shown(s)));
    }
    Ok(PathBuf::from(s))
}

/// `--ns-mac-addr`: exactly `xx:xx:xx:xx:xx:xx`.
fn mac(s: &OsStr) -> Result<[u8; 6], String> {
    let bad = || format!("Invalid MAC address: {}", shown(s));
    let bytes = s.as_bytes();
    if bytes.len() != 17 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        let field = &bytes[3 * i..3 * i + 2];
        let sep = bytes.get(3 * i + 2);
        if !field.iter().all(u8::is_ascii_hexdigit) || !matches!(sep, None | Some(b':')) {
            return Err(bad());
        }
        let text = std::str::from_utf8(field).map_err(|_| bad())?;
        *octet = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// `--netns`: a name without `/` lives in `/run/netns`.
fn netns(s: &OsStr) -> Result<PathBuf, String> {
    let full = if s.as_bytes().contains(&b'/') {
        s.to_os_string()
    } else {
        let mut p = OsString::from(format!("{NETNS_RUN_DIR}/")).into_vec();
        p.extend_from_slice(s.as_bytes());
        OsString::from_vec(p)
    };
    if full.len() > PATH_MAX {
        return Err(format!("Network namespace name/path {} too long", shown(s)));
    }
    Ok(PathBuf::from(full))
}

/// The message for an option tapir knows of but does not implement.
fn unsupported(found: &Found<'_, Opt>) -> String {
    let name = match found.spelling {
        Spelling::Long(name) => format!("--{name}"),
        Spelling::Short(c) => match TABLE.long_name(found.opt) {
            Some(name) => format!("--{name}"),
            None => format!("-{}", char::from(c)),
        },
    };
    format!("tapir: pasta option {name} is not supported")
}

/// What pass 1 makes of one option.
enum Step {
    /// Go on with the next option.
    Next,
    /// `-h`/`--help`: stop here.
    Help,
    /// `--version`: stop here.
    Version,
}

/// The state of the parse: the options so far, the warnings printed so far, and the options
/// pasta reads in its later passes.
struct Parser<'a> {
    o: PastaOptions,
    warnings: Vec<String>,
    /// `-t -u -D -T -U` with their arguments, in argv order.
    later: Vec<(Opt, &'a OsStr)>,
}

impl<'a> Parser<'a> {
    /// An error as pasta would print it at this point: the warnings so far, then `e`.
    fn fail(&self, mut e: CliError) -> CliError {
        if !self.warnings.is_empty() {
            let mut lines = self.warnings.join("\n");
            if !e.message.is_empty() {
                lines.push('\n');
                lines.push_str(&e.message);
            }
            e.message = lines;
        }
        e
    }

    /// Pass 1: act on one option.
    fn first_pass(&mut self, found: Found<'a, Opt>) -> Result<Step, String> {
        let arg = found.arg();
        let o = &mut self.o;
        match found.opt {
            Opt::Debug | Opt::Trace => {
                o.debug = true;
                o.quiet = false;
            }
            Opt::Quiet => {
                o.quiet = true;
                o.debug = false;
            }
            Opt::Foreground => o.foreground = true,
            Opt::Stderr => self.warnings.push(WARN_STDERR.to_owned()),
            Opt::LogFile => o.log_file = Some(PathBuf::from(arg)),
            Opt::Help => return Ok(Step::Help),
            Opt::Version => return Ok(Step::Version),
            Opt::NsIfname => {
                o.ns_ifname = Some(
                    ifname(arg).ok_or_else(|| format!("Invalid interface name: {}", shown(arg)))?,
                );
            }
            Opt::PidFile => o.pid_file = Some(path(arg, "PID file")?),
            Opt::Mtu => o.mtu = Some(mtu(arg)?),
            Opt::Address => o.address.add(address(arg)?),
            Opt::Netmask => o.prefix_len = Some(netmask(arg)?),
            Opt::Gateway => o.gateway.add(gateway(arg)?),
            Opt::Interface => {
                o.interface = Some(ifname(arg).ok_or_else(|| {
                    format!("Invalid interface name {}: No such device", shown(arg))
                })?);
            }
            Opt::Outbound => o.outbound.add(outbound(arg)?),
            Opt::Search => {
                if arg == "none" {
                    o.search.clear();
                } else {
                    let domain = arg
                        .to_str()
                        .filter(|d| !d.is_empty() && d.len() <= MAX_DOMAIN_LEN)
                        .filter(|_| o.search.len() < MAX_SEARCH)
                        .ok_or_else(|| format!("Cannot use DNS search domain {}", shown(arg)))?;
                    o.search.push(domain.to_owned());
                }
            }
            Opt::NoIcmp => o.services.icmp = false,
            Opt::NoDhcp => o.services.dhcp = false,
            Opt::NoDhcpv6 => o.services.dhcpv6 = false,
            Opt::NoNdp => o.services.ndp = false,
            Opt::NoRa => o.services.ra = false,
            Opt::NoSplice => o.no_splice = true,
            Opt::NoMapGw => o.map_gw = Some(false),
            Opt::MapGw => o.map_gw = Some(true),
            Opt::Ipv4Only => o.family = Family::V4Only,
            Opt::Ipv6Only => o.family = Family::V6Only,
            Opt::TcpPorts | Opt::UdpPorts | Opt::TcpNs | Opt::UdpNs | Opt::Dns => {
                self.later.push((found.opt, arg));
            }
            Opt::Userns => o.userns = Some(path(arg, "userns")?),
            Opt::Netns => o.netns = Some(netns(arg)?),
            Opt::NsMacAddr => o.ns_mac = Some(mac(arg)?),
            Opt::DnsForward => o.dns_forward.add(dns_forward(arg)?),
            Opt::NoNetnsQuit => o.no_netns_quit = true,
            Opt::ConfigNet => o.config_net = true,
            Opt::MapHostLoopback => {
                nat(&mut o.map_host_loopback, arg)?;
                if o.map_host_loopback == AddrOpt::None {
                    o.map_gw = Some(false);
                }
            }
            Opt::MapGuestAddr => nat(&mut o.map_guest_addr, arg)?,
            Opt::NoSandbox => o.no_sandbox = true,
            Opt::ApiSocket => o.api_socket = Some(PathBuf::from(arg)),
            Opt::Policy(p) => {
                super::policy::apply(&mut o.policy, p, arg).map_err(|e| e.to_string())?
            }
            Opt::Unsupported(_) => return Err(unsupported(&found)),
        }
        Ok(Step::Next)
    }

    /// Passes 2 (`-t -u -D`) and 4 (`-T -U`): the deferred options `wanted` selects.
    fn later_pass(&mut self, wanted: &[Opt]) -> Result<(), String> {
        for &(opt, arg) in self.later.iter().filter(|(opt, _)| wanted.contains(opt)) {
            let o = &mut self.o;
            let (spec, c): (&mut PortSpec, char) = match opt {
                Opt::TcpPorts => (&mut o.tcp, 't'),
                Opt::UdpPorts => (&mut o.udp, 'u'),
                Opt::TcpNs => (&mut o.tcp_ns, 'T'),
                Opt::UdpNs => (&mut o.udp_ns, 'U'),
                _ => {
                    dns(o, arg)?;
                    continue;
                }
            };
            let text = arg
                .to_str()
                .ok_or_else(|| format!("Invalid port specifier {}", shown(arg)))?;
            portspec::add(spec, c, text)?;
        }
        Ok(())
    }
}

/// `-D`: `none` drops every DNS address, including the `--dns-forward` ones (as pasta's
/// `-D none` clears its forwarding match); otherwise one IPv4 or IPv6 address.
fn dns(o: &mut PastaOptions, arg: &OsStr) -> Result<(), String> {
    if arg == "none" {
        o.dns.clear();
        o.dns_forward = AddrOpt::Unset;
        return Ok(());
    }
    let addr = inet(arg).ok_or_else(|| format!("Cannot use DNS address {}", shown(arg)))?;
    o.dns.push(addr);
    Ok(())
}

/// The operands (pasta's `conf_pasta_ns`): a lone number is the PID; anything else is a
/// COMMAND, which tapir refuses.
fn operands(o: &mut PastaOptions, operands: &[&OsStr]) -> Result<(), String> {
    if o.netns.is_some() && !operands.is_empty() {
        return Err("Both --netns and PID or command given".to_owned());
    }
    match operands {
        [] => Ok(()),
        [one] if parse_c_long(one).is_some() => {
            let pid = parse_c_long(one)
                .filter(|&n| n > 0)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("Invalid PID {}", shown(one)))?;
            o.pid = Some(pid);
            Ok(())
        }
        _ => Err("tapir: pasta option COMMAND is not supported (use tapir run)".to_owned()),
    }
}

/// pasta mode: `[OPTION]... [PID]`; `args` starts after argv\[0\] (or after `pasta`).
pub(super) fn parse_pasta(
    argv0: &str,
    args: &[OsString],
) -> Result<(Command, Vec<String>), CliError> {
    let mut p = Parser {
        o: PastaOptions::default(),
        warnings: Vec::new(),
        later: Vec::new(),
    };
    let mut getopt = Getopt::new(argv0, args, &TABLE, false);
    loop {
        let found = match getopt.next_opt() {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(e) => return Err(p.fail(e)),
        };
        match p.first_pass(found) {
            Ok(Step::Next) => {}
            Ok(Step::Help) => return Ok((Command::PastaHelp, p.warnings)),
            Ok(Step::Version) => return Ok((Command::PastaVersion, p.warnings)),
            Err(message) => return Err(p.fail(CliError::plain(message))),
        }
    }
    let rest = getopt.into_operands();
    let result = p
        .later_pass(&[Opt::TcpPorts, Opt::UdpPorts, Opt::Dns])
        .and_then(|()| operands(&mut p.o, &rest))
        .and_then(|()| p.later_pass(&[Opt::TcpNs, Opt::UdpNs]));
    match result {
        Ok(()) => Ok((Command::Pasta(p.o), p.warnings)),
        Err(message) => Err(p.fail(CliError::plain(message))),
    }
}

#[cfg(test)]
mod tests;
