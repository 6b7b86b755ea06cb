"""The reference pinned to trajectories recorded from torch.optim (tests/make_golden.py).

Also a live cross-check of the compiled backend against torch.optim when torch is importable.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from algorithms import (Problem, assert_close, boundary_cases, boundary_id, case_id,
                        cases)

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "trajectories.npz"))


def test_fixture_covers_the_table():
    keys = {k.rsplit("|", 1)[0] for k in GOLDEN.files if "|" in k}
    expected = {f"{case_id(c)}|{d}" for c in cases() for d in ("float32", "float64")}
    expected |= {f"{boundary_id(c)}|{d}" for c in boundary_cases()
                 for d in ("float32", "float64")}
    assert keys == expected, "tests/golden is stale: run python tests/make_golden.py"


GOLDEN_CASES = ([(a, o, 1.0, case_id((a, o))) for a, o in cases()]
                + [(*c, boundary_id(c)) for c in boundary_cases()])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda c: c[3])
def test_reference_matches_torch_trajectory(case, dtype):
    algo, options, scale, name = case
    key = f"{name}|{dtype}"
    param0, grads = GOLDEN[key + "|param0"], GOLDEN[key + "|grads"]
    params, states = GOLDEN[key + "|params"], GOLDEN[key + "|states"]
    prob = Problem(algo, options, param0.shape, dtype)
    prob.set_param(param0)
    scalars = GOLDEN[key + "|scalars"]
    active = sorted(algo.active_states(options))
    for t, g in enumerate(grads, start=1):
        prob.step_reference(g, t)
        expected = {"param": params[t - 1]}
        expected.update({name: states[t - 1][i] for i, name in enumerate(active)})
        assert_close(prob.arrays(), expected, f"step {t}", scaled=scale != 1.0)
        # Scalar states (NAdam's mu_product, ...): torch's rounding, bit for bit.
        np.testing.assert_array_equal(
            [float(prob.scalars[n]) for n in algo.spec.scalar_names], scalars[t - 1],
            err_msg=f"scalar states at step {t}")


@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_numba_matches_live_torch(case):
    torch = pytest.importorskip("torch")
    from torch_optim import make_torch_optimizer, torch_state

    algo, options = case
    prob = Problem(algo, options, 1023, np.float32, seed=7)
    p = torch.nn.Parameter(torch.from_numpy(prob.param.copy()))
    opt = make_torch_optimizer(algo, options, [p])
    for t in range(1, 26):
        g = prob.grad()
        prob.step(g, t, "numba")
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    expected = {"param": p.detach().numpy()}
    expected.update(torch_state(algo, options, opt, p))
    assert_close(prob.arrays(), expected, "against torch.optim after 25 steps")


@pytest.mark.parametrize("case", boundary_cases(), ids=boundary_id)
def test_numba_matches_live_torch_at_the_boundaries(case):
    torch = pytest.importorskip("torch")
    from torch_optim import make_torch_optimizer, torch_state

    algo, options, scale = case
    prob = Problem(algo, options, 1023, np.float32, seed=7)
    p = torch.nn.Parameter(torch.from_numpy(prob.param.copy()))
    opt = make_torch_optimizer(algo, options, [p])
    for t in range(1, 26):
        g = (prob.grad() * np.float32(scale)).astype(np.float32)
        assert np.isfinite(g).all()
        prob.step(g, t, "numba")
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    expected = {"param": p.detach().numpy()}
    expected.update(torch_state(algo, options, opt, p))
    # Where torch's state overflows (1e20 gradients for 25 steps), ours must overflow there too.
    assert_close(prob.arrays(), expected, "against torch.optim after 25 steps",
                 scaled=scale != 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_centered_rmsprop_with_alpha_zero_has_no_nan(dtype):
    """alpha = 0: square_avg = g * g and grad_avg = g exactly, so the centered variance is 0
    and the step is lr * g / eps. (torch's CPU addcmul may fuse the multiply-add and take the
    square root of a negative rounding residual, giving NaN on some CPUs: not a target.)"""
    from fastopt import rmsprop_step

    rng = np.random.default_rng(3)
    for backend in ("numba", "numpy"):
        p = rng.standard_normal(1023).astype(dtype)
        sq, ga = np.zeros_like(p), np.zeros_like(p)
        expected = p.copy()
        for t in range(1, 6):  # later steps start from a non-zero grad_avg
            g = rng.standard_normal(1023).astype(dtype)
            expected -= dtype(1e-9) * (g / dtype(1e-8))
            rmsprop_step(p, g, sq, None, ga, step=t, lr=1e-9, alpha=0.0, eps=1e-8,
                         centered=True, backend=backend)
            assert np.isfinite(p).all(), (backend, t)
            assert np.array_equal(ga, g)
        np.testing.assert_allclose(p, expected, rtol=1e-5)
