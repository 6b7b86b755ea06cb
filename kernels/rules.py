"""Per-element update math of every algorithm, written once.

Each ``<algorithm>`` function takes the current scalar values of one element (parameter,
gradient, state) plus pre-computed scalar coefficients and returns the new values as a tuple.
Boolean arguments select variants; backends pass them as compile-time constants, so a compiled
kernel carries only the branches of its own configuration.

Each ``<algorithm>_scalars`` function turns hyperparameters and the int ``step`` into those
coefficients, in float64, once per call (host side). Backends cast the results to the arrays'
dtype before the element loop: the element math must contain no numeric literals, or Numba and
NVVM would promote float32 arithmetic to float64.

This module is plain Python on purpose: the Numba CPU target, the Numba-CUDA target and the
NumPy-free tests all compile or call these same functions. The algorithms are documented, with
their math, in :mod:`fastopt.reference`.
"""

import math

# Moving averages follow torch.lerp(start, end, weight), written out where used (a rule may
# only call math and itself): ``start + weight * (end - start)`` when weight < 0.5, else
# ``end - (end - start) * (1 - weight)``, so weight 1 gives ``end`` exactly. ``1 - weight`` is
# computed in the math dtype from the scalar ``one`` (as torch computes it from the weight);
# ``weight < one - weight`` is torch's ``weight < 0.5`` without a literal.

# ---------------------------------------------------------------------------------------------
# SGD (heavy-ball momentum, dampening, Nesterov)


def sgd_scalars(step, lr, momentum, dampening, weight_decay):
    # On the first step torch initialises the buffer to the gradient itself.
    first = 1.0 if step == 1 else 0.0
    return lr, momentum, 1.0 - dampening, weight_decay, first


def sgd(p, g, buf, lr, momentum, one_minus_dampening, weight_decay, first,
        use_momentum, nesterov, maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    if use_momentum:
        # A select, not a branch: the first step must not read the (uninitialised) buffer.
        buf = g if first else momentum * buf + one_minus_dampening * g
        if nesterov:
            g = g + momentum * buf
        else:
            g = buf
    p = p - lr * g
    return p, buf


# ---------------------------------------------------------------------------------------------
# Adagrad


def adagrad_scalars(step, lr, lr_decay, weight_decay, eps):
    clr = lr / (1.0 + (step - 1) * lr_decay)
    return clr, weight_decay, eps


def adagrad(p, g, state_sum, clr, weight_decay, eps, maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    state_sum = state_sum + g * g
    p = p - clr * (g / (math.sqrt(state_sum) + eps))
    return p, state_sum


# ---------------------------------------------------------------------------------------------
# RMSprop (optionally centered, optionally with momentum)


def rmsprop_scalars(lr, alpha, eps, weight_decay, momentum):
    return lr, alpha, 1.0 - alpha, eps, weight_decay, momentum, 1.0


def rmsprop(p, g, square_avg, buf, grad_avg, lr, alpha, one_minus_alpha, eps, weight_decay,
            momentum, one, maximize, use_weight_decay, use_momentum, centered):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    # (1 - alpha) * g first, then * g, as torch's addcmul: finite for |g| up to ~1e20 in float32.
    square_avg = alpha * square_avg + one_minus_alpha * g * g
    if centered:
        diff = g - grad_avg  # torch.lerp (see the top of this module); alpha = 0: exactly g
        rest = one - one_minus_alpha
        if one_minus_alpha < rest:
            grad_avg = grad_avg + one_minus_alpha * diff
        else:
            grad_avg = g - diff * rest
        avg = math.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = math.sqrt(square_avg) + eps
    if use_momentum:
        buf = momentum * buf + g / avg
        p = p - lr * buf
    else:
        p = p - lr * (g / avg)
    return p, square_avg, buf, grad_avg


# ---------------------------------------------------------------------------------------------
# Adam / AdamW (optionally AMSGrad)


def adam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled):
    bias_correction1 = 1.0 - math.pow(beta1, step)
    bias_correction2 = 1.0 - math.pow(beta2, step)
    step_size = lr / bias_correction1
    inv_bc2_sqrt = 1.0 / math.sqrt(bias_correction2)
    # AdamW multiplies the parameter by (1 - lr * wd); Adam adds wd * p to the gradient.
    decay = 1.0 - lr * weight_decay if decoupled else weight_decay
    return 1.0 - beta1, beta2, 1.0 - beta2, step_size, inv_bc2_sqrt, eps, decay, 1.0


def adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2,
         step_size, inv_bc2_sqrt, eps, decay, one, amsgrad, maximize, use_weight_decay,
         decoupled):
    if maximize:
        g = -g
    if use_weight_decay:
        if decoupled:
            p = p * decay
        else:
            g = g + decay * p
    diff = g - exp_avg  # torch.lerp (see the top of this module); beta1 = 0: exactly g
    rest = one - one_minus_beta1
    if one_minus_beta1 < rest:
        exp_avg = exp_avg + one_minus_beta1 * diff
    else:
        exp_avg = g - diff * rest
    # (1 - beta2) * g first, then * g, as torch's addcmul: finite for |g| up to ~1e20 in float32.
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    if amsgrad:
        # NaN-propagating maximum, as torch.maximum / np.maximum.
        if not (max_exp_avg_sq >= exp_avg_sq):
            if max_exp_avg_sq == max_exp_avg_sq:
                max_exp_avg_sq = exp_avg_sq
        denom = math.sqrt(max_exp_avg_sq) * inv_bc2_sqrt + eps
    else:
        denom = math.sqrt(exp_avg_sq) * inv_bc2_sqrt + eps
    p = p - step_size * (exp_avg / denom)
    return p, exp_avg, exp_avg_sq, max_exp_avg_sq


