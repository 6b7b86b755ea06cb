"""The one table every generic test runs off: algorithms, their states and option sets.

Derived from the specs (fastopt/_specs.py): adding an algorithm adds its entry here by itself.
What is written here is test-side data only: the messages of cross-hyperparameter checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import fastopt
from fastopt import reference
from fastopt._specs import PARAM, REQUIRED, SPECS, Spec

from fastopt._check import TOLERANCE  # noqa: E402 - the one place tolerances are written
DTYPES = (np.float32, np.float64)
SIZES = (0, 1, 7, 22, 1023, 2**16 + 3, 2**20 + 1)


@dataclass(frozen=True)
class Algorithm:
    name: str
    step_fn: Callable[..., None]
    reference: Callable[..., None]
    states: tuple[str, ...]
    # Which optional states an option set needs (the rest are passed as None).
    needs: Callable[[dict[str, Any]], tuple[str, ...]]
    option_sets: tuple[dict[str, Any], ...]
    uses_step: bool
    # (kwargs, expected message fragment): invalid hyperparameters specific to the algorithm.
    bad_options: tuple[tuple[dict[str, Any], str], ...] = field(default=())
    # States whose contents the first step ignores (torch creates them at step 1).
    fresh_states: tuple[str, ...] = ()
    torch_name: str = ""
    spec: Any = None

    def active_states(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.needs(options)


def _bad_options(spec: Spec) -> tuple[tuple[dict[str, Any], str], ...]:
    """Out-of-range values of every real hyperparameter with a bound, and NaN, derived from
    the spec's ranges, each with the message the API must give."""
    required = {h.name: 0.1 for h in spec.hypers if h.default is REQUIRED}
    out = []
    for h in spec.hypers:
        if h.flag:
            continue
        bad = [float("nan")]
        if h.lo is not None:
            bad.append(h.lo if h.lo_open else h.lo - 0.5)
        if h.hi is not None:
            bad.append(h.hi if h.hi_open else h.hi + 0.5)
        lo = "" if h.lo is None else f"{h.lo} {'<' if h.lo_open else '<='} "
        hi = "" if h.hi is None else f" {'<' if h.hi_open else '<='} {h.hi}"
        expected = f"{lo}{h.name}{hi}" if lo or hi else f"finite {h.name}"
        for v in bad:
            out.append(({**required, h.name: v}, f"Invalid {h.name}: {v!r} (expected {expected})"))
    return tuple(out)


# Messages of the algorithms' cross-hyperparameter checks (the spec's constraints).
_CONSTRAINT_CASES: dict[str, tuple[tuple[dict[str, Any], str], ...]] = {
    "sgd": (
        ({"lr": 0.1, "nesterov": True}, "Invalid nesterov: True with momentum=0.0"),
        ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
         "expected momentum > 0 and dampening == 0"),
    ),
}


def _needs(spec: Spec) -> Callable[[dict[str, Any]], tuple[str, ...]]:
    return lambda o: spec.active_states({**spec.defaults(), "lr": 0.1, **o})


ALGORITHMS = tuple(
    Algorithm(
        name=name, step_fn=getattr(fastopt, spec.fn_name),
        reference=getattr(reference, name), states=spec.state_names, needs=_needs(spec),
        option_sets=spec.option_sets, uses_step=spec.step != "unused",
        bad_options=_CONSTRAINT_CASES.get(name, ()) + _bad_options(spec),
        fresh_states=tuple(s.name for s in spec.states if s.fresh),
        torch_name=spec.torch_class if spec.torch_impl else "", spec=spec,
    )
    for name, spec in SPECS.items()
)
BY_NAME = {a.name: a for a in ALGORITHMS}


def cases() -> list[tuple[Algorithm, dict[str, Any]]]:
    return [(a, o) for a in ALGORITHMS for o in a.option_sets]


def ema_cases() -> list[tuple[Algorithm, dict[str, Any]]]:
    """Every algorithm (its last option set) with the weight EMA fused in: Problem takes
    ``ema_decay`` as the EMA's decay, not as a hyperparameter of the algorithm."""
    return [(a, {**a.option_sets[-1], "ema_decay": 0.9}) for a in ALGORITHMS]


