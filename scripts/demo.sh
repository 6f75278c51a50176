#!/usr/bin/env bash
# Builds the simulation binaries and runs `sealed-sim demo` (or `sealed-sim up` with `./scripts/demo.sh up`).
# `--all-targets` gives the same dependency features as scripts/test.sh, so the two share one build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets --features sealed-enclave/simulation
exec target/debug/sealed-sim "${@:-demo}"
