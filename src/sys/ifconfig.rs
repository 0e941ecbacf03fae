//! Interface configuration ioctls for `--configure` (slirp4netns `configure_network`) and for
//! pasta's `--config-net`.
//!
//! All calls act on the network namespace of the calling thread, through an `AF_INET` datagram
//! socket (an `AF_INET6` one for the IPv6 calls), exactly as slirp4netns does (no `ip` binary,
//! no netlink dependency).
//!
//! IPv6 specifics: [`add_ipv6`] first switches duplicate address detection off for the
//! interface (`accept_dad = 0`), so the address is usable at once, as pasta's `nodad` flag does;
//! the kernel's IPv6 ioctls take an interface index (`in6_ifreq`, `in6_rtmsg`), so a link-local
//! gateway needs nothing more. IPv4 routes through a gateway outside every connected prefix (a
//! /32 address, say) need a host route to the gateway first: [`add_ipv4_onlink_route`], which
//! [`add_default_route`] adds by itself when the kernel answers `ENETUNREACH`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, ifreq_named};

/// Route metric the kernel gives IPv6 routes added without one (`IP6_RT_PRIO_USER`).
pub const IPV6_DEFAULT_METRIC: u32 = 1024;

fn control_socket() -> io::Result<OwnedFd> {
    control_socket_of(libc::AF_INET)
}

