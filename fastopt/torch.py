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

import math
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch

from ._algorithms import ALGORITHMS, active_states
from ._engine import check_options, numba_disabled, update
from ._layout import flat
from ._signals import deferred_signals
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


MAX_STEP = 2**63 - 2  # the kernels count steps in int64, and a step writes step + 1


def _dense(t: torch.Tensor) -> bool:
    """Whether a float CPU tensor's elements fill one block of memory (any stride order)."""
    return flat(t.detach().numpy()) is not None


def _check_param(p: torch.Tensor, where: str) -> None:
    if not p.is_cpu:
        raise NotImplementedError(
            f"fastopt.torch: {where} is on {p.device}; this version of fastopt.torch runs on "
            f"CPU tensors only (for CUDA tensors call the functional API, e.g. "
            f"fastopt.adam_step, or use torch.optim)")
    if p.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"fastopt.torch: {where} has dtype {p.dtype} (expected torch.float32 "
                        f"or torch.float64)")
    if not p.is_contiguous() and not _dense(p):
        raise ValueError(f"fastopt.torch: {where} has gaps or repeated elements (shape "
                         f"{list(p.shape)}, strides {list(p.stride())}; expected a dense "
                         f"tensor: they are updated in place)")


def _check_grad(p: torch.Tensor, g: Any, where: str) -> None:
    what = f"the gradient of {where}"
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"fastopt.torch: {what} is a {type(g).__name__} (expected a tensor)")
    if g.is_sparse or g.layout is not torch.strided:
        raise TypeError(f"fastopt.torch: {what} is sparse ({g.layout}); fastopt.torch takes "
                        f"dense gradients (torch.optim.SparseAdam is the optimizer for sparse "
                        f"ones)")
    if g.dtype is not p.dtype:
        raise TypeError(f"fastopt.torch: {what} has dtype {g.dtype} (expected {p.dtype}, the "
                        f"dtype of its parameter)")
    if g.shape != p.shape:
        raise ValueError(f"fastopt.torch: {what} has shape {list(g.shape)} (expected "
                         f"{list(p.shape)}, the shape of its parameter)")
    if g.device != p.device:
        raise ValueError(f"fastopt.torch: {what} is on {g.device} (expected {p.device}, the "
                         f"device of its parameter)")


def _check_state(p: torch.Tensor, t: Any, key: str, where: str) -> None:
    what = f"state {key!r} of {where}"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastopt.torch: {what} is a {type(t).__name__} (expected a tensor "
                        f"like its parameter)")
    if t.dtype is not p.dtype:
        raise ValueError(f"fastopt.torch: {what} has dtype {t.dtype} (expected {p.dtype}, the "
                         f"dtype of its parameter)")
    if t.shape != p.shape:
        raise ValueError(f"fastopt.torch: {what} has shape {list(t.shape)}, but its parameter "
                         f"has shape {list(p.shape)} (a state_dict saved for another model?)")
    if t.device != p.device:
        raise ValueError(f"fastopt.torch: {what} is on {t.device} (expected {p.device}, the "
                         f"device of its parameter)")
    if t.is_sparse or t.layout is not torch.strided:
        raise ValueError(f"fastopt.torch: {what} is not a dense strided tensor ({t.layout})")


def _step_count(t: Any, where: str) -> int:
    """A state's step count (torch keeps a float32 scalar tensor) as an int >= 0."""
    if t is None:
        return 0
    value = t
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"fastopt.torch: the step count of {where} is a tensor of shape "
                             f"{list(t.shape)} (expected one element)")
        value = t.item()
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool)
    if ok and math.isfinite(value) and value >= 0 and value == int(value):
        return int(value)
    raise ValueError(f"fastopt.torch: the step count of {where} is {value!r} (expected a "
                     f"whole number >= 0)")


