"""Generated code: float32 kernels do float32 arithmetic, and the README's examples run."""

from __future__ import annotations

import importlib.util
import os
import re

import numba
import numpy as np
import pytest

import fastopt

from fastopt import _numba_backend
from fastopt.kernels.cpu import generic
from fastopt._specs import SPECS

# Every algorithm with every flag on, and with every flag off (each kernel's two extremes).
CONFIGS = [(spec, value) for spec in SPECS.values() for value in (True, False)]


# The parallel builds (the same element math in a prange loop) and the bfloat16 builds with
# every flag off run under -m slow; the default run has every algorithm's serial float32
# kernel both ways and its bfloat16 kernel (uint16 bit patterns, float32 math) with flags on.
_VARIANTS = [
    pytest.param(spec, value, parallel, storage,
                 id=f"{spec.name}-flags={value}-{'parallel' if parallel else 'serial'}"
                    f"{'-' + storage if storage else ''}",
                 marks=pytest.mark.slow if parallel or (storage and not value) else ())
    for spec, value in CONFIGS for parallel in (False, True) for storage in ("", "bf16")
    if not (parallel and storage)]


@pytest.mark.parametrize("spec,value,parallel,storage", _VARIANTS)
def test_float32_kernel_has_no_float64_element_math(spec, value, parallel, storage):
    """A Python literal in a float32 kernel would promote the element math to float64.

    The kernels are recompiled here without the disk cache (cached code cannot be inspected).
    Host-side scalars are float64 by design and truncated once before the loop: fptrunc is
    expected, fpext (float32 promoted to float64) never is. ``storage="bf16"``: every array
    bfloat16 bit patterns, the math float32 all the same.
    """
    flags = tuple(value for _ in spec.flags)
    n = 2 + len(spec.states)
    if storage:
        cached = generic.kernel(spec.rule, spec.state_names, spec.active(flags),
                                tuple(zip(spec.flag_names, flags)), spec.scalar_call, parallel,
                                False, spec.reads_grad, (storage,) * n)
        arrays = [np.ones(64, np.uint16) for _ in range(n)]
    else:
        cached = _numba_backend.kernel(spec, flags, parallel)
        arrays = [np.ones(64, np.float32) for _ in range(n)]
    fresh = numba.njit(cached.py_func, parallel=parallel, error_model="numpy")
    # Scalar states (NAdam's mu_product, ASGD's eta and mu) are kernel arguments too.
    options = {**spec.defaults(), "lr": 0.1, **{name: 0.5 for name in spec.scalar_names}}
    fresh(*arrays, *_numba_backend._arguments(spec, 3, options))
    llvm = "".join(fresh.inspect_llvm().values())
    assert "fptrunc double" in llvm  # the host scalars, truncated once
    assert "fpext" not in llvm
    assert re.search(r"fdiv float|fmul float|<\d+ x float>", llvm)  # float32 element math


README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write checkpoint files
    text = open(README).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    found: dict = {}
    for block in blocks:
        if "import torch" in block and importlib.util.find_spec("torch") is None:
            continue  # the torch drop-in example needs the `compare` extra
        if "import cupy" in block and fastopt.available_backends()["cupy"] is not None:
            continue  # the GPU example needs a GPU and the `cuda` extra (tests/test_gpu.py)
        if "fastopt.distributed" in block:
            continue  # runs on 2 MPI ranks in tests/test_distributed_mpi.py
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own docs
        found.update(namespace)
    namespace = found
    # The njit example defines fit(); run it and check it optimises.
    p, target = np.zeros(10), np.linspace(-1, 1, 10)
    namespace["fit"](p, target, np.zeros(10), np.zeros(10), 400)
    assert np.abs(p - target).max() < 1e-2
