"""Numba CPU kernels: one module per algorithm, each compiled from its rule in kernels.rules.

These are the raw kernels: no validation, no defaults, 1-D contiguous arrays only. They can be
called from the caller's own ``@numba.njit`` code; see the README.
"""

from .adadelta import adadelta_kernel
from .adagrad import adagrad_kernel
from .adam import adam_kernel
from .rmsprop import rmsprop_kernel
from .roofline import roofline_kernel
from .sgd import sgd_kernel

__all__ = [
    "adadelta_kernel",
    "adagrad_kernel",
    "adam_kernel",
    "rmsprop_kernel",
    "roofline_kernel",
    "sgd_kernel",
]
