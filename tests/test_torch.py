"""fastopt.torch against torch.optim, and torch tensors through the functional API.

Skipped without torch (the `compare` extra installs it).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from algorithms import ALGORITHMS  # noqa: E402
from torch_optim import oracle_class, oracle_kwargs, torch_kwargs  # noqa: E402

CASES = [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}),
    ("Adam", {}), ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {}), ("AdamW", {"amsgrad": True, "maximize": True}),
    ("RMSprop", {}), ("RMSprop", {"momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("Adadelta", {}), ("Adadelta", {"weight_decay": 0.1}),
]
# Every other algorithm fastopt.torch has, with each of its spec's option sets.
# (An oracle outside torch.optim may lack maximize: those sets are left to the golden tests.)
CASES += [(a.spec.torch_class, torch_kwargs(a, o)) for a in ALGORITHMS
          if a.spec.torch_class not in {n for n, _ in CASES} for o in a.option_sets
          if a.spec.torch_impl or not o.get("maximize")]
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
    theirs = oracle_class(name)(groups(b, kw), **oracle_kwargs(kw))
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
    theirs = oracle_class(name)(groups(b, kw), **oracle_kwargs(kw))
    train(a, ours, 4, torch.float32)
    train(b, theirs, 4, torch.float32)
    swapped_theirs = oracle_class(name)(groups(a, kw), **oracle_kwargs(kw))
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
    z = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    z.grad = torch.ones_like(z)
    with pytest.raises(TypeError, match="complex64 .expected torch.float32, torch.float64, "
                                        "torch.bfloat16 or torch.float16"):
        ft.Adam([z]).step()


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
    # bfloat16 tensors are taken (zero-copy, float32 math: tests/test_storage.py) ...
    pb = p.detach().to(torch.bfloat16)
    before = pb.clone()
    fastopt.adam_step(pb, g, m, v, step=2, lr=0.1)
    assert not torch.equal(pb, before)
    # ... integer tensors are not.
    with pytest.raises(TypeError, match="Invalid param: numpy.ndarray of dtype int32"):
        fastopt.adam_step(p.detach().to(torch.int32), g, m, v, step=2)


# torch.optim's arguments a torch user passes: all taken, each with its meaning here.

@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_tensor_lr_matches_torch_and_follows_in_place_changes(name):
    a, b = model(torch.float32), model(torch.float32)
    ours = getattr(ft, name)(a.parameters(), lr=torch.tensor(0.01))
    theirs = getattr(torch.optim, name)(b.parameters(), lr=torch.tensor(0.01))
    train(a, ours, 3, torch.float32)
    train(b, theirs, 3, torch.float32)
    for opt in (ours, theirs):
        opt.param_groups[0]["lr"].fill_(0.002)  # what a scheduler does to a tensor lr
    train(a, ours, 3, torch.float32)
    train(b, theirs, 3, torch.float32)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)


def test_tensor_lr_must_have_one_element():
    m = model(torch.float32)
    with pytest.raises(ValueError, match=r"Tensor lr must be 1-element, got shape \(2,\)"):
        ft.Adam(m.parameters(), lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("kw", [{"foreach": True}, {"foreach": False}, {"fused": True},
                                {"fused": False}, {"foreach": None, "fused": None}],
                         ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_foreach_and_fused_are_accepted_with_the_same_results(kw, monkeypatch):
    a, b = model(torch.float32), model(torch.float32)
    calls = []
    from fastopt import _numba_backend
    real_update, real_multi = ft.update, _numba_backend.multi_step_rows

    def per_tensor(*args, **kwargs):
        calls.append("per-tensor")  # update is the one-call-per-tensor path
        return real_update(*args, **kwargs)

    def multi(*args, **kwargs):
        calls.append("multi")
        return real_multi(*args, **kwargs)

    monkeypatch.setattr(ft, "update", per_tensor)
    monkeypatch.setattr(_numba_backend, "multi_step_rows", multi)
    ours = ft.AdamW(a.parameters(), lr=1e-2, **kw)
    theirs = torch.optim.AdamW(b.parameters(), lr=1e-2, **kw)
    train(a, ours, 4, torch.float32)
    train(b, theirs, 4, torch.float32)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
    # foreach=False: one call per tensor, as torch's for-loop implementation; else one launch.
    assert set(calls) == {"per-tensor" if kw.get("foreach") is False else "multi"}
    assert {k: ours.param_groups[0][k] for k in kw} == kw  # kept, as torch keeps them


def test_foreach_and_fused_together_is_an_error_as_in_torch():
    m = model(torch.float32)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        ft.Adam(m.parameters(), foreach=True, fused=True)
    with pytest.raises(ValueError, match="foreach=True .* multi_tensor=False"):
        ft.Adam(m.parameters(), foreach=True, multi_tensor=False)


@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"])
def test_capturable_and_differentiable_name_the_limitation(name, flag):
    m = model(torch.float32)
    with pytest.raises(NotImplementedError, match=f"does not support {flag}=True"):
        getattr(ft, name)(m.parameters(), **{flag: True})
    opt = getattr(ft, name)(m.parameters(), **{flag: False})  # torch's default: fine
    train(m, opt, 1, torch.float32)
    # A state_dict that turns it on (say, saved by torch.optim with it) fails at the step,
    # before anything is written.
    before = [p.detach().clone() for p in m.parameters()]
    opt.param_groups[0][flag] = True
    with pytest.raises(NotImplementedError, match=flag):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before))


def test_state_dict_has_torchs_group_keys():
    a, b = model(torch.float32), model(torch.float32)
    ours, theirs = ft.Adam(a.parameters()), torch.optim.Adam(b.parameters())
    ours_keys = set(ours.state_dict()["param_groups"][0])
    theirs_keys = set(theirs.state_dict()["param_groups"][0])
    assert theirs_keys - ours_keys <= {"decoupled_weight_decay"}


def test_sparse_gradients_keep_their_clear_error():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad.is_sparse
    before = emb.weight.detach().clone()
    with pytest.raises(TypeError, match="sparse"):
        ft.Adam(emb.parameters()).step()
    assert torch.equal(emb.weight, before)


COMPILE_SCRIPT = """
import torch, fastopt.torch as ft
torch.manual_seed(0)
ref = torch.nn.Linear(4, 2)
model = torch.nn.Linear(4, 2)
model.load_state_dict(ref.state_dict())
opt = ft.Adam(model.parameters(), lr=1e-2)
ref_opt = ft.Adam(ref.parameters(), lr=1e-2)
xs = [torch.randn(8, 4) for _ in range(3)]

