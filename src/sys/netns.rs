//! Run code inside another user + network namespace and bring back a file descriptor.
//!
//! # Theory of operation
//!
//! A process may only join a user namespace with `setns(2)` while it is single-threaded, and it
//! cannot leave it again. tapir's main process must stay in the caller's namespaces (host sockets
//! are opened there), so, like slirp4netns, it forks a short-lived child:
//!
//! 1. the parent opens the namespace files (so a missing `/proc/PID` is reported by the parent),
//! 2. the child joins the user namespace (errors ignored: joining the namespace one is already in,
//!    or the initial one as root, fails with `EINVAL` and is harmless), then the network
//!    namespace (fatal), runs the caller's closure, and sends the resulting descriptor back over a
//!    `SOCK_SEQPACKET` socket pair with `SCM_RIGHTS` (or an error message),
//! 3. the parent reaps the child and returns the descriptor.
//!
//! Must be called while the process is single-threaded (before the event loop or any thread
//! starts): the child runs arbitrary Rust code after `fork(2)`.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

/// Largest error message the child can send back.
const MAX_CHILD_MESSAGE: usize = 1024;

fn open_ns(path: &Path) -> Result<File, String> {
    File::open(path).map_err(|e| format!("{}: {}", path.display(), strip_os_error(&e)))
}

/// The namespace files of a target, opened by the parent (so a missing `/proc/PID` is reported
/// there), and the socket pair a forked child answers on.
pub(crate) struct Prepared {
    user: Option<File>,
    net: File,
    parent: OwnedFd,
    child: OwnedFd,
}

impl Prepared {
    /// Open `userns` (if any) and `netns`, make a `SOCK_SEQPACKET` pair.
    pub fn open(userns: Option<&Path>, netns: &Path) -> Result<Prepared, String> {
        let user = userns.map(open_ns).transpose()?;
        let net = open_ns(netns)?;
        let (parent, child) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        Ok(Prepared {
            user,
            net,
            parent,
            child,
        })
    }

    /// In the child: join the user namespace (errors ignored: joining the one we are in, or the
    /// initial one as root, fails harmlessly), then the network namespace; close both files.
    pub fn join(user: Option<File>, net: File) -> nix::Result<()> {
        if let Some(u) = &user {
            let _ = setns(u.as_fd(), CloneFlags::CLONE_NEWUSER);
        }
        setns(net.as_fd(), CloneFlags::CLONE_NEWNET)
    }

    /// Split into (user file, net file, the parent's end, the child's end).
    pub fn into_parts(self) -> (Option<File>, File, OwnedFd, OwnedFd) {
        (self.user, self.net, self.parent, self.child)
    }
}

/// `io::Error`'s Display adds " (os error N)"; slirp4netns prints plain `strerror` text.
pub fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Fork a child that joins `userns` (if any) then `netns`, runs `f` there and returns the fd it
/// produced. Errors are human-readable messages (from the child or about the child).
pub fn call_in_namespaces<F>(userns: Option<&Path>, netns: &Path, f: F) -> Result<OwnedFd, String>
where
    F: FnOnce() -> Result<OwnedFd, String>,
{
    let (user_file, net_file, parent_sock, child_sock) =
        Prepared::open(userns, netns)?.into_parts();

    // SAFETY: callers guarantee the process is single-threaded (module invariant), so the child
    // may run ordinary Rust code; it leaves only through `_exit`, never returning into the caller.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(parent_sock);
            let result = (|| {
                Prepared::join(user_file, net_file)
                    .map_err(|e| format!("setns(CLONE_NEWNET): {}", e.desc()))?;
                f()
            })();
            let code = match result {
                Ok(fd) => {
                    i32::from(send_reply(child_sock.as_fd(), &[0], Some(fd.as_fd())).is_err())
                }
                Err(msg) => {
                    let mut bytes = vec![1u8];
                    bytes.extend(msg.as_bytes().iter().take(MAX_CHILD_MESSAGE - 1));
                    let _ = send_reply(child_sock.as_fd(), &bytes, None);
                    1
                }
            };
            // SAFETY: _exit is async-signal-safe and never returns; skipping atexit handlers and
            // stdio flushing is intended (the parent owns those).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_sock);
            let mut buf = [0u8; MAX_CHILD_MESSAGE];
            let received = recv_reply(parent_sock.as_fd(), &mut buf)
                .map_err(|e| format!("failed to receive tapfd from child: {e}"));
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let (n, fd) = received?;
            match (fd, buf.first()) {
                (Some(fd), Some(0)) => {
                    if !matches!(status, Ok(WaitStatus::Exited(_, 0))) {
                        return Err(format!("child failed({status:?})"));
                    }
                    Ok(fd)
                }
                (_, Some(1)) if n > 1 => Err(String::from_utf8_lossy(&buf[1..n]).into_owned()),
                _ => Err(format!("child failed({status:?})")),
            }
        }
    }
}

/// Send `bytes` and, if any, a descriptor (`SCM_RIGHTS`) as one message on a `SOCK_SEQPACKET`
/// socket.
pub(crate) fn send_reply(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> nix::Result<()> {
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// Receive one message sent by [`send_reply`]: its length in `buf` and the descriptor it
/// carried, if any (close-on-exec; extra descriptors are closed).
pub(crate) fn recv_reply(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<OwnedFd>)> {
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just installed this fd in our table; nothing else
                    // owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    fd.get_or_insert(owned);
                }
            }
        }
    }
    Ok((msg.bytes, fd))
}
