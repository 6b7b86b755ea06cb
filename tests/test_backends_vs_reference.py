"""Every backend against the NumPy reference: every algorithm, option set, dtype and size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import fastopt
from algorithms import (ALGORITHMS, DTYPES, SIZES, Problem, assert_close, case_id, cases,
                        ema_cases)

# The host backends under test here; the GPU backends have tests/test_numba_cuda.py (simulator
# or GPU) and tests/test_gpu.py.
BACKENDS = [b for b, reason in fastopt.available_backends().items()
            if reason is None and b not in ("numpy", *fastopt._backends.GPU_BACKENDS)]
STEPS = 25
PARALLEL = 2**16 + 3  # takes the parallel kernels; the largest size runs with --runslow


def _sweep() -> list:
    """(case, size, dtype). By default every case at every serial size in both dtypes, and
    the parallel kernels (a compilation each: most of this file's time) for each
    algorithm's last option set in both dtypes and with the weight EMA in float32; every
    other parallel case and the largest size under -m slow."""
    out = []
    for case in cases() + ema_cases():
        algo, options = case
        ema = "ema_decay" in options  # (ema_cases: the last option sets)
        last = options == algo.option_sets[-1]
        for size in SIZES:
            for dtype in DTYPES:
                fast = size < PARALLEL or (size == PARALLEL and (
                    last if not ema else dtype == np.float32))
                out.append(pytest.param(case, size, dtype,
                                        marks=() if fast else pytest.mark.slow,
                                        id=f"{case_id(case)}-{size}-{np.dtype(dtype).name}"))
    return out


def run_both(problem: Problem, backend: str, steps: int) -> tuple[Problem, Problem]:
    fast, ref = problem.copy(), problem.copy()
    for t in range(1, steps + 1):
        g = problem.grad()
        fast.step(g, t, backend)
        ref.step_reference(g, t)
    return fast, ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case,size,dtype", _sweep())
def test_matches_reference(case, size, dtype, backend):
    algo, options = case
    fast, ref = run_both(Problem(algo, options, size, dtype, seed=size), backend, STEPS)
    assert_close(fast.arrays(), ref.arrays(), f"after {STEPS} steps")
    if size:
        # The update did something: a backend that skipped the work would not match either,
        # but say it plainly.
        assert not np.array_equal(fast.param, Problem(algo, options, size, dtype, size).param)


@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_numpy_backend_is_the_reference(case):
    algo, options = case
    fast, ref = run_both(Problem(algo, options, 33, np.float64), "numpy", 5)
    for name, a in ref.arrays().items():
        np.testing.assert_array_equal(fast.arrays()[name], a, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(), (1,), (3, 4, 5), (2, 1, 3, 2)], ids=str)
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_any_shape(algo, shape, backend):
    options = algo.option_sets[-1]
    fast, ref = run_both(Problem(algo, options, shape, np.float32), backend, 4)
    assert fast.param.shape == shape
    assert_close(fast.arrays(), ref.arrays())


@st.composite
def hyperparameters(draw, algo):
    options = dict(draw(st.sampled_from(algo.option_sets)))
    unit = st.floats(0.0, 0.999)
    if "lr" in options or algo.name == "sgd":
        options["lr"] = draw(st.floats(0.0, 1.0))
    if algo.name in ("adam", "adamw"):
        options.update(beta1=draw(unit), beta2=draw(unit), eps=draw(st.floats(1e-10, 1e-2)))
    if algo.name == "rmsprop":
        options.update(alpha=draw(unit))
    if algo.name == "adadelta":
        options.update(rho=draw(unit))
    if options.get("weight_decay"):
        options["weight_decay"] = draw(st.floats(1e-6, 1.0))
    return options


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_hypothesis_shapes_and_hyperparameters(algo, backend, data):
    options = data.draw(hyperparameters(algo), label="options")
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
                      label="shape")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    steps = data.draw(st.integers(1, 6), label="steps")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    fast, ref = run_both(Problem(algo, options, shape, dtype, seed), backend, steps)
    assert_close(fast.arrays(), ref.arrays(), f"{options} {shape}")