def case_id(case: tuple[Algorithm, dict[str, Any]]) -> str:
    a, o = case
    return a.name + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "")


class Problem:
    """Arrays for one algorithm/option set: param, state (torch's zero init), grads per step."""

    def __init__(self, algo: Algorithm, options: dict[str, Any], shape: tuple[int, ...] | int,
                 dtype: Any, seed: int = 0) -> None:
        options = dict(options)
        # The weight EMA (ema_cases): its decay, and its array (NaN: the first update copies
        # the parameter without reading it).
        self.ema_decay = options.pop("ema_decay", None)
        self.algo, self.options = algo, options
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.param = self.rng.standard_normal(shape).astype(dtype)
        self.state: dict[str, np.ndarray | None] = {name: None for name in algo.states}
        spec = algo.spec
        for name in algo.active_states(options):
            if name in algo.fresh_states:
                # Contents must be ignored on step 1: NaN would show if they were read.
                self.state[name] = np.full(shape, np.nan, dtype)
            else:
                self.state[name] = spec.initial_array(name, self.param)
        # Scalar states (NAdam's mu_product, ...): 0-d arrays the functions update in place.
        self.scalars = spec.initial_scalars(options, dtype)
        self.ema = None if self.ema_decay is None else np.full(shape, np.nan, dtype)

    def ema_kwargs(self, ema: Any = None) -> dict[str, Any]:
        """The step function's EMA keywords (``ema``: the array to pass, default ours)."""
        if self.ema_decay is None:
            return {}
        return {"ema": self.ema if ema is None else ema, "ema_decay": self.ema_decay}

    def set_param(self, values: np.ndarray) -> None:
        """New parameter values; states that start as a copy of it (Schedule-Free's z)
        follow."""
        self.param[...] = values
        for name, s in zip(self.algo.states, self.algo.spec.states):
            if s.init == PARAM and self.state[name] is not None:
                self.state[name][...] = values

    def grad(self) -> np.ndarray:
        return self.rng.standard_normal(self.param.shape).astype(self.dtype)

    def copy(self) -> "Problem":
        other = object.__new__(Problem)
        other.__dict__.update(self.__dict__)
        other.param = self.param.copy()
        other.state = {k: (None if v is None else v.copy()) for k, v in self.state.items()}
        other.scalars = {k: v.copy() for k, v in self.scalars.items()}
        other.ema = None if self.ema is None else self.ema.copy()
        return other

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"param": self.param}
        out.update({k: v for k, v in self.state.items() if v is not None})
        if self.ema is not None:
            out["ema"] = self.ema
        return out

    def step(self, grad: np.ndarray, step: int, backend: str, **store: Any) -> None:
        """One step through the functional API; ``store``: master, compensation, rounding,
        seed (see fastopt's STORE_DOC)."""
        self.algo.step_fn(self.param, grad, *self.state.values(), step=step, backend=backend,
                          **self.scalars, **self.options, **self.ema_kwargs(), **store)

    def step_reference(self, grad: np.ndarray, step: int) -> None:
        # The reference takes each scalar state's value as the rule uses it (see
        # _specs.Scalar); it is advanced here, in its own dtype.
        opts = {**self.algo.spec.defaults(), **self.options}
        values = {}
        for s in self.algo.spec.scalar_states:
            a = self.scalars[s.name]
            values[s.name], new = s.advance(float(a), step, opts, a.dtype.type)
            a[...] = new
        self.algo.reference(self.param, grad, *self.state.values(), step=step, **values,
                            **self.options)
        if self.ema is not None:
            reference.ema_update(self.ema, self.param, decay=self.ema_decay, first=step == 1)


def assert_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                 context: str = "", scaled: bool = False) -> None:
    """Elementwise closeness at the dtype's tolerance. ``scaled``: the absolute tolerance is
    relative to each array's largest finite magnitude (for states of huge gradients, where a
    moving average's cancellation leaves small elements with large relative errors)."""
    assert actual.keys() == expected.keys()
    for name in expected:
        a, e = actual[name], expected[name]
        assert a.dtype == e.dtype, (name, a.dtype, e.dtype)
        rtol, atol = TOLERANCE[e.dtype]
        finite = e[np.isfinite(e)]
        if scaled and finite.size:
            atol = max(atol, rtol * float(np.abs(finite).max()))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"{name} {context}")


