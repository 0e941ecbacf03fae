//! The API socket server (`--api-socket`), slirp4netns-compatible.
//!
//! # Theory of operation
//!
//! A Unix stream socket at the given path (an existing file there is removed first, as
//! slirp4netns does). Every connection carries one request and gets one reply ([`proto`]):
//!
//! 1. accept, non-blocking; the connection gets its own buffer and a deadline
//!    ([`REQUEST_TIMEOUT_MS`]);
//! 2. read whatever arrives; after each read, if the bytes hold one complete JSON value (or the
//!    client shut down its writing side, or [`proto::MAX_REQUEST`] bytes arrived) the request is
//!    answered. So a request split over several writes works (slirp4netns parses only the first
//!    read), and a client that never shuts down works too (slirp4netns's behaviour);
//! 3. the reply is written in one `write` (podman reads once), then the connection is closed.
//!
//! Nothing here blocks: a slow or idle client occupies only its slot, never the data path or
//! other clients. Slots are bounded ([`MAX_CONNECTIONS`]); when they are all taken, the oldest
//! connection is dropped to make room, so a flood of idle clients cannot lock out a real one.
//! A client that sends nothing before its deadline is closed without a reply.
//!
//! Two tapir extensions keep a connection longer ([`flows`], [`outbox`]): a reply larger than
//! the socket buffer (`list_flows`) is written as the client reads it, within the request
//! deadline; a `watch_flows` subscriber gets `{"return":{}}` and then one JSON event per line
//! ([`Server::publish`]) until it closes or shuts down its writing side. Each subscriber's
//! unsent events are bounded ([`WATCH_BACKLOG`]): one that does not read is dropped, its
//! events discarded, so subscribers never slow the data path. At most [`MAX_WATCHERS`] exist.
//!
//! The server calls only the [`ForwardTable`] (to add, list, remove forwards) and reads the
//! flow table and counters it is handed; it never touches the data plane. The socket file is removed when the server is dropped (clean exit, including
//! SIGTERM), unlike slirp4netns, which leaves it behind on a signal.

pub mod flows;
pub mod outbox;
pub mod policy;
pub mod proto;

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry};

use crate::config::forward::{check_guest, ForwardSpec};
use crate::config::Network6;
use crate::forward::{AddError, ForwardTable};
use crate::nat::journal::Event;
use outbox::Outbox;
use proto::{ApiError, Request};

/// First mio token value used for API connections (the listener has its own runtime token).
pub const CONN_TOKEN_BASE: usize = 1 << 16;
/// Concurrent API connections. podman and rootlesskit use one at a time; 64 leaves room for
/// parallel tooling while bounding memory (each slot holds at most 4 KiB).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long to wait before accepting again after accept() failed for want of descriptors or
/// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the listener's edge was spent, so without a retry
/// a client already in the backlog would wait for the next client to arrive.
pub const ACCEPT_RETRY_MS: u64 = 250;
/// `watch_flows` subscribers at once. Each costs a connection slot and up to
/// [`WATCH_BACKLOG`] bytes; a handful of dashboards or `tapir ctl --watch` sessions is the use.
pub const MAX_WATCHERS: usize = 8;
/// Unsent event bytes one subscriber may have (beyond what its socket buffer holds, about
/// 200 KiB on Linux) before it is dropped: about a thousand events, enough to ride out a burst
/// while the client is scheduled, small enough that a client that never reads costs little.
pub const WATCH_BACKLOG: usize = 256 * 1024;
/// Unsent reply bytes all connections together may hold; a `list_flows` that would pass it is
/// answered `too busy`. A full table renders to under 2 MiB, so several clients fit.
pub const MAX_PENDING_OUTPUT: usize = 16 * 1024 * 1024;

