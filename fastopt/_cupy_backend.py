"""The ``cupy`` backend: validated device arrays in, CUDA C++ kernels launched through CuPy.

The kernels are the sources under kernels/cupy/, compiled by NVRTC on first use of each
configuration (algorithm, dtype, vector width, option flags) and memoized per device (CuPy also
caches the compiled code on disk). They run on CuPy's current stream of the param's device.

Arrays that are not CuPy arrays (torch CUDA tensors, Numba device arrays) are wrapped with
``cupy.asarray``, zero-copy. When every array is 16-byte aligned the kernel loads and stores
16 bytes at a time (4 floats, 2 doubles) and finishes the last ``n % width`` elements one by one;
otherwise it runs the scalar build.
"""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np

from . import _device
from . import _gpu_plans as plans
from ._specs import Ema
from .kernels import cupy as sources

THREADS_PER_BLOCK = 256
BLOCKS_PER_SM = 8

_modules: dict[str, Any] = {}
_functions: dict[tuple[Any, ...], Any] = {}
_sm_counts: dict[int, int] = {}


def _function(device: int, name: str, expression: str) -> Any:
    """The compiled kernel ``expression`` of ``name.cu`` on ``device`` (memoized)."""
    key = (device, expression)
    fn = _functions.get(key)
    if fn is None:
        module = _modules.get(expression)
        if module is None:
            module = _modules[expression] = cupy.RawModule(
                code=sources.source(name), options=sources.OPTIONS,
                name_expressions=[expression])
        with cupy.cuda.Device(device):
            fn = _functions[key] = module.get_function(expression)
    return fn


def _blocks(device: int, work: int) -> int:
    sms = _sm_counts.get(device)
    if sms is None:
        sms = _sm_counts[device] = int(
            cupy.cuda.Device(device).attributes["MultiProcessorCount"])
    return max(1, min(-(-work // THREADS_PER_BLOCK), sms * BLOCKS_PER_SM))


def _as_cupy(a: Any) -> Any:
    return a if type(a) is cupy.ndarray else cupy.asarray(_device.unwrap(a))


def _launch(name: str, flags: dict[str, bool], arrays: list[Any], scalars: tuple[float, ...],
            active: tuple[bool, ...] = (), ema: Ema | None = None,
            extra: tuple[Any, ...] = ()) -> None:
    arrs = [_as_cupy(a) for a in arrays]
    p = arrs[0]
    n = p.size
    dtype = p.dtype.name
    t = p.dtype.type
    tail: list[Any] = []
    if name in sources.EMA:  # the algorithms' kernels take the weight EMA's arguments last
        e = p if ema is None else _as_cupy(ema.array)
        tail = [e, *[t(s) for s in (ema.scalars if ema is not None else (0.0, 1.0, 0.0))]]
    width = sources.TYPES[dtype][2]
    vec = width if all(a.data.ptr % 16 == 0 for a in (*arrs, *tail[:1])) else 1
    expression = (sources.name_expression(name, dtype, vec, flags, ema is not None)
                  if name != "roofline" else sources.roofline_expression(dtype, vec, extra[0]))
    device = p.data.device_id
    args = (*arrs, np.int64(n), *[t(s) for s in scalars], *tail)
    if cupy.cuda.runtime.getDevice() == device:
        _function(device, name, expression)(
            (_blocks(device, -(-n // vec)),), (THREADS_PER_BLOCK,), args)
    else:
        with cupy.cuda.Device(device):
            _function(device, name, expression)(
                (_blocks(device, -(-n // vec)),), (THREADS_PER_BLOCK,), args)


# Every algorithm: the shared plan (kernel, flags, arrays, scalars), then one launch.
update = plans.updater(_launch)


def roofline(param: Any, grad: Any, states: list[Any]) -> None:
    """The same-traffic kernel over param, grad and up to three states (benchmarks only)."""
    pad = list(states) + [param] * (3 - len(states))
    _launch("roofline", {}, [param, grad, *pad], (), (), None, (len(states),))


def to_device(a: np.ndarray) -> Any:
    """A device copy of a host array (for ``fastopt check`` and the benchmarks)."""
    return cupy.asarray(np.ascontiguousarray(a))


def to_host(a: Any) -> np.ndarray:
    out: np.ndarray = cupy.asnumpy(_as_cupy(a))
    return out


def synchronize() -> None:
    cupy.cuda.get_current_stream().synchronize()
