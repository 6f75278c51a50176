#!/usr/bin/env bash
# Installs sealed-host (and the `sealed` CLI) as a systemd service on the parent instance:
#
#   /usr/local/bin/sealed-host, /usr/local/bin/sealed
#   /etc/systemd/system/sealed-host.service          (deploy/host/sealed-host.service)
#   /etc/sealed-inference/host.toml                   (deploy/host/host.toml, region filled in; kept if present)
#   /etc/sealed-inference/vsock-proxy.yaml            (allowlist: kms.REGION.amazonaws.com:443; kept if present)
#   /var/lib/sealed-inference/models/                 (sealed models loaded at startup)
#
# then reloads systemd and enables the unit (it does not start it: start it once the enclave runs,
# see docs/deploy.md). Existing configuration files are never overwritten; the new version is
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
Usage: scripts/install-host.sh --region REGION [--root DIR] [--binaries DIR] [--no-enable]

  --region REGION   AWS region of the KMS keys (fills host.toml and the proxy allowlist)
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
while [ $# -gt 0 ]; do
    case "$1" in
        --region) region="${2:?--region needs a value}"; shift 2 ;;
        --root) root="${2:?--root needs a value}"; shift 2 ;;
        --binaries) binaries="${2:?--binaries needs a value}"; shift 2 ;;
        --no-enable) enable=0; shift ;;
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

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

if [ -z "$binaries" ]; then
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
    systemctl enable sealed-host.service
    echo "enabled sealed-host.service; start it with: sudo systemctl start sealed-host"
fi
