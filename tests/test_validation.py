"""Bad input: every category is rejected with a precise message and changes nothing."""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Algorithm, Problem

N = 64


def setup(algo: Algorithm, options: dict[str, Any] | None = None,
          dtype: Any = np.float32) -> tuple[list[Any], dict[str, Any]]:
    """Positional arrays (param, grad, *states) and keyword arguments of one valid call."""
    options = dict(algo.option_sets[-1] if options is None else options)
    prob = Problem(algo, options, N, dtype, seed=3)
    for name, a in prob.state.items():
        if a is not None:
            a[...] = np.abs(prob.grad())  # non-trivial state contents to protect
    args = [prob.param, prob.grad(), *prob.state.values()]
    return args, dict(options, step=3)


def snapshot(args: list[Any]) -> list[bytes | None]:
    return [a.tobytes() if isinstance(a, np.ndarray) else None for a in args]


def expect_rejected(algo: Algorithm, args: list[Any], kwargs: dict[str, Any],
                    exc: type[Exception], match: str,
                    protect: list[Any] | None = None) -> None:
    protect = args if protect is None else protect
    before = snapshot(protect)
    with pytest.raises(exc, match=match):
        algo.step_fn(*args, **kwargs)
    assert snapshot(protect) == before, "a rejected call changed an array"


def first_state(algo: Algorithm, options: dict[str, Any]) -> tuple[int, str]:
    """Position in args and name of the first active state of a call made by setup()."""
    active = algo.active_states(options)
    assert active, "setup()'s default option set gives every algorithm a state array"
    return 2 + algo.states.index(active[0]), active[0]


algos = pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)


@algos
def test_valid_call_works_and_readonly_grad_is_fine(algo):
    args, kw = setup(algo)
    args[1].setflags(write=False)
    before = args[0].copy()
    algo.step_fn(*args, **kw)
    assert not np.array_equal(args[0], before)


@algos
@pytest.mark.parametrize("position", [0, 1], ids=["param", "grad"])
@pytest.mark.parametrize("make", [
    lambda a: a.tolist(),
    lambda a: a.astype(np.int32),
    lambda a: a.astype(bool),
    lambda a: a.astype(np.complex64),
    lambda a: a.astype(np.uint16),
], ids=["list", "int32", "bool", "complex64", "uint16"])
def test_wrong_kind_of_array_is_a_type_error(algo, position, make):
    args, kw = setup(algo)
    name = ("param", "grad")[position]
    bad = make(args[position])
    protect = [a for i, a in enumerate(args) if i != position]
    args[position] = bad
    expect_rejected(algo, args, kw, TypeError, f"Invalid {name}: ", protect)


@algos
def test_mixed_dtypes_are_a_type_error(algo):
    args, kw = setup(algo)
    args[1] = args[1].astype(np.float64)
    expect_rejected(algo, args, kw, TypeError,
                    re.escape("Invalid grad: array of dtype float64 (expected float32"))


@algos
def test_shape_mismatch_is_a_value_error_no_broadcasting(algo):
    args, kw = setup(algo)
    i, name = first_state(algo, kw)
    args[i] = args[i][:1]
    expect_rejected(algo, args, kw, ValueError,
                    re.escape(f"Invalid {name}: shape (1,) (expected ({N},)"))


@algos
def test_grad_shape_mismatch(algo):
    args, kw = setup(algo)
    args[1] = args[1].reshape(8, 8)
    expect_rejected(algo, args, kw, ValueError, re.escape("Invalid grad: shape (8, 8)"))


@algos
def test_same_array_twice_is_rejected(algo):
    args, kw = setup(algo)
    args[1] = args[0]
    expect_rejected(algo, args, kw, ValueError, "Invalid grad: it overlaps param in memory")


