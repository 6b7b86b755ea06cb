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
from ._functional import ademamix_step
from ._functional import adopt_step
from ._functional import ema_swap
from ._functional import asgd_step
from ._functional import lion_step
from ._functional import nadam_step
from ._functional import radam_step
from ._functional import rmsprop_step
from ._functional import rprop_step
from ._functional import schedulefree_adamw_step
from ._functional import schedulefree_eval
from ._functional import schedulefree_sgd_step
from ._functional import schedulefree_train
from ._functional import sgd_step
from ._quant import State8bit
from ._version import __version__
from .optim import ADOPT, ASGD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, AdEMAMix, Lion
from .optim import AdamWScheduleFree, SGDScheduleFree
from .optim import NAdam, Optimizer
from .optim import RAdam, RMSprop, Rprop, StepResult
from . import reference

__all__ = [
    "ADOPT",
    "AdEMAMix",
    "AdamWScheduleFree",
    "SGDScheduleFree",
    "ASGD",
    "SGD",
    "State8bit",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "NAdam",
    "Optimizer",
    "RAdam",
    "RMSprop",
    "Rprop",
    "StepResult",
    "__version__",
    "adadelta_step",
    "adagrad_step",
    "adam_step",
    "adamax_step",
    "adamw_step",
    "ademamix_step",
    "adopt_step",
    "asgd_step",
    "available_backends",
    "ema_swap",
    "lion_step",
    "nadam_step",
    "radam_step",
    "reference",
    "rmsprop_step",
    "rprop_step",
    "schedulefree_adamw_step",
    "schedulefree_eval",
    "schedulefree_sgd_step",
    "schedulefree_train",
    "sgd_step",
]
