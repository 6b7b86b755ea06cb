"""The ``numba`` backend: validated, flattened NumPy arrays in, compiled CPU kernels run.

Arrays below ``PARALLEL_MIN_SIZE`` elements use the serial build of a kernel: under that size
starting the thread team costs more than it saves (measured with
``python benchmarks/parallel_threshold.py``; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from typing import Any, Callable

import numba
import numpy as np

from . import _layout
from ._layout import base_address
from .kernels import cpu
from .kernels.cpu import multi

PARALLEL_MIN_SIZE = 1 << 14


def _configure_threading_layer() -> None:
    """Prefer a thread-safe threading layer (TBB, then OpenMP) unless the user chose one.

    Numba's default fallback, ``workqueue``, aborts the process when two Python threads launch
    parallel kernels at once; fastopt is called from threaded training loops, so it asks for
    "threadsafe". Without TBB or OpenMP, parallel launches are serialised by a lock instead.
    """
    if os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default":
        return
    for mod in ("numba.np.ufunc.tbbpool", "numba.np.ufunc.omppool"):
        try:
            __import__(mod)
        except ImportError:
            continue
        numba.config.THREADING_LAYER = "threadsafe"
        return


_configure_threading_layer()
_workqueue_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child of a process whose GNU OpenMP runtime is running must not start a
    parallel region: OpenMP terminates it ("fork() called from a process already using GNU
    OpenMP"). Such a child runs the serial kernels instead (same results, bit for bit: the
    chunking never depends on threads). TBB and workqueue children keep their parallel
    kernels; a child of a parent that never ran a parallel kernel starts its own runtime."""
    global PARALLEL_MIN_SIZE
    try:
        layer = numba.threading_layer()
    except ValueError:  # the parent never launched a parallel kernel
        return
    if layer == "omp" and sys.platform.startswith("linux"):
        PARALLEL_MIN_SIZE = sys.maxsize


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _parallel_guard() -> contextlib.AbstractContextManager[Any]:
    try:
        layer = numba.threading_layer()
    except ValueError:  # not started yet: the first launch picks it
        return _workqueue_lock
    return _workqueue_lock if layer == "workqueue" else contextlib.nullcontext()


_kernels: dict[tuple[Any, ...], Callable[..., None]] = {}


def _kernel(key: tuple[Any, ...], factory: Callable[..., Callable[..., None]],
            names: tuple[str, ...]) -> Callable[..., None]:
    """The kernel for ``key`` = (algorithm, *flag values), built by ``factory`` on first use."""
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = factory(**dict(zip(names, key[1:])))
    return k


# Flag names of each kernel factory, in the order of the lookup keys below.
_SGD_FLAGS = ("momentum", "nesterov", "maximize", "weight_decay", "parallel")
_ADAGRAD_FLAGS = ("maximize", "weight_decay", "parallel")
_RMSPROP_FLAGS = ("maximize", "weight_decay", "momentum", "centered", "parallel")
_ADAM_FLAGS = ("amsgrad", "maximize", "weight_decay", "decoupled", "parallel")
_ADADELTA_FLAGS = ("maximize", "weight_decay", "parallel")


def _run(kernel: Callable[..., None], parallel: bool, *args: Any) -> None:
    if parallel:
        with _parallel_guard():
            kernel(*args)
    else:
        kernel(*args)


def _flat(a: np.ndarray) -> np.ndarray:
    """The array's memory block as a 1-D view (arrays of one call share one dense layout)."""
    if a.ndim == 1 and a.strides[0] == a.itemsize:
        return a
    f = _layout.flat(a)
    assert f is not None, "validated arrays are dense"
    return f


def sgd(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None = None, *,
        step: int, lr: float, momentum: float, dampening: float, nesterov: bool,
        weight_decay: float, maximize: bool) -> None:
    n = param.size
    par = n >= PARALLEL_MIN_SIZE
    k = _kernels.get(key := ("sgd", momentum != 0, nesterov, maximize, weight_decay != 0, par))
    if k is None:
        k = _kernel(key, cpu.sgd_kernel, _SGD_FLAGS)
    p = _flat(param)
    buf = p if momentum_buffer is None else _flat(momentum_buffer)
    _run(k, par, p, _flat(grad), buf, step, lr, momentum, dampening, weight_decay)