@algos
def test_overlapping_state_is_rejected(algo):
    args, kw = setup(algo)
    i, name = first_state(algo, kw)
    buf = np.zeros(2 * N, args[0].dtype)
    buf[:N] = args[0]
    args[0], args[i] = buf[:N], buf[N // 2: N // 2 + N]
    expect_rejected(algo, args, kw, ValueError,
                    f"Invalid {name}: it overlaps param in memory", protect=[buf])


@algos
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("size", [N, 2**14 + 3], ids=["serial", "parallel"])
def test_overlap_found_by_the_kernel_writes_nothing(algo, size, backend):
    # The numba backend checks overlap inside its kernel, before the loop: the pair of the
    # last arrays used (the last active state, the EMA), overlapping in part, is found in both
    # kernel builds and named as the Python check names it; nothing is written, scalar states
    # included.
    options = dict(algo.option_sets[-1])
    prob = Problem(algo, options, size, np.float32, seed=4)
    last = algo.active_states(options)[-1]
    buf = np.ones(2 * size + 7, np.float32)
    buf[:size] = prob.state[last]
    prob.state[last] = buf[:size]
    ema = buf[size // 2: size // 2 + size]
    args = [prob.param, prob.grad(), *prob.state.values()]
    kw = dict(options, step=3, backend=backend, **prob.scalars, ema=ema, ema_decay=0.9)
    expect_rejected(algo, args, kw, ValueError, f"Invalid ema: it overlaps {last} in memory",
                    protect=[buf, *args[:2], *prob.scalars.values(),
                             *[a for a in prob.state.values() if a is not None]])


@algos
@pytest.mark.parametrize("which", ["param", "state"])
def test_read_only_param_or_state_is_rejected(algo, which):
    args, kw = setup(algo)
    i, name = (0, "param") if which == "param" else first_state(algo, kw)
    args[i].setflags(write=False)
    expect_rejected(algo, args, kw, ValueError, f"Invalid {name}: read-only array")


@algos
def test_non_contiguous_is_rejected(algo):
    args, kw = setup(algo)
    base = np.zeros(2 * N, args[0].dtype)
    base[::2] = args[0]
    args[0] = base[::2]
    expect_rejected(algo, args, kw, ValueError, "Invalid param: array with gaps",
                    protect=[base, *args[1:]])


@algos
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_bad_lr(algo, value):
    # The learning rate, or the first real hyperparameter (Rprop's update takes no lr: it
    # only initialises step_size); each has a lower bound of 0 or more.
    name = _first_real(algo)
    args, kw = setup(algo)
    kw[name] = value
    expect_rejected(algo, args, kw, ValueError, re.escape(f"Invalid {name}: {value!r}"))


def _first_real(algo):
    return next(h.name for h in algo.spec.hypers if not h.flag)


@algos
def test_non_number_hyperparameter_is_a_type_error(algo):
    name = _first_real(algo)
    args, kw = setup(algo)
    kw[name] = "0.1"
    expect_rejected(algo, args, kw, TypeError, re.escape(f"Invalid {name}: '0.1'"))


@algos
def test_algorithm_specific_bad_options(algo):
    assert algo.bad_options, "every algorithm lists its own invalid hyperparameters"
    for options, message in algo.bad_options:
        args, kw = setup(algo, options)
        expect_rejected(algo, args, kw, ValueError, re.escape(message))


@algos
@pytest.mark.parametrize("step", [0, -3, 1.5, True, "2", 2**63, np.uint64(2**63)])
def test_bad_step(algo, step):
    args, kw = setup(algo)
    kw["step"] = step
    expect_rejected(algo, args, kw, ValueError, re.escape(f"Invalid step: {step!r}"))


@pytest.mark.parametrize("algo", [a for a in ALGORITHMS if a.name in ("adam", "adamw",
                                                                         "adagrad")],
                         ids=lambda a: a.name)
def test_step_is_required_where_the_math_uses_it(algo):
    args, kw = setup(algo)
    kw["step"] = None
    expect_rejected(algo, args, kw, ValueError, "Invalid step: None")


def test_step_not_required_where_unused():
    algo = ALGORITHMS[0]  # sgd without momentum ignores step
    args, kw = setup(algo, {"lr": 0.1})
    del kw["step"]
    algo.step_fn(*args, **kw)


def test_numpy_integer_step_is_accepted():
    args, kw = setup(ALGORITHMS[3])
    kw["step"] = np.int64(4)
    ALGORITHMS[3].step_fn(*args, **kw)


@algos
def test_bad_flag_is_a_type_error(algo):
    args, kw = setup(algo)
    kw["maximize"] = 1
    expect_rejected(algo, args, kw, TypeError, re.escape("Invalid maximize: 1"))


@algos
@pytest.mark.parametrize("backend,exc,match", [
    ("bogus", ValueError, "Invalid backend: 'bogus'"),
    # A GPU backend with host arrays is the wrong kind of call, whether or not it could run
    # (unavailable GPU backends: tests/test_device_validation.py).
    ("cupy", TypeError, "Invalid backend: 'cupy' for NumPy arrays"),
    ("numba-cuda", TypeError, "Invalid backend: 'numba-cuda' for NumPy arrays"),
])
def test_bad_backend(algo, backend, exc, match):
    args, kw = setup(algo)
    kw["backend"] = backend
    expect_rejected(algo, args, kw, exc, match)


STATE_PRESENCE: list[tuple[str, dict[str, Any], str, bool]] = [
    # (algorithm, options, state, give it?) -> rejected
    ("adam", {"amsgrad": True}, "max_exp_avg_sq", False),
    ("adam", {}, "max_exp_avg_sq", True),
    ("adamw", {"amsgrad": True}, "max_exp_avg_sq", False),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, "momentum_buffer", False),
    ("sgd", {"lr": 0.1}, "momentum_buffer", True),
    ("rmsprop", {"centered": True}, "grad_avg", False),
    ("rmsprop", {}, "grad_avg", True),
    ("rmsprop", {"momentum": 0.9}, "momentum_buffer", False),
    ("rmsprop", {}, "momentum_buffer", True),
]


@pytest.mark.parametrize("name,options,state,give", STATE_PRESENCE)
def test_optional_state_given_exactly_when_used(name, options, state, give):
    algo = next(a for a in ALGORITHMS if a.name == name)
    args, kw = setup(algo, options)
    i = 2 + algo.states.index(state)
    args[i] = np.zeros(N, np.float32) if give else None
    expect_rejected(algo, args, kw, ValueError, f"Invalid {state}: ")


def test_hyperparameters_checked_once_are_still_checked_when_they_change():
    # The checks are cached while a spec is called with the very same value objects: a value
    # equal to the cached one but of another type (1.0 == True), or a new value, is checked.
    p, g = np.ones(8, np.float32), np.full(8, 0.5, np.float32)
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    fastopt.adam_step(p, g, m, v, vmax, step=1, lr=1.0, amsgrad=True)
    fastopt.adam_step(p, g, m, v, vmax, step=2, lr=1.0, amsgrad=True)
    before = [a.copy() for a in (p, m, v, vmax)]
    with pytest.raises(TypeError, match="Invalid lr: True"):
        fastopt.adam_step(p, g, m, v, vmax, step=3, lr=True, amsgrad=True)
    with pytest.raises(TypeError, match="Invalid amsgrad: 1.0"):
        fastopt.adam_step(p, g, m, v, vmax, step=3, lr=1.0, amsgrad=1.0)
    with pytest.raises(ValueError, match="Invalid lr: -1.0"):
        fastopt.adam_step(p, g, m, v, vmax, step=3, lr=-1.0, amsgrad=True)
    for a, b in zip((p, m, v, vmax), before):
        np.testing.assert_array_equal(a, b)
    # A new lr takes effect (as a fresh call computes it).
    q, mq, vq, vmq = (a.copy() for a in before)
    fastopt.adam_step(p, g, m, v, vmax, step=3, lr=0.25, amsgrad=True)
    fastopt.adam_step(q, g, mq, vq, vmq, step=3, lr=float("0.25"), amsgrad=True, backend="numpy")
    np.testing.assert_array_equal(p, q)


def _bad_variants(args: list[Any]) -> list[tuple[str, list[Any]]]:
    """Calls the plain path must hand to the general one, each with what it changes."""
    out: list[tuple[str, list[Any]]] = []

    def variant(name: str, k: int, a: Any) -> None:
        v = list(args)
        v[k] = a
        out.append((name, v))

    s = next(k for k, a in enumerate(args) if k >= 2 and a is not None)
    variant("float64 grad", 1, args[1].astype(np.float64))
    variant("short state", s, args[s][:-1].copy())
    variant("strided param", 0, np.repeat(args[0], 2)[::2])
    variant("state is the param", s, args[0])
    variant("list grad", 1, list(args[1]))
    read_only = args[s].copy()
    read_only.setflags(write=False)
    variant("read-only state", s, read_only)
    extra = next((k for k, a in enumerate(args) if k >= 2 and a is None), None)
    if extra is not None:
        variant("unused state given", extra, np.zeros_like(args[0]))
    variant("missing state", s, None)
    return out


@algos
def test_the_plain_path_gives_the_general_paths_bits_and_errors(algo, monkeypatch):
    """The most common call (1-D contiguous NumPy arrays of one dtype, the hyperparameter
    objects of the spec's last call: _generic._plain_step) updates exactly as the general path
    (here: the same arrays in 2-D) and sends every call it does not handle, unchanged, to the
    general path's errors."""
    from fastopt import _generic

    taken: list[bool] = []
    plain_step = _generic._plain_step

    def spy(*a: Any) -> bool:
        taken.append(plain_step(*a))
        return taken[-1]

    monkeypatch.setattr(_generic, "_plain_step", spy)
    args, kw = setup(algo)
    flat = [None if a is None else a.copy() for a in args]
    square = [None if a is None else a.copy().reshape(8, -1) for a in args]
    for step in (3, 4, 5):
        algo.step_fn(*flat, **{**kw, "step": step})
        algo.step_fn(*square, **{**kw, "step": step})
    if not algo.spec.scalar_states:
        assert taken[-2:] == [True, False]  # the 1-D call took the plain path
    for a, b in zip(flat, square):
        if a is not None:
            assert a.tobytes() == b.tobytes()
    # Errors: each bad call, once the plain path is warm, raises what a cold call raises.
    for name, bad in _bad_variants(flat):
        messages = []
        for cold in (True, False):
            if cold:
                _generic._configs.clear()
            else:
                algo.step_fn(*flat, **kw)
                algo.step_fn(*flat, **kw)
            before = snapshot(bad)
            with pytest.raises((TypeError, ValueError)) as info:
                algo.step_fn(*bad, **kw)
            assert snapshot(bad) == before, name
            messages.append((info.type, str(info.value)))
        assert messages[0] == messages[1], name
