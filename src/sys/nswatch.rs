//! Tell when a network namespace *file* (a bind mount such as podman's
//! `/run/user/UID/netns/netns-ID`) is deleted, so that tapir can quit with its namespace.
//!
//! # Theory of operation
//!
//! podman tears a namespace down with `umount2(path, MNT_DETACH)` and then `unlink(path)`. The
//! unlink is an ordinary directory-entry removal, which inotify reports on the *directory* as
//! `IN_DELETE` with the entry's name. [`NetnsWatch::new`] therefore watches the file's parent
//! directory for `IN_DELETE | IN_MOVED_FROM` (a rename away counts as gone too) on a
//! non-blocking, close-on-exec inotify descriptor, which the event loop registers for
//! readability. [`NetnsWatch::gone`] reads every pending event and reports whether one named
//! our file.
//!
//! Two cases do not carry a name: queue overflow (`IN_Q_OVERFLOW`), and the watch being
//! dropped by the kernel (`IN_IGNORED`, when the directory itself is removed or its file system
//! unmounted). In those cases the file is looked up (`lstat`), and its absence counts as gone.
//!
//! A directory on procfs, sysfs or devpts (`/proc/PID/ns/net`) sends no such events: `new`
//! fails with [`io::ErrorKind::Unsupported`] and the caller watches the process (pidfd)
//! instead.
//!
//! After set-up only `read(2)` runs on the descriptor (plus `newfstatat`/`lstat` in the two
//! name-less cases above).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{cvt, cvt_size};

use nix::sys::statfs::{FsType, DEVPTS_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC};

/// File systems whose entries come and go without inotify events.
const PSEUDO_FS: [FsType; 3] = [PROC_SUPER_MAGIC, SYSFS_MAGIC, DEVPTS_SUPER_MAGIC];

/// Size of `struct inotify_event` without its name.
const EVENT_HEADER: usize = 16;

/// A watch on the deletion of one file, as an inotify descriptor for the event loop.
#[derive(Debug)]
pub struct NetnsWatch {
    fd: OwnedFd,
    path: PathBuf,
    base: Vec<u8>,
}

/// What a batch of inotify events says about our file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// An event named our file.
    named: bool,
    /// An overflow or a dropped watch: look the file up.
    recheck: bool,
}

/// Walk the `struct inotify_event` records in `buf` (as `read(2)` returned them) and report
/// what concerns the entry `base`. Truncated records end the walk.
fn scan(buf: &[u8], base: &[u8]) -> Seen {
    let mut seen = Seen::default();
    let mut rest = buf;
    while rest.len() >= EVENT_HEADER {
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&rest[i..i + 4]);
            u32::from_ne_bytes(b)
        };
        let mask = word(4);
        let Ok(len) = usize::try_from(word(12)) else {
            break;
        };
        let Some(name) = rest.get(EVENT_HEADER..EVENT_HEADER + len) else {
            break;
        };
        // The name is NUL-padded to an alignment boundary.
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let name = &name[..end];
        if mask & (libc::IN_Q_OVERFLOW | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0 {
            seen.recheck = true;
        }
        if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 && name == base {
            seen.named = true;
        }
        rest = &rest[EVENT_HEADER + len..];
    }
    seen
}

