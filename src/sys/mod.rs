//! The only place that talks to the kernel through `unsafe` FFI.
//!
//! # Theory of operation
//!
//! Every function here wraps one or a few system calls and exposes a safe signature returning
//! `std::io::Result` or an owned file descriptor ([`std::os::fd::OwnedFd`]), so that ownership and
//! closing are enforced by the type system everywhere else. Each `unsafe` block carries a
//! `// SAFETY:` comment stating why its preconditions hold. This module knows nothing of
//! configuration or policy: callers decide what to open and when.
//!
//! Submodules:
//! - [`tap`]: open `/dev/net/tun` and attach a tap, read and write frames.
//! - [`ifconfig`]: the `--configure` and `--config-net` ioctls (link up, MTU, MAC, IPv4 and IPv6
//!   addresses and routes).
//! - [`route`]: discovery of pasta's template interface (routes, addresses, MTU).
//! - [`daemon`]: pasta's daemon mode (fork, PID file, setsid, stdio to `/dev/null`).
//! - [`nswatch`]: tell when a bind-mounted network namespace file is deleted (inotify).
//! - [`netns`]: run a closure in a forked child that joined a user and network namespace, and
//!   receive the file descriptor it produced over `SCM_RIGHTS`.
//! - [`nsbroker`]: a long-lived child inside the container's namespaces that makes TCP sockets there
//!   (the spliced port-forward path).
//! - [`fd`]: small fd utilities (ready byte, validity checks, pidfd).
//! - [`userns`]: create a user+network+mount namespace for `tapir run`.
#![allow(unsafe_code)]

pub mod caps;
pub mod daemon;
pub mod fd;
pub mod ifconfig;
pub mod mount;
pub mod net;
pub mod netns;
pub mod nsbroker;
pub mod nswatch;
pub mod route;
pub mod tap;
#[cfg(test)]
mod testns;
pub mod userns;

use std::io;

/// Make the allocator hand large blocks (the per-flow TCP buffers) straight to `mmap` and back
/// to the kernel when freed. glibc otherwise raises its mmap threshold after the first large
/// free, serves later buffers from the heap, and must then zero each 1 MiB buffer by hand and
/// keeps the heap resident after flows close. Fixed threshold: fresh pages come zeroed from the
/// kernel, untouched ones cost nothing, and closed flows return their memory.
pub fn tune_allocator() {
    /// Blocks at least this large are mmapped (glibc's default before dynamic adjustment).
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator tuning parameters; called before any threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Ignore `SIGPIPE`, so that writing to a socket whose peer went away is an `EPIPE` error.
pub fn ignore_sigpipe() {
    // SAFETY: installing the SIG_IGN disposition runs no handler code, so no async-signal-safety
    // concerns arise.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// Interface index of `name` (`if_nametoindex`), if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Turn a `-1` return value into the thread's `errno` as an [`io::Error`].
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for `ssize_t` results.
pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Copy `name` into a zeroed `ifr_name`, truncating to IFNAMSIZ-1 bytes like the kernel does.
pub(crate) fn ifreq_named(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (arrays and a union of plain data); all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr
        .ifr_name
        .iter_mut()
        .zip(name.as_bytes().iter().take(libc::IFNAMSIZ - 1))
    {
        *dst = *src as libc::c_char;
    }
    ifr
}

/// Read the NUL-terminated `ifr_name` back as a string.
pub(crate) fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
