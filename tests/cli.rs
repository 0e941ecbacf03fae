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
