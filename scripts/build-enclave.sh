#!/usr/bin/env bash
# Builds the production enclave binary: `sealed-enclave` WITHOUT the `simulation` feature, statically
# linked against musl, so that the image (deploy/enclave/Dockerfile, `FROM scratch`) needs nothing
# but this one file. Then checks it: a static ELF (no program interpreter, no shared libraries),
# no simulation (mock) code in it, and prints its SHA-384.
#
#   scripts/build-enclave.sh [--profile dev|enclave] [--out PATH]
#
#   --profile enclave  release build for images (root Cargo.toml [profile.enclave]); the default.
#   --profile dev      debug build: what CI runs to prove the static build compiles.
#   --out PATH         also copy the binary to PATH.
#
# The output lands in target/x86_64-unknown-linux-musl/<debug|enclave>/sealed-enclave: a separate
# directory, so it never replaces target/debug/sealed-enclave (the simulation build the e2e tests run).
# Reproducibility: `--locked`, and every build path (this checkout, CARGO_HOME) is remapped to a
# fixed prefix so the binary does not depend on where it was built (rustc already maps its own
# sources to /rustc/<commit>). The toolchain itself is pinned by scripts/build-eif.sh.
set -euo pipefail

TARGET=x86_64-unknown-linux-musl
profile=enclave
out=""

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --profile)
            [ $# -ge 2 ] || { echo "build-enclave.sh: --profile needs a value" >&2; exit 2; }
            profile="$2"
            shift 2
            ;;
        --profile=*) profile="${1#--profile=}"; shift ;;
        --out)
            [ $# -ge 2 ] || { echo "build-enclave.sh: --out needs a value" >&2; exit 2; }
            out="$2"
            shift 2
            ;;
        --out=*) out="${1#--out=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build-enclave.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$profile" in
    dev) profile_dir=debug ;;
    enclave) profile_dir=enclave ;;
    *) echo "build-enclave.sh: --profile must be dev or enclave, not '$profile'" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
root="$(pwd -P)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "build-enclave.sh: adding the $TARGET target" >&2
    rustup target add "$TARGET"
fi

# ring's C and assembly build with the system gcc for the musl target (it uses no libc headers
# that differ); no musl-gcc cross toolchain is needed.
export CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-gcc}"
# Target-only flags (build scripts and proc macros for the host are unaffected, so the shared
# host artefacts in target/debug are not rebuilt). crt-static is musl's default; stated anyway,
# since a dynamically linked binary could not run in a FROM-scratch image.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static \
--remap-path-prefix=$root=/build/sealed-inference \
--remap-path-prefix=$cargo_home=/cargo"

start=$(date +%s)
cargo build --locked -p sealed-enclave --target "$TARGET" --profile "$profile"
elapsed=$(( $(date +%s) - start ))

target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/$TARGET/$profile_dir/sealed-enclave"
[ -f "$bin" ] || { echo "FAIL: $bin was not built" >&2; exit 1; }

# Static: no PT_INTERP (a dynamic loader would have to exist in the image) and no DT_NEEDED.
if readelf -l "$bin" | grep -q 'INTERP'; then
    echo "FAIL: $bin has a program interpreter (dynamically linked)" >&2
    exit 1
fi
if readelf -d "$bin" | grep -q '(NEEDED)'; then
    echo "FAIL: $bin needs shared libraries:" >&2
    readelf -d "$bin" | grep '(NEEDED)' >&2
    exit 1
fi
echo "ok: $bin is statically linked"

# No simulation code: the same markers as scripts/test.sh, plus the simulation-only log line
# (which survives `strip`, unlike symbol names).
if grep -a -q -e 'sealed_mock_ca' -e 'MockNsm' -e 'sealed_mock_kms' -e 'kms-ca' \
        -e 'SIMULATION BUILD' -e 'BENCHMARK BUILD' "$bin"; then
    echo "FAIL: $bin contains simulation (mock) code" >&2
    exit 1
fi
echo "ok: $bin has no simulation code"

# The image's global allocator (enclave/alloc, `sealed-alloc`: wipes what model loads free, and on
# musl keeps the large blocks the libc's own allocator would unmap): its tests, on the image's
# target and profile. A crate without dependencies, so this compiles in seconds.
cargo test --locked -p sealed-alloc --target "$TARGET" --profile "$profile"
echo "ok: the enclave's allocator passes its tests on $TARGET"

if [ -n "$out" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$bin" "$out"
    bin="$out"
fi

size=$(stat -c %s "$bin")
sha384=$(sha384sum "$bin" | cut -d' ' -f1)
echo "profile: $profile  build time: ${elapsed}s  size: $size bytes"
echo "binary: $bin"
echo "sha384: $sha384"
