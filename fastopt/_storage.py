"""Storage formats of host arrays: float32/float64 (the math dtype itself), bfloat16, float16.

16-bit arrays are updated with float32 math: the kernels read them as uint16 bit patterns and
convert around the rule (kernels/formats.py); the reference converts whole arrays here, with
the same rounding (round to nearest even, NaN stays NaN). bfloat16 arrives as NumPy arrays of
``ml_dtypes.bfloat16`` (recognised by name: ml_dtypes is never imported here) or as CPU torch
bfloat16 tensors, which NumPy cannot hold: those are viewed as :data:`BF16`, uint16 marked as
bfloat16 bit patterns (zero-copy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_F32, _F64, _F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
_U16 = np.dtype(np.uint16)

# uint16 holding bfloat16 bit patterns (a CPU torch bfloat16 tensor, viewed).
BF16 = np.dtype(np.uint16, metadata={"fastopt.storage": "bf16"})


def storage(dtype: np.dtype[Any]) -> str | None:
    """"" for float32 and float64, "bf16", "f16", or None for anything else."""
    if dtype is _F32 or dtype is _F64 or dtype == _F32 or dtype == _F64:
        return ""
    if dtype == _F16:
        return "f16"
    if dtype.itemsize == 2 and (dtype.name == "bfloat16" or (
            dtype.metadata is not None and dtype.metadata.get("fastopt.storage") == "bf16")):
        return "bf16"
    return None


def name(dtype: np.dtype[Any]) -> str:
    """The dtype's name for messages (bfloat16 for :data:`BF16`)."""
    return "bfloat16" if storage(dtype) == "bf16" else str(dtype)


def bits(a: np.ndarray) -> np.ndarray:
    """The uint16 bit patterns of a 16-bit array (a view)."""
    return a.view(_U16)


def to_float32(a: np.ndarray, fmt: str) -> np.ndarray:
    """A float32 copy of a 16-bit array's values (exact)."""
    if fmt == "f16":
        return a.astype(np.float32)
    return (bits(a).astype(np.uint32) << np.uint32(16)).view(np.float32)


def store(a: np.ndarray, values: np.ndarray, fmt: str) -> None:
    """Write float32 ``values`` into the 16-bit array ``a``, rounded to nearest even."""
    if fmt == "f16":
        a[...] = values.astype(np.float16)
        return
    b = np.ascontiguousarray(values, np.float32).view(np.uint32)
    top = b >> np.uint32(16)
    with np.errstate(over="ignore"):
        rounded = (b + np.uint32(0x7FFF) + (top & np.uint32(1))) >> np.uint32(16)
    nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, (top & np.uint32(0x8000)) | np.uint32(0x7FC0), rounded)
    bits(a)[...] = out.astype(np.uint16)
