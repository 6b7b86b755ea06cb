"""Every algorithm declared once: its states, hyperparameters, compile-time flags and names.

A :class:`Spec` is data. Everything generic reads it: the functional API's validation and
dispatch (:mod:`fastopt._generic`), the CPU and CUDA kernels built from the algorithm's rule
(``kernels.rules.<rule>`` and ``<rule>_scalars``), the CuPy source (``kernels/cupy/<rule>.cu``)
and its template flags, the optimizer classes and the fastopt.torch drop-ins (constructor names,
state names, state_dict layout), the option sets of ``fastopt check`` / ``bench`` / ``demo``,
and the test table.

Kernel calling convention, derived from the spec: ``kernel(param, grad, *states, [step],
*scalar_states, *scalar_args)`` with every declared state in order (an inactive one may be any
array of the dtype; the kernel does not touch it), ``step`` when the scalars function takes it,
the scalar states' values, and ``scalar_args`` the other arguments of ``rules.<rule>_scalars``
that are hyperparameters, in its order; kernels built with the weight EMA (:class:`Ema`) take
its array after the states and its scalars after the scalar states. Its compile-time flags, in
the rule's order, are keyword arguments of the kernel factory.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ._layout import zeros_like
from .kernels import rules

REQUIRED: Any = inspect.Parameter.empty  # a hyperparameter without a default
PARAM = "<param>"  # a State's init: a copy of the parameter


def no_warmup(t: Any) -> Any:
    """AdEMAMix's warmup lengths: None (bitsandbytes' "no warmup") is 0."""
    return 0.0 if t is None else t


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: a real number in a range, or a flag (True/False).

    ``torch`` names torch.optim's constructor argument when it differs: ``("betas", 0)`` for the
    first element of the ``betas`` pair.
    """

    name: str
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    flag: bool = False
    torch: tuple[str, int] | None = None


def real(name: str, default: Any = REQUIRED, lo: float | None = None, hi: float | None = None,
         *, lo_open: bool = False, hi_open: bool = False,
         torch: tuple[str, int] | None = None) -> Hyper:
    return Hyper(name, default, lo, hi, lo_open, hi_open, False, torch)


def flag(name: str, default: bool = False) -> Hyper:
    return Hyper(name, default, flag=True)


@dataclass(frozen=True)
class State:
    """One state array: its name in the functional API, torch's name for it, the flag that
    activates it (None: always active), and how a class initialises it: a number, the name
    of a class hyperparameter holding one (Adagrad's ``initial_accumulator_value``), or
    ``PARAM``: a copy of the parameter (Schedule-Free's ``z``)."""

    name: str
    when: str | None = None
    torch: str | None = None
    init: float | str = 0.0
    # Step 1 overwrites it without reading (torch creates it then): tests fill it with NaN.
    fresh: bool = False
    # When the flag is on, in words (messages): "momentum != 0"; default "<when>=True".
    when_text: str | None = None
    # What it holds, for 8-bit storage (kernels/q8.py): "signed" (a moment: the signed
    # tables), "nonneg" (never negative: the unsigned tables, and a positive value is never
    # stored as 0) or "weights" (parameter values: Schedule-Free's z, ASGD's average; kept at
    # full precision, never in 8 bits).
    kind: str = "signed"

    @property
    def condition(self) -> str:
        return self.when_text or f"{self.when}=True"

    @property
    def torch_name(self) -> str:
        return self.torch or self.name


