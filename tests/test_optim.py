"""The optimizer classes: parameter groups, None gradients, multi-tensor launches, checkpoints.

The oracle is written here from scratch: a loop over the arrays calling fastopt.reference with
its own state and step bookkeeping (and torch.optim, when installed, in tests/test_torch.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastopt
from fastopt import reference
from fastopt._check import TOLERANCE

# class name -> (reference function, state names in call order, constructor option sets)
CLASSES = {
    "SGD": (reference.sgd, ("momentum_buffer",), [
        {"lr": 0.1}, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}]),
    "Adam": (reference.adam, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), [
        {}, {"lr": 1e-2, "betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.1}]),
    "AdamW": (reference.adamw, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), [
        {"lr": 1e-2}, {"amsgrad": True, "maximize": True}]),
    "RMSprop": (reference.rmsprop, ("square_avg", "momentum_buffer", "grad_avg"), [
        {}, {"momentum": 0.5, "centered": True, "weight_decay": 0.1}]),
    "Adagrad": (reference.adagrad, ("state_sum",), [
        {}, {"lr_decay": 0.01, "initial_accumulator_value": 0.1, "maximize": True}]),
    "Adadelta": (reference.adadelta, ("square_avg", "acc_delta"), [
        {}, {"weight_decay": 0.1, "rho": 0.8}]),
}
CASES = [(name, kw) for name, (_, _, sets) in CLASSES.items() for kw in sets]
SHAPES = [(3, 4), (7,), (), (0,), (130, 257), (40000,)]  # 40000 > one chunk of multi.CHUNK


def case_id(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def functional(name, kw):
    """Constructor options -> the reference function's keyword arguments."""
    kw = dict(kw)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    kw.pop("initial_accumulator_value", None)
    return kw


def needed(name, kw):
    states = CLASSES[name][1]
    if name == "SGD":
        return states if kw.get("momentum", 0) else ()
    if name == "RMSprop":
        return tuple(s for s in states if s == "square_avg"
                     or (s == "momentum_buffer" and kw.get("momentum", 0) > 0)
                     or (s == "grad_avg" and kw.get("centered")))
    if name in ("Adam", "AdamW"):
        return states if kw.get("amsgrad") else states[:2]
    return states


class Oracle:
    """Two parameter groups (the second with half the lr) stepped with fastopt.reference."""

    def __init__(self, name, kw, params):
        self.name, self.params = name, params
        self.fn, self.names = CLASSES[name][:2]
        self.kws = [functional(name, kw), functional(name, {**kw, "lr": kw.get("lr", 1e-2) / 2})]
        self.groups = [0] * 3 + [1] * (len(params) - 3)
        self.init = kw.get("initial_accumulator_value", 0.0)
        self.active = needed(name, kw)
        self.state = [None] * len(params)
        self.steps = [0] * len(params)

    def step(self, grads):
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            if self.state[i] is None:
                self.state[i] = {n: np.full_like(p, self.init) for n in self.active}
            self.steps[i] += 1
            args = [self.state[i].get(n) for n in self.names]
            self.fn(p, g, *args, step=self.steps[i], **self.kws[self.groups[i]])


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def make_grads(dtype, n_steps, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_steps):
        gs = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        if t in (1, 2):
            gs[t] = None  # no gradient for one array on two steps
        out.append(gs)
    return out


def build(name, kw, params, **extra):
    cls = getattr(fastopt, name)
    groups = [{"params": params[:3]},
              {"params": params[3:], "lr": kw.get("lr", 1e-2) / 2}]
    kw = dict(kw)
    if "lr" not in kw:
        kw["lr"] = 1e-2
    return cls(groups, **kw, **extra)


@pytest.mark.parametrize("backend,multi,dtype", [
    (b, m, d) if (b, m, d) != ("numba", False, np.float64)
    # (the per-tensor path in float64: the single-tensor kernels' float64 builds are covered
    # by test_backends_vs_reference; kept for -m slow)
    else pytest.param(b, m, d, marks=pytest.mark.slow)
    for d in (np.float32, np.float64) for b, m in (("numba", True), ("numba", False),
                                                   ("numpy", True))])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_classes_match_the_reference(case, backend, multi, dtype):
    name, kw = case
    params = make_params(dtype)
    oracle = Oracle(name, {**kw, "lr": kw.get("lr", 1e-2)}, [p.copy() for p in params])
    opt = build(name, kw, params, backend=backend, multi_tensor=multi)
    before = [p.copy() for p in params]
    for grads in make_grads(dtype, 6):
        result = opt.step(grads)
        oracle.step(grads)
        assert result.skipped is False and result.grad_norm is None
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    for i, (p, q) in enumerate(zip(params, oracle.params)):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=atol, err_msg=f"params[{i}]")
        assert opt.state[i]["step"] == oracle.steps[i]
        for n in oracle.active:
            np.testing.assert_allclose(opt.state[i][n], oracle.state[i][n], rtol=rtol,
                                       atol=atol, err_msg=f"state[{i}][{n}]")
    # The arrays changed (the steps did something) and the step counts skipped the None grads.
    assert not np.array_equal(params[4], before[4])
    assert opt.state[1]["step"] == 5 and opt.state[0]["step"] == 6


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_multi_tensor_launch_is_bit_identical_to_per_tensor_calls(case):
    name, kw = case
    a, b = make_params(np.float32), make_params(np.float32)
    one = build(name, kw, a, multi_tensor=True)
    many = build(name, kw, b, multi_tensor=False)
    for grads in make_grads(np.float32, 4):
        one.step(grads)
        many.step(grads)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


