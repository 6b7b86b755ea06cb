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

torch.optim.lr_scheduler's ``LambdaLR``, ``MultiStepLR``, ``ConstantLR``, ``LinearLR``,
``CosineAnnealingWarmRestarts``, ``SequentialLR``, ``OneCycleLR`` and ``CyclicLR`` take torch's
arguments and give its values (closed forms where torch recurses: equal to rounding);
``OneCycleLR`` and ``CyclicLR`` also cycle the momentum (``group["momentum"]``, or
``group["betas"][0]`` for Adam-like optimizers), which fastopt's kernels read from the group at
every step. transformers' schedules (``get_scheduler("linear" | "cosine" | "cosine_with_min_lr"
| "warmup_stable_decay" | "inverse_sqrt" | "constant" | "constant_with_warmup", ...)``) are
``WarmupLinearLR``, ``WarmupCosineLR``, ``WarmupStableDecayLR`` and ``InverseSqrtLR``, with
HF's formulas (warmup ``t / warmup``, decay to exactly 0 at ``num_training_steps``).

Typical use::

    opt = fastopt.SGD(params, lr=0.1, momentum=0.9)
    sched = fastopt.schedules.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train_one_epoch(opt)
        sched.step()
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Callable, Sequence

import numpy as np

from . import _validate as check

__all__ = ["LRSchedule", "StepLR", "ExponentialLR", "InverseTimeLR", "CosineWarmupLR",
           "ReduceLROnPlateau", "LambdaLR", "MultiStepLR", "ConstantLR", "LinearLR",
           "CosineAnnealingWarmRestarts", "SequentialLR", "OneCycleLR", "CyclicLR",
           "WarmupLinearLR", "WarmupCosineLR", "WarmupStableDecayLR", "InverseSqrtLR",
           "get_scheduler"]


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


def _int(name: str, v: Any, lo: int) -> int:
    if type(v) is not int or v < lo:
        raise ValueError(f"Invalid {name}: {v!r} (expected an int >= {lo})")
    return v


class LambdaLR(LRSchedule):
    """``lr0 * lr_lambda(t)`` (torch's LambdaLR; Keras' LearningRateScheduler as a factor):
    ``lr_lambda`` takes the step count and returns a multiplier."""

    def __init__(self, optimizer: Any, lr_lambda: Callable[[int], float]) -> None:
        if not callable(lr_lambda):
            raise TypeError(f"Invalid lr_lambda: {lr_lambda!r} (expected a function of t)")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * float(self.lr_lambda(t))


