//! Capabilities and the `prctl` switches of the sandbox: `NO_NEW_PRIVS`, the ambient and bounding
//! sets, and `capset(2)`.
//!
//! # Theory of operation
//!
//! A capability is kept only if it is in every one of the sets the kernel consults: the bounding
//! set limits what any future `execve` could gain, the ambient set what an unprivileged `execve`
//! would keep, and the permitted/effective sets what this process can use now. [`restrict_to`]
//! clears the ambient set, drops every other capability from the bounding set (this needs
//! `CAP_SETPCAP`, so it runs before `capset`), then sets permitted = effective = the kept set and
//! inheritable = empty (tapir never executes anything after the sandbox is built).
//!
//! These calls only ever take privilege away; none of them can fail in a way that leaves the
//! process with more than it had. The exception is the user-namespace pair
//! ([`join_user_namespace`], [`new_user_namespace`]): it gives an unprivileged tapir full
//! capabilities inside a user namespace it owns, which the sandbox needs to build a mount
//! namespace, and which [`restrict_to`] then takes away again.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use super::cvt;

/// `CAP_NET_BIND_SERVICE` (bind ports below 1024).
pub const CAP_NET_BIND_SERVICE: u32 = 10;
/// `CAP_SYS_ADMIN` (mounts, namespaces).
pub const CAP_SYS_ADMIN: u32 = 21;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<()> {
    // SAFETY: every option passed by this module takes integer arguments only (no pointers), and
    // the unused trailing arguments must be zero.
    cvt(unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) }).map(drop)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: no `execve` can ever grant privileges again.
pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`. `EINVAL` (kernels before 4.3 have no
/// ambient set) counts as success.
pub fn clear_ambient() -> io::Result<()> {
    // SAFETY: integer-only prctl option; unused arguments are zero.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match cvt(r) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other.map(drop),
    }
}

/// Drop every capability except those in `keep` (a bit mask) from the bounding set. Walks
/// capability numbers from 0 until the kernel answers `EINVAL` (past its last capability).
pub fn drop_bounding_except(keep: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        match prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn capget() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header is a valid v3 header and data has the two elements v3 writes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    cvt(libc::c_int::try_from(r).unwrap_or(-1))?;
    Ok(data)
}

/// The effective capability set of this thread, as a 64-bit mask.
pub fn effective() -> io::Result<u64> {
    let d = capget()?;
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

/// Whether capability `cap` is effective.
pub fn has_effective(cap: u32) -> io::Result<bool> {
    Ok(effective()? & (1u64 << cap) != 0)
}

/// `capset(2)`: permitted = effective = `keep`, inheritable = empty. Fails with `EPERM` if
/// `keep` holds something not currently permitted.
pub fn set(keep: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = u32::try_from(keep & 0xffff_ffff).unwrap_or(u32::MAX);
    let hi = u32::try_from(keep >> 32).unwrap_or(u32::MAX);
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header is a valid v3 header and data holds the two elements v3 reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    cvt(libc::c_int::try_from(r).unwrap_or(-1)).map(drop)
}

/// Keep only `keep` (a bit mask of capabilities), in every set: ambient cleared, bounding set
/// reduced, permitted = effective = `keep` (as far as currently permitted), inheritable empty.
pub fn restrict_to(keep: u64) -> io::Result<()> {
    clear_ambient().map_err(|e| context("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", e))?;
    drop_bounding_except(keep).map_err(|e| context("prctl(PR_CAPBSET_DROP)", e))?;
    // Never ask for something we do not hold (capset would refuse with EPERM).
    let permitted = {
        let d = capget().map_err(|e| context("capget", e))?;
        u64::from(d[0].permitted) | (u64::from(d[1].permitted) << 32)
    };
    set(keep & permitted).map_err(|e| context("capset", e))
}

/// Join the user namespace at `path` (`setns(CLONE_NEWUSER)`). The kernel refuses this unless
/// the process is single-threaded and owns (or is privileged over) that namespace; on success the
/// process holds every capability *in that namespace*, and none outside it.
pub fn join_user_namespace(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| {
        let hint = match e {
            nix::errno::Errno::EINVAL => {
                " (already in it, not a user namespace, or the process is multithreaded)"
            }
            nix::errno::Errno::EPERM => " (it must be owned by the user running tapir)",
            _ => "",
        };
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "setns({}, CLONE_NEWUSER): {}{hint}",
                path.display(),
                e.desc()
            ),
        )
    })
}

/// Create a user namespace of our own (`unshare(CLONE_NEWUSER)`) in which the current effective
/// uid and gid are root.
pub fn new_user_namespace() -> io::Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("unshare(CLONE_NEWUSER): {}", e.desc()),
        )
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| io::Error::new(e.kind(), format!("{file}: {e}")))
    };
    // An unprivileged process must give up setgroups(2) before it may write its gid_map.
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// After joining a user namespace: make uid 0 *of that namespace* the effective uid (and gid 0
/// the effective gid, when it is mapped), so files can be created in the sandbox's tmpfs. When
/// our own uid is what maps to 0, as with `unshare -r` or podman's rootless namespace, this
/// changes nothing in kernel terms.
pub fn become_namespace_root() -> io::Result<()> {
    // An unmapped gid 0 only matters for group ownership of files we never create; ignore.
    let _ = nix::unistd::setegid(nix::unistd::Gid::from_raw(0));
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "seteuid(0) in the joined user namespace: {} (is the user running tapir mapped in it?)",
                e.desc()
            ),
        )
    })
}

fn context(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capget_reports_a_mask() {
        // Whatever the privileges of the test runner, capget succeeds and the reported mask is
        // consistent with has_effective.
        let eff = effective().unwrap();
        assert_eq!(
            has_effective(CAP_SYS_ADMIN).unwrap(),
            eff & (1 << CAP_SYS_ADMIN) != 0
        );
    }
}
