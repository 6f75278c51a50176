#!/usr/bin/env bash
# Builds the simulation binaries and runs `sealed-sim demo` (or `sealed-sim up` with `./scripts/demo.sh up`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --features sealed-enclave/simulation
exec target/debug/sealed-sim "${@:-demo}"
