#!/usr/bin/env bash
# Builds the enclave image file (EIF) for AWS Nitro Enclaves, reproducibly, and records what a
# client or a KMS key policy must pin:
#
#   OUT/sealed-enclave          the static musl release binary (unless --binary)
#   OUT/context/                the docker build context (Dockerfile + binary, fixed mtimes)
#   OUT/sealed-enclave.eif      the enclave image
#   OUT/measurements.json       exactly what `nitro-cli build-enclave` printed on stdout:
#                               {"Measurements": {"HashAlgorithm": ..., "PCR0", "PCR1", "PCR2"}}
#   OUT/release.json            git commit, toolchain, nitro-cli version, SHA-384 of the binary and
#                               of the EIF, and the PCRs (docs/measurements.md)
#
# and prints PCR0/PCR1/PCR2.
#
# Reproducibility: the binary comes from scripts/build-enclave.sh (pinned toolchain, --locked,
# --remap-path-prefix); the build context has fixed modes and mtimes (SOURCE_DATE_EPOCH = the
# commit time, https://reproducible-builds.org/specs/source-date-epoch/), the image is `FROM scratch`
# (nothing to pull) and is built without network. PCR0..2 measure the kernel, command line and
# ramdisks, not the EIF's metadata section, so they repeat across builds of the same commit with
# the same nitro-cli blobs, while the EIF file's own SHA-384 does not: the metadata section holds
# the build time (aws-nitro-enclaves-cli src/common/json_output.rs `BuildTime`). PCR1 (kernel and
# boot ramfs) comes from the installed aws-nitro-enclaves-cli package; release.json records its
# version.
set -euo pipefail

# The Rust toolchain release builds use. A rust-toolchain.toml at the workspace root, if present,
# takes precedence (its `channel`). Other toolchains are refused: a different compiler gives a
# different binary, so different PCRs.
PINNED_TOOLCHAIN="1.95.0"
TARGET="x86_64-unknown-linux-musl"

usage() {
    cat <<'EOF'
Usage: scripts/build-eif.sh [--out DIR] [--binary PATH] [--docker-uri NAME:TAG]

Build the Nitro enclave image (EIF) of sealed-enclave and print its PCR0/PCR1/PCR2.

  --out DIR             output directory (default: target/eif)
  --binary PATH         use this static sealed-enclave binary instead of building it with
                        scripts/build-enclave.sh --profile enclave (for tests, or a binary built
                        by a pinned CI job); it must be a static ELF
  --docker-uri NAME:TAG tag of the intermediate docker image (default: sealed-enclave:<commit>)
  -h, --help            this text

Environment:
  SOURCE_DATE_EPOCH     mtime for the staged files (default: the git commit's time)

Needs: git, docker, nitro-cli (aws-nitro-enclaves-cli), python3, sha384sum, readelf.
Writes OUT/sealed-enclave.eif, OUT/measurements.json, OUT/release.json.
EOF
}

die() {
    echo "build-eif.sh: error: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH ($2)"
}

out=""
binary=""
docker_uri=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out)
            [ $# -ge 2 ] || die "--out needs a directory"
            out="$2"
            shift 2
            ;;
        --binary)
            [ $# -ge 2 ] || die "--binary needs a path"
            binary="$2"
            shift 2
            ;;
        --docker-uri)
            [ $# -ge 2 ] || die "--docker-uri needs NAME:TAG"
            docker_uri="$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ -n "$out" ] || out="$repo/target/eif"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

need git "to record the commit"
need python3 "AL2023 ships it; used to check the measurements JSON"
need sha384sum "coreutils"
need readelf "binutils; checks that the binary is static"
need docker "install it with scripts/setup-instance.sh"
need nitro-cli "install aws-nitro-enclaves-cli with scripts/setup-instance.sh"

commit="$(git rev-parse HEAD 2>/dev/null)" || die "$repo is not a git checkout"
dirty=false
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    dirty=true
    echo "build-eif.sh: warning: the work tree has uncommitted changes; the image will not match a rebuild of $commit" >&2
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git log -1 --format=%ct HEAD)"
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds, got '$SOURCE_DATE_EPOCH'"
export SOURCE_DATE_EPOCH
[ -n "$docker_uri" ] || docker_uri="sealed-enclave:${commit:0:12}"

# --- 1. The binary -------------------------------------------------------------------------------
if [ -z "$binary" ]; then
    if [ -f rust-toolchain.toml ]; then
        pinned="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml | head -n1)"
        [ -n "$pinned" ] || die "rust-toolchain.toml has no channel = \"...\" line"
    else
        pinned="$PINNED_TOOLCHAIN"
    fi
    need rustc "install Rust $pinned with rustup"
    rustc_version="$(rustc --version)"
    case "$rustc_version" in
        "rustc $pinned "*) ;;
        *) die "release images are built with rustc $pinned, this is '$rustc_version'; run 'rustup toolchain install $pinned' and retry with RUSTUP_TOOLCHAIN=$pinned" ;;
    esac
    [ -x scripts/build-enclave.sh ] || die "scripts/build-enclave.sh not found or not executable (or pass --binary PATH)"
    scripts/build-enclave.sh --profile enclave --out "$out/sealed-enclave" >&2
    binary="$out/sealed-enclave"
    toolchain="$rustc_version"
    binary_source="scripts/build-enclave.sh --profile enclave"
