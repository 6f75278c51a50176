#!/usr/bin/env bash
# Builds and runs the fuzz targets of fuzz/ (docs/fuzzing.md) on the pinned STABLE toolchain.
#
#   scripts/fuzz.sh --smoke                 build, then every target for $FUZZ_SMOKE_SECS (5) s
#   scripts/fuzz.sh --time SECS [TARGET...] build, then each named target (default: all) for SECS
#   scripts/fuzz.sh --build                 build only
#   scripts/fuzz.sh --list                  print the target names
#
# No nightly and no cargo-fuzz: libFuzzer is compiled from source by the `libfuzzer-sys` crate
# (needs a C++ compiler), and the coverage instrumentation it feeds on comes from stable rustc
# flags: `-Cpasses=sancov-module` plus LLVM's SanitizerCoverage options (the flags cargo-fuzz
# passes with `--sanitizer none`). No AddressSanitizer: safe Rust needs it little, and it needs
# nightly. Binaries, the growing corpus and crash artifacts live under target/fuzz/, apart from
# the main build. Run long sessions under `nice -n 19` on shared machines.
#
# Exit status: 0 when every target ran its time without a crash; 1 on a crash (the input is in
# target/fuzz/artifacts/<target>/; copy it to fuzz/regressions/<target>/ and fix the bug); 2 on
# a usage or build error.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

mode=${1:-}
[[ -n "$mode" ]] || usage
shift
secs=
case "$mode" in
    --smoke) secs=${FUZZ_SMOKE_SECS:-5} ;;
    --time)
        secs=${1:-}
        [[ "$secs" =~ ^[1-9][0-9]*$ ]] || usage
        shift
        ;;
    --build | --list) ;;
    *) usage ;;
esac

mapfile -t all_targets < <(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' fuzz/Cargo.toml | grep -vx sealed-fuzz)
if [[ "$mode" == --list ]]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
targets=("${all_targets[@]}")
if [[ "$mode" == --time && $# -gt 0 ]]; then
    targets=("$@")
    for t in "${targets[@]}"; do
        printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t" || {
            echo "fuzz.sh: unknown target $t (try --list)" >&2
            exit 2
        }
    done
fi

# rust-toolchain.toml pins the compiler for everything under the repository, this included.
triple=$(rustc -vV | sed -n 's/^host: //p')
# FUZZ_TARGET_DIR: another build dir (e.g. to time a cold build without touching target/fuzz).
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/target/fuzz}"
# Instrumentation for libFuzzer (LLVM SanitizerCoverage): 8-bit edge counters, the PC table,
# comparison tracing (lets the fuzzer solve magic numbers and lengths) and stack depth. Explicit
# `--target` keeps these flags off build scripts and proc macros, which run inside cargo/rustc.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth"
unset CARGO_ENCODED_RUSTFLAGS RUSTC_WRAPPER

start=$SECONDS
echo "fuzz.sh: building ${#all_targets[@]} targets ($(rustc --version), $triple)"
if ! cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$triple" --bins; then
    echo "fuzz.sh: build failed" >&2
    exit 2
fi
echo "fuzz.sh: build took $((SECONDS - start)) s"
[[ "$mode" == --build ]] && exit 0

bin_dir="$CARGO_TARGET_DIR/$triple/release"
crashed=()
summary=()
for t in "${targets[@]}"; do
    corpus="$CARGO_TARGET_DIR/corpus/$t"
    artifacts="$CARGO_TARGET_DIR/artifacts/$t"
    log="$CARGO_TARGET_DIR/logs/$t.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    # New inputs go to the first directory only: the committed seeds and regressions stay as is.
    dirs=("$corpus" "fuzz/seeds/$t")
    [[ -d "fuzz/regressions/$t" ]] && dirs+=("fuzz/regressions/$t")
    echo "fuzz.sh: $t for $secs s"
    # -timeout: one input taking 10 s is a hang. -rss_limit_mb: also caps a single malloc (libFuzzer
    # sets malloc_limit_mb to it), so a decoder that allocates from a declared size is caught.
    status=0
    "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "${dirs[@]}" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
    corpus_n=$(find "$corpus" -type f | wc -l)
    if [[ $status -ne 0 ]]; then
        crashed+=("$t")
        summary+=("$(printf '%-18s CRASH (exit %s) see %s and %s' "$t" "$status" "$log" "$artifacts")")
        grep -m 20 -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || true
    else
        summary+=("$(printf '%-18s execs %-10s exec/s %-7s %-22s corpus %s' \
            "$t" "${execs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$corpus_n")")
    fi
done

echo
echo "fuzz.sh: results (${secs} s per target; total $((SECONDS - start)) s including the build)"
printf '  %s\n' "${summary[@]}"
if [[ ${#crashed[@]} -gt 0 ]]; then
    echo "fuzz.sh: CRASHED: ${crashed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: no crashes"
