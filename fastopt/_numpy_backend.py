"""The ``numpy`` backend: the reference implementations behind the public API."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _layout, _quant, _storage, reference
from ._specs import Ema, Spec


# update() takes bfloat16 and float16 arrays (``formats``; float32 math).
FORMATS = True


def update(spec: Spec, flags: tuple[bool, ...], param: np.ndarray, grad: np.ndarray,
           states: tuple[Any, ...], step: int, options: dict[str, Any],
           ema: Ema | None = None, formats: tuple[str, ...] | None = None,
           store: _storage.ParamStore | None = None) -> None:
    """``reference.<name>`` on validated arrays (``states`` in spec order, None if inactive),
    then ``reference.ema_update`` when ``ema`` is given. 16-bit arrays (``formats``: param,
    grad, each given state, the EMA) are updated as the kernels do: float32 copies of their
    values, the reference's float32 math, then each stored rounded to nearest even (or, for
    the parameter, as ``store`` says: see _storage.ParamStore); the EMA follows the parameter
    as stored, or its full value with a master or compensation array. An 8-bit state
    (_quant.State8bit, format "q8...") is decoded, and its fresh values stored blockwise
    (_quant.quantize_into)."""
    if formats is None:
        getattr(reference, spec.name)(param, grad, *states, step=step, **options)
        if ema is not None:
            reference.ema_update(ema.array, param, decay=1.0 - ema.weight, first=ema.first)
        return
    mode, extra, key = store or ("", None, None)
    # Elementwise, on the arrays' memory blocks in memory order (the kernels' element index);
    # an 8-bit state (format "q8...") as its codes, decoded.
    given = (param, grad, *[s for s in states if s is not None],
             *([ema.array] if ema is not None else []))
    arrays = [_flat(a.codes if f[:2] == "q8" else a) for a, f in zip(given, formats)]
    wide = [_quant.dequantize(a, g.absmax, g.format, g.signed) if f[:2] == "q8"
            else _storage.to_float32(a, f) if f else a
            for a, g, f in zip(arrays, given, formats)]
    pf = formats[0]
    if mode == "master":
        assert extra is not None
        wide[0] = _flat(extra)  # updated in place: the master copy
    elif mode == "kahan":
        assert extra is not None
        wide[0] = wide[0] + _storage.to_float32(_flat(extra), pf)
    it = iter(wide[2:])
    full = [None if s is None else next(it) for s in states]
    getattr(reference, spec.name)(wide[0], wide[1], *full, step=step, **options)
    n_written = len(arrays) - (ema is not None)
    for k in range(2, n_written):
        if formats[k][:2] == "q8":
            q = given[k]
            _quant.quantize_into(wide[k], arrays[k], q.absmax, q.format, q.signed)
        elif formats[k]:
            _storage.store(arrays[k], wide[k], formats[k])
    if key is not None:
        _storage.store_sr(arrays[0], wide[0], pf, key)
    elif pf:
        _storage.store(arrays[0], wide[0], pf)
    # (a float32 param was updated in place: wide[0] is the param itself)
    if mode == "kahan":
        assert extra is not None
        rest = (wide[0] - _storage.to_float32(arrays[0], pf)).astype(np.float32)
        _storage.store(_flat(extra), rest, pf)
    if ema is not None:
        stored = wide[0] if mode else _storage.to_float32(arrays[0], pf) if pf else arrays[0]
        e = wide[-1]
        reference.ema_update(e, stored, decay=1.0 - ema.weight, first=ema.first)
        if formats[-1]:
            _storage.store(arrays[-1], e, formats[-1])


def _flat(a: np.ndarray) -> np.ndarray:
    """A validated (dense) array's memory block, 1-D in memory order."""
    f = _layout.flat(a)
    assert f is not None, "validated arrays are dense"
    return f