def test_mixed_dtypes_in_one_group():
    p32 = np.linspace(-1, 1, 50, dtype=np.float32)
    p64 = np.linspace(-1, 1, 70)
    q32, q64 = p32.copy(), p64.copy()
    opt = fastopt.Adam([p32, p64], lr=0.1)
    m = [np.zeros_like(q32), np.zeros_like(q32), np.zeros_like(q64), np.zeros_like(q64)]
    for t in range(1, 4):
        opt.step([p32 * 2, p64 * 2])
        reference.adam(q32, q32 * 2, m[0], m[1], step=t, lr=0.1)
        reference.adam(q64, q64 * 2, m[2], m[3], step=t, lr=0.1)
    np.testing.assert_allclose(p32, q32, rtol=2e-6)
    np.testing.assert_allclose(p64, q64, rtol=1e-12)


def test_defaults_follow_torch():
    p = [np.zeros(3)]
    assert fastopt.SGD(p).defaults["lr"] == 1e-3
    assert fastopt.Adam(p).defaults["betas"] == (0.9, 0.999)
    assert fastopt.AdamW(p).defaults["weight_decay"] == 1e-2
    assert fastopt.RMSprop(p).defaults["alpha"] == 0.99
    assert fastopt.Adagrad(p).defaults["eps"] == 1e-10
    assert fastopt.Adadelta(p).defaults["lr"] == 1.0


# ---------------------------------------------------------------------------------------------
# Rejections: a rejected call changes nothing.


def snapshot(opt, params):
    return ([p.copy() for p in params],
            {i: {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
             for i, s in opt.state.items()},
            [dict(g, params=None) for g in opt.param_groups])


def assert_unchanged(opt, params, snap):
    ps, state, groups = snap
    for p, q in zip(params, ps):
        np.testing.assert_array_equal(p, q)
    assert opt.state.keys() == state.keys()
    for i, s in state.items():
        assert opt.state[i].keys() == s.keys()
        for k, v in s.items():
            np.testing.assert_array_equal(opt.state[i][k], v)
    assert [dict(g, params=None) for g in opt.param_groups] == groups


def started():
    params = [np.linspace(0, 1, 5), np.linspace(1, 2, 6)]
    opt = fastopt.Adam(params, lr=0.1)
    opt.step([np.ones(5), np.ones(6)])
    return opt, params


@pytest.mark.parametrize("grads,exc,msg", [
    ([np.ones(5)], ValueError, "Invalid grads: 1 entries (expected 2"),
    (np.ones(5), TypeError, "Invalid grads: numpy.ndarray"),
    ([np.ones(5), [1.0] * 6], TypeError, "Invalid grads[1]: builtins.list"),
    ([np.ones(5), np.ones(6, np.float32)], TypeError, "Invalid grads[1]: dtype float32"),
    ([np.ones(5), np.ones(7)], ValueError, "Invalid grads[1]: shape (7,)"),
    ([np.ones(5), np.ones(12)[::2]], ValueError, "Invalid grads[1]: array with gaps"),
])
def test_bad_grads_are_rejected_and_change_nothing(grads, exc, msg):
    opt, params = started()
    snap = snapshot(opt, params)
    with pytest.raises(exc) as e:
        opt.step(grads)
    assert msg in str(e.value)
    assert_unchanged(opt, params, snap)


def test_grad_overlapping_a_param_or_state_is_rejected():
    opt, params = started()
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"Invalid grads\[1\]: it overlaps params\[1\]"):
        opt.step([np.ones(5), params[1]])
    with pytest.raises(ValueError, match=r"overlaps state\[0\]\['exp_avg'\]"):
        opt.step([opt.state[0]["exp_avg"], None])
    assert_unchanged(opt, params, snap)