# ---------------------------------------------------------------------------------------------
# Adadelta


def adadelta_scalars(lr, rho, eps, weight_decay):
    return lr, rho, 1.0 - rho, eps, weight_decay


def adadelta(p, g, square_avg, acc_delta, lr, rho, one_minus_rho, eps, weight_decay,
             maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    square_avg = rho * square_avg + one_minus_rho * g * g  # torch's addcmul order
    std = math.sqrt(square_avg + eps)
    delta = math.sqrt(acc_delta + eps) / std * g
    acc_delta = rho * acc_delta + one_minus_rho * delta * delta
    p = p - lr * delta
    return p, square_avg, acc_delta


# ---------------------------------------------------------------------------------------------
# Adamax (Adam with the infinity norm)


def adamax_scalars(step, lr, beta1, beta2, eps, weight_decay):
    clr = lr / (1.0 - math.pow(beta1, step))
    return 1.0 - beta1, beta2, eps, weight_decay, clr, 1.0


def adamax(p, g, exp_avg, exp_inf, one_minus_beta1, beta2, eps, weight_decay, clr, one,
           maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    diff = g - exp_avg  # torch.lerp (see the top of this module)
    rest = one - one_minus_beta1
    if one_minus_beta1 < rest:
        exp_avg = exp_avg + one_minus_beta1 * diff
    else:
        exp_avg = g - diff * rest
    # NaN-propagating maximum of beta2 * u and |g| + eps, as torch.maximum.
    decayed = beta2 * exp_inf
    bound = abs(g) + eps
    if decayed != decayed or bound != bound:
        exp_inf = decayed + bound
    elif decayed > bound:
        exp_inf = decayed
    else:
        exp_inf = bound
    p = p - clr * (exp_avg / exp_inf)
    return p, exp_avg, exp_inf



# ---------------------------------------------------------------------------------------------
# Lion (sign of an interpolated momentum; decoupled weight decay)


def lion_scalars(lr, beta1, beta2, weight_decay):
    return lr, 1.0 - lr * weight_decay, beta1, 1.0 - beta1, beta2, 1.0 - beta2


def lion(p, g, exp_avg, lr, decay, beta1, one_minus_beta1, beta2, one_minus_beta2,
         maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        p = p * decay
    c = beta1 * exp_avg + one_minus_beta1 * g
    # sign(c), with sign(0) = 0 and NaN kept: (c > 0) - (c < 0) would turn NaN into 0.
    if c > lr - lr:
        update = lr
    elif c < lr - lr:
        update = -lr
    else:
        update = c * lr  # zero (of c's sign) or NaN
    p = p - update
    exp_avg = beta2 * exp_avg + one_minus_beta2 * g
    return p, exp_avg


# ---------------------------------------------------------------------------------------------
# RAdam (rectified Adam; torch.optim.RAdam, optionally with decoupled weight decay)


def radam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled):
    bias_correction1 = 1.0 - math.pow(beta1, step)
    bias_correction2 = 1.0 - math.pow(beta2, step)
    # The length of the approximated simple moving average, and its limit.
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * math.pow(beta2, step) / bias_correction2
    rectified = 1.0 if rho_t > 5.0 else 0.0
    rect = 1.0
    if rho_t > 5.0:
        rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                         / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
    decay = 1.0 - lr * weight_decay if decoupled else weight_decay
    return (1.0 - beta1, beta2, 1.0 - beta2, bias_correction1, lr,
            math.sqrt(bias_correction2), eps, rect, rectified, decay, 1.0)


def radam(p, g, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2,
          bias_correction1, lr, sqrt_bc2, eps, rect, rectified, decay, one,
          maximize, use_weight_decay, decoupled):
    if maximize:
        g = -g
    if use_weight_decay:
        if decoupled:
            p = p * decay
        else:
            g = g + decay * p
    diff = g - exp_avg  # torch.lerp (see the top of this module)
    rest = one - one_minus_beta1
    if one_minus_beta1 < rest:
        exp_avg = exp_avg + one_minus_beta1 * diff
    else:
        exp_avg = g - diff * rest
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    # torch's order: (m / bc1) * lr, then * (1 / (sqrt(v) + eps)) * sqrt(bc2) (torch divides
    # a number by a tensor through its reciprocal), then * rect.
    update = exp_avg / bias_correction1 * lr
    if rectified:
        update = update * (one / (math.sqrt(exp_avg_sq) + eps) * sqrt_bc2) * rect
    p = p - update
    return p, exp_avg, exp_avg_sq


# ---------------------------------------------------------------------------------------------
# NAdam (Nesterov Adam with torch's momentum schedule; optionally decoupled weight decay)


def nadam_scalars(step, mu_product, lr, beta1, beta2, eps, weight_decay, momentum_decay,
                  decoupled):
    # The momentum coefficients mu_t and mu_{t+1} (fastopt._specs.nadam_mu is mu_t for the
    # scalar state); mu_product: the product of mu_1 .. mu_t, a scalar state.
    mu = beta1 * (1.0 - 0.5 * math.pow(0.96, step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * math.pow(0.96, (step + 1) * momentum_decay))
    bias_correction2 = 1.0 - math.pow(beta2, step)
    grad_coef = -lr * (1.0 - mu) / (1.0 - mu_product)
    avg_coef = -lr * mu_next / (1.0 - mu_product * mu_next)
    decay = 1.0 - lr * weight_decay if decoupled else weight_decay
    return (1.0 - beta1, beta2, 1.0 - beta2, bias_correction2, eps, grad_coef, avg_coef, decay,
            1.0)


def nadam(p, g, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2,
          bias_correction2, eps, grad_coef, avg_coef, decay, one,
          maximize, use_weight_decay, decoupled):
    if maximize:
        g = -g
    if use_weight_decay:
        if decoupled:
            p = p * decay
        else:
            g = g + decay * p
    diff = g - exp_avg  # torch.lerp (see the top of this module)
    rest = one - one_minus_beta1
    if one_minus_beta1 < rest:
        exp_avg = exp_avg + one_minus_beta1 * diff
    else:
        exp_avg = g - diff * rest
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    denom = math.sqrt(exp_avg_sq / bias_correction2) + eps
    # Two addcdiv's, as torch: p + (value * t1) / t2.
    p = p + grad_coef * g / denom
    p = p + avg_coef * exp_avg / denom
    return p, exp_avg, exp_avg_sq


# ---------------------------------------------------------------------------------------------
# ASGD (averaged SGD; torch.optim.ASGD)


def asgd_scalars(eta, mu, lambd, weight_decay):
    # eta and mu: the scalar states as the previous step left them (torch's order).
    copy = 1.0 if mu == 1.0 else 0.0
    return 1.0 - lambd * eta, -eta, mu, copy, weight_decay, 0.0


def asgd(p, g, ax, decay, neg_eta, mu, copy, weight_decay, zero, maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    p = p * decay
    p = p + neg_eta * g
    # mu = 1 (every step before t0) copies p exactly, as torch; else ax moves towards p. The
    # choice is a select whose condition reads ax (z is +-0 for every ax, NaN and inf
    # included, so the condition is ``copy``): with a loop-invariant condition the compiler
    # splits the loop, the copying loop only writes ax, and at 2**24 such a store-only stream
    # ran 1.4x slower on the CPU than one that reads each line first (benchmarks/RESULTS.md).
    averaged = ax + (p - ax) * mu
    z = zero * ax
    z = z if z == z else zero
    ax = p if copy > z else averaged
    return p, ax


# ---------------------------------------------------------------------------------------------
# Rprop (resilient backpropagation; torch.optim.Rprop)


def rprop_scalars(eta_minus, eta_plus, step_size_min, step_size_max):
    return eta_minus, eta_plus, step_size_min, step_size_max, 1.0


def rprop(p, g, prev, step_size, eta_minus, eta_plus, step_size_min, step_size_max, one,
          maximize):
    if maximize:
        g = -g
    zero = one - one
    # torch.sign: 0 for NaN as for zero.
    s = g * prev
    if s > zero:
        step_size = step_size * eta_plus
    elif s < zero:
        step_size = step_size * eta_minus
        g = zero  # a sign change: no step, and no sign to compare with next time
    # torch.clamp: NaN stays NaN; min above max gives max.
    if step_size < step_size_min:
        step_size = step_size_min
    if step_size > step_size_max:
        step_size = step_size_max
    if g > zero:
        p = p - step_size
    elif g < zero:
        p = p + step_size
    else:
        p = p - zero * step_size  # torch: p - sign(g) * step_size, sign(g) = 0
    prev = g
    return p, prev, step_size


# ---------------------------------------------------------------------------------------------
# ADOPT (Taniguchi et al. 2024; the official torch-adopt: step 1 only initialises exp_avg_sq)


def adopt_scalars(step, lr, beta1, beta2, eps, weight_decay, clip_exponent):
    first = 1.0 if step == 1 else 0.0
    # torch-adopt's clip_lambda(step) with its step counting the previous calls.
    clip = math.pow(step - 1.0, clip_exponent) if step > 1 else 0.0
    return (1.0 - beta1, beta2, 1.0 - beta2, eps, clip, -lr, -lr * weight_decay, weight_decay,
            first, 1.0)


def adopt(p, g, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, eps, clip,
          neg_lr, neg_lr_wd, weight_decay, first, one, maximize, use_weight_decay, decouple):
    if maximize:
        g = -g
    if use_weight_decay and not decouple:
        g = g + weight_decay * p
    if first:
        exp_avg_sq = exp_avg_sq + g * g
    else:
        if use_weight_decay and decouple:
            p = p + neg_lr_wd * p
        # torch.clamp(sqrt(v), min=eps) and clamp(g / denom, -clip, clip): NaN stays NaN.
        denom = math.sqrt(exp_avg_sq)
        if denom < eps:
            denom = eps
        normed = g / denom
        if normed < -clip:
            normed = -clip
        if normed > clip:
            normed = clip
        diff = normed - exp_avg  # torch.lerp (see the top of this module)
        rest = one - one_minus_beta1
        if one_minus_beta1 < rest:
            exp_avg = exp_avg + one_minus_beta1 * diff
        else:
            exp_avg = normed - diff * rest
        p = p + neg_lr * exp_avg
        exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    return p, exp_avg, exp_avg_sq


# ---------------------------------------------------------------------------------------------
# AdEMAMix (Pagliardini et al. 2024): Adam plus a slow EMA of the gradient, mixed in by alpha


def ademamix_scalars(step, lr, beta1, beta2, beta3, alpha, eps, weight_decay, t_alpha, t_beta3):
    # The paper's warmups (0: none). alpha: linear. beta3: linear in half-life from beta1 to
    # beta3, in its closed form (pytorch-optimizer's and optax's), capped at beta3; beta1 = 0
    # is the form's limit, beta3 ** (t_beta3 / step).
    alpha_t = min(step * alpha / t_alpha, alpha) if t_alpha > 0.0 else alpha
    beta3_t = beta3
    if t_beta3 > 0.0 and beta3 > 0.0:
        a = step / t_beta3
        log3 = math.log(beta3)
        if beta1 == 0.0:
            beta3_t = min(math.exp(log3 / a), beta3)
        else:
            log1 = math.log(beta1)
            beta3_t = min(math.exp(log1 * log3 / ((1.0 - a) * log3 + a * log1)), beta3)
    # Reciprocals: a multiply per element where the oracle divides (within an ulp of it).
    inv_bc1 = 1.0 / (1.0 - math.pow(beta1, step))
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - math.pow(beta2, step))
    return (1.0 - beta1, beta2, 1.0 - beta2, 1.0 - beta3_t, inv_bc1, inv_bc2_sqrt, alpha_t,
            eps, -lr, 1.0 - lr * weight_decay, 1.0)


def ademamix(p, g, exp_avg, exp_avg_sq, exp_avg_slow, one_minus_beta1, beta2, one_minus_beta2,
             one_minus_beta3, inv_bc1, inv_bc2_sqrt, alpha, eps, neg_lr, decay, one,
             maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        p = p * decay
    diff = g - exp_avg  # torch.lerp (see the top of this module)
    rest = one - one_minus_beta1
    if one_minus_beta1 < rest:
        exp_avg = exp_avg + one_minus_beta1 * diff
    else:
        exp_avg = g - diff * rest
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    diff = g - exp_avg_slow
    rest = one - one_minus_beta3
    if one_minus_beta3 < rest:
        exp_avg_slow = exp_avg_slow + one_minus_beta3 * diff
    else:
        exp_avg_slow = g - diff * rest
    denom = math.sqrt(exp_avg_sq) * inv_bc2_sqrt + eps
    p = p + neg_lr * ((exp_avg * inv_bc1 + alpha * exp_avg_slow) / denom)
    return p, exp_avg, exp_avg_sq, exp_avg_slow


# ---------------------------------------------------------------------------------------------
# Schedule-Free AdamW and SGD (Defazio et al. 2024; facebookresearch's `schedulefree`). In train
# mode the parameter holds y, the point gradients are taken at; z is the base iterate. The
# averaging weight ckp1 comes from the scalar states lr_max and weight_sum (see _specs).


def schedulefree_adamw_scalars(step, lr_max, weight_sum, lr, beta1, beta2, eps, weight_decay,
                               warmup_steps, r, weight_lr_power):
    # schedulefree counts k = step - 1: a linear warmup (k + 1) / warmup_steps while k < it.
    sched = step / warmup_steps if step - 1 < warmup_steps else 1.0
    lr_t = lr * sched
    weight = math.pow(step, r) * math.pow(lr_max, weight_lr_power)
    ckp1 = weight / weight_sum if weight_sum != 0.0 else 0.0
    return (ckp1, lr_t * (beta1 * (1.0 - ckp1) - 1.0), lr_t, beta2, 1.0 - beta2,
            1.0 / (1.0 - math.pow(beta2, step)), eps, weight_decay, 1.0)


def schedulefree_adamw(p, g, z, exp_avg_sq, ckp1, y_coef, lr, beta2, one_minus_beta2,
                       inv_bc2, eps, weight_decay, one, maximize, use_weight_decay):
    if maximize:
        g = -g
    exp_avg_sq = beta2 * exp_avg_sq + one_minus_beta2 * g * g
    g = g / (math.sqrt(exp_avg_sq * inv_bc2) + eps)
    if use_weight_decay:
        g = g + weight_decay * p  # at y, after the normalisation
    diff = z - p  # y = torch.lerp(y, z, ckp1)
    if ckp1 < one - ckp1:
        p = p + ckp1 * diff
    else:
        p = z - diff * (one - ckp1)
    p = p + y_coef * g
    z = z - lr * g
    return p, z, exp_avg_sq


def schedulefree_sgd_scalars(step, lr_max, weight_sum, lr, momentum, weight_decay, warmup_steps,
                             r, weight_lr_power):
    sched = step / warmup_steps if step - 1 < warmup_steps else 1.0
    lr_t = lr * sched
    weight = math.pow(step, r) * math.pow(lr_max, weight_lr_power)
    ckp1 = weight / weight_sum if weight_sum != 0.0 else 0.0
    return ckp1, lr_t * (momentum * (1.0 - ckp1) - 1.0), lr_t, weight_decay, 1.0


def schedulefree_sgd(p, g, z, ckp1, y_coef, lr, weight_decay, one, maximize, use_weight_decay):
    if maximize:
        g = -g
    if use_weight_decay:
        g = g + weight_decay * p
    diff = z - p
    if ckp1 < one - ckp1:
        p = p + ckp1 * diff
    else:
        p = z - diff * (one - ckp1)
    p = p + y_coef * g
    z = z - lr * g
    return p, z


def schedulefree_swap_scalars(weight):
    return weight, 1.0


def schedulefree_swap(p, z, weight, one):
    # The mode switch: p = torch.lerp(p, z, weight); eval (y -> x) takes weight 1 - 1/beta1,
    # train (x -> y) 1 - beta1.
    diff = z - p
    if weight < one - weight:
        p = p + weight * diff
    else:
        p = z - diff * (one - weight)
    return (p,)


# ---------------------------------------------------------------------------------------------
# Weight EMA (torch.optim.swa_utils' EMA), fused after any rule: ``e`` moves toward the
# parameter ``p`` the rule just wrote, e = torch.lerp(e, p, weight) with weight = 1 - decay;
# the first update (``first`` nonzero) copies p, as AveragedModel does. The kernels call it on
# the parameter as stored; the host passes weight and ``rest = 1 - weight`` as the arrays' dtype
# computes them (fastopt._generic.Ema).


def ema(e, p, weight, rest, first):
    diff = p - e
    if weight < rest:
        e = e + weight * diff
    else:
        e = p - diff * rest
    # A select, not a branch: on the first update e may hold anything (uninitialised memory).
    return p if first else e


def ema_swap_scalars():
    return (1.0,)


def ema_swap(p, g, e, one):
    # The EMA swapped in for evaluation, and back: param and ema exchange contents (g is not
    # read; ``one`` is unused: every rule takes at least one scalar).
    return e, p
