//! Port forwards: host listeners whose connections and datagrams are relayed into the guest.
//!
//! # Theory of operation
//!
//! [`ForwardTable`] is the only mutable control-plane state. Its writers are the command line
//! (`-p/--publish`, at start) and the API socket (`add_hostfwd`, `remove_hostfwd`). Each forward
//! owns one host socket, bound in tapir's own (host) network namespace: a listening TCP socket or
//! a bound UDP socket. Ids start at 1 and are never reused, like slirp4netns's.
//!
//! The runtime registers each socket under [`forward_token`]; on readiness it accepts
//! connections or receives datagrams and hands them to the proxies, which open the guest side
//! (a smoltcp connection, or a UDP frame) from the client's own address: loopback clients appear
//! as the gateway, every other client keeps its address (spec §2).
//!
//! Removing a forward closes its listener; connections already accepted live on. This module
//! never touches smoltcp.
//!
//! Forwards opened by `auto` port forwarding ([`auto`]) come and go with the namespace's
//! listeners; they take fixed ids from [`AUTO_ID_BASE`] up ([`auto_id`]), one per protocol and
//! port, so that they never use up the ids the command line and the API draw from.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry};

use crate::config::forward::{ForwardSpec, Proto};

pub mod auto;

/// First mio token value used for forward listeners.
pub const FORWARD_TOKEN_BASE: usize = 1 << 18;
/// Most forwards at once: each holds one host socket; far above what podman or rootlesskit
/// publish for one container, and it bounds what API clients can make tapir hold.
pub const MAX_FORWARDS: usize = 1024;
/// Accept backlog of TCP forward listeners (slirp4netns uses 1, which drops bursts of clients).
pub const LISTEN_BACKLOG: i32 = 128;

/// Largest forward id. Ids are never reused (as in slirp4netns), and each maps to its own mio
/// token below the flows' token range, so after this many adds in one process further adds fail.
pub const MAX_FORWARD_ID: u64 = (1 << 18) - 1;

/// First id of the auto forwards ([`auto_id`]); ids below it are drawn in order by
/// [`ForwardTable::add`]. One id per protocol and port fits exactly below [`MAX_FORWARD_ID`].
pub const AUTO_ID_BASE: u64 = 1 << 17;

/// The fixed id of the auto forward of `proto` port `port`.
pub fn auto_id(proto: Proto, port: u16) -> u64 {
    let proto_base = match proto {
        Proto::Tcp => 0,
        Proto::Udp => 1 << 16,
    };
    AUTO_ID_BASE + proto_base + u64::from(port)
}

/// The mio token of forward `id`.
pub fn forward_token(id: u64) -> Option<mio::Token> {
    (1..=MAX_FORWARD_ID)
        .contains(&id)
        .then(|| usize::try_from(id).ok())
        .flatten()
        .map(|i| mio::Token(FORWARD_TOKEN_BASE + i))
}

/// The forward id of a mio token, if it is a forward token.
pub fn token_forward(t: mio::Token) -> Option<u64> {
    let i = u64::try_from(t.0.checked_sub(FORWARD_TOKEN_BASE)?).ok()?;
    (1..=MAX_FORWARD_ID).contains(&i).then_some(i)
}

/// The host socket of a forward.
#[derive(Debug)]
pub enum Listener {
    /// TCP: accept connections.
    Tcp(TcpListener),
    /// UDP: one socket receiving from every client and sending the guest's replies.
    Udp(UdpSocket),
}

/// One forward.
#[derive(Debug)]
pub struct Forward {
    /// What it forwards.
    pub spec: ForwardSpec,
    /// Its host socket.
    pub listener: Listener,
}

/// Why a forward could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Binding or listening failed (address in use, permission for a low port...).
    #[error("cannot listen on {addr}: {err}")]
    Bind {
        /// The host address.
        addr: SocketAddr,
        /// The error.
        err: io::Error,
    },
    /// [`MAX_FORWARDS`] reached.
    #[error("too many forwards (limit {MAX_FORWARDS})")]
    Full,
}

/// All forwards.
#[derive(Debug, Default)]
pub struct ForwardTable {
    next_id: u64,
    entries: BTreeMap<u64, Forward>,
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = crate::sys::net::tcp_listen(addr, LISTEN_BACKLOG)?;
    Ok(l)
}

