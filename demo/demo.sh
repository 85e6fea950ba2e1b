#!/usr/bin/env bash
# The cowfs tour: what `make demo` runs (in a private mount namespace, temp store).
# It grows as features land; each step says what it shows.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$here/.venv/bin:$PATH"
work="$(mktemp -d /tmp/cowfs-demo.XXXXXX)"
export COWFS_ROOT="$work/store"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cowfs version"
cowfs version
step "commands available"
cowfs --help | sed -n '/COMMAND/,$p'
echo
echo "demo: done (temp store $work removed)"