def test_bad_hyperparameter_set_between_steps_is_rejected_before_any_write():
    opt, params = started()
    opt.param_groups[0]["betas"] = (0.9, 1.5)
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match="Invalid beta2: 1.5"):
        opt.step([np.ones(5), np.ones(6)])
    assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("make,exc,msg", [
    (lambda: fastopt.Adam([]), ValueError, "empty list"),
    (lambda: fastopt.Adam(np.zeros(3)), TypeError, "a single numpy.ndarray"),
    (lambda: fastopt.Adam([np.zeros(3, np.int64)]), TypeError, "Invalid params[0]"),
    (lambda: fastopt.Adam([np.zeros(4)[::2]]), ValueError, "array with gaps"),
    (lambda: fastopt.Adam([np.zeros(3), np.zeros(3)], lr=-1.0), ValueError, "Invalid lr: -1.0"),
    (lambda: fastopt.Adam([np.zeros(3)], betas=(0.9,)), ValueError, "Invalid betas"),
    (lambda: fastopt.SGD([np.zeros(3)], nesterov=True), ValueError, "Invalid nesterov"),
    (lambda: fastopt.Adagrad([np.zeros(3)], initial_accumulator_value=-1), ValueError,
     "initial_accumulator_value"),
    (lambda: fastopt.Adam([np.zeros(3)], backend="cupy"), ValueError, "Invalid backend"),
])
def test_bad_constructor_arguments(make, exc, msg):
    with pytest.raises(exc) as e:
        make()
    assert msg in str(e.value)


def test_an_array_in_two_groups_is_rejected():
    p = np.zeros(4)
    with pytest.raises(ValueError, match=r"Invalid params\[1\]: it overlaps params\[0\]"):
        fastopt.SGD([{"params": [p]}, {"params": [p[2:]]}], lr=0.1)
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        fastopt.SGD([read_only], lr=0.1)


# ---------------------------------------------------------------------------------------------
# Gradient safety: unscale, skip on non-finite, clip by the global norm.


def test_loss_scale_divides_the_gradients_inside_the_update():
    a = [np.linspace(-1, 1, 40000, dtype=np.float32), np.linspace(0, 1, 9, dtype=np.float32)]
    b = [x.copy() for x in a]
    grads = [np.cos(x) * np.float32(1024) for x in a]
    kept = [g.copy() for g in grads]
    scaled, plain = fastopt.Adam(a, lr=0.1), fastopt.Adam(b, lr=0.1)
    for _ in range(3):
        r = scaled.step(grads, loss_scale=1024.0)
        plain.step([g * np.float32(1 / 1024) for g in grads])
        assert not r.skipped and r.nonfinite == 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for g, k in zip(grads, kept):
        np.testing.assert_array_equal(g, k)  # the caller's gradients are never written


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_non_finite_gradient_skips_the_whole_step(bad, backend):
    params = [np.linspace(0, 1, 5), np.linspace(1, 2, 40000), np.linspace(2, 3, 3)]
    opt = fastopt.Adam(params, lr=0.1, backend=backend)
    opt.step([np.ones(5), np.ones(40000), None])
    snap = snapshot(opt, params)
    grads = [np.ones(5), np.ones(40000), np.ones(3)]
    grads[1][12345] = bad
    r = opt.step(grads, loss_scale=8.0)
    assert r.skipped and r.nonfinite == 1 and not np.isfinite(r.grad_norm)
    assert_unchanged(opt, params, snap)  # nothing written, no state allocated for params[2]
    assert 2 not in opt.state
    # Without skipping, the NaN/Inf goes through as the functional API lets it.
    r = opt.step(grads, skip_nonfinite=False)
    assert not r.skipped and np.isnan(params[1][12345])


def test_clip_by_global_norm_matches_the_closed_form():
    rng = np.random.default_rng(3)
    a = [rng.standard_normal(s) for s in [(50, 40), (7,), (40000,)]]
    b = [x.copy() for x in a]
    grads = [rng.standard_normal(x.shape) * 10 for x in a]
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    coef = 1.0 / (norm + 1e-6)
    opt = fastopt.SGD(a, lr=0.1)
    r = opt.step(grads, max_grad_norm=1.0)
    np.testing.assert_allclose(r.grad_norm, norm, rtol=1e-13)
    np.testing.assert_allclose(r.clip_coef, coef, rtol=1e-13)
    for x, y, g in zip(a, b, grads):
        np.testing.assert_allclose(x, y - 0.1 * (g * coef), rtol=1e-14, atol=1e-15)
    # A norm already under the limit leaves the gradients as they are.
    r = opt.step([g * 1e-6 for g in grads], max_grad_norm=1e3)
    assert r.clip_coef == 1.0


