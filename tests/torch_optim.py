"""Map the test table's option sets onto torch.optim (used only where torch is importable)."""

from __future__ import annotations

from typing import Any

import numpy as np


from fastopt._specs import SPECS

# fastopt keeps torch's state names, except Adagrad's "sum", which would shadow a builtin.
TORCH_STATE_NAMES = {s.name: s.torch_name for spec in SPECS.values() for s in spec.states}


def torch_kwargs(algo: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Functional-API options as torch's constructor takes them (pairs such as ``betas``)."""
    return SPECS[algo.name].torch_options(options)


def oracle_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """fastopt.torch's constructor arguments as the oracle takes them: torch-adopt takes its
    clip as a function of the step, fastopt its exponent."""
    kw = dict(kw)
    if "clip_exponent" in kw:
        exponent = kw.pop("clip_exponent")
        kw["clip_lambda"] = lambda step: step ** exponent
    return kw


# Oracles outside torch.optim: class name -> (module, class). Needed only to regenerate the
# golden fixtures (tests/make_golden.py) and by live cross-checks, which skip without them.
ORACLES: dict[str, tuple[str, str]] = {
    "Lion": ("lion_pytorch", "Lion"),
    "ADOPT": ("adopt", "ADOPT"),  # pip install torch-adopt
    "AdEMAMix": ("pytorch_optimizer", "AdEMAMix"),  # pip install pytorch_optimizer
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree"),  # pip install schedulefree
    "SGDScheduleFree": ("schedulefree", "SGDScheduleFree"),
}


def _step_each_parameter(opt: Any, step: Any, load: Any, store: Any) -> None:
    """Run an oracle that keeps its step count per parameter group as torch keeps it, per
    parameter: each parameter with a gradient is stepped as a group of its own, whose
    counters ``load(group, state)`` reads from the parameter's state and ``store(one_group,
    state)`` writes back."""
    groups = opt.param_groups
    try:
        for group in groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = opt.state[p]
                one = {**group, "params": [p], **load(group, state)}
                opt.param_groups = [one]
                step()
                store(one, state)
    finally:
        opt.param_groups = groups


def _adapt_ademamix(cls: Any) -> Any:
    """pytorch-optimizer's AdEMAMix under fastopt's (bitsandbytes') interface: decoupled
    weight decay, one warmup length for alpha and beta3 (``t_alpha`` must equal ``t_beta3``),
    and torch's per-parameter step count (pytorch-optimizer counts per group: each parameter
    with a gradient is stepped as a group of its own, its count in its state)."""
    import torch

    class AdEMAMix(cls):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, lr: float = 1e-3,
                     betas: tuple[float, ...] = (0.9, 0.999, 0.9999), alpha: float = 5.0,
                     t_alpha: float | None = None, t_beta3: float | None = None,
                     eps: float = 1e-8, weight_decay: float = 1e-2,
                     maximize: bool = False) -> None:
            super().__init__(params, lr=lr, betas=betas, alpha=alpha, eps=eps,
                             weight_decay=weight_decay, weight_decouple=True, maximize=maximize,
                             foreach=False, t_alpha=t_alpha or 0.0, t_beta3=t_beta3 or 0.0)

        def step(self, closure: Any = None) -> Any:
            def load(group: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
                if group["t_alpha"] != group["t_beta3"]:
                    raise ValueError("the oracle has one warmup for alpha and beta3")
                return {"weight_decouple": True, "fixed_decay": False, "foreach": False,
                        "t_alpha_beta3": group["t_alpha"] or None,
                        "step": int(state["step"].item()) if "step" in state else 0}

            def store(one: dict[str, Any], state: dict[str, Any]) -> None:
                state["step"] = torch.tensor(float(one["step"]))

            _step_each_parameter(self, super().step, load, store)

    return AdEMAMix


def _adapt_schedulefree(cls: Any) -> Any:
    """schedulefree's optimizers as fastopt runs them: created in train mode (schedulefree
    starts in eval mode and refuses to step), its per-group k, lr_max and weight_sum kept per
    parameter (each parameter with a gradient stepped as a group of its own, its values in
    its state: fastopt's step, lr_max, weight_sum), one-element lists of foreach=False."""
    import torch

    class ScheduleFree(cls):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, **kw: Any) -> None:
            super().__init__(params, foreach=False, **kw)
            self.train()

        def step(self, closure: Any = None) -> Any:
            def load(group: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
                if "step" not in state:
                    return {"foreach": False, "k": 0, "lr_max": -1.0, "weight_sum": 0.0}
                return {"foreach": False, "k": int(state["step"].item()),
                        "lr_max": state["lr_max"].item(),
                        "weight_sum": state["weight_sum"].item()}

            def store(one: dict[str, Any], state: dict[str, Any]) -> None:
                state["step"] = torch.tensor(float(one["k"]))
                for key in ("lr_max", "weight_sum"):
                    state[key] = torch.tensor(one[key], dtype=torch.float64)

            _step_each_parameter(self, super().step, load, store)

    ScheduleFree.__name__ = cls.__name__
    return ScheduleFree


_ADAPTERS = {"AdEMAMix": _adapt_ademamix, "AdamWScheduleFree": _adapt_schedulefree,
             "SGDScheduleFree": _adapt_schedulefree}


def oracle_class(name: str) -> Any:
    """torch.optim's class ``name``, or the oracle package's (the test skips without it)."""
    import pytest
    import torch

    if name in ORACLES:
        module, cls = ORACLES[name]
        found = getattr(pytest.importorskip(module), cls)
        return _ADAPTERS[name](found) if name in _ADAPTERS else found
    return getattr(torch.optim, name)


class _Maximizing:
    """An oracle without ``maximize`` run on negated gradients (restored after the step)."""

    def __init__(self, opt: Any) -> None:
        self.opt, self.state = opt, opt.state

    def step(self) -> None:
        grads = [p.grad for g in self.opt.param_groups for p in g["params"]
                 if p.grad is not None]
        for g in grads:
            g.neg_()
        self.opt.step()
        for g in grads:
            g.neg_()


def make_torch_optimizer(algo: Any, options: dict[str, Any], params: list[Any]) -> Any:
    cls = oracle_class(algo.spec.torch_class)
    kw = oracle_kwargs(torch_kwargs(algo, options))
    if algo.spec.torch_class not in ORACLES:
        # foreach=False: torch's documented single-tensor loop, which the reference follows.
        return cls(params, foreach=False, **kw)
    maximize = kw.pop("maximize", False)
    opt = cls(params, **kw)
    return _Maximizing(opt) if maximize else opt


def torch_state(algo: Any, options: dict[str, Any], opt: Any, p: Any) -> dict[str, np.ndarray]:
    """The optimizer state of ``p`` under fastopt's state names (only the active ones)."""
    st = opt.state[p]
    return {name: st[TORCH_STATE_NAMES.get(name, name)].detach().numpy().copy()
            for name in algo.active_states(options)}
