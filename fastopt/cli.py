"""The ``fastopt`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from typing import Any, Callable, Sequence


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
    from .kernels.cpu._cache import cache_dir

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
        f"kernel cache: {cache_dir()}"
        + (" (NUMBA_CACHE_DIR)" if numba.config.CACHE_DIR else ""),
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


# Argument types: each rejects a bad value with a one-line message before anything runs
# (argparse prints it with the usage line and exits with status 2).

def _names(kind: str, allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = _csv(text)
        bad = [x for x in names if x not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {', '.join(map(repr, bad)) or repr(text)} "
                f"(expected a comma-separated list of {', '.join(allowed)})")
        return list(dict.fromkeys(names))
    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is too small (expected >= {low})")
        return value
    return parse


def _sizes(text: str) -> tuple[int, ...]:
    items = _csv(text)
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names no size (expected element counts "
                                         f"such as 4096,65536)")
    out = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not an element count (expected integers >= 1, such as "
                f"4096,65536)") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is not an element count (expected "
                                             f"integers >= 1)")
        out.append(value)
    return tuple(dict.fromkeys(out))


def _output_path(text: str) -> str:
    """A file to write at the end of a run: its folder must exist and be writable now."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder (expected a file name)")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} does not "
                                         f"exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: folder {folder!r} is not "
                                         f"writable")
    return text


def _runnable_backends(parser: argparse.ArgumentParser, requested: str | None) -> list[str]:
    import fastopt

    avail = fastopt.available_backends()
    if requested is None:
        return [b for b, reason in avail.items() if reason is None]
    try:
        names = _names("backend", list(avail))(requested)
    except argparse.ArgumentTypeError as e:
        parser.error(f"argument --backends: {e}")
    for b in names:
        if avail[b] is not None:
            parser.error(f"backend {b!r} is not available: {avail[b]}")
    return names


def _write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import _bench

    from ._backends import GPU_BACKENDS as gpu

    if args.backends is None:
        backends = [b for b in _runnable_backends(parser, None) if b not in gpu]
    else:
        backends = _runnable_backends(parser, args.backends)
        if any(b in gpu for b in backends):
            parser.error("`fastopt bench` measures the host backends; the GPU backends have "
                         "their own benchmark: python benchmarks/gpu.py (from a checkout of "
                         "fastopt)")
    sizes = args.sizes or (_bench.QUICK_SIZES if args.quick else _bench.DEFAULT_SIZES)
    rounds = args.repeat or (3 if args.quick else 10)
    if args.model is None:
        args.model = not args.quick and not args.sizes
    if args.plot:
        _need_matplotlib(parser, "--plot")
    # A case stops after at least 3 rounds once its time is up: 0.3 s per round asked for.
    max_seconds = 0.3 * rounds if args.repeat else 0.3 if args.quick else 3.0

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    interrupted = False
    try:
        records = []
        for dtype in args.dtype:
            if args.state_dtype and dtype == "float64":
                parser.error("--state-dtype: float64 parameters keep float64 states")
            records += _bench.run_bench(backends, args.algo, sizes, dtype, rounds=rounds,
                                        max_seconds=max_seconds, progress=progress,
                                        state_dtype=args.state_dtype)
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


def check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import _check

    backends = [b for b in _runnable_backends(parser, args.backends) if b != "numpy"]
    if not backends:
        parser.error("no backend to check against the reference")
    sizes = args.sizes or _check.SIZES
    results = _check.run_check(backends, args.algo, args.dtype, sizes, args.steps)
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        _write_json(args.json, _check.results_json(results))
    return 1 if failed else 0


def _need_matplotlib(parser: argparse.ArgumentParser, flag: str) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        parser.error(f"{flag} needs matplotlib, which is not installed (pip install "
                     f"'fastopt[demo]')")


def demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import _demo

    try:
        overrides = _demo.parse_overrides(args.set or [])
        _demo.check_hyperparameters(args.optimizers, overrides)
    except ValueError as e:
        parser.error(f"argument --set: {e}")
    if args.plot:
        _need_matplotlib(parser, "--plot")
    if not args.mnist and importlib.util.find_spec("sklearn") is None:
        parser.error("the digits data comes with scikit-learn, which is not installed "
                     "(pip install 'fastopt[demo]', or use --mnist DIR)")
    if args.mnist:
        try:
            data = _demo.load_mnist(args.mnist)
        except ValueError as e:
            parser.error(f"argument --mnist: {e}")
    else:
        data = _demo.load_digits()
    print(f"{data.name}: {len(data.y_train)} training and {len(data.y_test)} test examples, "
          f"{data.x_train.shape[1]} features; MLP {data.x_train.shape[1]}-{args.hidden}-10, "
          f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, backend "
          f"{args.backend}", file=sys.stderr, flush=True)

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    storage: dict[str, Any] = {}
    if args.state_dtype:
        storage["state_dtype"] = args.state_dtype
    if args.state_format != "dynamic":
        if args.state_dtype != "8bit":
            parser.error("--state-format applies to --state-dtype 8bit")
        storage["state_format"] = args.state_format
    if args.master_weights:
        storage["master_weights"] = True
    if args.param_rounding != "nearest":
        storage["param_rounding"] = args.param_rounding
    if storage and args.dtype == "float32" and not set(storage) <= {"state_dtype",
                                                                     "state_format"}:
        parser.error("--master-weights and --param-rounding apply to 16-bit parameters "
                     "(--dtype bfloat16 or float16)")
    if args.dtype != "float32" or storage:
        print(f"parameters and gradients in {args.dtype}"
              + "".join(f", {k}={v}" for k, v in storage.items()), file=sys.stderr)
    results = []
    try:
        for name in args.optimizers:
            hyper = {**_demo.OPTIMIZERS[name][1], **overrides.get(name, {})}
            results.append(_demo.train(
                name, hyper, data, epochs=args.epochs, batch_size=args.batch_size,
                hidden=args.hidden, seed=args.seed, backend=args.backend, progress=progress,
                dtype=args.dtype, storage=storage))
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


def _sizes_text(sizes: Sequence[int]) -> str:
    return ",".join(f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n) for n in sizes)


