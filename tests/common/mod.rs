//! Integration-test harness: private namespaces, the real binary, real clients.
//!
//! Every topology lives inside a private "host" network namespace ([`HostNs`]) with only `lo`
//! up, so nothing tapir forwards can leave the machine whatever the bug. The guest is another
//! network namespace ([`Guest`]) created from inside the host namespace. tapir runs inside the
//! host namespace and attaches to the guest, exactly as podman or rootlesskit would run it.
//!
//! Privileges:
//! - as root: the host namespace is a plain `unshare -n` (netns only, initial user namespace), so
//!   tapir runs as real root, or as the plain user `tapirtest` (via `setpriv`) for rootless
//!   tests, with the guest in a user namespace that user owns;
//! - as a plain user: the host namespace is `unshare -rn` and everything enters its user
//!   namespace.
//!
//! When a prerequisite is missing the test calls [`skip`] (through [`require!`] or [`host`]): it
//! prints `SKIP: <reason>`, records the skip in the file `TAPIR_TEST_SKIP_FILE` names (test.sh
//! sets it and counts the skips in its summary, since cargo reports a skipped test as passed),
//! and returns, except under `CI=true`, where a missing prerequisite is a failure (CI runs as
//! root, so the tests must run). Never print `SKIP:` by hand: a skip that is not recorded would
//! be counted as a pass.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Name of the plain user that `.ci/run` creates for rootless tests.
pub const TEST_USER: &str = "tapirtest";

/// The rootless tests' plain user: `TAPIR_TEST_USER` if set (e.g. a name that does not exist,
/// to see which tests skip without it), else [`TEST_USER`].
pub fn test_user_name() -> String {
    std::env::var("TAPIR_TEST_USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| TEST_USER.to_owned())
}

/// Path of the binary under test.
pub fn tapir_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapir"))
}

/// Whether we run under CI (skips become failures).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false")
        .unwrap_or(false)
}

/// Skip (or, in CI, fail) with a reason, through [`skip`].
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            $crate::common::skip(&format!($($why)*));
            return;
        }
    };
}

/// Environment variable naming the file skips are recorded in (test.sh sets it).
pub const SKIP_FILE_ENV: &str = "TAPIR_TEST_SKIP_FILE";

/// The running test as `suite::test`: the test binary's name without cargo's hash, and the
/// name libtest gives the thread that runs the test.
pub fn current_test() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suite = match stem.rsplit_once('-') {
        Some((name, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem,
    };
    let thread = std::thread::current();
    format!("{suite}::{}", thread.name().unwrap_or("?"))
}

/// The test cannot run here: under CI panic (a missing prerequisite is a failure there);
/// otherwise print `SKIP: <why>` and append one line, `suite::test[ (extra args)]<TAB>why`, to
/// the file `TAPIR_TEST_SKIP_FILE` names, if it is set. The caller must return at once.
pub fn skip(why: &str) {
    if in_ci() {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("SKIP: {why}");
    let Some(path) = std::env::var_os(SKIP_FILE_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let mut name = current_test();
    let extra = extra_args();
    if !extra.is_empty() {
        name.push_str(&format!(" (with {})", extra.join(" ")));
    }
    let line = format!("{name}\t{}\n", why.replace(['\n', '\t'], " "));
    // One write of one short line on an O_APPEND file: lines of tests running in parallel (or
    // in other test binaries) never interleave.
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        // Unrecorded, the skip would count as a pass: fail loudly instead.
        panic!(
            "cannot record the skip in {}: {e}",
            Path::new(&path).display()
        );
    }
}

/// Whether the test process is root.
pub fn is_root() -> bool {
    // /proc/self/status "Uid:" line; no libc in tests.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why namespace tests cannot run here, if they cannot.
pub fn namespace_unavailable() -> Option<String> {
    static R: OnceLock<Option<String>> = OnceLock::new();
    R.get_or_init(|| {
        for c in ["unshare", "nsenter", "ip", "setpriv"] {
            if !have(c) {
                return Some(format!("{c} not installed"));
            }
        }
        let args: &[&str] = if is_root() {
            &["-n", "true"]
        } else {
            &["-rn", "true"]
        };
        let ok = Command::new("unshare")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some("cannot create network namespaces (unshare failed)".into());
        }
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_err()
        {
            return Some("/dev/net/tun cannot be opened".into());
        }
        None
    })
    .clone()
}

/// A private host namespace, or `None` (after printing why) where namespaces are unavailable.
/// Under CI a missing prerequisite is a failure instead.
pub fn host() -> Option<HostNs> {
    if let Some(why) = namespace_unavailable() {
        skip(&why);
        return None;
    }
    Some(HostNs::new())
}

/// Whether a command-line tool is available (for optional clients like udhcpc).
pub fn tool(cmd: &str) -> bool {
    have(cmd)
}

/// The first of `names` that is not installed, as a skip reason.
pub fn missing_tool(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| !tool(n))
        .map(|n| format!("{n} not installed"))
}

/// Skip (or, in CI, fail) unless every named tool is installed.
#[macro_export]
macro_rules! need {
    ($($t:expr),*) => {
        let missing = $crate::common::missing_tool(&[$($t),*]);
        require!(missing.is_none(), "{}", missing.unwrap_or_default());
    };
}

/// The SHA-256 of a file, hex (`sha256sum`; empty if it cannot be read).
pub fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Fill `path` with `bytes` random bytes (test payloads).
pub fn random_file(path: &Path, bytes: u64) {
    let st = Command::new("sh")
        .args([
            "-c",
            &format!(
                "head -c {bytes} /dev/urandom > {}",
                shell_quote(&path.display().to_string())
            ),
        ])
        .status()
        .expect("run head");
    assert!(st.success(), "cannot write {}", path.display());
}

/// Why a rootless test cannot run: the test user is missing, and how to create it.
pub fn no_test_user() -> String {
    format!(
        "user {} does not exist (create it as .ci/run does: useradd --create-home {0}; \
         see README, Testing)",
        test_user_name()
    )
}

/// uid and gid of the rootless test user ([`test_user_name`]), if it exists.
pub fn test_user() -> Option<(u32, u32)> {
    let name = test_user_name();
    let out = Command::new("id").args(["-u", &name]).output().ok()?;
    let gid = Command::new("id").args(["-g", &name]).output().ok()?;
    if !out.status.success() || !gid.status.success() {
        return None;
    }
    let p = |o: &Output| String::from_utf8_lossy(&o.stdout).trim().parse().ok();
    Some((p(&out)?, p(&gid)?))
}

/// A scratch directory removed on drop, readable by the test user.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Make a fresh directory under the system temp dir.
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("tapir-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        let _ = Command::new("chmod").arg("777").arg(&p).status();
        Scratch(p)
    }
    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kill a child and reap it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Who runs a command inside the host namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// Whoever runs the tests (root in CI).
    Runner,
    /// The plain user `tapirtest` (needs the runner to be root).
    User,
}

