"""Drop-in ``torch.optim.Optimizer`` subclasses that run fastopt's kernels.

    import fastopt.torch
    opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)   # instead of torch.optim.Adam
    loss.backward(); opt.step(); opt.zero_grad()

Same constructor arguments and defaults as torch.optim (``foreach``, ``fused``, ``capturable``
and ``differentiable`` are not taken), same state names and state_dict layout, so checkpoints
move between the two both ways. Parameters, gradients and state are CPU tensors of float32 or
float64 that fastopt reads and writes in place through NumPy views: no copies. All parameters of
a group are updated by one multi-tensor launch (``multi_tensor=False``: one call per tensor).

This module imports torch; ``import fastopt`` does not.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch

from ._algorithms import active_states
from ._engine import check_options, update
from .optim import functional_options

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta"]

# torch.optim's state names where they differ from the functional API's.
_TORCH_NAME = {"state_sum": "sum"}
_HAS_STEP = {"adagrad", "rmsprop", "adam", "adamw", "adadelta"}  # SGD keeps no step in torch


def _view(t: torch.Tensor, what: str) -> np.ndarray:
    if t.device.type != "cpu":
        raise NotImplementedError(f"fastopt.torch: {what} is on {t.device}; this version of "
                                  f"fastopt.torch runs on CPU tensors only (for CUDA tensors call the "
                                  f"functional API, e.g. fastopt.adam_step, or use torch.optim)")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fastopt.torch: {what} has dtype {t.dtype} (expected torch.float32 or "
                        f"torch.float64)")
    if t.is_sparse:
        raise TypeError(f"fastopt.torch: {what} is sparse (expected a dense tensor)")
    return t.detach().numpy()


class _Optimizer(torch.optim.Optimizer):
    algorithm: ClassVar[str]

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], backend: str,
                 multi_tensor: bool) -> None:
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"Invalid backend: {backend!r} (expected 'auto', 'numba' or "
                             f"'numpy')")
        self.backend = backend
        self.multi_tensor = bool(multi_tensor)
        check_options(self.algorithm, functional_options(self.algorithm, defaults))
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str) -> torch.Tensor:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient (``closure`` re-evaluates the loss)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check everything first: a rejected step allocates and changes nothing.
        plan = []
        for group in self.param_groups:
            opts = check_options(self.algorithm, functional_options(self.algorithm, group))
            with_grad = [p for p in group["params"] if p.grad is not None]
            for p in with_grad:
                if not p.is_contiguous():
                    raise ValueError("fastopt.torch: a parameter is not contiguous (expected "
                                     "contiguous parameters; they are updated in place)")
                _view(p, "a parameter")
                _view(p.grad, "a gradient")
            plan.append((group, opts, with_grad))
        for group, opts, with_grad in plan:
            active = active_states(self.algorithm, opts)
            ps, gs, ss, ts, steps = [], [], [], [], []
            for p in with_grad:
                state = self.state[p]
                fresh = False
                for name in active:
                    key = _TORCH_NAME.get(name, name)
                    if state.get(key) is None:
                        state[key] = self._init_state(p, group, name)
                        fresh = fresh or name == "momentum_buffer"
                if self.algorithm in _HAS_STEP:
                    if "step" not in state:
                        state["step"] = torch.tensor(0.0)
                    t = int(state["step"].item()) + 1
                    steps.append(state["step"])
                else:
                    t = 1 if fresh else 2  # SGD: only "is this the buffer's first step" matters
                ps.append(_view(p, "a parameter"))
                gs.append(_view(p.grad.contiguous(), "a gradient"))
                ss.append({name: _view(state[_TORCH_NAME.get(name, name)], "a state tensor")
                           for name in active})
                ts.append(t)
            update(self.algorithm, opts, ps, gs, ss, ts, backend=self.backend,
                   multi_tensor=self.multi_tensor)
            for s in steps:
                s += 1
        return loss


class SGD(_Optimizer):
    """torch.optim.SGD's interface on fastopt's kernels."""

    algorithm = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), backend, multi_tensor)


class Adam(_Optimizer):
    """torch.optim.Adam's interface on fastopt's kernels."""

    algorithm = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize), backend,
                         multi_tensor)


class AdamW(_Optimizer):
    """torch.optim.AdamW's interface on fastopt's kernels."""

    algorithm = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize), backend,
                         multi_tensor)


class RMSprop(_Optimizer):
    """torch.optim.RMSprop's interface on fastopt's kernels."""

    algorithm = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize), backend, multi_tensor)


class Adagrad(_Optimizer):
    """torch.optim.Adagrad's interface on fastopt's kernels."""

    algorithm = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        if not initial_accumulator_value >= 0.0:
            raise ValueError(f"Invalid initial_accumulator_value: "
                             f"{initial_accumulator_value!r} (expected >= 0)")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize), backend, multi_tensor)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str) -> torch.Tensor:
        return torch.full_like(p, group["initial_accumulator_value"],
                               memory_format=torch.contiguous_format)


class Adadelta(_Optimizer):
    """torch.optim.Adadelta's interface on fastopt's kernels."""

    algorithm = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *, maximize: bool = False,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), backend, multi_tensor)
