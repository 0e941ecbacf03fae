//! Test-only: run a unit test's body in private user, network and mount namespaces.
//!
//! # Theory of operation
//!
//! `unshare(CLONE_NEWUSER)` refuses a multi-threaded caller, and the test harness has threads.
//! So [`in_namespace`] re-executes the test binary for that one test (`--exact NAME`), and the
//! new process, before `execve`, calls `unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)` and
//! maps the caller's uid and gid to root inside (what `unshare -rn` does). The re-executed test
//! sees [`INNER_ENV`] set and runs the body; the outer test checks its exit status. Interfaces
//! configured by the body exist only in that private network namespace, and mounts only in its
//! mount namespace (copied from a less privileged user namespace, they do not propagate back).
//!
//! Where namespaces cannot be made (user namespaces disabled, seccomp in a container), the test
//! is skipped with a printed reason, and recorded in `TAPIR_TEST_SKIP_FILE` like the integration
//! tests' skips (see `tests/common/mod.rs`); under `CI=true` a skip is a failure.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Set in the re-executed test process, which runs the body.
pub const INNER_ENV: &str = "TAPIR_TEST_IN_NAMESPACE";

/// Report a test that cannot run here: a failure under CI, else `SKIP: why` on stderr and a line
/// in `$TAPIR_TEST_SKIP_FILE` (as `tests/common/mod.rs` records them).
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("prerequisite missing under CI: {why}");
    }
    eprintln!("SKIP: {why}");
    if let Some(path) = std::env::var_os("TAPIR_TEST_SKIP_FILE").filter(|p| !p.is_empty()) {
        let line = format!("lib::{test}\t{}\n", why.replace(['\n', '\t'], " "));
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
            .expect("cannot record the skip");
    }
}

/// Write `data` to `path` with raw system calls (no allocation: runs between fork and exec).
fn write_raw(path: &CString, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: path is NUL-terminated and outlives the call.
    let fd = super::cvt(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fd is open; data is a valid buffer of data.len() bytes.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    if n < 0 {
        return Err(err);
    }
    Ok(())
}

/// Run `body` in private namespaces. `test` is the test's path as libtest names it
/// (`sys::module::tests::name`); the caller must be that test. In the outer process: re-execute
/// and check, or skip. In the inner process: run `body` (its panics fail the outer test).
pub fn in_namespace(test: &str, body: impl FnOnce()) {
    if std::env::var_os(INNER_ENV).is_some() {
        body();
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return skip(test, &format!("cannot find the test binary: {e}")),
    };
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let c = |s: &str| CString::new(s).expect("constant paths");
    let (setgroups, uid_map, gid_map) = (
        c("/proc/self/setgroups"),
        c("/proc/self/uid_map"),
        c("/proc/self/gid_map"),
    );
    let (uid_line, gid_line) = (format!("0 {uid} 1"), format!("0 {gid} 1"));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, "1");
    // SAFETY: the closure runs between fork and exec and makes only raw system calls on data
    // prepared before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            super::cvt(libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS,
            ))?;
            // Absent on old kernels; needed before gid_map on newer ones.
            let _ = write_raw(&setgroups, b"deny");
            write_raw(&uid_map, uid_line.as_bytes())?;
            write_raw(&gid_map, gid_line.as_bytes())?;
            Ok(())
        });
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            return skip(
                test,
                &format!("cannot make user+network+mount namespaces: {e}"),
            )
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A skip inside (a missing tool) is reported by the inner process; pass it on.
    if let Some(line) = stderr.lines().find(|l| l.starts_with("SKIP: ")) {
        eprintln!("{line}");
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "namespace test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Run a command; its stdout, or a description of the failure.
pub fn try_run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run a command (in the test's namespaces); panic with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
