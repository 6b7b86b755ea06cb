"""8-bit blockwise state codes: the bitsandbytes "dynamic" maps and fastopt's own 8-bit floats.

An 8-bit state keeps one uint8 code per element and one float32 ``absmax`` per block of
``BLOCK`` elements (in memory order; the last block may be shorter). A code decodes to a value
``v = table[code] * (absmax / K)`` and a float32 value quantizes to ``store(v * (K / absmax))``
(zero when absmax is 0), where K is the format's largest table value. Signed states (exp_avg)
and non-negative ones (exp_avg_sq) have their own tables:

- ``dynamic``: bitsandbytes' dynamic-tree maps (``create_dynamic_map(signed)``), shipped as
  golden float32 constants (torch.linspace's rounding: a NumPy rebuild differs in some entries),
  so states are code-compatible with bitsandbytes. K = 1. Nearest code, ties toward zero.
- ``fp8``: fastopt's own 8-bit floats, encoded and decoded with bit operations (vectorisable):
  signed states E4M3 (sign, 4 exponent bits, 3 mantissa bits; 1.875 down to 2**-17: 5.2
  decades), non-negative states UE5M3 (no sign: 5 exponent bits; 1.875 down to 2**-33: 10.2
  decades, against the dynamic unsigned map's 6.5, for the second moment). K = 1.875. Round to
  nearest even.

Designed against the known failure of 8-bit Adam: a positive value of a non-negative state is
never stored as 0 (it takes the smallest positive code instead), so a second moment cannot be
flushed to zero under a surviving first moment (the update would be |m| / eps).

Plain Python over NumPy scalars and constant tables, like kernels.formats: the CPU kernels
inline these functions and the tests run them against a brute-force nearest-code search.
"""

import numpy as np

_U8 = np.uint8
_U32 = np.uint32
_F32 = np.float32

BLOCK = 256

