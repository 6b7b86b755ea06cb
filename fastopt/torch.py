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

import contextlib
import itertools
import math
import operator
import sys
from collections import defaultdict
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch

from . import _generic, _quant, _storage, _threads
from ._algorithms import active_states
from ._specs import PARAM, SPECS, Ema, no_warmup
from ._engine import check_options, numba_disabled, update
from ._layout import flat
from ._signals import deferred_signals
from .optim import (Q8, _ema_decay, functional_options, q8_options, state_dtype_name,
                    storage_options)

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Lion", "RAdam",
           "NAdam", "ASGD", "Rprop", "ADOPT", "AdEMAMix", "AdamWScheduleFree", "SGDScheduleFree"]



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
    # torch's Adam takes decoupled_weight_decay (then it is AdamW); a checkpoint may carry it.
    spec = SPECS[algorithm]
    for key, fixed, _ in spec.torch_fixed:
        value = group.get(key, fixed)
        if value != fixed:
            # The class whose fixed value this is (Adam <-> AdamW), named in the message.
            other = [(s.torch_class, words) for s in SPECS.values() for k, v, words in
                     s.torch_fixed if k == key and v == value]
            instead = (f"; use fastopt.torch.{other[0][0]} for {other[0][1]}" if other
                       else "")
            raise ValueError(f"fastopt.torch: {key}={value!r} in a parameter group of "
                             f"{spec.torch_class}{instead}")
    for h in spec.class_hypers:
        _generic.hyper(h, _as_number(h.name, group[h.name]))
    _ema_decay(group)
    _TorchStorage(group)
    numbers = {k: _as_number(k, v) for k, v in group.items()
               if k not in ("params", *_STORAGE_KEYS)}
    return check_options(algorithm, functional_options(algorithm, numbers))


MAX_STEP = 2**63 - 2  # the kernels count steps in int64, and a step writes step + 1
# A group's storage options (see _TorchStorage): not hyperparameters of the functional API.
_STORAGE_KEYS = ("state_dtype", "master_weights", "param_rounding", "seed", "state_format",
                 "min_8bit_size")


def _dense(t: torch.Tensor) -> bool:
    """Whether a float CPU tensor's elements fill one block of memory (any stride order)."""
    return flat(t.detach().numpy()) is not None


def _check_param(p: torch.Tensor, where: str) -> None:
    if not p.is_cpu:
        raise NotImplementedError(
            f"fastopt.torch: {where} is on {p.device}; this version of fastopt.torch runs on "
            f"CPU tensors only (for CUDA tensors call the functional API, e.g. "
            f"fastopt.adam_step, or use torch.optim)")
    if p.dtype not in _FLOATS:
        raise TypeError(f"fastopt.torch: {where} has dtype {p.dtype} (expected torch.float32, "
                        f"torch.float64, torch.bfloat16 or torch.float16)")
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


def _check_state(p: torch.Tensor, t: Any, key: str, where: str,
                 dtype: torch.dtype | None = None) -> None:
    what = f"state {key!r} of {where}"
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastopt.torch: {what} is a {type(t).__name__} (expected a tensor "
                        f"like its parameter)")
    if dtype is not None and t.dtype is not dtype:
        raise ValueError(f"fastopt.torch: {what} has dtype {t.dtype} (expected {dtype}, as "
                         f"the group's state_dtype and master_weights say)")
    if dtype is None and t.dtype is not p.dtype:
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


_NUMPY: dict[torch.dtype, Any] = {torch.float32: np.float32, torch.float64: np.float64}
_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_NARROW = (torch.bfloat16, torch.float16)


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU float tensor (bfloat16 as marked uint16 bits)."""
    if t.dtype is torch.bfloat16:
        return t.detach().view(torch.int16).numpy().view(_storage.BF16)
    a: np.ndarray = t.detach().numpy()
    return a


# An 8-bit state of a tensor: uint8 codes under the state's key, laid out as the parameter,
# and float32 absmax, one per block of 256 elements in memory order, under key + ABSMAX.
ABSMAX = "_absmax"


def _check_state_8bit(p: torch.Tensor, state: dict[str, Any], key: str,
                      where: str) -> list[tuple[str, torch.Tensor]]:
    """An 8-bit state of ``p`` checked (codes and absmax): returned as (key, tensor) pairs."""
    codes, absmax = state.get(key), state.get(key + ABSMAX)
    what = f"state {key!r} of {where}"
    if not isinstance(codes, torch.Tensor) or codes.dtype is not torch.uint8:
        got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"fastopt.torch: {what} is {got} (expected the torch.uint8 codes of "
                         f"an 8-bit state: the group's state_dtype is '8bit')")
    _check_state(p, codes, key, where, torch.uint8)
    if codes.stride() != p.stride() and p.numel() > 1:
        raise ValueError(f"fastopt.torch: {what} has strides {codes.stride()} (expected its "
                         f"parameter's {p.stride()}: an 8-bit state's blocks follow the "
                         f"memory order it was saved in)")
    blocks = _quant.n_blocks(p.numel())
    name = key + ABSMAX
    if not isinstance(absmax, torch.Tensor) or absmax.dtype is not torch.float32 or \
            absmax.shape != (blocks,) or not absmax.is_contiguous() or not absmax.is_cpu:
        got = (f"a {absmax.dtype} tensor of shape {list(absmax.shape)}"
               if isinstance(absmax, torch.Tensor) else type(absmax).__name__)
        raise ValueError(f"fastopt.torch: state {name!r} of {where} is {got} (expected a "
                         f"contiguous CPU torch.float32 tensor of shape [{blocks}]: one value "
                         f"per block of {_quant.BLOCK} elements)")
    return [(key, codes), (name, absmax)]


def _functional_state(s: dict[str, Any], key: str, name: str, spec: Any,
                      storage: "_TorchStorage | None") -> Any:
    """State ``key`` of one tensor as the functional API takes it: a NumPy view, or for an
    8-bit state a State8bit of views of its codes and absmax."""
    t = s[key]
    if t.dtype is torch.uint8 and storage is not None and storage.q8 is not None:
        return _quant.State8bit(t.detach().numpy(), s[key + ABSMAX].detach().numpy(),
                                signed=spec.state(name).kind == "signed", format=storage.q8)
    return _as_numpy(t)


class _TorchStorage:
    """A group's storage options (see fastopt.optim._Storage), for torch tensors."""

    __slots__ = ("state_dtype", "master", "rounding", "seed", "q8", "min_8bit_size")

    def __init__(self, group: dict[str, Any]) -> None:
        name, self.master, self.rounding, self.seed = storage_options(group)
        # 8-bit states (state_dtype="8bit"): their format, else None; smaller tensors than
        # min_8bit_size keep float32 states, as do parameter values and the weight EMA.
        fmt, self.min_8bit_size = q8_options(group)
        self.q8 = fmt if name == Q8 else None
        self.state_dtype = None if name is None else torch.float32 if name == Q8 \
            else getattr(torch, name)

    def plain(self, p: torch.Tensor) -> bool:
        """Whether ``p`` steps as float32/float64 with states of its own dtype."""
        return p.dtype is not torch.bfloat16 and p.dtype is not torch.float16 and \
            self.q8 is None and (self.state_dtype is None or self.state_dtype is p.dtype)

    def want(self, algorithm: str, name: str, p: torch.Tensor,
             wants: dict[str, Any]) -> Any:
        """What state ``name`` of ``p`` must be: a dtype, or Q8 (uint8 codes under its key
        and a float32 absmax under its key + "_absmax": see _state_8bit)."""
        want = wants.get(name, wants["state"])
        if want is Q8 and (name == "ema" or SPECS[algorithm].state(name).kind == "weights"):
            return torch.float32
        return want

    def dtypes(self, p: torch.Tensor, where: str) -> dict[str, Any]:
        """The dtype of each state of ``p``: "state" (the algorithm's and the EMA; Q8 for
        8-bit states, see want), and for a 16-bit ``p`` "master" or "compensation" when the
        group keeps them."""
        narrow = p.dtype in _NARROW
        if self.state_dtype is not None and p.dtype is torch.float64:
            raise TypeError(f"fastopt.torch: {where} is float64 and state_dtype is "
                            f"{self.state_dtype} (float64 parameters keep float64 states)")
        default = torch.float32 if narrow and self.master else p.dtype
        out: dict[str, Any] = {"state": default if self.state_dtype is None else
                               self.state_dtype}
        if self.q8 is not None and p.numel() >= self.min_8bit_size:
            out["state"] = Q8
        if narrow and self.master:
            out["master"] = torch.float32
        if narrow and self.rounding == "kahan":
            out["compensation"] = p.dtype
        return out

    def store(self, p: torch.Tensor, state: dict[str, Any], index: int,
              count: int) -> dict[str, Any]:
        """The functional API's storage keywords for a parameter (see _Storage.store); the
        stochastic rounding seed mixes in the parameter's index and step ``count``."""
        if p.dtype not in _NARROW:
            return {}
        if self.rounding == "kahan":
            return {"compensation": _as_numpy(state["compensation"])}
        out: dict[str, Any] = {"master": _as_numpy(state["master"])} if self.master else {}
        if self.rounding == "stochastic":
            out.update(rounding="stochastic", seed=(self.seed + index * 0x9E3779B97F4A7C15
                                                    + count * 0xD1B54A32D192ED03) % 2**64)
        return out
