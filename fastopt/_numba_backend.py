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

from . import _layout, _storage
from ._layout import base_address
from ._specs import Ema, Spec
from .kernels.cpu import generic, multi

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


_kernels: dict[tuple[Any, ...], Callable[..., Any]] = {}


def kernel(spec: Spec, flags: tuple[bool, ...], parallel: bool,
           ema: bool = False) -> Callable[..., Any]:
    """The compiled kernel of ``spec`` for ``flags`` (in the spec's flag order), with the
    fused weight EMA when ``ema``."""
    key = (spec.rule, flags, parallel, ema)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = generic.kernel(
            spec.rule, spec.state_names, spec.active(flags),
            tuple(zip(spec.flag_names, flags)), spec.scalar_call, parallel, ema,
            spec.reads_grad)
    return k


def _run(kernel: Callable[..., Any], parallel: bool, *args: Any) -> Any:
    if parallel:
        with _parallel_guard():
            return kernel(*args)
    return kernel(*args)


def run_parallel(kernel: Callable[..., Any], *args: Any) -> Any:
    """Call a parallel kernel (see _parallel_guard)."""
    return _run(kernel, True, *args)


def _flat(a: np.ndarray) -> np.ndarray:
    """The array's memory block as a 1-D view (arrays of one call share one dense layout)."""
    if a.ndim == 1 and a.strides[0] == a.itemsize:
        return a
    f = _layout.flat(a)
    assert f is not None, "validated arrays are dense"
    return f


def _hyper_args(spec: Spec, options: dict[str, Any]) -> tuple[float, ...]:
    """The kernel's hyperparameter arguments, after the arrays and the step (Python floats:
    one compiled signature per dtype)."""
    return tuple([float(options[a]) for a in spec.scalar_args])


hyper_args = _hyper_args

# _generic's plain path calls kernel() and the kernels itself (see _generic._plain_step).
PLAIN_STEP = True

# The options dict of the last update() and its hyperparameter arguments: _generic passes
# the same dict, never mutated, while a spec is called with the same values (_generic._Config).
_last_hypers: tuple[Any, tuple[float, ...]] = (None, ())


def _arguments(spec: Spec, step: int, options: dict[str, Any],
               ema: Ema | None = None) -> tuple[Any, ...]:
    """The kernel's arguments after the arrays: the step if it takes one, the scalar states'
    values (in ``options`` under their names), the EMA's scalars, then the hyperparameters."""
    global _last_hypers
    last_options, hypers = _last_hypers  # one tuple, replaced whole: consistent in threads
    if last_options is not options:
        hypers = _hyper_args(spec, options)
        _last_hypers = (options, hypers)
    if not spec.scalar_states and ema is None:
        return (step, *hypers) if spec.takes_step else hypers
    head: list[Any] = [step] if spec.takes_step else []
    if spec.scalar_states:
        head += [float(options[n]) for n in spec.scalar_names]
    if ema is not None:
        head += ema.scalars
    return (*head, *hypers)


# update() checks that no two arrays overlap itself, in the kernel, before writing anything
# (_generic leaves that check to it).
CHECKS_OVERLAP = True


# update() takes bfloat16 and float16 arrays (``formats``; float32 math).
FORMATS = True


def update(spec: Spec, flags: tuple[bool, ...], param: np.ndarray, grad: np.ndarray,
           states: tuple[np.ndarray | None, ...], step: int, options: dict[str, Any],
           ema: Ema | None = None, formats: tuple[str, ...] | None = None,
           store: _storage.ParamStore | None = None) -> tuple[int, int] | None:
    """One update of validated arrays; ``states`` in the spec's order, None where inactive;
    ``ema``: the weight EMA to update in the same pass; ``formats``: the storage format of
    param, grad, each given state and the EMA (_storage.storage), None when all are the
    param's float32/float64. Returns None, or, having written nothing, the first pair
    ``(i, j)`` of the arrays used (param, grad, the active states, the EMA) that overlap in
    memory; the master or compensation array of ``store`` (see _storage.ParamStore) comes
    last."""
    if formats is not None:
        return _update_16bit(spec, flags, param, grad, states, step, options, ema, formats,
                             store or ("", None, None))
    par = param.size >= PARALLEL_MIN_SIZE
    on = ema is not None
    k = _kernels.get((spec.rule, flags, par, on))
    if k is None:
        k = kernel(spec, flags, par, on)
    if param.ndim == 1 and param.flags.c_contiguous:
        # Validated arrays share the param's shape and layout: all 1-D contiguous too.
        arrays = [param, grad, *[param if s is None else s for s in states]]
    else:
        p = _flat(param)
        arrays = [p, _flat(grad), *[p if s is None else _flat(s) for s in states]]
    if ema is not None:
        arrays.append(_flat(ema.array))
    if par:
        o: int = _run(k, par, *arrays, *_arguments(spec, step, options, ema))
    else:
        o = k(*arrays, *_arguments(spec, step, options, ema))
    return None if o < 0 else divmod(o, 64)