# bitsandbytes' create_dynamic_map(signed=True): float32 bit patterns, ascending (index 127 is
# 0, 255 is 1.0, 0 is -0.99296875: no -1.0).
DYNAMIC_SIGNED = np.array([
    0xBF7E3333, 0xBF7A999A, 0xBF770000, 0xBF736666, 0xBF6FCCCD, 0xBF6C3333, 0xBF68999A, 0xBF650000,
    0xBF616666, 0xBF5DCCCD, 0xBF5A3333, 0xBF56999A, 0xBF530000, 0xBF4F6666, 0xBF4BCCCD, 0xBF483333,
    0xBF44999A, 0xBF410000, 0xBF3D6666, 0xBF39CCCD, 0xBF363334, 0xBF32999A, 0xBF2F0000, 0xBF2B6666,
    0xBF27CCCD, 0xBF243334, 0xBF20999A, 0xBF1D0000, 0xBF196666, 0xBF15CCCD, 0xBF123334, 0xBF0E999A,
    0xBF0B0000, 0xBF076666, 0xBF03CCCC, 0xBF003333, 0xBEF93332, 0xBEF20000, 0xBEEACCCC, 0xBEE3999A,
    0xBEDC6666, 0xBED53333, 0xBECE0000, 0xBEC6CCCC, 0xBEBF999A, 0xBEB86666, 0xBEB13333, 0xBEAA0000,
    0xBEA2CCCC, 0xBE9B999A, 0xBE946666, 0xBE8D3334, 0xBE860000, 0xBE7D9999, 0xBE6F3333, 0xBE60CCCD,
    0xBE526666, 0xBE440000, 0xBE35999A, 0xBE273333, 0xBE18CCCD, 0xBE0A6666, 0xBDF80000, 0xBDDB3334,
    0xBDC9EB85, 0xBDC428F7, 0xBDBE6667, 0xBDB8A3D7, 0xBDB2E148, 0xBDAD1EB8, 0xBDA75C2A, 0xBDA1999A,
    0xBD9BD70A, 0xBD96147B, 0xBD9051EB, 0xBD8A8F5D, 0xBD84CCCD, 0xBD7E147B, 0xBD728F5D, 0xBD670A3D,
    0xBD5B851F, 0xBD500000, 0xBD447AE1, 0xBD38F5C3, 0xBD2D70A3, 0xBD21EB85, 0xBD166667, 0xBD0AE148,
    0xBCFEB852, 0xBCE7AE15, 0xBCD0A3D7, 0xBCB9999A, 0xBCA28F5D, 0xBC8B851F, 0xBC68F5C3, 0xBC3AE148,
    0xBC1F3B64, 0xBC160418, 0xBC0CCCCD, 0xBC039581, 0xBBF4BC6A, 0xBBE24DD3, 0xBBCFDF3B, 0xBBBD70A4,
    0xBBAB020D, 0xBB989374, 0xBB8624DD, 0xBB676C8A, 0xBB428F5C, 0xBB1DB22D, 0xBAF1A9FC, 0xBAA7EF9D,
    0xBA7765FF, 0xBA59E83E, 0xBA3C6A80, 0xBA1EECC1, 0xBA016F01, 0xB9C7E283, 0xB98CE705, 0xB923D70B,
    0xB8BA1F4B, 0xB88AEFB3, 0xB8378034, 0xB7B24206, 0xB70205FF, 0xB65A1A94, 0xB513A3B7, 0x00000000,
    0x3513A3B7, 0x365A1A94, 0x370205FF, 0x37B24206, 0x38378034, 0x388AEFB3, 0x38BA1F4B, 0x3923D70B,
    0x398CE705, 0x39C7E283, 0x3A016F01, 0x3A1EECC1, 0x3A3C6A80, 0x3A59E83E, 0x3A7765FF, 0x3AA7EF9D,
    0x3AF1A9FC, 0x3B1DB22D, 0x3B428F5C, 0x3B676C8A, 0x3B8624DD, 0x3B989374, 0x3BAB020D, 0x3BBD70A4,
    0x3BCFDF3B, 0x3BE24DD3, 0x3BF4BC6A, 0x3C039581, 0x3C0CCCCD, 0x3C160418, 0x3C1F3B64, 0x3C3AE148,
    0x3C68F5C3, 0x3C8B851F, 0x3CA28F5D, 0x3CB9999A, 0x3CD0A3D7, 0x3CE7AE15, 0x3CFEB852, 0x3D0AE148,
    0x3D166667, 0x3D21EB85, 0x3D2D70A3, 0x3D38F5C3, 0x3D447AE1, 0x3D500000, 0x3D5B851F, 0x3D670A3D,
    0x3D728F5D, 0x3D7E147B, 0x3D84CCCD, 0x3D8A8F5D, 0x3D9051EB, 0x3D96147B, 0x3D9BD70A, 0x3DA1999A,
    0x3DA75C2A, 0x3DAD1EB8, 0x3DB2E148, 0x3DB8A3D7, 0x3DBE6667, 0x3DC428F7, 0x3DC9EB85, 0x3DDB3334,
    0x3DF80000, 0x3E0A6666, 0x3E18CCCD, 0x3E273333, 0x3E35999A, 0x3E440000, 0x3E526666, 0x3E60CCCD,
    0x3E6F3333, 0x3E7D9999, 0x3E860000, 0x3E8D3334, 0x3E946666, 0x3E9B999A, 0x3EA2CCCC, 0x3EAA0000,
    0x3EB13333, 0x3EB86666, 0x3EBF999A, 0x3EC6CCCC, 0x3ECE0000, 0x3ED53333, 0x3EDC6666, 0x3EE3999A,
    0x3EEACCCC, 0x3EF20000, 0x3EF93332, 0x3F003333, 0x3F03CCCC, 0x3F076666, 0x3F0B0000, 0x3F0E999A,
    0x3F123334, 0x3F15CCCD, 0x3F196666, 0x3F1D0000, 0x3F20999A, 0x3F243334, 0x3F27CCCD, 0x3F2B6666,
    0x3F2F0000, 0x3F32999A, 0x3F363334, 0x3F39CCCD, 0x3F3D6666, 0x3F410000, 0x3F44999A, 0x3F483333,
    0x3F4BCCCD, 0x3F4F6666, 0x3F530000, 0x3F56999A, 0x3F5A3333, 0x3F5DCCCD, 0x3F616666, 0x3F650000,
    0x3F68999A, 0x3F6C3333, 0x3F6FCCCD, 0x3F736666, 0x3F770000, 0x3F7A999A, 0x3F7E3333, 0x3F800000,
], _U32).view(_F32)

