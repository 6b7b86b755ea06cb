"""Numba-CUDA kernels, each generated from its algorithm's rule in kernels.rules (see generic).

The same per-element rules as the CPU kernels, compiled by numba-cuda as device functions and
called from a grid-stride loop. These are raw kernels: no validation, 1-D contiguous device
arrays, and the per-call coefficients already computed on the host (``rules.*_scalars``) and
cast to the arrays' dtype. Launch them with ``launch_config(n)``.

Importing this package imports ``numba.cuda``; ``import fastopt`` does not.
"""

from ._common import THREADS_PER_BLOCK, launch_config
from .generic import kernel
from .roofline import roofline_kernel

__all__ = [
    "THREADS_PER_BLOCK",
    "kernel",
    "launch_config",
    "roofline_kernel",
]
