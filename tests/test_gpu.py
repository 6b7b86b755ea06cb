"""The GPU suite: both GPU backends on a real GPU, against the reference and each other.

``pytest -m gpu`` runs it (it also runs in a plain ``pytest`` where a GPU exists). Without a
GPU, CuPy or numba-cuda it is skipped, saying which is missing; CI has no GPU, and covers the
numba-cuda kernels under the CUDA simulator (test_numba_cuda.py) and the CuPy sources with nvcc
(test_cuda_sources.py) instead.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from algorithms import (ALGORITHMS, DTYPES, Problem, assert_close, case_id, cases, ema_cases,
                        run_on_device)

pytestmark = pytest.mark.gpu

_avail = fastopt.available_backends()
_missing = {b: r for b in ("cupy", "numba-cuda") if (r := _avail[b]) is not None}
if fastopt._backends.simulator_enabled():
    _missing["numba-cuda"] = "NUMBA_ENABLE_CUDASIM is set (the simulator is not a GPU)"
if _missing:
    pytest.skip("no GPU to test on: " + "; ".join(f"{b}: {r}" for b, r in _missing.items()),
                allow_module_level=True)

import cupy  # noqa: E402
from numba import cuda  # noqa: E402

GPU_BACKENDS = ("cupy", "numba-cuda")
SIZES = (1, 7, 33, 300, 4099, 2**20 + 3)


def run(problem: Problem, backend: str, steps: int, offset: int = 0):
    """Step CuPy copies of the problem's arrays on ``backend``, ``offset`` elements into a
    larger buffer (misaligned when not 0), and a host copy with the reference."""

    def dev(x):
        buf = cupy.empty(x.size + offset, x.dtype)
        view = buf[offset:].reshape(x.shape)
        view[...] = cupy.asarray(x)
        return view

    return run_on_device(problem, steps, backend, dev, cupy.asnumpy)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", cases() + ema_cases(), ids=case_id)
def test_matches_reference(case, size, dtype, backend):
    algo, options = case
    fast, ref = run(Problem(algo, options, size, dtype, seed=size), backend, 5)
    assert_close(fast.arrays(), ref.arrays(), f"{backend} after 5 steps")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_backends_agree(case, dtype):
    algo, options = case
    a, _ = run(Problem(algo, options, 10007, dtype, seed=3), "cupy", 5)
    b, _ = run(Problem(algo, options, 10007, dtype, seed=3), "numba-cuda", 5)
    assert_close(a.arrays(), b.arrays(), "cupy vs numba-cuda")


@pytest.mark.parametrize("offset", [1, 2, 3])
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_misaligned_arrays_take_the_scalar_path(algo, offset):
    fast, ref = run(Problem(algo, algo.option_sets[-1], 1001, np.float32), "cupy", 3, offset)
    assert_close(fast.arrays(), ref.arrays())


@pytest.mark.slow
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_adam_2_pow_26(backend, dtype):
    fast, ref = run(Problem(fastopt_algo("adam"), {"weight_decay": 0.01}, 2**26, dtype), backend,
                    2)
    assert_close(fast.arrays(), ref.arrays())


@pytest.mark.slow
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_64_bit_indexing(backend):
    """2**31 + 5 elements: the last ones are past any 32-bit index."""
    free, _ = cupy.cuda.runtime.memGetInfo()
    n = 2**31 + 5
    if free < 2 * 4 * n + (1 << 30):
        pytest.skip(f"needs {2 * 4 * n / 2**30:.0f} GiB of free GPU memory")
    p = cupy.zeros(n, cupy.float32)
    g = cupy.ones(n, cupy.float32)
    fastopt.sgd_step(p, g, lr=0.5, backend=backend)
    assert float(p[-1]) == -0.5 and float(p[2**31]) == -0.5 and float(p[0]) == -0.5
    assert int(cupy.count_nonzero(p != -0.5)) == 0


def fastopt_algo(name):
    return next(a for a in ALGORITHMS if a.name == name)


def test_auto_dispatch_by_array_type(monkeypatch):
    calls = []
    for name in GPU_BACKENDS:
        mod = fastopt._backends.load(name)
        monkeypatch.setattr(mod, "sgd", lambda *a, _n=name, **k: calls.append(_n))
    fastopt._backends._loaded.clear()
    p, g = cupy.zeros(4, cupy.float32), cupy.ones(4, cupy.float32)
    fastopt.sgd_step(p, g, lr=0.1)
    fastopt.sgd_step(cuda.to_device(np.zeros(4, np.float32)),
                     cuda.to_device(np.ones(4, np.float32)), lr=0.1)
    fastopt._backends._loaded.clear()
    assert calls == ["cupy", "numba-cuda"]


@pytest.mark.parametrize("backend", ["auto", *GPU_BACKENDS])
def test_numba_device_arrays_and_cupy_arrays_mix(backend):
    """Any CUDA-array-interface objects on one device work together, zero-copy."""
    p = cupy.ones(64, cupy.float32)
    g = cuda.to_device(np.full(64, 0.5, np.float32))
    fastopt.sgd_step(p, g, lr=0.1, backend=backend)
    cupy.testing.assert_allclose(p, cupy.full(64, 0.95, cupy.float32), rtol=1e-6)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_torch_cuda_tensors(backend):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    problem = Problem(fastopt_algo("adamw"), {}, 1000, np.float32)
    ref = problem.copy()
    p = torch.tensor(problem.param, device="cuda", requires_grad=True)
    m = torch.zeros(1000, device="cuda")
    v = torch.zeros(1000, device="cuda")
    for t in range(1, 4):
        g = problem.grad()
        fastopt.adamw_step(p, torch.tensor(g, device="cuda"), m, v, step=t, backend=backend)
        ref.step_reference(g, t)
    torch.cuda.synchronize()
    np.testing.assert_allclose(p.detach().cpu().numpy(), ref.param, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Rejections: nothing changes.


def _adam(backend, *arrays):
    fastopt.adam_step(*arrays, step=1, backend=backend)


@pytest.mark.parametrize("backend", ["auto", *GPU_BACKENDS])
def test_rejections_leave_arrays_unchanged(backend):
    base = cupy.arange(20, dtype=cupy.float32)
    p, g, m, v = (cupy.arange(8, dtype=cupy.float32) + k for k in range(4))
    cases = [
        ((p, cupy.asnumpy(g), m, v), TypeError, "cannot be mixed"),
        ((p, g, m, m), ValueError, "Invalid exp_avg_sq: it overlaps exp_avg"),
        ((base[:8], g, base[7:15], v), ValueError, "Invalid exp_avg: it overlaps param"),
        ((p, g, base[::2][:8], v), ValueError, "non-contiguous"),
        ((p, g, m, cupy.zeros(8, cupy.float64)), TypeError, "expected float32"),
        ((p, g, m, cupy.zeros(9, cupy.float32)), ValueError, "shape"),
    ]
    for arrays, exc, match in cases:
        before = [cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a.copy() for a in arrays]
        before_base = cupy.asnumpy(base)
        with pytest.raises(exc, match=match):
            _adam(backend, *arrays)
        for a, b in zip(arrays, before):
            np.testing.assert_array_equal(cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a,
                                          b)
        np.testing.assert_array_equal(cupy.asnumpy(base), before_base)


def test_arrays_on_different_devices_are_rejected():
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    p, m, v = (cupy.zeros(8, cupy.float32) for _ in range(3))
    with cupy.cuda.Device(1):
        g = cupy.ones(8, cupy.float32)
    with pytest.raises(ValueError, match=r"Invalid grad: on cuda:1 \(expected cuda:0"):
        fastopt.adam_step(p, g, m, v, step=1)
    assert not bool(p.any())


def test_check_command_on_both_gpu_backends():
    from fastopt import _check

    for backend in GPU_BACKENDS:
        r = _check.check_case(backend, "adam", {"amsgrad": True}, np.float32, 4099, 5)
        assert r.passed, r
