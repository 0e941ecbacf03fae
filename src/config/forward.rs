//! Port-forward specifications, shared by `-p/--publish` on the command line and the API socket.
//!
//! # Theory of operation
//!
//! A [`ForwardSpec`] says "listen on `host_addr:host_port` (TCP or UDP) on the host and relay
//! every connection or datagram to `guest_addr:guest_port` inside the virtual network". It is a
//! plain value: who owns the listening socket and which id it gets is decided elsewhere (the
//! forward table). Both producers build the same type:
//!
//! - `api::proto` builds it from slirp4netns's `add_hostfwd` JSON (IPv4 or IPv6 addresses);
//! - [`parse_publish`] builds it from a podman-style `-p/--publish` string:
//!
//! ```text
//! [HOST_ADDR:]HOST_PORT:[[GUEST6]:]GUEST_PORT[/tcp|/udp]
//! 8080:80                  0.0.0.0:8080  -> N+100:80   tcp
//! 127.0.0.1:8080:80/udp    127.0.0.1:8080 -> N+100:80  udp
//! [::1]:8080:80            [::1]:8080    -> N+100:80   tcp
//! [::1]:8080:[::]:80       [::1]:8080    -> [::]:80    tcp (the guest's learned IPv6 address)
//! ```
//!
//! An IPv6 address must be written in brackets (otherwise its colons would be ambiguous).
//! Without a guest address the guest is the recommended guest address N+100
//! ([`Network::guest`]), which is where `--configure`, podman and rootlesskit put the container,
//! whatever the host address's family. A bracketed IPv6 guest address (a tapir extension) sends
//! the forward to the guest over IPv6; `::` means "the guest's own address in the IPv6 prefix",
//! which tapir learns from the guest's traffic (SLAAC gives it no fixed address) when a client
//! comes; [`check_guest`] says which IPv6 guest addresses are usable. Ports are 1..=65535; port
//! ranges and "any free host port" (an empty or zero host port) are not supported, because one
//! spec is one listener.
//!
//! Invariants of every value built here: both ports are non-zero. This module is pure: it opens
//! no sockets and reads no files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{ConfigError, Network, Network6};

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: one host listener, one guest connection per accepted host connection.
    Tcp,
    /// UDP: one bound host socket, datagrams relayed per client address.
    Udp,
}

impl Proto {
    /// Lower-case name, as in slirp4netns's API and in `-p .../udp` (`tcp`, `udp`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One port forward: host `host_addr:host_port` to guest `guest_addr:guest_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ForwardSpec {
    /// TCP or UDP.
    pub proto: Proto,
    /// Host address to listen on (`0.0.0.0` when not given).
    pub host_addr: IpAddr,
    /// Host port to listen on, 1..=65535.
    pub host_port: u16,
    /// Guest address to relay to (N+100 unless the API request names another; `::`: the
    /// guest's learned IPv6 address).
    pub guest_addr: IpAddr,
    /// Guest port to relay to, 1..=65535.
    pub guest_port: u16,
}

impl ForwardSpec {
    /// The host socket address to listen on.
    pub fn host_socket(&self) -> SocketAddr {
        SocketAddr::new(self.host_addr, self.host_port)
    }

    /// The guest socket address to relay to.
    pub fn guest_socket(&self) -> SocketAddr {
        SocketAddr::new(self.guest_addr, self.guest_port)
    }
}

impl std::fmt::Display for ForwardSpec {
    /// `tcp 127.0.0.1:8080 -> 10.0.2.100:80` (IPv6 addresses in brackets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.proto.name(),
            self.host_socket(),
            self.guest_socket()
        )
    }
}

/// Whether the guest address of `spec` is usable with the IPv6 network `net6` (`None`: IPv6 is
/// off): IPv4 guests always are (the caller's network decides); an IPv6 one must be `::` (the
/// learned address) or a unicast address of the prefix that is not one of tapir's own.
pub fn check_guest(spec: &ForwardSpec, net6: Option<&Network6>) -> Result<(), &'static str> {
    let IpAddr::V6(a) = spec.guest_addr else {
        return Ok(());
    };
    let Some(n) = net6 else {
        return Err("an IPv6 guest address needs IPv6 (-6)");
    };
    if a.is_unspecified() {
        return Ok(());
    }
    if !n.contains(a) || a.is_multicast() {
        return Err("the IPv6 guest address is not in the guest's prefix");
    }
    if a == n.prefix || a == n.gateway || a == n.dns || Some(a) == n.loopback_alias {
        return Err("the IPv6 guest address is one of tapir's own");
    }
    Ok(())
}

