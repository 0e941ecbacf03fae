//! Port forwarding: slirp4netns's API socket, `-p/--publish`, `tapir ctl`, and traffic from
//! host clients into the guest with their addresses preserved.
//!
//! Needs namespaces, ncat and python3 (servers in the guest, clients in the private host
//! namespace). The API socket itself is a path, reachable from the test process directly.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Setup {
    host: HostNs,
    guest: Guest,
    tapir: Tapir,
    sock: PathBuf,
    _dir: Scratch,
}

fn setup(extra: &[&str]) -> Option<Setup> {
    let host = host()?;
    let guest = host.guest(As::Runner);
    let dir = Scratch::new("api");
    let sock = dir.path("api.sock");
    let pid = guest.pid.to_string();
    let sock_s = sock.to_string_lossy().into_owned();
    let mut args = vec!["-c", "--api-socket", sock_s.as_str()];
    args.extend_from_slice(extra);
    args.extend([pid.as_str(), "tap0"]);
    let mut tapir = Tapir::spawn(&host, As::Runner, &args, false);
    tapir.wait_ready();
    // Ready means the API socket already accepts.
    assert!(sock.exists(), "API socket must exist before the ready byte");
    Some(Setup {
        host,
        guest,
        tapir,
        sock,
        _dir: dir,
    })
}

fn tcpserve() -> String {
    format!(
        "python3 {}/tests/tools/tcpserve.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A background server inside the guest's network namespace (one process: sh execs nsenter,
/// which execs the server), killed on drop.
fn in_guest(g: &Guest, script: &str) -> Bg {
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "exec nsenter -t {} -n sh -c 'exec {}'",
                g.pid,
                script.replace('\'', "'\\''")
            ),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Bg(child)
}

fn add_tcp(sock: &Path, host_addr: &str, host_port: u16, guest_port: u16) -> String {
    api(
        sock,
        &format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"{host_addr}","host_port":{host_port},"guest_addr":"","guest_port":{guest_port}}}}}"#
        ),
    )
}

