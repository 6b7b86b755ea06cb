"""Compilation and launch settings shared by every Numba-CUDA kernel."""

import functools

from numba import config, cuda

THREADS_PER_BLOCK = 256
# Enough resident blocks to fill every SM (2048 threads per SM on sm_80/sm_90); each thread
# then strides over the rest of the array.
BLOCKS_PER_SM = 8


def rule(fn):
    """Compile a plain-Python rule from kernels.rules as a CUDA device function.

    No fastmath: NaN and Inf propagate as in the reference. NVVM may still contract a * b + c
    into one fused multiply-add, which changes results by at most a rounding.
    """
    return cuda.jit(device=True)(fn)


def compile_kernel(fn):
    # Compiled lazily, once per argument signature (dtype), by numba-cuda.
    return cuda.jit(fn)


# Kernels are built once per configuration of compile-time flags.
kernel_factory = functools.cache


@functools.cache
def _sm_count(device_id):
    return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)


def _max_blocks():
    if config.ENABLE_CUDASIM:
        return SIMULATOR_MAX_BLOCKS
    return _sm_count(cuda.get_current_device().id) * BLOCKS_PER_SM


# The simulator runs every thread as a Python thread: a small grid, so threads stride.
SIMULATOR_MAX_BLOCKS = 2


def launch_config(n, threads=THREADS_PER_BLOCK, max_blocks=None):
    """(blocks, threads) for a grid-stride kernel over ``n`` elements on the current device."""
    if max_blocks is None:
        max_blocks = _max_blocks()
    blocks = max(1, min(-(-n // threads), max_blocks))
    return blocks, threads
