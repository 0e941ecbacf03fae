//! Tap devices: open `/dev/net/tun`, attach with `TUNSETIFF`, switch on offloads, move frames.
//!
//! The device is opened with `IFF_TAP | IFF_NO_PI` (plain Ethernet frames, no packet-information
//! header), non-blocking and close-on-exec. `TUNSETIFF` creates the tap if it does not exist or
//! attaches to an existing persistent one (rootlesskit pre-creates `tap0` with `ip tuntap add`).
//!
//! With offloads, the tap is opened with `IFF_VNET_HDR` as well: every frame in either direction
//! is preceded by a `struct virtio_net_hdr` (see [`crate::device::vnet`]), which lets us hand
//! the guest one 64 KiB TCP super-segment with a partial checksum instead of 45 checksummed
//! 1460-byte frames, and, after [`set_offload`] with `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`,
//! makes the guest's kernel send us its TCP super-segments unsegmented. Frames move with
//! `readv`/`writev` so the header and the frame never have to be copied together.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{cvt, cvt_size, ifreq_name, ifreq_named};

/// Path of the tun/tap clone device.
pub const TUN_PATH: &str = "/dev/net/tun";

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNGETIFF` = `_IOR('T', 210, unsigned int)`.
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
/// `TUNSETOFFLOAD` = `_IOW('T', 208, unsigned int)`.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUNGETVNETHDRSZ` = `_IOR('T', 215, int)`.
const TUNGETVNETHDRSZ: libc::c_ulong = 0x8004_54d7;
/// `IFF_VNET_HDR`: frames carry a `virtio_net_hdr`.
pub const IFF_VNET_HDR: libc::c_int = 0x4000;

/// `TUN_F_CSUM`: we accept frames whose L4 checksum is partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
pub const TUN_F_CSUM: libc::c_uint = 0x01;
/// `TUN_F_TSO4`: we accept unsegmented IPv4 TCP super-segments.
pub const TUN_F_TSO4: libc::c_uint = 0x02;
/// `TUN_F_TSO6`: we accept unsegmented IPv6 TCP super-segments.
pub const TUN_F_TSO6: libc::c_uint = 0x04;

/// Open `/dev/net/tun` and attach to (or create) the tap `name`, with `virtio_net_hdr`s on every
/// frame if `vnet_hdr`. Returns the fd and the name the kernel actually used.
pub fn open(name: &str, vnet_hdr: bool) -> io::Result<(OwnedFd, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(|e| io::Error::new(e.kind(), format!("open(\"{TUN_PATH}\"): {e}")))?;
    let fd: OwnedFd = file.into();
    let mut ifr = ifreq_named(name);
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
    if vnet_hdr {
        flags |= IFF_VNET_HDR;
    }
    // The flags are small positive constants (at most 0x4000); they fit a c_short.
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: fd is a valid open tun fd; ifr is a properly initialised ifreq that outlives the call;
    // TUNSETIFF reads and writes only within the ifreq.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr as *mut libc::ifreq) })
        .map_err(|e| io::Error::new(e.kind(), format!("ioctl(TUNSETIFF): {e}")))?;
    Ok((fd, ifreq_name(&ifr)))
}

/// The `IFF_*` flags of the device `fd` is attached to (`TUNGETIFF`): `IFF_TAP` or `IFF_TUN`,
/// `IFF_NO_PI`, `IFF_VNET_HDR`, ... Fails with `ENOTTY` (or `EINVAL`) for anything that is not a
/// `/dev/net/tun` descriptor, and with `EBADFD` for one not attached to a device yet.
pub fn flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid fd; TUNGETIFF writes only within the ifreq, which outlives the call.
    // On a descriptor of another kind (we may be handed anything) pipes, regular files and
    // sockets fail with ENOTTY without touching memory, and a driver that did answer this
    // request number would write at most the 4 bytes the number encodes, well within the ifreq.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut ifr as *mut libc::ifreq) })?;
    // SAFETY: TUNGETIFF filled ifru_flags (the union member it defines).
    Ok(libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }))
}

/// The `virtio_net_hdr` length frames on `fd` carry: 0 without `IFF_VNET_HDR` (for a tap fd
/// someone else opened, `--netns-type=tapfd`), else what `TUNGETVNETHDRSZ` says (10 unless the
/// opener changed it).
pub fn vnet_hdr_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let flags = flags(fd)?;
    if flags & IFF_VNET_HDR == 0 {
        return Ok(0);
    }
    let mut len: libc::c_int = 0;
    // SAFETY: fd is a valid tun fd; TUNGETVNETHDRSZ writes one int to the pointer, which is valid.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            TUNGETVNETHDRSZ,
            &mut len as *mut libc::c_int,
        )
    })?;
    usize::try_from(len).map_err(|_| io::ErrorKind::InvalidData.into())
}

/// Tell the kernel which offloads we accept on frames it gives us (`TUN_F_*`). This also sets
/// the tap's features in the guest (`ethtool -k`), so the guest's TCP stops segmenting and
/// checksumming for us.
pub fn set_offload(fd: BorrowedFd<'_>, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: fd is a valid tun fd; TUNSETOFFLOAD takes its argument by value.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("ioctl(TUNSETOFFLOAD): {e}")))
}

/// Read one frame into the spare capacity of `buf` (which is cleared first) and its
/// `virtio_net_hdr` into `hdr` (pass an empty `hdr` for a tap without one). Returns the bytes
/// the read returned (0 only at end of file); the frame is `buf` (empty for a read no longer
/// than the header).
pub fn read_frame(fd: BorrowedFd<'_>, hdr: &mut [u8], buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let cap = buf.capacity();
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: cap,
        },
    ];
    let n = if hdr.is_empty() {
        // SAFETY: the pointer and length describe `buf`'s allocated spare capacity, which the
        // kernel may write; we only expose the bytes it reports as written (set_len below).
        cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), cap) })?
    } else {
        // SAFETY: both iovecs describe writable memory we own for the call's duration (`hdr`
        // and `buf`'s spare capacity); only the reported bytes are exposed (set_len below).
        cvt_size(unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) })?
    };
    let len = n.saturating_sub(hdr.len()).min(cap);
    // SAFETY: the read initialised the `len` <= cap bytes after the header at the start of the
    // buffer.
    unsafe { buf.set_len(len) };
    Ok(n)
}

/// Write one whole frame, preceded by `hdr` (empty for a tap without `virtio_net_hdr`s). A tap
/// write is atomic: it either takes the frame or fails.
pub fn write_frame(fd: BorrowedFd<'_>, hdr: &[u8], frame: &[u8]) -> io::Result<usize> {
    if hdr.is_empty() {
        // SAFETY: the pointer and length describe a valid initialised slice for the call's duration.
        return cvt_size(unsafe {
            libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len())
        });
    }
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs describe initialised memory that outlives the call; writev only reads it.
    cvt_size(unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) })
}