@torch.compile
def train_step(m, o, x):
    o.zero_grad()
    loss = m(x).square().mean()
    loss.backward()
    o.step()
    return loss

compiled_step = torch.compile(opt.step)
for x in xs:
    train_step(model, opt, x)
    ref_opt.zero_grad(); ref(x).square().mean().backward(); ref_opt.step()
for p, q in zip(model.parameters(), ref.parameters()):
    torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
before = model.weight.detach().clone()
compiled_step()
assert not torch.equal(before, model.weight)
print("COMPILED OK")
"""


def test_torch_compile_runs_the_step_eagerly_in_a_fresh_process():
    """torch.compile of a training step, and of opt.step itself: a graph break at fastopt's
    step, which then runs eagerly with the eager results (a fresh process: dynamo's state)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "COMPILED OK" in proc.stdout


def test_torch_lr_schedulers_and_add_param_group_work_as_with_torch_optim():
    a, b = model(torch.float32), model(torch.float32)
    ours = ft.Adam(a[0].parameters(), lr=0.02)
    theirs = torch.optim.Adam(b[0].parameters(), lr=0.02)
    ours.add_param_group({"params": a[2].parameters(), "lr": 0.01})
    theirs.add_param_group({"params": b[2].parameters(), "lr": 0.01})
    s1 = torch.optim.lr_scheduler.StepLR(ours, step_size=2, gamma=0.5)
    s2 = torch.optim.lr_scheduler.StepLR(theirs, step_size=2, gamma=0.5)
    for _ in range(3):
        train(a, ours, 2, torch.float32)
        train(b, theirs, 2, torch.float32)
        s1.step()
        s2.step()
    assert [g["lr"] for g in ours.param_groups] == [g["lr"] for g in theirs.param_groups]
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)
