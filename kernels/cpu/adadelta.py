"""Adadelta CPU kernel (math in kernels.rules.adadelta; algorithm in fastopt.reference.adadelta)."""

from .. import rules
from ._common import RULES_DIGEST, compile_kernel, kernel_factory, loop_for, rule

_adadelta = rule(rules.adadelta)
_adadelta_scalars = rule(rules.adadelta_scalars)


@kernel_factory
def adadelta_kernel(*, maximize, weight_decay, parallel):
    """Return the compiled Adadelta kernel for one configuration of compile-time flags.

    The kernel is ``kernel(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)``
    over 1-D contiguous arrays of one float dtype, in place, without validation.
    """
    loop = loop_for(parallel)
    rules_digest = RULES_DIGEST

    def adadelta(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay_value):
        s = _adadelta_scalars(lr, rho, eps, weight_decay_value)
        rules_digest  # noqa: B018 (a cache key, see _common.RULES_DIGEST)
        t = param.dtype.type
        c0, c1, c2, c3, c4 = t(s[0]), t(s[1]), t(s[2]), t(s[3]), t(s[4])
        for i in loop(param.size):
            p, sq, acc = _adadelta(param[i], grad[i], square_avg[i], acc_delta[i],
                                   c0, c1, c2, c3, c4, maximize, weight_decay)
            param[i] = p
            square_avg[i] = sq
            acc_delta[i] = acc

    return compile_kernel(adadelta, parallel)
