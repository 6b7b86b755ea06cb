"""SGD CPU kernel (math in kernels.rules.sgd; algorithm in fastopt.reference.sgd)."""

from .. import rules
from ._common import RULES_DIGEST, compile_kernel, kernel_factory, loop_for, rule

_sgd = rule(rules.sgd)
_sgd_scalars = rule(rules.sgd_scalars)


@kernel_factory
def sgd_kernel(*, momentum, nesterov, maximize, weight_decay, parallel):
    """Return the compiled SGD kernel for one configuration of compile-time flags.

    The kernel is ``kernel(param, grad, momentum_buffer, step, lr, momentum, dampening,
    weight_decay)`` over 1-D contiguous arrays of one float dtype, in place. It does not
    validate: pass any array as ``momentum_buffer`` when ``momentum`` is False (not touched).
    """
    loop = loop_for(parallel)
    rules_digest = RULES_DIGEST

    def sgd(param, grad, momentum_buffer, step, lr, momentum_value, dampening,
            weight_decay_value):
        s = _sgd_scalars(step, lr, momentum_value, dampening, weight_decay_value)
        rules_digest  # noqa: B018 (a cache key, see _common.RULES_DIGEST)
        t = param.dtype.type
        c0, c1, c2, c3, c4 = t(s[0]), t(s[1]), t(s[2]), t(s[3]), t(s[4])
        for i in loop(param.size):
            buf = momentum_buffer[i] if momentum else param[i]
            p, buf = _sgd(param[i], grad[i], buf, c0, c1, c2, c3, c4,
                          momentum, nesterov, maximize, weight_decay)
            param[i] = p
            if momentum:
                momentum_buffer[i] = buf

    return compile_kernel(sgd, parallel)
