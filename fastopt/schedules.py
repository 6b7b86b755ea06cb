"""Learning-rate schedules for any optimizer with torch-style ``param_groups``.

Each schedule sets ``group["lr"]`` of every parameter group, a plain Python float, once per
``schedule.step()``: fastopt's optimizers, ``fastopt.torch``'s and torch.optim's alike. The lr
never becomes an array, so a schedule adds no per-step device work.

The closed forms, with ``t`` the number of ``schedule.step()`` calls so far and ``lr0`` a
group's learning rate when the schedule was created (kept in ``group["initial_lr"]``)::

    StepLR(step_size, gamma)            lr0 * gamma ** (t // step_size)      (step decay)
    ExponentialLR(gamma)                lr0 * gamma ** t                     (= lr0 * exp(-k t)
                                                                              for gamma = exp(-k))
    InverseTimeLR(k)                    lr0 / (1 + k * t)                    (1/t decay)
    CosineWarmupLR(warmup, total, min_lr)
        t <  warmup:  lr0 * (t + 1) / (warmup + 1)                          (linear warmup)
        t >= warmup:  min_lr + (lr0 - min_lr) * (1 + cos(pi * p)) / 2,
                      p = min(1, (t - warmup) / (total - warmup))            (cosine decay)

``ReduceLROnPlateau`` is driven by a metric instead: ``schedule.step(val_loss)``.

Typical use::

    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    sched = fastopt.schedules.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train_one_epoch(opt)
        sched.step()
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _validate as check

__all__ = ["LRSchedule", "StepLR", "ExponentialLR", "InverseTimeLR", "CosineWarmupLR",
           "ReduceLROnPlateau"]


def _groups(optimizer: Any) -> list[dict[str, Any]]:
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "lr" in g
                                               for g in groups):
        raise TypeError(f"Invalid optimizer: {type(optimizer).__name__} (expected an optimizer "
                        f"with param_groups, a list of dicts with an 'lr')")
    result: list[dict[str, Any]] = groups
    return result


class LRSchedule:
    """Base of the closed-form schedules: ``lr = factor(t)`` times each group's initial lr.

    Subclasses define ``lr_at(t, lr0)``. ``step()`` advances ``t`` and writes the new lrs;
    ``state_dict()`` / ``load_state_dict()`` save and restore ``t`` so a resumed run continues
    the schedule exactly.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        groups = _groups(optimizer)
        for g in groups:
            g.setdefault("initial_lr", check.real("lr", g["lr"], 0.0))
        self.base_lrs = [float(g["initial_lr"]) for g in groups]
        self.t = 0
        self._apply()

    def lr_at(self, t: int, lr0: float) -> float:
        raise NotImplementedError

    def _apply(self) -> None:
        for g, lr0 in zip(_groups(self.optimizer), self.base_lrs):
            g["lr"] = float(self.lr_at(self.t, lr0))

    def step(self) -> None:
        """Advance the schedule by one (an epoch or an iteration: the caller's choice)."""
        self.t += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in _groups(self.optimizer)]

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        t, base = state.get("t"), state.get("base_lrs")
        if type(t) is not int or t < 0:
            raise ValueError(f"Invalid schedule state: t = {t!r} (expected an int >= 0)")
        if not isinstance(base, list) or len(base) != len(self.base_lrs):
            raise ValueError(f"Invalid schedule state: base_lrs = {base!r} (expected "
                             f"{len(self.base_lrs)} learning rates)")
        self.base_lrs = [check.real("base_lrs", b, 0.0) for b in base]
        self.t = t
        self._apply()


