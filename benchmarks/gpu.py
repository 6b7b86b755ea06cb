"""GPU throughput: Adam on both GPU backends vs a same-traffic roofline and torch fused.

    python benchmarks/gpu.py [--sizes 67108864,268435456] [--dtype float32|bfloat16]
                             [--json benchmarks/results/gpu-H100.json]
    python benchmarks/gpu.py --states 8bit-fp8|8bit-dynamic [--dtype ...] [--sizes ...]

Needs a GPU with CuPy and numba-cuda (pip install -e ".[cuda]"); torch with CUDA is optional.
In one process and interleaved round by round, it times at each size:

- fastopt.adam_step with backend="cupy" and backend="numba-cuda" (CuPy arrays in place; with
  --dtype bfloat16 parameters, gradients and states are all bfloat16: 14 bytes per element);
- the roofline: kernels with Adam's traffic (read param, grad, exp_avg, exp_avg_sq; write three
  of them) and one add per element, from each backend (kernels/cupy/roofline.cu,
  kernels/cuda/roofline.py); the faster one is the ceiling both are measured against;
- torch.optim.Adam(fused=True) on the same sizes, when torch has CUDA;

and, at 2**12 elements, the launch overhead: wall time per call from Python, validation
included. Medians of --rounds rounds; each round times a batch of calls between two syncs.

With --states 8bit-fp8 or 8bit-dynamic, exp_avg and exp_avg_sq are fastopt.State8bit on the
device (uint8 codes, one float32 absmax per 256 elements; blockwise kernels), and each backend
is timed against its own float32 Adam on the same sizes, side by side (the issue's 8-bit
targets are ratios to float32 fastopt); no roofline or torch rows.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np

import fastopt
from fastopt import _backends

BACKENDS = ("cupy", "numba-cuda")
# Adam: 4 arrays read, 3 written
BYTES_PER_ELEMENT = {"float32": 28, "bfloat16": 14}


def _timer(fn, sync, calls):
    def run():
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        return (time.perf_counter() - t0) / calls
    return run


def _medians(timers, rounds):
    """Each timer's median over ``rounds`` rounds, interleaved, after one warm-up call."""
    for t in timers.values():  # compile and warm up
        t()
    samples = {k: [] for k in timers}
    for _ in range(rounds):
        for k, t in timers.items():
            samples[k].append(t())
    return {k: statistics.median(s) for k, s in samples.items()}


def measure(size, rounds, calls, with_torch, dtype="float32"):
    import cupy

    rng = np.random.default_rng(0)
    host = rng.standard_normal(size, dtype=np.float32)
    store = np.float32
    if dtype == "bfloat16":  # CuPy 14 holds ml_dtypes.bfloat16 arrays
        import ml_dtypes

        store = ml_dtypes.bfloat16
    p, g = cupy.asarray(host.astype(store)), cupy.asarray((host * 1e-3).astype(store))
    m, v = (cupy.asarray(np.zeros(size, store)) for _ in range(2))
    sync = cupy.cuda.get_current_stream().synchronize
    step = {"t": 0}

    def adam(backend):
        def call():
            step["t"] += 1
            fastopt.adam_step(p, g, m, v, step=step["t"], lr=1e-6, backend=backend)
        return call

    def roof(backend):
        mod = _backends.load(backend)
        return lambda: mod.roofline(p, g, [m, v])

    timers = {f"adam/{b}": _timer(adam(b), sync, calls) for b in BACKENDS}
    timers.update({f"roofline/{b}": _timer(roof(b), sync, calls) for b in BACKENDS})
    if with_torch:
        import torch

        tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        tp = torch.nn.Parameter(torch.from_numpy(host).to("cuda", tdtype))
        tp.grad = torch.from_numpy(host * 1e-3).to("cuda", tdtype)
        opt = torch.optim.Adam([tp], lr=1e-6, fused=True)
        timers["torch-fused"] = _timer(opt.step, torch.cuda.synchronize, calls)
    return _medians(timers, rounds)