@dataclass(frozen=True)
class Scalar:
    """A scalar state kept per parameter (torch keeps a 0-d tensor): NAdam's ``mu_product``,
    ASGD's ``eta`` and ``mu``.

    Each step replaces it with ``update(value, step, options, t)``, computed in the scalar type
    ``t`` of the state (float32 as torch keeps it: ``t(a) * t(b)`` rounds as torch's in-place
    multiply does). The rule's scalars function takes it by name: the value after this step's
    update (``uses="new"``, NAdam) or before it (``uses="old"``, ASGD's eta of the previous
    step). ``init`` is a number or the name of a hyperparameter holding it (ASGD: ``lr``).
    The functional API takes it as a 0-d array updated in place, or derives it from ``step``.
    """

    name: str
    init: float | str
    update: Callable[[float, int, dict[str, Any], Any], float]
    uses: str = "new"
    # Whether the update reads the old value (NAdam's product) or depends on the step only.
    recurrent: bool = True
    # The values a valid state holds (closed bounds), checked before a step uses it.
    lo: float = -math.inf
    hi: float = math.inf
    # Kept in this dtype whatever the parameters' (Schedule-Free's sums: Python floats in
    # the reference implementation); None: the parameters' dtype (torch's, for NAdam, ASGD).
    dtype: Any = None

    def initial(self, options: dict[str, Any]) -> float:
        return float(options[self.init]) if isinstance(self.init, str) else float(self.init)

    def advance(self, old: float, step: int, options: dict[str, Any],
                kind: Any) -> tuple[float, float]:
        """``(used, new)``: the value the rule takes at ``step`` and the value stored after
        it, from the stored ``old``, in the scalar type ``kind``."""
        new = float(kind(self.update(old, step, options, kind)))
        return (new if self.uses == "new" else old), new


@dataclass(frozen=True)
class Ema:
    """The weight EMA fused into one update (``ema=`` of every ``*_step``; rules.ema): its
    array, and ``weight = 1 - decay`` and ``rest = 1 - weight`` as the array's dtype rounds
    and computes them (torch.lerp's), ``first`` on the update that copies the parameter."""

    array: Any
    weight: float
    rest: float
    first: bool

    @staticmethod
    def of(array: Any, decay: float, first: bool, dtype: Any) -> "Ema":
        t = np.dtype(dtype).type
        w = t(1.0 - decay)
        return Ema(array, float(w), float(t(1.0) - w), first)

    @property
    def scalars(self) -> tuple[float, float, float]:
        """The kernels' three EMA arguments, in order."""
        return self.weight, self.rest, 1.0 if self.first else 0.0


