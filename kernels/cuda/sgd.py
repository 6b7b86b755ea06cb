"""SGD Numba-CUDA kernel (math in kernels.rules.sgd; algorithm in fastopt.reference.sgd)."""

from numba import cuda

from .. import rules
from ._common import compile_kernel, kernel_factory, rule

_sgd = rule(rules.sgd)


@kernel_factory
def sgd_kernel(*, momentum, nesterov, maximize, weight_decay):
    """The SGD kernel for one configuration of compile-time flags.

    ``kernel[blocks, threads](param, grad, momentum_buffer, *rules.sgd_scalars(...))``, the
    scalars cast to the arrays' dtype. ``momentum_buffer`` may be any array of the dtype when
    ``momentum`` is False (it is not touched).
    """

    def sgd(param, grad, momentum_buffer, c0, c1, c2, c3, c4):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            buf = momentum_buffer[i] if momentum else param[i]
            p, buf = _sgd(param[i], grad[i], buf, c0, c1, c2, c3, c4,
                          momentum, nesterov, maximize, weight_decay)
            param[i] = p
            if momentum:
                momentum_buffer[i] = buf

    return compile_kernel(sgd)
