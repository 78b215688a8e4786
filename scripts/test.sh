#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints (warnings are errors), all tests.
# Usage: ./scripts/test.sh   (from anywhere; extra arguments go to the test runner)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

# The static supervisor every package container runs as its init; tests that start real
# containers find it through this variable.
echo "==> scripts/build-start-container.sh"
STARTOS_START_CONTAINER=$(pwd)/$(./scripts/build-start-container.sh)
export STARTOS_START_CONTAINER

if cargo nextest --version >/dev/null 2>&1; then
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    echo "==> cargo nextest run"
    cargo nextest run --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
    # nextest does not run doc tests.
    echo "==> cargo test --doc"
    cargo test --workspace --doc 2>&1 | tee -a "$log"
    # One closing line for both runners: the doc tests' own last line is often a crate
    # with none, which reads as if nothing ran.
    awk '/ tests run: / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
         /^test result:/ { p += $4; f += $6 }
         END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
else
    echo "==> cargo test (cargo-nextest is not installed)"
    cargo test --workspace --no-fail-fast "$@"
fi
