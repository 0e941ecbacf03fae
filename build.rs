//! Build script: compiles the seccomp allowlist `sandbox/seccomp/<arch>.json` to BPF.
//!
//! # Theory of operation
//!
//! The allowlist is data, reviewed like code: one rule per syscall, each with a `comment` naming
//! the code that needs it (see `sandbox/README.md`). This script
//!
//! 1. picks the file for the *target* architecture (`CARGO_CFG_TARGET_ARCH`, so cross builds
//!    get the right syscall numbers);
//! 2. checks the house rules seccompiler does not: exactly the filters `main` (tapir) and
//!    `broker` (the socket broker of `--splice-forwards`), each with default
//!    action `kill_process`; every rule has a non-empty comment; a syscall appears more than
//!    once only as alternative argument filters;
//! 3. compiles it with seccompiler (which also rejects syscall names unknown for that
//!    architecture) and writes `OUT_DIR/seccomp_<filter>.bpf` (the `sock_filter` array, 8 bytes
//!    per instruction, little-endian) and `OUT_DIR/seccomp_meta.rs` (architecture, syscall names),
//!    which `src/isolation/seccomp.rs` includes.
//!
//! Architectures without a file get an empty program; `--enable-seccomp` then fails at run time
//! with a message instead of running unfiltered.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Architectures with an allowlist in `sandbox/seccomp/`.
const SUPPORTED: [&str; 2] = ["x86_64", "aarch64"];

fn fail(msg: String) -> ! {
    panic!("sandbox/seccomp: {msg}");
}

/// The filters every file holds: tapir's own thread, and the socket broker process of
/// `--splice-forwards` (`src/sys/nsbroker.rs`).
const FILTERS: [&str; 2] = ["main", "broker"];

/// Check the house rules; return the syscall names of each filter (in [`FILTERS`] order), each
/// in file order.
fn validate(path: &Path, text: &str) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(text)
        .unwrap_or_else(|e| fail(format!("{}: invalid JSON: {e}", path.display())));
    let obj = v
        .as_object()
        .unwrap_or_else(|| fail(format!("{}: top level must be an object", path.display())));
    let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = FILTERS.to_vec();
    expected.sort_unstable();
    if names != expected {
        fail(format!(
            "{}: exactly the filters {FILTERS:?} are expected (one per process kind; tapir is \
             single-threaded); found {names:?}",
            path.display()
        ));
    }
    FILTERS
        .iter()
        .map(|f| validate_filter(path, f, &obj[*f]))
        .collect()
}

/// The house rules for one filter; its syscall names in file order.
fn validate_filter(path: &Path, name: &str, filter: &serde_json::Value) -> Vec<String> {
    let path = PathBuf::from(format!("{} ({name})", path.display()));
    let path = path.as_path();
    if filter["mismatch_action"] != "kill_process" {
        fail(format!(
            "{}: mismatch_action must be \"kill_process\"",
            path.display()
        ));
    }
    if filter["match_action"] != "allow" {
        fail(format!(
            "{}: match_action must be \"allow\"",
            path.display()
        ));
    }
    let rules = filter["filter"]
        .as_array()
        .unwrap_or_else(|| fail(format!("{}: filter must be an array", path.display())));
    // Several entries for one syscall are alternatives (OR), each with its own argument filter;
    // an entry without arguments would make the others pointless.
    let mut unfiltered = BTreeSet::new();
    let mut order: Vec<String> = Vec::new();
    for r in rules {
        let name = r["syscall"]
            .as_str()
            .unwrap_or_else(|| fail(format!("{}: a rule has no \"syscall\"", path.display())));
        let comment = r["comment"].as_str().unwrap_or("").trim();
        if comment.is_empty() {
            fail(format!(
                "{}: rule for {name} needs a \"comment\" naming the code that calls it",
                path.display()
            ));
        }
        let has_args = r["args"].as_array().is_some_and(|a| !a.is_empty());
        let listed = order.iter().any(|n| n == name);
        if listed && (!has_args || unfiltered.contains(name)) {
            fail(format!(
                "{}: {name} is listed twice; only entries with argument filters may repeat a \
                 syscall (they are alternatives)",
                path.display()
            ));
        }
        if !has_args {
            unfiltered.insert(name.to_owned());
        }
        if !listed {
            order.push(name.to_owned());
        }
    }
    order
}

/// Validate and compile one file; return each filter's program bytes and syscall names, in
/// [`FILTERS`] order.
fn compile(path: &Path, arch: &str) -> Vec<(Vec<u8>, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(format!("cannot read {}: {e}", path.display())));
    let names = validate(path, &text);
    let target =
        seccompiler::TargetArch::try_from(arch).unwrap_or_else(|e| fail(format!("{arch}: {e:?}")));
    let map = seccompiler::compile_from_json(text.as_bytes(), target)
        .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    FILTERS
        .iter()
        .zip(names)
        .map(|(f, names)| {
            let prog = map
                .get(*f)
                .unwrap_or_else(|| fail(format!("no {f:?} filter compiled")));
            let mut bytes = Vec::with_capacity(prog.len() * 8);
            for ins in prog {
                bytes.extend_from_slice(&ins.code.to_le_bytes());
                bytes.push(ins.jt);
                bytes.push(ins.jf);
                bytes.extend_from_slice(&ins.k.to_le_bytes());
            }
            (bytes, names)
        })
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=sandbox/seccomp");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let meta_path = out.join("seccomp_meta.rs");

    // Every file is checked and compiled for its own architecture on every build, so a rule
    // added for one architecture cannot silently break another.
    let mut compiled = Vec::new();
    for a in SUPPORTED {
        let path = PathBuf::from(format!("sandbox/seccomp/{a}.json"));
        println!("cargo:rerun-if-changed={}", path.display());
        compiled.push((a, compile(&path, a)));
    }
    let filters: Vec<(Vec<u8>, Vec<String>)> =
        if let Some((_, c)) = compiled.into_iter().find(|(a, _)| *a == arch) {
            c
        } else {
            println!(
            "cargo:warning=no seccomp allowlist for {arch}; --enable-seccomp will fail at run time"
        );
            FILTERS.iter().map(|_| (Vec::new(), Vec::new())).collect()
        };

    let mut meta = String::new();
    let _ = writeln!(meta, "/// Architecture the filters were compiled for.");
    let _ = writeln!(meta, "pub const ARCH: &str = {arch:?};");
    for (f, (program, names)) in FILTERS.iter().zip(filters) {
        let bpf_path = out.join(format!("seccomp_{f}.bpf"));
        std::fs::write(&bpf_path, program)
            .unwrap_or_else(|e| fail(format!("cannot write {}: {e}", bpf_path.display())));
        let konst = if *f == "main" {
            "SYSCALLS".to_owned()
        } else {
            format!("{}_SYSCALLS", f.to_uppercase())
        };
        let _ = writeln!(
            meta,
            "/// Syscalls the {f:?} filter allows (each once), in file order."
        );
        let _ = writeln!(meta, "pub const {konst}: &[&str] = &{names:?};");
    }
    std::fs::write(&meta_path, meta)
        .unwrap_or_else(|e| fail(format!("cannot write {}: {e}", meta_path.display())));
}