# create_dynamic_map(signed=False): 0, then 254 fractions over seven decades, then 1.0.
DYNAMIC_UNSIGNED = np.array([
    0x00000000, 0x34AE7BAA, 0x35500998, 0x360E9B38, 0x3692CCF6, 0x36DE4C51, 0x3714E5D5, 0x3783126E,
    0x37E171A0, 0x381FE868, 0x384F1800, 0x387E479A, 0x3896BB99, 0x38AE5364, 0x38C5EB31, 0x3906594B,
    0x394154CA, 0x397C5049, 0x399BA5E4, 0x39B923A2, 0x39D6A163, 0x39F41F22, 0x3A08CE71, 0x3A178D50,
    0x3A264C30, 0x3A350B10, 0x3A43C9EF, 0x3A5288D0, 0x3A6147AF, 0x3A70068E, 0x3A7EC56E, 0x3A958106,
    0x3ABA5E35, 0x3ADF3B64, 0x3B020C4A, 0x3B147AE1, 0x3B26E978, 0x3B395810, 0x3B4BC6A7, 0x3B5E3540,
    0x3B70A3D7, 0x3B818937, 0x3B8AC082, 0x3B93F7CF, 0x3B9D2F1A, 0x3BA66666, 0x3BAF9DB2, 0x3BB8D4FD,
    0x3BC20C4A, 0x3BCB4395, 0x3BD47AE1, 0x3BDDB22E, 0x3BE6E978, 0x3BF020C5, 0x3BF9580F, 0x3C0147AE,
    0x3C05E354, 0x3C0A7EF9, 0x3C0F1AA0, 0x3C13B645, 0x3C1851EB, 0x3C1CED92, 0x3C218937, 0x3C2F5C2A,
    0x3C466667, 0x3C5D70A3, 0x3C747AE2, 0x3C85C28F, 0x3C9147AF, 0x3C9CCCCD, 0x3CA851EB, 0x3CB3D70B,
    0x3CBF5C29, 0x3CCAE147, 0x3CD66667, 0x3CE1EB87, 0x3CED70A3, 0x3CF8F5C3, 0x3D023D70, 0x3D080000,
    0x3D0DC28F, 0x3D13851F, 0x3D1947AF, 0x3D1F0A3D, 0x3D24CCCD, 0x3D2A8F5C, 0x3D3051EB, 0x3D36147B,
    0x3D3BD70A, 0x3D41999A, 0x3D475C28, 0x3D4D1EB8, 0x3D52E147, 0x3D58A3D7, 0x3D5E6667, 0x3D6428F7,
    0x3D69EB87, 0x3D6FAE15, 0x3D7570A3, 0x3D7B3333, 0x3D807AE2, 0x3D835C2A, 0x3D863D71, 0x3D891EB8,
    0x3D8C0000, 0x3D8EE148, 0x3D91C290, 0x3D94A3D7, 0x3D97851F, 0x3D9A6667, 0x3D9D47AF, 0x3DA028F6,
    0x3DA30A3E, 0x3DA5EB85, 0x3DA8CCCD, 0x3DABAE15, 0x3DAE8F5C, 0x3DB170A4, 0x3DB451EB, 0x3DB73333,
    0x3DBA147B, 0x3DBCF5C3, 0x3DBFD70B, 0x3DC2B852, 0x3DC5999A, 0x3DC87AE2, 0x3DCB5C29, 0x3DD40000,
    0x3DE26666, 0x3DF0CCCD, 0x3DFF3333, 0x3E06CCCC, 0x3E0E0000, 0x3E153334, 0x3E1C6666, 0x3E23999A,
    0x3E2ACCCC, 0x3E320000, 0x3E393334, 0x3E406666, 0x3E47999A, 0x3E4ECCCC, 0x3E560000, 0x3E5D3334,
    0x3E646666, 0x3E6B999A, 0x3E72CCCC, 0x3E7A0000, 0x3E809999, 0x3E843333, 0x3E87CCCD, 0x3E8B6666,
    0x3E8F0000, 0x3E92999A, 0x3E963333, 0x3E99CCCC, 0x3E9D6666, 0x3EA10000, 0x3EA4999A, 0x3EA83333,
    0x3EABCCCC, 0x3EAF6666, 0x3EB30000, 0x3EB6999A, 0x3EBA3333, 0x3EBDCCCC, 0x3EC16666, 0x3EC50000,
    0x3EC8999A, 0x3ECC3333, 0x3ECFCCCC, 0x3ED36666, 0x3ED70000, 0x3EDA999A, 0x3EDE3333, 0x3EE1CCCC,
    0x3EE56666, 0x3EE90000, 0x3EEC999A, 0x3EF03333, 0x3EF3CCCC, 0x3EF76666, 0x3EFB0000, 0x3EFE9999,
    0x3F01199A, 0x3F02E666, 0x3F04B333, 0x3F068000, 0x3F084CCC, 0x3F0A199A, 0x3F0BE666, 0x3F0DB334,
    0x3F0F8000, 0x3F114CCD, 0x3F13199A, 0x3F14E666, 0x3F16B334, 0x3F188000, 0x3F1A4CCD, 0x3F1C199A,
    0x3F1DE666, 0x3F1FB334, 0x3F218000, 0x3F234CCD, 0x3F25199A, 0x3F26E666, 0x3F28B334, 0x3F2A8000,
    0x3F2C4CCD, 0x3F2E199A, 0x3F2FE666, 0x3F31B334, 0x3F338000, 0x3F354CCD, 0x3F37199A, 0x3F38E666,
    0x3F3AB334, 0x3F3C8000, 0x3F3E4CCD, 0x3F40199A, 0x3F41E666, 0x3F43B334, 0x3F458000, 0x3F474CCC,
    0x3F49199A, 0x3F4AE666, 0x3F4CB334, 0x3F4E8000, 0x3F504CCC, 0x3F52199A, 0x3F53E666, 0x3F55B334,
    0x3F578000, 0x3F594CCC, 0x3F5B199A, 0x3F5CE666, 0x3F5EB334, 0x3F608000, 0x3F624CCC, 0x3F64199A,
    0x3F65E666, 0x3F67B334, 0x3F698000, 0x3F6B4CCC, 0x3F6D199A, 0x3F6EE666, 0x3F70B334, 0x3F728000,
    0x3F744CCC, 0x3F76199A, 0x3F77E666, 0x3F79B334, 0x3F7B8000, 0x3F7D4CCC, 0x3F7F199A, 0x3F800000,
], _U32).view(_F32)


