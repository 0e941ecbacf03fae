//! slirp4netns mode: `[OPTION]... PID|PATH|FD [TAPNAME]`, parsed as slirp4netns parses it.
//!
//! # Theory of operation
//!
//! tapir is a drop-in for slirp4netns, so argv is parsed the way slirp4netns 1.2.0/1.3.x parses it
//! (`main.c` `parse_args`): GNU `getopt_long(argc, argv, "ce:r:m:a:6hv", longopts)` (the shared
//! engine in [`super::getopt`], with permutation, over [`TABLE`]) followed by a few checks after
//! the loop. The `possibilities` of an ambiguity message are listed in slirp4netns's `longopts`
//! order; tapir's own long options come after slirp4netns's in the same list.
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
//! Numbers are read as slirp4netns reads them with `strtol(s, &end, 10)` and `*end == '\0'`
//! ([`parse_c_long`]).
//!
//! Differences from slirp4netns, all deliberate:
//! - MTU below [`config::MIN_MTU`] is rejected (`MTU must be at least 68`).
//! - `--target-type=bess` is not implemented and is rejected.
//! - `--debug`, `-p/--publish`, `--disable-offload`, `--busy-poll` and `--splice-forwards` are
//!   tapir's own options.
//! - The experimental-feature warnings slirp4netns prints (`-6`, `--enable-seccomp`,
//!   `--outbound-addr*`) describe slirp4netns's maturity, not tapir's, and are not emitted.
//! - `POSIXLY_CORRECT` is not consulted (no environment access): options are always permuted.
//! - Values stored in `String` fields (TAPNAME, `--cidr`, ...) must be valid UTF-8.
//!
//! The same option loop ([`scan`]) serves `tapir run` (see [`super::run`]), without permutation.

use std::ffi::{OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::getopt::{long, short, Getopt, LongOpt, ShortOpt, Table};
use super::policy::PolicyOpt;
use super::{parse_c_long, strerror, utf8, CliError, Command};
use crate::config::{self, Options, Target};

/// Every option tapir knows; one variant per `longopts` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Opt {
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
    Policy(super::policy::PolicyOpt),
    Cidr6,
}

/// slirp4netns HEAD's `longopts`, in its order (which is the order of the `possibilities` in an
/// ambiguity message), then tapir's own options.
const LONG_OPTIONS: &[LongOpt<Opt>] = &[
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
];

/// The short options: slirp4netns's `"ce:r:m:a:6hv"` plus tapir's `p:`.
const SHORT_OPTIONS: &[ShortOpt<Opt>] = &[
    short(b'c', false, Opt::Configure),
    short(b'e', true, Opt::ExitFd),
    short(b'r', true, Opt::ReadyFd),
    short(b'm', true, Opt::Mtu),
    short(b'a', true, Opt::ApiSocket),
    short(b'6', false, Opt::EnableIpv6),
    short(b'h', false, Opt::Help),
    short(b'v', false, Opt::Version),
    short(b'p', true, Opt::Publish),
];

/// slirp4netns's option table for the getopt engine.
static TABLE: Table<Opt> = Table {
    long: LONG_OPTIONS,
    // Apart, so that `--ci`, `--cid` stay `--cidr` and `--no` stays `--no-host-loopback` as
    // in slirp4netns.
    extra: &[
        long("cidr6", true, Opt::Cidr6),
        long(
            "no-user-policy",
            false,
            Opt::Policy(PolicyOpt::NoUserPolicy),
        ),
    ],
    short: SHORT_OPTIONS,
};

pub(super) const WARN_NO_HOST_LOOPBACK: &str =
    "WARNING: --no-host-loopback is deprecated and will be removed \
     in future releases, please use --disable-host-loopback instead.";
pub(super) const WARN_CREATE_SANDBOX: &str =
    "WARNING: --create-sandbox is deprecated and will be removed in \
     future releases, please use --enable-sandbox instead.";
pub(super) const WARN_TOO_MANY_ARGUMENTS: &str = "WARNING: too many arguments";

