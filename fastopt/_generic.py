"""The one implementation behind every public ``*_step`` function, driven by the spec.

``step(spec, param, grad, states, step, backend, values)`` checks every hyperparameter (the
spec's ranges, in its order), the spec's constraints, ``step``, which states are given, and the
arrays; then it dispatches to one backend's ``update(spec, flags, param, grad, states, step,
options)``. Nothing is written before every check has passed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _backends, _device, _quant, _storage
from . import _validate as check
from ._quant import State8bit
from ._specs import EMA_SWAP, SCHEDULEFREE_SWAP, Ema, Hyper, Scalar, Spec

_INF = math.inf
_host_loaded = _backends._host_loaded  # the backend modules of NumPy arrays, by name
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)

def hyper(h: Hyper, v: Any) -> Any:
    """One hyperparameter checked: a real as a Python float, a flag as a bool."""
    if h.flag:
        return check.flag(h.name, v)
    return check.real(h.name, v, h.lo, h.hi, lo_open=h.lo_open, hi_open=h.hi_open)


def options(spec: Spec, values: tuple[Any, ...]) -> dict[str, Any]:
    """The hyperparameters checked (spec order), reals as Python floats, flags as bools."""
    out = {}
    for h, v in zip(spec.hypers, values):
        # The common case inline (a float within its bounds, a bool); anything else takes
        # hyper(), which converts it or raises.
        if h.flag:
            if v is not True and v is not False:
                v = hyper(h, v)
        elif type(v) is not float or not (-_INF < v < _INF) or (
                h.lo is not None and not (v > h.lo if h.lo_open else v >= h.lo)) or (
                h.hi is not None and not (v < h.hi if h.hi_open else v <= h.hi)):
            v = hyper(h, v)
        out[h.name] = v
    if spec.constraints is not None:
        spec.constraints(out)
    return out


def _step(spec: Spec, value: Any, flags: tuple[bool, ...]) -> int:
    if type(value) is int and 1 <= value <= check.MAX_STEP:
        return value
    if spec.step == "required":
        return check.step(spec.fn_name, value, True)
    if spec.step == "unused":
        return check.step(spec.fn_name, value, False)
    on = flags[spec.flag_names.index(spec.step)]
    return check.step(f"{spec.fn_name} with {spec.step}", value, on)


class _Config:
    """What a call's hyperparameters decide, checked once: the options, the flags, the active
    states and the names of the call's arrays. Reused while a spec is called with the very same
    value objects (literals and defaults are; a schedule's new lr is a new float: checked
    again), so identity, not equality, is the test: ``1.0 == True``."""

    __slots__ = ("values", "same", "opts", "flags", "active", "names", "on", "off", "plain")

    def __init__(self, spec: Spec, values: tuple[Any, ...]) -> None:
        self.opts = options(spec, values)  # raises on a bad value: nothing is cached
        self.flags = spec.flag_values(self.opts)
        self.active = spec.active(self.flags)
        self.names = ("param", "grad",
                      *[s.name for s, on in zip(spec.states, self.active) if on])
        # The positions of the active states (with whether each may be None: optional ones
        # activated by a flag must be given), and of the inactive ones.
        self.on = tuple((k, spec.states[k].when is not None)
                        for k, on in enumerate(self.active) if on)
        self.off = tuple(k for k, on in enumerate(self.active) if not on)
        self.values = values
        self.same = _identical(len(values))
        self.plain: _Plain | None = None  # made by the first _plain_step


# The last configuration of each spec (a plain dict write: safe across threads, each call
# reads one entry and checks it matches). Only values that cannot change in place are kept
# (a 0-d array lr could be assigned between two calls with the same object).
_configs: dict[str, _Config] = {}
_IMMUTABLE = frozenset({float, bool, int, type(None)})


def _identical(n: int) -> Any:
    """A function ``same(a, b)``: whether the length-``n`` tuples ``a`` and ``b`` hold the
    very same objects (twice as fast as ``all(map(operator.is_, a, b))``; made once per n)."""
    f = _identical_by_length.get(n)
    if f is None:
        xs, ys = [f"x{i}" for i in range(n)], [f"y{i}" for i in range(n)]
        source = (f"def same(a, b):\n    {''.join(x + ', ' for x in xs)}= a\n"
                  f"    {''.join(y + ', ' for y in ys)}= b\n"
                  f"    return {' and '.join(f'{x} is {y}' for x, y in zip(xs, ys)) or 'True'}\n")
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<fastopt identical {n}>", "exec"), namespace)  # noqa: S102
        f = _identical_by_length[n] = namespace["same"]
    return f


_identical_by_length: dict[int, Any] = {}


def _config(spec: Spec, values: tuple[Any, ...]) -> _Config:
    c = _configs.get(spec.name)
    if c is None or len(c.values) != len(values) or not c.same(c.values, values):
        c = _Config(spec, values)
        if all(type(v) in _IMMUTABLE for v in values):
            _configs[spec.name] = c
    return c


def _given(spec: Spec, c: _Config, param: Any, grad: Any, states: tuple[Any, ...]
           ) -> list[Any]:
    """param, grad and the states the configuration uses; a state given but unused, or
    missing where its option needs it, is a ValueError."""
    given = [param, grad]
    for k, optional in c.on:
        a = states[k]
        if a is None and optional:  # a required one: arrays() names it
            s = spec.states[k]
            raise ValueError(f"Invalid {s.name}: None (expected an array: {s.condition})")
        given.append(a)
    for k in c.off:
        if states[k] is not None:
            s = spec.states[k]
            raise ValueError(f"Invalid {s.name}: an array was given but is not used (expected "
                             f"None unless {s.condition})")
    return given


_NEAREST = (None, None, "nearest", 0)


def _plain_step(spec: Spec, param: np.ndarray, grad: Any, states: tuple[Any, ...], step: Any,
                backend: str, values: tuple[Any, ...]) -> bool:
    """The most common call, done with the fewest checks: hyperparameters already checked
    (the very same value objects as the spec's last call), an int step in range, NumPy arrays
    of one dtype (the param's float32 or float64), 1-D, contiguous and non-empty, exactly the
    states the options use, on a backend whose kernels check overlap. Returns False having
    done nothing when the call is anything else (the general path then checks it and raises
    where it must); True when the update is done."""
    c = _configs.get(spec.name)
    if (c is None or len(c.values) != len(values) or not c.same(c.values, values)
            or type(step) is not int or not 1 <= step <= check.MAX_STEP):
        return False
    mod = _host_loaded.get(backend)
    plain = c.plain
    if plain is None or plain.mod is not mod:
        if mod is None or not getattr(mod, "PLAIN_STEP", False) or spec.scalar_states:
            return False
        plain = c.plain = _Plain(spec, c, mod)
    d = param.dtype
    if (d is not _F32 and d is not _F64) or param.ndim != 1 or not param.size:
        return False
    f = param.flags
    if not f.c_contiguous or not f.writeable:
        return False
    shape = param.shape
    if type(grad) is not np.ndarray or grad.dtype is not d or grad.shape != shape or \
            not grad.flags.c_contiguous:
        return False
    full = [param, grad, *states]
    for k in plain.off:
        if full[k] is not None:
            return False
        full[k] = param
    for k in plain.on:
        a = full[k]
        if type(a) is not np.ndarray or a.dtype is not d or a.shape != shape:
            return False
        f = a.flags
        if not f.c_contiguous or not f.writeable:
            return False
    args = (step, *plain.hypers) if spec.takes_step else plain.hypers
    par = param.size >= mod.PARALLEL_MIN_SIZE
    k = plain.kernels[par]
    if k is None:
        k = plain.kernels[par] = mod.kernel(spec, c.flags, par)
    o = mod.run_parallel(k, *full, *args) if par else k(*full, *args)
    if o >= 0:  # two arrays overlap: found by the kernel, before it wrote anything
        raise check.overlap_error(c.names, *divmod(o, 64))
    return True


class _Plain:
    """What _plain_step needs of a configuration on a backend module that offers it
    (``PLAIN_STEP``: the numba backend): its kernels (serial, parallel: looked up when first
    used), their float arguments, and the positions in ``[param, grad, *states]`` of the
    inactive and the active states."""

    __slots__ = ("mod", "kernels", "hypers", "off", "on")

    def __init__(self, spec: Spec, c: _Config, mod: Any) -> None:
        self.mod = mod
        self.kernels: list[Any] = [None, None]
        self.hypers = mod.hyper_args(spec, c.opts)
        self.off = tuple(2 + k for k in c.off)
        self.on = tuple(2 + k for k, _ in c.on)


def step(spec: Spec, param: Any, grad: Any, states: tuple[Any, ...], step: Any, backend: str,
         values: tuple[Any, ...], scalars: tuple[Any, ...] = (),
         ema: tuple[Any, Any, Any] = (None, 0.999, None),
         store: tuple[Any, Any, Any, Any] = _NEAREST) -> None:
    """Validate, then update in place (see the module docstring). ``scalars``: the scalar
    states (0-d arrays, or None to derive them from ``step``), in the spec's order; ``ema``:
    the weight EMA's ``(array or None, decay, ema_step)`` (see ema_options); ``store``: a
    16-bit parameter's ``(master, compensation, rounding, seed)`` (see store_options). Torch
    tensors written (all arrays but the gradient) get their autograd version bumped
    afterwards."""
    if (type(param) is np.ndarray and ema[0] is None and ema[2] is None
            and (store is _NEAREST or (store[0] is None and store[1] is None
                                       and type(store[2]) is str and store[2] == "nearest"
                                       and type(store[3]) is int))
            and _plain_step(spec, param, grad, states, step, backend, values)):
        return None
    if store is not _NEAREST and (store[0] is not None or store[1] is not None or type(
            store[2]) is not str or store[2] != "nearest" or type(store[3]) is not int):
        if store[0] is not None or store[1] is not None or store[2] != "nearest":
            return _step_stored(spec, param, grad, states, step, backend, values, scalars,
                                ema, store)
        store_options(store, None)  # a seed alone: checked, unused
    c = _config(spec, values)
    opts, flags, active = c.opts, c.flags, c.active
    t = _step(spec, step, flags)
    ema_array = ema[0]
    if ema_array is not None or ema[2] is not None:
        decay, first = ema_options(ema_array, ema[1], ema[2], step)
    given = _given(spec, c, param, grad, states)
    if ema_array is None:
        names, inputs = c.names, tuple(given)
    else:
        names, inputs = (*c.names, "ema"), (*given, ema_array)
    try:
        arrays = check.arrays(names, inputs, overlap=False)
    except TypeError:
        if any(type(a) is State8bit for a in states):  # 8-bit states take the slower path
            return _step_stored(spec, param, grad, states, step, backend, values, scalars,
                                ema, store)
        raise
    mod = _backends.get(backend, arrays[0])
    if type(arrays[0]) is np.ndarray:
        formats = _formats(arrays, backend, mod)
        if not arrays[0].size or not getattr(mod, "CHECKS_OVERLAP", False):
            check.no_overlap(names, arrays)  # else: the kernel checks, before writing
    else:
        formats = _device_formats(arrays, backend, mod)
    if ema_array is None:
        fused = None
    else:
        fused = Ema.of(arrays[-1], decay, first, np.float32 if formats else arrays[0].dtype)
        arrays = arrays[:-1]
    written: list[tuple[Any, float]] = []
    if spec.scalar_states:
        opts = dict(opts)
        math_type = np.float32 if formats else arrays[0].dtype.type
        for sc, a in zip(spec.scalar_states, scalars):
            if a is None:
                opts[sc.name] = derived(spec, sc, t, opts, sc.dtype or math_type)
            else:
                a = check.scalar_state(sc.name, a, sc.lo, sc.hi, sc.dtype)
                opts[sc.name], new = sc.advance(float(a.reshape(-1)[0]), t, opts, a.dtype.type)
                written.append((a, new))
    if arrays[0].size:
        if arrays is inputs:  # the states as given: None exactly where inactive
            full = states
        else:
            it = iter(arrays[2:])
            full = tuple(next(it) if on else None for on in active)
        if formats is not None:
            overlap = mod.update(spec, flags, arrays[0], arrays[1], full, t, opts, fused,
                                 formats)
        elif fused is None:
            overlap = mod.update(spec, flags, arrays[0], arrays[1], full, t, opts)
        else:
            overlap = mod.update(spec, flags, arrays[0], arrays[1], full, t, opts, fused)
        if overlap is not None:  # found by the kernel, before it wrote anything
            raise check.overlap_error(names, *overlap)
    for a, new in written:
        a[...] = new
    if arrays is not inputs or (written and any(type(a) is not np.ndarray for a in scalars)):
        # Some input was not a NumPy array (check.arrays returns the very tuple it was given
        # when all are): mark the torch tensors among what was written.
        check.bump_torch_versions([x for k, x in enumerate(inputs) if k != 1]
                                  + [a for a in scalars if a is not None])


def store_options(store: tuple[Any, Any, Any, Any], t: int | None, step: Any = None
                  ) -> tuple[Any, str, int | None]:
    """Check a 16-bit parameter's storage options ``(master, compensation, rounding, seed)``.
    Returns the extra array (master or compensation, or None), its name, and the stochastic
    rounding key (None: round to nearest even)."""
    master, comp, rounding, seed = store
    if master is not None and comp is not None:
        raise ValueError("Invalid compensation: an array was given with master (expected one "
                         "of them: master weights keep the full value, compensation what "
                         "rounding lost)")
    if not isinstance(rounding, str) or rounding not in ("nearest", "stochastic"):
        raise ValueError(f"Invalid rounding: {rounding!r} (expected 'nearest' or "
                         f"'stochastic')")
    if type(seed) is bool or not isinstance(seed, (int, np.integer)) or \
            not 0 <= int(seed) < 2**64:
        raise ValueError(f"Invalid seed: {seed!r} (expected an integer from 0 to 2**64 - 1)")
    key = None
    if rounding == "stochastic":
        if comp is not None:
            raise ValueError("Invalid rounding: 'stochastic' with compensation (expected one "
                             "of them: both exist to keep small updates)")
        if step is None or t is None:
            raise ValueError("Invalid step: None with rounding='stochastic' (expected the "
                             "step number: the random bits are drawn from seed, step and "
                             "index)")
        key = _storage.sr_key(int(seed), t)
    extra = master if master is not None else comp
    return extra, "master" if master is not None else "compensation", key


def _step_stored(spec: Spec, param: Any, grad: Any, states: tuple[Any, ...], step: Any,
                 backend: str, values: tuple[Any, ...], scalars: tuple[Any, ...],
                 ema: tuple[Any, Any, Any], store: tuple[Any, Any, Any, Any]) -> None:
    """step() for a 16-bit parameter with master weights, compensation or stochastic
    rounding, or with 8-bit states: the extra array is checked with the others (last), then
    handed to the backend as a _storage.ParamStore; each 8-bit state (_quant.State8bit) is
    checked against the param (check_8bit) and handed over as it is, with its kernel format
    ("q8...") in ``formats``."""
    c = _config(spec, values)
    opts, flags = c.opts, c.flags
    t = _step(spec, step, flags)
    extra, extra_name, key = store_options(store, t, step)
    ema_array = ema[0]
    decay, first = 0.0, False
    if ema_array is not None or ema[2] is not None:
        decay, first = ema_options(ema_array, ema[1], ema[2], step)
    given = _given(spec, c, param, grad, states)
    # The 8-bit states apart: (position in given, state spec).
    q8 = [(k, spec.states[i]) for k, (i, _) in enumerate(c.on, 2)
          if type(given[k]) is State8bit]
    q8_at = {k for k, _ in q8}
    names: tuple[str, ...] = (*[n for k, n in enumerate(c.names) if k not in q8_at],
                              *(("ema",) if ema_array is not None else ()),
                              *((extra_name,) if extra is not None else ()))
    inputs = (*[a for k, a in enumerate(given) if k not in q8_at],
              *((ema_array,) if ema_array is not None else ()),
              *((extra,) if extra is not None else ()))
    arrays = check.arrays(names, inputs, overlap=False)
    mod = _backends.get(backend, arrays[0])
    if type(arrays[0]) is not np.ndarray:
        return _step_stored_device(spec, c, t, arrays, names, mod, backend, extra, extra_name,
                                   key, ema_array, decay, first, scalars, inputs, given, q8)
    pf = _storage.storage(arrays[0].dtype)
    if not pf and (extra is not None or key is not None):
        what = extra_name if extra is not None else "rounding='stochastic'"
        raise TypeError(f"Invalid {what}: given with a param of dtype "
                        f"{_storage.name(arrays[0].dtype)} (expected a bfloat16 or float16 "
                        f"param: {what} is how a 16-bit parameter is stored)")
    quantized = {k: check_8bit(c.names[k], given[k], s, arrays[0], names[0]) for k, s in q8}
    formats = _formats(arrays, backend, mod) if not q8 else _formats_8bit(
        arrays, backend, mod, given, quantized)
    assert formats is not None
    if extra is not None:
        x = arrays[-1]
        want = np.dtype(np.float32) if extra_name == "master" else arrays[0].dtype
        if x.dtype != want or _storage.storage(x.dtype) != _storage.storage(want):
            raise TypeError(f"Invalid {extra_name}: array of dtype {_storage.name(x.dtype)} "
                            f"(expected {_storage.name(want)}"
                            f"{', the dtype of param' if extra_name != 'master' else ''})")
        arrays, formats = arrays[:-1], formats[:-1]
    extra_array = None if extra is None else x
    if q8:  # param, grad, the states (an 8-bit one: codes, absmax), ema, extra: the kernels'
        it = iter(arrays)
        slots = [quantized[k] if k in quantized else next(it) for k in range(len(given))]
        arrays = (*slots, *it)
        names = (*[n for k, a in enumerate(given) for n in (
            (c.names[k], f"{c.names[k]}.absmax") if k in quantized else (c.names[k],))],
            *names[len(given) - len(q8):])
    if not arrays[0].size or not getattr(mod, "CHECKS_OVERLAP", False):
        flat_arrays = [x for a in arrays for x in (
            (a.codes, a.absmax) if type(a) is State8bit else (a,))]
        check.no_overlap(names, (*flat_arrays, *(() if extra is None else (x,))))
    fused = None
    if ema_array is not None:
        fused = Ema.of(arrays[-1], decay, first, np.float32)
        arrays = arrays[:-1]
    opts, written = _float32_scalars(spec, opts, scalars, t)
    if arrays[0].size:
        it = iter(arrays[2:])
        full = tuple(next(it) if on else None for on in c.active)
        mode = "" if extra is None else "master" if extra_name == "master" else "kahan"
        overlap = mod.update(spec, flags, arrays[0], arrays[1], full, t, opts, fused, formats,
                             (mode, extra_array, key))
        if overlap is not None:
            raise check.overlap_error(names, *overlap)
    for a, new in written:
        a[...] = new
    check.bump_torch_versions([x for k, x in enumerate(inputs) if k != 1]
                              + [a for a in scalars if a is not None])


def _float32_scalars(spec: Spec, opts: dict[str, Any], scalars: tuple[Any, ...], t: int
                     ) -> tuple[dict[str, Any], list[tuple[Any, float]]]:
    """The options with the scalar states' values at step ``t`` (float32 math: 16-bit or
    8-bit storage), and the given scalar state arrays with their new values, to write after
    the update."""
    written: list[tuple[Any, float]] = []
    if spec.scalar_states:
        opts = dict(opts)
        for sc, a in zip(spec.scalar_states, scalars):
            if a is None:
                opts[sc.name] = derived(spec, sc, t, opts, sc.dtype or np.float32)
            else:
                a = check.scalar_state(sc.name, a, sc.lo, sc.hi, sc.dtype)
                opts[sc.name], new = sc.advance(float(a.reshape(-1)[0]), t, opts, a.dtype.type)
                written.append((a, new))
    return opts, written


def _step_stored_device(spec: Spec, c: _Config, t: int, arrays: tuple[Any, ...],
                        names: tuple[str, ...], mod: Any, backend: str, extra: Any,
                        extra_name: str, key: int | None, ema_array: Any, decay: float,
                        first: bool, scalars: tuple[Any, ...], inputs: tuple[Any, ...],
                        given: list[Any], q8: list[tuple[int, Any]]) -> None:
    """_step_stored for GPU arrays (checked, with the master or compensation array last; the
    8-bit states of ``given`` at the positions ``q8`` apart): the same rules, read from the
    arrays' CUDA array interfaces."""
    formats = _device_formats(arrays, backend, mod) or ("",) * len(arrays)
    if q8:
        if not getattr(mod, "FORMATS_8BIT", False):
            if backend != "auto":
                raise TypeError(f"Invalid backend: {backend!r} does not update 8-bit states "
                                f"on the GPU (numba-cuda does)")
            mod = _backends.get("numba-cuda", arrays[0])
        cai = _device.interface(arrays[0])
        assert cai is not None
        device = _device.device_id(arrays[0], cai)
        shape = tuple(cai["shape"])
        spans = check.device_spans(arrays)
        q8_names = []
        for k, s in q8:
            q = given[k]
            _check_8bit_kind(c.names[k], q, s, check.device_dtype(arrays[0]) == _F64, names[0])
            spans.append(check.device_part(f"{c.names[k]}.codes", q.codes, "|u1",
                                           "uint8", shape, device))
            spans.append(check.device_part(f"{c.names[k]}.absmax", q.absmax, "<f4", "float32",
                                           (_quant.n_blocks(math.prod(shape)),), device))
            q8_names += [f"{c.names[k]}.codes", f"{c.names[k]}.absmax"]
        check._no_device_overlap((*names, *q8_names), (*arrays, *[
            x for k, _ in q8 for x in (given[k].codes, given[k].absmax)]), spans)
        # The kernels' slots: param, grad, the states (an 8-bit one as it is), EMA, extra.
        q8_at = {k for k, _ in q8}
        it, fit = iter(arrays), iter(formats)
        slots, slot_formats = [], []
        for k in range(len(given)):
            if k in q8_at:
                q = given[k]
                slots.append(q)
                slot_formats.append(_quant.kernel_format(q.format, q.signed))
            else:
                slots.append(next(it))
                slot_formats.append(next(fit))
        arrays, formats = (*slots, *it), (*slot_formats, *fit)
    pf = formats[0]
    if not pf and (extra is not None or key is not None):
        what = extra_name if extra is not None else "rounding='stochastic'"
        raise TypeError(f"Invalid {what}: given with a param of dtype "
                        f"{check.device_dtype(arrays[0])} (expected a bfloat16 or float16 "
                        f"param: {what} is how a 16-bit parameter is stored)")
    if extra is not None:
        want = "" if extra_name == "master" else pf
        got = check.device_dtype(arrays[-1])
        if formats[-1] != want or got.itemsize == 8:
            raise TypeError(f"Invalid {extra_name}: {check._describe(arrays[-1])} (expected "
                            f"{_storage.NAMES[want]}"
                            f"{', the dtype of param' if extra_name != 'master' else ''})")
        arrays, formats = arrays[:-1], formats[:-1]
    fused = None
    if ema_array is not None:
        fused = Ema.of(arrays[-1], decay, first, np.float32)
        arrays = arrays[:-1]
    opts, written = _float32_scalars(spec, c.opts, scalars, t)
    if arrays[0].size:
        it = iter(arrays[2:])
        full = tuple(next(it) if on else None for on in c.active)
        mode = "" if extra is None else "master" if extra_name == "master" else "kahan"
        mod.update(spec, c.flags, arrays[0], arrays[1], full, t, opts, fused, formats,
                   (mode, extra, key))
    for a, new in written:
        a[...] = new
    check.bump_torch_versions([x for k, x in enumerate(inputs) if k != 1]
                              + [a for a in scalars if a is not None])


def _device_formats(arrays: tuple[Any, ...], backend: str, mod: Any
                    ) -> tuple[str, ...] | None:
    """_formats for GPU arrays as check.arrays returns them (check.DeviceArrays)."""
    assert type(arrays) is check.DeviceArrays
    return _backend_formats(arrays.formats, backend, mod)


def _backend_formats(formats: tuple[str, ...], backend: str, mod: Any
                     ) -> tuple[str, ...] | None:
    """``formats``, or None when all are the math dtype; a backend without 16-bit kernels
    refuses 16-bit ones."""
    if not any(formats):
        return None
    if not getattr(mod, "FORMATS", False):
        raise TypeError(f"Invalid backend: {backend!r} does not update bfloat16 or float16 "
                        f"arrays")
    return formats


def check_8bit(name: str, q: State8bit, state: Any, param: np.ndarray,
               param_name: str) -> State8bit:
    """An 8-bit state checked against its slot and the (checked) param: codes of uint8 laid
    out as the param, absmax of float32 with one value per block, both writeable; returned
    with NumPy views of torch tensors."""
    _check_8bit_kind(name, q, state, param.dtype == _F64, param_name)
    codes, absmax = check._to_numpy(q.codes), check._to_numpy(q.absmax)
    if type(codes) is not np.ndarray or codes.dtype != np.uint8:
        raise TypeError(f"Invalid {name}.codes: {check._describe(codes)} (expected a "
                        f"numpy.ndarray of uint8)")
    if codes.shape != param.shape:
        raise ValueError(f"Invalid {name}.codes: shape {codes.shape} (expected {param.shape}, "
                         f"the shape of {param_name})")
    if not codes.flags.c_contiguous or not param.flags.c_contiguous:
        check.check_layout(f"{name}.codes", codes, param_name, param)
    blocks = _quant.n_blocks(param.size)
    if type(absmax) is not np.ndarray or absmax.dtype != np.float32:
        raise TypeError(f"Invalid {name}.absmax: {check._describe(absmax)} (expected a "
                        f"numpy.ndarray of float32)")
    if absmax.shape != (blocks,) or not absmax.flags.c_contiguous:
        raise ValueError(f"Invalid {name}.absmax: shape {absmax.shape}"
                         f"{'' if absmax.flags.c_contiguous else ', non-contiguous'} (expected "
                         f"a contiguous ({blocks},): one value per block of {_quant.BLOCK} "
                         f"elements of {param_name})")
    for part, a in (("codes", codes), ("absmax", absmax)):
        if not a.flags.writeable:
            raise ValueError(f"Invalid {name}.{part}: read-only array (expected a writeable "
                             f"array; it is updated in place)")
    if codes is q.codes and absmax is q.absmax:
        return q
    return State8bit(codes, absmax, signed=q.signed, format=q.format)


def _check_8bit_kind(name: str, q: State8bit, state: Any, f64: bool, param_name: str) -> None:
    """An 8-bit state fits its slot (not parameter values; the slot's sign) and the param's
    dtype (``f64``: float64, refused)."""
    if state.kind == "weights":
        raise TypeError(f"Invalid {name}: an 8-bit state (expected an array: {name} holds "
                        f"parameter values, kept at full precision)")
    if q.signed != (state.kind == "signed"):
        want, why = (("signed=True", "can be negative") if state.kind == "signed"
                     else ("signed=False", "is never negative"))
        raise ValueError(f"Invalid {name}: State8bit with signed={q.signed} (expected {want}: "
                         f"{name} {why})")
    if f64:
        raise TypeError(f"Invalid {name}: an 8-bit state with {param_name} of dtype float64 "
                        f"(expected a float32, bfloat16 or float16 {param_name}: 8-bit states "
                        f"run float32 math)")


def _formats_8bit(arrays: tuple[Any, ...], backend: str, mod: Any, given: list[Any],
                  quantized: dict[int, State8bit]) -> tuple[str, ...]:
    """_formats with 8-bit states: the kernel format of each (at its place among the given
    arrays), "" for the math dtype."""
    if not getattr(mod, "FORMATS", False):
        raise TypeError(f"Invalid backend: {backend!r} does not update 8-bit states (the "
                        f"numba and numpy backends do)")
    plain = iter(_formats(arrays, backend, mod) or ("",) * len(arrays))
    out = [_quant.kernel_format(quantized[k].format, quantized[k].signed) if k in quantized
           else next(plain) for k in range(len(given))]
    return (*out, *plain)


def _formats(arrays: tuple[Any, ...], backend: str, mod: Any) -> tuple[str, ...] | None:
    """The storage format of each host array (param, grad, the given states, the EMA), or None
    when all are the param's float32 or float64 (the common case: a few identity tests)."""
    d = arrays[0].dtype
    if d is _F32 or d is _F64:
        for a in arrays:
            if a.dtype is not d:
                break
        else:
            return None
    return _backend_formats(tuple(_storage.storage(a.dtype) or "" for a in arrays), backend,
                            mod)


def ema_options(array: Any, decay: Any, ema_step: Any, step: Any) -> tuple[float, bool]:
    """Check the weight EMA's options: ``decay`` in [0, 1] (torch's range), ``ema_step`` the
    1-based number of this EMA update (1: the EMA copies the parameter), by default the
    optimizer's ``step``. Returns ``(decay, first)``."""
    if array is None:
        raise ValueError(f"Invalid ema_step: {ema_step!r} (expected None: no ema array given)")
    d = check.real("ema_decay", decay, 0.0, 1.0)
    if ema_step is None:
        if step is None:
            raise ValueError("Invalid ema_step: None (expected an int >= 1: with step=None, "
                             "ema needs ema_step, the number of this EMA update)")
        ema_step = step
    if isinstance(ema_step, (int, np.integer)) and not isinstance(ema_step, bool) \
            and ema_step >= 1:
        return d, ema_step == 1
    raise ValueError(f"Invalid ema_step: {ema_step!r} (expected an int >= 1)")


def swap_arrays(names: tuple[str, str], values: tuple[Any, Any]) -> tuple[Any, ...]:
    """The checks of a swap's two arrays (schedulefree_swap, ema_swap), for callers that check
    every pair before swapping any."""
    return _one_float_dtype(names, check.arrays(names, values))


def _one_float_dtype(names: tuple[str, str], arrays: tuple[Any, ...]) -> tuple[Any, ...]:
    """The swaps take float32 or float64 arrays of one dtype (no 16-bit storage yet), on the
    host or the device."""
    dtypes = [a.dtype if type(a) is np.ndarray else check.device_dtype(a) for a in arrays]
    for name, d in zip(names, dtypes):
        if _storage.storage(d) != "" or d != dtypes[0]:
            raise TypeError(f"Invalid {name}: array of dtype {_storage.name(d)} (expected "
                            f"float32 or float64, one dtype for {' and '.join(names)}: the "
                            f"swaps take no 16-bit arrays yet)")
    return arrays


def schedulefree_swap(param: Any, z: Any, beta1: Any, to_eval: bool, backend: str) -> None:
    """Validate, then move ``param`` between Schedule-Free's y (train) and x (eval) in place:
    ``lerp(param, z, 1 - 1/beta1)`` to eval, ``lerp(param, z, 1 - beta1)`` to train."""
    b = check.real("beta1", beta1, 0.0, 1.0, lo_open=True, hi_open=True)
    weight = 1.0 - 1.0 / b if to_eval else 1.0 - b
    arrays = _one_float_dtype(("param", "z"), check.arrays(("param", "z"), (param, z)))
    if arrays[0].size:
        found = _backends.get(backend, arrays[0]).update(SCHEDULEFREE_SWAP, (), arrays[0],
                                                         arrays[1], (), 1, {"weight": weight})
        assert found is None, "checked above"


def ema_swap(param: Any, ema: Any, backend: str) -> None:
    """Validate, then exchange the contents of ``param`` and ``ema`` in place, one pass."""
    arrays = _one_float_dtype(("param", "ema"), check.arrays(("param", "ema"), (param, ema)))
    if arrays[0].size:
        found = _backends.get(backend, arrays[0]).update(EMA_SWAP, (), arrays[0], arrays[0],
                                                         (arrays[1],), 1, {})
        assert found is None, "checked above"


# (spec, state, scalar type, options) -> (step, value after it): the last derived value, so a
# training loop's step t + 1 costs one update.
_derived: dict[tuple[Any, ...], tuple[int, float]] = {}
MAX_REPLAY = 1 << 20  # about a second of Python


def derived(spec: Spec, s: Scalar, t: int, opts: dict[str, Any], kind: Any) -> float:
    """The value the rule uses at step ``t`` of a scalar state not given: replayed from its
    initial value with these options at every step (exact, in its scalar type, when the
    options did not change during training; pass the state to keep its true history)."""
    if not s.recurrent:
        old = s.initial(opts) if t == 1 else s.update(0.0, t - 1, _hypers(spec, opts), kind)
        return s.advance(float(kind(old)), t, opts, kind)[0]
    # Keyed by the hyperparameters only (opts also holds the scalar states set so far).
    key = (spec.name, s.name, kind, *[opts[h.name] for h in spec.hypers])
    last = _derived.get(key)
    k, value = (0, float(kind(s.initial(opts)))) if last is None or last[0] > t - 1 else last
    if t - 1 - k > MAX_REPLAY:
        raise ValueError(f"Invalid {s.name}: None at step {t} (deriving it would replay "
                         f"{t - 1 - k} steps; pass the {s.name} array kept with the state)")
    if k < t - 1:
        base = _hypers(spec, opts)
        while k < t - 1:
            k += 1
            value = float(kind(s.update(value, k, base, kind)))
    used, new = s.advance(value, t, opts, kind)
    if len(_derived) > 256:
        _derived.clear()
    _derived[key] = (t, new)
    return used


def _hypers(spec: Spec, opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` without the scalar states: what an earlier step's update may see (a state
    whose update reads another's value, as Schedule-Free's weight sum reads lr_max, then
    derives that one's history itself)."""
    return {k: v for k, v in opts.items() if k not in spec.scalar_names}
