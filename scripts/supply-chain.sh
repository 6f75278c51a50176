#!/usr/bin/env bash
# Supply-chain checks (docs/supply-chain.md): cargo-deny (advisories, licences, bans incl. crate
# boundaries, sources) and cargo-audit, both OFFLINE against the RustSec advisory snapshot vendored
# in supply-chain/. The tools are installed at pinned versions into target/tools with
# `cargo install --locked` (crates.io only; CI has no network to GitHub).
set -euo pipefail

# Pinned tool versions (both build with the workspace's Rust 1.95; MSRV 1.88).
CARGO_DENY_VERSION="0.20.2"
CARGO_AUDIT_VERSION="0.22.2"

usage() {
    cat <<'EOF'
Usage: scripts/supply-chain.sh [--install-only] [--deny-only] [--audit-only]
       scripts/supply-chain.sh --refresh-snapshot ADVISORY_DB_GIT_DIR

Install cargo-deny 0.20.2 and cargo-audit 0.22.2 (cargo install --locked --root target/tools,
skipped when the pinned version is already there), unpack the vendored RustSec advisory snapshot
(supply-chain/advisory-db.tar.gz) into a local git repository under target/supply-chain, then run
offline:

  cargo deny --offline check advisories bans licenses sources   (policy: deny.toml)
  cargo audit --no-fetch --db <snapshot> (same ignores as deny.toml)

Findings are as of the snapshot date (supply-chain/advisory-db.toml); refreshing it is described
in docs/supply-chain.md.

  --install-only   install the tools and stop
  --refresh-snapshot DIR
                   replace supply-chain/advisory-db.tar.gz and advisory-db.toml with the HEAD of
                   DIR, a clone (or bare mirror) of https://github.com/rustsec/advisory-db; then
                   run the checks and write a decision for every new finding
  --deny-only      run only cargo-deny
  --audit-only     run only cargo-audit
  -h, --help       this text
EOF
}

die() {
    echo "supply-chain.sh: error: $*" >&2
    exit 1
}

install_only=false
run_deny=true
run_audit=true
refresh_from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --refresh-snapshot)
            [ $# -ge 2 ] || die "--refresh-snapshot needs the advisory-db git directory"
            refresh_from="$2"
            shift 2
            ;;
        --install-only) install_only=true; shift ;;
        --deny-only) run_audit=false; shift ;;
        --audit-only) run_deny=false; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
meta="supply-chain/advisory-db.toml"
tarball="supply-chain/advisory-db.tar.gz"

# --- 0. Refreshing the snapshot (a maintainer, with network to GitHub, not CI) --------------------
if [ -n "$refresh_from" ]; then
    # Works for a bare mirror (--git-dir) and for a clone's work tree (-C).
    rgit() {
        if [ "$(git --git-dir="$refresh_from" rev-parse --is-bare-repository 2>/dev/null)" = true ]; then
            git --git-dir="$refresh_from" "$@"
        else
            git -C "$refresh_from" "$@"
        fi
    }
    rgit rev-parse --verify --quiet 'HEAD^{commit}' >/dev/null ||
        die "$refresh_from is not a git repository with a HEAD commit"
    new_commit="$(rgit rev-parse HEAD)"
    new_date="$(rgit show -s --format=%cI HEAD)"
    rgit archive --format=tar --prefix=advisory-db/ "$new_commit" crates rust LICENSE.txt LICENSES README.md |
        gzip -9 -n >"$tarball.new" || die "git archive of $refresh_from failed"
    mv "$tarball.new" "$tarball"
    new_sha="$(sha256sum "$tarball" | cut -d' ' -f1)"
    sed -i -e "s/^commit = \".*\"\$/commit = \"$new_commit\"/" \
        -e "s/^date = \".*\"\$/date = \"$new_date\"/" \
        -e "s/^sha256 = \".*\"\$/sha256 = \"$new_sha\"/" "$meta"
    echo "ok: snapshot refreshed to $new_commit ($new_date); now run scripts/supply-chain.sh"
    exit 0
fi

tools="$repo/target/tools"
deny="$tools/bin/cargo-deny"
audit="$tools/bin/cargo-audit"

# --- 1. Tools -------------------------------------------------------------------------------------
# install NAME VERSION BINARY [EXTRA cargo install ARGS...]: skipped if BINARY reports VERSION.
install() {
    local name="$1" version="$2" bin="$3"
    shift 3
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qx "$name $version"; then
        echo "ok: $name $version already in target/tools"
        return
    fi
    local start=$SECONDS
    echo "installing $name $version into target/tools (a few minutes on a cold cache)"
    cargo install --locked --version "$version" --root "$tools" "$@" "$name" ||
        die "cargo install $name $version failed"
    "$bin" --version | grep -qx "$name $version" || die "$bin does not report $name $version"
    echo "ok: installed $name $version in $((SECONDS - start)) s"
}
# cargo-deny's `--version` prints "cargo-deny X"; cargo-audit's prints "cargo-audit-audit X" when
# run directly, so it is checked through `cargo-audit audit --version` below.
install cargo-deny "$CARGO_DENY_VERSION" "$deny"
# No default features: `binary-scanning` (auditing compiled binaries) is not used here and adds
# a large build.
if [ -x "$audit" ] && "$audit" audit --version 2>/dev/null | grep -q " $CARGO_AUDIT_VERSION\$"; then
    echo "ok: cargo-audit $CARGO_AUDIT_VERSION already in target/tools"
