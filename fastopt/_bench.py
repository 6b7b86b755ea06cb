"""Throughput measurement shared by the benchmark suite (benchmarks/) and the command line.

An update is memory-bound, so each measurement is set against a roofline: a kernel with the same
memory traffic and no arithmetic to speak of (kernels/cpu/roofline.py), timed in the same run,
interleaved with the update so that both see the same machine noise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _functional

# Each algorithm's public function, state names in call order, and which are active by default.
ALGORITHMS: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {
    "sgd": (_functional.sgd_step, ("momentum_buffer",)),
    "adagrad": (_functional.adagrad_step, ("state_sum",)),
    "rmsprop": (_functional.rmsprop_step, ("square_avg", "momentum_buffer", "grad_avg")),
    "adam": (_functional.adam_step, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamw": (_functional.adamw_step, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adadelta": (_functional.adadelta_step, ("square_avg", "acc_delta")),
}
# The benchmarked configuration of each: the common one (SGD with momentum, as people train).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.01, "momentum": 0.9},
    "adagrad": {},
    "rmsprop": {},
    "adam": {},
    "adamw": {},
    "adadelta": {},
}
TORCH_CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
                 "adamw": "AdamW", "adadelta": "Adadelta"}
TORCH_FUSED = {"sgd", "adagrad", "adam", "adamw"}  # torch has fused CPU kernels for these


def active_states(algorithm: str, options: dict[str, Any]) -> tuple[str, ...]:
    states = ALGORITHMS[algorithm][1]
    if algorithm == "sgd":
        return states if options.get("momentum", 0) else ()
    if algorithm == "rmsprop":
        return tuple(s for s in states if s == "square_avg"
                     or (s == "momentum_buffer" and options.get("momentum", 0) > 0)
                     or (s == "grad_avg" and options.get("centered")))
    if algorithm in ("adam", "adamw"):
        return states if options.get("amsgrad") else states[:2]
    return states


def bytes_per_element(algorithm: str, options: dict[str, Any], dtype: Any) -> int:
    """Bytes moved per element: read param, grad and each state; write param and each state."""
    n_state = len(active_states(algorithm, options))
    itemsize: int = np.dtype(dtype).itemsize
    return itemsize * ((2 + n_state) + (1 + n_state))


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

    @classmethod
    def make(cls, algorithm: str, size: int, dtype: Any = np.float32,
             options: dict[str, Any] | None = None, seed: int = 0) -> "Case":
        options = dict(DEFAULT_OPTIONS[algorithm] if options is None else options)
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)
        param = rng.standard_normal(size, dtype=np.float32).astype(dtype)
        grad = (rng.standard_normal(size, dtype=np.float32) * 1e-3).astype(dtype)
        active = active_states(algorithm, options)
        states = {s: (np.zeros(size, dtype) if s in active else None)
                  for s in ALGORITHMS[algorithm][1]}
        return cls(algorithm, size, dtype, options, param, grad, states)

    @property
    def nbytes(self) -> int:
        return self.size * bytes_per_element(self.algorithm, self.options, self.dtype)

    def fastopt(self, backend: str = "auto") -> Callable[[], None]:
        fn = ALGORITHMS[self.algorithm][0]
        states = tuple(self.states.values())

        def run() -> None:
            # The step count grows so bias corrections stay realistic; values stay bounded.
            self.step += 1
            fn(self.param, self.grad, *states, step=self.step, backend=backend, **self.options)

        return run

    def roofline(self) -> Callable[[], None]:
        from .kernels.cpu import roofline_kernel
        from ._numba_backend import PARALLEL_MIN_SIZE

        active = tuple(a for a in self.states.values() if a is not None)
        par = self.size >= PARALLEL_MIN_SIZE
        kernel = roofline_kernel(len(active), par)
        p, g = self.param.copy(), np.zeros_like(self.grad)  # adding zeros keeps values fixed
        states = tuple(a.copy() for a in active)
        return lambda: kernel(p, g, states)

    def torch(self) -> Callable[[], None] | None:
        """torch.optim's best CPU implementation on a copy of the arrays, or None."""
        try:
            import torch
        except ImportError:
            return None
        p = torch.nn.Parameter(torch.from_numpy(self.param.copy()))
        p.grad = torch.from_numpy(self.grad.copy())
        kw = dict(self.options)
        impl = {"fused": True} if self.algorithm in TORCH_FUSED else {"foreach": True}
        opt = getattr(torch.optim, TORCH_CLASSES[self.algorithm])([p], **kw, **impl)
        step: Callable[[], None] = opt.step
        return step


def interleaved_medians(fns: dict[str, Callable[[], None]], *, rounds: int = 10,
                        per_round: int = 5, settle: float = 2e-3,
                        max_seconds: float = 10.0) -> dict[str, float]:
    """Median seconds per call of each function, timed side by side in one process.

    The functions take turns in blocks: each block first runs its function untimed for
    ``settle`` seconds (at least once), then times ``per_round`` calls. The settling matters:
    torch and Numba each keep an OpenMP thread team that spins for a while after a parallel
    region, and on a 2-core machine a team still spinning from the previous function would
    halve the next one's speed. Stops early (after at least 3 rounds) past ``max_seconds``.
    """
    clock = time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in fns}
    deadline = clock() + max_seconds
    for r in range(rounds):
        for name, fn in fns.items():
            fn()
            until = clock() + settle
            while clock() < until:
                fn()
            samples = times[name]
            for _ in range(per_round):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
        if r >= 2 and clock() > deadline:
            break
    return {k: statistics.median(v) for k, v in times.items()}