def build_parser() -> argparse.ArgumentParser:
    from . import _bench, _check, _demo

    parser = argparse.ArgumentParser(
        prog="fastopt", description="Fused optimizer update kernels: tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print versions, backends, threading layer and CPU")
    algos = list(_bench.ALGORITHMS)
    algo_help = f"comma-separated algorithms, from {', '.join(algos)} (default: all)"
    backend_help = ("comma-separated backends, from numba, numpy, cupy, numba-cuda "
                    "(default: every one available here)")

    b = sub.add_parser("bench", help="compare backends' throughput against the roofline",
                       description="Median time, GB/s and fraction of a same-traffic roofline "
                                   "for every backend, algorithm and size, side by side with "
                                   "the NumPy reference and torch.optim (when installed).")
    b.add_argument("--algo", type=_names("algorithm", algos), default=algos, help=algo_help)
    b.add_argument("--backends", help=backend_help + "; GPU backends: benchmarks/gpu.py")
    b.add_argument("--sizes", type=_sizes,
                   help=f"comma-separated element counts (default "
                        f"{_sizes_text(_bench.DEFAULT_SIZES)}; --quick: "
                        f"{_sizes_text(_bench.QUICK_SIZES)})")
    b.add_argument("--dtype", type=_names("dtype", ["float32", "float64", "bfloat16", "float16"]),
                   default=["float32"],
                   help="comma-separated parameter and gradient dtypes, from float32, float64, "
                        "bfloat16, float16 (default float32)")
    b.add_argument("--state-dtype", choices=["float32", "bfloat16", "8bit-dynamic", "8bit-fp8"],
                   help="the states' dtype (default: the parameter's); 8bit-*: blockwise "
                        "8-bit states (fastopt.State8bit) of that format")
    b.add_argument("--repeat", type=_int_at_least(1),
                   help="timing rounds per case (default 10; 3 quick); a case stops "
                        "early past 0.3 s per round")
    b.add_argument("--quick", action="store_true", help="two sizes, few rounds (< 30 s)")
    b.add_argument("--json", metavar="PATH", type=_output_path,
                   help="write the records as a JSON list")
    b.add_argument("--plot", metavar="PATH", type=_output_path,
                   help="write a PNG of GB/s against size")
    b.add_argument("--model", action=argparse.BooleanOptionalAction, default=None,
                   help="also step GPT-2 small's 148 tensors (default: on, off with --quick)")

    c = sub.add_parser("check", help="every available backend against the reference",
                       description="Every available backend against the NumPy reference: every "
                                   "algorithm and option set, odd sizes, many steps. Exits 1 "
                                   "on any failure.")
    c.add_argument("--algo", type=_names("algorithm", algos), default=algos, help=algo_help)
    c.add_argument("--backends", help=backend_help)
    c.add_argument("--sizes", type=_sizes,
                   help=f"comma-separated element counts (default "
                        f"{','.join(map(str, _check.SIZES))})")
    c.add_argument("--dtype", type=_names("dtype", ["float32", "float64"]),
                   default=["float32", "float64"],
                   help="comma-separated dtypes, from float32, float64 (default: both)")
    c.add_argument("--steps", type=_int_at_least(1), default=_check.STEPS,
                   help=f"steps per case (default {_check.STEPS})")
    c.add_argument("--json", metavar="PATH", type=_output_path,
                   help="write the results as a JSON list")

    names = list(_demo.OPTIMIZERS)
    d = sub.add_parser("demo", help="train a small MLP with every optimizer and compare them",
                       description="Train one NumPy MLP on scikit-learn's digits (or MNIST) "
                                   "with each optimizer, from the same weights and batches, "
                                   "and compare loss and accuracy.")
    d.add_argument("--optimizers", type=_names("optimizer", names), default=names,
                   help=f"comma-separated optimizers, from {', '.join(names)} (default: all)")
    d.add_argument("--set", action="append", metavar="OPT.NAME=VALUE",
                   help="override a default hyperparameter, e.g. --set adam.lr=0.003 "
                        "(repeatable; betas as --set adam.betas=0.9,0.99)")
    d.add_argument("--epochs", type=_int_at_least(1), default=20, help="epochs (default 20)")
    d.add_argument("--batch-size", type=_int_at_least(1), default=32,
                   help="mini-batch size (default 32)")
    d.add_argument("--hidden", type=_int_at_least(1), default=128,
                   help="hidden units (default 128)")
    d.add_argument("--seed", type=_int_at_least(0), default=0,
                   help="initial weights and batch order, the same for every optimizer")
    d.add_argument("--backend", default="auto", choices=["auto", "numba", "numpy"],
                   help="fastopt backend (default auto)")
    d.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="the parameters' and gradients' dtype (default float32; 16-bit: the "
                        "network computes in float32 on widened copies)")
    d.add_argument("--state-dtype", choices=["float32", "bfloat16", "8bit"],
                   help="the optimizer states' dtype (default: the parameters'); 8bit: "
                        "blockwise 8-bit states for tensors of 4096 elements or more")
    d.add_argument("--state-format", default="dynamic", choices=["dynamic", "fp8"],
                   help="the 8-bit states' codes: bitsandbytes' dynamic map or fastopt's "
                        "fp8 (default dynamic)")
    d.add_argument("--master-weights", action="store_true",
                   help="16-bit parameters trained on float32 master weights")
    d.add_argument("--param-rounding", default="nearest",
                   choices=["nearest", "stochastic", "kahan"],
                   help="how 16-bit parameters are rounded (default nearest)")
    d.add_argument("--mnist", metavar="DIR", help="use MNIST from the IDX files in DIR")
    d.add_argument("--plot", metavar="PATH", type=_output_path,
                   help="write a PNG of the loss and accuracy curves")
    d.add_argument("--json", metavar="PATH", type=_output_path,
                   help="write one record per optimizer")
    parser.set_defaults(subparsers={"bench": b, "check": c, "demo": d})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    command = {"bench": bench, "check": check, "demo": demo}[args.command]
    return command(args, args.subparsers[args.command])


if __name__ == "__main__":
    sys.exit(main())