else
    # rustc writes its version into the ELF .comment section ("rustc version 1.95.0 (...)");
    # stripping keeps it. A binary without it is recorded as "unknown".
    toolchain="$(readelf -p .comment "$binary" 2>/dev/null | sed -n 's/.*\(rustc version [^)]*)\).*/\1/p' | head -n1 || true)"
    [ -n "$toolchain" ] || toolchain="unknown"
    binary_source="--binary $binary"
fi
[ -f "$binary" ] || die "binary $binary not found"
[ -s "$binary" ] || die "binary $binary is empty"
header="$(head -c 4 "$binary" | od -An -c | tr -d ' \n')"
[ "$header" = "177ELF" ] || die "$binary is not an ELF executable"
# A dynamically linked binary names its loader in a PT_INTERP program header; the enclave image
# has no loader and no libc (FROM scratch), so it would not start.
if readelf -lW "$binary" 2>/dev/null | grep -q 'INTERP'; then
    die "$binary is dynamically linked (it has a PT_INTERP header); build it with scripts/build-enclave.sh --profile enclave ($TARGET, static)"
fi

# --- 2. Build context with fixed modes and mtimes ------------------------------------------------
context="$out/context"
rm -rf "$context"
mkdir -p "$context"
cp deploy/enclave/Dockerfile "$context/Dockerfile"
cp "$binary" "$context/sealed-enclave"
chmod 0644 "$context/Dockerfile"
chmod 0755 "$context/sealed-enclave"
# The ramdisk nitro-cli builds from the image keeps file metadata, so mtimes must not depend on
# when the checkout or the build happened.
touch -h -d "@$SOURCE_DATE_EPOCH" "$context/Dockerfile" "$context/sealed-enclave" "$context"

# --- 3. Docker image, then the EIF ---------------------------------------------------------------
echo "build-eif.sh: docker build $docker_uri" >&2
docker build --network=none --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
    -t "$docker_uri" "$context" >&2

eif="$out/sealed-enclave.eif"
rm -f "$eif" "$out/measurements.json" "$out/release.json"
echo "build-eif.sh: nitro-cli build-enclave --docker-uri $docker_uri --output-file $eif" >&2
# nitro-cli prints progress on stderr and the measurements JSON alone on stdout
# (aws-nitro-enclaves-cli src/lib.rs `build_from_docker`).
nitro-cli build-enclave --docker-uri "$docker_uri" --output-file "$eif" >"$out/measurements.json.tmp" ||
    die "nitro-cli build-enclave failed"
[ -s "$eif" ] || die "nitro-cli did not write $eif"

# --- 4. Check the measurements, write release.json ----------------------------------------------
binary_sha384="$(sha384sum "$binary" | cut -d' ' -f1)"
eif_sha384="$(sha384sum "$eif" | cut -d' ' -f1)"
eif_bytes="$(wc -c <"$eif" | tr -d ' ')"
nitro_cli_version="$(nitro-cli --version 2>/dev/null | head -n1 || true)"
[ -n "$nitro_cli_version" ] || nitro_cli_version="unknown"

# Values reach python through the environment (never pasted into its source).
R_COMMIT="$commit" R_DIRTY="$dirty" R_TOOLCHAIN="$toolchain" R_TARGET="$TARGET" \
    R_BINARY_SOURCE="$binary_source" R_BINARY_SHA384="$binary_sha384" R_NITRO_CLI="$nitro_cli_version" \
    R_DOCKER_URI="$docker_uri" R_EIF_SHA384="$eif_sha384" R_EIF_BYTES="$eif_bytes" \
    python3 - "$out/measurements.json.tmp" "$out/release.json.tmp" <<'PY' ||
import json, os, re, sys
src, dst = sys.argv[1], sys.argv[2]
try:
    with open(src) as f:
        doc = json.load(f)
    m = doc["Measurements"]
    pcrs = {}
    for i in ("0", "1", "2"):
        v = m["PCR" + i]
        if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{96}", v):
            raise ValueError("PCR%s is not 96 hex digits" % i)
        if set(v) == {"0"}:
            raise ValueError("PCR%s is all zeros" % i)
        pcrs[i] = v.lower()
except Exception as e:
    print("build-eif.sh: %s: %r" % (src, e), file=sys.stderr)
    sys.exit(1)
e = os.environ
release = {
    "name": "sealed-enclave",
    "git_commit": e["R_COMMIT"],
    "git_dirty": e["R_DIRTY"] == "true",
    "source_date_epoch": int(e["SOURCE_DATE_EPOCH"]),
    "toolchain": e["R_TOOLCHAIN"],
    "target": e["R_TARGET"],
    "binary_source": e["R_BINARY_SOURCE"],
    "binary_sha384": e["R_BINARY_SHA384"],
    "nitro_cli": e["R_NITRO_CLI"],
    "docker_uri": e["R_DOCKER_URI"],
    "eif_sha384": e["R_EIF_SHA384"],
    "eif_bytes": int(e["R_EIF_BYTES"]),
    "pcrs": pcrs,
}
with open(dst, "w") as f:
    json.dump(release, f, indent=2)
    f.write("\n")
PY
    die "nitro-cli's output is not the expected measurements JSON (kept in $out/measurements.json.tmp)"
mv "$out/measurements.json.tmp" "$out/measurements.json"
mv "$out/release.json.tmp" "$out/release.json"

python3 - "$out/release.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for i in ("0", "1", "2"):
    print("PCR%s %s" % (i, r["pcrs"][i]))
PY
echo "build-eif.sh: wrote $eif, $out/measurements.json, $out/release.json" >&2