class _Batch:
    """One parameter group's tensors to update, checked."""

    def __init__(self, opts: dict[str, Any], multi: bool) -> None:
        self.opts, self.multi = opts, multi
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.states: list[dict[str, Any]] = []
        self.steps: list[int] = []
        self.keys: list[tuple[str, str]] = []
        self.rows: list[list[int]] = []

    def add(self, p: torch.Tensor, g: torch.Tensor, row: list[int],
            tensors: dict[str, torch.Tensor], step: int, state: dict[str, Any],
            keys: list[tuple[str, str]]) -> None:
        self.params.append(p)
        self.grads.append(g)
        self.states.append(state)
        self.steps.append(step)
        self.keys = keys

    def written(self) -> list[torch.Tensor]:
        return [*self.params, *[s[key] for s in self.states for _, key in self.keys]]

    def fill_rows(self, names: tuple[str, ...]) -> None:
        torch_keys = dict(self.keys)
        self.rows = []
        for p, g, s in zip(self.params, self.grads, self.states):
            pa = p.data_ptr()
            self.rows.append([pa, g.data_ptr(), *[s[torch_keys[n]].data_ptr()
                                                  if n in torch_keys else pa for n in names]])

    def run(self, opt: "_Optimizer") -> None:
        names = ALGORITHMS[opt.algorithm][1]
        if self.multi and opt.backend != "numpy" and not numba_disabled():
            from . import _numba_backend

            by_dtype: dict[torch.dtype, list[int]] = {}
            for i, p in enumerate(self.params):
                by_dtype.setdefault(p.dtype, []).append(i)
            for dtype, idx in by_dtype.items():
                _numba_backend.multi_step_rows(
                    opt.algorithm, self.opts, names, np.dtype(_NUMPY[dtype]),
                    tuple(self.params[i].numel() for i in idx), [self.rows[i] for i in idx],
                    [self.steps[i] for i in idx], 1.0)
            return
        torch_keys = dict(self.keys)
        update(opt.algorithm, self.opts, [p.detach().numpy() for p in self.params],
               [g.detach().numpy() for g in self.grads],
               [{n: s[torch_keys[n]].detach().numpy() for n in torch_keys}
                for s in self.states], self.steps, backend=opt.backend, multi_tensor=False)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


