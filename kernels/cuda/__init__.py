"""Numba-CUDA kernels: one module per algorithm, each compiled from its rule in kernels.rules.

The same per-element rules as the CPU kernels, compiled by numba-cuda as device functions and
called from a grid-stride loop. These are raw kernels: no validation, 1-D contiguous device
arrays, and the per-call coefficients already computed on the host (``rules.*_scalars``) and
cast to the arrays' dtype. Launch them with ``launch_config(n)``.

Importing this package imports ``numba.cuda``; ``import fastopt`` does not.
"""

from ._common import THREADS_PER_BLOCK, launch_config
from .adadelta import adadelta_kernel
from .adagrad import adagrad_kernel
from .adam import adam_kernel
from .rmsprop import rmsprop_kernel
from .roofline import roofline_kernel
from .sgd import sgd_kernel

__all__ = [
    "THREADS_PER_BLOCK",
    "adadelta_kernel",
    "adagrad_kernel",
    "adam_kernel",
    "launch_config",
    "rmsprop_kernel",
    "roofline_kernel",
    "sgd_kernel",
]