def _fp8_table(signed):
    """The values of every code of the fp8 formats (see decode below)."""
    c = np.arange(256, dtype=np.uint32)
    mag = c & (0x7F if signed else 0xFF)
    bias = 112 if signed else 96  # float32 exponent bias 127 minus the format's (15, 31)
    normal = ((mag << 20) + (bias << 23)).astype(np.uint32).view(np.float32)
    tiny = mag.astype(np.float32) * np.float32(2.0 ** (-17 if signed else -33))
    v = np.where(mag >> 3 == 0, tiny, normal).astype(np.float32)
    if signed:
        v = np.where(c & 0x80, -v, v).astype(np.float32)
    return v


FP8_SIGNED = _fp8_table(True)
FP8_UNSIGNED = _fp8_table(False)

# The largest value of each format's tables: a block's absmax maps to it.
K_DYNAMIC = _F32(1.0)
K_FP8 = _F32(1.875)


# -- the dynamic maps' quantizer: a table on the float32's top bits, then one midpoint test ----
#
# Each side of a map (non-negative values; negative ones) lists its magnitudes in ascending
# order, the zero first. ``key = bits(|x|) >> 16`` (exponent and 7 mantissa bits) is clamped
# to [KEY_LO, KEY_HI] (2**-24, below every map's first midpoint, up to 1.0); LUT[key] is the
# nearest magnitude's index for the lowest value of the key's range, and no range holds more
# than one midpoint (checked when the tables are built), so ``j + (|x| > MID[j])`` is the
# nearest index for every value of the range. MID[j] is the midpoint between magnitudes j and
# j + 1 (exact in float64) rounded down to float32, so ``|x| > MID[j]`` is exact for float32 x
# and a tie goes toward zero. NaN (key clamped, no comparison true) takes the largest
# magnitude of its sign.

