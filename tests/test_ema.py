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


# The parallel float64 kernels with the EMA are compiled for this test alone: -m slow.
@pytest.mark.parametrize("size,dtype", [
    pytest.param(n, d, id=f"{n}-{np.dtype(d).name}",
                 marks=pytest.mark.slow if n == SIZES[-1] and d == np.float64 else ())
    for n in SIZES for d in DTYPES])
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


# -- the optimizer classes ----------------------------------------------------------------------

def _class_problem(algo, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for n in (3, 2**15 + 5)]
    grads = [[rng.standard_normal(p.size).astype(np.float32) for p in params] for _ in range(4)]
    return params, grads


# The multi-tensor builds compile a kernel per algorithm (4-8 s each on a cold cache): the
# default run keeps one with scalar states (NAdam), Adam and Schedule-Free AdamW; -m slow all.
_MULTI_FAST = {"adam", "nadam", "schedulefree_adamw"}


@pytest.mark.parametrize("algo,multi_tensor", [
    pytest.param(a, m, id=f"{a.name}-{m}",
                 marks=pytest.mark.slow if m and a.name not in _MULTI_FAST else ())
    for a in ALGORITHMS for m in (True, False)])
def test_classes_fuse_the_ema_bit_for_bit(algo, multi_tensor):
    """Every class with ``ema_decay``: the parameters are those of the class without it, the
    EMA reference.ema_update of them (the first update a copy)."""
    cls = getattr(fastopt, algo.spec.torch_class)
    params, grads = _class_problem(algo)
    plain = [p.copy() for p in params]
    opt = cls(params, ema_decay=0.8, multi_tensor=multi_tensor)
    other = cls(plain, multi_tensor=multi_tensor)
    expected = [np.full_like(p, np.nan) for p in params]
    for t, gs in enumerate(grads, 1):
        opt.step(gs)
        other.step(gs)
        for e, p in zip(expected, plain):
            reference.ema_update(e, p, decay=0.8, first=t == 1)
    for i, (p, q, e) in enumerate(zip(params, plain, expected)):
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(opt.state[i]["ema"], e)


def test_class_ema_weights_swap_in_and_back():
    params, grads = _class_problem(None)
    opt = fastopt.AdamW(params, lr=0.1, ema_decay=0.5)
    for gs in grads:
        opt.step(gs)
    trained = [p.copy() for p in params]
    emas = [opt.state[i]["ema"].copy() for i in range(2)]
    with pytest.raises(ZeroDivisionError):
        with opt.ema_weights():
            for p, e in zip(params, emas):
                np.testing.assert_array_equal(p, e)
            with pytest.raises(RuntimeError, match="EMA weights swapped in"):
                opt.step(grads[0])
            with pytest.raises(RuntimeError, match="already swapped in"):
                with opt.ema_weights():
                    pass
            1 / 0  # the block fails: the training weights still come back
    for p, q in zip(params, trained):
        np.testing.assert_array_equal(p, q)
    assert not opt.ema_swapped
    opt.step(grads[0])  # trains again


def test_class_ema_checkpoint_round_trip(tmp_path):
    params, grads = _class_problem(None, seed=3)
    twin = [p.copy() for p in params]
    opt = fastopt.Adam(params, lr=0.1, ema_decay=0.9)
    for gs in grads[:2]:
        opt.step(gs)
    opt.swap_ema()
    opt.save(tmp_path / "ckpt.npz")
    other = fastopt.Adam(twin, lr=0.1, ema_decay=0.9)
    other.load(tmp_path / "ckpt.npz")
    assert other.ema_swapped
    for i in range(2):
        np.testing.assert_array_equal(other.state[i]["ema"], opt.state[i]["ema"])
    opt.swap_ema()
    twin[:] = [p.copy() for p in params]  # the training weights, as a user would restore them
    other = fastopt.Adam(twin, lr=0.1, ema_decay=0.9)
    sd = opt.state_dict()
    other.load_state_dict(sd)
    for gs in grads[2:]:
        opt.step(gs)
        other.step(gs)
    for i in range(2):
        np.testing.assert_array_equal(twin[i], params[i])
        np.testing.assert_array_equal(other.state[i]["ema"], opt.state[i]["ema"])
    with pytest.raises(ValueError, match="ema_swapped"):
        other.load_state_dict({**sd, "ema_swapped": "yes"})


def test_class_ema_bad_decay_and_nothing_to_swap():
    p = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="Invalid ema_decay: 2.0"):
        fastopt.SGD([p], lr=0.1, ema_decay=2.0)
    opt = fastopt.SGD([p], lr=0.1)
    with pytest.raises(RuntimeError, match="no parameter has a weight EMA"):
        opt.swap_ema()
    opt.param_groups[0]["ema_decay"] = float("nan")
    with pytest.raises(ValueError, match="Invalid ema_decay: nan"):
        opt.step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(p, 1.0)
    assert opt.state == {}


def test_class_ema_turned_on_later_starts_with_a_copy():
    p = np.ones(4, np.float32)
    opt = fastopt.SGD([p], lr=0.25)
    g = np.ones(4, np.float32)
    opt.step([g])
    assert "ema" not in opt.state[0]
    opt.param_groups[0]["ema_decay"] = 0.5
    opt.step([g])
    np.testing.assert_array_equal(opt.state[0]["ema"], p)  # 0.5: its first update copies
    opt.step([g])
    np.testing.assert_array_equal(opt.state[0]["ema"], (0.5 + 0.25) / 2)


# -- fastopt.torch -------------------------------------------------------------------------------

@pytest.mark.parametrize("foreach", [None, False])
def test_torch_drop_in_matches_averaged_model(foreach):
    torch = pytest.importorskip("torch")
    import copy

    import fastopt.torch as ft
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 3))
    twin = copy.deepcopy(model)
    opt = ft.AdamW(model.parameters(), lr=0.01, ema_decay=0.9, foreach=foreach)
    plain = ft.AdamW(twin.parameters(), lr=0.01, foreach=foreach)
    averaged = AveragedModel(twin, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    for _ in range(8):
        x = torch.randn(4, 10)
        for m, o in ((model, opt), (twin, plain)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
        averaged.update_parameters(twin)
    for p, q, a in zip(model.parameters(), twin.parameters(), averaged.module.parameters()):
        assert torch.equal(p, q)
        torch.testing.assert_close(opt.state[p]["ema"], a.detach(), rtol=1e-6, atol=1e-7)
    versions = [p._version for p in model.parameters()]
    with opt.ema_weights():
        for p, a in zip(model.parameters(), averaged.module.parameters()):
            torch.testing.assert_close(p.detach(), a.detach(), rtol=1e-6, atol=1e-7)
        with pytest.raises(RuntimeError, match="EMA weights swapped in"):
            opt.step()
        assert all(g["ema_swapped"] for g in opt.param_groups)
        sd = opt.state_dict()
    assert all(p._version > v for p, v in zip(model.parameters(), versions))
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    # A checkpoint taken with the EMA weights in says so; another drop-in resumes from it.
    other = ft.AdamW(copy.deepcopy(model).parameters(), lr=0.01, ema_decay=0.9)
    other.load_state_dict(sd)
    assert all(g["ema_swapped"] for g in other.param_groups)
    # torch.optim loads fastopt's checkpoint (it keeps the extra state and group keys).
    torch.optim.AdamW(copy.deepcopy(model).parameters(), lr=0.01).load_state_dict(
        opt.state_dict())
