"""Generated code: float32 kernels do float32 arithmetic, and the README's examples run."""

from __future__ import annotations

import importlib.util
import os
import re

import numba
import numpy as np
import pytest

import fastopt

from fastopt.kernels import cpu

FACTORIES = [
    (cpu.sgd_kernel, dict(momentum=True, nesterov=True, maximize=True, weight_decay=True), 3),
    (cpu.adagrad_kernel, dict(maximize=True, weight_decay=True), 3),
    (cpu.rmsprop_kernel, dict(maximize=True, weight_decay=True, momentum=True, centered=True), 5),
    (cpu.adam_kernel, dict(amsgrad=True, maximize=True, weight_decay=True, decoupled=False), 5),
    (cpu.adam_kernel, dict(amsgrad=False, maximize=False, weight_decay=True, decoupled=True), 5),
    (cpu.adadelta_kernel, dict(maximize=True, weight_decay=True), 4),
]
SCALARS = {cpu.sgd_kernel: (3, 0.1, 0.9, 0.0, 0.01), cpu.adagrad_kernel: (3, 0.1, 0.01, 0.01, 1e-10),
           cpu.rmsprop_kernel: (0.01, 0.99, 1e-8, 0.01, 0.9),
           cpu.adam_kernel: (3, 1e-3, 0.9, 0.999, 1e-8, 0.01),
           cpu.adadelta_kernel: (1.0, 0.9, 1e-6, 0.01)}


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("factory,flags,n_arrays", FACTORIES,
                         ids=lambda x: getattr(x, "__name__", None))
def test_float32_kernel_has_no_float64_element_math(factory, flags, n_arrays, parallel):
    """A Python literal in a float32 kernel would promote the element math to float64.

    The kernels are recompiled here without the disk cache (cached code cannot be inspected).
    Host-side scalars are float64 by design and truncated once before the loop: fptrunc is
    expected, fpext (float32 promoted to float64) never is.
    """
    cached = factory(**flags, parallel=parallel)
    fresh = numba.njit(cached.py_func, parallel=parallel, error_model="numpy")
    arrays = [np.ones(64, np.float32) for _ in range(n_arrays)]
    fresh(*arrays, *SCALARS[factory])
    llvm = "".join(fresh.inspect_llvm().values())
    assert "fptrunc double" in llvm  # the host scalars, truncated once
    assert "fpext" not in llvm
    assert re.search(r"fdiv float|<\d+ x float>", llvm)  # the element math is float32


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
        namespace: dict = {}
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own docs
        found.update(namespace)
    namespace = found
    # The njit example defines fit(); run it and check it optimises.
    p, target = np.zeros(10), np.linspace(-1, 1, 10)
    namespace["fit"](p, target, np.zeros(10), np.zeros(10), 400)
    assert np.abs(p - target).max() < 1e-2
