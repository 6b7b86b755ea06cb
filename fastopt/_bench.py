"""Throughput measurement shared by the benchmark suite (benchmarks/) and the command line.

An update is memory-bound, so each measurement is set against a roofline: a kernel with the same
memory traffic and no arithmetic to speak of (kernels/cpu/roofline.py), timed in the same run,
interleaved with the update so that both see the same machine noise. Ratios (the roofline
fraction, the speedups) are medians over rounds of each round's ratio (:func:`paired_ratio`).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _functional
from ._algorithms import ALGORITHMS as ALGORITHMS
from ._algorithms import active_states as active_states
from ._specs import SPECS

# The benchmarked configuration of each: the common one (SGD with momentum, as people train).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {n: s.bench_options for n, s in SPECS.items()}
# Every option set `fastopt check` runs: each flag of each algorithm on and off at least once.
OPTION_SETS: dict[str, list[dict[str, Any]]] = {
    n: list(s.option_sets) for n, s in SPECS.items()}
TORCH_CLASSES = {n: s.torch_class for n, s in SPECS.items() if s.torch_impl}
TORCH_FUSED = {n for n, s in SPECS.items() if s.torch_impl == "fused"}


DTYPES = ("float32", "float64", "bfloat16", "float16")


def numpy_dtype(name: Any) -> np.dtype[Any]:
    """A benchmark dtype by name (bfloat16: ml_dtypes')."""
    if name == "bfloat16":
        import ml_dtypes

        out: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return out
    plain: np.dtype[Any] = np.dtype(name)
    return plain


def bytes_per_element(algorithm: str, options: dict[str, Any], dtype: Any,
                      state_dtype: Any = None) -> int:
    """Bytes moved per element: read param, grad and each state; write param and each state
    (states in ``state_dtype``, by default the param's)."""
    n_state = len(active_states(algorithm, options))
    itemsize: int = np.dtype(dtype).itemsize
    state_size: int = itemsize if state_dtype is None else np.dtype(state_dtype).itemsize
    return itemsize * 3 + state_size * 2 * n_state


@dataclass
class Case:
    algorithm: str
    size: int
    dtype: np.dtype
    options: dict[str, Any]
    param: np.ndarray
    grad: np.ndarray
    states: dict[str, np.ndarray | None]
    step: int = 0
    # Scalar states (NAdam's mu_product, ...), 0-d arrays updated in place.
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    state_dtype: np.dtype | None = None  # None: the param's
    q8: str | None = None  # the format of 8-bit states ("8bit-fp8", "8bit-dynamic")

    @classmethod
    def make(cls, algorithm: str, size: int, dtype: Any = np.float32,
             options: dict[str, Any] | None = None, seed: int = 0,
             state_dtype: Any = None) -> "Case":
        options = dict(DEFAULT_OPTIONS[algorithm] if options is None else options)
        rng = np.random.default_rng(seed)
        dtype = numpy_dtype(dtype)
        q8 = None
        if isinstance(state_dtype, str) and state_dtype.startswith("8bit-"):
            q8, state_dtype = state_dtype[5:], None
        sdtype = None if state_dtype is None else numpy_dtype(state_dtype)
        if sdtype is not None and sdtype == dtype and sdtype.name == dtype.name:
            sdtype = None
        param = rng.standard_normal(size, dtype=np.float32).astype(dtype)
        grad = (rng.standard_normal(size, dtype=np.float32) * 1e-3).astype(dtype)
        active = active_states(algorithm, options)
        spec = SPECS[algorithm]
        states: dict[str, Any] = {
            s: (spec.initial_array(s, param).astype(sdtype or dtype) if s in active
                else None) for s in ALGORITHMS[algorithm][1]}
        if q8 is not None:  # 8-bit states, but parameter values (Schedule-Free's z) stay
            from ._quant import State8bit

            for s in spec.states:
                if states[s.name] is not None and s.kind != "weights":
                    states[s.name] = State8bit.quantize(states[s.name], format=q8,
                                                        signed=s.kind == "signed")
        narrow = dtype.itemsize == 2 or (sdtype is not None and sdtype.itemsize == 2)
        scalars = spec.initial_scalars(options, np.float32 if narrow else dtype)
        return cls(algorithm, size, dtype, options, param, grad, states, scalars=scalars,
                   state_dtype=sdtype, q8=q8)

    @property
    def nbytes(self) -> int:
        if self.q8 is not None:  # each state read and written: its codes and absmax
            return 2 * self.param.nbytes + self.grad.nbytes + 2 * sum(
                a.nbytes for a in self.states.values() if a is not None)
        return self.size * bytes_per_element(self.algorithm, self.options, self.dtype,
                                             self.state_dtype)

    @property
    def label(self) -> str:
        """The dtype, and the states' when they differ: "bfloat16", "bfloat16/float32"."""
        if self.q8 is not None:
            return f"{self.dtype.name}/8bit-{self.q8}"
        return self.dtype.name + ("" if self.state_dtype is None
                                  else f"/{self.state_dtype.name}")

    @property
    def working_set_bytes(self) -> int:
        """The bytes of every array the update touches (param, grad, states)."""
        return sum(a.nbytes for a in (self.param, self.grad, *self.states.values())
                   if a is not None)

    def fastopt(self, backend: str = "auto") -> Callable[[], None]:
        fn = ALGORITHMS[self.algorithm][0]
        states = tuple(self.states.values())

        def run() -> None:
            # The step count grows so bias corrections stay realistic; values stay bounded.
            self.step += 1
            fn(self.param, self.grad, *states, step=self.step, backend=backend, **self.scalars,
               **self.options)

        return run

    def roofline(self) -> Callable[[], None]:
        from .kernels.cpu import roofline_kernel
        from ._numba_backend import PARALLEL_MIN_SIZE

        def plain(a: np.ndarray) -> np.ndarray:  # 16-bit arrays as their uint16 bits
            return a.view(np.uint16) if a.itemsize == 2 else a

        active = tuple(getattr(a, "codes", a) for a in self.states.values() if a is not None)
        par = self.size >= PARALLEL_MIN_SIZE
        kernel = roofline_kernel(len(active), par)
        # adding zeros keeps values fixed
        p, g = plain(self.param.copy()), plain(np.zeros_like(self.grad))
        states = tuple(plain(a.copy()) for a in active)
        return lambda: kernel(p, g, states)

    def torch_impl(self) -> str:
        """torch.optim's implementation the comparison runs: "fused" or "foreach"."""
        return "fused" if self.algorithm in TORCH_FUSED else "foreach"

    def torch(self) -> Callable[[], None] | None:
        """torch.optim's best CPU implementation on a copy of the arrays, or None."""
        if self.algorithm not in TORCH_CLASSES:  # torch.optim has no such algorithm
            return None
        try:
            import torch
        except ImportError:
            return None
        if self.state_dtype is not None or self.q8 is not None:  # torch: the param's dtype
            return None
        dtype = getattr(torch, self.dtype.name)
        p = torch.nn.Parameter(torch.from_numpy(self.param.astype(np.float64)).to(dtype))
        p.grad = torch.from_numpy(self.grad.astype(np.float64)).to(dtype)
        kw = SPECS[self.algorithm].torch_options(self.options)
        opt = getattr(torch.optim, TORCH_CLASSES[self.algorithm])([p], **kw,
                                                                  **{self.torch_impl(): True})
        step: Callable[[], None] = opt.step
        return step


def interleaved_times(fns: dict[str, Callable[[], None]], *, rounds: int = 10,
                      per_round: int = 5, settle: float = 2e-3,
                      max_seconds: float = 10.0) -> dict[str, list[list[float]]]:
    """Seconds per call of each function, timed side by side in one process: for each
    function, one list of samples per round.

    The functions take turns in blocks: each block first runs its function untimed for
    ``settle`` seconds (at least once), then times ``per_round`` calls. The settling matters:
    torch and Numba each keep an OpenMP thread team that spins for a while after a parallel
    region, and on a 2-core machine a team still spinning from the previous function would
    halve the next one's speed. Stops early (after at least 3 rounds) past ``max_seconds``.
    """
    clock = time.perf_counter
    times: dict[str, list[list[float]]] = {k: [] for k in fns}
    deadline = clock() + max_seconds
    for r in range(rounds):
        for name, fn in fns.items():
            fn()
            until = clock() + settle
            while clock() < until:
                fn()
            samples: list[float] = []
            for _ in range(per_round):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
            times[name].append(samples)
        if r >= 2 and clock() > deadline:
            break
    return times


def medians(times: dict[str, list[list[float]]]) -> dict[str, float]:
    """The median over every sample of each function (:func:`interleaved_times`)."""
    return {k: statistics.median(s for block in v for s in block) for k, v in times.items()}


def interleaved_medians(fns: dict[str, Callable[[], None]], **timing: Any) -> dict[str, float]:
    """Median seconds per call of each function, timed side by side in one process
    (:func:`interleaved_times`, same keywords)."""
    return medians(interleaved_times(fns, **timing))


def paired_ratio(times: dict[str, list[list[float]]], numerator: str,
                 denominator: str) -> float:
    """The median over rounds of ``numerator``'s median time in the round over
    ``denominator``'s: each ratio compares blocks run a few milliseconds apart, so a drift of
    the machine's speed between rounds (other guests on a shared host) cancels out of it."""
    return statistics.median(statistics.median(a) / statistics.median(b)
                             for a, b in zip(times[numerator], times[denominator]))


DEFAULT_SIZES = (2**12, 2**16, 2**20, 2**22, 2**24)
QUICK_SIZES = (2**12, 2**18)


def run_bench(backends: list[str], algorithms: list[str], sizes: tuple[int, ...], dtype: Any,
              rounds: int = 10, max_seconds: float = 3.0,
              progress: Callable[[str], None] | None = None,
              state_dtype: Any = None) -> list[dict[str, Any]]:
    """Time every backend on every algorithm and size; one record per (backend, case).

    Within one (algorithm, size) case, the backends, the roofline kernel and torch.optim (when
    importable) are timed side by side (:func:`interleaved_times`). Records are appended as
    cases finish, so a KeyboardInterrupt leaves what was measured in ``records`` (re-raised).
    """
    records: list[dict[str, Any]] = []
    total = len(algorithms) * len(sizes)
    done = 0
    try:
        for algorithm in algorithms:
            for size in sizes:
                done += 1
                cases = {b: Case.make(algorithm, size, dtype, state_dtype=state_dtype)
                         for b in backends}
                first = next(iter(cases.values()))
                if progress:
                    progress(f"[{done}/{total}] {algorithm} {first.label} n={size}")
                fns = {b: c.fastopt(b) for b, c in cases.items()}
                fns["roofline"] = first.roofline()
                torch_fn = first.torch() if first.dtype != np.float64 else None
                if torch_fn is not None:
                    fns["torch"] = torch_fn
                per_round = max(3, min(40, 2**22 // size))
                times = interleaved_times(fns, rounds=rounds, per_round=per_round,
                                          max_seconds=max_seconds)
                med = medians(times)
                for b in backends:
                    rec: dict[str, Any] = dict(
                        backend=b, algorithm=algorithm, dtype=first.label, size=size,
                        bytes_per_element=round(first.nbytes / size, 2),
                        seconds=med[b], gbps=first.nbytes / med[b] / 1e9,
                        roofline_fraction=paired_ratio(times, "roofline", b),
                        roofline_gbps=first.nbytes / med["roofline"] / 1e9,
                        speedup_vs_reference=(paired_ratio(times, "numpy", b)
                                              if "numpy" in med else None),
                        speedup_vs_torch=(paired_ratio(times, "torch", b)
                                          if "torch" in med else None),
                        torch_impl=(f"torch.optim.{TORCH_CLASSES[algorithm]} "
                                    f"{first.torch_impl()}") if "torch" in med else None,
                        working_set_bytes=first.working_set_bytes,
                    )
                    records.append(rec)
    except KeyboardInterrupt:
        raise BenchInterrupted(records) from None
    return records


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_bench`; ``records`` holds what was measured so far."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__("interrupted")
        self.records = records


def format_table(records: list[dict[str, Any]]) -> str:
    width = max([8, *[len(r["dtype"]) for r in records]])
    lines = [f"{'backend':<8} {'algorithm':<9} {'dtype':<{width}} {'size':>9} {'median':>11} "
             f"{'GB/s':>7} {'roofline':>8} {'vs ref':>8} {'vs torch':>8}"]
    for r in records:
        ref = "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        tor = "-" if r["speedup_vs_torch"] is None else f"{r['speedup_vs_torch']:.2f}x"
        lines.append(f"{r['backend']:<8} {r['algorithm']:<9} {r['dtype']:<{width}} "
                     f"{r['size']:>9} "
                     f"{r['seconds'] * 1e6:>9.1f}us {r['gbps']:>7.1f} "
                     f"{r['roofline_fraction']:>8.2f} {ref:>8} {tor:>8}")
    return "\n".join(lines)


def cache_sizes() -> list[tuple[str, int]]:
    """This machine's data caches as (label, bytes), from Linux's sysfs; [] where unknown."""
    out: list[tuple[str, int]] = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for entry in entries:
        try:
            def read(name: str) -> str:
                with open(os.path.join(base, entry, name)) as f:
                    return f.read().strip()
            kind, level, size = read("type"), read("level"), read("size")
        except OSError:
            continue
        if kind == "Instruction" or not size[:-1].isdigit():
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1].upper(), 1)
        label = f"L{level}" + ("d" if kind == "Data" else "")
        out.append((label, int(size.rstrip("KMGkmg")) * scale))
    return out


def _bytes_text(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def plot(records: list[dict[str, Any]], path: str) -> None:
    """Write :func:`figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = figure(records)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(records: list[dict[str, Any]]) -> Any:
    """A figure of GB/s against size, one panel per algorithm, a line per backend, the
    roofline and torch.optim; dotted verticals where the arrays' working set fills each of this
    machine's caches. One legend for all panels, below them."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("fastopt: --plot needs matplotlib (pip install 'fastopt[bench]')")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["algorithm"], r["dtype"]) for r in records))
    algorithms = panels
    cols = min(3, len(algorithms))
    rows = -(-len(algorithms) // cols)
    height = 3.5 * rows + 0.8
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height), squeeze=False)
    caches = cache_sizes()
    handles: dict[str, Any] = {}
    backends = list(dict.fromkeys(r["backend"] for r in records))
    for ax, (algorithm, dtype) in zip(axes.flat, panels):
        mine = [r for r in records if r["algorithm"] == algorithm and r["dtype"] == dtype]
        sizes = sorted({r["size"] for r in mine})
        roof = {r["size"]: r["roofline_gbps"] for r in mine}
        handles["roofline (same traffic)"], = ax.plot(sizes, [roof[n] for n in sizes], "k--")
        for i, backend in enumerate(backends):
            rs = sorted((r for r in mine if r["backend"] == backend), key=lambda r: r["size"])
            if rs:
                handles[f"fastopt {backend}"], = ax.plot(
                    [r["size"] for r in rs], [r["gbps"] for r in rs], "o-", color=f"C{i}")
        first = mine[0]["backend"]
        torch_rs = sorted((r for r in mine if r.get("speedup_vs_torch") and r["backend"] == first),
                          key=lambda r: r["size"])
        if torch_rs:
            impl = torch_rs[0].get("torch_impl") or "torch.optim"
            fused = impl.endswith("fused")
            line, = ax.plot([r["size"] for r in torch_rs],
                            [r["gbps"] / r["speedup_vs_torch"] for r in torch_rs],
                            "s:" if fused else "^:", color="C3" if fused else "C4")
            handles["torch.optim, fused=True" if fused else "torch.optim, foreach=True"] = line
        per_element = {r["size"]: r.get("working_set_bytes", 0) / r["size"] for r in mine}
        bpe = max(per_element.values())
        for j, (label, nbytes) in enumerate(caches):
            if bpe and sizes[0] <= nbytes / bpe <= sizes[-1]:
                ax.axvline(nbytes / bpe, color="0.55", linestyle=(0, (1, 2 + j)), linewidth=1)
                ax.text(nbytes / bpe, 0.98, f" {label}", transform=ax.get_xaxis_transform(),
                        fontsize=7, color="0.35", va="top")
        ax.set_xscale("log", base=2)
        ax.set_title(f"{algorithm} ({dtype})")
        ax.set_xlabel("elements")
        ax.set_ylabel("effective GB/s")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(algorithms):]:
        ax.set_visible(False)
    labels = list(handles)
    if caches:
        from matplotlib.lines import Line2D

        text = ", ".join(f"{label} {_bytes_text(n)}" for label, n in caches)
        handles[f"the arrays fill this cache of cpu0 ({text})"] = Line2D(
            [], [], color="0.55", linestyle=":")
        labels = list(handles)
    ncol = min(3, len(labels))
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=ncol,
               fontsize=8, frameon=False)
    legend_rows = -(-len(labels) // ncol)
    fig.tight_layout(rect=(0, (0.15 + 0.2 * legend_rows) / height, 1, 1))
    return fig


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    """The 148 parameter tensors of GPT-2 small (124,439,808 parameters), in model order."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,),                    # ln_1 weight, bias
                   (d, 3 * d), (3 * d,),          # attn.c_attn
                   (d, d), (d,),                  # attn.c_proj
                   (d,), (d,),                    # ln_2
                   (d, 4 * d), (4 * d,),          # mlp.c_fc
                   (4 * d, d), (d,)]              # mlp.c_proj
    shapes += [(d,), (d,)]                        # ln_f
    return shapes



def _adam_tensors(shapes: list[tuple[int, ...]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Seeded float32 parameters and small gradients of ``shapes``."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-3) for s in shapes]
    return params, grads


def _per_tensor_adam(params: list[np.ndarray], grads: list[np.ndarray],
                     backend: str) -> Callable[[], None]:
    """A step function calling ``adam_step`` once per tensor, with its own state."""
    exp_avg = [np.zeros_like(p) for p in params]
    exp_avg_sq = [np.zeros_like(p) for p in params]
    state = {"step": 0}

    def step() -> None:
        state["step"] += 1
        t = state["step"]
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq):
            _functional.adam_step(p, g, m, v, step=t, backend=backend)

    return step


def _torch_adam(params: list[np.ndarray], grads: list[np.ndarray],
                fastopt_torch: bool = False) -> Callable[[], None] | None:
    """The ``step`` of torch.optim.Adam(fused=True), or of fastopt.torch.Adam, over copies of
    the tensors; None without torch."""
    try:
        import torch

        from . import torch as ft
    except ImportError:
        return None
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.from_numpy(g.copy())
    opt = ft.Adam(tparams) if fastopt_torch else torch.optim.Adam(tparams, fused=True)
    step: Callable[[], None] = opt.step
    return step


def _torch_fused_adam(params: list[np.ndarray],
                      grads: list[np.ndarray]) -> Callable[[], None] | None:
    return _torch_adam(params, grads)


def _fastopt_torch_adam(params: list[np.ndarray],
                        grads: list[np.ndarray]) -> Callable[[], None] | None:
    return _torch_adam(params, grads, fastopt_torch=True)


def _adam_kernel_only(opt: Any, grads: list[np.ndarray]) -> Callable[[], None]:
    """The multi-tensor kernel launch of ``opt`` (a stepped fastopt.Adam) with every table
    built beforehand: what a step costs without any Python bookkeeping."""
    from . import _numba_backend as nb
    from ._layout import base_address
    spec = SPECS["adam"]
    options = opt._options(opt.param_groups[0])
    params = opt.param_groups[0]["params"]
    names = spec.state_names
    sizes = tuple(p.size for p in params)
    par = sum(sizes) >= nb.PARALLEL_MIN_SIZE
    kernel = nb.multi_kernel(spec, spec.flag_values(options), params[0].dtype, par)
    hyper = tuple(nb._hyper_args(spec, options))
    tensor, lo, hi = nb._chunks(sizes)
    rows = np.array([[base_address(p), base_address(g),
                      *[base_address(opt.state[i][n]) if n in opt.state[i] else base_address(p)
                        for n in names]] for i, (p, g) in enumerate(zip(params, grads))],
                    np.int64)
    steps = np.full(len(params), 2, np.int64)
    return lambda: nb._run(kernel, par, rows, tensor, lo, hi, steps, nb._NO_SCALARS, hyper, 1.0)


def run_model(backend: str, shapes: list[tuple[int, ...]], rounds: int = 5,
              max_seconds: float = 20.0) -> dict[str, Any]:
    """Adam over a model's tensors, tensor by tensor, beside torch fused on the same tensors."""
    params, grads = _adam_tensors(shapes)
    fns: dict[str, Callable[[], None]] = {backend: _per_tensor_adam(params, grads, backend)}
    torch_step = _torch_fused_adam(params, grads)
    if torch_step is not None:
        fns["torch"] = torch_step
    med = interleaved_medians(fns, rounds=rounds, per_round=1, settle=0.0,
                              max_seconds=max_seconds)
    n = sum(p.size for p in params)
    nbytes = n * bytes_per_element("adam", {}, np.float32)
    return dict(backend=backend, algorithm="adam", dtype="float32", size=n,
                tensors=len(shapes), model="gpt2-small", seconds=med[backend],
                gbps=nbytes / med[backend] / 1e9,
                torch_seconds=med.get("torch"),
                speedup_vs_torch=(med["torch"] / med[backend]) if "torch" in med else None)


def many_small_shapes(n: int = 2048, size: int = 512) -> list[tuple[int, ...]]:
    """``n`` tensors of ``size`` elements: biases and norms, where per-call overhead dominates."""
    return [(size,)] * n


def run_multi_tensor(shapes: list[tuple[int, ...]], name: str, rounds: int = 7,
                     max_seconds: float = 20.0) -> dict[str, Any]:
    """Adam over many tensors three ways, side by side: one ``adam_step`` call per tensor,
    ``fastopt.Adam`` (one multi-tensor launch), and torch.optim.Adam(fused=True) if present."""
    from .optim import Adam

    params, grads = _adam_tensors(shapes)
    opt = Adam(params)

    def multi_tensor_step() -> None:
        opt.step(grads)

    fns: dict[str, Callable[[], None]] = {
        "per_tensor": _per_tensor_adam([p.copy() for p in params], grads, "auto"),
        "multi_tensor": multi_tensor_step}
    multi_tensor_step()
    fns["kernel_only"] = _adam_kernel_only(opt, grads)
    torch_step = _fastopt_torch_adam(params, grads)
    if torch_step is not None:
        fns["fastopt_torch"] = torch_step
    torch_step = _torch_fused_adam(params, grads)
    if torch_step is not None:
        fns["torch_fused"] = torch_step
    med = interleaved_medians(fns, rounds=rounds, per_round=3, settle=0.0,
                              max_seconds=max_seconds)
    n = sum(p.size for p in params)
    out: dict[str, Any] = dict(set=name, tensors=len(shapes), size=n, dtype="float32",
                               seconds=med)
    out["multi_vs_per_tensor"] = med["per_tensor"] / med["multi_tensor"]
    # Python bookkeeping per tensor per step: the step's time minus its kernel's.
    out["bookkeeping_us_per_tensor"] = {
        k: (med[k] - med["kernel_only"]) / len(shapes) * 1e6
        for k in ("multi_tensor", "fastopt_torch") if k in med}
    if "torch_fused" in med:
        out["multi_vs_torch_fused"] = med["torch_fused"] / med["multi_tensor"]
        if "fastopt_torch" in med:
            out["fastopt_torch_vs_torch_fused"] = med["torch_fused"] / med["fastopt_torch"]
    return out
