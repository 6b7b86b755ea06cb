"""Adagrad Numba-CUDA kernel (math in kernels.rules.adagrad; algorithm in
fastopt.reference.adagrad)."""

from numba import cuda

from .. import rules
from ._common import compile_kernel, kernel_factory, rule

_adagrad = rule(rules.adagrad)


@kernel_factory
def adagrad_kernel(*, maximize, weight_decay):
    """The Adagrad kernel: ``kernel[blocks, threads](param, grad, state_sum,
    *rules.adagrad_scalars(...))``, the scalars cast to the arrays' dtype."""

    def adagrad(param, grad, state_sum, c0, c1, c2):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            p, ss = _adagrad(param[i], grad[i], state_sum[i], c0, c1, c2,
                             maximize, weight_decay)
            param[i] = p
            state_sum[i] = ss

    return compile_kernel(adagrad)
