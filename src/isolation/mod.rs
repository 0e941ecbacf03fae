//! Self-isolation: `--enable-sandbox` and `--enable-seccomp`.
//!
//! # Theory of operation
//!
//! tapir parses frames written by an untrusted guest. The stages below shrink what a
//! memory-safety bug in that path could reach, in the order passt and slirp4netns use. They run
//! once, from [`apply`], after every descriptor the event loop needs exists (tap, signalfd, exit
//! fd, pidfd, API socket) and immediately before the ready byte, so a caller that sees "ready"
//! talks to an isolated process.
//!
//! 1. **credentials** (sandbox only). Building a mount namespace needs `CAP_SYS_ADMIN`. Root has
//!    it; an unprivileged tapir joins the target's user namespace (`--userns-path`, else
//!    `/proc/PID/ns/user` in pid mode and for `tapir run`'s command), in which it is root, or,
//!    when there is no target user namespace (`--netns-type=path` without `--userns-path`,
//!    `tapfd`), creates one of its own. It then switches to uid 0 of that namespace.
//!    Should: happen in the main process while it is single-threaded (`setns(CLONE_NEWUSER)`
//!    refuses otherwise), and only when `CAP_SYS_ADMIN` is missing.
//!    Mustn't: join the network namespace: host sockets, already open and opened later for new
//!    flows and port forwards, belong to the caller's network namespace, which we stay in.
//! 2. **mount namespace** (sandbox). `unshare(CLONE_NEWNS)`, then every mount becomes a slave.
//!    Should: make the slave step first, so no unmount below propagates to the caller.
//!    Mustn't: unmount or remount anything before that (the caller's shared mounts, e.g. podman's
//!    `/run`, would go with it: slirp4netns's `sandbox-no-unmount` test).
//! 3. **new root** (sandbox). An empty tmpfs with two directories, `etc` and `run`, holding
//!    recursive, read-only, `nosuid,nodev,noexec` bind mounts of `/etc` and `/run`. If
//!    `/etc/resolv.conf` leads outside them (NixOS `/etc/static`, WSL `/mnt/wsl`,
//!    `/var/run/...`), each symlink on the way is recreated and the final file bind-mounted
//!    read-only at its own path, so the DNS proxy keeps re-reading it (slirp4netns #116, #315;
//!    unlike slirp4netns's `realpath`, intermediate links are kept). Then the tmpfs becomes
//!    read-only, `pivot_root` enters it and the old root is detached.
//!    Should: keep the root empty apart from that; `/proc/PID/root` shows `etc` and `run` only.
//!    Mustn't: need the filesystem afterwards for anything but `/etc/resolv.conf`: paths such as
//!    the API socket's are gone (descriptors opened before stay valid).
//! 4. **privileges** (sandbox). `PR_SET_NO_NEW_PRIVS`, ambient set cleared, bounding set and
//!    permitted/effective sets reduced to `CAP_NET_BIND_SERVICE` (port forwards below 1024 when
//!    run as root), inheritable set emptied.
//!    Should: come after the mount work, which needs `CAP_SYS_ADMIN`.
//!    Mustn't: keep anything else; a root tapir is no more privileged than it needs to be.
//! 5. **seccomp** ([`seccomp`], `--enable-seccomp`): the allowlist, installed last.
//!    Should: be the very last thing before the ready byte.
//!    Mustn't: be followed by any privileged or setup syscall.
//!
//! Each stage's failure is fatal (tapir exits 1 before writing the ready byte), with an error
//! naming the step, so a caller never runs with less isolation than it asked for.
//!
//! The socket broker of `--splice-forwards` ([`crate::sys::nsbroker`]) is a second process,
//! inside the container's namespaces, with a filesystem view it never uses. [`confine_helper`]
//! confines it as far as it can be without a mount namespace of its own: with `--enable-sandbox`
//! no capability at all (it binds port 0 only) and `NO_NEW_PRIVS`; with `--enable-seccomp` its
//! own allowlist, the `broker` filter of the same file (`recvmsg`, `socket`, `bind`, `sendmsg`,
//! `close`, `exit_group` and malloc's calls).