/// The private host network namespace.
pub struct HostNs {
    holder: Child,
    /// PID of the namespace holder.
    pub pid: u32,
    userns: bool,
    resolv: Option<PathBuf>,
}

/// A background process, killed and reaped on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        kill(&mut self.0);
    }
}

impl HostNs {
    /// Create it (lo up). Panics on failure: callers check [`namespace_unavailable`] first.
    pub fn new() -> HostNs {
        let userns = !is_root();
        let mut c = Command::new("unshare");
        if userns {
            c.args(["-r", "-n", "-m", "--propagation", "private"]);
        } else {
            c.args(["-n", "-m", "--propagation", "private"]);
        }
        let holder = c
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn host namespace holder");
        let pid = holder.id();
        let mut h = HostNs {
            holder,
            pid,
            userns,
            resolv: None,
        };
        wait_until(Duration::from_secs(5), || h.ns_ready());
        // Only lo, up, in a private network namespace: nothing can leave the machine.
        // DNS: a private resolv.conf naming a responder on loopback (bind-mounted in the host
        // namespace's own mount namespace), so tapir never forwards to the machine's resolver.
        // Unprivileged ICMP sockets for everyone (per network namespace sysctl).
        let resolv = std::env::temp_dir().join(format!("tapir-test-resolv-{}", pid));
        std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
        let _ = Command::new("chmod").arg("666").arg(&resolv).status();
        let script = format!(
            "ip link set lo up && mount --bind {r} /etc/resolv.conf && \
             (echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range || true)",
            r = resolv.display()
        );
        let out = h.sh(As::Runner, &script);
        assert!(out.status.success(), "host namespace setup: {out:?}");
        h.resolv = Some(resolv);
        h
    }

    /// Replace the private resolv.conf's content (same file, so tapir sees it change).
    pub fn set_resolv_conf(&self, content: &str) {
        let p = self.resolv.as_ref().expect("resolv.conf");
        std::fs::write(p, content).unwrap();
    }

