//! The seccomp stage: install the syscall allowlist compiled from `sandbox/seccomp/<arch>.json`.
//!
//! # Theory of operation
//!
//! `build.rs` compiles the allowlist to a classic BPF program at build time (seccompiler), so
//! nothing is parsed at run time and the filter that runs is exactly the one reviewed in the
//! repository. The program checks the architecture first (a foreign `AUDIT_ARCH`, e.g. an x32 or
//! 32-bit call on x86_64, kills the process), then looks the syscall number up in the list; a
//! syscall that is not listed kills the whole process (`SECCOMP_RET_KILL_PROCESS`, seen by the
//! parent as death by `SIGSYS`). There is no errno fallback: an unexpected syscall is either a
//! missing rule, found by the test suite, or an exploit, which must not get a second try.
//!
//! [`install`] sets `NO_NEW_PRIVS` (required for an unprivileged filter) and installs the program
//! for every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`; tapir has one thread, and if it
//! ever has more they must not run unfiltered). A filter cannot be removed, only narrowed.
//!
//! Should: run last, immediately before the ready byte, so that everything tapir does while
//! serving is covered and nothing done during setup needs a rule.
//! Mustn't: be followed by any setup step (`pivot_root`, `setns`, `execve`, ...): the allowlist
//! has no rule for them, and the process would die.

use seccompiler::sock_filter;

/// The compiled program (`sock_filter` array, little-endian), written by `build.rs`.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_main.bpf"));
/// The socket broker's program (the `broker` filter of the same file).
const BROKER_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_broker.bpf"));

/// What `build.rs` compiled: the architecture and the allowed syscall names.
mod meta {
    include!(concat!(env!("OUT_DIR"), "/seccomp_meta.rs"));
}

pub use meta::{ARCH, BROKER_SYSCALLS, SYSCALLS};

/// Size of one BPF instruction (`struct sock_filter`).
const INSTRUCTION_BYTES: usize = 8;

/// Installing the filter failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No allowlist for this architecture was compiled in.
    #[error(
        "seccomp: tapir has no syscall allowlist for this architecture ({}); \
         see sandbox/README.md to add one, or run without --enable-seccomp",
        std::env::consts::ARCH
    )]
    Unsupported,
    /// The kernel refused the filter (or `NO_NEW_PRIVS`).
    #[error("seccomp: cannot install the filter: {0}")]
    Install(#[source] seccompiler::Error),
}

/// The BPF program, decoded from its build-time bytes.
pub fn program() -> Vec<sock_filter> {
    decode(PROGRAM)
}

