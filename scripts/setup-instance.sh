#!/usr/bin/env bash
# Prepares an Amazon Linux 2023 EC2 instance, launched with Nitro Enclaves enabled
# (`--enclave-options Enabled=true`), to build and run the sealed-enclave image:
#
# 1. installs the Nitro Enclaves CLI (aws-nitro-enclaves-cli, -devel) and docker with dnf
#    (AWS Nitro Enclaves User Guide, "Install the Nitro Enclaves CLI on Linux");
# 2. adds the operator's user to the `ne` group (may use /dev/nitro_enclaves) and `docker`;
# 3. writes /etc/nitro_enclaves/allocator.yaml (memory_mib, cpu_count; format of
#    aws-nitro-enclaves-cli bootstrap/allocator.yaml) unless it already reserves enough;
# 4. enables and starts nitro-enclaves-allocator.service and docker.
#
# It does not enable nitro-enclaves-vsock-proxy.service: sealed-host runs its own allow-listed KMS
# proxy on vsock port 8000 (host.toml `kms_proxy`), and two listeners cannot share the port.
#
# Huge pages: the allocator reserves the enclave memory as huge pages when its service starts.
# On an instance that has run for a while, memory can be too fragmented for a large reservation
# ("Failed to configure entire amount of requested memory"): reboot, the service runs at boot.
# Size the reservation with `scripts/run-enclave.sh --eif EIF --models-mib N --dry-run`.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo scripts/setup-instance.sh [--user NAME] [--memory-mib N] [--cpu-count N] [--dry-run]

Install and configure the Nitro Enclaves CLI, its allocator, docker, git, gcc and rustup (for
the user) on Amazon Linux 2023.

  --user NAME       user to add to the ne and docker groups (default: $SUDO_USER, else ec2-user)
  --memory-mib N    memory the allocator reserves for enclaves (default 2048)
  --cpu-count N     vCPUs the allocator reserves (default 2; whole cores, CPU 0 stays with the host)
  --dry-run         print the commands and the allocator file, change nothing
  -h, --help        this text

Log out and in again afterwards for the group changes to apply.
EOF
}

die() {
    echo "setup-instance.sh: error: $*" >&2
    exit 1
}

user="${SUDO_USER:-ec2-user}"
memory_mib=2048
cpu_count=2
dry_run=false
allocator_file="/etc/nitro_enclaves/allocator.yaml"
while [ $# -gt 0 ]; do
    case "$1" in
        --user) [ $# -ge 2 ] || die "--user needs a name"; user="$2"; shift 2 ;;
        --memory-mib) [ $# -ge 2 ] || die "--memory-mib needs a value"; memory_mib="$2"; shift 2 ;;
        --cpu-count) [ $# -ge 2 ] || die "--cpu-count needs a value"; cpu_count="$2"; shift 2 ;;
        --dry-run) dry_run=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$memory_mib" =~ ^[0-9]{1,9}$ ]] && [ "$memory_mib" -ge 64 ] || die "--memory-mib must be a whole number >= 64"
[[ "$cpu_count" =~ ^[0-9]{1,4}$ ]] && [ "$cpu_count" -ge 1 ] || die "--cpu-count must be a whole number >= 1"
[[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user '$user' is not a valid user name"

run() {
    echo "+ $*"
    if [ "$dry_run" = false ]; then
        "$@"
    fi
}

# Amazon Linux 2023 only: package names and dnf are what this script knows.
os_id="$(. /etc/os-release 2>/dev/null && echo "${ID:-}:${VERSION_ID:-}")" || os_id=""
if [ "$os_id" != "amzn:2023" ]; then
    msg="this is '$os_id', not Amazon Linux 2023 (amzn:2023); see the AWS guide for other distributions"
    if [ "$dry_run" = true ]; then echo "warning: $msg"; else die "$msg"; fi
fi
if [ "$dry_run" = false ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo scripts/setup-instance.sh)"
fi
if [ "$dry_run" = false ] && ! id "$user" >/dev/null 2>&1; then
    die "user $user does not exist (use --user)"
fi

run dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel docker git gcc
run usermod -aG ne "$user"
run usermod -aG docker "$user"

allocator_yaml() {
    cat <<EOF
---
# Written by sealed-inference scripts/setup-instance.sh.
# Format: aws-nitro-enclaves-cli bootstrap/allocator.yaml; applied by nitro-enclaves-allocator.service.
#
# How much memory to allocate for enclaves (in MiB).
memory_mib: $memory_mib
#
# How many CPUs to reserve for enclaves.
cpu_count: $cpu_count
EOF
}
echo "allocator ($allocator_file):"
allocator_yaml | sed 's/^/  /'
if [ "$dry_run" = false ]; then
    if [ -f "$allocator_file" ]; then
        cp -p "$allocator_file" "$allocator_file.bak"
    fi
    allocator_yaml >"$allocator_file.tmp"
    mv "$allocator_file.tmp" "$allocator_file"
fi

run systemctl enable --now nitro-enclaves-allocator.service
run systemctl enable --now docker

# Rust for $user: rustup only. The toolchain the build is pinned to (rust-toolchain.toml: version,
# clippy, rustfmt, the musl target) is installed by rustup on the first cargo command in the
# checkout, so the instance builds with exactly the compiler the published PCRs came from.
if [ "$dry_run" = false ] && runuser -u "$user" -- bash -lc 'command -v rustup' >/dev/null 2>&1; then
    echo "rustup already installed for $user"
else
    run runuser -u "$user" -- bash -c "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain none"
fi

if [ "$dry_run" = false ]; then
    [ -e /dev/nitro_enclaves ] ||
        echo "warning: /dev/nitro_enclaves is missing: launch the instance with Nitro Enclaves enabled (--enclave-options Enabled=true)" >&2
    nitro-cli --version
fi
cat <<EOF

Next (as $user, after logging in again):
  scripts/build-eif.sh --out target/eif                # prints PCR0/1/2
  scripts/run-enclave.sh --eif target/eif/sealed-enclave.eif --models-mib N --dry-run
  scripts/render-aws-policies.sh --measurements target/eif/measurements.json ...
EOF