/// Whether an accept() error means "out of descriptors or memory": worth retrying later.
pub fn accept_starved(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Token of connection slot `i`.
pub fn conn_token(i: usize) -> mio::Token {
    mio::Token(CONN_TOKEN_BASE + i)
}

/// Slot of a connection token.
pub fn token_conn(t: mio::Token) -> Option<usize> {
    t.0.checked_sub(CONN_TOKEN_BASE)
        .filter(|i| *i < MAX_CONNECTIONS)
}

/// Errors setting up the API socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// bind/listen failed (slirp4netns prints `api_bindlisten: bind: ...`).
    #[error("api_bindlisten: {op}: {err}")]
    Bind {
        /// Which call failed.
        op: &'static str,
        /// The error.
        err: io::Error,
    },
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline_ms: u64,
    opened_ms: u64,
    /// Output still to write (a reply being written, or a subscriber's events).
    out: Option<Outbox>,
    /// A `watch_flows` subscriber with this filter.
    watch: Option<flows::Filter>,
}

/// What the server needs from the rest of tapir to answer requests.
pub struct Handler<'a> {
    /// The forwards.
    pub forwards: &'a mut ForwardTable,
    /// Registry for new forward listeners.
    pub registry: &'a Registry,
    /// Default guest address (N+100).
    pub default_guest: Ipv4Addr,
    /// The IPv6 network when IPv6 is on (`-6`), for IPv6 guest addresses.
    pub net6: Option<Network6>,
    /// Counters for `get_info` (called only for that request).
    pub info: &'a dyn Fn() -> serde_json::Value,
    /// Forwards removed by this request (the caller drops their UDP sessions).
    pub removed: Vec<u64>,
    /// The flow table, for `list_flows`.
    pub table: &'a crate::nat::Table,
    /// Runtime clock, milliseconds (flow ages).
    pub now_ms: u64,
    /// Statistics for `get_stats` (called only for that request; the API's own counters are
    /// filled in here).
    pub stats: &'a dyn Fn() -> crate::stats::Stats,
    /// The egress policy (for `add_policy`, `list_policy`, `remove_policy`).
    pub policy: &'a mut crate::policy::Policy,
    /// Set when a policy change asked for `kill_matching` (the caller closes the flows).
    pub kill_denied: bool,
}

/// The API server.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// The socket's directory, opened `O_PATH` at bind time, so the socket file can still be
    /// removed at exit after `--enable-sandbox` has hidden the path from this process.
    dir: Option<std::fs::File>,
    conns: Vec<Option<Conn>>,
    requests: u64,
    /// When to accept again after running out of descriptors.
    accept_retry_ms: Option<u64>,
    /// The earliest connection deadline or accept retry ([`Server::on_timer`] is due then).
    due_ms: Option<u64>,
}