pub mod seccomp;

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use log::{debug, info, warn};

use crate::config::Config;
use crate::nat::resolv::RESOLV_CONF;
use crate::sys;

/// Where the new root is assembled before `pivot_root` (any existing directory will do; the tmpfs
/// mounted there is visible only in our own mount namespace).
const STAGING: &str = "/tmp";
/// The only directories visible in the sandbox.
const VISIBLE: [&str; 2] = ["/etc", "/run"];
/// tmpfs options of the new root: tiny, because it only holds directories and symlinks.
const ROOT_TMPFS_OPTIONS: &str = "size=64k,nr_inodes=256";
/// Longest chain of symlinks followed from `/etc/resolv.conf` (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;
/// Capabilities kept: `CAP_NET_BIND_SERVICE` only.
const KEPT_CAPS: u64 = 1 << sys::caps::CAP_NET_BIND_SERVICE;

/// A failed isolation step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sandbox step, with what was being done.
    #[error("sandbox: cannot {step}: {source}")]
    Sandbox {
        /// The step ("join the target's user namespace", "enter the new root", ...).
        step: &'static str,
        /// The underlying error (it names the call and path).
        #[source]
        source: io::Error,
    },
    /// The seccomp stage.
    #[error(transparent)]
    Seccomp(#[from] seccomp::Error),
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Sandbox { step, source }
}

/// Confine a helper process (the socket broker) as `cfg` asks: every capability dropped with
/// `--enable-sandbox`, the allowlist with `--enable-seccomp`. Runs in the helper.
pub fn confine_helper(cfg: &Config) -> io::Result<()> {
    if cfg.enable_sandbox {
        sys::caps::set_no_new_privs()?;
        sys::caps::restrict_to(0)?;
    }
    if cfg.enable_seccomp {
        seccomp::install_broker().map_err(io::Error::other)?;
    }
    Ok(())
}

/// Apply the isolation `cfg` asks for. `target_pid` is the process whose user namespace an
/// unprivileged sandbox joins when `--userns-path` is not given (the `--netns-type=pid` target,
/// or `tapir run`'s command).
///
/// Must be called once, right before the ready byte, while the process is single-threaded.
pub fn apply(cfg: &Config, target_pid: Option<i32>) -> Result<(), Error> {
    #[cfg(feature = "test-utils")]
    let trigger = std::env::var_os(TEST_TRIGGER_ENV);
    if cfg.enable_sandbox {
        sandbox(cfg.userns_path.as_deref(), target_pid)?;
    }
    if cfg.enable_seccomp {
        // Everything after this line runs under the allowlist: keep it that way (see seccomp).
        let n = seccomp::install()?;
        let line =
            format!("seccomp: allowlist of {n} syscalls installed (default action: kill process)");
        if cfg.target.is_some() {
            // stdout, where slirp4netns prints "seccomp: The following syscalls are blocked: ...".
            let _ = writeln!(io::stdout(), "{line}");
        } else {
            // `tapir run`: stdout belongs to the command.
            info!("{line}");
        }
    }
    #[cfg(feature = "test-utils")]
    if let Some(what) = trigger {
        test_trigger(&what);
    }
    Ok(())
}

/// Test-only: with the `test-utils` feature, this environment variable makes [`apply`] finish
/// with something the tests want to watch under the filter: `syscall` (or anything else) makes a
/// syscall the allowlist refuses, `panic` panics.
#[cfg(feature = "test-utils")]
pub const TEST_TRIGGER_ENV: &str = "TAPIR_TEST_SECCOMP_TRIGGER";

/// `unshare(0)` (changes nothing when allowed, and is outside the allowlist), or a panic.
#[cfg(feature = "test-utils")]
fn test_trigger(what: &std::ffi::OsStr) {
    if what == "panic" {
        panic!("{TEST_TRIGGER_ENV}=panic");
    }
    warn!("{TEST_TRIGGER_ENV} is set: making a forbidden syscall (unshare)");
    let r = sys::mount::unshare_flags(nix::sched::CloneFlags::empty());
    warn!("the forbidden syscall returned {r:?}: the seccomp filter is not enforcing");
}

