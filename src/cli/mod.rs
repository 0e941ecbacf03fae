//! Command-line parsing: argv -> [`Command`] (with [`Options`] or
//! [`PastaOptions`] inside).
//!
//! # Theory of operation
//!
//! One binary, several front ends, chosen from argv before any option is looked at:
//!
//! | argv | front end | module |
//! |---|---|---|
//! | basename of argv\[0\] contains `pasta` | pasta's command line | `pasta` |
//! | argv\[1\] is exactly `pasta` | pasta's command line (after `pasta`) | `pasta` |
//! | argv\[1\] is exactly `ctl` | API socket client | `ctl` |
//! | argv\[1\] is exactly `run` | new namespace running a command | `run` |
//! | anything else | slirp4netns's command line | `slirp4netns` |
//!
//! The argv\[0\] rule is pasta's own (`strstr(basename(argv[0]), "pasta")`), so a symlink named
//! `pasta` (or `pasta.avx2`, ...) to tapir is what podman and rootlesskit find as their `pasta`.
//! None of the argv\[1\] words can start a valid slirp4netns command line (a PID is a number), so
//! the subcommands shadow nothing.
//!
//! slirp4netns and pasta both parse with glibc's `getopt_long`, reproduced once in `getopt`
//! and driven by each front end's own option table (slirp4netns permutes; pasta's optstring
//! starts with `+`: options end at the first operand). Each front end keeps its program's
//! messages and its order of checks; the only I/O here is the existence checks slirp4netns makes
//! at parse time. Nothing in this module prints or exits: [`parse`] returns the command, or a
//! [`CliError`] for the caller to print with the usage text [`error_usage`] picks, plus any
//! warning lines the program would print while parsing ([`warnings_to_stderr`] says where).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::config::{pasta::PastaOptions, Options};

mod ctl;
mod getopt;
mod pasta;
mod policy;
mod run;
mod slirp4netns;

pub use ctl::{ctl_usage, is_ctl, ConntrackOpts, CtlAction};
pub use pasta::{is_pasta, pasta_usage, pasta_version};
pub use run::{is_run, run_usage};

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
    /// pasta-compatible mode (see [`is_pasta`]): serve the namespace the options name.
    Pasta(PastaOptions),
    /// print help to stdout, exit 0
    Help,
    /// `tapir run --help`: print [`run_usage`] to stdout, exit 0
    RunHelp,
    /// `tapir ctl --help`: print [`ctl_usage`] to stdout, exit 0
    CtlHelp,
    /// pasta mode `-h`/`--help`: print [`pasta_usage`] to stdout, exit 0
    PastaHelp,
    /// print version to stdout, exit 0
    Version,
    /// pasta mode `--version`: print [`pasta_version`] to stdout, exit 0
    PastaVersion,
    /// `tapir ctl SOCKET ACTION`: talk to a running tapir's API socket.
    Ctl {
        /// The API socket path.
        socket: std::path::PathBuf,
        /// What to do.
        action: CtlAction,
    },
}

/// A command-line error. Exit status 1.
///
/// The caller prints `message` (if non-empty) on stderr, then, if `show_usage`, the usage text
/// [`error_usage`] gives for this argv, on the stream it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The diagnostic, possibly several lines, without trailing newline; empty when
    /// slirp4netns prints only the usage.
    pub message: String,
    /// Whether the program would print the usage text after the message.
    pub show_usage: bool,
}

impl CliError {
    /// An error followed by the usage text (slirp4netns `goto error`, a getopt error).
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

/// The usage text to print after a [`CliError`] with `show_usage`, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorUsage {
    /// The text, ending with a newline (print it with `print!`/`eprint!`).
    pub text: String,
    /// On stderr (pasta) rather than stdout (slirp4netns and tapir's subcommands).
    pub to_stderr: bool,
}

/// argv\[0\] as diagnostics show it (lossy UTF-8), `tapir` if argv is empty.
fn argv0(argv: &[OsString]) -> String {
    argv.first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| env!("CARGO_PKG_NAME").to_owned())
}

/// The usage text that goes with an error for this argv (the same front end [`parse`] picks).
pub fn error_usage(argv: &[OsString]) -> ErrorUsage {
    let argv0 = argv0(argv);
    let (text, to_stderr) = if is_pasta(argv) {
        (pasta_usage(argv), true)
    } else if is_ctl(argv) {
        (ctl_usage(&argv0), false)
    } else if is_run(argv) {
        (run_usage(&argv0), false)
    } else {
        (usage(&argv0), false)
    };
    ErrorUsage { text, to_stderr }
}

