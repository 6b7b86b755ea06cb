"""The update of many tensors at once, shared by fastopt's optimizer classes and fastopt.torch.

Callers hand over validated NumPy arrays (views of torch tensors included) with their options in
the functional API's names; this module picks the path: one multi-tensor launch per dtype on the
``numba`` backend, or the functional API tensor by tensor (the reference, or when the caller
asks for per-tensor calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _backends, _layout, _storage
from . import _generic
from ._algorithms import ALGORITHMS, active_states
from ._specs import SPECS
from ._layout import zeros_like

# torch.nn.utils.clip_grad_norm_ divides max_norm by (norm + 1e-6); so does fastopt.
CLIP_EPS = 1e-6


@dataclass(frozen=True)
class StepResult:
    """What ``Optimizer.step`` did.

    Attributes:
        skipped: True when a non-finite gradient was found and, as asked, nothing was updated
            (parameters, state and step counts all unchanged).
        grad_norm: the global L2 norm of the unscaled gradients (float64, computed in a fixed
            order, so the same gradients give the same norm on any thread count), or None when
            neither clipping nor a non-finite check asked for it.
        clip_coef: the factor the unscaled gradients were multiplied by (1.0 when not clipped).
        nonfinite: how many gradient elements were NaN or infinite (0 when not checked).
    """

    skipped: bool = False
    grad_norm: float | None = None
    clip_coef: float = 1.0
    nonfinite: int = 0


def check_options(algorithm: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``options`` (functional-API names; left out: the defaults) exactly as the
    functional API does: the same checks and messages. Returns them all, reals as floats."""
    spec = SPECS[algorithm]
    values = {**spec.defaults(), **options}
    if len(values) != len(spec.hypers):  # a name the spec lacks, or a required one left out
        names = {h.name for h in spec.hypers}
        unknown = [k for k in options if k not in names]
        if unknown:
            raise TypeError(f"{spec.fn_name}() got an unexpected keyword argument "
                            f"{unknown[0]!r}")
        missing = [n for n in names if n not in values]
        raise TypeError(f"{spec.fn_name}() missing required keyword-only argument: "
                        f"{missing[0]!r}")
    return _generic.options(spec, tuple(values[h.name] for h in spec.hypers))


def grad_stats(grads: list[np.ndarray], backend: str) -> tuple[float, int]:
    """Sum of squares (float64) and non-finite count over all gradients, deterministically."""
    total, bad = [], 0
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    mod = _backends.get(backend, grads[0]) if grads else None
    for dtype, group in by_dtype.items():
        if _storage.storage(dtype):  # 16-bit: exactly widened, summed in float64
            group = [x.astype(np.float32) for x in group]
        if hasattr(mod, "grad_stats"):
            s, b = mod.grad_stats(group)  # type: ignore[union-attr]
        else:
            s = math.fsum(float(np.dot(x.ravel().astype(np.float64),
                                       x.ravel().astype(np.float64))) for x in group)
            b = int(sum(x.size - np.count_nonzero(np.isfinite(x)) for x in group))
        total.append(s)
        bad += b
    return math.fsum(total), bad


def numba_disabled() -> bool:
    """Whether Numba's debugging switch NUMBA_DISABLE_JIT is on: kernels then run as plain
    Python, where the multi-tensor kernels (raw addresses) cannot; callers go tensor by tensor."""
    import numba

    return bool(numba.config.DISABLE_JIT)


def update(algorithm: str, options: dict[str, Any], params: list[np.ndarray],
           grads: list[np.ndarray], states: list[dict[str, np.ndarray]], steps: list[int], *,
           backend: str, scale: float = 1.0, ema_decay: float | None = None,
           ema_first: list[bool] | None = None,
           stores: list[dict[str, Any]] | None = None) -> None:
    """Update ``params[i]`` in place with ``grads[i] * scale`` and ``states[i]``, one call of
    the functional API per tensor (the reference backend, ``multi_tensor=False``, or under
    NUMBA_DISABLE_JIT; one launch over many tensors is ``_numba_backend.multi_step_rows``).

    ``steps[i]`` is the 1-based number of this update of tensor ``i``. Arrays validated, each
    state of its param's shape, dtype and layout. With ``ema_decay``, ``states[i]['ema']`` is
    the tensor's weight EMA, its first update where ``ema_first[i]``. ``stores[i]``: the
    functional API's keywords for a 16-bit parameter (master, compensation, rounding, seed).
    """
    fn, names = ALGORITHMS[algorithm]
    scalars = SPECS[algorithm].scalar_names  # 0-d arrays in the state dicts, updated in place
    active = active_states(algorithm, options)
    firsts = ema_first or [False] * len(params)
    for p, g, s, t, first, store in zip(params, grads, states, steps, firsts,
                                        stores or [{}] * len(params)):
        ema = {} if ema_decay is None else {"ema": s["ema"], "ema_decay": ema_decay,
                                            "ema_step": 1 if first else 2}
        if scale != 1.0:
            # Into an array of the gradient's own layout (``g * s`` would give a NumPy scalar
            # for a 0-d gradient and positive strides for a negative-stride one). 16-bit
            # gradients are scaled in float32, the kernels' math type, and passed as float32
            # (rounding them back to 16 bits would flush small unscaled values to zero).
            if _storage.storage(g.dtype):
                scaled = _layout.zeros_as(g, np.float32)
                np.multiply(g.astype(np.float32), np.float32(scale), out=scaled)
            else:
                scaled = zeros_like(g)
                np.multiply(g, p.dtype.type(scale), out=scaled)
            g = scaled
        fn(p, g, *[s[n] if n in active else None for n in names], step=t, backend=backend,
           **{n: s[n] for n in scalars}, **options, **ema, **store)
