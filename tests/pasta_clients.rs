//! pasta's clients: podman 5 and rootlesskit 2.0 run a `pasta`, unmodified, as a plain user.
//!
//! Each test runs once per subject: the real pasta of the rootfs (`/usr/bin/pasta`, to check
//! the tests themselves) and tapir as pasta (`/usr/local/lib/tapir/pasta`, a link to the tapir
//! under test). `TAPIR_PASTA_SUBJECTS=pasta,tapir` (the default) picks them; every subject
//! runs even when an earlier one failed, and the test fails naming the subjects that did.
//!
//! The clients come from a Debian 13 root filesystem built by `tests/tools/podman5-rootfs.sh`
//! (podman 5.4, passt 2025, rootlesskit 2.0.2; `.ci/run` builds it) at `TAPIR_PODMAN5_ROOTFS`,
//! default [`DEFAULT_ROOTFS`]. Without it (or without root, or user namespaces) each test
//! prints what is missing and skips; under `CI=true` it fails instead.
//!
//! Each test builds a private world as root: new network, mount and PID namespaces with `lo`
//! and the template interface pasta copies, a veth `v0` (192.0.2.10/24 and 2001:db8::10/64,
//! default routes via 192.0.2.1 and 2001:db8::1) whose peer leads nowhere; the rootfs's
//! `/etc/resolv.conf` bound to `nameserver 127.0.0.1`, where `tests/tools/dnsserve.py`
//! answers; the world's directory of helpers bound on the rootfs's `/usr/local/lib/tapir`. The
//! clients run in the rootfs (entered with pivot_root) as its user `tester`, with a HOME and
//! XDG_RUNTIME_DIR of the test's own. Containers get `--dns=none` or `--dns 169.254.1.1`, the
//! image is built locally with `podman import` (busybox and perl from the rootfs), nothing is
//! pulled, and no traffic can leave the machine. Killing the PID namespace's init at the end
//! kills whatever the clients left behind (podman's pause process, for example).

mod common;
use common::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the rootfs is looked for unless `TAPIR_PODMAN5_ROOTFS` says otherwise.
const DEFAULT_ROOTFS: &str = "/var/tmp/tapir-podman5";
/// The host's address on the template interface.
const HOST_ADDR: &str = "192.0.2.10";
/// What the loopback resolver answers for every name.
const DNS_ANSWER: &str = "203.0.113.53";
/// Port of the TCP server on the host's address (reached through 169.254.1.2).
const HOST_PORT: u16 = 18090;
/// The PATH of the clients inside the rootfs.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------------------------
// Subjects and prerequisites

/// The `pasta` the clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    /// The rootfs's own pasta.
    Pasta,
    /// tapir, through a link named `pasta`.
    Tapir,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Pasta => "pasta",
            Subject::Tapir => "tapir",
        }
    }

    /// The binary's path inside the rootfs.
    fn path(self) -> &'static str {
        match self {
            Subject::Pasta => "/usr/bin/pasta",
            Subject::Tapir => "/usr/local/lib/tapir/pasta",
        }
    }

    /// Environment that makes podman pick this subject: the real pasta is found on PATH
    /// (containers.conf lists only Debian's helper directories); tapir's directory comes first.
    fn podman_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Subject::Pasta => vec![],
            Subject::Tapir => vec![("CONTAINERS_HELPER_BINARY_DIR", "/usr/local/lib/tapir")],
        }
    }
}

/// The subjects `TAPIR_PASTA_SUBJECTS` names (default: both).
fn subjects() -> Vec<Subject> {
    let v = std::env::var("TAPIR_PASTA_SUBJECTS").unwrap_or_default();
    if v.trim().is_empty() {
        return vec![Subject::Pasta, Subject::Tapir];
    }
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "pasta" => Subject::Pasta,
            "tapir" => Subject::Tapir,
            _ => panic!("TAPIR_PASTA_SUBJECTS: unknown subject {s:?} (pasta, tapir)"),
        })
        .collect()
}

