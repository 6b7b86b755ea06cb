"""What an algorithm hands a GPU kernel, shared by the cupy and numba-cuda backends.

A plan is (rule name, compile-time flags, arrays in the kernel's order, per-call scalars,
which state slots are active, the weight EMA fused into the update or None).
Inactive states are filled with the param (the kernel never touches them); the scalars are
``rules.<rule>_scalars``, float64 on the host, which the backend casts to the arrays' dtype.
"""

from __future__ import annotations

from typing import Any, Callable

from ._specs import Ema, Spec

Plan = tuple[str, dict[str, bool], list[Any], tuple[float, ...], tuple[bool, ...], Ema | None]


def plan(spec: Spec, flags: tuple[bool, ...], param: Any, grad: Any,
         states: tuple[Any, ...], step: int, options: dict[str, Any],
         ema: Ema | None = None) -> Plan:
    return (spec.rule, dict(zip(spec.flag_names, flags)),
            [param, grad, *[param if s is None else s for s in states]],
            spec.host_scalars(step, options, flags), spec.active(flags), ema)


def updater(launch: Callable[..., None]) -> Callable[..., None]:
    """A GPU backend's ``update``: build the plan, hand it to ``launch(name, flags, arrays,
    scalars, active, ema)``."""

    def update(spec: Spec, flags: tuple[bool, ...], param: Any, grad: Any,
               states: tuple[Any, ...], step: int, options: dict[str, Any],
               ema: Ema | None = None) -> None:
        launch(*plan(spec, flags, param, grad, states, step, options, ema))

    return update
