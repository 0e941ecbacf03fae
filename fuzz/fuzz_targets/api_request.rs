//! `tapir::fuzzing::api_request` (see `fuzz/README.md`). Runs in a private network namespace.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Err(e) = tapir::fuzzing::confine() {
            panic!("api_request needs a private network namespace: {e}");
        }
    },
    |data: &[u8]| tapir::fuzzing::api_request(data)
);
