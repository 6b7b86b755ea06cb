"""Memory layouts: an elementwise update needs one dense layout, not C-contiguity.

An array is *dense* when its elements fill one block of memory exactly, with no gaps and no
element stored twice, whatever the order of its strides (C order, Fortran order, a transposed
or channels-last tensor, negative strides). Arrays of one shape with the same strides map each
index to the same offset in their blocks, so an elementwise update can run over the blocks as
flat memory: element ``k`` of every block belongs to the same index. That is how every CPU path
of fastopt treats them (the kernels take 1-D views of the blocks, or the blocks' addresses).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


def flat(a: np.ndarray) -> np.ndarray | None:
    """A 1-D view of a dense array's memory block, or None when ``a`` is not dense.

    For a C-contiguous array this is ``a.reshape(-1)``; otherwise the axes with negative
    strides are reversed and the axes ordered by decreasing stride, which makes a dense array
    C-contiguous without moving anything.
    """
    if a.flags.c_contiguous:
        return a if a.ndim == 1 else a.reshape(-1)
    v = a
    if any(s < 0 for s in a.strides):
        v = a[tuple(slice(None, None, -1) if s < 0 and n > 1 else slice(None)
                    for s, n in zip(a.strides, a.shape))]
    v = v.transpose(sorted(range(v.ndim), key=lambda k: -v.strides[k]))
    if not v.flags.c_contiguous:
        return None
    return v.reshape(-1)


def same_strides(sa: tuple[int, ...], sb: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Whether arrays of ``shape`` with strides ``sa`` and ``sb`` map every index to the same
    offset: equal strides on every axis longer than 1 (an axis of length 1 may have any)."""
    return sa == sb or all(x == y for x, y, n in zip(sa, sb, shape) if n > 1)


def base_address(a: np.ndarray) -> int:
    """The lowest address of a dense array's block (its data pointer unless a stride is
    negative)."""
    if a.flags.c_contiguous and a.flags.writeable:
        try:  # ctypes is about 4x faster than the array interface
            return ctypes.addressof(ctypes.c_char.from_buffer(a))  # type: ignore[arg-type]
        except (TypeError, ValueError, BufferError):  # empty, or an exotic buffer
            pass
    address: int = a.__array_interface__["data"][0]
    for s, n in zip(a.strides, a.shape):
        if s < 0 and n > 1:
            address += s * (n - 1)
    return address


def zeros_like(a: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """A new array of ``a``'s shape and dtype with exactly ``a``'s strides when ``a`` is dense
    (negative strides included; ``np.zeros_like`` would make those positive), else C order."""
    out = np.full_like(a, fill)  # order "K": the same strides for dense, positive ones
    if out.strides == a.strides or flat(a) is None:
        return out
    block = np.full(a.size, fill, a.dtype)
    offset = -sum(s * (n - 1) for s, n in zip(a.strides, a.shape) if s < 0 and n > 1)
    view: np.ndarray = np.ndarray(a.shape, a.dtype, buffer=block, offset=offset,
                                  strides=a.strides)
    return view


def zeros_as(a: np.ndarray, dtype: Any) -> np.ndarray:
    """Zeros of ``dtype`` laid out as the dense ``a``, element for element (its strides in
    elements, any order and signs): what pairs with ``a`` as flat memory."""
    dtype = np.dtype(dtype)
    block = np.zeros(a.size, dtype)
    strides = tuple(x // a.itemsize * dtype.itemsize for x in a.strides)
    offset = -sum(s * (n - 1) for s, n in zip(strides, a.shape) if s < 0 and n > 1)
    out: np.ndarray = np.ndarray(a.shape, dtype, buffer=block, offset=offset, strides=strides)
    return out
