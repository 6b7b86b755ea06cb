"""The ``numpy`` backend: the reference implementations behind the public API."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _storage, reference
from ._specs import Ema, Spec


# update() takes bfloat16 and float16 arrays (``formats``; float32 math).
FORMATS = True


def update(spec: Spec, flags: tuple[bool, ...], param: np.ndarray, grad: np.ndarray,
           states: tuple[np.ndarray | None, ...], step: int, options: dict[str, Any],
           ema: Ema | None = None, formats: tuple[str, ...] | None = None) -> None:
    """``reference.<name>`` on validated arrays (``states`` in spec order, None if inactive),
    then ``reference.ema_update`` when ``ema`` is given. 16-bit arrays (``formats``: param,
    grad, each given state, the EMA) are updated as the kernels do: float32 copies of their
    values, the reference's float32 math, then each stored rounded to nearest even; the EMA
    follows the parameter as stored."""
    if formats is None:
        getattr(reference, spec.name)(param, grad, *states, step=step, **options)
        if ema is not None:
            reference.ema_update(ema.array, param, decay=1.0 - ema.weight, first=ema.first)
        return
    arrays = [param, grad, *[s for s in states if s is not None],
              *([ema.array] if ema is not None else [])]
    wide = [_storage.to_float32(a, f) if f else a for a, f in zip(arrays, formats)]
    it = iter(wide[2:])
    full = [None if s is None else next(it) for s in states]
    getattr(reference, spec.name)(wide[0], wide[1], *full, step=step, **options)
    for a, w, f in zip(arrays[:-1] if ema is not None else arrays, wide, formats):
        if f and a is not grad:
            _storage.store(a, w, f)
    if ema is not None:
        stored = _storage.to_float32(param, formats[0]) if formats[0] else param
        e = wide[-1]
        reference.ema_update(e, stored, decay=1.0 - ema.weight, first=ema.first)
        if formats[-1]:
            _storage.store(ema.array, e, formats[-1])
