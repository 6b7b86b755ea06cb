"""What an algorithm hands a GPU kernel, shared by the cupy and numba-cuda backends.

A plan is (rule name, compile-time flags, arrays in the kernel's order, per-call scalars,
which state slots are active, the weight EMA fused into the update or None, the storage
format of each array slot, how a 16-bit parameter is stored).
Inactive states are filled with the param (the kernel never touches them); the scalars are
``rules.<rule>_scalars``, float64 on the host, which the backend casts to the math type (float32
for 16-bit arrays).
"""

from __future__ import annotations

from typing import Any, Callable

from . import _storage
from ._specs import Ema, Spec

# The storage format of every array slot (param, grad, each state slot, then the EMA's when
# there is one; "" for float32/float64 and for an inactive slot), or None when every array is
# of the param's float32/float64 dtype.
Formats = tuple[str, ...] | None

Plan = tuple[str, dict[str, bool], list[Any], tuple[float, ...], tuple[bool, ...], Ema | None,
             Formats, _storage.ParamStore | None]


def slot_formats(formats: tuple[str, ...] | None, states: tuple[Any, ...],
                 ema: Ema | None) -> Formats:
    """The formats of the given arrays (param, grad, each given state, the EMA: what the
    functional API checks) spread over the kernel's slots ("" where a state is inactive)."""
    if formats is None:
        return None
    given = iter(formats[2:])
    return (formats[0], formats[1], *[("" if s is None else next(given)) for s in states],
            *([next(given)] if ema is not None else []))


def plan(spec: Spec, flags: tuple[bool, ...], param: Any, grad: Any,
         states: tuple[Any, ...], step: int, options: dict[str, Any],
         ema: Ema | None = None, formats: tuple[str, ...] | None = None,
         store: _storage.ParamStore | None = None) -> Plan:
    return (spec.rule, dict(zip(spec.flag_names, flags)),
            [param, grad, *[param if s is None else s for s in states]],
            spec.host_scalars(step, options, flags), spec.active(flags), ema,
            slot_formats(formats, states, ema), store)


def updater(launch: Callable[..., None]) -> Callable[..., None]:
    """A GPU backend's ``update``: build the plan, hand it to ``launch(name, flags, arrays,
    scalars, active, ema, formats, store)``."""

    def update(spec: Spec, flags: tuple[bool, ...], param: Any, grad: Any,
               states: tuple[Any, ...], step: int, options: dict[str, Any],
               ema: Ema | None = None, formats: tuple[str, ...] | None = None,
               store: _storage.ParamStore | None = None) -> None:
        launch(*plan(spec, flags, param, grad, states, step, options, ema, formats, store))

    return update
