//! Command-line parsing: argv -> [`Command`] (with [`config::Options`] inside).
//!
//! # Theory of operation
//!
//! tapir is a drop-in for slirp4netns, so argv is parsed the way slirp4netns 1.2.0/1.3.x parses it
//! (`main.c` `parse_args`): GNU `getopt_long(argc, argv, "ce:r:m:a:6hv", longopts)` followed by a
//! few checks after the loop. The getopt behaviour reproduced here is:
//!
//! - short options in clusters (`-c6`), with the argument attached (`-m1500`) or in the next
//!   element (`-m 1500`); a required argument is taken from the next element whatever it looks
//!   like (`-m --` sets the MTU to `--`, which then fails validation);
//! - long options as `--name=value` or `--name value`, and any unambiguous prefix of a name
//!   (`--conf`); an exact name wins over a longer name it is a prefix of (`--outbound-addr`);
//! - permutation: options may follow operands (`-c 1234 --api-socket S tap0`); operands keep their
//!   relative order; `--` ends the options and `-` alone is an operand;
//! - glibc's diagnostics, byte for byte, with argv\[0\] as given (`{argv0}: unrecognized option
//!   '--foo'`, `{argv0}: option '--dis' is ambiguous; possibilities: '--disable-host-loopback'
//!   '--disable-dns'`, ...). The `possibilities` are listed in slirp4netns's `longopts` order.
//!
//! Options take effect in order and the first failure wins, as in slirp4netns, which exits from
//! inside the loop: `-m 0 -h` is an error, `-h -m 0` is help. `-h`/`--help` and
//! `-v`/`--version` stop parsing where they stand. Checks slirp4netns does while parsing are done
//! here with its messages (fd and MTU numbers, `--userns-path` must exist, `--macaddress` needs
//! `-c`, `--target-type`, the PID|PATH|FD operand); semantic validation (CIDR, MAC, outbound
//! addresses, `--publish` specs) is `config`'s job. The only I/O is the existence checks
//! slirp4netns makes at parse time; nothing here prints or exits. Lines slirp4netns prints on
//! stdout while parsing (deprecation warnings, `WARNING: too many arguments`) are returned for the
//! caller to print.
//!
//! Numbers are read as slirp4netns reads them with `strtol(s, &end, 10)` and `*end == '\0'`:
//! optional leading white space and sign, decimal digits, nothing after. Unlike `strtol`, a
//! string without digits (notably the empty string) is rejected rather than read as 0.
//!
//! Differences from slirp4netns, all deliberate:
//! - MTU below [`config::MIN_MTU`] is rejected (`MTU must be at least 68`).
//! - `--target-type=bess` is not implemented and is rejected.
//! - `--debug` and `-p/--publish` are tapir's own options.
//! - The experimental-feature warnings slirp4netns prints (`-6`, `--enable-seccomp`,
//!   `--outbound-addr*`) describe slirp4netns's maturity, not tapir's, and are not emitted.
//! - `POSIXLY_CORRECT` is not consulted (no environment access): options are always permuted.
//! - Values stored in `String` fields (TAPNAME, `--cidr`, ...) must be valid UTF-8.
//!
//! `tapir run [OPTION]... [--] CMD [ARG]...` (argv\[1\] exactly `run`) accepts the same options,
//! implies `-c`, and takes no PID|PATH|FD or TAPNAME: option parsing stops at `--` or at the first
//! operand, and everything from there on is the command (`tapir run curl -s URL` passes `-s URL`
//! to curl). Since a slirp4netns PID can never be `run`, this cannot shadow a valid slirp4netns
//! command line that starts with an operand.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::{self, Options, Target};

/// What the command line asks tapir to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// slirp4netns-compatible mode: attach to an existing namespace
    Attach(Options),
    /// `tapir run [OPTIONS] [--] CMD [ARGS...]`
    Run {
        /// Options of the network; `configure` is always set and `target` is `None`.
        options: Options,
        /// The command and its arguments, never empty.
        command: Vec<OsString>,
    },
    /// print help to stdout, exit 0
    Help,
    /// `tapir run --help`: print [`run_usage`] to stdout, exit 0
    RunHelp,
    /// `tapir ctl --help`: print [`ctl_usage`] to stdout, exit 0
    CtlHelp,
    /// print version to stdout, exit 0
    Version,
    /// `tapir ctl SOCKET ACTION`: talk to a running tapir's API socket.
    Ctl {
        /// The API socket path.
        socket: std::path::PathBuf,
        /// What to do.
        action: CtlAction,
    },
}

/// Actions of `tapir ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlAction {
    /// `list`: the forwards.
    List,
    /// `add [ADDR:]HPORT:GPORT[/udp]`: a new forward (podman's publish syntax).
    Add(String),
    /// `remove ID`.
    Remove(u64),
    /// `info`: counters.
    Info,
}

/// Usage of `tapir ctl`.
pub fn ctl_usage(argv0: &str) -> String {
    format!(
        "Usage: {argv0} ctl SOCKET list\n\
         \x20      {argv0} ctl SOCKET add [HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]\n\
         \x20      {argv0} ctl SOCKET remove ID\n\
         \x20      {argv0} ctl SOCKET info\n\
         Talk to the API socket (--api-socket) of a running tapir or slirp4netns and print the\n\
         JSON reply. Exit status 1 if the reply is an error.\n"
    )
}

/// Whether `argv` is a `tapir ctl` command line.
pub fn is_ctl(argv: &[OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "ctl")
}

fn parse_ctl(args: &[OsString]) -> Result<Command, CliError> {
    let words: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().unwrap_or("\u{fffd}"))
        .collect();
    if matches!(words.first(), Some(&"-h") | Some(&"--help")) {
        return Ok(Command::CtlHelp);
    }
    let bad = || CliError::usage("tapir ctl: expected SOCKET list|add SPEC|remove ID|info");
    let socket = args.first().ok_or_else(bad)?;
    let action = match words.get(1..).unwrap_or_default() {
        ["list"] => CtlAction::List,
        ["info"] => CtlAction::Info,
        ["add", spec] => CtlAction::Add((*spec).to_owned()),
        ["remove", id] => CtlAction::Remove(
            id.parse()
                .map_err(|_| CliError::usage(format!("tapir ctl: bad forward id {id:?}")))?,
        ),
        _ => return Err(bad()),
    };
    Ok(Command::Ctl {
        socket: std::path::PathBuf::from(socket),
        action,
    })
}

/// A command-line error. Exit status 1.
///
/// The caller prints `message` (if non-empty) on stderr, then, if `show_usage`, the usage text on
/// stdout: [`run_usage`] when [`is_run`] says argv is a `tapir run` command line, else [`usage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The diagnostic, without trailing newline; empty when slirp4netns prints only the usage.
    pub message: String,
    /// Whether slirp4netns would print the usage text after the message.
    pub show_usage: bool,
}

impl CliError {
    /// An error followed by the usage text (slirp4netns `goto error`).
    fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            show_usage: true,
        }
    }

    /// An error printed on its own.
    fn plain(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            show_usage: false,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Every option tapir knows; one variant per `longopts` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Configure,
    ExitFd,
    ReadyFd,
    Mtu,
    Cidr,
    DisableHostLoopback,
    NoHostLoopback,
    NetnsType,
    UsernsPath,
    ApiSocket,
    EnableIpv6,
    EnableSandbox,
    CreateSandbox,
    EnableSeccomp,
    Help,
    Version,
    OutboundAddr,
    OutboundAddr6,
    DisableDns,
    MacAddress,
    TargetType,
    Debug,
    Publish,
    DisableOffload,
    BusyPoll,
    SpliceForwards,
    AutoForward,
}

/// One `struct option` entry.
struct LongOpt {
    name: &'static str,
    takes_arg: bool,
    opt: Opt,
}

const fn long(name: &'static str, takes_arg: bool, opt: Opt) -> LongOpt {
    LongOpt {
        name,
        takes_arg,
        opt,
    }
}

