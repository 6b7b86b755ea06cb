"""8-bit blockwise optimizer states: the public container and the NumPy reference codec.

A :class:`State8bit` is one state array held in 8 bits: ``codes`` (uint8, the parameter's
shape and memory layout) and ``absmax`` (float32, one per block of 256 elements of the
parameter's memory block, the last block possibly shorter). The code tables, the scaling and
the rounding are those of kernels/q8.py, which the CPU kernels inline; this module does the
same with whole arrays, written the obvious way (a sorted search over each table's midpoints),
so the tests can hold the kernels to it code for code.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from ._layout import flat, zeros_as

BLOCK = 256  # kernels.q8.BLOCK (checked in _codec: the tables are imported when first used)
FORMATS = ("dynamic", "fp8")


@functools.cache
def _codec() -> tuple[dict[tuple[str, bool], np.ndarray], dict[str, np.float32]]:
    """The code tables by (format, signed) and each format's K, from kernels.q8: imported
    on first use, not with fastopt (building its quantizer tables takes milliseconds)."""
    from .kernels import q8

    assert q8.BLOCK == BLOCK
    return ({("dynamic", True): q8.DYNAMIC_SIGNED, ("dynamic", False): q8.DYNAMIC_UNSIGNED,
             ("fp8", True): q8.FP8_SIGNED, ("fp8", False): q8.FP8_UNSIGNED},
            {"dynamic": q8.K_DYNAMIC, "fp8": q8.K_FP8})


def n_blocks(size: int) -> int:
    """The number of absmax values of a state of ``size`` elements."""
    return -(-size // BLOCK)


def kernel_format(format: str, signed: bool) -> str:
    """The kernels' slot format (kernels/cpu/generic.py, Q8) of an 8-bit state."""
    return "q8" + format[0] + ("s" if signed else "u")


def check_format(format: Any, name: str = "format") -> str:
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"Invalid {name}: {format!r} (expected 'dynamic', bitsandbytes' map, "
                         f"or 'fp8', fastopt's 8-bit floats)")
    return format


class State8bit:
    """One optimizer state in 8 bits per element, blockwise (bitsandbytes' layout).

    ``codes``: uint8, the shape and memory layout of the parameter it belongs to; ``absmax``:
    float32, 1-D, one value per block of 256 elements of the codes' memory block (the last
    block may be shorter); ``signed``: whether the state can be negative (exp_avg: True;
    exp_avg_sq and other never-negative states: False), which picks the code table;
    ``format``: ``"dynamic"`` (bitsandbytes' dynamic maps: codes and absmax are readable by
    bitsandbytes) or ``"fp8"`` (fastopt's 8-bit floats: E4M3 for signed states, an unsigned
    E5M3 covering 10 decades for non-negative ones). Element ``k`` of the block holds
    ``table[codes[k]] * absmax[k // 256] / K`` (K: 1 for "dynamic", 1.875 for "fp8").

    Pass it where a ``*_step`` function takes a state array: the update decodes each block,
    runs the algorithm's rule in float32 on the decoded values, and stores the fresh values'
    block absmax and their nearest codes, in one pass over memory. A positive value of a
    non-negative state is never stored as 0 (the smallest positive code instead): a second
    moment flushed to zero under a surviving first moment would make Adam's update explode.
    """

    __slots__ = ("codes", "absmax", "signed", "format")
    codes: Any
    absmax: Any
    signed: bool
    format: str

    def __init__(self, codes: Any, absmax: Any, *, signed: bool,
                 format: str = "dynamic") -> None:
        if not isinstance(signed, (bool, np.bool_)):
            raise TypeError(f"Invalid signed: {signed!r} (expected True or False)")
        set_ = object.__setattr__  # read-only afterwards: an optimizer that checked the
        set_(self, "codes", codes)  # state may rely on it holding the same arrays
        set_(self, "absmax", absmax)
        set_(self, "signed", bool(signed))
        set_(self, "format", check_format(format))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"State8bit.{name} is read-only (write into the arrays, or make "
                             f"a new State8bit)")

    @classmethod
    def zeros(cls, like: Any, *, signed: bool, format: str = "dynamic") -> State8bit:
        """An all-zero state for the array ``like`` (a NumPy array: its shape and layout)."""
        a = np.asarray(like)
        codes = zeros_as(a, np.uint8) if flat(a) is not None else np.zeros(a.shape, np.uint8)
        zero = zero_code(format, signed)
        if zero:
            codes[...] = zero
        return cls(codes, np.zeros(n_blocks(a.size), np.float32), signed=signed, format=format)

    @classmethod
    def quantize(cls, values: Any, *, signed: bool, format: str = "dynamic") -> State8bit:
        """The 8-bit state of ``values`` (a float array, converted to float32; its layout)."""
        v = np.asarray(values)
        f = flat(v)
        if f is None:
            v = np.ascontiguousarray(v)
            f = v.reshape(-1)
        state = cls.zeros(v, signed=signed, format=format)
        codes = flat(state.codes)
        assert codes is not None
        quantize_into(f.astype(np.float32), codes, state.absmax, check_format(format),
                      bool(signed))
        return state

    def dequantize(self) -> np.ndarray:
        """The float32 values, in an array laid out as the codes."""
        codes = np.asarray(self.codes)
        out = zeros_as(codes, np.float32) if flat(codes) is not None else np.zeros(
            codes.shape, np.float32)
        f = flat(out)
        c = flat(codes)
        assert f is not None and c is not None, "codes with gaps: not a valid state"
        f[...] = dequantize(c, np.asarray(self.absmax), self.format, self.signed)
        return out

    def copy(self) -> State8bit:
        """A copy with its own codes and absmax (the codes' layout kept)."""
        codes = np.asarray(self.codes)
        new = np.empty_like(codes)  # order "K": the same layout
        new[...] = codes
        return State8bit(new, np.array(self.absmax, copy=True), signed=self.signed,
                         format=self.format)

    def map(self, fn: Any) -> State8bit:
        """A State8bit of ``fn(codes)`` and ``fn(absmax)``, of the same sign and format: e.g.
        ``state.map(cupy.asarray)`` puts it on the GPU, ``state.map(cupy.asnumpy)`` brings it
        back (the numba-cuda backend updates 8-bit states of device arrays)."""
        return State8bit(fn(self.codes), fn(self.absmax), signed=self.signed,
                         format=self.format)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.codes))

    @property
    def nbytes(self) -> int:
        """Bytes held: the codes and the absmax values."""
        return int(np.asarray(self.codes).nbytes + np.asarray(self.absmax).nbytes)

    def __repr__(self) -> str:
        return (f"State8bit(shape={self.shape}, signed={self.signed}, "
                f"format={self.format!r})")


