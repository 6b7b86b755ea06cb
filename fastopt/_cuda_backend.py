"""The ``numba-cuda`` backend: validated device arrays in, Numba-CUDA kernels launched.

Accepts Numba device arrays, CuPy arrays, torch CUDA tensors and any other object with
``__cuda_array_interface__``, zero-copy (``numba.cuda.as_cuda_array``), and the arrays of
Numba's CUDA simulator. Kernels run on the default stream; numba.cuda waits for the stream an
array's producer names in its interface before using it.

The per-call coefficients are computed on the host in float64 by ``rules.*_scalars`` and cast
to the arrays' dtype, so a float32 kernel does float32 arithmetic only.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numba import config, cuda

from . import _device, _storage
from . import _validate as check
from . import _gpu_plans as plans
from ._quant import BLOCK, State8bit
from ._specs import Ema
from .kernels import cuda as kernels

_kernels: dict[tuple[Any, ...], Any] = {}

if config.ENABLE_CUDASIM:
    _is_numba_array: Callable[[Any], bool] = _device.is_simulated
else:
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

    _is_numba_array = is_cuda_ndarray


def _view(a: Any, fmt: str = "") -> Any:
    """A 1-D numba device array over the memory of ``a`` (no copy); of uint16 (the bit
    patterns) for a 16-bit ``fmt`` (any other non-empty string)."""
    if not _is_numba_array(a):
        a = _device.unwrap(a)
        if fmt:  # whatever its typestr says (<f2, <V2, <i2), the kernel reads the bits
            a = _Bits(a)
        a = cuda.as_cuda_array(a)
    if fmt and a.dtype != np.uint16:
        a = a.view(np.uint16)
    return a if a.ndim == 1 else a.reshape(a.size)


class _Bits:
    """A device array's interface with the typestr of uint16 (for 16-bit arrays)."""

    def __init__(self, a: Any) -> None:
        self.__cuda_array_interface__ = {**a.__cuda_array_interface__, "typestr": "<u2"}


def _cast(dtype: Any, values: tuple[float, ...]) -> list[Any]:
    t = np.dtype(dtype).type
    return [t(v) for v in values]


def _launch(name: str, flags: dict[str, bool], arrays: list[Any],
            scalars: tuple[float, ...], active: tuple[bool, ...], ema: Ema | None = None,
            formats: plans.Formats = None, store: _storage.ParamStore | None = None) -> None:
    mode, extra, sr_key = store or ("", None, None)
    key = (name, *flags.values(), ema is not None, formats, mode, sr_key is not None)
    k = _kernels.get(key)
    if k is None:
        slot_formats = None
        if formats is not None:
            slot_formats = (*formats, *(() if extra is None else
                                       ("",) if mode == "master" else formats[:1]))
        k = _kernels[key] = kernels.kernel(name, active, tuple(flags.items()), len(scalars),
                                           ema is not None, slot_formats, mode,
                                           sr_key is not None)
    fs = formats or ("",) * (len(arrays) + (ema is not None))
    views = []
    for a, f in zip(arrays, fs):
        if type(a) is State8bit:  # its codes and absmax
            views += [_view(a.codes), _view(a.absmax)]
        else:  # (an inactive slot holds the param: read as its storage, never touched)
            views.append(_view(a, fs[0] if a is arrays[0] else f))
    if ema is not None:
        views.append(_view(ema.array, fs[-1]))
        scalars = (*scalars, *ema.scalars)
    if extra is not None:
        views.append(_view(extra, fs[0] if mode == "kahan" else ""))
    math = np.float32 if formats is not None else views[0].dtype
    args = _cast(math, scalars)
    if sr_key is not None:
        args += [np.uint32(sr_key), np.int64(0)]
    if any(f[:2] == "q8" for f in fs):  # blockwise: one CUDA block per block of the states
        blocks, threads = kernels.launch_config(views[0].size, BLOCK)
    else:
        blocks, threads = kernels.launch_config(views[0].size)
    k[blocks, threads](*views, *args)


# 16-bit arrays (``formats``; float32 math), master weights, compensation and stochastic
# rounding, and 8-bit states (_quant.State8bit of device arrays), as on the CPU.
FORMATS = True
FORMATS_8BIT = True


# Every algorithm: the shared plan (kernel, flags, arrays, scalars), then one launch.
update = plans.updater(_launch)


def roofline(param: Any, grad: Any, states: list[Any]) -> None:
    """The same-traffic kernel over param, grad and up to three states (benchmarks only);
    16-bit arrays are read as uint16 (the same bytes, an integer add)."""
    views = [_view(a, "16" if check.device_dtype(a).itemsize == 2 else "")
             for a in (param, grad, *states)]
    p = views[0]
    pad = views[2:] + [p] * (3 - len(states))
    k = _kernels.get(key := ("roofline", len(states)))
    if k is None:
        k = _kernels[key] = kernels.roofline_kernel(len(states))
    blocks, threads = kernels.launch_config(p.size)
    k[blocks, threads](p, views[1], *pad)


def to_device(a: np.ndarray) -> Any:
    """A device copy of a host array (for ``fastopt check`` and the benchmarks)."""
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a: Any) -> np.ndarray:
    out: np.ndarray = _view(a).copy_to_host().reshape(np.shape(a) if hasattr(a, "shape") else -1)
    return out


def synchronize() -> None:
    cuda.synchronize()