/// Whether the warning lines [`parse`] returns for this argv go to stderr (pasta's `warn()`)
/// rather than stdout (slirp4netns prints its warnings with `printf`).
pub fn warnings_to_stderr(argv: &[OsString]) -> bool {
    is_pasta(argv)
}

/// Parse argv (argv\[0\] included) with the front end it selects (see the module docs).
///
/// On success also returns the warnings the program would print while parsing, one line each
/// without newline, to be printed (see [`warnings_to_stderr`]) before acting on the command.
pub fn parse(argv: &[OsString]) -> Result<(Command, Vec<String>), CliError> {
    let argv0 = argv0(argv);
    if let Some(args) = pasta::args(argv) {
        pasta::parse_pasta(&argv0, args)
    } else if is_ctl(argv) {
        ctl::parse_ctl(&argv[2..]).map(|c| (c, Vec::new()))
    } else if is_run(argv) {
        run::parse_run(&argv0, &argv[2..])
    } else {
        slirp4netns::parse_attach(&argv0, argv.get(1..).unwrap_or_default())
    }
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
         -p, --publish=[ADDR:]HPORT:[[GUEST6]:]GPORT[/udp]  forward a host port to the guest (podman syntax, repeatable; [::] as GUEST6: the guest's IPv6 address)\n\
         --cidr6=PREFIX/64        IPv6 prefix with -6 (default=fd00::/64; gateway PREFIX::2, DNS PREFIX::3)\n\
         --debug                  log every flow and frame decision to stderr\n\
         --disable-offload        plain frames on the tap: no TCP segmentation/checksum offload\n\
         --busy-poll=USEC         spin up to USEC before sleeping (adaptive; default 0 = off, max 1000)\n\
         --splice-forwards        relay TCP forwards from loopback clients inside the namespace (faster; the guest sees its own address as the client)\n\
         --allow=RULE, --deny=RULE  egress rule CIDR[:PORT[-PORT]][/tcp|/udp|/icmp], first match wins (repeatable)\n\
         --policy-file=PATH       egress rules from PATH, one 'allow RULE' or 'deny RULE' per line\n\
         --deny-private           deny private, CGNAT, link-local (metadata), ULA and the host's own addresses\n\
         --default-deny           deny what no rule allows (DNS to the host's resolver stays allowed)\n\
         --deny-icmp-reply        answer a denied TCP connect with ICMP prohibited instead of RST\n\
         --no-user-policy         skip the per-user policy file ($XDG_CONFIG_HOME/tapir/policy, default ~/.config/tapir/policy)\n\
         run [OPTION]... [--] CMD [ARG]...  create a user+network namespace, run CMD in it with networking (see '{argv0} run --help')\n\
         ctl SOCKET list|add SPEC|remove ID|info  manage port forwards through an API socket (see '{argv0} ctl --help')\n"
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

/// Helpers shared by the front ends' unit tests.
#[cfg(test)]
mod test_support {
    pub(super) use super::parse;
    use super::{CliError, Command, Options};
    use std::ffi::OsString;

    /// argv with `slirp4netns` as argv\[0\].
    pub(super) fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("slirp4netns")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// A successful parse of [`argv`]`(args)`.
    pub(super) fn ok(args: &[&str]) -> (Command, Vec<String>) {
        parse(&argv(args)).unwrap_or_else(|e| panic!("{args:?}: unexpected error {e:?}"))
    }

    /// The options of a successful slirp4netns-mode parse.
    pub(super) fn attach(args: &[&str]) -> Options {
        match ok(args) {
            (Command::Attach(o), _) => o,
            other => panic!("{args:?}: expected Attach, got {other:?}"),
        }
    }

    /// The error of a failed parse.
    pub(super) fn err(args: &[&str]) -> CliError {
        match parse(&argv(args)) {
            Err(e) => e,
            Ok(r) => panic!("{args:?}: expected an error, got {r:?}"),
        }
    }

    /// A failed parse with this message, followed by the usage.
    pub(super) fn usage_err(args: &[&str], message: &str) {
        assert_eq!(err(args), CliError::usage(message), "{args:?}");
    }

    /// `tapir run ARGS`: its options and command.
    pub(super) fn run(args: &[&str]) -> (Options, Vec<OsString>) {
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        match ok(&full) {
            (Command::Run { options, command }, _) => (options, command),
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    /// Strings as `OsString`s.
    pub(super) fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
