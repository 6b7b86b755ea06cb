r"""The NumPy reference: slow, readable, multi-pass versions of every algorithm.

These follow torch.optim's documented algorithms line by line, one NumPy operation per line of
the math, and update the arrays in place. They are the oracle every compiled backend is tested
against, and they are pinned to trajectories recorded from torch.optim (tests/golden).

Arrays of one float dtype; element math runs in that dtype (Python scalars are "weak" in NumPy,
so ``lr * g`` on float32 stays float32). Scalars derived from ``step`` are computed in float64.
The functions here do not validate: call them through ``fastopt.<name>_step(...,
backend="numpy")`` to get the checks.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


def _negate_if(g: Array, maximize: bool) -> Array:
    return -g if maximize else g


def sgd(param: Array, grad: Array, momentum_buffer: Array | None = None, *, step: int | None,
        lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, maximize: bool = False) -> None:
    r"""Stochastic gradient descent with optional heavy-ball or Nesterov momentum.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        b_t &\leftarrow g_t \text{ if } t = 1 \text{ else } \mu\,b_{t-1} + (1-\tau)\,g_t
              \quad\text{(if } \mu \ne 0\text{)} \\
        g_t &\leftarrow g_t + \mu\,b_t \text{ if nesterov else } b_t
              \quad\text{(if } \mu \ne 0\text{)} \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\,g_t

    with learning rate :math:`\gamma` (``lr``), momentum :math:`\mu`, dampening :math:`\tau`
    and weight decay :math:`\lambda`.

    Args:
        param: parameters, updated in place.
        grad: gradient of the objective at ``param``.
        momentum_buffer: :math:`b`, required when ``momentum != 0``; its contents are ignored
            (overwritten) on step 1.
        step: 1-based update count; needed only with momentum.
        lr, momentum, dampening, nesterov, weight_decay, maximize: hyperparameters.

    References:
        Sutskever et al., "On the importance of initialization and momentum in deep learning",
        ICML 2013; torch.optim.SGD.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    if momentum != 0:
        assert momentum_buffer is not None
        if step == 1:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * g
        if nesterov:
            g = g + momentum * momentum_buffer
        else:
            g = momentum_buffer
    param -= lr * g


def adagrad(param: Array, grad: Array, state_sum: Array, *, step: int, lr: float = 1e-2,
            lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
            maximize: bool = False) -> None:
    r"""Adagrad: per-coordinate step sizes from the running sum of squared gradients.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        \tilde\gamma &= \gamma / (1 + (t-1)\,\eta) \\
        s_t &= s_{t-1} + g_t^2 \\
        \theta_t &= \theta_{t-1} - \tilde\gamma\, g_t / (\sqrt{s_t} + \epsilon)

    with learning rate :math:`\gamma`, ``lr_decay`` :math:`\eta`, weight decay :math:`\lambda`.

    References:
        Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 2011; torch.optim.Adagrad.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += g * g
    std = np.sqrt(state_sum) + eps
    param -= clr * (g / std)


def _lerp_(start: Array, end: Array, weight: float) -> None:
    """``start`` moves toward ``end`` in place by torch.lerp's formula, exact at weight 1.

    As torch, the weight is rounded to the arrays' dtype first and ``1 - weight`` is computed
    in that dtype."""
    w = start.dtype.type(weight)
    if w < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (start.dtype.type(1) - w)


def rmsprop(param: Array, grad: Array, square_avg: Array, momentum_buffer: Array | None = None,
            grad_avg: Array | None = None, *, step: int | None = None, lr: float = 1e-2,
            alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, maximize: bool = False) -> None:
    r"""RMSprop, optionally centered and with momentum.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        v_t &= \alpha\,v_{t-1} + (1-\alpha)\,g_t^2 \\
        \bar g_t &= \bar g_{t-1} + (1-\alpha)(g_t - \bar g_{t-1}) \text{ if centered} \\
        d_t &= \sqrt{v_t - \bar g_t^2} + \epsilon \text{ if centered else }
               \sqrt{v_t} + \epsilon \\
        b_t &= \mu\,b_{t-1} + g_t / d_t,\quad \theta_t = \theta_{t-1} - \gamma\,b_t
               \quad\text{if } \mu > 0 \\
        \theta_t &= \theta_{t-1} - \gamma\,g_t / d_t \quad\text{otherwise}

    ``step`` is accepted for a uniform signature and not used: the state starts at zero.

    References:
        Hinton, Lecture 6e of "Neural Networks for Machine Learning", 2012; Graves,
        "Generating Sequences With Recurrent Neural Networks", 2013 (centered);
        torch.optim.RMSprop.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g  # torch's addcmul order: finite for larger |g|
    if centered:
        assert grad_avg is not None
        _lerp_(grad_avg, g, 1 - alpha)
        avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        assert momentum_buffer is not None
        momentum_buffer *= momentum
        momentum_buffer += g / avg
        param -= lr * momentum_buffer
    else:
        param -= lr * (g / avg)