# Compile-time flags: a name (the rule's argument, in order) and how it follows from options.
def option(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda o: bool(o[name])


def nonzero(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda o: o[name] != 0


def positive(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda o: o[name] > 0


def const(value: bool) -> Callable[[dict[str, Any]], bool]:
    return lambda o: value


@dataclass(frozen=True, eq=False)
class Spec:
    """One algorithm. See the module docstring for what is derived from it."""

    name: str  # adam -> adam_step, reference.adam, fastopt.Adam, fastopt.torch.Adam
    rule: str  # kernels.rules.<rule> and <rule>_scalars; kernels/cupy/<rule>.cu
    doc: str  # one line: what the algorithm is (class docstrings, `fastopt info`)
    torch_class: str  # the class name (fastopt's and torch.optim's)
    states: tuple[State, ...]
    hypers: tuple[Hyper, ...]
    flags: tuple[tuple[str, Callable[[dict[str, Any]], bool]], ...]
    # "required", "unused" (accepted, checked, ignored) or a flag name: required when it is on.
    step: str = "required"
    # Scalar states (see Scalar), in the order of the scalars function's arguments.
    scalar_states: tuple[Scalar, ...] = ()
    # Hyperparameters the classes take that the update does not (they initialise states).
    class_hypers: tuple[Hyper, ...] = ()
    # Checks across hyperparameters: raise ValueError with a message naming them.
    constraints: Callable[[dict[str, Any]], None] | None = None
    # torch.optim keeps a 'step' per parameter in its state (SGD does not).
    torch_step: bool = True
    # False where the gradient slot is a stand-in the rule never reads (EMA_SWAP passes the
    # param there): the CPU kernels then leave it out of their overlap check.
    reads_grad: bool = True
    # torch.optim's fastest CPU implementation ("fused", "foreach"), None if torch lacks it.
    torch_impl: str | None = "foreach"
    # torch.optim group keys fastopt's torch class fixes, with what the value means:
    # AdamW's ("decoupled_weight_decay", True, "decoupled weight decay").
    torch_fixed: tuple[tuple[str, Any, str], ...] = ()
    # Option sets (functional names) that tests and `fastopt check` sweep; bench/demo defaults.
    option_sets: tuple[dict[str, Any], ...] = ({},)
    bench_options: dict[str, Any] = field(default_factory=dict)
    demo_options: dict[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------------

    @functools.cached_property
    def fn_name(self) -> str:
        return f"{self.name}_step"

    @functools.cached_property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @functools.cached_property
    def flag_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.flags)

    @functools.cached_property
    def scalars(self) -> Callable[..., tuple[float, ...]]:
        fn: Callable[..., tuple[float, ...]] = getattr(rules, f"{self.rule}_scalars")
        return fn

    @functools.cached_property
    def scalar_call(self) -> tuple[tuple[str, str], ...]:
        """How ``rules.<rule>_scalars`` is called: ("step"|"hyper"|"flag", name) for each of
        its arguments. A flag may share its hyperparameter's name (SGD's momentum): the
        scalars then take the number."""
        names = {h.name for h in self.hypers}
        scalars = [s.name for s in self.scalar_states]
        out = []
        for a in inspect.signature(self.scalars).parameters:
            kind = ("step" if a == "step" else "scalar" if a in scalars else
                    "hyper" if a in names else "flag")
            if kind == "flag" and a not in self.flag_names:
                raise TypeError(f"rules.{self.rule}_scalars takes {a!r}: neither a "
                                f"hyperparameter nor a flag of {self.name}")
            out.append((kind, a))
        # The kernels take the step, then the scalar states, then the hyperparameters.
        kinds = [k for k, _ in out if k != "flag"]
        first = ["step"] * kinds.count("step") + ["scalar"] * len(scalars)
        if kinds[:len(first)] != first or [a for k, a in out if k == "scalar"] != scalars:
            raise TypeError(f"rules.{self.rule}_scalars must take step, then the scalar states "
                            f"{scalars} in order, before the hyperparameters")
        return tuple(out)

    @functools.cached_property
    def scalar_args(self) -> tuple[str, ...]:
        """The hyperparameters the kernel takes after the arrays (and step), in order."""
        return tuple(a for kind, a in self.scalar_call if kind == "hyper")

    @functools.cached_property
    def scalar_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.scalar_states)

    @functools.cached_property
    def takes_step(self) -> bool:
        return ("step", "step") in self.scalar_call

    def host_scalars(self, step: int, options: dict[str, Any],
                     flags: tuple[bool, ...]) -> tuple[float, ...]:
        """``rules.<rule>_scalars`` evaluated on the host, in float64 (the GPU backends).
        ``options`` holds the scalar states' values too, under their names."""
        names = self.flag_names
        args = [step if kind == "step" else float(options[a]) if kind != "flag"
                else flags[names.index(a)] for kind, a in self.scalar_call]
        return tuple(float(x) for x in self.scalars(*args))

    def state(self, name: str) -> State:
        return self.states[self.state_names.index(name)]

    def flag_values(self, options: dict[str, Any]) -> tuple[bool, ...]:
        return tuple(bool(f(options)) for _, f in self.flags)

    def active(self, flags: tuple[bool, ...]) -> tuple[bool, ...]:
        """Which states the flags activate, in state order."""
        out = self._active.get(flags)
        if out is None:
            names = self.flag_names
            out = self._active[flags] = tuple(s.when is None or flags[names.index(s.when)]
                                              for s in self.states)
        return out

    @functools.cached_property
    def _active(self) -> dict[tuple[bool, ...], tuple[bool, ...]]:
        return {}

    def active_states(self, options: dict[str, Any]) -> tuple[str, ...]:
        """The states the update uses with ``options`` (functional names), in order."""
        on = self.active(self.flag_values(options))
        return tuple(s.name for s, a in zip(self.states, on) if a)

    def initial(self, name: str, options: dict[str, Any] | None = None) -> float:
        """The initial value of state ``name``: its number, or the class hyperparameter it
        names, from ``options`` or else its default (Rprop's step_size starts at lr)."""
        init = self.state(name).init
        if init == PARAM:
            raise ValueError(f"{self.name}'s {name} starts as a copy of the parameter "
                             f"(Spec.initial_array)")
        if not isinstance(init, str):
            return float(init)
        if options and init in options:
            return float(options[init])
        return float(next(h.default for h in (*self.class_hypers, *self.hypers)
                          if h.name == init))

    def initial_array(self, name: str, param: np.ndarray,
                      options: dict[str, Any] | None = None) -> np.ndarray:
        """A fresh state array for ``param`` (its shape, dtype and memory layout): a copy of
        it, or filled with the initial value (see ``initial``)."""
        if self.state(name).init != PARAM:
            return zeros_like(param, self.initial(name, options))
        out = zeros_like(param)
        out[...] = param
        return out

    def initial_scalars(self, options: dict[str, Any], dtype: Any) -> dict[str, np.ndarray]:
        """Fresh scalar states, 0-d arrays of ``dtype`` or of the state's own (``options``:
        functional names, the defaults filling the rest)."""
        opts = {**self.defaults(), **options}
        return {s.name: np.array(s.initial(opts), s.dtype or dtype) for s in self.scalar_states}

    def advance_scalars(self, olds: list[float], step: int, options: dict[str, Any],
                        kinds: list[Any]) -> tuple[list[float], list[float]]:
        """Every scalar state's ``(used, new)`` values at ``step`` from the stored ``olds``, in
        order: each update sees the values the rule uses of the states before it, under their
        names (Schedule-Free's weight sum adds a weight from this step's ``lr_max``)."""
        opts = options
        used, new = [], []
        for s, old, kind in zip(self.scalar_states, olds, kinds):
            u, n = s.advance(old, step, opts, kind)
            if len(self.scalar_states) > 1:  # a later state may read it (the caller's dict
                opts = {**opts, s.name: u}  # is left alone)
            used.append(u)
            new.append(n)
        return used, new

    def torch_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Functional-API options under torch's constructor names: every pair (``betas``)
        whole, its elements left out at their defaults; other keys as given (the inverse of
        optim.functional_options)."""
        out = dict(options)
        pairs: dict[str, list[Any]] = {key: [None] * n for key, n in self.torch_tuples.items()}
        for h in self.hypers:
            if h.torch is not None:
                key, index = h.torch
                pairs[key][index] = out.pop(h.name, h.default)
        out.update({key: tuple(v) for key, v in pairs.items()})
        return out

    @functools.cached_property
    def torch_tuples(self) -> dict[str, int]:
        """torch's tuple arguments (``betas``) and their lengths (AdEMAMix: three betas)."""
        out: dict[str, int] = {}
        for h in self.hypers:
            if h.torch is not None:
                key, index = h.torch
                out[key] = max(out.get(key, 0), index + 1)
        return out

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hypers if h.default is not REQUIRED}


# ---------------------------------------------------------------------------------------------
# Shared pieces

_LR = real("lr", 1e-3, 0.0)
_EPS = real("eps", 1e-8, 0.0)
_WD = real("weight_decay", 0.0, 0.0)
_MAXIMIZE = flag("maximize")
_BETA1 = real("beta1", 0.9, 0.0, 1.0, hi_open=True, torch=("betas", 0))
_BETA2 = real("beta2", 0.999, 0.0, 1.0, hi_open=True, torch=("betas", 1))


def _sgd_constraints(o: dict[str, Any]) -> None:
    if o["nesterov"] and (o["momentum"] == 0 or o["dampening"] != 0):
        raise ValueError(f"Invalid nesterov: True with momentum={o['momentum']!r} and "
                         f"dampening={o['dampening']!r} (expected momentum > 0 and "
                         f"dampening == 0)")


_ADAM_OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"weight_decay": 0.05, "amsgrad": True, "maximize": True},
)


