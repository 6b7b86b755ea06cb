"""The weight EMA fused into the step against the same-traffic roofline and an unfused EMA.

    python benchmarks/ema.py [--size 16777216]

Adam at 2**24 float32 (numba backend), timed side by side in one process (medians,
``fastopt._bench.interleaved_medians``): Adam alone; Adam with ``ema=`` (one pass); Adam then
a separate EMA pass (torch's ``_foreach_lerp_``, what ``AveragedModel`` runs, when torch is
installed); the roofline kernels of 2 and 3 states (Adam's traffic, and Adam's plus the EMA's).
"""

from __future__ import annotations

import argparse

import numpy as np

import fastopt
from fastopt._bench import interleaved_medians
from fastopt._numba_backend import PARALLEL_MIN_SIZE
from fastopt.kernels.cpu import roofline_kernel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**24)
    n = parser.parse_args().size
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    m, v, ema = np.zeros_like(p), np.zeros_like(p), p.copy()
    par = n >= PARALLEL_MIN_SIZE
    zeros = np.zeros_like(g)
    roof2, roof3 = roofline_kernel(2, par), roofline_kernel(3, par)
    s2 = (m.copy(), v.copy())
    s3 = (m.copy(), v.copy(), ema.copy())
    fns = {
        "adam": lambda: fastopt.adam_step(p, g, m, v, step=10, lr=1e-6),
        "adam+ema (fused)": lambda: fastopt.adam_step(p, g, m, v, step=10, lr=1e-6, ema=ema,
                                                      ema_decay=0.999, ema_step=10),
        "roofline 2 states": lambda: roof2(p, zeros, s2),
        "roofline 3 states": lambda: roof3(p, zeros, s3),
    }
    try:
        import torch

        tp, te = torch.from_numpy(p), torch.from_numpy(ema)

        def unfused() -> None:
            fastopt.adam_step(p, g, m, v, step=10, lr=1e-6)
            torch._foreach_lerp_([te], [tp], 1 - 0.999)

        fns["adam + torch _foreach_lerp_"] = unfused
    except ImportError:
        pass
    med = interleaved_medians(fns, rounds=10, max_seconds=60)
    print(f"size {n} float32, medians (ms):")
    for k, t in med.items():
        print(f"  {k:30s} {t * 1e3:8.3f}")
    print(f"adam / roofline(2):            {med['roofline 2 states'] / med['adam']:.2f}")
    print(f"adam+ema / roofline(3):        {med['roofline 3 states'] / med['adam+ema (fused)']:.2f}")
    print(f"adam+ema time / adam time:     {med['adam+ema (fused)'] / med['adam']:.2f}")
    if "adam + torch _foreach_lerp_" in med:
        print(f"unfused / fused:               "
              f"{med['adam + torch _foreach_lerp_'] / med['adam+ema (fused)']:.2f}")


if __name__ == "__main__":
    main()