/// slirp4netns HEAD's `longopts`, in its order (which is the order of the `possibilities` in an
/// ambiguity message), then tapir's own options.
const LONG_OPTIONS: &[LongOpt] = &[
    long("configure", false, Opt::Configure),
    long("exit-fd", true, Opt::ExitFd),
    long("ready-fd", true, Opt::ReadyFd),
    long("mtu", true, Opt::Mtu),
    long("cidr", true, Opt::Cidr),
    long("disable-host-loopback", false, Opt::DisableHostLoopback),
    long("no-host-loopback", false, Opt::NoHostLoopback),
    long("netns-type", true, Opt::NetnsType),
    long("userns-path", true, Opt::UsernsPath),
    long("api-socket", true, Opt::ApiSocket),
    long("enable-ipv6", false, Opt::EnableIpv6),
    long("enable-sandbox", false, Opt::EnableSandbox),
    long("create-sandbox", false, Opt::CreateSandbox),
    long("enable-seccomp", false, Opt::EnableSeccomp),
    long("help", false, Opt::Help),
    long("version", false, Opt::Version),
    long("outbound-addr", true, Opt::OutboundAddr),
    long("outbound-addr6", true, Opt::OutboundAddr6),
    long("disable-dns", false, Opt::DisableDns),
    long("macaddress", true, Opt::MacAddress),
    long("target-type", true, Opt::TargetType),
    long("debug", false, Opt::Debug),
    long("publish", true, Opt::Publish),
    long("disable-offload", false, Opt::DisableOffload),
    long("busy-poll", true, Opt::BusyPoll),
    long("splice-forwards", false, Opt::SpliceForwards),
    long("auto-forward", true, Opt::AutoForward),
];

/// The short options: slirp4netns's `"ce:r:m:a:6hv"` plus tapir's `p:`.
const SHORT_OPTIONS: &[(u8, Opt, bool)] = &[
    (b'c', Opt::Configure, false),
    (b'e', Opt::ExitFd, true),
    (b'r', Opt::ReadyFd, true),
    (b'm', Opt::Mtu, true),
    (b'a', Opt::ApiSocket, true),
    (b'6', Opt::EnableIpv6, false),
    (b'h', Opt::Help, false),
    (b'v', Opt::Version, false),
    (b'p', Opt::Publish, true),
];

const WARN_NO_HOST_LOOPBACK: &str =
    "WARNING: --no-host-loopback is deprecated and will be removed \
     in future releases, please use --disable-host-loopback instead.";
const WARN_CREATE_SANDBOX: &str = "WARNING: --create-sandbox is deprecated and will be removed in \
     future releases, please use --enable-sandbox instead.";
const WARN_TOO_MANY_ARGUMENTS: &str = "WARNING: too many arguments";

/// A GNU `getopt_long` scanner over `args` (argv without argv\[0\]).
struct Getopt<'a> {
    argv0: &'a str,
    args: &'a [OsString],
    /// Index of the next element to examine.
    next: usize,
    /// Inside a short-option cluster: (element index, byte offset of the next option character).
    cluster: Option<(usize, usize)>,
    /// Permute (GNU default) or stop at the first operand (`+` in the optstring).
    permute: bool,
    /// Operands, in order; after the scan, also everything after `--`.
    operands: Vec<&'a OsStr>,
}

impl<'a> Getopt<'a> {
    fn new(argv0: &'a str, args: &'a [OsString], permute: bool) -> Self {
        Getopt {
            argv0,
            args,
            next: 0,
            cluster: None,
            permute,
            operands: Vec::new(),
        }
    }

    /// Move every element from `from` on into the operands and end the scan.
    fn finish(&mut self, from: usize) {
        self.operands
            .extend(self.args[from..].iter().map(OsString::as_os_str));
        self.next = self.args.len();
    }

    /// The next option and its argument, `None` at the end of the options.
    fn next_opt(&mut self) -> Result<Option<(Opt, Option<&'a OsStr>)>, CliError> {
        if let Some((index, offset)) = self.cluster.take() {
            return self.short(index, offset).map(Some);
        }
        let args = self.args;
        while let Some(arg) = args.get(self.next) {
            let bytes = arg.as_bytes();
            if bytes == b"--" {
                self.finish(self.next + 1);
                return Ok(None);
            }
            if bytes.len() < 2 || bytes[0] != b'-' {
                if !self.permute {
                    self.finish(self.next);
                    return Ok(None);
                }
                self.operands.push(arg);
                self.next += 1;
                continue;
            }
            self.next += 1;
            return if bytes[1] == b'-' {
                self.long(&bytes[2..]).map(Some)
            } else {
                self.short(self.next - 1, 1).map(Some)
            };
        }
        Ok(None)
    }

    /// The option character at `args[index][offset]`.
    fn short(&mut self, index: usize, offset: usize) -> Result<(Opt, Option<&'a OsStr>), CliError> {
        let args = self.args;
        let bytes = args[index].as_bytes();
        let c = bytes[offset];
        let rest = &bytes[offset + 1..];
        let Some(&(_, opt, takes_arg)) = SHORT_OPTIONS.iter().find(|s| s.0 == c) else {
            let shown = String::from_utf8_lossy(&[c]).into_owned();
            return Err(CliError::usage(format!(
                "{}: invalid option -- '{shown}'",
                self.argv0
            )));
        };
        if !takes_arg {
            if !rest.is_empty() {
                self.cluster = Some((index, offset + 1));
            }
            return Ok((opt, None));
        }
        if !rest.is_empty() {
            return Ok((opt, Some(OsStr::from_bytes(rest))));
        }
        match args.get(self.next) {
            Some(value) => {
                self.next += 1;
                Ok((opt, Some(value.as_os_str())))
            }
            None => Err(CliError::usage(format!(
                "{}: option requires an argument -- '{}'",
                self.argv0,
                char::from(c)
            ))),
        }
    }

    /// A long option; `body` is the element without its leading `--`.
    fn long(&mut self, body: &'a [u8]) -> Result<(Opt, Option<&'a OsStr>), CliError> {
        let (name, value) = match body.iter().position(|&b| b == b'=') {
            Some(eq) => (&body[..eq], Some(OsStr::from_bytes(&body[eq + 1..]))),
            None => (body, None),
        };
        let shown = String::from_utf8_lossy(body);
        let found = match LONG_OPTIONS.iter().find(|o| o.name.as_bytes() == name) {
            Some(exact) => exact,
            None => {
                let candidates: Vec<&LongOpt> = LONG_OPTIONS
                    .iter()
                    .filter(|o| o.name.as_bytes().starts_with(name))
                    .collect();
                match candidates[..] {
                    [] => {
                        return Err(CliError::usage(format!(
                            "{}: unrecognized option '--{shown}'",
                            self.argv0
                        )))
                    }
                    [only] => only,
                    _ => {
                        // glibc treats two matches as ambiguous only if they differ in has_arg,
                        // flag or val; every entry here has its own `Opt`, so they always do.
                        let possibilities: String = candidates
                            .iter()
                            .map(|o| format!(" '--{}'", o.name))
                            .collect();
                        return Err(CliError::usage(format!(
                            "{}: option '--{shown}' is ambiguous; possibilities:{possibilities}",
                            self.argv0
                        )));
                    }
                }
            }
        };
        match (found.takes_arg, value) {
            (false, Some(_)) => Err(CliError::usage(format!(
                "{}: option '--{}' doesn't allow an argument",
                self.argv0, found.name
            ))),
            (false, None) => Ok((found.opt, None)),
            (true, Some(v)) => Ok((found.opt, Some(v))),
            (true, None) => match self.args.get(self.next) {
                Some(v) => {
                    self.next += 1;
                    Ok((found.opt, Some(v.as_os_str())))
                }
                None => Err(CliError::usage(format!(
                    "{}: option '--{}' requires an argument",
                    self.argv0, found.name
                ))),
            },
        }
    }
}

