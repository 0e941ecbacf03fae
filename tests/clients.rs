//! Real clients: rootlesskit and rootless podman run tapir, unmodified, as an unprivileged user.
//!
//! Each test builds a private "world" as root: new network, mount and PID namespaces
//! (`unshare -n -m -p --fork`) with only `lo` up (plus 198.51.100.1/32 on it, standing in for a
//! remote host), `/` made shared again inside (as on a systemd host, but peered with nothing
//! outside), a resolv.conf naming 127.0.0.1 bind-mounted over `/etc/resolv.conf`, and servers on
//! loopback: `busybox httpd` on port 18080 and dnsmasq on 127.0.0.1:53 (answering
//! `tapir.test` = 192.0.2.1). rootlesskit and podman then run inside it as the plain user
//! `tapirtest`, with a HOME and XDG directories of the test's own, so nothing depends on the
//! machine's configuration and no traffic can leave the machine. Killing the PID namespace's init
//! at the end kills whatever the clients left behind (podman's pause process, for example).
//!
//! Podman never pulls: its image is made locally from busybox-static with `podman import`,
//! `registries.conf` lists no registry, and every `podman run` says `--pull=never`.
//!
//! These tests need root (CI runs as root) and the packages `.ci/run` installs: rootlesskit,
//! podman, runc, conmon, catatonit, busybox-static, uidmap (newuidmap/newgidmap, with
//! /etc/subuid and /etc/subgid ranges for `tapirtest`), dnsmasq, dig. Without them each test
//! prints exactly what is missing and skips; under `CI=true` it fails instead.
//!
//! `TAPIR_CLIENT_TEST_BIN=/usr/bin/slirp4netns` runs the same suites against another
//! slirp4netns-compatible binary (to check the tests themselves against slirp4netns); the
//! tapir-only assertions (version string, sandbox details) are then relaxed where noted.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Port of the HTTP server in the world ("the host"), on every address of `lo`.
const HOST_HTTP: u16 = 18080;
/// What that server serves.
const HOST_PAGE: &str = "hello from the host\n";
/// What servers inside the clients' namespaces serve.
const GUEST_PAGE: &str = "hello from the guest\n";
/// The stand-in for a remote host (on `lo` of the world).
const REMOTE: &str = "198.51.100.1";
/// dnsmasq's answer for `tapir.test`.
const DNS_ANSWER: &str = "192.0.2.1";

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// The binary the clients are pointed at, and whether it is tapir itself.
fn bin_under_test() -> (PathBuf, bool) {
    match std::env::var_os("TAPIR_CLIENT_TEST_BIN") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), false),
        _ => (shared_bin(), true),
    }
}

fn have(cmd: &str) -> bool {
    tool(cmd)
}

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static_elf(path: &Path) -> Result<bool, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err(format!(
            "{} is not a 64-bit little-endian ELF",
            path.display()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > b.len() {
            break;
        }
        // PT_INTERP
        if u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Where a command lives, via `command -v`.
fn which(cmd: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

/// Whether `file` (/etc/subuid or /etc/subgid) has a range for the test user.
fn has_subid_range(file: &str, uid: u32) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let who = l.split(':').next().unwrap_or("");
            who == test_user_name() || who == uid.to_string()
        })
}

/// Why the client tests cannot run here, if they cannot (exactly what is missing).
fn clients_unavailable(extra_tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some(
            "needs root: the client tests create private network/mount/PID namespaces and run \
             rootlesskit/podman in them as the user tapirtest"
                .into(),
        );
    }
    if let Some(why) = namespace_unavailable() {
        return Some(why);
    }
    let Some((uid, _)) = test_user() else {
        return Some(no_test_user());
    };
    for f in ["/etc/subuid", "/etc/subgid"] {
        if !has_subid_range(f, uid) {
            return Some(format!(
                "{f} has no range for {} (usermod --add-subuids/--add-subgids)",
                test_user_name()
            ));
        }
    }
    for t in ["newuidmap", "newgidmap"] {
        if !have(t) {
            return Some(format!("{t} not installed (package uidmap)"));
        }
    }
    for t in ["busybox", "dnsmasq", "dig", "ss", "timeout", "tar"]
        .iter()
        .chain(extra_tools)
    {
        if !have(t) {
            let pkg = match *t {
                "busybox" => "busybox-static",
                "dnsmasq" => "dnsmasq-base",
                "dig" => "bind9-dnsutils",
                "ss" => "iproute2",
                "podman" | "rootlesskit" | "runc" | "conmon" | "catatonit" => t,
                _ => "coreutils",
            };
            return Some(format!("{t} not installed (package {pkg})"));
        }
    }
    if extra_tools.contains(&"podman") {
        // The container image is busybox alone, so it must not need a dynamic loader.
        let busybox = which("busybox").unwrap_or_default();
        match is_static_elf(&busybox) {
            Ok(true) => {}
            Ok(false) => {
                return Some(format!(
                    "{} is dynamically linked; the podman image needs busybox-static",
                    busybox.display()
                ))
            }
            Err(e) => return Some(e),
        }
    }
    let (bin, _) = bin_under_test();
    if !bin.exists() {
        return Some(format!("{} does not exist", bin.display()));
    }
    None
}

