"""16-bit storage formats: conversions between float32 and bfloat16 / float16 bit patterns.

Numba has no bfloat16 and no CPU float16 type, so 16-bit arrays reach the kernels as uint16
views and these functions convert each element, in integer arithmetic only (no F16C, no half
type: nothing that a CPU without F16C or ``NUMBA_CPU_NAME=generic`` would lack). Plain Python
over NumPy scalar types, like kernels.rules: the Numba CPU kernels inline them, and the tests
run them exhaustively against ml_dtypes and numpy.float16.

- ``bf16_load``/``f16_load``: the exact float32 value of a 16-bit pattern (NaN payloads kept).
- ``bf16_store``/``f16_store``: float32 to the 16-bit pattern, round to nearest even, as
  ``astype(ml_dtypes.bfloat16)`` / ``astype(numpy.float16)`` bit for bit: overflow to inf,
  subnormals, and NaN stays NaN (bfloat16: the quiet NaN 0x7fc0 with the sign, as ml_dtypes;
  float16: the payload's top bits, never zero, as NumPy).

Selects, not branches, so loops calling them stay vectorised.
"""

import numpy as np

_U16 = np.uint16
_U32 = np.uint32
_F32 = np.float32


def bf16_load(u):
    return _U32(_U32(u) << _U32(16)).view(_F32)


def bf16_store(x):
    b = _F32(x).view(_U32)
    top = _U32(b >> _U32(16))
    rounded = _U32(_U32(b + _U32(0x7FFF) + _U32(top & _U32(1))) >> _U32(16))
    nan = _U32(b & _U32(0x7FFFFFFF)) > _U32(0x7F800000)
    return _U16(_U32(_U32(top & _U32(0x8000)) | _U32(0x7FC0)) if nan else rounded)


def f16_load(u):
    h = _U32(u)
    sign = _U32(_U32(h & _U32(0x8000)) << _U32(16))
    em = _U32(h & _U32(0x7FFF))
    exp = _U32(em & _U32(0x7C00))
    # Normal numbers: rebias the exponent (112 = 127 - 15) and widen the mantissa.
    normal = _U32(_U32(em << _U32(13)) + _U32(112 << 23))
    # Inf and NaN: the float32 exponent all ones, the mantissa (NaN payload) kept.
    special = _U32(_U32(0x7F800000) | _U32(_U32(em & _U32(0x3FF)) << _U32(13)))
    # Zero and subnormals: the mantissa times 2**-24, exact in float32.
    tiny = _U32(_F32(_F32(em) * _F32(5.9604644775390625e-08)).view(_U32))
    bits = special if exp == _U32(0x7C00) else (tiny if exp == _U32(0) else normal)
    return _U32(bits | sign).view(_F32)


def f16_store(x):
    b = _F32(x).view(_U32)
    sign = _U32(_U32(b >> _U32(16)) & _U32(0x8000))
    a = _U32(b & _U32(0x7FFFFFFF))
    # NaN: NumPy's rule, the payload's top 10 bits, made non-zero.
    payload = _U32(_U32(a & _U32(0x7FFFFF)) >> _U32(13))
    nan = _U32(_U32(0x7C00) + payload + _U32(payload == _U32(0)))
    # Normal results: rebias, then round to nearest even on the 13 dropped bits.
    odd = _U32(_U32(a >> _U32(13)) & _U32(1))
    normal = _U32(_U32(a - _U32(112 << 23) + _U32(0xFFF) + odd) >> _U32(13))
    # Subnormal results (|x| < 2**-14): adding 0.5 aligns the 10 kept bits at the bottom of
    # the float32 mantissa, and the float32 addition rounds them to nearest even.
    tiny = _U32(_U32(_F32(a.view(_F32) + _F32(0.5)).view(_U32)) - _U32(0x3F000000))
    finite = tiny if a < _U32(0x38800000) else normal
    # 65520 (0x477FF000) and above round to inf.
    big = nan if a > _U32(0x7F800000) else _U32(0x7C00)
    return _U16(sign | (big if a >= _U32(0x477FF000) else finite))


# -- stochastic rounding ----------------------------------------------------------------------
#
# A 16-bit store rounds up (away from zero) with probability equal to the distance to the lower
# neighbour in units of the gap: unbiased. The random bits come from a counter-based hash of a
# per-call key (the caller mixes seed, step and tensor into it) and the element's index, so a
# result never depends on threads or chunking.

_M1 = np.uint32(0x85EBCA6B)
_M2 = np.uint32(0xC2B2AE35)
_GOLD = np.uint32(0x9E3779B9)


def random_bits(key, index):
    """32 random bits for element ``index`` (int64) under ``key`` (uint32): MurmurHash3's
    32-bit finaliser (a bijection with full avalanche) of the index's two halves and the key."""
    lo = _U32(index & 0xFFFFFFFF)
    hi = _U32(index >> 32)
    h = _U32(_U32(lo * _GOLD) + _U32(key) + _U32(hi * _M2))
    h = _U32(h ^ _U32(h >> _U32(16)))
    h = _U32(h * _M1)
    h = _U32(h ^ _U32(h >> _U32(13)))
    h = _U32(h * _M2)
    return _U32(h ^ _U32(h >> _U32(16)))


def bf16_store_sr(x, r):
    """float32 to bfloat16 bits, rounded stochastically with the random bits ``r`` (uint32):
    up with probability (dropped 16 bits) / 2**16. NaN stays NaN as in bf16_store."""
    b = _F32(x).view(_U32)
    up = _U32(_U32(b + _U32(r >> _U32(16))) >> _U32(16))
    top = _U32(b >> _U32(16))
    nan = _U32(b & _U32(0x7FFFFFFF)) > _U32(0x7F800000)
    return _U16(_U32(_U32(top & _U32(0x8000)) | _U32(0x7FC0)) if nan else up)


def f16_store_sr(x, r):
    """float32 to float16 bits, rounded stochastically with the random bits ``r``: the
    dropped bits (13 for normal results, more for subnormal ones) plus as many random bits,
    carried into the kept ones. Magnitudes below 2**-33 (far under half the smallest
    subnormal) become zero; results of 65536 and above, inf; NaN as in f16_store."""
    b = _F32(x).view(_U32)
    sign = _U32(_U32(b >> _U32(16)) & _U32(0x8000))
    a = _U32(b & _U32(0x7FFFFFFF))
    payload = _U32(_U32(a & _U32(0x7FFFFF)) >> _U32(13))
    nan = _U32(_U32(0x7C00) + payload + _U32(payload == _U32(0)))
    normal = _U32(_U32(a - _U32(112 << 23) + _U32(r >> _U32(19))) >> _U32(13))
    # Subnormal results: the 24-bit significand over 2**w, w = 126 - exponent (14..32).
    e = _U32(a >> _U32(23))
    w = _U32(_U32(126) - e) if e <= _U32(112) else _U32(14)
    w = w if w <= _U32(32) else _U32(32)
    man = np.uint64(_U32(a & _U32(0x7FFFFF)) | _U32(0x800000))
    rand = np.uint64(np.uint64(r) >> np.uint64(_U32(32) - w))
    tiny = _U32(np.uint64(man + rand) >> np.uint64(w))
    tiny = tiny if e >= _U32(94) else _U32(0)
    finite = tiny if a < _U32(0x38800000) else normal
    big = nan if a > _U32(0x7F800000) else _U32(0x7C00)
    return _U16(sign | (big if a >= _U32(0x47800000) else finite))