/// `...HOST_PORT:[GUEST6]:GUEST_PORT` becomes (`...HOST_PORT:GUEST_PORT`, `Some(GUEST6)`);
/// anything else is returned unchanged with `None`.
fn split_guest6(body: &str) -> Result<(String, Option<Ipv6Addr>), String> {
    let unchanged = || Ok((body.to_owned(), None));
    let Some((front, gport)) = body.rsplit_once(':') else {
        return unchanged();
    };
    let Some((hpart, addr)) = front
        .strip_suffix(']')
        .and_then(|inner| inner.rsplit_once(":["))
    else {
        return unchanged();
    };
    let addr: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("invalid IPv6 guest address {addr:?}"))?;
    Ok((format!("{hpart}:{gport}"), Some(addr)))
}

/// Parse one `-p/--publish` value (`[HOST_ADDR:]HOST_PORT:[[GUEST6]:]GUEST_PORT[/tcp|/udp]`,
/// IPv6 addresses in brackets) for the network `net`. The guest address is `net.guest()` unless
/// an IPv6 one is given (see [`check_guest`] for which are usable).
pub fn parse_publish(s: &str, net: &Network) -> Result<ForwardSpec, ConfigError> {
    let err = |reason: String| ConfigError::Publish(s.to_owned(), reason);

    let (body, proto) = match s.rsplit_once('/') {
        None => (s, Proto::Tcp),
        Some((body, "tcp")) => (body, Proto::Tcp),
        Some((body, "udp")) => (body, Proto::Udp),
        Some((_, other)) => {
            return Err(err(format!(
                "unsupported protocol {other:?} (want tcp or udp)"
            )))
        }
    };
    let (body, guest6) = split_guest6(body).map_err(err)?;
    let body = body.as_str();

    let (host_addr, ports) = if let Some(rest) = body.strip_prefix('[') {
        let (addr, rest) = rest
            .split_once(']')
            .ok_or_else(|| err("missing ']' after the IPv6 host address".to_owned()))?;
        let addr: std::net::Ipv6Addr = addr
            .parse()
            .map_err(|_| err(format!("invalid IPv6 host address {addr:?}")))?;
        let ports = rest
            .strip_prefix(':')
            .ok_or_else(|| err("expected ':' after the bracketed host address".to_owned()))?;
        (IpAddr::V6(addr), ports)
    } else {
        let fields: Vec<&str> = body.split(':').collect();
        match fields.as_slice() {
            [_, _] => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), body),
            [addr, _, _] => {
                let ip: Ipv4Addr = addr.parse().map_err(|_| {
                    err(format!(
                        "invalid host address {addr:?} (IPv4, or IPv6 in brackets)"
                    ))
                })?;
                let ports = body.get(addr.len() + 1..).unwrap_or_default();
                (IpAddr::V4(ip), ports)
            }
            [_] => {
                return Err(err(
                    "expected HOST_PORT:GUEST_PORT (a host port is required)".to_owned(),
                ))
            }
            _ => {
                return Err(err(
                    "too many ':'-separated fields (write an IPv6 host address in brackets)"
                        .to_owned(),
                ))
            }
        }
    };

    let (host_port, guest_port) = ports
        .split_once(':')
        .ok_or_else(|| err("expected HOST_PORT:GUEST_PORT".to_owned()))?;
    let host_port = parse_port(host_port).map_err(|r| err(format!("host port: {r}")))?;
    let guest_port = parse_port(guest_port).map_err(|r| err(format!("guest port: {r}")))?;

    Ok(ForwardSpec {
        proto,
        host_addr,
        host_port,
        guest_addr: guest6.map_or(IpAddr::V4(net.guest()), IpAddr::V6),
        guest_port,
    })
}

