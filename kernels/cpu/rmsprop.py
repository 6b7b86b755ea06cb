"""RMSprop CPU kernel (math in kernels.rules.rmsprop; algorithm in fastopt.reference.rmsprop)."""

from .. import rules
from ._common import RULES_DIGEST, compile_kernel, kernel_factory, loop_for, rule

_rmsprop = rule(rules.rmsprop)
_rmsprop_scalars = rule(rules.rmsprop_scalars)


@kernel_factory
def rmsprop_kernel(*, maximize, weight_decay, momentum, centered, parallel):
    """Return the compiled RMSprop kernel for one configuration of compile-time flags.

    The kernel is ``kernel(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
    weight_decay, momentum)`` over 1-D contiguous arrays of one float dtype, in place, without
    validation: ``momentum_buffer`` and ``grad_avg`` may be any array when their flag is False.
    """
    loop = loop_for(parallel)
    rules_digest = RULES_DIGEST

    def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                weight_decay_value, momentum_value):
        s = _rmsprop_scalars(lr, alpha, eps, weight_decay_value, momentum_value)
        rules_digest  # noqa: B018 (a cache key, see _common.RULES_DIGEST)
        t = param.dtype.type
        c0, c1, c2, c3, c4, c5 = t(s[0]), t(s[1]), t(s[2]), t(s[3]), t(s[4]), t(s[5])
        c6 = t(s[6])
        for i in loop(param.size):
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

    return compile_kernel(rmsprop, parallel)
