//! `tapir run [OPTION]... [--] CMD [ARG]...`: a new user+network namespace running CMD.
//!
//! # Theory of operation
//!
//! Selected when argv\[1\] is exactly `run` (a slirp4netns PID can never be `run`, so this
//! cannot shadow a valid slirp4netns command line that starts with an operand). The options are
//! slirp4netns's, scanned by the same loop as in slirp4netns mode, except that option parsing
//! stops at `--` or at the first operand, and everything from there on is the command
//! (`tapir run curl -s URL` passes `-s URL` to curl). `-c` is implied; there is no
//! PID|PATH|FD or TAPNAME, and `--netns-type` is refused. `-h` prints [`run_usage`].

use std::ffi::OsString;

use super::slirp4netns::{check_after_loop, scan, Stop};
use super::{CliError, Command};
use crate::config;

/// `tapir run [OPTION]... [--] CMD [ARG]...`; `args` starts after `run`.
pub(super) fn parse_run(
    argv0: &str,
    args: &[OsString],
) -> Result<(Command, Vec<String>), CliError> {
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
/// [`run_usage`] and [`super::usage`] after a [`CliError`] with `show_usage`.
pub fn is_run(argv: &[OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "run")
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
         -p, --publish=[ADDR:]HPORT:[[GUEST6]:]GPORT[/udp]  forward a host port to the guest (podman syntax, repeatable; [::] as GUEST6: the guest's IPv6 address)\n\
         -e, --exit-fd=FD         specify the FD for terminating tapir\n\
         -r, --ready-fd=FD        specify the FD to write to when the network is configured\n\
         --cidr=CIDR              specify network address CIDR (default={net}/{prefix})\n\
         --cidr6=PREFIX/64        IPv6 prefix with -6 (default=fd00::/64; gateway PREFIX::2, DNS PREFIX::3)\n\
         --disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n\
         --enable-sandbox         create a new mount namespace (and drop all caps except CAP_NET_BIND_SERVICE if running as the root)\n\
         --enable-seccomp         enable seccomp to limit syscalls\n\
         --outbound-addr=IPv4     sets outbound ipv4 address to bound to\n\
         --outbound-addr6=IPv6    sets outbound ipv6 address to bound to\n\
         --disable-dns            do not redirect the DNS address to the host's DNS\n\
         --macaddress=MAC         specify the MAC address of the TAP\n\
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
         -h, --help               show this help and exit\n\
         -v, --version            show version and exit\n",
        run_mtu = config::RUN_DEFAULT_MTU,
        min_mtu = config::MIN_MTU,
        max_mtu = config::MAX_MTU,
    )
}

#[cfg(test)]
mod tests {
    use super::super::slirp4netns::WARN_NO_HOST_LOOPBACK;
    use super::super::test_support::*;
    use super::*;

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
    fn run_usage_text() {
        let text = run_usage("tapir");
        assert!(text.starts_with("Usage: tapir run [OPTION]... [--] CMD [ARG]...\n"));
        assert!(text.contains("default=65520"));
        assert!(text.contains("--publish"));
        assert!(text.ends_with('\n'));
    }
}
