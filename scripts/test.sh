#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it too). One build profile (debug).
#
# Every build here uses `--workspace --all-targets`, so cargo resolves the same dependency features
# each time and builds tract once; only the enclave crate differs between the two builds.
set -euo pipefail
cd "$(dirname "$0")/.."

# 0. Shell scripts: `bash -n` and ShellCheck (from PyPI, in a venv under target/).
./scripts/lint-scripts.sh

# Every package of Cargo.lock, for every platform: tests/tests/crate_boundaries.rs reads the
# workspace graph with `cargo metadata --offline`, which needs the sources of packages a Linux
# build never downloads (Windows-only ones such as anstyle-wincon); a fresh machine lacks them.
cargo fetch --locked

# 1. The production enclave (no `simulation` feature): it must contain no mock code, and its own
#    unit tests (e.g. plaintext models refused) run against it.
cargo build --workspace --all-targets
cp target/debug/sealed-enclave target/debug/sealed-enclave-production
# `kms-ca` is the simulation-only flag that makes the enclave trust a named CA for KMS TLS.
if grep -a -q -e 'sealed_mock_ca' -e 'MockNsm' -e 'sealed_mock_kms' -e 'kms-ca' target/debug/sealed-enclave-production; then
    echo "FAIL: the production enclave build contains simulation (mock) code" >&2
    exit 1
fi
echo "ok: production enclave build has no mock code"
cargo test --workspace --lib --bins

# 2. Simulation binaries (the enclave with the mock NSM), then every test in the workspace.
cargo build --workspace --all-targets --features sealed-enclave/simulation
if ! grep -a -q -e 'sealed_mock_ca' target/debug/sealed-enclave || ! grep -a -q -e 'kms-ca' target/debug/sealed-enclave; then
    echo "FAIL: the simulation enclave build does not contain the mock NSM (check is blind)" >&2
    exit 1
fi
cargo test --workspace --features sealed-enclave/simulation

# 2b. The benchmark (docs/performance.md). The plain-HTTP enclave builds only under its own name:
#     a `sealed-enclave` binary with `bench-plaintext` must fail to compile. Then a quick
#     `sealed-bench compare` on the bundled model runs bare, sealed and plain inference end to end
#     and checks every answer (figures from a debug build mean nothing; scripts/bench.sh measures).
cargo build --workspace --features sealed-enclave/simulation,sealed-enclave/bench-plaintext \
    --bin sealed-enclave-plain-bench
if cargo check --workspace --features sealed-enclave/simulation,sealed-enclave/bench-plaintext \
        --bin sealed-enclave >target/bench-plaintext-guard.log 2>&1; then
    echo "FAIL: sealed-enclave compiled with the bench-plaintext feature" >&2
    exit 1
fi
if ! grep -q "builds only .sealed-enclave-plain-bench." target/bench-plaintext-guard.log; then
    echo "FAIL: sealed-enclave with bench-plaintext failed for another reason:" >&2
    cat target/bench-plaintext-guard.log >&2
    exit 1
fi
echo "ok: bench-plaintext cannot be built into sealed-enclave"
rm -rf target/bench-smoke && mkdir -p target/bench-smoke
target/debug/sealed-bench compare --quick --models digits --json target/bench-smoke/compare.json
#     Pinned (Nitro's CPU split), where the throughput target is judged: the paired throughput
#     rounds must run and reach the report (needs taskset and 2 CPUs, as scripts/bench.sh).
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    target/debug/sealed-bench compare --quick --models digits --pin --no-plain \
        --json target/bench-smoke/compare-pinned.json
    python3 - target/bench-smoke/compare-pinned.json <<'PY'
import json, sys
case = json.load(open(sys.argv[1]))["models"][0]["cases"][0]
pairs = case["paired_throughput"]["sealed"]
assert [p["concurrency"] for p in pairs] == [1, 4], pairs
assert all(p["rounds"] == 2 and p["median_ratio"] > 0 for p in pairs), pairs
print("ok: paired throughput rounds at C = 1 and 4 in the pinned smoke run")
PY
fi
#     The host relay benchmark: the real sealed-host between an HTTP client and a stand-in enclave
#     that checks every byte it relays, 1 KiB to 16 MiB.
target/debug/sealed-bench micro --relay-only --quick --json target/bench-smoke/micro.json
#     The targets' verdicts read from those two reports (debug figures: the verdicts mean nothing,
#     the reading of real reports is what runs here).
target/debug/sealed-bench targets --results-dir target/bench-smoke

# 3. The mock KMS against a second, independent AWS SDK (boto3, in a venv under target/): the Rust
#    SDK is exercised by the tests above; botocore serialises, signs and parses errors on its own.
if [ ! -x target/py-sdk-check/bin/python ]; then
    python3 -m venv target/py-sdk-check
fi
target/py-sdk-check/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-sdk-check.txt
target/py-sdk-check/bin/python scripts/kms_sdk_check.py target/debug/sealed-sim

# 4. The enclave image's binary: a static musl build without simulation code (scripts/build-eif.sh
#    builds the same with the release `enclave` profile; CI keeps to the dev profile). The script
#    fails if the binary is dynamically linked or contains mock code.
./scripts/build-enclave.sh --profile dev

# 5. Supply chain: cargo deny (advisories, licences, sources, crate-boundary bans) and cargo audit,
#    offline against the vendored RustSec snapshot (docs/supply-chain.md). Installs both tools
#    into target/tools on first use.
./scripts/supply-chain.sh

# 6. Fuzzing smoke run: every decoder target built with libFuzzer on stable and run for a few
#    seconds from its seed corpus; any crash fails (docs/fuzzing.md). Its own target dir.
./scripts/fuzz.sh --smoke
