//! Mount-namespace primitives for the sandbox: a private mount namespace, an empty tmpfs root,
//! read-only bind mounts, and `pivot_root`.
//!
//! # Theory of operation
//!
//! Each function is one step of [`crate::isolation`]'s sandbox stage and wraps one or two system
//! calls; errors name the call and the path. Policy (which directories, in which order) lives in
//! `isolation`, not here. Two properties matter to callers:
//!
//! - [`make_all_slave`] must run right after [`unshare_mount_namespace`]: a copied mount that is
//!   still *shared* with the caller's namespace would carry our later unmounts back to the caller
//!   (the bug slirp4netns's `sandbox-no-unmount` test guards against). As slaves our copies still
//!   receive the caller's new mounts (a resolver rewriting `/run`), but send nothing back.
//! - [`restrict_recursive`] makes a whole bind-mounted tree read-only with `mount_setattr(2)`
//!   (`AT_RECURSIVE`), so submounts such as a bind-mounted `/etc/resolv.conf` become read-only
//!   too. Kernels older than 5.12 lack the call; there only the top mount is remounted (what
//!   slirp4netns does) and the caller is told so.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::cvt;

/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`.
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn err(what: impl std::fmt::Display, e: nix::Error) -> io::Error {
    io::Error::new(io::Error::from(e).kind(), format!("{what}: {}", e.desc()))
}

/// `unshare(CLONE_NEWNS)`: a private copy of the caller's mount table.
pub fn unshare_mount_namespace() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| err("unshare(CLONE_NEWNS)", e))
}

/// `unshare(flags)` for any other combination (`flags` may be empty: a no-op that the seccomp
/// filter still refuses, which the test-only trigger relies on).
pub fn unshare_flags(flags: CloneFlags) -> io::Result<()> {
    unshare(flags).map_err(|e| err(format_args!("unshare({flags:?})"), e))
}

/// Make every mount of this namespace a slave (`MS_REC | MS_SLAVE` on `/`): nothing we mount or
/// unmount from now on propagates to the namespace we came from.
pub fn make_all_slave() -> io::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| err("mount(\"/\", MS_REC|MS_SLAVE)", e))
}

/// Mount a fresh tmpfs on `target` (`nosuid,nodev,noexec`, mode 0755, with `options` appended).
pub fn mount_tmpfs(target: &Path, options: &str) -> io::Result<()> {
    let data = format!("mode=0755,{options}");
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(|e| err(format_args!("mount tmpfs on {}", target.display()), e))
}

/// Recursive bind mount of `src` (a directory or a file) onto `dst`, which must exist.
pub fn bind_recursive(src: &Path, dst: &Path) -> io::Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        err(
            format_args!("bind mount {} on {}", src.display(), dst.display()),
            e,
        )
    })
}

/// An `O_PATH` handle on `path` (following symlinks), to bind-mount it later with [`bind_fd`]
/// even after another mount has covered the path.
pub fn open_path(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {} (O_PATH): {e}", path.display())))
}

/// Bind-mount what `handle` (from [`open_path`]) refers to onto `dst`, through its
/// `/proc/self/fd` link.
pub fn bind_fd(handle: &std::fs::File, dst: &Path) -> io::Result<()> {
    let src = format!("/proc/self/fd/{}", handle.as_raw_fd());
    mount(
        Some(src.as_str()),
        dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err(format_args!("bind mount {src} on {}", dst.display()), e))
}

/// Make the mount at `path` and every mount below it read-only, `nosuid`, `nodev` and `noexec`.
/// Returns `Ok(true)` when done recursively, `Ok(false)` when the kernel has no
/// `mount_setattr(2)` and only the top mount could be remounted.
pub fn restrict_recursive(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a NUL-terminated path and `attr` a properly laid out mount_attr whose size
    // is passed along; the kernel only reads both during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match cvt(libc::c_int::try_from(r).unwrap_or(-1)) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            remount_bind_readonly(path)?;
            Ok(false)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("mount_setattr({}, AT_RECURSIVE, ro): {e}", path.display()),
        )),
    }
}

/// Remount the bind mount at `path` read-only (top mount only; atime flags are preserved).
fn remount_bind_readonly(path: &Path) -> io::Result<()> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| err(format_args!("remount {} read-only", path.display()), e))
}

/// Remount the tmpfs at `path` read-only.
pub fn remount_tmpfs_readonly(path: &Path) -> io::Result<()> {
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| {
        err(
            format_args!("remount tmpfs {} read-only", path.display()),
            e,
        )
    })
}

/// Make `new_root` the root directory: `chdir(new_root)`, `pivot_root(".", ".")` (the old root
/// ends up stacked on top of the new one), detach the old root with `umount2(".", MNT_DETACH)`,
/// `chdir("/")`. `new_root` must be a mount point that is not shared.
pub fn pivot_root_to(new_root: &Path) -> io::Result<()> {
    nix::unistd::chdir(new_root)
        .map_err(|e| err(format_args!("chdir {}", new_root.display()), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| err("pivot_root(\".\", \".\")", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| err("umount2(old root, MNT_DETACH)", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))
}
