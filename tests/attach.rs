//! Attaching to a namespace, `--configure`, the virtual hosts, and the process lifecycle.
//!
//! Needs network namespaces (root, or unprivileged user namespaces) and `/dev/net/tun`; the
//! rootless cases also need root to switch to the plain test user. Each test skips with a
//! printed reason where it cannot run (and fails instead under `CI=true`).

mod common;
use common::*;
use std::io::Write;
use std::time::Duration;

fn setup() -> Option<HostNs> {
    host()
}

fn guest_addr(g: &Guest, dev: &str) -> String {
    g.ok(&format!("ip -o -4 addr show dev {dev}"))
}

#[test]
fn configure_sets_address_route_mtu_and_lo() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &["-c", "--mtu", "65520", &pid, "tap0"],
        false,
    );
    t.wait_ready();
    // Ready means configured: no waiting here.
    let addr = guest_addr(&g, "tap0");
    assert!(addr.contains("inet 10.0.2.100/24 brd 10.0.2.255"), "{addr}");
    let route = g.ok("ip route show default");
    assert!(route.contains("default via 10.0.2.2 dev tap0"), "{route}");
    let link = g.ok("ip -o link show tap0");
    assert!(link.contains("mtu 65520"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    let lo = g.ok("ip -o link show lo");
    assert!(lo.contains("UP"), "{lo}");
    // The banner reaches a non-tty stdout (line-buffered, unlike slirp4netns).
    let logs = t.logs();
    assert!(logs.contains("* Recommended IP:  10.0.2.100"), "{logs}");
}

#[test]
fn ping_gateway_and_dns_answered_locally() {
    let Some(host) = setup() else { return };
    for extra in [&[][..], &["--disable-host-loopback"][..]] {
        let g = host.guest(As::Runner);
        let pid = g.pid.to_string();
        let mut args = vec!["-c"];
        args.extend_from_slice(extra);
        args.extend([pid.as_str(), "tap0"]);
        let mut t = Tapir::spawn(&host, As::Runner, &args, false);
        t.wait_ready();
        for ip in ["10.0.2.2", "10.0.2.3"] {
            let out = g.sh_any(&format!("ping -c 2 -i 0.2 -W 2 {ip}"));
            assert!(
                out.status.success(),
                "ping {ip} with {extra:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                t.logs()
            );
        }
        // Neighbour entries carry slirp4netns's MACs.
        let neigh = g.ok("ip neigh show dev tap0");
        assert!(
            neigh.contains("10.0.2.2 lladdr 52:55:0a:00:02:02"),
            "{neigh}"
        );
        assert!(
            neigh.contains("10.0.2.3 lladdr 52:55:0a:00:02:03"),
            "{neigh}"
        );
        // No other address answers ARP.
        let out = g.sh_any("ping -c 1 -W 1 10.0.2.50");
        assert!(!out.status.success());
    }
}

#[test]
fn dhcp_lease_with_udhcpc() {
    let Some(host) = setup() else { return };
    require!(tool("busybox"), "busybox (udhcpc) not installed");
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(&host, As::Runner, &[&pid, "tap0"], false);
    t.wait_ready();
    // Without -c the tap exists but is down and unaddressed.
    assert!(!guest_addr(&g, "tap0").contains("inet "));
    let out = g.ok("ip link set lo up && ip link set tap0 up && \
         busybox udhcpc -f -q -n -t 5 -T 1 -i tap0 -s /bin/true 2>&1");
    assert!(
        out.contains("lease of 10.0.2.15 obtained from 10.0.2.2"),
        "{out}\n{}",
        t.logs()
    );
    assert!(out.contains("lease time 86400"), "{out}");
}

#[test]
fn cidr_moves_every_address() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &["-c", "--cidr", "10.0.135.128/25", &pid, "tap0"],
        false,
    );
    t.wait_ready();
    let addr = guest_addr(&g, "tap0");
    assert!(addr.contains("inet 10.0.135.228/25"), "{addr}");
    assert!(g.ok("ip route show default").contains("via 10.0.135.130"));
    g.ok("ping -c 1 -W 2 10.0.135.130");
    g.ok("ping -c 1 -W 2 10.0.135.131");
    assert!(t.logs().contains("* Gateway:         10.0.135.130"));
}

#[test]
fn macaddress_is_applied() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &["-c", "--macaddress", "0e:d4:18:d9:38:fb", &pid, "tap0"],
        false,
    );
    t.wait_ready();
    assert!(g
        .ok("ip -o link show tap0")
        .contains("link/ether 0e:d4:18:d9:38:fb"));
}

#[test]
fn attach_by_path_with_userns_path() {
    let Some(host) = setup() else { return };
    let who = if is_root() && test_user().is_some() {
        As::User
    } else {
        As::Runner
    };
    let g = host.guest(who);
    let userns = format!("--userns-path={}", g.userns_path());
    let netns = g.netns_path();
    let mut t = Tapir::spawn(
        &host,
        who,
        &[&userns, "--netns-type=path", &netns, "tap11", "-c"],
        false,
    );
    t.wait_ready();
    assert!(guest_addr(&g, "tap11").contains("inet 10.0.2.100/24"));
    g.ok("ping -c 1 -W 2 10.0.2.2");
}

