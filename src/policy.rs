//! Egress policy: which host-side destinations the guest's outbound flows may reach.
//!
//! # Theory of operation
//!
//! A policy is an ordered list of [`Rule`]s plus a default [`Action`]. The first rule that
//! matches a flow decides it; when none matches, the default does (allow, unless
//! `--default-deny`). Rules come from `--allow=RULE`, `--deny=RULE`, `--deny-private` and
//! `--policy-file=PATH` in command-line order, and at run time from the API (`add_policy`,
//! `remove_policy`), which may insert at any position.
//!
//! A rule's text is `CIDR[:PORT[-PORT]][/tcp|/udp|/icmp]`:
//!
//! - `CIDR` is an IPv4 or IPv6 address with an optional prefix length (none: one host). Host
//!   bits below the prefix must be zero (`10.0.0.1/8` is refused, so a typo cannot widen or
//!   narrow a rule silently). An IPv6 CIDR followed by a port is written in brackets:
//!   `[2001:db8::/32]:443/tcp`; without a port the brackets are optional.
//! - `PORT[-PORT]` is an inclusive range in 1..=65535; a rule with ports matches TCP and UDP
//!   only (ICMP echo has no port, and `:PORT/icmp` is refused).
//! - `/tcp`, `/udp`, `/icmp` restrict the rule to one protocol (ICMP means echo, the only ICMP
//!   the guest can send out).
//! - Host names are refused: resolving them at start-up would give addresses that go stale,
//!   and which addresses a name stands for is for the guest's own DNS answers to decide.
//!
//! The destination a rule is matched against is the real host-side one, after address
//! translation ([`crate::nat::Rules::outbound`]): the gateway's loopback mapping is matched as
//! `127.0.0.1`/`::1`, the DNS address as the upstream resolver's address. So `--deny-private`
//! (RFC 1918, CGNAT 100.64/10, link-local 169.254/16 and fe80::/10 where cloud metadata
//! services live, unique local fc00::/7, and the host's own non-loopback addresses) leaves the
//! gateway (host loopback) working.
//!
//! The DNS forward to the host's resolver is exempt from every rule that does not name it
//! explicitly: a rule names it when it gives a port range (which must then contain 53 to
//! match) and its CIDR contains the resolver's address. A bare `deny 0.0.0.0/0`,
//! `--default-deny` or `--deny-private` therefore never breaks DNS; `deny 0.0.0.0/0:53` or
//! `deny 127.0.0.53:53/udp` does.
//!
//! Besides the command line's rules, a per-user policy file is read at start in every mode
//! (slirp4netns, `tapir run`, pasta), because podman cannot pass tapir's options to either
//! front end: `$XDG_CONFIG_HOME/tapir/policy`, or `$HOME/.config/tapir/policy` when
//! `XDG_CONFIG_HOME` is unset, empty or relative ([`user_file`]). Its rules are appended after
//! the command line's, so an explicit `--allow`/`--deny` is evaluated first and can override
//! it; `--no-user-policy` skips it. A missing file is no error; an unreadable or invalid one
//! fails start-up naming `file:line`. The environment is read by `app` (not here and not in
//! `cli`, whose parsers take no environment), which passes the values to [`user_file`].
//!
//! Every bound is a named constant: [`MAX_RULES`] rules, [`MAX_FILE_BYTES`] of policy file,
//! [`DENIAL_LOGS_PER_SECOND`] denial log lines. This module does no I/O beyond [`read_file`]'s
//! bounded read of one file; parsing and matching are pure.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::nat::Proto;

/// Most rules a policy holds (command line, file, preset and API together). Evaluation is a
/// linear scan per new flow (and per UDP datagram); 1024 rules keep that in microseconds and
/// the API's list reply bounded, far above any hand-written policy.
pub const MAX_RULES: usize = 1024;
/// Largest policy file read (`--policy-file`): 1024 rules of a few dozen bytes with comments.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Denials logged (at debug level) per second; the rest are only counted, so a guest spraying
/// denied destinations cannot flood the log.
pub const DENIAL_LOGS_PER_SECOND: u32 = 20;

/// What a rule (or the default) does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the flow through.
    Allow,
    /// Refuse it: RST or ICMP administratively prohibited.
    Deny,
}

