//! `--enable-sandbox` and `--enable-seccomp`: the process is really confined, and everything
//! still works inside.
//!
//! What is checked, from outside the process (`/proc/PID/...`) and through real traffic:
//! - the kernel's view: `Seccomp: 2`, `NoNewPrivs: 1`, only `CAP_NET_BIND_SERVICE` in every
//!   capability set, a root directory holding only `etc` and `run`, all mounts read-only;
//! - TCP, UDP, DNS (including a resolv.conf change, and a resolv.conf reached through symlinks
//!   outside `/etc`), ICMP, `tapir run`, stop/continue and clean exits, all under the filter;
//! - a syscall outside the allowlist kills the process with `SIGSYS` (test-only trigger, built
//!   with `--features test-utils`), and does not without `--enable-seccomp`; a panic under the
//!   filter still prints its message and exits 101;
//! - rootless: `--netns-type=path --userns-path` (slirp4netns #317), pid mode, and `tapfd` mode
//!   (which has no target user namespace, so tapir makes its own);
//! - the caller's shared mounts survive (slirp4netns's `sandbox-no-unmount`);
//! - podman's default argv runs with the filter enforcing.
//!
//! Needs namespaces (skips otherwise, fails under `CI=true`); the rootless cases need root to
//! switch to the test user.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Both hardening flags, as podman passes them.
const BOTH: [&str; 2] = ["--enable-sandbox", "--enable-seccomp"];
/// `CAP_NET_BIND_SERVICE` (bit 10) and nothing else, as `/proc/PID/status` prints it.
const NET_BIND_SERVICE_ONLY: &str = "0000000000000400";
/// No capabilities.
const NO_CAPS: &str = "0000000000000000";
/// `SIGSYS`.
const SIGSYS: i32 = 31;

