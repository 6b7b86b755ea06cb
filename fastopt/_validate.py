"""Argument checks shared by every public entry point.

Everything is checked before anything is written: a call that raises here leaves every array
as it was. The checks are ordered cheapest-first and kept lean, because they run on every step
(a 4096-element Adam step costs a few microseconds in total).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any, Callable, TypeVar

import numpy as np

from . import _device, _layout, _storage

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (_F32, _F64)


F = TypeVar("F", bound=Callable[..., None])


def bumps_torch_versions(fn: F) -> F:
    """After ``fn`` updated its arrays, bump the autograd version of every torch tensor it
    wrote (all array arguments but the gradient, the second): NumPy views write behind
    autograd's back, and a backward pass through a graph that saved the old values must raise,
    as it does after torch.optim's in-place updates."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        fn(*args, **kwargs)
        for a in args:  # the common case, NumPy arrays only, costs this loop
            if type(a) is not np.ndarray and a is not None:
                bump_torch_versions([*args[:1], *args[2:], *[v for k, v in kwargs.items() if k != "grad"]])
                return
        if kwargs:
            bump_torch_versions([v for k, v in kwargs.items() if k != "grad"])

    return wrapper  # type: ignore[return-value]


def bump_torch_versions(values: list[Any]) -> None:
    """Bump the autograd version of the torch tensors among ``values`` (written in place)."""
    tensors = [a for a in values if type(a).__module__.startswith("torch")
               and hasattr(a, "_version")]
    if tensors:
        import torch

        torch.autograd.graph.increment_version(tensors)


def _describe(a: Any) -> str:
    t = type(a)
    if t is np.ndarray:
        return f"numpy.ndarray of dtype {_storage.name(a.dtype)}"
    if isinstance(a, np.ndarray):  # a subclass: name it, not what was expected
        return f"{t.__module__}.{t.__qualname__} of dtype {a.dtype}"
    if _device.is_simulated(a):
        return f"{t.__module__}.{t.__qualname__} of dtype {a.dtype} (CUDA simulator)"
    if hasattr(a, "dtype") and hasattr(a, "device"):
        return f"{t.__module__}.{t.__qualname__} of dtype {a.dtype} on {a.device}"
    if hasattr(a, "dtype") and hasattr(a, "shape"):
        return f"{t.__module__}.{t.__qualname__} of dtype {a.dtype}"
    return f"{t.__module__}.{t.__qualname__}"