impl Action {
    /// `allow` or `deny`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// Why a rule's text is not a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Empty rule.
    #[error("empty rule")]
    Empty,
    /// The line does not start with `allow` or `deny`.
    #[error("expected `allow RULE` or `deny RULE`")]
    NoAction,
    /// A host name where an address belongs.
    #[error(
        "host names are not accepted: an address resolved at start-up goes stale, and DNS \
         answers are the guest's to choose; give a CIDR"
    )]
    HostName,
    /// Not an IP address.
    #[error("bad address (expected an IPv4 or IPv6 CIDR)")]
    BadAddress,
    /// The prefix length is not a number within the family's width.
    #[error("bad prefix length")]
    BadPrefix,
    /// Bits set below the prefix length.
    #[error("host bits set below the prefix length")]
    HostBits,
    /// A port that is not a number in 1..=65535, or a range whose end is below its start.
    #[error("bad port or port range (1-65535)")]
    BadPort,
    /// A suffix other than `/tcp`, `/udp`, `/icmp`.
    #[error("bad protocol (expected /tcp, /udp or /icmp)")]
    BadProto,
    /// Ports with `/icmp`.
    #[error("ICMP has no ports")]
    IcmpPort,
    /// An IPv6 CIDR with a port but without brackets.
    #[error("an IPv6 CIDR followed by a port must be in brackets: [2001:db8::/32]:443")]
    Brackets,
}

/// A policy file line that is not valid, or a file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// A line is not a rule.
    #[error("{file}:{line}: {err}")]
    Line {
        /// The file's name as given.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        err: RuleError,
    },
    /// Too many rules.
    #[error("{file}: more than {MAX_RULES} rules")]
    TooMany {
        /// The file's name as given.
        file: String,
    },
    /// The file cannot be opened or read.
    #[error("{file}: {err}")]
    Read {
        /// The file's name as given.
        file: String,
        /// The I/O error's text.
        err: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{file}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// The file's name as given.
        file: String,
    },
}

/// Why a policy cannot be built or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// [`MAX_RULES`] would be exceeded.
    #[error("the policy holds at most {MAX_RULES} rules")]
    Full,
    /// An insert position past the end.
    #[error("position past the end of the rule list")]
    BadPosition,
    /// No rule has this id.
    #[error("no rule with this id")]
    NoSuchId,
}

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// A prefix; host bits must be zero.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, RuleError> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > width {
            return Err(RuleError::BadPrefix);
        }
        let c = Cidr { addr, prefix };
        if c.masked(addr) != addr {
            return Err(RuleError::HostBits);
        }
        Ok(c)
    }

    /// One host.
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let m = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
            }
        }
    }

    /// Whether `ip` lies in the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One rule: action, destination prefix, optional port range and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// What a match does.
    pub action: Action,
    /// Destination prefix.
    pub cidr: Cidr,
    /// Inclusive destination port range; `None`: any port (and ICMP).
    pub ports: Option<(u16, u16)>,
    /// Protocol; `None`: all three.
    pub proto: Option<Proto>,
}

