"""Scalar states (NAdam's mu_product, ASGD's eta and mu): torch keeps one 0-d tensor of each
per parameter. Every algorithm whose spec declares one is tested here, through the functional
API (given in place, or derived from ``step``), the classes and fastopt.torch."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import fastopt
from algorithms import ALGORITHMS, Problem
from fastopt import _generic

WITH_SCALARS = [a for a in ALGORITHMS if a.spec.scalar_states]
ids = [a.name for a in WITH_SCALARS]


def test_the_table_has_scalar_states():
    assert {a.name for a in WITH_SCALARS} >= {"nadam", "asgd"}


def kind(algo, name, dtype):
    """The dtype a scalar state is kept in: its own (Schedule-Free's float64), else the
    parameters'."""
    return np.dtype(algo.spec.scalar_states[algo.spec.scalar_names.index(name)].dtype or dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
def test_given_states_advance_in_place_and_derived_ones_agree(algo, dtype):
    """Passing the 0-d arrays and leaving them out give bit-identical updates when the options
    do not change; the arrays hold the reference's values at every step."""
    for options in algo.option_sets:
        given = Problem(algo, options, 257, dtype, seed=3)
        derived, ref = given.copy(), given.copy()
        derived.scalars = {}
        for t in range(1, 31):
            g = given.grad()
            given.step(g, t, "numba")
            derived.step(g, t, "numba")
            ref.step_reference(g, t)
            for name, a in given.scalars.items():
                assert a.dtype == kind(algo, name, dtype) and a.shape == ()
                assert a == ref.scalars[name], (name, t)
        for name, a in given.arrays().items():
            np.testing.assert_array_equal(a, derived.arrays()[name], err_msg=name)


@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
def test_derived_states_restart_and_resume_at_any_step(algo):
    """The derived values of a step do not depend on the calls before it (the cache of the
    last derived value is per options: out-of-order steps replay from the start)."""
    def step7(before):
        other = Problem(algo, algo.option_sets[0], 33, np.float32, seed=2)
        other.scalars = {}
        for t in before:  # other arrays, the same options: the same cache entry
            other.step(other.grad(), t, "numba")
        prob = Problem(algo, algo.option_sets[0], 33, np.float32, seed=1)
        prob.scalars = {}
        prob.step(prob.grad(), 7, "numba")
        return prob.param

    expected = Problem(algo, algo.option_sets[0], 33, np.float32, seed=1)
    g = expected.grad()
    for t in range(1, 7):  # the scalar states' values before step 7, in place
        expected.step_reference(np.zeros_like(g), t)
    expected.param[...] = Problem(algo, algo.option_sets[0], 33, np.float32, seed=1).param
    for name in expected.state:
        if expected.state[name] is not None:
            expected.state[name][...] = Problem(algo, algo.option_sets[0], 33, np.float32,
                                                seed=1).state[name]
    expected.step(g, 7, "numba")
    for before in ([], [3, 1], [9], [1, 2, 3, 4, 5, 6, 7, 8]):
        np.testing.assert_array_equal(step7(before), expected.param, err_msg=str(before))


def test_a_derived_product_over_a_million_steps_asks_for_the_state():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    msg = "Invalid mu_product: None at step"
    with pytest.raises(ValueError, match=re.escape(msg)):
        fastopt.nadam_step(p, g, m, v, step=_generic.MAX_REPLAY + 10)
    assert (p == 1).all() and (m == 0).all()  # nothing written
    # Given, any step is one update.
    mp = np.array(0.5, np.float32)
    fastopt.nadam_step(p, g, m, v, step=10**12, mu_product=mp)
    assert mp < 0.5 and np.isfinite(p).all()


def test_asgd_states_at_a_huge_step_are_computed_directly():
    p, g, ax = np.ones(4), np.ones(4), np.zeros(4)
    fastopt.asgd_step(p, g, ax, step=10**15, lr=0.1)  # no replay: a closed form
    assert np.isfinite(p).all()


@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
@pytest.mark.parametrize("bad,error,message", [
    (lambda d: [1.0], TypeError, "expected a host array of one {} element"),
    (lambda d: np.ones(2, d), TypeError, "expected a host array of one"),
    (lambda d: np.ones((), np.int32), TypeError, "expected a host array of one"),
    (lambda d: np.array(np.nan, d), ValueError, "expected a finite value"),
    (lambda d: np.array(-2.0, d), ValueError, "expected a finite value"),
])
def test_bad_scalar_states_are_rejected_before_anything_is_written(algo, bad, error, message):
    prob = Problem(algo, algo.option_sets[0], 9, np.float32)
    name = algo.spec.scalar_names[0]
    own = algo.spec.scalar_states[0].dtype
    message = message.format("float32 or float64" if own is None else np.dtype(own).name)
    prob.scalars[name] = bad(kind(algo, name, np.float32))
    before = {k: v.copy() for k, v in prob.arrays().items()}
    with pytest.raises(error, match=f"Invalid {name}: .*" + re.escape(message)):
        prob.step(prob.grad(), 1, "numba")
    for k, v in prob.arrays().items():
        np.testing.assert_array_equal(v, before[k])


def test_a_read_only_scalar_state_is_rejected():
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    mp = np.ones((), np.float32)
    mp.flags.writeable = False
    with pytest.raises(ValueError, match="Invalid mu_product: read-only"):
        fastopt.nadam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, mu_product=mp)


@pytest.mark.parametrize("multi_tensor", [True, False])
@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
def test_classes_keep_scalar_states_and_checkpoint_them(algo, multi_tensor, tmp_path):
    cls = getattr(fastopt, algo.spec.torch_class)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in (5, (3, 4), 1000)]
    probs = [Problem(algo, {}, p.shape, np.float32) for p in params]
    for prob, p in zip(probs, params):
        prob.set_param(p)
    opt = cls(params, multi_tensor=multi_tensor)
    for t in range(1, 6):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        for prob, g in zip(probs, grads):
            prob.step_reference(g, t)
    for i, prob in enumerate(probs):
        for name in algo.spec.scalar_names:
            a = opt.state[i][name]
            assert type(a) is np.ndarray and a.shape == () and a.dtype == kind(algo, name,
                                                                               np.float32)
            assert a == prob.scalars[name]
        np.testing.assert_allclose(params[i], prob.param, rtol=1e-6, atol=1e-7)
    path = tmp_path / "opt.npz"
    opt.save(path)
    other = cls([p.copy() for p in params], multi_tensor=multi_tensor)
    other.load(path)
    for i in range(len(params)):
        for name in algo.spec.scalar_names:
            assert other.state[i][name] == opt.state[i][name]
    # A checkpoint without its scalar states, or with a bad one, is refused whole.
    sd = opt.state_dict()
    del sd["state"][1][algo.spec.scalar_names[0]]
    with pytest.raises(ValueError, match=f"lacks {algo.spec.scalar_names[0]}"):
        other.load_state_dict(sd)
    sd = opt.state_dict()
    sd["state"][0][algo.spec.scalar_names[0]] = np.array(math.inf, np.float64)
    with pytest.raises(ValueError, match="expected a finite value"):
        other.load_state_dict(sd)


