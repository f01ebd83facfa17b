#!/usr/bin/env bash
# The project's test command (the README's second command): formatting,
# lints, then every test. Runs from any directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Unit, integration and property tests; benches are built by clippy above
# and run by scripts/bench.sh, not here.
cargo test --locked --lib --bins --tests
