#!/usr/bin/env bash
# Install fastopt with its test extras into the current Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip >/dev/null
python -m pip install -e ".[test]"