def _adam(name: str, decoupled: bool, wd: float, doc: str, torch_class: str) -> Spec:
    return Spec(
        name=name, rule="adam", doc=doc, torch_class=torch_class,
        states=(State("exp_avg"), State("exp_avg_sq", kind="nonneg"),
                State("max_exp_avg_sq", when="amsgrad", kind="nonneg")),
        hypers=(_LR, _BETA1, _BETA2, _EPS, real("weight_decay", wd, 0.0), flag("amsgrad"),
                _MAXIMIZE),
        flags=(("amsgrad", option("amsgrad")), ("maximize", option("maximize")),
               ("weight_decay", nonzero("weight_decay")), ("decoupled", const(decoupled))),
        torch_fixed=(("decoupled_weight_decay", decoupled,
                      "decoupled weight decay" if decoupled else "L2 weight decay"),),
        torch_impl="fused",
        option_sets=_ADAM_OPTIONS, demo_options={"lr": 1e-3},
    )


def nadam_mu(step: int, beta1: float, momentum_decay: float) -> float:
    """NAdam's momentum coefficient of step ``step`` (as rules.nadam_scalars computes it)."""
    return beta1 * (1.0 - 0.5 * math.pow(0.96, step * momentum_decay))


def _nadam_mu_product(old: float, step: int, o: dict[str, Any], t: Any) -> float:
    # torch: mu_product *= mu, a float32 tensor times a Python float (rounded to float32 first).
    return float(t(old) * t(nadam_mu(step, o["beta1"], o["momentum_decay"])))