@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
def test_a_bad_scalar_state_in_a_class_changes_nothing(algo):
    cls = getattr(fastopt, algo.spec.torch_class)
    params = [np.ones(6, np.float32), np.ones(3, np.float32)]
    opt = cls(params)
    opt.step([np.ones(6, np.float32), np.ones(3, np.float32)])
    name = algo.spec.scalar_names[-1]
    opt.state[1][name] = np.array(-5.0, kind(algo, name, np.float32))
    before = [p.copy() for p in params]
    state0 = {k: np.copy(v) for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match=re.escape(f"Invalid state[1][{name!r}]")):
        opt.step([np.ones(6, np.float32), np.ones(3, np.float32)])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    for k, v in opt.state[0].items():
        np.testing.assert_array_equal(v, state0[k])


@pytest.mark.parametrize("multi_tensor", [True, False])
@pytest.mark.parametrize("algo", WITH_SCALARS, ids=ids)
def test_fastopt_torch_scalar_states_are_torchs_bit_for_bit(algo, multi_tensor):
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft
    from torch_optim import oracle_class

    name = algo.spec.torch_class
    torch.manual_seed(0)
    shapes = [(7,), (4, 5)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = getattr(ft, name)(ours, multi_tensor=multi_tensor)
    b = oracle_class(name)(theirs)
    for _ in range(40):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for p, q in zip(ours, theirs):
            for key in algo.spec.scalar_names:
                assert a.state[p][key].dtype == b.state[q][key].dtype
                assert torch.equal(a.state[p][key], b.state[q][key]), key
    # A bad one is refused before anything is written.
    key = algo.spec.scalar_names[0]
    a.state[ours[1]][key] = torch.tensor([1.0, 2.0])
    before = [p.detach().clone() for p in ours]
    with pytest.raises(ValueError, match=f"state {key!r} of a parameter"):
        a.step()
    for p, q in zip(ours, before):
        assert torch.equal(p, q)
