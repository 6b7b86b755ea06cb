"""Optimizers over many arrays: parameter groups, one-launch multi-tensor steps, checkpoints.

The classes follow torch.optim's constructors, defaults and parameter groups, and update the
caller's own NumPy arrays in place::

    opt = fastopt.Adam([w1, b1, w2, b2], lr=1e-3)
    for batch in data:
        grads = backward(batch)            # one array (or None) per parameter, in order
        opt.step(grads)                    # w1, b1, ... now hold the new values

State arrays are allocated on a parameter's first step, owned by the optimizer and kept in
``opt.state[i]`` (``i`` the parameter's index in group order, as in torch's state_dict). On the
``numba`` backend all parameters of a group with one dtype are updated by one kernel launch.

``step`` can unscale the gradients by a loss scale, skip the whole step when a gradient is not
finite, and clip by the global gradient norm. The check and the norm need one read-only pass
over the gradients before the update (they must be known before anything is written); the
unscale and clip factors are then applied inside the update kernel, so gradients are never
written and never copied.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import ctypes
import functools
import itertools
import json
import math
import operator
import os
import stat
import tempfile
import zipfile
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from . import _validate as check
from . import _generic, _quant, _storage
from ._algorithms import ALGORITHMS, active_states
from ._specs import PARAM, SPECS, Ema, no_warmup
from ._engine import CLIP_EPS, StepResult, check_options, grad_stats, numba_disabled, update
from ._layout import base_address, flat, same_strides, zeros_as, zeros_like
from ._signals import deferred_signals

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Lion", "RAdam",
           "NAdam", "ASGD", "Rprop", "ADOPT", "AdEMAMix", "AdamWScheduleFree",
           "SGDScheduleFree", "Optimizer",
           "StepResult", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FORMAT = "fastopt.optimizer"


def functional_options(algorithm: str, group: dict[str, Any]) -> dict[str, Any]:
    """A parameter group's hyperparameters under the functional API's names (torch's pairs,
    such as ``betas``, split into their elements)."""
    out: dict[str, Any] = {}
    for h in SPECS[algorithm].hypers:
        if h.torch is None:
            out[h.name] = group[h.name]
            continue
        key, index = h.torch
        pair = group[key]
        n = SPECS[algorithm].torch_tuples[key]
        if not isinstance(pair, (tuple, list)) or len(pair) != n:
            names = [x.name for x in SPECS[algorithm].hypers if x.torch and x.torch[0] == key]
            what = "a pair" if n == 2 else f"{n} values"
            raise ValueError(f"Invalid {key}: {pair!r} (expected {what} ({', '.join(names)}))")
        out[h.name] = pair[index]
    return out


def _check_array(name: str, a: Any) -> np.ndarray:
    """A parameter (or state array): a writeable, dense NumPy array of float32, float64,
    bfloat16 (ml_dtypes) or float16.

    Subclasses that are plain memory (``np.memmap``) are taken; a masked array is not (its
    mask would be ignored).
    """
    if not isinstance(a, np.ndarray) or isinstance(a, np.ma.MaskedArray) or (
            a.dtype not in check.FLOAT_DTYPES and _storage.storage(a.dtype) is None):
        why = ("; the optimizer classes hold host arrays only: for GPU arrays call the "
               "functional API, e.g. fastopt.adam_step" if hasattr(a, "__cuda_array_interface__")
               else "; a masked array's mask would be ignored"
               if isinstance(a, np.ma.MaskedArray) else "")
        raise TypeError(f"Invalid {name}: {check._describe(a)} (expected a numpy.ndarray of "
                        f"float32, float64, bfloat16 or float16{why})")
    if not a.flags.c_contiguous and flat(a) is None:
        raise ValueError(f"Invalid {name}: array with gaps or repeated elements (strides "
                         f"{a.strides} for shape {a.shape}; expected a dense array)")
    if not a.flags.writeable:
        raise ValueError(f"Invalid {name}: read-only array (expected a writeable array; it is "
                         f"updated in place)")
    return a


def _same_dtype(a: np.dtype[Any], b: np.dtype[Any]) -> bool:
    """dtype equality that tells bfloat16 marks apart (NumPy's ignores metadata)."""
    return a == b and _storage.storage(a) == _storage.storage(b)


def _zeros_as(p: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Zeros of ``dtype`` with ``p``'s shape and memory layout (in elements)."""
    if _same_dtype(dtype, p.dtype):
        return zeros_like(p)
    return zeros_as(p, dtype)


def _span(a: np.ndarray) -> tuple[int, int]:
    lo = base_address(a)
    return lo, lo + a.nbytes


# The kernels take the step count as an int64, and a step writes step + 1.
MAX_STEP = 2**63 - 2


def _check_step(name: str, value: Any) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"Invalid {name}: {value!r} (expected an int >= 0)")
        value = int(value)
    if not 0 <= value <= MAX_STEP:
        raise ValueError(f"Invalid {name}: {value!r} (expected 0 <= step <= 2**63 - 2: the "
                         f"kernels count steps in int64)")
    result: int = value
    return result


def _overflowing(grads: list[np.ndarray], inv_scale: float) -> int:
    """How many gradient elements are not finite once unscaled (``g * inv_scale`` in the
    gradient's dtype): finite gradients overflow when the loss scale is below 1."""
    n = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for g in grads:
            x = g.astype(np.float32) if _storage.storage(g.dtype) else g  # the math type
            n += int(g.size - np.count_nonzero(np.isfinite(x * x.dtype.type(inv_scale))))
    return n


def step_arguments(loss_scale: float | None, max_grad_norm: float | None,
                   skip_nonfinite: bool | None) -> tuple[float, float | None, bool]:
    """``step``'s keyword arguments checked: the inverse loss scale, the clipping norm and
    whether non-finite gradients skip the step (by default: when a loss scale is given)."""
    inv_scale = 1.0
    if loss_scale is not None:
        inv_scale = 1.0 / check.real("loss_scale", loss_scale, 0.0, lo_open=True)
    if max_grad_norm is not None:
        max_grad_norm = check.real("max_grad_norm", max_grad_norm, 0.0, lo_open=True)
    skip = (loss_scale is not None if skip_nonfinite is None
            else check.flag("skip_nonfinite", skip_nonfinite))
    return inv_scale, max_grad_norm, skip


def decide_step(sumsq: float, bad: int, inv_scale: float, max_grad_norm: float | None,
                skip: bool, dtypes: list[np.dtype[Any]],
                overflowing: Any) -> StepResult:
    """Whether a step is skipped and its clip coefficient, from the gradients' sum of
    squares and non-finite count (``grad_stats``); ``overflowing()`` counts the elements that
    overflow once unscaled, asked only when that can happen. The one decision every step
    makes, in one process or sharded over many (fastopt.distributed)."""
    norm = math.sqrt(sumsq) * inv_scale
    if skip and not bad and inv_scale > 1.0 and dtypes and not norm <= min(
            _storage.max_finite(d) for d in dtypes):
        # Finite gradients whose unscaling overflows (a loss scale below 1): skipped, as
        # torch's GradScaler skips them.
        bad = overflowing()
    if skip and bad:
        return StepResult(skipped=True, grad_norm=norm, nonfinite=bad)
    coef = 1.0
    if max_grad_norm is not None:
        coef = min(max_grad_norm / (norm + CLIP_EPS), 1.0)
        if math.isnan(norm):
            coef = math.nan
    return StepResult(skipped=False, grad_norm=norm, clip_coef=coef, nonfinite=bad)


class _Prepared:
    """A checked step, ready to apply (see ``Optimizer._prepare``)."""

    __slots__ = ("plan", "params", "grads", "addresses", "stepped", "options", "steps")

    def __init__(self, plan: "_Plan", params: list[np.ndarray], grads: list[Any],
                 addresses: np.ndarray, stepped: list[int], options: list[dict[str, Any]],
                 steps: list[int]) -> None:
        self.plan, self.params, self.grads, self.addresses = plan, params, grads, addresses
        self.stepped, self.options, self.steps = stepped, options, steps


def _ema_decay(group: dict[str, Any]) -> float | None:
    """A group's weight EMA decay (``ema_decay``, torch's range [0, 1]), or None: no EMA."""
    decay = group.get("ema_decay")
    return None if decay is None else check.real("ema_decay", decay, 0.0, 1.0)


# -- how 16-bit parameters and their states are stored ----------------------------------------

PARAM_ROUNDINGS = ("nearest", "stochastic", "kahan")
_STATE_DTYPES = ("float32", "bfloat16", "8bit")
# What a group with state_dtype="8bit" keeps a state in (see _Storage.dtypes): a State8bit.
Q8 = "8bit"


def state_dtype_name(value: Any) -> str | None:
    """``state_dtype`` as a name: None (each state in its parameter's dtype), "float32",
    "bfloat16" or "8bit"; taken as a name, a NumPy or ml_dtypes dtype, or a torch dtype."""
    if value is None:
        return None
    name = value if isinstance(value, str) else str(value).removeprefix("torch.") if (
        type(value).__module__ == "torch") else None
    if name is None:
        try:
            name = _storage.name(np.dtype(value))
        except TypeError:
            name = None
    if name not in _STATE_DTYPES:
        raise ValueError(f"Invalid state_dtype: {value!r} (expected None, 'float32', "
                         f"'bfloat16' or '8bit')")
    return name


def storage_options(group: dict[str, Any]) -> tuple[str | None, bool, str, int]:
    """A parameter group's storage options, checked: (state dtype name or None,
    master_weights, param_rounding, seed); also the 8-bit options (q8_options)."""
    name = state_dtype_name(group.get("state_dtype"))
    q8_options(group)
    master = check.flag("master_weights", group.get("master_weights", False))
    rounding = group.get("param_rounding", "nearest")
    if not isinstance(rounding, str) or rounding not in PARAM_ROUNDINGS:
        raise ValueError(f"Invalid param_rounding: {rounding!r} (expected 'nearest', "
                         f"'stochastic' or 'kahan')")
    if master and rounding == "kahan":
        raise ValueError("Invalid param_rounding: 'kahan' with master_weights=True "
                         "(expected one of them: both keep what rounding loses)")
    seed = group.get("seed", 0)
    if type(seed) is bool or not isinstance(seed, (int, np.integer)) or \
            not 0 <= int(seed) < 2**64:
        raise ValueError(f"Invalid seed: {seed!r} (expected an integer from 0 to 2**64 - 1)")
    return name, master, rounding, int(seed)


def q8_options(group: dict[str, Any]) -> tuple[str, int]:
    """A group's 8-bit options, checked: ``state_format`` ("dynamic": bitsandbytes' maps,
    "fp8": fastopt's 8-bit floats) and ``min_8bit_size`` (smaller tensors keep float32
    states, as bitsandbytes does: 4096 by default)."""
    fmt = _quant.check_format(group.get("state_format", "dynamic"), "state_format")
    size = group.get("min_8bit_size", 4096)
    if type(size) is bool or not isinstance(size, (int, np.integer)) or size < 0:
        raise ValueError(f"Invalid min_8bit_size: {size!r} (expected an integer >= 0)")
    return fmt, int(size)


def _numpy_dtype(name: str) -> np.dtype[Any]:
    if name == "float32":
        return np.dtype(np.float32)
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError("state_dtype='bfloat16' needs ml_dtypes (pip install ml_dtypes)") \
            from None
    out: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
    return out


class _Storage:
    """A group's storage options, checked: the state dtype (None: the parameter's),
    master weights, how 16-bit parameters are rounded, and the seed of stochastic rounding."""

    __slots__ = ("state_dtype", "master", "rounding", "seed", "q8", "min_8bit_size")

    def __init__(self, group: dict[str, Any]) -> None:
        name, self.master, self.rounding, self.seed = storage_options(group)
        # 8-bit states: their format (None: not 8-bit), and the size below which a tensor's
        # states stay float32.
        fmt, self.min_8bit_size = q8_options(group)
        self.q8 = fmt if name == Q8 else None
        self.state_dtype = None if name is None else np.dtype(np.float32) if name == Q8 \
            else _numpy_dtype(name)

    def dtypes(self, p: np.ndarray) -> dict[str, np.dtype[Any]]:
        """The dtype each state array of ``p`` must have (algorithm states and the EMA under
        the key "state"; master weights and the compensation of 16-bit parameters)."""
        narrow = bool(_storage.storage(p.dtype))
        if self.state_dtype is not None and p.dtype == np.float64:
            name = Q8 if self.q8 is not None else _storage.name(self.state_dtype)
            raise TypeError(f"Invalid state_dtype: {name} with a float64 parameter (float64 "
                            f"parameters keep float64 states)")
        # By default states take the parameter's dtype, as in torch; with master weights,
        # the master's (float32).
        default = np.dtype(np.float32) if narrow and self.master else p.dtype
        out: dict[str, Any] = {"state": default if self.state_dtype is None else
                               self.state_dtype}
        if self.q8 is not None and p.size >= self.min_8bit_size:
            out["state"] = Q8
        if narrow and self.master:
            out["master"] = np.dtype(np.float32)
        if narrow and self.rounding == "kahan":
            out["compensation"] = p.dtype
        return out

    def plain(self, p: np.ndarray) -> bool:
        """Whether ``p`` is stepped as float32/float64 with its states in its own dtype."""
        return not _storage.storage(p.dtype) and self.q8 is None and (
            self.state_dtype is None or self.state_dtype == p.dtype)


    def store(self, p: np.ndarray, d: dict[str, Any], index: int) -> dict[str, Any]:
        """The functional API's storage keywords for parameter ``index`` (state ``d``)."""
        if not _storage.storage(p.dtype):
            return {}
        if self.master:
            out: dict[str, Any] = {"master": d["master"]}
        elif self.rounding == "kahan":
            return {"compensation": d["compensation"]}
        else:
            out = {}
        if self.rounding == "stochastic":  # one stream per parameter
            out.update(rounding="stochastic",
                       seed=(self.seed + index * 0x9E3779B97F4A7C15) % 2**64)
        return out


def state_want(algorithm: str, name: str, wants: dict[str, Any]) -> Any:
    """What the state ``name`` must be, from a parameter's ``_Storage.dtypes``: a dtype, Q8
    (a State8bit), or None (no such state). Parameter values (Schedule-Free's z, ASGD's
    average) and the weight EMA stay float32 in 8-bit groups."""
    want = wants.get(name if name in EXTRA_STATES[1:] else "state")
    if want is Q8 and (name == "ema" or SPECS[algorithm].state(name).kind == "weights"):
        return np.dtype(np.float32)
    return want


def _check_8bit(algorithm: str, name: str, what: str, a: Any, p: np.ndarray,
                fmt: str | None, i: int) -> None:
    """A class's 8-bit state ``a`` of parameter ``p``: a State8bit of the group's format and
    the state's sign holding NumPy arrays, then the functional API's checks (codes laid out
    as ``p``, one absmax per block, writeable)."""
    spec = SPECS[algorithm].state(name)
    signed = spec.kind == "signed"
    if type(a) is not _quant.State8bit or a.format != fmt or a.signed != signed or \
            type(a.codes) is not np.ndarray or type(a.absmax) is not np.ndarray:
        got = repr(a) if type(a) is _quant.State8bit else type(a).__name__
        raise ValueError(f"Invalid {what}: {got} (expected a State8bit of format {fmt!r}, "
                         f"signed={signed}, of NumPy arrays, for params[{i}]: its group has "
                         f"state_dtype='8bit')")
    _generic.check_8bit(what, a, spec, p, f"params[{i}]")


_NO_STATE: dict[str, Any] = {}  # stands for a parameter without state in a _Plan
# State arrays besides the algorithm's: the weight EMA, and for 16-bit parameters the float32
# master weights or the compensation (see _Storage).
EXTRA_STATES = ("ema", "master", "compensation")

_DTYPE = operator.attrgetter("dtype")
_SHAPE = operator.attrgetter("shape")
_STRIDES = operator.attrgetter("strides")


def _geometry(planned: list[np.ndarray]) -> list[list[Any]]:
    """The planned arrays' dtypes and strides (two lists), compared at each step: NumPy lets
    both change in place (and the shape, which changes the strides: see _Plan.current). Flat
    lists compare about twice as fast as one list of tuples."""
    return [list(map(_DTYPE, planned)), list(map(_STRIDES, planned))]


class _Plan:
    """The arrays a step works on, validated, with their addresses.

    It holds every array it describes, so none can be freed and its address or id reused
    while the plan lives; a step compares the arrays in ``param_groups`` and ``state`` with it
    by identity (cheap, C-speed) and rebuilds it when anything was replaced, added or removed.
    """

    __slots__ = ("state", "params", "dicts", "arrays", "spans", "table", "dtypes",
                 "shapes", "strides", "nbytes", "starts", "ends", "complete", "planned",
                 "geometry", "launch_cache", "options")

    def __init__(self, opt: "Optimizer", params: list[np.ndarray]) -> None:
        names = (*ALGORITHMS[opt.algorithm][1], *EXTRA_STATES)
        storages = [_Storage(g) for g in opt.param_groups]
        group_of = [k for k, g in enumerate(opt.param_groups) for _ in g["params"]]
        state = opt.state
        if not isinstance(state, dict):
            raise TypeError(f"Invalid state: {type(state).__name__} (expected a dict mapping "
                            f"parameter indices to dicts)")
        spans = _Spans()
        dicts = list(map(state.get, range(len(params)), itertools.repeat(_NO_STATE)))
        rows = []
        for i, (p, d) in enumerate(zip(params, dicts)):
            _check_array(f"params[{i}]", p)
            spans.add(f"params[{i}]", p)
            if d is not _NO_STATE and not isinstance(d, dict):
                raise TypeError(f"Invalid state[{i}]: {type(d).__name__} (expected a dict)")
            if "step" in d:
                _check_step(f"state[{i}]['step']", d["step"])
            pa = base_address(p)
            row = [pa]
            wants = storages[group_of[i]].dtypes(p) if d is not _NO_STATE else {}
            for n in names:
                a = d.get(n)
                if a is None:
                    row.append(pa)
                    continue
                what = f"state[{i}][{n!r}]"
                want = state_want(opt.algorithm, n, wants)
                if want is Q8:
                    _check_8bit(opt.algorithm, n, what, a, p, storages[group_of[i]].q8, i)
                    spans.add(what, a.codes)
                    spans.add(f"{what}.absmax", a.absmax)
                    row.append(base_address(a.codes))
                    continue
                _check_array(what, a)
                if want is None:
                    raise ValueError(f"Invalid {what}: an array for params[{i}] of dtype "
                                     f"{_storage.name(p.dtype)} (expected none: it is kept "
                                     f"for 16-bit parameters of groups that ask for it)")
                if a.dtype != want or _storage.storage(a.dtype) != _storage.storage(want) or \
                        a.shape != p.shape:
                    raise ValueError(f"Invalid {what}: array of {_storage.name(a.dtype)} "
                                     f"{a.shape} (expected {_storage.name(want)} {p.shape}, "
                                     f"for params[{i}])")
                if not (a.flags.c_contiguous and p.flags.c_contiguous) and not same_strides(
                        tuple(x // a.itemsize for x in a.strides),
                        tuple(x // p.itemsize for x in p.strides), p.shape):
                    raise ValueError(f"Invalid {what}: strides {a.strides} differ from "
                                     f"params[{i}]'s {p.strides} (expected the memory layout "
                                     f"of params[{i}], e.g. numpy.empty_like)")
                spans.add(what, a)
                row.append(base_address(a))
            rows.append(row)
        self.state = state
        self.params = params
        self.dicts = dicts
        self.arrays = {n: [d.get(n) for d in dicts] for n in names}
        self.spans = spans
        # The same facts as arrays and lists, for the per-step checks and the launch.
        self.table = np.array(rows, np.int64).reshape(len(params), 1 + len(names))
        self.dtypes = [p.dtype for p in params]
        self.shapes = [p.shape for p in params]
        self.strides = [p.strides for p in params]
        self.nbytes = np.array([p.nbytes for p in params], np.int64)
        self.starts = np.array(spans.starts, np.int64)
        self.ends = np.array(spans.ends, np.int64)
        self.complete: dict[tuple[str, ...], bool] = {}
        self.launch_cache: dict[tuple[int, int, int], tuple[list[int], list[Any]]] = {}
        self.options = _storage_keys(opt)
        self.planned: list[np.ndarray] = [
            x for a in itertools.chain(params, *self.arrays.values()) if a is not None
            for x in ((a.codes, a.absmax) if type(a) is _quant.State8bit else (a,))]
        self.geometry = _geometry(self.planned)

    def has_states(self, active: tuple[str, ...]) -> bool:
        """Whether every parameter has a step count and every state in ``active`` (master
        weights and compensation: the 16-bit parameters only)."""
        done = self.complete.get(active)
        if done is None:
            common = tuple(n for n in active if n not in EXTRA_STATES[1:])
            narrow = tuple(n for n in active if n in EXTRA_STATES[1:])
            done = self.complete[active] = all(
                d is not _NO_STATE and "step" in d and all(d.get(n) is not None for n in common)
                and (not narrow or not _storage.storage(dt)
                     or all(d.get(n) is not None for n in narrow))
                for d, dt in zip(self.dicts, self.dtypes))
        return done

    def launches(self, idx: list[int]) -> list[tuple[np.dtype[Any], np.ndarray | None,
                                                     np.ndarray, tuple[int, ...]]]:
        """How to launch the tensors ``idx`` (ascending): one (dtype, positions in ``idx`` or
        None for all of them, tensor indices, sizes) per dtype. Kept per ``idx``."""
        key = (idx[0], idx[-1], len(idx))  # with ``idx`` itself compared on a hit
        hit = self.launch_cache.get(key)
        if hit is not None and hit[0] == idx:
            return hit[1]
        dtypes = [self.dtypes[i] for i in idx]
        out = []
        for dtype in dict.fromkeys(dtypes):
            at = None if len(set(dtypes)) == 1 else np.flatnonzero(
                np.array([d == dtype for d in dtypes]))
            take = np.array(idx, np.int64) if at is None else np.array(idx, np.int64)[at]
            out.append((dtype, at, take, tuple(self.params[i].size for i in take.tolist())))
        if len(self.launch_cache) > 64:
            self.launch_cache.clear()
        self.launch_cache[key] = (list(idx), out)
        return out

    def overlapping(self, lo: np.ndarray, hi: np.ndarray) -> int:
        """The position in ``lo``/``hi`` of the first byte range overlapping a planned array,
        or -1."""
        if not self.starts.size or not lo.size:
            return -1
        k = np.searchsorted(self.starts, lo, side="right")
        before = (k > 0) & (self.ends[np.maximum(k - 1, 0)] > lo)
        after = (k < self.starts.size) & (self.starts[np.minimum(k, self.starts.size - 1)] < hi)
        hit = np.flatnonzero((before | after) & (hi > lo))
        return int(hit[0]) if hit.size else -1

    def current(self, opt: "Optimizer", params: list[np.ndarray]) -> bool:
        """Whether ``opt`` still has exactly the arrays this plan was built from, with the
        dtype, shape and strides they had (NumPy lets those change in place)."""
        state = opt.state
        if state is not self.state or len(params) != len(self.params):
            return False
        if _storage_keys(opt) != self.options:  # the dtypes the states must have may differ
            return False
        if not all(map(operator.is_, params, self.params)):
            return False
        dicts = list(map(state.get, range(len(params)), itertools.repeat(_NO_STATE)))
        if not all(map(operator.is_, dicts, self.dicts)):
            return False
        get, repeat = dict.get, itertools.repeat
        for n, arrays in self.arrays.items():
            if not all(map(operator.is_, map(get, dicts, repeat(n)), arrays)):
                return False
        # The same arrays: compare their geometry. Their memory and byte counts cannot
        # change, and for the dense arrays planned (nonzero strides) the strides and the
        # dtype determine the shape: an in-place shape change changes the strides.
        planned = self.planned
        dtypes, strides = self.geometry
        return list(map(_STRIDES, planned)) == strides and list(map(_DTYPE, planned)) == dtypes


def _storage_keys(opt: "Optimizer") -> list[tuple[Any, ...]]:
    """Each group's storage options as given (a plan checked the states against them)."""
    return [(g.get("state_dtype"), g.get("master_weights", False),
             g.get("param_rounding", "nearest"), g.get("state_format", "dynamic"),
             g.get("min_8bit_size", 4096)) for g in opt.param_groups]


def _extra_states(storage: _Storage) -> tuple[str, ...]:
    """The state arrays a group's storage options add for its 16-bit parameters."""
    return ("master",) if storage.master else ("compensation",) \
        if storage.rounding == "kahan" else ()


class _Spans:
    """Sorted, disjoint byte ranges of the arrays an optimizer writes (params and state)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.names: list[str] = []

    def find(self, lo: int, hi: int) -> str | None:
        """The name of a range overlapping [lo, hi), or None."""
        if hi <= lo:
            return None
        k = bisect.bisect_right(self.starts, lo)
        if k and self.ends[k - 1] > lo:
            return self.names[k - 1]
        if k < len(self.starts) and self.starts[k] < hi:
            return self.names[k]
        return None

    def add(self, name: str, a: np.ndarray) -> None:
        """Add ``a``'s byte range; ValueError if it overlaps one already added."""
        lo, hi = _span(a)
        if hi <= lo:
            return
        other = self.find(lo, hi)
        if other is not None:
            raise ValueError(f"Invalid {name}: it overlaps {other} in memory (expected separate "
                             f"arrays; an array may appear only once among the parameters)")
        k = bisect.bisect_right(self.starts, lo)
        self.starts.insert(k, lo)
        self.ends.insert(k, hi)
        self.names.insert(k, name)


class Optimizer:
    """Base class: parameter groups, lazily allocated state, ``step``, checkpoints.

    Subclasses set ``algorithm`` (a key of the functional API's table) and pass their defaults.
    ``backend`` is any CPU backend name (``"auto"``, ``"numba"``, ``"numpy"`` for the
    reference); ``multi_tensor=False`` runs the functional API once per array instead of one
    launch per group (for comparison; results are identical).
    """

    algorithm: ClassVar[str]

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *,
                 backend: str = "auto", multi_tensor: bool = True,
                 ema_decay: float | None = None, state_dtype: Any = None,
                 master_weights: bool = False, param_rounding: str = "nearest",
                 seed: int = 0, state_format: str = "dynamic",
                 min_8bit_size: int = 4096) -> None:
        if not isinstance(backend, str):
            raise TypeError(f"Invalid backend: {backend!r} (expected a backend name)")
        if backend not in ("auto", "numba", "numpy"):
            raise ValueError(f"Invalid backend: {backend!r} (expected 'auto', 'numba' or "
                             f"'numpy'; the optimizer classes update NumPy arrays)")
        self.backend = backend
        self.multi_tensor = check.flag("multi_tensor", multi_tensor)
        self.defaults = {**defaults, "ema_decay": ema_decay,
                         "state_dtype": state_dtype_name(state_dtype),
                         "master_weights": master_weights, "param_rounding": param_rounding,
                         "seed": seed, "state_format": state_format,
                         "min_8bit_size": min_8bit_size}
        # Whether swap_ema() has put the EMA weights in the parameters (step() refuses then).
        self.ema_swapped = False
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, Any]] = {}
        # The validated arrays of the last step; checked against param_groups and state at
        # every step (see _Plan), never trusted blindly.
        self._plan: _Plan | None = None
        if isinstance(params, np.ndarray):
            raise TypeError("Invalid params: a single numpy.ndarray (expected an iterable of "
                            "arrays or of parameter-group dicts, e.g. [w, b])")
        groups = list(params)
        if not groups:
            raise ValueError("Invalid params: an empty list (expected at least one array)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __getstate__(self) -> dict[str, Any]:
        # The plan holds raw addresses: a copy (deepcopy, pickle) must never reuse them.
        return {k: v for k, v in self.__dict__.items() if k != "_plan"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plan = None

    # -- parameters ---------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: a dict with ``params`` (arrays) and any hyperparameters to override."""
        if not isinstance(param_group, dict):
            raise TypeError(f"Invalid param_group: {type(param_group).__name__} (expected a "
                            f"dict with a 'params' list)")
        if "params" not in param_group:
            raise ValueError("Invalid param_group: no 'params' key")
        params = param_group["params"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        if not params:
            raise ValueError("Invalid param_group: an empty 'params' list")
        group = {**self.defaults, **param_group, "params": params}
        self._options(group)
        spans = _Spans()
        for k, p in enumerate([*self._params(), *params]):
            spans.add(f"params[{k}]", _check_array(f"params[{k}]", p))
        storage = _Storage(group)
        for p in params:
            storage.dtypes(p)  # float64 parameters take no other state dtype
        if "state_dtype" in param_group:  # kept by name (JSON in checkpoints)
            group["state_dtype"] = state_dtype_name(param_group["state_dtype"])
        self.param_groups.append(group)

    def _params(self) -> list[np.ndarray]:
        return [p for g in self.param_groups for p in g["params"]]

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        spec = SPECS[self.algorithm]
        for h in spec.class_hypers:
            _generic.hyper(h, group[h.name])
        _ema_decay(group)
        _Storage(group)
        return check_options(self.algorithm, functional_options(self.algorithm, group))

    def _new_state(self, name: str, p: np.ndarray, group: dict[str, Any],
                   dtype: Any = None) -> Any:
        spec = SPECS[self.algorithm]
        if dtype is Q8:  # torch's initial value, quantized
            signed = spec.state(name).kind == "signed"
            fmt = q8_options(group)[0]
            init = spec.initial(name, group)
            if init == 0:
                return _quant.State8bit.zeros(p, signed=signed, format=fmt)
            return _quant.State8bit.quantize(np.full(p.shape, init, np.float32), signed=signed,
                                             format=fmt)
        if dtype is None or _same_dtype(dtype, p.dtype):
            return spec.initial_array(name, p, group)
        out = _zeros_as(p, dtype)  # the value set in the state's dtype (rounded once)
        out[...] = p if spec.state(name).init == PARAM else spec.initial(name, group)
        return out

    # -- the update ---------------------------------------------------------------------------

    def step(self, grads: Sequence[Any], *, loss_scale: float | None = None,
             max_grad_norm: float | None = None,
             skip_nonfinite: bool | None = None) -> StepResult:
        """Update every parameter that has a gradient, in place.

        Args:
            grads: one entry per parameter, in group order: an array of the parameter's shape
                and dtype, or None (no gradient: the parameter and its step count are left
                as they are).
            loss_scale: the gradients are ``loss_scale`` times the true ones (mixed-precision
                loss scaling); they are divided by it inside the update.
            max_grad_norm: clip the unscaled gradients to this global L2 norm (as
                torch.nn.utils.clip_grad_norm_ with norm_type=2).
            skip_nonfinite: when a gradient has a NaN or Inf, or overflows once unscaled,
                update nothing and return a result with ``skipped=True``. Default: True when
                ``loss_scale`` is given.

        Returns:
            StepResult: whether the step was skipped, the global norm when computed, the clip
            coefficient applied.

        The arrays used are those in ``param_groups`` and ``state`` now (replace or clear them
        at will: every step checks them). Everything is checked, then missing state allocated
        (all or nothing), then written: a rejected step changes nothing, and an interrupt
        (Ctrl-C) arriving while the step writes is raised once it is complete.
        """
        prepared = self._prepare(grads)
        inv_scale, max_grad_norm, skip = step_arguments(loss_scale, max_grad_norm,
                                                        skip_nonfinite)
        result = StepResult()
        if skip or max_grad_norm is not None:
            live = [prepared.grads[i] for i in prepared.stepped]
            sumsq, bad = grad_stats(live, self.backend)
            result = decide_step(sumsq, bad, inv_scale, max_grad_norm, skip,
                                 [g.dtype for g in live], lambda: _overflowing(live, inv_scale))
            if result.skipped:
                return result
        self._apply(prepared, inv_scale * result.clip_coef)
        return result

    def _prepare(self, grads: Any) -> "_Prepared":
        """Everything a step checks before it computes anything: the plan (params and state
        now), the gradients, the groups' options and the step counts. Changes nothing."""
        if self.ema_swapped:
            raise RuntimeError(f"{type(self).__name__}.step() with the EMA weights swapped in: "
                               f"call .swap_ema() again (or leave the ema_weights() block) "
                               f"before training")
        params = self._params()
        plan = self._plan
        if plan is None or not plan.current(self, params):
            self._plan = None
            plan = self._plan = _Plan(self, params)
        checked, addresses, stepped = self._check_grads(plan, grads)
        options = [self._options(g) for g in self.param_groups]
        steps = self._step_counts(plan, stepped)
        return _Prepared(plan, params, checked, addresses, stepped, options, steps)

    def _apply(self, prepared: "_Prepared", scale: float) -> None:
        """Allocate the missing state (all or nothing), then update every stepped tensor with
        its gradient times ``scale``."""
        plan, params, grads = prepared.plan, prepared.params, prepared.grads
        addresses, stepped, options, steps = (prepared.addresses, prepared.stepped,
                                              prepared.options, prepared.steps)
        fresh: set[int] = set()
        fresh_ema: set[int] = set()
        scalar_names = SPECS[self.algorithm].scalar_names
        emas = [_ema_decay(g) for g in self.param_groups]
        storages = [_Storage(g) for g in self.param_groups]
        if not all(plan.has_states(active_states(self.algorithm, o) + scalar_names
                                   + (() if e is None else ("ema",)) + _extra_states(st))
                   for o, e, st in zip(options, emas, storages)):
            allocated = self._allocate_states(plan, grads, options, params, emas)
            if allocated is not None:
                fresh, fresh_ema, plan = allocated
                self._plan = plan
        writes: list[tuple[np.ndarray, float]] = []
        work = self._work(plan, options, grads, addresses, stepped, steps, fresh, writes,
                          emas, fresh_ema)
        dicts = plan.dicts
        # Everything is checked and allocated: from here on the step completes. Interrupts
        # (Ctrl-C) arriving meanwhile are delivered when it has (see _signals).
        with deferred_signals():
            for run in work:
                run(scale=scale)
            for a, value in writes:
                a[...] = value
            if len(stepped) == len(dicts):  # every parameter stepped: one C-level pass
                collections.deque(map(dict.__setitem__, dicts, itertools.repeat("step"),
                                      map(operator.add, steps, itertools.repeat(1))), 0)
            else:
                for i, t in zip(stepped, steps):
                    dicts[i]["step"] = t + 1

    def _step_counts(self, plan: _Plan, stepped: list[int]) -> list[int]:
        """The step counts of the stepped parameters (0 without state), checked."""
        dicts = plan.dicts
        if len(stepped) == len(dicts):  # every parameter has a gradient: one C-level pass
            steps = list(map(dict.get, dicts, itertools.repeat("step"), itertools.repeat(0)))
        else:
            steps = [dicts[i].get("step", 0) for i in stepped]
        if steps and (set(map(type, steps)) != {int} or min(steps) < 0
                      or max(steps) > MAX_STEP):
            for k, i in enumerate(stepped):
                t = steps[k]
                if type(t) is not int or not 0 <= t <= MAX_STEP:
                    steps[k] = _check_step(f"state[{i}]['step']", t)
                    dicts[i]["step"] = steps[k]  # a NumPy integer from a user: now an int
        return steps

    def _work(self, plan: _Plan, options: list[dict[str, Any]], grads: list[Any],
              addresses: np.ndarray, stepped: list[int], steps: list[int],
              fresh: set[int], writes: list[tuple[np.ndarray, float]],
              emas: list[float | None], fresh_ema: set[int]) -> list[Any]:
        """One callable per launch: ``run(scale=...)`` updates a group's stepped tensors.
        The scalar states' new values are appended to ``writes`` (made after the launches).
        ``emas``: each group's EMA decay or None; ``fresh_ema``: the tensors whose EMA this
        step creates (its first update copies the parameter)."""
        spec = SPECS[self.algorithm]
        names = spec.state_names
        stepped_at = np.array(stepped, np.int64)
        steps_at = np.array(steps, np.int64)
        fast = (self.multi_tensor and self.backend in ("auto", "numba")
                and not numba_disabled())
        work = []
        first = 0
        for group, opts, decay in zip(self.param_groups, options, emas):
            n = len(group["params"])
            # The group's stepped tensors: a slice of the (ascending) ``stepped``.
            lo, hi = bisect.bisect_left(stepped, first), bisect.bisect_left(stepped, first + n)
            first += n
            if lo == hi:
                continue
            idx = stepped[lo:hi]
            # A new momentum buffer starts as the gradient, whatever the step count.
            ts_at = steps_at[lo:hi] + 1
            if fresh:
                ts_at[np.isin(stepped_at[lo:hi], list(fresh))] = 1
            ts = ts_at.tolist()
            used = self._scalar_states(plan, idx, ts, opts, writes) if spec.scalar_states \
                else None
            ema = decay is not None
            if decay is not None:  # the EMA's scalars (Ema.scalars) after the scalar states, per tensor
                rows_ema = np.array([Ema.of(None, decay, i in fresh_ema, plan.dtypes[i]).scalars
                                     for i in idx], np.float64)
                used = rows_ema if used is None else np.hstack([used, rows_ema])
            storage = _Storage(group)
            # One launch per dtype for float32/float64 tensors with states of their own dtype;
            # 16-bit parameters or states go through the functional API, tensor by tensor.
            if fast and all(storage.plain(plan.params[take[0]])
                            for _, _, take, _ in plan.launches(idx)):
                from . import _numba_backend

                for dtype, at, take, sizes in plan.launches(idx):
                    # at: positions in idx; take: tensor indices, of one dtype
                    table = np.empty((take.size, 2 + len(names) + ema), np.int64)
                    table[:, 0] = plan.table[take, 0]
                    table[:, 1] = addresses[take]
                    table[:, 2:] = plan.table[take, 1:1 + len(names) + ema]
                    work.append(functools.partial(
                        _numba_backend.multi_step_rows, spec, opts, dtype, sizes, table,
                        ts_at if at is None else ts_at[at],
                        scalars=None if used is None else used if at is None else used[at],
                        ema=ema))
            else:
                # The functional API updates the scalar states: it is handed copies holding
                # the old values (the new ones are in ``writes``).
                dicts = [plan.dicts[i] if not spec.scalar_states else {
                    **plan.dicts[i], **{n: np.array(plan.dicts[i][n]).reshape(())
                                        for n in spec.scalar_names}} for i in idx]
                work.append(functools.partial(
                    update, self.algorithm, opts, [plan.params[i] for i in idx],
                    [grads[i] for i in idx], dicts, ts, backend=self.backend,
                    ema_decay=decay, ema_first=[i in fresh_ema for i in idx],
                    stores=[storage.store(plan.params[i], plan.dicts[i], i) for i in idx]))
        return work

    def _scalar_states(self, plan: _Plan, idx: list[int], ts: list[int],
                       opts: dict[str, Any], writes: list[tuple[np.ndarray, float]]
                       ) -> np.ndarray:
        """Each stepped tensor's scalar states (see _specs.Scalar), checked: the values the
        rule uses, one row per tensor; the new values are appended to ``writes``."""
        spec = SPECS[self.algorithm]
        used = np.empty((len(idx), len(spec.scalar_states)), np.float64)
        for r, (i, t) in enumerate(zip(idx, ts)):
            arrays = [check.scalar_state(f"state[{i}][{s.name!r}]", plan.dicts[i][s.name],
                                         s.lo, s.hi, s.dtype) for s in spec.scalar_states]
            used[r], new = spec.advance_scalars([float(a.reshape(-1)[0]) for a in arrays], t,
                                                opts, [a.dtype.type for a in arrays])
            writes += zip(arrays, new)
        return used

    def _allocate_states(self, plan: _Plan, grads: list[Any], options: list[dict[str, Any]],
                         params: list[np.ndarray], emas: list[float | None]
                         ) -> tuple[set[int], set[int], _Plan] | None:
        """Create the state a step needs and lacks (zeros, torch's initialisation). Returns
        None when nothing was created, else the indices whose momentum buffer is new, those
        whose weight EMA is new, and the plan with the new arrays. All or nothing: on any
        error (memory, a check of the new plan) the state is left as it was."""
        created: list[tuple[int, str | None]] = []  # (index, key); None: the whole dict
        fresh: set[int] = set()
        fresh_ema: set[int] = set()
        fresh_names = {s.name for s in SPECS[self.algorithm].states if s.fresh}
        index = 0
        try:
            for group, opts, decay in zip(self.param_groups, options, emas):
                active = active_states(self.algorithm, opts)
                for p in group["params"]:
                    if grads[index] is not None:
                        d = plan.dicts[index]
                        if d is _NO_STATE:
                            d = self.state[index] = {"step": 0}
                            created.append((index, None))
                        elif "step" not in d:
                            d["step"] = 0
                            created.append((index, "step"))
                        wants = _Storage(group).dtypes(p)
                        for n in [n for n in active if d.get(n) is None]:
                            d[n] = self._new_state(n, p, group,
                                                   state_want(self.algorithm, n, wants))
                            created.append((index, n))
                            if n in fresh_names:
                                fresh.add(index)
                        math_type = np.float32 if _storage.storage(p.dtype) else p.dtype
                        for n, a in SPECS[self.algorithm].initial_scalars(opts,
                                                                          math_type).items():
                            if d.get(n) is None:  # 0-d, the math dtype (or the state's own)
                                d[n] = a
                                created.append((index, n))
                        if decay is not None and d.get("ema") is None:
                            # the first update copies the parameter
                            d["ema"] = _zeros_as(p, state_want(self.algorithm, "ema", wants))
                            created.append((index, "ema"))
                            fresh_ema.add(index)
                        for n in ("master", "compensation"):
                            if n in wants and d.get(n) is None:
                                d[n] = _zeros_as(p, wants[n])
                                if n == "master":  # the parameter's value, exactly
                                    d[n][...] = p
                                created.append((index, n))
                    index += 1
            if not created:
                return None
            return fresh, fresh_ema, _Plan(self, params)
        except BaseException:
            for i, key in reversed(created):
                if key is None:
                    del self.state[i]
                else:
                    del self.state[i][key]
            raise

    def _check_grads(self, plan: _Plan,
                     grads: Any) -> tuple[list[Any], np.ndarray, list[int]]:
        """The grads as a list, their addresses (0 for None) and the indices that have one."""
        params = plan.params
        if isinstance(grads, np.ndarray) or not isinstance(grads, Sequence):
            raise TypeError(f"Invalid grads: {check._describe(grads)} (expected a list with "
                            f"one array or None per parameter)")
        if len(grads) != len(params):
            raise ValueError(f"Invalid grads: {len(grads)} entries (expected {len(params)}, "
                             f"one per parameter in group order)")
        grads = list(grads)
        dtypes, shapes, strides = plan.dtypes, plan.shapes, plan.strides
        from_buffer, addressof = ctypes.c_char.from_buffer, ctypes.addressof
        addresses: list[int] | None = None
        # Fast path, one C-level pass per check: every gradient a plain ndarray with its
        # parameter's dtype, shape and strides, writeable and C-contiguous (else the loop).
        if (all(map(operator.is_, map(type, grads), itertools.repeat(np.ndarray)))
                and list(map(_SHAPE, grads)) == shapes and list(map(_STRIDES, grads)) == strides
                and list(map(_DTYPE, grads)) == dtypes):
            try:
                addresses = list(map(addressof, map(from_buffer, grads)))
            except (TypeError, ValueError, BufferError):
                addresses = None
        if addresses is not None:
            stepped = list(range(len(grads)))
        else:
            addresses, stepped = self._grad_addresses(plan, grads)
        table = np.array(addresses, np.int64)
        if stepped:
            take = np.array(stepped, np.int64)
            lo = table[take]
            hit = plan.overlapping(lo, lo + plan.nbytes[take])
            if hit >= 0:
                i = stepped[hit]
                other = plan.spans.find(int(lo[hit]), int(lo[hit] + plan.nbytes[i]))
                raise ValueError(f"Invalid grads[{i}]: it overlaps {other} in memory "
                                 f"(expected a separate array)")
        return grads, table, stepped

    def _grad_addresses(self, plan: _Plan, grads: list[Any]) -> tuple[list[int], list[int]]:
        """Each gradient checked (one at a time): its address (0 for None), and the indices
        that have one."""
        params = plan.params
        dtypes, shapes, strides = plan.dtypes, plan.shapes, plan.strides
        addresses = [0] * len(params)
        stepped = []
        from_buffer, addressof = ctypes.c_char.from_buffer, ctypes.addressof
        for i, g in enumerate(grads):
            if g is None:
                continue
            if type(g) is not np.ndarray or g.dtype is not dtypes[i] or \
                    g.shape != shapes[i] or g.strides != strides[i]:
                self._check_grad(i, params[i], g)
            try:
                addresses[i] = addressof(from_buffer(g))
            except (TypeError, ValueError, BufferError):  # read-only, empty or not C order
                addresses[i] = base_address(g)
            stepped.append(i)
        return addresses, stepped

    @staticmethod
    def _check_grad(i: int, p: np.ndarray, g: Any) -> None:
        if not isinstance(g, np.ndarray) or isinstance(g, np.ma.MaskedArray):
            raise TypeError(f"Invalid grads[{i}]: {check._describe(g)} (expected a "
                            f"numpy.ndarray like params[{i}], or None)")
        if g.dtype != p.dtype:
            raise TypeError(f"Invalid grads[{i}]: dtype {g.dtype} (expected {p.dtype}, "
                            f"the dtype of params[{i}])")
        if g.shape != p.shape:
            raise ValueError(f"Invalid grads[{i}]: shape {g.shape} (expected {p.shape}, "
                             f"the shape of params[{i}])")
        if not (g.flags.c_contiguous and p.flags.c_contiguous):
            check.check_layout(f"grads[{i}]", g, f"params[{i}]", p)

    # -- the weight EMA -----------------------------------------------------------------------

    def swap_ema(self) -> None:
        """Exchange every parameter with its weight EMA (``state[i]['ema']``), in place, one
        pass per array: call it to evaluate (or save) the EMA weights, and again to go back to
        training. Exact both ways. Parameters without an EMA (never stepped with
        ``ema_decay`` set) are left as they are. All or nothing: everything is checked first
        and an interrupt waits for the swap to finish. ``step()`` refuses to run while the
        EMA weights are in (``ema_swapped``)."""
        work = []
        for i, p in enumerate(self._params()):
            ema = self.state.get(i, {}).get("ema")
            if ema is not None:
                _generic.swap_arrays((f"params[{i}]", f"state[{i}]['ema']"), (p, ema))
                work.append((p, ema))
        if not work and not self.ema_swapped:
            raise RuntimeError(f"{type(self).__name__}.swap_ema(): no parameter has a weight "
                               f"EMA (set ema_decay and step first)")
        with deferred_signals():
            for p, ema in work:
                _generic.ema_swap(p, ema, self.backend)
            self.ema_swapped = not self.ema_swapped

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        """``with opt.ema_weights(): evaluate()``: the EMA weights in the parameters inside the
        block, the training weights back after it (even when it raises)."""
        if self.ema_swapped:
            raise RuntimeError(f"{type(self).__name__}.ema_weights(): the EMA weights are "
                               f"already swapped in")
        self.swap_ema()
        try:
            yield
        finally:
            self.swap_ema()

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer's state: step counts, state arrays, hyperparameters.

        Parameters are referred to by index (group order), as in torch; the arrays are copies.
        """
        groups, first = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(first, first + n))})
            first += n
        state = {i: {k: (v.copy() if isinstance(v, (np.ndarray, _quant.State8bit)) else v)
                     for k, v in s.items()} for i, s in self.state.items()}
        return {"format": _FORMAT, "format_version": FORMAT_VERSION,
                "optimizer": type(self).__name__, "state": state, "param_groups": groups,
                "ema_swapped": self.ema_swapped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``; everything is checked first, so an error changes nothing."""
        groups, state = self._check_state_dict(state_dict)
        swapped = state_dict.get("ema_swapped", False)
        if type(swapped) is not bool:
            raise ValueError(f"Invalid state_dict for {type(self).__name__}: ema_swapped "
                             f"{swapped!r} (expected a bool)")
        for mine, theirs in zip(self.param_groups, groups):
            mine.update({k: v for k, v in theirs.items() if k != "params"})
        self.state = state
        self.ema_swapped = swapped
        self._plan = None

    def _check_state_dict(self, sd: Any) -> tuple[list[dict[str, Any]], dict[int, Any]]:
        def bad(why: str) -> ValueError:
            return ValueError(f"Invalid state_dict for {type(self).__name__}: {why}")

        if not isinstance(sd, dict):
            raise TypeError(f"Invalid state_dict: {type(sd).__name__} (expected a dict)")
        if sd.get("format") != _FORMAT:
            raise bad(f"format {sd.get('format')!r} (expected {_FORMAT!r})")
        if sd.get("format_version") != FORMAT_VERSION:
            raise bad(f"format_version {sd.get('format_version')!r} (this version of fastopt "
                      f"reads {FORMAT_VERSION})")
        if sd.get("optimizer") != type(self).__name__:
            raise bad(f"it was saved by {sd.get('optimizer')!r}")
        groups = sd.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            n = len(groups) if isinstance(groups, list) else groups
            raise bad(f"{n} parameter groups (expected {len(self.param_groups)})")
        params = self._params()
        first = 0
        checked = []
        for k, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            n = len(mine["params"])
            if not isinstance(theirs, dict) or theirs.get("params") != list(range(first,
                                                                               first + n)):
                raise bad(f"group {k} does not hold parameters {first}..{first + n - 1}")
            first += n
            merged = {**mine, **{key: v for key, v in theirs.items() if key != "params"}}
            for pair in {h.torch[0] for h in SPECS[self.algorithm].hypers if h.torch}:
                if isinstance(merged.get(pair), list):  # JSON has no tuples
                    merged[pair] = tuple(merged[pair])
            try:
                opts = self._options(merged)
            except (TypeError, ValueError) as e:
                raise bad(f"group {k}: {e}") from None
            checked.append((merged, opts))
        raw = sd.get("state")
        if not isinstance(raw, dict):
            raise bad("no 'state' dict")
        group_of = [k for k, g in enumerate(self.param_groups) for _ in g["params"]]
        names = (*ALGORITHMS[self.algorithm][1], *EXTRA_STATES)
        state: dict[int, dict[str, Any]] = {}
        for i, s in raw.items():
            if type(i) is not int or not 0 <= i < len(params) or not isinstance(s, dict):
                raise bad(f"state entry {i!r} (expected an index below {len(params)} mapped "
                          f"to a dict)")
            try:
                step = _check_step(f"state[{i}]['step']", s.get("step"))
            except (TypeError, ValueError) as e:
                raise bad(str(e)) from None
            p = params[i]
            new: dict[str, Any] = {"step": step}
            scalars = SPECS[self.algorithm].scalar_names
            needed = (active_states(self.algorithm, checked[group_of[i]][1]) + scalars
                      if step else ())
            for key, v in s.items():
                if key == "step":
                    continue
                if key in scalars:
                    try:
                        sc = SPECS[self.algorithm].scalar_states[scalars.index(key)]
                        a = check.scalar_state(f"state[{i}][{key!r}]", v, sc.lo, sc.hi)
                    except (TypeError, ValueError) as e:
                        raise bad(str(e)) from None
                    math_type = np.float32 if _storage.storage(p.dtype) else p.dtype
                    new[key] = np.array(a.reshape(-1)[0], sc.dtype or math_type)
                    continue
                if key not in names:
                    raise bad(f"state[{i}] has {key!r} (expected only "
                              f"{', '.join(names + scalars)})")
                try:
                    wants = _Storage(checked[group_of[i]][0]).dtypes(p)
                except (TypeError, ValueError) as e:
                    raise bad(str(e)) from None
                want = state_want(self.algorithm, key, wants)
                if want is Q8:
                    try:
                        _check_8bit(self.algorithm, key, f"state[{i}][{key!r}]", v, p,
                                    _Storage(checked[group_of[i]][0]).q8, i)
                    except (TypeError, ValueError) as e:
                        raise bad(str(e)) from None
                    codes = _zeros_as(p, np.dtype(np.uint8))  # the parameter's layout
                    codes[...] = v.codes
                    new[key] = _quant.State8bit(codes, v.absmax.copy(), signed=v.signed,
                                                format=v.format)
                    continue
                if want is None or type(v) is not np.ndarray or not _same_dtype(
                        v.dtype, want) or v.shape != p.shape:
                    what = (f"array of {_storage.name(v.dtype)} {v.shape}"
                            if isinstance(v, np.ndarray) else type(v).__name__)
                    expected = ("nothing: it is kept for 16-bit parameters that ask for it"
                                if want is None else f"{_storage.name(want)} {p.shape}")
                    raise bad(f"state[{i}][{key!r}] is {what} (expected {expected}, for "
                              f"params[{i}])")
                new[key] = _zeros_as(p, want)  # the parameter's memory layout
                new[key][...] = v
            missing = [n for n in needed if n not in new]
            if missing:
                raise bad(f"state[{i}] lacks {', '.join(missing)}")
            state[i] = new
        return [m for m, _ in checked], state

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to an .npz file (no pickles), atomically."""
        write_checkpoint(self.state_dict(), path)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a file written by ``save``. A missing, truncated, corrupt or mismatched file
        raises (OSError or ValueError) and leaves the optimizer unchanged."""
        self.load_state_dict(read_checkpoint(path))

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for k, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            lines += [f"    {key}: {v}" for key, v in sorted(g.items()) if key != "params"]
        return "\n".join(lines) + "\n)"


def write_checkpoint(sd: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a ``state_dict()`` to an .npz file (no pickles), atomically."""
    arrays: dict[str, np.ndarray] = {}
    steps = {}
    bfloat16 = []  # NumPy files have no bfloat16: stored as uint16 bit patterns
    eight_bit: dict[str, Any] = {}
    for i, s in sd["state"].items():
        steps[str(i)] = s["step"]
        for k, v in s.items():
            if type(v) is _quant.State8bit:  # codes and absmax, described in meta
                arrays[f"state/{i}/{k}"] = v.codes
                arrays[f"state/{i}/{k}.absmax"] = v.absmax
                eight_bit[f"state/{i}/{k}"] = {"format": v.format, "signed": v.signed,
                                               "block": _quant.BLOCK}
            elif k != "step":
                if _storage.storage(v.dtype) == "bf16":
                    v = _storage.bits(v)
                    bfloat16.append(f"state/{i}/{k}")
                arrays[f"state/{i}/{k}"] = v
    meta = {k: sd[k] for k in ("format", "format_version", "optimizer", "param_groups",
                               "ema_swapped")}
    meta["steps"] = steps
    if bfloat16:
        meta["bfloat16"] = bfloat16
    if eight_bit:
        meta["8bit"] = eight_bit
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=_json_scalar).encode(),
                                   np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    # The mode np.savez would give a new file (0o666 less the umask), or the existing
    # file's: the temporary file mkstemp makes is private (0o600).
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _json_scalar(value: Any) -> Any:
    """NumPy scalars in hyperparameters (an np.float32 lr, an np.bool_ flag) as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_checkpoint(path: str | os.PathLike[str],
                    only: Iterable[int] | None = None) -> dict[str, Any]:
    """The state_dict stored in a file written by ``Optimizer.save``; with ``only``, the
    state of those parameter indices alone (the other arrays are not read)."""
    path = os.fspath(path)
    keep = None if only is None else set(only)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            state: dict[int, dict[str, Any]] = {
                int(i): {"step": step} for i, step in meta.pop("steps").items()
                if keep is None or int(i) in keep}
            bfloat16 = set(meta.pop("bfloat16", []))
            eight_bit = meta.pop("8bit", {})
            for key in f.files:
                if key.startswith("state/") and not (key.endswith(".absmax")
                                                     and key[:-7] in eight_bit):
                    _, i, name = key.split("/", 2)
                    if keep is not None and int(i) not in keep:
                        continue
                    a = f[key]
                    if key in eight_bit:
                        info = eight_bit[key]
                        if info.get("block") != _quant.BLOCK:
                            raise ValueError(f"{key} has blocks of {info.get('block')!r} "
                                             f"elements (this version of fastopt reads "
                                             f"{_quant.BLOCK})")
                        a = _quant.State8bit(a, f[key + ".absmax"], signed=info["signed"],
                                             format=info["format"])
                    elif key in bfloat16:
                        if a.dtype != np.uint16:
                            raise ValueError(f"{key} holds {a.dtype} (expected uint16 bits)")
                        a = a.view(_numpy_dtype("bfloat16"))
                    state[int(i)][name] = a
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError,
            AttributeError, TypeError) as e:
        raise ValueError(f"Invalid checkpoint {path!r}: unreadable or corrupt "
                         f"({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"Invalid checkpoint {path!r}: no metadata")
    meta["state"] = state
    return meta


class SGD(Optimizer):
    """Stochastic gradient descent with optional heavy-ball or Nesterov momentum."""

    algorithm = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Adam(Optimizer):
    """Adam (L2 weight decay added to the gradient), optionally AMSGrad."""

    algorithm = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class AdamW(Optimizer):
    """Adam with decoupled weight decay."""

    algorithm = "adamw"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum."""

    algorithm = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Adagrad(Optimizer):
    """Adagrad with optional learning-rate decay; the accumulator starts at
    ``initial_accumulator_value``."""

    algorithm = "adagrad"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Adadelta(Optimizer):
    """Adadelta."""

    algorithm = "adadelta"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm in place of the second moment."""

    algorithm = "adamax"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay (lion-pytorch's
    interface and defaults)."""

    algorithm = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class RAdam(Optimizer):
    """RAdam: Adam with a rectified adaptive step (torch.optim.RAdam's interface);
    ``decoupled_weight_decay=True`` gives RAdamW."""

    algorithm = "radam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum (torch.optim.NAdam's interface, and its
    ``mu_product`` state); ``decoupled_weight_decay=True`` gives NAdamW."""

    algorithm = "nadam"

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class ASGD(Optimizer):
    """Averaged SGD (torch.optim.ASGD's interface): ``state[i]['ax']`` holds the average of
    parameter ``i``, to evaluate with."""

    algorithm = "asgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4,
                 alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0, *,
                 maximize: bool = False, ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                                      weight_decay=weight_decay, maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class Rprop(Optimizer):
    """Rprop (torch.optim.Rprop's interface): ``lr`` is each element's initial step size."""

    algorithm = "rprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2,
                 etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, etas=etas, step_sizes=step_sizes,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class ADOPT(Optimizer):
    """ADOPT (torch-adopt's interface, with ``clip_exponent`` for its ``clip_lambda=lambda s:
    s ** 0.25``); ``decouple=True`` is decoupled weight decay."""

    algorithm = "adopt"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.9999), eps: float = 1e-6,
                 clip_exponent: float = 0.25, weight_decay: float = 0.0,
                 decouple: bool = False, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, clip_exponent=clip_exponent,
                                      weight_decay=weight_decay, decouple=decouple,
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class AdEMAMix(Optimizer):
    """AdEMAMix (bitsandbytes' interface and defaults; ``betas=(beta1, beta2, beta3)``):
    ``state[i]['exp_avg_slow']`` is the slow EMA; ``t_alpha`` / ``t_beta3`` warm alpha and
    beta3 up over that many steps (None: no warmup)."""

    algorithm = "ademamix"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9999), alpha: float = 5.0,
                 t_alpha: float | None = None, t_beta3: float | None = None, eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096, backend: str = "auto",
                 multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, eps=eps,
                                      weight_decay=weight_decay,
                                      t_alpha=no_warmup(t_alpha),
                                      t_beta3=no_warmup(t_beta3),
                                      maximize=maximize),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class _ScheduleFree(Optimizer):
    """Schedule-Free's train/eval modes. In train mode (the start) the parameters hold y, the
    point gradients are taken at; ``eval()`` moves them to the average x, ``train()`` back,
    each one fused pass per array, all or nothing (everything is checked first, and an
    interrupt waits for the switch to finish). ``step`` refuses to run in eval mode.
    schedulefree starts in eval mode and needs a ``train()`` first; here that call is a no-op.
    The mode is ``param_groups[k]['train_mode']``, saved with checkpoints."""

    _beta1: ClassVar[str]  # the hyperparameter (functional name) the switches use as beta1

    def step(self, grads: Sequence[Any], *, loss_scale: float | None = None,
             max_grad_norm: float | None = None,
             skip_nonfinite: bool | None = None) -> StepResult:
        if not all(g.get("train_mode", True) for g in self.param_groups):
            raise RuntimeError(f"{type(self).__name__}.step() in eval mode: call .train() "
                               f"before training (and .eval() before evaluating)")
        return super().step(grads, loss_scale=loss_scale, max_grad_norm=max_grad_norm,
                            skip_nonfinite=skip_nonfinite)

    def train(self) -> None:
        """Move every parameter from x to y (no-op for groups already in train mode)."""
        self._switch(to_eval=False)

    def eval(self) -> None:
        """Move every parameter from y to the average x, to evaluate or checkpoint with."""
        self._switch(to_eval=True)

    def _switch(self, to_eval: bool) -> None:
        fn = _generic.schedulefree_swap
        work = []
        index = 0
        for group in self.param_groups:
            if bool(group.get("train_mode", True)) == to_eval:
                beta1 = self._options(group)[self._beta1]  # checked by the spec
                for p in group["params"]:
                    z = self.state.get(index, {}).get("z")
                    if z is not None:
                        _generic.swap_arrays((f"params[{index}]", f"state[{index}]['z']"),
                                             (p, z))
                        work.append((p, z, beta1))
                    index += 1
            else:
                index += len(group["params"])
        with deferred_signals():
            for p, z, beta1 in work:
                fn(p, z, beta1, to_eval, self.backend)
            for group in self.param_groups:
                group["train_mode"] = not to_eval


class AdamWScheduleFree(_ScheduleFree):
    """Schedule-Free AdamW (schedulefree's interface and defaults; ``state[i]['z']`` is the
    base sequence, ``lr_max`` and ``weight_sum`` its averaging state, kept per parameter).
    Starts in train mode; call ``eval()`` before evaluating or saving the x weights."""

    algorithm = "schedulefree_adamw"
    _beta1 = "beta1"

    def __init__(self, params: Iterable[Any], lr: float = 2.5e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: float = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r,
                                      weight_lr_power=weight_lr_power, maximize=maximize,
                                      train_mode=True),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)


class SGDScheduleFree(_ScheduleFree):
    """Schedule-Free SGD (schedulefree's interface and defaults); see AdamWScheduleFree."""

    algorithm = "schedulefree_sgd"
    _beta1 = "momentum"

    def __init__(self, params: Iterable[Any], lr: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0, warmup_steps: float = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, *, maximize: bool = False,
                 ema_decay: float | None = None,
                 state_dtype: Any = None, master_weights: bool = False,
                 param_rounding: str = "nearest", seed: int = 0,
                 state_format: str = "dynamic", min_8bit_size: int = 4096,
                 backend: str = "auto", multi_tensor: bool = True) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      warmup_steps=warmup_steps, r=r,
                                      weight_lr_power=weight_lr_power, maximize=maximize,
                                      train_mode=True),
                         backend=backend, multi_tensor=multi_tensor, ema_decay=ema_decay,
                         state_dtype=state_dtype, master_weights=master_weights,
                         param_rounding=param_rounding, seed=seed,
                         state_format=state_format, min_8bit_size=min_8bit_size)
