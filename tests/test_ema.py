"""The weight EMA fused into every step function (``ema=``), and ``fastopt.ema_swap``.

Backends against the reference are in the generic tests (``ema_cases``); here: torch's
AveragedModel as the oracle, the parameter untouched by the fusion, the first update's copy,
``ema_step``, bad input (nothing written) and the swap.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import reference
from algorithms import ALGORITHMS, DTYPES, Problem

SIZES = (1, 33, 2**15 + 5)  # the last takes the parallel kernels


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("algo", ALGORITHMS, ids=lambda a: a.name)
def test_fusing_the_ema_leaves_the_update_bit_for_bit(algo, size, dtype):
    """With ``ema=`` the parameter and states are exactly those of the step without it, and
    the EMA is exactly reference.ema_update applied to that parameter."""
    options = {**algo.option_sets[-1], "ema_decay": 0.75}
    fused = Problem(algo, options, size, dtype, seed=5)
    plain = fused.copy()
    expected = np.full_like(fused.param, np.nan)
    for t in range(1, 6):
        g = fused.grad()
        fused.step(g, t, "numba")
        plain.algo.step_fn(plain.param, g, *plain.state.values(), step=t, backend="numba",
                           **plain.scalars, **plain.options)
        reference.ema_update(expected, plain.param, decay=0.75, first=t == 1)
    for name, a in plain.arrays().items():
        if name != "ema":
            np.testing.assert_array_equal(fused.arrays()[name], a, err_msg=name)
    np.testing.assert_array_equal(fused.ema, expected)


def test_matches_torch_averaged_model():
    """torch.optim.swa_utils' EMA of the same parameter trajectory, the first update a copy."""
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    rng = np.random.default_rng(0)
    p = rng.standard_normal(1000).astype(np.float32)
    m, v, ema = np.zeros_like(p), np.zeros_like(p), np.empty_like(p)
    model = torch.nn.Linear(1000, 1, bias=False)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    for t in range(1, 30):
        g = rng.standard_normal(1000).astype(np.float32)
        fastopt.adam_step(p, g, m, v, step=t, lr=0.1, ema=ema, ema_decay=0.99)
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(p).reshape(1, -1))
        averaged.update_parameters(model)
        # Within rounding, not bit for bit: torch's CPU lerp runs a fused multiply-add in its
        # vector loop (one rounding) and the formula written out in its scalar tail.
        np.testing.assert_allclose(ema, averaged.module.weight.detach().numpy().ravel(),
                                   rtol=1e-6, atol=1e-7, err_msg=f"step {t}")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_first_update_copies_whatever_the_ema_held(backend):
    p = np.array([1.0, -2.0, 3.0], np.float32)
    g = np.array([0.5, 0.5, -1.0], np.float32)
    ema = np.array([np.nan, np.inf, -np.inf], np.float32)
    fastopt.sgd_step(p, g, lr=0.1, ema=ema, ema_step=1, backend=backend)
    np.testing.assert_array_equal(ema, p)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_decay_bounds(backend):
    p = np.array([1.0, 2.0], np.float64)
    g = np.array([1.0, -1.0], np.float64)
    ema = np.array([5.0, 6.0])
    fastopt.sgd_step(p, g, lr=0.5, ema=ema, ema_decay=1.0, ema_step=2, backend=backend)
    np.testing.assert_array_equal(ema, [5.0, 6.0])  # decay 1: the EMA never moves
    fastopt.sgd_step(p, g, lr=0.5, ema=ema, ema_decay=0.0, ema_step=3, backend=backend)
    np.testing.assert_array_equal(ema, p)  # decay 0: the EMA is the parameter


def test_ema_step_starts_the_ema_late():
    p = np.ones(4, np.float32)
    g = np.full(4, 0.25, np.float32)
    m, v, ema = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t in range(1, 4):
        fastopt.adam_step(p, g, m, v, step=t, lr=0.1)
    fastopt.adam_step(p, g, m, v, step=4, lr=0.1, ema=ema, ema_step=1)
    np.testing.assert_array_equal(ema, p)
    before = ema.copy()
    fastopt.adam_step(p, g, m, v, step=5, lr=0.1, ema=ema, ema_decay=0.5, ema_step=2)
    expected = before.copy()
    reference.ema_update(expected, p, decay=0.5, first=False)
    np.testing.assert_array_equal(ema, expected)


