"""fastopt: fused, single-pass, in-place optimizer update kernels.

    >>> import numpy as np, fastopt
    >>> p = np.ones(8, np.float32); g = np.full(8, 0.1, np.float32)
    >>> m, v = np.zeros_like(p), np.zeros_like(p)
    >>> fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)

Importing fastopt does not import Numba; the CPU kernels compile (or load from Numba's cache) on
first use.
"""

from ._backends import available_backends
from ._functional import adadelta_step
from ._functional import adagrad_step
from ._functional import adam_step
from ._functional import adamax_step
from ._functional import adamw_step
from ._functional import lion_step
from ._functional import rmsprop_step
from ._functional import sgd_step
from ._version import __version__
from .optim import SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, Optimizer, RMSprop
from .optim import StepResult
from . import reference

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "Optimizer",
    "RMSprop",
    "StepResult",
    "__version__",
    "adadelta_step",
    "adagrad_step",
    "adam_step",
    "adamax_step",
    "adamw_step",
    "available_backends",
    "lion_step",
    "reference",
    "rmsprop_step",
    "sgd_step",
]