def measure_8bit(size, rounds, calls, dtype, fmt):
    """Medians of Adam with 8-bit states (format ``fmt``) and with float32 states, per
    backend, interleaved."""
    import cupy

    rng = np.random.default_rng(0)
    host = rng.standard_normal(size, dtype=np.float32)
    store = np.float32
    if dtype == "bfloat16":
        import ml_dtypes

        store = ml_dtypes.bfloat16
    arrays = {}
    for kind in ("8bit", "float32"):
        p, g = cupy.asarray(host.astype(store)), cupy.asarray((host * 1e-3).astype(store))
        if kind == "8bit":
            m = fastopt.State8bit.zeros(host, signed=True, format=fmt).map(cupy.asarray)
            v = fastopt.State8bit.zeros(host, signed=False, format=fmt).map(cupy.asarray)
        else:
            m, v = (cupy.zeros(size, np.float32) for _ in range(2))
        arrays[kind] = (p, g, m, v)
    sync = cupy.cuda.get_current_stream().synchronize
    step = {"t": 0}

    def adam(backend, kind):
        def call():
            step["t"] += 1
            fastopt.adam_step(*arrays[kind], step=step["t"], lr=1e-6, backend=backend)
        return call

    timers = {f"{kind}/{b}": _timer(adam(b, kind), sync, calls)
              for b in BACKENDS for kind in arrays}
    return _medians(timers, rounds)


def main_8bit(args, device):
    import cupy

    fmt = args.states[5:]
    records = []
    for size in [int(s) for s in args.sizes.split(",")]:
        med = measure_8bit(size, args.rounds, 10, args.dtype, fmt)
        rec = {"size": size, "dtype": args.dtype, "states": args.states, "seconds": med}
        for b in BACKENDS:
            rec[f"{b}_vs_float32_states"] = med[f"float32/{b}"] / med[f"8bit/{b}"]
        records.append(rec)
        print(f"adam {args.dtype} {args.states} n={size:>10}  " + "  ".join(
            f"{b} {med[f'8bit/{b}'] * 1e3:.3f} ms ({rec[f'{b}_vs_float32_states']:.2f}x its "
            f"float32-state Adam)" for b in BACKENDS), flush=True)
    if args.json:
        meta = {"device": device, "cupy": cupy.__version__, "host": platform.node(),
                "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:])}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records}, f, indent=1)
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=f"{2**26},{2**28}")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--dtype", default="float32", choices=sorted(BYTES_PER_ELEMENT))
    ap.add_argument("--states", default="float",
                    choices=("float", "8bit-fp8", "8bit-dynamic"),
                    help="exp_avg and exp_avg_sq: of the param's dtype, or 8-bit blockwise")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    avail = fastopt.available_backends()
    missing = {b: avail[b] for b in BACKENDS if avail[b] is not None}
    if missing or _backends.simulator_enabled():
        sys.exit("benchmarks/gpu.py needs a GPU with both GPU backends: "
                 + ("; ".join(f"{b}: {r}" for b, r in missing.items())
                    or "NUMBA_ENABLE_CUDASIM is set"))
    import cupy

    try:
        import torch
        with_torch = torch.cuda.is_available()
    except ImportError:
        with_torch = False
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = props["name"].decode()
    if args.states != "float":
        return main_8bit(args, device)
    records = []
    for size in [int(s) for s in args.sizes.split(",")]:
        med = measure(size, args.rounds, 10, with_torch, args.dtype)
        ceiling = min(med["roofline/cupy"], med["roofline/numba-cuda"])
        nbytes = BYTES_PER_ELEMENT[args.dtype] * size
        rec = {"size": size, "dtype": args.dtype, "bytes_per_element":
               BYTES_PER_ELEMENT[args.dtype], "seconds": med,
               "roofline_GBps": nbytes / ceiling / 1e9}
        for b in BACKENDS:
            rec[f"{b}_GBps"] = nbytes / med[f"adam/{b}"] / 1e9
            rec[f"{b}_fraction_of_roofline"] = ceiling / med[f"adam/{b}"]
            if with_torch:
                rec[f"{b}_vs_torch_fused"] = med["torch-fused"] / med[f"adam/{b}"]
        records.append(rec)
        line = "  ".join(f"{b} {rec[f'{b}_GBps']:7.1f} GB/s ({rec[f'{b}_fraction_of_roofline']:.2f}"
                         f" of roofline" + (f", {rec[f'{b}_vs_torch_fused']:.2f}x torch fused)"
                                            if with_torch else ")") for b in BACKENDS)
        print(f"adam {args.dtype} n={size:>10}  roofline {rec['roofline_GBps']:7.1f} GB/s  {line}",
              flush=True)
    small = measure(2**12, args.rounds, 200, with_torch, args.dtype)
    overhead = {k: v * 1e6 for k, v in small.items()}
    print("launch overhead at 2**12 elements (us per call): "
          + ", ".join(f"{k} {v:.1f}" for k, v in overhead.items()), flush=True)
    if args.json:
        meta = {"device": device, "cupy": cupy.__version__,
                "numba_cuda": __import__("numba_cuda").__version__,
                "torch": torch.__version__ if with_torch else None,
                "host": platform.node(), "command": "python benchmarks/gpu.py " +
                " ".join(sys.argv[1:])}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "records": records,
                       "launch_overhead_us_at_4096": overhead}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
