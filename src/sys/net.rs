//! Host sockets for proxied flows.
//!
//! std's socket types do everything tapir needs once a socket exists (non-blocking reads and
//! writes, `take_error`, `shutdown`, `send_to`/`recv_from`), so this module only creates sockets
//! the way std cannot (non-blocking `connect`, bound before connecting, ICMP "ping" sockets) and
//! reaches the few options std lacks (`SO_LINGER` to reset, `IP_RECVERR` and the error queue, the
//! fd limit, interface addresses).

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket,
};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

fn socket(family: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) with integer arguments; the result is checked.
    let fd =
        cvt(unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `sockaddr_storage` holding `addr`, and its length.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, libc::socklen_t::try_from(len).unwrap_or(0))
}

fn family_of(ip: IpAddr) -> libc::c_int {
    match ip {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = to_sockaddr(addr);
    // SAFETY: ss/len describe a valid sockaddr of the socket's family.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    })
    .map(drop)
}

fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: value lives across the call and len is its size.
    cvt(unsafe { libc::setsockopt(fd, level, name, (&value as *const libc::c_int).cast(), len) })
        .map(drop)
}

/// Start a non-blocking TCP connection to `dst`, optionally from `source` (port chosen by the
/// kernel). Completion is reported by writability plus `take_error()`.
pub fn tcp_connect(dst: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let fd = socket(family_of(dst.ip()), libc::SOCK_STREAM, 0)?;
    setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(src) = source {
        bind(&fd, SocketAddr::new(src, 0))?;
    }
    let (ss, len) = to_sockaddr(dst);
    // SAFETY: ss/len describe a valid sockaddr of the socket's family.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(fd))
}

/// A non-blocking listening TCP socket on `addr` with `SO_REUSEADDR` (as slirp4netns's
/// forwards), so a forward can be re-added while old connections linger in TIME-WAIT.
pub fn tcp_listen(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let fd = socket(family_of(addr.ip()), libc::SOCK_STREAM, 0)?;
    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if addr.is_ipv6() {
        // An IPv6 forward serves IPv6 only; IPv4 clients use an IPv4 forward.
        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    bind(&fd, addr)?;
    // SAFETY: listen(2) on a socket we own, with an integer backlog.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(std::net::TcpListener::from(fd))
}

/// A non-blocking UDP socket bound to `addr` for a port forward. With `v6only`, an IPv6 socket
/// serves IPv6 only (so that an IPv4 forward on the same port can sit beside it); without it,
/// `[::]` takes IPv4 clients too, as the host's `net.ipv6.bindv6only` allows.
pub fn udp_bind(addr: SocketAddr, v6only: bool) -> io::Result<UdpSocket> {
    let fd = socket(family_of(addr.ip()), libc::SOCK_DGRAM, 0)?;
    if addr.is_ipv6() && v6only {
        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    bind(&fd, addr)?;
    Ok(UdpSocket::from(fd))
}

/// Make the next `close` of `s` send RST instead of FIN (`SO_LINGER` with a zero timeout).
pub fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let len = libc::socklen_t::try_from(size_of::<libc::linger>()).unwrap_or(8);
    // SAFETY: l lives across the call and len is its size.
    cvt(unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            len,
        )
    })
    .map(drop)
}

/// A non-blocking UDP socket of `family_v6`'s family, bound to `source` (or any) with an
/// ephemeral port, with `IP_RECVERR`/`IPV6_RECVERR` on so ICMP errors can be relayed.
pub fn udp_socket(v6: bool, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let fd = socket(family, libc::SOCK_DGRAM, 0)?;
    let any = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    bind(&fd, SocketAddr::new(source.unwrap_or(any), 0))?;
    if v6 {
        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)?;
    } else {
        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVERR, 1)?;
    }
    Ok(UdpSocket::from(fd))
}