#[test]
fn every_error_string_is_slirp4netns_s() {
    let Some(s) = setup(&[]) else { return };
    let err = |d: &str| format!(r#"{{"error":{{"desc":"{d}"}}}}"#);
    let cases: &[(&str, &str)] = &[
        ("", "bad request: cannot parse JSON"),
        ("{", "bad request: cannot parse JSON"),
        ("[1,2]", "bad request: json_object() failed"),
        (r#"{"execute":1}"#, "bad request: no execute found"),
        (r#"{"foo":"bar"}"#, "bad request: no execute found"),
        (r#"{"execute":"nope"}"#, "bad request: unknown execute"),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.proto",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"host_port":23599,"guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.proto",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":1,"guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.host_addr",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"23502","guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.host_port",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":70000,"guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.host_port",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":18200,"guest_addr":"x","guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.guest_addr",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":18200,"guest_port":0}}"#,
            "bad request: add_hostfwd: bad arguments.guest_port",
        ),
        (
            r#"{"execute":"remove_hostfwd","arguments":{"id":42}}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
        (
            r#"{"execute":"remove_hostfwd"}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
    ];
    for (req, desc) in cases {
        assert_eq!(api(&s.sock, req), err(desc), "request {req:?}");
    }
    // Too large: a 4096-byte request is rejected, a 4095-byte one is fine.
    let pad = |n: usize| {
        let base = r#"{"execute":"list_hostfwd","pad":""}"#;
        let fill = "x".repeat(n - base.len());
        format!(r#"{{"execute":"list_hostfwd","pad":"{fill}"}}"#)
    };
    assert_eq!(
        api(&s.sock, &pad(4096)),
        err("bad request: too large message")
    );
    assert!(api(&s.sock, &pad(4095)).contains(r#""entries":[]"#));
    // The process survived all of it (slirp4netns segfaults on the missing proto).
    assert!(s.tapir.child.id() > 0);
    let mut t = s.tapir;
    assert_eq!(
        t.wait_exit(Duration::from_millis(10)),
        None,
        "tapir must still run"
    );
}

#[test]
fn add_list_remove_round_trip() {
    let Some(s) = setup(&[]) else { return };
    assert_eq!(
        add_tcp(&s.sock, "127.0.0.1", 18201, 8080),
        r#"{"return":{"id":1}}"#
    );
    // Same port again: slirp4netns's failure string.
    assert_eq!(
        add_tcp(&s.sock, "127.0.0.1", 18201, 8080),
        r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#
    );
    let udp = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":18202,"guest_addr":"10.0.2.100","guest_port":53}}"#,
    );
    assert_eq!(udp, r#"{"return":{"id":2}}"#);
    let entries = r#"[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":18201,"guest_addr":"10.0.2.100","guest_port":8080},{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":18202,"guest_addr":"10.0.2.100","guest_port":53}]"#;
    assert_eq!(
        api(&s.sock, r#"{"execute":"list_hostfwd"}"#),
        format!(r#"{{"return":{{"entries":{entries}}},"entries":{entries}}}"#)
    );
    assert_eq!(
        api(
            &s.sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":2}}"#
        ),
        r#"{"return":{}}"#
    );
    assert_eq!(
        api(
            &s.sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":2}}"#
        ),
        r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
    );
    // Ids are never reused.
    assert_eq!(
        add_tcp(&s.sock, "127.0.0.1", 18203, 8080),
        r#"{"return":{"id":3}}"#
    );
    // rootlesskit's framing: trailing newline; a request split over two writes also works.
    let mut c = UnixStream::connect(&s.sock).unwrap();
    c.write_all(br#"{"execute":"#).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(b"\"list_hostfwd\"}\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.contains(r#""id":3"#), "{out}");
    // The socket file goes away on a clean exit.
    let mut t = s.tapir;
    std::process::Command::new("kill")
        .args(["-TERM", &t.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(t.wait_exit(Duration::from_secs(5)), Some(Some(0)));
    assert!(!s.sock.exists(), "API socket must be removed on exit");
}

#[test]
fn tcp_and_udp_forwards_preserve_the_client_address() {
    let Some(s) = setup(&[]) else { return };
    let dir = Scratch::new("peers");
    let peers = dir.path("peers");
    let _srv = in_guest(
        &s.guest,
        &format!("{} greet 0.0.0.0 8080 > {}", tcpserve(), peers.display()),
    );
    let _udp = in_guest(&s.guest, &format!("{} udpecho 0.0.0.0 5353", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        s.guest
            .sh_any("ss -tln | grep -q ':8080 ' && ss -uln | grep -q ':5353 '")
            .status
            .success()
    });
    assert_eq!(
        add_tcp(&s.sock, "0.0.0.0", 18204, 8080),
        r#"{"return":{"id":1}}"#
    );
    let udp = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"0.0.0.0","host_port":18205,"guest_port":5353}}"#,
    );
    assert_eq!(udp, r#"{"return":{"id":2}}"#);
    s.host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");

    let out = s.host.sh(As::Runner, "ncat 127.0.0.1 18204 </dev/null");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );
    let out = s.host.sh(
        As::Runner,
        "ncat -s 198.51.100.1 198.51.100.1 18204 </dev/null",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{out:?}");
    wait_until(Duration::from_secs(3), || read(&peers).lines().count() >= 2);
    let seen = read(&peers);
    assert_eq!(
        seen, "peer 10.0.2.2\npeer 198.51.100.1\n",
        "loopback client as the gateway, others as themselves"
    );

    let out = s.host.sh(
        As::Runner,
        "(echo udp-fwd; sleep 1) | ncat -u -w 2 127.0.0.1 18205",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "udp-fwd\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );

    // Removing the forward closes the listener.
    api(
        &s.sock,
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
    );
    let out = s
        .host
        .sh(As::Runner, "ncat -w 2 127.0.0.1 18204 </dev/null");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );
}

#[test]
fn guest_refusal_resets_the_host_client() {
    let Some(s) = setup(&[]) else { return };
    assert_eq!(
        add_tcp(&s.sock, "127.0.0.1", 18206, 9),
        r#"{"return":{"id":1}}"#
    );
    let t0 = Instant::now();
    let out = s.host.sh(
        As::Runner,
        "printf x | ncat -w 5 127.0.0.1 18206; echo rc=$?",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    // The accepted client is reset (slirp4netns closes it): ncat fails.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .ends_with("rc=1"),
        "{out:?}"
    );
}

#[test]
fn udp_forward_replies_work_with_disable_host_loopback() {
    let Some(s) = setup(&["--disable-host-loopback"]) else {
        return;
    };
    let _udp = in_guest(&s.guest, &format!("{} udpecho 0.0.0.0 5353", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        s.guest
            .sh_any("ss -uln | grep -q ':5353 '")
            .status
            .success()
    });
    let r = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"127.0.0.1","host_port":18207,"guest_port":5353}}"#,
    );
    assert_eq!(r, r#"{"return":{"id":1}}"#);
    let out = s.host.sh(
        As::Runner,
        "(echo podman-4586; sleep 1) | ncat -u -w 2 127.0.0.1 18207",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "podman-4586\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );
}

#[test]
fn slow_api_clients_do_not_block_a_request() {
    let Some(s) = setup(&[]) else { return };
    // 100 clients that connect and say nothing (slirp4netns would block on the first).
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&s.sock).unwrap())
        .collect();
    // A half-sent request too.
    let mut half = UnixStream::connect(&s.sock).unwrap();
    half.write_all(br#"{"execute":"list_"#).unwrap();
    let t0 = Instant::now();
    assert!(api(&s.sock, r#"{"execute":"list_hostfwd"}"#).contains("entries"));
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    // The data path keeps working meanwhile.
    s.guest.ok("ping -c 1 -W 2 10.0.2.2");
    drop(idle);
}

#[test]
fn add_remove_cycles_leak_no_fd() {
    let Some(s) = setup(&[]) else { return };
    // Warm up once (first-use allocations), then measure.
    assert!(add_tcp(&s.sock, "127.0.0.1", 18208, 80).contains("\"id\":1"));
    api(
        &s.sock,
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
    );
    let baseline = s.tapir.fd_count();
    for i in 0..200u32 {
        let id = i + 2;
        let proto = if i % 2 == 0 { "tcp" } else { "udp" };
        let r = api(
            &s.sock,
            &format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"127.0.0.1","host_port":18208,"guest_port":80}}}}"#
            ),
        );
        assert_eq!(r, format!(r#"{{"return":{{"id":{id}}}}}"#));
        let r = api(
            &s.sock,
            &format!(r#"{{"execute":"remove_hostfwd","arguments":{{"id":{id}}}}}"#),
        );
        assert_eq!(r, r#"{"return":{}}"#);
    }
    // The server closes each connection just after the client has seen EOF: allow a moment.
    wait_until(Duration::from_secs(2), || s.tapir.fd_count() <= baseline);
}

#[test]
fn publish_on_the_command_line_and_ctl() {
    let Some(host) = host() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let dir = Scratch::new("ctl");
    let sock = dir.path("api.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &[
            "-c",
            "-p",
            "127.0.0.1:18209:8080",
            "--api-socket",
            &sock_s,
            &pid,
            "tap0",
        ],
        false,
    );
    t.wait_ready();
    let _srv = in_guest(&g, &format!("{} greet 0.0.0.0 8080 >/dev/null", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        g.sh_any("ss -tln | grep -q ':8080 '").status.success()
    });
    let out = host.sh(As::Runner, "ncat 127.0.0.1 18209 </dev/null");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        t.logs()
    );

    let ctl = |args: &[&str]| {
        let o = std::process::Command::new(tapir_bin())
            .arg("ctl")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = ctl(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(r#""host_port":18209"#), "{out}");
    let (code, out) = ctl(&["add", "127.0.0.1:18210:8080"]);
    assert_eq!((code, out.trim()), (Some(0), r#"{"return":{"id":2}}"#));
    let out = host.sh(As::Runner, "ncat 127.0.0.1 18210 </dev/null");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(ctl(&["remove", "2"]).0, Some(0));
    assert_eq!(
        ctl(&["remove", "2"]).0,
        Some(1),
        "removing twice is an error"
    );
    assert_eq!(ctl(&["info"]).0, Some(0));

    // A bad -p is refused at start.
    let (code, _, err) = run_cli(&["-c", "-p", "99999:80", &pid, "tap1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid --publish value"), "{err}");
}

#[test]
fn get_info_lists_live_flows_with_state_and_bytes() {
    let Some(s) = setup(&[]) else { return };
    // A host server that answers and keeps the connection open for a while.
    let _srv = s.host.spawn(
        As::Runner,
        "ncat -l 127.0.0.1 18211 -c 'echo hello; sleep 5'",
    );
    s.host.wait_listening(18211, false);
    // Bounded, so nothing outlives the test even if the connection hangs.
    let _client = in_guest(
        &s.guest,
        "sh -c 'sleep 5 | ncat -i 7 10.0.2.2 18211 >/dev/null'",
    );
    let mut info = String::new();
    wait_until(Duration::from_secs(5), || {
        info = api(&s.sock, r#"{"execute":"get_info"}"#);
        info.contains(r#""state":"open""#) && info.contains(r#""bytes_in":6"#)
    });
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let flow = &v["return"]["flows"]["list"][0];
    assert_eq!(flow["proto"], "tcp");
    assert_eq!(flow["remote"], "10.0.2.2:18211");
    assert_eq!(flow["target"], "127.0.0.1:18211");
    assert!(flow["guest"].as_str().unwrap().starts_with("10.0.2.100:"));
    assert_eq!(v["return"]["flows"]["tcp"], 1);
}
