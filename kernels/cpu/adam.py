"""Adam / AdamW CPU kernel (math in kernels.rules.adam; algorithm in fastopt.reference.adam)."""

from .. import rules
from ._common import RULES_DIGEST, compile_kernel, kernel_factory, loop_for, rule

_adam = rule(rules.adam)
_adam_scalars = rule(rules.adam_scalars)


@kernel_factory
def adam_kernel(*, amsgrad, maximize, weight_decay, decoupled, parallel):
    """Return the compiled Adam kernel for one configuration of compile-time flags.

    The kernel is ``kernel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
    beta2, eps, weight_decay)`` over 1-D contiguous arrays of one float dtype, in place. It does
    not validate: pass any array as ``max_exp_avg_sq`` when ``amsgrad`` is False (it is not
    touched), and ``weight_decay=True`` exactly when the value is non-zero.
    """
    loop = loop_for(parallel)
    rules_digest = RULES_DIGEST

    def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
             weight_decay_value):
        s = _adam_scalars(step, lr, beta1, beta2, eps, weight_decay_value, decoupled)
        rules_digest  # noqa: B018 (a cache key, see _common.RULES_DIGEST)
        t = param.dtype.type
        c0, c1, c2, c3, c4, c5, c6 = t(s[0]), t(s[1]), t(s[2]), t(s[3]), t(s[4]), t(s[5]), t(s[6])
        c7 = t(s[7])
        for i in loop(param.size):
            vmax = max_exp_avg_sq[i] if amsgrad else exp_avg_sq[i]
            p, m, v, vmax = _adam(param[i], grad[i], exp_avg[i], exp_avg_sq[i], vmax,
                                  c0, c1, c2, c3, c4, c5, c6, c7,
                                  amsgrad, maximize, weight_decay, decoupled)
            param[i] = p
            exp_avg[i] = m
            exp_avg_sq[i] = v
            if amsgrad:
                max_exp_avg_sq[i] = vmax

    return compile_kernel(adam, parallel)
