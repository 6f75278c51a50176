#!/usr/bin/env bash
# Installs sealed-host (and the `sealed` CLI) as a systemd service on the parent instance:
#
#   /usr/local/bin/sealed-host, /usr/local/bin/sealed
#   /etc/systemd/system/sealed-host.service          (deploy/host/sealed-host.service)
#   /etc/sealed-inference/host.toml                   (deploy/host/host.toml, region filled in; kept if present)
#   /etc/sealed-inference/vsock-proxy.yaml            (allowlist: kms.REGION.amazonaws.com:443; kept if present)
#   /var/lib/sealed-inference/models/                 (sealed models loaded at startup)
#
# and, with --eif, the enclave's boot unit:
#
#   /var/lib/sealed-inference/sealed-enclave.eif      (the image built by scripts/build-eif.sh)
#   /usr/local/lib/sealed-inference/run-enclave.sh    (scripts/run-enclave.sh)
#   /etc/sealed-inference/enclave.env                 (EIF path, --models-mib, --cpu-count)
#   /etc/systemd/system/sealed-enclave.service        (deploy/enclave/sealed-enclave.service)
#
# then reloads systemd and enables the units (it starts nothing; see docs/deploy.md). Existing configuration files are never overwritten; the new version is
# written beside them as *.new.
#
# It also creates the system user `sealed-host` the unit runs as, and gives its group read access to
# the configuration and the models directory.
#
# --root DIR installs under DIR instead of / and skips the user and systemctl (CI checks the result
# that way).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install-host.sh --region REGION [--eif PATH [--models-mib N] [--cpu-count N]]
                               [--root DIR] [--binaries DIR] [--no-enable]

  --region REGION   AWS region of the KMS keys (fills host.toml and the proxy allowlist)
  --eif PATH        also install this enclave image and sealed-enclave.service, which starts it
                    at boot with scripts/run-enclave.sh (before sealed-host)
  --models-mib N    decrypted model memory for run-enclave.sh (default 0; see its sizing rule)
  --cpu-count N     enclave vCPUs for run-enclave.sh (default 2)
  --root DIR        install under DIR instead of / (no systemctl); for packaging and tests
  --binaries DIR    take sealed-host and sealed from DIR instead of building them
                    (default: cargo build --release --locked -p sealed-host -p sealed-client)
  --no-enable       do not run systemctl daemon-reload / enable
EOF
}

region=""
root="/"
binaries=""
enable=1
eif=""
models_mib=0
cpu_count=2
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="${2:?--region needs a value}"; shift 2 ;;
        --root) root="${2:?--root needs a value}"; shift 2 ;;
        --binaries) binaries="${2:?--binaries needs a value}"; shift 2 ;;
        --no-enable) enable=0; shift ;;
        --eif) eif="${2:?--eif needs a value}"; shift 2 ;;
        --models-mib) models_mib="${2:?--models-mib needs a value}"; shift 2 ;;
        --cpu-count) cpu_count="${2:?--cpu-count needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-host.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

if [ -z "$region" ]; then
    echo "install-host.sh: --region is required (for example --region us-east-1)" >&2
    exit 2
fi
# AWS region names: lowercase letters, digits and dashes (us-east-1, ap-southeast-2, us-gov-west-1).
if ! [[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]]; then
    echo "install-host.sh: '$region' is not an AWS region name" >&2
    exit 2
fi

if ! [[ "$models_mib" =~ ^[0-9]{1,7}$ ]] || ! [[ "$cpu_count" =~ ^[0-9]{1,4}$ ]] || [ "$cpu_count" -lt 1 ]; then
    echo "install-host.sh: --models-mib and --cpu-count take whole numbers (cpu count >= 1)" >&2
    exit 2
fi
if [ -n "$eif" ] && [ ! -f "$eif" ]; then
    echo "install-host.sh: --eif $eif: no such file (build it with scripts/build-eif.sh)" >&2
    exit 2
