"""Where the gap between an update and its same-traffic roofline comes from (CPU, numba).

    python benchmarks/roofline_gap.py [--size 16777216] [--rounds 25]

Four kernels with Adam's traffic (read param, grad, exp_avg, exp_avg_sq; write all but grad),
float32, timed side by side in one process (``fastopt._bench.interleaved_times``), each as a
fraction of the roofline paired round by round (``paired_ratio``):

- ``generated``: fastopt's Adam kernel, generated from ``kernels.rules.adam`` (called raw);
- ``hand-written``: the same math written out as one prange loop, the shortest Numba Adam;
- ``no division``: the moments' arithmetic without the square root and the divisions;
- ``roofline``: the copy kernel (one add per written element), what fractions are taken of.

If the generated kernel is as fast as the hand-written one, the gap to the roofline is not
fastopt's code generation; if even the kernel without divisions falls short of the roofline,
the gap is what any arithmetic in the loop costs on this machine.
"""

from __future__ import annotations

import argparse
import math

import numba
import numpy as np

from fastopt import _generic
from fastopt import _numba_backend as nb
from fastopt._bench import interleaved_times, medians, paired_ratio
from fastopt._specs import SPECS
from fastopt.kernels.cpu import roofline_kernel


@numba.njit(parallel=True, error_model="numpy")
def hand_written(p, g, m, v, lr, beta1, beta2, eps, step):  # type: ignore[no-untyped-def]
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    step_size = np.float32(lr / bc1)
    bc2_sqrt = np.float32(math.sqrt(bc2))
    b2, e = np.float32(beta2), np.float32(eps)
    w1, w2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    for i in numba.prange(p.size):
        gi = g[i]
        mi = m[i] + w1 * (gi - m[i])
        vi = b2 * v[i] + w2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + e))


@numba.njit(parallel=True, error_model="numpy")
def no_division(p, g, m, v, lr, beta1, beta2):  # type: ignore[no-untyped-def]
    s, b2 = np.float32(lr), np.float32(beta2)
    w1, w2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    for i in numba.prange(p.size):
        gi = g[i]
        mi = m[i] + w1 * (gi - m[i])
        vi = b2 * v[i] + w2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - s * mi * vi


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**24)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)

    def arrays() -> tuple[np.ndarray, ...]:
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
        return p, g, np.zeros_like(p), np.zeros_like(p)

    spec = SPECS["adam"]
    opts = _generic.options(spec, (1e-3, 0.9, 0.999, 1e-8, 0.0, False, False))
    flags = spec.flag_values(opts)
    par = n >= nb.PARALLEL_MIN_SIZE
    kernel = nb.kernel(spec, flags, par)
    kargs = nb._arguments(spec, 10, opts)
    a1, a2, a3, a4 = arrays(), arrays(), arrays(), arrays()
    roof = roofline_kernel(2, par)
    zeros = np.zeros_like(a4[1])
    fns = {
        "generated": lambda: kernel(*a1, a1[0], *kargs),  # max_exp_avg_sq: inactive slot
        "hand-written": lambda: hand_written(*a2, 1e-3, 0.9, 0.999, 1e-8, 10),
        "no division": lambda: no_division(*a3, 1e-3, 0.9, 0.999),
        "roofline": lambda: roof(a4[0], zeros, (a4[2], a4[3])),
    }
    for fn in fns.values():
        fn()  # compile
    times = interleaved_times(fns, rounds=args.rounds, per_round=3, max_seconds=120)
    med = medians(times)
    print(f"size {n} float32, {len(times['roofline'])} rounds: median ms, fraction of the "
          f"roofline (paired)")
    for name in fns:
        print(f"  {name:14s} {med[name] * 1e3:8.3f}  {paired_ratio(times, 'roofline', name):.3f}")


if __name__ == "__main__":
    main()