_TORCH: dict[Any, torch.dtype] = {v: k for k, v in _NUMPY.items()}
_STRIDED = torch.strided


def _bad_steps(values: np.ndarray) -> int:
    """The position of the first step count (read as float64) that is not a whole number
    from 0 to MAX_STEP, or -1."""
    # Below 2.0**63 as floats: the largest such float, 2**63 - 1024, fits MAX_STEP.
    ok = np.isfinite(values) & (values >= 0) & (values == np.floor(values)) & (values < 2.0**63)
    return -1 if ok.all() else int(np.flatnonzero(~ok)[0])


def _step_error(gi: int, k: int, value: float) -> ValueError:
    return ValueError(f"fastopt.torch: the step count of param_groups[{gi}]['params'][{k}] is "
                      f"{value!r} (expected a whole number from 0 to 2**63 - 2: the kernels "
                      f"count steps in int64)")


class _Batch:
    """One parameter group's tensors to update, checked, with their launch table.

    ``rows[i]`` is ``[param, grad, *states in the algorithm's order]`` as addresses; a state
    still to be allocated stands as the parameter's address until ``_commit`` fills it in.
    """

    def __init__(self, opts: dict[str, Any], multi: bool, keys: list[tuple[str, str]],
                 ema_decay: float | None = None) -> None:
        self.opts, self.multi, self.keys = opts, multi, keys
        # The weight EMA's decay (None: none), and per tensor whether this step creates it.
        self.ema_decay = ema_decay
        self.ema_first: list[bool] = []
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.states: list[dict[str, Any]] = []
        self.steps: list[int] = []
        self.rows: Any = []  # list of lists, or an int64 array (see _FastGroup)
        self.sizes: list[int] = []  # elements per tensor
        self.dtype: Any = None
        self.mixed = False  # more than one dtype
        # Scalar states (NAdam's mu_product, ...): per tensor, the values the rule uses, and
        # the old values as 0-d arrays (the per-tensor path hands them to the functional API).
        self.scalars: np.ndarray | None = None
        self.scalars_old: list[dict[str, np.ndarray]] = []
        # Groups with 16-bit tensors (see _Optimizer._plan_stored): their storage options
        # and each tensor's index among all parameters (its stochastic rounding stream).
        self.storage: _TorchStorage | None = None
        self.indices: list[int] = []
        self.counts: list[int] = []  # each tensor's step count before this step

    def written(self) -> list[torch.Tensor]:
        out = [*self.params, *[s[key] for s in self.states for _, key in self.keys]]
        if self.storage is not None:
            out += [s[k] for s in self.states for k in ("master", "compensation") if k in s]
            if self.storage.q8 is not None:
                out += [s[key + ABSMAX] for s in self.states for _, key in self.keys
                        if s[key].dtype is torch.uint8]
        return out

    def run(self, opt: "_Optimizer") -> None:
        spec = SPECS[opt.algorithm]
        if self.multi and opt.backend != "numpy" and not numba_disabled():
            from . import _numba_backend

            scalars = self.scalars
            ema = self.ema_decay is not None
            if self.ema_decay is not None:  # its scalars after the scalar states, per tensor
                rows = np.array([Ema.of(None, self.ema_decay, first, _NUMPY[p.dtype]).scalars
                                 for p, first in zip(self.params, self.ema_first)], np.float64)
                scalars = rows if scalars is None else np.hstack([scalars, rows])
            if not self.mixed:
                _numba_backend.multi_step_rows(
                    spec, self.opts, np.dtype(_NUMPY[self.dtype]), tuple(self.sizes),
                    self.rows, self.steps, 1.0, scalars, ema)
                return
            for dtype in {p.dtype for p in self.params}:
                idx = [i for i, p in enumerate(self.params) if p.dtype is dtype]
                _numba_backend.multi_step_rows(
                    spec, self.opts, np.dtype(_NUMPY[dtype]), tuple(self.sizes[i] for i in idx),
                    [self.rows[i] for i in idx], [self.steps[i] for i in idx], 1.0,
                    None if scalars is None else scalars[idx], ema)
            return
        torch_keys = dict(self.keys)
        stores = None if self.storage is None else [
            self.storage.store(p, s, i, c) for p, s, i, c in zip(
                self.params, self.states, self.indices, self.counts)]
        update(opt.algorithm, self.opts, [_as_numpy(p) for p in self.params],
               [_as_numpy(g) for g in self.grads],
               [{**{n: _functional_state(s, torch_keys[n], n, spec, self.storage)
                    for n in torch_keys},
                 **(self.scalars_old[r] if self.scalars_old else {})}
                for r, s in enumerate(self.states)], self.steps, backend=opt.backend,
               ema_decay=self.ema_decay, ema_first=self.ema_first, stores=stores)


_GRAD = operator.attrgetter("grad")
_DTYPE = operator.attrgetter("dtype")
_SHAPE = operator.attrgetter("shape")
_LAYOUT = operator.attrgetter("layout")
_IS_CPU = operator.attrgetter("is_cpu")
_PTR = torch.Tensor.data_ptr
_CONTIGUOUS = torch.Tensor.is_contiguous
_NUMEL = torch.Tensor.numel


def _all_are(values: Iterable[Any], obj: Any) -> bool:
    return all(map(operator.is_, values, itertools.repeat(obj)))