/// Stages 1-4.
fn sandbox(userns_path: Option<&Path>, target_pid: Option<i32>) -> Result<(), Error> {
    gain_mount_privilege(userns_path, target_pid)?;

    sys::mount::unshare_mount_namespace().map_err(step("create a mount namespace"))?;
    sys::mount::make_all_slave().map_err(step("detach mount propagation"))?;

    // Resolve before the staging tmpfs can hide the path (it may well lead under /tmp).
    let resolv = plan_resolv_conf()?;
    let staging = Path::new(STAGING);
    sys::mount::mount_tmpfs(staging, ROOT_TMPFS_OPTIONS).map_err(step("mount the new root"))?;
    for dir in VISIBLE {
        let src = Path::new(dir);
        if !src.is_dir() {
            warn!("sandbox: {dir} does not exist; not visible in the sandbox");
            continue;
        }
        let dst = under(staging, src);
        std::fs::create_dir(&dst)
            .map_err(with_path(&dst))
            .map_err(step("create a directory in the new root"))?;
        sys::mount::bind_recursive(src, &dst).map_err(step("bind-mount a directory"))?;
        restrict(&dst)?;
    }
    if let Some(plan) = resolv {
        bind_escaped_resolv_conf(staging, plan)?;
    }
    if let Err(e) = sys::mount::remount_tmpfs_readonly(staging) {
        // Not fatal (slirp4netns #163): the tmpfs is tiny, empty, noexec and nobody else sees it.
        warn!("sandbox: {e}");
    }
    sys::mount::pivot_root_to(staging).map_err(step("enter the new root"))?;

    sys::caps::set_no_new_privs().map_err(step("set no_new_privs"))?;
    sys::caps::restrict_to(KEPT_CAPS).map_err(step("drop capabilities"))?;
    debug!("sandbox: root is now {{etc, run}}, capabilities {KEPT_CAPS:#x}");
    Ok(())
}

fn with_path(p: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Read-only, recursively (or the top mount only, on kernels before 5.12).
fn restrict(mountpoint: &Path) -> Result<(), Error> {
    let recursive =
        sys::mount::restrict_recursive(mountpoint).map_err(step("make a bind mount read-only"))?;
    if !recursive {
        warn!(
            "sandbox: this kernel has no mount_setattr(2); mounts below {} stay writable",
            mountpoint.display()
        );
    }
    Ok(())
}

/// Stage 1: make sure we hold `CAP_SYS_ADMIN` over a user namespace of our own.
fn gain_mount_privilege(userns_path: Option<&Path>, target_pid: Option<i32>) -> Result<(), Error> {
    let has = |c| sys::caps::has_effective(c).map_err(step("read capabilities"));
    if has(sys::caps::CAP_SYS_ADMIN)? {
        return Ok(());
    }
    let target = userns_path
        .map(Path::to_path_buf)
        .or_else(|| target_pid.map(|p| PathBuf::from(format!("/proc/{p}/ns/user"))));
    match &target {
        Some(p) => {
            sys::caps::join_user_namespace(p).map_err(step("join the target's user namespace"))?
        }
        None => sys::caps::new_user_namespace().map_err(|e| Error::Sandbox {
            step: "create a user namespace (unprivileged, and no --userns-path was given)",
            source: e,
        })?,
    }
    sys::caps::become_namespace_root().map_err(step("become root in the user namespace"))?;
    if !has(sys::caps::CAP_SYS_ADMIN)? {
        return Err(Error::Sandbox {
            step: "gain CAP_SYS_ADMIN in the user namespace",
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                "capability missing after joining it",
            ),
        });
    }
    debug!(
        "sandbox: in user namespace {}",
        target.map_or("(new)".into(), |p| p.display().to_string())
    );
    Ok(())
}

/// `root` + absolute path `p`.
fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Whether `p` is inside one of the [`VISIBLE`] trees.
fn visible(p: &Path) -> bool {
    VISIBLE.iter().any(|v| p.starts_with(v))
}

