"""fastopt.torch checks what it finds in ``opt.state`` and ``param_groups`` at every step, as
torch.optim effectively does: nothing is trusted, nothing is written before everything is
checked, layouts other than contiguous are handled, autograd sees every in-place write.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def net(seed=0, channels_last=False):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 4 * 4, 5))
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def train(m, opt, steps, seed=1, channels_last=False):
    torch.manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 6, 6)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()


def same(a, b, rtol=2e-5, atol=1e-6):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


def frozen(m, opt):
    return ([p.detach().clone() for p in m.parameters()],
            {id(p): {k: (v.clone() if torch.is_tensor(v) else v.copy() if hasattr(v, "copy") else v)
                     for k, v in s.items()}
             for p, s in opt.state.items()})


def unchanged(m, opt, before):
    params, state = before
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), params))
    now = {id(p): s for p, s in opt.state.items()}
    assert now.keys() == state.keys()
    for k in state:
        assert now[k].keys() == state[k].keys()
        for key in state[k]:
            a, b = now[k][key], state[k][key]
            if torch.is_tensor(a) and a.is_meta:
                assert a is not None and b.is_meta
                continue
            assert (torch.equal(a, b) or bool(torch.isnan(a).all() and torch.isnan(b).all())
                    if torch.is_tensor(a) else
                    (a == b).all() if hasattr(a, "all") else a == b), key


def test_a_checkpoint_from_another_model_is_rejected_not_a_crash():
    small, big = torch.nn.Linear(4, 3), torch.nn.Linear(40, 30)
    opt_big = ft.Adam(big.parameters())
    big(torch.randn(2, 40)).sum().backward()
    opt_big.step()
    opt = ft.Adam(small.parameters())
    opt.load_state_dict(opt_big.state_dict())  # torch does not check state shapes
    small(torch.randn(2, 4)).sum().backward()
    before = frozen(small, opt)
    with pytest.raises(ValueError, match=r"state 'exp_avg' of param_groups\[0\]\['params'\]"
                                         r"\[0\] has shape \[30, 40\], but its parameter has "
                                         r"shape \[3, 4\]"):
        opt.step()
    unchanged(small, opt, before)


@pytest.mark.parametrize("bad,exc,match", [
    (lambda p: torch.zeros_like(p, dtype=torch.float64), ValueError, "has dtype torch.float64"),
    (lambda p: torch.zeros(p.shape, device="meta"), ValueError, "is on meta"),
    (lambda p: p.detach().numpy().copy(), TypeError, "is a ndarray"),
    (lambda p: p.detach(), ValueError, "overlaps"),
    (lambda p: torch.zeros(p.numel() * 2)[::2].reshape(p.shape), None, None),  # re-laid out
])
def test_bad_or_odd_state_tensors(bad, exc, match):
    m, ref = net(), net()
    opt, ref_opt = ft.Adam(m.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
    train(m, opt, 1)
    train(ref, ref_opt, 1)
    p = next(m.parameters())
    replacement = bad(p)
    if exc is None:  # a gappy but valid state: copied to the parameter's layout, values kept
        replacement.copy_(opt.state[p]["exp_avg"])
    opt.state[p]["exp_avg"] = replacement
    if exc is None:
        train(m, opt, 2, seed=2)
        train(ref, ref_opt, 2, seed=2)
        same(m, ref)
        assert opt.state[p]["exp_avg"].is_contiguous()
        return
    m(torch.randn(4, 3, 6, 6)).sum().backward()
    before = frozen(m, opt)
    with pytest.raises(exc, match=match):
        opt.step()
    unchanged(m, opt, before)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad"])
def test_channels_last_parameters_match_torch_optim(name):
    kw = {"lr": 1e-2, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {})}
    m, ref = net(channels_last=True), net(channels_last=True)
    assert not m[0].weight.is_contiguous()
    opt, ref_opt = getattr(ft, name)(m.parameters(), **kw), \
        getattr(torch.optim, name)(ref.parameters(), **kw)
    train(m, opt, 3, channels_last=True)
    train(ref, ref_opt, 3, channels_last=True)
    same(m, ref)
    state = opt.state[m[0].weight]
    assert all(t.stride() == m[0].weight.stride() for k, t in state.items()
               if torch.is_tensor(t) and t.dim())


def test_a_contiguous_checkpoint_resumed_on_a_channels_last_model():
    """The issue's silent-wrong case: state of another layout must be read by index."""
    src, ref = net(), net(channels_last=True)
    opt_src = ft.Adam(src.parameters(), lr=1e-2)
    train(src, opt_src, 2)
    m = net(channels_last=True)
    m.load_state_dict(src.state_dict())
    ref.load_state_dict(src.state_dict())
    opt = ft.Adam(m.parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    # torch's load_state_dict may keep the very tensors it is given: one copy each.
    opt.load_state_dict(copy.deepcopy(opt_src.state_dict()))
    ref_opt.load_state_dict(copy.deepcopy(opt_src.state_dict()))
    train(m, opt, 2, seed=5, channels_last=True)
    train(ref, ref_opt, 2, seed=5, channels_last=True)
    same(m, ref)


def test_a_transposed_parameter_and_a_gradient_in_another_layout():
    w = torch.nn.Parameter(torch.randn(7, 5).t())  # dense, not contiguous
    v = torch.nn.Parameter(w.detach().clone())
    opt, ref_opt = ft.AdamW([w], lr=0.1), torch.optim.AdamW([v], lr=0.1)
    for t in range(3):
        g = torch.randn(5, 7)  # contiguous: another layout than w
        w.grad, v.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(w, v, rtol=2e-5, atol=1e-6)


def test_a_parameter_with_gaps_is_rejected():
    base = torch.zeros(6, 10)
    w = torch.nn.Parameter(base[:, ::2])
    w.grad = torch.ones(6, 5)
    with pytest.raises(ValueError, match="has gaps or repeated elements"):
        ft.SGD([w], lr=0.1).step()
    assert torch.equal(base, torch.zeros(6, 10))


def test_a_gradient_that_is_another_parameter_is_rejected():
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    a.grad = b.detach()
    b.grad = torch.ones(4)
    with pytest.raises(ValueError, match="overlaps"):
        ft.SGD([a, b], lr=0.1).step()
    assert torch.equal(a, torch.ones(4)) and torch.equal(b, torch.ones(4))


@pytest.mark.parametrize("reset", ["clear", "replace"])
def test_state_reset_and_replacement_follow_torch(reset):
    m, ref = net(), net()
    opt, ref_opt = ft.Adam(m.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
    train(m, opt, 2)
    train(ref, ref_opt, 2)
    for o in (opt, ref_opt):
        if reset == "clear":
            o.state.clear()
        else:
            for p, s in o.state.items():
                s["exp_avg"] = s["exp_avg"] * 0.5  # a new tensor, another address
    train(m, opt, 2, seed=3)
    train(ref, ref_opt, 2, seed=3)
    same(m, ref)
    for p, q in zip(m.parameters(), ref.parameters()):
        assert opt.state[p]["step"].item() == ref_opt.state[q]["step"].item()


def test_a_replaced_parameter_in_param_groups_is_updated():
    a = torch.nn.Parameter(torch.ones(3))
    opt = ft.SGD([a], lr=0.5)
    b = torch.nn.Parameter(torch.ones(3))
    opt.param_groups[0]["params"][0] = b
    a.grad = b.grad = torch.ones(3)
    opt.step()
    assert torch.equal(a, torch.ones(3)) and torch.equal(b, torch.full((3,), 0.5))


@pytest.mark.parametrize("step", [2.0**63, float("nan"), -1.0, 1.5])
def test_bad_step_counts_are_rejected_before_any_group(step):
    m = net()
    opt = ft.Adam([{"params": m[0].parameters()}, {"params": m[3].parameters()}])
    train(m, opt, 1)
    last = list(m.parameters())[-1]
    opt.state[last]["step"] = torch.tensor(step)
    m(torch.randn(4, 3, 6, 6)).sum().backward()
    before = frozen(m, opt)
    with pytest.raises(ValueError, match="the step count of param_groups\\[1\\]"):
        opt.step()
    unchanged(m, opt, before)


def test_autograd_sees_the_in_place_update_as_with_torch_optim():
    """A backward through a graph that saved the old weights raises, as after torch.optim."""
    for make in (torch.optim.SGD, ft.SGD):
        lin = torch.nn.Linear(3, 3)
        opt = make(lin.parameters(), lr=0.1)
        y = lin(torch.randn(2, 3, requires_grad=True))
        loss = (y * lin.weight.sum()).sum()  # saves the weight for backward
        lin.weight.grad = torch.ones_like(lin.weight)
        lin.bias.grad = torch.ones_like(lin.bias)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_state_tensors_written_have_their_versions_bumped():
    lin = torch.nn.Linear(3, 3)
    opt = ft.Adam(lin.parameters(), lr=0.1)
    lin(torch.randn(2, 3)).sum().backward()
    opt.step()
    s = opt.state[lin.weight]
    versions = {k: t._version for k, t in s.items()}
    w = lin.weight._version
    opt.step()
    assert lin.weight._version > w
    assert all(s[k]._version > v for k, v in versions.items())


def test_functional_api_bumps_torch_versions():
    p = torch.zeros(5, requires_grad=True)
    g, m, v = torch.ones(5), torch.zeros(5), torch.zeros(5)
    y = (p * p).sum()  # saves p for backward
    before = (p._version, m._version, v._version, g._version)
    fastopt.adam_step(p.detach(), g, m, v, step=1, lr=0.1)  # detach() shares the counter
    assert p._version > before[0] and m._version > before[1] and v._version > before[2]
    assert g._version == before[3]  # the gradient is only read
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_ctrl_c_mid_step_completes_the_step(monkeypatch, sigint_default):
    from fastopt import _numba_backend

    m, ref = net(), net()
    groups = lambda mod: [{"params": mod[0].parameters()}, {"params": mod[3].parameters()}]
    opt, ref_opt = ft.Adam(groups(m), lr=1e-2), ft.Adam(groups(ref), lr=1e-2)
    train(m, opt, 1)
    train(ref, ref_opt, 1)
    train(ref, ref_opt, 1, seed=1)
    real = _numba_backend.multi_step_rows
    calls = []

    def then_signal(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_numba_backend, "multi_step_rows", then_signal)
    with pytest.raises(KeyboardInterrupt):
        train(m, opt, 1, seed=1)  # the same batch the reference's second step saw
    assert len(calls) == 2
    same(m, ref, rtol=0, atol=0)
    for p, q in zip(m.parameters(), ref.parameters()):
        assert opt.state[p]["step"].item() == ref_opt.state[q]["step"].item() == 2


DISABLED_JIT = """
import numpy as np, torch, fastopt, fastopt.torch as ft
ws = [np.ones(5, np.float32), np.ones((3, 4), np.float32)]
opt = fastopt.Adam(ws, lr=0.1)
for _ in range(2):
    opt.step([np.full_like(w, 0.5) for w in ws])
ref = [np.ones(5, np.float32), np.ones((3, 4), np.float32)]
ms, vs = [np.zeros_like(w) for w in ref], [np.zeros_like(w) for w in ref]
for t in (1, 2):
    for w, m, v in zip(ref, ms, vs):
        fastopt.reference.adam(w, np.full_like(w, 0.5), m, v, step=t, lr=0.1)
assert all(np.allclose(a, b) for a, b in zip(ws, ref))
lin = torch.nn.Linear(3, 2)
o = ft.SGD(lin.parameters(), lr=0.1, momentum=0.9)
for _ in range(2):
    o.zero_grad(); lin(torch.ones(1, 3)).sum().backward(); o.step()
print("OK")
"""


def test_classes_work_under_numba_disable_jit():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", DISABLED_JIT], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout


def test_step_counts_changed_behind_autograd_are_read_again():
    """`.data` assignments and in-place ops on `.data` do not bump the version counter: the
    step count is read from the tensor at every step, and its storage is the one written."""
    p, q = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    ours, ref = ft.Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)
    for opt, t in ((ours, p), (ref, q)):
        for _ in range(2):
            t.grad = torch.full((3,), 0.5)
            opt.step()
        s = opt.state[t]["step"]
        old = s.data
        s.data = torch.tensor(100.0)
        t.grad = torch.full((3,), 0.5)
        opt.step()
        assert old.item() == 2.0 and opt.state[t]["step"].item() == 101.0
        opt.state[t]["step"].data.fill_(7.0)
        opt.step()
        assert opt.state[t]["step"].item() == 8.0
    torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)