def _adam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
          max_exp_avg_sq: Array | None, *, step: int, lr: float, beta1: float, beta2: float,
          eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
          decoupled: bool) -> None:
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    _lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g  # torch's addcmul order: finite for larger |g|
    bias_correction1 = 1 - math.pow(beta1, step)
    bias_correction2 = 1 - math.pow(beta2, step)
    step_size = lr / bias_correction1
    bias_correction2_sqrt = math.sqrt(bias_correction2)
    if amsgrad:
        assert max_exp_avg_sq is not None
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt + eps
    else:
        denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
    param -= step_size * (exp_avg / denom)


def adam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
         max_exp_avg_sq: Array | None = None, *, step: int, lr: float = 1e-3,
         beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
    r"""Adam, optionally with AMSGrad; weight decay is L2 (added to the gradient).

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        m_t &= m_{t-1} + (1-\beta_1)(g_t - m_{t-1}) \\
        v_t &= \beta_2\,v_{t-1} + (1-\beta_2)\,g_t^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ if amsgrad else } v_t \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
                    \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

    The bias corrections are computed in float64 from the int ``step``.

    Args:
        param: parameters, updated in place.
        grad: gradient.
        exp_avg: :math:`m`, first-moment estimate (zeros before step 1).
        exp_avg_sq: :math:`v`, second-moment estimate (zeros before step 1).
        max_exp_avg_sq: :math:`\hat v`, required exactly when ``amsgrad``.
        step: 1-based update count :math:`t`.

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; Reddi et al.,
        "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad); torch.optim.Adam.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1,
          beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
          decoupled=False)


def adamw(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array,
          max_exp_avg_sq: Array | None = None, *, step: int, lr: float = 1e-3,
          beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
    r"""AdamW: Adam with decoupled weight decay.

    As :func:`adam`, except that instead of adding :math:`\lambda\theta` to the gradient the
    parameter is first shrunk: :math:`\theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda)`.

    References:
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
        torch.optim.AdamW.
    """
    _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1,
          beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
          decoupled=True)


def adadelta(param: Array, grad: Array, square_avg: Array, acc_delta: Array, *,
             step: int | None = None, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
             weight_decay: float = 0.0, maximize: bool = False) -> None:
    r"""Adadelta.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        v_t &= \rho\,v_{t-1} + (1-\rho)\,g_t^2 \\
        \Delta x_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &= \rho\,u_{t-1} + (1-\rho)\,\Delta x_t^2 \\
        \theta_t &= \theta_{t-1} - \gamma\,\Delta x_t

    with :math:`v` = ``square_avg`` and :math:`u` = ``acc_delta``. ``step`` is accepted for a
    uniform signature and not used.

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012; torch.optim.Adadelta.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    square_avg *= rho
    square_avg += (1 - rho) * g * g
    std = np.sqrt(square_avg + eps)
    delta = np.sqrt(acc_delta + eps) / std * g
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    param -= lr * delta