def _update_16bit(spec: Spec, flags: tuple[bool, ...], param: np.ndarray, grad: np.ndarray,
                  states: tuple[Any, ...], step: int, options: dict[str, Any],
                  ema: Ema | None, formats: tuple[str, ...], store: _storage.ParamStore
                  ) -> tuple[int, int] | None:
    """update() with 16-bit arrays or 8-bit states (_quant.State8bit, format "q8..."): their
    uint16 views, the codes and absmax of 8-bit states, and a kernel keyed by every slot's
    storage format (an inactive slot's is "": the param stands in, never read)."""
    par = param.size >= PARALLEL_MIN_SIZE
    given = iter(formats[2:])
    slot_formats = (formats[0], formats[1], *[("" if s is None else next(given)) for s in states],
                    *([next(given)] if ema is not None else []))

    def view(a: np.ndarray, fmt: str) -> np.ndarray:
        f = _flat(a)
        return _storage.bits(f) if fmt else f

    p = view(param, formats[0])
    arrays = [p, view(grad, formats[1])]
    for s, f in zip(states, slot_formats[2:]):
        if s is None:
            arrays.append(p)
        elif f[:2] == "q8":  # an 8-bit state: its codes and its absmax
            arrays += [_flat(s.codes), s.absmax]
        else:
            arrays.append(view(s, f))
    if ema is not None:
        arrays.append(view(ema.array, slot_formats[-1]))
    mode, extra, sr_key = store
    if extra is not None:  # the master (float32) or the compensation (the param's format)
        extra_format = "" if mode == "master" else formats[0]
        slot_formats = (*slot_formats, extra_format)
        arrays.append(view(extra, extra_format))
    sr = sr_key is not None
    key = (spec.rule, flags, par, ema is not None, slot_formats, mode, sr)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = generic.kernel(
            spec.rule, spec.state_names, spec.active(flags),
            tuple(zip(spec.flag_names, flags)), spec.scalar_call, par, ema is not None,
            spec.reads_grad, slot_formats, mode, sr)
    args = _arguments(spec, step, options, ema)
    if sr_key is not None:  # after the EMA's scalars, before the hyperparameters
        cut = len(args) - len(_hyper_args(spec, options))
        args = (*args[:cut], np.uint32(sr_key), 0, *args[cut:])
    o: int = _run(k, par, *arrays, *args)
    return None if o < 0 else divmod(o, 64)


# ---------------------------------------------------------------------------------------------
# Multi-tensor steps: one launch over many arrays (kernels/cpu/multi.py).


_chunk_tables: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _chunks(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _chunk_tables.get(sizes)
    if table is None:
        if len(_chunk_tables) > 256:
            _chunk_tables.clear()
        table = _chunk_tables[sizes] = multi.chunk_table(sizes)
    return table


def multi_step_rows(spec: Spec, options: dict[str, Any], dtype: np.dtype[Any], sizes: tuple[int, ...],
                    rows: np.ndarray | list[list[int]], steps: np.ndarray | list[int],
                    scale: float, scalars: np.ndarray | None = None, ema: bool = False) -> None:
    """Update every tensor in one launch, from addresses: tensor ``i`` has ``sizes[i]``
    elements of ``dtype`` in the dense blocks whose lowest addresses are ``rows[i]`` = ``[param,
    grad, *states in the spec's order, [ema]]`` (the param's address standing in for an
    inactive state), all of one layout; its gradient is multiplied by ``scale``, ``steps[i]`` is
    the step number of this update. Nothing is validated: the caller keeps the memory alive and
    valid. ``scalars[i]`` holds tensor ``i``'s scalar states as the rule uses them, then, with
    ``ema``, its weight EMA's three scalars (``Ema.scalars``) (float64, one row per tensor; see
    _specs.Scalar)."""
    total = sum(sizes)
    if total == 0:
        return
    par = total >= PARALLEL_MIN_SIZE
    k = multi_kernel(spec, spec.flag_values(options), dtype, par, ema)
    tensor, lo, hi = _chunks(sizes)
    if scalars is None:
        assert not spec.scalar_states and not ema, f"{spec.name} needs its scalar states"
        scalars = _NO_SCALARS
    _run(k, par, np.asarray(rows, np.int64), tensor, lo, hi, np.asarray(steps, np.int64),
         scalars, _hyper_args(spec, options), float(scale))


_NO_SCALARS = np.empty((0, 0), np.float64)


def multi_kernel(spec: Spec, flags: tuple[bool, ...], dtype: np.dtype[Any],
                 parallel: bool, ema: bool = False) -> Callable[..., None]:
    """The multi-tensor kernel of ``spec`` for ``flags``: its chunks run the serial
    single-tensor kernel (``kernels.cpu.multi.multi_kernel``)."""
    single = kernel(spec, flags, False, ema)
    key = f"{spec.rule}|{flags}|ema={ema}"
    k: Callable[..., None] = multi.multi_kernel(single, key, 2 + len(spec.states) + ema,
                                                spec.takes_step,
                                                len(spec.scalar_states) + 3 * ema,
                                                dtype.type, parallel)
    return k


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
    sumsq, nonfinite = grad_partials(grads)
    return math.fsum(sumsq.tolist()), nonfinite


def grad_partials(grads: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Each chunk's float64 sum of squares (``multi.chunk_table`` of the gradients' sizes, in
    order) and the non-finite count. The partials depend only on each chunk's elements, and
    ``math.fsum`` of them is exactly rounded (order-free): a sharded optimizer whose shards
    start on chunk boundaries sums its ranks' partials to the one-process norm bit for bit."""
    sizes = tuple(g.size for g in grads)
    total = sum(sizes)
    if total == 0:
        return np.zeros(0, np.float64), 0
    par = total >= PARALLEL_MIN_SIZE
    kernel = multi.grad_stats_kernel(grads[0].dtype.type, par)
    tensor, lo, hi = _chunks(sizes)
    sumsq = np.empty(tensor.size, np.float64)
    nonfinite = np.empty(tensor.size, np.int64)
    _run(kernel, par, np.array([base_address(g) for g in grads], np.int64), tensor, lo, hi, sumsq,
         nonfinite)
    return sumsq, int(nonfinite.sum())