    /// Start a background process in the host namespace (killed on drop of the handle).
    pub fn spawn(&self, who: As, script: &str) -> Bg {
        let child = self
            .cmd(who, "sh")
            .args(["-c", &format!("exec {script}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in host namespace");
        Bg(child)
    }

    /// Wait until something listens on `port` (TCP, or UDP with `udp`) in the host namespace.
    pub fn wait_listening(&self, port: u16, udp: bool) {
        let flag = if udp { "-uln" } else { "-tln" };
        let script = format!("ss -H {flag} | grep -q ':{port} '");
        wait_until(Duration::from_secs(5), || {
            self.sh(As::Runner, &script).status.success()
        });
    }

    fn ns_ready(&self) -> bool {
        let mine = std::fs::read_link("/proc/self/ns/net").ok();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/net", self.pid)).ok();
        theirs.is_some() && theirs != mine
    }

    /// A command that runs `prog` inside the host namespace as `who`.
    pub fn cmd(&self, who: As, prog: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid.to_string()).args(["-n", "-m"]);
        if self.userns {
            // Keep our uid, which the namespace maps to its root: nsenter's own setgroups(2)
            // would fail there (unshare -r denies it).
            c.args(["-U", "--preserve-credentials"]);
        }
        if who == As::User {
            let (uid, gid) = test_user().expect("test user");
            c.args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ]);
        }
        c.arg(prog);
        c
    }

    /// Run a shell snippet inside the host namespace and collect its output.
    pub fn sh(&self, who: As, script: &str) -> Output {
        self.cmd(who, "sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run sh in host namespace")
    }

    /// A fresh guest (made by the test runner) with tapir attached to it by PID, ready. `args`
    /// come before the `PID tap0` operands.
    pub fn start(&self, args: &[&str]) -> (Guest, Tapir) {
        self.start_env(&[], args)
    }

    /// [`HostNs::start`] with extra environment variables for tapir (e.g. `HOME`).
    pub fn start_env(&self, env: &[(&str, &OsStr)], args: &[&str]) -> (Guest, Tapir) {
        let g = self.guest(As::Runner);
        let pid = g.pid.to_string();
        let mut all = args.to_vec();
        all.extend([pid.as_str(), "tap0"]);
        let mut t = Tapir::spawn_env(self, As::Runner, &all, false, env);
        t.wait_ready();
        (g, t)
    }

    /// Make a guest network namespace (created by `who`, so owned by that user's userns).
    pub fn guest(&self, who: As) -> Guest {
        let mut c = self.cmd(who, "unshare");
        if who == As::User || self.userns {
            // A user namespace of its own, as rootless podman/rootlesskit do.
            c.args(["-r", "-n"]);
        } else {
            c.args(["-n"]);
        }
        let holder = c
            .args(["sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn guest holder");
        // nsenter forks; find the sleep process whose parent chain is ours.
        let pid = wait_for_descendant(holder.id(), "sleep");
        let g = Guest {
            holder,
            pid,
            owner: who,
        };
        wait_until(Duration::from_secs(5), || {
            let host = std::fs::read_link(format!("/proc/{}/ns/net", self.pid)).ok();
            let guest = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            guest.is_some() && guest != host
        });
        g
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        kill(&mut self.holder);
        if let Some(r) = &self.resolv {
            let _ = std::fs::remove_file(r);
        }
    }
}

/// Find the first descendant of `root` whose comm is `name` (waits up to 5 s).
pub fn wait_for_descendant(root: u32, name: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut frontier = vec![root];
        while let Some(p) = frontier.pop() {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return p;
            }
            let children =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            frontier.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        assert!(Instant::now() < deadline, "no {name} under pid {root}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The guest network namespace.
pub struct Guest {
    holder: Child,
    /// PID of a process inside (the `sleep` holder).
    pub pid: u32,
    owner: As,
}

impl Guest {
    /// Same, asserting success, returning stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh_any(script);
        assert!(
            out.status.success(),
            "guest `{script}` failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run inside the guest: with its user namespace when it has its own, else netns only.
    pub fn sh_any(&self, script: &str) -> Output {
        let own_userns = std::fs::read_link(format!("/proc/{}/ns/user", self.pid)).ok()
            != std::fs::read_link("/proc/self/ns/user").ok();
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.pid.to_string()).arg("-n");
        if own_userns {
            // Become the namespace's root (the owner's uid), so tools like ping can setuid.
            c.arg("-U");
            if !is_root() {
                // A plain runner's uid is already that root (unshare -r); nsenter's
                // setgroups(2) would fail in a namespace that denies it.
                c.arg("--preserve-credentials");
            }
        }
        c.args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("run sh in guest")
    }

    /// Path of the guest's network namespace file.
    pub fn netns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// Path of the guest's user namespace file.
    pub fn userns_path(&self) -> String {
        format!("/proc/{}/ns/user", self.pid)
    }

    /// Who created it.
    pub fn owner(&self) -> As {
        self.owner
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
        kill(&mut self.holder);
    }
}

/// A running tapir.
pub struct Tapir {
    /// The process (nsenter, which execs setpriv/tapir in turn).
    pub child: Child,
    /// Scratch directory with `ready` (the ready-fd file) and logs.
    pub dir: Scratch,
}

/// Copy the binary somewhere the test user can execute it.
pub fn shared_bin() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tapir-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dst = dir.join("tapir");
        std::fs::copy(tapir_bin(), &dst).unwrap();
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("755")
            .arg(&dir)
            .status();
        dst
    })
    .clone()
}