impl Server {
    /// Bind and listen at `path` (removing a stale file first), register under `token`.
    pub fn bind(path: &Path, registry: &Registry, token: mio::Token) -> Result<Server, Error> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot remove stale {}: {e}", path.display()),
        }
        let listener = UnixListener::bind(path).map_err(|err| Error::Bind { op: "bind", err })?;
        listener
            .set_nonblocking(true)
            .map_err(|err| Error::Bind { op: "listen", err })?;
        registry
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                token,
                Interest::READABLE,
            )
            .map_err(|err| Error::Bind { op: "listen", err })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(parent)
            .map_err(|e| debug!("api: cannot open {}: {e}", parent.display()))
            .ok();
        Ok(Server {
            listener,
            path: path.to_owned(),
            dir,
            conns: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            requests: 0,
            accept_retry_ms: None,
            due_ms: None,
        })
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The listener is readable: accept every pending connection.
    pub fn on_listener(&mut self, registry: &Registry, now_ms: u64) {
        self.accept_retry_ms = None;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, registry, now_ms),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("api: accept: {e}");
                    if accept_starved(&e) {
                        let at = now_ms + ACCEPT_RETRY_MS;
                        self.accept_retry_ms = Some(at);
                        self.due_ms = Some(self.due_ms.map_or(at, |t| t.min(at)));
                    }
                    return;
                }
            }
        }
    }

    /// When [`Server::on_timer`] must run next, if ever: the earliest request deadline or
    /// accept retry. O(1), for the event loop's every turn.
    pub fn due(&self) -> Option<u64> {
        self.due_ms
    }

    fn admit(&mut self, stream: UnixStream, registry: &Registry, now_ms: u64) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // Evict the oldest connection: idle clients cannot lock out a real one.
                let oldest = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.as_ref().map(|c| (c.opened_ms, i)))
                    .min()
                    .map(|(_, i)| i)
                    .unwrap_or(0);
                debug!("api: all {MAX_CONNECTIONS} slots busy; dropping the oldest connection");
                self.conns[oldest] = None;
                oldest
            }
        };
        if registry
            .register(
                &mut SourceFd(&stream.as_raw_fd()),
                conn_token(slot),
                Interest::READABLE,
            )
            .is_err()
        {
            return;
        }
        let deadline_ms = now_ms + REQUEST_TIMEOUT_MS;
        self.conns[slot] = Some(Conn {
            stream,
            buf: Vec::new(),
            deadline_ms,
            opened_ms: now_ms,
            out: None,
            watch: None,
        });
        self.due_ms = Some(self.due_ms.map_or(deadline_ms, |t| t.min(deadline_ms)));
    }

    /// `watch_flows` subscribers connected.
    pub fn watchers(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.watch.is_some())
            .count()
    }

    fn pending_output(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.out.as_ref())
            .map(Outbox::pending)
            .sum()
    }

    /// Give flow events (and the number the journal lost) to every subscriber whose filter
    /// they pass. A subscriber whose backlog would pass [`WATCH_BACKLOG`], or whose socket
    /// fails, is dropped. Never blocks.
    pub fn publish(&mut self, events: &[Event], lost: u64, now_ms: u64) {
        for c in self.conns.iter_mut() {
            let Some(conn) = c.as_mut() else { continue };
            let (Some(filter), Some(out)) = (conn.watch.as_ref(), conn.out.as_mut()) else {
                continue;
            };
            let mut fits = lost == 0 || out.push(flows::render_lost(lost).as_bytes());
            for ev in events {
                if !fits {
                    break;
                }
                if let Some(line) = flows::render_event(ev, filter, now_ms) {
                    fits = out.push(line.as_bytes());
                }
            }
            if !fits {
                debug!("api: a flow watcher does not keep up; dropping it");
                *c = None;
                continue;
            }
            if let Err(e) = out.flush(&mut conn.stream) {
                debug!("api: watcher write: {e}");
                *c = None;
            }
        }
    }

    /// A connection with output in progress had an event: write more, read (and ignore) what
    /// the client sends. A reply finished is closed; a subscriber that shut down its writing
    /// side or failed is dropped.
    fn on_stream(&mut self, slot: usize) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let mut gone = false;
        let mut scratch = [0u8; 512];
        loop {
            match conn.stream.read(&mut scratch) {
                Ok(0) => {
                    gone = conn.watch.is_some();
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        let done = match conn.out.as_mut().map(|o| o.flush(&mut conn.stream)) {
            Some(Ok(all)) => all && conn.watch.is_none(),
            Some(Err(e)) => {
                debug!("api: write: {e}");
                true
            }
            None => true,
        };
        if gone || done {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            self.conns[slot] = None;
        }
    }

    /// Connection `slot` had an event: read, and answer once the request is complete.
    pub fn on_conn(&mut self, slot: usize, h: &mut Handler<'_>) {
        if self
            .conns
            .get(slot)
            .is_some_and(|c| c.as_ref().is_some_and(|c| c.out.is_some()))
        {
            return self.on_stream(slot);
        }
        let watchers = self.watchers();
        let pending = self.pending_output();
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let mut eof = false;
        let mut chunk = [0u8; proto::MAX_REQUEST];
        loop {
            let room = proto::MAX_REQUEST - conn.buf.len();
            if room == 0 {
                break;
            }
            match conn.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("api: read: {e}");
                    self.conns[slot] = None;
                    return;
                }
            }
        }
        let full = conn.buf.len() >= proto::MAX_REQUEST;
        if !(eof || full || complete_json(&conn.buf)) {
            return; // wait for more
        }
        let (mut reply, mut watch) = if full {
            debug!(
                "api_handler: too large message (>= {} bytes)",
                proto::MAX_REQUEST
            );
            (proto::render_error(&ApiError::TooLarge), None)
        } else {
            debug!(
                "api_handler: got request: {}",
                String::from_utf8_lossy(&conn.buf)
            );
            answer(&conn.buf, h, self.requests, watchers)
        };
        self.requests += 1;
        if watch.is_some() && watchers >= MAX_WATCHERS
            || watch.is_none() && pending + reply.len() > MAX_PENDING_OUTPUT
        {
            (reply, watch) = (proto::render_error(&ApiError::Busy), None);
        }
        // A short reply goes in one write (podman reads once); a longer one, or a subscription,
        // keeps the connection until written, watching for room to write.
        let mut out = Outbox::new(match watch {
            Some(_) => WATCH_BACKLOG.max(reply.len()),
            None => reply.len(),
        });
        out.push(reply.as_bytes());
        match out.flush(&mut conn.stream) {
            Ok(true) if watch.is_none() => {}
            Ok(_) => {
                let rereg = h.registry.reregister(
                    &mut SourceFd(&conn.stream.as_raw_fd()),
                    conn_token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if rereg.is_ok() {
                    conn.out = Some(out);
                    if watch.is_some() {
                        conn.deadline_ms = u64::MAX;
                        conn.watch = watch;
                    } else {
                        conn.deadline_ms = h.now_ms + REQUEST_TIMEOUT_MS;
                        self.due_ms = Some(
                            self.due_ms
                                .map_or(conn.deadline_ms, |t| t.min(conn.deadline_ms)),
                        );
                    }
                    return;
                }
            }
            Err(e) => debug!("api: write: {e}"),
        }
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        self.conns[slot] = None;
    }

    /// Close connections past their deadline, and accept again if a retry is due. Returns when
    /// this is due next (also [`Server::due`]).
    pub fn on_timer(&mut self, registry: &Registry, now_ms: u64) -> Option<u64> {
        if self.accept_retry_ms.is_some_and(|t| t <= now_ms) {
            self.on_listener(registry, now_ms);
        }
        for c in self.conns.iter_mut() {
            if c.as_ref().is_some_and(|c| c.deadline_ms <= now_ms) {
                debug!("api: client sent no complete request or read no reply in time; closing");
                *c = None;
            }
        }
        let conns = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.deadline_ms)
            .filter(|&t| t != u64::MAX)
            .min();
        self.due_ms = match (conns, self.accept_retry_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.due_ms
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Through the directory fd (works inside the sandbox), else by path.
        let removed = match (&self.dir, self.path.file_name()) {
            (Some(dir), Some(name)) => {
                nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir).is_ok()
            }
            _ => false,
        };
        if !removed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `buf` starts with one complete JSON value (after which anything may follow).
fn complete_json(buf: &[u8]) -> bool {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde::de::IgnoredAny>();
    match it.next() {
        Some(Ok(_)) => true,
        Some(Err(e)) => !e.is_eof(),
        None => false,
    }
}

/// Whether the guest address of an `add_hostfwd` cannot be used (IPv6 without `-6`, outside the
/// prefix, ...); logs why, since the reply can only say `bad arguments.guest_addr`.
fn unusable_guest(spec: &ForwardSpec, net6: Option<&Network6>) -> bool {
    match check_guest(spec, net6) {
        Ok(()) => false,
        Err(why) => {
            warn!("add_hostfwd: {spec}: {why}");
            true
        }
    }
}

/// Perform one request: the reply, and for `watch_flows` the subscriber's filter.
fn answer(
    bytes: &[u8],
    h: &mut Handler<'_>,
    requests: u64,
    watchers: usize,
) -> (String, Option<flows::Filter>) {
    let req = match proto::parse_request(bytes, h.default_guest) {
        Ok(Request::WatchFlows(f)) => return (r#"{"return":{}}"#.to_owned() + "\n", Some(f)),
        Ok(r) => r,
        Err(e) => return (proto::render_error(&e), None),
    };
    let reply = match req {
        Request::AddHostfwd(spec) if unusable_guest(&spec, h.net6.as_ref()) => {
            proto::render_error(&ApiError::BadGuestAddr)
        }
        Request::AddHostfwd(spec) => match h.forwards.add(spec, h.registry) {
            Ok(id) => {
                info!("forward {id}: {spec}");
                proto::render_added(id)
            }
            Err(e @ (AddError::Bind { .. } | AddError::Full)) => {
                warn!("add_hostfwd: {e}");
                proto::render_error(&ApiError::AddFailed)
            }
        },
        Request::ListHostfwd => proto::render_list(&h.forwards.list()),
        Request::RemoveHostfwd(id) => match h.forwards.remove(id) {
            Some(_) => {
                h.removed.push(id);
                info!("forward {id} removed");
                proto::render_removed()
            }
            None => proto::render_error(&ApiError::RemoveBadId),
        },
        Request::AddPolicy {
            rule,
            position,
            kill_matching,
        } => match h.policy.insert(rule, position) {
            Ok(id) => {
                info!("egress rule {id}: {rule}");
                h.kill_denied = kill_matching;
                proto::render_added(id)
            }
            Err(crate::policy::PolicyError::Full) => proto::render_error(&ApiError::PolicyFull),
            Err(_) => proto::render_error(&ApiError::BadPosition),
        },
        Request::ListPolicy => proto::render_info(&policy::list(h.policy)),
        Request::RemovePolicy { id, kill_matching } => match h.policy.remove(id) {
            Ok(rule) => {
                info!("egress rule {id} removed: {rule}");
                h.kill_denied = kill_matching;
                proto::render_removed()
            }
            Err(_) => proto::render_error(&ApiError::RemovePolicyBadId),
        },
        Request::GetInfo => {
            let mut v = (h.info)();
            v["forwards"] = serde_json::json!(h.forwards.len());
            v["api_requests"] = serde_json::json!(requests);
            v["policy_denied"] = serde_json::json!(h.policy.denied());
            proto::render_info(&v)
        }
        Request::ListFlows(f) => flows::render_list(h.table, &f, h.now_ms),
        Request::GetStats => {
            let mut s = (h.stats)();
            s.api_requests = requests;
            s.watchers = watchers as u64;
            proto::render_info(&serde_json::to_value(&s).unwrap_or_default())
        }
        Request::WatchFlows(_) => proto::render_error(&ApiError::UnknownExecute),
    };
    (reply, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness() {
        assert!(!complete_json(b""));
        assert!(!complete_json(b"  "));
        assert!(!complete_json(b"{\"execute\":"));
        assert!(complete_json(b"{\"execute\":\"list_hostfwd\"}"));
        assert!(complete_json(b"{\"execute\":\"list_hostfwd\"}\n"));
        assert!(complete_json(b"{}{}"));
        assert!(complete_json(b"[1,2]"));
        assert!(
            complete_json(b"}garbage"),
            "invalid JSON is answered at once"
        );
    }

    #[test]
    fn tokens() {
        assert_eq!(token_conn(conn_token(5)), Some(5));
        assert_eq!(token_conn(mio::Token(1)), None);
        assert_eq!(token_conn(conn_token(MAX_CONNECTIONS)), None);
    }
}
