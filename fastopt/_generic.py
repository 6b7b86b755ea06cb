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

from . import _backends
from . import _validate as check
from ._specs import EMA_SWAP, SCHEDULEFREE_SWAP, Ema, Hyper, Scalar, Spec

_INF = math.inf

# Per spec: the array names of each pattern of active states (tuples reused every call).
_names: dict[tuple[str, tuple[bool, ...]], tuple[str, ...]] = {}


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
    if type(value) is int and value >= 1:
        return value
    if spec.step == "required":
        return check.step(spec.fn_name, value, True)
    if spec.step == "unused":
        return check.step(spec.fn_name, value, False)
    on = flags[spec.flag_names.index(spec.step)]
    return check.step(f"{spec.fn_name} with {spec.step}", value, on)


def step(spec: Spec, param: Any, grad: Any, states: tuple[Any, ...], step: Any, backend: str,
         values: tuple[Any, ...], scalars: tuple[Any, ...] = (),
         ema: tuple[Any, Any, Any] = (None, 0.999, None)) -> None:
    """Validate, then update in place (see the module docstring). ``scalars``: the scalar
    states (0-d arrays, or None to derive them from ``step``), in the spec's order; ``ema``:
    the weight EMA's ``(array or None, decay, ema_step)`` (see ema_options)."""
    opts = options(spec, values)
    flags = spec.flag_values(opts)
    t = _step(spec, step, flags)
    ema_array = ema[0]
    if ema_array is not None or ema[2] is not None:
        decay, first = ema_options(ema_array, ema[1], ema[2], step)
    active = spec.active(flags)
    names = _names.get((spec.name, active))
    if names is None:
        names = _names[(spec.name, active)] = (
            "param", "grad", *[s.name for s, on in zip(spec.states, active) if on])
    given = []
    for s, a, on in zip(spec.states, states, active):
        if on:
            if a is None and s.when is not None:  # a required one: arrays() names it
                raise ValueError(f"Invalid {s.name}: None (expected an array: {s.condition})")
            given.append(a)
        elif a is not None:
            raise ValueError(f"Invalid {s.name}: an array was given but is not used (expected "
                             f"None unless {s.condition})")
    if ema_array is None:
        arrays = check.arrays(names, (param, grad, *given))
        fused = None
    else:
        arrays = check.arrays((*names, "ema"), (param, grad, *given, ema_array))
        fused = Ema.of(arrays[-1], decay, first, arrays[0].dtype)
        arrays = arrays[:-1]
    mod = _backends.get(backend, arrays[0])
    written: list[tuple[Any, float]] = []
    if spec.scalar_states:
        opts = dict(opts)
        for sc, a in zip(spec.scalar_states, scalars):
            if a is None:
                opts[sc.name] = derived(spec, sc, t, opts, sc.dtype or arrays[0].dtype.type)
            else:
                a = check.scalar_state(sc.name, a, sc.lo, sc.hi, sc.dtype)
                opts[sc.name], new = sc.advance(float(a.reshape(-1)[0]), t, opts, a.dtype.type)
                written.append((a, new))
    if arrays[0].size:
        it = iter(arrays[2:])
        full = tuple(next(it) if on else None for on in active)
        if fused is None:
            mod.update(spec, flags, arrays[0], arrays[1], full, t, opts)
        else:
            mod.update(spec, flags, arrays[0], arrays[1], full, t, opts, fused)
    for a, new in written:
        a[...] = new


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


def schedulefree_swap(param: Any, z: Any, beta1: Any, to_eval: bool, backend: str) -> None:
    """Validate, then move ``param`` between Schedule-Free's y (train) and x (eval) in place:
    ``lerp(param, z, 1 - 1/beta1)`` to eval, ``lerp(param, z, 1 - beta1)`` to train."""
    b = check.real("beta1", beta1, 0.0, 1.0, lo_open=True, hi_open=True)
    weight = 1.0 - 1.0 / b if to_eval else 1.0 - b
    arrays = check.arrays(("param", "z"), (param, z))
    if arrays[0].size:
        _backends.get(backend, arrays[0]).update(SCHEDULEFREE_SWAP, (), arrays[0], arrays[1],
                                                 (), 1, {"weight": weight})


def ema_swap(param: Any, ema: Any, backend: str) -> None:
    """Validate, then exchange the contents of ``param`` and ``ema`` in place, one pass."""
    arrays = check.arrays(("param", "ema"), (param, ema))
    if arrays[0].size:
        _backends.get(backend, arrays[0]).update(EMA_SWAP, (), arrays[0], arrays[0],
                                                 (arrays[1],), 1, {})


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
