#!/usr/bin/env bash
# Install fastopt (editable) with its test extras into the current Python environment, and
# torch's CPU build for the torch cross-checks and fastopt.torch's tests.
#
# torch is pinned to a release whose CPU build this project's machines serve from their local
# wheel folder (pip prefers 2.13.0+cpu there). Elsewhere the same pin installs PyPI's build of
# that release, which also runs on the CPU; point pip at PyTorch's CPU wheel index
# (PIP_EXTRA_INDEX_URL) for the smaller CPU-only build. Set FASTOPT_TORCH=none to skip torch
# (its tests are then skipped), or FASTOPT_TORCH to another requirement to test against it.
# The mpi extra (mpi4py and MPICH wheels) runs fastopt.distributed's multi-process tests.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_spec="${FASTOPT_TORCH:-torch==2.13.0}"
python -m pip install --upgrade pip >/dev/null
if [ "$torch_spec" = "none" ]; then
    python -m pip install -e ".[test,mpi]"
else
    python -m pip install -e ".[test,mpi]" "$torch_spec"
fi
