//! `auto` port forwarding (pasta's `-t auto` / `-u auto`), reached through tapir's hidden
//! `--auto-forward=tcp,udp` until the pasta front end is wired: host listeners appear when the
//! guest starts listening and go when it stops, within the 1 s scan plus slack.
//!
//! Needs namespaces, ncat, ss and python3; everything stays in the test's private namespaces.
//! With `TAPIR_TEST_EXTRA_ARGS="--enable-sandbox --enable-seccomp"` this also checks that the
//! scans work confined (tables opened before the sandbox, `pread64` allowed).

mod common;
use common::*;
use std::time::Duration;

/// Time for a change in the guest to show on the host: a 1 s scan interval, with slack for a
/// loaded machine.
const FOLLOW: Duration = Duration::from_secs(3);

/// How many sockets listen on `port` in the host namespace (`-tln` or `-uln`).
fn host_listeners(host: &HostNs, flags: &str, port: u16) -> usize {
    let out = host.sh(As::Runner, &format!("ss -H {flags} 'sport = :{port}'"));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn guest_listening(g: &Guest, flags: &str, port: u16) {
    wait_until(Duration::from_secs(5), || {
        g.sh_any(&format!("ss -H {flags} 'sport = :{port}' | grep -q ."))
            .status
            .success()
    });
}

#[test]
fn listeners_in_the_guest_are_followed_on_the_host() {
    let Some(host) = host() else { return };
    require!(
        missing_tool(&["ncat", "ss", "python3"]).is_none(),
        "{}",
        missing_tool(&["ncat", "ss", "python3"]).unwrap_or_default()
    );
    let (g, t) = host.start(&[
        "-c",
        "--auto-forward=tcp,udp",
        "-p",
        "127.0.0.1:18313:18313",
    ]);
    const TCP_PORT: u16 = 18311;
    const UDP_PORT: u16 = 18312;
    const EXPLICIT: u16 = 18313;
    assert_eq!(host_listeners(&host, "-tln", TCP_PORT), 0);

    // TCP: a listener started after tapir appears on the host, and serves.
    let srv = in_guest(
        &g,
        &format!("{} greet 0.0.0.0 {TCP_PORT} >/dev/null", tcpserve()),
    );
    guest_listening(&g, "-tln", TCP_PORT);
    wait_until(FOLLOW, || host_listeners(&host, "-tln", TCP_PORT) == 1);
    let out = host.sh(As::Runner, &format!("ncat 127.0.0.1 {TCP_PORT} </dev/null"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        t.logs()
    );
    // pasta's rule: UDP follows the TCP listener's port too.
    wait_until(FOLLOW, || host_listeners(&host, "-uln", TCP_PORT) == 1);
    // Stopping it releases the host port (TCP and UDP).
    drop(srv);
    wait_until(FOLLOW, || {
        host_listeners(&host, "-tln", TCP_PORT) == 0 && host_listeners(&host, "-uln", TCP_PORT) == 0
    });
    let out = host.sh(
        As::Runner,
        &format!("ncat -w 2 127.0.0.1 {TCP_PORT} </dev/null"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );

    // UDP: an unconnected socket in the guest.
    let udp = in_guest(&g, &format!("{} udpecho 0.0.0.0 {UDP_PORT}", tcpserve()));
    guest_listening(&g, "-uln", UDP_PORT);
    wait_until(FOLLOW, || host_listeners(&host, "-uln", UDP_PORT) == 1);
    assert_eq!(host_listeners(&host, "-tln", UDP_PORT), 0);
    // A datagram may be lost on a loaded machine: up to three tries.
    let mut echoed = Vec::new();
    for _ in 0..3 {
        let o = host.sh(
            As::Runner,
            &format!("(echo auto-udp; sleep 2) | ncat -u -w 3 127.0.0.1 {UDP_PORT}"),
        );
        echoed = o.stdout;
        if echoed == b"auto-udp\n" {
            break;
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&echoed),
        "auto-udp\n",
        "{}",
        t.logs()
    );
    drop(udp);
    wait_until(FOLLOW, || host_listeners(&host, "-uln", UDP_PORT) == 0);

    // A port forwarded with -p is left alone: only its own listener, which keeps serving.
    let srv = in_guest(
        &g,
        &format!("{} greet 0.0.0.0 {EXPLICIT} >/dev/null", tcpserve()),
    );
    guest_listening(&g, "-tln", EXPLICIT);
    std::thread::sleep(FOLLOW);
    assert_eq!(host_listeners(&host, "-tln", EXPLICIT), 1, "{}", t.logs());
    let out = host.sh(As::Runner, &format!("ncat 127.0.0.1 {EXPLICIT} </dev/null"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{out:?}");
    drop(srv);
    std::thread::sleep(FOLLOW);
    assert_eq!(host_listeners(&host, "-tln", EXPLICIT), 1, "-p stays");
}

/// Rootless, as podman runs it: the guest in a user namespace of the plain test user, tapir as
/// that user, so the tables are opened by a child that joined that user namespace first.
#[test]
fn rootless_guest_listeners_are_followed() {
    let Some(host) = host() else { return };
    require!(is_root(), "switching to the test user needs root");
    require!(test_user().is_some(), "{}", no_test_user());
    require!(
        missing_tool(&["ncat", "ss", "python3"]).is_none(),
        "{}",
        missing_tool(&["ncat", "ss", "python3"]).unwrap_or_default()
    );
    const PORT: u16 = 18314;
    let g = host.guest(As::User);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(
        &host,
        As::User,
        &["-c", "--auto-forward=tcp", &pid, "tap0"],
        false,
    );
    t.wait_ready();
    let srv = in_guest(
        &g,
        &format!("{} greet 0.0.0.0 {PORT} >/dev/null", tcpserve()),
    );
    guest_listening(&g, "-tln", PORT);
    wait_until(FOLLOW, || host_listeners(&host, "-tln", PORT) == 1);
    let out = host.sh(As::Runner, &format!("ncat 127.0.0.1 {PORT} </dev/null"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        t.logs()
    );
    assert_eq!(host_listeners(&host, "-uln", PORT), 0, "tcp only");
    drop(srv);
    wait_until(FOLLOW, || host_listeners(&host, "-tln", PORT) == 0);
}
