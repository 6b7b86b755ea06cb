"""The schedules checked against torch.optim.lr_scheduler and transformers' get_scheduler:
each case builds the oracle's scheduler (tests/make_schedule_fixtures.py records its values in
tests/golden/schedules.json) and fastopt's (tests/test_schedules.py replays it)."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from fastopt import schedules as fs


class Case(NamedTuple):
    id: str
    optimizer: str  # "sgd" (momentum) or "adam" (betas): the groups a schedule may cycle
    oracle: Callable[[Any], Any]  # torch optimizer -> torch/transformers scheduler
    ours: Callable[[Any], Any]  # fastopt optimizer -> fastopt schedule
    steps: int = 24
    momentum: bool = False  # the schedule also writes momentum / betas[0]


def _torch() -> Any:
    import torch.optim.lr_scheduler as lr

    return lr


def _hf(name: str, w: int, total: int | None, **kw: Any) -> Callable[[Any], Any]:
    def make(opt: Any) -> Any:
        from transformers import get_scheduler

        return get_scheduler(name, opt, num_warmup_steps=w, num_training_steps=total,
                             scheduler_specific_kwargs=kw or None)
    return make


def decay(t: int) -> float:
    return 0.9 ** t if t < 10 else 0.9 ** 10 / (t - 9)


CASES = [
    Case("LambdaLR", "sgd", lambda o: _torch().LambdaLR(o, decay),
         lambda o: fs.LambdaLR(o, decay)),
    Case("MultiStepLR", "sgd", lambda o: _torch().MultiStepLR(o, [3, 7, 7, 12], gamma=0.5),
         lambda o: fs.MultiStepLR(o, [12, 3, 7, 7], gamma=0.5)),
    Case("ConstantLR", "sgd", lambda o: _torch().ConstantLR(o, factor=0.25, total_iters=4),
         lambda o: fs.ConstantLR(o, factor=0.25, total_iters=4)),
    Case("LinearLR", "adam",
         lambda o: _torch().LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=6),
         lambda o: fs.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=6)),
    Case("CosineAnnealingWarmRestarts", "sgd",
         lambda o: _torch().CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3),
         lambda o: fs.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)),
    Case("CosineAnnealingWarmRestarts-T_mult=1", "sgd",
         lambda o: _torch().CosineAnnealingWarmRestarts(o, T_0=5),
         lambda o: fs.CosineAnnealingWarmRestarts(o, T_0=5)),
    Case("SequentialLR", "sgd",
         lambda o: _torch().SequentialLR(o, [_torch().LinearLR(o, 0.1, total_iters=3),
                                             _torch().MultiStepLR(o, [4, 9], 0.5)], [3]),
         lambda o: fs.SequentialLR(o, [fs.LinearLR(o, 0.1, total_iters=3),
                                       fs.MultiStepLR(o, [4, 9], 0.5)], [3])),
    Case("OneCycleLR", "sgd", lambda o: _torch().OneCycleLR(o, [1.0, 0.1], total_steps=20),
         lambda o: fs.OneCycleLR(o, [1.0, 0.1], total_steps=20), steps=20, momentum=True),
    Case("OneCycleLR-three_phase-linear", "adam",
         lambda o: _torch().OneCycleLR(o, 0.01, epochs=3, steps_per_epoch=7, pct_start=0.25,
                                       anneal_strategy="linear", three_phase=True,
                                       base_momentum=0.8, max_momentum=0.9),
         lambda o: fs.OneCycleLR(o, 0.01, epochs=3, steps_per_epoch=7, pct_start=0.25,
                                 anneal_strategy="linear", three_phase=True,
                                 base_momentum=0.8, max_momentum=0.9), steps=21, momentum=True),
    Case("CyclicLR-triangular2", "sgd",
         lambda o: _torch().CyclicLR(o, 0.01, [0.1, 0.05], step_size_up=3, step_size_down=5,
                                     mode="triangular2"),
         lambda o: fs.CyclicLR(o, 0.01, [0.1, 0.05], step_size_up=3, step_size_down=5,
                               mode="triangular2"), momentum=True),
    Case("CyclicLR-exp_range", "adam",
         lambda o: _torch().CyclicLR(o, 1e-3, 1e-2, step_size_up=4, mode="exp_range",
                                     gamma=0.9, base_momentum=0.85, max_momentum=0.95),
         lambda o: fs.CyclicLR(o, 1e-3, 1e-2, step_size_up=4, mode="exp_range", gamma=0.9,
                               base_momentum=0.85, max_momentum=0.95), momentum=True),
    Case("hf-linear", "adam", _hf("linear", 3, 15),
         lambda o: fs.get_scheduler("linear", o, 3, 15)),
    Case("hf-cosine", "adam", _hf("cosine", 2, 12),
         lambda o: fs.get_scheduler("cosine", o, 2, 12)),
    Case("hf-cosine_with_min_lr-rate", "adam", _hf("cosine_with_min_lr", 2, 12,
                                                   min_lr_rate=0.1),
         lambda o: fs.get_scheduler("cosine_with_min_lr", o, 2, 12, min_lr_rate=0.1)),
    Case("hf-cosine_with_min_lr-min_lr", "adam", _hf("cosine_with_min_lr", 0, 20,
                                                     min_lr=1e-4),
         lambda o: fs.get_scheduler("cosine_with_min_lr", o, 0, 20, min_lr=1e-4)),
    Case("hf-wsd-cosine", "adam",
         _hf("warmup_stable_decay", 3, 16, num_decay_steps=5, warmup_type="cosine",
             min_lr_ratio=0.1),
         lambda o: fs.get_scheduler("warmup_stable_decay", o, 3, 16, num_decay_steps=5,
                                    warmup_type="cosine", min_lr_ratio=0.1)),
    Case("hf-wsd-linear", "adam",
         _hf("warmup_stable_decay", 2, None, num_decay_steps=6, num_stable_steps=4,
             decay_type="linear"),
         lambda o: fs.get_scheduler("warmup_stable_decay", o, 2, None, num_decay_steps=6,
                                    num_stable_steps=4, decay_type="linear")),
    Case("hf-wsd-1-sqrt", "adam",
         _hf("warmup_stable_decay", 4, 20, num_decay_steps=8, warmup_type="1-sqrt",
             decay_type="1-sqrt", min_lr_ratio=0.05),
         lambda o: fs.get_scheduler("warmup_stable_decay", o, 4, 20, num_decay_steps=8,
                                    warmup_type="1-sqrt", decay_type="1-sqrt",
                                    min_lr_ratio=0.05)),
    Case("hf-inverse_sqrt", "adam", _hf("inverse_sqrt", 4, None),
         lambda o: fs.get_scheduler("inverse_sqrt", o, 4)),
    Case("hf-inverse_sqrt-timescale", "adam", _hf("inverse_sqrt", 0, None, timescale=3),
         lambda o: fs.get_scheduler("inverse_sqrt", o, 0, timescale=3)),
    Case("hf-constant_with_warmup", "adam", _hf("constant_with_warmup", 3, None),
         lambda o: fs.get_scheduler("constant_with_warmup", o, 3)),
]
