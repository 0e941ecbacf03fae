//! A long-lived child that makes TCP sockets inside the container's network namespace.
//!
//! # Theory of operation
//!
//! The spliced port-forward path (`--splice-forwards`, [`crate::proxy::splice`]) connects to the
//! guest from a socket that lives in the guest's own network namespace, over its loopback, instead
//! of through the user-mode stack. A socket belongs to the namespace of the thread that called
//! `socket(2)`, and tapir's main process cannot enter that namespace: joining the container's user
//! namespace needs a single-threaded process and cannot be undone, and host sockets must stay in
//! the caller's namespaces. So, while still single-threaded at start-up, tapir forks this broker:
//!
//! 1. the child keeps only its end of a `SOCK_SEQPACKET` pair (every other descriptor is closed,
//!    standard ones go to `/dev/null`, so it holds neither the ready fd nor the tap open), asks to
//!    be killed when tapir dies (`PR_SET_PDEATHSIG`), joins the user then the network namespace
//!    and says so with one message;
//! 2. it runs the caller's confinement (with `--enable-sandbox` every capability is dropped; with
//!    `--enable-seccomp` tapir's own allowlist is installed, a superset of the calls it needs);
//! 3. it then answers requests until tapir closes its end: a request names a local address (one
//!    message: `4` + 4 bytes or `6` + 16 bytes), the answer is a non-blocking, close-on-exec TCP
//!    socket bound to that address with port 0 (message `0` plus the descriptor over
//!    `SCM_RIGHTS`), or `1` and the errno as 4 little-endian bytes.
//!
//! Binding to the address is also the check that it is one of the namespace's own: an address
//! that is not (`EADDRNOTAVAIL`) would be routed out of the tap and back to tapir, so the caller
//! falls back to the stack path for it. Requests and answers are synchronous: one round trip
//! (two context switches, some 10-20 us) per spliced connection.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, ForkResult, Pid};

use super::netns::{recv_reply, send_reply, Prepared};

/// Largest request or answer (tag + IPv6 address).
const MAX_MESSAGE: usize = 1 + 16;

/// tapir's end of the broker.
#[derive(Debug)]
pub struct Broker {
    /// Always `Some` until `Drop`, which closes it before reaping the child.
    sock: Option<OwnedFd>,
    child: Pid,
}

/// The broker's error answer: tag 1, then the errno as 4 little-endian bytes.
fn error_message(e: nix::errno::Errno) -> [u8; 5] {
    let mut msg = [1u8; 5];
    msg[1..].copy_from_slice(&(e as i32).to_le_bytes());
    msg
}

/// The error an answer of [`error_message`] carries.
fn error_of(msg: &[u8; MAX_MESSAGE]) -> io::Error {
    io::Error::from_raw_os_error(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]))
}

