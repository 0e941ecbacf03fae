//! Command-line behaviour of the real binary: help, version, bad arguments and exit codes.
//! No namespaces needed.

mod common;
use common::run_cli;

#[test]
fn help_exits_zero_on_stdout_with_slirp4netns_lines() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(err.is_empty(), "help goes to stdout only: {err}");
    assert!(out.contains("PID|PATH|FD [TAPNAME]"));
    // Substrings podman (checkSlirpFlags) and rootlesskit (DetectFeatures) look for.
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
        "--userns-path",
        "--exit-fd",
        "--ready-fd",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}");
    }
    // Byte-exact slirp4netns line including its TAB characters.
    assert!(out.contains(
        "--netns-type=TYPE \t specify network namespace type ([path|pid|tapfd], default=pid)\n"
    ));
    let (code, short, _) = run_cli(&["-h"]);
    assert_eq!(code, Some(0));
    assert_eq!(short, out);
}

#[test]
fn version_is_machine_parsable() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("tapir version "), "{out}");
    assert!(lines.contains(&"SLIRP_CONFIG_VERSION_MAX: 4"), "{out}");
    assert_eq!(run_cli(&["-v"]).1, out);
}

fn fails_with(args: &[&str], stderr_needle: &str, usage: bool) {
    let (code, out, err) = run_cli(args);
    assert_eq!(code, Some(1), "{args:?} must exit 1; stderr: {err}");
    assert!(
        err.contains(stderr_needle),
        "{args:?}: stderr {err:?} lacks {stderr_needle:?}"
    );
    assert_eq!(
        out.contains("Usage:"),
        usage,
        "{args:?}: usage on stdout = {usage}: {out}"
    );
}

