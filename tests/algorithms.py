"""The one table every generic test runs off: algorithms, their states and option sets.

Adding an algorithm is one entry here (plus its rule, reference and kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import fastopt
from fastopt import reference

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

    def active_states(self, options: dict[str, Any]) -> tuple[str, ...]:
        return self.needs(options)


def _sgd_needs(o: dict[str, Any]) -> tuple[str, ...]:
    return ("momentum_buffer",) if o.get("momentum", 0) != 0 else ()


def _rmsprop_needs(o: dict[str, Any]) -> tuple[str, ...]:
    out = ["square_avg"]
    if o.get("momentum", 0) > 0:
        out.append("momentum_buffer")
    if o.get("centered", False):
        out.append("grad_avg")
    return tuple(out)


def _adam_needs(o: dict[str, Any]) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if o.get("amsgrad") else ())


_ADAM_OPTIONS = (
    {},
    {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"weight_decay": 0.05, "amsgrad": True, "maximize": True},
)
_ADAM_BAD = (
    ({"beta1": 1.0}, "Invalid beta1: 1.0 (expected 0.0 <= beta1 < 1.0)"),
    ({"beta2": -0.1}, "Invalid beta2: -0.1"),
    ({"eps": -1e-8}, "Invalid eps: -1e-08"),
    ({"weight_decay": float("inf")}, "Invalid weight_decay: inf"),
)

ALGORITHMS = (
    Algorithm(
        name="sgd", step_fn=fastopt.sgd_step, reference=reference.sgd,
        states=("momentum_buffer",), needs=_sgd_needs, uses_step=True,
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
        bad_options=(
            ({"lr": 0.1, "nesterov": True}, "Invalid nesterov: True with momentum=0.0"),
            ({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
             "expected momentum > 0 and dampening == 0"),
            ({"lr": 0.1, "momentum": -0.5}, "Invalid momentum: -0.5"),
            ({"lr": -0.1}, "Invalid lr: -0.1 (expected 0.0 <= lr)"),
        ),
        fresh_states=("momentum_buffer",), torch_name="SGD",
    ),
    Algorithm(
        name="adagrad", step_fn=fastopt.adagrad_step, reference=reference.adagrad,
        states=("state_sum",), needs=lambda o: ("state_sum",), uses_step=True,
        option_sets=(
            {},
            {"lr": 0.1, "lr_decay": 0.01},
            {"weight_decay": 0.1},
            {"maximize": True, "weight_decay": 0.05, "lr_decay": 0.05, "eps": 1e-6},
        ),
        bad_options=(
            ({"lr_decay": -1.0}, "Invalid lr_decay: -1.0"),
            ({"eps": float("nan")}, "Invalid eps: nan"),
        ),
        torch_name="Adagrad",
    ),
    Algorithm(
        name="rmsprop", step_fn=fastopt.rmsprop_step, reference=reference.rmsprop,
        states=("square_avg", "momentum_buffer", "grad_avg"), needs=_rmsprop_needs,
        uses_step=False,
        option_sets=(
            {},
            {"momentum": 0.9},
            {"centered": True},
            {"centered": True, "momentum": 0.5, "alpha": 0.9},
            {"weight_decay": 0.1, "maximize": True, "eps": 1e-6},
            {"centered": True, "momentum": 0.9, "weight_decay": 0.05, "maximize": True},
        ),
        bad_options=(
            ({"alpha": 1.5}, "Invalid alpha: 1.5 (expected 0.0 <= alpha <= 1.0)"),
            ({"momentum": float("-inf")}, "Invalid momentum: -inf"),
        ),
        torch_name="RMSprop",
    ),
    Algorithm(
        name="adam", step_fn=fastopt.adam_step, reference=reference.adam,
        states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), needs=_adam_needs,
        uses_step=True, option_sets=_ADAM_OPTIONS, bad_options=_ADAM_BAD, torch_name="Adam",
    ),
    Algorithm(
        name="adamw", step_fn=fastopt.adamw_step, reference=reference.adamw,
        states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), needs=_adam_needs,
        uses_step=True, option_sets=_ADAM_OPTIONS, bad_options=_ADAM_BAD, torch_name="AdamW",
    ),
    Algorithm(
        name="adadelta", step_fn=fastopt.adadelta_step, reference=reference.adadelta,
        states=("square_avg", "acc_delta"), needs=lambda o: ("square_avg", "acc_delta"),
        uses_step=False,
        option_sets=(
            {},
            {"lr": 0.5, "rho": 0.95, "eps": 1e-5},
            {"weight_decay": 0.1},
            {"maximize": True, "weight_decay": 0.05},
        ),
        bad_options=(
            ({"rho": 1.01}, "Invalid rho: 1.01 (expected 0.0 <= rho <= 1.0)"),
            ({"lr": float("nan")}, "Invalid lr: nan"),
        ),
        torch_name="Adadelta",
    ),
)
BY_NAME = {a.name: a for a in ALGORITHMS}


def cases() -> list[tuple[Algorithm, dict[str, Any]]]:
    return [(a, o) for a in ALGORITHMS for o in a.option_sets]


def case_id(case: tuple[Algorithm, dict[str, Any]]) -> str:
    a, o = case
    return a.name + ("-" + "-".join(f"{k}={v}" for k, v in o.items()) if o else "")


class Problem:
    """Arrays for one algorithm/option set: param, state (torch's zero init), grads per step."""

    def __init__(self, algo: Algorithm, options: dict[str, Any], shape: tuple[int, ...] | int,
                 dtype: Any, seed: int = 0) -> None:
        self.algo, self.options = algo, options
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype(dtype)
        self.param = self.rng.standard_normal(shape).astype(dtype)
        self.state: dict[str, np.ndarray | None] = {name: None for name in algo.states}
        for name in algo.active_states(options):
            if name in algo.fresh_states:
                # Contents must be ignored on step 1: NaN would show if they were read.
                self.state[name] = np.full(shape, np.nan, dtype)
            else:
                self.state[name] = np.zeros(shape, dtype)

    def grad(self) -> np.ndarray:
        return self.rng.standard_normal(self.param.shape).astype(self.dtype)

    def copy(self) -> "Problem":
        other = object.__new__(Problem)
        other.__dict__.update(self.__dict__)
        other.param = self.param.copy()
        other.state = {k: (None if v is None else v.copy()) for k, v in self.state.items()}
        return other

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"param": self.param}
        out.update({k: v for k, v in self.state.items() if v is not None})
        return out

    def step(self, grad: np.ndarray, step: int, backend: str) -> None:
        self.algo.step_fn(self.param, grad, *self.state.values(), step=step, backend=backend,
                          **self.options)

    def step_reference(self, grad: np.ndarray, step: int) -> None:
        self.algo.reference(self.param, grad, *self.state.values(), step=step, **self.options)


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
    for t in range(1, steps + 1):
        g = problem.grad()
        problem.algo.step_fn(param, to_device(g), *state.values(), step=t, backend=backend,
                             **problem.options)
        ref.step_reference(g, t)
    out = problem.copy()
    out.param = to_host(param)
    out.state = {k: (None if v is None else to_host(v)) for k, v in state.items()}
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
)


def boundary_cases() -> list[tuple[Algorithm, dict[str, Any], float]]:
    return [(BY_NAME[name], options, scale) for name, options, scale in BOUNDARY_CASES]


def boundary_id(case: tuple[Algorithm, dict[str, Any], float]) -> str:
    algo, options, scale = case
    return f"boundary|{case_id((algo, options))}|scale={scale:g}"
