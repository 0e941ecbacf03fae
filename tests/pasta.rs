//! tapir as `pasta`: the contract podman 5.4 and rootlesskit 2.0 rely on, replayed with their
//! exact command lines against the real binary (invoked through a symlink named `pasta`).
//!
//! Topology, all inside the test's private host namespace: the host has pasta's *template
//! interface* `v0` (192.0.2.10/24 and 2001:db8::10/64, default routes via 192.0.2.1 and
//! 2001:db8::1), a veth whose peer `v1` sits in a "remote" namespace of its own holding those
//! gateway addresses, so traffic to the gateway is answered at once (by RST: nothing listens
//! there) and nothing can leave the machine. The guest is a network namespace made by the
//! test; podman's case names it by a bind-mounted namespace file (`--netns`), rootlesskit's by
//! PID.
//!
//! Every run uses the pasta defaults, which turn the sandbox and seccomp on; the plain pass of
//! `test.sh` adds tapir's `--no-sandbox`, the second pass (`TAPIR_TEST_EXTRA_ARGS` set) keeps
//! them on, so both are covered.
//!
//! Needs namespaces, `ip`, python3, ncat and dig.

mod common;
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Host ports of the podman-style forwards.
const FWD_TCP: u16 = 18080;
const FWD_UDP: u16 = 18090;
/// The host's own address on the template interface.
const HOST_ADDR: &str = "192.0.2.10";
/// podman's DNS forward and guest-address mapping.
const DNS_FWD: &str = "169.254.1.1";
const GUEST_MAP: &str = "169.254.1.2";
/// What the test resolver answers.
const DNS_ANSWER: &str = "192.0.2.99";

fn tools() -> String {
    format!("{}/tests/tools", env!("CARGO_MANIFEST_DIR"))
}

/// A `pasta` symlink to the binary, where the test user can execute it.
fn pasta_bin() -> PathBuf {
    let bin = shared_bin();
    let link = bin.with_file_name("pasta");
    if !link.exists() {
        let _ = std::os::unix::fs::symlink(&bin, &link);
    }
    link
}

/// An empty configuration directory, so that no per-user policy file of the machine running the
/// tests (`~/.config/tapir/policy`) applies.
fn no_user_config() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tapir-test-xdg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// tapir's own switch in the plain pass (see the module docs).
fn sandbox_args() -> Vec<String> {
    if extra_args().is_empty() {
        vec!["--no-sandbox".to_owned()]
    } else {
        Vec::new()
    }
}

