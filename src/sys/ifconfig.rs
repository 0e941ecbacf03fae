//! Interface configuration ioctls for `--configure` (slirp4netns `configure_network`).
//!
//! All calls act on the network namespace of the calling thread, through an `AF_INET` datagram
//! socket, exactly as slirp4netns does (no `ip` binary, no netlink dependency).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, ifreq_named};

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket(2) just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl_ifreq(req: libc::c_ulong, ifr: &mut libc::ifreq, what: &str) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: sock is a valid socket; ifr is an initialised ifreq living across the call; these
    // SIOC* requests read/write only within the ifreq.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), req, ifr as *mut libc::ifreq) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot {what}: {e}")))
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and sockaddr is plain data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Set `IFF_UP | IFF_RUNNING` on `name` (other flags are left as the kernel keeps them).
pub fn set_up(name: &str) -> io::Result<()> {
    let mut ifr = ifreq_named(name);
    ioctl_ifreq(
        libc::SIOCGIFFLAGS,
        &mut ifr,
        &format!("get flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl_ifreq(libc::SIOCSIFFLAGS, &mut ifr, &format!("set {name} up"))
}

/// Set the MTU of `name`.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
    ioctl_ifreq(libc::SIOCSIFMTU, &mut ifr, "set MTU")
}

/// Set the transmit queue length of `name` (frames the kernel queues towards us).
pub fn set_txqueuelen(name: &str, len: u32) -> io::Result<()> {
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_metric = libc::c_int::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "txqueuelen out of range"))?;
    ioctl_ifreq(libc::SIOCSIFTXQLEN, &mut ifr, "set txqueuelen")
}

/// Set the Ethernet address of `name`.
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq_named(name);
    // SAFETY: sockaddr is plain data; all-zero is valid.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in sa.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_hwaddr = sa;
    ioctl_ifreq(libc::SIOCSIFHWADDR, &mut ifr, "set MAC address")
}

/// Assign `addr` with `netmask` to `name` (the kernel derives the broadcast and connected route).
pub fn set_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl_ifreq(libc::SIOCSIFADDR, &mut ifr, "set IP address")?;
    let mut ifr = ifreq_named(name);
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    ioctl_ifreq(libc::SIOCSIFNETMASK, &mut ifr, "set netmask")
}

/// Add the default route `0.0.0.0/0 via gateway dev name` (RTF_UP | RTF_GATEWAY, metric 0).
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let sock = control_socket()?;
    let mut dev = name.as_bytes().to_vec();
    dev.push(0);
    // SAFETY: rtentry is plain data (pointers may be null); all-zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_mut_ptr().cast();
    // SAFETY: sock is valid; rt is initialised and rt_dev points at a NUL-terminated buffer that
    // outlives the call.
    cvt(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCADDRT,
            &mut rt as *mut libc::rtentry,
        )
    })
    .map(drop)
    .map_err(|e| io::Error::new(e.kind(), format!("cannot set default route: {e}")))
}
