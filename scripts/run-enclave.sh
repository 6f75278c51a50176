#!/usr/bin/env bash
# Starts the sealed-enclave EIF on a Nitro Enclaves parent instance with memory and CPUs sized for
# the image and the models it will hold, after checking (or, with --configure-allocator, writing)
# the Nitro Enclaves allocator configuration that reserves those resources.
#
# Sizing rule (docs/deploy.md):
#
#   memory = roundup2( max(64, ceil(4 x EIF bytes / MiB) + models MiB + working set MiB) )
#
# - 4 x the EIF: nitro-cli refuses less ("At least N MB must be allocated (which is 4 times the EIF
#   file size)", aws-nitro-enclaves-cli src/enclave_proc/resource_manager.rs,
#   ENCLAVE_MEMORY_EIF_SIZE_RATIO = 4); the ramdisk is unpacked in enclave memory.
# - models: the decrypted models the enclave holds (plaintext bytes; sealed-enclave keeps them in
#   memory, there is no disk in an enclave).
# - working set: kernel, runtime, tract's optimised plans, per-request tensors and the copies made
#   while a model loads (default 512 MiB; measure with your models and raise it if loads fail).
# - at least 64 MiB and a multiple of 2 MiB: enclave memory is made of 2 MiB / 1 GiB huge pages and
#   "an enclave's memory size needs to be at least 64 MiB" (Linux Documentation/virt/ne_overview.rst);
#   the allocator rounds its reservation up to the smallest huge page size
#   (aws-nitro-enclaves-cli bootstrap/nitro-enclaves-allocator, set_required_hugepages).
#
# CPUs: whole cores only; with hyper-threading the count must be a multiple of the threads per
# core (the allocator refuses others), and CPU 0 with its siblings stays with the parent.
#
# The allocator (/etc/nitro_enclaves/allocator.yaml, read by nitro-enclaves-allocator.service at
# boot) must reserve at least that much: `memory_mib` and `cpu_count` (or `cpu_pool`), format of
# aws-nitro-enclaves-cli bootstrap/allocator.yaml.
set -euo pipefail

ENCLAVE_CID_DEFAULT=16
MIN_MEMORY_MIB=64
ALLOCATOR_SERVICE="nitro-enclaves-allocator.service"

usage() {
    cat <<'EOF'
Usage: scripts/run-enclave.sh --eif PATH [options]

Size and start the sealed-enclave image with `nitro-cli run-enclave`.

  --eif PATH               the enclave image (from scripts/build-eif.sh: target/eif/sealed-enclave.eif)
  --models-mib N           total size of the decrypted models the enclave will hold (default 0)
  --working-set-mib N      runtime working set (default 512)
  --memory-mib N           use N MiB instead of the computed size (must not be below it)
  --cpu-count N            vCPUs for the enclave (default 2: one core with its hyper-thread)
  --enclave-cid N          vsock CID of the enclave (default 16; sealed-host connects to vsock:16:5000)
  --enclave-name NAME      name given to nitro-cli (default sealed-enclave)
  --replace                terminate a running enclave of the same name first
  --configure-allocator    if the allocator reserves too little, write its configuration for this
                           size (old file kept as .bak) and restart nitro-enclaves-allocator.service
                           (needs root; stop running enclaves first)
  --allocator-file PATH    allocator configuration (default /etc/nitro_enclaves/allocator.yaml)
  --debug-mode             start in debug mode: console readable, but every PCR is zero, so no
                           client policy and no KMS key policy accepts it (troubleshooting only)
  --dry-run                print the sizing and the commands, change and start nothing
  -h, --help               this text

Prints `key: value` lines (eif_bytes, memory_mib, cpu_count, ...) and the commands it runs.
EOF
}

die() {
    echo "run-enclave.sh: error: $*" >&2
    exit 1
}

is_uint() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "${#1}" -le 9 ]
}