/// An unprivileged ICMP echo ("ping") socket (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`). Needs the
/// caller's group in `net.ipv4.ping_group_range`; otherwise fails with `EACCES`.
pub fn icmp_socket(v6: bool, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let (family, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    let fd = socket(family, libc::SOCK_DGRAM, proto)?;
    if let Some(src) = source {
        bind(&fd, SocketAddr::new(src, 0))?;
    }
    Ok(UdpSocket::from(fd))
}

/// An ICMP error queued on a socket (from `IP_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// The errno the kernel derived (e.g. `ECONNREFUSED` for port unreachable).
    pub errno: i32,
    /// Who reported it: `SO_EE_ORIGIN_LOCAL` (this host, e.g. a datagram larger than the known
    /// path MTU), `SO_EE_ORIGIN_ICMP` or `SO_EE_ORIGIN_ICMP6` (a message from the network).
    pub origin: u8,
    /// ICMP type as received (0 for local errors).
    pub icmp_type: u8,
    /// ICMP code.
    pub icmp_code: u8,
    /// `ee_info`: the path MTU for "packet too big" / "fragmentation needed" and local
    /// `EMSGSIZE` errors.
    pub info: u32,
    /// The address that sent the ICMP message (`SO_EE_OFFENDER`), if the kernel names one.
    pub offender: Option<IpAddr>,
    /// Destination of the datagram that caused the error.
    pub dst: Option<SocketAddr>,
}

/// The path-MTU discovery mode of a UDP socket: may the kernel fragment our datagrams
/// (`IP_PMTUDISC_WANT`, the default), or must a datagram larger than the path MTU fail with
/// `EMSGSIZE` and an error queued with the MTU (`IP_PMTUDISC_DO`, the "don't fragment" bit)?
/// `IPV6_MTU_DISCOVER` takes the same values.
pub fn set_dont_fragment(s: &UdpSocket, v6: bool, dont: bool) -> io::Result<()> {
    let mode = if dont {
        libc::IP_PMTUDISC_DO
    } else {
        libc::IP_PMTUDISC_WANT
    };
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
    };
    setsockopt_int(s.as_raw_fd(), level, name, mode)
}

/// The TTL (hop limit) of a UDP socket's datagrams: `Some(n)`, or the system default.
pub fn set_hop_limit(s: &UdpSocket, v6: bool, hops: Option<u8>) -> io::Result<()> {
    let value = hops.map_or(-1, libc::c_int::from); // -1: back to the sysctl default
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    setsockopt_int(s.as_raw_fd(), level, name, value)
}