impl NetnsWatch {
    /// Watch for the deletion (or renaming away) of `path`, which should exist. Fails with
    /// `Unsupported` if its directory is on procfs, sysfs or devpts, and with `InvalidInput` for
    /// a path without a file name.
    pub fn new(path: &Path) -> io::Result<NetnsWatch> {
        let base = path
            .file_name()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: no file name to watch", path.display()),
                )
            })?
            .as_bytes()
            .to_vec();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let fs = nix::sys::statfs::statfs(dir).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("statfs {}: {e}", dir.display()),
            )
        })?;
        if PSEUDO_FS.contains(&fs.filesystem_type()) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{} is on a pseudo file system: no inotify events",
                    dir.display()
                ),
            ));
        }
        let cdir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        // SAFETY: plain inotify_init1(2) with constant flags.
        let raw = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })
            .map_err(|e| io::Error::new(e.kind(), format!("inotify_init1: {e}")))?;
        // SAFETY: inotify_init1 just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: fd is a valid inotify fd and cdir a NUL-terminated path living across the call.
        cvt(unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                cdir.as_ptr(),
                libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_ONLYDIR,
            )
        })
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("inotify_add_watch {}: {e}", dir.display()),
            )
        })?;
        Ok(NetnsWatch {
            fd,
            path: path.to_owned(),
            base,
        })
    }

    /// The watched file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read every pending event; `true` if our file was deleted or renamed away (or, after an
    /// overflow or a dropped watch, no longer exists). `false` when nothing is pending.
    pub fn gone(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        let mut seen = Seen::default();
        loop {
            // SAFETY: fd is a valid inotify fd and buf a writable buffer of buf.len() bytes.
            let r = cvt_size(unsafe {
                libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            });
            match r {
                Ok(0) => break,
                Ok(n) => {
                    let s = scan(&buf[..n], &self.base);
                    seen.named |= s.named;
                    seen.recheck |= s.recheck;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if seen.named {
            return Ok(true);
        }
        if seen.recheck {
            return match std::fs::symlink_metadata(&self.path) {
                Ok(_) => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
                Err(e) => Err(e),
            };
        }
        Ok(false)
    }
}

impl AsFd for NetnsWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetnsWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapir-nswatch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn deletion_is_seen() {
        let d = tempdir("del");
        let ns = d.join("netns-1");
        std::fs::write(&ns, "").unwrap();
        std::fs::write(d.join("other"), "").unwrap();
        std::fs::write(d.join("netns-10"), "").unwrap();
        let mut w = NetnsWatch::new(&ns).unwrap();
        assert!(!w.gone().unwrap(), "nothing pending yet");
        std::fs::remove_file(d.join("other")).unwrap();
        std::fs::remove_file(d.join("netns-10")).unwrap();
        std::fs::write(d.join("new"), "").unwrap();
        assert!(!w.gone().unwrap(), "unrelated files");
        std::fs::remove_file(&ns).unwrap();
        assert!(w.gone().unwrap());
        assert!(!w.gone().unwrap(), "events are drained");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rename_away_is_seen_and_fd_is_nonblocking_cloexec() {
        let d = tempdir("mv");
        let ns = d.join("ns");
        std::fs::write(&ns, "").unwrap();
        let mut w = NetnsWatch::new(&ns).unwrap();
        // SAFETY: F_GETFL/F_GETFD on a valid fd.
        let (fl, fdfl) = unsafe {
            (
                libc::fcntl(w.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(w.as_raw_fd(), libc::F_GETFD),
            )
        };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
        std::fs::rename(&ns, d.join("ns.old")).unwrap();
        assert!(w.gone().unwrap());
        assert_eq!(w.path(), ns.as_path());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn removed_directory_counts_as_gone() {
        let d = tempdir("rmdir");
        let sub = d.join("netns");
        std::fs::create_dir(&sub).unwrap();
        let ns = sub.join("x");
        std::fs::write(&ns, "").unwrap();
        let mut w = NetnsWatch::new(&ns).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        assert!(w.gone().unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn procfs_is_unsupported() {
        let e = NetnsWatch::new(Path::new("/proc/self/ns/net")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let e = NetnsWatch::new(Path::new("/")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn scan_handles_names_padding_and_truncation() {
        let rec = |mask: u32, name: &[u8]| {
            let mut v = Vec::new();
            v.extend_from_slice(&1i32.to_ne_bytes());
            v.extend_from_slice(&mask.to_ne_bytes());
            v.extend_from_slice(&0u32.to_ne_bytes());
            let padded = (name.len() + 1).div_ceil(16) * 16;
            v.extend_from_slice(&(padded as u32).to_ne_bytes());
            v.extend_from_slice(name);
            v.resize(v.len() + padded - name.len(), 0);
            v
        };
        let mut buf = rec(libc::IN_DELETE, b"nsA");
        buf.extend(rec(libc::IN_DELETE, b"ns"));
        assert_eq!(
            scan(&buf, b"ns"),
            Seen {
                named: true,
                recheck: false
            }
        );
        assert_eq!(scan(&buf[..buf.len() - 1], b"ns"), Seen::default());
        assert!(scan(&rec(libc::IN_Q_OVERFLOW, b""), b"ns").recheck);
        // A length beyond the buffer ends the walk without panicking.
        let mut bad = rec(libc::IN_DELETE, b"ns");
        bad[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(scan(&bad, b"ns"), Seen::default());
    }

    /// podman's teardown of a namespace file: `umount2(MNT_DETACH)` and `unlink`, in private
    /// namespaces.
    #[test]
    fn detached_bind_mount_then_unlink_is_seen() {
        crate::sys::testns::in_namespace(
            "sys::nswatch::tests::detached_bind_mount_then_unlink_is_seen",
            || {
                use nix::mount::{mount, umount2, MntFlags, MsFlags};
                let d = tempdir("bind");
                let ns = d.join("netns-abc");
                std::fs::write(&ns, "").unwrap();
                mount(
                    Some("/proc/self/ns/net"),
                    &ns,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .expect("bind mount");
                // What tapir holds while it runs.
                let held = std::fs::File::open(&ns).unwrap();
                let mut w = NetnsWatch::new(&ns).unwrap();
                umount2(&ns, MntFlags::MNT_DETACH).unwrap();
                assert!(!w.gone().unwrap(), "unmounting alone is not deletion");
                std::fs::remove_file(&ns).unwrap();
                assert!(w.gone().unwrap());
                drop(held);
                std::fs::remove_dir_all(&d).unwrap();
            },
        );
    }
}