/// The symlinks met while resolving a path, and where it ends.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Each symlink as (its own location, with no symlinks in its parent; its content).
    pub links: Vec<(PathBuf, PathBuf)>,
    /// The resolved path (no symlinks left).
    pub target: PathBuf,
}

/// Resolve absolute `path` component by component like the kernel does, recording every symlink
/// on the way (unlike `realpath(3)`, which only returns the end).
pub fn resolve(path: &Path) -> io::Result<Resolution> {
    let mut pending: Vec<PathBuf> = Vec::new(); // stack of remaining components, last = next
    push_components(&mut pending, path);
    let mut cur = PathBuf::from("/");
    let mut links = Vec::new();
    while let Some(c) = pending.pop() {
        match c.components().next() {
            Some(Component::RootDir) => cur = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                cur.pop();
            }
            Some(Component::Normal(name)) => {
                let next = cur.join(name);
                let meta = std::fs::symlink_metadata(&next).map_err(with_path(&next))?;
                if meta.file_type().is_symlink() {
                    if links.len() >= MAX_SYMLINKS {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{}: too many levels of symbolic links", path.display()),
                        ));
                    }
                    let content = std::fs::read_link(&next).map_err(with_path(&next))?;
                    push_components(&mut pending, &content);
                    links.push((next, content));
                } else {
                    cur = next;
                }
            }
            _ => {}
        }
    }
    Ok(Resolution { links, target: cur })
}