/// Why the option loop ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Help,
    Version,
}

/// The result of the option loop: slirp4netns's `options` plus the `optarg_*` it checks later.
struct Scan<'a> {
    options: Options,
    warnings: Vec<String>,
    netns_type: Option<&'a OsStr>,
    target_type: Option<&'a OsStr>,
    operands: Vec<&'a OsStr>,
    stop: Option<Stop>,
}

/// `strtol(s, &end, 10)` with `errno == 0 && *end == '\0'`, except that a string without digits
/// is rejected instead of read as 0. `None` if `s` is not such a number or overflows.
fn parse_c_long(s: &OsStr) -> Option<i64> {
    let bytes = s.as_bytes();
    // C isspace() in the "C" locale.
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i64 = 0;
    for d in digits {
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// A file descriptor number (`--exit-fd`, `--ready-fd`, a tapfd operand).
fn parse_fd(s: &OsStr) -> Option<RawFd> {
    parse_c_long(s)
        .filter(|&n| n >= 0)
        .and_then(|n| RawFd::try_from(n).ok())
}

/// `--exit-fd`/`--ready-fd` (`name`), with slirp4netns's message.
fn parse_fd_option(s: &OsStr, name: &str) -> Result<RawFd, CliError> {
    parse_fd(s).ok_or_else(|| CliError::usage(format!("{name} must be a non-negative integer")))
}

/// `--mtu` with slirp4netns's range check and tapir's lower bound.
fn parse_mtu(s: &OsStr) -> Result<u32, CliError> {
    let too_big_or_bad = || {
        CliError::usage(format!(
            "MTU must be a positive integer (< {})",
            config::MAX_MTU + 1
        ))
    };
    let n = parse_c_long(s).ok_or_else(too_big_or_bad)?;
    let mtu = u32::try_from(n)
        .ok()
        .filter(|&m| m > 0 && m <= config::MAX_MTU)
        .ok_or_else(too_big_or_bad)?;
    if mtu < config::MIN_MTU {
        return Err(CliError::usage(format!(
            "MTU must be at least {}",
            config::MIN_MTU
        )));
    }
    Ok(mtu)
}

/// `--busy-poll=USEC`: 0 ..= [`config::MAX_BUSY_POLL_US`].
fn parse_busy_poll(s: &OsStr) -> Result<u32, CliError> {
    parse_c_long(s)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n <= config::MAX_BUSY_POLL_US)
        .ok_or_else(|| {
            CliError::usage(format!(
                "busy-poll must be an integer from 0 to {} (microseconds)",
                config::MAX_BUSY_POLL_US
            ))
        })
}

/// `--auto-forward=tcp|udp|tcp,udp` (tapir's own, not in `--help`: pasta's `-t auto` /
/// `-u auto` for the slirp4netns front end).
fn parse_auto_forward(s: &OsStr) -> Result<config::AutoForward, CliError> {
    let mut a = config::AutoForward::default();
    for p in s.to_str().unwrap_or("").split(',') {
        match p {
            "tcp" => a.tcp = true,
            "udp" => a.udp = true,
            _ => {
                return Err(CliError::usage(
                    "auto-forward must be tcp, udp or tcp,udp".to_owned(),
                ))
            }
        }
    }
    Ok(a)
}

/// A value that is stored as a `String`.
fn utf8(value: &OsStr, what: &str) -> Result<String, CliError> {
    value
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::usage(format!("{what} must be valid UTF-8")))
}

/// The `strerror` text of an I/O error, as `perror` would print it.
fn strerror(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

/// Run the option loop over `args` (argv without argv\[0\], or without `argv[0] run`).
fn scan<'a>(argv0: &'a str, args: &'a [OsString], permute: bool) -> Result<Scan<'a>, CliError> {
    let mut getopt = Getopt::new(argv0, args, permute);
    let mut scan = Scan {
        options: Options::default(),
        warnings: Vec::new(),
        netns_type: None,
        target_type: None,
        operands: Vec::new(),
        stop: None,
    };
    while let Some((opt, value)) = getopt.next_opt()? {
        // `takes_arg` options always come with a value; the others never do.
        let arg = || value.unwrap_or_default();
        let o = &mut scan.options;
        match opt {
            Opt::Configure => o.configure = true,
            Opt::ExitFd => o.exit_fd = Some(parse_fd_option(arg(), "exit-fd")?),
            Opt::ReadyFd => o.ready_fd = Some(parse_fd_option(arg(), "ready-fd")?),
            Opt::Mtu => o.mtu = Some(parse_mtu(arg())?),
            Opt::Cidr => o.cidr = Some(utf8(arg(), "--cidr")?),
            Opt::NoHostLoopback => {
                scan.warnings.push(WARN_NO_HOST_LOOPBACK.to_owned());
                o.disable_host_loopback = true;
            }
            Opt::DisableHostLoopback => o.disable_host_loopback = true,
            Opt::NetnsType => scan.netns_type = Some(arg()),
            Opt::UsernsPath => {
                let path = Path::new(arg());
                if !path.exists() {
                    return Err(CliError::usage(format!(
                        "userns path doesn't exist: {}",
                        path.display()
                    )));
                }
                o.userns_path = Some(path.to_path_buf());
            }
            Opt::ApiSocket => o.api_socket = Some(PathBuf::from(arg())),
            Opt::EnableIpv6 => o.enable_ipv6 = true,
            Opt::CreateSandbox => {
                scan.warnings.push(WARN_CREATE_SANDBOX.to_owned());
                o.enable_sandbox = true;
            }
            Opt::EnableSandbox => o.enable_sandbox = true,
            Opt::EnableSeccomp => o.enable_seccomp = true,
            Opt::Help => {
                scan.stop = Some(Stop::Help);
                return Ok(scan);
            }
            Opt::Version => {
                scan.stop = Some(Stop::Version);
                return Ok(scan);
            }
            Opt::OutboundAddr => o.outbound_addr = Some(utf8(arg(), "--outbound-addr")?),
            Opt::OutboundAddr6 => o.outbound_addr6 = Some(utf8(arg(), "--outbound-addr6")?),
            Opt::DisableDns => o.disable_dns = true,
            Opt::MacAddress => o.macaddress = Some(utf8(arg(), "--macaddress")?),
            Opt::TargetType => scan.target_type = Some(arg()),
            Opt::Debug => o.debug = true,
            Opt::Publish => o.publish.push(utf8(arg(), "--publish")?),
            Opt::DisableOffload => o.disable_offload = true,
            Opt::BusyPoll => o.busy_poll_us = Some(parse_busy_poll(arg())?),
            Opt::SpliceForwards => o.splice_forwards = true,
            Opt::AutoForward => o.auto_forward = parse_auto_forward(arg())?,
        }
    }
    scan.operands = getopt.operands;
    Ok(scan)
}

/// The checks slirp4netns makes after its option loop, before looking at operands.
fn check_after_loop(scan: &Scan<'_>) -> Result<(), CliError> {
    if scan.options.macaddress.is_some() && !scan.options.configure {
        return Err(CliError::usage(
            "--macaddr cannot be specified when --configure or -c is not specified",
        ));
    }
    match scan.target_type.map(OsStr::as_bytes) {
        None | Some(b"netns") => Ok(()),
        Some(b"bess") => Err(CliError::plain(
            "--target-type=bess is not supported by tapir",
        )),
        Some(_) => Err(CliError::usage(
            "--target-type must be either \"netns\" or \"bess\"",
        )),
    }
}

/// slirp4netns mode: `[OPTION]... PID|PATH|FD [TAPNAME]`.
fn parse_attach(argv0: &str, args: &[OsString]) -> Result<(Command, Vec<String>), CliError> {
    let mut scan = scan(argv0, args, true)?;
    match scan.stop {
        Some(Stop::Help) => return Ok((Command::Help, scan.warnings)),
        Some(Stop::Version) => return Ok((Command::Version, scan.warnings)),
        None => {}
    }
    check_after_loop(&scan)?;
    let Some(&first) = scan.operands.first() else {
        return Err(CliError::usage(""));
    };
    // Anything but `pid` and `tapfd` (even a typo) means a path, as in slirp4netns.
    let target = match scan.netns_type.map(OsStr::as_bytes) {
        None | Some(b"pid") => {
            let pid = parse_c_long(first)
                .filter(|&n| n > 0)
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| CliError::usage("PID must be a positive integer"))?;
            Target::Pid(pid)
        }
        Some(b"tapfd") => Target::TapFd(
            parse_fd(first).ok_or_else(|| CliError::usage("TAPFD must a file descriptor"))?,
        ),
        Some(_) => {
            if let Err(e) = std::fs::metadata(first) {
                return Err(CliError::usage(format!(
                    "existing path expected when --netns-type=path: {}",
                    strerror(&e)
                )));
            }
            Target::Path(PathBuf::from(first))
        }
    };
    // slirp4netns takes no TAPNAME with a tapfd (it warns about one and ignores it).
    let wanted = if matches!(target, Target::TapFd(_)) {
        1
    } else {
        2
    };
    if scan.operands.len() < wanted {
        return Err(CliError::usage("PID|PATH and TAPNAME are required"));
    }
    if scan.operands.len() > wanted {
        scan.warnings.push(WARN_TOO_MANY_ARGUMENTS.to_owned());
    }
    if wanted == 2 {
        scan.options.tap_name = Some(utf8(scan.operands[1], "TAPNAME")?);
    }
    scan.options.target = Some(target);
    Ok((Command::Attach(scan.options), scan.warnings))
}