def test_global_norm_is_deterministic_across_thread_counts():
    numba = pytest.importorskip("numba")
    rng = np.random.default_rng(4)
    grads = [rng.standard_normal(n).astype(np.float32) for n in (300000, 17, 70001)]
    norms = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            opt = fastopt.SGD([np.zeros_like(g) for g in grads], lr=0.1)
            norms.append(opt.step(grads, max_grad_norm=1.0).grad_norm)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert norms[0] == norms[1]
    np.testing.assert_allclose(norms[0], np.sqrt(sum(np.sum(g.astype(np.float64) ** 2)
                                                     for g in grads)), rtol=1e-12)


def test_bad_safety_arguments_are_rejected():
    opt, params = started()
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match="Invalid loss_scale: 0.0"):
        opt.step([np.ones(5), np.ones(6)], loss_scale=0.0)
    with pytest.raises(ValueError, match="Invalid max_grad_norm: nan"):
        opt.step([np.ones(5), np.ones(6)], max_grad_norm=float("nan"))
    assert_unchanged(opt, params, snap)


# ---------------------------------------------------------------------------------------------
# Checkpoints.


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_resume_from_a_file_is_bit_identical(case, tmp_path):
    name, kw = case
    grads = make_grads(np.float32, 8)
    params = make_params(np.float32)
    straight = build(name, kw, params)
    for g in grads:
        straight.step(g)

    first = make_params(np.float32)
    opt = build(name, kw, first)
    for g in grads[:4]:
        opt.step(g)
    opt.save(tmp_path / "opt.npz")
    np.savez(tmp_path / "params.npz", *first)
    del opt

    with np.load(tmp_path / "params.npz") as f:
        resumed = [f[f"arr_{i}"].copy() for i in range(len(first))]
    opt = build(name, kw, resumed)
    opt.load(tmp_path / "opt.npz")
    for g in grads[4:]:
        opt.step(g)
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(p, q)
    for i, s in straight.state.items():
        for k, v in s.items():
            np.testing.assert_array_equal(opt.state[i][k], v)


def test_state_dict_round_trip_keeps_hyperparameters():
    opt, params = started()
    opt.param_groups[0]["lr"] = 0.01
    sd = opt.state_dict()
    other = fastopt.Adam([np.zeros(5), np.zeros(6)], lr=0.5)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.01
    assert other.state[0]["step"] == 1
    sd["state"][0]["exp_avg"][:] = 7  # the loaded state is a copy
    assert not np.any(other.state[0]["exp_avg"] == 7)


@pytest.mark.parametrize("mutate,msg", [
    (lambda sd: sd.update(optimizer="SGD"), "saved by 'SGD'"),
    (lambda sd: sd.update(format_version=99), "format_version 99"),
    (lambda sd: sd["param_groups"].append({}), "2 parameter groups"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros(4)), "state[0]['exp_avg']"),
    (lambda sd: sd["state"][1].update(exp_avg=np.zeros(6, np.float32)), "float32"),
    (lambda sd: sd["state"][0].pop("exp_avg_sq"), "lacks exp_avg_sq"),
    (lambda sd: sd["state"][0].update(step=-1), "state[0]['step']: -1 (expected 0 <= step"),
    (lambda sd: sd["state"].update({5: {"step": 1}}), "state entry 5"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "Invalid lr: -1.0"),
])
def test_mismatched_state_dict_is_rejected_and_changes_nothing(mutate, msg):
    opt, params = started()
    sd = opt.state_dict()
    mutate(sd)
    opt.step([np.ones(5), np.ones(6)])
    snap = snapshot(opt, params)
    with pytest.raises(ValueError) as e:
        opt.load_state_dict(sd)
    assert msg in str(e.value)
    assert_unchanged(opt, params, snap)


def test_truncated_or_corrupt_file_is_a_clear_error(tmp_path):
    opt, params = started()
    path = tmp_path / "opt.npz"
    opt.save(path)
    data = path.read_bytes()
    opt.step([np.ones(5), np.ones(6)])
    snap = snapshot(opt, params)

    (tmp_path / "short.npz").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    k = data.index(b"\x93NUMPY") + 200  # inside the first stored array's bytes
    flipped[k] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
    (tmp_path / "junk.npz").write_bytes(b"not a checkpoint")
    for name in ("short.npz", "flipped.npz", "junk.npz"):
        with pytest.raises(ValueError, match="Invalid checkpoint"):
            opt.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        opt.load(tmp_path / "missing.npz")
    assert_unchanged(opt, params, snap)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    opt, _ = started()
    opt.save(tmp_path / "a.npz")
    opt.save(os.fspath(tmp_path / "a.npz"))  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