/// Why the option loop ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// `-h`/`--help`.
    Help,
    /// `-v`/`--version`.
    Version,
}

/// The result of the option loop: slirp4netns's `options` plus the `optarg_*` it checks later.
pub(super) struct Scan<'a> {
    /// The options so far (no target or TAPNAME yet).
    pub options: Options,
    /// Lines slirp4netns prints on stdout while parsing.
    pub warnings: Vec<String>,
    /// `--netns-type`, checked with the operands.
    pub netns_type: Option<&'a OsStr>,
    /// `--target-type`, checked after the loop.
    pub target_type: Option<&'a OsStr>,
    /// The operands, in order.
    pub operands: Vec<&'a OsStr>,
    /// Set when `-h` or `-v` ended the loop (nothing after it was looked at).
    pub stop: Option<Stop>,
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

/// Run the option loop over `args` (argv without argv\[0\], or without `argv[0] run`).
pub(super) fn scan<'a>(
    argv0: &'a str,
    args: &'a [OsString],
    permute: bool,
) -> Result<Scan<'a>, CliError> {
    let mut getopt = Getopt::new(argv0, args, &TABLE, permute);
    let mut scan = Scan {
        options: Options::default(),
        warnings: Vec::new(),
        netns_type: None,
        target_type: None,
        operands: Vec::new(),
        stop: None,
    };
    while let Some(found) = getopt.next_opt()? {
        // `takes_arg` options always come with a value; the others never do.
        let arg = || found.arg();
        let o = &mut scan.options;
        match found.opt {
            Opt::Configure => o.configure = true,
            Opt::ExitFd => o.exit_fd = Some(parse_fd_option(arg(), "exit-fd")?),
            Opt::ReadyFd => o.ready_fd = Some(parse_fd_option(arg(), "ready-fd")?),
            Opt::Mtu => o.mtu = Some(parse_mtu(arg())?),
            Opt::Cidr => o.cidr = Some(utf8(arg(), "--cidr")?),
            Opt::Cidr6 => o.cidr6 = Some(utf8(arg(), "--cidr6")?),
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
            Opt::Policy(p) => super::policy::apply(&mut o.policy, p, arg())?,
        }
    }
    scan.operands = getopt.into_operands();
    Ok(scan)
}

/// The checks slirp4netns makes after its option loop, before looking at operands.
pub(super) fn check_after_loop(scan: &Scan<'_>) -> Result<(), CliError> {
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
pub(super) fn parse_attach(
    argv0: &str,
    args: &[OsString],
) -> Result<(Command, Vec<String>), CliError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn option_tables_are_consistent() {
        for (i, a) in LONG_OPTIONS.iter().enumerate() {
            for b in &LONG_OPTIONS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.opt, b.opt, "ambiguity detection relies on distinct Opts");
            }
        }
        for s in SHORT_OPTIONS {
            let l = LONG_OPTIONS.iter().find(|l| l.opt == s.opt).unwrap();
            assert_eq!(l.takes_arg, s.takes_arg, "-{}", char::from(s.c));
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
        // tapir's --cidr6 never steals slirp4netns's abbreviations of --cidr.
        let o = attach(&["--cidr=10.0.3.0/24", "--cidr6", "fd00:1::/64", "1", "t"]);
        assert_eq!(o.cidr.as_deref(), Some("10.0.3.0/24"));
        assert_eq!(o.cidr6.as_deref(), Some("fd00:1::/64"));
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
             '--disable-host-loopback' '--disable-dns' '--debug' '--disable-offload' \
             '--deny' '--deny-private' '--default-deny' '--deny-icmp-reply'",
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
    fn no_user_policy_is_exact_only() {
        assert!(
            attach(&["--no-user-policy", "1", "t"])
                .policy
                .no_user_policy
        );
        // `--no` still abbreviates slirp4netns's `--no-host-loopback`.
        assert!(!attach(&["--no", "1", "t"]).policy.no_user_policy);
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
    fn empty_argv() {
        assert_eq!(parse(&[]), Err(CliError::usage("")));
    }
}
