//! pasta's daemon mode: detach from the caller once everything is set up.
//!
//! # Theory of operation
//!
//! A client such as podman runs the network helper and waits for it to finish: the exit status
//! of the process it started says whether set-up worked (the tap is configured, the ports are
//! bound), and the process that carries on serving must be another one. [`daemonize`]:
//! 1. `fork(2)`s;
//! 2. in the parent, writes the child's PID (`"PID\n"`) to the PID file if one was asked for, and
//!    `_exit(0)`s without running destructors or flushing anything (the child owns the state
//!    now); if the PID file cannot be written, the parent kills the child, prints
//!    `Couldn't write PID file PATH: ERR` to stderr and `_exit(1)`s;
//! 3. in the child, `setsid(2)` (no controlling terminal, no process group of the caller) and
//!    `/dev/null` over fds 0, 1 and 2, then returns. The stdio descriptors matter: podman reads
//!    the helper's stdout and stderr through a pipe until end-of-file, so a daemon that kept
//!    them open would hang `podman run` until it exits.
//!
//! `/dev/null` is opened before the fork, so that a failure to open it is reported to the caller
//! while it can still say so on stderr and exit with an error.
//!
//! [`daemonize`] must be called while the process is single-threaded (the child of a fork holds
//! only the calling thread, and continues running Rust code), and after all set-up whose
//! failure should show in the exit status. Foreground mode writes its own PID with
//! [`write_pid_file`].

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::unistd::{fork, ForkResult};

use super::cvt;

/// Write `"{pid}\n"` to `path`, created (mode 0644 before the umask) or truncated.
pub fn write_pid_file(path: &Path, pid: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(format!("{pid}\n").as_bytes())
}

/// Fork into the background: the parent writes the child's PID to `pid_file` (if any) and exits
/// with status 0 (1 if the PID file cannot be written, after killing the child); the child
/// starts a new session, puts `/dev/null` on fds 0, 1 and 2, and returns `Ok(())`.
///
/// Returns only in the child (or with an error before the fork, or when `setsid`/`dup2` fail in
/// the child). Call it single-threaded, after all set-up.
pub fn daemonize(pid_file: Option<&Path>) -> io::Result<()> {
    let devnull: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/null: {e}")))?
        .into();
    // Nothing buffered may be written twice (Rust's stdout is line-buffered; flush it now).
    let _ = io::stdout().flush();
    // SAFETY: the caller guarantees the process is single-threaded, so the child holds no lock
    // another thread owned and may run arbitrary code.
    match unsafe { fork() }.map_err(|e| io::Error::from_raw_os_error(e as i32))? {
        ForkResult::Parent { child } => {
            let code = match pid_file {
                None => 0,
                Some(path) => match write_pid_file(path, child.as_raw().unsigned_abs()) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::SIGKILL);
                        eprintln!("Couldn't write PID file {}: {e}", path.display());
                        1
                    }
                },
            };
            // SAFETY: _exit ends the process at once, which is the point: the child owns every
            // resource now and no destructor or atexit handler may run here.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {
            nix::unistd::setsid().map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            for fd in 0..=2 {
                // SAFETY: dup2 on a valid open fd (devnull) onto a standard descriptor number;
                // it closes whatever was there atomically, and no Rust object owns fds 0-2.
                cvt(unsafe { libc::dup2(devnull.as_raw_fd(), fd) })?;
            }
            Ok(())
        }
    }
}

/// Open `path` for logging (created mode 0600, appended to), to pass to [`stderr_to`] later.
pub fn open_log(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Make fd 2 a copy of `file` (pasta's `--log-file`: everything tapir logs goes there).
pub fn stderr_to(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: dup2 of a valid open descriptor onto fd 2; no Rust object owns fd 2.
    cvt(unsafe { libc::dup2(file.as_raw_fd(), 2) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn pid_file_is_written_and_truncated() {
        let dir = std::env::temp_dir().join(format!("tapir-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pid");
        std::fs::write(&path, "a much longer previous content\n").unwrap();
        write_pid_file(&path, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242\n");
        let _ = std::fs::remove_file(&path);
        write_pid_file(&path, 7).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        // 0644 less whatever the umask removes: never more than 0644.
        assert_eq!(mode & 0o777 & !0o644, 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        let e = write_pid_file(&dir.join("missing/pid"), 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Set in the re-executed test binary: the directory to report into.
    const PROBE_ENV: &str = "TAPIR_TEST_DAEMON_PROBE";

    /// The daemon side, run in a re-executed copy of this test binary: daemonize, then report
    /// the session and the stdio targets into the probe directory, after a pause that shows
    /// the parent's pipe was released before the daemon ended.
    fn probe(dir: &Path) -> ! {
        let pid_file = dir.join("pid");
        if let Err(e) = daemonize(Some(&pid_file)) {
            std::fs::write(dir.join("error"), e.to_string()).unwrap_or(());
            // SAFETY: ends this test process without running the harness any further.
            unsafe { libc::_exit(2) }
        }
        std::thread::sleep(Duration::from_millis(1500));
        let fds: Vec<String> = (0..3)
            .map(|fd| {
                std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| e.to_string())
            })
            .collect();
        let report = format!(
            "{} {} {}\n",
            std::process::id(),
            nix::unistd::getsid(None).map_or(-1, |p| p.as_raw()),
            fds.join(" ")
        );
        let _ = std::fs::write(dir.join("report.tmp"), report);
        let _ = std::fs::rename(dir.join("report.tmp"), dir.join("report"));
        // SAFETY: ends the daemon without unwinding into the test harness.
        unsafe { libc::_exit(0) }
    }

    #[test]
    fn daemonize_detaches() {
        if let Some(dir) = std::env::var_os(PROBE_ENV) {
            probe(Path::new(&dir));
        }
        let dir = std::env::temp_dir().join(format!("tapir-daemon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let start = Instant::now();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sys::daemon::tests::daemonize_detaches",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // End of file on both pipes must come with the parent's exit, not the daemon's.
        let mut out = String::new();
        let mut stderr = child.stderr.take().unwrap();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        stderr.read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        let released = start.elapsed();
        assert!(
            status.success(),
            "parent: {status}; stdout {out:?}; stderr {err:?}"
        );
        assert!(
            released < Duration::from_millis(1400),
            "stdio held for {released:?}"
        );
        let pid: i32 = std::fs::read_to_string(dir.join("pid"))
            .unwrap()
            .strip_suffix('\n')
            .unwrap()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let report = loop {
            if let Ok(r) = std::fs::read_to_string(dir.join("report")) {
                break r;
            }
            assert!(
                Instant::now() < deadline,
                "no report from the daemon: {:?}",
                std::fs::read_to_string(dir.join("error"))
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let f: Vec<&str> = report.split_whitespace().collect();
        assert_eq!(f[0], pid.to_string(), "PID file names the daemon");
        assert_eq!(f[1], pid.to_string(), "the daemon leads its own session");
        assert_eq!(&f[2..], ["/dev/null"; 3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