def _adam_arrays():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(8).astype(np.float32)
    return p, rng.standard_normal(8).astype(np.float32), np.zeros_like(p), np.zeros_like(p)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(ema_decay=1.5), ValueError, "Invalid ema_decay: 1.5 (expected 0.0 <= ema_decay"),
    (dict(ema_decay=-0.1), ValueError, "Invalid ema_decay: -0.1"),
    (dict(ema_decay=float("nan")), ValueError, "Invalid ema_decay: nan"),
    (dict(ema_step=0), ValueError, "Invalid ema_step: 0 (expected an int >= 1)"),
    (dict(ema_step=True), ValueError, "Invalid ema_step: True"),
    (dict(ema_step=1.0), ValueError, "Invalid ema_step: 1.0"),
    (dict(ema="float64"), TypeError, "Invalid ema: array of dtype float64"),
    (dict(ema="short"), ValueError, "Invalid ema: shape (7,)"),
    (dict(ema="param"), ValueError, "Invalid ema: it overlaps param"),
    (dict(ema="exp_avg"), ValueError, "Invalid ema: it overlaps exp_avg"),
    (dict(ema="grad"), ValueError, "Invalid ema: it overlaps grad"),
    (dict(ema=None, ema_step=2), ValueError, "Invalid ema_step: 2 (expected None: no ema"),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_ema_arguments_write_nothing(kwargs, error, message, backend):
    p, g, m, v = _adam_arrays()
    ema = np.full_like(p, 7.0)
    arrays = {"float64": ema.astype(np.float64), "short": ema[:7], "param": p,
              "exp_avg": m, "grad": g}
    kwargs = dict(kwargs)
    if "ema" not in kwargs:
        kwargs["ema"] = ema
    elif kwargs["ema"] is not None:
        kwargs["ema"] = arrays[kwargs["ema"]]
    before = [a.copy() for a in (p, g, m, v, ema)]
    with pytest.raises(error) as info:
        fastopt.adam_step(p, g, m, v, step=3, lr=0.1, backend=backend, **kwargs)
    assert message in str(info.value), str(info.value)
    for a, b in zip((p, g, m, v, ema), before):
        np.testing.assert_array_equal(a, b)


def test_step_none_needs_ema_step():
    p, g = np.ones(3), np.ones(3)
    ema = np.zeros(3)
    with pytest.raises(ValueError, match="with step=None, ema needs ema_step"):
        fastopt.sgd_step(p, g, lr=0.1, ema=ema)
    np.testing.assert_array_equal(p, 1.0)
    fastopt.sgd_step(p, g, step=7, lr=0.1, ema=ema, ema_decay=0.5)  # step 7: not the first
    np.testing.assert_array_equal(ema, 0.45)


def test_layouts_follow_the_parameter():
    p = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    g = np.asfortranarray(np.ones((3, 4), np.float32))
    ema = np.asfortranarray(np.zeros((3, 4), np.float32))
    fastopt.sgd_step(p, g, lr=0.5, ema=ema, ema_step=1)
    np.testing.assert_array_equal(ema, p)
    with pytest.raises(ValueError, match="Invalid ema"):
        fastopt.sgd_step(p, g, lr=0.5, ema=np.zeros((3, 4), np.float32), ema_step=2)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("size", [0, 1, 9, 2**15 + 5])
def test_ema_swap_exchanges_and_restores(size, backend):
    rng = np.random.default_rng(size)
    p = rng.standard_normal(size).astype(np.float32)
    ema = rng.standard_normal(size).astype(np.float32)
    p0, e0 = p.copy(), ema.copy()
    fastopt.ema_swap(p, ema, backend=backend)
    np.testing.assert_array_equal(p, e0)
    np.testing.assert_array_equal(ema, p0)
    fastopt.ema_swap(p, ema, backend=backend)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(ema, e0)


def test_ema_swap_bad_input_writes_nothing():
    p = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="Invalid ema: shape"):
        fastopt.ema_swap(p, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="overlaps"):
        fastopt.ema_swap(p, p)
    with pytest.raises(TypeError, match="Invalid ema"):
        fastopt.ema_swap(p, np.zeros(4, np.float64))
    np.testing.assert_array_equal(p, 1.0)


def test_ema_swap_of_torch_tensors_marks_them_modified():
    torch = pytest.importorskip("torch")
    p = torch.ones(5)
    ema = torch.zeros(5)
    versions = p._version, ema._version
    fastopt.ema_swap(p, ema)
    assert torch.equal(p, torch.zeros(5)) and torch.equal(ema, torch.ones(5))
    assert p._version > versions[0] and ema._version > versions[1]


def test_every_step_function_documents_the_ema():
    for algo in ALGORITHMS:
        assert "ema_decay" in algo.step_fn.__doc__ and "ema_swap" in algo.step_fn.__doc__