eif=""
models_mib=0
working_set_mib=512
memory_override=""
cpu_count=2
enclave_cid="$ENCLAVE_CID_DEFAULT"
enclave_name="sealed-enclave"
replace=false
configure_allocator=false
allocator_file="/etc/nitro_enclaves/allocator.yaml"
debug_mode=false
dry_run=false

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --eif) need_value "$1" $#; eif="$2"; shift 2 ;;
        --models-mib) need_value "$1" $#; models_mib="$2"; shift 2 ;;
        --working-set-mib) need_value "$1" $#; working_set_mib="$2"; shift 2 ;;
        --memory-mib) need_value "$1" $#; memory_override="$2"; shift 2 ;;
        --cpu-count) need_value "$1" $#; cpu_count="$2"; shift 2 ;;
        --enclave-cid) need_value "$1" $#; enclave_cid="$2"; shift 2 ;;
        --enclave-name) need_value "$1" $#; enclave_name="$2"; shift 2 ;;
        --allocator-file) need_value "$1" $#; allocator_file="$2"; shift 2 ;;
        --replace) replace=true; shift ;;
        --configure-allocator) configure_allocator=true; shift ;;
        --debug-mode) debug_mode=true; shift ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ -n "$eif" ] || { usage >&2; die "--eif is required"; }
[ -f "$eif" ] || die "EIF $eif not found (build it with scripts/build-eif.sh)"
for pair in "models-mib:$models_mib" "working-set-mib:$working_set_mib" "cpu-count:$cpu_count" "enclave-cid:$enclave_cid"; do
    is_uint "${pair#*:}" || die "--${pair%%:*} must be a whole number, got '${pair#*:}'"