else
    start=$SECONDS
    echo "installing cargo-audit $CARGO_AUDIT_VERSION into target/tools (a few minutes on a cold cache)"
    cargo install --locked --version "$CARGO_AUDIT_VERSION" --root "$tools" \
        --no-default-features cargo-audit || die "cargo install cargo-audit $CARGO_AUDIT_VERSION failed"
    echo "ok: installed cargo-audit $CARGO_AUDIT_VERSION in $((SECONDS - start)) s"
fi
[ "$install_only" = false ] || exit 0

# --- 2. The advisory snapshot ---------------------------------------------------------------------
[ -f "$meta" ] && [ -f "$tarball" ] || die "$meta or $tarball missing"
field() {
    sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" "$meta"
}
commit="$(field commit)"
date="$(field date)"
sha256="$(field sha256)"
[ -n "$commit" ] && [ -n "$date" ] && [ -n "$sha256" ] || die "$meta lacks commit, date or sha256"
echo "$sha256  $tarball" | sha256sum --check --quiet - ||
    die "$tarball does not match the sha256 in $meta (refresh both together: docs/supply-chain.md)"

# cargo-deny opens a database only as a git checkout (it reads the HEAD commit time) at
# <db-path>/<name>-<hash of the URL>, the path it derives from deny.toml's db-urls entry
# (https://github.com/rustsec/advisory-db) in this pinned version. cargo-audit reads the same tree.
db_root="target/supply-chain/advisory-dbs"
db="$db_root/advisory-db-3157b0e258782691"
stamp="$db_root/snapshot.sha256"
# Reuse the repository an earlier run made from this very tarball if nothing in it changed
# (unpacking and committing 2,000 files takes seconds on a busy disk).
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha256" ] &&
    git -C "$db" rev-parse --verify --quiet HEAD >/dev/null 2>&1 &&
    [ -z "$(git -C "$db" status --porcelain 2>/dev/null)" ]; then
    echo "ok: advisory snapshot repository up to date in $db"
else
    rm -rf "$db" "$stamp"
    mkdir -p "$db"
    tar -xzf "$tarball" -C "$db" --strip-components=1
    (
        cd "$db"
        # One commit dated like the upstream one; identity and hooks fixed so that no user or
        # system git configuration changes the result.
        export GIT_AUTHOR_NAME="sealed supply-chain.sh" GIT_AUTHOR_EMAIL="supply-chain@localhost"
        export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
        export GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date"
        git init --quiet --initial-branch=main .
        git -c core.hooksPath=/dev/null add --all
        git -c core.hooksPath=/dev/null -c commit.gpgSign=false commit --quiet \
            -m "RustSec advisory-db snapshot of $commit"
    ) || die "cannot make a git repository of the advisory snapshot in $db"
    echo "$sha256" >"$stamp"
fi
count="$(find "$db/crates" -name 'RUSTSEC-*.md' | wc -l)"
age_days=$((($(date +%s) - $(date -d "$date" +%s)) / 86400))
echo "advisory snapshot: rustsec/advisory-db $commit, $date ($age_days days old), $count crate advisories"
if [ "$age_days" -gt 90 ]; then
    # cargo-deny and cargo-audit call a database older than 90 days stale. Not fatal: the result of
    # a commit must not change with the calendar; refresh the snapshot (docs/supply-chain.md).
    echo "WARNING: the advisory snapshot is more than 90 days old; findings are as of $date" >&2
fi

# The crates' sources (licence files, manifests) must be in the local cache for an offline run.
cargo fetch --locked --quiet || die "cargo fetch --locked failed"

status=0

# --- 3. cargo-deny --------------------------------------------------------------------------------
if [ "$run_deny" = true ]; then
    start=$SECONDS
    if "$deny" --offline --locked check --show-stats advisories bans licenses sources; then
        echo "ok: cargo deny ($((SECONDS - start)) s)"
    else
        echo "FAIL: cargo deny" >&2
        status=1
    fi
fi

# --- 4. cargo-audit -------------------------------------------------------------------------------
if [ "$run_audit" = true ]; then
    # The ignores are deny.toml's, each with its written decision there and in docs/supply-chain.md.
    ignores=()
    while read -r id; do
        ignores+=(--ignore "$id")
    done < <(sed -n 's/^ *{ *id *= *"\(RUSTSEC-[0-9]*-[0-9]*\)".*/\1/p' deny.toml)
    start=$SECONDS
    # --no-fetch: use the snapshot as is. Unmaintained, unsound and yanked are denied, as in
    # deny.toml; `--stale` because the snapshot's age is reported above instead.
    if "$audit" audit --no-fetch --stale --db "$db" --file Cargo.lock \
        --deny unmaintained --deny unsound --deny yanked "${ignores[@]}"; then
        echo "ok: cargo audit ($((SECONDS - start)) s)"
    else
        echo "FAIL: cargo audit" >&2
        status=1
    fi
fi

exit "$status"