/// A decimal port number 1..=65535 (digits only: no sign, no range).
fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("missing".to_owned());
    }
    if s.contains('-') && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(format!("port ranges are not supported ({s:?})"));
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a number"));
    }
    match s.parse::<u32>() {
        Ok(p @ 1..=65535) => u16::try_from(p).map_err(|_| format!("{s} is not in 1-65535")),
        _ => Err(format!("{s} is not in 1-65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn parse(s: &str) -> Result<ForwardSpec, ConfigError> {
        parse_publish(s, &Network::default())
    }

    fn reason(s: &str) -> String {
        match parse(s) {
            Err(ConfigError::Publish(input, reason)) => {
                assert_eq!(input, s);
                reason
            }
            other => panic!("{s}: expected a Publish error, got {other:?}"),
        }
    }

    const GUEST: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100));

    #[test]
    fn ports_only() {
        assert_eq!(
            parse("8080:80").unwrap(),
            ForwardSpec {
                proto: Proto::Tcp,
                host_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                host_port: 8080,
                guest_addr: GUEST,
                guest_port: 80,
            }
        );
        assert_eq!(parse("8080:80/tcp").unwrap(), parse("8080:80").unwrap());
    }

    #[test]
    fn ipv4_host_and_udp() {
        let f = parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(f.proto, Proto::Udp);
        assert_eq!(f.proto.name(), "udp");
        assert_eq!(f.host_addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(f.host_port, 8080);
        assert_eq!(f.guest_addr, GUEST);
        assert_eq!(f.guest_port, 80);
        assert_eq!(f.host_socket(), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(f.guest_socket(), "10.0.2.100:80".parse().unwrap());
    }

    #[test]
    fn ipv6_host_in_brackets() {
        let f = parse("[::1]:8080:80").unwrap();
        assert_eq!(f.proto, Proto::Tcp);
        assert_eq!(f.host_addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(f.host_port, 8080);
        assert_eq!(f.guest_addr, GUEST);
        assert_eq!(f.guest_port, 80);
        assert_eq!(parse("[::]:1:65535/udp").unwrap().guest_port, 65535);
    }

    #[test]
    fn ipv6_guest_in_brackets() {
        let f = parse("[::1]:8080:[::]:80").unwrap();
        assert_eq!(f.host_addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(f.host_port, 8080);
        assert_eq!(f.guest_addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(f.guest_port, 80);
        assert_eq!(f.to_string(), "tcp [::1]:8080 -> [::]:80");
        let f = parse("8080:[fd00::5]:53/udp").unwrap();
        assert_eq!(f.host_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(f.guest_addr, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(f.proto, Proto::Udp);
        let f = parse("127.0.0.1:1:[::]:2").unwrap();
        assert_eq!(f.host_addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(f.guest_addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert!(reason("8080:[10.0.2.100]:80").contains("invalid IPv6 guest address"));
        assert!(reason("8080:[x]:80").contains("invalid IPv6 guest address"));
        assert!(reason("[::1]:[::]:80").contains("HOST_PORT:GUEST_PORT"));
    }

    #[test]
    fn guest_checks() {
        let n6 = Network6::default();
        let spec = |g: &str| ForwardSpec {
            guest_addr: g.parse().unwrap(),
            ..parse("1:2").unwrap()
        };
        assert_eq!(check_guest(&spec("10.0.2.100"), None), Ok(()));
        assert_eq!(check_guest(&spec("::"), Some(&n6)), Ok(()));
        assert_eq!(
            check_guest(&spec("fd00::5054:ff:fe00:1"), Some(&n6)),
            Ok(())
        );
        assert!(check_guest(&spec("::"), None).unwrap_err().contains("-6"));
        for bad in [
            "fd00::2", "fd00::3", "fd00::", "fd01::5", "fe80::1", "::1", "ff02::1",
        ] {
            assert!(check_guest(&spec(bad), Some(&n6)).is_err(), "{bad}");
        }
        let moved = Network6::parse_prefix("fd00:1::/64").unwrap();
        assert!(check_guest(&spec("fd00:1::99"), Some(&moved)).is_ok());
        assert!(check_guest(&spec("fd00::99"), Some(&moved)).is_err());
    }

    #[test]
    fn guest_follows_cidr() {
        let net = Network::parse_cidr("10.0.135.128/25").unwrap();
        let f = parse_publish("1:2", &net).unwrap();
        assert_eq!(f.guest_addr, IpAddr::V4(Ipv4Addr::new(10, 0, 135, 228)));
    }

    #[test]
    fn errors() {
        assert_eq!(reason("0:80"), "host port: 0 is not in 1-65535");
        assert_eq!(reason("70000:80"), "host port: 70000 is not in 1-65535");
        assert_eq!(reason("80:0"), "guest port: 0 is not in 1-65535");
        assert_eq!(reason("a:b"), "host port: \"a\" is not a number");
        assert_eq!(
            reason("8080:80/sctp"),
            "unsupported protocol \"sctp\" (want tcp or udp)"
        );
        assert!(reason("1:2:3:4").starts_with("too many"));
        assert!(reason("80").contains("HOST_PORT:GUEST_PORT"));
        assert!(reason("8080-8081:80-81").contains("ranges"));
        assert!(reason("::1:8080:80").starts_with("too many"));
        assert!(reason("[::1:8080:80").contains("']'"));
        assert!(reason("[::1]8080:80").contains("':'"));
        assert!(reason("[1.2.3.4]:8080:80").contains("IPv6"));
        assert!(reason("1.2.3:8080:80").contains("host address"));
        assert!(reason(":8080:80").contains("host address"));
        assert!(reason("127.0.0.1::80").contains("host port: missing"));
        assert!(reason("+1:80").contains("not a number"));
        assert!(reason("99999999999999999999:80").contains("not in 1-65535"));
        assert!(reason("8080:80/").contains("unsupported protocol"));
        assert!(reason("").contains("HOST_PORT:GUEST_PORT"));
        assert_eq!(
            parse("0:80").unwrap_err().to_string(),
            "invalid --publish value \"0:80\": host port: 0 is not in 1-65535"
        );
    }
}
