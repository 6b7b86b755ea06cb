"""Compilation settings shared by every Numba CPU kernel."""

import functools
import hashlib
import inspect

import os

import numba
from numba.core.caching import FunctionCache

from .. import rules
from ._cache import KernelCacheImpl, kernel_cache

# Numba's on-disk cache checks only the timestamp of the file that defines a kernel, not of the
# rules module the kernel calls. Every kernel captures this digest of the rules' source as a
# closure cell, and Numba hashes closure cells into the cache key: an edited rule can never be
# served from a stale cache entry.
RULES_DIGEST = hashlib.sha256(inspect.getsource(rules).encode()).hexdigest()[:16]

# error_model="numpy": a division by zero gives inf/nan as in NumPy instead of raising, and the
# loop stays vectorisable. No fastmath: NaN and Inf must propagate exactly as in the reference.
RULE_OPTIONS = dict(inline="always", error_model="numpy")
# Kernels are cached on disk by ``kernel_cache`` (never inside the installed package): see _cache.
KERNEL_OPTIONS = dict(nogil=True, error_model="numpy")


def rule(fn):
    """Compile a plain-Python rule from kernels.rules for use inside CPU kernels."""
    return numba.njit(**RULE_OPTIONS)(fn)


def loop_for(parallel):
    """The loop constructor of a kernel: ``prange`` when parallel, ``range`` otherwise.

    Kernels capture it as a closure variable, which also keeps the serial and the parallel
    build of one configuration apart in Numba's on-disk cache (its key hashes closure cells).
    """
    return numba.prange if parallel else range


def _distinct_name(fn, key):
    """Name ``fn`` after its configuration ``key``.

    Numba names a compiled function ``<qualname>$<n>``, n counting compilations in the process,
    and a kernel loaded from the disk cache keeps the name it had in the process that compiled
    it. Two configurations of one generated or closure kernel (same qualname), compiled in two
    processes, can so carry the same symbol; loaded into one process, a call meant for one may
    reach the other (measured: a cached multi-tensor ADOPT kernel ran the single-tensor kernel
    of another option set). A qualname unique to the configuration rules that out.
    """
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    fn.__qualname__ = fn.__name__ = f"{fn.__name__}_{tag}"
    return fn


def _cells_key(fn):
    """A configuration key from a closure's cells (dtypes, loop kind, sizes)."""
    cells = fn.__closure__ or ()
    return "|".join(f"{c.cell_contents!r}" for c in cells)


def compile_kernel(fn, parallel):
    _distinct_name(fn, f"{_cells_key(fn)}|{parallel}")
    dispatcher = numba.njit(parallel=parallel, **KERNEL_OPTIONS)(fn)
    if hasattr(dispatcher, "py_func"):  # not under NUMBA_DISABLE_JIT (plain functions)
        dispatcher._cache = kernel_cache(dispatcher.py_func)
    return dispatcher


# Kernels are built once per configuration; the factories are memoized.
kernel_factory = functools.cache


# Every source a compiled kernel can depend on: the rules and the CPU kernel modules.
_HERE = os.path.dirname(__file__)
SOURCES_DIGEST = hashlib.sha256(b"".join(
    open(os.path.join(folder, name), "rb").read()
    for folder in (_HERE, os.path.dirname(_HERE))
    for name in sorted(os.listdir(folder)) if name.endswith(".py"))).hexdigest()[:16]


class _KeyedCache(FunctionCache):
    """Numba's on-disk cache with an index key given by the caller.

    Numba keys a closure's cache entry on a pickle of its cells; a cell holding another
    compiled function pickles with a random per-process id, so such kernels would never be
    found again. ``compile_keyed`` kernels name their configuration in a string instead.
    """

    _impl_class = KernelCacheImpl

    def __init__(self, py_func, key):
        super().__init__(py_func)
        self._key = key

    def _index_key(self, sig, codegen):
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        key = hashlib.sha256(f"{self._key}|{SOURCES_DIGEST}".encode()).hexdigest()
        return (sig, codegen.magic_tuple(), (code, key))


def compile_keyed(fn, parallel, key):
    """Compile ``fn`` like ``compile_kernel``, cached on disk under the configuration ``key``.

    ``key`` must name everything the closure's cells determine.
    """
    _distinct_name(fn, f"{key}|{parallel}")
    dispatcher = numba.njit(parallel=parallel, **KERNEL_OPTIONS)(fn)
    if hasattr(dispatcher, "py_func"):
        dispatcher._cache = kernel_cache(dispatcher.py_func, _KeyedCache,
                                         f"{key}|parallel={parallel}")
    return dispatcher