def _asgd_eta(old: float, step: int, o: dict[str, Any], t: Any) -> float:
    lr, lambd, alpha = o["lr"], o["lambd"], o["alpha"]
    try:
        return float(lr / math.pow(1.0 + lambd * lr * step, alpha))
    except OverflowError:  # the denominator beyond float64: eta is 0
        return 0.0


def _asgd_mu(old: float, step: int, o: dict[str, Any], t: Any) -> float:
    return 1.0 / max(1.0, step - float(o["t0"]))


_DECOUPLED = flag("decoupled_weight_decay")
_ADAM_LIKE_OPTIONS: tuple[dict[str, Any], ...] = (
    {},
    {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True},
    {"beta1": 0.0, "maximize": True, "weight_decay": 0.05},
)



def schedulefree_lr(step: int, o: dict[str, Any]) -> float:
    """Schedule-Free's warmed-up learning rate at ``step`` (schedulefree's ``scheduled_lr``)."""
    sched = step / o["warmup_steps"] if step - 1 < o["warmup_steps"] else 1.0
    return float(o["lr"] * sched)


def _schedulefree_lr_max(old: float, step: int, o: dict[str, Any], t: Any) -> float:
    lr = schedulefree_lr(step, o)
    return old if old > lr else lr  # Python's max(lr, old)


def _schedulefree_weight_sum(old: float, step: int, o: dict[str, Any], t: Any) -> float:
    # This step's lr_max; in a replay from step alone (options never changed), the warmed-up
    # rate itself, which never decreases.
    lr_max = o["lr_max"] if "lr_max" in o else schedulefree_lr(step, o)
    return old + math.pow(step, o["r"]) * math.pow(lr_max, o["weight_lr_power"])


# Schedule-Free keeps both in Python floats (per group): float64 here, per parameter.
_SCHEDULEFREE_SCALARS = (
    Scalar("lr_max", -1.0, _schedulefree_lr_max, lo=-1.0, dtype=np.float64),
    Scalar("weight_sum", 0.0, _schedulefree_weight_sum, lo=0.0, dtype=np.float64),
)
_SCHEDULEFREE_HYPERS = (real("weight_decay", 0.0, 0.0), real("warmup_steps", 0.0, 0.0),
                        real("r", 0.0, 0.0), real("weight_lr_power", 2.0, 0.0))
_SCHEDULEFREE_DOC = (" The parameter holds y in train mode (the point gradients are taken at) "
                     "and the average x in eval mode; z is the base sequence.")

SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec(
        name="sgd", rule="sgd", torch_impl="fused", torch_class="SGD",
        doc="Stochastic gradient descent with optional heavy-ball or Nesterov momentum.",
        states=(State("momentum_buffer", when="momentum", fresh=True, when_text="momentum != 0"),),
        hypers=(real("lr", REQUIRED, 0.0), real("momentum", 0.0, 0.0), real("dampening", 0.0),
                flag("nesterov"), _WD, _MAXIMIZE),
        flags=(("momentum", nonzero("momentum")), ("nesterov", option("nesterov")),
               ("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        step="momentum", constraints=_sgd_constraints, torch_step=False,
        option_sets=(
            {"lr": 0.1},
            {"lr": 0.1, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.5},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True},
            {"lr": 0.1, "weight_decay": 0.01},
            {"lr": 0.1, "maximize": True},
            {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1,
             "maximize": True},
        ),
        bench_options={"lr": 0.01, "momentum": 0.9}, demo_options={"lr": 0.1},
    ),
    Spec(
        name="adagrad", rule="adagrad", torch_impl="fused", torch_class="Adagrad",
        doc="Adagrad with optional learning-rate decay.",
        states=(State("state_sum", torch="sum", init="initial_accumulator_value",
                      kind="nonneg"),),
        hypers=(real("lr", 1e-2, 0.0), real("lr_decay", 0.0, 0.0), _WD,
                real("eps", 1e-10, 0.0), _MAXIMIZE),
        class_hypers=(real("initial_accumulator_value", 0.0, 0.0),),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        option_sets=(
            {},
            {"lr": 0.1, "lr_decay": 0.01},
            {"weight_decay": 0.1},
            {"maximize": True, "weight_decay": 0.05, "lr_decay": 0.05, "eps": 1e-6},
        ),
        demo_options={"lr": 0.05},
    ),
    Spec(
        name="rmsprop", rule="rmsprop", torch_class="RMSprop",
        doc="RMSprop, optionally centered and with momentum.",
        states=(State("square_avg", kind="nonneg"),
                State("momentum_buffer", when="momentum", when_text="momentum > 0"),
                State("grad_avg", when="centered")),
        hypers=(real("lr", 1e-2, 0.0), real("alpha", 0.99, 0.0, 1.0), _EPS, _WD,
                real("momentum", 0.0, 0.0), flag("centered"), _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay")),
               ("momentum", positive("momentum")), ("centered", option("centered"))),
        step="unused",
        option_sets=(
            {},
            {"momentum": 0.9},
            {"centered": True},
            {"centered": True, "momentum": 0.5, "alpha": 0.9},
            {"weight_decay": 0.1, "maximize": True, "eps": 1e-6},
            {"centered": True, "momentum": 0.9, "weight_decay": 0.05, "maximize": True},
        ),
        demo_options={"lr": 1e-3},
    ),
    _adam("adam", False, 0.0, "Adam (L2 weight decay added to the gradient), optionally "
          "AMSGrad.", "Adam"),
    _adam("adamw", True, 1e-2, "Adam with decoupled weight decay (AdamW), optionally AMSGrad.",
          "AdamW"),
    Spec(
        name="adadelta", rule="adadelta", torch_class="Adadelta", doc="Adadelta.",
        states=(State("square_avg", kind="nonneg"), State("acc_delta", kind="nonneg")),
        hypers=(real("lr", 1.0, 0.0), real("rho", 0.9, 0.0, 1.0), real("eps", 1e-6, 0.0), _WD,
                _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        step="unused",
        option_sets=(
            {},
            {"lr": 0.5, "rho": 0.95, "eps": 1e-5},
            {"weight_decay": 0.1},
            {"maximize": True, "weight_decay": 0.05},
        ),
        demo_options={"lr": 1.0},
    ),
    Spec(
        name="adamax", rule="adamax", torch_class="Adamax",
        doc="Adamax: Adam with the infinity norm in place of the second moment.",
        states=(State("exp_avg"), State("exp_inf", kind="nonneg")),
        hypers=(real("lr", 2e-3, 0.0), _BETA1, _BETA2, _EPS, _WD, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        option_sets=(
            {},
            {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
            {"weight_decay": 0.1},
            {"beta1": 0.0, "maximize": True, "weight_decay": 0.05},
        ),
        demo_options={"lr": 2e-3},
    ),
    Spec(
        name="lion", rule="lion", torch_class="Lion", torch_impl=None, torch_step=False,
        doc="Lion: the sign of an interpolated momentum, with decoupled weight decay.",
        states=(State("exp_avg"),),
        # lion-pytorch's (and the paper's) defaults; DeepSpeed's FusedLion differs (1e-3,
        # betas (0.9, 0.999)): see reference.lion.
        hypers=(real("lr", 1e-4, 0.0), _BETA1,
                real("beta2", 0.99, 0.0, 1.0, hi_open=True, torch=("betas", 1)), _WD,
                _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        step="unused",
        option_sets=(
            {},
            {"lr": 1e-3, "beta1": 0.95, "beta2": 0.98},
            {"weight_decay": 0.1},
            {"beta1": 0.0, "maximize": True, "weight_decay": 1.0},
        ),
        demo_options={"lr": 1e-3},  # Lion wants ~3-10x less than Adam; digits trains fast
    ),
    Spec(
        name="radam", rule="radam", torch_class="RAdam",
        doc="RAdam: Adam with a rectified adaptive step, optionally with decoupled weight decay.",
        states=(State("exp_avg"), State("exp_avg_sq", kind="nonneg")),
        hypers=(_LR, _BETA1, _BETA2, _EPS, _WD, _DECOUPLED, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay")),
               ("decoupled", option("decoupled_weight_decay"))),
        option_sets=_ADAM_LIKE_OPTIONS + ({"beta2": 0.9},),
        demo_options={"lr": 1e-2},
    ),
    Spec(
        name="nadam", rule="nadam", torch_class="NAdam",
        doc="NAdam: Adam with Nesterov momentum (torch's momentum schedule), optionally with "
            "decoupled weight decay.",
        states=(State("exp_avg"), State("exp_avg_sq", kind="nonneg")),
        scalar_states=(Scalar("mu_product", 1.0, _nadam_mu_product, lo=0.0, hi=1.0),),
        hypers=(real("lr", 2e-3, 0.0), _BETA1, _BETA2, _EPS, _WD,
                real("momentum_decay", 4e-3, 0.0), _DECOUPLED, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay")),
               ("decoupled", option("decoupled_weight_decay"))),
        option_sets=_ADAM_LIKE_OPTIONS + ({"momentum_decay": 0.1},),
        demo_options={"lr": 2e-3},
    ),
    Spec(
        name="asgd", rule="asgd", torch_class="ASGD",
        doc="Averaged SGD: SGD with a decaying step and a running average of the parameters.",
        states=(State("ax", kind="weights"),),
        scalar_states=(
            Scalar("eta", "lr", _asgd_eta, uses="old", recurrent=False, lo=0.0),
            Scalar("mu", 1.0, _asgd_mu, uses="old", recurrent=False, lo=0.0, hi=1.0),
        ),
        hypers=(real("lr", 1e-2, 0.0), real("lambd", 1e-4, 0.0), real("alpha", 0.75, 0.0),
                real("t0", 1e6, 0.0), _WD, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        option_sets=(
            {},
            {"lr": 0.05, "lambd": 1e-3, "alpha": 0.5, "t0": 2.0},
            {"weight_decay": 0.1, "t0": 0.0},
            {"maximize": True, "weight_decay": 0.05, "lambd": 0.01},
        ),
        demo_options={"lr": 0.05},
    ),
    Spec(
        name="rprop", rule="rprop", torch_class="Rprop",
        doc="Rprop: per-element step sizes that grow while the gradient keeps its sign.",
        states=(State("prev"), State("step_size", init="lr", kind="nonneg")),
        hypers=(real("eta_minus", 0.5, 0.0, 1.0, lo_open=True, hi_open=True,
                     torch=("etas", 0)),
                real("eta_plus", 1.2, 1.0, lo_open=True, torch=("etas", 1)),
                real("step_size_min", 1e-6, 0.0, torch=("step_sizes", 0)),
                real("step_size_max", 50.0, 0.0, torch=("step_sizes", 1)),
                _MAXIMIZE),
        class_hypers=(real("lr", 1e-2, 0.0),),
        flags=(("maximize", option("maximize")),),
        step="unused",
        option_sets=(
            {},
            {"eta_minus": 0.3, "eta_plus": 1.5, "step_size_min": 1e-3, "step_size_max": 0.02},
            {"maximize": True},
        ),
        # Rprop is a full-batch method: on minibatches a small maximum step keeps it stable.
        demo_options={"lr": 1e-3, "step_sizes": (1e-6, 2e-3)},
    ),
    Spec(
        name="adopt", rule="adopt", torch_class="ADOPT", torch_impl=None,
        doc="ADOPT: Adam-like, the gradient normalised by the previous second moment and "
            "clipped (torch-adopt's semantics).",
        states=(State("exp_avg"), State("exp_avg_sq", kind="nonneg")),
        # torch-adopt's defaults; its clip_lambda(step) = step ** clip_exponent.
        hypers=(_LR, _BETA1,
                real("beta2", 0.9999, 0.0, 1.0, hi_open=True, torch=("betas", 1)),
                real("eps", 1e-6, 0.0), real("clip_exponent", 0.25, 0.0), _WD,
                flag("decouple"), _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay")),
               ("decouple", option("decouple"))),
        option_sets=(
            {},
            {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3, "clip_exponent": 0.5},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "decouple": True},
            {"beta1": 0.0, "maximize": True, "weight_decay": 0.05},
        ),
        demo_options={"lr": 1e-3},
    ),
    Spec(
        name="ademamix", rule="ademamix", torch_class="AdEMAMix", torch_impl=None,
        doc="AdEMAMix: Adam plus a slow EMA of the gradient mixed into the numerator, with "
            "alpha and beta3 warmups.",
        states=(State("exp_avg"), State("exp_avg_sq", kind="nonneg"),
                State("exp_avg_slow")),
        # bitsandbytes' defaults (alpha 5, weight decay 1e-2); see reference.ademamix.
        hypers=(_LR, _BETA1, _BETA2,
                real("beta3", 0.9999, 0.0, 1.0, hi_open=True, torch=("betas", 2)),
                real("alpha", 5.0, 0.0), _EPS, real("weight_decay", 1e-2, 0.0),
                real("t_alpha", 0.0, 0.0), real("t_beta3", 0.0, 0.0), _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        option_sets=(
            {},
            {"t_alpha": 5.0, "t_beta3": 5.0},
            {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "beta3": 0.999, "alpha": 2.0,
             "eps": 1e-3, "weight_decay": 0.0, "t_alpha": 30.0, "t_beta3": 30.0},
            {"beta1": 0.0, "maximize": True, "weight_decay": 0.1},
        ),
        demo_options={"lr": 1e-3},
    ),
    Spec(
        name="schedulefree_adamw", rule="schedulefree_adamw", torch_class="AdamWScheduleFree",
        torch_impl=None,
        doc="Schedule-Free AdamW: no learning-rate schedule; an online average of the "
            "iterates." + _SCHEDULEFREE_DOC,
        states=(State("z", init=PARAM, kind="weights"), State("exp_avg_sq", kind="nonneg")),
        hypers=(real("lr", 2.5e-3, 0.0),
                real("beta1", 0.9, 0.0, 1.0, lo_open=True, hi_open=True, torch=("betas", 0)),
                _BETA2, _EPS, *_SCHEDULEFREE_HYPERS, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        scalar_states=_SCHEDULEFREE_SCALARS,
        option_sets=(
            {},
            {"warmup_steps": 5.0, "weight_decay": 0.1},
            {"lr": 1e-2, "beta1": 0.5, "beta2": 0.99, "eps": 1e-3, "r": 1.0,
             "weight_lr_power": 0.0},
            {"maximize": True, "warmup_steps": 20.0, "r": 0.5},
        ),
        demo_options={"lr": 2.5e-3},
    ),
    Spec(
        name="schedulefree_sgd", rule="schedulefree_sgd", torch_class="SGDScheduleFree",
        torch_impl=None,
        doc="Schedule-Free SGD: momentum through interpolation and iterate averaging, no "
            "learning-rate schedule." + _SCHEDULEFREE_DOC,
        states=(State("z", init=PARAM, kind="weights"),),
        hypers=(real("lr", 1.0, 0.0), real("momentum", 0.9, 0.0, 1.0, lo_open=True, hi_open=True),
                *_SCHEDULEFREE_HYPERS, _MAXIMIZE),
        flags=(("maximize", option("maximize")), ("weight_decay", nonzero("weight_decay"))),
        scalar_states=_SCHEDULEFREE_SCALARS,
        option_sets=(
            {},
            {"lr": 0.1, "momentum": 0.5, "warmup_steps": 5.0, "weight_decay": 0.1},
            {"lr": 0.05, "r": 1.0, "weight_lr_power": 1.0, "maximize": True},
        ),
        demo_options={"lr": 0.1},
    ),
)}

# The Schedule-Free mode switch, p = lerp(p, z, weight), run through the generic machinery
# (every backend) as an update whose "gradient" is z. Not an algorithm of the table.
SCHEDULEFREE_SWAP = Spec(
    name="schedulefree_swap", rule="schedulefree_swap", torch_class="", torch_impl=None,
    doc="The Schedule-Free train/eval switch.", states=(), hypers=(real("weight"),), flags=(),
    step="unused")
# The weight EMA swapped in for evaluation and back (fastopt.ema_swap): param and ema exchange
# their contents in one pass. The "gradient" slot is not read (the param is passed there).
EMA_SWAP = Spec(
    name="ema_swap", rule="ema_swap", torch_class="", torch_impl=None,
    doc="The weight EMA's swap with the parameter.", states=(State("ema"),), hypers=(),
    flags=(), step="unused", reads_grad=False)
# Every spec with kernels on every backend (the CUDA C++ sources are compiled for these).
KERNEL_SPECS = (*SPECS.values(), SCHEDULEFREE_SWAP, EMA_SWAP)