macro_rules! need_clients {
    ($($t:expr),*) => {
        let why = clients_unavailable(&[$($t),*]);
        require!(why.is_none(), "{}", why.unwrap_or_default());
    };
}

// ---------------------------------------------------------------------------------------------
// The private world

/// One process as seen from outside the world.
#[derive(Debug)]
struct Proc {
    pid: u32,
    uid: u32,
    state: char,
    comm: String,
    cmdline: String,
}

/// A directory removed on drop (for the short XDG_RUNTIME_DIR).
struct RmDir(PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Private network, mount and PID namespaces with servers on loopback.
struct World {
    /// `unshare --fork --kill-child`.
    holder: Child,
    /// Host PID of the PID namespace's init (`sleep`).
    pid: u32,
    /// Work directory (mode 777): resolv.conf, web roots, logs, the clients' HOME.
    dir: Scratch,
    /// The test user's HOME inside `dir`.
    home: PathBuf,
    /// The test user's XDG_RUNTIME_DIR: short (podman puts sockets named after 64-hex container
    /// ids there, and a socket path has at most 107 bytes), mode 700, owned by the user.
    run: RmDir,
    uid: u32,
    gid: u32,
    /// Background processes started with [`World::spawn`].
    bg: Vec<Bg>,
}

impl World {
    fn new(tag: &str) -> World {
        let (uid, gid) = test_user().expect("test user");
        let dir = Scratch::new(tag);
        let home = dir.path("home");
        std::fs::create_dir_all(home.join(".config/containers")).unwrap();
        std::fs::create_dir_all(home.join(".local/share")).unwrap();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let run = RmDir(PathBuf::from(format!(
            "/tmp/tapir-rt-{}-{n}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&run.0);
        std::fs::create_dir_all(&run.0).unwrap();
        let st = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "chown -R {uid}:{gid} {h} {r} && chmod 700 {r}",
                    h = shell_quote(&home.to_string_lossy()),
                    r = shell_quote(&run.0.to_string_lossy())
                ),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "chown the test user's directories");
        std::fs::write(dir.path("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        let _ = Command::new("chmod")
            .arg("644")
            .arg(dir.path("resolv.conf"))
            .status();

        let holder = Command::new("unshare")
            .args([
                "-n",
                "-m",
                "-p",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation",
                "private",
                "sleep",
                "3600",
            ])
            .stdin(Stdio::null())
            // (unshare complains on stderr when its child is SIGKILLed at the end.)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the world's namespace holder");
        let pid = wait_for_descendant(holder.id(), "sleep");
        let w = World {
            holder,
            pid,
            dir,
            home,
            run,
            uid,
            gid,
            bg: Vec::new(),
        };
        wait_until(Duration::from_secs(5), || {
            let ours = std::fs::read_link("/proc/self/ns/net").ok();
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            theirs.is_some() && theirs != ours
        });
        // `--propagation private` cut every peer link to the machine's mounts; making `/`
        // shared again only peers it with namespaces copied from this one (podman's), and
        // keeps podman from warning that "/" is not a shared mount.
        let setup = format!(
            "ip link set lo up && ip addr add {REMOTE}/32 dev lo && mount --make-rshared / && \
             mount --bind {r} /etc/resolv.conf && \
             echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
            r = shell_quote(&w.dir.path("resolv.conf").to_string_lossy())
        );
        w.ok(As::Runner, &setup, 10);
        w
    }

    /// A command running `prog` inside the world as `who` (the test user gets a clean
    /// environment with the world's HOME and XDG directories).
    fn cmd(&self, who: As, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-n", "-m", "-p"])
            .arg(format!("--wd={}", self.dir.0.display()));
        if who == As::User {
            let h = self.home.display();
            c.args([
                "setpriv",
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--",
                "env",
                "-i",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                &format!("HOME={h}"),
                &format!("USER={}", test_user_name()),
                &format!("LOGNAME={}", test_user_name()),
                &format!("XDG_CONFIG_HOME={h}/.config"),
                &format!("XDG_DATA_HOME={h}/.local/share"),
                &format!("XDG_RUNTIME_DIR={}", self.run.0.display()),
            ]);
        }
        c.arg(prog);
        c
    }

    /// Run a shell snippet in the world, time-boxed to `secs`.
    fn sh(&self, who: As, script: &str, secs: u32) -> Output {
        self.cmd(who, "timeout")
            .args(["-k", "5", &secs.to_string(), "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run sh in the world")
    }

    /// Same, asserting success; returns stdout.
    fn ok(&self, who: As, script: &str, secs: u32) -> String {
        let out = self.sh(who, script, secs);
        assert!(
            out.status.success(),
            "`{script}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a long-running process in the world (it dies with the world); output to `log`.
    fn spawn(&mut self, who: As, script: &str, log: &str) {
        let f = std::fs::File::create(self.dir.path(log)).unwrap();
        let child = self
            .cmd(who, "sh")
            .args(["-c", &format!("exec {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn in the world");
        self.bg.push(Bg(child));
    }

    /// Wait until something listens on `port` in the world.
    fn wait_listening(&self, port: u16, udp: bool) {
        let flag = if udp { "-uln" } else { "-tln" };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .sh(As::Runner, &format!("ss -H {flag} | grep -q ':{port} '"), 5)
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "nothing listens on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host-side servers: HTTP on every address of `lo`, DNS on 127.0.0.1.
    fn start_servers(&mut self) {
        let www = self.dir.path("host-www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("index.html"), HOST_PAGE).unwrap();
        self.spawn(
            As::Runner,
            &format!("busybox httpd -f -p {HOST_HTTP} -h {}", www.display()),
            "host-httpd.log",
        );
        self.spawn(
            As::Runner,
            &format!(
                "dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
                 --listen-address=127.0.0.1 --port=53 --user=root --pid-file= \
                 --address=/tapir.test/{DNS_ANSWER}"
            ),
            "dnsmasq.log",
        );
        self.wait_listening(HOST_HTTP, false);
        self.wait_listening(53, true);
    }

    /// Every process in the world's PID namespace except its init.
    fn procs(&self) -> Vec<Proc> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok();
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == self.pid || std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != ns {
                continue;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |k: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(k))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("")
                    .to_owned()
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            v.push(Proc {
                pid,
                uid: field("Uid:").parse().unwrap_or(u32::MAX),
                state: field("State:").chars().next().unwrap_or('?'),
                comm: field("Name:"),
                cmdline: cmdline.trim_end().to_owned(),
            });
        }
        v
    }

    /// Live processes of the binary under test in the world.
    fn stacks(&self) -> Vec<Proc> {
        let (bin, _) = bin_under_test();
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        // comm is at most 15 bytes.
        let comm: String = name.chars().take(15).collect();
        self.procs()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.comm == comm)
            .collect()
    }

    /// Wait for exactly one live instance of the binary under test; returns it.
    fn one_stack(&self) -> Proc {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = self.stacks();
            if s.len() == 1 {
                return s.pop().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "expected one network stack process in the world, found {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (≤ `secs`) until no instance of the binary under test is left running.
    fn wait_no_stack(&self, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.stacks();
            if s.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the network stack is still running after {secs} s: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait (≤ `secs`) until the test user runs nothing but podman's pause process
    /// (`catatonit -P`, which holds podman's user namespace between commands).
    fn wait_only_pause_left(&self, secs: u64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left: Vec<Proc> = self
                .procs()
                .into_iter()
                .filter(|p| p.uid != 0 && p.state != 'Z' && p.cmdline != "catatonit -P")
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: still running after {secs} s: {left:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fetch `url` from the world as root, retrying for up to `secs`; returns the body.
    fn fetch(&self, url: &str, secs: u64) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            // (busybox-static 1.35's `wget -T` crashes; `timeout` bounds it instead.)
            let out = self.sh(As::Runner, &format!("busybox wget -q -O - {url}"), 5);
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{url}: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Killing the PID namespace's init kills everything inside it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        self.bg.clear();
    }
}

/// Checks that a running network stack has the slirp4netns sandbox and seccomp filter on:
/// the process sees only /etc and /run, cannot gain privileges, has a seccomp filter, and
/// holds no capability but CAP_NET_BIND_SERVICE.
fn assert_isolated(p: &Proc, logs: &dyn Fn() -> String) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid)).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_owned()
    };
    let ctx = || format!("process {p:?}\n{status}\n{}", logs());
    assert_eq!(field("NoNewPrivs:"), "1", "no_new_privs not set: {}", ctx());
    assert_eq!(field("Seccomp:"), "2", "no seccomp filter: {}", ctx());
    for cap in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let v = u64::from_str_radix(&field(cap), 16).unwrap_or(u64::MAX);
        assert_eq!(
            v & !(1 << 10),
            0,
            "{cap} {v:#x}: more than CAP_NET_BIND_SERVICE: {}",
            ctx()
        );
    }
    let mut root: Vec<String> = std::fs::read_dir(format!("/proc/{}/root", p.pid))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("<{e}>")]);
    root.sort();
    assert!(
        root.iter().all(|e| e == "etc" || e == "run") && root.iter().any(|e| e == "etc"),
        "sandbox root must hold only etc and run, has {root:?}: {}",
        ctx()
    );
}

// ---------------------------------------------------------------------------------------------
// rootlesskit

/// The command rootlesskit runs in its namespaces: serves GUEST_PAGE on 8080, records what it
/// sees of the network into files in the shared directory `$1`, signals `ready`, and waits for
/// `done` (or 120 s).
const RK_CHILD: &str = r#"#!/bin/sh
D="$1"
exec >"$D/child.log" 2>&1
set -x
busybox httpd -f -p 8080 -h "$D/guest-www" &
srv=$!
cp /etc/resolv.conf "$D/child.resolv.conf"
ip -4 -o addr show dev tap0 >"$D/child.addr"
timeout 10 busybox wget -q -O "$D/child.gateway" "http://10.0.2.2:$PORT/index.html" 2>"$D/child.gateway.err"
echo $? >"$D/child.gateway.rc"
timeout 10 busybox wget -q -O "$D/child.remote" "http://$REMOTE:$PORT/index.html"
timeout 10 dig +short +time=2 +tries=2 @10.0.2.3 tapir.test >"$D/child.dig"
timeout 10 getent ahostsv4 tapir.test >"$D/child.getent"
: >"$D/ready"
n=0
while [ ! -e "$D/done" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done
kill $srv
wait
exit 0
"#;

/// One rootlesskit run as the test user, with the sandbox and seccomp on.
fn rootlesskit_case(port_driver: &str, disable_host_loopback: bool, published: u16) {
    need_clients!("rootlesskit");
    let (bin, is_tapir) = bin_under_test();
    let mut w = World::new("rootlesskit");
    w.start_servers();
    let d = w.dir.0.clone();
    std::fs::create_dir_all(d.join("guest-www")).unwrap();
    std::fs::write(d.join("guest-www/index.html"), GUEST_PAGE).unwrap();
    let child = d.join("child.sh");
    std::fs::write(
        &child,
        RK_CHILD
            .replace("$PORT", &HOST_HTTP.to_string())
            .replace("$REMOTE", REMOTE),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("755").arg(&child).status();

    let mut args = vec![
        "--debug".to_owned(),
        "--net=slirp4netns".into(),
        format!("--slirp4netns-binary={}", bin.display()),
        "--mtu=65520".into(),
        "--copy-up=/etc".into(),
    ];
    if disable_host_loopback {
        args.push("--disable-host-loopback".into());
    }
    args.extend([
        format!("--port-driver={port_driver}"),
        "-p".into(),
        format!("127.0.0.1:{published}:8080/tcp"),
        "--slirp4netns-sandbox=true".into(),
        "--slirp4netns-seccomp=true".into(),
        child.to_string_lossy().into_owned(),
        d.to_string_lossy().into_owned(),
    ]);
    let log_path = d.join("rootlesskit.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut rk = w
        .cmd(As::User, "timeout")
        .args(["-k", "5", "120", "rootlesskit"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn rootlesskit");
    let logs = || {
        format!(
            "--- rootlesskit {}\n{}--- child\n{}",
            args.join(" "),
            read(&log_path),
            read(&d.join("child.log"))
        )
    };

    // The child checks the network from inside, then says `ready`.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.join("ready").exists() {
        if let Ok(Some(st)) = rk.try_wait() {
            panic!(
                "rootlesskit exited before its child was ready ({st}):\n{}",
                logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "child not ready in 60 s:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The stack runs with the sandbox and seccomp, attached the way rootlesskit does it.
    let stack = w.one_stack();
    for flag in [
        "--enable-sandbox",
        "--enable-seccomp",
        "-r 3",
        "--mtu 65520",
    ] {
        assert!(
            stack.cmdline.contains(flag),
            "rootlesskit should pass {flag}: {}",
            stack.cmdline
        );
    }
    assert_eq!(
        stack.cmdline.contains("--api-socket"),
        port_driver == "slirp4netns",
        "{}",
        stack.cmdline
    );
    assert_eq!(stack.uid, w.uid, "the stack runs as the user: {stack:?}");
    if is_tapir {
        assert_isolated(&stack, &logs);
    }

    // What the child saw.
    let got = |f: &str| read(&d.join(f));
    assert!(
        got("child.addr").contains("10.0.2.100/24"),
        "child address: {}\n{}",
        got("child.addr"),
        logs()
    );
    assert_eq!(
        got("child.resolv.conf").lines().next(),
        Some("nameserver 10.0.2.3"),
        "{}",
        logs()
    );
    if disable_host_loopback {
        assert_ne!(got("child.gateway.rc").trim(), "0", "{}", logs());
        assert!(
            got("child.gateway.err").contains("unreachable"),
            "10.0.2.2 must be unreachable with --disable-host-loopback: {}\n{}",
            got("child.gateway.err"),
            logs()
        );
    } else {
        assert_eq!(
            got("child.gateway"),
            HOST_PAGE,
            "the child must reach the host's loopback through 10.0.2.2\n{}",
            logs()
        );
    }
    assert_eq!(
        got("child.remote"),
        HOST_PAGE,
        "the child must reach {REMOTE}\n{}",
        logs()
    );
    assert_eq!(
        got("child.dig").trim(),
        DNS_ANSWER,
        "DNS through 10.0.2.3\n{}",
        logs()
    );
    assert!(
        got("child.getent").starts_with(DNS_ANSWER),
        "the child's resolver (resolv.conf -> 10.0.2.3): {}\n{}",
        got("child.getent"),
        logs()
    );

    // The published port reaches the server in the child.
    let url = format!("http://127.0.0.1:{published}/index.html");
    match w.fetch(&url, 10) {
        Ok(body) => assert_eq!(body, GUEST_PAGE, "{}", logs()),
        Err(e) => panic!("published port: {e}\n{}", logs()),
    }

    // Let the child finish: rootlesskit must exit promptly with its status and leave nothing
    // running (it kills the stack with SIGKILL and then waits for its output pipe to close).
    std::fs::write(d.join("done"), "").unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Ok(Some(st)) = rk.try_wait() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "rootlesskit did not exit within 20 s of its child (a process holding the stack's \
             stdout?): {:?}\n{}",
            w.procs(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.code(), Some(0), "rootlesskit: {st}\n{}", logs());
    let left: Vec<Proc> = w
        .procs()
        .into_iter()
        .filter(|p| p.uid != 0 && p.state != 'Z')
        .collect();
    assert!(
        left.is_empty(),
        "left running after rootlesskit exited: {left:?}\n{}",
        logs()
    );
    eprintln!(
        "rootlesskit --port-driver={port_driver}{}: ok in {:?}",
        if disable_host_loopback {
            " --disable-host-loopback"
        } else {
            ""
        },
        t0.elapsed()
    );
}

#[test]
fn rootlesskit_slirp4netns_port_driver_sandboxed() {
    rootlesskit_case("slirp4netns", true, 18091);
}

#[test]
fn rootlesskit_builtin_port_driver_sandboxed() {
    rootlesskit_case("builtin", true, 18092);
}

#[test]
fn rootlesskit_child_reaches_host_loopback_when_allowed() {
    rootlesskit_case("slirp4netns", false, 18093);
}

// ---------------------------------------------------------------------------------------------
// podman

/// Image name; built locally, never pulled.
const IMAGE: &str = "localhost/tapir-busybox:latest";

/// Rootless podman for the test user, configured in the world's HOME.
struct Podman<'a> {
    w: &'a World,
}

impl<'a> Podman<'a> {
    /// Write the user's containers.conf, storage.conf and registries.conf, and import the image.
    fn new(w: &'a World, network_cmd_path: &Path) -> Podman<'a> {
        let cfg = w.home.join(".config/containers");
        std::fs::write(
            cfg.join("containers.conf"),
            format!(
                "[containers]\nlog_driver = \"k8s-file\"\n\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 runtime = \"runc\"\nnetwork_cmd_path = \"{}\"\n",
                network_cmd_path.display()
            ),
        )
        .unwrap();
        std::fs::write(
            cfg.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}/containers\"\n\
                 graphroot = \"{}/.local/share/containers/storage\"\n",
                w.run.0.display(),
                w.home.display()
            ),
        )
        .unwrap();
        // No registry at all: nothing can be pulled by accident.
        std::fs::write(
            cfg.join("registries.conf"),
            "unqualified-search-registries = []\nshort-name-mode = \"enforcing\"\n",
        )
        .unwrap();
        let _ = Command::new("chown")
            .args(["-R", &format!("{}:{}", w.uid, w.gid)])
            .arg(&w.home)
            .status();

        // A busybox-static root file system with a web page.
        let rootfs = w.dir.path("rootfs");
        let busybox = which("busybox").unwrap();
        let script = format!(
            "set -e; r={r}; mkdir -p $r/bin $r/etc $r/www $r/tmp $r/proc $r/sys $r/dev; \
             cp {b} $r/bin/busybox; \
             for a in sh cat wget nslookup httpd ip sleep true echo grep; do \
               ln -sf busybox $r/bin/$a; done; \
             echo 'root:x:0:0:root:/:/bin/sh' > $r/etc/passwd; echo 'root:x:0:' > $r/etc/group; \
             printf '{GUEST_PAGE}' > $r/www/index.html; chmod 1777 $r/tmp; \
             tar --numeric-owner --owner=0 --group=0 -C $r -cf {t} . && chmod 644 {t}",
            r = shell_quote(&rootfs.to_string_lossy()),
            b = shell_quote(&busybox.to_string_lossy()),
            t = shell_quote(&w.dir.path("image.tar").to_string_lossy()),
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "build the image tarball: {out:?}");
        let p = Podman { w };
        p.ok(&format!(
            "import --quiet {} {IMAGE}",
            w.dir.path("image.tar").display()
        ));
        p
    }

    /// `podman ARGS` as the test user (time-boxed).
    fn run(&self, args: &str) -> Output {
        self.w.sh(As::User, &format!("podman {args}"), 120)
    }

    /// Same, asserting success; returns stdout.
    fn ok(&self, args: &str) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args} failed ({}):\n--- stdout\n{}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Diagnostics for a failure: the container's logs and every process in the world.
    fn logs(&self, ctr: &str) -> String {
        let out = self.run(&format!("logs {ctr}"));
        format!(
            "--- podman logs {ctr}\n{}{}\n--- processes\n{:#?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.w.procs()
        )
    }
}

fn podman_world(tag: &str) -> World {
    let mut w = World::new(tag);
    w.start_servers();
    w
}

#[test]
fn podman_publishes_with_slirp4netns_port_handler_and_reaches_the_host() {
    need_clients!("podman", "runc", "conmon", "catatonit");
    let (bin, is_tapir) = bin_under_test();
    let w = podman_world("podman-publish");
    let pm = Podman::new(&w, &bin);
    let t0 = Instant::now();
    pm.ok(&format!(
        "run -d --name web --pull=never \
         --network slirp4netns:port_handler=slirp4netns,allow_host_loopback=true \
         -p 127.0.0.1:18090:80 -p 18094:80 {IMAGE} httpd -f -vv -p 80 -h /www"
    ));
    let stack = w.one_stack();
    for flag in [
        "--api-socket",
        "--enable-sandbox",
        "--enable-seccomp",
        "--netns-type=path",
    ] {
        assert!(
            stack.cmdline.contains(flag),
            "podman should pass {flag}: {}",
            stack.cmdline
        );
    }
    assert!(
        !stack.cmdline.contains("--disable-host-loopback"),
        "allow_host_loopback=true: {}",
        stack.cmdline
    );
    if is_tapir {
        assert_isolated(&stack, &|| pm.logs("web"));
    }

    // The published port (podman asked the stack through its API socket).
    match w.fetch("http://127.0.0.1:18090/index.html", 10) {
        Ok(body) => assert_eq!(body, GUEST_PAGE, "{}", pm.logs("web")),
        Err(e) => panic!("published port: {e}\n{}", pm.logs("web")),
    }
    // A port published on every address, reached from a non-loopback address: the container
    // sees the client's own address (a loopback client appears as 10.0.2.2).
    match w.fetch(&format!("http://{REMOTE}:18094/index.html"), 10) {
        Ok(body) => assert_eq!(body, GUEST_PAGE, "{}", pm.logs("web")),
        Err(e) => panic!("published port on 0.0.0.0: {e}\n{}", pm.logs("web")),
    }
    let httpd_log = pm.logs("web");
    assert!(
        httpd_log.contains(&format!(":{REMOTE}]:")) && httpd_log.contains(":10.0.2.2]:"),
        "client addresses as the container sees them: {httpd_log}"
    );
    // The container reaches the host's loopback through 10.0.2.2, and DNS through 10.0.2.3.
    let body = pm.ok(&format!(
        "exec web wget -q -O - http://10.0.2.2:{HOST_HTTP}/index.html"
    ));
    assert_eq!(body, HOST_PAGE);
    let resolv = pm.ok("exec web cat /etc/resolv.conf");
    assert_eq!(
        resolv.lines().next(),
        Some("nameserver 10.0.2.3"),
        "podman writes the stack's DNS address first: {resolv}"
    );
    let ns = pm.ok("exec web nslookup -type=a tapir.test");
    assert!(ns.contains(DNS_ANSWER), "{ns}");

    // Removing the container ends the stack (podman's exit fd).
    pm.ok("rm -f -t 0 web");
    w.wait_no_stack(10, "after podman rm");
    w.wait_only_pause_left(10, "after podman rm");
    eprintln!("podman publish/host/dns: ok in {:?}", t0.elapsed());
}

#[test]
fn podman_default_slirp4netns_options_start_and_stop_cleanly() {
    need_clients!("podman", "runc", "conmon", "catatonit");
    let (bin, is_tapir) = bin_under_test();
    let w = podman_world("podman-defaults");
    let pm = Podman::new(&w, &bin);
    let t0 = Instant::now();

    // podman info runs `--version` on the configured binary.
    let info = pm.ok(
        "info --format '{{.Host.Slirp4NetNS.Executable}}|{{.Host.Slirp4NetNS.Version}}|\
         {{.Host.OCIRuntime.Name}}|{{.Store.GraphDriverName}}'",
    );
    let fields: Vec<&str> = info.trim().split('|').collect();
    assert_eq!(fields.first(), Some(&&*bin.to_string_lossy()), "{info}");
    if is_tapir {
        assert!(
            fields.get(1).is_some_and(
                |v| v.contains(&format!("tapir version {}", env!("CARGO_PKG_VERSION")))
            ),
            "podman info must show tapir's version: {info}"
        );
    }
    assert!(info.contains("|runc|vfs"), "{info}");

    // Defaults: sandbox, seccomp, IPv6, no host loopback, exit fd.
    pm.ok(&format!(
        "run -d --name idle --pull=never --network slirp4netns {IMAGE} \
         sh -c 'trap \"exit 0\" TERM; while :; do sleep 0.2; done'"
    ));
    let stack = w.one_stack();
    for flag in [
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        "--enable-ipv6",
        "--mtu=65520",
        "-c",
        "-e ",
        "--netns-type=path",
    ] {
        assert!(
            stack.cmdline.contains(flag),
            "podman's defaults include {flag}: {}",
            stack.cmdline
        );
    }
    if is_tapir {
        assert_isolated(&stack, &|| pm.logs("idle"));
    }
    let v6 = pm.ok("exec idle ip -6 addr show dev tap0");
    assert!(
        v6.contains("inet6 fd00::"),
        "IPv6 (SLAAC in fd00::/64): {v6}"
    );
    let remote = pm.ok(&format!(
        "exec idle wget -q -O - http://{REMOTE}:{HOST_HTTP}/index.html"
    ));
    assert_eq!(remote, HOST_PAGE);
    let lo = pm.run(&format!(
        "exec idle wget -q -O - http://10.0.2.2:{HOST_HTTP}/index.html"
    ));
    assert!(
        !lo.status.success(),
        "host loopback must be closed by default: {lo:?}"
    );
    let ns = pm.ok("exec idle nslookup -type=a tapir.test");
    assert!(ns.contains(DNS_ANSWER), "{ns}");

    // Stop: conmon closes the exit fd's write end and the stack exits.
    pm.ok("stop -t 10 idle");
    w.wait_no_stack(10, "after podman stop");
    w.wait_only_pause_left(10, "after podman stop");
    pm.ok("rm idle");

    // A one-shot container starts and stops the stack with it.
    let out = pm.ok(&format!(
        "run --rm --pull=never --network slirp4netns {IMAGE} sh -c 'ip -4 -o addr show dev tap0'"
    ));
    assert!(out.contains("10.0.2.100/24"), "{out}");
    w.wait_no_stack(10, "after podman run --rm");
    w.wait_only_pause_left(10, "after podman run --rm");
    eprintln!("podman defaults: ok in {:?}", t0.elapsed());
}

#[test]
fn podman_bridge_network_runs_the_rootless_netns_through_the_stack() {
    // podman 4 attaches containers on a user-defined network to a shared "rootless network
    // namespace", which it connects with the same binary (`-c -r 3 --netns-type=path`, no exit
    // fd) and stops with SIGTERM when the last container leaves. Ports go through rootlessport.
    need_clients!("podman", "runc", "conmon", "catatonit");
    let (bin, is_tapir) = bin_under_test();
    let w = podman_world("podman-bridge");
    let pm = Podman::new(&w, &bin);
    let t0 = Instant::now();
    pm.ok("network create tapirnet");
    pm.ok(&format!(
        "run -d --name web --pull=never --network tapirnet -p 127.0.0.1:18095:80 {IMAGE} \
         httpd -f -p 80 -h /www"
    ));
    let stack = w.one_stack();
    eprintln!("rootless-netns stack: {}", stack.cmdline);
    assert!(
        stack.cmdline.contains("--netns-type=path") && stack.cmdline.contains("-r 3"),
        "{}",
        stack.cmdline
    );
    for flag in ["--enable-sandbox", "--enable-seccomp"] {
        assert!(
            stack.cmdline.contains(flag),
            "podman should pass {flag}: {}",
            stack.cmdline
        );
    }
    if is_tapir {
        assert_isolated(&stack, &|| pm.logs("web"));
    }
    match w.fetch("http://127.0.0.1:18095/index.html", 10) {
        Ok(body) => assert_eq!(body, GUEST_PAGE, "{}", pm.logs("web")),
        Err(e) => panic!(
            "published port on a bridge network: {e}\n{}",
            pm.logs("web")
        ),
    }
    let remote = pm.ok(&format!(
        "exec web wget -q -O - http://{REMOTE}:{HOST_HTTP}/index.html"
    ));
    assert_eq!(remote, HOST_PAGE);
    pm.ok("rm -f -t 0 web");
    w.wait_no_stack(
        10,
        "after the last container left the rootless network namespace",
    );
    w.wait_only_pause_left(10, "after podman rm");
    pm.ok("network rm -f tapirnet");
    eprintln!("podman bridge network: ok in {:?}", t0.elapsed());
}