KEY_LO = 0x3380  # bits(2**-24) >> 16
KEY_HI = 0x3F80  # bits(1.0) >> 16


def _side(mags):
    """(LUT, MID) of one side's ascending magnitudes (float32, zero first). The LUT holds
    int32 indices: with 32-bit table entries LLVM vectorises the lookups with gathers
    (measured: the quantizer 2x faster than with uint8 entries)."""
    m = mags.astype(np.float64)
    mid64 = (m[:-1] + m[1:]) / 2.0
    mid32 = mid64.astype(np.float32)
    mid32 = np.where(mid32.astype(np.float64) > mid64, np.nextafter(mid32, np.float32(0)),
                     mid32).astype(np.float32)
    keys = np.arange(KEY_LO, KEY_HI + 1, dtype=np.uint32)
    lows = (keys << np.uint32(16)).view(np.float32).astype(np.float64)
    lut = np.searchsorted(mid64, lows, side="left")  # midpoints below the range's lowest value
    highs = ((keys + np.uint32(1)) << np.uint32(16)).view(np.float32).astype(np.float64)
    inside = np.searchsorted(mid64, highs, side="left") - lut
    assert inside[:-1].max() <= 1, "a key range holds two midpoints"
    assert lows[0] < mid64[0]
    return lut.astype(np.int32), np.append(mid32, np.float32(np.inf)).astype(np.float32)


_POS_LUT, _POS_MID = _side(DYNAMIC_SIGNED[127:])
_NEG_LUT, _NEG_MID = _side(-DYNAMIC_SIGNED[127::-1])
_U_LUT, _U_MID = _side(DYNAMIC_UNSIGNED)
# The signed map's two sides in one table each, the negative side second (indexing by the
# sign bit instead of branching on it: random signs would mispredict, measured 4x slower).
_KEYS = _POS_LUT.size
_S_LUT = np.concatenate([_POS_LUT, _NEG_LUT])
_S_MID = np.concatenate([_POS_MID, _NEG_MID])
_MIDS = _POS_MID.size


def dynamic_signed_load(c):
    return DYNAMIC_SIGNED[c]


def dynamic_unsigned_load(c):
    return DYNAMIC_UNSIGNED[c]


def dynamic_signed_store(x):
    """The nearest code of the signed map to ``x`` (ties toward zero)."""
    b = _F32(x).view(_U32)
    a = _U32(b & _U32(0x7FFFFFFF))
    k = _U32(a >> _U32(16))
    k = k if k >= _U32(KEY_LO) else _U32(KEY_LO)
    k = _U32((k if k <= _U32(KEY_HI) else _U32(KEY_HI)) - _U32(KEY_LO))
    neg = _U32(b >> _U32(31))
    j = _U32(_S_LUT[k + neg * _U32(_KEYS)])
    j = _U32(j + _U32(a.view(_F32) > _S_MID[j + neg * _U32(_MIDS)]))
    return _U8(_U32(_U32(127) + j) - _U32(_U32(2) * j * neg))