fn bind_udp(addr: SocketAddr, v6only: bool) -> io::Result<UdpSocket> {
    let s = crate::sys::net::udp_bind(addr, v6only)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl ForwardTable {
    /// An empty table; the first id is 1.
    pub fn new() -> Self {
        ForwardTable {
            next_id: 1,
            entries: BTreeMap::new(),
        }
    }

    /// Open the host socket for `spec`, register it, and return the new id (ids run up to
    /// [`AUTO_ID_BASE`] - 1; the ids above are the auto forwards').
    pub fn add(&mut self, spec: ForwardSpec, registry: &Registry) -> Result<u64, AddError> {
        if self.entries.len() >= MAX_FORWARDS || self.next_id >= AUTO_ID_BASE {
            return Err(AddError::Full);
        }
        let addr = spec.host_socket();
        let bind_err = |err| AddError::Bind { addr, err };
        let listener = match spec.proto {
            Proto::Tcp => Listener::Tcp(bind_tcp(addr).map_err(bind_err)?),
            Proto::Udp => Listener::Udp(bind_udp(addr, true).map_err(bind_err)?),
        };
        let id = self.next_id;
        self.insert(id, spec, listener, registry)?;
        self.next_id += 1;
        Ok(id)
    }

    /// Open the auto forward `spec` under its id [`auto_id`] (an open one stays as it is).
    /// Unlike [`ForwardTable::add`], an unspecified IPv6 host address listens dual-stack (as
    /// the host's `net.ipv6.bindv6only` allows, 0 by default), like pasta's `*`.
    pub fn add_auto(&mut self, spec: ForwardSpec, registry: &Registry) -> Result<u64, AddError> {
        let id = auto_id(spec.proto, spec.host_port);
        if self.entries.contains_key(&id) {
            return Ok(id);
        }
        if self.entries.len() >= MAX_FORWARDS {
            return Err(AddError::Full);
        }
        let addr = spec.host_socket();
        let bind_err = |err| AddError::Bind { addr, err };
        let listener = match spec.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(addr).map_err(bind_err)?;
                l.set_nonblocking(true).map_err(bind_err)?;
                Listener::Tcp(l)
            }
            Proto::Udp => Listener::Udp(bind_udp(addr, false).map_err(bind_err)?),
        };
        self.insert(id, spec, listener, registry)?;
        Ok(id)
    }

    /// Register `listener` under `id`'s token and keep it.
    fn insert(
        &mut self,
        id: u64,
        spec: ForwardSpec,
        listener: Listener,
        registry: &Registry,
    ) -> Result<(), AddError> {
        let addr = spec.host_socket();
        let bind_err = |err| AddError::Bind { addr, err };
        let token = forward_token(id).ok_or(AddError::Full)?;
        let fd = match &listener {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Udp(s) => s.as_raw_fd(),
        };
        registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(bind_err)?;
        self.entries.insert(id, Forward { spec, listener });
        Ok(())
    }

    /// Close forward `id`. Returns its spec, or `None` if there is no such forward.
    pub fn remove(&mut self, id: u64) -> Option<ForwardSpec> {
        self.entries.remove(&id).map(|f| f.spec)
    }

    /// A forward by id.
    pub fn get(&self, id: u64) -> Option<&Forward> {
        self.entries.get(&id)
    }

    /// All forwards, by id.
    pub fn list(&self) -> Vec<(u64, ForwardSpec)> {
        self.entries.iter().map(|(id, f)| (*id, f.spec)).collect()
    }

    /// Number of forwards.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(proto: Proto, port: u16) -> ForwardSpec {
        ForwardSpec {
            proto,
            host_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            guest_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)),
            guest_port: 80,
        }
    }

    #[test]
    fn ids_start_at_one_and_are_never_reused() {
        let poll = mio::Poll::new().unwrap();
        let mut t = ForwardTable::new();
        // Port 0: the kernel picks a free port, so the test needs no fixed port.
        let a = t.add(spec(Proto::Tcp, 0), poll.registry()).unwrap();
        let b = t.add(spec(Proto::Udp, 0), poll.registry()).unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none());
        let c = t.add(spec(Proto::Tcp, 0), poll.registry()).unwrap();
        assert_eq!(c, 3);
        assert_eq!(t.list().iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn duplicate_port_fails() {
        let poll = mio::Poll::new().unwrap();
        let mut t = ForwardTable::new();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let err = t.add(spec(Proto::Tcp, port), poll.registry()).unwrap_err();
        assert!(matches!(err, AddError::Bind { .. }));
        assert!(t.is_empty());
    }

    #[test]
    fn auto_ids_are_fixed_and_apart() {
        assert_eq!(auto_id(Proto::Tcp, 0), AUTO_ID_BASE);
        assert_eq!(auto_id(Proto::Udp, u16::MAX), MAX_FORWARD_ID);
        assert!(forward_token(auto_id(Proto::Udp, u16::MAX)).is_some());
        let poll = mio::Poll::new().unwrap();
        let mut t = ForwardTable::new();
        let mut s = spec(Proto::Tcp, 0);
        s.host_addr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = t.add_auto(s, poll.registry()).unwrap();
        assert_eq!(a, auto_id(Proto::Tcp, 0));
        assert_eq!(t.add_auto(s, poll.registry()).unwrap(), a, "already open");
        assert!(t.remove(a).is_some());
        assert_eq!(
            t.add_auto(s, poll.registry()).unwrap(),
            a,
            "the same id again"
        );
        // The ids drawn in order are unaffected.
        assert_eq!(t.add(spec(Proto::Udp, 0), poll.registry()).unwrap(), 1);
    }

    #[test]
    fn tokens_roundtrip() {
        for id in [1u64, 2, 999] {
            assert_eq!(token_forward(forward_token(id).unwrap()), Some(id));
        }
        assert_eq!(token_forward(mio::Token(3)), None);
        // Disjoint from the flows' tokens.
        assert_eq!(token_forward(crate::proxy::flow_token(0)), None);
        assert_eq!(token_forward(crate::proxy::flow_token(5)), None);
        assert!(forward_token(MAX_FORWARD_ID + 1).is_none());
    }
}