fn rootfs() -> PathBuf {
    std::env::var_os("TAPIR_PODMAN5_ROOTFS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOTFS))
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools")
}

/// uid and gid of `name` in the rootfs's /etc/passwd.
fn rootfs_user(root: &Path, name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Why these tests cannot run here, if they cannot (exactly what is missing).
fn unavailable() -> Option<String> {
    if !is_root() {
        return Some(
            "needs root: the pasta client tests create private network/mount/PID namespaces and \
             enter the podman 5 rootfs with pivot_root"
                .into(),
        );
    }
    if let Some(why) = namespace_unavailable() {
        return Some(why);
    }
    if let Some(why) = missing_tool(&["python3", "busybox", "ss", "timeout", "sha256sum"]) {
        return Some(why);
    }
    let root = rootfs();
    let build = format!(
        "build it with `tests/tools/podman5-rootfs.sh build {}` as root (about 30 s, Debian \
         packages from deb.debian.org), or set TAPIR_PODMAN5_ROOTFS",
        root.display()
    );
    for f in [
        "usr/bin/podman",
        "usr/bin/pasta",
        "usr/bin/rootlesskit",
        "usr/bin/busybox",
        "usr/bin/perl",
        "usr/bin/setpriv",
    ] {
        if !root.join(f).exists() {
            return Some(format!(
                "no podman 5 rootfs at {} (/{f} missing): {build}",
                root.display()
            ));
        }
    }
    if rootfs_user(&root, "tester").is_none() {
        return Some(format!("{} has no user tester: {build}", root.display()));
    }
    // Rootless podman and rootlesskit need unprivileged user namespaces.
    let ok = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "-U",
            "-r",
            "true",
        ])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Some("unprivileged user namespaces are not available".into());
    }
    None
}

macro_rules! need_rootfs {
    () => {
        let why = unavailable();
        require!(why.is_none(), "{}", why.unwrap_or_default());
    };
}