/// `tapir run [OPTION]... [--] CMD [ARG]...`; `args` starts after `run`.
fn parse_run(argv0: &str, args: &[OsString]) -> Result<(Command, Vec<String>), CliError> {
    let mut scan = scan(argv0, args, false)?;
    match scan.stop {
        Some(Stop::Help) => return Ok((Command::RunHelp, scan.warnings)),
        Some(Stop::Version) => return Ok((Command::Version, scan.warnings)),
        None => {}
    }
    scan.options.configure = true;
    check_after_loop(&scan)?;
    if scan.netns_type.is_some() {
        return Err(CliError::usage(
            "--netns-type cannot be used with tapir run (it creates its own namespaces)",
        ));
    }
    if scan.operands.is_empty() {
        return Err(CliError::usage("tapir run needs a command to run"));
    }
    let command = scan.operands.iter().map(|a| a.to_os_string()).collect();
    Ok((
        Command::Run {
            options: scan.options,
            command,
        },
        scan.warnings,
    ))
}

/// Whether `argv` is a `tapir run` command line (argv\[1\] is exactly `run`). Decides between
/// [`run_usage`] and [`usage`] after a [`CliError`] with `show_usage`.
pub fn is_run(argv: &[OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "run")
}

/// Parse argv (argv\[0\] included) like slirp4netns does, plus the `run` subcommand.
///
/// On success also returns the warnings slirp4netns would print on stdout while parsing, one
/// line each without newline, to be printed before acting on the command.
pub fn parse(argv: &[OsString]) -> Result<(Command, Vec<String>), CliError> {
    let argv0 = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| env!("CARGO_PKG_NAME").to_owned());
    if is_ctl(argv) {
        parse_ctl(&argv[2..]).map(|c| (c, Vec::new()))
    } else if is_run(argv) {
        parse_run(&argv0, &argv[2..])
    } else {
        parse_attach(&argv0, argv.get(1..).unwrap_or_default())
    }
}

/// slirp4netns HEAD's `--help` after its first line, byte for byte (spec Appendix A), including
/// the TABs in the `--netns-type` and `--userns-path` lines.
const SLIRP4NETNS_HELP_BODY: &str = concat!(
    "User-mode networking for unprivileged network namespaces.\n",
    "\n",
    "-c, --configure          bring up the interface\n",
    "-e, --exit-fd=FD         specify the FD for terminating slirp4netns\n",
    "-r, --ready-fd=FD        specify the FD to write to when the network is configured\n",
    "-m, --mtu=MTU            specify MTU (default=1500, max=65521)\n",
    "-6, --enable-ipv6        enable IPv6 (experimental)\n",
    "-a, --api-socket=PATH    specify API socket path\n",
    "--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)\n",
    "--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n",
    "--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)\n",
    "--userns-path=PATH\t specify user namespace path\n",
    "--enable-sandbox         create a new mount namespace (and drop all caps except CAP_NET_BIND_SERVICE if running as the root)\n",
    "--enable-seccomp         enable seccomp to limit syscalls (experimental)\n",
    "--outbound-addr=IPv4     sets outbound ipv4 address to bound to (experimental)\n",
    "--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (experimental)\n",
    "--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns redirect (experimental)\n",
    "--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)\n",
    "--target-type=TYPE       specify the target type ([netns|bess], default=netns)\n",
    "-h, --help               show this help and exit\n",
    "-v, --version            show version and exit\n",
);

/// The `--help` text: slirp4netns HEAD's, byte for byte, then tapir's additions. Ends with a
/// newline (print it with `print!`).
pub fn usage(argv0: &str) -> String {
    format!(
        "Usage: {argv0} [OPTION]... PID|PATH|FD [TAPNAME]\n\
         {SLIRP4NETNS_HELP_BODY}\
         \n\
         tapir extensions:\n\
         -p, --publish=[ADDR:]HPORT:GPORT[/udp]  forward a host port to the guest (podman syntax, repeatable)\n\
         --debug                  log every flow and frame decision to stderr\n\
         --disable-offload        plain frames on the tap: no TCP segmentation/checksum offload\n\
         --busy-poll=USEC         poll up to USEC (adaptive, default 50, max 1000, 0=off) before sleeping\n\
         --splice-forwards        relay TCP forwards from loopback clients inside the namespace (faster; the guest sees its own address as the client)\n\
         run [OPTION]... [--] CMD [ARG]...  create a user+network namespace, run CMD in it with networking (see '{argv0} run --help')\n\
         ctl SOCKET list|add SPEC|remove ID|info  manage port forwards through an API socket (see '{argv0} ctl --help')\n"
    )
}

/// The `tapir run --help` text. Ends with a newline.
pub fn run_usage(argv0: &str) -> String {
    let (net, prefix) = config::DEFAULT_CIDR;
    format!(
        "Usage: {argv0} run [OPTION]... [--] CMD [ARG]...\n\
         Create a user and network namespace, give it a tap device configured as with -c, and run\n\
         CMD in it with networking through tapir.\n\
         Options end at the first argument that is not an option, or at --: everything from there\n\
         on is CMD and its arguments.\n\
         \n\
         -m, --mtu=MTU            specify MTU (default={run_mtu}, min={min_mtu}, max={max_mtu})\n\
         -6, --enable-ipv6        enable IPv6\n\
         -a, --api-socket=PATH    specify API socket path\n\
         -p, --publish=[ADDR:]HPORT:GPORT[/udp]  forward a host port to the guest (podman syntax, repeatable)\n\
         -e, --exit-fd=FD         specify the FD for terminating tapir\n\
         -r, --ready-fd=FD        specify the FD to write to when the network is configured\n\
         --cidr=CIDR              specify network address CIDR (default={net}/{prefix})\n\
         --disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n\
         --enable-sandbox         create a new mount namespace (and drop all caps except CAP_NET_BIND_SERVICE if running as the root)\n\
         --enable-seccomp         enable seccomp to limit syscalls\n\
         --outbound-addr=IPv4     sets outbound ipv4 address to bound to\n\
         --outbound-addr6=IPv6    sets outbound ipv6 address to bound to\n\
         --disable-dns            do not redirect the DNS address to the host's DNS\n\
         --macaddress=MAC         specify the MAC address of the TAP\n\
         --debug                  log every flow and frame decision to stderr\n\
         --disable-offload        plain frames on the tap: no TCP segmentation/checksum offload\n\
         --busy-poll=USEC         poll up to USEC (adaptive, default 50, max 1000, 0=off) before sleeping\n\
         --splice-forwards        relay TCP forwards from loopback clients inside the namespace (faster; the guest sees its own address as the client)\n\
         -h, --help               show this help and exit\n\
         -v, --version            show version and exit\n",
        run_mtu = config::RUN_DEFAULT_MTU,
        min_mtu = config::MIN_MTU,
        max_mtu = config::MAX_MTU,
    )
}

