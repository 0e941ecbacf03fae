//! `tapir::fuzzing::resolv_conf` (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tapir::fuzzing::resolv_conf(data));
