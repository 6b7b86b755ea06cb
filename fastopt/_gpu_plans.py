"""What each algorithm hands a GPU kernel, shared by the cupy and numba-cuda backends.

A plan is (kernel name, compile-time flags, arrays in the kernel's order, per-call scalars).
Unused optional states are filled with the param (the kernel never touches them); the scalars
are ``rules.*_scalars``, float64 on the host, which the backend casts to the arrays' dtype.
"""

from __future__ import annotations

from typing import Any, Callable

from .kernels import rules

Plan = tuple[str, dict[str, bool], list[Any], tuple[float, ...]]


def sgd(param: Any, grad: Any, momentum_buffer: Any = None, *, step: int, lr: float,
        momentum: float, dampening: float, nesterov: bool, weight_decay: float,
        maximize: bool) -> Plan:
    flags = dict(momentum=momentum != 0, nesterov=nesterov, maximize=maximize,
                 weight_decay=weight_decay != 0)
    buf = param if momentum_buffer is None else momentum_buffer
    return ("sgd", flags, [param, grad, buf],
            rules.sgd_scalars(step, lr, momentum, dampening, weight_decay))


def adagrad(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float, lr_decay: float,
            weight_decay: float, eps: float, maximize: bool) -> Plan:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0)
    return ("adagrad", flags, [param, grad, state_sum],
            rules.adagrad_scalars(step, lr, lr_decay, weight_decay, eps))


def rmsprop(param: Any, grad: Any, square_avg: Any, momentum_buffer: Any = None,
            grad_avg: Any = None, *, step: int, lr: float, alpha: float, eps: float,
            weight_decay: float, momentum: float, centered: bool, maximize: bool) -> Plan:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0, momentum=momentum > 0,
                 centered=centered)
    buf = param if momentum_buffer is None else momentum_buffer
    gavg = param if grad_avg is None else grad_avg
    return ("rmsprop", flags, [param, grad, square_avg, buf, gavg],
            rules.rmsprop_scalars(lr, alpha, eps, weight_decay, momentum))


def _adam(decoupled: bool, param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any,
          max_exp_avg_sq: Any, step: int, lr: float, beta1: float, beta2: float, eps: float,
          weight_decay: float, amsgrad: bool, maximize: bool) -> Plan:
    flags = dict(amsgrad=amsgrad, maximize=maximize, weight_decay=weight_decay != 0,
                 decoupled=decoupled)
    vmax = exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq
    return ("adam", flags, [param, grad, exp_avg, exp_avg_sq, vmax],
            rules.adam_scalars(step, lr, beta1, beta2, eps, weight_decay, decoupled))


def adam(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *,
         step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
         amsgrad: bool, maximize: bool) -> Plan:
    return _adam(False, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                 beta2, eps, weight_decay, amsgrad, maximize)


def adamw(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None, *,
          step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
          amsgrad: bool, maximize: bool) -> Plan:
    return _adam(True, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                 beta2, eps, weight_decay, amsgrad, maximize)


def adadelta(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *, step: int, lr: float,
             rho: float, eps: float, weight_decay: float, maximize: bool) -> Plan:
    flags = dict(maximize=maximize, weight_decay=weight_decay != 0)
    return ("adadelta", flags, [param, grad, square_avg, acc_delta],
            rules.adadelta_scalars(lr, rho, eps, weight_decay))


def steps(launch: Callable[..., None]) -> tuple[Callable[..., None], ...]:
    """A GPU backend's six functions (sgd, adagrad, rmsprop, adam, adamw, adadelta): each
    builds its algorithm's plan and hands it to ``launch(name, flags, arrays, scalars)``."""

    def bind(plan: Callable[..., Plan]) -> Callable[..., None]:
        def step(*args: Any, **options: Any) -> None:
            launch(*plan(*args, **options))

        step.__name__ = plan.__name__
        return step

    return tuple(bind(p) for p in (sgd, adagrad, rmsprop, adam, adamw, adadelta))