/// Options every [`Tapir::spawn`] adds in front of its own: the whitespace-separated words of
/// `TAPIR_TEST_EXTRA_ARGS` (`test.sh` runs the integration suites a second time with
/// `--enable-sandbox --enable-seccomp` this way). `TAPIR_TEST_WRAP`, if set, is a command
/// prefix for tapir, e.g. `strace -f -ff -o DIR/t` to see the syscalls a test makes
/// (`sandbox/README.md`).
pub fn extra_args() -> Vec<String> {
    std::env::var("TAPIR_TEST_EXTRA_ARGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Tapir {
    /// Start tapir inside `host` as `who` with `args`; fd 3 is the ready file, fd 4 (if
    /// `exit_pipe`) is the read end of the returned child's stdin pipe.
    pub fn spawn(host: &HostNs, who: As, args: &[&str], exit_pipe: bool) -> Tapir {
        Tapir::spawn_env(host, who, args, exit_pipe, &[])
    }

    /// [`Tapir::spawn`] with extra environment variables. `XDG_CONFIG_HOME` defaults to an
    /// empty scratch directory, so a per-user policy file of whoever runs the tests
    /// (`~/.config/tapir/policy`) never applies.
    pub fn spawn_env(
        host: &HostNs,
        who: As,
        args: &[&str],
        exit_pipe: bool,
        env: &[(&str, &OsStr)],
    ) -> Tapir {
        let dir = Scratch::new("tapir");
        let ready = dir.path("ready");
        let extra = extra_args();
        let args: Vec<&str> = extra
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        let mut script = format!(
            "exec {}{} -r 3 {} 3>{}",
            std::env::var("TAPIR_TEST_WRAP")
                .map(|w| w + " ")
                .unwrap_or_default(),
            shell_quote(&shared_bin().to_string_lossy()),
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
            shell_quote(&ready.to_string_lossy())
        );
        if exit_pipe {
            script = script.replacen(" -r 3 ", " -r 3 -e 4 ", 1) + " 4<&0";
        }
        let mut cmd = host.cmd(who, "sh");
        cmd.env("XDG_CONFIG_HOME", dir.path("config"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["-c", &script])
            .stdin(if exit_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::from(
                std::fs::File::create(dir.path("stdout")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path("stderr")).unwrap(),
            ))
            .spawn()
            .expect("spawn tapir");
        Tapir { child, dir }
    }

    /// Wait for the ready byte; panics with the logs if tapir dies or times out.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::fs::read(self.dir.path("ready")) {
                if !s.is_empty() {
                    assert_eq!(s, b"1", "ready fd must receive exactly the byte '1'");
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("tapir exited before ready ({st}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "tapir not ready in 10 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// stdout and stderr so far.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            std::fs::read_to_string(self.dir.path("stdout")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.path("stderr")).unwrap_or_default()
        )
    }

    /// Wait for exit with a timeout; returns the exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.code());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// PID of the tapir process itself (nsenter/setpriv exec into it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Number of open descriptors of the tapir process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Tapir {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Quote for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Poll `f` until true or panic after `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "condition not met in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run tapir (no namespaces) with args; returns (code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tapir_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tapir");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Read a whole file from a path, for assertions.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// One API request, one reply, as podman does (write, shut down writing, read to EOF).
pub fn api(sock: &Path, req: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect API socket");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The API's `get_info` reply, parsed.
pub fn get_info(sock: &Path) -> serde_json::Value {
    serde_json::from_str(&api(sock, r#"{"execute": "get_info"}"#)).expect("get_info JSON")
}

/// The test TCP/UDP server script (`tests/tools/tcpserve.py`), as a command prefix.
pub fn tcpserve() -> String {
    format!(
        "python3 {}/tests/tools/tcpserve.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A background server inside the guest's network namespace (one process: sh execs nsenter,
/// which execs the server), killed on drop.
pub fn in_guest(g: &Guest, script: &str) -> Bg {
    let child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "exec nsenter -t {} -n sh -c 'exec {}'",
                g.pid,
                script.replace('\'', "'\\''")
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Bg(child)
}
