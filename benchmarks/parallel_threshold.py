"""Measure where the parallel (prange) build of a kernel starts to beat the serial one.

    python benchmarks/parallel_threshold.py

Times the raw serial and parallel Adam float32 kernels side by side (interleaved medians) over
a ladder of sizes and prints the ratio; fastopt._numba_backend.PARALLEL_MIN_SIZE is set from it.
"""

import numpy as np

from fastopt._bench import interleaved_medians
from fastopt.kernels.cpu import adam_kernel


def main() -> None:
    flags = dict(amsgrad=False, maximize=False, weight_decay=False, decoupled=False)
    serial, parallel = (adam_kernel(**flags, parallel=p) for p in (False, True))
    print("| size | serial | parallel | serial/parallel |")
    print("|---:|---:|---:|---:|")
    for exp in range(10, 19):
        n = 2**exp
        rng = np.random.default_rng(0)
        a = [rng.random(n, dtype=np.float32) for _ in range(4)]
        args = (*a, a[3], 10, 1e-3, 0.9, 0.999, 1e-8, 0.0)
        med = interleaved_medians({"serial": lambda: serial(*args),
                                   "parallel": lambda: parallel(*args)},
                                  rounds=20, per_round=20)
        print(f"| 2^{exp} | {med['serial'] * 1e6:.1f} us | {med['parallel'] * 1e6:.1f} us | "
              f"{med['serial'] / med['parallel']:.2f} |")


if __name__ == "__main__":
    main()
