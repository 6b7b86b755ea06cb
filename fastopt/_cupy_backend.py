"""The ``cupy`` backend: validated device arrays in, CUDA C++ kernels launched through CuPy.

The kernels are the sources under kernels/cupy/, compiled by NVRTC on first use of each
configuration (algorithm, dtype, vector width, option flags) and memoized per device (CuPy also
caches the compiled code on disk). They run on CuPy's current stream of the param's device.

Arrays that are not CuPy arrays (torch CUDA tensors, Numba device arrays) are wrapped with
``cupy.asarray``, zero-copy (a torch bfloat16 tensor through its int16 view). When every array
is aligned to its vector (4 elements for float math, 2 doubles) the kernel loads and stores a
vector at a time (16 bytes of float, 8 of bfloat16/float16) and finishes the last
``n % width`` elements one by one; otherwise it runs the scalar build. 16-bit arrays are
passed as they are (the kernel reads the bit patterns; common.cuh converts them). A call with
8-bit states (``State8bit`` of device arrays) passes each state as a pointer to a small
descriptor (its arrays, format and the dynamic maps' tables, uploaded once and kept) and runs
the kernel blockwise: one block of 256 threads per block of the states (common.cuh).
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


# Q8State::format of each slot format in a q8 kernel (common.cuh).
Q8_FORMATS = {"": 0, "bf16": 1, "f16": 2, "q8ds": 3, "q8du": 4, "q8fs": 5, "q8fu": 6}
_q8_tables: dict[int, dict[str, Any]] = {}
_q8_descriptors: dict[tuple[int, ...], Any] = {}


def _tables(device: int) -> dict[str, Any]:
    """The dynamic maps' code values and quantizer tables on ``device`` (uploaded once)."""
    tables = _q8_tables.get(device)
    if tables is None:
        from .kernels import q8

        # common.cuh's Q8_KEY_LO, Q8_KEY_HI, Q8_MIDS and Q8_BLOCK
        assert (q8.KEY_LO, q8.KEY_HI, q8._MIDS, q8.BLOCK) == (0x3380, 0x3F80, 129, 256)
        with cupy.cuda.Device(device):
            tables = _q8_tables[device] = {
                "q8ds": [cupy.asarray(a) for a in (q8.DYNAMIC_SIGNED, q8._S_LUT, q8._S_MID)],
                "q8du": [cupy.asarray(a) for a in (q8.DYNAMIC_UNSIGNED, q8._U_LUT, q8._U_MID)]}
    return tables


def _q8_states(states: list[Any], formats: tuple[str, ...], active: tuple[bool, ...],
               param: Any) -> list[Any]:
    """The state arguments of a q8 kernel: for each active state a pointer to its Q8State
    descriptor (common.cuh) in one device array, the param for an inactive one. The
    descriptors of a call are uploaded once and kept (they hold addresses only)."""
    device = param.data.device_id
    tables = _tables(device)
    words: list[int] = [device]
    slot = 0
    for a, f, on in zip(states, formats, active):
        if not on:
            continue
        if f[:2] == "q8":
            codes, absmax = _as_cupy(a.codes), _as_cupy(a.absmax)
            maps = [t.data.ptr for t in tables.get(f, ())] or [0, 0, 0]
            words += [codes.data.ptr, absmax.data.ptr, *maps, Q8_FORMATS[f] | slot << 32]
            slot += 1
        else:
            words += [_as_cupy(a).data.ptr, 0, 0, 0, 0, Q8_FORMATS[f]]
    assert slot <= 3  # common.cuh Q8_SLOTS (no algorithm has more states)
    key = tuple(words)
    table = _q8_descriptors.get(key)
    if table is None:
        if len(_q8_descriptors) >= 1024:
            _q8_descriptors.clear()
        with cupy.cuda.Device(device):
            table = _q8_descriptors[key] = cupy.asarray(np.array(words[1:], np.uint64))
    out, k = [], 0
    for on in active:
        out.append(table[6 * k:] if on else param)
        k += on
    return out


def _launch(name: str, flags: dict[str, bool], arrays: list[Any], scalars: tuple[float, ...],
            active: tuple[bool, ...] = (), ema: Ema | None = None,
            formats: plans.Formats = None, store: _storage.ParamStore | None = None,
            extra: tuple[Any, ...] = ()) -> None:
    q8 = formats is not None and any(f[:2] == "q8" for f in formats)
    if q8:  # blockwise: the states as descriptors, one element per thread
        assert formats is not None
        p = _as_cupy(arrays[0])
        arrs = [p, _as_cupy(arrays[1]),
                *_q8_states(arrays[2:], formats[2:2 + len(active)], active, p)]
    else:
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
            storage = _storage_types(formats, active, ema is not None, dtype, q8)
    width = sources.TYPES[dtype][2]
    vec = 1 if q8 else width if all(a.data.ptr % (a.dtype.itemsize * width) == 0
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
                   dtype: str, q8: bool = False) -> tuple[str, str, str, str]:
    """The C++ storage types of (param, grad, states, EMA) for slot ``formats``. The kernels
    take one type for all states: a call whose active states differ is refused (before
    anything is written), unless one is 8-bit (``q8``: each state has its descriptor)."""
    states = {f for f, on in zip(formats[2:], active) if on}
    if q8:
        states = {"q8"}
    elif len(states) > 1:
        raise TypeError(f"Invalid states: storage formats "
                        f"{sorted(_storage.NAMES[f] for f in states)} in one call (expected "
                        f"one dtype for every state on the cupy backend)")
    fs = next(iter(states), formats[0])
    fe = formats[-1] if ema else formats[0]
    return (sources.ctype(formats[0], dtype), sources.ctype(formats[1], dtype),
            "q8" if q8 else sources.ctype(fs, dtype), sources.ctype(fe, dtype))


# 16-bit arrays (``formats``; float32 math), master weights, compensation and stochastic
# rounding, as on the CPU (the states of one call in one format), and 8-bit states
# (_quant.State8bit of device arrays: blockwise kernels, see common.cuh).
FORMATS = True
FORMATS_8BIT = True


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
