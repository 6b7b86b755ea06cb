"""Adagrad CPU kernel (math in kernels.rules.adagrad; algorithm in fastopt.reference.adagrad)."""

from .. import rules
from ._common import RULES_DIGEST, compile_kernel, kernel_factory, loop_for, rule

_adagrad = rule(rules.adagrad)
_adagrad_scalars = rule(rules.adagrad_scalars)


@kernel_factory
def adagrad_kernel(*, maximize, weight_decay, parallel):
    """Return the compiled Adagrad kernel for one configuration of compile-time flags.

    The kernel is ``kernel(param, grad, state_sum, step, lr, lr_decay, weight_decay, eps)`` over
    1-D contiguous arrays of one float dtype, in place, without validation.
    """
    loop = loop_for(parallel)
    rules_digest = RULES_DIGEST

    def adagrad(param, grad, state_sum, step, lr, lr_decay, weight_decay_value, eps):
        s = _adagrad_scalars(step, lr, lr_decay, weight_decay_value, eps)
        rules_digest  # noqa: B018 (a cache key, see _common.RULES_DIGEST)
        t = param.dtype.type
        c0, c1, c2 = t(s[0]), t(s[1]), t(s[2])
        for i in loop(param.size):
            p, ss = _adagrad(param[i], grad[i], state_sum[i], c0, c1, c2,
                             maximize, weight_decay)
            param[i] = p
            state_sum[i] = ss

    return compile_kernel(adagrad, parallel)