def _to_numpy(x: Any) -> Any:
    """A zero-copy NumPy view of a CPU torch tensor or DLPack CPU array; anything else as is."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        if x.device.type == "cpu" and not x.is_sparse:
            try:
                if str(x.dtype) == "torch.bfloat16":  # NumPy has none: its bits, marked
                    import torch

                    return x.detach().view(torch.int16).numpy().view(_storage.BF16)
                return x.detach().numpy()
            except (TypeError, RuntimeError):  # a dtype NumPy lacks: rejected below
                return x
        return x
    if _device.is_simulated(x):  # wraps a host array but stands for a device array
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        try:
            if x.__dlpack_device__()[0] == 1:  # kDLCPU
                return np.from_dlpack(x)
        except (TypeError, ValueError, BufferError, RuntimeError):
            return x
    return x


def arrays(names: tuple[str, ...], values: tuple[Any, ...], overlap: bool = True
           ) -> tuple[Any, ...]:
    """Check the arrays of one call: names[0] is the param, names[1] the (read-only) grad.

    All must be NumPy arrays of one float dtype and one shape, of one dense memory layout (the
    same strides; see _layout), param and state writeable, and no two may overlap in memory
    (with ``overlap=False`` the caller checks that for host arrays, :func:`no_overlap` or in
    a kernel; device arrays are always checked here).
    CPU torch tensors and other DLPack CPU arrays (np.memmap included) are taken as zero-copy
    NumPy views; masked arrays are not (the mask would be ignored). Returns NumPy arrays.
    """
    for v in values:
        if type(v) is not np.ndarray:
            for name, x in zip(names, values):
                if isinstance(x, np.ma.MaskedArray):
                    raise TypeError(f"Invalid {name}: {_describe(x)} (expected a "
                                    f"numpy.ndarray; a masked array's mask would be ignored)")
            values = tuple(_to_numpy(x) for x in values)
            break
    param = values[0]
    dtype = getattr(param, "dtype", None)
    if type(param) is not np.ndarray and _device.interface(param) is not None:
        return device_arrays(names, values)
    if type(param) is not np.ndarray or (dtype is not _F32 and dtype is not _F64
                                         and _storage.storage(param.dtype) is None):
        raise TypeError(f"Invalid {names[0]}: {_describe(param)} (expected a numpy.ndarray of "
                        f"float32, float64, bfloat16 or float16; GPU arrays need a GPU "
                        f"backend)")
    shape = param.shape
    param_c = param.flags.c_contiguous
    for i, a in enumerate(values):
        if i:
            if type(a) is not np.ndarray:
                raise TypeError(f"Invalid {names[i]}: {_describe(a)} (expected a numpy.ndarray "
                                f"like {names[0]}, a {_describe(param)}; host and device "
                                f"arrays cannot be mixed)")
            if a.dtype is not dtype and (a.dtype != dtype or _storage.storage(a.dtype)
                                         != _storage.storage(param.dtype)):
                # (NumPy's dtype equality ignores metadata: uint16 equals the bfloat16 mark.)
                _check_mixed(names, i, a.dtype, param.dtype)
            if a.shape != shape:
                raise ValueError(f"Invalid {names[i]}: shape {a.shape} (expected {shape}, the "
                                 f"shape of {names[0]}; no broadcasting)")
        flags = a.flags
        if not flags.c_contiguous or not param_c:
            check_layout(names[i], a, names[0], param)
        if i != 1 and not flags.writeable:
            raise ValueError(f"Invalid {names[i]}: read-only array (expected a writeable "
                             f"array; it is updated in place)")
    if overlap:
        no_overlap(names, values)
    return values


def _check_mixed(names: tuple[str, ...], i: int, d: np.dtype[Any],
                 param_dtype: np.dtype[Any]) -> None:
    """Array ``i``'s dtype ``d`` differs from the param's: fine between float32 and the 16-bit
    formats (float32 math), never with float64 or anything else."""
    fmt = _storage.storage(d)
    if param_dtype != _F64 and fmt is not None and (fmt or d == _F32):
        return
    if param_dtype == _F64:
        expected = "float64, the dtype of " + names[0]
    else:
        expected = (f"float32, bfloat16 or float16 with {names[0]} of dtype "
                    f"{_storage.name(param_dtype)}")
    raise TypeError(f"Invalid {names[i]}: array of dtype {_storage.name(d)} (expected "
                    f"{expected})")


def no_overlap(names: tuple[str, ...], values: tuple[np.ndarray, ...]) -> None:
    """No two of the (checked) host arrays may share memory; empty arrays share none, but the
    same array passed twice is still a caller's bug."""
    share = np.may_share_memory if values[0].size else _same_array
    for (i, a), (j, b) in itertools.combinations(enumerate(values), 2):
        if share(a, b):
            raise overlap_error(names, i, j)


def overlap_error(names: tuple[str, ...], i: int, j: int) -> ValueError:
    """The error for arrays ``i < j`` overlapping in memory."""
    return ValueError(f"Invalid {names[j]}: it overlaps {names[i]} in memory (expected "
                      f"separate arrays)")


_F16 = np.dtype(np.float16)
_DEVICE_DTYPES: dict[str, np.dtype[Any]] = {
    "<f4": _F32, "<f8": _F64, "=f4": _F32, "=f8": _F64, "<f2": _F16, "=f2": _F16,
    _device.BF16: _storage.BF16}


def device_dtype(a: Any) -> np.dtype[Any]:
    """The dtype of a checked device array (:data:`_storage.BF16` for bfloat16)."""
    cai = _device.interface(a)
    assert cai is not None
    return _DEVICE_DTYPES[cai["typestr"]]


def _where(device: int) -> str:
    return f"cuda:{device}"


class DeviceArrays(tuple):  # type: ignore[type-arg]
    """device_arrays' result: the arrays as given, with ``formats``, the storage format of
    each (_storage.storage: "" for float32 and float64), read once from their interfaces."""

    formats: tuple[str, ...]