/// `/proc/PID/status` as a map.
fn status(pid: u32) -> BTreeMap<String, String> {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Check the kernel's view of a sandboxed, filtered process.
fn assert_confined(pid: u32, logs: &str) {
    let st = status(pid);
    assert_eq!(st["Seccomp"], "2", "seccomp mode\n{logs}");
    assert_eq!(st["NoNewPrivs"], "1", "no_new_privs\n{logs}");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(st[set], NET_BIND_SERVICE_ONLY, "{set}\n{logs}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert_eq!(st[set], NO_CAPS, "{set}\n{logs}");
    }
    assert!(
        logs.contains("seccomp: allowlist of "),
        "the filter announces itself on stdout\n{logs}"
    );
}

/// Names in `/proc/PID/root`.
fn root_entries(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/root"))
        .expect("read /proc/PID/root")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ns(pid: u32, kind: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("read namespace link")
}

/// Start tapir inside `host` with exactly `args` (no harness defaults or extra arguments), fd 3
/// writing to the `ready` file, `env` added and core dumps off. With `stdin_pipe`, fd 4 is the
/// read end of a pipe whose write end is the child's stdin (an exit fd).
fn spawn_exact(
    host: &HostNs,
    who: As,
    args: &[&str],
    env: &[(&str, &str)],
    stdin_pipe: bool,
) -> Tapir {
    let dir = Scratch::new("sandbox");
    let ready = dir.path("ready");
    let mut script = format!(
        "ulimit -c 0; exec {} {} 3>{}",
        shell_quote(&shared_bin().to_string_lossy()),
        args.iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        shell_quote(&ready.to_string_lossy())
    );
    if stdin_pipe {
        script.push_str(" 4<&0");
    }
    let mut c = host.cmd(who, "sh");
    c.args(["-c", &script])
        .stdin(if stdin_pipe {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(
            std::fs::File::create(dir.path("stdout")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path("stderr")).unwrap(),
        ));
    // Deterministic panics: no backtrace (symbolizing one needs files the sandbox hides).
    c.env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().expect("spawn tapir");
    Tapir { child, dir }
}

/// Start both hardening flags plus `extra` against a fresh guest of `who`, configured (`-c`).
fn start(host: &HostNs, who: As, extra: &[&str]) -> (Guest, Tapir) {
    let g = host.guest(who);
    let pid = g.pid.to_string();
    let mut args: Vec<&str> = BOTH.to_vec();
    args.push("-c");
    args.extend_from_slice(extra);
    args.extend([pid.as_str(), "tap0"]);
    let mut t = spawn_exact(host, who, &[&["-r", "3"][..], &args].concat(), &[], false);
    t.wait_ready();
    (g, t)
}

fn dnsmasq(host: &HostNs, addr: &str, answer: &str) -> Bg {
    host.spawn(
        As::Runner,
        &format!(
            "dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
             --listen-address={addr} --port=53 --user=root --pid-file= \
             --address=/tapir.test/{answer}"
        ),
    )
}

/// Two DNS servers on loopback: 127.0.0.1 answers 192.0.2.1, 127.0.0.2 answers 192.0.2.2.
fn two_resolvers(host: &HostNs) -> (Bg, Bg) {
    host.sh(
        As::Runner,
        "ip addr add 127.0.0.2/8 dev lo 2>/dev/null; true",
    );
    let a = dnsmasq(host, "127.0.0.1", "192.0.2.1");
    let b = dnsmasq(host, "127.0.0.2", "192.0.2.2");
    for (server, answer) in [("127.0.0.1", "192.0.2.1"), ("127.0.0.2", "192.0.2.2")] {
        wait_until(Duration::from_secs(5), || {
            host.sh(
                As::Runner,
                &format!("dig +short +time=1 +tries=1 @{server} tapir.test | grep -q {answer}"),
            )
            .status
            .success()
        });
    }
    (a, b)
}

/// The guest's answer for tapir.test through the DNS proxy.
fn lookup(g: &Guest) -> String {
    String::from_utf8_lossy(
        &g.sh_any("dig +short +time=1 +tries=2 @10.0.2.3 tapir.test")
            .stdout,
    )
    .trim()
    .to_owned()
}

#[test]
fn kernel_view_of_the_confined_process() {
    let Some(host) = host() else { return };
    let (_g, t) = start(&host, As::Runner, &[]);
    let pid = t.pid();
    assert_confined(pid, &t.logs());
    assert_eq!(root_entries(pid), set(&["etc", "run"]));
    // /etc is the caller's (the harness's private resolv.conf is visible through it).
    assert_eq!(
        read(std::path::Path::new(&format!(
            "/proc/{pid}/root/etc/resolv.conf"
        ))),
        "nameserver 127.0.0.1\n"
    );
    assert_ne!(ns(pid, "mnt"), ns(host.pid, "mnt"), "own mount namespace");
    assert_eq!(
        ns(pid, "net"),
        ns(host.pid, "net"),
        "host sockets stay in the host namespace"
    );
    // Every mount is read-only, even for root writing through /proc/PID/root.
    let mountinfo = read(std::path::Path::new(&format!("/proc/{pid}/mountinfo")));
    assert!(!mountinfo.is_empty());
    for line in mountinfo.lines() {
        let opts = line.split_whitespace().nth(5).unwrap_or("");
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "writable mount in the sandbox: {line}"
        );
    }
    for p in ["probe", "etc/tapir-probe"] {
        let path = format!("/proc/{pid}/root/{p}");
        assert!(std::fs::write(&path, "x").is_err(), "{path} is writable");
    }
}

#[test]
fn tcp_udp_dns_icmp_work_under_the_filter() {
    let Some(host) = host() else { return };
    need!("ncat", "dig", "dnsmasq", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _tcp = host.spawn(As::Runner, &format!("{} greet 127.0.0.1 18181", tcpserve()));
    // A one-process UDP echo (ncat -k -e leaves forked children behind when killed).
    let _udp = host.spawn(
        As::Runner,
        "python3 -c 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind((\"198.51.100.1\", 18182))\nwhile True:\n    d, a = s.recvfrom(65535)\n    s.sendto(d, a)'",
    );
    let _dns = two_resolvers(&host);
    host.wait_listening(18181, false);
    host.wait_listening(18182, true);
    let (g, t) = start(&host, As::Runner, &[]);

    // TCP through the gateway to host loopback, many times (new flows after the filter).
    let out = g.ok("n=0; for i in $(seq 20); do [ \"$(ncat 10.0.2.2 18181 </dev/null)\" = ok ] && n=$((n+1)); done; echo $n");
    assert_eq!(out.trim(), "20", "{}", t.logs());
    // UDP to another address, and an ICMP error relayed back for a closed port.
    let out = g.ok("(echo udp-ping; sleep 1) | ncat -u -w 2 198.51.100.1 18182");
    assert_eq!(out.trim(), "udp-ping", "{}", t.logs());
    let out = g.sh_any("(echo x; sleep 1; echo y) | ncat -u 10.0.2.2 18199");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );
    // DNS over UDP and TCP, then a resolv.conf change is followed (re-read in the sandbox).
    // The new file's scoped IPv6 entry makes the re-read resolve an interface name
    // (if_nametoindex: an AF_UNIX socket and SIOCGIFINDEX, both allowed for just this).
    assert_eq!(lookup(&g), "192.0.2.1", "{}", t.logs());
    let tcp = g.ok("dig +tcp +short +time=2 +tries=2 @10.0.2.3 tapir.test");
    assert_eq!(tcp.trim(), "192.0.2.1");
    host.set_resolv_conf("nameserver fe80::1%lo\nnameserver 127.0.0.2\n");
    wait_until(Duration::from_secs(5), || lookup(&g) == "192.0.2.2");
    // ICMP echo to another address (a host ping socket) and to the gateway (answered locally).
    g.ok("ping -c 2 -i 0.2 -W 2 198.51.100.1");
    g.ok("ping -c 1 -W 2 10.0.2.2");
    assert_confined(t.pid(), &t.logs());
}

#[test]
fn a_syscall_outside_the_allowlist_kills_with_sigsys() {
    let Some(host) = host() else { return };
    require!(
        cfg!(feature = "test-utils"),
        "the forbidden-syscall trigger needs `cargo test --features test-utils` (test.sh does this)"
    );
    let trigger = [("TAPIR_TEST_SECCOMP_TRIGGER", "1")];
    // With the filter: unshare(0) kills the process before it reports ready.
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = spawn_exact(
        &host,
        As::Runner,
        &[
            "-r",
            "3",
            "--enable-sandbox",
            "--enable-seccomp",
            "-c",
            &pid,
            "tap0",
        ],
        &trigger,
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = t.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still alive:\n{}", t.logs());
        std::thread::sleep(Duration::from_millis(10));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(SIGSYS), "{st:?}\n{}", t.logs());
    assert!(read(&t.dir.path("ready")).is_empty(), "never ready");
    assert!(
        t.logs().contains("making a forbidden syscall"),
        "{}",
        t.logs()
    );
    drop(t);
    drop(g);

    // Control: the same trigger without --enable-seccomp is harmless, so the death above is
    // the filter's doing.
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = spawn_exact(
        &host,
        As::Runner,
        &["-r", "3", "--enable-sandbox", "-c", &pid, "tap0"],
        &trigger,
        false,
    );
    t.wait_ready();
    assert!(
        t.logs().contains("the seccomp filter is not enforcing"),
        "{}",
        t.logs()
    );
    assert_eq!(status(t.pid())["Seccomp"], "0");
}

#[test]
fn a_panic_under_the_filter_prints_its_message_and_exits_101() {
    let Some(host) = host() else { return };
    require!(
        cfg!(feature = "test-utils"),
        "the panic trigger needs `cargo test --features test-utils` (test.sh does this)"
    );
    // A bug must stay diagnosable under the filter: the panic message reaches stderr and the
    // process unwinds and exits 101, instead of dying by SIGSYS inside the panic machinery.
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let mut t = spawn_exact(
        &host,
        As::Runner,
        &[
            "-r",
            "3",
            "--enable-sandbox",
            "--enable-seccomp",
            "-c",
            &pid,
            "tap0",
        ],
        &[("TAPIR_TEST_SECCOMP_TRIGGER", "panic")],
        false,
    );
    assert_eq!(
        t.wait_exit(Duration::from_secs(10)),
        Some(Some(101)),
        "{}",
        t.logs()
    );
    assert!(
        t.logs().contains("panicked") && t.logs().contains("TAPIR_TEST_SECCOMP_TRIGGER=panic"),
        "{}",
        t.logs()
    );
}

#[test]
fn rootless_path_mode_joins_the_named_user_namespace() {
    let Some(host) = host() else { return };
    require!(is_root(), "switching to the test user needs root");
    require!(test_user().is_some(), "{}", no_test_user());
    let (uid, _) = test_user().unwrap();
    // slirp4netns #317: with --netns-type=path the sandbox must join --userns-path.
    let g = host.guest(As::User);
    let userns = format!("--userns-path={}", g.userns_path());
    let netns = g.netns_path();
    let mut t = spawn_exact(
        &host,
        As::User,
        &[
            "-r",
            "3",
            "--enable-sandbox",
            "--enable-seccomp",
            &userns,
            "--netns-type=path",
            &netns,
            "tap0",
            "-c",
        ],
        &[],
        false,
    );
    t.wait_ready();
    let pid = t.pid();
    assert_confined(pid, &t.logs());
    assert_eq!(
        ns(pid, "user"),
        ns(g.pid, "user"),
        "joined the named user namespace"
    );
    assert_eq!(root_entries(pid), set(&["etc", "run"]));
    let st = status(pid);
    assert!(
        st["Uid"].split_whitespace().all(|u| u == uid.to_string()),
        "still the plain user to the host: {}",
        st["Uid"]
    );
    g.ok("ping -c 1 -W 2 10.0.2.2");
    g.ok("ping -c 1 -W 2 10.0.2.3");
}

#[test]
fn rootless_pid_mode_joins_the_targets_user_namespace() {
    let Some(host) = host() else { return };
    require!(is_root(), "switching to the test user needs root");
    require!(test_user().is_some(), "{}", no_test_user());
    let (g, t) = start(&host, As::User, &[]);
    assert_confined(t.pid(), &t.logs());
    assert_eq!(ns(t.pid(), "user"), ns(g.pid, "user"));
    g.ok("ping -c 1 -W 2 10.0.2.2");
}

#[test]
fn rootless_tapfd_mode_makes_its_own_user_namespace() {
    let Some(host) = host() else { return };
    require!(is_root(), "switching to the test user needs root");
    need!("python3");
    let Some((uid, gid)) = test_user() else {
        require!(false, "{}", no_test_user());
        return;
    };
    // A root helper opens the tap inside the guest, then hands the fd (as fd 5) to tapir
    // running as the plain user in the host namespace: no target user namespace to join.
    let g = host.guest(As::Runner);
    let dir = Scratch::new("tapfd");
    let ready = dir.path("ready");
    let tapir = format!(
        "ulimit -c 0; exec {} -r 3 --enable-sandbox --enable-seccomp --netns-type=tapfd 5 3>{}",
        shell_quote(&shared_bin().to_string_lossy()),
        shell_quote(&ready.to_string_lossy())
    );
    let helper = format!(
        r#"
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH22x", b"tap0", 0x0002 | 0x1000))
os.dup2(fd, 5)
os.execvp("nsenter", ["nsenter", "-t", "{host}", "-n", "-m", "setpriv", "--reuid={uid}",
          "--regid={gid}", "--clear-groups", "--", "sh", "-c", {tapir:?}])
"#,
        host = host.pid
    );
    let child = Command::new("nsenter")
        .args(["-t", &g.pid.to_string(), "-n", "python3", "-c", &helper])
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(dir.path("stdout")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path("stderr")).unwrap(),
        ))
        .spawn()
        .expect("spawn helper");
    let mut t = Tapir { child, dir };
    t.wait_ready();
    let pid = t.pid();
    assert_confined(pid, &t.logs());
    let own = ns(pid, "user");
    assert_ne!(
        own,
        ns(std::process::id(), "user"),
        "a user namespace of its own"
    );
    assert_ne!(own, ns(g.pid, "user"));
    g.ok("ip link set tap0 up && ip addr add 10.0.2.100/24 dev tap0");
    g.ok("ping -c 1 -W 2 10.0.2.2");
}