class StepLR(LRSchedule):
    """Multiply the lr by ``gamma`` every ``step_size`` steps (step decay)."""

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        if type(step_size) is not int or step_size < 1:
            raise ValueError(f"Invalid step_size: {step_size!r} (expected an int >= 1)")
        self.step_size = step_size
        self.gamma = check.real("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * self.gamma ** (t // self.step_size)


class ExponentialLR(LRSchedule):
    """Multiply the lr by ``gamma`` every step: ``lr0 * gamma**t``."""

    def __init__(self, optimizer: Any, gamma: float) -> None:
        self.gamma = check.real("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * self.gamma ** t


class InverseTimeLR(LRSchedule):
    """1/t decay: ``lr0 / (1 + decay * t)``."""

    def __init__(self, optimizer: Any, decay: float) -> None:
        self.decay = check.real("decay", decay, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 / (1.0 + self.decay * t)


class CosineWarmupLR(LRSchedule):
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr`` at ``total_steps``.

    During warmup the lr climbs linearly and reaches ``lr0`` at ``t = warmup_steps``; after
    ``total_steps`` it stays at ``min_lr``.
    """

    def __init__(self, optimizer: Any, warmup_steps: int, total_steps: int,
                 min_lr: float = 0.0) -> None:
        if type(warmup_steps) is not int or warmup_steps < 0:
            raise ValueError(f"Invalid warmup_steps: {warmup_steps!r} (expected an int >= 0)")
        if type(total_steps) is not int or total_steps <= warmup_steps:
            raise ValueError(f"Invalid total_steps: {total_steps!r} (expected an int > "
                             f"warmup_steps = {warmup_steps})")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr = check.real("min_lr", min_lr, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        if t < self.warmup_steps:
            return lr0 * (t + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (t - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (lr0 - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ReduceLROnPlateau:
    """Multiply the lr by ``factor`` when a metric stops improving for ``patience`` steps.

    As torch.optim.lr_scheduler.ReduceLROnPlateau: ``mode`` "min" or "max"; an improvement
    must beat the best value by ``threshold`` (relative in "rel" mode, absolute in "abs");
    after a reduction, ``cooldown`` steps pass before counting again; no lr goes below
    ``min_lr``, and a reduction smaller than ``eps`` is not made.
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"Invalid threshold_mode: {threshold_mode!r} (expected 'rel' or "
                             f"'abs')")
        for name, v in (("patience", patience), ("cooldown", cooldown)):
            if type(v) is not int or v < 0:
                raise ValueError(f"Invalid {name}: {v!r} (expected an int >= 0)")
        self.optimizer = optimizer
        _groups(optimizer)
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check.real("factor", factor, 0.0, 1.0, lo_open=True, hi_open=True)
        self.threshold = check.real("threshold", threshold, 0.0)
        self.min_lr = check.real("min_lr", min_lr, 0.0)
        self.eps = check.real("eps", eps, 0.0)
        self.patience, self.cooldown = patience, cooldown
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_steps = 0
        self.cooldown_left = 0

    def _improved(self, x: float) -> bool:
        if self.mode == "min":
            bar = (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                   else self.best - self.threshold)
            return x < bar
        bar = (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
               else self.best + self.threshold)
        return x > bar

    def step(self, metric: float) -> None:
        """Record this step's metric (for example the validation loss).

        Takes what torch's takes: any real number, NaN and infinities included (they never
        count as an improvement), and one-element arrays or tensors.
        """
        if isinstance(metric, (bool, np.bool_)) or isinstance(metric, (str, bytes)):
            raise TypeError(f"Invalid metric: {metric!r} (expected a real number)")
        try:
            x = float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"Invalid metric: {metric!r} (expected a real number, or an array "
                            f"or tensor of one element)") from None
        if self._improved(x):
            self.best = x
            self.bad_steps = 0
        else:
            self.bad_steps += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_steps = 0
        if self.bad_steps > self.patience:
            for g in _groups(self.optimizer):
                new = max(g["lr"] * self.factor, self.min_lr)
                if g["lr"] - new > self.eps:
                    g["lr"] = float(new)
            self.cooldown_left = self.cooldown
            self.bad_steps = 0

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in _groups(self.optimizer)]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_steps": self.bad_steps,
                "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, bad, cool = state.get("best"), state.get("bad_steps"), state.get("cooldown_left")
        if not isinstance(best, float) or type(bad) is not int or type(cool) is not int:
            raise ValueError(f"Invalid plateau state: {state!r}")
        self.best, self.bad_steps, self.cooldown_left = best, bad, cool