impl Rule {
    /// Parse `CIDR[:PORT[-PORT]][/tcp|/udp|/icmp]` with `action`.
    pub fn parse(action: Action, text: &str) -> Result<Rule, RuleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        // The protocol suffix: the last `/` followed by letters (a prefix length is digits).
        let (rest, proto) = match text.rsplit_once('/') {
            Some((head, tail))
                if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                let p = match tail {
                    "tcp" => Proto::Tcp,
                    "udp" => Proto::Udp,
                    "icmp" => Proto::Icmp,
                    _ => return Err(RuleError::BadProto),
                };
                (head, Some(p))
            }
            _ => (text, None),
        };
        let (cidr_text, port_text) = if let Some(inner) = rest.strip_prefix('[') {
            let (cidr, after) = inner.split_once(']').ok_or(RuleError::BadAddress)?;
            match after {
                "" => (cidr, None),
                _ => (
                    cidr,
                    Some(after.strip_prefix(':').ok_or(RuleError::BadPort)?),
                ),
            }
        } else {
            match rest.matches(':').count() {
                0 => (rest, None),
                1 => {
                    let (c, p) = rest.split_once(':').ok_or(RuleError::BadAddress)?;
                    (c, Some(p))
                }
                // IPv6 without brackets; a trailing ":PORT" after a prefix is ambiguous-looking
                // but unparseable as an address, so say what is wanted.
                _ if rest.contains('/')
                    && rest.rsplit_once('/').is_some_and(|(_, t)| t.contains(':')) =>
                {
                    return Err(RuleError::Brackets)
                }
                _ => (rest, None),
            }
        };
        let cidr = parse_cidr(cidr_text)?;
        let ports = port_text.map(parse_ports).transpose()?;
        if ports.is_some() && proto == Some(Proto::Icmp) {
            return Err(RuleError::IcmpPort);
        }
        Ok(Rule {
            action,
            cidr,
            ports,
            proto,
        })
    }

    /// Parse `allow RULE` or `deny RULE` (the policy file's and the API's form).
    pub fn parse_line(line: &str) -> Result<Rule, RuleError> {
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let action = match word {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            _ => return Err(RuleError::NoAction),
        };
        Rule::parse(action, rest)
    }

    /// Whether the rule matches a flow of `proto` to `dst` (a host-side destination).
    pub fn matches(&self, proto: Proto, dst: SocketAddr) -> bool {
        if self.proto.is_some_and(|p| p != proto) || !self.cidr.contains(dst.ip()) {
            return false;
        }
        match self.ports {
            None => true,
            Some((lo, hi)) => proto != Proto::Icmp && (lo..=hi).contains(&dst.port()),
        }
    }

    /// Whether the rule names the DNS forward explicitly (see the module documentation): it
    /// gives ports; whether they and the CIDR cover the resolver is [`Rule::matches`]'s part.
    pub fn names_dns(&self) -> bool {
        self.ports.is_some()
    }
}

impl fmt::Display for Rule {
    /// `allow|deny CIDR[:PORTS][/proto]`, parseable by [`Rule::parse_line`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.action.name())?;
        match (self.cidr.addr, self.ports) {
            (IpAddr::V6(_), Some(_)) => write!(f, "[{}]", self.cidr)?,
            _ => write!(f, "{}", self.cidr)?,
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, ":{lo}")?,
            Some((lo, hi)) => write!(f, ":{lo}-{hi}")?,
            None => {}
        }
        if let Some(p) = self.proto {
            write!(f, "/{}", p.name())?;
        }
        Ok(())
    }
}

fn parse_cidr(s: &str) -> Result<Cidr, RuleError> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = match addr.parse() {
        Ok(ip) => ip,
        Err(_) if looks_like_name(addr) => return Err(RuleError::HostName),
        Err(_) => return Err(RuleError::BadAddress),
    };
    match prefix {
        None => Ok(Cidr::host(ip)),
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 3 {
                return Err(RuleError::BadPrefix);
            }
            let n: u8 = p.parse().map_err(|_| RuleError::BadPrefix)?;
            Cidr::new(ip, n)
        }
    }
}

/// A DNS name: letters, digits, `-` and `.`, with at least one letter.
fn looks_like_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn parse_port(s: &str) -> Result<u16, RuleError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RuleError::BadPort);
    }
    match s.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(RuleError::BadPort),
    }
}

fn parse_ports(s: &str) -> Result<(u16, u16), RuleError> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(s)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(RuleError::BadPort);
    }
    Ok((lo, hi))
}