def device_arrays(names: tuple[str, ...], values: tuple[Any, ...]) -> DeviceArrays:
    """``arrays()`` for GPU arrays: the same rules, read from the CUDA array interface.

    All must be device arrays (host arrays are rejected, naming them) of float32, float64,
    bfloat16 or float16 (mixed as on the host: float64 alone), one shape, C-contiguous, on one
    device, the param and states writeable, and no two may share device memory (checked on
    pointer ranges). Returns the arrays unchanged, with their storage formats.
    """
    param = values[0]
    cais = []
    for i, a in enumerate(values):
        cai = _device.interface(a)
        if cai is None:
            raise TypeError(f"Invalid {names[i]}: {_describe(a)} (expected a CUDA array like "
                            f"{names[0]}, a {_describe(param)}; host and device arrays cannot "
                            f"be mixed)")
        cais.append(cai)
    dtype = _DEVICE_DTYPES.get(cais[0]["typestr"])
    if dtype is None:
        raise TypeError(f"Invalid {names[0]}: {_describe(param)} with typestr "
                        f"{cais[0]['typestr']!r} (expected float32, float64, bfloat16 or "
                        f"float16)")
    shape = tuple(cais[0]["shape"])
    devices = []
    dtypes = []
    for i, (a, cai) in enumerate(zip(values, cais)):
        d = dtype
        if i:
            found = _DEVICE_DTYPES.get(cai["typestr"])
            if found is None:
                raise TypeError(f"Invalid {names[i]}: {_describe(a)} with typestr "
                                f"{cai['typestr']!r} (expected float32, float64, bfloat16 or "
                                f"float16)")
            d = found
            if d is not dtype:
                _check_mixed(names, i, d, dtype)
            if tuple(cai["shape"]) != shape:
                raise ValueError(f"Invalid {names[i]}: shape {tuple(cai['shape'])} (expected "
                                 f"{shape}, the shape of {names[0]}; no broadcasting)")
        dtypes.append(d)
        if not _device.c_contiguous(shape, cai.get("strides"), d.itemsize):
            raise ValueError(f"Invalid {names[i]}: non-contiguous array with strides "
                             f"{tuple(cai['strides'])} (expected a C-contiguous array)")
        if i != 1 and cai["data"][1]:
            raise ValueError(f"Invalid {names[i]}: read-only array (expected a writeable "
                             f"array; it is updated in place)")
        devices.append(_device.device_id(a, cai))
    # An array whose device cannot be told (None) is not compared; CuPy arrays, torch tensors
    # and Numba arrays (through the driver) always tell.
    known = [(i, d) for i, d in enumerate(devices) if d is not None]
    for i, dev in known[1:]:
        if dev != known[0][1]:
            first = known[0][0]
            raise ValueError(f"Invalid {names[i]}: on {_where(dev)} (expected "
                             f"{_where(known[0][1])}, the device of {names[first]})")
    count = math.prod(shape)
    _no_device_overlap(names, values, [(cai["data"][0], d.itemsize * count)
                                       for cai, d in zip(cais, dtypes)])
    out = DeviceArrays(values)
    out.formats = tuple(_storage.storage(d) or "" for d in dtypes)
    return out


def _no_device_overlap(names: tuple[str, ...], values: tuple[Any, ...],
                       spans: list[tuple[int, int]]) -> None:
    """No two of the device arrays, at (address, bytes) ``spans``, may share memory; empty
    arrays share none, but the same array passed twice is still a caller's bug."""
    ranges = sorted((lo, lo + nbytes, k) for k, (lo, nbytes) in enumerate(spans) if nbytes)
    # Sorted by address, a range overlaps a later one when that one starts before it ends.
    pairs = [(min(i, j), max(i, j)) for k, (_, hi_a, i) in enumerate(ranges)
             for lo_b, _, j in ranges[k + 1:] if lo_b < hi_a]
    pairs += [(i, j) for i, j in itertools.combinations(range(len(values)), 2)
              if values[i] is values[j]]
    if pairs:
        i, j = min(pairs)
        raise ValueError(f"Invalid {names[j]}: it overlaps {names[i]} in device memory "
                         f"(expected separate arrays)")


def device_part(name: str, a: Any, typestr: str, what: str, shape: tuple[int, ...],
                device: Any) -> tuple[int, int]:
    """A device array that must have ``typestr`` (what: its dtype's name), ``shape``, be
    C-contiguous, writeable and on the ``device`` of the call's param (where both tell).
    Returns its (address, bytes)."""
    cai = _device.interface(a)
    if cai is None or cai["typestr"] not in (typestr, "=" + typestr[1:], "|" + typestr[1:]):
        raise TypeError(f"Invalid {name}: {_describe(a)} (expected a device array of {what})")
    if tuple(cai["shape"]) != shape:
        raise ValueError(f"Invalid {name}: shape {tuple(cai['shape'])} (expected {shape})")
    itemsize = np.dtype(typestr).itemsize
    if not _device.c_contiguous(shape, cai.get("strides"), itemsize):
        raise ValueError(f"Invalid {name}: non-contiguous array with strides "
                         f"{tuple(cai['strides'])} (expected a C-contiguous array)")
    if cai["data"][1]:
        raise ValueError(f"Invalid {name}: read-only array (expected a writeable array; it is "
                         f"updated in place)")
    dev = _device.device_id(a, cai)
    if dev is not None and device is not None and dev != device:
        raise ValueError(f"Invalid {name}: on {_where(dev)} (expected {_where(device)}, the "
                         f"device of the param)")
    return cai["data"][0], itemsize * math.prod(shape)


def device_spans(values: tuple[Any, ...]) -> list[tuple[int, int]]:
    """(address, bytes) of checked device arrays."""
    out = []
    for a in values:
        cai = _device.interface(a)
        assert cai is not None
        out.append((cai["data"][0], _DEVICE_DTYPES[cai["typestr"]].itemsize
                    * math.prod(cai["shape"])))
    return out


