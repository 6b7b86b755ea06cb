"""The table of algorithms: each one's public function and its state arrays."""

from __future__ import annotations

from typing import Any, Callable

from . import _functional

# Each algorithm's public function, state names in call order, and which are active by default.
ALGORITHMS: dict[str, tuple[Callable[..., None], tuple[str, ...]]] = {
    "sgd": (_functional.sgd_step, ("momentum_buffer",)),
    "adagrad": (_functional.adagrad_step, ("state_sum",)),
    "rmsprop": (_functional.rmsprop_step, ("square_avg", "momentum_buffer", "grad_avg")),
    "adam": (_functional.adam_step, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adamw": (_functional.adamw_step, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    "adadelta": (_functional.adadelta_step, ("square_avg", "acc_delta")),
}


def active_states(algorithm: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The state arrays ``algorithm`` uses with ``options`` (functional-API names), in order."""
    states = ALGORITHMS[algorithm][1]
    if algorithm == "sgd":
        return states if options.get("momentum", 0) else ()
    if algorithm == "rmsprop":
        return tuple(s for s in states if s == "square_avg"
                     or (s == "momentum_buffer" and options.get("momentum", 0) > 0)
                     or (s == "grad_avg" and options.get("centered")))
    if algorithm in ("adam", "adamw"):
        return states if options.get("amsgrad") else states[:2]
    return states
