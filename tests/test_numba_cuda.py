"""The numba-cuda backend against the reference: every algorithm, option set and dtype.

Runs on the GPU where there is one, else under Numba's CUDA simulator (conftest.py turns it on
when no NVIDIA driver is found), so CI runs the GPU kernels, the GPU validation and the dispatch
of device arrays without a GPU. Sizes: 1, 7, 33, 300 and one past two whole blocks, which
under the simulator's small grid (kernels.cuda._common.SIMULATOR_MAX_BLOCKS) makes threads stride.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from algorithms import (ALGORITHMS, DTYPES, Problem, assert_close, case_id, cases, ema_cases,
                        run_on_device)

pytest.importorskip("numba_cuda")
if fastopt.available_backends()["numba-cuda"] is not None:
    pytest.skip(f"numba-cuda backend unavailable: {fastopt.available_backends()['numba-cuda']}",
                allow_module_level=True)

from numba import cuda  # noqa: E402

from fastopt.kernels.cuda import THREADS_PER_BLOCK  # noqa: E402

SIZES = (1, 7, 33, 300, 2 * THREADS_PER_BLOCK + 37)
STEPS = 3


def run(problem: Problem, steps: int, backend: str = "auto") -> tuple[Problem, Problem]:
    return run_on_device(problem, steps, backend, cuda.to_device, lambda d: d.copy_to_host())


def _sweep() -> list:
    """(case, size): in the default run every option set at sizes 1 and 7, and the threads
    striding the grid (the largest size, the slowest in the simulator) for each algorithm's
    last option set; everything else with --runslow."""
    out = []
    for case in cases() + ema_cases():
        last = case[1] == case[0].option_sets[-1]
        for size in SIZES:
            fast = size in (1, 7) or (size == SIZES[-1] and last)
            out.append(pytest.param(case, size, marks=() if fast else pytest.mark.slow,
                                    id=f"{case_id(case)}-{size}"))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case,size", _sweep())
def test_matches_reference(case, size, dtype):
    algo, options = case
    problem = Problem(algo, options, size, dtype, seed=size)
    start = problem.param.copy()
    fast, ref = run(problem, STEPS)
    assert_close(fast.arrays(), ref.arrays(), f"after {STEPS} steps")
    assert not np.array_equal(fast.param, start)


@pytest.mark.parametrize("shape", [(), (3, 4), (2, 1, 5)], ids=str)
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_any_shape_explicit_backend(algo, shape):
    fast, ref = run(Problem(algo, algo.option_sets[-1], shape, np.float32), 2, "numba-cuda")
    assert fast.param.shape == shape
    assert_close(fast.arrays(), ref.arrays())


def test_size_zero_is_a_no_op():
    a = [cuda.to_device(np.zeros(0, np.float32)) for _ in range(4)]
    fastopt.adam_step(*a, step=1)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_gradient_propagates_as_in_the_reference():
    p = np.array([1.0, 2.0, 3.0], np.float32)
    g = np.array([np.nan, np.inf, -1.0], np.float32)
    dev = [cuda.to_device(x) for x in (p, g, np.zeros(3, np.float32), np.zeros(3, np.float32),
                                       np.zeros(3, np.float32))]
    fastopt.adam_step(*dev, step=1, amsgrad=True)
    ref = [p.copy(), g, np.zeros(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32)]
    fastopt.reference.adam(*ref, step=1, amsgrad=True)
    for d, r in zip(dev, ref):
        np.testing.assert_array_equal(d.copy_to_host(), r)


def test_strided_grid_covers_every_element(monkeypatch):
    """One block of a few threads: each thread strides over many elements, none is missed."""
    from fastopt.kernels.cuda import _common

    monkeypatch.setattr(_common, "_max_blocks", lambda: 1)
    monkeypatch.setattr(_common, "THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(_common.launch_config, "__defaults__", (8, None))
    fast, ref = run(Problem(fastopt_algo("adam"), {}, 101, np.float64), 2)
    assert_close(fast.arrays(), ref.arrays())


def fastopt_algo(name: str):
    return next(a for a in ALGORITHMS if a.name == name)


# ---------------------------------------------------------------------------------------------
# Rejections on device arrays: the call raises and no array changes.


def _adam_arrays(n=5, dtype=np.float32):
    rng = np.random.default_rng(1)
    return [cuda.to_device(rng.standard_normal(n).astype(dtype)) for _ in range(4)]


def _snapshot(arrays):
    return [a.copy_to_host() for a in arrays if hasattr(a, "copy_to_host")]


def _rejects(arrays, exc, match, **kw):
    before = _snapshot(arrays)
    with pytest.raises(exc, match=match):
        fastopt.adam_step(*arrays, step=1, **kw)
    for b, a in zip(before, _snapshot(arrays)):
        np.testing.assert_array_equal(a, b)


def test_rejects_host_grad_with_device_param():
    p, g, m, v = _adam_arrays()
    _rejects([p, g.copy_to_host(), m, v], TypeError,
             r"Invalid grad: numpy.ndarray .*expected a CUDA array.*cannot be mixed")


def test_rejects_device_grad_with_host_param():
    p, g, m, v = _adam_arrays()
    with pytest.raises(TypeError, match=r"Invalid grad: .*FakeCUDAArray|Invalid grad: .*Device"):
        fastopt.adam_step(p.copy_to_host(), g, m.copy_to_host(), v.copy_to_host(), step=1)


def test_rejects_the_same_device_array_twice():
    p, g, m, v = _adam_arrays()
    _rejects([p, g, m, m], ValueError, "Invalid exp_avg_sq: it overlaps exp_avg in device memory")


def test_rejects_overlapping_device_views():
    base = cuda.to_device(np.zeros(10, np.float32))
    g, v = _adam_arrays(5)[1:3]
    _rejects([base[:5], g, base[4:9], v], ValueError, "Invalid exp_avg: it overlaps param")


def test_accepts_adjacent_device_views():
    base = cuda.to_device(np.zeros(10, np.float32))
    g = cuda.to_device(np.ones(5, np.float32))
    m, v = (cuda.to_device(np.zeros(5, np.float32)) for _ in range(2))
    fastopt.sgd_step(base[:5], g, base[5:], step=1, lr=0.5, momentum=0.9)
    np.testing.assert_array_equal(base.copy_to_host(), [-0.5] * 5 + [1.0] * 5)
    del m, v


def test_rejects_shape_and_dtype_mismatch():
    p, g, m, v = _adam_arrays()
    _rejects([p, cuda.to_device(np.zeros(6, np.float32)), m, v], ValueError,
             r"Invalid grad: shape \(6,\) \(expected \(5,\)")
    _rejects([p, g, cuda.to_device(np.zeros(5, np.float64)), v], TypeError,
             "Invalid exp_avg: .*expected float32")


def test_rejects_non_contiguous_device_array():
    p, g, m, v = _adam_arrays()
    strided = cuda.to_device(np.zeros(10, np.float32))[::2]
    _rejects([p, g, strided, v], ValueError, "Invalid exp_avg: non-contiguous")


def test_rejects_a_cpu_backend_for_device_arrays():
    _rejects(_adam_arrays(), TypeError, "Invalid backend: 'numba' for device arrays",
             backend="numba")
    _rejects(_adam_arrays(), TypeError, "Invalid backend: 'cupy' for arrays of Numba's CUDA "
             "simulator", backend="cupy")


def test_rejects_a_gpu_backend_for_host_arrays():
    arrays = [np.ones(4, np.float32) for _ in range(4)]
    before = [a.copy() for a in arrays]
    with pytest.raises(TypeError, match="Invalid backend: 'numba-cuda' for NumPy arrays"):
        fastopt.adam_step(*arrays, step=1, backend="numba-cuda")
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)


def test_check_command_runs_the_gpu_backend():
    from fastopt import _check

    r = _check.check_case("numba-cuda", "adam", {"amsgrad": True}, np.float32, 40, 3)
    assert r.passed, r


@pytest.mark.parametrize("to_eval", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_schedulefree_switch_matches_the_reference(dtype, to_eval):
    rng = np.random.default_rng(5)
    y, z = rng.standard_normal((2, SIZES[-1])).astype(dtype)
    p = cuda.to_device(y)
    fn = fastopt.schedulefree_eval if to_eval else fastopt.schedulefree_train
    fn(p, cuda.to_device(z), beta1=0.9)
    expected = y.copy()
    fastopt.reference.schedulefree_swap(expected, z, weight=1 - 1 / 0.9 if to_eval else 1 - 0.9)
    np.testing.assert_array_equal(p.copy_to_host(), expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_ema_swap_exchanges_exactly(dtype):
    rng = np.random.default_rng(6)
    x, e = rng.standard_normal((2, SIZES[-1])).astype(dtype)
    p, ema = cuda.to_device(x), cuda.to_device(e)
    fastopt.ema_swap(p, ema)
    np.testing.assert_array_equal(p.copy_to_host(), e)
    np.testing.assert_array_equal(ema.copy_to_host(), x)