def adamax(param: Array, grad: Array, exp_avg: Array, exp_inf: Array, *, step: int,
           lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.0, maximize: bool = False) -> None:
    r"""Adamax: Adam with the infinity norm in place of the second moment.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0 \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t \\
        u_t &= \max(\beta_2 u_{t-1},\ |g_t| + \epsilon) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,\frac{m_t}{u_t}

    with :math:`m` = ``exp_avg`` and :math:`u` = ``exp_inf``. ``eps`` sits inside the maximum
    (so :math:`u \ge \epsilon`), as in torch.optim.Adamax; the maximum propagates NaN.

    References:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (section 7);
        torch.optim.Adamax.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    _lerp_(exp_avg, g, 1 - beta1)
    np.maximum(exp_inf * beta2, np.abs(g) + eps, out=exp_inf)
    clr = lr / (1 - math.pow(beta1, step))
    param -= clr * (exp_avg / exp_inf)



def lion(param: Array, grad: Array, exp_avg: Array, *, step: int | None = None,
         lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
         maximize: bool = False) -> None:
    r"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        \theta_t &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1} \\
        \theta_t &\leftarrow \theta_t - \gamma\,\operatorname{sign}(\beta_1 m_{t-1}
                  + (1-\beta_1)\,g_t) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2)\,g_t

    with :math:`m` = ``exp_avg`` and :math:`\operatorname{sign}(0) = 0`. Defaults are those of
    the paper and lion-pytorch (``lr=1e-4``, ``betas=(0.9, 0.99)``, no weight decay); note
    that DeepSpeed's FusedLion defaults to ``lr=1e-3, betas=(0.9, 0.999)``. ``step`` is
    accepted for a uniform signature and not used.

    References:
        Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023;
        lion-pytorch's ``Lion``.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    c = beta1 * exp_avg + (1 - beta1) * g
    param -= lr * np.sign(c)
    exp_avg *= beta2
    exp_avg += (1 - beta2) * g


def radam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
          maximize: bool = False) -> None:
    r"""RAdam: Adam whose adaptive step is rectified, and skipped while its variance is not
    yet tractable.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        \theta_{t-1} &\leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2 \\
        \rho_\infty &= \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t}\,
            \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon}\,r_t \text{ if } \rho_t > 5
            \text{, else } \theta_{t-1} - \gamma\,\frac{m_t}{1-\beta_1^t} \\
        r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    ``eps`` is added to the uncorrected :math:`\sqrt{v_t}`, as in torch.optim.RAdam. With the
    default betas the rectified step starts at step 6.

    References:
        Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
        torch.optim.RAdam.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    _lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    bias_correction1 = 1 - math.pow(beta1, step)
    bias_correction2 = 1 - math.pow(beta2, step)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * math.pow(beta2, step) / bias_correction2
    update = exp_avg / bias_correction1 * lr
    if rho_t > 5:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                         / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        # torch computes the number / tensor as the tensor's reciprocal times the number.
        update = update * (1 / (np.sqrt(exp_avg_sq) + eps) * math.sqrt(bias_correction2)) * rect
    param -= update


def nadam(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          mu_product: float, lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
          decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    r"""NAdam: Adam with Nesterov momentum and torch's momentum schedule.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        \theta_{t-1} &\leftarrow (1-\gamma\lambda)\,\theta_{t-1} \text{ if decoupled, else }
            g_t \leftarrow g_t + \lambda\,\theta_{t-1} \\
        \mu_t &= \beta_1\,(1 - \tfrac12\,0.96^{t\psi}), \quad
        \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2, \quad
        d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{1-\mu_t}{1-\Pi_t}\,\frac{g_t}{d_t}
                   - \gamma\,\frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\,\frac{m_t}{d_t}

    with :math:`\psi` = ``momentum_decay``. ``mu_product`` is :math:`\Pi_t`, this step's
    factor included: torch keeps it as a float32 scalar state, multiplied in float32 each step
    (``fastopt.nadam_step`` takes and updates that state, or derives it).

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop;
        torch.optim.NAdam.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * param
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    _lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    denom = np.sqrt(exp_avg_sq / (1 - beta2**step)) + eps
    param += (-lr * (1 - mu) / (1 - mu_product)) * g / denom
    param += (-lr * mu_next / (1 - mu_product * mu_next)) * exp_avg / denom


def asgd(param: Array, grad: Array, ax: Array, *, step: int, eta: float, mu: float,
         lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
         weight_decay: float = 0.0, maximize: bool = False) -> None:
    r"""Averaged SGD (torch.optim.ASGD).

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize} \\
        g_t &\leftarrow g_t + w\,\theta_{t-1} \text{ if } w \ne 0 \\
        \theta_t &= (1 - \lambda\eta)\,\theta_{t-1} - \eta\,g_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu\,(\theta_t - \bar\theta_{t-1})
            \text{ if } \mu \ne 1 \text{, else } \theta_t

    with :math:`\bar\theta` = ``ax``. :math:`\eta` and :math:`\mu` are the scalar states the
    previous step left (``lr`` and 1 at first); after step :math:`t` they become
    :math:`\gamma / (1 + \lambda\gamma t)^\alpha` and :math:`1 / \max(1, t - t_0)` (torch
    keeps both in float32). ``step`` is not used here: eta and mu carry it.

    References:
        Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992;
        torch.optim.ASGD.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    param *= 1 - lambd * eta
    param += -eta * g
    if mu != 1:
        ax += (param - ax) * mu
    else:
        ax[...] = param


