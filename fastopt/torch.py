"""Drop-in ``torch.optim.Optimizer`` subclasses that run fastopt's kernels.

    import fastopt.torch
    opt = fastopt.torch.Adam(model.parameters(), lr=1e-3)   # instead of torch.optim.Adam
    loss.backward(); opt.step(); opt.zero_grad()

Same constructor arguments and defaults as torch.optim, same state names and state_dict layout,
so checkpoints move between the two both ways. Parameters, gradients and state are CPU tensors
of float32 or float64 that fastopt reads and writes in place through NumPy views: no copies. All
parameters of a group are updated by one multi-tensor launch (``multi_tensor=False``: one call
per tensor).

torch.optim's implementation switches, and what they mean here:

- ``fused``: accepted and kept in the parameter groups. Every fastopt update is a fused,
  single-pass kernel whatever its value.
- ``foreach``: ``None`` or ``True``, one multi-tensor launch per group (the default);
  ``False``, one kernel call per tensor, as torch's for-loop implementation. Same results.
  ``foreach=True`` with ``fused=True`` is an error, as in torch.
- ``capturable=True`` (CUDA graph capture) and ``differentiable=True`` (autograd through the
  step) raise NotImplementedError: fastopt.torch runs on CPU tensors, outside autograd.
- ``lr`` (and ``betas``) may be 1-element tensors, as in torch; they are read at each step,
  so a scheduler that changes them in place is followed.
- Sparse gradients raise TypeError (torch's SparseAdam is the optimizer for them).
- ``torch.compile``: ``step`` is excluded from compilation (a graph break), so a compiled
  training step runs fastopt eagerly inside it.

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


def _as_number(name: str, value: Any) -> Any:
    """A hyperparameter as fastopt takes it: 1-element tensors (torch accepts them) read out."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element, got shape "
                             f"{tuple(value.shape)}")
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(_as_number(name, v) for v in value)
    return value


def _group_options(algorithm: str, group: dict[str, Any]) -> dict[str, Any]:
    """A group's hyperparameters under the functional API's names, checked."""
    for flag, what in (("capturable", "CUDA graph capture"),
                       ("differentiable", "autograd through the optimizer step")):
        if group.get(flag):
            raise NotImplementedError(
                f"fastopt.torch does not support {flag}=True ({what}): it updates CPU tensors "
                f"in place outside autograd; use torch.optim for {flag}=True")
    if group.get("fused") and group.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    numbers = {k: _as_number(k, v) for k, v in group.items() if k != "params"}
    return check_options(algorithm, functional_options(algorithm, numbers))


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
                 multi_tensor: bool, foreach: bool | None, fused: bool | None,
                 capturable: bool, differentiable: bool) -> None:
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"Invalid backend: {backend!r} (expected 'auto', 'numba' or "
                             f"'numpy')")
        if foreach and not multi_tensor:
            raise ValueError("foreach=True asks for one multi-tensor launch, multi_tensor=False "
                             "for one call per tensor: pass one of them")
        self.backend = backend
        self.multi_tensor = bool(multi_tensor)
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=capturable,
                        differentiable=differentiable)
        _group_options(self.algorithm, defaults)
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str) -> torch.Tensor:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient (``closure`` re-evaluates the loss).

        Not compiled by ``torch.compile``: a compiled function that calls it breaks its graph
        there and runs the step eagerly."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check everything first: a rejected step allocates and changes nothing.
        plan = []
        for group in self.param_groups:
            opts = _group_options(self.algorithm, group)
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
                   multi_tensor=self.multi_tensor and group.get("foreach") is not False)
            for s in steps:
                s += 1
        return loss


class SGD(_Optimizer):
    """torch.optim.SGD's interface on fastopt's kernels."""

    algorithm = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable)


class Adam(_Optimizer):
    """torch.optim.Adam's interface on fastopt's kernels."""

    algorithm = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize), backend,
                         multi_tensor, foreach, fused, capturable, differentiable)


class AdamW(_Optimizer):
    """torch.optim.AdamW's interface on fastopt's kernels."""

    algorithm = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize), backend,
                         multi_tensor, foreach, fused, capturable, differentiable)


class RMSprop(_Optimizer):
    """torch.optim.RMSprop's interface on fastopt's kernels."""

    algorithm = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable)


class Adagrad(_Optimizer):
    """torch.optim.Adagrad's interface on fastopt's kernels."""

    algorithm = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        if not initial_accumulator_value >= 0.0:
            raise ValueError(f"Invalid initial_accumulator_value: "
                             f"{initial_accumulator_value!r} (expected >= 0)")
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str) -> torch.Tensor:
        return torch.full_like(p, group["initial_accumulator_value"],
                               memory_format=torch.contiguous_format)


class Adadelta(_Optimizer):
    """torch.optim.Adadelta's interface on fastopt's kernels."""

    algorithm = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable)
