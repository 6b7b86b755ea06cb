"""The CuPy backend, unchanged, with its CUDA C++ kernels run on the CPU (tests/cupy_emulator.py).

Every algorithm and option set through the public API against the reference, float32 and
float64, sizes around the vector width and past the (emulated) grid, misaligned arrays (the
scalar build), the roofline kernel, and the argument types of every launch. Needs a host C++
compiler (g++), else skipped.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _backends
from algorithms import (ALGORITHMS, DTYPES, Problem, assert_close, case_id, cases, ema_cases,
                        run_on_device)
import cupy_emulator

pytestmark = pytest.mark.skipif(shutil.which(cupy_emulator.CXX) is None,
                                reason=f"no host C++ compiler ({cupy_emulator.CXX})")

# Two emulated SMs: at most 2 * 8 blocks of 256 threads, so 2**16 + 3 elements make threads
# stride; 4 and 2 (the vector widths) divide none of the odd sizes, so tails run too.
SIZES = (1, 7, 33, 300, 4099, 2**16 + 3)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cupy-emulator"))


@pytest.fixture
def cupy(monkeypatch, build_dir):
    """The CuPy backend bound to the emulator for one test, then forgotten."""
    fake = cupy_emulator.fake_cupy(build_dir)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    sys.modules.pop("fastopt._cupy_backend", None)
    monkeypatch.setattr(_backends, "_cupy_reason", lambda: None)
    _backends._loaded.clear()
    yield fake
    sys.modules.pop("fastopt._cupy_backend", None)
    _backends._loaded.clear()


def run(problem: Problem, steps: int, offset: int = 0, backend: str = "auto"):
    """Step emulated CuPy arrays ``offset`` elements into a larger buffer (misaligned when not
    0) with ``backend``, and a host copy with the reference."""

    def dev(x):
        buf = np.empty(x.size + offset, x.dtype)
        buf[offset:] = x.ravel()
        return cupy_emulator.ndarray(buf[offset:].reshape(x.shape))

    return run_on_device(problem, steps, backend, dev, lambda d: d.host.copy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", cases() + ema_cases(), ids=case_id)
def test_matches_reference(cupy, case, size, dtype):
    algo, options = case
    problem = Problem(algo, options, size, dtype, seed=size)
    start = problem.param.copy()
    fast, ref = run(problem, 4)
    assert_close(fast.arrays(), ref.arrays(), "after 4 steps")
    assert not np.array_equal(fast.param, start)
    width = 4 if np.dtype(dtype) == np.float32 else 2
    assert all(f", {width}, " in e for e, _, _ in cupy.launches), cupy.launches


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_misaligned_arrays_use_the_scalar_build(cupy, algo, offset):
    fast, ref = run(Problem(algo, algo.option_sets[-1], 1001, np.float32), 3, offset)
    assert_close(fast.arrays(), ref.arrays())
    assert cupy.launches and all(", 1, " in e for e, _, _ in cupy.launches), cupy.launches


def test_grid_is_capped_and_threads_stride(cupy):
    fast, ref = run(Problem(ALGORITHMS[3], {}, 2**16 + 3, np.float32), 1)
    assert_close(fast.arrays(), ref.arrays())
    (expression, blocks, threads), = cupy.launches
    assert (blocks, threads) == (2 * 8, 256)  # 2 SMs x 8 blocks: 16384 packs need striding


@pytest.mark.parametrize("shape", [(), (3, 4), (2, 1, 5)], ids=str)
def test_any_shape(cupy, shape):
    algo = ALGORITHMS[4]
    fast, ref = run(Problem(algo, algo.option_sets[-1], shape, np.float64), 2,
                    backend="cupy")
    assert fast.param.shape == shape
    assert_close(fast.arrays(), ref.arrays())


@pytest.mark.parametrize("n_state", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_roofline_kernel_has_the_traffic_it_claims(cupy, n_state, dtype):
    mod = _backends.load("cupy")
    arrays = [np.arange(1, 38, dtype=dtype) * (k + 1) for k in range(2 + n_state)]
    expected = [a.copy() for a in arrays]
    g = expected[1]
    expected = [expected[0] + g, g, *[s + g for s in expected[2:]]]
    mod.roofline(cupy_emulator.ndarray(arrays[0]), cupy_emulator.ndarray(arrays[1]),
                 [cupy_emulator.ndarray(a) for a in arrays[2:]])
    for a, e in zip(arrays, expected):
        np.testing.assert_array_equal(a, e)


def test_cupy_arrays_dispatch_to_the_cupy_backend(cupy):
    p = cupy_emulator.ndarray(np.ones(5, np.float32))
    g = cupy_emulator.ndarray(np.ones(5, np.float32))
    fastopt.sgd_step(p, g, lr=0.25)
    assert [e.split("<")[0] for e, _, _ in cupy.launches] == ["sgd"]
    np.testing.assert_array_equal(p.host, np.full(5, 0.75, np.float32))


def test_check_command_runs_the_cupy_backend(cupy):
    from fastopt import _check

    r = _check.check_case("cupy", "rmsprop", {"centered": True, "momentum": 0.5}, np.float32,
                          301, 4)
    assert r.passed, r


def test_rejected_calls_never_launch(cupy):
    p, g, m = (cupy_emulator.ndarray(np.zeros(6, np.float32)) for _ in range(3))
    with pytest.raises(ValueError, match="Invalid exp_avg_sq: it overlaps exp_avg"):
        fastopt.adam_step(p, g, m, m, step=1)
    assert cupy.launches == []


@pytest.mark.parametrize("to_eval", [True, False])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_schedulefree_switch_matches_the_reference(cupy, dtype, to_eval):
    rng = np.random.default_rng(5)
    y, z = rng.standard_normal((2, SIZES[-1])).astype(dtype)
    p = cupy_emulator.ndarray(y.copy())
    fn = fastopt.schedulefree_eval if to_eval else fastopt.schedulefree_train
    fn(p, cupy_emulator.ndarray(z.copy()), beta1=0.9)
    expected = y.copy()
    fastopt.reference.schedulefree_swap(expected, z, weight=1 - 1 / 0.9 if to_eval else 1 - 0.9)
    np.testing.assert_array_equal(p.host, expected)
    assert [e for e, _, _ in cupy.launches] == [
        f"schedulefree_swap<{cupy_emulator_type(dtype)}, {cupy_emulator_type(dtype)}, "
        f"{4 if np.dtype(dtype) == np.float32 else 2}>"]


def cupy_emulator_type(dtype):
    return "float" if np.dtype(dtype) == np.float32 else "double"


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_ema_swap_exchanges_exactly(cupy, dtype, offset):
    rng = np.random.default_rng(6)
    n = SIZES[-1]
    x, e = rng.standard_normal((2, n)).astype(dtype)
    bufs = [np.empty(n + offset, dtype) for _ in range(2)]
    bufs[0][offset:], bufs[1][offset:] = x, e
    p, ema = (cupy_emulator.ndarray(b[offset:]) for b in bufs)
    fastopt.ema_swap(p, ema)
    np.testing.assert_array_equal(p.host, e)
    np.testing.assert_array_equal(ema.host, x)
    t = cupy_emulator_type(dtype)
    width = 1 if offset else 4 if np.dtype(dtype) == np.float32 else 2
    assert [e for e, _, _ in cupy.launches] == [f"ema_swap<{t}, {t}, {width}>"]


def test_ema_kernels_are_named_with_the_ema_flag(cupy):
    p, g, m, ema = (cupy_emulator.ndarray(np.full(8, 0.5, np.float32)) for _ in range(4))
    fastopt.lion_step(p, g, m, step=1, lr=0.1, ema=ema)
    after_first = p.host.copy()
    fastopt.lion_step(p, g, m, step=2, lr=0.1)
    plain = "lion<float, float, float, float, float, 4, 0, false, false, false"
    assert [e for e, _, _ in cupy.launches] == [f"{plain}, true>", f"{plain}, false>"]
    np.testing.assert_array_equal(ema.host, after_first)  # the copy; the second left it alone
    assert not np.array_equal(p.host, after_first)
