//! `tapir::fuzzing::guest_frames` (see `fuzz/README.md`). Runs in a private network namespace.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Err(e) = tapir::fuzzing::confine() {
            panic!("guest_frames needs a private network namespace: {e}");
        }
    },
    |data: &[u8]| tapir::fuzzing::guest_frames(data)
);