def rprop(param: Array, grad: Array, prev: Array, step_size: Array, *, step: int | None = None,
          eta_minus: float = 0.5, eta_plus: float = 1.2, step_size_min: float = 1e-6,
          step_size_max: float = 50.0, maximize: bool = False) -> None:
    r"""Rprop: per-element step sizes that grow while the gradient keeps its sign.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize}, \quad s = \operatorname{sign}(g_t\,g_{t-1}) \\
        \Delta_t &= \operatorname{clamp}(\Delta_{t-1} \cdot (\eta_+ \text{ if } s > 0,
            \ \eta_- \text{ if } s < 0, \ 1 \text{ else}),\ \Delta_{\min}, \Delta_{\max}) \\
        g_t &\leftarrow 0 \text{ where } s < 0 \\
        \theta_t &= \theta_{t-1} - \operatorname{sign}(g_t)\,\Delta_t, \quad
        g_{t-1} \leftarrow g_t \text{ (``prev'')}

    with :math:`\Delta` = ``step_size`` (a class initialises it to ``lr``). As torch.sign, the
    sign of NaN is 0: a NaN gradient leaves the parameter and step size as they are and is
    stored in ``prev`` (torch.optim.Rprop does the same). ``step`` is not used.

    References:
        Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
        The RPROP Algorithm", 1993; torch.optim.Rprop.
    """
    g = np.array(_negate_if(grad, maximize), dtype=param.dtype)  # a copy, 0-d included
    s = np.nan_to_num(np.sign(g * prev), nan=0.0)
    factor = np.where(s > 0, eta_plus, np.where(s < 0, eta_minus, 1)).astype(param.dtype)
    step_size *= factor
    np.clip(step_size, step_size_min, step_size_max, out=step_size)
    g[s < 0] = 0
    param -= np.nan_to_num(np.sign(g), nan=0.0) * step_size
    prev[...] = g


def adopt(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, *, step: int,
          lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.9999, eps: float = 1e-6,
          clip_exponent: float = 0.25, weight_decay: float = 0.0, decouple: bool = False,
          maximize: bool = False) -> None:
    r"""ADOPT: Adam-like, with the gradient normalised by the *previous* second moment.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize}; \quad
        g_t \leftarrow g_t + \lambda\,\theta_{t-1} \text{ if } \lambda \ne 0
            \text{ and not decouple} \\
        t = 1&: \quad v_1 = v_0 + g_1^2 \text{ (nothing else changes)} \\
        t > 1&: \quad \theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\,\theta_{t-1}
            \text{ if decouple} \\
        \hat g_t &= \operatorname{clip}\big(g_t / \max(\sqrt{v_{t-1}}, \epsilon),
            \ \pm (t-1)^{c}\big) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,\hat g_t, \quad
        \theta_t = \theta_{t-1} - \gamma\,m_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2

    with :math:`c` = ``clip_exponent`` (torch-adopt's ``clip_lambda=lambda s: s**0.25``;
    timm's Adopt uses 1/3). No bias correction. ``decouple`` is torch-adopt's name for
    decoupled weight decay.

    References:
        Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal
        Rate", NeurIPS 2024; the official ``torch-adopt`` package.
    """
    g = _negate_if(grad, maximize)
    if weight_decay != 0 and not decouple:
        g = g + weight_decay * param
    if step == 1:
        exp_avg_sq += g * g
        return
    if weight_decay != 0 and decouple:
        param += (-lr * weight_decay) * param
    denom = np.sqrt(exp_avg_sq)
    denom = np.where(denom < eps, param.dtype.type(eps), denom)  # NaN stays NaN
    clip = (step - 1) ** clip_exponent
    normed = g / denom
    normed = np.where(normed < -clip, param.dtype.type(-clip), normed)
    normed = np.where(normed > clip, param.dtype.type(clip), normed)
    _lerp_(exp_avg, normed, 1 - beta1)
    param += -lr * exp_avg
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g


