"""Adam with 16-bit storage against float32 Adam, torch, and two floors per variant.

    python benchmarks/storage.py [--size 16777216] [--rounds 15] [--json FILE]

Side by side in one process (``fastopt._bench.interleaved_times``; ratios paired by round),
numba backend, ``fastopt.adam_step``, one variant per storage layout (bytes moved per element):

- float32 everything (28 B);
- bfloat16 parameters, gradients and states (14 B), also with stochastic rounding of the
  parameter (14 B) and with a bfloat16 compensation array (Kahan, 18 B);
- bfloat16 parameters and gradients, float32 states (22 B);
- master weights: float32 master and states, bfloat16 parameter (written only) and gradient
  (28 B), and the same with bfloat16 states (20 B);
- 8-bit blockwise states (fastopt.State8bit, fp8 and dynamic codes) with float32 (16.06 B)
  or bfloat16 (10.06 B) parameters and gradients;
- torch's fused CPU Adam on bfloat16 parameters (states in the parameter's dtype), and on
  float32, when torch is installed.

Each fastopt variant has two floors: the same-traffic roofline kernel (the same arrays read
and written, one add per element: kernels.cpu.roofline), and its compute floor -- the
variant's own time per element on arrays that stay in L2 (the slope between two in-cache
sizes, which cancels the per-call overhead) times the size. The larger floor binds.
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any, Callable

import numpy as np

import fastopt
from fastopt._bench import interleaved_times, medians, paired_ratio
from fastopt._numba_backend import PARALLEL_MIN_SIZE
from fastopt.kernels.cpu import roofline_kernel, roofline_master_kernel


def variants(n: int, seed: int = 0) -> dict[str, tuple[float, Callable[[], None],
                                                        Callable[[], None]]]:
    """name -> (bytes per element, fastopt step, same-traffic roofline call), on fresh
    arrays of ``n`` elements."""
    import ml_dtypes

    bf16, f32, u16 = ml_dtypes.bfloat16, np.float32, np.uint16
    rng = np.random.default_rng(seed)
    p32 = rng.standard_normal(n).astype(f32)
    g32 = (rng.standard_normal(n) * 1e-3).astype(f32)
    par = n >= PARALLEL_MIN_SIZE
    step = [10]

    def adam(p_dtype: Any, s_dtype: Any, **store: Any) -> Callable[[], None]:
        p, g = p32.astype(p_dtype), g32.astype(p_dtype)
        m, v = np.zeros(n, s_dtype), np.zeros(n, s_dtype)
        extra = {k: (p32.copy() if k == "master" else np.zeros(n, bf16)) if v is True else v
                 for k, v in store.items()}

        def run() -> None:
            step[0] += 1
            fastopt.adam_step(p, g, m, v, step=step[0], lr=1e-6, **extra)
        return run

    def adam8(p_dtype: Any, fmt: str) -> Callable[[], None]:
        p, g = p32.astype(p_dtype), g32.astype(p_dtype)
        m = fastopt.State8bit.zeros(p, signed=True, format=fmt)
        v = fastopt.State8bit.zeros(p, signed=False, format=fmt)

        def run() -> None:
            step[0] += 1
            fastopt.adam_step(p, g, m, v, step=step[0], lr=1e-6)
        return run

    def roof(p_dtype: Any, s_dtype: Any, n_state: int = 2) -> Callable[[], None]:
        kernel = roofline_kernel(n_state, par)
        p, g = np.zeros(n, p_dtype), np.zeros(n, p_dtype)
        states = tuple(np.zeros(n, s_dtype) for _ in range(n_state))
        return lambda: kernel(p, g, states)

    def roof_master(s_dtype: Any) -> Callable[[], None]:
        kernel = roofline_master_kernel(par)
        master, g, p = np.zeros(n, f32), np.zeros(n, u16), np.zeros(n, u16)
        states = (np.zeros(n, s_dtype), np.zeros(n, s_dtype))
        return lambda: kernel(master, g, states, p)

    return {
        "float32": (28, adam(f32, f32), roof(f32, f32)),
        "bf16 everything": (14, adam(bf16, bf16), roof(u16, u16)),
        "bf16 + stochastic rounding": (14, adam(bf16, bf16, rounding="stochastic", seed=1),
                                       roof(u16, u16)),
        "bf16 + Kahan compensation": (18, adam(bf16, bf16, compensation=True),
                                      roof(u16, u16, 3)),
        "bf16 param+grad, f32 states": (22, adam(bf16, f32), roof(u16, f32)),
        "master weights, f32 states": (28, adam(bf16, f32, master=True), roof_master(f32)),
        "master weights, bf16 states": (20, adam(bf16, bf16, master=True), roof_master(u16)),
        # 8-bit states: 1 B read and written per state, plus 2 x 8 B of absmax per 256.
        "f32 param+grad, 8-bit fp8": (16.06, adam8(f32, "fp8"), roof(f32, np.uint8)),
        "f32 param+grad, 8-bit dynamic": (16.06, adam8(f32, "dynamic"), roof(f32, np.uint8)),
        "bf16 param+grad, 8-bit fp8": (10.06, adam8(bf16, "fp8"), roof(u16, np.uint8)),
        "bf16 param+grad, 8-bit dynamic": (10.06, adam8(bf16, "dynamic"),
                                           roof(u16, np.uint8)),
    }


def compute_floor(name: str, n: int, small: int = 2**16, rounds: int = 15) -> float:
    """Seconds for ``n`` elements of variant ``name`` at its in-cache speed: the slope
    between ``small`` and ``2 * small`` elements (both the parallel build; at most 2.5 MB of
    arrays, in the two cores' L2), timed side by side and paired by round, median."""
    fns = {str(size): variants(size, seed=1)[name][1] for size in (small, 2 * small)}
    times = interleaved_times(fns, rounds=rounds, per_round=20, max_seconds=60)
    slopes = [(np.mean(b) - np.mean(a)) / small
              for a, b in zip(times[str(small)], times[str(2 * small)])]
    return float(np.median(slopes)) * n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=2**24)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    n = args.size
    table = variants(n)
    fns: dict[str, Callable[[], None]] = {}
    for name, (nbytes, step, roof) in table.items():
        fns[name] = step
        fns[f"roofline {name}"] = roof
    try:
        import torch

        p32 = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        for name, dtype in (("torch fused bf16", torch.bfloat16),
                            ("torch fused f32", torch.float32)):
            q = torch.nn.Parameter(torch.from_numpy(p32.copy()).to(dtype))
            q.grad = (torch.from_numpy(p32.copy()) * 1e-3).to(dtype)
            fns[name] = torch.optim.Adam([q], lr=1e-6, fused=True).step
    except ImportError:
        pass
    for fn in fns.values():
        fn()
    times = interleaved_times(fns, rounds=args.rounds, per_round=3, max_seconds=600)
    med = medians(times)
    floors = {name: compute_floor(name, n) for name in table}
    print(f"Adam, {n} elements, {len(times['float32'])} rounds, medians; ratios paired by "
          f"round; compute floor from in-L2 slopes")
    print(f"  {'variant':30s} {'B/el':>4s} {'ms':>8s} {'f32/this':>8s} {'roofline':>9s} "
          f"{'compute':>8s}  binds     time/floor")
    records = []
    for name, (nbytes, _, _) in table.items():
        roof_s, comp_s = med[f"roofline {name}"], floors[name]
        binds = "roofline" if roof_s >= comp_s else "compute"
        ratio = paired_ratio(times, name, f"roofline {name}") if binds == "roofline" \
            else med[name] / comp_s
        speed = paired_ratio(times, "float32", name)
        print(f"  {name:30s} {nbytes:4g} {med[name] * 1e3:8.2f} {speed:8.2f} "
              f"{roof_s * 1e3:8.2f}  {comp_s * 1e3:7.2f}  {binds:9s} {ratio:5.2f}")
        rec = dict(variant=name, bytes_per_element=nbytes, ms=med[name] * 1e3,
                   float32_over_this=speed, roofline_ms=roof_s * 1e3,
                   compute_floor_ms=comp_s * 1e3, binds=binds, time_over_floor=ratio)
        if "torch fused bf16" in fns:
            rec["vs_torch_fused_bf16"] = paired_ratio(times, "torch fused bf16", name)
        records.append(rec)
    for name in ("torch fused bf16", "torch fused f32"):
        if name in fns:
            print(f"  {name:30s}      {med[name] * 1e3:8.2f} "
                  f"{paired_ratio(times, 'float32', name):8.2f}")
    if "torch fused bf16" in fns:
        print(f"bf16 everything vs torch fused bf16: "
              f"{paired_ratio(times, 'torch fused bf16', 'bf16 everything'):.2f}x")
    if args.json:
        meta = {"machine": platform.processor() or platform.machine(), "size": n,
                "command": f"python benchmarks/storage.py --size {n} --rounds {args.rounds} "
                           f"--json {args.json}"}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