fi

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [ -z "$binaries" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        # Typical under sudo: rustup lives in the invoking user's home, not root's PATH.
        echo "install-host.sh: cargo not found; build as your user first and pass the binaries:" >&2
        echo "  cargo build --release --locked -p sealed-host -p sealed-client" >&2
        echo "  sudo ./scripts/install-host.sh --binaries target/release --region $region ..." >&2
        exit 1
    fi
    cargo build --release --locked -p sealed-host -p sealed-client
    binaries="$repo/target/release"
fi
for bin in sealed-host sealed; do
    if [ ! -x "$binaries/$bin" ]; then
        echo "install-host.sh: $binaries/$bin not found or not executable" >&2
        exit 1
    fi
done

root="${root%/}"
bin_dir="$root/usr/local/bin"
unit_dir="$root/etc/systemd/system"
etc_dir="$root/etc/sealed-inference"
models_dir="$root/var/lib/sealed-inference/models"

install -d -m 0755 "$bin_dir" "$unit_dir"
install -d -m 0750 "$etc_dir"
install -d -m 0750 "$models_dir"
install -m 0755 "$binaries/sealed-host" "$bin_dir/sealed-host"
install -m 0755 "$binaries/sealed" "$bin_dir/sealed"
install -m 0644 deploy/host/sealed-host.service "$unit_dir/sealed-host.service"

# Writes $2 to $1 unless $1 exists; then writes $1.new and says so.
place() {
    local dest="$1" content="$2"
    if [ -e "$dest" ]; then
        printf '%s\n' "$content" > "$dest.new"
        chmod 0640 "$dest.new"
        echo "kept $dest (new version in $dest.new)"
    else
        printf '%s\n' "$content" > "$dest"
        chmod 0640 "$dest"
        echo "wrote $dest"
    fi
}

kms_host="kms.$region.amazonaws.com"
# The example config names us-east-1; every other setting stays as shipped.
place "$etc_dir/host.toml" "$(sed "s/kms\.us-east-1\.amazonaws\.com/$kms_host/g" deploy/host/host.toml)"
# The AWS vsock-proxy allowlist format (the same file works for AWS's own vsock-proxy).
place "$etc_dir/vsock-proxy.yaml" "allowlist:
- {address: $kms_host, port: 443}"

echo "installed sealed-host and sealed into $bin_dir, the unit into $unit_dir"

units="sealed-host.service"
if [ -n "$eif" ]; then
    lib_dir="$root/usr/local/lib/sealed-inference"
    install -d -m 0755 "$lib_dir"
    install -m 0755 scripts/run-enclave.sh "$lib_dir/run-enclave.sh"
    # The image is replaced on every install: installing a new release is the point.
    install -m 0644 "$eif" "$root/var/lib/sealed-inference/sealed-enclave.eif"
    install -m 0644 deploy/enclave/sealed-enclave.service "$unit_dir/sealed-enclave.service"
    place "$etc_dir/enclave.env" "# Read by sealed-enclave.service (scripts/run-enclave.sh arguments).
SEALED_ENCLAVE_EIF=/var/lib/sealed-inference/sealed-enclave.eif
SEALED_ENCLAVE_MODELS_MIB=$models_mib
SEALED_ENCLAVE_CPU_COUNT=$cpu_count"
    units="sealed-enclave.service $units"
    echo "installed the enclave image and sealed-enclave.service"
fi

if [ "$root" = "" ]; then
    # The unit runs as this unprivileged system user; its group reads the configuration and models.
    if ! id sealed-host >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /sbin/nologin sealed-host
    fi
    chgrp -R sealed-host "$etc_dir" "$root/var/lib/sealed-inference"
    chmod -R g+rX "$etc_dir" "$root/var/lib/sealed-inference"
fi

if [ "$root" = "" ] && [ "$enable" = 1 ]; then
    systemctl daemon-reload
    # shellcheck disable=SC2086 # a list of unit names
    systemctl enable $units
    echo "enabled $units; start with: sudo systemctl start $units"
fi