/// Run `f` for every selected subject; fail afterwards naming the subjects that failed.
fn for_each_subject(mut f: impl FnMut(Subject)) {
    let mut failed = Vec::new();
    for s in subjects() {
        let t0 = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| f(s))) {
            Ok(()) => eprintln!("subject {}: ok ({:?})", s.name(), t0.elapsed()),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                eprintln!("subject {}: FAILED ({:?})", s.name(), t0.elapsed());
                failed.push(format!(
                    "{}: {}",
                    s.name(),
                    msg.lines().next().unwrap_or("")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "failed with {}", failed.join("; "));
}

// ---------------------------------------------------------------------------------------------
// The private world

/// A directory removed on drop.
struct RmDir(PathBuf);

impl Drop for RmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Private network, mount and PID namespaces with the template interface, a loopback resolver,
/// the rootfs's resolv.conf and helper directory bound, and a HOME for `tester`.
struct World {
    /// `unshare --fork --kill-child`.
    holder: Child,
    /// Host PID of the PID namespace's init (`sleep`).
    pid: u32,
    /// The world's directory: short, since podman puts sockets under XDG_RUNTIME_DIR.
    dir: RmDir,
    root: PathBuf,
    uid: u32,
    gid: u32,
    /// SHA-256 of `/www/payload` in the image.
    payload_sha: String,
    bg: Vec<Bg>,
}

impl World {
    fn new() -> World {
        let root = rootfs();
        let (uid, gid) = rootfs_user(&root, "tester").expect("tester in the rootfs");
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = RmDir(PathBuf::from(format!(
            "/tmp/tp5-{}-{n}",
            std::process::id()
        )));
        let _ = std::fs::remove_dir_all(&dir.0);
        let d = |p: &str| dir.0.join(p);
        for p in ["home/.config/containers", "run", "helpers", "img/www"] {
            std::fs::create_dir_all(d(p)).unwrap();
        }
        std::fs::write(
            d("home/.config/containers/containers.conf"),
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             helper_binaries_dir = [\"/usr/libexec/podman\", \"/usr/lib/podman\"]\n\
             [network]\ndefault_rootless_network_cmd = \"pasta\"\n",
        )
        .unwrap();
        std::fs::write(
            d("home/.config/containers/storage.conf"),
            "[storage]\ndriver = \"vfs\"\n",
        )
        .unwrap();
        // No registry at all: nothing can be pulled.
        std::fs::write(
            d("home/.config/containers/registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        std::fs::write(d("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        // tapir as pasta: the binary and a link named pasta (bound on /usr/local/lib/tapir).
        std::fs::copy(tapir_bin(), d("helpers/tapir")).unwrap();
        std::os::unix::fs::symlink("tapir", d("helpers/pasta")).unwrap();
        random_file(&d("img/www/payload"), 256 * 1024);
        let payload_sha = sha256(&d("img/www/payload"));
        // The image: busybox, and perl (UDP echo; busybox nc has no UDP) with its libraries.
        let r = shell_quote(&root.to_string_lossy());
        let img = shell_quote(&d("img").to_string_lossy());
        let script = format!(
            "set -e; cd {img}; mkdir -p bin etc proc sys dev tmp usr/bin lib64 \
             usr/lib/x86_64-linux-gnu; ln -s usr/lib lib; cp {r}/usr/bin/busybox bin/; \
             for a in sh ip cat echo nc httpd nslookup sleep; do ln -s busybox bin/$a; done; \
             cp {r}/usr/bin/perl usr/bin/; cp -L {r}/lib64/ld-linux-x86-64.so.2 lib64/; \
             for l in libc.so.6 libm.so.6 libcrypt.so.1; do \
               cp -L {r}/usr/lib/x86_64-linux-gnu/$l usr/lib/x86_64-linux-gnu/; done; \
             cp -a {r}/usr/lib/x86_64-linux-gnu/perl-base usr/lib/x86_64-linux-gnu/; \
             mkdir -p {r}/usr/local/lib/tapir; \
             chmod -R a+rX {dir}; chown -R {uid}:{gid} {dir}/home {dir}/run; chmod 700 {dir}/run",
            dir = shell_quote(&dir.0.to_string_lossy()),
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "world setup: {out:?}");

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
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the world's namespace holder");
        let pid = wait_for_descendant(holder.id(), "sleep");
        let mut w = World {
            holder,
            pid,
            dir,
            root,
            uid,
            gid,
            payload_sha,
            bg: Vec::new(),
        };
        wait_until(Duration::from_secs(5), || {
            let ours = std::fs::read_link("/proc/self/ns/net").ok();
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            theirs.is_some() && theirs != ours
        });
        let setup = format!(
            "set -e; ip link set lo up; ip link add v0 type veth peer name v1; \
             ip addr add {HOST_ADDR}/24 dev v0; ip link set v0 up; ip link set v1 up; \
             ip route add default via 192.0.2.1; \
             ip -6 addr add 2001:db8::10/64 dev v0 nodad; \
             ip -6 route add default via 2001:db8::1 dev v0; \
             mount --bind {dir}/resolv.conf {r}/etc/resolv.conf; \
             mount --bind {dir}/helpers {r}/usr/local/lib/tapir",
            dir = shell_quote(&w.dir.0.to_string_lossy()),
        );
        w.host_ok(&setup, 10);
        let tools = tools_dir();
        w.spawn_host(
            &format!(
                "python3 {} 127.0.0.1 53 {DNS_ANSWER}",
                shell_quote(&tools.join("dnsserve.py").to_string_lossy())
            ),
            "dnsserve.log",
        );
        w.spawn_host(
            &format!(
                "python3 {} greet {HOST_ADDR} {HOST_PORT}",
                shell_quote(&tools.join("tcpserve.py").to_string_lossy())
            ),
            "tcpserve.log",
        );
        w.wait_listening("127.0.0.1:53", true);
        w.wait_listening(&format!("{HOST_ADDR}:{HOST_PORT}"), false);
        w
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.0.join(p)
    }

    /// A command that runs as root in the world, with the machine's tools.
    fn host_cmd(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid.to_string())
            .args(["-n", "-m", "-p"])
            .arg(format!("--wd={}", self.dir.0.display()));
        c
    }

    fn host(&self, script: &str, secs: u32) -> Output {
        self.host_cmd()
            .args(["timeout", "-k", "5", &secs.to_string(), "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run sh in the world")
    }

    fn host_ok(&self, script: &str, secs: u32) -> String {
        checked(script, self.host(script, secs))
    }

    /// Start a long-running process as root in the world; output to `log` in its directory.
    fn spawn_host(&mut self, script: &str, log: &str) {
        let f = std::fs::File::create(self.path(log)).unwrap();
        let child = self
            .host_cmd()
            .args(["sh", "-c", &format!("exec {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn in the world");
        self.bg.push(Bg(child));
    }

    /// A command that runs `sh -c script` (time-boxed) as `tester` inside the rootfs, with the
    /// world's HOME and XDG directories and `env`.
    fn user_cmd(&self, script: &str, secs: u32, env: &[(&str, &str)]) -> Command {
        let mut c = self.host_cmd();
        let h = self.path("home");
        c.arg(tools_dir().join("podman5-rootfs.sh"))
            .arg("enter")
            .arg(&self.root)
            .args([
                "setpriv",
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--",
                "env",
                "-i",
                &format!("PATH={PATH}"),
                &format!("HOME={}", h.display()),
                "USER=tester",
                "LOGNAME=tester",
                &format!("XDG_CONFIG_HOME={}/.config", h.display()),
                &format!("XDG_DATA_HOME={}/.local/share", h.display()),
                &format!("XDG_RUNTIME_DIR={}", self.path("run").display()),
                "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
            ])
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(["timeout", "-k", "5", &secs.to_string(), "sh", "-c", script])
            .stdin(Stdio::null());
        c
    }

    fn user(&self, script: &str, secs: u32, env: &[(&str, &str)]) -> Output {
        self.user_cmd(script, secs, env)
            .output()
            .expect("run sh in the rootfs")
    }

    fn user_ok(&self, script: &str, secs: u32, env: &[(&str, &str)]) -> String {
        checked(script, self.user(script, secs, env))
    }

    /// Wait until something listens on `addr_port` (as `ss` prints it) in the world.
    fn wait_listening(&self, addr_port: &str, udp: bool) {
        let flag = if udp { "-uln" } else { "-tln" };
        let script = format!("ss -H {flag} | grep -q ' {addr_port} '");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.host(&script, 5).status.success() {
            assert!(
                Instant::now() < deadline,
                "nothing listens on {addr_port} in the world"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Import the test image as `localhost/bb`.
    fn import_image(&self) {
        self.user_ok(
            &format!(
                "tar -C {} -c . | podman import -q - localhost/bb",
                shell_quote(&self.path("img").to_string_lossy())
            ),
            60,
            &[],
        );
    }

    /// Live processes (not zombies) whose command line contains `needle` and that are inside
    /// this world (its network or PID namespace).
    fn procs_with(&self, needle: &str) -> Vec<u32> {
        let net = std::fs::read_link(format!("/proc/{}/ns/net", self.pid)).ok();
        let pidns = std::fs::read_link(format!("/proc/{}/ns/pid", self.pid)).ok();
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if !cmdline.contains(needle) || proc_state(pid).is_none_or(|s| s == 'Z') {
                continue;
            }
            let inside = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == net
                || std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == pidns;
            if inside {
                v.push(pid);
            }
        }
        v
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Killing the PID namespace's init kills everything inside it (and in the PID
        // namespaces below it, like pasta's own).
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        self.bg.clear();
    }
}

/// stdout of a successful run; panics with both outputs otherwise.
fn checked(script: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The state letter of /proc/PID/stat (None if the process is gone).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Wait (≤ `secs`) until every pid is gone or a zombie.
fn wait_exited(pids: &[u32], secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let alive: Vec<(u32, char)> = pids
            .iter()
            .filter_map(|&p| proc_state(p).filter(|&s| s != 'Z').map(|s| (p, s)))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running after {secs} s (pid, state): {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Retry `script` as root in the world for up to `secs` until it succeeds; its stdout.
fn retry_host(w: &World, script: &str, secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = w.host(script, 5);
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "`{script}`: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A UDP request from the world (root, the machine's python3): send `msg` to ADDR:PORT up to
/// 5 times, print the first answer.
fn udp_ask(addr: &str, port: u16, msg: &str) -> String {
    format!(
        "python3 -c 'import socket,sys\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1)\n\
         for i in range(5):\n  s.sendto(sys.argv[1].encode(),(\"{addr}\",{port}))\n  \
         try:\n    print(s.recv(65535).decode()); sys.exit(0)\n  except socket.timeout: pass\n\
         sys.exit(1)' {msg}"
    )
}

// ---------------------------------------------------------------------------------------------
// podman 5

/// `podman info` names the subject; `podman run --network pasta` gets the host's addresses,
/// routes and MTU on `v0`; DNS through 169.254.1.1 reaches the loopback resolver; the
/// container reaches a server on the host's address through 169.254.1.2.
#[test]
fn podman_pasta_network() {
    need_rootfs!();
    let w = World::new();
    w.import_image();
    for_each_subject(|s| {
        let env = s.podman_env();
        let info = w.user_ok(
            "podman info --format '{{.Host.Pasta.Executable}}|{{.Host.Pasta.Version}}'",
            60,
            &env,
        );
        let (exe, version) = info.trim().split_once('|').unwrap_or(("", ""));
        assert_eq!(exe, s.path(), "podman picked another pasta: {info}");
        match s {
            // pasta 2025_05_03 loses its --version output when stdout is a pipe (it _exit()s
            // without flushing), so podman sees an empty version.
            Subject::Pasta => assert!(
                version.is_empty() || version.contains("pasta"),
                "pasta's version: {version:?}"
            ),
            Subject::Tapir => assert!(
                version.contains("tapir"),
                "podman info's pasta version must name tapir: {version:?}"
            ),
        }

        let run = |dns: &str, script: &str| {
            w.user_ok(
                &format!(
                    "podman run --rm --pull=never --network pasta {dns} localhost/bb sh -c {}",
                    shell_quote(script)
                ),
                60,
                &env,
            )
        };
        let out = run(
            "--dns=none",
            "ip -o link show v0; ip -o addr show; echo ==; ip route; echo ==; ip -6 route",
        );
        let ctx = || format!("inside the container:\n{out}");
        let link = out.lines().next().unwrap_or("");
        assert!(link.contains(": v0:"), "no interface v0: {}", ctx());
        assert!(link.contains("mtu 65520"), "MTU is not 65520: {}", ctx());
        assert!(
            out.lines()
                .any(|l| l.contains(" v0 ") && l.contains("inet 192.0.2.10/24")),
            "v0 lacks 192.0.2.10/24: {}",
            ctx()
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("default via 192.0.2.1 dev v0")),
            "no default route via 192.0.2.1: {}",
            ctx()
        );
        assert!(
            out.lines()
                .any(|l| l.contains(" v0 ") && l.contains("inet6 2001:db8::10/64")),
            "v0 lacks 2001:db8::10/64: {}",
            ctx()
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("default via 2001:db8::1 dev v0")),
            "no IPv6 default route via 2001:db8::1: {}",
            ctx()
        );

        let out = run(
            "--dns 169.254.1.1",
            "cat /etc/resolv.conf; nslookup pasta.test 169.254.1.1",
        );
        assert!(
            out.contains("nameserver 169.254.1.1"),
            "resolv.conf in the container: {out}"
        );
        assert!(
            out.contains(&format!("Address: {DNS_ANSWER}")),
            "no answer from the loopback resolver through 169.254.1.1: {out}"
        );

        let out = run(
            "--dns=none",
            &format!("nc 169.254.1.2 {HOST_PORT} </dev/null"),
        );
        assert_eq!(
            out.trim(),
            "ok",
            "the server on {HOST_ADDR}:{HOST_PORT} through 169.254.1.2"
        );
    });
}

/// `-p` publishes: TCP from loopback and from the host's address (a 256 KiB payload through
/// busybox httpd, checked by SHA-256), UDP (an echo); `podman rm -f` leaves nothing running
/// and frees the ports.
#[test]
fn podman_pasta_publish() {
    need_rootfs!();
    let w = World::new();
    w.import_image();
    for_each_subject(|s| {
        let env = s.podman_env();
        let echo = "use Socket; socket(S, PF_INET, SOCK_DGRAM, 0) or die; \
                    bind(S, sockaddr_in(53, INADDR_ANY)) or die; \
                    while (1) { $p = recv(S, $b, 65535, 0); send(S, \"echo:$b\", 0, $p) }";
        let inner = format!("httpd -p 80 -h /www; exec perl -e {}", shell_quote(echo));
        w.user_ok(
            &format!(
                "podman run -d --name web --pull=never --network pasta --dns=none \
                 -p 127.0.0.1:18080:80 -p 18081:80 -p 18082:53/udp localhost/bb sh -c {}",
                shell_quote(&inner)
            ),
            60,
            &env,
        );
        let netns = w
            .user_ok(
                "podman inspect --format '{{.NetworkSettings.SandboxKey}}' web",
                30,
                &env,
            )
            .trim()
            .to_owned();
        assert!(!netns.is_empty(), "no netns path for the container");
        let helpers = w.procs_with(&netns);
        assert!(
            !helpers.is_empty(),
            "no {} process with --netns {netns} is running",
            s.name()
        );

        for url in [
            "http://127.0.0.1:18080/payload",
            &format!("http://{HOST_ADDR}:18081/payload"),
        ] {
            let sum = retry_host(&w, &format!("busybox wget -q -O - {url} | sha256sum"), 5)
                .unwrap_or_else(|e| panic!("TCP publish: {e}"));
            assert_eq!(
                sum.split_whitespace().next().unwrap_or(""),
                w.payload_sha,
                "{url}: wrong payload"
            );
        }
        for addr in ["127.0.0.1", HOST_ADDR] {
            let msg = format!("ping-{}-{addr}", s.name());
            let out = retry_host(&w, &udp_ask(addr, 18082, &msg), 5)
                .unwrap_or_else(|e| panic!("UDP publish to {addr}:18082: {e}"));
            assert_eq!(out.trim(), format!("echo:{msg}"), "UDP echo via {addr}");
        }

        w.user_ok("podman rm -f -t 0 web", 60, &env);
        wait_exited(&helpers, 2, &format!("{} after podman rm -f", s.name()));
        let left = w.host_ok("ss -H -tuln | grep -E ':1808[012] ' || true", 5);
        assert!(
            left.trim().is_empty(),
            "published ports still bound after podman rm -f:\n{left}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// rootlesskit 2.0

/// One `rootlesskit --net=pasta` run: the child checks its network, then listens on `ports`
/// (each answering `child-PORT`) until the test is done with it.
struct Rk {
    child: Child,
    log: PathBuf,
    ready: PathBuf,
    done: PathBuf,
}

impl Rk {
    fn start(w: &World, s: Subject, port_driver: &str, ports: &[u16], tag: &str) -> Rk {
        let state = w.path(&format!("run/rk-{tag}"));
        let ready = w.path(&format!("run/rk-{tag}.ready"));
        let done = w.path(&format!("run/rk-{tag}.done"));
        let log = w.path(&format!("rk-{tag}.log"));
        let listen: String = ports
            .iter()
            .map(|p| format!("echo child-{p} | busybox nc -l -p {p} & "))
            .collect();
        // rootlesskit 2.0 does not wait for pasta: wait for the carrier first.
        let child = format!(
            "i=0; while ip link show tap0 | grep -q NO-CARRIER && [ $i -lt 200 ]; do \
               sleep 0.05; i=$((i+1)); done; \
             ip -o link show tap0; ip -o -4 addr show; echo ==; ip route; echo ==; \
             cat /etc/resolv.conf; echo ==; busybox nslookup pasta.test 10.0.2.3; echo ==; \
             busybox nc {HOST_ADDR} {HOST_PORT} </dev/null; echo ==; \
             {listen} touch {ready}; \
             i=0; while [ ! -e {done} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            ready = shell_quote(&ready.to_string_lossy()),
            done = shell_quote(&done.to_string_lossy()),
        );
        let script = format!(
            "exec rootlesskit --net=pasta --pasta-binary={} --port-driver={port_driver} \
             --disable-host-loopback --copy-up=/etc --state-dir={} sh -c {}",
            s.path(),
            shell_quote(&state.to_string_lossy()),
            shell_quote(&child)
        );
        let f = std::fs::File::create(&log).unwrap();
        let child = w
            .user_cmd(&script, 60, &[])
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn rootlesskit");
        let mut rk = Rk {
            child,
            log,
            ready,
            done,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rk.ready.exists() {
            if let Ok(Some(st)) = rk.child.try_wait() {
                panic!("rootlesskit exited early ({st}):\n{}", rk.logs());
            }
            assert!(
                Instant::now() < deadline,
                "rootlesskit's child not ready in 20 s:\n{}",
                rk.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        rk
    }

    fn logs(&self) -> String {
        read(&self.log)
            .lines()
            .filter(|l| !l.contains("level=debug"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Let the child finish; rootlesskit must exit 0 within 10 s. Returns the log.
    fn finish(mut self) -> String {
        std::fs::write(&self.done, "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(st.success(), "rootlesskit: {st}\n{}", self.logs());
                return self.logs();
            }
            assert!(
                Instant::now() < deadline,
                "rootlesskit did not exit:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Rk {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.done, "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every rootlesskit child saw: tap0 with 10.0.2.100/24 and MTU 65520, default route via
/// 10.0.2.2, DNS 10.0.2.3 reaching the loopback resolver, the host's server reachable.
fn check_rk_child(log: &str) {
    let sections: Vec<&str> = log.split("==\n").collect();
    let ctx = || format!("rootlesskit's child:\n{log}");
    assert!(sections.len() >= 5, "incomplete output: {}", ctx());
    let first = sections[0];
    assert!(
        first.contains(": tap0:") && first.contains("mtu 65520"),
        "tap0 with MTU 65520: {}",
        ctx()
    );
    assert!(
        first.contains("inet 10.0.2.100/24"),
        "address 10.0.2.100/24: {}",
        ctx()
    );
    assert!(
        sections[1]
            .lines()
            .any(|l| l.starts_with("default via 10.0.2.2 dev tap0")),
        "default route via 10.0.2.2: {}",
        ctx()
    );
    assert!(
        sections[2].contains("nameserver 10.0.2.3"),
        "resolv.conf names 10.0.2.3: {}",
        ctx()
    );
    assert!(
        sections[3].contains(&format!("Address: {DNS_ANSWER}")),
        "DNS through 10.0.2.3: {}",
        ctx()
    );
    assert_eq!(
        sections[4].lines().next().unwrap_or("").trim(),
        "ok",
        "the host's server {HOST_ADDR}:{HOST_PORT}: {}",
        ctx()
    );
}

/// rootlesskit 2.0 `--net=pasta --port-driver=implicit`: the network above, and listeners in
/// the child are published by pasta's automatic forwarding (reached from 127.0.0.1 and from
/// the host's address); the subject is gone after rootlesskit exits (it SIGKILLs it).
#[test]
fn rootlesskit_pasta_implicit_ports() {
    need_rootfs!();
    let w = World::new();
    for_each_subject(|s| {
        let rk = Rk::start(&w, s, "implicit", &[18095, 18096], s.name());
        let stacks = w.procs_with("--dns-forward=10.0.2.3");
        assert!(!stacks.is_empty(), "no {} process running", s.name());
        for (addr, port) in [("127.0.0.1", 18095), (HOST_ADDR, 18096)] {
            // pasta rescans the child's listeners every second.
            let out = retry_host(&w, &format!("busybox nc {addr} {port} </dev/null"), 6)
                .unwrap_or_else(|e| panic!("auto-forwarded port: {e}\n{}", rk.logs()));
            assert_eq!(out.trim(), format!("child-{port}"), "via {addr}:{port}");
        }
        let log = rk.finish();
        check_rk_child(&log);
        wait_exited(
            &stacks,
            2,
            &format!("{} after rootlesskit exited", s.name()),
        );
    });
}

/// rootlesskit 2.0 `--net=pasta --port-driver=none` (it refuses `builtin` with pasta: "network
/// \"pasta\" requires port driver \"none\" or \"implicit\""): the network above, and a
/// listener in the child is *not* published.
#[test]
fn rootlesskit_pasta_no_port_driver() {
    need_rootfs!();
    let w = World::new();
    let builtin = w.user(
        "rootlesskit --net=pasta --port-driver=builtin --disable-host-loopback true",
        30,
        &[],
    );
    assert!(
        !builtin.status.success()
            && String::from_utf8_lossy(&builtin.stderr).contains("requires port driver"),
        "rootlesskit 2.0 was expected to refuse --port-driver=builtin with pasta: {builtin:?}"
    );
    for_each_subject(|s| {
        let rk = Rk::start(&w, s, "none", &[18097], s.name());
        let stacks = w.procs_with("--dns-forward=10.0.2.3");
        assert!(!stacks.is_empty(), "no {} process running", s.name());
        // Longer than pasta's 1 s rescan of listeners.
        std::thread::sleep(Duration::from_millis(2500));
        let bound = w.host_ok("ss -H -tuln | grep -E ':18097 ' || true", 5);
        assert!(
            bound.trim().is_empty(),
            "the child's port 18097 was published with --port-driver=none:\n{bound}"
        );
        let log = rk.finish();
        check_rk_child(&log);
        wait_exited(
            &stacks,
            2,
            &format!("{} after rootlesskit exited", s.name()),
        );
    });
}