def adagrad(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, step: int,
            lr: float, lr_decay: float, weight_decay: float, eps: float,
            maximize: bool) -> None:
    par = param.size >= PARALLEL_MIN_SIZE
    k = _kernels.get(key := ("adagrad", maximize, weight_decay != 0, par))
    if k is None:
        k = _kernel(key, cpu.adagrad_kernel, _ADAGRAD_FLAGS)
    _run(k, par, _flat(param), _flat(grad), _flat(state_sum), step, lr, lr_decay,
         weight_decay, eps)


def rmsprop(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
            momentum_buffer: np.ndarray | None = None, grad_avg: np.ndarray | None = None, *,
            step: int, lr: float, alpha: float, eps: float, weight_decay: float,
            momentum: float, centered: bool, maximize: bool) -> None:
    par = param.size >= PARALLEL_MIN_SIZE
    k = _kernels.get(key := ("rmsprop", maximize, weight_decay != 0, momentum > 0, centered,
                             par))
    if k is None:
        k = _kernel(key, cpu.rmsprop_kernel, _RMSPROP_FLAGS)
    p = _flat(param)
    buf = p if momentum_buffer is None else _flat(momentum_buffer)
    gavg = p if grad_avg is None else _flat(grad_avg)
    _run(k, par, p, _flat(grad), _flat(square_avg), buf, gavg, lr, alpha, eps, weight_decay,
         momentum)


def _adam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
          max_exp_avg_sq: np.ndarray | None, step: int, lr: float, beta1: float, beta2: float,
          eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
          decoupled: bool) -> None:
    par = param.size >= PARALLEL_MIN_SIZE
    k = _kernels.get(key := ("adam", amsgrad, maximize, weight_decay != 0, decoupled, par))
    if k is None:
        k = _kernel(key, cpu.adam_kernel, _ADAM_FLAGS)
    v = _flat(exp_avg_sq)
    vmax = v if max_exp_avg_sq is None else _flat(max_exp_avg_sq)
    _run(k, par, _flat(param), _flat(grad), _flat(exp_avg), v, vmax, step, lr, beta1, beta2,
         eps, weight_decay)


def adam(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
         max_exp_avg_sq: np.ndarray | None = None, *, step: int, lr: float, beta1: float,
         beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool) -> None:
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, False)


def adamw(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
          max_exp_avg_sq: np.ndarray | None = None, *, step: int, lr: float, beta1: float,
          beta2: float, eps: float, weight_decay: float, amsgrad: bool, maximize: bool) -> None:
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
          weight_decay, amsgrad, maximize, True)


def adadelta(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray,
             acc_delta: np.ndarray, *, step: int, lr: float, rho: float, eps: float,
             weight_decay: float, maximize: bool) -> None:
    par = param.size >= PARALLEL_MIN_SIZE
    k = _kernels.get(key := ("adadelta", maximize, weight_decay != 0, par))
    if k is None:
        k = _kernel(key, cpu.adadelta_kernel, _ADADELTA_FLAGS)
    _run(k, par, _flat(param), _flat(grad), _flat(square_avg), _flat(acc_delta), lr, rho, eps,
         weight_decay)


# ---------------------------------------------------------------------------------------------
# Multi-tensor steps: one launch over many arrays (kernels/cpu/multi.py).

_FLAGS = {"sgd": _SGD_FLAGS, "adagrad": _ADAGRAD_FLAGS, "rmsprop": _RMSPROP_FLAGS,
          "adam": _ADAM_FLAGS, "adadelta": _ADADELTA_FLAGS}
_FACTORIES = {"sgd": cpu.sgd_kernel, "adagrad": cpu.adagrad_kernel,
              "rmsprop": cpu.rmsprop_kernel, "adam": cpu.adam_kernel,
              "adadelta": cpu.adadelta_kernel}