done
[ -z "$memory_override" ] || is_uint "$memory_override" || die "--memory-mib must be a whole number, got '$memory_override'"
[ "$cpu_count" -ge 1 ] || die "--cpu-count must be at least 1"
# vsock CIDs 0-2 are reserved (hypervisor, local, host) and 3 is the parent instance.
[ "$enclave_cid" -ge 4 ] || die "--enclave-cid must be 4 or more (0-3 are reserved; 3 is the parent)"
[[ "$enclave_name" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "--enclave-name must match [A-Za-z0-9._-]{1,64}"

# --- Sizing --------------------------------------------------------------------------------------
MIB=1048576
eif_bytes="$(wc -c <"$eif" | tr -d ' ')"
[ "$eif_bytes" -gt 0 ] || die "EIF $eif is empty"
eif_min_mib=$(((4 * eif_bytes + MIB - 1) / MIB))
needed=$((eif_min_mib + models_mib + working_set_mib))
[ "$needed" -ge "$MIN_MEMORY_MIB" ] || needed="$MIN_MEMORY_MIB"
needed=$(((needed + 1) / 2 * 2))
if [ -n "$memory_override" ]; then
    [ "$memory_override" -ge "$needed" ] || die "--memory-mib $memory_override is below the computed minimum of $needed MiB"
    memory_mib=$(((memory_override + 1) / 2 * 2))
else
    memory_mib="$needed"
fi

echo "eif: $eif"
echo "eif_bytes: $eif_bytes"
echo "eif_x4_mib: $eif_min_mib"
echo "models_mib: $models_mib"
echo "working_set_mib: $working_set_mib"
echo "memory_mib: $memory_mib"
echo "cpu_count: $cpu_count"
echo "enclave_cid: $enclave_cid"

# With hyper-threading a CPU count must cover whole cores (the allocator enforces it too).
if command -v lscpu >/dev/null 2>&1; then
    threads="$(lscpu 2>/dev/null | sed -n 's/^Thread(s) per core: *\([0-9]*\).*/\1/p' | head -n1)"
    if [ -n "$threads" ] && [ "$threads" -gt 0 ] && [ $((cpu_count % threads)) -ne 0 ]; then
        die "--cpu-count $cpu_count is not a multiple of the $threads threads per core of this instance"
    fi
fi

# --- Allocator -----------------------------------------------------------------------------------
# Reads memory_mib and cpu_count / cpu_pool from the allocator's flat YAML (the same subset its
# own bash parser accepts: `key: value` lines after `---`, comments ignored). Prints "MEM CPUS".
read_allocator() {
    python3 - "$1" <<'PY'
import re, sys
mem = cpus = None
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    m = re.fullmatch(r"(memory_mib|cpu_count|cpu_pool)\s*:\s*\"?([^\"]*)\"?", line)
    if not m:
        continue
    key, value = m.group(1), m.group(2).strip()
    if key == "memory_mib" and value.isdigit():
        mem = int(value)
    elif key == "cpu_count" and value.isdigit():
        cpus = int(value)
    elif key == "cpu_pool":
        n = 0
        for part in value.split(","):
            lo, _, hi = part.strip().partition("-")
            n += (int(hi) - int(lo) + 1) if hi else 1
        cpus = n
print(mem if mem is not None else 0, cpus if cpus is not None else 0)
PY
}

allocator_yaml() {
    cat <<EOF
---
# Written by sealed-inference scripts/run-enclave.sh for $enclave_name
# (EIF $eif_bytes bytes, models $models_mib MiB, working set $working_set_mib MiB).
# Format: aws-nitro-enclaves-cli bootstrap/allocator.yaml. Applied by $ALLOCATOR_SERVICE.
#
# How much memory to allocate for enclaves (in MiB).
memory_mib: $memory_mib
#
# How many CPUs to reserve for enclaves.
cpu_count: $cpu_count
EOF
}

run() {
    echo "+ $*"
    if [ "$dry_run" = false ]; then
        "$@"
    fi
}

allocator_ok=false
if [ -f "$allocator_file" ]; then
    read -r alloc_mem alloc_cpus < <(read_allocator "$allocator_file") ||
        die "cannot parse $allocator_file"
    echo "allocator: $allocator_file memory_mib=$alloc_mem cpus=$alloc_cpus"
    if [ "$alloc_mem" -ge "$memory_mib" ] && [ "$alloc_cpus" -ge "$cpu_count" ]; then
        allocator_ok=true
    fi
else
    echo "allocator: $allocator_file missing"
fi

if [ "$configure_allocator" = true ] && [ "$allocator_ok" = true ]; then
    # Restarting the allocator fails while any enclave runs; leave a sufficient reservation alone.
    echo "allocator: already reserves enough, left unchanged"
elif [ "$configure_allocator" = true ]; then
    echo "allocator_new:"
    allocator_yaml | sed 's/^/  /'
    if [ "$dry_run" = false ]; then
        [ -w "$(dirname "$allocator_file")" ] || die "cannot write $allocator_file (run as root)"
        if [ -f "$allocator_file" ]; then
            cp -p "$allocator_file" "$allocator_file.bak"
        fi
        allocator_yaml >"$allocator_file.tmp"
        mv "$allocator_file.tmp" "$allocator_file"
        echo "wrote $allocator_file (previous version: $allocator_file.bak)"
    fi
    # The allocator refuses to re-online CPUs while an enclave runs; it reserves huge pages, which
    # can fail on a long-running instance with fragmented memory (reboot, then it runs at boot).
    run systemctl restart "$ALLOCATOR_SERVICE"
elif [ "$allocator_ok" = false ]; then
    msg="the allocator does not reserve enough for this enclave (needs memory_mib >= $memory_mib and cpu_count >= $cpu_count in $allocator_file); rerun with --configure-allocator"
    if [ "$dry_run" = true ]; then
        echo "warning: $msg"
    else
        die "$msg"
    fi
fi

# --- Start ---------------------------------------------------------------------------------------
command -v nitro-cli >/dev/null 2>&1 || [ "$dry_run" = true ] ||
    die "nitro-cli not found (install aws-nitro-enclaves-cli with scripts/setup-instance.sh)"

if [ "$dry_run" = false ]; then
    running="$(nitro-cli describe-enclaves)" || die "nitro-cli describe-enclaves failed"
    if printf '%s' "$running" | python3 -c '
import json, sys
name = sys.argv[1]
sys.exit(0 if any(e.get("EnclaveName") == name for e in json.load(sys.stdin)) else 1)' "$enclave_name"; then
        [ "$replace" = true ] || die "an enclave named $enclave_name is already running (use --replace, or nitro-cli terminate-enclave --enclave-name $enclave_name)"
        run nitro-cli terminate-enclave --enclave-name "$enclave_name"
    fi
elif [ "$replace" = true ]; then
    echo "+ nitro-cli terminate-enclave --enclave-name $enclave_name   (if it runs)"
fi

args=(nitro-cli run-enclave --eif-path "$eif" --memory "$memory_mib" --cpu-count "$cpu_count"
    --enclave-cid "$enclave_cid" --enclave-name "$enclave_name")
if [ "$debug_mode" = true ]; then
    echo "warning: --debug-mode: the enclave's PCRs will be all zeros; clients and KMS will refuse it" >&2
    args+=(--debug-mode)
fi
run "${args[@]}"
