#!/usr/bin/env bash
# The project's test command (the README's second command): formatting,
# lints, then every test. Runs from any directory.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