/// `pasta ARGS` (tapir through the `pasta` symlink, after [`sandbox_args`]) run by `who` in the
/// host namespace, with `tail` appended to the shell command (a redirection), no per-user
/// configuration and no standard input.
fn pasta_cmd(host: &HostNs, who: As, args: &[&str], tail: &str) -> Command {
    let mut all: Vec<String> = sandbox_args();
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let script = format!(
        "exec {} {} {tail}",
        shell_quote(&pasta_bin().to_string_lossy()),
        all.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut c = host.cmd(who, "sh");
    c.env("XDG_CONFIG_HOME", no_user_config())
        .args(["-c", &script])
        .stdin(Stdio::null());
    c
}

/// The host namespace with the template interface and the remote namespace behind it.
struct Lab {
    host: HostNs,
    _remote: Bg,
    /// PID of a process in the remote namespace.
    rpid: u32,
    dir: Scratch,
}

impl Lab {
    fn new() -> Option<Lab> {
        let host = host()?;
        let missing = missing_tool(&["ip", "python3", "ncat", "dig"]);
        if let Some(m) = missing {
            skip(&m);
            return None;
        }
        let remote = host.spawn(As::Runner, "unshare -n sleep 3600");
        let rpid = wait_for_descendant(remote.0.id(), "sleep");
        let script = format!(
            "set -e
             ip link add v0 type veth peer name v1
             ip link set v1 netns {rpid}
             ip addr add {HOST_ADDR}/24 dev v0
             ip -6 addr add 2001:db8::10/64 dev v0 nodad
             ip link set v0 up
             ip route add default via 192.0.2.1
             ip -6 route add default via 2001:db8::1 dev v0
             nsenter -t {rpid} -n sh -c 'ip link set lo up; ip addr add 192.0.2.1/24 dev v1;
               ip -6 addr add 2001:db8::1/64 dev v1 nodad; ip link set v1 up'"
        );
        let out = host.sh(As::Runner, &script);
        assert!(out.status.success(), "template interface: {out:?}");
        Some(Lab {
            host,
            _remote: remote,
            rpid,
            dir: Scratch::new("pasta"),
        })
    }

    /// Bind-mount the guest's network namespace on a file, as podman does
    /// (`$XDG_RUNTIME_DIR/netns/netns-UUID`), in the host namespace's mount namespace.
    fn netns_file(&self, g: &Guest) -> PathBuf {
        let dir = self.dir.path("netns");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("netns-{}", g.pid));
        std::fs::write(&file, "").unwrap();
        let out = self.host.sh(
            As::Runner,
            &format!(
                "mount --bind /proc/{}/ns/net {}",
                g.pid,
                shell_quote(&file.to_string_lossy())
            ),
        );
        assert!(out.status.success(), "bind mount: {out:?}");
        file
    }

    /// Remove it the way podman does: lazy unmount, then unlink.
    fn remove_netns_file(&self, file: &Path) {
        let f = shell_quote(&file.to_string_lossy());
        let out = self
            .host
            .sh(As::Runner, &format!("umount -l {f} && rm -f {f}"));
        assert!(out.status.success(), "remove netns file: {out:?}");
    }

    /// Run `pasta ARGS` to completion as podman does (`CombinedOutput`: the call returns only
    /// when the process exited *and* stdout/stderr reached end of file, so a daemon that kept
    /// them would hang it). Returns (status, stdout, stderr); panics after 15 s.
    fn pasta(&self, who: As, args: &[&str]) -> (Option<i32>, String, String) {
        let mut child = pasta_cmd(&self.host, who, args, "")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pasta");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut o, mut e) = (String::new(), String::new());
            let _ = out.read_to_string(&mut o);
            let _ = err.read_to_string(&mut e);
            let _ = tx.send((o, e));
        });
        let (o, e) = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("pasta's stdout/stderr still open after 15 s: the daemon kept them");
        let status = child.wait().unwrap();
        (status.code(), o, e)
    }

    /// Start `pasta ARGS` in the foreground (rootlesskit 2.0's way); killed on drop.
    fn pasta_fg(&self, who: As, args: &[&str]) -> Foreground {
        let log = self.dir.path(&format!("fg-{}.log", args.len()));
        let redirect = format!("2>{}", shell_quote(&log.to_string_lossy()));
        let child = pasta_cmd(&self.host, who, args, &redirect)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn pasta");
        Foreground { bg: Bg(child), log }
    }
}

/// A foreground pasta.
struct Foreground {
    bg: Bg,
    log: PathBuf,
}

impl Foreground {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = self.bg.0.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is gone or a zombie (a detached daemon's zombie lingers until init reaps it).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Kills a daemon on drop, should a test fail before it ends it.
struct Daemon(u32);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .status();
    }
}

