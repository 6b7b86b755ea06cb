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