class _Work:
    """A step's plan: the batches, and what to allocate, re-lay out and count."""

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        self.allocate: list[tuple[dict[str, Any], str, torch.Tensor, dict[str, Any], str]] = []
        self.relayout: list[tuple[dict[str, Any], str, torch.Tensor]] = []
        self.steps: list[tuple[dict[str, Any], Any, int]] = []
        self.keep: list[torch.Tensor] = []  # temporaries that must live through the step

    def check_overlaps(self, opt: "_Optimizer") -> None:
        """No two of the tensors a step reads or writes may share memory (a state that is a
        view of its parameter, a gradient that is a slice of another parameter, ...)."""
        lo, size, label = [], [], []
        for bi, b in enumerate(self.batches):
            for k, (p, g, s) in enumerate(zip(b.params, b.grads, b.states)):
                n = p.numel() * p.element_size()
                if not n:
                    continue
                for what, t in (("a parameter", p), ("a gradient", g),
                                *[(f"state {key!r}", s.get(key)) for _, key in b.keys]):
                    if t is not None:
                        lo.append(t.data_ptr())
                        size.append(n)
                        label.append((what, bi, k))
        if len(lo) < 2:
            return
        starts = np.array(lo, np.int64)
        order = np.argsort(starts, kind="stable")
        ends = starts[order] + np.array(size, np.int64)[order]
        clash = np.nonzero(starts[order][1:] < ends[:-1])[0]
        if clash.size:
            a, b = label[order[clash[0]]], label[order[clash[0] + 1]]
            raise ValueError(f"fastopt.torch: {b[0]} of the {b[2] + 1}th stepped parameter of "
                             f"group {b[1]} overlaps {a[0]} of the {a[2] + 1}th of group "
                             f"{a[1]} in memory (expected separate tensors)")

    def fill_rows(self, names: tuple[str, ...]) -> None:
        for b in self.batches:
            b.fill_rows(names)

    def advance_steps(self, opt: "_Optimizer") -> None:
        written: list[torch.Tensor] = []
        for b in self.batches:
            written += b.written()
        steps = [t for _, t, _ in self.steps]
        fast: dict[torch.dtype, list[int]] = {}
        slow = []
        if not numba_disabled():
            for t in steps:
                if t.dtype in _NUMPY and t.is_cpu and t.numel() == 1:
                    fast.setdefault(t.dtype, []).append(t.data_ptr())
                else:
                    slow.append(t)
        else:
            slow = steps
        if fast:
            from . import _numba_backend

            for dtype, addresses in fast.items():
                _numba_backend.add_to_scalars(np.dtype(_NUMPY[dtype]), addresses, 1.0)
            written += [t for t in steps if t.dtype in fast and t.is_cpu and t.numel() == 1]
        for t in slow:
            t += 1
        torch.autograd.graph.increment_version(written)
        opt._step_cache = {t: (t._version, count + 1) for _, t, count in self.steps}


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
        # Each step tensor's int value, valid while its autograd version is the one recorded.
        self._step_cache: dict[torch.Tensor, tuple[int, int]] = {}
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=capturable,
                        differentiable=differentiable)
        _group_options(self.algorithm, defaults)
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str) -> torch.Tensor:
        return torch.zeros_like(p)  # the parameter's memory layout

    @torch.compiler.disable  # type: ignore[untyped-decorator]
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient (``closure`` re-evaluates the loss).

        Everything is checked first (parameters, gradients, and every state tensor against its
        parameter: shape, dtype, device, layout, step count), then allocated, then written: a
        rejected step changes nothing, and an interrupt (Ctrl-C) arriving while it writes is
        delivered once the step is complete. Every tensor written has its autograd version
        bumped, as torch's in-place ops do. Not compiled by ``torch.compile``: a compiled
        function that calls it breaks its graph there and runs the step eagerly."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._plan_step()
        if work is None:
            return loss
        self._commit(work)
        return loss

    def _plan_step(self) -> "_Work | None":
        names = ALGORITHMS[self.algorithm][1]
        has_step = self.algorithm in _HAS_STEP
        work = _Work()
        step_cache = self._step_cache
        new_cache: dict[torch.Tensor, tuple[int, int]] = {}
        for gi, group in enumerate(self.param_groups):
            opts = _group_options(self.algorithm, group)
            active = active_states(self.algorithm, opts)
            keys = [(n, _TORCH_NAME.get(n, n)) for n in active]
            batch = _Batch(opts, group.get("foreach") is not False and self.multi_tensor)
            for k, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                where = f"param_groups[{gi}]['params'][{k}]"
                dtype, shape = p.dtype, p.shape
                contiguous = p.is_contiguous()
                if (dtype is not torch.float32 and dtype is not torch.float64) or not p.is_cpu \
                        or (not contiguous and not _dense(p)):
                    _check_param(p, where)
                if g.dtype is not dtype or g.shape != shape or g.is_sparse or not g.is_cpu:
                    _check_grad(p, g, where)
                if not (contiguous and g.is_contiguous()) and g.stride() != p.stride():
                    g = torch.empty_like(p).copy_(g)  # the parameter's layout, for this step
                    work.keep.append(g)
                state = self.state[p]
                row = [p.data_ptr(), g.data_ptr()]
                tensors: dict[str, torch.Tensor] = {}
                fresh = False
                for n, key in keys:
                    t = state.get(key)
                    if t is None:
                        work.allocate.append((state, key, p, group, n))
                        fresh = fresh or n == "momentum_buffer"
                        continue
                    if type(t) is not torch.Tensor or t.dtype is not dtype or \
                            t.shape != shape or not t.is_cpu:
                        _check_state(p, t, key, where)
                    if not (contiguous and t.is_contiguous()) and t.stride() != p.stride():
                        work.relayout.append((state, key, p))
                    tensors[n] = t
                if has_step:
                    t_step = state.get("step")
                    cached = step_cache.get(t_step) if type(t_step) is torch.Tensor else None
                    if cached is not None and cached[0] == t_step._version:
                        count = cached[1]
                    else:
                        count = _step_count(t_step, where)
                    if count > MAX_STEP:
                        raise ValueError(f"fastopt.torch: the step count of {where} is "
                                         f"{count} (expected at most 2**63 - 2: the kernels "
                                         f"count steps in int64)")
                    if type(t_step) is torch.Tensor:
                        new_cache[t_step] = (t_step._version, count)
                    work.steps.append((state, t_step, count))
                    t = count + 1
                else:
                    t = 1 if fresh else 2  # SGD: only "is this the buffer's first step" matters
                batch.add(p, g, row, tensors, t, state, keys)
            if batch.params:
                work.batches.append(batch)
        self._step_cache = new_cache
        if not work.batches:
            return None
        work.check_overlaps(self)
        return work

    def _commit(self, work: "_Work") -> None:
        """Allocate, then write; all or nothing before the writes start."""
        done: list[tuple[dict[str, Any], str, Any]] = []
        try:
            for state, key, p, group, n in work.allocate:
                done.append((state, key, state.get(key, _ABSENT)))
                t = self._init_state(p, group, n)
                if t.stride() != p.stride() and t.numel() > 1:
                    t = torch.empty_like(p).copy_(t)  # rows pair elements by memory order
                state[key] = t
            for state, key, p in work.relayout:
                done.append((state, key, state[key]))
                state[key] = torch.empty_like(p).copy_(state[key])
            for k, (state, t_step, count) in enumerate(work.steps):
                if type(t_step) is not torch.Tensor:
                    done.append((state, "step", state.get("step", _ABSENT)))
                    state["step"] = torch.tensor(float(count))  # torch's float32 scalar
                    work.steps[k] = (state, state["step"], count)
            work.fill_rows(ALGORITHMS[self.algorithm][1])
        except BaseException:
            for state, key, old in reversed(done):
                if old is _ABSENT:
                    state.pop(key, None)
                else:
                    state[key] = old
            raise
        with deferred_signals():
            for batch in work.batches:
                batch.run(self)
            work.advance_steps(self)


_ABSENT = object()


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
        return torch.full_like(p, _as_number("initial_accumulator_value",
                                             group["initial_accumulator_value"]))


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