def ademamix(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, exp_avg_slow: Array,
             *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
             beta3: float = 0.9999, alpha: float = 5.0, eps: float = 1e-8,
             weight_decay: float = 1e-2, t_alpha: float = 0.0, t_beta3: float = 0.0,
             maximize: bool = False) -> None:
    r"""AdEMAMix: Adam whose numerator mixes in a slow, not bias-corrected, EMA of the gradient.

    .. math::
        g_t &\leftarrow -g_t \text{ if maximize}; \quad
        \theta_{t-1} \leftarrow (1-\gamma\lambda)\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\,g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2, \quad
        s_t = \beta_{3,t} s_{t-1} + (1-\beta_{3,t})\,g_t \\
        \theta_t &= \theta_{t-1} - \gamma\,\frac{m_t/(1-\beta_1^t) + \alpha_t s_t}
            {\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}

    with :math:`m, v, s` = ``exp_avg``, ``exp_avg_sq``, ``exp_avg_slow``. The warmups (the
    paper's; 0 = none): :math:`\alpha_t = \min(t\alpha/T_\alpha, \alpha)`, and
    :math:`\beta_{3,t}` moves linearly in half-life :math:`h(\beta) = \ln\frac12/\ln\beta - 1`
    from :math:`\beta_1` to :math:`\beta_3` over :math:`T_{\beta_3}` steps (capped at
    :math:`\beta_3`). Weight decay is decoupled, as in every reference implementation
    (pytorch-optimizer's ``AdEMAMix`` defaults to L2 instead: ``weight_decouple=True`` is
    this). Defaults are bitsandbytes' (``alpha=5``, ``weight_decay=1e-2``); Apple's reference
    uses ``alpha=2`` and no weight decay, optax ``alpha=5`` and none.

    References:
        Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
        2024; bitsandbytes' and pytorch-optimizer's ``AdEMAMix``.
    """
    alpha_t = alpha if t_alpha <= 0 else min(step * alpha / t_alpha, alpha)
    beta3_t = beta3
    if t_beta3 > 0 and beta3 > 0 and step < t_beta3:
        a = step / t_beta3
        half = (1 - a) * (math.log(0.5) / math.log(beta1) if beta1 > 0 else 0.0) \
            + a * math.log(0.5) / math.log(beta3)
        beta3_t = min(0.5 ** (1 / half), beta3) if half > 0 else 0.0
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    _lerp_(exp_avg, g, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    _lerp_(exp_avg_slow, g, 1 - beta3_t)
    denom = np.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
    param -= lr * ((exp_avg / (1 - beta1 ** step) + alpha_t * exp_avg_slow) / denom)


def _schedulefree_weight(step: int, lr: float, warmup_steps: float, r: float,
                         weight_lr_power: float, lr_max: float | None,
                         weight_sum: float | None) -> tuple[float, float]:
    """Schedule-Free's warmed-up learning rate and averaging weight ckp1 at ``step``, from
    this step's ``lr_max`` and ``weight_sum``, or replayed from step 1 when None (constant
    options)."""
    def lr_at(t: int) -> float:
        return lr * (t / warmup_steps if t - 1 < warmup_steps else 1.0)

    if lr_max is None or weight_sum is None:
        top, total = -1.0, 0.0
        for t in range(1, step + 1):
            top = max(lr_at(t), top)
            total += t ** r * top ** weight_lr_power
        lr_max, weight_sum = top, total
    weight = step ** r * lr_max ** weight_lr_power
    return lr_at(step), (weight / weight_sum if weight_sum != 0 else 0.0)


def schedulefree_adamw(param: Array, grad: Array, z: Array, exp_avg_sq: Array, *, step: int,
                       lr_max: float | None = None, weight_sum: float | None = None,
                       lr: float = 2.5e-3, beta1: float = 0.9, beta2: float = 0.999,
                       eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: float = 0.0,
                       r: float = 0.0, weight_lr_power: float = 2.0,
                       maximize: bool = False) -> None:
    r"""Schedule-Free AdamW, in train mode: ``param`` holds :math:`y`, where gradients are taken.

    .. math::
        \gamma_t &= \gamma \min(1, t/T_w), \quad \gamma_{\max} \leftarrow
            \max(\gamma_{\max}, \gamma_t), \quad w_t = t^r \gamma_{\max}^{p}, \quad
            W \leftarrow W + w_t, \quad c_t = w_t / W \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2)\,g_t^2, \quad
        \hat g_t = g_t / (\sqrt{v_t/(1-\beta_2^t)} + \epsilon) + \lambda y_{t-1} \\
        y_t &= (1-c_t)\,y_{t-1} + c_t z_{t-1} + \gamma_t(\beta_1(1-c_t) - 1)\,\hat g_t, \quad
        z_t = z_{t-1} - \gamma_t \hat g_t

    with :math:`T_w` = ``warmup_steps``, :math:`p` = ``weight_lr_power``, and
    :math:`\gamma_{\max}`, :math:`W` this step's values of the scalar states ``lr_max``
    (-1 before step 1) and ``weight_sum`` (0 before; None: replayed from step 1 with these
    options). ``z`` starts as a copy of the parameter.
    The average :math:`x` (to evaluate with) is :math:`y + (1 - 1/\beta_1)(z - y)`: see
    ``schedulefree_eval``.

    References:
        Defazio et al., "The Road Less Scheduled", NeurIPS 2024; schedulefree's
        ``AdamWScheduleFree``.
    """
    lr_t, ckp1 = _schedulefree_weight(step, lr, warmup_steps, r, weight_lr_power, lr_max,
                                      weight_sum)
    g = _negate_if(grad, maximize)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * g * g
    g = g / (np.sqrt(exp_avg_sq / (1 - beta2 ** step)) + eps)
    if weight_decay != 0:
        g = g + weight_decay * param
    _lerp_(param, z, ckp1)
    param += lr_t * (beta1 * (1 - ckp1) - 1) * g
    z -= lr_t * g


def schedulefree_sgd(param: Array, grad: Array, z: Array, *, step: int,
                     lr_max: float | None = None, weight_sum: float | None = None,
                     lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                     warmup_steps: float = 0.0, r: float = 0.0, weight_lr_power: float = 2.0,
                     maximize: bool = False) -> None:
    r"""Schedule-Free SGD, in train mode: ``schedulefree_adamw`` with :math:`\hat g_t = g_t +
    \lambda y_{t-1}` and ``momentum`` for :math:`\beta_1`.

    References:
        Defazio et al., "The Road Less Scheduled", NeurIPS 2024; schedulefree's
        ``SGDScheduleFree``.
    """
    lr_t, ckp1 = _schedulefree_weight(step, lr, warmup_steps, r, weight_lr_power, lr_max,
                                      weight_sum)
    g = _negate_if(grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * param
    _lerp_(param, z, ckp1)
    param += lr_t * (momentum * (1 - ckp1) - 1) * g
    z -= lr_t * g


def schedulefree_swap(param: Array, z: Array, *, step: int | None = None,
                      weight: float) -> None:
    """The Schedule-Free mode switch ``param = lerp(param, z, weight)``: to eval (y to x)
    with weight ``1 - 1/beta1``, to train (x to y) with ``1 - beta1``."""
    _lerp_(param, z, weight)


def ema_update(ema: Array, param: Array, *, decay: float, first: bool) -> None:
    """The weight EMA of torch.optim.swa_utils (``AveragedModel`` with
    ``get_ema_multi_avg_fn(decay)``), applied to the parameter just updated: the first update
    copies it, every later one moves ``ema`` toward it, ``lerp(ema, param, 1 - decay)``.

    Every ``*_step`` function fuses this into its pass when given ``ema=``.
    """
    if first:
        ema[...] = param
    else:
        _lerp_(ema, param, 1.0 - decay)


def ema_swap(param: Array, unused: Array, ema: Array, *, step: int | None = None) -> None:
    """``param`` and ``ema`` exchange their contents (fastopt.ema_swap; ``unused`` is the
    gradient slot of the generic update, not read)."""
    saved = param.copy()
    param[...] = ema
    ema[...] = saved
