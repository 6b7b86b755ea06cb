"""Where the time of an 8-bit Adam step goes: each pass of the blockwise kernel alone.

    python benchmarks/q8_passes.py [--size 4194304]

One thread (serial kernels), in-cache-sized blocks streamed over ``--size`` elements,
median of 7 runs, nanoseconds per element: decoding codes to float32 (``kernels.q8`` loads),
encoding float32 to codes (the stores: the dynamic maps' table quantizer, fp8's bit
operations), the integer absmax of a block, and float32 Adam's element loop for comparison.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numba
import numpy as np

from fastopt.kernels import q8
from fastopt.kernels.cpu import generic
from fastopt.kernels.cpu._common import rule

F32, U32 = np.float32, np.uint32


def _decoder(name: str) -> Callable[..., None]:
    load = rule(getattr(q8, name))

    @numba.njit(error_model="numpy")
    def run(codes: Any, out: Any) -> None:
        for i in range(codes.size):
            out[i] = load(codes[i]) * F32(0.5)
    return run  # type: ignore[no-any-return]


def _encoder(name: str, two: bool) -> Callable[..., None]:
    store = rule(getattr(q8, name))
    if two:
        @numba.njit(error_model="numpy")
        def run(x: Any, codes: Any) -> None:
            for i in range(x.size):
                codes[i] = store(x[i], x[i])
    else:
        @numba.njit(error_model="numpy")
        def run(x: Any, codes: Any) -> None:
            for i in range(x.size):
                codes[i] = store(x[i])
    return run  # type: ignore[no-any-return]


@numba.njit(error_model="numpy")
def _absmax(x: Any) -> Any:
    m = U32(0)
    for i in range(x.size):
        a = U32(F32(x[i]).view(U32) & U32(0x7FFFFFFF))
        m = a if a > m else m
    return m


def _adam() -> Callable[..., None]:
    r = generic.compiled_rule("adam")

    @numba.njit(error_model="numpy")
    def run(p: Any, g: Any, m: Any, v: Any) -> None:
        c = (F32(0.1), F32(0.999), F32(0.001), F32(1e-3), F32(1.0), F32(1e-8), F32(1.0),
             F32(1.0))
        for i in range(p.size):
            out = r(p[i], g[i], m[i], v[i], p[i], c[0], c[1], c[2], c[3], c[4], c[5], c[6],
                    c[7], False, False, False, False)
            p[i], m[i], v[i] = out[0], out[1], out[2]
    return run  # type: ignore[no-any-return]


def _time(fn: Callable[..., Any], *args: Any, n: int) -> float:
    fn(*args)
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        fn(*args)
        runs.append(time.perf_counter() - t)
    return float(np.median(runs)) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**22)
    n = parser.parse_args().size
    rng = np.random.default_rng(0)
    x = (rng.uniform(-1, 1, n) * np.exp(rng.uniform(-10, 0, n))).astype(np.float32)
    xa = np.abs(x)
    codes = rng.integers(0, 256, n).astype(np.uint8)
    out = np.empty(n, np.float32)
    rows = [
        ("decode fp8 (signed)", _time(_decoder("fp8_signed_load"), codes, out, n=n)),
        ("decode dynamic (signed, table)", _time(_decoder("dynamic_signed_load"), codes,
                                                 out, n=n)),
        ("encode fp8 signed", _time(_encoder("fp8_signed_store", False), x, codes, n=n)),
        ("encode fp8 unsigned", _time(_encoder("fp8_unsigned_store", True), xa, codes, n=n)),
        ("encode dynamic signed", _time(_encoder("dynamic_signed_store", False), x, codes,
                                        n=n)),
        ("encode dynamic unsigned", _time(_encoder("dynamic_unsigned_store", True), xa, codes,
                                          n=n)),
        ("absmax (integer max of bits)", _time(_absmax, x, n=n)),
    ]
    p, g = rng.standard_normal(n).astype(F32), (rng.standard_normal(n) * 1e-3).astype(F32)
    rows.append(("float32 Adam element loop", _time(_adam(), p, g, np.zeros(n, F32),
                                                   np.zeros(n, F32), n=n)))
    print(f"one thread, {n} elements, median of 7, ns per element")
    for name, ns in rows:
        print(f"  {name:32s} {ns:6.2f}")


if __name__ == "__main__":
    main()
