//! A fresh user + network + mount namespace for `tapir run`.
//!
//! # Theory of operation
//!
//! [`spawn_isolated`] forks a child that
//! 1. `unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)`,
//! 2. maps the caller's uid and gid to root inside (writing `deny` to `setgroups` first, which an
//!    unprivileged process must do before writing its own `gid_map`),
//! 3. makes every mount private and, if asked, bind-mounts a file over `/etc/resolv.conf` so that
//!    the command resolves through tapir's DNS proxy,
//! 4. asks for `SIGKILL` when tapir dies (`PR_SET_PDEATHSIG`, set after the credential changes
//!    above, which could clear it, and checked against a tapir that died before it was set), so
//!    the command never outlives the network it depends on, even when tapir is killed with
//!    `SIGKILL`,
//! 5. tells the parent it is ready (one byte on a pipe) and blocks until the parent says "go"
//!    (one byte back) once the network is attached and configured,
//! 6. `execvp`s the command. If the parent closes the go pipe without writing, the child exits 1.
//!
//! The death signal reaches the command itself, not processes it starts; the kernel also drops
//! it when the command execs a set-user-ID, set-group-ID or file-capability program that gains
//! privileges by it (inside the new user namespace such programs gain none: the child is already
//! its root with every capability, and files owned by unmapped users are not set-user-ID there).
//!
//! Must be called while the process is single-threaded (the child runs Rust code after fork).

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, pipe, ForkResult, Pid};

/// A child waiting in its new namespaces for the go signal.
#[derive(Debug)]
pub struct PendingChild {
    /// The child's PID (its namespaces are `/proc/PID/ns/*`).
    pub pid: Pid,
    go: OwnedFd,
}

impl PendingChild {
    /// Let the child exec its command.
    pub fn start(self) -> io::Result<()> {
        std::fs::File::from(self.go).write_all(b"g")
    }
}

fn child_setup(resolv: Option<&Path>, uid: u32, gid: u32) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|e| {
            format!(
                "unshare(CLONE_NEWUSER|CLONE_NEWNET|CLONE_NEWNS): {}",
                e.desc()
            )
        })?;
    let write =
        |path: &str, s: String| std::fs::write(path, s).map_err(|e| format!("write {path}: {e}"));
    // setgroups may be missing on very old kernels; ignore that case.
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {}", e.desc()))?;
    if let Some(src) = resolv {
        if let Err(e) = mount(
            Some(src),
            "/etc/resolv.conf",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            eprintln!(
                "tapir: WARNING: cannot bind-mount a resolv.conf for the command: {}",
                e.desc()
            );
        }
    }
    Ok(())
}

/// In the child: get `SIGKILL` when `tapir` (the parent) dies; fail if it is already gone.
fn die_with(tapir: Pid) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {}", e.desc()))?;
    if nix::unistd::getppid() != tapir {
        return Err("tapir exited before the command could start".into());
    }
    Ok(())
}

/// Fork `argv` into new namespaces, paused until [`PendingChild::start`].
pub fn spawn_isolated(argv: &[OsString], resolv: Option<&Path>) -> io::Result<PendingChild> {
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "argument contains a NUL byte"))?;
    if cargs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    }
    let tapir = nix::unistd::getpid();
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the process is single-threaded (module invariant); the child leaves only via exec
    // or _exit.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            let code = match child_setup(resolv, uid, gid).and_then(|()| die_with(tapir)) {
                Err(msg) => {
                    eprintln!("tapir run: {msg}");
                    1
                }
                Ok(()) => {
                    let _ = std::fs::File::from(ready_w).write_all(b"r");
                    let mut b = [0u8; 1];
                    match std::fs::File::from(go_r).read(&mut b) {
                        Ok(1) => {
                            let e = nix::unistd::execvp(&cargs[0], &cargs).unwrap_err();
                            eprintln!(
                                "tapir run: cannot run {}: {}",
                                cargs[0].to_string_lossy(),
                                e.desc()
                            );
                            if e == nix::errno::Errno::ENOENT {
                                127
                            } else {
                                126
                            }
                        }
                        _ => 1,
                    }
                }
            };
            // SAFETY: _exit never returns and skips the parent's atexit/stdio state, as intended.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut b = [0u8; 1];
            match std::fs::File::from(ready_r).read(&mut b) {
                Ok(1) => Ok(PendingChild {
                    pid: child,
                    go: go_w,
                }),
                _ => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(io::Error::other(
                        "the command's namespaces could not be set up",
                    ))
                }
            }
        }
    }
}
