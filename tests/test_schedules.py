"""Learning-rate schedules against their closed forms (and torch's, when installed)."""

import math

import numpy as np
import pytest

import fastopt
from fastopt import schedules


def opt(lr=0.1):
    return fastopt.SGD([{"params": [np.zeros(3)]}, {"params": [np.zeros(2)], "lr": lr / 10}],
                       lr=lr)


def lrs(schedule, n):
    out = []
    for _ in range(n):
        out.append(schedule.get_last_lr())
        schedule.step()
    return out


@pytest.mark.parametrize("make,closed", [
    (lambda o: schedules.StepLR(o, step_size=3, gamma=0.5), lambda t, a: a * 0.5 ** (t // 3)),
    (lambda o: schedules.ExponentialLR(o, gamma=math.exp(-0.2)),
     lambda t, a: a * math.exp(-0.2 * t)),
    (lambda o: schedules.InverseTimeLR(o, decay=0.5), lambda t, a: a / (1 + 0.5 * t)),
    (lambda o: schedules.CosineWarmupLR(o, warmup_steps=4, total_steps=14, min_lr=1e-3),
     lambda t, a: (a * (t + 1) / 5 if t < 4 else
                   1e-3 + (a - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(1, (t - 4) / 10))))),
])
def test_closed_forms(make, closed):
    o = opt()
    got = lrs(make(o), 20)
    for t, (a, b) in enumerate(got):
        assert a == pytest.approx(closed(t, 0.1), rel=1e-12)
        assert b == pytest.approx(closed(t, 0.01), rel=1e-12)
        assert type(a) is float


def test_cosine_warmup_reaches_the_peak_and_the_floor():
    o = opt()
    got = [g[0] for g in lrs(schedules.CosineWarmupLR(o, 4, 14, min_lr=1e-3), 20)]
    assert got[0] < got[1] < got[2] < got[3] < got[4] == pytest.approx(0.1)
    assert got[14:] == [pytest.approx(1e-3)] * 6


def test_schedule_drives_the_optimizer_and_resumes():
    p = np.zeros(1)
    o = fastopt.SGD([p], lr=1.0)
    s = schedules.StepLR(o, step_size=2, gamma=0.1)
    for _ in range(3):
        o.step([np.ones(1)])
        s.step()
    np.testing.assert_allclose(p, [-(1 + 1 + 0.1)])
    state = s.state_dict()
    o2 = fastopt.SGD([np.zeros(1)], lr=1.0)
    s2 = schedules.StepLR(o2, step_size=2, gamma=0.1)
    s2.load_state_dict(state)
    assert s2.get_last_lr() == s.get_last_lr() == [pytest.approx(0.1)]


def test_plateau_reduces_after_patience_and_cooldown():
    o = opt(1.0)
    s = schedules.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    seen = []
    for metric in [5, 4, 4, 4, 4, 4, 4, 4, 4, 4]:
        s.step(metric)
        seen.append(s.get_last_lr()[0])
    # improvements at steps 0 and 1; three bad steps -> halve at step 4; cooldown one step;
    # three more bad steps -> 0.25 at step 8. The second group (0.1) is below min_lr already:
    # a reduction never raises an lr, so it stays.
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert s.get_last_lr()[1] == 0.1
    for _ in range(6):
        s.step(4)
    assert s.get_last_lr()[0] == 0.2  # floored at min_lr


def test_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    metrics = [3.0, 2.0, 2.0, 1.99995, 2.1, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 1.0, 1.2, 1.3, 1.4]
    w = torch.nn.Parameter(torch.zeros(2))
    topt = torch.optim.SGD([w], lr=1.0)
    ts = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.3, patience=1, cooldown=1,
                                                    threshold=1e-3)
    o = fastopt.SGD([np.zeros(2)], lr=1.0)
    s = schedules.ReduceLROnPlateau(o, factor=0.3, patience=1, cooldown=1, threshold=1e-3)
    for m in metrics:
        ts.step(m)
        s.step(m)
        assert s.get_last_lr()[0] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("name,kw", [("StepLR", {"step_size": 2, "gamma": 0.5}),
                                     ("ExponentialLR", {"gamma": 0.9})])
def test_matches_torch_schedulers(name, kw):
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.zeros(2))
    topt = torch.optim.SGD([w], lr=0.3)
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    o = fastopt.SGD([np.zeros(2)], lr=0.3)
    s = getattr(schedules, name)(o, **kw)
    for _ in range(9):
        assert s.get_last_lr()[0] == pytest.approx(ts.get_last_lr()[0], rel=1e-12)
        topt.step()
        ts.step()
        s.step()


