#!/usr/bin/env bash
# Run the whole test suite: unit tests (no privileges) and integration tests (namespaces; they
# skip with a printed reason where they cannot run, and fail instead under CI=true).
#
# Ends with the skip reasons, the failed tests, and one line
#   summary: N passed, N failed, N skipped
# counted from cargo's "test result:" lines of both runs. cargo counts a skipped test as passed;
# each skip is recorded in $TAPIR_TEST_SKIP_FILE (tests/common/mod.rs, `skip`) and moved from
# "passed" to "skipped" here. Exits non-zero if anything failed (or, under CI=true, skipped).
set -euo pipefail
cd "$(dirname "$0")"
threads="${TAPIR_TEST_THREADS:-2}"

work="$(mktemp -d "${TMPDIR:-/tmp}/tapir-test-sh.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export TAPIR_TEST_SKIP_FILE="$work/skipped"
: >"$TAPIR_TEST_SKIP_FILE"

status=0
steps=0
# step NAME COMMAND...: run one cargo command, its output teed to $work/NAME.log; a failure is
# remembered, not fatal, so that every suite runs and the summary is printed.
step() {
    local name="$1"
    shift
    steps=$((steps + 1))
    set +e
    "$@" 2>&1 | tee "$work/$steps-$name.log"
    local rc="${PIPESTATUS[0]}"
    set -e
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "$name: exit status $rc" >>"$work/broken"
    fi
}

step build cargo build --locked --bins
# test-utils compiles in the test-only hooks tests/sandbox.rs needs (the forbidden-syscall trigger).
step tests cargo test --locked --features test-utils --no-fail-fast -- --test-threads="$threads"
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
    step sandboxed cargo test --locked --features test-utils --no-fail-fast "${suites[@]}" \
    -- --test-threads="$threads"

# Count. "test result: ok. 12 passed; 0 failed; 1 ignored; ..." per test binary; the failing
# tests' names are the "test NAME ... FAILED" lines after a "Running SUITE" line.
read -r passed failed ignored < <(cat "$work"/*.log | awk '
    /^test result: / {
        for (i = 1; i <= NF; i++) {
            if ($(i + 1) ~ /^passed;?$/) p += $i
            if ($(i + 1) ~ /^failed;?$/) f += $i
            if ($(i + 1) ~ /^ignored;?$/) g += $i
        }
    }
    END { print p + 0, f + 0, g + 0 }')
failures="$(awk '
    FNR == 1 { run = (FILENAME ~ /sandboxed/) ? " (with --enable-sandbox --enable-seccomp)" : "" }
    /^ *Running / { suite = ($2 == "unittests") ? $3 : $2; sub(/^.*\//, "", suite); sub(/\.rs$/, "", suite) }
    /^ *Doc-tests / { suite = "doc-tests " $2 }
    /^test .* \.\.\. FAILED$/ {
        name = $0; sub(/^test /, "", name); sub(/ \.\.\. FAILED$/, "", name)
        print "  " suite "::" name run
    }' "$work"/*.log)"
# One line per skipped test and run (the same test skipped in both runs is two skips, as cargo
# counted two passes).
skipped="$(sort -u "$TAPIR_TEST_SKIP_FILE" | awk -F '\t' 'NF { print "  " $1 ": " $2 }')"
nskipped=0
if [ -n "$skipped" ]; then nskipped="$(printf '%s\n' "$skipped" | wc -l)"; fi
passed=$((passed - nskipped))
if [ "$passed" -lt 0 ]; then passed=0; fi
# A step that failed without a failing test (a build error, a crashed test binary) is a failure
# of its own.
if [ -s "$work/broken" ] && [ "$failed" -eq 0 ]; then
    failed=1
    failures="$(sed 's/^/  /; s/$/ (no failing test: a build error or a crashed test binary?)/' "$work/broken")"
fi
nskipped=$((nskipped + ignored))
if [ "$ignored" -gt 0 ]; then
    skipped="$(printf '%s\n  %s test(s) marked #[ignore]' "$skipped" "$ignored" | sed '/^$/d')"
fi
if [ "${CI:-}" != "" ] && [ "${CI:-}" != "false" ] && [ "$nskipped" -gt 0 ]; then
    echo "CI: a skipped test is a failure" >&2
    status=1
fi

echo
if [ -n "$skipped" ]; then
    echo "skipped (why):"
    printf '%s\n' "$skipped"
fi
if [ -n "$failures" ]; then
    echo "failed:"
    printf '%s\n' "$failures"
fi
echo "summary: $passed passed, $failed failed, $nskipped skipped"
exit "$status"
