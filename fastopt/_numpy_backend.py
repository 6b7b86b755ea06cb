"""The ``numpy`` backend: the reference implementations behind the public API."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import reference
from ._specs import Ema, Spec


def update(spec: Spec, flags: tuple[bool, ...], param: np.ndarray, grad: np.ndarray,
           states: tuple[np.ndarray | None, ...], step: int, options: dict[str, Any],
           ema: Ema | None = None) -> None:
    """``reference.<name>`` on validated arrays (``states`` in spec order, None if inactive),
    then ``reference.ema_update`` when ``ema`` is given."""
    getattr(reference, spec.name)(param, grad, *states, step=step, **options)
    if ema is not None:
        reference.ema_update(ema.array, param, decay=1.0 - ema.weight, first=ema.first)
