"""fastopt.torch with bfloat16 and float16 tensors: states in the parameter's dtype as in torch,
state_dtype=, master_weights=, param_rounding=, checkpoints."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    return m.to(dtype)


def _train(m, opt, steps, seed=1, dtype=None):
    torch.manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 16, dtype=dtype or next(m.parameters()).dtype)
        opt.zero_grad()
        m(x).float().square().mean().backward()
        opt.step()


def _ulps(a, b):
    """Distance in bfloat16 ulps (ordered bit patterns)."""
    def ordered(t):
        i = t.view(torch.int16).to(torch.int32)
        return torch.where(i < 0, -32768 - i, i)
    return (ordered(a) - ordered(b)).abs()


def test_bf16_adam_is_within_one_ulp_of_torch_fused():
    # torch's fused CPU Adam on bfloat16 parameters keeps bfloat16 states and computes in
    # float32, as fastopt does by default.
    ours_m, ref_m = _model(torch.bfloat16), _model(torch.bfloat16)
    ours = ft.Adam(ours_m.parameters(), lr=1e-2, weight_decay=0.01)
    ref = torch.optim.Adam(ref_m.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    for step in range(5):
        torch.manual_seed(step)
        x = torch.randn(8, 16, dtype=torch.bfloat16)
        for m, o in ((ours_m, ours), (ref_m, ref)):
            o.zero_grad()
            m(x).float().square().mean().backward()
        for p, q in zip(ours_m.parameters(), ref_m.parameters()):  # the same gradients
            p.grad.copy_(q.grad)
        ours.step()
        ref.step()
        for p, q in zip(ours_m.parameters(), ref_m.parameters()):
            assert int(_ulps(p.detach(), q.detach()).max()) <= 1
            p.data.copy_(q.data)  # compare one step at a time
            for key in ("exp_avg", "exp_avg_sq"):
                a, b = ours.state[p][key], ref.state[q][key]
                assert a.dtype == torch.bfloat16
                assert int(_ulps(a, b).max()) <= 1, key
                a.copy_(b)


def test_master_weights_train_in_float32_and_copy_to_bf16():
    narrow = _model(torch.bfloat16)
    wide = copy.deepcopy(narrow).float()
    ours = ft.AdamW(narrow.parameters(), lr=1e-2, master_weights=True)
    ref = ft.AdamW(wide.parameters(), lr=1e-2)
    for step in range(4):
        torch.manual_seed(step)
        x = torch.randn(8, 16)
        ours.zero_grad()
        ref.zero_grad()
        narrow(x.bfloat16()).float().square().mean().backward()
        for p, q in zip(narrow.parameters(), wide.parameters()):
            q.grad = p.grad.float()
        ours.step()
        ref.step()
    for p, q in zip(narrow.parameters(), wide.parameters()):
        s = ours.state[p]
        assert s["master"].dtype == torch.float32 and s["exp_avg"].dtype == torch.float32
        assert torch.equal(s["master"], q.detach())
        assert torch.equal(p.detach(), q.detach().bfloat16())
        assert torch.equal(s["exp_avg_sq"], ref.state[q]["exp_avg_sq"])


def test_bf16_states_for_float32_parameters():
    m = _model(torch.float32)
    params = list(m.parameters())
    opt = ft.Adam(params, lr=1e-2, state_dtype=torch.bfloat16)
    arrays = [p.detach().clone() for p in params]
    mom = [torch.zeros_like(p, dtype=torch.bfloat16) for p in params]
    sq = [torch.zeros_like(p, dtype=torch.bfloat16) for p in params]
    for t in range(1, 4):
        torch.manual_seed(t)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        for a, p, mm, vv in zip(arrays, params, mom, sq):
            fastopt.adam_step(a, p.grad, mm, vv, step=t, lr=1e-2)
    for a, p, vv in zip(arrays, params, sq):
        assert torch.equal(a, p.detach())
        assert opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
        assert torch.equal(opt.state[p]["exp_avg_sq"], vv)


@pytest.mark.parametrize("kw", [dict(master_weights=True), dict(param_rounding="kahan"),
                                dict(param_rounding="stochastic", seed=4),
                                dict(state_dtype="float32")])
def test_state_dicts_keep_every_dtype_and_resume_bit_exactly(kw):
    straight, resumed = _model(torch.bfloat16), _model(torch.bfloat16)
    a = ft.AdamW(straight.parameters(), lr=1e-2, **kw)
    _train(straight, a, 6)
    b = ft.AdamW(resumed.parameters(), lr=1e-2, **kw)
    _train(resumed, b, 3)
    sd = copy.deepcopy(b.state_dict())
    fresh = copy.deepcopy(resumed)
    c = ft.AdamW(fresh.parameters(), lr=1e-2, **kw)
    c.load_state_dict(sd)
    for p, q in zip(resumed.parameters(), fresh.parameters()):
        for key, v in b.state[p].items():
            assert c.state[q][key].dtype == v.dtype, key
            assert torch.equal(c.state[q][key], v), key
    torch.manual_seed(1)
    for _ in range(3):
        torch.randn(8, 16)  # the inputs of the first three steps
    rng = torch.get_rng_state()
    _train_from(fresh, c, rng)
    _train_from(resumed, b, rng)
    for p, q, r in zip(straight.parameters(), fresh.parameters(), resumed.parameters()):
        assert torch.equal(q, r)
        assert torch.equal(p, q)


def _train_from(m, opt, rng):
    torch.set_rng_state(rng)
    for _ in range(3):
        x = torch.randn(8, 16, dtype=torch.bfloat16)
        opt.zero_grad()
        m(x).float().square().mean().backward()
        opt.step()


def test_kahan_and_stochastic_rounding_keep_small_updates():
    for kw in (dict(param_rounding="kahan"), dict(param_rounding="stochastic", seed=1)):
        p = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = ft.SGD([p], lr=1e-3, **kw)
        for _ in range(1000):
            p.grad = torch.full_like(p, -1.0)
            opt.step()
        total = p.detach().double()
        if "compensation" in opt.state[p]:
            total = total + opt.state[p]["compensation"].double()
        assert abs(float(total.mean()) - 2.0) < 0.01, kw
    p = torch.nn.Parameter(torch.ones(16, dtype=torch.bfloat16))
    opt = ft.SGD([p], lr=1e-3)
    for _ in range(100):
        p.grad = torch.full_like(p, -1.0)
        opt.step()
    assert bool((p == 1).all())  # nearest rounding stalls


def test_wrong_state_dtypes_are_rejected_before_any_write():
    m = _model(torch.bfloat16)
    opt = ft.Adam(m.parameters(), lr=1e-2, master_weights=True)
    _train(m, opt, 1)
    p = next(m.parameters())
    opt.state[p]["master"] = opt.state[p]["master"].bfloat16()
    before = [q.detach().clone() for q in m.parameters()]
    for q in m.parameters():
        q.grad = torch.ones_like(q)
    with pytest.raises(ValueError, match="state 'master' of param_groups.0..'params'..0. has "
                                         "dtype torch.bfloat16 .expected torch.float32"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))
    with pytest.raises(TypeError, match="float64 and state_dtype is torch.bfloat16"):
        q = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        q.grad = torch.ones_like(q)
        ft.Adam([q], state_dtype="bfloat16").step()
    with pytest.raises(ValueError, match="Invalid state_dtype: 'int8'"):
        ft.Adam(m.parameters(), state_dtype="int8")
    with pytest.raises(ValueError, match="'kahan' with master_weights=True"):
        ft.Adam(m.parameters(), master_weights=True, param_rounding="kahan")


def test_a_checkpoint_with_bad_storage_options_loads_nothing():
    m = _model(torch.bfloat16)
    opt = ft.AdamW(m.parameters(), lr=1e-2, master_weights=True)
    _train(m, opt, 2)
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["param_rounding"] = "kahan"  # with master weights: contradictory
    other = ft.AdamW(_model(torch.bfloat16).parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="'kahan' with master_weights=True"):
        other.load_state_dict(sd)
    assert not other.state and other.param_groups[0]["param_rounding"] == "nearest"
