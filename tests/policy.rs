//! Egress policy: denied flows are refused at once (TCP RST, ICMP administratively prohibited
//! for UDP and echo), rules apply in order, `--deny-private` leaves the gateway and DNS
//! working, the API changes the policy for new flows only unless `kill_matching`, and
//! `--policy-file` and the per-user policy file (`$XDG_CONFIG_HOME/tapir/policy`, or
//! `$HOME/.config/tapir/policy`) are read with file:line errors, the latter in every mode
//! unless `--no-user-policy`.
//!
//! Every server listens on `lo` of the private host namespace (198.51.100.1/32 and
//! 169.254.169.254/32 are added there as "other hosts"); nothing leaves the machine.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn start(host: &HostNs, extra: &[&str]) -> (Guest, Tapir) {
    let mut args = vec!["-c"];
    args.extend_from_slice(extra);
    host.start(&args)
}

/// A TCP connect from the guest: Ok(output) or Err(stderr), and how long it took.
fn connect(g: &Guest, ip: &str, port: u16) -> (Result<String, String>, Duration) {
    let t0 = Instant::now();
    let out = g.sh_any(&format!("ncat -w 3 {ip} {port} </dev/null"));
    let took = t0.elapsed();
    if out.status.success() {
        (Ok(String::from_utf8_lossy(&out.stdout).into_owned()), took)
    } else {
        (Err(String::from_utf8_lossy(&out.stderr).into_owned()), took)
    }
}

fn refused_fast(g: &Guest, t: &Tapir, ip: &str, port: u16) {
    let (r, took) = connect(g, ip, port);
    let err = r.expect_err("the connect must fail");
    assert!(err.contains("Connection refused"), "{err}\n{}", t.logs());
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
}

fn greet(host: &HostNs, ip: &str, port: u16) -> Bg {
    let b = host.spawn(As::Runner, &format!("{} greet {ip} {port}", tcpserve()));
    host.wait_listening(port, false);
    b
}

/// A UDP exchange from a connected guest socket: "ok", or the errno name it failed with.
fn udp(g: &Guest, ip: &str, port: u16) -> String {
    g.ok(&format!(
        r#"python3 -c '
import socket, errno
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("{ip}", {port}))
try:
    s.send(b"x"); s.recv(100); s.send(b"x"); s.recv(100); print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, "timeout"))
'"#
    ))
    .trim()
    .to_owned()
}