#[test]
fn bad_arguments_exit_1_with_slirp4netns_messages() {
    fails_with(&["--cidr", "24", "1", "tap0"], "invalid CIDR: 24", false);
    fails_with(&["--cidr", "foo", "1", "tap0"], "invalid CIDR: foo", false);
    fails_with(
        &["--cidr", "10.0.2.0/26", "1", "tap0"],
        "prefix length needs to be 1-25",
        false,
    );
    fails_with(
        &["--cidr", "10.0.2.100/24", "1", "tap0"],
        "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24",
        false,
    );
    fails_with(
        &["--mtu", "65522", "1", "tap0"],
        "MTU must be a positive integer (< 65522)",
        true,
    );
    fails_with(
        &["--mtu", "abc", "1", "tap0"],
        "MTU must be a positive integer",
        true,
    );
    fails_with(
        &["--mtu", "67", "1", "tap0"],
        "MTU must be at least 68",
        true,
    );
    fails_with(
        &["--macaddress", "0e:d4:18:d9:38:fb", "1", "tap0"],
        "--macaddr cannot be specified when --configure or -c is not specified",
        true,
    );
    fails_with(
        &["-c", "--macaddress", "01:00:5e:00:00:01", "1", "tap0"],
        "invalid MAC address",
        false,
    );
    fails_with(&["notapid", "tap0"], "PID must be a positive integer", true);
    fails_with(&["0", "tap0"], "PID must be a positive integer", true);
    fails_with(
        &["--netns-type=path", "/nonexistent/netns", "tap0"],
        "existing path expected when --netns-type=path",
        true,
    );
    fails_with(
        &["--userns-path=/nonexistent/userns", "1", "tap0"],
        "userns path doesn't exist: /nonexistent/userns",
        true,
    );
    fails_with(
        &["--exit-fd", "-1", "1", "tap0"],
        "exit-fd must be a non-negative integer",
        true,
    );
    fails_with(
        &["--ready-fd", "x", "1", "tap0"],
        "ready-fd must be a non-negative integer",
        true,
    );
    fails_with(
        &["--target-type", "foo", "1", "tap0"],
        "--target-type must be either \"netns\" or \"bess\"",
        true,
    );
    fails_with(
        &["--no-such-option", "1", "tap0"],
        "unrecognized option '--no-such-option'",
        true,
    );
    fails_with(&["-x", "1", "tap0"], "invalid option -- 'x'", true);
    fails_with(
        &["--outbound-addr", "bad/if", "1", "tap0"],
        "outbound-addr has to be valid ipv4 address or interface name.",
        false,
    );
    let long = format!("/tmp/{}", "a".repeat(120));
    fails_with(
        &["--api-socket", &long, "1", "tap0"],
        "the specified API socket path is too long (>= 108)",
        false,
    );
    // No positional at all: usage, exit 1.
    let (code, out, _) = run_cli(&[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("Usage:"));
}

#[test]
fn missing_target_process_is_a_clear_error() {
    let (code, _, err) = run_cli(&["999999999", "tap0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/proc/999999999/ns/"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn run_without_command_fails() {
    let (code, _, err) = run_cli(&["run"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("needs a command"), "{err}");
    let (code, _, err) = run_cli(&["run", "--userns-path=/proc/self/ns/user", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--userns-path cannot be used with tapir run"),
        "{err}"
    );
    let (code, out, _) = run_cli(&["run", "--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("run"), "{out}");
}

/// tapir with `--netns-type=tapfd 5`, where the shell opens fd 5 with `redirect` (e.g.
/// `5</etc/hostname`). Its stdin is a pipe whose write end this test holds open, so a tapir that
/// took `5<&0` for a tap would block reading it instead of seeing end of file. Waits at most
/// 5 s; returns (exit code, None if it had to be killed; stdout; stderr).
fn tapfd_run(redirect: &str) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("exec \"$0\" --netns-type=tapfd 5 {redirect}"),
            &common::tapir_bin().to_string_lossy(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapir");
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err)
}

#[test]
fn tapfd_that_is_not_a_tap_is_refused_before_the_banner() {
    let dir = common::Scratch::new("tapfd");
    let file = dir.path("regular");
    // Empty: even a tapir that took it for a tap would read no frame from it.
    std::fs::write(&file, "").unwrap();
    let file = common::shell_quote(&file.to_string_lossy());
    for (redirect, kind) in [
        ("5<&0".to_owned(), "a pipe"),
        (format!("5<{file}"), "a regular file"),
        ("5<>/dev/null".to_owned(), "a character device"),
    ] {
        let (code, out, err) = tapfd_run(&redirect);
        assert_eq!(
            code,
            Some(1),
            "{redirect}: must exit 1 at once; stderr: {err}"
        );
        assert!(
            err.contains(&format!("fd 5 is not a tap device (it is {kind}); pass a /dev/net/tun descriptor attached with ioctl(TUNSETIFF)")),
            "{redirect}: {err}"
        );
        assert_eq!(out, "", "{redirect}: refused before the banner");
    }
    // Not open at all.
    let (code, out, err) = tapfd_run("");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fd 5 is not open"), "{err}");
    assert_eq!(out, "");
}

/// Run the binary through a symlink named `name` in a scratch directory; returns (code,
/// stdout, stderr) and the symlink's path (argv\[0\] as the binary sees it).
fn run_as(name: &str, args: &[&str]) -> (Option<i32>, String, String, String) {
    let dir = common::Scratch::new("pasta-link");
    let link = dir.path(name);
    std::os::unix::fs::symlink(common::tapir_bin(), &link).expect("symlink");
    let out = std::process::Command::new(&link)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the symlink");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        link.to_string_lossy().into_owned(),
    )
}

#[test]
fn pasta_symlink_selects_pasta_mode() {
    // --version: stdout (a pipe here), flushed, mentions tapir.
    let (code, out, err, _) = run_as("pasta", &["--version"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tapir"), "{out:?}");
    assert!(out.contains("pasta"), "{out:?}");
    assert_eq!(err, "");
    // Any basename containing "pasta" counts, as in pasta.
    let (code, avx2, _, _) = run_as("pasta.avx2", &["--version"]);
    assert_eq!((code, avx2), (Some(0), out));
    // --help: stdout, exit 0, argv[0] as invoked.
    let (code, out, err, link) = run_as("pasta", &["--help"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err, "");
    assert!(
        out.starts_with(&format!("Usage: {link} [OPTION]... [PID]\n")),
        "{out}"
    );
    assert!(out.contains("--map-guest-addr"), "{out}");
    let (_, short, _, short_link) = run_as("pasta", &["-h"]);
    assert_eq!(short.replace(&short_link, "P"), out.replace(&link, "P"));
}

#[test]
fn pasta_refuses_unsupported_options_exactly() {
    let (code, out, err, _) = run_as("pasta", &["--config-net", "--pcap", "/tmp/x.pcap", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(err, "tapir: pasta option --pcap is not supported\n");
    assert_eq!(out, "");
    // rootlesskit 2.3.2's feature probe must fail.
    let (code, out, err, _) = run_as("pasta", &["--host-lo-to-ns-lo", "--version"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "tapir: pasta option --host-lo-to-ns-lo is not supported\n"
    );
    assert_eq!(out, "");
    // A command to spawn.
    let (code, _, err, _) = run_as("pasta", &["--config-net", "sh", "-c", "true"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "tapir: pasta option COMMAND is not supported (use tapir run)\n"
    );
    // pasta's own messages are bare.
    let (code, _, err, _) = run_as("pasta", &["--mtu", "70000", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(err, "MTU 70000 too large (max 65521)\n");
}

#[test]
fn pasta_unknown_option_is_getopts_message_and_usage_on_stderr() {
    let (code, out, err, link) = run_as("pasta", &["--foo", "1"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "", "usage goes to stderr in pasta mode");
    assert!(
        err.starts_with(&format!(
            "{link}: unrecognized option '--foo'\nUsage: {link} [OPTION]... [PID]\n"
        )),
        "{err}"
    );
    let (code, _, err, link) = run_as("pasta", &["-x"]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("{link}: invalid option -- 'x'\n")),
        "{err}"
    );
}

#[test]
fn pasta_stderr_option_warns_and_goes_on() {
    let (code, out, err, _) = run_as("pasta", &["-e", "--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(err, "--stderr will be dropped soon\n");
    assert!(out.contains("tapir"));
}

#[test]
fn tapir_pasta_subcommand() {
    let (code, out, err) = run_cli(&["pasta", "--version"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("tapir"), "{out:?}");
    let (code, out, err) = run_cli(&["pasta", "--help"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pasta [OPTION]... [PID]"), "{out}");
    assert!(err.is_empty());
    let (code, out, err) = run_cli(&["pasta", "--no-tcp"]);
    assert_eq!(code, Some(1));
    assert_eq!(err, "tapir: pasta option --no-tcp is not supported\n");
    assert_eq!(out, "");
    // Diagnostics start with argv[0] as given.
    let (code, out, err) = run_cli(&["pasta", "--bogus"]);
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    let bin = common::tapir_bin();
    assert!(
        err.starts_with(&format!(
            "{}: unrecognized option '--bogus'\nUsage: {} pasta [OPTION]...",
            bin.display(),
            bin.display()
        )),
        "{err}"
    );
}