class _FastGroup:
    """A parameter group whose every tensor a step checked completely (each one stepped,
    contiguous, one dtype, all states present, float step counts in memory): what the next
    step must find again -- the same tensors, addresses, dtypes, shapes and layouts -- to
    plan the group in one C-level pass per attribute instead of a Python loop per tensor.
    Anything else found makes the step plan the group tensor by tensor again."""

    __slots__ = ("params", "dicts", "keys", "dtype", "shapes", "addresses", "states",
                 "step_tensors", "step_dtype", "step_addresses", "ones", "sizes", "nbytes",
                 "rows", "spans", "written", "owners", "entries", "no_ema")

    def __init__(self, gi: int, batch: "_Batch", keys: Any, steps: list[tuple[Any, ...]],
                 entries: dict[int, Any]) -> None:
        self.params = list(batch.params)
        self.dicts = list(batch.states)
        self.keys = keys
        self.dtype = batch.dtype
        self.shapes = [p.shape for p in self.params]
        self.addresses = [p.data_ptr() for p in self.params]
        self.states = [(key, [d[key] for d in self.dicts], [d[key].data_ptr() for d in self.dicts])
                       for _, key in batch.keys]
        self.step_tensors = [entry[1] for entry in steps]
        self.step_dtype = self.step_tensors[0].dtype
        self.step_addresses = [entry[3] for entry in steps]
        self.ones = [1] * len(self.params)
        self.sizes = tuple(batch.sizes)
        self.rows = np.array(batch.rows, np.int64)  # the grad column is filled at each step
        # Byte ranges for the overlap check: per tensor its param, grad, then states in
        # ``batch.keys`` order (as ``owners`` says); and the written ones alone.
        self.spans = np.array([[a, 0, *(s[2][i] for s in self.states)]
                               for i, a in enumerate(self.addresses)], np.int64)
        self.nbytes = np.array([p.nbytes for p in self.params], np.int64)
        written = np.delete(self.spans, 1, axis=1)
        self.written = (written.ravel(), (written + self.nbytes[:, None]).ravel())
        held = tuple(key for _, key in batch.keys)
        self.owners = [(gi, k, held) for k in range(len(self.params))]
        self.entries = entries
        self.no_ema = [False] * len(self.params)

    @staticmethod
    def eligible(batch: "_Batch", steps: list[tuple[Any, ...]], seen: dict[int, Any]) -> bool:
        """Whether a group's batch, just planned tensor by tensor, can be kept."""
        if not batch.params or batch.mixed or len(steps) != len(batch.params):
            return False
        step_dtype = steps[0][1].dtype if isinstance(steps[0][1], torch.Tensor) else None
        for p, entry in zip(batch.params, steps):
            e = seen.get(id(p))
            if e is None or e[0] is not p or not e[5] or not e[8] or not entry[3] or \
                    entry[1].dtype is not step_dtype:
                return False
        return all(map(_CONTIGUOUS, batch.grads))

    def plan(self, group: dict[str, Any], keys: Any, batch: "_Batch", work: "_Work",
             seen: dict[int, Any]) -> bool:
        """Fill ``batch`` (and ``work``) for this step if the group is as kept; False (and
        nothing filled) otherwise. The caller has checked that ``state`` maps every
        parameter to the same dict as when this was kept."""
        params = group["params"]
        if keys is not self.keys or len(params) != len(self.params) or \
                not all(map(operator.is_, params, self.params)):
            return False
        grads = list(map(_GRAD, params))
        if not all(map(operator.is_not, grads, itertools.repeat(None))):
            return False
        dtype, shapes = self.dtype, self.shapes
        if not (_all_are(map(_DTYPE, params), dtype) and all(map(_IS_CPU, params))
                and all(map(_CONTIGUOUS, params)) and list(map(_SHAPE, params)) == shapes
                and list(map(_PTR, params)) == self.addresses):
            return False
        if not (_all_are(map(_DTYPE, grads), dtype) and list(map(_SHAPE, grads)) == shapes
                and _all_are(map(_LAYOUT, grads), _STRIDED) and all(map(_IS_CPU, grads))
                and all(map(_CONTIGUOUS, grads))):
            return False
        get, repeat = dict.get, itertools.repeat
        for key, tensors, addresses in self.states:
            now: list[Any] = list(map(get, self.dicts, repeat(key)))
            if not (all(map(operator.is_, now, tensors)) and list(map(_PTR, now)) == addresses
                    and _all_are(map(_DTYPE, now), dtype) and list(map(_SHAPE, now)) == shapes
                    and all(map(_CONTIGUOUS, now))):
                return False
        steps: list[Any] = list(map(get, self.dicts, repeat("step")))
        if not (all(map(operator.is_, steps, self.step_tensors))
                and _all_are(map(_DTYPE, steps), self.step_dtype) and all(map(_IS_CPU, steps))
                and list(map(_NUMEL, steps)) == self.ones
                and list(map(_PTR, steps)) == self.step_addresses):
            return False
        grad_addresses = np.array(list(map(_PTR, grads)), np.int64)
        rows = self.rows.copy()
        rows[:, 1] = grad_addresses
        work.fast_steps.append((batch, self, grad_addresses))
        batch.params, batch.grads, batch.states = list(params), grads, self.dicts
        batch.rows, batch.sizes, batch.dtype = rows, list(self.sizes), dtype
        batch.ema_first = self.no_ema
        seen.update(self.entries)
        return True


def _describe_tensor(group: int, index: int, what: str | None) -> str:
    param = f"param_groups[{group}]['params'][{index}]"
    if what is None:
        return param
    return f"the gradient of {param}" if what == "grad" else f"state {what!r} of {param}"