#[test]
fn attaches_to_precreated_tap_like_rootlesskit() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    g.ok("ip tuntap add name tap0 mode tap && ip link set tap0 up");
    let pid = g.pid.to_string();
    let sock = Scratch::new("api");
    let api = sock.path("s4nn.sock");
    // rootlesskit's exact argv (it adds -r 3 itself, as does the harness).
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &[
            "--mtu",
            "65520",
            "-r",
            "3",
            "--disable-host-loopback",
            "--api-socket",
            &api.to_string_lossy(),
            &pid,
            "tap0",
        ],
        false,
    );
    t.wait_ready();
    // rootlesskit configures the interface itself.
    g.ok("ip link set lo up && ip link set dev tap0 mtu 65520 && ip addr add 10.0.2.100/24 dev tap0 && ip route add default via 10.0.2.2 dev tap0");
    g.ok("ping -c 1 -W 2 10.0.2.2");
    assert_eq!(
        g.ok("ip -o link show | grep -c tap0").trim(),
        "1",
        "attached, not created anew"
    );
}

#[test]
fn podman_argv_starts_and_configures() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let netns = g.netns_path();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "--netns-type=path",
            &netns,
            "tap0",
        ],
        true,
    );
    t.wait_ready();
    assert!(g.ok("ip -o link show tap0").contains("mtu 65520"));
    assert!(guest_addr(&g, "tap0").contains("10.0.2.100/24"));
    g.ok("ping -c 1 -W 2 10.0.2.3");
    // Options whose features are not built yet are announced, never silently ignored.
    let logs = t.logs();
    assert!(
        logs.contains("--enable-seccomp") || !logs.contains("not active"),
        "{logs}"
    );
    drop(t.child.stdin.take());
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
}

#[test]
fn rootless_as_plain_user() {
    let Some(host) = setup() else { return };
    require!(is_root(), "switching to the test user needs root");
    require!(test_user().is_some(), "{}", no_test_user());
    let (uid, _) = test_user().unwrap();
    let g = host.guest(As::User);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(&host, As::User, &["-c", &pid, "tap0"], false);
    t.wait_ready();
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains(&format!("\t{uid}\t")),
        "tapir must run as the plain user: {uid_line}"
    );
    assert!(guest_addr(&g, "tap0").contains("10.0.2.100/24"));
    g.ok("ping -c 1 -W 2 10.0.2.2");
}

#[test]
fn exit_fd_hangup_exits_zero_and_data_is_ignored() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(&host, As::Runner, &["-c", &pid, "tap0"], true);
    t.wait_ready();
    t.child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"data means nothing\n")
        .unwrap();
    assert_eq!(
        t.wait_exit(Duration::from_millis(500)),
        None,
        "data must not end tapir"
    );
    drop(t.child.stdin.take());
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
}

#[test]
fn exit_fd_not_open_exits_zero() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    // fd 9 is not open in tapir (slirp4netns exits on POLLNVAL).
    let mut t = Tapir::spawn(&host, As::Runner, &["-e", "9", "-c", &pid, "tap0"], false);
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
}

#[test]
fn sigterm_exits_cleanly() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(&host, As::Runner, &["-c", &pid, "tap0"], false);
    t.wait_ready();
    std::process::Command::new("kill")
        .args(["-TERM", &t.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
}

#[test]
fn exits_when_target_process_exits() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(&host, As::Runner, &["-c", &pid, "tap0"], false);
    t.wait_ready();
    drop(g);
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
    assert!(t.logs().contains("target process exited"));
}

#[test]
fn exits_with_message_when_tap_is_deleted() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let netns = g.netns_path();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &["-c", "--netns-type=path", &netns, "tap0"],
        false,
    );
    t.wait_ready();
    g.ok("ip link del tap0");
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(1)),
        "{}",
        t.logs()
    );
    assert!(t.logs().contains("tap device tap0 is gone"), "{}", t.logs());
}

#[test]
fn run_gives_the_command_a_network_and_returns_its_status() {
    let Some(host) = setup() else { return };
    let bin = shared_bin();
    let b = bin.to_string_lossy();
    let out = host.sh(As::Runner, &format!("{b} run -- sh -c 'exit 7'"));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = host.sh(
        As::Runner,
        &format!("{b} run -- sh -c 'ip -o -4 addr show; ip route; cat /etc/resolv.conf; ping -c 1 -W 2 10.0.2.2'"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("10.0.2.100/24"), "{text}");
    assert!(text.contains("default via 10.0.2.2"), "{text}");
    assert!(text.contains("nameserver 10.0.2.3"), "{text}");
    let out = host.sh(As::Runner, &format!("{b} run -- /nonexistent/cmd"));
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    if is_root() && test_user().is_some() {
        let out = host.sh(
            As::User,
            &format!("{b} run -- sh -c 'id -u; ping -c 1 -W 2 10.0.2.3'"),
        );
        assert!(out.status.success(), "rootless run: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("0\n"));
    }
}