#[test]
fn denied_tcp_udp_icmp_are_refused_at_once() {
    let Some(host) = host() else { return };
    need!("ncat", "python3", "ping");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _s = greet(&host, "198.51.100.1", 18190);
    let _u = host.spawn(
        As::Runner,
        &format!("{} udpecho 198.51.100.1 18191", tcpserve()),
    );
    host.wait_listening(18191, true);
    let (g, t) = start(
        &host,
        &[
            "--deny=198.51.100.0/24:18190/tcp",
            "--deny=198.51.100.1/udp",
            "--deny=198.51.100.1/icmp",
        ],
    );
    refused_fast(&g, &t, "198.51.100.1", 18190);
    let t0 = Instant::now();
    assert_eq!(
        udp(&g, "198.51.100.1", 18191),
        "EHOSTUNREACH",
        "{}",
        t.logs()
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    let t0 = Instant::now();
    let out = g.sh_any("ping -c 1 -W 3 198.51.100.1");
    assert!(!out.status.success());
    assert!(t0.elapsed() < Duration::from_secs(2), "ping waited");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .to_lowercase();
    assert!(
        text.contains("filtered") || text.contains("prohibited"),
        "{text}"
    );
}

#[test]
fn deny_icmp_reply_for_tcp() {
    let Some(host) = host() else { return };
    need!("ncat");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _s = greet(&host, "198.51.100.1", 18192);
    let (g, t) = start(&host, &["--deny=198.51.100.1", "--deny-icmp-reply"]);
    let (r, took) = connect(&g, "198.51.100.1", 18192);
    let err = r.expect_err("denied");
    assert!(err.contains("No route to host"), "{err}\n{}", t.logs());
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn first_match_wins_in_command_line_order() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _a = greet(&host, "198.51.100.1", 18193);
    let _b = greet(&host, "198.51.100.1", 18194);
    {
        let (g, t) = start(
            &host,
            &["--allow=198.51.100.1:18193/tcp", "--deny=198.51.100.0/24"],
        );
        assert_eq!(
            connect(&g, "198.51.100.1", 18193).0,
            Ok("ok\n".into()),
            "{}",
            t.logs()
        );
        refused_fast(&g, &t, "198.51.100.1", 18194);
    }
    let (g, t) = start(
        &host,
        &["--deny=198.51.100.0/24", "--allow=198.51.100.1:18193/tcp"],
    );
    refused_fast(&g, &t, "198.51.100.1", 18193);
    // --default-deny with an allow.
    drop((g, t));
    let (g, t) = start(&host, &["--default-deny", "--allow=198.51.100.1:18194"]);
    assert_eq!(
        connect(&g, "198.51.100.1", 18194).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
    refused_fast(&g, &t, "198.51.100.1", 18193);
}

#[test]
fn deny_private_blocks_metadata_but_not_gateway_or_dns() {
    let Some(host) = host() else { return };
    need!("ncat", "python3", "dig", "dnsmasq");
    host.sh(As::Runner, "ip addr add 169.254.169.254/32 dev lo");
    let _m = greet(&host, "169.254.169.254", 18195);
    let _l = greet(&host, "127.0.0.1", 18196);
    let _d = host.spawn(
        As::Runner,
        "dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
         --listen-address=127.0.0.1 --port=53 --user=root --pid-file= \
         --address=/tapir.test/192.0.2.1",
    );
    host.wait_listening(53, true);
    let (g, t) = start(&host, &["--deny-private", "--default-deny"]);
    refused_fast(&g, &t, "169.254.169.254", 18195);
    // The gateway is the host's loopback: not private, so --deny-private keeps it; under
    // --default-deny it needs its own allow... which it does not get here: refused.
    refused_fast(&g, &t, "10.0.2.2", 18196);
    let dns = g.ok("dig +short +time=2 +tries=1 @10.0.2.3 tapir.test");
    assert_eq!(dns.trim(), "192.0.2.1", "{}", t.logs());
    drop((g, t));
    let (g, t) = start(&host, &["--deny-private"]);
    refused_fast(&g, &t, "169.254.169.254", 18195);
    assert_eq!(
        connect(&g, "10.0.2.2", 18196).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
    let dns = g.ok("dig +short +time=2 +tries=1 @10.0.2.3 tapir.test");
    assert_eq!(dns.trim(), "192.0.2.1", "{}", t.logs());
}

#[test]
fn api_changes_affect_new_flows_unless_kill_matching() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _keep = host.spawn(As::Runner, "ncat -l -k 198.51.100.1 18197");
    host.wait_listening(18197, false);
    let dir = Scratch::new("policy-api");
    let sock = dir.path("api.sock");
    let sock_arg = sock.display().to_string();
    let (g, t) = start(&host, &["--api-socket", &sock_arg]);
    // A long-lived guest connection that reports its end in a file.
    let mark = dir.path("state");
    let _ = std::fs::remove_file(&mark);
    g.ok(&format!(
        r#"python3 -c '
import socket, time, sys, os
s = socket.create_connection(("198.51.100.1", 18197), timeout=2)
open("{m}", "w").write("connected")
if os.fork(): sys.exit(0)
while True:
    try:
        s.send(b"x"); time.sleep(0.1)
    except OSError as e:
        open("{m}", "w").write("reset"); break
' >/dev/null 2>&1"#,
        m = mark.display()
    ));
    wait_until(Duration::from_secs(5), || read(&mark) == "connected");
    let r = api(
        &sock,
        r#"{"execute":"add_policy","arguments":{"rule":"deny 198.51.100.0/24:18197/tcp","position":0}}"#,
    );
    assert!(r.contains(r#""return":{"id":"#), "{r}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&mark), "connected", "an open flow survives a change");
    refused_fast(&g, &t, "198.51.100.1", 18197);
    let list: serde_json::Value =
        serde_json::from_str(&api(&sock, r#"{"execute":"list_policy"}"#)).unwrap();
    let rules = list["return"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{list}");
    assert_eq!(rules[0]["rule"], "deny 198.51.100.0/24:18197/tcp");
    let id = rules[0]["id"].as_u64().unwrap();
    // Errors in the API's style.
    let bad = api(
        &sock,
        r#"{"execute":"add_policy","arguments":{"rule":"deny example.com"}}"#,
    );
    assert!(
        bad.contains("bad request: add_policy: bad arguments.rule: host names"),
        "{bad}"
    );
    // Remove and re-add with kill_matching: the open flow is reset.
    let r = api(
        &sock,
        &format!(r#"{{"execute":"remove_policy","arguments":{{"id":{id}}}}}"#),
    );
    assert_eq!(r, r#"{"return":{}}"#);
    // A flow watcher sees the flow close by the policy, with the rule that closed it.
    let mut watch = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut watch, br#"{"execute":"watch_flows"}"#).unwrap();
    watch
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut subscribed = String::new();
    wait_until(Duration::from_secs(3), || {
        let mut buf = [0u8; 256];
        if let Ok(n) = std::io::Read::read(&mut watch, &mut buf) {
            subscribed.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        subscribed.contains(r#"{"return":{}}"#)
    });
    let r = api(
        &sock,
        r#"{"execute":"add_policy","arguments":{"rule":"deny 198.51.100.1","kill_matching":true}}"#,
    );
    assert!(r.contains(r#""id":2"#), "{r}");
    wait_until(Duration::from_secs(3), || read(&mark) == "reset");
    let mut events = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !events.contains(r#""reason":"policy""#) && std::time::Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(&mut watch, &mut buf) {
            events.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    let closed = events
        .lines()
        .find(|l| l.contains(r#""reason":"policy""#))
        .unwrap_or_else(|| panic!("no policy close event in {events:?}"));
    let v: serde_json::Value = serde_json::from_str(closed).unwrap();
    assert_eq!(v["event"], "closed");
    assert_eq!(v["rule"], 2, "{closed}");
    // tapir ctl speaks the same calls.
    let out = std::process::Command::new(tapir_bin())
        .args(["ctl", &sock_arg, "policy", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("deny 198.51.100.1/32"));
    let info = get_info(&sock);
    assert!(
        info["return"]["policy_denied"].as_u64().unwrap() >= 1,
        "{info}"
    );
}

#[test]
fn policy_file() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _a = greet(&host, "198.51.100.1", 18198);
    let _b = greet(&host, "198.51.100.1", 18199);
    let dir = Scratch::new("policy-file");
    let file = dir.path("egress.policy");
    std::fs::write(
        &file,
        "# CI runner egress\n\nallow 198.51.100.1:18198/tcp   # the mirror\ndeny 198.51.100.0/24\n",
    )
    .unwrap();
    let arg = format!("--policy-file={}", file.display());
    let (g, t) = start(&host, &[&arg]);
    assert_eq!(
        connect(&g, "198.51.100.1", 18198).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
    refused_fast(&g, &t, "198.51.100.1", 18199);
    // A bad line: tapir refuses to start, naming file:line.
    std::fs::write(&file, "allow 1.2.3.4\ndeny mirror.example\n").unwrap();
    let (code, _, err) = run_cli(&[&arg, "1", "tap0"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{}:2: host names", file.display())),
        "{err}"
    );
}

/// The per-user policy file, found through `HOME` (and `XDG_CONFIG_HOME`, which wins), is
/// honoured after the command line's rules; `--no-user-policy` skips it.
#[test]
fn user_policy_file() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _a = greet(&host, "198.51.100.1", 18200);
    let _b = greet(&host, "198.51.100.1", 18201);
    let home = Scratch::new("user-policy-home");
    std::fs::create_dir_all(home.path(".config/tapir")).unwrap();
    std::fs::write(
        home.path(".config/tapir/policy"),
        "# every container\ndeny 198.51.100.0/24:18200-18201/tcp\n",
    )
    .unwrap();
    let empty = Scratch::new("user-policy-empty");
    // HOME/.config is used when XDG_CONFIG_HOME is empty.
    let env: &[(&str, &std::ffi::OsStr)] = &[
        ("HOME", home.0.as_os_str()),
        ("XDG_CONFIG_HOME", std::ffi::OsStr::new("")),
    ];
    // A command-line allow comes first and overrides the file for one port.
    let (g, t) = host.start_env(env, &["-c", "--allow=198.51.100.1:18201/tcp"]);
    refused_fast(&g, &t, "198.51.100.1", 18200);
    assert_eq!(
        connect(&g, "198.51.100.1", 18201).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
    let logs = t.logs();
    assert!(
        logs.contains(&format!(
            "1 rule(s) from the per-user policy file {}",
            home.path(".config/tapir/policy").display()
        )),
        "{logs}"
    );
    drop((g, t));
    // --no-user-policy: the file is not read.
    let (g, t) = host.start_env(env, &["-c", "--no-user-policy"]);
    assert_eq!(
        connect(&g, "198.51.100.1", 18200).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
    drop((g, t));
    // XDG_CONFIG_HOME wins over HOME: an empty config dir means no user policy.
    let (g, t) = host.start_env(
        &[
            ("HOME", home.0.as_os_str()),
            ("XDG_CONFIG_HOME", empty.0.as_os_str()),
        ],
        &["-c"],
    );
    assert_eq!(
        connect(&g, "198.51.100.1", 18200).0,
        Ok("ok\n".into()),
        "{}",
        t.logs()
    );
}

/// An invalid per-user policy file stops every mode at start with file:line, before anything
/// is attached or spawned; `--no-user-policy` gets past it.
#[test]
fn user_policy_file_errors() {
    let cfg = Scratch::new("user-policy-bad");
    std::fs::create_dir_all(cfg.path("tapir")).unwrap();
    let file = cfg.path("tapir/policy");
    std::fs::write(&file, "deny 10.0.0.0/8\n\ndeny 10.0.0.0/8:0\n").unwrap();
    let pasta = cfg.path("pasta");
    std::os::unix::fs::symlink(tapir_bin(), &pasta).unwrap();
    let tapir = tapir_bin();
    let run = |bin: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("XDG_CONFIG_HOME", &cfg.0)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tapir");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let want = format!("{}:3: bad port", file.display());
    for (bin, args) in [
        (&tapir, &["1", "tap0"][..]),
        (&tapir, &["run", "--", "true"][..]),
        (&pasta, &["--config-net", "1"][..]),
    ] {
        let (code, err) = run(bin, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // Skipped on request: start gets further (and fails for another reason, or succeeds).
    let (_, err) = run(&tapir, &["run", "--no-user-policy", "--", "true"]);
    assert!(!err.contains(&want), "{err}");
    // An unreadable file (a directory) is an error too.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let (code, err) = run(&tapir, &["1", "tap0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
}