class _Work:
    """A step's plan: the batches, the byte ranges to check for overlap, and what to
    allocate, re-lay out and count."""

    def __init__(self) -> None:
        self.batches: list[_Batch] = []
        # (state dict, key, param, group, name, batch, row, column): states to create.
        self.allocate: list[tuple[Any, ...]] = []
        # (state dict, key, param, batch, row, column): states to copy to the param's layout.
        self.relayout: list[tuple[Any, ...]] = []
        # (state dict, step tensor or None, count (-1: still to read), address of a float
        # scalar step tensor or 0, group, index, batch, position in the batch's steps).
        self.steps: list[tuple[Any, ...]] = []
        self.keep: list[torch.Tensor] = []  # temporaries that must live through the step
        self.lo: list[int] = []  # byte ranges of every tensor read or written, for overlaps
        self.size: list[int] = []
        # Per stepped parameter with bytes: (group, index, its state keys in ``lo`` order);
        # its entries in ``lo`` are the parameter, the gradient, then those states.
        self.owners: list[tuple[int, int, tuple[str, ...]]] = []
        self.checked: dict[int, Any] = {}  # the validated parameters, for the next step
        # Groups planned from a _FastGroup: their step counts are read and advanced per group.
        self.fast_steps: list[tuple[_Batch, _FastGroup, np.ndarray]] = []  # + grad addresses
        # The sorted byte ranges written by the kept groups of the last step (see
        # check_overlaps): (groups, starts, ends).
        self.written: tuple[tuple[_FastGroup, ...], np.ndarray, np.ndarray] | None = None
        self.fast: dict[int, _FastGroup] = {}  # group index -> kept for the next step
        # Scalar states: (state dict, key, initial value, dtype) to create; (state, key, new
        # value) to write once the kernels have run.
        self.scalar_allocate: list[tuple[dict[str, Any], str, float, torch.dtype]] = []
        self.scalar_writes: list[tuple[dict[str, Any], str, float]] = []

    def scalar_states(self, spec: Any) -> None:
        """Check every stepped tensor's scalar states (see _specs.Scalar) and compute their
        new values; the step counts must have been read."""
        scalars = spec.scalar_states
        default = _scalar_dtype()
        for batch in self.batches:
            used = np.empty((len(batch.params), len(scalars)), np.float64)
            for r, (state, t) in enumerate(zip(batch.states, batch.steps)):
                old_arrays = {}
                olds, kinds = [], []
                for c, sc in enumerate(scalars):
                    x = state.get(sc.name)
                    if x is None:
                        dtype = _TORCH[sc.dtype] if sc.dtype else default
                        old_value = float(_NUMPY[dtype](sc.initial(batch.opts)))
                        self.scalar_allocate.append((state, sc.name, old_value, dtype))
                    else:
                        if type(x) is not torch.Tensor or x.numel() != 1 or \
                                x.dtype not in _NUMPY or not x.is_cpu or (
                                    sc.dtype and x.dtype is not _TORCH[sc.dtype]):
                            what = (f"a tensor of shape {list(x.shape)}, {x.dtype} on "
                                    f"{x.device}" if isinstance(x, torch.Tensor)
                                    else type(x).__name__)
                            want = (f"{_TORCH[sc.dtype]}".replace("torch.", "")
                                    if sc.dtype else "float32 or float64")
                            raise ValueError(f"fastopt.torch: state {sc.name!r} of a parameter "
                                             f"is {what} (expected a CPU {want} tensor of one "
                                             f"element)")
                        dtype = x.dtype
                        old_value = float(x.item())
                        if not (math.isfinite(old_value) and sc.lo <= old_value <= sc.hi):
                            raise ValueError(f"fastopt.torch: state {sc.name!r} of a "
                                             f"parameter is {old_value!r} (expected a finite value "
                                             f"from {sc.lo} to {sc.hi})")
                    kind = _NUMPY[dtype]
                    olds.append(old_value)
                    kinds.append(kind)
                    old_arrays[sc.name] = np.array(old_value, kind)
                used[r], new = spec.advance_scalars(olds, t, batch.opts, kinds)
                self.scalar_writes += [(state, sc.name, v) for sc, v in zip(scalars, new)]
                batch.scalars_old.append(old_arrays)
            batch.scalars = used

    def check_overlaps(self, last: tuple[tuple[_FastGroup, ...], np.ndarray, np.ndarray]
                       | None) -> None:
        """No tensor a step writes (parameters, states) may share memory with another tensor
        of the step (a state that is a view of its parameter, a gradient that is another
        parameter, ...). Gradients are only read: two parameters may share one gradient.

        ``last``: the written ranges of the last step's kept groups, sorted. When every group
        of this step is one of exactly those, only the gradients are compared with them."""
        if self.fast_steps and not self.owners:
            groups = tuple(f for _, f, _ in self.fast_steps)
            if last is not None and len(last[0]) == len(groups) and all(
                    map(operator.is_, last[0], groups)):
                self.written = last
            else:
                lo = np.concatenate([f.written[0] for f in groups])
                hi = np.concatenate([f.written[1] for f in groups])
                order = np.argsort(lo, kind="stable")
                lo, hi = lo[order], hi[order]
                if not (lo[1:] < hi[:-1]).any():
                    self.written = (groups, lo, hi)
            if self.written is not None:
                _, lo, hi = self.written
                g_lo = np.concatenate([a for _, _, a in self.fast_steps])
                g_hi = g_lo + np.concatenate([f.nbytes for f in groups])
                k = np.searchsorted(lo, g_lo, side="right")
                below = (k > 0) & (hi[np.maximum(k - 1, 0)] > g_lo)
                above = (k < lo.size) & (lo[np.minimum(k, lo.size - 1)] < g_hi)
                if not (below | above).any():
                    return
            self.written = None
        for _, f, grad_addresses in self.fast_steps:  # all tensors, for the general check
            spans = f.spans.copy()
            spans[:, 1] = grad_addresses
            self.lo += spans.ravel().tolist()
            self.size += np.repeat(f.nbytes, spans.shape[1]).tolist()
            self.owners += f.owners
        if len(self.lo) < 2:
            return
        starts = np.array(self.lo, np.int64)
        ends = starts + np.array(self.size, np.int64)
        per_owner = np.array([2 + len(keys) for _, _, keys in self.owners], np.int64)
        is_grad = np.zeros(starts.size, bool)
        is_grad[np.cumsum(per_owner) - per_owner + 1] = True
        written = np.flatnonzero(~is_grad)
        order = written[np.argsort(starts[written], kind="stable")]
        clash = np.flatnonzero(starts[order][1:] < ends[order][:-1])
        if clash.size:
            self._overlap(int(order[clash[0] + 1]), int(order[clash[0]]))
        grads = np.flatnonzero(is_grad)
        k = np.searchsorted(starts[order], starts[grads], side="right")
        below = (k > 0) & (ends[order][np.maximum(k - 1, 0)] > starts[grads])
        above = (k < order.size) & (starts[order][np.minimum(k, order.size - 1)] <
                                    ends[grads])
        hit = np.flatnonzero(below | above)
        if hit.size:
            j = int(k[hit[0]])
            other = order[j - 1] if below[hit[0]] else order[j]
            self._overlap(int(grads[hit[0]]), int(other))

    def _overlap(self, a: int, b: int) -> None:
        where = [(gi, k, what) for gi, k, keys in self.owners for what in (None, "grad", *keys)]
        raise ValueError(f"fastopt.torch: {_describe_tensor(*where[a])} overlaps "
                         f"{_describe_tensor(*where[b])} in memory (expected separate tensors)")

    def read_steps(self) -> None:
        """Read every float scalar step tensor in one call per dtype, and check the counts."""
        from . import _numba_backend

        for batch, fast, _ in self.fast_steps:
            values = _numba_backend.read_scalars(np.dtype(_NUMPY[fast.step_dtype]),
                                                 fast.step_addresses)
            bad = _bad_steps(values)
            if bad >= 0:
                gi = fast.owners[bad][0]
                raise _step_error(gi, bad, values[bad])
            batch.steps = (values.astype(np.int64) + 1).tolist()
        pending: dict[torch.dtype, list[int]] = {}
        for j, entry in enumerate(self.steps):
            if entry[3]:
                pending.setdefault(entry[1].dtype, []).append(j)
        for dtype, js in pending.items():
            values = _numba_backend.read_scalars(np.dtype(_NUMPY[dtype]),
                                                 [self.steps[j][3] for j in js])
            bad = _bad_steps(values)
            if bad >= 0:
                _, _, _, _, gi, k, _, _ = self.steps[js[bad]]
                raise _step_error(gi, k, values[bad])
            for j, v in zip(js, values.tolist()):
                state, t, _, address, gi, k, batch, pos = self.steps[j]
                count = int(v)
                self.steps[j] = (state, t, count, address, gi, k, batch, pos)
                batch.steps[pos] = count + 1

    def advance_steps(self) -> None:
        written: list[torch.Tensor] = []
        for b in self.batches:
            written += b.written()
        if self.fast_steps:
            from . import _numba_backend

            for _, group, _ in self.fast_steps:
                _numba_backend.add_to_scalars(np.dtype(_NUMPY[group.step_dtype]),
                                              group.step_addresses, 1.0)
                written += group.step_tensors
        fast: dict[torch.dtype, list[int]] = {}
        for entry in self.steps:
            t, address = entry[1], entry[3]
            if address:
                fast.setdefault(t.dtype, []).append(address)
                written.append(t)
            else:
                t += 1
        if fast:
            from . import _numba_backend

            for dtype, addresses in fast.items():
                _numba_backend.add_to_scalars(np.dtype(_NUMPY[dtype]), addresses, 1.0)
        for state, key, value in self.scalar_writes:
            state[key].fill_(value)  # an in-place op: bumps its version
        try:
            torch.autograd.graph.increment_version(written)
        except RuntimeError:  # inference tensors (made under torch.inference_mode) have none
            torch.autograd.graph.increment_version(
                [t for t in written if not t.is_inference()])