#[test]
fn callers_shared_mounts_stay_mounted() {
    let Some(host) = host() else { return };
    need!("findmnt");
    // slirp4netns's test-slirp4netns-sandbox-no-unmount.sh: a shared mount tree in the
    // caller's namespace must not lose its submounts when tapir detaches its old root.
    let dir = Scratch::new("shared");
    let d = dir.path("shared");
    let d = d.to_string_lossy();
    let out = host.sh(
        As::Runner,
        &format!(
            "mkdir -p {d} && mount -t tmpfs tapir-shared {d} && mount --make-rshared {d} && \
             mkdir {d}/foo && mount -t tmpfs tapir-foo {d}/foo"
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let findmnt = || {
        host.sh(As::Runner, &format!("findmnt {d}/foo"))
            .status
            .success()
    };
    assert!(findmnt());
    let g = host.guest(As::Runner);
    let netns = g.netns_path();
    let mut t = spawn_exact(
        &host,
        As::Runner,
        &[
            "-r",
            "3",
            "--enable-sandbox",
            "--enable-seccomp",
            "--netns-type=path",
            &netns,
            "tap0",
        ],
        &[],
        false,
    );
    t.wait_ready();
    assert!(findmnt(), "the sandbox unmounted the caller's {d}/foo");
    drop(t);
    assert!(findmnt());
    let _ = host.sh(As::Runner, &format!("umount -R {d}"));
}

#[test]
fn resolv_conf_behind_symlinks_outside_etc_still_works() {
    let Some(host) = host() else { return };
    need!("dig", "dnsmasq");
    // /etc/resolv.conf -> S/link/resolv.conf, S/link -> S/real: both the intermediate link and
    // the file are outside /etc and /run (NixOS, WSL); the DNS proxy must keep following it.
    let _dns = two_resolvers(&host);
    let s = Scratch::new("resolv");
    std::fs::create_dir(s.path("real")).unwrap();
    let real = s.path("real/resolv.conf");
    std::fs::write(&real, "nameserver 127.0.0.1\n").unwrap();
    std::os::unix::fs::symlink(s.path("real"), s.path("link")).unwrap();
    std::fs::create_dir(s.path("etc")).unwrap();
    std::os::unix::fs::symlink(s.path("link/resolv.conf"), s.path("etc/resolv.conf")).unwrap();
    // A minimal /etc: the dynamic loader's cache, so tapir starts as usual.
    let _ = std::fs::copy("/etc/ld.so.cache", s.path("etc/ld.so.cache"));
    let out = host.sh(
        As::Runner,
        &format!("mount --bind {} /etc", s.path("etc").display()),
    );
    assert!(out.status.success(), "{out:?}");

    let (g, t) = start(&host, As::Runner, &[]);
    let pid = t.pid();
    assert!(
        t.logs().contains("leads outside {/etc, /run}"),
        "{}",
        t.logs()
    );
    // The top directory of the scratch path appears next to etc and run.
    let top =
        s.0.components()
            .nth(1)
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
    assert_eq!(root_entries(pid), set(&["etc", "run", &top]));
    assert_eq!(lookup(&g), "192.0.2.1", "{}", t.logs());
    std::fs::write(&real, "nameserver 127.0.0.2\n").unwrap();
    wait_until(Duration::from_secs(5), || lookup(&g) == "192.0.2.2");
    assert_confined(pid, &t.logs());
}

#[test]
fn tapir_run_under_sandbox_and_seccomp() {
    let Some(host) = host() else { return };
    let b = shared_bin();
    let b = b.to_string_lossy();
    let out = host.sh(
        As::Runner,
        &format!("{b} run --enable-sandbox --enable-seccomp -- sh -c 'ping -c 1 -W 2 10.0.2.2 && exit 7'"),
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    if is_root() && test_user().is_some() {
        let out = host.sh(
            As::User,
            &format!("{b} run --enable-sandbox --enable-seccomp -- sh -c 'id -u; ping -c 1 -W 2 10.0.2.3'"),
        );
        assert!(out.status.success(), "rootless run: {out:?}");
    }
    // A terminating signal is passed on to the command (kill(2), allowed for these signals
    // only) and tapir reports it shell-style.
    let child = host
        .cmd(As::Runner, b.as_ref())
        .args([
            "run",
            "--enable-sandbox",
            "--enable-seccomp",
            "--",
            "sleep",
            "30",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tapir = child.id();
    let sleeper = wait_for_descendant(tapir, "sleep");
    wait_until(Duration::from_secs(5), || {
        status(tapir).get("Seccomp").map(String::as_str) == Some("2")
    });
    // The command runs once the network is up, i.e. after the filter is installed; give it a
    // moment to exec.
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{sleeper}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    Command::new("kill")
        .args(["-TERM", &tapir.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
}

#[test]
fn stop_and_continue_under_the_filter() {
    let Some(host) = host() else { return };
    let (g, t) = start(&host, As::Runner, &[]);
    let pid = t.pid().to_string();
    for sig in ["-STOP", "-CONT"] {
        Command::new("kill").args([sig, &pid]).status().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    g.ok("ping -c 1 -W 2 10.0.2.2");
    assert_eq!(status(t.pid())["Seccomp"], "2", "{}", t.logs());
}

#[test]
fn podman_default_argv_runs_with_the_filter_enforcing() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _srv = host.spawn(
        As::Runner,
        &format!("{} greet 198.51.100.1 18183", tcpserve()),
    );
    host.wait_listening(18183, false);
    let g = host.guest(As::Runner);
    let netns = g.netns_path();
    // c/common's Setup argv with its defaults (fd 3 = ready, fd 4 = exit pipe).
    let mut t = spawn_exact(
        &host,
        As::Runner,
        &[
            "--disable-host-loopback",
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-r",
            "3",
            "-e",
            "4",
            "--netns-type=path",
            &netns,
            "tap0",
        ],
        &[],
        true,
    );
    t.wait_ready();
    assert_confined(t.pid(), &t.logs());
    assert!(g.ok("ip -o link show tap0").contains("mtu 65520"));
    g.ok("ping -c 1 -W 2 10.0.2.3");
    assert_eq!(
        g.ok("ncat 198.51.100.1 18183 </dev/null").trim(),
        "ok",
        "{}",
        t.logs()
    );
    // conmon closes the exit pipe: a clean exit, not a SIGSYS on the way out.
    drop(t.child.stdin.take());
    assert_eq!(
        t.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        t.logs()
    );
}