def zero_code(format: str, signed: bool) -> int:
    """The code of 0 (the dynamic signed map's zero is code 127)."""
    return 127 if format == "dynamic" and signed else 0


def dequantize(codes: np.ndarray, absmax: np.ndarray, format: str, signed: bool) -> np.ndarray:
    """float32 values of 1-D ``codes`` with their blocks' ``absmax``: table value times
    ``absmax / K`` (both float32 operations, as the kernels do)."""
    tables, k = _codec()
    table = tables[format, signed]
    scale = (absmax.astype(np.float32) / k[format]).astype(np.float32)
    blocks = np.arange(codes.size) // BLOCK
    out: np.ndarray = table[codes] * scale[blocks]
    return out


def block_absmax(values: np.ndarray) -> np.ndarray:
    """Each block's largest magnitude (float32; NaN if the block holds one: the maximum is
    taken on the bit patterns, as the kernels do)."""
    bits = values.astype(np.float32).view(np.uint32) & np.uint32(0x7FFFFFFF)
    starts = np.arange(0, values.size, BLOCK)
    if not values.size:
        return np.zeros(0, np.float32)
    out: np.ndarray = np.maximum.reduceat(bits, starts).view(np.float32)
    return out


def quantize_into(values: np.ndarray, codes: np.ndarray, absmax: np.ndarray, format: str,
                  signed: bool) -> None:
    """Store the float32 1-D ``values``: each block's absmax, then every element's nearest
    code of ``values * (K / absmax)`` (zero codes when absmax is 0 or NaN; ties toward zero
    for "dynamic", to even for "fp8"; NaN: the largest magnitude of its sign; a positive
    value of a non-negative state never gets the zero code)."""
    amax = block_absmax(values)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.where(amax > 0, _codec()[1][format] / amax, np.float32(0)).astype(np.float32)
        x = (values * inv[np.arange(values.size) // BLOCK]).astype(np.float32)
    absmax[...] = amax
    codes[...] = nearest_codes(x, format, signed, values > 0)


def nearest_codes(x: np.ndarray, format: str, signed: bool,
                  positive: np.ndarray | None = None) -> np.ndarray:
    """The code of each float32 in ``x`` (already scaled; see quantize_into). ``positive``:
    where a non-negative state's value is positive (never the zero code)."""
    table = _codec()[0][format, signed]
    out = np.empty(x.shape, np.uint8)
    sign = np.signbit(x)
    mag = np.abs(x.astype(np.float64))
    for side in ((False, True) if signed else (False,)):
        # This side's codes (zero included), by increasing magnitude.
        on_side = (np.signbit(table) == side) | (table == 0)
        idx = np.flatnonzero(on_side)
        idx = idx[np.argsort(np.abs(table[idx].astype(np.float64)), kind="stable")]
        idx = _unique_magnitudes(idx, table)
        mags = np.abs(table[idx].astype(np.float64))
        mids = (mags[:-1] + mags[1:]) / 2
        j = np.searchsorted(mids, mag, side="left")  # midpoints below: ties toward zero
        if format == "fp8":  # ties to even: the magnitude's index is its code's low bits
            tie = (j < mids.size) & (mag == mids[np.minimum(j, mids.size - 1)]) & (j % 2 == 1)
            j = j + tie
        j = np.where(np.isnan(x), idx.size - 1, np.minimum(j, idx.size - 1))
        pick = sign == side if signed else np.ones(x.shape, bool)
        out[pick] = idx[j[pick]]
    if not signed:
        out[sign & ~np.isnan(x)] = 0  # negative values: 0, the unsigned tables' least
        if positive is not None:
            out[(out == 0) & positive] = 1
    return out


def _unique_magnitudes(idx: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Drop a second code of an equal magnitude (fp8's -0): the first one stays."""
    mags = np.abs(table[idx])
    keep = np.ones(idx.size, bool)
    keep[1:] = mags[1:] != mags[:-1]
    out: np.ndarray = idx[keep]
    return out


def state_bytes(size: int) -> int:
    """Bytes of one 8-bit state of ``size`` elements."""
    return size + 4 * n_blocks(size)


def nbytes_ratio(size: int) -> float:
    """An 8-bit state's bytes over a float32 state's, for ``size`` elements."""
    return state_bytes(size) / (4 * size) if size else math.nan
