"""The public functional API: validate every argument, then dispatch to one backend.

Every function updates ``param`` and its state arrays in place and returns None. Arrays are
positional, everything else keyword-only. The math of each algorithm is documented in
:mod:`fastopt.reference`.
"""

from __future__ import annotations

from typing import Any

from . import _backends
from . import _validate as check


@check.bumps_torch_versions
def sgd_step(param: Any, grad: Any, momentum_buffer: Any = None, *, step: int | None = None,
             lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             weight_decay: float = 0.0, maximize: bool = False, backend: str = "auto") -> None:
    """One SGD update, optionally with heavy-ball or Nesterov momentum (see reference.sgd).

    ``momentum_buffer`` is required exactly when ``momentum != 0``, and so is ``step``: on step
    1 the buffer is set to the gradient, as torch.optim.SGD does.
    """
    lr = check.real("lr", lr, 0.0)
    momentum = check.real("momentum", momentum, 0.0)
    dampening = check.real("dampening", dampening)
    weight_decay = check.real("weight_decay", weight_decay, 0.0)
    nesterov = check.flag("nesterov", nesterov)
    maximize = check.flag("maximize", maximize)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError(f"Invalid nesterov: True with momentum={momentum!r} and "
                         f"dampening={dampening!r} (expected momentum > 0 and dampening == 0)")
    use_momentum = momentum != 0
    step = check.step("sgd_step with momentum", step, use_momentum)
    check.state_given("momentum_buffer", momentum_buffer, use_momentum, "momentum != 0")
    if use_momentum:
        param, grad, momentum_buffer = check.arrays(("param", "grad", "momentum_buffer"),
                                                    (param, grad, momentum_buffer))
    else:
        param, grad = check.arrays(("param", "grad"), (param, grad))
    mod = _backends.get(backend, param)
    if param.size:
        mod.sgd(param, grad, momentum_buffer, step=step, lr=lr, momentum=momentum,
                dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                maximize=maximize)


@check.bumps_torch_versions
def adagrad_step(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False, backend: str = "auto") -> None:
    """One Adagrad update (see reference.adagrad). ``step`` drives ``lr_decay``."""
    lr = check.real("lr", lr, 0.0)
    lr_decay = check.real("lr_decay", lr_decay, 0.0)
    weight_decay = check.real("weight_decay", weight_decay, 0.0)
    eps = check.real("eps", eps, 0.0)
    maximize = check.flag("maximize", maximize)
    step = check.step("adagrad_step", step, True)
    param, grad, state_sum = check.arrays(("param", "grad", "state_sum"),
                                          (param, grad, state_sum))
    mod = _backends.get(backend, param)
    if param.size:
        mod.adagrad(param, grad, state_sum, step=step, lr=lr, lr_decay=lr_decay,
                    weight_decay=weight_decay, eps=eps, maximize=maximize)


@check.bumps_torch_versions
def rmsprop_step(param: Any, grad: Any, square_avg: Any, momentum_buffer: Any = None,
                 grad_avg: Any = None, *, step: int | None = None, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, maximize: bool = False,
                 backend: str = "auto") -> None:
    """One RMSprop update (see reference.rmsprop).

    ``momentum_buffer`` is required exactly when ``momentum > 0``, ``grad_avg`` exactly when
    ``centered``. ``step`` is accepted and checked but not used.
    """
    lr = check.real("lr", lr, 0.0)
    alpha = check.real("alpha", alpha, 0.0, 1.0)
    eps = check.real("eps", eps, 0.0)
    weight_decay = check.real("weight_decay", weight_decay, 0.0)
    momentum = check.real("momentum", momentum, 0.0)
    centered = check.flag("centered", centered)
    maximize = check.flag("maximize", maximize)
    step = check.step("rmsprop_step", step, False)
    check.state_given("momentum_buffer", momentum_buffer, momentum > 0, "momentum > 0")
    check.state_given("grad_avg", grad_avg, centered, "centered=True")
    names = ["param", "grad", "square_avg"]
    values = [param, grad, square_avg]
    if momentum > 0:
        names.append("momentum_buffer")
        values.append(momentum_buffer)
    if centered:
        names.append("grad_avg")
        values.append(grad_avg)
    values = list(check.arrays(tuple(names), tuple(values)))
    param, grad, square_avg = values[:3]
    if centered:
        grad_avg = values.pop()
    if momentum > 0:
        momentum_buffer = values.pop()
    mod = _backends.get(backend, param)
    if param.size:
        mod.rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, step=step, lr=lr,
                    alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                    centered=centered, maximize=maximize)