def _serial_kernel(algorithm: str, o: dict[str, Any]) -> tuple[
        Callable[..., None], tuple[Any, ...], bool, tuple[float, ...]]:
    """The serial single-tensor kernel for ``o``, its configuration key, whether it takes a
    step, its float arguments."""
    wd = o["weight_decay"] != 0
    if algorithm == "sgd":
        key: tuple[Any, ...] = ("sgd", o["momentum"] != 0, o["nesterov"], o["maximize"], wd)
        hyper: tuple[Any, ...]
        takes_step, hyper = True, (o["lr"], o["momentum"], o["dampening"], o["weight_decay"])
    elif algorithm == "adagrad":
        key = ("adagrad", o["maximize"], wd)
        takes_step, hyper = True, (o["lr"], o["lr_decay"], o["weight_decay"], o["eps"])
    elif algorithm == "rmsprop":
        key = ("rmsprop", o["maximize"], wd, o["momentum"] > 0, o["centered"])
        takes_step = False
        hyper = (o["lr"], o["alpha"], o["eps"], o["weight_decay"], o["momentum"])
    elif algorithm in ("adam", "adamw"):
        key = ("adam", o["amsgrad"], o["maximize"], wd, algorithm == "adamw")
        takes_step = True
        hyper = (o["lr"], o["beta1"], o["beta2"], o["eps"], o["weight_decay"])
    else:
        key = ("adadelta", o["maximize"], wd)
        takes_step, hyper = False, (o["lr"], o["rho"], o["eps"], o["weight_decay"])
    key = (*key, False)
    k = _kernels.get(key)
    if k is None:
        k = _kernel(key, _FACTORIES[key[0]], _FLAGS[key[0]])
    return k, key, takes_step, tuple(float(h) for h in hyper)


_chunk_tables: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _chunks(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _chunk_tables.get(sizes)
    if table is None:
        if len(_chunk_tables) > 256:
            _chunk_tables.clear()
        table = _chunk_tables[sizes] = multi.chunk_table(sizes)
    return table


def multi_step_rows(algorithm: str, options: dict[str, Any], state_names: tuple[str, ...],
                    dtype: np.dtype[Any], sizes: tuple[int, ...],
                    rows: np.ndarray | list[list[int]], steps: np.ndarray | list[int],
                    scale: float) -> None:
    """Update every tensor in one launch, from addresses: tensor ``i`` has ``sizes[i]``
    elements of ``dtype`` in the dense blocks whose lowest addresses are ``rows[i]`` = ``[param,
    grad, *states in state_names order]`` (the param's address standing in for an absent
    state), all of one layout; its gradient is multiplied by ``scale``, ``steps[i]`` is the
    step number of this update. Nothing is validated: the caller keeps the memory alive and
    valid."""
    total = sum(sizes)
    if total == 0:
        return
    par = total >= PARALLEL_MIN_SIZE
    single, key, takes_step, hyper = _serial_kernel(algorithm, options)
    kernel = multi.multi_kernel(single, repr(key), 2 + len(state_names), takes_step,
                                dtype.type, par)
    tensor, lo, hi = _chunks(sizes)
    _run(kernel, par, np.asarray(rows, np.int64), tensor, lo, hi, np.asarray(steps, np.int64),
         hyper, float(scale))


def read_scalars(dtype: np.dtype[Any], addresses: list[int]) -> np.ndarray:
    """The scalars of ``dtype`` at ``addresses``, as float64, in one call."""
    out = np.empty(len(addresses), np.float64)
    multi.read_scalars_kernel(dtype.type)(np.array(addresses, np.int64), out)
    return out


def add_to_scalars(dtype: np.dtype[Any], addresses: list[int], value: float) -> None:
    """Add ``value`` to the scalar of ``dtype`` at each address, in one call."""
    multi.add_to_scalars_kernel(dtype.type)(np.array(addresses, np.int64), value)


def grad_stats(grads: list[np.ndarray]) -> tuple[float, int]:
    """The float64 sum of squares of all gradients (deterministic order) and the non-finite count.

    Gradients of one dtype; the sum runs chunk by chunk in a fixed order, so the result does not
    depend on the thread count.
    """
    sizes = tuple(g.size for g in grads)
    total = sum(sizes)
    if total == 0:
        return 0.0, 0
    par = total >= PARALLEL_MIN_SIZE
    kernel = multi.grad_stats_kernel(grads[0].dtype.type, par)
    tensor, lo, hi = _chunks(sizes)
    sumsq = np.empty(tensor.size, np.float64)
    nonfinite = np.empty(tensor.size, np.int64)
    _run(kernel, par, np.array([base_address(g) for g in grads], np.int64), tensor, lo, hi, sumsq,
         nonfinite)
    return math.fsum(sumsq.tolist()), int(nonfinite.sum())
