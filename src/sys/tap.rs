//! Tap devices: open `/dev/net/tun`, attach with `TUNSETIFF`, move frames.
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI` (plain Ethernet frames, no packet-information
//! header), non-blocking and close-on-exec. `TUNSETIFF` creates the tap if it does not exist or
//! attaches to an existing persistent one (rootlesskit pre-creates `tap0` with `ip tuntap add`).

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{cvt, cvt_size, ifreq_name, ifreq_named};

/// Path of the tun/tap clone device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Open `/dev/net/tun` and attach to (or create) the tap `name`. Returns the fd and the name the
/// kernel actually used.
pub fn open(name: &str) -> io::Result<(OwnedFd, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| io::Error::new(e.kind(), format!("open(\"{TUN_PATH}\"): {e}")))?;
    let fd: OwnedFd = file.into();
    let mut ifr = ifreq_named(name);
    // IFF_TAP and IFF_NO_PI are small positive flags; they fit a c_short.
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: fd is a valid open tun fd; ifr is a properly initialised ifreq that outlives the call;
    // TUNSETIFF reads and writes only within the ifreq.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr as *mut libc::ifreq) })
        .map_err(|e| io::Error::new(e.kind(), format!("ioctl(TUNSETIFF): {e}")))?;
    Ok((fd, ifreq_name(&ifr)))
}

/// Read one frame into the spare capacity of `buf` (which is cleared first). Returns the length.
pub fn read_frame(fd: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let cap = buf.capacity();
    // SAFETY: the pointer and length describe `buf`'s allocated spare capacity, which the kernel
    // may write; we only expose the bytes it reports as written (set_len below).
    let n = cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), cap) })?;
    // SAFETY: read(2) initialised exactly n <= cap bytes at the start of the buffer.
    unsafe { buf.set_len(n.min(cap)) };
    Ok(n)
}

/// Write one whole frame. A tap write is atomic: it either takes the frame or fails.
pub fn write_frame(fd: BorrowedFd<'_>, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a valid initialised slice for the call's duration.
    cvt_size(unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) })
}
