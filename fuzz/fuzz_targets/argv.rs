//! `tapir::fuzzing::argv` (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tapir::fuzzing::argv(data));