class MultiStepLR(LRSchedule):
    """Multiply the lr by ``gamma`` at each milestone: ``lr0 * gamma ** #{m <= t}`` (a
    repeated milestone counts twice, as in torch)."""

    def __init__(self, optimizer: Any, milestones: Sequence[int], gamma: float = 0.1) -> None:
        ms = list(milestones)
        for m in ms:
            _int("milestones", m, 0)
        self.milestones = sorted(ms)
        self.gamma = check.real("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * self.gamma ** bisect.bisect_right(self.milestones, t)


class ConstantLR(LRSchedule):
    """``lr0 * factor`` for the first ``total_iters`` steps, then ``lr0``."""

    def __init__(self, optimizer: Any, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        self.factor = check.real("factor", factor, 0.0, 1.0)
        self.total_iters = _int("total_iters", total_iters, 0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * self.factor if t < self.total_iters else lr0


class LinearLR(LRSchedule):
    """The multiplier moves linearly from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays."""

    def __init__(self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        self.start_factor = check.real("start_factor", start_factor, 0.0, 1.0, lo_open=True)
        self.end_factor = check.real("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _int("total_iters", total_iters, 1)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        frac = min(t, self.total_iters) / self.total_iters
        return lr0 * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class CosineAnnealingWarmRestarts(LRSchedule):
    """SGDR: cosine from ``lr0`` to ``eta_min`` over ``T_0`` steps, then restarts, each
    period ``T_mult`` times longer than the last."""

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1,  # noqa: N803 (torch's)
                 eta_min: float = 0.0) -> None:
        self.T_0 = _int("T_0", T_0, 1)
        self.T_mult = _int("T_mult", T_mult, 1)
        self.eta_min = check.real("eta_min", eta_min, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        period, start = self.T_0, 0
        while t - start >= period:  # integer arithmetic: exact at every restart
            start += period
            period *= self.T_mult
        return self.eta_min + (lr0 - self.eta_min) * (
            1 + math.cos(math.pi * (t - start) / period)) / 2


class SequentialLR(LRSchedule):
    """Run ``schedules[0]`` until ``milestones[0]``, then ``schedules[1]`` from its own step 0,
    and so on (torch's SequentialLR: the warmup-then-decay idiom). The schedules must be made
    on the same optimizer."""

    def __init__(self, optimizer: Any, schedules: Sequence[LRSchedule],
                 milestones: Sequence[int]) -> None:
        self.schedules = list(schedules)
        self.milestones = [_int("milestones", m, 1) for m in milestones]
        if not self.schedules or any(not isinstance(x, LRSchedule) for x in self.schedules):
            raise TypeError("Invalid schedules: expected a list of fastopt.schedules "
                            "LRSchedule objects")
        if any(x.optimizer is not optimizer for x in self.schedules):
            raise ValueError("Invalid schedules: each must drive the optimizer given")
        if len(self.milestones) != len(self.schedules) - 1 or \
                self.milestones != sorted(set(self.milestones)):
            raise ValueError(f"Invalid milestones: {list(milestones)!r} (expected "
                             f"{len(self.schedules) - 1} increasing steps, one per switch)")
        super().__init__(optimizer)
        self.base_lrs = list(self.schedules[0].base_lrs)

    def lr_at(self, t: int, lr0: float) -> float:
        i = bisect.bisect_right(self.milestones, t)
        return self.schedules[i].lr_at(t - (self.milestones[i - 1] if i else 0), lr0)


def _set_momentum(optimizer: Any, values: list[float]) -> None:
    for g, m in zip(_groups(optimizer), values):
        if "betas" in g:
            g["betas"] = (float(m), *tuple(g["betas"])[1:])
        else:
            g["momentum"] = float(m)


def _check_cyclable(optimizer: Any) -> None:
    for g in _groups(optimizer):
        if "betas" not in g and "momentum" not in g:
            raise ValueError("Invalid optimizer: cycle_momentum=True needs groups with "
                             "'momentum' or 'betas' (or pass cycle_momentum=False)")


def _per_group(name: str, v: Any, n: int) -> list[float]:
    values = list(v) if isinstance(v, (list, tuple)) else [v] * n
    if len(values) != n:
        raise ValueError(f"Invalid {name}: {v!r} (expected one value or {n}, one per group)")
    return [check.real(name, x, 0.0) for x in values]


class OneCycleLR(LRSchedule):
    """torch's OneCycleLR: the lr rises from ``max_lr / div_factor`` to ``max_lr`` over
    ``pct_start`` of ``total_steps`` and anneals to ``max_lr / (div_factor *
    final_div_factor)`` (cosine or linear; ``three_phase`` as torch), with the momentum (or
    beta1) moving the other way between ``max_momentum`` and ``base_momentum``. Stepping past
    ``total_steps`` raises, as torch does."""

    def __init__(self, optimizer: Any, max_lr: float | Sequence[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85,
                 max_momentum: float | Sequence[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        groups = _groups(optimizer)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("Invalid arguments: give total_steps, or epochs and "
                                 "steps_per_epoch")
            total_steps = _int("epochs", epochs, 1) * _int("steps_per_epoch", steps_per_epoch, 1)
        self.total_steps = _int("total_steps", total_steps, 1)
        pct = check.real("pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"Invalid anneal_strategy: {anneal_strategy!r} (expected 'cos' or "
                             f"'linear')")
        self.anneal_strategy = anneal_strategy
        self.cycle_momentum = check.flag("cycle_momentum", cycle_momentum)
        n = len(groups)
        self.max_lrs = _per_group("max_lr", max_lr, n)
        div = check.real("div_factor", div_factor, 0.0, lo_open=True)
        final = check.real("final_div_factor", final_div_factor, 0.0, lo_open=True)
        self.initial_lrs = [m / div for m in self.max_lrs]
        self.min_lrs = [i / final for i in self.initial_lrs]
        self.base_momentums = _per_group("base_momentum", base_momentum, n)
        self.max_momentums = _per_group("max_momentum", max_momentum, n)
        if self.cycle_momentum:
            _check_cyclable(optimizer)
        T = self.total_steps
        # (end step, lr from, lr to, momentum from, momentum to) with "initial", "max", "min".
        if three_phase:
            self.phases = [(float(pct * T) - 1, "initial", "max", "max_m", "base_m"),
                           (float(2 * pct * T) - 2, "max", "initial", "base_m", "max_m"),
                           (T - 1.0, "initial", "min", "max_m", "max_m")]
        else:
            self.phases = [(float(pct * T) - 1, "initial", "max", "max_m", "base_m"),
                           (T - 1.0, "max", "min", "base_m", "max_m")]
        for g, lr in zip(groups, self.initial_lrs):
            g["initial_lr"] = lr
        super().__init__(optimizer)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _values(self, t: int, k: int) -> tuple[float, float]:
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps "
                             f"is {self.total_steps}")
        named = {"initial": self.initial_lrs[k], "max": self.max_lrs[k], "min": self.min_lrs[k],
                 "max_m": self.max_momentums[k], "base_m": self.base_momentums[k]}
        start = 0.0
        for i, (end, lr_a, lr_b, m_a, m_b) in enumerate(self.phases):
            if t <= end or i == len(self.phases) - 1:
                pct = (t - start) / (end - start)
                return (self._anneal(named[lr_a], named[lr_b], pct),
                        self._anneal(named[m_a], named[m_b], pct))
            start = end
        raise AssertionError("unreachable")

    def _apply(self) -> None:
        values = [self._values(self.t, k) for k in range(len(_groups(self.optimizer)))]
        for g, (lr, _) in zip(_groups(self.optimizer), values):
            g["lr"] = float(lr)
        if self.cycle_momentum:
            _set_momentum(self.optimizer, [m for _, m in values])

    def step(self) -> None:
        self._values(self.t + 1, 0)  # past the end: raise before anything changes
        super().step()


class CyclicLR(LRSchedule):
    """torch's CyclicLR: the lr cycles between ``base_lr`` and ``max_lr`` (``mode``
    "triangular", "triangular2" or "exp_range", or a ``scale_fn``), stepped per batch, with
    the momentum (or beta1) cycling inversely between ``max_momentum`` and
    ``base_momentum``."""

    def __init__(self, optimizer: Any, base_lr: float | Sequence[float],
                 max_lr: float | Sequence[float], step_size_up: int = 2000,
                 step_size_down: int | None = None, mode: str = "triangular",
                 gamma: float = 1.0, scale_fn: Callable[[float], float] | None = None,
                 scale_mode: str = "cycle", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.8,
                 max_momentum: float | Sequence[float] = 0.9) -> None:
        groups = _groups(optimizer)
        n = len(groups)
        self.base_lrs_c = _per_group("base_lr", base_lr, n)
        self.max_lrs = _per_group("max_lr", max_lr, n)
        up = float(_int("step_size_up", step_size_up, 1))
        down = float(_int("step_size_down", step_size_down, 1)) if step_size_down is not None \
            else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if scale_fn is None:
            if mode not in ("triangular", "triangular2", "exp_range"):
                raise ValueError(f"Invalid mode: {mode!r} (expected 'triangular', "
                                 f"'triangular2' or 'exp_range', or a scale_fn)")
            self.gamma = check.real("gamma", gamma, 0.0)
            fns: dict[str, tuple[Callable[[float], float], str]] = {
                "triangular": (lambda x: 1.0, "cycle"),
                "triangular2": (lambda x: 1 / (2.0 ** (x - 1)), "cycle"),
                "exp_range": (lambda x: self.gamma ** x, "iterations")}
            self.scale_fn, self.scale_mode = fns[mode]
        else:
            if scale_mode not in ("cycle", "iterations"):
                raise ValueError(f"Invalid scale_mode: {scale_mode!r} (expected 'cycle' or "
                                 f"'iterations')")
            self.scale_fn, self.scale_mode = scale_fn, scale_mode
        self.cycle_momentum = check.flag("cycle_momentum", cycle_momentum)
        self.base_momentums = _per_group("base_momentum", base_momentum, n)
        self.max_momentums = _per_group("max_momentum", max_momentum, n)
        if self.cycle_momentum:
            _check_cyclable(optimizer)
        for g, lr in zip(groups, self.base_lrs_c):
            g["initial_lr"] = lr
        super().__init__(optimizer)

    def _apply(self) -> None:
        t = self.t
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        scale = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        s = self.scale_fn(cycle if self.scale_mode == "cycle" else t)
        for g, lo, hi in zip(_groups(self.optimizer), self.base_lrs_c, self.max_lrs):
            g["lr"] = float(lo + (hi - lo) * scale * s)
        if self.cycle_momentum:
            _set_momentum(self.optimizer, [hi - (hi - lo) * scale * s for lo, hi in
                                           zip(self.base_momentums, self.max_momentums)])


# -- transformers' schedules (LambdaLR multipliers of the step count) ---------------------------


def _warmup(t: int, warmup: int) -> float:
    return float(t) / float(max(1, warmup))


class WarmupLinearLR(LRSchedule):
    """transformers' "linear" (the Trainer's default): ``t / warmup`` while ``t < warmup``,
    then linearly down to exactly 0 at ``num_training_steps``, and 0 after."""

    def __init__(self, optimizer: Any, num_warmup_steps: int, num_training_steps: int) -> None:
        self.warmup = _int("num_warmup_steps", num_warmup_steps, 0)
        self.total = _int("num_training_steps", num_training_steps, 0)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        if t < self.warmup:
            return lr0 * _warmup(t, self.warmup)
        return lr0 * max(0.0, float(self.total - t) / float(max(1, self.total - self.warmup)))


class WarmupCosineLR(LRSchedule):
    """transformers' "cosine" (``num_cycles=0.5``: one half cosine to 0 at
    ``num_training_steps``) and "cosine_with_min_lr" (``min_lr`` or ``min_lr_rate``: the
    cosine rescaled to end at ``lr0 * min_lr_rate``); warmup ``t / warmup``."""

    def __init__(self, optimizer: Any, num_warmup_steps: int, num_training_steps: int,
                 num_cycles: float = 0.5, min_lr: float | None = None,
                 min_lr_rate: float | None = None) -> None:
        self.warmup = _int("num_warmup_steps", num_warmup_steps, 0)
        self.total = _int("num_training_steps", num_training_steps, 0)
        self.num_cycles = check.real("num_cycles", num_cycles, 0.0)
        if min_lr is not None and min_lr_rate is not None:
            raise ValueError("Invalid arguments: give min_lr or min_lr_rate, not both")
        self.min_lr_rate = None if min_lr_rate is None else check.real("min_lr_rate",
                                                                      min_lr_rate, 0.0, 1.0)
        if min_lr is not None:
            # As transformers: relative to the optimizer's default lr (every group).
            lr = getattr(optimizer, "defaults", {}).get("lr", _groups(optimizer)[0]["lr"])
            self.min_lr_rate = check.real("min_lr", min_lr, 0.0) / check.real("lr", lr, 0.0,
                                                                             lo_open=True)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        if t < self.warmup:
            return lr0 * _warmup(t, self.warmup)
        progress = float(t - self.warmup) / float(max(1, self.total - self.warmup))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(self.num_cycles) * 2.0 * progress))
        if self.min_lr_rate is None:
            return lr0 * max(0.0, factor)
        rate = self.min_lr_rate
        return lr0 * max(0.0, factor * (1 - rate) + rate)


class WarmupStableDecayLR(LRSchedule):
    """transformers' "warmup_stable_decay" (WSD): warmup (``warmup_type`` "linear", "cosine"
    or "1-sqrt") from ``min_lr_ratio`` to 1, stable at 1 for ``num_stable_steps`` (by default
    whatever ``num_training_steps`` leaves), decay (``decay_type`` "cosine", "linear" or
    "1-sqrt") to ``min_lr_ratio`` over ``num_decay_steps``, then ``min_lr_ratio``."""

    def __init__(self, optimizer: Any, num_warmup_steps: int, num_decay_steps: int,
                 num_training_steps: int | None = None, num_stable_steps: int | None = None,
                 warmup_type: str = "linear", decay_type: str = "cosine",
                 min_lr_ratio: float = 0.0, num_cycles: float = 0.5) -> None:
        self.warmup = _int("num_warmup_steps", num_warmup_steps, 0)
        self.decay = _int("num_decay_steps", num_decay_steps, 0)
        if num_stable_steps is None:
            if num_training_steps is None:
                raise ValueError("Invalid arguments: give num_training_steps or "
                                 "num_stable_steps")
            num_stable_steps = _int("num_training_steps", num_training_steps, 0) \
                - self.warmup - self.decay
        self.stable = _int("num_stable_steps", num_stable_steps, 0)
        for name, v in (("warmup_type", warmup_type), ("decay_type", decay_type)):
            if v not in ("linear", "cosine", "1-sqrt"):
                raise ValueError(f"Invalid {name}: {v!r} (expected 'linear', 'cosine' or "
                                 f"'1-sqrt')")
        self.warmup_type, self.decay_type = warmup_type, decay_type
        self.min_lr_ratio = check.real("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
        self.num_cycles = check.real("num_cycles", num_cycles, 0.0)
        super().__init__(optimizer)

    def _factor(self, t: int) -> float:
        lo = self.min_lr_ratio
        if t < self.warmup:
            x = _warmup(t, self.warmup)
            f = (x if self.warmup_type == "linear" else
                 0.5 * (1.0 - math.cos(math.pi * x)) if self.warmup_type == "cosine" else
                 1.0 - math.sqrt(1.0 - x))
            return max(0.0, f * (1.0 - lo) + lo)
        if t < self.warmup + self.stable:
            return 1.0
        if t < self.warmup + self.stable + self.decay:
            x = float(t - self.warmup - self.stable) / float(max(1, self.decay))
            f = (1.0 - x if self.decay_type == "linear" else
                 0.5 * (1.0 + math.cos(math.pi * float(self.num_cycles) * 2.0 * x))
                 if self.decay_type == "cosine" else 1.0 - math.sqrt(x))
            return max(0.0, f * (1.0 - lo) + lo)
        return lo

    def lr_at(self, t: int, lr0: float) -> float:
        return lr0 * self._factor(t)


class InverseSqrtLR(LRSchedule):
    """transformers' "inverse_sqrt": warmup ``t / warmup``, then ``1 / sqrt((t + timescale -
    warmup) / timescale)``; ``timescale`` defaults to the warmup (10000 without one)."""

    def __init__(self, optimizer: Any, num_warmup_steps: int,
                 timescale: int | None = None) -> None:
        self.warmup = _int("num_warmup_steps", num_warmup_steps, 0)
        self.timescale = _int("timescale", timescale, 1) if timescale is not None else (
            self.warmup or 10_000)
        super().__init__(optimizer)

    def lr_at(self, t: int, lr0: float) -> float:
        if t < self.warmup:
            return lr0 * _warmup(t, self.warmup)
        shift = self.timescale - self.warmup
        return lr0 * (1.0 / math.sqrt((t + shift) / self.timescale))


def get_scheduler(name: str, optimizer: Any, num_warmup_steps: int = 0,
                  num_training_steps: int | None = None, **kwargs: Any) -> LRSchedule:
    """transformers' ``get_scheduler`` names on fastopt's schedules: "linear", "cosine",
    "cosine_with_min_lr", "warmup_stable_decay", "inverse_sqrt", "constant",
    "constant_with_warmup"."""
    def total() -> int:
        if num_training_steps is None:
            raise ValueError(f"Invalid num_training_steps: None ({name!r} needs it)")
        return num_training_steps

    if name == "linear":
        return WarmupLinearLR(optimizer, num_warmup_steps, total())
    if name in ("cosine", "cosine_with_min_lr"):
        return WarmupCosineLR(optimizer, num_warmup_steps, total(), **kwargs)
    if name == "warmup_stable_decay":
        return WarmupStableDecayLR(optimizer, num_warmup_steps,
                                   num_training_steps=num_training_steps, **kwargs)
    if name == "inverse_sqrt":
        return InverseSqrtLR(optimizer, num_warmup_steps, **kwargs)
    if name == "constant":
        return LambdaLR(optimizer, lambda t: 1.0)
    if name == "constant_with_warmup":
        w = _int("num_warmup_steps", num_warmup_steps, 0)
        return LambdaLR(optimizer, lambda t: _warmup(t, w) if t < w else 1.0)
    raise ValueError(f"Invalid name: {name!r} (expected 'linear', 'cosine', "
                     f"'cosine_with_min_lr', 'warmup_stable_decay', 'inverse_sqrt', "
                     f"'constant' or 'constant_with_warmup')")
