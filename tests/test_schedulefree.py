"""Schedule-Free's train/eval protocol: the fused mode switches on every backend, the classes'
train()/eval() against the reference and schedulefree itself, and their failure modes.

The update itself is covered with every other algorithm (the test table and golden
trajectories from schedulefree, tests/torch_optim.py)."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt import reference

CLASSES = [("AdamWScheduleFree", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
           ("SGDScheduleFree", {"lr": 0.05, "momentum": 0.7, "warmup_steps": 3})]


def beta1_of(kw):
    return kw["betas"][0] if "betas" in kw else kw["momentum"]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_switches_are_torch_lerps_in_place(backend, dtype):
    rng = np.random.default_rng(0)
    y, z = rng.standard_normal((2, 1001)).astype(dtype)
    p = y.copy()
    address = p.ctypes.data
    fastopt.schedulefree_eval(p, z, beta1=0.9, backend=backend)
    x = y.copy()
    reference.schedulefree_swap(x, z, weight=1 - 1 / 0.9)
    np.testing.assert_array_equal(p, x)
    # lerp with weight w < 0.5: start + w * (end - start), rounded in the arrays' dtype.
    np.testing.assert_array_equal(x, y + dtype(1 - 1 / 0.9) * (z - y))
    fastopt.schedulefree_train(p, z, beta1=0.9, backend=backend)
    np.testing.assert_allclose(p, y, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert p.ctypes.data == address


def test_switches_match_torch_lerp():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    y, z = rng.standard_normal((2, 4099)).astype(np.float32)
    p = y.copy()
    fastopt.schedulefree_eval(p, z, beta1=0.95)
    expected = torch.from_numpy(y).lerp(torch.from_numpy(z), 1 - 1 / 0.95).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-7)


def test_switches_validate_before_writing():
    p, z = np.ones(5, np.float32), np.zeros(5, np.float32)
    for bad, error in [(dict(beta1=0.0), ValueError), (dict(beta1=1.0), ValueError),
                       (dict(beta1="0.9"), TypeError)]:
        with pytest.raises(error, match="Invalid beta1"):
            fastopt.schedulefree_eval(p, z, **bad)
    with pytest.raises(ValueError, match="Invalid z"):
        fastopt.schedulefree_eval(p, np.zeros(4, np.float32), beta1=0.9)
    with pytest.raises(TypeError, match="Invalid z"):
        fastopt.schedulefree_eval(p, np.zeros(5, np.float64), beta1=0.9)
    assert (p == 1).all()


def _train(cls_name, kw, steps, backend="auto"):
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s).astype(np.float32) for s in (7, (3, 5), 300)]
    opt = getattr(fastopt, cls_name)(params, backend=backend, **kw)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return params, opt


@pytest.mark.parametrize("name,kw", CLASSES, ids=[n for n, _ in CLASSES])
def test_classes_switch_to_the_average_and_back(name, kw):
    params, opt = _train(name, kw, 6)
    ys = [p.copy() for p in params]
    assert all(g["train_mode"] for g in opt.param_groups)
    opt.eval()
    assert not any(g["train_mode"] for g in opt.param_groups)
    for i, (p, y) in enumerate(zip(params, ys)):
        x = y.copy()
        reference.schedulefree_swap(x, opt.state[i]["z"], weight=1 - 1 / beta1_of(kw))
        np.testing.assert_array_equal(p, x)
    before = [p.copy() for p in params]
    opt.eval()  # already in eval mode: nothing moves
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    with pytest.raises(RuntimeError, match=r"in eval mode: call \.train\(\)"):
        opt.step([np.ones_like(p) for p in params])
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    opt.train()
    for p, y in zip(params, ys):
        np.testing.assert_allclose(p, y, rtol=1e-5, atol=1e-6)
    opt.step([np.ones_like(p) for p in params])  # training goes on


@pytest.mark.parametrize("name,kw", CLASSES, ids=[n for n, _ in CLASSES])
def test_the_mode_is_checkpointed(name, kw, tmp_path):
    params, opt = _train(name, kw, 3)
    opt.eval()
    opt.save(tmp_path / "sf.npz")
    other = getattr(fastopt, name)([p.copy() for p in params], **kw)
    other.load(tmp_path / "sf.npz")
    assert not other.param_groups[0]["train_mode"]
    with pytest.raises(RuntimeError, match="eval mode"):
        other.step([np.ones_like(p) for p in params])
    other.train()
    opt.train()
    for p, q in zip(opt.param_groups[0]["params"], other.param_groups[0]["params"]):
        np.testing.assert_array_equal(p, q)


def test_a_bad_z_makes_the_switch_change_nothing():
    params, opt = _train(*CLASSES[0], 2)
    opt.state[2]["z"] = np.zeros(299, np.float32)  # the wrong size, on the last parameter
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match=r"state\[2\]\['z'\]"):
        opt.eval()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p, b)
    assert opt.param_groups[0]["train_mode"]


def test_a_parameter_without_state_is_left_alone():
    p, q = np.ones(3, np.float32), np.ones(4, np.float32)
    opt = fastopt.SGDScheduleFree([p, q], lr=0.1)
    opt.step([np.ones(3, np.float32), None])  # q has no gradient yet: no z
    opt.eval()
    assert (q == 1).all() and not (p == 1).all()


@pytest.mark.parametrize("name,kw", CLASSES, ids=[n for n, _ in CLASSES])
def test_fastopt_torch_matches_schedulefree_through_eval_and_train(name, kw):
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft
    from torch_optim import oracle_class

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    twin.load_state_dict(net.state_dict())
    ours = getattr(ft, name)(net.parameters(), **kw)
    theirs = oracle_class(name)(twin.parameters(), **kw)

    def run(steps):
        for _ in range(steps):
            x = torch.randn(16, 5)
            for m, opt in ((net, ours), (twin, theirs)):
                opt.zero_grad()
                m(x).square().mean().backward()
                opt.step()

    run(5)
    out = net(torch.randn(3, 5))  # a graph that saved y
    ours.eval()
    theirs.eval()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()  # eval() moved the weights: autograd knows
    with pytest.raises(RuntimeError, match="eval mode"):
        ours.step()
    ours.train()
    theirs.train()
    run(4)
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
    sd = ours.state_dict()
    assert sd["param_groups"][0]["train_mode"] is True
    assert sd["state"][0]["weight_sum"].dtype == torch.float64


def test_a_bad_hyperparameter_in_a_later_group_makes_the_switch_change_nothing():
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(4))
    opts = [ft.SGDScheduleFree([{"params": [a]}, {"params": [b]}], lr=0.1),
            fastopt.SGDScheduleFree([{"params": [a.detach().numpy()]},
                                     {"params": [b.detach().numpy()]}], lr=0.1)]
    for opt in opts:
        if isinstance(opt, ft.SGDScheduleFree):
            a.grad, b.grad = torch.ones(3), torch.ones(4)
            opt.step()
        else:
            opt.step([np.ones(3, np.float32), np.ones(4, np.float32)])
        opt.param_groups[1]["momentum"] = 1.5
        before = [a.detach().clone(), b.detach().clone()]
        with pytest.raises(ValueError, match="momentum"):
            opt.eval()
        assert torch.equal(a, before[0]) and torch.equal(b, before[1])
        assert all(g["train_mode"] for g in opt.param_groups)
