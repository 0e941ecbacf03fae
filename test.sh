#!/usr/bin/env bash
# Run the whole test suite: unit tests (no privileges) and integration tests (namespaces; they
# skip with a printed reason where they cannot run, and fail instead under CI=true).
set -euo pipefail
cd "$(dirname "$0")"
threads="${TAPIR_TEST_THREADS:-2}"
cargo build --locked --bins
# test-utils compiles in the test-only hooks tests/sandbox.rs needs (the forbidden-syscall trigger).
cargo test --locked --features test-utils -- --test-threads="$threads"
# Every integration suite again with --enable-sandbox --enable-seccomp (the harness adds them to
# each tapir it starts): every code path the tests exercise must run under the sandbox and the
# seccomp allowlist. cli and fuzz_corpus (no tapir process) and sandbox (sets the flags itself)
# are left out.
suites=()
for f in tests/*.rs; do
    name="$(basename "$f" .rs)"
    case "$name" in cli | sandbox | fuzz_corpus) ;; *) suites+=(--test "$name") ;; esac
done
TAPIR_TEST_EXTRA_ARGS="--enable-sandbox --enable-seccomp" \
    cargo test --locked --features test-utils "${suites[@]}" -- --test-threads="$threads"
