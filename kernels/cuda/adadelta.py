"""Adadelta Numba-CUDA kernel (math in kernels.rules.adadelta; algorithm in
fastopt.reference.adadelta)."""

from numba import cuda

from .. import rules
from ._common import compile_kernel, kernel_factory, rule

_adadelta = rule(rules.adadelta)


@kernel_factory
def adadelta_kernel(*, maximize, weight_decay):
    """The Adadelta kernel: ``kernel[blocks, threads](param, grad, square_avg, acc_delta,
    *rules.adadelta_scalars(...))``, the scalars cast to the arrays' dtype."""

    def adadelta(param, grad, square_avg, acc_delta, c0, c1, c2, c3, c4):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            p, sq, acc = _adadelta(param[i], grad[i], square_avg[i], acc_delta[i],
                                   c0, c1, c2, c3, c4, maximize, weight_decay)
            param[i] = p
            square_avg[i] = sq
            acc_delta[i] = acc

    return compile_kernel(adadelta)
