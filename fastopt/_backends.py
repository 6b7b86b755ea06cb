"""Backend registry: which backends exist, which can run here, and which one a call uses."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

# name -> module implementing the six algorithms over validated, flattened arrays.
_MODULES = {
    "numba": "fastopt._numba_backend",
    "numpy": "fastopt._numpy_backend",
}
GPU_BACKENDS = ("cupy", "numba-cuda")
ALL_BACKENDS = ("numba", "numpy", *GPU_BACKENDS)

_loaded: dict[str, ModuleType] = {}


def _gpu_reason(name: str) -> str:
    return (f"the {name} backend is not part of this version of fastopt (CPU backends only: "
            f"numba, numpy)")


def available_backends() -> dict[str, str | None]:
    """Every backend name mapped to None when it can run here, or to the reason it cannot.

    >>> fastopt.available_backends()["numba"] is None
    True
    """
    out: dict[str, str | None] = {}
    out["numba"] = (None if importlib.util.find_spec("numba") is not None
                    else "the numba package is not installed (pip install numba)")
    out["numpy"] = None
    for name in GPU_BACKENDS:
        out[name] = _gpu_reason(name)
    return out


def get(backend: str, param: Any) -> ModuleType:
    """The backend module for an explicit name or for ``"auto"`` (chosen by array type)."""
    mod = _loaded.get(backend)
    if mod is not None:
        return mod
    if backend == "auto":
        # Arrays are validated as NumPy arrays before this point.
        mod = get("numba", param)
        _loaded["auto"] = mod
        return mod
    if backend not in ALL_BACKENDS:
        raise ValueError(f"Invalid backend: {backend!r} (expected 'auto' or one of "
                         f"{', '.join(repr(b) for b in ALL_BACKENDS)})")
    reason = available_backends()[backend]
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is not available: {reason}")
    mod = importlib.import_module(_MODULES[backend])
    _loaded[backend] = mod
    return mod