/// Parse a policy file's text: `allow RULE` / `deny RULE` one per line, `#` to the end of a
/// line is a comment, blank lines are skipped. `file` names the file in errors (`file:line`).
pub fn parse_file(text: &str, file: &str) -> Result<Vec<Rule>, FileError> {
    let mut rules = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let rule = Rule::parse_line(line).map_err(|err| FileError::Line {
            file: file.to_owned(),
            line: i + 1,
            err,
        })?;
        if rules.len() >= MAX_RULES {
            return Err(FileError::TooMany {
                file: file.to_owned(),
            });
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Read and parse the policy file at `path` (at most [`MAX_FILE_BYTES`]). With `missing_ok`, a
/// file that does not exist gives `Ok(None)` (the per-user file is optional); any other failure
/// to open or read it is an error, as is an invalid line (`file:line`).
pub fn read_file(path: &Path, missing_ok: bool) -> Result<Option<Vec<Rule>>, FileError> {
    let name = path.display().to_string();
    let fail = |e: std::io::Error| FileError::Read {
        file: name.clone(),
        err: e.to_string(),
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A directory this user cannot even look into (HOME left at another user's, as `sudo
        // -u` does) holds no file of theirs: the same as a missing one.
        Err(e)
            if missing_ok
                && e.kind() == std::io::ErrorKind::PermissionDenied
                && path.parent().is_some_and(|d| d.metadata().is_err()) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(fail(e)),
    };
    let mut text = String::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(fail)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { file: name });
    }
    parse_file(&text, &name).map(Some)
}

/// The per-user policy file's path, `tapir/policy` under the XDG configuration directory:
/// `xdg_config_home` when it is set, non-empty and absolute (the XDG Base Directory rule),
/// else `home/.config`. `None` when neither gives a directory. Pure: the caller reads
/// `XDG_CONFIG_HOME` and `HOME` from its environment.
pub fn user_file(xdg_config_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    fn absolute(v: Option<&OsStr>) -> Option<&Path> {
        v.map(Path::new).filter(|p| p.is_absolute())
    }
    let base = match absolute(xdg_config_home) {
        Some(x) => x.to_path_buf(),
        None => absolute(home)?.join(".config"),
    };
    Some(base.join("tapir").join("policy"))
}

/// The prefixes `--deny-private` denies besides the host's own addresses: RFC 1918, CGNAT
/// (RFC 6598), IPv4 and IPv6 link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254
/// are covered by these and fc00::/7), IPv6 unique local.
pub const PRIVATE_PREFIXES: &[(IpAddr, u8)] = &[
    (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
    (IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), 12),
    (IpAddr::V4(Ipv4Addr::new(192, 168, 0, 0)), 16),
    (IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)), 10),
    (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
    (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
    (IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0)), 7),
];

/// The rules of `--deny-private`: [`PRIVATE_PREFIXES`], then each of `host_addrs` (the host's
/// non-loopback addresses, read at start-up by the caller) as one host. Loopback addresses in
/// `host_addrs` are skipped: the gateway mapping must keep working.
pub fn deny_private(host_addrs: &[IpAddr]) -> Vec<Rule> {
    let deny = |cidr| Rule {
        action: Action::Deny,
        cidr,
        ports: None,
        proto: None,
    };
    let mut v: Vec<Rule> = PRIVATE_PREFIXES
        .iter()
        .map(|&(addr, prefix)| deny(Cidr { addr, prefix }))
        .collect();
    for &a in host_addrs {
        if a.is_loopback() || a.is_unspecified() {
            continue;
        }
        let r = deny(Cidr::host(a));
        if !v.iter().any(|x| x.cidr.contains(a)) {
            v.push(r);
        }
    }
    v
}

/// One item of the configured policy, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `--allow`, `--deny`, or a line of `--policy-file`.
    Rule(Rule),
    /// `--deny-private`, expanded by [`Policy::new`] with the host's addresses.
    DenyPrivate,
}

/// The egress policy as configured (part of [`crate::config::Config`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// Rules and presets in command-line order.
    pub items: Vec<Item>,
    /// `--default-deny`.
    pub default_deny: bool,
    /// `--deny-icmp-reply`: a denied TCP connect gets ICMP administratively prohibited
    /// instead of RST.
    pub deny_icmp_reply: bool,
    /// The host's own non-loopback addresses, for `--deny-private` (filled in at start-up).
    pub host_addrs: Vec<IpAddr>,
    /// `--no-user-policy`: do not append the per-user policy file's rules ([`user_file`]).
    pub no_user_policy: bool,
}

impl Spec {
    /// Whether the spec uses `--deny-private` (the caller then reads the host's addresses).
    pub fn wants_host_addrs(&self) -> bool {
        self.items.contains(&Item::DenyPrivate)
    }
}

/// A rule with its run-time id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Stable id (for `remove_policy`), from 1.
    pub id: u64,
    /// The rule.
    pub rule: Rule,
}