class _Optimizer(torch.optim.Optimizer):
    algorithm: ClassVar[str]

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], backend: str,
                 multi_tensor: bool, foreach: bool | None, fused: bool | None,
                 capturable: bool, differentiable: bool,
                 ema_decay: float | None = None, state_dtype: Any = None,
                 master_weights: bool = False, param_rounding: str = "nearest",
                 seed: int = 0, state_format: str = "dynamic",
                 min_8bit_size: int = 4096) -> None:
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"Invalid backend: {backend!r} (expected 'auto', 'numba' or "
                             f"'numpy')")
        if foreach and not multi_tensor:
            raise ValueError("foreach=True asks for one multi-tensor launch, multi_tensor=False "
                             "for one call per tensor: pass one of them")
        self.backend = backend
        self.multi_tensor = bool(multi_tensor)
        # id(param) -> what a step validated about it and its states (see _plan_step).
        self._checked: dict[int, Any] = {}
        self._keys_interned: dict[Any, Any] = {}
        # group index -> _FastGroup, valid with the state mapping of _state_snapshot.
        self._fast: dict[int, _FastGroup] = {}
        self._state_snapshot: tuple[Any, list[Any], list[Any]] | None = None
        self._written: Any = None  # see _Work.check_overlaps
        defaults = dict(defaults, foreach=foreach, fused=fused, capturable=capturable,
                        differentiable=differentiable, ema_decay=ema_decay, ema_swapped=False,
                        state_dtype=state_dtype_name(state_dtype), master_weights=master_weights,
                        param_rounding=param_rounding, seed=seed, state_format=state_format,
                        min_8bit_size=min_8bit_size)
        _group_options(self.algorithm, defaults)
        super().__init__(params, defaults)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # One of several ranks (torchrun, ZeRO, FSDP2): its share of the machine's cores
            # for Numba, from LOCAL_WORLD_SIZE & co., unless the user chose a thread count.
            _threads.configure()

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim pickles (and deep-copies) defaults, state and param_groups only.
        state: dict[str, Any] = super().__getstate__()
        return {**state, "backend": self.backend, "multi_tensor": self.multi_tensor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # torch's load_state_dict also calls __setstate__, with state and groups only.
        self.backend = state.get("backend", getattr(self, "backend", "auto"))
        self.multi_tensor = state.get("multi_tensor", getattr(self, "multi_tensor", True))
        self._checked = {}  # caches start empty: nothing of the pickled process is trusted
        self._keys_interned = {}
        self._fast = {}
        self._state_snapshot = None
        self._written = None
        # A checkpoint from an older torch or another implementation (lion-pytorch has no
        # maximize) may lack keys: they take this optimizer's defaults, as torch.optim does.
        for group in self.param_groups:
            for key, value in getattr(self, "defaults", {}).items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, except that scalar states kept in their own dtype
        (Schedule-Free's float64 ``lr_max`` and ``weight_sum``) keep it: torch casts every
        floating-point state to its parameter's dtype."""
        for group in state_dict.get("param_groups", []) if isinstance(state_dict, dict) else []:
            if isinstance(group, dict):
                storage_options(group)  # before anything is loaded
        super().load_state_dict(state_dict)
        own = [sc.name for sc in SPECS[self.algorithm].scalar_states if sc.dtype is not None]
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        owners = [(p, g) for g in self.param_groups for p in g["params"]]
        for i, (p, group) in zip(ids, owners):
            if p not in self.state:
                continue
            for name in own:
                value = saved.get(i, {}).get(name)
                if isinstance(value, torch.Tensor):
                    self.state[p][name] = value.detach().to("cpu", _TORCH[np.float64],
                                                             copy=True)
            if _TorchStorage(group).plain(p):
                continue
            # 16-bit parameters or states, 8-bit states: every state keeps the dtype it was
            # saved in (the float32 master weights of a bfloat16 parameter, bfloat16 moments
            # of a float32 one, uint8 codes and float32 absmax); the next step checks it
            # against the group's options.
            for key, value in saved.get(i, {}).items():
                if key != "step" and isinstance(value, torch.Tensor) and key not in own:
                    self.state[p][key] = value.detach().to(p.device, value.dtype, copy=True)

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], name: str
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """A new state of ``p``: a tensor, or for an 8-bit state its (codes, absmax)."""
        storage = _TorchStorage(group)
        wants = storage.dtypes(p, "a parameter")
        if name == "master":  # the parameter's value, exactly, in float32
            return p.detach().to(torch.float32, memory_format=torch.preserve_format,
                                 copy=True)
        if name == "compensation":
            return torch.zeros_like(p)
        dtype = storage.want(self.algorithm, name, p, wants)
        init = PARAM if name == "ema" else SPECS[self.algorithm].state(name).init
        if init == PARAM:  # the weight EMA starts as the parameter (AveragedModel's copy)
            return p.detach().to(dtype, memory_format=torch.preserve_format, copy=True)
        if isinstance(init, str):  # a group key holding the value
            init = float(_as_number(init, group[init]))
        if dtype is Q8 and storage.q8 is not None:  # the initial value's codes, laid out
            values = torch.full_like(p, init, dtype=torch.float32)  # as the parameter
            q = _quant.State8bit.quantize(values.numpy(), format=storage.q8,
                                          signed=SPECS[self.algorithm].state(name).kind
                                          == "signed")
            return torch.from_numpy(q.codes), torch.from_numpy(q.absmax)
        return torch.full_like(p, init, dtype=dtype)  # the parameter's memory layout

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
        if any(g.get("ema_swapped") for g in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() with the EMA weights swapped in: "
                               f"call .swap_ema() again (or leave the ema_weights() block) "
                               f"before training")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._local_shards():
            work = self._plan_step()
            if work is None:
                return loss
            self._commit(work)
        return loss

    @contextlib.contextmanager
    def _local_shards(self) -> Iterator[None]:
        """For the call: each DTensor parameter (FSDP2's ``fully_shard``) replaced in
        ``param_groups`` and ``state`` by its local shard (a plain tensor sharing its memory),
        with its gradient's and its states' local shards; afterwards the DTensors are back,
        and a state the call created becomes a DTensor laid out as its parameter (as
        ``torch.zeros_like`` of the parameter would be), so torch.distributed.checkpoint can
        reshard it. Plain tensors pass through: without torch.distributed.tensor imported,
        this costs one dict lookup."""
        dtensor = _dtensor_class()
        if dtensor is None or not any(any(map(isinstance, g["params"],
                                              itertools.repeat(dtensor)))
                                      for g in self.param_groups):
            yield
            return
        real_state, lists = self.state, [g["params"] for g in self.param_groups]
        proxy = self.__dict__.setdefault("_proxy_state", defaultdict(dict))
        locals_: dict[int, tuple[Any, dict[str, Any]]] = self.__dict__.setdefault(
            "_proxy_dicts", {})
        keep = set(SPECS[self.algorithm].scalar_names) | {"step"}
        proxy.clear()
        shards: list[tuple[Any, torch.Tensor, dict[str, Any], dict[str, Any], Any]] = []
        try:
            for gi, group in enumerate(self.param_groups):
                shard_list = []
                for k, p in enumerate(group["params"]):
                    if not isinstance(p, dtensor):
                        shard_list.append(p)
                        proxy[p] = real_state[p]
                        continue
                    where = f"param_groups[{gi}]['params'][{k}]"
                    if _TorchStorage(group).q8 is not None:
                        raise NotImplementedError(
                            f"fastopt.torch: {where} is a DTensor and its group asks for 8-bit "
                            f"states (their per-block scales follow the local shard: not "
                            f"supported on DTensors yet; use float32 or bfloat16 states)")
                    local = p._local_tensor
                    g = p.grad
                    if g is not None and (not isinstance(g, dtensor)
                                          or g.placements != p.placements
                                          or g.device_mesh != p.device_mesh):
                        raise ValueError(f"fastopt.torch: the gradient of {where} is not a "
                                         f"DTensor sharded as its parameter "
                                         f"({p.placements} on {p.device_mesh})")
                    s = real_state[p]
                    entry = locals_.get(id(local))
                    ls = entry[1] if entry is not None and entry[0] is local else {}
                    locals_[id(local)] = (local, ls)
                    ls.clear()
                    for key, v in s.items():
                        if isinstance(v, dtensor):
                            if v.placements != p.placements or v.device_mesh != p.device_mesh:
                                raise ValueError(
                                    f"fastopt.torch: state {key!r} of {where} is a DTensor "
                                    f"with placements {v.placements} on {v.device_mesh} "
                                    f"(expected its parameter's {p.placements} on "
                                    f"{p.device_mesh})")
                            v = v._local_tensor
                        ls[key] = v
                    shards.append((p, local, s, ls, local.grad))
                    local.grad = None if g is None else g._local_tensor
                    proxy[local] = ls
                    shard_list.append(local)
                group["params"] = shard_list
            self.state = proxy
            yield
        finally:
            self.state = real_state
            for group, params in zip(self.param_groups, lists):
                group["params"] = params
            for p, local, s, ls, old_grad in shards:
                local.grad = old_grad
                for key in [key for key in s if key not in ls]:
                    del s[key]
                for key, v in ls.items():
                    old = s.get(key)
                    if isinstance(old, dtensor) and old._local_tensor is v:
                        continue
                    if key not in keep and isinstance(v, torch.Tensor):
                        v = dtensor.from_local(v, p.device_mesh, p.placements, run_check=False,
                                               shape=p.shape, stride=p.stride())
                    s[key] = v

    def _plan_step(self) -> "_Work | None":
        spec = SPECS[self.algorithm]
        names = spec.state_names
        fresh_names = {s.name for s in spec.states if s.fresh}
        has_step = spec.torch_step
        fast_steps = not numba_disabled()
        work = _Work()
        lo, size, owners = work.lo, work.size, work.owners
        known = self._checked
        seen: dict[int, Any] = {}
        state_of = self.state
        f32, f64 = torch.float32, torch.float64
        # Groups kept from the last step (see _FastGroup) serve only while ``state`` maps
        # every parameter to the same dict as then (compared by identity, in C).
        snapshot = self._state_snapshot
        fast_groups = self._fast if snapshot is not None and snapshot[0] is state_of and \
            len(state_of) == len(snapshot[1]) and \
            all(map(operator.is_, state_of, snapshot[1])) and \
            all(map(operator.is_, state_of.values(), snapshot[2])) else {}
        keep_groups = (has_step and fast_steps and self.backend != "numpy"
                       and not spec.scalar_states)
        for gi, group in enumerate(self.param_groups):
            opts = _group_options(self.algorithm, group)
            active = active_states(self.algorithm, opts)
            keys = [(n, spec.state(n).torch_name) for n in active]
            column = {n: 2 + names.index(n) for n in active}
            decay = _ema_decay(group)
            if decay is not None:  # the weight EMA: one more state, in the last column
                keys.append(("ema", "ema"))
                column["ema"] = 2 + len(names)
            slots = len(names) + (decay is not None)
            keys_t = self._keys_for(tuple(keys))
            batch = _Batch(opts, group.get("foreach") is not False and self.multi_tensor, keys,
                           decay)
            storage = _TorchStorage(group)
            fast = fast_groups.get(gi)
            if fast is not None and batch.multi and storage.q8 is None and (
                    storage.state_dtype is None or storage.state_dtype is fast.dtype) and \
                    fast.plan(group, keys_t, batch, work, seen):
                work.fast[gi] = fast
                work.batches.append(batch)
                continue
            dtypes = set(map(_DTYPE, group["params"]))
            if not dtypes <= {f32, f64} or storage.q8 is not None or (
                    storage.state_dtype is not None and dtypes != {storage.state_dtype}):
                # 16-bit parameters or states, 8-bit states: checked and stepped tensor by
                # tensor
                self._plan_stored(gi, group, keys, storage, batch, work)
                if batch.params:
                    work.batches.append(batch)
                continue
            marks = (len(work.steps), len(work.allocate), len(work.relayout), len(work.keep))
            rows = batch.rows
            for k, p in enumerate(group["params"]):
                g = p.grad
                if g is None:
                    continue
                dtype = p.dtype
                contiguous = p.is_contiguous()
                if (dtype is not f32 and dtype is not f64) or not p.is_cpu or (
                        not contiguous and not _dense(p)):
                    _check_param(p, f"param_groups[{gi}]['params'][{k}]")
                shape = p.shape
                if g.dtype is not dtype or g.shape != shape or g.layout is not _STRIDED or \
                        not g.is_cpu:
                    _check_grad(p, g, f"param_groups[{gi}]['params'][{k}]")
                if not (contiguous and g.is_contiguous()) and g.stride() != p.stride():
                    g = torch.empty_like(p).copy_(g)  # the parameter's layout, for this step
                    work.keep.append(g)
                state = state_of[p]
                pa = p.data_ptr()
                ga = g.data_ptr()
                r = len(rows)
                fresh = False
                ema_fresh = False
                # The states validated at an earlier step, if nothing about them changed: the
                # same state dict, tensors and storage, the parameter's storage, shape and
                # layout (a cache checked by identity and address, never trusted blindly).
                e = known.get(id(p))
                if e is not None and (e[0] is not p or e[1] is not state or e[2] != pa or
                                      e[3] != shape or e[4] is not keys_t or
                                      e[5] is not contiguous or e[13] is not dtype or
                                      (not contiguous and p.stride() != e[14])):
                    e = None
                if e is not None:
                    # `.data =` can give a state tensor another shape, dtype or layout in place.
                    for key, t, a, c in e[6]:
                        if state.get(key) is not t or t.data_ptr() != a or \
                                t.is_contiguous() is not c or t.dtype is not dtype or \
                                t.shape != shape or (not c and t.stride() != e[14]):
                            e = None
                            break
                if e is not None:
                    row = [pa, ga, *e[7]]
                    numel = e[12]
                    if e[8]:
                        lo += (pa, ga)
                        lo += e[9]
                        size += e[10]
                        owners.append((gi, k, e[11]))
                    seen[id(p)] = e
                else:
                    nbytes = p.nbytes
                    numel = p.numel()
                    row = [pa, ga, *([pa] * slots)]
                    checked = []
                    for n, key in keys:
                        t = state.get(key)
                        if t is None:
                            work.allocate.append((state, key, p, group, n, batch, r,
                                                  column[n]))
                            fresh = fresh or n in fresh_names
                            ema_fresh = ema_fresh or n == "ema"
                            continue
                        if type(t) is not torch.Tensor or t.dtype is not dtype or \
                                t.shape != shape or not t.is_cpu or t.layout is not _STRIDED:
                            _check_state(p, t, key, f"param_groups[{gi}]['params'][{k}]")
                        if not (contiguous and t.is_contiguous()) and t.stride() != p.stride():
                            work.relayout.append((state, key, p, batch, r, column[n]))
                        row[column[n]] = t.data_ptr()
                        checked.append((key, t, row[column[n]], t.is_contiguous()))
                    addresses = tuple(a for _, _, a, _ in checked)
                    held = tuple(key for key, _, _, _ in checked)
                    if nbytes:
                        lo += (pa, ga)
                        lo += addresses
                        size += (nbytes,) * (2 + len(checked))
                        owners.append((gi, k, held))
                    if len(checked) == len(keys) and not work.relayout:
                        seen[id(p)] = (p, state, pa, shape, keys_t, contiguous, tuple(checked),
                                       tuple(row[2:]), nbytes, addresses,
                                       (nbytes,) * (2 + len(checked)), held, numel, dtype,
                                       None if contiguous else p.stride())
                if has_step:
                    # Step counts are read from memory at every step (one call for all of
                    # them below): a cache could miss a change made through `.data`.
                    t_step = state.get("step")
                    if fast_steps and type(t_step) is torch.Tensor and \
                            t_step.dtype in _NUMPY and t_step.is_cpu and t_step.numel() == 1:
                        address = t_step.data_ptr()
                        count = -1  # read below
                    else:
                        address = 0
                        count = _step_count(t_step, f"param_groups[{gi}]['params'][{k}]")
                        if count > MAX_STEP:
                            raise ValueError(f"fastopt.torch: the step count of "
                                             f"param_groups[{gi}]['params'][{k}] is {count} "
                                             f"(expected at most 2**63 - 2: the kernels count "
                                             f"steps in int64)")
                    work.steps.append((state, t_step, count, address, gi, k, batch,
                                       len(batch.steps)))
                    batch.steps.append(count + 1)
                else:
                    # SGD: only "is this the buffer's first step" matters
                    batch.steps.append(1 if fresh else 2)
                batch.params.append(p)
                batch.sizes.append(numel)
                if dtype is not batch.dtype:
                    batch.mixed = batch.dtype is not None
                    batch.dtype = dtype
                batch.grads.append(g)
                batch.states.append(state)
                batch.ema_first.append(ema_fresh)
                rows.append(row)
            if batch.params:
                work.batches.append(batch)
                steps = work.steps[marks[0]:]
                if keep_groups and batch.multi and marks[1:] == (
                        len(work.allocate), len(work.relayout), len(work.keep)) and \
                        len(batch.params) == len(group["params"]) and \
                        _FastGroup.eligible(batch, steps, seen):
                    work.fast[gi] = _FastGroup(gi, batch, keys_t, steps,
                                               {id(p): seen[id(p)] for p in batch.params})
        if not work.batches:
            return None
        work.read_steps()
        if spec.scalar_states:
            work.scalar_states(spec)
        work.check_overlaps(self._written)
        work.checked = seen
        return work

    def _plan_stored(self, gi: int, group: dict[str, Any], keys: list[tuple[str, str]],
                     storage: _TorchStorage, batch: "_Batch", work: "_Work") -> None:
        """Plan a group with 16-bit parameters or states (``storage``): every tensor checked
        against the dtypes the group's options give, for one functional call per tensor
        (master weights, compensation and stochastic rounding as the functional API's)."""
        spec = SPECS[self.algorithm]
        fresh_names = {s.name for s in spec.states if s.fresh}
        batch.multi, batch.mixed, batch.storage = False, True, storage
        first = sum(len(g["params"]) for g in self.param_groups[:gi])
        for k, p in enumerate(group["params"]):
            g = p.grad
            if g is None:
                continue
            where = f"param_groups[{gi}]['params'][{k}]"
            _check_param(p, where)
            _check_grad(p, g, where)
            if not (p.is_contiguous() and g.is_contiguous()) and g.stride() != p.stride():
                g = torch.empty_like(p).copy_(g)  # the parameter's layout, for this step
                work.keep.append(g)
            wants = storage.dtypes(p, where)
            state = self.state[p]
            extra = [(n, n) for n in ("master", "compensation") if n in wants]
            extra_names = {n for n, _ in extra}
            for n in ("master", "compensation"):
                if n not in wants and state.get(n) is not None:
                    raise ValueError(
                        f"fastopt.torch: state {n!r} of {where} is left from options the "
                        f"group no longer has (master_weights={storage.master}, "
                        f"param_rounding={storage.rounding!r}); delete it to step without "
                        f"it (a later master_weights=True then starts from the parameter)")
            r = len(batch.rows)
            batch.rows.append([0] * (len(keys) + len(extra)))  # filled in by _commit
            fresh = ema_fresh = False
            held: list[tuple[str, torch.Tensor]] = []
            for c, (n, key) in enumerate([*keys, *extra]):
                t = state.get(key)
                want = wants[n] if n in extra_names else storage.want(
                    self.algorithm, n, p, wants)
                if t is None:
                    work.allocate.append((state, key, p, group, n, batch, r, c))
                    fresh = fresh or n in fresh_names
                    ema_fresh = ema_fresh or n == "ema"
                    continue
                if want is Q8:
                    held += _check_state_8bit(p, state, key, where)
                    continue
                _check_state(p, t, key, where, want)
                if t.stride() != p.stride() and p.numel() > 1:
                    work.relayout.append((state, key, p, batch, r, c))
                held.append((key, t))
            count = 0
            if spec.torch_step or storage.rounding == "stochastic":
                # (SGD keeps no step count in torch; stochastic rounding needs one: a new
                # random stream at every step)
                t_step = state.get("step")
                count = _step_count(t_step, where)
                if count > MAX_STEP:
                    raise _step_error(gi, k, float(count))
                work.steps.append((state, t_step, count, 0, gi, k, batch, len(batch.steps)))
            batch.steps.append(count + 1 if spec.torch_step else 1 if fresh else 2)
            batch.counts.append(count)
            if p.numel():
                work.lo += (p.data_ptr(), g.data_ptr(), *[t.data_ptr() for _, t in held])
                work.size += (p.nbytes, g.nbytes, *[t.nbytes for _, t in held])
                work.owners.append((gi, k, tuple(key for key, _ in held)))
            batch.params.append(p)
            batch.sizes.append(p.numel())
            batch.dtype = p.dtype
            batch.grads.append(g)
            batch.states.append(state)
            batch.ema_first.append(ema_fresh)
            batch.indices.append(first + k)

    def _paired_state(self, p: torch.Tensor, key: str, gi: int, k: int) -> torch.Tensor | None:
        """State ``key`` of ``p`` for a pass over the two (Schedule-Free's switch, the EMA
        swap), checked against its parameter (shape, dtype, device, layout), or None."""
        t = self.state[p].get(key) if p in self.state else None
        if t is None:
            return None
        where = f"param_groups[{gi}]['params'][{k}]"
        _check_param(p, where)
        if type(t) is not torch.Tensor or t.dtype != p.dtype or t.shape != p.shape or \
                t.device != p.device:
            _check_state(p, t, key, where)
        if t.stride() != p.stride() and p.numel() > 1:
            raise ValueError(f"fastopt.torch: state {key!r} of {where} has strides "
                             f"{t.stride()} (expected its parameter's {p.stride()})")
        if p.dtype in _NARROW:  # checked for every pair before any is swapped
            raise TypeError(f"fastopt.torch: {where} has dtype {p.dtype} (the EMA and "
                            f"Schedule-Free swaps take float32 or float64 tensors only, so far)")
        result: torch.Tensor = t
        return result

    @torch.no_grad()
    def swap_ema(self) -> None:
        """Exchange every parameter with its weight EMA (``state[p]['ema']``, kept when
        ``ema_decay`` is set), in place, one pass per tensor: call it to evaluate (or save) the
        EMA weights, and again to go back to training. Exact both ways; parameters without an
        EMA are left as they are; all or nothing; ``step()`` refuses to run while the EMA
        weights are in (``param_groups[k]['ema_swapped']``, saved with checkpoints)."""
        with self._local_shards():
            self._swap_ema()

    def _swap_ema(self) -> None:
        work = []
        for gi, group in enumerate(self.param_groups):
            for k, p in enumerate(group["params"]):
                ema = self._paired_state(p, "ema", gi, k)
                if ema is not None:
                    work.append((p.detach(), ema))
        swapped = any(g.get("ema_swapped") for g in self.param_groups)
        if not work and not swapped:
            raise RuntimeError(f"{type(self).__name__}.swap_ema(): no parameter has a weight "
                               f"EMA (set ema_decay and step first)")
        fn = _generic.ema_swap
        with deferred_signals():
            for p, ema in work:
                fn(p, ema, self.backend)
            if work:
                torch.autograd.graph.increment_version([t for pair in work for t in pair])
            for group in self.param_groups:
                group["ema_swapped"] = not swapped

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """``with opt.ema_weights(): evaluate(model)``: the EMA weights in the parameters
        inside the block, the training weights back after it (even when it raises)."""
        if any(g.get("ema_swapped") for g in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.ema_weights(): the EMA weights are "
                               f"already swapped in")
        self.swap_ema()
        try:
            yield
        finally:
            self.swap_ema()

    def _keys_for(self, keys: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """One object per distinct state-key tuple, so cache entries compare by identity."""
        interned: tuple[tuple[str, str], ...] = self._keys_interned.setdefault(keys, keys)
        return interned

    def _commit(self, work: "_Work") -> None:
        """Allocate, then write; all or nothing before the writes start."""
        done: list[tuple[dict[str, Any], str, Any]] = []
        try:
            for state, key, p, group, n, batch, r, c in work.allocate:
                done.append((state, key, state.get(key, _ABSENT)))
                t = self._init_state(p, group, n)
                if isinstance(t, tuple):  # an 8-bit state: codes and absmax
                    done.append((state, key + ABSMAX, state.get(key + ABSMAX, _ABSENT)))
                    state[key], state[key + ABSMAX] = t
                    batch.rows[r][c] = t[0].data_ptr()
                    continue
                if t.stride() != p.stride() and t.numel() > 1:
                    # rows pair elements by memory order
                    t = torch.empty_like(p, dtype=t.dtype).copy_(t)
                state[key] = t
                batch.rows[r][c] = t.data_ptr()
            for state, key, p, batch, r, c in work.relayout:
                done.append((state, key, state[key]))
                t = state[key] = torch.empty_like(p, dtype=state[key].dtype).copy_(state[key])
                batch.rows[r][c] = t.data_ptr()
            for j, (state, t_step, count, _, gi, k, batch, pos) in enumerate(work.steps):
                if type(t_step) is not torch.Tensor:
                    done.append((state, "step", state.get("step", _ABSENT)))
                    t = state["step"] = torch.tensor(float(count))  # torch's float32 scalar
                    work.steps[j] = (state, t, count, 0 if numba_disabled() else t.data_ptr(),
                                     gi, k, batch, pos)
            for state, key, value, dtype in work.scalar_allocate:
                done.append((state, key, state.get(key, _ABSENT)))
                state[key] = torch.tensor(value, dtype=dtype)
        except BaseException:
            for state, key, old in reversed(done):
                if old is _ABSENT:
                    state.pop(key, None)
                else:
                    state[key] = old
            raise
        clean = not (work.allocate or work.relayout)
        self._checked = work.checked if clean else {}
        self._fast = work.fast if clean else {}
        self._state_snapshot = (self.state, list(self.state), list(self.state.values()))
        self._written = work.written
        with deferred_signals():
            for batch in work.batches:
                batch.run(self)
            work.advance_steps()


_ABSENT = object()


def _dtensor_class() -> Any:
    """torch's DTensor class when torch.distributed.tensor is imported (FSDP2 imports it),
    else None: no DTensor can exist then."""
    module = sys.modules.get("torch.distributed.tensor")
    return None if module is None else getattr(module, "DTensor", None)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim keeps scalar states in: float64 when that is torch's default
    dtype, else float32."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class SGD(_Optimizer):
    """torch.optim.SGD's interface on fastopt's kernels."""

    algorithm = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Adam(_Optimizer):
    """torch.optim.Adam's interface on fastopt's kernels."""

    algorithm = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay), backend,
                         multi_tensor, foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class AdamW(_Optimizer):
    """torch.optim.AdamW's interface on fastopt's kernels."""

    algorithm = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=True), backend,
                         multi_tensor, foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class RMSprop(_Optimizer):
    """torch.optim.RMSprop's interface on fastopt's kernels."""

    algorithm = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Adagrad(_Optimizer):
    """torch.optim.Adagrad's interface on fastopt's kernels."""

    algorithm = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False, foreach: bool | None = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Adadelta(_Optimizer):
    """torch.optim.Adadelta's interface on fastopt's kernels."""

    algorithm = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Adamax(_Optimizer):
    """torch.optim.Adamax's interface on fastopt's kernels."""

    algorithm = "adamax"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False,
                 fused: bool | None = None, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Lion(_Optimizer):
    """lion-pytorch's ``Lion`` interface (torch.optim has no Lion) on fastopt's kernels."""

    algorithm = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, None, False, False, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class RAdam(_Optimizer):
    """torch.optim.RAdam's interface on fastopt's kernels."""

    algorithm = "radam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, None, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class NAdam(_Optimizer):
    """torch.optim.NAdam's interface on fastopt's kernels (``mu_product`` kept as torch keeps
    it: a float32 scalar tensor per parameter)."""

    algorithm = "nadam"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, None, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class ASGD(_Optimizer):
    """torch.optim.ASGD's interface on fastopt's kernels (``eta`` and ``mu`` kept as torch
    keeps them: float32 scalar tensors per parameter)."""

    algorithm = "asgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, capturable: bool = False, *,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                                      weight_decay=weight_decay, maximize=maximize), backend,
                         multi_tensor, foreach, None, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class Rprop(_Optimizer):
    """torch.optim.Rprop's interface on fastopt's kernels."""

    algorithm = "rprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50), *, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, None, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class ADOPT(_Optimizer):
    """torch-adopt's ``ADOPT`` interface (torch.optim has none) on fastopt's kernels; its
    ``clip_lambda=lambda step: step ** 0.25`` is ``clip_exponent=0.25`` here."""

    algorithm = "adopt"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
                 clip_exponent: float = 0.25, weight_decay: float = 0.0,
                 decouple: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, clip_exponent=clip_exponent,
                                      weight_decay=weight_decay, decouple=decouple,
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class AdEMAMix(_Optimizer):
    """bitsandbytes' ``AdEMAMix`` interface and defaults (torch.optim has none) on fastopt's
    kernels, with torch's per-parameter ``step``; the slow EMA is ``exp_avg_slow``
    (pytorch-optimizer's name; bitsandbytes stacks both EMAs in one ``m1_m2``)."""

    algorithm = "ademamix"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9999), alpha: float = 5.0,
                 t_alpha: float | None = None, t_beta3: float | None = None, eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, eps=eps,
                                      weight_decay=weight_decay,
                                      t_alpha=no_warmup(t_alpha),
                                      t_beta3=no_warmup(t_beta3),
                                      maximize=maximize), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class _ScheduleFree(_Optimizer):
    """schedulefree's train/eval protocol (see fastopt.optim's AdamWScheduleFree): created in
    train mode (schedulefree starts in eval mode and needs ``train()`` first; that call is a
    no-op here), ``step`` refuses eval mode, each switch one fused pass per tensor, all or
    nothing. ``lr_max`` and ``weight_sum`` are kept per parameter, in float64, next to
    torch's per-parameter ``step`` (schedulefree keeps ``k``, ``lr_max`` and ``weight_sum``
    per group: the same values while every parameter of a group has a gradient at every
    step)."""

    _beta1: ClassVar[str]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not all(g.get("train_mode", True) for g in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() in eval mode: call .train() "
                               f"before training (and .eval() before evaluating)")
        return super().step(closure)

    def train(self) -> None:
        """Move every parameter from x to y (no-op for groups already in train mode)."""
        self._switch(to_eval=False)

    def eval(self) -> None:
        """Move every parameter from y to the average x, to evaluate or checkpoint with."""
        self._switch(to_eval=True)

    @torch.no_grad()
    def _switch(self, to_eval: bool) -> None:
        with self._local_shards():
            self._switch_local(to_eval)

    def _switch_local(self, to_eval: bool) -> None:
        work = []
        for gi, group in enumerate(self.param_groups):
            if bool(group.get("train_mode", True)) != to_eval:
                continue
            beta1 = _group_options(self.algorithm, group)[self._beta1]  # checked by the spec
            for k, p in enumerate(group["params"]):
                z = self._paired_state(p, "z", gi, k)
                if z is not None:
                    work.append((p.detach(), z, beta1))
        with deferred_signals():
            for p, z, beta1 in work:
                _generic.schedulefree_swap(p, z, beta1, to_eval, self.backend)
            if work:
                torch.autograd.graph.increment_version([p for p, _, _ in work])
            for group in self.param_groups:
                group["train_mode"] = not to_eval


class AdamWScheduleFree(_ScheduleFree):
    """schedulefree's ``AdamWScheduleFree`` interface and defaults on fastopt's kernels."""

    algorithm = "schedulefree_adamw"
    _beta1 = "beta1"

    def __init__(self, params: Iterable[Any], lr: float = 2.5e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: float = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r,
                                      weight_lr_power=weight_lr_power, maximize=maximize,
                                      train_mode=True), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)


class SGDScheduleFree(_ScheduleFree):
    """schedulefree's ``SGDScheduleFree`` interface and defaults on fastopt's kernels."""

    algorithm = "schedulefree_sgd"
    _beta1 = "momentum"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0, warmup_steps: float = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r,
                                      weight_lr_power=weight_lr_power, maximize=maximize,
                                      train_mode=True), backend, multi_tensor,
                         foreach, fused, capturable, differentiable, ema_decay,
                         state_dtype, master_weights, param_rounding, seed, state_format,
                         min_8bit_size)