/// Push `p`'s components so that the first one is popped first.
fn push_components(stack: &mut Vec<PathBuf>, p: &Path) {
    let comps: Vec<PathBuf> = p
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// What must be added to the new root so that `/etc/resolv.conf` resolves there as it does now:
/// the symlinks outside the visible trees, and the final file if it is outside them too.
fn escaped(r: &Resolution) -> (Vec<&(PathBuf, PathBuf)>, Option<&Path>) {
    let links = r.links.iter().filter(|(at, _)| !visible(at)).collect();
    let file = (!visible(&r.target)).then_some(r.target.as_path());
    (links, file)
}

/// Stage 3's exception for DNS, planned before the new root hides anything: the symlinks and the
/// file `/etc/resolv.conf` leads to outside `/etc` and `/run`, the file held open (`O_PATH`) so it
/// can be bound even if the staging tmpfs covers its path.
struct ResolvEscape {
    resolution: Resolution,
    file: Option<(PathBuf, std::fs::File)>,
}

fn plan_resolv_conf() -> Result<Option<ResolvEscape>, Error> {
    let resolution = match resolve(Path::new(RESOLV_CONF)) {
        Ok(r) => r,
        Err(e) => {
            debug!("sandbox: {RESOLV_CONF} does not resolve ({e}); nothing to bind");
            return Ok(None);
        }
    };
    let (links, file) = escaped(&resolution);
    if links.is_empty() && file.is_none() {
        return Ok(None);
    }
    info!(
        "sandbox: {RESOLV_CONF} (-> {}) leads outside {{/etc, /run}}; binding it as well",
        resolution.target.display()
    );
    let file = match file {
        Some(f) => Some((
            f.to_path_buf(),
            sys::mount::open_path(f).map_err(step("open resolv.conf"))?,
        )),
        None => None,
    };
    Ok(Some(ResolvEscape { resolution, file }))
}

/// Recreate the escaped symlinks under `root` and bind the escaped file at its own path.
fn bind_escaped_resolv_conf(root: &Path, plan: ResolvEscape) -> Result<(), Error> {
    let mkdirs = |p: &Path| -> Result<(), Error> {
        std::fs::create_dir_all(p)
            .map_err(with_path(p))
            .map_err(step("create a directory for resolv.conf"))
    };
    let (links, _) = escaped(&plan.resolution);
    for (at, content) in links {
        let dst = under(root, at);
        if let Some(parent) = dst.parent() {
            mkdirs(parent)?;
        }
        match std::os::unix::fs::symlink(content, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(with_path(&dst)(e)).map_err(step("recreate a resolv.conf symlink"))
            }
        }
    }
    if let Some((file, handle)) = plan.file {
        let dst = under(root, &file);
        if let Some(parent) = dst.parent() {
            mkdirs(parent)?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&dst)
            .map_err(with_path(&dst))
            .map_err(step("create the resolv.conf mount point"))?;
        sys::mount::bind_fd(&handle, &dst).map_err(step("bind-mount resolv.conf"))?;
        restrict(&dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p =
                std::env::temp_dir().join(format!("tapir-isolation-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p.canonicalize().unwrap())
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolve_records_every_link_on_the_way() {
        let t = TempDir::new("chain");
        let d = &t.0;
        // d/a -> real (relative dir link), d/link -> a/conf (file via the dir link),
        // d/abs -> d/link (absolute).
        std::fs::create_dir(d.join("real")).unwrap();
        std::fs::write(d.join("real/conf"), "x").unwrap();
        symlink("real", d.join("a")).unwrap();
        symlink("a/conf", d.join("link")).unwrap();
        symlink(d.join("link"), d.join("abs")).unwrap();
        let r = resolve(&d.join("abs")).unwrap();
        assert_eq!(r.target, d.join("real/conf"));
        assert_eq!(
            r.links,
            vec![
                (d.join("abs"), d.join("link")),
                (d.join("link"), PathBuf::from("a/conf")),
                (d.join("a"), PathBuf::from("real")),
            ]
        );
        // realpath agrees on the end.
        assert_eq!(r.target, d.join("abs").canonicalize().unwrap());
    }

    #[test]
    fn resolve_handles_dotdot_plain_files_and_loops() {
        let t = TempDir::new("dots");
        let d = &t.0;
        std::fs::create_dir(d.join("x")).unwrap();
        std::fs::write(d.join("f"), "").unwrap();
        symlink("../f", d.join("x/up")).unwrap();
        let r = resolve(&d.join("x/up")).unwrap();
        assert_eq!(r.target, d.join("f"));
        let plain = resolve(&d.join("f")).unwrap();
        assert_eq!(plain.target, d.join("f"));
        assert!(plain.links.is_empty());
        symlink("loop2", d.join("loop1")).unwrap();
        symlink("loop1", d.join("loop2")).unwrap();
        assert!(resolve(&d.join("loop1")).is_err());
        assert!(resolve(&d.join("missing")).is_err());
    }

    #[test]
    fn only_links_and_files_outside_etc_and_run_escape() {
        let r = Resolution {
            links: vec![
                (
                    PathBuf::from("/etc/resolv.conf"),
                    PathBuf::from("/var/run/nm/resolv.conf"),
                ),
                (PathBuf::from("/var/run"), PathBuf::from("/run")),
            ],
            target: PathBuf::from("/run/nm/resolv.conf"),
        };
        let (links, file) = escaped(&r);
        assert_eq!(links, vec![&r.links[1]]);
        assert_eq!(file, None);

        let nix = Resolution {
            links: vec![
                (
                    PathBuf::from("/etc/resolv.conf"),
                    PathBuf::from("/etc/static/resolv.conf"),
                ),
                (
                    PathBuf::from("/etc/static"),
                    PathBuf::from("/nix/store/abc-etc/etc"),
                ),
            ],
            target: PathBuf::from("/nix/store/abc-etc/etc/resolv.conf"),
        };
        let (links, file) = escaped(&nix);
        assert!(links.is_empty());
        assert_eq!(file, Some(Path::new("/nix/store/abc-etc/etc/resolv.conf")));
        // Prefix matching is by component: /etcetera is not /etc.
        assert!(!visible(Path::new("/etcetera/resolv.conf")));
        assert!(visible(Path::new("/run")));
    }

    #[test]
    fn under_joins_absolute_paths() {
        assert_eq!(
            under(Path::new("/tmp"), Path::new("/mnt/wsl/resolv.conf")),
            PathBuf::from("/tmp/mnt/wsl/resolv.conf")
        );
    }
}
