"""The reference pinned to trajectories recorded from torch.optim (tests/make_golden.py).

Also a live cross-check of the compiled backend against torch.optim when torch is importable.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from algorithms import Problem, assert_close, case_id, cases

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "trajectories.npz"))


def test_fixture_covers_the_table():
    keys = {k.rsplit("|", 1)[0] for k in GOLDEN.files if "|" in k}
    expected = {f"{case_id(c)}|{d}" for c in cases() for d in ("float32", "float64")}
    assert keys == expected, "tests/golden is stale: run python tests/make_golden.py"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_reference_matches_torch_trajectory(case, dtype):
    algo, options = case
    key = f"{case_id(case)}|{dtype}"
    param0, grads = GOLDEN[key + "|param0"], GOLDEN[key + "|grads"]
    params, states = GOLDEN[key + "|params"], GOLDEN[key + "|states"]
    prob = Problem(algo, options, param0.shape, dtype)
    prob.param[...] = param0
    active = sorted(algo.active_states(options))
    for t, g in enumerate(grads, start=1):
        prob.step_reference(g, t)
        expected = {"param": params[t - 1]}
        expected.update({name: states[t - 1][i] for i, name in enumerate(active)})
        assert_close(prob.arrays(), expected, f"step {t}")


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