@pytest.mark.parametrize("make,msg", [
    (lambda o: schedules.StepLR(o, step_size=0), "Invalid step_size: 0"),
    (lambda o: schedules.ExponentialLR(o, gamma=float("nan")), "Invalid gamma: nan"),
    (lambda o: schedules.CosineWarmupLR(o, 10, 10), "Invalid total_steps: 10"),
    (lambda o: schedules.ReduceLROnPlateau(o, factor=1.0), "Invalid factor: 1.0"),
    (lambda o: schedules.ReduceLROnPlateau(o, mode="up"), "Invalid mode: 'up'"),
    (lambda o: schedules.StepLR(object(), step_size=1), "Invalid optimizer"),
])
def test_bad_arguments(make, msg):
    with pytest.raises((ValueError, TypeError)) as e:
        make(opt())
    assert msg in str(e.value)


# -- torch's and transformers' schedules, against their recorded values -------------------------

import json  # noqa: E402
import os  # noqa: E402

from schedule_cases import CASES  # noqa: E402

ORACLE = json.load(open(os.path.join(os.path.dirname(__file__), "golden", "schedules.json")))


def _two_groups(kind):
    a, b = np.zeros(2, np.float32), np.zeros(3, np.float32)
    groups = [{"params": [a]}, {"params": [b], "lr": 0.01}]
    return (fastopt.SGD(groups, lr=0.1, momentum=0.9) if kind == "sgd"
            else fastopt.Adam(groups, lr=0.1))


def _momentum(opt):
    return [float(g["betas"][0] if "betas" in g else g["momentum"]) for g in opt.param_groups]


def test_fixture_covers_the_cases():
    assert set(ORACLE) - {"torch", "transformers"} == {c.id for c in CASES}, \
        "tests/golden/schedules.json is stale: run python tests/make_schedule_fixtures.py"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_the_oracle_at_every_step(case):
    opt = _two_groups(case.optimizer)
    sched = case.ours(opt)
    expected = ORACLE[case.id]
    for t in range(case.steps + 1):
        if t:
            sched.step()
        np.testing.assert_allclose([g["lr"] for g in opt.param_groups], expected["lr"][t],
                                   rtol=1e-12, atol=1e-15, err_msg=f"lr at step {t}")
        np.testing.assert_allclose(_momentum(opt), expected["momentum"][t], rtol=1e-12,
                                   err_msg=f"momentum at step {t}")
        assert all(type(g["lr"]) is float for g in opt.param_groups)
    if case.momentum:  # the cycle did move it
        assert len({tuple(m) for m in expected["momentum"]}) > 2


def test_one_cycle_refuses_to_step_past_its_end():
    opt = _two_groups("sgd")
    sched = fastopt.schedules.OneCycleLR(opt, 1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in before]
    assert sched.t == 3


def test_cycling_needs_a_momentum_to_cycle():
    opt = fastopt.RMSprop([np.zeros(3, np.float32)], lr=0.1)  # momentum=0 is still a key
    fastopt.schedules.CyclicLR(opt, 0.01, 0.1, step_size_up=2)
    opt = fastopt.Adagrad([np.zeros(3, np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="cycle_momentum=True needs groups"):
        fastopt.schedules.OneCycleLR(opt, 0.1, total_steps=10)
    fastopt.schedules.OneCycleLR(opt, 0.1, total_steps=10, cycle_momentum=False)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_cycled_momentum_reaches_the_kernels(kind):
    """fastopt.torch under OneCycleLR (lr and momentum or beta1 change every step) against
    torch.optim under torch's OneCycleLR: the same parameters after every step."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    torch.manual_seed(0)
    w0 = torch.randn(50)
    ours_w = torch.nn.Parameter(w0.clone())
    theirs_w = torch.nn.Parameter(w0.clone())
    if kind == "sgd":
        ours = ft.SGD([ours_w], lr=0.1, momentum=0.9)
        theirs = torch.optim.SGD([theirs_w], lr=0.1, momentum=0.9, foreach=False)
    else:
        ours = ft.Adam([ours_w], lr=0.1)
        theirs = torch.optim.Adam([theirs_w], lr=0.1, foreach=False)
    a = fastopt.schedules.OneCycleLR(ours, 0.5, total_steps=12)
    b = torch.optim.lr_scheduler.OneCycleLR(theirs, 0.5, total_steps=12)
    for _ in range(12):
        g = torch.randn(50)
        for w, opt, sched in ((ours_w, ours, a), (theirs_w, theirs, b)):
            w.grad = g.clone()
            opt.step()
            sched.step()
        torch.testing.assert_close(ours_w, theirs_w, rtol=2e-5, atol=1e-6)
    assert _momentum(ours) == _momentum(theirs)
