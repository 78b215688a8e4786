#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints (warnings are errors), all tests.
# Usage: ./scripts/test.sh   (from anywhere; extra arguments go to the test runner)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    echo "==> cargo nextest run"
    cargo nextest run --workspace --no-fail-fast "$@"
    # nextest does not run doc tests.
    echo "==> cargo test --doc"
    cargo test --workspace --doc
else
    echo "==> cargo test (cargo-nextest is not installed)"
    cargo test --workspace --no-fail-fast "$@"
fi
