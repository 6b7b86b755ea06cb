"""Compilation settings shared by every Numba CPU kernel."""

import functools
import hashlib
import inspect

import numba

from .. import rules

# Numba's on-disk cache checks only the timestamp of the file that defines a kernel, not of the
# rules module the kernel calls. Every kernel captures this digest of the rules' source as a
# closure cell, and Numba hashes closure cells into the cache key: an edited rule can never be
# served from a stale cache entry.
RULES_DIGEST = hashlib.sha256(inspect.getsource(rules).encode()).hexdigest()[:16]

# error_model="numpy": a division by zero gives inf/nan as in NumPy instead of raising, and the
# loop stays vectorisable. No fastmath: NaN and Inf must propagate exactly as in the reference.
RULE_OPTIONS = dict(inline="always", error_model="numpy")
KERNEL_OPTIONS = dict(cache=True, nogil=True, error_model="numpy")


def rule(fn):
    """Compile a plain-Python rule from kernels.rules for use inside CPU kernels."""
    return numba.njit(**RULE_OPTIONS)(fn)


def loop_for(parallel):
    """The loop constructor of a kernel: ``prange`` when parallel, ``range`` otherwise.

    Kernels capture it as a closure variable, which also keeps the serial and the parallel
    build of one configuration apart in Numba's on-disk cache (its key hashes closure cells).
    """
    return numba.prange if parallel else range


def compile_kernel(fn, parallel):
    return numba.njit(parallel=parallel, **KERNEL_OPTIONS)(fn)


# Kernels are built once per configuration; the factories are memoized.
kernel_factory = functools.cache