fn control_socket_of(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments.
    let fd = cvt(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket(2) just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct in6_rtmsg` (`<linux/ipv6_route.h>`), the argument of `SIOCADDRT` on an `AF_INET6`
/// socket (the libc crate's copy has private fields).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    rtmsg_type: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

fn in6_addr(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: a.octets(),
    }
}

/// The index of `name`, or `ENODEV` with a message saying what we were doing.
fn index_of(name: &str, what: &str) -> io::Result<libc::c_int> {
    super::ifindex(name)
        .and_then(|i| libc::c_int::try_from(i).ok())
        .ok_or_else(|| {
            let e = io::Error::from_raw_os_error(libc::ENODEV);
            io::Error::new(e.kind(), format!("cannot {what}: {name}: {e}"))
        })
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

/// The MTU of `name` (`SIOCGIFMTU`).
pub fn get_mtu(name: &str) -> io::Result<u32> {
    let mut ifr = ifreq_named(name);
    ioctl_ifreq(libc::SIOCGIFMTU, &mut ifr, &format!("get MTU of {name}"))?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other(format!("MTU of {name} is {mtu}")))
}

/// `SIOCADDRT` of an IPv4 route `dst/mask dev name`, through `gateway` if given.
fn add_route4(
    name: &str,
    dst: Ipv4Addr,
    mask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> io::Result<()> {
    let sock = control_socket()?;
    let mut dev = name.as_bytes().to_vec();
    dev.push(0);
    // SAFETY: rtentry is plain data (pointers may be null); all-zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(dst);
    rt.rt_genmask = sockaddr_in(mask);
    rt.rt_flags = libc::RTF_UP;
    if let Some(gw) = gateway {
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags |= libc::RTF_GATEWAY;
    }
    if mask == Ipv4Addr::BROADCAST {
        rt.rt_flags |= libc::RTF_HOST;
    }
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
}

/// Add the default route `0.0.0.0/0 via gateway dev name` (RTF_UP | RTF_GATEWAY, metric 0).
///
/// If the kernel refuses because `gateway` is in no prefix of `name` (`ENETUNREACH`, e.g. with a
/// /32 address), a host route to the gateway ([`add_ipv4_onlink_route`]) is added and the
/// default route tried again.
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let any = Ipv4Addr::UNSPECIFIED;
    let first = add_route4(name, any, any, Some(gateway));
    let result = match first {
        Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => {
            add_ipv4_onlink_route(name, gateway)?;
            add_route4(name, any, any, Some(gateway))
        }
        other => other,
    };
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot set default route: {e}")))
}

/// Add the host route `dst/32 dev name` with no gateway (scope link): makes `dst` reachable on
/// the link whatever the interface's prefixes, so it can serve as a gateway.
pub fn add_ipv4_onlink_route(name: &str, dst: Ipv4Addr) -> io::Result<()> {
    add_route4(name, dst, Ipv4Addr::BROADCAST, None).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot add route to {dst} on {name}: {e}"),
        )
    })
}

/// Switch IPv6 duplicate address detection off for `name` (`accept_dad = 0`). `Ok` if IPv6 is
/// disabled (no such sysctl).
pub fn disable_dad(name: &str) -> io::Result<()> {
    if name.contains('/') || name == "." || name == ".." || name.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    let path = format!("/proc/sys/net/ipv6/conf/{name}/accept_dad");
    match std::fs::write(&path, "0") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|e| io::Error::new(e.kind(), format!("cannot write {path}: {e}"))),
    }
}

/// Assign `addr/prefix_len` to `name` (`SIOCSIFADDR` with an `in6_ifreq`), with duplicate
/// address detection switched off first ([`disable_dad`]) so the address is usable at once.
/// The kernel adds the prefix route when the link is up.
pub fn add_ipv6(name: &str, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
    const WHAT: &str = "set IPv6 address";
    if prefix_len > 128 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot {WHAT}: prefix length {prefix_len} out of range"),
        ));
    }
    let ifindex = index_of(name, WHAT)?;
    disable_dad(name)?;
    let mut req = libc::in6_ifreq {
        ifr6_addr: in6_addr(addr),
        ifr6_prefixlen: u32::from(prefix_len),
        ifr6_ifindex: ifindex,
    };
    let sock = control_socket_of(libc::AF_INET6)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot {WHAT}: {e}")))?;
    // SAFETY: sock is a valid AF_INET6 socket; req is an initialised in6_ifreq that outlives the
    // call, and SIOCSIFADDR on an AF_INET6 socket reads exactly one in6_ifreq.
    cvt(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCSIFADDR,
            &mut req as *mut libc::in6_ifreq,
        )
    })
    .map(drop)
    .map_err(|e| io::Error::new(e.kind(), format!("cannot {WHAT} {addr}/{prefix_len}: {e}")))
}

/// Add the default route `::/0 via gateway dev name metric 1024` (`SIOCADDRT` with an
/// `in6_rtmsg`). A link-local `gateway` is resolved on `name`.
pub fn add_ipv6_default_route(name: &str, gateway: Ipv6Addr) -> io::Result<()> {
    const WHAT: &str = "set IPv6 default route";
    let ifindex = index_of(name, WHAT)?;
    let mut rt = In6Rtmsg {
        dst: in6_addr(Ipv6Addr::UNSPECIFIED),
        src: in6_addr(Ipv6Addr::UNSPECIFIED),
        gateway: in6_addr(gateway),
        rtmsg_type: 0,
        dst_len: 0,
        src_len: 0,
        metric: IPV6_DEFAULT_METRIC,
        info: 0,
        flags: (libc::RTF_UP | libc::RTF_GATEWAY).into(),
        ifindex,
    };
    let sock = control_socket_of(libc::AF_INET6)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot {WHAT}: {e}")))?;
    // SAFETY: sock is a valid AF_INET6 socket; rt is an initialised struct laid out as the
    // kernel's in6_rtmsg (repr(C), same field types), living across the call; SIOCADDRT on an
    // AF_INET6 socket reads exactly one in6_rtmsg.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT, &mut rt as *mut In6Rtmsg) })
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot {WHAT} via {gateway}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testns::{in_namespace, run};

    #[test]
    fn errors_name_the_operation() {
        let e = add_ipv6("no-such-if0", Ipv6Addr::LOCALHOST, 64).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot set IPv6 address: no-such-if0: No such device (os error 19)"
        );
        let e = add_ipv6_default_route("no-such-if0", Ipv6Addr::LOCALHOST).unwrap_err();
        assert!(e.to_string().starts_with("cannot set IPv6 default route: "));
        assert!(add_ipv6("lo", Ipv6Addr::LOCALHOST, 129).is_err());
        assert!(disable_dad("../all").is_err());
        assert!(get_mtu("no-such-if0").is_err());
    }

    #[test]
    fn tap_gets_ipv6_and_routes_in_a_namespace() {
        in_namespace(
            "sys::ifconfig::tests::tap_gets_ipv6_and_routes_in_a_namespace",
            || {
                const TEST: &str = "sys::ifconfig::tests::tap_gets_ipv6_and_routes_in_a_namespace";
                if let Err(e) = crate::sys::testns::try_run(&["ip", "-V"]) {
                    return crate::sys::testns::skip(TEST, &format!("no ip(8): {e}"));
                }
                // Held open: the tap has a carrier while the fd lives.
                let (_fd, name) = match crate::sys::tap::open("tapt0", false) {
                    Ok(t) => t,
                    Err(e) => return crate::sys::testns::skip(TEST, &format!("no tap: {e}")),
                };
                assert_eq!(name, "tapt0");
                set_mtu(&name, 65520).unwrap();
                assert_eq!(get_mtu(&name).unwrap(), 65520);
                set_up(&name).unwrap();

                add_ipv6(&name, "2001:db8:1::2".parse().unwrap(), 64).unwrap();
                let dad =
                    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/accept_dad"))
                        .unwrap();
                assert_eq!(dad.trim(), "0");
                let addrs = run(&["ip", "-6", "addr", "show", "dev", &name]);
                let line = addrs
                    .lines()
                    .find(|l| l.contains("2001:db8:1::2/64"))
                    .unwrap_or_else(|| panic!("no address:\n{addrs}"));
                assert!(!line.contains("tentative"), "{line}");
                // Link-local gateway.
                add_ipv6_default_route(&name, "fe80::1".parse().unwrap()).unwrap();
                let routes = run(&["ip", "-6", "route", "show", "default"]);
                assert!(
                    routes.contains("default via fe80::1 dev tapt0 metric 1024"),
                    "{routes}"
                );
                // A global gateway on a second tap (in the address's prefix).
                let (_fd2, n2) = crate::sys::tap::open("tapt1", false).unwrap();
                set_up(&n2).unwrap();
                add_ipv6(&n2, "2001:db8:2::2".parse().unwrap(), 64).unwrap();
                let r = run(&["ip", "-6", "route", "show", "dev", "tapt1"]);
                assert!(r.contains("2001:db8:2::/64"), "{r}");
                run(&["ip", "-6", "route", "del", "default", "dev", "tapt0"]);
                add_ipv6_default_route(&n2, "2001:db8:2::1".parse().unwrap()).unwrap();
                let routes = run(&["ip", "-6", "route", "show", "default"]);
                assert!(
                    routes.contains("default via 2001:db8:2::1 dev tapt1 metric 1024"),
                    "{routes}"
                );

                // IPv4 /32 address: the gateway is outside every prefix.
                set_ipv4(
                    &name,
                    Ipv4Addr::new(10, 0, 2, 100),
                    Ipv4Addr::new(255, 255, 255, 255),
                )
                .unwrap();
                add_default_route(&name, Ipv4Addr::new(10, 0, 2, 2)).unwrap();
                let routes = run(&["ip", "-4", "route", "show"]);
                assert!(
                    routes.contains("default via 10.0.2.2 dev tapt0"),
                    "{routes}"
                );
                assert!(routes.contains("10.0.2.2 dev tapt0 scope link"), "{routes}");
                // An explicit on-link route, and its duplicate.
                add_ipv4_onlink_route(&name, Ipv4Addr::new(10, 0, 2, 3)).unwrap();
                let e = add_ipv4_onlink_route(&name, Ipv4Addr::new(10, 0, 2, 3)).unwrap_err();
                assert!(
                    e.to_string()
                        .starts_with("cannot add route to 10.0.2.3 on tapt0: "),
                    "{e}"
                );
            },
        );
    }
}