def dynamic_unsigned_store(x, v):
    """The nearest code of the unsigned map to ``x`` (ties toward zero; negative: 0), and
    never 0 for a positive state value ``v``."""
    b = _F32(x).view(_U32)
    k = _U32(b >> _U32(16))
    k = k if k >= _U32(KEY_LO) else _U32(KEY_LO)
    k = _U32((k if k <= _U32(KEY_HI) else _U32(KEY_HI)) - _U32(KEY_LO))
    j = _U_LUT[k]
    j = _U32(j + (x > _U_MID[j]))
    j = j if b < _U32(0x80000000) or x != x else _U32(0)
    return _U8(j if j or not v > _F32(0) else _U32(1))


# -- fastopt's 8-bit floats: bit operations only ----------------------------------------------

def fp8_signed_load(c):
    """E4M3: value 2**(e - 15) * (1 + m / 8), subnormals m * 2**-17; bit 7 the sign."""
    mag = _U32(_U32(c) & _U32(0x7F))
    normal = _U32(_U32(mag << _U32(20)) + _U32(112 << 23)).view(_F32)
    tiny = _F32(_F32(mag) * _F32(7.62939453125e-06))
    v = tiny if mag < _U32(8) else normal
    return -v if _U32(c) & _U32(0x80) else v


def fp8_unsigned_load(c):
    """UE5M3: value 2**(e - 31) * (1 + m / 8), subnormals m * 2**-33."""
    mag = _U32(c)
    normal = _U32(_U32(mag << _U32(20)) + _U32(96 << 23)).view(_F32)
    tiny = _F32(_F32(mag) * _F32(1.1641532182693481e-10))
    return tiny if mag < _U32(8) else normal


def fp8_signed_store(x):
    """The nearest E4M3 code (ties to even; beyond 1.875, NaN included: the largest)."""
    b = _F32(x).view(_U32)
    a = _U32(b & _U32(0x7FFFFFFF))
    normal = _U32(_U32(a - _U32(112 << 23) + _U32(0x7FFFF) + _U32(_U32(a >> _U32(20)) & _U32(1)))
                  >> _U32(20))
    # Below 2**-14: adding 64 (ulp 2**-17) rounds the magnitude to the subnormal grid.
    tiny = _U32(_F32(a.view(_F32) + _F32(64.0)).view(_U32) - _U32(0x42800000))
    mag = tiny if a < _U32(113 << 23) else normal
    mag = mag if mag < _U32(0x7F) else _U32(0x7F)
    return _U8(mag | _U32(0x80) if b >> _U32(31) and mag else mag)


def fp8_unsigned_store(x, v):
    """The nearest UE5M3 code (ties to even; negative: 0; beyond 1.875, NaN included: the
    largest), never 0 for a positive state value ``v``."""
    b = _F32(x).view(_U32)
    a = _U32(b & _U32(0x7FFFFFFF))
    normal = _U32(_U32(a - _U32(96 << 23) + _U32(0x7FFFF) + _U32(_U32(a >> _U32(20)) & _U32(1)))
                  >> _U32(20))
    # Below 2**-30: adding 2**-10 (ulp 2**-33) rounds to the subnormal grid.
    tiny = _U32(_F32(a.view(_F32) + _F32(0.0009765625)).view(_U32) - _U32(0x3A800000))
    mag = tiny if a < _U32(97 << 23) else normal
    mag = mag if mag < _U32(0xFF) else _U32(0xFF)
    mag = _U32(0) if b >> _U32(31) and a <= _U32(0x7F800000) else mag
    return _U8(mag if mag or not v > _F32(0) else _U32(1))
