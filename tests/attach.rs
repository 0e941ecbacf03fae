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

/// Start tapir with `--netns-type=tapfd 5`, fd 5 being the tap `tap0` in `g`, opened the way
/// simple callers do: `open("/dev/net/tun", O_RDWR)`, blocking, then `TUNSETIFF` with
/// `IFF_TAP | IFF_NO_PI`. The helper runs in the host namespace (as its root when the runner is
/// a plain user, which owns the guest's user namespace), enters the guest's network namespace
/// for the `TUNSETIFF`, returns and execs tapir.
fn spawn_on_blocking_tap_fd(host: &HostNs, g: &Guest) -> Tapir {
    let dir = Scratch::new("tapfd");
    let tapir = format!(
        "exec {}{} {} -r 3 --netns-type=tapfd 5 3>{}",
        std::env::var("TAPIR_TEST_WRAP")
            .map(|w| w + " ")
            .unwrap_or_default(),
        shell_quote(&shared_bin().to_string_lossy()),
        extra_args().join(" "),
        shell_quote(&dir.path("ready").to_string_lossy())
    );
    let helper = format!(
        r#"
import ctypes, fcntl, os, struct
libc = ctypes.CDLL(None, use_errno=True)
def setns(fd):
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
home = os.open("/proc/self/ns/net", os.O_RDONLY)
guest = os.open("/proc/{guest}/ns/net", os.O_RDONLY)
setns(guest)
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", b"tap0", 0x0002 | 0x1000))
setns(home)
os.close(home)
os.close(guest)
if fd != 5:
    os.dup2(fd, 5)
    os.close(fd)
os.set_inheritable(5, True)
os.execvp("sh", ["sh", "-c", {tapir:?}])
"#,
        guest = g.pid
    );
    let child = host
        .cmd(As::Runner, "python3")
        .args(["-c", &helper])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.path("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path("stderr")).unwrap())
        .spawn()
        .expect("spawn the tap fd helper");
    Tapir { child, dir }
}

#[test]
fn blocking_tap_fd_carries_traffic_and_sigterm_ends_it() {
    let Some(host) = setup() else { return };
    require!(tool("python3"), "python3 not installed");
    let g = host.guest(As::Runner);
    let mut t = spawn_on_blocking_tap_fd(&host, &g);
    t.wait_ready();
    g.ok(
        "ip link set lo up && ip link set tap0 up && ip addr add 10.0.2.100/24 dev tap0 && \
          ip route add default via 10.0.2.2",
    );
    g.ok("ping -c 3 -i 0.2 -W 2 10.0.2.2");
    // The event loop must not be stuck in a read of the tap: SIGTERM ends tapir at once.
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

/// The state letter of a process (`/proc/PID/stat`), `None` once it is reaped.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn run_command_dies_when_tapir_is_killed() {
    let Some(host) = setup() else { return };
    let mut tapir = host
        .cmd(As::Runner, shared_bin())
        .arg("run")
        .args(extra_args())
        .args(["--", "sleep", "1000"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn tapir run");
    // nsenter execs tapir, which forks the command and lets it exec once the network is up.
    let cmd = wait_for_descendant(tapir.id(), "sleep");
    let _ = tapir.kill(); // SIGKILL: no chance to clean up
    let _ = tapir.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while matches!(proc_state(cmd), Some(s) if s != 'Z') {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &cmd.to_string()])
                .status();
            panic!("the command (pid {cmd}) outlived tapir by 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unusable_outbound_addr_is_refused_at_start() {
    let Some(host) = setup() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let v4 = "outbound-addr has to be valid ipv4 address or interface name.\ntapir: ";
    let v6 = "outbound-addr6 has to be valid ipv6 address or interface name.\ntapir: ";
    let mut cases = vec![
        (
            "--outbound-addr=nonexistent0",
            v4,
            "--outbound-addr=nonexistent0: there is no network interface of that name here",
        ),
        (
            "--outbound-addr=198.51.100.7",
            v4,
            "198.51.100.7 is not an address of this host",
        ),
        (
            "--outbound-addr6=nonexistent0",
            v6,
            "--outbound-addr6=nonexistent0: there is no network interface of that name here",
        ),
        ("--outbound-addr6=2001:db8::7", v6, "2001:db8::7"),
    ];
    // An interface without an IPv4 address (a tap in the host namespace, down).
    if host
        .sh(As::Runner, "ip tuntap add name tapir-nov4 mode tap")
        .status
        .success()
    {
        cases.push((
            "--outbound-addr=tapir-nov4",
            v4,
            "--outbound-addr=tapir-nov4: the interface has no IPv4 address",
        ));
    }
    for (arg, first, why) in cases {
        let mut t = Tapir::spawn(&host, As::Runner, &[arg, "-c", &pid, "tap0"], false);
        assert_eq!(
            t.wait_exit(Duration::from_secs(5)),
            Some(Some(1)),
            "{arg}: {}",
            t.logs()
        );
        let err = read(&t.dir.path("stderr"));
        assert!(err.contains(first) && err.contains(why), "{arg}: {err}");
        assert_eq!(read(&t.dir.path("stdout")), "", "{arg}: no banner");
        assert!(
            !g.sh_any("ip link show tap0").status.success(),
            "{arg}: refused before the tap is opened"
        );
    }
    // tapir run: refused before the command runs.
    let out = host.sh(
        As::Runner,
        &format!(
            "{} run --outbound-addr=nonexistent0 -- echo the command ran",
            shell_quote(&shared_bin().to_string_lossy())
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(v4), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ran"),
        "{out:?}"
    );
}

#[test]
fn path_mode_without_userns_path_says_what_to_do() {
    let Some(host) = setup() else { return };
    require!(is_root(), "switching to the test user needs root");
    require!(test_user().is_some(), "{}", no_test_user());
    // The plain user's guest has a user namespace of its own; without --userns-path tapir
    // stays outside it and may not join the network namespace.
    let g = host.guest(As::User);
    let netns = g.netns_path();
    let mut t = Tapir::spawn(
        &host,
        As::User,
        &["--netns-type=path", &netns, "tap0"],
        false,
    );
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(1)),
        "{}",
        t.logs()
    );
    let err = read(&t.dir.path("stderr"));
    assert!(
        err.contains("setns(CLONE_NEWNET): Operation not permitted\ntapir: ")
            && err.contains("add --userns-path=/proc/PID/ns/user"),
        "{err}"
    );
}

#[test]
fn run_passes_sigterm_on_and_serves_the_command_until_it_exits() {
    let Some(host) = setup() else { return };
    let dir = Scratch::new("runterm");
    let out = dir.path("stdout");
    // The command's SIGTERM handler still has a network, and its exit status is tapir's.
    let script = "trap 'ping -c 1 -W 2 10.0.2.2 >/dev/null && echo cleanup-had-network; exit 3' \
                  TERM; while :; do sleep 0.1; done";
    let mut tapir = host
        .cmd(As::Runner, shared_bin())
        .arg("run")
        .args(extra_args())
        .args(["--", "sh", "-c", script])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path("stderr")).unwrap())
        .spawn()
        .expect("spawn tapir run");
    // A `sleep` under the command: the trap is set.
    wait_for_descendant(tapir.id(), "sleep");
    std::process::Command::new("kill")
        .args(["-TERM", &tapir.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(st) = tapir.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = tapir.kill();
            let _ = tapir.wait();
            panic!(
                "tapir run did not exit after SIGTERM: {}",
                read(&dir.path("stderr"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(3), "{}", read(&dir.path("stderr")));
    assert!(
        read(&out).contains("cleanup-had-network"),
        "{}",
        read(&dir.path("stderr"))
    );
}
