"""The ``cupy`` backend: validated device arrays in, CUDA C++ kernels launched through CuPy.

The kernels are the sources under kernels/cupy/, compiled by NVRTC on first use of each
configuration (algorithm, dtype, vector width, option flags) and memoized per device (CuPy also
caches the compiled code on disk). They run on CuPy's current stream of the param's device.

Arrays that are not CuPy arrays (torch CUDA tensors, Numba device arrays) are wrapped with
``cupy.asarray``, zero-copy (a torch bfloat16 tensor through its int16 view). When every array
is aligned to its vector (4 elements for float math, 2 doubles) the kernel loads and stores a
vector at a time (16 bytes of float, 8 of bfloat16/float16) and finishes the last
``n % width`` elements one by one; otherwise it runs the scalar build. 16-bit arrays are
passed as they are (the kernel reads the bit patterns; common.cuh converts them).
"""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np

from . import _device, _storage
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
            formats: plans.Formats = None, store: _storage.ParamStore | None = None,
            extra: tuple[Any, ...] = ()) -> None:
    arrs = [_as_cupy(a) for a in arrays]
    p = arrs[0]
    n = p.size
    dtype = "float64" if p.dtype.itemsize == 8 else "float32"  # the math type
    t = np.float64 if dtype == "float64" else np.float32
    tail: list[Any] = []
    storage = None
    pmode, sr_key = 0, None
    if name in sources.EMA:  # the algorithms' kernels take the weight EMA's arguments last,
        # then the master or compensation array and the stochastic rounding key and offset
        e = p if ema is None else _as_cupy(ema.array)
        mode, x, sr_key = store or ("", None, None)
        pmode = sources.PMODES[mode]
        tail = [e, *[t(s) for s in (ema.scalars if ema is not None else (0.0, 1.0, 0.0))],
                p if mode != "master" else _as_cupy(x), p if mode != "kahan" else _as_cupy(x),
                np.uint32(sr_key or 0), np.int64(0)]
        if formats is not None:
            storage = _storage_types(formats, active, ema is not None, dtype)
    width = sources.TYPES[dtype][2]
    vec = width if all(a.data.ptr % (a.dtype.itemsize * width) == 0
                       for a in (*arrs, *tail[:1], *tail[4:6])) else 1
    if name == "roofline":  # 16-bit arrays as unsigned short: the same bytes
        expression = sources.roofline_expression(dtype, vec, extra[0]).replace(
            "<float,", "<unsigned short," if p.dtype.itemsize == 2 else "<float,")
    else:
        expression = sources.name_expression(name, dtype, vec, flags, ema is not None, storage,
                                             pmode, sr_key is not None)
    device = p.data.device_id
    args = (*arrs, np.int64(n), *[t(s) for s in scalars], *tail)
    if cupy.cuda.runtime.getDevice() == device:
        _function(device, name, expression)(
            (_blocks(device, -(-n // vec)),), (THREADS_PER_BLOCK,), args)
    else:
        with cupy.cuda.Device(device):
            _function(device, name, expression)(
                (_blocks(device, -(-n // vec)),), (THREADS_PER_BLOCK,), args)


def _storage_types(formats: tuple[str, ...], active: tuple[bool, ...], ema: bool,
                   dtype: str) -> tuple[str, str, str, str]:
    """The C++ storage types of (param, grad, states, EMA) for slot ``formats``. The kernels
    take one type for all states: a call whose active states differ is refused (before
    anything is written)."""
    states = {f for f, on in zip(formats[2:], active) if on}
    if len(states) > 1:
        raise TypeError(f"Invalid states: storage formats "
                        f"{sorted(_storage.NAMES[f] for f in states)} in one call (expected "
                        f"one dtype for every state on the cupy backend)")
    fs = next(iter(states), formats[0])
    fe = formats[-1] if ema else formats[0]
    return (sources.ctype(formats[0], dtype), sources.ctype(formats[1], dtype),
            sources.ctype(fs, dtype), sources.ctype(fe, dtype))


# 16-bit arrays (``formats``; float32 math), master weights, compensation and stochastic
# rounding, as on the CPU (the states of one call in one format).
FORMATS = True


# Every algorithm: the shared plan (kernel, flags, arrays, scalars), then one launch.
update = plans.updater(_launch)


def roofline(param: Any, grad: Any, states: list[Any]) -> None:
    """The same-traffic kernel over param, grad and up to three states (benchmarks only);
    16-bit arrays are read as unsigned short (the same bytes, an integer add)."""
    pad = list(states) + [param] * (3 - len(states))
    _launch("roofline", {}, [param, grad, *pad], (), (), None, extra=(len(states),))


def to_device(a: np.ndarray) -> Any:
    """A device copy of a host array (for ``fastopt check`` and the benchmarks)."""
    return cupy.asarray(np.ascontiguousarray(a))


def to_host(a: Any) -> np.ndarray:
    out: np.ndarray = cupy.asnumpy(_as_cupy(a))
    return out


def synchronize() -> None:
    cupy.cuda.get_current_stream().synchronize()