/// The live policy: ordered rules with ids, the default, and denial accounting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    entries: Vec<Entry>,
    next_id: u64,
    default: Action,
    deny_icmp_reply: bool,
    /// Denials so far.
    denied: u64,
    /// Start (ms) of the current log window and lines logged in it.
    log_window: (u64, u32),
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            entries: Vec::new(),
            next_id: 1,
            default: Action::Allow,
            deny_icmp_reply: false,
            denied: 0,
            log_window: (0, 0),
        }
    }
}

/// A denial: which rule (none: the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    /// The rule's id, or `None` for the default action.
    pub id: Option<u64>,
}

impl Policy {
    /// Build from the configuration, expanding `--deny-private`.
    pub fn new(spec: &Spec) -> Result<Policy, PolicyError> {
        let mut p = Policy {
            default: if spec.default_deny {
                Action::Deny
            } else {
                Action::Allow
            },
            deny_icmp_reply: spec.deny_icmp_reply,
            ..Policy::default()
        };
        for item in &spec.items {
            let rules = match item {
                Item::Rule(r) => vec![*r],
                Item::DenyPrivate => deny_private(&spec.host_addrs),
            };
            for r in rules {
                p.insert(r, None)?;
            }
        }
        Ok(p)
    }

    /// Whether nothing can ever be denied (no rules, default allow): the hot path skips.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty() && self.default == Action::Allow
    }

    /// Insert `rule` at `position` (`None`: at the end); returns its id.
    pub fn insert(&mut self, rule: Rule, position: Option<usize>) -> Result<u64, PolicyError> {
        if self.entries.len() >= MAX_RULES {
            return Err(PolicyError::Full);
        }
        let at = position.unwrap_or(self.entries.len());
        if at > self.entries.len() {
            return Err(PolicyError::BadPosition);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(at, Entry { id, rule });
        Ok(id)
    }

    /// Remove the rule with `id`.
    pub fn remove(&mut self, id: u64) -> Result<Rule, PolicyError> {
        let i = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(PolicyError::NoSuchId)?;
        Ok(self.entries.remove(i).rule)
    }

    /// The rules in evaluation order (position = index).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The default action.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// Whether a denied TCP connect gets ICMP administratively prohibited instead of RST.
    pub fn icmp_reply(&self) -> bool {
        self.deny_icmp_reply
    }

    /// Denials counted so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Decide a flow of `proto` to the host-side destination `dst`; `dns` says that the flow is
    /// the DNS forward (exempt from rules that do not name it, and from the default).
    pub fn check(&self, proto: Proto, dst: SocketAddr, dns: bool) -> Result<(), Denial> {
        for e in &self.entries {
            if dns && !e.rule.names_dns() {
                continue;
            }
            if e.rule.matches(proto, dst) {
                return match e.rule.action {
                    Action::Allow => Ok(()),
                    Action::Deny => Err(Denial { id: Some(e.id) }),
                };
            }
        }
        match self.default {
            Action::Deny if !dns => Err(Denial { id: None }),
            _ => Ok(()),
        }
    }

    /// Count a denial at `now_ms`; returns whether it may be logged
    /// ([`DENIAL_LOGS_PER_SECOND`] per one-second window).
    pub fn note_denial(&mut self, now_ms: u64) -> bool {
        self.denied += 1;
        let (start, n) = &mut self.log_window;
        if now_ms.saturating_sub(*start) >= 1000 {
            *start = now_ms;
            *n = 0;
        }
        if *n < DENIAL_LOGS_PER_SECOND {
            *n += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rule(s: &str) -> Rule {
        Rule::parse_line(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn policy(lines: &[&str], default_deny: bool) -> Policy {
        Policy::new(&Spec {
            items: lines.iter().map(|l| Item::Rule(rule(l))).collect(),
            default_deny,
            ..Spec::default()
        })
        .unwrap()
    }

    #[test]
    fn parses_every_form() {
        let r = rule("deny 10.0.0.0/8:22/tcp");
        assert_eq!(r.action, Action::Deny);
        assert_eq!(r.cidr.to_string(), "10.0.0.0/8");
        assert_eq!(r.ports, Some((22, 22)));
        assert_eq!(r.proto, Some(Proto::Tcp));
        assert_eq!(rule("allow 1.2.3.4").cidr.prefix, 32);
        assert_eq!(rule("allow 1.2.3.4:1000-2000").ports, Some((1000, 2000)));
        assert_eq!(rule("allow 0.0.0.0/0/udp").proto, Some(Proto::Udp));
        assert_eq!(rule("allow 0.0.0.0/0/icmp").proto, Some(Proto::Icmp));
        let v6 = rule("allow [2001:db8::/32]:443/tcp");
        assert_eq!(v6.cidr.to_string(), "2001:db8::/32");
        assert_eq!(v6.ports, Some((443, 443)));
        assert_eq!(rule("deny 2001:db8::/32").ports, None);
        assert_eq!(rule("deny 2001:db8::/32/udp").proto, Some(Proto::Udp));
        assert_eq!(rule("deny [::1]").cidr.prefix, 128);
        assert_eq!(rule("deny ::/0").cidr.prefix, 0);
        assert_eq!(rule("  deny\t10.0.0.0/8  ").cidr.prefix, 8);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "deny 10.0.0.0/8:22/tcp",
            "allow 1.2.3.4/32:1000-2000",
            "deny [2001:db8::/32]:443/tcp",
            "deny 2001:db8::/32/udp",
            "allow 0.0.0.0/0/icmp",
            "deny ::/0",
        ] {
            assert_eq!(rule(s).to_string(), s);
            assert_eq!(rule(&rule(s).to_string()), rule(s));
        }
    }

    #[test]
    fn parse_errors() {
        use RuleError::*;
        let cases: &[(&str, RuleError)] = &[
            ("deny", Empty),
            ("deny   ", Empty),
            ("block 10.0.0.0/8", NoAction),
            ("", NoAction),
            ("deny example.com", HostName),
            ("deny metadata.google.internal:80/tcp", HostName),
            ("deny 10.0.0.300", BadAddress),
            ("deny 10.0.0.0/33", BadPrefix),
            ("deny 10.0.0.0/", BadPrefix),
            ("deny ::/129", BadPrefix),
            ("deny 10.0.0.1/8", HostBits),
            ("deny 10.0.0.0/8:0", BadPort),
            ("deny 10.0.0.0/8:65536", BadPort),
            ("deny 10.0.0.0/8:20-10", BadPort),
            ("deny 10.0.0.0/8:x", BadPort),
            ("deny 10.0.0.0/8:", BadPort),
            ("deny 10.0.0.0/8/sctp", BadProto),
            ("deny 10.0.0.0/8:7/icmp", IcmpPort),
            ("deny 2001:db8::/32:443", Brackets),
            ("deny [2001:db8::/32", BadAddress),
            ("deny [2001:db8::/32]443", BadPort),
        ];
        for (s, want) in cases {
            assert_eq!(Rule::parse_line(s), Err(*want), "{s}");
        }
        // The host-name error says why.
        assert!(HostName.to_string().contains("stale"));
    }

    #[test]
    fn first_match_wins_both_orders() {
        let allow_first = policy(&["allow 10.1.0.0/16", "deny 10.0.0.0/8"], false);
        assert!(allow_first
            .check(Proto::Tcp, sa("10.1.2.3:80"), false)
            .is_ok());
        assert!(allow_first
            .check(Proto::Tcp, sa("10.2.2.3:80"), false)
            .is_err());
        let deny_first = policy(&["deny 10.0.0.0/8", "allow 10.1.0.0/16"], false);
        assert!(deny_first
            .check(Proto::Tcp, sa("10.1.2.3:80"), false)
            .is_err());
        assert!(deny_first
            .check(Proto::Tcp, sa("11.1.2.3:80"), false)
            .is_ok());
        // Which rule denied.
        assert_eq!(
            deny_first.check(Proto::Udp, sa("10.1.2.3:80"), false),
            Err(Denial {
                id: deny_first.entries()[0].id.into()
            })
        );
    }

    #[test]
    fn default_action() {
        let p = policy(&["allow 192.0.2.0/24:443/tcp"], true);
        assert!(p.check(Proto::Tcp, sa("192.0.2.1:443"), false).is_ok());
        assert_eq!(
            p.check(Proto::Tcp, sa("192.0.2.1:80"), false),
            Err(Denial { id: None })
        );
        assert!(policy(&[], false).is_open());
        assert!(!policy(&[], true).is_open());
    }

    #[test]
    fn ports_and_protocols() {
        let p = policy(
            &["deny 0.0.0.0/0:1000-2000/udp", "deny 0.0.0.0/0/icmp"],
            false,
        );
        assert!(p.check(Proto::Udp, sa("1.1.1.1:1000"), false).is_err());
        assert!(p.check(Proto::Udp, sa("1.1.1.1:2000"), false).is_err());
        assert!(p.check(Proto::Udp, sa("1.1.1.1:2001"), false).is_ok());
        assert!(p.check(Proto::Udp, sa("1.1.1.1:999"), false).is_ok());
        assert!(p.check(Proto::Tcp, sa("1.1.1.1:1500"), false).is_ok());
        assert!(p.check(Proto::Icmp, sa("1.1.1.1:0"), false).is_err());
        // A rule with ports never matches ICMP echo.
        let q = policy(&["deny 0.0.0.0/0:1-65535"], false);
        assert!(q.check(Proto::Icmp, sa("1.1.1.1:0"), false).is_ok());
        assert!(q.check(Proto::Tcp, sa("1.1.1.1:1"), false).is_err());
    }

    #[test]
    fn families_do_not_cross() {
        let p = policy(&["deny 0.0.0.0/0", "deny [2001:db8::/32]:443/tcp"], false);
        assert!(p.check(Proto::Tcp, sa("[2001:db9::1]:443"), false).is_ok());
        assert!(p.check(Proto::Tcp, sa("[2001:db8::1]:443"), false).is_err());
        assert!(p.check(Proto::Tcp, sa("[2001:db8::1]:80"), false).is_ok());
        assert!(p.check(Proto::Tcp, sa("9.9.9.9:80"), false).is_err());
        let all6 = policy(&["deny ::/0"], false);
        assert!(all6.check(Proto::Tcp, sa("9.9.9.9:80"), false).is_ok());
    }

    #[test]
    fn dns_forward_exempt_unless_named() {
        let resolver = sa("127.0.0.53:53");
        let p = policy(&["deny 0.0.0.0/0"], true);
        assert!(p.check(Proto::Udp, resolver, true).is_ok());
        assert!(p.check(Proto::Udp, resolver, false).is_err());
        let named = policy(&["deny 127.0.0.0/8:53/udp"], false);
        assert!(named.check(Proto::Udp, resolver, true).is_err());
        assert!(named.check(Proto::Tcp, resolver, true).is_ok());
        let other_port = policy(&["deny 0.0.0.0/0:80"], false);
        assert!(other_port.check(Proto::Udp, resolver, true).is_ok());
    }

    #[test]
    fn deny_private_preset() {
        let host = [
            "127.0.0.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
            "10.1.1.1".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ];
        let p = Policy::new(&Spec {
            items: vec![Item::DenyPrivate],
            host_addrs: host.to_vec(),
            ..Spec::default()
        })
        .unwrap();
        for d in [
            "10.9.9.9:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "100.127.255.255:80",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "[fd00:ec2::254]:80",
            "198.51.100.7:80",
            "[2001:db8::7]:80",
        ] {
            assert!(p.check(Proto::Tcp, sa(d), false).is_err(), "{d}");
        }
        for d in [
            "127.0.0.1:80", // the gateway's loopback mapping
            "[::1]:80",
            "172.32.0.1:80",
            "100.128.0.1:80",
            "8.8.8.8:443",
            "[2001:db8::8]:80",
        ] {
            assert!(p.check(Proto::Tcp, sa(d), false).is_ok(), "{d}");
        }
        // The resolver may be private: DNS keeps working.
        assert!(p.check(Proto::Udp, sa("192.168.1.1:53"), true).is_ok());
        // 10.1.1.1 is inside 10/8 already: not listed twice.
        assert_eq!(p.entries().len(), PRIVATE_PREFIXES.len() + 2);
        assert!(Spec {
            items: vec![Item::DenyPrivate],
            ..Spec::default()
        }
        .wants_host_addrs());
    }

    #[test]
    fn preset_in_command_line_order() {
        let p = Policy::new(&Spec {
            items: vec![
                Item::Rule(rule("allow 10.0.2.0/24:8080/tcp")),
                Item::DenyPrivate,
            ],
            ..Spec::default()
        })
        .unwrap();
        assert!(p.check(Proto::Tcp, sa("10.0.2.9:8080"), false).is_ok());
        assert!(p.check(Proto::Tcp, sa("10.0.2.9:8081"), false).is_err());
    }

    #[test]
    fn file_format() {
        let text = "# egress for CI\n\nallow 10.0.0.0/8:443/tcp  # internal mirror\n  deny 10.0.0.0/8\n\tdeny [fd00::/8]:22\n";
        let rules = parse_file(text, "p.txt").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].action, Action::Allow);
        assert_eq!(rules[2].ports, Some((22, 22)));
        assert_eq!(
            parse_file("allow 1.2.3.4\n\nallow host.example\n", "p.txt"),
            Err(FileError::Line {
                file: "p.txt".into(),
                line: 3,
                err: RuleError::HostName
            })
        );
        let e = parse_file("deny 1.2.3.4\npermit 1.2.3.4\n", "/etc/p").unwrap_err();
        assert!(e.to_string().starts_with("/etc/p:2: "), "{e}");
        let big: String = (0..=MAX_RULES).map(|_| "deny 1.2.3.4\n").collect();
        assert!(matches!(
            parse_file(&big, "f"),
            Err(FileError::TooMany { .. })
        ));
        assert_eq!(parse_file("", "f"), Ok(vec![]));
    }

    #[test]
    fn user_file_location() {
        let os = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            user_file(os("/x/cfg"), os("/home/u")),
            Some(PathBuf::from("/x/cfg/tapir/policy"))
        );
        for xdg in [None, os(""), os("relative/cfg")] {
            assert_eq!(
                user_file(xdg, os("/home/u")),
                Some(PathBuf::from("/home/u/.config/tapir/policy"))
            );
        }
        assert_eq!(user_file(None, None), None);
        assert_eq!(user_file(os("rel"), os("also-rel")), None);
    }

    #[test]
    fn read_file_missing_and_errors() {
        let dir = std::env::temp_dir().join(format!("tapir-policy-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        assert_eq!(read_file(&missing, true), Ok(None));
        assert!(matches!(
            read_file(&missing, false),
            Err(FileError::Read { .. })
        ));
        let p = dir.join("p");
        std::fs::write(&p, "deny 10.0.0.0/8\nallow 1.2.3.4:0\n").unwrap();
        let e = read_file(&p, true).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("{}:2: ", p.display())),
            "{e}"
        );
        std::fs::write(&p, "deny 10.0.0.0/8 # lab\n").unwrap();
        assert_eq!(read_file(&p, true).unwrap().map(|r| r.len()), Some(1));
        let big = vec![b'#'; MAX_FILE_BYTES as usize + 1];
        std::fs::write(&p, big).unwrap();
        assert!(matches!(
            read_file(&p, true),
            Err(FileError::TooLarge { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runtime_changes() {
        let mut p = policy(&["deny 10.0.0.0/8"], false);
        let id = p.insert(rule("allow 10.1.0.0/16"), Some(0)).unwrap();
        assert_eq!(p.entries()[0].id, id);
        assert!(p.check(Proto::Tcp, sa("10.1.0.1:1"), false).is_ok());
        assert_eq!(
            p.insert(rule("deny 1.1.1.1"), Some(5)),
            Err(PolicyError::BadPosition)
        );
        assert_eq!(p.remove(id), Ok(rule("allow 10.1.0.0/16")));
        assert_eq!(p.remove(id), Err(PolicyError::NoSuchId));
        assert!(p.check(Proto::Tcp, sa("10.1.0.1:1"), false).is_err());
        // Ids are never reused.
        let id2 = p.insert(rule("deny 1.1.1.1"), None).unwrap();
        assert!(id2 > id);
        for _ in p.entries().len()..MAX_RULES {
            p.insert(rule("deny 1.1.1.1"), None).unwrap();
        }
        assert_eq!(p.insert(rule("deny 1.1.1.1"), None), Err(PolicyError::Full));
    }

    #[test]
    fn denial_logs_are_rate_limited() {
        let mut p = Policy::default();
        let logged = (0..100).filter(|_| p.note_denial(5_000)).count();
        assert_eq!(logged, DENIAL_LOGS_PER_SECOND as usize);
        assert!(p.note_denial(6_000));
        assert_eq!(p.denied(), 101);
    }
}
