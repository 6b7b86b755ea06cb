"""RMSprop Numba-CUDA kernel (math in kernels.rules.rmsprop; algorithm in
fastopt.reference.rmsprop)."""

from numba import cuda

from .. import rules
from ._common import compile_kernel, kernel_factory, rule

_rmsprop = rule(rules.rmsprop)


@kernel_factory
def rmsprop_kernel(*, maximize, weight_decay, momentum, centered):
    """The RMSprop kernel: ``kernel[blocks, threads](param, grad, square_avg, momentum_buffer,
    grad_avg, *rules.rmsprop_scalars(...))``; ``momentum_buffer`` and ``grad_avg`` may be any
    array of the dtype when their flag is False."""

    def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, c0, c1, c2, c3, c4, c5,
                c6):
        for i in range(cuda.grid(1), param.size, cuda.gridsize(1)):
            buf = momentum_buffer[i] if momentum else param[i]
            gavg = grad_avg[i] if centered else param[i]
            p, sq, buf, gavg = _rmsprop(param[i], grad[i], square_avg[i], buf, gavg,
                                        c0, c1, c2, c3, c4, c5, c6,
                                        maximize, weight_decay, momentum, centered)
            param[i] = p
            square_avg[i] = sq
            if momentum:
                momentum_buffer[i] = buf
            if centered:
                grad_avg[i] = gavg

    return compile_kernel(rmsprop)
