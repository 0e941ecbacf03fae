//! Small file-descriptor utilities: inherited fds, the ready byte, pidfds.

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// Whether `fd` is an open descriptor in this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table; any integer is a valid argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Take ownership of an inherited descriptor named on the command line (`--ready-fd`,
/// `--exit-fd`, `tapfd`). Returns `None` if it is not open. Also marks it close-on-exec so that it
/// does not leak into processes tapir starts.
pub fn adopt(fd: RawFd) -> Option<OwnedFd> {
    if fd < 0 || !is_open(fd) {
        return None;
    }
    // SAFETY: setting FD_CLOEXEC on an open descriptor has no memory-safety preconditions.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the caller names an fd inherited from our parent that no other object in this
    // process owns (the command line is parsed once, and each fd option is adopted once).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make `fd` non-blocking (`O_NONBLOCK`). Returns whether it was blocking before. The flag lives
/// in the open file description, so whoever shares it (the process that passed a tap fd) sees
/// the change too.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        return Ok(false);
    }
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(true)
}

/// What kind of file `fd` is, in words for an error message ("a pipe", "a regular file", ...).
pub fn describe(fd: BorrowedFd<'_>) -> &'static str {
    use nix::sys::stat::{fstat, SFlag};
    let Ok(st) = fstat(fd) else {
        return "unknown";
    };
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO => "a pipe",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "a file of an unknown kind",
    }
}

/// Write the ready byte `1` (retrying on EINTR) and close the descriptor, as slirp4netns does.
pub fn signal_ready(fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: writes one byte from a static buffer to a descriptor we own.
        let r = unsafe { libc::write(fd.as_raw_fd(), b"1".as_ptr().cast(), 1) };
        if r == 1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if r < 0 && e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return Err(e);
    }
}

/// `pidfd_open(2)`: a descriptor that becomes readable when process `pid` exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: raw syscall with plain integer arguments; the result is checked below.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    let fd = cvt(libc::c_int::try_from(ret).unwrap_or(-1))?;
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The number of open descriptors (entries of /proc/self/fd, minus the one used to list it).
pub fn count_open() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}