/// podman 5.4's exact argv for `podman run --network pasta -p 127.0.0.1:18080:80
/// -p 18081:81 -p 18090:53/udp`, plus `--pid`.
fn podman_argv(netns: &Path, pidfile: &Path) -> Vec<String> {
    [
        "--config-net",
        "-t",
        &format!("127.0.0.1/{FWD_TCP}-{FWD_TCP}:80-80"),
        "-t",
        &format!("{}-{}:81-81", FWD_TCP + 1, FWD_TCP + 1),
        "-u",
        &format!("{FWD_UDP}-{FWD_UDP}:53-53"),
        "--dns-forward",
        DNS_FWD,
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        &netns.to_string_lossy(),
        "--map-guest-addr",
        GUEST_MAP,
        "--pid",
        &pidfile.to_string_lossy(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// podman's whole life cycle: the daemon is ready when the parent exits 0 with nothing on
/// stdout/stderr; the namespace copies the host (name, addresses, routes, MTU); published
/// TCP and UDP ports reach the container from loopback and from the host's address; the
/// container reaches the host at 169.254.1.2 and the host's resolver at 169.254.1.1; the
/// gateway is the real one (--no-map-gw: host loopback is out of reach); the daemon exits
/// within a second of podman removing the namespace file.
#[test]
fn podman_argv_end_to_end() {
    let Some(lab) = Lab::new() else { return };
    let host = &lab.host;
    let g = host.guest(As::Runner);
    let netns = lab.netns_file(&g);
    let pidfile = lab.dir.path("pasta.pid");
    let _services = [
        host.spawn(
            As::Runner,
            &format!("python3 {}/dnsserve.py 127.0.0.1 53 {DNS_ANSWER}", tools()),
        ),
        host.spawn(
            As::Runner,
            &format!("python3 {}/tcpserve.py greet {HOST_ADDR} 8000", tools()),
        ),
        host.spawn(
            As::Runner,
            &format!("python3 {}/tcpserve.py greet 127.0.0.1 8001", tools()),
        ),
    ];
    host.wait_listening(53, true);
    host.wait_listening(8000, false);
    host.wait_listening(8001, false);

    let argv = podman_argv(&netns, &pidfile);
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let started = Instant::now();
    let (code, out, err) = lab.pasta(As::Runner, &args);
    assert_eq!(code, Some(0), "pasta failed: stdout {out:?} stderr {err:?}");
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("", ""),
        "--quiet prints nothing"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: u32 = read(&pidfile).trim().parse().expect("pid file holds a pid");
    let _daemon = Daemon(pid);
    assert!(!dead(pid), "the daemon serves on");

    // The namespace copies the template, configured before the parent exited.
    let addr = g.ok("ip -o addr show dev v0");
    assert!(addr.contains("inet 192.0.2.10/24"), "{addr}");
    assert!(addr.contains("inet6 2001:db8::10/64"), "{addr}");
    let link = g.ok("ip -o link show dev v0");
    assert!(link.contains("mtu 65520") && link.contains("UP"), "{link}");
    assert!(g.ok("ip -o link show dev lo").contains("UP"));
    assert!(g
        .ok("ip route show default")
        .contains("via 192.0.2.1 dev v0"));
    assert!(g
        .ok("ip -6 route show default")
        .contains("via 2001:db8::1 dev v0"));

    // Published ports: TCP from loopback and from the host's address, UDP.
    let _web = in_guest(&g, "ncat -lk -p 80 -c 'echo hello-80'");
    let _web81 = in_guest(&g, "ncat -lk -p 81 -c 'echo hello-81'");
    let _echo = in_guest(&g, &format!("{} udpecho 0.0.0.0 53", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        g.sh_any("ss -Hltn | grep -q ':81 ' && ss -Hlun | grep -q ':53 '")
            .status
            .success()
    });
    let got = host.sh(
        As::Runner,
        &format!("ncat --recv-only -w 3 127.0.0.1 {FWD_TCP} </dev/null"),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello-80");
    let got = host.sh(
        As::Runner,
        &format!(
            "ncat --recv-only -w 3 {HOST_ADDR} {} </dev/null",
            FWD_TCP + 1
        ),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello-81");
    let got = host.sh(
        As::Runner,
        &format!("(echo ping-udp; sleep 2) | ncat -u -w 3 127.0.0.1 {FWD_UDP}"),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "ping-udp");
    // 127.0.0.1 only for the first forward, as podman asked.
    let out = host.sh(
        As::Runner,
        &format!("ncat --recv-only -w 2 {HOST_ADDR} {FWD_TCP} </dev/null"),
    );
    assert!(!out.status.success(), "18080 listens on 127.0.0.1 only");

    // The container reaches the host at its own address through --map-guest-addr.
    let peer = g.ok(&format!(
        "ncat --recv-only -w 3 {GUEST_MAP} 8000 </dev/null"
    ));
    assert_eq!(peer.trim(), "ok");
    // DNS through the forward address, UDP and TCP.
    let a = g.ok(&format!(
        "dig +short +time=2 +tries=2 @{DNS_FWD} tapir.test"
    ));
    assert_eq!(a.trim(), DNS_ANSWER);
    let a = g.ok(&format!(
        "dig +short +tcp +time=2 +tries=2 @{DNS_FWD} tapir.test"
    ));
    assert_eq!(a.trim(), DNS_ANSWER);
    // --no-map-gw: the gateway is the real one (it refuses at once), never host loopback.
    let t = Instant::now();
    let out = g.sh_any("ncat --recv-only -w 5 192.0.2.1 8001 </dev/null");
    assert!(!out.status.success(), "the gateway is not host loopback");
    assert!(t.elapsed() < Duration::from_secs(3), "refused at once");

    // podman removes the namespace file; the daemon follows within a second.
    lab.remove_netns_file(&netns);
    let t = Instant::now();
    wait_until(Duration::from_secs(3), || dead(pid));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "exit took {:?}",
        t.elapsed()
    );
}

/// Without `--no-map-gw`, the gateway address is the host's loopback (pasta's default); a
/// port range forwards each of its ports to its counterpart.
#[test]
fn gateway_maps_to_host_loopback_by_default() {
    let Some(lab) = Lab::new() else { return };
    let host = &lab.host;
    let g = host.guest(As::Runner);
    let netns = lab.netns_file(&g);
    let pidfile = lab.dir.path("pasta.pid");
    let _srv = host.spawn(
        As::Runner,
        &format!("python3 {}/tcpserve.py greet 127.0.0.1 8001", tools()),
    );
    host.wait_listening(8001, false);
    let (code, out, err) = lab.pasta(
        As::Runner,
        &[
            "--config-net",
            "-t",
            "127.0.0.1/18100-18101:90-91",
            "-u",
            "none",
            "-q",
            "--netns",
            &netns.to_string_lossy(),
            "-P",
            &pidfile.to_string_lossy(),
        ],
    );
    assert_eq!(code, Some(0), "{out} {err}");
    let _daemon = Daemon(read(&pidfile).trim().parse().unwrap());
    assert_eq!(
        g.ok("ncat --recv-only -w 3 192.0.2.1 8001 </dev/null")
            .trim(),
        "ok"
    );
    let mut servers = Vec::new();
    for port in [90, 91] {
        servers.push(in_guest(
            &g,
            &format!("ncat -lk -p {port} -c 'echo port-{port}'"),
        ));
    }
    wait_until(Duration::from_secs(5), || {
        g.sh_any("ss -Hltn | grep -q ':90 ' && ss -Hltn | grep -q ':91 '")
            .status
            .success()
    });
    for (host_port, want) in [(18100, "port-90"), (18101, "port-91")] {
        let got = host.sh(
            As::Runner,
            &format!("ncat --recv-only -w 3 127.0.0.1 {host_port} </dev/null"),
        );
        assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), want);
    }
    lab.remove_netns_file(&netns);
}

/// rootlesskit 2.0's argv (foreground, a persistent tap0 it made and addressed itself, no
/// --config-net, a PID operand), run by the plain user as rootlesskit does: DNS through
/// 10.0.2.3, `--tcp-ports=auto` picks up a listener opened after start and drops it after it
/// closes, and the process exits when the target process does.
#[test]
fn rootlesskit_argv_with_auto_ports() {
    let Some(lab) = Lab::new() else { return };
    require!(test_user().is_some(), "{}", no_test_user());
    let host = &lab.host;
    let _dns = host.spawn(
        As::Runner,
        &format!("python3 {}/dnsserve.py 127.0.0.1 53 {DNS_ANSWER}", tools()),
    );
    host.wait_listening(53, true);
    let g = host.guest(As::User);
    // rootlesskit 2.0 pre-creates and configures the tap in the child's namespaces.
    g.ok(
        "ip tuntap add name tap0 mode tap && ip link set tap0 up && \
          ip addr add 10.0.2.100/24 dev tap0 && ip route add default via 10.0.2.2 && \
          ip link set lo up",
    );
    let pid = g.pid.to_string();
    let mut fg = lab.pasta_fg(
        As::User,
        &[
            "--foreground",
            "--stderr",
            "--ns-ifname=tap0",
            "--mtu=65520",
            "--no-dhcp",
            "--no-ra",
            "--address=10.0.2.100",
            "--netmask=24",
            "--gateway=10.0.2.2",
            "--dns-forward=10.0.2.3",
            "--no-map-gw",
            "--ipv4-only",
            "--tcp-ports=auto",
            "--udp-ports=auto",
            &pid,
        ],
    );
    wait_until(Duration::from_secs(5), || {
        g.sh_any("dig +short +time=1 +tries=1 @10.0.2.3 tapir.test")
            .status
            .success()
    });
    let a = g.ok("dig +short +time=2 +tries=2 @10.0.2.3 tapir.test");
    assert_eq!(a.trim(), DNS_ANSWER, "{}", fg.log());

    // A listener opened after start is forwarded from the host within a few seconds.
    let listener = Bg(Command::new("nsenter")
        .args(["-t", &pid, "-U", "-n", "--preserve-credentials"])
        .args(["ncat", "-lk", "-p", "8081", "-c", "echo auto-8081"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let reached = || {
        let out = host.sh(
            As::Runner,
            "ncat --recv-only -w 2 127.0.0.1 8081 </dev/null",
        );
        String::from_utf8_lossy(&out.stdout).trim() == "auto-8081"
    };
    let t = Instant::now();
    while !reached() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "auto forward never came: {}",
            fg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(listener);
    let t = Instant::now();
    while host
        .sh(As::Runner, "ss -Hltn | grep -q ':8081 '")
        .status
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "host port kept after the listener closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The target process goes; so does pasta.
    drop(g);
    assert!(fg.exited(Duration::from_secs(3)), "{}", fg.log());
}

/// Without any route on the host (no template interface), pasta's link-local fallback:
/// 169.254.2.1/16 via 169.254.2.2, interface tap0.
#[test]
fn no_template_means_link_local() {
    let Some(host) = host() else { return };
    need!("ip");
    let g = host.guest(As::Runner);
    let dir = Scratch::new("pasta-local");
    let pidfile = dir.path("pid");
    let (pidfile_arg, pid_arg) = (pidfile.to_string_lossy(), g.pid.to_string());
    let args = [
        "--config-net",
        "-q",
        "-t",
        "none",
        "-u",
        "none",
        "-P",
        &pidfile_arg,
        &pid_arg,
    ];
    let out = pasta_cmd(&host, As::Runner, &args, "").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid: u32 = read(&pidfile).trim().parse().unwrap();
    let _daemon = Daemon(pid);
    let addr = g.ok("ip -o addr show dev tap0");
    assert!(addr.contains("inet 169.254.2.1/16"), "{addr}");
    assert!(g.ok("ip route show default").contains("via 169.254.2.2"));
    // A PID operand: the daemon exits when the process does.
    drop(g);
    wait_until(Duration::from_secs(3), || dead(pid));
}

/// Set-up failures exit 1 with the reason on stderr and leave nothing behind.
#[test]
fn failures_exit_1_with_the_reason() {
    let Some(lab) = Lab::new() else { return };
    let (code, _, err) = lab.pasta(
        As::Runner,
        &["--config-net", "--netns", "/nonexistent/netns-x", "-q"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/nonexistent/netns-x"), "{err}");
    // A forward whose host port is taken.
    let _taken = lab.host.spawn(As::Runner, "ncat -lk 127.0.0.1 18200");
    lab.host.wait_listening(18200, false);
    let g = lab.host.guest(As::Runner);
    let netns = lab.netns_file(&g);
    let (code, _, err) = lab.pasta(
        As::Runner,
        &[
            "--config-net",
            "-q",
            "-t",
            "127.0.0.1/18200",
            "--netns",
            &netns.to_string_lossy(),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("18200"), "{err}");
}

/// A link-local IPv6 default gateway (what most routers advertise): the guest's TCP over IPv6
/// reaches both a host of the copied prefix and one beyond the gateway; and SIGTERM ends the
/// daemon (its signal handling survives the fork).
#[test]
fn ipv6_behind_a_link_local_gateway_and_sigterm() {
    let Some(lab) = Lab::new() else { return };
    let host = &lab.host;
    let script = format!(
        "set -e
         nsenter -t {r} -n sh -c 'ip -6 addr add fe80::1/64 dev v1 nodad; \
           ip -6 addr add 2001:db8:1::1/64 dev lo'
         ip -6 route replace default via fe80::1 dev v0",
        r = lab.rpid
    );
    let out = host.sh(As::Runner, &script);
    assert!(out.status.success(), "{out:?}");
    let remote = |addr: &str| {
        Bg(Command::new("nsenter")
            .args(["-t", &lab.rpid.to_string(), "-n"])
            .args(["python3", &format!("{}/tcpserve.py", tools())])
            .args(["greet", addr, "8000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap())
    };
    let _near = remote("2001:db8::1");
    let _far = remote("2001:db8:1::1");
    let g = host.guest(As::Runner);
    let netns = lab.netns_file(&g);
    let pidfile = lab.dir.path("pasta.pid");
    let (code, out, err) = lab.pasta(
        As::Runner,
        &[
            "--config-net",
            "-t",
            "none",
            "-u",
            "none",
            "-q",
            "--netns",
            &netns.to_string_lossy(),
            "-P",
            &pidfile.to_string_lossy(),
        ],
    );
    assert_eq!(code, Some(0), "{out} {err}");
    let pid: u32 = read(&pidfile).trim().parse().unwrap();
    let _daemon = Daemon(pid);
    assert!(g
        .ok("ip -6 route show default")
        .contains("via fe80::1 dev v0"));
    for addr in ["2001:db8::1", "2001:db8:1::1"] {
        let t = Instant::now();
        let mut got = String::new();
        while got.trim() != "ok" && t.elapsed() < Duration::from_secs(5) {
            let out = g.sh_any(&format!("ncat --recv-only -w 2 {addr} 8000 </dev/null"));
            got = String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert_eq!(got.trim(), "ok", "TCP over IPv6 to {addr}");
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    wait_until(Duration::from_secs(3), || dead(pid));
    lab.remove_netns_file(&netns);
}