fn decode(bytes: &[u8]) -> Vec<sock_filter> {
    bytes
        .chunks_exact(INSTRUCTION_BYTES)
        .map(|c| sock_filter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Install the allowlist for every thread. Returns the number of allowed syscalls.
pub fn install() -> Result<usize, Error> {
    install_program(&program())?;
    Ok(SYSCALLS.len())
}

/// Install the socket broker's allowlist (in the broker process).
pub fn install_broker() -> Result<usize, Error> {
    install_program(&decode(BROKER_PROGRAM))?;
    Ok(BROKER_SYSCALLS.len())
}

fn install_program(prog: &[sock_filter]) -> Result<(), Error> {
    if prog.is_empty() {
        return Err(Error::Unsupported);
    }
    seccompiler::apply_filter_all_threads(prog).map_err(Error::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowlist_json() -> serde_json::Value {
        let path = format!("{}/sandbox/seccomp/{ARCH}.json", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn program_is_compiled_for_this_architecture() {
        assert_eq!(ARCH, std::env::consts::ARCH);
        let prog = program();
        assert_eq!(PROGRAM.len() % INSTRUCTION_BYTES, 0);
        // Arch check, syscall load, one jump per syscall at least, two returns.
        assert!(prog.len() > SYSCALLS.len(), "{} instructions", prog.len());
        // BPF_RET|BPF_K SECCOMP_RET_KILL_PROCESS is in there (arch mismatch and default).
        assert!(prog
            .iter()
            .any(|i| i.code == 0x06 && i.k == libc::SECCOMP_RET_KILL_PROCESS));
    }

    #[test]
    fn every_rule_is_commented_and_meta_matches_the_file() {
        let v = allowlist_json();
        for (filter, meta) in [("main", SYSCALLS), ("broker", BROKER_SYSCALLS)] {
            let rules = v[filter]["filter"].as_array().unwrap();
            let mut names: Vec<&str> = Vec::new();
            for r in rules {
                let n = r["syscall"].as_str().unwrap();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            assert_eq!(names, meta, "{filter}");
            for r in rules {
                assert!(
                    r["comment"].as_str().is_some_and(|c| c.len() > 10),
                    "{r}: needs a comment naming its caller"
                );
            }
        }
    }

    #[test]
    fn the_broker_filter_is_compiled_and_small() {
        let prog = decode(BROKER_PROGRAM);
        assert!(prog.len() > BROKER_SYSCALLS.len());
        assert!(prog
            .iter()
            .any(|i| i.code == 0x06 && i.k == libc::SECCOMP_RET_KILL_PROCESS));
        // The broker needs far less than tapir: no epoll, no tap I/O, no files.
        assert!(BROKER_SYSCALLS.len() < SYSCALLS.len() / 2);
        for name in [
            "openat",
            "connect",
            "ioctl",
            "epoll_wait",
            "write",
            "kill",
            "unlink",
        ] {
            assert!(!BROKER_SYSCALLS.contains(&name), "{name}");
        }
    }

    /// (syscall, args) of every entry of `sandbox/seccomp/<arch>.json`, the `main` filter's then
    /// the `broker` filter's, comments dropped.
    fn entries(arch: &str) -> Vec<(String, serde_json::Value)> {
        let path = format!("{}/sandbox/seccomp/{arch}.json", env!("CARGO_MANIFEST_DIR"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        ["main", "broker"]
            .iter()
            .flat_map(|f| v[*f]["filter"].as_array().unwrap().clone())
            .map(|r| {
                let mut args = r["args"].clone();
                if let Some(a) = args.as_array_mut() {
                    for c in a {
                        c.as_object_mut().unwrap().remove("comment");
                    }
                }
                (r["syscall"].as_str().unwrap().to_owned(), args)
            })
            .collect()
    }

    #[test]
    fn architectures_allow_the_same_operations() {
        // aarch64 has no legacy syscalls; glibc and std use other ones there. Everything else
        // must match entry for entry (same arguments), so a rule added for one architecture is
        // not forgotten for the other.
        const AARCH64_FOR_X86_64: [(&str, &str); 1] = [("epoll_wait", "epoll_pwait")];
        // Legacy calls whose aarch64 equivalent is already an entry of its own (`unlink(path)`
        // is `unlinkat(AT_FDCWD, path, 0)` there, covered by the `unlinkat` rule).
        const X86_64_ONLY: [&str; 1] = ["unlink"];
        let x86: Vec<(String, serde_json::Value)> = entries("x86_64")
            .into_iter()
            .filter(|(n, _)| !X86_64_ONLY.contains(&n.as_str()))
            .map(|(n, a)| {
                let n = AARCH64_FOR_X86_64
                    .iter()
                    .find(|(x, _)| *x == n)
                    .map_or(n, |(_, arm)| (*arm).to_owned());
                (n, a)
            })
            .collect();
        assert_eq!(x86, entries("aarch64"));
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        // slirp4netns's denylist (seccompfilter_rules.h) plus a few more: none may appear here.
        for name in [
            "execve",
            "execveat",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "open_by_handle_at",
            "name_to_handle_at",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "keyctl",
            "add_key",
            "clone3",
            "fork",
            "vfork",
            "prctl",
            "capset",
            "setuid",
            "seccomp",
        ] {
            assert!(!SYSCALLS.contains(&name), "{name} must not be allowed");
            assert!(
                !BROKER_SYSCALLS.contains(&name),
                "{name} must not be allowed"
            );
        }
    }
}
