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

from . import _device
from . import _gpu_plans as plans
from ._specs import Ema
from .kernels import cuda as kernels

_kernels: dict[tuple[Any, ...], Any] = {}

if config.ENABLE_CUDASIM:
    _is_numba_array: Callable[[Any], bool] = _device.is_simulated
else:
    from numba.cuda.cudadrv.devicearray import is_cuda_ndarray

    _is_numba_array = is_cuda_ndarray


def _view(a: Any) -> Any:
    """A 1-D numba device array over the memory of ``a`` (no copy)."""
    if not _is_numba_array(a):
        a = cuda.as_cuda_array(_device.unwrap(a))
    return a if a.ndim == 1 else a.reshape(a.size)


def _cast(dtype: Any, values: tuple[float, ...]) -> list[Any]:
    t = np.dtype(dtype).type
    return [t(v) for v in values]


def _launch(name: str, flags: dict[str, bool], arrays: list[Any],
            scalars: tuple[float, ...], active: tuple[bool, ...], ema: Ema | None = None) -> None:
    key = (name, *flags.values(), ema is not None)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = kernels.kernel(name, active, tuple(flags.items()), len(scalars),
                                           ema is not None)
    views = [_view(a) for a in arrays]
    if ema is not None:
        views.append(_view(ema.array))
        scalars = (*scalars, *ema.scalars)
    blocks, threads = kernels.launch_config(views[0].size)
    k[blocks, threads](*views, *_cast(views[0].dtype, scalars))


# Every algorithm: the shared plan (kernel, flags, arrays, scalars), then one launch.
update = plans.updater(_launch)


def roofline(param: Any, grad: Any, states: list[Any]) -> None:
    """The same-traffic kernel over param, grad and up to three states (benchmarks only)."""
    views = [_view(a) for a in (param, grad, *states)]
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
