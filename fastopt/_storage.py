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

# How a 16-bit parameter is stored (the kernels' param_mode, kernels/cpu/generic.py): the mode
# ("", "master" or "kahan"), the master (float32) or compensation array, and the stochastic
# rounding key (sr_key), or None for round to nearest even.
ParamStore = tuple[str, "np.ndarray | None", "int | None"]

# uint16 holding bfloat16 bit patterns (a CPU torch bfloat16 tensor, viewed).
BF16 = np.dtype(np.uint16, metadata={"fastopt.storage": "bf16"})


# A storage format's dtype name, for messages.
NAMES = {"": "float32", "bf16": "bfloat16", "f16": "float16"}


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


def max_finite(dtype: np.dtype[Any]) -> float:
    """The largest finite value of a float dtype (NumPy's finfo knows no bfloat16)."""
    fmt = storage(dtype)
    if fmt == "bf16":
        return 3.3895313892515355e38
    return float(np.finfo(_F16 if fmt == "f16" else dtype).max)


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


# -- stochastic rounding (kernels/formats.py: random_bits, *_store_sr), for whole arrays ------

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sr_key(seed: int, step: int, stream: int = 0) -> int:
    """The 32-bit key of one stochastically rounded store: a hash of the seed, the step and
    a stream number (the tensor's position in a multi-tensor step, 0 for one array)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ step) ^ stream) & 0xFFFFFFFF


def random_bits(key: int, index: np.ndarray) -> np.ndarray:
    """formats.random_bits for an int64 array of element indices (uint32 results)."""
    u32 = np.uint32
    i = index.astype(np.int64)
    lo = (i & 0xFFFFFFFF).astype(u32)
    hi = (i >> 32).astype(u32)
    h = lo * u32(0x9E3779B9) + u32(key) + hi * u32(0xC2B2AE35)
    h ^= h >> u32(16)
    h *= u32(0x85EBCA6B)
    h ^= h >> u32(13)
    h *= u32(0xC2B2AE35)
    h ^= h >> u32(16)
    return h


def store_sr(a: np.ndarray, values: np.ndarray, fmt: str, key: int, offset: int = 0) -> None:
    """Write float32 ``values`` into the 16-bit 1-D array ``a`` (a dense block in memory order,
    as the kernels index it), rounded stochastically with the random bits of element
    ``offset + i`` under ``key`` (what the kernels do, bit for bit)."""
    assert a.ndim == 1 and values.shape == a.shape, (a.shape, values.shape)
    u32, u64 = np.uint32, np.uint64
    b = np.ascontiguousarray(values, np.float32).view(u32)
    r = random_bits(key, np.arange(offset, offset + b.size, dtype=np.int64))
    nan_bf16 = ((b >> u32(16)) & u32(0x8000)) | u32(0x7FC0)
    with np.errstate(over="ignore"):
        if fmt == "bf16":
            up = (b + (r >> u32(16))) >> u32(16)
            out = np.where((b & u32(0x7FFFFFFF)) > u32(0x7F800000), nan_bf16, up)
        else:
            sign = (b >> u32(16)) & u32(0x8000)
            m = b & u32(0x7FFFFFFF)
            payload = (m & u32(0x7FFFFF)) >> u32(13)
            nan = u32(0x7C00) + payload + (payload == 0).astype(u32)
            normal = (m - u32(112 << 23) + (r >> u32(19))) >> u32(13)
            e = m >> u32(23)
            w = np.where(e <= 112, u32(126) - e, u32(14)).astype(u32)
            w = np.minimum(w, u32(32))
            man = ((m & u32(0x7FFFFF)) | u32(0x800000)).astype(u64)
            rand = r.astype(u64) >> (u64(32) - w.astype(u64))
            tiny = ((man + rand) >> w.astype(u64)).astype(u32)
            tiny = np.where(e >= 94, tiny, u32(0))
            finite = np.where(m < u32(0x38800000), tiny, normal)
            big = np.where(m > u32(0x7F800000), nan, u32(0x7C00))
            out = sign | np.where(m >= u32(0x47800000), big, finite)
    bits(a)[...] = out.astype(np.uint16)
