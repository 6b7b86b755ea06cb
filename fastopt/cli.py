"""The ``fastopt`` command line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any, Sequence


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> str:
    """A report of this installation: versions, backends, threading, CPU."""
    import numba
    import numpy as np

    import fastopt
    from fastopt import _numba_backend  # sets the threading layer as fastopt runs it

    from .kernels.cpu import roofline_kernel

    # Start the thread pool so the threading layer it picked can be reported.
    x = np.zeros(1, np.float32)
    roofline_kernel(0, True)(x, x.copy(), ())
    lines = [
        f"fastopt {fastopt.__version__}",
        f"python {platform.python_version()} ({sys.executable})",
        f"numpy {np.__version__}",
        f"numba {numba.__version__}",
        f"threading layer: {numba.threading_layer()}",
        f"threads: {numba.get_num_threads()} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})",
        f"parallel kernels from {_numba_backend.PARALLEL_MIN_SIZE} elements",
        f"cpu: {_cpu_name()} ({os.cpu_count()} logical cores)",
        f"numba cache dir: {numba.config.CACHE_DIR or '(next to the sources)'}",
        "backends:",
    ]
    from ._backends import simulator_enabled

    for name, reason in fastopt.available_backends().items():
        state = "available" if reason is None else "unavailable: " + reason
        if name == "numba-cuda" and reason is None and simulator_enabled():
            state += " (Numba's CUDA simulator: NUMBA_ENABLE_CUDASIM is set)"
        lines.append(f"  {name:<11} {state}")
    return "\n".join(lines)


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _choices(kind: str, given: list[str], allowed: Sequence[str]) -> list[str]:
    bad = [x for x in given if x not in allowed]
    if bad:
        raise SystemExit(f"fastopt: unknown {kind} {', '.join(map(repr, bad))} "
                         f"(expected one of {', '.join(allowed)})")
    return given


def _runnable_backends(requested: str | None) -> list[str]:
    import fastopt

    avail = fastopt.available_backends()
    if requested is None:
        return [b for b, reason in avail.items() if reason is None]
    names = _choices("backend", _csv(requested), list(avail))
    for b in names:
        if avail[b] is not None:
            raise SystemExit(f"fastopt: backend {b!r} is not available: {avail[b]}")
    return names


def _write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def bench(args: argparse.Namespace) -> int:
    from . import _bench

    from ._backends import GPU_BACKENDS as gpu

    algorithms = _choices("algorithm", _csv(args.algo), list(_bench.ALGORITHMS))
    if args.backends is None:
        backends = [b for b in _runnable_backends(None) if b not in gpu]
    else:
        backends = _runnable_backends(args.backends)
        if any(b in gpu for b in backends):
            raise SystemExit("fastopt: `fastopt bench` measures the host backends; the GPU "
                             "backends have their own benchmark: python benchmarks/gpu.py "
                             "(from a checkout of fastopt)")
    if args.sizes:
        sizes = tuple(int(x) for x in _csv(args.sizes))
    else:
        sizes = _bench.QUICK_SIZES if args.quick else _bench.DEFAULT_SIZES
    rounds = args.repeat or (3 if args.quick else 10)
    if args.model is None:
        args.model = not args.quick and not args.sizes
    max_seconds = 0.3 if args.quick else 3.0

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    interrupted = False
    try:
        records = _bench.run_bench(backends, algorithms, sizes, args.dtype, rounds=rounds,
                                   max_seconds=max_seconds, progress=progress)
    except _bench.BenchInterrupted as e:
        records, interrupted = e.records, True
        print("interrupted: what was measured so far", file=sys.stderr)
    print(_bench.format_table(records))
    model_records = []
    if args.model and not interrupted:
        try:
            for b in (x for x in backends if x != "numpy"):
                progress(f"model: gpt2-small Adam, 148 tensors, backend {b}")
                model_records.append(_bench.run_model(b, _bench.gpt2_small_shapes()))
        except KeyboardInterrupt:
            interrupted = True
        for r in model_records:
            vs = "-" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}x"
            print(f"\nmodel {r['model']} ({r['tensors']} tensors, {r['size']} params), "
                  f"Adam float32, tensor by tensor on {r['backend']}: "
                  f"{r['seconds'] * 1e3:.1f} ms per step, {r['gbps']:.1f} GB/s; "
                  f"vs torch fused on the same tensors: {vs}")
    if args.json:
        _write_json(args.json, records + model_records)
    if args.plot and records:
        _bench.plot(records, args.plot)
    return 130 if interrupted else 0


def check(args: argparse.Namespace) -> int:
    from . import _bench, _check

    algorithms = _choices("algorithm", _csv(args.algo), list(_bench.ALGORITHMS))
    backends = [b for b in _runnable_backends(args.backends) if b != "numpy"]
    sizes = tuple(int(x) for x in _csv(args.sizes)) if args.sizes else _check.SIZES
    results = _check.run_check(backends, algorithms, _csv(args.dtype), sizes, args.steps)
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        _write_json(args.json, _check.results_json(results))
    return 1 if failed else 0


def demo(args: argparse.Namespace) -> int:
    from . import _demo

    names = _choices("optimizer", _csv(args.optimizers), list(_demo.OPTIMIZERS))
    overrides = _demo.parse_overrides(args.set or [])
    for label, value, lo in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--hidden", args.hidden, 1)):
        if value < lo:
            raise SystemExit(f"fastopt demo: invalid {label} {value} (expected >= {lo})")
    if args.backend != "auto":
        _runnable_backends(args.backend)
    data = _demo.load_mnist(args.mnist) if args.mnist else _demo.load_digits()
    print(f"{data.name}: {len(data.y_train)} training and {len(data.y_test)} test examples, "
          f"{data.x_train.shape[1]} features; MLP {data.x_train.shape[1]}-{args.hidden}-10, "
          f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, backend "
          f"{args.backend}", file=sys.stderr, flush=True)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    try:
        for name in names:
            hyper = {**_demo.OPTIMIZERS[name][1], **overrides.get(name, {})}
            try:
                results.append(_demo.train(
                    name, hyper, data, epochs=args.epochs, batch_size=args.batch_size,
                    hidden=args.hidden, seed=args.seed, backend=args.backend,
                    progress=progress))
            except (TypeError, ValueError) as e:
                raise SystemExit(f"fastopt demo: {name}: {e}") from None
    except KeyboardInterrupt:
        print("interrupted: the optimizers trained so far", file=sys.stderr)
        interrupted = True
    else:
        interrupted = False
    if results:
        print(_demo.format_table(results))
        if args.json:
            _write_json(args.json, [r.record(args.backend, data.name) for r in results])
        if args.plot:
            _demo.plot(results, args.plot, data.name)
    return 130 if interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    from . import _bench

    parser = argparse.ArgumentParser(
        prog="fastopt", description="Fused optimizer update kernels: tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, backends, threading layer and CPU")
    all_algos = ",".join(_bench.ALGORITHMS)

    b = sub.add_parser("bench", help="compare backends' throughput against the roofline")
    b.add_argument("--algo", default=all_algos, help="comma-separated algorithms")
    b.add_argument("--backends", help="comma-separated backends (default: all available)")
    b.add_argument("--sizes", help="comma-separated element counts")
    b.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    b.add_argument("--repeat", type=int, help="timing rounds per case (default 10; 3 quick)")
    b.add_argument("--quick", action="store_true", help="two sizes, few rounds (< 30 s)")
    b.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    b.add_argument("--plot", metavar="PATH", help="write a PNG of GB/s against size")
    b.add_argument("--model", action=argparse.BooleanOptionalAction, default=None,
                   help="also step GPT-2 small's 148 tensors (default: on, off with --quick)")

    c = sub.add_parser("check", help="every available backend against the reference")
    c.add_argument("--algo", default=all_algos, help="comma-separated algorithms")
    c.add_argument("--backends", help="comma-separated backends (default: all available)")
    c.add_argument("--sizes", help="comma-separated element counts")
    c.add_argument("--dtype", default="float32,float64", help="comma-separated dtypes")
    c.add_argument("--steps", type=int, default=20, help="steps per case (default 20)")
    c.add_argument("--json", metavar="PATH", help="write the results as a JSON list")

    d = sub.add_parser("demo", help="train a small MLP with every optimizer and compare them")
    d.add_argument("--optimizers", default="sgd,momentum,nesterov,adagrad,rmsprop,adam,adamw,"
                   "adadelta", help="comma-separated optimizers (default: all eight)")
    d.add_argument("--set", action="append", metavar="OPT.NAME=VALUE",
                   help="override a default hyperparameter, e.g. --set adam.lr=0.003 "
                        "(repeatable; betas as --set adam.betas=0.9,0.99)")
    d.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    d.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    d.add_argument("--hidden", type=int, default=128, help="hidden units (default 128)")
    d.add_argument("--seed", type=int, default=0,
                   help="initial weights and batch order, the same for every optimizer")
    d.add_argument("--backend", default="auto", help="fastopt backend (default auto)")
    d.add_argument("--mnist", metavar="DIR", help="use MNIST from the IDX files in DIR")
    d.add_argument("--plot", metavar="PATH", help="write a PNG of the loss curves")
    d.add_argument("--json", metavar="PATH", help="write one record per optimizer")

    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    if args.command == "info":
        print(info())
        return 0
    if args.command == "bench":
        return bench(args)
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