def run_on_device(problem: Problem, steps: int, backend: str,
                  to_device: Callable[[np.ndarray], Any],
                  to_host: Callable[[Any], np.ndarray]) -> tuple[Problem, Problem]:
    """Step device copies of ``problem``'s arrays with ``backend`` and a host copy with the
    reference, on the same gradients; return both as host problems (fast, reference)."""
    ref = problem.copy()
    param = to_device(problem.param)
    state = {k: (None if v is None else to_device(v)) for k, v in problem.state.items()}
    ema = None if problem.ema is None else to_device(problem.ema)
    for t in range(1, steps + 1):
        g = problem.grad()
        problem.algo.step_fn(param, to_device(g), *state.values(), step=t, backend=backend,
                             **problem.options, **problem.ema_kwargs(ema))
        ref.step_reference(g, t)
    out = problem.copy()
    out.param = to_host(param)
    out.state = {k: (None if v is None else to_host(v)) for k, v in state.items()}
    out.ema = None if ema is None else to_host(ema)
    return out, ref


# Boundary hyperparameters and extreme but finite gradients, where implementations part ways
# (torch computes (1 - beta2) * g before the second * g, so float32 gradients of 1e19-1e20
# keep a finite second moment; its lerp makes beta1 = 0 give exactly the gradient; centered
# RMSprop with alpha = 0 must not take the square root of a rounding error). Each entry:
# (algorithm name, options, gradient scale).
BOUNDARY_CASES: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("adam", {"beta1": 0.0}, 1.0),
    ("adam", {"beta2": 0.0}, 1.0),
    ("adam", {"beta1": 0.0, "beta2": 0.0, "eps": 0.0}, 1.0),
    ("adam", {}, 1e19),
    ("adam", {"amsgrad": True}, 1e20),
    ("adamw", {"beta1": 0.0, "weight_decay": 0.1}, 1e20),
    ("rmsprop", {"alpha": 0.0}, 1.0),
    ("rmsprop", {"centered": True, "momentum": 0.5, "eps": 0.0}, 1.0),
    ("rmsprop", {"centered": True}, 1e19),
    ("adadelta", {"rho": 0.0}, 1.0),
    ("adadelta", {}, 1e19),
    ("adagrad", {"eps": 0.0}, 1.0),
    ("adagrad", {}, 1e18),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 1.0}, 1.0),
    ("sgd", {"lr": 1e-30, "momentum": 0.9, "nesterov": True}, 1e30),
    ("radam", {"beta1": 0.0, "eps": 0.0}, 1.0),
    ("radam", {"weight_decay": 0.1}, 1e19),
    ("nadam", {"beta1": 0.0}, 1.0),
    ("nadam", {"decoupled_weight_decay": True, "weight_decay": 0.1}, 1e19),
    ("asgd", {"lambd": 0.0, "t0": 0.0}, 1.0),
    ("asgd", {}, 1e30),
    ("rprop", {}, 1e-30),  # g * prev underflows to 0 in float32: no sign information
    ("rprop", {"step_size_min": 0.0}, 1e30),
    ("adopt", {"eps": 0.0}, 1.0),
    ("adopt", {"weight_decay": 0.1}, 1e19),
    ("ademamix", {"eps": 0.0, "beta3": 0.0}, 1.0),
    ("ademamix", {"t_alpha": 4.0, "t_beta3": 4.0}, 1e19),
    ("schedulefree_adamw", {"eps": 0.0, "weight_decay": 0.1}, 1e19),
    ("schedulefree_sgd", {"lr": 0.0}, 1.0),  # weight_sum stays 0: ckp1 = 0 (schedulefree's)
    ("schedulefree_sgd", {"weight_decay": 0.1}, 1e30),
)


def boundary_cases() -> list[tuple[Algorithm, dict[str, Any], float]]:
    return [(BY_NAME[name], options, scale) for name, options, scale in BOUNDARY_CASES]


def boundary_id(case: tuple[Algorithm, dict[str, Any], float]) -> str:
    algo, options, scale = case
    return f"boundary|{case_id((algo, options))}|scale={scale:g}"
