#!/usr/bin/env bash
# Run the whole test suite: unit tests (no privileges) and integration tests (namespaces; they
# skip with a printed reason where they cannot run, and fail instead under CI=true).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --locked --bins
cargo test --locked -- --test-threads="${TAPIR_TEST_THREADS:-2}"
