"""End-to-end latency of one small functional call: ``fastopt.adam_step`` on 4096 float32.

    python benchmarks/step_latency.py

Median and best of 7 rounds of 20000 calls (timeit), in microseconds per call. Validation,
dispatch and the kernel together: what a caller stepping small arrays one by one pays.
"""

import timeit

import numpy as np

import fastopt


def main() -> None:
    n = 4096
    p = np.ones(n, np.float32)
    g = np.full(n, 0.5, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    fastopt.adam_step(p, g, m, v, step=3)  # compile / load from cache
    rounds = sorted(timeit.repeat(lambda: fastopt.adam_step(p, g, m, v, step=3),
                                  number=20000, repeat=7))
    print(f"adam_step, {n} float32: median {rounds[3] / 20000 * 1e6:.1f} us, "
          f"best {rounds[0] / 20000 * 1e6:.1f} us")


if __name__ == "__main__":
    main()