def _adam(fn: str, decoupled: bool, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
          max_exp_avg_sq: Any, step: Any, lr: Any, beta1: Any, beta2: Any, eps: Any,
          weight_decay: Any, amsgrad: Any, maximize: Any, backend: str) -> None:
    lr = check.real("lr", lr, 0.0)
    beta1 = check.real("beta1", beta1, 0.0, 1.0, hi_open=True)
    beta2 = check.real("beta2", beta2, 0.0, 1.0, hi_open=True)
    eps = check.real("eps", eps, 0.0)
    weight_decay = check.real("weight_decay", weight_decay, 0.0)
    amsgrad = check.flag("amsgrad", amsgrad)
    maximize = check.flag("maximize", maximize)
    step = check.step(fn, step, True)
    check.state_given("max_exp_avg_sq", max_exp_avg_sq, amsgrad, "amsgrad=True")
    if amsgrad:
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq = check.arrays(
            _AMSGRAD_NAMES, (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq))
    else:
        param, grad, exp_avg, exp_avg_sq = check.arrays(
            _ADAM_NAMES, (param, grad, exp_avg, exp_avg_sq))
    mod = _backends.get(backend, param)
    if param.size:
        (mod.adamw if decoupled else mod.adam)(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1,
            beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)


_ADAM_NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")
_AMSGRAD_NAMES = (*_ADAM_NAMES, "max_exp_avg_sq")


@check.bumps_torch_versions
def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
              *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
              maximize: bool = False, backend: str = "auto") -> None:
    """One Adam update, L2 weight decay (see reference.adam).

    ``max_exp_avg_sq`` is required exactly when ``amsgrad``. ``step`` (the 1-based update
    count) drives the bias corrections.

    Example:
        >>> p = np.ones(4, np.float32); g = np.full(4, 0.5, np.float32)
        >>> m, v = np.zeros_like(p), np.zeros_like(p)
        >>> fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)
    """
    _adam("adam_step", False, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr,
          beta1, beta2, eps, weight_decay, amsgrad, maximize, backend)


@check.bumps_torch_versions
def adamw_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
               *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
               maximize: bool = False, backend: str = "auto") -> None:
    """One AdamW update: Adam with decoupled weight decay (see reference.adamw)."""
    _adam("adamw_step", True, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr,
          beta1, beta2, eps, weight_decay, amsgrad, maximize, backend)


@check.bumps_torch_versions
def adadelta_step(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *,
                  step: int | None = None, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                  weight_decay: float = 0.0, maximize: bool = False,
                  backend: str = "auto") -> None:
    """One Adadelta update (see reference.adadelta). ``step`` is checked but not used."""
    lr = check.real("lr", lr, 0.0)
    rho = check.real("rho", rho, 0.0, 1.0)
    eps = check.real("eps", eps, 0.0)
    weight_decay = check.real("weight_decay", weight_decay, 0.0)
    maximize = check.flag("maximize", maximize)
    step = check.step("adadelta_step", step, False)
    param, grad, square_avg, acc_delta = check.arrays(
        ("param", "grad", "square_avg", "acc_delta"), (param, grad, square_avg, acc_delta))
    mod = _backends.get(backend, param)
    if param.size:
        mod.adadelta(param, grad, square_avg, acc_delta, step=step, lr=lr, rho=rho, eps=eps,
                     weight_decay=weight_decay, maximize=maximize)
