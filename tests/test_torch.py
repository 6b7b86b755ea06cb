"""fastopt.torch against torch.optim, and torch tensors through the functional API.

Skipped without torch (the `compare` extra installs it).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402

CASES = [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
    ("Adam", {}), ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {}), ("AdamW", {"amsgrad": True, "maximize": True}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("Adadelta", {}), ("Adadelta", {"weight_decay": 0.1}),
]
IDS = [n + "".join(f"-{k}={v}" for k, v in kw.items()) for n, kw in CASES]


def model(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(),
                               torch.nn.Linear(9, 3)).to(dtype)


def groups(m, kw):
    lr = kw.get("lr", 1e-2)
    return [{"params": m[0].parameters()}, {"params": m[2].parameters(), "lr": lr / 3}]


def train(m, opt, steps, dtype, frozen_at=None):
    torch.manual_seed(1)
    for t in range(steps):
        x = torch.randn(16, 6, dtype=dtype)
        opt.zero_grad()
        m(x).square().mean().backward()
        if t == frozen_at:
            m[0].bias.grad = None  # a parameter without a gradient this step
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_matches_torch_optim_on_parameter_groups(name, kw, dtype):
    a, b = model(dtype), model(dtype)
    kw = {"lr": 1e-2, **kw}
    ours = getattr(ft, name)(groups(a, kw), **kw)
    theirs = getattr(torch.optim, name)(groups(b, kw), **kw)
    train(a, ours, 8, dtype, frozen_at=3)
    train(b, theirs, 8, dtype, frozen_at=3)
    rtol, atol = (2e-5, 1e-6) if dtype == torch.float32 else (1e-12, 1e-14)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)
    for p, q in zip(a.parameters(), b.parameters()):
        s, t = ours.state[p], theirs.state[q]
        assert s.keys() == t.keys()
        for k in s:
            if torch.is_tensor(s[k]):
                torch.testing.assert_close(s[k], t[k], rtol=rtol, atol=atol)


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_state_dict_round_trips_with_torch_optim(name, kw):
    """A checkpoint moves from fastopt.torch to torch.optim and back, and training goes on."""
    a, b = model(torch.float32), model(torch.float32)
    kw = {"lr": 1e-2, **kw}
    ours = getattr(ft, name)(groups(a, kw), **kw)
    theirs = getattr(torch.optim, name)(groups(b, kw), **kw)
    train(a, ours, 4, torch.float32)
    train(b, theirs, 4, torch.float32)
    swapped_theirs = getattr(torch.optim, name)(groups(a, kw), **kw)
    swapped_theirs.load_state_dict(ours.state_dict())
    swapped_ours = getattr(ft, name)(groups(b, kw), **kw)
    swapped_ours.load_state_dict(theirs.state_dict())
    train(a, swapped_theirs, 4, torch.float32)
    train(b, swapped_ours, 4, torch.float32)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)


def test_updates_are_in_place_and_zero_copy():
    m = model(torch.float32)
    ptrs = [p.data_ptr() for p in m.parameters()]
    opt = ft.Adam(m.parameters(), lr=0.1)
    train(m, opt, 2, torch.float32)
    assert [p.data_ptr() for p in m.parameters()] == ptrs
    for p in m.parameters():
        assert opt.state[p]["exp_avg"].data_ptr() != p.data_ptr()
        assert opt.state[p]["step"].item() == 2


def test_closure_and_rejections():
    m = model(torch.float32)
    opt = ft.SGD(m.parameters(), lr=0.1)
    x = torch.randn(4, 6)

    def closure():
        opt.zero_grad()
        loss = m(x).square().mean()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
    with pytest.raises(ValueError, match="Invalid lr: -1.0"):
        ft.Adam(m.parameters(), lr=-1.0)
    half = torch.nn.Linear(2, 2).to(torch.bfloat16)
    half.weight.grad = torch.ones_like(half.weight)
    with pytest.raises(TypeError, match="bfloat16"):
        ft.Adam(half.parameters()).step()


def test_functional_api_takes_cpu_tensors_without_copying():
    p = torch.randn(1000, requires_grad=True)
    g, m, v = torch.randn(1000), torch.zeros(1000), torch.zeros(1000)
    q = p.detach().numpy().copy()
    qm, qv = np.zeros(1000, np.float32), np.zeros(1000, np.float32)
    fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
    fastopt.reference.adam(q, g.numpy(), qm, qv, step=1, lr=0.1)
    np.testing.assert_allclose(p.detach().numpy(), q, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(m.numpy(), qm, rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Invalid exp_avg: it overlaps param"):
        fastopt.adam_step(p, g, p, v, step=2)
    with pytest.raises(TypeError, match="torch.bfloat16"):
        fastopt.adam_step(p.detach().to(torch.bfloat16), g, m, v, step=2)
