"""Adam / AdamW Numba-CUDA kernel (math in kernels.rules.adam; algorithm in
fastopt.reference.adam)."""

from numba import cuda

from .. import rules
from ._common import compile_kernel, kernel_factory, rule

_adam = rule(rules.adam)


@kernel_factory
def adam_kernel(*, amsgrad, maximize, weight_decay, decoupled):
    """The Adam kernel: ``kernel[blocks, threads](param, grad, exp_avg, exp_avg_sq,
    max_exp_avg_sq, *rules.adam_scalars(...))``, the scalars cast to the arrays' dtype.
    ``max_exp_avg_sq`` may be any array of the dtype when ``amsgrad`` is False."""

    def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, c0, c1, c2, c3, c4, c5, c6, c7):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            vmax = max_exp_avg_sq[i] if amsgrad else exp_avg_sq[i]
            p, m, v, vmax = _adam(param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax,
                                  c0, c1, c2, c3, c4, c5, c6, c7,
                                  amsgrad, maximize, weight_decay, decoupled)
            param[i] = p
            exp_avg[i] = m
            exp_avg_sq[i] = v
            if amsgrad:
                max_exp_avg_sq[i] = vmax

    return compile_kernel(adam)