fn from_sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Read one entry of the socket's error queue (`MSG_ERRQUEUE`). `Ok(None)` when it is empty.
pub fn recv_error(s: &UdpSocket) -> io::Result<Option<IcmpError>> {
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // u64 alignment suffices for cmsghdr; room for one sock_extended_err plus an address.
    let mut control = [0u64; 64];
    let mut name = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    // SAFETY: msghdr is plain data; all-zero is a valid starting value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr().cast();
    msg.msg_namelen = libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in msg refers to a live local buffer of the stated size.
    let r = unsafe {
        libc::recvmsg(
            s.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: recvmsg filled msg_name with msg_namelen bytes (zeroed beforehand).
    let dst = from_sockaddr(unsafe { name.assume_init_ref() });
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control buffer recvmsg filled, bounded by
    // msg_controllen; CMSG_DATA points inside it, and the lengths read are checked against
    // cmsg_len before anything past the sock_extended_err is read.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (level == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let data = libc::CMSG_DATA(c);
                let header = data.offset_from(c.cast::<u8>());
                let len = usize::try_from(header)
                    .ok()
                    .and_then(|h| (*c).cmsg_len.checked_sub(h))
                    .unwrap_or(0);
                if len < size_of::<libc::sock_extended_err>() {
                    break;
                }
                let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                // SO_EE_OFFENDER: a sockaddr right after the sock_extended_err.
                let rest = std::slice::from_raw_parts(
                    data.add(size_of::<libc::sock_extended_err>()),
                    len - size_of::<libc::sock_extended_err>(),
                );
                return Ok(Some(IcmpError {
                    errno: i32::try_from(ee.ee_errno).unwrap_or(0),
                    origin: ee.ee_origin,
                    icmp_type: ee.ee_type,
                    icmp_code: ee.ee_code,
                    info: ee.ee_info,
                    offender: offender(rest),
                    dst,
                }));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(IcmpError {
        errno: 0,
        origin: 0,
        icmp_type: 0,
        icmp_code: 0,
        info: 0,
        offender: None,
        dst,
    }))
}

/// The address in `SO_EE_OFFENDER` bytes (a `sockaddr_in` or `sockaddr_in6`; `AF_UNSPEC` and
/// short buffers give `None`).
fn offender(bytes: &[u8]) -> Option<IpAddr> {
    let family = bytes.get(..2)?;
    let len = match libc::c_int::from(u16::from_ne_bytes([family[0], family[1]])) {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
        _ => return None,
    };
    let src = bytes.get(..len)?;
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `len` bytes fit in sockaddr_storage and `src` holds exactly `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            src.as_ptr(),
            (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    from_sockaddr(&ss).map(|a| a.ip())
}

/// Whether `ip` is an address of this host (in tapir's network namespace): loopback, or one a
/// socket can bind to (binding to any other fails with EADDRNOTAVAIL). Costs a socket, so it
/// is for rare checks, not every packet.
pub fn is_local_addr(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out-parameter.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: rl is a valid in-parameter.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) })?;
    }
    Ok(rl.rlim_cur)
}

/// First address of the given family on interface `name` (`getifaddrs`), for
/// `--outbound-addr=IFNAME`.
pub fn interface_addr(name: &str, v6: bool) -> io::Result<Option<IpAddr>> {
    let mut found = None;
    each_ifaddr(|n, ip| {
        if found.is_none() && n == name.as_bytes() && ip.is_ipv6() == v6 {
            found = Some(ip);
        }
    })?;
    Ok(found)
}

/// Every IPv4 and IPv6 address of this network namespace's interfaces (`getifaddrs`), for the
/// egress policy's `--deny-private`.
pub fn host_addrs() -> io::Result<Vec<IpAddr>> {
    let mut all = Vec::new();
    each_ifaddr(|_, ip| {
        if !all.contains(&ip) {
            all.push(ip);
        }
    })?;
    Ok(all)
}

/// Call `f(interface name, address)` for every IPv4 and IPv6 address `getifaddrs` lists.
fn each_ifaddr(mut f: impl FnMut(&[u8], IpAddr)) -> io::Result<()> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: head is a valid out-parameter; the list is freed below.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr points at a sockaddr whose family field is always readable.
        let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        let len = match family {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
            _ => continue,
        };
        // SAFETY: copy as many bytes as the family's sockaddr has into zeroed storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: ifa_addr points at a sockaddr of `family`, which is `len` bytes long.
        unsafe {
            std::ptr::copy_nonoverlapping(
                ifa.ifa_addr.cast::<u8>(),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                len,
            )
        };
        if let Some(a) = from_sockaddr(&ss) {
            f(n.to_bytes(), a.ip());
        }
    }
    // SAFETY: head came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(())
}

/// Whether this network namespace has an interface called `name` (`if_nametoindex`).
pub fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip() {
        for a in ["127.0.0.1:80", "[::1]:8080", "[fe80::1%3]:53"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, _) = to_sockaddr(a);
            assert_eq!(from_sockaddr(&ss), Some(a));
        }
    }

    #[test]
    fn loopback_interface_has_an_address() {
        // Every network namespace has lo with 127.0.0.1 once it is up; if it is down this is
        // None, which is also a valid answer. Only check it does not fail.
        assert!(interface_addr("lo", false).is_ok());
        assert_eq!(interface_addr("no-such-if0", false).unwrap(), None);
    }

    #[test]
    fn udp_socket_binds_ephemeral() {
        let s = udp_socket(false, Some(IpAddr::V4(Ipv4Addr::LOCALHOST))).unwrap();
        let local = s.local_addr().unwrap();
        assert_eq!(local.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(local.port(), 0);
        assert_eq!(recv_error(&s).unwrap(), None);
        set_dont_fragment(&s, false, true).unwrap();
        set_dont_fragment(&s, false, false).unwrap();
        set_hop_limit(&s, false, Some(1)).unwrap();
        set_hop_limit(&s, false, None).unwrap();
    }

    #[test]
    fn offender_addresses() {
        for a in ["192.0.2.9:0", "[2001:db8::9]:0"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, len) = to_sockaddr(a);
            // SAFETY: ss is plain data at least `len` bytes long.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&ss as *const libc::sockaddr_storage).cast::<u8>(),
                    usize::try_from(len).unwrap(),
                )
            };
            assert_eq!(offender(bytes), Some(a.ip()));
            assert_eq!(offender(&bytes[..bytes.len() - 1]), None, "short");
        }
        assert_eq!(offender(&[0; 16]), None, "AF_UNSPEC");
        assert_eq!(offender(&[]), None);
    }
}
