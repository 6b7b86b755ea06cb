#!/usr/bin/env bash
# The README's test command, with a fresh Numba cache so no stale compiled kernel is reused.
# Arguments go to pytest; without paths it runs the whole suite (pyproject's testpaths: tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR="$(mktemp -d)"
trap 'rm -rf "$NUMBA_CACHE_DIR"' EXIT
python -m pytest "$@"
