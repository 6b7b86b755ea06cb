"""Non-finite inputs, empty and 0-d arrays, determinism, threads, allocations."""

from __future__ import annotations

import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Problem, assert_close, case_id, cases

BIG = 2**16 + 3  # above the parallel threshold: exercises the prange kernels


def assert_same_nonfinite(actual: dict, expected: dict) -> None:
    """NaN, +inf and -inf in the same places of every array."""
    for name, e in expected.items():
        a = actual[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=name)
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(e), err_msg=name)
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(e), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_nan_and_inf_gradients_propagate_as_in_the_reference(case, dtype):
    algo, options = case
    prob = Problem(algo, options, 1031, dtype, seed=5)
    fast, ref = prob.copy(), prob.copy()
    for t in range(1, 4):
        g = prob.grad()
        g[[3, 100, 517]] = [np.nan, np.inf, -np.inf]
        g[900 + t] = np.nan
        with np.errstate(all="ignore"):
            fast.step(g, t, "numba")
            ref.step_reference(g, t)
    assert_same_nonfinite(fast.arrays(), ref.arrays())
    # The poisoned element really is poisoned: in the parameter, or (Rprop: torch's sign of
    # NaN is 0, the parameter stays) in a state.
    assert any(np.isnan(a.reshape(-1)[3]) for a in fast.arrays().values())
    assert_close(fast.arrays(), ref.arrays())


@pytest.mark.parametrize("size", [1031, pytest.param(BIG, marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_nan_and_inf_states_propagate_as_in_the_reference(case, size):
    # A state's non-finite values must meet the rule's own treatment: a select that drops the
    # state (ASGD copying the parameter while mu = 1) drops them too, and nothing a kernel
    # does for speed (a select reading the state, a split loop) may differ.
    algo, options = case
    prob = Problem(algo, options, size, np.float32, seed=6)
    fast, ref = prob.copy(), prob.copy()
    g = prob.grad()
    fast.step(g, 1, "numba")
    ref.step_reference(g, 1)
    for p in (fast, ref):
        for s in p.state.values():
            if s is not None:
                s[[5, 200, 600, size - 1]] = [np.nan, np.inf, -np.inf, np.nan]
    for t in (2, 3):
        g = prob.grad()
        with np.errstate(all="ignore"):
            fast.step(g, t, "numba")
            ref.step_reference(g, t)
    assert_same_nonfinite(fast.arrays(), ref.arrays())
    assert_close(fast.arrays(), ref.arrays())


@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_size_zero_is_a_no_op(algo):
    for options in algo.option_sets:
        prob = Problem(algo, options, (0, 3), np.float32)
        prob.step(np.zeros((0, 3), np.float32), 1, "numba")
        assert prob.param.shape == (0, 3)


@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_one_thread_and_all_threads_are_bit_identical(algo):
    options = algo.option_sets[-1]
    prob = Problem(algo, options, BIG, np.float32, seed=11)
    grads = [prob.grad() for _ in range(5)]
    results = []
    default = numba.get_num_threads()
    for threads in (1, default):
        run = prob.copy()
        numba.set_num_threads(threads)
        try:
            for t, g in enumerate(grads, start=1):
                run.step(g, t, "numba")
        finally:
            numba.set_num_threads(default)
        results.append(run.arrays())
    for name in results[0]:
        assert results[0][name].tobytes() == results[1][name].tobytes(), name


def test_eight_python_threads_give_the_serial_results():
    jobs = []
    for i in range(8):
        algo = ALGORITHMS[i % len(ALGORITHMS)]
        prob = Problem(algo, algo.option_sets[-1], BIG if i % 2 else 1023, np.float32, seed=i)
        jobs.append((prob, [prob.grad() for _ in range(20)]))
    expected = []
    for prob, grads in jobs:
        run = prob.copy()
        for t, g in enumerate(grads, start=1):
            run.step(g, t, "numba")
        expected.append(run.arrays())

    runs = [prob.copy() for prob, _ in jobs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def work(run: Problem, grads: list[np.ndarray]) -> None:
        try:
            barrier.wait()
            for t, g in enumerate(grads, start=1):
                run.step(g, t, "numba")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(run, grads))
               for run, (_, grads) in zip(runs, jobs)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for run, exp in zip(runs, expected):
        for name, a in exp.items():
            assert run.arrays()[name].tobytes() == a.tobytes(), name
    layer = numba.threading_layer()
    if layer == "workqueue":
        # Only where neither TBB nor OpenMP can load; fastopt then serialises its launches.
        for mod in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
            with pytest.raises(ImportError):
                __import__(mod)
    else:
        assert layer in ("tbb", "omp")


@pytest.mark.parametrize("size", [1023, BIG])
def test_no_allocation_inside_a_step(size):
    """Steps run from a user's njit loop: the NRT counts must not grow with the step count."""
    from numba.core.runtime import _nrt_python as nrt, rtsys

    from fastopt.kernels.cpu import adam_kernel
    from fastopt._numba_backend import PARALLEL_MIN_SIZE

    kernel = adam_kernel(amsgrad=True, maximize=False, weight_decay=True, decoupled=True,
                         parallel=size >= PARALLEL_MIN_SIZE)

    @numba.njit
    def train(p, g, m, v, vmax, steps):
        for t in range(1, steps + 1):
            kernel(p, g, m, v, vmax, t, 1e-3, 0.9, 0.999, 1e-8, 0.01)

    arrays = [np.random.default_rng(0).random(size, dtype=np.float32) for _ in range(5)]
    was_enabled = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        train(*arrays, 1)  # compile
        counts = []
        for steps in (1, 50):
            before = rtsys.get_allocation_stats()
            train(*arrays, steps)
            after = rtsys.get_allocation_stats()
            counts.append((after.alloc - before.alloc, after.mi_alloc - before.mi_alloc))
    finally:
        if not was_enabled:
            nrt.memsys_disable_stats()
    # Whatever the call boundary costs (boxing the arrays), 50 steps cost what 1 step does.
    assert counts[0] == counts[1], counts


def test_import_fastopt_imports_no_numba():
    code = "import sys, fastopt; print(sorted(m for m in sys.modules if m.startswith(('numba', 'cupy'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