def test_a_state_reshaped_behind_autograd_is_checked_again():
    p = torch.nn.Parameter(torch.ones(6))
    opt = ft.Adam([p], lr=0.1)
    p.grad = torch.ones(6)
    opt.step()
    m = opt.state[p]["exp_avg"]
    m.data = m.data[:2]  # same address, smaller
    with pytest.raises(ValueError, match=r"has shape \[2\], but its parameter has shape \[6\]"):
        opt.step()


def test_step_under_inference_mode_works_as_with_torch_optim():
    for make in (torch.optim.Adam, ft.Adam):
        p = torch.nn.Parameter(torch.ones(3))
        opt = make([p], lr=0.1)
        with torch.inference_mode():
            for _ in range(2):
                p.grad = torch.full((3,), 0.5)
                opt.step()
        assert opt.state[p]["step"].item() == 2.0


def test_two_parameters_may_share_one_gradient():
    a, b = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    g = torch.full((4,), 0.5)
    a.grad = b.grad = g
    ft.SGD([a, b], lr=1.0).step()
    assert torch.equal(a, torch.full((4,), 0.5)) and torch.equal(b, torch.full((4,), 0.5))


def test_deepcopy_and_pickle_of_an_optimizer_keep_working():
    import io

    lin = torch.nn.Linear(3, 2)
    opt = ft.Adam(lin.parameters(), lr=0.1, multi_tensor=False)
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    copied = copy.deepcopy(opt)
    buf = io.BytesIO()
    torch.save(opt, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    for o in (opt, copied, loaded):
        for p, q in zip(opt.param_groups[0]["params"], o.param_groups[0]["params"]):
            if q is not p:
                q.grad = p.grad.clone()  # pickling a Parameter drops its grad
        o.step()
        assert o.multi_tensor is False
    for o in (copied, loaded):
        for p, q in zip(opt.param_groups[0]["params"], o.param_groups[0]["params"]):
            assert q is not p
            torch.testing.assert_close(p, q)
            assert opt.state[p]["step"].item() == o.state[q]["step"].item() == 2


def test_load_state_dict_keeps_the_backend_settings():
    lin = torch.nn.Linear(3, 2)
    opt = ft.Adam(lin.parameters(), backend="numpy", multi_tensor=False)
    opt.load_state_dict(opt.state_dict())
    assert (opt.backend, opt.multi_tensor) == ("numpy", False)


def test_decoupled_weight_decay_from_torch_is_never_silently_ignored():
    a, b = net(), net()
    theirs = torch.optim.Adam(b.parameters(), lr=1e-2, weight_decay=0.5,
                              decoupled_weight_decay=True)
    train(b, theirs, 1)
    ours = ft.Adam(a.parameters(), lr=1e-2)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    a(torch.randn(4, 3, 6, 6)).sum().backward()
    before = frozen(a, ours)
    with pytest.raises(ValueError, match="use fastopt.torch.AdamW for decoupled weight decay"):
        ours.step()
    unchanged(a, ours, before)
    assert ft.AdamW(a.parameters()).param_groups[0]["decoupled_weight_decay"] is True
    with pytest.raises(ValueError, match="decoupled_weight_decay=True"):
        ft.Adam(a.parameters(), decoupled_weight_decay=True)


# -- after a few steps: the groups kept from step to step (_FastGroup) see every change ------

def _fresh_grads(m, seed):
    torch.manual_seed(seed)
    m.zero_grad()
    m(torch.randn(4, 3, 6, 6)).square().mean().backward()


def _swap_param(m, o):
    new = torch.nn.Parameter(m[3].bias.detach().clone())
    o.param_groups[0]["params"][-1] = new
    m[3].bias = new


# Changes that torch.optim takes: fastopt.torch must step exactly as it does afterwards.
ACCEPTED = {
    "state cleared": lambda m, o: o.state.clear(),
    "one state dict replaced": lambda m, o: o.state.__setitem__(m[0].weight, {}),
    "exp_avg replaced": lambda m, o: o.state[m[0].weight].__setitem__(
        "exp_avg", o.state[m[0].weight]["exp_avg"] * 0.5),
    "exp_avg with gaps": lambda m, o: o.state[m[0].weight].__setitem__(
        "exp_avg", torch.zeros(m[0].weight.numel() * 2)[::2].reshape(m[0].weight.shape)
        .copy_(o.state[m[0].weight]["exp_avg"])),
    "step count set through .data": lambda m, o: setattr(
        o.state[m[0].weight]["step"], "data", torch.tensor(50.0)),
    "step count in float64": lambda m, o: o.state[m[3].weight].__setitem__(
        "step", torch.tensor(3.0, dtype=torch.float64)),
    "parameter moved through .data": lambda m, o: setattr(
        m[0].weight, "data", m[0].weight.detach().clone()),
    "parameter in another layout": lambda m, o: setattr(
        m[0].weight, "data", m[0].weight.detach().clone(memory_format=torch.channels_last)),
    "parameter replaced in param_groups": _swap_param,
    "learning rate changed": lambda m, o: o.param_groups[0].__setitem__("lr", 0.5),
}


@pytest.mark.parametrize("change", sorted(ACCEPTED))
def test_changes_after_a_few_steps_follow_torch(change):
    m, ref = net(), net()
    opt, ref_opt = ft.Adam(m.parameters(), lr=1e-2), torch.optim.Adam(ref.parameters(), lr=1e-2)
    for model, o in ((m, opt), (ref, ref_opt)):
        train(model, o, 3)
    assert opt._fast, "the kept-group path was not in use"
    for model, o in ((m, opt), (ref, ref_opt)):
        ACCEPTED[change](model, o)
        train(model, o, 2, seed=5)
    same(m, ref)
    for p, q in zip(m.parameters(), ref.parameters()):
        assert opt.state[p]["step"].item() == ref_opt.state[q]["step"].item()


def _gradient_of_other_parameter(m, o):
    m[0].weight.grad = m[3].weight.detach().reshape(-1)[:m[0].weight.numel()].reshape(
        m[0].weight.shape)


REJECTED = {
    "exp_avg in float64": (lambda m, o: o.state[m[0].bias].__setitem__(
        "exp_avg", torch.zeros_like(m[0].bias, dtype=torch.float64)), "has dtype"),
    "exp_avg of another shape": (lambda m, o: o.state[m[3].bias].__setitem__(
        "exp_avg", torch.zeros(7)), "has shape"),
    "exp_avg shrunk through .data": (lambda m, o: setattr(
        o.state[m[3].bias]["exp_avg_sq"], "data",
        o.state[m[3].bias]["exp_avg_sq"].data[:2]), "has shape"),
    "exp_avg a view of its parameter": (lambda m, o: o.state[m[0].bias].__setitem__(
        "exp_avg", m[0].bias.detach()), "overlaps"),
    # torch's .grad setter refuses these; `.data` on the gradient does not
    "gradient of another dtype": (lambda m, o: setattr(
        m[3].bias.grad, "data", m[3].bias.grad.data.double()), "has dtype"),
    "gradient of another shape": (lambda m, o: setattr(
        m[3].bias.grad, "data", torch.zeros(2)), "has shape"),
    "gradient that is another parameter": (_gradient_of_other_parameter, "overlaps"),
    "gradient that is a state": (lambda m, o: setattr(
        m[3].bias, "grad", o.state[m[0].weight]["exp_avg"].reshape(-1)[:5]), "overlaps"),
    "NaN step count": (lambda m, o: o.state[m[3].bias]["step"].fill_(float("nan")),
                       r"the step count of param_groups\[0\]\['params'\]\[3\]"),
}


@pytest.mark.parametrize("change", sorted(REJECTED))
def test_bad_changes_after_a_few_steps_are_rejected_before_any_write(change):
    m = net()
    opt = ft.Adam(m.parameters(), lr=1e-2)
    train(m, opt, 3)
    assert opt._fast, "the kept-group path was not in use"
    _fresh_grads(m, 7)
    make, match = REJECTED[change]
    make(m, opt)
    before = frozen(m, opt)
    with pytest.raises((TypeError, ValueError), match=match):
        opt.step()
    unchanged(m, opt, before)


def test_a_missing_gradient_after_a_few_steps_leaves_its_parameter_alone():
    m, ref = net(), net()
    opt, ref_opt = ft.AdamW(m.parameters(), lr=1e-2), torch.optim.AdamW(ref.parameters(),
                                                                        lr=1e-2)
    for model, o in ((m, opt), (ref, ref_opt)):
        train(model, o, 3)
        _fresh_grads(model, 9)
        model[0].bias.grad = None
        o.step()
        train(model, o, 2, seed=11)
    same(m, ref)