/// Version of the smoltcp crate tapir is built with (as pinned in Cargo.lock).
const SMOLTCP_VERSION: &str = "0.14.0";

/// `SLIRP_CONFIG_VERSION_MAX` tapir claims: it implements every feature slirp4netns gates on it
/// (`--outbound-addr*` needs 2, `--disable-dns` 3). Upstream tests and podman grep this line.
const SLIRP_CONFIG_VERSION_MAX: u32 = 4;

/// The `--version` text, in slirp4netns's machine-parsable format. Ends with a newline.
pub fn version() -> String {
    let mut text = format!(
        "{} version {}\n",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(commit) = option_env!("TAPIR_GIT_COMMIT") {
        text.push_str(&format!("commit: {commit}\n"));
    }
    text.push_str(&format!("smoltcp: {SMOLTCP_VERSION}\n"));
    text.push_str(&format!(
        "SLIRP_CONFIG_VERSION_MAX: {SLIRP_CONFIG_VERSION_MAX}\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("slirp4netns")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn ok(args: &[&str]) -> (Command, Vec<String>) {
        parse(&argv(args)).unwrap_or_else(|e| panic!("{args:?}: unexpected error {e:?}"))
    }

    fn attach(args: &[&str]) -> Options {
        match ok(args) {
            (Command::Attach(o), _) => o,
            other => panic!("{args:?}: expected Attach, got {other:?}"),
        }
    }

    fn err(args: &[&str]) -> CliError {
        match parse(&argv(args)) {
            Err(e) => e,
            Ok(r) => panic!("{args:?}: expected an error, got {r:?}"),
        }
    }

    fn usage_err(args: &[&str], message: &str) {
        assert_eq!(err(args), CliError::usage(message), "{args:?}");
    }

    fn run(args: &[&str]) -> (Options, Vec<OsString>) {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        match ok(&full) {
            (Command::Run { options, command }, _) => (options, command),
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn option_tables_are_consistent() {
        for (i, a) in LONG_OPTIONS.iter().enumerate() {
            for b in &LONG_OPTIONS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.opt, b.opt, "ambiguity detection relies on distinct Opts");
            }
        }
        for &(c, opt, takes_arg) in SHORT_OPTIONS {
            let l = LONG_OPTIONS.iter().find(|l| l.opt == opt).unwrap();
            assert_eq!(l.takes_arg, takes_arg, "-{}", char::from(c));
        }
    }

    #[test]
    fn upstream_test_form_with_permutation() {
        let o = attach(&["-c", "1234", "--api-socket", "/tmp/slirp.sock", "tap11"]);
        assert_eq!(
            o,
            Options {
                configure: true,
                api_socket: Some("/tmp/slirp.sock".into()),
                target: Some(Target::Pid(1234)),
                tap_name: Some("tap11".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn rootlesskit_form() {
        let (cmd, warnings) = ok(&[
            "--mtu",
            "65520",
            "-r",
            "3",
            "--disable-host-loopback",
            "--api-socket",
            "/tmp/rootlesskit1/.s4nn.sock",
            "1234",
            "tap0",
        ]);
        assert!(warnings.is_empty());
        assert_eq!(
            cmd,
            Command::Attach(Options {
                mtu: Some(65520),
                ready_fd: Some(3),
                disable_host_loopback: true,
                api_socket: Some("/tmp/rootlesskit1/.s4nn.sock".into()),
                target: Some(Target::Pid(1234)),
                tap_name: Some("tap0".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn rootlesskit_detach_netns_form() {
        let o = attach(&[
            "--mtu",
            "65520",
            "-r",
            "3",
            "--userns-path=/proc/self/ns/user",
            "--netns-type=path",
            "/proc/self/ns/net",
            "tap0",
        ]);
        assert_eq!(o.userns_path, Some("/proc/self/ns/user".into()));
        assert_eq!(o.target, Some(Target::Path("/proc/self/ns/net".into())));
    }

    #[test]
    fn podman_form() {
        let (cmd, warnings) = ok(&[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--netns-type=path",
            "/proc/self/ns/net",
            "tap0",
        ]);
        assert!(warnings.is_empty());
        assert_eq!(
            cmd,
            Command::Attach(Options {
                configure: true,
                exit_fd: Some(4),
                ready_fd: Some(3),
                mtu: Some(65520),
                enable_ipv6: true,
                disable_host_loopback: true,
                enable_sandbox: true,
                enable_seccomp: true,
                target: Some(Target::Path("/proc/self/ns/net".into())),
                tap_name: Some("tap0".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn podman_4_forms() {
        let o = attach(&[
            "--cidr=10.0.3.0/24",
            "--outbound-addr=eth0",
            "--outbound-addr6",
            "fd00::1",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--api-socket",
            "/run/x.net",
            "4321",
            "tap0",
        ]);
        assert_eq!(o.cidr.as_deref(), Some("10.0.3.0/24"));
        assert_eq!(o.outbound_addr.as_deref(), Some("eth0"));
        assert_eq!(o.outbound_addr6.as_deref(), Some("fd00::1"));
        assert_eq!((o.exit_fd, o.ready_fd), (Some(3), Some(4)));
        assert_eq!(o.target, Some(Target::Pid(4321)));
    }

    #[test]
    fn every_flag_long_and_short() {
        let o = attach(&[
            "--configure",
            "--exit-fd=5",
            "--ready-fd",
            "6",
            "--enable-ipv6",
            "--api-socket=/a",
            "--disable-dns",
            "--macaddress=0e:d4:18:d9:38:fb",
            "--target-type=netns",
            "--debug",
            "--netns-type=pid",
            "1",
            "t",
        ]);
        assert!(o.configure && o.enable_ipv6 && o.disable_dns && o.debug);
        assert_eq!((o.exit_fd, o.ready_fd), (Some(5), Some(6)));
        assert_eq!(o.api_socket, Some("/a".into()));
        assert_eq!(o.macaddress.as_deref(), Some("0e:d4:18:d9:38:fb"));
        let s = attach(&["-c", "-e5", "-r", "6", "-6", "-a/a", "-m1500", "1", "t"]);
        assert!(s.configure && s.enable_ipv6);
        assert_eq!(
            (s.exit_fd, s.ready_fd, s.mtu),
            (Some(5), Some(6), Some(1500))
        );
        assert_eq!(s.api_socket, Some("/a".into()));
    }

    #[test]
    fn option_arguments_attached_or_separate() {
        for args in [
            &["-m1500", "1", "t"][..],
            &["-m", "1500", "1", "t"],
            &["--mtu=1500", "1", "t"],
            &["--mtu", "1500", "1", "t"],
            &["--mt=1500", "1", "t"],
            &["--mt", "1500", "1", "t"],
            &["1", "t", "--mtu", "1500"],
        ] {
            assert_eq!(attach(args).mtu, Some(1500), "{args:?}");
        }
    }

    #[test]
    fn required_argument_taken_whatever_it_looks_like() {
        assert_eq!(
            attach(&["-a", "-c", "1", "t"]).api_socket,
            Some("-c".into())
        );
        assert!(!attach(&["-a", "-c", "1", "t"]).configure);
        assert_eq!(
            attach(&["--api-socket", "--", "1", "t"]).api_socket,
            Some("--".into())
        );
        usage_err(
            &["-m", "--", "1", "t"],
            "MTU must be a positive integer (< 65522)",
        );
        usage_err(
            &["-e", "-1", "1", "t"],
            "exit-fd must be a non-negative integer",
        );
        // An empty attached value is a value.
        assert_eq!(
            attach(&["--api-socket=", "1", "t"]).api_socket,
            Some("".into())
        );
    }

    #[test]
    fn clusters() {
        let o = attach(&["-c6", "1", "t"]);
        assert!(o.configure && o.enable_ipv6);
        let o = attach(&["-6cm1500", "1", "t"]);
        assert!(o.configure && o.enable_ipv6);
        assert_eq!(o.mtu, Some(1500));
        let o = attach(&["-cm", "9000", "1", "t"]);
        assert_eq!(o.mtu, Some(9000));
        let o = attach(&["-ca", "/s", "-p80:8080", "1", "t"]);
        assert_eq!(o.api_socket, Some("/s".into()));
        assert_eq!(o.publish, vec!["80:8080".to_owned()]);
        usage_err(&["-cx", "1", "t"], "slirp4netns: invalid option -- 'x'");
        assert_eq!(ok(&["-ch", "1", "t"]).0, Command::Help);
        assert_eq!(ok(&["-6v"]).0, Command::Version);
    }

    #[test]
    fn long_prefixes() {
        assert!(attach(&["--conf", "1", "t"]).configure);
        assert!(attach(&["--co", "1", "t"]).configure);
        assert!(attach(&["--disable-h", "1", "t"]).disable_host_loopback);
        assert!(attach(&["--disable-d", "1", "t"]).disable_dns);
        assert!(attach(&["--enable-sa", "1", "t"]).enable_sandbox);
        assert_eq!(
            attach(&["--ci=10.0.3.0/24", "1", "t"]).cidr.as_deref(),
            Some("10.0.3.0/24")
        );
        assert_eq!(
            attach(&["--pub", "1:2", "1", "t"]).publish,
            vec!["1:2".to_owned()]
        );
        assert!(attach(&["--deb", "1", "t"]).debug);
        assert_eq!(ok(&["--he"]).0, Command::Help);
        assert_eq!(ok(&["--vers"]).0, Command::Version);
    }

    #[test]
    fn exact_match_beats_longer_name() {
        let o = attach(&["--outbound-addr=1.2.3.4", "1", "t"]);
        assert_eq!(o.outbound_addr.as_deref(), Some("1.2.3.4"));
        assert_eq!(o.outbound_addr6, None);
        let o = attach(&["--outbound-addr6=::1", "1", "t"]);
        assert_eq!(o.outbound_addr6.as_deref(), Some("::1"));
    }

    #[test]
    fn ambiguous_prefixes() {
        // tapir's own long options come after slirp4netns's, so a prefix slirp4netns resolves
        // still resolves the same; only the list in an ambiguity error can grow.
        usage_err(
            &["--dis", "1", "t"],
            "slirp4netns: option '--dis' is ambiguous; possibilities: \
             '--disable-host-loopback' '--disable-dns' '--disable-offload'",
        );
        usage_err(
            &["--dis=x", "1", "t"],
            "slirp4netns: option '--dis=x' is ambiguous; possibilities: \
             '--disable-host-loopback' '--disable-dns' '--disable-offload'",
        );
        usage_err(
            &["--en", "1", "t"],
            "slirp4netns: option '--en' is ambiguous; possibilities: \
             '--enable-ipv6' '--enable-sandbox' '--enable-seccomp'",
        );
        usage_err(
            &["--outbound", "x", "1", "t"],
            "slirp4netns: option '--outbound' is ambiguous; possibilities: \
             '--outbound-addr' '--outbound-addr6'",
        );
        usage_err(
            &["--c"],
            "slirp4netns: option '--c' is ambiguous; possibilities: \
             '--configure' '--cidr' '--create-sandbox'",
        );
        usage_err(
            &["--m=1"],
            "slirp4netns: option '--m=1' is ambiguous; possibilities: '--mtu' '--macaddress'",
        );
        usage_err(
            &["--d"],
            "slirp4netns: option '--d' is ambiguous; possibilities: \
             '--disable-host-loopback' '--disable-dns' '--debug' '--disable-offload'",
        );
    }

    #[test]
    fn getopt_diagnostics() {
        usage_err(
            &["--foo", "1", "t"],
            "slirp4netns: unrecognized option '--foo'",
        );
        usage_err(
            &["--foo=bar", "1", "t"],
            "slirp4netns: unrecognized option '--foo=bar'",
        );
        usage_err(&["-x", "1", "t"], "slirp4netns: invalid option -- 'x'");
        usage_err(
            &["1", "t", "--mtu"],
            "slirp4netns: option '--mtu' requires an argument",
        );
        usage_err(
            &["1", "t", "--mt"],
            "slirp4netns: option '--mtu' requires an argument",
        );
        usage_err(
            &["1", "t", "-m"],
            "slirp4netns: option requires an argument -- 'm'",
        );
        usage_err(
            &["1", "t", "-cm"],
            "slirp4netns: option requires an argument -- 'm'",
        );
        usage_err(
            &["--configure=1", "1", "t"],
            "slirp4netns: option '--configure' doesn't allow an argument",
        );
        usage_err(
            &["--conf=1", "1", "t"],
            "slirp4netns: option '--configure' doesn't allow an argument",
        );
        // argv[0] is used as given.
        let mut a = os(&["/usr/bin/tapir", "--nope"]);
        assert_eq!(
            parse(&a).unwrap_err().message,
            "/usr/bin/tapir: unrecognized option '--nope'"
        );
        a[1] = OsString::from_vec(b"--\xff".to_vec());
        assert_eq!(
            parse(&a).unwrap_err().message,
            "/usr/bin/tapir: unrecognized option '--\u{fffd}'"
        );
    }

    #[test]
    fn first_error_wins_and_help_stops_parsing() {
        assert_eq!(ok(&["-h"]), (Command::Help, vec![]));
        assert_eq!(ok(&["--help"]).0, Command::Help);
        assert_eq!(ok(&["-c", "-h", "--bogus-after-help"]).0, Command::Help);
        assert_eq!(ok(&["-h", "-m", "0", "--bogus"]).0, Command::Help);
        usage_err(
            &["-m", "0", "-h"],
            "MTU must be a positive integer (< 65522)",
        );
        usage_err(
            &["--bogus", "-h"],
            "slirp4netns: unrecognized option '--bogus'",
        );
        // Post-loop checks are never reached with -h/-v.
        assert_eq!(ok(&["--macaddress=x", "-h"]).0, Command::Help);
        assert_eq!(ok(&["--target-type=bess", "-v"]).0, Command::Version);
        assert_eq!(ok(&["--version"]).0, Command::Version);
        assert_eq!(ok(&["-v", "-h"]).0, Command::Version);
        // Warnings collected before -h are returned with it.
        assert_eq!(
            ok(&["--no-host-loopback", "-h"]),
            (Command::Help, vec![WARN_NO_HOST_LOOPBACK.to_owned()])
        );
    }

    #[test]
    fn double_dash_ends_options() {
        let o = attach(&["-c", "--", "1234", "tap0"]);
        assert!(o.configure);
        assert_eq!(o.target, Some(Target::Pid(1234)));
        usage_err(&["--", "-c", "tap0"], "PID must be a positive integer");
        let (cmd, w) = ok(&["1234", "--", "tap0", "--mtu"]);
        assert!(matches!(cmd, Command::Attach(ref o) if o.mtu.is_none()));
        assert_eq!(w, vec![WARN_TOO_MANY_ARGUMENTS.to_owned()]);
        // A lone "-" is an operand.
        usage_err(&["-", "t"], "PID must be a positive integer");
    }

    #[test]
    fn fd_validation() {
        for bad in ["-1", "x", "3x", "", " ", "99999999999", "3 "] {
            usage_err(
                &["-e", bad, "1", "t"],
                "exit-fd must be a non-negative integer",
            );
            usage_err(
                &["--ready-fd", bad, "1", "t"],
                "ready-fd must be a non-negative integer",
            );
        }
        assert_eq!(attach(&["-e", "0", "1", "t"]).exit_fd, Some(0));
        assert_eq!(attach(&["-e", "+7", "1", "t"]).exit_fd, Some(7));
        assert_eq!(attach(&["-e", " 7", "1", "t"]).exit_fd, Some(7));
        assert_eq!(attach(&["-r", "-0", "1", "t"]).ready_fd, Some(0));
        assert_eq!(
            attach(&["-r", "2147483647", "1", "t"]).ready_fd,
            Some(i32::MAX)
        );
    }

    #[test]
    fn mtu_validation() {
        for bad in [
            "0",
            "-1",
            "65522",
            "100000",
            "abc",
            "",
            "1500x",
            "1e3",
            "99999999999999999999",
        ] {
            usage_err(
                &["--mtu", bad, "1", "t"],
                "MTU must be a positive integer (< 65522)",
            );
        }
        for small in ["1", "67"] {
            usage_err(&["--mtu", small, "1", "t"], "MTU must be at least 68");
        }
        assert_eq!(attach(&["-m", "68", "1", "t"]).mtu, Some(config::MIN_MTU));
        assert_eq!(
            attach(&["-m", "65521", "1", "t"]).mtu,
            Some(config::MAX_MTU)
        );
        assert_eq!(attach(&["-m", "+1500", "1", "t"]).mtu, Some(1500));
    }

    #[test]
    fn userns_path_must_exist() {
        usage_err(
            &["--userns-path=/nonexistent/tapir-test", "1", "t"],
            "userns path doesn't exist: /nonexistent/tapir-test",
        );
        usage_err(&["--userns-path=", "1", "t"], "userns path doesn't exist: ");
        assert_eq!(
            attach(&["--userns-path", "/", "1", "t"]).userns_path,
            Some("/".into())
        );
    }

    #[test]
    fn macaddress_needs_configure() {
        usage_err(
            &["--macaddress=02:00:00:00:00:01", "1", "t"],
            "--macaddr cannot be specified when --configure or -c is not specified",
        );
        // Checked after the loop, so -c may come later.
        let o = attach(&["--macaddr", "02:00:00:00:00:01", "1", "t", "-c"]);
        assert_eq!(o.macaddress.as_deref(), Some("02:00:00:00:00:01"));
    }

    #[test]
    fn target_type() {
        usage_err(
            &["--target-type=vde", "1", "t"],
            "--target-type must be either \"netns\" or \"bess\"",
        );
        assert_eq!(
            err(&["--target-type=bess", "/tmp/bess.sock"]),
            CliError::plain("--target-type=bess is not supported by tapir")
        );
        assert_eq!(
            attach(&["--target-type", "netns", "1", "t"]).target,
            Some(Target::Pid(1))
        );
    }

    #[test]
    fn operands_pid_mode() {
        assert_eq!(err(&[]), CliError::usage(""));
        assert_eq!(err(&["-c"]), CliError::usage(""));
        usage_err(&["1234"], "PID|PATH and TAPNAME are required");
        usage_err(
            &["--netns-type=path", "/"],
            "PID|PATH and TAPNAME are required",
        );
        for bad in ["0", "abc", "12a", "", "99999999999"] {
            usage_err(&["--", bad, "t"], "PID must be a positive integer");
        }
        // A negative PID is an option to getopt.
        usage_err(&["-5", "t"], "slirp4netns: invalid option -- '5'");
        assert_eq!(
            attach(&["--netns-type", "pid", "42", "t"]).target,
            Some(Target::Pid(42))
        );
        let (cmd, w) = ok(&["42", "tap0", "extra", "more"]);
        assert_eq!(w, vec![WARN_TOO_MANY_ARGUMENTS.to_owned()]);
        match cmd {
            Command::Attach(o) => assert_eq!(o.tap_name.as_deref(), Some("tap0")),
            other => panic!("{other:?}"),
        }
        // Not truncated here (config does it).
        let o = attach(&["42", "averyveryverylongname"]);
        assert_eq!(o.tap_name.as_deref(), Some("averyveryverylongname"));
    }

    #[test]
    fn operands_path_mode() {
        usage_err(
            &["--netns-type=path", "/nonexistent/tapir-netns", "tap0"],
            "existing path expected when --netns-type=path: No such file or directory",
        );
        // Any type other than pid/tapfd is a path, as in slirp4netns.
        for t in ["path", "PATH", "foo", ""] {
            let o = attach(&["--netns-type", t, "/", "tap0"]);
            assert_eq!(o.target, Some(Target::Path("/".into())), "{t:?}");
        }
        // Non-UTF-8 paths are fine.
        let mut a = argv(&["--netns-type=path", "x", "tap0"]);
        a[2] = OsString::from_vec(b"/nonexistent/\xff".to_vec());
        assert!(parse(&a)
            .unwrap_err()
            .message
            .starts_with("existing path expected"));
    }

    #[test]
    fn operands_tapfd_mode() {
        let (cmd, w) = ok(&["--netns-type=tapfd", "5"]);
        assert!(w.is_empty());
        assert_eq!(
            cmd,
            Command::Attach(Options {
                target: Some(Target::TapFd(5)),
                ..Default::default()
            })
        );
        // slirp4netns takes no TAPNAME with a tapfd: it warns and ignores it.
        let (cmd, w) = ok(&["--netns-type=tapfd", "5", "tap0"]);
        assert_eq!(w, vec![WARN_TOO_MANY_ARGUMENTS.to_owned()]);
        assert!(matches!(cmd, Command::Attach(ref o) if o.tap_name.is_none()));
        for bad in ["x", "", "99999999999"] {
            usage_err(
                &["--netns-type=tapfd", "--", bad],
                "TAPFD must a file descriptor",
            );
        }
        assert_eq!(
            attach(&["--netns-type=tapfd", "0"]).target,
            Some(Target::TapFd(0))
        );
    }

    #[test]
    fn deprecated_aliases_warn() {
        let (cmd, w) = ok(&["--no-host-loopback", "--create-sandbox", "1", "t"]);
        assert_eq!(
            w,
            vec![
                "WARNING: --no-host-loopback is deprecated and will be removed in future \
                 releases, please use --disable-host-loopback instead."
                    .to_owned(),
                "WARNING: --create-sandbox is deprecated and will be removed in future \
                 releases, please use --enable-sandbox instead."
                    .to_owned(),
            ]
        );
        match cmd {
            Command::Attach(o) => assert!(o.disable_host_loopback && o.enable_sandbox),
            other => panic!("{other:?}"),
        }
        // Prefixes of the hidden aliases work too, and the new names do not warn.
        assert_eq!(ok(&["--no", "--cr", "1", "t"]).1.len(), 2);
        assert!(
            ok(&["--disable-host-loopback", "--enable-sandbox", "1", "t"])
                .1
                .is_empty()
        );
    }

    #[test]
    fn publish_and_debug() {
        let o = attach(&[
            "-p",
            "8080:80",
            "--publish=127.0.0.1:8443:443/udp",
            "-p8000:80",
            "--publish",
            "9:9",
            "--debug",
            "1",
            "t",
        ]);
        assert_eq!(
            o.publish,
            vec!["8080:80", "127.0.0.1:8443:443/udp", "8000:80", "9:9"]
        );
        assert!(o.debug);
        usage_err(
            &["1", "t", "-p"],
            "slirp4netns: option requires an argument -- 'p'",
        );
        usage_err(
            &["--debug=1"],
            "slirp4netns: option '--debug' doesn't allow an argument",
        );
    }

    #[test]
    fn offload_and_busy_poll() {
        let o = attach(&["1", "t"]);
        assert!(!o.disable_offload);
        assert_eq!(o.busy_poll_us, None);
        let o = attach(&["--disable-offload", "--busy-poll=0", "1", "t"]);
        assert!(o.disable_offload);
        assert_eq!(o.busy_poll_us, Some(0));
        assert_eq!(
            attach(&["--busy-poll", "1000", "1", "t"]).busy_poll_us,
            Some(1000)
        );
        let (o, _) = run(&["--busy-poll=20", "--disable-offload", "true"]);
        assert_eq!((o.busy_poll_us, o.disable_offload), (Some(20), true));
        assert!(!o.splice_forwards);
        assert!(attach(&["--splice-forwards", "1", "t"]).splice_forwards);
        assert!(run(&["--splice-forwards", "true"]).0.splice_forwards);
        for bad in ["1001", "-1", "x", "", "99999999999999999999"] {
            usage_err(
                &[&format!("--busy-poll={bad}"), "1", "t"],
                "busy-poll must be an integer from 0 to 1000 (microseconds)",
            );
        }
    }

    #[test]
    fn non_utf8_string_values_are_rejected() {
        let mut a = argv(&["1", "x"]);
        a[2] = OsString::from_vec(b"tap\xff".to_vec());
        assert_eq!(
            parse(&a).unwrap_err(),
            CliError::usage("TAPNAME must be valid UTF-8")
        );
        let mut a = argv(&["--cidr", "x", "1", "t"]);
        a[2] = OsString::from_vec(b"\xff".to_vec());
        assert_eq!(
            parse(&a).unwrap_err(),
            CliError::usage("--cidr must be valid UTF-8")
        );
    }

    #[test]
    fn run_splits_command() {
        let (o, cmd) = run(&["curl", "-s", "x"]);
        assert_eq!(cmd, os(&["curl", "-s", "x"]));
        assert!(o.configure, "-c is implied");
        assert_eq!(o.target, None);
        assert_eq!(o.tap_name, None);
        assert_eq!(o.mtu, None, "config applies run's default MTU");

        let (o, cmd) = run(&[
            "-m",
            "1500",
            "--publish",
            "8080:80",
            "-6",
            "--",
            "sh",
            "-c",
            "true",
        ]);
        assert_eq!(cmd, os(&["sh", "-c", "true"]));
        assert_eq!(o.mtu, Some(1500));
        assert_eq!(o.publish, vec!["8080:80"]);
        assert!(o.enable_ipv6);

        let (_, cmd) = run(&["--", "-x", "--", "y"]);
        assert_eq!(cmd, os(&["-x", "--", "y"]));
        let (_, cmd) = run(&["sh", "--", "--debug"]);
        assert_eq!(cmd, os(&["sh", "--", "--debug"]));
        let (o, cmd) = run(&["-", "--debug"]);
        assert_eq!(cmd, os(&["-", "--debug"]));
        assert!(!o.debug);

        let (o, _) = run(&["--macaddress=02:00:00:00:00:01", "true"]);
        assert_eq!(o.macaddress.as_deref(), Some("02:00:00:00:00:01"));
        let (o, _) = run(&["-c", "--disable-dns", "--api-socket=/s", "true"]);
        assert!(o.disable_dns);
        assert_eq!(o.api_socket, Some("/s".into()));
    }

    #[test]
    fn run_errors_and_help() {
        for args in [
            &["run"][..],
            &["run", "-c"],
            &["run", "--"],
            &["run", "--debug", "--"],
        ] {
            usage_err(args, "tapir run needs a command to run");
        }
        usage_err(
            &["run", "--bogus", "sh"],
            "slirp4netns: unrecognized option '--bogus'",
        );
        usage_err(&["run", "-m", "10", "sh"], "MTU must be at least 68");
        usage_err(
            &["run", "--target-type=x", "sh"],
            "--target-type must be either \"netns\" or \"bess\"",
        );
        usage_err(
            &["run", "--netns-type=path", "sh"],
            "--netns-type cannot be used with tapir run (it creates its own namespaces)",
        );
        assert_eq!(ok(&["run", "-h"]).0, Command::RunHelp);
        assert_eq!(ok(&["run", "--help", "sh"]).0, Command::RunHelp);
        assert_eq!(ok(&["run", "--version"]).0, Command::Version);
        // Options after the command belong to the command.
        let (_, cmd) = run(&["sh", "-h"]);
        assert_eq!(cmd, os(&["sh", "-h"]));
        // Deprecation warnings are returned in run mode too.
        let (_, w) = ok(&["run", "--no-host-loopback", "true"]);
        assert_eq!(w, vec![WARN_NO_HOST_LOOPBACK.to_owned()]);
        // Only argv[1] selects run mode.
        usage_err(&["-c", "run", "tap0"], "PID must be a positive integer");
        assert!(is_run(&argv(&["run"])));
        assert!(!is_run(&argv(&["-c", "run"])));
        assert!(!is_run(&argv(&["runx"])));
        assert!(!is_run(&[]));
    }

    #[test]
    fn empty_argv() {
        assert_eq!(parse(&[]), Err(CliError::usage("")));
    }

    #[test]
    fn usage_matches_slirp4netns() {
        let text = usage("slirp4netns");
        assert!(text.starts_with(
            "Usage: slirp4netns [OPTION]... PID|PATH|FD [TAPNAME]\n\
             User-mode networking for unprivileged network namespaces.\n\n\
             -c, --configure          bring up the interface\n"
        ));
        assert!(usage("/x/tapir").starts_with("Usage: /x/tapir [OPTION]..."));
        // What rootlesskit and podman look for.
        for needle in [
            "--netns-type",
            "--enable-ipv6",
            "--mtu",
            "--cidr",
            "--disable-host-loopback",
            "--api-socket",
            "--enable-sandbox",
            "--enable-seccomp",
            "--outbound-addr",
            "--disable-dns",
            "--macaddress",
        ] {
            assert!(text.contains(needle), "{needle}");
        }
        // The TABs, byte for byte.
        assert!(text.contains(
            "\n--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)\n"
        ));
        assert!(text.contains("\n--userns-path=PATH\t specify user namespace path\n"));
        assert_eq!(text.matches('\t').count(), 2);
        // slirp4netns's part ends with -v, then a blank line and tapir's part.
        assert!(
            text.contains("-v, --version            show version and exit\n\ntapir extensions:\n")
        );
        assert!(text.contains("--publish"));
        assert!(text.contains("--debug"));
        assert!(text.ends_with('\n'));
        assert_eq!(SLIRP4NETNS_HELP_BODY.lines().count(), 21);
    }

    #[test]
    fn run_usage_text() {
        let text = run_usage("tapir");
        assert!(text.starts_with("Usage: tapir run [OPTION]... [--] CMD [ARG]...\n"));
        assert!(text.contains("default=65520"));
        assert!(text.contains("--publish"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn version_text() {
        let text = version();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!("tapir version {}", env!("CARGO_PKG_VERSION"))
        );
        let rest = if option_env!("TAPIR_GIT_COMMIT").is_some() {
            assert!(lines[1].starts_with("commit: "));
            &lines[2..]
        } else {
            &lines[1..]
        };
        assert_eq!(rest, ["smoltcp: 0.14.0", "SLIRP_CONFIG_VERSION_MAX: 4"]);
        assert!(text.ends_with("SLIRP_CONFIG_VERSION_MAX: 4\n"));
    }

    #[test]
    fn c_long_parsing() {
        let p = |s: &str| parse_c_long(OsStr::new(s));
        assert_eq!(p("42"), Some(42));
        assert_eq!(p("-42"), Some(-42));
        assert_eq!(p("\t\n +42"), Some(42));
        assert_eq!(p("9223372036854775807"), Some(i64::MAX));
        assert_eq!(p("-9223372036854775808"), Some(i64::MIN));
        for bad in ["", " ", "+", "-", "4 2", "42 ", "0x10", "١"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(p("9223372036854775808"), None);
    }
}
