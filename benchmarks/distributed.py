"""Sharded AdamW over MPI on a GPT-2-small-sized parameter set (124.4 M float32 elements in
GPT-2's 148 tensors): step time split into its parts, state bytes per rank.

    mpiexec -n 1 python -m mpi4py benchmarks/distributed.py
    mpiexec -n 2 python -m mpi4py benchmarks/distributed.py [--stage 1] [--steps 7]

Rank 0 prints the median seconds of each part of ``ZeroOptimizer.step`` (``timings``: check,
reduce_scatter, norm, update, broadcast) over the steps after the first, the whole step, the
optimizer-state bytes each rank holds, and (one rank only) the unsharded ``fastopt.AdamW.step``
on the same arrays for comparison. Clipping at norm 1.0, as in GPT-2 training.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numba
import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import ZeroOptimizer


def gpt2_small_shapes(layers: int = 12, d: int = 768, vocab: int = 50257,
                      context: int = 1024) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,),
                   (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", type=int, default=2, choices=(1, 2))
    parser.add_argument("--steps", type=int, default=7)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    shapes = gpt2_small_shapes()
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) * np.float32(0.02) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for s in shapes]
    opt = ZeroOptimizer(params, fastopt.AdamW, lr=1e-4, stage=args.stage)
    parts: dict[str, list[float]] = {}
    totals = []
    for step in range(args.steps):
        comm.Barrier()
        t = time.perf_counter()
        opt.step(grads, max_grad_norm=1.0)
        elapsed = time.perf_counter() - t
        if step:
            totals.append(elapsed)
            for k, v in opt.timings.items():
                parts.setdefault(k, []).append(v)
    held = sum(v.nbytes for s in opt.local.state.values() for v in s.values()
               if isinstance(v, np.ndarray))
    helds = comm.gather(held, root=0)
    medians = comm.gather({k: statistics.median(v) for k, v in parts.items()}, root=0)
    whole = None
    if comm.size == 1:
        one = fastopt.AdamW(params, lr=1e-4)
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            one.step(grads, max_grad_norm=1.0)
            times.append(time.perf_counter() - t)
        whole = statistics.median(times[1:])
    if comm.rank == 0:
        n = sum(int(np.prod(s)) for s in shapes)
        print(f"{cpu_name()}, {comm.size} rank(s), "
              f"{numba.get_num_threads()} Numba thread(s) each, stage {args.stage}, "
              f"{n:,} float32 elements in {len(shapes)} arrays, {args.steps - 1} timed steps")
        print(f"  step (median): {statistics.median(totals) * 1e3:.1f} ms")
        for k in ("check", "reduce_scatter", "norm", "update", "broadcast"):
            if k in medians[0]:
                print(f"  {k:15s} " + "  ".join(f"rank {r}: {m[k] * 1e3:7.1f} ms"
                                                for r, m in enumerate(medians)))
        print("  state bytes per rank: " + ", ".join(f"{b:,}" for b in helds)
              + f" (sum {sum(helds):,}; unsharded {8 * n:,})")
        if whole is not None:
            print(f"  unsharded fastopt.AdamW.step (median): {whole * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