def check_layout(name: str, a: np.ndarray, param_name: str, param: np.ndarray) -> None:
    """``a`` (not C-contiguous) must be dense and laid out as ``param``."""
    if _layout.flat(a) is None:
        raise ValueError(f"Invalid {name}: array with gaps or repeated elements (strides "
                         f"{a.strides} for shape {a.shape}; expected a dense array, e.g. a "
                         f"C-contiguous one: numpy.ascontiguousarray)")
    sa, sp = a.strides, param.strides
    if a.itemsize != param.itemsize:  # 16-bit and float32 arrays: compare in elements
        sa = tuple(x // a.itemsize for x in sa)
        sp = tuple(x // param.itemsize for x in sp)
    if a is not param and not _layout.same_strides(sa, sp, a.shape):
        unit = "" if a.itemsize == param.itemsize else " (in elements)"
        raise ValueError(f"Invalid {name}: strides{unit} {sa} differ from {param_name}'s "
                         f"{sp} (expected the memory layout of {param_name}, e.g. "
                         f"numpy.empty_like({param_name}))")


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    # Empty arrays share no memory; still, the same array passed twice is a caller's bug.
    return a is b


def real(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """Check one real hyperparameter: a finite number within [lo, hi] (bounds optional)."""
    # Always a Python float: an int lr would otherwise make Numba compile another signature.
    t = type(value)
    if t is not float:
        if t is not int and (isinstance(value, (bool, np.bool_))
                             or not isinstance(value, numbers.Real)):
            raise TypeError(f"Invalid {name}: {value!r} (expected a real number)")
        try:
            value = float(value)
        except OverflowError:  # an int beyond float64's range, e.g. 10**400
            raise ValueError(f"Invalid {name}: {value!r} is beyond float64's range (expected "
                             f"a finite {name})") from None
    ok = math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" {'<' if hi_open else '<='} {hi}"
        what = f"{lo_s}{name}{hi_s}" if (lo_s or hi_s) else f"finite {name}"
        raise ValueError(f"Invalid {name}: {value!r} (expected {what})")
    result: float = value
    return result


def flag(name: str, value: Any) -> bool:
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"Invalid {name}: {value!r} (expected True or False)")


# The kernels take the step as an int64.
MAX_STEP = 2**63 - 1


def step(fn: str, value: Any, required: bool) -> int:
    """Check ``step``: an int from 1 to 2**63 - 1; ``None`` is allowed where the math does not
    use it."""
    if type(value) is int:
        if 1 <= value <= MAX_STEP:
            result: int = value
            return result
    elif value is None:
        if not required:
            return 1
        raise ValueError(f"Invalid step: None (expected an int >= 1; {fn} uses it)")
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 1 <= value <= MAX_STEP:
            return int(value)
    raise ValueError(f"Invalid step: {value!r} (expected an int from 1 to 2**63 - 1)")


def state_given(name: str, value: Any, needed: bool, why: str) -> None:
    """An optional state array must be given exactly when the options use it."""
    if needed and value is None:
        raise ValueError(f"Invalid {name}: None (expected an array: {why})")
    if not needed and value is not None:
        raise ValueError(f"Invalid {name}: an array was given but is not used (expected None "
                         f"unless {why})")


def scalar_state(name: str, value: Any, lo: float = -math.inf,
                 hi: float = math.inf, dtype: Any = None) -> np.ndarray:
    """A scalar state (NAdam's ``mu_product``, ...): a writeable host array of one float32 or
    float64 element (a 0-d NumPy array or CPU torch tensor, as torch keeps it), or of
    ``dtype`` when given, finite and within [lo, hi]."""
    a = _to_numpy(value)
    if type(a) is not np.ndarray or a.size != 1 or (
            a.dtype not in FLOAT_DTYPES if dtype is None else a.dtype != dtype):
        what = ("float32 or float64" if dtype is None else np.dtype(dtype).name)
        raise TypeError(f"Invalid {name}: {_describe(value)} (expected a host array of one "
                        f"{what} element, e.g. numpy.ones((), numpy.{what.split()[0]}), or "
                        f"None to derive it from step)")
    if not a.flags.writeable:
        raise ValueError(f"Invalid {name}: read-only array (expected a writeable array; it is "
                         f"updated in place)")
    x = float(a.reshape(-1)[0])
    if not (math.isfinite(x) and lo <= x <= hi):
        bounds = " ".join(f"{lo} <= {name} <= {hi}".split(" ")[2 if lo == -math.inf else 0:
                                                                 None if hi < math.inf else 3])
        raise ValueError(f"Invalid {name}: {x!r} (expected a finite value"
                         f"{', ' + bounds if (lo, hi) != (-math.inf, math.inf) else ''})")
    return a
