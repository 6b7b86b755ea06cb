"""Adam with 16-bit storage against float32 Adam, torch, and the same-traffic roofline.

    python benchmarks/storage.py [--size 16777216] [--rounds 15]

Side by side in one process (``fastopt._bench.interleaved_times``; ratios paired by round),
numba backend, ``fastopt.adam_step``:

- float32 everything (28 B/element);
- bfloat16 parameters, gradients and states (14 B/element);
- bfloat16 parameters and gradients, float32 states (22 B/element);
- torch's fused CPU Adam on bfloat16 parameters (states in the parameter's dtype), and on
  float32, when torch is installed;
- the roofline kernels of the same traffic: read param, grad and two states, write param and
  the states, as uint16 (14 B) or float32 (28 B) words.
"""

from __future__ import annotations

import argparse

import numpy as np

import fastopt
from fastopt._bench import interleaved_times, medians, paired_ratio
from fastopt._numba_backend import PARALLEL_MIN_SIZE
from fastopt.kernels.cpu import roofline_kernel


def main() -> None:
    import ml_dtypes

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**24)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    n = args.size
    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    p32 = rng.standard_normal(n).astype(np.float32)
    g32 = (rng.standard_normal(n) * 1e-3).astype(np.float32)

    def arrays(p_dtype, s_dtype):  # type: ignore[no-untyped-def]
        return (p32.astype(p_dtype), g32.astype(p_dtype), np.zeros(n, s_dtype),
                np.zeros(n, s_dtype))

    a32, a16, amix = arrays(np.float32, np.float32), arrays(bf16, bf16), arrays(bf16, np.float32)
    par = n >= PARALLEL_MIN_SIZE
    roof = roofline_kernel(2, par)
    r16 = [np.zeros(n, np.uint16) for _ in range(4)]
    r32 = [np.zeros(n, np.float32) for _ in range(4)]
    step = [10]

    def adam(a):  # type: ignore[no-untyped-def]
        def run() -> None:
            step[0] += 1
            fastopt.adam_step(*a, step=step[0], lr=1e-6)
        return run

    fns = {
        "float32 (28 B)": adam(a32),
        "bf16 everything (14 B)": adam(a16),
        "bf16 param+grad, f32 states (22 B)": adam(amix),
        "roofline 14 B": lambda: roof(r16[0], r16[1], (r16[2], r16[3])),
        "roofline 28 B": lambda: roof(r32[0], r32[1], (r32[2], r32[3])),
    }
    try:
        import torch

        for name, dtype in (("torch fused bf16", torch.bfloat16), ("torch fused f32",
                                                                    torch.float32)):
            q = torch.nn.Parameter(torch.from_numpy(p32.copy()).to(dtype))
            q.grad = torch.from_numpy(g32.copy()).to(dtype)
            opt = torch.optim.Adam([q], lr=1e-6, fused=True)
            fns[name] = opt.step
    except ImportError:
        pass
    for fn in fns.values():
        fn()
    times = interleaved_times(fns, rounds=args.rounds, per_round=3, max_seconds=300)
    med = medians(times)
    print(f"Adam, {n} elements, {len(times['roofline 14 B'])} rounds, medians; ratios paired")
    base = "float32 (28 B)"
    for name in fns:
        print(f"  {name:36s} {med[name] * 1e3:8.2f} ms   float32 / this "
              f"{paired_ratio(times, base, name):5.2f}")
    bf16_name = "bf16 everything (14 B)"
    print(f"bf16 / roofline 14 B: {paired_ratio(times, 'roofline 14 B', bf16_name):.2f}")
    if "torch fused bf16" in fns:
        print(f"bf16 vs torch fused bf16: "
              f"{paired_ratio(times, 'torch fused bf16', bf16_name):.2f}x")


if __name__ == "__main__":
    main()
