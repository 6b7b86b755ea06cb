"""The public functional API: one declared function per algorithm over one implementation.

Every function updates ``param`` and its state arrays in place and returns None. Arrays are
positional, everything else keyword-only. Each body hands its arguments, in its spec's order, to
:func:`fastopt._generic.step`, which validates everything and then dispatches; ``@declared``
checks at import that the signature matches the spec (names, order, defaults). The math of each
algorithm is documented in :mod:`fastopt.reference`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from . import _validate as check
from ._generic import ema_swap as _ema_swap
from ._generic import schedulefree_swap as _swap
from ._generic import step as _step
from ._specs import REQUIRED, SPECS, no_warmup

F = TypeVar("F", bound=Callable[..., None])


def declared(fn: F) -> F:
    """Check ``fn``'s signature against the spec of its name (the generic step it calls marks
    the torch tensors it writes as modified)."""
    spec = SPECS[fn.__name__.removesuffix("_step")]
    params = list(inspect.signature(fn).parameters.values())
    arrays = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keywords = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}
    expected_arrays = ["param", "grad", *spec.state_names]
    expected_keywords = {"step": REQUIRED if spec.step == "required" else None,
                         **{name: None for name in spec.scalar_names},
                         **{h.name: h.default for h in spec.hypers}, "ema": None,
                         "ema_decay": 0.999, "ema_step": None, "master": None,
                         "compensation": None, "rounding": "nearest", "seed": 0,
                         "backend": "auto"}
    if arrays != expected_arrays or list(keywords) != list(expected_keywords) or any(
            keywords[k] != v and not (v is REQUIRED and keywords[k] is REQUIRED)
            for k, v in expected_keywords.items()):
        raise TypeError(f"{fn.__name__}'s signature {inspect.signature(fn)} does not match "
                        f"its spec: arrays {expected_arrays}, keywords {expected_keywords}")
    for p in params[2:len(arrays)]:
        state = spec.states[spec.state_names.index(p.name)]
        if (state.when is None) != (p.default is inspect.Parameter.empty):
            raise TypeError(f"{fn.__name__}: {p.name} must default to None exactly when it "
                            f"is optional")
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n    " + EMA_DOC + "\n\n    " + STORE_DOC \
        + "\n    "
    return fn


# Appended to every step function's docstring: the keywords they all share.
EMA_DOC = """Weight EMA (every algorithm): with ``ema`` (an array like ``param``), the same pass
    also updates the exponential moving average of the parameter, as
    ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(ema_decay)`` does
    after each step: ``ema = lerp(ema, param, 1 - ema_decay)`` on the updated parameter, and on
    the first EMA update (``ema_step == 1``) a copy of it. ``ema_step`` is the 1-based number of
    this EMA update, ``step`` when left out (then the EMA starts with the optimizer).
    Evaluate with the EMA weights by swapping them in: ``fastopt.ema_swap``."""


# Appended too: how a 16-bit parameter is stored.
STORE_DOC = """16-bit parameters (bfloat16, float16; every algorithm): the math is float32 and the
    new value is stored rounded to nearest even, unless: ``master`` (a float32 array like
    ``param``) holds the parameter's full value -- the update reads and writes it, and
    ``param`` receives its rounding (master weights, one pass); ``compensation`` (an array of
    ``param``'s format) holds what rounding ``param`` lost, added back before each update
    (Kahan-style compensated bfloat16, no float32 copy); ``rounding="stochastic"`` rounds
    ``param`` up or down at random with probabilities that make it unbiased, from a hash of
    ``seed``, ``step`` and the element's index: deterministic, independent of threads (use a
    different ``seed`` per array)."""


_SGD, _ADAGRAD, _RMSPROP = SPECS["sgd"], SPECS["adagrad"], SPECS["rmsprop"]
_ADAM, _ADAMW, _ADADELTA = SPECS["adam"], SPECS["adamw"], SPECS["adadelta"]
_ADAMAX, _LION = SPECS["adamax"], SPECS["lion"]
_RADAM, _NADAM, _ASGD, _RPROP = SPECS["radam"], SPECS["nadam"], SPECS["asgd"], SPECS["rprop"]
_ADOPT, _ADEMAMIX = SPECS["adopt"], SPECS["ademamix"]
_SF_ADAMW, _SF_SGD = SPECS["schedulefree_adamw"], SPECS["schedulefree_sgd"]


@declared
def sgd_step(param: Any, grad: Any, momentum_buffer: Any = None, *, step: int | None = None,
             lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             weight_decay: float = 0.0, maximize: bool = False, ema: Any = None,
             ema_decay: float = 0.999, ema_step: int | None = None,
             master: Any = None, compensation: Any = None, rounding: str = "nearest",
             seed: int = 0,
             backend: str = "auto") -> None:
    """One SGD update, optionally with heavy-ball or Nesterov momentum (see reference.sgd).

    ``momentum_buffer`` is required exactly when ``momentum != 0``, and so is ``step``: on step
    1 the buffer is set to the gradient, as torch.optim.SGD does.
    """
    _step(_SGD, param, grad, (momentum_buffer,), step, backend,
          (lr, momentum, dampening, nesterov, weight_decay, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adagrad_step(param: Any, grad: Any, state_sum: Any, *, step: int, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
                 ema_step: int | None = None,
                 master: Any = None, compensation: Any = None, rounding: str = "nearest",
                 seed: int = 0, backend: str = "auto") -> None:
    """One Adagrad update (see reference.adagrad). ``step`` drives ``lr_decay``."""
    _step(_ADAGRAD, param, grad, (state_sum,), step, backend,
          (lr, lr_decay, weight_decay, eps, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def rmsprop_step(param: Any, grad: Any, square_avg: Any, momentum_buffer: Any = None,
                 grad_avg: Any = None, *, step: int | None = None, lr: float = 1e-2,
                 alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, maximize: bool = False,
                 ema: Any = None, ema_decay: float = 0.999,
                 ema_step: int | None = None,
                 master: Any = None, compensation: Any = None, rounding: str = "nearest",
                 seed: int = 0, backend: str = "auto") -> None:
    """One RMSprop update (see reference.rmsprop).

    ``momentum_buffer`` is required exactly when ``momentum > 0``, ``grad_avg`` exactly when
    ``centered``. ``step`` is accepted and checked but not used.
    """
    _step(_RMSPROP, param, grad, (square_avg, momentum_buffer, grad_avg), step, backend,
          (lr, alpha, eps, weight_decay, momentum, centered, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
              *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
              maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
              ema_step: int | None = None,
              master: Any = None, compensation: Any = None, rounding: str = "nearest",
              seed: int = 0, backend: str = "auto") -> None:
    """One Adam update, L2 weight decay (see reference.adam).

    ``max_exp_avg_sq`` is required exactly when ``amsgrad``. ``step`` (the 1-based update
    count) drives the bias corrections.

    Example:
        >>> p = np.ones(4, np.float32); g = np.full(4, 0.5, np.float32)
        >>> m, v = np.zeros_like(p), np.zeros_like(p)
        >>> fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)
    """
    _step(_ADAM, param, grad, (exp_avg, exp_avg_sq, max_exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, weight_decay, amsgrad, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adamw_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, max_exp_avg_sq: Any = None,
               *, step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
               eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
               maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
               ema_step: int | None = None,
               master: Any = None, compensation: Any = None, rounding: str = "nearest",
               seed: int = 0, backend: str = "auto") -> None:
    """One AdamW update: Adam with decoupled weight decay (see reference.adamw)."""
    _step(_ADAMW, param, grad, (exp_avg, exp_avg_sq, max_exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, weight_decay, amsgrad, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adadelta_step(param: Any, grad: Any, square_avg: Any, acc_delta: Any, *,
                  step: int | None = None, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                  weight_decay: float = 0.0, maximize: bool = False,
                  ema: Any = None, ema_decay: float = 0.999,
                  ema_step: int | None = None,
                  master: Any = None, compensation: Any = None, rounding: str = "nearest",
                  seed: int = 0, backend: str = "auto") -> None:
    """One Adadelta update (see reference.adadelta). ``step`` is checked but not used."""
    _step(_ADADELTA, param, grad, (square_avg, acc_delta), step, backend,
          (lr, rho, eps, weight_decay, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adamax_step(param: Any, grad: Any, exp_avg: Any, exp_inf: Any, *, step: int,
                lr: float = 2e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0, maximize: bool = False,
                ema: Any = None, ema_decay: float = 0.999,
                ema_step: int | None = None,
                master: Any = None, compensation: Any = None, rounding: str = "nearest",
                seed: int = 0, backend: str = "auto") -> None:
    """One Adamax update (see reference.adamax). ``step`` drives the bias correction."""
    _step(_ADAMAX, param, grad, (exp_avg, exp_inf), step, backend,
          (lr, beta1, beta2, eps, weight_decay, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def lion_step(param: Any, grad: Any, exp_avg: Any, *, step: int | None = None, lr: float = 1e-4,
              beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
              maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
              ema_step: int | None = None,
              master: Any = None, compensation: Any = None, rounding: str = "nearest",
              seed: int = 0, backend: str = "auto") -> None:
    """One Lion update (see reference.lion). ``step`` is checked but not used."""
    _step(_LION, param, grad, (exp_avg,), step, backend,
          (lr, beta1, beta2, weight_decay, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def radam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
               maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
               ema_step: int | None = None,
               master: Any = None, compensation: Any = None, rounding: str = "nearest",
               seed: int = 0, backend: str = "auto") -> None:
    """One RAdam update (see reference.radam); ``decoupled_weight_decay=True`` gives RAdamW."""
    _step(_RADAM, param, grad, (exp_avg, exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def nadam_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
               mu_product: Any = None, lr: float = 2e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
               momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
               maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
               ema_step: int | None = None,
               master: Any = None, compensation: Any = None, rounding: str = "nearest",
               seed: int = 0, backend: str = "auto") -> None:
    """One NAdam update (see reference.nadam); ``decoupled_weight_decay=True`` gives NAdamW.

    ``mu_product`` is the product of the momentum coefficients of the steps so far, as torch
    keeps it: a host array of one float32 or float64 element (``numpy.ones((), np.float32)``
    before step 1), multiplied by this step's coefficient in its own precision, in place. Left
    out, it is derived from ``step`` in the parameter's dtype, assuming ``beta1`` and
    ``momentum_decay`` never changed (exact then; pass the state when they are scheduled).
    """
    _step(_NADAM, param, grad, (exp_avg, exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, weight_decay, momentum_decay, decoupled_weight_decay,
           maximize), (mu_product,),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def asgd_step(param: Any, grad: Any, ax: Any, *, step: int, eta: Any = None, mu: Any = None,
              lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
              weight_decay: float = 0.0, maximize: bool = False, ema: Any = None,
              ema_decay: float = 0.999, ema_step: int | None = None,
              master: Any = None, compensation: Any = None, rounding: str = "nearest",
              seed: int = 0,
              backend: str = "auto") -> None:
    """One ASGD update (see reference.asgd): ``ax`` is the running average of the parameter.

    ``eta`` and ``mu`` are torch's scalar states, the step size and averaging weight this step
    uses (``lr`` and 1 before step 1): host arrays of one float32 or float64 element, replaced
    in place by the values for the next step. Left out, they are derived from ``step`` in the
    parameter's dtype, assuming ``lr``, ``lambd``, ``alpha`` and ``t0`` never changed.
    """
    _step(_ASGD, param, grad, (ax,), step, backend,
          (lr, lambd, alpha, t0, weight_decay, maximize), (eta, mu),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def rprop_step(param: Any, grad: Any, prev: Any, step_size: Any, *, step: int | None = None,
               eta_minus: float = 0.5, eta_plus: float = 1.2, step_size_min: float = 1e-6,
               step_size_max: float = 50.0, maximize: bool = False,
               ema: Any = None, ema_decay: float = 0.999,
               ema_step: int | None = None,
               master: Any = None, compensation: Any = None, rounding: str = "nearest",
               seed: int = 0, backend: str = "auto") -> None:
    """One Rprop update (see reference.rprop). ``prev`` starts at 0 and ``step_size`` at the
    learning rate (torch's ``lr``, default 1e-2); ``step`` is checked but not used."""
    _step(_RPROP, param, grad, (prev, step_size), step, backend,
          (eta_minus, eta_plus, step_size_min, step_size_max, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def adopt_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, *, step: int,
               lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.9999, eps: float = 1e-6,
               clip_exponent: float = 0.25, weight_decay: float = 0.0, decouple: bool = False,
               maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
               ema_step: int | None = None,
               master: Any = None, compensation: Any = None, rounding: str = "nearest",
               seed: int = 0, backend: str = "auto") -> None:
    """One ADOPT update (see reference.adopt): step 1 only fills ``exp_avg_sq``."""
    _step(_ADOPT, param, grad, (exp_avg, exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, clip_exponent, weight_decay, decouple, maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def ademamix_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, exp_avg_slow: Any, *,
                  step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                  beta3: float = 0.9999, alpha: float = 5.0, eps: float = 1e-8,
                  weight_decay: float = 1e-2, t_alpha: float | None = 0.0,
                  t_beta3: float | None = 0.0, maximize: bool = False,
                  ema: Any = None, ema_decay: float = 0.999,
                  ema_step: int | None = None,
                  master: Any = None, compensation: Any = None, rounding: str = "nearest",
                  seed: int = 0, backend: str = "auto") -> None:
    """One AdEMAMix update (see reference.ademamix): ``exp_avg_slow`` is the slow EMA;
    ``t_alpha`` / ``t_beta3`` are the warmup lengths in steps (0 or None: none)."""
    _step(_ADEMAMIX, param, grad, (exp_avg, exp_avg_sq, exp_avg_slow), step, backend,
          (lr, beta1, beta2, beta3, alpha, eps, weight_decay, no_warmup(t_alpha),
           no_warmup(t_beta3), maximize),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def schedulefree_adamw_step(param: Any, grad: Any, z: Any, exp_avg_sq: Any, *, step: int,
                            lr_max: Any = None, weight_sum: Any = None, lr: float = 2.5e-3,
                            beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                            weight_decay: float = 0.0, warmup_steps: float = 0.0,
                            r: float = 0.0, weight_lr_power: float = 2.0,
                            maximize: bool = False, ema: Any = None, ema_decay: float = 0.999,
                            ema_step: int | None = None,
                            master: Any = None, compensation: Any = None, rounding: str = "nearest",
                            seed: int = 0, backend: str = "auto") -> None:
    """One Schedule-Free AdamW update in train mode (see reference.schedulefree_adamw):
    ``param`` holds y, ``z`` starts as a copy of the parameter.

    ``lr_max`` and ``weight_sum`` are the running maximum of the warmed-up learning rate and
    the sum of the averaging weights (schedulefree keeps them per parameter group): host
    arrays of one float64 element (``numpy.full((), -1.0)`` and ``numpy.zeros(())`` before
    step 1), updated in place. Left out, they are replayed from ``step`` assuming the options
    never changed (pass them when the learning rate is changed during training). Evaluate at
    x: ``schedulefree_eval(param, z, beta1=...)``, and back with ``schedulefree_train``.
    """
    _step(_SF_ADAMW, param, grad, (z, exp_avg_sq), step, backend,
          (lr, beta1, beta2, eps, weight_decay, warmup_steps, r, weight_lr_power, maximize),
          (lr_max, weight_sum),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@declared
def schedulefree_sgd_step(param: Any, grad: Any, z: Any, *, step: int, lr_max: Any = None,
                          weight_sum: Any = None, lr: float = 1.0, momentum: float = 0.9,
                          weight_decay: float = 0.0, warmup_steps: float = 0.0, r: float = 0.0,
                          weight_lr_power: float = 2.0, maximize: bool = False,
                          ema: Any = None, ema_decay: float = 0.999,
                          ema_step: int | None = None,
                          master: Any = None, compensation: Any = None, rounding: str = "nearest",
                          seed: int = 0, backend: str = "auto") -> None:
    """One Schedule-Free SGD update in train mode (see reference.schedulefree_sgd); the
    arrays and scalar states as in ``schedulefree_adamw_step``, ``momentum`` for beta1."""
    _step(_SF_SGD, param, grad, (z,), step, backend,
          (lr, momentum, weight_decay, warmup_steps, r, weight_lr_power, maximize),
          (lr_max, weight_sum),
          ema=(ema, ema_decay, ema_step),
          store=(master, compensation, rounding, seed))


@check.bumps_torch_versions
def schedulefree_eval(param: Any, z: Any, *, beta1: float, backend: str = "auto") -> None:
    """Schedule-Free's switch to eval mode, in place, one pass: ``param`` goes from y to the
    average x = lerp(y, z, 1 - 1/beta1) (``beta1``: AdamW's first beta, SGD's momentum)."""
    _swap(param, z, beta1, True, backend)


@check.bumps_torch_versions
def schedulefree_train(param: Any, z: Any, *, beta1: float, backend: str = "auto") -> None:
    """Schedule-Free's switch back to train mode, in place: ``param`` goes from x to
    y = lerp(x, z, 1 - beta1)."""
    _swap(param, z, beta1, False, backend)


def ema_swap(param: Any, ema: Any, *, backend: str = "auto") -> None:
    """Exchange the contents of ``param`` and its weight EMA ``ema`` in place, one pass (no
    copy allocated): call it to evaluate with the EMA weights, and again to go back to
    training (exact: the bits are moved, not recomputed)."""
    _ema_swap(param, ema, backend)
    check.bump_torch_versions([param, ema])  # both written (not a gradient among them)