impl Broker {
    /// Fork the broker into `userns` (if any) and `netns`; it runs `confine` there (drop
    /// privileges, install a filter) before serving, and a failure of `confine` is a failure to
    /// spawn. Must be called while the process is single-threaded (see [`super::netns`]).
    pub fn spawn<F>(userns: Option<&Path>, netns: &Path, confine: F) -> io::Result<Broker>
    where
        F: FnOnce() -> io::Result<()>,
    {
        let (user_file, net_file, parent_sock, child_sock) = Prepared::open(userns, netns)
            .map_err(io::Error::other)?
            .into_parts();
        let parent = nix::unistd::getpid();
        // SAFETY: callers guarantee the process is single-threaded, so the child may run ordinary
        // Rust code; it leaves only through `_exit`, never returning into the caller.
        match unsafe { fork() }.map_err(io::Error::from)? {
            ForkResult::Child => {
                drop(parent_sock);
                let code = child_main(parent, child_sock, user_file, net_file, confine);
                // SAFETY: _exit never returns; skipping atexit handlers and stdio flushing is
                // intended (the parent owns those).
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(child_sock);
                drop((user_file, net_file));
                let broker = Broker {
                    sock: Some(parent_sock),
                    child,
                };
                let mut buf = [0u8; MAX_MESSAGE];
                match recv_reply(broker.sock()?, &mut buf) {
                    Ok((1, None)) if buf[0] == 0 => Ok(broker),
                    Ok((5, None)) if buf[0] == 1 => Err(error_of(&buf)),
                    Ok(_) => Err(io::Error::other("socket broker: unexpected answer")),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    fn sock(&self) -> io::Result<BorrowedFd<'_>> {
        self.sock
            .as_ref()
            .map(AsFd::as_fd)
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// A non-blocking TCP socket in the namespace, bound to `local` (port 0).
    pub fn tcp_socket(&self, local: IpAddr) -> io::Result<OwnedFd> {
        let mut req = [0u8; MAX_MESSAGE];
        let len = match local {
            IpAddr::V4(a) => {
                req[0] = 4;
                req[1..5].copy_from_slice(&a.octets());
                5
            }
            IpAddr::V6(a) => {
                req[0] = 6;
                req[1..17].copy_from_slice(&a.octets());
                17
            }
        };
        let sock = self.sock()?;
        send_reply(sock, &req[..len], None)?;
        let mut buf = [0u8; MAX_MESSAGE];
        match recv_reply(sock, &mut buf)? {
            (1, Some(fd)) if buf[0] == 0 => Ok(fd),
            (5, None) if buf[0] == 1 => Err(error_of(&buf)),
            (0, _) => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
            _ => Err(io::Error::other("socket broker: unexpected answer")),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Closing our end ends the broker's loop; reap it if it is already gone (otherwise the
        // zombie waits for our own exit, when PR_SET_PDEATHSIG has ended it anyway).
        drop(self.sock.take());
        let _ = waitpid(self.child, Some(WaitPidFlag::WNOHANG));
    }
}

/// Report a start-up failure to the parent (tag 1 + errno).
fn fail(sock: &OwnedFd, e: nix::errno::Errno) -> i32 {
    let _ = send_reply(sock.as_fd(), &error_message(e), None);
    1
}

/// The broker: join, confine, serve.
fn child_main(
    parent: Pid,
    sock: OwnedFd,
    user_file: Option<File>,
    net_file: File,
    confine: impl FnOnce() -> io::Result<()>,
) -> i32 {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0
        || nix::unistd::getppid() != parent
    {
        return 1;
    }
    if let Err(e) = Prepared::join(user_file, net_file) {
        return fail(&sock, e);
    }
    let io_errno = |e: io::Error| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0));
    if let Err(e) = isolate_descriptors(sock.as_raw_fd()) {
        return fail(&sock, io_errno(e));
    }
    if let Err(e) = confine() {
        return fail(&sock, io_errno(e));
    }
    if send_reply(sock.as_fd(), &[0], None).is_err() {
        return 1;
    }
    serve(&sock)
}

/// Close every descriptor but `keep`; point 0, 1 and 2 at `/dev/null`.
fn isolate_descriptors(keep: i32) -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for std_fd in 0..3 {
        if std_fd != keep {
            // SAFETY: dup2 onto a standard descriptor number; `null` stays open across it.
            if unsafe { libc::dup2(null.as_raw_fd(), std_fd) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // Close 3.. except `keep` and `null` (which its own drop closes).
    let mut spare = [keep, null.as_raw_fd()];
    spare.sort_unstable();
    let mut from = 3;
    for s in spare.into_iter().chain([i32::MAX]) {
        if s > from {
            let (Ok(a), Ok(b)) = (u32::try_from(from), u32::try_from(s - 1)) else {
                continue;
            };
            // SAFETY: close_range only closes descriptors in [a, b]; nothing in this process
            // (a fresh, single-threaded fork) uses them any more.
            if unsafe { libc::syscall(libc::SYS_close_range, a, b, 0u32) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = from.max(s.saturating_add(1));
    }
    Ok(())
}

/// Answer requests until the parent closes its end.
fn serve(sock: &OwnedFd) -> i32 {
    let mut buf = [0u8; MAX_MESSAGE];
    loop {
        let n = match recv_reply(sock.as_fd(), &mut buf) {
            Ok((0, _)) => return 0,
            Ok((n, _)) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return 1,
        };
        let local = match (buf[0], n) {
            (4, 5) => IpAddr::V4(Ipv4Addr::new(buf[1], buf[2], buf[3], buf[4])),
            (6, 17) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&buf[1..17]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return 1,
        };
        let sent = match make_socket(local) {
            Ok(fd) => send_reply(sock.as_fd(), &[0], Some(fd.as_fd())),
            Err(e) => send_reply(sock.as_fd(), &error_message(e), None),
        };
        if sent.is_err() {
            return 1;
        }
    }
}

/// socket + bind(local:0), non-blocking, close-on-exec.
fn make_socket(local: IpAddr) -> nix::Result<OwnedFd> {
    let family = match local {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(local, 0)),
    )?;
    Ok(fd)
}
